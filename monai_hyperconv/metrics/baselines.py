"""Classical baselines for lesion segmentation: what a network must beat to have learnt anything.

For a lesion inside an organ (liver lesions in CT, white-matter lesions in FLAIR MRI) the two
reference points a reviewer asks for are

* the *oracle organ*: the true organ mask predicted as lesion (Dice = lesion share of the organ);
* the *oracle-organ threshold*: inside the true organ (or brain) mask, voxels whose intensity
  lies outside a band ``[lo, hi]`` are lesion; ``lo``/``hi`` (either may be open, so one-sided
  thresholds are included) are chosen on the training volumes by mean per-volume Dice and then
  applied to the evaluation volumes. Optionally the image is Gaussian-smoothed first.

Both use the true organ mask, which a network does not get, so they are generous.
:func:`demo_baselines` computes them for the package's demo data sets (``liver``, ``ms``) from
a ``dataset.json``, on its own split or on a bundle's k-fold split (``fold``/``num_folds``/``seed``,
the same partition as ``monai_hyperconv.bundle.select_fold``); ``scripts/demo_baselines.py`` is its
command line. For MS the image is the FLAIR z-scored over the brain of each volume (as the bundle
normalises its input), the brain mask is the non-zero FLAIR (skull-stripped images) and the target
is the intersection of the two raters' masks (as the bundle fuses them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["dice_score", "fit_band_threshold", "band_threshold_dice", "lesion_baselines", "demo_baselines", "format_baselines",
           "baselines_csv_rows", "fold_split", "majority_atlas_dice", "identity_registration_dice"]


def dice_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two binary arrays; NaN when both are empty (excluded from means, as MONAI's
    ``DiceMetric(ignore_empty=True)``)."""
    p, r = np.asarray(pred, bool), np.asarray(ref, bool)
    s = p.sum() + r.sum()
    return float("nan") if s == 0 else float(2.0 * np.logical_and(p, r).sum() / s)


def _band_dice_grid(values: np.ndarray, target: np.ndarray, n_ref: int, los: np.ndarray, his: np.ndarray) -> np.ndarray:
    """Dice of ``(v < lo) | (v > hi)`` for every (lo, hi), from the masked voxels of one volume.

    ``n_ref`` counts the target voxels of the whole volume (also those outside the mask), so
    lesion missed by the mask counts against the rule. Valid for ``lo <= hi`` only (otherwise the
    two sides overlap and are counted twice); callers discard the other pairs.
    """
    order = np.argsort(values, kind="stable")
    v, t = values[order], target[order].astype(np.float64)
    ct = np.concatenate([[0.0], np.cumsum(t)])  # target voxels among the i smallest
    i_lo = np.searchsorted(v, los, side="left")  # voxels < lo
    i_hi = np.searchsorted(v, his, side="right")  # voxels <= hi
    n = len(v)
    tp = ct[i_lo][:, None] + (ct[n] - ct[i_hi])[None, :]
    npred = i_lo[:, None] + (n - i_hi)[None, :]
    denom = npred + n_ref
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), np.nan)
    return d


def _masked(image: np.ndarray, target: np.ndarray, mask: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray, int]:
    img = np.asarray(image, np.float32)
    if sigma > 0:
        from scipy.ndimage import gaussian_filter

        img = gaussian_filter(img, sigma)
    m = np.asarray(mask, bool)
    t = np.asarray(target, bool)
    if img.shape != t.shape or img.shape != m.shape:
        raise ValueError(f"image {img.shape}, target {t.shape} and mask {m.shape} must have one shape.")
    return img[m], t[m], int(t.sum())


