"""``InferClass`` (fixed name, loaded by ``BundleAlgo.get_inferer``): ``InferClass(config_files).infer(image_file)``
returns class probabilities ``(C, *spatial)`` in the input image's space (used by Auto3DSeg's ensemble)."""

from monai_hyperconv.compare.auto3dseg import AlgoInferer


class InferClass(AlgoInferer):
    """The best checkpoint (``<ckpt_path>/model.pt``) with the validation inferer."""
