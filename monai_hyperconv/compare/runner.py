"""The comparison runner: algorithms x folds (x seeds) through one bundle recipe -> a leaderboard.

>>> from monai_hyperconv.compare import ComparisonSettings, run_comparison
>>> run_comparison("segmentation", ["unet:kernel_size=3", "hyper_unet:kernel_size=5,n_l=4"],
...                ComparisonSettings(folds=2, epochs=5, output_dir="runs/compare_liver"))  # doctest: +SKIP

Every option besides the task and the algorithms is a field of :class:`ComparisonSettings`.
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
from .settings import ComparisonError, ComparisonSettings, settings_from_call
from .spec import DEFAULT_NOISE, TASKS, AlgorithmSpec, TaskSpec, bundle_dir, network_config, parse_algorithm

__all__ = ["run_comparison", "plan_cells", "cell_environment", "data_fingerprint", "MANIFEST_FILE",
           "ComparisonError", "ComparisonSettings"]

MANIFEST_FILE = "comparison.json"
#: manifest fields that must match when an output folder is reused (algorithms may be added)
_SHARED_KEYS = ("task", "bundle", "configs", "dataset_dir", "data_fingerprint", "folds", "budget", "seed",
                "overrides", "noise")


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


#: the positional order of the deprecated ``plan_cells(task, algorithms, folds, output_dir, ...)``
_PLAN_POSITIONAL = ("folds", "output_dir", "epochs", "iterations", "data", "bundle", "configs", "overrides", "noise",
                    "seed", "fold_ids", "latency_reps")


def plan_cells(task: str, algorithms: Sequence[str | AlgorithmSpec], settings: ComparisonSettings | None = None,
               *deprecated_args: Any, **deprecated_kwargs: Any) -> tuple[dict, list[dict]]:
    """The manifest and the cell specs of a comparison (nothing is run or written).

    Demo data that is not generated yet has no data fingerprint (None): :func:`run_comparison`
    generates it and then sets the fingerprint.

    Args:
        task, algorithms: see :func:`run_comparison`.
        settings: the comparison's :class:`ComparisonSettings` (the run-only ones, such as
            ``workers``, do not change the plan).
        deprecated_args, deprecated_kwargs: the keyword form of earlier releases,
            ``plan_cells(task, algorithms, folds, output_dir, epochs=..., ...)``; it still works
            for this release and issues a :class:`DeprecationWarning`.
    """
    settings = settings_from_call("plan_cells", settings, deprecated_args, deprecated_kwargs, _PLAN_POSITIONAL)
    if task not in TASKS:
        raise ComparisonError(f"task {task!r}: choose one of {sorted(TASKS)}.")
    spec_t = TASKS[task]
    algos = _algorithm_specs(algorithms)
    out = settings.output_dir.resolve()
    recipe = _recipe(spec_t, settings, out)
    folds = settings.folds
    if folds > 1 and not recipe["has_fold"]:
        raise ComparisonError(f"folds={folds}: bundle {Path(recipe['bundle']).name} has no 'fold' setting "
                              f"(use folds=1).")
    fold_list = list(range(folds)) if settings.fold_ids is None else list(settings.fold_ids)
    noise = DEFAULT_NOISE[task] if settings.noise is None else settings.noise
    # what the manifest and every cell record alike
    common = {k: recipe[k] for k in ("bundle", "configs", "dataset_dir", "overrides")}
    common.update(budget=settings.budget, seed=settings.seed, higher_is_better=spec_t.higher_is_better,
                  noise={k: [float(x) for x in v] for k, v in noise.items()})
    seeds = list(settings.seed_list)
    reference = _reference(settings.reference, algos)
    manifest = {
        "task": task, **common, "seeds": seeds, "reference": reference, "is_demo": recipe["is_demo"],
        "demo_task": recipe["demo_task"] if recipe["is_demo"] else None, "folds": folds, "metric": spec_t.metric,
        "algorithms": [{"text": a.text, "name": a.name, "options": a.options, "slug": a.slug} for a in algos],
    }
    cells = []
    for a in algos:
        net_cfg = network_config(recipe["network"], a)
        for f in fold_list:
            for s in seeds:
                # the base seed's cell is the single-seed cell of earlier releases: same folder, same spec hash
                cells.append({
                    "algorithm": a.text, "name": a.name, "options": a.options, "slug": a.slug, "fold": f,
                    "num_folds": folds, **common, "seed": s, "network_key": spec_t.network_key, "network": net_cfg,
                    "metric_name": spec_t.metric, "latency_reps": settings.latency_reps,
                    "has_fold": recipe["has_fold"],
                    "cell_dir": str(out / "cells" / a.slug / (f"fold{f}" if s == settings.seed else f"fold{f}_seed{s}")),
                })
                if s != settings.seed and recipe["split_seed_key"]:  # (absent in base-seed cells: same hash as before)
                    cells[-1].update(split_seed=settings.seed, split_seed_key=recipe["split_seed_key"])
    has_data = (Path(recipe["dataset_dir"]) / "dataset.json").is_file()
    _set_fingerprint(manifest, cells, data_fingerprint(recipe["dataset_dir"]) if has_data else None)
    return manifest, cells


def _algorithm_specs(algorithms: Sequence[str | AlgorithmSpec]) -> list[AlgorithmSpec]:
    """The parsed algorithms; none, or one given twice, is an error."""
    if not algorithms:
        raise ComparisonError("no algorithms given.")
    algos = [a if isinstance(a, AlgorithmSpec) else parse_algorithm(a) for a in algorithms]
    slugs = [a.slug for a in algos]
    dup = sorted({s for s in slugs if slugs.count(s) > 1})
    if dup:
        raise ComparisonError(f"algorithms given twice: {dup}.")
    return algos


def _reference(reference: str | None, algos: Sequence[AlgorithmSpec]) -> str | None:
    """The reference algorithm's text as given in ``algos`` (``reference`` may be written differently,
    e.g. ``hyperunet`` for ``hyper_unet``); Auto3DSeg rows (``auto3dseg:...``) are taken as they are."""
    if reference is None or reference.startswith("auto3dseg:"):
        return reference
    texts = {a.text: a.text for a in algos}
    if reference in texts:
        return reference
    try:
        slug = parse_algorithm(reference).slug
    except (KeyError, ValueError):
        slug = None
    match = [a.text for a in algos if a.slug == slug]
    if not match:
        raise ComparisonError(f"reference {reference!r} is not one of the algorithms {[a.text for a in algos]}.")
    return match[0]


def _recipe(spec_t: TaskSpec, settings: ComparisonSettings, out: Path) -> dict[str, Any]:
    """The bundle recipe every cell shares: bundle folder, config files, data, overrides (checked
    against the config), the base network entry and whether the bundle has a ``fold`` setting."""
    from monai.bundle import ConfigParser

    bdir = bundle_dir(settings.bundle or spec_t.bundle)
    # the bundle's own demo (e.g. the MS bundle under task "segmentation"), else the task's
    base_cfg = ConfigParser.load_config_files([str(bdir / "configs" / "train.json")])
    demo_task = base_cfg.get("demo_task") if isinstance(base_cfg.get("demo_task"), str) else spec_t.demo_task
    dataset_dir, is_demo = _resolve_data(demo_task, settings.data, out)
    configs = settings.configs
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
    ov = dict(settings.overrides)
    for key in ov:
        if key.split("#")[0] not in parser.get():
            raise ComparisonError(f"override {key!r}: the bundle config has no {key.split('#')[0]!r} entry.")
    parser.update(ov)
    base_net = parser.get(spec_t.network_key)
    if not isinstance(base_net, dict):
        raise ComparisonError(f"bundle {bdir.name}: config entry {spec_t.network_key!r} is not a network dict.")
    lists = parser.get("datalists")
    # the k-fold split's shuffling seed (the bundles pass "@seed" to prepare_dataset): held at the base
    # seed in the cells of the other seeds, so that a seed never changes the split
    split_key = "datalists#seed" if isinstance(lists, dict) and "seed" in lists else None
    return {"bundle": str(bdir), "configs": cfg_paths, "dataset_dir": dataset_dir, "is_demo": is_demo,
            "demo_task": demo_task, "overrides": ov, "network": base_net, "has_fold": "fold" in parser.get(),
            "split_seed_key": split_key}


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
    # seeds may be added like algorithms (a folder from before seeds had just the base seed)
    old_seeds = old.get("seeds") or [old.get("seed")]
    merged["seeds"] = old_seeds + [s for s in manifest["seeds"] if s not in old_seeds]
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
    if res.get("status") not in keep or res.get("spec_hash") != cell["spec_hash"]:
        return None
    res.setdefault("seed", cell["seed"])  # results of releases before seeds: the (same-hash) cell's seed
    return res


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
    res = {k: cell[k] for k in ("algorithm", "name", "options", "fold", "seed", "metric_name")}
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
        res = {k: cell[k] for k in ("algorithm", "name", "options", "fold", "seed", "metric_name")}
        res.update(status="failed", source="compare", cell_dir=cell["cell_dir"], spec_hash=cell["spec_hash"],
                   error=f"cell process exited with code {proc.returncode} without a result; log tail:\n{tail}")
        write_json(res, path)
    return res


def _cell_line(res: dict, metric: str) -> str:
    where = f"{res['algorithm']} fold {res['fold']} seed {res.get('seed')}"
    if res["status"] == "ok":
        return f"{where}: test {metric} {res['test_metric']:.4f}"
    what = "BUSY" if res["status"] == "busy" else "FAILED"
    return f"{where}: {what} ({str(res['error']).splitlines()[0][:300]})"


def run_comparison(task: str, algorithms: Sequence[str | AlgorithmSpec], settings: ComparisonSettings | None = None,
                   *deprecated_args: Any, **deprecated_kwargs: Any) -> dict[str, Any]:
    """Train and measure every algorithm x fold with one bundle's recipe; write the leaderboard.

    Args:
        task: "segmentation", "reconstruction", "classification" or "registration" (:data:`TASKS`).
        algorithms: specs like ``"unet:kernel_size=3"`` (see :func:`parse_algorithm`).
        settings: everything else (:class:`ComparisonSettings`: budget, folds, data, recipe, output
            folder, workers and devices, resuming).
        deprecated_args, deprecated_kwargs: the keyword form of earlier releases,
            ``run_comparison(task, algorithms, folds=2, epochs=5, output_dir=...)``; it still works
            for this release and issues a :class:`DeprecationWarning`.

    Returns:
        ``{"results": [...], "leaderboard": [...], "paths": {...}, "manifest": {...}}``.
    """
    settings = settings_from_call("run_comparison", settings, deprecated_args, deprecated_kwargs)
    out = settings.output_dir.resolve()
    manifest, cells = plan_cells(task, algorithms, settings)
    extra_rows = _auto3dseg_rows(settings.auto3dseg_work_dirs)
    manifest = _prepare_output(out, manifest, cells)
    results: dict[str, dict] = {}
    todo = []
    for c in cells:
        done = _finished(c, settings.retry_failed)
        if done is not None:
            results[c["cell_dir"]] = done
        else:
            todo.append(c)
    board = _Board(out, manifest, cells, results, extra_rows, progress=settings.progress, n_todo=len(todo))
    devs = _devices(settings.devices)
    with _cells_die_with_runner(board.running):
        if settings.isolate:
            threads = max(1, (os.cpu_count() or 1) // settings.workers)
            _run_isolated(todo, board, devs, settings.workers, threads)
        else:
            _run_in_process(todo, board, devs[0])
    board.close()
    ordered = [results[c["cell_dir"]] for c in cells]
    return {"results": ordered + extra_rows, "leaderboard": board.paths["rows"], "paths": board.paths,
            "manifest": manifest}


def _auto3dseg_rows(work_dirs: Sequence[str | os.PathLike]) -> list[dict]:
    """The per-fold rows of Auto3DSeg work directories, their algorithms prefixed ``auto3dseg:``
    (so an Auto3DSeg "hyperunet" is not averaged with a runner "hyperunet")."""
    rows: list[dict] = []
    for wd in work_dirs:
        from .auto3dseg import read_auto3dseg_workdir

        rows += [dict(r, algorithm=f"auto3dseg:{r['algorithm']}") for r in read_auto3dseg_workdir(wd)]
    return rows


def _prepare_output(out: Path, manifest: dict, cells: list[dict]) -> dict:
    """Generate the demo data if needed, check the manifest against one already in ``out``, write it."""
    from ..bundle.results import write_json

    if manifest["data_fingerprint"] is None:
        # the demo, generated once here (not concurrently in every worker) and before the
        # fingerprint, which then stays the same on every re-run
        from ..data import ensure_demo

        ensure_demo(manifest["demo_task"], manifest["dataset_dir"])
        _set_fingerprint(manifest, cells, data_fingerprint(manifest["dataset_dir"]))
    manifest = _check_manifest(out, manifest)
    out.mkdir(parents=True, exist_ok=True)
    write_json(manifest, out / MANIFEST_FILE)
    return manifest


def _earlier_rows(out: Path, manifest: dict, cells: list[dict]) -> list[dict]:
    """The results of algorithms that earlier runs into ``out`` had and this one has not (they stay
    on the leaderboard, not re-run)."""
    current = {c["slug"] for c in cells}
    earlier: list[dict] = []
    for a in manifest["algorithms"]:
        if a["slug"] in current:
            continue
        for fdir in sorted((out / "cells" / a["slug"]).glob("fold*/" + RESULT_FILE)):
            try:
                earlier.append({"seed": manifest.get("seed"), **json.loads(fdir.read_text())})
            except ValueError:
                pass
    return earlier


class _Board:
    """A run's results so far: the leaderboard is rewritten after every cell, the progress bar
    (``progress``) advanced; ``running`` holds the cell processes in flight."""

    def __init__(self, out: Path, manifest: dict, cells: list[dict], results: dict[str, dict],
                 extra_rows: list[dict], progress: bool, n_todo: int) -> None:
        self.out, self.manifest, self.cells, self.results, self.extra_rows = out, manifest, cells, results, extra_rows
        self.earlier = _earlier_rows(out, manifest, cells)
        self.rank = {a["text"]: i for i, a in enumerate(manifest["algorithms"])}
        self.running: list[tuple[dict, subprocess.Popen, int]] = []  # (cell, process, worker slot)
        self.bar = None
        if progress:
            from tqdm import tqdm

            n_total = len(cells)
            self.bar = tqdm(total=n_total, initial=n_total - n_todo, desc="cells", unit="cell")
            if n_todo < n_total:
                self.bar.write(f"resuming: {n_total - n_todo} of {n_total} cells already finished in {out}")
        self.paths = self.refresh()

    def refresh(self) -> dict:
        from .leaderboard import write_outputs

        # a busy cell is someone else's work in progress: not a result
        ordered = self.earlier + [self.results[c["cell_dir"]] for c in self.cells
                                  if self.results.get(c["cell_dir"], {}).get("status") not in (None, "busy")]
        ordered.sort(key=lambda r: (self.rank.get(r["algorithm"], len(self.rank)), r.get("fold", 0),
                                  r.get("seed") or 0))  # manifest order
        return write_outputs(ordered + self.extra_rows, self.manifest, self.out)

    def record(self, cell: dict, res: dict) -> None:
        self.results[cell["cell_dir"]] = res
        self.paths = self.refresh()
        if self.bar is not None:
            self.bar.write(_cell_line(res, self.manifest["metric"]))
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            print(f"leaderboard: {self.paths['markdown']}\n            {self.paths['csv']}\n"
                  f"per-cell results: {self.paths['json']}\nper-case results: {self.paths['per_case']}")


def _run_in_process(todo: list[dict], board: _Board, device: str) -> None:
    """The cells one after the other in this process (``isolate=False``)."""
    from ..bundle.results import write_json
    from .cell import run_cell

    for cell in todo:
        busy = _busy(cell)
        if busy is None:
            spec = dict(cell, device=device, threads=None)
            write_json(spec, Path(cell["cell_dir"]) / CELL_FILE)  # as an isolated cell: re-runnable on its own
            try:
                res = run_cell(spec)
            except CellBusyError as e:  # locked between the check and the start
                res = _busy_row(cell, str(e))
        else:
            res = _busy_row(cell, busy)
        board.record(cell, res)


def _run_isolated(todo: list[dict], board: _Board, devices: Sequence[str], workers: int, threads: int) -> None:
    """One process per cell, at most ``workers`` at a time, worker slot k on ``devices[k % len(devices)]``."""
    todo = list(todo)
    running = board.running
    free = list(range(workers))
    while todo or running:
        while todo and free:
            cell = todo.pop(0)
            busy = _busy(cell)
            if busy is not None:
                board.record(cell, _busy_row(cell, busy))
                continue
            slot = free.pop(0)
            running.append((cell, _launch(cell, devices[slot % len(devices)], threads), slot))
        time.sleep(0.2)
        for item in list(running):
            cell, proc, slot = item
            if proc.poll() is None:
                continue
            running.remove(item)
            free.append(slot)
            board.record(cell, _collect(cell, proc))
