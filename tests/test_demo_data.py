"""Demo data sets: determinism, MSD layout, label values, HU range, shapes, atomic writes."""

import json
import os

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from monai_hyperconv.data import DEMO_TASKS, DatasetExistsError, ensure_demo, make_demo
from monai_hyperconv.data import demo as demo_mod
from monai_hyperconv.data.__main__ import main as cli

TINY = {
    "liver": dict(n_subjects=2, size=(40, 40, 10)),
    "ms": dict(n_subjects=2, size=(32, 36, 32)),
    "brain_recon": dict(n_subjects=2, size=(64, 64)),
    "brain_seg": dict(n_subjects=3, size=(40, 48)),
    "trimap": dict(n_subjects=4, size=(32, 32)),
    "digits": dict(n_subjects=30),
}


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return {t: make_demo(t, root / t, seed=0, **TINY[t]) for t in DEMO_TASKS}


def _load(p):
    img = nib.load(p)
    return np.asarray(img.dataobj), img.affine


def test_layout_loads_with_monai(demos):
    for task, js in demos.items():
        info = json.loads(open(js).read())
        assert "REAL" in info["description"] or "SIMULATED" in info["description"]
        seg = task != "digits"
        tr = load_decathlon_datalist(js, is_segmentation=seg, data_list_key="training")
        va = load_decathlon_datalist(js, is_segmentation=seg, data_list_key="validation")
        assert len(tr) == info["numTraining"] >= 1 and len(va) == info["numValidation"] >= 1
        for it in tr + va:
            files = it["image"] if isinstance(it["image"], list) else [it["image"]]
            assert all(os.path.isfile(f) for f in files)
        assert not [p for p in os.listdir(os.path.dirname(os.path.dirname(js))) if ".tmp-" in p]


def test_liver_ct_hu_labels(demos):
    tr = load_decathlon_datalist(demos["liver"], data_list_key="training")
    img, aff = _load(tr[0]["image"])
    lab, laff = _load(tr[0]["label"])
    assert img.dtype == np.int16 and img.shape == (40, 40, 10) and np.allclose(aff, laff)
    assert np.allclose(np.abs(np.diag(aff)[:3]), [2.8 * 128 / 40, 2.8 * 128 / 40, 5.0 * 32 / 10])
    assert -1024 <= img.min() <= -900 and img.max() > 300  # air and bone present, HU range
    assert set(np.unique(lab)) == {0, 1, 2}
    assert 30 < np.median(img[lab == 1]) < 90  # liver parenchyma HU
    assert abs(np.median(img[lab == 2]) - np.median(img[lab == 1])) > 10  # lesion contrast


def test_ms_contrasts_and_raters(demos):
    tr = load_decathlon_datalist(demos["ms"], data_list_key="training")
    it = tr[0]
    assert len(it["image"]) == 4 and len(it["label"]) == 2
    imgs = [_load(p) for p in it["image"]]
    r1, a1 = _load(it["label"][0])
    r2, _ = _load(it["label"][1])
    assert all(i.shape == (32, 36, 32) and np.allclose(a, a1) for i, a in imgs)
    assert set(np.unique(r1)) <= {0, 1} and r1.sum() > 0 and r2.sum() > 0
    dice = 2 * (r1 & r2).sum() / (r1.sum() + r2.sum())
    assert 0.3 < dice < 0.97  # raters agree on lesions, disagree at borders
    flair = imgs[0][0].astype(float)
    both = (r1 & r2) > 0
    brain = flair > 0
    assert flair[both].mean() > 1.2 * flair[brain & ~(r1 | r2).astype(bool)].mean()  # lesions bright on FLAIR


def test_ms_lesions_small_and_overlapping_normal_tissue(tmp_path):
    """At the default grid (~2 mm) the lesions range from a few voxels to large ones, and many are no brighter
    on FLAIR than the brightest normal tissue, so a FLAIR threshold cannot solve the demo."""
    from scipy import ndimage as ndi

    js = make_demo("ms", tmp_path / "ms", seed=0, n_subjects=2)
    items = load_decathlon_datalist(js, data_list_key="training") + load_decathlon_datalist(js, data_list_key="validation")
    sizes, below = [], []
    for it in items:
        lab = np.logical_and.reduce([_load(p)[0] > 0 for p in it["label"]])
        cc, n = ndi.label(lab)
        sizes += np.bincount(cc.ravel())[1:].tolist()
        flair = _load(it["image"][0])[0].astype(float)
        normal = (flair > 0) & ~lab
        below.append(float(np.mean(flair[lab] < np.percentile(flair[normal], 99.5))))
    assert min(sizes) < 30 and max(sizes) > 100, sizes  # a few voxels up to hundreds
    assert sum(s <= 5 for s in sizes) >= 1, sizes
    assert np.mean(below) > 0.2, below  # lesion voxels inside the normal tissue's bright tail


