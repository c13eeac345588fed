"""bundles/digits_classification: train -> evaluate (clean accuracy + noise sweep) -> inference on a
tiny demo set, conv-type override, resume, bad input, baked export without the package, DDP."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from monai_hyperconv.bundle import DatasetError
from monai_hyperconv.bundle.testing import (
    REPO_ROOT, bundle_cli_args, find_in_chain, last_weights, make_tiny_demo, run_cli, run_config, run_exported_without_package,
    same_weights,
)

BUNDLE = REPO_ROOT / "bundles" / "digits_classification"
FAST = {"cache_num_workers": 0, "network_def#hidden": 32, "network_def#channels": [8, 8]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_demo("digits", tmp_path_factory.mktemp("digits") / "data", n_subjects=60)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("digits_root")
    wf = run_config(BUNDLE, "train.json", "train", dataset_dir=data, bundle_root=root, epochs=1, **FAST)
    return root, wf


def _n_val(data) -> int:
    return len(json.loads((Path(data) / "dataset.json").read_text())["validation"])


def test_config_files_and_metadata():
    for f in ("train.json", "evaluate.json", "inference.json", "multi_gpu_train.json", "metadata.json", "logging.conf"):
        assert (BUNDLE / "configs" / f).is_file(), f
    assert (BUNDLE / "LICENSE").read_text() == (REPO_ROOT / "LICENSE").read_text()
    assert (BUNDLE / "docs" / "README.md").is_file()
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert "monai-hyperconv" in meta["required_packages_version"]
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 10


def test_train_evaluate_infer_end_to_end(trained, data):
    root, wf = trained
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == 1
    assert (root / "models" / "model.pt").is_file() and (root / "models" / "checkpoint_last.pt").is_file()
    assert list((root / "logs").glob("events.out.tfevents.*"))

    run_config(BUNDLE, ["train.json", "evaluate.json"], None, dataset_dir=data, bundle_root=root, **FAST)
    summary = json.loads((root / "eval" / "summary.json").read_text())
    assert 0.0 <= summary["accuracy"] <= 1.0 and summary["conv"] == "adaptive"
    rows = list(csv.DictReader(open(root / "eval" / "noise_robustness.csv")))
    levels = json.loads((BUNDLE / "configs" / "evaluate.json").read_text())["noise_levels"]
    assert [(r["noise"], float(r["level"])) for r in rows] == [(k, float(v)) for k, lv in levels.items() for v in lv]
    assert all(int(r["n"]) == _n_val(data) for r in rows)
    # level 0 is the clean accuracy of the evaluator
    assert float(rows[0]["accuracy"]) == pytest.approx(summary["accuracy"])
    assert (root / "eval" / "noise_robustness.png").read_bytes()[:4] == b"\x89PNG"
    per_case = list(csv.reader(open(root / "eval" / "predictions.csv")))
    assert len(per_case) == _n_val(data)

    out = root / "pred"
    run_config(BUNDLE, "inference.json", "infer", dataset_dir=data, bundle_root=root, output_dir=out, **FAST)
    preds = list(csv.reader(open(out / "predictions.csv")))
    assert len(preds) == _n_val(data) and all(0 <= float(p[1]) <= 9 for p in preds)
    probs = list(csv.reader(open(out / "probabilities.csv")))
    assert all(abs(sum(float(v) for v in p[1:]) - 1) < 1e-3 for p in probs)


@pytest.mark.parametrize("conv", ["conv", "hyper"])
def test_conv_type_override(data, tmp_path, conv):
    from monai_hyperconv.layers import count_generated

    wf = run_config(BUNDLE, "train.json", "train", run=False, dataset_dir=data, bundle_root=tmp_path, conv=conv, **FAST)
    net = wf.parser.get_parsed_content("network_def")
    assert (count_generated(net) > 0) == (conv == "hyper")


def test_resume(trained, data, tmp_path):
    root, _ = trained
    shutil.copytree(root / "models", tmp_path / "models")
    wf = run_config(BUNDLE, "train.json", "train", dataset_dir=data, bundle_root=tmp_path, epochs=2, resume=True, **FAST)
    assert wf.parser.get_parsed_content("train#handlers#4").resumed_from == 1
    assert torch.load(tmp_path / "models" / "checkpoint_last.pt", weights_only=False)["epoch"] == 2


def test_bad_input_missing_file(data, tmp_path):
    d = tmp_path / "data"
    shutil.copytree(data, d)
    victim = d / "imagesTr" / "digit_0005.nii.gz"
    victim.unlink()
    with pytest.raises(Exception) as e:
        run_config(BUNDLE, "train.json", "train", dataset_dir=d, bundle_root=tmp_path / "r", epochs=1, **FAST)
    err = find_in_chain(e.value, DatasetError)
    assert err is not None and str(victim) in str(err) and "['image']" in str(err)
    assert not (tmp_path / "r" / "models").exists()


def test_verify_net_in_out():
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_def", meta_file=str(BUNDLE / "configs" / "metadata.json"),
                      config_file=str(BUNDLE / "configs" / "inference.json"), n=2)


def test_baked_export_runs_without_package(trained, tmp_path):
    root, _ = trained
    out = tmp_path / "model.ts"
    run_config(BUNDLE, "inference.json", None, run_id="export", bundle_root=root, export_file=out, **FAST)
    from monai_hyperconv.bundle import load_weights
    from monai_hyperconv.networks import create_network

    net = create_network("simple_cnn", spatial_dims=2, in_channels=1, out_channels=10, conv="adaptive", channels=[8, 8], hidden=32)
    load_weights(net, root / "models" / "model.pt")
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        ref = net.eval()(x)
    assert torch.allclose(run_exported_without_package(out, x, workdir=tmp_path), ref, atol=1e-4)


@pytest.mark.slow
def test_ddp_two_processes(data, tmp_path):
    root = tmp_path / "ddp"
    p = run_cli(bundle_cli_args(BUNDLE, ["train.json", "multi_gpu_train.json"], dataset_dir=data, bundle_root=root,
                                epochs=1, **FAST), torchrun_nproc=2)
    assert (p.stdout + p.stderr).count("SupervisedTrainer - INFO - Engine run finished") == 2
    assert sorted(x.name for x in (root / "models").iterdir()) == ["checkpoint_last.pt", "model.json", "model.pt"]


def test_same_seed_gives_bitwise_identical_weights(trained, data, tmp_path):
    """Determinism on a second bundle (adaptive convs, shuffled loader, augmentation): same seed, same weights."""
    root, _ = trained
    run_config(BUNDLE, "train.json", "train", dataset_dir=data, bundle_root=tmp_path, epochs=1, **FAST)
    a = last_weights(root)
    assert same_weights(a, last_weights(tmp_path))
    # and a different seed gives different weights (the test would otherwise pass on a constant net)
    other = tmp_path / "seed1"
    run_config(BUNDLE, "train.json", "train", dataset_dir=data, bundle_root=other, epochs=1, seed=1, **FAST)
    c = last_weights(other)
    assert a.keys() == c.keys() and any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    assert not same_weights(a, c)
