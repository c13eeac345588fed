"""Classical lesion baselines: Dice, band-threshold fitting, demo data sets."""

import json

import numpy as np
import pytest

from monai_hyperconv.metrics.baselines import (
    _band_dice_grid, band_threshold_dice, baselines_csv_rows, demo_baselines, dice_score, fit_band_threshold,
    format_baselines, lesion_baselines,
)


def test_dice_score_values():
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([1, 0, 1, 0], bool)
    assert dice_score(a, b) == pytest.approx(0.5)
    assert dice_score(a, a) == 1.0
    assert np.isnan(dice_score(np.zeros(3), np.zeros(3)))
    assert dice_score(np.zeros(3), np.ones(3)) == 0.0


def test_band_grid_matches_brute_force():
    rng = np.random.default_rng(0)
    v = rng.normal(size=300)
    t = rng.random(300) < 0.2
    los = np.array([-np.inf, -1.0, -0.2, 0.5])
    his = np.array([-0.5, 0.3, 1.2, np.inf])
    g = _band_dice_grid(v, t, int(t.sum()) + 7, los, his)  # 7 lesion voxels outside the mask
    for i, lo in enumerate(los):
        for j, hi in enumerate(his):
            if lo > hi:  # not a band; the fit never picks one
                continue
            pred = (v < lo) | (v > hi)
            ref = 2 * (pred & t).sum() / (pred.sum() + t.sum() + 7)
            assert g[i, j] == pytest.approx(ref)


def _vol(rng, lo_les, hi_les, shape=(12, 12, 6)):
    """Organ of intensity ~50 with hypo- (< 20) and hyper-dense (> 90) lesions; background ignored."""
    img = rng.normal(50, 3, shape).astype(np.float32)
    mask = np.zeros(shape, bool)
    mask[2:10, 2:10] = True
    les = np.zeros(shape, bool)
    les[3:5, 3:5] = True
    les[7:9, 7:9] = True
    img[3:5, 3:5] = lo_les
    img[7:9, 7:9] = hi_les
    img[~mask] = -1000 + 5 * rng.normal(size=(~mask).sum())
    return img, les, mask


def test_fit_band_threshold_recovers_two_sided_rule():
    rng = np.random.default_rng(1)
    train = [_vol(rng, 10.0, 100.0) for _ in range(3)]
    n_all = sum(int(m.sum()) for _, _, m in train)  # every masked value a candidate: the exact split exists
    rule = fit_band_threshold(*zip(*train), n_candidates=n_all)
    assert rule["train_dice"] == pytest.approx(1.0)
    assert 10.0 < rule["lo"] < 40.0 and 60.0 < rule["hi"] < 100.0
    test = [_vol(rng, 5.0, 110.0) for _ in range(2)]
    assert band_threshold_dice(*zip(*test), rule) == pytest.approx([1.0, 1.0])
    # a one-sided world gets an open side
    train1 = [_vol(rng, 10.0, 50.0) for _ in range(3)]
    for img, les, _ in train1:
        les[7:9, 7:9] = False
    assert np.isinf(fit_band_threshold(*zip(*train1))["hi"])


