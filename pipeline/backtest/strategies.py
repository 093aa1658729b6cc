"""The baselines every model is judged beside, and `run_baselines`, which backtests them all on one market.

Intraday baselines are policies with the SB3 `predict` protocol, run through `IntradayTradingEnv` like a model:
flat (always HOLD), buy and hold (LONG every bar: long from the first fill, flattened at the close by the env),
momentum (the sign of the trailing `MOMENTUM_MINUTES` mid return), random (uniform actions from a seeded
generator) and, on the synthetic market, the oracle: the sign of the planted expected return, which is the
trailing momentum over exactly the planted `signal_minutes` (`pipeline.market.synthetic_oracle`). The trailing
rules read the mid at the decided bar and k bars before it, nothing later.

Portfolio baselines are constant long-only weights run through `PortfolioAllocationEnv`: equal weight, minimum
variance and maximum Sharpe, the last two estimated on a training market's minute mid returns only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import torch

from pipeline.backtest.runner import MarketRule, run_intraday, run_portfolio
from pipeline.envs.intraday import FLAT as FLAT_ACTION
from pipeline.envs.intraday import HOLD, LONG, SHORT, IntradayConfig
from pipeline.envs.market_data import MarketTensors
from pipeline.envs.portfolio import project_to_simplex

FLAT, BUY_AND_HOLD, MOMENTUM, RANDOM, ORACLE = "flat", "buy_and_hold", "momentum", "random", "oracle"
EQUAL_WEIGHT, MIN_VARIANCE, MAX_SHARPE = "equal_weight", "min_variance", "max_sharpe"
PORTFOLIO_BASELINES = (EQUAL_WEIGHT, MIN_VARIANCE, MAX_SHARPE)
BASELINES = (FLAT, BUY_AND_HOLD, EQUAL_WEIGHT, MIN_VARIANCE, MAX_SHARPE, MOMENTUM, RANDOM)
"""Every baseline `run_baselines` runs, in its output order (ORACLE follows when its signal is known)."""
MOMENTUM_MINUTES = 30
"""Lookback of the momentum baseline: a common half-hour rule, not tuned to the synthetic market's 10 minutes."""
MIN_TRAIN_RETURNS = 30
"""Fewest minute returns (with every symbol quoted) that `estimate_weights` estimates a covariance from."""
_ASCENT_STEPS = 2000


