"""Explanations and takers by hand, on both engines (tests/backends.py): the first failing
condition named in the issue's order, the emission's outcome (a contact's seq, the rule that
suppressed it, the failed recheck), the state after an event, the taker of a lost contact,
and a reload. Fast, so the mutation check's fast stage runs it (tests/mutation)."""
from pathlib import Path

import numpy as np
import pytest

from engine.language.compile import World
from engine.language.config import MarkerCondition, MarkerSpec, PolicySpec
from tests.backends import A, B, C, BACKENDS, DAY, HOUR, MINUTE, POWER_OFF, SMS, T0, Profiles, build, campaign, ev, run

@pytest.mark.parametrize("backend", BACKENDS)
def test_the_taker_is_the_campaign_of_the_latest_contact(backend):
    """a contacts at T0; b, exempt from min_gap, contacts at the same time (a larger seq);
    c then fails min_gap: b took it. Later, max_per_day = 2 stops c again, after b's contact."""
    m = build(backend, campaign("a", priority=3), campaign("b", priority=2, exempt=("min_gap",)),
              campaign("c", priority=1), policy=PolicySpec(min_gap_ms=HOUR, max_per_day=2),
              record_takers=True)
    run(m, ev(T0), ev(T0 + 2 * HOUR))
    assert m.takers == {("c", "b", "min_gap"): 1, ("c", "b", "max_per_day"): 1,
                        ("a", "b", "max_per_day"): 1, ("b", "b", "max_per_day"): 1}


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_campaign_an_event_loses_has_its_taker(backend):
    """first contacts at T0; an hour later a, b and c, of the same exemptions, all fail
    min_gap in one event (the core asks the policy once for them): each lost it to first."""
    m = build(backend, campaign("first", on=(SMS,)), campaign("a", priority=3), campaign("b", priority=2),
              campaign("c", priority=1), policy=PolicySpec(min_gap_ms=DAY), record_takers=True)
    run(m, ev(T0, SMS), ev(T0 + HOUR))
    assert m.takers == {("a", "first", "min_gap"): 1, ("b", "first", "min_gap"): 1, ("c", "first", "min_gap"): 1}


def test_takers_need_asking():
    m = build("core", campaign("a"))
    with pytest.raises(ValueError):
        m.engine.takers()


