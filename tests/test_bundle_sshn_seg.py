"""Scale-space segmentation bundle (issue 5, task 4): train -> evaluate (Pareto sweep) -> infer -> export on tiny data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_hyperconv.bundle.testing import REPO_ROOT, load_workflow, make_tiny_demo, run_config, run_exported_without_package

BUNDLE = REPO_ROOT / "bundles" / "scale_space_segmentation"
TINY = dict(channels=4, num_pools=2, batch_size=2, cache_num_workers=0, num_workers=0)
PHIS = [0.1, 0.3, 0.5]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two epochs (one cross-entropy, one soft Dice) on 6 tiny subjects."""
    root = tmp_path_factory.mktemp("sshn_seg")
    data = make_tiny_demo("brain_seg", root / "data", n_subjects=6, size=(32, 40))
    broot = root / "bundle"
    wf = run_config(BUNDLE, "train.json", workflow_type="train", dataset_dir=data, bundle_root=broot,
                    epochs=2, pretrain_epochs=1, val_interval=1, **TINY)
    return {"root": root, "data": data, "broot": broot, "wf": wf}


def test_train_outputs_and_loss_schedule(trained):
    wf, broot = trained["wf"], trained["broot"]
    assert (broot / "models" / "checkpoint_last.pt").is_file()
    assert (broot / "models" / "model.pt").is_file()
    assert (broot / "eval" / "training_log.csv").is_file()
    assert any((broot / "logs").iterdir())  # TensorBoard events
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2
    # epoch 1 cross-entropy, epoch 2 soft Dice
    assert trainer.loss_function is wf.parser.get_parsed_content("dice_loss")
    sched = wf.parser.get_parsed_content("loss_schedule")
    assert [sched.index(e) for e in (1, 2, 3)] == [0, 1, 1]
    net = wf.parser.get_parsed_content("network")
    assert type(net).__name__ == "ScaleSpaceHyperUNet"
    ckpt = torch.load(broot / "models" / "checkpoint_last.pt", weights_only=False)
    assert {"network", "optimizer", "lr_scheduler", "trainer", "best", "curves"} <= set(ckpt)


def test_resume(trained):
    wf = run_config(BUNDLE, "train.json", workflow_type="train", dataset_dir=trained["data"], bundle_root=trained["broot"],
                    epochs=3, pretrain_epochs=1, val_interval=1, resume=True, **TINY)
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 3
    assert trainer.state.iteration == 3 * len(wf.parser.get_parsed_content("train#dataloader"))


