"""Promotion history does not depend on the order runs happen to finish: three model days decided day by day, and
the same three days with their gate runs started out of order (as the runs of a range backfill may start), end with
the same `models.promotions`.

The models are real (datasets, CLSTM-PPO through Pipes, candidate selection, ONNX packages); the gate's verdict is
fixed per day (day 1 passes, day 2 fails, day 3 passes) by replacing `evaluate_gate` in the deployment module,
because this is about orchestration, and a model of a tiny budget passes no honest gate (the gate's own error rates
are benchmarks/gate_calibration.py's). Day 2's candidate observes other columns than day 1's production model,
which is then run on its own columns, never left out.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from conftest import assets_in_groups, build_once, ingest_history, lake_cache_key, pipeline_env

import assets.deployment
from pipeline.backtest.promotion import CANDIDATE, GateResult
from pipeline.contract.calendar import trading_days
from pipeline.lake import Warehouse
from pipeline.registry import read_promotions
from resources.compute import ComputeResource
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

HISTORY = trading_days("2024-06-24", "2024-07-03")  # 8 sessions: a 5-day window for each of the last three
DAYS = [d.isoformat() for d in HISTORY[-3:]]  # 2024-07-01, 07-02, 07-03
PASSES = {DAYS[0]: True, DAYS[1]: False, DAYS[2]: True}
# Short windows: the verdicts are fixed here, so the gate's days need no statistical power.
DATASET = {"window_days": 5, "embargo_days": 0, "selection_days": 1, "gate_days": 2}
# Day 2's candidate observes fewer columns than day 1's production model.
FEATURES = {DAYS[1]: ["log_return_1m", "log_return_5m", "relative_spread_bps"]}
TRAINING = ("training_dataset", "clstm_ppo_policy", "candidate_selection")
DECISION = ("candidate_evaluation", "deployment_artifact", "production_model")


def _assets(names: tuple[str, ...]) -> list:
    return [a for g in ("training", "evaluation", "deployment") for a in assets_in_groups(g)
            if a.key.path[-1] in names]


def _resources() -> dict[str, Any]:
    return {"warehouse": WarehouseResource(), "market_data": MarketDataResource(alpha=0.0),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
            "compute": ComputeResource(total_timesteps=1024, torch_threads=1)}


def _fixed_gate(rows: pl.DataFrame, *_: Any, **__: Any) -> list[GateResult]:
    """Every condition passes or fails as PASSES says for the day of the judged candidate."""
    (model_id,) = rows.filter(pl.col("strategy") == CANDIDATE)["model_id"].unique().to_list()
    day = next(d for d in DAYS if d in model_id)
    return [GateResult(name, PASSES[day], f"fixed for {day}") for name in
            ("metrics_finite", "training_converged", "beats_production", "beats_best_baseline")]


def _decide(day: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    config = {"ops": {"candidate_evaluation": {"config": {"n_boot": 50}}}}
    return dg.materialize(_assets(DECISION), resources=_resources(), partition_key=day, instance=instance,
                          run_config=config, raise_on_error=False)


def _failure(result: dg.ExecuteInProcessResult) -> str:
    """What stopped the run: the step that failed and its error (with the error's cause, when it has one)."""
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.event_specific_data.error
    return f"{failure.step_key}: {error.message} {error.cause.message if error.cause else ''}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, lake_cache: Path) -> Path:
    """A lake with the three days' models trained and chosen, kept as files to copy."""
    root = tmp_path_factory.mktemp("order")
    env = pipeline_env(root / "trained")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        mp.setenv("PIPELINE_SYNTHETIC_SNAPSHOT_MINUTES", "390")
        lake = Path(env["PIPELINE_DATA_LAKE"])
        market = MarketDataResource(alpha=0.0)
        build_once(lake_cache, lake_cache_key("synthetic-martingale", days=HISTORY, market=market), lake,
                   lambda: ingest_history(HISTORY, market))
        for day in DAYS:
            dataset = DATASET | ({"features": FEATURES[day]} if day in FEATURES else {})
            run_config = {"ops": {"training_dataset": {"config": dataset},
                                  "clstm_ppo_policy": {"config": {"num_envs": 8}}}}
            assert dg.materialize(_assets(TRAINING), resources=_resources(), partition_key=day,
                                  run_config=run_config).success
    return lake


@pytest.fixture(scope="module")
def decided(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same trained lake decided twice: day by day, and with runs started out of order."""
    out: dict[str, Any] = {}
    for order in ("day_by_day", "out_of_order"):
        root = tmp_path_factory.mktemp(order)
        env = pipeline_env(root)
        shutil.copytree(trained, env["PIPELINE_DATA_LAKE"], dirs_exist_ok=True)
        with pytest.MonkeyPatch.context() as mp:
            for name, value in env.items():
                mp.setenv(name, value)
            mp.setattr(assets.deployment, "evaluate_gate", _fixed_gate)
            instance = dg.DagsterInstance.ephemeral()
            sequence = DAYS if order == "day_by_day" else [DAYS[2], DAYS[1], DAYS[0], DAYS[2], DAYS[1], DAYS[2]]
            runs = [(day, _decide(day, instance)) for day in sequence]
        out[order] = (Warehouse(Path(env["PIPELINE_DATA_LAKE"]) / "warehouse.duckdb"), runs)
    return out


def _history(store: Warehouse) -> list[tuple]:
    rows = read_promotions(store)
    return list(zip(*(rows[c].to_list() for c in ("model_id", "model_trading_day", "previous_model_id",
                                                     "decided_on")), strict=True))


def test_out_of_order_runs_wait_for_the_day_before(decided) -> None:
    _, runs = decided["out_of_order"]
    (first, early_third), (second, early_second) = runs[0], runs[1]
    assert (first, second) == (DAYS[2], DAYS[1])
    assert not early_third.success and f"the promotion decision of {DAYS[1]}" in _failure(early_third)
    assert not early_second.success and f"the promotion decision of {DAYS[0]}" in _failure(early_second)
    # Once day 1 is decided, day 3 still waits for day 2; then both go through.
    assert runs[2][1].success and not runs[3][1].success and f"decision of {DAYS[1]}" in _failure(runs[3][1])
    assert _failure(runs[4][1]).startswith("deployment_artifact")  # day 2's gate refuses its candidate
    assert runs[5][1].success


def test_promotions_are_the_same_whatever_the_order(decided) -> None:
    day_by_day, out_of_order = (_history(decided[k][0]) for k in ("day_by_day", "out_of_order"))
    assert day_by_day == out_of_order
    (first, third) = day_by_day
    assert first[3] == date.fromisoformat(DAYS[0]) and first[2] is None
    assert third[3] == date.fromisoformat(DAYS[2]) and third[2] == first[0]  # day 3 replaced day 1's model


def test_a_production_model_with_other_columns_is_run_on_its_own(decided) -> None:
    store, _ = decided["day_by_day"]
    (first, _) = _history(store)
    rows = store.read_partition("evaluation.gate_returns", [date.fromisoformat(DAYS[1])])
    production = rows.filter(pl.col("strategy") == "production")
    assert production["model_id"].unique().to_list() == [first[0]]
    assert production.height == rows.filter(pl.col("strategy") == CANDIDATE).height
