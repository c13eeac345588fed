"""bundles/adaptive_trimap_segmentation: train -> evaluate -> inference on a tiny demo, first-layer switch,
baked export without the package, verify_net_in_out, bad inputs."""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_hyperconv.bundle.testing import REPO_ROOT, load_workflow, make_tiny_demo, run_config, dataset_error, run_exported_without_package

BUNDLE = REPO_ROOT / "bundles" / "adaptive_trimap_segmentation"
SIZE = 32
FAST = dict(image_size=SIZE, batch_size=4, num_workers=0, cache_num_workers=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_demo("trimap", tmp_path_factory.mktemp("trimap") / "data", n_subjects=6, size=(SIZE, SIZE))


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    wf = run_config(BUNDLE, "train.json", "train", dataset_dir=tiny, bundle_root=root, epochs=1, val_interval=1, **FAST)
    return root, wf


def test_train_outputs(trained, tiny):
    root, wf = trained
    for f in ("models/checkpoint_last.pt", "models/model.pt", "eval/training_log.csv", "eval/training_curves.png"):
        assert (root / f).is_file(), f
    assert any((root / "logs").glob("events.out.tfevents.*"))
    with open(root / "eval/training_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and 0.0 <= float(rows[0]["val_mean_dice"]) <= 1.0
    ck = torch.load(root / "models/checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert ck["trainer"]["iteration"] == 2 and {"network", "optimizer", "lr_scheduler", "best", "curves"} <= set(ck)


def test_resume(trained, tiny):
    """--resume true continues from checkpoint_last.pt to the new --epochs."""
    root, _ = trained
    wf2 = run_config(BUNDLE, "train.json", "train", dataset_dir=tiny, bundle_root=root, epochs=2, val_interval=1,
                     resume=True, **FAST)
    assert wf2.parser.get_parsed_content("train#trainer").state.epoch == 2
    ck = torch.load(root / "models/checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert ck["trainer"]["iteration"] == 4 and len(ck["curves"]["history"]) == 2


def test_evaluate_and_inference(trained, tiny):
    root, _ = trained
    run_config(BUNDLE, "evaluate.json", "infer", dataset_dir=tiny, bundle_root=root, **FAST)
    with open(root / "eval/val_mean_dice_raw.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:3] == ["filename", "class0", "class1"] and len(rows) == 2  # one validation case, 2 classes
    summary = json.loads((root / "eval/summary.json").read_text())
    assert 0.0 <= summary["val_mean_dice"] <= 1.0 and summary["n_cases"] == 1

    # inference on a file whose size differs from the network's: the prediction is back in its geometry
    src = Path(tiny) / "imagesTr" / "shape_0000.nii.gz"
    img = nib.load(src)
    big = np.kron(np.asarray(img.dataobj), np.ones((2, 1), np.float32))  # 64 x 32, anisotropic
    aff = img.affine @ np.diag([0.5, 1, 1, 1])
    inp = root / "in" / "case.nii.gz"
    inp.parent.mkdir()
    nib.save(nib.Nifti1Image(big, aff), inp)
    run_config(BUNDLE, "inference.json", "infer", dataset_dir=tiny, bundle_root=root, input_path=inp,
               image_size=SIZE)
    out = root / "eval/predictions/case_trimap.nii.gz"
    assert out.is_file()
    pred = nib.load(out)
    assert pred.shape[:2] == big.shape and np.allclose(pred.affine, aff, atol=1e-4)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}


@pytest.mark.parametrize("first_conv,k,cls", [("adaptive", 7, "AdaptiveConv2d"), ("conv", 3, "Conv2d"), ("conv", 7, "Conv2d")])
def test_first_layer_switch(first_conv, k, cls):
    wf = load_workflow(BUNDLE, "train.json", None, **{"network_def#first_conv": first_conv, "network_def#first_kernel_size": k})
    wf.initialize()
    net = wf.parser.get_parsed_content("network_def")
    conv = net.first.conv
    assert type(conv).__name__ == cls and tuple(conv.kernel_size) == (k, k)
    # every other conv of the U-Net stays plain
    from monai_hyperconv.layers import GeneratedConv

    others = [m for m in net.unet.modules() if isinstance(m, (torch.nn.Conv2d, GeneratedConv))]
    assert len(others) > 10 and all(type(m) is torch.nn.Conv2d for m in others)
    assert net(torch.rand(2, 1, SIZE, SIZE)).shape == (2, 3, SIZE, SIZE)


def test_verify_net_in_out_and_baked_export(trained, tmp_path):
    from monai.bundle import verify_net_in_out

    root, _ = trained
    verify_net_in_out(net_id="network_def", meta_file=str(BUNDLE / "configs/metadata.json"),
                      config_file=str(BUNDLE / "configs/inference.json"), bundle_root=str(root), device="cpu")
    wf = load_workflow(BUNDLE, "inference.json", None, bundle_root=root, image_size=SIZE)
    wf.initialize()
    wf.parser.get_parsed_content("export")
    ts = root / "models/model_baked.pt2"
    assert ts.is_file() and (root / "models/model_baked_weights.pt").is_file()
    x = torch.rand(1, 1, SIZE, SIZE)
    net = wf.parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(root / "models/model.pt", map_location="cpu"))
    ref = net.eval()(x).detach().numpy()
    y = run_exported_without_package(ts, x, workdir=tmp_path).numpy()
    assert np.abs(y - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def _data_error(data_dir, root) -> str:
    return dataset_error(BUNDLE, data_dir, root)


def test_bad_inputs(tiny, tmp_path):
    import shutil

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no dataset.json" in _data_error(empty, tmp_path / "b")

    def copy(name):
        d = tmp_path / name
        shutil.copytree(tiny, d)
        return d

    d = copy("missing")
    os.remove(d / "labelsTr" / "shape_0001.nii.gz")
    assert re.search(r"training\[1\]\['label'\].*not found.*shape_0001", _data_error(d, tmp_path / "b"))

    d = copy("channels")
    f = d / "imagesTr" / "shape_0002.nii.gz"
    img = nib.load(f)
    two = np.stack([np.asarray(img.dataobj)] * 2, -1)
    nib.save(nib.Nifti1Image(two, img.affine), f)
    assert re.search(r"training\[2\]\['image'\].*expected 1 channel.*got 2", _data_error(d, tmp_path / "b"))

    d = copy("corrupt")
    f = d / "imagesTr" / "shape_0003.nii.gz"
    raw = gzip.decompress(f.read_bytes())
    f.write_bytes(gzip.compress(raw[: len(raw) // 2]))  # truncated image data
    assert re.search(r"training\[3\]\['image'\].*cannot read.*shape_0003", _data_error(d, tmp_path / "b"))