def test_evaluate_pareto(trained):
    broot = trained["broot"]
    wf = run_config(BUNDLE, ["train.json", "evaluate.json"], workflow_type="infer", dataset_dir=trained["data"],
                    bundle_root=broot, pareto_phis=PHIS, phi=0.3, **TINY)
    out = broot / "eval"
    for f in ("pareto.csv", "pareto.png", "pareto.md", "pareto_choice.json", "summary.json", "metrics.csv",
              "mean_dice_raw.csv"):
        assert (out / f).is_file(), f
    with open(out / "pareto.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["phi"]) for r in rows] == PHIS
    gflops = [float(r["gflops"]) for r in rows]
    assert gflops == sorted(gflops) and gflops[0] < gflops[-1]  # cost grows with phi
    assert all(0.0 <= float(r["dice_mean"]) <= 1.0 for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["phi"] == 0.3 and "majority_atlas_baseline_dice" in summary
    # the evaluator's materialised network reproduces the hypernetwork at the same phi
    sshn = wf.parser.get_parsed_content("trained_network").eval()
    mat = wf.parser.get_parsed_content("network")
    x = torch.rand(2, 1, 32, 40)
    with torch.no_grad():
        assert (sshn(x, phi=0.3) - mat(x)).abs().max() < 1e-5
    # the per-case Dice at phi 0.3 equals the sweep's row (same metric definition, labels 1..6)
    per_case = wf.parser.get_parsed_content("evaluator").state.metrics["mean_dice"]
    sweep = {float(r["phi"]): float(r["dice_mean"]) for r in rows}
    assert abs(per_case - sweep[0.3]) < 0.05


def test_inference_budget_and_geometry(trained):
    broot, data = trained["broot"], trained["data"]
    with open(broot / "eval" / "pareto.csv") as fh:
        rows = list(csv.DictReader(fh))
    budget = float(rows[1]["gflops"]) + 1e-9  # phi 0.1 and 0.3 fit, 0.5 does not
    wf = run_config(BUNDLE, "inference.json", workflow_type="infer", dataset_dir=data, bundle_root=broot,
                    max_gflops=budget, image_size=[32, 40], channels=4, num_pools=2)
    phi = wf.parser.get_parsed_content("deploy_phi")
    assert phi in (0.1, 0.3)
    assert type(wf.parser.get_parsed_content("network")).__name__ == "MaterializedNetwork"
    preds = sorted((broot / "eval" / "predictions").glob("*_seg.nii.gz"))
    assert preds
    for p in preds:
        src = data + "/imagesTr/" + p.name.replace("_seg.nii.gz", ".nii.gz")
        ref, out = nib.load(src), nib.load(str(p))
        assert out.shape == ref.shape and np.allclose(out.affine, ref.affine)
        arr = np.asarray(out.dataobj)
        assert arr.dtype == np.uint8 and arr.max() <= 6


def test_explicit_phi_and_missing_table(trained, tmp_path):
    broot = trained["broot"]
    over = dict(dataset_dir=trained["data"], bundle_root=broot, image_size=[32, 40], channels=4, num_pools=2)
    wf = load_workflow(BUNDLE, "inference.json", "infer", phi=0.2, **over)
    wf.initialize()
    assert wf.parser.get_parsed_content("deploy_phi") == 0.2
    # a budget without a Pareto table: the largest phi whose materialised network fits (FLOPs counted)
    over["budget_phis"] = PHIS
    wf = load_workflow(BUNDLE, "inference.json", "infer", max_gflops=1.0, pareto_csv=str(tmp_path / "none.csv"), **over)
    wf.initialize()
    assert wf.parser.get_parsed_content("deploy_phi") == 0.5
    wf = load_workflow(BUNDLE, "inference.json", "infer", max_gflops=1e-9, pareto_csv=str(tmp_path / "none.csv"), **over)
    wf.initialize()
    with pytest.raises(Exception) as ei:
        wf.parser.get_parsed_content("deploy_phi")
    assert "no phi fits" in _chain(ei.value)


def test_export_runs_without_package(trained):
    broot = trained["broot"]
    wf = load_workflow(BUNDLE, "inference.json", "infer", run_id="export", dataset_dir=trained["data"],
                       bundle_root=broot, phi=0.3, image_size=[32, 40], channels=4, num_pools=2)
    wf.initialize()
    wf.run()
    ts = broot / "models" / "model.pt2"
    assert ts.is_file()
    sshn = wf.parser.get_parsed_content("trained_network").eval()
    x = torch.rand(1, 1, 32, 40)
    with torch.no_grad():
        ref = sshn(x, phi=0.3)
    assert (run_exported_without_package(ts, x, workdir=broot) - ref).abs().max().item() < 1e-4


def test_verify_net_in_out():
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_def", meta_file=str(BUNDLE / "configs" / "metadata.json"),
                      config_file=str(BUNDLE / "configs" / "inference.json"), extra_forward_args={"phi": 0.5},
                      channels=4, num_pools=2)


def _chain(e: BaseException) -> str:
    """Messages of an exception and its causes (MONAI's config parser wraps errors in RuntimeError)."""
    out = []
    while e is not None:
        out.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    return "\n".join(out)


def _raises_dataset_error(pattern: str, **kw) -> None:
    import re

    with pytest.raises(Exception) as ei:
        run_config(BUNDLE, "train.json", workflow_type="train", epochs=1, **TINY, **kw)
    msg = _chain(ei.value)
    assert "DatasetError" in msg and re.search(pattern, msg), msg


def test_bad_inputs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _raises_dataset_error("no dataset.json", dataset_dir=empty, bundle_root=tmp_path / "b")
    data = Path(make_tiny_demo("brain_seg", tmp_path / "data", n_subjects=4, size=(32, 40)))
    label = sorted((data / "labelsTr").glob("*.nii.gz"))[1]
    label.write_bytes(label.read_bytes()[:40])  # truncated / corrupt
    _raises_dataset_error(r"\['label'\].*" + label.name, dataset_dir=data, bundle_root=tmp_path / "b")
    ref = nib.load(str(sorted((data / "imagesTr").glob("*.nii.gz"))[0]))
    label.unlink()
    _raises_dataset_error(r"\['label'\].*file not found: .*" + label.name, dataset_dir=data, bundle_root=tmp_path / "b")
    make_tiny_demo("brain_seg", tmp_path / "data2", n_subjects=4, size=(32, 40))
    image = sorted((tmp_path / "data2" / "imagesTr").glob("*.nii.gz"))[0]
    nib.save(nib.Nifti1Image(np.zeros((32, 40, 2), np.float32), ref.affine), str(image))  # 2 channels
    _raises_dataset_error(r"\['image'\].*expected 1 channel", dataset_dir=tmp_path / "data2", bundle_root=tmp_path / "b")
