"""The batched environment protocol shared by the envs and the agents.

All state is tensors with leading dim `num_envs` on `device`. `step` auto-resets finished envs: the returned obs
of an env whose episode ended is the first obs of its next episode, and `info["final_obs"]` holds the last one
(valid in the rows of envs whose episode ended at that step). The trading envs return obs as a view into a
buffer that their next step overwrites: use it, or copy it, before stepping again.

`terminated` marks an episode end that nothing follows (the market closed the episode, a stop, or the end of
the data): no value is bootstrapped past it. `truncated` marks a cut that the market did not impose (a time
limit): the value of `info["final_obs"]` is.
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


@runtime_checkable
class ResumableEnv(BatchedEnv, Protocol):
    """A BatchedEnv whose whole mutable state (its random generators included) can be saved and restored, so a
    checkpoint resumes it mid-episode: after `load_state_dict(state)` the same actions give the same steps."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Copies of every mutable tensor; generator states as uint8 tensors."""
        ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a `state_dict` taken from an env built on the same data, config and num_envs."""
        ...


def substate(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of `state` under `prefix` (e.g. "episodes."), with the prefix removed."""
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
