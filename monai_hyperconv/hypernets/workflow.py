"""Engine glue for phi-conditioned networks in MONAI workflows and bundles (paper 002).

MONAI's engines call ``inferer(inputs, network)``, which cannot pass the rescaling factor ``phi``
that a scale-space network takes. These pieces connect them, by dotted path from a bundle config:

* :class:`PhiInferer`: ``network(inputs, phi=phi)``; ``phi=None`` in training lets the network
  draw ``phi`` from its prior (the SSHN/Stochastic training rule); an inner inferer (sliding
  window, slices) may be wrapped.
* :class:`LossSchedule`: trainer handler switching the loss at given epochs (paper 002:
  cross-entropy pre-training, then soft Dice); resume-safe (decided from the epoch number).
* :class:`ParetoSweep`: evaluator handler (or plain callable) running
  :func:`monai_hyperconv.metrics.pareto_sweep` over ``phis`` after evaluation and writing CSV,
  PNG, Markdown and the chosen factors (JSON).
* :func:`select_phi`, :func:`materialized_network`, :func:`export_materialized`: the deployed
  network for a ``phi`` given directly or chosen from a FLOPs budget / a tolerated metric drop.
* Registration: :func:`registration_datalists` (pairs), :func:`split_pair_batch`,
  :class:`RegistrationInferer`, :class:`RegistrationLossAdapter`, :class:`SplitRegistrationOutputd`,
  :class:`FoldingFraction` (a MONAI metric), :func:`registration_step`.
* Baselines: :func:`majority_atlas_dice` (per-pixel majority label of the training set) and
  :func:`identity_registration_dice` (no deformation).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer
from monai.metrics import CumulativeIterationMetric
from monai.transforms import MapTransform
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "PhiInferer", "LossSchedule", "ParetoSweep", "read_pareto_csv", "select_phi", "materialized_network",
    "export_materialized", "majority_atlas_dice", "SaveLikeInputd",
    "registration_datalists", "inference_pairs", "make_pairs", "split_pair_batch", "RegistrationInferer",
    "RegistrationLossAdapter", "SplitRegistrationOutputd", "FoldingFraction", "registration_step",
    "identity_registration_dice", "PAIR_KEYS",
]


def _unwrap(net: Any) -> Any:
    if isinstance(net, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return net.module
    return net


def _check_opt_phi(phi):
    if phi is None:
        return None
    from .resize import check_phi

    return check_phi(phi)


# ----------------------------------------------------------------------------- inference with phi
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


# ----------------------------------------------------------------------------- loss schedule
class LossSchedule:
    """Trainer handler: ``engine.loss_function`` = ``losses[k]`` from epoch ``starts[k]`` (1-based) on.

    Paper 002 pre-trains with cross-entropy, then trains with soft Dice:
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


# ----------------------------------------------------------------------------- Pareto sweep
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


def _fmt_table(rows: Sequence[Mapping[str, Any]], metric: str) -> str:
    lines = [f"| phi | {metric} mean | {metric} std | GFLOPs | on Pareto front |", "|---:|---:|---:|---:|:---:|"]
    for r in rows:
        lines.append(f"| {r['phi']:.2f} | {r[metric + '_mean']:.4f} | {r[metric + '_std']:.4f} | {r['gflops']:.4f} | "
                     f"{'yes' if r.get('pareto') else ''} |")
    return "\n".join(lines) + "\n"


