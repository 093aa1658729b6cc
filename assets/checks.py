"""Blocking checks of the ingest assets: too many quarantined rows stops the run before features are built."""

from __future__ import annotations

import dagster as dg

DEFAULT_MAX_REJECTED_SHARE = 0.01
REJECTED_SHARE_CHECK = "rejected_share"


def rejected_share_spec(asset_key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name=REJECTED_SHARE_CHECK,
        asset=asset_key,
        blocking=True,
        description="Share of fetched rows quarantined by validation is at most max_rejected_share (default 1%).",
    )


def rejected_share_result(
    asset_key: dg.AssetKey, rows_read: int, rows_rejected: int, max_share: float
) -> dg.AssetCheckResult:
    """Passes when rows_rejected / rows_read <= max_share (an empty fetch passes: nothing was rejected)."""
    share = rows_rejected / rows_read if rows_read else 0.0
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=REJECTED_SHARE_CHECK,
        passed=share <= max_share,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"rejected_share": share, "max_rejected_share": max_share, "rows_rejected": rows_rejected},
        description=None
        if share <= max_share
        else (
            f"{rows_rejected} of {rows_read} rows ({share:.2%}) were quarantined, above {max_share:.2%}; "
            "inspect quarantine.rejected_rows for the reasons, fix the source, or raise max_rejected_share"
        ),
    )
