"""bundles/liver_lesion_segmentation: train -> evaluate -> inference on tiny demo data, workflow
properties, output geometry, resume, bad input, baked export without the package, DDP on CPU."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_hyperconv.bundle import DatasetError
from monai_hyperconv.bundle.testing import (
    REPO_ROOT, bundle_cli_args, find_in_chain, last_weights, make_tiny_demo, run_cli, run_config, run_exported_without_package,
    same_weights,
)

BUNDLE = REPO_ROOT / "bundles" / "liver_lesion_segmentation"
# tiny: 32x32 slices of 32x32x8 volumes, a Hyper-UNet of width 8
TINY = {"image_size": 32, "network_def#channels": 8, "cache_num_workers": 0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 10 subjects -> 8 training, 2 validation volumes (2 so each of 2 DDP ranks validates one)
    return make_tiny_demo("liver", tmp_path_factory.mktemp("liver") / "data", n_subjects=10, size=(32, 32, 8))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("bundle_root")
    wf = run_config(BUNDLE, "train.json", "train", dataset_dir=data, bundle_root=root, epochs=1, **TINY)
    return root, wf


def _val_images(data):
    meta = json.loads((Path(data) / "dataset.json").read_text())
    return [Path(data) / it["image"] for it in meta["validation"]]


def test_config_files_and_metadata():
    for f in ("train.json", "evaluate.json", "inference.json", "multi_gpu_train.json", "metadata.json", "logging.conf", "demo.json"):
        assert (BUNDLE / "configs" / f).is_file(), f
    assert (BUNDLE / "LICENSE").read_text() == (REPO_ROOT / "LICENSE").read_text()
    assert (BUNDLE / "docs" / "README.md").is_file()
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert "monai-hyperconv" in meta["required_packages_version"]
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["num_channels"] == 1 and fmt["outputs"]["pred"]["num_channels"] == 1
    train = json.loads((BUNDLE / "configs" / "train.json").read_text())
    # the default recipe: Dice + CE, foreground-oversampled crops, warm-up + cosine decay
    assert train["loss"]["_target_"] == "DiceCELoss" and train["train"]["crop"]["_target_"] == "RandCropByPosNegLabeld"
    assert train["lr_scheduler"]["_target_"] == "monai.optimizers.WarmupCosineSchedule"
    assert train["image_size"] == 256 and train["batch_size"] == 8 and train["hu_window"] == [-100, 250]
    assert train["network_def"]["kernel_size"] == 5 and train["network_def"]["conv"] == ["hyper", {"n_l": 4}]
    # the papers' recipe stays selectable
    paper = json.loads((BUNDLE / "configs" / "paper.json").read_text())
    assert paper["loss"]["_target_"] == "DiceLoss" and paper["learning_rate"] == 1e-4
    assert paper["network_def#dropout"] == 0.5 and paper["train#crop"]["_target_"] == "Identityd"
    assert paper["network_def#conv"] == ["hyper", {"n_l": 4, "equalize_updates": False}]


def test_paper_recipe_resolves(data, tmp_path):
    from monai_hyperconv.bundle.testing import load_workflow
    from monai_hyperconv.layers import HyperConv

    wf = load_workflow(BUNDLE, ["train.json", "paper.json"], "train", dataset_dir=data, bundle_root=tmp_path, **TINY)
    net = wf.parser.get_parsed_content("network_def")
    convs = [m for m in net.modules() if isinstance(m, HyperConv)]
    assert convs and all(not m.equalize_updates for m in convs)
    assert type(wf.parser.get_parsed_content("loss")).__name__ == "DiceLoss"
    assert wf.parser.get_parsed_content("optimizer").param_groups[0]["lr"] == 1e-4
    # the papers validate and save the current weights: no weight average
    avg = wf.parser.get_parsed_content("weight_average")
    assert not avg.enabled and wf.parser.get_parsed_content("eval_network") is net


def test_default_recipe_reduces_loss_on_a_small_lesion():
    """A few Adam steps of the bundle's loss and network on one batch with a 3x3 lesion lower the loss."""
    from monai.bundle import ConfigParser

    torch.manual_seed(0)
    parser = ConfigParser()
    parser.read_config(BUNDLE / "configs" / "train.json")
    parser["network_def#channels"] = 8
    parser["device"] = "$torch.device('cpu')"
    net = parser.get_parsed_content("network_def")
    from monai_hyperconv.networks import init_output_layer

    init_output_layer(net, bias=parser["head_bias_init"])
    loss_fn = parser.get_parsed_content("loss")
    x = torch.rand(4, 1, 32, 32) * 0.2
    y = torch.zeros(4, 1, 32, 32)
    y[0, 0, 10:13, 20:23] = 1  # one small lesion in one slice of four
    x[y.bool()] += 0.5
    opt = torch.optim.Adam(net.parameters(), lr=parser["learning_rate"])
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < 0.9 * losses[0], losses


