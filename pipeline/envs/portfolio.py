"""PortfolioAllocation: a batch of multi-asset allocation episodes on minute or daily bars, all state in tensors.

The agent sees bar t and returns an action vector that is mapped to target weights over the market's symbols
(plus cash, by default). The portfolio earns bar t -> t+1 on the weights it held, then rebalances to the
target at bar t+1's prices, paying half the spread plus the fee and slippage on the traded value (IntradayTrading's
`CostModel`, per dollar at the bar's mid: `CostModel.bps_of_notional`). A symbol that is not tradable at bar t+1
(`market.tradable`, False before its first real quote) is not traded: it keeps its drifted weight, and the weight
the action gave it goes to cash (without a cash asset: to the tradable symbols).

An episode is `episode_days` trading days (one by default); the weights are carried from each close to the next
open, earning the overnight move, so on daily bars (one bar a day) the portfolio rebalances daily over months.
The episode's last bar ends it `terminated` (nothing follows, nothing is bootstrapped); there is no early
termination and `truncated` is always False.

Observation [window, F]: one row per bar, oldest first: every symbol's market features, the weights held at
that bar and its time of day; before the episode's first bar the rows repeat its first row. It is a view into a
buffer that the next step overwrites (see `rolling_window`). `evaluation=True` walks every block of
`episode_days` days once in time order (see `episodes.EpisodeSchedule`), with `eval_finished` and
`info["episode_id"]` as in IntradayTrading.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from pipeline.envs.base import substate
from pipeline.envs.costs import EQUITY_COSTS, CostModel, last_quotes, turnover_cost_rate
from pipeline.envs.episodes import EpisodeSchedule, ScheduledEnv
from pipeline.envs.rolling_window import RollingWindow
from pipeline.envs.tensors import MarketTensors, synthetic_market_tensors

ALL = slice(None)


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
    fee_per_share: float = EQUITY_COSTS.fee_per_unit
    """Commission in dollars per share traded (per traded dollar: this over the bar's mid)."""
    slippage_bps: float = EQUITY_COSTS.slippage_bps
    """Adverse move beyond the mid on every traded dollar, in basis points (on top of half the spread)."""
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
    episode_days: int = 1
    """Trading days per episode; the weights are carried from each close to the next open."""
    evaluation: bool = False
    """Walk every block of `episode_days` days once in time order instead of sampling episodes at random."""

    @property
    def costs(self) -> CostModel:
        """The cost model of a share trade under these settings."""
        return CostModel(fee_per_unit=self.fee_per_share, slippage_bps=self.slippage_bps)


def project_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of v onto the probability simplex (Duchi et al. 2008), batched."""
    k = v.shape[-1]
    u, _ = v.sort(dim=-1, descending=True)
    css = u.cumsum(dim=-1) - 1.0
    ranks = torch.arange(1, k + 1, device=v.device, dtype=v.dtype)
    rho = ((u - css / ranks) > 0).sum(dim=-1, keepdim=True)
    theta = css.gather(-1, rho - 1) / rho.to(v.dtype)
    return (v - theta).clamp(min=0.0)


class PortfolioAllocationEnv(ScheduledEnv):
    """Batched PortfolioAllocation implementing `pipeline.envs.base.ResumableEnv` (continuous weights)."""

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
        self._tradable = m.tradable.reshape(-1, n_sym)
        self._always_tradable = bool(m.tradable.all())  # then no order needs the tradable mask
        # Marked at the last quote where a bar has none (overnight, before a symbol's first quote of the day).
        self._mid, self._priced = last_quotes(m.mid.reshape(-1, n_sym), self._tradable)
        self._cost_rate = turnover_cost_rate(m.bid, m.ask, self.config.costs).reshape(-1, n_sym)
        self._features = m.features.reshape(m.num_days * m.num_minutes, -1)
        self._turbulence = m.turbulence.reshape(-1)
        self.episodes = EpisodeSchedule(
            m.session_minutes, 1, self.num_envs, self.config.episode_days, self.config.evaluation, self.device
        )
        n = self.num_envs
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
        self._window = RollingWindow(n, self.config.window, self.obs_shape[1], self.device)

    @property
    def minute(self) -> torch.Tensor:
        """Bar index (within its day) of each env's current bar."""
        return self.episodes.bar

    def target_weights(self, actions: torch.Tensor) -> torch.Tensor:
        """Map raw actions [N, action_dim] to weights on the simplex."""
        if self.config.weight_map == "softmax":
            return torch.softmax(actions * self.config.softmax_scale, dim=-1)
        return project_to_simplex(actions)

    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        everyone = self.episodes.restart(seed)
        self.weights = self._initial_weights.expand(self.num_envs, -1).clone()
        self._stats = self._fresh_stats.expand(self.num_envs, -1).clone()
        self._window.restart(everyone, partial(self._row_parts, self.weights))
        return self._window.obs, {"episode_id": self.episodes.episode_id}

    def _index(self) -> torch.Tensor:
        return self.episodes.day * self.market.num_minutes + self.episodes.bar

    def _row_parts(self, weights: torch.Tensor, env: torch.Tensor | slice = ALL) -> list[torch.Tensor]:
        """Observation rows of envs `env`: all symbols' features at the bar, the weights held, the time of day."""
        time_of_day = self.episodes.time_of_day()[env].unsqueeze(1)
        return [self._features.index_select(0, self._index()[env]), weights[env], time_of_day]

    def _fillable(self, target: torch.Tensor, drifted: torch.Tensor, tradable: torch.Tensor) -> torch.Tensor:
        """The target with untradable symbols kept at their drifted weight and the weight they were given moved
        to cash (without cash: spread over the tradable symbols; with none tradable, nothing trades)."""
        if self.config.cash_asset:
            tradable = torch.cat([tradable, torch.ones_like(tradable[:, :1])], dim=1)
            idle_mass = (target * ~tradable).sum(dim=1)
            target = torch.cat([target[:, :-1], (target[:, -1] + idle_mass).unsqueeze(1)], dim=1)
        kept = drifted * ~tradable
        free = target * tradable
        free_sum = free.sum(dim=1, keepdim=True)
        scaled = kept + free * (1.0 - kept.sum(dim=1, keepdim=True)) / free_sum.clamp(min=1e-12)
        return torch.where(free_sum > 0, scaled, drifted)

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Earn bar t -> t+1 on the held weights, rebalance to the action's weights at t+1; auto-resets.

        info (per env, before any reset): value (starts at 1), portfolio_return (net), turnover, costs
        (cumulative, in value units), weights (after rebalancing), day and minute (the bar reached),
        episode_id, final_obs (valid where the episode ended).
        """
        cfg, episodes = self.config, self.episodes
        idle = episodes.idle
        actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device).reshape(self.num_envs, -1)
        target = self.target_weights(actions)
        now = self._index()
        if cfg.turbulence_threshold is not None:
            risk_off = (self._turbulence[now] > cfg.turbulence_threshold).unsqueeze(1)
            target = torch.where(risk_off, self._initial_weights, target)
        _, episode_end = episodes.advance()
        nxt = self._index()
        # Row gathers through index_select: several times faster than advanced indexing on the CPU.
        mid_now, mid_next = self._mid.index_select(0, now), self._mid.index_select(0, nxt)
        asset_ret = torch.where(self._priced.index_select(0, now), mid_next / mid_now - 1.0, 0.0)
        if cfg.cash_asset:
            asset_ret = torch.cat([asset_ret, torch.zeros_like(asset_ret[:, :1])], dim=1)
        gross = (self.weights * asset_ret).sum(dim=1)
        drifted = self.weights * (1.0 + asset_ret) / (1.0 + gross).unsqueeze(1)
        if not self._always_tradable:
            target = self._fillable(target, drifted, self._tradable.index_select(0, nxt))
        target = torch.where(idle.unsqueeze(1), drifted, target)
        traded = (target - drifted).abs()
        if cfg.cash_asset:  # moving in and out of cash is paid on the risky leg only
            traded = traded[:, :-1]
        turnover = traded.sum(dim=1)
        cost = (traded * self._cost_rate.index_select(0, nxt)).sum(dim=1)
        net = gross - cost - gross * cost  # (1 + gross)(1 - cost) - 1 without float32 cancellation
        value, costs_paid, ret_sum, ret_sq, steps = self._stats.unbind(dim=1)
        ret_sum, ret_sq, steps = ret_sum + net, ret_sq + net * net, steps + 1.0
        std = (ret_sq / steps - (ret_sum / steps) ** 2).clamp(min=cfg.std_floor**2).sqrt()
        reward = cfg.return_scale * net + cfg.sharpe_weight * net / std - cfg.turnover_penalty * turnover
        reward = reward.clamp(-cfg.reward_clip, cfg.reward_clip).masked_fill(idle, 0.0)
        costs_paid = costs_paid + value * (1.0 + gross) * cost
        value = value * (1.0 + net)
        self._stats = torch.stack([value, costs_paid, ret_sum, ret_sq, steps], dim=1)
        self.weights = target
        terminated = episode_end | idle
        info: dict[str, Any] = {
            "value": value,
            "portfolio_return": net,
            "turnover": turnover,
            "costs": costs_paid,
            "weights": target,
            "day": episodes.day,
            "minute": episodes.bar,
            "episode_id": episodes.episode_id,
        }
        self._window.push(self._row_parts(target))
        episodes.start(terminated)
        restart = terminated & ~idle
        self.weights = torch.where(terminated.unsqueeze(1), self._initial_weights, self.weights)
        self._stats = torch.where(terminated.unsqueeze(1), self._fresh_stats, self._stats)
        self._window.restart(restart, partial(self._row_parts, self.weights), keep_final=restart)
        info["final_obs"] = self._window.final_obs
        return self._window.obs, reward.float(), terminated, torch.zeros_like(terminated), info

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every mutable tensor of the env (copies), the episode generator's state as uint8: enough to resume."""
        return {
            "weights": self.weights.clone(),
            "stats": self._stats.clone(),
            **{f"episodes.{k}": v for k, v in self.episodes.state_dict().items()},
            **{f"window.{k}": v for k, v in self._window.state_dict().items()},
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a `state_dict` taken from an env on the same market, config and num_envs."""
        self.weights = state["weights"].to(self.device).clone()
        self._stats = state["stats"].to(self.device).clone()
        self.episodes.load_state_dict(substate(state, "episodes."))
        self._window.load_state_dict(substate(state, "window."))
