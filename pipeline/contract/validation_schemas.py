"""The pandera (polars backend) schemas of the raw tables: dtypes, nullability and named row checks.

Each check's name is the reason a failing row is quarantined with, so names read as the rule that was broken
("bid <= ask"). Checks return boolean expressions evaluated by polars over the whole frame (vectorized); a null
operand is not a failure (`ignore_na`), because nulls are reported by the column's own nullability check.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from pipeline.contract.calendar import NY_TZ, TradingSession
from pipeline.contract.schemas import RAW_COLUMNS, RAW_KEYS

# Columns a row may leave empty; every other contract column is required.
NULLABLE: dict[str, frozenset[str]] = {
    "trades": frozenset({"conditions"}),
    "quotes": frozenset(),
    "bars": frozenset(),
    # bid and ask may be null only on a reconstructed row (a row check below holds that).
    "option_snapshots": frozenset(
        {"bid", "ask", "last", "volume", "open_interest", "iv", "delta", "gamma", "theta", "vega", "null_reason",
         "delayed"}
    ),
}

# Column-level rules: (column, polars predicate on that column, reason).
_POSITIVE = "> 0"
_NON_NEGATIVE = ">= 0"
_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "trades": (("price", _POSITIVE), ("size", _NON_NEGATIVE)),
    "quotes": (("bid", _POSITIVE), ("ask", _POSITIVE), ("bid_size", _NON_NEGATIVE), ("ask_size", _NON_NEGATIVE)),
    "bars": (
        ("open", _POSITIVE),
        ("high", _POSITIVE),
        ("low", _POSITIVE),
        ("close", _POSITIVE),
        ("volume", _NON_NEGATIVE),
    ),
    "option_snapshots": (
        ("underlying_price", _POSITIVE),
        ("strike", _POSITIVE),
        # An option far out of the money may be bid at zero, so option quotes only need to be non-negative.
        ("bid", _NON_NEGATIVE),
        ("ask", _NON_NEGATIVE),
        ("last", _NON_NEGATIVE),
        ("volume", _NON_NEGATIVE),
        ("open_interest", _NON_NEGATIVE),
        ("iv", _POSITIVE),
        ("gamma", _NON_NEGATIVE),
        ("vega", _NON_NEGATIVE),
    ),
}


def _expr_check(expr: pl.Expr, name: str) -> pa.Check:
    """A dataframe-level check: True where the row passes."""
    return pa.Check(lambda data: data.lazyframe.select(expr), name=name)


def _column_check(column: str, rule: str) -> pa.Check:
    col = pl.col(column)
    expr = col > 0 if rule == _POSITIVE else col >= 0
    return pa.Check(lambda data: data.lazyframe.select(expr), name=f"{column} {rule}")


def _finite_check(column: str) -> pa.Check:
    return pa.Check(
        lambda data: data.lazyframe.select(pl.col(column).is_finite()), name=f"{column} is not finite (NaN/inf)"
    )


def _in_session(table: str, session: TradingSession) -> pl.Expr:
    ts = pl.col("ts")
    opened = ts >= pl.lit(session.open).dt.cast_time_unit("us")
    close = pl.lit(session.close).dt.cast_time_unit("us")
    if table != "bars":
        return opened & (ts <= close)
    # A bar is stamped with its start (raw.bars contract): one starting at the close covers after-hours trading.
    # A daily bar is stamped with its session date (midnight UTC or midnight New York), not a time in the session.
    day = session.trading_day
    on_day = (ts.dt.date() == day) | (ts.dt.convert_time_zone(NY_TZ).dt.date() == day)
    return (opened & (ts < close)) | ((pl.col("interval") == "1d") & on_day)


def _row_checks(table: str, session: TradingSession) -> list[pa.Check]:
    checks = [
        _expr_check(_in_session(table, session), f"ts outside the session {session.open:%H:%M}-{session.close:%H:%M} UTC"),
        _expr_check(pl.col("trading_day") == session.trading_day, f"trading_day is not {session.trading_day}"),
    ]
    if table == "quotes":
        checks.append(_expr_check(pl.col("bid") <= pl.col("ask"), "crossed quote: bid > ask"))
    elif table == "bars":
        low, high = pl.col("low"), pl.col("high")
        checks.append(
            _expr_check(
                (low <= pl.col("open")) & (low <= pl.col("close")) & (pl.col("open") <= high) & (pl.col("close") <= high),
                "OHLC inconsistent: need low <= open, close <= high",
            )
        )
    elif table == "option_snapshots":
        checks += [
            _expr_check(pl.col("bid") <= pl.col("ask"), "crossed quote: bid > ask"),
            _expr_check(pl.col("delta").abs() <= 1, "|delta| > 1"),
            _expr_check(pl.col("right").is_in(["C", "P"]), "right not in {C, P}"),
            _expr_check(pl.col("expiry") >= pl.col("trading_day"), "expiry before trading_day"),
            # Only a reconstruction may lack quotes, and it must say why: an observed chain without a bid or ask is
            # a broken feed, and a quote-less row nobody explained would read as a contract nobody quoted.
            _expr_check(
                pl.col("reconstructed") | (pl.col("bid").is_not_null() & pl.col("ask").is_not_null()),
                "bid or ask null on a row not marked reconstructed",
            ),
            _expr_check(
                ~pl.col("reconstructed") | pl.col("null_reason").is_not_null(),
                "reconstructed row without a null_reason",
            ),
        ]
    checks.append(pa.Check(_first_of_its_key(RAW_KEYS[table]), name="duplicate key"))
    return checks


def _first_of_its_key(keys: tuple[str, ...]) -> Callable[[PolarsData], pl.LazyFrame]:
    """A check passing the first row of each natural key and failing the later ones."""
    columns = list(keys)

    def check(data: PolarsData) -> pl.LazyFrame:
        keyed = data.lazyframe.select(columns).with_row_index("row").collect()
        # Comparing whole keys is slow on millions of rows; hashes narrow it to the rows whose hash repeats, and
        # the exact comparison among those keeps a hash collision from ever rejecting a row.
        candidates = keyed.filter(pl.struct(columns).hash().is_duplicated())
        later = candidates.filter(~pl.struct(columns).is_first_distinct())["row"].to_numpy()
        first = np.ones(keyed.height, dtype=bool)
        first[later] = False
        return pl.LazyFrame({"first_of_key": first})

    return check


def raw_schema(table: str, session: TradingSession) -> pa.DataFrameSchema:
    """The pandera schema of `raw.<table>` for one session (the session bounds the timestamps)."""
    rules: dict[str, list[pa.Check]] = {col: [] for col in RAW_COLUMNS[table]}
    for column, rule in _RULES[table]:
        rules[column].append(_column_check(column, rule))
    columns = {}
    for column, dtype in RAW_COLUMNS[table].items():
        checks = list(rules[column])
        if dtype == pl.Float64:
            checks.insert(0, _finite_check(column))
        columns[column] = pa.Column(dtype, checks=checks, nullable=column in NULLABLE[table])
    return pa.DataFrameSchema(columns, checks=_row_checks(table, session), name=f"raw.{table}")
