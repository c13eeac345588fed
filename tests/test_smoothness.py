"""Kernel smoothness metric (papers 000 Fig 7, 001 Fig 10): known values, per-layer rows, the PNG grid."""

import math
import struct

import pytest
import torch
from torch import nn

from monai_hyperconv.layers import AdaptiveConv, HyperConv
from monai_hyperconv.metrics import kernel_grid_size, kernel_laplacian, layer_smoothness, plot_kernel_grid


@pytest.fixture(scope="module", autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _checker(*shape):
    idx = torch.stack(torch.meshgrid(*[torch.arange(s) for s in shape], indexing="ij")).sum(0)
    return (-1.0) ** idx.float()


def test_constant_kernel_has_zero_laplacian():
    for shape in [(5, 5), (3, 3), (3, 5, 7)]:
        assert float(kernel_laplacian(torch.full(shape, 2.5))) == 0.0
    assert float(kernel_laplacian(torch.full((5, 5), 2.5), boundary="replicate")) == 0.0
    # zero padding counts the step to the implicit zeros: 5x5 ones -> 12 edge taps |1| + 4 corners |2|
    assert float(kernel_laplacian(torch.ones(5, 5), boundary="zeros")) == pytest.approx(20 / 25)


def test_linear_ramp_zero_on_interior():
    i, j = torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="ij")
    ramp = 0.3 * i - 1.7 * j + 4.0
    assert float(kernel_laplacian(ramp)) == pytest.approx(0.0, abs=1e-5)
    lap = kernel_laplacian(ramp, reduction="map")
    assert lap.shape == (3, 3) and lap.abs().max() < 1e-5
    # with zero padding the ramp is not flat at the border
    assert float(kernel_laplacian(ramp, boundary="zeros")) > 0.5
    z, y, x = torch.meshgrid(*[torch.arange(3.0)] * 3, indexing="ij")
    assert float(kernel_laplacian(2 * z + y - x)) == pytest.approx(0.0, abs=1e-6)


def test_checkerboard_is_the_known_maximum():
    # 2-D 5-point stencil: |sum of 4 opposite neighbours - 4 * centre| = |(-4) - 4| = 8
    assert float(kernel_laplacian(_checker(5, 5))) == pytest.approx(8.0)
    assert float(kernel_laplacian(_checker(3, 3))) == pytest.approx(8.0)
    # 3-D 7-point stencil: 6 + 6 = 12
    assert float(kernel_laplacian(_checker(3, 3, 3))) == pytest.approx(12.0)
    # it is the maximum over kernels with taps in [-1, 1]
    torch.manual_seed(0)
    rand = torch.rand(2000, 1, 5, 5) * 2 - 1
    assert float(kernel_laplacian(rand, reduction="none").max()) <= 8.0
    # and the stencil is the discrete Laplacian: an impulse gives |-4| at the centre, 1 at 4 neighbours
    imp = torch.zeros(5, 5)
    imp[2, 2] = 1.0
    assert float(kernel_laplacian(imp)) == pytest.approx((4 + 4 * 1) / 9)


def test_gaussian_smoother_than_white_noise():
    g = torch.arange(5.0) - 2
    gauss = torch.exp(-(g[:, None] ** 2 + g[None] ** 2) / (2 * 1.5**2))
    torch.manual_seed(0)
    noise = torch.randn(64, 5, 5)
    noise = noise / noise.pow(2).mean().sqrt() * gauss.pow(2).mean().sqrt()  # same RMS
    lg, ln = float(kernel_laplacian(gauss)), float(kernel_laplacian(noise, spatial_dims=2))
    assert lg < 0.25 * ln, (lg, ln)


