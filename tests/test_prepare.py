"""Preparation of the public data sets, each on a tiny mock of its original layout."""

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from monai_hyperconv.data import DatasetExistsError
from monai_hyperconv.data.prepare import (
    PreparationError,
    load_nifti_checked,
    prepare_brain_t1,
    prepare_isbi2015_ms,
    prepare_lits,
    prepare_oasis_neurite,
)
from monai_hyperconv.bundle.testing import load_script

ROOT = Path(__file__).resolve().parents[1]
AFF = np.diag([-0.8, -0.8, 2.0, 1.0])


def _script(name):
    return load_script(ROOT / "scripts" / f"{name}.py")


def _save(path, arr, aff=AFF):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(arr), aff), str(path))
    return path


def _lits(src, n=3):
    rng = np.random.default_rng(0)
    for i in range(n):
        ct = rng.integers(-1000, 1500, (12, 10, 4)).astype(np.float32) + 0.3
        seg = np.zeros((12, 10, 4), np.uint8)
        seg[3:8, 3:7, 1:3] = 1
        seg[4:6, 4:6, 2] = 2
        folder = src / ("Training Batch 1" if i < 2 else "Training Batch 2")
        _save(folder / f"volume-{i}.nii", ct)
        _save(folder / f"segmentation-{i}.nii", seg)
    return src


def _isbi(src, subjects=2, tps=2, test=1):
    rng = np.random.default_rng(1)
    names = {"flair", "mprage", "t2", "pd"}
    for kind, n in (("training", subjects), ("test", test)):
        for s in range(1, n + 1):
            sub = f"{kind}{s:02d}"
            base = src / ("training" if kind == "training" else "testdata_website") / sub
            for t in range(1, tps + 1):
                pre = f"{sub}_{t:02d}"
                for c in names:
                    _save(base / "preprocessed" / f"{pre}_{c}_pp.nii", rng.random((8, 9, 7)).astype(np.float32))
                if kind == "training":
                    m1 = np.zeros((8, 9, 7), np.uint8)
                    m1[2:5, 2:5, 2:4] = 1
                    m2 = m1.copy()
                    m2[5, 2:5, 2:4] = 1
                    _save(base / "masks" / f"{pre}_mask1.nii", m1)
                    _save(base / "masks" / f"{pre}_mask2.nii", m2)
    return src


def _oasis(src, n=3):
    rng = np.random.default_rng(2)
    for i in range(n):
        d = src / f"OASIS_OAS1_{i + 1:04d}_MR1"
        _save(d / "slice_norm.nii.gz", rng.random((16, 20, 1)).astype(np.float32), np.eye(4))
        _save(d / "slice_seg4.nii.gz", rng.integers(0, 5, (16, 20, 1)).astype(np.uint8), np.eye(4))
        _save(d / "slice_seg24.nii.gz", rng.integers(0, 25, (16, 20, 1)).astype(np.uint8), np.eye(4))
    return src


def test_lits(tmp_path):
    src = _lits(tmp_path / "LiTS")
    js = prepare_lits(src, tmp_path / "out")
    tr = load_decathlon_datalist(js)
    va = load_decathlon_datalist(js, data_list_key="validation")
    assert len(tr) + len(va) == 3 and len(va) == 1
    img = nib.load(tr[0]["image"])
    assert img.get_data_dtype() == np.int16 and np.allclose(img.affine, AFF)
    src_ct = np.asarray(nib.load(str(src / "Training Batch 1" / "volume-0.nii")).dataobj)
    assert np.array_equal(np.asarray(img.dataobj), np.clip(np.rint(src_ct), -1024, 3071))  # HU kept
    assert set(np.unique(np.asarray(nib.load(tr[0]["label"]).dataobj))) == {0, 1, 2}
    # never overwrite; overwrite on request
    with pytest.raises(DatasetExistsError):
        prepare_lits(src, tmp_path / "out")
    prepare_lits(src, tmp_path / "out", overwrite=True)


