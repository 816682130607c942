"""Every comparison of SPEC §3, one millisecond (or one unit) either side of its edge, on the
core and on the reference model alike (the `backend` fixture, tests/backends.py). A `<`
that became `<=` in either engine moves exactly one of these cases; tests/mutation/ keeps
the list of such one-character changes and checks that each is caught.

Times: T0 is 2026-01-01T00:00:00Z, a Thursday. With utc_offset +08:00 a local time L on
Thursday is T0 - 8 h + L, so local 08:00 Thursday is T0 itself.
"""
from __future__ import annotations

import zlib

import msgpack
import pytest

from engine.language.config import CounterSpec, MarkerCondition, MarkerSpec, PolicySpec, VariantSpec
from tests.backends import (
    DAY, HOUR, MINUTE, T0, A, B, C, CALL, LOC, ORDER, POWER_OFF, POWER_ON, SMS, STRANGER,
    build, campaign, contacts, ev, funnel, run,
)

PLUS8 = 8 * HOUR
THURSDAY = T0 - PLUS8            # local Thursday 00:00 at +08:00
FRIDAY = THURSDAY + DAY
MONDAY, TUESDAY, WEDNESDAY, THURSDAY_BIT, FRIDAY_BIT, SATURDAY, SUNDAY = (1 << k for k in range(7))


def local(hh: int, mm: int = 0, ms: int = 0, day: int = THURSDAY) -> int:
    return day + hh * HOUR + mm * MINUTE + ms


# ---------------------------------------------------------------------------- step 1: timers
@pytest.mark.parametrize("off", [-1, 0, 1])
def test_timer_due_at_an_event_fires_before_it(backend, off):
    # The timer's contact blocks the event's own match through min_gap exactly when the timer
    # is due at or before the event (due <= e.ts); one millisecond earlier the event goes first.
    due = T0 + 5 * MINUTE
    m = build(backend, campaign("d", delay_ms=5 * MINUTE), campaign("now", on=(LOC,), priority=9),
              policy=PolicySpec(min_gap_ms=DAY))
    run(m, ev(T0), ev(due + off, LOC), drain=True)
    if off < 0:
        assert contacts(m) == [(due - 1, "now", A, "send")]
        assert funnel(m, "d") == {"matched": 1, "scheduled": 1, "suppressed_min_gap": 1}
    else:
        assert contacts(m) == [(due, "d", A, "send")]
        assert funnel(m, "now") == {"matched": 1, "suppressed_min_gap": 1}


@pytest.mark.parametrize("off", [-1, 0])
def test_a_timer_due_at_the_event_frees_its_campaign_for_it(backend, off):
    # The pending action blocks a second match of its campaign until it fires; due == e.ts
    # fires it first, so the same event matches again and schedules anew.
    m = build(backend, campaign("d", delay_ms=5 * MINUTE))
    run(m, ev(T0), ev(T0 + 5 * MINUTE + off), drain=True)
    if off < 0:
        assert contacts(m) == [(T0 + 5 * MINUTE, "d", A, "send")]
        assert funnel(m, "d") == {"matched": 1, "scheduled": 1, "sent": 1}
    else:
        assert contacts(m) == [(T0 + 5 * MINUTE, "d", A, "send"), (T0 + 10 * MINUTE, "d", A, "send")]
        assert funnel(m, "d") == {"matched": 2, "scheduled": 2, "sent": 2}


@pytest.mark.parametrize("off", [-1, 0])
def test_a_timer_due_at_an_order_is_converted_by_it(backend, off):
    # Step 1 before step 5: the contact the timer makes at e.ts is the one e converts.
    m = build(backend, campaign("d", delay_ms=5 * MINUTE, convert_on=(ORDER,)))
    run(m, ev(T0), ev(T0 + 5 * MINUTE + off, ORDER), drain=True)
    assert contacts(m) == [(T0 + 5 * MINUTE, "d", A, "send")]
    assert m.conversions == ([] if off < 0 else [(1, T0 + 5 * MINUTE, "d", A, 1, "send")])


@pytest.mark.parametrize("fired_by", ["event", "drain"])
def test_timers_due_together_fire_in_creation_order(backend, fired_by):
    # Seven timers, six due at the same moment, created in an order that neither the
    # subscriber nor the campaign index gives; the heap must hand them back by (due, creation).
    x = campaign("x", delay_ms=10 * MINUTE)
    y = campaign("y", on=(SMS,), delay_ms=5 * MINUTE, priority=5)
    w = campaign("w", on=(LOC,), delay_ms=1)
    due = T0 + 10 * MINUTE
    events = [ev(T0, msisdn=B), ev(T0, msisdn=C), ev(T0, msisdn=A),
              ev(T0 + 5 * MINUTE, SMS, msisdn=A), ev(T0 + 5 * MINUTE, SMS, msisdn=C),
              ev(T0 + 5 * MINUTE, SMS, msisdn=B), ev(T0 + 5 * MINUTE, LOC, msisdn=C)]
    if fired_by == "event":
        events.append(ev(due, POWER_ON, msisdn=STRANGER))
    m = run(build(backend, x, y, w), *events, drain=fired_by == "drain")
    assert contacts(m) == [(T0 + 5 * MINUTE + 1, "w", C, "send"),
                           (due, "x", B, "send"), (due, "x", C, "send"), (due, "x", A, "send"),
                           (due, "y", A, "send"), (due, "y", C, "send"), (due, "y", B, "send")]
    assert [a[7] for a in m.actions] == [T0 + 5 * MINUTE] + [T0] * 3 + [T0 + 5 * MINUTE] * 3


@pytest.mark.parametrize("off, late", [(-1, 1), (0, 0), (1, 0)])
def test_late_event_boundary(backend, off, late):
    m = run(build(backend, campaign(on=(SMS,))), ev(T0 + MINUTE), ev(T0 + MINUTE + off, SMS, msisdn=B, cell=4))
    assert m.late_events == late
    effective = max(T0 + MINUTE, T0 + MINUTE + off)
    assert m.actions == [(1, effective, "c", B, "sms", "", "send", effective, 4)]


# ---------------------------------------------------------------------------- step 4: counters
@pytest.mark.parametrize("off, value", [(-1, 2), (0, 1), (1, 1)])
def test_window_resets_at_start_plus_window(backend, off, value):
    sms = CounterSpec("sms", on=(SMS,), flags=0, add="count", window_ms=HOUR)
    m = build(backend, campaign(on=(SMS,), counter="sms", at_least=2), counters=[sms])
    run(m, ev(T0, SMS), ev(T0 + HOUR + off, SMS))
    assert m.counter_value(0, "sms", T0 + HOUR + off) == value
    assert contacts(m) == ([(T0 + HOUR - 1, "c", A, "send")] if value == 2 else [])


@pytest.mark.parametrize("off, matches", [(-1, True), (0, False), (1, False)])
def test_window_read_as_zero_from_start_plus_window(backend, off, matches):
    sms = CounterSpec("sms", on=(SMS,), flags=0, add="count", window_ms=HOUR)
    m = build(backend, campaign(counter="sms", at_least=1), counters=[sms])
    run(m, ev(T0, SMS), ev(T0 + HOUR + off))
    assert contacts(m) == ([(T0 + HOUR + off, "c", A, "send")] if matches else [])


@pytest.mark.parametrize("off, matches", [(-1, True), (0, False)])
def test_window_starts_when_the_counter_leaves_zero(backend, off, matches):
    # A zero duration adds nothing: the window starts with the first event that finds the
    # counter at 0 and leaves it non-zero, not with the first event counted.
    seconds = CounterSpec("s", on=(CALL,), flags=0, add="dur", window_ms=HOUR)
    m = build(backend, campaign(on=(SMS,), counter="s", at_least=5), counters=[seconds])
    half = T0 + HOUR // 2
    run(m, ev(T0, dur=0), ev(half, dur=5), ev(T0 + HOUR, SMS), ev(half + HOUR + off, SMS, msisdn=A))
    expected = [(T0 + HOUR, "c", A, "send")] + ([(half + HOUR - 1, "c", A, "send")] if matches else [])
    assert contacts(m) == expected


@pytest.mark.parametrize("at_least, matches", [(1, True), (2, True), (3, False)])
def test_counter_at_least(backend, at_least, matches):
    # The counter's value after this event's own step 4 (2 after the second SMS).
    sms = CounterSpec("sms", on=(SMS,), flags=0, add="count", window_ms=None)
    m = build(backend, campaign(on=(SMS,), counter="sms", at_least=at_least, cooldown_ms=DAY), counters=[sms])
    run(m, ev(T0, SMS), ev(T0 + 1, SMS))
    if at_least == 1:
        assert [a[1] for a in m.actions] == [T0]
    else:
        assert [a[1] for a in m.actions] == ([T0 + 1] if matches else [])


@pytest.mark.parametrize("dur, minutes", [(0, 0), (1, 1), (59, 1), (60, 1), (61, 2), (119, 2), (120, 2), (121, 3)])
def test_started_minutes(backend, dur, minutes):
    k = CounterSpec("m", on=(CALL,), flags=0, add="dur_minutes", window_ms=None)
    m = run(build(backend, campaign(on=(SMS,)), counters=[k]), ev(T0, dur=dur))
    assert m.counter_value(0, "m", T0) == minutes


