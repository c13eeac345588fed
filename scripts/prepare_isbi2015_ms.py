#!/usr/bin/env python
"""ISBI 2015 longitudinal MS (four contrasts FLAIR/MPRAGE/T2/PD, two raters) -> MSD layout.

Usage: python scripts/prepare_isbi2015_ms.py --src SOURCE_DIR --out OUTPUT_DIR [--overwrite]

The logic lives in ``monai_hyperconv.data.prepare.prepare_isbi2015_ms``; this script only parses arguments.
No download: SOURCE_DIR is your copy of the data set in its original layout.
"""

from __future__ import annotations

import sys

from monai_hyperconv.data.prepare import prepare_isbi2015_ms, run_prepare_cli


def main(argv: list[str] | None = None) -> int:
    return run_prepare_cli(prepare_isbi2015_ms, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