def test_same_seed_gives_bitwise_identical_weights(trained, data, tmp_path):
    root, _ = trained
    run_config(BUNDLE, "train.json", "train", dataset_dir=data, bundle_root=tmp_path, epochs=1, **TINY)
    assert same_weights(last_weights(root), last_weights(tmp_path))


def test_train_evaluate_infer_end_to_end(trained, data):
    """The default-suite end-to-end run: 1 epoch of training, evaluation, inference."""
    root, wf = trained
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1 and trainer.state.iteration > 0
    models = root / "models"
    assert (models / "model.pt").is_file() and (models / "checkpoint_last.pt").is_file()
    ck = torch.load(models / "checkpoint_last.pt", weights_only=False)
    assert {"network", "optimizer", "lr_scheduler", "trainer", "best", "curves", "weight_average"} <= set(ck)
    assert ck["epoch"] == 1 and ck["best"]["best_epoch"] == 1
    # the saved model is the weight average of the best (here: the only) epoch, not the last weights
    ema = ck["weight_average"]
    assert ema["num_updates"] == trainer.state.iteration and ema["decay"] == 0.99
    model = torch.load(models / "model.pt", weights_only=False)
    assert same_weights(model, ema["module"]) and not same_weights(model, ck["network"])
    log = list(csv.DictReader(open(root / "eval" / "training_log.csv")))
    assert [r["epoch"] for r in log] == ["1"] and 0.0 <= float(log[0]["val_mean_dice"]) <= 1.0
    assert (root / "eval" / "training_curves.png").is_file()
    assert list((root / "logs").glob("events.out.tfevents.*")), "no TensorBoard logs"

    # evaluate: volume-level Dice per case with MetricsSaver, summary files
    run_config(BUNDLE, ["train.json", "evaluate.json"], None, dataset_dir=data, bundle_root=root, **TINY)
    rows = list(csv.DictReader(open(root / "eval" / "mean_dice_raw.csv")))
    assert sorted(Path(r["filename"]).name for r in rows) == sorted(p.name for p in _val_images(data))
    summary = json.loads((root / "eval" / "summary.json").read_text())
    assert 0.0 <= summary["mean_dice"] <= 1.0 and summary["split"] == "validation"
    assert summary["network"].startswith("PaperUNet: ") and "HyperConv2d 5x5" in summary["network"]
    assert (root / "eval" / "summary.md").read_text().startswith("# Liver lesion segmentation")

    # inference: NIfTI predictions in the input geometry (default input: the validation images)
    run_config(BUNDLE, "inference.json", "infer", dataset_dir=data, bundle_root=root, **TINY)
    for img in _val_images(data):
        pred = root / "eval" / "predictions" / img.name.replace(".nii.gz", "_seg.nii.gz")
        assert pred.is_file(), pred
        a, b = nib.load(img), nib.load(pred)
        assert b.shape[:3] == a.shape, (b.shape, a.shape)
        np.testing.assert_allclose(b.affine, a.affine, atol=1e-3)
        assert set(np.unique(np.asanyarray(b.dataobj))) <= {0, 1}


