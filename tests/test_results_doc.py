"""``scripts/make_results_doc.py``: docs/results.md is assembled from the experiments' report entries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monai_hyperconv.compare import experiment_report, read_report
from monai_hyperconv.bundle.testing import load_script

ROOT = Path(__file__).resolve().parents[1]


def _load():
    return load_script(ROOT / "scripts" / "make_results_doc.py")


def _experiment(root: Path, name: str, value: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = root / name
    out.mkdir(parents=True)
    (out / "table.md").write_text(f"# {name} table\n\n| a | b |\n|---|---|\n| x | {value} |\n")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, value])
    fig.savefig(out / "curve.png")
    plt.close(fig)
    rep = experiment_report(name, f"Title of {name}", "paper 001 Fig 6", f"python scripts/experiments/{name}.py",
                            "demo, 2 folds", f"We measure {value} for {name}.", tables=[out / "table.md"],
                            figures=[out / "curve.png"], numbers={"v": value}, out_dir=out)
    (out / "summary.json").write_text(json.dumps({"report": rep}))


def test_document_is_built_from_reports(tmp_path):
    mod = _load()
    exp = tmp_path / "experiments"
    _experiment(exp, "digits_robustness", 0.5)
    _experiment(exp, "paper_tables", 0.7)
    doc = tmp_path / "docs" / "results.md"
    text = mod.build(exp, doc)
    assert doc.read_text() == text
    # papers' order: Tables 1/3 before the blog's digits
    assert text.index("## Title of paper_tables") < text.index("## Title of digits_robustness")
    assert "We measure 0.7 for paper_tables." in text and "python scripts/experiments/paper_tables.py" in text
    assert "| x | 0.7 |" in text and "#### paper_tables table" in text  # table included, heading demoted
    assert "(figures/paper_tables/curve.png)" in text
    assert (tmp_path / "docs" / "figures" / "paper_tables" / "curve.png").read_bytes() == \
        (exp / "paper_tables" / "curve.png").read_bytes()
    # the stored paths are relative: a moved experiments folder still works
    moved = tmp_path / "moved"
    exp.rename(moved)
    assert read_report(moved / "paper_tables" / "summary.json")["tables"][0] == str(moved / "paper_tables" / "table.md")


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no script at .*nope.py"):
        load_script(tmp_path / "nope.py")
    mod = _load()
    with pytest.raises(FileNotFoundError, match="no <experiment>/summary.json"):
        mod.build(tmp_path, tmp_path / "r.md")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(ValueError, match="broken/summary.json: no 'report' entry"):
        mod.build(tmp_path, tmp_path / "r.md")
    assert not (tmp_path / "r.md").exists()
    assert mod.main(["--experiments", str(tmp_path), "--out", str(tmp_path / "r.md")]) == 2
    with pytest.raises(ValueError, match="'paragraph'"):
        experiment_report("x", "t", "p", "cmd", "scale", "   ")


def test_replace_sections_keeps_others_and_marks_stale():
    from monai_hyperconv.compare.report import STALE_MARK, replace_sections

    doc = ("# Results\n\nintro\n\n## A\n\n```bash\npython scripts/experiments/a.py\n```\n\nold a\n\n"
           "## B\n\n```bash\npython scripts/experiments/b.py\n```\n\nold b\n")
    new = replace_sections(doc, {"B": "## B\n\nnew b\n"}, stale={"a": "the fix of 2026-12"})
    assert new.startswith("# Results\n\nintro\n\n## A\n\n" + STALE_MARK + " the fix of 2026-12**\n\n```bash")
    assert "old a" in new and "old b" not in new and new.endswith("## B\n\nnew b\n")
    # idempotent: marking again replaces the note instead of stacking it
    again = replace_sections(new, {"B": "## B\n\nnew b\n"}, stale={"a": "the fix of 2026-12"})
    assert again == new and again.count(STALE_MARK) == 1
    # a section that is not there yet is appended; a stale name with no section is an error
    assert replace_sections(doc, {"C": "## C\n\nc\n"}).endswith("old b\n\n## C\n\nc\n")
    with pytest.raises(ValueError, match="stale 'zz'"):
        replace_sections(doc, {}, stale={"zz": "x"})
    with pytest.raises(ValueError, match="stale 'b'"):  # the regenerated section cannot be stale
        replace_sections(doc, {"B": "## B\n\nnew b\n"}, stale={"b": "x"})


def test_update_refreshes_the_index_row_and_keeps_figures_of_one_name_apart(tmp_path):
    mod = _load()
    exp = tmp_path / "experiments"
    _experiment(exp, "digits_robustness", 0.5)
    _experiment(exp, "paper_tables", 0.7)
    doc = tmp_path / "docs" / "results.md"
    mod.build(exp, doc)
    # paper_tables re-run: other papers' citation, two figures named alike (one per data set)
    only = tmp_path / "rerun"
    _experiment(only, "paper_tables", 0.9)
    rep = json.loads((only / "paper_tables" / "summary.json").read_text())["report"]
    for ds, v in (("liver", 0.1), ("ms", 0.2)):
        d = only / "paper_tables" / ds / "comparison"
        d.mkdir(parents=True)
        (d / "x.png").write_bytes((only / "paper_tables" / "curve.png").read_bytes() + bytes([int(v * 10)]))
    rep.update(papers="Ma et al. 2022, Table 1", figures=[f"{ds}/comparison/x.png" for ds in ("liver", "ms")])
    (only / "paper_tables" / "summary.json").write_text(json.dumps({"report": rep}))
    text = mod.update(only, doc, {})
    row = next(line for line in text.splitlines() if line.startswith("| [Title of paper_tables]"))
    assert "| Ma et al. 2022, Table 1 |" in row and "We measure 0.9 for paper_tables." in text
    other = next(line for line in text.splitlines() if line.startswith("| [Title of digits_robustness]"))
    assert "| paper 001 Fig 6 |" in other  # untouched
    figs = tmp_path / "docs" / "figures" / "paper_tables"
    assert (figs / "liver_x.png").read_bytes() != (figs / "ms_x.png").read_bytes()
    assert "(figures/paper_tables/liver_x.png)" in text and "(figures/paper_tables/ms_x.png)" in text
