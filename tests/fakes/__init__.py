"""Fakes for the network brokers (Alpaca HTTP API, IBKR TWS): they speak the SDKs' own formats and objects."""
