"""Knob-conditioned hypernetworks and HyperMorph (Hoopes et al. 2021/2022): knobs, network, loss, lam sweep."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from monai_hyperconv.bundle import (
    HyperMorphInferer, HyperMorphLossAdapter, choose_lambda, evaluate_lambdas, select_lambda, train_hypermorph,
)
from monai_hyperconv.hypernets import (
    LAM, PHI, HyperMorph, Knob, KnobHypernetwork, KnobHyperUNet, PredictedConv, RegistrationNet,
    ScaleSpaceHyperUNet, ScaleSpaceUNet, as_knobs,
)
from monai_hyperconv.losses import HyperMorphLoss, TotalVariationLoss
from monai_hyperconv.metrics import folding_fraction, registration_dice
from monai_hyperconv.networks import create_network

TINY = dict(channels=4, num_pools=2)


# ------------------------------------------------------------------------------------------- knobs
def test_knob_encodings():
    assert PHI.encode(0.3) == pytest.approx([0.3, 0.7])  # the SSHN's [phi, 1 - phi]
    assert LAM.encode(0.25) == pytest.approx([0.25, 0.75])
    k = Knob("lam", 0.0, 2.0, encoding="linear")
    assert k.encode(0.5) == pytest.approx([0.25]) and k.width == 1
    lg = Knob("lam", 1e-3, 10.0, encoding="log")
    assert lg.encode(1e-3) == pytest.approx([0.0, 1.0]) and lg.encode(10.0) == pytest.approx([1.0, 0.0])
    assert lg.encode(0.1)[0] == pytest.approx(0.5)  # halfway in log space
    c = Knob("lam", encoding=lambda v: [v, v * v, 1.0])
    assert c.width == 3 and c.encode(0.5) == pytest.approx([0.5, 0.25, 1.0])
    # the hypernetwork input is the concatenation, in knob order
    h = KnobHypernetwork(7, knobs=[Knob("lam", 0.0, 2.0, encoding="linear"), "phi"])
    assert h.body[0].in_features == 3
    assert torch.allclose(h.encode({"phi": 0.2, "lam": 1.0}), torch.tensor([0.5, 0.2, 0.8]))


def test_knob_ranges_priors_and_errors():
    assert PHI.check(1.0) == 1.0 and LAM.check(0) == 0.0 and LAM.check(torch.tensor([0.5])) == 0.5
    with pytest.raises(ValueError, match=r"knob 'phi' must be in \(0, 1\]"):
        PHI.check(0.0)
    with pytest.raises(ValueError, match=r"knob 'lam' must be in \[0, 1\], got 1.5"):
        LAM.check(1.5)
    for bad in (float("nan"), "x", True, torch.ones(2)):
        with pytest.raises(ValueError, match="knob 'lam'"):
            LAM.check(bad)
    with pytest.raises(ValueError, match="'lambda' is a Python keyword"):
        Knob("lambda")
    with pytest.raises(ValueError, match="knob 'lam'.*low < high"):
        Knob("lam", 1.0, 1.0)
    with pytest.raises(ValueError, match="knob 'lam': prior"):
        Knob("lam", 0.0, 1.0, prior=(0.5, 2.0))
    with pytest.raises(ValueError, match="knob 'lam': only 'phi'"):
        Knob("lam", architectural=True)
    with pytest.raises(ValueError, match="knob 'lam': encoding"):
        Knob("lam", encoding="square")
    with pytest.raises(ValueError, match="needs low > 0"):
        Knob("lam", 0.0, 1.0, encoding="log")
    with pytest.raises(ValueError, match="knob 'lam' must be in"):
        Knob("lam", default=3.0)
    # priors: uniform on the range by default, a sub-range, or a callable (range-checked)
    g = torch.Generator().manual_seed(0)
    draws = [Knob("lam", prior=(0.2, 0.4)).sample(g) for _ in range(200)]
    assert all(0.2 <= d <= 0.4 for d in draws) and max(draws) - min(draws) > 0.15
    assert all(0.0 < PHI.sample(g) <= 0.5 for _ in range(200))
    assert Knob("lam", prior=lambda gen: 0.125).sample() == 0.125
    with pytest.raises(ValueError, match="knob 'lam' must be in"):
        Knob("lam", prior=lambda gen: 7.0).sample()
    # as_knobs: presets, dict overrides (bundle configs), duplicates, unknown presets
    (k,) = as_knobs([{"name": "lam", "prior": [0.0, 0.5]}])
    assert k.prior == (0.0, 0.5) and (k.low, k.high) == (0.0, 1.0)
    with pytest.raises(ValueError, match="knob 'lam' is given twice"):
        as_knobs(["lam", {"name": "lam"}])
    with pytest.raises(ValueError, match="unknown knob 'lamda'"):
        as_knobs("lamda")


def test_network_knob_errors_name_the_knob():
    net = HyperMorph(2, 1, **TINY).eval()
    m, f = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match="knob 'lam' is required in evaluation mode"):
        net(m, f)
    with pytest.raises(ValueError, match=r"knob 'lam' must be in \[0, 1\], got -0.1"):
        net(m, f, lam=-0.1)
    with pytest.raises(ValueError, match=r"unknown knob\(s\) \['lamda'\]"):
        net(m, f, lamda=0.3)
    with pytest.raises(ValueError, match="pass lam="):
        net(m, f, **{"lambda": 0.3})
    with pytest.raises(ValueError, match="knob 'lam' is required"):
        net.materialize()
    with pytest.raises(ValueError, match="knob 'lam' must be in"):
        net.materialize(lam=2)
    net.train()
    moved, ddf = net(m, f)  # drawn from the prior in training
    assert ddf.shape == (1, 2, 16, 16)
    # a knob default makes it optional in eval
    d = HyperMorph(2, 1, knobs=[{"name": "lam", "default": 0.2}], **TINY).eval()
    with torch.no_grad():
        assert torch.equal(d(m, f)[1], d(m, f, lam=0.2)[1])
    with pytest.raises(ValueError, match="phi is a knob"):
        KnobHyperUNet(2, 1, 1, knobs=("phi",), phi=0.5, **TINY)


def test_phi_knob_reproduces_the_sshn():
    """The generalised machinery with the single knob phi computes the SSHN's function (same weights)."""
    sshn = ScaleSpaceHyperUNet(2, 2, 3, **TINY).eval()
    knob = KnobHyperUNet(2, 2, 3, knobs=("phi",), phi=None, **TINY).eval()
    # same input width and the same calibration grid ([phi, 1 - phi] at 33 phis) as the SSHN's hypernetwork
    assert knob.hyper.body[0].in_features == sshn.hyper.body[0].in_features == 2
    assert torch.equal(torch.stack(knob.hyper._calibration_inputs()), torch.stack(sshn.hyper._calibration_inputs()))
    knob.load_state_dict(sshn.state_dict())
    x = torch.randn(2, 2, 20, 18)
    with torch.no_grad():
        for phi in (0.1, 0.35, 1.0):
            assert (knob(x, phi=phi) - sshn(x, phi)).abs().max() < 1e-6
            assert (knob.materialize(phi=phi)(x) - sshn.materialize(phi)(x)).abs().max() < 1e-6


