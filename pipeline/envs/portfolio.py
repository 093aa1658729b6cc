"""PortfolioAllocation: a batch of one-day multi-asset allocation episodes on minute bars, all state in tensors.

The agent sees bar t and returns an action vector that is mapped to target weights over the market's symbols
(plus cash, by default). The portfolio earns bar t -> t+1 on the weights it held, then rebalances to the
target at bar t+1's prices, paying half the spread plus `cost_bps` on the traded value. The session end
truncates the episode; there is no early termination.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pipeline.envs.costs import turnover_cost
from pipeline.envs.market_data import MarketTensors, synthetic_market_tensors


@dataclass(frozen=True)
class PortfolioConfig:
    """Parameters of PortfolioAllocation (gymnax style: plain values with defaults)."""

    window: int = 16
    """Bars per observation: obs is [window, symbols * market features + weights + time of day]."""
    cash_asset: bool = True
    """Add a riskless cash weight (last action entry); without it the weights cover the symbols only."""
    weight_map: str = "softmax"
    """How actions in [-1, 1] become weights: "softmax" (of scale * action) or "simplex" (Euclidean projection)."""
    softmax_scale: float = 4.0
    """Action multiplier before the softmax (higher allows more concentrated weights)."""
    cost_bps: float = 1.0
    """Fees and slippage per traded dollar, in basis points (on top of half the spread)."""
    return_scale: float = 100.0
    """Reward per unit of net portfolio return."""
    sharpe_weight: float = 0.1
    """Weight of the return over the episode's running return std (floored at `std_floor`)."""
    std_floor: float = 1e-4
    turnover_penalty: float = 0.01
    """Reward penalty per unit of turnover (sum of |weight changes|), beyond the costs already paid."""
    reward_clip: float = 10.0
    turbulence_threshold: float | None = None
    """Above this turbulence index at the observed bar the target is all cash (needs `cash_asset`)."""


