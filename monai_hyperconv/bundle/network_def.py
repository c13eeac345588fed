"""Checkpoints that know their network.

A network built by :func:`monai_hyperconv.networks.create_network` carries its definition
(``network_def``: ``{"_target_": ..., "name": ..., **kwargs}``). Training saves it, JSON, with the
weights: :class:`~monai_hyperconv.bundle.BestModelSaver` writes ``models/model.json`` next to
``models/model.pt`` (which stays a plain ``state_dict`` for MONAI's ``CheckpointLoader``), and
:class:`~monai_hyperconv.bundle.CheckpointManager` adds a ``"network_def"`` entry to
``checkpoint_last.pt``.

Inference, evaluation and export build their network through :func:`resolve_network`:

* weights that do not fit the configured network raise :class:`NetworkDefMismatchError`, which
  names the definition keys that differ (checkpoint vs config), the override that fixes each
  (``--network_def#channels 8``), config files the training used and this run lacks
  (``configs/demo.json``), and ``--use_saved_network_def true``;
* with ``use_saved=True`` the saved definition is built instead of the configured one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..utils import atomic_write

__all__ = ["NETWORK_DEF_KEY", "NetworkDefMismatchError", "network_def_of", "sidecar_path", "write_network_def",
           "saved_network_def", "read_state_dict", "diff_network_defs", "check_network_def", "build_network",
           "resolve_network"]

logger = logging.getLogger(__name__)

#: key of the definition in ``checkpoint_last.pt`` and in the ``model.json`` sidecar
NETWORK_DEF_KEY = "network_def"
#: definition keys that do not change what a network in eval mode computes (a difference is only logged)
EVAL_NEUTRAL_KEYS = frozenset({"dropout"})
_NESTED_KEYS = ("network", "model", "state_dict", "net")


class NetworkDefMismatchError(RuntimeError):
    """The checkpoint's weights do not fit the configured network (names both definitions' differences)."""


def _jsonable(value: Any) -> Any:
    """``value`` as JSON types; anything else as ``{"_repr_": repr(value)}`` (comparable, not rebuildable)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, torch.nn.Module):
        inner = getattr(value, "network_def", None)
        return _jsonable(inner) if isinstance(inner, Mapping) else {"_repr_": type(value).__qualname__}
    return {"_repr_": repr(value)}


def _unwrap(net: Any) -> Any:
    if isinstance(net, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        return net.module
    return net


def network_def_of(network: torch.nn.Module) -> dict[str, Any] | None:
    """The JSON-serialisable definition of ``network`` (None when it was not built by ``create_network``).

    A wrapper around such a network (e.g. MONAI's ``SkipConnection``) gives the inner network's
    definition with ``"_submodule_": <its attribute path>``.
    """
    net = _unwrap(network)
    d = getattr(net, "network_def", None)
    if isinstance(d, Mapping):
        return _jsonable(d)
    if isinstance(net, torch.nn.Module):
        for name, sub in net.named_modules():
            d = getattr(sub, "network_def", None)
            if name and isinstance(d, Mapping):
                return {**_jsonable(d), "_submodule_": name}
    return None


def sidecar_path(ckpt_file: str | os.PathLike) -> Path:
    """``models/model.pt`` -> ``models/model.json``: where the definition of a plain ``state_dict`` is kept."""
    p = Path(ckpt_file)
    return p.with_name(p.stem + ".json")


def _training_command() -> dict[str, Any]:
    """The config files and overrides of this ``python -m monai.bundle run`` command line (empty otherwise)."""
    from .preflight import _as_list, cli_overrides

    cli = cli_overrides()
    if cli is None:
        return {}
    run_args, overrides = cli
    out: dict[str, Any] = {}
    if run_args.get("config_file"):
        out["config_file"] = _as_list(run_args["config_file"])
    if overrides:
        out["overrides"] = _jsonable(overrides)
    return out


def write_network_def(ckpt_file: str | os.PathLike, network_def: Mapping[str, Any], **extra: Any) -> str:
    """Write ``{"network_def": ..., "config_file": [...], ...}`` to :func:`sidecar_path` atomically.

    The config files and overrides of the current ``monai.bundle run`` command line are recorded
    too, so a mismatch can name the files a later run lacks.
    """
    info = {NETWORK_DEF_KEY: _jsonable(dict(network_def)), "weights": Path(ckpt_file).name,
            **_training_command(), **_jsonable(extra)}
    text = json.dumps(info, indent=2, sort_keys=False)

    def _write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text + "\n")

    return atomic_write(sidecar_path(ckpt_file), _write)


