"""CLSTMPPO: the cascaded-LSTM agent of `clstm_agent` plus its training loop, which reads top to bottom here.

`learn` alternates `collect_rollout` (env steps into preallocated buffers, no host sync) and `_update` (GAE,
critic warm-up or the PPO epochs of `ppo_update`, diagnostics, best_* bookkeeping, checkpoints). Host transfers
happen once per update, after the rollout.

Which policy is "best" (best_* checkpoints, `agent.best`, early stopping) is scored on the episodes that finished
in each update's rollout, or, given a `validation_env`, on the deterministic policy's walk over the held-out
episodes of that env every `validate_every` updates (`validation.evaluate_policy`).
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import torch

from pipeline.agents import checkpoints as ckpt
from pipeline.agents.clstm_agent import CLSTMAgent, RunState
from pipeline.agents.diagnostics import ScalarLogger, episode_metrics, update_scalars
from pipeline.agents.distributed import average_tensors, is_distributed
from pipeline.agents.gae import compute_gae
from pipeline.agents.network import distribution_stats, sample_actions
from pipeline.agents.normalize import RETURNS_KEY
from pipeline.agents.policy_eval import check_validation_env, evaluate_policy
from pipeline.agents.ppo_config import PPOConfig
from pipeline.agents.ppo_update import Schedule, critic_epochs, flat_windows, ppo_epochs, shared_features
from pipeline.agents.rollout import RolloutBuffer, RolloutState


class StopRequested:
    """SIGTERM flag; the handler only sets it, the loop saves and exits at a safe point."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.requested = True


