#!/usr/bin/env python
"""Kernel smoothness of learned kernels (Ma et al. 2022 §4.4 Figs 7-8, journal extension §5 Figs 10-11), one command.

Trains a UNet 5x5 and Hyper-UNets 5x5 (N_L = 8, 24) briefly on the same data, measures every
layer's mean absolute kernel Laplacian, draws the kernels, and fits the UNet's kernels with
hyper-networks (N_L = 8, 24). The logic is ``monai_hyperconv.experiments.kernel_smoothness``.

Data: MONAI synthetic 2-D images (``create_test_image_2d``) by default; ``--data DIR`` reads an
MSD-style ``DIR/dataset.json`` (``training`` items with ``image`` and ``label``; 2-D images, or
3-D volumes of which slices along the last axis are used, first image channel, label > 0 is
foreground), resized to ``--size``.

Outputs in ``--out`` (default ``outputs/experiments/kernel_smoothness``), each written atomically:
``smoothness.csv`` (one row per model and layer), ``smoothness.md`` (summary and per-layer
tables), ``kernels_<model>.png`` (kernel grids) and ``summary.json`` (configuration, metrics).

    python scripts/experiments/kernel_smoothness.py            # ~10 CPU-minutes (5-15 min on 2 cores)
    python scripts/experiments/kernel_smoothness.py --smoke    # seconds: checks the pipeline only
    python scripts/experiments/kernel_smoothness.py --data /data/Task03_Liver --size 128 --iters 2000
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from monai_hyperconv.experiments.kernel_smoothness import DEFAULTS, NAME, SMOKE, run

DEFAULT_OUT = os.path.join("outputs", "experiments", NAME)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="MSD-style folder with dataset.json (default: MONAI synthetic images)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--smoke", action="store_true", help="tiny run in seconds (pipeline check only)")
    for k, v in DEFAULTS.items():
        p.add_argument("--" + k.replace("_", "-"), type=int, default=None, help=f"default {v} ({SMOKE[k]} with --smoke)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3; the papers use 1e-4 "
                                                          "for full-length training)")
    p.add_argument("--dropout", type=float, default=None, help="override the networks' dropout (default: the "
                                                                "papers' 0.5 as registered)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    base = SMOKE if args.smoke else DEFAULTS
    for k, v in base.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    argv_list = list(argv) if argv is not None else sys.argv[1:]
    return run(args, " ".join(["python", "scripts/experiments/kernel_smoothness.py", *argv_list]))


if __name__ == "__main__":
    res = main()
    print(Path(res["paths"]["markdown"]).read_text())
    print(f"outputs in {os.path.dirname(res['paths']['csv'])} ({res['config']['total_seconds']:.1f} s)")