def test_inference_reads_dicom_series(trained, tmp_path):
    """A DICOM series folder (read with ITK) -> a NIfTI in the series' geometry."""
    pydicom = pytest.importorskip("pydicom")
    import itk

    import itk

    root, _ = trained
    # a 3-slice CT series made from the real pydicom test image (positions 2.5 mm apart)
    src = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    series = tmp_path / "series"
    series.mkdir()
    uid = pydicom.uid.generate_uid()
    for i in range(3):
        ds = src.copy()
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        pos = [float(v) for v in src.ImagePositionPatient]
        ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 2.5 * i]
        ds.SliceLocation = pos[2] + 2.5 * i
        ds.save_as(series / f"{i:03d}.dcm")
    out = tmp_path / "pred"
    run_config(BUNDLE, "inference.json", "infer", input_path=series, output_dir=out, bundle_root=root, **TINY)
    preds = list(out.glob("*.nii.gz"))
    assert len(preds) == 1
    ref = itk.imread(str(series))  # the series as ITK sees it
    p = nib.load(preds[0])
    assert p.shape[:3] == tuple(reversed(ref.shape)) or p.shape[:3] == tuple(ref.GetLargestPossibleRegion().GetSize())
    np.testing.assert_allclose(np.sqrt((p.affine[:3, :3] ** 2).sum(0)), list(ref.GetSpacing()), atol=1e-3)


@pytest.mark.slow  # ~30-70 s on 2 shared cores; the resume logic itself is unit-tested in test_bundle_common.py
def test_resume_continues_from_checkpoint(trained, data, tmp_path):
    root, _ = trained
    r2 = tmp_path / "resume_root"
    shutil.copytree(root / "models", r2 / "models")
    shutil.copytree(root / "eval", r2 / "eval")
    wf = run_config(BUNDLE, "train.json", "train", dataset_dir=data, bundle_root=r2, epochs=2, resume=True, **TINY)
    trainer = wf.parser.get_parsed_content("train#trainer")
    mgr = wf.parser.get_parsed_content("train#handlers#4")
    assert mgr.resumed_from == 1 and trainer.state.epoch == 2
    ck = torch.load(r2 / "models" / "checkpoint_last.pt", weights_only=False)
    ck1 = torch.load(root / "models" / "checkpoint_last.pt", weights_only=False)
    assert ck["epoch"] == 2 and ck["trainer"]["iteration"] == 2 * ck1["trainer"]["iteration"]
    log = list(csv.DictReader(open(r2 / "eval" / "training_log.csv")))
    assert [r["epoch"] for r in log] == ["1", "2"]  # history kept across the restart


@pytest.mark.parametrize("breakage", ["no_dataset_json", "missing_file", "corrupt_image", "wrong_channels"])
def test_bad_input_fails_before_training(data, tmp_path, breakage):
    d = tmp_path / "data"
    shutil.copytree(data, d)
    victim = d / "imagesTr" / "liver_003.nii.gz"
    if breakage == "no_dataset_json":
        (d / "dataset.json").unlink()
        expect = ["no dataset.json", str(d)]
    elif breakage == "missing_file":
        victim.unlink()
        expect = [str(victim), "['image']", "not found"]
    elif breakage == "corrupt_image":
        victim.write_bytes(victim.read_bytes()[:200])
        expect = [str(victim), "['image']", "cannot read"]
    else:
        a = nib.load(victim)
        arr = np.asanyarray(a.dataobj)
        nib.save(nib.Nifti1Image(np.stack([arr] * 3, -1), a.affine), victim)
        expect = [str(victim), "['image']", "expected 1 channel(s), got 3"]
    root = tmp_path / "root"
    with pytest.raises(Exception) as e:
        run_config(BUNDLE, "train.json", "train", dataset_dir=d, bundle_root=root, epochs=1, **TINY)
    err = find_in_chain(e.value, DatasetError)
    assert err is not None, f"expected a DatasetError, got {e.value!r}"
    for s in expect:
        assert s in str(err), (s, str(err))
    assert not (root / "models").exists()  # nothing trained


