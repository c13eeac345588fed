"""HyperSeg-style baseline (Nirkin, Wolf & Hassner, CVPR 2021), our implementation.

Ma et al. 2022 and its journal extension compare against "our implementation of HyperSeg" (Table 1: 0.683 test Dice on
LiTS, "all pixels" receptive field, 1.2M parameters). This module is *our* implementation of that
idea for MONAI, not a port of the official code: an encoder whose deepest features drive a
hypernetwork that generates the weights of every decoder convolution, separately for every
patch of the image (spatially varying, "patch-wise" dynamic convolutions).

How it works (:class:`HyperSegNet`):

1. **Encoder**: a UNet-like contracting path (two ``conv -> norm -> act`` units per level, max
   pooling, widths doubling), with a selectable conv type (``"conv"``, ``"hyper"``, ...). Its
   level outputs are the decoder's skips; the deepest one is the bottleneck.
2. **Hypernetwork** (:class:`PatchHyperNetwork`): the bottleneck is cut into a ``patch_grid``
   of patches; for every patch the mean feature of the patch, the mean feature of the whole
   image (global context) and the patch's normalised centre coordinates (a positional
   encoding) go through a small MLP into a normalised embedding ``e_p``. One linear head per
   decoder layer maps ``e_p`` to that layer's kernel and bias: ``theta_p = W e_p + theta_0``
   (the head's bias ``theta_0`` is an ordinary Kaiming-initialised kernel, so the decoder
   starts as a plain, well-scaled network plus a per-patch modulation).
3. **Decoder**: per level, up-sample (bi/tri-linear), concatenate the skip and the normalised
   image coordinates (as the official decoder), then one *patch-wise dynamic convolution*
   (:func:`patchwise_conv`: every patch of the feature map is convolved with its own kernel; the
   image is zero-padded once and each patch reads a halo of its neighbours' pixels, so there are
   no seams) followed by norm and activation; a patch-wise dynamic 1x1 conv gives the logits.
   Patches are aligned across levels: patch ``p`` covers the same image region at every
   resolution, and at every level uses the kernels generated from bottleneck patch ``p``.

Simplifications versus the original design (deliberate; documented so results are read right):

- Backbone: a small plain-conv UNet encoder (conv type selectable) instead of EfficientNet.
- Context head: patch-mean + global-mean pooling of the bottleneck instead of the nested U-Net
  context head; the weight signal lives on a configurable ``patch_grid`` (default 4 per
  dimension) instead of one patch per bottleneck pixel (set ``patch_grid`` to the bottleneck
  size for that).
- Weight mapping ("meta-embedding"): one shared MLP embedding per patch and one linear head per
  decoder layer, instead of splitting the signal channels among layers and mapping each chunk
  with a grouped 1x1 conv without bias.
- Decoder blocks: one dense dynamic ``k x k`` conv per level (+ norm + act) instead of dynamic
  inverted-residual blocks (pointwise / depthwise / pointwise); zero padding at the image border
  instead of reflection; no test-time flipping or image pyramids.
- 2-D and 3-D (and 1-D) work alike: patches are cut with ``Tensor.unfold`` and convolved with
  one grouped convolution of ``batch * patches`` groups.

Output: logits (apply a sigmoid/softmax in the loss). Inputs must have every spatial size
divisible by ``2**num_pools * patch_grid``; anything else raises a ``ValueError`` naming the size.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn

from ..layers.base import ensure_tuple_dims
from ..layers.factories import ConvSpec, get_conv_type
from ..utils import check_dims_and_channels, check_spatial_dims
from .blocks import ArgSpec, DoubleConv, check_positive_int
from .registry import register_network
from .unet import resolve_channels

__all__ = ["HyperSegNet", "PatchHyperNetwork", "patchwise_conv", "patch_coordinates"]

_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_INTERP = {1: "linear", 2: "bilinear", 3: "trilinear"}
_ADAPTIVE_AVG = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


def patchwise_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], patch_grid: Sequence[int]
) -> torch.Tensor:
    """Stride-1 "same" convolution whose kernel differs per patch (dynamic patch-wise convolution).

    The input is cut into ``patch_grid`` equal patches per spatial dimension; output pixels of
    patch ``p`` are computed with kernel ``weight[:, p]``. The input is zero-padded once at the
    image border and every patch reads a halo of ``k // 2`` pixels from its neighbours, so with
    the same kernel in every patch the result equals an ordinary ``conv(x, w, padding=k // 2)``.

    Args:
        x: ``(B, C, *S)`` with ``S[i]`` divisible by ``patch_grid[i]``.
        weight: ``(B, P, O, C, *k)`` with ``P = prod(patch_grid)`` (patches in C order) and odd ``k``.
        bias: ``(B, P, O)`` or ``None``.
        patch_grid: patches per spatial dimension.

    Returns:
        ``(B, O, *S)``.
    """
    d = x.dim() - 2
    grid = tuple(int(g) for g in patch_grid)
    b, c = x.shape[:2]
    size = tuple(int(s) for s in x.shape[2:])
    if len(grid) != d or any(s % g for s, g in zip(size, grid)):
        raise ValueError(f"patchwise_conv: spatial size {size} is not divisible by the patch grid {grid}.")
    n_p = math.prod(grid)
    o = weight.shape[2]
    ks = tuple(int(k) for k in weight.shape[4:])
    if weight.shape[:2] != (b, n_p) or weight.shape[3] != c or len(ks) != d or any(k % 2 == 0 for k in ks):
        raise ValueError(
            f"patchwise_conv: weight shape {tuple(weight.shape)} does not match (B={b}, P={n_p}, O, C={c}, odd k x {d})."
        )
    psz = tuple(s // g for s, g in zip(size, grid))
    rad = tuple(k // 2 for k in ks)
    pads: List[int] = []
    for r in reversed(rad):
        pads += [r, r]
    xp = F.pad(x, pads) if any(rad) else x
    for i in range(d):  # (B, C, g_1.., w_1..): one window of patch + 2 * halo per patch
        xp = xp.unfold(2 + i, psz[i] + 2 * rad[i], psz[i])
    perm = [0, *range(2, 2 + d), 1, *range(2 + d, 2 + 2 * d)]  # (B, g.., C, w..)
    windows = xp.permute(*perm).reshape(1, b * n_p * c, *(p + 2 * r for p, r in zip(psz, rad)))
    out = _CONV_FN[d](windows, weight.reshape(b * n_p * o, c, *ks), None, 1, 0, 1, b * n_p)
    out = out.reshape(b, n_p, o, *psz)
    if bias is not None:
        out = out + bias.reshape(b, n_p, o, *([1] * d))
    out = out.reshape(b, *grid, o, *psz)
    # (B, g_1.., O, p_1..) -> (B, O, g_1, p_1, g_2, p_2, ...) -> (B, O, *S)
    perm = [0, 1 + d]
    for i in range(d):
        perm += [1 + i, 2 + d + i]
    return out.permute(*perm).reshape(b, o, *size)


def patch_coordinates(patch_grid: Sequence[int], device=None, dtype=None) -> torch.Tensor:
    """Normalised centres of the patches in ``[-1, 1]``, shape ``(prod(patch_grid), len(patch_grid))``, C order."""
    axes = [(torch.arange(g, device=device, dtype=dtype) + 0.5) / g * 2 - 1 for g in patch_grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(axes))


def _image_coordinates(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel normalised coordinates ``linspace(-1, 1)``, shape ``(B, d, *S)`` (as the official decoder)."""
    size = x.shape[2:]
    axes = [torch.linspace(-1, 1, s, device=x.device, dtype=x.dtype) for s in size]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)
    return grid.unsqueeze(0).expand(x.shape[0], *grid.shape)


