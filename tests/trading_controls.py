"""The positive and negative controls' shared recipe: one synthetic market of 16 trading days, CLSTM-PPO trained
on days 0-5 with the `small_budget` preset (the README's CPU recipe) for 409,600 steps, and its net PnL on days
6-15, each (day, symbol) walked once (ten days: the fewest the promotion gate judges).

The library defaults (the `gpu_long` preset) do not learn within a CPU test budget; `small_budget` does. The agent
starts from the env's mostly-HOLD policy (`IntradayTradingEnv.initial_action_probs`, CLSTM-PPO's default). Every
control trains with exactly this recipe and budget; they differ only in the market (planted signal, martingale,
martingale with a leak).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import polars as pl
import torch

from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.agents.ppo_config import PPOConfig
from pipeline.backtest.promotion import PromotionPolicy, evaluate_gate
from pipeline.backtest.runner import run_intraday
from pipeline.backtest.strategies import run_baselines
from pipeline.envs.intraday import LONG, IntradayConfig, IntradayTradingEnv
from pipeline.envs.tensors import MarketTensors, synthetic_market_tensors

TRAIN_DAYS, TEST_DAYS = 6, 10
# Whole-day episodes (no loss-cut/profit-lock) with the default fees, slippage and spread crossing.
INTRADAY = IntradayConfig(window=8, loss_cut=None, profit_lock=None)
CONTROL_STEPS = 409_600
CONTROL_CONFIG = PPOConfig.preset("small_budget", torch_threads=1, seed=0)
# A hang guard, not a time budget: one training run takes about 3 minutes on an idle core, and many times that on a
# machine shared with other work (measured: 10 minutes at a fifth of the idle speed), so the suite-wide 600 s is
# too tight for these tests.
LEARNING_TIMEOUT_S = 3600
# One-sided 5% critical value of Student's t for >= 9 degrees of freedom (every control has n >= 10).
T_CRITICAL = 1.83


def control_market(alpha: float, seed: int) -> MarketTensors:
    """16 trading days of the embedded synthetic market with a planted momentum signal of strength `alpha`."""
    return synthetic_market_tensors(days=TRAIN_DAYS + TEST_DAYS, alpha=alpha, seed=seed, source="market")


def with_fill_leak(market: MarketTensors) -> MarketTensors:
    """A deliberate look-ahead: feature 0 of bar t becomes the mid's log return (bps) from bar t+1 to t+2, the
    move an order placed at bar t earns (it fills at bar t+1). The negative control must be able to see this."""
    mid = market.mid.double()
    leak = torch.zeros_like(mid)
    leak[:, :-2] = torch.log(mid[:, 2:] / mid[:, 1:-1]) * 1e4
    features = market.features.clone()
    features[..., 0] = leak.to(features.dtype)
    return replace(market, features=features)


def train_control_agent(market: MarketTensors, config: IntradayConfig = INTRADAY) -> CLSTMPPO:
    """CLSTM-PPO trained with the controls' recipe on the training days only."""
    train_env = IntradayTradingEnv(market.subset(days=range(TRAIN_DAYS)), num_envs=64, config=config)
    return CLSTMPPO(train_env, CONTROL_CONFIG).learn(CONTROL_STEPS)


@dataclass(frozen=True)
class Outcomes:
    """Per (day, symbol) of the test days, in episode order: net PnL (dollars, after all costs) and orders."""

    pnl: np.ndarray
    fills: np.ndarray


def out_of_sample(market: MarketTensors, policy: Callable[[torch.Tensor], np.ndarray],
                  config: IntradayConfig = INTRADAY, num_envs: int = 16) -> Outcomes:
    """Every (day, symbol) of the TEST days under `policy`, each walked once in time order (evaluation mode)."""
    return walk_episodes(market.subset(days=range(TRAIN_DAYS, TRAIN_DAYS + TEST_DAYS)), policy, config, num_envs)


def walk_episodes(market: MarketTensors, policy: Callable[[torch.Tensor], np.ndarray],
                  config: IntradayConfig = INTRADAY, num_envs: int = 16) -> Outcomes:
    """Every (day, symbol) of `market` under `policy`, each walked once in time order (evaluation mode)."""
    env = IntradayTradingEnv(market, num_envs=num_envs, config=replace(config, evaluation=True))
    obs, _ = env.reset(seed=123)
    done: dict[int, tuple[float, int]] = {}
    while not bool(env.eval_finished):
        obs, _, term, trunc, info = env.step(torch.as_tensor(policy(obs)))
        for i in torch.nonzero(term | trunc).flatten().tolist():
            if int(info["episode_id"][i]) >= 0:
                done[int(info["episode_id"][i])] = (float(info["pnl"][i]), int(info["fills"][i]))
    assert sorted(done) == list(range(market.num_days * market.num_symbols)), "every (day, symbol) exactly once"
    rows = np.array([done[k] for k in sorted(done)])
    return Outcomes(pnl=rows[:, 0], fills=rows[:, 1].astype(int))


def agent_policy(agent: Any) -> Callable[[torch.Tensor], np.ndarray]:
    """A trained agent's deterministic policy."""
    return lambda obs: agent.predict(obs.numpy())[0]


def buy_and_hold(obs: torch.Tensor) -> np.ndarray:
    """Long from the first bar to the close (the env flattens at the close)."""
    return np.full(obs.shape[0], LONG)


def t_statistic(values: np.ndarray) -> float:
    """One-sample t statistic of the mean against 0 (0 when every value is equal to the mean)."""
    sd = values.std(ddof=1)
    return 0.0 if sd == 0 else float(values.mean() / (sd / np.sqrt(len(values))))


def outcome_report(outcomes: Outcomes, name: str) -> str:
    """One line of a control's figures (printed, so `pytest -rP` shows what a passing run measured)."""
    return (f"{name}: mean {outcomes.pnl.mean():+.2f} $/day-symbol, t {t_statistic(outcomes.pnl):.2f}, "
            f"n={len(outcomes.pnl)}, orders {int(outcomes.fills.sum())}, "
            f"traded on {int((outcomes.fills > 0).sum())} day-symbols")


def promotion_gate(market: MarketTensors, agent: CLSTMPPO, config: IntradayConfig = INTRADAY) -> dict[str, Any]:
    """The default promotion gate (pipeline.backtest.promotion) on the control's test days, as if they were the
    candidate's gate days: the agent against every baseline (portfolio weights and bands from the training days),
    with no production model. Returns {condition: (passed, reason)}."""
    test = market.subset(days=range(TRAIN_DAYS, TRAIN_DAYS + TEST_DAYS))
    returns = pl.concat([
        run_intraday(test, agent, "candidate", model_id="control", env_config=config),
        run_baselines(test, market.subset(days=range(TRAIN_DAYS)), env_config=config),
    ], how="vertical_relaxed")
    metrics = {"last": {k: v for k, v in agent.history[-1].items() if isinstance(v, int | float)}}
    return {g.name: (g.passed, g.reason) for g in evaluate_gate(returns, metrics, False, PromotionPolicy())}


def margin_report(pnl: np.ndarray, baseline: np.ndarray, name: str) -> str:
    """The paired margin over a baseline on the same (day, symbol)s: its mean and its own t statistic."""
    diff = pnl - baseline
    return f"margin over {name}: mean {diff.mean():+.2f} $/day-symbol, paired t {t_statistic(diff):.2f}, n={len(diff)}"
