"""Output heads of the scale-space hypernetwork (Gonzalez Ortiz et al. 2023): full, low-rank, chunked
(von Oswald et al. 2020): equivalence of materialize and forward, exact coverage, parameter counts, errors."""

import math

import pytest
import torch
from torch import nn

from monai_hyperconv.hypernets import (
    ChunkedHead, FullHead, LowRankHead, PhiHypernetwork, RegistrationNet, ScaleSpaceHyperUNet, ScaleSpaceUNet,
    head_num_params,
)

TINY = dict(channels=(3, 4, 5), num_pools=2)
HEAD_KW = {"full": {}, "low_rank": {"hyper_rank": 3}, "chunked": {"hyper_chunk_size": 40}}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(n)


def _numel(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _sshn(dims, head, **kw):
    return ScaleSpaceHyperUNet(dims, 1, 2, hyper_head=head, **HEAD_KW[head], **{**TINY, **kw})


def _segments(sshn):
    return [n for c in sshn.convs for _, n, _, _ in c.init_slices(1.0)]


@pytest.mark.parametrize("head", ["low_rank", "chunked", "full"])
@pytest.mark.parametrize("dims, shape", [(2, (2, 1, 19, 14)), (3, (1, 1, 9, 8, 7))])
def test_materialize_equals_forward(head, dims, shape):
    sshn = _sshn(dims, head).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        for phi in (0.05, 0.3, 1.0):
            assert (sshn.materialize(phi)(x) - sshn(x, phi)).abs().max().item() < 1e-5
        # the structured heads still condition the weights on phi
        w1, w2 = next(sshn.materialize(0.1).parameters()), next(sshn.materialize(0.45).parameters())
        assert not torch.allclose(w1, w2)


def test_low_rank_head_is_u_v_h_plus_theta0():
    head = LowRankHead(7, 23, 3)
    with torch.no_grad():
        head.bias.normal_()
    h = torch.randn(7)
    ref = head.u @ (head.v @ h) + head.bias
    torch.testing.assert_close(head(h), ref)


def test_chunked_head_matches_a_loop_over_segments_and_chunks():
    segments = [10, 3, 25, 7]
    head = ChunkedHead(5, sum(segments), chunk_size=8, segments=segments)
    with torch.no_grad():
        head.bias.normal_()
    h = torch.randn(5)
    parts, c = [], 0
    for seg in segments:  # chunks restart at every segment; a segment's last chunk uses A's first rows
        for s in range(0, seg, 8):
            n = min(8, seg - s)
            parts.append(head.shared[:n] @ (head.embedding[c] * h))
            c += 1
    assert c == head.num_chunks == 2 + 1 + 4 + 1
    out = head(h)
    assert out.shape == (sum(segments),)
    torch.testing.assert_close(out, torch.cat(parts) + head.bias)


@pytest.mark.parametrize("head", ["low_rank", "chunked"])
@pytest.mark.parametrize("dims", [2, 3])
def test_every_primary_parameter_is_generated_once_and_gets_a_gradient(head, dims):
    sshn = _sshn(dims, head).train()
    plain = ScaleSpaceUNet(dims, 1, 2, conv="conv", **TINY)
    P = _numel(plain)
    assert _numel(sshn.primary) == 0 and sshn.num_primary_params == P
    # theta_0 = 0, 1, ..., P-1 and no phi-dependence: every value lands in exactly one primary parameter
    with torch.no_grad():
        sshn.hyper.zero_dependence(0, P)
        sshn.hyper.out.bias.copy_(torch.arange(P, dtype=torch.float32))
    values = torch.cat([q.detach().flatten() for q in sshn.materialize(0.3).parameters()])
    assert torch.equal(values.sort().values, torch.arange(P, dtype=torch.float32))
    # with a phi-dependent part again: one forward/backward reaches every primary parameter and every head weight
    sshn = _sshn(dims, head).train()
    theta = sshn.hyper(0.5)
    assert theta.shape == (P,)
    theta.retain_grad()
    x = torch.randn((1, 1) + (12,) * dims)  # 12 -> 6 -> 3: every 3x3 tap sees data at every stage
    with sshn._slot.bind(theta):
        sshn.primary(x, phi=0.5).square().sum().backward()
    assert (theta.grad != 0).all()
    for name, p in sshn.hyper.out.named_parameters():
        assert p.grad is not None and (p.grad.flatten(1) if p.dim() > 1 else p.grad[:, None]).abs().sum(1).gt(0).all(), name
    assert sshn.hyper.body[0].weight.grad.abs().sum() > 0


def test_parameter_counts_drop_by_orders_of_magnitude():
    # the paper's 2-D primary (5 stages x 32 channels): 194,338 values; counted on the real heads
    low = ScaleSpaceHyperUNet(2, 1, 2, hyper_head="low_rank", hyper_rank=4)
    chunked = ScaleSpaceHyperUNet(2, 1, 2, hyper_head="chunked", hyper_chunk_size=1024)
    P = low.num_primary_params
    assert P == chunked.num_primary_params == _numel(ScaleSpaceUNet(2, 1, 2))
    full_count = P * 100 + P  # the full head: W (P x 100) and theta_0
    assert head_num_params("full", 100, P) == full_count
    assert _numel(low.hyper.out) == head_num_params("low_rank", 100, P, rank=4) == 4 * P + 4 * 100 + P
    segs = _segments(chunked)
    n_chunks = sum(math.ceil(s / 1024) for s in segs)
    assert chunked.hyper.out.num_chunks == n_chunks
    assert _numel(chunked.hyper.out) == head_num_params("chunked", 100, P, chunk_size=1024, segments=segs) \
        == 1024 * 100 + n_chunks * 100 + P
    assert _numel(low.hyper.out) < full_count / 15
    assert _numel(chunked.hyper.out) < full_count / 60  # theta_0 (= P) is most of it
    full = _sshn(2, "full")
    assert _numel(full.hyper.out) == head_num_params("full", 100, full.num_primary_params)


def test_full_head_is_the_default_linear_layer():
    sshn = ScaleSpaceHyperUNet(2, 1, 2, **TINY)
    assert sshn.hyper.head == "full" and isinstance(sshn.hyper.out, FullHead) and isinstance(sshn.hyper.out, nn.Linear)
    assert {k for k in sshn.state_dict() if k.startswith("hyper.out")} == {"hyper.out.weight", "hyper.out.bias"}


@pytest.mark.parametrize("head", ["low_rank", "chunked"])
def test_structured_heads_initial_scale_and_state_dict(head):
    sshn = _sshn(2, head, channels=16, num_pools=1)
    conv = sshn.primary.encoder[1].layers[0]  # 3x3, 16 -> 16
    dep = sshn.hyper(0.3) - sshn.hyper.out.bias
    w = dep.narrow(0, conv.offset, conv.num_weight)
    expected = sshn.hyper.init_scale * math.sqrt(2.0 / (1 + 0.2**2)) / math.sqrt(conv.fan_in)
    assert 0.5 * expected < w.std().item() < 2.0 * expected
    other = _sshn(2, head, channels=16, num_pools=1)
    other.load_state_dict(sshn.state_dict())
    x = torch.randn(1, 1, 12, 12)
    with torch.no_grad():
        assert torch.equal(other.eval()(x, 0.2), sshn.eval()(x, 0.2))


@pytest.mark.parametrize("head", ["low_rank", "chunked"])
def test_registration_flow_layer_is_phi_independent(head):
    net = RegistrationNet(2, 1, channels=4, num_pools=1, backbone="sshn", hyper_head=head, **HEAD_KW[head])
    sshn = net.backbone
    assert sshn.hyper.head == head
    c = sshn.primary.out_conv
    t1, t2 = sshn.hyper(0.1), sshn.hyper(0.45)
    torch.testing.assert_close(t1.narrow(0, c.offset, c.num_predicted), t2.narrow(0, c.offset, c.num_predicted))
    assert not torch.allclose(t1.narrow(0, 0, c.offset), t2.narrow(0, 0, c.offset))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(hyper_head="lowrank"), "head must be one of"),
        (dict(hyper_head="low_rank"), "needs a rank"),
        (dict(hyper_head="chunked"), "needs a chunk_size"),
        (dict(hyper_head="low_rank", hyper_rank=0), "rank must be a positive int"),
        (dict(hyper_head="low_rank", hyper_rank=True), "rank must be a positive int"),
        (dict(hyper_head="low_rank", hyper_rank=2.0), "rank must be a positive int"),
        (dict(hyper_head="low_rank", hyper_rank=101), "rank must be at most"),
        (dict(hyper_head="chunked", hyper_chunk_size=0), "chunk_size must be a positive int"),
        (dict(hyper_head="chunked", hyper_chunk_size=-5), "chunk_size must be a positive int"),
        (dict(hyper_rank=4), "only used with head='low_rank'"),
        (dict(hyper_head="chunked", hyper_chunk_size=8, hyper_rank=4), "only used with head='low_rank'"),
        (dict(hyper_head="low_rank", hyper_rank=4, hyper_chunk_size=8), "only used with head='chunked'"),
    ],
)
def test_bad_head_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        ScaleSpaceHyperUNet(2, 1, 2, channels=2, num_pools=1, **kw)


def test_chunked_segment_errors():
    with pytest.raises(ValueError, match="segments"):
        PhiHypernetwork(10, head="chunked", chunk_size=4, segments=[4, 5])
    with pytest.raises(ValueError, match="segments"):
        ChunkedHead(5, 10, 4, segments=[10, 0])
    head = ChunkedHead(5, 10, 4, segments=[6, 4])
    head.zero_dependence(6, 4)  # a whole segment: fine
    assert head.embedding[2].abs().sum() == 0 and head.embedding[0].abs().sum() > 0
    with pytest.raises(ValueError, match="straddles"):
        head.zero_dependence(2, 5)
