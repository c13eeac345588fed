"""Export a trained network as a plain (baked) model that runs without ``monai_hyperconv``.

``export_baked(network, ckpt_file, filepath, input_shape)`` loads the weights, reduces every
generated-kernel conv to an ``nn.ConvNd`` (:func:`monai_hyperconv.bake`), checks the baked
model against the original on a random input, and saves it atomically as a ``torch.export``
program (``.pt2``, ``torch.export.load``; the bundles' default), as ONNX (``.onnx``, the route to
TensorRT; checked against PyTorch with onnxruntime when installed, else with ONNX's reference
evaluator) or as TorchScript (``.ts``, ``torch.jit.load``; what model-zoo's ``ckpt_export`` writes).
:func:`run_exported_model` runs any of the three in a process that cannot import this package.
It also writes the baked ``state_dict`` next to it (``<stem>_weights.pt``), which MONAI's
``ckpt_export`` can load into ``$monai_hyperconv.bake(@network_def)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any
from pathlib import Path

import torch

from ..utils import atomic_write
from .checkpoint import atomic_save, unwrap

__all__ = ["load_weights", "bake_checkpoint", "export_baked", "save_onnx", "run_onnx", "run_exported_model"]

logger = logging.getLogger(__name__)

def load_weights(network: torch.nn.Module, ckpt_file: str | os.PathLike, key: str | None = None, strict: bool = True) -> torch.nn.Module:
    """Load a checkpoint into ``network``: a plain ``state_dict`` (``model.pt``), a nested one
    (``{"network": ...}`` from ``checkpoint_last.pt``, ``{"model": ...}``) or one saved from a
    DDP model (``module.`` prefixes are stripped).

    With ``strict``, weights that do not fit raise
    :class:`~monai_hyperconv.bundle.network_def.NetworkDefMismatchError` naming the saved and the
    configured network definitions."""
    from .network_def import _load, check_network_def, read_state_dict

    ckpt = _load(ckpt_file)
    if strict:
        check_network_def(network, ckpt_file, ckpt=ckpt, key=key)
    unwrap(network).load_state_dict(read_state_dict(ckpt, key), strict=strict)
    return network


def bake_checkpoint(network: torch.nn.Module, ckpt_file: str | os.PathLike | None = None, key: str | None = None) -> torch.nn.Module:
    """Load ``ckpt_file`` (if given) into ``network`` and return the baked copy in eval mode."""
    from ..layers import bake

    net = unwrap(network)
    if ckpt_file is not None:
        load_weights(net, ckpt_file, key)
    return bake(net).eval()


def _max_diff(a, b) -> float:
    """Largest absolute difference of two outputs (tensors, or tuples/lists of tensors)."""
    if isinstance(a, (tuple, list)):
        return max(_max_diff(x, y) for x, y in zip(a, b))
    return float((a - b).abs().max().item())


#: file suffix -> export method
SUFFIX_METHODS = {".pt2": "export", ".onnx": "onnx", ".ts": "torchscript", ".pt": "torchscript"}
METHODS = ("export", "onnx", "torchscript")


def _onnx_names(prefix: str, n: int) -> list[str]:
    return [prefix] if n == 1 else [f"{prefix}{i}" for i in range(n)]


def save_onnx(model: torch.nn.Module, inputs: Sequence[torch.Tensor], filepath: str | os.PathLike,
              opset: int = 17, dynamic_batch: bool = False) -> str:
    """Export ``model`` (plain PyTorch layers) to ONNX atomically with the TorchScript-based exporter
    (``torch.onnx.export(..., dynamo=False)``, which needs neither ``onnxscript`` nor a network);
    then ``onnx.checker`` checks the file.

    Inputs are named ``input`` (``input0``, ``input1``, ... for several), outputs ``output`` (or
    ``output0``, ...). ``dynamic_batch`` makes dimension 0 of every input and output symbolic.
    """
    import onnx

    n_in = len(inputs)
    with torch.no_grad():
        ref = model(*inputs)
    n_out = len(ref) if isinstance(ref, (tuple, list)) else 1
    in_names, out_names = _onnx_names("input", n_in), _onnx_names("output", n_out)
    axes = {n: {0: "batch"} for n in in_names + out_names} if dynamic_batch else None

    def _write(tmp: str) -> None:
        torch.onnx.export(model, tuple(inputs), tmp, dynamo=False, opset_version=int(opset), input_names=in_names,
                          output_names=out_names, dynamic_axes=axes, do_constant_folding=True)
        onnx.checker.check_model(tmp)

    return atomic_write(filepath, _write)


def run_onnx(filepath: str | os.PathLike, *inputs: Any, engine: str = "auto") -> list:
    """Run an ONNX file on numpy/tensor inputs; returns the outputs as numpy arrays.

    Args:
        engine: "onnxruntime", "reference" (``onnx.reference.ReferenceEvaluator``, pure numpy, slow)
            or "auto" (onnxruntime when installed, else the reference evaluator).
    """
    import numpy as np

    arrays = [np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float32) for x in inputs]
    if engine not in ("auto", "onnxruntime", "reference"):
        raise ValueError(f"engine must be 'auto', 'onnxruntime' or 'reference', got {engine!r}.")
    if engine in ("auto", "onnxruntime"):
        try:
            import onnxruntime as ort
        except ImportError:
            if engine == "onnxruntime":
                raise
        else:
            sess = ort.InferenceSession(str(filepath), providers=["CPUExecutionProvider"])
            names = [i.name for i in sess.get_inputs()]
            return sess.run(None, dict(zip(names, arrays)))
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(filepath))
    names = [i.name for i in model.graph.input]
    return ReferenceEvaluator(model).run(None, dict(zip(names, arrays)))


def _as_list(out: Any) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def export_baked(
    network: torch.nn.Module,
    ckpt_file: str | os.PathLike | None,
    filepath: str | os.PathLike,
    input_shape: Sequence[int],
    method: str | None = None,
    key: str | None = None,
    atol: float = 1e-4,
    device: str | torch.device = "cpu",
    opset: int = 17,
    verify_onnx: str | bool = "auto",
    dynamic_batch: bool = False,
) -> str:
    """Bake ``network`` (with ``ckpt_file``'s weights) and save it as a self-contained model.

    Args:
        network: the (hyper/adaptive) network as built by the bundle's ``network_def``.
        ckpt_file: weights (``models/model.pt`` or ``models/checkpoint_last.pt``); None: as is.
        filepath: output; ``.pt2`` -> ``torch.export``, ``.onnx`` -> ONNX, ``.ts``/``.pt`` ->
            TorchScript (traced).
        input_shape: example input shape incl. batch, e.g. ``[1, 1, 256, 256]``, or a list of shapes
            for a network of several inputs (registration: ``[moving_shape, fixed_shape]``).
        method: "export", "onnx" or "torchscript"; default from the suffix.
        key: checkpoint key of the weights (auto-detected if None).
        atol: max abs difference allowed between the baked export and the original network.
        device: device for tracing (the saved model is mapped to CPU on load by default).
        opset: ONNX opset version.
        verify_onnx: how the ONNX file is checked against PyTorch: "auto" (onnxruntime when
            installed, else ``onnx.reference.ReferenceEvaluator``), "onnxruntime", "reference",
            or False (only ``onnx.checker``).
        dynamic_batch: ONNX only: a symbolic batch dimension (the traced spatial sizes stay fixed).

    Returns:
        the written path.
    """
    out = Path(filepath)
    method = method or SUFFIX_METHODS.get(out.suffix.lower())
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} (or a file suffix among {sorted(SUFFIX_METHODS)}), "
                         f"got {method!r} for {out}.")
    shapes = list(input_shape)
    if not (shapes and isinstance(shapes[0], (list, tuple))):
        shapes = [shapes]  # one input
    net = unwrap(network).to(device)
    if ckpt_file is not None:
        load_weights(net, ckpt_file, key)
    net.eval()
    baked = bake_checkpoint(net).to(device)
    xs = tuple(torch.rand(*[int(v) for v in s], device=device) for s in shapes)
    with torch.no_grad():
        ref = net(*xs)
        err = _max_diff(ref, baked(*xs))
        if err > atol:
            raise RuntimeError(f"baked network differs from the original by {err:.2e} > {atol}.")
        if method == "torchscript":
            mod = torch.jit.trace(baked, xs, check_trace=False)
            atomic_write(out, lambda p: torch.jit.save(mod, p))
            err2 = _max_diff(ref, torch.jit.load(str(out), map_location=device)(*xs))
        elif method == "export":
            ep = torch.export.export(baked, xs)
            atomic_write(out, lambda p: torch.export.save(ep, p))
            err2 = _max_diff(ref, torch.export.load(str(out)).module()(*xs))
        else:
            save_onnx(baked.cpu(), tuple(x.cpu() for x in xs), out, opset=opset, dynamic_batch=dynamic_batch)
            baked.to(device)
            if verify_onnx is False or str(verify_onnx).lower() == "false":
                err2 = 0.0
                logger.info(f"{out}: ONNX numerics not verified (verify_onnx false).")
            else:
                got = run_onnx(out, *xs, engine="auto" if verify_onnx is True else str(verify_onnx))
                err2 = max(float(abs(torch.as_tensor(g) - r.cpu()).max()) for g, r in zip(got, _as_list(ref)))
    if err2 > atol:
        raise RuntimeError(f"exported model {out} ({method}) differs from the original by {err2:.2e} > {atol}.")
    atomic_save(baked.cpu().state_dict(), out.with_name(out.stem + "_weights.pt"))
    logger.info(f"exported baked network to {out} ({method}; max abs diff {err2:.1e})")
    return str(out)


_RUN_WITHOUT_PACKAGE = """
import sys
sys.modules["monai_hyperconv"] = None  # any import of the package now fails
import torch
path, in_path, out_path = sys.argv[1:4]
xs = torch.load(in_path)
if path.endswith(".onnx"):
    import numpy as np
    try:
        import onnxruntime as ort
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        outs = sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), xs)})
    except ImportError:
        import onnx
        from onnx.reference import ReferenceEvaluator
        m = onnx.load(path)
        outs = ReferenceEvaluator(m).run(None, {i.name: x.numpy() for i, x in zip(m.graph.input, xs)})
    out = tuple(torch.from_numpy(np.asarray(o)) for o in outs)
    out = out[0] if len(out) == 1 else out
