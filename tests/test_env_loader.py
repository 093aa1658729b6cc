"""The warehouse -> env bridge end to end: ingest and features materialized by Dagster on a temp lake for two
trading days, then loaded into MarketTensors and OptionChainTensors; values equal the tables read with plain
DuckDB SQL, and nothing at or before a bar changes when the warehouse rows after it do."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest
import torch
from conftest import assets_in_groups

from assets.features import FEATURES_GROUP
from assets.ingest import INGEST_GROUP
from pipeline.envs.tensors import DEFAULT_FEATURES, UNQUOTED_PRICE, synthetic_market_tensors
from pipeline.envs.warehouse_loader import (
    DEFAULT_OPTION_FEATURES,
    MarketLoaderConfig,
    OptionLoaderConfig,
    load_market_tensors,
    load_option_chain,
)
from pipeline.lake import Warehouse
from pipeline.synthetic.config import SyntheticMarketConfig
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

DAYS = (date(2024, 7, 8), date(2024, 7, 9))
SYMBOLS = ("QQQ", "SPY")  # tests/conftest.py TEST_SYMBOLS, sorted


@pytest.fixture(scope="module")
def lake(module_lake_env: dict[str, str]) -> Path:
    """A lake with ingest + features of DAYS from the synthetic source (hourly option snapshots)."""
    resources = {"warehouse": WarehouseResource(), "market_data": MarketDataResource(snapshot_minutes=60)}
    for day in DAYS:
        result = dg.materialize(assets_in_groups(INGEST_GROUP, FEATURES_GROUP), resources=resources,
                                partition_key=str(day))
        assert result.success
    return Path(module_lake_env["PIPELINE_DATA_LAKE"]) / "warehouse.duckdb"


def copy_of(lake: Path, tmp_path: Path) -> Warehouse:
    target = tmp_path / "warehouse.duckdb"
    target.write_bytes(lake.read_bytes())
    return Warehouse(target)


def test_loaded_tensors_are_the_feature_rows(lake: Path) -> None:
    market = load_market_tensors(Warehouse(lake), DAYS)
    names = [*DEFAULT_FEATURES, *(f"{n}_missing" for n in DEFAULT_FEATURES)]
    assert market.feature_names == tuple(names)
    assert market.symbols == SYMBOLS and market.trading_days == tuple(str(d) for d in DAYS)
    assert market.features.shape == (2, 390, 2, 2 * len(DEFAULT_FEATURES))
    assert market.session_minutes.tolist() == [390, 390]
    assert market.tradable.all() and market.quoted.all()  # the synthetic market quotes from the open

    with duckdb.connect(str(lake), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        rows = con.sql(
            f"SELECT symbol, trading_day, {', '.join(DEFAULT_FEATURES)} FROM features.market "
            "ORDER BY trading_day, symbol, ts"
        ).pl()
        quotes = con.sql("SELECT bid, ask FROM features.bars_1m ORDER BY trading_day, symbol, ts").pl()
    assert rows.height == 2 * 2 * 390
    # [day, symbol, minute] order of the SQL rows -> [day, minute, symbol] of the tensors.
    for i, name in enumerate(DEFAULT_FEATURES):
        sql = rows[name].cast(pl.Float64).to_numpy().reshape(2, 2, 390).transpose(0, 2, 1)
        value = market.features[..., i].double().numpy()
        flag = market.features[..., len(DEFAULT_FEATURES) + i].numpy()
        present = ~np.isnan(sql)
        np.testing.assert_allclose(value[present], sql[present], rtol=1e-6, atol=1e-7, err_msg=name)
        first = np.maximum.accumulate(present, axis=1)
        assert (flag == ~first).all(), name  # flagged exactly until the first value of the day
        assert (value[~first] == 0).all(), name
    for column, tensor in (("bid", market.bid), ("ask", market.ask)):
        sql = quotes[column].to_numpy().reshape(2, 2, 390).transpose(0, 2, 1)
        np.testing.assert_allclose(tensor.double().numpy(), sql, rtol=1e-6)
    turbulence = rows["turbulence_index"].to_numpy().reshape(2, 2, 390)[:, 0]
    np.testing.assert_allclose(market.turbulence.double().numpy(), np.nan_to_num(turbulence), rtol=1e-5)


def test_the_in_memory_synthetic_market_is_the_warehouse_path(lake: Path) -> None:
    loaded = load_market_tensors(Warehouse(lake), DAYS)
    defaults = SyntheticMarketConfig()
    built = synthetic_market_tensors(len(DAYS), defaults.alpha, defaults.seed, SYMBOLS, start=str(DAYS[0]),
                                     source="market")
    assert built.feature_names == loaded.feature_names and built.trading_days == loaded.trading_days
    for name in ("bid", "ask", "features", "turbulence", "tradable", "quoted"):
        torch.testing.assert_close(getattr(built, name), getattr(loaded, name), rtol=1e-5, atol=1e-6, msg=name)


def test_features_are_chosen_by_catalog_name(lake: Path) -> None:
    config = MarketLoaderConfig(features=("rsi_14", "realized_vol_15m"))
    market = load_market_tensors(Warehouse(lake), [DAYS[1]], symbols=["SPY"], config=config)
    assert market.feature_names == ("rsi_14", "realized_vol_15m", "rsi_14_missing", "realized_vol_15m_missing")
    assert market.symbols == ("SPY",) and market.features.shape == (1, 390, 1, 4)
    with pytest.raises(ValueError, match=r"unknown features.market features \['rsi_99'\].*docs/FEATURES.md"):
        MarketLoaderConfig(features=("rsi_14", "rsi_99"))
    with pytest.raises(ValueError, match=r"no rows for symbols \['IWM'\]"):
        load_market_tensors(Warehouse(lake), DAYS, symbols=["IWM"])
    with pytest.raises(ValueError, match=r"no rows for \['2024-07-10'\]: materialize"):
        load_market_tensors(Warehouse(lake), [*DAYS, date(2024, 7, 10)])


def test_option_chain_and_its_features_come_from_the_option_tables(lake: Path) -> None:
    chain = load_option_chain(Warehouse(lake), DAYS, "SPY", OptionLoaderConfig(expiries=2, strikes=5))
    d, s, e, k = chain.shape
    assert (d, e, k) == (2, 2, 5) and s >= 2 and bool(chain.quoted.all())
    assert chain.feature_names == (*DEFAULT_OPTION_FEATURES, *(f"{n}_missing" for n in DEFAULT_OPTION_FEATURES))
    with duckdb.connect(str(lake), read_only=True) as con:
        atm_iv = con.sql(
            "SELECT atm_iv FROM features.options WHERE underlying = 'SPY' ORDER BY trading_day, ts"
        ).pl()["atm_iv"].to_numpy()
    np.testing.assert_allclose(chain.features[..., 0].double().numpy().ravel(), atm_iv, rtol=1e-6)
    with pytest.raises(ValueError, match="no rows of 'IWM'"):
        load_option_chain(Warehouse(lake), DAYS, "IWM")
    # On-grid chains put on the slots of their own interval load unchanged, features and all.
    slotted = load_option_chain(Warehouse(lake), DAYS, "SPY", OptionLoaderConfig(expiries=2, strikes=5,
                                                                               slot_minutes=60))
    for name in ("bid", "ask", "underlying", "features", "quoted", "expiry_days"):
        assert torch.equal(getattr(slotted, name), getattr(chain, name)), name


def test_a_day_with_nothing_quoted_is_refused_with_the_reason(lake: Path, tmp_path: Path) -> None:
    store = copy_of(lake, tmp_path)
    # As an Alpaca reconstruction stores it: no bid or ask on the second day, marked and explained.
    store.execute("UPDATE raw.option_snapshots SET bid = NULL, ask = NULL, reconstructed = true, "
                  "null_reason = 'bid, ask: Alpaca keeps no historical option quotes' WHERE trading_day = ?",
                  [DAYS[1]])
    with pytest.raises(ValueError, match=rf"no quoted option on \['{DAYS[1].isoformat()}'\].*reconstructed"):
        load_option_chain(store, DAYS, "SPY")
    assert load_option_chain(store, DAYS[:1], "SPY").shape[0] == 1


def _scramble(store: Warehouse, where: str) -> None:
    """Overwrite every loaded column of the rows matching `where` (NaN, nulls, other quotes) and drop some rows."""
    features = ", ".join(f"{n} = CASE WHEN random() < 0.3 THEN NULL ELSE random() * 100 END" for n in DEFAULT_FEATURES)
    store.execute(f"UPDATE features.market SET {features} WHERE {where}")
    store.execute(f"UPDATE features.bars_1m SET bid = bid * 1.5, ask = ask * 1.6 WHERE {where}")
    store.execute(f"UPDATE features.bars_1m SET bid = NULL WHERE {where} AND symbol = 'QQQ'")
    store.execute(f"DELETE FROM features.market WHERE {where} AND symbol = 'SPY' AND minute(ts) % 2 = 0")


def _loaded(store: Warehouse) -> dict[str, torch.Tensor]:
    market = load_market_tensors(store, DAYS, symbols=SYMBOLS)
    return {"features": market.features, "tradable": market.tradable, "quoted": market.quoted,
            "bid": market.bid, "ask": market.ask, "turbulence": market.turbulence}


def test_rows_after_a_minute_change_nothing_at_or_before_it(lake: Path, tmp_path: Path) -> None:
    store = copy_of(lake, tmp_path)
    before = _loaded(store)
    noon = datetime(2024, 7, 9, 16, 0)  # 12:00 New York
    _scramble(store, f"trading_day = DATE '{DAYS[1]}' AND ts > TIMESTAMPTZ '{noon.isoformat()}+00:00'")
    after = _loaded(store)
    t = 149  # the bar ending 12:00 (bar 0 ends 09:31)
    for name, tensor in before.items():
        assert torch.equal(tensor[0], after[name][0]), name
        assert torch.equal(tensor[1, : t + 1], after[name][1, : t + 1]), name
    for name in ("features", "bid", "ask", "turbulence"):  # quotes in force before t stay tradable after it
        assert not torch.equal(before[name][1, t + 1 :], after[name][1, t + 1 :]), f"{name}: the scramble did nothing"


def test_a_later_day_changes_nothing_on_an_earlier_one(lake: Path, tmp_path: Path) -> None:
    store = copy_of(lake, tmp_path)
    before = _loaded(store)
    _scramble(store, f"trading_day = DATE '{DAYS[1]}'")
    after = _loaded(store)
    for name, tensor in before.items():
        assert torch.equal(tensor[0], after[name][0]), name
    assert not torch.equal(before["features"][1], after["features"][1])
    # SPY lost its even minutes on day 2 and QQQ its bids: missing values are filled forward or flagged,
    # and QQQ, never quoted that day, is never tradable and carries no price.
    spy, qqq = SYMBOLS.index("SPY"), SYMBOLS.index("QQQ")
    assert not after["tradable"][1, :, qqq].any()
    assert (after["bid"][1, :, qqq] == UNQUOTED_PRICE).all()
    assert after["tradable"][1, :, spy].all()


def test_a_bar_only_daily_dataset_trades_at_the_close_with_flagged_quotes(tmp_path: Path) -> None:
    store = Warehouse(tmp_path / "warehouse.duckdb")
    days = [date(2024, 7, 1), date(2024, 7, 2), date(2024, 7, 3)]
    raw = pl.DataFrame({
        "symbol": ["IDX"] * 3, "ts": [datetime(d.year, d.month, d.day) for d in days], "interval": ["1d"] * 3,
        "open": [10.0, 11.0, 12.0], "high": [11.0, 12.0, 13.0], "low": [9.0, 10.0, 11.0],
        "close": [10.5, 11.5, 12.5], "volume": [1e6] * 3, "source": ["files"] * 3, "trading_day": days,
    }).with_columns(pl.col("ts").dt.replace_time_zone("UTC").dt.cast_time_unit("us"))
    store.write_partition("raw.bars", days, raw)
    # 2024-07-03 closes early (13:00 New York): the daily bar is stamped at that close.
    closes = [datetime(2024, 7, 1, 20), datetime(2024, 7, 2, 20), datetime(2024, 7, 3, 17)]
    features = pl.DataFrame({
        "symbol": ["IDX"] * 3, "ts": closes, "trading_day": days, "bar_interval": ["1d"] * 3,
        "log_return_1m": [None, 0.09, float("nan")], "turbulence_index": [None, None, 2.5],
    }).with_columns(pl.col("ts").dt.replace_time_zone("UTC").dt.cast_time_unit("us"))
    store.write_partition("features.market", days, features)
    config = MarketLoaderConfig(features=("log_return_1m",), half_spread_bps=5.0)
    market = load_market_tensors(store, days, config=config)
    assert market.session_minutes.tolist() == [1, 1, 1] and market.bid.shape == (3, 1, 1)
    np.testing.assert_allclose(market.mid[:, 0, 0].numpy(), [10.5, 11.5, 12.5], rtol=1e-6)
    np.testing.assert_allclose((market.ask / market.bid)[:, 0, 0].numpy(), (1 + 5e-4) / (1 - 5e-4), rtol=1e-6)
    assert market.tradable.all() and not market.quoted.any()
    # Null and NaN are missing, flagged, 0 (one bar a day: nothing earlier that day to fill from).
    np.testing.assert_allclose(market.features[:, 0, 0].numpy(), [[0.0, 1.0], [0.09, 0.0], [0.0, 1.0]], rtol=1e-6)
    assert market.turbulence[:, 0].tolist() == pytest.approx([0.0, 0.0, 2.5])
