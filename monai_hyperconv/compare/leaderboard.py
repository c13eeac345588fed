"""Leaderboard of a comparison: per-fold rows -> mean ± std per algorithm, best per column marked.

Files (all written atomically): ``leaderboard.md``, ``leaderboard.csv``, ``results.json`` (every
cell's raw result), ``metric_vs_params.png`` (papers 000/001 Figs 3-6 style) and
``robustness.png`` (metric vs noise level per noise type).
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .report import fmt_pm

__all__ = ["aggregate", "leaderboard_markdown", "write_outputs", "COLUMNS"]

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
            "errors": [f"fold {r.get('fold')}: {str(r.get('error')).splitlines()[0]}" for r in g if r.get("status") != "ok"],
        }
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


def leaderboard_markdown(agg: Sequence[Mapping[str, Any]], metric: str, title: str = "Leaderboard",
                         note: str = "") -> str:
    """The leaderboard as a Markdown table (mean ± std over folds; best per column in bold)."""
    heads = ["algorithm", "folds ok"] + [h.format(m=metric) for _, h, _ in COLUMNS]
    lines = [f"# {title}", ""]
    if note:
        lines += [note, ""]
    lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for a in agg:
        n = a["n_ok"] + a["n_failed"]
        lines.append("| " + " | ".join([f"`{a['algorithm']}`", f"{a['n_ok']}/{n}"]
                                        + [_cell(a, f) for f, _, _ in COLUMNS]) + " |")
    errors = [(a["algorithm"], e) for a in agg for e in a["errors"]]
    if errors:
        lines += ["", "Failed cells:", ""] + [f"- `{alg}` {e}" for alg, e in errors]
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


def write_outputs(rows: Sequence[Mapping[str, Any]], manifest: Mapping[str, Any], out: str | os.PathLike) -> dict:
    """Write the leaderboard (Markdown, CSV), the raw per-fold results (JSON) and the plots into ``out``."""
    from ..bundle.results import write_csv, write_json
    from ..utils import atomic_write

    out = Path(out)
    metric = manifest.get("metric", "metric")
    agg = aggregate(rows, manifest.get("higher_is_better", True))
    budget = ", ".join(f"{k} {v}" for k, v in manifest.get("budget", {}).items())
    note = (f"Task `{manifest.get('task')}` with the recipe of `{Path(str(manifest.get('bundle'))).name}`, "
            f"{manifest.get('folds')} fold{'s' if manifest.get('folds') != 1 else ''}, budget {budget}, seed {manifest.get('seed')}, data "
            f"`{manifest.get('dataset_dir')}`{' (demo)' if manifest.get('is_demo') else ''}. "
            f"Mean ± std over folds; best per column in bold. {metric} under noise: mean over the noisy "
            f"levels of {', '.join(manifest.get('noise', {})) or 'no noise'}.")
    md = leaderboard_markdown(agg, metric, title=f"Leaderboard: {manifest.get('task')}", note=note)
    paths = {"markdown": atomic_write(out / "leaderboard.md", lambda p: Path(p).write_text(md, encoding="utf-8"))}
    cols = ["algorithm", "source", "n_ok", "n_failed"]
    for f, _, _ in COLUMNS:
        cols += ["receptive_field"] if f == "receptive_field" else [f"{f}_mean", f"{f}_std"]
    cols += ["best"]
    csv_rows = [{**a, "best": ";".join(a["best"])} for a in agg]
    paths["csv"] = write_csv(csv_rows, out / "leaderboard.csv", columns=cols)
    slim = [{k: v for k, v in r.items() if k != "traceback"} for r in rows]
    paths["json"] = write_json({"manifest": dict(manifest), "results": slim}, out / "results.json")
    paths.update(_plot(agg, rows, metric, out))
    paths["rows"] = agg
    return paths
