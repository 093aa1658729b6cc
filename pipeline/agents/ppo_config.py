"""Every CLSTM-PPO hyperparameter in one dataclass, with what each one does, checked when it is built, and the
named presets (`PRESETS`) that pick them for a training budget."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PPOConfig:
    """Hyperparameters of CLSTM-PPO: `CLSTMPPO(env, config)`, or any of them as keywords, `CLSTMPPO(env, seed=1)`."""

    seed: int = 0
    """Seed for torch, numpy, random and the environment reset (rank r of a DDP run uses seed + r)."""
    device: str = "cpu"
    """Torch device for the network, buffers and (native) environments: "cpu", "cuda", "cuda:1", "auto"."""
    num_envs: int | None = None
    """Parallel environments. The env is the one home of this number: an env instance brings its own (None
    takes it; another number is an error), a gymnasium id is built as this many copies (None: 8). The agent's
    config then records the env's count."""
    num_steps: int = 128
    """Rollout length per environment per update; one update consumes num_steps * num_envs transitions."""
    window: int = 16
    """T, bars per observation window, for 1-D observations (the agent keeps the last T obs as its state).
    Windowed (T, F) observations from the trading envs use their own T."""
    hidden: int = 64
    """Width of the encoder MLP, of every LSTM and of the heads."""
    encoder_layers: int = 1
    """Number of Linear+Tanh layers of the per-timestep encoder."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda (bias/variance trade-off of the advantages)."""
    clip_eps: float = 0.10
    """PPO ratio clipping epsilon."""
    actor_lr: float = 1e-4
    """Adam learning rate of the actor (shared encoder + shared LSTM + actor trunk)."""
    critic_lr: float = 4e-4
    """Adam learning rate of the critic trunk (higher than the actor's: the critic must track a moving policy)."""
    anneal_lr: bool = True
    """Linearly anneal both learning rates over total_timesteps, down to 1e-3 of their start (the last update still
    moves the weights)."""
    policy_epochs: int = 1
    """Epochs over the rollout that update the actor (the critic is updated with it)."""
    extra_critic_epochs: int = 4
    """Additional critic-only epochs after the policy epochs."""
    num_minibatches: int = 4
    """Minibatches per epoch; split along the env axis x time so every sample keeps its whole obs window."""
    critic_warmup_rollouts: int = 1
    """Rollouts collected before PPO starts whose Monte-Carlo returns pre-train the critic (0: no warm-up)."""
    critic_warmup_epochs: int = 10
    """Epochs of critic regression on each warm-up rollout."""
    ent_coef_start: float = 0.02
    """Entropy bonus coefficient at the start of training."""
    ent_coef_end: float = 0.005
    """Entropy bonus coefficient at the end (linear decay in between)."""
    max_grad_norm: float = 0.5
    """Gradient-norm clip applied to the actor and to the critic separately."""
    normalize_advantages: bool = True
    """Normalize advantages per minibatch."""
    normalize_obs: bool = True
    """Running mean/var observation normalization (RunningNormalizer, on device)."""
    scale_rewards: bool = True
    """Divide rewards by the running std of the discounted return (RunningNormalizer)."""
    clip_obs: float = 10.0
    """Clip normalized observations to +-clip_obs."""
    clip_reward: float = 10.0
    """Clip scaled rewards to +-clip_reward."""
    init_log_std: float = -0.5
    """Initial log std of the Gaussian head (continuous actions)."""
    initial_action_probs: str | list = "env"
    """Initial action distribution of a discrete policy (the bias of its logits): "env" takes the env's own
    `initial_action_probs` where it has one (IntradayTrading: mostly HOLD) and is uniform otherwise; "uniform"; or
    one probability per action. Ignored for continuous actions and when a checkpoint's weights are loaded."""
    amp: bool = True
    """bf16 autocast of encoder and LSTMs on CUDA (log-probs and ratios stay fp32); ignored on CPU."""
    compile: bool = False
    """torch.compile the encoder and the heads (CUDA; first update pays the compile time)."""
    torch_threads: int | None = None
    """torch.set_num_threads for CPU runs, applied when learn() starts (None: leave torch's default). Loading a
    model to predict leaves the process's setting alone."""
    divergence_threshold: float = 1e6
    """A loss or gradient norm above this (or NaN/inf) raises TrainingDivergedError."""
    checkpoint_dir: str | None = None
    """Folder for latest/best_* checkpoints written during learn() (None: no checkpoints)."""
    checkpoint_every: int = 1
    """Write `latest` every this many updates."""
    min_episodes_for_best: int = 2
    """Episodes that must finish in an update (or in a validation run) before its metrics can set a best_*
    checkpoint."""
    early_stop_patience: int | None = None
    """Stop learn() after this many chances without a new best composite score (None: never). The unit is the
    update without a validation env, and the validation run (every validate_every updates) with one."""
    validate_every: int = 10
    """With a validation env (`CLSTMPPO(env, validation_env=...)`): updates between two validation runs of the
    deterministic policy; learn() also validates after its last update. Ignored without a validation env."""
    tensorboard_dir: str | None = None
    """TensorBoard log folder (None: no TensorBoard; diagnostics are still returned by learn())."""
    verbose: int = 0
    """1: print one line of diagnostics per update."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form metadata saved with checkpoints (e.g. the data window the model was trained on)."""

    def __post_init__(self) -> None:
        """Check each value against its annotation and range, once, wherever it came from (keywords, JSON)."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            hint = hints[f.name]
            options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
            allowed = tuple(typing.get_origin(a) or a for a in options)
            # bool is an int to isinstance; a flag where a count belongs (or the reverse) is a mistake.
            ok = isinstance(value, allowed) and (isinstance(value, bool) == (bool in allowed))
            if not ok and not (float in allowed and isinstance(value, int) and not isinstance(value, bool)):
                raise TypeError(f"CLSTM-PPO hyperparameter {f.name}={value!r} should be {f.type}")
        positive = ("num_steps", "window", "hidden", "encoder_layers", "num_minibatches", "checkpoint_every",
                    "policy_epochs", "validate_every")
        bad = [name for name in positive if getattr(self, name) < 1]
        if self.num_envs is not None and self.num_envs < 1:
            bad.append("num_envs")
        if not (0.0 < self.gamma <= 1.0 and 0.0 <= self.gae_lambda <= 1.0 and self.clip_eps > 0.0):
            bad.append("gamma/gae_lambda/clip_eps")
        probs = self.initial_action_probs
        if isinstance(probs, str) and probs not in ("env", "uniform"):
            raise ValueError(f'initial_action_probs={probs!r}: use "env", "uniform" or one probability per action')
        if isinstance(probs, list) and not all(isinstance(p, int | float) and p > 0 for p in probs):
            raise ValueError(f"initial_action_probs={probs!r}: every probability must be a number > 0")
        if bad:
            raise ValueError(f"CLSTM-PPO hyperparameter(s) {bad} out of range; counts must be >= 1, "
                             "0 < gamma <= 1, 0 <= gae_lambda <= 1 and clip_eps > 0")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> PPOConfig:
        """The config of preset `name` (see `PRESETS`) with `overrides` applied on top, e.g.
        `PPOConfig.preset("small_budget", seed=1, checkpoint_dir="ckpt")`."""
        if name not in PRESETS:
            raise ValueError(f"unknown CLSTM-PPO preset {name!r}; the presets are {sorted(PRESETS)}")
        return cls().replace(**{**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PPOConfig:
        """Build a config from a dict (a JSON config or a checkpoint's), rejecting unknown keys."""
        return cls().replace(**values)

    def replace(self, **overrides: Any) -> PPOConfig:
        """A copy with `overrides` applied; unknown names are rejected with the list of valid ones."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(
                f"unknown CLSTM-PPO hyperparameter(s) {unknown}; valid names are {sorted(known)}"
            )
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # Measured on CPU (409,600 steps, 64 envs, the intraday env's mostly-HOLD start): on the planted-signal market
    # of tests/trading_controls.py (alpha 0.25; 6 days to train, 4 out of sample) it earned +$665 per day-symbol
    # net of costs (t 5.53); through the training assets at the synthetic default alpha 0.15 (15 train days) +$249
    # on the 15 days after D (t 5.96). Constant LR and entropy 0.03 keep it exploring, and four policy epochs move
    # the policy within a budget of a few hundred updates. Learning rates 1e-3 / 3e-3 (from 3e-4 / 1e-3) since
    # docs/LEARNING.md rows 9-16: at 3e-4 it never traded at alpha 0.10 (409,600 steps) nor within 61,440 steps at
    # alpha 0.25; at 1e-3 it trades at alpha 0.10 (71% of the cost-aware oracle at 204,800 steps) and reached 96% at
    # alpha 0.25 in 122,880 steps; the controls (tests/test_learning*.py, test_assets_training_learns.py) pass.
    "small_budget": dict(
        num_steps=32, hidden=32, num_minibatches=8, gamma=0.95, gae_lambda=0.9, actor_lr=1e-3, critic_lr=3e-3,
        policy_epochs=4, ent_coef_start=0.03, ent_coef_end=0.03, anneal_lr=False,
    ),
    # The DESIGN recipe (the PPOConfig defaults): one policy epoch, small annealed LRs and a decaying entropy
    # bonus, meant for ~100M-step GPU runs. Not measured to learn here at that scale; measured NOT to learn on
    # small budgets (245k steps on the planted-signal intraday env, 295k on the options env: entropy stayed at
    # 99.98% of its start and the deterministic policy never traded; measured with a uniform starting policy, before
    # the intraday env's mostly-HOLD start, and not since).
    "gpu_long": dict(
        num_steps=128, hidden=64, num_minibatches=4, gamma=0.99, gae_lambda=0.95, actor_lr=1e-4, critic_lr=4e-4,
        policy_epochs=1, ent_coef_start=0.02, ent_coef_end=0.005, anneal_lr=True,
    ),
}
"""Named hyperparameter sets for `PPOConfig.preset`; each lists the same fields, so they read side by side."""


MEASURED_NUM_ENVS = 64
"""The env count the small_budget recipe was measured to learn with (its minibatch: 64 / 8 envs x 32 steps)."""


def preset_for_budget(total_timesteps: int, device: str) -> str:
    """The preset for a run of `total_timesteps` env steps on `device` ("cpu", "cuda", "cuda:1", "auto", ...).

    small_budget on every device and budget: it is the only recipe measured to learn (on CPU, a few hundred
    thousand steps), while gpu_long's small annealed steps were measured to leave the policy where it started at
    that scale and were never measured at their own (~100M steps on a GPU). Until they are, an accelerator run gets
    the measured recipe scaled to its batch (`scaled_to_batch`); gpu_long stays available by name.
    """
    if total_timesteps < 1:
        raise ValueError(f"total_timesteps must be >= 1; got {total_timesteps}")
    del device  # every device gets the measured recipe (see the docstring)
    return "small_budget"


def scaled_to_batch(preset: str, num_envs: int) -> dict[str, Any]:
    """The overrides that fit `preset` to `num_envs` parallel envs: small_budget keeps the minibatch it was
    measured with (MEASURED_NUM_ENVS / num_minibatches envs x num_steps) by raising num_minibatches in proportion
    to the envs, so a GPU run of 4,096 envs takes the same size of gradient step, 64 times as many per update.
    Nothing changes at or below the measured count, or for a count the scaled minibatches would not divide."""
    if preset != "small_budget" or num_envs <= MEASURED_NUM_ENVS or num_envs % MEASURED_NUM_ENVS:
        return {}
    return {"num_minibatches": PRESETS[preset]["num_minibatches"] * num_envs // MEASURED_NUM_ENVS}
