"""Gymnasium view of a batched env with num_envs=1 (numpy in and out, CPU), and the registered env factories.

`gymnasium.make("pipeline/IntradayTrading-v0")` calls `make_intraday_gym()`; keyword arguments of `make`
override fields of the env's config dataclass (e.g. `trade_size=50`), and `market=` swaps the default small
synthetic market for a `MarketTensors`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from functools import lru_cache
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from pipeline.envs.base import BatchedEnv
from pipeline.envs.intraday import IntradayConfig, IntradayTradingEnv
from pipeline.envs.portfolio import PortfolioAllocationEnv, PortfolioConfig
from pipeline.envs.tensors import MarketTensors, synthetic_market_tensors

# Finite observation bounds (gymnasium's checker warns on infinite ones); observations are clipped to them.
OBS_LIMIT = 1e6


class BatchedGymAdapter(gym.Env):
    """A single gymnasium env backed by a BatchedEnv with one env on the CPU.

    The batched env auto-resets; this adapter hides that: on termination or truncation it returns the episode's
    final observation (gymnasium semantics) and the next `reset()` starts a new episode.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, batched_env_factory: Callable[[], BatchedEnv]) -> None:
        self.batched_env = batched_env_factory()
        if self.batched_env.num_envs != 1:
            raise ValueError(
                f"BatchedGymAdapter needs a factory building num_envs=1, got {self.batched_env.num_envs}; "
                "use the batched env directly for many envs"
            )
        shape = tuple(self.batched_env.obs_shape)
        self.observation_space = gym.spaces.Box(-OBS_LIMIT, OBS_LIMIT, shape=shape, dtype=np.float32)
        if self.batched_env.discrete:
            self.action_space = gym.spaces.Discrete(self.batched_env.action_dim)
        else:
            self.action_space = gym.spaces.Box(
                -1.0, 1.0, shape=(self.batched_env.action_dim,), dtype=np.float32
            )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        obs, info = self.batched_env.reset(seed=seed)
        return self._obs(obs), _first_env(info)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        env = self.batched_env
        if env.discrete:
            actions = torch.as_tensor(np.asarray(action, dtype=np.int64).reshape(1))
        else:
            actions = torch.as_tensor(np.asarray(action, dtype=np.float32).reshape(1, env.action_dim))
        obs, reward, terminated, truncated, info = env.step(actions.to(env.device))
        done = bool(terminated[0]) or bool(truncated[0])
        if done:
            obs = info["final_obs"]
        return self._obs(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]), _first_env(info)

    @staticmethod
    def _obs(obs: torch.Tensor) -> np.ndarray:
        return np.clip(obs[0].detach().cpu().numpy(), -OBS_LIMIT, OBS_LIMIT).astype(np.float32, copy=False)


def _first_env(info: dict[str, Any]) -> dict[str, Any]:
    """Env 0's entries of a batched info dict as Python scalars / numpy arrays (final_obs dropped)."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key == "final_obs":
            continue
        if torch.is_tensor(value):
            value = value[0].detach().cpu()
            out[key] = value.item() if value.ndim == 0 else value.numpy()
        else:
            out[key] = value
    return out


@lru_cache(maxsize=1)
def default_market() -> MarketTensors:
    """The small synthetic market of `gymnasium.make(id)` without arguments (built once per process)."""
    return synthetic_market_tensors(days=4, alpha=0.1, seed=0, source="numpy")


def config_with_overrides(config_type: type, config: Any, overrides: dict[str, Any]) -> Any:
    """`config` (or the defaults) with `make` keyword overrides; unknown field names raise a TypeError."""
    known = {f.name for f in fields(config_type)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown {config_type.__name__} fields {unknown}; valid fields are {sorted(known)}")
    return replace(config or config_type(), **overrides)


def make_intraday_gym(
    market: MarketTensors | None = None, config: IntradayConfig | None = None, **overrides: Any
) -> BatchedGymAdapter:
    """Gymnasium IntradayTrading on `market` (default: a small synthetic market)."""
    cfg = config_with_overrides(IntradayConfig, config, overrides)
    mkt = (market if market is not None else default_market()).to("cpu")
    return BatchedGymAdapter(lambda: IntradayTradingEnv(mkt, num_envs=1, config=cfg, device="cpu"))


def make_portfolio_gym(
    market: MarketTensors | None = None, config: PortfolioConfig | None = None, **overrides: Any
) -> BatchedGymAdapter:
    """Gymnasium PortfolioAllocation on `market` (default: a small synthetic market)."""
    cfg = config_with_overrides(PortfolioConfig, config, overrides)
    mkt = (market if market is not None else default_market()).to("cpu")
    return BatchedGymAdapter(lambda: PortfolioAllocationEnv(mkt, num_envs=1, config=cfg, device="cpu"))
