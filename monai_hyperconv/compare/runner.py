"""The comparison runner: algorithms x folds through one bundle recipe -> a leaderboard.

>>> from monai_hyperconv.compare import run_comparison
>>> run_comparison("segmentation", ["unet:kernel_size=3", "hyper_unet:kernel_size=5,n_l=4"], folds=2,
...                epochs=5, output_dir="runs/compare_liver")  # doctest: +SKIP

Every cell runs in its own process (``python -m monai_hyperconv.compare.cell``), at most
``workers`` at a time, each pinned to one device (GPUs round-robin when present, else CPU with
``cpu_count // workers`` threads). Finished cells (``result.json`` with status "ok" and the same
cell spec) are not recomputed; a failed cell (an exception, or a process that died) is recorded
with its error and the others go on. The leaderboard is rewritten after every cell.

The cell spec includes a fingerprint of the data (:func:`data_fingerprint`), so a rewritten data
list is never mixed with cells trained on the old one. Each cell process works under its folder's
lock (:func:`~monai_hyperconv.compare.cell.cell_lock`): a cell another process is working on is
reported "busy" and not started twice. Cells run in their own process groups, which the runner
stops when it exits for any reason (an error, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .cell import BUSY_EXIT, CELL_FILE, LOCK_FILE, PARENT_ENV, RESULT_FILE, CellBusyError, cell_lock
from .spec import DEFAULT_NOISE, TASKS, AlgorithmSpec, bundle_dir, network_config, parse_algorithm

__all__ = ["run_comparison", "plan_cells", "cell_environment", "data_fingerprint", "MANIFEST_FILE",
           "ComparisonError"]

MANIFEST_FILE = "comparison.json"
#: manifest fields that must match when an output folder is reused (algorithms may be added)
_SHARED_KEYS = ("task", "bundle", "configs", "dataset_dir", "data_fingerprint", "folds", "budget", "seed",
                "overrides", "noise")


class ComparisonError(ValueError):
    """Bad comparison input (names the argument, file or key)."""


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _devices(devices: Sequence[str] | None) -> list[str]:
    if devices:
        return list(devices)
    import torch

    n = torch.cuda.device_count()
    return [f"cuda:{i}" for i in range(n)] if n else ["cpu"]


def _resolve_data(demo_task: str, data: str | os.PathLike | None, output_dir: Path) -> tuple[str, bool]:
    """(dataset_dir, is_demo): ``data`` is a folder with ``dataset.json`` or the ``dataset.json`` itself."""
    if data is None:
        return str((output_dir / "data" / f"{demo_task}_demo").resolve()), True
    p = Path(data)
    if p.is_file():
        if p.name != "dataset.json":
            raise ComparisonError(f"--data {p}: a data list file must be named dataset.json "
                                  f"(Decathlon layout, paths relative to its folder).")
        p = p.parent
    if not (p / "dataset.json").is_file():
        raise ComparisonError(f"--data {p}: no dataset.json there (a Decathlon-style data list is expected).")
    return str(p.resolve()), False


def _listed_files(node: Any, root: Path) -> set[str]:
    """The strings anywhere in a data list that name a file relative to ``root`` (or absolute)."""
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, list):
        return set().union(*(_listed_files(n, root) for n in node)) if node else set()
    if not isinstance(node, str) or not node:
        return set()
    try:
        return {os.path.normpath(node)} if (root / node).is_file() else set()
    except (OSError, ValueError):  # descriptions too long or odd for a path
        return set()


def data_fingerprint(dataset_dir: str | os.PathLike) -> str:
    """A sha256 of ``dataset_dir/dataset.json``'s bytes and of every file it lists: path, size, mtime_ns.

    Cheap (one ``stat`` per file, no image is read): a rewritten data list, or a listed file that was
    replaced, edited or merely touched or copied anew, changes it.
    """
    root = Path(dataset_dir)
    raw = (root / "dataset.json").read_bytes()
    h = hashlib.sha256(raw)
    for rel in sorted(_listed_files(json.loads(raw), root)):
        st = (root / rel).stat()
        h.update(f"\0{rel}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _set_fingerprint(manifest: dict, cells: list[dict], fingerprint: str | None) -> None:
    """Put the data fingerprint into the manifest and every cell, and (re)compute the cells' spec hashes."""
    manifest["data_fingerprint"] = fingerprint
    for cell in cells:
        cell["data_fingerprint"] = fingerprint
        # where a cell lives is not part of what it is (its folder name may change between versions)
        cell["spec_hash"] = _hash({k: v for k, v in cell.items() if k not in ("cell_dir", "slug", "spec_hash")})


