"""The settings of a comparison: every option besides the task and the algorithms, in one object.

>>> from monai_hyperconv.compare import ComparisonSettings, run_comparison
>>> settings = ComparisonSettings(folds=2, epochs=5, output_dir="runs/compare_liver")
>>> run_comparison("segmentation", ["unet:kernel_size=3", "hyper_unet:kernel_size=5,n_l=4"], settings)  # doctest: +SKIP
>>> quick = settings.replace(iterations=2, folds=1)  # the budget switches from epochs to iterations

:func:`~monai_hyperconv.compare.plan_cells` and :func:`~monai_hyperconv.compare.run_comparison` take
it; ``python -m monai_hyperconv.compare`` builds it with :meth:`ComparisonSettings.from_args`. Bad
values raise :class:`ComparisonError` naming the field when the object is made (checks that need
the bundle's config, such as unknown overrides, happen when the cells are planned).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ComparisonSettings", "ComparisonError", "parse_assignments", "settings_from_call"]


class ComparisonError(ValueError):
    """Bad comparison input (names the argument, file or key)."""


def parse_assignments(items: Sequence[str], what: str = "--set") -> dict[str, Any]:
    """``["ID=VALUE", ...]`` -> ``{ID: value}`` (values parsed as JSON/Python literals, else kept as text).

    Raises:
        ComparisonError: naming ``what`` and the item that is not ``ID=VALUE``.
    """
    from .spec import _value

    out = {}
    for item in items:
        key, eq, val = item.partition("=")
        if not eq or not key:
            raise ComparisonError(f"{what} {item!r}: expected ID=VALUE.")
        out[key] = _value(val)
    return out


def _int(name: str, value: Any, low: int | None = None) -> int:
    """``value`` as an int (as ``int()`` reads it; not a bool), at least ``low``; else an error naming ``name``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        n = int(value)
    except (TypeError, ValueError):
        raise ComparisonError(f"{name} must be an int, got {value!r}.") from None
    if low is not None and n < low:
        raise ComparisonError(f"{name} must be >= {low}, got {value!r}.")
    return n


def _sequence(name: str, value: Any) -> tuple:
    """A list/tuple as a tuple; a lone string (iterated by character otherwise) is an error naming ``name``."""
    if isinstance(value, (str, bytes, os.PathLike)) or not isinstance(value, Sequence):
        raise ComparisonError(f"{name} must be a list, got {value!r}.")
    return tuple(value)


