"""Shared bundle machinery: data preparation/validation, folds, atomic resumable checkpoints,
baked export that loads without the package, result writers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_hyperconv.bundle import (
    BestModelSaver,
    CheckpointManager,
    DatasetError,
    export_baked,
    list_inputs,
    markdown_table,
    plot_curves,
    prepare_dataset,
    select_fold,
    write_csv,
    write_markdown,
)
from monai_hyperconv.bundle.testing import make_tiny_demo

SIZE = (24, 24, 6)


@pytest.fixture(scope="module")
def liver_dir(tmp_path_factory):
    return make_tiny_demo("liver", tmp_path_factory.mktemp("liver") / "data", n_subjects=4, size=SIZE)


def _copy(src, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def _no_tmp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.suffixes]


# ------------------------------------------------------------------------------------ data
def test_prepare_generates_demo_and_returns_absolute_lists(tmp_path):
    out = prepare_dataset("liver", tmp_path / "new", channels={"image": 1, "label": 1},
                          demo_kwargs={"n_subjects": 3, "size": SIZE})
    assert (tmp_path / "new" / "dataset.json").is_file()
    assert len(out["training"]) == 2 and len(out["validation"]) == 1
    for it in out["training"] + out["validation"]:
        assert os.path.isabs(it["image"]) and os.path.isfile(it["image"]) and os.path.isfile(it["label"])
    # a second call reuses the data set (no regeneration, same lists)
    mtime = (tmp_path / "new" / "dataset.json").stat().st_mtime_ns
    assert prepare_dataset("liver", tmp_path / "new") == out
    assert (tmp_path / "new" / "dataset.json").stat().st_mtime_ns == mtime


def test_prepare_classification_labels_are_ints(tmp_path):
    out = prepare_dataset("digits", tmp_path / "d", file_keys=("image",), is_segmentation=False, spatial_dims=2,
                          channels={"image": 1}, demo_kwargs={"n_subjects": 20})
    assert all(isinstance(it["label"], int) for it in out["training"])
    assert len(out["training"]) + len(out["validation"]) == 20


def test_missing_dataset_json(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no dataset.json"):
        prepare_dataset("liver", tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        prepare_dataset(None, tmp_path / "nothing_here")


def test_missing_file_names_file_and_key(liver_dir, tmp_path):
    d = _copy(liver_dir, tmp_path)
    victim = sorted((d / "labelsTr").iterdir())[1]
    victim.unlink()
    with pytest.raises(DatasetError) as e:
        prepare_dataset("liver", d)
    msg = str(e.value)
    assert str(victim) in msg and "['label']" in msg and "not found" in msg and "training[1]" in msg


def test_truncated_image_names_file_and_key(liver_dir, tmp_path):
    d = _copy(liver_dir, tmp_path)
    victim = d / "imagesTr" / "liver_000.nii.gz"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError) as e:
        prepare_dataset("liver", d)
    assert str(victim) in str(e.value) and "['image']" in str(e.value) and "cannot read" in str(e.value)
    # the same set passes when loading is skipped (only existence is checked)
    assert prepare_dataset("liver", d, check_load=False)["training"]


def test_wrong_channel_count(liver_dir, tmp_path):
    import nibabel as nib

    d = _copy(liver_dir, tmp_path)
    victim = d / "imagesTr" / "liver_001.nii.gz"
    img = nib.load(victim)
    arr = np.asanyarray(img.dataobj)
    nib.save(nib.Nifti1Image(np.stack([arr, arr], -1), img.affine), victim)  # 2 channels
    with pytest.raises(DatasetError) as e:
        prepare_dataset("liver", d, channels={"image": 1, "label": 1})
    assert "expected 1 channel(s), got 2" in str(e.value) and str(victim) in str(e.value)


def test_select_fold_partitions():
    data = [{"image": f"{i}.nii", "subject": f"s{i // 2}"} for i in range(20)]
    vals = []
    for f in range(5):
        tr, va = select_fold(data, f, 5, seed=1)
        assert len(tr) + len(va) == 20 and not {d["image"] for d in tr} & {d["image"] for d in va}
        vals += [d["image"] for d in va]
    assert sorted(vals) == sorted(d["image"] for d in data)  # every entry validates exactly once
    assert select_fold(data, 2, 5, seed=1) == select_fold(data, 2, 5, seed=1)
    tr, va = select_fold(data, 0, 5, group_key="subject")
    assert not {d["subject"] for d in tr} & {d["subject"] for d in va}
    with pytest.raises(ValueError):
        select_fold(data, 5, 5)


def test_prepare_with_fold(liver_dir):
    out = prepare_dataset("liver", liver_dir, fold=1, num_folds=2)
    assert len(out["training"]) == 2 and len(out["validation"]) == 2


def test_list_inputs(liver_dir, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    val = json.loads((Path(liver_dir) / "dataset.json").read_text())["validation"]
    assert len(val) == 2  # 4 subjects, the liver demo keeps 3/8 for validation
    assert [d["image"] for d in list_inputs(None, liver_dir)] == [str(Path(liver_dir) / v["image"]) for v in val]
    assert len(list_inputs(Path(liver_dir) / "imagesTr")) == 4
    f = sorted((Path(liver_dir) / "imagesTr").iterdir())[0]
    assert list_inputs(f) == [{"image": str(f)}]
    series = tmp_path / "series"
    series.mkdir()
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), series / "1.dcm")
    assert list_inputs(series) == [{"image": str(series)}]  # a DICOM series folder is one input
    with pytest.raises(DatasetError):
        list_inputs(tmp_path / "missing")


# ------------------------------------------------------------------------------ checkpoints
def _tiny_trainer(net, opt, handlers, max_epochs):
    from ignite.engine import Engine

    data = [(torch.rand(4, 3), torch.rand(4, 1)) for _ in range(3)]

    def step(engine, batch):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(batch[0]), batch[1])
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    eng = Engine(step)
    for h in handlers:
        h.attach(eng)
    return eng, data


def test_checkpoint_manager_saves_atomically_and_resumes(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
    mgr = CheckpointManager(tmp_path / "models", {"network": net, "optimizer": opt, "lr_scheduler": sched})
    eng, data = _tiny_trainer(net, opt, [mgr], 2)
    from ignite.engine import Events

    eng.add_event_handler(Events.EPOCH_COMPLETED, lambda e: sched.step())
    eng.run(data, max_epochs=2)
    ck = torch.load(tmp_path / "models" / "checkpoint_last.pt", weights_only=False)
    assert set(ck) == {"network", "optimizer", "lr_scheduler", "trainer", "epoch", "rng_states"}
    assert ck["epoch"] == 2 and ck["trainer"]["iteration"] == 6
    assert _no_tmp_files(tmp_path / "models")

    # a fresh process state: new objects, resume=True, more epochs -> continues at epoch 3
    net2 = torch.nn.Linear(3, 1)
    opt2 = torch.optim.Adam(net2.parameters(), lr=0.01)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, 1, 0.5)
    mgr2 = CheckpointManager(tmp_path / "models", {"network": net2, "optimizer": opt2, "lr_scheduler": sched2}, resume=True)
    eng2, _ = _tiny_trainer(net2, opt2, [mgr2], 4)
    seen = []
    eng2.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.append(e.state.epoch))
    eng2.add_event_handler(Events.STARTED, lambda e: seen.append(("weights_equal", torch.equal(net2.weight, net.weight))))
    eng2.run(data, max_epochs=4)
    assert mgr2.resumed_from == 2
    assert seen[0] == ("weights_equal", True)
    assert seen[1:] == [3, 4]  # only the missing epochs ran
    assert eng2.state.iteration == 12
    assert sched2.last_epoch == ck["lr_scheduler"]["last_epoch"] > 0  # scheduler state restored (not stepped after)
    assert torch.load(tmp_path / "models" / "checkpoint_last.pt", weights_only=False)["epoch"] == 4


def test_resume_without_checkpoint_trains_from_scratch(tmp_path):
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    mgr = CheckpointManager(tmp_path, {"network": net}, resume=True)
    eng, data = _tiny_trainer(net, opt, [mgr], 1)
    eng.run(data, max_epochs=1)
    assert mgr.resumed_from is None and (tmp_path / "checkpoint_last.pt").is_file()


def test_best_model_saver_tracks_metric(tmp_path):
    from ignite.engine import Engine, Events

    net = torch.nn.Linear(2, 1)
    saver = BestModelSaver(tmp_path, net, metric_name="dice", mode="max")
    values = iter([0.2, 0.5, 0.4])

    ev = Engine(lambda e, b: None)

    @ev.on(Events.EPOCH_COMPLETED)
    def _metric(engine):
        engine.state.metrics["dice"] = next(values)

    saver.attach(ev)
    ev.run([0], max_epochs=3)
    assert saver.best_metric == 0.5 and saver.best_epoch == 2
    sd = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(sd) == {"weight", "bias"}
    s2 = BestModelSaver(tmp_path, net, "dice", mode="min")
    s2.load_state_dict(saver.state_dict())
    assert s2.best_epoch == 2
    with pytest.raises(ValueError):
        BestModelSaver(tmp_path, net, mode="best")


# ---------------------------------------------------------------------------------- export
_NO_PKG = (
    "import sys, torch; sys.modules['monai_hyperconv'] = None\n"
    "try:\n    import monai_hyperconv\n    raise SystemExit('package importable')\nexcept ImportError:\n    pass\n"
    "path, x_path, out_path = sys.argv[1:4]\n"
    "m = torch.export.load(path).module() if path.endswith('.pt2') else torch.jit.load(path)\n"
    "x = torch.load(x_path)\n"
    "with torch.no_grad():\n    torch.save(m(x), out_path)\n"
)


@pytest.mark.parametrize("suffix", [".ts", ".pt2"])
def test_export_baked_runs_without_the_package(tmp_path, suffix):
    from monai_hyperconv.layers import count_generated
    from monai_hyperconv.networks import create_network

    torch.manual_seed(0)
    net = create_network("hyper_unet", spatial_dims=2, in_channels=1, out_channels=2, channels=4, num_pools=2)
    assert count_generated(net) > 0
    # weights in a training checkpoint (nested, as CheckpointManager writes them, with DDP prefixes)
    torch.save({"network": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "ck.pt")
    fresh = create_network("hyper_unet", spatial_dims=2, in_channels=1, out_channels=2, channels=4, num_pools=2)
    out = export_baked(fresh, tmp_path / "ck.pt", tmp_path / f"model{suffix}", [1, 1, 32, 32])
    assert Path(out).is_file() and (tmp_path / "model_weights.pt").is_file()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        ref = net.eval()(x)
    torch.save(x, tmp_path / "x.pt")
    p = subprocess.run([sys.executable, "-c", _NO_PKG, out, str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    y = torch.load(tmp_path / "y.pt")
    assert torch.allclose(y, ref, atol=1e-4)
    baked_sd = torch.load(tmp_path / "model_weights.pt", weights_only=True)
    assert not any("hyper" in k.lower() for k in baked_sd)  # plain conv weights only


# --------------------------------------------------------------------------------- results
def test_result_writers(tmp_path):
    rows = [{"level": 0.0, "accuracy": 0.9}, {"level": 0.1, "accuracy": 0.75}]
    write_csv(rows, tmp_path / "r.csv")
    assert (tmp_path / "r.csv").read_text().splitlines() == ["level,accuracy", "0.0,0.9", "0.1,0.75"]
    write_markdown(rows, tmp_path / "r.md", title="Noise", notes="demo")
    md = (tmp_path / "r.md").read_text()
    assert md.startswith("# Noise") and "| 0.1000 | 0.7500 |" in md and md.rstrip().endswith("demo")
    assert markdown_table(rows).splitlines()[1] == "|---:|---:|"
    plot_curves([0, 0.1], {"acc": [0.9, 0.75]}, tmp_path / "c.png", xlabel="level")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _no_tmp_files(tmp_path)


def test_curves_put_metrics_of_another_scale_on_a_second_axis(tmp_path, monkeypatch):
    from monai_hyperconv.bundle.results import split_axes

    nan = float("nan")
    # reconstruction: an MSE loss of ~0.01 next to a PSNR of ~20 dB -> the PSNR moves right
    recon = {"train_loss": [0.0107, 0.0074], "val_psnr": [nan, 21.1], "val_ssim": [nan, 0.61]}
    assert split_axes(recon) == (["train_loss"], ["val_psnr", "val_ssim"])
    # segmentation: Dice loss and Dice share the [0, 1] scale -> one axis
    seg = {"train_loss": [1.0, 0.45], "val_mean_dice": [0.0, 0.5]}
    assert split_axes(seg) == (["train_loss", "val_mean_dice"], [])
    assert split_axes({"train_loss": [nan, nan], "val_psnr": [20.0]}) == (["train_loss", "val_psnr"], [])
    assert split_axes({"val_psnr": [20.0]}) == (["val_psnr"], [])
    # the plot draws the right-hand series against a twin axis
    import matplotlib.axes

    drawn = []
    orig = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, *a, **k: drawn.append((id(self), k["label"])) or orig(self, *a, **k))
    plot_curves([1, 2], recon, tmp_path / "c.png", right=["val_psnr", "val_ssim"])
    axes = {label: ax for ax, label in drawn}
    assert axes["val_psnr"] == axes["val_ssim"] != axes["train_loss"]
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="val_dice"):
        plot_curves([1, 2], recon, tmp_path / "d.png", right=["val_dice"])
