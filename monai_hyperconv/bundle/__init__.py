"""Shared machinery for the MONAI bundles under ``bundles/`` (reference it by dotted path).

How a bundle uses it (see ``bundles/liver_lesion_segmentation/configs/*.json`` as the template):

Data (train.json / evaluate.json)::

    "dataset_dir": "$@bundle_root + '/data'",               # git-ignored; demo generated on first use
    "datalists": {"_target_": "monai_hyperconv.bundle.prepare_dataset", "task": "liver",
                  "dataset_dir": "@dataset_dir", "channels": {"image": 1, "label": 1},
                  "spatial_dims": 3, "fold": null},
    "train#dataset#data": "$@datalists['training']",  "validate#dataset#data": "$@datalists['validation']"

``prepare_dataset`` generates the demo (``monai_hyperconv.data.ensure_demo``) when ``dataset_dir``
does not exist, then raises :class:`DatasetError` naming the file, the section/index and the key
for a missing ``dataset.json``, a missing file, an unreadable/truncated image or a wrong channel
count, before training starts. ``fold``/``num_folds`` re-split for k-fold cross-validation
(MONAI ``partition_dataset``). ``list_inputs(input_path)`` makes an inference datalist from a
file, a folder, a DICOM series folder or a ``dataset.json``.

Checkpoints (train.json ``train#handlers``; validation ``validate#handlers``)::

    "validate#best_saver": {"_target_": "monai_hyperconv.bundle.BestModelSaver", "save_dir": "@ckpt_dir",
                            "network": "@network", "metric_name": "val_mean_dice", "mode": "max"},
    {"_target_": "monai_hyperconv.bundle.CheckpointManager", "save_dir": "@ckpt_dir", "resume": "@resume",
     "save_dict": {"network": "@network", "optimizer": "@optimizer", "lr_scheduler": "@lr_scheduler",
                   "trainer": "@train#trainer", "best": "@validate#best_saver", "curves": "@train#curves"}}

Before training (first item of ``initialize``): ``preflight`` rejects unknown or mistyped
command-line overrides and bad numeric settings, refuses to replace an earlier run unless
``--resume true`` or ``--overwrite true`` (which moves it to ``previous_runs/<time>/``);
``CheckpointManager`` removes temporary files of a killed save when training starts. During training ``NonFiniteGuard`` (first train handler) stops the
run (or skips the step) on a NaN/inf loss or gradient, before the update. ``WeightAverage`` (a
train handler; ``"eval_network": "$@weight_average.module"`` for the evaluator and the best-model
saver) keeps an exponential moving average of the weights that validation and ``model.pt`` use.

Every file is written via a temporary file + ``os.replace`` on rank 0 only (never a network with
NaN/inf weights; the last checkpoint also holds all random states for a bit-identical resume); ``models/model.pt``
is a plain ``state_dict`` (model-zoo layout), ``models/checkpoint_last.pt`` the full state.
``--resume true`` continues from ``checkpoint_last.pt`` up to ``--epochs``. Both say which network they
hold: ``models/model.json`` (sidecar) and the ``"network_def"`` entry of ``checkpoint_last.pt``; inference,
evaluation and export build their network with ``resolve_network`` (a clear ``NetworkDefMismatchError``
naming the differing keys and the fixing override, or ``--use_saved_network_def true``).

Export: ``export_baked(network, ckpt_file, filepath, input_shape)`` bakes generated-kernel convs to
plain convs and saves TorchScript (``.ts``) or ``torch.export`` (``.pt2``) that loads without
this package (also writes ``<stem>_weights.pt`` for MONAI's ``ckpt_export``).

Results: ``write_csv``, ``write_markdown``/``markdown_table``, ``plot_curves`` (Agg PNG), handlers
``TrainingCurves`` (per-epoch loss + validation metrics CSV/PNG) and ``EvaluationReport``
(``summary.md``/``summary.json``); per-case CSVs come from MONAI's ``MetricsSaver``.

Noise robustness (classifiers): ``noise_robustness(network, dataset, output_dir, levels={"salt_pepper": [...],
"gaussian": [...]})`` -> accuracy per level as CSV/Markdown/JSON/PNG.

DDP (multi_gpu_train.json): ``init_distributed()`` ("nccl" on CUDA else "gloo"), ``dist_device()``,
``ddp(network, device)``, ``is_main_process()``, ``cleanup_distributed()``.

Tests: ``monai_hyperconv.bundle.testing`` (``make_tiny_demo``, ``run_config`` which asserts
``ConfigWorkflow.check_properties()``, ``run_cli`` for ``python -m monai.bundle`` / torchrun).

Config pitfall: a ``$`` expression containing the substring "import" is parsed as an import
statement by MONAI; use ``_target_`` dotted paths (or ``"$from monai_hyperconv.bundle import x"``
in ``imports``).
"""

