#!/usr/bin/env python
"""Benchmark the scale-space hypernetwork against the Fixed UNet, as ratios measured in one run.

1. Training step (forward, DiceCE loss, backward, Adam step) at phi = 0.5: SSHN / Fixed (target <= 1.3).
2. Inference at the same phi: materialised SSHN / Fixed UNet (target 1.00 +- 0.03; same architecture,
   plain convs both).

Repetitions are interleaved (alternating which model goes first) so machine load drifts hit both
equally; medians are reported.

``--3d``: a 3-D SSHN (default 96^3, batch 1) with each hypernetwork output head (``--heads``: the
paper's full ``W``, ``low_rank`` ``W = U V``, ``chunked``) against its Fixed UNet: peak training
memory (each model trained alone in a fresh subprocess: peak RSS growth over the process after
imports on CPU, ``torch.cuda.max_memory_allocated`` on CUDA) and training-step time (all models in
one process, interleaved, rotating which goes first). Targets: memory <= 2x, step <= 1.5x.

    python scripts/bench_sshn.py                  # CPU (or CUDA if available)
    python scripts/bench_sshn.py --device cuda --size 256 --batch 8
    python scripts/bench_sshn.py --3d --threads 1 --size 64 --reps 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from monai.losses import DiceCELoss

from monai_hyperconv.hypernets import ScaleSpaceHyperUNet, fixed_unet
from monai_hyperconv.metrics import count_flops


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def interleaved(fa, fb, reps: int, warmup: int, device) -> tuple:
    """Median seconds of ``fa`` and ``fb``, alternating which runs first, and the median paired ratio."""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for r in range(reps):
        if r % 2 == 0:
            ta.append(_timed(fa, device))
            tb.append(_timed(fb, device))
        else:
            tb.append(_timed(fb, device))
            ta.append(_timed(fa, device))
    paired = statistics.median(a / b for a, b in zip(ta, tb))
    return statistics.median(ta), statistics.median(tb), paired


def make_adam(params, lr: float = 1e-4) -> torch.optim.Optimizer:
    """Fused Adam where supported (one kernel over all tensors; the SSHN's hypernetwork output layer
    holds ~100 x the primary's parameter count, so the optimiser step is its main overhead)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def interleaved_many(fns, reps: int, warmup: int, device) -> tuple:
    """Median seconds of each of ``fns`` (rotating which runs first every repetition) and the median
    paired ratio of each to the first."""
    for _ in range(warmup):
        for f in fns:
            f()
    times = [[] for _ in fns]
    for r in range(reps):
        order = [(r + k) % len(fns) for k in range(len(fns))]
        for i in order:
            times[i].append(_timed(fns[i], device))
    paired = [statistics.median(a / b for a, b in zip(t, times[0])) for t in times]
    return [statistics.median(t) for t in times], paired


HEAD_DEFAULTS = {"full": {}, "low_rank": {"hyper_rank": 8}, "chunked": {"hyper_chunk_size": 1024}}


def build_3d(name: str, a) -> torch.nn.Module:
    """``"fixed"`` or an SSHN with output head ``name`` (the 3-D benchmark's models)."""
    arch = dict(channels=a.channels, num_pools=a.num_pools)
    if name == "fixed":
        return fixed_unet(3, 1, 2, phi=a.phi, **arch)
    kw = dict(HEAD_DEFAULTS[name])
    if name == "low_rank":
        kw["hyper_rank"] = a.rank
    if name == "chunked":
        kw["hyper_chunk_size"] = a.chunk_size
    return ScaleSpaceHyperUNet(3, 1, 2, hyper_head=name, **arch, **kw)


def _train_step_fn(model, a, device):
    x = torch.randn(a.batch, 1, a.size, a.size, a.size, device=device)
    y = (torch.rand(a.batch, 1, a.size, a.size, a.size, device=device) > 0.5).long()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = make_adam(model.parameters())
    model.train()

    def run():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x, phi=a.phi), y).backward()
        opt.step()
    return run


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def memory_child(name: str, a) -> dict:
    """Peak training memory of one model alone (run in a fresh process): model, Adam state, activations."""
    device = torch.device(a.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_mib()
    torch.manual_seed(0)
    model = build_3d(name, a).to(device)
    step = _train_step_fn(model, a, device)
    for _ in range(max(2, a.warmup)):  # Adam's state exists from the first step on
        step()
    _sync(device)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        peak = _rss_mib() - base
    return {"model": name, "peak_mib": peak, "params": sum(q.numel() for q in model.parameters())}


def _memory_in_fork(name: str, a, conn) -> None:
    try:
        conn.send(memory_child(name, a))
    except BaseException as e:  # report, do not hang the parent
        conn.send({"error": repr(e)})
    finally:
        conn.close()


def _measure_memory(name: str, a, argv) -> dict:
    """Run :func:`memory_child` in a fresh process: a fork of this one where available (the imports are
    already done and no compute has run yet), else a new interpreter."""
    if "fork" in mp.get_all_start_methods() and not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        ctx = mp.get_context("fork")
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_memory_in_fork, args=(name, a, child))
        proc.start()
        res = parent.recv()
        proc.join()
        if "error" in res:
            raise RuntimeError(f"memory measurement of {name!r} failed: {res['error']}")
        return res
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--memory-child", name]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main_3d(a, argv) -> dict:
    """The 3-D comparison (``--3d``): peak training memory and step time of each SSHN head vs the Fixed UNet."""
    device = torch.device(a.device)
    names = ["fixed", *a.heads]
    mem = {}
    for n in names:  # printed as measured: a slow machine may not reach the timing phase
        mem[n] = _measure_memory(n, a, argv)
        print(f"peak training memory, {n}: {mem[n]['peak_mib']:.0f} MiB ({mem[n]['params']:,} parameters)", flush=True)
    torch.manual_seed(0)
    models = {n: build_3d(n, a).to(device) for n in names}
    fns = [_train_step_fn(models[n], a, device) for n in names]
    med, paired = interleaved_many(fns, a.reps, a.warmup, device)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    how = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS growth after imports"
    print(f"\n3-D SSHN vs Fixed UNet ({a.num_pools + 1} stages x {a.channels} channels, batch {a.batch} x 1 x "
          f"{a.size}^3, phi {a.phi}, {dev_name}; DiceCE, fused Adam; memory: each model alone in a fresh process "
          f"({how}); time: medians of {a.reps} interleaved steps)\n")
    print("| model | parameters | peak training memory (MiB) | memory ratio (target <= 2) | step (s) | "
          "step ratio, of medians (median paired) (target <= 1.5) |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = {}
    for i, n in enumerate(names):
        label = "Fixed UNet" if n == "fixed" else f"SSHN, head {n}" + (
            f" (rank {a.rank})" if n == "low_rank" else f" (chunk {a.chunk_size})" if n == "chunked" else "")
        mr, tr = mem[n]["peak_mib"] / mem["fixed"]["peak_mib"], med[i] / med[0]
        rows[n] = {"params": mem[n]["params"], "peak_mib": mem[n]["peak_mib"], "memory_ratio": mr,
                   "step_s": med[i], "step_ratio": tr, "paired_step_ratio": paired[i]}
        verdict = "" if n == "fixed" else (" PASS" if mr <= 2.0 else " MISS")
        tverdict = "" if n == "fixed" else (" PASS" if tr <= 1.5 else " MISS")
        print(f"| {label} | {mem[n]['params']:,} | {mem[n]['peak_mib']:.0f} | {mr:.2f}{verdict} | {med[i]:.2f} | "
              f"{tr:.2f} ({paired[i]:.2f}){tverdict} |")
    sshn = next((m for m in models.values() if isinstance(m, ScaleSpaceHyperUNet)), None)
    if sshn is not None:
        print(f"\nThe SSHNs predict {sshn.num_primary_params:,} primary parameters (the Fixed UNet's count).")
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--3d", dest="three_d", action="store_true",
                   help="3-D SSHN output heads vs the Fixed UNet: peak training memory and step time")
    p.add_argument("--size", type=int, default=None, help="image side (default 128 in 2-D, 96 in 3-D)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 4 in 2-D, 1 in 3-D)")
    p.add_argument("--channels", type=int, default=32, help="width of every stage")
    p.add_argument("--num-pools", type=int, default=4, help="down-samplings (stages - 1)")
    p.add_argument("--phi", type=float, default=0.5)
    p.add_argument("--reps", type=int, default=None, help="training-step repetitions (default 15 in 2-D, 3 in 3-D)")
    p.add_argument("--inf-reps", type=int, default=41, help="inference repetitions")
    p.add_argument("--warmup", type=int, default=None, help="warm-up repetitions (default 3 in 2-D, 1 in 3-D)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    p.add_argument("--heads", nargs="+", default=["full", "low_rank", "chunked"], choices=list(HEAD_DEFAULTS),
                   help="3-D: SSHN output heads to compare")
    p.add_argument("--rank", type=int, default=8, help="3-D: rank of the low_rank head")
    p.add_argument("--chunk-size", type=int, default=1024, help="3-D: chunk size of the chunked head")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    for name, v2, v3 in (("size", 128, 96), ("batch", 4, 1), ("reps", 15, 3), ("warmup", 3, 1)):
        if getattr(a, name) is None:
            setattr(a, name, v3 if a.three_d else v2)
    if a.memory_child:
        res = memory_child(a.memory_child, a)
        print(json.dumps(res))
        return res
    if a.three_d:
        return main_3d(a, argv)
    device = torch.device(a.device)
    torch.manual_seed(0)
    arch = dict(channels=a.channels, num_pools=a.num_pools)
    sshn = ScaleSpaceHyperUNet(2, 1, 2, **arch).to(device)
    fixed = fixed_unet(2, 1, 2, phi=a.phi, **arch).to(device)
    x = torch.randn(a.batch, 1, a.size, a.size, device=device)
    y = (torch.rand(a.batch, 1, a.size, a.size, device=device) > 0.5).long()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt_s, opt_f = make_adam(sshn.parameters()), make_adam(fixed.parameters())

    def step(model, opt):
        def run():
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x, phi=a.phi), y).backward()
            opt.step()
        return run

    sshn.train()
    fixed.train()
    t_sshn, t_fixed, pair_train = interleaved(step(sshn, opt_s), step(fixed, opt_f), a.reps, a.warmup, device)

    sshn.eval()
    fixed.eval()
    mat = sshn.materialize(a.phi)
    with torch.inference_mode():
        inf_mat, inf_fixed, pair_inf = interleaved(lambda: mat(x), lambda: fixed(x, phi=a.phi), a.inf_reps, a.warmup,
                                                   device)

    gf = count_flops(fixed, tuple(x.shape), phi=a.phi) / 1e9
    gf_mat = count_flops(mat, tuple(x.shape)) / 1e9
    train_ratio, inf_ratio = t_sshn / t_fixed, inf_mat / inf_fixed
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"\nSSHN vs Fixed UNet ({a.num_pools + 1} stages x {a.channels} channels, batch {a.batch} x 1 x {a.size}^2, "
          f"phi {a.phi}, {dev_name}; medians of {a.reps} / {a.inf_reps} interleaved reps; fused Adam)\n")
    print(f"SSHN parameters {sum(q.numel() for q in sshn.parameters()):,} (predicts {sshn.num_primary_params:,}); "
          f"Fixed parameters {sum(q.numel() for q in fixed.parameters()):,}")
    print("| measurement | SSHN | Fixed | ratio of medians (median paired ratio) | target |")
    print("|---|---:|---:|---:|---|")
    ok_train = train_ratio <= 1.3
    ok_inf = abs(inf_ratio - 1.0) <= 0.03
    print(f"| training step (ms) | {1e3 * t_sshn:.1f} | {1e3 * t_fixed:.1f} | {train_ratio:.3f} ({pair_train:.3f}) | <= 1.3 "
          f"{'PASS' if ok_train else 'MISS'} |")
    print(f"| inference, materialised (ms) | {1e3 * inf_mat:.2f} | {1e3 * inf_fixed:.2f} | {inf_ratio:.3f} ({pair_inf:.3f}) | "
          f"1.00 +- 0.03 {'PASS' if ok_inf else 'MISS'} |")
    print(f"| inference GFLOPs | {gf_mat:.3f} | {gf:.3f} | {gf_mat / gf:.3f} | equal |")
    print("\nThe SSHN's extra cost per training step is fixed (hypernetwork output layer and its optimiser "
          "state, ~100 x the primary's parameters), so the ratio falls as batch x image size grows.")
    return {"train_ratio": train_ratio, "inference_ratio": inf_ratio, "paired": (pair_train, pair_inf), "train_ms": (1e3 * t_sshn, 1e3 * t_fixed),
            "inference_ms": (1e3 * inf_mat, 1e3 * inf_fixed)}


if __name__ == "__main__":
    main()
