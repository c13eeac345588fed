"""Networks of the papers: registry, shapes (2-D/3-D), parameter parity, conv override, errors, bake, export."""

import pytest
import torch
from torch import nn

import monai_hyperconv
from monai_hyperconv.layers import AdaptiveConv, GeneratedConv, HyperConv
from monai_hyperconv.networks import (
    PAPER_ROWS, FlatResidualCNN, MultiBranchUNet, NonLocalBlock, PaperUNet, SimpleCNN, SmallResNet, count_parameters,
    create_network, format_parameter_table, list_networks, parameter_table,
)

PAPER_NETS = [
    "unet", "unet5", "dilated_unet", "nonlocal_unet", "hyper_unet", "nonlocal_hyper_unet", "flat_dilated_cnn",
    "flat_hyper_cnn", "mb_unet", "mb_unet5", "dilated_mb_unet", "nonlocal_mb_unet", "hyper_mb_unet",
    "nonlocal_hyper_mb_unet",
]
CLASSIFIERS = ["simple_cnn", "small_resnet"]


@pytest.fixture(autouse=True)
def _one_thread():
    # building/running many small nets: one intra-op thread is much faster on a shared 2-core box
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


# ------------------------------------------------------------------ registry
def test_list_networks_contains_every_paper_row():
    names = list_networks()
    assert set(PAPER_NETS + CLASSIFIERS) <= set(names)
    assert names == sorted(names)
    hyper = list_networks("*hyper*")
    assert {n for n in PAPER_NETS if "hyper" in n} <= set(hyper) and all("hyper" in n for n in hyper)
    descr = list_networks(with_descriptions=True)
    assert "1.2M" in descr["hyper_unet"] and "Table 1" in descr["unet"]


def test_create_network_classes_and_unknown_name():
    assert type(create_network("unet")) is PaperUNet
    assert type(create_network("mb_unet")) is MultiBranchUNet
    assert type(create_network("flat_hyper_cnn")) is FlatResidualCNN
    assert type(create_network("simple_cnn")) is SimpleCNN
    assert type(create_network("small_resnet")) is SmallResNet
    with pytest.raises(KeyError, match="Unknown network 'no_such_net'"):
        create_network("no_such_net")


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize("name", PAPER_NETS)
def test_segmentation_shapes_2d(name):
    net = create_network(name, spatial_dims=2, out_channels=3).eval()
    x = torch.randn(2, net.in_channels, 32, 32)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 3, 32, 32)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", PAPER_NETS)
def test_segmentation_shapes_3d(name):
    small = {"channels": (2,) * 7} if name.startswith("flat") else {"channels": 4}
    net = create_network(name, spatial_dims=3, out_channels=2, **small).eval()
    x = torch.randn(1, net.in_channels, 16, 16, 8)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (1, 2, 16, 16, 8)
    assert torch.isfinite(y).all()
    assert all(m.spatial_dims == 3 for m in net.modules() if isinstance(m, GeneratedConv))


@pytest.mark.parametrize("dims", [2, 3])
def test_classifier_shapes(dims):
    size = (28, 28) if dims == 2 else (8, 8, 8)
    simple = create_network("simple_cnn", spatial_dims=dims, img_size=size, in_channels=2, out_channels=5,
                            channels=(4, 4), hidden=16).eval()
    resnet = create_network("small_resnet", spatial_dims=dims, in_channels=2, out_channels=5, channels=2,
                            num_stages=3).eval()
    x = torch.randn(3, 2, *size)
    with torch.no_grad():
        assert simple(x).shape == (3, 5)
        assert resnet(x).shape == (3, 5)
        # global pooling: the ResNet takes any size
        assert resnet(torch.randn(1, 2, *(s + 4 for s in size))).shape == (1, 5)


def test_simple_cnn_pool_every_conv_and_default_classes():
    net = create_network("simple_cnn", pool_every_conv=True).eval()
    assert _count(net, nn.MaxPool2d) == 2
    # 28 -> 14 -> 7: dense layer 32*7*7 -> 256
    assert net.classifier[2].in_features == 32 * 7 * 7
    with torch.no_grad():
        assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


# ------------------------------------------------------------------ parameter parity
@pytest.fixture(scope="module")
def table():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return parameter_table()
    finally:
        torch.set_num_threads(n)


def test_parameter_parity_within_5_percent(table):
    rows = [r for r in table if r["paper_params"] is not None]
    assert len(rows) == sum(1 for r in PAPER_ROWS if r[3] is not None) >= 18
    bad = [(r["model"], r["params"], r["paper_params"]) for r in rows if abs(r["rel_diff"]) > 0.05]
    assert not bad, bad


