"""The options agent's evaluation and deployment (its own product: its own baselines, gate and promotions; group
`options`, beside its training assets).

- `options_backtest` (day D): the `options_policy` model of D against flat, random, the
  always-short ATM straddle and the straddle oracle on the gate days of its options dataset (nothing chose on
  them); and, walk-forward, the options model in production on D (promoted by a decision before D) with the same
  baselines on day D itself. Rows to `evaluation.options_gate_returns` / `evaluation.options_backtest_returns`,
  metrics with bootstrap intervals to `evaluation.options_backtest_metrics`; the gate's verdict (beats flat and
  the straddle rule, the interval of the paired daily difference above 0) in the metadata.
- `options_deployment` (day D): a model that passed is packaged under
  `artifacts/deploy/<model_id>/` (ONNX with the normalizer inside) and promoted in `models.options_promotions`;
  one that failed is marked `rejected` with the reasons.
"""

from datetime import date
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from assets.options_training import OPTIONS_ALGO, OPTIONS_GROUP, OPTIONS_POLICY_KEY
from assets.training import artifacts_dir, one_day
from pipeline.backtest.metrics import METRICS_SCHEMA, metrics_table
from pipeline.backtest.options_runner import (
    export_options_deployment,
    load_registered_options,
    options_backtest_rows,
    options_gate,
    options_production_as_of,
    promote_options,
)
from pipeline.backtest.promotion import PRODUCTION, Comparison, PromotionPolicy
from pipeline.backtest.reports import equity_chart, metrics_markdown
from pipeline.backtest.runner import RETURN_SCHEMA
from pipeline.envs.warehouse_loader import OptionLoaderConfig, load_option_chain
from pipeline.lake import Warehouse
from pipeline.registry import code_version, get_model, read_registry, record_deployment, record_gate
from pipeline.training.options_dataset import load_options_manifest, load_options_part
from pipeline.training.run import TrainingRun
from resources.warehouse import WarehouseResource

OPTIONS_BACKTEST_KEY = dg.AssetKey("options_backtest")
OPTIONS_DEPLOYMENT_KEY = dg.AssetKey("options_deployment")
GATE_RETURNS, DAY_RETURNS = "evaluation.options_gate_returns", "evaluation.options_backtest_returns"
METRICS = "evaluation.options_backtest_metrics"


class OptionsEvaluationConfig(dg.Config):
    n_boot: int = Field(default=500, description="Bootstrap resamples behind every interval.")
    level: float = Field(default=0.9, description="Two-sided level of the intervals (the gate's too).")
    seed: int = Field(default=0, description="Seed of the random baseline and the bootstrap.")

    def policy(self) -> PromotionPolicy:
        return PromotionPolicy(level=self.level, n_boot=self.n_boot, seed=self.seed)


def options_model_of(store: Warehouse, day: date) -> dict[str, Any]:
    """The registry row of the options model trained for `day` (the last registered)."""
    rows = read_registry(store, day).filter(pl.col("algo") == OPTIONS_ALGO)
    if rows.is_empty():
        raise ValueError(f"no {OPTIONS_ALGO} model is registered for {day}: materialize options_policy for it")
    return get_model(store, rows["model_id"][-1])


def _verdict(comparisons: list[Comparison]) -> list[str]:
    return [f"against {c.against}: mean daily difference {c.mean_difference:+.4%}, interval [{c.ci_low:+.4%}, "
            f"{c.ci_high:+.4%}] over {c.days} days: {'passed' if c.passed else 'failed'}" for c in comparisons]


def _walk_forward(store: Warehouse, day: date, config: OptionsEvaluationConfig) -> pl.DataFrame:
    """The options model in production on `day` and the baselines on `day` itself (empty without one)."""
    model_id = options_production_as_of(store, day)
    if model_id is None:
        return pl.DataFrame(schema=RETURN_SCHEMA)
    live = load_registered_options(get_model(store, model_id))
    manifest = load_options_manifest(live.dataset_dir)
    loader = manifest["config"]["loader"]
    chain = load_option_chain(store, [day], manifest["underlying"],
                              OptionLoaderConfig(**{**loader, "features": tuple(loader["features"])}))
    rows = options_backtest_rows(chain, [day.isoformat()], live, config.seed)
    return rows.with_columns(pl.col("strategy").replace({"candidate": PRODUCTION}))


