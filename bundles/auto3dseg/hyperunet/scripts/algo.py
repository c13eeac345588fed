"""``HyperunetAlgo``: the Hyper-UNet as an Auto3DSeg algorithm (``BundleGen`` loads ``hyperunet.scripts.algo``).

Shared behaviour (filling the configs from the data stats, training with this interpreter, the
score) is in :class:`monai_hyperconv.compare.auto3dseg.HyperconvBundleAlgo`; this class only adds
the UNet's constraint on the patch size.
"""

from monai_hyperconv.compare.auto3dseg import HyperconvBundleAlgo


class HyperunetAlgo(HyperconvBundleAlgo):
    """Hyper-UNet (Ma et al. 2022): patch sides are multiples of ``2**num_pools`` (max-pooling levels)."""

    def patch_divisor(self, network):
        return 2 ** int(network.get("num_pools", 3))


if __name__ == "__main__":
    import fire

    fire.Fire({"HyperunetAlgo": HyperunetAlgo})
