"""Demo data sets (MSD layout, real anatomy + simulation) and preparation of the public data sets.

``make_demo(task, out_dir)`` / ``ensure_demo(task, out_dir)`` write deterministic demo sets;
``python -m monai_hyperconv.data make-demo TASK --out DIR`` does the same from the shell.
``monai_hyperconv.data.prepare`` converts LiTS / MSD Task03, ISBI 2015 MS, folders of brain T1
NIfTI and the neurite OASIS 2-D slices to the same layout (``scripts/prepare_*.py``).
"""

from .demo import DEMO_DEFAULTS, DEMO_TASKS, ensure_demo, make_all_demos, make_demo
from .io import DatasetExistsError, atomic_output_dir, save_nifti, write_dataset_json

__all__ = [
    "DEMO_TASKS", "DEMO_DEFAULTS", "make_demo", "make_all_demos", "ensure_demo",
    "DatasetExistsError", "atomic_output_dir", "save_nifti", "write_dataset_json",
]
