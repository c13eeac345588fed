"""Train this algorithm (run by ``BundleAlgo.train``)::

    python scripts/train.py run --config_file='configs/hyper_parameters.yaml,configs/network.yaml,configs/transforms.yaml' \
        [--num_iterations=4] [--learning_rate=3e-4] [--network#channels=8]

The loop is :func:`monai_hyperconv.compare.auto3dseg.train_algo`; everything that differs between
algorithms is in ``configs/``. Outputs go to ``ckpt_path``: ``model.pt``, ``progress.yaml``, ``results.json``.
"""

from monai_hyperconv.compare.auto3dseg import train_algo


def run(config_file, **override):
    """Train; returns the best validation Dice."""
    return train_algo(config_file, **override)


if __name__ == "__main__":
    import fire

    fire.Fire({"run": run})