@dataclass(frozen=True)
class ComparisonSettings:
    """How a comparison runs: budget, folds, data, recipe, output folder, parallelism, resuming.

    Sequences are stored as tuples, paths of folders as :class:`~pathlib.Path`; ``overrides`` and
    ``noise`` are copies (plain dicts: do not change them, make a new object with :meth:`replace`).

    Attributes:
        folds: k of k-fold cross-validation (the bundle's ``fold``/``num_folds`` re-split the data).
        output_dir: where ``cells/``, the leaderboard and plots go; reusing it resumes.
        epochs, iterations: the training budget (exactly one).
        data: a folder with ``dataset.json`` (or the file); None: the task's demo, generated.
        bundle: the recipe (None: the task's bundle).
        configs: the bundle's config files (None: ``train.json`` + ``demo.json`` on demo data).
        overrides: config ids -> values for every cell (e.g. ``{"image_size": 64}``).
        noise: ``{noise: [levels]}`` robustness sweep (None: the task's default; ``{}`` for none).
        seed: the same for every cell (fair: same splits, same initial data order); with ``seeds``,
            the base seed (its cells keep the single-seed folders ``fold<k>``).
        seeds: repeat every algorithm x fold with each of these seeds (a grid axis: a cell is
            algorithm x fold x seed). A seed changes initialisation, sampling and augmentation, never
            the split (the cells of the other seeds keep the base seed's k-fold shuffling,
            ``datalists#seed``). None: ``(seed,)``. ``seed`` stays the base seed if it is one of ``seeds``, else it
            becomes the first of them (a folder resumes only with the same base seed).
        reference: the algorithm (its text, as given) the others are compared with in the
            leaderboard's paired statistics (None: the first algorithm).
        workers: cells run in parallel.
        devices: e.g. ``("cuda:0", "cuda:1")`` (None: all GPUs, else CPU).
        fold_ids: run only these folds (None: all).
        auto3dseg_work_dirs: Auto3DSeg work directories whose algorithms join the leaderboard.
        latency_reps: timed forwards per latency measurement.
        progress: a tqdm bar over cells and one line per finished cell.
        isolate: one process per cell. ``False`` runs the cells one after the other in this process
            (``workers`` must be 1): no process start-up per cell, for smoke runs and tests; a crash
            then stops the run, and ``peak_mem_mb`` is this process's running peak.
        retry_failed: re-run cells recorded as failed; ``False`` keeps their recorded error. (A cell
            whose folder another process has locked is never run: its row has status "busy".)
    """

    folds: int = 5
    output_dir: Path = Path("runs/compare")
    epochs: int | None = None
    iterations: int | None = None
    data: Path | None = None
    bundle: str | None = None
    configs: tuple[str, ...] | None = None
    overrides: dict[str, Any] = field(default_factory=dict, hash=False)
    noise: dict[str, tuple[float, ...]] | None = field(default=None, hash=False)
    seed: int = 0
    seeds: tuple[int, ...] | None = None
    reference: str | None = None
    workers: int = 1
    devices: tuple[str, ...] | None = None
    fold_ids: tuple[int, ...] | None = None
    auto3dseg_work_dirs: tuple[Path, ...] = ()
    latency_reps: int = 10
    progress: bool = True
    isolate: bool = True
    retry_failed: bool = True

    def __post_init__(self) -> None:
        set_ = self._set
        if not isinstance(self.folds, int) or self.folds < 1:
            raise ComparisonError(f"folds must be a positive int, got {self.folds!r}.")
        if (self.epochs is None) == (self.iterations is None):
            raise ComparisonError(f"give exactly one budget: epochs or iterations (got epochs={self.epochs!r}, "
                                  f"iterations={self.iterations!r}).")
        for name in ("epochs", "iterations"):
            if getattr(self, name) is not None:
                set_(name, _int(f"{name} (the training budget)", getattr(self, name), low=1))
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ComparisonError(f"workers must be a positive int, got {self.workers!r}.")
        if not self.isolate and self.workers != 1:
            raise ComparisonError(f"isolate=False runs cells in this process: workers must be 1, got {self.workers}.")
        set_("seed", _int("seed", self.seed))
        if self.seeds is not None:
            seeds = tuple(_int("seeds", s) for s in _sequence("seeds", self.seeds))
            if not seeds:
                raise ComparisonError("seeds: give at least one seed (or None for just `seed`).")
            if len(set(seeds)) != len(seeds):
                raise ComparisonError(f"seeds: {list(seeds)} repeats a seed.")
            set_("seeds", seeds)
            if self.seed not in seeds:
                set_("seed", seeds[0])
        set_("latency_reps", _int("latency_reps", self.latency_reps, low=1))
        set_("output_dir", Path(self.output_dir))
        if self.data is not None:
            set_("data", Path(self.data))
        if self.bundle is not None:
            set_("bundle", os.fspath(self.bundle))
        if self.configs is not None:
            set_("configs", tuple(os.fspath(c) for c in _sequence("configs", self.configs)))
        if self.overrides is None:
            set_("overrides", {})
        elif not isinstance(self.overrides, Mapping):
            raise ComparisonError(f"overrides must be a mapping of config ids to values, got {self.overrides!r}.")
        else:
            set_("overrides", dict(self.overrides))
        if self.noise is not None:
            set_("noise", self._checked_noise(self.noise))
        if self.devices is not None:
            devices = _sequence("devices", self.devices)
            if not all(isinstance(d, str) for d in devices):
                raise ComparisonError(f"devices must be names like 'cuda:0' or 'cpu', got {self.devices!r}.")
            set_("devices", devices or None)  # none given: the default, as the runner always read it
        if self.fold_ids is not None:
            fold_ids = tuple(_int("fold_ids", f) for f in _sequence("fold_ids", self.fold_ids))
            bad = [f for f in fold_ids if not 0 <= f < self.folds]
            if bad:
                raise ComparisonError(f"fold_ids {bad} outside 0..{self.folds - 1}.")
            set_("fold_ids", fold_ids)
        set_("auto3dseg_work_dirs", tuple(Path(d) for d in _sequence("auto3dseg_work_dirs", self.auto3dseg_work_dirs)))
        for name in ("progress", "isolate", "retry_failed"):
            set_(name, bool(getattr(self, name)))

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # frozen: only __post_init__ normalises a field

    @staticmethod
    def _checked_noise(noise: Any) -> dict[str, tuple[float, ...]]:
        from ..bundle.robustness import NOISE_TYPES

        if not isinstance(noise, Mapping):
            raise ComparisonError(f"noise must be a mapping {{noise: [levels]}}, got {noise!r}.")
        unknown = sorted(set(noise) - set(NOISE_TYPES))
        if unknown:
            raise ComparisonError(f"noise {unknown}: choose from {sorted(NOISE_TYPES)}.")
        try:
            return {k: tuple(float(x) for x in _sequence(f"noise[{k!r}]", v)) for k, v in noise.items()}
        except (TypeError, ValueError) as e:
            raise ComparisonError(f"noise {dict(noise)!r}: levels must be lists of numbers ({e}).") from None

    @property
    def seed_list(self) -> tuple[int, ...]:
        """The seeds of the grid: ``seeds``, or ``(seed,)``."""
        return self.seeds if self.seeds is not None else (self.seed,)

    @property
    def budget(self) -> dict[str, int]:
        """``{"epochs": n}`` or ``{"iterations": n}``, as recorded in the manifest and the cells."""
        return {"epochs": self.epochs} if self.epochs is not None else {"iterations": self.iterations}

    def replace(self, **changes: Any) -> ComparisonSettings:
        """A copy with ``changes`` (validated again). Setting one budget clears the other:
        ``settings.replace(iterations=2)`` on an epochs budget gives an iterations budget."""
        if "epochs" in changes and "iterations" not in changes:
            changes["iterations"] = None
        elif "iterations" in changes and "epochs" not in changes:
            changes["epochs"] = None
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ComparisonSettings:
        """The settings of ``python -m monai_hyperconv.compare`` from its parsed arguments.

        ``--set ID=VALUE`` become ``overrides``, ``--noise`` is JSON or ``none`` (``{}``),
        ``--keep-failed`` is ``retry_failed=False``, ``--output`` is ``output_dir``.
        """
        if args.noise is None:
            noise = None
        elif args.noise.strip().lower() == "none":
            noise = {}
        else:
            try:
                noise = json.loads(args.noise)
            except ValueError as e:
                raise ComparisonError(f"--noise {args.noise!r}: not JSON ({e}).") from None
        return cls(folds=args.folds, output_dir=args.output, epochs=args.epochs, iterations=args.iterations,
                   data=args.data, bundle=args.bundle, configs=args.configs,
                   overrides=parse_assignments(args.set, "--set"), noise=noise,
                   seed=args.seed,
                   seeds=getattr(args, "seeds", None), reference=getattr(args, "reference", None),
                   workers=args.workers, devices=args.devices, fold_ids=args.fold_ids,
                   auto3dseg_work_dirs=args.auto3dseg_workdir, latency_reps=args.latency_reps,
                   retry_failed=not args.keep_failed)


