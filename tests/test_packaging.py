"""Bundles and templates travel with the package; one version.

* The resolver (``monai_hyperconv.bundle.resources``) and ``python -m monai_hyperconv.bundle init`` in a checkout.
* The version is written once (``monai_hyperconv/_version.py``) and every bundle's metadata names a range holding it.
* A wheel built from a copy of the repository (``pip wheel --no-deps --no-build-isolation``) ships exactly the
  bundles' files; installed into a fresh virtual environment whose only other path is the third-party
  site-packages of this interpreter (not the repository), run from a temporary folder, it copies a bundle out
  and trains it (default suite); the slow tests add evaluate -> inference -> export, every bundle's training,
  the comparison runner on a 2 x 1 grid and the Auto3DSeg templates.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import monai_hyperconv
from monai_hyperconv.bundle import resources
from monai_hyperconv.bundle.__main__ import main as bundle_main
from monai_hyperconv.bundle.resources import (
    RUN_OUTPUTS, bundle_path, bundles_root, check_bundle_version, init_bundle, list_bundles, required_version,
)
from monai_hyperconv.bundle.testing import REPO_ROOT, make_tiny_demo

BUNDLES = ["adaptive_trimap_segmentation", "brain_mri_reconstruction", "digits_classification",
           "hypermorph_registration", "liver_lesion_segmentation", "ms_lesion_segmentation", "scale_space_registration",
           "scale_space_segmentation"]


def _bundle_files(root: Path) -> set[str]:
    """Files of a bundles folder as relative POSIX paths, without run outputs and byte code."""
    out = set()
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if p.is_file() and not set(rel.parts) & set(RUN_OUTPUTS) and p.suffix != ".pyc":
            out.add(rel.as_posix())
    return out


# ----------------------------------------------------------------------------- checkout
def test_resolver_in_a_checkout_finds_the_repository_bundles():
    assert bundles_root() == REPO_ROOT / "bundles"
    assert list_bundles() == BUNDLES
    assert list_bundles(templates=True) == BUNDLES + ["auto3dseg"]
    assert bundle_path("digits_classification") == REPO_ROOT / "bundles" / "digits_classification"
    with pytest.raises(KeyError, match="unknown bundle 'no_such'.*digits_classification"):
        bundle_path("no_such")
    from monai_hyperconv.compare.auto3dseg import byo_templates_path
    from monai_hyperconv.compare.spec import bundle_dir

    assert bundle_dir("liver_lesion_segmentation") == REPO_ROOT / "bundles" / "liver_lesion_segmentation"
    assert byo_templates_path() == str(REPO_ROOT / "bundles" / "auto3dseg")


def test_packaged_copy_wins_over_the_checkout(tmp_path, monkeypatch):
    """A wheel's ``monai_hyperconv/_bundles`` is used when it exists (the checkout's ``bundles/`` otherwise)."""
    (tmp_path / "digits_classification" / "configs").mkdir(parents=True)
    (tmp_path / "digits_classification" / "configs" / "metadata.json").write_text("{}")
    monkeypatch.setattr(resources, "_packaged", lambda: tmp_path)
    assert bundles_root() == tmp_path and list_bundles(templates=True) == ["digits_classification"]


def test_init_copies_a_bundle_and_refuses_to_overwrite(tmp_path):
    src = REPO_ROOT / "bundles" / "digits_classification"
    out = init_bundle("digits_classification", tmp_path / "b")
    assert out == (tmp_path / "b").resolve()
    assert _bundle_files(out) == _bundle_files(src)
    for f in _bundle_files(src):
        assert (out / f).read_bytes() == (src / f).read_bytes(), f
    assert os.access(out / "configs" / "train.json", os.W_OK)
    # a non-empty folder is refused, with the flag named; --overwrite replaces the bundle's files, keeps the rest
    (out / "configs" / "train.json").write_text("edited")
    (out / "models").mkdir()
    (out / "models" / "model.pt").write_bytes(b"weights")
    with pytest.raises(FileExistsError, match="not empty.*--overwrite"):
        init_bundle("digits_classification", out)
    init_bundle("digits_classification", out, overwrite=True)
    assert (out / "configs" / "train.json").read_bytes() == (src / "configs" / "train.json").read_bytes()
    assert (out / "models" / "model.pt").read_bytes() == b"weights"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        init_bundle("digits_classification", tmp_path / "file", overwrite=True)
    with pytest.raises(ValueError, match="inside the shipped bundle"):
        init_bundle("digits_classification", src / "sub", overwrite=True)


def test_init_skips_run_outputs(tmp_path, monkeypatch):
    """A checkout's bundle folder holding an earlier run: only the bundle's own files are copied."""
    fake = tmp_path / "root" / "mini"
    shutil.copytree(REPO_ROOT / "bundles" / "digits_classification", fake,
                    ignore=shutil.ignore_patterns(*RUN_OUTPUTS))
    for d in ("models", "data", "eval", "logs"):
        (fake / d).mkdir()
        (fake / d / "x.bin").write_bytes(b"0")
    (fake / "docs" / "__pycache__").mkdir()
    monkeypatch.setattr(resources, "_packaged", lambda: tmp_path / "root")
    out = init_bundle("mini", tmp_path / "out")
    assert _bundle_files(out) == _bundle_files(REPO_ROOT / "bundles" / "digits_classification")
    assert not any((out / d).exists() for d in ("models", "data", "eval", "logs", "docs/__pycache__"))


def test_cli_init_list_and_errors(tmp_path, capsys):
    assert bundle_main(["init", "--list"]) == 0
    listing = capsys.readouterr().out
    for name in BUNDLES + ["auto3dseg"]:
        assert re.search(rf"^  {name}\s", listing, re.M), name
    assert "hyperunet, sshn" in listing
    assert bundle_main(["list"]) == 0 and capsys.readouterr().out == listing

    assert bundle_main(["init", "auto3dseg", "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "hyperunet" / "scripts" / "algo.py").is_file()
    assert str((tmp_path / "t").resolve()) in capsys.readouterr().out

    assert bundle_main(["init", "nosuch", "--out", str(tmp_path / "n")]) == 2
    err = capsys.readouterr().err
    assert "unknown bundle 'nosuch'" in err and "liver_lesion_segmentation" in err and not (tmp_path / "n").exists()
    assert bundle_main(["init", "auto3dseg", "--out", str(tmp_path / "t")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert bundle_main(["init", "auto3dseg", "--out", str(tmp_path / "t"), "--overwrite"]) == 0
    with pytest.raises(SystemExit):
        bundle_main(["init"])  # neither a name nor --list: usage error
    assert "NAME" in capsys.readouterr().err


# ----------------------------------------------------------------------------- version
def test_version_is_written_once():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "monai_hyperconv._version.__version__"}
    text = (REPO_ROOT / "monai_hyperconv" / "_version.py").read_text()
    assert re.findall(r'^__version__ = "([^"]+)"$', text, re.M) == [monai_hyperconv.__version__]
    hits = [p for p in (REPO_ROOT / "monai_hyperconv").rglob("*.py")
            if re.search(r"^__version__\s*=", p.read_text(), re.M)]
    assert hits == [REPO_ROOT / "monai_hyperconv" / "_version.py"]


@pytest.mark.parametrize("name", BUNDLES)
def test_bundle_metadata_names_a_version_range_holding_this_version(name):
    b = bundle_path(name)
    spec = required_version(b)
    assert re.fullmatch(r">=\d+\.\d+\.\d+,<\d+\.\d+", spec), spec
    assert check_bundle_version(b) == spec
    upper = spec.split("<")[1]
    with pytest.raises(ValueError, match=rf"needs monai-hyperconv {re.escape(spec)}, but version {upper} is installed"):
        check_bundle_version(b, version=upper)
    with pytest.raises(ValueError, match="needs"):
        check_bundle_version(b, version="0.0.9")


def test_version_check_errors_name_the_file(tmp_path):
    (tmp_path / "configs").mkdir()
    meta = tmp_path / "configs" / "metadata.json"
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        required_version(tmp_path)
    meta.write_text(json.dumps({"required_packages_version": {"monai": "1.6.1"}}))
    with pytest.raises(KeyError, match="no 'monai-hyperconv' entry"):
        required_version(tmp_path)
    meta.write_text(json.dumps({"required_packages_version": {"monai-hyperconv": "about 0.1"}}))
    with pytest.raises(ValueError, match="not a version range"):
        check_bundle_version(tmp_path)
    meta.write_text(json.dumps({"required_packages_version": {"monai-hyperconv": "0.1.0"}}))  # bare: ==
    assert check_bundle_version(tmp_path, version="0.1.0") == "0.1.0"
    with pytest.raises(ValueError):
        check_bundle_version(tmp_path, version="0.1.1")


# ----------------------------------------------------------------------------- wheel in a fresh venv
def _copy_source(dst: Path) -> Path:
    """The files a source distribution holds (no virtual environment, run outputs or build leftovers)."""
    build = ("*.pyc", "__pycache__", "*.egg-info", "build", "dist", ".venv", ".git")
    dst.mkdir(parents=True)
    for f in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(REPO_ROOT / f, dst / f)
    # run outputs (models/, data/, eval/ ...) are skipped in the bundles only: the package has a `data` subpackage
    shutil.copytree(REPO_ROOT / "monai_hyperconv", dst / "monai_hyperconv", ignore=shutil.ignore_patterns(*build))
    shutil.copytree(REPO_ROOT / "bundles", dst / "bundles",
                    ignore=shutil.ignore_patterns(*RUN_OUTPUTS, *build, "auto3dseg_work"))
    return dst


class WheelEnv:
    """A fresh venv with the wheel installed; :meth:`run` runs its python in ``cwd`` without the repository."""

    def __init__(self, venv: Path, wheel: Path, work: Path):
        self.venv, self.wheel, self.work = venv, wheel, work
        self.python = venv / "bin" / "python"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(OMP_NUM_THREADS="1", PYTHONNOUSERSITE="1", PATH=f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
        return env

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 900, check: bool = True):
        p = subprocess.run([str(self.python), *args], cwd=str(cwd or self.work), env=self.env(), capture_output=True,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
        return p


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> WheelEnv:
    try:
        import setuptools
    except ImportError:
        pytest.skip("setuptools is not installed: cannot build the wheel offline (--no-build-isolation)")
    if int(setuptools.__version__.split(".")[0]) < 70:
        pytest.skip(f"setuptools {setuptools.__version__} < 70 needs the 'wheel' package to build a wheel")
    base = tmp_path_factory.mktemp("wheel")
    src = _copy_source(base / "src")
    dist = base / "dist"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "--no-index",
                        "-w", str(dist), "-q"], cwd=str(base), env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    wheel = next(dist.glob("monai_hyperconv-*.whl"))

    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, env={"PATH": os.environ.get("PATH", "")}).stdout.strip()
    # third-party packages from this interpreter's site-packages (a plain path: its .pth files, e.g. an
    # editable install of this repository, are not processed), appended after the venv's own site-packages
    deps = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    assert not any(Path(d).resolve() == REPO_ROOT for d in deps)
    Path(purelib, "_third_party.pth").write_text("\n".join(deps) + "\n")
    p = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                        "--no-index", "-q", str(wheel)], env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    work = base / "work"  # the unrelated folder every command runs in
    work.mkdir()
    return WheelEnv(venv, wheel, work)


CHECK_INSTALL = """
import importlib.metadata, json, os, sys
import monai_hyperconv
from monai_hyperconv.bundle.resources import bundles_root, list_bundles
from monai_hyperconv.compare.auto3dseg import byo_templates_path
print(json.dumps({"file": monai_hyperconv.__file__, "version": monai_hyperconv.__version__,
                  "dist_version": importlib.metadata.version("monai-hyperconv"), "root": str(bundles_root()),
                  "bundles": list_bundles(templates=True), "templates": byo_templates_path(), "cwd": os.getcwd(),
                  "path": sys.path}))
