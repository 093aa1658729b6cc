"""The batched environment protocol shared by the envs and the agents.

All state is tensors with leading dim `num_envs` on `device`. `step` auto-resets finished envs: the returned obs
of an env whose episode ended is the first obs of its next episode, and `info["final_obs"]` holds the last one.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class BatchedEnv(Protocol):
    num_envs: int
    device: torch.device
    obs_shape: tuple[int, ...]
    # Discrete envs: action_dim is the number of actions and actions are int64 of shape (num_envs,).
    # Continuous envs: action_dim is the vector size and actions are float32 of shape (num_envs, action_dim).
    action_dim: int
    discrete: bool

    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]: ...

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Returns (obs float32 [N, *obs_shape], reward float32 [N], terminated bool [N], truncated bool [N], info)."""
        ...
