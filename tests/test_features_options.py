"""features.options on a hand-checkable chain (see features_testdata.option_chain for the numbers)."""

from __future__ import annotations

import math

import polars as pl
import pytest
from features_testdata import FAR_IV, NEAR_IV, option_chain

from pipeline.features import options_features
from pipeline.features.catalog import OPTIONS, features_of


def test_one_row_per_underlying_and_snapshot_with_the_expected_values() -> None:
    chain = pl.concat([option_chain("SPY", spot=101.0), option_chain("QQQ", spot=99.2)])
    out = options_features(chain)
    assert out.height == 4
    assert out.columns == [f.name for f in features_of(OPTIONS)]
    spy = out.filter(pl.col("underlying") == "SPY").row(0, named=True)
    # The 3-day expiry is skipped: near is 10 days, far 38 days; the strike nearest 101 is 100.
    assert spy["near_expiry_days"] == 10
    assert spy["atm_iv"] == pytest.approx(NEAR_IV)
    # 25-delta put is K=95 (IV + 0.005), 25-delta call K=105 (IV - 0.005).
    assert spy["skew_25d"] == pytest.approx(0.01)
    assert spy["term_slope"] == pytest.approx((FAR_IV - NEAR_IV) / (28 / 365))
    assert spy["put_call_volume_ratio"] == pytest.approx(2.0)
    assert spy["put_call_oi_ratio"] == pytest.approx(3.0)
    # Per expiry: calls sum(delta) = 2.5 at OI 100, puts -2.5 at OI 300; total OI 2000.
    assert spy["oi_weighted_delta"] == pytest.approx((2.5 * 100 - 2.5 * 300) / 2000)
    assert spy["oi_weighted_gamma"] == pytest.approx(0.02)
    assert spy["dollar_gamma"] == pytest.approx(0.02 * 6000 * 100 * 101.0**2 / 100)
    assert spy["contract_count"] == 30
    qqq = out.filter(pl.col("underlying") == "QQQ").row(0, named=True)
    assert qqq["atm_iv"] == pytest.approx(NEAR_IV + 0.001 * (100 - 100.0))


def test_missing_near_expiry_and_no_call_volume_give_nulls_not_nan() -> None:
    chain = option_chain().filter(pl.col("expiry") == pl.col("expiry").min()).with_columns(
        volume=pl.when(pl.col("right") == "C").then(0.0).otherwise(pl.col("volume"))
    )
    out = options_features(chain)
    row = out.row(0, named=True)
    assert row["atm_iv"] is None and row["term_slope"] is None and row["skew_25d"] is None
    assert row["put_call_volume_ratio"] is None
    floats = [c for c, t in out.schema.items() if t == pl.Float64]
    assert not any(v is not None and not math.isfinite(v) for c in floats for v in out[c].to_list())


def test_a_chain_without_open_interest_gives_null_oi_features_not_zero() -> None:
    # Alpaca reconstructions and IBKR snapshots carry no open interest: "no exposure" would be a made-up 0.
    chain = option_chain().with_columns(open_interest=pl.lit(None, pl.Float64))
    row = options_features(chain).row(0, named=True)
    for name in ("dollar_gamma", "put_call_oi_ratio", "oi_weighted_delta", "oi_weighted_gamma"):
        assert row[name] is None, name
    assert row["atm_iv"] is not None  # the iv features do not need it


def test_empty_snapshots_give_an_empty_frame_with_the_catalog_columns() -> None:
    out = options_features(option_chain().clear())
    assert out.is_empty()
    assert out.columns == [f.name for f in features_of(OPTIONS)]
