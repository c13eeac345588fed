"""Nothing lost, nothing silently wrong: the checks every bundle makes before and while training.

One test (or more) per failure a hostile user found: NaN voxels and NaN losses, image/label grids
that do not match, re-runs that would replace a trained model, label values outside the data
set's labels, misspelt or mistyped overrides, resume that is not bit-identical, the generated
kernel cache under autocast, stale temporary files and NaN sigmas.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_hyperconv.bundle import (
    BestModelSaver, ConfigOverrideError, DatasetError, NonFiniteError, NonFiniteGuard, OutputExistsError, TrainingCurves,
    check_overrides, guard_outputs, preflight, remove_stale_temp_files, validate_datalist,
)
from monai_hyperconv.bundle.testing import (
    REPO_ROOT, dataset_error, find_in_chain, last_weights, load_workflow, make_tiny_demo, run_config, same_weights,
)

DIGITS = REPO_ROOT / "bundles" / "digits_classification"
LIVER = REPO_ROOT / "bundles" / "liver_lesion_segmentation"
FAST = {"cache_num_workers": 0, "network_def#hidden": 32, "network_def#channels": [8, 8]}
TINY = {"image_size": 32, "network_def#channels": 8, "cache_num_workers": 0}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return Path(make_tiny_demo("digits", tmp_path_factory.mktemp("digits") / "data", n_subjects=40))


@pytest.fixture(scope="module")
def liver(tmp_path_factory):
    return Path(make_tiny_demo("liver", tmp_path_factory.mktemp("liver") / "data", n_subjects=6, size=(32, 32, 8)))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _entry(data: Path, section: str = "training", i: int = 0) -> dict:
    return json.loads((data / "dataset.json").read_text())[section][i]


def _rewrite(path: Path, fn, dtype=None) -> None:
    img = nib.load(str(path))
    arr = fn(np.asanyarray(img.dataobj).copy())
    nib.save(nib.Nifti1Image(arr.astype(dtype or arr.dtype), img.affine), str(path))


# ------------------------------------------------------------------ 1. NaN voxels, NaN losses
def test_nan_voxels_named_before_training(digits, tmp_path):
    d = _copy(digits, tmp_path / "data")
    victim = d / _entry(d)["image"]

    def nan_every_7th(a):
        a = a.astype(np.float32)
        a.reshape(-1)[::7] = np.nan
        return a

    _rewrite(victim, nan_every_7th)
    n_nan = int(np.isnan(np.asanyarray(nib.load(str(victim)).dataobj)).sum())
    msg = dataset_error(DIGITS, d, tmp_path / "root", **FAST)
    assert str(victim.resolve()) in msg or str(victim) in msg
    assert f"{n_nan} non-finite" in msg and "training[0]['image']" in msg


def _nan_training_run(digits, tmp_path, **overrides):
    """Digits bundle whose first training image is NaN everywhere, with the data check's image reading
    switched off (as if the NaN came from a transform): only the training guard can catch it."""
    d = _copy(digits, tmp_path / "data")
    _rewrite(d / _entry(d)["image"], lambda a: np.full(a.shape, np.nan, np.float32))
    root = tmp_path / "root"
    kw = dict(dataset_dir=d, bundle_root=root, epochs=2, **{"datalists#check_load": False}, **FAST)
    kw.update(overrides)
    return root, kw


def test_nan_loss_stops_training_and_saves_no_nan_model(digits, tmp_path):
    root, kw = _nan_training_run(digits, tmp_path)
    with pytest.raises(Exception) as e:
        run_config(DIGITS, "train.json", "train", **kw)
    err = find_in_chain(e.value, NonFiniteError)
    assert err is not None and "epoch 1" in str(err) and "non-finite" in str(err)
    # the step with the NaN batch was never applied and nothing non-finite was written
    for f in (root / "models").glob("*.pt"):
        state = torch.load(f, weights_only=False)
        state = state.get("network", state)
        assert all(torch.isfinite(v).all() for v in state.values() if torch.is_tensor(v) and v.is_floating_point()), f


def test_nan_loss_skip_policy_keeps_training_finite(digits, tmp_path):
    root, kw = _nan_training_run(digits, tmp_path, nonfinite_policy="skip")
    wf = run_config(DIGITS, "train.json", "train", **kw)
    guard = wf.parser.get_parsed_content("train#handlers#0")
    assert isinstance(guard, NonFiniteGuard) and guard.skipped == 2  # one NaN batch per epoch
    weights = last_weights(root)
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    # the curve shows the NaN step instead of hiding it
    rows = (root / "eval" / "training_log.csv").read_text().splitlines()[1:]
    assert all(r.split(",")[1] == "nan" for r in rows)


def test_guard_skip_restores_buffers_and_leaves_weights():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    guard = NonFiniteGuard(opt, policy="skip", max_skips=1, network=net)
    from ignite.engine import Engine

    def step(engine, x):
        opt.zero_grad()
        loss = net(x).sum()
        loss.backward()
        opt.step()
        return {"loss": loss}

    eng = Engine(step)
    guard.attach(eng)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    bad = torch.randn(2, 3)
    bad[0, 0] = float("nan")
    eng.run([bad], max_epochs=1)
    assert guard.skipped == 1
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k != "1.num_batches_tracked")
    assert not opt.state  # Adam never stepped
    # max_skips=1: a second consecutive bad step stops the run
    eng2 = Engine(step)
    NonFiniteGuard(opt, policy="skip", max_skips=1, network=net).attach(eng2)
    with pytest.raises(NonFiniteError, match="2 consecutive steps skipped"):
        eng2.run([bad, bad], max_epochs=1)


def test_savers_refuse_non_finite_network(tmp_path):
    net = torch.nn.Linear(2, 2)
    with torch.no_grad():
        net.weight[0, 0] = float("nan")
    saver = BestModelSaver(tmp_path, net, metric_name="m")

    class _State:
        metrics = {"m": 0.5}
        epoch = 1

    class _Engine:
        state = _State()

    with pytest.raises(NonFiniteError, match="weight"):
        saver(_Engine())
    assert not (tmp_path / "model.pt").exists() and not list(tmp_path.iterdir())


def test_training_curves_record_nan_loss(tmp_path):
    curves = TrainingCurves(tmp_path)

    class _S:
        epoch = 1
        output = [{"loss": torch.tensor(float("nan"))}]

    class _E:
        state = _S()

    curves._reset(_E())
    curves._iteration(_E())
    _E.state.output = [{"loss": torch.tensor(0.5)}]
    curves._iteration(_E())
    curves._epoch(_E())
    assert math.isnan(curves.history[0]["train_loss"])


# ------------------------------------------------------------------ 2. image/label grids
def test_label_shape_mismatch_names_entry_and_shapes(liver, tmp_path):
    d = _copy(liver, tmp_path / "data")
    label = d / _entry(d)["label"]
    _rewrite(label, lambda a: a[:25, :20])
    msg = dataset_error(LIVER, d, tmp_path / "root", **TINY)
    assert "training[0]['label']" in msg and "(25, 20, 8)" in msg and "(32, 32, 8)" in msg
    assert label.name in msg


def test_label_depth_mismatch_and_affine_mismatch(liver, tmp_path):
    d = _copy(liver, tmp_path / "data")
    ent = _entry(d, "training", 1)
    _rewrite(d / ent["label"], lambda a: a[:, :, :5])
    msg = dataset_error(LIVER, d, tmp_path / "root", **TINY)
    assert "training[1]['label']" in msg and "(32, 32, 5)" in msg

    d2 = _copy(liver, tmp_path / "data2")
    lab = d2 / _entry(d2)["label"]
    img = nib.load(str(lab))
    aff = img.affine.copy()
    aff[0, 3] += 5.0  # the label shifted by 5 mm
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), aff), str(lab))
    msg = dataset_error(LIVER, d2, tmp_path / "root2", **TINY)
    assert "training[0]['label']" in msg and "affine differs" in msg and "5" in msg


# ------------------------------------------------------------------ 3. no silent overwrite
def test_rerun_without_resume_refuses_then_overwrite_moves_aside(digits, tmp_path):
    root = tmp_path / "root"
    run_config(DIGITS, "train.json", "train", dataset_dir=digits, bundle_root=root, epochs=1, **FAST)
    model = (root / "models" / "model.pt").read_bytes()
    events = sorted(p.name for p in (root / "logs").iterdir())
    with pytest.raises(Exception) as e:
        run_config(DIGITS, "train.json", "train", dataset_dir=digits, bundle_root=root, epochs=1, **FAST)
    err = find_in_chain(e.value, OutputExistsError)
    assert err is not None and "--resume true" in str(err) and "--overwrite true" in str(err)
    assert (root / "models" / "model.pt").read_bytes() == model
    assert sorted(p.name for p in (root / "logs").iterdir()) == events  # no second TensorBoard file

    run_config(DIGITS, "train.json", "train", dataset_dir=digits, bundle_root=root, epochs=1, overwrite=True, **FAST)
    (moved,) = list((root / "previous_runs").iterdir())
    assert (moved / "models" / "model.pt").read_bytes() == model
    assert sorted(p.name for p in (moved / "logs").iterdir()) == events
    assert len(list((root / "logs").iterdir())) == len(events) and (root / "models" / "model.pt").is_file()


def test_guard_outputs_resume_and_empty(tmp_path):
    assert guard_outputs(tmp_path / "models", tmp_path / "logs", tmp_path / "eval") is None
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "training_log.csv").write_text("epoch\n")
    with pytest.raises(OutputExistsError, match="training_log.csv"):
        guard_outputs(tmp_path / "models", tmp_path / "logs", tmp_path / "eval")
    assert guard_outputs(tmp_path / "models", tmp_path / "logs", tmp_path / "eval", resume=True) is None


# ------------------------------------------------------------------ 4. label values
def test_label_value_outside_labels(liver, tmp_path):
    d = _copy(liver, tmp_path / "data")
    ent = _entry(d, "validation", 0)

    def put_seven(a):
        a[0, 0, 0] = 7
        return a

    _rewrite(d / ent["label"], put_seven)
    msg = dataset_error(LIVER, d, tmp_path / "root", **TINY)
    assert "validation[0]['label']" in msg and "7" in msg and "[0, 1, 2]" in msg


@pytest.mark.parametrize("bad", [-1, 12])
def test_class_index_outside_labels(digits, tmp_path, bad):
    d = _copy(digits, tmp_path / "data")
    meta = json.loads((d / "dataset.json").read_text())
    meta["training"][3]["label"] = bad
    (d / "dataset.json").write_text(json.dumps(meta))
    msg = dataset_error(DIGITS, d, tmp_path / "root", **FAST)
    assert "training[3]['label']" in msg and str(bad) in msg


def test_validate_datalist_accepts_clean_data(liver):
    meta = json.loads((liver / "dataset.json").read_text())
    items = [{k: str(liver / v) for k, v in it.items()} for it in meta["training"]]
    validate_datalist(items, ("image", "label"), {"image": 1, "label": 1}, 3, labels=meta["labels"])


# ------------------------------------------------------------------ 5, 6. overrides and settings
def test_misspelt_override_rejected_on_the_command_line(digits, tmp_path):
    cfg = str(DIGITS / "configs" / "train.json")
    r = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", cfg, "--meta_file", str(DIGITS / "configs" / "metadata.json"),
         "--bundle_root", str(tmp_path / "root"), "--dataset_dir", str(digits), "--epochz", "2"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "ConfigOverrideError" in out and "--epochz" in out and "Did you mean --epochs" in out
    assert not (tmp_path / "root" / "models").exists()


def test_check_overrides_types_and_paths():
    cfg = [str(LIVER / "configs" / "train.json")]
    check_overrides(cfg, {"epochs": 3, "learning_rate": 1e-3, "network_def#conv": "conv", "resume": True,
                          "network_def#kernel_size": 3})
    with pytest.raises(ConfigOverrideError, match="learning_rate 'abc': expected a number"):
        check_overrides(cfg, {"learning_rate": "abc"})
    with pytest.raises(ConfigOverrideError, match="expected true or false"):
        check_overrides(cfg, {"resume": "maybe"})
    with pytest.raises(ConfigOverrideError, match="network_def#kernel_sise.*Did you mean --network_def#kernel_size"):
        check_overrides(cfg, {"network_def#kernel_sise": 3})
    check_overrides(cfg, {"learning_rate": "$1e-3 * 2"})  # expressions pass


def test_preflight_reads_the_command_line(tmp_path):
    argv = [str(Path(sys.modules["monai.bundle"].__file__).parent / "__main__.py"), "run",
            "--config_file", f"['{LIVER / 'configs' / 'train.json'}']", "--learning_rate", "abc"]
    with pytest.raises(ConfigOverrideError, match="learning_rate"):
        preflight(tmp_path / "models", argv=argv)
    preflight(tmp_path / "models", argv=argv[:-2] + ["--learning_rate=3e-3", "--network_def#conv", "conv"])
    # not a monai.bundle command line: nothing to check
    preflight(tmp_path / "models", argv=["pytest", "--learning_rate", "abc"])


@pytest.mark.parametrize("key,value", [("learning_rate", "abc"), ("epochs", 0), ("batch_size", 2.5), ("learning_rate", float("nan"))])
def test_bad_numeric_setting_named_before_training(digits, tmp_path, key, value):
    with pytest.raises(Exception) as e:
        run_config(DIGITS, "train.json", "train", dataset_dir=digits, bundle_root=tmp_path, **{key: value}, **FAST)
    err = find_in_chain(e.value, ConfigOverrideError)
    assert err is not None and repr(key) in str(err)
    assert not (tmp_path / "models").exists()


# ------------------------------------------------------------------ 9. exact resume
def test_resumed_run_is_bit_identical(liver, tmp_path):
    """Kill after epoch 1 of 3, resume: the same final weights as one uninterrupted run (random crops,
    flips and affines included)."""
    kw = dict(dataset_dir=liver, epochs=3, **TINY)
    run_config(LIVER, "train.json", "train", bundle_root=tmp_path / "once", **kw)

    wf = load_workflow(LIVER, "train.json", "train", bundle_root=tmp_path / "killed", **kw)
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    from ignite.engine import Events

    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate())
    wf.run()
    assert torch.load(tmp_path / "killed" / "models" / "checkpoint_last.pt", weights_only=False)["epoch"] == 1
    run_config(LIVER, "train.json", "train", bundle_root=tmp_path / "killed", resume=True, **kw)
    assert same_weights(last_weights(tmp_path / "once"), last_weights(tmp_path / "killed"))


# ------------------------------------------------------------------ 10. kernel cache and autocast
def test_kernel_cache_keyed_on_autocast():
    from monai_hyperconv.layers import HyperConv

    torch.manual_seed(0)
    conv = HyperConv(2, 8, 8, 5, padding=2).eval()
    x = torch.randn(1, 8, 12, 12)
    with torch.no_grad():
        ref = conv(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = conv(x)
        again = conv(x)
    assert low.dtype == torch.bfloat16 and again.dtype == torch.float32
    assert torch.equal(again, ref)  # not the bf16 kernel of the autocast forward


# ------------------------------------------------------------------ 11. temp files, NaN sigma
def test_stale_temp_files_removed_at_start(digits, tmp_path):
    models = tmp_path / "root" / "models"
    models.mkdir(parents=True)
    stale = [models / ".checkpoint_last.pt.0123456789ab.tmp.pt", models / ".model.pt.abcdefabcdef.tmp.pt"]
    for f in stale:
        f.write_bytes(b"")
    keep = models / "notes.tmp.txt"
    keep.write_text("mine")
    run_config(DIGITS, "train.json", "train", dataset_dir=digits, bundle_root=tmp_path / "root", epochs=1, **FAST)
    assert not any(f.exists() for f in stale) and keep.read_text() == "mine"
    assert remove_stale_temp_files(tmp_path / "nowhere") == []


def test_nan_sigma_reset_to_bound():
    from monai_hyperconv.layers import AdaptiveConv

    conv = AdaptiveConv(2, 2, 3, 3)
    with torch.no_grad():
        conv.sigma[1] = float("nan")
    with pytest.warns(RuntimeWarning, match="NaN sigma"):
        conv.project_sigma_()
    assert torch.isfinite(conv.sigma).all() and conv.sigma[1].item() == pytest.approx(conv.sigma_bounds[1])
    # a diverged SGD step (NaN gradient) goes through the optimiser hook
    opt = torch.optim.SGD(conv.parameters(), lr=1.0)
    conv(torch.randn(1, 2, 6, 6)).sum().backward()
    conv.sigma.grad[0] = float("nan")
    with pytest.warns(RuntimeWarning, match="NaN sigma"):
        opt.step()
    assert torch.isfinite(conv.sigma).all()


def test_command_line_booleans_are_parsed_not_truthy(tmp_path):
    """python-fire passes ``--resume false`` as the string "false", which ``bool()`` makes True."""
    from monai_hyperconv.bundle import CheckpointManager
    from monai_hyperconv.utils import as_bool

    assert [as_bool(v) for v in ("true", "False", "YES", "off", 1, 0, True)] == [True, False, True, False, True, False, True]
    with pytest.raises(ValueError, match="resume must be true or false"):
        as_bool("maybe", "resume")
    assert CheckpointManager(tmp_path, {}, resume="false").resume is False
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(OutputExistsError):
        guard_outputs(tmp_path, resume="false", overwrite="false")
    with pytest.raises(ConfigOverrideError, match="'resume' = 'maybe'"):
        preflight(tmp_path, resume="maybe")
