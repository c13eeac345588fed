"""Classical lesion baselines: Dice, band-threshold fitting, demo data sets."""

import json

import numpy as np
import pytest

from monai_hyperconv.metrics.baselines import (
    _band_dice_grid, band_threshold_dice, demo_baselines, dice_score, fit_band_threshold, format_baselines,
    lesion_baselines,
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
