"""The broker sources under real Dagster runs: the Alpaca secret never reaches logs, metadata or files on disk,
and broker failures (rejected keys, rate limits, an unreachable TWS) end runs the way the messages promise.

Ingest assets are materialized with `dg.materialize` on the DAGSTER_HOME instance of `lake_env` (so event logs and
captured compute logs land on disk and can be searched), against the local fake Alpaca server through the real
alpaca-py clients, with the keys wired from the environment the way `pipeline.definitions` wires them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from assets.ingest import build_ingest_assets, raw_asset_key
from pipeline.contract.schemas import RAW_TABLES
from pipeline.lake import Warehouse
from pipeline.partitions import trading_day_partitions
from resources.sources import MarketDataResource, alpaca_key_fields
from resources.warehouse import WarehouseResource
from tests.fakes.alpaca_server import FakeAlpacaState, Reply, fake_alpaca

DAY = "2024-07-05"
SYMBOLS = ["SPY", "QQQ"]
API_KEY = "PKH9DISTINCTKEYID0001"
SECRET = "h9-sEcReT-7Q2xV9kLmN4pR8tZ"  # distinctive: any occurrence anywhere is a leak


@pytest.fixture(scope="module")
def raw_assets() -> list[dg.AssetsDefinition]:
    return [a for a in build_ingest_assets(trading_day_partitions()) if a.key.path[0] == "raw"]


@pytest.fixture
def instance(lake_env: dict[str, str]) -> Iterator[dg.DagsterInstance]:
    """The persistent instance in the test's DAGSTER_HOME (SQLite event log, local compute logs)."""
    with dg.DagsterInstance.get() as inst:
        yield inst


@pytest.fixture
def python_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every python log record at DEBUG: the HTTP stack, alpaca-py, the pipeline and dagster."""
    for name in ("", "urllib3", "alpaca", "pipeline", "dagster", "ib_async"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def _trade(minute: int, price: float) -> dict:
    return {"t": f"2024-07-05T14:{minute:02d}:00Z", "x": "V", "p": price, "s": 10, "c": ["@"], "i": minute, "z": "C"}


def _quote(minute: int, bid: float) -> dict:
    return {"t": f"2024-07-05T14:{minute:02d}:00Z", "ax": "V", "ap": bid + 0.02, "as": 3, "bx": "Q", "bp": bid,
            "bs": 4, "c": ["R"], "z": "C"}


def _bar(minute: int, close: float) -> dict:
    return {"t": f"2024-07-05T14:{minute:02d}:00Z", "o": close, "h": close + 0.1, "l": close - 0.1, "c": close,
            "v": 100, "n": 3, "vw": close}


@pytest.fixture
def alpaca_state(monkeypatch: pytest.MonkeyPatch, lake_env: dict[str, str]) -> FakeAlpacaState:
    """Keys in the environment and a server that accepts exactly them; 3 rows per symbol, 2 rows per page."""
    monkeypatch.setenv("ALPACA_API_KEY", API_KEY)
    monkeypatch.setenv("ALPACA_SECRET_KEY", SECRET)
    state = FakeAlpacaState(api_key=API_KEY, secret_key=SECRET, page_size=2)
    for i, symbol in enumerate(SYMBOLS):
        base = 500.0 - 100 * i
        state.trades[symbol] = [_trade(m, base + m) for m in range(3)]
        state.quotes[symbol] = [_quote(m, base + m) for m in range(3)]
        state.bars[symbol] = [_bar(m, base + m) for m in range(3)]
    return state


@pytest.fixture
def alpaca_url(alpaca_state: FakeAlpacaState) -> Iterator[str]:
    with fake_alpaca(alpaca_state) as url:
        yield url


def _alpaca_resources(url: str, **fields: object) -> dict[str, object]:
    # Keys as dg.EnvVar, exactly as pipeline.definitions wires them: resolved inside the run, never in run config.
    market_data = MarketDataResource(
        source="alpaca", symbols=SYMBOLS, alpaca_url_override=url, alpaca_retry_base_delay_s=0.001,
        **alpaca_key_fields(), **fields,
    )
    return {"warehouse": WarehouseResource(), "market_data": market_data}


def _materialize(
    assets: list[dg.AssetsDefinition], resources: dict[str, object], instance: dg.DagsterInstance,
    tables: tuple[str, ...] = RAW_TABLES,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets, resources=resources, partition_key=DAY, instance=instance, raise_on_error=False,
        selection=[raw_asset_key(t) for t in tables],
    )


def _failures(result: dg.ExecuteInProcessResult) -> dict[str, tuple[str, str]]:
    """Step key -> (class name, message) of the error the asset raised, unwrapped from dagster's step error."""
    failures = {}
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            if error.cls_name == "DagsterExecutionStepExecutionError" and error.cause is not None:
                error = error.cause
            failures[event.step_key] = (error.cls_name, error.message)
    return failures


