"""Uplift of sends over controls (engine.closedloop.uplift): the figure, Newcombe's interval
as statsmodels gives it, and when no figure is shown."""
from __future__ import annotations

import pytest
from statsmodels.stats.proportion import confint_proportions_2indep

from engine.closedloop.uplift import MIN_CONTROLS, uplift, uplifts


def test_the_figure_and_its_interval():
    u = uplift(10_000, 1_200, 1_000, 80)
    assert u.send_rate == 0.12 and u.control_rate == 0.08
    assert u.absolute == pytest.approx(0.04)
    low, high = confint_proportions_2indep(1_200, 10_000, 80, 1_000, method="newcomb", compare="diff")
    assert (u.low, u.high) == (pytest.approx(low), pytest.approx(high))
    assert u.low > 0 and u.note == ""
    assert u.relative == pytest.approx(0.5) and u.incremental == pytest.approx(400)
    assert u.shown() == "+4.0pp [+2.1, +5.7]"


def test_an_interval_holding_zero_is_not_significant():
    u = uplift(2_000, 100, 200, 8)
    assert u.low < 0 < u.high and u.note == "not significant"
    assert u.shown().endswith(" not significant")


def test_controls_one_either_side_of_the_minimum():
    assert uplift(5_000, 100, MIN_CONTROLS - 1, 1).shown() == "too few controls"
    assert uplift(5_000, 100, MIN_CONTROLS - 1, 1).absolute is None
    assert uplift(5_000, 100, MIN_CONTROLS, 1).absolute is not None


def test_no_sends_and_no_control_conversions():
    assert uplift(0, 0, 500, 5).note == "no sends"
    u = uplift(1_000, 10, 500, 0)
    assert u.relative is None and u.absolute == pytest.approx(0.01)


@pytest.mark.parametrize("counts", [(10, 11, 100, 1), (10, 1, 100, 101), (-1, 0, 100, 1)])
def test_impossible_counts_are_refused(counts):
    with pytest.raises(ValueError):
        uplift(*counts)


def test_many_at_once_are_each_as_alone():
    counts = [(10_000, 1_200, 1_000, 80), (2_000, 100, 200, 8), (5_000, 100, MIN_CONTROLS - 1, 1), (0, 0, 500, 5),
              (1_000, 10, 500, 0), (1, 1, MIN_CONTROLS, MIN_CONTROLS)]
    assert uplifts(counts) == [uplift(*c) for c in counts]
    assert uplifts([]) == []
