"""Bundle glue for phi-conditioned networks (scale-space hypernetworks; Gonzalez Ortiz et al. 2023).

MONAI's engines call ``inferer(inputs, network)``, which cannot pass the rescaling factor ``phi``
that a scale-space network takes. These pieces connect them, by dotted path from a bundle config:

* :class:`PhiInferer`: ``network(inputs, phi=phi)``; ``phi=None`` in training lets the network
  draw ``phi`` from its prior (the SSHN/Stochastic training rule); an inner inferer (sliding
  window, slices) may be wrapped.
* :class:`LossSchedule`: trainer handler switching the loss at given epochs (cross-entropy
  pre-training, then soft Dice); resume-safe (decided from the epoch number).
* :class:`ParetoSweep`: evaluator handler (or plain callable) running
  :func:`monai_hyperconv.metrics.pareto_sweep` over ``phis`` after evaluation and writing CSV,
  PNG, Markdown and the chosen factors (JSON).
* :func:`select_phi`, :func:`materialized_network`, :func:`export_materialized`: the deployed
  network for a ``phi`` given directly or chosen from a FLOPs budget / a tolerated metric drop.
"""

from __future__ import annotations

import copy
import csv
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.inferers import Inferer
from torch import nn

from ..hypernets.resize import check_phi
from ..hypernets.unet import MaterializedNetwork
from ..metrics import choose_phi, count_flops, default_phis, pareto_sweep
from .checkpoint import unwrap
from .distributed import is_main_process
from .export import export_baked, load_weights
from .results import atomic_write_text, markdown_table, write_json

logger = logging.getLogger(__name__)

__all__ = ["PhiInferer", "LossSchedule", "ParetoSweep", "read_pareto_csv", "select_phi", "materialized_network",
           "export_materialized"]


def _check_opt_phi(phi):
    if phi is None:
        return None
    return check_phi(phi)


class PhiInferer(Inferer):
    """``network(inputs, *args, phi=phi, **kwargs)``, optionally through another inferer.

    Args:
        phi: rescaling factor in (0, 1]; ``None`` passes no factor (the network then samples from
            its prior in training, or uses its default / raises in evaluation).
        inferer: optional inner MONAI inferer (e.g. ``SlidingWindowInferer``); it receives a
            callable that adds ``phi``.
    """

    def __init__(self, phi: float | None = None, inferer: Inferer | None = None) -> None:
        self.phi = _check_opt_phi(phi)
        self.inferer = inferer

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> Any:
        kw = dict(kwargs)
        if self.phi is not None:
            kw["phi"] = self.phi
        if self.inferer is None:
            return network(inputs, *args, **kw)
        return self.inferer(inputs, lambda x, *a, **k: network(x, *a, **{**k, **kw}), *args)

    def __repr__(self) -> str:
        return f"PhiInferer(phi={self.phi}, inferer={self.inferer!r})"


class LossSchedule:
    """Trainer handler: ``engine.loss_function`` = ``losses[k]`` from epoch ``starts[k]`` (1-based) on.

    Gonzalez Ortiz et al. 2023 pre-train with cross-entropy, then trains with soft Dice:
    ``LossSchedule([ce, dice], [1, pretrain_epochs + 1])``. The loss is chosen from the epoch
    number at every epoch start, so a resumed run picks the right one.

    Args:
        losses: loss modules ``(pred, target) -> scalar``.
        starts: first epoch (1-based) of each loss, increasing; ``starts[0]`` must be 1.
        names: optional names for the log.
    """

    def __init__(self, losses: Sequence[Callable], starts: Sequence[int], names: Sequence[str] | None = None) -> None:
        if len(losses) == 0 or len(losses) != len(starts):
            raise ValueError(f"losses and starts must be non-empty and of equal length, got {len(losses)} and {len(starts)}.")
        starts = [int(s) for s in starts]
        if starts[0] != 1 or any(b <= a for a, b in zip(starts, starts[1:])):
            raise ValueError(f"starts must begin at 1 and increase strictly, got {starts}.")
        self.losses = list(losses)
        self.starts = starts
        self.names = list(names) if names is not None else [type(l).__name__ for l in self.losses]
        self.current: int | None = None

    def index(self, epoch: int) -> int:
        """Index of the loss used in ``epoch`` (1-based)."""
        k = 0
        for i, s in enumerate(self.starts):
            if epoch >= s:
                k = i
        return k

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine) -> None:
        k = self.index(int(engine.state.epoch))
        engine.loss_function = self.losses[k]
        if k != self.current:
            logger.info(f"epoch {engine.state.epoch}: training loss is now {self.names[k]}")
            self.current = k


