"""IntradayTrading: a batch of single-instrument day-trading episodes on minute bars, all state in tensors.

Each env trades one (trading day, symbol) episode sampled from `MarketTensors`. The agent sees bar t and picks
hold / long / short / flat; the order fills at bar t+1's quote (buys at the ask, sells at the bid) plus fees
and slippage, never at a price of a bar it has already seen. Losses beyond the loss-cut or gains beyond the
profit-lock end the episode early (terminated); the session end truncates it. Either way the position is
flattened at that bar's quote with costs, so the episode PnL is realized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pipeline.envs.costs import CostModel, fill_at_quote
from pipeline.envs.market_data import MarketTensors, synthetic_market_tensors

HOLD, LONG, SHORT, FLAT = 0, 1, 2, 3
AGENT_FEATURES = ("position", "unrealized_pnl", "episode_pnl", "time_of_day")
# Columns of the per-env book (dollars and shares; fills counts orders).
BOOK = ("position", "cash", "entry_price", "fees", "slippage", "spread_paid", "fills")


@dataclass(frozen=True)
class IntradayConfig:
    """Parameters of IntradayTrading (gymnax style: plain values with defaults)."""

    window: int = 16
    """Bars per observation: obs is [window, market features + agent features]."""
    trade_size: float = 100.0
    """Shares held when long (or short): LONG targets +trade_size, SHORT -trade_size, FLAT 0."""
    fee_per_share: float = 0.005
    """Commission in dollars per share traded."""
    slippage_bps: float = 1.0
    """Adverse move beyond the quote on every fill, in basis points."""
    loss_cut: float | None = -100.0
    """Terminate (and flatten) once the episode PnL in dollars is at or below this; None disables."""
    profit_lock: float | None = 200.0
    """Terminate (and flatten) once the episode PnL in dollars is at or above this; None disables."""
    reward_scale: float = 0.01
    """Reward per dollar of PnL change (net of all costs)."""
    reward_clip: float = 10.0
    """Rewards are clipped to [-reward_clip, reward_clip]."""
    turbulence_threshold: float | None = None
    """Above this turbulence index, LONG/SHORT that would add exposure become FLAT (reversal) or HOLD."""
    pnl_scale: float = 100.0
    """Dollars per unit of the PnL features in the observation."""


class IntradayTradingEnv:
    """Batched IntradayTrading implementing `pipeline.envs.base.BatchedEnv` (discrete, 4 actions)."""

    discrete = True
    action_dim = 4

    def __init__(
        self,
        market: MarketTensors | None = None,
        num_envs: int = 1,
        config: IntradayConfig | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.config = config or IntradayConfig()
        if self.config.window < 1 or self.config.trade_size <= 0:
            raise ValueError(f"window must be >= 1 and trade_size > 0; got {self.config}")
        market = market if market is not None else synthetic_market_tensors(days=4, alpha=0.1, seed=0)
        self.device = torch.device(device) if device is not None else market.device
        self.market = market.to(self.device)
        self.num_envs = int(num_envs)
        self.obs_shape = (self.config.window, market.num_features + len(AGENT_FEATURES))
        self.costs = CostModel(fee_per_unit=self.config.fee_per_share, slippage_bps=self.config.slippage_bps)
        # Accounting in float64 so a day of fills adds up to the cent (MPS has no float64).
        self._money = torch.float32 if self.device.type == "mps" else torch.float64
        # Flat [day * minute * symbol] views: one gather per step instead of three-index lookups.
        m = self.market
        self._stride = m.num_symbols
        self._quotes = torch.stack([m.bid, m.ask], dim=-1).to(self._money).reshape(-1, 2)
        self._features = m.features.reshape(-1, m.num_features)
        self._turbulence = m.turbulence.unsqueeze(-1).expand(-1, -1, m.num_symbols).reshape(-1)
        self._gen = torch.Generator(device=self.device)
        self._gen.seed()
        n, dev = self.num_envs, self.device
        self.day = torch.zeros(n, dtype=torch.int64, device=dev)
        self.symbol = torch.zeros(n, dtype=torch.int64, device=dev)
        self.minute = torch.zeros(n, dtype=torch.int64, device=dev)
        self._last_minute = torch.ones(n, dtype=torch.int64, device=dev)
        self._book = torch.zeros(n, len(BOOK), dtype=self._money, device=dev)
        self._window_offsets = torch.arange(-self.config.window + 1, 1, device=dev) * self._stride

    def _col(self, name: str) -> torch.Tensor:
        return self._book[:, BOOK.index(name)]

    @property
    def position(self) -> torch.Tensor:
        """Shares held, per env."""
        return self._col("position")

    @property
    def cash(self) -> torch.Tensor:
        """Cash in dollars (starts at 0, so cash + position * mid is the episode PnL)."""
        return self._col("cash")

    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        if seed is not None:
            self._gen.manual_seed(int(seed))
        self._start_episodes(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return self._observe(self._book), {}

    def _start_episodes(self, mask: torch.Tensor) -> None:
        """Sample a fresh (day, symbol) episode for the envs in `mask` and zero their books (no host sync)."""
        n = self.num_envs
        day = torch.randint(self.market.num_days, (n,), generator=self._gen, device=self.device)
        sym = torch.randint(self.market.num_symbols, (n,), generator=self._gen, device=self.device)
        self.day = torch.where(mask, day, self.day)
        self.symbol = torch.where(mask, sym, self.symbol)
        self.minute = self.minute.masked_fill(mask, 0)
        self._last_minute = self.market.session_minutes[self.day] - 1
        self._book = self._book.masked_fill(mask.unsqueeze(1), 0.0)

    def _index(self) -> torch.Tensor:
        """Flat index of each env's current bar in the [day, minute, symbol] layout."""
        return (self.day * self.market.num_minutes + self.minute) * self._stride + self.symbol

    def _observe(self, book: torch.Tensor) -> torch.Tensor:
        """[N, window, F]: the last `window` bars' features (bar 0 repeated before the open) + agent state."""
        now = self._index()
        rows = (now.unsqueeze(1) + self._window_offsets).clamp(
            min=(now - self.minute * self._stride).unsqueeze(1)
        )
        mid = self._quotes[now].mean(dim=-1)
        position, cash, entry = book[:, 0], book[:, 1], book[:, 2]
        agent = torch.stack(
            [
                position / self.config.trade_size,
                position * (mid - entry) / self.config.pnl_scale,
                (cash + position * mid) / self.config.pnl_scale,
                self.minute / self._last_minute,
            ],
            dim=-1,
        ).float()
        return torch.cat(
            [self._features[rows], agent.unsqueeze(1).expand(-1, self.config.window, -1)], dim=-1
        )

    def _target_position(self, actions: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if cfg.turbulence_threshold is not None:
            risk_off = self._turbulence[self._index()] > cfg.turbulence_threshold
            # Risk-off: a reversal only closes the position, and nothing opens or adds exposure.
            reduce = ((actions == LONG) & (position < 0)) | ((actions == SHORT) & (position > 0))
            opens = (actions == LONG) | (actions == SHORT)
            actions = torch.where(risk_off & reduce, FLAT, torch.where(risk_off & opens, HOLD, actions))
        target = torch.where(actions == LONG, cfg.trade_size, position)
        target = torch.where(actions == SHORT, -cfg.trade_size, target)
        return torch.where(actions == FLAT, 0.0, target)

    def _trade(self, book: torch.Tensor, qty: torch.Tensor, quote: torch.Tensor) -> torch.Tensor:
        """The book after filling `qty` at `quote` ([N, 2] bid/ask)."""
        fill = fill_at_quote(qty, quote[:, 0], quote[:, 1], self.costs)
        position = book[:, 0] + qty
        entry = torch.where(qty != 0, fill.price, book[:, 2]).masked_fill(position == 0, 0.0)
        delta = torch.stack(
            [fill.cash_delta, fill.fees, fill.slippage, fill.spread_paid, (qty != 0).to(book.dtype)], 1
        )
        return torch.cat(
            [
                position.unsqueeze(1),
                book[:, 1:2] + delta[:, :1],
                entry.unsqueeze(1),
                book[:, 3:] + delta[:, 1:],
            ],
            1,
        )

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Act on the observed bar, fill at the next one; auto-resets finished envs.

        info (per env, values of the step just taken, before any reset): pnl, cash, position, entry_price,
        costs (fees + slippage, cumulative), fees, slippage, spread_paid (vs mid), fills (orders filled),
        day, symbol (the episode's indices), final_obs (the obs after this step, before the reset).
        """
        actions = torch.as_tensor(actions, device=self.device).long().reshape(self.num_envs)
        cfg, book = self.config, self._book
        quote_now = self._quotes[self._index()]
        equity_before = book[:, 1] + book[:, 0] * quote_now.mean(dim=-1)
        target = self._target_position(actions, book[:, 0])
        self.minute = self.minute + 1
        quote = self._quotes[self._index()]
        mid = quote.mean(dim=-1)
        book = self._trade(book, target - book[:, 0], quote)
        pnl = book[:, 1] + book[:, 0] * mid
        terminated = torch.zeros_like(actions, dtype=torch.bool)
        if cfg.loss_cut is not None:
            terminated = terminated | (pnl <= cfg.loss_cut)
        if cfg.profit_lock is not None:
            terminated = terminated | (pnl >= cfg.profit_lock)
        at_close = self.minute >= self._last_minute
        done = terminated | at_close
        # Flatten at this bar's quote: a stop or the closing trade, not a decision made on seen prices.
        book = self._trade(book, -book[:, 0] * done, quote)
        equity = book[:, 1] + book[:, 0] * mid
        reward = (
            ((equity - equity_before) * cfg.reward_scale).clamp(-cfg.reward_clip, cfg.reward_clip).float()
        )
        # Money in the accounting dtype (float64 off MPS) so the figures add up to the cent.
        info: dict[str, Any] = {name: book[:, i] for i, name in enumerate(BOOK)}
        info.update(
            pnl=equity,
            costs=info["fees"] + info["slippage"],
            fills=info["fills"].long(),
            day=self.day,
            symbol=self.symbol,
            final_obs=self._observe(book),
        )
        self._book = book
        self._start_episodes(done)
        return self._observe(self._book), reward, terminated, at_close & ~terminated, info
