"""Seeds as a grid axis, per-case results and the comparison statistics (bootstrap CIs, paired
Wilcoxon tests with Holm's correction, rank robustness)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from monai_hyperconv.bundle.testing import make_tiny_demo
from monai_hyperconv.compare import ComparisonError, ComparisonSettings, plan_cells, run_comparison
from monai_hyperconv.compare.leaderboard import write_outputs
from monai_hyperconv.compare.stats import comparison_statistics, format_difference, holm, mean_ci, wilcoxon_p


def _grid(rng, effects, folds=3, cases=12, seeds=(0, 1, 2), seed_noise=0.02):
    """Fake cell results: case difficulty shared by all algorithms, an algorithm effect, seed noise."""
    rows = []
    for f in range(folds):
        difficulty = rng.normal(0.7, 0.1, cases)
        ids = [f"f{f}_c{i}" for i in range(cases)]
        for alg, effect in effects.items():
            for s in seeds:
                vals = difficulty + effect + rng.normal(0, seed_noise, cases)
                rows.append({"algorithm": alg, "fold": f, "seed": s, "status": "ok", "test_metric": float(vals.mean()),
                             "test_per_case": vals.tolist(), "test_case_ids": ids})
    return rows


def test_bootstrap_ci_matches_scipy():
    x = np.random.default_rng(3).gamma(2.0, 0.1, size=40)
    mean, lo, hi = mean_ci(x, n_boot=20000, seed=0)
    ref = sps.bootstrap((x,), np.mean, method="percentile", n_resamples=20000, confidence_level=0.95,
                        rng=np.random.default_rng(1)).confidence_interval
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert mean == pytest.approx(x.mean())
    # the endpoints of two independent percentile bootstraps differ by Monte-Carlo error only (~0.02 SE)
    assert lo == pytest.approx(ref.low, abs=0.1 * se) and hi == pytest.approx(ref.high, abs=0.1 * se)
    # deterministic: the same seed gives the same interval
    assert mean_ci(x, n_boot=20000, seed=0) == (mean, lo, hi)
    # stratified by fold: each fold keeps its size; a CI that ignores a huge between-fold shift is wider
    folds = [0] * 20 + [1] * 20
    shifted = np.r_[x[:20], x[20:] + 1.0]
    _, slo, shi = mean_ci(shifted, folds, seed=0)
    _, ulo, uhi = mean_ci(shifted, None, seed=0)
    assert shi - slo < uhi - ulo


def test_holm_hand_example():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([0.4, 0.6]) == pytest.approx([0.8, 0.8])  # monotone, capped at 1
    out = holm([0.02, float("nan"), 0.01])
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert wilcoxon_p([0.0, 0.0, 0.0]) == 1.0


def test_paired_test_finds_a_better_algorithm():
    rows = _grid(np.random.default_rng(0), {"ref": 0.0, "better": 0.02, "same": 0.0})
    st = comparison_statistics(rows, reference="ref", n_boot=2000)
    assert st["reference"] == "ref"
    b, s = st["algorithms"]["better"], st["algorithms"]["same"]
    assert b["n_cases"] == 36 and b["n_seeds"] == 3  # 3 folds x 12 cases, seeds averaged per case
    assert b["p_holm"] < 0.05 and b["diff_ci_low"] > 0 and b["diff_mean"] == pytest.approx(0.02, abs=0.01)
    assert b["p_first"] > 0.9 and b["mean_rank"] < 1.2
    assert format_difference(b).endswith("▲") and format_difference(b).startswith("+0.0")
    # worse when lower is better
    assert format_difference(b, higher_is_better=False).endswith("▼")
    assert "p_holm" not in st["algorithms"]["ref"]
    assert s["p_holm"] >= s["p_wilcoxon"]


def test_null_grid_is_rarely_significant():
    significant = 0
    for rep in range(20):
        rows = _grid(np.random.default_rng(100 + rep), {"a": 0.0, "b": 0.0})
        st = comparison_statistics(rows, n_boot=500)
        significant += st["algorithms"]["b"]["p_holm"] < 0.05
    assert significant <= 4  # 1 of 20 expected


def test_leaderboard_ci_recomputed_from_per_case_csv(tmp_path):
    rows = _grid(np.random.default_rng(1), {"ref": 0.0, "other": 0.01})
    manifest = {"task": "segmentation", "metric": "dice", "folds": 3, "seeds": [0, 1, 2], "budget": {"epochs": 1},
                "higher_is_better": True, "reference": None}
    paths = write_outputs(rows, manifest, tmp_path)
    with open(tmp_path / "per_case.csv", newline="") as f:
        cases = list(csv.DictReader(f))
    assert len(cases) == 2 * 3 * 3 * 12 and set(cases[0]) == {"algorithm", "fold", "seed", "case_id", "test_metric"}
    with open(tmp_path / "leaderboard.csv", newline="") as f:
        board = {r["algorithm"]: r for r in csv.DictReader(f)}
    # recomputed here: average each case's seeds, then resample cases within folds (numpy, seed 0)
    per_case = defaultdict(list)
    for c in cases:
        if c["algorithm"] == "other":
            per_case[(c["fold"], c["case_id"])].append(float(c["test_metric"]))
    keys = list(per_case)
    vals = np.array([np.mean(per_case[k]) for k in keys])
    rng = np.random.default_rng(0)
    total = np.zeros(10000)
    for fold in dict.fromkeys(k[0] for k in keys):
        idx = np.array([i for i, k in enumerate(keys) if k[0] == fold])
        total += vals[idx[rng.integers(0, len(idx), size=(10000, len(idx)))]].sum(axis=1)
    lo, hi = np.quantile(total / len(vals), [0.025, 0.975])
    assert float(board["other"]["test_ci_low"]) == pytest.approx(lo, rel=1e-9)
    assert float(board["other"]["test_ci_high"]) == pytest.approx(hi, rel=1e-9)
    assert float(board["other"]["n_cases"]) == 36 and board["ref"]["diff_mean"] == ""
    md = (tmp_path / "leaderboard.md").read_text()
    assert "## Statistics over test cases" in md and "vs `ref`" in md and "cells ok (folds x seeds)" in md
    assert format_difference(paths["statistics"]["algorithms"]["other"]) in md
    js = json.loads((tmp_path / "results.json").read_text())
    assert len(js["per_case"]) == len(cases) and js["statistics"]["reference"] == "ref"
    for name in ("per_case_boxplot.png", "paired_differences.png"):
        assert (tmp_path / name).stat().st_size > 0


# -- seeds as a grid axis of the runner --

OPTS = dict(folds=1, iterations=1, noise={}, isolate=False, latency_reps=2, progress=False,
            overrides={"image_size": 32, "head_bias_init": None, "batch_size": 4})


def test_seeds_plan_keeps_single_seed_cells(tmp_path):
    data = make_tiny_demo("liver", tmp_path / "data", n_subjects=4, size=(48, 48, 6))
    base = ComparisonSettings(output_dir=tmp_path / "out", data=data, **{**OPTS, "folds": 2})
    _, single = plan_cells("segmentation", ["unet:channels=4"], base)
    _, multi = plan_cells("segmentation", ["unet:channels=4"], base.replace(seeds=(0, 5)))
    assert [(c["fold"], c["seed"]) for c in multi] == [(0, 0), (0, 5), (1, 0), (1, 5)]
    # the base seed's cells are the single-seed cells: same folder, same spec hash
    same = [c for c in multi if c["seed"] == 0]
    assert [(c["cell_dir"], c["spec_hash"]) for c in same] == [(c["cell_dir"], c["spec_hash"]) for c in single]
    assert Path(multi[1]["cell_dir"]).name == "fold0_seed5" and multi[1]["spec_hash"] != multi[0]["spec_hash"]
    assert set(multi[1]) == set(single[0]) | {"split_seed", "split_seed_key"} and multi[1]["split_seed"] == 0
    assert ComparisonSettings(epochs=1, seeds=[3, 1]).seed == 3
    assert ComparisonSettings(epochs=1, seed=1, seeds=[3, 1]).seed_list == (3, 1)
    with pytest.raises(ComparisonError, match="repeats a seed"):
        ComparisonSettings(epochs=1, seeds=[1, 1])
    with pytest.raises(ComparisonError, match="reference 'unet5'"):
        plan_cells("segmentation", ["unet:channels=4"], base.replace(reference="unet5"))
    m, _ = plan_cells("segmentation", ["hyperunet:channels=4", "unet"], base.replace(reference="hyper_unet:channels=4"))
    assert m["reference"] == "hyperunet:channels=4"


def test_seeds_keep_the_split(tmp_path):
    """The bundles shuffle their k-fold split with ``@seed``: the other seeds' cells keep the base seed's split."""
    from monai_hyperconv.compare.cell import _overrides, _parser

    data = make_tiny_demo("liver", tmp_path / "data", n_subjects=6, size=(48, 48, 6))
    settings = ComparisonSettings(output_dir=tmp_path / "out", data=data, **{**OPTS, "folds": 3}, seeds=(0, 1, 2))
    _, cells = plan_cells("segmentation", ["unet:channels=4"], settings)

    def split(cell):
        parser = _parser(cell, {**_overrides(dict(cell, device="cpu"), False), "datalists#check_load": False})
        lists = parser.get_parsed_content("datalists")
        return [d["image"] for d in lists["validation"]], parser.get_parsed_content("seed")

    for fold in range(3):
        got = [split(c) for c in cells if c["fold"] == fold]
        assert [seed for _, seed in got] == [0, 1, 2]  # the training seed is the cell's
        assert got[0][0] == got[1][0] == got[2][0]  # the split is the base seed's
    assert "split_seed" not in cells[0] and cells[1]["split_seed"] == 0
    # without the fix a seed would re-shuffle the folds: the split does depend on datalists#seed
    other = dict(cells[1], split_seed=1)
    assert split(other)[0] != split(cells[1])[0]


def test_cli_seeds_and_reference():
    import monai_hyperconv.compare.__main__ as cli

    args = cli.parse_args(["--task", "segmentation", "--algorithms", "unet", "--epochs", "2", "--seeds", "3", "1",
                           "--reference", "unet"])
    assert ComparisonSettings.from_args(args) == ComparisonSettings(epochs=2, seeds=(3, 1), seed=3, reference="unet")


def test_resume_with_seeds_skips_finished_cells(tmp_path):
    data = make_tiny_demo("liver", tmp_path / "data", n_subjects=4, size=(48, 48, 6))
    out = tmp_path / "out"
    settings = ComparisonSettings(output_dir=out, data=data, seeds=(0, 1), **OPTS)
    res = run_comparison("segmentation", ["unet:channels=4"], settings)
    assert [(r["seed"], r["status"]) for r in res["results"]] == [(0, "ok"), (1, "ok")]
    dirs = [Path(r["cell_dir"]) for r in res["results"]]
    assert [d.name for d in dirs] == ["fold0", "fold0_seed1"]
    stamps = {d: (d / "result.json").stat().st_mtime_ns for d in dirs}
    # a third seed: only its cell runs
    again = run_comparison("segmentation", ["unet:channels=4"], settings.replace(seeds=(0, 1, 2)))
    assert {d: (d / "result.json").stat().st_mtime_ns for d in dirs} == stamps
    assert [r["seed"] for r in again["results"]] == [0, 1, 2]
    assert json.loads((out / "comparison.json").read_text())["seeds"] == [0, 1, 2]
    # every case of the test fold, per seed, in results.json and per_case.csv
    js = json.loads((out / "results.json").read_text())
    n = len(again["results"][0]["test_per_case"])
    assert n > 0 and len(again["results"][0]["test_case_ids"]) == n
    assert len(js["per_case"]) == 3 * n and {c["seed"] for c in js["per_case"]} == {0, 1, 2}
    with open(out / "per_case.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 3 * n
    # the same split for every seed: the same cases
    assert len({tuple(r["test_case_ids"]) for r in again["results"]}) == 1
    # a different base seed in the same folder is refused (its cells would be other cells)
    with pytest.raises(ComparisonError, match="seed"):
        run_comparison("segmentation", ["unet:channels=4"], settings.replace(seed=7, seeds=(7,)))


def _noise_cells(gap_clean, gap_strong, n_cases=12, seeds=(0, 1, 2), folds=(0, 1), jitter=0.01, per_case=True):
    """Synthetic cells of "plain" and "hyper" with a noise sweep (levels 0 and 0.5): hyper - plain is
    ``gap_clean`` on clean images and ``gap_strong`` at 0.5, per case, up to a small jitter."""
    rng = np.random.default_rng(0)
    out = []
    for fold in folds:
        ids = [f"f{fold}c{i}" for i in range(n_cases)]
        base = rng.uniform(0.3, 0.7, n_cases)
        for seed in seeds:
            for alg, (g0, g1) in (("plain", (0.0, 0.0)), ("hyper", (gap_clean, gap_strong))):
                clean = base + g0 + rng.normal(0, jitter, n_cases)
                strong = base - 0.2 + g1 + rng.normal(0, jitter, n_cases)
                rob = {"gaussian": {"0.0": float(clean.mean()), "0.5": float(strong.mean())}}
                cell = {"algorithm": alg, "fold": fold, "seed": seed, "status": "ok", "robustness": rob,
                        "test_per_case": clean.tolist(), "test_case_ids": ids}
                if per_case:
                    cell["robustness_per_case"] = {"gaussian": {"0.0": clean.tolist(), "0.5": strong.tolist()}}
                out.append(cell)
    return out


def test_noise_paired_case_level_finds_a_growing_gap():
    from monai_hyperconv.compare.experiments import noise_paired

    st = noise_paired(_noise_cells(0.0, 0.1), "plain", "hyper", {"gaussian": [0.0, 0.5]})
    assert st["unit"] == "cases"
    clean, strong = st["levels"]
    assert (clean["level"], strong["level"]) == (0.0, 0.5) and clean["n_cases"] == strong["n_cases"] == 24
    assert abs(clean["diff_mean"]) < 0.01 and clean["p_wilcoxon"] > 0.05
    g = st["growth"]["gaussian"]
    assert g["n_cases"] == 24 and g["diff_mean"] == pytest.approx(0.1, abs=0.01)
    assert g["diff_ci_low"] > 0.08 and g["p_wilcoxon"] < 0.001
    # the gap itself, recomputed by hand from the per-case values (seeds averaged per case first)
    cells = _noise_cells(0.0, 0.1)
    by = defaultdict(list)
    for c in cells:
        for cid, v in zip(c["test_case_ids"], c["robustness_per_case"]["gaussian"]["0.5"]):
            by[(c["algorithm"], cid)].append(v)
    ids = {cid for _, cid in by}
    hand = np.mean([np.mean(by[("hyper", i)]) - np.mean(by[("plain", i)]) for i in ids])
    assert strong["diff_mean"] == pytest.approx(hand, abs=1e-12)


def test_noise_paired_falls_back_to_cells_of_the_same_fold_and_seed():
    from monai_hyperconv.compare.experiments import noise_paired

    cells = _noise_cells(0.05, 0.05, per_case=False)
    st = noise_paired(cells, "plain", "hyper", {"gaussian": [0.0, 0.5]})
    assert st["unit"] == "cells"
    strong = st["levels"][1]
    assert strong["n_cases"] == 6  # 2 folds x 3 seeds
    rob = {(c["algorithm"], c["fold"], c["seed"]): c["robustness"]["gaussian"]["0.5"] for c in cells}
    hand = np.mean([rob[("hyper", f, s)] - rob[("plain", f, s)] for f in (0, 1) for s in (0, 1, 2)])
    assert strong["diff_mean"] == pytest.approx(hand, abs=1e-12)
    assert abs(st["growth"]["gaussian"]["diff_mean"]) < 0.02


def test_direction_verdict_and_paper_table_columns():
    from monai_hyperconv.compare.experiments import direction_verdict, paper_table

    row = {"diff_mean": 0.05, "p_holm": 0.01}
    assert direction_verdict(row, +1) == "holds" and direction_verdict(row, -1) == "reversed"
    assert direction_verdict({**row, "p_holm": 0.2}, +1) == "not significant"
    assert direction_verdict(None, +1) == direction_verdict({"diff_mean": None}, +1) == "n/a"
    md = paper_table([("A", "a", {"train": 0.9, "test": 0.8, "params": 1.0, "ours": None})],
                     extra={"vs ref": {"a": "+0.1"}, "P(rank 1)": {}})
    head, _, line = md.strip().splitlines()
    assert head.endswith("| vs ref | P(rank 1) |") and line.endswith("| +0.1 | n/a |")


def test_wilcoxon_text():
    from monai_hyperconv.compare.experiments import wilcoxon_text

    row = {"n_cases": 16, "diff_mean": 0.1234, "diff_ci_low": -0.0456, "diff_ci_high": 0.25, "p_wilcoxon": 0.0123}
    assert wilcoxon_text(row) == "+0.123 [-0.046, +0.250], p = 0.012"
    assert wilcoxon_text(row, digits=2, show_n=True) == "+0.12 [-0.05, +0.25], p = 0.012 (n = 16)"
    assert wilcoxon_text({**row, "p_wilcoxon": 0.0004}).endswith("p < 0.001")
    assert wilcoxon_text({**row, "p_wilcoxon": None}).endswith("p = n/a")
    assert wilcoxon_text(None) == wilcoxon_text({"diff_mean": None}) == "n/a"
