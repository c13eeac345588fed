"""Auto3DSeg bring-your-own-algorithm templates (bundles/auto3dseg) and the work-dir reader.

DataAnalyzer -> BundleGen(templates_path_or_url=BYO_TEMPLATES_PATH) -> train (a few iterations on CPU)
-> get_score / predict -> read_auto3dseg_workdir, on four 20x24x28 volumes with a two-label blob.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from monai.bundle import ConfigParser

from monai_hyperconv.compare import auto3dseg as a3d
from monai_hyperconv.compare.auto3dseg import (
    BYO_TEMPLATES_PATH, ROW_KEYS, TEMPLATE_NAMES, read_auto3dseg_workdir, train_algo,
)

SHAPE = (20, 24, 28)
SPACING = (1.5, 1.5, 2.0)


def _make_data(root, n=4, seed=0):
    """``n`` volumes: noisy image, label 1 = a ball, 2 = its core; folds 0,1,0,1; one testing image."""
    rng = np.random.RandomState(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"))
    items = []
    for i in range(n):
        c = np.array([rng.uniform(0.4, 0.6) * s for s in SHAPE])[:, None, None, None]
        d = np.sqrt(((grid - c) ** 2).sum(0))
        r = rng.uniform(5, 7)
        lab = (d < r).astype(np.uint8) + (d < r / 2).astype(np.uint8)
        img = (100 + 80 * lab + rng.normal(0, 10, SHAPE)).astype(np.float32)
        aff = np.diag([*SPACING, 1.0])
        nib.save(nib.Nifti1Image(img, aff), os.path.join(root, f"img{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, aff), os.path.join(root, f"lab{i}.nii.gz"))
        items.append({"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz", "fold": i % 2})
    datalist = {"training": items, "testing": [{"image": "img0.nii.gz"}]}
    with open(os.path.join(root, "datalist.json"), "w") as f:
        json.dump(datalist, f)
    return os.path.join(root, "datalist.json")


def _input_yaml(path, root, modality):
    cfg = {"modality": modality, "datalist": os.path.join(root, "datalist.json"), "dataroot": str(root)}
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return str(path)


def _hp(folder):
    with open(os.path.join(folder, "configs", "hyper_parameters.yaml")) as f:
        return yaml.safe_load(f)


def _configs(folder):
    d = os.path.join(folder, "configs")
    return [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".yaml")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from monai.apps.auto3dseg import DataAnalyzer

    root = tmp_path_factory.mktemp("a3d_data")
    _make_data(str(root))
    stats = str(root / "datastats.yaml")
    DataAnalyzer(str(root / "datalist.json"), str(root), output_path=stats, device="cpu", worker=0).get_all_case_stats()
    return {"root": root, "stats": stats}


@pytest.fixture(scope="module")
def generated(data, tmp_path_factory):
    from monai.apps.auto3dseg import BundleGen

    wd = tmp_path_factory.mktemp("a3d_work")
    src = _input_yaml(wd / "input.yaml", data["root"], "mri")
    gen = BundleGen(algo_path=str(wd), algos=list(TEMPLATE_NAMES), templates_path_or_url=BYO_TEMPLATES_PATH,
                    data_stats_filename=data["stats"], data_src_cfg_name=src)
    gen.generate(str(wd), num_fold=1)
    algos = {h["identifier"]: h["algo_instance"] for h in gen.get_history()}
    return {"wd": str(wd), "algos": algos}


@pytest.fixture(scope="module")
def trained(generated):
    """hyperunet through BundleAlgo.train (the AutoRunner path: a subprocess running scripts/train.py);
    sshn in-process through the same train_algo, with a narrow network to keep the test short."""
    algos = generated["algos"]
    algos["hyperunet_0"].train({"num_iterations": 2, "num_epochs_per_validation": 1, "network#channels": 8})
    score = train_algo(_configs(algos["sshn_0"].output_path), num_iterations=2, **{"network#channels": 4})
    return {"sshn_returned": score, **generated}


def test_templates_path():
    assert os.path.isabs(BYO_TEMPLATES_PATH)
    for name in TEMPLATE_NAMES:
        for f in ("scripts/algo.py", "scripts/train.py", "scripts/infer.py", "configs/hyper_parameters.yaml",
                  "configs/network.yaml", "configs/transforms.yaml"):
            assert os.path.isfile(os.path.join(BYO_TEMPLATES_PATH, name, f)), (name, f)


def test_templates_path_missing_names_the_folder(monkeypatch):
    monkeypatch.setattr(a3d, "TEMPLATE_NAMES", ("hyperunet", "no_such_template"))
    with pytest.raises(FileNotFoundError, match="bundles/auto3dseg"):
        a3d.byo_templates_path()


def test_generate_fills_configs(generated, data):
    from monai.apps.auto3dseg import BundleAlgo
    from monai.apps.auto3dseg.utils import import_bundle_algo_history

    wd, algos = generated["wd"], generated["algos"]
    assert sorted(algos) == ["hyperunet_0", "sshn_0"]
    assert type(algos["hyperunet_0"]).__name__ == "HyperunetAlgo" and type(algos["sshn_0"]).__name__ == "SshnAlgo"
    for ident, algo in algos.items():
        folder = os.path.join(wd, ident)
        assert isinstance(algo, BundleAlgo) and algo.output_path == folder
        assert os.path.isfile(os.path.join(folder, "algo_object.json"))
        hp = _hp(folder)
        assert hp["bundle_root"] == folder and hp["fold"] == 0 and hp["modality"] == "mri"
        assert hp["input_channels"] == 1 and hp["output_classes"] == 3 and hp["spatial_dims"] == 3
        assert hp["spacing"] == pytest.approx(list(SPACING)) and hp["resample"] is False
        assert hp["data_list_file_path"] == str(data["root"] / "datalist.json")
        with open(os.path.join(folder, "configs", "transforms.yaml")) as f:
            tf = yaml.safe_load(f)
        assert tf["intensity_transform"]["_target_"] == "NormalizeIntensityd"  # MRI: z-score
        targets = [t["_target_"] for t in tf["transforms_train"]["transforms"] if isinstance(t, dict)]
        assert "Spacingd" not in targets and "LoadImaged" in targets  # one spacing: no resampling
    # Hyper-UNet patches are multiples of 2**num_pools = 8; the SSHN takes any size
    assert _hp(os.path.join(wd, "hyperunet_0"))["patch_size"] == [16, 24, 24]
    assert _hp(os.path.join(wd, "sshn_0"))["patch_size"] == list(SHAPE)
    # the folders load back as MONAI does it (algo_object.json -> our Algo classes)
    history = import_bundle_algo_history(wd, only_trained=False)
    assert sorted(h["identifier"] for h in history) == ["hyperunet_0", "sshn_0"]
    assert {type(h["algo_instance"]).__name__ for h in history} == {"HyperunetAlgo", "SshnAlgo"}


def test_generate_ct_windowing(data, tmp_path):
    from monai.apps.auto3dseg import BundleGen

    src = _input_yaml(tmp_path / "input.yaml", data["root"], "ct")
    BundleGen(algo_path=str(tmp_path), algos="sshn", templates_path_or_url=BYO_TEMPLATES_PATH,
              data_stats_filename=data["stats"], data_src_cfg_name=src).generate(str(tmp_path), num_fold=1)
    with open(tmp_path / "sshn_0" / "configs" / "transforms.yaml") as f:
        it = yaml.safe_load(f)["intensity_transform"]
    with open(data["stats"]) as f:
        fg = yaml.safe_load(f)["stats_summary"]["image_foreground_stats"]["intensity"]
    assert it["_target_"] == "ScaleIntensityRanged" and it["clip"] is True
    assert (it["a_min"], it["a_max"]) == pytest.approx((fg["percentile_00_5"], fg["percentile_99_5"]))


def test_train_command_uses_this_interpreter_in_one_process(generated):
    algo = copy.deepcopy(generated["algos"]["sshn_0"])
    algo.device_setting.update(CMD_PREFIX="", n_devices=2, CUDA_VISIBLE_DEVICES="0,1")
    cmd, _ = algo._create_cmd({"num_iterations": 3})
    assert cmd.split()[:3] == [sys.executable, os.path.join(algo.output_path, "scripts", "train.py"), "run"]
    assert "--num_iterations=3" in cmd and "hyper_parameters.yaml" in cmd and "torchrun" not in cmd
    assert algo.device_setting["n_devices"] == 1


def test_train_writes_model_and_score(trained):
    for ident, algo in trained["algos"].items():
        score = algo.get_score()
        assert math.isfinite(score) and 0.0 <= score <= 1.0, (ident, score)
        ckpt = os.path.join(algo.output_path, "model")
        with open(os.path.join(ckpt, "results.json")) as f:
            res = json.load(f)
        assert res["status"] == "ok" and res["error"] is None and res["fold"] == 0 and res["metric_name"] == "dice"
        assert res["algorithm"] == ident.split("_")[0] and res["num_iterations"] == 2
        assert res["best_metric"] == pytest.approx(score) and res["train_time_s"] > 0
        # the saved weights load into the network the configs + training overrides describe
        parser = ConfigParser()
        parser.read_config(_configs(algo.output_path))
        for k, v in res["overrides"].items():
            parser[k] = v
        net = parser.get_parsed_content("network")
        net.load_state_dict(torch.load(os.path.join(ckpt, "model.pt"), weights_only=True))
        assert res["params"] == sum(p.numel() for p in net.parameters())
    assert trained["sshn_returned"] == pytest.approx(trained["algos"]["sshn_0"].get_score())
    assert json.load(open(os.path.join(trained["wd"], "hyperunet_0", "model", "results.json")))["overrides"] == {
        "num_iterations": 2, "num_epochs_per_validation": 1, "network#channels": 8}


def test_training_is_deterministic(trained, tmp_path):
    """Same configs and seed -> identical weights (the run goes to another bundle_root)."""
    folder = trained["algos"]["sshn_0"].output_path
    again = train_algo(_configs(folder), num_iterations=2, bundle_root=str(tmp_path), **{"network#channels": 4})
    assert again == pytest.approx(trained["sshn_returned"])
    a = torch.load(os.path.join(folder, "model", "model.pt"), weights_only=True)
    b = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_predict_returns_probabilities_in_image_space(trained, data):
    algo = trained["algos"]["hyperunet_0"]
    (prob,) = algo.predict([str(data["root"] / "img1.nii.gz")])  # training's network#channels=8 is re-applied
    assert tuple(prob.shape) == (3, *SHAPE)
    assert torch.allclose(prob.sum(0), torch.ones(SHAPE), atol=1e-4)
    assert np.allclose(np.diag(np.asarray(prob.affine))[:3], SPACING)


def test_read_workdir_rows(trained):
    rows = read_auto3dseg_workdir(trained["wd"])
    assert [(r["algorithm"], r["fold"]) for r in rows] == [("hyperunet", 0), ("sshn", 0)]
    for r in rows:
        algo = trained["algos"][f"{r['algorithm']}_0"]
        assert tuple(r) == ROW_KEYS
        assert r["status"] == "ok" and r["error"] is None and r["name"] == r["algorithm"]
        assert r["test_metric"] == algo.get_score() and r["metric_name"] == "dice"
        with open(os.path.join(algo.output_path, "model", "results.json")) as f:
            res = json.load(f)
        assert r["params"] == res["params"] > 0 and r["train_time_s"] == res["train_time_s"]
        assert r["source"] == "auto3dseg" and r["work_dir"] == algo.output_path
        assert r["options"] == {} and r["robustness"] == {} and r["train_metric"] is None and r["gflops"] is None


def test_read_workdir_failed_and_foreign(generated, tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    # generated but never trained -> failed, naming progress.yaml
    shutil.copytree(os.path.join(generated["wd"], "hyperunet_0"), wd / "hyperunet_1", ignore=shutil.ignore_patterns("model"))
    # a training that raised -> failed with its error (results.json), and train_algo re-raises
    shutil.copytree(os.path.join(generated["wd"], "sshn_0"), wd / "sshn_1", ignore=shutil.ignore_patterns("model"))
    for name in ("hyperunet_1", "sshn_1"):  # as BundleGen would have written fold 1
        hp = _hp(wd / name)
        hp.update(fold=1, bundle_root=str(wd / name))
        (wd / name / "configs" / "hyper_parameters.yaml").write_text(yaml.safe_dump(hp))
    missing = str(tmp_path / "no_datalist.json")
    with pytest.raises(FileNotFoundError, match="no_datalist"):
        train_algo(_configs(wd / "sshn_1"), data_list_file_path=missing, num_iterations=1)
    # MONAI's own template layout (segresnet): ckpt_path from hyper_parameters, progress.yaml list; moved work dir
    seg = wd / "segresnet_2"
    (seg / "configs").mkdir(parents=True)
    (seg / "model").mkdir()
    (seg / "configs" / "hyper_parameters.yaml").write_text(
        "bundle_root: /somewhere/else/segresnet_2\nckpt_path: $@bundle_root + '/model'\nfold: 2\n")
    (seg / "model" / "progress.yaml").write_text(
        "- {best_avg_dice_score: 0.5, best_avg_dice_score_epoch: 0}\n- {best_avg_dice_score: 0.75, best_avg_dice_score_epoch: 3}\n")
    # only an algo_object.json with the score AutoRunner stored
    sw = wd / "swinunetr_0"
    sw.mkdir()
    (sw / "algo_object.json").write_text(json.dumps({"_target_": "x.X", "_state_": {"name": "swinunetr"}, "best_metric": 0.6}))
    (wd / "algorithm_templates").mkdir()  # skipped
    (wd / "notes.txt").write_text("not an algorithm")

    rows = {(r["algorithm"], r["fold"]): r for r in read_auto3dseg_workdir(wd)}
    assert sorted(rows) == [("hyperunet", 1), ("segresnet", 2), ("sshn", 1), ("swinunetr", 0)]
    never = rows[("hyperunet", 1)]
    assert never["status"] == "failed" and never["test_metric"] is None and "progress.yaml" in never["error"]
    crashed = rows[("sshn", 1)]
    assert crashed["status"] == "failed" and "no_datalist" in crashed["error"] and crashed["train_time_s"] is not None
    assert rows[("segresnet", 2)]["status"] == "ok" and rows[("segresnet", 2)]["test_metric"] == 0.75
    assert rows[("swinunetr", 0)]["status"] == "ok" and rows[("swinunetr", 0)]["test_metric"] == 0.6
    assert all(r["params"] is None for k, r in rows.items() if k[0] in ("segresnet", "swinunetr"))


def test_read_workdir_errors_name_the_path(tmp_path):
    missing = tmp_path / "no_such_work_dir"
    with pytest.raises(FileNotFoundError, match="no_such_work_dir"):
        read_auto3dseg_workdir(missing)
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="a_file"):
        read_auto3dseg_workdir(f)
    assert read_auto3dseg_workdir(tmp_path) == []  # a folder without algorithm folders: no rows


@pytest.mark.slow
def test_autorunner_end_to_end(tmp_path):
    """AutoRunner: analysis, generation, training of both templates (subprocesses), ensemble prediction."""
    from monai.apps.auto3dseg import AutoRunner

    root = tmp_path / "data"
    root.mkdir()
    _make_data(str(root))
    runner = AutoRunner(work_dir=str(tmp_path / "work"), algos=list(TEMPLATE_NAMES), templates_path_or_url=BYO_TEMPLATES_PATH,
                        input={"modality": "mri", "datalist": str(root / "datalist.json"), "dataroot": str(root)})
    runner.set_num_fold(1)
    runner.set_analyze_params({"device": "cpu", "worker": 0})
    runner.set_training_params({"num_iterations": 2})
    runner.set_device_info(cuda_visible_devices="" if not torch.cuda.is_available() else None, cmd_prefix=sys.executable)
    runner.set_prediction_params({"output_dir": str(tmp_path / "pred")})
    runner.run()
    rows = read_auto3dseg_workdir(tmp_path / "work")
    assert [(r["algorithm"], r["status"]) for r in rows] == [("hyperunet", "ok"), ("sshn", "ok")]
    assert any(p.name.endswith(".nii.gz") for p in (tmp_path / "pred").rglob("*"))