def read_pareto_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a table written by :func:`monai_hyperconv.metrics.pareto_sweep` (numbers parsed)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Pareto table not found: {p} (run the bundle's evaluate.json first).")
    rows = []
    with open(p, newline="") as fh:
        for r in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for k, v in r.items():
                if v in ("True", "False"):
                    row[k] = v == "True"
                else:
                    try:
                        row[k] = int(v) if k == "n" else float(v)
                    except (TypeError, ValueError):
                        row[k] = v
            rows.append(row)
    if not rows:
        raise ValueError(f"empty Pareto table {p}.")
    return rows


def _pareto_markdown(rows: Sequence[Mapping[str, Any]], metric: str) -> str:
    return markdown_table([{"phi": round(float(r["phi"]), 2), f"{metric} mean": r[metric + "_mean"],
                            f"{metric} std": r[metric + "_std"], "GFLOPs": r["gflops"],
                            "on Pareto front": "yes" if r.get("pareto") else ""} for r in rows])


class ParetoSweep:
    """Accuracy vs inference GFLOPs over phi for one trained network, without retraining.

    Runs :func:`monai_hyperconv.metrics.pareto_sweep` (materialised network per phi) and writes
    ``<prefix>.csv``, ``<prefix>.png`` (metric vs GFLOPs, Gonzalez Ortiz et al. 2023, Fig. 7), ``<prefix>.md`` and
    ``<prefix>_choice.json`` (best phi; cheapest phi within ``max_metric_drop`` of the best; the
    best within ``max_gflops`` if given) into ``output_dir`` (rank 0 only). Attach to an evaluator
    (runs at ``COMPLETED``) or call :meth:`run`.

    Args:
        network: the phi-conditioned network (DDP wrappers are unwrapped).
        data: re-iterable of batches (a DataLoader of dicts with ``image``/``label``).
        output_dir: folder of the outputs.
        phis: factors (default 0.05..0.50 step 0.01).
        prefix: file name stem.
        label: series name in the plot.
        metric_name: metric column name ("dice").
        metric_fn: ``(pred, label) -> (B,)`` (default foreground Dice of logits).
        step_fn: ``(net, batch) -> (B,)`` replacing prediction + metric (registration).
        input_shape: FLOPs input shape(s), required with ``step_fn``.
        max_metric_drop: tolerated drop for the "cheap" choice.
        max_gflops: optional budget for the "budget" choice.
        higher_is_better: metric direction.
        extra_columns: optional ``(net, phi) -> {name: value}`` adding columns per phi (e.g. folding).
    """

    def __init__(
        self,
        network: nn.Module,
        data: Any,
        output_dir: str | os.PathLike,
        phis: Sequence[float] | None = None,
        prefix: str = "pareto",
        label: str = "SSHN",
        metric_name: str = "dice",
        metric_fn: Callable | None = None,
        step_fn: Callable | None = None,
        input_shape: Sequence | None = None,
        max_metric_drop: float = 0.01,
        max_gflops: float | None = None,
        higher_is_better: bool = True,
    ) -> None:
        self.network = network
        self.data = data
        self.output_dir = Path(output_dir)
        self.phis = None if phis is None else [float(p) for p in phis]
        self.prefix = prefix
        self.label = label
        self.metric_name = metric_name
        self.metric_fn = metric_fn
        self.step_fn = step_fn
        self.input_shape = input_shape
        self.max_metric_drop = max_metric_drop
        self.max_gflops = max_gflops
        self.higher_is_better = higher_is_better
        self.table: list[dict[str, Any]] = []
        self.choice: dict[str, Any] = {}

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, lambda e: self.run())

    def paths(self) -> dict[str, Path]:
        d, s = self.output_dir, self.prefix
        return {"csv": d / f"{s}.csv", "png": d / f"{s}.png", "md": d / f"{s}.md", "json": d / f"{s}_choice.json"}

    def run(self) -> list[dict[str, Any]]:
        net = unwrap(self.network)
        kw: dict[str, Any] = {"metric_name": self.metric_name, "higher_is_better": self.higher_is_better,
                              "label": self.label}
        if self.metric_fn is not None:
            kw["metric_fn"] = self.metric_fn
        if self.step_fn is not None:
            kw["step_fn"] = self.step_fn
        if self.input_shape is not None:
            kw["input_shape"] = self.input_shape
        main = is_main_process()
        p = self.paths()
        if main:
            kw.update(csv_path=str(p["csv"]), png_path=str(p["png"]))
        logger.info(f"Pareto sweep over {len(self.phis) if self.phis else 46} phis ...")
        self.table = pareto_sweep(net, self.data, self.phis, **kw)
        key = f"{self.metric_name}_mean"
        by_phi = {r["phi"]: r for r in self.table}
        best = choose_phi(self.table, metric=key, higher_is_better=self.higher_is_better)
        cheap = choose_phi(self.table, max_metric_drop=self.max_metric_drop, metric=key,
                           higher_is_better=self.higher_is_better)
        self.choice = {
            "metric": key,
            "best_phi": best, "best_metric": by_phi[best][key], "best_gflops": by_phi[best]["gflops"],
            "max_metric_drop": self.max_metric_drop,
            "cheap_phi": cheap, "cheap_metric": by_phi[cheap][key], "cheap_gflops": by_phi[cheap]["gflops"],
        }
        if self.max_gflops is not None:
            try:
                b = choose_phi(self.table, max_gflops=self.max_gflops, metric=key, higher_is_better=self.higher_is_better)
                self.choice.update(budget_gflops=self.max_gflops, budget_phi=b, budget_metric=by_phi[b][key])
            except ValueError as e:
                self.choice.update(budget_gflops=self.max_gflops, budget_error=str(e))
        if main:
            notes = (f"\nBest phi {best:.2f} ({key} {by_phi[best][key]:.4f}, {by_phi[best]['gflops']:.4f} GFLOPs); "
                     f"cheapest within {self.max_metric_drop} of it: phi {cheap:.2f} ({by_phi[cheap][key]:.4f}, "
                     f"{by_phi[cheap]['gflops']:.4f} GFLOPs).\n")
            atomic_write_text(p["md"], f"# {self.label}: {self.metric_name} vs inference GFLOPs over phi\n\n"
                              + _pareto_markdown(self.table, self.metric_name) + notes)
            write_json(self.choice, p["json"])
            logger.info(f"Pareto sweep written to {p['csv']} and {p['png']}: {notes.strip()}")
        return self.table


