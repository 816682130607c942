"""The core's candidate masks (issue 14): matching visits only the campaigns an event may
match, found from per-type masks over its campaigns (eligibility bits, the minute's dates,
hours and days, trigger flags, counter thresholds, areas). Matching does not test those
conditions again, so the masks decide them, and the core must agree with the reference
model, which visits every campaign and tests each condition: here with many
campaigns of one type (the masks span several 64-bit words), eligibility bits shared by many
campaigns, campaigns without an audience, and a reload that changes eligibility and
`enabled`."""
import datetime
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.language.config import CounterSpec, PolicySpec
from tests.backends import (CALL, DAY, HOUR, LOC, MINUTE, SMS, T0, Profiles, build,
                            campaign, ev)

SUBSCRIBERS = [13_800_000_001 + i for i in range(8)]
LISTS = {"l1": SUBSCRIBERS[:5], "l2": SUBSCRIBERS[3:], "l3": SUBSCRIBERS[::2], "tiny": SUBSCRIBERS[7:]}
AREAS = {"north": [10, 11], "south": [20, 21]}
COUNTERS = (CounterSpec("calls", (CALL,), 0, "count"),)
FIRST_DAY = datetime.date(2026, 1, 1)       # T0's local date (utc_offset 0)


def spec(i, kind, enabled=True, audience=None):
    """Campaign number i of one of a few shapes, so that many campaigns share one eligibility
    class, some have none but the blacklist's, and the other conditions come in turn."""
    shape = kind % 8
    keys = dict(priority=kind % 5, enabled=enabled)
    keys["audience"] = audience if audience is not None else (None, "l1", "l2", "l3", None, "tiny")[kind % 6]
    if shape == 1:
        keys["flags"] = 1
    elif shape == 2:
        keys.update(counter="calls", at_least=1 + kind % 4)
    elif shape == 3:
        keys["hours"] = (60 * (kind % 24), 60 * ((kind + 3) % 24) or 1)
    elif shape == 4:
        keys["area"] = ("north", "south")[kind % 2]
    elif shape == 5:
        keys["exclude"] = ("l3",)
    elif shape == 6:
        keys["start"] = FIRST_DAY + datetime.timedelta(days=kind % 3)
        keys["end"] = keys["start"] + datetime.timedelta(days=1)
    return campaign(id=f"c{i:03d}", on=(CALL, SMS) if kind % 3 else (CALL,), template=f"T{i}", **keys)


def world_profiles():
    return Profiles(Path("p"), np.array(SUBSCRIBERS, dtype=np.uint64), {})


events_strategy = st.lists(
    st.tuples(st.integers(0, 90 * MINUTE), st.sampled_from([CALL, CALL, SMS, LOC]), st.integers(0, 7),
              st.sampled_from([0, 10, 20, 11, 30]), st.integers(0, 3)),
    min_size=1, max_size=60)


def stream(draws, start=T0):
    """Events at increasing times from `start` (steps up to 90 minutes: hours and days change)."""
    t, out = start, []
    for step, type_, who, cell, flags in draws:
        t += step
        out.append(ev(t, type=type_, msisdn=SUBSCRIBERS[who], cell=cell, flags=flags))
    return out


def backends(specs):
    kw = dict(counters=COUNTERS, lists=LISTS, areas=AREAS, profiles=world_profiles(),
              policy=PolicySpec(blacklist=("tiny",)))
    return build("core", *specs, **kw), build("model", *specs, **kw)


def outcome_pair(specs, events):
    core, model = backends(specs)
    for m in (core, model):
        m.feed(b"".join(events))
        m.finish()
    return core, model


@settings(deadline=None, max_examples=25, suppress_health_check=list(HealthCheck))
@given(kinds=st.lists(st.integers(0, 1000), min_size=65, max_size=140), draws=events_strategy,
       disabled=st.sets(st.integers(0, 139), max_size=10))