def fit_band_threshold(
    images: Sequence[np.ndarray], targets: Sequence[np.ndarray], masks: Sequence[np.ndarray],
    sigma: float = 0.0, n_candidates: int = 64,
) -> dict[str, Any]:
    """Choose ``lo``/``hi`` of the rule ``mask & ((image < lo) | (image > hi))`` by mean Dice.

    Args:
        images, targets, masks: per-volume arrays of one shape each (targets/masks binary).
        sigma: Gaussian smoothing of the image in voxels before thresholding (0: none).
        n_candidates: candidate values at evenly spaced ranks of the masked intensities, and as many
            again of the target voxels' intensities (a small lesion occupies the far tail of the
            organ's histogram, where evenly spaced ranks of all voxels leave no candidate).

    Returns:
        ``{"lo", "hi", "sigma", "train_dice"}``; ``lo=-inf`` / ``hi=inf`` mean an open side.
    """
    if not images or not (len(images) == len(targets) == len(masks)):
        raise ValueError(f"need as many images, targets and masks (>= 1), got {len(images)}, {len(targets)}, {len(masks)}.")
    vols = [_masked(i, t, m, sigma) for i, t, m in zip(images, targets, masks)]
    allv = np.concatenate([v for v, _, _ in vols]).astype(np.float64)
    tv = np.concatenate([v[t] for v, t, _ in vols]).astype(np.float64)
    # thresholds halfway between consecutive candidate values (observed intensities at evenly
    # spaced ranks of all masked voxels and of the target voxels), so a rule can split two
    # neighbouring intensities exactly
    ranks = np.linspace(0.0, 1.0, n_candidates)
    q = np.quantile(allv, ranks, method="inverted_cdf")
    if tv.size:
        q = np.concatenate([q, np.quantile(tv, ranks, method="inverted_cdf")])
    q = np.unique(q)
    cuts = (q[:-1] + q[1:]) / 2.0 if len(q) > 1 else q
    los = np.concatenate([[-np.inf], cuts])
    his = np.concatenate([cuts, [np.inf]])
    grids = np.stack([_band_dice_grid(v, t, n, los, his) for v, t, n in vols])
    import warnings

    with warnings.catch_warnings():  # a (lo, hi) with no lesion and no prediction in any volume is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(grids, axis=0)
    mean = np.nan_to_num(mean, nan=-1.0)
    mean = np.where(los[:, None] < his[None, :], mean, -1.0)  # lo >= hi predicts everything: not a band
    i, j = np.unravel_index(int(np.nanargmax(mean)), mean.shape)
    return {"lo": float(los[i]), "hi": float(his[j]), "sigma": float(sigma), "train_dice": float(mean[i, j])}


def band_threshold_dice(
    images: Sequence[np.ndarray], targets: Sequence[np.ndarray], masks: Sequence[np.ndarray], rule: dict[str, Any],
) -> list[float]:
    """Per-volume Dice of a rule from :func:`fit_band_threshold` on other volumes."""
    out = []
    for img, t, m in zip(images, targets, masks):
        x = np.asarray(img, np.float32)
        if rule.get("sigma", 0) > 0:
            from scipy.ndimage import gaussian_filter

            x = gaussian_filter(x, rule["sigma"])
        pred = np.asarray(m, bool) & ((x < rule["lo"]) | (x > rule["hi"]))
        out.append(dice_score(pred, t))
    return out


