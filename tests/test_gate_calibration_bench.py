"""benchmarks/gate_calibration.py --quick: the real choose-then-gate path on 8 markets without signal and 8 with the
strong planted one. The gate promotes none (or almost none) of the first and most of the second; the JSON carries
every figure the README's table reports."""

from __future__ import annotations

import pytest
from conftest import load_script

KEYS = ("null_markets", "null_promoted", "null_promotion_rate", "null_promotion_rate_ci95", "positive_markets",
        "positive_promoted", "positive_promotion_rate", "positive_promotion_rate_ci95")


@pytest.fixture(scope="module")
def result() -> dict:
    return load_script("benchmarks/gate_calibration.py").main(["--quick", "--details"])


def test_the_quick_run_reports_both_rates_with_wilson_intervals(result: dict) -> None:
    assert set(KEYS) <= set(result)
    assert result["null_markets"] == result["positive_markets"] == 8 and result["positive_alpha"] == 0.25
    for kind in ("null", "positive"):
        low, high = result[f"{kind}_promotion_rate_ci95"]
        assert 0 <= low <= result[f"{kind}_promotion_rate"] <= high <= 1
    assert result["settings"]["selection_days"] == 5 and result["settings"]["gate_days"] == 15


def test_the_gate_refuses_no_signal_and_promotes_a_strong_one(result: dict) -> None:
    print({k: result[k] for k in KEYS})
    assert result["null_promotion_rate"] <= 0.05
    assert result["positive_promotion_rate"] >= 0.8


def test_every_market_was_chosen_on_selection_days_and_judged_against_a_baseline(result: dict) -> None:
    for market in result["markets"]:
        assert len(market["selection_scores"]) == 4 and market["chosen"] in market["selection_scores"]
        assert market["best_baseline"] not in ("sign_oracle", "cost_aware_oracle")
        assert market["promoted"] == (not market["failed"])
