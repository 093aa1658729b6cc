"""The planted alpha: the oracle's measured Sharpe matches the documented one; alpha=0 is a martingale."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.contract.calendar import trading_days, trading_session
from pipeline.synthetic.oracle import momentum_moments, oracle_returns, oracle_sharpe
from pipeline.synthetic.source import SyntheticMarket, SyntheticMarketConfig

DAYS = [trading_session(d) for d in trading_days("2024-03-04", "2024-03-13")]  # 8 sessions


def _bars(config: SyntheticMarketConfig) -> pl.DataFrame:
    market = SyntheticMarket(config)
    return pl.concat([market.minute_bars(day) for day in DAYS])


def _measured(returns: pl.DataFrame) -> pl.DataFrame:
    """Per-symbol per-minute Sharpe over the minutes in which the oracle held a position."""
    held = returns.filter(pl.col("gross") != 0)
    return held.group_by("symbol").agg(
        (pl.col("gross").mean() / pl.col("gross").std()).alias("gross"),
        (pl.col("net").mean() / pl.col("net").std()).alias("net"),
    )


def test_default_alpha_oracle_sharpe_matches_the_documented_value() -> None:
    config = SyntheticMarketConfig()
    expected = oracle_sharpe(config)
    measured = _measured(oracle_returns(_bars(config), config))
    assert measured["gross"].mean() == pytest.approx(expected.sharpe_gross, abs=0.035)
    assert measured["net"].mean() == pytest.approx(expected.sharpe_net, abs=0.035)
    # The documented numbers: a strong, positive edge that survives the spread.
    assert 0.12 < expected.sharpe_gross < 0.17 and expected.sharpe_net > 0.08
    assert expected.annualized_net > 20
    assert (measured["net"] > 0.05).all()


def test_zero_alpha_is_a_martingale_for_the_signal() -> None:
    config = SyntheticMarketConfig(alpha=0.0)
    assert oracle_sharpe(config).sharpe_gross == 0.0 and momentum_moments(config) == (0.0, 1.0)
    returns = oracle_returns(_bars(config), config)
    assert (returns["oracle_position"] == 0).all()
    nxt = pl.col("mid").log().shift(-1).over("symbol", pl.col("ts").dt.date()) - pl.col("mid").log()
    pairs = returns.with_columns(nxt.alias("next")).drop_nulls(["momentum_signal", "next"])
    corr = np.corrcoef(pairs["momentum_signal"], pairs["next"])[0, 1]
    assert abs(corr) < 4 / np.sqrt(pairs.height)


def test_default_alpha_signal_predicts_the_next_return() -> None:
    config = SyntheticMarketConfig()
    returns = oracle_returns(_bars(config), config)
    nxt = pl.col("mid").log().shift(-1).over("symbol", pl.col("ts").dt.date()) - pl.col("mid").log()
    pairs = returns.with_columns(nxt.alias("next")).drop_nulls(["momentum_signal", "next"])
    slope = np.polyfit(pairs["momentum_signal"], pairs["next"], 1)[0]
    assert slope == pytest.approx(config.ar_coefficient, rel=0.35)
