"""The comparison runner on a tiny grid: leaderboard correctness, resume, failures, errors."""

from __future__ import annotations

import csv
import json
import os
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_hyperconv.bundle.testing import make_tiny_demo
from monai_hyperconv.compare import (
    ComparisonError,
    ComparisonSettings,
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
    res = run_comparison("segmentation", GOOD + [BAD], ComparisonSettings(output_dir=out, data=data, workers=2, **OPTS))
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
        # ... and per case (paired statistics under noise): the clean level's cases are the test cases,
        # the noisy level's cases average to the level's metric
        cases = r["robustness_per_case"]["gaussian"]
        assert cases["0.0"] == r["test_per_case"] and len(cases["0.2"]) == len(r["test_case_ids"])
        assert float(np.mean(cases["0.2"])) == pytest.approx(r["robustness"]["gaussian"]["0.2"], abs=1e-5)
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


# -- the settings object: validation, the deprecated keyword form, the CLI --


@pytest.mark.parametrize("kwargs, field", [
    (dict(folds=0, epochs=1), "folds"),
    (dict(), "epochs or iterations"),
    (dict(epochs=1, iterations=1), "epochs or iterations"),
    (dict(epochs=0), "epochs"),
    (dict(iterations="many"), "iterations"),
    (dict(epochs=1, workers=0), "workers"),
    (dict(epochs=1, workers=2, isolate=False), "workers must be 1"),
    (dict(epochs=1, seed="x"), "seed"),
    (dict(epochs=1, latency_reps=0), "latency_reps"),
    (dict(epochs=1, folds=2, fold_ids=[2]), "fold_ids"),
    (dict(epochs=1, fold_ids="0"), "fold_ids"),
    (dict(epochs=1, noise={"poisson": [0.1]}), "noise"),
    (dict(epochs=1, noise={"gaussian": ["high"]}), "noise"),
    (dict(epochs=1, configs="train.json"), "configs"),
    (dict(epochs=1, overrides=["image_size=32"]), "overrides"),
    (dict(epochs=1, devices=[0]), "devices"),
    (dict(epochs=1, auto3dseg_work_dirs="work_dir"), "auto3dseg_work_dirs"),
])
def test_settings_validation_names_the_field(kwargs, field):
    with pytest.raises(ComparisonError, match=field):
        ComparisonSettings(**kwargs)


def test_settings_normalise_and_replace(tmp_path):
    s = ComparisonSettings(output_dir=str(tmp_path), epochs=2, configs=["train.json"], devices=[], fold_ids=[1],
                           noise={"gaussian": [0, 1]}, seed="3")
    assert s.output_dir == tmp_path and s.configs == ("train.json",) and s.devices is None and s.fold_ids == (1,)
    assert s.noise == {"gaussian": (0.0, 1.0)} and s.seed == 3 and s.budget == {"epochs": 2}
    assert s == ComparisonSettings(output_dir=tmp_path, epochs=2, configs=("train.json",), fold_ids=(1,),
                                   noise={"gaussian": (0.0, 1.0)}, seed=3)
    hash(s)  # frozen and hashable (the mappings are left out of the hash)
    with pytest.raises(AttributeError):
        s.epochs = 3  # type: ignore[misc]
    quick = s.replace(iterations=1)  # one budget replaces the other
    assert quick.budget == {"iterations": 1} and quick.epochs is None and s.epochs == 2
    with pytest.raises(ComparisonError, match="fold_ids"):
        s.replace(folds=1)  # validated again


def test_old_keywords_give_the_same_plan(tmp_path, monkeypatch):
    data = make_tiny_demo("liver", tmp_path / "data", n_subjects=4, size=(48, 48, 6))
    old = dict(epochs=2, data=data, overrides={"image_size": 32}, noise={"gaussian": [0, 0.2]}, seed=5, fold_ids=[1],
               latency_reps=3)
    settings = ComparisonSettings(folds=2, output_dir=tmp_path / "out", **old)
    new_plan = plan_cells("segmentation", GOOD, settings)
    with pytest.warns(DeprecationWarning, match="ComparisonSettings"):
        assert plan_cells("segmentation", GOOD, 2, tmp_path / "out", **old) == new_plan
    with pytest.warns(DeprecationWarning):
        assert plan_cells("segmentation", GOOD, folds=2, output_dir=tmp_path / "out", **old) == new_plan
    # the demo data (not generated yet) and the task's default noise, too
    demo = ComparisonSettings(folds=1, output_dir=tmp_path / "demo", iterations=1)
    with pytest.warns(DeprecationWarning):
        assert plan_cells("segmentation", ["unet"], 1, tmp_path / "demo", iterations=1) == plan_cells(
            "segmentation", ["unet"], demo)
    with pytest.raises(TypeError, match="not both"):
        plan_cells("segmentation", GOOD, settings, seed=1)
    with pytest.raises(TypeError, match="no_such_option"):
        plan_cells("segmentation", GOOD, 2, tmp_path / "out", epochs=1, no_such_option=1)
    # run_comparison: its old keywords (and positional order) build the same settings
    from monai_hyperconv.compare import runner

    seen = []

    def plan(task, algorithms, s):
        seen.append(s)
        raise ComparisonError("planned")

    monkeypatch.setattr(runner, "plan_cells", plan)
    full = settings.replace(workers=2, devices=["cuda:0"], progress=False, retry_failed=False)
    with pytest.warns(DeprecationWarning, match="run_comparison"), pytest.raises(ComparisonError, match="planned"):
        run_comparison("segmentation", GOOD, 2, tmp_path / "out", workers=2, devices=["cuda:0"], progress=False,
                       retry_failed=False, **old)
    with pytest.raises(ComparisonError, match="planned"):
        run_comparison("segmentation", GOOD, full)
    assert seen[0] == seen[1] == full


def test_cli_builds_the_same_settings_as_the_api(tmp_path, monkeypatch):
    import monai_hyperconv.compare.__main__ as cli

    argv = ["--task", "segmentation", "--algorithms", "unet", "hyperunet:n_l=2", "--folds", "3", "--fold-ids", "0", "2",
            "--iterations", "4", "--data", str(tmp_path / "data"), "--configs", "train.json", "--set", "image_size=32",
            "network_def#channels=[4,8]", "--noise", '{"gaussian": [0, 0.1]}', "--seed", "2", "--workers", "2",
            "--devices", "cuda:0", "cuda:1", "--output", str(tmp_path / "out"), "--auto3dseg-workdir", "wd",
            "--latency-reps", "3", "--keep-failed"]
    api = ComparisonSettings(folds=3, fold_ids=[0, 2], iterations=4, data=tmp_path / "data", configs=["train.json"],
                             overrides={"image_size": 32, "network_def#channels": [4, 8]},
                             noise={"gaussian": [0.0, 0.1]}, seed=2, workers=2, devices=["cuda:0", "cuda:1"],
                             output_dir=tmp_path / "out", auto3dseg_work_dirs=["wd"], latency_reps=3,
                             retry_failed=False)
    assert ComparisonSettings.from_args(cli.parse_args(argv)) == api
    minimal = ["--task", "segmentation", "--algorithms", "unet", "--epochs", "2"]
    assert ComparisonSettings.from_args(cli.parse_args(minimal)) == ComparisonSettings(epochs=2)
    assert ComparisonSettings.from_args(cli.parse_args(minimal + ["--noise", "none"])).noise == {}
    # main() hands exactly these settings to the runner
    seen = []
    board = tmp_path / "leaderboard.md"
    board.write_text("| algorithm |\n")

    def run(task, algorithms, settings):
        seen.append((task, algorithms, settings))
        return {"results": [{"status": "ok"}], "paths": {"markdown": str(board)}}

    monkeypatch.setattr(cli, "run_comparison", run)
    assert cli.main(argv) == 0
    assert seen == [("segmentation", ["unet", "hyperunet:n_l=2"], api)]
    # a bad setting is a usage error naming it, before anything runs
    assert cli.main(minimal + ["--workers", "0"]) == 2 and len(seen) == 1
    assert cli.main(minimal + ["--noise", "{gaussian"]) == 2 and cli.main(minimal + ["--set", "image_size"]) == 2


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


# -- the data fingerprint: a rewritten data list is never mixed into a resumed comparison --

ONE = dict(OPTS, folds=1, iterations=1, noise={}, isolate=False)


def test_changed_data_is_refused_and_unchanged_data_resumes(tmp_path):
    data = Path(make_tiny_demo("liver", tmp_path / "data", n_subjects=4, size=(48, 48, 6)))
    out = tmp_path / "out"
    (r,) = run_comparison("segmentation", ["unet:channels=4"], output_dir=out, data=data, **ONE)["results"]
    assert r["status"] == "ok"
    manifest = json.loads((out / "comparison.json").read_text())
    assert manifest["data_fingerprint"] and json.loads((Path(r["cell_dir"]) / "cell.json").read_text())[
        "data_fingerprint"] == manifest["data_fingerprint"]
    stamp = (Path(r["cell_dir"]) / "result.json").stat().st_mtime_ns
    listing = (data / "dataset.json").read_text()
    # half the entries dropped: refused, naming the data list; nothing is overwritten
    js = json.loads(listing)
    js["training"] = js["training"][: len(js["training"]) // 2]
    (data / "dataset.json").write_text(json.dumps(js))
    before = (out / "comparison.json").read_text()
    with pytest.raises(ComparisonError, match=f"other data: {data / 'dataset.json'} or a file it lists changed"):
        run_comparison("segmentation", ["unet:channels=4"], output_dir=out, data=data, **ONE)
    assert (out / "comparison.json").read_text() == before
    assert (Path(r["cell_dir"]) / "result.json").stat().st_mtime_ns == stamp
    # the same list again, but a listed image rewritten (new mtime): refused too
    (data / "dataset.json").write_text(listing)
    image = data / js["training"][0]["image"]
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    with pytest.raises(ComparisonError, match="dataset.json"):
        run_comparison("segmentation", ["unet:channels=4"], output_dir=out, data=data, **ONE)
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns - 10**9))
    # unchanged data: resumes, the finished cell is not recomputed
    (again,) = run_comparison("segmentation", ["unet:channels=4"], output_dir=out, data=data, **ONE)["results"]
    assert again["test_metric"] == r["test_metric"]
    assert (Path(r["cell_dir"]) / "result.json").stat().st_mtime_ns == stamp
    # an output folder from before data fingerprints cannot be checked: refused
    old = json.loads(before)
    del old["data_fingerprint"]
    (out / "comparison.json").write_text(json.dumps(old))
    with pytest.raises(ComparisonError, match="before data fingerprints"):
        run_comparison("segmentation", ["unet:channels=4"], output_dir=out, data=data, **ONE)


