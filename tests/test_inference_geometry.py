"""Predictions keep their input's geometry (shape, spacing, origin, direction as ITK reads it) for a
one-slice DICOM series, a one-slice NIfTI, an oblique NIfTI volume and an LPS-oriented DICOM series:
monai_hyperconv.transforms.SaveInInputGeometryd alone, then through the inference of the liver bundle and
of the 2-D bundles (tri-map, reconstruction, scale-space segmentation), which take stacks slice by slice."""

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
TRIMAP = REPO_ROOT / "bundles" / "adaptive_trimap_segmentation"
RECON = REPO_ROOT / "bundles" / "brain_mri_reconstruction"
SSHN_SEG = REPO_ROOT / "bundles" / "scale_space_segmentation"


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
def test_drop_slice_axis_takes_one_slice_and_writes_its_geometry(inputs, tmp_path, name):
    """DropSliceAxisd (no bundle uses it since the 2-D bundles take stacks) makes a one-slice volume 2-D;
    SaveInInputGeometryd writes the 2-D prediction back as the input's one-slice volume."""
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


def test_drop_slice_axis_rejects_a_stack(inputs):
    """DropSliceAxisd itself still refuses a stack (the 2-D bundles now run stacks slice by slice, see below)."""
    from monai.transforms import EnsureChannelFirstd, LoadImaged

    from monai_hyperconv.transforms import DropSliceAxisd

    d = EnsureChannelFirstd("image")(LoadImaged("image", image_only=True)({"image": str(inputs["dicom_lps"])}))
    with pytest.raises(ValueError, match="volume of 3 slices"):
        DropSliceAxisd("image")(d)


def test_slicewise_scaling_equals_each_slice_alone():
    """SliceWised scales each slice of a stack as that slice alone (not by the volume's min/max); the
    metadata and applied operations survive; an invertible transform is refused."""
    from monai.data import MetaTensor
    from monai.transforms import Resize, Resized, ScaleIntensity

    from monai_hyperconv.transforms import SliceWise, SliceWised

    g = torch.Generator().manual_seed(0)
    vol = MetaTensor(torch.rand(1, 6, 5, 3, generator=g) * torch.tensor([1.0, 10.0, 100.0]), affine=torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0])))
    vol = Resized("image", (6, 5, 3))({"image": vol})["image"]  # one tracked operation
    out = SliceWised("image", ScaleIntensity(minv=0.0, maxv=1.0))({"image": vol})["image"]
    assert isinstance(out, MetaTensor) and out.shape == vol.shape
    for i in range(3):
        ref = ScaleIntensity(minv=0.0, maxv=1.0)(vol.as_tensor()[..., i])
        assert torch.equal(out.as_tensor()[..., i], ref)
        assert out[..., i].min() == 0 and out[..., i].max() == 1
    assert torch.equal(out.affine, vol.affine) and len(out.applied_operations) == 1
    two_d = SliceWise(ScaleIntensity(minv=0.0, maxv=1.0))(vol[..., 1])
    assert torch.equal(two_d.as_tensor(), out.as_tensor()[..., 1])
    with pytest.raises(TypeError, match="invertible"):
        SliceWise(Resize((3, 3)))


# --------------------------------------------------------------------------- the 2-D bundles take stacks
# tiny networks (random weights); out_key: the config key of the predictions folder; postfixes: the files per input
_BUNDLES_2D = {
    "trimap": dict(bundle=TRIMAP, out_key="output_dir", postfixes=("trimap",), labels=True,
                   over={"image_size": 32, "amp": False, "network_def#channels": 2, "network_def#num_pools": 2}),
    "recon": dict(bundle=RECON, out_key="output_dir", postfixes=("recon", "zero_filled"), labels=False,
                  over={"image_size": 32, "amp": False, "unet#channels": 2, "unet#num_pools": 2, "unet#kernel_size": 3,
                        "unet#conv": ["hyper", {"n_l": 2}]}),
    "sshn_seg": dict(bundle=SSHN_SEG, out_key="pred_dir", postfixes=("seg",), labels=True,
                     over={"channels": 2, "num_pools": 2, "phi": 0.3, "image_size": [32, 32]}),
}

