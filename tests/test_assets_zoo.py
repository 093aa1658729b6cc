"""The whole intraday zoo of a day judged on the same days, as real Dagster runs on a temp lake.

Day D trains CLSTM-PPO, SB3 PPO (and SAC, the portfolio allocator, a product of its own) and the ensemble with tiny
budgets; `candidate_selection` scores every intraday model on D's selection days and leaves only the chosen one a
candidate; the gate judges the chosen one; the backtest of the next day runs each kind of D under its own
strategy, with per-kind metrics. Then SB3 PPO, and then the ensemble, are made to win the choice by a test-only
scoring input handed to the pure chooser (a bonus on that model's selection rows: nothing in the pipeline is
weakened): the gate judges it and `deployment_artifact` packages it, and its ONNX graph reproduces the model.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from conftest import assets_in_groups, ingest_history, materialized_metadata

from pipeline.backtest.inputs import dataset_part, load_registered
from pipeline.backtest.selection import choose, record_choice
from pipeline.contract.calendar import trading_days
from pipeline.envs.intraday import IntradayTradingEnv
from pipeline.export.onnx_policy import load_onnx_session
from pipeline.lake import Warehouse
from pipeline.registry import get_model, read_registry, selected_model
from resources.compute import ComputeResource
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

HISTORY = trading_days("2024-06-14", "2024-07-10")
DAY, NEXT = "2024-07-09", "2024-07-10"
KINDS = ("clstm_ppo", "sb3_ppo", "ensemble")
TRAIN = ("training_dataset", "clstm_ppo_policy", "sb3_baselines", "ensemble_policy", "candidate_selection")
GATE = ("candidate_evaluation", "deployment_artifact")
RUN_CONFIG = {"ops": {
    "training_dataset": {"config": {"window_days": 15, "embargo_days": 0, "selection_days": 2, "gate_days": 10}},
    "clstm_ppo_policy": {"config": {"num_envs": 16}},
    "sb3_baselines": {"config": {"ppo_timesteps": 1024, "sac_timesteps": 256, "ppo": {"n_steps": 512}}},
    "candidate_evaluation": {"config": {"n_boot": 100}},
    "deployment_artifact": {"config": {"n_boot": 100}},
    "backtest": {"config": {"n_boot": 100}},
}}


def _assets(names: tuple[str, ...]) -> list:
    return [a for g in ("training", "evaluation", "deployment") for a in assets_in_groups(g) if a.key.path[-1] in names]


@pytest.fixture(scope="module")
def zoo(module_lake_env: dict[str, str]):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_SYNTHETIC_SNAPSHOT_MINUTES", "390")  # one option chain a day: options are not used here
        market_data = MarketDataResource(alpha=0.0)
        ingest_history(HISTORY, market_data)
        instance = dg.DagsterInstance.ephemeral()
        resources = {"warehouse": WarehouseResource(), "market_data": market_data,
                     "pipes_subprocess_client": dg.PipesSubprocessClient(),
                     "compute": ComputeResource(total_timesteps=2048, torch_threads=1)}

        def run(names: tuple[str, ...], day: str) -> dg.ExecuteInProcessResult:
            ops = {name: c for name, c in RUN_CONFIG["ops"].items() if name in names}
            return dg.materialize(_assets(names), resources=resources, partition_key=day, instance=instance,
                                  run_config={"ops": ops}, raise_on_error=False)

        runs = {"day": run(TRAIN + GATE, DAY), "backtest": run(("backtest",), NEXT)}
        yield Warehouse(Path(module_lake_env["PIPELINE_DATA_LAKE"]) / "warehouse.duckdb"), runs, run


def _day_rows(store: Warehouse) -> dict[str, dict]:
    return {r["model_id"]: r for r in read_registry(store, date.fromisoformat(DAY)).to_dicts()}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.event_specific_data.check_name: e.event_specific_data for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def test_every_intraday_kind_is_scored_and_only_the_chosen_stays_a_candidate(zoo) -> None:
    store, runs, _ = zoo
    assert {e.asset_key.path[-1] for e in runs["day"].get_asset_materialization_events()} >= set(TRAIN + GATE)
    meta = materialized_metadata(runs["day"], "candidate_selection")
    assert sorted(set(meta["kinds"].values())) == sorted(KINDS) and meta["models"] == 3
    rows = _day_rows(store)
    intraday = {m for m, r in rows.items() if r["algo"] in KINDS}
    chosen = selected_model(store, date.fromisoformat(DAY))
    assert set(chosen["selection_scores"]) == intraday and chosen["model_id"] == meta["candidate_model"]
    scored = store.read_partition("evaluation.selection_returns", [date.fromisoformat(DAY)])
    assert set(scored["model_id"]) == intraday and set(scored["selection_day"].cast(pl.Utf8)) == set(
        meta["selection_days"])
    for model_id in intraday - {chosen["model_id"]}:
        row = rows[model_id]
        assert row["status"] == "rejected" and row["gate"] is None
        assert row["status_reason"].startswith(f"not chosen on the selection days of {DAY}: mean daily net return")
        assert row["status_reason"].endswith(f"of the chosen {chosen['model_id']}")
    # The gate judged the chosen one (on a martingale it refuses it, with the gate's reasons, not the chooser's).
    assert rows[chosen["model_id"]]["gate"] in ("passed", "failed") and rows[chosen["model_id"]]["deploy_sha256"]
    assert [r["status"] for r in rows.values() if r["algo"] == "sb3_sac"] == ["candidate"]  # out of scope
    # What the gate's training check reads: SB3 PPO's last update, and the ensemble's largest member KL.
    last = {r["algo"]: json.loads(r["metrics"]).get("last", {}).get("losses/approx_kl") for r in rows.values()}
    assert all(np.isfinite(last[k]) for k in KINDS)
    assert last["ensemble"] == max(last["clstm_ppo"], last["sb3_ppo"])


def test_the_backtest_runs_each_kind_of_the_day_before_with_per_kind_metrics(zoo) -> None:
    store, runs, _ = zoo
    assert runs["backtest"].success
    returns = store.read_partition("evaluation.backtest_returns", [date.fromisoformat(NEXT)])
    kinds = {f"kind:{k}" for k in KINDS}
    assert kinds | {"candidate"} <= set(returns["strategy"])
    by_kind = returns.filter(pl.col("strategy").is_in(list(kinds))).group_by("strategy").agg(
        pl.col("model_id").unique().sort())
    scored = selected_model(store, date.fromisoformat(DAY))["selection_scores"]
    rows = _day_rows(store)
    for r in by_kind.to_dicts():
        assert r["model_id"] == sorted(m for m in scored if f"kind:{rows[m]['algo']}" == r["strategy"])
    metrics = store.read_partition("evaluation.backtest_metrics", [date.fromisoformat(NEXT)])
    for kind in kinds:
        stored = metrics.filter((pl.col("strategy") == kind) & (pl.col("window") == "day"))
        assert {"total_return", "turnover", "costs_paid"} <= set(stored["metric"])
        expected = float(np.prod(1 + returns.filter(pl.col("strategy") == kind)["ret"].to_numpy()) - 1)
        value = stored.filter(pl.col("metric") == "total_return")["value"][0]
        assert value == pytest.approx(expected, rel=1e-6, abs=1e-9), kind
    meta = materialized_metadata(runs["backtest"], "backtest")
    assert {f"{k}/day_return" for k in kinds} <= set(meta)


@pytest.mark.parametrize("kind", ["sb3_ppo", "ensemble"])
def test_a_forced_win_of_another_kind_is_judged_and_packaged_and_its_onnx_matches(zoo, kind: str) -> None:
    store, _, run = zoo
    day = date.fromisoformat(DAY)
    (forced,) = [m for m, r in _day_rows(store).items() if r["algo"] == kind]
    rows = store.read_partition("evaluation.selection_returns", [day]).drop("trading_day").rename(
        {"selection_day": "trading_day"})
    # Test-only scoring input: a bonus on the forced model's selection rows, given to the pure chooser.
    boosted = rows.with_columns(pl.when(pl.col("model_id") == forced).then(pl.col("ret") + 0.01)
                                .otherwise(pl.col("ret")).alias("ret"))
    selection = choose(boosted)
    assert selection.chosen == forced
    record_choice(store, day, selection)
    assert get_model(store, forced)["status"] == "candidate"
    result = run(GATE, DAY)
    checks = _checks(result)
    assert checks["artifact_matches_model"].passed, checks["artifact_matches_model"].metadata
    assert checks["artifact_matches_model"].metadata["max_abs_difference"].value <= 1e-4
    row = get_model(store, forced)
    assert row["gate"] in ("passed", "failed") and row["deploy_sha256"]
    assert materialized_metadata(result, "candidate_evaluation")["candidate_model"] == forced
    others = [r for m, r in _day_rows(store).items() if r["algo"] in KINDS and m != forced]
    assert all(r["status"] == "rejected" for r in others)
    folder = Path(row["deploy_path"])
    config = json.loads((folder / "config.json").read_text())
    assert folder.name == forced and config["algo"] == kind
    lineage = json.loads((folder / "lineage.json").read_text())
    assert lineage["upstream_partitions"][{"sb3_ppo": "sb3_baselines", "ensemble": "ensemble_policy"}[kind]] == DAY
    # The packaged graph on real observations of the selection days: probabilities to 1e-4, the same greedy action.
    model = load_registered(row)
    env = IntradayTradingEnv(dataset_part(model.dataset_dir, "selection"), num_envs=8, config=model.env_config)
    obs = env.reset(seed=0)[0].numpy().astype(np.float32)
    expected = model.policy.action_probs(obs)
    expected = expected[0] if isinstance(expected, tuple) else expected
    probs, actions = load_onnx_session(folder).run(None, {"obs": obs})
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    np.testing.assert_array_equal(actions, model.policy.predict(obs, deterministic=True)[0])
