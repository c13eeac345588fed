#!/usr/bin/env python
"""Compare our registration network with voxelmorph's ``VxmPairwise`` on the same 2-D image pairs.

Both are trained identically (Adam, same steps and learning rate, MSE + lambda * TV on the
displacement, the paper's objective) on synthetic pairs: a MONAI synthetic image and its label
map, and a copy deformed by a random smooth displacement. Reported on held-out pairs: label Dice
after nearest-neighbour warping (mean over labels), folding (fraction of non-positive Jacobian
determinants) and image MSE, for the identity (no registration), ours, and VxmPairwise.
Exits cleanly with a message when voxelmorph is not installed (``pip install voxelmorph``).

    python scripts/compare_voxelmorph.py [--smoke]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from monai.data.synthetic import create_test_image_2d
from monai.networks.blocks import Warp

from monai_hyperconv.losses import RegistrationLoss
from monai_hyperconv.metrics import folding_fraction, registration_dice, warp_labels
from monai_hyperconv.hypernets.registration import RegistrationNet


def smooth_field(n: int, size: int, amplitude: float, generator: torch.Generator) -> torch.Tensor:
    """Random smooth displacements ``(n, 2, size, size)`` in voxels: coarse noise, upsampled bicubically."""
    coarse = torch.randn(n, 2, 5, 5, generator=generator) * amplitude
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)


def make_pairs(n: int, size: int, seed: int, amplitude: float):
    """``(moving, fixed, moving_labels, fixed_labels)``; labels 1..3 by intensity band of the circles."""
    rs = np.random.RandomState(seed)
    ims, segs = [], []
    for _ in range(n):
        im, seg = create_test_image_2d(size, size, num_objs=5, rad_max=max(4, size // 5), rad_min=3,
                                       noise_max=0.1, num_seg_classes=3, random_state=rs)
        ims.append(im)
        segs.append(seg)
    fixed = torch.from_numpy(np.stack(ims))[:, None].float()
    fixed_lab = torch.from_numpy(np.stack(segs))[:, None].float()
    g = torch.Generator().manual_seed(seed)
    ddf = smooth_field(n, size, amplitude, g)
    moving = Warp(mode="bilinear", padding_mode="zeros")(fixed, ddf)
    moving_lab = warp_labels(fixed_lab, ddf)
    return moving, fixed, moving_lab, fixed_lab


def train(forward, params, data, steps: int, lr: float, lambda_reg: float, batch: int, seed: int) -> float:
    moving, fixed = data[0], data[1]
    loss_fn = RegistrationLoss(2, "mse", lambda_reg=lambda_reg)
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, moving.shape[0], (batch,), generator=g)
        opt.zero_grad(set_to_none=True)
        moved, ddf = forward(moving[idx], fixed[idx])
        loss_fn(moved, fixed[idx], ddf).backward()
        opt.step()
    return time.perf_counter() - t0


@torch.no_grad()
def evaluate(forward, data) -> dict:
    moving, fixed, mlab, flab = data
    moved, ddf = forward(moving, fixed)
    return {
        "dice": registration_dice(mlab, flab, ddf)["mean"],
        "folding": float(folding_fraction(ddf).mean()),
        "mse": float(((moved - fixed) ** 2).mean()),
    }


def compare(steps: int = 600, size: int = 64, n_train: int = 64, n_test: int = 16, features: int = 16,
            lr: float = 1e-3, lambda_reg: float = 0.05, amplitude: float = 3.0, batch: int = 8, seed: int = 0):
    """Train both networks on the same pairs; return ``{name: {"dice", "folding", "mse", "seconds"}}``.

    Raises ImportError when voxelmorph is missing.
    """
    import voxelmorph as vxm  # noqa: F401  (raises ImportError when not installed)
    from voxelmorph.nn.models import VxmPairwise

    train_data = make_pairs(n_train, size, seed, amplitude)
    test_data = make_pairs(n_test, size, seed + 1, amplitude)
    results = {"identity": evaluate(lambda m, f: (m, torch.zeros(m.shape[0], 2, *m.shape[2:])), test_data)}
    results["identity"]["seconds"] = 0.0

    torch.manual_seed(seed)
    ours = RegistrationNet(2, 1, channels=features, num_pools=3)  # 4 stages, as VxmPairwise's
    secs = train(lambda m, f: ours(m, f), ours.parameters(), train_data, steps, lr, lambda_reg, batch, seed)
    ours.eval()
    results["ours (RegistrationNet)"] = {**evaluate(lambda m, f: ours(m, f), test_data), "seconds": secs}

    torch.manual_seed(seed)
    vx = VxmPairwise(2, 1, 1, nb_features=[features] * 4, activations=torch.nn.LeakyReLU, integration_steps=0)
    st = Warp(mode="bilinear", padding_mode="zeros")  # voxelmorph's transformer: same convention and padding

    def vx_forward(m, f):
        ddf = vx(m, f)  # displacement (B, 2, H, W) in voxels, channel i along axis i
        return st(m, ddf), ddf

    secs = train(vx_forward, vx.parameters(), train_data, steps, lr, lambda_reg, batch, seed)
    vx.eval()
    results["voxelmorph VxmPairwise"] = {**evaluate(vx_forward, test_data), "seconds": secs}
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--lambda-reg", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args(argv)
    try:
        import voxelmorph  # noqa: F401
    except ImportError as e:
        print(f"voxelmorph is not installed ({e}); skipping the comparison. `pip install voxelmorph` to run it.")
        return 0
    if a.threads:
        torch.set_num_threads(a.threads)
    kw = dict(steps=a.steps, size=a.size, features=a.features, lambda_reg=a.lambda_reg)
    if a.smoke:
        kw.update(steps=20, size=32, features=4, n_train=8, n_test=4)
    res = compare(**kw)
    print(f"\nRegistration of synthetic 2-D pairs ({kw['size']}x{kw['size']}, {kw['steps']} steps, MSE + "
          f"{kw['lambda_reg']} TV, held-out pairs)\n")
    print("| method | mean label Dice | folding (det J <= 0) | MSE | train s |")
    print("|---|---:|---:|---:|---:|")
    for name, r in res.items():
        print(f"| {name} | {r['dice']:.3f} | {100 * r['folding']:.2f}% | {r['mse']:.4f} | {r['seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
