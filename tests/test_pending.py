"""Waiting delayed actions: the timer runs and the pending set (engine/_state.pxi).

Timers fire in (due, created) order, kept by a run per distinct delay and a heap for those
put back from a checkpoint or a reload: timers of different delays due at one instant, and a
restored heap beside new runs, must still fire in that order.

The pending set: the (subscriber, campaign) pairs whose delayed action
waits, kept apart from the contact states. A delayed action that the policy turns down when it
falls due leaves no contact behind, and a pair with an action waiting matches nothing until it
fires (SPEC §3 step 6). Thousands of pairs wait at once here, so the set grows, its keys
collide and they leave in another order than they came (three delays): the core must agree
with the reference model throughout, and a checkpoint, old or new, must carry the set."""
import random
from pathlib import Path

import numpy as np
import pytest

from engine._core import CONTACT_DTYPE, TIMER_DTYPE
from engine.language.config import PolicySpec
from tests.backends import CALL, MINUTE, SMS, T0, Profiles, build, campaign, ev

SUBSCRIBERS = [13_900_000_000 + 7 * i for i in range(3_000)]
CONTACT_PENDING = 8
OCCUPIED = 1 << 63
CONTACT, TIMER = CONTACT_DTYPE, TIMER_DTYPE
# SubHeadC: msisdn, last_any_p1, day, day_count, cell, flags, contacts, then the pending count
ROW_PENDING = 30


def specs():
    # min_gap turns most delayed actions down when they fall due; cooldown 0 lets a pair
    # match again as soon as its action has fired
    return [campaign(id="late_call", on=(CALL,), delay_ms=7 * MINUTE, template="A", priority=3),
            campaign(id="later_call", on=(CALL,), delay_ms=23 * MINUTE, template="B", priority=2),
            campaign(id="late_sms", on=(SMS,), delay_ms=61 * MINUTE, template="C", priority=1)]


def backend(kind):
    return build(kind, *specs(), policy=PolicySpec(min_gap_ms=40 * MINUTE, max_per_day=50),
                 profiles=Profiles(Path("p"), np.array(SUBSCRIBERS, dtype=np.uint64), {}))


def trace(seed, n=24_000):
    rnd = random.Random(seed)
    t, out = T0, []
    for _ in range(n):
        t += rnd.randrange(0, 600)
        out.append(ev(t, type=rnd.choice((CALL, CALL, SMS)), msisdn=rnd.choice(SUBSCRIBERS)))
    return out


def saved_timers_in_firing_order(engine):
    """A checkpoint's timers: every one that waits, in (due, created) order."""
    timers = dict(engine._core.state_sections())["timers"].view(TIMER)
    assert len(timers) == engine.pending
    keys = list(zip(timers["due"].tolist(), timers["created"].tolist()))
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    return timers


def pending_pairs(engine):
    """{(msisdn, campaign id)} with an action waiting, as the core's subscriber view says."""
    ids = [c.id for c in engine.campaigns]
    pairs = set()
    for msisdn in SUBSCRIBERS:
        view = engine._core.subscriber_view(msisdn)
        pairs |= {(msisdn, ids[k]) for k, c in enumerate(view["campaigns"]) if c["pending"]}
    return pairs


@pytest.mark.parametrize("seed", [1, 2])
def test_thousands_waiting_match_as_the_model_does(seed):
    events = trace(seed)
    half = len(events) // 2
    core, model = backend("core"), backend("model")
    for m in (core, model):
        m.feed(b"".join(events[:half]))
        m.finish()
    assert len(model._pending) > 1_000
    assert core.engine.pending == len(model._pending)
    saved_timers_in_firing_order(core.engine)
    assert pending_pairs(core.engine) == {(SUBSCRIBERS[i], cid) for i, cid in model._pending}
    for m in (core, model):
        m.feed(b"".join(events[half:]))
        m.finish()
        m.drain()
    assert core.actions == list(model.actions)
    assert core.funnel == {cid: {k: f.get(k, 0) for k in core.funnel[cid]} for cid, f in model.funnel.items()}
    funnel = core.funnel
    assert sum(f["scheduled"] for f in funnel.values()) > 2 * len(core.actions)
    # only the pairs that were contacted have a contact state: none for the turned down
    assert core.engine._core.nr_contacts == len({(a[3], a[2]) for a in core.actions})
    assert core.engine.pending == 0 and pending_pairs(core.engine) == set()


def _halves(seed):
    events = trace(seed, n=8_000)
    return b"".join(events[:4_000]), b"".join(events[4_000:])


