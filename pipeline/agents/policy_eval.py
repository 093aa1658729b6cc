"""Validation of a CLSTM-PPO policy on held-out days: the deterministic policy walks every episode of an
evaluation-mode env exactly once, and the episodes' PnLs are scored with the metrics that pick best_* checkpoints
(`diagnostics.episode_metrics`).

Validation only looks: the observation normalizer is read, never updated, and every RNG (torch, numpy, python
and the agent's own generator) is put back as it was, so a run that validates trains exactly as one that does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pipeline.agents import checkpoints as ckpt
from pipeline.agents.diagnostics import episode_metrics


def final_pnl(info: dict[str, Any]) -> torch.Tensor:
    """The episode PnL at an episode's last step, per env: IntradayTradingEnv's info["pnl"] (dollars, after
    costs). Other envs report it under other names: pass `outcome=` to `evaluate_policy`."""
    if "pnl" not in info:
        raise KeyError(f"the validation env's info has no 'pnl' (keys: {sorted(info)}); pass evaluate_policy an "
                       "outcome= that reads the episode's result from the info of its last step")
    return info["pnl"]


def check_validation_env(env: Any, obs_shape: tuple[int, ...], action_dim: int, discrete: bool) -> None:
    """Raise ValueError unless `env` is a native batched env in evaluation mode that fits the agent's spaces."""
    if not getattr(getattr(env, "config", None), "evaluation", False) or not hasattr(env, "eval_finished"):
        raise ValueError(
            f"the validation env ({type(env).__name__}) is not in evaluation mode: it must walk each held-out "
            "episode once and then report eval_finished. Build it with evaluation=True in its config, e.g. "
            "IntradayTradingEnv(market, num_envs, IntradayConfig(evaluation=True))"
        )
    spaces = (tuple(env.obs_shape), int(env.action_dim), bool(env.discrete))
    if spaces != (tuple(obs_shape), action_dim, discrete):
        raise ValueError(f"the validation env's (obs_shape, action_dim, discrete) {spaces} differ from the "
                         f"training env's {(tuple(obs_shape), action_dim, discrete)}; build both on the same "
                         "features and env config")


def evaluate_policy(
    agent: Any, env: Any, seed: int = 0, outcome: Callable[[dict[str, Any]], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Walk `env` (evaluation mode) with `agent`'s deterministic policy until `env.eval_finished`.

    Each finished episode (info["episode_id"] >= 0) counts once, with `outcome(info)` at its last step (unset:
    the env's own `episode_outcome` where it has one, e.g. the options env's liquidated equity, else `final_pnl`).
    Returns `episode_metrics` of those outcomes (ordered by episode id) plus mean_pnl and episodes; {} if no
    episode finished.
    """
    check_validation_env(env, agent.obs_shape, agent.action_dim, agent.discrete)
    outcome = outcome or getattr(env, "episode_outcome", final_pnl)
    rng_tensors, rng_meta = ckpt.rng_to_flat()
    agent_rng = agent.generator.get_state()
    try:
        pnl = walk_outcomes(agent, env, seed, outcome)
    finally:
        ckpt.rng_from_flat(rng_tensors, rng_meta)
        agent.generator.set_state(agent_rng)
    outcomes = [pnl[k] for k in sorted(pnl)]
    metrics = episode_metrics(outcomes)
    if metrics:
        metrics |= {"mean_pnl": float(np.mean(outcomes)), "episodes": float(len(outcomes))}
    return metrics


def walk_outcomes(agent: Any, env: Any, seed: int, outcome: Callable[[dict[str, Any]], torch.Tensor]) -> dict[int, float]:
    """{episode id: outcome} of every episode of the walk (one host sync per step, to read the finished ones)."""
    obs, _ = env.reset(seed=seed)
    state, episode_start = None, np.ones(env.num_envs, dtype=bool)
    results: dict[int, float] = {}
    while not bool(env.eval_finished):
        actions, state = agent.predict(obs, state, episode_start, deterministic=True)
        obs, _, terminated, truncated, info = env.step(torch.as_tensor(actions, device=env.device))
        done = terminated | truncated
        ids, values = info["episode_id"][done].tolist(), outcome(info)[done].tolist()
        for episode, value in zip(ids, values, strict=True):
            if episode < 0:  # an env left idle at the end of the walk
                continue
            if episode in results:
                raise RuntimeError(f"episode {episode} of the validation walk finished twice; the env's evaluation "
                                   "mode must deal each episode once")
            results[episode] = float(value)
        episode_start = done.cpu().numpy()
    return results
