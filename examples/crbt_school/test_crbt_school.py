"""End to end: the CRBT-at-school programme (README.md tells the story).

Expected times are worked out here from the story, not taken from a previous run.
"""
import json

from engine.api import Engine

MINUTE = 60_000
DAY = 86_400_000
MONDAY = 1_791_129_600_000      # 2026-10-05 00:00 at +08:00 (2026-10-04 16:00 UTC)

ANN, BO, HU, IVY = 13800010001, 13800010002, 13800010008, 13800010009


def at(day: int, hh: int, mm: int) -> int:
    return MONDAY + day * DAY + (hh * 60 + mm) * MINUTE


# (msisdn, campaign, kind, ts) of every action the story must produce, nothing else.
EXPECTED = {
    (IVY, "recharge_thanks", "send", at(0, 9, 30)),      # thanked at once for the top-up
    (ANN, "crbt_school", "send", at(0, 10, 5)),          # call 10:00 + 5 minutes
    (BO, "crbt_school", "send", at(0, 10, 35)),          # off-net peer, call 10:30 + 5 minutes
    (HU, "crbt_school", "send", at(0, 11, 5)),           # first call, 11:00 + 5 minutes
    (HU, "crbt_school", "send", at(30, 11, 15)),         # 30 days after 11:05: call 11:10 + 5 min
}
# (msisdn, campaign, ts) -> (trigger_ts, cell) of the triggering call.
TRIGGERS = {
    (ANN, "crbt_school", at(0, 10, 5)): (at(0, 10, 0), 7101),
    (BO, "crbt_school", at(0, 10, 35)): (at(0, 10, 30), 7102),
    (HU, "crbt_school", at(0, 11, 5)): (at(0, 11, 0), 7103),
    (HU, "crbt_school", at(30, 11, 15)): (at(30, 11, 10), 7103),
    (IVY, "recharge_thanks", at(0, 9, 30)): (at(0, 9, 30), 5009),
}


def test_actions_are_the_story(replayed, rows):
    _, run, _ = replayed
    actions = rows(run.action_columns())
    got = {(a[3], a[2], a[6], a[1]) for a in actions}
    assert got == EXPECTED
    assert len(actions) == len(EXPECTED)
    for seq, ts, campaign, msisdn, channel, template, kind, trigger_ts, cell in actions:
        assert (trigger_ts, cell) == TRIGGERS[(msisdn, campaign, ts)]
        assert channel == "sms"
    assert [a[0] for a in actions] == list(range(1, len(EXPECTED) + 1))
    assert [a[1] for a in actions] == sorted(a[1] for a in actions)


def test_every_rule_shows_in_the_funnel(replayed):
    _, run, _ = replayed
    crbt = run.stats["campaigns"]["crbt_school"]
    # Ann, Bo, Hu (twice), Ivy, Lei and Mei matched; the others failed a match condition.
    assert crbt["matched"] == crbt["scheduled"] == 7
    assert crbt["recheck_failed"] == 2           # Lei (18:02 is after hours), Mei (phone off)
    assert crbt["suppressed_min_gap"] == 1       # Ivy, thanked for her top-up two days before
    assert crbt["sent"] == 4 and crbt["control"] == 0
    assert crbt["converted_send"] == 1           # Ann downloaded a CRBT
    assert run.stats["run"]["events"] == 24
    assert run.stats["run"]["unknown_subscribers"] == 0
    assert sum(run.stats["run"]["bad_events"].values()) == 0


def test_conversion_of_ann(replayed, rows):
    _, run, _ = replayed
    actions = rows(run.action_columns())
    ann_offer = next(a[0] for a in actions if a[3] == ANN)
    assert rows(run.conversion_columns()) == [(1, at(0, 12, 0), "crbt_school", ANN, ann_offer, "send")]


def test_files_in_the_sms_channel(replayed, rows, written):
    _, run, out = replayed
    assert sorted(p.name for p in out.iterdir()) == [".sigmatch-out.lock", "conversions", "sms", "stats.json"]
    fields = ("seq", "ts", "campaign", "msisdn", "template", "kind")
    assert written(out / "sms", "actions-*.csv", fields) == rows(run.action_columns(), fields)
    assert not list(out.rglob(".*.tmp"))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["campaigns"]["crbt_school"]["sent"] == 4


def test_pending_offer_waits_for_drain(example):
    """Hu's second offer (due day 30, 11:15) comes after the last event: only a drain emits it."""
    engine = Engine.from_config(example.config)
    run = engine.replay(example.trace)
    assert engine.pending == 1
    assert (HU, at(30, 11, 15)) not in {(int(a["msisdn"]), int(a["ts"])) for a in run.actions}
    drained = engine.drain()
    assert [(int(a["msisdn"]), int(a["ts"])) for a in drained.actions] == [(HU, at(30, 11, 15))]


def test_reference_model_agrees(replayed, assert_reference_model_agrees):
    _, run, _ = replayed
    assert_reference_model_agrees(run)


def test_committed_files_come_from_make_trace(assert_make_trace_reproduces):
    assert_make_trace_reproduces("lists/crbt_peers.roar")
