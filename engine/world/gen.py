"""`sigmatch gen`: a realistic synthetic world at any scale, the same bytes for the same seed.

    g = generate(Path("world"), subscribers=2_000_000, events=10_000_000)
    Engine.from_config(g.config).replay(g.traces, out="world/out", drain=True)

A world is a directory:

    campaigns.toml            the six programmes of examples/ and `campaigns` synthetic ones
    profiles.parquet|csv      msisdn, arpu, brand, plan, join_date, tags
    lists/*.roar              64-bit Roaring bitmaps (pyroaring BitMap64)
    areas/*.txt               cell ids, one per line
    trace.msgpack             array-form msgpack events, in time order (trace-1..F with F files)

The population is drawn first and kept in a few flat arrays (about 30 bytes a subscriber):
each subscriber has a number, a home site, a daytime site and hours (a school for students,
teachers and some parents, an office for workers), hidden traits (has a colour ring-back
tone, large-screen handset, calls long distance, roams, travels) and the profile attributes
the warehouse knows, which follow those traits only loosely, as real tags do.

Numbers are 11-digit mainland mobile numbers: a 3-digit segment of this operator (138, 139,
150, 187 ...), then a 4-digit H code: one block of 10,000 numbers, handed out in runs of
consecutive H codes, older segments fuller than new ones. The people our subscribers talk to
are partly on other networks: numbers in other operators' segments (130, 133, 186, 189 ...)
and some 13-digit international numbers.

The trace is drawn in time slices of about `CHUNK_EVENTS` events and written straight to
disk, so memory stays bounded whatever the number of events. Every minute of the span gets
its share of events from a diurnal curve (quiet at night, peaks late morning and evening);
the subscriber of each event is drawn from a Zipf law over a random ranking of subscribers
(a few make most of the traffic); the event type from `EVENT_MIX`; the cell from where
the subscriber is at that minute (home or daytime site, mostly its usual sector, sometimes a
neighbouring site, rarely anywhere); the peer from the subscriber's own circle of contacts
(a few called often, a third of them off-net) or, now and then, anyone. Airport trips are
scripted on top: walking in or switching on at a gate, strolling to another gate, boarding
(switching off) or leaving. Each slice has its own random generator, seeded from
(`seed`, slice number), so the trace depends on nothing but the arguments.
"""
from __future__ import annotations

import datetime
import math
import os
import re
import sys
import time
import zlib
from array import array
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["generate", "check_arguments", "world_files", "Generated", "EVENT_DTYPE", "encode_events", "EVENT_MIX",
           "ZIPF_EXPONENT", "OWN_SEGMENTS", "OTHER_SEGMENTS", "INTERNATIONAL_PREFIXES"]

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
UTC_OFFSET = "+08:00"
UTC_OFFSET_MS = 8 * HOUR
CHUNK_EVENTS = 2_000_000        # events drawn, encoded and written at a time
WORKERS = 2                     # threads drawing slices of the trace

CALL_MO_END, CALL_MT_END, SMS_MO, SMS_MT, MMS_MO, LOCATION_UPDATE = 1, 2, 3, 4, 5, 6
POWER_ON, POWER_OFF, DATA_SESSION, CRBT_DOWNLOAD, ORDER, RECHARGE = 7, 8, 9, 10, 11, 12
LOW_BALANCE = 40                # a named custom type ([event_types]): the charging system's notice
LONG_DISTANCE, ROAMING, INTERNATIONAL = 1, 2, 4

# Background traffic: (type, share of events). Airport trips add a little LOCATION_UPDATE,
# POWER_ON and POWER_OFF on top.
EVENT_MIX = (
    (CALL_MO_END, 0.22), (CALL_MT_END, 0.20), (SMS_MO, 0.12), (SMS_MT, 0.10), (MMS_MO, 0.005),
    (LOCATION_UPDATE, 0.16), (POWER_ON, 0.01), (POWER_OFF, 0.01), (DATA_SESSION, 0.15),
    (CRBT_DOWNLOAD, 0.003), (ORDER, 0.01), (RECHARGE, 0.012), (LOW_BALANCE, 0.005),
)
_TALK = (CALL_MO_END, CALL_MT_END, SMS_MO, SMS_MT, MMS_MO)
_FROM_BOSS = (CRBT_DOWNLOAD, ORDER, RECHARGE, LOW_BALANCE)   # from billing, not the radio network: cell 0
# Share of the day's traffic per local hour.
HOURLY = np.array([1, 0.5, 0.3, 0.2, 0.2, 0.4, 1.2, 3, 5, 6, 6.5, 6.5,
                   6, 6, 6, 6, 6, 6, 6.5, 7, 7, 6, 4, 2])
WEEKDAY_FACTOR = np.array([1.0, 1.0, 1.0, 1.0, 1.05, 0.9, 0.85])    # mon..sun
# Subscriber activity: the subscriber of rank r (1-based) makes a share ~ r^-ZIPF_EXPONENT.
ZIPF_EXPONENT = 0.8

# Mainland mobile segments. This operator's, each with how full its blocks are (old
# segments are nearly full, new ones sparse) ...
OWN_SEGMENTS = {134: 0.85, 135: 0.85, 136: 0.85, 137: 0.85, 138: 0.9, 139: 0.9,
                147: 0.45, 150: 0.75, 151: 0.75, 152: 0.75, 157: 0.7, 158: 0.75, 159: 0.75,
                178: 0.45, 182: 0.65, 183: 0.65, 184: 0.6, 187: 0.65, 188: 0.65, 198: 0.4}
# ... and the other operators' (only the numbers our subscribers talk to are ever seen).
OTHER_SEGMENTS = {130: 0.5, 131: 0.5, 132: 0.5, 155: 0.4, 156: 0.4, 166: 0.3, 175: 0.3,
                  176: 0.3, 185: 0.4, 186: 0.45, 133: 0.5, 149: 0.3, 153: 0.4, 173: 0.3,
                  177: 0.3, 180: 0.4, 181: 0.4, 189: 0.45, 199: 0.3}
# 13-digit international mobile numbers: country code + mobile prefix, then 8 digits.
INTERNATIONAL_PREFIXES = (62812, 62813, 49151, 49176, 88017)
HCODES = 10_000                 # H codes per segment (4 digits)
BLOCK = 10_000                  # numbers per H code (4 digits)
RUN = 10                        # H codes handed out together
SERVICE_NUMBERS = (10086, 95588, 95533, 95555, 10658000)   # operator, banks, an SMS gateway

OFFNET_SHARE = 0.35             # of a subscriber's contacts
CONTACTS = 16                   # contacts per subscriber; contact j is called ~ 1/(j+1)
INTERNATIONAL_SHARE = 0.05      # of off-net numbers

ENB_BASE = 100_000              # cell id = eNodeB id * 256 + sector (1..3), as in an ECI
SUBSCRIBERS_PER_SITE = 600

PLANS = ("basic_38", "silver_128", "gold_188", "family_268", "premium_388")
BRANDS = ("prepaid", "postpaid", "family")
TAGS = ("parent", "student", "teacher", "vip", "churn_risk", "business", "frequent_flyer",
        "migrant_worker", "senior")
OFFER_CODES = (1001, 2002, 5005, 6001, 7001, 7002, 8001, 8101, 8201, 8301, 8401, 8501, 8601, 8701)
OTHER_ORDER = 9001          # an order of something no campaign offers
# How often a subscriber in a campaign's control group converts, relative to one who may get
# its offer: the synthetic world's true effect, so that reports show a real uplift.
CONTROL_CONVERSION = 0.25
RECHARGE_CENTS = ((1000, 0.2), (2000, 0.15), (3000, 0.25), (5000, 0.2), (10000, 0.15), (20000, 0.05))

# Hidden traits (SUB_DTYPE.traits).
HAS_CRBT, BIG_SCREEN, LD_HEAVY, ROAMS, TRAVELS = 1, 2, 4, 8, 16

# One subscriber's whereabouts and traits, gathered once per event. 16 bytes: NumPy gathers
# records of a power-of-two size with a plain copy, others ten times slower.
SUB_DTYPE = np.dtype([("home", "<u4"), ("day", "<u4"), ("day_from", "<u2"), ("day_to", "<u2"),
                      ("traits", "u1"), ("sector", "u1"), ("pad", "<u2")])
assert SUB_DTYPE.itemsize == 16

