"""A small but realistic world for `sigmatch demo`: subscribers, lists, areas, the three
programmes of examples/ plus two retention campaigns, and two days of signalling.

    config, traces = build_demo_world(Path("demo"))
    Engine.from_config(config).replay(traces, out="demo/out", drain=True)

Everything is drawn with one NumPy generator from `seed`, so a world is the same bytes
every time. The trace is not uniform noise: every subscriber has a home cell; parents,
teachers and students spend part of each weekday in a school cell and make calls from
there; travellers go through the airport once (some stay, some leave or switch off within
twenty minutes, some switch on there after landing); a few subscribers call long distance
a lot, a few roam. That is what gives each campaign something to find.
"""
from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
from pyroaring import BitMap64

__all__ = ["build_demo_world"]

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
DAY0 = 1_793_548_800_000        # Monday 2026-11-02 00:00 at +08:00: two working days
DAYS = 2

CALL_MO_END, CALL_MT_END, SMS_MO, SMS_MT = 1, 2, 3, 4
LOCATION_UPDATE, POWER_ON, POWER_OFF, DATA_SESSION = 6, 7, 8, 9
CRBT_DOWNLOAD, ORDER, RECHARGE = 10, 11, 12
LONG_DISTANCE, ROAMING, INTERNATIONAL = 1, 2, 4

# Background traffic: (type, share of events).
BACKGROUND = [
    (CALL_MO_END, 0.27), (CALL_MT_END, 0.24), (SMS_MO, 0.18), (SMS_MT, 0.08),
    (LOCATION_UPDATE, 0.12), (DATA_SESSION, 0.05), (POWER_OFF, 0.01), (POWER_ON, 0.01),
    (ORDER, 0.015), (RECHARGE, 0.015), (CRBT_DOWNLOAD, 0.01),
]
# Share of the day's traffic per local hour: quiet at night, peaks late morning and evening.
HOURLY = np.array([1, 0.5, 0.3, 0.2, 0.2, 0.4, 1.2, 3, 5, 6, 6.5, 6.5,
                   6, 6, 6, 6, 6, 6, 6.5, 7, 7, 6, 4, 2])
OFFER_CODES = [3001, 5005, 6001, 7001, 7002]

PLANS = ["basic_38", "silver_128", "gold_188", "family_268", "premium_388"]
TAG_SETS = ["", "", "", "parent", "parent", "student", "teacher", "vip", "churn_risk",
            "parent|churn_risk", "business|frequent_flyer", "frequent_flyer", "vip|business"]

# `habits` is HABIT_STEPS, written out by _habit_step below.
CONFIG = """\
# The demo world of `sigmatch demo`: the three programmes of examples/ and two retention
# campaigns over {subscribers:,} subscribers and two working days of signalling.
#
# Two days are too short for the operator's 7-day min_gap: one contact would block every
# other programme for the rest of the demo. The demo therefore scales the contact rules down
# (min_gap 4h) so that every step of each journey shows up; examples/ use the real values.

[engine]
utc_offset = "+08:00"
profiles   = "profiles.csv"

[lists]
dnd          = "lists/dnd.txt"
crbt_targets = "lists/crbt_targets.roar"
crbt_peers   = "lists/crbt_peers.roar"
mms_handsets = "lists/mms_handsets.roar"

[areas]
schools = "areas/schools.txt"
airport = "areas/airport.txt"

[policy]
blacklist   = ["dnd"]
quiet_hours = "22:00-08:00"
min_gap     = "4h"
max_per_day = 2

[counters]
sms          = {{ on = ["SMS_MO"] }}
ld_calls     = {{ on = ["CALL_MO_END"], flags = ["long_distance"] }}
ld_calls_60d = {{ on = ["CALL_MO_END"], flags = ["long_distance"], window = "60d" }}
roam_min     = {{ on = ["CALL_MO_END", "CALL_MT_END"], flags = ["roaming"], add = "dur_minutes", window = "90d" }}

# -- signalling-triggered offers (examples/crbt_school, examples/airport_newspaper) ------
[[campaign]]
id       = "crbt_school"
priority = 30
on       = ["CALL_MO_END"]
audience = "crbt_targets"
peer_in  = "crbt_peers"
where    = "arpu >= 50 and brand != 'prepaid'"
area     = "schools"
hours    = "09:00-18:00"
days     = "mon-fri"
delay    = "5m"
recheck  = ["hours", "powered_on"]
cooldown = "30d"
channel  = "sms"
template = "CRBT_OFFER_1"
holdout  = 0.05
convert_on     = ["CRBT_DOWNLOAD"]
convert_within = "7d"

[[campaign]]
id       = "airport_newspaper"
priority = 30
on       = ["LOCATION_UPDATE", "POWER_ON"]
audience = "mms_handsets"
area     = "airport"
enter    = true
delay    = "20m"
recheck  = ["area", "powered_on"]
cooldown = "30d"
channel  = "mms"
template = "NEWSPAPER_TRIAL"
holdout  = 0.05
convert_on     = ["ORDER"]
convert_arg    = 6001
convert_within = "3d"

# -- usage habits of new subscribers (examples/newuser_habits), X = 3 -------------------
{habits}
# -- retention ------------------------------------------------------------------------
[[campaign]]
id       = "retention_churn"
priority = 5
on       = ["CALL_MT_END", "DATA_SESSION"]
where    = "'churn_risk' in tags and plan != 'premium_388'"
cooldown = "30d"
channel  = "outbound"            # a call-centre task
template = "RETENTION_CALL"
holdout  = 0.1
convert_on     = ["ORDER"]
convert_arg    = 7001
convert_within = "7d"
stop_after     = 3

[[campaign]]
id       = "retention_upgrade"
priority = 5
on       = ["RECHARGE"]
where    = "plan in ['silver_128', 'gold_188'] and arpu >= 60"
cooldown = "30d"
channel  = "sms"
template = "PLAN_UPGRADE"
holdout  = 0.1
convert_on     = ["ORDER"]
convert_arg    = 7002
convert_within = "7d"
"""

