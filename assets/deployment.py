"""Deployment assets (group `deployment`), partitioned by trading day D.

- `deployment_artifact`: packages the candidate chosen for D (`candidate_selection`), whatever its kind, into
  `<lake>/artifacts/deploy/<model_id>/` (ONNX with the normalization inside: a CLSTM-PPO's normalizer, an SB3 PPO's
  VecNormalize statistics, or an ensemble as one graph of its members with their normalizers and its weights;
  torch.export program, config, normalizer, lineage, model card) and records its sha256 in `models.registry`. Its blocking checks are the
  promotion gate: the package must reproduce the model, the candidate's metrics must be finite, its training must
  not have diverged, and on the gate days (which nothing that chose it read) it must beat the production model and
  the best baseline by the configured margin with the confidence interval above 0. A refused candidate is marked
  `rejected` with the reasons, which the failed checks also show. The checks are partitioned like the asset and
  report their figures as numbers (mean difference, interval ends, days, block length), so a check's Plots tab
  draws the margin day after day.
- `production_model`: runs only when every gate check passed (blocking checks stop it otherwise) and makes the
  candidate chosen for D (only that one, and only once the gate passed it) the production model by the decision of day D; the model it replaces becomes `retired`.
"""

from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from assets.evaluation import CANDIDATE_EVALUATION_KEY, GATE_TABLE
from assets.selection import SELECTION_KEY, chosen_candidate
from assets.training import artifacts_dir, dataset_dir, one_day
from pipeline.backtest.inputs import RegisteredPolicy, dataset_part
from pipeline.backtest.metrics import MIN_SHARE_DAYS, metrics_table, share_interval
from pipeline.backtest.promotion import (
    CANDIDATE,
    PRODUCTION,
    GateResult,
    PromotionPolicy,
    daily_returns,
    evaluate_gate,
)
from pipeline.backtest.strategies import COST_AWARE_ORACLE
from pipeline.envs.intraday import IntradayTradingEnv
from pipeline.export.model_card import BaselineRow, MetricRow, ModelCard
from pipeline.export.onnx_policy import run_onnx
from pipeline.export.package import export_deployment, read_artifact
from pipeline.lake import Warehouse
from pipeline.registry import production_as_of, promote, record_deployment, record_gate, selected_model
from pipeline.training.dataset import load_manifest
from pipeline.training.env_factories import SELECTION_ENVS
from resources.warehouse import WarehouseResource

DEPLOYMENT_GROUP = "deployment"
DEPLOY_KEY = dg.AssetKey("deployment_artifact")
PRODUCTION_KEY = dg.AssetKey("production_model")
TRAINED_BY = {"clstm_ppo": "clstm_ppo_policy", "sb3_ppo": "sb3_baselines", "ensemble": "ensemble_policy"}
"""The training asset that registers each kind of model that can be chosen."""
ARTIFACT_CHECK = "artifact_matches_model"
# ONNX Runtime and torch must agree on raw observations to this (max abs difference of action probabilities).
ARTIFACT_TOLERANCE = 1e-4
INTENDED_USE = (
    "Paper trading and shadow evaluation beside the production model; live trading only once promoted.",
    "Research: a reproducible record of what the pipeline trained on day D, with its lineage.",
)
LIMITS = (
    "Judged on the gate days of its dataset (fifteen by default): the confidence intervals are wide, and a pass is "
    "evidence, not proof.",
    "Trades one symbol at a time with a fixed size; no portfolio-level risk limits beyond the env's.",
    "Costs are modeled (spread crossing at the next bar, fees, slippage); market impact of large orders is not.",
    "Retrain daily: the model saw only its training window, and regimes change.",
)


class PromotionConfig(dg.Config):
    margin: float = Field(default=0.0, description="Mean daily net return (fraction of capital) by which the "
                          "candidate must beat production and the best baseline on the gate days.")
    level: float = Field(default=0.9, description="Level of the bootstrap interval of the paired daily difference.")
    n_boot: int = Field(default=2000, description="Bootstrap resamples of the gate days.")
    max_approx_kl: float = Field(default=0.5, description="Training diverged when its last approx KL is above this.")

    def policy(self) -> PromotionPolicy:
        return PromotionPolicy(margin=self.margin, level=self.level, n_boot=self.n_boot,
                               max_approx_kl=self.max_approx_kl)


def _gate_rows(store: Warehouse, day: date, model_id: str) -> pl.DataFrame:
    """The candidate evaluation of `day`, keyed by gate day; it must be of the chosen candidate."""
    rows = store.read_partition(GATE_TABLE, [day])
    if rows.is_empty():
        raise ValueError(f"{GATE_TABLE} has no rows for {day}: materialize candidate_evaluation first")
    judged = set(rows.filter(pl.col("strategy") == CANDIDATE)["model_id"].to_list())
    if judged != {model_id}:
        raise ValueError(f"candidate_evaluation of {day} ran {sorted(judged)}, but the candidate chosen for {day} is "
                         f"{model_id}: materialize candidate_evaluation for {day} again")
    return rows.drop("trading_day").rename({"gate_day": "trading_day"})


