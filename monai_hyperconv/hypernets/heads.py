"""Output heads of the phi-hypernetwork: ``theta = theta_0 + D h`` with a full, low-rank or chunked ``D``.

The scale-space hypernetwork of Gonzalez Ortiz et al. 2023 maps ``h`` (the hidden features of
``[phi, 1 - phi]``, ``H`` of them) to every primary parameter with one linear layer: ``D = W``,
``H x P`` weights for ``P`` primary parameters (100 x P with the paper's widths), plus their
gradient and two Adam states. In 3-D that matrix, not the activations, dominates training memory.
Two structured heads keep ``theta`` affine in ``h`` (and the primary network the same) with far
fewer parameters:

* ``"low_rank"``: ``D = U V`` with ``U`` of shape ``(P, r)`` and ``V`` of shape ``(r, H)``
  (``P r + r H`` weights).
* ``"chunked"`` (after the chunked hypernetworks of von Oswald et al. 2020): ``theta`` is cut into
  chunks of ``chunk_size`` values that never straddle a segment (a layer's weight or bias), and
  chunk ``c`` is ``A (e_c * h)``: one linear map ``A`` (``chunk_size x H``) shared by all chunks,
  modulated by a learned chunk embedding ``e_c`` (``H`` values) (``chunk_size H + n_chunks H``
  weights). A *linear* map of the concatenation ``[h, e_c]`` would give every chunk the same
  phi-dependent part (``e_c`` would only add a constant, which ``theta_0`` already has), hence the
  product. Chunks end at segment ends; a segment's last chunk uses the first rows of ``A`` only.

Every head stores ``theta_0`` as ``bias`` (``P`` values) and generates exactly ``P`` values, one per
primary parameter. Each implements ``zero_dependence(start, length)`` (make a range of outputs
independent of phi); the structured ones ``init_dependence(row_std, energy)`` (random init with the
phi-dependent part of output ``i`` of std ``row_std[i]`` when ``E||h||^2 = energy``).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HEADS", "FullHead", "LowRankHead", "ChunkedHead", "make_head", "head_num_params"]

#: valid ``head`` names
HEADS = ("full", "low_rank", "chunked")


def _check_int(value, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return value


class FullHead(nn.Linear):
    """``theta = W h + theta_0``: the paper's output layer (an ``nn.Linear``; ``bias`` is ``theta_0``).

    Initialised slice by slice by :meth:`PhiHypernetwork.init_output` (unchanged random stream).
    """

    @torch.no_grad()
    def zero_dependence(self, start: int, length: int) -> None:
        self.weight.narrow(0, start, length).zero_()


class LowRankHead(nn.Module):
    """``theta = U (V h) + theta_0`` with ``U`` ``(out_features, rank)`` and ``V`` ``(rank, in_features)``.

    Args:
        in_features: width ``H`` of ``h``.
        out_features: number of generated values ``P``.
        rank: ``r`` (at most ``in_features``).
    """

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        _check_int(rank, "rank")
        if rank > in_features:
            raise ValueError(f"rank must be at most the hypernetwork's last hidden width {in_features} "
                             f"(W = U V has rank <= {in_features} anyway), got {rank}.")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.u = nn.Parameter(torch.zeros(out_features, rank))
        self.v = nn.Parameter(torch.zeros(rank, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.init_dependence(torch.full((out_features,), 0.1), 1.0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(h, self.v), self.u, self.bias)

    @torch.no_grad()
    def init_dependence(self, row_std: torch.Tensor, energy: float) -> None:
        # V h has r entries of std ~1/r (so ||V h||_1 ~ 1 and an Adam step of lr on U moves theta by
        # ~lr, as the full head with its feature scale); U rows then give std(U V h) = row_std
        r = self.rank
        self.v.normal_(0.0, 1.0 / (r * math.sqrt(energy)))
        self.u.normal_().mul_(row_std.to(self.u).unsqueeze(1) * math.sqrt(r))

    @torch.no_grad()
    def zero_dependence(self, start: int, length: int) -> None:
        self.u.narrow(0, start, length).zero_()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class ChunkedHead(nn.Module):
    """``theta[chunk c] = A (e_c * h) + theta_0[chunk c]``: a shared map ``A`` and one embedding ``e_c`` per chunk.

    Args:
        in_features: width ``H`` of ``h``.
        out_features: number of generated values ``P``.
        chunk_size: values per chunk (at most; a segment's last chunk may be shorter).
        segments: lengths of consecutive output segments (summing to ``out_features``) that no chunk
            straddles, e.g. each layer's weight and bias, so that a chunk's embedding can carry that
            layer's scale; default one segment.
    """

    def __init__(self, in_features: int, out_features: int, chunk_size: int,
                 segments: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        _check_int(chunk_size, "chunk_size")
        segments = [out_features] if segments is None else [int(s) for s in segments]
        if any(s < 1 for s in segments) or sum(segments) != out_features:
            raise ValueError(f"segments must be positive lengths summing to out_features={out_features}, "
                             f"got {len(segments)} segments summing to {sum(segments)}.")
        self.in_features, self.out_features = in_features, out_features
        self.chunk_size = min(chunk_size, max(segments))
        starts, lengths, index = [], [], []
        pos = 0  # position in the padded (n_chunks * chunk_size) output
        offset = 0
        for seg in segments:
            for s in range(0, seg, self.chunk_size):
                n = min(self.chunk_size, seg - s)
                starts.append(offset + s)
                lengths.append(n)
                index.append(torch.arange(pos, pos + n))
                pos += self.chunk_size
            offset += seg
        self.num_chunks = len(starts)
        self._starts, self._lengths = starts, lengths
        # where each generated value sits in the flattened (n_chunks, chunk_size) product: P entries
        self.register_buffer("index", torch.cat(index), persistent=False)
        self.shared = nn.Parameter(torch.zeros(self.chunk_size, in_features))  # A
        self.embedding = nn.Parameter(torch.zeros(self.num_chunks, in_features))  # e_c
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.init_dependence(torch.full((out_features,), 0.1), 1.0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        chunks = F.linear(self.embedding * h, self.shared)  # (n_chunks, chunk_size)
        return self.bias + chunks.flatten().index_select(0, self.index)

    @torch.no_grad()
    def init_dependence(self, row_std: torch.Tensor, energy: float) -> None:
        # A ~ N(0, 1) and e_c ~ N(0, s_c^2 / energy) give std(A (e_c * h)) = s_c, with s_c the RMS of
        # row_std over the chunk; an Adam step of lr on e_c moves theta by ~lr (as the full head)
        self.shared.normal_()
        sq = row_std.to(self.embedding).square()
        for c, (start, n) in enumerate(zip(self._starts, self._lengths)):
            s = sq.narrow(0, start, n).mean().sqrt()
            self.embedding[c].normal_().mul_(s / math.sqrt(energy))

    @torch.no_grad()
    def zero_dependence(self, start: int, length: int) -> None:
        end = start + length
        for c, (s, n) in enumerate(zip(self._starts, self._lengths)):
            if s < end and start < s + n:  # chunk overlaps the range
                if s < start or s + n > end:
                    raise ValueError(f"zero_dependence({start}, {length}): chunk {c} [{s}, {s + n}) straddles the "
                                     f"range; give the range as a segment when building the head.")
                self.embedding[c].zero_()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"chunk_size={self.chunk_size}, num_chunks={self.num_chunks}")


def make_head(head: str, in_features: int, out_features: int, rank: Optional[int] = None,
              chunk_size: Optional[int] = None, segments: Optional[Sequence[int]] = None) -> nn.Module:
    """The output head named ``head`` (``"full" | "low_rank" | "chunked"``).

    Args:
        head: head kind.
        in_features, out_features: ``H`` and ``P``.
        rank: ``r`` of ``"low_rank"`` (required there, rejected otherwise).
        chunk_size: values per chunk of ``"chunked"`` (required there, rejected otherwise).
        segments: see :class:`ChunkedHead` (ignored by the other heads).

    Returns:
        the head module (its ``bias`` is ``theta_0``).
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}.")
    if rank is not None and head != "low_rank":
        raise ValueError(f"rank={rank!r} is only used with head='low_rank' (head={head!r}).")
    if chunk_size is not None and head != "chunked":
        raise ValueError(f"chunk_size={chunk_size!r} is only used with head='chunked' (head={head!r}).")
    if head == "full":
        return FullHead(in_features, out_features)
    if head == "low_rank":
        if rank is None:
            raise ValueError("head='low_rank' needs a rank (a positive int, e.g. 8).")
        return LowRankHead(in_features, out_features, rank)
    if chunk_size is None:
        raise ValueError("head='chunked' needs a chunk_size (a positive int, e.g. 1024).")
    return ChunkedHead(in_features, out_features, chunk_size, segments)


def head_num_params(head: str, in_features: int, out_features: int, rank: Optional[int] = None,
                    chunk_size: Optional[int] = None, segments: Optional[Sequence[int]] = None) -> int:
    """Learnable parameters of a head, by formula (``theta_0`` included).

    full: ``P H + P``; low_rank: ``P r + r H + P``; chunked: ``C' H + n_chunks H + P`` with
    ``C' = min(chunk_size, longest segment)`` and ``n_chunks = sum over segments of ceil(len / C')``.
    """
    P, H = out_features, in_features
    if head == "full":
        return P * H + P
    if head == "low_rank":
        return P * rank + rank * H + P
    if head == "chunked":
        segments = [P] if segments is None else list(segments)
        c = min(chunk_size, max(segments))
        return c * H + sum(math.ceil(s / c) for s in segments) * H + P
    raise ValueError(f"head must be one of {HEADS}, got {head!r}.")
