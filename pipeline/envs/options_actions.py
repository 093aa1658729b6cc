"""The one action table of the options env: every discrete action is a strategy of option legs (+ shares).

Legs are relative to the grid the agent observed: `strike_offset` counts strikes from the at-the-money strike of
the leg's expiry, `expiry_offset` counts expiries from the nearest one still alive at the fill snapshot; a
strategy with a leg off the grid (no such strike or expiry) does not open. Action 0 is flat (close everything);
actions 1..30 are single long calls/puts; actions 31..90 are multi-leg strategies.
The 31-action set is the first 31 rows of the 91-action table, so a policy trained on it indexes the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

CALL = 0
PUT = 1

STRIKE_OFFSETS: tuple[int, ...] = (-2, -1, 0, 1, 2)
EXPIRY_OFFSETS: tuple[int, ...] = (0, 1, 2)
ACTION_SETS: tuple[int, ...] = (31, 91)


@dataclass(frozen=True)
class Leg:
    """One option leg: right (CALL/PUT), strike offset from ATM, expiry offset, signed contracts (+ long)."""

    right: int
    strike_offset: int
    expiry_offset: int
    quantity: int


@dataclass(frozen=True)
class Strategy:
    """A named target position: option legs plus `shares` lots of 100 underlying shares (signed)."""

    name: str
    legs: tuple[Leg, ...] = ()
    shares: int = 0


def _single_legs() -> list[Strategy]:
    rows = []
    for e in EXPIRY_OFFSETS:
        for k in STRIKE_OFFSETS:
            for right, tag in ((CALL, "call"), (PUT, "put")):
                rows.append(Strategy(f"long_{tag}_k{k:+d}_e{e}", (Leg(right, k, e, 1),)))
    return rows


def _flip(name: str, legs: tuple[Leg, ...]) -> Strategy:
    """The same legs with every quantity negated (long <-> short version of a strategy)."""
    return Strategy(name, tuple(Leg(g.right, g.strike_offset, g.expiry_offset, -g.quantity) for g in legs))


def _multi_legs_for_expiry(e: int) -> list[Strategy]:
    C, P = CALL, PUT
    bull_call = (Leg(C, 0, e, 1), Leg(C, 1, e, -1))
    bull_call_wide = (Leg(C, -1, e, 1), Leg(C, 1, e, -1))
    bear_put = (Leg(P, 0, e, 1), Leg(P, -1, e, -1))
    bear_put_wide = (Leg(P, 1, e, 1), Leg(P, -1, e, -1))
    straddle = (Leg(C, 0, e, 1), Leg(P, 0, e, 1))
    strangle = (Leg(C, 1, e, 1), Leg(P, -1, e, 1))
    strangle_wide = (Leg(C, 2, e, 1), Leg(P, -2, e, 1))
    iron_condor_short = (Leg(P, -2, e, 1), Leg(P, -1, e, -1), Leg(C, 1, e, -1), Leg(C, 2, e, 1))
    call_fly = (Leg(C, -1, e, 1), Leg(C, 0, e, -2), Leg(C, 1, e, 1))
    put_fly = (Leg(P, -1, e, 1), Leg(P, 0, e, -2), Leg(P, 1, e, 1))
    return [
        Strategy(f"bull_call_vertical_e{e}", bull_call),
        Strategy(f"bull_call_vertical_wide_e{e}", bull_call_wide),
        Strategy(f"bear_put_vertical_e{e}", bear_put),
        Strategy(f"bear_put_vertical_wide_e{e}", bear_put_wide),
        _flip(f"bear_call_vertical_e{e}", bull_call),
        _flip(f"bull_put_vertical_e{e}", bear_put),
        Strategy(f"long_straddle_e{e}", straddle),
        _flip(f"short_straddle_e{e}", straddle),
        Strategy(f"long_strangle_e{e}", strangle),
        _flip(f"short_strangle_e{e}", strangle),
        Strategy(f"long_strangle_wide_e{e}", strangle_wide),
        _flip(f"short_strangle_wide_e{e}", strangle_wide),
        Strategy(f"short_iron_condor_e{e}", iron_condor_short),
        _flip(f"long_iron_condor_e{e}", iron_condor_short),
        Strategy(f"long_call_butterfly_e{e}", call_fly),
        _flip(f"short_call_butterfly_e{e}", call_fly),
        Strategy(f"long_put_butterfly_e{e}", put_fly),
        Strategy(f"covered_call_e{e}", (Leg(C, 1, e, -1),), shares=1),
        Strategy(f"protective_put_e{e}", (Leg(P, -1, e, 1),), shares=1),
    ]


def _calendars() -> list[Strategy]:
    # Short the near expiry, long the far one, same (ATM) strike: a long calendar.
    return [
        Strategy("long_call_calendar_e0_e1", (Leg(CALL, 0, 0, -1), Leg(CALL, 0, 1, 1))),
        Strategy("long_put_calendar_e0_e1", (Leg(PUT, 0, 0, -1), Leg(PUT, 0, 1, 1))),
        Strategy("long_call_calendar_e1_e2", (Leg(CALL, 0, 1, -1), Leg(CALL, 0, 2, 1))),
    ]


ACTION_TABLE: tuple[Strategy, ...] = tuple(
    [Strategy("flat")]
    + _single_legs()
    + [s for e in EXPIRY_OFFSETS for s in _multi_legs_for_expiry(e)]
    + _calendars()
)
MAX_LEGS: int = max(len(s.legs) for s in ACTION_TABLE)


def action_table(action_set: int) -> tuple[Strategy, ...]:
    """The strategies of one action set (31: flat + single legs; 91: all)."""
    if action_set not in ACTION_SETS:
        raise ValueError(f"action_set={action_set!r} is not supported; use one of {ACTION_SETS}")
    return ACTION_TABLE[:action_set]


def action_index(name: str) -> int:
    """The action id of a named strategy (e.g. 'long_straddle_e0')."""
    for i, s in enumerate(ACTION_TABLE):
        if s.name == name:
            return i
    raise KeyError(f"no strategy named {name!r}; names look like 'long_straddle_e0', 'long_call_k+1_e2'")
