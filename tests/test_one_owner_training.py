"""Each concept of a training run has one definition (issue: one contract for a training run): the number of envs,
the default preset, the intraday settings every model trains on, the env factory, and no training config that is
a JSON string or an import path. The source tree of the code location is scanned, so a second owner added later
fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT

SOURCE = [p for folder in ("pipeline", "assets", "resources") for p in (REPO_ROOT / folder).rglob("*.py")]


def _code(path: Path) -> str:
    """The file without its comments and docstrings' prose lines (definitions and calls only)."""
    return "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())


def _where(pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return sorted(str(p.relative_to(REPO_ROOT)) for p in SOURCE if regex.search(_code(p)))


@pytest.mark.parametrize(("concept", "pattern", "owner"), [
    ("number of training envs", r"^(NUM_ENVS|SELECTION_ENVS) = \d+", ["pipeline/training/env_factories.py"]),
    ("intraday settings every model trains on", r"^DEFAULT_INTRADAY = ", ["pipeline/training/run.py"]),
    ("the intraday env of a saved dataset", r"^def intraday_env\(", ["pipeline/training/env_factories.py"]),
    ("the presets and the default preset", r"^PRESETS[:=]|^def preset_for_budget\(", ["pipeline/agents/ppo_config.py"]),
    ("the trainer's entry point", r"^def train\(", ["pipeline/training/trainer.py"]),
])
def test_a_concept_is_defined_in_one_module(concept: str, pattern: str, owner: list[str]) -> None:
    assert _where(rf"(?m){pattern}") == owner, concept


def test_no_count_of_envs_is_a_literal_outside_its_owner() -> None:
    assert _where(r"num_envs\s*[:=]\s*(int\s*=\s*)?(64|16)\b") == []


def test_no_preset_is_named_outside_the_presets() -> None:
    # A preset chosen by name in code is a second owner of the default: the run's preset, or preset_for_budget.
    assert _where(r"""preset\s*[=:]\s*(str\s*=\s*)?["'](small_budget|gpu_long)["']""") == []


def test_no_run_config_is_json_and_no_env_is_an_import_path() -> None:
    assert _where(r"_json:\s*str\s*=") == []  # Dagster config fields holding JSON
    assert _where(r"""["']factory["']|importlib\.import_module""") == []
    assert _where(r"train_config\.json") == []
