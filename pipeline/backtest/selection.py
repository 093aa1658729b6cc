"""The choice of a day's candidate among its models, made on the selection days alone.

The candidates of day D are every intraday model registered for D on D's current dataset (`day_models`):
CLSTM-PPO seeds (the trainer already chose each one's checkpoint on the same days), SB3 PPO and the ensemble. Each
is walked over the selection days of D's dataset exactly as the gate and the backtest walk a model
(`runner.run_intraday`, evaluation mode, costs), and the one with the highest mean daily net return is the
candidate (ties: the smaller model_id). The gate then judges that one model on the gate days, which no choice
read: a choice among k models on the days that judge them would promote the luckiest of k no-edge models about
k times as often as the gate's level allows.

The ensemble's score is optimistic: its weights were fit on these same selection days (its members' scores
there), so it is chosen a little more often than its out-of-sample worth says. The gate days stay untouched by
that fit and by this choice, so the gate's verdict on whatever is chosen is not.

Every model not chosen gets its verdict (`record_choice`): `rejected`, with its score against the chosen one's,
so after a day's choice no intraday model of the day but the chosen one is left a `candidate`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

import polars as pl

from pipeline.backtest.inputs import INTRADAY_KINDS
from pipeline.backtest.metrics import daily_frame
from pipeline.backtest.promotion import CANDIDATE
from pipeline.backtest.runner import run_intraday
from pipeline.envs.intraday import IntradayConfig
from pipeline.envs.tensors import MarketTensors
from pipeline.lake import Warehouse
from pipeline.registry import get_model, record_selection, set_status
from pipeline.training.ensembles import current_registrations

KIND_PREFIX = "kind:"
"""Backtest strategies of one model kind of the day before (`kind:clstm_ppo`, `kind:sb3_ppo`, `kind:ensemble`)."""


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


def kind_strategy(algo: str) -> str:
    """The backtest strategy of the models of kind `algo` (their rows are averaged per day into one book)."""
    return f"{KIND_PREFIX}{algo}"


def day_models(store: Warehouse, day: date, data_version: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The registry rows of the intraday models of `day` on `data_version` that can be chosen (`INTRADAY_KINDS`,
    each current: `current_registrations`), and the ensembles that cannot, with why: an ensemble stands on its
    members' files, so one whose members are no longer current is not the model that was scored."""
    rows = current_registrations(store, day, data_version, INTRADAY_KINDS)
    current = {row["model_id"] for row in rows}
    usable, stale = [], {}
    for row in rows:
        members = set(json.loads(row["metrics"] or "{}").get("members", [])) if row["algo"] == "ensemble" else set()
        if members - current:
            stale[row["model_id"]] = (f"its members {sorted(members - current)} were overwritten or retrained since "
                                      "it was built: materialize ensemble_policy again")
        else:
            usable.append(row)
    return usable, stale


def not_chosen(selection: Selection, day: date) -> dict[str, str]:
    """Why each model `selection` scored was not chosen (every model but the chosen one)."""
    best = selection.scores[selection.chosen]
    return {model_id: (f"not chosen on the selection days of {day}: mean daily net return {score:+.4%} vs "
                       f"{best:+.4%} of the chosen {selection.chosen}")
            for model_id, score in sorted(selection.scores.items()) if model_id != selection.chosen}


def record_choice(store: Warehouse, day: date, selection: Selection, refused: Mapping[str, str] | None = None) -> None:
    """Record `selection` as the choice of `day` and give every other model its verdict: each one scored but not
    chosen (`not_chosen`), and each in `refused` (model_id -> why it could not be scored), becomes `rejected` with
    its reason. Only a `candidate`, or one rejected by an earlier choice (never judged by the gate), changes: a
    verdict of the gate, a production or a retired model keeps its status. The chosen model, if an earlier
    choice rejected it, is a candidate again."""
    for model_id, reason in {**not_chosen(selection, day), **(refused or {})}.items():
        if _open_to_choice(get_model(store, model_id)):
            set_status(store, model_id, "rejected", reason)
    chosen = get_model(store, selection.chosen)
    if chosen["status"] == "rejected" and _open_to_choice(chosen):
        set_status(store, selection.chosen, "candidate", f"chosen on the selection days of {day}")
    record_selection(store, day, selection.chosen, selection.scores, list(selection.days))


def _open_to_choice(row: Mapping[str, Any]) -> bool:
    return row["status"] == "candidate" or (row["status"] == "rejected" and row.get("gate") is None)
