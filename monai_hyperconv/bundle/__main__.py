"""``python -m monai_hyperconv.bundle``: copy a shipped bundle to a folder to work in (see ``--help``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .resources import TEMPLATES, bundle_path, bundles_root, check_bundle_version, init_bundle, list_bundles

EXAMPLES = """examples:
  python -m monai_hyperconv.bundle init --list
  python -m monai_hyperconv.bundle init digits_classification --out ~/hyperconv/digits
  cd ~/hyperconv/digits && python -m monai.bundle run --config_file configs/train.json \\
      --meta_file configs/metadata.json --logging_file configs/logging.conf --bundle_root .
  python -m monai_hyperconv.bundle init auto3dseg --out ./templates   # the Auto3DSeg templates
"""


def _listing() -> str:
    lines = [f"bundles shipped with this package ({bundles_root()}):"]
    for name in list_bundles():
        meta = json.loads((bundle_path(name) / "configs" / "metadata.json").read_text(encoding="utf-8"))
        lines.append(f"  {name:<30} {meta.get('version', '?'):<7} {meta.get('name', '')}")
    if TEMPLATES in list_bundles(templates=True):
        names = sorted(p.name for p in bundle_path(TEMPLATES).iterdir() if (p / "scripts" / "algo.py").is_file())
        lines.append(f"  {TEMPLATES:<30} {'':<7} Auto3DSeg algorithm templates ({', '.join(names)})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m monai_hyperconv.bundle", description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="copy a shipped bundle to --out (a writable folder to train in)",
                          epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    init.add_argument("name", nargs="?", help="bundle name (see --list)")
    init.add_argument("--out", default=None, help="destination folder (default: ./NAME); must be empty or new")
    init.add_argument("--overwrite", action="store_true",
                      help="write into a non-empty --out (the bundle's files are replaced, other files kept)")
    init.add_argument("--list", action="store_true", help="list the shipped bundles and exit")
    sub.add_parser("list", help="list the shipped bundles")
    args = p.parse_args(argv)
    try:
        if args.command == "list" or args.list:
            print(_listing())
            return 0
        if not args.name:
            init.error("give a bundle NAME (or --list)")
        out = init_bundle(args.name, args.out, overwrite=args.overwrite)
    except (KeyError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    if args.name != TEMPLATES:
        try:
            check_bundle_version(out)
        except ValueError as e:  # copied all the same; say why a run may fail
            print(f"warning: {e}", file=sys.stderr)
    print(f"{args.name} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