def test_generated_demo_data_resumes(tmp_path, monkeypatch):
    """Without --data the runner generates the demo, fingerprints it afterwards, and a re-run resumes."""
    import monai_hyperconv.data

    def tiny(task, out_dir, **kwargs):  # the full demo takes long to generate; the same path, small
        return str(Path(make_tiny_demo(task, out_dir, n_subjects=4, size=(48, 48, 6))) / "dataset.json")

    monkeypatch.setattr(monai_hyperconv.data, "ensure_demo", tiny)
    manifest, _ = plan_cells("segmentation", ["unet:channels=4"], 1, tmp_path, iterations=1)
    assert manifest["is_demo"] and manifest["data_fingerprint"] is None  # not generated yet
    (r,) = run_comparison("segmentation", ["unet:channels=4"], output_dir=tmp_path, **ONE)["results"]
    stamp = (Path(r["cell_dir"]) / "result.json").stat().st_mtime_ns
    fingerprint = json.loads((tmp_path / "comparison.json").read_text())["data_fingerprint"]
    assert r["status"] == "ok" and fingerprint
    run_comparison("segmentation", ["unet:channels=4"], output_dir=tmp_path, **ONE)
    assert (Path(r["cell_dir"]) / "result.json").stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "comparison.json").read_text())["data_fingerprint"] == fingerprint


