"""scripts/experiments/adaptive_kernels.py --smoke: outputs exist, tables are right, numbers finite and in range.

The command line is the script's (``load_script``); the parts are ``monai_hyperconv.experiments.adaptive_kernels``.
"""

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_hyperconv.compare import read_report
from monai_hyperconv.experiments import adaptive_kernels as ak
from monai_hyperconv.layers import AdaptiveConv
from monai_hyperconv.networks import create_network
from monai_hyperconv.networks.first_layer import FirstLayerUNet
from monai_hyperconv.bundle.testing import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "experiments" / "adaptive_kernels.py"
FILTERS = ["laplace3", "sobel_x", "sobel_y", "gauss_s1", "gauss_s2", "box3", "box5", "log_s1", "sobel_x_gauss"]
METHODS = ["CONV", "ACONV"]
NETS = ["simple_cnn", "small_resnet"]
KS = [3, 5, 7, 9]
VARIANTS = ["conv3", "conv7", "aconv7"]
PNGS = ["filters_curves.png", "filters_kernels.png", "classify_accuracy.png", "trimap_dice.png"]


def _load():
    return load_script(SCRIPT, "adaptive_kernels_script")


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _finite(v):
    return math.isfinite(float(v))


@pytest.fixture(scope="module")
def script():
    return _load()


@pytest.fixture(scope="module")
def smoke(script, tmp_path_factory):
    n = torch.get_num_threads()
    out = tmp_path_factory.mktemp("adaptive_kernels")
    try:
        res = script.main(["--smoke", "--out", str(out), "--device", "cpu", "--threads", "1"])
    finally:
        torch.set_num_threads(n)
    return out, res


def test_outputs_exist(smoke):
    out, _ = smoke
    for name in ["filters.csv", "filters.md", "classify.csv", "classify_runs.csv", "classify.md", "trimap.csv",
                 "trimap_runs.csv", "trimap.md", "summary.json", *PNGS]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in PNGS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".*tmp*"))  # atomic writes left nothing behind


def test_filters_table(smoke):
    out, _ = smoke
    rows = _csv(out / "filters.csv")
    assert {(r["filter"], r["method"]) for r in rows} == {(f, m) for f in FILTERS for m in METHODS}
    assert len(rows) == len(FILTERS) * len(METHODS)
    assert list(rows[0]) == ["filter", "method", "initial_mse", "final_mse", "kernel_rel_error", "sigma", "sigma_lo",
                             "sigma_hi"]
    by = {(r["filter"], r["method"]): r for r in rows}
    for f in FILTERS:
        # the same initial kernel for both methods
        assert float(by[f, "CONV"]["initial_mse"]) == pytest.approx(float(by[f, "ACONV"]["initial_mse"]), rel=1e-4)
        for m in METHODS:
            r = by[f, m]
            assert all(_finite(r[k]) and float(r[k]) >= 0 for k in ("initial_mse", "final_mse", "kernel_rel_error"))
        # adaptive sigma within the layer's bounds [1/9, 9]
        r = by[f, "ACONV"]
        lo, hi = float(r["sigma_lo"]), float(r["sigma_hi"])
        assert lo == pytest.approx(1 / 9) and hi == pytest.approx(9)
        assert lo - 1e-6 <= float(r["sigma"]) <= hi + 1e-6
        assert by[f, "CONV"]["sigma"] == ""
    md = (out / "filters.md").read_text()
    assert "Scale:" in md and md.count("| ACONV |") == len(FILTERS) + 1  # + the mean row


def test_filters_learn():
    """Both layers fit the targets when trained a little longer than the smoke run (still seconds)."""
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        args = argparse.Namespace(filter_size=32, filter_iters=150, filter_lr=0.1, clip=1.0, seed=0)
        res = ak.run_filters(args, torch.device("cpu"), d)
    for m in ("conv", "adaptive"):
        init = np.mean([r["initial_mse"] for r in res["rows"] if r["method"] == ak.CONVS[m]])
        assert res["mean_final_mse"][m] < 0.05 * init
    assert all(1 / 9 - 1e-6 <= s <= 9 + 1e-6 for s in res["sigma_final"])