# the 2-D bundles' inference before they took stacks (a 2-D image or one slice: DropSliceAxisd, whole-image
# min-max scaling, SimpleInferer; the scale-space bundle: 2-D NIfTI only, SaveLikeInputd), for the
# one-slice comparison
_LOAD_2D = [{"_target_": "LoadImaged", "keys": "image"}, {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "monai_hyperconv.transforms.DropSliceAxisd", "keys": "image"}]
_SCALE = {"_target_": "ScaleIntensityd", "keys": "image", "minv": 0.0, "maxv": 1.0}
_RESIZE = {"_target_": "Resized", "keys": "image", "spatial_size": "$[@image_size, @image_size]", "mode": "area"}
_FLOAT = {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"}
_BEFORE = {
    "trimap": {"preprocessing#transforms": _LOAD_2D + [_SCALE, _RESIZE, _FLOAT], "inferer": {"_target_": "SimpleInferer"}},
    "recon": {"load_transforms": _LOAD_2D + [_RESIZE, _SCALE, _FLOAT], "inferer": {"_target_": "SimpleInferer"}},
    "sshn_seg": {"preprocessing#transforms": [{"_target_": "LoadImaged", "keys": "image", "image_only": True},
                                              {"_target_": "EnsureChannelFirstd", "keys": "image"}, _SCALE, _FLOAT],
                 "inferer": {"_target_": "SimpleInferer"},
                 "postprocessing#transforms#2": {"_target_": "monai_hyperconv.transforms.SaveLikeInputd", "keys": "pred",
                                                 "output_dir": "@pred_dir", "postfix": "seg", "source_key": "image"}},
}


def _random_model(name: str, root: Path) -> dict:
    """A random-weight tiny network of bundle ``name`` saved as ``root/models/model.pt`` (+ its network_def);
    returns the bundle's spec."""
    from monai_hyperconv.bundle.network_def import network_def_of, write_network_def
    from monai_hyperconv.bundle.testing import load_workflow

    spec = _BUNDLES_2D[name]
    wf = load_workflow(spec["bundle"], "inference.json", None, bundle_root=root, **spec["over"])
    wf.initialize()
    torch.manual_seed(0)
    net = wf.parser.get_parsed_content("network_def")
    with torch.no_grad():  # the residual reconstruction net starts as the identity: perturb every weight
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    (root / "models").mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), root / "models" / "model.pt")
    if network_def_of(net) is not None:
        write_network_def(root / "models" / "model.pt", network_def_of(net))
    return spec


def _infer(spec: dict, root: Path, folder: Path, out: Path, **extra) -> None:
    run_config(spec["bundle"], "inference.json", "infer", bundle_root=root, input_path=folder, device="$torch.device('cpu')",
               **{spec["out_key"]: out}, **spec["over"], **extra)


def _link_all(folder: Path, paths) -> Path:
    folder.mkdir()
    for p in paths:
        (folder / p.name).symlink_to(p, target_is_directory=p.is_dir())
    return folder


def _array(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def _stem(path: Path) -> str:
    return path.name.split(".")[0]


@pytest.mark.parametrize("name", sorted(_BUNDLES_2D))
def test_2d_bundle_inference_takes_stacks_in_their_geometry(inputs, tmp_path, name):
    """Inference of a 2-D bundle on a folder of a one-slice DICOM series, a one-slice NIfTI, an oblique
    3-slice NIfTI, a 3-slice LPS DICOM series and the oblique stack's slices as one-slice NIfTIs: every
    prediction has its input's geometry, and the stack's slice i equals the prediction for slice i alone."""
    spec = _random_model(name, tmp_path)
    stack = inputs["nifti_oblique"]
    img = nib.load(stack)
    slices = []
    for i in range(img.shape[2]):
        aff = img.affine.copy()
        aff[:3, 3] += aff[:3, 2] * i  # slice i's own position
        slices.append(tmp_path / f"oblique_slice{i}.nii.gz")
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., i:i + 1], aff), slices[-1])
    folder = _link_all(tmp_path / "in", list(inputs.values()) + slices)
    out = tmp_path / "pred"
    _infer(spec, tmp_path, folder, out)
    for post in spec["postfixes"]:
        for src in list(inputs.values()) + slices:
            pred = out / f"{_stem(src)}_{post}.nii.gz"
            assert pred.is_file(), sorted(p.name for p in out.iterdir())
            _assert_same_geometry(pred, src)
        whole = _array(out / f"{_stem(stack)}_{post}.nii.gz")
        assert whole.shape == img.shape
        for i, s in enumerate(slices):
            alone = _array(out / f"{_stem(s)}_{post}.nii.gz")
            if spec["labels"]:
                np.testing.assert_array_equal(whole[..., i:i + 1], alone)
            else:
                np.testing.assert_allclose(whole[..., i:i + 1], alone, rtol=1e-5, atol=1e-5 * np.abs(alone).max())
        if not spec["labels"]:  # a random reconstruction net's output varies (a random segmenter may give one label)
            assert np.ptp(whole) > 0


@pytest.mark.parametrize("name", sorted(_BUNDLES_2D))
def test_2d_bundle_one_slice_output_unchanged(inputs, tmp_path, name):
    """A 2-D NIfTI, a one-slice NIfTI and a one-slice DICOM series (the scale-space bundle took 2-D NIfTI
    only) give the same prediction as the inference before stacks were taken (DropSliceAxisd, SimpleInferer)."""
    spec = _random_model(name, tmp_path)
    rng = np.random.default_rng(1)
    aff = np.diag([0.9, 1.1, 1.0, 1.0])
    aff[:3, 3] = [3.0, -4.0, 5.0]
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(rng.normal(100, 30, size=(40, 36)).astype(np.float32), aff), flat)
    srcs = [flat] if name == "sshn_seg" else [flat, inputs["nifti_one_slice"], inputs["dicom_one_slice"]]
    folder = _link_all(tmp_path / "in", srcs)
    _infer(spec, tmp_path, folder, tmp_path / "now")
    _infer(spec, tmp_path, folder, tmp_path / "before", **_BEFORE[name])
    for post in spec["postfixes"]:
        for src in srcs:
            now, before = nib.load(tmp_path / "now" / f"{_stem(src)}_{post}.nii.gz"), nib.load(tmp_path / "before" / f"{_stem(src)}_{post}.nii.gz")
            assert now.shape == before.shape and np.allclose(now.affine, before.affine, atol=1e-5)
            a, b = np.asarray(now.dataobj), np.asarray(before.dataobj)
            if spec["labels"]:
                np.testing.assert_array_equal(a, b)
            else:
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


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