class ParetoSweep:
    """Accuracy vs inference GFLOPs over phi for one trained network, without retraining.

    Runs :func:`monai_hyperconv.metrics.pareto_sweep` (materialised network per phi) and writes
    ``<prefix>.csv``, ``<prefix>.png`` (metric vs GFLOPs, paper 002 Fig. 7), ``<prefix>.md`` and
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
        from ..bundle.distributed import is_main_process
        from ..bundle.results import atomic_write_text, write_json
        from ..metrics import choose_phi, pareto_sweep

        net = _unwrap(self.network)
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
                              + _fmt_table(self.table, self.metric_name) + notes)
            write_json(self.choice, p["json"])
            logger.info(f"Pareto sweep written to {p['csv']} and {p['png']}: {notes.strip()}")
        return self.table


# ----------------------------------------------------------------------------- choosing phi, deploying
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
    from ..metrics import choose_phi, count_flops, default_phis
    from .resize import check_phi

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
    net = _unwrap(network)
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
    from ..bundle.export import load_weights

    net = _unwrap(network)
    if ckpt_file is not None:
        load_weights(net, ckpt_file)
    if hasattr(net, "materialize"):
        out = net.materialize(phi)
    elif getattr(net, "accepts_phi", False):  # Fixed / Stochastic baselines: the UNet with phi fixed
        import copy

        from .unet import MaterializedNetwork

        out = MaterializedNetwork(copy.deepcopy(net), phi)
    else:
        raise TypeError(f"{type(net).__name__} takes no phi and has no materialize(phi).")
    if device is not None:
        out = out.to(device)
    logger.info(f"materialised {type(net).__name__} at phi={phi}" + (f" from {ckpt_file}" if ckpt_file else ""))
    return out.eval()


def export_materialized(network: nn.Module, phi: float, filepath: str | os.PathLike, input_shape: Sequence,
                        ckpt_file: str | os.PathLike | None = None, method: str | None = None) -> str:
    """Export the materialised network for ``phi`` with :func:`monai_hyperconv.bundle.export_baked`
    (TorchScript ``.ts`` or ``torch.export`` ``.pt2``; runs without ``monai_hyperconv``).

    Traced for ``input_shape``: the resize sizes of ``R_phi`` are fixed by tracing, so the exported
    model takes inputs of that spatial size. For a registration network ``input_shape`` is
    ``[moving_shape, fixed_shape]`` and the exported model is ``f(moving, fixed) -> (moved, ddf)``.
    """
    from ..bundle.export import export_baked

    mat = materialized_network(network, phi, ckpt_file, device="cpu")
    shapes = list(input_shape)
    if shapes and isinstance(shapes[0], (list, tuple)):
        return _export_pair(mat, shapes, filepath, method)
    return export_baked(mat, None, filepath, [int(s) for s in shapes], method=method)


def _export_pair(mat: nn.Module, shapes, filepath, method) -> str:
    from ..bundle.checkpoint import atomic_save
    from ..utils import atomic_write
    from ..layers import bake

    out = Path(filepath)
    method = method or ("export" if out.suffix == ".pt2" else "torchscript")
    baked = bake(mat).eval()
    xs = tuple(torch.rand(*[int(v) for v in s]) for s in shapes)
    with torch.no_grad():
        ref = mat(*xs)
        if method == "torchscript":
            mod = torch.jit.trace(baked, xs, check_trace=False)
            atomic_write(out, lambda p: torch.jit.save(mod, p))
            got = torch.jit.load(str(out))(*xs)
        else:
            ep = torch.export.export(baked, xs)
            atomic_write(out, lambda p: torch.export.save(ep, p))
            got = torch.export.load(str(out)).module()(*xs)
    err = max((a - b).abs().max().item() for a, b in zip(ref, got))
    if err > 1e-4:
        raise RuntimeError(f"exported model differs from the original by {err:.2e}.")
    atomic_save(baked.state_dict(), out.with_name(out.stem + "_weights.pt"))
    logger.info(f"exported materialised registration network to {out} ({method}; max abs diff {err:.1e})")
    return str(out)


# ----------------------------------------------------------------------------- baselines
def _load_label(path: str) -> np.ndarray:
    import nibabel as nib

    return np.asanyarray(nib.load(path).dataobj).round().astype(np.int64)


def majority_atlas_dice(train_items: Sequence[Mapping], val_items: Sequence[Mapping], label_key: str = "label") -> dict:
    """Trivial segmentation baseline: predict, at every pixel, the training set's most frequent label.

    Returns ``{"atlas_dice": mean foreground Dice over validation cases, "background_dice": Dice of an
    all-background prediction (0 unless a case has no foreground), "n": cases}`` (same Dice
    convention as :func:`monai_hyperconv.metrics.dice_per_sample`). Needs equal image sizes.
    """
    from ..metrics.registration import label_dice

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


# ----------------------------------------------------------------------------- registration
PAIR_KEYS = ("fixed", "moving", "fixed_label", "moving_label")


def make_pairs(items: Sequence[Mapping]) -> list[dict]:
    """Consecutive (cyclic) pairs of single-image entries: ``{"fixed": a.image, "moving": b.image,
    "fixed_label": a.label, "moving_label": b.label}`` (labels only when both have one)."""
    items = list(items)
    if len(items) < 2:
        raise ValueError(f"need at least 2 entries to make registration pairs, got {len(items)}.")
    out = []
    for a, b in zip(items, items[1:] + items[:1]):
        d = {"fixed": a["image"], "moving": b["image"]}
        if "label" in a and "label" in b:
            d.update(fixed_label=a["label"], moving_label=b["label"])
        out.append(d)
    return out


def _split_pair_entry(it: Mapping, i: int, sec: str, src: str) -> dict:
    from ..bundle.data import DatasetError

    out = {}
    for k, names in (("image", ("fixed", "moving")), ("label", ("fixed_label", "moving_label"))):
        v = it.get(k)
        if not (isinstance(v, (list, tuple)) and len(v) == 2):
            raise DatasetError(f"{sec}[{i}][{k!r}] ({src}) must be a [fixed, moving] pair of files, got {v!r}.")
        out.update(zip(names, v))
    return out


def registration_datalists(
    dataset_dir: str | os.PathLike,
    task: str | None = "brain_seg",
    spatial_dims: int = 2,
    check_load: bool = True,
    demo_kwargs: Mapping[str, Any] | None = None,
    train_section: str = "registration",
    val_section: str = "registration_validation",
) -> dict[str, list[dict]]:
    """Registration pairs ``{"fixed", "moving", "fixed_label", "moving_label"}`` for training and validation.

    Training: ``dataset.json[train_section]`` (the demo's "registration" list of
    ``{"image": [fixed, moving], "label": [fixed, moving]}``), else consecutive pairs of the
    "training" entries. Validation: ``dataset.json[val_section]`` (same layout) if present, else
    consecutive pairs of the "validation" entries (subjects never seen in training). The demo is
    generated on first use and every file is checked (exists, loads, one channel) before training,
    with errors naming the section, index, key and file.
    """
    from monai.data import load_decathlon_datalist

    from ..bundle.data import DatasetError, prepare_dataset, validate_datalist

    base = prepare_dataset(task, dataset_dir, sections=("training", "validation"), file_keys=("image", "label"),
                           channels={"image": 1, "label": 1}, spatial_dims=spatial_dims, check_load=check_load,
                           demo_kwargs=demo_kwargs)
    js = Path(dataset_dir) / "dataset.json"
    meta = json.loads(js.read_text())
    out: dict[str, list[dict]] = {}
    for name, sec, fallback in (("training", train_section, base["training"]),
                                ("validation", val_section, base["validation"])):
        if sec in meta and meta[sec]:
            raw = load_decathlon_datalist(str(js), is_segmentation=True, data_list_key=sec, base_dir=str(js.parent))
            items = [_split_pair_entry(it, i, sec, str(js)) for i, it in enumerate(raw)]
            validate_datalist(items, PAIR_KEYS, {k: 1 for k in PAIR_KEYS}, spatial_dims, check_load, sec, str(js),
                              grid_groups=(("fixed", "fixed_label"), ("moving", "moving_label")))
        else:
            try:
                items = make_pairs(fallback)
            except ValueError as e:
                raise DatasetError(f"{js}: cannot build {name} registration pairs from {len(fallback)} entries: {e}") from e
        out[name] = items
    logger.info(f"{js}: {len(out['training'])} training and {len(out['validation'])} validation registration pairs")
    return out


def inference_pairs(fixed: str | None = None, moving: str | None = None, dataset_dir: str | os.PathLike | None = None,
                    section: str = "validation") -> list[dict]:
    """Inference datalist ``[{"fixed", "moving"}]``: one pair from ``fixed``/``moving`` files, else consecutive
    pairs of ``dataset_dir``'s ``section`` images."""
    from ..bundle.data import DatasetError, list_inputs

    if fixed or moving:
        if not (fixed and moving):
            raise DatasetError("give both fixed and moving images (or neither, to use dataset_dir).")
        for k, v in (("fixed", fixed), ("moving", moving)):
            if not Path(v).exists():
                raise DatasetError(f"inference input {k!r} not found: {v}")
        return [{"fixed": str(fixed), "moving": str(moving)}]
    items = list_inputs(None, dataset_dir, section=section)
    return [{"fixed": p["fixed"], "moving": p["moving"]} for p in make_pairs(items)]


