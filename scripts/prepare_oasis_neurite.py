#!/usr/bin/env python
"""neurite OASIS 2-D slices (slice_norm + slice_seg4/seg24) -> MSD layout with registration pairs.

Usage: python scripts/prepare_oasis_neurite.py --src SOURCE_DIR --out OUTPUT_DIR [--overwrite]

The logic lives in ``monai_hyperconv.data.prepare.prepare_oasis_neurite``; this script only parses arguments.
No download: SOURCE_DIR is your copy of the data set in its original layout.
"""

from __future__ import annotations

import sys

from monai_hyperconv.data.prepare import prepare_oasis_neurite, run_prepare_cli


def _options(parser) -> None:
    parser.add_argument("--labels", choices=["seg4", "seg24"], default="seg4")


def main(argv: list[str] | None = None) -> int:
    return run_prepare_cli(prepare_oasis_neurite, __doc__, argv, add_arguments=_options)


if __name__ == "__main__":
    sys.exit(main())
