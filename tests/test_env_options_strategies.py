"""OptionsTrading's multi-leg actions against hand computations: each strategy's legs, its opening premium and its
payoff at expiry.

The chain is hand-made so every number is easy to compute: strikes 90/95/100/105/110 on three expiries, the agent
sees spot 100 at snapshot 0 (ATM = 100), orders fill at snapshot 1 (spot 101) and the front expiry settles at
snapshot 2 at a spot each payoff test chooses. The expected legs are written as strike prices, not offsets, so they
do not repeat the action table; prices come from the chain's formula (`quote`) in plain floats, not from the env.
"""

from __future__ import annotations

import pytest
import torch

from pipeline.envs.options import OptionsTradingConfig, OptionsTradingEnv
from pipeline.envs.options_actions import CALL, PUT, action_index
from pipeline.envs.options_chain import OptionChainTensors

FEE = 0.65
SHARE_FEE = 0.005
HALF_SPREAD_BPS = 1.0
STRIKES = (90.0, 95.0, 100.0, 105.0, 110.0)
EXPIRY_DAYS = ((0.5, 0.25, 0.0, 0.0), (7.5, 7.25, 7.0, 6.75), (30.5, 30.25, 30.0, 29.75))  # [E][S]
C, P = CALL, PUT

# A hand leg: (right, strike price, expiry index, signed contracts).
HandLeg = tuple[int, float, int, int]


def spots(settle: float, seen: float = 100.0) -> tuple[float, float, float, float]:
    """Underlying per snapshot: `seen` (the ATM strike), fills at 101, the front expiry settles at `settle`."""
    return (seen, 101.0, settle, settle - 1.0)


def intrinsic(spot: float, strike: float, right: int) -> float:
    return max(spot - strike, 0.0) if right == CALL else max(strike - spot, 0.0)


def mid(spot: float, e: int, strike: float, right: int) -> float:
    """Intrinsic + time value that grows with the expiry, shrinks away from 100 and is 0.25 richer for puts."""
    return intrinsic(spot, strike, right) + (1 + e) * (2.0 - abs(strike - 100.0) / 10.0) + 0.25 * right


def half_spread(s: int) -> float:
    """Wider at each snapshot, so a fill at the wrong snapshot shows in the cash."""
    return 0.05 * (s + 1)


def quote(settle: float, s: int, e: int, strike: float, right: int, buy: bool) -> float:
    """The ask (buy) or bid (sell) of one contract at snapshot s."""
    m = mid(spots(settle)[s], e, strike, right)
    return m + half_spread(s) if buy else m - half_spread(s)


def hand_chain(settle: float = 103.0, seen: float = 100.0) -> OptionChainTensors:
    """One day, 4 snapshots, 3 expiries x 5 strikes, priced by `mid` / `half_spread` element by element."""
    n_s, n_e, n_k = 4, 3, len(STRIKES)
    mids = torch.zeros(1, n_s, n_e, n_k, 2, dtype=torch.float64)
    halves = torch.zeros_like(mids)
    for s in range(n_s):
        for e in range(n_e):
            for k, strike in enumerate(STRIKES):
                for r in (CALL, PUT):
                    mids[0, s, e, k, r] = mid(spots(settle, seen)[s], e, strike, r)
                    halves[0, s, e, k, r] = half_spread(s)
    return OptionChainTensors(
        bid=mids - halves, ask=mids + halves, mid=mids, iv=torch.full_like(mids, 0.2),
        delta=torch.zeros_like(mids), strike=torch.tensor(STRIKES, dtype=torch.float64).expand(1, n_e, n_k).clone(),
        expiry_days=torch.tensor(EXPIRY_DAYS, dtype=torch.float64).T[None].contiguous(),
        underlying=torch.tensor([spots(settle, seen)], dtype=torch.float64),
    )


