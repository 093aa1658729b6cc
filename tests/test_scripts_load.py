"""Every benchmark and script loads: its imports still name what the project exports. A script no test runs (the
throughput and learning benchmarks take minutes) would otherwise break silently when a name it imports moves."""

from __future__ import annotations

import pytest
from conftest import REPO_ROOT, load_script

SCRIPTS = sorted(p.relative_to(REPO_ROOT).as_posix() for folder in ("benchmarks", "scripts")
                 for p in (REPO_ROOT / folder).glob("*.py"))


@pytest.mark.parametrize("relative_path", SCRIPTS)
def test_script_loads(relative_path: str) -> None:
    module = load_script(relative_path)
    runnable = hasattr(module, "main") or relative_path.startswith("benchmarks/_") or relative_path.endswith("_report.py")
    assert runnable, f"{relative_path} has no main(): how is it run?"