# The new subscribers' journey (examples/newuser_habits), X = 3: every step is for those who
# joined since 2026-10-01 and fires once per subscriber, when its usage counter reaches a
# threshold. (id, priority, on, counter, at_least, channel, template, options)
HABIT_STEPS = [
    ("sms_intro", 10, ["SMS_MO"], "sms", 1, "sms", "SMS_BUNDLE_INTRO", {}),
    ("ld_intro", 10, ["CALL_MO_END"], "ld_calls", 1, "sms", "LD_INTRO", {}),
    ("ld_target", 20, ["CALL_MO_END"], "ld_calls", 3, "sms", "LD_PACKAGE_TARGET",
     dict(convert=("ORDER", 5005, "30d"))),
    ("ld_rebate", 15, ["CALL_MO_END"], "ld_calls_60d", 3, "boss", "LD_REBATE_10", dict(exempt=["min_gap"])),
    ("roam_rebate", 15, ["CALL_MO_END", "CALL_MT_END"], "roam_min", 30, "boss", "ROAM_REBATE_30MIN",
     dict(exempt=["min_gap"])),
]


def _habit_step(id_: str, priority: int, on: list[str], counter: str, at_least: int, channel: str,
                template: str, *, exempt: list[str] | None = None, convert: tuple | None = None) -> str:
    """One HABIT_STEPS entry as a [[campaign]] table of CONFIG; `convert` is (on, arg, within)."""
    def names(items) -> str:
        return "[" + ", ".join(f'"{item}"' for item in items) + "]"
    lines = [
        "[[campaign]]",
        f'id       = "{id_}"',
        f"priority = {priority}",
        f"on       = {names(on)}",
        "where    = \"join_date >= '2026-10-01'\"",
        f'counter  = {{ name = "{counter}", at_least = {at_least} }}',
        "once     = true",
    ]
    if exempt:
        lines.append(f"exempt   = {names(exempt)}")
    lines += [f'channel  = "{channel}"', f'template = "{template}"']
    if convert:
        on_event, arg, within = convert
        lines += [f"convert_on     = {names([on_event])}", f"convert_arg    = {arg}", f'convert_within = "{within}"']
    return "\n".join(lines) + "\n"


