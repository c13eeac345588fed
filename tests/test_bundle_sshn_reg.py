"""Scale-space registration bundle (issue 5, task 5): train -> evaluate (Dice, folding, Pareto) -> infer -> export."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_hyperconv.bundle.testing import REPO_ROOT, load_workflow, make_tiny_demo, run_config, run_exported_without_package

BUNDLE = REPO_ROOT / "bundles" / "scale_space_registration"
TINY = dict(channels=4, num_pools=2, batch_size=2, cache_num_workers=0, num_workers=0)
NET = dict(channels=4, num_pools=2, image_size=[32, 40])
PHIS = [0.1, 0.3, 0.5]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("sshn_reg")
    data = make_tiny_demo("brain_seg", root / "data", n_subjects=10, size=(32, 40))
    broot = root / "bundle"
    wf = run_config(BUNDLE, "train.json", workflow_type="train", dataset_dir=data, bundle_root=broot,
                    epochs=2, val_interval=1, **TINY)
    return {"root": root, "data": data, "broot": broot, "wf": wf}


def test_train_outputs(trained):
    wf, broot = trained["wf"], trained["broot"]
    for f in ("models/checkpoint_last.pt", "models/model.pt", "eval/training_log.csv"):
        assert (broot / f).is_file(), f
    assert any((broot / "logs").iterdir())
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2
    assert np.isfinite(float(trainer.state.output[0]["loss"]))
    ev = wf.parser.get_parsed_content("validate#evaluator")
    assert 0.0 <= ev.state.metrics["val_mean_dice"] <= 1.0
    assert 0.0 <= ev.state.metrics["val_folding"] <= 1.0
    net = wf.parser.get_parsed_content("network")
    assert type(net.backbone).__name__ == "ScaleSpaceHyperUNet"
    # training pairs come from the demo's "registration" list, validation pairs from unseen subjects
    dl = wf.parser.get_parsed_content("datalists")
    train_files = {it["fixed"] for it in dl["training"]} | {it["moving"] for it in dl["training"]}
    assert not train_files & ({it["fixed"] for it in dl["validation"]} | {it["moving"] for it in dl["validation"]})


def test_resume(trained):
    wf = run_config(BUNDLE, "train.json", workflow_type="train", dataset_dir=trained["data"], bundle_root=trained["broot"],
                    epochs=3, val_interval=1, resume=True, **TINY)
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == 3


def test_evaluate_dice_folding_pareto(trained):
    broot = trained["broot"]
    wf = run_config(BUNDLE, ["train.json", "evaluate.json"], workflow_type="infer", dataset_dir=trained["data"],
                    bundle_root=broot, pareto_phis=PHIS, phi=0.3, image_size=[32, 40], **TINY)
    out = broot / "eval"
    for f in ("pareto.csv", "pareto.png", "pareto_choice.json", "summary.json", "mean_dice_raw.csv", "folding_raw.csv"):
        assert (out / f).is_file(), f
    with open(out / "pareto.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["phi"]) for r in rows] == PHIS
    g = [float(r["gflops"]) for r in rows]
    assert g == sorted(g) and g[0] < g[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert {"mean_dice", "folding", "identity_baseline_dice"} <= set(summary)
    # the evaluator's numbers match the library metrics computed by hand on the materialised network
    from monai_hyperconv.metrics import folding_fraction, registration_dice

    mat = wf.parser.get_parsed_content("network")
    sshn = wf.parser.get_parsed_content("trained_network").eval()
    ds = wf.parser.get_parsed_content("dataset")
    dices, folds = [], []
    with torch.no_grad():
        for item in ds:
            mov, fix = item["moving"][None], item["fixed"][None]
            moved, ddf = mat(mov, fix)
            moved2, ddf2 = sshn(mov, fix, phi=0.3)
            assert (ddf - ddf2).abs().max() < 1e-5  # materialised == hypernetwork at the same phi
            d = registration_dice(item["moving_label"][None], item["fixed_label"][None], ddf, labels=range(1, 7))
            dices.append(np.mean([d[k] for k in range(1, 7)]))
            folds.append(float(folding_fraction(ddf)[0]))
    assert abs(summary["folding"] - np.mean(folds)) < 1e-6
    # MONAI's MeanDice skips labels absent from the fixed map; ours scores them 1: compare loosely
    assert abs(summary["mean_dice"] - np.mean(dices)) < 0.1


def test_inference_geometry_and_export(trained):
    broot, data = trained["broot"], trained["data"]
    fixed, moving = sorted(Path(data, "imagesTr").glob("*.nii.gz"))[:2]
    wf = run_config(BUNDLE, "inference.json", workflow_type="infer", dataset_dir=data, bundle_root=broot,
                    fixed=str(fixed), moving=str(moving), max_metric_drop=1.0, **NET)
    phi = wf.parser.get_parsed_content("deploy_phi")
    assert phi in PHIS  # chosen from the evaluation's Pareto table (the cheapest within the drop)
    assert phi == 0.1
    stem = f"{fixed.name[:-7]}_{moving.name[:-7]}"
    ref = nib.load(str(fixed))
    moved = nib.load(str(broot / "eval" / "predictions" / f"{stem}_moved.nii.gz"))
    ddf = nib.load(str(broot / "eval" / "predictions" / f"{stem}_ddf.nii.gz"))
    assert moved.shape == ref.shape and np.allclose(moved.affine, ref.affine)
    assert ddf.shape == ref.shape + (2,) and np.allclose(ddf.affine, ref.affine)

    # export the materialised network (two inputs) and run it without monai_hyperconv
    wf = load_workflow(BUNDLE, "inference.json", "infer", run_id="export", dataset_dir=data, bundle_root=broot,
                       phi=0.3, **NET)
    wf.initialize()
    wf.run()
    ts = broot / "models" / "model.pt2"
    mov, fix = torch.rand(1, 1, 32, 40), torch.rand(1, 1, 32, 40)
    with torch.no_grad():
        ref_moved, ref_ddf = wf.parser.get_parsed_content("trained_network").eval()(mov, fix, phi=0.3)
    _, ddf = run_exported_without_package(ts, mov, fix, workdir=broot)
    assert (ddf - ref_ddf).abs().max().item() < 1e-4


def test_verify_net_in_out():
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="backbone_def", meta_file=str(BUNDLE / "configs" / "metadata.json"),
                      config_file=str(BUNDLE / "configs" / "inference.json"), extra_forward_args={"phi": 0.5},
                      channels=4, num_pools=2)


def _chain(e: BaseException) -> str:
    out = []
    while e is not None:
        out.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    return "\n".join(out)


def test_bad_inputs(tmp_path):
    def expect(pattern, **kw):
        with pytest.raises(Exception) as ei:
            run_config(BUNDLE, "train.json", workflow_type="train", epochs=1, bundle_root=tmp_path / "b", **TINY, **kw)
        msg = _chain(ei.value)
        assert "DatasetError" in msg and re.search(pattern, msg), msg

    empty = tmp_path / "empty"
    empty.mkdir()
    expect("no dataset.json", dataset_dir=empty)
    data = Path(make_tiny_demo("brain_seg", tmp_path / "data", n_subjects=10, size=(32, 40)))
    js = json.loads((data / "dataset.json").read_text())
    js["registration"][0]["image"] = js["registration"][0]["image"][:1]  # not a pair
    (data / "dataset.json").write_text(json.dumps(js))
    expect(r"registration\[0\]\['image'\].*pair", dataset_dir=data)
    js["registration"][0]["image"] = [js["registration"][0]["image"][0], "imagesTr/missing.nii.gz"]
    (data / "dataset.json").write_text(json.dumps(js))
    expect(r"registration\[0\]\['moving'\].*file not found.*missing.nii.gz", dataset_dir=data)


def test_mismatched_pair_error():
    from monai_hyperconv.bundle import RegistrationInferer
    from monai_hyperconv.networks import create_network

    net = create_network("sshn_registration", spatial_dims=2, in_channels=1, channels=4, num_pools=2).eval()
    with pytest.raises(ValueError, match="spatial shape"):
        RegistrationInferer(phi=0.3)(torch.rand(1, 1, 32, 40), net, torch.rand(1, 1, 32, 36))
