#!/usr/bin/env python
"""A folder of 3-D brain T1 NIfTI (ABIDE-like) -> 2-D 256x256 axial slices in [0, 1] for k-space reconstruction.

Usage: python scripts/prepare_brain_t1.py --src SOURCE_DIR --out OUTPUT_DIR [--overwrite]

The logic lives in ``monai_hyperconv.data.prepare.prepare_brain_t1``; this script only parses arguments.
No download: SOURCE_DIR is your copy of the data set in its original layout.
"""

from __future__ import annotations

import argparse
import sys

from monai_hyperconv.data.io import DatasetExistsError
from monai_hyperconv.data.prepare import PreparationError, prepare_brain_t1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="source folder in the data set's original layout")
    parser.add_argument("--out", required=True, help="output folder (MSD layout); must not exist or be empty")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of subjects listed as validation")
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256), help="output slice size")
    parser.add_argument("--slices-per-volume", type=int, default=10)
    parser.add_argument("--slab", type=float, default=0.5, help="central fraction of the head extent to sample")
    args = parser.parse_args(argv)
    try:
        path = prepare_brain_t1(args.src, args.out, overwrite=args.overwrite, val_fraction=args.val_fraction, size=args.size, slices_per_volume=args.slices_per_volume, slab=args.slab)
    except (PreparationError, DatasetExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
