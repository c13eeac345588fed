"""HyperMorph (Hoopes et al. 2021/2022) vs fixed-lambda VoxelMorph-style models, at demo scale.

One :class:`~monai_hyperconv.hypernets.HyperMorph` network is trained with ``lam ~ U(0, 1)`` per
step; one plain registration UNet (:class:`~monai_hyperconv.hypernets.RegistrationNet`, same
primary architecture, resize factor 0.5) is trained per fixed ``lam`` of ``fixed_lams``, each
with the same number of steps, loss (:class:`~monai_hyperconv.losses.HyperMorphLoss`, MSE + TV by
default), optimiser and pairs. Both are evaluated on the test pairs with
:func:`~monai_hyperconv.bundle.evaluate_lambdas` (warped-label Dice per label and mean, folding
fraction, det J statistics): HyperMorph over the whole ``lams`` grid without retraining, each fixed
model at its own ``lam``. Training time per model is recorded (HyperMorph's claim: one model for
the cost of about one).

Pairs: consecutive (cyclic) pairs of the demo ``brain_seg`` set (or ``--data``), as the
scale-space experiment's registration part (``monai_hyperconv.experiments.scale_space``).
"""

from __future__ import annotations

import os
import time
from argparse import Namespace
from typing import Any, Dict, List

import torch
from torch import nn

from ..bundle import choose_lambda, evaluate_lambdas, train_hypermorph, write_csv, write_json, write_markdown
from ..hypernets import HyperMorph, RegistrationNet
from ..losses import HyperMorphLoss
from .common import save_figure, set_seed, sync
from .scale_space import load_dataset, load_demo_dataset

__all__ = ["NAME", "DEFAULTS", "SMOKE", "run"]

NAME = "hypermorph"
DEFAULTS: Dict[str, Any] = {
    "size": [96, 112], "n_subjects": 32, "steps": 2000, "batch": 8, "channels": 16, "num_pools": 3,
    "fixed_lams": [0.0, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0], "lams": [round(0.05 * i, 2) for i in range(21)],
}
SMOKE: Dict[str, Any] = {
    "size": [32, 40], "n_subjects": 6, "steps": 3, "batch": 2, "channels": 4, "num_pools": 2,
    "fixed_lams": [0.0, 1.0], "lams": [0.0, 0.5, 1.0],
}