# ---------------------------------------------------------------------------- by hand, both engines
def _results(m, who=A):
    return [(e["type"], [(c["id"], c["result"]) for c in e["campaigns"]]) for e in m.explanations[who]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_first_failing_condition_is_named_in_the_issue_order(backend):
    """A is in l_aud, in l_excl and blacklisted: audience passes, exclude is named (not
    blacklist); B is outside the audience: audience. Markers: after before not_after."""
    m = build(backend,
              campaign("aud", audience="l_aud", exclude=("l_excl",), priority=3),
              campaign("seq", after=(MarkerCondition("seen", HOUR),), not_after=(MarkerCondition("seen", MINUTE),),
                       priority=2),
              campaign("sms_only", on=(SMS,), priority=1),
              markers=(MarkerSpec("seen", on=(SMS,)),), policy=PolicySpec(blacklist=("l_black",)),
              lists={"l_aud": [A, C], "l_excl": [A], "l_black": [A]}, watch=[A, B])
    run(m, ev(T0), ev(T0 + 1, type=SMS), ev(T0 + 2), ev(T0 + 2 * MINUTE), ev(T0 + 3 * MINUTE, msisdn=B))
    assert _results(m) == [
        ("CALL_MO_END", [("aud", "exclude"), ("seq", "blacklist")]),
        ("SMS_MO", [("sms_only", "blacklist")]),
        ("CALL_MO_END", [("aud", "exclude"), ("seq", "blacklist")]),
        ("CALL_MO_END", [("aud", "exclude"), ("seq", "blacklist")]),
    ]
    assert _results(m, B) == [("CALL_MO_END", [("aud", "audience"), ("seq", "after")])]


@pytest.mark.parametrize("backend", BACKENDS)
def test_after_then_not_after_then_the_contact_state(backend):
    m = build(backend,
              campaign("seq", after=(MarkerCondition("seen", HOUR),), not_after=(MarkerCondition("seen", MINUTE),),
                       cooldown_ms=HOUR),
              markers=(MarkerSpec("seen", on=(SMS,)),), watch=[A])
    run(m, ev(T0), ev(T0 + 1, type=SMS), ev(T0 + 2), ev(T0 + 2 * MINUTE), ev(T0 + 3 * MINUTE))
    results = [r for t, r in _results(m) if t == "CALL_MO_END"]
    assert results == [[("seq", "after")], [("seq", "not_after")], [("seq", "matched")], [("seq", "cooldown")]]
    matched = m.explanations[A][3]
    assert matched["emissions"] == [{"campaign": "seq", "ts": T0 + 2 * MINUTE, "seq": 1, "kind": "send"}]
    assert matched["state"]["contacts"] == {"seq": {"ts": T0 + 2 * MINUTE, "seq": 1, "kind": "send",
                                                    "converted": False, "streak": 1}}
    assert matched["state"]["markers"] == {"seen": T0 + 1} and matched["state"]["last_contact"] == T0 + 2 * MINUTE


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_timer_names_the_recheck_that_failed_and_the_policy_rule(backend):
    """A's delayed action finds the phone off (recheck powered_on); B's is stopped by min_gap,
    which an earlier contact of `now` set."""
    m = build(backend, campaign("later", delay_ms=10 * MINUTE, recheck=frozenset({"powered_on", "hours"}), priority=2),
              campaign("now", on=(SMS,), priority=1), policy=PolicySpec(min_gap_ms=HOUR), watch=[A, B])
    run(m, ev(T0), ev(T0 + MINUTE, type=POWER_OFF), ev(T0 + 2 * MINUTE, msisdn=B),
        ev(T0 + 3 * MINUTE, type=SMS, msisdn=B), ev(T0 + HOUR))
    timers = [e for e in m.explanations[A] if e["type"] == "timer"]
    assert [(e["campaign"], e["trigger_ts"], e["emissions"]) for e in timers] == [
        ("later", T0, [{"campaign": "later", "ts": T0 + 10 * MINUTE, "suppressed": "recheck_failed",
                        "recheck": "powered_on"}])]
    assert m.explanations[A][0]["emissions"] == [{"campaign": "later", "ts": T0, "scheduled": T0 + 10 * MINUTE}]
    timers = [e for e in m.explanations[B] if e["type"] == "timer"]
    assert timers[0]["emissions"] == [{"campaign": "later", "ts": T0 + 12 * MINUTE, "suppressed": "min_gap"}]
    assert timers[0]["state"]["powered_on"] and timers[0]["state"]["contacts_today"] == 1


def test_a_reload_carries_the_watch_list_and_the_takers():
    """Entries and takers outlive a reload by campaign id; a watched number the new profiles
    lack is inactive, and its events say so."""
    m = build("core", campaign("a", priority=2), campaign("b", priority=1), policy=PolicySpec(min_gap_ms=HOUR),
              record_takers=True, watch=[A, B])
    run(m, ev(T0), ev(T0 + MINUTE, msisdn=B))
    engine = m.engine
    assert engine.takers() == {("b", "a", "min_gap"): 2}
    config = engine.config
    new = engine._reloaded(type(config)(**{**config.__dict__, "campaigns": config.campaigns[1:]}),
                           World(Profiles(Path("p"), np.array([B, C], dtype=np.uint64), {}), {}, {}))
    assert new.watched == [A, B] and new.takers() == {("b", "a", "min_gap"): 2}
    new.replay(ev(T0 + 2 * HOUR) + ev(T0 + 2 * HOUR, msisdn=B))
    events = new.explanation(A)["events"]
    assert len(events) == 2 and events[-1] == {"ts": T0 + 2 * HOUR, "type": "CALL_MO_END", "event_ts": T0 + 2 * HOUR,
                                               "cell": 0, "inactive": True, "conversions": [], "campaigns": [],
                                               "emissions": []}
    assert new.explanation(A)["status"] == "inactive"
    assert new.explanation(B)["events"][-1]["campaigns"] == [{"id": "b", "result": "matched"}]


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_after_is_named_before_once_and_a_conversion_makes_it_once(backend):
    m = build(backend, campaign("c", once=True, stop_after=1, cooldown_ms=HOUR, convert_on=(SMS,)), watch=[A])
    run(m, ev(T0), ev(T0 + MINUTE), ev(T0 + 2 * MINUTE, type=SMS), ev(T0 + 3 * MINUTE))
    assert _results(m) == [("CALL_MO_END", [("c", "matched")]), ("CALL_MO_END", [("c", "stop_after")]),
                           ("SMS_MO", []), ("CALL_MO_END", [("c", "once")])]
    converted = m.explanations[A][2]
    assert converted["conversions"] == [{"campaign": "c", "seq": 1, "contact_seq": 1, "kind": "send"}]
    assert converted["state"]["contacts"]["c"] == {"ts": T0, "seq": 1, "kind": "send", "converted": True, "streak": 0}
