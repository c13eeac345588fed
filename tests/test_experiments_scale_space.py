"""scripts/experiments/scale_space.py --smoke: outputs exist, tables are right, numbers finite and consistent.

The command line is the script's (``load_script``); the logic is ``monai_hyperconv.experiments.scale_space``.
"""

import csv
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_hyperconv.compare import read_report
from monai_hyperconv.experiments import scale_space
from monai_hyperconv.bundle.testing import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "experiments" / "scale_space.py"
METHODS = ["SSHN", "Fixed", "Stochastic", "FiLM"]
TABLES = ["methods", "segmentation", "training_time", "prior_width", "prior_width_summary", "transfer", "registration",
          "dice_by_phi", "transfer_by_phi"]
FIGURES = ["dice_vs_phi", "pareto", "prior_width", "transfer", "registration_pareto"]


def _load():
    return load_script(SCRIPT, "scale_space_script")


@pytest.fixture(scope="module")
def script():
    return _load()


@pytest.fixture(scope="module")
def smoke(script, tmp_path_factory):
    n = torch.get_num_threads()
    out = tmp_path_factory.mktemp("scale_space")
    try:
        res = script.main(["--smoke", "--out", str(out), "--device", "cpu", "--threads", "1"])
    finally:
        torch.set_num_threads(n)
    return out, res


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _close(a, b):
    return abs(float(a) - float(b)) < 1e-9


def test_outputs_exist(smoke):
    out, _ = smoke
    names = {p.name for p in out.iterdir()}
    assert {f"{t}.csv" for t in TABLES} | {f"{t}.md" for t in TABLES} | {"summary.json"} <= names
    assert {f"{f}.png" for f in FIGURES} <= names
    assert not [n for n in names if ".tmp" in n]  # atomic writes leave nothing behind
    for f in FIGURES:
        head = (out / f"{f}.png").read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        w, h = struct.unpack(">II", head[16:24])
        assert w > 100 and h > 100


def test_segmentation_table(smoke):
    out, res = smoke
    rows = _csv(out / "segmentation.csv")
    assert list(rows[0]) == scale_space.SEG_COLUMNS
    cfg = res["config"]
    fixed_phis = sorted(cfg["fixed_phis"])
    grid = sorted(set(cfg["phis"]) | set(fixed_phis))
    assert cfg["eval_phis"] == grid
    # one row per method x phi: the phi-conditioned methods over the whole grid, Fixed at its own phis
    for m in ("SSHN", "Stochastic", "FiLM"):
        assert sorted(float(r["phi"]) for r in rows if r["method"] == m) == pytest.approx(grid)
    fixed = [r for r in rows if r["method"] == "Fixed"]
    assert sorted(float(r["phi"]) for r in fixed) == pytest.approx(fixed_phis)
    assert all(_close(r["phi"], r["train_phi"]) for r in fixed)
    assert len(rows) == 3 * len(grid) + len(fixed_phis)
    for r in rows:
        assert 0.0 <= float(r["dice_mean"]) <= 1.0 and 0.0 <= float(r["dice_std"]) <= 1.0
        assert math.isfinite(float(r["gflops"])) and float(r["gflops"]) > 0
        assert int(r["n"]) == cfg["n_test"]
    # identical architecture: at one phi every method costs the same inference GFLOPs (materialised nets)
    for fr in fixed:
        same = [float(r["gflops"]) for r in rows if _close(r["phi"], fr["phi"])]
        assert max(same) == pytest.approx(min(same), rel=1e-9)
    # the compact view repeats the full table's values
    view = _csv(out / "dice_by_phi.csv")
    assert list(view[0]) == ["phi", "gflops", *METHODS]
    full = {(r["method"], float(r["phi"])): float(r["dice_mean"]) for r in rows}
    for v in view:
        for m in METHODS:
            if v[m] != "":
                assert float(v[m]) == pytest.approx(full[(m, float(v["phi"]))], abs=1e-9)
    assert sum(v["Fixed"] != "" for v in view) == len(fixed_phis)
    # GFLOPs grow with phi
    s = sorted([r for r in rows if r["method"] == "SSHN"], key=lambda r: float(r["phi"]))
    assert all(float(a["gflops"]) <= float(b["gflops"]) for a, b in zip(s, s[1:]))


def _dominates(a, b):
    ga, gb, da, db = float(a["gflops"]), float(b["gflops"]), float(a["dice_mean"]), float(b["dice_mean"])
    return ga <= gb and da >= db and (ga < gb or da > db)