def _files_containing(roots: list[Path], needle: bytes) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def _warehouse_text_hits(lake: Path, needle: str) -> list[str]:
    """Text columns of every warehouse table holding `needle` (DuckDB compresses strings, so bytes alone miss it)."""
    store = Warehouse(lake / "warehouse.duckdb")
    columns = store.query(
        "SELECT table_schema, table_name, column_name FROM information_schema.columns WHERE data_type = 'VARCHAR'"
    ).rows()
    assert columns, "no text columns found in the warehouse: the search below would prove nothing"
    hits = []
    for schema, table, column in columns:
        sql = f'SELECT count(*) AS n FROM "{schema}"."{table}" WHERE contains("{column}", ?)'
        if store.query(sql, [needle])["n"][0]:
            hits.append(f"{schema}.{table}.{column}")
    return hits


def assert_secret_nowhere(
    result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance, logs: pytest.LogCaptureFixture,
    env: dict[str, str],
) -> None:
    """The secret is in no event, metadata value, log message, python log record, or file of the lake and home."""
    entries = instance.all_logs(result.run_id)
    assert entries, "the run left no event log in the instance: nothing was searched"
    for entry in entries:
        assert SECRET not in entry.message and SECRET not in (entry.user_message or "")
        assert SECRET not in dg.serialize_value(entry)  # every field: metadata, errors and their stacks, tags
    metadata = [e.materialization.metadata for e in result.get_asset_materialization_events()]
    metadata += [c.metadata for c in result.get_asset_check_evaluations()]
    for values in metadata:
        assert all(SECRET not in str(v.value) for v in values.values())
    assert logs.records, "no python log records were captured"
    for record in logs.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in logs.handler.format(record)  # tracebacks attached to records included
    home, lake = Path(env["DAGSTER_HOME"]), Path(env["PIPELINE_DATA_LAKE"])
    # Positive controls: the run's event log and dagster's captured compute logs are on disk, so the search reads them.
    assert (home / "history" / "runs" / f"{result.run_id}.db").is_file()
    captured = list((home / "storage" / result.run_id / "compute_logs").glob("*.err"))
    assert any(result.run_id.encode() in p.read_bytes() for p in captured), "no captured compute logs found"
    assert _files_containing([home, lake], SECRET.encode()) == []
    if (lake / "warehouse.duckdb").exists():
        assert _warehouse_text_hits(lake, SECRET) == []


def test_alpaca_ingest_lands_rows_and_keeps_the_secret_out_of_every_trace(
    raw_assets: list[dg.AssetsDefinition], alpaca_state: FakeAlpacaState, alpaca_url: str,
    instance: dg.DagsterInstance, python_logs: pytest.LogCaptureFixture, lake_env: dict[str, str],
) -> None:
    result = _materialize(raw_assets, _alpaca_resources(alpaca_url), instance)
    assert result.success, _failures(result)
    store = Warehouse(Path(lake_env["PIPELINE_DATA_LAKE"]) / "warehouse.duckdb")
    for table in ("trades", "quotes", "bars"):
        assert store.row_count(f"raw.{table}") == 6, table
        assert store.query(f"SELECT DISTINCT source FROM raw.{table}")["source"].to_list() == ["alpaca"]
    # A 2024 partition's chain is rebuilt from the contracts listed then and their bars (tests/test_alpaca_source.py
    # checks the rows). Here the first stock bar starts at 10:00, after the first 09:45 snapshot: with no price at
    # that snapshot the chain cannot be chosen without looking ahead, so there is none, and the log says why.
    assert store.row_count("raw.option_snapshots") == 0
    refused = [r.getMessage() for r in python_logs.records if "cannot be chosen without looking ahead" in r.getMessage()]
    assert len(refused) == 2 and not any(path == "/v2/options/contracts" for path, _ in alpaca_state.requests)
    # 6 rows at 2 per page: the SDK followed next_page_token through three pages of each endpoint.
    trade_pages = [p.get("page_token") for path, p in alpaca_state.requests if path == "/v2/stocks/trades"]
    assert trade_pages == [None, "2", "4"]
    assert any(r.name.startswith("urllib3") for r in python_logs.records)  # the HTTP stack's DEBUG logs were seen
    assert_secret_nowhere(result, instance, python_logs, lake_env)
    (trades,) = result.asset_materializations_for_node("raw__trades")
    assert trades.metadata["source"].value == "alpaca" and trades.metadata["rows_accepted"].value == 6


