"""One algorithm x fold cell of a comparison, run in its own process.

``python -m monai_hyperconv.compare.cell CELL_DIR/cell.json`` trains the bundle recipe with the
cell's network (``ConfigWorkflow`` of the bundle's ``train.json``, resumable from the bundle's
``checkpoint_last.pt``), then measures the final model and writes ``CELL_DIR/result.json``
atomically: ``status`` "ok" with the numbers, or "failed" with the error and traceback.

Measured (all on the cell's device, the network in eval mode):
- ``train_metric`` / ``test_metric``: the bundle's validation key metric on the training split and
  on the held-out fold (``test_per_case``: per-case values where the metric handler keeps them, and
  ``test_case_ids``: the cases' names, their image files' names), both with the validation transforms (no augmentation) and the final weights
  (no best-epoch selection on the test fold, so the gap is not flattered);
- ``params``: trainable parameters; ``receptive_field``: :func:`~monai_hyperconv.networks.receptive_field`
  (the papers' convention; "all" for global ones; None where it cannot be derived);
- ``gflops`` and ``latency_ms``: one forward of one sample of the shape the inferer feeds the network
  (captured during evaluation, e.g. one 2-D slice for slice-wise inference); latency is the median of
  ``latency_reps`` timed runs after warm-up;
- ``peak_mem_mb``: CUDA: peak allocated memory of the cell; CPU: peak resident set size of the cell's process
  during its work (Linux ``VmHWM`` after resetting it at the cell's start; imported libraries included);
- ``train_time_s``: wall-clock seconds of the bundle's training run (with its one final validation);
- ``robustness``: ``{noise: {level: metric}}`` on the held-out fold (``robustness_per_case``: the
  same per case, in ``test_case_ids`` order), noise added to the network
  input after preprocessing (:func:`monai_hyperconv.bundle.corrupt`, seeded per noise and level).

The process holds an exclusive lock on ``CELL_DIR/.lock`` (:func:`cell_lock`) for its whole run: a
second process finds the folder busy and exits with :data:`BUSY_EXIT` without touching it. Started
by the runner (``MONAI_HYPERCONV_COMPARE_PARENT`` set), it ends itself when the runner is gone.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["run_cell", "cell_lock", "CellBusyError", "CELL_FILE", "RESULT_FILE", "LOCK_FILE", "BUSY_EXIT",
           "METRIC_FIELDS"]

CELL_FILE = "cell.json"
RESULT_FILE = "result.json"
LOCK_FILE = ".lock"
#: exit code of a cell process that found its folder locked by another process (``EX_TEMPFAIL``)
BUSY_EXIT = 75
#: environment variable: the pid of the runner that started the cell (the cell ends when it is gone)
PARENT_ENV = "MONAI_HYPERCONV_COMPARE_PARENT"
METRIC_FIELDS = ("train_metric", "test_metric", "gap", "params", "receptive_field", "gflops", "train_time_s",
                 "latency_ms", "peak_mem_mb", "robust_metric")


class CellBusyError(RuntimeError):
    """Another process holds the cell folder's lock (it is working in that folder)."""


