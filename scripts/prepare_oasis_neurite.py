#!/usr/bin/env python
"""neurite OASIS 2-D slices (slice_norm + slice_seg4/seg24) -> MSD layout with registration pairs.

Usage: python scripts/prepare_oasis_neurite.py --src SOURCE_DIR --out OUTPUT_DIR [--overwrite]

The logic lives in ``monai_hyperconv.data.prepare.prepare_oasis_neurite``; this script only parses arguments.
No download: SOURCE_DIR is your copy of the data set in its original layout.
"""

from __future__ import annotations

import argparse
import sys

from monai_hyperconv.data.io import DatasetExistsError
from monai_hyperconv.data.prepare import PreparationError, prepare_oasis_neurite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="source folder in the data set's original layout")
    parser.add_argument("--out", required=True, help="output folder (MSD layout); must not exist or be empty")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of subjects listed as validation")
    parser.add_argument("--labels", choices=["seg4", "seg24"], default="seg4")
    args = parser.parse_args(argv)
    try:
        path = prepare_oasis_neurite(args.src, args.out, overwrite=args.overwrite, val_fraction=args.val_fraction, labels=args.labels)
    except (PreparationError, DatasetExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