def whole_and_first_half(seed):
    """(the whole trace replayed and drained, an engine fed its first half, the second half)."""
    first, second = _halves(seed)
    whole = backend("core")
    whole.feed(first + second)
    whole.finish()
    whole.drain()
    original = backend("core")
    original.feed(first)
    original.finish()
    return whole, original, second


def assert_goes_on_as_whole(restored, original, whole, second):
    """`restored`, from `original`'s state, fed the second half, ends as `whole` did."""
    assert pending_pairs(restored.engine) == pending_pairs(original.engine)
    restored.feed(second)
    restored.finish()
    restored.drain()
    assert original.actions + restored.actions == whole.actions
    assert restored.funnel == whole.funnel


def test_a_checkpoint_carries_the_waiting_pairs(tmp_path):
    whole, original, second = whole_and_first_half(3)
    assert original.engine.pending > 100
    original.engine.checkpoint(tmp_path / "state.ckpt")
    restored = backend("core")
    restored.engine.restore(tmp_path / "state.ckpt")
    assert_goes_on_as_whole(restored, original, whole, second)


def test_a_checkpoint_is_the_same_bytes_whatever_pending_set_made_it(tmp_path):
    # a timer keeps where the pending set put its key; the set of a restored engine is
    # built afresh, smaller and without the gone slots, so that place is no part of the state
    events = trace(4, n=6_000)
    original = backend("core")
    original.feed(b"".join(events[:4_000]))
    original.finish()
    original.engine.checkpoint(tmp_path / "state.ckpt")
    restored = backend("core")
    restored.engine.restore(tmp_path / "state.ckpt")
    for m in (original, restored):
        m.feed(b"".join(events[4_000:]))
        m.finish()
    assert original.engine.pending > 100
    sections = [dict(m.engine._core.state_sections()) for m in (original, restored)]
    assert sections[0]["timers"].tobytes() == sections[1]["timers"].tobytes()


def test_a_checkpoint_written_before_the_pending_set_restores():
    """Before the pending set, a waiting pair had a contact state with CONTACT_PENDING set (one
    made for it when there was none), rows had no count and the timers were saved as a heap.
    Such sections restore to the same continuation: the flag is dropped, the timers (in any
    order) say what waits."""
    whole, original, second = whole_and_first_half(4)
    core = original.engine._core
    sections = {name: np.array(value) for name, value in core.state_sections()}
    timers = sections["timers"].view(TIMER)
    assert len(timers) > 100
    contacts = sections["contacts"].view(CONTACT).copy()
    keys = {int(k): j for j, k in enumerate(contacts["key"])}
    added = []
    for t in timers:
        key = (int(t["subscriber"]) << 16) | int(t["campaign"]) | OCCUPIED
        if key in keys:
            contacts["flags"][keys[key]] |= CONTACT_PENDING
        else:
            added.append((key, 0, 0, 0, CONTACT_PENDING))
    assert added
    sections["contacts"] = np.concatenate([contacts, np.array(added, dtype=CONTACT)]).view(np.uint8)
    rows = sections["rows"].reshape(len(SUBSCRIBERS), -1).copy()
    rows[:, ROW_PENDING:ROW_PENDING + 2] = 0
    sections["rows"] = rows.reshape(-1)
    # saved as a heap then, not in firing order: any order restores
    sections["timers"] = timers[::-1].copy().view(np.uint8)
    restored = backend("core")
    restored.engine._core.restore_state(core.state_scalars(), sections)
    assert_goes_on_as_whole(restored, original, whole, second)


def test_timers_of_different_delays_due_at_one_instant_fire_in_creation_order():
    """c10 (10 minutes) is scheduled first, c5 (5 minutes) five minutes later: both fall due
    at T0 + 10 min, c10's first. Then the other way round, c5 first: it is due first."""
    specs = [campaign(id="c10", on=(CALL,), delay_ms=10 * MINUTE, template="A"),
             campaign(id="c5", on=(SMS,), delay_ms=5 * MINUTE, template="B")]
    a, b = SUBSCRIBERS[0], SUBSCRIBERS[1]
    events = [ev(T0, type=CALL, msisdn=a), ev(T0 + 5 * MINUTE, type=SMS, msisdn=b),
              ev(T0 + 20 * MINUTE, type=SMS, msisdn=b), ev(T0 + 20 * MINUTE, type=CALL, msisdn=a),
              ev(T0 + 60 * MINUTE, type=CALL, msisdn=a)]
    for kind in ("core", "model"):
        m = build(kind, *specs, profiles=Profiles(Path("p"), np.array(SUBSCRIBERS[:2], dtype=np.uint64), {}))
        m.feed(b"".join(events))
        m.finish()
        m.drain()
        assert [(x[1] - T0, x[2]) for x in m.actions] == [
            (10 * MINUTE, "c10"), (10 * MINUTE, "c5"), (25 * MINUTE, "c5"), (30 * MINUTE, "c10"),
            (70 * MINUTE, "c10")], kind