def test_target_filters():
    t = ak.target_filters()
    assert list(t) == FILTERS
    for name, k in t.items():
        assert k.shape == (9, 9)
    for name in ("gauss_s1", "gauss_s2", "box3", "box5"):
        assert t[name].sum() == pytest.approx(1.0)
    for name in ("laplace3", "sobel_x", "sobel_y", "log_s1", "sobel_x_gauss"):
        assert abs(t[name].sum()) < 1e-9  # derivative filters remove constants
    assert np.allclose(t["sobel_y"], t["sobel_x"].T)


def test_classify_table(smoke):
    out, res = smoke
    rows = _csv(out / "classify.csv")
    assert list(rows[0]) == ak.CLASSIFY_COLUMNS
    keys = [(r["net"], r["conv"], int(r["kernel_size"])) for r in rows]
    assert sorted(keys) == sorted((n, c, k) for n in NETS for c in METHODS for k in KS)
    for r in rows:
        for k in ("test_acc", "peak_acc"):
            assert 0.0 <= float(r[k]) <= 1.0
        assert float(r["peak_acc"]) >= float(r["test_acc"]) - 1e-9
        assert int(r["params"]) > 0 and float(r["gflops"]) > 0 and _finite(r["gflops"])
        if r["conv"] == "ACONV":
            k = int(r["kernel_size"])
            assert float(r["sigma_lo"]) == pytest.approx(1 / k) and float(r["sigma_hi"]) == pytest.approx(k)
            assert 1 / k - 1e-6 <= float(r["sigma_min"]) <= float(r["sigma_max"]) <= k + 1e-6
        else:
            assert r["sigma_min"] == ""
    # bigger kernels cost more; adaptive adds exactly one sigma per adaptive filter
    by = {(r["net"], r["conv"], int(r["kernel_size"])): r for r in rows}
    for n in NETS:
        for c in METHODS:
            fl = [float(by[n, c, k]["gflops"]) for k in KS]
            assert fl == sorted(fl) and fl[0] < fl[-1]
        for k in KS:
            assert float(by[n, "ACONV", k]["gflops"]) == pytest.approx(float(by[n, "CONV", k]["gflops"]), rel=1e-6)
    runs = _csv(out / "classify_runs.csv")
    assert len(runs) == len(rows) * res["classify"]["rows"][0]["n_seeds"]


def test_classify_params_recomputed(smoke):
    out, _ = smoke
    summary = json.loads((out / "summary.json").read_text())
    rows = {(r["net"], r["conv"], int(r["kernel_size"])): r for r in _csv(out / "classify.csv")}
    for net, conv, cname, k in (("simple_cnn", "adaptive", "ACONV", 7), ("small_resnet", "conv", "CONV", 5),
                                ("small_resnet", "adaptive", "ACONV", 9)):
        kw = summary["classify"]["net_kwargs"][net]
        m = create_network(net, **kw, conv=conv, kernel_size=k)
        assert int(rows[net, cname, k]["params"]) == sum(p.numel() for p in m.parameters())
        n_adaptive = sum(x.sigma.numel() for x in m.modules() if isinstance(x, AdaptiveConv))
        assert (n_adaptive > 0) == (conv == "adaptive")
    # the adaptive nets have exactly one extra parameter (sigma) per adaptive output filter
    for net in NETS:
        kw = summary["classify"]["net_kwargs"][net]
        m = create_network(net, **kw, conv="adaptive", kernel_size=3)
        extra = sum(x.sigma.numel() for x in m.modules() if isinstance(x, AdaptiveConv))
        assert int(rows[net, "ACONV", 3]["params"]) - int(rows[net, "CONV", 3]["params"]) == extra


def test_trimap_table(smoke):
    out, res = smoke
    rows = _csv(out / "trimap.csv")
    assert [r["variant"] for r in rows] == VARIANTS
    assert list(rows[0]) == ak.TRIMAP_COLUMNS
    assert [(r["first_conv"], int(r["first_kernel"])) for r in rows] == [("CONV", 3), ("CONV", 7), ("ACONV", 7)]
    for r in rows:
        for k in ("dice_background", "dice_object", "dice_border", "mean_dice", "pixel_acc"):
            assert 0.0 <= float(r[k]) <= 1.0, k
        mean = np.mean([float(r[k]) for k in ("dice_background", "dice_object", "dice_border")])
        assert float(r["mean_dice"]) == pytest.approx(mean, abs=1e-6)
        assert int(r["params"]) > 0 and float(r["gflops"]) > 0
    a = rows[2]
    assert 1 / 7 - 1e-6 <= float(a["sigma_min"]) <= float(a["sigma_max"]) <= 7 + 1e-6
    # parameter count recomputed from the built network
    summary = json.loads((out / "summary.json").read_text())
    kw = summary["trimap"]["net_kwargs"]
    net = FirstLayerUNet(**kw, first_conv="adaptive", first_kernel_size=7)
    assert int(a["params"]) == sum(p.numel() for p in net.parameters())
    # the adaptive first layer adds one sigma per first-layer filter over the plain 7x7
    assert int(a["params"]) - int(rows[1]["params"]) == kw["channels"]
    md = (out / "trimap.md").read_text()
    assert "ACONV 7x7 first layer" in md and "Scale:" in md