# Per strategy family: its legs on the front expiry (shifted to expiry e for the `_e{e}` actions) and share lots.
FAMILIES: dict[str, tuple[tuple[HandLeg, ...], int]] = {
    "bull_call_vertical": (((C, 100, 0, 1), (C, 105, 0, -1)), 0),
    "bull_call_vertical_wide": (((C, 95, 0, 1), (C, 105, 0, -1)), 0),
    "bear_put_vertical": (((P, 100, 0, 1), (P, 95, 0, -1)), 0),
    "bear_put_vertical_wide": (((P, 105, 0, 1), (P, 95, 0, -1)), 0),
    "bear_call_vertical": (((C, 100, 0, -1), (C, 105, 0, 1)), 0),
    "bull_put_vertical": (((P, 100, 0, -1), (P, 95, 0, 1)), 0),
    "long_straddle": (((C, 100, 0, 1), (P, 100, 0, 1)), 0),
    "short_straddle": (((C, 100, 0, -1), (P, 100, 0, -1)), 0),
    "long_strangle": (((C, 105, 0, 1), (P, 95, 0, 1)), 0),
    "short_strangle": (((C, 105, 0, -1), (P, 95, 0, -1)), 0),
    "long_strangle_wide": (((C, 110, 0, 1), (P, 90, 0, 1)), 0),
    "short_strangle_wide": (((C, 110, 0, -1), (P, 90, 0, -1)), 0),
    "short_iron_condor": (((P, 90, 0, 1), (P, 95, 0, -1), (C, 105, 0, -1), (C, 110, 0, 1)), 0),
    "long_iron_condor": (((P, 90, 0, -1), (P, 95, 0, 1), (C, 105, 0, 1), (C, 110, 0, -1)), 0),
    "long_call_butterfly": (((C, 95, 0, 1), (C, 100, 0, -2), (C, 105, 0, 1)), 0),
    "short_call_butterfly": (((C, 95, 0, -1), (C, 100, 0, 2), (C, 105, 0, -1)), 0),
    "long_put_butterfly": (((P, 95, 0, 1), (P, 100, 0, -2), (P, 105, 0, 1)), 0),
    "covered_call": (((C, 105, 0, -1),), 1),
    "protective_put": (((P, 95, 0, 1),), 1),
}
CALENDARS: dict[str, tuple[HandLeg, ...]] = {
    "long_call_calendar_e0_e1": ((C, 100, 0, -1), (C, 100, 1, 1)),
    "long_put_calendar_e0_e1": ((P, 100, 0, -1), (P, 100, 1, 1)),
    "long_call_calendar_e1_e2": ((C, 100, 1, -1), (C, 100, 2, 1)),
}
STRATEGIES: dict[str, tuple[tuple[HandLeg, ...], int]] = {
    **{f"{name}_e{e}": (tuple((r, k, e, q) for r, k, _, q in legs), lots)
       for name, (legs, lots) in FAMILIES.items() for e in range(3)},
    **{name: (legs, 0) for name, legs in CALENDARS.items()},
}

# Option payoff at expiry per share (sum of signed intrinsic values) of each front-expiry family, by settle spot:
# below every strike, between 95 and 100, between 100 and 105, above every strike.
SETTLE_SPOTS = (88.0, 97.0, 103.0, 112.0)
PAYOFFS: dict[str, tuple[float, float, float, float]] = {
    "bull_call_vertical": (0, 0, 3, 5),
    "bull_call_vertical_wide": (0, 2, 8, 10),
    "bear_put_vertical": (5, 3, 0, 0),
    "bear_put_vertical_wide": (10, 8, 2, 0),
    "bear_call_vertical": (0, 0, -3, -5),
    "bull_put_vertical": (-5, -3, 0, 0),
    "long_straddle": (12, 3, 3, 12),
    "short_straddle": (-12, -3, -3, -12),
    "long_strangle": (7, 0, 0, 7),
    "short_strangle": (-7, 0, 0, -7),
    "long_strangle_wide": (2, 0, 0, 2),
    "short_strangle_wide": (-2, 0, 0, -2),
    "short_iron_condor": (-5, 0, 0, -5),
    "long_iron_condor": (5, 0, 0, 5),
    "long_call_butterfly": (0, 2, 2, 0),
    "short_call_butterfly": (0, -2, -2, 0),
    "long_put_butterfly": (0, 2, 2, 0),
    "covered_call": (0, 0, 0, -7),  # the short call only; the shares are marked at the spot
    "protective_put": (7, 0, 0, 0),  # the long put only
}


def make_env(settle: float = 103.0, seen: float = 100.0) -> OptionsTradingEnv:
    cfg = OptionsTradingConfig(action_set=91, window=4, fee_per_contract=FEE, fee_per_share=SHARE_FEE,
                               underlying_half_spread_bps=HALF_SPREAD_BPS)
    env = OptionsTradingEnv(hand_chain(settle, seen), num_envs=1, config=cfg)
    env.reset(seed=0)
    return env


