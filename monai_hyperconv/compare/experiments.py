"""Shared plumbing of the comparison-based experiment scripts (``scripts/experiments/*.py``).

Each such script is a named grid of algorithms run by :func:`~monai_hyperconv.compare.run_comparison`
with the :class:`~monai_hyperconv.compare.ComparisonSettings` of :func:`grid_settings`: a demo-scale
default, a ``--smoke`` scale (a tiny generated data set, one or two iterations; seconds) and
``--data`` for real data; it then writes its own tables/figures and the
``summary.json`` report entry (:func:`~monai_hyperconv.compare.experiment_report`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .report import fmt_pm
from .settings import ComparisonError, ComparisonSettings, parse_assignments, settings_from_call

__all__ = ["add_common_args", "grid_settings", "by_algorithm", "run_seeds", "across_seeds", "pm", "command_line",
           "paper_table", "noise_curves", "write_summary", "paired_statistics", "paired_text", "wilcoxon_text", "noise_paired",
           "direction_verdict"]


def add_common_args(p: argparse.ArgumentParser, default_out: str, epochs: int, folds: int) -> None:
    """``--data --out --smoke --epochs --folds --workers --devices --seed --seeds --keep-failed --set``."""
    p.add_argument("--data", default=None, help="folder with dataset.json (default: the demo data, generated)")
    p.add_argument("--out", default=default_out, help=f"output folder (default {default_out}); reuse it to resume")
    p.add_argument("--smoke", action="store_true", help="tiny data, 1-2 iterations: a pipeline check in seconds")
    p.add_argument("--epochs", type=int, default=epochs, help=f"training epochs per cell (default {epochs})")
    p.add_argument("--folds", type=int, default=folds, help=f"cross-validation folds (default {folds})")
    p.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)), help="cells in parallel")
    p.add_argument("--devices", nargs="*", default=None, help="e.g. cuda:0 cuda:1 (default: all GPUs, else cpu)")
    p.add_argument("--seed", type=int, default=0, help="base seed (its cells keep the single-seed folders)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="seeds per algorithm x fold (default 0 1 2; the statistics treat them as repeated measures)")
    p.add_argument("--keep-failed", action="store_true", help="do not re-run cells recorded as failed")
    p.add_argument("--set", nargs="*", default=[], metavar="ID=VALUE",
                   help="extra bundle config overrides for every cell (e.g. image_size=128)")


def grid_settings(args: argparse.Namespace, task_demo: str, demo_overrides: Mapping[str, Any],
                  smoke_overrides: Mapping[str, Any], smoke_size: Sequence[int] | None = None,
                  smoke_subjects: int = 4) -> ComparisonSettings:
    """The :class:`ComparisonSettings` of ``run_comparison`` at the requested scale (demo, smoke or
    ``--data``); a script sets its own ``noise``, ``bundle``, ... with ``settings.replace(...)``."""
    out = Path(args.out)
    try:
        user = parse_assignments(args.set, "--set")
    except ComparisonError as e:
        raise SystemExit(str(e)) from None
    seeds = tuple(getattr(args, "seeds", None) or (args.seed,))
    common = dict(output_dir=out / "comparison", seed=args.seed if args.seed in seeds else seeds[0],
                  devices=args.devices, retry_failed=not args.keep_failed)
    if not args.smoke:
        return ComparisonSettings(**common, seeds=seeds, workers=args.workers, folds=args.folds, data=args.data,
                                  epochs=args.epochs, overrides={**demo_overrides, **user})
    from ..bundle.testing import make_tiny_demo

    data_dir = out / "smoke_data"
    data = str(data_dir) if (data_dir / "dataset.json").is_file() else make_tiny_demo(
        task_demo, data_dir, n_subjects=smoke_subjects, size=smoke_size)
    return ComparisonSettings(**common, workers=1, folds=1, data=data, iterations=1,
                              overrides={**smoke_overrides, **user}, latency_reps=2, isolate=False)


def by_algorithm(result: Mapping[str, Any]) -> dict[str, dict]:
    """Leaderboard rows of a ``run_comparison`` result keyed by algorithm text."""
    return {a["algorithm"]: a for a in result["leaderboard"]}


def run_seeds(task: str, algorithms: Sequence[str], seeds: Sequence[int], settings: ComparisonSettings | None = None,
              **deprecated_kwargs: Any) -> dict[int, dict[str, Any]]:
    """One ``run_comparison`` with the seeds as its grid axis (``ComparisonSettings.seeds``), split by seed.

    The seed changes initialisation, sampling and augmentation, never the split. All cells go into
    ``settings.output_dir`` (resumable; one leaderboard with the case-level statistics over all seeds);
    the first seed is the base seed (its cells are the single-seed cells ``fold<k>``). Before this
    release every seed was a comparison of its own in ``<output_dir>/seed<k>``; such folders are not
    read. The keyword form of earlier releases (``run_seeds(task, algorithms, seeds, output_dir=..., ...)``)
    still works for this release and issues a :class:`DeprecationWarning`.

    Returns:
        ``{seed: {"results": the seed's cell results, "leaderboard": their aggregate (as
        ``run_comparison``'s), "paths": ..., "manifest": ...}}`` (paths and manifest of the one comparison).
    """
    from .leaderboard import aggregate
    from .runner import run_comparison

    if not seeds:
        raise ValueError("seeds: give at least one seed.")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: {list(seeds)} repeats a seed.")
    settings = settings_from_call("run_seeds", settings, (), deprecated_kwargs)
    seeds = [int(s) for s in seeds]
    res = run_comparison(task, algorithms, settings.replace(seeds=tuple(seeds), seed=seeds[0]))
    hib = res.get("manifest", {}).get("higher_is_better", True)
    out = {}
    for s in seeds:
        rows = [r for r in res.get("results", []) if r.get("seed") == s]
        out[s] = {"results": rows, "leaderboard": aggregate(rows, hib), "paths": res.get("paths"),
                  "manifest": res.get("manifest")}
    return out


def across_seeds(per_seed: Mapping[int, Mapping[str, Any]], algorithm: str,
                 fields: Sequence[str] = ("test_metric", "train_metric")) -> dict[str, Any]:
    """One algorithm's leaderboard values over seeds: each seed's fold mean, then mean and sample std
    over the seeds (std None for one seed), and the per-seed values (None where the cell failed).

    Returns:
        ``{"seeds": [...], "<field>_per_seed": [...], "<field>_mean": ..., "<field>_std": ..., "params", "receptive_field"}``.
    """
    rows = {s: by_algorithm(r).get(algorithm) for s, r in per_seed.items()}
    out: dict[str, Any] = {"seeds": list(rows)}
    for f in fields:
        vals = [None if r is None else r.get(f"{f}_mean") for r in rows.values()]
        ok = [float(v) for v in vals if v is not None]
        out[f"{f}_per_seed"] = vals
        out[f"{f}_mean"] = statistics.fmean(ok) if ok else None
        out[f"{f}_std"] = statistics.stdev(ok) if len(ok) > 1 else None
    first = next((r for r in rows.values() if r is not None), None) or {}
    out["params"] = first.get("params_mean")
    out["receptive_field"] = first.get("receptive_field")
    return out


def noise_curves(results: Sequence[Mapping[str, Any]], algorithms: Mapping[str, str],
                 noise: Mapping[str, Sequence[float]], metric: str) -> list[dict[str, Any]]:
    """The noise sweep per algorithm over its "ok" folds: one row per (algorithm, noise, level) with
    ``<metric>_mean``, ``<metric>_std`` (sample std; None for one fold) and ``folds``.

    Args:
        results: the runner's per-fold results.
        algorithms: display label -> algorithm text.
        noise: ``{noise: [levels]}`` as given to the runner.
        metric: the column prefix (e.g. "dice", "accuracy", "psnr").
    """
    rows = []
    for label, algo in algorithms.items():
        folds = [r for r in results if r["algorithm"] == algo and r["status"] == "ok"]
        for kind, levels in noise.items():
            for lv in levels:
                vals = [r["robustness"][kind][str(float(lv))] for r in folds if kind in r.get("robustness", {})]
                rows.append({"method": label, "algorithm": algo, "noise": kind, "level": lv,
                             f"{metric}_mean": statistics.fmean(vals) if vals else None,
                             f"{metric}_std": statistics.stdev(vals) if len(vals) > 1 else None, "folds": len(vals)})
    return rows


def write_summary(name: str, out: Path, args: argparse.Namespace, report: Mapping[str, Any], **extra: Any) -> str:
    """``out/summary.json`` with the run's arguments under "config" and the report entry; says where results went."""
    from ..bundle.results import write_json

    path = write_json({"config": dict(vars(args)), "report": dict(report), **extra}, Path(out) / "summary.json")
    print(f"{name}: results in {out}")
    return path


def pm(row: Mapping[str, Any] | None, field: str, digits: int = 3) -> str:
    if row is None:
        return "n/a"
    return fmt_pm(row.get(f"{field}_mean"), row.get(f"{field}_std"), digits)


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command as a user types it (for the report)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", script] + [shlex.quote(a) for a in args])


def paper_table(rows: Sequence[tuple[str, str, Mapping[str, Any]]], metric: str = "Dice",
                paper_cols: Sequence[str] = ("train", "test"),
                extra: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """Markdown: paper's numbers next to ours. ``rows``: (label, algorithm, paper dict) with the
    leaderboard row under ``"ours"`` in the paper dict; ``extra``: more columns, ``{heading: {algorithm: text}}``
    (missing: "n/a")."""
    extra = dict(extra or {})
    heads = ["method"] + [f"paper {c} {metric}" for c in paper_cols] + ["paper params (M)",
             f"ours train {metric}", f"ours test {metric}", "ours params", "ours receptive field"] + list(extra)
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for label, algo, paper in rows:
        ours = paper.get("ours")
        params = ours.get("params_mean") if ours else None
        lines.append("| " + " | ".join(
            [label] + [str(paper.get(c, "n/a")) for c in paper_cols] + [str(paper.get("params", "n/a")),
             pm(ours, "train_metric"), pm(ours, "test_metric"),
             "n/a" if params is None else (f"{params / 1e6:.3f}M" if params >= 1e5 else f"{int(params):,}"),
             str((ours or {}).get("receptive_field") or "n/a")] + [col.get(algo, "n/a") for col in extra.values()]) + " |")
    return "\n".join(lines) + "\n"


def paired_statistics(results: Sequence[Mapping[str, Any]], reference: str,
                      higher_is_better: bool = True) -> dict[str, dict[str, Any]]:
    """Per algorithm: its case-level mean with 95 % CI and, against ``reference``, the paired
    difference with its CI and the Holm-adjusted Wilcoxon p (:func:`~monai_hyperconv.compare.comparison_statistics`;
    seeds averaged per case first). ``{}`` when no cell recorded per-case values."""
    from .stats import comparison_statistics

    return comparison_statistics(results, reference=reference, higher_is_better=higher_is_better)["algorithms"]


def paired_text(row: Mapping[str, Any] | None, higher_is_better: bool = True) -> str:
    """``"+0.031 [0.012, 0.050], p = 0.004 ▲ (n = 16 cases)"`` for a :func:`paired_statistics` row."""
    from .stats import format_difference

    if not row or row.get("diff_mean") is None:
        return "n/a"
    return f"{format_difference(row, higher_is_better)} (n = {row['n_cases']} cases)"


def wilcoxon_text(row: Mapping[str, Any] | None, digits: int = 3, show_n: bool = False) -> str:
    """``"+0.031 [+0.012, +0.050], p = 0.004"`` for a :func:`noise_paired` row (unadjusted Wilcoxon p;
    ``show_n``: `` (n = 16)``); "n/a" without a comparison."""
    from .stats import _fmt_p

    if not row or row.get("diff_mean") is None:
        return "n/a"
    p = row.get("p_wilcoxon")
    return (f"{row['diff_mean']:+.{digits}f} [{row['diff_ci_low']:+.{digits}f}, {row['diff_ci_high']:+.{digits}f}], "
            + ("p = n/a" if p is None else _fmt_p(p)) + (f" (n = {row['n_cases']})" if show_n else ""))


def direction_verdict(row: Mapping[str, Any] | None, paper_sign: float, alpha: float = 0.05) -> str:
    """Whether a paired difference reproduces a paper's direction (``paper_sign`` > 0: the paper found
    the algorithm better than the reference): "holds", "reversed" (significant, the other way) or
    "not significant" at Holm-adjusted ``p < alpha``; "n/a" without a comparison."""
    if not row or row.get("diff_mean") is None or row.get("p_holm") is None:
        return "n/a"
    if row["p_holm"] >= alpha:
        return "not significant"
    return "holds" if (row["diff_mean"] > 0) == (paper_sign > 0) else "reversed"


def noise_paired(results: Sequence[Mapping[str, Any]], reference: str, algorithm: str,
                 noise: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Paired statistics of ``algorithm - reference`` at every noise level, and of the change of that
    gap from the clean level (the first) to the strongest (the last).

    Uses the cells' ``robustness_per_case`` (per-case values under noise, seeds averaged per case).
    Where no cell kept per-case values (e.g. classification accuracy), the unit is the cell instead:
    the two algorithms' cells of the same fold and seed are paired (``"unit": "cells"``).

    Returns:
        ``{"unit": "cases" | "cells", "levels": [{"noise", "level", "n_cases", "diff_mean", "diff_ci_low",
        "diff_ci_high", "p_wilcoxon"}],
        "growth": {noise: {"n_cases", "diff_mean", "diff_ci_low", "diff_ci_high", "p_wilcoxon"}}}`` (growth: the
        strongest level's gap minus the clean gap, per case; > 0: the gap grows with the noise),
        "growth_mean": {noise: ...} (the same with the mean gap over all noisy levels, which also counts
        levels where both algorithms have failed less than at the strongest)}``. p values are not adjusted
        across levels.
    """
    from .stats import case_means, case_rows, mean_ci, wilcoxon_p

    mine = [r for r in results if r.get("algorithm") in (reference, algorithm) and r.get("status") == "ok"]
    by_case = any(v for r in mine for levels in (r.get("robustness_per_case") or {}).values()
                  for v in (levels or {}).values())

    def gaps(kind: str, level: float) -> dict:
        if by_case:
            at = [{**r, "test_per_case": ((r.get("robustness_per_case") or {}).get(kind) or {}).get(str(float(level)))}
                  for r in mine]
        else:  # one value per cell; the case id names the seed, so only cells of the same fold and seed pair up
            at = [{**r, "test_per_case": [((r.get("robustness") or {}).get(kind) or {}).get(str(float(level)))],
                   "test_case_ids": [f"seed{r.get('seed')}"]} for r in mine]
            at = [r for r in at if r["test_per_case"][0] is not None]
        m = case_means(case_rows(at))
        a, ref = m.get(algorithm, {}), m.get(reference, {})
        return {k: a[k] - ref[k] for k in a if k in ref}

    def summary(d: Mapping) -> dict[str, Any]:
        keys = list(d)
        if not keys:
            return {"n_cases": 0, "diff_mean": None, "diff_ci_low": None, "diff_ci_high": None, "p_wilcoxon": None}
        vals = [d[k] for k in keys]
        mean, lo, hi = mean_ci(vals, [k[0] for k in keys])
        p = wilcoxon_p(vals)
        return {"n_cases": len(keys), "diff_mean": mean, "diff_ci_low": lo, "diff_ci_high": hi,
                "p_wilcoxon": None if p != p else p}

    out: dict[str, Any] = {"unit": "cases" if by_case else "cells", "levels": [], "growth": {}, "growth_mean": {}}
    for kind, levels in noise.items():
        per = [gaps(kind, lv) for lv in levels]
        for lv, d in zip(levels, per):
            out["levels"].append({"noise": kind, "level": lv, **summary(d)})
        if len(per) > 1:
            first, last = per[0], per[-1]
            out["growth"][kind] = summary({k: last[k] - first[k] for k in last if k in first})
            common = [k for k in first if all(k in d for d in per[1:])]
            out["growth_mean"][kind] = summary({k: sum(d[k] for d in per[1:]) / (len(per) - 1) - first[k]
                                                for k in common})
    return out
