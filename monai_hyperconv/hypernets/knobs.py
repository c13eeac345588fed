"""Hypernetworks conditioned on named scalar knobs (Gonzalez Ortiz et al. 2023; Hoopes et al. 2021/2022).

The scale-space hypernetwork predicts every primary weight from the rescaling factor ``phi``
(``theta = W h([phi, 1 - phi]) + theta_0``). HyperMorph (Hoopes et al. 2021, 2022) predicts them
from the regularisation weight ``lambda`` of the loss instead. This module generalises the input
side: a :class:`Knob` names one scalar with its range, its training prior and its encoding, and

* :class:`KnobHypernetwork` is the hypernetwork of one or more knobs (the concatenated encodings
  are the MLP input; the output head is :class:`~monai_hyperconv.hypernets.PhiHypernetwork`'s);
* :class:`KnobHyperUNet` is the scale-space UNet whose convs are all predicted from the knobs.
  A knob either changes the architecture (``phi``: the resize layers) or only the loss (``lam``):
  the network itself only reads ``phi``; any other knob acts through the weights alone.

``lambda`` is a Python keyword, so HyperMorph's knob is called ``lam``: ``net(x, lam=0.3)``,
``net.materialize(lam=0.3)``.
"""

from __future__ import annotations

import copy
import itertools
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..layers.convert import bake
from .predicted import PhiHypernetwork
from .sshn import ScaleSpaceHyperUNet
from .unet import MaterializedNetwork, accepts_old_width_depth_names

__all__ = ["Knob", "PHI", "LAM", "as_knobs", "KnobHypernetwork", "KnobHyperUNet"]

_ENCODINGS = ("complement", "linear", "log")


def _as_float(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, got {value!r}.")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{what} must be a single number (one per batch), got a tensor of shape {tuple(value.shape)}.")
        return float(value.detach().reshape(()).item())
    if isinstance(value, numbers.Real) or hasattr(value, "__float__"):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise ValueError(f"{what} must be a number, got {value!r}.")


