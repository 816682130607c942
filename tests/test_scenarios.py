"""Hand-built scenarios of SPEC §3 (what each event does) and §1.4 (the stream and its dead
letters), each on the smallest world that shows its rule. Every scenario runs twice, on the
Cython core and on the reference model (the `backend` fixture, tests/backends.py), with the
same expected actions, conversions, funnels and dead letters. The boundaries of every
comparison are in tests/test_boundaries.py."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import msgpack
import numpy as np
import pytest

from engine.language.config import EVENT_TYPES, CounterSpec, PolicySpec
from engine.errors import StreamError
from tests.backends import (
    DAY, HOUR, MINUTE, T0, A, B, C, CALL, LOC, OFFNET, ORDER, POWER_OFF, POWER_ON, SMS, STRANGER, Profiles,
    build, campaign, contacts, ev, funnel, run,
)

# ---------------------------------------------------------------------------- §3 semantics
def test_immediate_action_record(backend):
    m = run(build(backend, campaign(template="T1", channel="boss")), ev(T0, cell=42))
    assert m.actions == [(1, T0, "c", A, "boss", "T1", "send", T0, 42)]
    assert funnel(m, "c") == {"matched": 1, "sent": 1}


def test_late_event_takes_the_clock(backend):
    m = run(build(backend, campaign()), ev(T0 + 10), ev(T0 + 5, msisdn=B, cell=7))
    assert m.actions[1] == (2, T0 + 10, "c", B, "sms", "", "send", T0 + 10, 7)
    assert m.late_events == 1


def test_timers_fire_before_the_event_in_due_then_creation_order(backend):
    late = campaign("late", delay_ms=5 * MINUTE)
    now = campaign("now", on=(LOC,), priority=9)
    m = run(build(backend, late, now), ev(T0, msisdn=B), ev(T0, msisdn=A), ev(T0 + 5 * MINUTE, LOC, msisdn=C))
    assert contacts(m) == [(T0 + 5 * MINUTE, "late", B, "send"), (T0 + 5 * MINUTE, "late", A, "send"),
                           (T0 + 5 * MINUTE, "now", C, "send")]
    assert m.actions[0][7] == T0            # trigger_ts of a delayed action
    assert funnel(m, "late") == {"matched": 2, "scheduled": 2, "sent": 2}


def test_timer_due_now_goes_before_a_higher_priority_immediate_match(backend):
    # Step 1 runs before step 6, so at the same moment the timer's contact blocks through min_gap.
    low = campaign("low", delay_ms=5 * MINUTE)
    high = campaign("high", on=(LOC,), priority=9)
    m = run(build(backend, low, high, policy=PolicySpec(min_gap_ms=DAY)), ev(T0), ev(T0 + 5 * MINUTE, LOC))
    assert contacts(m) == [(T0 + 5 * MINUTE, "low", A, "send")]
    assert funnel(m, "high") == {"matched": 1, "suppressed_min_gap": 1}


def test_unknown_subscriber_counted_but_fires_timers(backend):
    m = run(build(backend, campaign(delay_ms=MINUTE)), ev(T0), ev(T0 + MINUTE, msisdn=STRANGER))
    assert m.unknown_subscribers == 1
    assert contacts(m) == [(T0 + MINUTE, "c", A, "send")]


def test_pending_action_blocks_a_second_match(backend):
    m = run(build(backend, campaign(delay_ms=HOUR)), ev(T0), ev(T0 + MINUTE))
    assert funnel(m, "c") == {"matched": 1, "scheduled": 1}
    m.drain()
    assert contacts(m) == [(T0 + HOUR, "c", A, "send")]


def test_area_and_enter(backend):
    m = build(backend, campaign(area="school", enter=True), areas={"school": {5, 6}})
    run(m, ev(T0, cell=5), ev(T0 + 1, cell=6), ev(T0 + 2, cell=0), ev(T0 + 3, cell=9),
        ev(T0 + 4, cell=5), ev(T0 + 5, msisdn=B, cell=0))
    # 6 after 5 is no entry; cell 0 is in no area and leaves the current cell (9) alone.
    assert [a[1] for a in m.actions] == [T0, T0 + 4]
    plain = run(build(backend, campaign(area="school"), areas={"school": {5}}), ev(T0, cell=5), ev(T0 + 1, cell=5))
    assert len(plain.actions) == 2


def test_recheck_area(backend):
    c = campaign(area="airport", delay_ms=20 * MINUTE, recheck=frozenset({"area"}))
    stayed = run(build(backend, c, areas={"airport": {1}}), ev(T0, cell=1), ev(T0 + MINUTE, LOC, cell=0), drain=True)
    assert contacts(stayed) == [(T0 + 20 * MINUTE, "c", A, "send")]
    left = run(build(backend, c, areas={"airport": {1}}), ev(T0, cell=1), ev(T0 + MINUTE, LOC, cell=2), drain=True)
    assert left.actions == [] and funnel(left, "c") == {"matched": 1, "scheduled": 1, "recheck_failed": 1}


def test_recheck_powered_on(backend):
    c = campaign(delay_ms=20 * MINUTE, recheck=frozenset({"powered_on"}))
    off = run(build(backend, c), ev(T0), ev(T0 + MINUTE, POWER_OFF), drain=True)
    assert funnel(off, "c")["recheck_failed"] == 1
    on_again = run(build(backend, c), ev(T0), ev(T0 + MINUTE, POWER_OFF), ev(T0 + 2 * MINUTE, POWER_ON), drain=True)
    assert len(on_again.actions) == 1
    unchecked = run(build(backend, campaign(delay_ms=20 * MINUTE)), ev(T0), ev(T0 + MINUTE, POWER_OFF), drain=True)
    assert len(unchecked.actions) == 1


def test_recheck_hours_and_audience(backend):
    c = campaign(hours=(9 * 60, 10 * 60), delay_ms=30 * MINUTE, audience="w",
                 recheck=frozenset({"hours", "audience"}))
    m = run(build(backend, c, lists={"w": {A}}), ev(T0 + 9 * HOUR + 30 * MINUTE), drain=True)
    assert funnel(m, "c") == {"matched": 1, "scheduled": 1, "recheck_failed": 1}     # due 10:00, end exclusive
    m = run(build(backend, c, lists={"w": {A}}), ev(T0 + 9 * HOUR + 30 * MINUTE - 1), drain=True)
    assert contacts(m) == [(T0 + 10 * HOUR - 1, "c", A, "send")]


def test_audience_exclude_blacklist_where_peer(backend):
    lists = {"w": {A, B}, "x": {B}, "dnd": {C}, "peers": {OFFNET}}
    m = build(backend, campaign(audience="w", exclude=("x",), peer_in="peers"),
              policy=PolicySpec(blacklist=("dnd",)), lists=lists)
    run(m, ev(T0, msisdn=A, peer=OFFNET), ev(T0, msisdn=B, peer=OFFNET), ev(T0, msisdn=C, peer=OFFNET),
        ev(T0 + 1, msisdn=A, peer=0), ev(T0 + 2, msisdn=A, peer=str(OFFNET)), ev(T0 + 3, msisdn=A, peer=A))
    assert contacts(m) == [(T0, "c", A, "send"), (T0 + 2, "c", A, "send")]
    assert funnel(m, "c") == {"matched": 2, "sent": 2}


def test_where_mask(backend):
    where = pytest.importorskip("engine.language.where")
    import pyarrow as pa
    profiles = Profiles(Path("p"), np.array([A, B, C], dtype=np.uint64),
                        {"arpu": pa.array([60, 10, None], type=pa.int64())})
    assert list(where.evaluate(where.parse("arpu >= 50"), profiles)) == [True, False, False]
    m = run(build(backend, campaign(where="arpu >= 50"), profiles=profiles),
            ev(T0, msisdn=A), ev(T0, msisdn=B), ev(T0, msisdn=C))
    assert contacts(m) == [(T0, "c", A, "send")]


def test_hours_days_local_time(backend):
    # +08:00; T0 is Thursday 08:00 local. Hours wrap midnight; days are local weekdays.
    c = campaign(hours=(22 * 60, 2 * 60), days=0b0010000)       # Friday only
    m = run(build(backend, c, utc_offset_ms=8 * HOUR),
            ev(T0 + 13 * HOUR + 59 * MINUTE),        # Thu 21:59
            ev(T0 + 14 * HOUR),                       # Thu 22:00: not Friday
            ev(T0 + 16 * HOUR, msisdn=B),             # Fri 00:00
            ev(T0 + 17 * HOUR + 59 * MINUTE, msisdn=C),   # Fri 01:59
            ev(T0 + 18 * HOUR))                       # Fri 02:00: end is exclusive
    assert contacts(m) == [(T0 + 16 * HOUR, "c", B, "send"), (T0 + 17 * HOUR + 59 * MINUTE, "c", C, "send")]
    before_epoch = run(build(backend, campaign(days=0b0001000)), ev(0))   # 1970-01-01, a Thursday
    assert len(before_epoch.actions) == 1


def test_quiet_hours_and_exempt(backend):
    policy = PolicySpec(quiet_hours=(22 * 60, 8 * 60))
    m = build(backend, campaign("a"), campaign("notice", exempt=frozenset({"quiet_hours"})),
              policy=policy, utc_offset_ms=8 * HOUR)
    run(m, ev(T0 - HOUR), ev(T0, msisdn=B))          # local 07:00 and 08:00
    assert contacts(m) == [(T0 - HOUR, "notice", A, "send"), (T0, "a", B, "send"), (T0, "notice", B, "send")]
    assert funnel(m, "a") == {"matched": 2, "suppressed_quiet_hours": 1, "sent": 1}


def test_min_gap_priority_order(backend):
    policy = PolicySpec(min_gap_ms=DAY)
    m = run(build(backend, campaign("a", priority=1), campaign("b", priority=5), campaign("c", priority=1),
                  policy=policy), ev(T0), ev(T0 + DAY - 1, msisdn=A), ev(T0 + DAY))
    assert contacts(m) == [(T0, "b", A, "send"), (T0 + DAY, "b", A, "send")]
    assert funnel(m, "a") == {"matched": 3, "suppressed_min_gap": 3}
    # same priority: id order; exempt campaigns pass and still count as contacts
    m = run(build(backend, campaign("b"), campaign("a", exempt=frozenset({"min_gap"})), policy=policy), ev(T0))
    assert contacts(m) == [(T0, "a", A, "send")]
    m = run(build(backend, campaign("a"), campaign("b", exempt=frozenset({"min_gap"})), policy=policy), ev(T0))
    assert contacts(m) == [(T0, "a", A, "send"), (T0, "b", A, "send")]


def test_max_per_day_across_local_midnight(backend):
    m = build(backend, campaign(), policy=PolicySpec(max_per_day=1), utc_offset_ms=8 * HOUR)
    midnight = T0 + 16 * HOUR                        # 00:00 local on Friday
    run(m, ev(midnight - MINUTE), ev(midnight - 1), ev(midnight), ev(midnight + 1))
    assert [a[1] for a in m.actions] == [midnight - MINUTE, midnight]
    assert funnel(m, "c") == {"matched": 4, "suppressed_max_per_day": 2, "sent": 2}
    exempt = run(build(backend, campaign(exempt=frozenset({"max_per_day"})), policy=PolicySpec(max_per_day=1)),
                 ev(T0), ev(T0 + 1))
    assert len(exempt.actions) == 2


def test_cooldown_and_once(backend):
    m = run(build(backend, campaign(cooldown_ms=HOUR)), ev(T0), ev(T0 + HOUR - 1), ev(T0 + HOUR))
    assert [a[1] for a in m.actions] == [T0, T0 + HOUR]
    assert funnel(m, "c") == {"matched": 2, "sent": 2}          # cooldown is a match condition
    m = run(build(backend, campaign(once=True)), ev(T0), ev(T0 + DAY), ev(T0 + DAY, msisdn=B))
    assert contacts(m) == [(T0, "c", A, "send"), (T0 + DAY, "c", B, "send")]


def test_stop_after_and_conversion_resets_streak(backend):
    c = campaign(stop_after=2, convert_on=(ORDER,))
    m = run(build(backend, c), ev(T0), ev(T0 + 1), ev(T0 + 2), ev(T0 + 3, ORDER), ev(T0 + 4), ev(T0 + 5), ev(T0 + 6))
    assert [a[1] for a in m.actions] == [T0, T0 + 1, T0 + 4, T0 + 5]
    assert m.conversions == [(1, T0 + 3, "c", A, 2, "send")]     # the last contact converts
    assert funnel(m, "c") == {"matched": 4, "sent": 4, "converted_send": 1}


def test_conversion_window_arg_and_only_once(backend):
    c = campaign(convert_on=(ORDER,), convert_arg=3001, convert_within_ms=HOUR)
    m = run(build(backend, c), ev(T0), ev(T0 + MINUTE, ORDER, arg=3002), ev(T0 + 2 * MINUTE, ORDER, arg=3001),
            ev(T0 + 3 * MINUTE, ORDER, arg=3001))
    assert m.conversions == [(1, T0 + 2 * MINUTE, "c", A, 1, "send")]
    late = run(build(backend, c), ev(T0), ev(T0 + HOUR, ORDER, arg=3001))            # window is exclusive
    assert late.conversions == []
    just = run(build(backend, c), ev(T0), ev(T0 + HOUR - 1, ORDER, arg=3001))
    assert len(just.conversions) == 1
    never = run(build(backend, c), ev(T0, ORDER, arg=3001))                           # no contact yet
    assert never.conversions == []


def test_conversions_before_matching_and_in_campaign_order(backend):
    # One ORDER converts both campaigns (order: priority) and then triggers "b" again.
    a = campaign("a", on=(CALL,), priority=2, convert_on=(ORDER,))
    b = campaign("b", on=(CALL, ORDER), convert_on=(ORDER,))
    m = run(build(backend, a, b), ev(T0), ev(T0 + 1, ORDER))
    assert [(x[2], x[4]) for x in m.conversions] == [("a", 1), ("b", 2)]
    assert contacts(m)[-1] == (T0 + 1, "b", A, "send")


def test_holdout_control_and_send(backend):
    c = campaign("offer", holdout=0.5, convert_on=(ORDER,))
    m = run(build(backend, c), *[ev(T0, msisdn=x) for x in (A, B, C)], *[ev(T0 + 1, ORDER, msisdn=x) for x in (A, B, C)])
    expected = ["control" if zlib.crc32(f"{x}:offer".encode()) % 10000 < 5000 else "send" for x in (A, B, C)]
    assert [a[6] for a in m.actions] == expected
    assert [x[5] for x in m.conversions] == expected
    assert len(set(expected)) == 2                  # these numbers show both kinds
    f = funnel(m, "offer")
    assert f.get("control", 0) == f.get("converted_control", 0) == expected.count("control")
    all_control = run(build(backend, campaign(holdout=1.0)), ev(T0))
    assert all_control.actions[0][6] == "control"
    # crc32("13800000001:promo") % 10000 == 129: the threshold is strict
    assert zlib.crc32(f"{A}:promo".encode()) % 10000 == 129
    assert run(build(backend, campaign("promo", holdout=0.0129)), ev(T0)).actions[0][6] == "send"
    assert run(build(backend, campaign("promo", holdout=0.013)), ev(T0)).actions[0][6] == "control"


def test_windowed_counter_reset_and_read_as_zero(backend):
    sms = CounterSpec("sms", on=(SMS,), flags=0, add="count", window_ms=HOUR)
    m = build(backend, campaign(counter="sms", at_least=2), counters=[sms])
    run(m, ev(T0, SMS), ev(T0 + 10 * MINUTE, SMS), ev(T0 + 30 * MINUTE),
        ev(T0 + 61 * MINUTE),                        # window passed: reads 0
        ev(T0 + 70 * MINUTE, SMS),                   # resets to 0, then 1 from here
        ev(T0 + 100 * MINUTE),
        ev(T0 + 110 * MINUTE, SMS),                  # 2 within the new window
        ev(T0 + 129 * MINUTE))
    assert [a[1] for a in m.actions] == [T0 + 30 * MINUTE, T0 + 129 * MINUTE]


def test_counter_add_flags_and_saturation(backend):
    minutes = CounterSpec("roam", on=(CALL,), flags=2, add="dur_minutes", window_ms=None)
    m = build(backend, campaign(on=(SMS,), counter="roam", at_least=3), counters=[minutes])
    run(m, ev(T0, dur=61, flags=2), ev(T0 + 1, SMS), ev(T0 + 2, dur=600, flags=1),
        ev(T0 + 3, SMS), ev(T0 + 4, dur=1, flags=7), ev(T0 + 5, SMS))
    assert [a[1] for a in m.actions] == [T0 + 5]     # ceil(61/60) + ceil(1/60) = 3; flags 1 lacks roaming
    seconds = CounterSpec("s", on=(CALL,), flags=0, add="dur", window_ms=None)
    m = build(backend, campaign(on=(SMS,), counter="s", at_least=2**32 - 1), counters=[seconds])
    run(m, ev(T0, dur=2**32 - 2), ev(T0 + 1, SMS), ev(T0 + 2, dur=2**64 - 1), ev(T0 + 3, dur=5),
        ev(T0 + 4, SMS))
    assert [a[1] for a in m.actions] == [T0 + 4]
    assert m.counter_value(0, "s", T0 + 4) == 2**32 - 1


def test_when_receives_many_long_distance_calls_makes_few(backend):
    # SPEC §2.1's long_distance_pack: ld_in >= 3 * ld_out + 2, on CALL_MT_END
    ld_out = CounterSpec("ld_out", on=(CALL,), flags=1, add="count", window_ms=None)
    ld_in = CounterSpec("ld_in", on=(2,), flags=1, add="count", window_ms=None)
    c = campaign("ld", on=(2,), when="ld_in >= 3 * ld_out + 2", cooldown_ms=DAY)
    m = build(backend, c, counters=[ld_out, ld_in])
    run(m, ev(T0, CALL, flags=1),                           # ld_out = 1: needs ld_in >= 5
        *[ev(T0 + k, 2, flags=1) for k in range(1, 5)],     # ld_in 1..4: no
        ev(T0 + 5, 2, flags=0),                             # not long distance: not counted, 4 < 5
        ev(T0 + 6, 2, flags=1),                             # ld_in = 5: matches
        ev(T0 + 7, 2, flags=1, msisdn=B))                   # B: ld_in = 1 >= 2? no
    assert contacts(m) == [(T0 + 6, "ld", A, "send")]
    assert funnel(m, "ld") == {"matched": 1, "sent": 1}


def test_when_and_the_counter_condition_both_hold(backend):
    # the old `counter = { name, at_least }` stays, and both must hold
    sms = CounterSpec("sms", on=(SMS,), flags=0, add="count", window_ms=None)
    calls = CounterSpec("calls", on=(CALL,), flags=0, add="count", window_ms=None)
    c = campaign(on=(LOC,), counter="sms", at_least=2, when="calls < 2 and not sms == 3")
    m = build(backend, c, counters=[sms, calls])
    run(m, ev(T0, SMS), ev(T0 + 1, LOC),                     # sms 1: at_least fails
        ev(T0 + 2, SMS), ev(T0 + 3, LOC),                   # sms 2, calls 0: match
        ev(T0 + 4, SMS), ev(T0 + 5, LOC),                   # sms 3: `not sms == 3` fails
        ev(T0 + 6, SMS), ev(T0 + 7, LOC),                   # sms 4: match
        ev(T0 + 8), ev(T0 + 9), ev(T0 + 10, LOC))           # calls 2: fails
    assert [a[1] for a in m.actions if a[2] == "c"] == [T0 + 3, T0 + 7]


def test_when_power_cycles_with_once(backend):
    # SPEC §2.1's missed_call_alerts: the fourth POWER_ON in the counter's window, once ever
    cycles = CounterSpec("power_cycles", on=(POWER_ON,), flags=0, add="count", window_ms=DAY)
    m = build(backend, campaign("alert", on=(POWER_ON,), when="power_cycles >= 4", once=True), counters=[cycles])
    run(m, *[ev(T0 + k * HOUR, POWER_ON) for k in range(6)], *[ev(T0 + 2 * DAY + k, POWER_ON) for k in range(5)])
    assert contacts(m) == [(T0 + 3 * HOUR, "alert", A, "send")]


def test_anniversary_birthday_once_a_year(backend):
    import pyarrow as pa
    profiles = Profiles(Path("p"), np.array([A, B, C], dtype=np.uint64),
                        {"birth_date": pa.array(["1990-01-02", "2000-02-29", "not a date"])})
    c = campaign("birthday", on=(POWER_ON, CALL, SMS), anniversary="birth_date", cooldown_ms=300 * DAY)
    m = build(backend, c, profiles=profiles, utc_offset_ms=8 * HOUR)
    # T0 is 2026-01-01 08:00 local: A's birthday is tomorrow (local)
    run(m, ev(T0, POWER_ON), ev(T0 + 15 * HOUR + 59 * MINUTE, SMS),     # still Jan 1 local (23:59)
        ev(T0 + 16 * HOUR, SMS),                                         # Jan 2 local 00:00
        ev(T0 + 20 * HOUR, CALL),                                        # again: cooldown
        ev(T0 + 20 * HOUR, CALL, msisdn=C),                              # never a date
        ev(T0 + 365 * DAY + 16 * HOUR, CALL))                            # 2027-01-02 local
    assert contacts(m) == [(T0 + 16 * HOUR, "birthday", A, "send"), (T0 + 365 * DAY + 16 * HOUR, "birthday", A, "send")]
    assert funnel(m, "birthday") == {"matched": 2, "sent": 2}


def test_max_pending_overflow(backend):
    m = run(build(backend, campaign(delay_ms=HOUR), max_pending=1), ev(T0), ev(T0, msisdn=B), drain=True)
    assert funnel(m, "c") == {"matched": 2, "scheduled": 1, "overflow": 1, "sent": 1}
    assert contacts(m) == [(T0 + HOUR, "c", A, "send")]


def test_drain_moves_the_clock(backend):
    m = build(backend, campaign("d", delay_ms=HOUR), campaign("now", on=(LOC,)))
    run(m, ev(T0), ev(T0 + MINUTE, msisdn=B))
    assert m.actions == []
    m.drain()
    assert [a[1] for a in m.actions] == [T0 + HOUR, T0 + HOUR + MINUTE]
    run(m, ev(T0 + 2 * MINUTE, LOC, msisdn=C))       # earlier than the drained clock
    assert m.actions[-1][1] == T0 + HOUR + MINUTE and m.actions[-1][7] == T0 + HOUR + MINUTE


def test_state_carries_over_feeds(backend):
    m = build(backend, campaign(cooldown_ms=DAY))
    m.feed(ev(T0))
    m.finish()
    m.feed(ev(T0 + HOUR))
    m.finish()
    assert len(m.actions) == 1


# ---------------------------------------------------------------------------- §1.4 the stream
def uint(v, code):
    fmt = {0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q", 0xd0: ">b", 0xd1: ">h", 0xd2: ">i", 0xd3: ">q"}
    return bytes([code]) + struct.pack(fmt[code], v)


def array(*items: bytes) -> bytes:
    return bytes([0x90 | len(items)]) + b"".join(items)


def outcome(backend, data, **kw):
    m = build(backend, campaign(on=tuple(range(1, 13))), lists={"p": {OFFNET}}, **kw)
    m.feed(data)
    m.finish()
    return m.actions, m.dead_letters


def letters(backend, data, **kw):
    """(offset, reason, field) of each dead letter."""
    return [d[:3] for d in outcome(backend, data, **kw)[1]]


def test_every_integer_encoding_everywhere(backend):
    codes = [0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3]
    small = {0xcc: 2**8, 0xcd: 2**16, 0xce: 2**32, 0xcf: 2**64, 0xd0: 2**7, 0xd1: 2**15, 0xd2: 2**31, 0xd3: 2**63}
    values = [T0, CALL, A, OFFNET, 77, 30, 3, 3001]
    for code in codes:
        fields = [uint(v, code) if v < small[code] else msgpack.packb(v) for v in values]
        m = run(build(backend, campaign()), array(*fields))
        assert m.dead_letters == [], hex(code)
        assert m.actions == [(1, T0, "c", A, "sms", "", "send", T0, 77)]
    fix = run(build(backend, campaign()), array(uint(T0, 0xcf), b"\x01", uint(A, 0xcf), b"\x00", b"\x7f"))
    assert fix.actions[0][8] == 127


def test_nil_and_missing_optional_fields_are_zero(backend):
    m = run(build(backend, campaign()), msgpack.packb([T0, CALL, A, None, None, None, None, None]),
            msgpack.packb([T0, CALL, A]), msgpack.packb({"msisdn": A, "type": CALL, "ts": T0}))
    assert [a[8] for a in m.actions] == [0, 0, 0] and m.dead_letters == []


@pytest.mark.parametrize("event, reason", [
    ("hello", "not_an_event"), (42, "not_an_event"), (None, "not_an_event"), (b"bin", "not_an_event"),
    ([T0, CALL], "missing_field"), ([None, CALL, A], "missing_field"), ({"ts": T0, "type": CALL}, "missing_field"),
    ([T0, None, A], "missing_field"), ([T0, CALL, None], "missing_field"),
    ([True, CALL, A], "wrong_type"), ([1.5, CALL, A], "wrong_type"), ([str(T0), CALL, A], "wrong_type"),
    ([T0, 1.0, A], "wrong_type"), ([T0, True, A], "wrong_type"), ([T0, b"CALL_MO_END", A], "wrong_type"),
    ([T0, CALL, False], "wrong_type"), ([T0, CALL, float(A)], "wrong_type"), ([T0, CALL, [A]], "wrong_type"),
    ([T0, CALL, A, True], "wrong_type"), ([T0, CALL, A, 0, "5"], "wrong_type"), ([T0, CALL, A, 0, 0, 1.0], "wrong_type"),
    ([T0, CALL, A, 0, 0, 0, {"x": 1}], "wrong_type"), ([T0, CALL, A, 0, 0, 0, 0, b"\x01"], "wrong_type"),
    ([T0, CALL, A, 0, 0, 0, 0, msgpack.ExtType(1, b"x")], "wrong_type"),
    ([-1, CALL, A], "out_of_range"), ([2**53, CALL, A], "out_of_range"), ([T0, -1, A], "out_of_range"),
    ([T0, CALL, 0], "out_of_range"), ([T0, CALL, 10**15], "out_of_range"), ([T0, CALL, -A], "out_of_range"),
    ([T0, CALL, A, 10**15], "out_of_range"), ([T0, CALL, A, -1], "out_of_range"),
    ([T0, CALL, A, 0, 2**32], "out_of_range"), ([T0, CALL, A, 0, 0, -1], "out_of_range"),
    ([T0, CALL, A, 0, 0, 0, -1], "out_of_range"), ([T0, CALL, A, 0, 0, 0, 0, -2**63], "out_of_range"),
    ([T0, CALL, "0138"], "bad_number"), ([T0, CALL, ""], "bad_number"), ([T0, CALL, "1" * 16], "bad_number"),
    ([T0, CALL, "+8613800000001"], "bad_number"), ([T0, CALL, "１３８"], "bad_number"),
    ([T0, CALL, " 138"], "bad_number"), ([T0, CALL, A, "0"], "bad_number"), ([T0, CALL, A, "12a"], "bad_number"),
    ([T0, 0, A], "unknown_type"), ([T0, 13, A], "unknown_type"), ([T0, 2**64 - 1, A], "unknown_type"),
    ([T0, "call_mo_end", A], "unknown_type"), ([T0, "1", A], "unknown_type"), ([T0, "", A], "unknown_type"),
    ([-1, 99, "x"], "out_of_range"), ([T0, 99, "x"], "unknown_type"), ([T0, CALL, "x", -1], "bad_number"),
])
def test_dead_letter_reasons(backend, event, reason):
    data = ev(T0, msisdn=B) + msgpack.packb(event, use_bin_type=True)
    actions, dead = outcome(backend, data)
    assert [d[:2] for d in dead] == [(len(ev(T0, msisdn=B)), reason)]
    assert dead[0][3:] == (1, msgpack.packb(event, use_bin_type=True)[:64].hex())
    assert [a[3] for a in actions] == [B]


def test_bad_events_counted_and_good_ones_kept(backend):
    m = run(build(backend, campaign()), ev(T0), msgpack.packb("x"), ev(T0 + 1, msisdn=B), msgpack.packb([T0, 99, A]))
    assert len(m.actions) == 2
    assert {k: v for k, v in m.bad_events.items() if v} == {"not_an_event": 1, "unknown_type": 1}
    assert [d[0] for d in m.dead_letters] == [len(ev(T0)), 2 * len(ev(T0)) + 2]


def test_type_names_and_custom_types(backend):
    types = {**EVENT_TYPES, "TOP_UP": 40}
    m = run(build(backend, campaign(on=(40, SMS)), event_types=types),
            msgpack.packb([T0, "TOP_UP", A]), msgpack.packb([T0, 40, B]), msgpack.packb([T0, "SMS_MO", C]),
            msgpack.packb([T0, 41, A]), msgpack.packb([T0, "Top_Up", A]))
    assert [a[3] for a in m.actions] == [A, B, C]
    assert [d[1] for d in m.dead_letters] == ["unknown_type", "unknown_type"]


def test_digit_string_msisdn_and_peer(backend):
    m = run(build(backend, campaign(peer_in="p"), lists={"p": {OFFNET}}), msgpack.packb([T0, CALL, str(A), str(OFFNET)]),
            msgpack.packb([T0, CALL, "999999999999999", str(OFFNET)]))
    assert [a[3] for a in m.actions] == [A] and m.unknown_subscribers == 1 and m.dead_letters == []


def test_invalid_utf8_bad_only_where_read(backend):
    bad_str = b"\xa2\xff\xfe"
    assert outcome(backend, array(msgpack.packb(T0), b"\x01", msgpack.packb(A), *[b"\x00"] * 5, bad_str))[1] == []
    assert letters(backend, array(msgpack.packb(T0), b"\x01", bad_str)) == [(0, "bad_number", "msisdn")]
    assert letters(backend, array(msgpack.packb(T0), bad_str, msgpack.packb(A))) == [(0, "unknown_type", "type")]
    assert letters(backend, array(msgpack.packb(T0), b"\x01", msgpack.packb(A), bad_str)) == [(0, "bad_number", "peer")]
    unknown_key = b"\x84" + msgpack.packb("ts") + msgpack.packb(T0) + msgpack.packb("type") + b"\x01" \
        + msgpack.packb("msisdn") + msgpack.packb(A) + bad_str + bad_str
    actions, dead = outcome(backend, unknown_key)
    assert dead == [] and len(actions) == 1


def test_map_form_unknown_and_duplicate_keys(backend):
    good = {"note": [1, {"x": None}], "ts": T0, "type": "CALL_MO_END", "msisdn": A, "cell": 5, 7: "seven"}
    actions, dead = outcome(backend, msgpack.packb(good))
    assert dead == [] and actions[0][8] == 5
    bin_key = b"\x84" + msgpack.packb(b"ts", use_bin_type=True) + msgpack.packb(-1) + msgpack.packb(
        {"ts": T0, "type": CALL, "msisdn": A})[1:]
    assert outcome(backend, bin_key)[1] == []                # a bin "ts" is an unknown key
    pairs = [("ts", T0), ("type", CALL), ("msisdn", A), ("peer", 1), ("peer", 2)]
    dup = bytes([0x80 | len(pairs)]) + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in pairs)
    assert letters(backend, dup) == [(0, "duplicate_key", "peer")]
    # duplicate_key comes before any field's own reason; unknown keys may repeat
    dup_first = b"\x83" + msgpack.packb("ts") + msgpack.packb(-1) + msgpack.packb("ts") + msgpack.packb(1.5) \
        + msgpack.packb("type") + msgpack.packb(99)
    assert letters(backend, dup_first) == [(0, "duplicate_key", "ts")]
    rep = b"\x85" + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in
                             [("x", 1), ("x", 2), ("ts", T0), ("type", CALL), ("msisdn", A)])
    assert outcome(backend, rep)[1] == []


def test_extra_array_elements_ignored_unread(backend):
    deep = b"\x91" * 5000 + b"\x01"                  # deeper than msgpack-python's own stack
    odd = b"\xd4\xff\x00"                             # ext -1 that is no valid timestamp
    data = array(*[msgpack.packb(v) for v in [T0, CALL, A, 0, 6, 0, 0, 0]], deep, odd)
    actions, dead = outcome(backend, data, max_event_bytes=1 << 16)
    assert dead == [] and actions[0][8] == 6
    assert outcome(backend, msgpack.packb([T0, CALL, A, 0, 0, 0, 0, 0, 1.5, "x", None]))[1] == []


def stream():
    return b"".join([ev(T0), msgpack.packb({"ts": T0 + 1, "type": "CALL_MO_END", "msisdn": str(B), "z": "q" * 40}),
                     msgpack.packb([T0, 99, A]), msgpack.packb([T0 + 2, CALL, C, 0, 3, 0, 0, 0, [1, [2, [3]]]]),
                     ev(T0 + 3, msisdn=STRANGER)])


def test_split_at_every_byte_gives_the_same_result(backend):
    data = stream()
    whole = build(backend, campaign(delay_ms=1))
    whole.feed(data)
    whole.finish()
    assert len(whole.actions) == 3 and len(whole.dead_letters) == 1
    for cut in range(len(data) + 1):
        m = build(backend, campaign(delay_ms=1))
        m.feed(data[:cut])
        m.feed(data[cut:])
        m.finish()
        assert (m.actions, m.dead_letters, m.unknown_subscribers) == \
               (whole.actions, whole.dead_letters, whole.unknown_subscribers), cut


def test_byte_by_byte_feed(backend):
    data = stream()
    m = build(backend, campaign())
    for k in range(len(data)):
        m.feed(data[k:k + 1])
    m.finish()
    assert len(m.actions) == 3 and m.dead_letters == [(len(ev(T0)) + len(msgpack.packb(
        {"ts": T0 + 1, "type": "CALL_MO_END", "msisdn": str(B), "z": "q" * 40})), "unknown_type", "type", 1,
        msgpack.packb([T0, 99, A]).hex())]


def test_truncated_tail(backend):
    data = ev(T0) + ev(T0 + 1, msisdn=B)
    for cut in range(len(ev(T0)) + 1, len(data)):
        m = build(backend, campaign())
        m.feed(data[:cut])
        with pytest.raises(StreamError) as err:
            m.finish()
        assert (err.value.offset, err.value.reason) == (len(ev(T0)), "truncated")
        assert len(m.actions) == 1                  # everything before stays processed


def test_corrupt_byte(backend):
    first = ev(T0)
    for bad in [b"\xc1", array(b"\x01", b"\x02", b"\xc1"), array(b"\x01", b"\x02", b"\x03", b"\x91\x91\xc1")]:
        m = build(backend, campaign())
        with pytest.raises(StreamError) as err:
            run(m, first + bad + ev(T0 + 1))
        assert (err.value.offset, err.value.reason) == (len(first), "corrupt")
        assert len(m.actions) == 1
    # 0xc1 inside a string is data, not a corrupt stream
    assert outcome(backend, msgpack.packb([T0, CALL, A, 0, 0, 0, 0, 0, "\xc1"]))[1] == []


def test_split_corrupt_byte_names_the_event_that_began_earlier(backend):
    m = build(backend, campaign())
    with pytest.raises(StreamError) as err:
        m.feed(ev(T0) + b"\x93\x01")
        m.feed(b"\xc1")
        m.finish()
    assert (err.value.offset, err.value.reason) == (len(ev(T0)), "corrupt")
    assert len(m.actions) == 1


def test_event_longer_than_max_event_bytes(backend):
    limit = 80
    fits = msgpack.packb([T0, CALL, A, 0, 0, 0, 0, 0, "x" * 40])     # str8 header either way
    pad = limit - len(fits)
    exact = msgpack.packb([T0, CALL, A, 0, 0, 0, 0, 0, "x" * (40 + pad)])
    assert len(exact) == limit
    assert len(outcome(backend, exact, max_event_bytes=limit)[0]) == 1
    over = msgpack.packb([T0, CALL, A, 0, 0, 0, 0, 0, "x" * (41 + pad)])
    for feed in ([over], [over[:10], over[10:]], [over[k:k + 1] for k in range(len(over))]):
        m = build(backend, campaign(), max_event_bytes=limit)
        m.feed(exact)
        with pytest.raises(StreamError) as err:
            for part in feed:
                m.feed(part)
            m.finish()
        assert (err.value.offset, err.value.reason) == (limit, "too_large")
        assert len(m.actions) == 1
    # a claimed length or count proves it before the bytes arrive
    for claim in [b"\xdb\x00\x01\x00\x00", b"\xdd\x00\x01\x00\x00", b"\x93\x01\x02\xc6\x00\x00\x01\x00"]:
        m = build(backend, campaign(), max_event_bytes=limit)
        with pytest.raises(StreamError) as err:
            run(m, claim)
        assert (err.value.offset, err.value.reason) == (0, "too_large")


# ---------------------------------------------------------------------------- the model's own feed()
# The model raises as soon as a feed() shows the stream broken, and refuses anything after;
# the core reports it from the replay (the API), which the scenarios above check on both.
def test_model_reports_a_split_corrupt_byte_on_the_feed_that_sees_it():
    m = build("model", campaign())
    m.feed(ev(T0) + b"\x93\x01")
    with pytest.raises(StreamError) as err:
        m.feed(b"\xc1")
    assert err.value.offset == len(ev(T0))


def test_model_refuses_bytes_after_a_broken_stream():
    m = build("model", campaign())
    m.feed(ev(T0) + ev(T0 + 1)[:3])
    with pytest.raises(StreamError):
        m.finish()
    with pytest.raises(StreamError):
        m.feed(b"")
