"""``--smoke`` runs of the comparison-based experiment scripts (Ma et al. 2022 and its journal extension, Karmann blog)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from monai_hyperconv.compare import read_report
from monai_hyperconv.bundle.testing import load_script

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    return load_script(ROOT / "scripts" / "experiments" / f"{name}.py", f"exp_{name}")


def check_report(out: Path, name: str) -> dict:
    rep = read_report(out / "summary.json")
    assert rep["name"] == name and "--smoke" in rep["command"] and rep["scale"].startswith("smoke")
    for p in rep["tables"] + rep["figures"]:
        assert Path(p).is_file(), p
    assert rep["figures"] and rep["tables"] and len(rep["paragraph"]) > 100
    return rep


def test_paper_tables_smoke(tmp_path):
    mod = load("paper_tables")
    res = mod.main(["--smoke", "--dataset", "liver", "--out", str(tmp_path)])
    rows = res["results"]["liver"]["rows"]
    assert [r["algorithm"] for r in rows] == [a for _, a, _ in mod.LIVER]
    assert all(r["n_ok"] == 1 and r["n_failed"] == 0 for r in rows)
    assert rows[0]["paper_test"] == 0.651 and rows[5]["paper_test"] == 0.728  # Table 1 as printed
    by = {r["algorithm"]: r for r in rows}
    # the hyper nets have fewer parameters than their plain counterparts at the same width
    assert by["hyper_unet"]["params_mean"] < by["unet5"]["params_mean"]
    from monai_hyperconv.networks import create_network

    net = create_network("flat_hyper_cnn", spatial_dims=2, in_channels=1, out_channels=1, channels=4)
    assert by["flat_hyper_cnn"]["params_mean"] == sum(p.numel() for p in net.parameters())  # smoke width 4
    assert by["nonlocal_unet"]["receptive_field"] == "all" and by["unet"]["receptive_field"] == "68"
    md = (tmp_path / "table1_liver.md").read_text()
    assert md.count("\n") == 2 + len(mod.LIVER) and "| Hyper-UNet 5x5 | 0.886 | 0.728 | 1.2 |" in md
    rep = check_report(tmp_path, "paper_tables")
    assert "0.728 vs UNet 3x3 0.651" in rep["paragraph"]


@pytest.mark.slow
def test_paper_tables_smoke_ms(tmp_path):
    mod = load("paper_tables")
    res = mod.main(["--smoke", "--dataset", "ms", "--out", str(tmp_path)])
    rows = res["results"]["ms"]["rows"]
    assert [r["algorithm"] for r in rows] == [a for _, a, _ in mod.MS] and all(r["n_ok"] == 1 for r in rows)


def test_kernel_grid_smoke(tmp_path):
    mod = load("kernel_grid")
    res = mod.main(["--smoke", "--out", str(tmp_path)])
    rows = res["rows"]
    assert [(r["kernel_size"], r["n_l"]) for r in rows] == [(k, n) for k in (3, 5, 7) for n in (2, 4, 8)]
    assert all(r["test_dice_mean"] is not None and 0 <= r["test_dice_mean"] <= 1 for r in rows)
    # Eq. 3: the parameter count depends on N_L, not on the kernel size
    for n in (2, 4, 8):
        assert len({r["params"] for r in rows if r["n_l"] == n}) == 1
    assert rows[0]["params"] < rows[1]["params"] < rows[2]["params"]
    assert [r["receptive_field"] for r in rows[::3]] == ["68", "128", "188"]
    with open(tmp_path / "kernel_grid.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert float(table[4]["paper_test_dice"]) == 0.728
    # --smoke runs the first seed only; the seeds are the comparison's grid axis (one folder, per-case statistics)
    assert all(r["seeds"] == 1 and r["seeds_learnt"] == int(r["train_dice_mean"] > mod.LEARNT) for r in rows)
    assert json.loads((tmp_path / "comparison" / "comparison.json").read_text())["seeds"] == [0]
    assert (tmp_path / "comparison" / "per_case.csv").is_file()
    assert float(table[0]["test_dice_mean"]) == pytest.approx(rows[0]["test_dice_mean"], abs=1e-6)
    rep = check_report(tmp_path, "kernel_grid")
    assert "1 seed per cell" in rep["paragraph"]
    # the plain-kernel control: same network with stored kxk kernels, whose parameters grow with k
    ctrl = res["plain_control"]
    assert [(c["kernel_size"], c["algorithm"]) for c in ctrl] == [(k, f"unet:kernel_size={k}") for k in (3, 5, 7)]
    assert ctrl[0]["params"] < ctrl[1]["params"] < ctrl[2]["params"]
    assert "Control: the same network with stored (plain) kernels" in (tmp_path / "kernel_grid.md").read_text()
    assert "stored kxk kernels" in rep["paragraph"]


def test_noise_robustness_smoke(tmp_path):
    mod = load("noise_robustness")
    res = mod.main(["--smoke", "--out", str(tmp_path)])
    rows = res["rows"]
    assert len(rows) == 2 * sum(len(v) for v in mod.NOISE.values())
    lb = {a["algorithm"]: a for a in res["result"]["leaderboard"]}
    for algo in mod.ALGORITHMS.values():
        clean = [r for r in rows if r["algorithm"] == algo and r["level"] == 0.0]
        # the clean level of every sweep is the clean test metric
        assert all(r["dice_mean"] == pytest.approx(lb[algo]["test_metric_mean"]) for r in clean)
    check_report(tmp_path, "noise_robustness")


def test_cs_mri_smoke(tmp_path):
    mod = load("cs_mri")
    res = mod.main(["--smoke", "--out", str(tmp_path)])
    rows = res["rows"]
    assert [r["method"] for r in rows] == list(mod.ALGORITHMS) + ["zero-filled input"]
    zf = res["zero_filled"]
    # more k-space noise, lower input PSNR
    vals = [zf[str(float(lv))] for lv in mod.NOISE["kspace_gaussian"]]
    assert all(a > b for a, b in zip(vals, vals[1:]))
    per_case = [r for r in res["result"]["results"] if r["status"] == "ok"]
    assert all(len(r["test_per_case"]) >= 1 for r in per_case)
    import statistics

    r0 = per_case[0]
    assert statistics.fmean(r0["test_per_case"]) == pytest.approx(r0["test_metric"], rel=1e-4)
    check_report(tmp_path, "cs_mri")


def test_digits_robustness_smoke(tmp_path):
    mod = load("digits_robustness")
    res = mod.main(["--smoke", "--out", str(tmp_path)])
    rows = res["rows"]
    assert len(rows) == 2 * sum(len(v) for v in mod.NOISE.values())
    assert all(0.0 <= r["accuracy_mean"] <= 1.0 for r in rows)
    # both nets share the bundle's architecture settings and differ only in the conv type
    from monai_hyperconv.networks import create_network

    lb = {a["algorithm"]: a for a in res["result"]["leaderboard"]}
    for conv in ("conv", "hyper"):
        net = create_network("simple_cnn", spatial_dims=2, in_channels=1, out_channels=10, img_size=28,
                             channels=[32, 32], hidden=256, dropout=0.5, conv=conv)
        assert lb[f"simple_cnn:conv={conv}"]["params_mean"] == sum(p.numel() for p in net.parameters())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["smoke"] is True
    check_report(tmp_path, "digits_robustness")
