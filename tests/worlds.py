"""Random worlds for the property tests: a configuration, profiles, lists, areas and a trace.

Worlds are small (a few subscribers, a few cells) and their events are shaped so that every
rule actually fires both ways: the same subscriber meets the same campaign again and again,
timers overlap and fall due at events, days roll over. tests/rule_coverage.py counts, over
many worlds, how often each rule passed and failed; tests/test_equivalence.py fails when
one never does.
"""
from __future__ import annotations

import datetime
import random
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import msgpack
import numpy as np
import pyarrow as pa
from hypothesis import strategies as st

from engine.language.config import (
    ALL_DAYS, EVENT_TYPES, CampaignSpec, Config, CounterSpec, MarkerCondition, MarkerSpec, OutputSpec, PolicySpec,
    VariantSpec,
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


def _sometimes(draw, strategy, one_in=3):
    """`strategy`'s value one time in `one_in`, else None: a campaign keeps most of its
    conditions off, so that the ones it has are met often enough to be passed as well as failed."""
    return draw(strategy) if draw(st.integers(0, one_in - 1)) == 0 else None


# Most events and most triggers come from these types, so that campaigns meet their triggers;
# the rest of the types still appear.
HOT_TYPES = [1, 3, 6, 7, 11]
DELAYS = [MINUTE, 5 * MINUTE, HOUR, 5 * HOUR]
COOLDOWNS = [10 * MINUTE, HOUR, DAY]
MARK_WITHIN = [HOUR, 5 * HOUR, DAY]
MIN_GAPS = [MINUTE, 30 * MINUTE, HOUR]
WINDOWS = [HOUR, DAY]
CONVERT_WITHIN = [HOUR, DAY]
# Hours that an event stream of a day or two is inside and outside of, some wrapping midnight.
HOURS = [(9 * 60, 18 * 60), (8 * 60, 12 * 60), (20 * 60, 2 * 60), (22 * 60, 8 * 60), (0, 6 * 60),
         (10 * 60, 10 * 60 + 30), (12 * 60, 12 * 60 + 30), (18 * 60, 19 * 60), (6 * 60, 23 * 60),
         (7 * 60, 22 * 60)]


def _when(rnd, names):
    """A `when` over the world's counters, near the values a world's counters reach."""
    k1, k2, n = rnd.choice(names), rnd.choice(names), rnd.randint(0, 3)
    return rnd.choice([
        f"{k1} >= {n}", f"{k1} < {n}", f"{k1} == {n}", f"{k1} != {n}", f"{k1} <= {n}", f"{k1} > {n}",
        f"{k1} >= 2 * {k2} + 1", f"not {k1} == {n}", f"{k1} + {k2} < {n + 2} or {k1} > 3",
        f"({k1} - {k2}) * 2 != 0 and {k1} <= {n + 1}", f"3 * {k2} - {k1} > 0 - 2",
        f"not ({k1} > 1 or {k2} > 1) and {k1} + 1 >= {n}", f"{k1} - {k2} == 0",
    ])


# Profile dates for `anniversary`: most on the trace's first days (a day either side), some
# on February 29 or its neighbours, some not dates at all.
NOT_DATES = [None, None, "2024-02-30", "1990-1-5", "", " 1990-01-02"]


def _moments(config, profiles, n, first_day, trace: bytes):
    """`when` and `anniversary` on some campaigns, and the profiles' `birth_date`. Chosen by a
    generator seeded with the world's trace rather than drawn from hypothesis: drawing them
    would change every world after the first (a derandomized run draws them all from one
    stream), and with them how often the worlds reach each of the other rules."""
    rnd = random.Random(zlib.crc32(trace))
    names = [k.name for k in config.counters]
    start = datetime.date(2026, 1, 1) + datetime.timedelta(days=first_day)
    near = [f"19{90 + k}-{(start + datetime.timedelta(days=d)).strftime('%m-%d')}"
            for k, d in enumerate([-1, 0, 0, 0, 1, 1, 2, 3])]
    others = ["2000-02-29", "1999-02-28", "1999-03-01"] + NOT_DATES
    birth = [rnd.choice(near if rnd.randint(0, 7) else others) for _ in range(n)]
    profiles.columns["birth_date"] = pa.array(birth, type=pa.string())
    campaigns = []
    for c in config.campaigns:
        if c.id != "c0":        # the campaign open to all stays open
            c = replace(c, when=_when(rnd, names) if names and rnd.randint(0, 3) == 0 else None,
                        anniversary="birth_date" if rnd.randint(0, 3) == 0 else None)
        campaigns.append(c)
    return replace(config, campaigns=tuple(campaigns))


@st.composite
def campaigns(draw, i, list_names, area_names, counter_names, open_to_all=False, first_day=0, marker_names=()):
    """A campaign; `open_to_all` leaves out the conditions on who and where (audience, lists,
    where, area, hours, days, counter), so that the contact policy has contacts to decide on
    in nearly every world."""
    if open_to_all:
        closed = draw(campaigns(i, list_names, area_names, counter_names, first_day=first_day,
                                marker_names=marker_names))
        return replace(closed, audience=None, peer_in=None, exclude=(), where=None, area=None, enter=False,
                       hours=None, days=ALL_DAYS, counter=None, at_least=0,
                       recheck=closed.recheck - {"area", "audience"}, flags=0, arg=None, enabled=True,
                       start=None, end=None, after=(), not_after=())
    on = tuple(_subset(draw, HOT_TYPES, 2)) if draw(st.integers(0, 4)) else tuple(_subset(draw, TYPES, 3))
    on = on or (1,)
    delay = draw(st.sampled_from([0, 0] + DELAYS))
    area = _sometimes(draw, st.sampled_from(area_names))
    # an audience of most (l0) or some (l1) subscribers; l2, a few numbers, is the blacklist's
    audience = _sometimes(draw, st.sampled_from(["l0", "l0", "l1"]))
    hours = _sometimes(draw, st.sampled_from(HOURS), 4)
    recheck_pool = ["powered_on", "hours"] + (["area"] if area else []) + (["audience"] if audience else [])
    recheck = frozenset(_subset(draw, recheck_pool)) if delay else frozenset()
    if delay and audience and draw(st.booleans()):
        recheck |= {"audience"}
    if delay and area and draw(st.integers(0, 3)):
        recheck |= {"area"}
    if delay and hours and draw(st.integers(0, 3)):
        # hours that a delay can run past: rechecked more often than not, with a delay long
        # enough to leave the window now and then
        recheck |= {"hours"}
        delay = max(delay, draw(st.sampled_from([HOUR, 5 * HOUR])))
    counter = _sometimes(draw, st.sampled_from(counter_names)) if counter_names else None
    convert = draw(st.booleans())
    # markers: after / not_after now and then, absent on a delayed campaign more often
    conditions = st.builds(MarkerCondition, st.sampled_from(list(marker_names) or ["-"]), st.sampled_from(MARK_WITHIN))
    after = (draw(conditions),) if marker_names and draw(st.integers(0, 3)) == 0 else ()
    not_after = (draw(conditions),) if marker_names and draw(st.integers(0, 4)) == 0 else ()
    # local dates around the trace's first (`first_day` days after T0's), so that a campaign
    # starts or ends inside it and a delay now and then runs past the end
    dates = [datetime.date(2026, 1, 1) + datetime.timedelta(days=first_day + k) for k in (-1, 0, 0, 1, 2)]
    start = _sometimes(draw, st.sampled_from(dates[:4]), 10)
    end = _sometimes(draw, st.sampled_from([d for d in dates[1:] if start is None or d >= start]), 7)
    if end is not None and draw(st.booleans()):
        # a delay that outlives the end of the campaign's last day: ending on the trace's
        # first day, a match that day is due the next
        delay, end = DAY, dates[1]
        start = start if start is None or start <= end else None
    return CampaignSpec(
        id=f"c{i}",
        on=on,
        channel=draw(st.sampled_from(["sms", "boss", "outbound"])),
        priority=draw(st.integers(0, 3)),
        audience=audience,
        peer_in=_sometimes(draw, st.sampled_from(list_names), 5),
        exclude=(draw(st.sampled_from(["l1", "l2", "l2"])),) if draw(st.integers(0, 3)) == 0 else (),
        area=area,
        enter=bool(area) and draw(st.booleans()),
        hours=hours,
        days=draw(st.sampled_from([ALL_DAYS] * 5 + [0b0011111, 0b1100000, 0b1010101, 0b0001000])),
        counter=counter,
        at_least=draw(st.integers(1, 3)) if counter else 0,
        delay_ms=delay,
        recheck=recheck,
        cooldown_ms=draw(st.sampled_from([0, 0] + COOLDOWNS)),
        once=draw(st.integers(0, 4)) == 0,
        exempt=frozenset(_subset(draw, ["min_gap", "max_per_day", "quiet_hours"], 2)) if draw(st.booleans()) else frozenset(),
        template=draw(st.sampled_from(["", "T1", "OFFER,\"Q\""])),
        holdout=draw(st.sampled_from([0.0, 0.0, 0.3, 0.5, 1.0])),
        convert_on=(11,) if convert else (),
        convert_arg=draw(st.none() | st.just(3001)),
        convert_within_ms=draw(st.none() | st.sampled_from(CONVERT_WITHIN)),
        stop_after=_sometimes(draw, st.integers(1, 3)),
        where=_sometimes(draw, st.sampled_from(["arpu >= 50", "not (arpu < 20)", "'vip' in tags"]), 4),
        flags=_sometimes(draw, st.sampled_from([1, 2, 3]), 5) or 0,
        arg=_sometimes(draw, st.sampled_from([0, 3001]), 6),
        enabled=draw(st.integers(0, 19)) != 0,
        start=start,
        end=end,
        after=after,
        not_after=not_after,
        absent=(tuple(_subset(draw, list(marker_names), 2)) if marker_names and delay and draw(st.integers(0, 2)) == 0
                else ()),
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


def _with_contact_rules(config: Config, trace: bytes) -> Config:
    """Budgets small enough to be reached within a world's day or two of events, a rolling
    contact cap that a few contacts fill, and a global control group. Chosen by a generator
    seeded with the world's trace rather than drawn from hypothesis (as `_moments`): drawing
    them would change every later world of a derandomized run."""
    rnd = random.Random(zlib.crc32(trace, 0x11))

    def sometimes(one_in, pick):
        return pick() if rnd.randrange(one_in) == 0 else None

    # a delay that rechecks hours runs past them now and then (the rules below take contacts
    # away: more of them are needed to see a recheck of hours fail)
    camps = tuple(replace(c, delay_ms=rnd.choice([9 * HOUR, 17 * HOUR])) if "hours" in c.recheck and rnd.randrange(2)
                  else c for c in config.campaigns)
    camps = tuple(replace(c, daily_budget=sometimes(3, lambda: rnd.randint(1, 3)),
                          total_budget=sometimes(5, lambda: rnd.randint(2, 8)),
                          exempt=c.exempt | ({"max_in_window"} if rnd.randrange(6) == 0 else set()))
                  for c in camps)
    used = sorted({c.channel for c in camps})
    channel_budgets = {name: rnd.randint(1, 5) for name in used if rnd.randrange(3) == 0}
    max_in_window = sometimes(2, lambda: (rnd.randint(1, 2), rnd.choice([HOUR, DAY, DAY])))
    global_holdout = rnd.choice([0.0, 0.0, 0.0, 0.3, 0.5, 1.0])
    return replace(config, campaigns=camps, channel_budgets=channel_budgets,
                   policy=replace(config.policy, max_in_window=max_in_window, global_holdout=global_holdout))


def _with_variants(config: Config, trace: bytes) -> Config:
    """Variants in about one campaign in three: two to four templates (one now and then), weights
    from 1 to 5 or up to 10,000, so that every variant, the first and the later ones, gets
    subscribers. Seeded with the trace, drawn last, as `_with_contact_rules`: the worlds
    before them stay as they were."""
    rnd = random.Random(zlib.crc32(trace, 0x7a))

    def variants():
        big = rnd.randrange(4) == 0
        return tuple(VariantSpec(f"V{k}", rnd.randint(1, 10_000) if big else rnd.randint(1, 5))
                     for k in range(rnd.choice([1, 2, 2, 3, 4])))
    camps = tuple(replace(c, template="", variants=variants()) if rnd.randrange(3) == 0 else c
                  for c in config.campaigns)
    return replace(config, campaigns=camps)


@st.composite
def worlds(draw, max_events=120):
    """A world whose events mostly fall on a few subscribers, cells, peers and the campaigns'
    own trigger types, at steps that land on the configuration's own durations (a delay, a
    cooldown, a window) and a millisecond either side of them: so that most worlds act, and
    every matching condition, recheck and policy rule both passes and rejects somewhere
    (tests/rule_coverage.py measures it)."""
    n = draw(st.integers(1, 8))
    base = 13_800_000_000
    msisdn = np.array(sorted(draw(st.sets(st.integers(base, base + 40), min_size=n, max_size=n))), dtype=np.uint64)
    draw(st.randoms()).shuffle(msisdn)
    numbers = [int(x) for x in msisdn]
    offnet = [8_613_900_000_000 + k for k in range(3)]
    pool = numbers + offnet
    list_names = ["l0", "l1", "l2"]
    # l0 holds most numbers (an audience that lets most through), l1 any subset, l2 a few (a
    # blacklist that leaves most of the subscribers to the campaigns)
    lists = {"l0": np.array(sorted(set(pool) - set(_subset(draw, pool, max(1, len(pool) // 3)))), dtype=np.uint64),
             "l1": np.array(sorted(set(_subset(draw, pool))), dtype=np.uint64),
             "l2": np.array(sorted(set(_subset(draw, pool, 2))), dtype=np.uint64)}
    areas = {"a0": np.array(sorted(set(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))), dtype=np.uint32),
             "a1": np.array(sorted(set(draw(st.lists(st.integers(1, 8), min_size=1, max_size=4)))), dtype=np.uint32)}
    counters = tuple(
        CounterSpec(name=f"k{j}", on=tuple(_subset(draw, [1, 2, 3, 6, 9], 2)) or (3,),
                    flags=draw(st.sampled_from([0, 0, 0, 1, 2, 3])),
                    add=draw(st.sampled_from(["count", "count", "count", "dur", "dur_minutes"])),
                    window_ms=window, period=None if window else draw(st.sampled_from([None, None, "day", "week", "month"])),
                    arg=_sometimes(draw, st.just(3001), 5))
        for j in range(draw(st.integers(0, 3)))
        for window in [draw(st.none() | st.sampled_from(WINDOWS))])
    nr_campaigns = draw(st.integers(1, 5))
    first_day = draw(st.integers(0, 7))
    markers = tuple(
        MarkerSpec(name=f"m{j}", on=tuple(_subset(draw, HOT_TYPES + [12], 2)) or (12,),
                   flags=draw(st.sampled_from([0, 0, 0, 1, 2])), arg=_sometimes(draw, st.just(3001), 6))
        for j in range(draw(st.sampled_from([0, 1, 1, 2]))))
    # and, most of the time, "mt": set by the campaigns' own trigger types (known once they are
    # drawn), so that a trigger meets an earlier one and an action waits through a later one
    with_mt = draw(st.integers(0, 3)) > 0
    names = [m.name for m in markers] + (["mt"] if with_mt else [])
    camps = [draw(campaigns(i, list_names, ["a0", "a1"], [c.name for c in counters], open_to_all=i == 0,
                            first_day=first_day, marker_names=names))
             for i in range(nr_campaigns)]
    if with_mt:
        markers += (MarkerSpec("mt", on=tuple(sorted({t for c in camps for t in c.on}))),)
    camps.sort(key=lambda c: (-c.priority, c.id))
    policy = PolicySpec(
        blacklist=("l2",) if draw(st.integers(0, 2)) == 0 else (),
        quiet_hours=draw(st.none() | st.sampled_from([(22 * 60, 8 * 60), (0, 6 * 60), (12 * 60, 13 * 60)])),
        min_gap_ms=draw(st.sampled_from([0, 0] + MIN_GAPS)),
        max_per_day=draw(st.none() | st.integers(1, 3)),
    )
    config = Config(
        path=Path("random.toml"),
        utc_offset_ms=draw(st.sampled_from([0, 8 * HOUR, -5 * HOUR - 30 * MINUTE])),
        max_pending=draw(st.sampled_from([10_000_000, 10_000_000, 1, 2])),
        max_dead_letters=draw(st.sampled_from([100_000, 100_000, 0, 1])),
        policy=policy,
        counters=counters,
        markers=markers,
        campaigns=tuple(camps),
        output=OutputSpec(max_records=draw(st.sampled_from([3, 100_000]))),
    )
    arpu = draw(st.lists(st.none() | st.integers(0, 100), min_size=n, max_size=n))
    tags = draw(st.lists(st.sampled_from([[], ["vip"], ["student", "vip"], ["student"]]), min_size=n, max_size=n))
    profiles = Profiles(Path("profiles"), msisdn, {"arpu": pa.array(arpu, type=pa.int64())},
                        pa.array(tags, type=pa.list_(pa.string())))

    # The steps between events: the configuration's own durations, exactly and a millisecond
    # either side (a timer due at an event, a cooldown or min_gap just over), and plain ones.
    durations = sorted({d for c in camps for d in (c.delay_ms, c.cooldown_ms, c.convert_within_ms or 0)}
                       | {k.within_ms for c in camps for k in c.after + c.not_after}
                       | {policy.min_gap_ms} | {k.window_ms or 0 for k in counters} - {0})
    plain = [0, 0, 1000, MINUTE, 3 * MINUTE, 10 * MINUTE, HOUR, 5 * HOUR]
    steps = st.sampled_from(plain) | (st.sampled_from(durations).flatmap(
        lambda d: st.sampled_from([d - 1, d, d, d + 1])) if durations else st.sampled_from(plain))
    trigger_types = sorted({t for c in camps for t in c.on} | {11})
    hot = numbers[:max(1, min(3, n))]           # most events fall on a few subscribers
    cells = [0, 1, 2, 3, 4]
    parts = []
    ts = T0 + first_day * DAY + draw(st.integers(0, 23)) * HOUR
    # mostly enough events for state to build up; now and then a handful
    nr_events = draw(st.integers(1, max_events)) if draw(st.integers(0, 9)) == 0 else draw(st.integers(40, max_events))
    for _ in range(nr_events):
        if draw(st.integers(0, 30)) == 0:
            # sometimes a run of the same bad value: one dead letter with its count
            parts += [draw(st.sampled_from(BAD_EVENTS))] * draw(st.sampled_from([1, 1, 2, 5]))
            continue
        ts += draw(steps)
        late = draw(st.integers(0, 10)) == 0
        kind = draw(st.integers(0, 9))
        typ = (draw(st.sampled_from(trigger_types)) if kind < 6 else
               draw(st.sampled_from([6, 7, 8])) if kind < 8 else draw(st.sampled_from(TYPES)))
        ev = (
            max(0, ts - 5 * MINUTE) if late else ts,
            typ,
            draw(st.sampled_from(hot)) if draw(st.integers(0, 3)) else draw(st.sampled_from(numbers + [13_900_000_000])),
            draw(st.sampled_from(pool + [0])),
            draw(st.sampled_from(cells)) if draw(st.integers(0, 4)) else draw(st.integers(0, 9)),
            draw(st.sampled_from([0, 30, 60, 61, 3600])),
            draw(st.sampled_from([0, 0, 1, 2, 3, 7])),
            draw(st.sampled_from([0, 3001, 3001, 3002])),
        )
        parts.append(_encode_event(draw, ev))
    boundaries = list(np.cumsum([0] + [len(p) for p in parts])[:-1])
    config = _moments(config, profiles, n, first_day, b"".join(parts))
    config = _with_contact_rules(config, b"".join(parts))
    config = _with_variants(config, b"".join(parts))
    return RandomWorld(config, profiles, lists, areas, b"".join(parts), [int(b) for b in boundaries])


# ---- a world as files (for what reads its configuration from disk: sigmatch replay --workers)

def _toml(value) -> str:
    """A TOML value: strings as JSON writes them (a subset of TOML's basic strings)."""
    import json
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return "[" + ", ".join(_toml(v) for v in value) + "]"


def _duration(ms: int) -> str:
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    raise ValueError(f"{ms} ms is no whole number of seconds")


def _hours(span) -> str:
    (a, b) = span
    return f"{a // 60:02d}:{a % 60:02d}-{b // 60:02d}:{b % 60:02d}"


def _days(mask: int) -> str:
    from engine.language.config import WEEKDAYS
    return ",".join(day for bit, day in enumerate(WEEKDAYS) if mask >> bit & 1)


def _flags(mask: int) -> list:
    from engine.language.config import FLAG_BITS
    return [name for name, bit in FLAG_BITS.items() if mask & bit]


def _types(codes) -> list:
    return [TYPE_NAMES[c] for c in codes]


def _offset(ms: int) -> str:
    minutes = abs(ms) // MINUTE
    return f"{'-' if ms < 0 else '+'}{minutes // 60:02d}:{minutes % 60:02d}"


def config_text(config: Config, profiles: str, lists: dict, areas: dict) -> str:
    """The TOML of a random world's configuration, with these file names for its profiles,
    lists and areas: `load_config` of it gives `config` back, but for the paths and for
    `convert_arg` and `convert_within` without `convert_on` (which a file may not give, and
    which mean nothing). Covers what `worlds()` draws, not every key of the schema."""
    lines = ["[engine]", f"utc_offset = {_toml(_offset(config.utc_offset_ms))}", f"profiles = {_toml(profiles)}",
             f"max_pending = {config.max_pending}", f"max_dead_letters = {config.max_dead_letters}", "",
             "[lists]"] + [f"{name} = {_toml(path)}" for name, path in lists.items()] + ["", "[areas]"]
    lines += [f"{name} = {_toml(path)}" for name, path in areas.items()] + [""]
    p = config.policy
    lines += ["[policy]", f"blacklist = {_toml(list(p.blacklist))}", f"min_gap = {_toml(_duration(p.min_gap_ms))}",
              f"global_holdout = {p.global_holdout!r}"]
    if p.quiet_hours is not None:
        lines.append(f"quiet_hours = {_toml(_hours(p.quiet_hours))}")
    if p.max_per_day is not None:
        lines.append(f"max_per_day = {p.max_per_day}")
    if p.max_in_window is not None:
        contacts, window = p.max_in_window
        lines.append(f"max_in_window = {_toml({'contacts': contacts, 'window': _duration(window)})}")
    lines += ["", "[counters]"]
    for k in config.counters:
        table = {"on": _types(k.on), "flags": _flags(k.flags), "add": k.add}
        if k.window_ms is not None:
            table["window"] = _duration(k.window_ms)
        if k.period is not None:
            table["period"] = k.period
        if k.arg is not None:
            table["arg"] = k.arg
        lines.append(f"{k.name} = {_toml(table)}")
    lines += ["", "[markers]"]
    for m in config.markers:
        table = {"on": _types(m.on), "flags": _flags(m.flags)}
        if m.arg is not None:
            table["arg"] = m.arg
        lines.append(f"{m.name} = {_toml(table)}")
    lines += ["", "[channels]"]
    lines += [f"{name} = {_toml({'daily_budget': n})}" for name, n in config.channel_budgets.items()]
    lines += ["", "[output]", f"format = {_toml(config.output.format)}", f"max_records = {config.output.max_records}",
              f"max_age = {_toml(_duration(config.output.max_age_ms or 0))}", ""]
    for c in config.campaigns:
        table = {"id": c.id, "priority": c.priority, "on": _types(c.on), "channel": c.channel,
                 "flags": _flags(c.flags), "enabled": c.enabled, "exclude": list(c.exclude), "enter": c.enter,
                 "days": _days(c.days), "once": c.once, "cooldown": _duration(c.cooldown_ms),
                 "delay": _duration(c.delay_ms), "absent": list(c.absent), "recheck": sorted(c.recheck),
                 "exempt": sorted(c.exempt), "holdout": c.holdout, "convert_on": _types(c.convert_on),
                 "after": [{"marker": k.marker, "within": _duration(k.within_ms)} for k in c.after],
                 "not_after": [{"marker": k.marker, "within": _duration(k.within_ms)} for k in c.not_after]}
        if c.variants:
            table["variants"] = [{"template": v.template, "weight": v.weight} for v in c.variants]
        else:
            table["template"] = c.template
        if c.hours is not None:
            table["hours"] = _hours(c.hours)
        if c.counter is not None:
            table["counter"] = {"name": c.counter, "at_least": c.at_least}
        if c.convert_within_ms is not None and c.convert_on:
            table["convert_within"] = _duration(c.convert_within_ms)
        if c.convert_arg is not None and c.convert_on:
            table["convert_arg"] = c.convert_arg
        for key in ("arg", "audience", "peer_in", "where", "area", "when", "anniversary", "stop_after",
                    "daily_budget", "total_budget"):
            if getattr(c, key) is not None:
                table[key] = getattr(c, key)
        for key in ("start", "end"):
            if getattr(c, key) is not None:
                table[key] = getattr(c, key).isoformat()
        lines += ["[[campaign]]"] + [f"{k} = {_toml(v)}" for k, v in table.items()] + [""]
    return "\n".join(lines)


def write_world(w: RandomWorld, directory: Path) -> tuple[Path, Path]:
    """Write `w` as files into `directory`: campaigns.toml, profiles.parquet, one .txt per list
    and area, trace.msgpack. Returns (configuration path, trace path)."""
    import pyarrow.parquet as pq
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    columns = {"msisdn": pa.array(w.profiles.msisdn, type=pa.uint64()), **w.profiles.columns}
    if w.profiles.tags is not None:
        columns["tags"] = w.profiles.tags
    pq.write_table(pa.table(columns), directory / "profiles.parquet")
    names = {}
    for kind, files in (("list", w.lists), ("area", w.areas)):
        for name, values in files.items():
            names.setdefault(kind, {})[name] = f"{kind}-{name}.txt"
            (directory / f"{kind}-{name}.txt").write_text("".join(f"{int(v)}\n" for v in values))
    config = directory / "campaigns.toml"
    config.write_text(config_text(w.config, "profiles.parquet", names.get("list", {}), names.get("area", {})))
    trace = directory / "trace.msgpack"
    trace.write_bytes(w.trace)
    return config, trace
