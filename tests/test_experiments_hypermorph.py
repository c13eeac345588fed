"""scripts/experiments/hypermorph.py --smoke (slow: trains 3 tiny models): outputs, tables and the report."""

import csv
import json
import math

import pytest

from monai_hyperconv.bundle.testing import REPO_ROOT, load_script
from monai_hyperconv.compare import read_report


@pytest.mark.slow
def test_smoke_run(tmp_path):
    script = load_script(REPO_ROOT / "scripts" / "experiments" / "hypermorph.py", "hypermorph_script")
    res = script.main(["--smoke", "--out", str(tmp_path)])
    for f in ("sweep.csv", "sweep.png", "fixed.csv", "comparison.csv", "comparison.md", "training_time.csv",
              "dice_vs_lam.png", "summary.json"):
        assert (tmp_path / f).is_file(), f
    with open(tmp_path / "comparison.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["lam"]) for r in rows] == [0.0, 1.0]
    assert all(0 <= float(r["dice_hypermorph"]) <= 1 and 0 <= float(r["dice_fixed"]) <= 1 for r in rows)
    with open(tmp_path / "sweep.csv") as fh:
        assert [float(r["lam"]) for r in csv.DictReader(fh)] == [0.0, 0.5, 1.0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [t["model"] for t in summary["training_time"]] == ["hypermorph", "fixed_lam_0", "fixed_lam_1"]
    assert all(math.isfinite(t["final_loss"]) for t in summary["training_time"])
    report = read_report(tmp_path / "summary.json")
    assert report["name"] == "hypermorph" and "SMOKE" in report["paragraph"]
    assert res["comparison"][0]["dice_hypermorph"] == pytest.approx(float(rows[0]["dice_hypermorph"]))


def test_bad_arguments():
    script = load_script(REPO_ROOT / "scripts" / "experiments" / "hypermorph.py", "hypermorph_script")
    with pytest.raises(SystemExit):
        script.parse_args(["--lams", "0.5", "1.5"])
    with pytest.raises(SystemExit):
        script.parse_args(["--max-folding", "2"])
    args = script.parse_args(["--smoke"])
    assert args.fixed_lams == [0.0, 1.0] and args.steps == 3