@dataclass(frozen=True)
class Knob:
    """One scalar the hypernetwork is conditioned on.

    Args:
        name: keyword under which the value is passed (``net(x, lam=0.3)``); a Python identifier.
        low, high: the valid range ``[low, high]`` (``(low, high]`` when ``include_low=False``).
        prior: training prior: ``None`` (uniform on the range), a ``(low, high)`` uniform
            sub-range, or a callable ``(generator) -> float`` (its draws are range-checked).
        encoding: hypernetwork input for a value ``v``, with ``u = (v - low) / (high - low)``:
            ``"complement"`` ``[u, 1 - u]`` (default; for phi on [0, 1] this is the SSHN's
            ``[phi, 1 - phi]``), ``"linear"`` ``[u]``, ``"log"`` ``[w, 1 - w]`` with ``w`` the
            position of ``log v`` between ``log low`` and ``log high`` (needs ``low > 0``), or a
            callable ``v -> sequence of floats``.
        include_low: whether ``low`` itself is valid (phi = 0 is not: an undefined resize).
        architectural: the knob changes the network's architecture (only ``phi``, the resize
            factor, can) rather than only the loss.
        default: value used outside training when none is given (None: required there).
    """

    name: str
    low: float = 0.0
    high: float = 1.0
    prior: Union[None, Tuple[float, float], Callable[[Optional[torch.Generator]], float]] = None
    encoding: Union[str, Callable[[float], Sequence[float]]] = "complement"
    include_low: bool = True
    architectural: bool = False
    default: Optional[float] = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"Knob name must be a Python identifier (e.g. 'lam', not 'lambda'), got {self.name!r}.")
        if self.name == "lambda":
            raise ValueError("Knob name 'lambda' is a Python keyword; call the knob 'lam'.")
        lo, hi = _as_float(self.low, f"knob {self.name!r} low"), _as_float(self.high, f"knob {self.name!r} high")
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"knob {self.name!r}: need finite low < high, got low={self.low!r}, high={self.high!r}.")
        object.__setattr__(self, "low", lo)
        object.__setattr__(self, "high", hi)
        if self.architectural and self.name != "phi":
            raise ValueError(f"knob {self.name!r}: only 'phi' (the resize factor) can change the architecture.")
        if isinstance(self.encoding, str):
            if self.encoding not in _ENCODINGS:
                raise ValueError(f"knob {self.name!r}: encoding must be one of {_ENCODINGS} or a callable, "
                                 f"got {self.encoding!r}.")
            if self.encoding == "log" and lo <= 0:
                raise ValueError(f"knob {self.name!r}: the 'log' encoding needs low > 0, got low={lo!r}.")
        elif not callable(self.encoding):
            raise ValueError(f"knob {self.name!r}: encoding must be a string or a callable, got {self.encoding!r}.")
        if self.prior is not None and not callable(self.prior):
            try:
                plo, phi_ = (float(v) for v in self.prior)
            except (TypeError, ValueError):
                raise ValueError(f"knob {self.name!r}: prior must be None, a (low, high) pair or a callable, "
                                 f"got {self.prior!r}.") from None
            if not (lo <= plo < phi_ <= hi):
                raise ValueError(f"knob {self.name!r}: prior {self.prior!r} must satisfy "
                                 f"{lo:g} <= low < high <= {hi:g} (the knob's range).")
            object.__setattr__(self, "prior", (plo, phi_))
        if self.default is not None:
            object.__setattr__(self, "default", self.check(self.default))
        self.encode(self.high)  # a callable encoding must work (and sets the width)

    # ------------------------------------------------------------------------------------------
    @property
    def range_text(self) -> str:
        return f"{'[' if self.include_low else '('}{self.low:g}, {self.high:g}]"

    def check(self, value: Any) -> float:
        """``value`` as a float; raises ``ValueError`` naming the knob when it is not a number in range."""
        v = _as_float(value, f"knob {self.name!r}")
        ok = math.isfinite(v) and (self.low <= v if self.include_low else self.low < v) and v <= self.high
        if not ok:
            raise ValueError(f"knob {self.name!r} must be in {self.range_text}, got {v!r}.")
        return v

    def sample(self, generator: Optional[torch.Generator] = None) -> float:
        """A draw from the training prior (uniform draws are half-open at the low end: phi = 0 never comes)."""
        if callable(self.prior):
            return self.check(self.prior(generator))
        lo, hi = self.prior if self.prior is not None else (self.low, self.high)
        u = 1.0 - float(torch.rand((), generator=generator))  # in (0, 1]
        return lo + (hi - lo) * u

    def encode(self, value: float) -> List[float]:
        """The hypernetwork input features for ``value`` (not range-checked: :meth:`check` first)."""
        if callable(self.encoding):
            out = [float(f) for f in self.encoding(value)]
            if not out:
                raise ValueError(f"knob {self.name!r}: the encoding returned no features.")
            return out
        if self.encoding == "log":
            u = (math.log(max(value, 1e-300)) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        else:
            u = (value - self.low) / (self.high - self.low)
        return [u] if self.encoding == "linear" else [u, 1.0 - u]

    @property
    def width(self) -> int:
        """Number of encoded features."""
        return len(self.encode(self.high))

    def grid(self, n: int) -> List[float]:
        """``n`` evenly spaced values over the range (ends included; used to calibrate the hypernetwork)."""
        return [self.low + (self.high - self.low) * i / max(n - 1, 1) for i in range(n)]


#: the scale-space rescaling factor (Gonzalez Ortiz et al. 2023): (0, 1], prior U(0, 0.5), [phi, 1 - phi]
PHI = Knob("phi", 0.0, 1.0, prior=(0.0, 0.5), include_low=False, architectural=True)
#: HyperMorph's regularisation weight lambda (Hoopes et al. 2021): [0, 1], prior U(0, 1)
LAM = Knob("lam", 0.0, 1.0)
_PRESETS = {"phi": PHI, "lam": LAM}


def as_knobs(spec: Union[str, Knob, Mapping, Sequence[Union[str, Knob, Mapping]]]) -> Tuple[Knob, ...]:
    """Knobs from names (``"phi"``, ``"lam"``: the presets :data:`PHI`, :data:`LAM`), :class:`Knob` objects
    or dicts of :class:`Knob` fields (as bundle configs write them; a dict naming a preset overrides its
    fields, e.g. ``{"name": "lam", "prior": [0, 0.5]}``).

    Raises:
        ValueError: no knob, an unknown preset name, or a name given twice.
    """
    items = [spec] if isinstance(spec, (str, Knob, Mapping)) else list(spec)
    if not items:
        raise ValueError("knobs must name at least one knob (e.g. ['lam']).")
    out: List[Knob] = []
    for it in items:
        if isinstance(it, Knob):
            k = it
        elif isinstance(it, str):
            if it not in _PRESETS:
                raise ValueError(f"unknown knob {it!r}: presets are {sorted(_PRESETS)}; define others with Knob(...).")
            k = _PRESETS[it]
        elif isinstance(it, Mapping):
            d = dict(it)
            if "name" not in d:
                raise ValueError(f"a knob dict needs a 'name', got {it!r}.")
            base = _PRESETS.get(d["name"])
            if base is not None:
                fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
                fields.update(d)
                d = fields
            k = Knob(**d)
        else:
            raise ValueError(f"a knob must be a name, a Knob or a dict, got {it!r}.")
        if any(k.name == o.name for o in out):
            raise ValueError(f"knob {k.name!r} is given twice.")
        out.append(k)
    return tuple(out)


def resolve_knob_values(knobs: Sequence[Knob], given: Mapping[str, Any], training: bool,
                        generator: Optional[torch.Generator] = None) -> Dict[str, float]:
    """The knob values a forward pass uses: each given value (range-checked); else, in training, a
    draw from its prior; else its default; else an error.

    Raises:
        ValueError: an unknown knob name, a value out of range, or a missing value outside training.
    """
    names = [k.name for k in knobs]
    unknown = [n for n, v in given.items() if n not in names and v is not None]
    if unknown:
        hint = " (Python reserves 'lambda': pass lam=...)" if "lambda" in unknown else ""
        raise ValueError(f"unknown knob(s) {unknown}{hint}; this network's knobs are {names}.")
    out: Dict[str, float] = {}
    for k in knobs:
        v = given.get(k.name)
        if v is not None:
            out[k.name] = k.check(v)
        elif training:
            out[k.name] = k.sample(generator)
        elif k.default is not None:
            out[k.name] = k.default
        else:
            raise ValueError(
                f"knob {k.name!r} is required in evaluation mode (it is drawn from its prior only in training): "
                f"call the network with {k.name}=<value in {k.range_text}>, or call .train()."
            )
    return out


class KnobHypernetwork(PhiHypernetwork):
    """``theta(knobs) = W h(concat_k encode_k(v_k)) + theta_0``: :class:`PhiHypernetwork` with named knobs as input.

    With the single knob :data:`PHI` it is the SSHN's hypernetwork (input ``[phi, 1 - phi]``). The
    constant feature scale and the initial output scale are averaged over a grid spanning every
    knob's range (``~33`` points in all).

    Args:
        out_features: number of predicted values.
        knobs: knob names / :class:`Knob` objects / dicts (see :func:`as_knobs`).
        hidden, act, init_scale, **kwargs: as :class:`PhiHypernetwork`.
    """

    def __init__(self, out_features: int, knobs=("lam",), hidden: Sequence[int] = (10, 100),
                 act: Union[str, tuple] = ("leakyrelu", {"negative_slope": 0.01}), init_scale: float = 0.1,
                 **kwargs) -> None:
        self.knobs = as_knobs(knobs)  # before PhiHypernetwork.__init__, which reads the input width
        super().__init__(out_features, hidden=hidden, act=act, init_scale=init_scale, **kwargs)

    @property
    def knob_names(self) -> Tuple[str, ...]:
        return tuple(k.name for k in self.knobs)

    def _input_width(self) -> int:
        return sum(k.width for k in self.knobs)

    def _grid_values(self) -> List[Dict[str, float]]:
        n = max(2, round(33 ** (1.0 / len(self.knobs))))
        return [dict(zip(self.knob_names, vals)) for vals in itertools.product(*(k.grid(n) for k in self.knobs))]

    def _encode_values(self, values: Mapping[str, float]) -> List[float]:
        return [f for k in self.knobs for f in k.encode(values[k.name])]

    def _calibration_inputs(self) -> List[torch.Tensor]:
        return [torch.tensor(self._encode_values(v)) for v in self._grid_values()]

    def _feature_energy(self) -> torch.Tensor:
        w = self.out.bias  # every head (full, low-rank, chunked) has theta_0 as its bias
        feats = [self.body(x.to(device=w.device, dtype=w.dtype)) * self.feature_scale for x in self._calibration_inputs()]
        return torch.stack([f.pow(2).sum() for f in feats]).mean().clamp_min(1e-12)

    def check_values(self, values: Union[Mapping[str, Any], float]) -> Dict[str, float]:
        """Every knob present, known and in range; a bare number stands for the single knob."""
        if not isinstance(values, Mapping):
            if len(self.knobs) != 1:
                raise ValueError(f"this hypernetwork has knobs {list(self.knob_names)}: pass a dict of values.")
            values = {self.knobs[0].name: values}
        unknown = [n for n in values if n not in self.knob_names]
        if unknown:
            raise ValueError(f"unknown knob(s) {unknown}; this hypernetwork's knobs are {list(self.knob_names)}.")
        missing = [n for n in self.knob_names if values.get(n) is None]
        if missing:
            raise ValueError(f"knob(s) {missing} missing: this hypernetwork needs {list(self.knob_names)}.")
        return {k.name: k.check(values[k.name]) for k in self.knobs}

    def encode(self, values: Union[Mapping[str, Any], float]) -> torch.Tensor:  # type: ignore[override]
        """The concatenated knob encodings (validated) on this network's device and dtype."""
        w = self.out.bias
        return torch.tensor(self._encode_values(self.check_values(values)), device=w.device, dtype=w.dtype)

    def extra_repr(self) -> str:
        return f"knobs={list(self.knob_names)}, " + super().extra_repr()


class KnobHyperUNet(ScaleSpaceHyperUNet):
    """A scale-space UNet whose every conv weight is predicted from named knobs (generalised SSHN).

    ``forward(x, **knobs)``: each knob is the given value, else a prior draw in training, else its
    default, else an error. ``phi`` (when it is a knob) sets the resize factor; otherwise the
    resize layers use the fixed ``phi``. :meth:`materialize` ``(**knobs)`` returns the plain network.
    With ``knobs=("phi",)`` it computes the same function as :class:`ScaleSpaceHyperUNet`.

    Args:
        spatial_dims, in_channels, out_channels, channels, num_pools, convs_per_stage, kernel_size, act,
            norm, hyper_hidden, hyper_act, hyper_init_scale, mode: as :class:`ScaleSpaceHyperUNet`.
        knobs: knob names / :class:`Knob` objects / dicts (see :func:`as_knobs`; default ``("lam",)``).
        hyper_head, hyper_rank, hyper_chunk_size: the hypernetwork's output head, as :class:`ScaleSpaceHyperUNet`.
        phi: the fixed resize factor when ``phi`` is not a knob (default 0.5: a 2x down-sampling per
            stage, a VoxelMorph UNet's); must be None when it is.
    """

    @accepts_old_width_depth_names
    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        knobs=("lam",),
        channels: Union[int, Sequence[int]] = 32,
        num_pools: int = 4,
        convs_per_stage: int = 2,
        kernel_size: int = 3,
        act: Union[str, tuple] = ("leakyrelu", {"negative_slope": 0.2}),
        norm: Optional[Union[str, tuple]] = None,
        hyper_hidden: Sequence[int] = (10, 100),
        hyper_act: Union[str, tuple] = ("leakyrelu", {"negative_slope": 0.01}),
        hyper_init_scale: float = 0.1,
        phi: Optional[float] = 0.5,
        mode: str = "linear",
        hyper_head: str = "full",
        hyper_rank: Optional[int] = None,
        hyper_chunk_size: Optional[int] = None,
    ) -> None:
        knobs = as_knobs(knobs)
        names = [k.name for k in knobs]
        if "phi" in names and phi is not None:
            raise ValueError("phi is a knob of this network: set its default on the knob "
                             "(e.g. {'name': 'phi', 'default': 0.5}), not the fixed phi argument.")
        if "phi" not in names and phi is None:
            raise ValueError("phi (the fixed resize factor) is required when 'phi' is not a knob.")
        self._knob_spec = knobs  # read by _make_hypernetwork while the SSHN builds its hypernetwork
        super().__init__(
            spatial_dims, in_channels, out_channels, channels=channels, num_pools=num_pools,
            convs_per_stage=convs_per_stage, kernel_size=kernel_size, act=act, norm=norm, hyper_hidden=hyper_hidden,
            hyper_act=hyper_act, hyper_init_scale=hyper_init_scale, phi=phi, phi_prior=None, mode=mode,
            hyper_head=hyper_head, hyper_rank=hyper_rank, hyper_chunk_size=hyper_chunk_size,
        )

    def _make_hypernetwork(self, out_features: int, **kwargs) -> "KnobHypernetwork":
        """A hypernetwork of the knobs (same output layout as the SSHN's of phi)."""
        return KnobHypernetwork(out_features, self._knob_spec, **kwargs)

    @property
    def knobs(self) -> Tuple[Knob, ...]:
        return self.hyper.knobs

    @property
    def knob_names(self) -> Tuple[str, ...]:
        return self.hyper.knob_names

    @property
    def accepts_phi(self) -> bool:  # type: ignore[override]
        return "phi" in self.knob_names

    def resolve_knobs(self, **knobs) -> Dict[str, float]:
        """The knob values ``forward`` would use (see the class docstring)."""
        return resolve_knob_values(self.knobs, knobs, self.training)

    def resolve_phi(self, phi=None) -> float:
        """The resize factor ``forward`` would use: the phi knob's value, or the fixed ``phi``."""
        if "phi" in self.knob_names:
            return resolve_knob_values([k for k in self.knobs if k.name == "phi"], {"phi": phi}, self.training)["phi"]
        if phi is not None:
            raise ValueError(f"phi is not a knob of this network (knobs: {list(self.knob_names)}); "
                             f"its resize factor is fixed at {self.phi}.")
        return self.phi

    def sample_knobs(self, generator: Optional[torch.Generator] = None) -> Dict[str, float]:
        """One draw of every knob from its training prior."""
        return {k.name: k.sample(generator) for k in self.knobs}

    def theta(self, **knobs) -> torch.Tensor:  # type: ignore[override]
        """The flat hypernetwork output for the given knob values (all required, range-checked)."""
        return self.hyper(knobs)

    def _phi_of(self, values: Mapping[str, float]) -> float:
        return values["phi"] if "phi" in values else self.phi

    def forward(self, x: torch.Tensor, **knobs) -> torch.Tensor:  # type: ignore[override]
        """Args: x ``(B, in_channels, *spatial)``; one keyword per knob (e.g. ``lam=0.3``).
        Returns: ``(B, out_channels, *spatial)``."""
        values = self.resolve_knobs(**knobs)
        with self._slot.bind(self.hyper(values)):
            return self.primary(x, phi=self._phi_of(values))

    @torch.no_grad()
    def materialize(self, **knobs) -> MaterializedNetwork:  # type: ignore[override]
        """The deployable plain network for the given knob values (defaults fill in missing ones).

        Returns an ordinary module ``forward(x)`` in eval mode, equal to ``self(x, **knobs)`` up to
        float rounding; its ``knobs`` attribute records the values.
        """
        values = resolve_knob_values(self.knobs, knobs, training=False)
        theta = self.hyper(values)
        primary = copy.deepcopy(self.primary, {id(self._slot): self._slot})
        with self._slot.bind(theta):
            baked = bake(primary, inplace=True)
        p = self._phi_of(values)
        baked.phi, baked.phi_prior = p, None
        mat = MaterializedNetwork(baked, p).eval()
        mat.knobs = dict(values)
        return mat

    def extra_repr(self) -> str:
        return f"num_primary_params={self.num_primary_params}, knobs={list(self.knob_names)}, phi={self.phi}"
