"""Predictions keep their input's geometry (shape, spacing, origin, direction as ITK reads it) for a
one-slice DICOM series, a one-slice NIfTI, an oblique NIfTI volume and an LPS-oriented DICOM series:
monai_hyperconv.transforms.SaveInInputGeometryd alone, then through the liver bundle's inference."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

itk = pytest.importorskip("itk")
pydicom = pytest.importorskip("pydicom")

from monai_hyperconv.bundle.testing import REPO_ROOT, run_config  # noqa: E402

BUNDLE = REPO_ROOT / "bundles" / "liver_lesion_segmentation"


def _rot(ax, deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [k for k in range(3) if k != ax]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _dicom_series(folder: Path, n_slices: int, step: float = 2.5) -> Path:
    """A CT series of ``n_slices`` files from pydicom's CT_small.dcm (128x128), ``step`` mm apart."""
    src = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    folder.mkdir(parents=True)
    uid = pydicom.uid.generate_uid()
    pos = [float(v) for v in src.ImagePositionPatient]
    for i in range(n_slices):
        ds = src.copy()
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + step * i]
        ds.SliceLocation = pos[2] + step * i
        ds.save_as(folder / f"{i:03d}.dcm")
    return folder


def _nifti(path: Path, shape, affine) -> Path:
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.integers(-200, 300, size=shape).astype(np.float32), affine), path)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("geometry_inputs")
    one_slice_affine = np.diag([-0.7, -0.8, 3.0, 1.0])
    one_slice_affine[:3, 3] = [10.0, -20.0, 35.0]
    oblique = np.eye(4)
    oblique[:3, :3] = _rot(2, 20) @ _rot(0, 10) @ np.diag([1.2, 0.9, 2.5])
    oblique[:3, 3] = [-5.0, 12.0, 40.0]
    return {
        "dicom_one_slice": _dicom_series(d / "dicom_one_slice", 1),
        "nifti_one_slice": _nifti(d / "nifti_one_slice.nii.gz", (128, 128, 1), one_slice_affine),
        "nifti_oblique": _nifti(d / "nifti_oblique.nii.gz", (12, 10, 3), oblique),
        "dicom_lps": _dicom_series(d / "dicom_lps", 3),
    }


def _itk3(path: Path):
    """``path`` (a file or a DICOM series folder) read by ITK as a 3-D image."""
    image_type = itk.Image[itk.F, 3]
    if path.is_dir():
        names = itk.GDCMSeriesFileNames.New(Directory=str(path))
        files = names.GetFileNames(names.GetSeriesUIDs()[0])
        reader = itk.ImageSeriesReader[image_type].New(FileNames=files, ImageIO=itk.GDCMImageIO.New())
    else:
        reader = itk.ImageFileReader[image_type].New(FileName=str(path))
    reader.Update()
    return reader.GetOutput()


def _assert_same_geometry(pred: Path, src: Path):
    a, b = _itk3(src), _itk3(pred)
    assert tuple(b.GetLargestPossibleRegion().GetSize()) == tuple(a.GetLargestPossibleRegion().GetSize())
    np.testing.assert_allclose(np.asarray(b.GetSpacing()), np.asarray(a.GetSpacing()), atol=1e-4)
    np.testing.assert_allclose(np.asarray(b.GetOrigin()), np.asarray(a.GetOrigin()), atol=1e-3)
    np.testing.assert_allclose(itk.array_from_matrix(b.GetDirection()), itk.array_from_matrix(a.GetDirection()), atol=1e-4)
    # itk.imread's own header of the input, where it reads one in 3-D, agrees too
    ref = itk.imread(str(src))
    if ref.GetImageDimension() == 3:
        np.testing.assert_allclose(np.asarray(b.GetSpacing()), np.asarray(ref.GetSpacing()), atol=1e-4)
        np.testing.assert_allclose(np.asarray(b.GetOrigin()), np.asarray(ref.GetOrigin()), atol=1e-3)
    # a one-slice input gives a one-slice NIfTI, not a 2-D image
    n_slices = a.GetLargestPossibleRegion().GetSize()[2]
    assert nib.load(pred).shape[:3] == tuple(int(s) for s in a.GetLargestPossibleRegion().GetSize())[:2] + (n_slices,)


@pytest.mark.parametrize("name", ["dicom_one_slice", "nifti_one_slice", "nifti_oblique", "dicom_lps"])
def test_saver_keeps_geometry_and_voxel_order(inputs, tmp_path, name):
    """A 'prediction' computed voxel-wise from the loaded image (image > 50) comes back in the
    input's geometry and voxel order (compared with ITK's own read of the input)."""
    from monai.transforms import EnsureChannelFirstd, LoadImaged

    from monai_hyperconv.transforms import AddSliceAxisd, SaveInInputGeometryd

    src = inputs[name]
    d = EnsureChannelFirstd("image")(LoadImaged("image", reader="ITKReader", image_only=True)({"image": str(src)}))
    d = AddSliceAxisd("image")(d)
    img = d["image"]
    d["pred"] = (img > 50).to(torch.uint8)
    out = SaveInInputGeometryd("pred", tmp_path, postfix="seg")(d)
    pred = Path(out["pred_path"])
    assert pred.name.startswith(Path(str(src)).name.split(".")[0]) and pred.name.endswith("_seg.nii.gz")
    _assert_same_geometry(pred, src)
    ref = itk.array_from_image(_itk3(src))
    np.testing.assert_array_equal(itk.array_from_image(_itk3(pred)), (ref > 50).astype(np.float32))