def _production_problem(store: Warehouse, day: date, rows: pl.DataFrame) -> str | None:
    """Why the model in production on `day` has no rows of its own in the gate evaluation (None if it has them,
    or there is none)."""
    production = production_as_of(store, day)
    if production is None:
        return None
    ran = set(rows.filter(pl.col("strategy") == PRODUCTION)["model_id"].to_list())
    if production["model_id"] not in ran:
        return (f"{production['model_id']} is in production on {day} but candidate_evaluation has no rows of it "
                f"(it ran {sorted(ran) or 'no production model'}; its log says why)")
    return None


def _artifact_agreement(member: RegisteredPolicy, artifact_dir: Path) -> float:
    """Max abs difference of action probabilities, ONNX Runtime vs the model itself, on real observations of the
    selection days (raw, as the env emits them)."""
    env = IntradayTradingEnv(dataset_part(member.dataset_dir, "selection"), num_envs=SELECTION_ENVS, config=member.env_config)
    obs, _ = env.reset(seed=0)
    samples = []
    for _ in range(40):
        samples.append(obs.clone())
        obs, *_ = env.step(np.random.default_rng(len(samples)).integers(0, env.action_dim, env.num_envs))
    batch = np.concatenate([s.numpy() for s in samples]).astype(np.float32)
    expected = member.policy.action_probs(batch)
    expected = expected[0] if isinstance(expected, tuple) else expected  # SB3 baselines return no state
    return float(np.abs(run_onnx(artifact_dir, batch) - expected).max())


def _check(name: str, result: GateResult) -> dg.AssetCheckResult:
    """The check's verdict with its reason, and its figures as numbers (what the check's Plots tab draws)."""
    figures = {k: float(v) for k, v in result.details.items()
               if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)}
    texts = {k: str(v) for k, v in result.details.items() if isinstance(v, str)}
    return dg.AssetCheckResult(check_name=name, passed=result.passed, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"reason": result.reason, **texts, **figures})


def oracle_share(rows: pl.DataFrame, policy: PromotionPolicy) -> str:
    """The candidate's mean daily net return as a share of the cost-aware oracle's on these days, with its
    interval, or why it is not reported."""
    daily = daily_returns(rows)
    paired = (daily.filter(pl.col("strategy") == CANDIDATE)
              .join(daily.filter(pl.col("strategy") == COST_AWARE_ORACLE), on="trading_day", suffix="_oracle"))
    if paired.is_empty():
        return "not reported: no oracle on these days (it exists on the synthetic market only)"
    share = share_interval(paired["ret"].to_numpy(), paired["ret_oracle"].to_numpy(), n_boot=policy.n_boot,
                           level=policy.level, seed=policy.seed)
    if not np.isfinite(share.mean):
        return f"not reported: the cost-aware oracle did not earn on these {share.days} days"
    if share.days < MIN_SHARE_DAYS:
        return f"not reported: {share.days} gate days (a share of the oracle needs {MIN_SHARE_DAYS} held-out days)"
    return (f"{share.mean:.0%} over {share.days} gate days ({policy.level:.0%} CI {share.ci_low:.0%} to "
            f"{share.ci_high:.0%})")