def test_rejected_keys_fail_the_run_naming_both_variables_not_the_secret(
    raw_assets: list[dg.AssetsDefinition], alpaca_state: FakeAlpacaState, alpaca_url: str,
    instance: dg.DagsterInstance, python_logs: pytest.LogCaptureFixture, lake_env: dict[str, str],
) -> None:
    alpaca_state.failures = [401] * 10
    result = _materialize(raw_assets, _alpaca_resources(alpaca_url), instance)
    assert not result.success
    failures = _failures(result)
    assert set(failures) == {"raw__trades", "raw__quotes", "raw__bars", "raw__option_snapshots"}
    for cls_name, message in failures.values():
        assert cls_name == "SourceAuthError" and "HTTP 401" in message
        assert "ALPACA_API_KEY" in message and "ALPACA_SECRET_KEY" in message
    assert len(alpaca_state.requests) == 4  # a rejected key is not retried
    assert_secret_nowhere(result, instance, python_logs, lake_env)


def test_rate_limited_request_is_retried_then_succeeds(
    raw_assets: list[dg.AssetsDefinition], alpaca_state: FakeAlpacaState, alpaca_url: str,
    instance: dg.DagsterInstance, python_logs: pytest.LogCaptureFixture, lake_env: dict[str, str],
) -> None:
    alpaca_state.failures = [429]
    result = _materialize(raw_assets, _alpaca_resources(alpaca_url), instance, tables=("bars",))
    assert result.success, _failures(result)
    bar_pages = [p.get("page_token") for path, p in alpaca_state.requests if path == "/v2/stocks/bars"]
    assert bar_pages == [None, None, "2", "4"]  # the 429'd first page asked again, then every page
    assert Warehouse(Path(lake_env["PIPELINE_DATA_LAKE"]) / "warehouse.duckdb").row_count("raw.bars") == 6
    assert any("retrying in" in r.getMessage() and "APIError" in r.getMessage() for r in python_logs.records)
    assert_secret_nowhere(result, instance, python_logs, lake_env)


def test_the_resources_rate_limit_budget_ends_a_run_it_would_not_cover(
    raw_assets: list[dg.AssetsDefinition], alpaca_state: FakeAlpacaState, alpaca_url: str,
    instance: dg.DagsterInstance,
) -> None:
    alpaca_state.failures = [Reply(429, headers={"Retry-After": "60"})]
    resources = _alpaca_resources(alpaca_url, alpaca_rate_limit_budget_s=30.0)
    result = _materialize(raw_assets, resources, instance, tables=("bars",))
    assert not result.success
    cls_name, message = _failures(result)["raw__bars"]
    assert cls_name == "SourceUnavailableError" and "HTTP 429" in message and "alpaca_rate_limit_budget_s" in message
    assert len(alpaca_state.requests) == 1  # a 60 s wait does not fit a 30 s budget: not waited, not retried


def test_unreachable_tws_fails_the_run_naming_host_and_port(
    raw_assets: list[dg.AssetsDefinition], instance: dg.DagsterInstance, lake_env: dict[str, str], refused_port: int,
) -> None:
    market_data = MarketDataResource(
        source="ibkr", symbols=SYMBOLS, ibkr_host="127.0.0.1", ibkr_port=refused_port, ibkr_connect_timeout_s=2.0
    )
    resources = {"warehouse": WarehouseResource(), "market_data": market_data}
    result = _materialize(raw_assets, resources, instance, tables=("trades", "option_snapshots"))
    assert not result.success
    failures = _failures(result)
    assert list(failures) == ["raw__trades"]  # TWS has no option snapshots: that asset never connects
    cls_name, message = failures["raw__trades"]
    assert cls_name == "SourceUnavailableError"
    assert f"could not reach TWS/IB Gateway at 127.0.0.1:{refused_port}" in message
