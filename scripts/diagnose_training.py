"""Why hyper-conv networks stalled, measured: writes docs/training.md (and its figures).

    python scripts/diagnose_training.py                                   # layer/network measurements only
    bash scripts/liver_demo_seeds.sh && python scripts/diagnose_training.py --seed-runs /tmp/liver_seeds

``--seed-runs DIR`` adds section 6 from the output of ``scripts/liver_demo_seeds.sh``: the
classical baselines, per-network mean ± std over seeds, every run's convergence figures, a
paragraph built from them, and the runs' ``training_curves.png`` (copied to
``docs/figures/training/``). Every table states how it was measured. The measurements and the
text are ``monai_hyperconv.experiments.diagnostics``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monai_hyperconv.bundle.results import atomic_write_text  # noqa: E402
from monai_hyperconv.experiments.diagnostics import training_document  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed-runs", default=None, help="output folder of scripts/liver_demo_seeds.sh to tabulate (section 6)")
    ap.add_argument("--ablation-runs", default=None,
                    help="output folder of scripts/liver_demo_seeds.sh --ema_decay 0 (section 7: without the weight average)")
    ap.add_argument("--dataset-dir", default=str(REPO / "bundles/liver_lesion_segmentation/data/liver_demo"))
    ap.add_argument("--out", default=str(REPO / "docs" / "training.md"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    atomic_write_text(out, training_document(Path(args.dataset_dir), out, REPO, args.seed_runs, args.ablation_runs))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
