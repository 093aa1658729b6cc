"""Which episode each env of a batch plays, and where in it it is: the episode clock shared by the trading envs.

An episode is `episode_days` consecutive trading days of one symbol (one symbol: the portfolio and options envs
pass `num_symbols=1`). Its bars run through every valid bar of each day (`session_bars[d]` of them) and on from
the last bar of day d to the first bar of day d+1; its last bar (the close of its last day) ends it.

- Training (`evaluation=False`): each new episode starts on a random day (one that leaves `episode_days` days)
  with a random symbol, drawn from the schedule's own generator.
- Evaluation (`evaluation=True`): the days are cut into consecutive blocks of `episode_days` (a last block too
  short to step through joins the block before it), and the episodes (block, symbol) are walked exactly once in
  time order (block-major, then symbol), dealt to the envs that need one in env order. Once all are dealt, envs
  that finish go idle: they stay done with `episode_id == -1`, and `finished` turns True when every env is idle.

Every episode gets an `episode_id`: the order in which it was dealt (in evaluation, its place in the walk).
Everything is tensors on the device and nothing reads a tensor on the host, so no step syncs.
"""

from __future__ import annotations

import torch


class EpisodeSchedule:
    """Per env: day, bar, symbol, last day and id of its episode; `advance` steps every env to its next bar."""

    def __init__(
        self,
        session_bars: torch.Tensor,
        num_symbols: int,
        num_envs: int,
        episode_days: int = 1,
        evaluation: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        bars = [int(b) for b in session_bars.tolist()]
        if episode_days < 1:
            raise ValueError(f"episode_days must be >= 1; got {episode_days}")
        if not evaluation and episode_days > len(bars):
            raise ValueError(
                f"episode_days={episode_days} exceeds the {len(bars)} trading days of the market; "
                "lower episode_days or load more days"
            )
        self.device = torch.device(device)
        self.num_envs, self.num_symbols, self.num_days = int(num_envs), int(num_symbols), len(bars)
        self.episode_days, self.evaluation = int(episode_days), bool(evaluation)
        blocks = _blocks(bars, episode_days)
        ends = [*(b - 1 for b in blocks[1:]), len(bars) - 1]
        spans = zip(blocks, ends, strict=True) if evaluation else (
            (s, s + episode_days - 1) for s in range(len(bars) - episode_days + 1)
        )
        for first, last in spans:
            if sum(bars[first : last + 1]) < 2:
                raise ValueError(
                    f"the episode of days {first}..{last} has fewer than 2 bars, so it cannot take a step; "
                    "on daily bars (one bar a day) set episode_days >= 2"
                )
        self.last_bar = (session_bars.to(self.device, torch.int64) - 1).clamp(min=0)
        self._block_start = torch.tensor(blocks, dtype=torch.int64, device=self.device)
        self._block_end = torch.tensor(ends, dtype=torch.int64, device=self.device)
        self.num_episodes = len(blocks) * self.num_symbols if evaluation else None
        """Episodes of the evaluation walk (None in training: episodes are drawn without end)."""
        self.generator = torch.Generator(device=self.device)
        self.generator.seed()
        n, dev = self.num_envs, self.device
        self.day = torch.zeros(n, dtype=torch.int64, device=dev)
        self.bar = torch.zeros(n, dtype=torch.int64, device=dev)
        self.symbol = torch.zeros(n, dtype=torch.int64, device=dev)
        self.end_day = torch.zeros(n, dtype=torch.int64, device=dev)
        self.episode_id = torch.full((n,), -1, dtype=torch.int64, device=dev)
        self.idle = torch.zeros(n, dtype=torch.bool, device=dev)
        self._dealt = torch.zeros((), dtype=torch.int64, device=dev)

    @property
    def finished(self) -> torch.Tensor:
        """bool scalar: the evaluation walk is over (every env idle); always False in training."""
        return self.idle.all()

    def restart(self, seed: int | None = None) -> torch.Tensor:
        """Start over: reseed (if given), restart the walk, and deal a new episode to every env; returns the mask."""
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self._dealt = torch.zeros_like(self._dealt)
        self.idle = torch.zeros_like(self.idle)
        everyone = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        self.start(everyone)
        return everyone

    def start(self, mask: torch.Tensor) -> None:
        """Deal a new episode to each env in `mask` (in env order); an env with none left goes idle."""
        rank = mask.cumsum(0) - 1
        episode = self._dealt + rank
        if self.evaluation:
            walk = episode.clamp(max=self.num_episodes - 1)
            block, symbol = walk // self.num_symbols, walk % self.num_symbols
            day = self._block_start[block]
            end_day = self._block_end[block]
            self.idle = self.idle | (mask & (episode >= self.num_episodes))
        else:
            n, gen, dev = self.num_envs, self.generator, self.device
            day = torch.randint(self.num_days - self.episode_days + 1, (n,), generator=gen, device=dev)
            symbol = torch.randint(self.num_symbols, (n,), generator=gen, device=dev)
            end_day = day + self.episode_days - 1
        self.day = torch.where(mask, day, self.day)
        self.symbol = torch.where(mask, symbol, self.symbol)
        self.end_day = torch.where(mask, end_day, self.end_day)
        self.bar = self.bar.masked_fill(mask, 0)
        self.episode_id = torch.where(mask, torch.where(self.idle, -1, episode), self.episode_id)
        self._dealt = self._dealt + mask.sum()

    def advance(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Move every active env to its next bar (the next day's first bar after a close); idle envs stay put.

        Returns (day_close, episode_end): the new bar is the last of its day / of its episode.
        """
        at_close = self.bar >= self.last_bar[self.day]
        move = ~self.idle
        self.day = torch.where(move & at_close, self.day + 1, self.day)
        self.bar = torch.where(move, torch.where(at_close, 0, self.bar + 1), self.bar)
        day_close = self.bar >= self.last_bar[self.day]
        return day_close, day_close & (self.day >= self.end_day)

    def time_of_day(self) -> torch.Tensor:
        """float32 [N]: the bar's place in its session, 0 at the open and 1 at the close."""
        return (self.bar / self.last_bar[self.day].clamp(min=1)).float()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """A snapshot of the schedule (copies), its generator's state as a uint8 tensor."""
        names = ("day", "bar", "symbol", "end_day", "episode_id", "idle")
        state = {name: getattr(self, name).clone() for name in names}
        return {**state, "dealt": self._dealt.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a `state_dict` snapshot (taken from a schedule over the same market and num_envs)."""
        for name in ("day", "bar", "symbol", "end_day", "episode_id", "idle"):
            setattr(self, name, state[name].to(self.device).clone())
        self._dealt = state["dealt"].to(self.device).clone()
        self.generator.set_state(state["generator"].cpu())


def _blocks(bars: list[int], episode_days: int) -> list[int]:
    """First days of the evaluation blocks; a last block with fewer than 2 bars joins the one before it."""
    starts = list(range(0, len(bars), episode_days))
    if len(starts) > 1 and sum(bars[starts[-1] :]) < 2:
        starts.pop()
    return starts


class ScheduledEnv:
    """What the three trading envs read off their episode clock (`self.episodes`), written once for all of them."""

    episodes: EpisodeSchedule

    @property
    def day(self) -> torch.Tensor:
        """Day index of each env's current bar (or snapshot)."""
        return self.episodes.day

    @property
    def eval_finished(self) -> torch.Tensor:
        """bool scalar: in evaluation, every episode of the walk has been played (always False in training)."""
        return self.episodes.finished

