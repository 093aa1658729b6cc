"""Preallocated on-device rollout storage and the observation window the agent keeps for 1-D observations."""

from __future__ import annotations

from dataclasses import dataclass

import torch


class ObsWindow:
    """The last T (normalized) observations of each env, (N, T, F); zeroed at each episode start.

    Trading envs already emit (T, F) windows: then this just passes them through.
    """

    def __init__(self, num_envs: int, obs_shape: tuple[int, ...], window: int, device: torch.device) -> None:
        self.rolling = len(obs_shape) == 1
        if len(obs_shape) not in (1, 2):
            raise ValueError(
                f"CLSTMPPO expects 1-D observations or (T, F) windows, got shape {obs_shape}; "
                "flatten the observation (gymnasium.wrappers.FlattenObservation)"
            )
        self.shape = (window, obs_shape[0]) if self.rolling else tuple(obs_shape)
        self.windows = torch.zeros((num_envs, *self.shape), device=device)

    def peek(self, obs: torch.Tensor, episode_start: torch.Tensor | None = None) -> torch.Tensor:
        """The window after adding `obs` (rows where `episode_start` is True forget the previous episode first),
        without storing it; used for info["final_obs"] and for the bootstrap value after a rollout."""
        if not self.rolling:
            return obs
        prev = self.windows
        if episode_start is not None:
            prev = prev * (~episode_start).to(prev.dtype).view(-1, 1, 1)
        return torch.cat([prev[:, 1:], obs.unsqueeze(1)], dim=1)

    def push(self, obs: torch.Tensor, episode_start: torch.Tensor | None = None) -> torch.Tensor:
        """Add this step's obs and return the window."""
        self.windows = self.peek(obs, episode_start)
        return self.windows


@dataclass
class RolloutBuffer:
    """(num_steps, num_envs, ...) tensors on device, allocated once and overwritten every update."""

    windows: torch.Tensor
    final_windows: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    episode_returns: torch.Tensor
    episode_lengths: torch.Tensor

    @classmethod
    def allocate(
        cls,
        num_steps: int,
        num_envs: int,
        window_shape: tuple[int, ...],
        action_dim: int,
        discrete: bool,
        device: torch.device,
    ) -> RolloutBuffer:
        def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros((num_steps, num_envs, *shape), dtype=dtype, device=device)

        return cls(
            windows=zeros(*window_shape),
            final_windows=zeros(*window_shape),
            actions=zeros(dtype=torch.int64) if discrete else zeros(action_dim),
            logprobs=zeros(),
            values=zeros(),
            rewards=zeros(),
            terminated=zeros(dtype=torch.bool),
            truncated=zeros(dtype=torch.bool),
            # Return/length of the episode that ended at (t, env), valid where terminated | truncated.
            episode_returns=zeros(),
            episode_lengths=zeros(),
        )

    def finished_episodes(self) -> tuple[list[float], list[int]]:
        """Returns and lengths of the episodes that ended in this rollout (one host transfer, after the loop)."""
        done = (self.terminated | self.truncated).cpu()
        returns = self.episode_returns.cpu()[done]
        lengths = self.episode_lengths.cpu()[done]
        return returns.tolist(), [int(x) for x in lengths.tolist()]
