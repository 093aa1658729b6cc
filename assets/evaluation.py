"""Evaluation assets (group `evaluation`), partitioned by trading day, out of sample by construction.

- `backtest` (day E): the candidate chosen for the previous trading day (E-1, through a partition mapping, so a
  backfill over a range is walk-forward), every intraday model that choice scored, by kind (strategies
  `kind:clstm_ppo` (its seeds averaged per day into one book), `kind:sb3_ppo`, `kind:ensemble`), the model in
  production on E and every baseline, run on day E in the envs' evaluation mode; rows to
  `evaluation.backtest_returns`, metrics with bootstrap intervals to `evaluation.backtest_metrics` (per strategy,
  so per kind: the day, and the trailing days backtested so far), equity and drawdown plots.
- `shadow_evaluation` (day E): the production model's live record since it went live, against the baselines on
  the same days, to `evaluation.shadow_record`, with a plot of its cumulative net return.
- `candidate_evaluation` (day D): the candidate chosen for D (`candidate_selection`), the production model and the
  baselines on the gate days of D's dataset, which nothing that chose the candidate read; rows to
  `evaluation.gate_returns`, what the promotion gate judges (`assets.deployment`). It runs only once the
  promotion decision of D-1 is made, since that decides which model is in production on D.

A production model that observes other columns than the candidate is run on its own columns (loaded from the
warehouse for the same days and symbols); if it cannot be run, that is logged and the gate's beats_production
fails with the reason, never skipped.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from assets.features import BARS_1M_KEY, MARKET_KEY
from assets.selection import CANDIDATE_ALGOS, SELECTION_KEY, chosen_candidate, scored_models
from assets.training import DATASET_KEY, one_day
from pipeline.backtest.inputs import (
    RegisteredPolicy,
    dataset_part,
    load_registered,
    market_for_days,
    same_observations,
)
from pipeline.backtest.metrics import METRICS_SCHEMA, metrics_table
from pipeline.backtest.promotion import CANDIDATE, PRODUCTION, daily_returns
from pipeline.backtest.reports import drawdown_chart, equity_chart, metrics_markdown
from pipeline.backtest.runner import RETURN_SCHEMA, run_intraday
from pipeline.backtest.selection import KIND_PREFIX, kind_strategy
from pipeline.backtest.strategies import COST_AWARE_ORACLE, MOMENTUM_BAND, run_baselines
from pipeline.contract.calendar import previous_trading_day
from pipeline.envs.tensors import MarketTensors
from pipeline.lake import Warehouse
from pipeline.registry import pending_decision, production_as_of
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

EVALUATION_GROUP = "evaluation"
BACKTEST_KEY = dg.AssetKey("backtest")
SHADOW_KEY = dg.AssetKey("shadow_evaluation")
CANDIDATE_EVALUATION_KEY = dg.AssetKey("candidate_evaluation")
RETURNS_TABLE, METRICS_TABLE = "evaluation.backtest_returns", "evaluation.backtest_metrics"
SHADOW_TABLE, GATE_TABLE = "evaluation.shadow_record", "evaluation.gate_returns"
PREVIOUS_DAY = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)


class EvaluationConfig(dg.Config):
    n_boot: int = Field(default=500, description="Bootstrap resamples behind every confidence interval.")
    level: float = Field(default=0.9, description="Two-sided level of the confidence intervals.")
    trailing_days: int = Field(default=20, description="Backtest days in the trailing metrics window.")
    seed: int = Field(default=0, description="Seed of the random baseline and the bootstrap.")


@dataclass(frozen=True)
class Evaluated:
    """Rows of a comparison on some days, and what became of the production model in it."""

    rows: pl.DataFrame
    production_id: str | None
    production_problem: str | None
    """Why a production model that exists was not run on these days (None when it was, or there is none)."""


def oracle_minutes(store: Warehouse, day: date, market_data: MarketDataResource) -> int | None:
    """The planted signal's horizon when the day's quotes all come from the synthetic market, else None."""
    sources = store.query("SELECT DISTINCT source FROM raw.quotes WHERE trading_day = ?", [day])["source"]
    if sources.len() and set(sources.to_list()) == {"synthetic"}:
        return market_data.synthetic_config().signal_minutes
    return None


def live_model(store: Warehouse, day: date) -> tuple[RegisteredPolicy | None, str | None]:
    """The model in production on `day`, loaded, or why it could not be loaded; (None, None) when there is none."""
    production = production_as_of(store, day)
    if production is None:
        return None, None
    try:
        return load_registered(production), None
    except ValueError as problem:
        return None, f"{production['model_id']}: {problem}"


def _production_rows(store: Warehouse, live: RegisteredPolicy, market: MarketTensors,
                     candidate: RegisteredPolicy | None) -> pl.DataFrame:
    """The production model on `market`'s days and symbols, on its own columns when they are not the
    candidate's."""
    if candidate is not None and not same_observations(live.dataset_dir, candidate.dataset_dir):
        market = market_for_days(store, market.trading_days, live.dataset_dir, symbols=market.symbols)
    return run_intraday(market, live.policy, PRODUCTION, model_id=live.model_id, env_config=live.env_config)