def test_parameter_counts_match_official_code_exactly(table):
    """With BN running statistics counted (Keras' count_params), the official nets' numbers exactly."""
    by = {(r["network"], tuple(sorted(r["kwargs"].items()))): r for r in table}
    expected = {
        ("unet", ()): 2_145_697,  # reference notes: 2.146M
        ("unet5", ()): 5_259_169,  # 5.259M
        ("hyper_unet", (("n_l", 2),)): 728_933,  # 0.729M
        ("hyper_unet", ()): 1_205_737,  # 1.206M
        ("hyper_unet", (("n_l", 8),)): 2_159_345,  # 2.159M
    }
    for key, n in expected.items():
        assert by[key]["params_keras"] == n, key
    # PyTorch's own count leaves out the 2 running statistics per BN channel
    assert by[("unet", ())]["params"] == 2_142_881


def test_hyper_unet_params_do_not_depend_on_kernel_size():
    counts = {k: count_parameters(create_network("hyper_unet", kernel_size=k)) for k in (3, 5, 7)}
    assert counts[3] == counts[5] == counts[7]


def test_up_sampling_conv_kernels():
    def up_kernels(net):
        return {up[1].conv.kernel_size for up in net.decoder.ups}

    assert up_kernels(create_network("unet5")) == {(3, 3)}  # plain 5x5 UNet keeps a 3x3 up-conv
    assert up_kernels(create_network("hyper_unet", channels=4)) == {(5, 5)}  # hyper: same as the blocks
    assert up_kernels(create_network("hyper_unet", channels=4, kernel_size=7)) == {(7, 7)}
    assert up_kernels(create_network("hyper_unet", channels=4, kernel_size=7, up_kernel_size=3)) == {(3, 3)}
    assert all(isinstance(up[1].conv, HyperConv) for up in create_network("hyper_unet", channels=4).decoder.ups)


def test_flat_dilated_cnn_structure_and_count():
    net = create_network("flat_dilated_cnn")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert [c.dilation[0] for c in convs] == [1, 1, 2, 2, 4, 4, 8, 8, 4, 4, 2, 2, 1, 1]
    assert [c.out_channels for c in convs[1::2]] == [16, 32, 64, 128, 64, 32, 16]
    # the notes' 9 * 48,656 kernel weights, plus biases, BN and the 1x1 head
    assert sum(c.weight.numel() for c in convs) == 9 * 48_656
    assert 0.44e6 <= count_parameters(net) <= 0.45e6


def test_flat_hyper_cnn_kernels_and_n_l():
    net = create_network("flat_hyper_cnn")
    hyp = [m for m in net.modules() if isinstance(m, HyperConv)]
    assert [h.kernel_size[0] for h in hyp] == [3, 3, 5, 5, 9, 9, 17, 17, 9, 9, 5, 5, 3, 3]
    assert {h.n_l for h in hyp} == {8}


def test_nonlocal_block_param_count_and_formula():
    blk = NonLocalBlock(2, 16)
    assert count_parameters(blk) == 4 * 16 * 8  # theta, phi, g: C -> C/2; out: C/2 -> C; no bias
    x = torch.randn(2, 16, 5, 6)
    with torch.no_grad():
        t, p, g = (m(x).flatten(2) for m in (blk.theta, blk.phi, blk.g))
        f = t.transpose(1, 2) @ p / 30  # (B, N, N) affinity scaled by 1/N, no softmax
        y = (f @ g.transpose(1, 2)).transpose(1, 2).reshape(2, 8, 5, 6)
        ref = x + blk.out(y)
        assert torch.allclose(blk(x), ref, atol=1e-5)
        nn.init.zeros_(blk.out.weight)
        assert torch.equal(blk(x), x)  # residual


def test_table_markdown(table):
    md = format_parameter_table(table)
    lines = md.splitlines()
    assert len(lines) == 2 + len(PAPER_ROWS)
    assert lines[2].startswith("| UNet 3x3 | `unet` | 2.143M | 2.10M | +2.0% | 68 px / 68 px |")
    assert "| Non-local UNet 3x3 |" in md and "all pixels / all pixels" in md


