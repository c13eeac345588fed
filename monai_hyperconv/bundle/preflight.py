"""Checks a bundle's training run makes before it touches anything: settings, overrides, outputs.

A bundle's ``train.json`` (and ``multi_gpu_train.json``) starts its ``initialize`` list with::

    {"_target_": "monai_hyperconv.bundle.preflight", "ckpt_dir": "@ckpt_dir", "log_dir": "@log_dir",
     "output_dir": "@output_dir", "resume": "@resume", "overwrite": "@overwrite",
     "settings": {"epochs": "@epochs", "learning_rate": "@learning_rate", ...}}

so that, before the network, the data or a TensorBoard writer exist,

* an override on the ``python -m monai.bundle run`` command line that the merged config does not
  define (``--epochz 2``) or whose value has the wrong type (``--learning_rate abc``) stops the run
  with a message naming the key and the closest defined key;
* numeric settings are checked by name (``epochs`` a positive integer, ``learning_rate`` a positive
  finite number, ...);
* an earlier run in the output folders is never replaced silently: without ``--resume true`` or
  ``--overwrite true`` the run stops; with ``--overwrite true`` the earlier run's folders are moved
  to ``<parent of ckpt_dir>/previous_runs/<UTC time>/`` (nothing is deleted).

:func:`remove_stale_temp_files` (temporary files of a killed save, ``.<name>.<hex>.tmp.<ext>``) is
called by :class:`~monai_hyperconv.bundle.CheckpointManager` when training starts.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..utils import as_bool
from .distributed import is_main_process

__all__ = ["preflight", "check_command_line", "ConfigOverrideError", "OutputExistsError", "check_overrides", "cli_overrides",
           "check_settings", "guard_outputs", "remove_stale_temp_files"]

logger = logging.getLogger(__name__)

#: files whose presence means a folder holds an earlier training run
RUN_MARKERS = ("checkpoint_last.pt", "model.pt", "training_log.csv")
#: temporary files of ``monai_hyperconv.utils.atomic_write`` (``.<name>.<12 hex>.tmp<ext>``)
_TMP_RE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp(\.[A-Za-z0-9]+)*$")


class ConfigOverrideError(ValueError):
    """A command-line override or setting the bundle cannot use (names the key)."""


class OutputExistsError(FileExistsError):
    """The output folders hold an earlier run and neither resume nor overwrite was asked for."""


# ---------------------------------------------------------------------------------------- settings
def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _non_negative_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _bool(v: Any) -> bool:
    try:
        as_bool(v)
        return True
    except ValueError:
        return False


#: setting name -> (check, what is expected)
SETTING_RULES: dict[str, tuple[Any, str]] = {
    "epochs": (_positive_int, "a positive integer"),
    "pretrain_epochs": (_non_negative_int, "a non-negative integer"),
    "warmup_epochs": (_non_negative_int, "a non-negative integer"),
    "batch_size": (_positive_int, "a positive integer"),
    "val_interval": (_positive_int, "a positive integer"),
    "num_workers": (_non_negative_int, "a non-negative integer"),
    "seed": (_non_negative_int, "a non-negative integer"),
    "learning_rate": (_positive_number, "a positive finite number"),
    "image_size": (_positive_int, "a positive integer"),
    "resume": (_bool, "true or false"),
    "overwrite": (_bool, "true or false"),
    "amp": (_bool, "true or false"),
    "ema_decay": (lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and 0.0 <= v < 1.0,
                  "a number in [0, 1) (0: no weight average)"),
}


def check_settings(settings: Mapping[str, Any]) -> None:
    """Check named settings against :data:`SETTING_RULES` (unknown names pass).

    Raises:
        ConfigOverrideError: naming the key, its value and what is expected.
    """
    for key, value in settings.items():
        rule = SETTING_RULES.get(key)
        if rule is not None and not rule[0](value):
            raise ConfigOverrideError(f"setting {key!r} = {value!r} ({type(value).__name__}): expected {rule[1]} "
                                      f"(e.g. --{key} on the command line).")


# --------------------------------------------------------------------------------------- overrides
def _run_parameters() -> set[str]:
    """The arguments of ``monai.bundle run`` itself (everything else is a config override)."""
    from monai.bundle import scripts

    names = {n for n, p in inspect.signature(scripts.run).parameters.items() if p.kind is not p.VAR_KEYWORD}
    return names | {"workflow_type", "workflow_name", "properties_path"}


def _literal(text: str) -> Any:
    """A command-line value as python-fire (MONAI's CLI parser) reads it: a Python literal, else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        low = text.lower()
        return {"true": True, "false": False, "none": None}.get(low, text)


def cli_overrides(argv: Sequence[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Split a ``python -m monai.bundle run ...`` command line into (run arguments, config overrides).

    Returns None when ``argv`` (default ``sys.argv``) is not such a command line (a Python caller,
    a test, another script), because then the overrides are not visible here.
    """
    argv = list(sys.argv if argv is None else argv)
    if not argv or not argv[0].replace("\\", "/").endswith("monai/bundle/__main__.py") or "run" not in argv[1:2]:
        return None
    run_names = _run_parameters()
    args: dict[str, Any] = {}
    i, tokens = 0, argv[2:]
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            i += 1
            continue
        key, eq, val = tok[2:].partition("=")
        if not eq:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                val, i = tokens[i + 1], i + 1
            else:
                val = "true"
        args[key.replace("-", "_") if key in {k.replace("_", "-") for k in run_names} else key] = _literal(val)
        i += 1
    run_args = {k: v for k, v in args.items() if k in run_names}
    overrides = {k: v for k, v in args.items() if k not in run_names}
    if run_args.get("args_file"):  # values from the args file, overridden by the command line as in MONAI
        from monai.bundle import ConfigParser

        from_file = ConfigParser.load_config_file(str(run_args["args_file"]))
        overrides = {**{k: v for k, v in from_file.items() if k not in run_names}, **overrides}
        run_args = {**{k: v for k, v in from_file.items() if k in run_names}, **run_args}
    return run_args, overrides


def _ids(config: Any, prefix: str = "", depth: int = 3) -> list[str]:
    out = []
    if isinstance(config, Mapping):
        items = config.items()
    elif isinstance(config, list):
        items = ((str(i), v) for i, v in enumerate(config))
    else:
        return out
    for k, v in items:
        cid = f"{prefix}#{k}" if prefix else str(k)
        out.append(cid)
        if depth > 1:
            out += _ids(v, cid, depth - 1)
    return out


#: config keys of the bundles that were renamed: old -> new (an override with the old name says so)
RENAMED_KEYS: dict[str, str] = {"features": "channels", "n_stages": "num_pools"}


def _renamed_hint(key: str, parser: Any) -> str:
    """``" 'features' was renamed 'channels': use --channels."`` when the config defines the new key."""
    head, _, last = key.rpartition("#")
    new = RENAMED_KEYS.get(last)
    new_key = f"{head}#{new}" if head else new
    if new is None or new_key not in parser:
        return ""
    note = " (num_pools = n_stages - 1)" if last == "n_stages" else ""
    return f" {last!r} was renamed {new!r}: use --{new_key}{note}."


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_overrides(config_files: str | Sequence[str], overrides: Mapping[str, Any]) -> None:
    """Reject overrides the merged config does not define, or whose value has the wrong type.

    A key must exist in the merged ``config_files`` (``#``-separated ids such as
    ``network_def#kernel_size`` included); a key whose default is a number takes a number and one
    whose default is a boolean takes a boolean (``$`` expressions and ``@`` references are always
    accepted). ``_meta_#...`` keys are not checked.

    Raises:
        ConfigOverrideError: naming the key, the closest defined keys, or the expected type.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(_as_list(config_files))
    known = None
    for key, value in overrides.items():
        if key.startswith("_meta_"):
            continue
        if key not in parser:
            known = known if known is not None else _ids(parser.get())
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hint = _renamed_hint(key, parser) or (f" Did you mean {' or '.join('--' + c for c in close)}?" if close else "")
            raise ConfigOverrideError(f"--{key}: the bundle's config ({', '.join(map(str, _as_list(config_files)))}) "
                                      f"defines no {key!r}, so this override would be ignored.{hint}")
        default = parser[key]
        if isinstance(value, str) and value.startswith(("$", "@", "%")):
            continue
        if _is_number(default) and not _is_number(value):
            raise ConfigOverrideError(f"--{key} {value!r}: expected a number (the config's default is {default!r}).")
        if isinstance(default, bool) and not _bool(value):
            raise ConfigOverrideError(f"--{key} {value!r}: expected true or false (the config's default is {default!r}).")


def _as_list(files: str | Sequence[str]) -> list[str]:
    if isinstance(files, str):
        try:
            v = ast.literal_eval(files)
            return [str(f) for f in v] if isinstance(v, (list, tuple)) else [files]
        except (ValueError, SyntaxError):
            return [f.strip() for f in files.split(",")] if "," in files else [files]
    return [str(f) for f in files]


# ----------------------------------------------------------------------------------------- outputs
def remove_stale_temp_files(folder: str | os.PathLike) -> list[str]:
    """Delete temporary files a killed atomic save left in ``folder`` (not recursive); returns their names."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for f in folder.iterdir():
        if f.is_file() and _TMP_RE.match(f.name):
            f.unlink()
            removed.append(f.name)
    if removed:
        logger.info(f"removed {len(removed)} temporary file(s) of an interrupted save in {folder}: {removed}")
    return removed


def _earlier_run(folders: Sequence[Path]) -> list[Path]:
    return [f / m for f in folders for m in RUN_MARKERS if (f / m).is_file()]


def guard_outputs(ckpt_dir: str | os.PathLike, log_dir: str | os.PathLike | None = None,
                  output_dir: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False) -> Path | None:
    """Never replace an earlier training run silently.

    Args:
        ckpt_dir, log_dir, output_dir: the run's folders (models, TensorBoard, curves/metrics).
        resume: the run continues the earlier one (nothing to guard).
        overwrite: move the earlier run aside to ``<parent of ckpt_dir>/previous_runs/<UTC time>/``.

    Returns:
        The folder the earlier run was moved to, or None.

    Raises:
        OutputExistsError: an earlier run is there and neither ``resume`` nor ``overwrite`` is set.
    """
    folders = [Path(d) for d in (ckpt_dir, log_dir, output_dir) if d is not None]
    resume, overwrite = as_bool(resume, "resume"), as_bool(overwrite, "overwrite")
    if resume or not is_main_process():
        return None
    found = _earlier_run(folders)
    if not found:
        return None
    if not overwrite:
        raise OutputExistsError(
            f"an earlier training run is in the output folders ({', '.join(map(str, found))}). Continue it with "
            f"--resume true (and --epochs N), or start again with --overwrite true (the earlier run is moved to "
            f"{Path(ckpt_dir).parent / 'previous_runs'}/<time>/, nothing is deleted), or choose another --bundle_root."
        )
    dest = Path(ckpt_dir).parent / "previous_runs" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    k = 1
    while dest.exists():
        dest, k = dest.with_name(dest.name.split("~")[0] + f"~{k}"), k + 1
    dest.mkdir(parents=True)
    for f in dict.fromkeys(folders):
        if f.is_dir() and any(f.iterdir()):
            shutil.move(str(f), str(dest / f.name))
            f.mkdir(parents=True, exist_ok=True)
    logger.warning(f"--overwrite true: the earlier run was moved to {dest}")
    return dest


# ------------------------------------------------------------------------------------------ entry
def preflight(ckpt_dir: str | os.PathLike, log_dir: str | os.PathLike | None = None,
              output_dir: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False,
              settings: Mapping[str, Any] | None = None, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """All checks before training (see the module docstring); call it first in ``initialize``.

    Args:
        ckpt_dir, log_dir, output_dir: the run's output folders.
        resume, overwrite: the bundle's ``resume`` / ``overwrite`` settings.
        settings: named settings to check (:func:`check_settings`), e.g. ``{"epochs": "@epochs"}``.
        argv: the command line (default ``sys.argv``); overrides are checked when it is a
            ``python -m monai.bundle run`` command line.

    Returns:
        ``{"moved_to": folder or None}``.
    """
    check_command_line(argv)
    check_settings({"resume": resume, "overwrite": overwrite, **dict(settings or {})})
    moved = guard_outputs(ckpt_dir, log_dir, output_dir, resume=resume, overwrite=overwrite)
    return {"moved_to": str(moved) if moved else None}


def check_command_line(argv: Sequence[str] | None = None) -> None:
    """Check a ``python -m monai.bundle run`` command line's overrides (:func:`check_overrides`);
    does nothing for other callers. For configs that do not train (evaluate, inference)."""
    cli = cli_overrides(argv)
    if cli is not None and cli[0].get("config_file"):
        check_overrides(cli[0]["config_file"], cli[1])
