#!/usr/bin/env python
"""Train a scale-space hypernetwork and Fixed UNets on MONAI synthetic images; print the Pareto table.

Gonzalez Ortiz et al. 2023 in miniature: one SSHN (phi ~ U(0, 0.5) during training) is swept over phi = 0.05..0.50
(step 0.01) without retraining, against Fixed UNets each trained at one phi. Writes CSV and PNG
(metric vs inference GFLOPs, as the paper's Fig. 7) to ``--out-dir`` and prints Markdown.

    python scripts/sshn_demo.py            # a few minutes on 2 CPU cores
    python scripts/sshn_demo.py --smoke    # seconds: checks the pipeline only
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from monai.data.synthetic import create_test_image_2d
from monai.losses import DiceCELoss

from monai_hyperconv.hypernets import ScaleSpaceHyperUNet, fixed_unet
from monai_hyperconv.metrics import choose_phi, default_phis, pareto_sweep, plot_pareto, write_csv


def make_data(n: int, size: int, seed: int, noise: float):
    """``n`` synthetic images (circles on noise) with binary labels, as tensors ``(n, 1, size, size)``."""
    rs = np.random.RandomState(seed)
    ims, segs = [], []
    for _ in range(n):
        im, seg = create_test_image_2d(size, size, num_objs=6, rad_max=max(4, size // 6), rad_min=3,
                                       noise_max=noise, num_seg_classes=1, random_state=rs)
        ims.append(im)
        segs.append(seg)
    x = torch.from_numpy(np.stack(ims))[:, None].float()
    y = torch.from_numpy(np.stack(segs))[:, None].long()
    return x, y


def train(model, x, y, steps: int, batch: int, lr: float, device, seed: int, phi=None) -> float:
    """Adam on DiceCE; ``phi=None`` lets the model draw phi from its prior (SSHN). Returns seconds."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    model.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        xb, yb = x[idx].to(device), y[idx].to(device)
        opt.zero_grad(set_to_none=True)
        out = model(xb) if phi is None else model(xb, phi=phi)
        loss = loss_fn(out, yb)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--n-train", type=int, default=64)
    p.add_argument("--n-test", type=int, default=32)
    p.add_argument("--noise", type=float, default=0.6)
    p.add_argument("--channels", type=int, default=12, help="width of every stage")
    p.add_argument("--num-pools", type=int, default=3, help="down-samplings (stages - 1)")
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--fixed-phis", type=float, nargs="*", default=[0.25, 0.5])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default="sshn_demo_out")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: runs in seconds")
    a = p.parse_args(argv)
    if a.smoke:
        a.size, a.n_train, a.n_test, a.channels, a.num_pools, a.steps, a.batch = 32, 8, 4, 4, 2, 10, 4
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    torch.manual_seed(a.seed)
    x_tr, y_tr = make_data(a.n_train, a.size, a.seed, a.noise)
    x_te, y_te = make_data(a.n_test, a.size, a.seed + 1, a.noise)
    test = [(x_te[i:i + 8], y_te[i:i + 8]) for i in range(0, a.n_test, 8)]
    arch = dict(channels=a.channels, num_pools=a.num_pools)

    sshn = ScaleSpaceHyperUNet(2, 1, 2, phi_prior=(0.0, 0.5), **arch).to(device)
    secs = {"SSHN": train(sshn, x_tr, y_tr, a.steps, a.batch, a.lr, device, a.seed)}
    phis = default_phis()
    os.makedirs(a.out_dir, exist_ok=True)
    sshn_table = pareto_sweep(sshn, test, phis, csv_path=os.path.join(a.out_dir, "sshn_pareto.csv"))

    fixed_rows = {}
    for fp in a.fixed_phis:
        torch.manual_seed(a.seed)
        net = fixed_unet(2, 1, 2, phi=fp, **arch).to(device)
        secs[f"Fixed {fp}"] = train(net, x_tr, y_tr, a.steps, a.batch, a.lr, device, a.seed, phi=fp)
        fixed_rows[fp] = pareto_sweep(net, test, [fp])[0]
    fixed_table = [fixed_rows[fp] for fp in sorted(fixed_rows)]
    if fixed_table:
        write_csv(fixed_table, os.path.join(a.out_dir, "fixed.csv"))
    plot_pareto({"SSHN": sshn_table, "Fixed": fixed_table} if fixed_table else {"SSHN": sshn_table},
                os.path.join(a.out_dir, "pareto.png"), metric="dice_mean")

    by_phi = {r["phi"]: r for r in sshn_table}
    shown = sorted({round(0.05 * k, 2) for k in range(1, 11)} | set(fixed_rows))
    print(f"\nSSHN vs Fixed, synthetic 2-D segmentation ({a.size}x{a.size}, {a.n_train} train / {a.n_test} test images, "
          f"{a.steps} steps each, UNet {a.num_pools + 1} stages x {a.channels} channels)\n")
    print("| phi | SSHN Dice | Fixed Dice (trained at phi) | GFLOPs | SSHN on Pareto front |")
    print("|---:|---:|---:|---:|:---:|")
    for phi in shown:
        r = by_phi.get(phi)
        if r is None:
            continue
        f = fixed_rows.get(phi)
        fixed_txt = f"{f['dice_mean']:.3f} ± {f['dice_std']:.3f}" if f else ""
        print(f"| {phi:.2f} | {r['dice_mean']:.3f} ± {r['dice_std']:.3f} | {fixed_txt} | {r['gflops']:.4f} | "
              f"{'yes' if r['pareto'] else ''} |")
    best = choose_phi(sshn_table)
    cheap = choose_phi(sshn_table, max_metric_drop=0.01)
    print(f"\nBest SSHN phi: {best:.2f} (Dice {by_phi[best]['dice_mean']:.3f}, {by_phi[best]['gflops']:.4f} GFLOPs); "
          f"cheapest within 0.01 Dice of it: phi {cheap:.2f} ({by_phi[cheap]['gflops']:.4f} GFLOPs, "
          f"{100 * (1 - by_phi[cheap]['gflops'] / by_phi[0.5]['gflops']):.0f}% fewer than phi 0.50).")
    print("Training time: " + ", ".join(f"{k} {v:.0f} s" for k, v in secs.items())
          + f". One SSHN covers {len(phis)} phis; CSV/PNG in {a.out_dir}/.")
    return {"sshn": sshn_table, "fixed": fixed_table, "seconds": secs}


if __name__ == "__main__":
    main()