def split_pair_batch(batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs):
    """``prepare_batch`` for MONAI engines on pair batches (keys ``fixed`` and ``moving``).

    Returns ``(moving, fixed, (fixed,), {})``: the engine computes ``inferer(moving, network, fixed)``
    and ``loss(pred, fixed)``.
    """
    for k in ("fixed", "moving"):
        if k not in batchdata:
            raise KeyError(f"registration batches need 'fixed' and 'moving' images, got keys {sorted(batchdata)}.")
    moving = torch.as_tensor(batchdata["moving"]).to(device=device, non_blocking=non_blocking)
    fixed = torch.as_tensor(batchdata["fixed"]).to(device=device, non_blocking=non_blocking)
    return moving, fixed, (fixed,), {}


class RegistrationInferer(Inferer):
    """``network(moving, fixed, phi=phi)`` -> ``cat([moved, ddf], dim=1)`` (one tensor for MONAI engines).

    Args:
        phi: rescaling factor (None: the network's prior in training / none for a materialised network).
    """

    def __init__(self, phi: float | None = None) -> None:
        self.phi = _check_opt_phi(phi)

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not args:
            raise ValueError("RegistrationInferer needs the fixed image as an extra argument (use split_pair_batch).")
        kw = dict(kwargs)
        if self.phi is not None:
            kw["phi"] = self.phi
        moved, ddf = network(inputs, args[0], **kw)
        return torch.cat([moved, ddf.to(moved.dtype)], dim=1)