def test_param_table_script(table, capsys, monkeypatch):
    import runpy
    from pathlib import Path

    import monai_hyperconv.networks as networks

    monkeypatch.setattr(networks, "parameter_table", lambda rows=None: table)  # built once by the fixture
    script = Path(__file__).resolve().parents[1] / "scripts" / "param_table.py"
    mod = runpy.run_path(str(script))
    text = mod["main"](["--keras"])
    out = capsys.readouterr().out
    assert text.strip() == out.strip()
    assert "2,145,697" in out and "| Hyper-UNet 5x5, N_L=4 | `hyper_unet` | 1.202M | 1.20M |" in out


# ------------------------------------------------------------------ conv override
def test_conv_override_produces_generated_convs():
    # UNet: 3 levels x 2 + bottleneck 2 + 3 up-convs + 3 levels x 2 = 17 convs with k > 1; the 1x1 head stays plain
    hyper = create_network("unet", conv="hyper")
    assert _count(hyper, HyperConv) == 17
    assert isinstance(hyper.decoder.head, nn.Conv2d)
    adaptive = create_network("unet", conv="adaptive")
    assert _count(adaptive, AdaptiveConv) == 17 and _count(adaptive, HyperConv) == 0
    assert _count(create_network("unet"), GeneratedConv) == 0
    # hyper UNet: + the stem; N_L from the tuple spec or the n_l shortcut
    assert {m.n_l for m in create_network("hyper_unet").modules() if isinstance(m, HyperConv)} == {4}
    h8 = create_network("hyper_unet", conv=("hyper", {"n_l": 8}))
    assert _count(h8, HyperConv) == 18 and {m.n_l for m in h8.modules() if isinstance(m, HyperConv)} == {8}
    assert {m.n_l for m in create_network("hyper_unet", n_l=2).modules() if isinstance(m, HyperConv)} == {2}
    assert _count(create_network("hyper_unet", conv="adaptive"), AdaptiveConv) == 18
    # MB-UNet: 4 branches x 6 + shared 2 + 3 + 6 generated; fusion 1x1 convs plain
    assert _count(create_network("mb_unet", conv="hyper"), HyperConv) == 4 * 6 + 11
    assert _count(create_network("flat_dilated_cnn", conv="adaptive"), AdaptiveConv) == 14
    assert _count(create_network("small_resnet", conv="adaptive"), AdaptiveConv) == 16
    assert _count(create_network("simple_cnn", conv="hyper"), HyperConv) == 2


def test_keyword_construction_with_monai_style_args():
    net = PaperUNet(
        spatial_dims=2, in_channels=2, out_channels=3, channels=(4, 8, 16), num_pools=2, kernel_size=5,
        conv=("hyper", {"n_l": 3}), act=("leakyrelu", {"negative_slope": 0.1}), norm=("group", {"num_groups": 2}),
        dropout=("dropout", {"p": 0.1}), dropout_placement="all", non_local=True, up_kernel_size=3, stem=True,
    )
    acts = [m for m in net.modules() if isinstance(m, nn.LeakyReLU)]
    assert acts and all(a.negative_slope == 0.1 for a in acts) and _count(net, nn.ReLU) == 0
    assert _count(net, nn.GroupNorm) > 0 and _count(net, nn.BatchNorm2d) == 0
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(d.p == 0.1 for d in drops)
    assert _count(net, NonLocalBlock) == 1
    assert {m.n_l for m in net.modules() if isinstance(m, HyperConv)} == {3}
    assert net.encoder.stem.conv.out_channels == 2
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 2, 16, 16)).shape == (1, 3, 16, 16)
    # no norm, no dropout
    bare = PaperUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=4, norm=None, dropout=None)
    assert _count(bare, nn.BatchNorm2d) == 0 and _count(bare, nn.Dropout) == 0


def test_dropout_placement():
    def n_drop(**kw):
        return _count(PaperUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=4, **kw), nn.Dropout)

    assert n_drop() == 1  # plain UNet: bottleneck only
    assert n_drop(dropout_placement="all") == 3 + 1 + 3 + 3  # every two-conv block + up-convs
    assert n_drop(dropout_placement="all", stem=True) == 11
    assert n_drop(dropout_placement="every_conv") == 2 * 7 + 3
    assert n_drop(dropout=0.0) == 0


