"""Small helpers shared across subpackages (no heavy imports here)."""

from __future__ import annotations

import os
import uuid
from typing import Callable, Sequence

__all__ = ["atomic_write", "as_bool", "check_spatial_dims", "check_positive_int", "check_dims_and_channels"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> str:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it onto ``path``.

    Readers never see a half-written file, and a failed write leaves any previous file intact and
    no temporary file behind. The temporary name keeps ``path``'s extension (writers such as
    ``savefig`` or ``torch.export.save`` look at it) and contains ``.tmp``.

    Returns:
        ``path`` as a string.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(path)
    # O_EXCL with mode 0o666 (minus the umask): unique like mkstemp, but normal file permissions
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp{os.path.splitext(name)[1]}")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def as_bool(value, name: str = "value") -> bool:
    """A boolean setting as given on a command line: ``True``/``False``, 0/1 or the strings
    true/false/yes/no/on/off/1/0 (any case). python-fire, MONAI's CLI parser, passes ``--resume true``
    as the string "true", and ``bool("false")`` would be True.

    Raises:
        ValueError: naming ``name`` for anything else.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be true or false, got {value!r}.")


def _or_list(values: Sequence) -> str:
    """``"1, 2 or 3"`` for ``(1, 2, 3)``."""
    v = [str(x) for x in values]
    return v[0] if len(v) == 1 else f"{', '.join(v[:-1])} or {v[-1]}"


def check_spatial_dims(spatial_dims, allowed: Sequence[int] = (1, 2, 3), name: str = "spatial_dims",
                       reason: str = "") -> int:
    """``spatial_dims`` as an int if it is one of ``allowed`` (a bool never is), else a ``ValueError``
    naming the argument and the value: ``"spatial_dims must be 1, 2 or 3, got 4."``.

    Args:
        spatial_dims: the value to check.
        allowed: the accepted numbers of spatial dimensions (default 1, 2 and 3).
        name: the argument's name in the message.
        reason: optional note after the allowed values, e.g. ``"MONAI Warp"``
            (``"spatial_dims must be 2 or 3 (MONAI Warp), got 1."``).
    """
    if isinstance(spatial_dims, bool) or spatial_dims not in tuple(allowed):
        note = f" ({reason})" if reason else ""
        raise ValueError(f"{name} must be {_or_list(tuple(allowed))}{note}, got {spatial_dims!r}.")
    return int(spatial_dims)


def check_positive_int(value, name: str) -> int:
    """``value`` if it is an int >= 1 (a bool never is), else ``ValueError("{name} must be a positive int, got ...")``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return value


def check_dims_and_channels(spatial_dims, in_channels, out_channels) -> tuple:
    """The checked ``(spatial_dims, in_channels, out_channels)`` of a network or layer constructor
    (:func:`check_spatial_dims`, then :func:`check_positive_int` for each channel count)."""
    return (check_spatial_dims(spatial_dims), check_positive_int(in_channels, "in_channels"),
            check_positive_int(out_channels, "out_channels"))
