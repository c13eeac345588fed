"""HyperMorph (Hoopes et al. 2021, 2022) glue: training with lam drawn per step, the lam sweep, choosing lam.

* :class:`HyperMorphInferer` / :class:`HyperMorphLossAdapter`: MONAI engines. In training the
  inferer draws the knobs from the network's priors, conditions the network on them and appends
  ``lam`` as one constant channel to the output, from which the adapter reads the weight of
  :class:`~monai_hyperconv.losses.HyperMorphLoss` (so the loss always uses the step's own lam).
* :func:`train_hypermorph`: a plain loop on tensors (tests, scripts).
* :func:`evaluate_lambdas` (warped-label Dice per label and mean, folding fraction, Jacobian
  determinant statistics per lam, CSV + PNG), :func:`choose_lambda` (best Dice under a folding
  limit, overall and per label), :class:`LambdaSweep` (the same as an evaluator handler),
  :func:`select_lambda` and :func:`materialized_hypermorph` (inference).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.inferers import Inferer
from torch import nn

from ..losses.hypermorph import check_lam
from ..metrics.registration import jacobian_determinant, label_dice, warp_labels
from .checkpoint import unwrap
from .distributed import is_main_process
from .results import atomic_write_text, markdown_table, write_csv, write_json

logger = logging.getLogger(__name__)

__all__ = ["HyperMorphInferer", "HyperMorphLossAdapter", "train_hypermorph", "evaluate_lambdas", "choose_lambda",
           "read_lambda_csv", "LambdaSweep", "select_lambda", "materialized_hypermorph", "DEFAULT_LAMS"]

#: the default lam grid of the sweep: 0, 0.05, ..., 1
DEFAULT_LAMS = tuple(round(0.05 * i, 2) for i in range(21))


class HyperMorphInferer(Inferer):
    """``network(moving, fixed, lam=...)`` -> ``cat([moved, ddf] (+ [lam]), dim=1)`` for MONAI engines.

    Args:
        lam: the weight to condition on; ``None``: drawn from the network's prior in training, and
            no knob passed in evaluation (a materialised network, or a knob with a default).
        knobs: further fixed knob values (e.g. ``{"phi": 0.5}``).
        return_lam: append ``lam`` as a constant channel (training, for :class:`HyperMorphLossAdapter`).
    """

    def __init__(self, lam: float | None = None, knobs: Mapping[str, float] | None = None,
                 return_lam: bool = False) -> None:
        self.lam = None if lam is None else float(check_lam(lam))
        self.knobs = dict(knobs or {})
        self.return_lam = bool(return_lam)

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not args:
            raise ValueError("HyperMorphInferer needs the fixed image as an extra argument (use split_pair_batch).")
        net = unwrap(network)
        values = dict(self.knobs)
        if self.lam is not None:
            values["lam"] = self.lam
        if getattr(net, "training", False) and hasattr(net, "sample_knobs"):
            values = {**net.sample_knobs(), **values}
        moved, ddf = network(inputs, args[0], **values, **kwargs)
        out = [moved, ddf.to(moved.dtype)]
        if self.return_lam:
            if "lam" not in values:
                raise ValueError("return_lam=True needs a lam: give one, or train a network with a 'lam' knob.")
            out.append(torch.full_like(moved[:, :1], values["lam"]))
        return torch.cat(out, dim=1)

    def __repr__(self) -> str:
        return f"HyperMorphInferer(lam={self.lam}, knobs={self.knobs}, return_lam={self.return_lam})"


class HyperMorphLossAdapter(nn.Module):
    """``loss(pred, fixed)`` for engines with ``pred = cat([moved, ddf, lam])`` (:class:`HyperMorphInferer`
    with ``return_lam=True``): ``loss(moved, fixed, ddf, lam)``.

    Args:
        loss: :class:`~monai_hyperconv.losses.HyperMorphLoss`.
        in_channels: channels of one image.
        spatial_dims: 2 or 3 (the ddf's channels).
    """

    def __init__(self, loss: nn.Module, in_channels: int = 1, spatial_dims: int = 2) -> None:
        super().__init__()
        self.loss = loss
        self.in_channels = int(in_channels)
        self.spatial_dims = int(spatial_dims)

    def forward(self, pred: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        c, d = self.in_channels, self.spatial_dims
        if pred.shape[1] != c + d + 1:
            raise ValueError(f"HyperMorphLossAdapter expects {c + d + 1} channels (moved, ddf, lam), got "
                             f"{pred.shape[1]}: use HyperMorphInferer(return_lam=True) for training.")
        lam = pred[0, c + d].reshape(-1)[0].detach().float()
        return self.loss(pred[:, :c], torch.as_tensor(fixed), pred[:, c:c + d], lam)


def train_hypermorph(net: nn.Module, moving: torch.Tensor, fixed: torch.Tensor, loss: nn.Module, steps: int,
                     lr: float = 1e-3, batch_size: int | None = None, lam: float | None = None,
                     generator: torch.Generator | None = None) -> list[float]:
    """Train on tensors of pairs: each step draws the knobs from the network's priors (``lam ~ U(0, 1)``
    by default) and minimises ``loss(moved, fixed, ddf, lam)``.

    Args:
        net: a :class:`~monai_hyperconv.hypernets.HyperMorph` (or any registration network ``(moving,
            fixed) -> (moved, ddf)`` with a fixed ``lam``, for fixed-lambda baselines).
        moving, fixed: ``(N, C, *spatial)`` pairs.
        loss: :class:`~monai_hyperconv.losses.HyperMorphLoss`.
        steps: optimiser steps (Adam).
        lr: learning rate.
        batch_size: pairs per step, drawn at random (default: all).
        lam: a fixed weight instead of the prior (required for networks without a ``lam`` knob).
        generator: random source of the knob and batch draws.

    Returns:
        The loss of every step.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}.")
    if moving.shape != fixed.shape:
        raise ValueError(f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} differ in shape.")
    knobbed = hasattr(net, "sample_knobs")
    if not knobbed and lam is None:
        raise ValueError(f"{type(net).__name__} has no lam knob: give a fixed lam to train it.")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    n = moving.shape[0]
    history = []
    for _ in range(steps):
        if batch_size is None or batch_size >= n:
            mov, fix = moving, fixed
        else:
            idx = torch.randperm(n, generator=generator)[:batch_size]
            mov, fix = moving[idx], fixed[idx]
        knobs = net.sample_knobs(generator) if knobbed else {}
        if lam is not None:
            knobs["lam"] = float(check_lam(lam))
        moved, ddf = net(mov, fix, **knobs) if knobbed else net(mov, fix)
        value = loss(moved, fix, ddf, knobs["lam"])
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        history.append(float(value.detach()))
    return history


