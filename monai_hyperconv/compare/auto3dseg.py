"""Auto3DSeg bring-your-own-algorithm support: our templates' shared code and a work-dir reader.

The templates live in ``bundles/auto3dseg/<name>`` (``hyperunet``: the Hyper-UNet of Ma et al. 2022 and its journal extension;
``sshn``: the scale-space hypernetwork UNet of Gonzalez Ortiz et al. 2023) and follow the layout MONAI's
``BundleGen`` loads: ``<name>/scripts/algo.py`` defines ``<Name>Algo`` (a ``BundleAlgo``),
``configs/*.yaml`` hold the bundle, ``scripts/train.py`` / ``scripts/infer.py`` are the entry points.
The templates keep only what differs (network, inferers, patch divisibility); the shared pieces are
here:

* :class:`HyperconvBundleAlgo`: ``fill_template_config`` from the ``DataAnalyzer`` stats and the
  data source config (modality, channels, classes, spacing, patch size, intensity normalisation);
  runs ``scripts/train.py`` with the current interpreter; ``get_score`` = best validation Dice.
* :func:`train_algo`: the training loop behind ``scripts/train.py run --config_file=...``. It writes
  ``<ckpt_path>/model.pt`` (best ``state_dict``), ``progress.yaml`` (MONAI's format, read by
  ``BundleAlgo.get_score``) and ``results.json`` (fold, metric, params, training time, status).
* :class:`AlgoInferer`: ``scripts/infer.py``'s ``InferClass`` (probabilities in the input's space,
  used by Auto3DSeg's ensemble).
* :func:`read_auto3dseg_workdir`: one leaderboard row per algorithm x fold of a work directory,
  MONAI's own algorithms (segresnet, dints, ...) included.
* ``BYO_TEMPLATES_PATH``: the templates folder, for
  ``AutoRunner(templates_path_or_url=BYO_TEMPLATES_PATH, algos=["hyperunet", "sshn"])``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from copy import deepcopy
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from monai.apps.auto3dseg import BundleAlgo
from monai.bundle import ConfigParser

from ..utils import atomic_write

logger = logging.getLogger(__name__)

__all__ = [  # noqa: F822 (BYO_TEMPLATES_PATH is resolved by the module's __getattr__)
    "BYO_TEMPLATES_PATH", "byo_templates_path", "TEMPLATE_NAMES", "ROW_KEYS", "HyperconvBundleAlgo", "train_algo",
    "AlgoInferer", "read_auto3dseg_workdir",
]

#: templates shipped in ``bundles/auto3dseg``
TEMPLATE_NAMES = ("hyperunet", "sshn")
#: keys of a row returned by :func:`read_auto3dseg_workdir` (the leaderboard schema)
ROW_KEYS = (
    "algorithm", "name", "options", "fold", "status", "error", "metric_name", "train_metric", "test_metric", "gap",
    "params", "receptive_field", "gflops", "train_time_s", "latency_ms", "peak_mem_mb", "robustness", "source",
    "work_dir",
)
PROGRESS_FILE = "progress.yaml"  # MONAI's: a list of dicts, the last one holds ``best_avg_dice_score``
RESULTS_FILE = "results.json"
MODEL_FILE = "model.pt"
HYPER_PARAMETERS = "hyper_parameters.yaml"
_ALGO_OBJECT_FILES = ("algo_object.json", "algo_object.pkl")


# ----------------------------------------------------------------------------- templates path
def byo_templates_path() -> str:
    """Absolute path of the templates folder ``bundles/auto3dseg``: the copy packaged in the wheel, or the
    checkout's (:func:`monai_hyperconv.bundle.resources.templates_path`).

    Raises:
        FileNotFoundError: the folder or a template is missing.
    """
    from ..bundle.resources import templates_path

    path = templates_path()
    if not all((path / name / "scripts" / "algo.py").is_file() for name in TEMPLATE_NAMES):
        raise FileNotFoundError(
            f"The Auto3DSeg templates folder {path} (with {', '.join(TEMPLATE_NAMES)}/scripts/algo.py) is incomplete: "
            "reinstall monai-hyperconv (its wheel ships bundles/auto3dseg as package data) or pass the path of a "
            "copy of bundles/auto3dseg to templates_path_or_url."
        )
    return str(path)


def __getattr__(name: str) -> Any:  # BYO_TEMPLATES_PATH is resolved on access, so a missing folder fails there
    if name == "BYO_TEMPLATES_PATH":
        return byo_templates_path()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------- config helpers
def _config_files(config_file: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """MONAI passes ``--config_file='a.yaml,b.yaml'``: accept that, a list or one path."""
    if isinstance(config_file, (str, os.PathLike)):
        files = [f.strip().strip("'\"") for f in str(config_file).split(",")]
    else:
        files = [str(f) for f in config_file]
    files = [f for f in files if f]
    if not files:
        raise ValueError("config_file is empty: give the template's configs/*.yaml files.")
    for f in files:
        if not os.path.isfile(f):
            raise FileNotFoundError(f"config_file: {f} does not exist.")
    return files


def _parser(config_file, override: Mapping[str, Any] | None = None, warn_unknown: bool = True) -> ConfigParser:
    """Read the config files and apply ``override`` (ids such as ``learning_rate`` or ``network#channels``).

    Keys that are not config ids are logged and ignored: AutoRunner passes the same training
    parameters to every algorithm, including MONAI's own templates with other keys.
    """
    parser = ConfigParser()
    parser.read_config(_config_files(config_file))
    for k, v in (override or {}).items():
        if k not in parser:
            (logger.warning if warn_unknown else logger.debug)(
                "ignoring --%s: not a key of the configs %s", k, ", ".join(sorted(parser.get().keys())))
            continue
        parser[k] = v
    return parser


def _device(value: Any) -> torch.device:
    if value in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(value)


def _ckpt_dir(parser: ConfigParser) -> str:
    root = parser.get_parsed_content("bundle_root")
    if not root:
        raise ValueError("bundle_root is not set in hyper_parameters.yaml: generate the algorithm with BundleGen first.")
    return str(parser.get_parsed_content("ckpt_path", default=os.path.join(root, "model")))


def _jsonable(override: Mapping[str, Any]) -> dict:
    """The overrides that survive JSON (saved in results.json, re-applied by :class:`AlgoInferer`)."""
    out = {}
    for k, v in override.items():
        try:
            out[k] = json.loads(json.dumps(v))
        except (TypeError, ValueError):
            logger.warning("override %s=%r is not JSON-serialisable: not saved for inference", k, v)
    return out


def _write_json(obj: Any, path: str) -> str:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8"))


def _write_yaml(obj: Any, path: str) -> str:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8"))


def _stat(stats: ConfigParser, key: str, source: str) -> Any:
    value = stats.get(key, None)
    if value is None:
        raise KeyError(f"{source}: missing data-stats key {key!r} (run monai.apps.auto3dseg.DataAnalyzer on the datalist).")
    return value


# ----------------------------------------------------------------------------- the Algo
class HyperconvBundleAlgo(BundleAlgo):
    """``BundleAlgo`` of our templates: fills the configs from the data, trains with this interpreter.

    ``fill_template_config`` sets, in ``configs/hyper_parameters.yaml``: ``bundle_root``, data paths,
    ``modality``, ``fold``, ``spatial_dims``, ``input_channels`` (image channels), ``output_classes``
    (largest label + 1), ``spacing`` (median) and ``resample`` (spacings vary by more than 10%),
    ``patch_size`` (``min(patch_size, 99.5th-percentile shape)`` made divisible by
    :meth:`patch_divisor`); in ``configs/transforms.yaml`` the intensity normalisation (CT: clip to the
    foreground's 0.5-99.5 percentiles and scale to [0, 1]; otherwise z-score over non-zero voxels) and,
    when not resampling, drops ``Spacingd``. Keyword arguments (``fold`` from ``BundleGen``, or any
    config id such as ``learning_rate``) override config values.

    Training runs ``scripts/train.py`` in a subprocess with this interpreter (unless ``CMD_PREFIX``
    is set) and in one process: with several GPUs visible it uses the first.
    """

    def patch_divisor(self, network: Mapping[str, Any]) -> int:
        """Every side of the training patch must be a multiple of this (1: any size)."""
        return 1

    def fill_template_config(self, data_stats_filename: Any, algo_path: str, **kwargs: Any) -> dict:
        for k in ("gpu_customization", "gpu_customization_specs"):
            kwargs.pop(k, None)  # CPU/GPU-agnostic templates: nothing to customise
        configs = os.path.join(algo_path, "configs")
        if not kwargs.pop("fill_with_datastats", True):
            records = deepcopy(self.fill_records)
        else:
            records = self._records_from_data(data_stats_filename, configs)
        parsers = {}
        for fname in sorted(os.listdir(configs)):
            if fname.endswith(".yaml"):
                p = ConfigParser(globals=False)
                p.read_config(os.path.join(configs, fname))
                parsers[fname] = p
        for fname, values in records.items():
            for k, v in values.items():
                parsers[fname][k] = deepcopy(v)
        for k, v in kwargs.items():  # user/BundleGen overrides go where the key lives
            owner = next((f for f, p in parsers.items() if k in p or p.get(k, None) is not None), None)
            if owner is None:
                logger.warning("%s: override %r is not a key of the configs in %s; ignored.", self.name, k, configs)
                continue
            parsers[owner][k] = deepcopy(v)
            records.setdefault(owner, {})[k] = deepcopy(v)
        for fname, p in parsers.items():
            ConfigParser.export_config_file(p.get(), os.path.join(configs, fname), fmt="yaml", default_flow_style=None,
                                            sort_keys=False)
        return records

    def _records_from_data(self, data_stats_filename: Any, configs: str) -> dict:
        if not data_stats_filename:
            raise ValueError(f"{self.name}: no data stats: pass data_stats_filename (DataAnalyzer output) to BundleGen.")
        stats = ConfigParser(globals=False)
        if isinstance(data_stats_filename, Mapping):
            stats.update(dict(data_stats_filename))
            src_name = "data stats"
        elif os.path.isfile(str(data_stats_filename)):
            stats.read_config(str(data_stats_filename))
            src_name = str(data_stats_filename)
        else:
            raise FileNotFoundError(f"{self.name}: data stats file {data_stats_filename} does not exist.")
        if not self.data_list_file or not os.path.isfile(str(self.data_list_file)):
            raise FileNotFoundError(
                f"{self.name}: data source config {self.data_list_file!r} not found: pass data_src_cfg_name "
                "(a YAML with modality, datalist, dataroot) to BundleGen."
            )
        src = ConfigParser.load_config_file(str(self.data_list_file))
        for key in ("datalist", "dataroot"):
            if key not in src:
                raise KeyError(f"{self.data_list_file}: missing key {key!r}.")
        hp_parser = ConfigParser(globals=False)
        hp_parser.read_config(os.path.join(configs, HYPER_PARAMETERS))
        net_parser = ConfigParser(globals=False)
        net_parser.read_config(os.path.join(configs, "network.yaml"))
        tf_parser = ConfigParser(globals=False)
        tf_parser.read_config(os.path.join(configs, "transforms.yaml"))

        modality = str(src.get("modality", "mri")).lower()
        shape = [int(s) for s in _stat(stats, "stats_summary#image_stats#shape#percentile_99_5", src_name)]
        spacing_med = [float(s) for s in _stat(stats, "stats_summary#image_stats#spacing#median", src_name)]
        sp_lo = np.asarray(_stat(stats, "stats_summary#image_stats#spacing#percentile_00_5", src_name), float)
        sp_hi = np.asarray(_stat(stats, "stats_summary#image_stats#spacing#percentile_99_5", src_name), float)
        resample = bool(np.any(sp_lo < 0.9 * np.asarray(spacing_med)) or np.any(sp_hi > 1.1 * np.asarray(spacing_med)))
        channels = int(_stat(stats, "stats_summary#image_stats#channels#max", src_name))
        labels = [int(v) for v in _stat(stats, "stats_summary#label_stats#labels", src_name)]
        classes = max(2, max(labels) + 1)
        div = self.patch_divisor(net_parser.get("network", {}))
        patch = []
        for want, have in zip(hp_parser["patch_size"], shape):
            side = min(int(want), int(have))
            side = max(div, side // div * div)  # round down to a multiple (at least one multiple; sliding windows pad)
            patch.append(side)
        if modality.startswith("ct"):
            lo = float(_stat(stats, "stats_summary#image_foreground_stats#intensity#percentile_00_5", src_name))
            hi = float(_stat(stats, "stats_summary#image_foreground_stats#intensity#percentile_99_5", src_name))
            intensity = {"_target_": "ScaleIntensityRanged", "keys": "@image_key", "a_min": lo, "a_max": hi,
                         "b_min": 0.0, "b_max": 1.0, "clip": True}
        else:
            intensity = {"_target_": "NormalizeIntensityd", "keys": "@image_key", "nonzero": True, "channel_wise": True}
        hp = {
            "bundle_root": os.path.abspath(os.path.dirname(configs)),
            "data_file_base_dir": os.path.abspath(str(src["dataroot"])),
            "data_list_file_path": os.path.abspath(str(src["datalist"])),
            "modality": modality,
            "spatial_dims": len(shape),
            "input_channels": channels,
            "output_classes": classes,
            "spacing": spacing_med,
            "resample": resample,
            "patch_size": patch,
        }
        tf: dict[str, Any] = {"intensity_transform": intensity}
        if not resample:
            for key in ("transforms_train", "transforms_validate", "transforms_infer"):
                items = tf_parser[f"{key}#transforms"]
                tf[f"{key}#transforms"] = [t for t in items if not (isinstance(t, Mapping) and t.get("_target_") == "Spacingd")]
        return {HYPER_PARAMETERS: hp, "transforms.yaml": tf}

    def _create_cmd(self, train_params: dict | None = None) -> tuple[str, str]:
        # MONAI's default prefix is "python" from PATH, which may lack this package: use this interpreter
        if not str(self.device_setting.get("CMD_PREFIX") or "").strip():
            self.device_setting["CMD_PREFIX"] = sys.executable
        # train_algo is a single-process loop: no torchrun/bcprun launch (it trains on the first visible GPU)
        if int(self.device_setting.get("n_devices", 1)) > 1 or int(self.device_setting.get("NUM_NODES", 1)) > 1:
            logger.warning("%s trains in one process on one device; ignoring n_devices=%s, NUM_NODES=%s.", self.name,
                           self.device_setting.get("n_devices"), self.device_setting.get("NUM_NODES"))
            self.device_setting.update(n_devices=1, NUM_NODES=1)
        return super()._create_cmd(train_params)

    def get_score(self, *args: Any, **kwargs: Any) -> float:
        """Best validation Dice from ``<ckpt_path>/progress.yaml`` (FileNotFoundError naming it if not trained)."""
        return _progress_score(os.path.join(_ckpt_dir_of(self.output_path), PROGRESS_FILE))


# ----------------------------------------------------------------------------- training
def _params(net: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters() if p.requires_grad))


@torch.no_grad()
def _validate(net, loader, inferer, num_classes: int, device, keys: tuple[str, str] = ("image", "label")) -> float:
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    net.eval()
    metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
    for batch in loader:
        image, label = batch[keys[0]].to(device), batch[keys[1]].to(device)
        logits = inferer(image, net)
        pred = one_hot(torch.argmax(logits, dim=1, keepdim=True), num_classes)
        metric(pred.float(), one_hot(label.long(), num_classes).float())
    score = float(metric.aggregate().item())
    metric.reset()
    return score


def train_algo(config_file: str | Sequence[str], **override: Any) -> float:
    """Train the generated algorithm described by ``config_file`` and return the best validation Dice.

    This is ``scripts/train.py run --config_file='<configs>' [--key=value ...]`` (``BundleAlgo.train``;
    ``AutoRunner.set_training_params({"num_iterations": 4})`` arrives as ``--num_iterations=4``).
    Length: ``num_iterations`` optimiser steps if set, else ``num_epochs`` epochs; validation every
    ``num_epochs_per_validation`` epochs and after the last step, with ``val_inferer`` (the SSHN's at
    ``val_phi``). Writes to ``ckpt_path``: ``model.pt`` (best ``state_dict``), ``progress.yaml`` (one entry
    per new best, ``best_avg_dice_score`` as MONAI's templates; an earlier run's file is removed first)
    and ``results.json`` (algorithm, fold, metric, best score, params, train_time_s, the overrides,
    status; ``"failed"`` with the error if training raised, before re-raising). Files are written
    atomically; seeds come from ``seed``.
    """
    from monai.auto3dseg.utils import datafold_read
    from monai.data import CacheDataset, DataLoader
    from monai.utils import set_determinism

    t0 = time.time()
    parser = _parser(config_file, override)
    ckpt = _ckpt_dir(parser)
    os.makedirs(ckpt, exist_ok=True)
    stale = os.path.join(ckpt, PROGRESS_FILE)
    if os.path.isfile(stale):  # a new run: get_score() must not return an earlier run's score
        os.remove(stale)
    algorithm = str(parser.get("algorithm", "?"))
    fold = int(parser.get_parsed_content("fold"))
    record: dict[str, Any] = {"algorithm": algorithm, "fold": fold, "metric_name": "dice", "status": "failed",
                              "error": None, "best_metric": None, "overrides": _jsonable(override)}
    try:
        set_determinism(seed=int(parser.get_parsed_content("seed", default=0)))
        device = _device(parser.get_parsed_content("device", default=None))
        datalist = parser.get_parsed_content("data_list_file_path")
        train_files, val_files = datafold_read(datalist=datalist, basedir=parser.get_parsed_content("data_file_base_dir"),
                                               fold=fold)
        if not train_files or not val_files:
            raise ValueError(f"{datalist}: fold {fold} leaves {len(train_files)} training and {len(val_files)} validation "
                             "cases; give every training item a 'fold' key so that both are non-empty.")
        cache_rate = float(parser.get_parsed_content("cache_rate", default=1.0))
        workers = int(parser.get_parsed_content("num_workers", default=0))
        train_ds = CacheDataset(train_files, parser.get_parsed_content("transforms_train"), cache_rate=cache_rate,
                                num_workers=0, progress=False)
        val_ds = CacheDataset(val_files, parser.get_parsed_content("transforms_validate"), cache_rate=cache_rate,
                              num_workers=0, progress=False)
        train_loader = DataLoader(train_ds, batch_size=int(parser.get_parsed_content("batch_size")), shuffle=True,
                                  num_workers=workers)
        val_loader = DataLoader(val_ds, batch_size=1, shuffle=False, num_workers=workers)
        net = parser.get_parsed_content("network").to(device)
        loss_fn = parser.get_parsed_content("loss")
        optimizer = parser.get_parsed_content("optimizer")(net.parameters())
        train_inferer = parser.get_parsed_content("train_inferer")
        val_inferer = parser.get_parsed_content("val_inferer")
        num_classes = int(parser.get_parsed_content("output_classes"))
        keys = (parser.get_parsed_content("image_key", default="image"), parser.get_parsed_content("label_key", default="label"))
        steps_per_epoch = len(train_loader)
        n_iter = parser.get_parsed_content("num_iterations", default=None)
        total = int(n_iter) if n_iter else int(parser.get_parsed_content("num_epochs")) * steps_per_epoch
        if total < 1:
            raise ValueError(f"num_iterations/num_epochs must give at least one step, got {total}.")
        val_every = max(1, int(parser.get_parsed_content("num_epochs_per_validation", default=1)) * steps_per_epoch)
        record["params"] = _params(net)
        record["device"] = str(device)
        progress: list[dict] = []
        best, best_it, it = -1.0, 0, 0
        while it < total:
            for batch in train_loader:
                net.train()
                image, label = batch[keys[0]].to(device), batch[keys[1]].to(device)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(train_inferer(image, net), label)
                loss.backward()
                optimizer.step()
                it += 1
                if it % val_every == 0 or it == total:
                    score = _validate(net, val_loader, val_inferer, num_classes, device, keys)
                    logger.info("%s fold %d: iteration %d/%d, loss %.4f, validation Dice %.4f", algorithm, fold, it, total,
                                loss.item(), score)
                    if not math.isfinite(score):
                        raise FloatingPointError(f"validation Dice is {score} at iteration {it}.")
                    if score > best:
                        best, best_it = score, it
                        model_path = os.path.join(ckpt, MODEL_FILE)
                        atomic_write(model_path, lambda tmp: torch.save(net.state_dict(), tmp))
                        progress.append({"best_avg_dice_score": best, "best_avg_dice_score_epoch": (it - 1) // steps_per_epoch,
                                         "best_avg_dice_score_iteration": it, "model": model_path,
                                         "train_time_s": round(time.time() - t0, 3), "date": str(datetime.now())[:19]})
                        _write_yaml(progress, os.path.join(ckpt, PROGRESS_FILE))
                if it >= total:
                    break
        record.update(status="ok", best_metric=best, best_iteration=best_it, num_iterations=total,
                      model=os.path.join(ckpt, MODEL_FILE))
        return best
    except BaseException as e:
        record["error"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        record["train_time_s"] = round(time.time() - t0, 3)
        record["date"] = str(datetime.now())[:19]
        _write_json(record, os.path.join(ckpt, RESULTS_FILE))


# ----------------------------------------------------------------------------- inference
class AlgoInferer:
    """``InferClass`` of our templates' ``scripts/infer.py`` (``BundleAlgo.get_inferer`` / ``predict``).

    Args:
        config_file: the algorithm's config files (list or comma-separated string).
        override: config values to replace, on top of the training run's overrides saved in
            ``results.json`` (keys that are not config ids, such as the ensemble's ``image_save_func``,
            are ignored).

    ``infer(image_file)`` returns softmax probabilities ``(C, *spatial)`` as a ``MetaTensor`` in the
    input image's space (the spatial preprocessing is inverted), as Auto3DSeg's ensemble expects.
    """

    def __init__(self, config_file: str | Sequence[str], **override: Any) -> None:
        parser = _parser(config_file, override, warn_unknown=False)  # the ensemble passes its own keys too
        saved = (_read_json(os.path.join(_ckpt_dir(parser), RESULTS_FILE)) or {}).get("overrides") or {}
        if saved:  # the training run's overrides (e.g. --network#channels=8) shape the checkpoint: re-apply them
            parser = _parser(config_file, {**saved, **override}, warn_unknown=False)
        self.device = _device(parser.get_parsed_content("device", default=None))
        self.network = parser.get_parsed_content("network").to(self.device)
        model = os.path.join(_ckpt_dir(parser), MODEL_FILE)
        if not os.path.isfile(model):
            raise FileNotFoundError(f"No trained model {model}: train the algorithm (BundleAlgo.train) first.")
        self.network.load_state_dict(torch.load(model, map_location=self.device, weights_only=True))
        self.network.eval()
        self.transforms = parser.get_parsed_content("transforms_infer")
        self.inferer = parser.get_parsed_content("val_inferer")
        self.image_key = parser.get_parsed_content("image_key", default="image")

    @torch.no_grad()
    def infer(self, image_file: str | Mapping[str, Any]) -> torch.Tensor:
        from monai.data import MetaTensor
        from monai.transforms import Invertd

        data = dict(image_file) if isinstance(image_file, Mapping) else {self.image_key: image_file}
        data = self.transforms(data)
        image = data[self.image_key]
        prob = torch.softmax(self.inferer(image.unsqueeze(0).to(self.device), self.network), dim=1)[0].cpu()
        data["pred"] = MetaTensor(prob, meta=image.meta, applied_operations=image.applied_operations)
        inverted = Invertd(keys="pred", transform=self.transforms, orig_keys=self.image_key, nearest_interp=False)(data)
        return inverted["pred"]


# ----------------------------------------------------------------------------- reading a work directory
def _ckpt_dir_of(folder: str) -> str:
    """``ckpt_path`` of a generated algorithm folder, ``bundle_root`` re-pointed to ``folder`` (moved work dirs)."""
    hp = os.path.join(folder, "configs", HYPER_PARAMETERS)
    if not os.path.isfile(hp):
        raise FileNotFoundError(f"{hp} not found: {folder} is not a generated Auto3DSeg algorithm.")
    parser = ConfigParser()
    parser.read_config(hp)
    parser["bundle_root"] = folder
    return str(parser.get_parsed_content("ckpt_path", default=folder))


def _progress_score(path: str) -> float:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: the algorithm was not trained or training failed before validating.")
    entries = ConfigParser.load_config_file(path)
    if not isinstance(entries, list) or not entries or not isinstance(entries[-1], dict) \
            or "best_avg_dice_score" not in entries[-1]:
        raise ValueError(f"{path}: expected a non-empty list whose last entry has 'best_avg_dice_score'.")
    return float(entries[-1]["best_avg_dice_score"])


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _name_and_fold(folder: str) -> tuple[str, int | None]:
    """Template name and fold of ``<name>_<fold>[_<hpo suffix>]`` (MONAI's algorithm id, as the ensemble reads
    it); the name from ``algo_object.json`` and the fold from ``hyper_parameters.yaml`` when the folder
    name does not follow that pattern."""
    base = os.path.basename(folder)
    m = re.match(r"^(?P<name>.+?)_(?P<fold>\d+)(?:_.*)?$", base)
    obj = _read_json(os.path.join(folder, "algo_object.json")) or {}
    state = obj.get("_state_") if isinstance(obj.get("_state_"), dict) else {}
    name = state.get("name") or (m.group("name") if m else base)
    if m:
        return str(name), int(m.group("fold"))
    try:
        with open(os.path.join(folder, "configs", HYPER_PARAMETERS), encoding="utf-8") as f:
            value = (yaml.safe_load(f) or {}).get("fold")
        return str(name), int(value)
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError):
        return str(name), None


def _ckpt_dir_guess(folder: str, fold: int | None) -> str:
    try:
        return _ckpt_dir_of(folder)
    except Exception as e:  # a foreign or broken config: look in the usual places
        logger.debug("%s: ckpt_path not resolved (%s)", folder, e)
        candidates = (os.path.join(folder, "model"), os.path.join(folder, f"model_fold{fold}"))
        return next((c for c in candidates if os.path.isdir(c)), folder)


def _row(folder: str) -> dict:
    """The leaderboard row of one generated algorithm folder."""
    name, fold = _name_and_fold(folder)
    row: dict[str, Any] = {k: None for k in ROW_KEYS}
    row.update(algorithm=name, name=name, options={}, fold=fold, metric_name="dice", robustness={}, source="auto3dseg",
               work_dir=folder)
    ckpt = _ckpt_dir_guess(folder, fold)
    results = _read_json(os.path.join(ckpt, RESULTS_FILE)) or {}  # our templates only
    row["params"] = results.get("params")
    row["train_time_s"] = results.get("train_time_s")
    score: Any = None
    if results.get("status") == "failed":
        reason = results.get("error") or f"training failed (see {os.path.join(ckpt, RESULTS_FILE)})"
    else:
        try:
            score = _progress_score(os.path.join(ckpt, PROGRESS_FILE))  # what BundleAlgo.get_score() returns
            reason = None
        except (OSError, ValueError, TypeError) as e:
            reason = str(e)
            obj = _read_json(os.path.join(folder, "algo_object.json")) or {}
            if obj.get("best_metric") is not None:  # AutoRunner stores get_score() there after training
                score, reason = obj["best_metric"], None
    if score is not None:
        try:
            score = float(score)
            if not math.isfinite(score):
                score, reason = None, f"non-finite score {score}"
        except (TypeError, ValueError):
            score, reason = None, f"unreadable score {score!r}"
    if score is None:
        row.update(status="failed", error=f"no validation score: {reason}")
    else:
        row.update(status="ok", test_metric=score)
    return row


def read_auto3dseg_workdir(work_dir: str | os.PathLike) -> list[dict]:
    """One row per algorithm x fold of an Auto3DSeg work directory (``AutoRunner``/``BundleGen`` output).

    Algorithm folders are the sub-folders with ``algo_object.json`` (or ``.pkl``) or
    ``configs/hyper_parameters.yaml`` (``algorithm_templates`` and ensemble outputs are skipped). The
    score is the best validation Dice as ``BundleAlgo.get_score`` reads it (``<ckpt_path>/progress.yaml``),
    else the ``best_metric`` AutoRunner stored in ``algo_object.json``; our templates' ``results.json``
    adds params, training time and, for a failed run, the error. A folder without a score gives a
    row with ``status="failed"`` and the reason in ``error``. Rows follow :data:`ROW_KEYS` (unknown
    values ``None``), sorted by algorithm then fold.

    Raises:
        FileNotFoundError / NotADirectoryError: ``work_dir`` is missing or not a folder.
    """
    path = os.path.abspath(os.fspath(work_dir))
    if not os.path.exists(path):
        raise FileNotFoundError(f"Auto3DSeg work directory {path} does not exist.")
    if not os.path.isdir(path):
        raise NotADirectoryError(f"Auto3DSeg work directory {path} is not a directory.")
    try:
        entries = sorted(os.listdir(path))
    except OSError as e:
        raise OSError(f"Auto3DSeg work directory {path} cannot be read: {e}") from e
    rows = []
    for entry in entries:
        folder = os.path.join(path, entry)
        if entry == "algorithm_templates" or not os.path.isdir(folder):
            continue
        is_algo = any(os.path.isfile(os.path.join(folder, f)) for f in _ALGO_OBJECT_FILES) or os.path.isfile(
            os.path.join(folder, "configs", HYPER_PARAMETERS))
        if is_algo:
            rows.append(_row(folder))
    if not rows:
        logger.warning("No generated Auto3DSeg algorithm folders in %s.", path)
    return sorted(rows, key=lambda r: (str(r["algorithm"]), -1 if r["fold"] is None else r["fold"]))
