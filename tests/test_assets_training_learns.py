"""The training group's dataset and CLSTM-PPO assets, materialized with their defaults (the small_budget preset at
the compute resource's default budget), learn: on a synthetic market with a planted signal, the registered
CLSTM-PPO policy of day D beats flat and buy-and-hold on the 15 trading days after D, after costs, each by a margin
with its own paired t statistic.

The planted signal is the synthetic market's default, alpha 0.15. Before the intraday env's mostly-HOLD starting
policy (`IntradayTradingEnv.initial_action_probs`) the same run learned nothing at this alpha (the policy never
traded; out-of-sample PnL 0 on all 30 day-symbols).
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from conftest import DATA_GROUPS, assets_in_groups, pipeline_env
from trading_controls import (
    LEARNING_TIMEOUT_S,
    T_CRITICAL,
    agent_policy,
    buy_and_hold,
    margin_report,
    outcome_report,
    t_statistic,
    walk_episodes,
)

from pipeline.agents.clstm_agent import CLSTMAgent
from pipeline.contract.calendar import trading_days
from pipeline.envs.intraday import IntradayConfig
from pipeline.envs.warehouse_loader import MarketLoaderConfig, load_market_tensors
from pipeline.lake import Warehouse
from pipeline.registry import read_registry
from resources.compute import ComputeResource
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

DAY = "2024-07-05"
HISTORY, LATER = trading_days("2024-05-01", DAY), trading_days("2024-07-08", "2024-07-26")  # the default 41-day
# window ending at DAY (and a few days before it), then 15 trading days after it
ALPHA = 0.15
# The settings the asset trains with (assets.training.DEFAULT_INTRADAY), walked once per (day, symbol).
INTRADAY = IntradayConfig(window=8, loss_cut=None, profit_lock=None)


@pytest.mark.timeout(LEARNING_TIMEOUT_S)
def test_registered_policy_beats_flat_and_buy_and_hold_after_the_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in pipeline_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PIPELINE_SYNTHETIC_SNAPSHOT_MINUTES", "390")
    warehouse = WarehouseResource()
    tags = {"dagster/asset_partition_range_start": HISTORY[0].isoformat(),
            "dagster/asset_partition_range_end": LATER[-1].isoformat()}
    data = dg.materialize(assets_in_groups(*DATA_GROUPS), tags=tags,
                          resources={"warehouse": warehouse, "market_data": MarketDataResource(alpha=ALPHA)})
    assert data.success
    # The dataset and CLSTM-PPO assets of the group, with their default config and budget (the SB3 baselines and
    # the ensemble are tested in test_assets_training_baselines.py; here they would only add minutes).
    resources = {"warehouse": warehouse, "pipes_subprocess_client": dg.PipesSubprocessClient(),
                 "compute": ComputeResource()}
    clstm = [a for a in assets_in_groups("training") if a.key.path[-1] in ("training_dataset", "clstm_ppo_policy")]
    assert dg.materialize(clstm, resources=resources, partition_key=DAY).success

    store = Warehouse(warehouse.database_path())
    (row,) = read_registry(store).to_dicts()
    assert row["algo"] == "clstm_ppo"
    agent = CLSTMAgent.load(row["artifact_path"])
    later = load_market_tensors(store, LATER, ["QQQ", "SPY"], MarketLoaderConfig())
    trained = walk_episodes(later, agent_policy(agent), INTRADAY)
    held = walk_episodes(later, buy_and_hold, INTRADAY)
    print(outcome_report(trained, "registered policy, 15 later days"), margin_report(trained.pnl, held.pnl, "buy-and-hold"))
    assert len(trained.pnl) == 30 and trained.fills.sum() > 0
    for name, baseline in (("flat", np.zeros_like(trained.pnl)), ("buy-and-hold", held.pnl)):
        margin = trained.pnl - baseline
        assert margin.mean() > 0 and t_statistic(margin) > T_CRITICAL, margin_report(trained.pnl, baseline, name)

    # The gate runs on the model's 15 gate days, after the candidate was chosen on its 5 selection days. Whatever
    # the verdict (printed), the package must reproduce the model and the registry must say what the checks said.
    gate = [a for g in ("training", "evaluation", "deployment") for a in assets_in_groups(g)
            if a.key.path[-1] in ("candidate_selection", "candidate_evaluation", "deployment_artifact",
                                  "production_model")]
    run = dg.materialize(gate, partition_key=DAY, raise_on_error=False, resources={
        **resources, "market_data": MarketDataResource(alpha=ALPHA)})
    checks = {e.event_specific_data.check_name: (e.event_specific_data.passed,
                                                 e.event_specific_data.metadata["reason"].value)
              for e in run.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    print("promotion gate:", json.dumps(checks, indent=1))
    for name in ("artifact_matches_model", "metrics_finite", "training_converged"):
        assert checks[name][0], checks[name]
    (row,) = read_registry(store).to_dicts()
    assert row["status"] == ("production" if all(p for p, _ in checks.values()) else "rejected")
    assert Path(row["deploy_path"], "policy.onnx").is_file()
