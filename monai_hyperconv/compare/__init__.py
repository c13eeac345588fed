"""Comparisons in the spirit of Auto3DSeg: algorithms x folds -> a leaderboard.

``run_comparison(task, algorithms, ComparisonSettings(...))`` / ``python -m monai_hyperconv.compare``:
every algorithm (a registered network with options, ``"unet:kernel_size=3"``) is trained on every
fold (and seed) with the same bundle recipe, then measured (train/test metric, gap, parameters, receptive field, GFLOPs, training time,
latency, peak memory, noise robustness) into ``leaderboard.md``/``.csv``, ``results.json`` and
plots. ``read_auto3dseg_workdir`` brings Auto3DSeg work directories into the same leaderboard.
``report``: the experiment-report convention behind ``docs/results.md``. ``stats``: the leaderboard's
case-level statistics (bootstrap CIs, paired Wilcoxon tests with Holm's correction, rank robustness).
"""

from .auto3dseg import read_auto3dseg_workdir  # templates folder: monai_hyperconv.compare.auto3dseg.BYO_TEMPLATES_PATH
from .leaderboard import COLUMNS, aggregate, leaderboard_markdown, write_outputs
from .report import REPORT_KEYS, experiment_report, fmt_pm, read_report
from .runner import MANIFEST_FILE, plan_cells, run_comparison
from .settings import ComparisonError, ComparisonSettings
from .stats import comparison_statistics, holm, mean_ci
from .spec import DEFAULT_NOISE, TASKS, AlgorithmSpec, TaskSpec, network_config, parse_algorithm, resolve_network_name

__all__ = [
    "read_auto3dseg_workdir",
    "run_comparison", "plan_cells", "ComparisonSettings", "ComparisonError", "MANIFEST_FILE",
    "aggregate", "leaderboard_markdown", "write_outputs", "COLUMNS",
    "parse_algorithm", "resolve_network_name", "network_config", "AlgorithmSpec", "TaskSpec", "TASKS", "DEFAULT_NOISE",
    "experiment_report", "read_report", "fmt_pm", "REPORT_KEYS",
    "comparison_statistics", "mean_ci", "holm",
]
