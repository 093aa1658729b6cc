"""The CLSTM-PPO training loop: rollout into preallocated buffers, GAE, critic warm-up, PPO and critic epochs,
diagnostics, checkpoints, early stopping, SIGTERM and divergence handling.

The rollout loop never syncs with the host (no .item()/.cpu()/bool(tensor)); host transfers happen once per
update, after the loop.
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pipeline.agents import checkpoints as ckpt
from pipeline.agents.diagnostics import ScalarLogger, critic_vs_returns, episode_metrics, explained_variance
from pipeline.agents.distributed import average_gradients, average_tensors, is_distributed
from pipeline.agents.gae import compute_gae
from pipeline.agents.network import distribution_stats, sample_actions
from pipeline.agents.rollout import ObsWindow, RolloutBuffer
from pipeline.envs.normalize import RETURNS_KEY

if TYPE_CHECKING:
    from pipeline.agents.clstm_ppo import CLSTMPPO


class _StopRequested:
    """SIGTERM flag; the handler only sets it, the loop saves and exits at a safe point."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.requested = True


def _normalize_obs(agent: CLSTMPPO, obs: torch.Tensor, update: bool) -> torch.Tensor:
    if agent.normalizer is None or not agent.config.normalize_obs:
        return obs
    return agent.normalizer.normalize_obs(obs, update=update)


def _init_rollout_state(agent: CLSTMPPO) -> dict[str, Any]:
    env, n = agent.env, agent.env.num_envs
    obs, _ = env.reset(seed=agent.config.seed + agent.rank)
    return {
        "obs": obs.to(agent.device),
        "episode_start": torch.ones(n, dtype=torch.bool, device=agent.device),
        "window": ObsWindow(n, agent.obs_shape, agent.config.window, agent.device),
        "ep_return": torch.zeros(n, device=agent.device),
        "ep_length": torch.zeros(n, device=agent.device),
    }


@torch.no_grad()
def collect_rollout(agent: CLSTMPPO, buf: RolloutBuffer, stop: _StopRequested) -> torch.Tensor | None:
    """Fill `buf`; returns next_values (num_steps, num_envs), or None if SIGTERM arrived mid-rollout."""
    if not rollout_steps(agent, buf, stop):
        return None
    st, policy, window = agent._rollout_state, agent.policy, agent._rollout_state["window"]
    last = window.peek(_normalize_obs(agent, st["obs"], False), st["episode_start"])
    next_values = torch.cat([buf.values[1:], policy.critic_out(policy.shared(last)).unsqueeze(0)])
    # Truncated episodes bootstrap from V(final obs); one host sync here, after the loop, to gather them.
    idx = buf.truncated.nonzero(as_tuple=True)
    if idx[0].numel():
        final_values = policy.critic_out(policy.shared(buf.final_windows[idx]))
        next_values[idx] = final_values
    return next_values


@torch.no_grad()
def rollout_steps(agent: CLSTMPPO, buf: RolloutBuffer, stop: _StopRequested) -> bool:
    """The env/policy loop of a rollout: fills `buf` without any host sync; False if SIGTERM arrived."""
    st, policy, env = agent._rollout_state, agent.policy, agent.env
    norm, scale = agent.normalizer, agent.config.scale_rewards and agent.normalizer is not None
    window: ObsWindow = st["window"]
    for t in range(buf.rewards.shape[0]):
        if stop.requested:
            return False
        windows = window.push(_normalize_obs(agent, st["obs"], True), st["episode_start"])
        seq = policy.shared(windows)
        out = policy.actor_out(seq)
        action = sample_actions(out, policy.log_std, generator=agent.generator)
        logp, _ = distribution_stats(out, policy.log_std, action)
        buf.windows[t] = windows
        buf.actions[t] = action
        buf.logprobs[t] = logp
        buf.values[t] = policy.critic_out(seq)
        next_obs, reward, terminated, truncated, info = env.step(action)
        done = terminated | truncated
        st["ep_return"] += reward
        st["ep_length"] += 1
        buf.episode_returns[t] = st["ep_return"]
        buf.episode_lengths[t] = st["ep_length"]
        keep = (~done).to(reward.dtype)
        st["ep_return"] *= keep
        st["ep_length"] *= keep
        final = info.get("final_obs", next_obs)
        buf.final_windows[t] = window.peek(_normalize_obs(agent, final.to(agent.device), False))
        buf.rewards[t] = norm.scale_reward(reward, done, update=True) if scale else reward
        buf.terminated[t] = terminated
        buf.truncated[t] = truncated
        st["obs"], st["episode_start"] = next_obs.to(agent.device), done
    return True