class RegistrationLossAdapter(nn.Module):
    """``loss(pred, fixed)`` for engines, with ``pred = cat([moved, ddf])`` split after ``in_channels``.

    Args:
        loss: :class:`monai_hyperconv.losses.RegistrationLoss` (``(moved, fixed, ddf) -> scalar``).
        in_channels: channels of one image.
    """

    def __init__(self, loss: nn.Module, in_channels: int = 1) -> None:
        super().__init__()
        self.loss = loss
        self.in_channels = int(in_channels)

    def forward(self, pred: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        c = self.in_channels
        return self.loss(pred[:, :c], torch.as_tensor(fixed), pred[:, c:])


class SplitRegistrationOutputd(MapTransform):
    """Post-processing: ``pred = [moved, ddf]`` -> ``moved`` and ``ddf``; with ``moving_label`` present
    also ``pred_label`` = the moving labels warped by ``ddf`` (nearest neighbour), and with
    ``fixed_label`` present ``ref_label`` (a copy that MONAI engines keep in their output).

    Args:
        pred_key: key of the engine output. in_channels: channels of one image.
        moving_label_key: key of the moving label map (skipped when absent).
    """

    def __init__(self, pred_key: str = "pred", in_channels: int = 1, moving_label_key: str = "moving_label",
                 fixed_label_key: str = "fixed_label") -> None:
        super().__init__([pred_key])
        self.pred_key, self.in_channels = pred_key, int(in_channels)
        self.moving_label_key, self.fixed_label_key = moving_label_key, fixed_label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        from ..metrics.registration import warp_labels

        d = dict(data)
        pred = d[self.pred_key]
        d["moved"] = pred[: self.in_channels]
        d["ddf"] = pred[self.in_channels:]
        if self.moving_label_key in d and d[self.moving_label_key] is not None:
            lab = torch.as_tensor(d[self.moving_label_key]).to(torch.as_tensor(pred).device)
            d["pred_label"] = warp_labels(lab[None], torch.as_tensor(d["ddf"])[None].float())[0]
        if self.fixed_label_key in d and d[self.fixed_label_key] is not None:
            # a new key: MONAI engines keep new post-processing keys in engine.state.output (batch keys
            # such as fixed_label stay in engine.state.batch), where metric output_transforms look
            d["ref_label"] = torch.as_tensor(d[self.fixed_label_key]).clone()
        return d


class FoldingFraction(CumulativeIterationMetric):
    """MONAI metric: fraction of voxels with a non-positive Jacobian determinant of ``x + ddf(x)``.

    ``y_pred`` is the ddf ``(B, d, *spatial)``; ``y`` is ignored. Use with ``IgniteMetricHandler``
    and ``MetricsSaver`` for per-case values.
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        from ..metrics.registration import folding_fraction

        return folding_fraction(torch.as_tensor(y_pred)).float().reshape(-1, 1)

    def aggregate(self, reduction: str | None = None):  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("the data to aggregate must be a PyTorch Tensor.")
        return data.mean() if (reduction or self.reduction) == "mean" else data


def registration_step(labels: Sequence[int] | None = None, device: str | torch.device | None = None) -> Callable:
    """A ``step_fn`` for :func:`monai_hyperconv.metrics.pareto_sweep` on pair batches:
    ``(net, batch) -> (B,)`` mean warped-label Dice (nearest-neighbour warping of the moving labels).

    Args:
        labels: labels to score (default: every non-zero label in the pair).
        device: where the network is (the batch is moved there).
    """
    from ..metrics.registration import label_dice, warp_labels

    def step(net: Callable, batch: Mapping) -> torch.Tensor:
        moving, fixed, _, _ = split_pair_batch(batch, device)
        _, ddf = net(moving, fixed)
        mov_lab = torch.as_tensor(batch["moving_label"]).to(ddf.device)
        fix_lab = torch.as_tensor(batch["fixed_label"]).to(ddf.device)
        warped = warp_labels(mov_lab, ddf.float())
        ref = fix_lab.round().to(warped.dtype)
        found = torch.unique(torch.cat([mov_lab.flatten(), fix_lab.flatten()]).round())
        labs = labels if labels is not None else [int(v) for v in found.tolist() if int(v) != 0]
        return label_dice(warped, ref, labs).mean(1)

    return step


def identity_registration_dice(pairs: Sequence[Mapping]) -> dict:
    """Trivial registration baseline: no deformation (the moving labels compared with the fixed labels as they are).

    Returns ``{"identity_dice": mean over pairs of the mean foreground Dice, "n": pairs}``.
    """
    from ..metrics.registration import label_dice

    scores = []
    for it in pairs:
        fixed = torch.from_numpy(_load_label(it["fixed_label"]))[None]
        moving = torch.from_numpy(_load_label(it["moving_label"]))[None]
        labs = [int(v) for v in torch.unique(torch.cat([fixed.flatten(), moving.flatten()])).tolist() if v != 0]
        scores.append(float(label_dice(moving, fixed, labs).mean()))
    return {"identity_dice": float(np.mean(scores)), "n": len(scores)}


# ----------------------------------------------------------------------------- writing predictions
class SaveLikeInputd(MapTransform):
    """Write ``key`` (channel-first, one sample) as NIfTI in the geometry of its input file.

    MONAI's ``SaveImaged`` re-derives a 2-D affine from the first two rows of the 4x4 one, which
    is singular for 2-D slices that are not axial (e.g. coronal slices, whose second in-plane
    axis points along world z); this writer copies the input NIfTI's own affine and header
    instead (for a non-NIfTI input, e.g. a DICOM series, the affine from the loaded metadata).
    The output is ``<output_dir>/<input stem>[_<name_key's input stem>]_<postfix>.nii.gz``; the path
    is stored in ``data[key + "_path"]``. Multi-channel arrays (a displacement field) are written
    with the components last, as NIfTI expects.

    Args:
        keys: the prediction key(s).
        output_dir: folder.
        postfix: file name postfix.
        source_key: key whose metadata names the input file (default "image").
        dtype: output dtype (default uint8 for label maps).
        name_key: optional second key whose input file stem is appended (registration: the moving image).
    """

    def __init__(self, keys, output_dir: str | os.PathLike, postfix: str = "seg", source_key: str = "image",
                 dtype: Any = np.uint8, name_key: str | None = None) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.postfix = postfix
        self.source_key = source_key
        self.dtype = dtype
        self.name_key = name_key

    @staticmethod
    def _stem(path: str) -> str:
        stem = os.path.basename(str(path).rstrip("/"))
        for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm"):
            if stem.lower().endswith(ext):
                return stem[: -len(ext)]
        return stem

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        import nibabel as nib

        from ..bundle.results import atomic_write_bytes

        d = dict(data)
        src_obj = d.get(self.source_key)
        meta = getattr(src_obj, "meta", None) or {}
        for key in self.key_iterator(d):
            arr = torch.as_tensor(d[key]).detach().cpu().numpy()
            if arr.ndim >= 2 and arr.shape[0] == 1:
                arr = arr[0]
            elif arr.ndim >= 2:  # vectors (e.g. a displacement field): NIfTI keeps components last
                arr = np.moveaxis(arr, 0, -1)
            src = meta.get("filename_or_obj") or getattr(d[key], "meta", {}).get("filename_or_obj")
            if not src:
                raise ValueError(f"cannot tell the input file of {key!r}: no 'filename_or_obj' in its metadata.")
            src = str(src)
            header = None
            if src.lower().endswith((".nii", ".nii.gz")) and os.path.isfile(src):
                ref = nib.load(src)
                affine, header = ref.affine, ref.header.copy()
                if tuple(arr.shape[: len(ref.shape)]) != tuple(ref.shape):
                    raise ValueError(f"prediction shape {arr.shape} differs from the input {src} {ref.shape}.")
            else:
                aff = np.asarray(torch.as_tensor(meta.get("original_affine", meta.get("affine", np.eye(4)))))
                affine = np.eye(4)
                n = min(aff.shape[0], 4) - 1
                affine[:n, :n], affine[:n, 3] = aff[:n, :n], aff[:n, -1]
            img = nib.Nifti1Image(arr.astype(self.dtype), affine, header)
            img.set_data_dtype(self.dtype)
            stem = self._stem(src)
            if self.name_key is not None:
                other = getattr(d.get(self.name_key), "meta", {}).get("filename_or_obj")
                if other:
                    stem = f"{stem}_{self._stem(str(other))}"
            out = self.output_dir / f"{stem}_{self.postfix}.nii.gz"
            atomic_write_bytes(out, img.to_bytes() if not str(out).endswith(".gz") else _gz(img))
            d[f"{key}_path"] = str(out)
        return d


def _gz(img) -> bytes:
    import gzip

    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)
