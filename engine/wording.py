"""How counts are said in messages: `1 action`, `2 actions`, `1,234 cells`. One function for
every message that puts a count before a noun, so that none says "1 actions"."""
from __future__ import annotations

from typing import Optional

__all__ = ["plural"]


def plural(count: int, noun: str, nouns: Optional[str] = None) -> str:
    """`count` with thousands separators and `noun`, in the plural unless `count` is 1: `nouns`
    when given (`1 eligibility class`, `2 eligibility classes`), otherwise the noun + "s"."""
    if count == 1:
        return f"{count:,} {noun}"
    return f"{count:,} {nouns or noun + 's'}"


def per_second(rate: float, unit: str = "events") -> str:
    """A rate for a person: '3.34M events/s', or '1.4k events/s' below 100,000 a second (a
    run of a few thousand events would otherwise read '0.00M')."""
    if rate >= 100_000:
        return f"{rate / 1e6:.2f}M {unit}/s"
    return f"{rate / 1e3:.1f}k {unit}/s"
