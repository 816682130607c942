"""Shared fixtures of the pytest-benchmark suites (bench/test_bench_*.py).

    make bench                                   # = .venv/bin/python -m pytest -q bench --benchmark-only
    SIGMATCH_BENCH_SUBSCRIBERS=2000000 SIGMATCH_BENCH_EVENTS=10000000 make bench

`make test` never runs these: pyproject's testpaths name only tests/ and examples/.

One synthetic world is built per session in a temporary directory (200k subscribers and
2M events by default, set by SIGMATCH_BENCH_SUBSCRIBERS / SIGMATCH_BENCH_EVENTS) with
MAX_CAMPAIGNS campaigns by engine.world.gen; the matcher's variants take subsets of them.

The traces the decoder reads are re-encoded here from the generated trace's events (decoded
once), so that their form is known whatever the generator writes: array form and map form
with fixed-width integers, and array form with BAD_FRACTION of the events made bad in six
ways (each checked to give the dead-letter reason it is meant to give).

Each benchmark records its throughput (events/s or records/s, from the median round) in
`benchmark.extra_info`; the figures are also printed after the run.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.language.compile import World, load_world  # noqa: E402
from engine.world.gen import generate  # noqa: E402
from engine.language.config import Config, load_config  # noqa: E402

SUBSCRIBERS = int(os.environ.get("SIGMATCH_BENCH_SUBSCRIBERS", 200_000))
EVENTS = int(os.environ.get("SIGMATCH_BENCH_EVENTS", 2_000_000))
MAX_CAMPAIGNS = 48
SEED = 1
BAD_FRACTION = 0.05


# --------------------------------------------------------------------------- the world

def build_world(directory: Path, *, subscribers: int, events: int, campaigns: int,
                seed: int = SEED) -> tuple[Config, bytes]:
    """A synthetic world in `directory` (engine.world.gen): its Config and the trace's bytes."""
    generated = generate(directory, subscribers=subscribers, events=events, campaigns=campaigns, seed=seed)
    return load_config(generated.config), generated.trace.read_bytes()


@dataclass
class BenchWorld:
    directory: Path
    config: Config        # every campaign (MAX_CAMPAIGNS unless the generator made fewer)
    world: World          # profiles, lists and areas, loaded once
    trace: bytes          # the generator's trace
    events: np.ndarray    # its events, decoded (engine.records.EVENT_DTYPE)

    def config_with(self, nr_campaigns: int, delays: bool = True) -> Config:
        """The first `nr_campaigns` campaigns by id (the generators cycle through their
        campaign kinds by id); without `delays`, every action is immediate."""
        chosen = {c.id for c in sorted(self.config.campaigns, key=lambda c: c.id)[:nr_campaigns]}
        campaigns = tuple(c for c in self.config.campaigns if c.id in chosen)   # keeps the core's order
        if not delays:
            campaigns = tuple(dataclasses.replace(c, delay_ms=0, recheck=frozenset()) for c in campaigns)
        return dataclasses.replace(self.config, campaigns=campaigns)

    def engine(self, config: Optional[Config] = None):
        from engine.api import Engine
        return Engine(config or self.config, self.world)


@pytest.fixture(scope="session")
def bench_world(tmp_path_factory) -> BenchWorld:
    directory = tmp_path_factory.mktemp("world")
    config, trace = build_world(directory, subscribers=SUBSCRIBERS, events=EVENTS, campaigns=MAX_CAMPAIGNS)
    world = load_world(config)
    bench = BenchWorld(directory, config, world, trace, np.zeros(0))
    core = bench.engine()._core
    events, status, offset = core.decode(trace, keep=True)
    assert status == 0, f"the generated trace does not decode: status {status} at {offset}"
    bench.events = events
    return bench


# --------------------------------------------------------------------------- traces

def _int_field(values: np.ndarray) -> tuple[str, Optional[int]]:
    """The narrowest fixed-width msgpack encoding of all `values` (unsigned): (dtype, tag
    byte, None for a positive fixint)."""
    top = int(values.max()) if len(values) else 0
    if top < 128:
        return "u1", None
    if top < 2**32:
        return ">u4", 0xCE
    return ">u8", 0xCF


def _wire(events: np.ndarray, keys: bool) -> np.ndarray:
    """Events as one structured array whose bytes are msgpack: a fixarray of 8 (or a fixmap
    of 8 with fixstr keys) of fixed-width integers; ts and msisdn are always uint64, type a
    positive fixint, the others as narrow as the largest value allows."""
    columns = {
        "ts": events["ts"].astype(np.uint64), "type": events["type"].astype(np.uint64),
        "msisdn": events["msisdn"], "peer": events["peer"], "cell": events["cell"].astype(np.uint64),
        "dur": events["dur"], "flags": events["flags"], "arg": events["arg"],
    }
    assert int(columns["type"].max()) < 128
    fields, tags, fill = [("head", "u1")], {"head": 0x88 if keys else 0x98}, {}
    for name, values in columns.items():
        if keys:
            fields.append((f"key_{name}", f"S{1 + len(name)}"))
            fill[f"key_{name}"] = bytes([0xA0 | len(name)]) + name.encode()
        if name in ("ts", "msisdn"):
            kind, tag = ">u8", 0xCF
        elif name == "type":
            kind, tag = "u1", None
        else:
            kind, tag = _int_field(values)
        if tag is not None:
            fields.append((f"{name}_tag", "u1"))
            tags[f"{name}_tag"] = tag
        fields.append((name, kind))
    wire = np.empty(len(events), dtype=np.dtype(fields))
    for name, value in {**tags, **fill}.items():
        wire[name] = value
    for name, values in columns.items():
        wire[name] = values
    return wire


