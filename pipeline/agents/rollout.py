"""What a rollout is made of: the observation window, where the envs stand between rollouts, and the buffers.

`RolloutState` is the part of training that lives with the envs (last obs, episode starts, the window of the last
T obs, each env's running episode return and length). A checkpoint holds it next to the env's own state, so a
run stopped mid-episode resumes where it was instead of resetting its envs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


class ObsWindow:
    """The last T (normalized) observations of each env, (N, T, F); zeroed at each episode start.

    Trading envs already emit (T, F) windows: then this just passes them through and holds nothing.
    """

    def __init__(self, num_envs: int, obs_shape: tuple[int, ...], window: int, device: torch.device) -> None:
        self.rolling = len(obs_shape) == 1
        if len(obs_shape) not in (1, 2):
            raise ValueError(
                f"CLSTMPPO expects 1-D observations or (T, F) windows, got shape {obs_shape}; "
                "flatten the observation (gymnasium.wrappers.FlattenObservation)"
            )
        self.shape = (window, obs_shape[0]) if self.rolling else tuple(obs_shape)
        self.windows = torch.zeros((num_envs, *self.shape), device=device) if self.rolling else None

    def peek(self, obs: torch.Tensor, episode_start: torch.Tensor | None = None) -> torch.Tensor:
        """The window after adding `obs` (rows where `episode_start` is True forget the previous episode first),
        without storing it; used for info["final_obs"] and for the bootstrap value after a rollout."""
        if self.windows is None:
            return obs
        prev = self.windows
        if episode_start is not None:
            prev = prev * (~episode_start).to(prev.dtype).view(-1, 1, 1)
        return torch.cat([prev[:, 1:], obs.unsqueeze(1)], dim=1)

    def push(self, obs: torch.Tensor, episode_start: torch.Tensor | None = None) -> torch.Tensor:
        """Add this step's obs and return the window."""
        if self.windows is None:
            return obs
        self.windows = self.peek(obs, episode_start)
        return self.windows


@dataclass
class RolloutState:
    """Where the envs stand between two steps: what the next step of training starts from."""

    obs: torch.Tensor
    """The env's last observation (raw, before normalization), [N, *obs_shape]."""
    episode_start: torch.Tensor
    """True where `obs` is the first observation of an episode, [N]."""
    window: ObsWindow
    """The last T normalized observations (1-D observations only)."""
    episode_return: torch.Tensor
    """Raw reward summed over the episode so far, [N]."""
    episode_length: torch.Tensor
    """Steps of the episode so far, [N]."""

    @classmethod
    def start(cls, env: Any, seed: int, window: int, device: torch.device) -> RolloutState:
        """Reset `env` with `seed`: every env at the start of an episode."""
        obs, _ = env.reset(seed=seed)
        n = env.num_envs
        zeros = torch.zeros(n, device=device)
        return cls(obs.to(device), torch.ones(n, dtype=torch.bool, device=device),
                   ObsWindow(n, tuple(env.obs_shape), window, device), zeros, zeros.clone())

    def advance(
        self, next_obs: torch.Tensor, reward: torch.Tensor, done: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Move past one env step; returns each env's episode return and length including that step.

        Every field is replaced, never written in place, so a state_dict taken earlier stays what it was.
        """
        episode_return, episode_length = self.episode_return + reward, self.episode_length + 1
        keep = (~done).to(episode_return.dtype)
        self.obs, self.episode_start = next_obs, done
        self.episode_return, self.episode_length = episode_return * keep, episode_length * keep
        return episode_return, episode_length

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The state as tensors (copies: the caller may keep them while training goes on)."""
        state = {"obs": self.obs, "episode_start": self.episode_start, "episode_return": self.episode_return,
                 "episode_length": self.episode_length}
        if self.window.windows is not None:
            state["window"] = self.window.windows
        return {k: v.detach().clone() for k, v in state.items()}

    @classmethod
    def from_state_dict(
        cls, state: dict[str, torch.Tensor], obs_shape: tuple[int, ...], window: int, device: torch.device
    ) -> RolloutState:
        """The state `state_dict()` returned, on `device`."""
        obs = state["obs"].to(device)
        obs_window = ObsWindow(obs.shape[0], obs_shape, window, device)
        if obs_window.windows is not None:
            obs_window.windows = state["window"].to(device)
        return cls(obs, state["episode_start"].to(device), obs_window, state["episode_return"].to(device),
                   state["episode_length"].to(device))


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
