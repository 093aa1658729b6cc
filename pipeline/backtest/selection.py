"""The choice of a day's candidate among its models, made on the selection days alone.

Each model registered for day D (every seed; the trainer already chose each one's checkpoint on the same days) is
walked over the selection days of D's dataset exactly as the gate and the backtest walk a model
(`runner.run_intraday`, evaluation mode, costs), and the one with the highest mean daily net return is the
candidate (ties: the smaller model_id). The gate then judges that one model on the gate days, which no choice
read: a choice among k models on the days that judge them would promote the luckiest of k no-edge models about
k times as often as the gate's level allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl

from pipeline.backtest.metrics import daily_frame
from pipeline.backtest.promotion import CANDIDATE
from pipeline.backtest.runner import run_intraday
from pipeline.envs.intraday import IntradayConfig
from pipeline.envs.tensors import MarketTensors


class Scorable(Protocol):
    """A model to choose among: its id, a policy with SB3's `predict`, and the env settings it was trained with."""

    model_id: str
    policy: Any
    env_config: IntradayConfig


@dataclass(frozen=True)
class Selection:
    """The chosen model, every model's score (mean daily net return on the selection days) and those days."""

    chosen: str
    scores: dict[str, float]
    days: tuple[str, ...]


def choose(returns: pl.DataFrame) -> Selection:
    """The model with the highest mean daily net return among the `model_id`s of `returns` (per-bar rows of the
    models on the selection days, `backtest_returns` columns); ties go to the smaller model_id."""
    if returns.is_empty() or returns["model_id"].null_count():
        raise ValueError("choosing needs per-bar rows of registered models (a model_id on every row); got "
                         f"{returns.height} rows")
    per_model = daily_frame(returns.with_columns(pl.col("model_id").alias("strategy")))
    means = per_model.group_by("strategy").agg(pl.col("ret").mean())
    scores = dict(zip(means["strategy"].to_list(), means["ret"].to_list(), strict=True))
    chosen = min(scores, key=lambda model_id: (-scores[model_id], model_id))
    days = tuple(str(d) for d in sorted(set(returns["trading_day"].to_list())))
    return Selection(chosen, scores, days)


def select_candidate(models: Sequence[Scorable], selection_market: MarketTensors) -> tuple[Selection, pl.DataFrame]:
    """Walk every model over `selection_market` and choose; returns the choice and the rows it rests on."""
    if not models:
        raise ValueError("no model to choose from: register at least one model of the day first")
    rows = pl.concat([run_intraday(selection_market, m.policy, CANDIDATE, model_id=m.model_id,
                                   env_config=m.env_config) for m in models])
    return choose(rows), rows