def test_restored_timers_and_new_ones_fire_in_order(tmp_path):
    """After a restore the waiting timers are in the heap and new ones go to the runs; the two
    interleave by due time as one structure would."""
    specs = [campaign(id="slow", on=(CALL,), delay_ms=30 * MINUTE, template="A", cooldown_ms=0),
             campaign(id="fast", on=(SMS,), delay_ms=3 * MINUTE, template="B", cooldown_ms=0)]
    profiles = Profiles(Path("p"), np.array(SUBSCRIBERS[:40], dtype=np.uint64), {})
    first = b"".join(ev(T0 + i * MINUTE, type=CALL, msisdn=SUBSCRIBERS[i]) for i in range(20))
    second = b"".join(ev(T0 + (20 + i) * MINUTE, type=SMS, msisdn=SUBSCRIBERS[20 + i]) for i in range(20))
    whole = build("core", *specs, profiles=profiles)
    whole.feed(first + second)
    whole.finish()
    whole.drain()
    original = build("core", *specs, profiles=profiles)
    original.feed(first)
    original.finish()
    original.engine.checkpoint(tmp_path / "state.ckpt")
    restored = build("core", *specs, profiles=profiles)
    restored.engine.restore(tmp_path / "state.ckpt")
    restored.feed(second)
    restored.finish()
    # the restored timers (the heap) and the new ones (the runs) saved together, in order
    assert {"slow", "fast"} == {restored.engine.campaigns[k].id
                                for k in saved_timers_in_firing_order(restored.engine)["campaign"].tolist()}
    restored.drain()
    assert original.actions + restored.actions == whole.actions
    fired = [(x[1], x[2]) for x in whole.actions]
    assert [t for t, _ in fired] == sorted(t for t, _ in fired) and {c for _, c in fired} == {"slow", "fast"}


def test_a_subscribers_waiting_actions_in_firing_order_across_the_heap_and_the_runs(tmp_path):
    """One subscriber: an action put back by a restore (the heap) and one scheduled after it
    (a run) that falls due first; the view lists them by due time."""
    specs = [campaign(id="slow", on=(CALL,), delay_ms=30 * MINUTE, template="A"),
             campaign(id="fast", on=(SMS,), delay_ms=3 * MINUTE, template="B")]
    profiles = Profiles(Path("p"), np.array(SUBSCRIBERS[:2], dtype=np.uint64), {})
    a = SUBSCRIBERS[0]
    original = build("core", *specs, profiles=profiles)
    original.feed(ev(T0, type=CALL, msisdn=a))
    original.finish()
    original.engine.checkpoint(tmp_path / "state.ckpt")
    restored = build("core", *specs, profiles=profiles)
    restored.engine.restore(tmp_path / "state.ckpt")
    restored.feed(ev(T0 + 20 * MINUTE, type=SMS, msisdn=a))
    restored.finish()
    ids = [c.id for c in restored.engine.campaigns]
    view = restored.engine._core.subscriber_view(a)
    assert [(ids[t["campaign"]], t["due"] - T0) for t in view["pending"]] == [("fast", 23 * MINUTE), ("slow", 30 * MINUTE)]
    assert restored.engine._core.subscriber_view(SUBSCRIBERS[1])["pending"] == []


def test_the_clock_at_its_largest_value_fires_what_waits_and_nothing_more():
    m = backend("core")
    m.feed(ev(T0, msisdn=SUBSCRIBERS[0]))
    m.finish()
    core = m.engine._core
    assert core.pending >= 1
    core.advance(2**63 - 1)
    assert core.pending == 0 and len(core.take_actions()) >= 1
    core.advance(2**63 - 1)     # nothing waits: nothing to take
    assert core.pending == 0 and len(core.take_actions()) == 0