def test_lits_bad_inputs(tmp_path):
    src = _lits(tmp_path / "LiTS")
    seg = src / "Training Batch 1" / "segmentation-1.nii"
    _save(seg, np.zeros((12, 10, 5), np.uint8))  # shape mismatch
    with pytest.raises(PreparationError, match="segmentation-1.nii.*shape"):
        prepare_lits(src, tmp_path / "o1")
    _save(seg, np.zeros((12, 10, 4), np.uint8), np.diag([-0.8, -0.8, 2.5, 1.0]))  # affine mismatch
    with pytest.raises(PreparationError, match="segmentation-1.nii.*affine"):
        prepare_lits(src, tmp_path / "o2")
    _save(seg, np.zeros((12, 10, 4), np.uint8))
    vol = src / "Training Batch 1" / "volume-1.nii"
    bad = np.zeros((12, 10, 4), np.float32)
    bad[1, 1, 1] = np.nan
    _save(vol, bad)
    with pytest.raises(PreparationError, match="volume-1.nii.*NaN"):
        prepare_lits(src, tmp_path / "o3")
    data = vol.read_bytes()
    vol.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(PreparationError, match="volume-1.nii.*corrupt or truncated"):
        prepare_lits(src, tmp_path / "o4")
    assert sorted(os.listdir(tmp_path)) == ["LiTS"]  # nothing half-written
    (src / "Training Batch 2" / "segmentation-2.nii").unlink()
    vol.write_bytes(data)
    with pytest.raises(PreparationError, match="volume-2.nii.*segmentation"):
        prepare_lits(src, tmp_path / "o5")


def test_load_checked_gz_truncated(tmp_path):
    p = _save(tmp_path / "x.nii.gz", np.ones((20, 20, 20), np.float32))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) - 40])
    with pytest.raises(PreparationError, match="x.nii.gz"):
        load_nifti_checked(p)
    with pytest.raises(PreparationError, match="not found"):
        load_nifti_checked(tmp_path / "missing.nii.gz")


def test_isbi2015(tmp_path):
    src = _isbi(tmp_path / "isbi")
    js = prepare_isbi2015_ms(src, tmp_path / "out")
    info = json.load(open(js))
    assert info["numTraining"] == 2 and info["numValidation"] == 2 and info["numTest"] == 2
    tr = load_decathlon_datalist(js)
    va = load_decathlon_datalist(js, data_list_key="validation")
    assert {i["subject"] for i in tr}.isdisjoint({i["subject"] for i in va})  # split by subject
    it = tr[0]
    assert [Path(p).name.split("_")[-1] for p in it["image"]] == ["flair.nii.gz", "t1.nii.gz", "t2.nii.gz", "pd.nii.gz"]
    r1, r2 = (np.asarray(nib.load(p).dataobj) for p in it["label"])
    assert r1.sum() == 18 and r2.sum() == 24
    # T1 is the MPRAGE file
    src_t1 = np.asarray(nib.load(str(src / "training" / "training01" / "preprocessed" / "training01_01_mprage_pp.nii")).dataobj)
    assert np.allclose(np.asarray(nib.load(it["image"][1]).dataobj), src_t1)
    test = load_decathlon_datalist(js, data_list_key="test")
    assert len(test) == 2 and "imagesTs" in test[0]["image"][0]


