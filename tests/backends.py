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
    unknown_subscribers, late_events, bad_events, bad_events_by_field
    counter_value(subscriber index, counter name, ts)

The core only sees a stream when it ends, so `CoreBackend.feed` keeps the chunks and
`finish` replays them as one stream with the same chunk boundaries: a StreamError comes
from `finish` on the core and may come from `feed` on the model, so scenarios that expect
one wrap both calls.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.api import Engine
from engine.compile import World
from engine.errors import StreamError
from engine.model import ReferenceModel
from engine.records import FUNNEL

__all__ = ["BACKENDS", "CoreBackend", "Profiles", "make_backend"]

BACKENDS = ("core", "model")


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


class CoreBackend:
    """engine.api.Engine behind the reference model's interface."""

    def __init__(self, config, profiles, lists, areas, *, max_event_bytes: int = 65536):
        self.engine = Engine(config, World(profiles, lists, areas), max_event_bytes=max_event_bytes)
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
