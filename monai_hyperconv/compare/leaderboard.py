"""Leaderboard of a comparison: per-cell rows -> mean ± std per algorithm, best per column marked,
and case-level statistics (:mod:`monai_hyperconv.compare.stats`).

Files (all written atomically): ``leaderboard.md``, ``leaderboard.csv``, ``results.json`` (every
cell's raw result, every test case and the statistics), ``per_case.csv`` (algorithm, fold, seed,
case id, test metric), ``metric_vs_params.png`` (in the style of Ma et al. 2022, Figs 3-6),
``robustness.png`` (metric vs noise level per noise type), ``per_case_boxplot.png`` (the per-case
test metric per algorithm) and ``paired_differences.png`` (forest plot of the paired differences
against the reference).
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .report import fmt_pm
from .stats import case_rows, comparison_statistics, format_difference

__all__ = ["aggregate", "leaderboard_markdown", "write_outputs", "COLUMNS", "STAT_COLUMNS", "PER_CASE_COLUMNS"]

#: the case-level statistics in ``leaderboard.csv`` (see :func:`~monai_hyperconv.compare.stats.comparison_statistics`)
STAT_COLUMNS = ("n_cases", "n_seeds", "test_ci_low", "test_ci_high", "diff_mean", "diff_ci_low", "diff_ci_high",
                "p_wilcoxon", "p_holm", "p_first", "mean_rank")
PER_CASE_COLUMNS = ("algorithm", "fold", "seed", "case_id", "test_metric")

#: (field, header, better): better is "max", "min", "absmin" (closest to 0), the task metric's direction
#: ("metric") or None (not ranked)
COLUMNS = (
    ("test_metric", "test {m}", "metric"),
    ("train_metric", "train {m}", "metric"),
    ("gap", "train-test gap", "absmin"),
    ("robust_metric", "{m} under noise", "metric"),
    ("params", "params", "min"),
    ("receptive_field", "receptive field", None),
    ("gflops", "GFLOPs", "min"),
    ("train_time_s", "train time (s)", "min"),
    ("latency_ms", "latency (ms)", "min"),
    ("peak_mem_mb", "peak memory (MiB)", "min"),
)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def aggregate(rows: Sequence[Mapping[str, Any]], higher_is_better: bool = True) -> list[dict[str, Any]]:
    """One dict per algorithm (first-seen order): ``<field>_mean``/``<field>_std`` over its "ok" folds
    (std: sample standard deviation, None for one fold), ``n_ok``, ``n_failed``, ``errors`` and
    ``best`` (the fields where it is best)."""
    order: list[str] = []
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        key = r["algorithm"]
        if key not in groups:
            order.append(key)
            groups[key] = []
        groups[key].append(r)
    out = []
    for key in order:
        g = groups[key]
        ok = [r for r in g if r.get("status") == "ok"]
        agg: dict[str, Any] = {
            "algorithm": key, "source": g[0].get("source", "compare"), "n_ok": len(ok),
            "n_failed": len(g) - len(ok), "folds": sorted(r.get("fold") for r in g),
            "seeds": sorted({r.get("seed") for r in g if r.get("seed") is not None}),
        }
        many = len(agg["seeds"]) > 1
        agg["errors"] = []
        for r in g:
            if r.get("status") != "ok":
                where = f"fold {r.get('fold')}" + (f" seed {r.get('seed')}" if many else "")
                agg["errors"].append(f"{where}: {str(r.get('error')).splitlines()[0]}")
        for field, _, _ in COLUMNS:
            vals = [_num(r.get(field)) for r in ok]
            vals = [v for v in vals if v is not None]
            if field == "receptive_field":
                rfs = {str(r.get(field)) for r in ok if r.get(field) is not None}
                agg["receptive_field"] = ", ".join(sorted(rfs)) if rfs else None
                continue
            agg[f"{field}_mean"] = statistics.fmean(vals) if vals else None
            agg[f"{field}_std"] = statistics.stdev(vals) if len(vals) > 1 else None
        out.append(agg)
    for field, _, better in COLUMNS:
        if better is None:
            continue
        mode = ("max" if higher_is_better else "min") if better == "metric" else better
        key = abs if mode == "absmin" else (lambda v: v)
        vals = [key(a[f"{field}_mean"]) for a in out if a.get(f"{field}_mean") is not None]
        if not vals:
            continue
        best = max(vals) if mode == "max" else min(vals)
        for a in out:
            if a.get(f"{field}_mean") is not None and key(a[f"{field}_mean"]) == best:
                a.setdefault("best", []).append(field)
    for a in out:
        a.setdefault("best", [])
    return out


def _cell(a: Mapping[str, Any], field: str) -> str:
    if field == "receptive_field":
        return str(a.get("receptive_field") or "n/a")
    mean, std = a.get(f"{field}_mean"), a.get(f"{field}_std")
    if mean is None:
        return "n/a"
    if field == "params":
        text = f"{mean / 1e6:.3f}M" if mean >= 1e5 else f"{int(round(mean)):,}"
    elif field in ("train_time_s", "latency_ms", "peak_mem_mb"):
        text = fmt_pm(mean, std, 1)
    elif field == "gflops":
        text = fmt_pm(mean, std, 3 if mean < 10 else 1)
    else:
        text = fmt_pm(mean, std, 4 if abs(mean) < 10 else 2)
    return f"**{text}**" if field in a.get("best", []) else text


def _diff_cell(a: Mapping[str, Any], stats: Mapping[str, Any]) -> str:
    if a["algorithm"] == stats.get("reference"):
        return "reference"
    row = stats.get("algorithms", {}).get(a["algorithm"])
    return "n/a" if row is None else format_difference(row, stats.get("higher_is_better", True))


def statistics_markdown(stats: Mapping[str, Any], metric: str) -> str:
    """The case-level statistics section of the leaderboard (empty without per-case values)."""
    algs = stats.get("algorithms") or {}
    if not algs:
        return ""
    ref, pct = stats["reference"], int(round(100 * stats["level"]))
    n_cmp = max(0, len(algs) - 1)
    paired = (f"Δ vs `{ref}`: mean paired difference over the cases both have, its {pct}% bootstrap CI, two-sided "
              f"Wilcoxon signed-rank p, Holm-adjusted over the {n_cmp} comparison{'s' if n_cmp != 1 else ''}; ▲/▼ "
              f"significantly better/worse (adjusted p < 0.05). P(rank 1) and mean rank: the same case resamples "
              f"for all algorithms (the cases all have)." if n_cmp else
              "One algorithm only: no paired comparison or ranking.")
    lines = ["## Statistics over test cases", "",
             f"Unit: the test case (every case of every held-out fold); a case's seeds are averaged first (seeds "
             f"are repeated measures). Mean with {pct}% percentile bootstrap CI ({stats['n_boot']} resamples of the "
             f"cases within each fold, seed {stats['seed']}). " + paired, ""]
    if stats.get("note"):
        lines += [stats["note"] + ".", ""]
    heads = ["algorithm", "cases", "seeds", f"test {metric} [{pct}% CI]", f"Δ test {metric} vs `{ref}` [{pct}% CI], "
             "Holm p", "P(rank 1)", "mean rank"]
    lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for alg, r in algs.items():
        diff = "reference" if alg == ref else format_difference(r, stats.get("higher_is_better", True))
        rank = ("n/a", "n/a") if r.get("p_first") is None else (f"{r['p_first']:.2f}", f"{r['mean_rank']:.2f}")
        lines.append("| " + " | ".join([f"`{alg}`", str(r["n_cases"]), str(r["n_seeds"]),
                                         f"{r['mean']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]", diff, *rank])
                     + " |")
    return "\n".join(lines) + "\n"


def leaderboard_markdown(agg: Sequence[Mapping[str, Any]], metric: str, title: str = "Leaderboard",
                         note: str = "", stats: Mapping[str, Any] | None = None) -> str:
    """The leaderboard as a Markdown table (mean ± std over cells, i.e. folds x seeds; best per column in
    bold); with ``stats`` (:func:`~monai_hyperconv.compare.stats.comparison_statistics`) a last column with
    the paired difference to the reference, and the statistics section."""
    with_diff = bool(stats and stats.get("algorithms"))
    many_seeds = any(len(a.get("seeds") or ()) > 1 for a in agg)
    heads = ["algorithm", "cells ok (folds x seeds)" if many_seeds else "folds ok"] + [
        h.format(m=metric) for _, h, _ in COLUMNS]
    if with_diff:
        heads.append(f"Δ test {metric} vs `{stats['reference']}` [{int(round(100 * stats['level']))}% CI], Holm p")
    lines = [f"# {title}", ""]
    if note:
        lines += [note, ""]
    lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for a in agg:
        n = a["n_ok"] + a["n_failed"]
        cells = [f"`{a['algorithm']}`", f"{a['n_ok']}/{n}"] + [_cell(a, f) for f, _, _ in COLUMNS]
        if with_diff:
            cells.append(_diff_cell(a, stats))
        lines.append("| " + " | ".join(cells) + " |")
    errors = [(a["algorithm"], e) for a in agg for e in a["errors"]]
    if errors:
        lines += ["", "Failed cells:", ""] + [f"- `{alg}` {e}" for alg, e in errors]
    if with_diff:
        lines += ["", statistics_markdown(stats, metric).rstrip("\n")]
    return "\n".join(lines) + "\n"


def _plot(agg, rows, metric: str, out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils import atomic_write

    paths: dict[str, str] = {}
    pts = [a for a in agg if a.get("params_mean") and a.get("test_metric_mean") is not None]
    if pts:
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for a in pts:
            ax.errorbar(a["params_mean"] / 1e6, a["test_metric_mean"], yerr=a.get("test_metric_std") or 0.0,
                        fmt="o", capsize=3, label=a["algorithm"])
        ax.set_xlabel("parameters (M)")
        ax.set_ylabel(f"test {metric} (mean ± std over folds)")
        ax.set_title(f"test {metric} vs parameters")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        paths["metric_vs_params"] = atomic_write(out / "metric_vs_params.png", lambda p: fig.savefig(p, dpi=110))
        plt.close(fig)
    noises = sorted({n for r in rows if r.get("status") == "ok" for n in (r.get("robustness") or {})})
    if noises:
        fig, axes = plt.subplots(1, len(noises), figsize=(4.2 * len(noises), 3.8), squeeze=False)
        for ax, noise in zip(axes[0], noises):
            for a in agg:
                curves = [r["robustness"][noise] for r in rows if r.get("status") == "ok"
                          and r["algorithm"] == a["algorithm"] and noise in (r.get("robustness") or {})]
                if not curves:
                    continue
                levels = sorted({float(k) for c in curves for k in c})
                means = [statistics.fmean([c[str(lv)] for c in curves if str(lv) in c]) for lv in levels]
                ax.plot(levels, means, marker="o", label=a["algorithm"])
            ax.set_xlabel(f"{noise} level")
            ax.set_ylabel(f"test {metric}")
            ax.set_title(noise)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        paths["robustness"] = atomic_write(out / "robustness.png", lambda p: fig.savefig(p, dpi=110))
        plt.close(fig)
    return paths


def _plot_stats(cases: Sequence[Mapping[str, Any]], stats: Mapping[str, Any], metric: str, out: Path) -> dict[str, str]:
    """``per_case_boxplot.png`` (the per-case test metric, seeds averaged, per algorithm) and
    ``paired_differences.png`` (forest plot: mean paired difference to the reference with its CI)."""
    algs = stats.get("algorithms") or {}
    if not algs:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils import atomic_write
    from .stats import case_means

    paths: dict[str, str] = {}
    means = case_means(cases)
    names = [a for a in algs if a in means]
    pct = int(round(100 * stats["level"]))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names) + 2), 4.4))
    data = [list(means[a].values()) for a in names]
    ax.boxplot(data, showmeans=True, showfliers=False)  # every case is drawn as a dot
    for i, d in enumerate(data, start=1):  # every case, jittered
        ax.plot(i + (np.arange(len(d)) % 7 - 3) * 0.02, d, ".", color="k", alpha=0.35, ms=3)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel(f"test {metric} per case (mean over seeds)")
    ax.set_title(f"per-case test {metric}")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    paths["per_case_boxplot"] = atomic_write(out / "per_case_boxplot.png", lambda p: fig.savefig(p, dpi=110))
    plt.close(fig)
    others = [a for a in names if a != stats["reference"] and algs[a].get("diff_mean") is not None]
    if others:
        fig, ax = plt.subplots(figsize=(6.4, 1.0 + 0.5 * len(others)))
        for y, a in enumerate(reversed(others)):
            r = algs[a]
            ax.errorbar(r["diff_mean"], y, xerr=[[r["diff_mean"] - r["diff_ci_low"]], [r["diff_ci_high"] - r["diff_mean"]]],
                        fmt="o", capsize=3, color="C3" if (r.get("p_holm") is not None and r["p_holm"] < 0.05) else "C0")
            p = r.get("p_holm")
            ax.annotate("p n/a" if p is None else (f"p < 0.001" if p < 0.001 else f"p = {p:.3f}"), (r["diff_ci_high"], y),
                        xytext=(5, 0), textcoords="offset points", va="center", fontsize=7)
        ax.axvline(0.0, color="k", lw=0.8)
        ax.set_yticks(range(len(others)), list(reversed(others)), fontsize=7)
        ax.set_xlabel(f"Δ test {metric} vs {stats['reference']} (mean over cases, {pct}% bootstrap CI)")
        ax.set_title("paired differences (Holm-adjusted Wilcoxon p; red: p < 0.05)", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
        fig.tight_layout()
        paths["paired_differences"] = atomic_write(out / "paired_differences.png", lambda p: fig.savefig(p, dpi=110))
        plt.close(fig)
    return paths


def write_outputs(rows: Sequence[Mapping[str, Any]], manifest: Mapping[str, Any], out: str | os.PathLike) -> dict:
    """Write the leaderboard (Markdown, CSV), the raw per-fold results (JSON) and the plots into ``out``."""
    from ..bundle.results import write_csv, write_json
    from ..utils import atomic_write

    out = Path(out)
    metric = manifest.get("metric", "metric")
    agg = aggregate(rows, manifest.get("higher_is_better", True))
    budget = ", ".join(f"{k} {v}" for k, v in manifest.get("budget", {}).items())
    seeds = manifest.get("seeds") or [manifest.get("seed")]
    seed_text = f"seeds {' '.join(map(str, seeds))}" if len(seeds) > 1 else f"seed {seeds[0]}"
    over = "Mean ± std over cells (folds x seeds)" if len(seeds) > 1 else "Mean ± std over folds"
    note = (f"Task `{manifest.get('task')}` with the recipe of `{Path(str(manifest.get('bundle'))).name}`, "
            f"{manifest.get('folds')} fold{'s' if manifest.get('folds') != 1 else ''}, budget {budget}, {seed_text}, data "
            f"`{manifest.get('dataset_dir')}`{' (demo)' if manifest.get('is_demo') else ''}. "
            f"{over}; best per column in bold. {metric} under noise: mean over the noisy "
            f"levels of {', '.join(manifest.get('noise', {})) or 'no noise'}.")
    hib = manifest.get("higher_is_better", True)
    stats = comparison_statistics(rows, manifest.get("reference"), hib)
    for a in agg:
        st = stats["algorithms"].get(a["algorithm"], {})
        a.update({k: st.get(k) for k in STAT_COLUMNS if k not in ("test_ci_low", "test_ci_high")},
                 test_ci_low=st.get("ci_low"), test_ci_high=st.get("ci_high"))
    md = leaderboard_markdown(agg, metric, title=f"Leaderboard: {manifest.get('task')}", note=note, stats=stats)
    paths = {"markdown": atomic_write(out / "leaderboard.md", lambda p: Path(p).write_text(md, encoding="utf-8"))}
    cols = ["algorithm", "source", "n_ok", "n_failed"]
    for f, _, _ in COLUMNS:
        cols += ["receptive_field"] if f == "receptive_field" else [f"{f}_mean", f"{f}_std"]
    cols += ["best", *STAT_COLUMNS]
    csv_rows = [{**a, "best": ";".join(a["best"]), **{k: "" if a.get(k) is None else a[k] for k in STAT_COLUMNS}}
                for a in agg]
    paths["csv"] = write_csv(csv_rows, out / "leaderboard.csv", columns=cols)
    cases = case_rows(rows)
    paths["per_case"] = write_csv(cases, out / "per_case.csv", columns=PER_CASE_COLUMNS)
    slim = [{k: v for k, v in r.items() if k != "traceback"} for r in rows]
    paths["json"] = write_json({"manifest": dict(manifest), "results": slim, "per_case": cases, "statistics": stats},
                               out / "results.json")
    paths.update(_plot(agg, rows, metric, out))
    paths.update(_plot_stats(cases, stats, metric, out))
    paths["rows"] = agg
    paths["statistics"] = stats
    return paths
