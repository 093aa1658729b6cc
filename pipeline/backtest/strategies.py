"""The baselines every model is judged beside, and `run_baselines`, which backtests them all on one market.

Intraday baselines are policies with the SB3 `predict` protocol, run through `IntradayTradingEnv` like a model:
flat (always HOLD), buy and hold (LONG every bar: long from the first fill, flattened at the close by the env),
momentum (the sign of the trailing `MOMENTUM_MINUTES` mid return), momentum with a band (the same signal with a
hysteresis band: it goes long above +threshold, short below -threshold and keeps its position in between, the
threshold tuned on the training market under the env's costs, `tune_band`), and random (uniform actions from a
seeded generator). The trailing rules read the mid at the decided bar and k bars before it, nothing later.

On the synthetic market two oracles know the planted signal's horizon (`signal_minutes`,
`pipeline.synthetic.oracle`) and are reported beside the baselines, never counted among them by the gate:
`sign_oracle` trades the sign of the planted expected return every bar and ignores costs; `cost_aware_oracle` is
the banded rule on that horizon, its threshold tuned on the training market with the env's costs. The cost-aware
one is the bound: "share of the oracle" always means it. (The sign oracle pays a spread on every flip, so a banded
rule beats it: measured at 167% of it at alpha 0.15.)

Portfolio baselines are constant long-only weights run through `PortfolioAllocationEnv`: equal weight, minimum
variance and maximum Sharpe, the last two estimated on a training market's minute mid returns only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import torch

from pipeline.backtest.runner import (
    DEFAULT_INTRADAY,
    MarketRule,
    episode_pnls,
    one_thread,
    run_intraday,
    run_portfolio,
)
from pipeline.envs.intraday import FLAT as FLAT_ACTION
from pipeline.envs.intraday import HOLD, LONG, SHORT, IntradayConfig
from pipeline.envs.portfolio import project_to_simplex
from pipeline.envs.tensors import MarketTensors

FLAT, BUY_AND_HOLD, MOMENTUM, MOMENTUM_BAND, RANDOM = "flat", "buy_and_hold", "momentum", "momentum_band", "random"
SIGN_ORACLE, COST_AWARE_ORACLE = "sign_oracle", "cost_aware_oracle"
ORACLES = (SIGN_ORACLE, COST_AWARE_ORACLE)
"""Rules that know the synthetic market's planted signal: reported beside the baselines, never judged against."""
EQUAL_WEIGHT, MIN_VARIANCE, MAX_SHARPE = "equal_weight", "min_variance", "max_sharpe"
PORTFOLIO_BASELINES = (EQUAL_WEIGHT, MIN_VARIANCE, MAX_SHARPE)
BASELINES = (FLAT, BUY_AND_HOLD, EQUAL_WEIGHT, MIN_VARIANCE, MAX_SHARPE, MOMENTUM, MOMENTUM_BAND, RANDOM)
"""Every baseline `run_baselines` runs, in its output order (ORACLES follow when the signal is known)."""
MOMENTUM_MINUTES = 30
"""Lookback of the momentum baselines: a common half-hour rule, not tuned to the synthetic market's 10 minutes."""
BAND_QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.97)
"""Candidate band thresholds of `tune_band`, as quantiles of |signal| on the training market (0: no band)."""
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


