"""Where market data comes from: the brokers (Alpaca, IBKR), landing files, and the option-chain collector, each a `MarketSource` (`base`)."""
