#!/usr/bin/env python
"""Scale-space hypernetworks (Gonzalez Ortiz et al. 2023 Figs 3, 6-9 and Table 5) at demo scale, one command.

SSHN vs Fixed / Stochastic / FiLM UNets (Dice vs phi and vs GFLOPs, Pareto fronts), training time of
one SSHN vs the Fixed sweep, prior width, weight transferability and registration. The logic is
``monai_hyperconv.experiments.scale_space`` (its docstring describes each part and the recipe).

Data: the package's demo ``brain_seg`` set by default (2-D coronal MNI-based slices, 7 labels:
background and left/right CSF/GM/WM; its "validation" subjects are the test set), generated into a
temporary folder (``--demo-dir`` keeps it). ``--data DIR`` reads an MSD-style ``DIR/dataset.json``:
``training`` items with ``image`` and ``label`` (2-D, or 3-D of which the slice along the last axis
with the most foreground is used), ``validation`` items as test set (else the last 20 % of
``training``); labels are remapped to 0..K-1, images min-max scaled, both resized to ``--size``.

Outputs in ``--out`` (default ``outputs/experiments/scale_space``), each written atomically:
``segmentation.{csv,md}`` (one row per method x phi), ``methods.{csv,md}`` (Table 5 style),
``training_time.{csv,md}``, ``prior_width.{csv,md}``, ``transfer.{csv,md}``,
``registration.{csv,md}``, ``dice_by_phi.{csv,md}`` and ``transfer_by_phi.{csv,md}`` (compact views),
``dice_vs_phi.png``, ``pareto.png``, ``prior_width.png``,
``transfer.png``, ``registration_pareto.png`` and ``summary.json`` (with the ``report`` entry).

    python scripts/experiments/scale_space.py            # ~6 CPU-minutes on one core (8 min wall on a busy one)
    python scripts/experiments/scale_space.py --smoke    # seconds: checks the pipeline only
    python scripts/experiments/scale_space.py --data /data/oasis2d --size 160 192 --steps 3000
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

from monai_hyperconv.experiments.common import apply_scale, scale_parser
from monai_hyperconv.experiments.scale_space import DEFAULTS, NAME, SMOKE, run

DEFAULT_OUT = os.path.join("outputs", "experiments", NAME)
LIST_ARGS = {"size": int, "fixed_phis": float, "phis": float, "prior_r": float, "prior_phis": float,
             "transfer_phi0": float, "transfer_phis": float, "reg_fixed_phis": float, "reg_phis": float}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = scale_parser(__doc__.split("\n\n")[0], DEFAULT_OUT, DEFAULTS, SMOKE, LIST_ARGS)
    p.add_argument("--lambda-reg", type=float, default=0.05, help="TV weight of the registration loss (default 0.05)")
    args = apply_scale(p, argv, DEFAULTS, SMOKE)
    for k in ("fixed_phis", "phis", "prior_phis", "transfer_phi0", "transfer_phis", "reg_fixed_phis", "reg_phis"):
        vals = getattr(args, k)
        if any(not 0 < v <= 1 for v in vals):
            p.error(f"--{k.replace('_', '-')}: every phi must be in (0, 1], got {vals}.")
    if any(not 0 <= r < 0.5 for r in args.prior_r):
        p.error(f"--prior-r: each r must be in [0, 0.5), got {args.prior_r}.")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    argv_list = list(argv) if argv is not None else sys.argv[1:]
    return run(args, " ".join(["python", "scripts/experiments/scale_space.py", *argv_list]))


if __name__ == "__main__":
    res = main()
    print()
    print(Path(res["paths"]["markdown"]["methods"]).read_text())
    print(Path(res["paths"]["markdown"]["training_time"]).read_text().split("\n\n")[1])
    print(res["report"]["paragraph"])
    print(f"\noutputs in {os.path.dirname(res['paths']['json'])} ({res['config']['total_seconds']:.1f} s)")
