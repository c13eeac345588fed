"""Reading finished bundle runs back: per-run convergence figures and seed aggregates."""

import json
import statistics

import pytest

from monai_hyperconv.bundle.runs import aggregate_runs, find_seed_runs, summarize_run


def _run(root, dice, loss=None, summary=None, seconds=None):
    (root / "eval").mkdir(parents=True)
    loss = loss or [1.0 - 0.5 * d for d in dice]
    lines = ["epoch,train_loss,val_mean_dice"] + [f"{i + 1},{l},{d}" for i, (l, d) in enumerate(zip(loss, dice))]
    (root / "eval" / "training_log.csv").write_text("\n".join(lines) + "\n")
    if summary is not None:
        (root / "eval" / "summary.json").write_text(json.dumps(summary))
    if seconds is not None:
        (root / "train_seconds.txt").write_text(f"{seconds}\n")
    return root


def test_summarize_run_values(tmp_path):
    r = _run(tmp_path / "a", [0.0, 0.5, 0.8, 0.6, 0.7, 0.75], summary={"mean_dice": 0.71, "n_cases": 4}, seconds=120)
    s = summarize_run(r)
    assert s["epochs"] == 6 and s["best"] == 0.8 and s["best_epoch"] == 3 and s["last"] == 0.75
    assert s["last_over_best"] == pytest.approx(0.75 / 0.8)
    assert s["mean_last5"] == pytest.approx(statistics.fmean([0.5, 0.8, 0.6, 0.7, 0.75]))
    assert s["final_train_loss"] == pytest.approx(1.0 - 0.5 * 0.75)
    assert s["eval"] == 0.71 and s["train_seconds"] == 120.0
    assert s["converged"]  # 0.75 >= 0.9 * 0.8
    s2 = summarize_run(_run(tmp_path / "b", [0.2, 0.8, 0.7]))
    assert not s2["converged"] and s2["eval"] is None and s2["train_seconds"] is None  # 0.7 < 0.72
    assert not summarize_run(_run(tmp_path / "c", [0.0, 0.0]))["converged"]  # never learnt


def test_summarize_run_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="training_log.csv"):
        summarize_run(tmp_path)
    r = _run(tmp_path / "n", [0.1, float("nan")])
    with pytest.raises(ValueError, match=r"non-finite val_mean_dice at epoch\(s\) \[2\]"):
        summarize_run(r)
    with pytest.raises(ValueError, match="column 'val_loss' missing"):
        summarize_run(_run(tmp_path / "m", [0.1]), metric="val_loss")
    with pytest.raises(ValueError, match="no key 'x'"):
        summarize_run(_run(tmp_path / "k", [0.1], summary={"mean_dice": 0.1}), eval_key="x")


def test_find_and_aggregate_seed_runs(tmp_path):
    for net, dice in (("hyper", [[0.5, 0.6], [0.4, 0.7], [0.5, 0.5]]), ("unet", [[0.3, 0.2]])):
        for s, d in enumerate(dice):
            _run(tmp_path / net / f"seed{s}", d, seconds=100 + s)
    (tmp_path / "hyper" / "seed9").mkdir()  # unfinished: no log, not listed
    (tmp_path / "baselines").mkdir()
    found = find_seed_runs(tmp_path)
    assert sorted(found) == ["hyper", "unet"] and sorted(found["hyper"]) == [0, 1, 2]
    runs = [summarize_run(p) for p in found["hyper"].values()]
    agg = aggregate_runs(runs)
    assert agg["n"] == 3 and agg["converged"] == 3
    assert agg["best_mean"] == pytest.approx(statistics.fmean([0.6, 0.7, 0.5]))
    assert agg["best_std"] == pytest.approx(statistics.stdev([0.6, 0.7, 0.5]))
    assert agg["last_mean"] == pytest.approx(0.6) and agg["eval_mean"] is None
    one = aggregate_runs([summarize_run(found["unet"][0])])
    assert one["best_std"] is None and one["converged"] == 0 and one["train_seconds_mean"] == 100
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_seed_runs(tmp_path / "nope")


def test_describe_network_any_module():
    import torch
    from monai.networks.nets import BasicUNet

    from monai_hyperconv.bundle import describe_network
    from monai_hyperconv.networks import create_network

    net = create_network("hyper_unet", spatial_dims=2, in_channels=1, out_channels=1, channels=8, num_pools=3)
    d = describe_network(net)
    n_hyper = sum(type(m).__name__.startswith("HyperConv") for m in net.modules())
    assert d.startswith(f"{type(net).__name__}: {n_hyper} ") and " 5x5" in d and "Linear" not in d
    assert d.endswith(f"; {sum(p.numel() for p in net.parameters()):,} parameters")
    b = BasicUNet(2, 1, 1, features=(8, 8, 16, 32, 64, 8))
    n3 = sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) for m in b.modules())
    assert f"{n3} Conv2d 3x3" in describe_network(b)
    assert describe_network(torch.nn.ReLU()).startswith("ReLU: no convs; 0 parameters")
