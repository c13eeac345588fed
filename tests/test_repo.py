"""Project habits that CI can check: the README's commands and .ci/run stay in step."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_has_two_commands_and_ci_runs_the_test_one():
    cmds = _readme_commands()
    assert len(cmds) == 2, cmds
    main, tests = cmds
    assert main.startswith("bash scripts/setup.sh && ") and tests.startswith("bash scripts/setup.sh && ")
    assert "pytest" in tests and "pytest" not in main
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci, "the README's test command must be a line of .ci/run"


def test_readme_main_command_targets_exist():
    main = _readme_commands()[0]
    for path in re.findall(r"(scripts/[\w./-]+|bundles/[\w./-]+)", main):
        assert (ROOT / path).exists(), path


def test_declared_dependencies():
    text = (ROOT / "pyproject.toml").read_text()
    for dep in ("torch", "monai>=1.6.1", "nibabel", "itk", "pytorch-ignite", "tensorboard", "fire", "tqdm", "matplotlib"):
        assert f'"{dep}' in text, dep
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
