"""Tables 1 and 3 of Ma et al. 2022 (hyper-convolutions) and its journal extension: every segmentation row on liver-lesion and MS-lesion data.

One comparison per data set through ``monai_hyperconv.compare`` (same recipe, loss, optimiser
and folds for every row: the liver and MS bundles), next to the paper's train/test Dice and
parameter counts. Demo data by default (the package's synthetic liver CT and MS MRI sets at
demo scale); real data with ``--data`` (``--dataset liver`` or ``ms``).

    python scripts/experiments/paper_tables.py              # both data sets, demo scale
    python scripts/experiments/paper_tables.py --smoke      # seconds
    python scripts/experiments/paper_tables.py --dataset liver --data /data/LiTS --epochs 100 --folds 5 --set image_size=256

Outputs in ``--out`` (default ``outputs/experiments/paper_tables``): ``<dataset>/comparison/`` (the
runner's leaderboard, per-fold JSON, plots), ``table1_liver.md``/``table3_ms.md`` (+ CSV) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from monai_hyperconv.bundle import write_csv
from monai_hyperconv.compare import experiment_report, run_comparison
from monai_hyperconv.compare.experiments import (add_common_args, by_algorithm, command_line, direction_verdict,
                                                  grid_settings, paired_statistics, paired_text, paper_table,
                                                  write_summary)
from monai_hyperconv.utils import atomic_write

NAME = "paper_tables"
DEFAULT_OUT = f"outputs/experiments/{NAME}"

# (label, algorithm, Ma et al. (journal extension) numbers)
LIVER = [
    ("UNet 3x3", "unet", {"train": 0.931, "test": 0.651, "params": 2.1}),
    ("UNet 5x5", "unet5", {"train": 0.942, "test": 0.639, "params": 5.3}),
    ("Dilated UNet 3x3", "dilated_unet", {"train": 0.930, "test": 0.612, "params": 2.1}),
    ("HyperSeg (our implementation)", "hyperseg", {"train": 0.902, "test": 0.683, "params": 1.2}),
    ("Non-local UNet 3x3", "nonlocal_unet", {"train": 0.919, "test": 0.690, "params": 2.3}),
    ("Hyper-UNet 5x5", "hyper_unet", {"train": 0.886, "test": 0.728, "params": 1.2}),
    ("Non-local Hyper-UNet 5x5", "nonlocal_hyper_unet", {"train": 0.893, "test": 0.733, "params": 1.4}),
    ("Flat Dilated CNN", "flat_dilated_cnn", {"train": 0.892, "test": 0.607, "params": 0.45}),
    ("Flat Hyper-CNN", "flat_hyper_cnn", {"train": 0.824, "test": 0.647, "params": 0.45}),
]
MS = [
    ("MB-UNet 3x3", "mb_unet", {"train": 0.887, "test": 0.624, "params": 2.1}),
    ("MB-UNet 5x5", "mb_unet5", {"train": 0.893, "test": 0.605, "params": 5.3}),
    ("Dilated MB-UNet 3x3", "dilated_mb_unet", {"train": 0.881, "test": 0.625, "params": 2.1}),
    ("HyperSeg (our implementation)", "hyperseg", {"train": 0.864, "test": 0.64, "params": 1.2}),
    ("Non-local MB-UNet 3x3", "nonlocal_mb_unet", {"train": 0.905, "test": 0.637, "params": 2.3}),
    ("Hyper-MB-UNet 5x5", "hyper_mb_unet", {"train": 0.82, "test": 0.655, "params": 1.2}),
    ("Non-local Hyper-MB-UNet 5x5", "nonlocal_hyper_mb_unet", {"train": 0.834, "test": 0.652, "params": 1.4}),
    ("Flat Dilated CNN", "flat_dilated_cnn", {"train": 0.854, "test": 0.616, "params": 0.45}),
    ("Flat Hyper-CNN", "flat_hyper_cnn", {"train": 0.805, "test": 0.649, "params": 0.45}),
]
DATASETS = {
    # bundle, demo task, demo-scale overrides, smoke overrides, smoke data size, paper rows, table name
    "liver": ("liver_lesion_segmentation", "liver", {},
              {"image_size": 32, "network_def#channels": 4, "batch_size": 4}, (48, 48, 6), LIVER, "Table 1"),
    "ms": ("ms_lesion_segmentation", "ms", {"slices_per_epoch": 64},
           {"crop_size": [32, 32, 32], "network_def#channels": 4, "slices_per_epoch": 4, "batch_size": 4},
           (40, 40, 36), MS, "Table 3"),
}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, DEFAULT_OUT, epochs=15, folds=2)
    p.add_argument("--dataset", choices=["liver", "ms", "both"], default="both")
    p.add_argument("--ms-epochs", type=int, default=5, help="epochs per MS cell (default 5; --epochs is the liver's)")
    p.add_argument("--exclude", nargs="*", default=[], metavar="ALGORITHM",
                   help="rows not to run (e.g. flat_hyper_cnn, whose dense 17x17 kernels take ~8 min per liver "
                        "demo epoch on 2 CPU cores); they show as 'not run'")
    return p.parse_args(argv)


def run_dataset(args: argparse.Namespace, ds: str) -> dict[str, Any]:
    bundle, demo, demo_ov, smoke_ov, smoke_size, rows, table = DATASETS[ds]
    sub = argparse.Namespace(**{**vars(args), "out": str(Path(args.out) / ds)})
    settings = grid_settings(sub, demo, demo_ov, smoke_ov, smoke_size=smoke_size).replace(bundle=bundle, noise={})
    if ds == "ms" and not args.smoke:
        settings = settings.replace(epochs=args.ms_epochs)
    known = {a for _, a, _ in rows}
    unknown = [a for a in args.exclude if a not in known and a not in {a for _, a, _ in LIVER + MS}]
    if unknown:
        raise SystemExit(f"--exclude: unknown algorithm(s) {unknown}; the rows are {sorted(known)}")
    res = run_comparison("segmentation", [a for _, a, _ in rows if a not in args.exclude], settings)
    lb = by_algorithm(res)
    plain = rows[0][1]
    stats = paired_statistics(res["results"], plain)
    full = [(label, algo, {**paper, "ours": lb.get(algo)}) for label, algo, paper in rows]
    ref_label = rows[0][0]
    md = paper_table(full, extra={
        "ours test Dice, case mean [95 % CI]": {a: f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
                                                for a, r in stats.items()},
        f"ours - {ref_label}, paired [95 % CI], Holm p": {a: paired_text(r) for a, r in stats.items() if a != plain},
        "P(rank 1)": {a: f"{r['p_first']:.2f}" for a, r in stats.items() if "p_first" in r}})
    out = Path(args.out)
    stem = f"{table.lower().replace(' ', '')}_{ds}"
    md_path = atomic_write(out / f"{stem}.md", lambda p: Path(p).write_text(md, encoding="utf-8"))
    csv_rows = [{"method": label, "algorithm": algo, "paper_train": paper["train"], "paper_test": paper["test"],
                 "paper_params_M": paper["params"],
                 **{k: (paper["ours"] or {}).get(k) for k in ("train_metric_mean", "train_metric_std", "test_metric_mean",
                                                               "test_metric_std", "gap_mean", "params_mean",
                                                               "receptive_field", "n_ok", "n_failed")},
                 **{f"stat_{k}": v for k, v in stats.get(algo, {}).items()}}
                for label, algo, paper in full]
    csv_path = write_csv(csv_rows, out / f"{stem}.csv")
    return {"rows": csv_rows, "stats": stats, "reference": plain, "md": md_path, "csv": csv_path, "figures": [res["paths"][k] for k in ("per_case_boxplot", "paired_differences", "metric_vs_params")
                                   if res["paths"].get(k)],
            "scale": dataclasses.asdict(settings), "table": table}


def _power_note(st: dict[str, Any]) -> str:
    """Say so when the test set is too small for any row to reach p < 0.05 after Holm's correction."""
    rows = [x for x in st.values() if x.get("diff_mean") is not None]  # the comparisons (not the reference)
    if not rows:
        return ""
    n, m = min(x["n_cases"] for x in rows), len(rows)
    best = 2.0 / 2 ** n  # the smallest two-sided exact Wilcoxon signed-rank p with n pairs (all of one sign)
    if best * m < 0.05:
        return ""
    return (f"With {n} test cases the smallest possible Wilcoxon p is {best:.3f}, so after Holm's correction over "
            f"{m} rows no row can reach p < 0.05 here: the CIs are the informative part, and a verdict needs more "
            "test cases (`--folds 5`). ")


