"""Random worlds for the property tests: a configuration, profiles, lists, areas and a trace.

Worlds are small (a few dozen subscribers, a few cells) so that every rule actually fires:
the same subscriber meets the same campaign again and again, timers overlap, days roll over.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import pyarrow as pa
from hypothesis import strategies as st

from engine.config import (
    ALL_DAYS, EVENT_TYPES, CampaignSpec, Config, CounterSpec, OutputSpec, PolicySpec,
)

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
T0 = 1_767_225_600_000          # 2026-01-01T00:00:00Z, a Thursday
TYPE_NAMES = {code: name for name, code in EVENT_TYPES.items()}
TYPES = sorted(EVENT_TYPES.values())


@dataclass
class Profiles:
    """Same fields as loaders.profiles.Profiles."""
    path: Path
    msisdn: np.ndarray
    columns: dict
    tags: object
    bad_rows: int = 0


@dataclass
class RandomWorld:
    config: Config
    profiles: Profiles
    lists: dict
    areas: dict
    trace: bytes
    boundaries: list        # byte offsets where an event starts


def _subset(draw, pool, max_size=None):
    return sorted(draw(st.sets(st.sampled_from(pool), max_size=max_size or len(pool))))


@st.composite
def campaigns(draw, i, list_names, area_names, counter_names):
    on = tuple(_subset(draw, TYPES, 3)) or (1,)
    delay = draw(st.sampled_from([0, 0, MINUTE, 5 * MINUTE, HOUR]))
    area = draw(st.none() | st.sampled_from(area_names))
    audience = draw(st.none() | st.sampled_from(list_names))
    recheck_pool = ["powered_on", "hours"] + (["area"] if area else []) + (["audience"] if audience else [])
    counter = draw(st.none() | st.sampled_from(counter_names)) if counter_names else None
    hours = draw(st.none() | st.tuples(st.integers(0, 1439), st.integers(0, 1439)).filter(lambda h: h[0] != h[1]))
    return CampaignSpec(
        id=f"c{i}",
        on=on,
        channel=draw(st.sampled_from(["sms", "boss", "outbound"])),
        priority=draw(st.integers(0, 3)),
        audience=audience,
        peer_in=draw(st.none() | st.none() | st.sampled_from(list_names)),
        exclude=tuple(_subset(draw, list_names, 1)) if draw(st.booleans()) else (),
        area=area,
        enter=bool(area) and draw(st.booleans()),
        hours=hours if draw(st.booleans()) else None,
        days=draw(st.sampled_from([ALL_DAYS, ALL_DAYS, 0b0011111, 0b1100000, 0b1010101])),
        counter=counter,
        at_least=draw(st.integers(0, 4)) if counter else 0,
        delay_ms=delay,
        recheck=frozenset(_subset(draw, recheck_pool)) if delay else frozenset(),
        cooldown_ms=draw(st.sampled_from([0, 0, 10 * MINUTE, DAY])),
        once=draw(st.booleans()) and draw(st.booleans()),
        exempt=frozenset(_subset(draw, ["min_gap", "max_per_day", "quiet_hours"], 2)),
        template=draw(st.sampled_from(["", "T1", "OFFER,\"Q\""])),
        holdout=draw(st.sampled_from([0.0, 0.0, 0.3, 1.0])),
        convert_on=(11,) if draw(st.booleans()) else (),
        convert_arg=draw(st.none() | st.just(3001)),
        convert_within_ms=draw(st.none() | st.sampled_from([HOUR, DAY])),
        stop_after=draw(st.none() | st.integers(1, 3)),
        where=draw(st.none() | st.sampled_from(["arpu >= 50", "not (arpu < 20)", "'vip' in tags"])),
    )


def _encode_event(draw, ev):
    """Array or map form, integer or named type, integer or digit-string MSISDN."""
    ts, typ, msisdn, peer, cell, dur, flags, arg = ev
    if draw(st.booleans()) and draw(st.booleans()):
        typ = TYPE_NAMES[typ]
    if draw(st.integers(0, 5)) == 0:
        msisdn = str(msisdn)
    if draw(st.integers(0, 3)) == 0:
        keys = ["ts", "type", "msisdn", "peer", "cell", "dur", "flags", "arg"]
        m = {k: v for k, v in zip(keys, (ts, typ, msisdn, peer, cell, dur, flags, arg)) if v or k in keys[:3]}
        if draw(st.booleans()):
            m["note"] = "x"
        return msgpack.packb(m)
    fields = [ts, typ, msisdn, peer, cell, dur, flags, arg]
    while len(fields) > 3 and fields[-1] == 0 and draw(st.booleans()):
        fields.pop()
    return msgpack.packb(fields)


BAD_EVENTS = [
    msgpack.packb([1, 99, 13800000001]),
    msgpack.packb([-5, 1, 13800000001]),
    msgpack.packb("hello"),
    msgpack.packb([1, 1, "0138"]),
    msgpack.packb({"ts": 1, "ts ": 2}),
    msgpack.packb([1, 1]),
    msgpack.packb([1.5, 1, 13800000001]),
]


@st.composite
def worlds(draw, max_events=120):
    n = draw(st.integers(1, 12))
    base = 13_800_000_000
    msisdn = np.array(sorted(draw(st.sets(st.integers(base, base + 40), min_size=n, max_size=n))), dtype=np.uint64)
    draw(st.randoms()).shuffle(msisdn)
    numbers = [int(x) for x in msisdn]
    offnet = [8_613_900_000_000 + k for k in range(3)]
    pool = numbers + offnet
    list_names = ["l0", "l1", "l2"]
    lists = {name: np.array(sorted(set(_subset(draw, pool))), dtype=np.uint64) for name in list_names}
    areas = {"a0": np.array(sorted(set(draw(st.lists(st.integers(1, 8), min_size=1, max_size=4)))), dtype=np.uint32),
             "a1": np.array(sorted(set(draw(st.lists(st.integers(1, 8), min_size=1, max_size=4)))), dtype=np.uint32)}
    counters = tuple(
        CounterSpec(name=f"k{j}", on=tuple(_subset(draw, [1, 2, 3, 9], 2)) or (3,),
                    flags=draw(st.sampled_from([0, 0, 1, 2, 3])),
                    add=draw(st.sampled_from(["count", "count", "dur", "dur_minutes"])),
                    window_ms=draw(st.none() | st.sampled_from([HOUR, DAY])))
        for j in range(draw(st.integers(0, 3))))
    nr_campaigns = draw(st.integers(1, 5))
    camps = [draw(campaigns(i, list_names, ["a0", "a1"], [c.name for c in counters])) for i in range(nr_campaigns)]
    camps.sort(key=lambda c: (-c.priority, c.id))
    policy = PolicySpec(
        blacklist=tuple(_subset(draw, list_names, 1)) if draw(st.booleans()) else (),
        quiet_hours=draw(st.none() | st.sampled_from([(22 * 60, 8 * 60), (0, 6 * 60), (12 * 60, 13 * 60)])),
        min_gap_ms=draw(st.sampled_from([0, 0, MINUTE, 30 * MINUTE, DAY])),
        max_per_day=draw(st.none() | st.integers(1, 3)),
    )
    config = Config(
        path=Path("random.toml"),
        utc_offset_ms=draw(st.sampled_from([0, 8 * HOUR, -5 * HOUR - 30 * MINUTE])),
        max_pending=draw(st.sampled_from([10_000_000, 10_000_000, 2])),
        max_dead_letters=draw(st.sampled_from([100_000, 100_000, 0, 1])),
        policy=policy,
        counters=counters,
        campaigns=tuple(camps),
        output=OutputSpec(max_records=draw(st.sampled_from([3, 100_000]))),
    )
    arpu = draw(st.lists(st.none() | st.integers(0, 100), min_size=n, max_size=n))
    tags = draw(st.lists(st.sampled_from([[], ["vip"], ["student", "vip"], ["student"]]), min_size=n, max_size=n))
    profiles = Profiles(Path("profiles"), msisdn, {"arpu": pa.array(arpu, type=pa.int64())},
                        pa.array(tags, type=pa.list_(pa.string())))

    parts = []
    ts = T0 + draw(st.integers(0, 7)) * DAY + draw(st.integers(0, 23)) * HOUR
    for _ in range(draw(st.integers(1, max_events))):
        if draw(st.integers(0, 30)) == 0:
            # sometimes a run of the same bad value: one dead letter with its count
            parts += [draw(st.sampled_from(BAD_EVENTS))] * draw(st.sampled_from([1, 1, 2, 5]))
            continue
        ts += draw(st.sampled_from([0, 1000, MINUTE, 3 * MINUTE, 10 * MINUTE, HOUR, 5 * HOUR]))
        late = draw(st.integers(0, 10)) == 0
        typ = draw(st.sampled_from(TYPES))
        ev = (
            max(0, ts - 5 * MINUTE) if late else ts,
            typ,
            draw(st.sampled_from(numbers + [13_900_000_000])),
            draw(st.sampled_from(pool + [0, 0])),
            draw(st.integers(0, 9)),
            draw(st.sampled_from([0, 30, 60, 61, 3600])),
            draw(st.integers(0, 7)),
            draw(st.sampled_from([0, 3001, 3002])),
        )
        parts.append(_encode_event(draw, ev))
    boundaries = list(np.cumsum([0] + [len(p) for p in parts])[:-1])
    return RandomWorld(config, profiles, lists, areas, b"".join(parts), [int(b) for b in boundaries])
