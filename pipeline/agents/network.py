"""The cascaded-LSTM actor-critic: shared per-timestep encoder + LSTM, then separate actor and critic trunks.

Input is an observation window (B, T, F). Every LSTM runs as ONE nn.LSTM call over the whole window (cuDNN on
GPU), in rollout and in training alike, so there is no hidden state to carry between steps: the window is the
memory. The critic reads the shared features detached, so the critic loss (and its extra epochs) trains only the
critic trunk and the shared layers belong to the actor's optimizer.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn


class AttentionPool(nn.Module):
    """Softmax attention over time: a learned score per timestep, then the weighted sum of the sequence."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.score = nn.Linear(hidden, 1)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.score(seq).float(), dim=1).to(seq.dtype)
        return (weights * seq).sum(dim=1)


class Trunk(nn.Module):
    """LSTM over the shared sequence, attention pooling, and an MLP head."""

    def __init__(self, hidden: int, out_dim: int, out_gain: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.pool = AttentionPool(hidden)
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.Tanh(), nn.Linear(hidden, out_dim))
        nn.init.orthogonal_(self.head[-1].weight, gain=out_gain)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(seq)
        # Last step plus attention summary: the most recent bar matters most for a trading decision.
        return self.head(torch.cat([out[:, -1], self.pool(out)], dim=-1))


class CLSTMActorCritic(nn.Module):
    """Shared encoder + LSTM, actor trunk (logits or Gaussian mean) and critic trunk (value)."""

    def __init__(
        self,
        obs_features: int,
        action_dim: int,
        discrete: bool,
        hidden: int = 64,
        encoder_layers: int = 1,
        init_log_std: float = -0.5,
    ) -> None:
        super().__init__()
        self.discrete = discrete
        layers: list[nn.Module] = []
        width = obs_features
        for _ in range(encoder_layers):
            linear = nn.Linear(width, hidden)
            nn.init.orthogonal_(linear.weight, gain=math.sqrt(2))
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.Tanh()]
            width = hidden
        self.encoder = nn.Sequential(*layers)
        self.shared_lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.actor = Trunk(hidden, action_dim, out_gain=0.01)
        self.critic = Trunk(hidden, 1, out_gain=1.0)
        self.log_std = None if discrete else nn.Parameter(torch.full((action_dim,), float(init_log_std)))
        self.amp = False

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA when enabled; a no-op elsewhere."""
        if self.amp and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def shared(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, T, F) normalized windows -> (B, T, H) shared sequence features."""
        with self.autocast(windows.device):
            seq, _ = self.shared_lstm(self.encoder(windows))
        return seq

    def actor_out(self, seq: torch.Tensor) -> torch.Tensor:
        """Logits (discrete) or Gaussian mean (continuous), float32."""
        with self.autocast(seq.device):
            out = self.actor(seq)
        return out.float()

    def critic_out(self, seq: torch.Tensor) -> torch.Tensor:
        """State value (B,), float32; reads the shared features detached (see module docstring)."""
        with self.autocast(seq.device):
            out = self.critic(seq.detach())
        return out.float().squeeze(-1)

    def set_initial_action_probs(self, probs: list[float] | tuple[float, ...]) -> None:
        """Start a discrete policy at the distribution `probs` (normalized to sum to 1): the actor's output bias
        becomes log(probs). Its last layer's weights are small (gain 0.01), so the first logits are about this bias
        whatever the observation."""
        head = self.actor.head[-1]
        if not self.discrete or len(probs) != head.out_features or min(probs) <= 0:
            raise ValueError(f"initial action probabilities {list(probs)} need a discrete policy and one value > 0 "
                             f"per action ({head.out_features} actions, discrete={self.discrete})")
        p = torch.tensor(probs, dtype=torch.float64)
        with torch.no_grad():
            head.bias.copy_(torch.log(p / p.sum()).to(head.bias.dtype))

    def actor_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by the actor optimizer."""
        params = [*self.encoder.parameters(), *self.shared_lstm.parameters(), *self.actor.parameters()]
        return params + ([self.log_std] if self.log_std is not None else [])

    def critic_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by the critic optimizer."""
        return list(self.critic.parameters())


def distribution_stats(
    out: torch.Tensor, log_std: torch.Tensor | None, actions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log_prob of `actions`, entropy), both (B,) float32, for logits or a Gaussian mean."""
    if log_std is None:
        logp = torch.log_softmax(out, dim=-1)
        chosen = logp.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        return chosen, entropy
    log_std = log_std.float().expand_as(out)
    var = torch.exp(2 * log_std)
    logp = -((actions - out) ** 2) / (2 * var) - log_std - 0.5 * math.log(2 * math.pi)
    entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(-1)
    return logp.sum(-1), entropy


def sample_actions(
    out: torch.Tensor,
    log_std: torch.Tensor | None,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample without a host sync: Gumbel-max for logits, mean + std * noise for a Gaussian."""
    if log_std is None:
        if deterministic:
            return out.argmax(-1)
        uniform = torch.rand(out.shape, device=out.device, generator=generator).clamp_(1e-10, 1.0)
        return (out - torch.log(-torch.log(uniform))).argmax(-1)
    if deterministic:
        return out
    noise = torch.randn(out.shape, device=out.device, generator=generator)
    return out + torch.exp(log_std.float()) * noise