def build_demo_world(directory: Path, *, subscribers: int = 20_000, events: int = 300_000,
                     seed: int = 7) -> tuple[Path, list[Path]]:
    """Write the demo world into `directory`; return (campaigns.toml, [trace files])."""
    if subscribers < 100 or events < 1_000:
        raise ValueError("the demo needs at least 100 subscribers and 1,000 events")
    directory = Path(directory)
    (directory / "lists").mkdir(parents=True, exist_ok=True)
    (directory / "areas").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    people = _subscribers(rng, subscribers)
    _write_profiles(directory / "profiles.csv", people)
    _write_lists(directory, rng, people)
    cells = _cells(rng, people)
    (directory / "areas" / "schools.txt").write_text(
        "# Cells covering schools.\n" + "".join(f"{c}\n" for c in cells["schools"]))
    (directory / "areas" / "airport.txt").write_text(
        "# Cells covering the airport.\n" + "".join(f"{c}\n" for c in cells["airport"]))
    config = directory / "campaigns.toml"
    habits = "\n".join(_habit_step(*step, **options) for *step, options in HABIT_STEPS)
    config.write_text(CONFIG.format(subscribers=subscribers, habits=habits))

    packed = _encode(_trace(rng, people, cells, events))
    # Two files cut inside the middle event, as a probe rotating its files mid-event would:
    # the traces of one replay are one stream (SPEC §1.4).
    middle = len(packed) // 2
    cut = sum(map(len, packed[:middle])) + int(rng.integers(1, len(packed[middle])))
    data = b"".join(packed)
    traces = [directory / "trace-1.msgpack", directory / "trace-2.msgpack"]
    traces[0].write_bytes(data[:cut])
    traces[1].write_bytes(data[cut:])
    return config, traces


