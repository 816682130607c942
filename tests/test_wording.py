"""How counts are worded in messages (engine.wording): the text, for given numbers. Nothing
here is timed; these are figures chosen at each unit's edge."""
from __future__ import annotations

import pytest

from engine.wording import per_second, plural


@pytest.mark.parametrize("amount, words", [
    (3_340_000, "3.34M events/s"), (99_950, "0.10M events/s"), (99_949, "99.9k events/s"),
    (1_400, "1.4k events/s"), (999.5, "1.0k events/s"), (999.4, "999 events/s"), (12, "12 events/s"),
    (0.2, "0 events/s"), (float("inf"), "- events/s"), (float("nan"), "- events/s"),
])
def test_a_figure_a_second_is_worded_in_the_unit_that_shows_it(amount, words):
    assert per_second(amount) == words


def test_plural():
    assert plural(1, "action") == "1 action"
    assert plural(1_234, "cell") == "1,234 cells"