# [ts, type, msisdn, peer, cell, dur, flags, arg] with fixed-width encodings, 45 bytes an event:
# valid msgpack that any decoder reads, built as one structured array and written as it is.
EVENT_DTYPE = np.dtype([
    ("array", "u1"), ("ts_tag", "u1"), ("ts", ">u8"), ("type", "u1"),
    ("msisdn_tag", "u1"), ("msisdn", ">u8"), ("peer_tag", "u1"), ("peer", ">u8"),
    ("cell_tag", "u1"), ("cell", ">u4"), ("dur_tag", "u1"), ("dur", ">u4"),
    ("flags", "u1"), ("arg_tag", "u1"), ("arg", ">u4"),
])
assert EVENT_DTYPE.itemsize == 45


@dataclass
class Generated:
    """What `generate` wrote."""
    directory: Path
    config: Path
    profiles: Path
    traces: list[Path]
    lists: dict[str, Path] = field(default_factory=dict)
    areas: dict[str, Path] = field(default_factory=dict)
    subscribers: int = 0
    events: int = 0
    campaigns: int = 0              # in campaigns.toml: the programmes and the synthetic ones
    trace_bytes: int = 0
    elapsed_s: float = 0.0          # everything
    trace_s: float = 0.0            # the trace alone

    @property
    def trace(self) -> Path:
        """The trace file, when it is one (trace_files=1)."""
        if len(self.traces) != 1:
            raise ValueError(f"the trace is {len(self.traces)} files; see .traces")
        return self.traces[0]

    @property
    def events_per_s(self) -> float:
        return self.events / self.trace_s if self.trace_s > 0 else 0.0


def encode_events(ts, type_, msisdn, peer, cell, dur, flags, arg) -> bytes:
    """Events (columns) as a msgpack stream of EVENT_DTYPE records. `type_` and `flags` must be
    below 128 (positive fixint); `cell`, `dur` and `arg` below 2**32."""
    return _wire(ts, type_, msisdn, peer, cell, dur, flags, arg).tobytes()


def _wire(ts, type_, msisdn, peer, cell, dur, flags, arg) -> np.ndarray:
    wire = np.empty(len(ts), dtype=EVENT_DTYPE)
    wire["array"] = 0x98
    wire["ts_tag"] = 0xCF
    wire["ts"] = ts
    wire["type"] = type_
    wire["msisdn_tag"] = 0xCF
    wire["msisdn"] = msisdn
    wire["peer_tag"] = 0xCF
    wire["peer"] = peer
    wire["cell_tag"] = 0xCE
    wire["cell"] = cell
    wire["dur_tag"] = 0xCE
    wire["dur"] = dur
    wire["flags"] = flags
    wire["arg_tag"] = 0xCE
    wire["arg"] = arg
    return wire


def generate(directory, *, subscribers: int, events: int, campaigns: int = 13, days: int = 2,
             seed: int = 1, trace_files: int = 1, profiles_format: str = "parquet",
             start: str = "2026-11-02", progress: Optional[bool] = None) -> Generated:
    """Write a world of `subscribers` and a trace of `events` over `days` local days from
    `start` (a date, +08:00) into `directory`. `campaigns` synthetic campaigns join the
    six programmes. With `trace_files` F > 1 the trace is cut into F files of about equal
    size, at event boundaries; replayed in order they are the one trace. `progress`: a bar
    on stderr (default: when stderr is a terminal). ValueError on a bad argument."""
    started = time.perf_counter()
    first_day = check_arguments(subscribers, events, campaigns, days, seed, trace_files, profiles_format, start)
    if progress is None:
        progress = sys.stderr.isatty()
    if progress:
        from tqdm import tqdm
        with tqdm(total=events, unit="ev", unit_scale=True, desc="gen: world", file=sys.stderr, leave=False) as bar:
            return _generate(directory, subscribers, events, campaigns, days, seed, trace_files, profiles_format,
                             first_day, started, bar)
    return _generate(directory, subscribers, events, campaigns, days, seed, trace_files, profiles_format,
                     first_day, started, None)


