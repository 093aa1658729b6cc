"""Evaluation assets (group `evaluation`), partitioned by trading day, out of sample by construction.

- `backtest` (day E): the candidate of the previous trading day (E-1, through a partition mapping, so a backfill
  over a range is walk-forward), the model in production on E and every baseline, run on day E in the envs'
  evaluation mode; rows to `evaluation.backtest_returns`, metrics with bootstrap intervals to
  `evaluation.backtest_metrics` (the day, and the trailing days backtested so far), equity and drawdown plots.
- `shadow_evaluation` (day E): the production model's live record since it went live, against the baselines on
  the same days, to `evaluation.shadow_record`, with a plot of its cumulative net return.
- `candidate_evaluation` (day D): the candidate of D, the production model and the baselines on the validation
  days of D's dataset (after the embargo, never trained on); what the promotion gate judges (`assets.deployment`).
"""

from datetime import date
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from assets.features import BARS_1M_KEY, MARKET_KEY
from assets.training import CLSTM_KEY, DATASET_KEY, dataset_dir, one_day
from pipeline.backtest.inputs import (
    RegisteredPolicy,
    load_registered,
    market_for_day,
    same_observations,
    training_market,
    validation_market,
)
from pipeline.backtest.metrics import METRICS_SCHEMA, metrics_table
from pipeline.backtest.promotion import CANDIDATE, PRODUCTION, daily_returns
from pipeline.backtest.reports import drawdown_chart, equity_chart, metrics_markdown
from pipeline.backtest.runner import RETURN_SCHEMA, run_intraday
from pipeline.backtest.strategies import run_baselines
from pipeline.envs.market_data import MarketTensors
from pipeline.features.lookback import earlier_trading_days
from pipeline.lake import Warehouse
from pipeline.registry import get_model, production_as_of
from pipeline.training.dataset import load_manifest
from pipeline.training.ensembles import registered_members
from resources.market_data import MarketDataResource
from resources.warehouse import WarehouseResource

EVALUATION_GROUP = "evaluation"
BACKTEST_KEY = dg.AssetKey("backtest")
SHADOW_KEY = dg.AssetKey("shadow_evaluation")
CANDIDATE_EVALUATION_KEY = dg.AssetKey("candidate_evaluation")
RETURNS_TABLE, METRICS_TABLE = "evaluation.backtest_returns", "evaluation.backtest_metrics"
SHADOW_TABLE, VALIDATION_TABLE = "evaluation.shadow_record", "evaluation.validation_returns"
PREVIOUS_DAY = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)


class EvaluationConfig(dg.Config):
    n_boot: int = Field(default=500, description="Bootstrap resamples behind every confidence interval.")
    level: float = Field(default=0.9, description="Two-sided level of the confidence intervals.")
    trailing_days: int = Field(default=20, description="Backtest days in the trailing metrics window.")
    seed: int = Field(default=0, description="Seed of the random baseline and the bootstrap.")


def previous_trading_day(day: date) -> date:
    return earlier_trading_days(day, 1)[0]


def candidates_of(store: Warehouse, warehouse: WarehouseResource, day: date) -> list[RegisteredPolicy]:
    """The CLSTM-PPO models trained on day `day`'s dataset (every seed: the ensemble members), loaded."""
    data_version = load_manifest(dataset_dir(warehouse, day))["data_version"]
    members = registered_members(store, day, data_version, algos=("clstm_ppo",))
    if not members:
        raise ValueError(f"no CLSTM-PPO model of {day} on its current dataset is registered: materialize "
                         f"clstm_ppo_policy for {day} first")
    return [load_registered(get_model(store, m.model_id)) for m in members]


def _candidates_if_any(store: Warehouse, warehouse: WarehouseResource, day: date,
                       context: dg.AssetExecutionContext) -> list[RegisteredPolicy]:
    """The candidates of `day`, or none (the first day of a loop has no candidate of the day before)."""
    try:
        return candidates_of(store, warehouse, day)
    except ValueError as missing:
        context.log.warning(f"no candidate of {day} to backtest: {missing}")
        return []