def project_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of v onto the probability simplex (Duchi et al. 2008), batched."""
    k = v.shape[-1]
    u, _ = v.sort(dim=-1, descending=True)
    css = u.cumsum(dim=-1) - 1.0
    ranks = torch.arange(1, k + 1, device=v.device, dtype=v.dtype)
    rho = ((u - css / ranks) > 0).sum(dim=-1, keepdim=True)
    theta = css.gather(-1, rho - 1) / rho.to(v.dtype)
    return (v - theta).clamp(min=0.0)


class PortfolioAllocationEnv:
    """Batched PortfolioAllocation implementing `pipeline.envs.base.BatchedEnv` (continuous weights)."""

    discrete = False

    def __init__(
        self,
        market: MarketTensors | None = None,
        num_envs: int = 1,
        config: PortfolioConfig | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.config = config or PortfolioConfig()
        if self.config.weight_map not in ("softmax", "simplex"):
            raise ValueError(f"weight_map must be 'softmax' or 'simplex'; got {self.config.weight_map!r}")
        if self.config.turbulence_threshold is not None and not self.config.cash_asset:
            raise ValueError(
                "turbulence_threshold moves the portfolio to cash: set cash_asset=True or drop it"
            )
        market = market if market is not None else synthetic_market_tensors(days=4, alpha=0.1, seed=0)
        self.device = torch.device(device) if device is not None else market.device
        self.market = market.to(self.device)
        self.num_envs = int(num_envs)
        n_sym = market.num_symbols
        self.action_dim = n_sym + int(self.config.cash_asset)
        self.obs_shape = (self.config.window, n_sym * market.num_features + self.action_dim + 1)
        # Flat [day * minute] views: one gather per step.
        m = self.market
        self._mid = m.mid.reshape(-1, n_sym)
        self._half_spread = ((m.ask - m.bid) / (m.ask + m.bid)).reshape(-1, n_sym)
        self._features = m.features.reshape(m.num_days * m.num_minutes, -1)
        self._turbulence = m.turbulence.reshape(-1)
        self._window_offsets = torch.arange(-self.config.window + 1, 1, device=self.device)
        self._gen = torch.Generator(device=self.device)
        self._gen.seed()
        n = self.num_envs
        self.day = torch.zeros(n, dtype=torch.int64, device=self.device)
        self.minute = torch.zeros(n, dtype=torch.int64, device=self.device)
        self._last_minute = torch.ones(n, dtype=torch.int64, device=self.device)
        # Episodes start all in cash, or equally weighted without a cash asset.
        if self.config.cash_asset:
            self._initial_weights = torch.zeros(self.action_dim, device=self.device)
            self._initial_weights[-1] = 1.0
        else:
            self._initial_weights = torch.full((self.action_dim,), 1.0 / self.action_dim, device=self.device)
        self.weights = self._initial_weights.expand(n, -1).clone()
        # Per env: portfolio value, costs paid (in value units), sum and sum of squares of net returns, steps.
        self._fresh_stats = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0], device=self.device)
        self._stats = self._fresh_stats.expand(n, -1).clone()

    def target_weights(self, actions: torch.Tensor) -> torch.Tensor:
        """Map raw actions [N, action_dim] to weights on the simplex."""
        if self.config.weight_map == "softmax":
            return torch.softmax(actions * self.config.softmax_scale, dim=-1)
        return project_to_simplex(actions)

    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        if seed is not None:
            self._gen.manual_seed(int(seed))
        self._start_episodes(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return self._observe(self.weights), {}

    def _start_episodes(self, mask: torch.Tensor) -> None:
        day = torch.randint(self.market.num_days, (self.num_envs,), generator=self._gen, device=self.device)
        self.day = torch.where(mask, day, self.day)
        self.minute = self.minute.masked_fill(mask, 0)
        self._last_minute = self.market.session_minutes[self.day] - 1
        self.weights = torch.where(mask.unsqueeze(1), self._initial_weights, self.weights)
        self._stats = torch.where(mask.unsqueeze(1), self._fresh_stats, self._stats)

    def _observe(self, weights: torch.Tensor) -> torch.Tensor:
        """[N, window, F]: all symbols' features of the last `window` bars + current weights + time of day."""
        base = self.day * self.market.num_minutes
        rows = base.unsqueeze(1) + (self.minute.unsqueeze(1) + self._window_offsets).clamp(min=0)
        state = torch.cat([weights, (self.minute / self._last_minute).float().unsqueeze(1)], dim=1)
        return torch.cat(
            [self._features[rows], state.unsqueeze(1).expand(-1, self.config.window, -1)], dim=-1
        )

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Earn bar t -> t+1 on the held weights, rebalance to the action's weights at t+1; auto-resets.

        info (per env, before any reset): value (starts at 1), portfolio_return (net), turnover, costs
        (cumulative, in value units), weights (after rebalancing), day, final_obs.
        """
        cfg = self.config
        actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device).reshape(self.num_envs, -1)
        target = self.target_weights(actions)
        now = self.day * self.market.num_minutes + self.minute
        if cfg.turbulence_threshold is not None:
            risk_off = (self._turbulence[now] > cfg.turbulence_threshold).unsqueeze(1)
            target = torch.where(risk_off, self._initial_weights, target)
        asset_ret = self._mid[now + 1] / self._mid[now] - 1.0
        if cfg.cash_asset:
            asset_ret = torch.cat([asset_ret, torch.zeros_like(asset_ret[:, :1])], dim=1)
        gross = (self.weights * asset_ret).sum(dim=1)
        drifted = self.weights * (1.0 + asset_ret) / (1.0 + gross).unsqueeze(1)
        traded = (target - drifted).abs()
        if cfg.cash_asset:  # moving in and out of cash is paid on the risky leg only
            traded = traded[:, :-1]
        turnover = traded.sum(dim=1)
        cost = turnover_cost(traded, self._half_spread[now + 1], cfg.cost_bps).sum(dim=1)
        net = gross - cost - gross * cost  # (1 + gross)(1 - cost) - 1 without float32 cancellation
        value, costs_paid, ret_sum, ret_sq, steps = self._stats.unbind(dim=1)
        ret_sum, ret_sq, steps = ret_sum + net, ret_sq + net * net, steps + 1.0
        std = (ret_sq / steps - (ret_sum / steps) ** 2).clamp(min=cfg.std_floor**2).sqrt()
        reward = cfg.return_scale * net + cfg.sharpe_weight * net / std - cfg.turnover_penalty * turnover
        reward = reward.clamp(-cfg.reward_clip, cfg.reward_clip)
        costs_paid = costs_paid + value * (1.0 + gross) * cost
        value = value * (1.0 + net)
        self._stats = torch.stack([value, costs_paid, ret_sum, ret_sq, steps], dim=1)
        self.weights = target
        self.minute = self.minute + 1
        truncated = self.minute >= self._last_minute
        info: dict[str, Any] = {
            "value": value,
            "portfolio_return": net,
            "turnover": turnover,
            "costs": costs_paid,
            "weights": target,
            "day": self.day,
            "final_obs": self._observe(target),
        }
        self._start_episodes(truncated)
        return self._observe(self.weights), reward.float(), torch.zeros_like(truncated), truncated, info