def _check_finite(values: torch.Tensor, threshold: float, what: str) -> None:
    worst = float(values.detach().abs().max())  # the one host sync of the check
    if not math.isfinite(worst) or worst > threshold:
        raise _diverged(f"{what} is {worst} (NaN/inf or above divergence_threshold={threshold})")


def _diverged(message: str) -> Exception:
    from pipeline.agents.clstm_ppo import TrainingDivergedError

    return TrainingDivergedError(
        f"training diverged: {message}. No checkpoint was written after this point; the last good one is "
        "intact. Lower the learning rates, check the rewards/observations for NaN, or tighten max_grad_norm."
    )


def _minibatches(agent: CLSTMPPO, total: int) -> list[torch.Tensor]:
    perm = torch.randperm(total, device=agent.device, generator=agent.generator)
    return list(perm.chunk(max(1, agent.config.num_minibatches)))


def _critic_step(agent: CLSTMPPO, windows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        seq = agent.policy.shared(windows)
    loss = 0.5 * (agent.policy.critic_out(seq) - targets).pow(2).mean()
    agent.critic_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(agent.policy.critic_parameters())
    norm = torch.nn.utils.clip_grad_norm_(agent.policy.critic_parameters(), agent.config.max_grad_norm)
    _check_finite(torch.stack([loss, norm]), agent.config.divergence_threshold, "critic loss/grad norm")
    agent.critic_optimizer.step()
    return norm


def ppo_update(
    agent: CLSTMPPO, buf: RolloutBuffer, advantages: torch.Tensor, returns: torch.Tensor, ent_coef: float
) -> dict[str, float]:
    """One policy epoch (actor + critic) and the extra critic-only epochs; returns loss diagnostics."""
    cfg, policy = agent.config, agent.policy
    total = buf.rewards.numel()
    windows = buf.windows.reshape(total, *buf.windows.shape[2:])
    actions = buf.actions.reshape(total, *buf.actions.shape[2:])
    old_logp, adv, ret = buf.logprobs.reshape(-1), advantages.reshape(-1), returns.reshape(-1)
    sums: dict[str, list[torch.Tensor]] = {k: [] for k in
                                            ("kl", "clipfrac", "entropy", "pg", "vf", "pg_norm", "vf_norm")}
    for _ in range(cfg.policy_epochs):
        for mb in _minibatches(agent, total):
            seq = policy.shared(windows[mb])
            logp, entropy = distribution_stats(policy.actor_out(seq), policy.log_std, actions[mb])
            log_ratio = logp - old_logp[mb]
            ratio = log_ratio.exp()
            a = adv[mb]
            if cfg.normalize_advantages and a.numel() > 1:
                a = (a - a.mean()) / (a.std() + 1e-8)
            pg_loss = torch.max(-a * ratio, -a * ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps)).mean()
            vf_loss = 0.5 * (policy.critic_out(seq) - ret[mb]).pow(2).mean()
            agent.actor_optimizer.zero_grad(set_to_none=True)
            agent.critic_optimizer.zero_grad(set_to_none=True)
            # The critic reads detached features, so one backward gives each optimizer only its own gradients.
            (pg_loss - ent_coef * entropy.mean() + vf_loss).backward()
            average_gradients(policy.actor_parameters())
            average_gradients(policy.critic_parameters())
            pg_norm = torch.nn.utils.clip_grad_norm_(policy.actor_parameters(), cfg.max_grad_norm)
            vf_norm = torch.nn.utils.clip_grad_norm_(policy.critic_parameters(), cfg.max_grad_norm)
            _check_finite(torch.stack([pg_loss, vf_loss, pg_norm, vf_norm]), cfg.divergence_threshold,
                          "policy/value loss or grad norm")
            agent.actor_optimizer.step()
            agent.critic_optimizer.step()
            with torch.no_grad():
                sums["kl"].append(((ratio - 1) - log_ratio).mean())
                sums["clipfrac"].append(((ratio - 1).abs() > cfg.clip_eps).float().mean())
                sums["entropy"].append(entropy.mean())
                sums["pg"].append(pg_loss.detach())
                sums["vf"].append(vf_loss.detach())
                sums["pg_norm"].append(pg_norm)
                sums["vf_norm"].append(vf_norm)
    for _ in range(cfg.extra_critic_epochs):
        for mb in _minibatches(agent, total):
            sums["vf_norm"].append(_critic_step(agent, windows[mb], ret[mb]))
    return {k: float(torch.stack(v).float().mean()) for k, v in sums.items() if v}