class _IgnoreLam(nn.Module):
    """A fixed-lambda network called as ``net(moving, fixed, lam=...)`` by the sweep (``lam`` is its own)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor, lam: float = 0.0):
        return self.net(moving, fixed)


def _pairs(x: torch.Tensor, y: torch.Tensor) -> Dict[str, torch.Tensor]:
    j = torch.roll(torch.arange(len(x)), -1)
    return {"fixed": x, "moving": x[j], "fixed_label": y.float(), "moving_label": y[j].float()}


def _plot(hm_rows: List[Dict[str, Any]], fixed_rows: List[Dict[str, Any]], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6))
    a, b = fig.subplots(1, 2)
    a.plot([r["lam"] for r in hm_rows], [r["dice_mean"] for r in hm_rows], "k-", label="HyperMorph (one model)")
    a.plot([r["lam"] for r in fixed_rows], [r["dice_mean"] for r in fixed_rows], "ro", label="fixed lam (one model each)")
    a.set_xlabel("lam")
    a.set_ylabel("mean warped-label Dice")
    a.legend(fontsize=7)
    b.plot([r["lam"] for r in hm_rows], [100 * r["folding"] for r in hm_rows], "k-", label="HyperMorph")
    b.plot([r["lam"] for r in fixed_rows], [100 * r["folding"] for r in fixed_rows], "ro", label="fixed lam")
    b.set_xlabel("lam")
    b.set_ylabel("folding (% det J <= 0)")
    b.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def run(args: Namespace, command: str) -> Dict[str, Any]:
    """Train and evaluate; writes ``sweep.csv/.md`` (HyperMorph per lam), ``fixed.csv/.md`` (fixed-lam
    models), ``comparison.csv/.md`` (both at the fixed lams), ``training_time.csv``, ``dice_vs_lam.png``
    and ``summary.json`` into ``args.out``.

    Args:
        args: every key of :data:`DEFAULTS` plus ``data``, ``demo_dir``, ``out``, ``smoke``, ``lr``,
            ``similarity``, ``max_folding``, ``seed``, ``device``, ``threads``.
        command: the command line, for the summary.
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t0 = time.perf_counter()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    h, w = args.size
    if args.data:
        data = load_dataset(args.data, (h, w))
    else:
        data = load_demo_dataset(args.demo_dir, args.seed, args.n_subjects, (h, w), "hypermorph_demo_")
    tr, te = _pairs(data["x_train"], data["y_train"]), _pairs(data["x_test"], data["y_test"])
    mov, fix = tr["moving"].to(device), tr["fixed"].to(device)
    test = [{k: v[i:i + 8] for k, v in te.items()} for i in range(0, len(te["fixed"]), 8)]
    labels = list(range(1, data["num_classes"]))
    loss = HyperMorphLoss(2, similarity=args.similarity)
    arch = dict(channels=args.channels, num_pools=args.num_pools)
    times = []

    def fit(net: nn.Module, name: str, lam=None) -> nn.Module:
        set_seed(args.seed)
        sync(device)
        t = time.perf_counter()
        hist = train_hypermorph(net, mov, fix, loss, steps=args.steps, lr=args.lr, batch_size=args.batch, lam=lam,
                                generator=torch.Generator().manual_seed(args.seed))
        sync(device)
        times.append({"model": name, "seconds": time.perf_counter() - t, "steps": args.steps,
                      "final_loss": hist[-1]})
        return net

    set_seed(args.seed)
    hm = fit(HyperMorph(2, 1, **arch).to(device), "hypermorph")
    sweep = evaluate_lambdas(hm, test, args.lams, labels, out, "sweep", device, title="HyperMorph")
    fixed_rows = []
    for lam in args.fixed_lams:
        set_seed(args.seed)
        net = fit(RegistrationNet(2, 1, backbone="unet", phi=0.5, **arch).to(device), f"fixed_lam_{lam:g}", lam=lam)
        fixed_rows += evaluate_lambdas(_IgnoreLam(net), test, [lam], labels, device=device)
    hm_at = evaluate_lambdas(hm, test, args.fixed_lams, labels, device=device)
    comparison = [{"lam": f["lam"], "dice_hypermorph": a["dice_mean"], "dice_fixed": f["dice_mean"],
                   "folding_hypermorph": a["folding"], "folding_fixed": f["folding"]}
                  for a, f in zip(hm_at, fixed_rows)]
    paths = {
        "fixed_csv": write_csv(fixed_rows, os.path.join(out, "fixed.csv")),
        "fixed_md": write_markdown(fixed_rows, os.path.join(out, "fixed.md"), title="Fixed-lam models"),
        "comparison_csv": write_csv(comparison, os.path.join(out, "comparison.csv")),
        "comparison_md": write_markdown(comparison, os.path.join(out, "comparison.md"),
                                        title="HyperMorph vs fixed-lam models (test pairs)"),
        "training_time_csv": write_csv(times, os.path.join(out, "training_time.csv")),
        "png": _plot(sweep, fixed_rows, os.path.join(out, "dice_vs_lam.png")),
    }
    try:
        choice = choose_lambda(sweep, args.max_folding)
    except ValueError as e:
        choice = {"error": str(e)}
    t_hm = times[0]["seconds"]
    t_fixed = sum(t["seconds"] for t in times[1:])
    best_fixed = max(fixed_rows, key=lambda r: r["dice_mean"])
    best_hm = max(sweep, key=lambda r: r["dice_mean"])
    numbers = {"best_dice_hypermorph": best_hm["dice_mean"], "best_lam_hypermorph": best_hm["lam"],
               "best_dice_fixed": best_fixed["dice_mean"], "best_lam_fixed": best_fixed["lam"],
               "train_seconds_hypermorph": t_hm, "train_seconds_fixed_sweep": t_fixed}
    paragraph = (
        f"{'SMOKE RUN (pipeline check only, numbers meaningless). ' if args.smoke else ''}"
        f"One HyperMorph model reaches a best mean warped-label Dice of {best_hm['dice_mean']:.3f} "
        f"(lam {best_hm['lam']:g}) over {len(args.lams)} lams; the best of {len(args.fixed_lams)} fixed-lam models "
        f"reaches {best_fixed['dice_mean']:.3f} (lam {best_fixed['lam']:g}). Training: {t_hm:.1f} s for HyperMorph "
        f"vs {t_fixed:.1f} s for the fixed-lam sweep ({args.steps} steps each). Hoopes et al. (2021, 2022) report "
        f"that one HyperMorph model matches the individually trained models across lambda."
    )
    from ..compare import experiment_report

    report = experiment_report(
        name=NAME, title="HyperMorph vs fixed-lambda registration (Hoopes et al. 2021/2022)",
        papers="Hoopes et al. 2021 (IPMI) / 2022 (MELBA): one model over lambda vs a sweep of VoxelMorph models",
        command=command,
        scale=(f"{len(mov)} training / {len(te['fixed'])} test pairs at {h}x{w}, {args.channels} channels x "
               f"{args.num_pools + 1} stages, {args.steps} steps, batch {args.batch}, {device}"),
        paragraph=paragraph, tables=[paths["comparison_md"], paths["fixed_md"], os.path.join(out, "sweep.md")],
        figures=[paths["png"], os.path.join(out, "sweep.png")], numbers=numbers, out_dir=out,
    )
    summary = {"report": report, "numbers": numbers, "command": command, "smoke": bool(args.smoke), "device": str(device),
               "config": {k: getattr(args, k) for k in DEFAULTS}, "lr": args.lr, "similarity": args.similarity,
               "seed": args.seed, "n_train_pairs": int(len(mov)), "n_test_pairs": int(len(te["fixed"])),
               "choice": choice, "training_time": times, "total_seconds": time.perf_counter() - t0}
    paths["json"] = write_json(summary, os.path.join(out, "summary.json"))
    return {"paths": paths, "summary": summary, "sweep": sweep, "fixed": fixed_rows, "comparison": comparison}
