"""Evaluation and deployment as real Dagster runs, walk-forward over two model days of a martingale market.

The synthetic market runs with alpha=0 (no predictable component, costs on): nothing may be promoted. The first
model day runs training -> selection -> evaluation -> deployment for that day; the second is the daily loop
itself: the schedule's run request for the day, executed as the `daily_pipeline` job (ingest through deployment,
SB3 baselines and ensemble included). Each dataset has 10 gate days, the fewest the gate judges. The backtest of
the second day runs the first day's chosen candidate; the metrics in `evaluation.backtest_metrics` are recomputed
here from `evaluation.backtest_returns` with plain numpy; the deployment artifact exists for every candidate and
its blocking checks keep the candidate out of production. The second day's candidate is chosen among every
intraday kind (CLSTM-PPO, SB3 PPO, the ensemble); every model not chosen is rejected with its score.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import empyrical
import numpy as np
import polars as pl
import pytest
from conftest import assets_in_groups, ingest_history, materialized_metadata, pipeline_env

from pipeline.backtest.metrics import daily_frame
from pipeline.contract.calendar import trading_days
from pipeline.lake import Warehouse
from pipeline.registry import production_as_of, promote, read_registry, record_gate, selected_model
from resources.compute import ComputeResource
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

HISTORY = trading_days("2024-06-14", "2024-07-10")  # 17 sessions: a 15-day window for each of the last two days
FIRST, SECOND = "2024-07-09", "2024-07-10"
STEPS = 4096
DAILY = ("training_dataset", "clstm_ppo_policy", "candidate_selection", "backtest", "shadow_evaluation",
         "candidate_evaluation", "deployment_artifact", "production_model")
RUN_CONFIG = {"ops": {
    "training_dataset": {"config": {"window_days": 15, "embargo_days": 0, "selection_days": 2, "gate_days": 10}},
    "clstm_ppo_policy": {"config": {"num_envs": 16}},
    "backtest": {"config": {"n_boot": 200}},
    "candidate_evaluation": {"config": {"n_boot": 200}},
}}
# The daily job also trains the SB3 baselines and the ensemble; small budgets keep them quick.
JOB_CONFIG = {
    "ops": {**RUN_CONFIG["ops"], "sb3_baselines": {"config": {"ppo_timesteps": 2048, "sac_timesteps": 256}}},
    "resources": {"compute": {"config": {"total_timesteps": STEPS, "torch_threads": 1}}},
}
BASELINES = {"flat", "buy_and_hold", "equal_weight", "min_variance", "max_sharpe", "momentum", "momentum_band",
             "random", "sign_oracle", "cost_aware_oracle"}


def _daily_assets() -> list:
    return [a for g in ("training", "evaluation", "deployment") for a in assets_in_groups(g)
            if a.key.path[-1] in DAILY]


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory):
    env = pipeline_env(tmp_path_factory.mktemp("evaluation"))
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        mp.setenv("PIPELINE_SYNTHETIC_SNAPSHOT_MINUTES", "390")
        market_data = MarketDataResource(alpha=0.0)
        ingest_history(HISTORY, market_data)
        instance = dg.DagsterInstance.ephemeral()
        resources = {"warehouse": WarehouseResource(), "market_data": market_data,
                     "pipes_subprocess_client": dg.PipesSubprocessClient(),
                     "compute": ComputeResource(total_timesteps=STEPS, torch_threads=1)}
        mp.setenv("PIPELINE_SYNTHETIC_ALPHA", "0")  # what the daily job's own market_data resource reads
        runs = {FIRST: dg.materialize(_daily_assets(), resources=resources, partition_key=FIRST, instance=instance,
                                      run_config=RUN_CONFIG, raise_on_error=False),
                SECOND: _scheduled_run(SECOND, instance)}
        yield Warehouse(Path(env["PIPELINE_DATA_LAKE"]) / "warehouse.duckdb"), runs, instance, resources


def _scheduled_run(day: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """What the daily schedule does after the close of `day`: its run request, run as the daily job."""
    from pipeline.definitions import build_definitions

    defs = build_definitions()
    after_close = datetime.combine(date.fromisoformat(day), time(17, 30), tzinfo=ZoneInfo("America/New_York"))
    context = dg.build_schedule_context(scheduled_execution_time=after_close,
                                        repository_def=defs.get_repository_def())
    (request,) = defs.get_schedule_def("daily_after_close").evaluate_tick(context).run_requests
    assert request.partition_key == day
    return defs.resolve_job_def("daily_pipeline").execute_in_process(
        partition_key=request.partition_key, run_config=JOB_CONFIG, instance=instance, raise_on_error=False)


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}


def _chosen(store: Warehouse) -> list[str]:
    """The candidate chosen for each of the two model days."""
    return [selected_model(store, date.fromisoformat(day))["model_id"] for day in (FIRST, SECOND)]


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.event_specific_data.check_name: e.event_specific_data for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def test_the_scheduled_run_materializes_every_asset_of_its_day(loop) -> None:
    from pipeline.definitions import build_definitions

    _, runs, _, _ = loop
    every = {key.path[-1] for key in build_definitions().resolve_job_def("daily_pipeline")
             .asset_layer.selected_asset_keys}
    assert {"trades", "market", "clstm_ppo_policy", "sb3_baselines", "ensemble_policy", "backtest",
            "deployment_artifact"} <= every
    # All but the promotion, which the gate's blocking checks stop on a martingale (next test).
    assert _materialized(runs[SECOND]) == every - {"production_model"}
    result = runs[SECOND]
    assert {e.partition for e in result.get_asset_materialization_events()} == {SECOND}
    failed = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failed == ["deployment_artifact"]


def test_a_martingale_candidate_is_packaged_but_never_promoted(loop) -> None:
    store, runs, _, _ = loop
    for day, result in runs.items():
        # Everything of the day but the promotion ran; the run fails at the gate, as a blocking check should.
        assert set(DAILY) - {"production_model"} <= _materialized(result), day
        assert "production_model" not in _materialized(result), day
        assert not result.success
        checks = _checks(result)
        assert checks["artifact_matches_model"].passed, checks["artifact_matches_model"].metadata
        assert not all(checks[name].passed for name in ("beats_production", "beats_best_baseline"))
        reason = checks["beats_best_baseline"].metadata["reason"].value
        assert "10 gate days" in reason and "CI" in reason and "stationary bootstrap" in reason
        # The figures are numbers the check's Plots tab draws, filed under the check's partition.
        figures = checks["beats_best_baseline"].metadata
        assert {"mean_difference", "ci_low", "ci_high", "days", "block_length"} <= set(figures)
        assert figures["days"].value == 10 and isinstance(figures["ci_low"].value, float)
        assert checks["beats_best_baseline"].partition == day
    chosen = _chosen(store)
    rows = read_registry(store).filter(pl.col("model_id").is_in(chosen))
    assert set(rows["status"]) == {"rejected"} and set(rows["gate"]) == {"failed"} and rows.height == 2
    assert all("beats_best_baseline" in r or "beats_production" in r for r in rows["status_reason"])
    # Every other intraday model of the two days (the second day's SB3 PPO and ensemble too) has its verdict.
    others = read_registry(store).filter(pl.col("algo").is_in(["clstm_ppo", "sb3_ppo", "ensemble"])
                                         & ~pl.col("model_id").is_in(chosen))
    assert set(others["algo"]) >= {"sb3_ppo", "ensemble"} - set(rows["algo"])
    assert set(others["status"]) == {"rejected"} and all(r.startswith("not chosen on the selection days")
                                                         for r in others["status_reason"])
    assert store.query("SELECT count(*) AS n FROM models.promotions")["n"][0] == 0


def test_every_candidate_has_a_deployment_artifact_with_its_hash_in_the_registry(loop) -> None:
    store, runs, _, _ = loop
    for row in read_registry(store).filter(pl.col("model_id").is_in(_chosen(store))).to_dicts():
        folder = Path(row["deploy_path"])
        assert folder.name == row["model_id"] and folder.parent.name == "deploy"
        assert {"policy.onnx", "policy.pt2", "config.json", "normalizer.safetensors", "lineage.json",
                "MODEL_CARD.md"} <= {p.name for p in folder.iterdir()}
        lineage = json.loads((folder / "lineage.json").read_text())
        assert lineage["data_version"] == row["data_version"] and lineage["config_hash"] == row["config_hash"]
        meta = materialized_metadata(runs[str(row["trading_day"])], "deployment_artifact")
        assert meta["sha256"] == row["deploy_sha256"] and "rejected" in meta["verdict"]


def test_backtest_is_walk_forward_with_every_baseline(loop) -> None:
    store, runs, _, _ = loop
    first = materialized_metadata(runs[FIRST], "backtest")
    assert first["rows"] == 0 and "no candidate of 2024-07-08" in first["note"]
    meta = materialized_metadata(runs[SECOND], "backtest")
    assert meta["trained_on"] == FIRST
    candidate = meta["candidate_model"]
    assert candidate.startswith(f"clstm_ppo-seed0-{FIRST}")
    assert candidate == materialized_metadata(runs[FIRST], "candidate_selection")["candidate_model"]
    returns = store.read_partition("evaluation.backtest_returns", [SECOND])
    # The first day trained CLSTM-PPO alone: its kind's book is that model.
    assert set(returns["strategy"]) == {"candidate", "kind:clstm_ppo", *BASELINES}
    assert returns.filter(pl.col("strategy") == "kind:clstm_ppo")["model_id"].unique().to_list() == [candidate]
    bars = returns.group_by("strategy").len()
    assert bars["len"].n_unique() == 1 and bars["len"][0] == 390  # every session minute, once per strategy
    assert returns.filter(pl.col("strategy") == "candidate")["model_id"].unique().to_list() == [candidate]
    flat = returns.filter(pl.col("strategy") == "flat")
    assert flat["ret"].abs().max() == 0 and flat["cost"].abs().max() == 0
    assert meta["equity_curve"].startswith("![equity curves](data:image/svg+xml;base64,")


def _recompute(rows: pl.DataFrame) -> dict[str, float]:
    """The metrics of one trading day of a strategy's backtest_returns rows (one model), with plain numpy: the
    day's compounded return and what it paid and traded; a single day has no daily Sharpe, Sortino, volatility
    or annualized figure."""
    rows = rows.sort("ts")
    ret, position, cost = (rows[c].to_numpy() for c in ("ret", "position", "cost"))
    total = float(np.prod(1 + ret) - 1)
    return {"total_return": total, "max_drawdown": max(0.0, -total), "win_rate": float(total > 0),
            "turnover": float(np.abs(np.diff(np.concatenate([[0.0], position]))).sum()), "costs_paid": cost.sum()}


def test_every_metric_is_recomputed_from_backtest_returns(loop) -> None:
    store, _, _, _ = loop
    returns = store.read_partition("evaluation.backtest_returns", [SECOND])
    metrics = store.read_partition("evaluation.backtest_metrics", [SECOND]).filter(pl.col("window") == "day")
    checked = 0
    for strategy in ("candidate", "buy_and_hold", "momentum", "momentum_band", "random", "min_variance"):
        expected = _recompute(returns.filter(pl.col("strategy") == strategy))
        stored = {r["metric"]: r for r in metrics.filter(pl.col("strategy") == strategy).to_dicts()}
        for name, value in expected.items():
            assert stored[name]["value"] == pytest.approx(value, rel=1e-6, abs=1e-9), (strategy, name)
            checked += 1
        # One day: no daily Sharpe, Sortino, volatility or annualized figure, and no interval; each says why.
        for name in ("sharpe", "sortino", "annualized_volatility", "annualized_return", "calmar"):
            assert stored[name]["value"] is None and stored[name]["note"], (strategy, name)
        assert all(r["ci_low"] is None and r["note"] for r in stored.values())
    assert checked >= 30


def test_every_stored_sharpe_is_empyricals_of_the_daily_returns(loop) -> None:
    store, _, _, _ = loop
    returns = store.query("SELECT * FROM evaluation.backtest_returns")
    rows = store.query("SELECT * FROM evaluation.backtest_metrics WHERE metric = 'sharpe'").to_dicts()
    assert rows
    for row in rows:
        backtested = sorted(d for d in set(returns["trading_day"].to_list()) if d <= row["trading_day"])
        days = [row["trading_day"]] if row["window"] == "day" else backtested[-20:]
        strategy = returns.filter(pl.col("trading_day").is_in(days) & (pl.col("strategy") == row["strategy"]))
        expected = empyrical.sharpe_ratio(daily_frame(strategy)["ret"].to_numpy(), annualization=252)
        if row["value"] is None:
            assert not np.isfinite(expected) and row["note"], row
        else:
            assert row["value"] == pytest.approx(expected, rel=1e-9), row


def test_shadow_record_follows_the_production_model(loop) -> None:
    store, _, instance, resources = loop
    (first,) = read_registry(store, trading_days(FIRST, FIRST)[0])["model_id"].to_list()  # CLSTM-PPO only that day
    production = [a for a in assets_in_groups("deployment") if a.key.path[-1] == "production_model"]
    # Run alone, production_model still refuses the candidate the gate refused ...
    refused = dg.materialize(production, resources=resources, partition_key=FIRST, instance=instance,
                             raise_on_error=False)
    assert not refused.success
    (failure,) = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "passed the promotion gate" in failure.event_specific_data.error.cause.message
    with pytest.raises(ValueError, match="has not passed the promotion gate"):
        promote(store, first, trading_days(FIRST, FIRST)[0], {"gate": "bypassed"})
    # ... until an operator overrides the gate (registry API, recorded): then the asset promotes it.
    record_gate(store, first, True, "")
    assert dg.materialize(production, resources=resources, partition_key=FIRST, instance=instance).success
    assert read_registry(store).filter(pl.col("model_id") == first)["status"].to_list() == ["production"]
    assert production_as_of(store, trading_days(FIRST, FIRST)[0]) is None  # never a model on its own day
    assert production_as_of(store, trading_days(SECOND, SECOND)[0])["model_id"] == first
    evaluation = [a for a in assets_in_groups("evaluation") if a.key.path[-1] in ("backtest", "shadow_evaluation")]
    result = dg.materialize(evaluation, resources=resources, partition_key=SECOND, instance=instance,
                            run_config={"ops": {"backtest": {"config": {"n_boot": 100}}}})
    assert result.success
    returns = store.read_partition("evaluation.backtest_returns", [SECOND])
    assert returns.filter(pl.col("strategy") == "production")["model_id"].unique().to_list() == [first]
    record = store.read_partition("evaluation.shadow_record", [SECOND])
    live = record.filter(pl.col("strategy") == "production").to_dicts()[0]
    day_return = float(np.prod(1 + returns.filter(pl.col("strategy") == "production")["ret"].to_numpy()) - 1)
    assert live["model_id"] == first and live["days"] == 1
    assert live["cumulative_return"] == pytest.approx(day_return, abs=1e-12)
    assert set(record["strategy"]) == {"production", *BASELINES}
    meta = materialized_metadata(result, "shadow_evaluation")
    assert meta["production_model"] == first and meta["live_days"] == 1
