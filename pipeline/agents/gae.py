"""Generalized advantage estimation over a (num_steps, num_envs) rollout, with terminal/truncation handling."""

from __future__ import annotations

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (advantages, returns), each shaped like `rewards` = (num_steps, num_envs).

    `next_values[t]` is V of the observation that followed step t: `values[t + 1]` inside an episode, V of
    `info["final_obs"]` where the episode was truncated (time limit: bootstrap from the state we were cut off in),
    and anything where it terminated (a true terminal has no future; it is masked out here).
    The trace is cut at every episode end (terminated or truncated) because the next row of the buffer already
    belongs to the next episode (autoreset).
    """
    not_terminal = 1.0 - terminated.to(rewards.dtype)
    not_done = 1.0 - (terminated | truncated).to(rewards.dtype)
    deltas = rewards + gamma * not_terminal * next_values - values
    advantages = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = deltas[t] + gamma * gae_lambda * not_done[t] * running
        advantages[t] = running
    return advantages, advantages + values
