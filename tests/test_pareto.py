"""Pareto sweep over phi, the front, choosing phi, atomic CSV/PNG output."""

import csv
import os
import random

import pytest
import torch

from monai_hyperconv.hypernets import ScaleSpaceHyperUNet
from monai_hyperconv.metrics import (
    atomic_write, choose_phi, default_phis, dice_per_sample, pareto_front, pareto_sweep, write_csv,
)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(n)


def _row(phi, g, m):
    return {"phi": phi, "dice_mean": m, "dice_std": 0.0, "gflops": g}


TABLE = [_row(0.1, 1.0, 0.60), _row(0.2, 2.0, 0.80), _row(0.3, 3.0, 0.79), _row(0.4, 4.0, 0.85),
         _row(0.5, 5.0, 0.85), _row(0.15, 1.0, 0.55)]


def _dominated(a, b):  # b dominates a
    return b["gflops"] <= a["gflops"] and b["dice_mean"] >= a["dice_mean"] and (
        b["gflops"] < a["gflops"] or b["dice_mean"] > a["dice_mean"])


def test_pareto_front_hand_table():
    front = pareto_front(TABLE)
    assert [r["phi"] for r in front] == [0.1, 0.2, 0.4]  # 0.3, 0.5 and 0.15 are dominated
    # for a lower-is-better metric (e.g. a loss) the cheapest-and-lowest row dominates all others
    assert [r["phi"] for r in pareto_front(TABLE, higher_is_better=False)] == [0.15]


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_is_non_dominated_and_complete(seed):
    rng = random.Random(seed)
    table = [_row(i, rng.choice([1.0, 2.0, 3.0, rng.random() * 4]), rng.random()) for i in range(40)]
    front = pareto_front(table)
    assert front and [r["gflops"] for r in front] == sorted(r["gflops"] for r in front)
    for r in front:  # nothing in the table dominates a front row
        assert not any(_dominated(r, o) for o in table)
    for r in table:  # every other row is dominated by something
        if r not in front:
            assert any(_dominated(r, o) for o in table)


def test_choose_phi():
    assert choose_phi(TABLE) == 0.4  # best metric, cheaper of the tie (0.4 vs 0.5)
    assert choose_phi(TABLE, max_metric_drop=0.06) == 0.2  # cheapest within 0.06 of 0.85
    assert choose_phi(TABLE, max_gflops=3.5) == 0.2
    assert choose_phi(TABLE, max_gflops=1.0) == 0.1
    with pytest.raises(ValueError, match="cheapest"):
        choose_phi(TABLE, max_gflops=0.5)
    with pytest.raises(ValueError):
        choose_phi(TABLE, max_gflops=1.5, max_metric_drop=0.01)


def test_dice_per_sample():
    y = torch.zeros(3, 1, 8, 8, dtype=torch.long)
    y[0, 0, :4] = 1
    y[1, 0, :4] = 2
    logits = torch.nn.functional.one_hot(y[:, 0], 3).permute(0, 3, 1, 2).float()
    assert torch.allclose(dice_per_sample(logits, y), torch.ones(3, dtype=torch.float64))  # incl. an empty image
    wrong = logits.roll(4, dims=2)  # objects moved to the other half: no overlap
    d = dice_per_sample(wrong, y)
    assert d[0] == pytest.approx(0.5) and d[1] == pytest.approx(0.5)  # one label 0 overlap, the other absent -> 1


def test_default_phis():
    p = default_phis()
    assert p[0] == 0.05 and p[-1] == 0.5 and len(p) == 46


def test_pareto_sweep_writes_csv_and_png(tmp_path):
    net = ScaleSpaceHyperUNet(2, 1, 2, channels=4, num_pools=2)
    x = torch.randn(4, 1, 24, 24)
    y = (x > 0).long()
    data = [(x[:2], y[:2]), {"image": x[2:], "label": y[2:]}]
    csv_path, png_path = tmp_path / "out" / "sweep.csv", tmp_path / "out" / "sweep.png"
    table = pareto_sweep(net, data, phis=[0.1, 0.3, 0.5], csv_path=str(csv_path), png_path=str(png_path))
    assert [r["phi"] for r in table] == [0.1, 0.3, 0.5]
    assert all(r["n"] == 4 and 0 <= r["dice_mean"] <= 1 for r in table)
    assert table[0]["gflops"] < table[1]["gflops"] < table[2]["gflops"]
    assert any(r["pareto"] for r in table)
    # the sweep over the hypernetwork (not materialised) gives the same metric
    direct = pareto_sweep(net, data, phis=[0.3], materialize=False)
    assert direct[0]["dice_mean"] == pytest.approx(table[1]["dice_mean"], abs=1e-9)
    with open(csv_path) as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["phi"]) for r in rows] == [0.1, 0.3, 0.5] and float(rows[2]["gflops"]) > 0
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path / "out")) == ["sweep.csv", "sweep.png"]  # no temp files left
    assert net.training  # mode restored


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "t.csv"
    write_csv(TABLE, str(path))
    before = path.read_text()

    def boom(tmp):
        with open(tmp, "w") as fh:
            fh.write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(str(path), boom)
    assert path.read_text() == before and os.listdir(tmp_path) == ["t.csv"]
