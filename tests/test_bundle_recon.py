"""bundles/brain_mri_reconstruction: train -> evaluate (+ k-space noise sweep) -> inference on a tiny demo,
residual identity at initialisation, baked export without the package, verify_net_in_out, bad inputs."""

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

BUNDLE = REPO_ROOT / "bundles" / "brain_mri_reconstruction"
SIZE = 32
FAST = dict(image_size=SIZE, batch_size=4, num_workers=0, cache_num_workers=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    # 3 subjects x 4 slices: 8 training slices (2 subjects), 4 validation slices (1 subject)
    return make_tiny_demo("brain_recon", tmp_path_factory.mktemp("recon") / "data", n_subjects=3, size=(SIZE, SIZE))


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    wf = run_config(BUNDLE, "train.json", "train", dataset_dir=tiny, bundle_root=root, epochs=1, val_interval=1, **FAST)
    return root, wf


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_residual_network_starts_as_identity(tiny, tmp_path):
    """The residual Hyper-UNet's head is zero-initialised: before training, output == zero-filled input."""
    wf = load_workflow(BUNDLE, "train.json", None, dataset_dir=tiny, bundle_root=tmp_path)
    wf.initialize()
    net = wf.parser.get_parsed_content("network_def").eval()
    x = torch.rand(2, 1, 64, 64)
    assert torch.equal(net(x), x)
    assert type(net).__name__ == "SkipConnection" and type(net.submodule).__name__ == "PaperUNet"
    assert any(type(m).__name__ == "HyperConv2d" for m in net.modules())
    # direct mapping and plain convs from the command line
    wf = load_workflow(BUNDLE, "train.json", None, dataset_dir=tiny, bundle_root=tmp_path, residual=False,
                       **{"unet#conv": "conv"})
    wf.initialize()
    net = wf.parser.get_parsed_content("network_def")
    assert type(net).__name__ == "PaperUNet" and not any("Hyper" in type(m).__name__ for m in net.modules())


def test_train_outputs(trained):
    root, wf = trained
    for f in ("models/checkpoint_last.pt", "models/model.pt", "eval/training_log.csv", "eval/training_curves.png"):
        assert (root / f).is_file(), f
    assert any((root / "logs").glob("events.out.tfevents.*"))
    (row,) = _rows(root / "eval/training_log.csv")
    # one epoch from the identity: the output is still close to the zero-filled input
    assert np.isfinite(float(row["val_psnr"])) and 5 < float(row["val_psnr_zero_filled"]) < 40


def test_evaluate_with_noise_sweep(trained, tiny):
    root, _ = trained
    levels = [0.0, 0.05, 0.2]
    run_config(BUNDLE, "evaluate.json", "infer", dataset_dir=tiny, bundle_root=root, noise_levels=levels, **FAST)
    for name in ("psnr", "ssim", "psnr_zero_filled", "ssim_zero_filled"):
        rows = list(csv.reader(open(root / f"eval/{name}_raw.csv")))
        assert len(rows) == 1 + 4, name  # header + 4 validation slices
    summary = json.loads((root / "eval/summary.json").read_text())
    assert summary["n_cases"] == 4 and 0 < summary["ssim_zero_filled"] < 1
    sweep = _rows(root / "eval/noise_sweep.csv")
    assert [float(r["noise_std"]) for r in sweep] == levels
    zf = [float(r["psnr_zero_filled"]) for r in sweep]
    assert zf[0] == pytest.approx(summary["psnr_zero_filled"], abs=1e-3)  # noise 0 == the plain evaluation
    assert all(a > b for a, b in zip(zf, zf[1:]))  # more k-space noise, lower PSNR of the zero-filled input
    assert all(np.isfinite(float(r["psnr"])) for r in sweep)
    assert (root / "eval/noise_sweep.png").stat().st_size > 1000


def test_inference_geometry(trained, tiny):
    root, _ = trained
    src = sorted((Path(tiny) / "imagesTr").glob("*.nii.gz"))[0]
    img = nib.load(src)
    big = np.kron(np.asarray(img.dataobj), np.ones((2, 1), np.float32))  # 64 x 32, anisotropic
    aff = img.affine @ np.diag([0.5, 1, 1, 1])
    inp = root / "in" / "case.nii.gz"
    inp.parent.mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(big, aff), inp)
    run_config(BUNDLE, "inference.json", "infer", dataset_dir=tiny, bundle_root=root, input_path=inp, image_size=SIZE)
    for post in ("recon", "zero_filled"):
        out = nib.load(root / f"eval/predictions/case_{post}.nii.gz")
        assert out.shape[:2] == big.shape and np.allclose(out.affine, aff, atol=1e-4), post
        assert np.isfinite(np.asarray(out.dataobj)).all()


def test_verify_net_in_out_and_baked_export(trained, tmp_path):
    from monai.bundle import verify_net_in_out

    root, _ = trained
    verify_net_in_out(net_id="network_def", meta_file=str(BUNDLE / "configs/metadata.json"),
                      config_file=str(BUNDLE / "configs/inference.json"), bundle_root=str(root), device="cpu")
    wf = load_workflow(BUNDLE, "inference.json", None, bundle_root=root, image_size=SIZE)
    wf.initialize()
    wf.parser.get_parsed_content("export")
    ts = root / "models/model_baked.pt2"
    assert ts.is_file()
    x = torch.rand(1, 1, SIZE, SIZE)
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
    items = json.loads((Path(tiny) / "dataset.json").read_text())["training"]

    def copy(name):
        d = tmp_path / name
        shutil.copytree(tiny, d)
        return d, [d / it["image"] for it in items]

    d, files = copy("missing")
    files[1].unlink()
    assert re.search(rf"training\[1\]\['image'\].*not found.*{files[1].name}", _data_error(d, tmp_path / "b"))

    d, files = copy("channels")
    img = nib.load(files[2])
    nib.save(nib.Nifti1Image(np.stack([np.asarray(img.dataobj)] * 2, -1), img.affine), files[2])
    assert re.search(r"training\[2\]\['image'\].*expected 1 channel.*got 2", _data_error(d, tmp_path / "b"))

    d, files = copy("corrupt")
    raw = gzip.decompress(files[3].read_bytes())
    files[3].write_bytes(gzip.compress(raw[: len(raw) // 2]))
    assert re.search(rf"training\[3\]\['image'\].*cannot read.*{files[3].name}", _data_error(d, tmp_path / "b"))