def test_pareto_flags_recomputed(smoke):
    out, _ = smoke
    rows = _csv(out / "segmentation.csv")
    for m in METHODS:
        rs = [r for r in rows if r["method"] == m]
        for r in rs:
            dominated = any(_dominates(o, r) for o in rs if o is not r)
            assert (r["pareto"] == "True") == (not dominated), (m, r["phi"])
        assert any(r["pareto"] == "True" for r in rs)
    for r in rows:  # the all-methods front
        assert (r["pareto_all"] == "True") == (not any(_dominates(o, r) for o in rows if o is not r))
    front = [r for r in rows if r["pareto_all"] == "True"]
    assert front and not any(_dominates(a, b) for a in front for b in front)


def test_methods_table(smoke):
    out, _ = smoke
    rows = _csv(out / "methods.csv")
    assert list(rows[0]) == scale_space.METHOD_COLUMNS
    assert [r["method"] for r in rows] == METHODS
    seg = _csv(out / "segmentation.csv")
    for r in rows:
        ms = [float(s["dice_mean"]) for s in seg if s["method"] == r["method"]]
        assert float(r["best_dice"]) == pytest.approx(max(ms))
        assert float(r["cheap_dice"]) >= max(ms) - 0.01 - 1e-12
        assert float(r["cheap_gflops"]) <= float(r["best_gflops"]) + 1e-12


def test_training_time_ratio(smoke):
    out, res = smoke
    rows = _csv(out / "training_time.csv")
    sshn = [float(r["train_seconds"]) for r in rows if r["model"] == "sshn"]
    fixed = [float(r["train_seconds"]) for r in rows if r["method"] == "Fixed" and not r["model"].startswith("total")]
    assert len(sshn) == 1 and len(fixed) == len(res["config"]["fixed_phis"])
    assert all(t > 0 and math.isfinite(t) for t in sshn + fixed)
    s = json.loads((out / "summary.json").read_text())
    tt = s["training_time"]
    assert tt["sshn_seconds"] == pytest.approx(sshn[0], rel=1e-6)
    assert tt["fixed_sweep_seconds"] == pytest.approx(sum(fixed), rel=1e-6)
    assert tt["ratio"] == pytest.approx(sum(fixed) / sshn[0], rel=1e-6)
    assert s["numbers"]["train_time_ratio"] == pytest.approx(tt["ratio"], rel=1e-12)
    sshn_cpu = [float(r["train_cpu_seconds"]) for r in rows if r["model"] == "sshn"][0]
    fixed_cpu = [float(r["train_cpu_seconds"]) for r in rows if r["method"] == "Fixed" and not r["model"].startswith("total")]
    assert sshn_cpu > 0 and all(t > 0 for t in fixed_cpu)
    assert tt["ratio_cpu"] == pytest.approx(sum(fixed_cpu) / sshn_cpu, rel=1e-6)
    assert s["numbers"]["train_time_ratio_cpu"] == pytest.approx(tt["ratio_cpu"], rel=1e-12)
    total = {r["model"]: float(r["train_seconds"]) for r in rows if r["model"].startswith("total")}
    assert sorted(total.values()) == pytest.approx(sorted([sshn[0], sum(fixed)]), rel=1e-6)


def test_prior_width_and_transfer(smoke):
    out, res = smoke
    cfg = res["config"]
    rows = _csv(out / "prior_width.csv")
    assert list(rows[0]) == scale_space.PRIOR_COLUMNS
    priors = list(dict.fromkeys(r["prior"] for r in rows))
    assert len(priors) == len(cfg["prior_r"]) + 2  # each r, U(0, 1) and the main U(0, 0.5)
    assert "phi = 0.5 (r = 0)" in priors and "U(0, 1)" in priors
    grid = sorted(set(cfg["prior_phis"]) | {0.5})
    for p in priors:
        assert sorted(float(r["phi"]) for r in rows if r["prior"] == p) == pytest.approx(grid)
    assert all(0 <= float(r["dice_mean"]) <= 1 for r in rows)
    summ = _csv(out / "prior_width_summary.csv")
    assert [r["prior"] for r in summ][: len(priors)] == priors
    for r in summ:
        assert 0 <= float(r["test_dice_at_0.5"]) <= 1 and 0 <= float(r["train_dice_at_0.5"]) <= 1
    # the summary's test Dice at 0.5 is the sweep's value at 0.5
    for p in priors:
        at = next(float(r["dice_mean"]) for r in rows if r["prior"] == p and _close(r["phi"], 0.5))
        assert float(next(s for s in summ if s["prior"] == p)["test_dice_at_0.5"]) == pytest.approx(at, abs=1e-6)

    tr = _csv(out / "transfer.csv")
    assert list(tr[0]) == scale_space.TRANSFER_COLUMNS
    for p0 in cfg["transfer_phi0"]:
        phis = sorted(set(cfg["transfer_phis"]) | {p0})
        for m in ("SSHN", "T-SSHN", "T-Fixed"):
            got = sorted(float(r["phi"]) for r in tr if _close(r["phi0"], p0) and r["method"] == m)
            assert got == pytest.approx(phis), (p0, m)
        # at phi_0 itself the transferred SSHN weights are the SSHN's own prediction (materialisation is exact)
        own = {r["method"]: float(r["dice_mean"]) for r in tr if _close(r["phi0"], p0) and _close(r["phi"], p0)}
        assert own["T-SSHN"] == pytest.approx(own["SSHN"], abs=1e-6)
        seg = _csv(out / "segmentation.csv")
        fx = next(float(r["dice_mean"]) for r in seg if r["method"] == "Fixed" and _close(r["phi"], p0))
        assert own["T-Fixed"] == pytest.approx(fx, abs=1e-6)


