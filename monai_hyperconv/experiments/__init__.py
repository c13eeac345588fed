"""The papers' experiments at demo scale: the logic behind ``scripts/experiments/*.py`` and
``scripts/diagnose_training.py`` (the scripts parse options and call in here).

The top layer of the package (``tests/test_layering.py``): it may import every other layer, and no
package module imports it.

- :mod:`.common`: the one training loop (:func:`~.common.train_loop`) and its batch samplers, seeding,
  mean ± std, atomic figure writes.
- :mod:`.adaptive_kernels`: Tek et al. 2020 (adaptive convolution kernels), Fig 4, Tables 2-3, §4.4.
- :mod:`.scale_space`: Gonzalez Ortiz et al. 2023 (scale-space hypernetworks), Figs 3, 6-9, Table 5.
- :mod:`.kernel_smoothness`: Ma et al. 2022 Figs 7-8 and its journal extension's Figs 10-11 (kernel
  smoothness and kernel fitting).
- :mod:`.diagnostics`: ``docs/training.md``, why hyper-conv networks stalled, measured.

Submodules are imported on use (``from monai_hyperconv.experiments import scale_space``).
"""

__all__ = ["common", "adaptive_kernels", "scale_space", "kernel_smoothness", "diagnostics"]
