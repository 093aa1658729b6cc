"""IntradayTrading: a batch of single-instrument trading episodes on minute (or daily) bars, all state in tensors.

Each env trades one episode of `episode_days` trading days of one symbol from `MarketTensors` (one day by default).
The agent sees bar t and picks hold / long / short / flat; the order fills at bar t+1's quote (buys at the ask,
sells at the bid) plus fees and slippage, never at a price of a bar it has already seen. A symbol that is not
tradable at the fill bar (`market.tradable`, False before its first real quote) does not fill: the position
stays as it was. The episode ends `terminated` at its last bar (the close of its last day: the position is
flattened and nothing follows, so nothing is bootstrapped past it), or earlier when losses reach the loss-cut or
gains the profit-lock. `truncated` is always False: no cut here is a time limit. Either way the position is
flattened at that bar's quote with costs, so the episode PnL is realized. Where a bar has no quote of its own
(overnight, before the symbol's first quote of the day) a held position is marked, and force-closed, at the
symbol's last quote.

Multi-day episodes run from the last bar of day d to the first bar of day d+1. By default the position is
flattened at every close (day trading: the env is flat overnight and the order seen at the close fills at the next
open); `carry_overnight=True` holds it through the night instead (needed on daily bars, one bar a day).

Observation [window, F]: one row per bar, oldest first, each row the bar's market features and the agent's state
at that bar (position, unrealized PnL, episode PnL, time of day); before the episode's first bar the rows repeat
its first row. It is a view into a buffer that the next step overwrites (see `rolling_window`): copy it to keep it.
`info["final_obs"]` is valid in the rows of envs whose episode ended at this step.

Evaluation (`evaluation=True`) walks every (day block, symbol) of the market exactly once in time order instead
of sampling at random (see `episodes.EpisodeSchedule`); `eval_finished` turns True when the walk is over, and
`info["episode_id"]` numbers the episodes (-1 for envs left idle at the end of the walk).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from pipeline.envs.base import substate
from pipeline.envs.costs import EQUITY_COSTS, CostModel, fill_at_quote, last_quotes
from pipeline.envs.episodes import EpisodeSchedule, ScheduledEnv
from pipeline.envs.rolling_window import RollingWindow
from pipeline.envs.tensors import MarketTensors, synthetic_market_tensors

HOLD, LONG, SHORT, FLAT = 0, 1, 2, 3
AGENT_FEATURES = ("position", "unrealized_pnl", "episode_pnl", "time_of_day")
# Columns of the per-env book (dollars and shares; fills counts orders).
BOOK = ("position", "cash", "entry_price", "fees", "slippage", "spread_paid", "fills")
ALL = slice(None)


@dataclass(frozen=True)
class IntradayConfig:
    """Parameters of IntradayTrading (gymnax style: plain values with defaults)."""

    window: int = 16
    """Bars per observation: obs is [window, market features + agent features]."""
    trade_size: float = 100.0
    """Shares held when long (or short): LONG targets +trade_size, SHORT -trade_size, FLAT 0."""
    fee_per_share: float = EQUITY_COSTS.fee_per_unit
    """Commission in dollars per share traded."""
    slippage_bps: float = EQUITY_COSTS.slippage_bps
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
    episode_days: int = 1
    """Trading days per episode; the episode runs on from each close to the next open."""
    carry_overnight: bool = False
    """Hold the position from a close to the next open (multi-day episodes); False flattens at every close."""
    evaluation: bool = False
    """Walk every (day block, symbol) once in time order instead of sampling episodes at random."""

    @property
    def costs(self) -> CostModel:
        """The cost model of a share fill under these settings."""
        return CostModel(fee_per_unit=self.fee_per_share, slippage_bps=self.slippage_bps)


class IntradayTradingEnv(ScheduledEnv):
    """Batched IntradayTrading implementing `pipeline.envs.base.ResumableEnv` (discrete, 4 actions)."""

    discrete = True
    action_dim = 4
    initial_action_probs = (0.85, 0.05, 0.05, 0.05)
    """The starting policy suggested to agents (HOLD, LONG, SHORT, FLAT; CLSTM-PPO uses it by default): mostly
    HOLD, so that a fresh policy keeps a position it opens for about 10 bars (it leaves a long for SHORT or FLAT
    with probability 0.1 a bar). A uniform start changes position about every other bar; every change pays the
    spread, fee and slippage, and a momentum edge has no time to show, so PPO learns only that trading costs money
    (measured: at alpha 0.15 the policy stopped trading). Started mostly holding it learned the signal."""

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
        self.costs = self.config.costs
        # Accounting in float64 so a day of fills adds up to the cent (MPS has no float64).
        self._money = torch.float32 if self.device.type == "mps" else torch.float64
        # Flat [day * minute * symbol] views: one gather per step instead of three-index lookups.
        m = self.market
        # Marked and force-closed at the last quote where a bar has none; the agent's orders need a tradable bar.
        quotes = torch.stack([m.bid, m.ask], dim=-1).to(self._money)
        flat_time = m.num_days * m.num_minutes
        marks, _ = last_quotes(quotes.reshape(flat_time, m.num_symbols, 2), m.tradable.reshape(flat_time, -1))
        self._quotes = marks.reshape(-1, 2)
        self._tradable = m.tradable.reshape(-1)
        self._features = m.features.reshape(-1, m.num_features)
        self._turbulence = m.turbulence.reshape(-1)  # one index per (day, minute), shared by every symbol
        self.episodes = EpisodeSchedule(
            m.session_minutes, m.num_symbols, self.num_envs, self.config.episode_days,
            self.config.evaluation, self.device,
        )
        self._book = torch.zeros(self.num_envs, len(BOOK), dtype=self._money, device=self.device)
        self._window = RollingWindow(self.num_envs, self.config.window, self.obs_shape[1], self.device)

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

    @property
    def minute(self) -> torch.Tensor:
        """Bar index (within its day) of each env's current bar."""
        return self.episodes.bar

    @property
    def symbol(self) -> torch.Tensor:
        """Symbol index of each env's episode."""
        return self.episodes.symbol

    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        everyone = self.episodes.restart(seed)
        self._book = torch.zeros_like(self._book)
        self._window.restart(everyone, partial(self._row_parts, self._book))
        return self._window.obs, {"episode_id": self.episodes.episode_id}

    def _index(self) -> torch.Tensor:
        """Flat index of each env's current bar in the [day, minute, symbol] layout."""
        e, m = self.episodes, self.market
        return (e.day * m.num_minutes + e.bar) * m.num_symbols + e.symbol

    def _row_parts(self, book: torch.Tensor, env: torch.Tensor | slice = ALL) -> list[torch.Tensor]:
        """Observation rows of envs `env` at their current bar: [market features, agent state] column blocks."""
        now = self._index()[env]
        mid = self._quotes.index_select(0, now).mean(dim=-1)
        position, cash, entry = book[env, 0], book[env, 1], book[env, 2]
        agent = torch.stack(
            [
                position / self.config.trade_size,
                position * (mid - entry) / self.config.pnl_scale,
                (cash + position * mid) / self.config.pnl_scale,
                self.episodes.time_of_day()[env].to(book.dtype),
            ],
            dim=-1,
        ).float()
        return [self._features.index_select(0, now), agent]

    def _target_position(self, actions: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if cfg.turbulence_threshold is not None:
            e = self.episodes
            risk_off = self._turbulence[e.day * self.market.num_minutes + e.bar] > cfg.turbulence_threshold
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
        day, minute, symbol (the bar reached), episode_id, final_obs (the obs after this step, valid where the
        episode ended).
        """
        actions = torch.as_tensor(actions, device=self.device).long().reshape(self.num_envs)
        cfg, book, episodes = self.config, self._book, self.episodes
        idle = episodes.idle
        quote_now = self._quotes.index_select(0, self._index())
        equity_before = book[:, 1] + book[:, 0] * quote_now.mean(dim=-1)
        target = self._target_position(actions, book[:, 0])
        day_close, episode_end = episodes.advance()
        now = self._index()
        quote = self._quotes.index_select(0, now)
        mid = quote.mean(dim=-1)
        fills = self._tradable[now] & ~idle
        book = self._trade(book, (target - book[:, 0]) * fills, quote)
        pnl = book[:, 1] + book[:, 0] * mid
        terminated = episode_end | idle
        if cfg.loss_cut is not None:
            terminated = terminated | (pnl <= cfg.loss_cut)
        if cfg.profit_lock is not None:
            terminated = terminated | (pnl >= cfg.profit_lock)
        # Flatten at this bar's quote: a stop, the episode's end or a close, not a decision made on seen prices.
        flatten = terminated if cfg.carry_overnight else terminated | day_close
        book = self._trade(book, -book[:, 0] * flatten, quote)
        equity = book[:, 1] + book[:, 0] * mid
        reward = ((equity - equity_before) * cfg.reward_scale).clamp(-cfg.reward_clip, cfg.reward_clip)
        reward = reward.float().masked_fill(idle, 0.0)
        # Money in the accounting dtype (float64 off MPS) so the figures add up to the cent.
        info: dict[str, Any] = {name: book[:, i] for i, name in enumerate(BOOK)}
        info.update(
            pnl=equity,
            costs=info["fees"] + info["slippage"],
            fills=info["fills"].long(),
            day=episodes.day,
            minute=episodes.bar,
            symbol=episodes.symbol,
            episode_id=episodes.episode_id,
        )
        self._window.push(self._row_parts(book))
        episodes.start(terminated)
        self._book = book.masked_fill(terminated.unsqueeze(1), 0.0)
        # Envs that were already idle keep their window: nothing restarts there.
        restart = terminated & ~idle
        self._window.restart(restart, partial(self._row_parts, self._book), keep_final=restart)
        info["final_obs"] = self._window.final_obs
        return self._window.obs, reward, terminated, torch.zeros_like(terminated), info

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every mutable tensor of the env (copies), the episode generator's state as uint8: enough to resume."""
        return {
            "book": self._book.clone(),
            **{f"episodes.{k}": v for k, v in self.episodes.state_dict().items()},
            **{f"window.{k}": v for k, v in self._window.state_dict().items()},
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a `state_dict` taken from an env on the same market, config and num_envs."""
        self._book = state["book"].to(self.device, self._money).clone()
        self.episodes.load_state_dict(substate(state, "episodes."))
        self._window.load_state_dict(substate(state, "window."))
