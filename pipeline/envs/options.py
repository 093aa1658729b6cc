"""OptionsTrading: a batched torch env that trades option strategies on chain snapshots.

The agent observes snapshot k and picks a target strategy from the action table (pipeline/envs/options_actions.py).
Picking the strategy it already holds holds it; picking another closes every leg and opens the new ones. All
fills happen at snapshot k+1 (buy at the ask, sell at the bid, plus a per-contract fee; contracts are x100), so
no fill uses a price the agent saw. Positions are marked at snapshot k+1's mid; contracts whose expiry is reached
settle at intrinsic value. An episode is one trading day; at its last snapshot what is left is liquidated at
bid/ask and the episode terminates. Reward = (change of equity in dollars) * reward_scale, clipped.

Observation: a window [T, F] of the last T snapshots' chain summary (spot returns, ATM IV, term slope, skew, ATM
spread, time of day, days to the front expiry) with the position state (net delta, gamma and vega, gross
contracts, unrealized PnL, current action, flat flag) appended to every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pipeline.envs.costs import CostModel, fill_at_quote
from pipeline.envs.options_actions import MAX_LEGS, action_table
from pipeline.envs.options_chain import OptionChainTensors, black_scholes_gamma_vega

MULTIPLIER = 100.0
MARKET_FEATURE_NAMES = ("spot_return", "return_from_open", "atm_iv", "term_slope", "skew", "atm_spread",
                        "time_of_day", "log_front_days")
STATE_FEATURE_NAMES = ("net_delta", "net_gamma_1pct", "net_vega_1pt", "gross_contracts", "unrealized_pnl",
                       "action", "flat")
FEATURE_NAMES = MARKET_FEATURE_NAMES + STATE_FEATURE_NAMES  # the F columns of an observation row
MARKET_FEATURES = len(MARKET_FEATURE_NAMES)
STATE_FEATURES = len(STATE_FEATURE_NAMES)


@dataclass
class OptionsTradingConfig:
    """Env parameters (gymnax style: a dataclass with defaults)."""

    action_set: int = 31
    """31 = flat + single long calls/puts; 91 = also verticals, straddles, condors, flies, calendars..."""
    window: int = 16
    """Snapshots per observation window (T)."""
    fee_per_contract: float = 0.65
    """Dollars per option contract traded (each side)."""
    fee_per_share: float = 0.005
    """Dollars per underlying share traded."""
    underlying_half_spread_bps: float = 1.0
    """Underlying trades cross this half-spread around the snapshot's underlying price."""
    reward_scale: float = 0.01
    """Reward per dollar of PnL (0.01: one reward unit per $100)."""
    reward_clip: float = 10.0
    """Rewards are clipped to [-reward_clip, reward_clip] after scaling."""


def _gather_contract(x: torch.Tensor, day: torch.Tensor, snap: torch.Tensor, contract: torch.Tensor) -> torch.Tensor:
    """x [D, S, E*K*2] at (day[n], snap[n], contract[n, l]) -> [N, L]."""
    return x[day[:, None], snap[:, None], contract]