@pytest.mark.parametrize("flags, counted", [(0b011, True), (0b111, True), (0b001, False), (0b010, False)])
def test_counter_flags_all_set(backend, flags, counted):
    k = CounterSpec("k", on=(CALL,), flags=0b011, add="count", window_ms=None)
    m = run(build(backend, campaign(on=(SMS,)), counters=[k]), ev(T0, flags=flags))
    assert m.counter_value(0, "k", T0) == (1 if counted else 0)


@pytest.mark.parametrize("adds, value", [
    ([2**32 - 3, 1], 2**32 - 2),                # one below the top: no saturation yet
    ([2**32 - 3, 1, 1], 2**32 - 1),             # exactly the top
    ([2**32 - 3, 1, 1, 1], 2**32 - 1),          # past it: stays, never wraps to 0
    ([2**32 - 1], 2**32 - 1),
    ([2**32], 2**32 - 1),                       # one add above 32 bits: saturates, not truncates to 0
    ([2**32 + 1], 2**32 - 1),
    ([2**64 - 1, 5], 2**32 - 1),
])
def test_counter_saturation(backend, adds, value):
    seconds = CounterSpec("s", on=(CALL,), flags=0, add="dur", window_ms=None)
    m = build(backend, campaign(on=(SMS,), counter="s", at_least=2**32 - 1), counters=[seconds])
    run(m, *[ev(T0 + k, dur=d) for k, d in enumerate(adds)], ev(T0 + 10, SMS))
    assert m.counter_value(0, "s", T0 + 10) == value
    assert len(m.actions) == (1 if value == 2**32 - 1 else 0)


# Periods (+08:00): the local day ends at midnight, the week on Sunday night (2026-01-05 is a
# Monday), the month on its last day. A counter counted once just before the edge and again at
# `off` from it holds 2 before the edge and 1 (reset) from it; a campaign of another type
# reads it as 0 from the edge.
def local_date(year, month, day):
    import datetime
    return ((datetime.date(year, month, day) - datetime.date(1970, 1, 1)).days * DAY) - PLUS8


PERIOD_EDGES = [
    ("day", THURSDAY + DAY),                        # Friday 2026-01-02 00:00 local
    ("week", THURSDAY + 4 * DAY),                   # Monday 2026-01-05 00:00 local
    ("month", local_date(2026, 2, 1)),              # the 1st
    ("month", local_date(2027, 1, 1)),              # a new year
    ("month", local_date(2028, 3, 1)),              # after a February 29
    ("month", local_date(2100, 3, 1)),              # after a February 28 in a year without a 29th
    ("month", local_date(2000, 3, 1)),              # after the 29th of a 400-year leap year
    ("month", local_date(2026, 7, 1)),              # after a month of 30 days
]


@pytest.mark.parametrize("period, edge", PERIOD_EDGES)
@pytest.mark.parametrize("off", [-1, 0, 1])
def test_period_resets_at_the_local_edge(backend, period, edge, off):
    sms = CounterSpec("sms", on=(SMS,), flags=0, add="count", window_ms=None, period=period)
    m = build(backend, campaign(on=(SMS,), counter="sms", at_least=2), counters=[sms], utc_offset_ms=PLUS8)
    run(m, ev(edge - 2, SMS), ev(edge + off, SMS))
    assert m.counter_value(0, "sms", edge + off) == (2 if off < 0 else 1)
    assert contacts(m) == ([(edge - 1, "c", A, "send")] if off < 0 else [])


@pytest.mark.parametrize("period, edge", PERIOD_EDGES)
@pytest.mark.parametrize("off", [-1, 0, 1])
def test_period_read_as_zero_from_the_local_edge(backend, period, edge, off):
    sms = CounterSpec("sms", on=(SMS,), flags=0, add="count", window_ms=None, period=period)
    m = build(backend, campaign(counter="sms", at_least=1), counters=[sms], utc_offset_ms=PLUS8)
    run(m, ev(edge - 1, SMS), ev(edge + off))
    assert contacts(m) == ([(edge + off, "c", A, "send")] if off < 0 else [])


@pytest.mark.parametrize("period, edge", PERIOD_EDGES)
@pytest.mark.parametrize("off", [-1, 0])
def test_period_read_before_it_began(backend, period, edge, off):
    # counted from the edge and read just before it, in the period before: 0 (the core keeps
    # the bounds of the clock's period, and a read at another ts must not take them for its own)
    sms = CounterSpec("sms", on=(SMS,), flags=0, add="count", window_ms=None, period=period)
    m = build(backend, campaign(on=(LOC,)), counters=[sms], utc_offset_ms=PLUS8)
    run(m, ev(edge, SMS), ev(edge + DAY * 40, LOC))
    assert m.counter_value(0, "sms", edge + off) == (0 if off < 0 else 1)


@pytest.mark.parametrize("last", [(2028, 2, 29), (2000, 2, 29), (2100, 2, 28), (2026, 6, 30), (2026, 1, 31),
                                  (2026, 12, 31)])
def test_the_last_day_of_a_month_is_in_it(backend, last):
    # from the first ms of a month's last local day to its last ms: one period
    sms = CounterSpec("sms", on=(SMS,), flags=0, add="count", window_ms=None, period="month")
    m = build(backend, campaign(on=(LOC,)), counters=[sms], utc_offset_ms=PLUS8)
    day = local_date(*last)
    run(m, ev(day, SMS), ev(day + DAY - 1, SMS))
    assert m.counter_value(0, "sms", day + DAY - 1) == 2


@pytest.mark.parametrize("month", [1, 2, 3, 12])
def test_the_same_month_a_year_later_is_another_period(backend, month):
    # the month's index carries the year: January and February belong to their own year
    sms = CounterSpec("sms", on=(SMS,), flags=0, add="count", window_ms=None, period="month")
    m = build(backend, campaign(on=(SMS,), counter="sms", at_least=2), counters=[sms], utc_offset_ms=PLUS8)
    first, second = local_date(2027, month, 10), local_date(2028, month, 10)
    run(m, ev(first, SMS), ev(second, SMS))
    assert m.counter_value(0, "sms", second) == 1 and contacts(m) == []


@pytest.mark.parametrize("off, value", [(-1, 2), (0, 1)])
def test_month_before_the_local_epoch(backend, off, value):
    # -05:30: ts 0 is local 1969-12-31 18:30, so local January 1970 begins at 05:30 UTC
    sms = CounterSpec("sms", on=(SMS,), flags=0, add="count", window_ms=None, period="month")
    m = build(backend, campaign(on=(LOC,)), counters=[sms], utc_offset_ms=-(5 * HOUR + 30 * MINUTE))
    edge = 5 * HOUR + 30 * MINUTE
    run(m, ev(0, SMS), ev(edge + off, SMS))
    assert m.counter_value(0, "sms", edge + off) == value


@pytest.mark.parametrize("arg, counted", [(3000, False), (3001, True), (3002, False)])
def test_counter_arg_equal(backend, arg, counted):
    k = CounterSpec("k", on=(ORDER,), flags=0, add="count", window_ms=None, arg=3001)
    m = run(build(backend, campaign(on=(SMS,)), counters=[k]), ev(T0, ORDER, arg=arg))
    assert m.counter_value(0, "k", T0) == (1 if counted else 0)


# ---------------------------------------------------------------------------- step 5: conversions
@pytest.mark.parametrize("off, converts", [(-1, True), (0, False), (1, False)])
def test_convert_within(backend, off, converts):
    m = build(backend, campaign(convert_on=(ORDER,), convert_within_ms=HOUR, stop_after=1))
    run(m, ev(T0), ev(T0 + HOUR + off, ORDER), ev(T0 + 2 * HOUR))
    if converts:
        assert m.conversions == [(1, T0 + HOUR - 1, "c", A, 1, "send")]
        # the streak went back to 0, so stop_after = 1 lets the next call through
        assert [a[1] for a in m.actions] == [T0, T0 + 2 * HOUR]
    else:
        assert m.conversions == [] and [a[1] for a in m.actions] == [T0]


@pytest.mark.parametrize("arg, converts", [(3000, False), (3001, True), (3002, False)])
def test_convert_arg(backend, arg, converts):
    m = run(build(backend, campaign(convert_on=(ORDER,), convert_arg=3001)), ev(T0), ev(T0 + 1, ORDER, arg=arg))
    assert len(m.conversions) == (1 if converts else 0)
    assert funnel(m, "c").get("converted_send", 0) == (1 if converts else 0)


# ---------------------------------------------------------------------------- step 6: the trigger's flags and arg
@pytest.mark.parametrize("flags, matches", [(0b011, True), (0b111, True), (0b001, False), (0b010, False), (0, False)])
def test_campaign_flags_all_set(backend, flags, matches):
    m = run(build(backend, campaign(flags=0b011)), ev(T0, flags=flags))
    assert len(m.actions) == (1 if matches else 0)


@pytest.mark.parametrize("arg, matches", [(3000, False), (3001, True), (3002, False), (0, False)])
def test_campaign_arg_equal(backend, arg, matches):
    m = run(build(backend, campaign(on=(ORDER,), arg=3001)), ev(T0, ORDER, arg=arg))
    assert len(m.actions) == (1 if matches else 0)


def test_campaign_arg_zero_is_a_value(backend):
    # arg = 0 is a filter like any other (only 0 passes), not "no filter"
    m = run(build(backend, campaign(on=(ORDER,), arg=0)), ev(T0, ORDER, arg=0), ev(T0 + DAY, ORDER, arg=1, msisdn=B))
    assert contacts(m) == [(T0, "c", A, "send")]


