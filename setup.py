"""Package layout for setuptools (the rest of the metadata is in pyproject.toml).

The repository keeps the bundles in ``bundles/<name>/`` (READMEs, tests and scripts use that path);
the wheel ships the same files as ``monai_hyperconv/_bundles/<name>/`` (package data, mapped with
``package_dir``), where :mod:`monai_hyperconv.bundle.resources` finds them after a non-editable
install. Only the bundles' own files are shipped (configs, docs, LICENSE, the Auto3DSeg templates'
configs and scripts), never run outputs (``models/``, ``data/``, ``eval/`` ...) left in a checkout.
"""

import warnings

from setuptools import find_packages, setup

# the bundle folders are data, not subpackages: setuptools' "Package ... is absent from the `packages`
# configuration" notice (one per folder) is expected here
warnings.filterwarnings("ignore", message=r".*monai_hyperconv\._bundles\..*absent from the `packages`")

BUNDLE_FILES = [
    "*/LICENSE",
    "*/README.md",
    "*/configs/*.json",
    "*/configs/*.yaml",
    "*/configs/*.conf",
    "*/docs/*.md",
    "*/docs/*.png",
    "auto3dseg/*/configs/*.yaml",
    "auto3dseg/*/scripts/*.py",
]

setup(
    packages=find_packages(include=["monai_hyperconv", "monai_hyperconv.*"]) + ["monai_hyperconv._bundles"],
    package_dir={"monai_hyperconv._bundles": "bundles"},
    package_data={"monai_hyperconv._bundles": BUNDLE_FILES},
)