# -- cell folders are locked while a process works in them; cells die with the runner --

posix_only = pytest.mark.skipif(os.name != "posix", reason="flock and process groups are POSIX")


@posix_only
def test_a_locked_cell_is_reported_busy_not_run(tmp_path):
    import subprocess
    import sys

    from monai_hyperconv.compare.cell import BUSY_EXIT, cell_lock

    data = make_tiny_demo("liver", tmp_path / "data", n_subjects=4, size=(48, 48, 6))
    out = tmp_path / "out"
    _, (cell,) = plan_cells("segmentation", ["unet:channels=4"], 1, out, iterations=1, data=data, noise={})
    cell_dir = Path(cell["cell_dir"])
    with cell_lock(cell_dir):  # another process working in the folder (flock: per open file, so this one counts)
        for isolate in (True, False):
            res = run_comparison("segmentation", ["unet:channels=4"], output_dir=out, data=data,
                                 **dict(ONE, isolate=isolate))
            (r,) = res["results"]
            assert r["status"] == "busy" and f"cell folder {cell_dir} is busy" in r["error"]
            assert f"pid {os.getpid()}" in r["error"] and "another process" in r["error"]
            assert not (cell_dir / "result.json").exists() and res["leaderboard"] == []
        # a cell process started beside it (two runners racing) leaves without touching the folder
        (cell_dir / "cell.json").write_text(json.dumps(dict(cell, device="cpu", threads=1)))
        proc = subprocess.run([sys.executable, "-m", "monai_hyperconv.compare.cell", str(cell_dir / "cell.json")],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == BUSY_EXIT and "is busy" in proc.stderr
        assert not (cell_dir / "result.json").exists()
    # released: it runs
    (r,) = run_comparison("segmentation", ["unet:channels=4"], output_dir=out, data=data, **ONE)["results"]
    assert r["status"] == "ok" and (cell_dir / "result.json").is_file()


def test_a_cell_process_that_finds_its_folder_busy_is_not_a_result(tmp_path, monkeypatch):
    """Two runners racing: the cell process that loses the lock exits with BUSY_EXIT; reported busy, not failed."""
    import subprocess

    from monai_hyperconv.compare import runner
    from monai_hyperconv.compare.cell import BUSY_EXIT

    data = make_tiny_demo("liver", tmp_path / "data", n_subjects=4, size=(48, 48, 6))

    def launch(cell, device, threads):
        Path(cell["cell_dir"]).mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(["python", "-c", f"import sys; sys.exit({BUSY_EXIT})"])
        proc._log = open(os.devnull, "wb")
        return proc

    monkeypatch.setattr(runner, "_launch", launch)
    res = run_comparison("segmentation", ["unet"], output_dir=tmp_path / "out", data=data, **{**OPTS, "folds": 1})
    (r,) = res["results"]
    assert r["status"] == "busy" and "was busy" in r["error"] and res["leaderboard"] == []
    assert not (Path(r["cell_dir"]) / "result.json").exists()


def _alive(pid: int) -> bool:
    """Whether any thread of ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does
    not; a main thread may be a zombie while the other threads still exit and hold its files)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        states = [t.read_text().rsplit(")", 1)[1].split()[0] for t in Path(f"/proc/{pid}/task").glob("*/stat")]
    except (OSError, IndexError):
        return True
    return any(st not in ("Z", "X") for st in states) if Path("/proc/self/task").is_dir() else True


@posix_only
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_cells_die_with_the_runner(tmp_path, sig):
    """SIGTERM: the runner stops its cells' process groups; SIGKILL (nothing to catch): each cell ends
    itself once its runner is gone. Either way the cell's lock is free again for a re-run."""
    import signal
    import subprocess
    import sys
    import time

    from monai_hyperconv.compare.cell import cell_lock

    data = make_tiny_demo("liver", tmp_path / "data", n_subjects=4, size=(48, 48, 6))
    out = tmp_path / "out"
    # a cell that trains far longer than this test waits
    kwargs = dict(output_dir=str(out), data=data, folds=1, iterations=10**6, overrides=OPTS["overrides"], noise={},
                  latency_reps=1, progress=False)
    code = f"from monai_hyperconv.compare import run_comparison\nrun_comparison('segmentation', ['unet:channels=4'], **{kwargs!r})"
    runner = subprocess.Popen([sys.executable, "-c", code])
    lock = out / "cells" / parse_algorithm("unet:channels=4").slug / "fold0" / ".lock"
    pid = None
    try:
        deadline = time.monotonic() + 240
        while pid is None and time.monotonic() < deadline and runner.poll() is None:
            text = lock.read_text().strip() if lock.is_file() else ""
            pid = int(text) if text.isdigit() else None
            time.sleep(0.2)
        assert pid is not None and _alive(pid), f"no cell started (runner exit code {runner.poll()})"
        runner.send_signal(getattr(signal, sig))
        assert runner.wait(timeout=60) == (128 + signal.SIGTERM if sig == "SIGTERM" else -signal.SIGKILL)
        # SIGTERM: the runner has stopped and reaped its cells before it exited
        deadline = time.monotonic() + (0 if sig == "SIGTERM" else 15)
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), f"cell process {pid} outlived its runner"
        with cell_lock(lock.parent):  # the dead cell's lock does not block a re-run
            pass
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        if pid is not None and _alive(pid):
            os.killpg(pid, signal.SIGKILL)  # never leave a training process behind
