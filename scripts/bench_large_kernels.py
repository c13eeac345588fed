"""Large generated kernels: direct vs FFT convolution, side by side in one run (issue 15).

One run, interleaved repetitions, medians and ratios:

* ``layer``: a single 2-D ``C -> C`` layer (default 64 -> 64) at ``size^2`` with ``padding="same"``,
  for each kernel size: training step (forward + backward) of a plain ``nn.Conv2d``, a
  ``HyperConv`` on the direct path (``fft=False``), on the FFT path (``fft=True``) and with
  ``fft="auto"``; inference (``no_grad``, eval) of the baked layer as ``nn.Conv2d``
  (``bake(fft=False)``) and as ``FFTConvNd`` (``bake(fft=True)``).
* ``flat``: the papers' ``flat_dilated_cnn`` vs ``flat_hyper_cnn`` (kernels 3..17..3) at
  ``flat_size^2``: training step (forward + backward + Adam) with ``fft="auto"`` (the default)
  and ``fft=False`` (the direct path, the cost before the FFT path existed); inference of the
  un-baked nets under ``no_grad`` and of the hyper net baked with ``fft=False`` / ``fft="auto"``.
* ``fit`` (only when asked): times forward passes of the direct and FFT paths over a grid of
  shapes and fits the two constants of the cost model (``FFT_COST`` in
  ``monai_hyperconv/layers/fft.py``) by least squares, relative to the direct conv's time per
  multiply-add on this machine.

Usage::

    python scripts/bench_large_kernels.py                              # layer + flat, ~2-3 min on 2 idle cores
    python scripts/bench_large_kernels.py --parts layer --kernels 3,17 --reps 2
    python scripts/bench_large_kernels.py --parts fit                  # refit FFT_COST for this device
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

from monai_hyperconv import bake
from monai_hyperconv.layers import HyperConv
from monai_hyperconv.layers.fft import FFT_COST, direct_conv, fft_conv, fft_sizes
from monai_hyperconv.networks import create_network


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timer(device: torch.device, fn: Callable[[], None]) -> Callable[[], float]:
    def run() -> float:
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - t0

    return run


def _interleaved(jobs: Dict[str, Callable[[], float]], reps: int, warmup: int) -> Dict[str, float]:
    """Median time of each job; every repetition runs all jobs in turn, so load drifts hit them alike."""
    times: Dict[str, List[float]] = {k: [] for k in jobs}
    for i in range(warmup + reps):
        for k, job in jobs.items():
            t = job()
            if i >= warmup:
                times[k].append(t)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_layer(args, device: torch.device) -> None:
    c, s, b = args.channels, args.size, args.batch
    kernels = [int(k) for k in args.kernels.split(",")]
    x = torch.randn(b, c, s, s, device=device)
    jobs: Dict[str, Callable[[], float]] = {}
    auto_path = {}
    for k in kernels:
        torch.manual_seed(k)
        plain = torch.nn.Conv2d(c, c, k, padding="same").to(device)
        hyper = {m: HyperConv(2, c, c, kernel_size=k, padding="same", fft=m).to(device) for m in (False, True, "auto")}
        for m in (True, "auto"):
            hyper[m].load_state_dict(hyper[False].state_dict())
        auto_path[k] = "fft" if hyper["auto"].use_fft(x) else "direct"
        baked = {m: bake(hyper[False], fft=m).eval() for m in (False, True)}
        with torch.no_grad():
            ref = hyper[False](x)
            for m in (True, "auto"):
                err = float((hyper[m](x) - ref).abs().max() / ref.abs().max())
                assert err < 1e-4, (k, m, err)

        def train(mod, xg=x):
            def fn():
                out = mod(xg)
                out.square().mean().backward()
            return fn

        def infer(mod):
            def fn():
                with torch.no_grad():
                    mod(x)
            return fn

        jobs[f"{k}/train/plain"] = _timer(device, train(plain))
        jobs[f"{k}/train/hyper-direct"] = _timer(device, train(hyper[False]))
        jobs[f"{k}/train/hyper-fft"] = _timer(device, train(hyper[True]))
        jobs[f"{k}/train/hyper-auto"] = _timer(device, train(hyper["auto"]))
        jobs[f"{k}/infer/baked-direct"] = _timer(device, infer(baked[False]))
        jobs[f"{k}/infer/baked-fft"] = _timer(device, infer(baked[True]))
    med = _interleaved(jobs, args.reps, args.warmup)
    print(f"\nSingle 2-D layer {c}->{c}, {s}x{s}, batch {b}, padding='same', {_device_name(device)}; "
          f"medians of {args.reps} interleaved repetitions (seconds)")
    print("| k | train plain | train hyper direct | train hyper FFT | hyper auto (path) | FFT/direct (train) "
          "| auto vs auto 3x3 | infer baked direct | infer baked FFT | FFT/direct (infer) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = med[f"{kernels[0]}/train/hyper-auto"]
    for k in kernels:
        g = lambda n: med[f"{k}/{n}"]  # noqa: E731
        print(f"| {k} | {g('train/plain'):.3f} | {g('train/hyper-direct'):.3f} | {g('train/hyper-fft'):.3f} "
              f"| {g('train/hyper-auto'):.3f} ({auto_path[k]}) | {g('train/hyper-fft') / g('train/hyper-direct'):.2f} "
              f"| {g('train/hyper-auto') / base:.2f} | {g('infer/baked-direct'):.3f} | {g('infer/baked-fft'):.3f} "
              f"| {g('infer/baked-fft') / g('infer/baked-direct'):.2f} |")


def bench_flat(args, device: torch.device) -> None:
    s, b = args.flat_size, args.flat_batch
    x = torch.randn(b, 1, s, s, device=device)
    y = (torch.rand_like(x) > 0.5).float()
    torch.manual_seed(0)
    nets = {
        "dilated": create_network("flat_dilated_cnn", spatial_dims=2),
        "hyper": create_network("flat_hyper_cnn", spatial_dims=2),
    }
    if not args.skip_direct:
        nets["hyper-direct"] = create_network("flat_hyper_cnn", spatial_dims=2, conv=("hyper", {"n_l": 8, "fft": False}))
        nets["hyper-direct"].load_state_dict(nets["hyper"].state_dict())
    nets = {k: n.to(device) for k, n in nets.items()}
    opts = {k: torch.optim.Adam(n.parameters(), lr=1e-4) for k, n in nets.items()}

    def train(name):
        def fn():
            nets[name].train()
            loss = F.binary_cross_entropy_with_logits(nets[name](x), y)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
        return fn

    jobs = {f"train/{k}": _timer(device, train(k)) for k in nets}
    med = _interleaved(jobs, args.reps, args.warmup)
    evals = {"dilated": nets["dilated"].eval(), "hyper (no_grad cache)": nets["hyper"].eval(),
             "hyper baked fft=auto": bake(nets["hyper"], fft="auto").eval(),
             "hyper baked fft=False": bake(nets["hyper"], fft=False).eval()}
    with torch.no_grad():
        ref = evals["hyper (no_grad cache)"](x)
        for k in ("hyper baked fft=auto", "hyper baked fft=False"):
            err = float((evals[k](x) - ref).abs().max() / ref.abs().max())
            assert err < 1e-4, (k, err)

    def infer(net):
        def fn():
            with torch.no_grad():
                net(x)
        return fn

    med.update(_interleaved({f"infer/{k}": _timer(device, infer(n)) for k, n in evals.items()}, args.reps, args.warmup))
    print(f"\nflat_hyper_cnn vs flat_dilated_cnn, 2-D {s}x{s}, batch {b}, {_device_name(device)}; "
          f"medians of {args.reps} interleaved repetitions")
    print("| phase | network | seconds | ratio vs flat_dilated_cnn |")
    print("|---|---|---:|---:|")
    for k in nets:
        print(f"| train step | {'flat_dilated_cnn' if k == 'dilated' else 'flat_hyper_cnn (' + ('fft=False' if 'direct' in k else 'fft=auto') + ')'} "
              f"| {med[f'train/{k}']:.3f} | {med[f'train/{k}'] / med['train/dilated']:.2f} |")
    for k in evals:
        name = "flat_dilated_cnn" if k == "dilated" else f"flat_{k.replace('hyper', 'hyper_cnn', 1)}"
        print(f"| inference | {name} | {med[f'infer/{k}']:.3f} | {med[f'infer/{k}'] / med['infer/dilated']:.2f} |")


def fit_costs(args, device: torch.device) -> None:
    """Least-squares fit of FFT_COST's two constants on this device (forward passes, no autograd)."""
    rows = []
    shapes = [(b, c, n, k) for b in (1, 4) for c in (16, 64) for n in (48, 96) for k in (9, 17)]
    for b, c, n, k in shapes:
        x = torch.randn(b, c, n, n, device=device)
        w = torch.randn(c, c, k, k, device=device)
        with torch.no_grad():
            jobs = {"direct": _timer(device, lambda: direct_conv(x, w, None, "same", 1, 1, "zeros")),
                    "fft": _timer(device, lambda: fft_conv(x, w, None, "same"))}
            med = _interleaved(jobs, max(1, args.reps - 1), 1)
        sizes = fft_sizes((n, n), (k, k), (1, 1), "same")
        big_n = math.prod(sizes)
        half = big_n // sizes[-1] * (sizes[-1] // 2 + 1)
        macs = b * c * c * k * k * n * n
        rows.append((med["direct"] / macs, med["fft"], (2 * b * c + c * c) * big_n * math.log2(big_n), b * c * c * half))
        print(f"b={b} c={c} n={n} k={k}: direct {med['direct']:.4f} s, fft {med['fft']:.4f} s", flush=True)
    t_mac = statistics.median(r[0] for r in rows)
    a = torch.tensor([[r[2] * t_mac, r[3] * t_mac] for r in rows], dtype=torch.float64)
    t = torch.tensor([r[1] for r in rows], dtype=torch.float64)
    # relative least squares (each shape weighs alike), non-negative
    wgt = 1.0 / t
    sol = torch.linalg.lstsq(a * wgt[:, None], (t * wgt)[:, None]).solution.flatten().clamp_min(0.01)
    print(f"\ndirect conv: {1e-9 / t_mac:.2f} G multiply-adds/s; fitted FFT_COST[{device.type!r}] = "
          f"{{'fft': {sol[0]:.3f}, 'mul': {sol[1]:.3f}}} (in use: {FFT_COST.get(device.type)})")


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="layer,flat", help="comma list of layer, flat, fit")
    p.add_argument("--kernels", default="3,5,9,13,17")
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--flat-size", type=int, default=96)
    p.add_argument("--flat-batch", type=int, default=4)
    p.add_argument("--skip-direct", action="store_true", help="flat: skip flat_hyper_cnn with fft=False (slow)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (interleaved)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    parts = set(args.parts.split(","))
    if "fit" in parts:
        fit_costs(args, device)
    if "layer" in parts:
        bench_layer(args, device)
    if "flat" in parts:
        bench_flat(args, device)


if __name__ == "__main__":
    main()