class CLSTMPPO(CLSTMAgent):
    """Cascaded-LSTM PPO (SB3-style API): `CLSTMPPO(env, config=None, *, validation_env=None, **overrides)`,
    `learn`, `predict`, `save`, `CLSTMPPO.load`.

    `validation_env`: a native batched env in evaluation mode over held-out days (the same features and env
    config as `env`). With one, best_* checkpoints, `best` and early stopping follow its validation metrics
    (history rows of the updates that validated get `val_<metric>` keys), and validating changes nothing of the
    training run itself.
    """

    validation_env: Any = None

    def __init__(self, env: Any, config: PPOConfig | None = None, *, validation_env: Any = None,
                 **overrides: Any) -> None:
        super().__init__(env, config, **overrides)
        self.set_validation_env(validation_env)

    @classmethod
    def load(cls, path: str | os.PathLike, env: Any = None, *, validation_env: Any = None,
             **overrides: Any) -> Self:
        """`CLSTMAgent.load`, plus the validation env a resumed run keeps validating on."""
        agent = super().load(path, env, **overrides)
        agent.set_validation_env(validation_env)
        return agent

    def set_validation_env(self, env: Any) -> None:
        """Validate on `env` from now on (None: score training episodes); checked against the agent's spaces."""
        if env is not None:
            check_validation_env(env, self.obs_shape, self.action_dim, self.discrete)
        self.validation_env = env

    def learn(self, total_timesteps: int, reset_num_timesteps: bool = True,
              callback: Callable[[dict[str, Any]], None] | None = None) -> CLSTMPPO:
        """Train for `total_timesteps` env steps. With reset_num_timesteps=False they come on top of the steps
        already taken, and the LR/entropy schedules run to that sum (as SB3): a resumed run passes the steps it
        has left, `total - agent.num_timesteps`, and follows the straight run's schedules.

        `callback` gets each update's diagnostics row (the one appended to `history`) on rank 0, after that
        update's checkpoints are written: where a caller streams progress.

        SIGTERM during learn() writes `latest` to checkpoint_dir and exits with status 0; NaN or exploding
        losses raise TrainingDivergedError without touching existing checkpoints.
        """
        if self.env is None:
            raise ValueError("this agent has no environment; pass env= to CLSTMPPO.load(path, env=...) to train")
        if reset_num_timesteps:
            self.num_timesteps, self.num_updates, self.total_timesteps = 0, 0, int(total_timesteps)
        else:
            self.total_timesteps = self.num_timesteps + int(total_timesteps)
        cfg = self.config
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        source = "training_episodes" if self.validation_env is None else "validation"
        if source != self.best_source:
            # Scores on training episodes and on validation days are not comparable: the best starts over.
            self.best, self.updates_since_best, self.best_source = {}, 0, source
        if self.rollout_state is None:
            self.rollout_state = RolloutState.start(self.env, cfg.seed + self.rank, cfg.window, self.device)
        buf = RolloutBuffer.allocate(cfg.num_steps, self.env.num_envs, self.window_shape, self.action_dim,
                                     self.discrete, self.device)
        directory = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        logger = ScalarLogger(cfg.tensorboard_dir if self.rank == 0 else None)
        stop = StopRequested()
        previous_handler = signal.signal(signal.SIGTERM, stop)
        try:
            while self.num_timesteps < self.total_timesteps and not stop.requested:
                # A SIGTERM mid-rollout saves the state the rollout started from: weights and optimizers
                # have not moved since, and the partial rollout is collected again on resume.
                rollout_start = self._run_state()
                started = time.perf_counter()
                if not self.collect_rollout(buf, stop):
                    self._save_on_sigterm(directory, rollout_start)
                next_values = self._next_values(buf)
                self.num_timesteps += buf.rewards.numel() * self.world_size
                self._sync_normalizer()
                scalars = self._update(buf, next_values)
                if scalars is None:
                    continue
                scalars["charts/SPS"] = buf.rewards.numel() * self.world_size / (time.perf_counter() - started)
                metrics = self._selection_metrics(scalars)
                improved = [] if metrics is None else self._record_best(metrics)
                if directory is not None:
                    self._write_checkpoints(directory, improved, metrics or {})
                logger.log(self.num_timesteps, scalars)
                self.history.append(scalars)
                if callback is not None and self.rank == 0:
                    callback(scalars)
                if cfg.verbose and self.rank == 0:
                    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in scalars.items()), flush=True)
                if cfg.early_stop_patience is not None and self.updates_since_best >= cfg.early_stop_patience:
                    break
            if stop.requested:
                self._save_on_sigterm(directory, self._run_state())
        finally:
            signal.signal(signal.SIGTERM, previous_handler)
            logger.close()
        return self

    @torch.no_grad()
    def collect_rollout(self, buf: RolloutBuffer, stop: StopRequested) -> bool:
        """Fill `buf` with num_steps steps of every env, without any host sync; False if SIGTERM arrived."""
        st, policy, norm = self.rollout_state, self.policy, self.normalizer
        for t in range(buf.rewards.shape[0]):
            if stop.requested:
                return False
            windows = st.window.push(norm.normalize_obs(st.obs, update=True), st.episode_start)
            seq = policy.shared(windows)
            out = policy.actor_out(seq)
            action = sample_actions(out, policy.log_std, generator=self.generator)
            buf.windows[t], buf.actions[t], buf.values[t] = windows, action, policy.critic_out(seq)
            buf.logprobs[t] = distribution_stats(out, policy.log_std, action)[0]
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            done = terminated | truncated
            final = info.get("final_obs", next_obs).to(self.device)
            buf.final_windows[t] = st.window.peek(norm.normalize_obs(final, update=False))
            buf.episode_returns[t], buf.episode_lengths[t] = st.advance(next_obs.to(self.device), reward, done)
            buf.rewards[t] = norm.scale_reward(reward, done, update=True)
            buf.terminated[t], buf.truncated[t] = terminated, truncated
        return True

    @torch.no_grad()
    def _next_values(self, buf: RolloutBuffer) -> torch.Tensor:
        """V of the observation after each step: the next row's value, V(final obs) where an episode was
        truncated, and V(last obs) after the rollout (one host sync, to gather the truncated rows)."""
        st, policy = self.rollout_state, self.policy
        last = st.window.peek(self.normalizer.normalize_obs(st.obs, update=False), st.episode_start)
        next_values = torch.cat([buf.values[1:], policy.critic_out(policy.shared(last)).unsqueeze(0)])
        idx = buf.truncated.nonzero(as_tuple=True)
        if idx[0].numel():
            next_values[idx] = policy.critic_out(policy.shared(buf.final_windows[idx]))
        return next_values

    def _update(self, buf: RolloutBuffer, next_values: torch.Tensor) -> dict[str, Any] | None:
        """Critic warm-up (returns None) or one PPO update (returns its diagnostics)."""
        cfg = self.config
        _, mc_returns = compute_gae(buf.rewards, buf.values, next_values, buf.terminated, buf.truncated,
                                    cfg.gamma, 1.0)
        if not self.critic_warmed_up and cfg.critic_warmup_rollouts > 0:
            features = shared_features(self.policy, flat_windows(buf), buf.rewards.numel() // cfg.num_minibatches)
            critic_epochs(self.policy, self.optimizers.critic, features, mc_returns.reshape(-1), cfg,
                          cfg.critic_warmup_epochs, self.generator)
            # num_timesteps counts every rank's steps, and each rank collects one rollout per iteration.
            warmup_steps = cfg.critic_warmup_rollouts * buf.rewards.numel() * self.world_size
            self.critic_warmed_up = self.num_timesteps >= warmup_steps
            return None
        self.critic_warmed_up = True
        schedule = Schedule.at(cfg, self.num_timesteps, self.total_timesteps)
        schedule.apply(cfg, self.optimizers)
        advantages, returns = compute_gae(buf.rewards, buf.values, next_values, buf.terminated, buf.truncated,
                                          cfg.gamma, cfg.gae_lambda)
        losses = ppo_epochs(self.policy, self.optimizers, buf, advantages, returns, cfg, schedule.ent_coef,
                            self.generator)
        self.num_updates += 1
        if self.initial_entropy is None:
            self.initial_entropy = losses["entropy"]
        ep_returns, ep_lengths = buf.finished_episodes()
        metrics = episode_metrics(ep_returns)
        if metrics:
            metrics["episodes"] = len(ep_returns)
            metrics["mean_length"] = sum(ep_lengths) / len(ep_lengths)
        return {
            "global_step": self.num_timesteps,
            "update": self.num_updates,
            "charts/actor_learning_rate": self.optimizers.actor.param_groups[0]["lr"],
            "charts/critic_learning_rate": self.optimizers.critic.param_groups[0]["lr"],
            "charts/ent_coef": schedule.ent_coef,
            **update_scalars(losses, self.initial_entropy, buf.values, returns, mc_returns, metrics),
        }

    def _selection_metrics(self, scalars: dict[str, Any]) -> dict[str, float] | None:
        """The metrics that score this update for best_* and early stopping: its training episodes' metrics, or
        with a validation env the validation run's (added to `scalars` as val_*), None on updates that skip it."""
        if self.validation_env is None:
            return {k.removeprefix("episodes/"): v for k, v in scalars.items() if k.startswith("episodes/")}
        last = self.num_timesteps >= self.total_timesteps
        if self.num_updates % self.config.validate_every and not last:
            return None
        metrics = evaluate_policy(self, self.validation_env, seed=self.config.seed)
        scalars.update({f"val_{k}": v for k, v in metrics.items()})
        return metrics

    def _record_best(self, metrics: dict[str, float]) -> list[str]:
        """Record each metric that beat its best; early stopping counts the scored updates (every update, or
        every validation run) since the best composite."""
        improved = []
        if metrics and metrics.get("episodes", 0) >= self.config.min_episodes_for_best:
            for name in ("composite", "sharpe", "win_rate", "profit_rate"):
                if metrics[name] > self.best.get(name, -math.inf):
                    self.best[name] = metrics[name]
                    improved.append(name)
        self.updates_since_best = 0 if "composite" in improved else self.updates_since_best + 1
        return improved

    def _write_checkpoints(self, directory: Path, improved: list[str], metrics: dict[str, float]) -> None:
        """Write latest (every checkpoint_every updates) and best_<name> for each `improved` metric (rank 0 only)."""
        if self.rank != 0:
            return
        tensors, meta = self.checkpoint_payload()
        names = [f"best_{name}" for name in improved]
        if self.num_updates % self.config.checkpoint_every == 0:
            names.append("latest")
        # meta["best_source"] says what `metrics` (the ones that picked best_*) were scored on.
        for name in names:
            ckpt.write_checkpoint(directory / f"{name}{ckpt.SUFFIX}", tensors, {**meta, "metrics": metrics})

    def _save_on_sigterm(self, directory: Path | None, run_state: RunState) -> None:
        """Write `latest` from the weights now and `run_state`, then exit with status 0."""
        if self.rank == 0:
            tensors, meta = self.checkpoint_payload(run_state)
            path = ckpt.write_checkpoint((directory or Path("checkpoints")) / f"latest{ckpt.SUFFIX}", tensors, meta)
            print(f"SIGTERM: saved {path} at update {self.num_updates}; exiting", flush=True)
        raise SystemExit(0)

    def _sync_normalizer(self) -> None:
        """Keep per-rank normalizer statistics identical across DDP ranks (mean of each statistic)."""
        if not is_distributed():
            return
        state = {k: v.to(self.device) for k, v in self.normalizer.state_dict().items()}
        # Each rank's discounted returns belong to its own envs' episodes: shared statistics, not shared returns.
        average_tensors(v for k, v in state.items() if k != RETURNS_KEY)
        self.normalizer.load_state_dict(state)
