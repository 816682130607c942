"""End to end: birthdays, network anniversaries and the missed-call alert offer (README.md
tells the story). Expected times are worked out here from the story, not taken from a run.
"""
import numpy as np
from click.testing import CliRunner

from engine.api import Engine
from engine.cli import main
from engine.records import FUNNEL

MINUTE = 60_000
DAY = 86_400_000
SATURDAY = 1_803_657_600_000    # 2027-02-27 00:00 at +08:00, day 0

AMY, BEN, CAI, DAN, EVE, FAY, HAL, IVY, GUS = (13800040001 + k for k in range(9))


def at(day: int, hh: int, mm: int) -> int:
    return SATURDAY + day * DAY + (hh * 60 + mm) * MINUTE


EXPECTED = [      # (msisdn, campaign, template, ts), every action immediate
    (FAY, "birthday", "BIRTHDAY_GREETING", at(0, 9, 0)),
    (BEN, "birthday", "BIRTHDAY_GREETING", at(1, 9, 10)),             # Feb 28 for Feb 29, after quiet hours
    (DAN, "network_anniversary", "NETWORK_ANNIVERSARY_BONUS", at(2, 10, 0)),
    (AMY, "birthday", "BIRTHDAY_GREETING", at(3, 12, 0)),             # 00:10 was in quiet hours
    (CAI, "network_anniversary", "NETWORK_ANNIVERSARY_BONUS", at(3, 12, 5)),
    (EVE, "missed_call_alerts", "MISSED_CALL_ALERT_OFFER", at(4, 10, 0)),   # the 4th power-on
    (AMY, "network_anniversary", "NETWORK_ANNIVERSARY_BONUS", at(6, 9, 0)),
]


def test_actions_are_the_story(replayed, rows):
    _, run, _ = replayed
    actions = rows(run.action_columns())
    assert [(a[3], a[2], a[5], a[1]) for a in actions] == EXPECTED
    assert all(a[4] == "sms" and a[6] == "send" and a[7] == a[1] for a in actions)
    # Hal and Gus never had four power-ons in one local day; Ivy's birth date is no day
    assert not {HAL, GUS, IVY} & {a[3] for a in actions}


def test_funnel(replayed):
    _, run, _ = replayed
    f = run.stats["campaigns"]
    # Ben at 07:30 and Amy at 00:10 local matched and were dropped by quiet hours; the next
    # event of the day greeted them (a dropped action sets no cooldown)
    assert (f["birthday"]["matched"], f["birthday"]["suppressed_quiet_hours"], f["birthday"]["sent"]) == (5, 2, 3)
    assert (f["network_anniversary"]["matched"], f["network_anniversary"]["sent"]) == (3, 3)
    assert (f["missed_call_alerts"]["matched"], f["missed_call_alerts"]["sent"]) == (1, 1)


def test_the_anniversary_follows_the_local_date_not_utc(example):
    # Amy's 00:10 power-on on March 2 local is 16:10 UTC on March 1: at +00:00 that event
    # would not be her birthday, and at +08:00 her 23:50 call on March 1 is not either
    engine = Engine.from_config(example.config)
    run = engine.replay(example.trace, drain=True)
    ts = [int(t) for t, c, m in zip(run.action_columns()["ts"], run.action_columns()["campaign"],
                                     run.action_columns()["msisdn"]) if c == "birthday" and m == AMY]
    assert ts == [at(3, 12, 0)]


def test_check_counts_the_values_that_are_not_dates(example):
    result = CliRunner().invoke(main, ["check", str(example.config)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "  birth_date: 2 values are not dates (YYYY-MM-DD); those subscribers never match an anniversary" in lines
    assert "  join_date: 0 values are not dates (YYYY-MM-DD); those subscribers never match an anniversary" in lines


def _funnels(stats) -> dict:
    return {cid: {k: f[k] for k in FUNNEL} for cid, f in stats["campaigns"].items()}


def _cut(trace: bytes, events: int) -> int:
    import msgpack
    unpacker = msgpack.Unpacker()
    unpacker.feed(trace)
    for _ in range(events):
        unpacker.unpack()
    return unpacker.tell()


def test_a_checkpoint_in_the_middle_gives_the_same_actions(example, tmp_path, replayed):
    _, whole, _ = replayed
    trace = example.trace.read_bytes()
    for events in (4, 12, 15, 22):          # before Ben's greeting, in Eve's burst, in Gus's evening
        cut = _cut(trace, events)
        first = Engine.from_config(example.config)
        a = first.replay(trace[:cut])
        first.checkpoint(tmp_path / f"cp{events}")
        second = Engine.from_config(example.config).restore(tmp_path / f"cp{events}")
        b = second.replay(trace[cut:], drain=True)
        assert np.array_equal(np.concatenate([a.actions, b.actions]), whole.actions), events
        assert _funnels(second.stats) == _funnels(whole.stats), events


def test_a_reload_in_the_middle_gives_the_same_actions(example, replayed):
    _, whole, _ = replayed
    trace = example.trace.read_bytes()
    for events in (4, 12, 15, 22):
        cut = _cut(trace, events)
        engine = Engine.from_config(example.config)
        a = engine.replay(trace[:cut])
        engine = engine.reload()
        b = engine.replay(trace[cut:], drain=True)
        assert np.array_equal(np.concatenate([a.actions, b.actions]), whole.actions), events
        assert _funnels(engine.stats) == _funnels(whole.stats), events


def test_reference_model_agrees(replayed, assert_reference_model_agrees):
    _, run, _ = replayed
    assert_reference_model_agrees(run)


def test_committed_files_come_from_make_trace(assert_make_trace_reproduces):
    assert_make_trace_reproduces()