_FIELDS = tuple(f.name for f in dataclasses.fields(ComparisonSettings))


def settings_from_call(func: str, settings: Any, args: Sequence[Any], kwargs: Mapping[str, Any],
                       positional: Sequence[str] = _FIELDS) -> ComparisonSettings:
    """The :class:`ComparisonSettings` of a call ``func(task, algorithms, settings, *args, **kwargs)``.

    ``settings`` a :class:`ComparisonSettings` (and nothing else given): it. Otherwise the deprecated
    form ``func(task, algorithms, folds, output_dir, ..., epochs=..., ...)``: ``settings`` and ``args``
    are the old positional arguments (named by ``positional``), ``kwargs`` the old keywords (the
    field names); a :class:`DeprecationWarning` is issued and the settings are built from them.

    Raises:
        TypeError: both forms at once, too many positional arguments, an unknown or repeated keyword.
    """
    if isinstance(settings, ComparisonSettings):
        if args or kwargs:
            raise TypeError(f"{func}(): pass a ComparisonSettings or the (deprecated) keyword arguments, not both; "
                            f"change settings with settings.replace({', '.join(f'{k}=...' for k in kwargs)}).")
        return settings
    old_args = ([] if settings is None else [settings]) + list(args)
    if len(old_args) > len(positional):
        raise TypeError(f"{func}() takes at most {len(positional) + 2} positional arguments "
                        f"({len(old_args) + 2} given).")
    given = dict(zip(positional, old_args))
    for key, value in kwargs.items():
        if key not in _FIELDS:
            raise TypeError(f"{func}() got an unexpected keyword argument {key!r}.")
        if key in given:
            raise TypeError(f"{func}() got multiple values for argument {key!r}.")
        given[key] = value
    if given:
        warnings.warn(
            f"{func}(task, algorithms, {', '.join(f'{k}=...' for k in given)}) is deprecated and will be removed in "
            f"the next release: pass the settings as one object, "
            f"{func}(task, algorithms, ComparisonSettings({', '.join(f'{k}=...' for k in given)})).",
            DeprecationWarning, stacklevel=3)
    return ComparisonSettings(**given)
