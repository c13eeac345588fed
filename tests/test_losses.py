"""Total variation and the registration loss."""

import pytest
import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss

from monai_hyperconv.losses import RegistrationLoss, TotalVariationLoss


@pytest.mark.parametrize("penalty", ["l1", "l2"])
@pytest.mark.parametrize("shape", [(2, 2, 9, 7), (1, 3, 5, 6, 4), (2, 1, 10)])
def test_tv_zero_for_constant_field(penalty, shape):
    assert TotalVariationLoss(penalty)(torch.full(shape, 3.7)).item() == 0.0


def test_tv_exact_on_linear_ramp():
    a, b = 0.5, -2.0
    i, j = torch.meshgrid(torch.arange(8.0), torch.arange(6.0), indexing="ij")
    field = (a * i + b * j)[None, None].repeat(2, 2, 1, 1)
    # every forward difference is a along axis 0 and b along axis 1; mean over the 2 axes
    assert TotalVariationLoss("l1")(field).item() == pytest.approx((abs(a) + abs(b)) / 2)
    assert TotalVariationLoss("l2")(field).item() == pytest.approx((a * a + b * b) / 2)
    k = torch.arange(5.0).view(1, 1, 1, 1, 5).expand(1, 1, 4, 3, 5)  # 3-D ramp along the last axis only
    assert TotalVariationLoss("l2")(3.0 * k).item() == pytest.approx(9.0 / 3)


def test_tv_reductions_and_batch():
    x = torch.randn(3, 2, 6, 6)
    per = TotalVariationLoss("l2", reduction="none")(x)
    assert per.shape == (3,)
    assert TotalVariationLoss("l2", reduction="sum")(x).item() == pytest.approx(per.sum().item(), rel=1e-6)
    assert TotalVariationLoss("l2")(x).item() == pytest.approx(per.mean().item(), rel=1e-6)
    assert per[1].item() == pytest.approx(TotalVariationLoss("l2")(x[1:2]).item(), rel=1e-6)  # per sample


def test_tv_fp16_does_not_overflow_and_has_gradients():
    x = (torch.arange(64.0).view(1, 1, 8, 8) * 400).half()  # squares of 400-voxel steps overflow fp16
    assert torch.isfinite(TotalVariationLoss("l2")(x))
    y = torch.randn(1, 2, 8, 8, requires_grad=True)
    TotalVariationLoss("l1")(y).backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_tv_bad_args():
    with pytest.raises(ValueError):
        TotalVariationLoss("l3")
    with pytest.raises(ValueError):
        TotalVariationLoss()(torch.zeros(4, 4))


def test_registration_loss_combines_terms():
    moved, fixed = torch.rand(2, 1, 12, 12), torch.rand(2, 1, 12, 12)
    ddf = torch.randn(2, 2, 12, 12)
    loss = RegistrationLoss(2, "mse", lambda_reg=0.3)
    expected = ((moved - fixed) ** 2).mean() + 0.3 * TotalVariationLoss("l2")(ddf)
    assert loss(moved, fixed, ddf).item() == pytest.approx(expected.item(), rel=1e-6)
    c = loss.components(moved, fixed, ddf)
    assert set(c) == {"similarity", "regularization", "total"}
    lncc = RegistrationLoss(2, "lncc", lambda_reg=0.0, similarity_kwargs={"kernel_size": 3})
    ref = LocalNormalizedCrossCorrelationLoss(spatial_dims=2, kernel_size=3)(moved, fixed)
    assert lncc(moved, fixed, ddf).item() == pytest.approx(ref.item(), rel=1e-5)
    mi = RegistrationLoss(2, "mi", lambda_reg=0.1)
    assert torch.isfinite(mi(moved, fixed, ddf))
    with pytest.raises(ValueError):
        RegistrationLoss(2, "ncc")
    with pytest.raises(ValueError, match="differ"):
        loss(moved, fixed[:, :, :10], ddf)
    with pytest.raises(ValueError):
        RegistrationLoss(2, lambda_reg=-1)