def oracle_minutes(store: Warehouse, day: date, market_data: MarketDataResource) -> int | None:
    """The planted signal's horizon when the day's quotes all come from the synthetic market, else None."""
    sources = store.query("SELECT DISTINCT source FROM raw.quotes WHERE trading_day = ?", [day])["source"]
    if sources.len() and set(sources.to_list()) == {"synthetic"}:
        return market_data.synthetic_config().signal_minutes
    return None


def live_model(store: Warehouse, day: date) -> RegisteredPolicy | None:
    """The model in production on `day` (trained before it), loaded; None when there is none."""
    production = production_as_of(store, day)
    return load_registered(production) if production is not None else None


def run_strategies(
    market: MarketTensors, train_market: MarketTensors, candidates: list[RegisteredPolicy],
    live: RegisteredPolicy | None, config: EvaluationConfig, oracle: int | None, context: dg.AssetExecutionContext,
) -> tuple[pl.DataFrame, str | None]:
    """Rows of every candidate member, the production model (when it observes the same columns) and every
    baseline on `market`; the portfolio baselines' weights come from `train_market` alone."""
    frames = [run_intraday(market, c.policy, CANDIDATE, model_id=c.model_id, env_config=c.env_config)
              for c in candidates]
    if live is not None and candidates and not same_observations(live.dataset_dir, candidates[0].dataset_dir):
        context.log.warning(f"production model {live.model_id} observes other columns than the candidate; "
                            "it is left out of this comparison")
        live = None
    if live is not None:
        frames.append(run_intraday(market, live.policy, PRODUCTION, model_id=live.model_id,
                                   env_config=live.env_config))
    reference = candidates[0] if candidates else live
    frames.append(run_baselines(market, train_market, env_config=reference.env_config if reference else None,
                                seed=config.seed, oracle_signal_minutes=oracle))
    return pl.concat(frames, how="vertical_relaxed"), live.model_id if live is not None else None


