"""What a comparison is made of: tasks (which bundle trains them) and algorithm specs.

An algorithm is a registered network name with options, written as on the command line:
``unet:kernel_size=3``, ``hyperunet:kernel_size=5,n_l=4``, ``hyper_unet:conv=["hyper",{"n_l":8}]``.
Names are matched to :func:`monai_hyperconv.networks.list_networks` ignoring case, ``_`` and ``-``.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TaskSpec", "TASKS", "AlgorithmSpec", "parse_algorithm", "resolve_network_name", "bundle_dir",
           "network_config", "DEFAULT_NOISE"]

#: options that define an algorithm: never inherited from the base bundle's network, so
#: ``unet`` is the plain 3x3 UNet even when the bundle's own network is a Hyper-UNet
ALGORITHM_KEYS = frozenset({"conv", "kernel_size", "dilation", "n_l", "up_kernel_size", "up_norm", "stem",
                            "non_local", "dropout_placement", "first_conv", "first_kernel_size"})

#: default noise sweep per task (levels on images scaled to [0, 1]; 0 = clean)
DEFAULT_NOISE = {
    "segmentation": {"salt_pepper": [0.0, 0.02, 0.05, 0.1], "gaussian": [0.0, 0.05, 0.1, 0.2],
                     "speckle": [0.0, 0.1, 0.2, 0.4]},
    "reconstruction": {"gaussian": [0.0, 0.02, 0.05, 0.1]},
    "classification": {"salt_pepper": [0.0, 0.1, 0.2, 0.3], "gaussian": [0.0, 0.2, 0.4, 0.8]},
    "registration": {},
}


@dataclass(frozen=True)
class TaskSpec:
    """A task type: the bundle whose recipe (transforms, loss, optimiser) every algorithm shares.

    Attributes:
        bundle: name of a shipped bundle (``bundles/<name>``) or a path, holding ``configs/train.json``.
        metric: short metric name for tables ("dice", "psnr", "accuracy").
        network_key: config id of the network's ``create_network`` dict.
        higher_is_better: direction of ``metric``.
        demo_task: demo data set generated when no data is given.
    """

    bundle: str
    metric: str
    network_key: str = "network_def"
    higher_is_better: bool = True
    demo_task: str = ""


TASKS = {
    "segmentation": TaskSpec("liver_lesion_segmentation", "dice", demo_task="liver"),
    "reconstruction": TaskSpec("brain_mri_reconstruction", "psnr", network_key="unet", demo_task="brain_recon"),
    "classification": TaskSpec("digits_classification", "accuracy", demo_task="digits"),
    "registration": TaskSpec("scale_space_registration", "dice", demo_task="brain_seg"),
}


def bundle_dir(bundle: str | os.PathLike) -> Path:
    """A bundle folder: a path, or the name of a shipped bundle (the wheel's packaged copy or the
    checkout's ``bundles/``, :func:`monai_hyperconv.bundle.resources.bundles_root`).

    Raises:
        FileNotFoundError: naming the bundle when it has no ``configs/train.json``.
    """
    from ..bundle.resources import bundles_root

    p = Path(bundle)
    if not (p / "configs" / "train.json").is_file():
        p = bundles_root() / str(bundle)
    if not (p / "configs" / "train.json").is_file():
        raise FileNotFoundError(f"bundle {str(bundle)!r}: no configs/train.json (looked at {bundle!s} and {p}).")
    return p.resolve()


def _norm(name: str) -> str:
    return re.sub(r"[_\-\s]", "", name.lower())


def resolve_network_name(name: str) -> str:
    """The registered network name matching ``name`` (case, ``_`` and ``-`` ignored).

    Raises:
        KeyError: listing the registered names.
    """
    from ..networks import list_networks

    names = list_networks()
    if name.lower() in names:
        return name.lower()
    hits = [n for n in names if _norm(n) == _norm(name)]
    if len(hits) == 1:
        return hits[0]
    raise KeyError(f"unknown network {name!r} in the algorithm list; registered: {', '.join(names)}.")


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets/braces/quotes."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _value(text: str) -> Any:
    low = text.strip()
    if low.lower() in ("true", "false"):
        return low.lower() == "true"
    if low.lower() in ("none", "null"):
        return None
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(low)
        except (ValueError, SyntaxError):
            pass
    return low


@dataclass(frozen=True)
class AlgorithmSpec:
    """One algorithm of a comparison: a registered network and its options.

    Attributes:
        text: as given (also the leaderboard row label).
        name: the registered network name.
        options: constructor keyword arguments.
    """

    text: str
    name: str
    options: dict = field(default_factory=dict)

    @property
    def slug(self) -> str:
        """A folder-safe, unique id."""
        opts = ",".join(f"{k}={v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}"
                        for k, v in sorted(self.options.items()))
        s = self.name + (f"__{opts}" if opts else "")
        return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", s)


def parse_algorithm(text: str) -> AlgorithmSpec:
    """``"name:key=value,key=value"`` -> :class:`AlgorithmSpec` (values parsed as JSON/Python literals).

    Raises:
        ValueError: naming the offending option; KeyError for an unknown network name.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"algorithm spec must be a non-empty string like 'unet:kernel_size=3', got {text!r}.")
    name, _, rest = text.strip().partition(":")
    options: dict[str, Any] = {}
    for item in _split_top(rest):
        key, eq, val = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise ValueError(f"algorithm {text!r}: option {item!r} is not key=value.")
        if key in options:
            raise ValueError(f"algorithm {text!r}: option {key!r} given twice.")
        options[key] = _value(val)
    for reserved in ("spatial_dims", "in_channels", "out_channels"):
        if reserved in options:
            raise ValueError(f"algorithm {text!r}: {reserved!r} is set by the task's data, not per algorithm.")
    return AlgorithmSpec(text=text.strip(), name=resolve_network_name(name.strip()), options=options)


def _accepted(name: str) -> set[str] | None:
    """Keyword arguments the registered constructor accepts (None: anything)."""
    from ..networks import network_entry

    fn = network_entry(name)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        cls = getattr(fn, "network_class", None)
        if cls is None:
            return None
        params = {**params, **inspect.signature(cls).parameters}
    return {k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}


def network_config(base: Any, algo: AlgorithmSpec) -> dict:
    """The config dict of ``algo``'s network, sharing the base bundle network's task settings.

    Kept from ``base`` (the bundle's ``create_network`` dict): ``spatial_dims``/``in_channels``/
    ``out_channels`` and width/depth/normalisation settings the new constructor accepts; dropped:
    everything that defines an algorithm (:data:`ALGORITHM_KEYS`), so the algorithm's own defaults
    apply unless its options set them.
    """
    if not isinstance(base, dict):
        raise ValueError(f"the bundle's network entry must be a dict with '_target_', got {base!r}.")
    accepted = _accepted(algo.name)
    cfg: dict[str, Any] = {"_target_": "monai_hyperconv.networks.create_network", "name": algo.name}
    for k, v in base.items():
        if k in ("_target_", "name", "_requires_", "_disabled_", "_desc_", "_mode_") or k in ALGORITHM_KEYS:
            continue
        if accepted is not None and k not in accepted and k not in ("spatial_dims", "in_channels", "out_channels"):
            continue
        cfg[k] = v
    cfg.update(algo.options)
    return cfg
