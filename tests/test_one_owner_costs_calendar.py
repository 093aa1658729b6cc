"""One owner per concept for costs and the calendar: no twin of the cost defaults, the fill math, the New York
zone, the trading-day helpers or the close time is left in the source tree, and what reads them agrees with them."""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from pipeline.backtest.runner import DEFAULT_INTRADAY, run_portfolio
from pipeline.contract.black_scholes import DAYS_PER_YEAR
from pipeline.envs.costs import EQUITY_COSTS, OPTION_COSTS
from pipeline.envs.intraday import IntradayConfig
from pipeline.envs.options import OptionsTradingConfig
from pipeline.envs.options_chain import chain_tensors_from_snapshots
from pipeline.envs.portfolio import PortfolioConfig
from pipeline.sources import alpaca_history

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for folder in ("pipeline", "assets", "resources") for p in (ROOT / folder).rglob("*.py"))
CALENDAR = ROOT / "pipeline/contract/calendar.py"
COSTS = ROOT / "pipeline/envs/costs.py"
# A name about fees, slippage or costs given a number literal: `fee_per_share: float = 0.005`, `COST_BPS = 1.5`.
COST_NUMBER = re.compile(r"\b\w*(?:fee|slippage|cost)\w*\s*(?::[^=\n]+)?=\s*(\d+\.?\d*(?:e-?\d+)?)\b", re.IGNORECASE)


def _lines_matching(pattern: str, *, outside: Path) -> list[str]:
    found = re.compile(pattern)
    return [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
            for path in SOURCES if path != outside
            for number, line in enumerate(path.read_text().splitlines(), 1) if found.search(line)]


def test_the_new_york_zone_and_the_close_are_written_only_in_the_calendar() -> None:
    assert _lines_matching(r"America/New_York", outside=CALENDAR) == []
    assert _lines_matching(r"\btime\(\s*16\b", outside=CALENDAR) == []


@pytest.mark.parametrize("helper", ["earlier_trading_days", "previous_trading_day", "expiry_close", "trading_days",
                                    "trading_session", "is_trading_day"])
def test_trading_day_helpers_are_defined_only_in_the_calendar(helper: str) -> None:
    assert _lines_matching(rf"^\s*def {helper}\(", outside=CALENDAR) == []
    assert re.search(rf"^def {helper}\(", CALENDAR.read_text(), re.MULTILINE)


def test_fee_and_slippage_numbers_and_fill_math_live_only_in_costs() -> None:
    numbers = [f"{path.relative_to(ROOT)}: {m.group(0)}" for path in SOURCES if path != COSTS
               for m in COST_NUMBER.finditer(path.read_text()) if float(m.group(1)) != 0.0]
    assert numbers == []
    assert _lines_matching(r"slippage_bps\s*\*|\*\s*\w*\.?slippage_bps|fee_per_unit\s*/", outside=COSTS) == []


def test_every_env_config_defaults_to_the_cost_model_and_round_trips_through_json() -> None:
    assert IntradayConfig().costs == PortfolioConfig().costs == DEFAULT_INTRADAY.costs == EQUITY_COSTS
    options = OptionsTradingConfig()
    assert options.contract_costs == OPTION_COSTS
    assert options.share_costs.fee_per_unit == EQUITY_COSTS.fee_per_unit
    # The portfolio baselines pay what the portfolio env (SAC's) pays.
    assert inspect.signature(run_portfolio).parameters["costs"].default == PortfolioConfig().costs
    for config in (IntradayConfig(fee_per_share=0.01, slippage_bps=2.0), PortfolioConfig(slippage_bps=3.0), options):
        assert type(config)(**json.loads(json.dumps(asdict(config)))) == config


def test_bps_of_notional_is_the_fee_over_the_price_plus_the_slippage() -> None:
    assert EQUITY_COSTS.bps_of_notional(100.0) == pytest.approx(1.5)  # 1 bp slippage + $0.005 of a $100 share
    assert EQUITY_COSTS.bps_of_notional(500.0) == pytest.approx(1.1)
    assert OPTION_COSTS.bps_of_notional(2.0) == pytest.approx(0.65 / 200 * 1e4)  # a $2 option is $200 of notional


def _early_close_chain_rows(times: list[datetime]) -> pl.DataFrame:
    """option_snapshots rows of one underlying on 2024-11-29 (closes 13:00 New York) with a same-day expiry."""
    day = date(2024, 11, 29)
    rows = [
        {"underlying": "SPY", "trading_day": day, "ts": ts, "expiry": expiry, "strike": 100.0, "right": right,
         "bid": 1.0, "ask": 1.1, "iv": 0.2, "delta": 0.5, "underlying_price": 100.0}
        for ts in times for expiry in (day, date(2024, 12, 6)) for right in ("C", "P")
    ]
    return pl.DataFrame(rows).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))


def test_an_early_close_settles_the_options_chain_at_13_new_york() -> None:
    first = datetime(2024, 11, 29, 15, 0, tzinfo=UTC)  # 10:00 New York
    times = [first + timedelta(minutes=15 * k) for k in range(3)]
    chain = chain_tensors_from_snapshots(_early_close_chain_rows(times), expiries=2, strikes=1)
    # 13:00 New York is 18:00 UTC: 3 hours after the first snapshot, not the 6 hours a 16:00 close would leave.
    assert float(chain.expiry_days[0, 0, 0]) == pytest.approx(3 / 24)
    assert float(chain.expiry_days[0, 0, 1]) == pytest.approx(7 + 6 / 24)  # 2024-12-06 closes at 16:00 (21:00 UTC)
    years = alpaca_history._years_to_expiry(date(2024, 11, 29), first)
    assert years * DAYS_PER_YEAR == pytest.approx(3 / 24)
