"""Uplift of sends over controls (engine.closedloop.uplift): the figure, Newcombe's interval
as statsmodels gives it, and when no figure is shown."""
from __future__ import annotations

import os
import signal
import sys

import pytest
from hypothesis import given, settings, strategies as st
from statsmodels.stats.proportion import confint_proportions_2indep

from engine.closedloop import uplift as uplift_module
from engine.closedloop.uplift import MIN_CONTROLS, intervals_ahead, uplift, uplifts


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


# intervals_ahead: statsmodels imported in a child process while a command works


@pytest.fixture
def not_imported(monkeypatch):
    """As in a fresh `sigmatch` process, where statsmodels is not imported yet (this module
    imported it): intervals_ahead starts its child only then. `here` computes in this
    process, with the module as imported."""
    saved = sys.modules["statsmodels.stats.proportion"]
    monkeypatch.delitem(sys.modules, "statsmodels.stats.proportion")

    def here(counts, **kwargs):
        child, uplift_module._ahead = uplift_module._ahead, None
        sys.modules["statsmodels.stats.proportion"] = saved
        try:
            return uplifts(counts, **kwargs)
        finally:
            del sys.modules["statsmodels.stats.proportion"]
            uplift_module._ahead = child
    return here


EDGES = [(10_000, 1_200, 1_000, 80), (2_000, 100, 200, 8), (1, 1, MIN_CONTROLS, MIN_CONTROLS),
         (1_000, 0, 500, 0), (1_000, 1_000, 500, 500), (5_000, 100, MIN_CONTROLS - 1, 1), (0, 0, 500, 5),
         (123_456_789, 1, 10**9, 999_999_937)]


def test_the_child_gives_every_bit_of_this_process_figures(not_imported):
    here = not_imported
    with intervals_ahead():
        child = uplift_module._ahead
        assert child is not None and child.poll() is None
        assert uplifts(EDGES) == here(EDGES)
        assert uplifts(EDGES, alpha=0.01) == here(EDGES, alpha=0.01)
        assert uplift_module._ahead is child          # answered: still asked
    assert child.poll() is not None and uplift_module._ahead is None


def test_the_child_and_this_process_agree_on_any_counts(not_imported):
    here = not_imported

    @given(st.lists(st.tuples(st.integers(1, 10**7), st.floats(0, 1), st.integers(MIN_CONTROLS, 10**6),
                              st.floats(0, 1)), min_size=1, max_size=8))
    @settings(max_examples=40, deadline=None)
    def agree(drawn):
        counts = [(s, int(s * a), c, int(c * b)) for s, a, c, b in drawn]
        assert uplifts(counts) == here(counts)

    with intervals_ahead():
        child = uplift_module._ahead
        agree()
        assert uplift_module._ahead is child


def test_a_child_gone_is_replaced_by_this_process(not_imported):
    with intervals_ahead():
        uplift_module._ahead.kill()
        uplift_module._ahead.wait()
        assert uplifts(EDGES) == not_imported(EDGES)
        assert uplift_module._ahead is None           # not asked again


def test_a_child_that_answers_nonsense_is_not_believed(not_imported, monkeypatch):
    monkeypatch.setattr(uplift_module, "_CHILD", "import sys\nfor line in sys.stdin: print('[[0.5], [0.6]]', flush=True)")
    with intervals_ahead():
        assert uplifts(EDGES[:3]) == not_imported(EDGES[:3])     # one interval for three: refused
        assert uplift_module._ahead is None


def test_nothing_is_started_when_not_wanted_or_already_imported(not_imported, monkeypatch):
    started = []
    monkeypatch.setattr(uplift_module.subprocess, "Popen", lambda *a, **k: started.append(a))
    with intervals_ahead(False):
        assert uplift_module._ahead is None
    sys.modules["statsmodels.stats.proportion"] = confint_proportions_2indep     # imported: any object
    with intervals_ahead():
        assert uplift_module._ahead is None
    assert started == []


def test_an_interpreter_that_cannot_start_leaves_the_work_here(not_imported, monkeypatch):
    def refused(*args, **kwargs):
        raise OSError("no such file")
    monkeypatch.setattr(uplift_module.subprocess, "Popen", refused)
    with intervals_ahead():
        assert uplift_module._ahead is None
        assert uplifts(EDGES[:2]) == not_imported(EDGES[:2])


def test_a_child_that_does_not_answer_in_time_is_replaced(not_imported, monkeypatch):
    """A child stopped or stuck (here: stopped by SIGSTOP) holds the funnel up ANSWER_S at
    most: then it is killed, and the figures are computed here."""
    monkeypatch.setattr(uplift_module, "ANSWER_S", 0.5)
    with intervals_ahead():
        child = uplift_module._ahead
        os.kill(child.pid, signal.SIGSTOP)
        assert uplifts(EDGES) == not_imported(EDGES)
        assert uplift_module._ahead is None
        assert child.wait(timeout=30) == -signal.SIGKILL


def test_the_child_runs_nothing_from_the_current_directory(not_imported, monkeypatch, tmp_path):
    """The child is an interpreter started with -c: by default that puts the current
    directory first on its path, and a json.py left there (a shared /tmp) would run."""
    (tmp_path / "json.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\nraise SystemExit(3)\n")
    monkeypatch.chdir(tmp_path)
    with intervals_ahead():
        child = uplift_module._ahead
        assert uplifts(EDGES) == not_imported(EDGES)
        assert uplift_module._ahead is child            # it answered
    assert not (tmp_path / "ran").exists()
