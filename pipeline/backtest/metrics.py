"""Performance metrics of backtest returns (`evaluation.backtest_returns` rows), with bootstrap confidence intervals.

The rows of one strategy are per-bar net returns of one or more members (`model_id`: ensemble members or seeds;
null for a baseline) over one or more trading days. Members are averaged per bar first, so the point estimate is
the metric of the strategy's average book; the metrics of that series:

- total_return: compounded, prod(1 + r) - 1.
- annualized_return: (1 + total_return) ** (periods_per_year / bars) - 1 (-1 once the equity is gone).
  periods_per_year = bars per day measured from the data (session bars / days) x 252, unless given.
- annualized_volatility: sample std (ddof 1) of r x sqrt(periods_per_year); NaN with fewer than 2 bars.
- sharpe: mean(r) / std(r) x sqrt(periods_per_year); 0 when std is 0 (a flat series takes no risk).
- sortino: mean(r) / sqrt(mean(min(r, 0)^2)) x sqrt(periods_per_year); 0 when the series neither gains nor loses
  on average without a losing bar, NaN (undefined: nothing to divide by) when it gains without a losing bar.
- max_drawdown: the largest fall of the compounded equity curve (starting at 1) below its running peak, as a
  positive fraction.
- calmar: annualized_return / max_drawdown; 0 when both are 0, NaN when there is no drawdown but a return.
- win_rate: the share of (trading_day, model_id) units whose own compounded net return is > 0.
- profit_factor: sum of the positive bar returns / |sum of the negative ones|; NaN when no bar lost.
- turnover: sum over bars of |position(t) - position(t-1)|, each day starting flat.
- costs_paid: sum of the per-bar costs (fractions of capital).

NaN is the only non-finite value produced, and only where the docstring above says so; `metrics_table` writes it
as NULL. Confidence intervals bootstrap the (trading_day, model_id) units: days are resampled with replacement,
and so are the members that traded each day (a trailing window may hold a different model every day); the metrics
of each resampled average book make the distribution (percentile interval). With a single unit, a moving-block
bootstrap of its bars (blocks of `BLOCK_BARS`) stands in. Everything is vectorized over the resamples, and the
same seed gives the same intervals.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

METRICS = ("total_return", "annualized_return", "annualized_volatility", "sharpe", "sortino", "max_drawdown",
           "calmar", "win_rate", "profit_factor", "turnover", "costs_paid")
TRADING_DAYS_PER_YEAR = 252
BLOCK_BARS = 30
"""Block length of the single-unit bootstrap: about half an hour of minute bars, longer than the autocorrelation
of the returns the strategies trade on, so each block keeps it."""
METRICS_SCHEMA = {"trading_day": pl.Date, "window": pl.Utf8, "strategy": pl.Utf8, "metric": pl.Utf8,
                  "value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64}
_TINY = 1e-15


class _Panel:
    """One strategy's rows as [days, members, bars] arrays (bars in ts order within each day)."""

    def __init__(self, returns: pl.DataFrame) -> None:
        if returns.is_empty():
            raise ValueError("no backtest rows to compute metrics from; run the backtest first")
        rows = returns.with_columns(pl.col("model_id").fill_null("")).sort("trading_day", "model_id", "ts")
        day = rows["trading_day"].rank("dense").cast(pl.Int64).to_numpy() - 1
        member = rows["model_id"].rank("dense").cast(pl.Int64).to_numpy() - 1
        bar = rows.select(pl.col("ts").rank("dense").over("trading_day").cast(pl.Int64))["ts"].to_numpy() - 1
        shape = (day.max() + 1, member.max() + 1, bar.max() + 1)
        self.present = np.zeros(shape, dtype=bool)
        self.present[day, member, bar] = True
        self.ret, self.position, self.cost = (np.zeros(shape) for _ in range(3))
        for name, target in (("ret", self.ret), ("position", self.position), ("cost", self.cost)):
            target[day, member, bar] = rows[name].cast(pl.Float64).fill_null(0.0).to_numpy()
        exists = self.present.any(axis=2)
        totals = np.where(self.present, 1.0 + self.ret, 1.0).prod(axis=2) - 1.0
        self.wins, self.units = (totals > 0) & exists, exists.astype(np.float64)
        self.bars_per_day = self.present.any(axis=1).sum() / shape[0]

    @property
    def num_units(self) -> int:
        return int(self.units.sum())

    def book(self, member_counts: np.ndarray, days: np.ndarray) -> dict[str, np.ndarray]:
        """Averaged books of B resamples: `member_counts` [B, days, members] times each member of each day is
        drawn, `days` [B, D] the days drawn. Returns ret, cost, turn (|delta position|), mask [B, D, bars] and the
        win share [B]."""
        weight = np.einsum("bdm,dmt->bdt", member_counts, self.present.astype(np.float64))
        mask = weight > 0
        books = {}
        for name in ("ret", "position", "cost"):
            total = np.einsum("bdm,dmt->bdt", member_counts, np.where(self.present, getattr(self, name), 0.0))
            books[name] = np.take_along_axis(np.where(mask, total / np.where(mask, weight, 1.0), 0.0),
                                             days[:, :, None], axis=1)
        mask = np.take_along_axis(mask, days[:, :, None], axis=1)
        position = books.pop("position")
        turn = np.abs(np.diff(position, axis=2, prepend=0.0)) * mask
        counts = np.take_along_axis(member_counts, days[:, :, None], axis=1)
        won = (counts * self.wins[days]).sum(axis=(1, 2))
        drawn = (counts * self.units[days]).sum(axis=(1, 2))
        return {**books, "turn": turn, "mask": mask, "win_rate": won / np.maximum(drawn, 1.0)}

    def member_draws(self, n_boot: int, rng: np.random.Generator) -> np.ndarray:
        """[n_boot, days, members]: each day's own members (the models that traded it) drawn with replacement."""
        counts = np.zeros((n_boot, *self.units.shape))
        for d, present in enumerate(self.units.astype(bool)):
            k = int(present.sum())
            counts[:, d, present] = rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot)
        return counts