def build_evaluation_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=BACKTEST_KEY,
        deps=[dg.AssetDep(CLSTM_KEY, partition_mapping=PREVIOUS_DAY),
              dg.AssetDep(DATASET_KEY, partition_mapping=PREVIOUS_DAY), MARKET_KEY, BARS_1M_KEY],
        group_name=EVALUATION_GROUP,
        kinds={"duckdb", "pytorch"},
        partitions_def=partitions_def,
        pool="duckdb",
        description="Walk-forward backtest of day E: the candidate of E-1, the production model and the baselines "
        "on day E (evaluation mode: every symbol once, fills at the next bar across the spread, with costs).",
    )
    def backtest(
        context: dg.AssetExecutionContext, config: EvaluationConfig, warehouse: WarehouseResource,
        market_data: MarketDataResource,
    ) -> dg.MaterializeResult:
        day = one_day(context)
        trained_on = previous_trading_day(day)
        store = warehouse.warehouse()
        candidates = _candidates_if_any(store, warehouse, trained_on, context)
        live = live_model(store, day)
        reference = candidates[0] if candidates else live
        if reference is None:
            store.write_partition(RETURNS_TABLE, [day], pl.DataFrame(schema=RETURN_SCHEMA))
            store.write_partition(METRICS_TABLE, [day], pl.DataFrame(schema=METRICS_SCHEMA))
            note = f"nothing to backtest on {day}: no candidate of {trained_on} and no model in production"
            context.log.warning(note)
            return dg.MaterializeResult(metadata={"note": note, "rows": 0})
        returns, production_id = run_strategies(
            market_for_day(store, day, reference.dataset_dir), training_market(reference.dataset_dir), candidates,
            live, config, oracle_minutes(store, day, market_data), context)
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
        context.log.info(f"backtest of {day}: candidate of {trained_on} ({len(candidates)} member(s)), "
                         f"production {production_id or 'none'}, {returns['strategy'].n_unique()} strategies")
        return dg.MaterializeResult(metadata={
            "trained_on": str(trained_on),
            "candidate_models": dg.MetadataValue.json([c.model_id for c in candidates]),
            "production_model": production_id or "none",
            "rows": returns.height,
            "metrics": dg.MetadataValue.md(metrics_markdown(metrics.filter(pl.col("window") == "day"))),
            "equity_curve": dg.MetadataValue.md(equity_chart(returns, f"Net return on {day}")),
            "drawdown": dg.MetadataValue.md(drawdown_chart(returns, f"Drawdown on {day}")),
            f"trailing_{config.trailing_days}d_metrics": dg.MetadataValue.md(metrics_markdown(
                metrics.filter(pl.col("window") != "day"))),
            "trailing_days_covered": trailing_days,
            **_headline(metrics.filter(pl.col("window") == "day")),
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
            f"{RETURNS_TABLE} WHERE strategy = '{PRODUCTION}' AND model_id = ?) AND strategy != '{CANDIDATE}'",
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
        deps=[CLSTM_KEY, DATASET_KEY],
        group_name=EVALUATION_GROUP,
        kinds={"duckdb", "pytorch"},
        partitions_def=partitions_def,
        pool="duckdb",
        description="The candidate of D against the production model and every baseline on the validation days "
        "of D's dataset (after the embargo): what the promotion gate judges.",
    )
    def candidate_evaluation(
        context: dg.AssetExecutionContext, config: EvaluationConfig, warehouse: WarehouseResource,
        market_data: MarketDataResource,
    ) -> dg.MaterializeResult:
        day = one_day(context)
        store = warehouse.warehouse()
        candidates = candidates_of(store, warehouse, day)
        data_dir = candidates[0].dataset_dir
        returns, production_id = run_strategies(
            validation_market(data_dir), training_market(data_dir), candidates, live_model(store, day), config,
            oracle_minutes(store, day, market_data), context)
        store.write_partition(VALIDATION_TABLE, [day], returns.rename({"trading_day": "validation_day"})
                              .with_columns(pl.lit(day).alias("trading_day")))
        metrics = metrics_table(returns, window="validation", trading_day=day, n_boot=config.n_boot,
                                level=config.level, seed=config.seed)
        return dg.MaterializeResult(metadata={
            "candidate_models": dg.MetadataValue.json([c.model_id for c in candidates]),
            "production_model": production_id or "none",
            "validation_days": dg.MetadataValue.json(sorted({str(d) for d in returns["trading_day"].to_list()})),
            "metrics": dg.MetadataValue.md(metrics_markdown(metrics)),
            "daily_net_returns": dg.MetadataValue.md(_daily_markdown(daily_returns(returns))),
            "equity_curve": dg.MetadataValue.md(equity_chart(returns, f"Validation days of the {day} candidate")),
        })

    return [backtest, shadow_evaluation, candidate_evaluation]


def _trailing_returns(store: Warehouse, day: date, days: int) -> pl.DataFrame:
    """Rows of the last `days` backtested trading days up to `day` (what has been backtested so far)."""
    return store.query(
        f"SELECT * FROM {RETURNS_TABLE} WHERE trading_day IN (SELECT DISTINCT trading_day FROM {RETURNS_TABLE} "
        "WHERE trading_day <= ? ORDER BY trading_day DESC LIMIT ?)", [day, days])


def _headline(metrics: pl.DataFrame) -> dict[str, Any]:
    """A few numbers the UI can plot across partitions: the candidate's and the best baselines' day figures."""
    out: dict[str, Any] = {}
    for row in metrics.filter(pl.col("metric").is_in(["total_return", "sharpe"])).to_dicts():
        if row["strategy"] in (CANDIDATE, PRODUCTION, "buy_and_hold", "oracle") and row["value"] is not None:
            out[f"{row['strategy']}/{row['metric']}"] = float(row["value"])
    return out


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