def _sidecar(ckpt_file: str | os.PathLike) -> dict[str, Any] | None:
    side = sidecar_path(ckpt_file)
    if not side.is_file():
        return None
    try:
        info = json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{side} (the network definition of {ckpt_file}) is not valid JSON: {e}") from e
    if not isinstance(info, Mapping) or not isinstance(info.get(NETWORK_DEF_KEY), Mapping):
        raise ValueError(f"{side} has no {NETWORK_DEF_KEY!r} object (keys: {sorted(info) if isinstance(info, Mapping) else info!r}).")
    return dict(info)


def _load(ckpt_file: str | os.PathLike) -> Any:
    if not Path(ckpt_file).is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt_file} (train first, or pass --ckpt_file).")
    return torch.load(ckpt_file, map_location="cpu", weights_only=False)


def _saved_info(ckpt_file: str | os.PathLike, ckpt: Any = None) -> dict[str, Any] | None:
    info = _sidecar(ckpt_file)
    if info is not None:
        return info
    ckpt = _load(ckpt_file) if ckpt is None else ckpt
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get(NETWORK_DEF_KEY), Mapping):
        return {NETWORK_DEF_KEY: dict(ckpt[NETWORK_DEF_KEY])}
    return None


def saved_network_def(ckpt_file: str | os.PathLike) -> dict[str, Any] | None:
    """The definition saved with ``ckpt_file``: its ``.json`` sidecar (``model.pt``) or its
    ``"network_def"`` entry (``checkpoint_last.pt``); None for a checkpoint saved without one."""
    info = _saved_info(ckpt_file)
    return None if info is None else dict(info[NETWORK_DEF_KEY])


def read_state_dict(ckpt: Any, key: str | None = None) -> Mapping[str, torch.Tensor]:
    """The network weights of a loaded checkpoint: a plain ``state_dict``, a nested one
    (``{"network": ...}``, ``{"model": ...}``) or one of a DDP model (``module.`` prefixes stripped)."""
    sd: Any = ckpt
    if key is not None:
        sd = sd[key]
    elif isinstance(sd, Mapping) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
        for k in _NESTED_KEYS:
            if k in sd:
                sd = sd[k]
                break
    if any(k.startswith("module.") for k in sd):
        sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    return sd