# ------------------------------------------------------------------------------------------ network
@pytest.mark.parametrize("dims, shape, knobs", [
    (2, (2, 1, 24, 20), ("lam",)),
    (3, (1, 1, 12, 10, 8), ("lam",)),
    (2, (1, 1, 24, 20), ("lam", "phi")),
])
def test_materialize_equals_forward(dims, shape, knobs):
    net = HyperMorph(dims, 1, knobs=knobs, **TINY, integration_steps=3)
    with torch.no_grad():  # a non-trivial flow (the initial one is ~0)
        net.backbone.hyper.out.bias.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(0))
    net.eval()
    m, f = torch.rand(shape), torch.rand(shape)
    ddfs = []
    for lam in (0.0, 0.3, 0.7, 1.0):
        kn = {"lam": lam, "phi": 0.4} if "phi" in knobs else {"lam": lam}
        with torch.no_grad():
            moved, ddf = net(m, f, **kn)
            mat = net.materialize(**kn)
            assert type(mat) is RegistrationNet and mat.knobs == kn
            assert not any(isinstance(x, PredictedConv) for x in mat.modules())
            moved2, ddf2 = mat(m, f)
        assert (ddf2 - ddf).abs().max().item() < 1e-5 and (moved2 - moved).abs().max().item() < 1e-5
        assert ddf.abs().max() > 1e-3
        ddfs.append(ddf)
    assert not torch.allclose(ddfs[0], ddfs[-1])  # the weights really depend on lam