def run_strategies(
    store: Warehouse, market: MarketTensors, train_market: MarketTensors, candidate: RegisteredPolicy | None,
    day: date, config: EvaluationConfig, oracle: int | None, context: dg.AssetExecutionContext,
    kinds: Sequence[RegisteredPolicy] = (),
) -> Evaluated:
    """Rows of the candidate (if any), the models of `kinds` (each under its kind's strategy), the model in
    production on `day` and every baseline on `market`; the baselines' weights and bands come from `train_market`
    alone."""
    frames = []
    if candidate is not None:
        frames.append(run_intraday(market, candidate.policy, CANDIDATE, model_id=candidate.model_id,
                                   env_config=candidate.env_config))
    frames += [run_intraday(market, m.policy, kind_strategy(m.row["algo"]), model_id=m.model_id,
                            env_config=m.env_config) for m in kinds]
    live, problem = live_model(store, day)
    if live is not None:
        try:
            frames.append(_production_rows(store, live, market, candidate))
        except ValueError as failure:
            problem = f"{live.model_id} could not be run on {list(market.trading_days)}: {failure}"
    if problem is not None:
        context.log.warning(f"the production model is left out of this comparison: {problem}")
    reference = candidate or live
    frames.append(run_baselines(market, train_market, env_config=reference.env_config if reference else None,
                                seed=config.seed, oracle_signal_minutes=oracle))
    production_id = live.model_id if live is not None and problem is None else None
    return Evaluated(pl.concat(frames, how="vertical_relaxed"), production_id, problem)


def _previous_candidate(store: Warehouse, warehouse: WarehouseResource, day: date,
                        context: dg.AssetExecutionContext) -> RegisteredPolicy | None:
    """The candidate chosen for `day`, or none (the first day of a loop has no candidate of the day before)."""
    candidate = chosen_candidate(store, warehouse, day)
    if candidate is None:
        context.log.warning(f"no candidate was chosen for {day} (materialize candidate_selection for it): the "
                            "backtest runs the production model and the baselines only")
    return candidate


