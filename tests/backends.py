"""One scenario, two engines: the thin adapter that runs a hand-built scenario against the
Cython core (through engine.api.Engine, as users drive it) and against the reference model
(engine/model.py) with one interface, so that every expected action, conversion, funnel and
dead letter is asserted on both. The habit of msgpack-python's suite, which runs the same
tests on its extension and on its pure-Python fallback.

A backend is built from a Config and a world (profiles, lists, areas) and read through the
model's interface:

    feed(data)      the next bytes of the stream
    finish()        end of the stream (StreamError when it is broken)
    drain()         emit every pending action at its due time
    actions         (seq, ts, campaign, msisdn, channel, template, kind, trigger_ts, cell)
    conversions     (seq, ts, campaign, msisdn, contact_seq, kind)
    dead_letters    (offset, reason, field, count, bytes_hex)
    funnel          {campaign id: {FUNNEL name: n}}
    unknown_subscribers, late_events, bad_events, bad_events_by_field, bad_bytes,
    largest_bad_value
    counter_value(subscriber index, counter name, ts)

Below the adapter sits the scenario kit the scenario files share: `build(backend, *campaigns,
...)` a fresh engine over subscribers A, B and C, `ev(...)` one event, `run(m, *events)`,
`contacts(m)` and `funnel(m, id)`.

The core only sees a stream when it ends, so `CoreBackend.feed` keeps the chunks and
`finish` replays them as one stream with the same chunk boundaries: a StreamError comes
from `finish` on the core and may come from `feed` on the model, so scenarios that expect
one wrap both calls.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np

from engine.api import Engine
from engine.language.compile import World
from engine.language.config import EVENT_TYPES, CampaignSpec, Config, PolicySpec
from engine.errors import StreamError
from engine.model import ReferenceModel
from engine.records import FUNNEL

__all__ = ["BACKENDS", "CoreBackend", "Profiles", "make_backend", "run_outcome", "model_outcome",
           "assert_same_outcome", "campaign", "build", "ev", "run", "contacts", "funnel"]

BACKENDS = ("core", "model")

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
T0 = 1_767_225_600_000          # 2026-01-01T00:00:00Z, a Thursday
A, B, C = 13_800_000_001, 13_800_000_002, 13_800_000_003
STRANGER = 13_900_000_000       # not a subscriber
OFFNET = 8_613_900_000_000
CALL, SMS, LOC, POWER_ON, POWER_OFF, ORDER = 1, 3, 6, 7, 8, 11


@dataclass
class Profiles:
    """The fields of loaders.profiles.Profiles that the core and the model read."""
    path: Path
    msisdn: np.ndarray
    columns: dict
    tags: object = None
    bad_rows: int = 0


def _rows(columns: dict) -> list[tuple]:
    """Column arrays -> one tuple of Python values per record."""
    values = [column.tolist() for column in columns.values()]
    return list(zip(*values))


def run_outcome(run) -> dict:
    """What one replay of a fresh engine produced (drained or not), in the model's shapes:
    records, funnels and counts, for comparing a whole run with the model's."""
    return {
        "actions": _rows(run.action_columns()),
        "conversions": _rows(run.conversion_columns()),
        "dead_letters": _rows(run.dead_letter_columns()),
        "funnel": {cid: {k: f[k] for k in FUNNEL} for cid, f in run.stats["campaigns"].items()},
        "unknown_subscribers": run.stats["run"]["unknown_subscribers"],
        "late_events": run.stats["run"]["late_events"],
        "bad_events_by_field": run.stats["run"]["bad_events_by_field"],
        "bad_bytes": run.stats["run"]["bad_bytes"],
        "largest_bad_value": largest_of(run.stats["run"]["largest_bad_value"]),
    }


def largest_of(figure):
    """stats.json's largest_bad_value as the model keeps it (offset and bytes; the model reads
    no files)."""
    return None if figure is None else {"offset": figure["offset"], "bytes": figure["bytes"]}


def model_outcome(model) -> dict:
    """The same figures of a ReferenceModel."""
    return {
        "actions": list(model.actions),
        "conversions": list(model.conversions),
        "dead_letters": list(model.dead_letters),
        "funnel": {cid: {k: f.get(k, 0) for k in FUNNEL} for cid, f in model.funnel.items()},
        "unknown_subscribers": model.unknown_subscribers,
        "late_events": model.late_events,
        "bad_events_by_field": model.bad_events_by_field,
        "bad_bytes": model.bad_bytes,
        "largest_bad_value": model.largest_bad_value,
    }


def assert_same_outcome(run, model) -> None:
    """Every figure equal, compared one by one so that a failure names the figure."""
    got, expected = run_outcome(run), model_outcome(model)
    for name in expected:
        assert got[name] == expected[name], name


