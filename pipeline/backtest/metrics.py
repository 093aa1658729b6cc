"""Performance metrics of backtest returns (`evaluation.backtest_returns` rows), computed from daily net
returns, with stationary-bootstrap intervals over trading days.

A trading day is the unit of everything here. Per-bar returns of an intraday strategy are autocorrelated, so a
Sharpe ratio annualized from bars (by sqrt(bars x 252)) overstates it; every figure below is computed on days.

Daily series (`daily_frame`, the one owner of "a strategy's daily net return"):

- Each (strategy, model_id, trading_day): day return = prod(1 + ret) - 1 over its bars (`ret` is the bar's
  net return on the equity at the bar's start, so a day compounds); day turnover = the sum over its bars, in
  ts order, of |position(t) - position(t-1)|, the day starting flat; day cost = the sum of the bars' costs.
- A strategy's day: the mean of those three numbers over the model_ids present that day (ensemble members or
  seeds; a null model_id is one member), i.e. the equal-weight book of its members.

Metrics of a strategy's n daily returns r (NULL where stated, each NULL with its reason in `note`):

- total_return: prod(1 + r) - 1.
- annualized_return: (1 + total_return) ** (252 / n) - 1, -1 once the equity is gone. NULL when
  n < MIN_ANNUALIZED_DAYS: a few days extrapolated to a year give absurd numbers.
- annualized_volatility: std(r, ddof=1) x sqrt(252). NULL when n < 2.
- sharpe: mean(r) / std(r, ddof=1) x sqrt(252), risk-free 0 (= `empyrical.sharpe_ratio`). NULL when n < 2
  or every day returned the same (std 0).
- sortino: mean(r) x 252 / (sqrt(mean(min(r, 0)^2)) x sqrt(252)) (= `empyrical.sortino_ratio`). NULL when
  n < 2 or no day lost (the downside deviation is 0).
- max_drawdown: the largest fall of the daily compounded equity curve (starting at 1) below its running peak,
  as a positive fraction (= -`empyrical.max_drawdown`).
- calmar: annualized_return / max_drawdown. NULL when annualized_return is NULL or max_drawdown is 0.
- win_rate: the share of days with r > 0.
- profit_factor: the sum of the positive r / |the sum of the negative r|. NULL when no day lost.
- turnover, costs_paid: the sums of the daily turnovers and costs (fractions of capital).

No other non-finite value is produced; `compute_metrics` gives NaN where `metrics_table` gives NULL.

Intervals: the days of a strategy's daily series are resampled with `arch.bootstrap.StationaryBootstrap`
(Politis-Romano: blocks of random length, so neighbouring days that depend on each other stay together), its
mean block length estimated from the daily returns by `block_length` (Politis-White). A resample keeps each
day's return, turnover and cost together; members were averaged into the day before, so an ensemble resamples
time, never just members. Every metric is computed on each of `n_boot` resamples, and the interval is the
`level` percentile interval of the resamples where the metric is defined. NULL with fewer than
MIN_INTERVAL_DAYS days, or where the point value is NULL. The same seed gives the same intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl
from arch.bootstrap import StationaryBootstrap, optimal_block_length

from pipeline.contract.calendar import TRADING_DAYS_PER_YEAR

METRICS = ("total_return", "annualized_return", "annualized_volatility", "sharpe", "sortino", "max_drawdown",
           "calmar", "win_rate", "profit_factor", "turnover", "costs_paid")
MIN_ANNUALIZED_DAYS = 20
"""Fewer trading days give no annualized return (nor calmar): a demo model card annualized 2 days into
+2,784%."""
MIN_INTERVAL_DAYS = 10
"""Fewer trading days give no bootstrap interval: a handful of days has too few distinct resamples."""
MIN_SHARE_DAYS = 15
"""Fewer held-out days give no share of the oracle: a ratio of two noisy means needs more days than either."""
METRICS_SCHEMA = {"trading_day": pl.Date, "window": pl.Utf8, "strategy": pl.Utf8, "metric": pl.Utf8,
                  "value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "note": pl.Utf8}
DAILY_SCHEMA = {"strategy": pl.Utf8, "trading_day": pl.Date, "ret": pl.Float64, "turnover": pl.Float64,
                "cost": pl.Float64}
_ANNUALIZED = ("annualized_volatility", "sharpe", "sortino")
"""Figures scaled by sqrt(252): given from 2 days (as empyrical gives them), flagged below MIN_INTERVAL_DAYS."""
# arch's estimator reads autocorrelations up to lag ceil(sqrt(n)) + 5; shorter series have no pairs there.
_MIN_BLOCK_ESTIMATE_DAYS = 11


@dataclass(frozen=True)
class Interval:
    """The mean of a daily series and its stationary-bootstrap percentile interval."""

    mean: float
    ci_low: float
    """NaN below MIN_INTERVAL_DAYS days (as is ci_high)."""
    ci_high: float
    days: int
    """The length of the series."""
    block_length: int
    """The mean block length (days) of the stationary bootstrap, from `block_length`."""


def daily_frame(returns: pl.DataFrame) -> pl.DataFrame:
    """Each strategy's daily net return, turnover and cost (see the module docstring), sorted by strategy and
    trading_day; columns per `DAILY_SCHEMA`."""
    if returns.is_empty():
        raise ValueError("no backtest rows to compute metrics from; run the backtest first")
    per_member = (
        returns.sort("strategy", "model_id", "trading_day", "ts", nulls_last=True)
        .group_by("strategy", "model_id", "trading_day", maintain_order=True)
        .agg(
            ret=(1.0 + pl.col("ret")).product() - 1.0,
            turnover=(pl.col("position") - pl.col("position").shift(1, fill_value=0.0)).abs().sum(),
            cost=pl.col("cost").sum(),
        )
    )
    daily = per_member.group_by("strategy", "trading_day").agg(pl.col("ret", "turnover", "cost").mean())
    return daily.sort("strategy", "trading_day").select(list(DAILY_SCHEMA)).cast(DAILY_SCHEMA)


def block_length(series: np.ndarray) -> int:
    """Mean block length (days) for a stationary bootstrap of `series`: arch's Politis-White estimate, rounded
    up and clipped to [1, n].

    Daily returns may depend on their neighbours (regimes, positions carried overnight); resampling single
    days would break that and understate the spread, so blocks keep runs of days together, as long as the
    data's own autocorrelation says rather than a fixed guess. A constant series, or one shorter than arch's
    estimator can read (11 days), gets 1: no dependence to estimate, so the days count as independent.
    """
    values = np.asarray(series, dtype=np.float64)
    if values.size < _MIN_BLOCK_ESTIMATE_DAYS or np.ptp(values) == 0:
        return 1
    estimate = float(optimal_block_length(values)["stationary"].iloc[0])
    return int(np.clip(math.ceil(estimate), 1, values.size)) if math.isfinite(estimate) else 1


def _resampled_days(series: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] day indices drawn by arch's stationary bootstrap of `series` (block length from it)."""
    bootstrap = StationaryBootstrap(block_length(series), np.arange(series.size),
                                    seed=np.random.default_rng(seed))
    return np.stack([days for (days,), _ in bootstrap.bootstrap(n_boot)])


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def _check_bootstrap(n_boot: int, level: float) -> None:
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError(f"need 0 < level < 1 and n_boot >= 1; got level={level}, n_boot={n_boot}")


