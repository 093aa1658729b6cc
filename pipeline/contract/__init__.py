"""The data contract: raw-table schemas and their validation, OCC symbols, the exchange calendar, and the Black-Scholes greeks every option snapshot carries."""
