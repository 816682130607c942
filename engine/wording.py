"""How counts and rates are said in messages: `1 action`, `2 actions`, `1,234 cells`, `1.4k events/s`. One function for
every message that puts a count before a noun, so that none says "1 actions"."""
from __future__ import annotations

import math
from typing import Optional

__all__ = ["plural", "per_second", "short_figure"]


def plural(count: int, noun: str, nouns: Optional[str] = None) -> str:
    """`count` with thousands separators and `noun`, in the plural unless `count` is 1: `nouns`
    when given (`1 eligibility class`, `2 eligibility classes`), otherwise the noun + "s"."""
    if count == 1:
        return f"{count:,} {noun}"
    return f"{count:,} {nouns or noun + 's'}"


def short_figure(number: float) -> str:
    """A large figure for a person, in the unit that shows it: '3.34M', '0.10M' from 99,950,
    '1.4k' from 999.5, '12' below (a few would otherwise read '0.00M'); '-' when it is not a
    number."""
    if not math.isfinite(number):
        return "-"
    if number >= 99_950:
        return f"{number / 1e6:.2f}M"
    if number >= 999.5:
        return f"{number / 1e3:.1f}k"
    return f"{number:.0f}"


def per_second(rate: float, unit: str = "events") -> str:
    """A rate for a person: short_figure and the unit, '3.34M events/s'; '- events/s' for a run
    too short to time."""
    return f"{short_figure(rate)} {unit}/s"
