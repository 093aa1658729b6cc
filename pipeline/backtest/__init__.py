"""Out-of-sample backtests, framework-free: `runner` walks a policy through the envs' evaluation mode into
`evaluation.backtest_returns` rows, `strategies` holds the baselines beside every model, and `metrics` turns the
rows into `evaluation.backtest_metrics` with bootstrap confidence intervals. The Dagster assets wrap it."""
