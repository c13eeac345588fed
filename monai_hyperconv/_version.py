"""The package version: the one place it is written (pyproject.toml reads it, bundles' metadata.json name a range)."""

__version__ = "0.1.0"
