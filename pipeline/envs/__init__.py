"""Batched torch trading environments and their gymnasium registrations.

Importing this package registers `pipeline/IntradayTrading-v0`, `pipeline/PortfolioAllocation-v0` and
`pipeline/OptionsTrading-v0` by entry-point string, so no env module (nor polars) is imported until
`gymnasium.make` is called.
"""

from __future__ import annotations

import gymnasium as gym

from pipeline.envs.base import BatchedEnv, ResumableEnv

ENV_IDS: dict[str, str] = {
    "pipeline/IntradayTrading-v0": "pipeline.envs.gym_adapter:make_intraday_gym",
    "pipeline/PortfolioAllocation-v0": "pipeline.envs.gym_adapter:make_portfolio_gym",
    "pipeline/OptionsTrading-v0": "pipeline.envs.options_gym:make_options_gym",
}

for _env_id, _entry_point in ENV_IDS.items():
    # Re-importing (e.g. importlib.reload) must not warn about re-registration.
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=_entry_point)

__all__ = ["ENV_IDS", "BatchedEnv", "ResumableEnv"]
