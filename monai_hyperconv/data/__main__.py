"""Command line: ``python -m monai_hyperconv.data make-demo TASK --out DIR``.

TASK is one of liver, ms, brain_recon, brain_seg, trimap, digits, or ``all`` (then each set goes
to ``DIR/<task>``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .demo import DEMO_TASKS, make_demo
from .io import DatasetExistsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_hyperconv.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make-demo", help="generate a demo data set in MSD layout")
    mk.add_argument("task", choices=[*DEMO_TASKS, "all"])
    mk.add_argument("--out", required=True, help="data set folder (for 'all': parent folder)")
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--n-subjects", type=int, default=None)
    mk.add_argument("--size", type=int, nargs="+", default=None, help="spatial size, e.g. 128 128 32")
    mk.add_argument("--overwrite", action="store_true", help="replace an existing non-empty folder")
    sub.add_parser("list", help="list the demo tasks")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(DEMO_TASKS))
        return 0
    tasks = DEMO_TASKS if args.task == "all" else (args.task,)
    for task in tasks:
        out = Path(args.out) / task if args.task == "all" else Path(args.out)
        t0 = time.perf_counter()
        try:
            path = make_demo(task, out, seed=args.seed, n_subjects=args.n_subjects, size=args.size, overwrite=args.overwrite)
        except (DatasetExistsError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"{task}: {path} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
