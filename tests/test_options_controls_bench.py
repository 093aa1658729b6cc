"""Smoke test of benchmarks/options_controls.py: a tiny budget still reports every policy at both alphas, one PnL
per test day each, flat at exactly 0 and finite figures for the others."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import load_script

POLICIES = ("flat", "random", "oracle", "oracle_at_mid_no_fees", "agent")


def load_benchmark():
    return load_script("benchmarks/options_controls.py")


@pytest.fixture(scope="module")
def result() -> dict:
    return load_benchmark().main(["--train-days", "1", "--test-days", "2", "--steps", "1024", "--num-envs", "16",
                                  "--controls", "alpha"])


@pytest.fixture(scope="module")
def premium() -> dict:
    return load_benchmark().main(["--controls", "premium", "--premium-train-days", "1", "--premium-test-days", "3",
                                  "--steps", "512", "--num-envs", "8", "--n-boot", "50"])["premium"]


def test_premium_controls_report_every_policy_and_both_verdicts(premium: dict) -> None:
    fair = premium["markets"][1]
    assert [m["iv_premium"] for m in premium["markets"]] == [0.04, 0.0]
    for market in premium["markets"]:
        policies = market["policies"]
        assert set(policies) == {"agent", "flat", "random", "short_straddle", "straddle_oracle"}
        assert policies["flat"]["per_day"] == [0.0, 0.0, 0.0]
        # The oracle knows each day's close: it never does worse than the straddle rule or than flat.
        oracle, straddle = np.array(policies["straddle_oracle"]["per_day"]), np.array(policies["short_straddle"]["per_day"])
        assert (oracle >= straddle - 0.01).all() and (oracle >= 0).all()
        assert [c["against"] for c in market["gate"]["comparisons"]] == ["flat", "short_straddle"]
        # Three test days give no bootstrap interval: nothing is promoted on them.
        assert market["gate"]["promoted"] is False
    assert premium["negative_control"] == {"promoted": fair["gate"]["promoted"], "passed": True}
    assert premium["positive_control"]["passed"] == (premium["positive_control"]["agent_vs_flat_t"] > 2
                                                     and premium["positive_control"]["agent_vs_short_straddle_t"] > 2)


def test_every_policy_at_both_alphas(result: dict) -> None:
    assert [a["alpha"] for a in result["alphas"]] == [0.0, 0.15]
    for alpha in result["alphas"]:
        policies = alpha["policies"]
        assert set(policies) == set(POLICIES)
        for name, figures in policies.items():
            assert len(figures["per_day"]) == 2, name
            assert len(figures["fees_per_day"]) == 2, name
            assert all(math.isfinite(x) for x in figures["per_day"]), name
        assert policies["flat"]["per_day"] == [0.0, 0.0]
        assert policies["flat"]["fees_per_day"] == [0.0, 0.0]
        # Random and the oracle trade, so they pay fees, and their PnL is not flat's 0.
        for name in ("random", "oracle"):
            assert all(fee > 0 for fee in policies[name]["fees_per_day"]), name
            assert policies[name]["per_day"] != [0.0, 0.0], name
            assert policies[name]["mean"] == pytest.approx(np.mean(policies[name]["per_day"]), abs=0.01)
        assert policies["oracle_at_mid_no_fees"]["fees_per_day"] == [0.0, 0.0]
        margin = alpha["margins"]["oracle_vs_random"]["mean"]
        assert margin == pytest.approx(policies["oracle"]["mean"] - policies["random"]["mean"], abs=0.01)
        assert {"agent_vs_flat", "agent_vs_random", "oracle_vs_flat", "oracle_vs_random"} <= set(alpha["margins"])


def test_costs_and_spreads_are_reported(result: dict) -> None:
    assert result["env_default_costs"] == {"fee_per_contract": 0.65, "fee_per_share": 0.005,
                                           "underlying_half_spread_bps": 1.0}
    for alpha in result["alphas"]:
        spread = alpha["atm_half_spread"]
        # The synthetic market quotes options at least 3% of the price either side of mid (before tick rounding).
        assert 0.03 <= spread["fraction_of_mid"] < 0.5
        assert spread["dollars_per_contract"] > 0
        assert alpha["oracle_signal_edge"]["flips_per_day"] > 0
    assert json.loads(json.dumps(result)) == result  # the printed object is plain JSON


def test_oracle_follows_the_direction() -> None:
    bench = load_benchmark()
    direction = np.array([[0.0, 1.0, -1.0, 1.0, 1.0], [-1.0, -1.0, 0.0, 1.0, -1.0]])
    actions = bench.oracle_actions(direction)
    # Up -> ATM call, down -> ATM put, 0 -> flat; flat where the fill would be the day's last snapshot.
    expected = [[bench.FLAT, bench.ATM_CALL, bench.ATM_PUT, bench.FLAT, bench.FLAT],
                [bench.ATM_PUT, bench.ATM_PUT, bench.FLAT, bench.FLAT, bench.FLAT]]
    assert actions.tolist() == expected
