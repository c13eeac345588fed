"""Statistics a reviewer accepts: case-level bootstrap CIs, paired tests against a reference, rank robustness.

The unit of analysis is the **test case** (one image of a held-out fold), not the fold: a 5-fold
comparison of 100 cases has 100 paired observations per algorithm, not 5.

- **Seeds are repeated measures.** A case measured under several seeds (same split, other
  initialisation, sampling and augmentation) is averaged over its seeds *first*; every statistic
  below works on these per-case means, so a case counts once however many seeds ran. (The seed
  noise thus stays inside the case values; the CIs are over cases, i.e. over the data.)
- **Stratified by fold.** Bootstrap resamples draw cases with replacement *within* each test fold,
  every fold keeping its size, so each resample has the cross-validation's fold structure.
- ``mean_ci``: the mean of the case values and its percentile bootstrap CI.
- ``paired_comparison``: per algorithm, the case-wise differences ``algorithm - reference``
  (over the cases both have): mean, percentile bootstrap CI, two-sided Wilcoxon signed-rank p
  (:func:`scipy.stats.wilcoxon`), Holm-adjusted over the algorithms (:func:`holm`).
- ``rank_robustness``: the same case resample for all algorithms (the cases all have); how often
  each algorithm ranks first and its mean rank (ties share the average rank; a tie for first counts
  for each tied algorithm).

Everything is deterministic: the resamples come from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["case_rows", "case_means", "stratified_bootstrap_means", "mean_ci", "holm", "wilcoxon_p",
           "paired_comparison", "rank_robustness", "comparison_statistics", "format_difference", "N_BOOT", "LEVEL"]

#: bootstrap resamples and confidence level of every interval
N_BOOT = 10000
LEVEL = 0.95

Key = tuple  # (fold, case_id)


def case_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (algorithm, fold, seed, case) of the "ok" cells that recorded per-case values:
    ``{"algorithm", "fold", "seed", "case_id", "test_metric"}`` (cases without ids: ``case<i>``;
    non-finite values are skipped)."""
    out = []
    for r in results:
        vals = r.get("test_per_case")
        if r.get("status") != "ok" or not vals:
            continue
        ids = r.get("test_case_ids") or [f"case{i}" for i in range(len(vals))]
        for cid, v in zip(ids, vals):
            if v is None or not math.isfinite(float(v)):
                continue
            out.append({"algorithm": r["algorithm"], "fold": r.get("fold"), "seed": r.get("seed"),
                        "case_id": str(cid), "test_metric": float(v)})
    return out


def case_means(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[Key, float]]:
    """``{algorithm: {(fold, case_id): mean over the case's seeds}}`` (algorithms in first-seen order)."""
    acc: dict[str, dict[Key, list[float]]] = {}
    for r in rows:
        acc.setdefault(r["algorithm"], {}).setdefault((r["fold"], r["case_id"]), []).append(float(r["test_metric"]))
    return {a: {k: float(np.mean(v)) for k, v in cases.items()} for a, cases in acc.items()}


def _strata(keys: Sequence[Key]) -> list[np.ndarray]:
    """The positions of ``keys`` grouped by fold (the first element of each key)."""
    folds: dict[Any, list[int]] = {}
    for i, k in enumerate(keys):
        folds.setdefault(k[0], []).append(i)
    return [np.asarray(v) for v in folds.values()]


def stratified_bootstrap_means(values: np.ndarray, strata: Sequence[np.ndarray], n_boot: int = N_BOOT,
                               seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of the mean of ``values`` (shape ``(n,)`` or ``(n, k)``: k columns resampled
    with the same cases), resampling with replacement within each stratum (its size kept).

    Returns:
        shape ``(n_boot,)`` or ``(n_boot, k)``.
    """
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    total = np.zeros((n_boot,) + values.shape[1:])
    width = int(np.prod(values.shape[1:], dtype=int))
    for idx in strata:
        # in chunks of replicates (bounded memory for large test sets); the draws stay deterministic
        step = max(1, 4_000_000 // max(1, len(idx) * width))
        for start in range(0, n_boot, step):
            n = min(step, n_boot - start)
            draw = idx[rng.integers(0, len(idx), size=(n, len(idx)))]
            total[start:start + n] += values[draw].sum(axis=1)
    return total / len(values)


def _ci(reps: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1 - level) / 2
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])
    return float(lo), float(hi)


def mean_ci(values: Sequence[float], folds: Sequence[Any] | None = None, n_boot: int = N_BOOT, level: float = LEVEL,
            seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` and its percentile bootstrap CI, cases resampled within
    their ``folds`` (None: one stratum, the ordinary bootstrap)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return (math.nan, math.nan, math.nan)
    keys = [(f, i) for i, f in enumerate(folds if folds is not None else [0] * len(v))]
    reps = stratified_bootstrap_means(v, _strata(keys), n_boot, seed)
    return (float(v.mean()), *_ci(reps, level))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): the i-th smallest p times (m - i + 1),
    made monotone non-decreasing, capped at 1. NaN stays NaN (and does not count in m)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def wilcoxon_p(diffs: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p of paired differences (1.0 when all are zero; NaN for none)."""
    from scipy.stats import wilcoxon

    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return math.nan
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d).pvalue)


