"""The registered gymnasium ids: `gymnasium.make(id)` with no arguments, `check_env`, config overrides, SB3."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import pipeline.envs  # noqa: F401  (registers the ids)
from pipeline.envs.gym_adapter import BatchedGymAdapter, default_market, make_intraday_gym
from pipeline.envs.intraday import IntradayTradingEnv

ENV_IDS = ["pipeline/IntradayTrading-v0", "pipeline/PortfolioAllocation-v0", "pipeline/OptionsTrading-v0"]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_registered_env_passes_gymnasium_check_env_without_warnings(env_id: str) -> None:
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker reports problems as warnings
        check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_evaluation_walk_over_multi_day_episodes_passes_check_env(env_id: str) -> None:
    env = gym.make(env_id, evaluation=True, episode_days=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)
    _, info = env.reset(seed=0)
    assert info["episode_id"] == 0  # the walk starts at its first episode


def test_episode_through_the_adapter_ends_with_final_obs_and_realized_pnl() -> None:
    env = gym.make("pipeline/IntradayTrading-v0", loss_cut=None, profit_lock=None, trade_size=10.0)
    obs, _ = env.reset(seed=0)
    steps, done = 0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(1)  # stay long all day
        steps, done = steps + 1, terminated or truncated
    assert terminated and not truncated and steps == 389  # the close ends the episode: nothing follows
    assert obs[-1, -1] == 1.0  # the final obs (time of day at the close), not the next episode's first
    assert info["position"] == 0.0 and info["fills"] == 2 and isinstance(info["pnl"], float)
    assert info["pnl"] == pytest.approx(info["cash"])


def test_make_rejects_unknown_config_fields_with_the_valid_ones() -> None:
    with pytest.raises(TypeError, match="trade_size"):
        make_intraday_gym(trade_sise=50)


def test_adapter_needs_a_single_env_factory() -> None:
    with pytest.raises(ValueError, match="num_envs=1"):
        BatchedGymAdapter(lambda: IntradayTradingEnv(default_market(), num_envs=2))


def test_adapter_runs_under_sb3_dummy_vec_env() -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv

    vec = DummyVecEnv([lambda: gym.make("pipeline/PortfolioAllocation-v0")] * 3)
    obs = vec.reset()
    for _ in range(5):
        obs, rewards, dones, infos = vec.step(np.zeros((3, 4), dtype=np.float32))
    assert obs.shape == (3, *vec.observation_space.shape) and rewards.shape == (3,) and not dones.any()
    # Zero actions hold equal weights: after the first step only the drift is rebalanced.
    assert all(info["turnover"] < 0.01 and np.allclose(info["weights"], 0.25) for info in infos)
