"""Small helpers shared across subpackages (no heavy imports here)."""

from __future__ import annotations

import os
import uuid
from typing import Callable

__all__ = ["atomic_write", "as_bool"]


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
