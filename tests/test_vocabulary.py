"""One vocabulary across the package: the width/depth names of ``hypernets`` (``channels``/``num_pools``,
as ``networks``; ``features``/``n_stages`` deprecated) and the one ``spatial_dims`` check."""

from __future__ import annotations

import warnings

import pytest
import torch
from monai.networks.layers.factories import Conv

from monai_hyperconv.bundle.preflight import ConfigOverrideError, check_overrides
from monai_hyperconv.hypernets import (
    FiLMScaleSpaceUNet, RegistrationNet, ScaleSpaceHyperUNet, ScaleSpaceUNet, VariableResize, fixed_unet,
    stochastic_unet,
)
from monai_hyperconv.layers import HyperConv, get_conv_type
from monai_hyperconv.layers.base import conv_class, conv_transpose_class
from monai_hyperconv.losses import RegistrationLoss
from monai_hyperconv.metrics.smoothness import kernel_laplacian
from monai_hyperconv.networks import PaperUNet, create_network
from monai_hyperconv.utils import check_spatial_dims


def _shapes(net: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _build(ctor, **kw):
    """Build with every warning recorded."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        net = ctor(**kw)
    return net, [w for w in rec if issubclass(w.category, (FutureWarning, DeprecationWarning))]


BUILDERS = {
    "ScaleSpaceUNet": lambda **kw: ScaleSpaceUNet(2, 1, 3, **kw),
    "fixed_unet": lambda **kw: fixed_unet(2, 1, 3, **kw),
    "stochastic_unet": lambda **kw: stochastic_unet(2, 1, 3, **kw),
    "ScaleSpaceHyperUNet": lambda **kw: ScaleSpaceHyperUNet(2, 1, 3, **kw),
    "FiLMScaleSpaceUNet": lambda **kw: FiLMScaleSpaceUNet(2, 1, 3, **kw),
    "RegistrationNet": lambda **kw: RegistrationNet(2, 1, **kw),
    "sshn_registration": lambda **kw: create_network("sshn_registration", spatial_dims=2, in_channels=1, **kw),
    "sshn_unet": lambda **kw: create_network("sshn_unet", spatial_dims=2, in_channels=1, out_channels=2, **kw),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("width", [4, (2, 3, 5)])
def test_old_names_build_the_same_network_and_warn(name, width):
    build = BUILDERS[name]
    new, new_warnings = _build(build, channels=width, num_pools=2)
    assert new_warnings == []
    old, old_warnings = _build(build, features=width, n_stages=3)
    assert _shapes(old) == _shapes(new)
    messages = [str(w.message) for w in old_warnings]
    assert any("`features`" in m and "`channels`" in m for m in messages), messages
    assert any("`n_stages`" in m and "`num_pools`" in m and "n_stages - 1" in m for m in messages), messages
    assert all(issubclass(w.category, FutureWarning) for w in old_warnings)
    # one old name alone warns about that name only
    _, only = _build(build, features=width, num_pools=2)
    assert [m for m in map(str, (w.message for w in only)) if "deprecated" in m] == [
        m for m in messages if "`features`" in m]


def test_renamed_width_and_depth_meaning():
    net = ScaleSpaceUNet(2, 1, 3, channels=4, num_pools=2)
    assert net.channels == (4, 4, 4) and net.num_pools == 2  # an int is not doubled (PaperUNet's is)
    assert len(net.encoder) == 3 and len(net.decoder) == 2
    assert len(net.feature_sizes((16, 16), 0.5)) == 3
    assert ScaleSpaceUNet(2, 1, 3, channels=4, num_pools=0).channels == (4,)  # one stage, as n_stages=1 did
    default = ScaleSpaceUNet(2, 1, 3)
    assert default.channels == (32,) * 5 and default.num_pools == 4  # the paper's 5 stages
    assert RegistrationNet(2, 1).backbone.channels == (16,) * 4  # 4 stages x 16
    with pytest.warns(FutureWarning, match="channels"):
        assert net.features == (4, 4, 4)
    with pytest.warns(FutureWarning, match="num_pools"):
        assert net.n_stages == 3
    with pytest.raises(ValueError, match="num_pools"):
        ScaleSpaceUNet(2, 1, 3, num_pools=-1)
    with pytest.raises(ValueError, match=r"channels must be an int or num_pools \+ 1 = 3 ints"):
        ScaleSpaceUNet(2, 1, 3, channels=(4, 4), num_pools=2)
    with pytest.raises(ValueError, match="n_stages must be a positive int"), pytest.warns(FutureWarning):
        ScaleSpaceUNet(2, 1, 3, n_stages=0)
    with pytest.raises(TypeError, match="'channels' and its deprecated name 'features'"):
        ScaleSpaceUNet(2, 1, 3, channels=4, features=4)


def test_bundle_override_with_an_old_name_names_the_new_one():
    cfg = "bundles/scale_space_segmentation/configs/train.json"
    check_overrides(cfg, {"channels": 4, "num_pools": 2})
    with pytest.raises(ConfigOverrideError, match="'features' was renamed 'channels': use --channels"):
        check_overrides(cfg, {"features": 4})
    with pytest.raises(ConfigOverrideError, match=r"use --num_pools \(num_pools = n_stages - 1\)"):
        check_overrides(cfg, {"n_stages": 3})


# ------------------------------------------------------------------------------------------- spatial_dims
def test_check_spatial_dims():
    assert [check_spatial_dims(d) for d in (1, 2, 3)] == [1, 2, 3]
    assert type(check_spatial_dims(2.0)) is int
    for bad in (0, 4, True, "2", None):
        with pytest.raises(ValueError, match=rf"^spatial_dims must be 1, 2 or 3, got {bad!r}\.$"):
            check_spatial_dims(bad)
    assert check_spatial_dims(3, allowed=(2, 3)) == 3
    with pytest.raises(ValueError, match=r"^dims must be 2 or 3 \(MONAI Warp\), got 1\.$"):
        check_spatial_dims(1, allowed=(2, 3), name="dims", reason="MONAI Warp")


ENTRY_POINTS = {
    "conv_class": lambda d: conv_class(d),
    "conv_transpose_class": lambda d: conv_transpose_class(d),
    "get_conv_type": lambda d: get_conv_type("conv", d),
    "HyperConv": lambda d: HyperConv(d, 1, 1, 3),
    "PaperUNet": lambda d: PaperUNet(d, 1, 1),
    "ScaleSpaceUNet": lambda d: ScaleSpaceUNet(d, 1, 1),
    "VariableResize": lambda d: VariableResize(d),
    "RegistrationLoss": lambda d: RegistrationLoss(d),
    "kernel_laplacian": lambda d: kernel_laplacian(torch.zeros(3, 3, 3, 3, 3, 3), spatial_dims=d),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("bad", [4, 0])
def test_every_spatial_dims_check_says_the_same(name, bad):
    with pytest.raises(ValueError, match=rf"spatial_dims must be 1, 2 or 3, got {bad}\."):
        ENTRY_POINTS[name](bad)


def test_spatial_dims_check_of_registration_and_the_conv_factory():
    with pytest.raises(ValueError, match=r"spatial_dims must be 2 or 3 \(MONAI Warp\), got 1\."):
        RegistrationNet(1, 1)
    with pytest.raises(ValueError, match=r"Conv\['HYPER', 4\]: spatial_dims must be 1, 2 or 3, got 4\."):
        Conv["HYPER", 4]
