"""Tables 2/4 of Ma et al. 2022 (hyper-convolutions via implicit kernels): Hyper-UNet kernel size {3, 5, 7} x hyper-network capacity N_L {2, 4, 8}.

The nine Hyper-UNets are one comparison (``monai_hyperconv.compare``) with the liver bundle's
recipe (``--dataset ms``: Hyper-MB-UNets with the MS bundle's); the result is a heat-map of test
Dice (PNG) and a table next to the paper's numbers.

    python scripts/experiments/kernel_grid.py            # demo scale, seeds 0 1 2, one fold
    python scripts/experiments/kernel_grid.py --smoke    # seconds
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from monai_hyperconv.bundle import write_csv
from monai_hyperconv.compare import experiment_report, run_comparison
from monai_hyperconv.compare.experiments import (add_common_args, across_seeds, command_line, direction_verdict,
                                                  grid_settings, paired_statistics, paired_text, run_seeds,
                                                  write_summary)
from monai_hyperconv.compare.report import fmt_pm
from monai_hyperconv.utils import atomic_write

NAME = "kernel_grid"
DEFAULT_OUT = f"outputs/experiments/{NAME}"
KERNELS, NLS = (3, 5, 7), (2, 4, 8)
# the same architecture with stored kernels: tells a slowdown of generated kxk kernels from one of kxk kernels
PLAIN = {"liver": "unet", "ms": "mb_unet"}
# Ma et al. 2022 Table 2 (liver) and Table 4 (MS): test Dice per (kernel, N_L)
PAPER = {
    "liver": {(3, 2): 0.604, (3, 4): 0.627, (3, 8): 0.648, (5, 2): 0.692, (5, 4): 0.728, (5, 8): 0.705,
              (7, 2): 0.683, (7, 4): 0.704, (7, 8): 0.717},
    "ms": {(3, 2): 0.622, (3, 4): 0.625, (3, 8): 0.617, (5, 2): 0.648, (5, 4): 0.655, (5, 8): 0.651,
           (7, 2): 0.634, (7, 4): 0.644, (7, 8): 0.646},
}
SETUP = {
    "liver": ("hyper_unet", "liver_lesion_segmentation", "liver", {},
              {"image_size": 32, "network_def#channels": 4, "batch_size": 4}, (48, 48, 6)),
    "ms": ("hyper_mb_unet", "ms_lesion_segmentation", "ms", {"slices_per_epoch": 64},
           {"crop_size": [32, 32, 32], "network_def#channels": 4, "slices_per_epoch": 4, "batch_size": 4}, (40, 40, 36)),
}


def algorithm(net: str, k: int, n_l: int) -> str:
    return f"{net}:kernel_size={k},n_l={n_l}"


def heatmap(values: dict, title: str, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.array([[values.get((k, n), np.nan) for n in NLS] for k in KERNELS], dtype=float)
    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    im = ax.imshow(grid, cmap="viridis")
    ax.set_xticks(range(len(NLS)), [f"N_L={n}" for n in NLS])
    ax.set_yticks(range(len(KERNELS)), [f"{k}x{k}" for k in KERNELS])
    for i in range(len(KERNELS)):
        for j in range(len(NLS)):
            ax.text(j, i, "n/a" if np.isnan(grid[i, j]) else f"{grid[i, j]:.3f}", ha="center", va="center",
                    color="w" if np.isnan(grid[i, j]) or grid[i, j] < np.nanmean(grid) else "k", fontsize=9)
    fig.colorbar(im, ax=ax, label="test Dice")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out = atomic_write(path, lambda p: fig.savefig(p, dpi=110))
    plt.close(fig)
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, DEFAULT_OUT, epochs=15, folds=1)
    p.add_argument("--dataset", choices=["liver", "ms"], default="liver")
    p.add_argument("--no-plain-control", dest="plain_control", action="store_false",
                   help="skip the control row: the same network with stored (plain) kxk kernels, same recipe")
    return p.parse_args(argv)


# a cell "left the all-background start" when its final training Dice exceeds this
LEARNT = 0.1


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    net, bundle, demo, demo_ov, smoke_ov, smoke_size = SETUP[args.dataset]
    settings = grid_settings(args, demo, demo_ov, smoke_ov, smoke_size=smoke_size).replace(bundle=bundle, noise={})
    seeds = args.seeds[:1] if args.smoke else args.seeds
    algos = [algorithm(net, k, n) for k in KERNELS for n in NLS]
    plain = [f"{PLAIN[args.dataset]}:kernel_size={k}" for k in KERNELS] if args.plain_control else []
    per_seed = run_seeds("segmentation", algos + plain, seeds, settings)
    out = Path(args.out)
    every = [r for s in per_seed.values() for r in s["results"]]
    # the paper's claim, paired: each larger kernel against 3x3 at the same N_L (Holm over the two)
    paired = {}
    for n in NLS:
        three = algorithm(net, 3, n)
        st = paired_statistics([r for r in every if r["algorithm"] in {algorithm(net, k, n) for k in KERNELS}], three)
        paired.update({(k, n): st.get(algorithm(net, k, n)) for k in KERNELS if k != 3})
    rows, ours = [], {}
    for k in KERNELS:
        for n in NLS:
            a = across_seeds(per_seed, algorithm(net, k, n))
            ours[(k, n)] = a["test_metric_mean"]
            train = a["train_metric_per_seed"]
            rows.append({"kernel_size": k, "n_l": n, "paper_test_dice": PAPER[args.dataset][(k, n)],
                         "test_dice_mean": a["test_metric_mean"], "test_dice_std": a["test_metric_std"],
                         "train_dice_mean": a["train_metric_mean"], "train_dice_min": min((t for t in train if t is not None), default=None),
                         "seeds": len(seeds), "seeds_learnt": sum(t is not None and t > LEARNT for t in train),
                         "test_dice_per_seed": " ".join("n/a" if v is None else f"{v:.3f}" for v in a["test_metric_per_seed"]),
                         "params": a["params"], "receptive_field": a["receptive_field"],
                         "vs_3x3": paired_text(paired.get((k, n))),
                         "vs_3x3_verdict": direction_verdict(paired.get((k, n)), +1) if k != 3 else None})
    control = []
    for k, a in zip(KERNELS, plain):
        c = across_seeds(per_seed, a)
        train = c["train_metric_per_seed"]
        control.append({"kernel_size": k, "algorithm": a, "test_dice_mean": c["test_metric_mean"],
                        "test_dice_std": c["test_metric_std"], "train_dice_mean": c["train_metric_mean"],
                        "seeds": len(seeds), "seeds_learnt": sum(t is not None and t > LEARNT for t in train),
                        "params": c["params"]})
    csv_path = write_csv(rows, out / "kernel_grid.csv")
    lines = ["| kernel, N_L | paper test Dice | ours test Dice (mean ± std over seeds) | per seed | ours train Dice | "
             f"seeds with train Dice > {LEARNT} | ours params | receptive field | ours - 3x3 at this N_L, paired [95 % CI], "
             "Holm p |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kernel_size']}x{r['kernel_size']}, {r['n_l']} | {r['paper_test_dice']:.3f} | "
                     f"{fmt_pm(r['test_dice_mean'], r['test_dice_std'])} | {r['test_dice_per_seed']} | "
                     f"{fmt_pm(r['train_dice_mean'], None)} | {r['seeds_learnt']} of {r['seeds']} | "
                     f"{'n/a' if r['params'] is None else int(r['params'])} | {r['receptive_field'] or 'n/a'} | "
                     f"{'reference' if r['kernel_size'] == 3 else r['vs_3x3']} |")
    if control:
        lines += ["", f"Control: the same network with stored (plain) kernels ({PLAIN[args.dataset]}), same recipe and budget.", "",
                  "| plain kernel | ours test Dice (mean ± std over seeds) | ours train Dice | "
                  f"seeds with train Dice > {LEARNT} | params |", "|---|---|---|---|---|"]
        for r in control:
            lines.append(f"| {r['kernel_size']}x{r['kernel_size']} | {fmt_pm(r['test_dice_mean'], r['test_dice_std'])} | "
                         f"{fmt_pm(r['train_dice_mean'], None)} | {r['seeds_learnt']} of {r['seeds']} | "
                         f"{'n/a' if r['params'] is None else int(r['params'])} |")
    md_path = atomic_write(out / "kernel_grid.md", lambda p: Path(p).write_text("\n".join(lines) + "\n"))
    fig_ours = heatmap({k: v for k, v in ours.items() if v is not None},
                       f"ours ({args.dataset}, test Dice, mean of {len(seeds)} seed{'s' * (len(seeds) > 1)})",
                       out / "kernel_grid_ours.png")
    fig_paper = heatmap(PAPER[args.dataset], f"paper: Ma et al. 2022 ({args.dataset}, test Dice)", out / "kernel_grid_paper.png")
    para = paragraph(args.dataset, rows, len(seeds), control)
    scale = ("smoke: tiny generated volumes, 1 iteration per cell" if args.smoke else
             f"{'demo data' if args.data is None else args.data} ({args.dataset}); seeds {' '.join(map(str, seeds))}; "
             f"{args.folds} fold{'s' * (args.folds > 1)} x {args.epochs} epochs per cell; "
             + ("96x96 slices, 8 start channels (the bundle's demo.json)" if args.dataset == "liver"
                else "96x96 slices, 16 start channels") + "; CPU")
    report = experiment_report(NAME, "Kernel size x N_L grid", "Ma et al. 2022, Tables 2/4",
                               command_line("scripts/experiments/kernel_grid.py", argv), scale, para,
                               tables=[md_path], figures=[fig_ours, fig_paper],
                               numbers={"rows": rows, "plain_control": control}, out_dir=out)
    write_summary(NAME, out, args, report, csv=csv_path)
    return {"rows": rows, "plain_control": control, "report": report, "result": per_seed}


def paragraph(dataset: str, rows: Sequence[dict], n_seeds: int, control: Sequence[dict] = ()) -> str:
    """The results paragraph, built from the measured rows against the paper's Table 2/4."""
    done = {(r["kernel_size"], r["n_l"]): r for r in rows if r["test_dice_mean"] is not None}
    if not done:
        return "Every cell failed; see the leaderboards."
    paper = PAPER[dataset]
    paper_best = max(paper, key=paper.get)
    best = max(done, key=lambda kn: done[kn]["test_dice_mean"])
    by_k = {k: statistics.fmean(done[(k, n)]["test_dice_mean"] for n in NLS if (k, n) in done)
            for k in KERNELS if any((k, n) in done for n in NLS)}
    stds = [r["test_dice_std"] for r in done.values() if r["test_dice_std"] is not None]
    stuck = [kn for kn, r in done.items() if r["seeds_learnt"] < r["seeds"]]
    text = (f"Ma et al. 2022 ({'Table 2' if dataset == 'liver' else 'Table 4'}) find the best test Dice at "
            f"{paper_best[0]}x{paper_best[0]}, N_L={paper_best[1]} ({paper[paper_best]:.3f}) and that 5x5 and 7x7 "
            f"implicit kernels beat 3x3. On the demo data ({n_seeds} seed{'s' * (n_seeds > 1)} per cell) the best "
            f"cell is {best[0]}x{best[0]}, N_L={best[1]} ({fmt_pm(done[best]['test_dice_mean'], done[best]['test_dice_std'])}); "
            "mean test Dice per kernel size " + ", ".join(f"{k}x{k} {v:.3f}" for k, v in by_k.items()) + ". ")
    verdicts = {(r["kernel_size"], r["n_l"]): r.get("vs_3x3_verdict") for r in rows if r["kernel_size"] != 3}
    holds = [kn for kn, v in verdicts.items() if v == "holds"]
    reversed_ = [kn for kn, v in verdicts.items() if v == "reversed"]
    name = lambda kn: f"{kn[0]}x{kn[0]}/N_L={kn[1]}"  # noqa: E731
    text += ("Paired over the test cases (each the mean of its seeds; fold-stratified bootstrap 95 % CI, Wilcoxon "
             "signed-rank, Holm over the two larger kernels at each N_L), a larger kernel is significantly better "
             "than 3x3 at the same N_L (p < 0.05) in " + (", ".join(map(name, holds)) if holds else "no cell")
             + (", significantly worse in " + ", ".join(map(name, reversed_)) if reversed_ else "")
             + f"; the other {len(verdicts) - len(holds) - len(reversed_)} of {len(verdicts)} comparisons are not "
             "significant (table). ")
    train_k = {k: statistics.fmean(done[(k, n)]["train_dice_mean"] for n in NLS if (k, n) in done and done[(k, n)]["train_dice_mean"] is not None)
               for k in KERNELS if any((k, n) in done and done[(k, n)]["train_dice_mean"] is not None for n in NLS)}
    if train_k:
        text += "Mean training Dice per kernel size: " + ", ".join(f"{k}x{k} {v:.3f}" for k, v in train_k.items()) + ". "
        if best[0] < paper_best[0] and list(train_k.values()) == sorted(train_k.values(), reverse=True):
            text += ("The paper's direction (larger implicit kernels better) is not reproduced here: the training Dice falls "
                     "with the kernel size as the test Dice does, so at this budget the larger kernels fit even the training "
                     "data less well; the grid ranks how fast each cell learns, not what it can reach. ")
    if stuck:
        text += (f"{len(stuck)} of {len(done)} cells stayed at the all-background start (train Dice <= {LEARNT}) in at "
                 "least one seed: " + ", ".join(f"{k}x{k}/N_L={n} ({done[(k, n)]['seeds_learnt']} of "
                                                f"{done[(k, n)]['seeds']} seeds learnt)" for k, n in stuck) + ". ")
    else:
        text += f"Every cell left the all-background start (train Dice > {LEARNT}) in every seed. "
    plain = {r["kernel_size"]: r["train_dice_mean"] for r in control if r["train_dice_mean"] is not None}
    if len(plain) == len(KERNELS) and len(train_k) == len(KERNELS):
        hyper_falls = train_k[KERNELS[-1]] < train_k[KERNELS[0]]
        plain_falls = plain[KERNELS[-1]] < plain[KERNELS[0]]
        text += ("Control, the same network with stored kxk kernels at the same recipe and budget: training Dice "
                 + ", ".join(f"{k}x{k} {v:.3f}" for k, v in plain.items()) + "; "
                 + ("the plain kernels also fit less well as they grow, so the slowdown is one of large kernels at "
                    "this budget rather than of generated ones alone" if hyper_falls and plain_falls else
                    "the plain kernels do not lose with the size as the generated ones do, so the slowdown is specific "
                    "to generated kernels" if hyper_falls else
                    "neither loses with the size") + ". ")
    return text + "Parameter counts do not depend on the kernel size (Eq. 3), as in the paper."


if __name__ == "__main__":
    main(sys.argv[1:])