def _batches(data: Any) -> Iterable[Mapping]:
    if isinstance(data, Mapping):
        return [data]
    return data


def _pair_tensors(batch: Mapping, device) -> tuple[torch.Tensor, ...]:
    for k in ("moving", "fixed", "moving_label", "fixed_label"):
        if k not in batch:
            raise KeyError(f"evaluate_lambdas: batches need {k!r} (have {sorted(batch)}).")
    out = []
    for k in ("moving", "fixed", "moving_label", "fixed_label"):
        t = batch[k]
        t = t.as_tensor() if hasattr(t, "as_tensor") else torch.as_tensor(t)  # MetaTensor -> plain tensor
        t = t.to(device)
        out.append(t if t.dim() >= 4 else t[None])  # an unbatched (C, *spatial) pair
    return tuple(out)


@torch.no_grad()
def evaluate_lambdas(
    network: nn.Module,
    data: Any,
    lams: Sequence[float] | None = None,
    labels: Sequence[int] | None = None,
    output_dir: str | os.PathLike | None = None,
    prefix: str = "lambda_sweep",
    device: str | torch.device | None = None,
    title: str = "HyperMorph",
) -> list[dict[str, Any]]:
    """Sweep lam on one trained network (no retraining): per lam, the warped-label Dice per label and
    its mean, the folding fraction (det J <= 0) and the Jacobian determinant's mean / std / min / max.

    Args:
        network: a network ``(moving, fixed, lam=...) -> (moved, ddf)`` (DDP wrappers are unwrapped).
        data: batches (dicts with ``moving``, ``fixed``, ``moving_label``, ``fixed_label``; a
            DataLoader, a list, or one dict).
        lams: weights to evaluate (default :data:`DEFAULT_LAMS`: 0, 0.05, ..., 1).
        labels: labels to score (default: every non-zero label found in the data).
        output_dir: if given, writes ``<prefix>.csv``, ``<prefix>.md`` and ``<prefix>.png`` (rank 0).
        prefix: file name stem.
        device: where the network runs (default: its parameters' device).
        title: plot title.

    Returns:
        One row per lam: ``lam``, ``dice_mean``, ``dice_<label>``..., ``folding``, ``jac_det_mean``,
        ``jac_det_std``, ``jac_det_min``, ``jac_det_max``, ``n_pairs``.
    """
    net = unwrap(network)
    was_training = net.training
    net.eval()
    if device is None:
        p = next(iter(net.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    lams = [float(check_lam(v, "lams[...]")) for v in (DEFAULT_LAMS if lams is None else lams)]
    if not lams:
        raise ValueError("lams must hold at least one value.")
    batches = [_pair_tensors(b, device) for b in _batches(data)]
    if not batches:
        raise ValueError("evaluate_lambdas: no data.")
    if labels is None:
        found = torch.unique(torch.cat([torch.cat([b[2].flatten(), b[3].flatten()]).round().cpu() for b in batches]))
        labels = [int(v) for v in found.tolist() if int(v) != 0]
    labels = [int(v) for v in labels]
    rows = []
    try:
        for lam in lams:
            dices, folds, dets = [], [], []
            for mov, fix, mov_lab, fix_lab in batches:
                _, ddf = net(mov, fix, lam=lam)
                warped = warp_labels(mov_lab, ddf.float())
                dices.append(label_dice(warped, fix_lab.round().to(warped.dtype), labels))
                det = jacobian_determinant(ddf.float())
                folds.append((det <= 0).flatten(1).double().mean(1))
                dets.append(det.flatten())
            d = torch.cat(dices)  # (pairs, labels)
            det = torch.cat(dets)
            row: dict[str, Any] = {"lam": lam, "dice_mean": float(d.mean()) if d.numel() else float("nan")}
            row.update({f"dice_{lab}": float(d[:, i].mean()) for i, lab in enumerate(labels)})
            row.update(folding=float(torch.cat(folds).mean()), jac_det_mean=float(det.mean()),
                       jac_det_std=float(det.std()) if det.numel() > 1 else 0.0,
                       jac_det_min=float(det.min()), jac_det_max=float(det.max()), n_pairs=int(d.shape[0]))
            rows.append(row)
    finally:
        net.train(was_training)
    if output_dir is not None and is_main_process():
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(rows, out / f"{prefix}.csv")
        atomic_write_text(out / f"{prefix}.md", f"# {title}: registration quality over lam\n\n" + markdown_table(rows) + "\n")
        _plot_sweep(rows, labels, out / f"{prefix}.png", title)
    return rows


def _plot_sweep(rows: Sequence[Mapping[str, Any]], labels: Sequence[int], path: Path, title: str) -> str:
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from .results import atomic_write_bytes

    lams = [r["lam"] for r in rows]
    fig = Figure(figsize=(9, 3.6))
    a, b = fig.subplots(1, 2)
    for lab in labels:
        a.plot(lams, [r[f"dice_{lab}"] for r in rows], lw=0.8, alpha=0.5, label=f"label {lab}")
    a.plot(lams, [r["dice_mean"] for r in rows], "k-o", ms=3, lw=2, label="mean")
    a.set_xlabel("lam")
    a.set_ylabel("warped-label Dice")
    a.legend(fontsize=6, ncol=2)
    b.plot(lams, [100 * r["folding"] for r in rows], "r-o", ms=3, label="folding (% det J <= 0)")
    b.set_xlabel("lam")
    b.set_ylabel("folding (%)", color="r")
    b2 = b.twinx()
    b2.plot(lams, [r["jac_det_std"] for r in rows], "b--", label="std det J")
    b2.set_ylabel("std of det J", color="b")
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return atomic_write_bytes(path, buf.getvalue())


def read_lambda_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a sweep CSV written by :func:`evaluate_lambdas` (numbers as floats)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"lam sweep table not found: {p} (run the evaluation first).")
    with open(p, newline="") as fh:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    if not rows or "lam" not in rows[0]:
        raise ValueError(f"{p} is not a lam sweep table (no rows or no 'lam' column).")
    return rows


def choose_lambda(results: Sequence[Mapping[str, Any]] | str | os.PathLike, max_folding: float = 0.01) -> dict[str, Any]:
    """The best-Dice lam whose folding fraction is at most ``max_folding``, overall and per label.

    Args:
        results: rows of :func:`evaluate_lambdas`, or the path of its CSV.
        max_folding: largest tolerated fraction of voxels with det J <= 0 (e.g. 0.01 = 1 %).

    Returns:
        ``{"lam", "dice", "folding", "max_folding", "per_label": {label: {"lam", "dice", "folding"}}}``;
        ties go to the row with less folding.

    Raises:
        ValueError: no row within the folding limit (the message gives the least folding seen).
    """
    rows = read_lambda_csv(results) if isinstance(results, (str, os.PathLike)) else list(results)
    if not rows:
        raise ValueError("choose_lambda: no results.")
    if not (isinstance(max_folding, (int, float)) and 0.0 <= max_folding <= 1.0):
        raise ValueError(f"max_folding must be a fraction in [0, 1], got {max_folding!r}.")
    ok = [r for r in rows if float(r["folding"]) <= max_folding]
    if not ok:
        least = min(rows, key=lambda r: float(r["folding"]))
        raise ValueError(f"no lam keeps the folding fraction <= {max_folding:g}: the least is "
                         f"{float(least['folding']):.4g} at lam {float(least['lam']):g}.")

    def best(key: str) -> dict[str, float]:
        cand = [r for r in ok if not math.isnan(float(r[key]))]
        r = max(cand, key=lambda r: (float(r[key]), -float(r["folding"])))
        return {"lam": float(r["lam"]), "dice": float(r[key]), "folding": float(r["folding"])}

    overall = best("dice_mean")
    per_label = {k[len("dice_"):]: best(k) for k in rows[0] if k.startswith("dice_") and k != "dice_mean"}
    return {**overall, "max_folding": float(max_folding), "per_label": per_label}


class LambdaSweep:
    """Evaluator handler: :func:`evaluate_lambdas` at ``COMPLETED`` and :func:`choose_lambda`, writing
    ``<prefix>.csv/.md/.png`` and ``<prefix>_choice.json`` into ``output_dir`` (rank 0).

    Args:
        network: the trained HyperMorph network. data: re-iterable of pair batches.
        output_dir: where to write. lams: the grid (default 0..1 step 0.05). labels: labels to score.
        max_folding: folding limit of the choice. prefix: file stem. device: where to run.
    """

    def __init__(self, network: nn.Module, data: Any, output_dir: str | os.PathLike,
                 lams: Sequence[float] | None = None, labels: Sequence[int] | None = None, max_folding: float = 0.01,
                 prefix: str = "lambda_sweep", device: str | torch.device | None = None) -> None:
        self.network, self.data, self.output_dir = network, data, Path(output_dir)
        self.lams, self.labels, self.max_folding = lams, labels, float(max_folding)
        self.prefix, self.device = prefix, device
        self.table: list[dict[str, Any]] = []
        self.choice: dict[str, Any] = {}

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, lambda e: self.run())

    def run(self) -> list[dict[str, Any]]:
        self.table = evaluate_lambdas(self.network, self.data, self.lams, self.labels, self.output_dir, self.prefix,
                                      self.device)
        try:
            self.choice = choose_lambda(self.table, self.max_folding)
        except ValueError as e:
            self.choice = {"max_folding": self.max_folding, "error": str(e)}
        if is_main_process():
            write_json(self.choice, self.output_dir / f"{self.prefix}_choice.json")
        logger.info(f"lam sweep written to {self.output_dir / (self.prefix + '.csv')}; choice: {self.choice}")
        return self.table


