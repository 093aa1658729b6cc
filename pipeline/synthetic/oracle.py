"""The oracle of the synthetic market: the best policy given the planted momentum, and its expected Sharpe.

The market plants E[r(t+1) | past] = a * (log mid(t) - log mid(t-k)) with a = alpha / sqrt(k), so the oracle
holds position sign(log mid(t) / mid(t-k)) from bar t's end to bar t+1's end (flat for the first k bars of a day,
flat after the last bar, unchanged while the signal is exactly 0). `oracle_sharpe(config)` derives its per-minute mean and Sharpe, gross and net of
crossing the spread, from the model's parameters; `oracle_returns(bars, config)` measures it on generated bars.
The derivation is in docs/SYNTHETIC_MARKET.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from pipeline.contract.calendar import REGULAR_SESSION_MINUTES
from pipeline.synthetic.config import (
    MINUTES_PER_YEAR,
    TICK,
    SyntheticMarketConfig,
    stream,
    symbol_profile,
)
from pipeline.synthetic.paths import vol_profile

_IMPULSE_TERMS = 4000


def momentum_moments(config: SyntheticMarketConfig) -> tuple[float, float]:
    """(R, rho): Var(m)/sigma^2 of the expected return m(t), and corr(m(t), m(t-1)), for constant sigma.

    r(t) = a * sum_{i=1..k} r(t-i) + e(t) is an AR(k); its autocovariances come from the impulse response.
    """
    a, k = config.ar_coefficient, config.signal_minutes
    if a == 0.0:
        return 0.0, 1.0
    psi = np.zeros(_IMPULSE_TERMS)
    psi[0] = 1.0
    window = 1.0
    for j in range(1, _IMPULSE_TERMS):
        psi[j] = a * window
        window += psi[j] - (psi[j - k] if j >= k else 0.0)
    gamma = np.array([psi[: _IMPULSE_TERMS - h] @ psi[h:] for h in range(k + 1)])
    lags = np.arange(k)
    var_m = a * a * gamma[np.abs(lags[:, None] - lags[None, :])].sum()
    cov_m = a * a * gamma[np.abs(lags[:, None] - lags[None, :] - 1)].sum()
    return float(var_m), float(cov_m / var_m)


@dataclass(frozen=True)
class OracleSharpe:
    """Expected oracle performance per symbol-minute (returns are simple returns of a 1-unit position)."""

    mean_gross: float
    mean_cost: float
    std: float
    flip_rate: float
    per_symbol: dict[str, tuple[float, float]]  # symbol -> (per-minute Sharpe gross, net)

    @property
    def sharpe_gross(self) -> float:
        """Per-minute Sharpe before costs, averaged over the symbols."""
        return float(np.mean([g for g, _ in self.per_symbol.values()]))

    @property
    def sharpe_net(self) -> float:
        """Per-minute Sharpe after crossing the spread, averaged over the symbols."""
        return float(np.mean([n for _, n in self.per_symbol.values()]))

    @property
    def annualized_gross(self) -> float:
        return self.sharpe_gross * math.sqrt(MINUTES_PER_YEAR)

    @property
    def annualized_net(self) -> float:
        return self.sharpe_net * math.sqrt(MINUTES_PER_YEAR)


def oracle_sharpe(config: SyntheticMarketConfig, symbols: tuple[str, ...] | None = None) -> OracleSharpe:
    """The oracle's expected per-minute edge, cost and Sharpe on a regular session, from the model's parameters.

    Given sigma, m(t) ~ N(0, R c^2 sigma^2) (c^2 = 1 + jump variance), so E[pnl] = sqrt(2R/pi) c E[sigma] and
    E[pnl^2] = (1 + R) c^2 E[sigma^2]; sigma's moments come from the intraday profile, the day regime and the
    log-vol process. The cost is one spread per sign flip (P = arccos(rho)/pi) plus one per day to enter/exit.
    """
    symbols = symbols or config.symbols
    k = config.signal_minutes
    r_ratio, rho = momentum_moments(config)
    flip_rate = math.acos(max(-1.0, min(1.0, rho))) / math.pi if r_ratio > 0 else 0.0
    jump_var = 1.0 + config.jump_probability * config.jump_scale**2
    traded = vol_profile(REGULAR_SESSION_MINUTES)[k + 1 : REGULAR_SESSION_MINUTES - 1]
    persistence = 1.0 - config.ar_coefficient * k
    s_d, s_h = config.vol_regime_dispersion, config.vol_of_vol
    rng = stream(config.seed, "oracle-spread-sample")
    samples = 20_000
    # Draws of sigma/annual_vol from its model distribution, for the expected spread (which is rounded to ticks).
    sigma_draws = (
        persistence / math.sqrt(MINUTES_PER_YEAR) * rng.choice(traded, samples)
        * np.exp(s_d * rng.standard_normal(samples) - s_d**2 / 2)
        * np.exp(s_h * rng.standard_normal(samples) - s_h**2 / 2)
    )
    per_symbol: dict[str, tuple[float, float]] = {}
    means, costs, stds = [], [], []
    for symbol in symbols:
        profile = symbol_profile(config.seed, symbol, config.trades_per_minute)
        scale = profile.annual_vol * persistence / math.sqrt(MINUTES_PER_YEAR)
        e_sigma = scale * float(np.mean(traded))
        e_sigma2 = scale**2 * float(np.mean(traded**2)) * math.exp(s_d**2) * math.exp(s_h**2)
        mean = math.sqrt(2 * r_ratio / math.pi) * math.sqrt(jump_var) * e_sigma
        std = math.sqrt((1 + r_ratio) * jump_var * e_sigma2 - mean**2)
        price = profile.base_price
        ticks = np.maximum(1, np.rint(2 * config.spread_vol_ratio * profile.annual_vol * sigma_draws * price / TICK))
        rel_spread = float(np.mean(ticks * TICK / price))
        cost = rel_spread * (flip_rate + 1.0 / len(traded)) if r_ratio > 0 else 0.0
        per_symbol[symbol] = (mean / std, (mean - cost) / std)
        means.append(mean)
        costs.append(cost)
        stds.append(std)
    return OracleSharpe(
        mean_gross=float(np.mean(means)), mean_cost=float(np.mean(costs)), std=float(np.mean(stds)),
        flip_rate=flip_rate, per_symbol=per_symbol,
    )


def oracle_positions(bars: pl.DataFrame, config: SyntheticMarketConfig | None = None) -> pl.DataFrame:
    """Bars plus `mid`, `momentum_signal` (log mid(t) / mid(t-k)), `expected_return` (the planted E[next log
    return] = a * momentum_signal) and `oracle_position` in {-1, 0, 1}.

    Works on `SyntheticMarket.minute_bars` output (one or several days); the position at bar t is held to t+1.
    `config` must be the one that generated the bars (default: SyntheticMarketConfig()).
    """
    config = config or SyntheticMarketConfig()
    k = config.signal_minutes
    day = pl.col("ts").dt.date()
    mid = (pl.col("bid") + pl.col("ask")) / 2
    trailing = (pl.col("mid").log() - pl.col("mid").log().shift(k)).over("symbol", day)
    last_bar = pl.col("ts") == pl.col("ts").max().over("symbol", day)
    return (
        bars.sort("symbol", "ts")
        .with_columns(mid.alias("mid"))
        .with_columns(trailing.alias("momentum_signal"))
        .with_columns((config.ar_coefficient * pl.col("momentum_signal")).alias("expected_return"))
        # A signal of exactly 0 (unchanged mid on the tick grid) keeps the previous position: no cost, no view.
        .with_columns(
            pl.when(pl.col("expected_return") != 0).then(pl.col("expected_return").sign())
            .forward_fill().over("symbol", day).alias("oracle_position")
        )
        .with_columns(
            pl.when(last_bar).then(0).otherwise(pl.col("oracle_position")).fill_null(0).cast(pl.Int8)
            .alias("oracle_position")
        )
    )


def oracle_returns(bars: pl.DataFrame, config: SyntheticMarketConfig | None = None) -> pl.DataFrame:
    """Per symbol-minute: the oracle's gross return, its cost (half-spread per unit traded) and the net return."""
    day = pl.col("ts").dt.date()
    held = pl.col("oracle_position").shift(1).over("symbol", day).fill_null(0)
    traded = (pl.col("oracle_position") - held).abs()
    return (
        oracle_positions(bars, config)
        .with_columns(
            (held * (pl.col("mid") / pl.col("mid").shift(1).over("symbol", day) - 1)).fill_null(0.0).alias("gross"),
            (traded * (pl.col("ask") - pl.col("bid")) / 2 / pl.col("mid")).alias("cost"),
        )
        .with_columns((pl.col("gross") - pl.col("cost")).alias("net"))
    )