from .averaging import WeightAverage
from .checkpoint import BestModelSaver, CheckpointManager, atomic_save, random_states, set_random_states, unwrap
from .data import DatasetError, image_channels, list_inputs, prepare_dataset, select_fold, validate_datalist
from .distributed import (
    cleanup_distributed,
    ddp,
    dist_backend,
    dist_device,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
)
from .export import bake_checkpoint, export_baked, load_weights
from .network_def import (
    NetworkDefMismatchError,
    build_network,
    check_network_def,
    network_def_of,
    resolve_network,
    saved_network_def,
)
from .guards import NonFiniteError, NonFiniteGuard, assert_finite
from .preflight import (
    ConfigOverrideError,
    OutputExistsError,
    check_command_line,
    check_overrides,
    check_settings,
    guard_outputs,
    preflight,
    remove_stale_temp_files,
)
from .hypermorph import (
    DEFAULT_LAMS,
    HyperMorphInferer,
    HyperMorphLossAdapter,
    LambdaSweep,
    choose_lambda,
    evaluate_lambdas,
    materialized_hypermorph,
    read_lambda_csv,
    select_lambda,
    train_hypermorph,
)
from .registration import (
    PAIR_KEYS,
    RegistrationInferer,
    RegistrationLossAdapter,
    inference_pairs,
    make_pairs,
    registration_datalists,
    registration_step,
    split_pair_batch,
)
from .scale_space import (
    LossSchedule,
    ParetoSweep,
    PhiInferer,
    export_materialized,
    materialized_network,
    read_pareto_csv,
    select_phi,
)
from .robustness import NOISE_TYPES, corrupt, noise_robustness
from .results import (
    EvaluationReport,
    TrainingCurves,
    atomic_write_bytes,
    atomic_write_text,
    describe_network,
    markdown_table,
    plot_curves,
    write_csv,
    write_json,
    write_markdown,
)

__all__ = [
    "DatasetError", "prepare_dataset", "validate_datalist", "select_fold", "list_inputs", "image_channels",
    "CheckpointManager", "BestModelSaver", "atomic_save", "unwrap", "random_states", "set_random_states",
    "WeightAverage", "NonFiniteGuard", "NonFiniteError", "assert_finite",
    "preflight", "check_command_line", "check_overrides", "check_settings", "guard_outputs", "remove_stale_temp_files",
    "ConfigOverrideError", "OutputExistsError",
    "export_baked", "bake_checkpoint", "load_weights",
    "NetworkDefMismatchError", "network_def_of", "saved_network_def", "check_network_def", "build_network",
    "resolve_network",
    "write_csv", "write_json", "write_markdown", "markdown_table", "plot_curves", "atomic_write_text", "atomic_write_bytes",
    "TrainingCurves", "EvaluationReport", "describe_network", "noise_robustness", "corrupt", "NOISE_TYPES",
    "init_distributed", "cleanup_distributed", "dist_backend", "dist_device", "ddp", "is_main_process", "get_rank",
    "get_world_size",
    "PhiInferer", "LossSchedule", "ParetoSweep", "read_pareto_csv", "select_phi", "materialized_network",
    "export_materialized", "PAIR_KEYS", "make_pairs", "registration_datalists", "inference_pairs", "split_pair_batch",
    "RegistrationInferer", "RegistrationLossAdapter", "registration_step",
    "HyperMorphInferer", "HyperMorphLossAdapter", "train_hypermorph", "evaluate_lambdas", "choose_lambda",
    "read_lambda_csv", "LambdaSweep", "select_lambda", "materialized_hypermorph", "DEFAULT_LAMS",
]