def _safe_ratio(num: np.ndarray, den: np.ndarray, zero_num: float = 0.0) -> np.ndarray:
    """num / den where den > 0; `zero_num` where both are ~0; NaN where only den is ~0 (undefined)."""
    ok = den > _TINY
    return np.where(ok, num / np.where(ok, den, 1.0), np.where(np.abs(num) <= _TINY, zero_num, np.nan))


def _metric_values(book: dict[str, np.ndarray], periods_per_year: float) -> dict[str, np.ndarray]:
    """Every metric of B books at once ([B] arrays), as defined in the module docstring."""
    b = book["ret"].shape[0]
    ret, mask = book["ret"].reshape(b, -1), book["mask"].reshape(b, -1)
    n = mask.sum(axis=1)
    total = (1.0 + ret).prod(axis=1) - 1.0
    growth = np.maximum(1.0 + total, 0.0)
    annual = np.where(growth > 0, growth ** (periods_per_year / np.maximum(n, 1)), 0.0) - 1.0
    mean = ret.sum(axis=1) / np.maximum(n, 1)
    var = (((ret - mean[:, None]) ** 2) * mask).sum(axis=1) / np.maximum(n - 1, 1)
    std = np.where(n >= 2, np.sqrt(var), np.nan)
    root = np.sqrt(periods_per_year)
    downside = np.sqrt((np.minimum(ret, 0.0) ** 2).sum(axis=1) / np.maximum(n, 1))
    equity = (1.0 + ret).cumprod(axis=1)
    peak = np.maximum(np.maximum.accumulate(equity, axis=1), 1.0)
    drawdown = (1.0 - equity / peak).max(axis=1)
    gains, losses = np.clip(ret, 0.0, None).sum(axis=1), -np.clip(ret, None, 0.0).sum(axis=1)
    return {
        "total_return": total,
        "annualized_return": annual,
        "annualized_volatility": std * root,
        "sharpe": np.where(np.nan_to_num(std) > _TINY, mean / np.where(std > _TINY, std, 1.0) * root, 0.0),
        "sortino": _safe_ratio(mean, downside) * root,
        "max_drawdown": drawdown,
        "calmar": _safe_ratio(annual, drawdown),
        "win_rate": book["win_rate"],
        "profit_factor": np.where(losses > _TINY, gains / np.where(losses > _TINY, losses, 1.0), np.nan),
        "turnover": book["turn"].reshape(b, -1).sum(axis=1),
        "costs_paid": (book["cost"].reshape(b, -1) * mask).sum(axis=1),
    }


