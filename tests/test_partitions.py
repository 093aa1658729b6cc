"""Trading-day partitions match the XNYS calendar: holidays and weekends are not keys."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pytest

from pipeline.contract.calendar import trading_days
from pipeline.partitions import partitions_start_from_env, trading_day_partitions


@pytest.fixture(scope="module")
def partitions() -> dg.TimeWindowPartitionsDefinition:
    return trading_day_partitions("2024-01-02")


@pytest.fixture(scope="module")
def keys_2024(partitions: dg.TimeWindowPartitionsDefinition) -> list[str]:
    return partitions.get_partition_keys_in_range(dg.PartitionKeyRange("2024-01-02", "2024-12-31"))


def test_holidays_are_not_partitions(keys_2024: list[str]) -> None:
    assert "2024-07-04" not in keys_2024
    assert "2024-12-25" not in keys_2024
    assert "2024-07-05" in keys_2024


def test_no_weekends(keys_2024: list[str]) -> None:
    assert all(date.fromisoformat(key).weekday() < 5 for key in keys_2024)


def test_keys_match_calendar_over_a_year(keys_2024: list[str]) -> None:
    assert keys_2024 == [day.isoformat() for day in trading_days("2024-01-02", "2024-12-31")]


def test_range_skips_holiday(partitions: dg.TimeWindowPartitionsDefinition) -> None:
    keys = partitions.get_partition_keys_in_range(dg.PartitionKeyRange("2024-07-01", "2024-07-09"))
    assert keys == ["2024-07-01", "2024-07-02", "2024-07-03", "2024-07-05", "2024-07-08", "2024-07-09"]


def test_start_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_PARTITIONS_START", "2024-06-03")
    start = partitions_start_from_env()
    assert trading_day_partitions(start).get_first_partition_key() == "2024-06-03"
    monkeypatch.setenv("PIPELINE_PARTITIONS_START", "June")
    with pytest.raises(ValueError, match="PIPELINE_PARTITIONS_START"):
        partitions_start_from_env()