def test_multibranch_branches_and_fusion():
    net = create_network("mb_unet", channels=8)
    assert len(net.branches) == 4 and net.branch_channels == (4, 8, 16)
    assert all(b.blocks[0].unit0.conv.in_channels == 1 for b in net.branches)
    assert [f.conv.in_channels for f in net.fuse] == [16, 32, 64]
    # each contrast only reaches its own branch
    x = torch.randn(1, 4, 16, 16, requires_grad=True)
    net.eval()
    feats = net.branches[2](x[:, 2:3])
    feats[-1].sum().backward()
    assert x.grad[:, 2].abs().sum() > 0 and x.grad[:, [0, 1, 3]].abs().sum() == 0
    summed = MultiBranchUNet(spatial_dims=2, in_channels=3, out_channels=1, channels=8, fusion="sum").eval()
    assert len(summed.fuse) == 0 and summed.branch_channels == (8, 16, 32)
    with torch.no_grad():
        assert summed(torch.randn(1, 3, 16, 16)).shape == (1, 1, 16, 16)
    with pytest.raises(ValueError, match="fusion='sum' needs branch_channels"):
        MultiBranchUNet(spatial_dims=2, in_channels=2, out_channels=1, fusion="sum", branch_channels=(4, 8, 16))


# ------------------------------------------------------------------ errors
def test_input_size_not_divisible_names_the_size():
    net = create_network("unet", channels=4).eval()
    with pytest.raises(ValueError, match=r"divisible by 2\*\*3 = 8; got spatial size \(30, 32\)"):
        net(torch.randn(1, 1, 30, 32))
    with pytest.raises(ValueError, match="expects 1 input channels, got 2"):
        net(torch.randn(1, 2, 32, 32))
    with pytest.raises(ValueError, match="expects a 4-D input"):
        net(torch.randn(1, 1, 32, 32, 32))
    mb = create_network("mb_unet", channels=4, num_pools=2).eval()
    with pytest.raises(ValueError, match=r"divisible by 2\*\*2 = 4; got spatial size \(16, 18\)"):
        mb(torch.randn(1, 4, 16, 18))
    with pytest.raises(ValueError, match=r"SimpleCNN expects input \(batch, 1, \*\(28, 28\)\)"):
        create_network("simple_cnn")(torch.randn(2, 1, 32, 32))


@pytest.mark.parametrize("name", ["unet", "mb_unet", "flat_dilated_cnn", "simple_cnn", "small_resnet"])
def test_bad_arguments(name):
    with pytest.raises(ValueError, match="spatial_dims must be 1, 2 or 3, got 4"):
        create_network(name, spatial_dims=4)
    with pytest.raises(ValueError, match="Unknown conv type 'fancy'"):
        create_network(name, conv="fancy")
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        create_network(name, in_channels=0)


def test_bad_unet_arguments():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        create_network("unet", kernel_size=4)
    with pytest.raises(ValueError, match=r"num_pools \+ 1 = 4 widths"):
        create_network("unet", channels=(8, 16, 32))
    with pytest.raises(ValueError, match="num_pools must be a positive int"):
        create_network("unet", num_pools=0)
    with pytest.raises(ValueError, match="dropout_placement must be one of"):
        create_network("unet", dropout_placement="everywhere")
    with pytest.raises(ValueError, match="give either n_l or conv"):
        create_network("hyper_unet", n_l=2, conv="hyper")
    with pytest.raises(ValueError, match="n_l applies to the hyper networks only"):
        create_network("unet", n_l=2)
    with pytest.raises(ValueError, match="n_l .* must be an int >= 1"):
        create_network("hyper_unet", n_l=0)
    with pytest.raises(ValueError, match="dropout probability must be in"):
        create_network("unet", dropout=1.5)
    with pytest.raises(ValueError, match="kernel_size must be an int or give one value per block"):
        create_network("flat_dilated_cnn", kernel_size=(3, 5))


# ------------------------------------------------------------------ bake and export
def _warm_bn(net, x, steps=2):
    net.train()
    with torch.no_grad():
        for _ in range(steps):
            net(x)
    return net.eval()


def test_bake_hyper_unet_equals_original():
    net = _warm_bn(create_network("hyper_unet"), torch.randn(4, 1, 32, 32))
    baked = monai_hyperconv.bake(net)
    assert _count(net, HyperConv) == 18 and _count(baked, GeneratedConv) == 0
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        ref, out = net(x), baked(x)
    assert ref.abs().max() > 0
    assert (ref - out).abs().max().item() < 1e-5


def test_bake_adaptive_mb_unet_3d_equals_original():
    net = _warm_bn(create_network("hyper_mb_unet", spatial_dims=3, channels=4, conv="adaptive"),
                   torch.randn(2, 4, 8, 8, 8))
    baked = monai_hyperconv.bake(net)
    assert _count(baked, GeneratedConv) == 0
    x = torch.randn(1, 4, 8, 8, 8)
    with torch.no_grad():
        assert (net(x) - baked(x)).abs().max().item() < 1e-5


