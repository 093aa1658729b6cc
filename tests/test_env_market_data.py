"""MarketTensors: the features of arrays equal to pipeline.features' market_features of each day on its own, building
from arrays and polars frames (hand-made and the embedded synthetic market), external features, daily bars, and the
errors a user can cause."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
import torch

from pipeline.contract.calendar import TradingSession, trading_session
from pipeline.envs import tensors
from pipeline.envs.bar_features import bar_features
from pipeline.envs.frames import frames_to_arrays, impute_quotes
from pipeline.envs.intraday import HOLD, LONG, SHORT, IntradayConfig, IntradayTradingEnv
from pipeline.envs.tensors import (
    DEFAULT_FEATURES,
    UNQUOTED_PRICE,
    MarketTensors,
    random_walk_arrays,
    synthetic_market_tensors,
)
from pipeline.features import catalog, market_features
from pipeline.synthetic.arrays import SIGNAL_MINUTES


def _day_bars(arrays: dict[str, np.ndarray], day: int, session: TradingSession, symbols: list[str]) -> pl.DataFrame:
    """One day of the synthetic arrays as features.bars_1m rows (close = mid: the arrays have no trades)."""
    mid = (arrays["bid"][day] + arrays["ask"][day]) / 2
    minutes = mid.shape[0]
    ts = [session.open + timedelta(minutes=i + 1) for i in range(minutes)]
    columns = {"close": mid, "high": arrays["high"][day], "low": arrays["low"][day], "volume": arrays["volume"][day],
               "spread_mean_bps": 1e4 * (arrays["ask"][day] - arrays["bid"][day]) / mid}
    return pl.DataFrame({
        "symbol": np.repeat(symbols, minutes), "ts": ts * len(symbols), "trading_day": [session.trading_day] * mid.size,
        **{c: v.T.ravel() for c, v in columns.items()},
    }).with_columns(open=pl.col("close").shift(1).over("symbol").fill_null(pl.col("close")), vwap=pl.col("close"),
                    trade_count=pl.lit(1, dtype=pl.Int64), quote_count=pl.lit(1, dtype=pl.Int64))


@pytest.mark.parametrize("day", [date(2024, 7, 1), date(2024, 7, 3)])  # a full session and an early close
def test_array_features_are_market_features_of_each_day_without_history(day: date) -> None:
    session = trading_session(day)
    symbols = ["A", "B", "C"]
    arrays = random_walk_arrays(days=2, minutes=session.minutes, n_symbols=3, alpha=0.1, seed=4)
    columns = bar_features((arrays["bid"] + arrays["ask"]) / 2, **arrays)
    for d in range(2):  # the second day's windows start at its own open, not in the first day
        rows = market_features(_day_bars(arrays, d, session, symbols), session).sort("symbol", "ts")
        for name in DEFAULT_FEATURES:
            expected = rows[name].cast(pl.Float64).fill_null(np.nan).to_numpy().reshape(3, -1).T
            got = columns[name][d]
            assert (np.isnan(got) == np.isnan(expected)).all(), name
            assert np.isfinite(expected).sum() > session.minutes, name  # most of the day is defined
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("name", ["log_return_1d", "turbulence_index_daily", "close"])
def test_array_features_refuse_what_a_day_alone_cannot_give(name: str) -> None:
    arrays = random_walk_arrays(days=1, minutes=30, n_symbols=2, alpha=0.1, seed=0)
    with pytest.raises(ValueError, match="other than the turbulence and daily ones"):
        bar_features((arrays["bid"] + arrays["ask"]) / 2, **arrays, names=(name,))


def test_from_arrays_computes_the_default_catalog_features_with_flags() -> None:
    mid = np.array([100.0, 101.0, 99.0, 102.0, 103.0, 104.0, 100.0])
    market = MarketTensors.from_arrays((mid - 0.05)[None, :, None], (mid + 0.05)[None, :, None])
    assert market.feature_names == (*DEFAULT_FEATURES, *(f"{n}_missing" for n in DEFAULT_FEATURES))
    feats = {n: market.features[0, :, 0, i].double().numpy() for i, n in enumerate(market.feature_names)}
    np.testing.assert_allclose(feats["log_return_1m"][1:], np.diff(np.log(mid)), rtol=1e-5)
    np.testing.assert_allclose(feats["log_return_5m"][5:], np.log(mid[5:] / mid[:-5]), rtol=1e-5)
    assert feats["log_return_5m_missing"].tolist() == [1.0] * 5 + [0.0] * 2
    assert feats["log_return_5m"][:5].tolist() == [0.0] * 5
    np.testing.assert_allclose(feats["relative_spread_bps"], 0.1 / mid * 1e4, rtol=1e-4)
    # No high/low or volume given: those features are missing throughout, not a made-up 0 the agent would trust.
    assert feats["bar_range_bps_missing"].tolist() == [1.0] * 7 == feats["volume_zscore_30m_missing"].tolist()
    assert market.tradable.all() and market.quoted.all()


def test_a_daily_bar_dataset_has_one_bar_a_day() -> None:
    close = np.array([[[10.0]], [[10.5]], [[10.2]]])
    market = MarketTensors.from_arrays(close * 0.999, close * 1.001)
    assert market.session_minutes.tolist() == [1, 1, 1] and market.num_minutes == 1
    assert torch.isfinite(market.features).all()


def bars_frame() -> pl.DataFrame:
    """Two symbols on one New York day, naive UTC ts, no quotes; B misses its second bar."""
    open_ts = datetime(2024, 7, 1, 13, 31)
    rows = [("A", open_ts + timedelta(minutes=i), 10.0 + i) for i in range(4)]
    rows += [("B", open_ts + timedelta(minutes=i), 20.0 + i) for i in (0, 2, 3)]
    frame = pl.DataFrame(rows, schema=["symbol", "ts", "close"], orient="row")
    return frame.with_columns(volume=pl.lit(100.0), high=pl.col("close") + 0.1, low=pl.col("close") - 0.1)


def test_from_frames_pivots_forward_fills_and_spreads_the_close() -> None:
    market = MarketTensors.from_frames(bars_frame(), half_spread_bps=5.0)
    assert market.symbols == ("A", "B") and market.trading_days == ("2024-07-01",)
    assert market.bid.shape == (1, 4, 2) and market.session_minutes.tolist() == [4]
    # B has no bar at minute 1: a price imputed from minute 0's close would be one the agent saw, so no trading.
    np.testing.assert_allclose(market.mid[0, :, 1].numpy(), [20.0, UNQUOTED_PRICE, 22.0, 23.0], rtol=1e-6)
    np.testing.assert_allclose((market.ask - market.bid)[0, 0].numpy(), [10.0e-3, 20.0e-3], rtol=1e-4)
    assert market.tradable[0, :, 1].tolist() == [True, False, True, True] and market.tradable[0, :, 0].all()
    assert not market.quoted.any()  # quotes imputed from the close are flagged


def test_risk_off_reads_the_chosen_turbulence_column() -> None:
    bars = bars_frame()
    features = bars.select("symbol", pl.col("ts").dt.replace_time_zone("UTC"), momentum=pl.col("close"),
                           turbulence_index=pl.lit(None, pl.Float64), turbulence_index_daily=pl.lit(5.0))
    prices = impute_quotes(bars.with_columns(pl.col("ts").dt.replace_time_zone("UTC"),
                                             trading_day=pl.col("ts").dt.date()))
    daily = frames_to_arrays(prices, features, ["momentum"], turbulence_column="turbulence_index_daily")
    assert np.all(daily["turbulence"] == 5.0)
    minute = frames_to_arrays(prices, features, ["momentum"])
    assert np.all(minute["turbulence"] == 0.0)  # the minute index is null here: no risk-off trigger


def test_from_frames_takes_external_features_and_their_turbulence() -> None:
    bars = bars_frame()
    features = bars.select(
        "symbol",
        pl.col("ts").dt.replace_time_zone("UTC"),
        momentum=pl.col("close") * 2,
        turbulence_index=pl.lit(7.0),
    ).filter(pl.col("symbol") == "A")
    market = MarketTensors.from_frames(bars, features)
    assert market.feature_names == ("momentum", "turbulence_index", "momentum_missing", "turbulence_index_missing")
    np.testing.assert_allclose(market.features[0, :, 0, 0].numpy(), [20.0, 22.0, 24.0, 26.0])
    # B has no feature rows: zeros flagged missing, not NaN and not A's values.
    assert market.features[0, :, 1].tolist() == [[0.0, 0.0, 1.0, 1.0]] * 4
    assert torch.equal(market.turbulence, torch.full((1, 4), 7.0))  # one index per minute, whoever carries it


def test_from_frames_on_the_embedded_synthetic_market() -> None:
    market = synthetic_market_tensors(days=3, seed=1, symbols=("AAA", "BBB"), source="market")
    # 2024-07-03 closes early at 13:00 New York.
    assert market.trading_days == ("2024-07-01", "2024-07-02", "2024-07-03")
    assert market.session_minutes.tolist() == [390, 390, 210]
    assert (market.ask > market.bid).all() and torch.isfinite(market.features).all()
    assert market.feature_names[: len(DEFAULT_FEATURES)] == DEFAULT_FEATURES and market.tradable.all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bid": np.ones((4, 2)), "ask": np.ones((4, 2))}, r"\[days, minutes, symbols\]"),
        ({"bid": np.full((1, 4, 1), 2.0), "ask": np.ones((1, 4, 1))}, "bid <= ask"),
        ({"bid": np.full((1, 4, 1), np.nan), "ask": np.ones((1, 4, 1))}, "forward-fill"),
        ({"bid": np.ones((1, 4, 1)), "ask": np.ones((1, 4, 1)), "features": np.full((1, 4, 1, 1), np.nan)},
         "missing flag"),
        ({"bid": np.ones((1, 4, 1)), "ask": np.ones((1, 4, 1)), "tradable": np.ones((4, 1))}, "tradable must be"),
        ({"bid": np.ones((1, 4, 1)), "ask": np.ones((1, 4, 1)), "session_minutes": [9]}, "session_minutes"),
    ],
)
def test_bad_arrays_say_what_to_fix(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MarketTensors.from_arrays(**kwargs)


def test_bars_frame_without_close_says_which_columns_it_needs() -> None:
    with pytest.raises(ValueError, match="needs bid and ask, or close"):
        MarketTensors.from_frames(bars_frame().drop("close"))


def test_subset_keeps_the_features_computed_on_the_full_market() -> None:
    market = synthetic_market_tensors(days=3, symbols=("A", "B", "C"), minutes=30)
    part = market.subset(days=[2], symbols=[1])
    assert part.symbols == ("B",) and part.trading_days == (market.trading_days[2],)
    assert torch.equal(part.features[0, :, 0], market.features[2, :, 1])
    assert torch.equal(part.turbulence[0], market.turbulence[2])
    assert torch.equal(part.tradable[0, :, 0], market.tradable[2, :, 1])
    assert part.to("cpu").quoted.shape == (1, 30, 1)


def _momentum_episode_pnl(alpha: float, seed: int) -> np.ndarray:
    """Episode PnL (net of spread, fees, slippage) of holding sign(log mid(t) - log mid(t-k)) from bar t+1."""
    market = synthetic_market_tensors(days=8, alpha=alpha, seed=seed, symbols=("A", "B", "C", "D"))
    k = SIGNAL_MINUTES
    log_mid = market.mid.double().log()
    signal = torch.zeros_like(log_mid)
    signal[:, k:] = log_mid[:, k:] - log_mid[:, :-k]
    env = IntradayTradingEnv(market, num_envs=64, config=IntradayConfig(loss_cut=None, profit_lock=None))
    env.reset(seed=seed)
    finished = []
    for _ in range(market.num_minutes - 1):  # one whole session per env: the last step truncates every env
        s = signal[env.day, env.minute, env.symbol]
        action = torch.where(s > 0, LONG, torch.where(s < 0, SHORT, HOLD))
        _, _, terminated, truncated, info = env.step(action)
        finished.append(info["pnl"][terminated | truncated])
    return torch.cat(finished).numpy()


def test_momentum_rule_earns_after_costs_with_alpha_and_loses_without() -> None:
    planted = _momentum_episode_pnl(alpha=0.15, seed=0)
    martingale = _momentum_episode_pnl(alpha=0.0, seed=0)
    assert len(planted) == len(martingale) == 64
    stderr = planted.std() / np.sqrt(len(planted))
    assert planted.mean() > 2 * stderr, (planted.mean(), stderr)
    assert martingale.mean() < 0, martingale.mean()


def test_numpy_market_plants_the_documented_signal_and_spread() -> None:
    arrays = random_walk_arrays(days=40, minutes=390, n_symbols=3, alpha=0.15, seed=2)
    bid, ask = arrays["bid"], arrays["ask"]
    ticks = (ask - bid) / 0.01
    assert np.all(bid > 0) and np.all(ticks >= 1 - 1e-9)
    np.testing.assert_allclose(ticks, np.rint(ticks), atol=1e-6)
    log_mid = np.log((bid + ask) / 2)
    k = SIGNAL_MINUTES
    signal = (log_mid[:, k:-1] - log_mid[:, :-k - 1]).ravel()
    nxt = np.diff(log_mid, axis=1)[:, k:].ravel()
    slope = signal @ nxt / (signal @ signal)
    # The quoted mid is the true mid rounded to half a tick, so the slope is near, not at, a = alpha/sqrt(k).
    assert 0.6 * 0.15 / np.sqrt(k) < slope < 1.4 * 0.15 / np.sqrt(k), slope
    flat = random_walk_arrays(days=40, minutes=390, n_symbols=3, alpha=0.0, seed=2)
    log_mid = np.log((flat["bid"] + flat["ask"]) / 2)
    signal = (log_mid[:, k:-1] - log_mid[:, :-k - 1]).ravel()
    nxt = np.diff(log_mid, axis=1)[:, k:].ravel()
    # Tick rounding makes the quoted mid bounce (negative lag-1 autocorrelation), never a positive edge.
    assert np.corrcoef(signal, nxt)[0, 1] < 4 / np.sqrt(len(nxt))


def test_alpha_beyond_the_stationary_range_says_how_to_fix() -> None:
    with pytest.raises(ValueError, match="lower alpha"):
        random_walk_arrays(days=1, minutes=30, n_symbols=1, alpha=0.5, seed=0)


def test_tensors_keep_the_public_names() -> None:
    assert {"MarketTensors", "random_walk_arrays", "synthetic_market_tensors", "DEFAULT_FEATURES"} <= set(
        tensors.__all__
    )
    market = synthetic_market_tensors(days=1, minutes=30)
    assert (market.bid.shape[1], market.feature_names[0]) == (30, "log_return_1m")


def test_the_env_default_columns_are_the_catalogs() -> None:
    # polars is a core dependency: the envs read the catalog's tuple and compute it with pipeline.features.
    assert tensors.DEFAULT_FEATURES is catalog.DEFAULT_FEATURES
    assert synthetic_market_tensors(days=1, minutes=30).feature_names[: len(DEFAULT_FEATURES)] == DEFAULT_FEATURES
