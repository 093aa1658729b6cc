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

from pipeline.envs.costs import fill_at_quote
from pipeline.envs.options import OptionsTradingConfig, OptionsTradingEnv
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
    snapshot and held to the close, as the env fills (`costs.fill_at_quote`), charges and settles them."""
    costs = (config or OptionsTradingConfig()).contract_costs
    d, s, _, _ = chain.shape
    days = torch.arange(d)
    front = first_alive_expiry(chain)[:, 1]  # the env resolves expiry offset 0 at the fill snapshot
    atm = (chain.strike[days, front] - chain.underlying[:, :1]).abs().argmin(-1)

    def quotes(snap: int) -> tuple[torch.Tensor, torch.Tensor]:
        return chain.bid[days, snap, front, atm].double(), chain.ask[days, snap, front, atm].double()  # [D, 2]

    settles = chain.expiry_days[days, s - 1, front] <= 0
    intrinsic = (chain.underlying[:, -1].double() - chain.strike[days, front, atm].double()).abs()
    outcomes = []
    for side in (-1.0, 1.0):  # short, long: one contract of the call and one of the put
        legs = torch.full((d, 2), side, dtype=torch.float64)
        opened = fill_at_quote(legs, *quotes(1), costs)
        closed = fill_at_quote(-legs, *quotes(s - 1), costs)
        # Contracts expiring at the close settle at intrinsic value (the straddle's is |S - K|), without a fill.
        settled = side * intrinsic * costs.multiplier
        at_close = torch.where(settles, settled, closed.cash_delta.sum(-1))
        outcomes.append(opened.cash_delta.sum(-1) + at_close)
    return torch.stack(outcomes, -1).numpy()


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