def paired_comparison(means: Mapping[str, Mapping[Key, float]], reference: str, n_boot: int = N_BOOT,
                      level: float = LEVEL, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Each algorithm against ``reference`` over the cases both have (differences ``algorithm - reference``).

    Returns:
        ``{algorithm: {"n_cases", "diff_mean", "diff_ci_low", "diff_ci_high", "p_wilcoxon", "p_holm"}}``
        for every algorithm but the reference (Holm over these).
    """
    if reference not in means:
        raise KeyError(f"reference {reference!r}: no per-case results (algorithms with them: {sorted(means)}).")
    ref = means[reference]
    out: dict[str, dict[str, Any]] = {}
    for alg, cases in means.items():
        if alg == reference:
            continue
        keys = [k for k in cases if k in ref]
        d = np.asarray([cases[k] - ref[k] for k in keys])
        if d.size:
            reps = stratified_bootstrap_means(d, _strata(keys), n_boot, seed)
            lo, hi = _ci(reps, level)
            row = {"n_cases": len(keys), "diff_mean": float(d.mean()), "diff_ci_low": lo, "diff_ci_high": hi,
                   "p_wilcoxon": wilcoxon_p(d)}
        else:
            row = {"n_cases": 0, "diff_mean": None, "diff_ci_low": None, "diff_ci_high": None, "p_wilcoxon": math.nan}
        out[alg] = row
    for alg, p in zip(out, holm([r["p_wilcoxon"] for r in out.values()])):
        out[alg]["p_holm"] = p
    for r in out.values():  # NaN -> None (JSON)
        for k in ("p_wilcoxon", "p_holm"):
            if r[k] is not None and math.isnan(r[k]):
                r[k] = None
    return out


def rank_robustness(means: Mapping[str, Mapping[Key, float]], higher_is_better: bool = True, n_boot: int = N_BOOT,
                    seed: int = 0) -> dict[str, dict[str, Any]]:
    """How often each algorithm ranks first, and its mean rank, when the cases all algorithms have are
    resampled (within folds; one resample for all algorithms).

    Returns:
        ``{algorithm: {"p_first", "mean_rank", "n_cases"}}`` (empty with fewer than two algorithms or no common case).
    """
    from scipy.stats import rankdata

    algs = list(means)
    if len(algs) < 2:
        return {}
    keys = [k for k in means[algs[0]] if all(k in means[a] for a in algs[1:])]
    if not keys:
        return {}
    table = np.asarray([[means[a][k] for a in algs] for k in keys])
    reps = stratified_bootstrap_means(table, _strata(keys), n_boot, seed)  # (n_boot, algorithms)
    score = reps if higher_is_better else -reps
    ranks = rankdata(-score, axis=1, method="average")
    best = score == score.max(axis=1, keepdims=True)
    return {a: {"p_first": float(best[:, j].mean()), "mean_rank": float(ranks[:, j].mean()), "n_cases": len(keys)}
            for j, a in enumerate(algs)}


def comparison_statistics(results: Sequence[Mapping[str, Any]], reference: str | None = None,
                          higher_is_better: bool = True, n_boot: int = N_BOOT, level: float = LEVEL,
                          seed: int = 0) -> dict[str, Any]:
    """All of the above from a comparison's per-cell results.

    Args:
        results: the runner's cell results (``test_per_case``/``test_case_ids``/``fold``/``seed``).
        reference: the algorithm to compare with (None: the first with per-case values).

    Returns:
        ``{"reference", "level", "n_boot", "seed", "higher_is_better", "algorithms": {algorithm: {"n_cases",
        "n_seeds", "mean", "ci_low", "ci_high", [paired fields], [rank fields]}}}``; empty ``algorithms``
        when no cell recorded per-case values.
    """
    rows = case_rows(results)
    means = case_means(rows)
    info: dict[str, Any] = {"level": level, "n_boot": n_boot, "seed": seed, "higher_is_better": higher_is_better,
                            "reference": None, "algorithms": {}}
    if not means:
        return info
    if reference is None or reference not in means:
        if reference is not None:
            info["note"] = f"reference {reference!r} has no per-case results; compared with the first algorithm"
        reference = next(iter(means))
    info["reference"] = reference
    seeds = {}
    for r in rows:
        seeds.setdefault(r["algorithm"], set()).add(r["seed"])
    paired = paired_comparison(means, reference, n_boot, level, seed)
    ranks = rank_robustness(means, higher_is_better, n_boot, seed)
    for alg, cases in means.items():
        keys = list(cases)
        m, lo, hi = mean_ci([cases[k] for k in keys], [k[0] for k in keys], n_boot, level, seed)
        info["algorithms"][alg] = {"n_cases": len(keys), "n_seeds": len(seeds[alg]), "mean": m, "ci_low": lo,
                                   "ci_high": hi, **paired.get(alg, {}), **ranks.get(alg, {})}
    return info


def format_difference(row: Mapping[str, Any], higher_is_better: bool = True, alpha: float = 0.05,
                      digits: int = 3) -> str:
    """``"+0.031 [0.012, 0.050], p = 0.004 ▲"`` (Holm-adjusted p; ▲ significantly better, ▼ worse, no
    marker otherwise); "n/a" without a comparison."""
    if row.get("diff_mean") is None:
        return "n/a"
    p = row.get("p_holm")
    text = (f"{row['diff_mean']:+.{digits}f} [{row['diff_ci_low']:.{digits}f}, {row['diff_ci_high']:.{digits}f}], "
            f"{'p = n/a' if p is None else _fmt_p(p)}")
    if p is not None and p < alpha:
        better = (row["diff_mean"] > 0) == higher_is_better
        text += " ▲" if better else " ▼"
    return text


def _fmt_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
