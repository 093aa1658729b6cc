"""The synthetic market: determinism, microstructure invariants, ticks vs bars, and the shape of a day."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from pipeline.contract.calendar import trading_session
from pipeline.contract.schemas import RAW_COLUMNS
from pipeline.sources.base import MarketSource
from pipeline.sources.settings import SourceSettings, build_market_source, synthetic_config_from_env
from pipeline.synthetic.config import symbol_profile
from pipeline.synthetic.paths import clear_caches
from pipeline.synthetic.source import SyntheticMarket, SyntheticMarketConfig

DAY = trading_session(date(2024, 7, 5))


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return SyntheticMarket(SyntheticMarketConfig())


@pytest.fixture(scope="module")
def bars(market: SyntheticMarket) -> pl.DataFrame:
    return market.minute_bars(DAY)


@pytest.fixture(scope="module")
def trades(market: SyntheticMarket) -> pl.DataFrame:
    return market.fetch("trades", DAY, market.config.symbols)


@pytest.fixture(scope="module")
def quotes(market: SyntheticMarket) -> pl.DataFrame:
    return market.fetch("quotes", DAY, market.config.symbols)


def test_is_a_market_source(market: SyntheticMarket) -> None:
    assert isinstance(market, MarketSource)
    assert market.name == "synthetic"
    assert market.fetch("bars", DAY, ["SYMA"]).is_empty()


def test_bars_shape_and_bar_end_timestamps(bars: pl.DataFrame) -> None:
    assert bars.columns == [
        "symbol", "ts", "open", "high", "low", "close", "volume", "vwap", "trade_count", "bid", "ask"
    ]
    assert bars.height == 5 * 390
    syma = bars.filter(pl.col("symbol") == "SYMA")
    assert syma["ts"][0] == DAY.open.replace(minute=31)
    assert syma["ts"][-1] == DAY.close
    assert (bars["high"] >= bars[["open", "close", "low"]].max_horizontal()).all()
    assert (bars["low"] <= bars[["open", "close"]].min_horizontal()).all()
    assert ((bars["vwap"] >= bars["low"]) & (bars["vwap"] <= bars["high"])).all()
    assert (bars["volume"] > 0).all() and (bars["trade_count"] >= 1).all()


def test_same_inputs_give_identical_frames() -> None:
    first = SyntheticMarket(SyntheticMarketConfig(seed=11))
    bars, trades = first.minute_bars(DAY), first.fetch("trades", DAY, ["SYMA"])
    clear_caches()  # regenerate from scratch rather than read the cache
    second = SyntheticMarket(SyntheticMarketConfig(seed=11))
    assert bars.equals(second.minute_bars(DAY))
    assert trades.equals(second.fetch("trades", DAY, ["SYMA"]))
    other_seed = SyntheticMarket(SyntheticMarketConfig(seed=12)).minute_bars(DAY, ["SYMA"])
    assert not other_seed.equals(first.minute_bars(DAY, ["SYMA"]))


def test_a_symbol_does_not_depend_on_the_universe_or_other_days(bars: pl.DataFrame) -> None:
    alone = SyntheticMarket(SyntheticMarketConfig(symbols=("SYMC", "ZZZZ"))).minute_bars(DAY, ["SYMC", "ZZZZ"])
    assert alone.filter(pl.col("symbol") == "SYMC").equals(bars.filter(pl.col("symbol") == "SYMC"))
    clear_caches()
    fresh = SyntheticMarket()
    fresh.minute_bars(trading_session(date(2024, 7, 8)))  # another day first must not shift the streams
    assert fresh.minute_bars(DAY, ["SYMA"]).equals(bars.filter(pl.col("symbol") == "SYMA"))


def test_quotes_bid_below_ask_on_the_tick_grid(bars: pl.DataFrame, quotes: pl.DataFrame) -> None:
    assert (bars["bid"] < bars["ask"]).all()
    assert (quotes["bid"] < quotes["ask"]).all()
    for frame, column in [(bars, "close"), (bars, "high"), (bars, "bid"), (quotes, "ask"), (quotes, "bid")]:
        cents = frame[column].to_numpy() * 100
        assert np.abs(cents - np.round(cents)).max() < 1e-6, column


def test_ticks_conform_to_the_raw_schema_and_stay_in_the_session(
    trades: pl.DataFrame, quotes: pl.DataFrame
) -> None:
    for table, frame in [("trades", trades), ("quotes", quotes)]:
        assert frame.schema == pl.Schema(RAW_COLUMNS[table])
        assert frame["ts"].min() > DAY.open and frame["ts"].max() <= DAY.close
        assert (frame["source"] == "synthetic").all() and (frame["trading_day"] == DAY.trading_day).all()
    assert quotes.select(pl.struct("symbol", "ts").is_unique().all()).item()
    # Two quotes per trade (the one it hits, just before, and the size update, just after), all at distinct times.
    assert quotes.height == 2 * trades.height
    # Expected trades: 390 minutes x each symbol's rate (trades_per_minute times its fixed 0.6-1.4 scale); the
    # intraday profile and the vol factor both have mean 1. The day's shared vol regime moves the intensity by
    # exp(regime / 2), std about 0.125, so +-20% (1.6 std) holds for any seeded day while a lost or doubled
    # minute, symbol or trade stream falls outside. The docs' "about 216k rows" is this day: 3 x ~72k.
    config = SyntheticMarketConfig()
    rates = [symbol_profile(config.seed, s, config.trades_per_minute).trade_rate for s in config.symbols]
    assert all(0.6 * config.trades_per_minute <= r <= 1.4 * config.trades_per_minute for r in rates)
    expected_trades = 390 * sum(rates)
    assert 0.8 * expected_trades <= trades.height <= 1.2 * expected_trades
    assert abs(trades.height + quotes.height - 216_000) <= 0.05 * 216_000
    round_lots = (trades["size"] % 100 == 0).mean()
    assert round_lots > 0.85
    cents = trades["price"].to_numpy() * 100
    assert np.abs(cents - np.round(cents)).max() < 1e-6


def test_trades_execute_at_the_quote_in_force(trades: pl.DataFrame, quotes: pl.DataFrame) -> None:
    joined = trades.sort("symbol", "ts").join_asof(
        quotes.sort("symbol", "ts").select("symbol", "ts", "bid", "ask"), on="ts", by="symbol", strategy="backward",
        check_sortedness=False,
    )
    at_touch = (joined["price"] == joined["bid"]) | (joined["price"] == joined["ask"])
    assert at_touch.all()
    # Order flow follows the price: minutes with more buying than selling tend to go up.
    signed = joined.with_columns(
        (pl.when(pl.col("price") == pl.col("ask")).then(1.0).otherwise(-1.0) * pl.col("size")).alias("flow"),
        ((pl.col("ts") - pl.duration(microseconds=1)).dt.truncate("1m")).alias("minute"),
    )
    per_minute = signed.group_by("symbol", "minute").agg(
        pl.col("flow").sum(), (pl.col("price").last() / pl.col("price").first()).log().alias("move")
    )
    assert np.corrcoef(per_minute["flow"], per_minute["move"])[0, 1] > 0.2


def test_aggregated_ticks_reproduce_the_bars(bars: pl.DataFrame, trades: pl.DataFrame, quotes: pl.DataFrame) -> None:
    bar_end = (pl.col("ts") - pl.duration(microseconds=1)).dt.truncate("1m") + pl.duration(minutes=1)
    agg = (
        trades.sort("symbol", "ts")
        .group_by("symbol", bar_end.alias("ts"), maintain_order=True)
        .agg(
            pl.col("price").first().alias("open"), pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"), pl.col("price").last().alias("close"),
            pl.col("size").sum().alias("volume"), pl.len().cast(pl.Int64).alias("trade_count"),
            ((pl.col("price") * pl.col("size")).sum() / pl.col("size").sum()).alias("vwap"),
        )
    )
    last_quote = quotes.sort("symbol", "ts").group_by("symbol", bar_end.alias("ts"), maintain_order=True).agg(
        pl.col("bid").last(), pl.col("ask").last()
    )
    joined = bars.join(agg, on=["symbol", "ts"], suffix="_ticks").join(last_quote, on=["symbol", "ts"], suffix="_q")
    assert joined.height == bars.height
    for column in ["open", "high", "low", "close", "volume", "trade_count"]:
        assert (joined[column] == joined[f"{column}_ticks"]).all(), column
    assert (joined["bid"] == joined["bid_q"]).all() and (joined["ask"] == joined["ask_q"]).all()
    assert (joined["vwap"] - joined["vwap_ticks"]).abs().max() < 1e-9


def test_activity_is_u_shaped(trades: pl.DataFrame) -> None:
    minute = ((trades["ts"] - DAY.open).dt.total_seconds() // 60).to_numpy()
    first, last = (minute < 30).sum(), (minute >= 360).sum()
    midday = ((minute >= 180) & (minute < 210)).sum()
    assert first > 1.3 * midday and last > 1.2 * midday


def test_symbols_are_positively_correlated(bars: pl.DataFrame) -> None:
    mids = bars.with_columns(((pl.col("bid") + pl.col("ask")) / 2).alias("mid"))
    wide = mids.pivot(on="symbol", index="ts", values="mid").drop("ts").to_numpy()
    corr = np.corrcoef(np.diff(np.log(wide), axis=0).T)
    off_diagonal = corr[~np.eye(len(corr), dtype=bool)]
    assert off_diagonal.min() > 0.1 and off_diagonal.mean() > 0.25


def test_early_close_shortens_the_session() -> None:
    short_day = trading_session(date(2024, 11, 29))
    bars = SyntheticMarket().minute_bars(short_day, ["SYMA"])
    assert bars.height == 210
    assert bars["ts"].max() == short_day.close


def test_config_from_env_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_SYNTHETIC_SEED", "3")
    monkeypatch.setenv("PIPELINE_SYNTHETIC_ALPHA", "0")
    monkeypatch.setenv("PIPELINE_SYNTHETIC_SYMBOLS", "aaa, BBB")
    monkeypatch.setenv("PIPELINE_SYNTHETIC_SNAPSHOT_MINUTES", "30")
    config = synthetic_config_from_env()
    assert (config.seed, config.alpha, config.symbols, config.snapshot_minutes) == (3, 0.0, ("AAA", "BBB"), 30)
    monkeypatch.setenv("PIPELINE_SYNTHETIC_ALPHA", "lots")
    with pytest.raises(ValueError, match="PIPELINE_SYNTHETIC_ALPHA"):
        synthetic_config_from_env()


def test_bad_alpha_is_rejected_with_the_limit() -> None:
    assert hash(SyntheticMarketConfig(symbols=["SYMA"])) == hash(SyntheticMarketConfig(symbols=("SYMA",)))
    with pytest.raises(ValueError, match="alpha=0.5 is outside"):
        SyntheticMarketConfig(alpha=0.5)


def test_symbol_selection(market: SyntheticMarket) -> None:
    assert market.minute_bars(DAY, []).is_empty() and market.fetch("trades", DAY, []).is_empty()
    assert market.minute_bars(DAY, None)["symbol"].unique().sort().to_list() == list(market.config.symbols)
    with pytest.raises(TypeError, match="wrap it in a list"):
        market.minute_bars(DAY, "SYMA")


def test_source_settings_read_the_environment_once_and_build_each_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    env = {"PIPELINE_SOURCE": "Files", "PIPELINE_SYMBOLS": "spy,qqq", "PIPELINE_SYNTHETIC_SEED": "5",
           "ALPACA_API_KEY": "key-id", "ALPACA_SECRET_KEY": "s3cret"}
    settings = SourceSettings.from_env(env)
    assert (settings.source, settings.universe(), settings.synthetic.seed) == ("files", [], 5)
    assert settings.alpaca_secret_key is None, "credentials are read only when their source is chosen"
    assert build_market_source(settings, tmp_path).name == "files"
    assert settings.landing_path(tmp_path) == tmp_path / "landing"
    alpaca = SourceSettings.from_env(env, source="alpaca")
    assert alpaca.universe() == ["SPY", "QQQ"]
    assert "s3cret" not in repr(alpaca)
    synthetic = SourceSettings.from_env(env, source="synthetic", symbols=("IWM",), synthetic_alpha=0.0)
    source = build_market_source(synthetic, tmp_path)
    assert isinstance(source, SyntheticMarket)
    assert (source.config.seed, source.config.alpha, synthetic.universe()) == (5, 0.0, ["IWM"])
    with pytest.raises(ValueError, match="PIPELINE_SOURCE"):
        SourceSettings.from_env({"PIPELINE_SOURCE": "bloomberg"})