def select_phi(
    phi: float | None = None,
    max_gflops: float | None = None,
    max_metric_drop: float | None = None,
    pareto_csv: str | os.PathLike | None = None,
    network: nn.Module | None = None,
    input_shape: Sequence[int] | None = None,
    default: float | None = 0.5,
    phis: Sequence[float] | None = None,
) -> float:
    """The factor to deploy.

    1. ``phi`` if given.
    2. With ``max_gflops`` and/or ``max_metric_drop``: :func:`~monai_hyperconv.metrics.choose_phi`
       on the evaluation's Pareto table ``pareto_csv`` (when it exists).
    3. With ``max_gflops`` but no table: the largest ``phi`` (of ``phis``, default 0.05..0.50)
       whose materialised ``network`` costs at most ``max_gflops`` on ``input_shape`` (no metric
       known: larger phi is assumed more accurate).
    4. Else ``default``.

    Raises:
        ValueError: nothing fits the budget, or no way to decide.
    """
    if phi is not None:
        return check_phi(phi)
    if max_gflops is None and max_metric_drop is None:
        if default is None:
            raise ValueError("give phi, max_gflops or max_metric_drop.")
        return check_phi(default)
    if pareto_csv is not None and Path(pareto_csv).is_file():
        table = read_pareto_csv(pareto_csv)
        metric = next((k for k in table[0] if k.endswith("_mean")), None)
        chosen = choose_phi(table, max_gflops=max_gflops, max_metric_drop=max_metric_drop, metric=metric)
        logger.info(f"phi {chosen} chosen from {pareto_csv} (max_gflops={max_gflops}, max_metric_drop={max_metric_drop})")
        return float(chosen)
    if max_metric_drop is not None:
        raise ValueError(f"max_metric_drop needs the Pareto table of an evaluation run ({pareto_csv} not found).")
    if network is None or input_shape is None:
        raise ValueError("max_gflops without a Pareto table needs network and input_shape to count FLOPs.")
    net = unwrap(network)
    best = None
    for p in sorted(default_phis() if phis is None else phis):
        mat = net.materialize(p) if hasattr(net, "materialize") else None
        g = (count_flops(mat, input_shape) if mat is not None else count_flops(net, input_shape, phi=p)) / 1e9
        if g <= max_gflops:
            best = p
    if best is None:
        raise ValueError(f"no phi fits {max_gflops} GFLOPs for input {tuple(input_shape)}.")
    logger.info(f"phi {best} is the largest within {max_gflops} GFLOPs (no Pareto table at {pareto_csv})")
    return float(best)


