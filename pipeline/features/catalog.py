"""Every feature column in one table: name, group, formula, window (length and unit), value unit, and its table.

`docs/FEATURES.md` is generated from `FEATURE_CATALOG` by `write_docs()`; a test checks that the two agree and that
every output column of bars_1m, market_features and options_features is listed here. Each window has a unit
(minutes, bars, trading days or session: `pipeline.features.windows`) and a warm-up, from which the lookback the
assets read from earlier partitions is derived (`pipeline.features.lookback`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.features.daily import (
    DAILY_RETURN_HORIZONS,
    DAILY_TREND_WINDOW,
    DAILY_VOL_WINDOW,
    DRAWDOWN_WINDOWS,
)
from pipeline.features.finrl_indicators import (
    BOLL_STD_TIMES,
    BOLL_WINDOW,
    CCI_CONSTANT,
    FINRL_PERIOD,
    SMA_WINDOWS,
)
from pipeline.features.microstructure import KYLE_WINDOW_MIN, REALIZED_SPREAD_LAG_MIN
from pipeline.features.momentum import (
    MACD_FAST,
    MACD_SIGNAL,
    MACD_SLOW,
    RETURN_HORIZONS_MIN,
    RSI_PERIOD,
    STOCH_PERIOD,
)
from pipeline.features.regime import ADX_PERIOD, EFFICIENCY_WINDOW_MIN
from pipeline.features.turbulence import DAILY_TURBULENCE_WINDOW_DAYS, TURBULENCE_WINDOW_MIN
from pipeline.features.volatility import RANGE_WINDOWS_MIN, REALIZED_WINDOWS_MIN
from pipeline.features.windows import (
    AT_TS,
    NONE,
    ONE_BAR,
    OPEN_TO_TS,
    Window,
    bars,
    days,
    ewm_settle,
    minutes,
)

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
    window: Window
    unit: str


def _f(table: str, group: str, rows: list[tuple[str, str, Window, str]]) -> list[Feature]:
    return [Feature(name, table, group, formula, window, unit) for name, formula, window, unit in rows]


_BARS_ROWS = [
    ("symbol", "ticker", NONE, "-"),
    ("ts", "minute END (UTC); the bar covers (ts - 1 min, ts]", NONE, "timestamp"),
    ("trading_day", "session date", NONE, "date"),
    ("open", "first trade price; no trades: last close", ONE_BAR, "$"),
    ("high", "max trade price; no trades: last close", ONE_BAR, "$"),
    ("low", "min trade price; no trades: last close", ONE_BAR, "$"),
    ("close", "last trade price, forward-filled; before the first trade the quote mid", ONE_BAR, "$"),
    ("volume", "sum of trade sizes (0 without trades)", ONE_BAR, "shares"),
    ("vwap", "sum(price * size) / sum(size); no trades: close", ONE_BAR, "$"),
    ("trade_count", "number of trades", ONE_BAR, "count"),
    ("buy_volume", "size of trades signed +1 (quote rule, tick rule at the mid)", ONE_BAR, "shares"),
    ("sell_volume", "size of trades signed -1", ONE_BAR, "shares"),
    ("signed_volume", "sum(sign * size)", ONE_BAR, "shares"),
    ("signed_dollar_volume", "sum(sign * size * price)", ONE_BAR, "$"),
    ("effective_spread_bps", "size-weighted 2|price - mid| / mid at the prevailing quote", ONE_BAR, "bps"),
    ("quote_count", "number of quote updates", ONE_BAR, "count"),
    ("spread_mean", "mean of ask - bid over the bar's quotes", ONE_BAR, "$"),
    ("spread_last", "ask - bid of the quote in force at ts", AT_TS, "$"),
    ("spread_mean_bps", "mean of (ask - bid) / mid", ONE_BAR, "bps"),
    ("spread_last_bps", "(ask - bid) / mid at ts", AT_TS, "bps"),
    ("depth_imbalance_mean", "mean of (bid_size - ask_size) / (bid_size + ask_size)", ONE_BAR, "ratio [-1, 1]"),
    ("depth_imbalance_last", "(bid_size - ask_size) / (bid_size + ask_size) at ts", AT_TS, "ratio [-1, 1]"),
    ("trade_sign_imbalance", "signed_volume / volume", ONE_BAR, "ratio [-1, 1]"),
    ("bid", "bid in force at ts", AT_TS, "$"),
    ("ask", "ask in force at ts", AT_TS, "$"),
    ("bid_size", "bid size in force at ts", AT_TS, "shares"),
    ("ask_size", "ask size in force at ts", AT_TS, "shares"),
    ("mid", "(bid + ask) / 2 at ts", AT_TS, "$"),
]

_KEY_ROWS = [
    ("symbol", "ticker", NONE, "-"),
    ("ts", "bar END (UTC); a daily bar is stamped at the session close", NONE, "timestamp"),
    ("trading_day", "session date", NONE, "date"),
    ("bar_interval", "'1m' for tick-derived rows, else the raw.bars interval", NONE, "-"),
]

_K = KYLE_WINDOW_MIN
_MICRO_ROWS = [
    ("quoted_spread", "mean ask - bid over the bar", ONE_BAR, "$"),
    ("relative_spread_bps", "mean (ask - bid) / mid over the bar", ONE_BAR, "bps"),
    ("relative_spread_last_bps", "(ask - bid) / mid at ts", AT_TS, "bps"),
    ("relative_spread_15m_bps", "rolling mean of relative_spread_bps", minutes(15, warmup=14), "bps"),
    ("spread_volatility_15m_bps", "rolling std of relative_spread_bps", minutes(15, warmup=14), "bps"),
    ("depth_imbalance", "mean (bid_size - ask_size) / (bid_size + ask_size) over the bar", ONE_BAR, "ratio [-1, 1]"),
    ("depth_imbalance_last", "(bid_size - ask_size) / (bid_size + ask_size) at ts", AT_TS, "ratio [-1, 1]"),
    ("trade_sign_imbalance", "sum(sign * size) / sum(size), trade at ask = buy", ONE_BAR, "ratio [-1, 1]"),
    ("order_flow_imbalance_15m", "rolling sum signed_volume / rolling sum volume", minutes(15, warmup=14),
     "ratio [-1, 1]"),
    ("buy_volume_ratio", "buy_volume / volume", ONE_BAR, "ratio [0, 1]"),
    ("kyle_lambda_30m", "OLS slope of 1-bar log return on signed dollar volume ($M), x 1e4",
     minutes(_K, warmup=_K), "bps per $M"),
    ("amihud_illiquidity_30m", "1e6 * sum |1-bar log return| / sum dollar volume", minutes(30, warmup=30), "per $M"),
    ("effective_spread_bps", "size-weighted 2|price - mid| / mid", ONE_BAR, "bps"),
    ("realized_spread_5m_bps", "2 * sum(sign * size * (price - mid_t)) / (volume * mid_t) of the trades 5 min ago",
     minutes(REALIZED_SPREAD_LAG_MIN, warmup=REALIZED_SPREAD_LAG_MIN, text=f"{REALIZED_SPREAD_LAG_MIN} (lag)"), "bps"),
    ("roll_spread_30m", "2 * sqrt(max(0, -cov(dclose_t, dclose_t-1)))", minutes(30, warmup=31), "$"),
    ("volume_zscore_30m", "(volume - rolling mean) / rolling std", minutes(30, warmup=29), "z"),
    ("trade_intensity_5m_30m", "mean trade_count over 5 / mean trade_count over 30", minutes(5, 30, warmup=29),
     "ratio"),
    ("trades_per_minute_15m", "rolling mean of trade_count", minutes(15, warmup=14), "trades per bar"),
    ("vwap_deviation_bps", "close / vwap - 1 of the bar", ONE_BAR, "bps"),
    ("session_vwap_deviation_bps", "close / (cumulative dollar volume / cumulative volume) - 1", OPEN_TO_TS, "bps"),
    ("log_dollar_volume", "log(1 + close * volume)", ONE_BAR, "log $"),
]

_MACD_WARMUP = MACD_SLOW - 1
_SIGNAL_WARMUP = _MACD_WARMUP + MACD_SIGNAL - 1
_MACD_SETTLE = ewm_settle(2 / (MACD_SLOW + 1))
_SIGNAL_SETTLE = ewm_settle(2 / (MACD_SLOW + 1), 2 / (MACD_SIGNAL + 1))
_SIGNAL_TEXT = f"{MACD_SLOW} + {MACD_SIGNAL}"
_MOMENTUM_ROWS = [
    *[(f"log_return_{h}m", f"sum of the last {h} one-bar log returns: log(close_t / close_t-{h}) within a session; "
       "a session's first bar counts from its open, so the overnight gap is left out", minutes(h, warmup=h),
       "log return")
      for h in RETURN_HORIZONS_MIN],
    ("rsi_14", "100 * G / (G + L), G and L Wilder means (alpha 1/14) of gains and losses; flat: 50",
     bars(RSI_PERIOD, warmup=RSI_PERIOD, settle=ewm_settle(1 / RSI_PERIOD)), "[0, 100]"),
    ("macd", "EMA12(close) - EMA26(close), recursive EMAs seeded at the first close of the lookback; FinRL's macd "
     "(stockstats), whose pandas EMAs start at a symbol's first bar: the same once that start weighs under 0.1%",
     bars(MACD_FAST, MACD_SLOW, warmup=_MACD_WARMUP, settle=_MACD_SETTLE), "$"),
    ("macd_signal", "EMA9(macd) (stockstats' macds)",
     bars(MACD_SIGNAL, warmup=_SIGNAL_WARMUP, text=_SIGNAL_TEXT, settle=_SIGNAL_SETTLE), "$"),
    ("macd_hist", "macd - macd_signal (stockstats' macdh)",
     bars(MACD_SIGNAL, warmup=_SIGNAL_WARMUP, text=_SIGNAL_TEXT, settle=_SIGNAL_SETTLE), "$"),
    ("price_vs_sma_15m", "close / SMA15(close) - 1", minutes(15, warmup=14), "ratio"),
    ("price_vs_sma_60m", "close / SMA60(close) - 1", minutes(60, warmup=59), "ratio"),
    ("stochastic_k_14", "(close - min low) / (max high - min low)", bars(STOCH_PERIOD, warmup=STOCH_PERIOD - 1),
     "ratio [0, 1]"),
    ("session_return", "log(close / first close of the session)", OPEN_TO_TS, "log return"),
    ("distance_from_session_high", "log(close / running max high)", OPEN_TO_TS, "log return"),
    ("distance_from_session_low", "log(close / running min low)", OPEN_TO_TS, "log return"),
]

_VOL_ROWS = [
    *[(f"realized_vol_{w}m", "sqrt(sum of squared 1-bar log returns)", minutes(w, warmup=w), "log return")
      for w in REALIZED_WINDOWS_MIN],
    *[(f"parkinson_vol_{w}m", "sqrt(mean(ln(H/L)^2) / (4 ln 2))", minutes(w, warmup=w - 1), "log return per bar")
      for w in RANGE_WINDOWS_MIN],
    *[(f"garman_klass_vol_{w}m", "sqrt(mean(0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2))", minutes(w, warmup=w - 1),
       "log return per bar") for w in RANGE_WINDOWS_MIN],
    ("bar_range_bps", "(high - low) / close", ONE_BAR, "bps"),
    ("vol_of_vol_30m", "rolling std of realized_vol_5m", minutes(5, 30, warmup=34, text="5 + 30"), "log return"),
    ("vol_ratio_5m_60m", "realized_vol_5m / realized_vol_60m * sqrt(60/5) (1 = steady volatility)",
     minutes(5, 60, warmup=60), "ratio"),
]

_ER = EFFICIENCY_WINDOW_MIN
_REGIME_ROWS = [
    ("efficiency_ratio_30m", "|close_t - close_t-30| / sum |dclose| (Kaufman)", minutes(_ER, warmup=_ER),
     "ratio [0, 1]"),
    ("adx_14", "Wilder ADX: mean of 100 |+DI - -DI| / (+DI + -DI), DI from Wilder-smoothed DM / TR",
     bars(ADX_PERIOD, warmup=2 * ADX_PERIOD - 1, text=f"{ADX_PERIOD} + {ADX_PERIOD}",
          settle=ewm_settle(1 / ADX_PERIOD, 1 / ADX_PERIOD)), "[0, 100]"),
    ("trend_strength_30m", "log_return_30m / realized_vol_30m", minutes(30, warmup=30), "z"),
    ("regime_trend_score", "(efficiency_ratio_30m + adx_14 / 100) / 2", minutes(_ER, warmup=_ER, text=f"{_ER} (+ adx_14)"),
     "ratio [0, 1]"),
    ("regime_trending", "1 if regime_trend_score >= 0.3 else 0 (trending vs ranging)",
     minutes(_ER, warmup=_ER, text=f"{_ER} (+ adx_14)"), "flag"),
]

_T = TURBULENCE_WINDOW_MIN
_TURBULENCE_ROWS = [
    ("turbulence_index", "(r_t - mu)' (S + 0.01 tr(S)/N I)^-1 (r_t - mu) over 1-min returns of all 1m symbols; "
     "mu, S from the 60 minutes of the session before t (resets at the open: the overnight gap is the daily "
     "index's)", minutes(_T, warmup=_T + 1), "squared Mahalanobis"),
    ("turbulence_index_daily", "(r_t - mu)' (S + 0.01 tr(S)/N I)^-1 (r_t - mu), r_t = log(price at ts / previous "
     "session close) of every symbol with bars; mu, S from the daily returns of the trailing sessions",
     days(DAILY_TURBULENCE_WINDOW_DAYS, warmup=DAILY_TURBULENCE_WINDOW_DAYS + 1), "squared Mahalanobis"),
]

_V, _R = DAILY_VOL_WINDOW, DAILY_TREND_WINDOW
_DAILY_MOMENTUM_ROWS = [
    *[(f"log_return_{h}d", f"log(close_t / daily close {h} session(s) before)", days(h, warmup=h), "log return")
      for h in DAILY_RETURN_HORIZONS],
    *[(f"drawdown_{w}d", f"log(close_t / max(close_t, daily closes of the last {w - 1} sessions)) <= 0",
       days(w, warmup=w - 1), "log return") for w in DRAWDOWN_WINDOWS],
]
_DAILY_VOL_ROWS = [
    (f"realized_vol_{_V}d", f"sqrt(sum of the squared daily log returns of the last {_V} sessions, today's to t)",
     days(_V, warmup=_V), "log return"),
]
_DAILY_REGIME_ROWS = [
    (f"regime_trend_score_{_R}d", f"|close_t - close {_R} sessions before| / sum |daily dclose| (Kaufman)",
     days(_R, warmup=_R), "ratio [0, 1]"),
    (f"regime_trending_{_R}d", f"1 if regime_trend_score_{_R}d >= 0.3 else 0", days(_R, warmup=_R), "flag"),
]

_N = FINRL_PERIOD
_BAND = f"SMA{BOLL_WINDOW}(close) {{}} {BOLL_STD_TIMES:g} x the sample std (ddof 1) of the last {BOLL_WINDOW} closes"
_FINRL_ROWS = [
    (f"rsi_{_N}", f"as rsi_14 over {_N} bars (stockstats' rsi_{_N})",
     bars(_N, warmup=_N, settle=ewm_settle(1 / _N)), "[0, 100]"),
    (f"cci_{_N}", f"(TP - SMA{_N}(TP)) / ({CCI_CONSTANT:g} x mean |TP - SMA{_N}(TP)| over the {_N} bars), TP = "
     "(high + low + close) / 3; no deviation: 0", bars(_N, warmup=_N - 1), "CCI points"),
    (f"dx_{_N}", f"100 |+DI - -DI| / (+DI + -DI), the DI of adx_14 over {_N} bars and not smoothed again; no "
     "directional movement: null (stockstats: 0)", bars(_N, warmup=_N, settle=ewm_settle(1 / _N)), "[0, 100]"),
    ("boll_ub", _BAND.format("+") + " (stockstats; Bollinger's own bands take the population std)",
     bars(BOLL_WINDOW, warmup=BOLL_WINDOW - 1), "$"),
    ("boll_lb", _BAND.format("-"), bars(BOLL_WINDOW, warmup=BOLL_WINDOW - 1), "$"),
    *[(f"close_{n}_sma", f"mean of the last {n} closes", bars(n, warmup=n - 1), "$") for n in SMA_WINDOWS],
]

_OPTIONS_ROWS = [
    ("underlying", "underlying ticker", NONE, "-"),
    ("ts", "snapshot time (UTC)", NONE, "timestamp"),
    ("trading_day", "session date", NONE, "date"),
    ("underlying_price", "spot at the snapshot", AT_TS, "$"),
    ("near_expiry_days", "calendar days to the nearest expiry at least 7 days out", AT_TS, "days"),
    ("atm_iv", "mean IV of call and put at the strike nearest spot, near expiry", AT_TS, "vol (annual)"),
    ("skew_25d", "IV(put with delta nearest -0.25) - IV(call with delta nearest 0.25), near expiry", AT_TS,
     "vol (annual)"),
    ("term_slope", "(ATM IV of the next expiry - atm_iv) / (its years to expiry - near years to expiry)", AT_TS,
     "vol per year"),
    ("put_call_volume_ratio", "sum put volume / sum call volume", AT_TS, "ratio"),
    ("put_call_oi_ratio", "sum put open interest / sum call open interest", AT_TS, "ratio"),
    ("oi_weighted_delta", "sum(delta * OI) / sum(OI)", AT_TS, "delta"),
    ("oi_weighted_gamma", "sum(gamma * OI) / sum(OI)", AT_TS, "per $"),
    ("oi_weighted_vega", "sum(vega * OI) / sum(OI)", AT_TS, "$ per vol point"),
    ("oi_weighted_theta", "sum(theta * OI) / sum(OI)", AT_TS, "$ per day"),
    ("dollar_gamma", "sum(gamma * OI) * 100 * spot^2 / 100: delta-$ change per 1% move", AT_TS, "$"),
    ("contract_count", "number of contracts in the snapshot", AT_TS, "count"),
]

FEATURE_CATALOG: tuple[Feature, ...] = tuple(
    _f(BARS, "bar", _BARS_ROWS)
    + _f(MARKET, "key", _KEY_ROWS)
    + _f(MARKET, "microstructure", _MICRO_ROWS)
    + _f(MARKET, "momentum", _MOMENTUM_ROWS)
    + _f(MARKET, "volatility", _VOL_ROWS)
    + _f(MARKET, "regime", _REGIME_ROWS)
    + _f(MARKET, "turbulence", _TURBULENCE_ROWS)
    # Daily features come last so the columns above keep their positions.
    + _f(MARKET, "momentum", _DAILY_MOMENTUM_ROWS)
    + _f(MARKET, "volatility", _DAILY_VOL_ROWS)
    + _f(MARKET, "regime", _DAILY_REGIME_ROWS)
    + _f(MARKET, "finrl", _FINRL_ROWS)
    + _f(OPTIONS, "options", _OPTIONS_ROWS)
)


DEFAULT_FEATURES: tuple[str, ...] = (
    "log_return_1m",
    "log_return_5m",
    "log_return_15m",
    "relative_spread_bps",
    "bar_range_bps",
    "volume_zscore_30m",
    "turbulence_index",
)
"""The `features.market` columns a model observes when none are chosen: returns, spread, range, volume surprise
and turbulence. The one owner of the default observation; the env loader, the datasets and the training assets read
it from here."""


def features_of(table: str, group: str | None = None) -> list[Feature]:
    """Catalog rows of one table (and group), in catalog order."""
    return [f for f in FEATURE_CATALOG if f.table == table and (group is None or f.group == group)]


def market_feature_names() -> list[str]:
    """The model-feature columns of features.market (keys excluded), in output order."""
    return [f.name for f in features_of(MARKET) if f.group != "key"]


def render_markdown() -> str:
    """docs/FEATURES.md: one section per table, one row per column, every window with its unit."""
    lines = [
        "# Features",
        "",
        f"Generated from `pipeline/features/catalog.py` by `{REGENERATE}`;",
        "do not edit by hand. Every value at `ts` uses only data at or before `ts`, and is null (never NaN) until",
        "its window has filled. Each window has a unit:",
        "",
        "- **minutes**: a time horizon in minutes of trading (the overnight gap is skipped, so a 60-minute window",
        "  at 09:45 reaches back to 15:15 of the previous session). On coarser bars it becomes that many bars,",
        "  rounded up; a window shorter than a symbol's bar interval does not fit and stays null (e.g. every",
        "  minutes window on daily bars). One-bar returns (`log_return_*m`, realized volatility, Kyle's lambda,",
        "  Amihud) leave the overnight gap out: a session's first bar counts from its own open, and the gap is in",
        "  the daily features.",
        "- **bars**: a bar count (RSI 14, MACD 12/26/9, stochastic 14, ADX 14, the `finrl` group) on any interval,",
        "  daily bars included. A recursive average (RSI, MACD, ADX, DX) starts at the first bar of the lookback,",
        "  which reaches back until that start weighs under 0.1%, so the value no longer depends on where the data",
        "  begins.",
        "- **trading days**: computed from daily closes (a tick-derived symbol's daily close is its last minute",
        "  close of the session). On an intraday row the current price is that row's close and the history is the",
        "  earlier sessions' closes, so the value is point in time during the day and the daily one at the close.",
        "- **session**: from the open to `ts`; resets at every open.",
        "",
        "Windows reach into earlier trading days: day D is computed with the rows of the sessions before it",
        "(`pipeline.features.lookback`), and only day D's rows are kept.",
        "",
        "- `ts` is a bar's END: the one-minute bar at `ts` covers (ts - 1 min, ts]. Minutes without trades repeat",
        "  the last price with volume 0, so windows count minutes.",
        "- Trades are signed by the quote in force (at or above the ask = buy, at or below the bid = sell, else",
        "  the side of the mid), and by the tick rule at the mid or without a quote.",
        "- Symbols with only `raw.bars` get `features.market` rows too (one per bar, finest interval per symbol):",
        "  features built from OHLCV are filled, tick-only ones (spreads, depth, signed flow) are null. Raw bars",
        "  are stamped at their start (the raw.bars contract) and shifted by their interval, so a bar is first",
        "  seen at its end; pass `bar_ts=\"end\"` for end-stamped bars. A daily bar is one row at the close.",
        "- `turbulence_index` is computed over the symbols with one-minute rows and copied to every row at that",
        "  minute (bar-only rows included); `turbulence_index_daily` covers every symbol with bars.",
        "- The `finrl` group and `macd` are FinRL's default indicators (`config.INDICATORS`) under FinRL's names,",
        "  with stockstats' formulas: on daily bars they are the columns a FinRL model observes. stockstats",
        "  averages partial windows at the start of a series; here a window is null until it is full.",
    ]
    for table in (BARS, MARKET, OPTIONS):
        lines += ["", f"## {table}", "", "| name | group | formula | window | window unit | unit |",
                  "|---|---|---|---|---|---|"]
        lines += [
            f"| `{f.name}` | {f.group} | {f.formula.replace('|', chr(92) + '|')} | {f.window.text} | {f.window.unit} "
            f"| {f.unit} |"
            for f in features_of(table)
        ]
    return "\n".join(lines) + "\n"


def write_docs(path: Path = DOCS_PATH) -> Path:
    """Regenerate docs/FEATURES.md from the catalog."""
    path.write_text(render_markdown())
    return path
