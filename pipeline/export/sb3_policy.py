"""An SB3 PPO baseline as a deployment graph: raw observations in, action probabilities and the greedy action out.

`DeployedSB3Policy` holds the VecNormalize statistics the baseline was trained with (`pipeline.agents.sb3_vecnorm`,
read from safetensors, never a pickle) as graph buffers and the actor half of SB3's `ActorCriticPolicy` (features
extractor, policy MLP, action head), so the graph computes what `BaselinePolicy.action_probs` does: VecNormalize's
`clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs)` in float64, cast to float32 (as SB3's
`preprocess_obs` does), then softmax of the action logits. The value head is left out: deployment only acts.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from pipeline.agents.sb3 import BaselinePolicy


class DeployedSB3Policy(nn.Module):
    """Raw observations [batch, *obs_shape] -> (action probabilities [batch, n_actions], argmax action [batch])."""

    algo = "sb3_ppo"

    def __init__(self, baseline: BaselinePolicy) -> None:
        if not isinstance(baseline.action_space, gym.spaces.Discrete):
            raise ValueError("the deployment export covers discrete-action policies (action probabilities); this "
                             f"baseline acts in {baseline.action_space} (SAC is the portfolio allocator, not exported)")
        super().__init__()
        self.obs_shape = tuple(baseline.observation_space.shape)
        self.n_actions = int(baseline.action_space.n)
        policy = baseline.model.policy
        self.features = copy.deepcopy(policy.pi_features_extractor)
        self.actor = copy.deepcopy(policy.mlp_extractor.policy_net)
        self.action_net = copy.deepcopy(policy.action_net)
        for part in (self.features, self.actor, self.action_net):
            part.to("cpu", torch.float32).eval().requires_grad_(False)
        stats = baseline.vec_normalize
        self.norm_obs = bool(stats.norm_obs)
        self.clip_obs, self.epsilon = float(stats.clip_obs), float(stats.epsilon)
        self.register_buffer("obs_mean", torch.as_tensor(stats.obs_rms.mean, dtype=torch.float64))
        self.register_buffer("obs_var", torch.as_tensor(stats.obs_rms.var, dtype=torch.float64))
        self.register_buffer("obs_count", torch.as_tensor(float(stats.obs_rms.count), dtype=torch.float64))

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """VecNormalize's frozen observation normalization, in float64, as float32."""
        if not self.norm_obs:
            return obs.to(torch.float32)
        normalized = (obs.to(torch.float64) - self.obs_mean) / torch.sqrt(self.obs_var + self.epsilon)
        return normalized.clamp(-self.clip_obs, self.clip_obs).to(torch.float32)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.action_net(self.actor(self.features(self.normalize(obs))))
        return torch.softmax(logits, dim=-1), logits.argmax(dim=-1)

    def normalizer_state(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The statistics (what `normalizer.safetensors` holds) and the settings (its metadata)."""
        tensors = {"obs_rms.mean": self.obs_mean, "obs_rms.var": self.obs_var, "obs_rms.count": self.obs_count}
        return tensors, {"normalize_obs": str(self.norm_obs).lower(), "clip_obs": repr(self.clip_obs),
                         "epsilon": repr(self.epsilon)}

    def normalization(self) -> dict[str, Any]:
        """How the graph normalizes (config.json's description)."""
        return {"inside_graph": self.norm_obs, "source": "SB3 VecNormalize statistics of the training window",
                "formula": f"clip((obs - obs_mean) / sqrt(obs_var + {self.epsilon:g}), -{self.clip_obs:g}, "
                           f"{self.clip_obs:g}), in float64, then float32"}