def held_legs(env: OptionsTradingEnv) -> list[HandLeg]:
    """The env's open legs decoded from its flat contract index (e*K + k)*2 + right, sorted."""
    n_k = len(STRIKES)
    legs = []
    for contract, qty in zip(env.contract[0].tolist(), env.qty[0].tolist(), strict=True):
        if qty != 0:
            right, k, e = contract % 2, (contract // 2) % n_k, contract // (2 * n_k)
            legs.append((right, STRIKES[k], e, int(qty)))
    return sorted(legs)


def opening_cash(legs: tuple[HandLeg, ...], lots: int, settle: float = 103.0) -> float:
    """Cash of opening at snapshot 1: buys at the ask, sells at the bid, x100, fees per contract and per share."""
    cash = 0.0
    for right, strike, e, q in legs:
        cash -= q * quote(settle, 1, e, strike, right, buy=q > 0) * 100.0 + abs(q) * FEE
    share_price = spots(settle)[1] * (1.0 + HALF_SPREAD_BPS * 1e-4)
    return cash - lots * 100.0 * share_price - lots * 100.0 * SHARE_FEE


def open_strategy(env: OptionsTradingEnv, name: str) -> dict:
    _, _, terminated, _, info = env.step(torch.tensor([action_index(name)]))
    assert not bool(terminated[0])
    return info


def test_every_multi_leg_action_has_a_hand_spec() -> None:
    assert sorted(action_index(name) for name in STRATEGIES) == list(range(31, 91))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_legs_and_opening_premium(name: str) -> None:
    legs, lots = STRATEGIES[name]
    env = make_env()
    info = open_strategy(env, name)
    assert held_legs(env) == sorted((r, float(k), e, q) for r, k, e, q in legs)
    assert env.shares.item() == lots
    assert env.cash.item() == pytest.approx(opening_cash(legs, lots), abs=1e-3)
    assert info["fees"].item() == pytest.approx(sum(abs(q) for *_, q in legs) * FEE + lots * 100 * SHARE_FEE,
                                                abs=1e-4)


def test_hand_premiums_of_a_few_strategies() -> None:
    """Literal numbers, so the `quote` helper is checked too: snapshot 1, spot 101, half-spread 0.10."""
    expected = {
        # Buy P90 ask 1.35, sell P95 bid 1.65, sell C105 bid 1.40, buy C110 ask 1.10: a credit.
        "short_iron_condor_e0": -135 + 165 + 140 - 110 - 4 * FEE,
        # Buy C95 ask 6 + 1.5 + 0.1, sell 2 C100 bid 1 + 2 - 0.1, buy C105 ask 1.5 + 0.1: a debit.
        "long_call_butterfly_e0": -760 + 2 * 290 - 160 - 4 * FEE,
        # Buy 100 shares at 101.0101 + 0.005 fee each, sell C105 (e1) bid 2 * 1.5 - 0.1.
        "covered_call_e1": -10101.01 - 0.5 + 290 - FEE,
        # Sell C100 e0 bid 1 + 2 - 0.1, buy C100 e1 ask 1 + 4 + 0.1: a debit.
        "long_call_calendar_e0_e1": 290 - 510 - 2 * FEE,
    }
    for name, cash in expected.items():
        env = make_env()
        open_strategy(env, name)
        assert env.cash.item() == pytest.approx(cash, abs=1e-2), name


@pytest.mark.parametrize("settle_index", range(len(SETTLE_SPOTS)))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_payoff_at_expiry_is_intrinsic_value(family: str, settle_index: int) -> None:
    settle = SETTLE_SPOTS[settle_index]
    legs, lots = FAMILIES[family]
    payoff = PAYOFFS[family][settle_index]
    assert payoff == sum(q * intrinsic(settle, k, r) for r, k, _, q in legs)  # the table agrees with its legs
    env = make_env(settle)
    name = f"{family}_e0"
    open_strategy(env, name)
    opened = env.cash.item()
    # Hold into snapshot 2: every option leg settles at intrinsic value in cash, not at its mid.
    _, _, terminated, _, info = env.step(torch.tensor([action_index(name)]))
    assert not bool(terminated[0]) and info["fees"].item() == 0.0
    assert (env.qty == 0).all() and env.shares.item() == lots
    assert env.cash.item() == pytest.approx(opened + payoff * 100.0, abs=1e-3)
    assert info["equity"].item() == pytest.approx(opened + payoff * 100.0 + lots * 100.0 * settle, abs=1e-3)


@pytest.mark.parametrize("settle", SETTLE_SPOTS)
@pytest.mark.parametrize(("name", "right"), [("long_call_calendar_e0_e1", CALL), ("long_put_calendar_e0_e1", PUT)])
def test_calendar_short_leg_settles_and_long_leg_is_marked_at_mid(name: str, right: int, settle: float) -> None:
    env = make_env(settle)
    open_strategy(env, name)
    opened = env.cash.item()
    _, _, _, _, info = env.step(torch.tensor([action_index(name)]))
    near = intrinsic(settle, 100.0, right)
    assert held_legs(env) == [(right, 100.0, 1, 1)]  # only the far leg is left
    assert env.cash.item() == pytest.approx(opened - near * 100.0, abs=1e-3)
    assert info["equity"].item() == pytest.approx(opened - near * 100.0 + mid(settle, 1, 100.0, right) * 100.0,
                                                  abs=1e-3)
    # The last snapshot liquidates the far leg at its bid, with one more fee; the episode ends.
    _, _, terminated, _, info = env.step(torch.tensor([action_index(name)]))
    assert bool(terminated[0])
    far_bid = quote(settle, 3, 1, 100.0, right, buy=False)
    assert info["equity"].item() == pytest.approx(opened - near * 100.0 + far_bid * 100.0 - FEE, abs=1e-3)


def test_calendar_on_later_expiries_is_closed_at_the_last_snapshot_quotes() -> None:
    name = "long_call_calendar_e1_e2"
    env = make_env()
    open_strategy(env, name)
    opened = env.cash.item()
    env.step(torch.tensor([action_index(name)]))
    assert held_legs(env) == [(C, 100.0, 1, -1), (C, 100.0, 2, 1)]  # nothing expires today
    _, _, terminated, _, info = env.step(torch.tensor([action_index(name)]))
    # Buy back the e1 call at snapshot 3's ask, sell the e2 call at its bid.
    close = -quote(103.0, 3, 1, 100.0, C, buy=True) * 100.0 + quote(103.0, 3, 2, 100.0, C, buy=False) * 100.0
    assert bool(terminated[0])
    assert info["equity"].item() == pytest.approx(opened + close - 2 * FEE, abs=1e-3)


def test_covered_call_liquidates_shares_at_the_bid_side_of_the_underlying() -> None:
    name = "covered_call_e0"
    env = make_env(112.0)
    open_strategy(env, name)
    opened = env.cash.item()
    env.step(torch.tensor([action_index(name)]))  # the call settles: -7 per share
    _, _, terminated, _, info = env.step(torch.tensor([action_index(name)]))
    # Spot 111 at snapshot 3: the 100 shares sell 1 bp under it, 0.005 a share in fees.
    sale = 100.0 * 111.0 * (1.0 - HALF_SPREAD_BPS * 1e-4) - 100.0 * SHARE_FEE
    assert bool(terminated[0]) and env.shares.item() == 0
    assert info["equity"].item() == pytest.approx(opened - 700.0 + sale, abs=1e-3)


@pytest.mark.parametrize(("name", "opens"), [
    ("long_call_butterfly_e0", False),  # C110 +1: no such strike
    ("short_iron_condor_e0", False),
    ("long_call_k+1_e0", False),
    ("bull_call_vertical_e0", False),
    ("bear_put_vertical_e0", True),  # P110 / P105 are both on the grid
])
def test_a_strategy_with_a_strike_off_the_grid_does_not_open(name: str, opens: bool) -> None:
    # Seen spot 110: ATM is the top strike, so +1 and +2 strikes do not exist. Clamping them onto 110 would hold a
    # different strategy than the name (a vertical long and short the same contract, paying two spreads).
    env = make_env(seen=110.0)
    info = open_strategy(env, name)
    if opens:
        assert held_legs(env) == [(P, 105.0, 0, -1), (P, 110.0, 0, 1)]
        assert env.cash.item() == pytest.approx(opening_cash(((P, 110, 0, 1), (P, 105, 0, -1)), 0), abs=1e-3)
    else:
        assert held_legs(env) == [] and env.action.item() == 0
        assert env.cash.item() == 0.0 and info["fees"].item() == 0.0


def test_a_calendar_past_the_last_expiry_does_not_open() -> None:
    # The front expiry settles at snapshot 2, so at snapshot 3 expiry offset 0 is e1 and offset 2 does not exist.
    env = make_env()
    env.step(torch.tensor([0]))
    env.step(torch.tensor([0]))
    _, _, terminated, _, info = env.step(torch.tensor([action_index("long_call_calendar_e1_e2")]))
    assert bool(terminated[0]) and info["fees"].item() == 0.0 and info["equity"].item() == 0.0
    # The e0/e1 calendar is on e1/e2 there: it opens and is liquidated at once, crossing each spread twice.
    env = make_env()
    env.step(torch.tensor([0]))
    env.step(torch.tensor([0]))
    _, _, terminated, _, info = env.step(torch.tensor([action_index("long_call_calendar_e0_e1")]))
    round_trip = 2 * half_spread(3) * 100.0 * 2 + 4 * FEE
    assert bool(terminated[0]) and info["fees"].item() == pytest.approx(4 * FEE, abs=1e-4)
    assert info["equity"].item() == pytest.approx(-round_trip, abs=1e-3)