def plan_cells(
    task: str,
    algorithms: Sequence[str | AlgorithmSpec],
    folds: int,
    output_dir: str | os.PathLike,
    epochs: int | None = None,
    iterations: int | None = None,
    data: str | os.PathLike | None = None,
    bundle: str | os.PathLike | None = None,
    configs: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    noise: Mapping[str, Sequence[float]] | None = None,
    seed: int = 0,
    fold_ids: Sequence[int] | None = None,
    latency_reps: int = 10,
) -> tuple[dict, list[dict]]:
    """The manifest and the cell specs of a comparison (nothing is run or written).

    Demo data that is not generated yet has no data fingerprint (None): :func:`run_comparison`
    generates it and then sets the fingerprint.

    Args: see :func:`run_comparison`.
    """
    from monai.bundle import ConfigParser

    if task not in TASKS:
        raise ComparisonError(f"task {task!r}: choose one of {sorted(TASKS)}.")
    spec_t = TASKS[task]
    if (epochs is None) == (iterations is None):
        raise ComparisonError("give exactly one budget: epochs or iterations.")
    budget = {"epochs": int(epochs)} if epochs is not None else {"iterations": int(iterations)}
    if min(budget.values()) < 1:
        raise ComparisonError(f"budget must be >= 1, got {budget}.")
    if not isinstance(folds, int) or folds < 1:
        raise ComparisonError(f"folds must be a positive int, got {folds!r}.")
    if not algorithms:
        raise ComparisonError("no algorithms given.")
    algos = [a if isinstance(a, AlgorithmSpec) else parse_algorithm(a) for a in algorithms]
    slugs = [a.slug for a in algos]
    dup = sorted({s for s in slugs if slugs.count(s) > 1})
    if dup:
        raise ComparisonError(f"algorithms given twice: {dup}.")
    out = Path(output_dir).resolve()
    bdir = bundle_dir(bundle or spec_t.bundle)
    from monai.bundle import ConfigParser as _CP

    # the bundle's own demo (e.g. the MS bundle under task "segmentation"), else the task's
    base_cfg = _CP.load_config_files([str(bdir / "configs" / "train.json")])
    demo_task = base_cfg.get("demo_task") if isinstance(base_cfg.get("demo_task"), str) else spec_t.demo_task
    dataset_dir, is_demo = _resolve_data(demo_task, data, out)
    if configs is None:
        configs = ["train.json"] + (["demo.json"] if is_demo and (bdir / "configs" / "demo.json").is_file() else [])
    cfg_paths = []
    for c in configs:
        p = Path(c) if Path(c).is_file() else bdir / "configs" / c
        if not p.is_file():
            raise ComparisonError(f"config {c!r}: not found (looked in {bdir / 'configs'}).")
        cfg_paths.append(str(p.resolve()))
    parser = ConfigParser()
    parser.read_config(cfg_paths)
    ov = dict(overrides or {})
    for key in ov:
        if key.split("#")[0] not in parser.get():
            raise ComparisonError(f"override {key!r}: the bundle config has no {key.split('#')[0]!r} entry.")
    parser.update(ov)
    base_net = parser.get(spec_t.network_key)
    if not isinstance(base_net, dict):
        raise ComparisonError(f"bundle {bdir.name}: config entry {spec_t.network_key!r} is not a network dict.")
    if folds > 1 and "fold" not in parser.get():
        raise ComparisonError(f"folds={folds}: bundle {bdir.name} has no 'fold' setting (use folds=1).")
    fold_list = list(range(folds)) if fold_ids is None else [int(f) for f in fold_ids]
    bad = [f for f in fold_list if not 0 <= f < folds]
    if bad:
        raise ComparisonError(f"fold_ids {bad} outside 0..{folds - 1}.")
    noise = {k: [float(x) for x in v] for k, v in (DEFAULT_NOISE[task] if noise is None else noise).items()}
    from ..bundle.robustness import NOISE_TYPES

    unknown = sorted(set(noise) - set(NOISE_TYPES))
    if unknown:
        raise ComparisonError(f"noise {unknown}: choose from {sorted(NOISE_TYPES)}.")
    manifest = {
        "task": task, "bundle": str(bdir), "configs": cfg_paths, "dataset_dir": dataset_dir, "is_demo": is_demo,
        "demo_task": demo_task if is_demo else None,
        "folds": folds, "budget": budget, "seed": int(seed), "overrides": ov, "noise": noise,
        "metric": spec_t.metric, "higher_is_better": spec_t.higher_is_better,
        "algorithms": [{"text": a.text, "name": a.name, "options": a.options, "slug": a.slug} for a in algos],
    }
    cells = []
    for a in algos:
        net_cfg = network_config(base_net, a)
        for f in fold_list:
            cell = {
                "algorithm": a.text, "name": a.name, "options": a.options, "slug": a.slug, "fold": f,
                "num_folds": folds, "bundle": str(bdir), "configs": cfg_paths, "dataset_dir": dataset_dir,
                "overrides": ov, "network_key": spec_t.network_key, "network": net_cfg, "budget": budget,
                "seed": int(seed), "noise": noise, "metric_name": spec_t.metric,
                "higher_is_better": spec_t.higher_is_better, "latency_reps": int(latency_reps),
                "has_fold": "fold" in parser.get(),
                "cell_dir": str(out / "cells" / a.slug / f"fold{f}"),
            }
            cells.append(cell)
    has_data = (Path(dataset_dir) / "dataset.json").is_file()
    _set_fingerprint(manifest, cells, data_fingerprint(dataset_dir) if has_data else None)
    return manifest, cells


