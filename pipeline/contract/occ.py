"""OCC option symbols (the OSI format): one spelling of `contract` for every source.

The standard symbol is 21 characters: the root padded with spaces to 6, the expiry as YYMMDD, C or P, and the strike
in thousandths padded to 8 digits (`SPY   240719C00550000`). IBKR's `localSymbol` and the synthetic market write it
so; Alpaca writes the root unpadded (`SPY240719C00550000`), so its symbols are padded on the way in, and a contract
has the same key in `raw.option_snapshots` whichever broker it came from.
"""

from __future__ import annotations

import re
from datetime import date, datetime

# Root (1-6 chars), optional padding, yymmdd expiry, C/P, strike x 1000 in 8 digits.
_OCC = re.compile(r"^(?P<root>[A-Z0-9.]{1,6}?)\s*(?P<expiry>\d{6})(?P<right>[CP])(?P<strike>\d{8})$")


def occ_symbol(root: str, expiry: date, right: str, strike: float) -> str:
    """OCC contract symbol: root padded to 6, YYMMDD, C/P, strike in thousandths padded to 8."""
    if len(root) > 6:
        raise ValueError(f"underlying {root!r} is longer than the 6 characters an OCC symbol allows")
    return f"{root:<6}{expiry:%y%m%d}{right}{round(strike * 1000):08d}"


def parse_occ(contract: str) -> tuple[date, float, str] | None:
    """(expiry, strike, right) of an OCC option symbol, padded or not, or None when it is not one."""
    match = _OCC.match(contract.strip().upper())
    if match is None:
        return None
    try:
        expiry = datetime.strptime(match["expiry"], "%y%m%d").date()
    except ValueError:
        return None
    return expiry, int(match["strike"]) / 1000.0, match["right"]


def standard_occ(contract: str) -> str:
    """`contract` in the standard padded form; a string that is not an OCC symbol comes back as it was (validation
    and the tables keep what the source sent)."""
    match = _OCC.match(contract.strip().upper())
    if match is None or parse_occ(contract) is None:
        return contract
    return f"{match['root']:<6}{match['expiry']}{match['right']}{match['strike']}"
