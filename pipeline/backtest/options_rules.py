"""The options agent's baselines, and the one walk that scores any options policy day by day.

Every policy is walked through `OptionsTradingEnv` itself (evaluation mode: each day once, in order), so every
figure pays exactly what the env charges: option fills at the next snapshot's bid or ask, fees per contract and
settlement of what expires at intrinsic value. A day's figure is its net PnL in dollars (the book is flat at
every close). Baselines:

- `flat`: action 0 at every snapshot;
- `random`: uniform over the action set (a seeded numpy Generator);
- `short_straddle`: always `short_straddle_e0`, the at-the-money straddle of the nearest live expiry, sold at the
  first fill of the day and held to the close (the volatility risk premium's simple rule);
- `straddle_oracle`: the cost-aware options oracle. At the day's first decision it knows the day's last
  underlying price, so what the short and the long ATM straddle of the nearest expiry will earn through the env's
  fills, fees and settlement; it takes the better of them, or stays flat when neither earns. It bounds the
  once-a-day straddle decision and reads the future: it stays out of every gate.

The baselines need the multi-leg table (action set 91) whatever the agent's action set is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from pipeline.envs.options import MULTIPLIER, OptionsTradingConfig, OptionsTradingEnv
from pipeline.envs.options_actions import action_index
from pipeline.envs.options_chain import OptionChainTensors
from pipeline.envs.options_features import first_alive_expiry

FLAT = action_index("flat")
SHORT_STRADDLE = action_index("short_straddle_e0")
LONG_STRADDLE = action_index("long_straddle_e0")
BASELINE_ACTION_SET = 91
STRADDLE_ORACLE = "straddle_oracle"
OPTIONS_BASELINES = ("flat", "random", "short_straddle", STRADDLE_ORACLE)

Policy = Callable[[torch.Tensor, OptionsTradingEnv], Any]
"""(observation batch, env) -> one action per env."""


@dataclass(frozen=True)
class DayWalk:
    """A policy's days: net PnL and fees in dollars per day (in day order) and the share of flat decisions."""

    pnl: np.ndarray
    fees: np.ndarray
    flat_share: float


def walk(chain: OptionChainTensors, policy: Policy, config: OptionsTradingConfig | None = None) -> DayWalk:
    """Every day of `chain` walked once under `policy` (one env per day, evaluation mode)."""
    config = replace(config or OptionsTradingConfig(), evaluation=True)
    days = chain.shape[0]
    env = OptionsTradingEnv(chain, num_envs=days, config=config)
    obs, _ = env.reset(seed=0)
    pnl, fees = np.full(days, np.nan), np.zeros(days)
    decisions = flat = 0
    while not bool(env.eval_finished):
        active = ~env.episodes.idle
        episode = env.episodes.episode_id.clone()
        actions = torch.as_tensor(np.asarray(policy(obs, env))).long().reshape(days)
        decisions += int(active.sum())
        flat += int(((actions == FLAT) & active).sum())
        obs, _, terminated, _, info = env.step(actions)
        done = active & terminated
        np.add.at(fees, episode[active].numpy(), info["fees"][active].double().numpy())
        pnl[episode[done].numpy()] = info["equity"][done].double().numpy()  # liquidated: equity = net PnL
    if np.isnan(pnl).any():
        raise AssertionError(f"the walk left days {np.flatnonzero(np.isnan(pnl)).tolist()} unfinished")
    return DayWalk(pnl, fees, flat / max(decisions, 1))


def straddle_outcomes(chain: OptionChainTensors, config: OptionsTradingConfig | None = None) -> np.ndarray:
    """float [D, 2]: net dollars of the (short, long) ATM straddle of the nearest expiry, ordered at the first
    snapshot and held to the close, as the env fills, charges and settles them."""
    config = config or OptionsTradingConfig()
    d, s, _, _ = chain.shape
    days = torch.arange(d)
    front = first_alive_expiry(chain)[:, 1]  # the env resolves expiry offset 0 at the fill snapshot
    atm = (chain.strike[days, front] - chain.underlying[:, :1]).abs().argmin(-1)
    legs = (days, front, atm)

    def both(x: torch.Tensor, snap: int) -> torch.Tensor:
        return x[days, snap, front, atm].double().sum(-1)  # call + put

    fee = 2 * config.fee_per_contract
    settles = chain.expiry_days[days, s - 1, front] <= 0
    strike = chain.strike[legs].double()
    intrinsic = (chain.underlying[:, -1].double() - strike).abs()
    short_exit = torch.where(settles, intrinsic, both(chain.ask, s - 1))
    long_exit = torch.where(settles, intrinsic, both(chain.bid, s - 1))
    exit_fee = torch.where(settles, 0.0, fee)
    short = (both(chain.bid, 1) - short_exit) * MULTIPLIER - fee - exit_fee
    long = (long_exit - both(chain.ask, 1)) * MULTIPLIER - fee - exit_fee
    return torch.stack([short, long], -1).numpy()


def straddle_oracle_actions(chain: OptionChainTensors, config: OptionsTradingConfig | None = None) -> np.ndarray:
    """int64 [D]: each day's oracle action (short straddle, long straddle or flat; see the module docstring)."""
    outcomes = straddle_outcomes(chain, config)
    best = outcomes.argmax(-1)
    return np.where(outcomes.max(-1) > 0, np.where(best == 0, SHORT_STRADDLE, LONG_STRADDLE), FLAT)


def baseline_policies(chain: OptionChainTensors, seed: int = 0,
                      config: OptionsTradingConfig | None = None) -> dict[str, Policy]:
    """The OPTIONS_BASELINES as policies for `walk` on `chain` with the multi-leg table."""
    rng = np.random.default_rng(seed)
    oracle = torch.as_tensor(straddle_oracle_actions(chain, config))
    return {
        "flat": lambda obs, env: np.full(env.num_envs, FLAT),
        "random": lambda obs, env: rng.integers(0, env.action_dim, env.num_envs),
        "short_straddle": lambda obs, env: np.full(env.num_envs, SHORT_STRADDLE),
        STRADDLE_ORACLE: lambda obs, env: oracle[env.day].numpy(),
    }


def walk_baselines(chain: OptionChainTensors, seed: int = 0,
                   config: OptionsTradingConfig | None = None) -> dict[str, DayWalk]:
    """Every baseline walked on `chain` with the env's costs of `config` and the multi-leg table."""
    config = replace(config or OptionsTradingConfig(), action_set=BASELINE_ACTION_SET)
    return {name: walk(chain, policy, config) for name, policy in baseline_policies(chain, seed, config).items()}
