"""Traces that are not event streams (issue 9, item 7): a JSON-lines, CSV, JSON or gzip file,
an empty one, event times in seconds, each named in one line by `replay` and `check` and set
aside by the service; times before 2000 or after 2100 warned about once; late events (ts below
the engine clock) counted alike by the core and the reference model."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import pytest

from engine.api import Engine
from engine.compile import World
from engine.config import EVENT_TYPES, CampaignSpec, Config, PolicySpec
from engine.model import ReferenceModel

T0 = 1_767_225_600_000          # 2026-01-01T00:00:00Z
A, B = 13_800_000_001, 13_800_000_002
CALL = EVENT_TYPES["CALL_MO_END"]


@dataclass
class Profiles:
    """The fields of loaders.profiles.Profiles the core and the model read."""
    path: Path
    msisdn: np.ndarray
    columns: dict
    tags: object = None
    bad_rows: int = 0


def ev(ts, type=CALL, msisdn=A) -> bytes:
    return msgpack.packb([ts, type, msisdn, 0, 0, 0, 0, 0])


def small_world(delay_ms: int = 0):
    config = Config(path=Path("test.toml"), policy=PolicySpec(),
                    campaigns=(CampaignSpec(id="c", on=(CALL,), channel="sms", delay_ms=delay_ms),),
                    event_types=dict(EVENT_TYPES))
    profiles = Profiles(Path("p"), np.array([A, B], dtype=np.uint64), {})
    return config, profiles


def late_counts(data: bytes, *, delay_ms: int = 0, drain_first: bytes = b"") -> tuple[int, int]:
    """(core, model) late events after `drain_first` (then a drain) and `data`."""
    config, profiles = small_world(delay_ms)
    engine = Engine(config, World(profiles, {}, {}))
    model = ReferenceModel(config, profiles, {}, {})
    if drain_first:
        engine.replay(drain_first, drain=True)
        model.feed(drain_first)
        model.finish()
        model.drain()
    engine.replay(data)
    model.feed(data)
    model.finish()
    return engine.stats["totals"]["late_events"], model.late_events


# --------------------------------------------------------------------------- late events

@pytest.mark.parametrize("events,late", [
    ([T0, T0], 0),                          # ts == clock: on time
    ([T0, T0 - 1], 1),                      # one ms below the clock: late
    ([T0, T0 + 1, T0], 1),                  # the clock is the largest ts so far, not the last
    ([T0, T0 - 1, T0 - 1], 2),              # a late event does not move the clock back
    ([0, 0], 0),                            # ts 0 is a time like any other: the first is never late
])
def test_late_events_one_ms_either_side_of_the_clock(events, late):
    assert late_counts(b"".join(ev(t) for t in events)) == (late, late)


def test_the_clock_a_drain_moved_makes_earlier_events_late():
    # a delayed action drained at T0 + 1 h moves the clock there; an event at T0 + 1 min is late
    core, model = late_counts(ev(T0 + 60_000, msisdn=B), delay_ms=3_600_000, drain_first=ev(T0))
    assert core == model == 1


def test_bad_events_are_never_late():
    # a bad value does not move the clock and is not an event: only counted as bad
    data = ev(T0) + msgpack.packb([T0 - 5, 99, A]) + ev(T0)
    assert late_counts(data) == (0, 0)


def test_late_events_in_stats_json_checkpoints_and_reloads(tmp_path):
    config, profiles = small_world()
    engine = Engine(config, World(profiles, {}, {}))
    run = engine.replay(ev(T0) + ev(T0 - 1) + ev(T0 - 2), out=tmp_path / "out")
    assert run.stats["run"]["late_events"] == 2
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["run"]["late_events"] == 2
    # a second run counts its own; the totals go on
    assert engine.replay(ev(T0 - 3)).stats["run"]["late_events"] == 1
    assert engine.stats["totals"]["late_events"] == 3
    # a checkpoint carries the count
    engine.checkpoint(tmp_path / "checkpoint")
    again = Engine(config, World(profiles, {}, {}))
    again.restore(tmp_path / "checkpoint")
    assert again.stats["totals"]["late_events"] == 3
    assert again.replay(ev(T0 - 4)).stats["run"]["late_events"] == 1
    assert again._core.counts()["late_events"] == 4


def test_a_checkpoint_without_the_count_restores_it_as_zero():
    # checkpoints written before late events were counted have no such scalar
    config, profiles = small_world()
    engine = Engine(config, World(profiles, {}, {}))
    engine.replay(ev(T0) + ev(T0 - 1))
    scalars = engine._core.state_scalars()
    sections = dict(engine._core.state_sections())
    del scalars["late_events"]
    again = Engine(config, World(profiles, {}, {}))
    again._core.restore_state(scalars, sections)
    assert again._core.counts()["late_events"] == 0 and again.clock == T0


def test_a_reload_carries_the_count(tmp_path):
    from engine.gen import generate
    generated = generate(tmp_path / "world", subscribers=500, events=2_000, campaigns=2, seed=7)
    engine = Engine.from_config(generated.config)
    engine.replay(generated.traces[0])
    before = engine.stats["totals"]["late_events"]
    engine.replay(ev(engine.clock - 1) + ev(engine.clock - 60_000))
    assert engine.stats["totals"]["late_events"] == before + 2
    assert engine.reload().stats["totals"]["late_events"] == before + 2