"""


def test_wheel_ships_the_bundles_and_trains_from_a_fresh_venv(wheel_env, tmp_path):
    """Build + install + ``bundle init`` + one epoch (one iteration) of the digits bundle through the CLI."""
    with zipfile.ZipFile(wheel_env.wheel) as z:
        names = z.namelist()
    shipped = {n.split("monai_hyperconv/_bundles/", 1)[1] for n in names if n.startswith("monai_hyperconv/_bundles/")}
    assert shipped == _bundle_files(REPO_ROOT / "bundles")  # every bundle file, nothing else
    assert not any("__pycache__" in n or n.startswith(("bundles/", "tests/", "scripts/")) for n in names)

    info = json.loads(wheel_env.run("-c", CHECK_INSTALL).stdout)
    site = wheel_env.venv.resolve()
    assert Path(info["file"]).resolve().is_relative_to(site) and not Path(info["file"]).resolve().is_relative_to(REPO_ROOT)
    assert not any(Path(p).resolve() == REPO_ROOT for p in info["path"] if p)
    assert info["version"] == info["dist_version"] == monai_hyperconv.__version__
    assert Path(info["root"]).is_relative_to(site) and Path(info["root"]).name == "_bundles"
    assert info["bundles"] == BUNDLES + ["auto3dseg"] and Path(info["templates"]).parent == Path(info["root"])
    assert Path(info["cwd"]).resolve() == wheel_env.work.resolve()

    out = wheel_env.run("-m", "monai_hyperconv.bundle", "init", "digits_classification", "--out", "digits").stdout
    b = wheel_env.work / "digits"
    assert str(b) in out and _bundle_files(b) == _bundle_files(REPO_ROOT / "bundles" / "digits_classification")
    data = make_tiny_demo("digits", tmp_path / "data", n_subjects=60)
    p = wheel_env.run("-m", "monai.bundle", "run", "--config_file", "digits/configs/train.json",
                      "--meta_file", "digits/configs/metadata.json", "--logging_file", "digits/configs/logging.conf",
                      "--bundle_root", "digits", "--dataset_dir", data, "--epochs", "1", "--cache_num_workers", "0",
                      "--network_def#hidden", "32", "--network_def#channels", "[8, 8]")
    assert "Engine run finished" in p.stdout + p.stderr
    assert (b / "models" / "model.pt").is_file() and (b / "models" / "checkpoint_last.pt").is_file()
    assert not (Path(info["root"]) / "digits_classification" / "models").exists()  # nothing written to site-packages


DIGITS_NET = ["--network_def#hidden", "32", "--network_def#channels", "[8, 8]"]
DIGITS_FAST = ["--cache_num_workers", "0", *DIGITS_NET]  # train/evaluate (inference.json has no cache)


def _bundle_args(b: str, configs: list[str], *extra: str, run_id: str | None = None) -> list[str]:
    cfg = configs[0] if len(configs) == 1 else "[" + ",".join(repr(c) for c in configs) + "]"
    return ["-m", "monai.bundle", "run", *([run_id] if run_id else []), "--config_file", cfg,
            "--meta_file", f"{b}/configs/metadata.json", "--logging_file", f"{b}/configs/logging.conf",
            "--bundle_root", b, *extra]


@pytest.mark.slow
def test_wheel_train_evaluate_infer_export(wheel_env, tmp_path):
    """digits from the wheel: train -> evaluate -> inference -> baked export, all from the unrelated folder."""
    import torch

    wheel_env.run("-m", "monai_hyperconv.bundle", "init", "digits_classification", "--out", "d2")
    data = make_tiny_demo("digits", tmp_path / "data", n_subjects=60)
    d = "d2/configs/"
    wheel_env.run(*_bundle_args("d2", [d + "train.json"], "--dataset_dir", data, "--epochs", "1", *DIGITS_FAST))
    wheel_env.run(*_bundle_args("d2", [d + "train.json", d + "evaluate.json"], "--dataset_dir", data, *DIGITS_FAST))
    b = wheel_env.work / "d2"
    summary = json.loads((b / "eval" / "summary.json").read_text())
    assert 0.0 <= summary["accuracy"] <= 1.0
    wheel_env.run(*_bundle_args("d2", [d + "inference.json"], "--dataset_dir", data, "--output_dir", "pred", *DIGITS_NET))
    n_val = len(json.loads((Path(data) / "dataset.json").read_text())["validation"])
    assert len((wheel_env.work / "pred" / "predictions.csv").read_text().strip().splitlines()) == n_val
    wheel_env.run(*_bundle_args("d2", [d + "inference.json"], "--export_format", "ts", "--export_file", "d2/model.ts",
                                *DIGITS_NET, run_id="export"))
    m = torch.jit.load(str(b / "model.ts"))
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in BUNDLES if n != "digits_classification"])
def test_wheel_every_bundle_initialises_from_its_copy(wheel_env, name):
    """Every bundle copied out of the wheel parses and builds its trainer (no training; the CLI's ``run`` is
    the per-bundle tests' business): ``check_properties`` finds nothing missing with the packaged configs."""
    wheel_env.run("-m", "monai_hyperconv.bundle", "init", name, "--out", f"all/{name}")
    code = (f"from monai_hyperconv.bundle.testing import run_config\n"
            f"wf = run_config('all/{name}', 'train.json', 'train', run=False, bundle_root='all/{name}',"
            f" dataset_dir='all/{name}/data/x')\n"
            f"wf.parser.get_parsed_content('network_def')\nprint('ok')\n")
    assert wheel_env.run("-c", code).stdout.strip().endswith("ok")


@pytest.mark.slow
def test_wheel_compare_two_by_one_grid(wheel_env, tmp_path):
    """``python -m monai_hyperconv.compare`` from the wheel: 2 algorithms x 1 fold on tiny liver data."""
    data = make_tiny_demo("liver", tmp_path / "liver", n_subjects=4, size=(48, 48, 6))
    p = wheel_env.run("-m", "monai_hyperconv.compare", "--task", "segmentation", "--algorithms", "unet:channels=4",
                      "hyperunet:channels=4,n_l=2", "--folds", "2", "--fold-ids", "0", "--iterations", "1",
                      "--data", data, "--set", "image_size=32", "head_bias_init=null", "batch_size=4",
                      "--noise", "none", "--latency-reps", "1", "--output", "cmp")
    rows = json.loads((wheel_env.work / "cmp" / "results.json").read_text())
    rows = rows["results"] if isinstance(rows, dict) else rows
    assert sorted((r["algorithm"], r["fold"], r["status"]) for r in rows) == [
        ("hyperunet:channels=4,n_l=2", 0, "ok"), ("unet:channels=4", 0, "ok")]
    assert "`unet:channels=4`" in p.stdout and (wheel_env.work / "cmp" / "leaderboard.csv").is_file()


@pytest.mark.slow
def test_wheel_auto3dseg_templates_generate(wheel_env, tmp_path):
    """The packaged Auto3DSeg templates: ``BundleGen`` fills both from a data analysis, in the venv."""
    code = r"""
import json, os, sys
import numpy as np, nibabel as nib, yaml
from monai.apps.auto3dseg import BundleGen, DataAnalyzer
from monai_hyperconv.compare.auto3dseg import BYO_TEMPLATES_PATH
rng = np.random.RandomState(0)
items = []
for i in range(2):
    lab = np.zeros((16, 16, 16), np.uint8); lab[4:10, 5:11, 6:12] = 1
    img = (100 + 80 * lab + rng.normal(0, 10, lab.shape)).astype(np.float32)
    nib.save(nib.Nifti1Image(img, np.eye(4)), f"img{i}.nii.gz"); nib.save(nib.Nifti1Image(lab, np.eye(4)), f"lab{i}.nii.gz")
    items.append({"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz", "fold": i})
json.dump({"training": items}, open("datalist.json", "w"))
root = os.getcwd()
DataAnalyzer("datalist.json", root, output_path="stats.yaml", device="cpu", worker=0).get_all_case_stats()
yaml.safe_dump({"modality": "mri", "datalist": os.path.join(root, "datalist.json"), "dataroot": root}, open("input.yaml", "w"))
gen = BundleGen(algo_path=os.path.join(root, "wd"), algos=["hyperunet", "sshn"], templates_path_or_url=BYO_TEMPLATES_PATH,
                data_stats_filename="stats.yaml", data_src_cfg_name="input.yaml")
gen.generate(os.path.join(root, "wd"), num_fold=1)
print(json.dumps({"templates": BYO_TEMPLATES_PATH, "algos": sorted(h["identifier"] for h in gen.get_history())}))
"""
    work = wheel_env.work / "a3d"
    work.mkdir()
    info = json.loads(wheel_env.run("-c", code, cwd=work).stdout.strip().splitlines()[-1])
    assert Path(info["templates"]).resolve().is_relative_to(wheel_env.venv.resolve())
    assert info["algos"] == ["hyperunet_0", "sshn_0"]
    assert (work / "wd" / "sshn_0" / "configs" / "hyper_parameters.yaml").is_file()