def test_brain_recon_and_seg(demos):
    info = json.load(open(demos["brain_recon"]))
    subj_tr = {i["subject"] for i in info["training"]}
    assert subj_tr.isdisjoint({i["subject"] for i in info["validation"]})
    img, aff = _load(load_decathlon_datalist(demos["brain_recon"])[0]["image"])
    assert img.shape == (64, 64) and img.min() >= 0 and np.isclose(img.max(), 1, atol=1e-3)
    seg = load_decathlon_datalist(demos["brain_seg"])
    lab, _ = _load(seg[0]["label"])
    assert lab.shape == (40, 48) and set(np.unique(lab)) <= set(range(7)) and len(np.unique(lab)) >= 5
    pairs = load_decathlon_datalist(demos["brain_seg"], data_list_key="registration")
    assert len(pairs[0]["image"]) == 2 and all(os.path.isfile(p) for p in pairs[0]["label"])


def test_trimap_and_digits(demos):
    it = load_decathlon_datalist(demos["trimap"])[0]
    lab, _ = _load(it["label"])
    assert set(np.unique(lab)) == {0, 1, 2}
    # the border separates object from background: no object pixel touches background
    obj = lab == 1
    grown = np.zeros_like(obj)
    grown[1:] |= obj[:-1]
    grown[:-1] |= obj[1:]
    grown[:, 1:] |= obj[:, :-1]
    grown[:, :-1] |= obj[:, 1:]
    assert not (grown & (lab == 0)).any()
    dg = load_decathlon_datalist(demos["digits"], is_segmentation=False)
    assert all(isinstance(d["label"], int) and 0 <= d["label"] <= 9 for d in dg)
    img, _ = _load(dg[0]["image"])
    assert img.shape == (28, 28) and 0 <= img.min() and img.max() <= 1 and img.max() > 0.5


def test_deterministic_per_seed(tmp_path):
    a = make_demo("liver", tmp_path / "a", seed=3, n_subjects=1, size=(24, 24, 6))
    b = make_demo("liver", tmp_path / "b", seed=3, n_subjects=1, size=(24, 24, 6))
    c = make_demo("liver", tmp_path / "c", seed=4, n_subjects=1, size=(24, 24, 6))
    va, vb, vc = (_load(os.path.join(os.path.dirname(p), "imagesTr", "liver_000.nii.gz"))[0] for p in (a, b, c))
    assert np.array_equal(va, vb) and not np.array_equal(va, vc)
    a, b, c = (make_demo("ms", tmp_path / f"ms_{k}", seed=sd, n_subjects=1, size=(24, 28, 24)) for k, sd in enumerate((3, 3, 4)))
    for f in ("ms_000_flair.nii.gz", "ms_000_rater1.nii.gz"):
        sub = "labelsTr" if "rater" in f else "imagesTr"
        va, vb, vc = (_load(os.path.join(os.path.dirname(p), sub, f))[0] for p in (a, b, c))
        assert np.array_equal(va, vb) and not np.array_equal(va, vc), f


def test_atomic_never_overwrites(tmp_path, monkeypatch):
    out = tmp_path / "set"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(DatasetExistsError):
        make_demo("trimap", out, n_subjects=1, size=(16, 16))
    assert os.listdir(out) == ["mine.txt"]
    make_demo("trimap", out, n_subjects=2, size=(16, 16), overwrite=True)
    assert not (out / "mine.txt").exists() and (out / "dataset.json").is_file()

    def boom(*a, **k):
        raise RuntimeError("generator failed")

    monkeypatch.setitem(demo_mod._BUILDERS, "digits", boom)
    with pytest.raises(RuntimeError):
        make_demo("digits", tmp_path / "fail")
    assert sorted(os.listdir(tmp_path)) == ["set"]  # no partial output, no temp folder
    with pytest.raises(ValueError):
        make_demo("nope", tmp_path / "x")


def test_ensure_demo_and_cli(tmp_path):
    out = tmp_path / "t"
    js = ensure_demo("trimap", out, n_subjects=2, size=(16, 16))
    mtime = os.path.getmtime(js)
    assert ensure_demo("trimap", out) == js and os.path.getmtime(js) == mtime
    assert cli(["make-demo", "digits", "--out", str(tmp_path / "d"), "--n-subjects", "3"]) == 0
    assert json.load(open(tmp_path / "d" / "dataset.json"))["numTraining"] == 2
    assert cli(["make-demo", "digits", "--out", str(tmp_path / "d"), "--n-subjects", "3"]) == 2  # exists


@pytest.mark.parametrize("task", ["brain_seg", "brain_recon"])
def test_2d_slices_round_trip_through_monai_save(demos, tmp_path, task):
    """2-D slices need an affine whose in-plane block MONAI can invert, or SaveImage fails."""
    from monai.transforms import LoadImage, SaveImage

    root = os.path.dirname(demos[task])
    item = json.load(open(demos[task]))["training"][0]
    img = LoadImage(image_only=True)(os.path.join(root, item["image"]))
    assert np.linalg.det(np.asarray(img.affine)[:2, :2]) != 0
    SaveImage(output_dir=str(tmp_path), output_postfix="rt", separate_folder=False)(img[None])
    (out,) = list(tmp_path.glob("*_rt.nii.gz"))
    back = nib.load(str(out))
    np.testing.assert_allclose(np.asarray(back.dataobj).squeeze(), np.asarray(img), atol=1e-5)
    # spacing survives
    np.testing.assert_allclose(back.header.get_zooms()[:2], nib.load(os.path.join(root, item["image"])).header.get_zooms()[:2], rtol=1e-5)
