"""scripts/experiments/kernel_smoothness.py --smoke: outputs exist, tables are right, numbers finite.

The command line is the script's (``load_script``); the logic is ``monai_hyperconv.experiments.kernel_smoothness``.
"""

import csv
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from monai_hyperconv.bundle.testing import load_script
from monai_hyperconv.experiments import kernel_smoothness

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "experiments" / "kernel_smoothness.py"
MODELS = ["unet5", "hyper_unet_nl8", "hyper_unet_nl24", "unet5_fit_nl8", "unet5_fit_nl24"]


def _load():
    return load_script(SCRIPT, "kernel_smoothness_script")


@pytest.fixture(scope="module")
def script():
    return _load()


@pytest.fixture(scope="module")
def smoke(script, tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("kernel_smoothness")
    try:
        res = script.main(["--smoke", "--out", str(out)])
    finally:
        torch.set_num_threads(n)
    return out, res


def test_outputs_exist(smoke):
    out, res = smoke
    names = {p.name for p in out.iterdir()}
    assert {"smoothness.csv", "smoothness.md", "summary.json"} <= names
    assert {f"kernels_{m}.png" for m in MODELS} <= names
    assert not [n for n in names if n.startswith(".tmp")]  # atomic writes leave nothing behind
    for m in MODELS:
        head = (out / f"kernels_{m}.png").read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        w, h = struct.unpack(">II", head[16:24])
        assert w > 100 and h > 100


def test_table_rows_columns_and_numbers(smoke):
    out, res = smoke
    with open(out / "smoothness.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == kernel_smoothness.CSV_COLUMNS
    assert [m for m in MODELS if any(r["model"] == m for r in rows)] == MODELS
    for r in rows:
        for k in ("laplacian", "laplacian_rel", "mean_abs_weight"):
            assert math.isfinite(float(r[k])) and float(r[k]) >= 0, (r["model"], r["layer"], k)
    by = {m: [r for r in rows if r["model"] == m] for m in MODELS}
    # smoke nets: 2 poolings -> 2 encoder blocks + bottleneck + 2 decoder blocks (2 convs each) + 2 up convs
    assert len(by["unet5"]) == 12 and len(by["hyper_unet_nl8"]) == 13  # + the hyper-UNet's stem
    assert sum(r["kernel_size"] == "3x3" for r in by["unet5"]) == 2  # UNet 5x5 keeps 3x3 up-sampling convs
    # fitting: every UNet conv converted, same layers, a finite relative error per layer
    for m in ("unet5_fit_nl8", "unet5_fit_nl24"):
        assert [r["layer"] for r in by[m]] == [r["layer"] for r in by["unet5"]]
        errs = [float(r["fit_rel_error"]) for r in by[m]]
        assert all(math.isfinite(e) and 0 <= e <= 1.0 for e in errs)
    # the summary equals the mean of the 5x5 rows (recomputed from the CSV)
    summary = {s["model"]: s for s in json.loads((out / "summary.json").read_text())["summary"]}
    for m in MODELS:
        sel = [float(r["laplacian"]) for r in by[m] if r["kernel_size"] == "5x5"]
        assert summary[m]["laplacian"] == pytest.approx(np.mean(sel), rel=1e-6)
        assert 0 <= summary[m]["val_dice"] <= 1
    md = (out / "smoothness.md").read_text()
    assert md.count("\n| UNet 5x5 | trained |") == 1 and "N_L=24" in md


def test_hyper_kernels_smoother_than_unet(smoke):
    """Holds robustly even in smoke mode: hyper kernels are smooth functions of the coordinates from
    the start, plain kernels start as white noise (raw and scale-free values)."""
    _, res = smoke
    s = {r["model"]: r for r in res["summary"]}
    for m in ("hyper_unet_nl8", "hyper_unet_nl24"):
        assert s[m]["laplacian_rel"] < 0.5 * s["unet5"]["laplacian_rel"]
        assert s[m]["laplacian"] < s["unet5"]["laplacian"]
    # exact N_L=24 fits are not asserted: the smoke fit runs only a few steps


def test_msd_loader(tmp_path):
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(0)
    items = []
    for i in range(2):
        img = rng.random((12, 10, 4)).astype(np.float32)
        lab = np.zeros((12, 10, 4), np.uint8)
        lab[3:6, 2:5, 1 + i] = 2
        nib.save(nib.Nifti1Image(img, np.eye(4)), str(tmp_path / f"img{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(tmp_path / f"lab{i}.nii.gz"))
        items.append({"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz"})
    (tmp_path / "dataset.json").write_text(json.dumps({"training": items}))
    x, y = kernel_smoothness.load_msd_slices(str(tmp_path), n=4, size=16)
    assert x.shape == (4, 1, 16, 16) and y.shape == (4, 1, 16, 16)
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
    assert float(y[0].sum()) > 0 and float(y[2].sum()) > 0  # the slice with most foreground comes first
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        kernel_smoothness.load_msd_slices(str(tmp_path / "nope"), n=2, size=16)