def test_isbi2015_bad_inputs(tmp_path):
    src = _isbi(tmp_path / "isbi", subjects=1, tps=1, test=0)
    pre = src / "training" / "training01" / "preprocessed"
    (pre / "training01_01_pd_pp.nii").unlink()
    with pytest.raises(PreparationError, match="training01_01_pd_pp.nii.*PD"):
        prepare_isbi2015_ms(src, tmp_path / "o")
    _save(pre / "training01_01_pd_pp.nii", np.zeros((8, 9, 6), np.float32))
    with pytest.raises(PreparationError, match="pd_pp.nii.*shape"):
        prepare_isbi2015_ms(src, tmp_path / "o")
    _save(pre / "training01_01_pd_pp.nii", np.zeros((8, 9, 7), np.float32))
    (src / "training" / "training01" / "masks" / "training01_01_mask2.nii").unlink()
    with pytest.raises(PreparationError, match="mask2.nii"):
        prepare_isbi2015_ms(src, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_brain_t1(tmp_path):
    src = tmp_path / "abide"
    rng = np.random.default_rng(3)
    for s in ("sub-001", "sub-002", "sub-003"):
        vol = np.zeros((30, 40, 24), np.float32)
        vol[5:25, 5:35, 4:20] = 100 + 50 * rng.random((20, 30, 16))
        _save(src / s / "anat" / f"{s}_T1w.nii.gz", vol, np.diag([1.0, 1.0, 1.2, 1.0]))
    js = prepare_brain_t1(src, tmp_path / "out", size=(32, 32), slices_per_volume=3)
    tr = load_decathlon_datalist(js)
    va = load_decathlon_datalist(js, data_list_key="validation")
    assert len(tr) == 6 and len(va) == 3 and {i["subject"] for i in va} == {"sub-003_T1w"}
    img = nib.load(tr[0]["image"])
    d = np.asarray(img.dataobj)
    assert d.shape == (32, 32) and d.min() >= 0 and d.max() <= 1 and d.max() > 0.9
    assert np.isclose(abs(img.affine[0, 0]), 40 / 32)  # padded to 40x40 then resized: 1.25 mm
    _save(src / "sub-004" / "bad.nii.gz", np.zeros((4, 4, 4, 3), np.float32))
    with pytest.raises(PreparationError, match="bad.nii.gz.*3-D"):
        prepare_brain_t1(src, tmp_path / "out2")


def test_oasis_neurite_and_scripts(tmp_path, capsys):
    src = _oasis(tmp_path / "neurite-oasis.2d.v1.0")
    js = prepare_oasis_neurite(src, tmp_path / "out")
    tr = load_decathlon_datalist(js)
    lab = np.asarray(nib.load(tr[0]["label"]).dataobj)
    assert lab.shape == (16, 20) and lab.max() <= 4
    pairs = load_decathlon_datalist(js, data_list_key="registration")
    assert len(pairs) == len(tr) and len(pairs[0]["image"]) == 2
    js24 = prepare_oasis_neurite(src, tmp_path / "out24", labels="seg24")
    assert np.asarray(nib.load(load_decathlon_datalist(js24)[0]["label"]).dataobj).max() > 4
    (src / "OASIS_OAS1_0002_MR1" / "slice_seg4.nii.gz").unlink()
    with pytest.raises(PreparationError, match="OASIS_OAS1_0002_MR1.*slice_seg4"):
        prepare_oasis_neurite(src, tmp_path / "out3")
    # the thin scripts (run in-process: a subprocess would re-import torch and MONAI)
    script = _script("prepare_oasis_neurite")
    assert script.main(["--src", str(src), "--out", str(tmp_path / "s")]) == 2
    assert "slice_seg4" in capsys.readouterr().err
    assert script.main(["--src", str(src), "--out", str(tmp_path / "s"), "--labels", "seg24"]) == 0
    assert capsys.readouterr().out.strip().endswith("dataset.json")


@pytest.mark.parametrize("name", ["prepare_lits", "prepare_isbi2015_ms", "prepare_brain_t1"])
def test_scripts_refuse_existing_output(tmp_path, capsys, name):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("x")
    src = {"prepare_lits": _lits, "prepare_isbi2015_ms": _isbi}.get(name, lambda p: _save(p / "a.nii.gz", np.ones((4, 4, 4), np.float32)).parent)(tmp_path / "src")
    assert _script(name).main(["--src", str(src), "--out", str(tmp_path / "out")]) == 2
    assert "exists" in capsys.readouterr().err and os.listdir(tmp_path / "out") == ["keep"]
