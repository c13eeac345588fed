"""Classical baselines of a lesion demo data set (liver CT or MS FLAIR), as JSON and Markdown.

    python scripts/demo_baselines.py --task liver --data bundles/liver_lesion_segmentation/data/liver_demo
    python scripts/demo_baselines.py --task ms --data bundles/ms_lesion_segmentation/data/ms_demo --out /tmp/ms_baselines

The demo is generated first when ``--data`` has no ``dataset.json``. See
``monai_hyperconv.metrics.baselines`` for what each baseline is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from monai_hyperconv.data import ensure_demo
from monai_hyperconv.metrics.baselines import demo_baselines, format_baselines
from monai_hyperconv.utils import atomic_write


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=["liver", "ms"], required=True)
    p.add_argument("--data", required=True, help="folder with dataset.json (the demo is generated there if absent)")
    p.add_argument("--split", default="validation", help="data list section to score (default validation)")
    p.add_argument("--out", default=None, help="folder for baselines.json / baselines.md (default: print only)")
    a = p.parse_args(argv)
    if not (Path(a.data) / "dataset.json").is_file():
        ensure_demo(a.task, a.data)
    res = demo_baselines(a.task, a.data, a.split)
    md = format_baselines(res)
    print(md)
    if a.out:
        out = Path(a.out)
        atomic_write(out / "baselines.json", lambda f: Path(f).write_text(json.dumps(res, indent=1) + "\n"))
        atomic_write(out / "baselines.md", lambda f: Path(f).write_text(md + "\n"))
        print(f"written: {out / 'baselines.json'}, {out / 'baselines.md'}")
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