def lesion_baselines(
    train: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    test: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    sigmas: Sequence[float] = (0.0, 1.0),
    n_candidates: int = 64,
) -> dict[str, Any]:
    """Baselines on ``test`` (``(image, target, mask)`` per volume), thresholds fitted on ``train``.

    Args:
        train, test: ``(image, target, mask)`` per volume.
        sigmas: Gaussian smoothing widths to fit one rule for each.
        n_candidates: thresholds tried per side (see :func:`fit_band_threshold`).

    Returns:
        ``{"oracle_organ": {...}, "threshold_sigma<s>": {...}, ...}``, each with ``per_volume``
        Dice, ``mean`` (NaN-excluding) and, for thresholds, the fitted rule.
    """
    def summary(per: list[float]) -> dict[str, Any]:
        a = np.array(per, float)
        return {"per_volume": [None if np.isnan(x) else round(float(x), 6) for x in a],
                "mean": float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")}

    res: dict[str, Any] = {"oracle_organ": summary([dice_score(m, t) for _, t, m in test])}
    for s in sigmas:
        rule = fit_band_threshold(*zip(*train), sigma=s, n_candidates=n_candidates)
        res[f"threshold_sigma{s:g}"] = {**summary(band_threshold_dice(*zip(*test), rule)), "rule": rule}
    return res


def _load(path: Path) -> np.ndarray:
    import nibabel as nib

    try:
        return np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as e:  # nibabel raises several types for unreadable files
        raise ValueError(f"{path}: cannot read as NIfTI ({e}).") from e


def _cases(task: str, root: Path, items: list[dict]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    out = []
    for it in items:
        if task == "liver":
            img, lab = _load(root / it["image"]), _load(root / it["label"])
            out.append((img.astype(np.float32), lab == 2, lab >= 1))  # lesion inside the true liver
        elif task == "ms":
            flair = _load(root / it["image"][0]).astype(np.float32)
            raters = [_load(root / p) > 0 for p in it["label"]]
            brain = flair > 0  # skull-stripped: brain = non-zero
            # z-score over the brain, as the bundle's NormalizeIntensityd(nonzero=True): one threshold
            # then means the same for every volume whatever the scanner's intensity scale
            v = flair[brain]
            if v.size:
                flair = np.where(brain, (flair - v.mean()) / max(float(v.std()), 1e-8), 0.0).astype(np.float32)
            # the bundles fuse raters by intersection (as the papers do)
            out.append((flair, np.logical_and.reduce(raters), brain))
        else:
            raise ValueError(f"task {task!r}: baselines exist for 'liver' and 'ms'.")
    return out


def fold_split(items: Sequence[Mapping[str, Any]], fold: int, num_folds: int = 5, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, eval) entries of a k-fold split: MONAI's ``partition_dataset`` as
    ``monai_hyperconv.bundle.select_fold`` (without groups) does it, so a baseline scores the very
    subjects a bundle trained with ``--fold``/``--num_folds``/``--seed`` validates on."""
    from monai.data import partition_dataset

    if not 0 <= int(fold) < int(num_folds):
        raise ValueError(f"fold must be in [0, {num_folds}), got {fold}.")
    data = [dict(d) for d in items]
    if len(data) < num_folds:
        raise ValueError(f"{len(data)} entries cannot make {num_folds} folds.")
    parts = partition_dataset(data, num_partitions=int(num_folds), shuffle=True, seed=int(seed))
    return [d for k, p in enumerate(parts) if k != int(fold) for d in p], list(parts[int(fold)])


def demo_baselines(task: str, dataset_dir: str | os.PathLike, eval_split: str = "validation",
                   sigmas: Sequence[float] = (0.0, 1.0), fold: int | None = None, num_folds: int = 5,
                   seed: int = 0) -> dict[str, Any]:
    """:func:`lesion_baselines` for a demo-layout data set: fitted on "training", scored on ``eval_split``.

    Args:
        task: "liver" (CT, lesion label 2 inside liver label >= 1) or "ms" (FLAIR = first image,
            z-scored over the brain, raters fused by intersection, brain = nonzero FLAIR).
        dataset_dir: folder with ``dataset.json``.
        eval_split: data list section to score (without ``fold``).
        sigmas: Gaussian smoothing widths (voxels) to try, each reported.
        fold, num_folds, seed: score fold ``fold`` of the bundles' k-fold re-split of "training" +
            "validation" (see :func:`fold_split`), fitting on the other folds; None: the
            ``dataset.json`` sections as they are.

    Returns:
        the :func:`lesion_baselines` dict plus ``task``, ``dataset_dir``, ``eval_split`` (``"fold k of n (seed s)"``
        with ``fold``), ``n_train``, ``n_eval`` and ``cases`` (first image file of each scored volume).
    """
    root = Path(dataset_dir)
    path = root / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no dataset.json (generate the demo first, e.g. python -m monai_hyperconv.data).")
    info = json.loads(path.read_text())
    if fold is None:
        for key in ("training", eval_split):
            if not info.get(key):
                raise ValueError(f"{path}: section {key!r} is missing or empty.")
        train, ev = info["training"], info[eval_split]
    else:
        if not info.get("training"):
            raise ValueError(f"{path}: section 'training' is missing or empty.")
        train, ev = fold_split(info["training"] + info.get("validation", []), fold, num_folds, seed)
        eval_split = f"fold {int(fold)} of {int(num_folds)} (seed {int(seed)})"
    res = lesion_baselines(_cases(task, root, train), _cases(task, root, ev), sigmas)

    def first(it: Mapping[str, Any]) -> str:
        im = it["image"]
        return Path(im[0] if isinstance(im, (list, tuple)) else im).name

    res.update(task=task, dataset_dir=str(root.resolve()), eval_split=eval_split,
               n_train=len(train), n_eval=len(ev), cases=[first(it) for it in ev])
    return res


def baselines_csv_rows(res: dict[str, Any]) -> list[list[Any]]:
    """CSV rows (header first) of a :func:`demo_baselines` result: one per baseline and volume, plus its mean."""
    rows: list[list[Any]] = [["baseline", "case", "dice"]]
    cases = res.get("cases") or []
    for key, v in res.items():
        if not isinstance(v, dict) or "mean" not in v:
            continue
        for k, x in enumerate(v["per_volume"]):
            rows.append([key, cases[k] if k < len(cases) else str(k), "" if x is None else f"{x:.6f}"])
        rows.append([key, "mean", f"{v['mean']:.6f}"])
    return rows


def _num(x: float) -> str:
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def format_baselines(res: dict[str, Any]) -> str:
    """Markdown table of a :func:`demo_baselines` / :func:`lesion_baselines` result."""
    organ = "liver" if res.get("task") == "liver" else "brain"
    quantity = "z-scored FLAIR" if res.get("task") == "ms" else "intensity"
    lines = [f"| baseline ({res.get('task', '?')}, {res.get('eval_split', 'test')}: {res.get('n_eval', '?')} volumes; "
             f"fitted on {res.get('n_train', '?')} training volumes) | mean Dice | per volume |", "|---|---:|---|"]
    for key, v in res.items():
        if not isinstance(v, dict) or "mean" not in v:
            continue
        if key == "oracle_organ":
            name = f"oracle organ: the true {organ} mask as lesion"
        else:
            r = v["rule"]
            band = " or ".join(s for s in ((f"< {_num(r['lo'])}" if np.isfinite(r["lo"]) else ""),
                                           (f"> {_num(r['hi'])}" if np.isfinite(r["hi"]) else "")) if s)
            smooth = f"Gaussian sigma {r['sigma']:g} voxel, " if r["sigma"] > 0 else ""
            name = f"oracle-organ threshold: {smooth}{quantity} {band} inside the true {organ}"
        per = ", ".join("n/a" if x is None else f"{x:.3f}" for x in v["per_volume"])
        lines.append(f"| {name} | {v['mean']:.3f} | {per} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- label-map baselines
def _load_label(path: str) -> np.ndarray:
    import nibabel as nib

    return np.asanyarray(nib.load(path).dataobj).round().astype(np.int64)


def majority_atlas_dice(train_items: Sequence[Mapping], val_items: Sequence[Mapping], label_key: str = "label") -> dict:
    """Trivial segmentation baseline: predict, at every pixel, the training set's most frequent label.

    Returns ``{"atlas_dice": mean foreground Dice over validation cases, "background_dice": Dice of an
    all-background prediction (0 unless a case has no foreground), "n": cases}`` (same Dice
    convention as :func:`monai_hyperconv.metrics.dice_per_sample`). Needs equal image sizes.
    """
    from .registration import label_dice

    train = np.stack([_load_label(it[label_key]) for it in train_items])
    n_cls = int(max(train.max(), max(_load_label(it[label_key]).max() for it in val_items))) + 1
    counts = np.stack([(train == c).sum(0) for c in range(n_cls)])
    atlas = torch.from_numpy(counts.argmax(0))[None]
    atlas_scores, bg_scores = [], []
    for it in val_items:
        y = torch.from_numpy(_load_label(it[label_key]))[None]
        if y.shape != atlas.shape:
            raise ValueError(f"majority_atlas_dice needs one image size: {it[label_key]} is {tuple(y.shape[1:])}, "
                             f"the atlas {tuple(atlas.shape[1:])}.")
        atlas_scores.append(float(label_dice(atlas, y, range(1, n_cls)).mean()))
        bg_scores.append(float(label_dice(torch.zeros_like(y), y, range(1, n_cls)).mean()))
    return {"atlas_dice": float(np.mean(atlas_scores)), "background_dice": float(np.mean(bg_scores)), "n": len(val_items)}


def identity_registration_dice(pairs: Sequence[Mapping]) -> dict:
    """Trivial registration baseline: no deformation (the moving labels compared with the fixed labels as they are).

    Returns ``{"identity_dice": mean over pairs of the mean foreground Dice, "n": pairs}``.
    """
    from .registration import label_dice

    scores = []
    for it in pairs:
        fixed = torch.from_numpy(_load_label(it["fixed_label"]))[None]
        moving = torch.from_numpy(_load_label(it["moving_label"]))[None]
        labs = [int(v) for v in torch.unique(torch.cat([fixed.flatten(), moving.flatten()])).tolist() if v != 0]
        scores.append(float(label_dice(moving, fixed, labs).mean()))
    return {"identity_dice": float(np.mean(scores)), "n": len(scores)}
