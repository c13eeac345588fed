"""The experiment-report convention read by ``scripts/make_results_doc.py`` (``docs/results.md``).

Every script in ``scripts/experiments/`` writes ``<out>/summary.json`` whose ``"report"`` entry
is made by :func:`experiment_report`; the results document is assembled from those entries
only (never written by hand), so its numbers are always the ones the scripts measured.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["experiment_report", "read_report", "REPORT_KEYS", "fmt_pm", "replace_sections"]

REPORT_KEYS = ("name", "title", "papers", "command", "scale", "tables", "figures", "paragraph", "numbers")


def experiment_report(
    name: str,
    title: str,
    papers: str,
    command: str,
    scale: str,
    paragraph: str,
    tables: Sequence[str] = (),
    figures: Sequence[str] = (),
    numbers: Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """One experiment's entry for the results document.

    Args:
        name: short id (the script's stem, e.g. ``"noise_robustness"``); sections are ordered by it.
        title: section title, e.g. ``"Noise robustness (journal extension, Fig 6)"``.
        papers: which figures/tables of which papers it reproduces.
        command: the one command that produced it (as a user would type it).
        scale: what it ran at (data, image size, widths, epochs, folds, device).
        paragraph: the honest comparison with the paper's numbers, built from the measured values.
        tables: Markdown table files (included verbatim in the document).
        figures: PNG files (copied next to the document).
        numbers: the key measured values (machine-readable, for tests and the document).
        out_dir: if given, ``tables``/``figures`` are stored relative to it (so a moved folder still works).

    Returns:
        The dict to store under ``"report"`` in ``summary.json``.
    """
    for key, value in (("name", name), ("title", title), ("command", command), ("paragraph", paragraph)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"experiment_report: {key!r} must be a non-empty string, got {value!r}.")

    def rel(paths: Sequence[str]) -> list[str]:
        out = []
        for p in paths:
            p = os.fspath(p)
            # relative to out_dir (paths relative to the working directory included), so a moved folder works
            out.append(os.path.relpath(os.path.abspath(p), os.path.abspath(out_dir)) if out_dir is not None else p)
        return out

    return {
        "name": name, "title": title, "papers": papers, "command": command, "scale": scale,
        "paragraph": paragraph.strip(), "tables": rel(tables), "figures": rel(figures),
        "numbers": dict(numbers or {}),
    }


def read_report(summary_json: str | os.PathLike) -> dict[str, Any]:
    """The ``report`` entry of an experiment's ``summary.json``, with table/figure paths made absolute.

    Raises:
        ValueError: naming the file when it has no (complete) ``report`` entry.
    """
    path = os.fspath(summary_json)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    rep = data.get("report") if isinstance(data, dict) else None
    if not isinstance(rep, dict):
        raise ValueError(f"{path}: no 'report' entry (write it with monai_hyperconv.compare.experiment_report).")
    missing = [k for k in REPORT_KEYS if k not in rep]
    if missing:
        raise ValueError(f"{path}: 'report' lacks {missing}.")
    base = os.path.dirname(os.path.abspath(path))
    rep = dict(rep)
    for key in ("tables", "figures"):
        rep[key] = [p if os.path.isabs(p) else os.path.join(base, p) for p in rep[key]]
    return rep


def fmt_pm(mean: float | None, std: float | None, digits: int = 3) -> str:
    """``"0.712 ± 0.031"`` (or ``"n/a"``); the format of every mean ± std in tables and paragraphs."""
    if mean is None:
        return "n/a"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


STALE_MARK = "> **Not re-run since"


def replace_sections(doc: str, sections: Mapping[str, str], stale: Mapping[str, str] | None = None) -> str:
    """Replace some ``## `` sections of a results document, keep the others verbatim.

    Used to regenerate one experiment's section without the outputs of the others.

    Args:
        doc: the current document.
        sections: ``{title: section text starting with "## title"}``; a title not in ``doc`` is appended.
        stale: ``{experiment name: reason}``: the kept section whose command runs
            ``scripts/experiments/<name>.py`` gets a note under its heading saying it was not re-run, and why
            (replacing an earlier note; a regenerated section has none).

    Returns:
        The new document.

    Raises:
        ValueError: a stale name matches no section of ``doc``.
    """
    head, *parts = doc.split("\n## ")
    secs = [("## " + p).rstrip("\n") for p in parts]
    titles = [s.splitlines()[0][3:].strip() for s in secs]
    for title, text in sections.items():
        text = text.rstrip("\n")
        if title in titles:
            secs[titles.index(title)] = text
        else:
            secs.append(text)
            titles.append(title)
    for name, reason in (stale or {}).items():
        hits = [i for i, s in enumerate(secs) if f"scripts/experiments/{name}.py" in s and titles[i] not in sections]
        if not hits:
            raise ValueError(f"stale {name!r}: no kept section runs scripts/experiments/{name}.py.")
        for i in hits:
            out, drop_blank = [], False
            for ln in secs[i].splitlines():  # drop an earlier note and the blank line after it
                if ln.startswith(STALE_MARK):
                    drop_blank = True
                    continue
                if not (drop_blank and ln == ""):
                    out.append(ln)
                drop_blank = False
            out[1:1] = ["", f"{STALE_MARK} {reason}**"]
            secs[i] = "\n".join(out)
    return head.rstrip("\n") + "\n\n" + "\n\n".join(secs) + "\n"