def _check_manifest(out: Path, manifest: dict) -> dict:
    """Merge ``manifest`` with the one already in ``out`` (same shared settings required)."""
    path = out / MANIFEST_FILE
    if not path.is_file():
        return manifest
    old = json.loads(path.read_text())
    diff = [k for k in _SHARED_KEYS if json.dumps(old.get(k), sort_keys=True) != json.dumps(manifest.get(k), sort_keys=True)]
    if diff:
        shown = [k for k in diff if k != "data_fingerprint"]  # a hash says nothing to the user
        why = [f"different {shown} (was {[old.get(k) for k in shown]}, now {[manifest.get(k) for k in shown]})"] if shown else []
        if "data_fingerprint" in diff:
            data = Path(manifest["dataset_dir"]) / "dataset.json"
            why.append(f"other data: {data} or a file it lists changed since its cells were trained (the list's "
                       f"content and the files' sizes and modification times are compared)" if old.get("data_fingerprint")
                       else f"no record of the data it was trained on (made before data fingerprints), so it cannot "
                            f"be checked against {data}")
        raise ComparisonError(
            f"{path}: this output folder holds a comparison with {'; and '.join(why)}; "
            f"use another --output folder (nothing was overwritten).")
    known = {a["slug"] for a in old["algorithms"]}
    merged = dict(manifest)
    merged["algorithms"] = old["algorithms"] + [a for a in manifest["algorithms"] if a["slug"] not in known]
    return merged


def _finished(cell: dict, retry_failed: bool = True) -> dict | None:
    path = Path(cell["cell_dir"]) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    keep = ("ok",) if retry_failed else ("ok", "failed")
    return res if res.get("status") in keep and res.get("spec_hash") == cell["spec_hash"] else None


def cell_environment(device: str, threads: int, base_env: Mapping[str, str] | None = None) -> tuple[dict, str]:
    """(environment, device inside the cell) of a cell process pinned to ``device``.

    A GPU cell sees only its GPU (``CUDA_VISIBLE_DEVICES``) and uses it as ``cuda:0``; a CPU cell
    gets ``threads`` OpenMP threads, so parallel cells do not oversubscribe the cores.
    """
    env = dict(os.environ if base_env is None else base_env)
    if device.startswith("cuda"):
        env["CUDA_VISIBLE_DEVICES"] = device.split(":")[1] if ":" in device else "0"
        return env, "cuda:0"
    env["OMP_NUM_THREADS"] = str(threads)
    return env, device


