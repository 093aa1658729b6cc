"""What a person reads of a backtest in the UI: equity and drawdown charts against the baselines (one shared
scale, so the lines compare), and the metrics as a markdown table with their confidence intervals."""

from __future__ import annotations

import math

import polars as pl

from pipeline.training.curves import markdown_image, svg_line_chart

# The metrics shown in the table (all are in evaluation.backtest_metrics); fractions are shown as percentages.
SHOWN = ("total_return", "sharpe", "sortino", "max_drawdown", "win_rate", "profit_factor", "turnover", "costs_paid")
PERCENT = {"total_return", "annualized_return", "annualized_volatility", "max_drawdown", "win_rate", "costs_paid"}


def _per_strategy(returns: pl.DataFrame, by: str) -> pl.DataFrame:
    """Per (strategy, `by`): the return averaged over the strategy's models (ensemble members)."""
    per_model = returns.group_by("strategy", "model_id", by).agg(pl.col("ret").sum())
    return per_model.group_by("strategy", by).agg(pl.col("ret").mean()).sort("strategy", by)


def _curves(returns: pl.DataFrame, by: str, drawdown: bool) -> dict[str, list[tuple[float, float]]]:
    series = {}
    for (strategy,), rows in _per_strategy(returns, by).group_by("strategy", maintain_order=True):
        equity = (rows["ret"] + 1.0).cum_prod()
        values = (equity / equity.cum_max() - 1.0) if drawdown else (equity - 1.0)
        series[str(strategy)] = [(float(i), 100.0 * float(v)) for i, v in enumerate(values.to_list())]
    return series


def equity_chart(returns: pl.DataFrame, title: str, by: str = "ts") -> str:
    """Markdown image: each strategy's cumulative net return (%) over the bars (or days, `by="trading_day"`)."""
    unit = "bars" if by == "ts" else "days"
    return markdown_image(svg_line_chart(_curves(returns, by, False), title + " (%)", unit, shared_y=True),
                          "equity curves")


def drawdown_chart(returns: pl.DataFrame, title: str, by: str = "ts") -> str:
    """Markdown image: each strategy's drawdown (%) from its running peak."""
    unit = "bars" if by == "ts" else "days"
    return markdown_image(svg_line_chart(_curves(returns, by, True), title + " (%)", unit, shared_y=True),
                          "drawdowns")


def _cell(metric: str, value: float | None, low: float | None, high: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    fmt = (lambda v: f"{100 * v:+.2f}%") if metric in PERCENT else (lambda v: f"{v:.3g}")
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return fmt(value)
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def metrics_markdown(metrics: pl.DataFrame) -> str:
    """One row per strategy (best total return first), one column per shown metric: value [CI low, CI high]."""
    if metrics.is_empty():
        return "no metrics"
    order = (metrics.filter(pl.col("metric") == "total_return").sort("value", descending=True, nulls_last=True)
             ["strategy"].to_list())
    order += sorted(set(metrics["strategy"].to_list()) - set(order))
    lines = ["| strategy | " + " | ".join(SHOWN) + " |", "|---|" + "---|" * len(SHOWN)]
    cells = {(r["strategy"], r["metric"]): r for r in metrics.to_dicts()}
    for strategy in order:
        row = [_cell(m, *(cells[(strategy, m)][k] for k in ("value", "ci_low", "ci_high")))
               if (strategy, m) in cells else "—" for m in SHOWN]
        lines.append(f"| {strategy} | " + " | ".join(row) + " |")
    return "\n".join(lines)
