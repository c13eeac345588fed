"""Where the bundles and the Auto3DSeg templates are, and copying one to a folder to work in.

A wheel ships the repository's ``bundles/<name>/`` as ``monai_hyperconv/_bundles/<name>/`` (package
data, see ``setup.py``); a checkout (``pip install -e .`` or ``PYTHONPATH``) has them in
``<repository>/bundles/``. :func:`bundles_root` returns the first of the two that exists, so the
comparison runner, the Auto3DSeg templates and the tests find the same files either way.

site-packages is no place to train in (a bundle writes ``models/``, ``logs/``, ``eval/`` and its
demo data under ``bundle_root``): ``python -m monai_hyperconv.bundle init NAME --out DIR`` (or
:func:`init_bundle`) copies a bundle to a writable folder first.

Each bundle's ``configs/metadata.json`` names the package versions it works with
(``required_packages_version["monai-hyperconv"]``, a PEP 440 range such as ``">=0.1.0,<0.2"``);
:func:`check_bundle_version` compares it with the installed ``monai_hyperconv.__version__``.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path

from .._version import __version__

__all__ = ["PACKAGE_NAME", "TEMPLATES", "bundles_root", "list_bundles", "bundle_path", "templates_path",
           "init_bundle", "required_version", "check_bundle_version"]

#: the distribution name under which bundles list this package in ``required_packages_version``
PACKAGE_NAME = "monai-hyperconv"
#: folder of the Auto3DSeg bring-your-own-algorithm templates (not a MONAI bundle itself)
TEMPLATES = "auto3dseg"
#: what a bundle run writes under its ``bundle_root`` (and ``.gitignore`` keeps out of git): never copied
RUN_OUTPUTS = ("data", "models", "logs", "eval", "runs", "predictions", "outputs", "previous_runs", "auto3dseg_work",
               "__pycache__")


def _packaged() -> Path | None:
    """``monai_hyperconv/_bundles`` of an installed wheel, or None (a checkout has none)."""
    try:
        p = resources.files("monai_hyperconv") / "_bundles"
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - the package itself is importable here
        return None
    return Path(os.fspath(p)) if isinstance(p, os.PathLike) and p.is_dir() else None


def bundles_root() -> Path:
    """The folder holding the bundles: the wheel's packaged copy, else the checkout's ``bundles/``.

    Returns:
        an absolute path (``.../site-packages/monai_hyperconv/_bundles`` or ``<repository>/bundles``).

    Raises:
        FileNotFoundError: naming both places when neither exists (e.g. a wheel built without package data).
    """
    packaged = _packaged()
    if packaged is not None:
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "bundles"
    if checkout.is_dir():
        return checkout
    pkg = Path(__file__).resolve().parents[1]
    raise FileNotFoundError(
        f"no bundles found: neither the packaged copy {pkg / '_bundles'} (a wheel of monai-hyperconv) nor a "
        f"repository checkout's {checkout} exists; reinstall the package from a wheel built with its package data."
    )


def list_bundles(templates: bool = False) -> list[str]:
    """Names of the MONAI bundles (folders with ``configs/metadata.json``), sorted.

    Args:
        templates: also list :data:`TEMPLATES` (the Auto3DSeg templates folder, which :func:`init_bundle`
            copies too).
    """
    root = bundles_root()
    names = sorted(p.name for p in root.iterdir() if (p / "configs" / "metadata.json").is_file())
    if templates and (root / TEMPLATES).is_dir():
        names.append(TEMPLATES)
    return names


def bundle_path(name: str) -> Path:
    """The folder of the bundle (or of :data:`TEMPLATES`) called ``name`` (read-only when installed).

    Raises:
        KeyError: ``name`` is not a shipped bundle; the message lists the names.
    """
    names = list_bundles(templates=True)
    if name not in names:
        raise KeyError(f"unknown bundle {name!r}; the shipped bundles are: {', '.join(names)}.")
    return bundles_root() / name


def templates_path() -> Path:
    """The Auto3DSeg templates folder (``bundles/auto3dseg``; ``templates_path_or_url`` of ``BundleGen``)."""
    return bundles_root() / TEMPLATES


def init_bundle(name: str, out: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Copy a shipped bundle (or the Auto3DSeg templates) to a writable folder to train, evaluate and export in.

    Args:
        name: a name of :func:`list_bundles` (``templates=True``).
        out: destination folder (default ``./<name>``); created with its parents.
        overwrite: allow an existing non-empty ``out``: the bundle's files are replaced, other files
            there (an earlier run's ``models/``, ``data/`` ...) are kept.

    Returns:
        the absolute destination folder.

    Raises:
        KeyError: unknown ``name`` (the message lists the shipped names).
        FileExistsError: ``out`` is a non-empty folder (or a file) and ``overwrite`` is False.
    """
    src = bundle_path(name)
    dst = Path(out if out is not None else name).expanduser().resolve()
    if dst == src.resolve() or src.resolve() in dst.parents:
        raise ValueError(f"--out {dst} is inside the shipped bundle {src}; choose a folder outside it.")
    if dst.exists() and not dst.is_dir():
        raise FileExistsError(f"--out {dst} is a file, not a folder.")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {dst} exists and is not empty; choose another folder or pass --overwrite "
                              "(replaces the bundle's files, keeps the rest).")
    # plain copies (not copy2): files from a read-only site-packages become writable configs
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*RUN_OUTPUTS, "*.pyc"), copy_function=shutil.copyfile,
                    dirs_exist_ok=True)
    return dst


def required_version(bundle_dir: str | os.PathLike) -> str:
    """The version range of this package that a bundle's ``configs/metadata.json`` names.

    Raises:
        FileNotFoundError / KeyError: no metadata file, or no ``required_packages_version["monai-hyperconv"]``.
    """
    meta_file = Path(bundle_dir) / "configs" / "metadata.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{meta_file}: no bundle metadata.")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    try:
        return str(meta["required_packages_version"][PACKAGE_NAME])
    except (KeyError, TypeError):
        raise KeyError(f"{meta_file}: required_packages_version has no {PACKAGE_NAME!r} entry.") from None


def check_bundle_version(bundle_dir: str | os.PathLike, version: str | None = None) -> str:
    """Check that ``version`` (default: the installed ``monai_hyperconv.__version__``) is in the bundle's range.

    Returns:
        the range (e.g. ``">=0.1.0,<0.2"``); a bare version such as ``"0.1.0"`` means ``==0.1.0``.

    Raises:
        ValueError: the range is not a PEP 440 specifier, or excludes ``version`` (names both and the file).
    """
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import Version

    spec_text = required_version(bundle_dir)
    text = spec_text if spec_text[:1] in "<>=!~" else f"=={spec_text}"
    try:
        spec = SpecifierSet(text)
    except InvalidSpecifier:
        raise ValueError(f"{Path(bundle_dir) / 'configs' / 'metadata.json'}: required_packages_version"
                         f"[{PACKAGE_NAME!r}] = {spec_text!r} is not a version range such as '>=0.1.0,<0.2'.") from None
    have = version or __version__
    if not spec.contains(Version(have), prereleases=True):
        raise ValueError(f"bundle {bundle_dir} needs {PACKAGE_NAME} {spec_text}, but version {have} is installed; "
                         f"install a matching version or copy the bundle shipped with this one "
                         f"(python -m monai_hyperconv.bundle init NAME --out DIR).")
    return spec_text
