"""How counts are worded in messages (engine.wording): the text, for given numbers. Nothing
here is timed; these are figures chosen at each unit's edge."""
from __future__ import annotations

import pytest

from engine.wording import plural, short_figure


@pytest.mark.parametrize("amount, words", [
    (3_340_000, "3.34M"), (99_950, "0.10M"), (99_949, "99.9k"), (1_400, "1.4k"), (999.5, "1.0k"),
    (999.4, "999"), (12, "12"), (0.2, "0"), (float("inf"), "-"), (float("nan"), "-"),
])
def test_a_figure_is_worded_in_the_unit_that_shows_it(amount, words):
    assert short_figure(amount) == words


def test_plural():
    assert plural(1, "action") == "1 action"
    assert plural(1_234, "cell") == "1,234 cells"
