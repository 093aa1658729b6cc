"""Rooms that show the architecture, and module names that each mean one thing.

Market data lives in three rooms: where it comes from (`pipeline/sources/`), the embedded synthetic market
(`pipeline/synthetic/`) and the data contract they both write to (`pipeline/contract/`); import-linter holds their
layering (pyproject.toml). "market" names only the `features.market` table, "validation" only the data contract's
checks and "baselines" only the rule baselines the backtest compares with, never a module."""

from __future__ import annotations

from pathlib import Path

from conftest import REPO_ROOT

CODE = ("pipeline", "assets", "resources")


def _modules() -> list[Path]:
    return [p.relative_to(REPO_ROOT) for folder in CODE for p in (REPO_ROOT / folder).rglob("*.py")]


def test_market_data_is_split_into_sources_synthetic_and_contract() -> None:
    assert not (REPO_ROOT / "pipeline" / "market").exists()
    rooms = {room: {p.stem for p in (REPO_ROOT / "pipeline" / room).glob("*.py")} - {"__init__"}
             for room in ("sources", "synthetic", "contract")}
    assert {"base", "settings", "file_source", "alpaca_source", "ibkr_source", "option_collector"} <= rooms["sources"]
    assert {"source", "config", "paths", "options", "oracle"} <= rooms["synthetic"]
    assert {"schemas", "validation", "parsing", "occ", "calendar"} <= rooms["contract"]
    assert not any("synthetic" in name for name in rooms["sources"] | rooms["contract"])


def test_no_module_is_named_for_a_word_that_means_another_thing() -> None:
    names = {str(p): p.with_suffix("").parts for p in _modules()}
    assert [m for m, parts in names.items() if any("market" in part for part in parts)] == []
    assert [m for m, parts in names.items() if any("baseline" in part for part in parts)] == []
    validation = sorted(m for m, parts in names.items() if any("valid" in part for part in parts))
    assert validation == ["pipeline/contract/validation.py", "pipeline/contract/validation_schemas.py"]
