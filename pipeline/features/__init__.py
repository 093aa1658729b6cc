"""Feature engineering over one trading day of raw data, with polars: pure functions, no I/O.

`bars_1m` (ticks -> one-minute bars), `market_features` (point-in-time model features per symbol-minute) and
`options_features` (per underlying and snapshot); every column is documented in `catalog.FEATURE_CATALOG`.
"""

from pipeline.features.bars import bars_1m
from pipeline.features.catalog import FEATURE_CATALOG
from pipeline.features.market import market_features
from pipeline.features.options import options_features

__all__ = ["FEATURE_CATALOG", "bars_1m", "market_features", "options_features"]
