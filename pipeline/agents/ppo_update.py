"""The update math of CLSTM-PPO: the clipped policy epoch, the critic regression epochs, the schedules.

Everything an update touches is passed in (network, optimizers, config, the agent's generator for minibatch
order), so these functions own no state; `CLSTMPPO` calls them once per rollout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pipeline.agents.distributed import average_gradients
from pipeline.agents.network import CLSTMActorCritic, distribution_stats
from pipeline.agents.ppo_config import PPOConfig
from pipeline.agents.rollout import RolloutBuffer


class TrainingDivergedError(RuntimeError):
    """A loss or gradient became NaN/inf or exploded; the last good checkpoint was left as it was."""


@dataclass
class Optimizers:
    """The two Adam optimizers: the actor's (shared layers + actor trunk) and the critic trunk's."""

    actor: torch.optim.Optimizer
    critic: torch.optim.Optimizer


@dataclass
class Schedule:
    """Learning-rate scale and entropy coefficient at one point of a run (linear in the progress)."""

    lr_scale: float
    ent_coef: float

    @classmethod
    def at(cls, cfg: PPOConfig, num_timesteps: int, total_timesteps: int) -> Schedule:
        """The schedule after `num_timesteps` of a run of `total_timesteps` (LR floored at 1e-3 of its start)."""
        progress = min(1.0, num_timesteps / max(1, total_timesteps))
        lr_scale = max(1.0 - progress, 1e-3) if cfg.anneal_lr else 1.0
        return cls(lr_scale, cfg.ent_coef_start + (cfg.ent_coef_end - cfg.ent_coef_start) * progress)

    def apply(self, cfg: PPOConfig, optimizers: Optimizers) -> None:
        """Set both optimizers' learning rates."""
        for opt, lr in ((optimizers.actor, cfg.actor_lr), (optimizers.critic, cfg.critic_lr)):
            for group in opt.param_groups:
                group["lr"] = lr * self.lr_scale


def check_finite(values: torch.Tensor, threshold: float, what: str) -> None:
    """Raise TrainingDivergedError if any value is NaN/inf or above `threshold` in magnitude."""
    worst = float(values.detach().abs().max())  # the one host sync of the check
    if not math.isfinite(worst) or worst > threshold:
        raise TrainingDivergedError(
            f"training diverged: {what} is {worst} (NaN/inf or above divergence_threshold={threshold}). No "
            "checkpoint was written after this point; the last good one is intact. Lower the learning rates, "
            "check the rewards/observations for NaN, or tighten max_grad_norm."
        )


def minibatches(total: int, count: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A random split of range(total) into `count` index sets (drawn from the agent's generator)."""
    perm = torch.randperm(total, device=generator.device, generator=generator)
    return list(perm.chunk(max(1, count)))


def shared_features(policy: CLSTMActorCritic, windows: torch.Tensor, chunk: int) -> torch.Tensor:
    """The shared sequence features of every window, (B, T, H), detached, computed `chunk` windows at a time.

    The critic reads the shared features detached and its epochs leave the shared layers alone, so the features
    of a rollout are the same through all of them: computed once here instead of once per critic minibatch."""
    with torch.no_grad():
        return torch.cat([policy.shared(part) for part in windows.split(max(1, chunk))])


def critic_epochs(
    policy: CLSTMActorCritic, optimizer: torch.optim.Optimizer, features: torch.Tensor, targets: torch.Tensor,
    cfg: PPOConfig, epochs: int, generator: torch.Generator,
) -> list[torch.Tensor]:
    """Regress the critic on `targets` for `epochs` epochs from the shared `features` of each sample
    (`shared_features`); returns each step's gradient norm."""
    norms = []
    params = optimizer.param_groups[0]["params"]
    for _ in range(epochs):
        for mb in minibatches(targets.numel(), cfg.num_minibatches, generator):
            loss = 0.5 * (policy.critic_out(features[mb]) - targets[mb]).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(params)
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm, foreach=True)
            check_finite(torch.stack([loss, norm]), cfg.divergence_threshold, "critic loss/grad norm")
            optimizer.step()
            norms.append(norm)
    return norms


def flat_windows(buf: RolloutBuffer) -> torch.Tensor:
    """The rollout's windows as one batch, (num_steps * num_envs, T, F)."""
    return buf.windows.reshape(-1, *buf.windows.shape[2:])


def ppo_epochs(
    policy: CLSTMActorCritic, optimizers: Optimizers, buf: RolloutBuffer, advantages: torch.Tensor,
    returns: torch.Tensor, cfg: PPOConfig, ent_coef: float, generator: torch.Generator,
) -> dict[str, float]:
    """The policy epochs (actor + critic) and the extra critic-only epochs; returns loss diagnostics."""
    windows = flat_windows(buf)
    actions = buf.actions.reshape(-1, *buf.actions.shape[2:])
    old_logp, adv, ret = buf.logprobs.reshape(-1), advantages.reshape(-1), returns.reshape(-1)
    sums: dict[str, list[torch.Tensor]] = {k: [] for k in
                                            ("kl", "clipfrac", "entropy", "pg", "vf", "pg_norm", "vf_norm")}
    actor_params = optimizers.actor.param_groups[0]["params"]
    critic_params = optimizers.critic.param_groups[0]["params"]
    for _ in range(cfg.policy_epochs):
        for mb in minibatches(ret.numel(), cfg.num_minibatches, generator):
            seq = policy.shared(windows[mb])
            logp, entropy = distribution_stats(policy.actor_out(seq), policy.log_std, actions[mb])
            log_ratio = logp - old_logp[mb]
            ratio = log_ratio.exp()
            a = adv[mb]
            if cfg.normalize_advantages and a.numel() > 1:
                a = (a - a.mean()) / (a.std() + 1e-8)
            pg_loss = torch.max(-a * ratio, -a * ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps)).mean()
            vf_loss = 0.5 * (policy.critic_out(seq) - ret[mb]).pow(2).mean()
            optimizers.actor.zero_grad(set_to_none=True)
            optimizers.critic.zero_grad(set_to_none=True)
            # The critic reads detached features, so one backward gives each optimizer only its own gradients.
            (pg_loss - ent_coef * entropy.mean() + vf_loss).backward()
            average_gradients(actor_params)
            average_gradients(critic_params)
            pg_norm = torch.nn.utils.clip_grad_norm_(actor_params, cfg.max_grad_norm, foreach=True)
            vf_norm = torch.nn.utils.clip_grad_norm_(critic_params, cfg.max_grad_norm, foreach=True)
            check_finite(torch.stack([pg_loss, vf_loss, pg_norm, vf_norm]), cfg.divergence_threshold,
                         "policy/value loss or grad norm")
            optimizers.actor.step()
            optimizers.critic.step()
            with torch.no_grad():
                sums["kl"].append(((ratio - 1) - log_ratio).mean())
                sums["clipfrac"].append(((ratio - 1).abs() > cfg.clip_eps).float().mean())
                sums["entropy"].append(entropy.mean())
                sums["pg"].append(pg_loss.detach())
                sums["vf"].append(vf_loss.detach())
                sums["pg_norm"].append(pg_norm)
                sums["vf_norm"].append(vf_norm)
    if cfg.extra_critic_epochs:
        features = shared_features(policy, windows, ret.numel() // max(1, cfg.num_minibatches))
        sums["vf_norm"] += critic_epochs(policy, optimizers.critic, features, ret, cfg, cfg.extra_critic_epochs,
                                         generator)
    return {k: float(torch.stack(v).float().mean()) for k, v in sums.items() if v}
