"""bundles/ms_lesion_segmentation: train -> evaluate -> inference on a tiny demo, rater intersection, slices of the
three planes, the default recipe (Dice + CE, lesion-oversampled patches, warm-up + cosine) and the papers' recipe
(configs/paper.json), orthogonal-plane inference, k-fold selection, baked export without the package, bad inputs."""

from __future__ import annotations

import csv
import gzip
import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_hyperconv.bundle.testing import REPO_ROOT, load_workflow, make_tiny_demo, run_config, dataset_error, run_exported_without_package

BUNDLE = REPO_ROOT / "bundles" / "ms_lesion_segmentation"
SHAPE = (32, 40, 32)
PATCH = 24  # the default patch_size for these slices: 2/3 of the padded 40x40 slice, a multiple of 8
# fold -1: keep dataset.json's split (2 training subjects, 1 validation subject)
FAST = dict(crop_size=list(SHAPE), fold=-1, batch_size=4, slices_per_epoch=8, num_workers=0, cache_num_workers=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_demo("ms", tmp_path_factory.mktemp("ms") / "data", n_subjects=3, size=SHAPE)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    wf = run_config(BUNDLE, "train.json", "train", dataset_dir=tiny, bundle_root=root, epochs=1, val_interval=1, **FAST)
    return root, wf


def test_train_outputs(trained):
    root, _ = trained
    for f in ("models/checkpoint_last.pt", "models/model.pt", "eval/training_log.csv", "eval/training_curves.png"):
        assert (root / f).is_file(), f
    assert any((root / "logs").glob("events.out.tfevents.*"))
    (row,) = list(csv.DictReader(open(root / "eval/training_log.csv")))
    assert 0.0 <= float(row["val_mean_dice"]) <= 1.0


def test_rater_intersection_zscore_and_three_planes(trained, tiny):
    _, wf = trained
    vol = wf.parser.get_parsed_content("train#volumes")[0]
    item = wf.parser.get_parsed_content("datalists")["training"][0]
    r1, r2 = (np.asarray(nib.load(f).dataobj) > 0 for f in item["label"])
    assert vol["image"].shape == (4, *SHAPE) and vol["label"].shape == (1, *SHAPE)
    assert np.array_equal(vol["label"][0].numpy() > 0, r1 & r2) and (r1 & r2).sum() < (r1 | r2).sum()
    img = vol["image"].numpy()
    for c in range(4):  # z-score over the non-zero (brain) voxels of each contrast
        nz = img[c][img[c] != 0]
        assert abs(nz.mean()) < 1e-3 and abs(nz.std() - 1) < 1e-2
    per_plane = [slicer(vol) for slicer in wf.parser.get_parsed_content("train#slicers")]
    planes = {s["image"].shape[1:] for p in per_plane for s in p}
    assert planes == {SHAPE[1:], (SHAPE[0], SHAPE[2]), SHAPE[:2]}  # all three orthogonal planes
    slices = wf.parser.get_parsed_content("train#slices")
    assert len(slices) == sum(len(p) for v in wf.parser.get_parsed_content("train#volumes")
                              for p in (sl(v) for sl in wf.parser.get_parsed_content("train#slicers")))
    assert all(s["label"].sum() >= 1 for s in slices)  # demo default: slices with lesion pixels only
    # padded to one square size once, with cached lesion/background indices for the crops
    assert {s["image"].shape[1:] for s in slices} == {(max(SHAPE), max(SHAPE))}
    s0 = slices[0]
    assert len(s0["label_fg_indices"]) == int(s0["label"].sum()) and len(s0["label_bg_indices"]) == max(SHAPE) ** 2 - len(s0["label_fg_indices"])
    batch = next(iter(wf.parser.get_parsed_content("train#dataloader")))
    # batch_size slices x crops_per_slice patches each
    assert batch["image"].shape == (FAST["batch_size"] * 2, 4, PATCH, PATCH) and "label_fg_indices" not in batch
    # evaluation: each plane predicted slice by slice, stitched back, and the three planes averaged
    inferer = wf.parser.get_parsed_content("validate#inferer")
    net = torch.nn.Conv2d(4, 1, 3, padding=1)  # any 2-D network: a small one keeps the check fast
    x = vol["image"][None].float()
    with torch.no_grad():
        out = inferer(x, net)
        per_plane = []
        for ax in range(3):
            s2d = x.movedim(2 + ax, 1)  # (1, n, 4, a, b)
            y = net(s2d.flatten(0, 1)).unflatten(0, s2d.shape[:2])  # (1, n, 1, a, b)
            per_plane.append(y.movedim(1, 2 + ax))
        ref = torch.stack(per_plane).mean(0)
    assert out.shape == (1, 1, *SHAPE) and torch.allclose(torch.as_tensor(out), ref, atol=1e-5)


def test_recipe_configs():
    cfg = BUNDLE / "configs"
    train = json.loads((cfg / "train.json").read_text())
    # the default recipe: Dice + CE over the batch, lesion-oversampled patches, warm-up + cosine decay
    assert train["loss"] == {"_target_": "DiceCELoss", "sigmoid": True, "batch": True, "lambda_dice": 1.0, "lambda_ce": 1.0}
    crop = train["train"]["crop"]
    assert crop["_target_"] == "RandCropByPosNegLabeld" and (crop["pos"], crop["neg"]) == (1, 1)
    assert crop["num_samples"] == "@crops_per_slice" and crop["fg_indices_key"] == "label_fg_indices"
    assert train["train"]["preprocessing"]["transforms"][0] == "@train#crop"
    sched = train["lr_scheduler"]
    assert sched["_target_"] == "monai.optimizers.WarmupCosineSchedule"
    assert (sched["warmup_steps"], sched["t_total"]) == ("@warmup_epochs", "@epochs")
    assert train["batch_size"] == 8 and train["crops_per_slice"] == 2 and train["warmup_epochs"] == 3
    for name in ("train.json", "multi_gpu_train.json"):  # the 'Num foregrounds 0' warning is filtered in both
        init = json.loads((cfg / name).read_text())["initialize"]
        assert any(isinstance(i, dict) and i.get("_target_") == "warnings.filterwarnings"
                   and i.get("message") == "Num foregrounds 0" for i in init), name
    # the papers' recipe stays selectable
    paper = json.loads((cfg / "paper.json").read_text())
    assert paper["loss"]["_target_"] == "DiceLoss" and paper["learning_rate"] == 1e-4
    assert paper["lr_scheduler"]["gamma"] == 1.0 and paper["train#crop"]["_target_"] == "Identityd"
    assert paper["dropout"] == 0.5 and paper["batch_size"] == 16
    assert paper["network_def#conv"] == ["hyper", {"n_l": 4, "equalize_updates": False}]


def test_paper_recipe_resolves(tiny, tmp_path):
    from monai_hyperconv.layers import HyperConv

    fast = {**FAST, "batch_size": 2}
    wf = load_workflow(BUNDLE, ["train.json", "paper.json"], "train", dataset_dir=tiny, bundle_root=tmp_path, **fast)
    net = wf.parser.get_parsed_content("network_def")
    convs = [m for m in net.modules() if isinstance(m, HyperConv)]
    assert convs and all(not m.equalize_updates for m in convs)
    drops = [m for m in net.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    assert drops and all(m.p == 0.5 for m in drops)
    assert type(wf.parser.get_parsed_content("loss")).__name__ == "DiceLoss"
    opt = wf.parser.get_parsed_content("optimizer")
    sched = wf.parser.get_parsed_content("lr_scheduler")
    assert opt.param_groups[0]["lr"] == 1e-4 and type(sched).__name__ == "StepLR"
    batch = next(iter(wf.parser.get_parsed_content("train#dataloader")))
    assert batch["image"].shape == (2, 4, max(SHAPE), max(SHAPE))  # full padded slices, one per sample


def test_default_crops_oversample_lesion(trained):
    """Half the patches are centred on lesion (RandCropByPosNegLabeld pos 1 : neg 1), far above the lesion share."""
    _, wf = trained
    ds = wf.parser.get_parsed_content("train#dataset")
    slices = wf.parser.get_parsed_content("train#slices")
    share = float(np.mean([float(s["label"].mean()) for s in slices]))
    centred, n = 0, 0
    for i in range(min(len(ds), 30)):
        for crop in ds[i]:
            assert crop["image"].shape == (4, PATCH, PATCH)
            centred += int(crop["label"][0, PATCH // 2, PATCH // 2] > 0) + int(crop["label"][0, PATCH // 2 - 1, PATCH // 2 - 1] > 0)
            n += 2
    assert share < 0.1 and centred / n > 0.25, (share, centred / n)


def test_folds(tmp_path):
    data = make_tiny_demo("ms", tmp_path / "data", n_subjects=5, size=(16, 16, 16))
    vals, all_ids = [], None
    for k in range(5):
        wf = load_workflow(BUNDLE, "train.json", None, dataset_dir=data, bundle_root=tmp_path / "b", fold=k)
        wf.initialize()
        dl = wf.parser.get_parsed_content("datalists")
        ids = {tuple(d["image"]) for d in dl["training"] + dl["validation"]}
        all_ids = all_ids or ids
        assert ids == all_ids and len(ids) == 5
        vals.append({tuple(d["image"]) for d in dl["validation"]})
    assert all(len(v) == 1 for v in vals) and set().union(*vals) == all_ids  # each subject validates once


def test_evaluate_and_inference_geometry(trained, tiny, tmp_path):
    root, _ = trained
    run_config(BUNDLE, "evaluate.json", "infer", dataset_dir=tiny, bundle_root=root, crop_size=list(SHAPE), fold=-1)
    rows = list(csv.reader(open(root / "eval/val_mean_dice_raw.csv")))
    assert len(rows) == 2 and rows[1][0].endswith("_flair.nii.gz")
    summary = json.loads((root / "eval/summary.json").read_text())
    assert {"val_mean_dice", "val_sensitivity", "val_precision"} <= set(summary) and summary["n_cases"] == 1

    # a 4-channel NIfTI in LPS orientation, larger than the crop: the mask comes back in its geometry
    item = json.loads((Path(tiny) / "dataset.json").read_text())["validation"][0]
    imgs = [nib.load(Path(tiny) / f) for f in item["image"]]
    data = np.stack([np.asarray(i.dataobj, np.float32) for i in imgs], -1)[::-1, ::-1]
    data = np.pad(data, ((4, 4), (0, 8), (2, 2), (0, 0)))
    aff = imgs[0].affine @ np.diag([-1, -1, 1, 1])
    inp = tmp_path / "case4ch.nii.gz"
    nib.save(nib.Nifti1Image(data, aff), inp)
    run_config(BUNDLE, "inference.json", "infer", dataset_dir=tiny, bundle_root=root, crop_size=list(SHAPE), input_path=inp)
    pred = nib.load(root / "eval/predictions/case4ch_lesion.nii.gz")
    assert pred.shape[:3] == data.shape[:3] and np.allclose(pred.affine, aff, atol=1e-4)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}

    # wrong number of contrasts at inference: a clear error naming the file
    one = tmp_path / "flair_only.nii.gz"
    shutil.copy(Path(tiny) / item["image"][0], one)
    with pytest.raises(Exception) as info:
        run_config(BUNDLE, "inference.json", "infer", dataset_dir=tiny, bundle_root=root, crop_size=list(SHAPE),
                   input_path=one)
    chain, e = [], info.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    assert any(re.search(r"flair_only.*1 channel.*4 contrasts", m) for m in chain), chain


def test_verify_net_in_out_and_baked_export(trained, tmp_path):
    from monai.bundle import verify_net_in_out

    root, _ = trained
    verify_net_in_out(net_id="network_def", meta_file=str(BUNDLE / "configs/metadata.json"),
                      config_file=str(BUNDLE / "configs/inference.json"), bundle_root=str(root), device="cpu")
    wf = load_workflow(BUNDLE, "inference.json", None, bundle_root=root, crop_size=list(SHAPE))
    wf.initialize()
    wf.parser.get_parsed_content("export")
    ts = root / "models/model_baked.pt2"
    assert ts.is_file()
    x = torch.randn(1, 4, max(SHAPE), max(SHAPE))
    net = wf.parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(root / "models/model.pt", map_location="cpu"))
    ref = net.eval()(x).detach().numpy()
    y = run_exported_without_package(ts, x, workdir=tmp_path).numpy()
    assert np.abs(y - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def _data_error(data_dir, root) -> str:
    return dataset_error(BUNDLE, data_dir, root)


def test_bad_inputs(tiny, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no dataset.json" in _data_error(empty, tmp_path / "b")

    def copy(name):
        d = tmp_path / name
        shutil.copytree(tiny, d)
        return d, json.loads((d / "dataset.json").read_text())

    d, js = copy("missing")
    (d / js["training"][1]["image"][2]).unlink()  # T2 of the second subject
    assert re.search(r"training\[1\]\['image'\].*not found.*ms_001_t2", _data_error(d, tmp_path / "b"))

    d, js = copy("channels")
    js["training"][0]["image"] = js["training"][0]["image"][:3]  # PD missing from the list
    (d / "dataset.json").write_text(json.dumps(js))
    assert re.search(r"training\[0\]\['image'\].*expected 4 channel.*got 3", _data_error(d, tmp_path / "b"))

    d, js = copy("corrupt")
    f = d / js["training"][1]["label"][1]
    raw = gzip.decompress(f.read_bytes())
    f.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    assert re.search(r"training\[1\]\['label'\].*cannot read.*ms_001_rater2", _data_error(d, tmp_path / "b"))
