"""Per-update training diagnostics and the episode metrics that pick the best_* checkpoints.

Episode metrics (computed on the raw, unscaled returns of the episodes that finished in one update):
- sharpe: mean / std of episode returns (per episode, not annualized; 0 when std is 0),
- win_rate: share of episodes with return > 0,
- profit_rate: gross profit / gross absolute P&L = sum(r > 0) / sum(|r|), in [0, 1] (0.5 = break-even mix),
- composite: 0.5 * tanh(sharpe) + 0.25 * (2 * win_rate - 1) + 0.25 * (2 * profit_rate - 1), in [-1, 1].
"""

from __future__ import annotations

import math
from typing import Any

import torch


def episode_metrics(returns: list[float]) -> dict[str, float]:
    """Metrics of a list of episode returns (see module docstring); empty list -> empty dict."""
    if not returns:
        return {}
    r = torch.tensor(returns, dtype=torch.float64)
    mean = float(r.mean())
    std = float(r.std(unbiased=False)) if len(returns) > 1 else 0.0
    sharpe = mean / std if std > 1e-12 else 0.0
    win_rate = float((r > 0).double().mean())
    gross = float(r.abs().sum())
    profit_rate = float(r.clamp(min=0).sum()) / gross if gross > 0 else 0.5
    composite = 0.5 * math.tanh(sharpe) + 0.25 * (2 * win_rate - 1) + 0.25 * (2 * profit_rate - 1)
    return {
        "mean_return": mean,
        "sharpe": sharpe,
        "win_rate": win_rate,
        "profit_rate": profit_rate,
        "composite": composite,
    }


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var(target - pred) / Var(target); nan when the target is constant."""
    var = float(target.var())
    return float("nan") if var == 0 else 1.0 - float((target - pred).var()) / var


def critic_vs_returns(values: torch.Tensor, mc_returns: torch.Tensor) -> dict[str, float]:
    """Critic mean/std against Monte-Carlo return mean/std and their correlation (is the critic calibrated?)."""
    v, g = values.flatten().double(), mc_returns.flatten().double()
    vs, gs = float(v.std()), float(g.std())
    corr = float(((v - v.mean()) * (g - g.mean())).mean() / (vs * gs)) if vs > 0 and gs > 0 else float("nan")
    return {
        "critic/value_mean": float(v.mean()),
        "critic/value_std": vs,
        "critic/mc_return_mean": float(g.mean()),
        "critic/mc_return_std": gs,
        "critic/value_mc_corr": corr,
    }


def update_scalars(
    losses: dict[str, float], initial_entropy: float | None, values: torch.Tensor, returns: torch.Tensor,
    mc_returns: torch.Tensor, metrics: dict[str, float],
) -> dict[str, float]:
    """The per-update diagnostics of one PPO update: losses, entropy against its first value, critic calibration
    and the metrics of the episodes that finished in the rollout (`episodes/...`)."""
    return {
        "losses/approx_kl": losses["kl"],
        "losses/clipfrac": losses["clipfrac"],
        "losses/entropy": losses["entropy"],
        "losses/entropy_pct_of_initial": 100.0 * losses["entropy"] / initial_entropy
        if initial_entropy else float("nan"),
        "losses/policy_loss": losses["pg"],
        "losses/value_loss": losses["vf"],
        "losses/policy_grad_norm": losses["pg_norm"],
        "losses/value_grad_norm": losses["vf_norm"],
        "losses/explained_variance": explained_variance(values, returns),
        **critic_vs_returns(values, mc_returns),
        **{f"episodes/{k}": v for k, v in metrics.items()},
    }


class ScalarLogger:
    """TensorBoard scalars when a log dir is given; always keeps the history as a list of dicts."""

    def __init__(self, log_dir: str | None) -> None:
        self.history: list[dict[str, Any]] = []
        self._writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir)

    def log(self, step: int, scalars: dict[str, Any]) -> None:
        self.history.append(dict(scalars))
        if self._writer is not None:
            for key, value in scalars.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
