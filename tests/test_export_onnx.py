"""ONNX export of baked networks (monai_hyperconv.bundle.export_baked / export_materialized): the file
passes onnx.checker and, run in a process that cannot import monai_hyperconv (onnxruntime when
installed, else ONNX's reference evaluator), equals PyTorch within 1e-4."""

import pytest
import torch

onnx = pytest.importorskip("onnx")

from monai_hyperconv.bundle import export_baked, export_materialized  # noqa: E402
from monai_hyperconv.bundle.export import run_exported_model, run_onnx  # noqa: E402
from monai_hyperconv.networks import create_network  # noqa: E402


def _check(net, path, x, tmp_path, **kw):
    torch.manual_seed(0)
    with torch.no_grad():
        ref = net.eval()(x)
    out = export_baked(net, None, path, list(x.shape), **kw)
    model = onnx.load(out)
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert "Conv" in ops
    got = run_exported_model(out, x, workdir=tmp_path)  # no monai_hyperconv in that process
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < 1e-4
    return model


def test_hyper_unet_to_onnx(tmp_path):
    torch.manual_seed(0)
    net = create_network("hyper_unet", spatial_dims=2, in_channels=1, out_channels=2, channels=4, num_pools=1,
                         kernel_size=3, conv=["hyper", {"n_l": 2}], norm="batch")
    _check(net, tmp_path / "hyper_unet.onnx", torch.rand(1, 1, 16, 16), tmp_path)


def test_adaptive_first_layer_unet_to_onnx(tmp_path):
    torch.manual_seed(0)
    net = create_network("first_layer_unet", spatial_dims=2, in_channels=3, out_channels=3, first_conv="adaptive",
                         first_kernel_size=5, channels=4, num_pools=1, kernel_size=3, conv="conv", norm="batch")
    model = _check(net, tmp_path / "first_layer.onnx", torch.rand(1, 3, 16, 16), tmp_path)
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["output"]


def test_materialised_sshn_to_onnx(tmp_path):
    torch.manual_seed(0)
    net = create_network("sshn_unet", spatial_dims=2, in_channels=1, out_channels=2, channels=4, num_pools=1).eval()
    x = torch.rand(1, 1, 16, 16)
    from monai_hyperconv.bundle import materialized_network

    with torch.no_grad():
        ref = materialized_network(net, 0.25)(x)
    out = export_materialized(net, 0.25, tmp_path / "sshn.onnx", list(x.shape))
    got = run_exported_model(out, x, workdir=tmp_path)
    assert (got - ref).abs().max().item() < 1e-4


def test_dynamic_batch_and_in_process_check(tmp_path):
    torch.manual_seed(0)
    net = create_network("hyper_unet", spatial_dims=2, in_channels=1, out_channels=1, channels=2, num_pools=1,
                         kernel_size=3, conv=["hyper", {"n_l": 2}], norm="batch").eval()
    out = export_baked(net, None, tmp_path / "m.onnx", [1, 1, 8, 8], dynamic_batch=True)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        ref = net(x)
    (got,) = run_onnx(out, x, engine="reference")
    assert got.shape == tuple(ref.shape) and abs(torch.as_tensor(got) - ref).max().item() < 1e-4


def test_unknown_export_suffix_is_an_error(tmp_path):
    net = create_network("hyper_unet", spatial_dims=2, in_channels=1, out_channels=1, channels=2, num_pools=1)
    with pytest.raises(ValueError, match="method must be one of"):
        export_baked(net, None, tmp_path / "m.xyz", [1, 1, 8, 8])
