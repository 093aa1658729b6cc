"""The pure reconstruction of a past day's option chain (pipeline.sources.alpaca_history) on the fake day's data."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta

import numpy as np
import pytest
from alpaca.data.models import Bar
from alpaca.trading.models import OptionContract

from pipeline.contract.black_scholes import bs_greeks
from pipeline.contract.calendar import snapshot_times, trading_session
from pipeline.contract.occ import standard_occ
from pipeline.sources import alpaca_history as history
from tests.fakes.alpaca_server import FakeAlpacaState, option_day

DAY = date(2024, 7, 5)
SESSION = trading_session(DAY)
VOL, RATE = 0.25, 0.045
SETTINGS = history.ChainSettings(risk_free_rate=RATE)
GREEKS = ("delta", "gamma", "theta", "vega")



def compact(contract: str) -> str:
    """Alpaca's spelling of a contract (no padding), as the fake's bars are keyed."""
    return contract.replace(" ", "")

def _day() -> FakeAlpacaState:
    state = FakeAlpacaState(api_key="k", secret_key="s")
    option_day(state, SESSION, vol=VOL, rate=RATE)
    return state


def _models(state: FakeAlpacaState) -> tuple[list[OptionContract], dict[str, list[Bar]], list[Bar]]:
    """The fake's JSON parsed into the SDK's own models, as the clients would hand them over."""
    contracts = [OptionContract.model_validate(c) for c in state.contracts]
    option_bars = {s: [Bar(s, b) for b in bars] for s, bars in state.option_bars.items()}
    return contracts, option_bars, [Bar("SPY", b) for b in state.bars["SPY"]]


def _chain(state: FakeAlpacaState, settings: history.ChainSettings = SETTINGS) -> tuple[list[OptionContract], list]:
    contracts, option_bars, stock_bars = _models(state)
    spot = history.first_snapshot_spot(stock_bars, SESSION, settings)
    assert spot is not None
    chosen = history.select_contracts(contracts, DAY, spot, settings)
    return chosen, history.reconstruct_chain("SPY", SESSION, chosen, option_bars, stock_bars, settings)


def _bar_ends(state: FakeAlpacaState) -> set[tuple[str, object]]:
    return {(s, Bar(s, b).timestamp + timedelta(minutes=1)) for s, bars in state.option_bars.items() for b in bars}


def test_selection_uses_the_first_snapshot_price_and_the_expiry_window() -> None:
    state = _day()
    contracts, _, stock_bars = _models(state)
    spot = history.first_snapshot_spot(stock_bars, SESSION, SETTINGS)
    first = snapshot_times(SESSION, SETTINGS.snapshot_minutes)[0]
    # The price of the last underlying bar that ended by the first snapshot (the bar starting one minute before).
    assert spot == next(b.close for b in stock_bars if b.timestamp == first - timedelta(minutes=1))
    chosen = history.select_contracts(contracts, DAY, spot, SETTINGS)
    low, high = spot * (1 - SETTINGS.strike_band), spot * (1 + SETTINGS.strike_band)
    assert chosen and all(low <= c.strike_price <= high for c in chosen)
    assert {c.expiration_date for c in chosen} == {DAY, DAY + timedelta(7), DAY + timedelta(14)}  # not +60
    left_out = [c for c in contracts if c not in chosen and c.expiration_date <= DAY + timedelta(14)]
    assert left_out and all(not low <= c.strike_price <= high for c in left_out)


def test_iv_round_trip_and_greeks_at_that_iv() -> None:
    state = _day()
    _, rows = _chain(state)
    fresh = _bar_ends(state)
    # Where the last option bar ended exactly at the snapshot, it was priced against the same underlying bar and
    # time to expiry the reconstruction uses, so the iv must come back as the vol it was priced at.
    checked = [r for r in rows if (compact(r["contract"]), r["ts"]) in fresh and r["iv"] is not None]
    assert len(checked) > 100
    assert max(abs(r["iv"] - VOL) for r in checked) < 1e-6
    for r in checked[:20]:
        years = history._years_to_expiry(r["expiry"], r["ts"])
        expected = bs_greeks(r["underlying_price"], r["strike"], years, RATE, r["iv"], r["right"] == "C")
        assert [r[g] for g in GREEKS] == pytest.approx([float(expected[g]) for g in GREEKS])


@pytest.mark.parametrize("snapshot", [0, 2, 13])
def test_rows_at_t_do_not_change_when_later_bars_do(snapshot: int) -> None:
    at = snapshot_times(SESSION, SETTINGS.snapshot_minutes)[snapshot]
    state = _day()
    chosen, rows = _chain(state)
    perturbed = _day()
    changed = 0
    for bars in [*perturbed.option_bars.values(), perturbed.bars["SPY"]]:
        for b in bars:
            # A bar starting at T ends after T: not usable at T, so changing it must change nothing at T.
            if Bar("X", b).timestamp >= at:
                b.update(c=b["c"] * 1.3, o=b["o"] * 1.3, h=b["h"] * 1.3, l=b["l"] * 1.3, v=b["v"] + 1000)
                changed += 1
    assert changed > 1000
    chosen_after, rows_after = _chain(perturbed)
    assert [c.symbol for c in chosen_after] == [c.symbol for c in chosen]
    assert [r for r in rows_after if r["ts"] <= at] == [r for r in rows if r["ts"] <= at]
    assert [r for r in rows_after if r["ts"] > at] != [r for r in rows if r["ts"] > at]
    # ... while the bar starting at T - 1 min, which ends at T, is the one read: its close is the last price.
    every_minute = state.option_bars[chosen[0].symbol]
    ending_at_t = next(b for b in every_minute if Bar("X", b).timestamp == at - timedelta(minutes=1))
    row = next(r for r in rows if r["ts"] == at and compact(r["contract"]) == chosen[0].symbol)
    assert row["last"] == ending_at_t["c"]
    assert row["volume"] == sum(b["v"] for b in every_minute if Bar("X", b).timestamp < at)


def test_stale_last_trades_leave_iv_and_greeks_null() -> None:
    state = _day()
    _, rows = _chain(state)
    stale = [r for r in rows if "min old" in r["null_reason"]]
    assert stale and all(r["iv"] is None and all(r[g] is None for g in GREEKS) for r in stale)
    assert all(r["last"] is not None for r in stale)
    # The age in the reason is the snapshot minus the end of the last bar, above the default limit (15 minutes).
    for r in stale:
        minutes = int(r["null_reason"].rsplit("last trade ", 1)[1].split(" min")[0])
        assert minutes > SETTINGS.snapshot_minutes
    # A looser limit prices the same rows.
    _, loose = _chain(state, dataclasses.replace(SETTINGS, max_staleness_minutes=30))
    assert not any("min old" in r["null_reason"] for r in loose)
    by_key = {(r["contract"], r["ts"]): r for r in loose}
    assert sum(by_key[(r["contract"], r["ts"])]["iv"] is not None for r in stale) > 0


def test_every_contract_at_every_snapshot_with_its_reasons() -> None:
    state = _day()
    chosen, rows = _chain(state)
    times = snapshot_times(SESSION, SETTINGS.snapshot_minutes)
    assert len(rows) == len(chosen) * len(times)
    # Contracts in the standard padded OCC form, the same key IBKR and the synthetic market write.
    assert {(r["contract"], r["ts"]) for r in rows} == {(standard_occ(c.symbol), t) for c in chosen for t in times}
    assert all(r["bid"] is None and r["ask"] is None and r["open_interest"] is None for r in rows)
    assert all(r["reconstructed"] for r in rows)
    assert all(r["null_reason"].startswith(f"{history.NO_QUOTES}; {history.NO_PAST_OPEN_INTEREST}") for r in rows)
    never = [c.symbol for c in chosen if c.symbol not in state.option_bars]
    assert never
    for r in (r for r in rows if compact(r["contract"]) in never):
        assert r["last"] is None and r["iv"] is None and r["volume"] == 0
        assert r["null_reason"].endswith(history.NO_TRADE_YET)
    # A contract expiring today has no time left at the close: no iv there.
    at_close = [r for r in rows if r["ts"] == SESSION.close and r["expiry"] == DAY and r["last"] is not None]
    assert at_close and all(r["iv"] is None and "expires at this snapshot" in r["null_reason"] for r in at_close)
    priced = [r for r in rows if r["iv"] is not None]
    assert all(np.isfinite(r["iv"]) and abs(r["delta"]) <= 1 for r in priced)
    assert all(r["null_reason"] == f"{history.NO_QUOTES}; {history.NO_PAST_OPEN_INTEREST}" for r in priced)


def test_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="fraction"):
        history.ChainSettings(strike_band=10)
    with pytest.raises(ValueError, match="snapshot_minutes"):
        history.ChainSettings(snapshot_minutes=0)
    assert history.ChainSettings(snapshot_minutes=5).staleness == timedelta(minutes=5)
