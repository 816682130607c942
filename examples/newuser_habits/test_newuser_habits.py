"""End to end: the new-subscriber usage-habit programme (README.md tells the story).

Expected times are worked out here from the story, not taken from a previous run.
"""
import dataclasses
import json

from engine.api import Engine
from engine.language.config import load_config

MINUTE = 60_000
DAY = 86_400_000
MONDAY = 1_791_129_600_000      # 2026-10-05 00:00 at +08:00, day 0

NAN, OLE, SUE, RUI = 13800030001, 13800030002, 13800030004, 13800030005


def at(day: int, hh: int, mm: int) -> int:
    return MONDAY + day * DAY + (hh * 60 + mm) * MINUTE


# Every action is immediate: its time is the time of the event that triggered it.
EXPECTED = [      # (msisdn, campaign, kind, ts) in emission order
    (NAN, "ld_intro", "send", at(0, 10, 0)),       # Nan's 1st long-distance call
    (OLE, "ld_intro", "send", at(0, 11, 0)),       # Ole's 1st
    (SUE, "sms_intro", "send", at(10, 9, 30)),     # Sue's 1st SMS
    (RUI, "roam_rebate", "send", at(14, 9, 0)),    # 25 + 21 + 14 = 60 roaming minutes
    (SUE, "ld_intro", "send", at(20, 9, 30)),      # day 12's call was 2 days after the SMS intro
    (NAN, "ld_target", "send", at(25, 10, 0)),     # 5th call: the promotion first ...
    (NAN, "ld_rebate", "send", at(25, 10, 0)),     # ... then the rebate, exempt from min_gap
    (OLE, "ld_target", "send", at(65, 11, 0)),     # 5th call, but 65 days after his 1st
    (OLE, "ld_rebate", "send", at(69, 11, 0)),     # days 65-69: 5 calls in his new window
]
CHANNELS = {"ld_intro": "sms", "sms_intro": "sms", "ld_target": "sms", "ld_rebate": "boss", "roam_rebate": "boss"}


def test_actions_are_the_story(replayed, rows):
    _, run, _ = replayed
    actions = rows(run.action_columns())
    assert [(a[3], a[2], a[6], a[1]) for a in actions] == EXPECTED
    for seq, ts, campaign, msisdn, channel, template, kind, trigger_ts, cell in actions:
        assert channel == CHANNELS[campaign]
        assert trigger_ts == ts
    # Old, Dora (do not disturb) and Stan (staff) get nothing; nobody gets a step twice.
    assert {a[3] for a in actions} == {NAN, OLE, SUE, RUI}
    assert len({(a[3], a[2]) for a in actions}) == len(actions)


def test_funnel(replayed):
    _, run, _ = replayed
    f = run.stats["campaigns"]
    assert f["ld_intro"]["matched"] == 4              # Nan, Ole, Sue twice
    assert f["ld_intro"]["suppressed_min_gap"] == 1   # Sue on day 12
    assert f["ld_rebate"]["matched"] == f["ld_rebate"]["sent"] == 2
    assert f["ld_target"]["converted_send"] == 1
    assert sum(c["sent"] for c in f.values()) == len(EXPECTED)
    assert run.stats["run"]["unknown_subscribers"] == 1   # the off-net caller


def test_order_converts_the_promotion(replayed, rows):
    _, run, _ = replayed
    actions = rows(run.action_columns())
    promotion = next(a[0] for a in actions if (a[3], a[2]) == (NAN, "ld_target"))
    # Nan's ORDER of offer 5005 on day 40 (15 days after the promotion); Ole's order of
    # another offer (7777) converts nothing.
    assert rows(run.conversion_columns()) == [(1, at(40, 12, 0), "ld_target", NAN, promotion, "send")]


def test_files_per_channel(replayed, rows, written):
    _, run, out = replayed
    assert sorted(p.name for p in out.iterdir()) == [".sigmatch-out.lock", "boss", "conversions", "sms", "stats.json"]
    actions = rows(run.action_columns())
    for channel in ("sms", "boss"):
        assert (written(out / channel, "actions-*.csv", ("seq", "campaign", "msisdn", "template"))
                == [(a[0], a[2], a[3], a[5]) for a in actions if a[4] == channel])
    rebates = [a for a in actions if a[4] == "boss"]
    assert {(a[3], a[5]) for a in rebates} == {(NAN, "LD_REBATE_10"), (OLE, "LD_REBATE_10"), (RUI, "ROAM_REBATE_60MIN")}
    assert written(out / "conversions", "conversions-*.csv", ("campaign",)) == [("ld_target",)]
    assert json.loads((out / "stats.json").read_text())["run"]["actions"] == len(EXPECTED)


def test_without_once_the_rebate_would_be_paid_again(example):
    """`once` is what keeps the rebate single: without it Nan's 6th call (day 30, still 6 in
    the window) and the refilled window (days 70-74) would pay again."""
    config = load_config(example.config)
    campaigns = tuple(dataclasses.replace(c, once=False) if c.id == "ld_rebate" else c for c in config.campaigns)
    run = Engine(dataclasses.replace(config, campaigns=campaigns)).replay(example.trace, drain=True)
    cols = run.action_columns()
    nan_rebates = [int(ts) for ts, c, m in zip(cols["ts"], cols["campaign"], cols["msisdn"])
                   if c == "ld_rebate" and m == NAN]
    assert nan_rebates == [at(25, 10, 0), at(30, 10, 0), at(74, 10, 0)]


def test_reference_model_agrees(replayed, assert_reference_model_agrees):
    _, run, _ = replayed
    assert_reference_model_agrees(run)


def test_committed_files_come_from_make_trace(assert_make_trace_reproduces):
    assert_make_trace_reproduces("lists/dnd.roar")