def _subscribers(rng, n: int) -> dict:
    """Profile attributes and the hidden habits that shape each subscriber's traffic."""
    msisdn = np.uint64(13_800_000_000) + rng.choice(200_000_000, n, replace=False).astype(np.uint64)
    arpu = rng.gamma(2.0, 35.0, n).round(1)
    brand = rng.choice(["prepaid", "postpaid", "family"], n, p=[0.45, 0.4, 0.15])
    plan = rng.choice(PLANS, n, p=[0.3, 0.3, 0.2, 0.12, 0.08])
    tags = rng.choice(TAG_SETS, n)
    new = rng.random(n) < 0.25
    join = np.where(
        new,
        np.datetime64("2026-10-01") + rng.integers(0, 32, n).astype("timedelta64[D]"),
        np.datetime64("2018-01-01") + rng.integers(0, 3195, n).astype("timedelta64[D]"),
    )
    at_school = np.char.find(tags, "parent") >= 0
    at_school |= np.isin(tags, ["student", "teacher"])
    at_school |= rng.random(n) < 0.1
    travels = np.char.find(tags, "frequent_flyer") >= 0
    travels = np.where(travels, rng.random(n) < 0.5, rng.random(n) < 0.05)
    return dict(
        n=n, msisdn=msisdn, arpu=arpu, brand=brand, plan=plan, tags=tags,
        join_date=np.datetime_as_string(join, unit="D"),
        at_school=at_school, travels=travels,
        has_crbt=rng.random(n) < 0.3,
        big_screen=rng.random(n) < 0.45,
        # Most subscribers rarely call long distance; migrant workers call home every day.
        p_long_distance=np.where(rng.random(n) < 0.15, 0.7, 0.04),
        roams=rng.random(n) < 0.05,
        activity=rng.lognormal(0.0, 0.8, n),
        # The people on other networks our subscribers talk to.
        offnet=np.uint64(8_613_300_000_000) + rng.choice(100_000_000, max(50, n // 5),
                                                         replace=False).astype(np.uint64),
    )


def _write_profiles(path: Path, p: dict) -> None:
    lines = ["msisdn,arpu,brand,plan,join_date,tags"]
    lines += [f"{m},{a},{b},{pl},{j},{t}" for m, a, b, pl, j, t in zip(
        p["msisdn"].tolist(), p["arpu"].tolist(), p["brand"].tolist(), p["plan"].tolist(),
        p["join_date"].tolist(), p["tags"].tolist())]
    path.write_text("\n".join(lines) + "\n")


def _write_lists(directory: Path, rng, p: dict) -> None:
    n, msisdn = p["n"], p["msisdn"]
    dnd = np.sort(msisdn[rng.random(n) < 0.03])
    (directory / "lists" / "dnd.txt").write_text(
        "# Global do-not-disturb list.\n" + "".join(f"{m}\n" for m in dnd.tolist()))
    # The warehouse's own white list: no CRBT yet and worth an offer (`where` narrows it further).
    targets = msisdn[~p["has_crbt"] & (p["arpu"] >= 40)]
    # Peers with CRBT: our subscribers who have one, and numbers of other operators known
    # (from interconnect records) to have one: 13-digit, never subscribers here.
    offnet_crbt = p["offnet"][rng.random(len(p["offnet"])) < 0.5]
    p["crbt_peers"] = np.concatenate([msisdn[p["has_crbt"]], offnet_crbt])
    handsets = msisdn[p["big_screen"]]
    for name, members in (("crbt_targets", targets), ("crbt_peers", p["crbt_peers"]),
                          ("mms_handsets", handsets)):
        (directory / "lists" / f"{name}.roar").write_bytes(BitMap64(members.tolist()).serialize())


def _cells(rng, p: dict) -> dict:
    n = p["n"]
    nr_city = max(100, n // 40)
    schools = np.arange(7001, 7001 + max(5, n // 1000), dtype=np.uint32)
    airport = np.arange(8801, 8807, dtype=np.uint32)
    return dict(
        schools=schools, airport=airport,
        home=rng.integers(1, nr_city + 1, n).astype(np.uint32),
        school=rng.choice(schools, n),
    )


def _local(day, minutes) -> np.ndarray:
    """UTC ms of local minute-of-day `minutes` on demo day `day`."""
    return (DAY0 + np.asarray(day, dtype=np.int64) * DAY + np.asarray(minutes * MINUTE, dtype=np.int64))


def _trace(rng, p: dict, cells: dict, events: int) -> dict[str, np.ndarray]:
    """The events as columns, sorted by time: school days and airport trips, then background
    traffic to fill up to `events`, its cells following each subscriber's whereabouts."""
    n = p["n"]
    parts = []
    # Whereabouts: per subscriber up to DAYS school visits and one airport visit, [start, end).
    where_start = np.zeros((n, DAYS + 1), dtype=np.int64)
    where_end = np.zeros((n, DAYS + 1), dtype=np.int64)
    where_cell = np.zeros((n, DAYS + 1), dtype=np.uint32)

    for day in range(DAYS):
        who = np.flatnonzero(p["at_school"] & (rng.random(n) < 0.7))
        start = _local(day, rng.uniform(7.5 * 60, 15 * 60, len(who)))
        end = start + rng.integers(60, 300, len(who)) * MINUTE
        cell = cells["school"][who]
        where_start[who, day], where_end[who, day], where_cell[who, day] = start, end, cell
        parts.append(_events(who, start, LOCATION_UPDATE, cell))
        parts.append(_events(who, end, LOCATION_UPDATE, cells["home"][who]))
        # Calls from school, mostly to friends: who tend to have a CRBT.
        calls = np.repeat(who, rng.integers(1, 4, len(who)))
        span = (where_end[calls, day] - where_start[calls, day]).astype(np.float64)
        ts = where_start[calls, day] + (rng.random(len(calls)) * span).astype(np.int64)
        friend = rng.random(len(calls)) < 0.5
        peer = np.where(friend, rng.choice(p["crbt_peers"], len(calls)), p["msisdn"][rng.integers(0, n, len(calls))])
        parts.append(_events(calls, ts, CALL_MO_END, cells["school"][calls], peer=peer,
                             dur=rng.exponential(150, len(calls)).astype(np.uint64) + 5))

    # Airport: one trip per traveller, arriving between 06:00 and 21:00 on one of the days.
    who = np.flatnonzero(p["travels"])
    k = len(who)
    arrive = _local(rng.integers(0, DAYS, k), rng.uniform(6 * 60, 21 * 60, k))
    stay = rng.integers(5, 150, k) * MINUTE
    gate = rng.choice(cells["airport"], k)
    where_start[who, DAYS], where_end[who, DAYS], where_cell[who, DAYS] = arrive, arrive + stay, gate
    landing = rng.random(k) < 0.3            # switched off on the plane, on again at the gate
    parts.append(_events(who[landing], arrive[landing] - rng.integers(60, 180, landing.sum()) * MINUTE,
                         POWER_OFF, cells["home"][who[landing]]))
    parts.append(_events(who[landing], arrive[landing], POWER_ON, gate[landing]))
    parts.append(_events(who[~landing], arrive[~landing], LOCATION_UPDATE, gate[~landing]))
    walks = rng.random(k) < 0.4              # from the check-in hall to a gate: stays inside
    parts.append(_events(who[walks], arrive[walks] + (stay[walks] * rng.random(walks.sum())).astype(np.int64),
                         LOCATION_UPDATE, rng.choice(cells["airport"], walks.sum())))
    boards = rng.random(k) < 0.15            # switches off soon (boarding): no offer
    parts.append(_events(who[boards], arrive[boards] + rng.integers(2, 15, boards.sum()) * MINUTE,
                         POWER_OFF, gate[boards]))
    parts.append(_events(who, arrive + stay, LOCATION_UPDATE, cells["home"][who]))

    scripted = _concat(parts)
    if len(scripted["ts"]) > events // 2:     # tiny worlds: keep background traffic the majority
        keep = np.sort(rng.choice(len(scripted["ts"]), events // 2, replace=False))
        scripted = {name: col[keep] for name, col in scripted.items()}
    background = _background(rng, p, events - len(scripted["ts"]))
    # Every event happens where its subscriber is at that moment.
    bw, bts = background["msisdn_index"], background["ts"]
    cell = cells["home"][bw]
    for slot in range(DAYS + 1):
        inside = (bts >= where_start[bw, slot]) & (bts < where_end[bw, slot])
        cell = np.where(inside, where_cell[bw, slot], cell)
    background["cell"] = cell.astype(np.uint32)

    columns = _concat([scripted, background])
    order = np.argsort(columns["ts"], kind="stable")
    columns = {name: col[order] for name, col in columns.items()}
    columns["msisdn"] = p["msisdn"][columns.pop("msisdn_index")]
    return columns


def _events(who, ts, type_, cell, *, peer=None, dur=None) -> dict[str, np.ndarray]:
    k = len(who)
    return dict(
        msisdn_index=np.asarray(who, dtype=np.int64), ts=np.asarray(ts, dtype=np.int64),
        type=np.full(k, type_, dtype=np.uint8), cell=np.asarray(cell, dtype=np.uint32),
        peer=np.zeros(k, np.uint64) if peer is None else np.asarray(peer, dtype=np.uint64),
        dur=np.zeros(k, np.uint64) if dur is None else np.asarray(dur, dtype=np.uint64),
        flags=np.zeros(k, np.uint8), arg=np.zeros(k, np.uint64),
    )


def _concat(parts: list[dict]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _background(rng, p: dict, k: int) -> dict[str, np.ndarray]:
    n = p["n"]
    weight = p["activity"] / p["activity"].sum()
    who = rng.choice(n, k, p=weight)
    hour = rng.choice(24, k, p=HOURLY / HOURLY.sum())
    ts = _local(rng.integers(0, DAYS, k), hour * 60 + rng.random(k) * 60)
    types, shares = zip(*BACKGROUND)
    shares = np.array(shares) / sum(shares)
    type_ = rng.choice(np.array(types, dtype=np.uint8), k, p=shares)
    call = (type_ == CALL_MO_END) | (type_ == CALL_MT_END)
    talk = call | (type_ == SMS_MO) | (type_ == SMS_MT)
    # A quarter of the other parties are on other networks.
    peer = np.where(rng.random(k) < 0.75, p["msisdn"][rng.integers(0, n, k)],
                    p["offnet"][rng.integers(0, len(p["offnet"]), k)])
    roams = p["roams"][who]
    dur = np.where(call, rng.exponential(np.where(roams, 400, 150)) + 1, 0)
    dur = np.where(type_ == DATA_SESSION, rng.exponential(900, k), dur)
    flags = np.where(call & (rng.random(k) < p["p_long_distance"][who]), LONG_DISTANCE, 0)
    flags |= np.where(talk & roams, ROAMING, 0)
    flags |= np.where(call & (rng.random(k) < 0.01), INTERNATIONAL, 0)
    arg = np.where(type_ == ORDER, rng.choice(OFFER_CODES, k), 0)
    arg = np.where(type_ == RECHARGE, rng.choice([1000, 3000, 5000, 10000], k), arg)
    return dict(
        msisdn_index=who.astype(np.int64), ts=ts, type=type_,
        cell=np.zeros(k, np.uint32),          # filled in from the subscriber's whereabouts
        peer=np.where(talk, peer, 0).astype(np.uint64), dur=dur.astype(np.uint64),
        flags=flags.astype(np.uint8), arg=arg.astype(np.uint64),
    )


def _encode(c: dict[str, np.ndarray]) -> list[bytes]:
    """Array-form msgpack events, `[ts, type, msisdn, peer, cell, dur, flags, arg]`, one by one."""
    rows = np.column_stack([c["ts"].astype(np.uint64), c["type"], c["msisdn"], c["peer"],
                            c["cell"], c["dur"], c["flags"], c["arg"]]).astype(np.uint64).tolist()
    pack = msgpack.Packer(autoreset=True).pack
    return list(map(pack, rows))
