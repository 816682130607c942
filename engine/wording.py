"""How counts and rates are said in messages: `1 action`, `2 actions`, `1,234 cells`, `1.4k events/s`. One function for
every message that puts a count before a noun, so that none says "1 actions"."""
from __future__ import annotations

import math
from typing import Optional

__all__ = ["plural", "per_second"]


def plural(count: int, noun: str, nouns: Optional[str] = None) -> str:
    """`count` with thousands separators and `noun`, in the plural unless `count` is 1: `nouns`
    when given (`1 eligibility class`, `2 eligibility classes`), otherwise the noun + "s"."""
    if count == 1:
        return f"{count:,} {noun}"
    return f"{count:,} {nouns or noun + 's'}"


def per_second(rate: float, unit: str = "events") -> str:
    """A rate for a person: '3.34M events/s', '0.10M events/s' from 99,950 a second,
    '1.4k events/s' from 999.5, '12 events/s' below (a run of a few events would otherwise
    read '0.00M'); '- events/s' when it is not a number (a run too short to time)."""
    if not math.isfinite(rate):
        return f"- {unit}/s"
    if rate >= 99_950:
        return f"{rate / 1e6:.2f}M {unit}/s"
    if rate >= 999.5:
        return f"{rate / 1e3:.1f}k {unit}/s"
    return f"{rate:.0f} {unit}/s"
