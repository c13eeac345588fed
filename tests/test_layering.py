"""The package's layers import downwards only (docs/architecture.md).

``layers`` <- ``networks`` <- ``hypernets`` <- ``bundle`` <- ``compare`` <- ``experiments``; ``transforms``, ``losses``,
``metrics`` and ``data`` sit beside ``layers`` and import no network, hypernetwork or bundle code;
``utils`` imports nothing of the package; ``experiments`` (the scripts' experiment logic) is the top and no
package module imports it. Every import counts, including those inside functions
(a lazy import still makes the lower layer depend on the higher one).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "monai_hyperconv"

#: layer -> rank; a module may import its own layer and lower ranks only
RANK = {"utils": 0, "layers": 1, "transforms": 1, "losses": 1, "metrics": 1, "data": 1,
        "networks": 2, "hypernets": 3, "bundle": 4, "compare": 5, "experiments": 6}


def _layer(parts: tuple[str, ...]) -> str:
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def imported_layers(path: Path, pkg: Path = PKG) -> list[tuple[int, str]]:
    """(line, layer) of every ``monai_hyperconv`` layer that ``path`` imports (absolute or relative)."""
    rel = path.relative_to(pkg).parts
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[list[str]] = []
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if (node.module or "").split(".")[0] == "monai_hyperconv":
                    names.append(node.module.split(".")[1:] or [a.name for a in node.names][:1])
            else:
                base = list(rel[:-1])[: len(rel) - node.level] if node.level > 1 else list(rel[:-1])
                mod = [m for m in (node.module or "").split(".") if m]
                full = base + mod
                names.append(full if full else [a.name for a in node.names][:1])
        elif isinstance(node, ast.Import):
            names += [a.name.split(".")[1:] for a in node.names if a.name.split(".")[0] == "monai_hyperconv"]
        for n in names:
            if n and n[0].removesuffix(".py") in RANK:
                out.append((node.lineno, n[0]))
    return out


def violations(pkg: Path = PKG) -> list[str]:
    bad = []
    for f in sorted(pkg.rglob("*.py")):
        me = _layer(f.relative_to(pkg).parts)
        if me not in RANK:
            continue
        for line, tgt in imported_layers(f, pkg):
            if tgt != me and RANK[tgt] > RANK[me]:
                bad.append(f"{f.relative_to(pkg.parent)}:{line}: {me} imports {tgt}")
    return bad


def test_layers_import_downwards_only():
    assert violations() == []


def test_every_subpackage_has_a_layer():
    subs = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert subs <= set(RANK), f"new subpackage(s) without a layer: {sorted(subs - set(RANK))}"


@pytest.mark.parametrize("code,layer", [
    ("from ..bundle.data import DatasetError\n", "bundle"),
    ("from monai_hyperconv.hypernets import sshn\n", "hypernets"),
    ("def f():\n    from ..networks import registry\n", "networks"),
    ("import monai_hyperconv.compare.runner\n", "compare"),
    ("from monai_hyperconv.experiments.common import train_loop\n", "experiments"),
])
def test_checker_catches_upward_imports(tmp_path, code, layer):
    """The checker itself: an upward import (top level or inside a function) in a lower layer is reported."""
    pkg = tmp_path / "monai_hyperconv"
    (pkg / "metrics").mkdir(parents=True)
    (pkg / "metrics" / "x.py").write_text(code)
    line = 2 if code.startswith("def") else 1
    assert violations(pkg) == [f"monai_hyperconv/metrics/x.py:{line}: metrics imports {layer}"]