def _critic_warmup(agent: CLSTMPPO, buf: RolloutBuffer, mc_returns: torch.Tensor) -> None:
    """Regress the critic on Monte-Carlo returns of the initial policy before any policy update."""
    total = buf.rewards.numel()
    windows = buf.windows.reshape(total, *buf.windows.shape[2:])
    targets = mc_returns.reshape(-1)
    for _ in range(agent.config.critic_warmup_epochs):
        for mb in _minibatches(agent, total):
            _critic_step(agent, windows[mb], targets[mb])


def _update_best(agent: CLSTMPPO, metrics: dict[str, float]) -> list[str]:
    """Record each episode metric that beat its best (early stopping counts updates since the best composite)."""
    improved = []
    if metrics and metrics.get("episodes", 0) >= agent.config.min_episodes_for_best:
        for name in ("composite", "sharpe", "win_rate", "profit_rate"):
            if metrics[name] > agent.best.get(name, -math.inf):
                agent.best[name] = metrics[name]
                improved.append(name)
    if "composite" in improved:
        agent.updates_since_best = 0
    else:
        agent.updates_since_best += 1
    return improved


def _save_checkpoints(agent: CLSTMPPO, metrics: dict[str, float], improved: list[str], directory: Path) -> None:
    """Write latest (every checkpoint_every updates) and best_<name> for each `improved` metric (rank 0 only)."""
    if agent.rank != 0:
        return
    tensors, meta = agent.checkpoint_payload()
    names = [f"best_{name}" for name in improved]
    if agent.num_updates % agent.config.checkpoint_every == 0:
        names.append("latest")
    for name in names:
        ckpt.write_checkpoint(directory / f"{name}{ckpt.SUFFIX}", tensors, {**meta, "metrics": metrics})


def _sync_normalizer(agent: CLSTMPPO) -> None:
    """Keep per-rank normalizer statistics identical across DDP ranks (mean of each statistic)."""
    if agent.normalizer is None or not is_distributed():
        return
    state = {k: v.to(agent.device) for k, v in agent.normalizer.state_dict().items()}
    # Each rank's discounted returns belong to its own envs' episodes: shared statistics, not shared returns.
    average_tensors(v for k, v in state.items() if k != RETURNS_KEY)
    agent.normalizer.load_state_dict(state)


