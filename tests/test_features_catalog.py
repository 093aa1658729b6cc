"""The feature catalog is the one place features are documented: docs match it, outputs are all in it."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from features_testdata import SESSION, daily_bar, option_chain, ticks

from pipeline.features import FEATURE_CATALOG, bars_1m, market_features, options_features
from pipeline.features.catalog import BARS, MARKET, OPTIONS, REGENERATE, features_of, render_markdown
from pipeline.features.windows import WINDOW_UNITS

DOCS = Path(__file__).resolve().parents[1] / "docs" / "FEATURES.md"


def test_docs_are_generated_from_the_catalog() -> None:
    assert DOCS.read_text() == render_markdown(), (
        f"docs/FEATURES.md is stale: run `{REGENERATE}`"
    )
    for feature in FEATURE_CATALOG:
        assert f"`{feature.name}`" in DOCS.read_text()


def test_docs_give_every_window_with_its_unit() -> None:
    rows = {line.split("|")[1].strip(" `"): line for line in DOCS.read_text().splitlines() if line.startswith("| `")}
    for feature in features_of(MARKET):
        window = feature.window
        assert window.unit in (*WINDOW_UNITS, "-"), feature.name
        assert f"| {window.text} | {window.unit} |" in rows[feature.name], feature.name
    units = {f.window.unit for f in features_of(MARKET)}
    assert set(WINDOW_UNITS) <= units


def test_every_entry_is_complete_and_unique_per_table() -> None:
    for table in (BARS, MARKET, OPTIONS):
        names = [f.name for f in features_of(table)]
        assert len(names) == len(set(names)), table
    for feature in FEATURE_CATALOG:
        assert feature.formula and feature.window and feature.unit and feature.group, feature


def test_every_output_column_is_in_the_catalog() -> None:
    trades, quotes = ticks(["AAA", "BBB"], trades_per_symbol=300)
    minute_bars = bars_1m(trades, quotes, SESSION)
    market = market_features(minute_bars, SESSION, bars=daily_bar("FFF"))
    options = options_features(option_chain())
    for table, frame in ((BARS, minute_bars), (MARKET, market), (OPTIONS, options)):
        assert frame.columns == [f.name for f in features_of(table)], table
        assert isinstance(frame, pl.DataFrame) and frame.height > 0
