"""Baking generated convs into plain ones, exporting them, and converting MONAI networks."""

import subprocess
import sys
import textwrap

import pytest
import torch
from monai.networks.nets import BasicUNet, DynUNet, SegResNet, UNet
from torch import nn

from monai_hyperconv import bake, convert
from monai_hyperconv.layers import AdaptiveConv, GeneratedConv, HyperConv, count_generated


def _mixed_net(d=2):
    return nn.Sequential(
        HyperConv(d, 2, 8, kernel_size=5, padding=2),
        nn.BatchNorm2d(8) if d == 2 else nn.BatchNorm3d(8),
        nn.ReLU(),
        AdaptiveConv(d, 8, 8, kernel_size=3, padding="same", groups=2),
        nn.ReLU(),
        HyperConv(d, 8, 4, kernel_size=3, stride=2, padding=1, transposed=True, output_padding=1, n_l=2),
        AdaptiveConv(d, 4, 3, kernel_size=3, padding=1, padding_mode="reflect", bias=False),
    )


def _randomise(model):
    # bake must carry biases and every generated parameter, so make none of them trivial
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("train", [True, False])
def test_bake_equivalence_train_and_eval(d, train):
    torch.manual_seed(0)
    net = _mixed_net(d)
    _randomise(net)
    net.train(train)
    baked = bake(net)
    assert count_generated(net) == 4 and count_generated(baked) == 0
    kinds = [type(m) for m in baked.modules()]
    conv, convt = (nn.Conv2d, nn.ConvTranspose2d) if d == 2 else (nn.Conv3d, nn.ConvTranspose3d)
    assert kinds.count(conv) == 3 and kinds.count(convt) == 1
    assert all(m.training == train for m in baked.modules())
    x = torch.randn(2, 2, *(8,) * d)
    with torch.no_grad():
        diff = (net(x) - baked(x)).abs().max().item()
    assert diff < 1e-5
    # the original is untouched (bake copies unless inplace=True)
    assert count_generated(net) == 4


def test_bake_inplace_and_root_layer():
    layer = HyperConv(2, 1, 2, kernel_size=3)
    plain = bake(layer)
    assert isinstance(plain, nn.Conv2d)
    torch.testing.assert_close(plain.weight, layer.weight.detach())
    net = nn.Sequential(HyperConv(2, 1, 2, kernel_size=3))
    out = bake(net, inplace=True)
    assert out is net and isinstance(net[0], nn.Conv2d)
    with pytest.raises(TypeError, match="nn.Module"):
        bake("model.pt")


def test_baked_model_exports_and_runs_without_the_package(tmp_path):
    torch.manual_seed(0)
    net = _mixed_net(2).eval()
    _randomise(net)
    baked = bake(net)
    x = torch.randn(1, 2, 8, 8)
    with torch.no_grad():
        expected = net(x)
    ep = torch.export.export(baked, (x,))
    torch.testing.assert_close(ep.module()(x), expected, atol=1e-5, rtol=1e-5)
    torch.export.save(ep, str(tmp_path / "model.pt2"))
    scripted = torch.jit.script(baked)
    scripted.save(str(tmp_path / "model.ts"))
    torch.save({"x": x, "y": expected}, tmp_path / "io.pt")
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["monai_hyperconv"] = None  # any import of the package now fails
        import torch, monai  # only torch and MONAI
        io = torch.load({str(tmp_path / 'io.pt')!r})
        ep = torch.export.load({str(tmp_path / 'model.pt2')!r})
        ts = torch.jit.load({str(tmp_path / 'model.ts')!r})
        for m in (ep.module(), ts):
            assert (m(io["x"]) - io["y"]).abs().max().item() < 1e-5
        assert not any(k.startswith("monai_hyperconv") and sys.modules[k] is not None for k in sys.modules)
        print("OK")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-2000:]


MONAI_NETS = {
    "UNet": lambda: UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1),
    "BasicUNet": lambda: BasicUNet(2, 1, 2, features=(4, 4, 8, 8, 16, 4)),
    "DynUNet": lambda: DynUNet(2, 1, 2, kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2]),
    "SegResNet": lambda: SegResNet(2, init_filters=8, in_channels=1, out_channels=2, blocks_down=(1, 1), blocks_up=(1,)),
}


