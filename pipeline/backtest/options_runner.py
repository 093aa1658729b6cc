"""The options agent judged like every model here: one row per strategy and trading day in the backtest schema
(`runner.RETURN_SCHEMA`), the gate of `promotion.compare` on days nothing chose on, metrics from daily net returns.

A day's net return is its net PnL (dollars, after spreads and fees; the book is flat at every close) over the
notional of one contract of the underlying at the day's first snapshot (100 x its price): the capital a one-lot
options book controls. `position` is the share of the day's decisions that held a position, `cost` the fees over
the same capital. The candidate walks with its own env settings (action set 31 or 91); the baselines
(`options_rules.OPTIONS_BASELINES`) with the multi-leg table and the same costs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.backtest.options_rules import OPTIONS_BASELINES, DayWalk, Policy, walk, walk_baselines
from pipeline.backtest.promotion import CANDIDATE, Comparison, PromotionPolicy, compare
from pipeline.backtest.runner import RETURN_SCHEMA
from pipeline.contract.calendar import trading_session
from pipeline.envs.options import MULTIPLIER, STATE_FEATURE_NAMES, OptionsTradingConfig
from pipeline.envs.options_actions import action_table
from pipeline.envs.options_chain import OptionChainTensors
from pipeline.envs.options_features import MARKET_FEATURE_NAMES
from pipeline.export.model_card import BaselineRow, MetricRow, ModelCard
from pipeline.export.package import DeploymentArtifact, export_deployment
from pipeline.lake import Warehouse
from pipeline.registry import file_sha256
from pipeline.training.run import TrainingRun

GATED_AGAINST = ("flat", "short_straddle")
"""What the options agent must beat on the gate days, each with the interval of the daily difference above 0."""


@dataclass(frozen=True)
class RegisteredOptionsPolicy:
    """A registered options model, loaded, with the env settings and the dataset it was trained on."""

    model_id: str
    agent: CLSTMPPO
    env_config: OptionsTradingConfig
    dataset_dir: Path


def load_registered_options(row: dict[str, Any]) -> RegisteredOptionsPolicy:
    """The model of a `models.registry` row; refuses a file whose sha256 is not the registered one."""
    artifact = Path(row["artifact_path"])
    if not artifact.is_file() or file_sha256(artifact) != row["sha256"]:
        raise ValueError(f"the artifact of {row['model_id']} ({artifact}) is missing or changed since it was "
                         "registered: re-materialize its options_policy partition")
    run = TrainingRun.load(artifact.parent)
    if run.options_env is None:
        raise ValueError(f"{row['model_id']} was not trained on option chains (its run has no options_env)")
    return RegisteredOptionsPolicy(row["model_id"], CLSTMPPO.load(artifact), run.options_env, run.dataset_dir)


def agent_policy(agent: CLSTMPPO) -> Policy:
    """The agent's deterministic policy as a `walk` policy."""
    return lambda obs, env: agent.predict(obs.cpu().numpy(), deterministic=True)[0]


def day_rows(chain: OptionChainTensors, days: Sequence[str], strategy: str, walked: DayWalk,
             model_id: str | None = None) -> pl.DataFrame:
    """Backtest rows of one strategy: a row per day at the day's close (see the module docstring)."""
    capital = chain.underlying[:, 0].double().numpy() * MULTIPLIER
    return pl.DataFrame({
        "trading_day": [date.fromisoformat(d) for d in days],
        "ts": [trading_session(d).close for d in days],
        "strategy": strategy, "model_id": model_id,
        "ret": walked.pnl / capital, "position": np.full(len(days), 1.0 - walked.flat_share),
        "cost": walked.fees / capital,
    }).cast(RETURN_SCHEMA).select(list(RETURN_SCHEMA))


def options_backtest_rows(chain: OptionChainTensors, days: Sequence[str], candidate: RegisteredOptionsPolicy | None,
                          seed: int = 0) -> pl.DataFrame:
    """Rows of the candidate (if any) and every baseline on `chain`'s days (`days`: their ISO dates)."""
    if len(days) != chain.shape[0]:
        raise ValueError(f"{len(days)} dates for a chain of {chain.shape[0]} days")
    reference = candidate.env_config if candidate is not None else OptionsTradingConfig()
    frames = [day_rows(chain, days, name, walked) for name, walked in walk_baselines(chain, seed, reference).items()]
    if candidate is not None:
        walked = walk(chain, agent_policy(candidate.agent), replace(candidate.env_config, evaluation=True))
        frames.insert(0, day_rows(chain, days, CANDIDATE, walked, candidate.model_id))
    return pl.concat(frames)