@pytest.mark.parametrize("dims, knobs", [(2, ("lam",)), (3, ("lam", "phi"))])
def test_hypernetwork_covers_every_primary_parameter_once(dims, knobs):
    net = HyperMorph(dims, 1, knobs=knobs, channels=(3, 5), num_pools=1, convs_per_stage=3)
    plain = ScaleSpaceUNet(dims, 2, dims, channels=(3, 5), num_pools=1, convs_per_stage=3)
    bb = net.backbone
    assert sum(p.numel() for p in bb.primary.parameters()) == 0
    count = bb.num_primary_params
    assert count == bb.hyper.out.out_features == sum(p.numel() for p in plain.parameters())
    with torch.no_grad():
        bb.hyper.out.weight.zero_()
        bb.hyper.out.bias.copy_(torch.arange(count, dtype=torch.float32))
    kn = {"lam": 0.5, "phi": 0.5} if "phi" in knobs else {"lam": 0.5}
    mat = net.materialize(**kn)
    values = torch.cat([q.detach().flatten() for q in mat.parameters()])
    assert torch.equal(values.sort().values, torch.arange(count, dtype=torch.float32))
    assert [tuple(q.shape) for q in mat.parameters()] == [tuple(q.shape) for q in plain.parameters()]


def test_registered_and_initial_flow_is_near_identity():
    net = create_network("hypermorph", spatial_dims=3, in_channels=1, channels=4, num_pools=1).eval()
    assert isinstance(net, HyperMorph) and net.knob_names == ("lam",)
    m = torch.rand(1, 1, 8, 8, 8)
    with torch.no_grad():
        for lam in (0.0, 1.0):
            moved, ddf = net(m, m, lam=lam)
            assert ddf.abs().max() < 1e-2 and (moved - m).abs().max() < 1e-2


# --------------------------------------------------------------------------------------------- loss
def test_hypermorph_loss_matches_its_definition():
    g = torch.Generator().manual_seed(0)
    moved, fixed, ddf = torch.rand(2, 1, 12, 10, generator=g), torch.rand(2, 1, 12, 10, generator=g), torch.randn(2, 2, 12, 10, generator=g)
    mse = ((moved - fixed) ** 2).mean()
    tv = TotalVariationLoss("l2")(ddf)
    for lam in (0.0, 0.3, 1.0):
        got = HyperMorphLoss(2)(moved, fixed, ddf, lam)
        assert got.item() == pytest.approx(((1 - lam) * mse + lam * tv).item(), rel=1e-6)
    assert HyperMorphLoss(2, image_sigma=0.5)(moved, fixed, ddf, 0.0).item() == pytest.approx(mse.item() / 0.25, rel=1e-6)
    from monai.losses import BendingEnergyLoss, LocalNormalizedCrossCorrelationLoss

    be = HyperMorphLoss(2, smoothness="bending")(moved, fixed, ddf, torch.tensor(1.0))
    assert be.item() == pytest.approx(BendingEnergyLoss()(ddf).item(), rel=1e-6)
    lncc = HyperMorphLoss(2, similarity="lncc", similarity_kwargs={"kernel_size": 3})(moved, fixed, ddf, 0.0)
    assert lncc.item() == pytest.approx(LocalNormalizedCrossCorrelationLoss(2, kernel_size=3)(moved, fixed).item(), rel=1e-5)
    with pytest.raises(ValueError, match=r"lam \(the regularisation weight\) must be in \[0, 1\]"):
        HyperMorphLoss(2)(moved, fixed, ddf, 1.2)
    with pytest.raises(ValueError, match="smoothness must be"):
        HyperMorphLoss(2, smoothness="l2")
    with pytest.raises(ValueError, match="image_sigma scales MSE only"):
        HyperMorphLoss(2, similarity="lncc", image_sigma=0.1)


