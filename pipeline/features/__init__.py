"""Feature engineering over trading days of raw data, with polars: pure functions, no I/O.

`bars_1m` (ticks -> one-minute bars), `market_features` (point-in-time model features per symbol-bar; windows may
reach into the sessions of a `MarketHistory`) and `options_features` (per underlying and snapshot); every column
is documented in `catalog.FEATURE_CATALOG`.
"""

from pipeline.features.bars import bars_1m
from pipeline.features.catalog import FEATURE_CATALOG
from pipeline.features.lookback import LOOKBACK_TRADING_DAYS, MarketHistory, market_history
from pipeline.features.model_features import market_features, market_features_days
from pipeline.features.options import options_features

__all__ = [
    "FEATURE_CATALOG", "LOOKBACK_TRADING_DAYS", "MarketHistory", "bars_1m", "market_features", "market_features_days",
    "market_history", "options_features",
]
