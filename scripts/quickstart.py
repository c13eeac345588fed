"""Quick start: train a Hyper-UNet next to a plain UNet on MONAI's synthetic images and compare.

A short CPU run that shows the package's idea end to end: the same papers' UNet with
plain 3x3 convs and with 5x5 hyper-convolutions (N_L = 4, fewer parameters), trained with the
same data, loss and optimiser; then the Hyper-UNet is baked into plain convs and checked to give
the same predictions. Results go to ``--out`` as CSV and Markdown.

Usage::

    python scripts/quickstart.py                   # ~20 s on 2 idle CPU cores
    python scripts/quickstart.py --steps 20        # seconds (smoke)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from monai.data.synthetic import create_test_image_2d
from monai.losses import DiceLoss
from monai.metrics import DiceMetric
from monai.utils import set_determinism
from tqdm import tqdm

from monai_hyperconv import bake
from monai_hyperconv.bundle.results import atomic_write_text, write_csv
from monai_hyperconv.networks import create_network


def make_data(n: int, size: int, seed: int):
    rs = np.random.RandomState(seed)
    imgs, segs = [], []
    for _ in range(n):
        im, seg = create_test_image_2d(size, size, num_objs=5, rad_max=size // 6, noise_max=0.5, random_state=rs)
        imgs.append(im[None])
        segs.append((seg > 0)[None])
    return torch.tensor(np.stack(imgs), dtype=torch.float32), torch.tensor(np.stack(segs), dtype=torch.float32)


def train_eval(name: str, net: torch.nn.Module, data, steps: int, batch: int, device: torch.device, seed: int):
    (xtr, ytr), (xte, yte) = data
    torch.manual_seed(seed)
    net = net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = DiceLoss(sigmoid=True)
    t0 = time.perf_counter()
    net.train()
    bar = tqdm(range(steps), desc=f"{name:>10}", ncols=90, mininterval=2.0)
    g = torch.Generator().manual_seed(seed)
    for _ in bar:
        idx = torch.randint(0, len(xtr), (batch,), generator=g)
        loss = loss_fn(net(xtr[idx].to(device)), ytr[idx].to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.set_postfix(dice_loss=f"{loss.item():.3f}")
    train_s = time.perf_counter() - t0
    net.eval()
    metric = DiceMetric(include_background=True)
    with torch.no_grad():
        pred = (torch.sigmoid(net(xte.to(device))) > 0.5).float()
        metric(pred, yte.to(device))
        baked = bake(net)
        same = torch.equal((torch.sigmoid(baked(xte.to(device))) > 0.5).float(), pred)
    return {
        "model": name,
        "parameters": sum(p.numel() for p in net.parameters()),
        "test_dice": round(metric.aggregate().item(), 4),
        "train_seconds": round(train_s, 1),
        "baked_predictions_identical": same,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--channels", type=int, default=8, help="first-level width (papers: 32)")
    p.add_argument("--dropout", type=float, default=0.1, help="same for both nets (papers: 0.5)")
    p.add_argument("--out", default="outputs/quickstart")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    set_determinism(args.seed)
    device = torch.device(args.device)
    data = (make_data(64, args.size, args.seed), make_data(16, args.size, args.seed + 1))
    common = dict(spatial_dims=2, in_channels=1, out_channels=1, channels=args.channels, dropout=args.dropout)
    models = {
        "UNet 3x3": create_network("unet", **common),
        "Hyper-UNet 5x5 (N_L=4)": create_network("hyper_unet", **common),
    }
    rows = [train_eval(n, m, data, args.steps, args.batch, device, args.seed) for n, m in models.items()]
    out = Path(args.out)
    lines = ["| model | parameters | test Dice | train s | baked = original |", "|---|---:|---:|---:|---|"]
    lines += [f"| {r['model']} | {r['parameters']:,} | {r['test_dice']:.3f} | {r['train_seconds']} | "
              f"{r['baked_predictions_identical']} |" for r in rows]
    table = "\n".join(lines)
    atomic_write_text(out / "results.md", table + "\n")
    write_csv(rows, out / "results.csv")
    print("\n" + table)
    print(f"\nResults written to {out.resolve()}/results.csv and results.md")
    return rows


if __name__ == "__main__":
    main()
