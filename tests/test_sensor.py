"""The landing-file sensor requests runs for the days new files cover, with source=files, and keeps a cursor."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from pipeline.definitions import build_definitions
from pipeline.lake import Warehouse
from pipeline.sensors import FEATURES_OF_TABLE
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

TRADES_HEADER = "symbol,ts,price,size,exchange,conditions\n"


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return build_definitions()


def _tick(defs: dg.Definitions, lake: Path, cursor: str | None, market_data: MarketDataResource | None = None):
    context = dg.build_sensor_context(
        cursor=cursor,
        resources={"warehouse": WarehouseResource(lake_path=str(lake)), "market_data": market_data or MarketDataResource()},
        repository_def=defs.get_repository_def(),
    )
    return defs.get_sensor_def("landing_files_sensor").evaluate_tick(context)


def _drop(lake: Path, table: str, name: str, text: str) -> Path:
    folder = lake / "landing" / table
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_new_files_request_runs_per_covered_day(defs: dg.Definitions, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    assert _tick(defs, lake, None).skip_message
    trades = _drop(
        lake, "trades", "a.csv",
        TRADES_HEADER
        + "SPY,2024-07-05T13:31:00+00:00,540.1,100,XNYS,\n"
        + "SPY,2024-07-08T13:31:00+00:00,541.2,100,XNYS,\n"
        # 2024-07-06 is a Saturday: not a partition; Friday's run quarantines it.
        + "SPY,2024-07-06T13:31:00+00:00,541.2,100,XNYS,\n",
    )
    _drop(lake, "quotes", "q.csv", "symbol,ts,bid,ask,bid_size,ask_size\nSPY,2024-07-05T13:31:00Z,540,540.2,1,1\n")
    result = _tick(defs, lake, None)
    requests = {r.partition_key: r for r in result.run_requests}
    assert set(requests) == {"2024-07-05", "2024-07-08"}
    _drop(lake, "bars", "sunday.csv", "symbol,ts,interval,open,high,low,close,volume\n"
          "SPY,2024-07-07T14:00:00+00:00,1m,1,1,1,1,1\n")
    sunday = {r.partition_key: r for r in _tick(defs, lake, result.cursor).run_requests}
    assert set(sunday) == {"2024-07-05"} and dg.AssetKey(["raw", "bars"]) in sunday["2024-07-05"].asset_selection
    (lake / "landing" / "bars" / "sunday.csv").unlink()
    # Trades and quotes feed the minute bars and the market features, not the option features.
    features = {dg.AssetKey(["features", n]) for n in ("bars_1m", "market")}
    assert set(requests["2024-07-05"].asset_selection) == {
        dg.AssetKey(["raw", "trades"]), dg.AssetKey(["raw", "quotes"]), *features
    }
    assert set(requests["2024-07-08"].asset_selection) == {dg.AssetKey(["raw", "trades"]), *features}
    assert requests["2024-07-08"].run_config["resources"]["market_data"]["config"]["source"] == "files"
    cursor = json.loads(result.cursor)
    assert set(cursor) == {"trades/a.csv", "quotes/q.csv"}

    unchanged = _tick(defs, lake, result.cursor)
    assert not unchanged.run_requests and unchanged.skip_message

    with trades.open("a") as handle:
        handle.write("QQQ,2024-07-09T14:00:00-04:00,480.5,10,XNAS,\n")
    changed = _tick(defs, lake, result.cursor)
    assert sorted(r.partition_key for r in changed.run_requests) == ["2024-07-05", "2024-07-08", "2024-07-09"]
    assert {r.run_key for r in changed.run_requests}.isdisjoint({r.run_key for r in result.run_requests})


def test_the_features_a_raw_table_feeds_are_its_downstream_assets(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    for table, features in FEATURES_OF_TABLE.items():
        downstream = {key for key in graph.get(dg.AssetKey(["raw", table])).child_keys if key.path[0] == "features"}
        # features.market reads raw trades and quotes through features.bars_1m.
        if dg.AssetKey(["features", "bars_1m"]) in downstream:
            downstream |= {k for k in graph.get(dg.AssetKey(["features", "bars_1m"])).child_keys
                           if k.path[0] == "features"}
        assert set(features) == downstream, table


def test_unreadable_file_is_skipped(defs: dg.Definitions, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    _drop(lake, "trades", "broken.csv", "no_ts_column\n1\n")
    result = _tick(defs, lake, None)
    assert not result.run_requests
    assert "trades/broken.csv" in json.loads(result.cursor)


def test_watches_the_landing_dir_the_files_source_reads(defs: dg.Definitions, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    _drop(elsewhere, "trades", "a.csv", TRADES_HEADER + "SPY,2024-07-05T13:31:00+00:00,540.1,100,XNYS,\n")
    market_data = MarketDataResource(landing_dir=str(elsewhere / "landing"))
    result = _tick(defs, tmp_path / "lake", None, market_data)
    assert [r.partition_key for r in result.run_requests] == ["2024-07-05"]


def test_requested_run_ingests_the_landed_rows(defs: dg.Definitions, lake_env: dict[str, str]) -> None:
    # ZZZ is outside the synthetic universe: the files source must still ingest it with the run config as requested.
    lake = Path(lake_env["PIPELINE_DATA_LAKE"])
    _drop(lake, "trades", "z.csv", TRADES_HEADER + "ZZZ,2024-07-05T13:31:00+00:00,50.1,100,XNYS,\n")
    context = dg.build_sensor_context(repository_def=defs.get_repository_def(), resources=defs.resources)
    (request,) = defs.get_sensor_def("landing_files_sensor").evaluate_tick(context).run_requests
    result = defs.get_implicit_global_asset_job_def().execute_in_process(
        run_config=request.run_config, partition_key=request.partition_key,
        asset_selection=list(request.asset_selection), tags=request.tags,
    )
    assert result.success
    trades = Warehouse(lake / "warehouse.duckdb").query("SELECT symbol, source FROM raw.trades")
    assert trades.rows() == [("ZZZ", "files")]