else:
    m = torch.export.load(path).module() if path.endswith(".pt2") else torch.jit.load(path)
    with torch.no_grad():
        out = m(*xs)
torch.save(out, out_path)
"""


def run_exported_model(model_path: str | os.PathLike, *inputs: torch.Tensor, workdir: str | os.PathLike,
                       timeout: float = 1800) -> Any:
    """Load and run an exported model (``.pt2``, ``.onnx`` or TorchScript ``.ts``) in a fresh Python process
    that cannot import ``monai_hyperconv`` (ONNX: onnxruntime when installed, else ONNX's reference
    evaluator); returns its output (a tensor or a tuple of tensors).

    Raises:
        RuntimeError: with the subprocess's stderr tail when it fails.
    """
    import subprocess
    import sys

    from .testing import no_package_env

    workdir = Path(workdir)
    in_path, out_path = workdir / "_exported_inputs.pt", workdir / "_exported_outputs.pt"
    torch.save([x.detach().cpu() for x in inputs], in_path)
    p = subprocess.run([sys.executable, "-c", _RUN_WITHOUT_PACKAGE, os.fspath(model_path), str(in_path), str(out_path)],
                       cwd=str(workdir), env=no_package_env(), capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"exported model {model_path} failed in a process without monai_hyperconv:\n{p.stderr[-4000:]}")
    return torch.load(out_path)
