#!/usr/bin/env python
"""HyperMorph (Hoopes et al. 2021/2022) vs fixed-lambda registration models, at demo scale, one command.

One HyperMorph network (lam ~ U(0, 1) per step) against one plain VoxelMorph-style UNet per fixed
lam, same steps, loss ((1 - lam) MSE + lam TV), optimiser and pairs; warped-label Dice, folding
fraction and det J statistics on the test pairs; HyperMorph over the whole lam grid without
retraining. The logic is ``monai_hyperconv.experiments.hypermorph``.

Outputs in ``--out`` (default ``outputs/experiments/hypermorph``): ``sweep.{csv,md,png}``,
``fixed.{csv,md}``, ``comparison.{csv,md}``, ``training_time.csv``, ``dice_vs_lam.png``, ``summary.json``.

    python scripts/experiments/hypermorph.py --smoke    # seconds: checks the pipeline only
    python scripts/experiments/hypermorph.py            # 1 + 8 models x 2000 steps (not timed yet)
    python scripts/experiments/hypermorph.py --data /data/oasis2d --size 160 192 --steps 6000
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

from monai_hyperconv.experiments.common import apply_scale, scale_parser
from monai_hyperconv.experiments.hypermorph import DEFAULTS, NAME, SMOKE, run

DEFAULT_OUT = os.path.join("outputs", "experiments", NAME)
LIST_ARGS = {"size": int, "fixed_lams": float, "lams": float}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = scale_parser(__doc__.split("\n\n")[0], DEFAULT_OUT, DEFAULTS, SMOKE, LIST_ARGS)
    p.add_argument("--similarity", default="mse", choices=("mse", "lncc", "mi"), help="similarity term (default mse)")
    p.add_argument("--max-folding", type=float, default=0.01, help="folding limit of the lam choice (default 0.01)")
    args = apply_scale(p, argv, DEFAULTS, SMOKE)
    for k in ("fixed_lams", "lams"):
        vals = getattr(args, k)
        if any(not 0 <= v <= 1 for v in vals):
            p.error(f"--{k.replace('_', '-')}: every lam must be in [0, 1], got {vals}.")
    if not 0 <= args.max_folding <= 1:
        p.error(f"--max-folding must be a fraction in [0, 1], got {args.max_folding}.")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    argv_list = list(argv) if argv is not None else sys.argv[1:]
    return run(args, " ".join(["python", "scripts/experiments/hypermorph.py", *argv_list]))


if __name__ == "__main__":
    res = main()
    print(Path(res["paths"]["comparison_md"]).read_text())
    print("lam choice:", res["summary"]["choice"])
    print(f"outputs in {os.path.dirname(res['paths']['json'])} ({res['summary']['total_seconds']:.1f} s)")