def _spoil(wire: np.ndarray, fraction: float, seed: int) -> dict[str, int]:
    """Make `fraction` of the array-form events bad in place, each in one of six ways that
    keep its width; returns the dead letters expected, by reason."""
    rng = np.random.default_rng(seed)
    bad = np.flatnonzero(rng.random(len(wire)) < fraction)
    how = rng.integers(0, 6, len(bad))
    expected = {}

    def spoil(k, reason, change):
        rows = bad[how == k]
        change(rows)
        expected[reason] = expected.get(reason, 0) + len(rows)

    def not_an_event(rows):          # a bin8 value as long as the event
        wire["head"][rows] = 0xC4
        wire["ts_tag"][rows] = wire.dtype.itemsize - 2

    def missing_type(rows):          # type nil
        wire["type"][rows] = 0xC0

    def float_ts(rows):              # ts a float64
        wire["ts_tag"][rows] = 0xCB

    def msisdn_too_big(rows):
        wire["msisdn"][rows] = 10**15 + rows.astype(np.uint64)

    def msisdn_leading_zero(rows):   # a fixstr of 8 digits starting with '0'
        wire["msisdn_tag"][rows] = 0xA8
        wire["msisdn"][rows] = int.from_bytes(b"01380000", "big")

    def unknown_type(rows):
        wire["type"][rows] = 127

    spoil(0, "not_an_event", not_an_event)
    spoil(1, "missing_field", missing_type)
    spoil(2, "wrong_type", float_ts)
    spoil(3, "out_of_range", msisdn_too_big)
    spoil(4, "bad_number", msisdn_leading_zero)
    spoil(5, "unknown_type", unknown_type)
    return expected


@dataclass
class Trace:
    name: str
    data: bytes
    events: int        # events in the trace, good and bad
    good: int          # events the decoder returns
    bad: int           # dead letters it writes


@pytest.fixture(scope="session")
def traces(bench_world) -> dict[str, Trace]:
    """'array', 'map' and 'array_bad' traces of the world's events, each checked once."""
    events = bench_world.events
    n = len(events)
    array = _wire(events, keys=False)
    spoiled = array.copy()
    expected = _spoil(spoiled, BAD_FRACTION, SEED)
    nr_bad = sum(expected.values())
    out = {
        "array": Trace("array", array.tobytes(), n, n, 0),
        "map": Trace("map", _wire(events, keys=True).tobytes(), n, n, 0),
        "array_bad": Trace("array_bad", spoiled.tobytes(), n, n - nr_bad, nr_bad),
    }
    core = bench_world.engine()._core
    for trace in out.values():
        before = core.counts()["bad_events"]
        decoded, status, offset = core.decode(trace.data, keep=True)
        assert status == 0, f"{trace.name}: status {status} at {offset}"
        # a dead letter is a run of identical bad values: the counts say how many there were
        core.take_dead_letters()
        bad = {r: n - before[r] for r, n in core.counts()["bad_events"].items() if n - before[r]}
        assert len(decoded) == trace.good and sum(bad.values()) == trace.bad, trace.name
        if not trace.bad:
            assert np.array_equal(decoded, events), f"{trace.name}: events differ from the generated trace"
        else:
            assert bad == expected
    return out


# --------------------------------------------------------------------------- figures

_RATES: list[tuple[str, int, str, float, float]] = []


@pytest.fixture
def record_rate(benchmark, request):
    """`record_rate(count, unit)` after the benchmark ran: `count` items per round, stored
    in extra_info as `<unit>_per_s` (median round) and `<unit>_per_s_best` (fastest)."""
    def record(count: int, unit: str) -> None:
        benchmark.extra_info[unit] = count
        stats = getattr(benchmark, "stats", None)
        if stats is None:        # --benchmark-disable: ran once, untimed
            return
        median, best = count / stats.stats.median, count / stats.stats.min
        benchmark.extra_info[f"{unit}_per_s"] = round(median)
        benchmark.extra_info[f"{unit}_per_s_best"] = round(best)
        _RATES.append((request.node.name, count, unit, median, best))
    return record


def pytest_terminal_summary(terminalreporter):
    if not _RATES:
        return
    terminalreporter.section("throughput (median round; best round)")
    width = max(len(name) for name, *_ in _RATES)
    for name, count, unit, median, best in _RATES:
        terminalreporter.write_line(
            f"{name:<{width}}  {count:>10,} {unit:<8} {median / 1e6:8.2f}M {unit}/s  ({best / 1e6:.2f}M)")