class PatchHyperNetwork(nn.Module):
    """Maps bottleneck features to per-patch kernels of every decoder layer.

    Per patch ``p``: ``u_p = [mean_p(f), mean(f), c_p]`` (patch mean, global mean, patch centre
    in ``[-1, 1]``), ``e_p = LayerNorm(MLP(u_p))`` (no affine, so ``||e_p||^2 = embed_dim``), and for
    each decoder layer ``l``: ``[W_l | b_l]_p = H_l e_p + theta_l`` with a linear head ``H_l``.

    Initialisation: ``theta_l`` (the head bias) holds a Kaiming-normal kernel (zero conv bias) and
    ``H_l`` is normal with a std giving the per-patch part the same variance, each half of
    ``2 / fan_in``; the generated kernels start with a Kaiming conv's variance, varying per patch.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: bottleneck channels.
        layer_shapes: ``(out_channels, in_channels, *kernel_size)`` of each generated conv.
        patch_grid: patches per spatial dimension.
        hidden: width of the MLP's hidden layer.
        embed_dim: width of the patch embedding ``e_p``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, layer_shapes: Sequence[Tuple[int, ...]],
                 patch_grid: Sequence[int], hidden: int = 64, embed_dim: int = 16) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.patch_grid = tuple(patch_grid)
        self.layer_shapes = [tuple(int(v) for v in s) for s in layer_shapes]
        check_positive_int(hidden, "hyper_hidden")
        self.embed_dim = check_positive_int(embed_dim, "embed_dim")
        self.mlp = nn.Sequential(
            nn.Linear(2 * in_channels + self.spatial_dims, hidden), nn.LeakyReLU(0.1),
            nn.Linear(hidden, embed_dim), nn.LayerNorm(embed_dim, elementwise_affine=False),
        )
        self.heads = nn.ModuleList(nn.Linear(embed_dim, math.prod(s) + s[0]) for s in self.layer_shapes)
        self.register_buffer("coords", patch_coordinates(self.patch_grid), persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, a=0.1, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)
        for head, shape in zip(self.heads, self.layer_shapes):
            fan_in = math.prod(shape[1:])
            var = 2.0 / fan_in
            nn.init.normal_(head.weight, std=math.sqrt(0.5 * var / self.embed_dim))
            n_w = math.prod(shape)
            head.weight[n_w:].zero_()  # conv biases: no per-patch part at start
            head.bias.zero_()
            head.bias[:n_w].normal_(std=math.sqrt(0.5 * var))

    @torch.no_grad()
    def init_output_layer(self, bias=None, zero_weight: bool = False) -> None:
        """Set the generated output conv's bias (all patches) and/or zero its weight."""
        head = self.heads[-1]
        n_w = math.prod(self.layer_shapes[-1])
        if zero_weight:
            head.weight[:n_w].zero_()
            head.bias[:n_w].zero_()
        if bias is not None:
            head.weight[n_w:].zero_()
            head.bias[n_w:].fill_(float(bias))

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Patch embeddings ``(B, P, embed_dim)`` from bottleneck features ``(B, C, *S)``."""
        d = self.spatial_dims
        patch = _ADAPTIVE_AVG[d](features, self.patch_grid).flatten(2).transpose(1, 2)  # (B, P, C)
        glob = features.flatten(2).mean(dim=2, keepdim=True).transpose(1, 2).expand_as(patch)
        coords = self.coords.to(features.dtype).unsqueeze(0).expand(features.shape[0], -1, -1)
        return self.mlp(torch.cat([patch, glob, coords], dim=2))

    def forward(self, features: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Per decoder layer, ``(weight (B, P, O, C, *k), bias (B, P, O))``."""
        e = self.embed(features)
        b, n_p = e.shape[:2]
        out = []
        for head, shape in zip(self.heads, self.layer_shapes):
            flat = head(e)
            n_w = math.prod(shape)
            out.append((flat[..., :n_w].reshape(b, n_p, *shape), flat[..., n_w:]))
        return out


