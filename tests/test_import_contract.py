"""The core (`pipeline/` except the Dagster code-location modules) never imports dagster, assets or resources."""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("dagster", "assets", "resources")
# The code location itself lives in pipeline/ (DESIGN §1) and may import everything.
CODE_LOCATION = {"definitions.py", "partitions.py", "schedules.py", "sensors.py"}


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def core_files() -> list[Path]:
    root = REPO_ROOT / "pipeline"
    return [p for p in sorted(root.rglob("*.py")) if not (p.parent == root and p.name in CODE_LOCATION)]


def test_core_does_not_import_the_framework() -> None:
    files = core_files()
    assert any(p.name == "lake.py" for p in files)
    offenders = {
        str(path.relative_to(REPO_ROOT)): sorted(m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN)
        for path in files
    }
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_scan_catches_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("import os\nfrom dagster import asset\nimport resources.warehouse\n")
    assert imported_modules(module) == {"os", "dagster", "resources.warehouse"}