def _paragraph(ds: str, r: dict[str, Any]) -> str:
    """The finding of one table: the paper's Hyper-UNet vs UNet gain against our paired difference."""
    rows = {x["algorithm"]: x for x in r["rows"]}
    plain, hyper = ("unet", "hyper_unet") if ds == "liver" else ("mb_unet", "hyper_mb_unet")
    p, h = rows[plain], rows[hyper]
    if p["test_metric_mean"] is None or h["test_metric_mean"] is None:
        return f"{r['table']} ({ds}): a baseline cell failed; see the leaderboard."
    st = r["stats"]
    first = max(st.items(), key=lambda kv: kv[1].get("p_first", -1))[0] if st else None
    names = {x["algorithm"]: x["method"] for x in r["rows"]}
    better = [names[a] for a, x in st.items() if direction_verdict(x, +1) == "holds"]
    worse = [names[a] for a, x in st.items() if direction_verdict(x, +1) == "reversed"]
    verdict = direction_verdict(st.get(hyper), h["paper_test"] - p["paper_test"])
    not_run = [x["method"] for x in r["rows"] if x["n_ok"] in (None, 0) and not x["n_failed"]]
    fails = [x["method"] for x in r["rows"] if x["n_failed"]]
    collapsed = [x["method"] for x in r["rows"] if x["train_metric_mean"] is not None and x["train_metric_mean"] <= 0.1]
    return (f"{r['table']} ({ds}): the paper reports {h['method']} {h['paper_test']:.3f} vs {p['method']} "
            f"{p['paper_test']:.3f} test Dice ({h['paper_test'] - p['paper_test']:+.3f}) with "
            f"{h['paper_params_M']}M vs {p['paper_params_M']}M parameters. On the demo data we measure "
            f"{h['test_metric_mean']:.3f} vs {p['test_metric_mean']:.3f} (means over cells); paired over the test cases "
            f"(each the mean of its seeds), {h['method']} - {p['method']} = {paired_text(st.get(hyper))} "
            "(fold-stratified bootstrap 95 % CI; Wilcoxon signed-rank, Holm-adjusted over the rows). "
            + {"holds": "The paper's direction holds at p < 0.05. ",
               "reversed": "The difference is significant in the direction opposite to the paper's. ",
               "not significant": "The difference is not significant at p < 0.05: this run neither reproduces nor "
                                  "refutes the paper's gain. ",
               "n/a": ""}[verdict]
            + _power_note(st)
            + (f"Significantly better than {p['method']}: {', '.join(better)}. " if better else
               f"No row is significantly better than {p['method']}. ")
            + (f"Significantly worse: {', '.join(worse)}. " if worse else "")
            + (f"Most often ranked first under bootstrap resampling of the cases: {names[first]} "
               f"(P(rank 1) = {st[first]['p_first']:.2f}). " if first else "")
            + "The networks are far narrower and trained for a few epochs on small synthetic data, so absolute values "
              "are not comparable with the paper's."
            + (f" Not run: {', '.join(not_run)}." if not_run else "")
            + (f" Failed cells: {', '.join(fails)}." if fails else "")
            + (f" Rows whose mean training Dice stayed at or below 0.1 (they did not learn at this budget): "
               f"{', '.join(collapsed)}." if collapsed else ""))


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    datasets = ["liver", "ms"] if args.dataset == "both" else [args.dataset]
    if args.data and len(datasets) > 1:
        raise SystemExit("--data needs --dataset liver or --dataset ms (one data set per run).")
    results = {ds: run_dataset(args, ds) for ds in datasets}
    parts = {"liver": f"liver: {args.epochs} epochs per cell, 96x96 slices, 8 start channels (the bundle's demo.json)",
             "ms": f"MS: {args.ms_epochs} epochs per cell, 96x96 slices of 80x96x80 crops, 16 start channels, 64 slices "
                   "per epoch"}
    scale = ("smoke: tiny generated volumes, 1 iteration per cell" if args.smoke else
             f"{'demo data' if args.data is None else args.data}; {args.folds} fold(s) x seeds "
             f"{' '.join(map(str, args.seeds))}; " + "; ".join(parts[ds] for ds in datasets) + "; CPU")
    out = Path(args.out)
    report = experiment_report(
        NAME, "Tables 1 and 3: segmentation baselines vs hyper-convolutions", "Ma et al. 2022 and its journal extension, Tables 1 and 3",
        command_line("scripts/experiments/paper_tables.py", argv), scale,
        " ".join(_paragraph(ds, r) for ds, r in results.items())
        + "".join(f" {DATASETS[ds][6]} ({ds}) was not part of this run (`--dataset {ds}`)." for ds in DATASETS
                  if ds not in results),
        tables=[r["md"] for r in results.values()], figures=[f for r in results.values() for f in r["figures"]],
        numbers={ds: r["rows"] for ds, r in results.items()}, out_dir=out)
    write_summary(NAME, out, args, report)
    return {"results": results, "report": report}


if __name__ == "__main__":
    main(sys.argv[1:])
