"""Dagster assets and asset checks, one module per pipeline stage (ingest, features, ...)."""

import warnings

import dagster as dg

# Every partitioned asset here uses BackfillPolicy.single_run() on purpose (DESIGN §4); the beta notice would
# otherwise print once per asset on every code-location load and CLI call.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)