class HyperSegNet(nn.Module):
    """HyperSeg-style network: an encoder drives a hypernetwork that generates the decoder's weights per patch.

    Our implementation of the HyperSeg baseline of Ma et al. 2022 / journal extension (Nirkin et al., CVPR 2021);
    see the module docstring for the design and the simplifications versus the original.

    Args:
        spatial_dims: 2 (the papers') or 3 (1 works too).
        in_channels: input channels.
        out_channels: output channels (logits).
        channels: encoder widths: the first level's width (doubled per pooling, default 16 ->
            16, 32, 64, 128) or ``num_pools + 1`` widths, the last the bottleneck's.
        num_pools: number of max-poolings (default 3).
        decoder_channels: output width of the dynamic conv at each decoder level, finest first
            (``num_pools`` values; default half the encoder width of that level, at least 4).
        patch_grid: patches per spatial dimension (int or per dimension, default 4): the decoder
            uses ``prod(patch_grid)`` different kernels per layer and image.
        kernel_size: odd kernel size of the dynamic decoder convs (default 3).
        conv: conv type of the encoder's convs (``"conv"``, ``"hyper"``, ``"adaptive"`` or
            ``(name, kwargs)``); the decoder's convs are always the generated patch-wise ones.
        encoder_kernel_size: odd kernel size of the encoder convs (default 3).
        act, norm: MONAI activation / normalisation specs for encoder and decoder (default
            ReLU, batch norm; ``norm=None`` for none).
        hyper_hidden: hidden width of the hypernetwork's MLP (default 64).
        embed_dim: width of the per-patch embedding fed to the weight heads (default 12). The
            heads hold ``(embed_dim + 1)`` parameters per generated weight, most of the network:
            with the defaults (2-D, 1 input, 1 output channel) it has 1.19M parameters, close to
            the 1.2M of the papers' HyperSeg row.

    Example::

        net = HyperSegNet(spatial_dims=2, in_channels=1, out_channels=1)
        logits = net(torch.rand(2, 1, 64, 64))          # (2, 1, 64, 64)
        kernels = net.decoder_weights(torch.rand(1, 1, 64, 64))  # per layer, per patch
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Union[int, Sequence[int]] = 16,
        num_pools: int = 3,
        decoder_channels: Optional[Sequence[int]] = None,
        patch_grid: Union[int, Sequence[int]] = 4,
        kernel_size: Union[int, Sequence[int]] = 3,
        conv: ConvSpec = "conv",
        encoder_kernel_size: Union[int, Sequence[int]] = 3,
        act: ArgSpec = "relu",
        norm: ArgSpec = "batch",
        hyper_hidden: int = 64,
        embed_dim: int = 12,
    ) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels, self.out_channels = check_dims_and_channels(
            spatial_dims, in_channels, out_channels)
        d = self.spatial_dims
        self.num_pools = check_positive_int(num_pools, "num_pools")
        self.channels = resolve_channels(channels, num_pools)
        self.patch_grid = ensure_tuple_dims(patch_grid, d, "patch_grid")
        if any(g < 1 for g in self.patch_grid):
            raise ValueError(f"patch_grid must be positive, got {patch_grid!r}.")
        self.kernel_size = ensure_tuple_dims(kernel_size, d, "kernel_size")
        if any(k < 1 or k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size!r}.")
        if decoder_channels is None:
            decoder_channels = tuple(max(4, c // 2) for c in self.channels[:-1])
        dec = tuple(decoder_channels)
        if len(dec) != num_pools:
            raise ValueError(f"decoder_channels must give num_pools = {num_pools} widths (finest first), got {dec!r}.")
        for c in dec:
            check_positive_int(c, "decoder_channels")
        self.decoder_channels = dec
        get_conv_type(conv, d)  # fail early on an unknown conv type

        # ---- encoder (plain UNet contracting path, conv type selectable)
        common = dict(kernel_size=encoder_kernel_size, conv=conv, norm=norm, act=act)
        self.encoder = nn.ModuleList()
        cin = in_channels
        for c in self.channels:
            self.encoder.append(DoubleConv(d, cin, c, **common))
            cin = c
        self.pool = Pool[Pool.MAX, d](kernel_size=2, stride=2)

        # ---- decoder layer shapes (deepest level first), then the 1x1 classifier
        shapes: List[Tuple[int, ...]] = []
        prev = self.channels[-1]
        for lvl in reversed(range(num_pools)):
            shapes.append((dec[lvl], self.channels[lvl] + prev + d, *self.kernel_size))
            prev = dec[lvl]
        shapes.append((out_channels, prev, *([1] * d)))
        self.layer_shapes = shapes
        self.layer_names = [f"level{lvl}" for lvl in reversed(range(num_pools))] + ["head"]
        self.hypernet = PatchHyperNetwork(d, self.channels[-1], shapes, self.patch_grid, hyper_hidden, embed_dim)
        self.dec_post = nn.ModuleList()
        for lvl in reversed(range(num_pools)):
            post = nn.Sequential()
            if norm is not None:
                post.add_module("norm", get_norm_layer(name=norm, spatial_dims=d, channels=dec[lvl]))
            if act is not None:
                post.add_module("act", get_act_layer(name=act))
            self.dec_post.append(post)

    # ------------------------------------------------------------------ checks
    @property
    def size_multiple(self) -> Tuple[int, ...]:
        """Every spatial size must be a multiple of this: ``2**num_pools * patch_grid`` per dimension."""
        return tuple(2**self.num_pools * g for g in self.patch_grid)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear ``ValueError`` for a wrong rank, channel count or indivisible spatial size."""
        d, name = self.spatial_dims, type(self).__name__
        if x.dim() != d + 2:
            raise ValueError(f"{name} ({d}-D) expects a {d + 2}-D input (batch, channel, spatial...), got {tuple(x.shape)}.")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{name} expects {self.in_channels} input channels, got {x.shape[1]} (input {tuple(x.shape)}).")
        size = tuple(int(s) for s in x.shape[2:])
        mult = self.size_multiple
        if any(s % m for s, m in zip(size, mult)):
            raise ValueError(
                f"{name} with num_pools={self.num_pools} and patch_grid={self.patch_grid} needs every spatial size "
                f"divisible by 2**num_pools * patch_grid = {mult}; got spatial size {size}. Pad or crop the input "
                f"(e.g. monai.transforms.DivisiblePad(k={mult})) or change patch_grid."
            )

    # ------------------------------------------------------------------ forward
    def encode(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Encoder features of every level; the last is the bottleneck."""
        feats = []
        h = x
        for i, block in enumerate(self.encoder):
            h = block(h if i == 0 else self.pool(h))
            feats.append(h)
        return feats

    def decoder_weights(self, x: torch.Tensor) -> List[Dict[str, torch.Tensor]]:
        """The generated decoder kernels for input ``x``: one dict per dynamic layer (deepest first).

        Each has ``name``, ``weight`` ``(B, P, O, C, *k)`` and ``bias`` ``(B, P, O)``, with ``P``
        the patches in C order over ``patch_grid``.
        """
        self.check_input(x)
        gen = self.hypernet(self.encode(x)[-1])
        return [{"name": n, "weight": w, "bias": b} for n, (w, b) in zip(self.layer_names, gen)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        feats = self.encode(x)
        gen = self.hypernet(feats[-1])
        h = feats[-1]
        for i, lvl in enumerate(reversed(range(self.num_pools))):
            skip = feats[lvl]
            h = F.interpolate(h, size=skip.shape[2:], mode=_INTERP[self.spatial_dims], align_corners=False)
            h = torch.cat([skip, h], dim=1)
            h = torch.cat([h, _image_coordinates(h)], dim=1)
            w, b = gen[i]
            h = self.dec_post[i](patchwise_conv(h, w, b, self.patch_grid))
        w, b = gen[-1]
        return patchwise_conv(h, w, b, self.patch_grid)

    def init_output_layer(self, bias=None, zero_weight: bool = False) -> None:
        """Set the generated output conv's bias and/or zero its weight (see ``init_output_layer``)."""
        self.hypernet.init_output_layer(bias=bias, zero_weight=zero_weight)

    def rf_chain(self, path: str = "paper") -> List[nn.Module]:
        """For :func:`monai_hyperconv.networks.receptive_field`: every output sees all pixels
        (the hypernetwork pools the whole bottleneck), as the papers' Table 1 lists for HyperSeg."""
        if path not in ("paper", "bottleneck", "output"):
            raise ValueError(f"path must be 'paper', 'bottleneck' or 'output', got {path!r}.")
        chain: List[nn.Module] = []
        for i, block in enumerate(self.encoder):
            if i:
                chain.append(self.pool)
            chain.append(block)
        return chain + [self.hypernet]


register_network(
    "hyperseg", HyperSegNet,
    description="HyperSeg-style baseline (Nirkin et al. 2021; our implementation): encoder-driven patch-wise "
                "hypernetwork decoder (Ma et al. 2022, Table 1)",
)