# ---------------------------------------------------------------------------- steps 6 and 7: a campaign's life
# start 2026-01-01 and end 2026-01-02 at +08:00: the local dates begin at THURSDAY and end
# at THURSDAY + 2 days (exclusive), each either side of local midnight.
JAN_1, JAN_2 = __import__("datetime").date(2026, 1, 1), __import__("datetime").date(2026, 1, 2)


@pytest.mark.parametrize("at, matches", [
    (THURSDAY - 1, False), (THURSDAY, True), (THURSDAY + 1, True),
    (THURSDAY + 2 * DAY - 1, True), (THURSDAY + 2 * DAY, False), (THURSDAY + 2 * DAY + 1, False),
])
def test_start_and_end_by_local_date(backend, at, matches):
    m = run(build(backend, campaign(start=JAN_1, end=JAN_2), utc_offset_ms=PLUS8), ev(at))
    assert contacts(m) == ([(at, "c", A, "send")] if matches else [])


@pytest.mark.parametrize("at, matches", [(THURSDAY - 1, False), (THURSDAY, True), (THURSDAY + 100 * DAY, True)])
def test_start_alone(backend, at, matches):
    m = run(build(backend, campaign(start=JAN_1), utc_offset_ms=PLUS8), ev(at))
    assert len(m.actions) == (1 if matches else 0)


@pytest.mark.parametrize("at, matches", [(THURSDAY - 100 * DAY, True), (THURSDAY + DAY - 1, True), (THURSDAY + DAY, False)])
def test_end_alone(backend, at, matches):
    m = run(build(backend, campaign(end=JAN_1), utc_offset_ms=PLUS8), ev(at))
    assert len(m.actions) == (1 if matches else 0)


@pytest.mark.parametrize("due_off, outcome", [(-1, "sent"), (0, "ended"), (1, "ended")])
def test_an_action_due_past_the_end_is_ended(backend, due_off, outcome):
    # matched on the last local day; due one ms before local midnight, at it or after it
    end = THURSDAY + 2 * DAY
    trigger = end - HOUR
    m = build(backend, campaign(end=JAN_2, delay_ms=HOUR + due_off), utc_offset_ms=PLUS8)
    run(m, ev(trigger), drain=True)
    assert funnel(m, "c") == {"matched": 1, "scheduled": 1, outcome: 1}


def test_a_disabled_campaign_matches_nothing(backend):
    m = run(build(backend, campaign(enabled=False), campaign("on", on=(SMS,))), ev(T0), ev(T0, SMS))
    assert contacts(m) == [(T0, "on", A, "send")]
    assert funnel(m, "c") == {}


# ---------------------------------------------------------------------------- steps 6, 7 and 8: markers
# A marker set by an SMS at T0; a call `gap` ms later. after: set and e.ts - marker < within;
# not_after: unset or e.ts - marker >= within (SPEC §3 step 6).
SENT = MarkerSpec("sent", on=(SMS,))


@pytest.mark.parametrize("gap, matches", [(HOUR - 1, True), (HOUR, False), (HOUR + 1, False), (0, True)])
def test_after_within(backend, gap, matches):
    m = build(backend, campaign(after=(MarkerCondition("sent", HOUR),)), markers=[SENT])
    run(m, ev(T0, SMS), ev(T0 + gap))
    assert len(m.actions) == (1 if matches else 0)


@pytest.mark.parametrize("gap, matches", [(HOUR - 1, False), (HOUR, True), (HOUR + 1, True), (0, False)])
def test_not_after_within(backend, gap, matches):
    m = build(backend, campaign(not_after=(MarkerCondition("sent", HOUR),)), markers=[SENT])
    run(m, ev(T0, SMS), ev(T0 + gap))
    assert len(m.actions) == (1 if matches else 0)


def test_an_unset_marker(backend):
    # never set: after fails, not_after passes; an event at ts 0 still sets a marker
    m = build(backend, campaign("a", after=(MarkerCondition("sent", HOUR),)),
              campaign("n", not_after=(MarkerCondition("sent", HOUR),)), markers=[SENT])
    run(m, ev(T0))
    assert contacts(m) == [(T0, "n", A, "send")]
    m = build(backend, campaign("a", after=(MarkerCondition("sent", T0 + 1),)), markers=[SENT])
    run(m, ev(0, SMS), ev(T0))
    assert contacts(m) == [(T0, "a", A, "send")]


def test_an_event_never_sees_itself(backend):
    # the SMS that sets the marker is not "an earlier one": after fails on the first SMS
    m = build(backend, campaign(on=(SMS,), after=(MarkerCondition("sent", HOUR),)), markers=[SENT])
    run(m, ev(T0, SMS), ev(T0 + 1, SMS))
    assert contacts(m) == [(T0 + 1, "c", A, "send")]


@pytest.mark.parametrize("flags, arg, sets", [(0b11, 3001, True), (0b01, 3001, False), (0b11, 3002, False)])
def test_marker_flags_and_arg(backend, flags, arg, sets):
    took = MarkerSpec("took", on=(ORDER,), flags=0b11, arg=3001)
    m = build(backend, campaign(after=(MarkerCondition("took", HOUR),)), markers=[took])
    run(m, ev(T0, ORDER, flags=flags, arg=arg), ev(T0 + 1))
    assert len(m.actions) == (1 if sets else 0)


@pytest.mark.parametrize("later, outcome", [(-1, "sent"), (0, "sent"), (1, "absent")])
def test_absent_after_the_trigger(backend, later, outcome):
    # a RECHARGE at trigger_ts + later; absent fails only when marker > trigger_ts
    recharged = MarkerSpec("recharged", on=(12,))
    m = build(backend, campaign(delay_ms=HOUR, absent=("recharged",)), markers=[recharged])
    trigger = T0 + MINUTE
    events = [ev(trigger + later, 12)] if later < 0 else []
    events += [ev(trigger)] + ([ev(trigger + later, 12)] if later >= 0 else [])
    run(m, *events, drain=True)
    assert funnel(m, "c") == {"matched": 1, "scheduled": 1, outcome: 1}


@pytest.mark.parametrize("off, outcome", [(-1, "absent"), (0, "sent"), (1, "sent")])
def test_absent_at_the_due_time(backend, off, outcome):
    # a marker event at due - 1 is seen; at the due time the timer fires first (step 1) and
    # does not see it; after the due time the action is gone
    recharged = MarkerSpec("recharged", on=(12,))
    m = build(backend, campaign(delay_ms=HOUR, absent=("recharged",)), markers=[recharged])
    run(m, ev(T0), ev(T0 + HOUR + off, 12), drain=True)
    assert funnel(m, "c") == {"matched": 1, "scheduled": 1, outcome: 1}


def test_absent_after_the_rechecks(backend):
    # both fail: the recheck is counted, not absent
    recharged = MarkerSpec("recharged", on=(12,))
    m = build(backend, campaign(delay_ms=HOUR, recheck=frozenset({"powered_on"}), absent=("recharged",)),
              markers=[recharged])
    run(m, ev(T0), ev(T0 + 1, 12), ev(T0 + 2, POWER_OFF), drain=True)
    assert funnel(m, "c") == {"matched": 1, "scheduled": 1, "recheck_failed": 1}


# ---------------------------------------------------------------------------- step 6: matching
@pytest.mark.parametrize("hours, at, matches", [
    ((9 * 60, 18 * 60), local(8, 59, 59_999), False),
    ((9 * 60, 18 * 60), local(9), True),                 # start inclusive
    ((9 * 60, 18 * 60), local(17, 59, 59_999), True),
    ((9 * 60, 18 * 60), local(18), False),               # end exclusive
    ((22 * 60, 2 * 60), local(21, 59, 59_999), False),   # wrapping midnight
    ((22 * 60, 2 * 60), local(22), True),
    ((22 * 60, 2 * 60), local(23, 59, 59_999), True),
    ((22 * 60, 2 * 60), local(0, day=FRIDAY), True),
    ((22 * 60, 2 * 60), local(1, 59, 59_999, day=FRIDAY), True),
    ((22 * 60, 2 * 60), local(2, day=FRIDAY), False),
    ((0, 1), local(0), True),                            # the first minute of the day only
    ((0, 1), local(0, 1), False),
    ((0, 1), local(23, 59, 59_999), False),
    ((1439, 0), local(23, 59), True),                    # the last minute only
    ((1439, 0), local(23, 58, 59_999), False),
    ((1439, 0), local(0, day=FRIDAY), False),
])
def test_hours(backend, hours, at, matches):
    m = run(build(backend, campaign(hours=hours), utc_offset_ms=PLUS8), ev(at))
    assert len(m.actions) == (1 if matches else 0)


