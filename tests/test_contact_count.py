"""The row's count of a subscriber's contact states (SubHeadC.contacts), with which a lookup of
a campaign that has none stops after the subscriber's last contact rather than at the
cluster's empty slot. A count one short would lose a contact: `once` and the cooldown would
let the pair be contacted again. Checked against the reference model on subscribers with a
few dozen contacts and with more than the count holds (255), whose clusters run into each other,
across a checkpoint and a reload."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from engine.language.config import PolicySpec
from engine.language.compile import World
from tests.backends import CALL, MINUTE, SMS, T0, Profiles, build, campaign, contacts, ev, run

SUBSCRIBERS = [13_900_000_000 + 11 * i for i in range(60)]
ARGS = 7
# SubHeadC: msisdn, last_any_p1, day, day_count, cell, flags, then the contacts count
ROW_CONTACTS = 29


def specs(n=300):
    """n campaigns, campaign k triggered by CALLs whose arg is k % ARGS: one event contacts a
    seventh of them. Even ones are `once`, odd ones have a cooldown of a day."""
    return [campaign(id=f"c{k:03d}", on=(CALL,), arg=k % ARGS, template=f"T{k}", priority=k % 5,
                     once=k % 2 == 0, cooldown_ms=0 if k % 2 == 0 else 24 * 60 * MINUTE)
            for k in range(n)]


def backend(kind, n=300):
    return build(kind, *specs(n), policy=PolicySpec(min_gap_ms=0, max_per_day=None),
                 profiles=Profiles(Path("p"), np.array(SUBSCRIBERS, dtype=np.uint64), {}))


def trace(seed, n=1_500):
    """Subscribers 0-9 busy (255 contacts and more each), the rest with dozens (42 and up)."""
    rnd = random.Random(seed)
    t, out = T0, []
    for _ in range(n):
        t += rnd.randrange(0, 3 * MINUTE)
        who = rnd.choice(SUBSCRIBERS[:10]) if rnd.random() < 0.6 else rnd.choice(SUBSCRIBERS[10:])
        out.append(ev(t, type=rnd.choice((CALL, CALL, SMS)), msisdn=who, arg=rnd.randrange(ARGS)))
    return out


def counts(engine):
    """Each subscriber's count in its row, and min(255, its contacts) from the contact table."""
    sections = dict(engine._core.state_sections())
    rows = np.asarray(sections["rows"]).reshape(len(SUBSCRIBERS), -1)
    keys = np.asarray(sections["contacts"]).view(np.uint64).reshape(-1, 4)[:, 0]
    per_sub = np.bincount(((keys & ~np.uint64(1 << 63)) >> np.uint64(16)).astype(np.int64),
                          minlength=len(SUBSCRIBERS))
    return rows[:, ROW_CONTACTS].tolist(), np.minimum(per_sub, 255).tolist()


def first_difference(got: list, want: list):
    """None when equal, else (index, got's record, want's record): pytest's own diff of two
    lists of thousands of records takes minutes."""
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return i, a, b
    return None if len(got) == len(want) else (min(len(got), len(want)), len(got), len(want))


def test_busy_subscribers_contacts_are_found_as_the_model_finds_them(tmp_path):
    events = trace(1)
    half = len(events) // 2
    core, model = backend("core"), backend("model")
    for m in (core, model):
        m.feed(b"".join(events[:half]))
        m.finish()
    row_counts, table_counts = counts(core.engine)
    assert row_counts == table_counts
    assert max(table_counts) == 255 and 0 < min(table_counts) < 255
    core.engine.checkpoint(tmp_path / "state.ckpt")
    restored = backend("core")
    restored.engine.restore(tmp_path / "state.ckpt")
    # counted again as the contacts are put back, not added to the saved byte
    assert counts(restored.engine) == (row_counts, table_counts)
    for m in (restored, model):
        m.feed(b"".join(events[half:]))
        m.finish()
        m.drain()
    assert first_difference(core.actions + restored.actions, list(model.actions)) is None
    assert first_difference(sorted(restored.funnel.items()),
                            sorted((cid, {k: f.get(k, 0) for k in restored.funnel[cid]})
                                   for cid, f in model.funnel.items())) is None
    # `once` held: no pair of an even campaign was contacted twice
    once = [(a[3], a[2]) for a in core.actions + restored.actions if int(a[2][1:]) % 2 == 0]
    assert len(once) == len(set(once)) > 1_000


def test_a_reload_counts_the_contacts_it_carries_over():
    """A reload that drops campaigns carries the others' contacts into a new table: each
    row's count is of the contacts kept, and they are still found. Without max_per_day or
    min_gap campaigns do not interact, so the model of the 200 kept, fed the same events,
    stands for the reloaded engine (but for seq, which goes on from the 300's)."""
    events = trace(2, n=800)
    first, second = b"".join(events[:400]), b"".join(events[400:])
    core = backend("core")
    core.feed(first)
    core.finish()
    kept = backend("core", n=200)
    kept.engine = core.engine._reloaded(
        kept.engine.config, World(Profiles(Path("p"), np.array(SUBSCRIBERS, dtype=np.uint64), {}), {}, {}))
    assert kept.engine._core.nr_contacts < core.engine._core.nr_contacts
    row_counts, table_counts = counts(kept.engine)
    assert row_counts == table_counts and max(table_counts) > 100
    model = backend("model", n=200)
    model.feed(first)
    model.finish()
    done = len(model.actions)
    for m in (kept, model):
        m.feed(second)
        m.finish()
        m.drain()
    assert kept.actions
    assert first_difference([a[1:] for a in kept.actions], [a[1:] for a in model.actions[done:]]) is None


@pytest.mark.parametrize("others", [101, 102, 103])
def test_contacts_found_after_the_table_grew_in_the_same_event(backend, others):
    """The matching loop walks a busy subscriber's contacts once an event and keeps where
    each lies; a contact made in the loop that grows the table moves them all. Subscribers
    first take 5 contacts each (old0-old4, a day's cooldown), then one of them matches
    new0-new4 (visited first, by priority) and old0-old4 again: the table of 1,024 slots
    grows at the 513th contact, during new0-new4 for one of these counts of subscribers.
    Every old contact must still be found, and its cooldown turn the match down.
    Without the growth noted, the core read slots of the old table in the new one."""
    subscribers = [13_900_000_000 + 11 * i for i in range(others + 1)]
    olds = [campaign(id=f"old{k}", on=(CALL,), cooldown_ms=24 * 60 * MINUTE) for k in range(5)]
    news = [campaign(id=f"new{k}", on=(CALL,), arg=1, priority=10) for k in range(5)]
    m = build(backend, *olds, *news, policy=PolicySpec(min_gap_ms=0, max_per_day=None),
              profiles=Profiles(Path("p"), np.array(subscribers, dtype=np.uint64), {}))
    run(m, *(ev(T0 + i, msisdn=s) for i, s in enumerate(subscribers)),
        ev(T0 + MINUTE, msisdn=subscribers[-1], arg=1))
    assert len(m.actions) == 5 * (others + 1) + 5
    assert sorted(c[1] for c in contacts(m)[-5:]) == [f"new{k}" for k in range(5)]
    # the cooldown turns the second match down before it counts as one
    assert all(m.funnel[f"old{k}"]["matched"] == others + 1 for k in range(5))
