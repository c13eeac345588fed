"""``SshnAlgo``: the scale-space hypernetwork UNet as an Auto3DSeg algorithm (``BundleGen`` loads ``sshn.scripts.algo``).

Everything is shared with :class:`monai_hyperconv.compare.auto3dseg.HyperconvBundleAlgo`: the SSHN
resizes its features by a continuous factor phi, so any patch size works. What makes it an SSHN is in
``configs/network.yaml``: phi is drawn from ``phi_prior`` at every training step and validation runs
at the fixed ``val_phi``.
"""

from monai_hyperconv.compare.auto3dseg import HyperconvBundleAlgo


class SshnAlgo(HyperconvBundleAlgo):
    """Scale-space hypernetwork (Gonzalez Ortiz et al. 2023): one set of hypernetwork weights for every rescaling factor."""


if __name__ == "__main__":
    import fire

    fire.Fire({"SshnAlgo": SshnAlgo})