def test_shapes_reductions_and_errors():
    w = torch.randn(6, 3, 5, 5)
    per = kernel_laplacian(w, reduction="none")
    assert per.shape == (6, 3)
    assert float(kernel_laplacian(w)) == pytest.approx(float(per.mean()))
    # one value per kernel equals the kernel on its own
    assert float(per[2, 1]) == pytest.approx(float(kernel_laplacian(w[2, 1])))
    assert kernel_laplacian(torch.randn(4, 2, 3, 3, 3), reduction="none").shape == (4, 2)
    assert kernel_laplacian(torch.randn(4, 2, 5), spatial_dims=1, reduction="none").shape == (4, 2)
    # a 1 x 5 kernel: only the long axis is differentiated
    row = torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0]])
    assert float(kernel_laplacian(row)) == pytest.approx(2.0)
    # differentiable (usable as a regulariser)
    w.requires_grad_(True)
    kernel_laplacian(w).backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="boundary"):
        kernel_laplacian(w, boundary="wrap")
    with pytest.raises(ValueError, match="spatial_dims"):
        kernel_laplacian(torch.randn(5))
    with pytest.raises(ValueError, match="size >= 3"):
        kernel_laplacian(torch.randn(4, 4, 2, 2))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 5, padding=2)
        self.h1 = HyperConv(2, 4, 6, kernel_size=5, padding=2, n_l=3)
        self.proj = nn.Conv2d(6, 2, 1)  # 1x1: skipped
        self.up = nn.ConvTranspose2d(2, 3, 3)
        self.a3 = AdaptiveConv(3, 3, 2, kernel_size=3)


def test_layer_rows_match_direct_computation():
    torch.manual_seed(0)
    net = _Net()
    rows = layer_smoothness(net)
    assert [r["layer"] for r in rows] == ["c1", "h1", "up", "a3"]
    assert [r["type"] for r in rows] == ["Conv2d", "HyperConv", "ConvTranspose2d", "AdaptiveConv"]
    assert [r["kernel_size"] for r in rows] == [(5, 5), (5, 5), (3, 3), (3, 3, 3)]
    assert [r["n_kernels"] for r in rows] == [4, 24, 6, 6]
    with torch.no_grad():
        for r, w in zip(rows, [net.c1.weight, net.h1.weight, net.up.weight, net.a3.weight]):
            lap = float(kernel_laplacian(w))
            assert r["laplacian"] == pytest.approx(lap, rel=1e-6)
            assert r["mean_abs_weight"] == pytest.approx(float(w.abs().mean()), rel=1e-6)
            assert r["laplacian_rel"] == pytest.approx(lap / float(w.abs().mean()), rel=1e-6)
            assert all(math.isfinite(r[k]) for k in ("laplacian", "laplacian_rel"))
    # a mapping of weights gives the same rows
    rows2 = layer_smoothness({"a": net.c1.weight.detach()})
    assert rows2[0]["laplacian"] == pytest.approx(rows[0]["laplacian"])
    # hyper-conv kernels at initialisation are smooth functions of the coordinates: much smoother
    assert rows[1]["laplacian_rel"] < rows[0]["laplacian_rel"]


def _png_size(path):
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_kernel_grid_png(tmp_path):
    torch.manual_seed(0)
    net = _Net()
    out = plot_kernel_grid(net, tmp_path / "grid.png", n_kernels=4, title="test")
    assert out == str(tmp_path / "grid.png")
    assert _png_size(out) == kernel_grid_size(4, 4) == (240 + 4 * 48, 36 + 4 * 48)
    import matplotlib.image

    img = matplotlib.image.imread(out)
    assert img.shape[:2] == (36 + 4 * 48, 240 + 4 * 48) and img.std() > 0.01
    # list input, 3-D kernels, custom geometry; no temporary files left behind
    out2 = plot_kernel_grid([torch.randn(2, 2, 3, 3, 3), torch.randn(3, 1, 5, 5)], tmp_path / "g2.png",
                            n_kernels=8, cell_px=20, label_px=100, title_px=10)
    assert _png_size(out2) == kernel_grid_size(2, 8, 20, 100, 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g2.png", "grid.png"]
    with pytest.raises(KeyError):
        plot_kernel_grid(net, tmp_path / "x.png", layers=["nope"])
