"""README's quick start and CI stay in step; its examples of fastnn's own features run."""

import pathlib
import re
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _quick_start_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```\n(.*?)```", section, flags=re.S)]


def test_quick_start_has_the_two_commands():
    commands = _quick_start_commands()
    assert len(commands) == 2
    assert commands[0].endswith("fastnn demo")
    assert "pytest" in commands[1] and ".[test]" in commands[1]


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1].strip() == _quick_start_commands()[1]


def test_beyond_scikit_learn_examples_run():
    # the README's examples of what fastnn adds run as written
    pytest.importorskip("sklearn")
    text = (ROOT / "README.md").read_text()
    section = text.split("## Beyond scikit-learn", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]
    assert len(blocks) == 2
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["clf"].validation_loss_curve_ is not None