class ConstantAction:
    """The same discrete action for every env at every bar (HOLD: flat; LONG: buy and hold)."""

    def __init__(self, action: int) -> None:
        self.action = int(action)

    def predict(self, obs: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        return np.full(len(obs), self.action, dtype=np.int64), state


class _ClockTable:
    """Reads a precomputed action per (day, bar, symbol) at each env's current bar."""

    def __init__(self, env: Any, table: torch.Tensor) -> None:
        self.episodes, self.table = env.episodes, table

    def predict(self, obs: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        e = self.episodes
        return self.table[e.day, e.bar, e.symbol].cpu().numpy(), state


class TrailingMomentum(MarketRule):
    """LONG when log mid(t) - log mid(t-k) > 0, SHORT when < 0, HOLD when 0 or either bar is unquoted (same day).

    Flat for a day's first k bars (no k-bar history yet), and no new order at the bar before the close (it would
    fill at the close and be flattened at once, a pure cost): the oracle's rule (`synthetic_oracle`).
    """

    def __init__(self, lookback: int) -> None:
        if lookback < 1:
            raise ValueError(f"the momentum lookback must be at least 1 bar; got {lookback}")
        self.lookback = int(lookback)

    def actions(self, market: MarketTensors) -> torch.Tensor:
        """int64 [days, minutes, symbols]: the action at each bar, from bars t and t-k alone."""
        k = self.lookback
        log_mid = market.mid.double().clamp(min=1e-12).log()
        quoted = market.tradable
        table = torch.full(log_mid.shape, FLAT_ACTION, dtype=torch.int64, device=log_mid.device)
        if k < market.num_minutes:
            signal = log_mid[:, k:] - log_mid[:, :-k]
            rule = torch.where(signal > 0, LONG, torch.where(signal < 0, SHORT, HOLD))
            table[:, k:] = torch.where(quoted[:, k:] & quoted[:, :-k], rule, HOLD)
        before_close = (market.session_minutes - 2).clamp(min=0)
        days = torch.arange(market.num_days, device=table.device)
        table[days, before_close] = torch.where(before_close[:, None] >= k, HOLD, FLAT_ACTION)
        return table

    def bind(self, env: Any) -> _ClockTable:
        return _ClockTable(env, self.actions(env.market))


class UniformRandom(MarketRule):
    """Uniformly random actions; each bound run restarts the generator from `seed`, so runs repeat."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def bind(self, env: Any) -> _RandomActions:
        return _RandomActions(np.random.default_rng(self.seed), env.action_dim)


class _RandomActions:
    def __init__(self, rng: np.random.Generator, num_actions: int) -> None:
        self.rng, self.num_actions = rng, num_actions

    def predict(self, obs: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        return self.rng.integers(0, self.num_actions, size=len(obs)), state


def intraday_baseline(name: str, *, seed: int = 0, signal_minutes: int | None = None) -> Any:
    """The policy of an intraday baseline by name (ORACLE needs the synthetic market's `signal_minutes`)."""
    if name == ORACLE:
        if signal_minutes is None:
            raise ValueError("the oracle trades the synthetic market's planted signal: pass its signal_minutes")
        return TrailingMomentum(signal_minutes)
    policies = {FLAT: lambda: ConstantAction(HOLD), BUY_AND_HOLD: lambda: ConstantAction(LONG),
                MOMENTUM: lambda: TrailingMomentum(MOMENTUM_MINUTES), RANDOM: lambda: UniformRandom(seed)}
    if name not in policies:
        raise ValueError(f"unknown intraday baseline {name!r}; choose one of {[*policies, ORACLE]}")
    return policies[name]()


def minute_returns(market: MarketTensors) -> np.ndarray:
    """float64 [bars, symbols]: simple mid returns bar t-1 -> t within each session, where every symbol is quoted
    at both bars (no overnight moves: the baselines are flat overnight)."""
    mid = market.mid.double().cpu().numpy()
    quoted = market.tradable.cpu().numpy()
    in_session = np.arange(market.num_minutes)[None, :] < market.session_minutes.cpu().numpy()[:, None]
    usable = (quoted[:, 1:] & quoted[:, :-1]).all(axis=2) & in_session[:, 1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = mid[:, 1:] / mid[:, :-1] - 1.0
    return returns[usable]


def _project(w: np.ndarray) -> np.ndarray:
    return project_to_simplex(torch.from_numpy(w)).numpy()


def _min_variance(cov: np.ndarray) -> np.ndarray:
    """Long-only minimum variance by projected gradient descent (a convex problem: it reaches the optimum)."""
    w = np.full(len(cov), 1.0 / len(cov))
    step = 0.5 / max(float(np.linalg.eigvalsh(cov)[-1]), 1e-300)
    for _ in range(_ASCENT_STEPS):
        w = _project(w - step * 2.0 * cov @ w)
    return w


def _max_sharpe(mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Long-only maximum Sharpe by projected gradient ascent with backtracking, from the best single symbol.

    The Sharpe ratio is pseudo-concave where the expected return is positive, so a stationary point found there
    is the maximum. With no symbol of positive mean no long-only portfolio has a positive Sharpe ratio: the
    minimum variance portfolio stands in.
    """
    if mean.max() <= 0:
        return _min_variance(cov)
    scale = np.sqrt(np.diag(cov).mean())  # the Sharpe ratio is unchanged; the gradient steps become O(1)
    mean, cov = mean / scale, cov / scale**2

    def sharpe(w: np.ndarray) -> float:
        return float(mean @ w / np.sqrt(w @ cov @ w))

    w = np.eye(len(mean))[np.argmax(mean / np.sqrt(np.diag(cov)))]
    step = 1.0
    for _ in range(_ASCENT_STEPS):
        sd = np.sqrt(w @ cov @ w)
        grad = mean / sd - (mean @ w) * (cov @ w) / sd**3
        candidate = _project(w + step * grad)
        # Only a strict gain grows the step: at the optimum the projection returns w itself, and growing the step
        # on ties would overflow it to inf (and the projection to NaN).
        if sharpe(candidate) > sharpe(w):
            w, step = candidate, min(step * 1.5, 1e6)
        else:
            step *= 0.5
        if step < 1e-12:
            break
    return w


def estimate_weights(train_market: MarketTensors, kind: str) -> np.ndarray:
    """Long-only weights over `train_market.symbols` summing to 1, estimated on the training market alone.

    equal_weight: 1/n each. min_variance / max_sharpe: from the covariance and mean of the minute mid returns
    (`minute_returns`), plus a ridge of 1e-8 of the average variance so a singular covariance still solves.
    """
    n = train_market.num_symbols
    if kind == EQUAL_WEIGHT:
        return np.full(n, 1.0 / n)
    if kind not in PORTFOLIO_BASELINES:
        raise ValueError(f"unknown portfolio baseline {kind!r}; choose one of {PORTFOLIO_BASELINES}")
    returns = minute_returns(train_market)
    if len(returns) < max(MIN_TRAIN_RETURNS, n + 1):
        raise ValueError(
            f"the training market has {len(returns)} minute returns with every symbol quoted, too few to estimate "
            f"a {n}-symbol covariance for {kind} (need {max(MIN_TRAIN_RETURNS, n + 1)}); train on more days"
        )
    cov = np.atleast_2d(np.cov(returns, rowvar=False))
    cov = cov + 1e-8 * float(np.trace(cov)) / n * np.eye(n)
    weights = _min_variance(cov) if kind == MIN_VARIANCE else _max_sharpe(returns.mean(axis=0), cov)
    return weights / weights.sum()


def run_baselines(
    market: MarketTensors, train_market: MarketTensors, *, env_config: IntradayConfig | None = None,
    seed: int = 0, oracle_signal_minutes: int | None = None,
) -> pl.DataFrame:
    """`RETURN_COLUMNS` rows of every baseline on `market` (model_id null), in `BASELINES` order, then the oracle
    when `oracle_signal_minutes` (the synthetic market's planted signal) is given; portfolio weights come from
    `train_market`, which must hold the same symbols."""
    if tuple(train_market.symbols) != tuple(market.symbols):
        raise ValueError(f"the training market's symbols {train_market.symbols} differ from the evaluated "
                         f"market's {market.symbols}; load both parts with the same symbols")
    frames = []
    for name in BASELINES + ((ORACLE,) if oracle_signal_minutes is not None else ()):
        if name in PORTFOLIO_BASELINES:
            frames.append(run_portfolio(market, estimate_weights(train_market, name), name, seed=seed))
        else:
            policy = intraday_baseline(name, seed=seed, signal_minutes=oracle_signal_minutes)
            frames.append(run_intraday(market, policy, name, env_config=env_config, seed=seed))
    return pl.concat(frames)