def build_options_evaluation_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(key=OPTIONS_BACKTEST_KEY, deps=[OPTIONS_POLICY_KEY], group_name=OPTIONS_GROUP,
              kinds={"duckdb", "pytorch"}, partitions_def=partitions_def, pool="duckdb",
              description="The options model of D against flat, random, the short straddle and the straddle oracle "
              "on its gate days; the production options model walk-forward on D; metrics and the gate's verdict.")
    def options_backtest(context: dg.AssetExecutionContext, config: OptionsEvaluationConfig,
                         warehouse: WarehouseResource) -> dg.MaterializeResult:
        day = one_day(context)
        store = warehouse.warehouse()
        candidate = load_registered_options(options_model_of(store, day))
        manifest = load_options_manifest(candidate.dataset_dir)
        gate = options_backtest_rows(load_options_part(candidate.dataset_dir, "gate"), manifest["gate_days"],
                                     candidate, config.seed)
        store.write_partition(GATE_RETURNS, [day], gate.rename({"trading_day": "gate_day"})
                              .with_columns(pl.lit(day).alias("trading_day")))
        walk_forward = _walk_forward(store, day, config)
        store.write_partition(DAY_RETURNS, [day], walk_forward)
        windows = [metrics_table(gate, window="gate", trading_day=day, n_boot=config.n_boot, level=config.level,
                                 seed=config.seed)]
        if walk_forward.height:
            windows.append(metrics_table(walk_forward, window="day", trading_day=day, n_boot=config.n_boot,
                                         level=config.level, seed=config.seed))
        metrics = pl.concat(windows, how="vertical_relaxed") if windows else pl.DataFrame(schema=METRICS_SCHEMA)
        store.write_partition(METRICS, [day], metrics)
        passed, comparisons = options_gate(gate, config.policy())
        return dg.MaterializeResult(metadata={
            "candidate_model": candidate.model_id, "action_set": candidate.env_config.action_set,
            "gate_passed": passed, "gate": dg.MetadataValue.md("\n".join(f"- {v}" for v in _verdict(comparisons))),
            **{f"vs_{c.against}/mean_difference": c.mean_difference for c in comparisons},
            "gate_days": dg.MetadataValue.json(manifest["gate_days"]),
            "production_model": options_production_as_of(store, day) or "none",
            "metrics": dg.MetadataValue.md(metrics_markdown(metrics)),
            "equity_curve": dg.MetadataValue.md(equity_chart(gate, f"Gate days of the {day} options model",
                                                             by="trading_day")),
        })

    @dg.asset(key=OPTIONS_DEPLOYMENT_KEY, deps=[OPTIONS_BACKTEST_KEY], group_name=OPTIONS_GROUP,
              kinds={"onnx"}, partitions_def=partitions_def, pool="duckdb",
              description="The options model of D packaged (ONNX, normalization inside) and promoted in "
              "models.options_promotions if it passed its gate; marked rejected with the reasons if not.")
    def options_deployment(context: dg.AssetExecutionContext, config: OptionsEvaluationConfig,
                           warehouse: WarehouseResource) -> dg.MaterializeResult:
        day = one_day(context)
        store = warehouse.warehouse()
        row = options_model_of(store, day)
        gate = store.query(f"SELECT * EXCLUDE (gate_day), gate_day AS trading_day FROM {GATE_RETURNS} "
                           "WHERE trading_day = ?", [day]).select(list(RETURN_SCHEMA)).cast(RETURN_SCHEMA)
        passed, comparisons = options_gate(gate, config.policy())
        reasons = _verdict(comparisons)
        if not passed:
            record_gate(store, row["model_id"], False, "; ".join(reasons))
            context.log.info(f"{row['model_id']} rejected: {reasons}")
            return dg.MaterializeResult(metadata={"model_id": row["model_id"], "promoted": False,
                                                  "gate": dg.MetadataValue.md("\n".join(reasons))})
        run = TrainingRun.load(row["artifact_path"].rsplit("/", 1)[0])
        manifest = load_options_manifest(run.dataset_dir)
        metrics = store.query(f"SELECT * FROM {METRICS} WHERE trading_day = ? AND \"window\" = 'gate'", [day])
        lineage = {"code_version": code_version(), "config_hash": row["config_hash"],
                   "data_version": row["data_version"], "window": manifest["window"], "partition": str(day)}
        out = artifacts_dir(warehouse) / "deploy" / row["model_id"]
        artifact = export_options_deployment(row["model_id"], row["artifact_path"], out, manifest, run, metrics,
                                             lineage, reasons)
        record_deployment(store, row["model_id"], str(artifact.path), artifact.sha256)
        record_gate(store, row["model_id"], True, "; ".join(reasons))
        promote_options(store, row["model_id"], day, {"gate": reasons})
        return dg.MaterializeResult(metadata={"model_id": row["model_id"], "promoted": True,
                                              "artifact": dg.MetadataValue.path(str(artifact.path)),
                                              "deploy_sha256": artifact.sha256})

    return [options_backtest, options_deployment]
