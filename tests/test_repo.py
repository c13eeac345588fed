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


# MONAI's workflow checks (BundleWorkflow._check_optional_id, patch_bundle_tracking) need the
# handlers written inline in ``train#handlers``, so other items reach them by position
# (``@train#handlers#5``). Inserting a handler would silently shift those references; this
# keeps each one pointing at the handler its key names.
_HANDLER_REFS = {"weight_average": "WeightAverage", "curves": "TrainingCurves", "loss_schedule": "LossSchedule"}


def _positional_handler_refs(node, key=None):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _positional_handler_refs(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _positional_handler_refs(v, key)
    elif isinstance(node, str):
        for m in re.finditer(r"@train#handlers#(\d+)", node):
            yield key, int(m.group(1))


def test_positional_handler_references_point_at_the_named_handler():
    import json

    found = 0
    for cfg in sorted((ROOT / "bundles").glob("*/configs/*.json")):
        data = json.loads(cfg.read_text())
        for key, i in _positional_handler_refs(data):
            handlers = data["train"]["handlers"]
            assert i < len(handlers), f"{cfg}: '{key}' -> @train#handlers#{i}, but there are {len(handlers)} handlers"
            target = handlers[i]["_target_"]
            assert key in _HANDLER_REFS, f"{cfg}: '{key}' refers to handler {i} ({target}); add it to _HANDLER_REFS"
            assert target.endswith(_HANDLER_REFS[key]), f"{cfg}: '{key}' -> @train#handlers#{i} is {target}"
            found += 1
    assert found >= 10  # every bundle's curves, two weight averages, one loss schedule