def _n_convertible(net, transposed=True):
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d) + ((nn.ConvTranspose2d,) if transposed else ())
    return sum(isinstance(m, kinds) and max(m.kernel_size) > 1 and all(k % 2 for k in m.kernel_size) for m in net.modules())


@pytest.mark.parametrize("name", list(MONAI_NETS))
@pytest.mark.parametrize("kernel_size", [None, 5])
def test_convert_monai_networks_keeps_shapes(name, kernel_size):
    torch.manual_seed(0)
    net = MONAI_NETS[name]().eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        y0 = net(x)
    n = _n_convertible(net)
    assert n > 0
    out, report = convert(net, conv=("hyper", {"n_l": 4}), kernel_size=kernel_size, return_report=True)
    assert out is net  # in place
    assert count_generated(net) == n == sum(r["status"] == "converted" for r in report)
    if kernel_size:
        assert all(m.kernel_size == (5, 5) for m in net.modules() if isinstance(m, GeneratedConv))
    with torch.no_grad():
        y1 = net(x)
    assert y1.shape == y0.shape and torch.isfinite(y1).all()


@pytest.mark.parametrize("name", ["UNet", "DynUNet"])
@pytest.mark.parametrize("kernel_size", [None, 5])
def test_convert_adaptive_with_fit_reproduces_the_network(name, kernel_size):
    """An adaptive kernel can represent any kernel exactly, so fitting must give the same outputs."""
    torch.manual_seed(0)
    net = MONAI_NETS[name]().eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        y0 = net(x)
    _, report = convert(net, conv="adaptive", kernel_size=kernel_size, fit=True, return_report=True)
    assert max(r["fit_rel_error"] for r in report if r["status"] == "converted") < 1e-4
    with torch.no_grad():
        assert (net(x) - y0).abs().max().item() < 1e-4


def test_convert_hyper_fit_reports_error_and_beats_unfitted():
    torch.manual_seed(0)

    def ref():
        torch.manual_seed(1)
        return nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, 8, 5, padding=2))

    w = [m.weight.detach().clone() for m in ref() if isinstance(m, nn.Conv2d)]
    unfitted = convert(ref(), conv="hyper")
    unfitted_errs = [float((m.weight - t).norm() / t.norm()) for m, t in zip([unfitted[0], unfitted[2]], w)]
    errs = {}
    for n_l in (8, 24):
        net, report = convert(ref(), conv=("hyper", {"n_l": n_l}), fit=True, fit_steps=100, return_report=True)
        errs[n_l] = [r["fit_rel_error"] for r in report]
        assert len(errs[n_l]) == 2 and all(0 <= e < 1 for e in errs[n_l])
        assert all(e < u for e, u in zip(errs[n_l], unfitted_errs))
        # the reported error is the actual one
        assert abs(errs[n_l][1] - float((net[2].weight - w[1]).norm() / w[1].norm())) < 1e-5
    # more hyper-network capacity fits better (papers 000 Fig 8 / 001 Fig 11: N_L = 24 vs 8)
    assert sum(errs[24]) < sum(errs[8])


def test_convert_report_and_bad_arguments():
    net = nn.Sequential(nn.Conv2d(1, 2, 2), nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 3))
    _, report = convert(net, conv="hyper", return_report=True)
    assert [r["status"] for r in report] == ["skipped: even kernel", "converted"]
    assert isinstance(net[0], nn.Conv2d) and isinstance(net[1], nn.Conv2d) and isinstance(net[2], HyperConv)
    with pytest.raises(ValueError, match="no-op"):
        convert(nn.Conv2d(1, 1, 3), conv="conv")
    with pytest.raises(ValueError, match=">= the existing kernel"):
        convert(nn.Sequential(nn.Conv2d(1, 1, 5)), kernel_size=3)
    with pytest.raises(ValueError, match="Unknown conv type"):
        convert(nn.Sequential(nn.Conv2d(1, 1, 3)), conv="nope")
    with pytest.raises(TypeError):
        convert(None)


def test_convert_then_bake_round_trip_matches():
    torch.manual_seed(0)
    net = MONAI_NETS["BasicUNet"]().eval()
    convert(net, conv=("hyper", {"n_l": 2}), kernel_size=5)
    baked = bake(net)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert (net(x) - baked(x)).abs().max().item() < 1e-5
    assert count_generated(baked) == 0
