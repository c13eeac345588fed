"""HyperMorph registration bundle (issue 16): few-iteration train -> evaluate (lam sweep) -> inference at a lam."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_hyperconv.bundle.testing import REPO_ROOT, load_workflow, make_tiny_demo, run_config

BUNDLE = REPO_ROOT / "bundles" / "hypermorph_registration"
TINY = dict(channels=4, num_pools=2, batch_size=2, cache_num_workers=0, num_workers=0)
NET = dict(channels=4, num_pools=2, image_size=[32, 40])
LAMS = [0.0, 0.5, 1.0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("hypermorph")
    data = make_tiny_demo("brain_seg", root / "data", n_subjects=10, size=(32, 40))
    broot = root / "bundle"
    wf = run_config(BUNDLE, "train.json", workflow_type="train", dataset_dir=data, bundle_root=broot,
                    epochs=1, val_interval=1, **TINY)
    return {"root": root, "data": data, "broot": broot, "wf": wf}


def test_train_outputs(trained):
    wf, broot = trained["wf"], trained["broot"]
    for f in ("models/checkpoint_last.pt", "models/model.pt", "eval/training_log.csv"):
        assert (broot / f).is_file(), f
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1 and np.isfinite(float(trainer.state.output[0]["loss"]))
    ev = wf.parser.get_parsed_content("validate#evaluator")
    assert 0.0 <= ev.state.metrics["val_mean_dice"] <= 1.0
    net = wf.parser.get_parsed_content("network")
    assert type(net).__name__ == "HyperMorph" and net.knob_names == ("lam",)
    assert net.backbone.knobs[0].prior == (0.0, 1.0)


def test_evaluate_lambda_sweep(trained):
    broot = trained["broot"]
    wf = run_config(BUNDLE, ["train.json", "evaluate.json"], workflow_type="infer", dataset_dir=trained["data"],
                    bundle_root=broot, sweep_lams=LAMS, lam=0.5, max_folding=1.0, **TINY)
    out = broot / "eval"
    for f in ("lambda_sweep.csv", "lambda_sweep.png", "lambda_sweep_choice.json", "summary.json", "mean_dice_raw.csv",
              "folding_raw.csv"):
        assert (out / f).is_file(), f
    with open(out / "lambda_sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["lam"]) for r in rows] == LAMS
    assert {f"dice_{k}" for k in range(1, 7)} <= set(rows[0])
    choice = json.loads((out / "lambda_sweep_choice.json").read_text())
    assert choice["lam"] in LAMS and set(choice["per_label"]) == {str(k) for k in range(1, 7)}
    # the evaluator's folding (materialised network at lam = 0.5) equals the sweep's row at 0.5
    summary = json.loads((out / "summary.json").read_text())
    assert abs(summary["folding"] - float(rows[1]["folding"])) < 1e-6
    mat = wf.parser.get_parsed_content("network")
    assert type(mat).__name__ == "RegistrationNet" and mat.knobs == {"lam": 0.5}


def test_inference_at_a_lam_and_from_the_choice(trained):
    broot, data = trained["broot"], trained["data"]
    fixed, moving = sorted(Path(data, "imagesTr").glob("*.nii.gz"))[:2]
    wf = run_config(BUNDLE, "inference.json", workflow_type="infer", dataset_dir=data, bundle_root=broot,
                    fixed=str(fixed), moving=str(moving), lam=0.3, **NET)
    assert wf.parser.get_parsed_content("deploy_lam") == 0.3
    stem = f"{fixed.name[:-7]}_{moving.name[:-7]}"
    ref = nib.load(str(fixed))
    moved = nib.load(str(broot / "eval" / "predictions" / f"{stem}_moved.nii.gz"))
    ddf = nib.load(str(broot / "eval" / "predictions" / f"{stem}_ddf.nii.gz"))
    assert moved.shape == ref.shape and ddf.shape == ref.shape + (2,)
    # the written displacement is the hypernetwork's at lam = 0.3
    trained_net = wf.parser.get_parsed_content("trained_network").eval()
    pre = wf.parser.get_parsed_content("preprocessing")
    item = pre({"fixed": str(fixed), "moving": str(moving)})
    with torch.no_grad():
        _, ref_ddf = trained_net(item["moving"][None].as_tensor(), item["fixed"][None].as_tensor(), lam=0.3)
    assert np.abs(np.moveaxis(ddf.get_fdata(), -1, 0) - ref_ddf[0].numpy()).max() < 1e-4
    # without --lam: the evaluation's choice
    choice = json.loads((broot / "eval" / "lambda_sweep_choice.json").read_text())
    wf = load_workflow(BUNDLE, "inference.json", "infer", dataset_dir=data, bundle_root=broot, **NET)
    wf.initialize()
    assert wf.parser.get_parsed_content("deploy_lam") == choice["lam"]
    # export the materialised network (TorchScript; running it without the package is the same
    # export_baked path as the scale-space registration bundle's test, not repeated here)
    wf = load_workflow(BUNDLE, "inference.json", "infer", run_id="export", dataset_dir=data, bundle_root=broot,
                       lam=0.3, **NET)
    wf.initialize()
    wf.run()
    mov, fix = torch.rand(1, 1, 32, 40), torch.rand(1, 1, 32, 40)
    with torch.no_grad():
        _, want = trained_net(mov, fix, lam=0.3)
        _, got = torch.jit.load(str(broot / "models" / "model.ts"))(mov, fix)
    assert (got - want).abs().max().item() < 1e-4


def test_verify_net_in_out():
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="backbone_def", meta_file=str(BUNDLE / "configs" / "metadata.json"),
                      config_file=str(BUNDLE / "configs" / "inference.json"), extra_forward_args={"lam": 0.5},
                      channels=4, num_pools=2)