def mean_interval(values: np.ndarray, *, n_boot: int, level: float, seed: int) -> Interval:
    """The mean of a daily series (e.g. the paired daily differences candidate - baseline) and the `level`
    percentile interval of its mean over `n_boot` stationary-bootstrap resamples of the days."""
    _check_bootstrap(n_boot, level)
    series = np.asarray(values, dtype=np.float64)
    if series.ndim != 1 or series.size == 0 or not np.isfinite(series).all():
        raise ValueError(f"need a non-empty 1-D series of finite daily values; got shape {series.shape}")
    low = high = math.nan
    if series.size >= MIN_INTERVAL_DAYS:
        low, high = _percentile_interval(series[_resampled_days(series, n_boot, seed)].mean(axis=1), level)
    return Interval(float(series.mean()), low, high, int(series.size), block_length(series))


def share_interval(values: np.ndarray, reference: np.ndarray, *, n_boot: int, level: float,
                   seed: int) -> Interval:
    """mean(values) / mean(reference) of two paired daily series (e.g. a model and the cost-aware oracle on the
    same days) and its interval from stationary-bootstrap resamples of the days (both series drawn together).
    The share is NaN where the reference does not earn on average (no bound to be a share of); the interval is
    NaN below MIN_SHARE_DAYS days, or where resamples of the reference earn nothing."""
    _check_bootstrap(n_boot, level)
    top, bottom = np.asarray(values, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if top.shape != bottom.shape or top.ndim != 1 or top.size == 0:
        raise ValueError(f"need two 1-D daily series of one length; got shapes {top.shape} and {bottom.shape}")
    share = float(top.mean() / bottom.mean()) if bottom.mean() > 0 else math.nan
    low = high = math.nan
    if top.size >= MIN_SHARE_DAYS and math.isfinite(share):
        days = _resampled_days(top, n_boot, seed)
        means = bottom[days].mean(axis=1)
        ratios = np.where(means > 0, top[days].mean(axis=1) / np.where(means > 0, means, 1.0), np.nan)
        low, high = _percentile_interval(ratios, level)
    return Interval(share, low, high, int(top.size), block_length(top))


def _metric_values(ret: np.ndarray, turnover: np.ndarray, cost: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of B daily series at once ([B, n] arrays in, [B] arrays out), NaN where NULL."""
    n = ret.shape[1]
    nan = np.full(ret.shape[0], math.nan)
    total = np.prod(1.0 + ret, axis=1) - 1.0
    annual = nan
    if n >= MIN_ANNUALIZED_DAYS:
        annual = np.maximum(1.0 + total, 0.0) ** (TRADING_DAYS_PER_YEAR / n) - 1.0
    root = math.sqrt(TRADING_DAYS_PER_YEAR)
    losing = (ret < 0).any(axis=1)
    volatility = sharpe = sortino = nan
    if n >= 2:
        mean, std = ret.mean(axis=1), ret.std(axis=1, ddof=1)
        # Equal days test the zero spread exactly; their float std can be a 1e-18 residue (as in empyrical).
        flat = ret.max(axis=1) == ret.min(axis=1)
        downside = np.sqrt((np.minimum(ret, 0.0) ** 2).mean(axis=1)) * root
        volatility = std * root
        sharpe = np.where(flat, math.nan, mean / np.where(flat, 1.0, std) * root)
        sortino = np.where(losing, mean * TRADING_DAYS_PER_YEAR / np.where(losing, downside, 1.0), math.nan)
    equity = np.cumprod(1.0 + ret, axis=1)
    peak = np.maximum(np.maximum.accumulate(equity, axis=1), 1.0)  # the starting equity 1 is a peak too
    drawdown = (1.0 - equity / peak).max(axis=1)
    gains, losses = np.clip(ret, 0.0, None).sum(axis=1), -np.clip(ret, None, 0.0).sum(axis=1)
    fell = drawdown > 0
    return {
        "total_return": total,
        "annualized_return": annual,
        "annualized_volatility": volatility,
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown": drawdown,
        "calmar": np.where(fell, annual / np.where(fell, drawdown, 1.0), math.nan),
        "win_rate": (ret > 0).mean(axis=1),
        "profit_factor": np.where(losing, gains / np.where(losing, losses, 1.0), math.nan),
        "turnover": turnover.sum(axis=1),
        "costs_paid": cost.sum(axis=1),
    }


def _days(n: int) -> str:
    return f"{n} trading day{'' if n == 1 else 's'}"


def _null_reason(metric: str, n: int) -> str:
    """Why `metric` of an n-day series is NULL (asked only where it is)."""
    if metric in ("annualized_return", "calmar") and n < MIN_ANNUALIZED_DAYS:
        return f"{_days(n)}: annualizing needs {MIN_ANNUALIZED_DAYS}"
    if metric in ("annualized_volatility", "sharpe", "sortino") and n < 2:
        label = {"annualized_volatility": "volatility", "sharpe": "Sharpe", "sortino": "Sortino"}[metric]
        return f"{_days(n)}: a daily {label} needs 2"
    return {
        "sharpe": "every day returned the same: the volatility is 0",
        "sortino": "no losing day: the downside deviation is 0",
        "calmar": "no drawdown: the max drawdown is 0",
        "profit_factor": "no losing day: no losses to divide the gains by",
    }[metric]


def _series(daily: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A strategy's daily ret, turnover and cost as [1, n] arrays (a batch of one series)."""
    ret, turnover, cost = (daily[name].to_numpy()[None, :] for name in ("ret", "turnover", "cost"))
    return ret, turnover, cost


def compute_metrics(returns: pl.DataFrame) -> dict[str, float]:
    """`METRICS` of one strategy's `backtest_returns` rows: point values, NaN where `metrics_table` has
    NULL."""
    daily = daily_frame(returns)
    strategies = daily["strategy"].unique().to_list()
    if len(strategies) != 1:
        raise ValueError(f"compute_metrics takes one strategy's rows; got {sorted(strategies)} "
                         "(use metrics_table for several)")
    return {name: float(v[0]) for name, v in _metric_values(*_series(daily)).items()}


def metrics_table(
    returns: pl.DataFrame,
    *,
    window: str,
    trading_day: date,
    n_boot: int = 500,
    level: float = 0.9,
    seed: int = 0,
) -> pl.DataFrame:
    """One row per (strategy, metric), columns per `METRICS_SCHEMA`: the point value, its `level` stationary-
    bootstrap interval over days, and in `note` why the value or the interval is NULL (module docstring)."""
    _check_bootstrap(n_boot, level)
    rows = []
    for (strategy,), daily in daily_frame(returns).group_by("strategy", maintain_order=True):
        ret, turnover, cost = _series(daily)
        n = ret.shape[1]
        point = _metric_values(ret, turnover, cost)
        boot = None
        if n >= MIN_INTERVAL_DAYS:
            days = _resampled_days(ret[0], n_boot, seed)
            boot = _metric_values(ret[0][days], turnover[0][days], cost[0][days])
        for name in METRICS:
            value, low, high, note = float(point[name][0]), math.nan, math.nan, None
            if math.isnan(value):
                note = _null_reason(name, n)
            elif boot is None:
                note = f"{_days(n)}: too few to bootstrap an interval (needs {MIN_INTERVAL_DAYS})"
                if name in _ANNUALIZED:
                    note += "; annualized from so few days, the figure is mostly noise"
            else:
                low, high = _percentile_interval(boot[name], level)
                if math.isnan(low):
                    note = "undefined on every bootstrap resample"
            rows.append((trading_day, window, strategy, name, value, low, high, note))
    frame = pl.DataFrame(rows, schema=METRICS_SCHEMA, orient="row")
    return frame.with_columns(pl.col(c).fill_nan(None) for c in ("value", "ci_low", "ci_high"))
