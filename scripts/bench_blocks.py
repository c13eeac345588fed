"""Side-by-side cost of generated-kernel convs vs plain convs (issue 2's performance targets).

One run, interleaved repetitions, medians and ratios (never absolute times in tests):

* training step (forward + backward + Adam step) of the papers' 2-D UNet with 5x5 kernels,
  plain conv vs HyperConv vs AdaptiveConv;
* eval-mode forward of the *baked* hyper/adaptive UNets vs the plain UNet (same architecture);
* eval-mode forward of the un-baked generated UNets under ``torch.no_grad()`` (kernel cache).

Usage::

    python scripts/bench_blocks.py                         # 256x256, batch 8 (the issue's setting)
    python scripts/bench_blocks.py --size 128 --batch 2     # quicker
    python scripts/bench_blocks.py --device cuda --amp     # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from monai_hyperconv import bake
from monai_hyperconv.networks import create_network

CONVS = {"conv": "conv", "hyper": ("hyper", {"n_l": 4}), "adaptive": "adaptive"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(conv, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    # identical architecture for all three: the papers' UNet, 5x5 kernels everywhere, 32 start channels
    net = create_network("unet", spatial_dims=2, in_channels=1, out_channels=1, kernel_size=5, up_kernel_size=5,
                         conv=conv, dropout=0.0)
    return net.to(device)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per model (interleaved)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="autocast (bf16 on CPU, fp16 on CUDA)")
    p.add_argument("--phases", default="train,infer", help="comma list: train, infer")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    x = torch.randn(args.batch, 1, args.size, args.size, device=device)
    y = (torch.rand_like(x) > 0.5).float()
    nets = {k: build(v, device) for k, v in CONVS.items()}
    opts = {k: torch.optim.Adam(n.parameters(), lr=1e-4) for k, n in nets.items()}
    n_params = {k: sum(p.numel() for p in n.parameters()) for k, n in nets.items()}

    def train_step(name: str) -> float:
        net, opt = nets[name], opts[name]
        net.train()
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        return time.perf_counter() - t0

    def infer(net: torch.nn.Module) -> float:
        _sync(device)
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp):
            net(x)
        _sync(device)
        return time.perf_counter() - t0

    phases = set(args.phases.split(","))
    times = {f"train/{k}": [] for k in nets}
    for i in range(args.warmup + args.reps if "train" in phases else 0):
        for k in nets:  # interleaved, so drifts in machine load hit every model alike
            t = train_step(k)
            if i >= args.warmup:
                times[f"train/{k}"].append(t)

    evals = {"eval/conv": nets["conv"].eval()}
    for k in ("hyper", "adaptive"):
        evals[f"eval/{k}-baked"] = bake(nets[k]).eval()
        evals[f"eval/{k}-cached"] = nets[k].eval()
    with torch.no_grad():
        for k, n in evals.items():
            if "baked" in k:  # baking is exact: same outputs as the generated network
                diff = (n(x) - evals[k.replace("baked", "cached")](x)).abs().max().item()
                assert diff < 1e-3 if args.amp else diff < 1e-4, (k, diff)
    for k in evals:
        times[k] = []
    for i in range(args.warmup + args.reps if "infer" in phases else 0):
        for k, n in evals.items():
            t = infer(n)
            if i >= args.warmup:
                times[k].append(t)

    med = {k: statistics.median(v) for k, v in times.items() if v}
    rows = []
    if "train" in phases:
        for k in nets:
            rows.append(("train step", k, med[f"train/{k}"], med[f"train/{k}"] / med["train/conv"], n_params[k]))
    if "infer" in phases:
        rows.append(("inference", "conv", med["eval/conv"], 1.0, n_params["conv"]))
        for k in ("hyper", "adaptive"):
            for kind, n in (("baked", n_params["conv"]), ("cached", n_params[k])):
                label = f"{k} (baked)" if kind == "baked" else f"{k} (no_grad cache)"
                rows.append(("inference", label, med[f"eval/{k}-{kind}"], med[f"eval/{k}-{kind}"] / med["eval/conv"], n))
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"\nPaper UNet 5x5, 2-D {args.size}x{args.size}, batch {args.batch}, {dev}, amp={args.amp}, "
          f"median of {args.reps} interleaved reps\n")
    print("| phase | conv type | median time (s) | ratio vs plain conv | parameters |")
    print("|---|---|---:|---:|---:|")
    for phase, name, t, r, n in rows:
        print(f"| {phase} | {name} | {t:.4f} | {r:.3f} | {n:,} |")
    return {f"{a}/{b}": r for a, b, _, r, _ in rows}


if __name__ == "__main__":
    main()
