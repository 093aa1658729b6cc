"""Execution-cost model shared by the trading envs: cross the spread, pay a per-unit fee and slippage in bps.

Every order is a market order filled at a later bar's quote: buys lift the ask, sells hit the bid, and slippage
moves the price further against the trader. Functions are elementwise on tensors so a whole batch of envs
(or of option legs) fills in one call, on any device. `EQUITY_COSTS` and `OPTION_COSTS` are the only place the
default fees and slippage are written: the env configs, the backtest's baselines and the model card read them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CostModel:
    """Fees and slippage of one market order.

    `multiplier` converts a quantity to units of the underlying (1 for shares, 100 for equity options):
    notional = qty * price * multiplier, while the fee is charged per traded unit of `qty` (per share or contract).
    """

    fee_per_unit: float
    """Commission per share (or per contract), in dollars."""
    slippage_bps: float
    """Extra adverse price move beyond the quote, in basis points of the quote."""
    multiplier: float = 1.0
    """Units of the underlying per unit of quantity (100 for a standard equity option)."""

    def bps_of_notional(self, price: torch.Tensor | float) -> torch.Tensor | float:
        """Fee plus slippage per traded dollar at `price` (per unit of the underlying), in basis points: what an env
        that charges on turnover pays on top of half the spread. At $100 a share EQUITY_COSTS gives 1 + 0.5 bp."""
        return self.slippage_bps + self.fee_per_unit / (price * self.multiplier) * 1e4


EQUITY_COSTS = CostModel(fee_per_unit=0.005, slippage_bps=1.0)
"""A share: $0.005 commission and 1 bp slippage beyond the quote (the intraday and portfolio envs, the baselines)."""
OPTION_COSTS = CostModel(fee_per_unit=0.65, slippage_bps=0.0, multiplier=100.0)
"""An equity option contract (100 shares): $0.65 commission a side; fills cross the quoted spread, no slippage."""


@dataclass(frozen=True)
class Fill:
    """The result of filling signed quantities `qty` (positive buys) against bid/ask quotes."""

    price: torch.Tensor
    """Per-unit execution price including slippage (the quote where qty == 0)."""
    cash_delta: torch.Tensor
    """Change of cash: -qty * price * multiplier - fees."""
    fees: torch.Tensor
    """Commission paid, in dollars (>= 0)."""
    slippage: torch.Tensor
    """Dollars lost to slippage beyond the quote (>= 0)."""
    spread_paid: torch.Tensor
    """Dollars paid versus the mid price by crossing the spread (half-spread times quantity, >= 0)."""


def fill_at_quote(qty: torch.Tensor, bid: torch.Tensor, ask: torch.Tensor, costs: CostModel) -> Fill:
    """Fill signed quantities at the given quotes: buys at ask, sells at bid, plus slippage and fees."""
    buy = qty > 0
    quote = torch.where(buy, ask, bid)
    slip_per_unit = quote * (costs.slippage_bps * 1e-4)
    price = torch.where(buy, quote + slip_per_unit, quote - slip_per_unit)
    units = qty.abs() * costs.multiplier
    fees = qty.abs() * costs.fee_per_unit
    cash_delta = -qty * price * costs.multiplier - fees
    return Fill(
        price=price,
        cash_delta=cash_delta,
        fees=fees,
        slippage=units * slip_per_unit,
        spread_paid=units * (ask - bid) * 0.5,
    )


def turnover_cost_rate(bid: torch.Tensor, ask: torch.Tensor, costs: CostModel) -> torch.Tensor:
    """Fraction of each traded dollar lost at these quotes when trading at the mid: half the spread, the fee and the
    slippage (`CostModel.bps_of_notional` at the mid). A turnover of |weight changes| costs turnover x this rate."""
    return (ask - bid) / (ask + bid) + costs.bps_of_notional(0.5 * (bid + ask)) * 1e-4


def last_quotes(quotes: torch.Tensor, tradable: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each bar's last tradable quote at or before it, and whether there is one: (quotes [T, S, ...], seen [T, S]).

    `quotes` [T, S, ...] and `tradable` [T, S] run in time order (days x minutes flattened). Positions are marked,
    and forced closes filled, at this quote where a bar has none of its own (e.g. overnight, before the symbol's
    first quote of the day); it only looks back, so it is point in time. Where `seen` is False the quote is kept.
    """
    steps = torch.arange(tradable.shape[0], device=tradable.device).unsqueeze(1).expand_as(tradable)
    last = torch.where(tradable, steps, -1).cummax(dim=0).values
    seen = last >= 0
    symbols = torch.arange(tradable.shape[1], device=tradable.device).expand_as(tradable)
    filled = quotes[last.clamp(min=0), symbols]
    mask = seen.view(*seen.shape, *([1] * (quotes.ndim - 2)))
    return torch.where(mask, filled, quotes), seen