def options_gate(returns: pl.DataFrame, policy: PromotionPolicy | None = None) -> tuple[bool, list[Comparison]]:
    """Does the candidate beat flat and the straddle rule on these (gate) days, each with the bootstrap interval
    of the paired daily difference above 0? The oracle is reported, never gated on."""
    policy = policy or PromotionPolicy()
    comparisons = [compare(returns, against, policy) for against in GATED_AGAINST]
    return all(c.passed for c in comparisons), comparisons



OPTIONS_PROMOTIONS = "models.options_promotions"
"""The options product's promotions. `models.promotions` holds the intraday product's one production slot, so an
options model promoted there would retire the intraday model; the options agent is its own product."""


def promote_options(store: Warehouse, model_id: str, decided_on: date, reasons: dict[str, Any]) -> None:
    """Record `model_id` as the options product's production model by the decision of `decided_on` (deciding a
    day again replaces that day's decision)."""
    with store.transaction() as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS models")
        con.execute(f"CREATE TABLE IF NOT EXISTS {OPTIONS_PROMOTIONS} (model_id VARCHAR, decided_on DATE, "
                    "promoted_at TIMESTAMPTZ, reasons VARCHAR)")
        con.execute(f"DELETE FROM {OPTIONS_PROMOTIONS} WHERE decided_on = ?", [decided_on])
        con.execute(f"INSERT INTO {OPTIONS_PROMOTIONS} VALUES (?, ?, ?, ?)",
                    [model_id, decided_on, datetime.now(UTC), json.dumps(reasons, default=float)])


def options_production_as_of(store: Warehouse, day: date) -> str | None:
    """The options model in production on `day`: the last promoted by a decision of a trading day before it."""
    if not store.table_exists(OPTIONS_PROMOTIONS):
        return None
    rows = store.query(f"SELECT model_id FROM {OPTIONS_PROMOTIONS} WHERE decided_on < ? "
                       "ORDER BY decided_on DESC, promoted_at DESC LIMIT 1", [day])
    return rows["model_id"][0] if rows.height else None


def metric_rows(metrics: pl.DataFrame, strategy: str) -> list[MetricRow]:
    """One strategy's rows of a `metrics_table` as model-card rows."""
    chosen = metrics.filter(pl.col("strategy") == strategy)
    return [MetricRow(r["metric"], r["value"], r["ci_low"], r["ci_high"], r["note"]) for r in chosen.to_dicts()]


def export_options_deployment(model_id: str, model_path: str | Path, out_dir: str | Path, manifest: dict[str, Any],
                              run: TrainingRun, metrics: pl.DataFrame, lineage: dict[str, Any],
                              gate_reasons: Sequence[str]) -> DeploymentArtifact:
    """The deployment artifact of an options model (`export.package.export_deployment`: ONNX with the observation
    normalizer inside, torch.export program, config, lineage, model card); columns are the chain summary, the
    dataset's features.options columns and the position state, actions the strategies of its action set."""
    config = run.options_env or OptionsTradingConfig()
    card = ModelCard(
        model_id=model_id, trading_day=manifest["end_day"], env="pipeline/OptionsTrading-v0",
        symbols=[manifest["underlying"]], costs=config.contract_costs, data_version=manifest["data_version"],
        train_days=manifest["train_days"], selection_days=manifest["selection_days"], gate_days=manifest["gate_days"],
        metrics=metric_rows(metrics, CANDIDATE),
        baselines=[BaselineRow(s, metric_rows(metrics, s)) for s in OPTIONS_BASELINES],
        intended_use=["Options strategies on one underlying's chain snapshots, one-lot, flat at every close."],
        limitations=[*gate_reasons, "The straddle oracle knows the day's close: a bound, never a baseline."],
        status="candidate")
    # features.options columns are named by their table: the env's own chain summary has an atm_iv and a term_slope.
    table_columns = [f"features.options.{name}" for name in manifest["feature_names"]]
    return export_deployment(model_path, out_dir, feature_names=(*MARKET_FEATURE_NAMES, *table_columns),
                             lineage=lineage, card=card, agent_features=STATE_FEATURE_NAMES,
                             action_meanings=[s.name for s in action_table(config.action_set)])