def select_lambda(lam: float | None = None, choice_json: str | os.PathLike | None = None, label: str | None = None,
                  default: float = 0.5) -> float:
    """The lam to deploy: ``lam`` if given; else the evaluation's choice (``<prefix>_choice.json``,
    overall or for one ``label``) if that file exists; else ``default``."""
    import json

    if lam is not None:
        return float(check_lam(lam))
    if choice_json is not None and Path(choice_json).is_file():
        choice = json.loads(Path(choice_json).read_text())
        if "error" in choice:
            raise ValueError(f"{choice_json}: the evaluation found no lam within its folding limit: {choice['error']}")
        if label is not None:
            per = choice.get("per_label", {})
            if str(label) not in per:
                raise ValueError(f"{choice_json}: no choice for label {label!r} (labels: {sorted(per)}).")
            return float(per[str(label)]["lam"])
        return float(choice["lam"])
    return float(check_lam(default, "default"))


def materialized_hypermorph(network: nn.Module, lam: float, knobs: Mapping[str, float] | None = None,
                            device: str | torch.device | None = None) -> nn.Module:
    """``network.materialize(lam=lam, **knobs)`` in eval mode: a plain registration network
    ``(moving, fixed) -> (moved, ddf)`` with no hypernetwork."""
    net = unwrap(network)
    mat = net.materialize(lam=float(check_lam(lam)), **dict(knobs or {}))
    return mat.to(device).eval() if device is not None else mat.eval()
