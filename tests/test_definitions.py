"""The code location loads, and its assets, checks, resources, job, schedule and sensor are wired as designed."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from pipeline.sources.base import SourceAuthError
from resources.sources import MarketDataResource

RAW_KEYS = [dg.AssetKey(["raw", t]) for t in ("trades", "quotes", "bars", "option_snapshots")]
FEATURE_KEYS = [dg.AssetKey(["features", t]) for t in ("bars_1m", "market", "options")]
TRAINING_KEYS = [dg.AssetKey(k) for k in ("training_dataset", "clstm_ppo_policy", "sb3_baselines", "ensemble_policy",
                                           "candidate_selection")]
SELECTION_KEY = TRAINING_KEYS[4]
EVALUATION_KEYS = [dg.AssetKey(k) for k in ("backtest", "shadow_evaluation", "candidate_evaluation")]
DEPLOYMENT_KEYS = [dg.AssetKey(k) for k in ("deployment_artifact", "production_model")]
SEARCH_KEY = dg.AssetKey("hyperparameter_search")
DAILY_KEYS = set(RAW_KEYS + FEATURE_KEYS + TRAINING_KEYS + EVALUATION_KEYS + DEPLOYMENT_KEYS)
OPTIONS_KEYS = {dg.AssetKey(k) for k in ("options_dataset", "options_policy", "options_backtest", "options_deployment")}
ALL_KEYS = DAILY_KEYS | {SEARCH_KEY} | OPTIONS_KEYS  # the search and the options product are not in the daily job
GATE_CHECKS = {"artifact_matches_model", "metrics_finite", "training_converged", "beats_production",
               "beats_best_baseline"}


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from pipeline.definitions import build_definitions

    return build_definitions()


@pytest.fixture(scope="module")
def asset_graph(defs: dg.Definitions):
    return defs.resolve_asset_graph()


def test_definitions_load(defs: dg.Definitions) -> None:
    dg.Definitions.validate_loadable(defs)
    assert set(defs.resolve_asset_graph().get_all_asset_keys()) == ALL_KEYS


def test_assets_are_partitioned_single_run_in_the_duckdb_pool(asset_graph) -> None:
    for key in RAW_KEYS + FEATURE_KEYS:
        node = asset_graph.get(key)
        assert node.group_name == ("ingest" if key.path[0] == "raw" else "features")
        assert node.partitions_def is not None
        assert node.partitions_def.has_partition_key("2024-07-05")
        assert not node.partitions_def.has_partition_key("2024-07-04")
        assert node.backfill_policy == dg.BackfillPolicy.single_run()
        assert node.pools == {"duckdb"}
        assert {"duckdb", "polars"} <= set(node.kinds)


def test_raw_assets_have_blocking_rejected_share_checks(defs: dg.Definitions) -> None:
    specs = {spec.key: spec for asset in defs.assets for spec in asset.check_specs}
    raw = {key: spec for key, spec in specs.items() if key.asset_key in RAW_KEYS}
    assert set(raw) == {dg.AssetCheckKey(key, "rejected_share") for key in RAW_KEYS}
    assert all(spec.blocking for spec in raw.values())


def test_promotion_is_guarded_by_blocking_checks(defs: dg.Definitions, asset_graph) -> None:
    specs = {spec.key: spec for asset in defs.assets for spec in asset.check_specs}
    gate = {key: spec for key, spec in specs.items() if key.asset_key == DEPLOYMENT_KEYS[0]}
    assert {key.name for key in gate} == GATE_CHECKS and all(spec.blocking for spec in gate.values())
    # The checks are partitioned like the asset: each result is filed under its trading day.
    assert all(spec.partitions_def == asset_graph.get(DEPLOYMENT_KEYS[0]).partitions_def for spec in gate.values())
    # production_model runs after (and only after) the gate's asset: a failed blocking check stops it.
    assert asset_graph.get(DEPLOYMENT_KEYS[1]).parent_keys == {DEPLOYMENT_KEYS[0]}
    assert asset_graph.get(DEPLOYMENT_KEYS[0]).parent_keys == {SELECTION_KEY, EVALUATION_KEYS[2]}


def test_the_choice_reads_selection_days_and_the_gate_judges_the_choice(asset_graph) -> None:
    # Every intraday kind of the day is a candidate: CLSTM-PPO seeds, SB3 PPO (sb3_baselines), the ensemble.
    assert asset_graph.get(SELECTION_KEY).parent_keys == set(TRAINING_KEYS[:4])
    assert asset_graph.get(SELECTION_KEY).group_name == "training"
    assert asset_graph.get(EVALUATION_KEYS[2]).parent_keys == {SELECTION_KEY, TRAINING_KEYS[0]}


def test_backtest_of_a_day_runs_the_model_of_the_day_before(asset_graph) -> None:
    backtest = asset_graph.get(EVALUATION_KEYS[0])
    assert backtest.parent_keys == {TRAINING_KEYS[0], SELECTION_KEY, FEATURE_KEYS[0], FEATURE_KEYS[1]}
    for key in (TRAINING_KEYS[0], SELECTION_KEY):
        upstream = backtest.partition_mappings[key].get_upstream_mapped_partitions_result_for_partitions(
            backtest.partitions_def.subset_with_partition_keys(["2024-07-08"]), backtest.partitions_def,
            backtest.partitions_def,
        ).partitions_subset.get_partition_keys()
        assert list(upstream) == ["2024-07-05"]  # the trading day before (a Monday after a Friday)
    # The features are the backtest day's own: the same day.
    assert FEATURE_KEYS[1] not in backtest.partition_mappings


def test_feature_lineage(asset_graph) -> None:
    assert asset_graph.get(FEATURE_KEYS[0]).parent_keys == {RAW_KEYS[0], RAW_KEYS[1]}
    assert asset_graph.get(FEATURE_KEYS[1]).parent_keys == {FEATURE_KEYS[0], RAW_KEYS[2]}
    assert asset_graph.get(FEATURE_KEYS[2]).parent_keys == {RAW_KEYS[3]}


def test_training_lineage_reads_the_window_ending_at_the_partition(asset_graph) -> None:
    dataset, policy = (asset_graph.get(key) for key in TRAINING_KEYS[:2])
    assert dataset.parent_keys == {FEATURE_KEYS[0], FEATURE_KEYS[1]}
    assert policy.parent_keys == {TRAINING_KEYS[0]}
    assert {dataset.group_name, policy.group_name} == {"training"}
    # Day D's dataset depends on the 41 trading days ending at D (2024-07-04 is a holiday), none after it.
    mapping = dataset.partition_mappings[FEATURE_KEYS[1]]
    upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(
        dataset.partitions_def.subset_with_partition_keys(["2024-07-05"]), dataset.partitions_def,
        dataset.partitions_def,
    ).partitions_subset.get_partition_keys()
    assert len(upstream) == 41 and upstream[-1] == "2024-07-05" and upstream[0] == "2024-05-07"


def test_baselines_train_on_the_dataset_and_the_ensemble_on_every_intraday_model(asset_graph) -> None:
    dataset, clstm, baselines, ensemble = (asset_graph.get(key) for key in TRAINING_KEYS[:4])
    assert baselines.parent_keys == {TRAINING_KEYS[0]}
    assert ensemble.parent_keys == {TRAINING_KEYS[1], TRAINING_KEYS[2]}
    assert {baselines.group_name, ensemble.group_name} == {"training"}
    # The dataset's day partitions with the default (same day) mapping: day D's models come from day D's dataset.
    assert baselines.partitions_def == ensemble.partitions_def == dataset.partitions_def
    assert not baselines.partition_mappings and not ensemble.partition_mappings


def test_daily_schedule_targets_the_day_that_closed(defs: dg.Definitions) -> None:
    schedule = defs.get_schedule_def("daily_after_close")
    assert schedule.cron_schedule == "30 17 * * 1-5"
    ny = ZoneInfo("America/New_York")
    repo = defs.get_repository_def()
    friday = dg.build_schedule_context(
        scheduled_execution_time=datetime(2024, 7, 5, 17, 30, tzinfo=ny), repository_def=repo
    )
    (request,) = schedule.evaluate_tick(friday).run_requests
    assert request.partition_key == "2024-07-05"
    holiday = dg.build_schedule_context(
        scheduled_execution_time=datetime(2024, 7, 4, 17, 30, tzinfo=ny), repository_def=repo
    )
    result = schedule.evaluate_tick(holiday)
    assert not result.run_requests and "holiday" in result.skip_message
    job = defs.resolve_job_def("daily_pipeline")
    assert set(job.asset_layer.selected_asset_keys) == DAILY_KEYS


def test_partitions_start_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.definitions import build_definitions

    monkeypatch.setenv("PIPELINE_PARTITIONS_START", "2024-06-03")
    node = build_definitions().resolve_asset_graph().get(RAW_KEYS[0])
    assert node.partitions_def.get_first_partition_key() == "2024-06-03"


def test_source_from_env_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_SOURCE", "files")
    assert MarketDataResource().source_name() == "files"
    assert MarketDataResource(source="synthetic").source_name() == "synthetic"
    monkeypatch.setenv("PIPELINE_SOURCE", "bloomberg")
    with pytest.raises(ValueError, match="PIPELINE_SOURCE"):
        MarketDataResource().source_name()


def test_alpaca_without_keys_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("ALPACA_API_KEY", raising=False)
    monkeypatch.delenv("ALPACA_SECRET_KEY", raising=False)
    with pytest.raises(SourceAuthError, match="ALPACA_API_KEY"):
        MarketDataResource(source="alpaca").build_source(tmp_path)


@pytest.mark.parametrize("source", ["alpaca", "ibkr"])
def test_brokers_take_their_universe_from_pipeline_symbols(monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    monkeypatch.delenv("PIPELINE_SYMBOLS", raising=False)
    with pytest.raises(ValueError, match="PIPELINE_SYMBOLS"):
        MarketDataResource(source=source).universe()
    monkeypatch.setenv("PIPELINE_SYMBOLS", "spy, QQQ")
    assert MarketDataResource(source=source).universe() == ["SPY", "QQQ"]
    assert MarketDataResource(source=source, symbols=["IWM"]).universe() == ["IWM"]


def test_synthetic_fields_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_SYNTHETIC_SYMBOLS", "SPY,QQQ")
    monkeypatch.setenv("PIPELINE_SYNTHETIC_SEED", "11")
    assert MarketDataResource().universe() == ["SPY", "QQQ"]
    config = MarketDataResource(seed=5, symbols=["IWM"]).synthetic_config()
    assert (config.seed, tuple(config.symbols)) == (5, ("IWM",))
    assert MarketDataResource().synthetic_config().seed == 11