def test_verify_net_in_out():
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def", meta_file=str(BUNDLE / "configs" / "metadata.json"),
        config_file=str(BUNDLE / "configs" / "inference.json"), n=1, **{"network_def#channels": 8},
    )


def test_baked_export_runs_without_package(trained, tmp_path):
    root, _ = trained
    out = tmp_path / "model_baked.ts"
    run_config(BUNDLE, "inference.json", None, run_id="export", bundle_root=root, export_file=out, **TINY)
    assert out.is_file() and (tmp_path / "model_baked_weights.pt").is_file()
    # reference output of the trained (un-baked) network
    from monai_hyperconv.bundle import load_weights
    from monai_hyperconv.networks import create_network

    net = create_network("hyper_unet", spatial_dims=2, in_channels=1, out_channels=1, channels=8, kernel_size=5,
                         conv=("hyper", {"n_l": 4}), dropout=0.5)
    load_weights(net, root / "models" / "model.pt")
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        ref = net.eval()(x)
    assert torch.allclose(run_exported_without_package(out, x, workdir=tmp_path), ref, atol=1e-4)


def test_cli_train_then_ddp(data, tmp_path):
    """`python -m monai.bundle run` from the repository root, then 2 DDP processes (torchrun, gloo)."""
    root = tmp_path / "ddp_root"
    args = bundle_cli_args(BUNDLE, ["train.json", "multi_gpu_train.json"], dataset_dir=data, bundle_root=root,
                           epochs=1, **TINY)
    p = run_cli(args, torchrun_nproc=2, timeout=600)
    out = p.stdout + p.stderr
    assert out.count("SupervisedTrainer - INFO - Engine run finished") == 2, out[-3000:]  # both ranks
    ckpts = sorted(p.name for p in (root / "models").iterdir())
    assert ckpts == ["checkpoint_last.pt", "model.json", "model.pt"]  # model.json: the network_def
    ck = torch.load(root / "models" / "checkpoint_last.pt", weights_only=False)
    assert not any(k.startswith("module.") for k in ck["network"])  # saved un-wrapped: loads without DDP


def test_output_bias_starts_at_the_lesion_prior(data, tmp_path):
    """The 1x1 head's bias starts at head_bias_init (sigmoid(-4) ~ 0.018), or PyTorch's default with null."""
    from monai_hyperconv.bundle.testing import load_workflow

    wf = load_workflow(BUNDLE, "train.json", "train", dataset_dir=data, bundle_root=tmp_path / "a", **TINY)
    wf.initialize()
    bias = wf.parser.get_parsed_content("network_def").decoder.head.bias.detach()
    assert torch.all(bias == -4.0)
    wf = load_workflow(BUNDLE, "train.json", "train", dataset_dir=data, bundle_root=tmp_path / "b", head_bias_init=None, **TINY)
    wf.initialize()
    assert not torch.all(wf.parser.get_parsed_content("network_def").decoder.head.bias.detach() == -4.0)


def test_evaluate_any_network_def(data, tmp_path):
    """evaluate.json works for a network_def that is not ours (MONAI's BasicUNet has no 'name' key)."""
    basic = {"_target_": "monai.networks.nets.BasicUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 1,
             "features": [4, 4, 8, 8, 16, 4]}
    ov = {**{k: v for k, v in TINY.items() if not k.startswith("network_def")}, "network_def": basic}
    run_config(BUNDLE, "train.json", "train", dataset_dir=data, bundle_root=tmp_path, epochs=1, **ov)
    run_config(BUNDLE, ["train.json", "evaluate.json"], None, dataset_dir=data, bundle_root=tmp_path, **ov)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["network"].startswith("BasicUNet: ") and "Conv2d 3x3" in summary["network"]
