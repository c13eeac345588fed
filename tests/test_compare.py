"""The comparison runner on a tiny grid: leaderboard correctness, resume, failures, errors."""

from __future__ import annotations

import csv
import json
import os
import statistics
from pathlib import Path

import pytest
import torch

from monai_hyperconv.bundle.testing import make_tiny_demo
from monai_hyperconv.compare import (
    ComparisonError,
    aggregate,
    network_config,
    parse_algorithm,
    plan_cells,
    run_comparison,
)
from monai_hyperconv.compare.__main__ import main as cli_main
from monai_hyperconv.compare.cell import _evaluate, _overrides

GOOD = ["unet:channels=4", "hyperunet:channels=4,n_l=2"]
BAD = "unet:channels=-1"  # the constructor raises: a crashing algorithm
OPTS = dict(folds=2, iterations=2, overrides={"image_size": 32, "head_bias_init": None, "batch_size": 4},
            noise={"gaussian": [0.0, 0.2]}, latency_reps=2, progress=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    data = make_tiny_demo("liver", root / "data", n_subjects=4, size=(48, 48, 6))
    out = root / "out"
    res = run_comparison("segmentation", GOOD + [BAD], output_dir=out, data=data, workers=2, **OPTS)
    return res, out, data


def test_parse_algorithm_and_network_config():
    a = parse_algorithm("hyperunet:kernel_size=5,n_l=4,channels=[4,8,16,32],norm=instance")
    assert a.name == "hyper_unet" and a.options == {"kernel_size": 5, "n_l": 4, "channels": [4, 8, 16, 32],
                                                     "norm": "instance"}
    base = {"_target_": "x", "name": "hyper_unet", "spatial_dims": 2, "in_channels": 1, "out_channels": 1,
            "channels": 8, "conv": ["hyper", {"n_l": 4}], "kernel_size": 5, "dropout": 0.1}
    cfg = network_config(base, parse_algorithm("unet:kernel_size=3"))
    # the algorithm-defining options of the base network are not inherited: plain convs here
    assert "conv" not in cfg and cfg["kernel_size"] == 3 and cfg["channels"] == 8 and cfg["dropout"] == 0.1
    assert cfg["name"] == "unet"
    with pytest.raises(KeyError, match="no_such_net"):
        parse_algorithm("no_such_net")
    with pytest.raises(ValueError, match="kernel_size"):
        parse_algorithm("unet:kernel_size")
    with pytest.raises(ValueError, match="in_channels"):
        parse_algorithm("unet:in_channels=3")


def test_leaderboard_rows_columns_and_numbers(tiny_run):
    res, out, _ = tiny_run
    rows = res["results"]
    assert len(rows) == 6
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 4 and {r["algorithm"] for r in ok} == set(GOOD)
    md = (out / "leaderboard.md").read_text()
    for a in GOOD + [BAD]:
        assert f"`{a}`" in md
    assert "| algorithm | folds ok | test dice | train dice |" in md
    with open(out / "leaderboard.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [t["algorithm"] for t in table] == GOOD + [BAD]
    for col in ("test_metric_mean", "test_metric_std", "gap_mean", "params_mean", "gflops_mean", "latency_ms_mean",
                "train_time_s_mean", "peak_mem_mb_mean", "robust_metric_mean", "receptive_field"):
        assert col in table[0]
    # the leaderboard's numbers are the per-fold results' means / sample std
    for t in table[:2]:
        folds = [r for r in ok if r["algorithm"] == t["algorithm"]]
        vals = [r["test_metric"] for r in folds]
        assert float(t["test_metric_mean"]) == pytest.approx(statistics.fmean(vals))
        assert float(t["test_metric_std"]) == pytest.approx(statistics.stdev(vals))
        gaps = [r["train_metric"] - r["test_metric"] for r in folds]
        assert float(t["gap_mean"]) == pytest.approx(statistics.fmean(gaps))
    # parameters recomputed from the registry; the hyper-UNet has fewer (Eq. 3)
    from monai_hyperconv.networks import create_network

    for t, algo in zip(table[:2], GOOD):
        a = parse_algorithm(algo)
        net = create_network(a.name, spatial_dims=2, in_channels=1, out_channels=1, num_pools=3, norm="batch",
                             dropout=0.1, **a.options)
        assert int(float(t["params_mean"])) == sum(p.numel() for p in net.parameters())
    assert float(table[1]["params_mean"]) < float(table[0]["params_mean"])
    assert "params" in table[1]["best"].split(";")
    assert table[0]["receptive_field"] == "68" and table[1]["receptive_field"] == "128"
    # robustness at level 0 is the clean test metric; the sweep is recorded per level
    for r in ok:
        assert r["robustness"]["gaussian"]["0.0"] == r["test_metric"]
        assert r["robust_metric"] == r["robustness"]["gaussian"]["0.2"]
        assert r["input_shape"] == [[1, 1, 32, 32]] and r["gflops"] > 0 and r["latency_ms"] > 0
    for name in ("results.json", "metric_vs_params.png", "robustness.png", "comparison.json"):
        assert (out / name).is_file()


def test_a_test_metric_recomputed_from_the_checkpoint(tiny_run):
    """Rebuild a UNet fold from its final checkpoint and evaluate it: the same (non-zero) Dice."""
    res, out, _ = tiny_run
    r = max((r for r in res["results"] if r["algorithm"] == GOOD[0]), key=lambda r: r["test_metric"])
    assert r["test_metric"] > 0
    spec = json.loads((Path(r["cell_dir"]) / "cell.json").read_text())
    state = torch.load(Path(r["cell_dir"]) / "models" / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    again = _evaluate(spec, {**_overrides(spec, False)}, state["network"], "validation")
    assert again["metric"] == pytest.approx(r["test_metric"], abs=1e-6)
    train = _evaluate(spec, {**_overrides(spec, False)}, state["network"], "training")
    assert train["metric"] == pytest.approx(r["train_metric"], abs=1e-6)


def test_crashing_algorithm_is_recorded(tiny_run):
    res, out, _ = tiny_run
    bad = [r for r in res["results"] if r["algorithm"] == BAD]
    assert len(bad) == 2 and all(r["status"] == "failed" for r in bad)
    assert all("channels" in r["error"] for r in bad)
    assert "Traceback" in json.loads((Path(bad[0]["cell_dir"]) / "result.json").read_text())["traceback"]
    md = (out / "leaderboard.md").read_text()
    assert "Failed cells:" in md and f"`{BAD}` fold 0:" in md
    row = next(a for a in res["leaderboard"] if a["algorithm"] == BAD)
    assert row["n_ok"] == 0 and row["n_failed"] == 2 and row["test_metric_mean"] is None


def test_resume_skips_finished_cells(tiny_run):
    res, out, data = tiny_run
    ok_dirs = [Path(r["cell_dir"]) for r in res["results"] if r["status"] == "ok"]
    stamps = {d: (d / "result.json").stat().st_mtime_ns for d in ok_dirs}
    again = run_comparison("segmentation", GOOD, output_dir=out, data=data, workers=1, **OPTS)
    assert {d: (d / "result.json").stat().st_mtime_ns for d in ok_dirs} == stamps  # not recomputed
    assert [r["test_metric"] for r in again["results"]] == [r["test_metric"] for r in res["results"][:4]]
    # the earlier run's third algorithm stays on the leaderboard, in the original order
    assert [a["algorithm"] for a in again["leaderboard"]] == GOOD + [BAD]
    # failed cells are re-run by default; keep_failed (retry_failed=False) keeps their recorded error
    bad_dirs = [Path(r["cell_dir"]) for r in res["results"] if r["status"] == "failed"]
    bad_stamps = {d: (d / "result.json").stat().st_mtime_ns for d in bad_dirs}
    kept = run_comparison("segmentation", GOOD + [BAD], output_dir=out, data=data, retry_failed=False, **OPTS)
    assert {d: (d / "result.json").stat().st_mtime_ns for d in bad_dirs} == bad_stamps
    assert [r["status"] for r in kept["results"]] == ["ok"] * 4 + ["failed"] * 2
    # a different budget in the same folder is refused, and nothing is overwritten
    before = (out / "comparison.json").read_text()
    with pytest.raises(ComparisonError, match="budget"):
        run_comparison("segmentation", GOOD, output_dir=out, data=data, **{**OPTS, "iterations": 3})
    assert (out / "comparison.json").read_text() == before


def test_auto3dseg_work_dir_joins_the_leaderboard(tiny_run, tmp_path):
    """An Auto3DSeg work directory's algorithm x fold scores appear as their own leaderboard row."""
    res, out, data = tiny_run
    wd = tmp_path / "work_dir"
    for fold, score in ((0, 0.75), (1, 0.65)):
        algo = wd / f"segresnet_{fold}"
        (algo / "configs").mkdir(parents=True)
        (algo / "model").mkdir()
        (algo / "configs" / "hyper_parameters.yaml").write_text(
            f"bundle_root: {algo}\nckpt_path: $@bundle_root + '/model'\nfold: {fold}\n")
        (algo / "model" / "progress.yaml").write_text(f"- {{best_avg_dice_score: {score}, best_avg_dice_score_epoch: 3}}\n")
    again = run_comparison("segmentation", GOOD, output_dir=out, data=data, auto3dseg_work_dirs=[wd], **OPTS)
    row = next(a for a in again["leaderboard"] if a["algorithm"] == "auto3dseg:segresnet")
    assert row["n_ok"] == 2 and row["test_metric_mean"] == pytest.approx(0.7)
    assert "`auto3dseg:segresnet`" in (out / "leaderboard.md").read_text()
    assert "test_metric" in row["best"]  # 0.7 beats the few-iteration runner cells


def test_cell_environment_pins_devices():
    from monai_hyperconv.compare import runner

    env, dev = runner.cell_environment("cuda:3", 8, {"PATH": "/bin"})
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and dev == "cuda:0" and "OMP_NUM_THREADS" not in env
    env, dev = runner.cell_environment("cpu", 2, {})
    assert env == {"OMP_NUM_THREADS": "2"} and dev == "cpu"


def test_workers_share_out_devices(tmp_path, monkeypatch):
    """Two workers on two GPUs: cells launched concurrently get different devices."""
    import subprocess

    from monai_hyperconv.compare import runner

    data = make_tiny_demo("liver", tmp_path / "data", n_subjects=4, size=(48, 48, 6))
    seen = []

    def launch(cell, device, threads):
        seen.append((cell["algorithm"], device, threads))
        Path(cell["cell_dir"]).mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(["python", "-c", "import time; time.sleep(0.5)"])
        proc._log = open(os.devnull, "wb")
        return proc

    monkeypatch.setattr(runner, "_launch", launch)
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 8)
    run_comparison("segmentation", ["unet", "unet5"], output_dir=tmp_path / "out", data=data, workers=2,
                   devices=["cuda:0", "cuda:1"], **{**OPTS, "folds": 1})
    assert sorted(d for _, d, _ in seen) == ["cuda:0", "cuda:1"] and {t for _, _, t in seen} == {4}


def test_dead_cell_process_is_recorded(tmp_path, monkeypatch):
    """A cell whose process dies without a result (killed, segfault) is recorded as failed."""
    import subprocess

    from monai_hyperconv.compare import runner

    data = make_tiny_demo("liver", tmp_path / "data", n_subjects=4, size=(48, 48, 6))

    def launch(cell, device, threads):
        Path(cell["cell_dir"]).mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(["python", "-c", "import sys; print('boom'); sys.exit(139)"],
                                stdout=open(Path(cell["cell_dir"]) / "log.txt", "wb"), stderr=subprocess.STDOUT)
        proc._log = open(os.devnull, "wb")
        return proc

    monkeypatch.setattr(runner, "_launch", launch)
    res = run_comparison("segmentation", ["unet"], output_dir=tmp_path / "out", data=data, **{**OPTS, "folds": 1})
    (r,) = res["results"]
    assert r["status"] == "failed" and "exited with code 139" in r["error"] and "boom" in r["error"]


def test_demo_data_follows_the_bundle(tmp_path):
    """Task "segmentation" with the MS bundle and no data: the MS demo (4 contrasts), not the liver one."""
    manifest, cells = plan_cells("segmentation", ["mb_unet"], 1, tmp_path, epochs=1, bundle="ms_lesion_segmentation")
    assert manifest["demo_task"] == "ms" and manifest["dataset_dir"].endswith("ms_demo")
    assert cells[0]["network"]["in_channels"] == 4
    manifest, _ = plan_cells("segmentation", ["unet"], 1, tmp_path, epochs=1)
    assert manifest["demo_task"] == "liver"


def test_bad_inputs_name_the_argument(tmp_path):
    with pytest.raises(ComparisonError, match="task 'segment'"):
        plan_cells("segment", ["unet"], 2, tmp_path, epochs=1)
    with pytest.raises(ComparisonError, match="exactly one budget"):
        plan_cells("segmentation", ["unet"], 2, tmp_path)
    with pytest.raises(ComparisonError, match="no dataset.json"):
        plan_cells("segmentation", ["unet"], 2, tmp_path, epochs=1, data=tmp_path)
    with pytest.raises(ComparisonError, match="override 'no_such_key'"):
        plan_cells("segmentation", ["unet"], 2, tmp_path, epochs=1, overrides={"no_such_key": 1})
    with pytest.raises(ComparisonError, match="given twice"):
        plan_cells("segmentation", ["unet", "UNet"], 2, tmp_path, epochs=1)
    with pytest.raises(ComparisonError, match="noise"):
        plan_cells("segmentation", ["unet"], 2, tmp_path, epochs=1, noise={"poisson": [0.1]})
    assert cli_main(["--task", "segmentation", "--algorithms", "nonet", "--epochs", "1",
                     "--output", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_aggregate_marks_best_by_direction():
    rows = [
        {"algorithm": "a", "status": "ok", "fold": 0, "test_metric": 30.0, "params": 10, "latency_ms": 2.0, "gap": -0.5},
        {"algorithm": "b", "status": "ok", "fold": 0, "test_metric": 28.0, "params": 5, "latency_ms": 3.0, "gap": 0.2},
    ]
    up = {a["algorithm"]: a["best"] for a in aggregate(rows, higher_is_better=True)}
    assert "test_metric" in up["a"] and "params" in up["b"] and "latency_ms" in up["a"]
    assert "gap" in up["b"]  # the gap closest to zero, not the most negative
    down = {a["algorithm"]: a["best"] for a in aggregate(rows, higher_is_better=False)}
    assert "test_metric" in down["b"]


def test_peak_memory_is_the_cells_own():
    """The peak-RSS count restarts per cell (ru_maxrss would report the runner's own peak for every cell)."""
    import numpy as np

    from monai_hyperconv.compare.cell import _peak_rss_mb, _reset_peak_rss

    if _peak_rss_mb() is None:
        pytest.skip("no /proc/self/status VmHWM on this platform")
    _reset_peak_rss()
    base = _peak_rss_mb()
    big = np.ones(40_000_000)  # 305 MiB, touched
    grown = _peak_rss_mb()
    del big
    _reset_peak_rss()
    assert grown - base > 250 and _peak_rss_mb() < grown - 250
