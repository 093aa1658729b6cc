"""OptionsTrading: a batched torch env that trades option strategies on chain snapshots.

The agent observes snapshot k and picks a target strategy from the action table (pipeline/envs/options_actions.py).
Picking the strategy it already holds holds it; picking another closes every leg and opens the new ones. All
fills happen at snapshot k+1 (buy at the ask, sell at the bid, plus a per-contract fee; contracts are x100), so
no fill uses a price the agent saw. Positions are marked at snapshot k+1's mid; contracts whose expiry is reached
settle at intrinsic value. An episode is one trading day; at its last snapshot what is left is liquidated at
bid/ask and the episode terminates (nothing follows, so nothing is bootstrapped); `truncated` is always False.
Reward = (change of equity in dollars) * reward_scale, clipped. A strategy opens only if every leg is on the day's
grid (its strike and expiry offsets exist there) and `quoted` at the fill snapshot (a multi-leg order fills whole or
not at all).

`episode_days > 1` runs an episode over consecutive days: the book is liquidated at every close (each day has its
own contract grid) and the action seen at a close opens at the next day's first snapshot, on that day's grid,
around the spot the agent saw. `evaluation=True` walks every block of days once in time order (see
`episodes.EpisodeSchedule`), with `eval_finished` and `info["episode_id"]` as in IntradayTrading.

Observation: a window [T, F] of the last T snapshots, oldest first, one row per snapshot: the chain summary (spot
returns, ATM IV, term slope, skew, ATM spread, time of day, days to the front expiry), the chain's own
`features` columns if it has any, and the position state at that snapshot (net delta, gamma and vega, gross
contracts, unrealized PnL, current action, flat flag). Before the episode's first snapshot the rows repeat its
first row. It is a view into a buffer that the next step overwrites (see `rolling_window`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pipeline.envs.base import substate
from pipeline.envs.costs import EQUITY_COSTS, OPTION_COSTS, CostModel, fill_at_quote
from pipeline.envs.episodes import EpisodeSchedule, ScheduledEnv
from pipeline.envs.options_actions import MAX_LEGS, action_table
from pipeline.envs.options_chain import OptionChainTensors
from pipeline.envs.options_features import (
    MARKET_FEATURE_NAMES,
    chain_summary,
    contract_gamma_vega,
    first_alive_expiry,
)
from pipeline.envs.rolling_window import RollingWindow

MULTIPLIER = OPTION_COSTS.multiplier
ALL = slice(None)
STATE_FEATURE_NAMES = ("net_delta", "net_gamma_1pct", "net_vega_1pt", "gross_contracts", "unrealized_pnl",
                       "action", "flat")
FEATURE_NAMES = MARKET_FEATURE_NAMES + STATE_FEATURE_NAMES  # an observation row of a chain without `features`


@dataclass
class OptionsTradingConfig:
    """Env parameters (gymnax style: a dataclass with defaults)."""

    action_set: int = 31
    """31 = flat + single long calls/puts; 91 = also verticals, straddles, condors, flies, calendars..."""
    window: int = 16
    """Snapshots per observation window (T)."""
    fee_per_contract: float = OPTION_COSTS.fee_per_unit
    """Dollars per option contract traded (each side)."""
    fee_per_share: float = EQUITY_COSTS.fee_per_unit
    """Dollars per underlying share traded."""
    underlying_half_spread_bps: float = 1.0
    """Underlying trades cross this half-spread around the snapshot's underlying price."""
    reward_scale: float = 0.01
    """Reward per dollar of PnL (0.01: one reward unit per $100)."""
    reward_clip: float = 10.0
    """Rewards are clipped to [-reward_clip, reward_clip] after scaling."""
    episode_days: int = 1
    """Trading days per episode (the book is flat at every close)."""
    evaluation: bool = False
    """Walk every block of `episode_days` days once in time order instead of sampling days at random."""

    @property
    def contract_costs(self) -> CostModel:
        """The cost model of an option fill: crosses the quoted spread, no slippage beyond it."""
        return CostModel(self.fee_per_contract, slippage_bps=OPTION_COSTS.slippage_bps, multiplier=MULTIPLIER)

    @property
    def share_costs(self) -> CostModel:
        """The cost model of an underlying fill: crosses `underlying_half_spread_bps`, no slippage beyond it."""
        return CostModel(self.fee_per_share, slippage_bps=0.0)


def _gather_contract(x: torch.Tensor, day: torch.Tensor, snap: torch.Tensor, contract: torch.Tensor) -> torch.Tensor:
    """x [D, S, E*K*2] at (day[n], snap[n], contract[n, l]) -> [N, L]."""
    return x[day[:, None], snap[:, None], contract]