def _identity_book(panel: _Panel) -> dict[str, np.ndarray]:
    return panel.book(panel.units[None], np.arange(panel.units.shape[0])[None, :])


def compute_metrics(returns: pl.DataFrame, periods_per_year: float | None = None) -> dict[str, float]:
    """`METRICS` of one strategy's `backtest_returns` rows (members averaged per bar; see the module docstring)."""
    panel = _Panel(returns)
    ppy = periods_per_year or panel.bars_per_day * TRADING_DAYS_PER_YEAR
    return {name: float(v[0]) for name, v in _metric_values(_identity_book(panel), ppy).items()}


def _block_book(panel: _Panel, n_boot: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Moving-block resamples of the bars of a panel's single unit (one day, one member)."""
    book = _identity_book(panel)
    bars = int(book["mask"].sum())
    block = min(BLOCK_BARS, bars)
    starts = rng.integers(0, bars - block + 1, size=(n_boot, -(-bars // block)))
    index = (starts[:, :, None] + np.arange(block)).reshape(n_boot, -1)[:, :bars]
    picked = {name: book[name][0, 0, :bars][index][:, None, :] for name in ("ret", "cost", "turn")}
    totals = (1.0 + picked["ret"][:, 0]).prod(axis=1) - 1.0
    return {**picked, "mask": np.ones((n_boot, 1, bars), dtype=bool), "win_rate": (totals > 0).astype(float)}


def _bootstrap_values(panel: _Panel, n_boot: int, ppy: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if panel.num_units <= 1:
        return _metric_values(_block_book(panel, n_boot, rng), ppy)
    days = panel.units.shape[0]
    counts = panel.member_draws(n_boot, rng)
    drawn_days = rng.integers(0, days, size=(n_boot, days))
    return _metric_values(panel.book(counts, drawn_days), ppy)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def metrics_table(
    returns: pl.DataFrame, *, window: str, trading_day: date, n_boot: int = 500, level: float = 0.9, seed: int = 0
) -> pl.DataFrame:
    """One row per (strategy, metric): trading_day, window, strategy, metric, value, ci_low, ci_high.

    `value` is `compute_metrics` of the strategy's rows; [ci_low, ci_high] the `level` percentile interval of the
    bootstrap (see the module docstring). NaN (an undefined metric) is written as null.
    """
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError(f"need 0 < level < 1 and n_boot >= 1; got level={level}, n_boot={n_boot}")
    rows = []
    for strategy in sorted(returns["strategy"].unique().to_list()):
        panel = _Panel(returns.filter(pl.col("strategy") == strategy))
        ppy = panel.bars_per_day * TRADING_DAYS_PER_YEAR
        point = _metric_values(_identity_book(panel), ppy)
        boot = _bootstrap_values(panel, n_boot, ppy, seed)
        for name in METRICS:
            lo, hi = _interval(boot[name], level)
            rows.append((trading_day, window, strategy, name, float(point[name][0]), lo, hi))
    frame = pl.DataFrame(rows, schema=METRICS_SCHEMA, orient="row")
    return frame.with_columns(pl.col(c).fill_nan(None) for c in ("value", "ci_low", "ci_high"))


def paired_difference_ci(
    a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000, level: float = 0.9, seed: int = 0, block: int = 1
) -> tuple[float, float, float]:
    """(mean(a - b), lo, hi): the mean paired difference (e.g. episode PnLs of two policies on the same episodes)
    and its `level` percentile bootstrap interval. `block` > 1 resamples moving blocks of that many consecutive
    pairs (for series whose neighbours are correlated, like per-bar returns of positions held for several bars).
    With a single pair there is no spread to resample: NaN bounds."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.ndim != 1 or diff.size == 0:
        raise ValueError(f"a and b must be equal-length 1-D arrays of paired outcomes; got shapes "
                         f"{np.shape(a)} and {np.shape(b)}")
    mean = float(diff.mean())
    if diff.size == 1:
        return mean, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    size = min(max(block, 1), diff.size)
    starts = rng.integers(0, diff.size - size + 1, size=(n_boot, -(-diff.size // size)))
    index = (starts[:, :, None] + np.arange(size)).reshape(n_boot, -1)[:, :diff.size]
    means = diff[index].mean(axis=1)
    lo, hi = _interval(means, level)
    return mean, lo, hi
