"""Read finished bundle training runs back: convergence figures per run and mean ± std over seeds.

A *run* is a bundle root after ``train.json`` (and optionally ``evaluate.json``): its
``eval/training_log.csv`` (written by :class:`~monai_hyperconv.bundle.results.TrainingCurves`),
``eval/summary.json`` (:class:`~monai_hyperconv.bundle.results.EvaluationReport`) and, when the
command that made it recorded one, ``train_seconds.txt``. ``scripts/liver_demo_seeds.sh`` lays
runs out as ``<root>/<network>/seed<k>``; :func:`find_seed_runs` reads that layout.
"""

from __future__ import annotations

import csv
import math
import os
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["summarize_run", "find_seed_runs", "aggregate_runs", "CONVERGED_LAST_OVER_BEST"]

# "the last epoch is within 10 % of the best": the bar a converged run meets
CONVERGED_LAST_OVER_BEST = 0.9


def _float(row: Mapping[str, str], key: str, where: Path) -> float:
    try:
        return float(row[key])
    except KeyError:
        raise ValueError(f"{where}: column {key!r} missing (columns: {sorted(row)}).") from None
    except ValueError:
        raise ValueError(f"{where}: {key} = {row[key]!r} at epoch {row.get('epoch', '?')} is not a number.") from None


def summarize_run(root: str | os.PathLike, metric: str = "val_mean_dice", eval_key: str | None = None) -> dict[str, Any]:
    """Convergence figures of one bundle run.

    Args:
        root: the bundle root of the run.
        metric: validation column of ``eval/training_log.csv`` (higher is better).
        eval_key: key of ``eval/summary.json`` to report as ``eval`` (default: the first number in it).

    Returns:
        ``epochs``, ``best`` (max of ``metric``), ``best_epoch`` (1-based, first maximum), ``last``,
        ``last_over_best``, ``mean_last5``, ``final_train_loss``, ``eval`` (or None without an
        evaluation), ``train_seconds`` (or None) and ``converged`` (``last >= 0.9 * best``).
    """
    root = Path(root)
    log = root / "eval" / "training_log.csv"
    if not log.is_file():
        raise FileNotFoundError(f"{log}: no training log (has the run finished its first epoch?).")
    with open(log, newline="") as f:
        hist = list(csv.DictReader(f))
    if not hist:
        raise ValueError(f"{log}: no epochs recorded.")
    vals = [_float(h, metric, log) for h in hist]
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{log}: non-finite {metric} at epoch(s) {[i + 1 for i, v in enumerate(vals) if not math.isfinite(v)]}.")
    best = max(vals)
    last = vals[-1]
    out: dict[str, Any] = {
        "epochs": len(vals), "best": best, "best_epoch": vals.index(best) + 1, "last": last,
        "last_over_best": last / best if best > 0 else float("nan"), "mean_last5": statistics.fmean(vals[-5:]),
        "final_train_loss": _float(hist[-1], "train_loss", log), "eval": None, "train_seconds": None,
        "converged": best > 0 and last >= CONVERGED_LAST_OVER_BEST * best,
    }
    summ = root / "eval" / "summary.json"
    if summ.is_file():
        import json

        data = json.loads(summ.read_text())
        if eval_key is None:
            eval_key = next((k for k, v in data.items() if isinstance(v, (int, float)) and k != "n_cases"), None)
        if eval_key is not None:
            if eval_key not in data:
                raise ValueError(f"{summ}: no key {eval_key!r} (keys: {sorted(data)}).")
            out["eval"] = float(data[eval_key])
    secs = root / "train_seconds.txt"
    if secs.is_file():
        out["train_seconds"] = float(secs.read_text().strip())
    return out


def find_seed_runs(root: str | os.PathLike) -> dict[str, dict[int, Path]]:
    """``{network: {seed: run folder}}`` of a ``<root>/<network>/seed<k>`` layout (folders with a training log)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder.")
    found: dict[str, dict[int, Path]] = {}
    for net in sorted(p for p in root.iterdir() if p.is_dir()):
        for run in sorted(net.iterdir()):
            m = re.fullmatch(r"seed(\d+)", run.name)
            if m and (run / "eval" / "training_log.csv").is_file():
                found.setdefault(net.name, {})[int(m.group(1))] = run
    return found


def aggregate_runs(runs: Sequence[Mapping[str, Any]], fields: Sequence[str] = ("best", "last", "eval", "train_seconds")) -> dict[str, Any]:
    """Mean and sample std (None for one run) of ``fields`` over runs (e.g. seeds), skipping None values.

    Returns:
        ``{"n": len(runs), "<field>_mean": ..., "<field>_std": ..., "converged": k}`` where ``k``
        counts the runs whose last epoch is within 10 % of their best.
    """
    out: dict[str, Any] = {"n": len(runs), "converged": sum(bool(r.get("converged")) for r in runs)}
    for f in fields:
        v = [float(r[f]) for r in runs if r.get(f) is not None]
        out[f"{f}_mean"] = statistics.fmean(v) if v else None
        out[f"{f}_std"] = statistics.stdev(v) if len(v) > 1 else None
    return out