class OptionsTradingEnv(ScheduledEnv):
    """Batched options env (implements pipeline.envs.base.ResumableEnv); discrete actions, int64 [num_envs]."""

    discrete = True

    def __init__(self, chain: OptionChainTensors, num_envs: int = 1, config: OptionsTradingConfig | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.config = config or OptionsTradingConfig()
        self.strategies = action_table(self.config.action_set)
        self._contract_costs, self._share_costs = self.config.contract_costs, self.config.share_costs
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.action_dim = len(self.strategies)
        self.chain = chain.to(self.device)
        d, s, e, k = self.chain.shape
        self.n_days, self.n_snaps, self.n_exp, self.n_strikes = d, s, e, k
        flat = (d, s, e * k * 2)
        self._bid, self._ask = self.chain.bid.reshape(flat), self.chain.ask.reshape(flat)
        self._mid, self._delta = self.chain.mid.reshape(flat), self.chain.delta.reshape(flat)
        self._quoted = self.chain.quoted.reshape(flat)
        gamma, vega = contract_gamma_vega(self.chain)
        self._gamma, self._vega = gamma.reshape(flat), vega.reshape(flat)
        self._build_action_tensors()
        self._first_alive = first_alive_expiry(self.chain)  # [D, S]: expiry offset 0 of an action
        self.feature_names = MARKET_FEATURE_NAMES + self.chain.feature_names + STATE_FEATURE_NAMES
        """The F columns of an observation row."""
        own = chain_summary(self.chain, self._first_alive)
        features = torch.cat([own, self.chain.features.to(own.dtype)], dim=-1)
        self._features = features.reshape(d * s, -1).float()  # [day * snapshot, F]
        self.obs_shape = (self.config.window, len(self.feature_names))
        self.episodes = EpisodeSchedule(torch.full((d,), s), 1, num_envs, self.config.episode_days,
                                        self.config.evaluation, self.device)
        self.episodes.generator.manual_seed(0)
        self._alloc_state()
        self._window = RollingWindow(num_envs, self.config.window, self.obs_shape[1], self.device)

    # -- setup ------------------------------------------------------------------------------------------------

    def _build_action_tensors(self) -> None:
        a, n_legs = len(self.strategies), MAX_LEGS
        right, k_off, e_off, qty = (torch.zeros(a, n_legs, dtype=torch.long) for _ in range(4))
        for i, strategy in enumerate(self.strategies):
            for j, leg in enumerate(strategy.legs):
                right[i, j], k_off[i, j], e_off[i, j], qty[i, j] = (
                    leg.right, leg.strike_offset, leg.expiry_offset, leg.quantity)
        dev = self.device
        self._leg_right, self._leg_koff, self._leg_eoff = right.to(dev), k_off.to(dev), e_off.to(dev)
        self._leg_qty = qty.to(dev, torch.float32)
        self._action_shares = torch.tensor([float(s.shares) for s in self.strategies], device=dev)

    def _alloc_state(self) -> None:
        n, dev = self.num_envs, self.device
        self.contract = torch.zeros(n, MAX_LEGS, dtype=torch.long, device=dev)  # flat index (e*K + k)*2 + right
        self.qty = torch.zeros(n, MAX_LEGS, device=dev)  # signed contracts, 0 = empty slot
        self.leg_expiry = torch.zeros(n, MAX_LEGS, dtype=torch.long, device=dev)
        self.leg_strike = torch.zeros(n, MAX_LEGS, dtype=torch.long, device=dev)
        self.shares = torch.zeros(n, device=dev)  # lots of 100 shares
        self.action = torch.zeros(n, dtype=torch.long, device=dev)
        self.cash = torch.zeros(n, device=dev)
        self.equity = torch.zeros(n, device=dev)
        self.entry_equity = torch.zeros(n, device=dev)

    @property
    def snap(self) -> torch.Tensor:
        """Snapshot index (within its day) of each env."""
        return self.episodes.bar

    # -- protocol ---------------------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        everyone = self.episodes.restart(seed)
        self._clear_books(everyone)
        self._window.restart(everyone, self._row_parts)
        return self._window.obs, {"day": self.day, "episode_id": self.episodes.episode_id}

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                   dict[str, Any]]:
        actions = torch.as_tensor(actions, device=self.device).long().reshape(self.num_envs)
        self._check_actions(actions)
        cfg, episodes = self.config, self.episodes
        idle = episodes.idle
        seen_spot = self._spot()
        day_close, episode_end = episodes.advance()  # every fill below is at the snapshot reached
        fees = torch.zeros(self.num_envs, device=self.device)
        trade = (actions != self.action) & ~idle
        fees += self._close_positions(trade)
        fees += self._open_positions(trade, actions, seen_spot)
        self.action = torch.where(trade, actions, self.action)
        self.entry_equity = torch.where(trade, self.equity, self.entry_equity)
        self._settle_expired()
        terminated = episode_end | idle
        fees += self._close_positions(day_close | terminated)  # flat at every close: tomorrow has another grid
        equity = self._mark()
        pnl = equity - self.equity
        self.equity = equity
        empty = (self.qty == 0).all(-1) & (self.shares == 0)
        self.action = torch.where(empty, torch.zeros_like(self.action), self.action)
        reward = (pnl * cfg.reward_scale).clamp(-cfg.reward_clip, cfg.reward_clip).masked_fill(idle, 0.0)
        info: dict[str, Any] = {"pnl": pnl, "fees": fees, "equity": equity, "day": episodes.day,
                                "snapshot": episodes.bar, "episode_id": episodes.episode_id}
        self._window.push(self._row_parts())
        # Unconditional masked reset: branching on terminated.any() would sync with the host every step.
        episodes.start(terminated)
        self._clear_books(terminated)
        restart = terminated & ~idle
        self._window.restart(restart, self._row_parts, keep_final=restart)
        info["final_obs"] = self._window.final_obs
        return self._window.obs, reward, terminated, torch.zeros_like(terminated), info

    @staticmethod
    def episode_outcome(info: dict[str, Any]) -> torch.Tensor:
        """An episode's net PnL at its last step (the book is liquidated there, so it is the equity): what a
        selection walk scores (`policy_eval.evaluate_policy`); info["pnl"] is only the last step's."""
        return info["equity"]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every mutable tensor of the env (copies), the episode generator's state as uint8: enough to resume."""
        book = {name: getattr(self, name).clone() for name in _BOOK}
        return {**book, **{f"episodes.{k}": v for k, v in self.episodes.state_dict().items()},
                **{f"window.{k}": v for k, v in self._window.state_dict().items()}}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a `state_dict` taken from an env on the same chain, config and num_envs."""
        for name in _BOOK:
            setattr(self, name, state[name].to(self.device).clone())
        self.episodes.load_state_dict(substate(state, "episodes."))
        self._window.load_state_dict(substate(state, "window."))

    # -- mechanics --------------------------------------------------------------------------------------------

    def _check_actions(self, actions: torch.Tensor) -> None:
        """Reject out-of-range actions: a ValueError on CPU, an async device assert elsewhere."""
        invalid = (actions < 0) | (actions >= self.action_dim)
        if self.device.type != "cpu":
            # On an accelerator a host-side check would sync every step; the async assert fails the stream instead.
            torch._assert_async(~invalid.any(), "OptionsTrading: action out of range")
        elif bool(invalid.any()):
            raise ValueError(f"actions must be in [0, {self.action_dim}) for action_set={self.config.action_set}, "
                             f"got {actions.tolist()}")

    def _clear_books(self, mask: torch.Tensor) -> None:
        for name in ("qty", "shares", "action", "cash", "equity", "entry_equity"):
            value = getattr(self, name)
            setattr(self, name, value.masked_fill(mask.view(-1, *([1] * (value.ndim - 1))), 0))

    def _spot(self) -> torch.Tensor:
        return self.chain.underlying[self.day, self.snap]

    def _close_positions(self, mask: torch.Tensor) -> torch.Tensor:
        """Close every leg and share lot of the masked envs at the current snapshot's bid/ask; returns the fees."""
        q = torch.where(mask[:, None], self.qty, torch.zeros_like(self.qty))
        lots = torch.where(mask, self.shares, torch.zeros_like(self.shares))
        fees = self._trade(-q, self.contract, -lots)
        self.qty = self.qty - q
        self.shares = self.shares - lots
        return fees

    def _open_positions(self, mask: torch.Tensor, actions: torch.Tensor, seen_spot: torch.Tensor) -> torch.Tensor:
        """Open the legs of `actions` for masked envs at the current snapshot, strikes around the spot the agent
        saw; a strategy with a leg off the day's grid, or not quoted there, does not open."""
        day = self.day[:, None]
        exp = self._first_alive[self.day, self.snap][:, None] + self._leg_eoff[actions]
        on_grid = exp < self.n_exp
        exp = exp.clamp_max(self.n_exp - 1)
        atm = (self.chain.strike[day, exp] - seen_spot[:, None, None]).abs().argmin(-1)
        strike = atm + self._leg_koff[actions]
        # Clamping an off-grid leg would put it on another contract (a calendar or vertical on one contract).
        on_grid = on_grid & (strike >= 0) & (strike < self.n_strikes)
        strike = strike.clamp(0, self.n_strikes - 1)
        contract = (exp * self.n_strikes + strike) * 2 + self._leg_right[actions]
        legs = self._leg_qty[actions]
        quoted = (_gather_contract(self._quoted, self.day, self.snap, contract) & on_grid) | (legs == 0)
        mask = mask & quoted.all(-1)
        q = torch.where(mask[:, None], legs, torch.zeros_like(self.qty))
        lots = torch.where(mask, self._action_shares[actions], torch.zeros_like(self.shares))
        fees = self._trade(q, contract, lots)
        self.contract = torch.where(mask[:, None], contract, self.contract)
        self.leg_expiry = torch.where(mask[:, None], exp, self.leg_expiry)
        self.leg_strike = torch.where(mask[:, None], strike, self.leg_strike)
        self.qty = self.qty + q
        self.shares = self.shares + lots
        return fees

    def _trade(self, q: torch.Tensor, contract: torch.Tensor, lots: torch.Tensor) -> torch.Tensor:
        """Cash flow of buying q contracts (q > 0 at the ask, q < 0 at the bid) and `lots` share lots; fees."""
        legs = fill_at_quote(q, _gather_contract(self._bid, self.day, self.snap, contract),
                             _gather_contract(self._ask, self.day, self.snap, contract), self._contract_costs)
        spot, half_spread = self._spot(), self.config.underlying_half_spread_bps * 1e-4
        shares = fill_at_quote(lots * MULTIPLIER, spot * (1.0 - half_spread), spot * (1.0 + half_spread),
                               self._share_costs)
        self.cash = self.cash + legs.cash_delta.sum(-1) + shares.cash_delta
        return legs.fees.sum(-1) + shares.fees

    def _settle_expired(self) -> None:
        """Legs whose expiry is reached at the current snapshot pay intrinsic value in cash and leave the book."""
        left = self.chain.expiry_days[self.day[:, None], self.snap[:, None], self.leg_expiry]
        expired = (left <= 0) & (self.qty != 0)
        strike = self.chain.strike[self.day[:, None], self.leg_expiry, self.leg_strike]
        spot = self._spot()[:, None]
        is_call = (self.contract % 2) == 0
        intrinsic = torch.where(is_call, (spot - strike).clamp_min(0), (strike - spot).clamp_min(0))
        self.cash = self.cash + torch.where(expired, self.qty * intrinsic, torch.zeros_like(self.qty)).sum(-1) * MULTIPLIER
        self.qty = torch.where(expired, torch.zeros_like(self.qty), self.qty)

    def _mark(self) -> torch.Tensor:
        """Equity = cash + legs at mid + shares at the underlying price, all at the current snapshot."""
        mid = _gather_contract(self._mid, self.day, self.snap, self.contract)
        return self.cash + (self.qty * mid).sum(-1) * MULTIPLIER + self.shares * self._spot() * MULTIPLIER

    def _row_parts(self, env: torch.Tensor | slice = ALL) -> list[torch.Tensor]:
        """Observation rows of envs `env`: [chain features at the snapshot, position state] column blocks."""
        day, snap, contract = self.day[env], self.snap[env], self.contract[env]
        qty, shares = self.qty[env], self.shares[env]
        delta = _gather_contract(self._delta, day, snap, contract)
        gamma = _gather_contract(self._gamma, day, snap, contract)
        vega = _gather_contract(self._vega, day, snap, contract)
        spot = self.chain.underlying[day, snap]
        state = torch.stack([
            (qty * delta).sum(-1) + shares,  # net delta, in contracts of 100 shares
            (qty * gamma).sum(-1) * spot * 0.01,  # change of net delta for a 1% spot move
            (qty * vega).sum(-1) * MULTIPLIER * 0.01 * self.config.reward_scale,  # PnL of +1 vol point
            qty.abs().sum(-1) / MAX_LEGS,
            (self.equity[env] - self.entry_equity[env]) * self.config.reward_scale,
            self.action[env].float() / max(self.action_dim - 1, 1),
            ((qty == 0).all(-1) & (shares == 0)).float(),
        ], -1)
        return [self._features.index_select(0, day * self.n_snaps + snap), state.float()]


# The per-env book: what state_dict saves besides the episode schedule and the observation windows.
_BOOK = ("contract", "qty", "leg_expiry", "leg_strike", "shares", "action", "cash", "equity", "entry_equity")
