"""Every feature column in one table: name, group, formula, window, unit, and the table it lands in.

`docs/FEATURES.md` is generated from `FEATURE_CATALOG` by `write_docs()`; a test checks that the two agree and that every output column of bars_1m, market_features and options_features
is listed here. Windows are in minutes of the session (bars for coarser bar-only symbols, rounded up).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BARS = "features.bars_1m"
MARKET = "features.market"
OPTIONS = "features.options"
DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "FEATURES.md"
REGENERATE = "python -c 'from pipeline.features.catalog import write_docs; write_docs()'"


@dataclass(frozen=True)
class Feature:
    """One documented column."""

    name: str
    table: str
    group: str
    formula: str
    window: str
    unit: str


def _f(table: str, group: str, rows: list[tuple[str, str, str, str]]) -> list[Feature]:
    return [Feature(name, table, group, formula, window, unit) for name, formula, window, unit in rows]


_BARS_ROWS = [
    ("symbol", "ticker", "-", "-"),
    ("ts", "minute END (UTC); the bar covers (ts - 1 min, ts]", "-", "timestamp"),
    ("trading_day", "session date", "-", "date"),
    ("open", "first trade price; no trades: last close", "1 bar", "$"),
    ("high", "max trade price; no trades: last close", "1 bar", "$"),
    ("low", "min trade price; no trades: last close", "1 bar", "$"),
    ("close", "last trade price, forward-filled; before the first trade the quote mid", "1 bar", "$"),
    ("volume", "sum of trade sizes (0 without trades)", "1 bar", "shares"),
    ("vwap", "sum(price * size) / sum(size); no trades: close", "1 bar", "$"),
    ("trade_count", "number of trades", "1 bar", "count"),
    ("buy_volume", "size of trades signed +1 (quote rule, tick rule at the mid)", "1 bar", "shares"),
    ("sell_volume", "size of trades signed -1", "1 bar", "shares"),
    ("signed_volume", "sum(sign * size)", "1 bar", "shares"),
    ("signed_dollar_volume", "sum(sign * size * price)", "1 bar", "$"),
    ("effective_spread_bps", "size-weighted 2|price - mid| / mid at the prevailing quote", "1 bar", "bps"),
    ("quote_count", "number of quote updates", "1 bar", "count"),
    ("spread_mean", "mean of ask - bid over the bar's quotes", "1 bar", "$"),
    ("spread_last", "ask - bid of the quote in force at ts", "at ts", "$"),
    ("spread_mean_bps", "mean of (ask - bid) / mid", "1 bar", "bps"),
    ("spread_last_bps", "(ask - bid) / mid at ts", "at ts", "bps"),
    ("depth_imbalance_mean", "mean of (bid_size - ask_size) / (bid_size + ask_size)", "1 bar", "ratio [-1, 1]"),
    ("depth_imbalance_last", "(bid_size - ask_size) / (bid_size + ask_size) at ts", "at ts", "ratio [-1, 1]"),
    ("trade_sign_imbalance", "signed_volume / volume", "1 bar", "ratio [-1, 1]"),
    ("bid", "bid in force at ts", "at ts", "$"),
    ("ask", "ask in force at ts", "at ts", "$"),
    ("bid_size", "bid size in force at ts", "at ts", "shares"),
    ("ask_size", "ask size in force at ts", "at ts", "shares"),
    ("mid", "(bid + ask) / 2 at ts", "at ts", "$"),
]

_KEY_ROWS = [
    ("symbol", "ticker", "-", "-"),
    ("ts", "bar END (UTC); a daily bar is stamped at the session close", "-", "timestamp"),
    ("trading_day", "session date", "-", "date"),
    ("bar_interval", "'1m' for tick-derived rows, else the raw.bars interval", "-", "-"),
]

_MICRO_ROWS = [
    ("quoted_spread", "mean ask - bid over the bar", "1", "$"),
    ("relative_spread_bps", "mean (ask - bid) / mid over the bar", "1", "bps"),
    ("relative_spread_last_bps", "(ask - bid) / mid at ts", "at ts", "bps"),
    ("relative_spread_15m_bps", "rolling mean of relative_spread_bps", "15", "bps"),
    ("spread_volatility_15m_bps", "rolling std of relative_spread_bps", "15", "bps"),
    ("depth_imbalance", "mean (bid_size - ask_size) / (bid_size + ask_size) over the bar", "1", "ratio [-1, 1]"),
    ("depth_imbalance_last", "(bid_size - ask_size) / (bid_size + ask_size) at ts", "at ts", "ratio [-1, 1]"),
    ("trade_sign_imbalance", "sum(sign * size) / sum(size), trade at ask = buy", "1", "ratio [-1, 1]"),
    ("order_flow_imbalance_15m", "rolling sum signed_volume / rolling sum volume", "15", "ratio [-1, 1]"),
    ("buy_volume_ratio", "buy_volume / volume", "1", "ratio [0, 1]"),
    ("kyle_lambda_30m", "OLS slope of 1-bar log return on signed dollar volume ($M), x 1e4", "30", "bps per $M"),
    ("amihud_illiquidity_30m", "1e6 * sum |1-bar log return| / sum dollar volume", "30", "per $M"),
    ("effective_spread_bps", "size-weighted 2|price - mid| / mid", "1", "bps"),
    ("realized_spread_5m_bps", "2 * sum(sign * size * (price - mid_t)) / (volume * mid_t) of the trades 5 min ago",
     "5 (lag)", "bps"),
    ("roll_spread_30m", "2 * sqrt(max(0, -cov(dclose_t, dclose_t-1)))", "30", "$"),
    ("volume_zscore_30m", "(volume - rolling mean) / rolling std", "30", "z"),
    ("trade_intensity_5m_30m", "mean trade_count over 5 / mean trade_count over 30", "5, 30", "ratio"),
    ("trades_per_minute_15m", "rolling mean of trade_count", "15", "trades per bar"),
    ("vwap_deviation_bps", "close / vwap - 1 of the bar", "1", "bps"),
    ("session_vwap_deviation_bps", "close / (cumulative dollar volume / cumulative volume) - 1", "session to ts", "bps"),
    ("log_dollar_volume", "log(1 + close * volume)", "1", "log $"),
]

_MOMENTUM_ROWS = [
    *[(f"log_return_{h}m", f"log(close_t / close_t-{h})", str(h), "log return") for h in (1, 5, 15, 30, 60)],
    ("rsi_14", "100 * G / (G + L), G and L Wilder means (alpha 1/14) of gains and losses; flat: 50", "14", "[0, 100]"),
    ("macd", "EMA12(close) - EMA26(close), recursive EMAs seeded at the first close", "26", "$"),
    ("macd_signal", "EMA9(macd)", "26 + 9", "$"),
    ("macd_hist", "macd - macd_signal", "26 + 9", "$"),
    ("price_vs_sma_15m", "close / SMA15(close) - 1", "15", "ratio"),
    ("price_vs_sma_60m", "close / SMA60(close) - 1", "60", "ratio"),
    ("stochastic_k_14", "(close - min low) / (max high - min low)", "14", "ratio [0, 1]"),
    ("session_return", "log(close / first close of the session)", "session to ts", "log return"),
    ("distance_from_session_high", "log(close / running max high)", "session to ts", "log return"),
    ("distance_from_session_low", "log(close / running min low)", "session to ts", "log return"),
]

_VOL_ROWS = [
    *[(f"realized_vol_{w}m", "sqrt(sum of squared 1-bar log returns)", str(w), "log return")
      for w in (5, 15, 30, 60)],
    *[(f"parkinson_vol_{w}m", "sqrt(mean(ln(H/L)^2) / (4 ln 2))", str(w), "log return per bar") for w in (15, 30)],
    *[(f"garman_klass_vol_{w}m", "sqrt(mean(0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2))", str(w), "log return per bar")
      for w in (15, 30)],
    ("bar_range_bps", "(high - low) / close", "1", "bps"),
    ("vol_of_vol_30m", "rolling std of realized_vol_5m", "5 + 30", "log return"),
    ("vol_ratio_5m_60m", "realized_vol_5m / realized_vol_60m * sqrt(60/5) (1 = steady volatility)", "60", "ratio"),
]

_REGIME_ROWS = [
    ("efficiency_ratio_30m", "|close_t - close_t-30| / sum |dclose| (Kaufman)", "30", "ratio [0, 1]"),
    ("adx_14", "Wilder ADX: mean of 100 |+DI - -DI| / (+DI + -DI), DI from Wilder-smoothed DM / TR", "14 + 14",
     "[0, 100]"),
    ("trend_strength_30m", "log_return_30m / realized_vol_30m", "30", "z"),
    ("regime_trend_score", "(efficiency_ratio_30m + adx_14 / 100) / 2", "30", "ratio [0, 1]"),
    ("regime_trending", "1 if regime_trend_score >= 0.3 else 0 (trending vs ranging)", "30", "flag"),
]

_TURBULENCE_ROWS = [
    ("turbulence_index", "(r_t - mu)' (S + 0.01 tr(S)/N I)^-1 (r_t - mu) over 1-min returns of all 1m symbols; "
     "mu, S from the 60 minutes before t", "60", "squared Mahalanobis"),
]

_OPTIONS_ROWS = [
    ("underlying", "underlying ticker", "-", "-"),
    ("ts", "snapshot time (UTC)", "-", "timestamp"),
    ("trading_day", "session date", "-", "date"),
    ("underlying_price", "spot at the snapshot", "-", "$"),
    ("near_expiry_days", "calendar days to the nearest expiry at least 7 days out", "-", "days"),
    ("atm_iv", "mean IV of call and put at the strike nearest spot, near expiry", "-", "vol (annual)"),
    ("skew_25d", "IV(put with delta nearest -0.25) - IV(call with delta nearest 0.25), near expiry", "-",
     "vol (annual)"),
    ("term_slope", "(ATM IV of the next expiry - atm_iv) / (its years to expiry - near years to expiry)", "-",
     "vol per year"),
    ("put_call_volume_ratio", "sum put volume / sum call volume", "-", "ratio"),
    ("put_call_oi_ratio", "sum put open interest / sum call open interest", "-", "ratio"),
    ("oi_weighted_delta", "sum(delta * OI) / sum(OI)", "-", "delta"),
    ("oi_weighted_gamma", "sum(gamma * OI) / sum(OI)", "-", "per $"),
    ("oi_weighted_vega", "sum(vega * OI) / sum(OI)", "-", "$ per vol point"),
    ("oi_weighted_theta", "sum(theta * OI) / sum(OI)", "-", "$ per day"),
    ("dollar_gamma", "sum(gamma * OI) * 100 * spot^2 / 100: delta-$ change per 1% move", "-", "$"),
    ("contract_count", "number of contracts in the snapshot", "-", "count"),
]

FEATURE_CATALOG: tuple[Feature, ...] = tuple(
    _f(BARS, "bar", _BARS_ROWS)
    + _f(MARKET, "key", _KEY_ROWS)
    + _f(MARKET, "microstructure", _MICRO_ROWS)
    + _f(MARKET, "momentum", _MOMENTUM_ROWS)
    + _f(MARKET, "volatility", _VOL_ROWS)
    + _f(MARKET, "regime", _REGIME_ROWS)
    + _f(MARKET, "turbulence", _TURBULENCE_ROWS)
    + _f(OPTIONS, "options", _OPTIONS_ROWS)
)


def features_of(table: str, group: str | None = None) -> list[Feature]:
    """Catalog rows of one table (and group), in catalog order."""
    return [f for f in FEATURE_CATALOG if f.table == table and (group is None or f.group == group)]


def market_feature_names() -> list[str]:
    """The model-feature columns of features.market (keys excluded), in output order."""
    return [f.name for f in features_of(MARKET) if f.group != "key"]


def render_markdown() -> str:
    """docs/FEATURES.md: one section per table, one row per column."""
    lines = [
        "# Features",
        "",
        f"Generated from `pipeline/features/catalog.py` by `{REGENERATE}`;",
        "do not edit by hand. Windows are minutes of the session (bars, rounded up, for coarser bar-only symbols);",
        "every value at `ts` uses only data at or before `ts`, and is null (never NaN) until its window has filled.",
        "",
        "- `ts` is a bar's END: the one-minute bar at `ts` covers (ts - 1 min, ts]. Minutes without trades repeat",
        "  the last price with volume 0, so windows count minutes.",
        "- Trades are signed by the quote in force (at or above the ask = buy, at or below the bid = sell, else",
        "  the side of the mid), and by the tick rule at the mid or without a quote.",
        "- Symbols with only `raw.bars` get `features.market` rows too (one per bar, finest interval per symbol):",
        "  features built from OHLCV are filled, tick-only ones (spreads, depth, signed flow) are null. Raw bars",
        "  are stamped at their start (the raw.bars contract) and shifted by their interval, so a bar is first",
        "  seen at its end; pass `bar_ts=\"end\"` for end-stamped bars. A daily bar is one row at the close.",
        "- The turbulence index is computed over the symbols with one-minute rows and copied to every row at",
        "  that minute (bar-only rows included).",
    ]
    for table in (BARS, MARKET, OPTIONS):
        lines += ["", f"## {table}", "", "| name | group | formula | window | unit |", "|---|---|---|---|---|"]
        lines += [
            f"| `{f.name}` | {f.group} | {f.formula.replace('|', chr(92) + '|')} | {f.window} | {f.unit} |"
            for f in features_of(table)
        ]
    return "\n".join(lines) + "\n"


def write_docs(path: Path = DOCS_PATH) -> Path:
    """Regenerate docs/FEATURES.md from the catalog."""
    path.write_text(render_markdown())
    return path
