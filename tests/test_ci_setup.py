"""CI runs the lint before the tests, installs the pytest-xdist the Makefile needs, and reads CI=false as not CI."""

from __future__ import annotations

import tomllib

import pytest
from conftest import REPO_ROOT, require_system_package, running_in_ci
from packaging.requirements import Requirement


def ci_commands() -> list[str]:
    lines = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    return [line.strip() for line in lines if line.strip().startswith("make ")]


def test_ci_runs_the_lint_before_the_tests() -> None:
    assert ci_commands() == ["make lint", "make test"]


def test_dev_extra_requires_the_xdist_that_knows_no_loadscope_reorder() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    dev = [Requirement(spec) for spec in pyproject["project"]["optional-dependencies"]["dev"]]
    (xdist,) = [req for req in dev if req.name == "pytest-xdist"]
    assert "--no-loadscope-reorder" in (REPO_ROOT / "Makefile").read_text()
    assert not xdist.specifier.contains("3.7.0") and xdist.specifier.contains("3.8.0")


@pytest.mark.parametrize(("value", "is_ci"), [
    ("true", True), ("1", True), ("yes", True), ("TRUE", True),
    ("false", False), ("0", False), ("no", False), ("", False),
])
def test_only_a_truthy_ci_value_counts_as_ci(value: str, is_ci: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", value)
    assert running_in_ci() is is_ci


def test_ci_false_skips_a_missing_system_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require_system_package("no such package")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no such package"):
        require_system_package("no such package")
