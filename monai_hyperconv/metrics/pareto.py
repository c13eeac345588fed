"""Accuracy-efficiency Pareto fronts over the rescaling factor (Gonzalez Ortiz et al. 2023, Sec. 5.1 and Fig. 7)."""

from __future__ import annotations

import csv
import math
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ..utils import atomic_write
from .flops import count_flops

__all__ = [
    "default_phis", "dice_per_sample", "pareto_sweep", "pareto_front", "choose_phi", "write_csv", "plot_pareto",
    "atomic_write",
]

Table = List[Dict[str, Any]]


def default_phis() -> List[float]:
    """0.05, 0.06, ..., 0.50 (the paper's 0.01 evaluation grid over the training prior)."""
    return [round(0.05 + 0.01 * i, 2) for i in range(46)]


def dice_per_sample(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean foreground Dice per sample for segmentation logits (the task metric of Gonzalez Ortiz et al. 2023).

    Args:
        pred: logits ``(B, C, *spatial)``: argmax over ``C > 1`` classes, or ``logit > 0`` for ``C = 1``.
        target: label map ``(B, 1, *spatial)`` or ``(B, *spatial)`` with values ``0..C-1``.

    Returns:
        ``(B,)`` Dice averaged over foreground labels; a label absent from both prediction and
        target scores 1 (MONAI's ``ignore_empty=False`` convention), so there is no NaN.
    """
    n_cls = pred.shape[1]
    labels = pred.argmax(1) if n_cls > 1 else (pred[:, 0] > 0).long()
    tgt = target[:, 0] if target.dim() == pred.dim() else target
    tgt = tgt.round().long()
    fg = range(1, max(n_cls, 2))
    scores = []
    for c in fg:
        p, t = labels == c, tgt == c
        inter = (p & t).flatten(1).sum(1).double()
        total = (p.flatten(1).sum(1) + t.flatten(1).sum(1)).double()
        scores.append(torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total)))
    return torch.stack(scores, 1).mean(1)


def _split(batch):
    if isinstance(batch, Mapping):
        return batch["image"], batch["label"]
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise ValueError("data must yield (image, label) pairs or dicts with 'image' and 'label' keys.")


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def pareto_sweep(
    model: nn.Module,
    data: Iterable,
    phis: Optional[Sequence[float]] = None,
    metric_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = dice_per_sample,
    *,
    materialize: bool = True,
    step_fn: Optional[Callable[[Callable, Any], torch.Tensor]] = None,
    input_shape: Optional[Sequence] = None,
    csv_path: Optional[str] = None,
    png_path: Optional[str] = None,
    label: str = "model",
    metric_name: str = "dice",
    higher_is_better: bool = True,
) -> Table:
    """Evaluate one trained phi-conditioned network over many rescaling factors, without retraining.

    For every ``phi``: build the inference network (``model.materialize(phi)`` when the model
    has one and ``materialize=True``: the deployed network, whose FLOPs exclude the hypernetwork;
    else ``model(x, phi=phi)`` in eval mode), compute the per-sample task metric over ``data``
    and the inference GFLOPs for one sample.

    Args:
        model: a network taking ``(x, phi)`` (SSHN, FiLM, Fixed/Stochastic UNet, registration net).
        data: re-iterable of ``(image, label)`` batches or dicts with ``image``/``label``.
        phis: factors (default :func:`default_phis`, 0.05..0.5 step 0.01).
        metric_fn: ``(prediction, label) -> (B,)`` per-sample metric (default foreground Dice).
        materialize: use ``model.materialize`` when available.
        step_fn: optional ``(net, batch) -> (B,)`` replacing prediction + metric (e.g. registration,
            where ``net(moving, fixed)`` and the metric needs label maps); ``net`` takes no phi.
        input_shape: shape(s) for the FLOPs count (default: the first batch's image, batch 1).
        csv_path, png_path: if given, write the table / the plot (atomically).
        label: series name in the plot. metric_name: column/axis name.
        higher_is_better: metric direction (for the Pareto flag).

    Returns:
        One row per phi: ``phi``, ``<metric_name>_mean``, ``<metric_name>_std`` (over samples),
        ``gflops``, ``n`` (samples), ``pareto`` (on the front). Also accepted by
        :func:`pareto_front` and :func:`choose_phi`.
    """
    phis = default_phis() if phis is None else [float(p) for p in phis]
    if not phis:
        raise ValueError("phis must not be empty.")
    batches = list(data) if iter(data) is data else data  # a generator can only be walked once
    device = _model_device(model)
    was_training = model.training
    model.eval()
    table: Table = []
    try:
        for phi in phis:
            if materialize and hasattr(model, "materialize"):
                net = model.materialize(phi)
                fwd_kwargs: Dict[str, Any] = {}
            else:
                net = model
                fwd_kwargs = {"phi": phi}

            def run(*args, _net=net, _kw=fwd_kwargs):
                return _net(*args, **_kw)

            values, shape = [], input_shape
            for batch in batches:
                if step_fn is not None:
                    v = step_fn(run, batch)
                else:
                    x, y = _split(batch)
                    x = x.to(device)
                    v = metric_fn(run(x), y.to(device))
                    if shape is None:
                        shape = (1, *x.shape[1:])
                values.append(torch.as_tensor(v, dtype=torch.float64).reshape(-1).cpu())
            if shape is None:
                raise ValueError("input_shape is required with step_fn (it cannot be inferred).")
            vals = torch.cat(values) if values else torch.zeros(0, dtype=torch.float64)
            if vals.numel() == 0:
                raise ValueError("data yielded no samples.")
            gflops = count_flops(net, shape, **fwd_kwargs) / 1e9
            table.append({
                "phi": phi,
                f"{metric_name}_mean": float(vals.mean()),
                f"{metric_name}_std": float(vals.std(unbiased=False)),
                "gflops": gflops,
                "n": int(vals.numel()),
            })
    finally:
        model.train(was_training)
    front = {id(r) for r in pareto_front(table, metric=f"{metric_name}_mean", higher_is_better=higher_is_better)}
    for r in table:
        r["pareto"] = id(r) in front
    if csv_path:
        write_csv(table, csv_path)
    if png_path:
        plot_pareto({label: table}, png_path, metric=f"{metric_name}_mean", higher_is_better=higher_is_better)
    return table


def _metric_key(table: Table, metric: Optional[str]) -> str:
    if metric is not None:
        return metric
    keys = [k for k in table[0] if k.endswith("_mean")]
    if len(keys) != 1:
        raise ValueError(f"cannot tell the metric column from {list(table[0])}: pass metric=.")
    return keys[0]


def _dominates(a, b, key, sign) -> bool:
    better_or_equal = a["gflops"] <= b["gflops"] and sign * a[key] >= sign * b[key]
    strictly = a["gflops"] < b["gflops"] or sign * a[key] > sign * b[key]
    return better_or_equal and strictly


def pareto_front(table: Table, metric: Optional[str] = None, higher_is_better: bool = True) -> Table:
    """Rows not dominated by any other row (fewer-or-equal GFLOPs and better-or-equal metric, one strictly).

    Args:
        table: rows with ``gflops`` and a metric column.
        metric: the metric column (default: the only ``*_mean`` column).
        higher_is_better: metric direction.

    Returns:
        The non-dominated rows, sorted by GFLOPs.
    """
    if not table:
        return []
    key = _metric_key(table, metric)
    sign = 1.0 if higher_is_better else -1.0
    for r in table:
        if not (math.isfinite(r["gflops"]) and math.isfinite(r[key])):
            raise ValueError(f"non-finite value in row {r}.")
    front = [r for r in table if not any(_dominates(o, r, key, sign) for o in table if o is not r)]
    return sorted(front, key=lambda r: (r["gflops"], -sign * r[key]))


def choose_phi(
    table: Table,
    max_gflops: Optional[float] = None,
    max_metric_drop: Optional[float] = None,
    metric: Optional[str] = None,
    higher_is_better: bool = True,
) -> float:
    """Pick a rescaling factor from a sweep.

    With ``max_metric_drop``: the cheapest phi whose metric is within that drop of the best
    metric in the table (paper: "reduce FLOPs without a significant Dice loss"); otherwise the
    best-metric phi. ``max_gflops`` restricts both to rows within the budget.

    Returns:
        The chosen ``phi``.

    Raises:
        ValueError: no row satisfies the constraints (the message gives the cheapest/best available).
    """
    if not table:
        raise ValueError("empty table.")
    key = _metric_key(table, metric)
    sign = 1.0 if higher_is_better else -1.0
    rows = list(table)
    if max_gflops is not None:
        rows = [r for r in rows if r["gflops"] <= max_gflops]
        if not rows:
            cheapest = min(table, key=lambda r: r["gflops"])
            raise ValueError(f"no phi within {max_gflops} GFLOPs; the cheapest is phi={cheapest['phi']} "
                             f"at {cheapest['gflops']:.4g} GFLOPs.")
    if max_metric_drop is not None:
        if max_metric_drop < 0:
            raise ValueError(f"max_metric_drop must be >= 0, got {max_metric_drop}.")
        best = max(sign * r[key] for r in table)
        ok = [r for r in rows if sign * r[key] >= best - max_metric_drop]
        if not ok:
            raise ValueError(f"no phi within the GFLOPs budget is within {max_metric_drop} of the best {key} "
                             f"({sign * best:.4g}).")
        return min(ok, key=lambda r: (r["gflops"], -sign * r[key]))["phi"]
    return max(rows, key=lambda r: (sign * r[key], -r["gflops"]))["phi"]


def write_csv(table: Table, path: str) -> str:
    """Write rows as CSV (atomically); columns from the first row."""
    if not table:
        raise ValueError("empty table.")
    cols = list(table[0])

    def _w(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(table)

    return atomic_write(path, _w)


def plot_pareto(
    tables: Union[Table, Mapping[str, Table]],
    path: str,
    metric: Optional[str] = None,
    higher_is_better: bool = True,
    title: str = "Accuracy vs inference cost",
) -> str:
    """Metric vs GFLOPs per series, +-1 std shaded, Pareto front circled (Gonzalez Ortiz et al. 2023, Fig. 7); PNG, atomic."""
    # a bare Figure renders PNG with the Agg renderer whatever backend is selected, without pyplot's
    # global figure registry or switching the process-wide backend: headless and thread-friendly
    from matplotlib.figure import Figure

    series = {"model": tables} if isinstance(tables, list) else dict(tables)
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot(1, 1, 1)
    for name, table in series.items():
        if not table:
            continue
        key = _metric_key(table, metric)
        rows = sorted(table, key=lambda r: r["gflops"])
        g = [r["gflops"] for r in rows]
        m = [r[key] for r in rows]
        line = ax.plot(g, m, marker=".", label=name)[0]
        std_key = key.replace("_mean", "_std")
        if std_key in rows[0] and std_key != key:
            s = [r[std_key] for r in rows]
            ax.fill_between(g, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)],
                            color=line.get_color(), alpha=0.15)
        front = pareto_front(table, metric=key, higher_is_better=higher_is_better)
        ax.plot([r["gflops"] for r in front], [r[key] for r in front], "o", mfc="none", color=line.get_color())
    ax.set_xlabel("inference GFLOPs (one sample)")
    ax.set_ylabel((metric or "metric").replace("_mean", ""))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