def _busy(cell: dict) -> str | None:
    """Why the cell cannot start now (another process holds its folder's lock), else None.

    Checked before :func:`_launch` writes into the folder; the cell process takes the lock itself,
    which settles a race between two runners.
    """
    if not (Path(cell["cell_dir"]) / LOCK_FILE).is_file():
        return None
    try:
        with cell_lock(cell["cell_dir"]):
            return None
    except CellBusyError as e:
        return str(e)


def _busy_row(cell: dict, message: str) -> dict:
    """The row of a cell another process works on: reported, never written as its result."""
    res = {k: cell[k] for k in ("algorithm", "name", "options", "fold", "metric_name")}
    res.update(status="busy", source="compare", cell_dir=cell["cell_dir"], spec_hash=cell["spec_hash"], error=message)
    return res


def _launch(cell: dict, device: str, threads: int) -> subprocess.Popen:
    from ..bundle.results import write_json

    cell_dir = Path(cell["cell_dir"])
    cell_dir.mkdir(parents=True, exist_ok=True)
    env, inner = cell_environment(device, threads)
    env[PARENT_ENV] = str(os.getpid())  # the cell ends itself if this process dies without stopping it
    run_cell = dict(cell, device=inner, threads=threads)
    write_json(run_cell, cell_dir / CELL_FILE)
    log = open(cell_dir / "log.txt", "ab")
    # its own process group: the runner stops the cell with its DataLoader workers, and a terminal's
    # Ctrl-C reaches the runner only, which then stops its cells
    group = {"start_new_session": True} if os.name == "posix" else {}
    proc = subprocess.Popen([sys.executable, "-m", "monai_hyperconv.compare.cell", str(cell_dir / CELL_FILE)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, **group)
    proc._log = log  # type: ignore[attr-defined]  # closed when the process ends
    return proc


def _signal_cell(proc: subprocess.Popen, kill: bool) -> None:
    """SIGTERM (``kill``: SIGKILL) the cell's process group; terminate/kill the process elsewhere."""
    if os.name != "posix":
        if proc.poll() is None and kill:
            proc.kill()
        elif proc.poll() is None:
            proc.terminate()
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
    except OSError:  # the group is gone
        pass


def _stop_cells(procs: Sequence[subprocess.Popen], grace: float = 5.0) -> None:
    """Stop the cells' process groups: SIGTERM, SIGKILL after ``grace`` seconds; reap them."""
    for proc in procs:
        _signal_cell(proc, kill=False)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        _signal_cell(proc, kill=True)  # also the group's leftovers (workers) once the cell itself ended
        proc.wait()
        proc._log.close()  # type: ignore[attr-defined]


@contextlib.contextmanager
def _cells_die_with_runner(running: list[tuple[dict, subprocess.Popen, int]]) -> Iterator[None]:
    """While the block runs, SIGTERM raises ``SystemExit(143)``; however it ends (also at interpreter
    exit), the cells still in ``running`` are stopped. The previous SIGTERM handler is restored."""

    def stop() -> None:
        procs = [proc for _, proc, _ in running]
        running.clear()
        _stop_cells(procs)

    def on_sigterm(signum, frame) -> None:
        raise SystemExit(128 + signum)

    previous = None
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGTERM"):
        previous = signal.signal(signal.SIGTERM, on_sigterm)
        previous = signal.SIG_DFL if previous is None else previous  # None: a handler not set from Python
    atexit.register(stop)
    try:
        yield
    finally:
        try:
            stop()
        finally:
            atexit.unregister(stop)
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _collect(cell: dict, proc: subprocess.Popen) -> dict:
    """The cell's result; a process that died without writing one is recorded as failed."""
    from ..bundle.results import write_json

    proc._log.close()  # type: ignore[attr-defined]
    if proc.returncode == BUSY_EXIT:  # it found another process working in its folder (whose log it shares)
        return _busy_row(cell, _busy(cell) or f"cell folder {cell['cell_dir']} was busy: another process held its "
                                              f"lock ({LOCK_FILE}); not started beside it (re-run when it is done).")
    path = Path(cell["cell_dir"]) / RESULT_FILE
    res = None
    if path.is_file():
        try:
            res = json.loads(path.read_text())
        except ValueError:
            res = None
    if res is None or res.get("spec_hash") != cell["spec_hash"]:
        log = Path(cell["cell_dir"]) / "log.txt"
        tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
        res = {k: cell[k] for k in ("algorithm", "name", "options", "fold", "metric_name")}
        res.update(status="failed", source="compare", cell_dir=cell["cell_dir"], spec_hash=cell["spec_hash"],
                   error=f"cell process exited with code {proc.returncode} without a result; log tail:\n{tail}")
        write_json(res, path)
    return res


def _cell_line(res: dict, metric: str) -> str:
    if res["status"] == "ok":
        return f"{res['algorithm']} fold {res['fold']}: test {metric} {res['test_metric']:.4f}"
    what = "BUSY" if res["status"] == "busy" else "FAILED"
    return f"{res['algorithm']} fold {res['fold']}: {what} ({str(res['error']).splitlines()[0][:300]})"


def run_comparison(
    task: str,
    algorithms: Sequence[str | AlgorithmSpec],
    folds: int = 5,
    output_dir: str | os.PathLike = "runs/compare",
    epochs: int | None = None,
    iterations: int | None = None,
    data: str | os.PathLike | None = None,
    bundle: str | os.PathLike | None = None,
    configs: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    noise: Mapping[str, Sequence[float]] | None = None,
    seed: int = 0,
    workers: int = 1,
    devices: Sequence[str] | None = None,
    fold_ids: Sequence[int] | None = None,
    auto3dseg_work_dirs: Sequence[str | os.PathLike] = (),
    latency_reps: int = 10,
    progress: bool = True,
    isolate: bool = True,
    retry_failed: bool = True,
) -> dict[str, Any]:
    """Train and measure every algorithm x fold with one bundle's recipe; write the leaderboard.

    Args:
        task: "segmentation", "reconstruction", "classification" or "registration" (:data:`TASKS`).
        algorithms: specs like ``"unet:kernel_size=3"`` (see :func:`parse_algorithm`).
        folds: k of k-fold cross-validation (the bundle's ``fold``/``num_folds`` re-split the data).
        output_dir: where ``cells/``, the leaderboard and plots go; reusing it resumes.
        epochs, iterations: the training budget (exactly one).
        data: a folder with ``dataset.json`` (or the file); default: the task's demo, generated.
        bundle: the recipe (default: the task's bundle); configs: its config files (default
            ``train.json`` + ``demo.json`` on demo data).
        overrides: config ids -> values for every cell (e.g. ``{"image_size": 64}``).
        noise: ``{noise: [levels]}`` robustness sweep (default per task; ``{}`` for none).
        seed: the same for every cell (fair: same splits, same initial data order).
        workers: cells run in parallel; devices: e.g. ``["cuda:0", "cuda:1"]`` (default: all GPUs, else CPU).
        fold_ids: run only these folds (default all).
        auto3dseg_work_dirs: Auto3DSeg work directories whose algorithms join the leaderboard.
        latency_reps: timed forwards per latency measurement.
        progress: a tqdm bar over cells and one line per finished cell.
        retry_failed: re-run cells recorded as failed (default); ``False`` keeps their recorded error.
            A cell whose folder another process has locked is not run: its row has status "busy"
            (not on the leaderboard, no ``result.json`` written).
        isolate: one process per cell (default). ``False`` runs the cells one after the other in
            this process (``workers`` must be 1): no process start-up per cell, for smoke runs and
            tests; a crash then stops the run, and ``peak_mem_mb`` is this process's running peak.

    Returns:
        ``{"results": [...], "leaderboard": [...], "paths": {...}}``.
    """
    from ..bundle.results import write_json
    from .leaderboard import write_outputs

    out = Path(output_dir).resolve()
    manifest, cells = plan_cells(task, algorithms, folds, out, epochs=epochs, iterations=iterations, data=data,
                                 bundle=bundle, configs=configs, overrides=overrides, noise=noise, seed=seed,
                                 fold_ids=fold_ids, latency_reps=latency_reps)
    if not isinstance(workers, int) or workers < 1:
        raise ComparisonError(f"workers must be a positive int, got {workers!r}.")
    if not isolate and workers != 1:
        raise ComparisonError(f"isolate=False runs cells in this process: workers must be 1, got {workers}.")
    extra_rows: list[dict] = []
    for wd in auto3dseg_work_dirs:
        from .auto3dseg import read_auto3dseg_workdir

        # prefixed, so an Auto3DSeg "hyperunet" is not averaged with a runner "hyperunet"
        extra_rows += [dict(r, algorithm=f"auto3dseg:{r['algorithm']}") for r in read_auto3dseg_workdir(wd)]
    if manifest["data_fingerprint"] is None:
        # the demo, generated once here (not concurrently in every worker) and before the
        # fingerprint, which then stays the same on every re-run
        from ..data import ensure_demo

        ensure_demo(manifest["demo_task"], manifest["dataset_dir"])
        _set_fingerprint(manifest, cells, data_fingerprint(manifest["dataset_dir"]))
    manifest = _check_manifest(out, manifest)
    out.mkdir(parents=True, exist_ok=True)
    write_json(manifest, out / MANIFEST_FILE)

    results: dict[str, dict] = {}
    todo = []
    for c in cells:
        done = _finished(c, retry_failed)
        if done is not None:
            results[c["cell_dir"]] = done
        else:
            todo.append(c)
    devs = _devices(devices)
    threads = max(1, (os.cpu_count() or 1) // workers)
    n_total = len(cells)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_total, initial=n_total - len(todo), desc="cells", unit="cell")
        if len(todo) < n_total:
            bar.write(f"resuming: {n_total - len(todo)} of {n_total} cells already finished in {out}")

    # algorithms of earlier runs into the same folder stay on the leaderboard (not re-run)
    current = {c["slug"] for c in cells}
    earlier: list[dict] = []
    for a in manifest["algorithms"]:
        if a["slug"] in current:
            continue
        for fdir in sorted((out / "cells" / a["slug"]).glob("fold*/" + RESULT_FILE)):
            try:
                earlier.append(json.loads(fdir.read_text()))
            except ValueError:
                pass

    rank = {a["text"]: i for i, a in enumerate(manifest["algorithms"])}

    def refresh() -> dict:
        # a busy cell is someone else's work in progress: not a result
        ordered = earlier + [results[c["cell_dir"]] for c in cells
                             if results.get(c["cell_dir"], {}).get("status") not in (None, "busy")]
        ordered.sort(key=lambda r: (rank.get(r["algorithm"], len(rank)), r.get("fold", 0)))  # manifest order
        return write_outputs(ordered + extra_rows, manifest, out)

    running: list[tuple[dict, subprocess.Popen, int]] = []  # (cell, process, worker slot)
    free = list(range(workers))
    paths = refresh()

    def record(cell: dict, res: dict) -> None:
        nonlocal paths
        results[cell["cell_dir"]] = res
        paths = refresh()
        if bar is not None:
            bar.write(_cell_line(res, manifest["metric"]))
            bar.update(1)

    with _cells_die_with_runner(running):
        while todo and not isolate:  # in this process, one after the other
            from .cell import run_cell

            cell = todo.pop(0)
            busy = _busy(cell)
            if busy is None:
                spec = dict(cell, device=devs[0], threads=None)
                write_json(spec, Path(cell["cell_dir"]) / CELL_FILE)  # as an isolated cell: re-runnable on its own
                try:
                    res = run_cell(spec)
                except CellBusyError as e:  # locked between the check and the start
                    res = _busy_row(cell, str(e))
            else:
                res = _busy_row(cell, busy)
            record(cell, res)
        while todo or running:
            while todo and free:
                cell = todo.pop(0)
                busy = _busy(cell)
                if busy is not None:
                    record(cell, _busy_row(cell, busy))
                    continue
                slot = free.pop(0)
                running.append((cell, _launch(cell, devs[slot % len(devs)], threads), slot))
            time.sleep(0.2)
            for item in list(running):
                cell, proc, slot = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                free.append(slot)
                record(cell, _collect(cell, proc))
    if bar is not None:
        bar.close()
        print(f"leaderboard: {paths['markdown']}\n            {paths['csv']}\nper-fold results: {paths['json']}")
    ordered = [results[c["cell_dir"]] for c in cells]
    return {"results": ordered + extra_rows, "leaderboard": paths["rows"], "paths": paths, "manifest": manifest}
