"""The gymnasium entry point of `pipeline/OptionsTrading-v0`: one OptionsTradingEnv behind BatchedGymAdapter.

With no arguments it trades a small torch Black-Scholes chain (builds in milliseconds, no polars needed);
`market="synthetic"` uses the embedded synthetic market's option snapshots instead, and `chain=` any tensors.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from pipeline.envs.gym_adapter import BatchedGymAdapter
from pipeline.envs.options import OptionsTradingConfig, OptionsTradingEnv
from pipeline.envs.options_chain import OptionChainTensors, black_scholes_chain, synthetic_chain_tensors

MARKETS = ("black_scholes", "synthetic")


def make_options_gym(action_set: int = 31, market: str = "black_scholes", days: int = 2, seed: int = 0,
                     chain: OptionChainTensors | None = None, **config: Any) -> gym.Env:
    """A single-env gymnasium OptionsTrading (numpy in/out, CPU); extra kwargs go to OptionsTradingConfig."""
    if chain is None:
        if market == "black_scholes":
            chain = black_scholes_chain(days=days, seed=seed)
        elif market == "synthetic":
            chain = synthetic_chain_tensors(days=days, seed=seed)
        else:
            raise ValueError(f"market={market!r} is not known; use one of {MARKETS} or pass chain=")
    cfg = OptionsTradingConfig(action_set=action_set, **config)
    return BatchedGymAdapter(lambda: OptionsTradingEnv(chain, num_envs=1, config=cfg, device="cpu"))