def _generate(directory, subscribers, events, campaigns, days, seed, trace_files, profiles_format,
              first_day, started, bar) -> Generated:
    from engine.sinks import make_private_directories
    directory = Path(directory)
    # made owner and group alone, whatever the umask, as the files in them: the dnd list must
    # not be replaceable by anyone on the host (a directory that exists keeps its mode)
    make_private_directories(directory / "lists")
    make_private_directories(directory / "areas")
    t0 = _local_midnight_utc_ms(first_day)

    city = _City(subscribers)
    people = _population(np.random.default_rng([seed, 1]), subscribers, city, first_day)
    profiles = directory / f"profiles.{profiles_format}"
    _write_profiles(profiles, people)
    offnet = _offnet_numbers(np.random.default_rng([seed, 2]), max(200, subscribers // 3))
    lists = _write_lists(directory, np.random.default_rng([seed, 3]), people, offnet)
    areas = _write_areas(directory, city)
    config = directory / "campaigns.toml"
    text, nr_campaigns = _config_text(subscribers, campaigns, days, first_day, profiles.name, lists, areas)
    config.write_text(text)
    conversions = _conversion_rules(text, config)
    people.drop_profile()

    trips = _trips(np.random.default_rng([seed, 4]), people, city, t0, days, events)
    traces = _trace_paths(directory, trace_files)
    trace_started = time.perf_counter()
    if bar is not None:
        bar.set_description("gen: trace")
    nbytes = _write_trace(traces, seed, people, offnet, city, trips, t0, days, events, bar, conversions)
    done = time.perf_counter()
    generated = Generated(
        directory=directory, config=config, profiles=profiles, traces=traces,
        lists={name: directory / "lists" / f"{name}.roar" for name in lists},
        areas={name: directory / "areas" / f"{name}.txt" for name in areas},
        subscribers=subscribers, events=events, campaigns=nr_campaigns, trace_bytes=nbytes,
        elapsed_s=done - started, trace_s=done - trace_started)
    # a world holds subscriber numbers (synthetic, but shaped as real ones): readable by owner
    # and group only, as every file sigmatch writes
    for path in [config, profiles, *traces, *generated.lists.values(), *generated.areas.values()]:
        os.chmod(path, 0o640)
    return generated


def check_arguments(subscribers, events, campaigns, days, seed, trace_files, profiles_format, start, *,
                    options: bool = False) -> datetime.date:
    """The first local day, or ValueError naming the first bad argument in one line (with
    `options`, as `sigmatch gen`'s option: `--events`). At least one event: a world's trace
    is replayed, and replay refuses an empty one."""
    def shown(name):
        return f"--{name.replace('_', '-')}" if options else name

    def integer(name, value, lo, hi):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
            raise ValueError(f"{shown(name)} must be an integer from {lo:,} to {hi:,}, got {value!r}")
    integer("subscribers", subscribers, 100, 500_000_000)
    integer("events", events, 1, 10**11)
    integer("campaigns", campaigns, 0, 10_000)
    integer("days", days, 1, 366)
    integer("seed", seed, 0, 2**63 - 1)
    integer("trace_files", trace_files, 1, max(1, min(events, 100_000)))
    if profiles_format not in ("parquet", "csv"):
        raise ValueError(f"{shown('profiles_format')} must be 'parquet' or 'csv', got {profiles_format!r}")
    try:
        first = datetime.date.fromisoformat(start)
    except (TypeError, ValueError):
        raise ValueError(f"{shown('start')} must be a date like '2026-11-02', got {start!r}") from None
    # Before 2002 the trace's times in ms would look like seconds to replay (below 10^12 ms,
    # loaders.sniff); from 2100 on, replay and check warn of every event as implausibly late
    # (a world of gen's own must not be one its commands warn about, helper-119)
    if not FIRST_START <= first <= LAST_DAY:
        raise ValueError(f"{shown('start')} must be a date from {FIRST_START} to {LAST_DAY}, got {start!r}")
    last = first + datetime.timedelta(days=days - 1)
    if last > LAST_DAY:
        raise ValueError(f"{shown('start')} {first} and {shown('days')} {days:,}: the trace would run to {last}, past "
                         f"{LAST_DAY} (events from 2100 on are warned of as implausible)")
    return first


FIRST_START = datetime.date(2002, 1, 1)
LAST_DAY = datetime.date(2099, 12, 31)


def world_files(directory) -> list[Path]:
    """The files of `directory` that gen writes (campaigns.toml, profiles.*, trace*.msgpack,
    the lists/ and areas/ files it names), those that exist: what `sigmatch gen --force`
    removes before it writes, so that no file of an earlier world is left beside the new
    one. Nothing else (an operator's notes, a replay's out/) is ever among them."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    names = ["campaigns.toml", "profiles.parquet", "profiles.csv"]
    names += [p.name for p in directory.glob("trace*.msgpack") if _TRACE_NAME.fullmatch(p.name)]
    names += [f"lists/{name}.roar" for name in LIST_NAMES] + [f"areas/{name}.txt" for name in AREA_NAMES]
    return [directory / name for name in sorted(names)
            if (directory / name).is_file() or (directory / name).is_symlink()]


def _local_midnight_utc_ms(day: datetime.date) -> int:
    return (day - datetime.date(1970, 1, 1)).days * DAY - UTC_OFFSET_MS


# ================================================================ numbers

def _numbers_in_blocks(rng, n: int, segments: dict[int, float]) -> np.ndarray:
    """`n` distinct 11-digit numbers, sorted: runs of RUN consecutive H codes (blocks of
    BLOCK numbers) in `segments`, each block filled to about its segment's density."""
    codes = np.array(list(segments), dtype=np.int64)
    density = np.array(list(segments.values()))
    blocks_needed = math.ceil(n / (BLOCK * density.mean()) * 1.1)
    # Runs of RUN H codes, shorter in a small world so that it still spans a few segments.
    run_len = max(1, min(RUN, blocks_needed // 8))
    runs = math.ceil(blocks_needed / run_len)
    runs_per_segment = HCODES // run_len
    # A run is (segment, which run of H codes in it); denser (older) segments hold more runs.
    weight = np.repeat(density / density.sum() / runs_per_segment, runs_per_segment)
    picked = np.sort(rng.choice(len(weight), runs, replace=False, p=weight))
    segment = picked // runs_per_segment
    first_hcode = (picked % runs_per_segment) * run_len
    prefix7 = ((codes[segment] * BLOCK + first_hcode)[:, None] + np.arange(run_len)).ravel()
    block_density = np.repeat(density[segment], run_len)
    # Each slot is taken with its block's density, scaled so that about n are taken; then a
    # few are added or dropped at random to make exactly n.
    slot_p = np.repeat((block_density * (n / (block_density.sum() * BLOCK))).astype(np.float32), BLOCK)
    taken = rng.random(len(slot_p), dtype=np.float32) < slot_p
    del slot_p
    count = int(taken.sum())
    if count > n:
        on = np.flatnonzero(taken)
        taken[on[rng.choice(len(on), count - n, replace=False)]] = False
    elif count < n:
        off = np.flatnonzero(~taken)
        taken[off[rng.choice(len(off), n - count, replace=False)]] = True
    slot = np.flatnonzero(taken)
    return (prefix7[slot // BLOCK] * BLOCK + slot % BLOCK).astype(np.uint64)


def _offnet_numbers(rng, k: int) -> np.ndarray:
    """Numbers on other networks that our subscribers talk to: mostly other operators'
    11-digit numbers, some 13-digit international ones. Sorted, distinct."""
    international = max(5, int(k * INTERNATIONAL_SHARE))
    domestic = _numbers_in_blocks(rng, k - international, OTHER_SEGMENTS)
    prefixes = np.array(INTERNATIONAL_PREFIXES, dtype=np.uint64)
    prefix = prefixes[rng.integers(0, len(prefixes), international)]
    abroad = np.unique(prefix * np.uint64(10**8) + rng.integers(0, 10**8, international).astype(np.uint64))
    return np.concatenate([domestic, abroad])


# ================================================================ the city

class _City:
    """Sites on a W x H grid, three sectors each; some sites are schools, a central block is
    the business district (CBD), a few are malls; the airport has two sites of its own."""

    def __init__(self, subscribers: int):
        sites = max(40, math.ceil(subscribers / SUBSCRIBERS_PER_SITE))
        self.width = math.ceil(math.sqrt(sites))
        self.height = math.ceil(sites / self.width)
        self.sites = self.width * self.height
        rng = np.random.default_rng([self.sites, 11])     # the layout depends on the size alone
        w, h = self.width, self.height
        side = max(2, round(math.sqrt(self.sites / 25)))
        x0, y0 = (w - side) // 2, (h - side) // 2
        self.cbd = np.array([(y0 + dy) * w + x0 + dx for dy in range(side) for dx in range(side)], dtype=np.int64)
        rest = np.setdiff1d(np.arange(self.sites), self.cbd)
        chosen = rng.choice(rest, max(3, self.sites // 15) + max(2, self.sites // 60), replace=False)
        self.schools = np.sort(chosen[:max(3, self.sites // 15)])
        self.malls = np.sort(chosen[max(3, self.sites // 15):])
        self.airport = np.array([self.sites, self.sites + 1], dtype=np.int64)   # off the grid

    @staticmethod
    def cells(sites, sector) -> np.ndarray:
        return ((np.asarray(sites, dtype=np.uint32) + np.uint32(ENB_BASE)) * np.uint32(256)
                + np.asarray(sector, dtype=np.uint32) + np.uint32(1))

    def area_cells(self, sites) -> np.ndarray:
        return np.sort(self.cells(np.repeat(sites, 3), np.tile(np.arange(3), len(sites))))

    def neighbour(self, rng, site: np.ndarray) -> np.ndarray:
        x = np.clip(site % self.width + rng.integers(-1, 2, len(site)), 0, self.width - 1)
        y = np.clip(site // self.width + rng.integers(-1, 2, len(site)), 0, self.height - 1)
        return y * self.width + x


# ================================================================ the population

@dataclass
class _People:
    msisdn: np.ndarray            # uint64, sorted (the profile snapshot is in number order)
    sub: np.ndarray               # SUB_DTYPE
    rank_to_subscriber: np.ndarray   # Zipf rank (0 = most active) -> subscriber index
    profile: Optional[dict]       # attribute columns, dropped once written

    def drop_profile(self):
        self.profile = None


def _population(rng, n: int, city: _City, first_day: datetime.date) -> _People:
    msisdn = _numbers_in_blocks(rng, n, OWN_SEGMENTS)
    u = lambda: rng.random(n, dtype=np.float32)      # noqa: E731

    # Life: students and teachers spend weekdays at school, some parents pick children up,
    # workers go to an office (often in the CBD); everyone else stays around home.
    role = rng.choice(5, n, p=[0.07, 0.01, 0.22, 0.40, 0.30]).astype(np.uint8)  # student teacher parent worker other
    student, teacher, parent, worker = (role == 0), (role == 1), (role == 2), (role == 3)
    new = u() < 0.08                                   # joined in the 40 days before the trace
    migrant = u() < np.where(new, 0.35, 0.10)          # calls home, long distance, every day
    roams = u() < np.where(new, 0.12, 0.03)
    travels = u() < 0.04
    traits = (np.where(u() < 0.28, HAS_CRBT, 0) | np.where(u() < 0.45, BIG_SCREEN, 0)
              | np.where(migrant, LD_HEAVY, 0) | np.where(roams, ROAMS, 0)
              | np.where(travels, TRAVELS, 0)).astype(np.uint8)

    sub = np.zeros(n, dtype=SUB_DTYPE)
    sub["home"] = rng.integers(0, city.sites, n)
    sub["sector"] = rng.integers(0, 3, n)
    sub["traits"] = traits
    at_school = student | teacher | (parent & (u() < 0.45))
    day = sub["home"].astype(np.int64)
    day = np.where(at_school, city.schools[rng.integers(0, len(city.schools), n)], day)
    office = np.where(u() < 0.45, city.cbd[rng.integers(0, len(city.cbd), n)], rng.integers(0, city.sites, n))
    day = np.where(worker, office, day)
    sub["day"] = day
    jitter = rng.integers(-30, 31, n)
    day_from = np.select([student | teacher, at_school, worker], [450, 900, 540], 0) + jitter
    day_to = np.select([student, teacher, at_school, worker], [990, 1050, 1050, 1080], 0) + jitter
    out = ~(at_school | worker)
    sub["day_from"] = np.where(out, 0, day_from)
    sub["day_to"] = np.where(out, 0, day_to)

    # What the warehouse knows.
    arpu = np.round(rng.gamma(2.2, 30.0, n), 1)
    brand = np.where(u() < np.select([arpu < 40, arpu < 80], [0.6, 0.35], 0.15), 0,
                     np.where(u() < 0.15, 2, 1)).astype(np.int8)
    plan = np.select([brand == 2, arpu < 45, arpu < 90, arpu < 140], [3, 0, 1, 2], 4).astype(np.int8)
    noise = u() < 0.1                                   # plans lag behind usage
    plan = np.where(noise, rng.integers(0, 5, n), plan).astype(np.int8)
    start_days = (first_day - datetime.date(1970, 1, 1)).days
    # Since 2008, more of them recent: the older ones have partly churned away.
    span = max(365, start_days - 41 - 13_879)
    old = start_days - 41 - np.floor(u() ** 2 * span).astype(np.int32)
    join = np.where(new, start_days - 1 - rng.integers(0, 40, n), old).astype(np.int32)
    # Tags follow life only loosely: some are missing, some are wrong.
    tags = np.zeros(n, dtype=np.uint16)
    for name, who in (
        ("parent", lambda: (parent & (u() < 0.7)) | (u() < 0.03)),
        ("student", lambda: (student & (u() < 0.85)) | (u() < 0.01)),
        ("teacher", lambda: teacher & (u() < 0.8)),
        ("vip", lambda: (arpu >= 150) & (u() < 0.7)),
        ("churn_risk", lambda: u() < np.where(brand == 0, 0.12, 0.05)),
        ("business", lambda: (roams & (u() < 0.6)) | (u() < 0.06)),
        ("frequent_flyer", lambda: (travels & (u() < 0.6)) | (u() < 0.01)),
        ("migrant_worker", lambda: migrant & (u() < 0.7)),
        ("senior", lambda: (role == 4) & (u() < 0.15)),
    ):
        tags[who()] |= np.uint16(1 << TAGS.index(name))

    # Zipf activity over a ranking by busyness: mostly chance, but the heavy users are the
    # high spenders, the roamers and those who call home long distance (ARPU measures usage).
    busy = (rng.standard_normal(n, dtype=np.float32) + np.log1p(arpu).astype(np.float32) * np.float32(0.8)
            + np.float32(1.0) * roams + np.float32(0.7) * migrant)
    rank_to_subscriber = np.argsort(-busy, kind="stable").astype(np.int32 if n < 2**31 else np.int64)
    return _People(msisdn=msisdn, sub=sub, rank_to_subscriber=rank_to_subscriber,
                   profile=dict(arpu=arpu, brand=brand, plan=plan, join=join, tags=tags))


def _tag_strings(tags: np.ndarray):
    """uint16 tag bits -> a dictionary-encoded string column ('parent|vip', '' for none)."""
    import pyarrow as pa
    # Few distinct combinations: a lookup table, not np.unique over tens of millions.
    combos = np.flatnonzero(np.bincount(tags, minlength=1 << len(TAGS)))
    lookup = np.zeros(1 << len(TAGS), dtype=np.int32)
    lookup[combos] = np.arange(len(combos), dtype=np.int32)
    index = lookup[tags]
    names = ["|".join(t for b, t in enumerate(TAGS) if int(c) >> b & 1) for c in combos]
    return pa.DictionaryArray.from_arrays(pa.array(index), pa.array(names, pa.string()))


def _write_profiles(path: Path, people: _People) -> None:
    import pyarrow as pa
    p = people.profile
    table = pa.table({
        "msisdn": pa.array(people.msisdn.astype(np.int64)),
        "arpu": pa.array(p["arpu"]),
        "brand": pa.DictionaryArray.from_arrays(pa.array(p["brand"]), pa.array(BRANDS)),
        "plan": pa.DictionaryArray.from_arrays(pa.array(p["plan"]), pa.array(PLANS)),
        "join_date": pa.array(p["join"], pa.date32()),
        "tags": _tag_strings(p["tags"]),
    })
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        pq.write_table(table, path)
    else:
        import pyarrow.csv as pa_csv
        with open(path, "wb") as f:
            f.write((",".join(table.column_names) + "\n").encode())
            pa_csv.write_csv(table, f, pa_csv.WriteOptions(include_header=False, quoting_style="none"))


# ================================================================ lists, areas, campaigns

LIST_NAMES = ("dnd", "staff", "complaints", "crbt_targets", "crbt_peers", "mms_handsets",
              "family_targets", "family_peers")
AREA_NAMES = ("schools", "airport", "cbd", "malls")


def _write_lists(directory: Path, rng, people: _People, offnet: np.ndarray) -> tuple[str, ...]:
    from pyroaring import BitMap64
    n, msisdn, traits = len(people.msisdn), people.msisdn, people.sub["traits"]
    p = people.profile
    u = lambda k=n: rng.random(k, dtype=np.float32)     # noqa: E731
    offnet_crbt = u(len(offnet)) < 0.5          # known from interconnect records to have a CRBT
    members = {
        "dnd": msisdn[u() < 0.03],                                  # global do-not-disturb
        "staff": msisdn[u() < 0.002],                               # employees' lines
        "complaints": msisdn[u() < 0.01],                           # complained this quarter
        # white list: no CRBT yet and worth an offer (`where` narrows it further)
        "crbt_targets": msisdn[((traits & HAS_CRBT) == 0) & (p["arpu"] >= 40)],
        # peer white list: numbers with a CRBT, ours and other networks'
        "crbt_peers": np.concatenate([msisdn[(traits & HAS_CRBT) != 0], offnet[offnet_crbt]]),
        "mms_handsets": msisdn[(traits & BIG_SCREEN) != 0],         # from the device register
        "family_targets": msisdn[(p["brand"] != 2) & (p["arpu"] >= 30)],
        # numbers of family-plan holders, and off-net family members from the household survey
        "family_peers": np.concatenate([msisdn[p["brand"] == 2], offnet[u(len(offnet)) < 0.1]]),
    }
    assert tuple(members) == LIST_NAMES
    for k, (name, numbers) in enumerate(members.items()):
        if not len(numbers) and n:
            # a small world's draw can leave a list empty (3% of 100 subscribers: none, one
            # seed in twenty), and every command then warns that it is: one subscriber
            # stands in, picked without the generator so that no other byte changes
            numbers = msisdn[(k * 7919) % n:][:1]
        bitmap = BitMap64()
        bitmap.update(array("Q", numbers.astype(np.uint64).tobytes()))
        (directory / "lists" / f"{name}.roar").write_bytes(bitmap.serialize())
    return LIST_NAMES


def _write_areas(directory: Path, city: _City) -> tuple[str, ...]:
    areas = {"schools": ("Cells covering schools.", city.schools),
             "airport": ("Cells covering the airport.", city.airport),
             "cbd": ("Cells of the central business district.", city.cbd),
             "malls": ("Cells covering shopping malls.", city.malls)}
    for name, (title, sites) in areas.items():
        cells = city.area_cells(sites)
        (directory / "areas" / f"{name}.txt").write_text(f"# {title}\n" + "".join(f"{c}\n" for c in cells.tolist()))
    assert tuple(areas) == AREA_NAMES
    return tuple(areas)


# The new subscribers' journey (examples/newuser_habits), X = 3: every step is for those who
# joined in the month before the trace and fires once, when its usage counter reaches a
# threshold. (id, priority, on, counter, at_least, channel, template, options)
HABIT_STEPS = (
    ("sms_intro", 10, ["SMS_MO"], "sms", 1, "sms", "SMS_BUNDLE_INTRO", {}),
    ("ld_intro", 10, ["CALL_MO_END"], "ld_calls", 1, "sms", "LD_INTRO", {}),
    # Above the rebate, so that on the call that reaches X the promotion goes first: the
    # rebate is exempt from min_gap, the promotion is not.
    ("ld_target", 20, ["CALL_MO_END"], "ld_calls", 3, "sms", "LD_PACKAGE_TARGET",
     dict(convert_on=["ORDER"], convert_arg=5005, convert_within="30d")),
    # The rebates are owed (BOSS credits them): neither the gap nor the rolling cap holds them back.
    ("ld_rebate", 15, ["CALL_MO_END"], "ld_calls_60d", 3, "boss", "LD_REBATE_10",
     dict(exempt=["min_gap", "max_in_window"])),
    ("roam_rebate", 15, ["CALL_MO_END", "CALL_MT_END"], "roam_min", 20, "boss", "ROAM_REBATE_20MIN",
     dict(exempt=["min_gap", "max_in_window"])),
)

COUNTERS = {
    "sms": dict(on=["SMS_MO"]),
    "ld_calls": dict(on=["CALL_MO_END"], flags=["long_distance"]),
    "ld_calls_60d": dict(on=["CALL_MO_END"], flags=["long_distance"], window="60d"),
    "roam_min": dict(on=["CALL_MO_END", "CALL_MT_END"], flags=["roaming"], add="dur_minutes", window="90d"),
    "intl_calls": dict(on=["CALL_MO_END"], flags=["international"]),
    "ld_in": dict(on=["CALL_MT_END"], flags=["long_distance"]),
    "call_secs_day": dict(on=["CALL_MO_END", "CALL_MT_END"], add="dur", period="day"),
    "power_cycles": dict(on=["POWER_ON"], period="day"),
}

# Per subscriber, the time of the last event of a kind (examples/sequences).
MARKERS = {
    "ordered": dict(on=["ORDER"]),
    "recharged": dict(on=["RECHARGE"]),
    "roamed": dict(on=["CALL_MO_END", "CALL_MT_END", "SMS_MO", "DATA_SESSION"], flags=["roaming"]),
    "warned": dict(on=["LOW_BALANCE"]),
}

# Sequences, absence and calendar counters (examples/sequences): (id, keys), always written.
SEQUENCES = (
    ("call_after_order", dict(priority=13, on=["CALL_MO_END"], after=dict(marker="ordered", within="1d"),
                              cooldown="7d", channel="sms", template="ORDER_FOLLOW_UP")),
    ("welcome_abroad", dict(priority=16, on=["CALL_MO_END", "CALL_MT_END", "SMS_MO", "DATA_SESSION"],
                            flags=["roaming"], not_after=dict(marker="roamed", within="14d"), cooldown="14d",
                            exempt=["quiet_hours"], channel="sms", template="WELCOME_ABROAD")),
    ("topup_rescue", dict(priority=17, on=["LOW_BALANCE"], not_after=dict(marker="recharged", within="3d"),
                          delay="2h", absent=["recharged"], cooldown="3d", exempt=["quiet_hours"], channel="sms",
                          variants=[dict(template="TOPUP_RESCUE_A", weight=1), dict(template="TOPUP_RESCUE_B", weight=1)],
                          convert_on=["RECHARGE"], convert_within="1d")),
    ("topup_thanks", dict(priority=3, on=["RECHARGE"], after=dict(marker="warned", within="1d"), once=True,
                          exempt=["min_gap", "max_in_window"], channel="boss", template="TOPUP_BONUS_1")),
    ("ld_package_follow_up", dict(priority=2, on=["ORDER"], arg=5005, delay="1h", exempt=["quiet_hours"],
                                  channel="outbound", template="LD_PACKAGE_WELCOME_CALL")),
    ("power_cycle_alert", dict(priority=1, on=["POWER_ON"], counter=dict(name="power_cycles", at_least=2),
                               once=True, channel="sms", template="MISSED_CALL_ALERTS")),
)


SYNTHETIC_KINDS = 13


def _synthetic(i: int, first_day: datetime.date) -> dict:
    """Synthetic campaign number i (from 0). Thirteen kinds in turn, which together use every
    key of SPEC §2 and `flags`, `when`, `variants` of §2.1; later rounds (i >= 13) shift
    thresholds so that no two are the same."""
    r = i // SYNTHETIC_KINDS
    since = lambda d: (first_day - datetime.timedelta(days=d)).isoformat()   # noqa: E731
    kinds = [
        lambda: dict(name="retention_churn", priority=5, on=["CALL_MT_END", "DATA_SESSION"],
                     where="'churn_risk' in tags and plan != 'premium_388'" + (f" and arpu >= {10 * r}" if r else ""),
                     exclude=["complaints"], cooldown="30d", channel="outbound", template="RETENTION_CALL",
                     holdout=0.1, convert_on=["ORDER"], convert_arg=7001, convert_within="7d", stop_after=3),
        lambda: dict(name="plan_upgrade", priority=6, on=["RECHARGE"],
                     where=f"plan in ['silver_128', 'gold_188'] and arpu >= {60 + 5 * r}",
                     hours="08:00-21:00", cooldown="30d", channel="sms", holdout=0.1,
                     variants=[dict(template="PLAN_UPGRADE_A", weight=3), dict(template="PLAN_UPGRADE_B", weight=1)],
                     convert_on=["ORDER"], convert_arg=7002, convert_within="7d"),
        lambda: dict(name="mall_popup", priority=12, on=["LOCATION_UPDATE", "POWER_ON"], area="malls",
                     enter=True, hours="10:00-22:00", days="mon-sun", delay=f"{10 + r}m",
                     recheck=["area", "powered_on", "hours"], cooldown="1d", channel="popup",
                     template="MALL_COUPON", holdout=0.05, convert_on=["ORDER"], convert_arg=8101,
                     convert_within="1d"),
        lambda: dict(name="sms_bundle", priority=8, on=["SMS_MO"],
                     where=f"arpu < {80 + 10 * r} and join_date < '{since(180)}'",
                     counter=dict(name="sms", at_least=4 + r), once=True, channel="sms",
                     template="SMS_BUNDLE_UPSELL", convert_on=["ORDER"], convert_arg=8001, convert_within="3d"),
        lambda: dict(name="family_bundle", priority=11, on=["CALL_MO_END"], audience="family_targets",
                     peer_in="family_peers", exclude=["staff"], where="brand != 'family'",
                     delay=f"{30 + r}m", recheck=["audience", "powered_on"], cooldown="7d",
                     exempt=["max_per_day"], channel="outbound", template="FAMILY_BUNDLE_CALL", holdout=0.1,
                     convert_on=["ORDER"], convert_arg=8201, convert_within="14d", stop_after=2),
        lambda: dict(name="roaming_pack", priority=18, on=["CALL_MO_END", "CALL_MT_END"],
                     counter=dict(name="roam_min", at_least=5 + r), exempt=["quiet_hours"],
                     cooldown="3d", channel="sms", template="ROAMING_PACK", convert_on=["ORDER"],
                     convert_arg=8301, convert_within="2d"),
        lambda: dict(name="intl_pack", priority=14, on=["CALL_MO_END"],
                     where=f"'business' in tags or arpu >= {100 + 10 * r}",
                     flags=["international"], counter=dict(name="intl_calls", at_least=1 + r), once=True, channel="sms",
                     template="INTL_PACK", holdout=0.05, convert_on=["ORDER"], convert_arg=8401,
                     convert_within="7d"),
        lambda: dict(name="recharge_bonus", priority=4, on=["RECHARGE"],
                     where=f"brand == 'prepaid' and arpu < {60 + 5 * r}", hours="08:00-22:00",
                     days="mon-sat", once=True, exempt=["min_gap", "max_in_window"], channel="boss",
                     template="RECHARGE_BONUS_5"),
        lambda: dict(name="cbd_lunch", priority=9, on=["CALL_MO_END", "SMS_MO", "DATA_SESSION"], area="cbd",
                     hours=f"11:{30 - min(r, 29):02d}-13:30", days="mon-fri", delay="15m",
                     recheck=["area", "hours"], exclude=["staff", "complaints"], cooldown="1d",
                     channel="sms", template="LUNCH_OFFER", holdout=0.1, convert_on=["ORDER"],
                     convert_arg=8501, convert_within="1d"),
        lambda: dict(name="minutes_bundle", priority=7, on=["CALL_MO_END", "CALL_MT_END"],
                     where="plan in ['basic_38', 'silver_128']",
                     counter=dict(name="call_secs_day", at_least=600 + 60 * r), cooldown="7d", channel="sms",
                     template="MINUTES_BUNDLE", convert_on=["ORDER"], convert_arg=8601, convert_within="3d",
                     stop_after=2),
        lambda: dict(name="night_owl", priority=3, on=["DATA_SESSION"],
                     where=f"'student' in tags or join_date >= '{since(365 + 30 * r)}'",
                     hours="23:00-02:00", days="sat-tue", exempt=["quiet_hours"], cooldown="1d",
                     channel="popup", template="NIGHT_DATA_PASS", holdout=0.05, convert_on=["ORDER"],
                     convert_arg=8701, convert_within="1d"),
        lambda: dict(name="vip_care", priority=25, on=["POWER_ON"], where="'vip' in tags",
                     delay=f"{2 + r}m", recheck=["powered_on"], cooldown="1d", channel="sms",
                     template="VIP_CARE"),
        # Receives many long-distance calls and makes few: the calls come from family far
        # away, so offer the package that makes calling them back cheap (SPEC §2.1's example).
        lambda: dict(name="ld_callback", priority=10, on=["CALL_MT_END"], flags=["long_distance"],
                     counter=dict(name="ld_in", at_least=3 + r), when=f"ld_in >= 3 * ld_calls + {2 + r}",
                     cooldown="7d", channel="sms", template="LD_CALLBACK_PACK", holdout=0.1,
                     convert_on=["ORDER"], convert_arg=5005, convert_within="7d"),
    ]
    assert len(kinds) == SYNTHETIC_KINDS
    return kinds[i % len(kinds)]()


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def _conversion_rules(text: str, path: Path) -> list[tuple[int, Optional[int], str, int, int]]:
    """(event type code, offer code or None, campaign id, holdout threshold, global holdout
    threshold) for each conversion event of each campaign with a control group (its own or
    the programme's), from the written configuration."""
    from engine.language.config import parse_config
    config = parse_config(text, path)
    everyone = config.policy.global_holdout_threshold
    return [(code, c.convert_arg, c.id, c.holdout_threshold, everyone)
            for c in config.campaigns if c.holdout_threshold or everyone for code in c.convert_on]


def _campaign_toml(id_: str, keys: dict) -> str:
    lines = ["[[campaign]]", f"id = {_toml_value(id_)}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def _round_budget(n: int) -> int:
    """n rounded down to two significant digits, as budgets are written."""
    step = 10 ** max(0, len(str(n)) - 2)
    return n // step * step


def _moments(first_day: datetime.date, days: int) -> list[tuple[str, dict]]:
    """The campaigns of examples/moments and of a campaign's life, for a trace of `days` days
    from `first_day`: (id, keys)."""
    last_day = first_day + datetime.timedelta(days=days - 1)
    festival = first_day + datetime.timedelta(days=min(1, days - 1))
    return [
        # Subscribers of a year or more, on the month and day they joined.
        ("network_anniversary", dict(
            priority=19, on=["CALL_MO_END", "SMS_MO", "DATA_SESSION"], anniversary="join_date",
            where=f"join_date < '{(first_day - datetime.timedelta(days=365)).isoformat()}'",
            cooldown="300d", channel="sms", template="NETWORK_ANNIVERSARY_BONUS")),
        # A festival greeting to the seniors, from the trace's second day to its last.
        ("elders_festival", dict(
            priority=2, on=["CALL_MO_END", "CALL_MT_END"], where="'senior' in tags",
            start=festival.isoformat(), end=last_day.isoformat(), hours="09:00-20:00", once=True,
            channel="sms", template="ELDERS_FESTIVAL_GREETING")),
        # Last summer's roaming offer, retired: its state (contacts, streaks) is kept.
        ("summer_roaming", dict(
            priority=16, on=["CALL_MO_END", "DATA_SESSION"], flags=["roaming"], enabled=False,
            cooldown="30d", channel="sms", template="SUMMER_ROAMING_PACK")),
    ]


def _config_text(subscribers, k, days, first_day, profiles, lists, areas) -> tuple[str, int]:
    new_since = (first_day - datetime.timedelta(days=32)).isoformat()
    # A trace of a few days is too short for the operator's 7-day min_gap: one contact would
    # block every other programme for the rest of it. The gap is scaled to a twelfth of the
    # span (4h for two days), at most 7d.
    min_gap = f"{min(7 * 24, 2 * days)}h"
    # Budgets an operator would set for a base of this size (what the SMS gateway takes in a
    # day, what finance allots to a bonus), with floors so that small worlds never reach them.
    # (20,000 subscribers send about 4,300 SMS a day and 120 top-up bonuses; 200,000, over a
    # week, 6,500 to 14,000 and 120 to 310.)
    sms_day = _round_budget(max(6_000, subscribers // 20))
    bonus_day = _round_budget(max(150, subscribers // 1_000))
    bonus_total = 5 * bonus_day
    campaigns = [
        _campaign_toml("crbt_school", dict(
            priority=30, on=["CALL_MO_END"], audience="crbt_targets", peer_in="crbt_peers",
            where="arpu >= 50 and brand != 'prepaid'", area="schools", hours="09:00-18:00", days="mon-fri",
            delay="5m", recheck=["hours", "powered_on"], cooldown="30d", channel="sms",
            template="CRBT_OFFER_1", holdout=0.05, convert_on=["CRBT_DOWNLOAD"], convert_within="7d")),
        _campaign_toml("airport_newspaper", dict(
            priority=30, on=["LOCATION_UPDATE", "POWER_ON"], audience="mms_handsets", area="airport",
            enter=True, delay="20m", recheck=["area", "powered_on"], cooldown="30d", channel="mms",
            template="NEWSPAPER_TRIAL", holdout=0.05, convert_on=["ORDER"], convert_arg=6001,
            convert_within="3d")),
    ]
    used = {"sms", "ld_calls", "ld_calls_60d", "roam_min", "power_cycles"}
    for id_, priority, on, counter, at_least, channel, template, options in HABIT_STEPS:
        keys = dict(priority=priority, on=on, where=f"join_date >= '{new_since}'",
                    counter=dict(name=counter, at_least=at_least), once=True)
        if "exempt" in options:
            keys["exempt"] = options["exempt"]
        keys.update(channel=channel, template=template)
        keys.update((k, v) for k, v in options.items() if k != "exempt")
        campaigns.append(_campaign_toml(id_, keys))
    for id_, keys in SEQUENCES:
        if id_ == "topup_thanks":
            keys = dict(keys, daily_budget=bonus_day, total_budget=bonus_total)
        campaigns.append(_campaign_toml(id_, keys))
    moments_at = len(campaigns)
    for id_, keys in _moments(first_day, days):
        campaigns.append(_campaign_toml(id_, keys))
    width = max(2, len(str(k)))
    synthetic = []
    for i in range(k):
        keys = _synthetic(i, first_day)
        name = keys.pop("name")
        if "counter" in keys:
            used.add(keys["counter"]["name"])
        synthetic.append(_campaign_toml(f"s{i + 1:0{width}d}_{name}", keys))

    counters = [f"{name:<16} = {_toml_value(spec)}" for name, spec in COUNTERS.items() if name in used]
    markers = [f"{name:<16} = {_toml_value(spec)}" for name, spec in MARKERS.items()]
    head = f"""\
# A synthetic world written by `sigmatch gen`: {subscribers:,} subscribers, {days} day(s) of signalling
# from {first_day.isoformat()} (local time, {UTC_OFFSET}). The six programmes of examples/, then
# {k} synthetic campaign(s) of {SYNTHETIC_KINDS} kinds in turn; the programmes and thirteen synthetic
# campaigns together use every key of a campaign.
#
# min_gap is scaled down to the span of the trace ({min_gap}): the operator's 7 days would let
# one contact block every other programme for the whole trace. The budgets are scaled to the
# number of subscribers.

[engine]
utc_offset = "{UTC_OFFSET}"
profiles   = "{profiles}"

[event_types]
LOW_BALANCE = {LOW_BALANCE}

[lists]
""" + "".join(f'{name:<14} = "lists/{name}.roar"\n' for name in lists) + """
[areas]
""" + "".join(f'{name:<8} = "areas/{name}.txt"\n' for name in areas) + f"""
[channels]
sms = {{ daily_budget = {sms_day:_} }}   # what the SMS gateway takes from us in a day

[policy]
blacklist      = ["dnd"]
quiet_hours    = "22:00-08:00"
min_gap        = "{min_gap}"
max_per_day    = 2
max_in_window  = {{ contacts = 4, window = "7d" }}   # the rebates (BOSS credits) are exempt
global_holdout = 0.01          # never sent anything: the programme's own control group

[counters]
""" + "\n".join(counters) + """

[markers]
""" + "\n".join(markers) + """

# -- signalling-triggered offers (examples/crbt_school, examples/airport_newspaper) ------
"""
    habits_at, sequences_at = 2, 2 + len(HABIT_STEPS)
    body = ("\n".join(campaigns[:habits_at])
            + "\n# -- usage habits of new subscribers (examples/newuser_habits), X = 3 -------------------\n"
            + "\n".join(campaigns[habits_at:sequences_at])
            + "\n# -- sequences, absence, calendar counters, the top-up rescue (examples/sequences, --------\n"
            + "# -- examples/topup_rescue) --------------------------------------------------------------\n"
            + "\n".join(campaigns[sequences_at:moments_at])
            + "\n# -- moments and a campaign's life (examples/moments) ------------------------------------\n"
            + "\n".join(campaigns[moments_at:]))
    if synthetic:
        body += "\n# -- synthetic campaigns ----------------------------------------------------------------\n"
        body += "\n".join(synthetic)
    return head + body, len(campaigns) + len(synthetic)


# ================================================================ the trace

@dataclass
class _Trips:
    """One airport trip per travelling subscriber: scripted events, sorted by time, and each
    traveller's stay (for the background events that fall inside it)."""
    events: dict                   # columns as _draw_chunk gives them, sorted by ts
    who: np.ndarray                # travellers, sorted
    arrive: np.ndarray             # aligned with who
    leave: np.ndarray


def _trips(rng, people: _People, city: _City, t0: int, days: int, events: int) -> _Trips:
    travellers = np.flatnonzero(people.sub["traits"] & TRAVELS)
    # Trips stay a small part of the traffic however few events there are.
    k = min(len(travellers), events // 150)
    who = np.sort(rng.choice(travellers, k, replace=False)) if k else travellers[:0]
    arrive = t0 + rng.integers(0, days, k) * DAY + rng.integers(6 * HOUR, 21 * HOUR, k)   # local 06:00-21:00
    stay = rng.integers(5, 150, k) * MINUTE
    leave = arrive + stay         # background events in between happen at the airport
    airport = city.cells(np.repeat(city.airport, 3), np.tile(np.arange(3), len(city.airport)))
    gate = airport[rng.integers(0, len(airport), k)]
    sub = people.sub[who]
    home = city.cells(sub["home"], sub["sector"])
    parts = []
    landing = rng.random(k) < 0.3            # switched off on the plane, on again at the gate
    parts.append((who[landing], arrive[landing] - rng.integers(60, 180, landing.sum()) * MINUTE, POWER_OFF,
                  home[landing]))
    parts.append((who[landing], arrive[landing], POWER_ON, gate[landing]))
    parts.append((who[~landing], arrive[~landing], LOCATION_UPDATE, gate[~landing]))
    walks = rng.random(k) < 0.4              # from the check-in hall to a gate: stays inside
    parts.append((who[walks], arrive[walks] + (stay[walks] * rng.random(walks.sum())).astype(np.int64),
                  LOCATION_UPDATE, airport[rng.integers(0, len(airport), walks.sum())]))
    # Some switch off soon (boarding: no offer) and fly away; the others leave by road.
    board_after = rng.integers(2, 15, k) * MINUTE
    boards = (rng.random(k) < 0.15) & (board_after < stay)
    parts.append((who[boards], arrive[boards] + board_after[boards], POWER_OFF, gate[boards]))
    parts.append((who[~boards], leave[~boards], LOCATION_UPDATE, home[~boards]))
    ts = np.concatenate([p[1] for p in parts]).astype(np.int64)
    columns = {
        "who": np.concatenate([p[0] for p in parts]).astype(np.int64),
        "ts": ts,
        "type": np.concatenate([np.full(len(p[0]), p[2], np.uint8) for p in parts]),
        "cell": np.concatenate([p[3] for p in parts]).astype(np.uint32),
    }
    inside = (ts >= t0) & (ts < t0 + days * DAY)
    order = np.argsort(ts[inside], kind="stable")
    columns = {name: col[inside][order] for name, col in columns.items()}
    # Never more than half the trace, whatever the arguments.
    if len(columns["ts"]) > events // 2:
        keep = np.sort(rng.choice(len(columns["ts"]), events // 2, replace=False))
        columns = {name: col[keep] for name, col in columns.items()}
    n = len(columns["ts"])
    columns.update(peer=np.zeros(n, np.uint64), dur=np.zeros(n, np.uint32), flags=np.zeros(n, np.uint8),
                   arg=np.zeros(n, np.uint32))
    return _Trips(events=columns, who=who, arrive=arrive, leave=leave)


def _minute_counts(t0: int, days: int, events: int) -> np.ndarray:
    """Background events per minute of the span: the diurnal curve, exactly `events` in all."""
    minutes = np.arange(days * 1440)
    local = t0 + UTC_OFFSET_MS + minutes * MINUTE
    hour = (local // HOUR) % 24
    frac = (local % HOUR) / HOUR
    weekday = (local // DAY + 3) % 7             # 1970-01-01 was a Thursday; 0 = Monday
    # Linear between the hourly values, so that the volume never jumps on the hour.
    weight = (HOURLY[hour] * (1 - frac) + HOURLY[(hour + 1) % 24] * frac) * WEEKDAY_FACTOR[weekday]
    cumulative = np.round(np.cumsum(weight) / weight.sum() * events).astype(np.int64)
    return np.diff(cumulative, prepend=0)


def _slices(counts: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive minute ranges [a, b) holding about CHUNK_EVENTS background events each."""
    bounds = np.searchsorted(np.cumsum(counts), np.arange(CHUNK_EVENTS, counts.sum(), CHUNK_EVENTS), side="left") + 1
    edges = [0] + [int(b) for b in bounds if 0 < b < len(counts)] + [len(counts)]
    edges = sorted(set(edges))
    return list(zip(edges[:-1], edges[1:]))


TABLE = 10_000


def _table(values, shares, dtype) -> np.ndarray:
    """TABLE entries holding each value in proportion to its share (to 1 in TABLE)."""
    shares = np.asarray(shares, dtype=np.float64)
    ends = np.round(np.cumsum(shares) / shares.sum() * TABLE).astype(np.int64)
    return np.repeat(np.asarray(list(values), dtype=dtype), np.diff(ends, prepend=0))


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a well-mixed hash of uint64s (wraps modulo 2**64)."""
    x = x ^ (x >> np.uint64(30))
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


class _Drawing:
    """Everything a slice of the trace is drawn from, ready as flat arrays."""

    def __init__(self, seed: int, people: _People, offnet: np.ndarray, city: _City, trips: _Trips,
                 conversions=()):
        self.people, self.offnet, self.city, self.trips = people, offnet, city, trips
        self.conversions = conversions
        self.n = len(people.msisdn)
        self.salt = np.uint64(_mix64(np.array([seed], dtype=np.uint64))[0])
        # Categorical draws through lookup tables of TABLE entries: an index is cheaper than
        # a search in a CDF.
        self.type_table = _table([t for t, _ in EVENT_MIX], [s for _, s in EVENT_MIX], np.uint8)
        self.contact_table = _table(range(CONTACTS), 1.0 / np.arange(1, CONTACTS + 1), np.uint64)
        self.cents_table = _table([c for c, _ in RECHARGE_CENTS], [s for _, s in RECHARGE_CENTS], np.uint32)
        self.airport = city.cells(np.repeat(city.airport, 3), np.tile(np.arange(3), len(city.airport)))
        a = 1.0 - ZIPF_EXPONENT
        self.zipf_a, self.zipf_top = a, (self.n + 1.0) ** a - 1.0

    def subscribers(self, u: np.ndarray) -> np.ndarray:
        """Uniform [0, 1) -> subscriber index, by the inverse of the continuous Zipf CDF over
        ranks 1..n+1 (rank r has density ~ r^-ZIPF_EXPONENT)."""
        rank = np.power(1.0 + u * self.zipf_top, 1.0 / self.zipf_a).astype(np.int64) - 1
        np.minimum(rank, self.n - 1, out=rank)
        return self.people.rank_to_subscriber[rank].astype(np.int64)

    def draw(self, rng, ts: np.ndarray) -> dict:
        """Background events at the given (sorted) times."""
        k = len(ts)
        city, sub_all = self.city, self.people.sub
        who = self.subscribers(rng.random(k))
        type_ = self.type_table[rng.integers(0, TABLE, k)]
        sub = sub_all[who]

        # Where: the daytime site on weekdays within the subscriber's hours, else home; mostly
        # that site, sometimes a neighbouring one, rarely anywhere in the city.
        local = ts + UTC_OFFSET_MS
        minute = (local // MINUTE) % 1440
        weekday = (local // DAY + 3) % 7
        at_day = (weekday < 5) & (minute >= sub["day_from"]) & (minute < sub["day_to"])
        site = np.where(at_day, sub["day"], sub["home"]).astype(np.int64)
        r = rng.random(k, dtype=np.float32)
        near = (r >= 0.72) & (r < 0.95)
        site[near] = city.neighbour(rng, site[near])
        far = r >= 0.95
        site[far] = rng.integers(0, city.sites, int(far.sum()))
        sector = np.where(rng.random(k, dtype=np.float32) < 0.8, sub["sector"], rng.integers(0, 3, k))
        cell = city.cells(site, sector)
        # Travellers inside their trip's stay are at the airport.
        traveller = np.flatnonzero(sub["traits"] & TRAVELS)
        if len(traveller) and len(self.trips.who):
            t = self.trips
            pos = np.searchsorted(t.who, who[traveller]).clip(0, len(t.who) - 1)
            there = ((t.who[pos] == who[traveller]) & (ts[traveller] >= t.arrive[pos])
                     & (ts[traveller] < t.leave[pos]))
            inside = traveller[there]
            cell[inside] = self.airport[rng.integers(0, len(self.airport), len(inside))]
        cell[np.isin(type_, _FROM_BOSS)] = 0

        # Whom: one of the subscriber's contacts (contact j called ~ 1/(j+1)), a third of them
        # on other networks; one call in ten to anyone at all; SMS from service numbers.
        talk = np.isin(type_, _TALK)
        t_idx = np.flatnonzero(talk)
        kt = len(t_idx)
        j = self.contact_table[rng.integers(0, TABLE, kt)]
        h = _mix64((who[t_idx].astype(np.uint64) * np.uint64(CONTACTS) + j) ^ self.salt)
        anyone = rng.random(kt, dtype=np.float32) < 0.1
        h[anyone] = _mix64(rng.integers(0, 2**63, int(anyone.sum()), dtype=np.int64).astype(np.uint64))
        offnet = (h & np.uint64(0xFFFF)) < np.uint64(int(OFFNET_SHARE * 65536))
        index = (h >> np.uint64(16))
        on_idx = (index % np.uint64(self.n)).astype(np.int64)
        on_idx = np.where(on_idx == who[t_idx], (on_idx + 1) % self.n, on_idx)
        peer_t = np.where(offnet, self.offnet[(index % np.uint64(len(self.offnet))).astype(np.int64)],
                          self.people.msisdn[on_idx])
        service = (type_[t_idx] == SMS_MT) & (rng.random(kt, dtype=np.float32) < 0.3)
        services = np.array(SERVICE_NUMBERS, dtype=np.uint64)
        peer_t[service] = services[rng.integers(0, len(services), int(service.sum()))]
        peer = np.zeros(k, dtype=np.uint64)
        peer[t_idx] = peer_t

        # How long, and the flags.
        traits = sub["traits"]
        call = (type_ == CALL_MO_END) | (type_ == CALL_MT_END)
        roams = (traits & ROAMS) != 0
        dur = np.zeros(k, dtype=np.uint32)
        c_idx = np.flatnonzero(call)
        talk_s = rng.lognormal(math.log(45), 1.1, len(c_idx)) * np.where(roams[c_idx], 2.0, 1.0)
        dur[c_idx] = np.clip(talk_s, 1, 7200).astype(np.uint32)
        d_idx = np.flatnonzero(type_ == DATA_SESSION)
        dur[d_idx] = np.clip(rng.lognormal(math.log(240), 1.2, len(d_idx)), 1, 86_400).astype(np.uint32)
        international = talk & (peer >= np.uint64(10**12))
        p_ld = np.where((traits & LD_HEAVY) != 0, np.float32(0.55), np.float32(0.05))
        long_distance = call & ~international & (rng.random(k, dtype=np.float32) < p_ld)
        flags = (long_distance * np.uint8(LONG_DISTANCE) | international * np.uint8(INTERNATIONAL)
                 | ((talk | (type_ == DATA_SESSION)) & roams) * np.uint8(ROAMING)).astype(np.uint8)

        arg = np.zeros(k, dtype=np.uint32)
        o_idx = np.flatnonzero(type_ == ORDER)
        arg[o_idx] = np.array(OFFER_CODES, dtype=np.uint32)[rng.integers(0, len(OFFER_CODES), len(o_idx))]
        r_idx = np.flatnonzero(type_ == RECHARGE)
        arg[r_idx] = self.cents_table[rng.integers(0, TABLE, len(r_idx))]
        self._fewer_for_controls(rng, who, type_, arg, dur)
        return dict(who=who, ts=ts, type=type_, cell=cell, peer=peer, dur=dur, flags=flags, arg=arg)

    def _fewer_for_controls(self, rng, who, type_, arg, dur) -> None:
        """The offers work: a subscriber in a campaign's control group (the engine's own
        holdout hash, SPEC §3 step 7) or in the programme's (`global_holdout`) makes the
        conversion event of that campaign CONTROL_CONVERSION times as often as one who may get the offer, so that a replay
        shows an uplift that the report can measure. Those events become orders of something
        no campaign offers (like them, from BOSS: conversions on radio events are left as
        they are)."""
        seen = set()
        for code, offer, campaign, threshold, everyone in self.conversions:
            if code not in _FROM_BOSS:
                continue
            # The programme's control group once per kind of conversion event, not once per
            # campaign that counts it: a subscriber's odds must not shrink with their number.
            if (code, offer) in seen:
                everyone = 0
            seen.add((code, offer))
            idx = np.flatnonzero((type_ == code) & ((arg == offer) if offer is not None else True))
            if not len(idx):
                continue
            numbers = self.people.msisdn[who[idx]].tolist()
            control = np.fromiter((zlib.crc32(f"{m}:{campaign}".encode()) % 10000 < threshold
                                   or zlib.crc32(f"{m}:global".encode()) % 10000 < everyone for m in numbers),
                                  dtype=bool, count=len(numbers))
            gone = idx[control & (rng.random(len(idx)) >= CONTROL_CONVERSION)]
            type_[gone], arg[gone], dur[gone] = ORDER, OTHER_ORDER, 0


def _merge(background: dict, scripted: dict) -> dict:
    """Both sets of columns as one, in time order (a scripted event after background events
    of the same ms)."""
    k = len(scripted["ts"])
    if k == 0:
        return background
    n = len(background["ts"]) + k
    at = np.searchsorted(background["ts"], scripted["ts"], side="right") + np.arange(k)
    is_scripted = np.zeros(n, dtype=bool)
    is_scripted[at] = True
    merged = {}
    for name, col in background.items():
        out = np.empty(n, dtype=col.dtype)
        out[at] = scripted[name]
        out[~is_scripted] = col
        merged[name] = out
    return merged


def _sorted_times(rng, minute_start: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """counts[i] uniform times in minute i, sorted, without a sort: the m order statistics of m
    uniforms are the cumulative sums of m + 1 exponential spacings, over their total."""
    spacing = np.cumsum(rng.standard_exponential(int(counts.sum()) + len(counts)))
    ends = np.cumsum(counts + 1) - 1                  # each minute's closing spacing
    total = spacing[ends]
    before = np.concatenate([[0.0], total[:-1]])
    minute = np.repeat(np.arange(len(counts)), counts + 1)
    keep = np.ones(len(spacing), dtype=bool)
    keep[ends] = False
    minute = minute[keep]
    offset = (spacing[keep] - before[minute]) / (total - before)[minute] * MINUTE
    return minute_start[minute] + offset.astype(np.int64)


# trace.msgpack, or trace-1.msgpack .. trace-F.msgpack (numbers padded to F's width)
_TRACE_NAME = re.compile(r"trace(?:-[0-9]+)?\.msgpack")


def _trace_paths(directory: Path, files: int) -> list[Path]:
    if files == 1:
        return [directory / "trace.msgpack"]
    width = len(str(files))
    return [directory / f"trace-{i:0{width}d}.msgpack" for i in range(1, files + 1)]


class _TraceWriter:
    """Writes the stream into its files: file i (from 0) holds events [i * E // F, (i + 1) * E // F),
    so that each file also decodes on its own."""

    def __init__(self, paths: list[Path], events: int):
        self.paths = paths
        f = len(paths)
        self.cuts = [((i * events) // f) * EVENT_DTYPE.itemsize for i in range(1, f)]
        self.offset = 0
        self.index = 0
        self.file = open(paths[0], "wb")

    def write(self, data: memoryview) -> None:
        while self.index < len(self.cuts) and self.offset + len(data) > self.cuts[self.index]:
            split = self.cuts[self.index] - self.offset
            self.file.write(data[:split])
            self.offset += split
            data = data[split:]
            self.file.close()
            self.index += 1
            self.file = open(self.paths[self.index], "wb")
        self.file.write(data)
        self.offset += len(data)

    def close(self) -> None:
        self.file.close()
        while self.index + 1 < len(self.paths):       # more files than events: empty ones
            self.index += 1
            open(self.paths[self.index], "wb").close()


def _write_trace(paths, seed, people, offnet, city, trips, t0, days, events, bar, conversions=()) -> int:
    """Draw, encode and write the trace slice by slice. Slices are drawn by WORKERS threads
    (NumPy releases the GIL in its loops) and written in order; at most 2 * WORKERS are in
    memory at once."""
    scripted = trips.events
    counts = _minute_counts(t0, days, events - len(scripted["ts"]))
    drawing = _Drawing(seed, people, offnet, city, trips, conversions)
    minute_start = t0 + np.arange(len(counts) + 1, dtype=np.int64) * MINUTE

    def slice_bytes(number: int, a: int, b: int) -> np.ndarray:
        rng = np.random.default_rng([seed, 6, number])
        ts = _sorted_times(rng, minute_start[a:b], counts[a:b])
        background = drawing.draw(rng, ts)
        lo, hi = np.searchsorted(scripted["ts"], [minute_start[a], minute_start[b]])
        columns = _merge(background, {name: col[lo:hi] for name, col in scripted.items()})
        return _wire(columns["ts"], columns["type"], people.msisdn[columns["who"]], columns["peer"],
                     columns["cell"], columns["dur"], columns["flags"], columns["arg"])

    writer = _TraceWriter(paths, events)
    pending: deque = deque()
    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            for number, (a, b) in enumerate(_slices(counts)):
                pending.append(pool.submit(slice_bytes, number, a, b))
                while len(pending) > WORKERS or (pending and pending[0].done()):
                    _write_slice(writer, pending.popleft().result(), bar)
            while pending:
                _write_slice(writer, pending.popleft().result(), bar)
    finally:
        for future in pending:
            future.cancel()
        writer.close()
    assert writer.offset == events * EVENT_DTYPE.itemsize, (writer.offset, events)
    return writer.offset


def _write_slice(writer: _TraceWriter, wire: np.ndarray, bar) -> None:
    writer.write(memoryview(wire.view(np.uint8)))
    if bar is not None:
        bar.update(len(wire))