def test_seg_scores():
    lab = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    lab[..., :2, :] = 1
    logits = torch.nn.functional.one_hot(lab[:, 0], 3).permute(0, 3, 1, 2).float()
    d, acc = ak.seg_scores(logits, lab, 3)
    assert np.allclose(d, 1.0) and np.allclose(acc, 1.0)  # absent class 2: empty vs empty counts 1
    d, acc = ak.seg_scores(torch.zeros_like(logits), lab, 3)  # argmax -> class 0 everywhere
    assert d[0, 0] == pytest.approx(2 * 8 / (16 + 8)) and d[0, 1] == 0 and acc[0] == pytest.approx(0.5)


def test_report(smoke):
    out, res = smoke
    rep = read_report(out / "summary.json")
    assert rep["name"] == "adaptive_kernels"
    assert "004" in rep["papers"] and rep["command"].startswith("python scripts/experiments/adaptive_kernels.py")
    assert "SMOKE" in rep["scale"]
    assert len(rep["tables"]) == 3 and len(rep["figures"]) == 4
    for p in rep["tables"] + rep["figures"]:
        assert Path(p).is_file(), p
    para = rep["paragraph"]
    # quotes the paper's numbers and the measured ones
    for s in ("99.63", "86.21", "85.54", "85.89"):
        assert s in para
    assert f"{res['trimap']['rows'][2]['mean_dice']:.3f}" in para
    nums = rep["numbers"]
    assert set(nums["trimap_mean_dice"]) == set(VARIANTS)
    assert all(0 <= v <= 1 for v in nums["trimap_mean_dice"].values())


def test_parts_subset_and_determinism(tmp_path, script):
    torch.set_num_threads(1)
    a = script.main(["--smoke", "--parts", "filters", "--out", str(tmp_path / "a"), "--device", "cpu"])
    b = script.main(["--smoke", "--parts", "filters", "--out", str(tmp_path / "b"), "--device", "cpu"])
    assert not (tmp_path / "a" / "classify.csv").exists() and not (tmp_path / "a" / "trimap.csv").exists()
    assert [r["final_mse"] for r in a["filters"]["rows"]] == [r["final_mse"] for r in b["filters"]["rows"]]
    rep = read_report(tmp_path / "a" / "summary.json")
    assert len(rep["tables"]) == 1 and len(rep["figures"]) == 2
    with pytest.raises(SystemExit):
        script.parse_args(["--parts", "nope"])


def test_relative_out(tmp_path, monkeypatch, script):
    """Report paths are stored relative to the output folder also when --out is relative."""
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    script.main(["--smoke", "--parts", "filters", "--out", "rel/out", "--device", "cpu"])
    rep = json.loads((tmp_path / "rel" / "out" / "summary.json").read_text())["report"]
    assert rep["tables"] == ["filters.md"] and rep["figures"] == ["filters_curves.png", "filters_kernels.png"]
    monkeypatch.chdir(ROOT)
    assert all(Path(p).is_file() for p in read_report(tmp_path / "rel" / "out" / "summary.json")["tables"])


def test_data_kind(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "dataset.json").write_text(json.dumps({"training": [{"image": "a.nii.gz", "label": 3}]}))
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "dataset.json").write_text(json.dumps({"training": [{"image": "a.nii.gz", "label": "b.nii.gz"}]}))
    assert ak.dataset_kind(str(tmp_path / "c")) == "classify"
    assert ak.dataset_kind(str(tmp_path / "s")) == "trimap"
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        ak.dataset_kind(str(tmp_path / "nope"))
