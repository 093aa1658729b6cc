"""`features.options`: one row per underlying per snapshot time, from raw option-chain snapshots.

ATM implied volatility of the nearest expiry at least `MIN_NEAR_DAYS` out, the 25-delta skew on that expiry,
the term-structure slope to the next expiry, put/call volume and open-interest ratios and open-interest
weighted greeks. Days to expiry count calendar days from the snapshot's New York date.
"""

from __future__ import annotations

import polars as pl

from pipeline.contract.calendar import NY_TZ
from pipeline.contract.schemas import UTC_TS
from pipeline.features.bars import utc_ts
from pipeline.features.catalog import OPTIONS, features_of

MIN_NEAR_DAYS = 7
SKEW_DELTA = 0.25
CONTRACT_MULTIPLIER = 100.0
_KEY = ["underlying", "ts"]


def _empty() -> pl.DataFrame:
    dtypes = {"underlying": pl.Utf8, "ts": UTC_TS, "trading_day": pl.Date, "contract_count": pl.Int64,
              "near_expiry_days": pl.Int64}
    return pl.DataFrame(schema={f.name: dtypes.get(f.name, pl.Float64) for f in features_of(OPTIONS)})


def _atm_by_expiry(chain: pl.DataFrame) -> pl.DataFrame:
    """ATM IV per (underlying, ts, expiry): mean IV of the contracts at the strike nearest spot."""
    with_iv = chain.filter(pl.col("iv").is_not_null() & pl.col("iv").is_finite())
    distance = (pl.col("strike") - pl.col("spot")).abs()
    return (
        with_iv.with_columns(distance=distance)
        .filter(pl.col("distance") == pl.col("distance").min().over(*_KEY, "expiry"))
        .group_by(*_KEY, "expiry")
        .agg(atm_iv=pl.col("iv").mean(), dte=pl.col("dte").first())
    )


def _nearest_delta_iv(chain: pl.DataFrame, right: str, target: float, name: str) -> pl.DataFrame:
    return (
        chain.filter((pl.col("right") == right) & pl.col("delta").is_not_null() & pl.col("iv").is_not_null())
        .group_by(*_KEY)
        .agg(pl.col("iv").sort_by((pl.col("delta") - target).abs()).first().alias(name))
    )


def _weighted(greek: str) -> pl.Expr:
    known = pl.col(greek).is_not_null()
    return (pl.col(greek) * pl.col("open_interest")).sum() / pl.col("open_interest").filter(known).sum()


def options_features(option_snapshots: pl.DataFrame) -> pl.DataFrame:
    """One row per (underlying, ts) with the columns of the catalog's features.options table."""
    if option_snapshots.is_empty():
        return _empty()
    chain = utc_ts(option_snapshots).with_columns(
        spot=pl.col("underlying_price").median().over(*_KEY),
        dte=(pl.col("expiry") - pl.col("ts").dt.convert_time_zone(NY_TZ).dt.date()).dt.total_days(),
    )
    atm = _atm_by_expiry(chain)
    near = (
        atm.filter(pl.col("dte") >= MIN_NEAR_DAYS)
        .sort(*_KEY, "dte")
        .group_by(*_KEY, maintain_order=True)
        .agg(near_expiry=pl.col("expiry").first(), near_dte=pl.col("dte").first(), atm_iv=pl.col("atm_iv").first(),
             far_dte=pl.col("dte").get(1, null_on_oob=True), far_iv=pl.col("atm_iv").get(1, null_on_oob=True))
    )
    near_chain = chain.join(near.select(*_KEY, "near_expiry"), on=_KEY).filter(
        pl.col("expiry") == pl.col("near_expiry")
    )
    puts = _nearest_delta_iv(near_chain, "P", -SKEW_DELTA, "put_iv")
    calls = _nearest_delta_iv(near_chain, "C", SKEW_DELTA, "call_iv")

    is_put, is_call = pl.col("right") == "P", pl.col("right") == "C"
    summary = chain.group_by(*_KEY).agg(
        trading_day=pl.col("trading_day").first(),
        underlying_price=pl.col("spot").first(),
        put_call_volume_ratio=pl.col("volume").filter(is_put).sum() / pl.col("volume").filter(is_call).sum(),
        put_call_oi_ratio=pl.col("open_interest").filter(is_put).sum()
        / pl.col("open_interest").filter(is_call).sum(),
        oi_weighted_delta=_weighted("delta"),
        oi_weighted_gamma=_weighted("gamma"),
        oi_weighted_vega=_weighted("vega"),
        oi_weighted_theta=_weighted("theta"),
        # Delta-dollars gained per 1% move of the underlying, summed over the chain; null, not 0, for a chain
        # with no open interest (Alpaca reconstructions, most IBKR snapshots).
        dollar_gamma=pl.when((pl.col("gamma") * pl.col("open_interest")).is_not_null().any()).then(
            (pl.col("gamma") * pl.col("open_interest")).sum() * CONTRACT_MULTIPLIER * pl.col("spot").first() ** 2
            / 100.0
        ),
        contract_count=pl.len().cast(pl.Int64),
    )
    out = (
        summary.join(near, on=_KEY, how="left")
        .join(puts, on=_KEY, how="left")
        .join(calls, on=_KEY, how="left")
        .with_columns(
            near_expiry_days=pl.col("near_dte").cast(pl.Int64),
            skew_25d=pl.col("put_iv") - pl.col("call_iv"),
            term_slope=(pl.col("far_iv") - pl.col("atm_iv")) / ((pl.col("far_dte") - pl.col("near_dte")) / 365.0),
        )
    )
    columns = [f.name for f in features_of(OPTIONS)]
    floats = [c for c in columns if out.schema[c] == pl.Float64]
    # 0/0 ratios (no calls traded, no open interest) are null, never NaN or inf.
    return out.with_columns(pl.when(pl.col(c).is_finite()).then(pl.col(c)).alias(c) for c in floats).select(
        columns
    ).sort(*_KEY)
