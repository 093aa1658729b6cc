"""The gymnasium entry point of `pipeline/OptionsTrading-v0`: one OptionsTradingEnv behind BatchedGymAdapter.

With no arguments it trades a small torch Black-Scholes chain (built once per process in milliseconds, no polars
needed); `market="synthetic"` uses the embedded synthetic market's option snapshots instead, `chain=` any
OptionChainTensors. Other keyword arguments override fields of OptionsTradingConfig (e.g. `action_set=91`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pipeline.envs.gym_adapter import BatchedGymAdapter, config_with_overrides
from pipeline.envs.options import OptionsTradingConfig, OptionsTradingEnv
from pipeline.envs.options_chain import OptionChainTensors, black_scholes_chain, synthetic_chain_tensors

MARKETS = ("black_scholes", "synthetic")


@lru_cache(maxsize=8)
def default_chain(market: str = "black_scholes", days: int = 2, seed: int = 0) -> OptionChainTensors:
    """The chain of `gymnasium.make` without `chain=` (cached: every make of one process shares it)."""
    if market == "black_scholes":
        return black_scholes_chain(days=days, seed=seed)
    if market == "synthetic":
        return synthetic_chain_tensors(days=days, seed=seed)
    raise ValueError(f"market={market!r} is not known; use one of {MARKETS} or pass chain=")


def make_options_gym(market: str = "black_scholes", days: int = 2, seed: int = 0,
                     chain: OptionChainTensors | None = None, config: OptionsTradingConfig | None = None,
                     **overrides: Any) -> BatchedGymAdapter:
    """A single-env gymnasium OptionsTrading (numpy in/out, CPU)."""
    cfg = config_with_overrides(OptionsTradingConfig, config, overrides)
    chain = (chain if chain is not None else default_chain(market, days, seed)).to("cpu")
    return BatchedGymAdapter(lambda: OptionsTradingEnv(chain, num_envs=1, config=cfg, device="cpu"))
