"""One-minute bars from one trading day of trades and quotes (the `features.bars_1m` table).

A bar is stamped with its minute's END: the bar at `ts` covers (ts - 1 min, ts], so every value in it was known
at `ts`. The grid is every minute of the session for every symbol seen in the trades or quotes; a minute with no
trades repeats the last price (volume 0) so downstream rolling windows count minutes, not trades.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from pipeline.contract.calendar import TradingSession
from pipeline.contract.schemas import UTC_TS

_MINUTE = timedelta(minutes=1)

BARS_1M_COLUMNS: tuple[str, ...] = (
    "symbol", "ts", "trading_day", "open", "high", "low", "close", "volume", "vwap", "trade_count",
    "buy_volume", "sell_volume", "signed_volume", "signed_dollar_volume", "effective_spread_bps",
    "quote_count", "spread_mean", "spread_last", "spread_mean_bps", "spread_last_bps",
    "depth_imbalance_mean", "depth_imbalance_last", "trade_sign_imbalance",
    "bid", "ask", "bid_size", "ask_size", "mid",
)


def utc_ts(frame: pl.DataFrame, column: str = "ts") -> pl.DataFrame:
    """`column` as microsecond UTC timestamps, whatever zone or unit it arrived in (naive and dates mean UTC)."""
    dtype = frame.schema[column]
    expr = pl.col(column)
    if dtype == pl.Date:  # a date-only daily bar: midnight UTC of that day
        expr, dtype = expr.cast(pl.Datetime("us")), pl.Datetime("us")
    if not isinstance(dtype, pl.Datetime):
        raise TypeError(f"column {column!r} must be a datetime, got {dtype}; parse it before computing features")
    expr = expr.dt.replace_time_zone("UTC") if dtype.time_zone is None else expr.dt.convert_time_zone("UTC")
    return frame.with_columns(expr.cast(UTC_TS))


def session_grid(symbols: list[str], session: TradingSession) -> pl.DataFrame:
    """Every (symbol, minute end) of the session: open + 1 min, ..., close."""
    minutes = pl.datetime_range(
        session.open + _MINUTE, session.close, interval="1m", time_zone="UTC", eager=True
    ).cast(UTC_TS).alias("ts")
    return (
        pl.DataFrame({"symbol": sorted(symbols)}, schema={"symbol": pl.Utf8})
        .join(minutes.to_frame(), how="cross")
        .sort("symbol", "ts")
    )


def _in_session(frame: pl.DataFrame, session: TradingSession) -> pl.DataFrame:
    """Rows inside [open, close], sorted; a tick at exactly the open belongs to the first bar.

    Ticks with the same timestamp keep their input order (stable sort), which decides open/close among them.
    """
    first_bar = pl.lit(session.open + timedelta(microseconds=1)).cast(UTC_TS)
    return (
        frame.filter(pl.col("ts").is_between(session.open, session.close, closed="both"))
        .with_columns(pl.max_horizontal(pl.col("ts"), first_bar))
        .sort("symbol", "ts", maintain_order=True)
    )


def _signed_trades(trades: pl.DataFrame, quotes: pl.DataFrame) -> pl.DataFrame:
    """Trades with the prevailing quote and a trade sign (+1 buy, -1 sell).

    Quote rule first (at or above the ask = buy, at or below the bid = sell, else the side of the mid); trades at
    the mid, or with no quote yet, take the tick rule (sign of the last non-zero price change).
    """
    prevailing = quotes.select("symbol", "ts", pl.col("bid").alias("q_bid"), pl.col("ask").alias("q_ask"))
    joined = trades.join_asof(prevailing, on="ts", by="symbol", strategy="backward", check_sortedness=False)
    mid = (pl.col("q_bid") + pl.col("q_ask")) / 2
    tick = pl.col("price").diff().over("symbol").sign()
    tick_sign = pl.when(tick != 0).then(tick).forward_fill().over("symbol").fill_null(0.0)
    quote_sign = (
        pl.when(pl.col("price") >= pl.col("q_ask")).then(1.0)
        .when(pl.col("price") <= pl.col("q_bid")).then(-1.0)
        .when(pl.col("price") > mid).then(1.0)
        .when(pl.col("price") < mid).then(-1.0)
    )
    return joined.with_columns(
        sign=pl.coalesce(quote_sign, tick_sign),
        q_mid=mid,
    )


def _trade_bars(trades: pl.DataFrame) -> pl.DataFrame:
    """OHLCV, vwap and signed-flow sums per symbol-minute with at least one trade."""
    size = pl.col("size")
    return trades.group_by_dynamic(
        "ts", every="1m", closed="right", label="right", group_by="symbol", start_by="window"
    ).agg(
        open=pl.col("price").first(),
        high=pl.col("price").max(),
        low=pl.col("price").min(),
        close=pl.col("price").last(),
        volume=size.sum(),
        dollar_volume=(pl.col("price") * size).sum(),
        trade_count=pl.len().cast(pl.Int64),
        buy_volume=size.filter(pl.col("sign") > 0).sum(),
        sell_volume=size.filter(pl.col("sign") < 0).sum(),
        signed_volume=(pl.col("sign") * size).sum(),
        signed_dollar_volume=(pl.col("sign") * size * pl.col("price")).sum(),
        # Volume-weighted 2|p - m|/m over trades that had a quote.
        effective_spread_bps=(
            (2e4 * (pl.col("price") - pl.col("q_mid")).abs() / pl.col("q_mid") * size).sum()
            / size.filter(pl.col("q_mid").is_not_null()).sum()
        ),
    )


def _quote_bars(quotes: pl.DataFrame) -> pl.DataFrame:
    """Spread and depth-imbalance stats over the quotes of each symbol-minute."""
    spread = pl.col("ask") - pl.col("bid")
    mid = (pl.col("ask") + pl.col("bid")) / 2
    depth = (pl.col("bid_size") - pl.col("ask_size")) / (pl.col("bid_size") + pl.col("ask_size"))
    return quotes.group_by_dynamic(
        "ts", every="1m", closed="right", label="right", group_by="symbol", start_by="window"
    ).agg(
        quote_count=pl.len().cast(pl.Int64),
        spread_mean=spread.mean(),
        spread_mean_bps=(1e4 * spread / mid).mean(),
        depth_imbalance_mean=depth.fill_nan(None).mean(),
    )


def bars_1m(trades: pl.DataFrame, quotes: pl.DataFrame, session: TradingSession) -> pl.DataFrame:
    """One row per symbol-minute of the session from raw trades and quotes (columns: `BARS_1M_COLUMNS`).

    Minutes without trades keep the last close as open/high/low/close/vwap with volume 0; before the first trade
    the price is the quote mid at the minute end (null when there is no quote either). bid/ask/sizes are the
    quote in force at the minute end.
    """
    trades = _in_session(utc_ts(trades.select("symbol", "ts", "price", "size")), session)
    quotes = _in_session(utc_ts(quotes.select("symbol", "ts", "bid", "ask", "bid_size", "ask_size")), session)
    symbols = sorted(set(trades["symbol"].unique()) | set(quotes["symbol"].unique()))
    grid = session_grid(symbols, session)

    trade_bars = _trade_bars(_signed_trades(trades, quotes))
    quote_bars = _quote_bars(quotes)
    at_end = grid.join_asof(quotes, on="ts", by="symbol", strategy="backward", check_sortedness=False)

    spread_last = pl.col("ask") - pl.col("bid")
    mid = (pl.col("ask") + pl.col("bid")) / 2
    traded = pl.col("trade_count") > 0
    last_price = pl.col("close").forward_fill().over("symbol")
    price = pl.coalesce(last_price, pl.col("mid"))
    bars = (
        at_end.join(trade_bars, on=["symbol", "ts"], how="left")
        .join(quote_bars, on=["symbol", "ts"], how="left")
        .sort("symbol", "ts")
        .with_columns(
            mid=mid,
            spread_last=spread_last,
            spread_last_bps=1e4 * spread_last / mid,
            depth_imbalance_last=(pl.col("bid_size") - pl.col("ask_size"))
            / (pl.col("bid_size") + pl.col("ask_size")),
            trade_count=pl.col("trade_count").fill_null(0),
            quote_count=pl.col("quote_count").fill_null(0),
        )
        .with_columns(
            pl.when(traded).then(pl.col(c)).otherwise(price).alias(c) for c in ("open", "high", "low", "close")
        )
        .with_columns(
            vwap=pl.when(traded).then(pl.col("dollar_volume") / pl.col("volume")).otherwise(pl.col("close")),
            trade_sign_imbalance=pl.when(pl.col("volume") > 0).then(pl.col("signed_volume") / pl.col("volume")),
            **{c: pl.col(c).fill_null(0.0) for c in (
                "volume", "buy_volume", "sell_volume", "signed_volume", "signed_dollar_volume")},
            trading_day=pl.lit(session.trading_day, dtype=pl.Date),
        )
    )
    # Zero sizes or a zero mid make 0/0; the contract is null, never NaN or inf.
    floats = [c for c in BARS_1M_COLUMNS if bars.schema[c] == pl.Float64]
    return bars.with_columns(
        pl.when(pl.col(c).is_finite()).then(pl.col(c)).alias(c) for c in floats
    ).select(BARS_1M_COLUMNS)
