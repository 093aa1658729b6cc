"""The collector's schedule and job in Dagster: XNYS slots, files into landing, gaps, and the ingest that follows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from assets.collector import (
    COLLECTOR_SCHEDULE_NAME,
    build_collector_schedule,
    collect_option_chains,
    collector_cron,
)
from pipeline.definitions import build_definitions
from pipeline.lake import Warehouse
from pipeline.sources.alpaca_source import AlpacaSource
from pipeline.sources.retry import RetryPolicy
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource
from tests.fakes.alpaca_server import FakeAlpacaState, fake_alpaca, live_chain

NY = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return build_definitions()


def _tick(defs: dg.Definitions, when: datetime) -> dg.SensorResult:
    context = dg.build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def())
    return defs.get_schedule_def(COLLECTOR_SCHEDULE_NAME).evaluate_tick(context)


def test_the_schedule_fires_on_the_session_slots_only(defs: dg.Definitions) -> None:
    schedule = defs.get_schedule_def(COLLECTOR_SCHEDULE_NAME)
    assert schedule.cron_schedule == "*/15 9-15 * * 1-5" and schedule.execution_timezone == "America/New_York"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    (request,) = _tick(defs, datetime(2024, 7, 5, 10, 0, tzinfo=NY)).run_requests
    slot = "2024-07-05T14:00:00+00:00"
    assert request.run_key == f"option_chains:{slot}"
    assert request.run_config["ops"]["collect_option_chain_snapshot"]["config"]["slot"] == slot
    skipped = {
        datetime(2024, 7, 4, 10, 0, tzinfo=NY): "not an XNYS trading day",  # Independence Day
        datetime(2024, 7, 5, 9, 30, tzinfo=NY): "not a collection slot",  # the open: first slot is 09:45
        datetime(2024, 11, 29, 13, 15, tzinfo=NY): "to 12:45",  # after the 13:00 early close
    }
    for when, why in skipped.items():
        result = _tick(defs, when)
        assert not result.run_requests and why in result.skip_message, (when, result.skip_message)
    assert _tick(defs, datetime(2024, 11, 29, 12, 45, tzinfo=NY)).run_requests


def test_another_interval_moves_the_cron_and_the_slots() -> None:
    schedule = build_collector_schedule(5)
    assert schedule.cron_schedule == collector_cron(5) == "*/5 9-15 * * 1-5"
    slot = datetime(2024, 7, 5, 9, 35, tzinfo=NY)
    (request,) = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=slot)).run_requests
    assert request.tags["pipeline/slot"] == slot.astimezone(UTC).isoformat()
    with pytest.raises(ValueError, match="must divide 30"):
        collector_cron(20)


@pytest.fixture
def alpaca(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeAlpacaState, list[datetime]]]:
    """The fake Alpaca API with SPY's and QQQ's chains; the collector's AlpacaSource reads it at scripted times."""
    state = FakeAlpacaState(api_key="PKTEST", secret_key="s3cr3t", page_size=25)
    state.chains = {"SPY": live_chain("SPY", 550.0), "QQQ": live_chain("QQQ", 480.0)}
    state.latest_trades = {s: {"t": "2024-07-05T13:59:59Z", "x": "V", "p": p, "s": 10, "c": ["@"], "i": 1, "z": "C"}
                           for s, p in (("SPY", 550.0), ("QQQ", 480.0))}
    now: list[datetime] = []  # the broker's clock: the test sets it before each slot
    with fake_alpaca(state) as url:
        source = AlpacaSource("PKTEST", "s3cr3t", url_override=url, clock=lambda: now[-1],
                              retry=RetryPolicy(max_attempts=1))
        monkeypatch.setattr(MarketDataResource, "chain_source", lambda self, broker=None: source)
        yield state, now


def _collect(lake: Path, slot: datetime) -> dg.ExecuteInProcessResult:
    return collect_option_chains.execute_in_process(
        run_config={"ops": {"collect_option_chain_snapshot": {"config": {"slot": slot.isoformat()}}}},
        resources={"market_data": MarketDataResource(source="alpaca", symbols=["SPY", "QQQ"]),
                   "warehouse": WarehouseResource(lake_path=str(lake))},
        raise_on_error=False,
    )


def test_collected_snapshots_reach_raw_option_snapshots_through_the_landing_sensor(
    defs: dg.Definitions, lake_env: dict[str, str], alpaca: tuple[FakeAlpacaState, list[datetime]]
) -> None:
    lake = Path(lake_env["PIPELINE_DATA_LAKE"])
    state, now = alpaca
    slots = [datetime(2024, 7, 5, 10, 0, tzinfo=NY), datetime(2024, 7, 5, 10, 15, tzinfo=NY)]
    now.append(slots[0] + timedelta(seconds=2))
    assert _collect(lake, slots[0]).success
    # The broker refuses SPY's first request of the next slot: SPY's snapshot is missed, QQQ's still written, and
    # the run is red.
    now.append(slots[1] + timedelta(seconds=2))
    state.failures = [400]
    failed = _collect(lake, slots[1])
    assert not failed.success
    assert "missed the" in str(failed.failure_data_for_node("collect_option_chain_snapshot").error.message)
    gaps = (lake / "logs" / "option_snapshot_gaps.log").read_text().splitlines()
    assert len(gaps) == 1 and "SPY" in gaps[0]
    files = sorted(p.name for p in (lake / "landing" / "option_snapshots" / "2024-07-05").iterdir())
    assert files == ["QQQ_alpaca_20240705T140002000000Z.parquet", "QQQ_alpaca_20240705T141502000000Z.parquet",
                     "SPY_alpaca_20240705T140002000000Z.parquet"]
    # The landing sensor asks for the day's option snapshots (and features); that run ingests every collected row.
    context = dg.build_sensor_context(repository_def=defs.get_repository_def(), resources=defs.resources)
    (request,) = defs.get_sensor_def("landing_files_sensor").evaluate_tick(context).run_requests
    assert request.partition_key == "2024-07-05"
    assert request.asset_selection == [dg.AssetKey(["raw", "option_snapshots"]), dg.AssetKey(["features", "options"])]
    ran = defs.get_implicit_global_asset_job_def().execute_in_process(
        run_config=request.run_config, partition_key=request.partition_key,
        asset_selection=list(request.asset_selection), tags=request.tags,
    )
    assert ran.success
    (materialization,) = ran.asset_materializations_for_node("raw__option_snapshots")
    assert materialization.metadata["snapshots_per_underlying"].value == {"QQQ": 2, "SPY": 1}
    store = Warehouse(lake / "warehouse.duckdb")
    counts = store.query("SELECT underlying, count(DISTINCT ts) AS snapshots, count(*) AS n FROM raw.option_snapshots "
                         "GROUP BY underlying ORDER BY underlying")
    assert counts.rows() == [("QQQ", 2, 120), ("SPY", 1, 60)]  # SPY's missed slot stays a gap
    assert store.row_count("quarantine.rejected_rows") == 0
    assert store.query("SELECT count(DISTINCT ts) AS n FROM features.options")["n"][0] == 2
    # The broker stays in `source`, and the rows say whether its quotes were live: the fake's chain is quoted at
    # 14:00 UTC, so at the second slot (14:15) they were 15 minutes old, Alpaca's free delayed feed.
    flags = store.query("SELECT DISTINCT source, ts, delayed FROM raw.option_snapshots ORDER BY ts")
    assert flags.rows() == [("alpaca", now[0], False), ("alpaca", now[1], True)]