def test_engine_inferer_and_loss_adapter_share_the_step_lam():
    net = HyperMorph(2, 1, **TINY).train()
    m, f = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    torch.manual_seed(3)
    pred = HyperMorphInferer(return_lam=True)(m, net, f)
    assert pred.shape == (2, 4, 16, 16)
    lam = pred[:, 3]
    assert torch.all(lam == lam.flatten()[0]) and 0.0 <= lam.flatten()[0] <= 1.0
    torch.manual_seed(3)
    lam_drawn = net.sample_knobs()["lam"]
    assert lam.flatten()[0].item() == pytest.approx(lam_drawn, abs=1e-7)  # the draw the network was given
    loss = HyperMorphLoss(2)
    got = HyperMorphLossAdapter(loss, 1, 2)(pred, f)
    assert got.item() == pytest.approx(loss(pred[:, :1], f, pred[:, 1:3], lam_drawn).item(), rel=1e-5)
    with pytest.raises(ValueError, match="return_lam=True"):
        HyperMorphLossAdapter(loss, 1, 2)(pred[:, :3], f)
    net.eval()
    out = HyperMorphInferer(lam=0.4)(m, net, f)
    with torch.no_grad():
        assert torch.equal(out[:, 1:], net(m, f, lam=0.4)[1])


