#!/usr/bin/env python
"""LiTS (volume-N.nii / segmentation-N.nii) or MSD Task03_Liver -> MSD layout with int16 HU CT and labels 0/1/2.

Usage: python scripts/prepare_lits.py --src SOURCE_DIR --out OUTPUT_DIR [--overwrite]

The logic lives in ``monai_hyperconv.data.prepare.prepare_lits``; this script only parses arguments.
No download: SOURCE_DIR is your copy of the data set in its original layout.
"""

from __future__ import annotations

import argparse
import sys

from monai_hyperconv.data.io import DatasetExistsError
from monai_hyperconv.data.prepare import PreparationError, prepare_lits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="source folder in the data set's original layout")
    parser.add_argument("--out", required=True, help="output folder (MSD layout); must not exist or be empty")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of subjects listed as validation")
    args = parser.parse_args(argv)
    try:
        path = prepare_lits(args.src, args.out, overwrite=args.overwrite, val_fraction=args.val_fraction)
    except (PreparationError, DatasetExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
