"""End to end: sequences and absence built from markers (README.md tells the story).

Expected times are worked out here from the story, not taken from a previous run.
"""
import dataclasses

from engine.api import Engine
from engine.language.config import MarkerCondition, load_config

MINUTE = 60_000
DAY = 86_400_000
MONDAY = 1_803_830_400_000      # 2027-03-01 00:00 at +08:00, day 0

ANA, BO, CY, DEV, EVE, FAY, GUS, HAL = range(13800040001, 13800040009)


def at(day: int, hh: int, mm: int = 0) -> int:
    return MONDAY + day * DAY + (hh * 60 + mm) * MINUTE


EXPECTED = [      # (msisdn, campaign, ts, trigger_ts) in emission order
    (ANA, "addon_after_bundle", at(0, 15), at(0, 15)),     # the bundle at 10:00, a call at 15:00
    (DEV, "welcome_abroad", at(3, 9), at(3, 9)),           # the first roaming event
    (EVE, "topup_rescue", at(6, 9), at(5, 9)),             # low balance, no recharge for 24 h
    (HAL, "topup_rescue", at(6, 9), at(5, 9)),             # his recharge was not later than it
    (DEV, "welcome_abroad", at(19, 9), at(19, 9)),         # 15 days after his last roaming event
]


def test_actions_are_the_story(replayed, rows):
    _, run, _ = replayed
    actions = rows(run.action_columns())
    assert [(a[3], a[2], a[1], a[7]) for a in actions] == EXPECTED
    assert all(a[6] == "send" and a[4] == "sms" for a in actions)
    # Bo (a day later is not within a day), Cy (the call came first), Fay (recharged) and
    # Gus (recharged the day before) get nothing
    assert not {BO, CY, FAY, GUS} & {a[3] for a in actions}


def test_funnel(replayed):
    _, run, _ = replayed
    f = run.stats["campaigns"]
    assert (f["addon_after_bundle"]["matched"], f["addon_after_bundle"]["sent"]) == (1, 1)
    assert (f["welcome_abroad"]["matched"], f["welcome_abroad"]["sent"]) == (2, 2)
    rescue = f["topup_rescue"]
    # Eve, Fay and Hal match (Gus recharged 25 hours before); Fay's recharge at 20:00 drops hers
    assert (rescue["matched"], rescue["scheduled"], rescue["absent"], rescue["sent"]) == (3, 3, 1, 2)
    assert rescue["recheck_failed"] == 0


def test_one_millisecond_more_lets_bo_in(example):
    """Bo's call came exactly a day after his order: `within = "1d"` wants less than a day."""
    config = load_config(example.config)
    campaigns = tuple(dataclasses.replace(c, after=(MarkerCondition("took_3001", DAY + 1),))
                      if c.id == "addon_after_bundle" else c for c in config.campaigns)
    run = Engine(dataclasses.replace(config, campaigns=campaigns)).replay(example.trace, drain=True)
    cols = run.action_columns()
    assert [(int(m), int(t)) for c, m, t in zip(cols["campaign"], cols["msisdn"], cols["ts"])
            if c == "addon_after_bundle"] == [(ANA, at(0, 15)), (BO, at(1, 10))]


def test_the_policy_view_shows_markers(replayed):
    from engine.service.lookup import policy_view
    engine, _, _ = replayed
    view = policy_view(engine, FAY)
    assert view["markers"] == {"took_3001": None, "recharged": at(5, 20), "roamed": None}


def test_reference_model_agrees(replayed, assert_reference_model_agrees):
    _, run, _ = replayed
    assert_reference_model_agrees(run)


def test_committed_files_come_from_make_trace(assert_make_trace_reproduces):
    assert_make_trace_reproduces()
