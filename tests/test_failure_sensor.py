"""The run-failure sensor: a real failed run (a test-only asset that raises) is summed up in one line naming the
run, its partitions, the failed step with its error, and where to look; the line is logged and appended to
<lake>/logs/run_failures.log."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from assets.feature_checks import build_feature_checks
from pipeline.partitions import trading_day_partitions
from pipeline.sensors import (
    LANDING_SENSOR_NAME,
    RUN_FAILURES_LOG,
    build_landing_sensor,
    failure_summary,
    run_failure_summary,
)
from resources.warehouse import WarehouseResource

ERROR = "features.market has no rows for 2024-07-05: materialize the features first"


@dg.asset(partitions_def=trading_day_partitions(), backfill_policy=dg.BackfillPolicy.single_run())
def needs_features() -> None:
    raise ValueError(f"{ERROR}\nsecond line that the summary leaves out")


def _failed_run(instance: dg.DagsterInstance, **partition) -> dg.ExecuteInProcessResult:
    result = dg.materialize([needs_features], instance=instance, raise_on_error=False, **partition)
    assert not result.success
    return result


def _evaluate(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> None:
    context = dg.build_run_status_sensor_context(
        sensor_name=run_failure_summary.name,
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"warehouse": WarehouseResource()},
    ).for_run_failure()
    run_failure_summary(context)


@pytest.mark.parametrize(
    ("partition", "says"),
    [
        ({"partition_key": "2024-07-05"}, "partition 2024-07-05"),
        ({"tags": {"dagster/asset_partition_range_start": "2024-07-03",
                   "dagster/asset_partition_range_end": "2024-07-05"}}, "partitions 2024-07-03...2024-07-05"),
    ],
)
def test_failed_run_is_summed_up_in_one_line(lake_env: dict[str, str], partition: dict, says: str) -> None:
    instance = dg.DagsterInstance.get()
    result = _failed_run(instance, **partition)
    _evaluate(instance, result)
    log = Path(lake_env["PIPELINE_DATA_LAKE"]) / RUN_FAILURES_LOG
    (line,) = log.read_text().splitlines()
    run_id = result.run_id
    assert f"run {run_id} (job {result.dagster_run.job_name}, {says}) failed" in line
    assert f"step needs_features: ValueError: {ERROR}" in line
    assert "second line" not in line
    assert f"/runs/{run_id}" in line
    compute_logs = Path(lake_env["DAGSTER_HOME"]) / "storage" / run_id / "compute_logs"
    assert str(compute_logs) in line
    assert compute_logs.is_dir()


def test_each_failure_appends_a_line(lake_env: dict[str, str]) -> None:
    instance = dg.DagsterInstance.get()
    runs = [_failed_run(instance, partition_key=day) for day in ("2024-07-03", "2024-07-05")]
    for result in runs:
        _evaluate(instance, result)
    lines = (Path(lake_env["PIPELINE_DATA_LAKE"]) / RUN_FAILURES_LOG).read_text().splitlines()
    assert [result.run_id in line for result, line in zip(runs, lines, strict=True)] == [True, True]


def test_a_run_without_failed_steps_gives_the_run_error() -> None:
    line = failure_summary("abc", "daily_pipeline", {}, [], "Run was canceled\nmore", "/home/dagster")
    assert line.startswith("run abc (job daily_pipeline, no partition) failed: run error: Run was canceled |")
    assert "/home/dagster/storage/abc/compute_logs" in line


def test_landing_sensor_says_how_to_turn_it_on() -> None:
    sensor = build_landing_sensor(dg.AssetSelection.groups("ingest"), trading_day_partitions())
    assert sensor.name == LANDING_SENSOR_NAME
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert "Automation" in sensor.description
    assert f"`dagster sensor start {LANDING_SENSOR_NAME} -m pipeline.definitions`" in sensor.description
    assert "dagster-daemon" in sensor.description


def test_the_code_location_has_the_failure_sensor_and_the_feature_checks() -> None:
    # Imported here, as in test_definitions: building the location is this test's subject.
    from pipeline.definitions import build_definitions

    defs = build_definitions()
    sensor = defs.get_sensor_def(run_failure_summary.name)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    expected = {key for checks in build_feature_checks() for key in checks.check_keys}
    assert expected <= set(defs.resolve_asset_graph().asset_check_keys)
