"""What `make demo` prints about each model day: the candidate's kind, what the gate said, its margin over the best
baseline with the interval the gate used, and its share of the cost-aware oracle, all read back from the lake.

The figures are recomputed from `evaluation.gate_returns` with the gate's own functions (`best_baseline`, `compare`,
`share_interval` under the default `PromotionPolicy`), so what is printed is what the gate judged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date

from pipeline.backtest.metrics import share_interval
from pipeline.backtest.promotion import CANDIDATE, PromotionPolicy, best_baseline, compare, daily_returns
from pipeline.backtest.strategies import COST_AWARE_ORACLE
from pipeline.lake import Warehouse
from pipeline.registry import read_promotions, selected_model

GATE_TABLE = "evaluation.gate_returns"


def _pct(value: float) -> str:
    return f"{value:+.3%}" if math.isfinite(value) else "n/a"


def model_day_line(store: Warehouse, day: date) -> str:
    """One line about the candidate of `day` and the gate's verdict on it."""
    model = selected_model(store, day)
    if model is None:
        return f"{day}: no candidate was chosen (candidate_selection did not run)"
    head = f"{day}: candidate {model['model_id']} (kind {model['algo']}) -> {model['status']}"
    if not store.table_exists(GATE_TABLE):
        return head + "; not judged (no gate rows)"
    rows = store.read_partition(GATE_TABLE, [day])
    if rows.is_empty():
        return head + "; not judged (no gate rows)"
    rows = rows.drop("trading_day").rename({"gate_day": "trading_day"})
    policy = PromotionPolicy()
    against = best_baseline(rows)
    margin = compare(rows, against, policy) if against else None
    daily = daily_returns(rows).pivot(on="strategy", index="trading_day", values="ret").sort("trading_day")
    share = (share_interval(daily[CANDIDATE].to_numpy(), daily[COST_AWARE_ORACLE].to_numpy(), n_boot=policy.n_boot,
                            level=policy.level, seed=policy.seed) if COST_AWARE_ORACLE in daily.columns else None)
    parts = [head, f"{daily.height} gate days"]
    if margin is not None:
        parts.append(f"margin over {against} {_pct(margin.mean_difference)} a day "
                     f"({policy.level:.0%} CI {_pct(margin.ci_low)} .. {_pct(margin.ci_high)})")
    if share is not None:
        interval = (f" ({policy.level:.0%} CI {share.ci_low:.0%} .. {share.ci_high:.0%})"
                    if math.isfinite(share.ci_low) else "")
        parts.append(f"share of the cost-aware oracle {share.mean:.0%}{interval}" if math.isfinite(share.mean)
                     else "share of the cost-aware oracle n/a (the oracle did not earn)")
    if model.get("status_reason"):
        parts.append(f"reason: {' '.join(str(model['status_reason']).split())[:300]}")
    return "; ".join(parts)


def print_model_days(store: Warehouse, days: Sequence[str]) -> int:
    """Print a line per model day and the promotions; returns how many promotions the lake holds."""
    print("\nmodel days (the gate's figures, recomputed from evaluation.gate_returns):")
    for day in days:
        print("  " + model_day_line(store, date.fromisoformat(day)))
    promotions = read_promotions(store)
    print(f"\nmodels.promotions: {promotions.height} row(s)")
    for row in promotions.to_dicts():
        print(f"  {row['decided_on']}: {row['model_id']} into production, replacing {row['previous_model_id'] or 'none'}")
    if not promotions.height:
        print("  none: no candidate passed the gate (its checks above say why)")
    return promotions.height