def test_torch_export_of_baked_net():
    net = _warm_bn(create_network("nonlocal_hyper_unet", channels=8), torch.randn(2, 1, 32, 32))
    baked = monai_hyperconv.bake(net)
    x = torch.randn(1, 1, 32, 32)
    ep = torch.export.export(baked, (x,))
    with torch.no_grad():
        ref = net(x)
        out = ep.module()(x)
    assert out.shape == (1, 1, 32, 32)
    assert (out - ref).abs().max().item() < 1e-5
    # the exported graph holds plain convolutions only
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert any("conv2d" in t for t in targets)


def test_returns_logits_of_the_1x1_head():
    net = create_network("unet", channels=4).eval()
    seen = {}
    net.decoder.head.register_forward_hook(lambda m, i, o: seen.__setitem__("head", o))
    with torch.no_grad():
        y = net(torch.randn(2, 1, 16, 16))
    assert torch.equal(y, seen["head"])  # nothing (no sigmoid) after the plain 1x1 conv
    assert type(net.decoder.head) is nn.Conv2d and net.decoder.head.kernel_size == (1, 1)
    assert _count(net, nn.Sigmoid) == 0


# ------------------------------------------------------------------ output-layer initialisation
@pytest.mark.parametrize("name", ["unet", "hyper_unet", "flat_dilated_cnn", "hyperseg"])
def test_init_output_layer_sets_the_logits(name):
    """zero_weight + bias: every output logit equals the bias, whatever the network (HyperSeg's is generated)."""
    from monai_hyperconv.networks import init_output_layer

    torch.manual_seed(0)
    kw = {"channels": 4} if name != "hyperseg" else {"channels": 4, "num_pools": 2, "patch_grid": 2}
    net = create_network(name, spatial_dims=2, in_channels=1, out_channels=2, **kw).eval()
    assert init_output_layer(net, bias=-4.0, zero_weight=True) is net
    out = net(torch.rand(2, 1, 32, 32))
    assert torch.equal(out, torch.full_like(out, -4.0))


def test_init_output_layer_residual_and_errors():
    from monai.networks.layers import SkipConnection
    from monai.networks.nets import BasicUNet

    from monai_hyperconv.networks import init_output_layer, output_layer

    unet = create_network("unet", spatial_dims=2, in_channels=1, out_channels=1, channels=4)
    assert output_layer(unet) is unet.decoder.head
    res = SkipConnection(unet, mode="add").eval()
    init_output_layer(unet, bias=0.0, zero_weight=True)
    x = torch.rand(1, 1, 32, 32)
    assert torch.equal(res(x)[:, :1], x)  # a residual net starts as the identity
    # a network outside this package: its last conv
    basic = BasicUNet(spatial_dims=2, in_channels=1, out_channels=3, features=(4, 4, 8, 8, 16, 4))
    assert output_layer(basic) is basic.final_conv
    init_output_layer(basic, bias=1.5)
    assert torch.all(basic.final_conv.bias == 1.5)
    before = [p.clone() for p in basic.parameters()]
    init_output_layer(basic)  # nothing asked: untouched
    assert all(torch.equal(a, b) for a, b in zip(before, basic.parameters()))
    hyper_head = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), HyperConv(2, 2, 1, kernel_size=3))
    with pytest.raises(ValueError, match="generated conv"):
        init_output_layer(hyper_head, zero_weight=True)
    with pytest.raises(ValueError, match="has no bias"):
        init_output_layer(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, bias=False)), bias=1.0)
    with pytest.raises(ValueError, match="no convolution or linear layer"):
        init_output_layer(torch.nn.Sequential(torch.nn.ReLU()), bias=1.0)


def test_flat_cnn_int_channels_is_the_first_width_of_the_profile():
    net = create_network("flat_dilated_cnn", spatial_dims=2, in_channels=1, out_channels=1, channels=16)
    ref = create_network("flat_dilated_cnn", spatial_dims=2, in_channels=1, out_channels=1)  # 16,32,64,128,64,32,16
    assert [b.conv1.out_channels for b in net.blocks] == [16, 32, 64, 128, 64, 32, 16]
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in ref.parameters())
    with pytest.raises(ValueError, match="channels"):
        create_network("flat_dilated_cnn", spatial_dims=2, in_channels=1, out_channels=1, channels=0)
