"""The positive and negative controls' shared recipe: one planted-signal market of 10 trading days, CLSTM-PPO
trained on days 0-5 with one set of hyperparameters, and its net PnL on days 6-9, each (day, symbol) walked once.

The hyperparameters are not the library defaults: with those, CLSTM-PPO does not learn within a CPU test budget
(see the training issue). Entropy 0.03 keeps the policy exploring long enough to leave "never trade", the first
thing it learns under costs. The earlier recipe (alpha 0.15, entropy 0.01, 245,760 steps) learned in 1 of 3 agent
seeds; this one learned in 3 of 3 (seeds 0-2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.envs.intraday import IntradayConfig, IntradayTradingEnv
from pipeline.envs.market_data import MarketTensors, synthetic_market_tensors

TRAIN_DAYS, TEST_DAYS = 6, 4
# Whole-day episodes (no loss-cut/profit-lock) with the default fees, slippage and spread crossing.
INTRADAY = IntradayConfig(window=8, loss_cut=None, profit_lock=None)
CONTROL_STEPS = 409_600
CONTROL_HPARAMS = dict(
    num_steps=32, hidden=32, num_minibatches=8, gamma=0.95, gae_lambda=0.9, actor_lr=3e-4, critic_lr=1e-3,
    policy_epochs=4, ent_coef_start=0.03, ent_coef_end=0.03, anneal_lr=False, torch_threads=1, seed=0,
)


def control_market(alpha: float, seed: int) -> MarketTensors:
    """10 trading days of the embedded synthetic market with a planted momentum signal of strength `alpha`."""
    return synthetic_market_tensors(days=TRAIN_DAYS + TEST_DAYS, alpha=alpha, seed=seed, source="market")


def train_control_agent(market: MarketTensors) -> CLSTMPPO:
    """CLSTM-PPO trained with the controls' recipe on the training days only."""
    train_env = IntradayTradingEnv(market.subset(days=range(TRAIN_DAYS)), num_envs=64, config=INTRADAY)
    return CLSTMPPO(train_env, **CONTROL_HPARAMS).learn(CONTROL_STEPS)


def out_of_sample_pnl(market: MarketTensors, policy: Callable[[torch.Tensor], np.ndarray],
                      num_envs: int = 16) -> np.ndarray:
    """Net PnL (after all costs) of every (day, symbol) of the TEST days under `policy`, each walked once in time
    order by the env's evaluation mode."""
    test_days = market.subset(days=range(TRAIN_DAYS, TRAIN_DAYS + TEST_DAYS))
    env = IntradayTradingEnv(test_days, num_envs=num_envs, config=replace(INTRADAY, evaluation=True))
    obs, _ = env.reset(seed=123)
    pnl: dict[int, float] = {}
    while not bool(env.eval_finished):
        obs, _, term, trunc, info = env.step(torch.as_tensor(policy(obs)))
        for i in torch.nonzero(term | trunc).flatten().tolist():
            if int(info["episode_id"][i]) >= 0:
                pnl[int(info["episode_id"][i])] = float(info["pnl"][i])
    assert sorted(pnl) == list(range(TEST_DAYS * market.num_symbols)), "every (day, symbol) exactly once"
    return np.array([pnl[k] for k in sorted(pnl)])


def t_statistic(values: np.ndarray) -> float:
    """One-sample t statistic of the mean against 0 (0 when every value is equal to the mean)."""
    sd = values.std(ddof=1)
    return 0.0 if sd == 0 else float(values.mean() / (sd / np.sqrt(len(values))))