def diff_network_defs(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved value, current value)}`` for every top-level key whose values differ (absent: None)."""
    a, b = _jsonable(dict(saved)), _jsonable(dict(current))
    return {k: (a.get(k), b.get(k)) for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)}


def _misfit(network: torch.nn.Module, sd: Mapping[str, Any]) -> list[str]:
    """Why ``sd`` does not load strictly into ``network`` (missing/unexpected keys, shapes); empty if it does."""
    own = _unwrap(network).state_dict()
    out = []
    for k, v in own.items():
        if k not in sd:
            out.append(f"{k}: missing from the checkpoint")
        elif isinstance(v, torch.Tensor) and isinstance(sd[k], torch.Tensor) and tuple(v.shape) != tuple(sd[k].shape):
            out.append(f"{k}: checkpoint {list(sd[k].shape)}, config {list(v.shape)}")
    out += [f"{k}: not in the configured network" for k in sd if k not in own]
    return out


def _fmt(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


def _current_config_files() -> list[str]:
    from .preflight import _as_list, cli_overrides

    cli = cli_overrides()
    return _as_list(cli[0]["config_file"]) if cli and cli[0].get("config_file") else []


def _mismatch_message(ckpt_file: Any, saved_info: Mapping[str, Any] | None, current: Mapping[str, Any] | None,
                      misfit: list[str], config_id: str) -> str:
    shown = "\n  ".join(misfit[:5]) + (f"\n  ... and {len(misfit) - 5} more" if len(misfit) > 5 else "")
    head = f"the weights in {ckpt_file} do not fit the configured network:\n  {shown}\n"
    if saved_info is None:
        return head + (f"The checkpoint does not say which network it holds (saved without a {NETWORK_DEF_KEY!r}, "
                       f"e.g. by an older version): build the network it was trained with, i.e. the same config "
                       f"files and --{config_id}#... overrides as the training.")
    saved = saved_info[NETWORK_DEF_KEY]
    diffs = diff_network_defs(saved, current or {})
    lines = [f"  {k}: checkpoint {_fmt(s)}, config {_fmt(c)}" for k, (s, c) in diffs.items()]
    fixes = [f"--{config_id}#{k} {_fmt(s) if not isinstance(s, (list, dict)) else repr(json.dumps(s))}"
             for k, (s, c) in diffs.items() if not k.startswith("_") and s is not None and k not in EVAL_NEUTRAL_KEYS]
    msg = head + (f"It was trained with network_def {json.dumps(saved)}\nand this run configures "
                  f"{json.dumps(current) if current else '(a network without a recorded definition)'}.\n")
    if lines:
        msg += "They differ in:\n" + "\n".join(lines) + "\n"
    hints = []
    if fixes:
        hints.append("pass " + " ".join(fixes))
    trained = [str(f) for f in saved_info.get("config_file", [])]
    have = {Path(f).name for f in _current_config_files()}
    lacking = [f for f in trained if have and Path(f).name not in have]
    if lacking:
        hints.append(f"add the config file(s) the training used: {', '.join(lacking)} (to --config_file)")
    elif trained:
        hints.append(f"use the training's config files ({', '.join(trained)})")
    hints.append("pass --use_saved_network_def true to build the network saved with the checkpoint")
    return msg + "Fix: " + "; or ".join(hints) + "."


def check_network_def(network: torch.nn.Module, ckpt_file: str | os.PathLike, config_id: str = "network_def",
                      ckpt: Any = None, key: str | None = None) -> None:
    """Raise :class:`NetworkDefMismatchError` when ``ckpt_file``'s weights do not fit ``network``.

    When they fit but the saved definition differs in other keys (other than eval-neutral ones
    such as ``dropout``), a warning lists the differences.

    Args:
        network: the configured network.
        ckpt_file: ``model.pt`` (definition in ``model.json``) or ``checkpoint_last.pt``.
        config_id: the config id of the network definition, for the suggested overrides.
        ckpt: the already loaded checkpoint (else it is read from ``ckpt_file``).
        key: checkpoint key of the weights (auto-detected if None).
    """
    ckpt = _load(ckpt_file) if ckpt is None else ckpt
    info = _saved_info(ckpt_file, ckpt)
    current = network_def_of(network)
    misfit = _misfit(network, read_state_dict(ckpt, key))
    if misfit:
        raise NetworkDefMismatchError(_mismatch_message(ckpt_file, info, current, misfit, config_id))
    if info is not None and current is not None:
        diffs = {k: v for k, v in diff_network_defs(info[NETWORK_DEF_KEY], current).items() if k not in EVAL_NEUTRAL_KEYS}
        if diffs:
            logger.warning(f"{ckpt_file}: the weights fit, but the network was trained with other settings: "
                           + ", ".join(f"{k} checkpoint {_fmt(s)} vs config {_fmt(c)}" for k, (s, c) in diffs.items()))


def build_network(network_def: Mapping[str, Any]) -> torch.nn.Module:
    """Instantiate a saved definition (``{"_target_": ..., **kwargs}``) with MONAI's ``ConfigParser``."""
    from monai.bundle import ConfigParser

    d = dict(network_def)
    if "_submodule_" in d:
        raise ValueError(f"the saved network_def describes the sub-network {d['_submodule_']!r} of a wrapper, which "
                         f"cannot be rebuilt from it alone; configure the network (same config files and overrides "
                         f"as the training) instead of use_saved_network_def.")
    bad = [k for k, v in d.items() if isinstance(v, Mapping) and "_repr_" in v]
    if bad:
        raise ValueError(f"the saved network_def's {bad} are not JSON values ({[d[k] for k in bad]}); it cannot be rebuilt.")
    if "_target_" not in d:
        raise ValueError(f"the saved network_def has no '_target_' (keys: {sorted(d)}).")
    return ConfigParser({"net": d}).get_parsed_content("net")


def resolve_network(network: torch.nn.Module | None, ckpt_file: str | os.PathLike, use_saved: bool | str = False,
                    device: str | torch.device | None = None, config_id: str = "network_def") -> torch.nn.Module:
    """The network to load ``ckpt_file`` into (a bundle's ``"network"`` for inference/evaluation/export).

    Args:
        network: the configured network (``@network_def``); may be None with ``use_saved``.
        ckpt_file: ``models/model.pt`` or ``models/checkpoint_last.pt``.
        use_saved: build the definition saved with the checkpoint instead of ``network``.
        device: device to move the result to.
        config_id: config id of the network definition, for the suggested overrides.

    Returns:
        the network (not yet holding the weights: MONAI's ``CheckpointLoader`` loads them).

    Raises:
        NetworkDefMismatchError: the weights do not fit ``network`` (see :func:`check_network_def`).
        ValueError: ``use_saved`` but the checkpoint has no saved definition.
    """
    from ..utils import as_bool

    if as_bool(use_saved, "use_saved_network_def"):
        saved = saved_network_def(ckpt_file)
        if saved is None:
            raise ValueError(f"use_saved_network_def: {ckpt_file} has no saved network definition (no "
                             f"{sidecar_path(ckpt_file).name} next to it, no {NETWORK_DEF_KEY!r} entry); "
                             f"configure the network instead.")
        net = build_network(saved)
        logger.info(f"built the network saved with {ckpt_file}: {json.dumps(saved)}")
    else:
        if network is None:
            raise ValueError("resolve_network: give network (the configured one) or use_saved=True.")
        net = network
        check_network_def(net, ckpt_file, config_id=config_id)
    return net.to(device) if device is not None else net