def trailing_signal(market: MarketTensors, lookback: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(signal, known) [days, minutes, symbols]: log mid(t) - log mid(t-k) within each day, and where both bars are
    quoted (the first k bars of a day have no signal)."""
    log_mid = market.mid.double().clamp(min=1e-12).log()
    signal = torch.zeros_like(log_mid)
    known = torch.zeros_like(market.tradable)
    if lookback < market.num_minutes:
        signal[:, lookback:] = log_mid[:, lookback:] - log_mid[:, :-lookback]
        known[:, lookback:] = market.tradable[:, lookback:] & market.tradable[:, :-lookback]
    return signal, known


class BandMomentum(MarketRule):
    """Trailing momentum with a hysteresis band: LONG once log mid(t) - log mid(t-k) > threshold, SHORT once it is
    < -threshold, and the position it holds in between (HOLD), from bars t and t-k alone. Threshold 0 trades the
    signal's sign every bar (a zero signal, or an unquoted bar, keeps the position).

    Flat for a day's first k bars (no k-bar history yet), and no new order at the bar before the close (it would
    fill at the close and be flattened at once, a pure cost). `thresholds` may hold one threshold per symbol.
    """

    def __init__(self, lookback: int, threshold: float | torch.Tensor = 0.0) -> None:
        if lookback < 1:
            raise ValueError(f"the momentum lookback must be at least 1 bar; got {lookback}")
        if bool((torch.as_tensor(threshold) < 0).any()):
            raise ValueError(f"the band threshold must be >= 0; got {threshold}")
        self.lookback, self.threshold = int(lookback), threshold

    def actions(self, market: MarketTensors) -> torch.Tensor:
        """int64 [days, minutes, symbols]: the action at each bar."""
        k = self.lookback
        signal, known = trailing_signal(market, k)
        threshold = torch.as_tensor(self.threshold, dtype=signal.dtype, device=signal.device)
        wanted = torch.where(known & (signal > threshold), 1, torch.where(known & (signal < -threshold), -1, 0))
        # The position held: the last non-zero wish of the day so far (0 before the first).
        bars = torch.arange(market.num_minutes, device=signal.device)[None, :, None]
        last = torch.where(wanted != 0, bars, -1).cummax(dim=1).values
        held = torch.where(last >= 0, wanted.gather(1, last.clamp(min=0)), 0)
        table = torch.where(held > 0, LONG, torch.where(held < 0, SHORT, HOLD))
        table[:, :k] = FLAT_ACTION
        before_close = (market.session_minutes - 2).clamp(min=0)
        days = torch.arange(market.num_days, device=table.device)
        table[days, before_close] = torch.where(before_close[:, None] >= k, HOLD, FLAT_ACTION)
        return table

    def bind(self, env: Any) -> _ClockTable:
        return _ClockTable(env, self.actions(env.market))


def band_grid(train_market: MarketTensors, lookback: int, quantiles: tuple[float, ...] = BAND_QUANTILES) -> list[float]:
    """The thresholds `tune_band` tries: the `quantiles` of |signal| on the training market, ascending, distinct."""
    signal, known = trailing_signal(train_market, lookback)
    moves = signal.abs()[known]
    if moves.numel() == 0:
        return [0.0]
    grid = torch.quantile(moves.float(), torch.tensor(quantiles, dtype=torch.float32)).double().tolist()
    return sorted({max(float(g), 0.0) for g in grid})


def tune_band(train_market: MarketTensors, lookback: int, env_config: IntradayConfig | None = None,
              quantiles: tuple[float, ...] = BAND_QUANTILES) -> float:
    """The band threshold of `BandMomentum(lookback, .)` with the most net PnL on `train_market` under the env's
    costs (`env_config`: the models' own), among the `quantiles` of |signal| there; ties go to the lower one.

    One evaluation walk scores every threshold: the market's symbols are repeated once per threshold and each copy
    trades its own.
    """
    grid = band_grid(train_market, lookback, quantiles)
    n = train_market.num_symbols
    copies = train_market.subset(symbols=[s for _ in grid for s in range(n)])
    thresholds = torch.tensor([g for g in grid for _ in range(n)], dtype=torch.float64)
    pnl = episode_pnls(copies, BandMomentum(lookback, thresholds), env_config)
    per_threshold = pnl.reshape(-1, len(grid), n).sum(axis=(0, 2))
    return grid[int(np.argmax(per_threshold))]


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


def intraday_baseline(
    name: str, *, seed: int = 0, signal_minutes: int | None = None, train_market: MarketTensors | None = None,
    env_config: IntradayConfig | None = None,
) -> Any:
    """The policy of an intraday baseline or oracle by name. The oracles need the synthetic market's
    `signal_minutes`; the banded rules (MOMENTUM_BAND, COST_AWARE_ORACLE) tune their threshold on `train_market`
    under `env_config`'s costs."""
    if name in ORACLES and signal_minutes is None:
        raise ValueError(f"{name} trades the synthetic market's planted signal: pass its signal_minutes")
    banded = {MOMENTUM_BAND: MOMENTUM_MINUTES, COST_AWARE_ORACLE: signal_minutes}
    if name in banded:
        if train_market is None:
            raise ValueError(f"{name} tunes its band on the training days: pass train_market")
        lookback = int(banded[name])
        return BandMomentum(lookback, tune_band(train_market, lookback, env_config))
    policies = {FLAT: lambda: ConstantAction(HOLD), BUY_AND_HOLD: lambda: ConstantAction(LONG),
                MOMENTUM: lambda: BandMomentum(MOMENTUM_MINUTES), RANDOM: lambda: UniformRandom(seed),
                SIGN_ORACLE: lambda: BandMomentum(int(signal_minutes or 0))}
    if name not in policies:
        raise ValueError(f"unknown intraday baseline {name!r}; choose one of {[*policies, *banded]}")
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
    """`RETURN_COLUMNS` rows of every baseline on `market` (model_id null), in `BASELINES` order, then the
    `ORACLES` when `oracle_signal_minutes` (the synthetic market's planted signal) is given. Portfolio weights and
    band thresholds come from `train_market` (which must hold the same symbols), the bands under `env_config`,
    whose costs the portfolio baselines pay too."""
    if tuple(train_market.symbols) != tuple(market.symbols):
        raise ValueError(f"the training market's symbols {train_market.symbols} differ from the evaluated "
                         f"market's {market.symbols}; load both parts with the same symbols")
    frames = []
    with one_thread():  # fitting weights and bands, and the walks, are small-batch torch work
        for name in BASELINES + (ORACLES if oracle_signal_minutes is not None else ()):
            if name in PORTFOLIO_BASELINES:
                frames.append(run_portfolio(market, estimate_weights(train_market, name), name,
                                            costs=(env_config or DEFAULT_INTRADAY).costs, seed=seed))
            else:
                policy = intraday_baseline(name, seed=seed, signal_minutes=oracle_signal_minutes,
                                           train_market=train_market, env_config=env_config)
                frames.append(run_intraday(market, policy, name, env_config=env_config, seed=seed))
    return pl.concat(frames)
