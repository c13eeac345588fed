"""Multi-branch UNet for multi-contrast MS-lesion segmentation (MB-UNet, Aslani et al. 2019; Ma et al. 2022 Table 3)."""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
from torch import nn

from ..layers.factories import ConvSpec, get_conv_type
from ..utils import check_dims_and_channels
from .blocks import ArgSpec, ConvNormAct, DropoutSpec, check_positive_int
from .unet import PaperUNetDecoder, PaperUNetEncoder, _check_placement, check_input_shape, resolve_channels

__all__ = ["MultiBranchUNet"]

FUSIONS = ("concat", "sum")


class MultiBranchUNet(nn.Module):
    """MB-UNet: one encoder branch per MRI contrast, fused at every scale, one shared decoder.

    Aslani et al. (NeuroImage 2019) encode each contrast (FLAIR, PD, T2, T1) with its own
    branch and fuse the branches' features at several scales before a single decoder; Ma et al.
    2022 and its journal extension use it as the MS-lesion baseline (Table 3) and swap its convs for hyper-convs
    (Hyper-MB-UNet). Neither paper gives its exact layout, so these choices are ours:

    * Branches: the contracting path of :class:`PaperUNet` (two-conv blocks, max-pooling,
      optional stem), one per input channel, each taking one channel. Aslani et al. used
      ResNet-50 encoders; we keep the papers' UNet blocks so only the branching differs from
      :class:`PaperUNet`.
    * Branch width: half of the fused width per level by default (``branch_channels``), so with
      4 contrasts the branches together hold about as many encoder parameters as one plain
      encoder, and the whole net lands near the papers' Table 3 counts (which equal their UNet's).
    * Fusion (``fusion``): ``"concat"`` (default, as Aslani et al.): the branches' features of
      each scale are concatenated and reduced to ``channels[level]`` by a plain 1x1
      conv -> norm -> act; the result is that scale's skip. ``"sum"``: element-wise sum (needs
      ``branch_channels == channels[:-1]``, no fusion parameters).
    * Bottleneck and decoder are shared and identical to :class:`PaperUNet`'s; the bottleneck takes
      the pooled fused features of the deepest scale.
    * 2.5-D use (all three orthogonal planes in Aslani et al.) is a data-pipeline matter
      (e.g. ``monai.inferers.SliceInferer`` per axis), not part of the network.

    Args:
        spatial_dims: 2 or 3 (1 works too).
        in_channels: number of contrasts = number of branches.
        out_channels: output channels (logits; the papers end with a sigmoid).
        channels: fused width per level (int start, doubled per pooling, or ``num_pools + 1`` values).
        num_pools: poolings (default 3).
        branch_channels: per-branch width of each of the ``num_pools`` encoder levels (default
            half of ``channels`` for ``"concat"``, equal to it for ``"sum"``).
        fusion: ``"concat"`` (concatenate + 1x1 conv) or ``"sum"``.
        kernel_size, dilation, conv, act, norm, dropout, dropout_placement, non_local,
            up_kernel_size, up_norm, stem, bias: as :class:`PaperUNet` (the stem is per branch,
            to half of the branch's first width).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Union[int, Sequence[int]] = 32,
        num_pools: int = 3,
        branch_channels: Optional[Union[int, Sequence[int]]] = None,
        fusion: str = "concat",
        kernel_size: Union[int, Sequence[int]] = 3,
        dilation: Union[int, Sequence[int]] = 1,
        conv: ConvSpec = "conv",
        act: ArgSpec = "relu",
        norm: ArgSpec = "batch",
        dropout: DropoutSpec = 0.5,
        dropout_placement: str = "bottleneck",
        non_local: bool = False,
        up_kernel_size: Union[int, Sequence[int]] = 3,
        up_norm: bool = False,
        stem: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels, self.out_channels = check_dims_and_channels(
            spatial_dims, in_channels, out_channels)
        self.channels = resolve_channels(channels, num_pools)
        self.num_pools = num_pools
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}.")
        self.fusion = fusion
        _check_placement(dropout_placement)
        get_conv_type(conv, self.spatial_dims)
        enc = self.channels[:-1]
        if branch_channels is None:
            branch = tuple(max(1, c // 2) for c in enc) if fusion == "concat" else enc
        elif isinstance(branch_channels, int) and not isinstance(branch_channels, bool):
            branch = resolve_channels(branch_channels, num_pools, "branch_channels")[:-1]
        else:
            branch = tuple(branch_channels)
            if len(branch) != num_pools:
                raise ValueError(f"branch_channels must give num_pools = {num_pools} widths, got {branch!r}.")
            for c in branch:
                check_positive_int(c, "branch_channels")
        if fusion == "sum" and branch != enc:
            raise ValueError(f"fusion='sum' needs branch_channels == channels[:-1] = {enc}, got {branch}.")
        self.branch_channels = branch
        self.branches = nn.ModuleList(
            PaperUNetEncoder(self.spatial_dims, 1, branch, kernel_size, dilation, conv, act, norm, dropout,
                             dropout_placement, stem, bias)
            for _ in range(in_channels)
        )
        self.fuse = nn.ModuleList()
        if fusion == "concat":
            for b, c in zip(branch, enc):
                self.fuse.append(ConvNormAct(self.spatial_dims, in_channels * b, c, kernel_size=1, norm=norm, act=act,
                                             bias=bias))
        self.decoder = PaperUNetDecoder(
            self.spatial_dims, out_channels, self.channels, kernel_size, dilation, conv, act, norm, dropout,
            dropout_placement, non_local, up_kernel_size, up_norm, bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_shape(self, x, self.in_channels)
        per_branch = [branch(x[:, i : i + 1]) for i, branch in enumerate(self.branches)]  # [branch][level]
        fused: List[torch.Tensor] = []
        for lvl in range(self.num_pools):
            feats = [skips[lvl] for skips in per_branch]
            if self.fusion == "concat":
                fused.append(self.fuse[lvl](torch.cat(feats, dim=1)))
            else:
                fused.append(torch.stack(feats, dim=0).sum(dim=0))
        return self.decoder(fused)

    def rf_chain(self, path: str = "paper") -> List[nn.Module]:
        """Modules along one branch and the shared path (see :meth:`PaperUNet.rf_chain`)."""
        if path not in ("paper", "bottleneck", "output"):
            raise ValueError(f"path must be 'paper', 'bottleneck' or 'output', got {path!r}.")
        chain = self.branches[0].rf_chain(include_stem=path != "paper")
        if self.fusion == "concat":
            chain.append(self.fuse[-1])
        return chain + self.decoder.rf_chain(to_output=path == "output")
