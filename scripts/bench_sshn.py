#!/usr/bin/env python
"""Benchmark the scale-space hypernetwork against the Fixed UNet, as ratios measured in one run.

1. Training step (forward, DiceCE loss, backward, Adam step) at phi = 0.5: SSHN / Fixed (target <= 1.3).
2. Inference at the same phi: materialised SSHN / Fixed UNet (target 1.00 +- 0.03; same architecture,
   plain convs both).

Repetitions are interleaved (alternating which model goes first) so machine load drifts hit both
equally; medians are reported.

    python scripts/bench_sshn.py                  # CPU (or CUDA if available)
    python scripts/bench_sshn.py --device cuda --size 256 --batch 8
"""

from __future__ import annotations

import argparse
import statistics
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


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=128, help="image side (2-D)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--channels", type=int, default=32, help="width of every stage")
    p.add_argument("--num-pools", type=int, default=4, help="down-samplings (stages - 1)")
    p.add_argument("--phi", type=float, default=0.5)
    p.add_argument("--reps", type=int, default=15, help="training-step repetitions")
    p.add_argument("--inf-reps", type=int, default=41, help="inference repetitions")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
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