def test_lesion_baselines_oracle_organ_and_errors():
    rng = np.random.default_rng(2)
    cases = [_vol(rng, 10.0, 100.0) for _ in range(2)]
    res = lesion_baselines(cases, cases, sigmas=(0.0,), n_candidates=sum(int(m.sum()) for _, _, m in cases))
    les, mask = cases[0][1], cases[0][2]
    assert res["oracle_organ"]["per_volume"][0] == pytest.approx(2 * les.sum() / (les.sum() + mask.sum()), abs=1e-6)
    assert res["threshold_sigma0"]["mean"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one shape"):
        fit_band_threshold([np.zeros((3, 3))], [np.zeros((3, 4))], [np.ones((3, 3))])
    with pytest.raises(ValueError, match="as many"):
        fit_band_threshold([], [], [])


def test_demo_baselines_liver(tmp_path):
    from monai_hyperconv.data import make_demo

    make_demo("liver", tmp_path / "d", n_subjects=4, size=(40, 40, 10))
    res = demo_baselines("liver", tmp_path / "d", sigmas=(0.0,))
    assert res["n_train"] + res["n_eval"] == 4
    # a threshold fitted inside the true liver beats calling the whole liver lesion
    assert res["threshold_sigma0"]["mean"] > res["oracle_organ"]["mean"] > 0
    md = format_baselines(res)
    assert "oracle organ" in md and f"{res['oracle_organ']['mean']:.3f}" in md
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        demo_baselines("liver", tmp_path / "nothing")
    info = json.loads((tmp_path / "d" / "dataset.json").read_text())
    info["validation"] = []
    (tmp_path / "d" / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="'validation'"):
        demo_baselines("liver", tmp_path / "d")


def _write_ms_case(root, name, flair, les, extra_rater1=None):
    """One MS-layout entry: FLAIR (+ three dummy contrasts) and two raters whose intersection is ``les``."""
    import nibabel as nib

    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    aff = np.eye(4)
    imgs = []
    for con in ("flair", "t1", "t2", "pd"):
        nib.save(nib.Nifti1Image(np.asarray(flair, np.int16), aff), root / "imagesTr" / f"{name}_{con}.nii.gz")
        imgs.append(f"./imagesTr/{name}_{con}.nii.gz")
    r1 = les.copy()
    if extra_rater1 is not None:
        r1[extra_rater1] = True  # rater 1 marks one voxel more: the intersection drops it
    labs = []
    for k, r in enumerate((r1, les), 1):
        nib.save(nib.Nifti1Image(r.astype(np.uint8), aff), root / "labelsTr" / f"{name}_rater{k}.nii.gz")
        labs.append(f"./labelsTr/{name}_rater{k}.nii.gz")
    return {"image": imgs, "label": labs}


def test_demo_baselines_ms_hand_computed(tmp_path):
    """The MS FLAIR threshold on a 10-voxel example whose Dice is computed by hand.

    Both volumes hold the same intensities (so their brain z-scores agree): 0 outside the brain,
    brain 100 x4, 200 x2, 300 x2. Training: lesion = one 200 and both 300 -> the best rule is
    "above the 100s" (Dice 2*3/(4+3) = 6/7; "above the 200s" gives 2*2/(2+3) = 0.8). Validation:
    lesion = one 300 and one 100 -> that rule predicts the four voxels of 200/300, one of them
    lesion: Dice 2*1/(4+2) = 1/3. Oracle brain: 2*2/(8+2) = 0.4.
    """
    vals = np.array([0, 100, 100, 100, 100, 200, 200, 300, 300, 0]).reshape(10, 1, 1)
    les_tr = np.zeros((10, 1, 1), bool)
    les_tr[[6, 7, 8]] = True
    les_va = np.zeros((10, 1, 1), bool)
    les_va[[1, 8]] = True
    root = tmp_path / "ms"
    info = {"labels": {"0": "background", "1": "lesion"},
            "training": [_write_ms_case(root, "tr", vals, les_tr, extra_rater1=5)],
            "validation": [_write_ms_case(root, "va", vals, les_va, extra_rater1=2)]}
    (root / "dataset.json").write_text(json.dumps(info))
    res = demo_baselines("ms", root, sigmas=(0.0,))
    rule = res["threshold_sigma0"]["rule"]
    assert rule["train_dice"] == pytest.approx(6 / 7) and np.isinf(rule["lo"])
    z = (vals[1:9, 0, 0] - vals[1:9].mean()) / vals[1:9].std()  # the z-scores of 100 and 200
    assert z.min() < rule["hi"] < z[4]
    assert res["threshold_sigma0"]["per_volume"] == [pytest.approx(1 / 3, abs=1e-6)]
    assert res["oracle_organ"]["mean"] == pytest.approx(0.4)
    assert res["cases"] == ["va_flair.nii.gz"] and res["n_train"] == 1 and res["n_eval"] == 1
    rows = baselines_csv_rows(res)
    assert rows[0] == ["baseline", "case", "dice"]
    assert ["threshold_sigma0", "va_flair.nii.gz", f"{1 / 3:.6f}"] in rows and ["oracle_organ", "mean", f"{0.4:.6f}"] in rows
    assert "z-scored FLAIR >" in format_baselines(res)


def test_fold_split_is_the_bundles_split():
    from monai_hyperconv.bundle import select_fold
    from monai_hyperconv.metrics.baselines import fold_split

    items = [{"image": f"s{i}", "label": f"l{i}"} for i in range(8)]
    for k in range(5):
        assert fold_split(items, k, 5, 0) == select_fold(items, k, 5, 0)
    with pytest.raises(ValueError, match="fold"):
        fold_split(items, 5, 5)


def test_demo_baselines_fold(tmp_path):
    from monai_hyperconv.data import make_demo

    make_demo("ms", tmp_path / "d", n_subjects=5, size=(24, 28, 24))
    res = demo_baselines("ms", tmp_path / "d", sigmas=(0.0,), fold=1, num_folds=5)
    assert res["n_train"] == 4 and res["n_eval"] == 1 and res["eval_split"] == "fold 1 of 5 (seed 0)"
    assert 0.0 <= res["threshold_sigma0"]["mean"] <= 1.0