def materialized_network(network: nn.Module, phi: float, ckpt_file: str | os.PathLike | None = None,
                         device: str | torch.device | None = None) -> nn.Module:
    """Load ``ckpt_file`` (if given) into ``network`` and return ``network.materialize(phi)`` in eval mode."""
    net = unwrap(network)
    if ckpt_file is not None:
        load_weights(net, ckpt_file)
    if hasattr(net, "materialize"):
        out = net.materialize(phi)
    elif getattr(net, "accepts_phi", False):  # Fixed / Stochastic baselines: the UNet with phi fixed
        out = MaterializedNetwork(copy.deepcopy(net), phi)
    else:
        raise TypeError(f"{type(net).__name__} takes no phi and has no materialize(phi).")
    if device is not None:
        out = out.to(device)
    logger.info(f"materialised {type(net).__name__} at phi={phi}" + (f" from {ckpt_file}" if ckpt_file else ""))
    return out.eval()


def export_materialized(network: nn.Module, phi: float, filepath: str | os.PathLike, input_shape: Sequence,
                        ckpt_file: str | os.PathLike | None = None, method: str | None = None, **export_kwargs) -> str:
    """Export the materialised network for ``phi`` with :func:`monai_hyperconv.bundle.export_baked`
    (``torch.export`` ``.pt2``, ONNX ``.onnx`` or TorchScript ``.ts``; runs without ``monai_hyperconv``;
    ``export_kwargs`` such as ``opset``/``verify_onnx`` go to ``export_baked``).

    Traced for ``input_shape``: the resize sizes of ``R_phi`` are fixed by tracing, so the exported
    model takes inputs of that spatial size. For a registration network ``input_shape`` is
    ``[moving_shape, fixed_shape]`` and the exported model is ``f(moving, fixed) -> (moved, ddf)``.
    """
    mat = materialized_network(network, phi, ckpt_file, device="cpu")
    return export_baked(mat, None, filepath, input_shape, method=method, **export_kwargs)
