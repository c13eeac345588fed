"""Result writers for bundles, every file written atomically (temporary file + ``os.replace``).

Functions: :func:`atomic_write_text`, :func:`write_csv`, :func:`markdown_table`,
:func:`write_markdown`, :func:`plot_curves` (matplotlib, Agg backend).
Handlers: :class:`TrainingCurves` (trainer: per-epoch loss + validation metrics -> CSV + PNG,
resumable), :class:`EvaluationReport` (evaluator: aggregate metrics -> ``summary.md`` +
``summary.json``). Per-case metrics come from MONAI's ``MetricsSaver`` in ``evaluate.json``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..utils import atomic_write
from .distributed import is_main_process

__all__ = ["atomic_write_text", "atomic_write_bytes", "write_csv", "markdown_table", "write_markdown", "write_json",
           "plot_curves", "split_axes", "TrainingCurves", "EvaluationReport"]

logger = logging.getLogger(__name__)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically (temporary file + ``os.replace``)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, columns: Sequence[str] | None = None) -> str:
    """Rows (dicts) -> CSV with a header; columns default to the union of keys in order."""
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in cols})
    return atomic_write_text(path, buf.getvalue())


def write_json(obj: Any, path: str | os.PathLike) -> str:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=float) + "\n")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """Rows (dicts) -> a Markdown table (numbers right-aligned, floats with ``digits`` decimals)."""
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    num = [all(isinstance(r.get(c), (int, float)) for r in rows if c in r) for c in cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---:" if n else "---" for n in num) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, ""), digits) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str | None = None,
                   columns: Sequence[str] | None = None, notes: str | None = None, digits: int = 4) -> str:
    """A Markdown file with an optional ``# title``, the table, and optional notes below it."""
    text = (f"# {title}\n\n" if title else "") + markdown_table(rows, columns, digits) + (f"\n{notes}\n" if notes else "")
    return atomic_write_text(path, text)


def split_axes(series: Mapping[str, Sequence[float]], ratio: float = 10.0) -> tuple[list[str], list[str]]:
    """Which curves share the left axis and which go on a right one: losses (names containing
    ``loss``) stay left; the other series move right when their largest magnitude differs from the
    losses' by more than ``ratio`` (e.g. a PSNR of ~20 dB next to an MSE of ~0.01, which would draw
    the loss as a flat line at zero).

    Returns:
        ``(left, right)`` series names, in their order; ``right`` is empty when one axis suffices.
    """
    def peak(names):
        vals = [abs(float(v)) for n in names for v in series[n] if v is not None and math.isfinite(float(v))]
        return max(vals) if vals else None

    losses = [n for n in series if "loss" in n]
    others = [n for n in series if n not in losses]
    lp, op = peak(losses), peak(others)
    if not losses or not others or not lp or not op or max(lp, op) / min(lp, op) <= ratio:
        return list(series), []
    return losses, others


