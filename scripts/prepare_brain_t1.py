#!/usr/bin/env python
"""A folder of 3-D brain T1 NIfTI (ABIDE-like) -> 2-D 256x256 axial slices in [0, 1] for k-space reconstruction.

Usage: python scripts/prepare_brain_t1.py --src SOURCE_DIR --out OUTPUT_DIR [--overwrite]

The logic lives in ``monai_hyperconv.data.prepare.prepare_brain_t1``; this script only parses arguments.
No download: SOURCE_DIR is your copy of the data set in its original layout.
"""

from __future__ import annotations

import sys

from monai_hyperconv.data.prepare import prepare_brain_t1, run_prepare_cli


def _options(parser) -> None:
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256), help="output slice size")
    parser.add_argument("--slices-per-volume", type=int, default=10)
    parser.add_argument("--slab", type=float, default=0.5, help="central fraction of the head extent to sample")


def main(argv: list[str] | None = None) -> int:
    return run_prepare_cli(prepare_brain_t1, __doc__, argv, add_arguments=_options)


if __name__ == "__main__":
    sys.exit(main())