def build_evaluation_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=BACKTEST_KEY,
        deps=[dg.AssetDep(SELECTION_KEY, partition_mapping=PREVIOUS_DAY),
              dg.AssetDep(DATASET_KEY, partition_mapping=PREVIOUS_DAY), MARKET_KEY, BARS_1M_KEY],
        group_name=EVALUATION_GROUP,
        kinds={"duckdb", "pytorch"},
        partitions_def=partitions_def,
        pool="duckdb",
        description="Walk-forward backtest of day E: the candidate chosen for E-1, every intraday model of E-1 by "
        "kind (kind:<algo>), the production model and the baselines on day E (evaluation mode: every symbol once, fills at the next bar across the spread, with "
        "costs).",
    )
    def backtest(
        context: dg.AssetExecutionContext, config: EvaluationConfig, warehouse: WarehouseResource,
        market_data: MarketDataResource,
    ) -> dg.MaterializeResult:
        day = one_day(context)
        trained_on = previous_trading_day(day)
        store = warehouse.warehouse()
        candidate = _previous_candidate(store, warehouse, trained_on, context)
        kinds, unloaded = scored_models(store, trained_on)
        for problem in unloaded:
            context.log.warning(f"a model of {trained_on} is left out of the per-kind backtest: {problem}")
        live, _ = live_model(store, day)
        reference = candidate or live
        if reference is None:
            store.write_partition(RETURNS_TABLE, [day], pl.DataFrame(schema=RETURN_SCHEMA))
            store.write_partition(METRICS_TABLE, [day], pl.DataFrame(schema=METRICS_SCHEMA))
            note = f"nothing to backtest on {day}: no candidate of {trained_on} and no model in production"
            context.log.warning(note)
            return dg.MaterializeResult(metadata={"note": note, "rows": 0})
        evaluated = run_strategies(
            store, market_for_days(store, [day], reference.dataset_dir), dataset_part(reference.dataset_dir, "train"),
            candidate, day, config, oracle_minutes(store, day, market_data), context, kinds)
        returns = evaluated.rows
        store.write_partition(RETURNS_TABLE, [day], returns)
        trailing = _trailing_returns(store, day, config.trailing_days)
        metrics = pl.concat([
            metrics_table(returns, window="day", trading_day=day, n_boot=config.n_boot, level=config.level,
                          seed=config.seed),
            metrics_table(trailing, window=f"trailing_{config.trailing_days}d", trading_day=day,
                          n_boot=config.n_boot, level=config.level, seed=config.seed),
        ], how="vertical_relaxed")
        store.write_partition(METRICS_TABLE, [day], metrics)
        trailing_days = trailing["trading_day"].n_unique()
        context.log.info(f"backtest of {day}: candidate of {trained_on} {candidate.model_id if candidate else 'none'}, "
                         f"production {evaluated.production_id or 'none'}, {returns['strategy'].n_unique()} "
                         "strategies")
        return dg.MaterializeResult(metadata={
            "trained_on": str(trained_on),
            "candidate_model": candidate.model_id if candidate else "none",
            "production_model": evaluated.production_id or "none",
            "rows": returns.height,
            "metrics": dg.MetadataValue.md(metrics_markdown(metrics.filter(pl.col("window") == "day"))),
            "equity_curve": dg.MetadataValue.md(equity_chart(returns, f"Net return on {day}")),
            "drawdown": dg.MetadataValue.md(drawdown_chart(returns, f"Drawdown on {day}")),
            f"trailing_{config.trailing_days}d_metrics": dg.MetadataValue.md(metrics_markdown(
                metrics.filter(pl.col("window") != "day"))),
            "trailing_days_covered": trailing_days,
            **_headline(daily_returns(returns)),
        })

    @dg.asset(
        key=SHADOW_KEY,
        deps=[BACKTEST_KEY],
        group_name=EVALUATION_GROUP,
        kinds={"duckdb"},
        partitions_def=partitions_def,
        pool="duckdb",
        description="The production model's live record: its net return on every backtest day since it went live, "
        "against the baselines on the same days (evaluation.shadow_record).",
    )
    def shadow_evaluation(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        day = one_day(context)
        store = warehouse.warehouse()
        production = production_as_of(store, day)
        if production is None:
            store.write_partition(SHADOW_TABLE, [day], _shadow_frame(pl.DataFrame(), day, None))
            return dg.MaterializeResult(metadata={"production_model": "none",
                                                  "note": f"no model was in production on {day}"})
        model_id = production["model_id"]
        returns = store.query(
            f"SELECT * FROM {RETURNS_TABLE} WHERE trading_day <= ? AND trading_day IN (SELECT trading_day FROM "
            f"{RETURNS_TABLE} WHERE strategy = '{PRODUCTION}' AND model_id = ?) AND strategy != '{CANDIDATE}' "
            f"AND NOT starts_with(strategy, '{KIND_PREFIX}')",
            [day, model_id])
        returns = returns.filter((pl.col("strategy") != PRODUCTION) | (pl.col("model_id") == model_id))
        record = _shadow_frame(daily_returns(returns), day, model_id)
        store.write_partition(SHADOW_TABLE, [day], record)
        live = record.filter(pl.col("strategy") == PRODUCTION)
        return dg.MaterializeResult(metadata={
            "production_model": model_id,
            "live_days": int(live["days"][0]) if live.height else 0,
            "cumulative_net_return": float(live["cumulative_return"][0]) if live.height else 0.0,
            "record": dg.MetadataValue.md(_shadow_markdown(record)),
            "cumulative_pnl": dg.MetadataValue.md(equity_chart(
                daily_returns(returns).with_columns(pl.lit(None, pl.String).alias("model_id")),
                f"{model_id}: cumulative net return since it went live", by="trading_day")),
        })

    @dg.asset(
        key=CANDIDATE_EVALUATION_KEY,
        deps=[SELECTION_KEY, DATASET_KEY],
        group_name=EVALUATION_GROUP,
        kinds={"duckdb", "pytorch"},
        partitions_def=partitions_def,
        pool="duckdb",
        description="The candidate chosen for D against the production model and every baseline on the gate days "
        "of D's dataset, which nothing that chose it read: what the promotion gate judges. Waits for the promotion "
        "decision of D-1.",
    )
    def candidate_evaluation(
        context: dg.AssetExecutionContext, config: EvaluationConfig, warehouse: WarehouseResource,
        market_data: MarketDataResource,
    ) -> dg.MaterializeResult:
        day = one_day(context)
        store = warehouse.warehouse()
        before = previous_trading_day(day)
        pending = pending_decision(store, before, CANDIDATE_ALGOS)
        if pending is not None:
            raise ValueError(f"the gate of {day} compares its candidate with the model in production on {day}, which "
                             f"the promotion decision of {before} may change, and that decision is not made: "
                             f"{pending}. Run {before} through deployment first (days are decided in trading-day "
                             "order).")
        candidate = chosen_candidate(store, warehouse, day)
        if candidate is None:
            raise ValueError(f"no candidate was chosen for {day}: materialize candidate_selection for {day} first")
        gate = dataset_part(candidate.dataset_dir, "gate")
        evaluated = run_strategies(store, gate, dataset_part(candidate.dataset_dir, "train"), candidate, day,
                                   config, oracle_minutes(store, day, market_data), context)
        returns = evaluated.rows
        store.write_partition(GATE_TABLE, [day], returns.rename({"trading_day": "gate_day"})
                              .with_columns(pl.lit(day).alias("trading_day")))
        metrics = metrics_table(returns, window="gate", trading_day=day, n_boot=config.n_boot,
                                level=config.level, seed=config.seed)
        return dg.MaterializeResult(metadata={
            "candidate_model": candidate.model_id,
            "production_model": evaluated.production_id or "none",
            "production_problem": evaluated.production_problem or "none",
            "gate_days": dg.MetadataValue.json(list(gate.trading_days)),
            "metrics": dg.MetadataValue.md(metrics_markdown(metrics)),
            "daily_net_returns": dg.MetadataValue.md(_daily_markdown(daily_returns(returns))),
            "equity_curve": dg.MetadataValue.md(equity_chart(returns, f"Gate days of the {day} candidate")),
        })

    return [backtest, shadow_evaluation, candidate_evaluation]


def _trailing_returns(store: Warehouse, day: date, days: int) -> pl.DataFrame:
    """Rows of the last `days` backtested trading days up to `day` (what has been backtested so far)."""
    return store.query(
        f"SELECT * FROM {RETURNS_TABLE} WHERE trading_day IN (SELECT DISTINCT trading_day FROM {RETURNS_TABLE} "
        "WHERE trading_day <= ? ORDER BY trading_day DESC LIMIT ?)", [day, days])


def _headline(daily: pl.DataFrame) -> dict[str, Any]:
    """Numbers the UI can plot across partitions: the day's net return of the candidate, each model kind, the
    production model, the banded momentum baseline and the cost-aware oracle."""
    shown = (CANDIDATE, PRODUCTION, MOMENTUM_BAND, COST_AWARE_ORACLE)
    return {f"{r['strategy']}/day_return": float(r["ret"]) for r in daily.to_dicts()
            if r["strategy"] in shown or r["strategy"].startswith(KIND_PREFIX)}


def _shadow_frame(daily: pl.DataFrame, day: date, model_id: str | None) -> pl.DataFrame:
    """One row per strategy: the live record up to `day` (days, cumulative and mean daily net return, the day's)."""
    schema = {"trading_day": pl.Date, "model_id": pl.String, "strategy": pl.String, "days": pl.Int64,
              "since": pl.Date, "day_return": pl.Float64, "cumulative_return": pl.Float64,
              "mean_daily_return": pl.Float64}
    if daily.is_empty():
        return pl.DataFrame(schema=schema)
    rows = (daily.sort("trading_day").group_by("strategy", maintain_order=True).agg(
        pl.len().alias("days"), pl.col("trading_day").min().alias("since"),
        pl.col("ret").last().alias("day_return"),
        ((pl.col("ret") + 1).product() - 1).alias("cumulative_return"),
        pl.col("ret").mean().alias("mean_daily_return")))
    return rows.with_columns(pl.lit(day).alias("trading_day"), pl.lit(model_id).alias("model_id")).select(
        list(schema)).cast(schema)


def _shadow_markdown(record: pl.DataFrame) -> str:
    lines = ["| strategy | days | since | cumulative net | mean daily | last day |", "|---|---|---|---|---|---|"]
    for r in record.sort("cumulative_return", descending=True).to_dicts():
        lines.append(f"| {r['strategy']} | {r['days']} | {r['since']} | {r['cumulative_return']:+.3%} | "
                     f"{r['mean_daily_return']:+.3%} | {r['day_return']:+.3%} |")
    return "\n".join(lines)


def _daily_markdown(daily: pl.DataFrame) -> str:
    wide = daily.pivot(on="trading_day", index="strategy", values="ret").sort("strategy")
    days = [c for c in wide.columns if c != "strategy"]
    lines = ["| strategy | " + " | ".join(days) + " |", "|---|" + "---|" * len(days)]
    for r in wide.to_dicts():
        lines.append(f"| {r['strategy']} | " + " | ".join(f"{r[d]:+.3%}" for d in days) + " |")
    return "\n".join(lines)