def plot_curves(x: Sequence[float], series: Mapping[str, Sequence[float]], path: str | os.PathLike,
                xlabel: str = "epoch", ylabel: str = "", title: str | None = None, logx: bool = False,
                right: Sequence[str] = (), right_label: str = "") -> str:
    """Line plot of several series over ``x`` as PNG (Agg backend, no display needed); the series
    named in ``right`` are drawn against a second y-axis on the right (see :func:`split_axes`)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    unknown = [n for n in right if n not in series]
    if unknown:
        raise ValueError(f"plot_curves: right={unknown} names no series (series: {list(series)})")
    ax2 = ax.twinx() if right else None
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, ys) in enumerate(series.items()):
        xs = list(x)[: len(ys)]
        pts = [(a, b) for a, b in zip(xs, ys) if b is not None and not (isinstance(b, float) and math.isnan(b))]
        if pts:
            (ax2 if name in right else ax).plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3,
                                                 label=name, color=colors[i % len(colors)])
    if ax2 is not None:
        ax2.set_ylabel(right_label or ", ".join(right))
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if series:
        handles = [h for a in (ax, ax2) if a is not None for h in a.get_legend_handles_labels()[0]]
        if handles:
            ax.legend(handles=handles)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _loss_from_output(output: Any) -> float | None:
    if isinstance(output, list) and output:
        output = output[0]
    if isinstance(output, Mapping) and "loss" in output:
        v = output["loss"]
        return float(v.item() if hasattr(v, "item") else v)
    return None


class TrainingCurves:
    """Per-epoch training loss and validation metrics -> ``<output_dir>/training_log.csv`` and
    ``training_curves.png`` (rank 0). Add it to ``train_handlers`` after ``ValidationHandler``;
    put it in the checkpoint's ``save_dict`` so a resumed run keeps its history.

    Args:
        output_dir: folder (e.g. ``<bundle_root>/eval``).
        evaluator: validation evaluator whose ``state.metrics`` are recorded (optional).
        loss_transform: engine output -> loss value (default: ``output[0]["loss"]``).
    """

    def __init__(self, output_dir: str | os.PathLike, evaluator: Any = None,
                 loss_transform: Callable[[Any], float | None] | None = None, prefix: str = "training") -> None:
        self.output_dir = Path(output_dir)
        self.evaluator = evaluator
        self.loss_transform = loss_transform or _loss_from_output
        self.prefix = prefix
        self.history: list[dict[str, Any]] = []
        self._sum, self._n = 0.0, 0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.history = list(state.get("history", []))

    def _reset(self, engine) -> None:
        self._sum, self._n = 0.0, 0

    def _iteration(self, engine) -> None:
        v = self.loss_transform(engine.state.output)
        if v is not None:  # a NaN/inf loss makes the epoch's mean NaN: the log must not hide it
            self._sum += v
            self._n += 1

    def _epoch(self, engine) -> None:
        row: dict[str, Any] = {"epoch": int(engine.state.epoch), "train_loss": self._sum / self._n if self._n else float("nan")}
        ev = self.evaluator
        if ev is not None and getattr(ev.state, "epoch", None) == engine.state.epoch:
            for k, v in ev.state.metrics.items():
                if isinstance(v, (int, float)) or (hasattr(v, "numel") and v.numel() == 1):
                    row[k] = float(v)
        self.history = [h for h in self.history if h["epoch"] < row["epoch"]] + [row]
        if not is_main_process():
            return
        write_csv(self.history, self.output_dir / f"{self.prefix}_log.csv")
        epochs = [h["epoch"] for h in self.history]
        series = {k: [h.get(k, float("nan")) for h in self.history] for k in dict.fromkeys(k for h in self.history for k in h) if k != "epoch"}
        left, right = split_axes(series)
        plot_curves(epochs, series, self.output_dir / f"{self.prefix}_curves.png", ylabel=", ".join(left) if right else "value",
                    title=f"{self.prefix} curves", right=right)


class EvaluationReport:
    """Aggregate metrics of an evaluator -> ``<output_dir>/summary.md`` and ``summary.json`` (rank 0).

    Args:
        output_dir: folder (``<bundle_root>/eval``).
        title: heading of the Markdown file.
        extra: constant fields to add (e.g. the network and checkpoint used).
    """

    def __init__(self, output_dir: str | os.PathLike, title: str = "Evaluation", extra: Mapping[str, Any] | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.title = title
        self.extra = dict(extra or {})
        self.summary: dict[str, Any] = {}

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine) -> None:
        metrics = {k: float(v) for k, v in engine.state.metrics.items()
                   if isinstance(v, (int, float)) or (hasattr(v, "numel") and v.numel() == 1)}
        self.summary = {**metrics, "n_cases": len(getattr(engine.data_loader, "dataset", []) or []), **self.extra}
        if not is_main_process():
            return
        rows = [{"metric": k, "value": v} for k, v in metrics.items()]
        notes = "\n".join(f"- {k}: {v}" for k, v in {"cases": self.summary["n_cases"], **self.extra}.items())
        write_markdown(rows, self.output_dir / "summary.md", self.title, notes=notes)
        write_json(self.summary, self.output_dir / "summary.json")
        logger.info(f"evaluation summary: {metrics} -> {self.output_dir / 'summary.md'}")


def describe_network(net: Any) -> str:
    """One line naming a network by what it is built of, for reports: works for any ``nn.Module``
    (ours, MONAI's, a user's), unlike a config's ``name`` key.

    Returns:
        e.g. ``"PaperUNet: 17 HyperConv 5x5, 1 Conv2d 1x1; 82,649 parameters"``.
    """
    from collections import Counter

    from torch import nn

    from ..layers.base import GeneratedConv
    from .checkpoint import unwrap

    net = unwrap(net)
    kinds: Counter = Counter()
    skip: set = set()
    for m in net.modules():
        if id(m) in skip:
            continue
        if isinstance(m, (GeneratedConv, nn.modules.conv._ConvNd)):
            if isinstance(m, GeneratedConv):  # its kernel generator's own layers are not convs of the network
                skip.update(id(s) for s in m.modules())
            kinds[f"{type(m).__name__} {'x'.join(map(str, m.kernel_size))}"] += 1
    convs = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
    params = sum(p.numel() for p in net.parameters())
    return f"{type(net).__name__}: {convs or 'no convs'}; {params:,} parameters"
