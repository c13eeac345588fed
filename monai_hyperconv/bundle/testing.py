"""Helpers to test bundles in-process (``ConfigWorkflow``) and through the CLI (``python -m monai.bundle``).

Typical test::

    from monai_hyperconv.bundle.testing import make_tiny_demo, run_config
    data = make_tiny_demo("liver", tmp_path / "data", n_subjects=3, size=(32, 32, 8))
    wf = run_config(BUNDLE, "train.json", workflow_type="train", dataset_dir=data,
                    bundle_root=tmp_path / "b", epochs=1)           # asserts check_properties() == []
    assert (tmp_path / "b/models/checkpoint_last.pt").is_file()
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["REPO_ROOT", "load_script", "make_tiny_demo", "load_workflow", "run_config", "run_cli", "bundle_cli_args", "no_package_env", "find_in_chain",
           "run_exported_without_package", "dataset_error"]

#: repository root (the folder holding ``bundles/`` and ``scripts/``) when running from a checkout; an
#: installed wheel has no repository: find its bundles with :func:`monai_hyperconv.bundle.resources.bundle_path`
REPO_ROOT = Path(__file__).resolve().parents[2]


def load_script(path: str | os.PathLike, name: str | None = None):
    """Import a script (``scripts/*.py``, which is not a package module) by path; returns the module.

    Args:
        path: the ``.py`` file (relative paths are taken from :data:`REPO_ROOT`).
        name: module name (default: the file's stem).
    """
    import importlib.util

    p = Path(path)
    p = p if p.is_absolute() else REPO_ROOT / p
    if not p.is_file():
        raise FileNotFoundError(f"load_script: no script at {p}.")
    spec = importlib.util.spec_from_file_location(name or p.stem, p)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_tiny_demo(task: str, out_dir: str | os.PathLike, n_subjects: int = 3, size: Sequence[int] | None = None, seed: int = 0) -> str:
    """A small demo set for tests (``make_demo`` with few subjects / a small grid); returns its folder."""
    from ..data import make_demo

    js = make_demo(task, out_dir, seed=seed, n_subjects=n_subjects, size=size)
    return str(Path(js).parent)


def _configs(bundle_dir: Path, configs: str | Sequence[str]) -> list[str]:
    names = [configs] if isinstance(configs, str) else list(configs)
    return [str(c if os.path.isabs(c) else bundle_dir / "configs" / c) for c in names]


def load_workflow(bundle_dir: str | os.PathLike, configs: str | Sequence[str], workflow_type: str | None = None,
                  run_id: str = "run", **overrides: Any):
    """A ``ConfigWorkflow`` for ``bundle_dir/configs/<configs>`` with ``metadata.json``; not yet initialised.

    ``run_id`` picks the expression list to run (e.g. "export"). ``overrides`` are config ids (``"train#trainer#max_epochs"``) or top-level keys; paths become str.
    """
    from monai.bundle import ConfigWorkflow

    bdir = Path(bundle_dir)
    ov = {k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in overrides.items()}
    ov.setdefault("bundle_root", str(bdir))
    return ConfigWorkflow(
        config_file=_configs(bdir, configs), meta_file=str(bdir / "configs" / "metadata.json"),
        workflow_type=workflow_type, run_id=run_id, **ov,
    )


def run_config(bundle_dir: str | os.PathLike, configs: str | Sequence[str], workflow_type: str | None = "train",
               check: bool = True, run: bool = True, run_id: str = "run", **overrides: Any):
    """Initialise (and run, and finalise) a bundle config; assert ``check_properties()`` finds nothing missing.

    Returns:
        the workflow (its parser gives access to every component, e.g. ``wf.parser.get_parsed_content("network")``).
    """
    wf = load_workflow(bundle_dir, configs, workflow_type, run_id=run_id, **overrides)
    wf.initialize()
    if check and workflow_type is not None:
        missing = wf.check_properties()
        assert not missing, f"bundle {bundle_dir} ({configs}) lacks workflow properties {missing}"
    if run:
        wf.run()
        wf.finalize()
    return wf


def last_weights(bundle_root: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The network ``state_dict`` of a run's resumable checkpoint (``<bundle_root>/models/checkpoint_last.pt``)."""
    return torch.load(Path(bundle_root) / "models" / "checkpoint_last.pt", weights_only=False)["network"]


def same_weights(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    """Bitwise equality of two state dicts (same keys, ``torch.equal`` per tensor)."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def bundle_cli_args(bundle_dir: str | os.PathLike, configs: str | Sequence[str], run_id: str | None = None,
                    **overrides: Any) -> list[str]:
    """``python -m monai.bundle run`` argument list for a bundle (meta, logging, bundle_root, overrides)."""
    bdir = Path(bundle_dir)
    cfg = _configs(bdir, configs)
    cfg_arg = cfg[0] if len(cfg) == 1 else "[" + ",".join(repr(c) for c in cfg) + "]"
    args = ["-m", "monai.bundle", "run"] + ([run_id] if run_id else []) + [
        "--config_file", cfg_arg, "--meta_file", str(bdir / "configs" / "metadata.json"),
        "--logging_file", str(bdir / "configs" / "logging.conf"),
    ]
    overrides.setdefault("bundle_root", str(bdir))
    for k, v in overrides.items():
        args += [f"--{k}", os.fspath(v) if isinstance(v, os.PathLike) else str(v)]
    return args


def no_package_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a subprocess (CPU threads limited)."""
    e = dict(os.environ if env is None else env)
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def run_cli(args: Sequence[str], cwd: str | os.PathLike | None = None, timeout: float = 600,
            torchrun_nproc: int | None = None, env: Mapping[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python <args>`` (or ``torchrun --nproc_per_node=N <args without -m ...>``) and capture output.

    Raises:
        AssertionError: with the output tail when ``check`` and the process failed.
    """
    if torchrun_nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(torchrun_nproc)}"] + list(args)
    else:
        cmd = [sys.executable] + list(args)
    cwd = cwd or (REPO_ROOT if (REPO_ROOT / "bundles").is_dir() else None)  # a wheel: the caller's folder
    p = subprocess.run(cmd, cwd=None if cwd is None else os.fspath(cwd), env=no_package_env(env), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"command failed ({p.returncode}): {' '.join(cmd)}\n--- stdout ---\n{p.stdout[-4000:]}\n--- stderr ---\n{p.stderr[-6000:]}")
    return p


def find_in_chain(exc: BaseException, cls: type) -> BaseException | None:
    """The first exception of type ``cls`` in ``exc``'s ``__cause__``/``__context__`` chain (MONAI wraps
    errors raised while instantiating a component in a ``RuntimeError``)."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, cls):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


_RUN_WITHOUT_PACKAGE = """
import sys
sys.modules["monai_hyperconv"] = None  # any import of the package now fails
import torch
path, in_path, out_path = sys.argv[1:4]
m = torch.export.load(path).module() if path.endswith(".pt2") else torch.jit.load(path)
with torch.no_grad():
    torch.save(m(*torch.load(in_path)), out_path)
"""


def run_exported_without_package(model_path: str | os.PathLike, *inputs, workdir: str | os.PathLike, timeout: float = 300):
    """Run an exported model (TorchScript, or ``torch.export`` ``.pt2``) in a fresh process that cannot import
    ``monai_hyperconv``, and return its output (a tensor or a tuple of tensors).

    Raises:
        AssertionError: with the subprocess's stderr tail when it fails.
    """
    workdir = Path(workdir)
    in_path, out_path = workdir / "_inputs.pt", workdir / "_outputs.pt"
    torch.save(list(inputs), in_path)
    p = subprocess.run([sys.executable, "-c", _RUN_WITHOUT_PACKAGE, os.fspath(model_path), str(in_path), str(out_path)],
                       cwd=str(workdir), env=no_package_env(), capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"exported model failed without the package:\n{p.stderr[-4000:]}")
    return torch.load(out_path)


def dataset_error(bundle_dir: str | os.PathLike, dataset_dir: str | os.PathLike, bundle_root: str | os.PathLike,
                  config: str = "train.json", key: str = "train#dataset", **overrides) -> str:
    """The :class:`~monai_hyperconv.bundle.DatasetError` message raised (through MONAI's config parser) when a
    bundle reads ``dataset_dir``; fails the calling test if none is raised."""
    from .data import DatasetError

    wf = load_workflow(bundle_dir, config, None, dataset_dir=dataset_dir, bundle_root=bundle_root, **overrides)
    wf.initialize()
    try:
        wf.parser.get_parsed_content(key)
    except Exception as exc:  # MONAI wraps component errors
        found = find_in_chain(exc, DatasetError)
        if found is None:
            raise AssertionError(f"expected a DatasetError, got {exc!r}") from exc
        return str(found)
    raise AssertionError(f"reading {key} of {dataset_dir} raised no error")
