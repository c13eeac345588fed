"""Noise-robustness sweeps for classifiers (Tek et al. 2020 §4.2 and Karmann's blog): accuracy on the test
images corrupted by salt-and-pepper or additive Gaussian noise of increasing level, written as a
CSV, a Markdown table and a PNG curve (atomically).

Bundles call it from ``evaluate.json``'s run list::

    {"_target_": "monai_hyperconv.bundle.noise_robustness", "network": "@network",
     "dataset": "@validate#dataset", "output_dir": "@output_dir",
     "levels": {"salt_pepper": [0, 0.05, 0.1, 0.2, 0.3], "gaussian": [0, 0.1, 0.2, 0.4, 0.8]}}
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import unwrap
from .distributed import is_main_process
from .results import write_csv, write_json, write_markdown

__all__ = ["NOISE_TYPES", "corrupt", "noise_robustness"]

logger = logging.getLogger(__name__)

#: noise name -> what its level means
NOISE_TYPES = {
    "salt_pepper": "fraction of pixels set to the image min/max (half each)",
    "gaussian": "standard deviation of additive Gaussian noise (images in [0, 1])",
    "speckle": "standard deviation of multiplicative Gaussian noise x + x n (scikit-image's speckle)",
    "kspace_gaussian": "standard deviation of complex Gaussian noise added in k-space (orthonormal FFT; "
                       "Ma et al., journal extension, Fig 8), magnitude image returned",
}


def corrupt(images: torch.Tensor, noise: str, level: float, rng: np.random.RandomState) -> torch.Tensor:
    """Corrupt a batch (N, C, ...) image by image with independent noise drawn from ``rng``."""
    from ..transforms import salt_pepper
    from ..transforms.noise import speckle

    if level <= 0:
        return images
    if noise == "salt_pepper":
        return torch.stack([torch.as_tensor(salt_pepper(im, float(level), rng)) for im in images])
    if noise == "gaussian":
        g = torch.from_numpy(rng.standard_normal(images.shape).astype(np.float32)).to(images.device)
        return images + float(level) * g
    if noise == "speckle":
        return torch.stack([torch.as_tensor(speckle(im, float(level), rng)) for im in images])
    if noise == "kspace_gaussian":
        from ..transforms.kspace import _kspace_noise

        return torch.stack([torch.as_tensor(_kspace_noise(im, float(level), rng, slice_axis=2, magnitude=None))
                            for im in images])
    raise ValueError(f"unknown noise {noise!r}; choose from {sorted(NOISE_TYPES)}.")


def noise_robustness(
    network: torch.nn.Module,
    dataset: Any,
    output_dir: str | os.PathLike,
    levels: Mapping[str, Sequence[float]],
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    image_key: str = "image",
    label_key: str = "label",
    seed: int = 0,
    ckpt_file: str | os.PathLike | None = None,
    prefix: str = "noise_robustness",
    title: str = "Accuracy under noise",
) -> list[dict[str, Any]]:
    """Accuracy of ``network`` on ``dataset`` for every noise type and level.

    Args:
        network: classifier returning logits (N, classes).
        dataset: items with ``image_key`` (C, H, W) and an integer ``label_key`` (pre-processed, no noise).
        output_dir: where ``<prefix>.csv``, ``<prefix>.md``, ``<prefix>.json`` and ``<prefix>.png`` go.
        levels: ``{noise: [level, ...]}`` with noise in :data:`NOISE_TYPES`.
        device: device to run on.
        batch_size: images per forward pass.
        seed: noise seed (the same seed gives the same corrupted images).
        ckpt_file: weights to load first (``model.pt``), or None to use ``network`` as is.

    Returns:
        rows ``{"noise", "level", "accuracy", "n"}``.
    """
    from monai.data import DataLoader

    from .export import load_weights

    net = unwrap(network).to(device)
    if ckpt_file is not None:
        load_weights(net, ckpt_file)
    net.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    batches = [(b[image_key].as_tensor() if hasattr(b[image_key], "as_tensor") else b[image_key],
                torch.as_tensor(b[label_key]).long().view(-1)) for b in loader]
    rows = []
    for noise, lv in levels.items():
        if noise not in NOISE_TYPES:
            raise ValueError(f"unknown noise {noise!r}; choose from {sorted(NOISE_TYPES)}.")
        for level in lv:
            rng = np.random.RandomState(seed)
            correct = n = 0
            with torch.no_grad():
                for x, y in batches:
                    xn = corrupt(x.float(), noise, float(level), rng).to(device)
                    correct += int((net(xn).argmax(1).cpu() == y).sum())
                    n += len(y)
            rows.append({"noise": noise, "level": float(level), "accuracy": correct / max(n, 1), "n": n})
            logger.info(f"{noise} level {level}: accuracy {correct / max(n, 1):.4f} ({n} images)")
    if is_main_process():
        out = Path(output_dir)
        write_csv(rows, out / f"{prefix}.csv")
        write_json(rows, out / f"{prefix}.json")
        notes = "\n".join(f"- {k}: level = {v}" for k, v in NOISE_TYPES.items() if k in levels)
        write_markdown(rows, out / f"{prefix}.md", title, notes=notes)
        # one curve per noise type against its level index, labelled with the level values
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        from .results import atomic_write_bytes

        fig = Figure(figsize=(9, 3.5), dpi=100)
        axes = fig.subplots(1, len(levels), squeeze=False)[0]
        for ax, noise in zip(axes, levels):
            r = [row for row in rows if row["noise"] == noise]
            ax.plot([row["level"] for row in r], [row["accuracy"] for row in r], marker="o")
            ax.set_xlabel(f"{noise} level")
            ax.set_ylabel("accuracy")
            ax.set_ylim(0, 1.02)
            ax.grid(True, alpha=0.3)
            ax.set_title(noise)
        fig.suptitle(title)
        fig.tight_layout()
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        atomic_write_bytes(out / f"{prefix}.png", buf.getvalue())
    return rows