class CoreBackend:
    """engine.api.Engine behind the reference model's interface."""

    def __init__(self, config, profiles, lists, areas, *, max_event_bytes: int = 65536,
                 record_takers: bool = False, watch=()):
        self.engine = Engine(config, World(profiles, lists, areas), max_event_bytes=max_event_bytes,
                             record_takers=record_takers)
        if watch:
            self.engine.watch(watch)
        self.actions: list[tuple] = []
        self.conversions: list[tuple] = []
        self.dead_letters: list[tuple] = []
        self._chunks: list[bytes] = []

    def feed(self, data) -> None:
        self._chunks.append(bytes(data))

    def finish(self) -> None:
        chunks, self._chunks = self._chunks, []
        try:
            run = self.engine.replay(iter(chunks))
        except StreamError as error:
            self._take(error.run)       # what was emitted before the broken value is kept
            raise
        self._take(run)

    def drain(self) -> None:
        self._take(self.engine.drain())

    def _take(self, run) -> None:
        self.actions += _rows(run.action_columns())
        self.conversions += _rows(run.conversion_columns())
        self.dead_letters += _rows(run.dead_letter_columns())

    @property
    def funnel(self) -> dict:
        return {cid: {k: f[k] for k in FUNNEL} for cid, f in self.engine.stats["campaigns"].items()}

    @property
    def explanations(self) -> dict:
        """{msisdn: entries} of the watched subscribers, as the model's `explanations`."""
        return {m: self.engine.explanation(m)["events"] for m in self.engine.watched}

    @property
    def takers(self):
        return self.engine.takers() if self.engine.record_takers else None

    @property
    def unknown_subscribers(self) -> int:
        return self.engine.stats["totals"]["unknown_subscribers"]

    @property
    def late_events(self) -> int:
        return self.engine.stats["totals"]["late_events"]

    @property
    def bad_events(self) -> dict:
        return dict(self.engine.stats["totals"]["bad_events"])

    @property
    def bad_events_by_field(self) -> dict:
        return self.engine.stats["totals"]["bad_events_by_field"]

    @property
    def bad_bytes(self) -> int:
        return self.engine.stats["totals"]["bad_bytes"]

    @property
    def largest_bad_value(self):
        return self.engine._core.counts()["largest_bad_value"]

    def counter_value(self, subscriber: int, name: str, ts: int) -> int:
        index = [k.name for k in self.engine.config.counters].index(name)
        return self.engine._core.counter_value(subscriber, index, ts)


class _ModelBackend(ReferenceModel):
    """The reference model with the adapter's one addition."""

    def counter_value(self, subscriber: int, name: str, ts: int) -> int:
        return self._counter_value(subscriber, name, ts)


def make_backend(kind: str, config, profiles, lists, areas, **kw):
    """A fresh engine of `kind` ("core" or "model") over this world."""
    if kind == "core":
        return CoreBackend(config, profiles, lists, areas, **kw)
    if kind == "model":
        return _ModelBackend(config, profiles, lists, areas, **kw)
    raise ValueError(f"unknown backend {kind!r}")


# ---------------------------------------------------------------------------- the scenario kit
def campaign(id="c", on=(CALL,), channel="sms", **kw) -> CampaignSpec:
    return CampaignSpec(id=id, on=on, channel=channel, **kw)


def build(backend, *campaigns, counters=(), markers=(), policy=PolicySpec(), utc_offset_ms=0,
          max_pending=10_000_000, lists=None, areas=None, event_types=None, profiles=None, channel_budgets=None, **kw):
    """A fresh engine of `backend` over subscribers A, B and C; `channel_budgets` is
    `[channels]` (channel name -> daily_budget)."""
    config = Config(
        path=Path("test.toml"), utc_offset_ms=utc_offset_ms, max_pending=max_pending,
        policy=policy, counters=tuple(counters), markers=tuple(markers), channel_budgets=dict(channel_budgets or {}),
        campaigns=tuple(sorted(campaigns, key=lambda c: (-c.priority, c.id))),
        event_types=event_types or dict(EVENT_TYPES))
    profiles = profiles or Profiles(Path("p"), np.array([A, B, C], dtype=np.uint64), {})
    lists = {name: np.array(sorted(v), dtype=np.uint64) for name, v in (lists or {}).items()}
    areas = {name: np.array(sorted(v), dtype=np.uint32) for name, v in (areas or {}).items()}
    return make_backend(backend, config, profiles, lists, areas, **kw)


def ev(ts, type=CALL, msisdn=A, peer=0, cell=0, dur=0, flags=0, arg=0) -> bytes:
    return msgpack.packb([ts, type, msisdn, peer, cell, dur, flags, arg])


def run(m, *events, drain=False):
    m.feed(b"".join(events))
    m.finish()
    if drain:
        m.drain()
    return m


def contacts(m):
    """(t, campaign, msisdn, kind) of every action, in seq order."""
    assert [a[0] for a in m.actions] == list(range(1, len(m.actions) + 1))
    return [(a[1], a[2], a[3], a[6]) for a in m.actions]


def funnel(m, cid):
    return {k: v for k, v in m.funnel[cid].items() if v}
