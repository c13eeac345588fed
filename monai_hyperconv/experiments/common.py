"""What the experiments share: the one training loop, its batch samplers, seeding, summaries, figures, data lists."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..utils import atomic_write

__all__ = ["train_loop", "epoch_batches", "random_batches", "set_seed", "mean_std", "sync", "save_figure",
           "read_data_list", "labelled_items", "data_path", "scale_parser", "apply_scale"]


def train_loop(net: nn.Module, opt: torch.optim.Optimizer, batches: Iterable[Any],
               loss_of: Callable[[int, Any], torch.Tensor], scheduler: Any = None,
               clip_value: Optional[float] = None) -> List[float]:
    """The experiments' one optimisation loop; returns the loss of every step.

    ``net.train()``, then for each item of ``batches`` (``step`` counts from 0): zero the gradients,
    ``loss = loss_of(step, item)``, backward, clip the gradients to ``clip_value`` (if given), optimiser
    step, ``scheduler.step()`` (if given; per step: a per-epoch schedule is stepped by the caller).
    ``batches`` may be lazy (:func:`random_batches`), so random draws keep their order relative to
    those ``loss_of`` makes (augmentations).
    """
    net.train()
    losses: List[float] = []
    for step, item in enumerate(batches):
        opt.zero_grad(set_to_none=True)
        loss = loss_of(step, item)
        loss.backward()
        if clip_value is not None:
            torch.nn.utils.clip_grad_value_(net.parameters(), clip_value)
        opt.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(float(loss.detach()))
    return losses


def epoch_batches(n: int, batch: int, gen: torch.Generator, min_size: int = 2) -> List[torch.Tensor]:
    """One epoch: a permutation of ``range(n)`` from ``gen`` cut into batches; batches smaller than
    ``min_size`` are dropped (batch norm needs two samples)."""
    perm = torch.randperm(n, generator=gen)
    return [idx for idx in (perm[i:i + batch] for i in range(0, n, batch)) if len(idx) >= min_size]


def random_batches(n: int, batch: int, steps: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """``steps`` batches of ``min(batch, n)`` indices drawn with replacement from ``gen``, lazily."""
    for _ in range(steps):
        yield torch.randint(0, n, (min(batch, n),), generator=gen)


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def mean_std(vals: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for one value, NaN for none)."""
    v = np.asarray([float(a) for a in vals], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def sync(device: torch.device) -> None:
    """Wait for the device (CUDA) so wall-clock timings cover the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def save_figure(fig: Any, path: str, **savefig_kwargs: Any) -> str:
    """``fig.savefig`` to ``path`` atomically (temporary file, then rename); returns the path."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, **savefig_kwargs))


def read_data_list(data_dir: str, what: str = "") -> Tuple[Path, Path, Dict[str, Any]]:
    """``(folder, its dataset.json, the parsed data list)`` of an MSD-style folder.

    Raises:
        FileNotFoundError: no ``dataset.json`` in ``data_dir`` (the message starts with ``what``, e.g. ``"--data "``).
    """
    root = Path(data_dir)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{what}{data_dir}: no dataset.json there (an MSD-style data list is expected).")
    return root, meta_path, json.loads(meta_path.read_text())


def labelled_items(meta: Dict[str, Any], section: str = "training",
                   keys: Sequence[str] = ("image", "label")) -> List[dict]:
    """The items of a data list section that have all of ``keys``."""
    return [it for it in meta.get(section, []) or [] if isinstance(it, dict) and all(k in it for k in keys)]


def data_path(root: Path, p: str) -> str:
    """A data list path: absolute as it is, else relative to the data list's folder."""
    return str(p if os.path.isabs(p) else root / p)


def scale_parser(description: str, default_out: str, defaults: Dict[str, Any], smoke: Dict[str, Any],
                 list_args: Dict[str, Callable]) -> "argparse.ArgumentParser":
    """The arguments the brain-demo experiments share: ``--data --demo-dir --out --smoke --lr``, one
    option per scale setting in ``defaults`` (``None`` until :func:`apply_scale` fills it from
    ``defaults`` or ``smoke``; ``list_args``: the settings that take several values, with their type),
    and ``--seed --device --threads`` (added by the caller after its own options, see :func:`apply_scale`)."""
    import argparse

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="MSD-style folder with dataset.json (default: the demo brain_seg set)")
    p.add_argument("--demo-dir", default=None, help="keep the generated demo set here (default: a temporary folder)")
    p.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")
    p.add_argument("--smoke", action="store_true", help="tiny run in seconds (pipeline check only)")
    for k, v in defaults.items():
        flag = "--" + k.replace("_", "-")
        if k in list_args:
            p.add_argument(flag, type=list_args[k], nargs="+", default=None, help=f"default {v} (smoke {smoke[k]})")
        else:
            p.add_argument(flag, type=int, default=None, help=f"default {v} (smoke {smoke[k]})")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3, the bundles')")
    return p


def apply_scale(p: "argparse.ArgumentParser", argv: Optional[Sequence[str]], defaults: Dict[str, Any],
                smoke: Dict[str, Any]) -> "argparse.Namespace":
    """Add ``--seed --device --threads``, parse ``argv`` and fill the unset scale settings from
    ``smoke`` (with ``--smoke``) or ``defaults``; ``--size`` must have two numbers."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    for k, v in (smoke if args.smoke else defaults).items():
        if getattr(args, k) is None:
            setattr(args, k, list(v) if isinstance(v, list) else v)
    if len(getattr(args, "size", (0, 0))) != 2:
        p.error("--size takes two numbers (H W).")
    return args
