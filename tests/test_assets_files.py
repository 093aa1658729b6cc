"""Ingest from landed files: the blocking rejected-share check stops features, and a bar-only symbol still
gets features.market rows once the check passes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from pipeline.definitions import build_definitions
from pipeline.lake import Warehouse
from resources.sources import MarketDataResource
from resources.warehouse import WarehouseResource

DAY = "2024-07-05"
OPEN_UTC = datetime(2024, 7, 5, 13, 30, tzinfo=UTC)
BAD_ROWS = 20


def _bars_csv(path: Path) -> None:
    """390 one-minute bars of ZZZ (a bar-only symbol) plus BAD_ROWS rows whose price does not parse."""
    lines = ["symbol,ts,interval,open,high,low,close,volume"]
    for minute in range(390):
        ts = (OPEN_UTC + timedelta(minutes=minute)).isoformat()  # raw.bars ts is the bar start
        price = 50 + 0.01 * (minute % 7)
        lines.append(f"ZZZ,{ts},1m,{price},{price + 0.05},{price - 0.05},{price + 0.01},{1000 + minute}")
    for minute in range(BAD_ROWS):
        ts = (OPEN_UTC + timedelta(minutes=minute + 1, seconds=30)).isoformat()
        lines.append(f"ZZZ,{ts},1m,not-a-price,1,1,1,1")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def files_setup(lake_env: dict[str, str]) -> tuple[list[dg.AssetsDefinition], dict, Warehouse]:
    lake = Path(lake_env["PIPELINE_DATA_LAKE"])
    _bars_csv(lake / "landing" / "bars" / "zzz.csv")
    resources = {
        "warehouse": WarehouseResource(),
        "market_data": MarketDataResource(source="files", symbols=["ZZZ"]),
    }
    assets = [a for a in build_definitions().assets if a.key.path[-1] in ("bars", "bars_1m", "market")]
    return assets, resources, Warehouse(lake / "warehouse.duckdb")


def test_rejected_share_above_threshold_blocks_features(files_setup) -> None:
    assets, resources, store = files_setup
    result = dg.materialize(assets, resources=resources, partition_key=DAY, raise_on_error=False)
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.asset_key.path == ["raw", "bars"]]
    assert not evaluation.passed
    assert "quarantine.rejected_rows" in evaluation.description
    # Blocking: raw.bars was written, but features.market (downstream of it) did not run.
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert dg.AssetKey(["raw", "bars"]) in materialized
    assert dg.AssetKey(["features", "market"]) not in materialized
    assert not store.table_exists("features.market")
    assert store.row_count("quarantine.rejected_rows") == BAD_ROWS


def test_bar_only_symbol_gets_market_features(files_setup) -> None:
    assets, resources, store = files_setup
    config = dg.RunConfig(ops={"raw__bars": {"config": {"max_rejected_share": 0.1}}})
    result = dg.materialize(assets, resources=resources, partition_key=DAY, run_config=config)
    assert result.success
    assert store.row_count("raw.bars") == 390
    symbols = store.query("SELECT DISTINCT symbol FROM features.market")["symbol"].to_list()
    assert symbols == ["ZZZ"]


def test_files_source_ingests_every_symbol_of_its_files(lake_env: dict[str, str]) -> None:
    # The sensor's runs set only source=files: no symbol of the landed files may be dropped for being outside
    # the synthetic universe (conftest sets it to SPY,QQQ).
    lake = Path(lake_env["PIPELINE_DATA_LAKE"])
    _bars_csv(lake / "landing" / "bars" / "zzz.csv")
    resources = {"warehouse": WarehouseResource(), "market_data": MarketDataResource(source="files")}
    (raw_bars,) = [a for a in build_definitions().assets if a.key == dg.AssetKey(["raw", "bars"])]
    result = dg.materialize([raw_bars], resources=resources, partition_key=DAY, raise_on_error=False)
    (materialization,) = result.asset_materializations_for_node("raw__bars")
    assert materialization.metadata["rows_read"].value == 390 + BAD_ROWS
    assert Warehouse(lake / "warehouse.duckdb").row_count("raw.bars") == 390


def test_a_landed_row_on_a_saturday_is_quarantined_once_by_fridays_ingest(lake_env: dict[str, str]) -> None:
    lake = Path(lake_env["PIPELINE_DATA_LAKE"])
    landed = lake / "landing" / "trades" / "week.csv"
    landed.parent.mkdir(parents=True)
    landed.write_text("symbol,ts,price,size,exchange,conditions\n"
                      "SPY,2024-07-05T13:31:00Z,540.1,100,XNYS,\n"
                      "SPY,2024-07-05T13:32:00Z,540.2,100,XNYS,\n"
                      "SPY,2024-07-06T13:31:00Z,541.0,100,XNYS,\n")
    resources = {"warehouse": WarehouseResource(), "market_data": MarketDataResource(source="files")}
    (raw_trades,) = [a for a in build_definitions().assets if a.key == dg.AssetKey(["raw", "trades"])]
    store = Warehouse(lake / "warehouse.duckdb")
    for _ in range(2):  # a re-run quarantines the row again in place of the first time, not beside it
        result = dg.materialize([raw_trades], resources=resources, partition_key=DAY, raise_on_error=False)
        (materialization,) = result.asset_materializations_for_node("raw__trades")
        counts = {k: materialization.metadata[k].value for k in ("rows_read", "rows_accepted", "rows_rejected")}
        assert counts == {"rows_read": 3, "rows_accepted": 2, "rows_rejected": 1}
        quarantined = store.query("SELECT trading_day, reason, payload FROM quarantine.rejected_rows")
        assert quarantined.height == 1 and str(quarantined["trading_day"][0]) == DAY
        assert quarantined["reason"][0].startswith("2024-07-06 is not an XNYS trading day")
        assert "2024-07-06" in quarantined["payload"][0]
    assert store.row_count("raw.trades") == 2