def test_many_campaigns_of_one_type_match_as_the_model_does(kinds, draws, disabled):
    specs = [spec(i, k, enabled=i not in disabled) for i, k in enumerate(kinds)]
    core, model = outcome_pair(specs, stream(draws))
    assert core.actions == list(model.actions)
    assert {cid: {k: v for k, v in f.items() if v} for cid, f in core.funnel.items()} == \
        {cid: {k: v for k, v in f.items() if v} for cid, f in model.funnel.items()}


def test_a_campaign_past_the_first_64_of_its_type_matches_with_the_first():
    """Positions 0, 63, 64 and 129 of one type's campaigns share one eligibility bit; an event
    of a subscriber in it reaches all four, one outside reaches none."""
    specs = [campaign(id=f"c{i:03d}", on=(CALL,), template=f"T{i}",
                      audience="l1" if i in (0, 63, 64, 129) else "tiny") for i in range(130)]
    inside, outside = SUBSCRIBERS[0], SUBSCRIBERS[5]
    core, model = outcome_pair(specs, [ev(T0, msisdn=inside), ev(T0 + 1, msisdn=outside)])
    assert [a[2] for a in core.actions] == ["c000", "c063", "c064", "c129"]
    assert core.actions == list(model.actions)


def test_a_reload_that_changes_eligibility_and_enabled_rebuilds_the_masks():
    """Before the reload, audience l1 and some campaigns disabled; after it, audience l2 and
    the others disabled. The second half's actions are the model's with the new configuration
    (the campaigns keep no state that matters: no cooldown, no policy, no counters)."""
    n = 100

    def config(audience, off):
        return [campaign(id=f"c{i:03d}", on=(CALL,), template=f"T{i}", enabled=i % 3 != off,
                         audience=audience if i % 2 else None) for i in range(n)]

    kw = dict(lists=LISTS, profiles=world_profiles())
    first_half = [ev(T0 + i * MINUTE, msisdn=SUBSCRIBERS[i % 8]) for i in range(8)]
    second_half = [ev(T0 + HOUR + i * MINUTE, msisdn=SUBSCRIBERS[i % 8]) for i in range(8)]
    core = build("core", *config("l1", 0), **kw)
    engine = core.engine
    engine.replay(b"".join(first_half))
    after = build("core", *config("l2", 1), **kw).engine
    reloaded = engine._reloaded(after.config, after.world)
    run = reloaded.replay(b"".join(second_half))
    got = [(int(t), reloaded.campaigns[c].id, int(m)) for t, c, m in
           zip(run.actions["ts"], run.actions["campaign"], run.actions["msisdn"])]
    model = build("model", *config("l2", 1), **kw)
    model.feed(b"".join(second_half))
    model.finish()
    expected = [(a[1], a[2], a[3]) for a in model.actions]
    assert got == expected
    assert len(expected) > n          # the new audience and the new `enabled` both act


def test_an_event_on_a_day_outside_every_campaign_matches_nothing_then_the_next_day_does():
    """The minute's mask is rebuilt when the local minute changes, also across days."""
    specs = [campaign(id=f"c{i:02d}", on=(CALL,), template=f"T{i}", start=FIRST_DAY + datetime.timedelta(days=1),
                      end=FIRST_DAY + datetime.timedelta(days=1), hours=(9 * 60, 10 * 60)) for i in range(70)]
    events = [ev(T0 + 9 * HOUR), ev(T0 + DAY + 9 * HOUR - 1), ev(T0 + DAY + 9 * HOUR, msisdn=SUBSCRIBERS[1]),
              ev(T0 + DAY + 10 * HOUR, msisdn=SUBSCRIBERS[2])]
    core, model = outcome_pair(specs, events)
    assert len(core.actions) == 70 and {a[3] for a in core.actions} == {SUBSCRIBERS[1]}
    assert core.actions == list(model.actions)