@pytest.mark.parametrize("hours", [(9 * 60, 18 * 60), (22 * 60, 2 * 60)])
def test_hours_the_minute_changes_between_two_events(backend, hours):
    # the core keeps the bounds of the minute it last placed a ts in: each pair is the last ms
    # of one minute and the first of the next, in one engine, for other subscribers
    start = local(hours[0] // 60)
    end = local(hours[1] // 60, day=FRIDAY) if hours[1] < hours[0] else local(hours[1] // 60)
    m = build(backend, campaign(hours=hours), utc_offset_ms=PLUS8)
    run(m, ev(start - 1, msisdn=A), ev(start, msisdn=B), ev(end - 1, msisdn=C), ev(end, msisdn=A))
    assert [c[2] for c in contacts(m)] == [B, C]


@pytest.mark.parametrize("at, matches", [
    (local(23, 59, 59_999), False),                      # Thursday, local
    (local(0, day=FRIDAY), True),
    (local(23, 59, 59_999, day=FRIDAY), True),
    (local(0, day=FRIDAY + DAY), False),                 # Saturday
])
def test_days_by_local_date(backend, at, matches):
    m = run(build(backend, campaign(days=FRIDAY_BIT), utc_offset_ms=PLUS8), ev(at))
    assert len(m.actions) == (1 if matches else 0)


@pytest.mark.parametrize("weekday", range(7))
def test_each_weekday(backend, weekday):
    # local Monday 2026-01-05 00:00 at +08:00 is T0 + 4 days - 8 h; each day matches only its bit
    monday = THURSDAY + 4 * DAY
    m = run(build(backend, campaign(days=1 << weekday, cooldown_ms=DAY), utc_offset_ms=PLUS8),
            *[ev(monday + k * DAY + (0 if k % 2 else DAY - 1)) for k in range(7)])
    assert [a[1] for a in m.actions] == [monday + weekday * DAY + (0 if weekday % 2 else DAY - 1)]


@pytest.mark.parametrize("days, ts, matches", [
    # 1970-01-01T00:00Z at -05:30 is Wednesday 1969-12-31 18:30 local: a negative local time,
    # whose day and minute round towards minus infinity, not towards zero
    (WEDNESDAY, 0, True), (THURSDAY_BIT, 0, False),
    (WEDNESDAY, 5 * HOUR + 30 * MINUTE - 1, True), (THURSDAY_BIT, 5 * HOUR + 30 * MINUTE, True),
])
def test_days_before_the_local_epoch(backend, days, ts, matches):
    m = run(build(backend, campaign(days=days), utc_offset_ms=-(5 * HOUR + 30 * MINUTE)), ev(ts))
    assert len(m.actions) == (1 if matches else 0)


@pytest.mark.parametrize("ts, matches", [(0, True), (MINUTE - 1, True), (MINUTE, False)])
def test_hours_before_the_local_epoch(backend, ts, matches):
    c = campaign(hours=(18 * 60 + 30, 18 * 60 + 31))    # 18:30 local, Wednesday 1969-12-31
    m = run(build(backend, c, utc_offset_ms=-(5 * HOUR + 30 * MINUTE)), ev(ts))
    assert len(m.actions) == (1 if matches else 0)


@pytest.mark.parametrize("off, matches", [(-1, False), (0, True), (1, True)])
def test_cooldown_at_match(backend, off, matches):
    m = run(build(backend, campaign(cooldown_ms=HOUR)), ev(T0), ev(T0 + HOUR + off))
    assert [a[1] for a in m.actions] == [T0] + ([T0 + HOUR + off] if matches else [])
    # a match it forbids is no match at all: nothing in the funnel
    assert funnel(m, "c") == {"matched": 2 if matches else 1, "sent": 2 if matches else 1}


@pytest.mark.parametrize("stop_after", [1, 2, 3])
def test_stop_after(backend, stop_after):
    # streak == stop_after - 1 still matches; streak == stop_after does not
    m = run(build(backend, campaign(stop_after=stop_after)), *[ev(T0 + k) for k in range(4)])
    assert [a[1] for a in m.actions] == [T0 + k for k in range(stop_after)]
    assert funnel(m, "c") == {"matched": stop_after, "sent": stop_after}


@pytest.mark.parametrize("max_pending", [1, 2, 3])
def test_max_pending(backend, max_pending):
    m = run(build(backend, campaign(delay_ms=HOUR), max_pending=max_pending),
            ev(T0, msisdn=A), ev(T0, msisdn=B), ev(T0, msisdn=C), drain=True)
    assert [a[3] for a in m.actions] == [A, B, C][:max_pending]
    expected = {"matched": 3, "scheduled": max_pending, "sent": max_pending}
    if max_pending < 3:
        expected["overflow"] = 3 - max_pending
    assert funnel(m, "c") == expected


@pytest.mark.parametrize("previous, matches", [(0, True), (9, True), (5, False), (6, False)])
def test_enter_needs_the_previous_cell_outside(backend, previous, matches):
    m = build(backend, campaign(on=(LOC,), area="school", enter=True), areas={"school": {5, 6}})
    run(m, ev(T0, POWER_ON, cell=previous), ev(T0 + 1, LOC, cell=5))
    assert len(m.actions) == (1 if matches else 0)


# ---------------------------------------------------------------------------- step 6: when
WHEN_COUNTERS = [CounterSpec("a", on=(SMS,), flags=0, add="count", window_ms=None),
                 CounterSpec("b", on=(LOC,), flags=0, add="count", window_ms=None)]
WHEN_TRUTH = {"==": lambda d: d == 0, "!=": lambda d: d != 0, "<": lambda d: d < 0,
              "<=": lambda d: d <= 0, ">": lambda d: d > 0, ">=": lambda d: d >= 0}


@pytest.mark.parametrize("op", list(WHEN_TRUTH))
@pytest.mark.parametrize("a", [2, 3, 4])
def test_when_comparison_against_a_literal(backend, op, a):
    # a OP 3 with a one below, at and one above the edge
    m = build(backend, campaign(when=f"a {op} 3"), counters=WHEN_COUNTERS)
    run(m, *[ev(T0 + k, SMS) for k in range(a)], ev(T0 + HOUR))
    assert contacts(m) == ([(T0 + HOUR, "c", A, "send")] if WHEN_TRUTH[op](a - 3) else [])


@pytest.mark.parametrize("at_least, matches", [(2, True), (3, True), (4, False)])
def test_when_reads_the_counter_after_this_events_own_step_4(backend, at_least, matches):
    m = build(backend, campaign(on=(SMS,), when=f"a >= {at_least}", cooldown_ms=DAY), counters=WHEN_COUNTERS)
    run(m, ev(T0, LOC), ev(T0 + 1, LOC), ev(T0 + 2, LOC), ev(T0 + 3, SMS), ev(T0 + 4, SMS), ev(T0 + 5, SMS))
    # the third SMS sees a = 3
    assert [x[1] for x in m.actions][:1] == ([T0 + 3 + at_least - 1] if matches else [])


@pytest.mark.parametrize("op", list(WHEN_TRUTH))
@pytest.mark.parametrize("a", [6, 7, 8])
def test_when_comparison_between_counters(backend, op, a):
    # a OP 3 * b + 1 with b = 2: the edge is a = 7; both sides hold counters
    m = build(backend, campaign(on=(CALL,), when=f"a {op} 3 * b + 1"), counters=WHEN_COUNTERS)
    run(m, ev(T0, LOC), ev(T0 + 1, LOC), *[ev(T0 + 2 + k, SMS) for k in range(a)], ev(T0 + HOUR))
    assert contacts(m) == ([(T0 + HOUR, "c", A, "send")] if WHEN_TRUTH[op](a - 7) else [])


@pytest.mark.parametrize("off, matches", [(-1, False), (0, True), (1, True)])
def test_when_reads_a_windowed_counter_as_zero_past_its_window(backend, off, matches):
    # `a == 0` holds once the window of a has passed (e.ts >= start + window), as at_least reads it
    a = CounterSpec("a", on=(SMS,), flags=0, add="count", window_ms=HOUR)
    m = build(backend, campaign(when="a == 0"), counters=[a])
    run(m, ev(T0, SMS), ev(T0 + HOUR + off))
    assert contacts(m) == ([(T0 + HOUR + off, "c", A, "send")] if matches else [])


MAX = 2**32 - 1
BIG = [CounterSpec(f"k{i}", on=(CALL,), flags=0, add="dur", window_ms=None) for i in range(32)]


@pytest.mark.parametrize("when, dur", [
    # sixteen terms of (2^32 - 1)^2: about 2^68, far past 64 bits; the exact sum is positive
    (" + ".join(f"{MAX} * k{i}" for i in range(16)) + f" > {MAX}", MAX),
    # the same sum on both sides, from different counters: equal, and not greater
    (" + ".join(f"{MAX} * k{i}" for i in range(16)) + " == " + " + ".join(f"{MAX} * k{i}" for i in range(16, 32)), MAX),
    (" + ".join(f"{MAX} * k{i}" for i in range(16)) + " > " + " + ".join(f"{MAX} * k{i}" for i in range(16, 32)), MAX),
    # one unit either side of equality at the top: 16 (2^32-1)^2 - 1 < right side + 0
    (" + ".join(f"{MAX} * k{i}" for i in range(16)) + " <= " + " + ".join(f"{MAX} * k{i}" for i in range(16, 31))
     + f" + {MAX - 1} * k31", MAX),
    (f"0 - {MAX} * k0 - {MAX} * k1 < 0 - {MAX}", MAX),
    (f"0 - {MAX} * k0 - {MAX} * k1 < 0 - {MAX}", 0),
    # a counter past 2^31 must not read as negative
    ("k0 > 2147483647", 2**31),
])
def test_when_is_exact_far_past_64_bits(backend, when, dur):
    from engine.language import when as when_lang
    expected = when_lang.evaluate(when_lang.parse(when), lambda name: dur)
    m = build(backend, campaign(on=(SMS,), when=when), counters=BIG)
    run(m, ev(T0, dur=dur), ev(T0 + 1, SMS))
    assert m.counter_value(0, "k31", T0 + 1) == dur
    assert len(m.actions) == (1 if expected else 0)


def test_when_at_the_top_is_what_python_says():
    from engine.language import when as when_lang
    v = lambda name: MAX
    assert when_lang.evaluate(when_lang.parse(" + ".join(f"{MAX} * k{i}" for i in range(16)) + f" > {MAX}"), v)
    assert not when_lang.evaluate(when_lang.parse(
        " + ".join(f"{MAX} * k{i}" for i in range(16)) + " <= " + " + ".join(f"{MAX} * k{i}" for i in range(16, 31))
        + f" + {MAX - 1} * k31"), v)


# ---------------------------------------------------------------------------- step 6: anniversary
def utc(y, mo, d, hh=0, mm=0):
    import datetime
    return int(datetime.datetime(y, mo, d, hh, mm, tzinfo=datetime.timezone.utc).timestamp()) * 1000


def dates_profile(*values):
    import numpy as np
    import pyarrow as pa
    from tests.backends import Profiles
    numbers = [A, B, C, 13_800_000_004, 13_800_000_005, 13_800_000_006][:len(values)]
    return Profiles("p", np.array(numbers, dtype=np.uint64), {"birth_date": pa.array(list(values), type=pa.string())})


@pytest.mark.parametrize("day, off, matches", [
    # local 2026-12-31 23:59:59.999 at +08:00 is 15:59:59.999 UTC; local midnight of Jan 1 is 16:00 UTC
    ((2026, 12, 31), 16 * HOUR - 1, False),
    ((2026, 12, 31), 16 * HOUR, True),
    ((2027, 1, 1), 16 * HOUR - 1, True),
    ((2027, 1, 1), 16 * HOUR, False),
    ((2027, 1, 1), 0, True),           # UTC midnight of Jan 1: local 08:00 of Jan 1
    ((2026, 12, 31), 0, False),        # UTC midnight of Dec 31: local 08:00 of Dec 31
])
def test_anniversary_at_local_midnight(backend, day, off, matches):
    m = build(backend, campaign(anniversary="birth_date"), profiles=dates_profile("1990-01-01"),
              utc_offset_ms=PLUS8)
    run(m, ev(utc(*day) + off))
    assert len(m.actions) == (1 if matches else 0)


def test_anniversary_the_day_changes_between_two_events(backend):
    # +08:00: the last ms of Dec 31 and the first of Jan 1, the last of Jan 1 and the first of
    # Jan 2, each the birthday of the subscriber whose event it is: all four match
    m = build(backend, campaign(anniversary="birth_date"), utc_offset_ms=PLUS8,
              profiles=dates_profile("1990-12-31", "1990-01-01", "1990-01-02", "1990-01-01"))
    jan1 = utc(2026, 12, 31) + 16 * HOUR
    run(m, ev(jan1 - 1, msisdn=A), ev(jan1, msisdn=B), ev(jan1 + DAY - 1, msisdn=13_800_000_004),
        ev(jan1 + DAY, msisdn=C))
    assert [c[2] for c in contacts(m)] == [A, B, 13_800_000_004, C]


@pytest.mark.parametrize("born, day, matches", [
    ("2000-02-29", (2027, 2, 28), True),       # no February 29 in 2027: matched on the 28th
    ("2000-02-29", (2027, 3, 1), False),
    ("2000-02-29", (2028, 2, 28), False),      # 2028 has one: the 28th is not it
    ("2000-02-29", (2028, 2, 29), True),
    ("2000-02-29", (2100, 2, 28), True),       # 2100 is no leap year
    ("2000-02-29", (2400, 2, 28), False),      # 2400 is one
    ("2000-02-29", (2400, 2, 29), True),
    ("1990-02-28", (2028, 2, 28), True),
    ("1990-02-28", (2028, 2, 29), False),
    ("1990-02-28", (2027, 2, 28), True),
    ("1990-03-01", (2028, 2, 29), False),
    ("1990-03-01", (2028, 3, 1), True),
    ("1990-01-05", (2026, 1, 4), False),
    ("1990-01-05", (2026, 1, 5), True),
    ("1990-01-05", (2026, 1, 6), False),
    ("1990-01-05", (2026, 2, 5), False),
    ("1990-12-31", (2026, 12, 31), True),
])
def test_anniversary_month_and_day(backend, born, day, matches):
    m = build(backend, campaign(anniversary="birth_date"), profiles=dates_profile(born))
    run(m, ev(utc(*day, 12)))
    assert len(m.actions) == (1 if matches else 0)


@pytest.mark.parametrize("value, matches", [
    (None, False),
    ("2024-02-30", False),          # not a real day
    ("2023-02-29", False),
    ("1990-1-5", False),            # not YYYY-MM-DD
    ("1990/01/05", False),
    ("19900105", False),
    ("1990-01-05T00:00", False),
    ("0000-01-05", False),          # years 0001 to 9999
    ("", False),
    (" 1990-01-05", True),          # white space around a date is ignored, as CSV trims it
    ("1990-01-05 ", True),
    ("1990-01-05", True),
])
def test_anniversary_malformed_values_never_match(backend, value, matches):
    m = build(backend, campaign(anniversary="birth_date"), profiles=dates_profile(value))
    run(m, ev(utc(2026, 1, 5, 12)))
    assert len(m.actions) == (1 if matches else 0)


# ---------------------------------------------------------------------------- step 7: rechecks at t
@pytest.mark.parametrize("delay, passes", [(DAY - 1, False), (DAY, True), (DAY + HOUR - 1, True), (DAY + HOUR, False)])
def test_recheck_hours_at_the_due_time(backend, delay, passes):
    c = campaign(hours=(9 * 60, 10 * 60), delay_ms=delay, recheck=frozenset({"hours"}))
    m = run(build(backend, c, utc_offset_ms=PLUS8), ev(local(9)), drain=True)
    assert len(m.actions) == (1 if passes else 0)
    assert funnel(m, "c").get("recheck_failed", 0) == (0 if passes else 1)


@pytest.mark.parametrize("delay, passes", [(HOUR - 1, True), (HOUR, False)])
def test_recheck_days_at_the_due_time(backend, delay, passes):
    c = campaign(days=THURSDAY_BIT, delay_ms=delay, recheck=frozenset({"hours"}))
    m = run(build(backend, c, utc_offset_ms=PLUS8), ev(local(23)), drain=True)
    assert len(m.actions) == (1 if passes else 0)


@pytest.mark.parametrize("off, passes", [(-1, False), (0, True)])
def test_recheck_powered_on_at_the_due_time(backend, off, passes):
    # POWER_OFF at the due time comes after the timer (step 1 first); a millisecond before, it counts
    c = campaign(delay_ms=20 * MINUTE, recheck=frozenset({"powered_on"}))
    m = run(build(backend, c), ev(T0), ev(T0 + 20 * MINUTE + off, POWER_OFF), drain=True)
    assert len(m.actions) == (1 if passes else 0)


@pytest.mark.parametrize("off, passes", [(-1, False), (0, True)])
def test_recheck_area_at_the_due_time(backend, off, passes):
    c = campaign(area="airport", delay_ms=20 * MINUTE, recheck=frozenset({"area"}))
    m = run(build(backend, c, areas={"airport": {1}}), ev(T0, cell=1), ev(T0 + 20 * MINUTE + off, LOC, cell=2),
            drain=True)
    assert len(m.actions) == (1 if passes else 0)


# ---------------------------------------------------------------------------- step 7: the policy
@pytest.mark.parametrize("quiet, at, suppressed", [
    ((22 * 60, 8 * 60), local(21, 59, 59_999), False),
    ((22 * 60, 8 * 60), local(22), True),
    ((22 * 60, 8 * 60), local(7, 59, 59_999, day=FRIDAY), True),
    ((22 * 60, 8 * 60), local(8, day=FRIDAY), False),
    ((12 * 60, 13 * 60), local(11, 59, 59_999), False),
    ((12 * 60, 13 * 60), local(12), True),
    ((12 * 60, 13 * 60), local(12, 59, 59_999), True),
    ((12 * 60, 13 * 60), local(13), False),
    ((0, 6 * 60), local(23, 59, 59_999), False),         # quiet hours from local midnight
    ((0, 6 * 60), local(0, day=FRIDAY), True),
    ((0, 6 * 60), local(5, 59, 59_999, day=FRIDAY), True),
    ((0, 6 * 60), local(6, day=FRIDAY), False),
])
def test_quiet_hours(backend, quiet, at, suppressed):
    m = run(build(backend, campaign(), policy=PolicySpec(quiet_hours=quiet), utc_offset_ms=PLUS8), ev(at))
    assert funnel(m, "c") == ({"matched": 1, "suppressed_quiet_hours": 1} if suppressed else {"matched": 1, "sent": 1})


@pytest.mark.parametrize("first", [T0, 0])      # a contact at ts 0 is a contact too
@pytest.mark.parametrize("off, suppressed", [(-1, True), (0, False), (1, False)])
def test_min_gap(backend, first, off, suppressed):
    m = run(build(backend, campaign("a"), campaign("b", on=(SMS,)), policy=PolicySpec(min_gap_ms=HOUR)),
            ev(first), ev(first + HOUR + off, SMS))
    assert funnel(m, "b") == ({"matched": 1, "suppressed_min_gap": 1} if suppressed else {"matched": 1, "sent": 1})


@pytest.mark.parametrize("max_per_day", [1, 2, 3])
def test_max_per_day(backend, max_per_day):
    # contacts number max_per_day - 1 pass, max_per_day do not
    m = run(build(backend, campaign(), policy=PolicySpec(max_per_day=max_per_day)), *[ev(T0 + k) for k in range(4)])
    assert [a[1] for a in m.actions] == [T0 + k for k in range(max_per_day)]
    assert funnel(m, "c") == {"matched": 4, "sent": max_per_day, "suppressed_max_per_day": 4 - max_per_day}


@pytest.mark.parametrize("off, same_day", [(-1, True), (0, False)])
def test_max_per_day_local_midnight_before_the_epoch(backend, off, same_day):
    # at -05:30, ts 0 lies in local day -1, which ends at ts 5 h 30 min
    m = run(build(backend, campaign(), policy=PolicySpec(max_per_day=1), utc_offset_ms=-(5 * HOUR + 30 * MINUTE)),
            ev(0), ev(5 * HOUR + 30 * MINUTE + off))
    assert len(m.actions) == (1 if same_day else 2)


@pytest.mark.parametrize("threshold, kind", [(0.0128, "send"), (0.0129, "send"), (0.013, "control"), (0.0131, "control")])
def test_holdout_threshold_is_strict(backend, threshold, kind):
    assert zlib.crc32(f"{A}:promo".encode()) % 10000 == 129
    m = run(build(backend, campaign("promo", holdout=threshold)), ev(T0))
    assert m.actions[0][6] == kind
    assert funnel(m, "promo") == {"matched": 1, "sent" if kind == "send" else "control": 1}


# ---------------------------------------------------------------------------- max_in_window
# Fewer than `contacts` contacts (any campaign, any kind) at times > t - window.
@pytest.mark.parametrize("off, suppressed", [(-1, True), (0, False), (1, False)])
def test_max_in_window_at_t_minus_window(backend, off, suppressed):
    # Contacts at T0 and T0 + 1 h; at T0 + 1 d + off the first is inside the window (> t - 1 d)
    # only when off < 0.
    m = run(build(backend, campaign("c"), policy=PolicySpec(max_in_window=(2, DAY))),
            ev(T0), ev(T0 + HOUR), ev(T0 + DAY + off))
    assert funnel(m, "c") == ({"matched": 3, "sent": 2, "suppressed_max_in_window": 1} if suppressed
                              else {"matched": 3, "sent": 3})


@pytest.mark.parametrize("n", [3, 4, 5])
def test_max_in_window_at_n_contacts(backend, n):
    # Four triggers in the window against a cap one below, at and one above four.
    m = run(build(backend, campaign("c"), policy=PolicySpec(max_in_window=(n, HOUR))),
            *(ev(T0 + k * MINUTE) for k in range(4)))
    sent = min(4, n)
    assert [t for t, _, _, _ in contacts(m)] == [T0 + k * MINUTE for k in range(sent)]


def test_max_in_window_forgets_the_oldest_contacts(backend):
    # 2 contacts in a 1 h window, a trigger every 20 minutes: two contacts, then one refused
    # (both inside), then the oldest has left the window (at exactly t - 1 h): the ring of
    # kept times wraps again and again and always holds the two newest.
    m = run(build(backend, campaign("c"), policy=PolicySpec(max_in_window=(2, HOUR))),
            *(ev(T0 + k * 20 * MINUTE) for k in range(11)))
    assert [t for t, _, _, _ in contacts(m)] == [T0 + k * 20 * MINUTE for k in (0, 1, 3, 4, 6, 7, 9, 10)]


def test_max_in_window_counts_every_campaign_and_kind(backend):
    # A control of "k" and a send of "s" fill a window of 2; "x", exempt, still gets through and
    # counts too: an hour after the control, the send and x's contact still fill the window.
    m = run(build(backend, campaign("k", holdout=1.0), campaign("s", on=(SMS,)), campaign("t", on=(LOC,)),
                  campaign("x", on=(POWER_ON,), exempt=frozenset({"max_in_window"})),
                  policy=PolicySpec(max_in_window=(2, HOUR))),
            ev(T0), ev(T0 + 1, SMS), ev(T0 + 2, LOC), ev(T0 + 3, POWER_ON), ev(T0 + HOUR, LOC))
    assert [(t, cid, kind) for t, cid, _, kind in contacts(m)] == [
        (T0, "k", "control"), (T0 + 1, "s", "send"), (T0 + 3, "x", "send")]
    assert funnel(m, "t") == {"matched": 2, "suppressed_max_in_window": 2}


@pytest.mark.parametrize("exempt, reason", [
    ((), "suppressed_max_per_day"),
    (("max_per_day",), "suppressed_max_in_window"),
    (("max_per_day", "max_in_window"), "suppressed_campaign_budget"),
])
def test_max_in_window_between_max_per_day_and_the_budgets(backend, exempt, reason):
    policy = PolicySpec(max_per_day=1, max_in_window=(1, DAY))
    m = run(build(backend, campaign("a"), campaign("b", on=(SMS,), exempt=frozenset(exempt), total_budget=1),
                  campaign("z", on=(LOC,), priority=5, channel="boss"), policy=policy),
            ev(T0, SMS), ev(T0 + DAY + HOUR, LOC), ev(T0 + DAY + 2 * HOUR, SMS))
    assert funnel(m, "b") == {"matched": 2, "sent": 1, reason: 1}


# ---------------------------------------------------------------------------- budgets
# A campaign's sends on t's local day < daily_budget, its sends ever < total_budget, its
# channel's sends on t's local day < the channel's daily_budget. Three triggers of one
# subscriber (no min_gap, no cooldown) against a budget one below, at and one above three.
@pytest.mark.parametrize("budget", [2, 3, 4])
@pytest.mark.parametrize("key", ["daily_budget", "total_budget"])
def test_campaign_budget_at_n_sends(backend, key, budget):
    m = run(build(backend, campaign("c", **{key: budget})), ev(T0), ev(T0 + 1), ev(T0 + 2))
    sent = min(3, budget)
    assert contacts(m) == [(T0 + k, "c", A, "send") for k in range(sent)]
    assert funnel(m, "c") == {"matched": 3, "sent": sent, **({"suppressed_campaign_budget": 3 - sent} if sent < 3 else {})}


@pytest.mark.parametrize("budget", [2, 3, 4])
def test_channel_budget_at_n_sends(backend, budget):
    # Two campaigns of one channel share its budget; another channel's campaign does not.
    m = run(build(backend, campaign("a"), campaign("b", on=(SMS,)), campaign("x", channel="boss"),
                  channel_budgets={"sms": budget}),
            ev(T0), ev(T0 + 1, SMS, B), ev(T0 + 2, SMS, C))
    sent = min(3, budget)
    assert [(t, cid) for t, cid, _, _ in contacts(m) if cid != "x"] == [(T0, "a"), (T0 + 1, "b"), (T0 + 2, "b")][:sent]
    assert funnel(m, "x") == {"matched": 1, "sent": 1}
    if budget == 2:
        assert funnel(m, "b") == {"matched": 2, "sent": 1, "suppressed_channel_budget": 1}


@pytest.mark.parametrize("off, same_day", [(-1, True), (0, False), (1, False)])
@pytest.mark.parametrize("whose", ["campaign", "channel"])
def test_daily_budgets_at_local_midnight(backend, whose, off, same_day):
    # A send at local 10:00 Thursday (+08:00) spends a daily budget of 1; the next trigger at
    # local midnight + off is on Thursday (off -1) or on Friday, a new budget day.
    if whose == "campaign":
        m = build(backend, campaign("c", daily_budget=1), utc_offset_ms=PLUS8)
    else:
        m = build(backend, campaign("c"), utc_offset_ms=PLUS8, channel_budgets={"sms": 1})
    run(m, ev(local(10)), ev(FRIDAY + off))
    reason = "suppressed_campaign_budget" if whose == "campaign" else "suppressed_channel_budget"
    assert funnel(m, "c") == ({"matched": 2, "sent": 1, reason: 1} if same_day else {"matched": 2, "sent": 2})


@pytest.mark.parametrize("off, same_day", [(-1, True), (0, False)])
def test_daily_budget_midnight_before_the_epoch(backend, off, same_day):
    # Local days before 1970 (a negative local time) floor, as max_per_day's do.
    m = build(backend, campaign("c", daily_budget=1), utc_offset_ms=-5 * HOUR)
    run(m, ev(0), ev(5 * HOUR + off))
    assert funnel(m, "c")["sent"] == (1 if same_day else 2)


def test_total_budget_spans_days(backend):
    m = run(build(backend, campaign("c", total_budget=2)), ev(T0), ev(T0 + DAY), ev(T0 + 9 * DAY))
    assert funnel(m, "c") == {"matched": 3, "sent": 2, "suppressed_campaign_budget": 1}


def test_budgets_count_sends_only_but_stop_controls_too(backend):
    # A's contacts of "k" are controls (holdout 1): they spend nothing, so "k" keeps contacting
    # under a total budget of 1. Once "s" has spent the channel's budget, "k" is stopped too.
    m = run(build(backend, campaign("k", holdout=1.0, total_budget=1), campaign("s", on=(SMS,)),
                  channel_budgets={"sms": 1}),
            ev(T0), ev(T0 + 1), ev(T0 + 2, SMS), ev(T0 + 3))
    assert contacts(m) == [(T0, "k", A, "control"), (T0 + 1, "k", A, "control"), (T0 + 2, "s", A, "send")]
    assert funnel(m, "k") == {"matched": 3, "control": 2, "suppressed_channel_budget": 1}


def test_budgets_are_per_campaign_not_per_subscriber(backend):
    m = run(build(backend, campaign("c", daily_budget=2)), ev(T0, msisdn=A), ev(T0, msisdn=B), ev(T0, msisdn=C))
    assert [a for _, _, a, _ in contacts(m)] == [A, B]


def test_policy_before_budgets(backend):
    # Both max_per_day and the budgets forbid the second contact: the policy is counted.
    m = run(build(backend, campaign("d", delay_ms=MINUTE, daily_budget=1), policy=PolicySpec(max_per_day=1),
                  channel_budgets={"sms": 1}),
            ev(T0), ev(T0 + 2 * MINUTE), drain=True)
    assert funnel(m, "d") == {"matched": 2, "scheduled": 2, "sent": 1, "suppressed_max_per_day": 1}


def test_campaign_budget_before_channel_budget(backend):
    m = run(build(backend, campaign("c", daily_budget=1), channel_budgets={"sms": 1}), ev(T0), ev(T0 + 1))
    assert funnel(m, "c") == {"matched": 2, "sent": 1, "suppressed_campaign_budget": 1}


# ---------------------------------------------------------------------------- the global control group
# A contact is a global_control when crc32(f"{msisdn}:global") % 10000 < floor(global_holdout *
# 10000 + 0.5): A's hash is 8700, so 0.87 keeps A a send and 0.8701 makes it a global control.
@pytest.mark.parametrize("threshold, kind", [(0.8699, "send"), (0.87, "send"), (0.8701, "global_control"),
                                             (0.8702, "global_control")])
def test_global_holdout_threshold_is_strict(backend, threshold, kind):
    assert zlib.crc32(f"{A}:global".encode()) % 10000 == 8700
    m = run(build(backend, campaign("promo"), policy=PolicySpec(global_holdout=threshold)), ev(T0))
    assert m.actions[0][6] == kind
    assert funnel(m, "promo") == {"matched": 1, "sent" if kind == "send" else "global_control": 1}


def test_global_holdout_goes_before_the_campaigns_holdout(backend):
    # At 0.0353 neither A (8700) nor C (353) is a global control, and the campaign's holdout of 1
    # makes both controls; at 0.8701 both are global controls, whatever the campaign's holdout.
    assert zlib.crc32(f"{C}:global".encode()) % 10000 == 353
    m = run(build(backend, campaign("promo", holdout=1.0), policy=PolicySpec(global_holdout=0.0353)),
            ev(T0, msisdn=A), ev(T0, msisdn=C))
    assert [(a, kind) for _, _, a, kind in contacts(m)] == [(A, "control"), (C, "control")]
    m = run(build(backend, campaign("promo", holdout=1.0), policy=PolicySpec(global_holdout=0.8701)),
            ev(T0, msisdn=A), ev(T0, msisdn=C))
    assert [(a, kind) for _, _, a, kind in contacts(m)] == [(A, "global_control"), (C, "global_control")]


def test_a_global_control_is_a_contact_like_any_other(backend):
    # It blocks the next contact through min_gap, is converted (kind global_control) and
    # spends no budget.
    m = run(build(backend, campaign("a", convert_on=(ORDER,), total_budget=1), campaign("b", on=(SMS,)),
                  policy=PolicySpec(global_holdout=1.0, min_gap_ms=HOUR)),
            ev(T0), ev(T0 + 1, SMS), ev(T0 + 2, ORDER), ev(T0 + HOUR), ev(T0 + HOUR + 1, SMS))
    assert [(t, cid, kind) for t, cid, _, kind in contacts(m)] == [(T0, "a", "global_control"),
                                                                 (T0 + HOUR, "a", "global_control")]
    assert [(c[2], c[4], c[5]) for c in m.conversions] == [("a", 1, "global_control")]
    assert funnel(m, "a") == {"matched": 2, "global_control": 2, "converted_global_control": 1}
    assert funnel(m, "b") == {"matched": 2, "suppressed_min_gap": 2}


# ---------------------------------------------------------------------------- variants
# The variant is the first whose running sum of weights exceeds crc32(f"{msisdn}:{id}:variant")
# % W. A's number for "promo" at W = 10,000 is 736: a running sum of 737 takes it, one of 736
# does not (736 is not below 736), whichever variant's sum sits at the edge.
def _variants(*weights) -> tuple:
    return tuple(VariantSpec("ABCDEFGHIJKLMNOP"[i], w) for i, w in enumerate(weights))


@pytest.mark.parametrize("weights, template", [
    ((735, 9265), "B"), ((736, 9264), "B"), ((737, 9263), "A"),
    ((100, 635, 9265), "C"), ((100, 636, 9264), "C"), ((100, 637, 9263), "B"),
    ((736, 1, 9263), "B"), ((735, 1, 9264), "C"), ((735, 2, 9263), "B"),
])
def test_variant_is_the_first_running_sum_above_the_hash(backend, weights, template):
    assert zlib.crc32(f"{A}:promo:variant".encode()) % 10000 == 736 and sum(weights) == 10000
    m = run(build(backend, campaign("promo", variants=_variants(*weights))), ev(T0))
    assert [a[5] for a in m.actions] == [template]


def test_variant_hash_is_taken_modulo_the_sum_of_the_weights(backend):
    # W = 3: A and C are at 2, B at 0; one more or one less (W = 4 or 2) would put A at 0
    assert [zlib.crc32(f"{x}:promo:variant".encode()) % 3 for x in (A, B, C)] == [2, 0, 2]
    assert [zlib.crc32(f"{x}:promo:variant".encode()) % w for x in (A, B, C) for w in (2, 4)] == [0, 0, 1, 1, 1, 1]
    m = run(build(backend, campaign("promo", variants=_variants(1, 1, 1))),
            ev(T0, msisdn=A), ev(T0, msisdn=B), ev(T0, msisdn=C))
    assert [(a[3], a[5]) for a in m.actions] == [(A, "C"), (B, "A"), (C, "C")]


@pytest.mark.parametrize("holdout, global_holdout, kind", [(0.0, 0.0, "send"), (1.0, 0.0, "control"),
                                                           (0.0, 1.0, "global_control")])
def test_every_kind_of_contact_gets_the_subscribers_variant(backend, holdout, global_holdout, kind):
    # and a conversion counts for the contact's kind; the variant does not change the kind
    m = run(build(backend, campaign("promo", variants=_variants(736, 9264), holdout=holdout, convert_on=(ORDER,)),
                  policy=PolicySpec(global_holdout=global_holdout)),
            ev(T0), ev(T0 + 1, ORDER))
    assert [(a[5], a[6]) for a in m.actions] == [("B", kind)]
    assert [c[5] for c in m.conversions] == [kind]


def test_stats_count_contacts_and_conversions_per_variant():
    # stats.json's variants (the core's records; the model has no stats.json): A converts
    # under "B" (736 at W = 10,000 is not below 736), B's 7881 and C's 3361 under "B" too
    m = build("core", campaign("promo", variants=_variants(736, 9264), convert_on=(ORDER,)))
    stats = m.engine.replay(ev(T0, msisdn=A) + ev(T0, msisdn=B) + ev(T0 + 1, ORDER, msisdn=A)).stats
    assert stats["campaigns"]["promo"]["variants"] == {
        "A": dict.fromkeys(("sent", "control", "global_control", "converted_send", "converted_control",
                            "converted_global_control"), 0),
        "B": {"sent": 2, "control": 0, "global_control": 0, "converted_send": 1, "converted_control": 0,
              "converted_global_control": 0}}
    m = build("core", campaign("promo", variants=_variants(737, 9263), convert_on=(ORDER,)))
    stats = m.engine.replay(ev(T0, msisdn=A) + ev(T0, msisdn=B) + ev(T0 + 1, ORDER, msisdn=A)).stats
    assert [(v["sent"], v["converted_send"]) for v in stats["campaigns"]["promo"]["variants"].values()] == [(1, 1),
                                                                                                          (1, 0)]


def test_one_variant_takes_everyone(backend):
    m = run(build(backend, campaign("promo", variants=_variants(10_000))),
            ev(T0, msisdn=A), ev(T0, msisdn=B), ev(T0, msisdn=C))
    assert [a[5] for a in m.actions] == ["A", "A", "A"]


# ---------------------------------------------------------------------------- policy order
# Several rules reject the same contact at once: the funnel counts the first in SPEC §3's
# order (recheck, blacklist, quiet_hours, min_gap, max_per_day, cooldown) and only that one.
# At 23:00 (UTC, quiet 22:00-08:00), two hours after a contact the same day: quiet hours,
# min_gap (1 day) and max_per_day (1) all forbid campaign "b"; exempting rules uncovers the next.
def test_absent_before_the_policy(backend):
    # absent rejects first: quiet hours would reject too
    recharged = MarkerSpec("recharged", on=(12,))
    m = build(backend, campaign(delay_ms=HOUR, absent=("recharged",)), markers=[recharged],
              policy=PolicySpec(quiet_hours=(0, 24 * 60 - 1)))
    run(m, ev(T0), ev(T0 + 1, 12), drain=True)
    assert funnel(m, "c") == {"matched": 1, "scheduled": 1, "absent": 1}


@pytest.mark.parametrize("exempt, reason", [
    ((), "suppressed_quiet_hours"),
    (("quiet_hours",), "suppressed_min_gap"),
    (("min_gap",), "suppressed_quiet_hours"),
    (("quiet_hours", "min_gap"), "suppressed_max_per_day"),
    (("quiet_hours", "max_per_day"), "suppressed_min_gap"),
    (("quiet_hours", "min_gap", "max_per_day"), "sent"),
])
def test_policy_order(backend, exempt, reason):
    policy = PolicySpec(quiet_hours=(22 * 60, 8 * 60), min_gap_ms=DAY, max_per_day=1)
    m = run(build(backend, campaign("a"), campaign("b", on=(SMS,), exempt=frozenset(exempt)), policy=policy),
            ev(T0 + 21 * HOUR), ev(T0 + 23 * HOUR, SMS))
    assert funnel(m, "a") == {"matched": 1, "sent": 1}
    assert funnel(m, "b") == {"matched": 1, reason: 1}


def test_one_event_campaigns_of_other_exemptions_are_asked_again(backend):
    # "a" and "c" are turned down by min_gap; "b", between them and exempt, is not: the
    # core asks the policy again only for a campaign of other exemptions than the last one
    # turned down, and after a contact
    policy = PolicySpec(min_gap_ms=DAY)
    m = run(build(backend, campaign("first", on=(SMS,)), campaign("a", priority=3),
                  campaign("b", priority=2, exempt=frozenset({"min_gap"})), campaign("c", priority=1),
                  policy=policy),
            ev(T0, SMS), ev(T0 + HOUR))
    assert [funnel(m, k) for k in "abc"] == [{"matched": 1, "suppressed_min_gap": 1}, {"matched": 1, "sent": 1},
                                             {"matched": 1, "suppressed_min_gap": 1}]


def test_one_event_a_contact_changes_the_turn_down_of_the_next(backend):
    # two hours after a contact: "a" is turned down by max_per_day (min_gap, an hour, has
    # passed); "b", exempt from it, is sent; "c", of a's exemptions, is then turned down by
    # min_gap, earlier in the order: the turn-down of "a" no longer holds
    policy = PolicySpec(min_gap_ms=HOUR, max_per_day=1)
    m = run(build(backend, campaign("first", on=(SMS,)), campaign("a", priority=3),
                  campaign("b", priority=2, exempt=frozenset({"max_per_day"})), campaign("c", priority=1),
                  policy=policy),
            ev(T0, SMS), ev(T0 + 2 * HOUR))
    assert [funnel(m, k) for k in "abc"] == [{"matched": 1, "suppressed_max_per_day": 1},
                                             {"matched": 1, "sent": 1}, {"matched": 1, "suppressed_min_gap": 1}]


def test_policy_order_recheck_before_the_policy(backend):
    # A delayed action that fails its recheck is counted there, whatever the policy would say.
    policy = PolicySpec(quiet_hours=(22 * 60, 8 * 60), min_gap_ms=DAY, max_per_day=1)
    late = campaign("b", on=(SMS,), delay_ms=HOUR, recheck=frozenset({"powered_on"}))
    m = run(build(backend, campaign("a"), late, policy=policy),
            ev(T0 + 21 * HOUR), ev(T0 + 21 * HOUR + 30 * MINUTE, SMS), ev(T0 + 21 * HOUR + 31 * MINUTE, POWER_OFF),
            drain=True)
    assert funnel(m, "b") == {"matched": 1, "scheduled": 1, "recheck_failed": 1}


# ---------------------------------------------------------------------------- §1.4: the wire's limits
# The last value inside each limit is a good event; the first outside is a dead letter.
@pytest.mark.parametrize("event, good", [
    ([2**53 - 1, CALL, A], True), ([2**53, CALL, A], False),                       # ts
    ([T0, CALL, 10**15 - 1], True), ([T0, CALL, 10**15], False),                   # msisdn
    ([T0, CALL, 1], True), ([T0, CALL, 0], False),
    ([T0, CALL, "9" * 15], True), ([T0, CALL, "9" * 16], False), ([T0, CALL, "1"], True),
    ([T0, CALL, A, 10**15 - 1], True), ([T0, CALL, A, 10**15], False),             # peer
    ([T0, CALL, A, 0, 2**32 - 1], True), ([T0, CALL, A, 0, 2**32], False),         # cell
    ([T0, 12, A], True), ([T0, 13, A], False), ([T0, 0, A], False),                # type
])
def test_wire_limits(backend, event, good):
    m = build(backend, campaign(on=tuple(range(1, 13))))
    run(m, msgpack.packb(event))
    assert (len(m.dead_letters) == 0) == good
    assert sum(m.bad_events.values()) == (0 if good else 1)


# ---------------------------------------------------------------------------- reached only by a reload
# The audience, the blacklist and the campaign's cooldown are checked at matching as well as
# at emission, so between the two only a reload (new lists, a new cooldown) can make them
# reject a delayed action. The model has no reload: these run on the core alone.
RELOAD_CONFIG = """\
[engine]
profiles = "profiles.csv"

[lists]
dnd  = "dnd.txt"
fans = "fans.txt"

[policy]
blacklist = ["dnd"]

[[campaign]]
id       = "c"
on       = ["CALL_MO_END"]
audience = "fans"
delay    = "1h"
recheck  = ["audience"]
cooldown = "{cooldown}"
channel  = "sms"
{life}"""


def reload_world(tmp_path, cooldown="0s"):
    (tmp_path / "profiles.csv").write_text(f"msisdn\n{A}\n{B}\n")
    (tmp_path / "dnd.txt").write_text(f"{STRANGER}\n")
    (tmp_path / "fans.txt").write_text(f"{A}\n")
    config = tmp_path / "campaigns.toml"
    config.write_text(RELOAD_CONFIG.format(cooldown=cooldown, life=""))
    return config


@pytest.mark.parametrize("change, outcome", [
    (None, "sent"),
    ("audience", "recheck_failed"),
    ("blacklist", "suppressed_blacklist"),
    ("disabled", "disabled"),
    ("start", "ended"),                 # the day after the due time's local date
    ("end", "ended"),                   # the day before it
    ("same_dates", "sent"),             # start and end on the due time's local date
])
def test_rules_at_emission_after_a_reload(tmp_path, change, outcome):
    from engine.api import Engine
    config = reload_world(tmp_path)
    engine = Engine.from_config(config)
    engine.replay(ev(T0))
    assert engine.pending == 1
    if change == "audience":
        (tmp_path / "fans.txt").write_text(f"{B}\n")
    elif change == "blacklist":
        (tmp_path / "dnd.txt").write_text(f"{STRANGER}\n{A}\n")
    elif change is not None:
        life = {"disabled": "enabled = false\n", "start": 'start = "2026-01-02"\n', "end": 'end = "2025-12-31"\n',
                "same_dates": 'start = "2026-01-01"\nend = "2026-01-01"\n'}[change]
        config.write_text(RELOAD_CONFIG.format(cooldown="0s", life=life))
    engine = engine.reload()
    engine.drain()
    assert {k: v for k, v in engine.stats["campaigns"]["c"].items() if k in ("matched", "scheduled", outcome)} \
        == {"matched": 1, "scheduled": 1, outcome: 1}


@pytest.mark.parametrize("later, sent", [(0, False), (1, True), (2, True)])
def test_cooldown_at_emission_after_a_reload(tmp_path, later, sent):
    # A first contact at T0 + 1 h; a second trigger `later` s later matches under a cooldown
    # of 0 and is due an hour after it; the reload makes the cooldown 3,601 s: due - last
    # contact = 3,600 s + `later` s (event time) against it.
    from engine.api import Engine
    config = reload_world(tmp_path)
    engine = Engine.from_config(config)
    engine.replay(ev(T0) + ev(T0 + HOUR + 1000 * later))
    assert engine.pending == 1
    config.write_text(RELOAD_CONFIG.format(cooldown="3601s", life=""))
    engine = engine.reload()
    run = engine.drain()
    funnel = engine.stats["campaigns"]["c"]
    assert (funnel["sent"], funnel["suppressed_cooldown"]) == ((2, 0) if sent else (1, 1))
    assert [int(t) for t in run.actions["ts"]] == ([T0 + 2 * HOUR + 1000 * later] if sent else [])


def test_a_disabled_campaign_keeps_its_state_across_reloads(tmp_path):
    # A contacted at T0 + 1 h under a one-day cooldown; the campaign, disabled by one reload
    # and enabled by the next, still knows that contact (its cooldown, the streak) and dropped
    # B's pending action at its due time, counted as disabled.
    from engine.api import Engine
    config = reload_world(tmp_path, cooldown="1d")
    (tmp_path / "fans.txt").write_text(f"{A}\n{B}\n")
    engine = Engine.from_config(config)
    engine.replay(ev(T0), drain=True)
    engine.replay(ev(T0 + HOUR + 1, msisdn=B))
    assert engine.pending == 1
    config.write_text(RELOAD_CONFIG.format(cooldown="1d", life="enabled = false\n"))
    engine = engine.reload()
    engine.replay(ev(T0 + 3 * HOUR))                      # B's action falls due: dropped
    config.write_text(RELOAD_CONFIG.format(cooldown="1d", life="enabled = true\n"))
    engine = engine.reload()
    run = engine.replay(ev(T0 + DAY + HOUR - 1) + ev(T0 + DAY + HOUR), drain=True)
    assert [int(t) for t in run.actions["ts"]] == [T0 + DAY + 2 * HOUR]
    funnel = engine.stats["campaigns"]["c"]
    assert (funnel["matched"], funnel["disabled"], funnel["sent"]) == (3, 1, 2)
    view = engine._core.subscriber_view(A)["campaigns"][0]
    assert (view["contacted"], view["streak"], view["last_ts"]) == (True, 2, T0 + DAY + 2 * HOUR)