def test_registration_table(smoke):
    out, res = smoke
    rows = _csv(out / "registration.csv")
    assert list(rows[0]) == scale_space.REG_COLUMNS
    cfg = res["config"]
    grid = sorted(set(cfg["reg_phis"]) | set(cfg["reg_fixed_phis"]))
    assert sorted(float(r["phi"]) for r in rows if r["method"] == "SSHN") == pytest.approx(grid)
    assert sorted(float(r["phi"]) for r in rows if r["method"] == "Fixed") == pytest.approx(sorted(cfg["reg_fixed_phis"]))
    assert sum(r["method"] == "Identity" for r in rows) == 1
    for r in rows:
        assert 0 <= float(r["dice_mean"]) <= 1 and math.isfinite(float(r["gflops"]))
    # a barely trained registration net (near-zero flow at init) stays close to the identity
    ident = next(float(r["dice_mean"]) for r in rows if r["method"] == "Identity")
    assert all(abs(float(r["dice_mean"]) - ident) < 0.2 for r in rows)


def test_report_and_summary(smoke):
    out, res = smoke
    rep = read_report(out / "summary.json")
    assert rep["name"] == "scale_space" and "002" in rep["papers"]
    assert rep["command"].startswith("python scripts/experiments/scale_space.py") and "--smoke" in rep["command"]
    assert "SMOKE" in rep["paragraph"] and "10x" in rep["paragraph"] and "90.7" in rep["paragraph"]
    assert len(rep["tables"]) >= 5 and len(rep["figures"]) == len(FIGURES)
    for p in rep["tables"] + rep["figures"]:
        assert Path(p).is_file(), p
    nums = rep["numbers"]
    for m in METHODS:
        assert 0 <= nums["best_dice"][m] <= 1
    for k in ("train_time_ratio", "gflops_ratio_0.4", "gflops_ratio_0.3", "sshn_minus_fixed_mean"):
        assert math.isfinite(nums[k])
    assert 0 < nums["gflops_ratio_0.3"] < nums["gflops_ratio_0.4"] < 1
    md = (out / "methods.md").read_text()
    assert md.count("\n| SSHN |") == 1 and "Scale:" in md


def test_deterministic(script, tmp_path):
    """Same seed, same numbers (training times aside)."""
    n = torch.get_num_threads()
    try:
        script.main(["--smoke", "--out", str(tmp_path / "a"), "--device", "cpu", "--steps", "2",
                         "--prior-r", "0", "--reg-steps", "1"])
        script.main(["--smoke", "--out", str(tmp_path / "b"), "--device", "cpu", "--steps", "2",
                         "--prior-r", "0", "--reg-steps", "1"])
    finally:
        torch.set_num_threads(n)
    ra, rb = _csv(tmp_path / "a" / "segmentation.csv"), _csv(tmp_path / "b" / "segmentation.csv")
    assert ra == rb
    assert _csv(tmp_path / "a" / "transfer.csv") == _csv(tmp_path / "b" / "transfer.csv")


def test_msd_loader(tmp_path):
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(0)
    items = []
    for i in range(3):
        img = rng.random((12, 10, 4)).astype(np.float32)
        lab = np.zeros((12, 10, 4), np.uint8)
        lab[3:6, 2:5, 1 + i % 3] = 5  # label values need not be contiguous
        lab[7:9, 2:4, 1 + i % 3] = 2
        nib.save(nib.Nifti1Image(img, np.eye(4)), str(tmp_path / f"img{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(tmp_path / f"lab{i}.nii.gz"))
        items.append({"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz"})
    (tmp_path / "dataset.json").write_text(json.dumps({"training": items[:2], "validation": items[2:]}))
    d = scale_space.load_dataset(str(tmp_path), (16, 20))
    assert d["x_train"].shape == (2, 1, 16, 20) and d["x_test"].shape == (1, 1, 16, 20)
    assert d["num_classes"] == 3 and d["labels"] == [0.0, 2.0, 5.0]
    assert set(torch.unique(d["y_train"]).tolist()) == {0, 1, 2}  # remapped, the most-foreground slice taken
    assert 0 <= float(d["x_train"].min()) and float(d["x_train"].max()) <= 1
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        scale_space.load_dataset(str(tmp_path / "nope"), (16, 20))