class OptionsTradingEnv:
    """Batched options env (implements pipeline.envs.base.BatchedEnv); discrete actions, int64 [num_envs]."""

    discrete = True

    def __init__(self, chain: OptionChainTensors, num_envs: int = 1, config: OptionsTradingConfig | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.config = config or OptionsTradingConfig()
        self.strategies = action_table(self.config.action_set)
        # Fills cross the quoted spread (no slippage beyond it); fees per contract and per share.
        self._contract_costs = CostModel(self.config.fee_per_contract, slippage_bps=0.0, multiplier=MULTIPLIER)
        self._share_costs = CostModel(self.config.fee_per_share, slippage_bps=0.0)
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.action_dim = len(self.strategies)
        self.obs_shape = (self.config.window, MARKET_FEATURES + STATE_FEATURES)
        self.chain = chain.to(self.device)
        d, s, e, k = self.chain.shape
        self.n_days, self.n_snaps, self.n_exp, self.n_strikes = d, s, e, k
        flat = (d, s, e * k * 2)
        self._bid, self._ask = self.chain.bid.reshape(flat), self.chain.ask.reshape(flat)
        self._mid, self._delta = self.chain.mid.reshape(flat), self.chain.delta.reshape(flat)
        gamma, vega = self._gamma_vega()
        self._gamma, self._vega = gamma.reshape(flat), vega.reshape(flat)
        self._build_action_tensors()
        self._precompute_grid()
        self._features = self._market_features()
        self._rng = torch.Generator(device=self.device)
        self._rng.manual_seed(0)
        self._alloc_state()

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

    def _precompute_grid(self) -> None:
        c = self.chain
        # ATM strike index per (day, snapshot, expiry): what a leg's strike offset counts from.
        self._atm = (c.strike[:, None] - c.underlying[:, :, None, None]).abs().argmin(-1)  # [D, S, E]
        alive = c.expiry_days > 0
        # First expiry still alive at each snapshot (the last one if none is): expiry offset 0.
        first = torch.where(alive.any(-1), alive.float().argmax(-1), torch.full_like(alive[..., 0], self.n_exp - 1,
                                                                                       dtype=torch.long))
        self._first_alive = first  # [D, S]

    def _gamma_vega(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Black-Scholes gamma and vega per contract from the quoted IV ([D, S, E, K, 2]; 0 once expired)."""
        c = self.chain
        years = (c.expiry_days / 365.0)[..., None, None]
        return black_scholes_gamma_vega(c.underlying[:, :, None, None, None], c.strike[:, None, :, :, None], years,
                                        c.iv.clamp_min(1e-4))

    def _market_features(self) -> torch.Tensor:
        """[D, S, MARKET_FEATURES] chain summary per snapshot, computed once."""
        c = self.chain
        d, s, e, k = c.shape
        spot = c.underlying
        ret = torch.zeros_like(spot)
        ret[:, 1:] = torch.log(spot[:, 1:] / spot[:, :-1]) * 100.0
        from_open = torch.log(spot / spot[:, :1]) * 100.0
        di = torch.arange(d, device=self.device)[:, None].expand(d, s)
        si = torch.arange(s, device=self.device)[None, :].expand(d, s)
        front = self._first_alive
        second = (front + 1).clamp_max(e - 1)

        def iv_at(exp: torch.Tensor, k_off: int, right: int) -> torch.Tensor:
            kk = (self._atm[di, si, exp] + k_off).clamp(0, k - 1)
            return c.iv[di, si, exp, kk, right]

        atm_front = 0.5 * (iv_at(front, 0, 0) + iv_at(front, 0, 1))
        atm_second = 0.5 * (iv_at(second, 0, 0) + iv_at(second, 0, 1))
        skew = iv_at(front, -2, 1) - iv_at(front, 2, 0)
        ka = self._atm[di, si, front]
        spread = (c.ask[di, si, front, ka] - c.bid[di, si, front, ka]) / c.mid[di, si, front, ka].clamp_min(0.01)
        tod = si.float() / max(s - 1, 1)
        dte = torch.log1p(c.expiry_days[di, si, front].clamp_min(0))
        return torch.stack([ret, from_open, atm_front, atm_second - atm_front, skew, spread.mean(-1), tod, dte], -1)

    def _alloc_state(self) -> None:
        n, dev = self.num_envs, self.device
        self.day = torch.zeros(n, dtype=torch.long, device=dev)
        self.snap = torch.zeros(n, dtype=torch.long, device=dev)
        self.contract = torch.zeros(n, MAX_LEGS, dtype=torch.long, device=dev)  # flat index (e*K + k)*2 + right
        self.qty = torch.zeros(n, MAX_LEGS, device=dev)  # signed contracts, 0 = empty slot
        self.leg_expiry = torch.zeros(n, MAX_LEGS, dtype=torch.long, device=dev)
        self.leg_strike = torch.zeros(n, MAX_LEGS, dtype=torch.long, device=dev)
        self.shares = torch.zeros(n, device=dev)  # lots of 100 shares
        self.action = torch.zeros(n, dtype=torch.long, device=dev)
        self.cash = torch.zeros(n, device=dev)
        self.equity = torch.zeros(n, device=dev)
        self.entry_equity = torch.zeros(n, device=dev)

    # -- protocol ---------------------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        if seed is not None:
            self._rng.manual_seed(seed)
        self._reset_envs(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return self._obs(), {"day": self.day.clone()}

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                   dict[str, Any]]:
        actions = torch.as_tensor(actions, device=self.device).long().reshape(self.num_envs)
        self._check_actions(actions)
        cfg, nxt = self.config, self.snap + 1
        fees = torch.zeros(self.num_envs, device=self.device)
        trade = actions != self.action
        fees += self._close_positions(trade, nxt)
        fees += self._open_positions(trade, actions, nxt)
        self.action = torch.where(trade, actions, self.action)
        self.entry_equity = torch.where(trade, self.equity, self.entry_equity)
        self._settle_expired(nxt)
        terminated = nxt >= self.n_snaps - 1
        fees += self._close_positions(terminated, nxt)
        self.snap = nxt
        equity = self._mark()
        pnl = equity - self.equity
        self.equity = equity
        empty = (self.qty == 0).all(-1) & (self.shares == 0)
        self.action = torch.where(empty, torch.zeros_like(self.action), self.action)
        reward = (pnl * cfg.reward_scale).clamp(-cfg.reward_clip, cfg.reward_clip)
        truncated = torch.zeros_like(terminated)
        obs = self._obs()
        info: dict[str, Any] = {"pnl": pnl, "fees": fees, "equity": equity.clone(), "final_obs": obs.clone()}
        # Unconditional masked reset: branching on terminated.any() would sync with the host every step.
        self._reset_envs(terminated)
        obs = torch.where(terminated[:, None, None], self._obs(), obs)
        return obs, reward, terminated, truncated, info

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

    def _reset_envs(self, mask: torch.Tensor) -> None:
        days = torch.randint(self.n_days, (self.num_envs,), generator=self._rng, device=self.device)
        self.day = torch.where(mask, days, self.day)
        zero = torch.zeros_like
        self.snap = torch.where(mask, zero(self.snap), self.snap)
        self.qty = torch.where(mask[:, None], zero(self.qty), self.qty)
        self.shares = torch.where(mask, zero(self.shares), self.shares)
        self.action = torch.where(mask, zero(self.action), self.action)
        for name in ("cash", "equity", "entry_equity"):
            setattr(self, name, torch.where(mask, zero(getattr(self, name)), getattr(self, name)))

    def _spot(self, snap: torch.Tensor) -> torch.Tensor:
        return self.chain.underlying[self.day, snap]

    def _close_positions(self, mask: torch.Tensor, snap: torch.Tensor) -> torch.Tensor:
        """Close every leg and share lot of the masked envs at `snap`'s bid/ask; returns the fees paid."""
        q = torch.where(mask[:, None], self.qty, torch.zeros_like(self.qty))
        lots = torch.where(mask, self.shares, torch.zeros_like(self.shares))
        fees = self._trade(-q, self.contract, -lots, snap)
        self.qty = self.qty - q
        self.shares = self.shares - lots
        return fees

    def _open_positions(self, mask: torch.Tensor, actions: torch.Tensor, snap: torch.Tensor) -> torch.Tensor:
        """Open the legs of `actions` for masked envs; strikes from the observed snapshot, fills at `snap`."""
        exp = (self._first_alive[self.day, snap][:, None] + self._leg_eoff[actions]).clamp_max(self.n_exp - 1)
        atm = self._atm[self.day[:, None], self.snap[:, None], exp]
        strike = (atm + self._leg_koff[actions]).clamp(0, self.n_strikes - 1)
        contract = (exp * self.n_strikes + strike) * 2 + self._leg_right[actions]
        q = torch.where(mask[:, None], self._leg_qty[actions], torch.zeros_like(self.qty))
        lots = torch.where(mask, self._action_shares[actions], torch.zeros_like(self.shares))
        fees = self._trade(q, contract, lots, snap)
        self.contract = torch.where(mask[:, None], contract, self.contract)
        self.leg_expiry = torch.where(mask[:, None], exp, self.leg_expiry)
        self.leg_strike = torch.where(mask[:, None], strike, self.leg_strike)
        self.qty = self.qty + q
        self.shares = self.shares + lots
        return fees

    def _trade(self, q: torch.Tensor, contract: torch.Tensor, lots: torch.Tensor, snap: torch.Tensor) -> torch.Tensor:
        """Cash flow of buying q contracts (q > 0 at the ask, q < 0 at the bid) and `lots` share lots; fees."""
        legs = fill_at_quote(q, _gather_contract(self._bid, self.day, snap, contract),
                             _gather_contract(self._ask, self.day, snap, contract), self._contract_costs)
        spot, half_spread = self._spot(snap), self.config.underlying_half_spread_bps * 1e-4
        shares = fill_at_quote(lots * MULTIPLIER, spot * (1.0 - half_spread), spot * (1.0 + half_spread),
                               self._share_costs)
        self.cash = self.cash + legs.cash_delta.sum(-1) + shares.cash_delta
        return legs.fees.sum(-1) + shares.fees

    def _settle_expired(self, snap: torch.Tensor) -> None:
        """Legs whose expiry is reached at `snap` pay intrinsic value in cash and leave the book."""
        left = self.chain.expiry_days[self.day[:, None], snap[:, None], self.leg_expiry]
        expired = (left <= 0) & (self.qty != 0)
        strike = self.chain.strike[self.day[:, None], self.leg_expiry, self.leg_strike]
        spot = self._spot(snap)[:, None]
        is_call = (self.contract % 2) == 0
        intrinsic = torch.where(is_call, (spot - strike).clamp_min(0), (strike - spot).clamp_min(0))
        self.cash = self.cash + torch.where(expired, self.qty * intrinsic, torch.zeros_like(self.qty)).sum(-1) * MULTIPLIER
        self.qty = torch.where(expired, torch.zeros_like(self.qty), self.qty)

    def _mark(self) -> torch.Tensor:
        """Equity = cash + legs at mid + shares at the underlying price, all at the current snapshot."""
        mid = _gather_contract(self._mid, self.day, self.snap, self.contract)
        return self.cash + (self.qty * mid).sum(-1) * MULTIPLIER + self.shares * self._spot(self.snap) * MULTIPLIER

    def _obs(self) -> torch.Tensor:
        t = self.config.window
        rows = (self.snap[:, None] - t + 1 + torch.arange(t, device=self.device)).clamp_min(0)
        market = self._features[self.day[:, None], rows]  # [N, T, MARKET_FEATURES]
        delta = _gather_contract(self._delta, self.day, self.snap, self.contract)
        gamma = _gather_contract(self._gamma, self.day, self.snap, self.contract)
        vega = _gather_contract(self._vega, self.day, self.snap, self.contract)
        spot = self._spot(self.snap)
        state = torch.stack([
            (self.qty * delta).sum(-1) + self.shares,  # net delta, in contracts of 100 shares
            (self.qty * gamma).sum(-1) * spot * 0.01,  # change of net delta for a 1% spot move
            (self.qty * vega).sum(-1) * MULTIPLIER * 0.01 * self.config.reward_scale,  # PnL of +1 vol point
            self.qty.abs().sum(-1) / MAX_LEGS,
            (self.equity - self.entry_equity) * self.config.reward_scale,
            self.action.float() / max(self.action_dim - 1, 1),
            ((self.qty == 0).all(-1) & (self.shares == 0)).float(),
        ], -1)
        return torch.cat([market, state[:, None, :].expand(-1, t, -1)], -1).float()
