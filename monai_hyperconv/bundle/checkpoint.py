"""Atomic, resumable checkpoints for ignite/MONAI engines.

* :class:`CheckpointManager` (attach to the trainer): every ``save_interval`` epochs writes
  ``{network, optimizer, lr_scheduler, trainer, ...}`` to ``save_dir/checkpoint_last.pt``
  through a temporary file and ``os.replace`` (a crash never leaves a half-written file); with
  ``resume=True`` it loads that file when the trainer starts, so a re-run continues at the next
  epoch (up to the configured ``max_epochs``).
  The checkpoint also holds the random states (torch, CUDA, numpy, python and every random
  transform of the trainer's data set), so a resumed run continues bit-identically to an
  uninterrupted one.
* :class:`BestModelSaver` (attach to the validation evaluator): writes the network's
  ``state_dict`` to ``save_dir/model.pt`` (the model-zoo file) atomically whenever the key
  metric improves; its state (best value and epoch) is part of the last checkpoint. The
  network's definition (``network_def``) is saved next to it as ``save_dir/model.json`` and in the
  last checkpoint (``"network_def"``), so inference can tell which network the weights belong to.

Both only write on rank 0 and save the un-wrapped network of a DDP model, so single- and
multi-process checkpoints are interchangeable; neither ever writes a network with NaN/inf
weights (:class:`~monai_hyperconv.bundle.guards.NonFiniteError`). MONAI's ``CheckpointSaver`` is
not atomic (it sets ``atomic=False``), hence these.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils import as_bool, atomic_write
from .distributed import is_main_process
from .guards import assert_finite
from .network_def import NETWORK_DEF_KEY, check_network_def, network_def_of, write_network_def

__all__ = ["atomic_save", "unwrap", "CheckpointManager", "BestModelSaver", "RNG_KEY", "random_states",
           "set_random_states", "random_transforms"]

#: checkpoint key of the random states
RNG_KEY = "rng_states"

logger = logging.getLogger(__name__)


def atomic_save(obj: Any, path: str | os.PathLike) -> str:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` it onto ``path``."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def unwrap(obj: Any) -> Any:
    """The module inside ``DistributedDataParallel`` / ``DataParallel``; anything else as is."""
    if isinstance(obj, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        return obj.module
    return obj


def _state(obj: Any) -> Any:
    obj = unwrap(obj)
    return obj.state_dict() if hasattr(obj, "state_dict") else obj


def random_transforms(obj: Any) -> list[Any]:
    """Every MONAI ``Randomizable`` reachable from ``obj`` (a data loader, data set, ``Compose`` or
    transform), in a fixed order: the objects whose ``R`` generators a resumed run must restore."""
    from monai.transforms import Randomizable

    out: list[Any] = []
    seen: set[int] = set()

    def visit(o: Any, depth: int) -> None:
        if o is None or id(o) in seen or depth > 8 or isinstance(o, (str, bytes, int, float, torch.Tensor, np.ndarray)):
            return
        seen.add(id(o))
        if isinstance(o, Randomizable):
            out.append(o)
        if isinstance(o, (list, tuple)):
            for v in o:
                visit(v, depth + 1)
            return
        for attr in ("dataset", "transform", "transforms"):
            if hasattr(o, attr) and not callable(getattr(type(o), attr, None)):
                visit(getattr(o, attr), depth + 1)
        if isinstance(o, Randomizable):  # wrapped array transforms (e.g. RandCropByPosNegLabeld.cropper)
            for v in vars(o).values():
                if isinstance(v, Randomizable) or (isinstance(v, (list, tuple)) and any(isinstance(x, Randomizable) for x in v)):
                    visit(v, depth + 1)

    visit(obj, 0)
    return out


def _np_state(state: tuple) -> dict[str, Any]:
    # tensors and plain numbers only, so the checkpoint stays loadable with torch.load(weights_only=True)
    kind, key, pos, has_gauss, cached = state
    return {"kind": str(kind), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _np_tuple(state: Mapping[str, Any]) -> tuple:
    return (state["kind"], state["key"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached_gaussian"])


def random_states(data_source: Any = None) -> dict[str, Any]:
    """The global random states (torch, CUDA, numpy, python) and those of ``data_source``'s random transforms."""
    out: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": _np_state(np.random.get_state()),
                           "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    tr = random_transforms(data_source) if data_source is not None else []
    out["transforms"] = [(type(t).__name__, _np_state(t.R.get_state())) for t in tr]
    return out


