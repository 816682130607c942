"""How counts and times are worded in messages (engine.wording): the text, for given numbers. Nothing
here is timed; these are figures chosen at each unit's edge."""
from __future__ import annotations

import pytest

from engine.wording import local_day, local_time, plural, short_figure


@pytest.mark.parametrize("amount, words", [
    (3_340_000, "3.34M"), (99_950, "0.10M"), (99_949, "99.9k"), (1_400, "1.4k"), (999.5, "1.0k"),
    (999.4, "999"), (12, "12"), (0.2, "0"), (float("inf"), "-"), (float("nan"), "-"),
])
def test_a_figure_is_worded_in_the_unit_that_shows_it(amount, words):
    assert short_figure(amount) == words


def test_plural():
    assert plural(1, "action") == "1 action"
    assert plural(1_234, "cell") == "1,234 cells"


@pytest.mark.parametrize("ts, offset, millis, words", [
    (0, 0, True, "1970-01-01 00:00:00.000"),
    (0, -14 * 3_600_000, False, "1969-12-31 10:00:00"),
    (1_767_225_600_058, 8 * 3_600_000, True, "2026-01-01 08:00:00.058"),
    # one millisecond either side of the last day Python's dates hold
    (253_402_300_799_999, 0, True, "9999-12-31 23:59:59.999"),
    (253_402_300_800_000, 0, True, "10000-01-01 00:00:00.000"),
    (253_402_300_799_999, 1, False, "10000-01-01 00:00:00"),
    (2 ** 53 - 1, 0, True, "287396-10-12 08:59:00.991"),
])
def test_an_event_time_is_said_past_the_year_9999_too(ts, offset, millis, words):
    assert local_time(ts, offset, millis=millis) == words


def test_a_day_number_is_said_as_the_calendar_names_it():
    assert local_day(0) == "1970-01-01"
    assert local_day(-1) == "1969-12-31"
    assert local_day(2_932_896) == "9999-12-31"
    assert local_day(2_932_897) == "10000-01-01"
