#!/usr/bin/env python
"""Adaptive convolution kernels (Tek et al. 2020 Fig 4, Tables 2-3, §4.4), one command.

Parts (``--parts filters,classify,trimap``, default all): nine image-processing filters learned by a
plain vs an adaptive 9x9 conv; simple CNN and ResNet, CONV vs ACONV at kernel sizes 3/5/7/9; the
tri-map U-Net with a 7x7 adaptive first layer. The logic is
``monai_hyperconv.experiments.adaptive_kernels`` (its docstring describes each part).

Data: the package's demo sets (generated on first use under ``--demo-dir``, default ``demo_data/``;
in ``--smoke`` smaller sets under ``<out>/demo_data``). ``--data DIR`` is an MSD-style folder with
``dataset.json``: integer ``label`` values make it a classification set (used by ``classify``),
label images a segmentation set (used by ``trimap``); ``--classify-data`` / ``--trimap-data`` name
them explicitly. The ``validation`` section is the test set (missing: the last 20 % of ``training``).

Outputs in ``--out`` (default ``outputs/experiments/adaptive_kernels``), each written atomically:
CSV + Markdown tables, PNG figures and ``summary.json`` (configuration, results and the ``report``
entry of :func:`monai_hyperconv.compare.experiment_report`).

    python scripts/experiments/adaptive_kernels.py            # ~6-8 minutes on one CPU thread
    python scripts/experiments/adaptive_kernels.py --smoke    # ~15 s with imports: checks the pipeline only
    python scripts/experiments/adaptive_kernels.py --parts filters --filter-iters 2500
    python scripts/experiments/adaptive_kernels.py --trimap-data /data/pets_msd --image-size-seg 128 --seg-epochs 75
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from monai_hyperconv.experiments.adaptive_kernels import DEFAULTS, NAME, PARTS, SMOKE, dataset_kind, run

DEFAULT_OUT = os.path.join("outputs", "experiments", NAME)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)} (default all)")
    p.add_argument("--data", default=None, help="MSD-style folder with dataset.json: integer labels -> classify part, "
                                                "label images -> trimap part (default: the demo sets)")
    p.add_argument("--classify-data", default=None, help="classification data list folder (default: digits demo)")
    p.add_argument("--trimap-data", default=None, help="segmentation data list folder (default: trimap demo)")
    p.add_argument("--demo-dir", default=None, help="where demo sets are generated (default demo_data/; "
                                                    "<out>/demo_data with --smoke)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--smoke", action="store_true", help="tiny run (< 40 s on one core): checks the pipeline only")
    for k, v in DEFAULTS.items():
        p.add_argument("--" + k.replace("_", "-"), type=int, default=None, help=f"default {v} ({SMOKE[k]} with --smoke)")
    p.add_argument("--filter-lr", type=float, default=0.1, help="SGD learning rate of the filters part (paper 0.1)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient clip value in the filters part (paper 1.0)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the classifiers (digits bundle 1e-3)")
    p.add_argument("--seg-lr", type=float, default=0.01, help="Adam learning rate of the U-Nets (paper / bundle 0.01)")
    p.add_argument("--seed", type=int, default=0, help="first seed (runs use seed, seed+1, ...)")
    p.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    base = SMOKE if args.smoke else DEFAULTS
    for k, v in base.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    bad = [s for s in args.parts if s not in PARTS]
    if bad or not args.parts:
        p.error(f"--parts: unknown {bad}; choose from {','.join(PARTS)}.")
    if args.data:
        kind = dataset_kind(args.data)
        if kind == "classify":
            args.classify_data = args.classify_data or args.data
        else:
            args.trimap_data = args.trimap_data or args.data
    if args.demo_dir is None:
        args.demo_dir = os.path.join(args.out, "demo_data") if args.smoke else "demo_data"
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    argv_list = list(argv) if argv is not None else sys.argv[1:]
    return run(args, " ".join(["python", "scripts/experiments/adaptive_kernels.py", *argv_list]))


if __name__ == "__main__":
    result = main()
    for part in PARTS:
        if part in result:
            print(Path(result[part]["paths"]["md"]).read_text())
    print(result["report"]["paragraph"])
    print(f"outputs in {os.path.dirname(result['paths']['json'])} ({result['config']['total_seconds']:.1f} s)")