def build_deployment_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=DEPLOY_KEY,
        deps=[SELECTION_KEY, CANDIDATE_EVALUATION_KEY],
        group_name=DEPLOYMENT_GROUP,
        kinds={"onnx", "pytorch"},
        partitions_def=partitions_def,
        pool="duckdb",
        check_specs=[dg.AssetCheckSpec(name, asset=DEPLOY_KEY, blocking=True, description=text,
                                       partitions_def=partitions_def) for name, text in (
            (ARTIFACT_CHECK, "ONNX Runtime on raw observations reproduces the model's action probabilities."),
            ("metrics_finite", "Every metric of the candidate is finite."),
            ("training_converged", "Training did not diverge (last approximate KL within the limit)."),
            ("beats_production", "Beats the production model on the gate days, CI above 0."),
            ("beats_best_baseline", "Beats the best baseline on the gate days, CI above 0."),
        )],
        description="The candidate chosen for D as a deployment package (policy.onnx, policy.pt2, config, "
        "normalizer, lineage, model card) under artifacts/deploy/<model_id>/; its checks are the promotion gate, "
        "judged on the gate days.",
    )
    def deployment_artifact(
        context: dg.AssetExecutionContext, config: PromotionConfig, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        day = one_day(context)
        store = warehouse.warehouse()
        member = chosen_candidate(store, warehouse, day)
        if member is None:
            raise ValueError(f"no candidate was chosen for {day}: materialize candidate_selection for {day} first")
        rows = _gate_rows(store, day, member.model_id)
        problem = _production_problem(store, day, rows)
        gate = evaluate_gate(rows, member.row["metrics"], production_as_of(store, day) is not None,
                             config.policy(), production_problem=problem)
        metrics = metrics_table(rows, window="gate", trading_day=day, n_boot=config.n_boot, level=config.level)
        out_dir = artifacts_dir(warehouse) / "deploy" / member.model_id
        artifact = export_deployment(
            member.row["artifact_path"], out_dir, feature_names=load_manifest(member.dataset_dir)["feature_names"],
            lineage=_lineage(member, dataset_dir(warehouse, day), context),
            card=_card(member, metrics, gate, oracle_share(rows, config.policy())), algo=member.row["algo"])
        record_deployment(store, member.model_id, str(out_dir), artifact.sha256)
        difference = _artifact_agreement(member, out_dir)
        agrees = GateResult(ARTIFACT_CHECK, difference <= ARTIFACT_TOLERANCE,
                            f"max |ONNX - torch| of the action probabilities is {difference:.2e} "
                            f"(tolerance {ARTIFACT_TOLERANCE:g})", {"max_abs_difference": difference})
        failed = [g for g in (agrees, *gate) if not g.passed]
        record_gate(store, member.model_id, not failed, "; ".join(f"{g.name}: {g.reason}" for g in failed))
        if failed:
            context.log.warning(f"{member.model_id} is not promoted: " + "; ".join(g.name for g in failed))
        return dg.MaterializeResult(
            metadata={
                "model_id": member.model_id,
                "path": dg.MetadataValue.path(str(out_dir)),
                "sha256": artifact.sha256,
                "files": dg.MetadataValue.json({name: sha for name, sha in artifact.files.items()}),
                "verdict": "passes the promotion gate" if not failed else
                           "rejected: " + ", ".join(g.name for g in failed),
                "model_card": dg.MetadataValue.md((out_dir / "MODEL_CARD.md").read_text()),
            },
            check_results=[_check(g.name, g) for g in (agrees, *gate)],
        )

    @dg.asset(
        key=PRODUCTION_KEY,
        deps=[DEPLOY_KEY],
        group_name=DEPLOYMENT_GROUP,
        kinds={"duckdb"},
        partitions_def=partitions_def,
        pool="duckdb",
        description="Promotes the candidate of D to production in models.registry; runs only when every blocking "
        "check of its deployment_artifact passed.",
    )
    def production_model(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        day = one_day(context)
        store = warehouse.warehouse()
        row = selected_model(store, day)
        if row is None or row.get("gate") != "passed":
            raise ValueError(f"the candidate chosen for {day} ({row and row['model_id']}) has not passed the promotion "
                             f"gate: materialize deployment_artifact for {day}; its blocking checks say why a "
                             "candidate was refused")
        found = read_artifact(row["deploy_path"]).sha256
        if found != row["deploy_sha256"]:
            raise ValueError(f"the deployment artifact of {row['model_id']} changed since the gate judged it (sha256 "
                             f"{found[:12]}, registered {row['deploy_sha256'][:12]}): re-materialize deployment_artifact")
        before = production_as_of(store, day)
        replaced = promote(store, row["model_id"], day, {"gate": "every blocking check of deployment_artifact "
                                                          "passed", "replaces": before and before["model_id"]})
        context.log.info(f"{row['model_id']} is now in production (replaces {replaced or 'nothing'})")
        return dg.MaterializeResult(metadata={
            "model_id": row["model_id"], "replaced": replaced or "none",
            "deploy_path": dg.MetadataValue.path(row["deploy_path"]), "deploy_sha256": row["deploy_sha256"],
        })

    return [deployment_artifact, production_model]


def _lineage(member: RegisteredPolicy, data_dir: Path, context: dg.AssetExecutionContext) -> dict[str, Any]:
    manifest = load_manifest(data_dir)
    row = member.row
    return {
        "model_id": row["model_id"], "code_version": row["code_version"], "config_hash": row["config_hash"],
        "data_version": row["data_version"], "training_window": [str(row["window_start"]), str(row["window_end"])],
        "days": {part: manifest[f"{part}_days"] for part in ("train", "embargo", "selection", "gate")},
        "symbols": manifest["symbols"],
        "upstream_partitions": {TRAINED_BY[row["algo"]]: context.partition_key,
                                "training_dataset": context.partition_key,
                                "candidate_selection": context.partition_key, "features/market": manifest["window"]},
        "dagster_run_id": context.run.run_id,
    }


def _card(member: RegisteredPolicy, metrics: pl.DataFrame, gate: list[GateResult], share: str) -> ModelCard:
    manifest = load_manifest(member.dataset_dir)
    env = member.env_config
    rows = {s: [MetricRow(r["metric"], r["value"], r["ci_low"], r["ci_high"], r["note"]) for r in g.to_dicts()]
            for (s,), g in metrics.group_by("strategy", maintain_order=True)}
    return ModelCard(
        model_id=member.model_id, symbols=manifest["symbols"], data_version=manifest["data_version"],
        train_days=manifest["train_days"], selection_days=manifest["selection_days"],
        gate_days=manifest["gate_days"], oracle_share=share,
        trade_size=env.trade_size, costs=env.costs,
        metrics=rows.get(CANDIDATE, []),
        baselines=[BaselineRow(s, r) for s, r in rows.items() if s != CANDIDATE],
        intended_use=INTENDED_USE,
        limitations=[*LIMITS, *[f"Promotion gate, {g.name}: {g.reason}" for g in gate]],
        status="candidate" if all(g.passed for g in gate) else "rejected",
    )
