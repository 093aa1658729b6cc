"""CLSTM-PPO learns: (a) CartPole-v1 to a mean return >= 195; (b) with a planted momentum signal (alpha > 0) it
beats flat and buy-and-hold out of sample (later days than training) after costs on IntradayTrading; (c) on a
martingale (alpha = 0) it shows no significant out-of-sample edge."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.envs.intraday import LONG, IntradayConfig, IntradayTradingEnv
from pipeline.envs.market_data import MarketTensors, synthetic_market_tensors

TRAIN_DAYS, TEST_DAYS = 6, 4
# Whole-day episodes (no loss-cut/profit-lock) with the default fees, slippage and spread crossing.
INTRADAY = IntradayConfig(window=8, loss_cut=None, profit_lock=None)


def evaluate_cartpole(agent: CLSTMPPO, episodes: int = 8) -> float:
    """Mean return of one deterministic episode in each of `episodes` parallel CartPoles."""
    vec = gym.make_vec("CartPole-v1", num_envs=episodes, vectorization_mode="sync",
                       vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    obs, _ = vec.reset(seed=1000)
    state, starts = None, np.ones(episodes, dtype=bool)
    totals, finished = np.zeros(episodes), np.zeros(episodes, dtype=bool)
    while not finished.all():
        action, state = agent.predict(obs, state, starts)
        obs, reward, term, trunc, _ = vec.step(action)
        totals += reward * ~finished
        starts = term | trunc
        finished |= starts
    return float(totals.mean())


def test_solves_cartpole() -> None:
    agent = CLSTMPPO("CartPole-v1", num_envs=8, num_steps=64, hidden=32, window=4, actor_lr=1e-3,
                     critic_lr=3e-3, torch_threads=1, seed=0)
    agent.learn(20_480)
    assert evaluate_cartpole(agent) >= 195


def out_of_sample_pnl(market: MarketTensors, policy, num_envs: int = 64) -> np.ndarray:
    """Net PnL (after all costs) of the first episode of each (day, symbol) of the TEST days under `policy`."""
    env = IntradayTradingEnv(market.subset(days=range(TRAIN_DAYS, TRAIN_DAYS + TEST_DAYS)), num_envs=num_envs,
                             config=INTRADAY)
    obs, _ = env.reset(seed=123)
    pnl: dict[tuple[int, int], float] = {}
    finished = torch.zeros(num_envs, dtype=torch.bool)
    while not finished.all():
        obs, _, term, trunc, info = env.step(torch.as_tensor(policy(obs)))
        for i in torch.nonzero((term | trunc) & ~finished).flatten().tolist():
            pnl.setdefault((int(info["day"][i]), int(info["symbol"][i])), float(info["pnl"][i]))
        finished |= term | trunc
    return np.array([pnl[k] for k in sorted(pnl)])


def t_statistic(values: np.ndarray) -> float:
    """One-sample t statistic of the mean against 0 (0 when every value is equal to the mean)."""
    sd = values.std(ddof=1)
    return 0.0 if sd == 0 else float(values.mean() / (sd / np.sqrt(len(values))))


def test_planted_signal_beats_flat_and_buy_and_hold_out_of_sample() -> None:
    """Train on days 0-5 of an alpha=0.15 momentum market, judge the deterministic policy on days 6-9."""
    market = synthetic_market_tensors(days=TRAIN_DAYS + TEST_DAYS, alpha=0.15, seed=1, source="market")
    train_env = IntradayTradingEnv(market.subset(days=range(TRAIN_DAYS)), num_envs=64, config=INTRADAY)
    # More policy epochs, constant LR and entropy than the defaults: the CPU budget allows ~250k steps.
    agent = CLSTMPPO(train_env, num_steps=32, hidden=32, num_minibatches=8, gamma=0.95, gae_lambda=0.9,
                     actor_lr=3e-4, critic_lr=1e-3, policy_epochs=4, ent_coef_start=0.01, ent_coef_end=0.01,
                     anneal_lr=False, torch_threads=1, seed=0)
    agent.learn(245_760)
    pnl = out_of_sample_pnl(market, lambda obs: agent.predict(obs.numpy())[0])
    buy_and_hold = out_of_sample_pnl(market, lambda obs: np.full(obs.shape[0], LONG))
    assert len(pnl) >= 10 and len(buy_and_hold) == len(pnl)
    assert pnl.mean() > 0, f"no better than flat out of sample: mean PnL {pnl.mean():.2f} per day-symbol"
    assert pnl.mean() > buy_and_hold.mean(), f"{pnl.mean():.2f} vs buy-and-hold {buy_and_hold.mean():.2f}"
    assert t_statistic(pnl) > 1.83, f"edge not significant: t={t_statistic(pnl):.2f}, n={len(pnl)}"


def test_martingale_market_gives_no_significant_out_of_sample_edge() -> None:
    market = synthetic_market_tensors(days=TRAIN_DAYS + TEST_DAYS, alpha=0.0, seed=11, source="market")
    train_env = IntradayTradingEnv(market.subset(days=range(TRAIN_DAYS)), num_envs=64, config=INTRADAY)
    agent = CLSTMPPO(train_env, num_steps=32, hidden=32, num_minibatches=8, gamma=0.95, gae_lambda=0.9,
                     actor_lr=3e-4, critic_lr=1e-3, torch_threads=1, seed=0)
    agent.learn(40_960)
    pnl = out_of_sample_pnl(market, lambda obs: agent.predict(obs.numpy())[0])
    assert len(pnl) >= 10, "the evaluation should cover most (day, symbol) pairs of the test days"
    # One-sided test at 5% (t critical value for >= 9 degrees of freedom is <= 1.83).
    assert t_statistic(pnl) < 1.83, f"significant edge on a martingale: mean {pnl.mean():.2f}, n={len(pnl)}"
    buy_and_hold = out_of_sample_pnl(market, lambda obs: np.full(obs.shape[0], LONG))
    assert np.all(buy_and_hold != 0.0), "buy-and-hold pays the spread and fees, so it is never exactly 0"