@contextlib.contextmanager
def cell_lock(cell_dir: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``cell_dir/.lock`` while the block runs (POSIX ``flock``, not waiting).

    The OS releases a flock when its holder dies, so a killed cell never blocks a re-run (a pid
    file would). Where ``fcntl`` is missing (Windows) nothing is locked.

    Raises:
        CellBusyError: another process holds the lock (the message names the folder and its pid).
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    folder = Path(cell_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise CellBusyError(
                f"cell folder {folder} is busy: another process{f' (pid {holder})' if holder.isdigit() else ''} "
                f"holds its lock ({LOCK_FILE}) and works in it; not started beside it (re-run when it is done)."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # who holds it, for the busy message
        yield
    finally:
        os.close(fd)  # releases the lock


def _end_with_parent() -> None:
    """End this cell (with its process group) once the runner that started it is gone.

    The runner stops its cells when it exits, but a runner killed with SIGKILL cannot; the cell
    would then be reparented and go on training beside a re-run.
    """
    parent = os.environ.get(PARENT_ENV, "")
    if not parent.isdigit() or os.name != "posix":
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(0.5)
        if os.getpgrp() == os.getpid():  # a session leader (started so by the runner): its DataLoader workers too
            os.killpg(os.getpgrp(), signal.SIGTERM)
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="end-with-runner", daemon=True).start()


def _configs(spec: dict) -> list[str]:
    return [os.fspath(c) for c in spec["configs"]]


def _overrides(spec: dict, resume: bool) -> dict[str, Any]:
    ov = dict(spec.get("overrides", {}))
    ov.update({
        "bundle_root": spec["cell_dir"],
        "seed": spec["seed"],
        "resume": resume,
        # the runner owns the cell folder: an unfinished earlier attempt without a checkpoint to resume
        # is moved to previous_runs/ rather than refused
        "overwrite": True,
        "device": f"$torch.device({spec['device']!r})",
        spec["network_key"]: spec["network"],
    })
    if spec.get("split_seed_key"):  # another seed of the grid: the base seed's split, this seed's training
        ov[spec["split_seed_key"]] = spec["split_seed"]
    if spec.get("dataset_dir"):
        ov["dataset_dir"] = spec["dataset_dir"]
    if spec.get("num_folds", 1) > 1:
        ov["fold"], ov["num_folds"] = spec["fold"], spec["num_folds"]
    elif spec.get("has_fold"):
        ov["fold"] = None  # one "fold": the data set's own training/validation sections
    budget = spec["budget"]
    if "epochs" in budget:
        ov["epochs"] = int(budget["epochs"])
        ov["val_interval"] = int(budget["epochs"])  # one validation, at the end: selection is not ours
    else:
        ov["epochs"] = 1
        ov["val_interval"] = 1
        ov["train#trainer#epoch_length"] = int(budget["iterations"])
    return ov


def _parser(spec: dict, overrides: dict):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(_configs(spec))
    parser.update(overrides)
    return parser


def _key_metric(evaluator) -> float:
    name = evaluator.state.key_metric_name
    value = evaluator.state.metrics.get(name)
    if value is None:
        raise RuntimeError(f"the evaluator computed no {name!r} (metrics: {sorted(evaluator.state.metrics)}).")
    return float(value)


def _split_data_expr(parser, split: str) -> str | None:
    """The expression selecting ``split`` for ``validate#dataset#data`` (None if the bundle does not use datalists)."""
    expr = parser.get("validate#dataset#data")
    if isinstance(expr, str) and "@datalists['validation']" in expr.replace('"', "'"):
        return expr.replace('"validation"', "'validation'").replace("'validation'", repr(split))
    return None


def _case_id(item: Any, index: int) -> str:
    """A data-list entry's name: its image file's name without the extension (else ``case<index>``)."""
    src = item.get("image", item.get("img")) if isinstance(item, dict) else item
    if isinstance(src, (list, tuple)) and src:
        src = src[0]
    if isinstance(src, (str, os.PathLike)):
        name = Path(src).name
        for ext in (".nii.gz", ".nii", ".npz", ".npy", ".png", ".jpg", ".mha", ".nrrd", ".gz"):
            if name.endswith(ext):
                return name[: -len(ext)]
        return name
    return f"case{index}"


def _case_ids(evaluator, n: int) -> list[str]:
    """The ids of the ``n`` cases the evaluator ran through (its data loader's data list, in order);
    ``case<i>`` where the list is not there or not as long."""
    data = getattr(getattr(getattr(evaluator, "data_loader", None), "dataset", None), "data", None)
    try:
        ids = [_case_id(item, i) for i, item in enumerate(data)] if data is not None else []
    except TypeError:
        ids = []
    if len(ids) != n:
        return [f"case{i}" for i in range(n)]
    if len(set(ids)) != n:  # two entries with the same file name (different folders): keep them apart
        ids = [f"{c}#{i}" for i, c in enumerate(ids)]
    return ids


def _first_sample(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        return obj[:1].detach().clone()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_first_sample(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _first_sample(v) for k, v in obj.items()}
    return obj


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _measure_model(net, args, kwargs, device, reps: int) -> dict[str, Any]:
    """Parameters, receptive field, GFLOPs and latency of one forward of one sample."""
    import statistics

    import torch

    from ..metrics import count_flops
    from ..networks import receptive_field

    out: dict[str, Any] = {"params": int(sum(p.numel() for p in net.parameters() if p.requires_grad))}
    try:
        rf = receptive_field(net)
        out["receptive_field"] = "all" if (isinstance(rf, float) and math.isinf(rf)) else (
            list(rf) if isinstance(rf, tuple) else int(rf))
    except Exception:  # networks outside this package: no chain to follow
        out["receptive_field"] = None
    if args is None:
        out.update(gflops=None, latency_ms=None, input_shape=None)
        return out
    out["input_shape"] = [list(a.shape) for a in args if isinstance(a, torch.Tensor)]
    tensors = all(isinstance(a, torch.Tensor) for a in args)
    # count_flops feeds zeros of these shapes (FLOPs do not depend on values); None for non-tensor inputs
    out["gflops"] = count_flops(net, [tuple(a.shape) for a in args], device=args[0].device, dtype=args[0].dtype,
                                **kwargs) / 1e9 if tensors and args else None
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            for _ in range(2):
                net(*args, **kwargs)
            times = []
            for _ in range(max(1, reps)):
                _sync(device)
                t0 = time.perf_counter()
                net(*args, **kwargs)
                _sync(device)
                times.append((time.perf_counter() - t0) * 1e3)
            out["latency_ms"] = statistics.median(times)
    finally:
        net.train(was_training)
    return out


def _evaluate(spec: dict, overrides: dict, state_dict: dict, split: str, noise: dict | None = None,
              capture: bool = False) -> dict[str, Any]:
    """The key metric of the final weights on ``split`` (+ the noise sweep and the captured network input)."""
    import numpy as np
    import torch
    from ignite.engine import Events

    from ..bundle.robustness import corrupt

    parser = _parser(spec, overrides)
    if str(parser.get("datalists#_target_", "")).endswith("prepare_dataset"):
        parser["datalists#check_load"] = False  # the cell's training run has read and validated every image
    expr = _split_data_expr(parser, split)
    if split != "validation":
        if expr is None:
            return {"metric": None, "note": f"validate#dataset#data does not select datalists['validation']; "
                                            f"no {split} evaluation"}
        parser["validate#dataset#data"] = expr
    parser["validate#handlers"] = []  # no best-model saving or logging from these evaluations
    if "eval_network" in parser:
        parser["eval_network"] = "@network"  # evaluate (and count) the bundle's network with the given weights
    evaluator = parser.get_parsed_content("validate#evaluator")
    net = evaluator.network
    net.load_state_dict(state_dict)
    result: dict[str, Any] = {}
    captured: dict[str, Any] = {}
    handle = None
    if capture:
        def hook(module, args, kwargs):
            if "args" not in captured:
                captured["args"], captured["kwargs"] = _first_sample(args), _first_sample(kwargs)

        handle = net.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        evaluator.run()
    finally:
        if handle is not None:
            handle.remove()
    result["metric"] = _key_metric(evaluator)
    result["metric_key"] = evaluator.state.key_metric_name
    result["per_case"] = _per_case(evaluator, result["metric_key"])
    if result["per_case"] is not None:
        result["case_ids"] = _case_ids(evaluator, len(result["per_case"]))
    result["captured"] = captured or None
    result["network"] = net
    if noise:
        key = spec.get("image_key", "image")
        rob: dict[str, dict[str, float]] = {}
        rob_cases: dict[str, dict[str, list | None]] = {}
        for ntype, levels in noise.items():
            rob[ntype], rob_cases[ntype] = {}, {}
            for level in levels:
                if float(level) <= 0:
                    rob[ntype][str(float(level))] = result["metric"]
                    rob_cases[ntype][str(float(level))] = result.get("per_case")
                    continue
                rng = np.random.RandomState(int(spec["seed"]) * 1000 + int(round(float(level) * 1e4)) % 997)

                def corrupt_batch(engine, ntype=ntype, level=level, rng=rng):
                    batch = engine.state.batch
                    if not isinstance(batch, dict) or key not in batch:
                        raise KeyError(f"noise robustness: batches have no {key!r} key (keys: "
                                       f"{sorted(batch) if isinstance(batch, dict) else type(batch).__name__}).")
                    img = batch[key]
                    img.copy_(corrupt(img.as_tensor() if hasattr(img, "as_tensor") else img, ntype, float(level), rng))

                evaluator.add_event_handler(Events.GET_BATCH_COMPLETED, corrupt_batch)
                try:
                    evaluator.run()
                finally:
                    evaluator.remove_event_handler(corrupt_batch, Events.GET_BATCH_COMPLETED)
                rob[ntype][str(float(level))] = _key_metric(evaluator)
                rob_cases[ntype][str(float(level))] = _per_case(evaluator, result["metric_key"])
        result["robustness"] = rob
        result["robustness_per_case"] = rob_cases  # the same cases as "per_case", for paired statistics
    return result


def _per_case(evaluator: Any, metric_key: str) -> list[float] | None:
    """The key metric per case of the evaluator's last run (MONAI metric handlers keep them in
    ``state.metric_details``; mean over channels), or None where the handler keeps none."""
    import torch

    details = getattr(evaluator.state, "metric_details", {}).get(metric_key)
    if details is None:
        return None
    d = torch.as_tensor(details).float()
    return (d.reshape(d.shape[0], -1).nanmean(dim=1) if d.ndim > 1 else d.reshape(-1)).tolist()


def _reset_peak_rss() -> None:
    """Start the process's peak-RSS count afresh (Linux ``clear_refs`` 5), so the cell's peak is its
    own: ``ru_maxrss`` would carry the parent's peak over a fork (every cell would report the runner's)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_mb() -> float | None:
    """Peak resident set size since :func:`_reset_peak_rss` (``VmHWM``), in MiB; None where unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    if sys.platform == "darwin":  # bytes there, and no reset: an upper bound
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return None


def _describe(exc: BaseException) -> str:
    """The error and its root cause (MONAI's config parser wraps the real error in a RuntimeError)."""
    text = f"{type(exc).__name__}: {exc}".strip()
    root, seen = exc, set()
    while (root.__cause__ or root.__context__) is not None and id(root) not in seen:
        seen.add(id(root))
        root = root.__cause__ or root.__context__
    if root is not exc:
        text = f"{type(root).__name__}: {root} (raised as {text.splitlines()[0]})"
    return text


def run_cell(spec: dict) -> dict[str, Any]:
    """Train and measure one cell (see the module docstring) under its folder's lock.

    Returns:
        the result dict (also written to ``result.json``).

    Raises:
        CellBusyError: another process works in the cell folder (nothing is written).
    """
    with cell_lock(spec["cell_dir"]):
        return _run_cell(spec)


def _run_cell(spec: dict) -> dict[str, Any]:
    import torch

    from ..bundle.results import write_json

    cell_dir = Path(spec["cell_dir"])
    cell_dir.mkdir(parents=True, exist_ok=True)
    base = {k: spec.get(k) for k in ("algorithm", "name", "options", "fold", "seed", "metric_name")}
    base.update(source="compare", cell_dir=str(cell_dir), device=spec["device"])
    t_start = time.time()
    try:
        if spec.get("threads"):
            torch.set_num_threads(int(spec["threads"]))
        if torch.device(spec["device"]).type == "cuda":
            torch.cuda.reset_peak_memory_stats(spec["device"])
        _reset_peak_rss()
        from monai.bundle import ConfigWorkflow

        resume = (cell_dir / "models" / "checkpoint_last.pt").is_file()
        overrides = _overrides(spec, resume)
        wf = ConfigWorkflow(config_file=_configs(spec), workflow_type="train",
                            meta_file=str(Path(spec["bundle"]) / "configs" / "metadata.json"),
                            logging_file=spec.get("logging_file"), **overrides)
        wf.initialize()
        t0 = time.perf_counter()
        wf.run()
        train_time = time.perf_counter() - t0
        # the weights the bundle validates and saves: its weight average (``eval_network``) where it has one
        network = wf.parser.get_parsed_content("eval_network" if "eval_network" in wf.parser else "network")
        state = {k: v.detach().clone() for k, v in getattr(network, "module", network).state_dict().items()}
        wf.finalize()
        ev_overrides = {**overrides, "resume": False}
        test = _evaluate(spec, ev_overrides, state, "validation", noise=spec.get("noise"), capture=True)
        train = _evaluate(spec, ev_overrides, state, "training")
        cap = test.get("captured") or {}
        measured = _measure_model(test["network"], cap.get("args"), cap.get("kwargs") or {}, spec["device"],
                                  int(spec.get("latency_reps", 10)))
        if torch.device(spec["device"]).type == "cuda":
            peak = torch.cuda.max_memory_allocated(spec["device"]) / 2**20
        else:
            peak = _peak_rss_mb()
        rob = test.get("robustness") or {}
        noisy = [v for levels in rob.values() for lv, v in levels.items() if float(lv) > 0]
        sign = 1.0 if spec.get("higher_is_better", True) else -1.0
        result = {
            **base, "status": "ok", "error": None,
            "metric_key": test["metric_key"],
            "train_metric": train["metric"], "test_metric": test["metric"], "test_per_case": test.get("per_case"),
            "test_case_ids": test.get("case_ids"),
            "gap": None if train["metric"] is None else sign * (train["metric"] - test["metric"]),
            **measured,
            "train_time_s": train_time, "resumed": resume,
            "peak_mem_mb": peak,
            "robustness": rob, "robustness_per_case": test.get("robustness_per_case") or {},
            "robust_metric": (sum(noisy) / len(noisy)) if noisy else None,
            "notes": [n for n in (train.get("note"),) if n],
            "wall_time_s": time.time() - t_start,
        }
    except Exception as exc:  # recorded, never raised: one failing cell must not stop the others
        result = {**base, "status": "failed", "error": _describe(exc),
                  "traceback": traceback.format_exc(), "wall_time_s": time.time() - t_start}
    result["spec_hash"] = spec.get("spec_hash")
    write_json(result, cell_dir / RESULT_FILE)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m monai_hyperconv.compare.cell CELL_DIR/cell.json", file=sys.stderr)
        return 2
    _end_with_parent()
    with open(argv[0], encoding="utf-8") as f:
        spec = json.load(f)
    try:
        result = run_cell(spec)
    except CellBusyError as e:
        print(f"error: {e}", file=sys.stderr)
        return BUSY_EXIT
    print(json.dumps({k: result.get(k) for k in ("algorithm", "fold", "status", "test_metric", "error")}))
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
