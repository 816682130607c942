"""How counts, rates and times are said in messages: `1 action`, `2 actions`, `1,234 cells`, `1.4k events/s`,
`2026-11-02 08:00:00`. One function for every message that puts a count before a noun, so that none says
"1 actions", and one for every time of an event, so that none fails past the year 9999."""
from __future__ import annotations

import datetime
import math
from typing import Optional

__all__ = ["plural", "per_second", "short_figure", "local_day", "local_time"]

_DAY_MS = 86_400_000
_CYCLE_DAYS = 146_097       # 400 Gregorian years


def local_day(day_number: int) -> str:
    """Days since 1970-01-01 (local) -> "YYYY-MM-DD" (more digits past the year 9999, which
    a ts below 2^53 ms reaches: Python's dates stop there, so whole 400-year cycles of the
    Gregorian calendar, 146,097 days each, are taken off and added back to the year)."""
    cycles, day = divmod(int(day_number), _CYCLE_DAYS)
    date = datetime.date(1970, 1, 1) + datetime.timedelta(days=day)
    return f"{date.year + 400 * cycles:04d}-{date.month:02d}-{date.day:02d}"


def local_time(ts: int, utc_offset_ms: int = 0, *, millis: bool = False) -> str:
    """An event time (ms since the epoch) as the local date and time of `utc_offset_ms`:
    "2026-11-02 08:00:00", with `millis` "2026-11-02 08:00:00.058". Any ts a trace may hold,
    past the year 9999 too (local_day); never an error."""
    day, ms = divmod(int(ts) + int(utc_offset_ms), _DAY_MS)
    seconds, ms = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{local_day(day)} {hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{text}.{ms:03d}" if millis else text


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
