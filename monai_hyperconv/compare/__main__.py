"""``python -m monai_hyperconv.compare``: algorithms x folds -> a leaderboard (see ``--help``)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .runner import run_comparison
from .settings import ComparisonError, ComparisonSettings
from .spec import TASKS

EXAMPLES = """examples:
  # the demo liver data, two algorithms, 2 folds, 3 epochs each, two cells at a time
  python -m monai_hyperconv.compare --task segmentation --algorithms unet:kernel_size=3 \\
      hyper_unet:kernel_size=5,n_l=4 --folds 2 --epochs 3 --workers 2 --output runs/compare_liver
  # your own Decathlon-style data, with a bundle's recipe and a config override
  python -m monai_hyperconv.compare --task segmentation --data /data/Task03_Liver/dataset.json \\
      --algorithms unet unet5 hyper_unet --folds 5 --epochs 100 --set image_size=256 --output runs/lits
  # three seeds per fold; paired statistics against unet (bootstrap CIs, Wilcoxon, Holm)
  python -m monai_hyperconv.compare --task segmentation --algorithms unet hyper_unet \\
      --folds 5 --seeds 0 1 2 --reference unet --epochs 100 --output runs/lits_seeds
  # add the algorithms of an Auto3DSeg work directory to the leaderboard
  python -m monai_hyperconv.compare ... --auto3dseg-workdir ./work_dir
Running the same command again resumes: finished cells are skipped (the data must be unchanged),
cells another process is working on are reported busy and not started twice.
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m monai_hyperconv.compare", description=__doc__,
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=sorted(TASKS), help="task type (picks the bundle recipe and metric)")
    p.add_argument("--algorithms", nargs="+", required=True,
                   help="registered network names with options, e.g. unet:kernel_size=3 hyper_unet:n_l=8")
    p.add_argument("--folds", type=int, default=5, help="k-fold cross-validation (default 5)")
    p.add_argument("--fold-ids", type=int, nargs="*", default=None, help="run only these folds")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--epochs", type=int, help="training budget in epochs")
    budget.add_argument("--iterations", type=int, help="training budget in iterations")
    p.add_argument("--data", default=None, help="folder with dataset.json, or the file (default: the task's demo data)")
    p.add_argument("--bundle", default=None, help=f"bundle recipe (default per task: "
                   f"{', '.join(f'{k}: {v.bundle}' for k, v in TASKS.items())})")
    p.add_argument("--configs", nargs="+", default=None, help="bundle config files (default train.json [+ demo.json on demo data])")
    p.add_argument("--set", nargs="*", default=[], metavar="ID=VALUE", help="config overrides for every cell, e.g. image_size=64")
    p.add_argument("--noise", default=None, help='robustness sweep as JSON, e.g. \'{"gaussian": [0, 0.1]}\'; "none" to skip')
    p.add_argument("--seed", type=int, default=0,
                   help="the seed of every cell (default 0); with --seeds the base seed, whose cells keep the "
                        "single-seed folders (kept if among --seeds, else the first of them)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="repeat every algorithm x fold with each seed (initialisation, sampling, augmentation; "
                        "the split stays), e.g. --seeds 0 1 2")
    p.add_argument("--reference", default=None,
                   help="algorithm the leaderboard's paired statistics compare against (default: the first)")
    p.add_argument("--workers", type=int, default=1, help="cells run in parallel (processes)")
    p.add_argument("--devices", nargs="*", default=None, help="e.g. cuda:0 cuda:1 (default: all GPUs, else cpu)")
    p.add_argument("--output", default="runs/compare", help="output folder (reuse it to resume)")
    p.add_argument("--auto3dseg-workdir", nargs="*", default=[], help="Auto3DSeg work directories to include")
    p.add_argument("--latency-reps", type=int, default=10)
    p.add_argument("--keep-failed", action="store_true", help="do not re-run cells recorded as failed")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        res = run_comparison(args.task, args.algorithms, ComparisonSettings.from_args(args))
    except (ComparisonError, KeyError, FileNotFoundError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    failed = [r for r in res["results"] if r.get("status") != "ok"]
    print(open(res["paths"]["markdown"], encoding="utf-8").read())
    for r in res["results"]:
        if r.get("status") == "busy":  # not on the leaderboard: say why it is incomplete
            print(f"not run: {r['error']}", file=sys.stderr)
    return 1 if failed and len(failed) == len(res["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
