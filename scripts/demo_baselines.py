"""Classical baselines of a lesion demo data set (liver CT or MS FLAIR), as JSON, CSV and Markdown.

    python scripts/demo_baselines.py --task liver --data bundles/liver_lesion_segmentation/data/liver_demo
    python scripts/demo_baselines.py --task ms --data bundles/ms_lesion_segmentation/data/ms_demo --fold 0 --out /tmp/ms_baselines

The demo is generated first when ``--data`` has no ``dataset.json``. ``--fold k`` scores the
subjects a bundle run with ``--fold k`` validates on (the MS bundle's default is fold 0 of 5,
seed 0; the liver bundle keeps the ``dataset.json`` split). See
``monai_hyperconv.metrics.baselines`` for what each baseline is.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from monai_hyperconv.data import ensure_demo
from monai_hyperconv.metrics.baselines import baselines_csv_rows, demo_baselines, format_baselines
from monai_hyperconv.utils import atomic_write


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=["liver", "ms"], required=True)
    p.add_argument("--data", required=True, help="folder with dataset.json (the demo is generated there if absent)")
    p.add_argument("--split", default="validation", help="data list section to score without --fold (default validation)")
    p.add_argument("--fold", type=int, default=None, help="score fold k of the bundles' k-fold re-split instead of --split")
    p.add_argument("--num_folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="k-fold shuffling seed (the bundles' --seed)")
    p.add_argument("--out", default=None, help="folder for baselines.json / .csv / .md (default: print only)")
    a = p.parse_args(argv)
    if not (Path(a.data) / "dataset.json").is_file():
        ensure_demo(a.task, a.data)
    res = demo_baselines(a.task, a.data, a.split, fold=a.fold, num_folds=a.num_folds, seed=a.seed)
    md = format_baselines(res)
    print(md)
    if a.out:
        out = Path(a.out)
        atomic_write(out / "baselines.json", lambda f: Path(f).write_text(json.dumps(res, indent=1) + "\n"))
        atomic_write(out / "baselines.md", lambda f: Path(f).write_text(md + "\n"))

        def write_csv(f):
            with open(f, "w", newline="") as fh:
                csv.writer(fh).writerows(baselines_csv_rows(res))

        atomic_write(out / "baselines.csv", write_csv)
        print(f"written: {out / 'baselines.json'}, {out / 'baselines.csv'}, {out / 'baselines.md'}")
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
