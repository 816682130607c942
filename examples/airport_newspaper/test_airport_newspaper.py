"""End to end: the airport mobile-newspaper programme (README.md tells the story).

Expected times are worked out here from the story, not taken from a previous run.
"""
import json

from engine.api import Engine

MINUTE = 60_000
MONDAY = 1_791_129_600_000      # 2026-10-05 00:00 at +08:00

AMY, HAO = 13800020001, 13800020008


def at(hh: int, mm: int) -> int:
    return MONDAY + (hh * 60 + mm) * MINUTE


# (msisdn, campaign, kind, ts): 20 minutes after entering, for the two who stayed, powered on.
EXPECTED = {
    (AMY, "airport_newspaper", "send", at(8, 20)),    # entered 08:00
    (HAO, "airport_newspaper", "send", at(21, 50)),   # switched on at the airport 21:30
}
TRIGGERS = {AMY: (at(8, 0), 8801), HAO: (at(21, 30), 8802)}


def test_actions_are_the_story(replayed, rows):
    _, run, _ = replayed
    actions = rows(run.action_columns())
    assert {(a[3], a[2], a[6], a[1]) for a in actions} == EXPECTED
    assert len(actions) == len(EXPECTED)
    for seq, ts, campaign, msisdn, channel, template, kind, trigger_ts, cell in actions:
        assert (trigger_ts, cell) == TRIGGERS[msisdn]
        assert ts - trigger_ts == 20 * MINUTE
        assert (channel, template) == ("mms", "NEWSPAPER_TRIAL")


def test_every_rule_shows_in_the_funnel(replayed):
    _, run, _ = replayed
    f = run.stats["campaigns"]["airport_newspaper"]
    # Amy, Ben, Cai, Gus and Hao entered with a large-screen handset; Dan never entered,
    # Eva has no such handset, Fei is on the do-not-disturb list.
    assert f["matched"] == f["scheduled"] == 5
    assert f["recheck_failed"] == 2             # Ben left, Cai switched off
    assert f["suppressed_quiet_hours"] == 1     # Gus: due 22:05
    assert f["sent"] == 2 and f["control"] == 0
    assert f["converted_send"] == 1             # Amy ordered the newspaper
    assert run.stats["run"]["events"] == 140


def test_conversion_of_amy(replayed, rows):
    _, run, _ = replayed
    assert rows(run.conversion_columns()) == [(1, at(8, 45), "airport_newspaper", AMY, 1, "send")]


def test_files_in_the_mms_channel(replayed, rows, written):
    _, run, out = replayed
    assert sorted(p.name for p in out.iterdir()) == [".sigmatch-out.lock", "conversions", "mms", "stats.json"]
    fields = ("seq", "ts", "campaign", "msisdn", "trigger_ts", "cell")
    assert written(out / "mms", "actions-*.csv", fields) == rows(run.action_columns(), fields)
    assert json.loads((out / "stats.json").read_text())["campaigns"]["airport_newspaper"]["sent"] == 2


def test_late_timers_resolve_only_at_drain(example):
    """No event comes after 21:45: Hao's offer (21:50) and Gus's (22:05) wait for the drain."""
    engine = Engine.from_config(example.config)
    run = engine.replay(example.trace)
    assert [(int(a["msisdn"]), int(a["ts"])) for a in run.actions] == [(AMY, at(8, 20))]
    assert engine.pending == 2
    drained = engine.drain()
    assert [(int(a["msisdn"]), int(a["ts"])) for a in drained.actions] == [(HAO, at(21, 50))]
    assert engine.pending == 0
    assert drained.stats["campaigns"]["airport_newspaper"]["suppressed_quiet_hours"] == 1


def test_reference_model_agrees(replayed, assert_reference_model_agrees):
    _, run, _ = replayed
    assert_reference_model_agrees(run)


def test_committed_files_come_from_make_trace(assert_make_trace_reproduces):
    assert_make_trace_reproduces("lists/mms_handsets.roar")