def test_a_refused_restore_leaves_the_core_as_it_was():
    """A checkpoint refused (a contact out of range, or more timers for one subscriber than
    there are campaigns) is refused before anything changes: a core with actions waiting
    goes on exactly as its twin that never saw it."""
    first, second = _halves(5)
    donor = backend("core")
    donor.feed(b"".join(trace(6, n=2_000)))
    donor.finish()
    core = donor.engine._core
    assert core.pending > 0
    sections = {name: np.array(value) for name, value in core.state_sections()}
    contacts = sections["contacts"].view(CONTACT).copy()
    contacts["key"][0] = OCCUPIED | 0xFFFF
    bad_contact = dict(sections, contacts=contacts.view(np.uint8))
    timer = sections["timers"].view(TIMER)[:1]
    too_many = dict(sections, timers=np.repeat(timer, 65_536).view(np.uint8))
    victim, twin = backend("core"), backend("core")
    for m in (victim, twin):
        m.feed(first)
        m.finish()
    assert victim.engine.pending > 0
    with pytest.raises(ValueError, match="checkpoint contact out of range"):
        victim.engine._core.restore_state(core.state_scalars(), bad_contact)
    with pytest.raises(ValueError, match="more than 65,535 for one subscriber"):
        victim.engine._core.restore_state(core.state_scalars(), too_many)
    for m in (victim, twin):
        m.feed(second)
        m.finish()
        m.drain()
    assert victim.actions == twin.actions and victim.funnel == twin.funnel


def test_checkpoints_of_version_1_restore_and_others_are_refused(tmp_path, monkeypatch):
    from engine import CheckpointError
    from engine.service import checkpoint as store
    whole, original, second = whole_and_first_half(7)
    monkeypatch.setattr(store, "VERSION", 1)
    original.engine.checkpoint(tmp_path / "v1.ckpt")
    monkeypatch.setattr(store, "VERSION", 3)
    original.engine.checkpoint(tmp_path / "v3.ckpt")
    monkeypatch.undo()
    restored = backend("core")
    restored.engine.restore(tmp_path / "v1.ckpt")
    assert_goes_on_as_whole(restored, original, whole, second)
    with pytest.raises(CheckpointError, match="checkpoint version 3, this engine reads 1 and 2"):
        backend("core").engine.restore(tmp_path / "v3.ckpt")


def test_a_store_written_by_version_1_goes_on_with_a_new_base(tmp_path, monkeypatch):
    """After an upgrade, the first checkpoint is a base of this version: records of version 2
    behind a base of version 1 would be read by a sigmatch that reads only 1."""
    from engine.service import checkpoint as store_module
    from engine.service.checkpoint import CheckpointStore, read_header, restore_sections
    first, second = _halves(8)
    old = backend("core")
    old.feed(first)
    old.finish()
    monkeypatch.setattr(store_module, "VERSION", 1)
    assert CheckpointStore(tmp_path).save(old.engine)["kind"] == "base"
    monkeypatch.undo()
    store = CheckpointStore(tmp_path)
    loaded = store.load()
    assert loaded.header["version"] == 1
    upgraded = backend("core")
    restore_sections(upgraded.engine, loaded.header, loaded.sections, loaded.path)
    store.adopt(loaded, upgraded.engine)
    upgraded.feed(second)
    upgraded.finish()
    assert store.save(upgraded.engine)["kind"] == "base"
    assert sorted(read_header(p)["version"] for p in tmp_path.glob("base-*")) == [1, 2]


def test_an_emission_a_budget_turns_down_leaves_no_contact_state():
    """A contact state is made when the contact is, not before the budgets are asked: one
    for every emission a budget turned down filled the table with empty entries (2.07M for
    585k actions on bench.rare's uniform world) that nothing reads. The outcome is the
    model's either way; what is held is one state per pair contacted."""
    specs = [campaign(id="capped", on=(CALL,), template="A", priority=2, daily_budget=40),
             campaign(id="total", on=(SMS,), template="B", priority=1, total_budget=25),
             campaign(id="shared", on=(CALL, SMS), channel="outbound", template="C")]
    events = b"".join(trace(3, n=6_000))
    runs = {}
    for kind in ("core", "model"):
        m = build(kind, *specs, channel_budgets={"outbound": 30},
                  profiles=Profiles(Path("p"), np.array(SUBSCRIBERS, dtype=np.uint64), {}))
        m.feed(events)
        m.finish()
        m.drain()
        runs[kind] = m
    core, model = runs["core"], runs["model"]
    assert core.actions == list(model.actions)
    funnel = core.funnel
    assert funnel["capped"]["suppressed_campaign_budget"] > 1_000 and funnel["total"]["suppressed_campaign_budget"] > 500
    assert funnel["shared"]["suppressed_channel_budget"] > 1_000
    assert core.engine._core.nr_contacts == len({(a[3], a[2]) for a in core.actions}) > 50

