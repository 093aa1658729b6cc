"""The session's shared lake builds (`build_once`) are keyed by everything that changes what a build writes, so a
module never copies a lake built from other days, another market or other landed files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from conftest import _PIPELINE_VARS, TEST_SYMBOLS, lake_cache_key, pipeline_env

from pipeline.sources.settings import OPTION_MINUTES_VAR, SYMBOLS_VAR, SYNTHETIC_PREFIX
from resources.sources import MarketDataResource

DAYS = [date(2024, 7, 1), date(2024, 7, 2)]
# Every variable the market sources read that changes what an ingest writes (the Alpaca keys do not).
DATA_VARS = sorted({v for v in _PIPELINE_VARS if v.startswith("PIPELINE_")}
                   | {SYNTHETIC_PREFIX + "SYMBOLS", OPTION_MINUTES_VAR, SYMBOLS_VAR})


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in DATA_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in pipeline_env(tmp_path / "a").items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_every_data_parameter_changes_the_key(env: pytest.MonkeyPatch) -> None:
    base = lake_cache_key("history", days=DAYS, seed=1)
    assert base.startswith("history-")
    changed = {
        "name": lake_cache_key("other", days=DAYS, seed=1),
        "days": lake_cache_key("history", days=DAYS[:1], seed=1),
        "seed": lake_cache_key("history", days=DAYS, seed=2),
        "a new parameter": lake_cache_key("history", days=DAYS, seed=1, symbols=("SPY",)),
    }
    for name in DATA_VARS:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(name, "SPY" if name != f"{SYNTHETIC_PREFIX}SYMBOLS" else TEST_SYMBOLS + ",IWM")
            changed[name] = lake_cache_key("history", days=DAYS, seed=1)
    assert {name: key for name, key in changed.items() if key == base} == {}
    assert len(set(changed.values())) == len(changed)


def test_a_market_resource_is_part_of_the_key(env: pytest.MonkeyPatch) -> None:
    martingale = lake_cache_key("m", days=DAYS, market=MarketDataResource(alpha=0.0))
    assert martingale == lake_cache_key("m", days=DAYS, market=MarketDataResource(alpha=0.0))
    assert martingale != lake_cache_key("m", days=DAYS, market=MarketDataResource(alpha=0.1))
    assert martingale != lake_cache_key("m", days=DAYS, market=MarketDataResource(alpha=0.0, seed=3))


def test_where_a_lake_lives_is_not_part_of_the_key(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Each test module has its own lake and Dagster home: the same build elsewhere must still be shared.
    here = lake_cache_key("history", days=DAYS)
    for name, value in pipeline_env(tmp_path / "b").items():
        env.setenv(name, value)
    assert lake_cache_key("history", days=DAYS) == here
