"""Seeds in the experiment plumbing: one comparison per seed, aggregated per algorithm."""

import statistics

import pytest

from monai_hyperconv.compare.experiments import across_seeds, run_seeds


def _res(rows):
    return {"leaderboard": [{"algorithm": a, **v} for a, v in rows.items()]}


def test_across_seeds_mean_std_and_missing():
    per_seed = {
        0: _res({"a": {"test_metric_mean": 0.5, "train_metric_mean": 0.6, "params_mean": 10, "receptive_field": "68"}}),
        1: _res({"a": {"test_metric_mean": 0.7, "train_metric_mean": 0.0, "params_mean": 10, "receptive_field": "68"}}),
        2: _res({}),  # the cell failed in this seed
    }
    a = across_seeds(per_seed, "a")
    assert a["seeds"] == [0, 1, 2]
    assert a["test_metric_per_seed"] == [0.5, 0.7, None]
    assert a["test_metric_mean"] == pytest.approx(0.6)
    assert a["test_metric_std"] == pytest.approx(statistics.stdev([0.5, 0.7]))
    assert a["train_metric_per_seed"] == [0.6, 0.0, None]
    assert a["params"] == 10 and a["receptive_field"] == "68"
    b = across_seeds({0: _res({"a": {"test_metric_mean": 0.4}})}, "a")
    assert b["test_metric_mean"] == 0.4 and b["test_metric_std"] is None
    none = across_seeds(per_seed, "missing")
    assert none["test_metric_mean"] is None and none["params"] is None


def test_run_seeds_rejects_bad_seed_lists(tmp_path):
    with pytest.raises(ValueError, match="at least one seed"):
        run_seeds("segmentation", ["unet"], [], output_dir=tmp_path)
    with pytest.raises(ValueError, match="repeats a seed"):
        run_seeds("segmentation", ["unet"], [1, 1], output_dir=tmp_path)


def test_run_seeds_is_one_comparison_with_a_seed_axis(tmp_path, monkeypatch):
    from monai_hyperconv.compare import ComparisonSettings, runner

    seen = []

    def run(task, algos, settings):
        seen.append(settings)
        rows = [{"algorithm": "unet", "fold": 0, "seed": s, "status": "ok", "test_metric": 0.1 * s}
                for s in settings.seed_list]
        return {"results": rows, "manifest": {"higher_is_better": True}, "paths": {}}

    monkeypatch.setattr(runner, "run_comparison", run)
    settings = ComparisonSettings(output_dir=tmp_path, epochs=2, folds=1)
    per_seed = run_seeds("segmentation", ["unet"], [3, 1], settings)
    assert list(per_seed) == [3, 1]
    assert seen == [settings.replace(seeds=(3, 1), seed=3)]
    assert per_seed[1]["leaderboard"][0]["test_metric_mean"] == pytest.approx(0.1)
    assert across_seeds(per_seed, "unet")["test_metric_per_seed"] == [pytest.approx(0.3), pytest.approx(0.1)]
    with pytest.warns(DeprecationWarning, match="run_seeds"):
        run_seeds("segmentation", ["unet"], [3], output_dir=tmp_path, epochs=2, folds=1)
    assert seen[-1] == settings.replace(seeds=(3,), seed=3)
