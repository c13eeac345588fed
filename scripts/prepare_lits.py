#!/usr/bin/env python
"""LiTS (volume-N.nii / segmentation-N.nii) or MSD Task03_Liver -> MSD layout with int16 HU CT and labels 0/1/2.

Usage: python scripts/prepare_lits.py --src SOURCE_DIR --out OUTPUT_DIR [--overwrite]

The logic lives in ``monai_hyperconv.data.prepare.prepare_lits``; this script only parses arguments.
No download: SOURCE_DIR is your copy of the data set in its original layout.
"""

from __future__ import annotations

import sys

from monai_hyperconv.data.prepare import prepare_lits, run_prepare_cli


def main(argv: list[str] | None = None) -> int:
    return run_prepare_cli(prepare_lits, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
