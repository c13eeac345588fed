"""The MNIST-style robustness of Karmann's reproduction blog: accuracy vs salt-and-pepper and Gaussian noise, a simple
CNN with plain convolutions vs the same CNN with hyper-convolutions, on the digits demo.

One comparison (``monai_hyperconv.compare``) with the digits bundle's recipe; both nets are
trained on clean images and tested with noise added to the inputs.

    python scripts/experiments/digits_robustness.py           # demo scale
    python scripts/experiments/digits_robustness.py --smoke   # seconds
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from monai_hyperconv.bundle import write_csv
from monai_hyperconv.compare import experiment_report, run_comparison
from monai_hyperconv.compare.experiments import (add_common_args, by_algorithm, command_line, grid_settings, noise_curves,
                                                  noise_paired, pm, wilcoxon_text, write_summary)
from monai_hyperconv.utils import atomic_write

NAME = "digits_robustness"
DEFAULT_OUT = f"outputs/experiments/{NAME}"
ALGORITHMS = {"CNN (plain conv)": "simple_cnn:conv=conv", "Hyper-CNN": "simple_cnn:conv=hyper"}
NOISE = {"salt_pepper": [0.0, 0.1, 0.2, 0.3, 0.4, 0.6], "gaussian": [0.0, 0.2, 0.4, 0.8, 1.2]}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, DEFAULT_OUT, epochs=4, folds=2)
    return p.parse_args(argv)


def _verdict(stats: dict) -> str:
    """The blog's claim (the hyper-CNN's accuracy falls less with noise), paired: the change of the
    hyper - plain gap from clean to the strongest level, per noise type, significant at p < 0.05 or not."""
    parts, grows, shrinks = [], [], []
    for kind, g in stats["growth"].items():
        parts.append(f"{kind} {wilcoxon_text(g, show_n=True)}")
        if g["diff_mean"] is not None and g["p_wilcoxon"] is not None and g["p_wilcoxon"] < 0.05:
            (grows if g["diff_mean"] > 0 else shrinks).append(kind)
    if not parts:
        return "No paired statistics (cells failed)."
    unit = "cells of the same fold and seed" if stats["unit"] == "cells" else "test cases"
    text = (f"Paired over {unit}, the change of the hyper - plain accuracy gap from clean to the strongest noise level "
            "(fold-stratified bootstrap 95 % CI, Wilcoxon signed-rank): " + "; ".join(parts) + ". ")
    if grows:
        text += "The Hyper-CNN is significantly more robust (p < 0.05) to " + ", ".join(grows) + " noise, as in the blog. "
    else:
        text += ("The Hyper-CNN is not significantly more robust (p < 0.05) to either noise type: the blog's finding "
                 "is not reproduced here. ")
    if shrinks:
        text += "It is significantly less robust to " + ", ".join(shrinks) + " noise. "
    return text


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    settings = grid_settings(args, "digits", {}, {"batch_size": 16}, smoke_subjects=60)
    res = run_comparison("classification", list(ALGORITHMS.values()), settings.replace(noise=NOISE))
    lb = by_algorithm(res)
    out = Path(args.out)
    rows = noise_curves(res["results"], ALGORITHMS, NOISE, "accuracy")
    csv_path = write_csv(rows, out / "digits_robustness.csv")
    labels = list(ALGORITHMS)
    stats = noise_paired(res["results"], ALGORITHMS[labels[0]], ALGORITHMS[labels[1]], NOISE)
    by_level = {(r["noise"], r["level"]): r for r in stats["levels"]}
    lines = ["| noise | level | " + " | ".join(f"{m} accuracy" for m in labels)
             + f" | hyper - plain, paired over {stats['unit']} [95 % CI], Wilcoxon p |", "|---|---|" + "---|" * (len(labels) + 1)]
    for noise, levels in NOISE.items():
        for lv in levels:
            cells = []
            for m in labels:
                r = next(x for x in rows if x["method"] == m and x["noise"] == noise and x["level"] == lv)
                cells.append("n/a" if r["accuracy_mean"] is None else f"{r['accuracy_mean']:.3f}"
                             + (f" ± {r['accuracy_std']:.3f}" if r["accuracy_std"] is not None else ""))
            lines.append(f"| {noise} | {lv} | " + " | ".join(cells) + f" | {wilcoxon_text(by_level.get((noise, lv)), show_n=True)} |")
    lines += ["", "| method | params | clean test accuracy |", "|---|---|---|"]
    for m, algo in ALGORITHMS.items():
        a = lb.get(algo)
        lines.append(f"| {m} | {'n/a' if not a or a.get('params_mean') is None else int(a['params_mean'])} | "
                     f"{pm(a, 'test_metric')} |")
    md_path = atomic_write(out / "digits_robustness.md", lambda p: Path(p).write_text("\n".join(lines) + "\n"))
    fig = res["paths"].get("robustness")

    def acc(m, noise, lv):
        return next(x for x in rows if x["method"] == m and x["noise"] == noise and x["level"] == lv)["accuracy_mean"]

    plain, hyper = labels
    if all(acc(m, "salt_pepper", 0.0) is not None for m in labels):
        para = ("Karmann's reproduction blog reports ~99% (plain CNN) vs ~98% (Hyper-CNN) clean MNIST accuracy, the plain CNN "
                "dropping below 50% at about 30% salt-and-pepper pixels while the Hyper-CNN keeps its accuracy up to "
                "about 40%, and a similar pattern for Gaussian noise. On the digits demo we measure clean accuracy "
                f"{acc(plain, 'salt_pepper', 0.0):.3f} (plain) vs {acc(hyper, 'salt_pepper', 0.0):.3f} (hyper); at 30% "
                f"salt-and-pepper {acc(plain, 'salt_pepper', 0.3):.3f} vs {acc(hyper, 'salt_pepper', 0.3):.3f}; at "
                f"Gaussian sigma 0.8 {acc(plain, 'gaussian', 0.8):.3f} vs {acc(hyper, 'gaussian', 0.8):.3f}. "
                + _verdict(stats)
                + " The digits demo (28x28 rendered digits, far fewer images than MNIST) is a stand-in for MNIST.")
    else:
        para = "Cells failed; see the leaderboard."
    scale = ("smoke: 60 generated digits, 1 iteration per cell" if args.smoke else
             f"{'digits demo' if args.data is None else args.data}; {args.folds} folds x seeds "
             f"{' '.join(map(str, settings.seed_list))} x {args.epochs} epochs per cell; "
             "28x28 images; CPU")
    report = experiment_report(NAME, "Digits: accuracy under noise, conv vs hyper-conv", "Karmann (blog), Figs 2 and 5",
                               command_line("scripts/experiments/digits_robustness.py", argv), scale, para,
                               tables=[md_path], figures=[fig] if fig else [], numbers={"rows": rows}, out_dir=out)
    write_summary(NAME, out, args, report, csv=csv_path)
    return {"rows": rows, "report": report, "result": res}


if __name__ == "__main__":
    main(sys.argv[1:])