def _tiny_pair(size=16):
    """A square moved by (2, 1) pixels: the fixed image is a shifted copy of the moving one."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    blob = lambda cy, cx: torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)  # noqa: E731
    return blob(7.0, 7.0)[None, None], blob(9.0, 8.0)[None, None]


def test_tiny_training_lam_one_is_smoother_than_lam_zero():
    torch.manual_seed(0)
    moving, fixed = _tiny_pair()
    net = HyperMorph(2, 1, channels=4, num_pools=1)
    loss = HyperMorphLoss(2)
    hist = train_hypermorph(net, moving, fixed, loss, steps=40, lr=1e-2, generator=torch.Generator().manual_seed(0))
    assert len(hist) == 40 and all(math.isfinite(h) for h in hist)
    net.eval()
    tv = TotalVariationLoss("l2")
    with torch.no_grad():
        moved0, ddf0 = net(moving, fixed, lam=0.0)
        moved1, ddf1 = net(moving, fixed, lam=1.0)
    assert tv(ddf1) < 0.5 * tv(ddf0)
    # lam = 0 registers: the similarity improved over the identity
    assert ((moved0 - fixed) ** 2).mean() < 0.9 * ((moving - fixed) ** 2).mean()


def test_train_hypermorph_fixed_lambda_baseline():
    moving, fixed = _tiny_pair()
    net = RegistrationNet(2, 1, channels=4, num_pools=1)
    with pytest.raises(ValueError, match="give a fixed lam"):
        train_hypermorph(net, moving, fixed, HyperMorphLoss(2), steps=1)
    hist = train_hypermorph(net, moving, fixed, HyperMorphLoss(2), steps=2, lam=0.1)
    assert len(hist) == 2


# ------------------------------------------------------------------------------------- lam sweep
def test_evaluate_lambdas_matches_the_metrics_and_writes_outputs(tmp_path):
    torch.manual_seed(0)
    net = HyperMorph(2, 1, channels=4, num_pools=1)
    with torch.no_grad():
        net.backbone.hyper.out.bias.normal_(0.0, 0.3)  # a flow that folds in places
        net.backbone.hyper.out.weight.normal_(0.0, 0.3)
    g = torch.Generator().manual_seed(1)
    lab = lambda: torch.randint(0, 3, (2, 1, 16, 16), generator=g).float()  # noqa: E731
    batch = {"moving": torch.rand(2, 1, 16, 16, generator=g), "fixed": torch.rand(2, 1, 16, 16, generator=g),
             "moving_label": lab(), "fixed_label": lab()}
    rows = evaluate_lambdas(net, [batch], lams=[0.0, 0.5, 1.0], output_dir=tmp_path)
    assert [r["lam"] for r in rows] == [0.0, 0.5, 1.0]
    net.eval()
    for r in rows:
        with torch.no_grad():
            _, ddf = net(batch["moving"], batch["fixed"], lam=r["lam"])
        d = registration_dice(batch["moving_label"], batch["fixed_label"], ddf, labels=[1, 2])
        assert r["dice_1"] == pytest.approx(d[1], abs=1e-9) and r["dice_2"] == pytest.approx(d[2], abs=1e-9)
        assert r["dice_mean"] == pytest.approx(d["mean"], abs=1e-9)
        assert r["folding"] == pytest.approx(float(folding_fraction(ddf).mean()), abs=1e-12)
        assert r["jac_det_min"] <= r["jac_det_mean"] <= r["jac_det_max"] and r["n_pairs"] == 2
    assert any(r["folding"] > 0 for r in rows)
    for f in ("lambda_sweep.csv", "lambda_sweep.png", "lambda_sweep.md"):
        assert (tmp_path / f).is_file(), f
    with open(tmp_path / "lambda_sweep.csv") as fh:
        assert [float(r["lam"]) for r in csv.DictReader(fh)] == [0.0, 0.5, 1.0]
    assert choose_lambda(tmp_path / "lambda_sweep.csv", max_folding=1.0)["lam"] == max(rows, key=lambda r: r["dice_mean"])["lam"]


def test_choose_lambda_under_a_folding_limit():
    rows = [
        {"lam": 0.0, "dice_mean": 0.80, "dice_1": 0.90, "dice_2": 0.70, "folding": 0.05},
        {"lam": 0.2, "dice_mean": 0.78, "dice_1": 0.80, "dice_2": 0.76, "folding": 0.008},
        {"lam": 0.4, "dice_mean": 0.78, "dice_1": 0.85, "dice_2": 0.71, "folding": 0.002},
        {"lam": 0.8, "dice_mean": 0.60, "dice_1": 0.55, "dice_2": 0.65, "folding": 0.0},
    ]
    c = choose_lambda(rows, max_folding=0.01)
    assert (c["lam"], c["dice"], c["folding"]) == (0.4, 0.78, 0.002)  # tie on Dice -> less folding
    assert c["per_label"]["1"]["lam"] == 0.4 and c["per_label"]["2"]["lam"] == 0.2
    assert choose_lambda(rows, max_folding=0.1)["lam"] == 0.0
    assert choose_lambda(rows, max_folding=0.0)["lam"] == 0.8
    with pytest.raises(ValueError, match=r"no lam keeps the folding fraction <= 0.001: the least is 0.002 at lam 0.4"):
        choose_lambda(rows[:3], max_folding=0.001)
    with pytest.raises(ValueError, match="max_folding"):
        choose_lambda(rows, max_folding=2)


def test_select_lambda(tmp_path):
    import json

    assert select_lambda(0.3) == 0.3 and select_lambda(None, tmp_path / "none.json", default=0.4) == 0.4
    p = tmp_path / "choice.json"
    p.write_text(json.dumps({"lam": 0.25, "per_label": {"3": {"lam": 0.6}}}))
    assert select_lambda(None, p) == 0.25 and select_lambda(None, p, label=3) == 0.6
    with pytest.raises(ValueError, match="no choice for label"):
        select_lambda(None, p, label=9)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        select_lambda(1.5)


@pytest.mark.parametrize("head, extra", [("low_rank", {"hyper_rank": 2}), ("chunked", {"hyper_chunk_size": 64})])
def test_knob_unet_takes_the_sshn_output_heads(head, extra):
    net = KnobHyperUNet(2, 1, 2, knobs=("lam",), channels=(3, 5), num_pools=1, hyper_head=head, **extra).eval()
    assert isinstance(net.hyper, KnobHypernetwork) and net.hyper.head == head
    with torch.no_grad():  # a lam-dependent output, so the check below is not trivially true
        for p in net.hyper.out.parameters():
            p.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(1))
        x = torch.rand(1, 1, 16, 16)
        for lam in (0.0, 0.6):
            assert (net.materialize(lam=lam)(x) - net(x, lam=lam)).abs().max().item() < 1e-5
        assert not torch.allclose(net(x, lam=0.0), net(x, lam=0.6))
