"""CS-MRI of the hyper-convolution journal extension (Ma et al., Figs 7-9): PSNR of Hyper-UNet 5x5 with N_L in {2, 4, 8} vs a UNet 5x5, and
the k-space noise sweep, next to the zero-filled input's PSNR.

One comparison (``monai_hyperconv.compare``) with the brain-MRI reconstruction bundle's recipe
(variable-density Poisson-disk undersampling, residual UNet, MSE); the noise is complex Gaussian
noise added in k-space to the test inputs (``kspace_gaussian``), the models trained on clean data.

    python scripts/experiments/cs_mri.py           # demo scale
    python scripts/experiments/cs_mri.py --smoke   # seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from monai_hyperconv.bundle import write_csv
from monai_hyperconv.compare import experiment_report, run_comparison
from monai_hyperconv.compare.experiments import (add_common_args, by_algorithm, command_line, direction_verdict,
                                                  grid_settings, noise_curves, noise_paired, paired_statistics,
                                                  paired_text, pm, wilcoxon_text, write_summary)
from monai_hyperconv.utils import atomic_write

NAME = "cs_mri"
DEFAULT_OUT = f"outputs/experiments/{NAME}"
ALGORITHMS = {"UNet 5x5": "unet:kernel_size=5", "Hyper-UNet N_L=2": "hyper_unet:n_l=2",
              "Hyper-UNet N_L=4": "hyper_unet:n_l=4", "Hyper-UNet N_L=8": "hyper_unet:n_l=8"}
PAPER_PSNR = {"UNet 5x5": 29.36, "Hyper-UNet N_L=2": 29.39, "Hyper-UNet N_L=4": 30.16, "Hyper-UNet N_L=8": 30.4}
NOISE = {"kspace_gaussian": [0.0, 0.01, 0.02, 0.05, 0.1]}


def zero_filled_psnr(cell_dir: Path, levels: Sequence[float]) -> dict[str, float]:
    """PSNR of the network input (the zero-filled reconstruction) against the target, with the same
    seeded k-space noise the runner adds (same generator per level, same batch order)."""
    from monai.bundle import ConfigParser

    from monai_hyperconv.bundle.robustness import corrupt
    from monai_hyperconv.compare.cell import _overrides

    spec = json.loads((cell_dir / "cell.json").read_text())
    parser = ConfigParser()
    parser.read_config(spec["configs"])
    parser.update(_overrides(spec, False))
    loader = parser.get_parsed_content("validate#dataloader")
    out = {}
    for lv in levels:
        rng = np.random.RandomState(int(spec["seed"]) * 1000 + int(round(float(lv) * 1e4)) % 997)
        vals = []
        for batch in loader:
            x = torch.as_tensor(batch["image"]).float()
            x = corrupt(x, "kspace_gaussian", float(lv), rng) if lv > 0 else x
            y = torch.as_tensor(batch["label"]).float()
            mse = ((x - y) ** 2).flatten(1).mean(1).clamp_min(1e-12)
            vals += (10 * torch.log10(1.0 / mse)).tolist()
        out[str(float(lv))] = statistics.fmean(vals)
    return out


def plots(results: Sequence[dict], curves: Sequence[dict], zf: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    data, labels = [], []
    for label, algo in ALGORITHMS.items():
        vals = [v for r in results if r["algorithm"] == algo and r["status"] == "ok" for v in (r.get("test_per_case") or [])]
        if vals:
            data.append(vals)
            labels.append(label)
    if data:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        ax.violinplot(data, showmeans=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
        ax.set_ylabel("test PSNR (dB), per image")
        ax.set_title("CS-MRI test PSNR (Ma et al. (journal extension) Fig 7)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        figs.append(atomic_write(out / "psnr_violin.png", lambda p: fig.savefig(p, dpi=110)))
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    levels = NOISE["kspace_gaussian"]
    for label, algo in ALGORITHMS.items():
        means = [c["psnr_mean"] for c in curves if c["algorithm"] == algo]
        if means and means[0] is not None:
            ax.plot(levels, means, marker="o", label=label)
    if zf:
        ax.plot(levels, [zf[str(float(lv))] for lv in levels], "k--", label="zero-filled input")
    ax.set_xlabel("k-space noise standard deviation")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title("CS-MRI from noisy data (Ma et al. (journal extension) Fig 8)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    figs.append(atomic_write(out / "psnr_vs_kspace_noise.png", lambda p: fig.savefig(p, dpi=110)))
    plt.close(fig)
    return figs


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, DEFAULT_OUT, epochs=12, folds=2)
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    settings = grid_settings(args, "brain_recon", {}, {"image_size": 32, "unet#channels": 4, "batch_size": 4},
                             smoke_size=None, smoke_subjects=6)
    res = run_comparison("reconstruction", list(ALGORITHMS.values()), settings.replace(noise=NOISE))
    lb = by_algorithm(res)
    out = Path(args.out)
    ok = [r for r in res["results"] if r["status"] == "ok"]
    zf = zero_filled_psnr(Path(ok[0]["cell_dir"]), NOISE["kspace_gaussian"]) if ok else {}
    curves = noise_curves(res["results"], ALGORITHMS, NOISE, "psnr")
    rows = []
    for label, algo in ALGORITHMS.items():
        a = lb.get(algo) or {}
        row = {"method": label, "algorithm": algo, "paper_psnr": PAPER_PSNR[label],
               "test_psnr_mean": a.get("test_metric_mean"), "test_psnr_std": a.get("test_metric_std"),
               "params": a.get("params_mean")}
        row.update({f"psnr_noise_{c['level']}": c["psnr_mean"] for c in curves if c["algorithm"] == algo})
        rows.append(row)
    rows.append({"method": "zero-filled input", "algorithm": "", "paper_psnr": None,
                 "test_psnr_mean": zf.get("0.0"), **{f"psnr_noise_{lv}": zf.get(str(float(lv)))
                                                     for lv in NOISE["kspace_gaussian"]}})
    levels = NOISE["kspace_gaussian"]
    ref = ALGORITHMS["UNet 5x5"]
    stats = paired_statistics(res["results"], ref)
    noisy_stats = noise_paired(res["results"], ref, ALGORITHMS["Hyper-UNet N_L=4"], NOISE)  # the paper's Fig 8 pair
    for row in rows:
        st = stats.get(row["algorithm"]) or {}
        row.update({f"vs_unet_{k}": st.get(k) for k in ("diff_mean", "diff_ci_low", "diff_ci_high", "p_holm")})
    csv_path = write_csv(rows, out / "cs_mri.csv")
    lines = ["| method | paper PSNR | ours test PSNR | params | " + " | ".join(f"noise {lv}" for lv in levels)
             + " | ours - UNet 5x5 (clean), paired over cases [95 % CI], Holm p |",
             "|---|---|---|---|" + "---|" * (len(levels) + 1)]
    for row in rows:
        a = lb.get(row["algorithm"])
        mean = row["test_psnr_mean"]
        ours = pm(a, "test_metric", 2) if a else ("n/a" if mean is None else f"{mean:.2f}")
        noisy = [row[f"psnr_noise_{lv}"] for lv in levels]
        lines.append(f"| {row['method']} | {row['paper_psnr'] or '-'} | {ours} | "
                     f"{'-' if row.get('params') is None else int(row['params'])} | "
                     + " | ".join("n/a" if v is None else f"{v:.2f}" for v in noisy) + " | "
                     + ("reference" if row["algorithm"] == ref else paired_text(stats.get(row["algorithm"])) if row["algorithm"]
                        else "-") + " |")
    md_path = atomic_write(out / "cs_mri.md", lambda p: Path(p).write_text("\n".join(lines) + "\n"))
    figs = plots(res["results"], curves, zf, out)
    by = {r["method"]: r for r in rows}
    unet, hyp = by["UNet 5x5"], by["Hyper-UNet N_L=4"]
    if unet["test_psnr_mean"] is not None and hyp["test_psnr_mean"] is not None and zf:
        hi = levels[-1]
        para = ("Ma et al. (journal extension) report mean test PSNR 30.40 / 30.16 / 29.39 dB for Hyper-UNets with N_L = 8 / 4 / 2 vs "
                "29.36 dB for the 5x5 UNet (Fig 7), and that under k-space noise the UNet falls below the zero-filled "
                "input's PSNR while the Hyper-UNet stays above it (Fig 8). On the demo data we measure "
                + " / ".join(f"{by[f'Hyper-UNet N_L={n}']['test_psnr_mean']:.2f}" for n in (8, 4, 2)
                             if by[f"Hyper-UNet N_L={n}"]["test_psnr_mean"] is not None)
                + f" dB vs {unet['test_psnr_mean']:.2f} dB for the UNet, with the zero-filled input at {zf['0.0']:.2f} dB. "
                f"At k-space noise {hi}: UNet {unet[f'psnr_noise_{hi}']:.2f} dB, Hyper-UNet N_L=4 "
                f"{hyp[f'psnr_noise_{hi}']:.2f} dB, input {zf[str(float(hi))]:.2f} dB; "
                + f"the UNet is {'above' if unet[f'psnr_noise_{hi}'] >= zf[str(float(hi))] else 'below'} the input "
                f"and the Hyper-UNet is {'above' if hyp[f'psnr_noise_{hi}'] >= zf[str(float(hi))] else 'below'} it"
                + (", so the paper's collapse of the UNet below its input is not reproduced at this scale."
                   if unet[f"psnr_noise_{hi}"] >= zf[str(float(hi))] else ", as in the paper's Fig 8."
                   if hyp[f"psnr_noise_{hi}"] >= zf[str(float(hi))] else
                   "; both fall below the input, unlike the paper's Hyper-UNet.")
                + f" The best clean PSNR is the {max((r for r in rows if r['algorithm']), key=lambda r: r['test_psnr_mean'] or -1e9)['method']}'s."
                + " Paired over the test cases (each the mean of its seeds; fold-stratified bootstrap 95 % CI, "
                "Wilcoxon signed-rank, Holm over the three Hyper-UNets), the clean PSNR minus the UNet's is "
                + "; ".join(f"{label} {paired_text(stats.get(a))} ({direction_verdict(stats.get(a), PAPER_PSNR[label] - PAPER_PSNR['UNet 5x5'])})"
                            for label, a in ALGORITHMS.items() if a != ref)
                + f"; at k-space noise {hi} the Hyper-UNet N_L=4 minus UNet gap changes from clean by "
                + wilcoxon_text(noisy_stats["growth"].get("kspace_gaussian"), digits=2) + " dB."
                + " Small images (64x64), 8 start channels and short training: the absolute values are not "
                  "comparable with the paper's 256x256 brain MRI.")
    else:
        para = "Cells failed; see the leaderboard."
    scale = ("smoke: tiny generated images, 1 iteration per cell" if args.smoke else
             f"{'demo data' if args.data is None else args.data}; {args.folds} folds x seeds "
             f"{' '.join(map(str, settings.seed_list))} x {args.epochs} epochs per cell; "
             "64x64 images, 8x variable-density Poisson-disk undersampling, 8 start channels; CPU")
    report = experiment_report(NAME, "CS-MRI reconstruction and k-space noise", "Ma et al. (journal extension), Figs 7-9",
                               command_line("scripts/experiments/cs_mri.py", argv), scale, para,
                               tables=[md_path], figures=figs, numbers={"rows": rows, "zero_filled": zf}, out_dir=out)
    write_summary(NAME, out, args, report, csv=csv_path)
    return {"rows": rows, "report": report, "result": res, "zero_filled": zf}


if __name__ == "__main__":
    main(sys.argv[1:])
