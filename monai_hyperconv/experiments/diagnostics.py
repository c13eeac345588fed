"""Why hyper-conv networks stalled, measured: the text of ``docs/training.md`` and its figures.

The logic of ``scripts/diagnose_training.py`` (the command parses the options, calls
:func:`training_document` and writes the result). Sections 1-5 are seeded layer and network
measurements on one CPU thread; section 6 (:func:`seed_runs_section`) tabulates the output of
``scripts/liver_demo_seeds.sh``.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..bundle.results import markdown_table
from ..bundle.runs import aggregate_runs, find_seed_runs, summarize_run
from ..compare.report import fmt_pm
from ..layers import AdaptiveConv, HyperConv
from ..layers.diagnostics import grad_norms_by_group, kernel_step_per_lr
from ..networks import create_network, init_output_layer


def step_table(channels: int) -> list:
    rows = []
    for k in (3, 5, 7, 9):
        pad = k // 2
        plain = kernel_step_per_lr(lambda: nn.Conv2d(channels, channels, k, padding=pad), channels)
        row = {"kernel": f"{k}x{k}", "plain conv": plain}
        for n_l in (2, 4, 8):
            row[f"hyper N_L={n_l} (paper)"] = kernel_step_per_lr(
                lambda: HyperConv(2, channels, channels, k, padding=pad, n_l=n_l, equalize_updates=False), channels) / plain
        for n_l in (2, 4, 8):
            row[f"hyper N_L={n_l} (equalised)"] = kernel_step_per_lr(
                lambda: HyperConv(2, channels, channels, k, padding=pad, n_l=n_l), channels) / plain
        row["adaptive"] = kernel_step_per_lr(lambda: AdaptiveConv(2, channels, channels, k, padding=pad), channels) / plain
        rows.append(row)
    return rows


def init_table() -> list:
    rows = []
    for k in (3, 5, 7):
        torch.manual_seed(k)
        layer = HyperConv(2, 32, 32, k, padding=k // 2, equalize_updates=False)
        he = math.sqrt(2.0 / layer.fan_in)
        with torch.no_grad():
            # the official code's init: He-normal output layer, no rescale
            nn.init.kaiming_normal_(layer.out_layer.weight, a=layer.negative_slope, nonlinearity="leaky_relu")
            official = layer.weight.std().item()
            layer.reset_parameters()
            ours = layer.weight.std().item()
        rows.append({"kernel": f"{k}x{k}", "He std (plain conv)": he, "official init std": official,
                     "official / He": official / he, "ours / He": ours / he})
    return rows


def _lesion_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(8, 1, 64, 64, generator=g) * 0.3
    y = torch.zeros(8, 1, 64, 64)
    for i in range(0, 8, 2):  # lesions in half the slices, 3-8 pixels across
        r = int(torch.randint(3, 9, (1,), generator=g))
        c = int(torch.randint(8, 48, (1,), generator=g))
        y[i, 0, c:c + r, c:c + r] = 1
    x = x + 0.4 * y
    return x, y


def _adam_moves(net: nn.Module, layers: list, x, y, lr: float, steps: int) -> tuple:
    """Adam steps of DiceCE on one batch; returns the first step's gradient norms and each kernel's move."""
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(sigmoid=True, batch=True)
    w0 = {n: m.weight.detach().clone() for n, m in layers}
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    grads = {}
    for i in range(steps):
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        if i == 0:
            grads = {n: grad_norms_by_group(m) for n, m in layers if isinstance(m, HyperConv)}
        opt.step()
    moves = {n: ((m.weight.detach() - w0[n]).norm() / w0[n].norm()).item() for n, m in layers}
    return grads, moves


def network_table(lr: float = 3e-3, steps: int = 5) -> list:
    """Per HyperConv layer of the demo Hyper-UNet: gradient norms and the kernel's relative move."""
    rows = []
    x, y = _lesion_batch()
    move_col = f"kernel move after {steps} steps (rel.)"
    for label, conv in (("paper", ["hyper", {"n_l": 4, "equalize_updates": False}]), ("equalised", ["hyper", {"n_l": 4}])):
        torch.manual_seed(0)
        net = create_network("hyper_unet", spatial_dims=2, in_channels=1, out_channels=1, channels=8, num_pools=3,
                             kernel_size=5, conv=conv, dropout=0.1, norm="batch")
        init_output_layer(net, bias=-4.0)
        layers = [(n, m) for n, m in net.named_modules() if isinstance(m, HyperConv)]
        grads, moves = _adam_moves(net, layers, x, y, lr, steps)
        for n, m in layers:
            g = grads[n]
            rows.append({"parametrisation": label, "layer": n, "kernel": "x".join(map(str, m.kernel_size)),
                         "grad norm hidden MLP": g.get("hidden", 0.0), "grad norm out weight": g.get("out_weight", 0.0),
                         "grad norm out bias": g.get("out_bias", 0.0), move_col: moves[n]})
    torch.manual_seed(0)
    plain = create_network("unet", spatial_dims=2, in_channels=1, out_channels=1, channels=8, num_pools=3,
                           kernel_size=5, dropout=0.1, norm="batch")
    init_output_layer(plain, bias=-4.0)
    convs = [(n, m) for n, m in plain.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
    moves = sorted(_adam_moves(plain, convs, x, y, lr, steps)[1].values())
    rows.append({"parametrisation": "plain UNet 5x5 (median over its convs)", "layer": f"{len(convs)} convs", "kernel": "5x5",
                 move_col: moves[len(moves) // 2]})
    return rows


def prior_table(biases=(-4.0, -2.0, 0.0)) -> list:
    """Gradient at initialisation of the demo Hyper-UNet under DiceCE for several output-bias priors:
    how much signal reaches the logits of lesion pixels, and the network's parameters."""
    from monai.losses import DiceCELoss

    x, y = _lesion_batch()
    rows = []
    for b in biases:
        torch.manual_seed(0)
        net = create_network("hyper_unet", spatial_dims=2, in_channels=1, out_channels=1, channels=8, num_pools=3,
                             kernel_size=5, conv=["hyper", {"n_l": 4}], dropout=0.1, norm="batch")
        init_output_layer(net, bias=b)
        logits = net(x)
        logits.retain_grad()
        loss = DiceCELoss(sigmoid=True, batch=True)(logits, y)
        loss.backward()
        g = logits.grad
        les = y.bool()
        rows.append({"output bias": b, "initial lesion probability": float(torch.sigmoid(torch.tensor(b))),
                     "DiceCE loss at init": loss.item(),
                     "mean abs dL/dlogit, lesion pixels (x 1e-6)": 1e6 * g[les].abs().mean().item(),
                     "mean abs dL/dlogit, other pixels (x 1e-6)": 1e6 * g[~les].abs().mean().item(),
                     "gradient norm, all parameters": torch.sqrt(sum((p.grad ** 2).sum() for p in net.parameters() if p.grad is not None)).item()})
    return rows


def empty_slice_table(dataset_dir: Path) -> list:
    import json

    import nibabel as nib
    import numpy as np

    meta = json.loads((dataset_dir / "dataset.json").read_text())
    n_liver = n_lesion = 0
    for it in meta["training"]:
        lab = np.asarray(nib.load(str(dataset_dir / it["label"])).dataobj)
        liver = (lab > 0).any(axis=(0, 1))
        lesion = (lab > 1.5).any(axis=(0, 1))
        n_liver += int(liver.sum())
        n_lesion += int((liver & lesion).sum())
    return [{"training slices with liver": n_liver, "of which with lesion": n_lesion,
             "without lesion": n_liver - n_lesion, "fraction without lesion": (n_liver - n_lesion) / max(n_liver, 1)}]


NETWORK_LABELS = {
    "hyper": "Hyper-UNet 5x5, N_L=4 (the bundle's network)",
    "unet": "UNet 5x5 (the same PaperUNet, plain convs)",
    "unet3": "UNet 3x3 (the papers' baseline)",
    "basicunet": "MONAI BasicUNet (features 8, 8, 16, 32, 64, 8)",
}


def _copy_curve(root: Path, label: str, fig_dir: Path) -> str | None:
    png = Path(root) / "eval" / "training_curves.png"
    if not png.is_file():
        return None
    slug = "".join(ch if ch.isalnum() else "_" for ch in label).strip("_")
    fig_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(png, fig_dir / f"{slug}.png")
    return f"figures/training/{slug}.png"


def weight_average_ablation(with_avg: Path, without_avg: Path) -> list:
    """Section 7: the Hyper-UNet's seed runs validated on the weight average against runs of the same
    recipe that validate and save the current weights (``--ema_decay 0``)."""
    rows = []
    for what, root in (("current weights (`--ema_decay 0`)", without_avg), ("weight average (decay 0.99, the default)", with_avg)):
        runs = find_seed_runs(Path(root)).get("hyper", {})
        for seed, path in sorted(runs.items()):
            r = summarize_run(path, eval_key="mean_dice")
            rows.append({"validated and saved": what, "seed": seed, "best val Dice": r["best"], "best epoch": r["best_epoch"],
                         "last val Dice": r["last"], "last / best": r["last_over_best"],
                         "volume Dice, saved model": "n/a" if r["eval"] is None else r["eval"]})
    if not rows:
        raise SystemExit(f"--ablation-runs {without_avg}: no hyper/seed<k> runs there.")
    means = {}
    for key in ("last val Dice", "volume Dice, saved model"):
        for what in {r["validated and saved"] for r in rows}:
            vals = [r[key] for r in rows if r["validated and saved"] == what and isinstance(r[key], float)]
            means[key, what.startswith("weight")] = float(np.mean(vals)) if vals else float("nan")
    return ["## 7. Validating an average of the weights", "",
            "The runs of section 6 validate and save an exponential moving average of the weights "
            "(`monai_hyperconv.bundle.WeightAverage`, decay 0.99 per iteration with TensorFlow's ramp; Polyak "
            "averaging). Below, the Hyper-UNet with the same data, recipe and seeds, validating and saving the "
            f"current weights instead (output `{without_avg}`: runs of `bash scripts/liver_demo_seeds.sh` made before "
            "the weight average existed; `--ema_decay 0` disables it and trains the same way):", "",
            markdown_table(rows, digits=3), "",
            "With the current weights the validation Dice jumps between epochs (a lesion near the 0.5 threshold is "
            "found in one epoch and missed in the next), so the best epoch is partly luck and the last one can be "
            "far below it. The average removes the jumps: best and last agree, and the saved model's score is what "
            "the run converged to, not its luckiest epoch. It does not make a weak seed strong (the averaged "
            "score sits near the current weights' late-epoch level), which is the honest number to report: "
            f"mean last-epoch Dice {means['last val Dice', False]:.3f} with the current weights, "
            f"{means['last val Dice', True]:.3f} with the average; mean score of the saved model "
            f"{means['volume Dice, saved model', False]:.3f} (the best epoch of the current weights) and "
            f"{means['volume Dice, saved model', True]:.3f} (the average).", ""]


def seed_runs_section(root: Path, fig_dir: Path) -> list:
    """Section 6 from a ``scripts/liver_demo_seeds.sh`` output folder: baselines, per-network seed
    aggregates, per-run convergence, curves and a paragraph built from the numbers."""
    import json

    found = find_seed_runs(root)
    if not found:
        raise SystemExit(f"--seed-runs {root}: no <network>/seed<k> runs with a training log there.")
    order = [n for n in NETWORK_LABELS if n in found] + [n for n in found if n not in NETWORK_LABELS]
    seeds = sorted({s for runs in found.values() for s in runs})
    per_run, agg, figs, by_net = [], {}, [], {}
    for net in order:
        runs = []
        for seed, path in sorted(found[net].items()):
            r = summarize_run(path, eval_key="mean_dice")
            runs.append(r)
            label = NETWORK_LABELS.get(net, net)
            per_run.append({"network": label, "seed": seed, "best val Dice": r["best"], "best epoch": r["best_epoch"],
                            "last val Dice": r["last"], "last / best": r["last_over_best"], "mean of last 5": r["mean_last5"],
                            "final train loss": r["final_train_loss"],
                            "volume Dice, best checkpoint": "n/a" if r["eval"] is None else r["eval"],
                            "training time (s)": "n/a" if r["train_seconds"] is None else round(r["train_seconds"])})
            fig = _copy_curve(path, f"{net} seed {seed}", fig_dir)
            if fig:
                figs.append((f"{label}, seed {seed}", fig))
        agg[net] = aggregate_runs(runs)
        by_net[net] = runs
    rows = [{"network": NETWORK_LABELS.get(n, n), "seeds": a["n"], "best val Dice": fmt_pm(a["best_mean"], a["best_std"]),
             "last val Dice": fmt_pm(a["last_mean"], a["last_std"]),
             "volume Dice, best checkpoint": fmt_pm(a["eval_mean"], a["eval_std"]),
             "seeds with last >= 0.9 best": f"{a['converged']} of {a['n']}",
             "training time (s)": fmt_pm(a["train_seconds_mean"], a["train_seconds_std"], 0)} for n, a in agg.items()]
    base_md = root / "baselines" / "baselines.md"
    base = json.loads((root / "baselines" / "baselines.json").read_text()) if (root / "baselines" / "baselines.json").is_file() else {}
    n_val = base.get("n_eval", "?")
    parts = ["## 6. Training runs: the liver demo over seeds, next to MONAI's BasicUNet and classical baselines", "",
             f"Generated from `bash scripts/liver_demo_seeds.sh` (output folder `{root}`): the liver bundle with "
             "`configs/demo.json` (96x96 slices, 64x64 training crops, 8 start channels, Adam 3e-3 with a 3-epoch "
             f"warm-up and cosine decay, 25 epochs, validating and saving the weight average of section 7), seeds {', '.join(map(str, seeds))}, the same data, recipe and budget for every network "
             f"(only `network_def` differs). Validation: the demo's {n_val} validation volumes, whole volumes slice "
             "by slice, Dice per volume then the mean, every epoch. Training time is wall-clock on the 2-core CPU "
             "(data caching included); the numbers depend on the CPU's float path, so another machine gives "
             "slightly different values for the same seed.", ""]
    if base_md.is_file():
        parts += ["Classical baselines on the same validation volumes (`python scripts/demo_baselines.py --task liver "
                  "--data DATA`; thresholds fitted on the training volumes; both use the true liver mask, which the "
                  "networks do not get):", "", base_md.read_text().strip(), ""]
    parts += ["Mean ± sample std over seeds:", "", markdown_table(rows, digits=3), "", "Per run:", "",
              markdown_table(per_run, digits=3), ""]
    parts += [_seed_paragraph(agg, base, by_net), ""]
    parts += [f"![{label}]({path})\n" for label, path in figs]
    return parts


STALLED = 0.1  # a run whose best validation Dice stays below this never left the all-background start


def _seed_paragraph(agg: dict, base: dict, by_net: dict | None = None) -> str:
    text = []
    h = agg.get("hyper")
    if h is None:
        return "No Hyper-UNet runs in this folder."
    text.append(f"The Hyper-UNet's last epoch is within 10 % of its best in {h['converged']} of {h['n']} seeds "
                f"(best {fmt_pm(h['best_mean'], h['best_std'])}, last {fmt_pm(h['last_mean'], h['last_std'])}).")
    thr = [v for k, v in base.items() if k.startswith("threshold_sigma") and isinstance(v, dict)]
    organ = base.get("oracle_organ", {}).get("mean")
    if thr and organ is not None:
        raw = base.get("threshold_sigma0", thr[0])["mean"]
        best_thr = max(v["mean"] for v in thr)
        text.append(f"Its mean best Dice is {'above' if h['best_mean'] > raw else 'below'} the oracle-organ HU threshold "
                    f"({raw:.3f}; {'above' if h['best_mean'] > best_thr else 'below'} the best smoothed one, {best_thr:.3f}) "
                    f"and {h['best_mean'] / organ:.1f}x the oracle-whole-liver predictor ({organ:.3f}).")
    refs = {n: a for n, a in agg.items() if n != "hyper" and a["best_mean"] is not None}
    if refs:
        ref_name, ref = max(refs.items(), key=lambda kv: kv[1]["eval_mean"] if kv[1]["eval_mean"] is not None else kv[1]["best_mean"])
        key = "eval" if h["eval_mean"] is not None and ref["eval_mean"] is not None else "best"
        diff = h[f"{key}_mean"] - ref[f"{key}_mean"]
        sd = ref[f"{key}_std"] or 0.0
        what = "volume Dice of the best checkpoint" if key == "eval" else "best validation Dice"
        verdict = ("above it" if diff > 0 else "within one of its seed standard deviations" if -diff <= sd else
                   "below it by more than one seed standard deviation")
        text.append(f"Against the better reference network at the same budget, {NETWORK_LABELS.get(ref_name, ref_name)} "
                    f"({what} {fmt_pm(ref[key + '_mean'], ref[key + '_std'])}), the Hyper-UNet "
                    f"({fmt_pm(h[key + '_mean'], h[key + '_std'])}) is {verdict} (difference {diff:+.3f}; "
                    f"{h['n']} seeds, {base.get('n_eval', '?')} validation volumes: no paired test here).")
    for net, runs in (by_net or {}).items():
        stalled = [r for r in runs if r["best"] < STALLED]
        if stalled:
            ok = [r["eval"] for r in runs if r["best"] >= STALLED and r["eval"] is not None]
            text.append(f"{NETWORK_LABELS.get(net, net)} never left the all-background start (best validation Dice "
                        f"< {STALLED}) in {len(stalled)} of {len(runs)} seeds"
                        + (f"; in the others its volume Dice is {', '.join(f'{v:.3f}' for v in ok)}" if ok else "") + ".")
    if by_net and "hyper" in by_net and not any(r["best"] < STALLED for r in by_net["hyper"]):
        text.append("The Hyper-UNet left it in every seed.")
    return " ".join(text)


def training_document(dataset_dir: Path, out: Path, repo: Path, seed_runs: Optional[str] = None,
                      ablation_runs: Optional[str] = None) -> str:
    """The Markdown of ``docs/training.md``.

    Args:
        dataset_dir: the liver demo data (section 4's slice counts; skipped without its ``dataset.json``,
            unless ``seed_runs`` holds the runs' own copy).
        out: where the document goes (section 6 copies the runs' curves to ``out.parent/figures/training``).
        repo: the repository root (paths under it are shown relative).
        seed_runs: output folder of ``scripts/liver_demo_seeds.sh`` to tabulate (section 6), or None.
        ablation_runs: output folder of ``scripts/liver_demo_seeds.sh --ema_decay 0`` (section 7: the
            same runs without the weight average), or None.
    """
    torch.set_num_threads(1)  # the measurements are tiny; one thread keeps them exactly repeatable
    cmd = ("python scripts/diagnose_training.py" + (f" --seed-runs {seed_runs}" if seed_runs else "")
           + (f" --ablation-runs {ablation_runs}" if ablation_runs else ""))
    parts = [
        "# Training hyper-convolution networks: what went wrong, and the fix",
        "",
        f"Generated by `{cmd}`; do not edit by hand. Layer and network measurements are seeded and "
        "use one CPU thread; run tables read the bundle roots' `eval/training_log.csv`.",
        "",
        "## 1. One Adam step moves a generated kernel much further than a plain conv's",
        "",
        "RMS change of the kernel entries after 10 Adam steps (lr 1e-4, MSE to a random target, 4 random "
        "16x16 images), divided by the plain `nn.Conv2d`'s, which moves every entry by `lr` per step (its "
        "column shows the absolute value per unit `lr * steps`). *paper*: Eq. 3's parametrisation as in the "
        "official code (`equalize_updates=False`); *equalised*: the package's default since 0.2 (below).",
        "",
    ]
    for c in (8, 32):
        parts += [f"**{c} -> {c} channels**", "", markdown_table(step_table(c), digits=2), ""]
    parts += [
        "With the paper's parametrisation the generated kernel moves 2-12x further per step than a plain "
        "conv's, more the larger the kernel and N_L, and most at the demo's 8 channels. Two terms add up: "
        "the output layer's inputs are the hidden features at integer coordinates (up to +-4 for 9x9), whose "
        "norm grows with N_L and kernel size, so each output-weight step is multiplied by it; and the ~400 "
        "parameters of the hidden MLP are shared by every (input, output) channel pair, so when their Adam "
        "steps align they move every tap at once. At the demo's learning rate (3e-3, 30x the paper's 1e-4) "
        "(section 2) this moves the kernels by a large fraction of their norm within a few steps: the 5x5/7x7 nets were "
        "effectively trained at a far too large learning rate, which is why they fell back to the all-background "
        "prediction and why the liver run oscillated. At the paper's 1e-4 behind BatchNorm it is survivable, "
        "which is why the official code trains.",
        "",
        "**The fix (in the block, `HyperConv(equalize_updates=True)`, the default):** the stored parameters "
        "are scaled, `W_eff = g * W_raw` (the equalised learning rate of Karras et al. 2018), with one gain "
        "for the hidden MLP, one for the output weight and one for the output bias, kept in the persistent "
        "buffer `param_gains`. They are set at initialisation from the layer's own Jacobian "
        "(`HyperConv.update_sensitivity`: RMS over kernel entries of `sum_p |dK_e/dp|`, the move of an entry "
        "when every parameter of the group steps by `lr` with an aligned sign) so that each group contributes "
        "`1/sqrt(3)` and the three add up to a plain conv's 1. The function at initialisation and the "
        "parameter count (Eq. 3) are unchanged; only the optimiser's geometry is. The table shows the "
        "equalised layer within 1.1-1.5x of a plain conv for every kernel size and N_L "
        "(`tests/test_layers.py::test_hyperconv_update_size_comparable_to_plain_conv` holds it within 0.5-2x). "
        "The adaptive conv needs no such scale: its weights are stored per entry.",
        "",
        "## 2. Gradients through the hyper-network, layer by layer",
        "",
        "The demo Hyper-UNet (8 start channels, 5x5, N_L = 4, BatchNorm, dropout 0.1, output bias -4) on one "
        "synthetic batch of 8 64x64 slices with small lesions in half of them: gradient norms of each HyperConv's "
        "parameter groups at initialisation (DiceCE loss), and the relative move of each kernel, "
        "`||K_5 - K_0|| / ||K_0||`, after 5 Adam steps at the demo's lr 3e-3. Last row: the plain 5x5 UNet of the "
        "same widths under the same steps.",
        "",
        markdown_table(network_table(), digits=4),
        "",
        "Gradient norms through the MLP are not the problem (they are small, and Adam normalises them anyway); "
        "the step each group's Adam update causes in the kernel is. With the paper's parametrisation the kernels "
        "move by a large fraction of their norm within 5 steps, most in the deep layers, more than the plain UNet's; "
        "equalised, they move less than the plain UNet's (whose kernels start at PyTorch's default scale, "
        "below He's, so the same absolute step is a larger relative one).",
        "",
        "## 3. The per-layer rescale at initialisation",
        "",
        "Standard deviation of the generated kernel at initialisation for 32 -> 32 channels: the official code's "
        "He-normal output layer without rescale, and ours (rescaled to the He std of a plain conv of the same "
        "fan-in).",
        "",
        markdown_table(init_table(), digits=3),
        "",
        "Without the rescale the kernels start 15-35x too large and the network only trains behind BatchNorm; with "
        "it they start at the He scale, so the rescale is not what stalls training (it is needed; it was not enough).",
        "",
    ]
    ds = Path(dataset_dir)
    if not (ds / "dataset.json").is_file() and seed_runs and (Path(seed_runs) / "data" / "liver_demo" / "dataset.json").is_file():
        ds = Path(seed_runs) / "data" / "liver_demo"  # the runs' own demo data (liver_demo_seeds.sh layout)
    parts += ["## 4. Soft Dice on slices without lesion", ""]
    if (ds / "dataset.json").is_file():
        parts += [f"Training slices of the liver demo (`{ds.relative_to(repo) if ds.is_relative_to(repo) else ds}`, the slices the bundle trains on: those that contain liver):", "",
                  markdown_table(empty_slice_table(ds), digits=3), ""]
    parts += [
        "Most training slices contain no lesion. The papers' loss is soft Dice over the batch: a batch with few "
        "lesion pixels gives a loss near 1 whatever is predicted outside them, and a batch of empty slices gives "
        "almost no gradient, so its value jumps between batches (train loss ~1.0 for many epochs in the old demo). "
        "The default recipe adds cross-entropy (`DiceCELoss`), which gives every pixel a gradient, and "
        "`RandCropByPosNegLabeld` crops centred on lesion half of the time, so every batch sees lesion. The -4 "
        "output prior (sigmoid = 0.018) stays: with CE it is the standard rare-class prior (RetinaNet's); with soft "
        "Dice alone, starting near 'no lesion' everywhere meant a flat loss. Dropout in every block at 8 channels "
        "(the paper's 0.5) removes half of a layer's 8 features at each step, a large extra noise for narrow nets; the "
        "default keeps 0.1, as the old demo did. BatchNorm stays: the official nets need it, and the demo batch "
        "(8 slices x 2 crops) is large enough for its statistics.",
        "",
        "### The output prior",
        "",
        "The demo Hyper-UNet at initialisation on the synthetic lesion batch of section 2 (DiceCE, seeded, "
        "one thread), for output-bias priors -4 (the bundles' default), -2 and 0:",
        "",
        markdown_table(prior_table(), digits=3),
        "",
        "The -4 prior gives the lesion pixels the *largest* push of the three: the batch soft Dice term's "
        "denominator (sum of predicted probabilities) grows with the prior, and cross-entropy's p - y is largest "
        "where p is small; what reaches the parameters is of the same size for all three. So the prior is not "
        "what slows the first epochs of the runs in section 6 and of the kernel grid in `docs/results.md` (train "
        "loss near 1.0 for 5-10 epochs, then a steady fall), and the bundles keep -4. The slow start is not yet "
        "explained; candidates to measure next are the warm-up from 0.1x lr and the Dice term's small per-pixel "
        "gradient on large batches.",
        "",
        "## 5. The default recipe and the papers' recipe",
        "",
        "Segmentation bundles now default to: Dice + cross-entropy, foreground-oversampled crops (2 per slice, "
        "2/3 of the slice size), Adam with a 3-epoch linear warm-up from 0.1x and cosine decay to 0, the "
        "equalised hyper-conv, and validation and saving of an exponential moving average of the weights "
        "(section 7; the liver bundle since 0.2). `configs/paper.json` restores the papers' recipe: soft Dice over the batch on "
        "full slices, constant Adam 1e-4, dropout 0.5 in every block, the official parametrisation.",
        "",
    ]
    if seed_runs:
        parts += seed_runs_section(Path(seed_runs), Path(out).parent / "figures" / "training")
        if ablation_runs:
            parts += weight_average_ablation(Path(seed_runs), Path(ablation_runs))
    return "\n".join(parts) + "\n"
