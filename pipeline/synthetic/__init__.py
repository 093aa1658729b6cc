"""The embedded synthetic market: a deterministic `MarketSource` with a planted, known signal (docs/SYNTHETIC_MARKET.md)."""