def test_saver_rejects_a_prediction_off_the_input_grid(inputs, tmp_path):
    from monai.transforms import LoadImaged

    from monai_hyperconv.transforms import SaveInInputGeometryd

    d = LoadImaged("image", reader="ITKReader", image_only=True)({"image": str(inputs["nifti_oblique"])})
    d["pred"] = torch.zeros(1, 6, 5, 3)
    with pytest.raises(ValueError, match="not on the grid of its input"):
        SaveInInputGeometryd("pred", tmp_path)(d)


def test_liver_inference_keeps_geometry_for_every_input(inputs, tmp_path):
    """The liver bundle's inference.json on a folder of the four inputs (tiny random Hyper-UNet, 32x32 slices)."""
    from monai_hyperconv.bundle.network_def import network_def_of, write_network_def
    from monai_hyperconv.networks import create_network

    torch.manual_seed(0)
    net = create_network("hyper_unet", spatial_dims=2, in_channels=1, out_channels=1, channels=2, num_pools=3,
                         kernel_size=3, conv=["hyper", {"n_l": 2}], dropout=0.5, norm="batch")
    models = tmp_path / "models"
    models.mkdir()
    torch.save(net.state_dict(), models / "model.pt")
    write_network_def(models / "model.pt", network_def_of(net))
    folder = tmp_path / "in"
    folder.mkdir()
    for name, p in inputs.items():
        (folder / p.name).symlink_to(p, target_is_directory=p.is_dir())
    out = tmp_path / "pred"
    run_config(BUNDLE, "inference.json", "infer", bundle_root=tmp_path, input_path=folder, output_dir=out,
               image_size=32, device="$torch.device('cpu')", amp=False,
               **{"network_def#channels": 2, "network_def#kernel_size": 3, "network_def#conv": ["hyper", {"n_l": 2}]})
    for name, src in inputs.items():
        pred = out / f"{src.name.split('.')[0]}_seg.nii.gz"
        assert pred.is_file(), sorted(out.iterdir())
        _assert_same_geometry(pred, src)
        assert set(np.unique(np.asanyarray(nib.load(pred).dataobj)).tolist()) <= {0, 1}


@pytest.mark.parametrize("name", ["dicom_one_slice", "nifti_one_slice"])
def test_2d_bundle_path_takes_one_slice_and_writes_its_geometry(inputs, tmp_path, name):
    """The 2-D bundles' path (tri-map, reconstruction): DropSliceAxisd makes a one-slice volume 2-D for the
    network, SaveInInputGeometryd writes the 2-D prediction back as the input's one-slice volume."""
    from monai.transforms import EnsureChannelFirstd, LoadImaged

    from monai_hyperconv.transforms import DropSliceAxisd, SaveInInputGeometryd

    d = EnsureChannelFirstd("image")(LoadImaged("image", image_only=True)({"image": str(inputs[name])}))
    d = DropSliceAxisd("image")(d)
    assert d["image"].shape == (1, 128, 128)
    d["pred"] = (d["image"] > 50).to(torch.uint8)
    pred = Path(SaveInInputGeometryd("pred", tmp_path, postfix="seg")(d)["pred_path"])
    _assert_same_geometry(pred, inputs[name])
    ref = itk.array_from_image(_itk3(inputs[name]))
    np.testing.assert_array_equal(itk.array_from_image(_itk3(pred)), (ref > 50).astype(np.float32))


def test_2d_bundle_path_rejects_a_stack(inputs):
    from monai.transforms import EnsureChannelFirstd, LoadImaged

    from monai_hyperconv.transforms import DropSliceAxisd

    d = EnsureChannelFirstd("image")(LoadImaged("image", image_only=True)({"image": str(inputs["dicom_lps"])}))
    with pytest.raises(ValueError, match="volume of 3 slices"):
        DropSliceAxisd("image")(d)


def test_liver_inference_with_another_network_def(inputs, tmp_path):
    """A 2-channel model with the plain inference.json (32 channels): the mismatch error names the keys and
    the fix; with --use_saved_network_def true the saved network is built and inference runs."""
    from monai_hyperconv.bundle import NetworkDefMismatchError
    from monai_hyperconv.bundle.network_def import network_def_of, write_network_def
    from monai_hyperconv.bundle.testing import find_in_chain
    from monai_hyperconv.networks import create_network

    torch.manual_seed(0)
    net = create_network("hyper_unet", spatial_dims=2, in_channels=1, out_channels=1, channels=2, num_pools=3,
                         kernel_size=5, conv=["hyper", {"n_l": 4}], dropout=0.1, norm="batch")
    models = tmp_path / "models"
    models.mkdir()
    torch.save(net.state_dict(), models / "model.pt")
    write_network_def(models / "model.pt", network_def_of(net))
    common = dict(bundle_root=tmp_path, input_path=inputs["nifti_oblique"], output_dir=tmp_path / "pred", image_size=32,
                  device="$torch.device('cpu')", amp=False)
    with pytest.raises(Exception) as e:
        run_config(BUNDLE, "inference.json", "infer", **common)
    err = find_in_chain(e.value, NetworkDefMismatchError)
    assert err is not None, repr(e.value)
    assert "channels: checkpoint 2, config 32" in str(err) and "--network_def#channels 2" in str(err)
    assert "--network_def#dropout" not in str(err)  # dropout does not change the eval-mode network
    run_config(BUNDLE, "inference.json", "infer", use_saved_network_def=True, **common)
    pred = tmp_path / "pred" / "nifti_oblique_seg.nii.gz"
    _assert_same_geometry(pred, inputs["nifti_oblique"])
