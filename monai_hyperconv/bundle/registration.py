"""Bundle glue for registration (VoxelMorph-style, Balakrishnan et al. 2019; scale-space backbones of
Gonzalez Ortiz et al. 2023) in MONAI engines: pair data lists, a ``prepare_batch`` for pairs, the
inferer and loss adapter that carry the fixed image, and a Pareto-sweep step.

* :func:`registration_datalists` (pairs, checked before training), :func:`inference_pairs`,
  :func:`make_pairs`, :data:`PAIR_KEYS`;
* :func:`split_pair_batch`, :class:`RegistrationInferer`, :class:`RegistrationLossAdapter`;
* :func:`registration_step` (``step_fn`` of :func:`monai_hyperconv.metrics.pareto_sweep`).

Post-processing and metrics live below the bundle layer:
:class:`monai_hyperconv.transforms.SplitRegistrationOutputd`,
:class:`monai_hyperconv.metrics.FoldingFraction`, the baselines
:func:`monai_hyperconv.metrics.majority_atlas_dice` and :func:`monai_hyperconv.metrics.identity_registration_dice`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.inferers import Inferer
from torch import nn

from ..metrics.registration import label_dice, warp_labels
from .data import DatasetError, list_inputs, prepare_dataset, validate_datalist
from .scale_space import _check_opt_phi

logger = logging.getLogger(__name__)

__all__ = ["PAIR_KEYS", "make_pairs", "registration_datalists", "inference_pairs", "split_pair_batch",
           "RegistrationInferer", "RegistrationLossAdapter", "registration_step"]


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


def registration_step(labels: Sequence[int] | None = None, device: str | torch.device | None = None) -> Callable:
    """A ``step_fn`` for :func:`monai_hyperconv.metrics.pareto_sweep` on pair batches:
    ``(net, batch) -> (B,)`` mean warped-label Dice (nearest-neighbour warping of the moving labels).

    Args:
        labels: labels to score (default: every non-zero label in the pair).
        device: where the network is (the batch is moved there).
    """
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