def set_random_states(states: Mapping[str, Any], data_source: Any = None) -> None:
    """Restore :func:`random_states` (the transforms' only if the same transform classes are found)."""
    torch.set_rng_state(states["torch"])
    np.random.set_state(_np_tuple(states["numpy"]))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    saved = states.get("transforms", [])
    tr = random_transforms(data_source) if data_source is not None else []
    if [name for name, _ in saved] != [type(t).__name__ for t in tr]:
        if saved or tr:
            logger.warning("the random transforms differ from the checkpoint's (the data pipeline changed): their "
                           "random states are not restored, so this resumed run is not bit-identical to an uninterrupted one.")
        return
    for t, (_, st) in zip(tr, saved):
        t.R.set_state(_np_tuple(st))


class CheckpointManager:
    """Save the whole training state atomically every epoch; optionally resume from it.

    Args:
        save_dir: folder (``<bundle_root>/models``).
        save_dict: objects with ``state_dict``/``load_state_dict``, e.g. ``{"network": net,
            "optimizer": opt, "lr_scheduler": sched, "best": best_saver}``. The engine it is
            attached to is added as ``trainer_key`` (its state holds epoch and iteration), so a
            config can list the manager among the trainer's own handlers without a circular reference.
        resume: load ``save_dir/filename`` when the engine starts, if it exists.
        filename: checkpoint file name.
        save_interval: save every N epochs (and always after the last one).
        map_location: ``torch.load`` map location (default CPU, then ``load_state_dict`` moves
            tensors to the module's device).
        strict: strict loading of network weights.
        trainer_key: key under which the attached engine is saved (None: don't save it).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        resume: bool = False,
        filename: str = "checkpoint_last.pt",
        save_interval: int = 1,
        map_location: Any = "cpu",
        strict: bool = True,
        trainer_key: str | None = "trainer",
    ) -> None:
        self.trainer_key = trainer_key
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.resume = as_bool(resume, "resume")  # --resume false arrives as the string 'false'
        self.filename = filename
        self.save_interval = max(1, int(save_interval))
        self.map_location = map_location
        self.strict = strict
        self.resumed_from: int | None = None

    @property
    def path(self) -> Path:
        return self.save_dir / self.filename

    def attach(self, engine) -> None:
        from ignite.engine import Events

        if self.trainer_key is not None:
            self.save_dict.setdefault(self.trainer_key, engine)
        engine.add_event_handler(Events.STARTED, self._load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._save)

    def state(self) -> dict[str, Any]:
        """``{key: state_dict}`` of every object, plus ``"epoch"`` (the trainer's, for humans and tools)."""
        out = {k: _state(v) for k, v in self.save_dict.items()}
        eng = self.save_dict.get(self.trainer_key) if self.trainer_key else None
        if eng is not None and hasattr(eng, "state"):
            out["epoch"] = int(eng.state.epoch)
        out[RNG_KEY] = random_states(self._data_source())
        net_def = self._network_def()
        if net_def is not None:
            out[NETWORK_DEF_KEY] = net_def
        return out

    def _network_def(self) -> dict[str, Any] | None:
        """The definition of the first network in ``save_dict`` that has one (see ``network_def_of``)."""
        for obj in self.save_dict.values():
            if isinstance(unwrap(obj), torch.nn.Module):
                d = network_def_of(obj)
                if d is not None:
                    return d
        return None

    def _data_source(self) -> Any:
        eng = self.save_dict.get(self.trainer_key) if self.trainer_key else None
        return getattr(eng, "data_loader", None)

    def save(self) -> str | None:
        """Write the checkpoint now (rank 0 only); returns its path or None on other ranks."""
        if not is_main_process():
            return None
        state = self.state()
        for k, obj in self.save_dict.items():
            if isinstance(unwrap(obj), torch.nn.Module):
                assert_finite(state[k], f"checkpoint {self.path} ({k!r})")
        return atomic_save(state, self.path)

    def _save(self, engine) -> None:
        ep = engine.state.epoch
        if ep % self.save_interval == 0 or ep >= (engine.state.max_epochs or ep):
            p = self.save()
            if p:
                logger.info(f"epoch {ep}: saved checkpoint {p}")

    def load(self, path: str | os.PathLike | None = None) -> int | None:
        """Load a checkpoint into the objects of ``save_dict``; returns the epoch it was saved at."""
        path = Path(path) if path is not None else self.path
        ckpt = torch.load(path, map_location=self.map_location, weights_only=False)
        missing = [k for k in self.save_dict if k not in ckpt]
        if missing:
            raise KeyError(f"checkpoint {path} lacks {missing} (has {sorted(ckpt)}).")
        from ignite.engine import Engine

        epoch = None
        for k, obj in self.save_dict.items():
            tgt = unwrap(obj)
            if isinstance(tgt, Engine):
                prior_max = tgt.state.max_epochs
                tgt.load_state_dict(ckpt[k])
                if prior_max is not None:
                    tgt.state.max_epochs = prior_max  # the configured --epochs wins over the saved one
                epoch = int(tgt.state.epoch)
            elif isinstance(tgt, torch.nn.Module):
                if self.strict:
                    check_network_def(tgt, path, ckpt=ckpt, key=k)
                tgt.load_state_dict(ckpt[k], strict=self.strict)
            else:
                tgt.load_state_dict(ckpt[k])
        if RNG_KEY in ckpt:
            set_random_states(ckpt[RNG_KEY], self._data_source())
        else:
            logger.warning(f"checkpoint {path} has no random states (saved by an older version): the resumed run "
                           f"is not bit-identical to an uninterrupted one.")
        return epoch

    def _load(self, engine) -> None:
        if is_main_process():
            from .preflight import remove_stale_temp_files

            remove_stale_temp_files(self.save_dir)
        if not self.resume:
            return
        if not self.path.is_file():
            logger.info(f"resume requested but {self.path} does not exist: training from scratch.")
            return
        self.resumed_from = self.load()
        ep = engine.state.epoch
        logger.info(f"resumed from {self.path} at epoch {ep} (iteration {engine.state.iteration}); "
                    f"training to max_epochs {engine.state.max_epochs}.")
        if engine.state.max_epochs is not None and ep >= engine.state.max_epochs:
            logger.info("the checkpoint already reached max_epochs: nothing to train (raise --epochs to continue).")


class BestModelSaver:
    """Save the network when the evaluator's key metric improves (atomically, rank 0 only).

    Args:
        save_dir: folder (``<bundle_root>/models``).
        network: the network (DDP wrappers are unwrapped).
        metric_name: metric in ``engine.state.metrics``; default the evaluator's key metric.
        mode: "max" (Dice, accuracy) or "min" (a loss).
        filename: file name (``model.pt``: a plain ``state_dict``, loadable by MONAI's
            ``CheckpointLoader(load_dict={"model": net})``); the network's definition goes to the
            sidecar ``model.json`` (written first, atomically; see ``bundle.network_def``).
    """

    def __init__(self, save_dir: str | os.PathLike, network: torch.nn.Module, metric_name: str | None = None,
                 mode: str = "max", filename: str = "model.pt") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}.")
        self.save_dir = Path(save_dir)
        self.network = network
        self.metric_name = metric_name
        self.mode = mode
        self.filename = filename
        self.best_metric = -math.inf if mode == "max" else math.inf
        self.best_epoch = -1

    @property
    def path(self) -> Path:
        return self.save_dir / self.filename

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def state_dict(self) -> dict[str, Any]:
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch, "metric_name": self.metric_name, "mode": self.mode}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_metric = float(state["best_metric"])
        self.best_epoch = int(state["best_epoch"])

    def __call__(self, engine) -> None:
        name = self.metric_name or getattr(engine.state, "key_metric_name", None)
        if name is None or name not in engine.state.metrics:
            raise KeyError(f"metric {name!r} not in the evaluator's metrics {sorted(engine.state.metrics)}.")
        value = float(engine.state.metrics[name])
        better = value > self.best_metric if self.mode == "max" else value < self.best_metric
        if better and math.isfinite(value):
            self.best_metric, self.best_epoch = value, int(engine.state.epoch)
            if is_main_process():
                state = _state(self.network)
                assert_finite(state, f"the best model {self.path}")
                net_def = network_def_of(self.network)
                if net_def is not None:  # first, so model.pt never sits next to another network's definition
                    write_network_def(self.path, net_def, best_epoch=self.best_epoch, best_metric={name: value})
                atomic_save(state, self.path)
                logger.info(f"epoch {self.best_epoch}: new best {name} = {value:.4f}, saved {self.path}")
        engine.state.best_metric, engine.state.best_metric_epoch = self.best_metric, self.best_epoch
