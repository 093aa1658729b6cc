"""Run one policy over a market in the envs' evaluation mode and report one row per strategy-period.

The envs do the trading (next-bar fills across the spread, fees, slippage, flattening at the close); this module
only walks them and turns what they report into the rows of `evaluation.backtest_returns` (`RETURN_COLUMNS`):
one row per session bar of every day, the symbols aggregated into one portfolio.

Intraday (`run_intraday`): `IntradayTradingEnv` in evaluation mode, walking every (day, symbol) once, all
episodes side by side (one env each). The capital of a day is what being long every symbol costs at its first
quoted mid of the day (trade_size shares each); the book's equity is that capital plus the day's net PnL so far.
Per bar: `ret` = the change of every symbol's PnL (net of all costs) / the equity at the bar's start, so a day's
bars compound to its net return, prod(1 + ret) - 1 = PnL / capital; `cost` = fees + slippage + spread paid at
that bar / the same equity; `position` = net exposure sum(shares x mid) / the equity after the bar. Bar 0 of a
day earns nothing (an order seen at bar t fills at bar t+1), so its row is ret 0.

Portfolio (`run_portfolio`): `PortfolioAllocationEnv` holding constant long-only weights (one env per day, all at
once), its net return as `ret`.

`ts` is the bar's end in UTC. MarketTensors keeps no timestamps, so they come from the XNYS calendar: a day's
bars are taken to split its session evenly (bar m ends at open + (m + 1) x session length / bars), which is exact
for the full grids of one-minute, coarser and daily bars the loaders build.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date
from typing import Any

import numpy as np
import polars as pl
import torch

from pipeline.agents.policy_eval import final_pnl, walk_outcomes
from pipeline.contract.calendar import trading_session
from pipeline.envs.costs import EQUITY_COSTS, CostModel, last_quotes
from pipeline.envs.intraday import IntradayConfig, IntradayTradingEnv
from pipeline.envs.portfolio import PortfolioAllocationEnv, PortfolioConfig
from pipeline.envs.tensors import MarketTensors
from pipeline.training.run import DEFAULT_INTRADAY

RETURN_COLUMNS = ("trading_day", "ts", "strategy", "model_id", "ret", "position", "cost")
RETURN_SCHEMA = {
    "trading_day": pl.Date, "ts": pl.Datetime("us", "UTC"), "strategy": pl.Utf8, "model_id": pl.Utf8,
    "ret": pl.Float64, "position": pl.Float64, "cost": pl.Float64,
}


class MarketRule:
    """A baseline that decides from the market and the env's clock (`env.market`, `env.episodes`), never from a
    later bar than the one being decided. The runners bind it to each env they walk; `bind` returns the policy."""

    def bind(self, env: Any) -> Any:
        raise NotImplementedError


def _bound(policy: Any, env: Any) -> Any:
    return policy.bind(env) if isinstance(policy, MarketRule) else policy


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread while a walk runs, the process's setting restored after. A walk feeds the policy a
    batch of a few envs a bar: intra-op threads only wait on each other there, and where other steps of the run
    (or other runs) share the cores they spin against them: measured on the 2-core machine while other work ran,
    a one-day selection walk of a CLSTM-PPO model took 4.6 s on one thread and 100 s on two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def intraday_eval_env(market: MarketTensors, env_config: IntradayConfig | None = None) -> IntradayTradingEnv:
    """The evaluation walk of `market` with `env_config` (the training one) in evaluation mode: one env per
    (day, symbol), so every episode runs at once (the walk takes one day's bars of steps, whatever the days)."""
    config = replace(env_config or DEFAULT_INTRADAY, evaluation=True)
    return IntradayTradingEnv(market, num_envs=market.num_days * market.num_symbols, config=config)


def market_dates(market: MarketTensors) -> list[date]:
    """The market's trading days as dates (its labels must be ISO dates, as the warehouse loader writes them)."""
    try:
        return [date.fromisoformat(day) for day in market.trading_days]
    except ValueError as exc:
        raise ValueError(
            f"the market's trading_days {market.trading_days[:3]}... are not ISO dates, so its bars have no "
            "timestamps; give it real session dates, e.g. dataclasses.replace(market, trading_days=('2024-07-01', "
            "...)) for a synthetic market"
        ) from exc


def bar_times(market: MarketTensors) -> np.ndarray:
    """datetime64[us] (UTC) [days, minutes]: each bar's end; NaT past a day's session."""
    out = np.full((market.num_days, market.num_minutes), np.datetime64("NaT"), dtype="datetime64[us]")
    for d, (day, bars) in enumerate(zip(market_dates(market), market.session_minutes.tolist(), strict=True)):
        session = trading_session(day)
        open_us = np.datetime64(session.open.replace(tzinfo=None), "us")
        length = (session.close - session.open) / bars
        out[d, :bars] = open_us + np.array([(m + 1) * length for m in range(bars)], dtype="timedelta64[us]")
    return out


def day_capital(market: MarketTensors, trade_size: float) -> np.ndarray:
    """float64 [days]: trade_size shares of every symbol at its first quoted mid of the day (0 if never quoted)."""
    tradable = market.tradable.cpu().numpy()
    mid = market.mid.double().cpu().numpy()
    first = tradable.argmax(axis=1)  # [days, symbols]: first tradable bar (0 where none)
    first_mid = np.take_along_axis(mid, first[:, None, :], axis=1)[:, 0, :]
    return trade_size * np.where(tradable.any(axis=1), first_mid, 0.0).sum(axis=1)


def returns_frame(
    market: MarketTensors, strategy: str, model_id: str | None, ret: np.ndarray, position: np.ndarray,
    cost: np.ndarray,
) -> pl.DataFrame:
    """`RETURN_COLUMNS` rows from [days, minutes] arrays, one per session bar of every day, in time order."""
    sessions = market.session_minutes.cpu().numpy()
    in_session = np.arange(market.num_minutes)[None, :] < sessions[:, None]
    days = np.repeat(np.array(market_dates(market), dtype="datetime64[D]"), sessions)
    frame = pl.DataFrame({
        "trading_day": days,
        "ts": bar_times(market)[in_session],
        "strategy": [strategy] * len(days),
        "model_id": pl.Series([model_id] * len(days), dtype=pl.Utf8),
        "ret": ret[in_session], "position": position[in_session], "cost": cost[in_session],
    })
    return frame.with_columns(pl.col("ts").dt.replace_time_zone("UTC")).cast(RETURN_SCHEMA).select(RETURN_COLUMNS)


def run_intraday(
    market: MarketTensors, policy: Any, strategy: str, *, model_id: str | None = None,
    env_config: IntradayConfig | None = None, seed: int = 0,
) -> pl.DataFrame:
    """Walk every (day, symbol) of `market` once with `policy`'s deterministic actions; rows as in the module doc.

    `policy` has the SB3 `predict(obs, state, episode_start, deterministic)` protocol (a CLSTMAgent, an ensemble)
    or is a `MarketRule`; `env_config` must be the one the model was trained with (default `DEFAULT_INTRADAY`).
    """
    with one_thread():
        return _walk_intraday(market, policy, strategy, model_id, env_config, seed)


def _walk_intraday(
    market: MarketTensors, policy: Any, strategy: str, model_id: str | None, env_config: IntradayConfig | None,
    seed: int,
) -> pl.DataFrame:
    env = intraday_eval_env(market, env_config)
    agent = _bound(policy, env)
    days, minutes, symbols = market.num_days, market.num_minutes, market.num_symbols
    m = env.market
    marks, _ = last_quotes(m.mid.double().reshape(days * minutes, symbols), m.tradable.reshape(days * minutes, -1))
    marks = marks.reshape(-1).cpu()
    pnl, paid, exposure = (torch.zeros(days * minutes * symbols, dtype=torch.float64) for _ in range(3))
    prev_pnl = prev_paid = torch.zeros(env.num_envs, dtype=torch.float64)
    obs, _ = env.reset(seed=seed)
    state, episode_start = None, np.ones(env.num_envs, dtype=bool)
    while not bool(env.eval_finished):
        actions, state = agent.predict(obs, state, episode_start, deterministic=True)
        obs, _, terminated, truncated, info = env.step(torch.as_tensor(actions, device=env.device))
        # The step's figures belong to the bar it reached, of the episode it played (read before the autoreset).
        live = (info["episode_id"] >= 0).cpu()
        where = ((info["day"] * minutes + info["minute"]) * symbols + info["symbol"]).cpu()[live]
        equity = info["pnl"].cpu().double()
        spent = (info["fees"] + info["slippage"] + info["spread_paid"]).cpu().double()
        pnl.index_add_(0, where, (equity - prev_pnl)[live])
        paid.index_add_(0, where, (spent - prev_paid)[live])
        exposure.index_add_(0, where, info["position"].cpu().double()[live] * marks[where])
        done = (terminated | truncated).cpu()
        # A new episode starts from an empty book: its first step's change is measured from 0.
        prev_pnl, prev_paid = equity.masked_fill(done, 0.0), spent.masked_fill(done, 0.0)
        episode_start = done.numpy()
    capital = day_capital(market, env.config.trade_size)[:, None]

    def book(values: torch.Tensor) -> np.ndarray:
        return values.reshape(days, minutes, symbols).sum(dim=2).numpy()

    bar_pnl = book(pnl)
    after = capital + np.cumsum(bar_pnl, axis=1)
    before = after - bar_pnl

    def share(values: np.ndarray, equity: np.ndarray) -> np.ndarray:
        return np.divide(values, equity, out=np.zeros_like(values), where=equity > 0)

    return returns_frame(market, strategy, model_id, share(bar_pnl, before), share(book(exposure), after),
                         share(book(paid), before))


def run_portfolio(
    market: MarketTensors, weights: np.ndarray, strategy: str, *, costs: CostModel = EQUITY_COSTS,
    seed: int = 0, model_id: str | None = None,
) -> pl.DataFrame:
    """Hold constant long-only `weights` (one per symbol, summing to 1) in `PortfolioAllocationEnv`, every day.

    Each day starts in cash, buys the weights at bar 1 (the order seen at bar 0), rebalances back to them every
    bar, and goes back to cash at the close, like the intraday env's flattening. ret is the env's net portfolio
    return, cost what it paid that bar (fraction of the value before the bar), position the invested share.
    `costs` are the intraday env's (a share's fee and slippage), so both kinds of baseline pay the same to trade.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (market.num_symbols,) or (weights < 0).any() or not np.isclose(weights.sum(), 1.0):
        raise ValueError(f"weights must be {market.num_symbols} non-negative numbers summing to 1 (one per symbol "
                         f"of {market.symbols}); got {weights.tolist()}")
    config = PortfolioConfig(window=1, weight_map="simplex", cash_asset=True, fee_per_share=costs.fee_per_unit,
                             slippage_bps=costs.slippage_bps, evaluation=True)
    # One env per day: every day runs at once.
    env = PortfolioAllocationEnv(market, num_envs=market.num_days, config=config)
    invested = torch.tensor([[*weights, 0.0]], dtype=torch.float32, device=env.device).expand(env.num_envs, -1)
    in_cash = torch.zeros_like(invested)
    in_cash[:, -1] = 1.0
    minutes = market.num_minutes
    ret, cost, position = (np.zeros(market.num_days * minutes) for _ in range(3))
    prev_costs, prev_value = np.zeros(env.num_envs), np.ones(env.num_envs)
    env.reset(seed=seed)
    clock = env.episodes
    while not bool(env.eval_finished):
        # An order seen at bar t fills at t+1: from the bar before the close on, the order is to be in cash.
        closing = (clock.bar + 1 >= clock.last_bar[clock.day]).unsqueeze(1)
        _, _, terminated, _, info = env.step(torch.where(closing, in_cash, invested))
        live = (info["episode_id"] >= 0).cpu().numpy()
        at = (info["day"] * minutes + info["minute"]).cpu().numpy()[live]
        costs, value = info["costs"].double().cpu().numpy(), info["value"].double().cpu().numpy()
        ret[at] = info["portfolio_return"].double().cpu().numpy()[live]
        cost[at] = ((costs - prev_costs) / prev_value)[live]
        position[at] = 1.0 - info["weights"][:, -1].double().cpu().numpy()[live]
        done = terminated.cpu().numpy()
        prev_costs, prev_value = np.where(done, 0.0, costs), np.where(done, 1.0, value)
    shape = (market.num_days, minutes)
    return returns_frame(market, strategy, model_id, ret.reshape(shape), position.reshape(shape),
                         cost.reshape(shape))


def episode_pnls(
    market: MarketTensors, policy: Any, env_config: IntradayConfig | None = None, seed: int = 0
) -> np.ndarray:
    """Final PnL in dollars (net of costs) of every (day, symbol) episode of `market`, in walk (time) order.

    The walk is validation's (`pipeline.agents.policy_eval`), on the env `run_intraday` builds; for paired
    comparisons of two policies on the same episodes.
    """
    env = intraday_eval_env(market, env_config)
    with one_thread():
        outcomes = walk_outcomes(_bound(policy, env), env, seed, final_pnl)
    return np.array([outcomes[k] for k in sorted(outcomes)], dtype=np.float64)