def run_training(agent: CLSTMPPO) -> None:
    """Train `agent` until agent.total_timesteps (or early stopping / SIGTERM)."""
    cfg, env = agent.config, agent.env
    steps_per_update = cfg.num_steps * env.num_envs
    buf = RolloutBuffer.allocate(cfg.num_steps, env.num_envs, agent.window_shape, agent.action_dim,
                                 agent.discrete, agent.device)
    if agent._rollout_state is None:
        agent._rollout_state = _init_rollout_state(agent)
    directory = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    logger = ScalarLogger(cfg.tensorboard_dir if agent.rank == 0 else None)
    stop = _StopRequested()
    previous_handler = signal.signal(signal.SIGTERM, stop)
    try:
        while agent.num_timesteps < agent.total_timesteps:
            started = time.perf_counter()
            next_values = collect_rollout(agent, buf, stop)
            if next_values is None:
                break
            agent.num_timesteps += steps_per_update * agent.world_size
            _sync_normalizer(agent)
            _, mc_returns = compute_gae(buf.rewards, buf.values, next_values, buf.terminated, buf.truncated,
                                        cfg.gamma, 1.0)
            if not agent.critic_warmed_up and cfg.critic_warmup_rollouts > 0:
                _critic_warmup(agent, buf, mc_returns)
                # num_timesteps counts every rank's steps, and each rank collects one rollout per iteration.
                warmup_steps = cfg.critic_warmup_rollouts * steps_per_update * agent.world_size
                agent.critic_warmed_up = agent.num_timesteps >= warmup_steps
                continue
            agent.critic_warmed_up = True
            progress = min(1.0, agent.num_timesteps / max(1, agent.total_timesteps))
            lr_scale = 1.0 - progress if cfg.anneal_lr else 1.0
            for opt, lr in ((agent.actor_optimizer, cfg.actor_lr), (agent.critic_optimizer, cfg.critic_lr)):
                for group in opt.param_groups:
                    group["lr"] = lr * max(lr_scale, 1e-3)
            ent_coef = cfg.ent_coef_start + (cfg.ent_coef_end - cfg.ent_coef_start) * progress
            advantages, returns = compute_gae(buf.rewards, buf.values, next_values, buf.terminated,
                                              buf.truncated, cfg.gamma, cfg.gae_lambda)
            losses = ppo_update(agent, buf, advantages, returns, ent_coef)
            agent.num_updates += 1
            if agent.initial_entropy is None:
                agent.initial_entropy = losses["entropy"]
            ep_returns, ep_lengths = buf.finished_episodes()
            metrics = episode_metrics(ep_returns)
            if metrics:
                metrics["episodes"] = len(ep_returns)
                metrics["mean_length"] = sum(ep_lengths) / len(ep_lengths)
            scalars: dict[str, Any] = {
                "global_step": agent.num_timesteps,
                "update": agent.num_updates,
                "charts/SPS": steps_per_update * agent.world_size / (time.perf_counter() - started),
                "charts/actor_learning_rate": agent.actor_optimizer.param_groups[0]["lr"],
                "charts/critic_learning_rate": agent.critic_optimizer.param_groups[0]["lr"],
                "charts/ent_coef": ent_coef,
                "losses/approx_kl": losses["kl"],
                "losses/clipfrac": losses["clipfrac"],
                "losses/entropy": losses["entropy"],
                "losses/entropy_pct_of_initial": 100.0 * losses["entropy"] / agent.initial_entropy
                if agent.initial_entropy else float("nan"),
                "losses/policy_loss": losses["pg"],
                "losses/value_loss": losses["vf"],
                "losses/policy_grad_norm": losses["pg_norm"],
                "losses/value_grad_norm": losses["vf_norm"],
                "losses/explained_variance": explained_variance(buf.values, returns),
                **critic_vs_returns(buf.values, mc_returns),
                **{f"episodes/{k}": v for k, v in metrics.items()},
            }
            improved = _update_best(agent, metrics)
            if directory is not None:
                _save_checkpoints(agent, metrics, improved, directory)
            logger.log(agent.num_timesteps, scalars)
            agent.history.append(scalars)
            if cfg.verbose and agent.rank == 0:
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in scalars.items()),
                      flush=True)
            if cfg.early_stop_patience is not None and agent.updates_since_best >= cfg.early_stop_patience:
                break
            if stop.requested:
                break
        if stop.requested:
            target = directory or Path("checkpoints")
            if agent.rank == 0:
                tensors, meta = agent.checkpoint_payload()
                path = ckpt.write_checkpoint(target / f"latest{ckpt.SUFFIX}", tensors, meta)
                print(f"SIGTERM: saved {path} at update {agent.num_updates}; exiting", flush=True)
            raise SystemExit(0)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        logger.close()
