"""A stateless world for the peer comparison: campaigns whose every match is emitted at once.

The campaigns use only the rules a plain SQL query over one event at a time can express:
trigger types, audience and exclude lists, the policy blacklist, `peer_in` lists (off-net
numbers included), areas, hours (one wraps midnight) and days (one range wraps past
Sunday), and a `where` over profile attributes. Nothing stateful: no delay, cooldown,
once, counter, stop_after, enter, min_gap, max_per_day or quiet hours, and holdout 0. So
sigmatch's actions are exactly the (event, campaign) matches, all of kind `send`, each
emitted at its event's time.

The trace's timestamps are strictly increasing, so every event's effective time is its own
`ts` (no event takes the clock) and `trigger_ts` names the event. About 2% of the events
come from numbers that are not subscribers (they match nothing), 5% have cell 0 (in no
area), and a few calls have no peer (0, in no list).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.world.gen import DAY, encode_events

__all__ = ["StatelessWorld", "build_stateless_world", "EVENT_COLUMNS"]

T0 = 1_767_225_600_000   # 2026-01-01T00:00:00Z: the stateless workload's start of time

EVENT_COLUMNS = ("ts", "type", "msisdn", "peer", "cell", "dur", "flags", "arg")

# Trigger types (codes of SPEC §1.4) and their share of the events.
_TYPES = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12])
_TYPE_P = np.array([.22, .18, .17, .08, .03, .15, .03, .03, .08, .01, .02])
_WITH_PEER = (1, 2, 3, 4, 5)


@dataclass
class StatelessWorld:
    directory: Path
    config: Path                    # campaigns.toml
    trace: Path                     # trace.msgpack (array form, 45 bytes an event)
    events: dict[str, np.ndarray]   # the trace's columns, EVENT_COLUMNS, in stream order
    event_bytes: int = 45           # every event has the same encoded size

    def slice_bytes(self, data: bytes, n: int) -> bytes:
        """The first n events of the trace's bytes."""
        return data[:n * self.event_bytes]


def _campaigns_toml() -> list[str]:
    # (id, priority, keys): ties in priority are broken by id, as the engine orders them.
    campaigns = [
        ("peer_school", 10, ['on = ["CALL_MO_END"]', 'audience = "targets"', 'peer_in = "peers"',
                             'area = "schools"', 'hours = "09:00-18:00"', 'days = "mon-fri"']),
        ("airport", 8, ['on = ["LOCATION_UPDATE", "POWER_ON"]', 'area = "airport"']),
        ("night_sms", 5, ['on = ["SMS_MO", "SMS_MT"]', 'exclude = ["vip"]', 'hours = "22:00-06:30"']),
        ("weekend_data", 5, ['on = ["DATA_SESSION"]', 'audience = "targets"', 'days = "sat,sun"']),
        ("rich_callers", 3, ['on = ["CALL_MT_END", "CALL_MO_END"]',
                             "where = \"arpu >= 60 and brand != 'prepaid'\"", 'hours = "08:00-20:00"']),
        ("offnet_friends", 3, ['on = ["CALL_MO_END", "CALL_MT_END", "SMS_MO"]', 'peer_in = "offnet"',
                               'exclude = ["vip", "targets"]', 'days = "fri-mon"']),
        ("mall_evening", 2, ['on = ["LOCATION_UPDATE", "DATA_SESSION"]', 'audience = "targets"',
                             'exclude = ["vip"]', 'area = "mall"', 'hours = "17:00-23:00"']),
        ("everyone_mms", 0, ['on = ["MMS_MO"]']),
        ("recharge_family", 0, ['on = ["RECHARGE"]', "where = \"brand in ['family', 'postpaid'] or arpu < 20\""]),
    ]
    toml = []
    for cid, priority, keys in campaigns:
        toml += ["[[campaign]]", f'id = "{cid}"', f"priority = {priority}", 'channel = "sms"',
                 f'template = "T_{cid}"', *keys, ""]
    return toml


def build_stateless_world(directory: Path, *, subscribers: int, events: int, seed: int = 1,
                          days: int = 7) -> StatelessWorld:
    """Write profiles.parquet, the lists (.roar), areas (.txt), campaigns.toml and
    trace.msgpack into `directory`."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyroaring import BitMap64

    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    msisdn = (np.uint64(13_800_000_000) + rng.choice(200_000_000, subscribers, replace=False)).astype(np.uint64)
    pq.write_table(pa.table({
        "msisdn": msisdn.astype(np.int64),
        "arpu": rng.gamma(2.0, 30.0, subscribers).round(1),
        "brand": rng.choice(["prepaid", "postpaid", "family"], subscribers, p=[0.5, 0.4, 0.1]),
    }), directory / "profiles.parquet")

    offnet = np.uint64(8_613_900_000_000) + rng.choice(10_000_000, max(10, subscribers // 10),
                                                       replace=False).astype(np.uint64)
    strangers = np.uint64(8_613_700_000_000) + rng.choice(10_000_000, max(10, subscribers // 50),
                                                          replace=False).astype(np.uint64)

    def write_list(name, members):
        (directory / f"{name}.roar").write_bytes(BitMap64(np.asarray(members, np.uint64).tolist()).serialize())

    write_list("targets", msisdn[rng.random(subscribers) < 0.3])
    write_list("vip", msisdn[rng.random(subscribers) < 0.05])
    # the blacklist also names numbers that are not subscribers (they never match anyway)
    write_list("dnd", np.concatenate([msisdn[rng.random(subscribers) < 0.02], strangers[:5]]))
    write_list("peers", np.concatenate([msisdn[rng.random(subscribers) < 0.2], offnet[rng.random(len(offnet)) < 0.5]]))
    write_list("offnet", offnet[rng.random(len(offnet)) < 0.4])

    nr_cells = max(200, subscribers // 50)
    cells = np.arange(1, nr_cells)
    (directory / "schools.txt").write_text("# school cells\n" + "\n".join(
        map(str, np.sort(rng.choice(cells, nr_cells // 20, replace=False)))) + "\n")
    (directory / "airport.txt").write_text("\n".join(map(str, range(1, 21))) + "\n")
    (directory / "mall.txt").write_text("\n".join(
        map(str, np.sort(rng.choice(cells, nr_cells // 10, replace=False)))) + "\n")

    toml = [
        "[engine]", 'utc_offset = "+08:00"', 'profiles = "profiles.parquet"', "",
        "[lists]", 'targets = "targets.roar"', 'vip = "vip.roar"', 'dnd = "dnd.roar"',
        'peers = "peers.roar"', 'offnet = "offnet.roar"', "",
        "[areas]", 'schools = "schools.txt"', 'airport = "airport.txt"', 'mall = "mall.txt"', "",
        "[policy]", 'blacklist = ["dnd"]', "",
        *_campaigns_toml(),
    ]
    config = directory / "campaigns.toml"
    config.write_text("\n".join(toml))

    # Strictly increasing timestamps over `days` days: sorted draws plus 0, 1, 2, ...
    span = days * DAY
    ts = (np.int64(T0) + np.sort(rng.integers(0, span - events, events)) + np.arange(events)).astype(np.uint64)
    # Zipf-like activity: a few subscribers make most of the events; 2% come from strangers.
    weights = 1.0 / np.arange(1, subscribers + 1) ** 0.8
    who = rng.choice(subscribers, events, p=weights / weights.sum())
    number = msisdn[who]
    unknown = rng.random(events) < 0.02
    number[unknown] = strangers[rng.integers(0, len(strangers), unknown.sum())]
    type_ = rng.choice(_TYPES, events, p=_TYPE_P / _TYPE_P.sum()).astype(np.uint8)
    peer = np.where(rng.random(events) < 0.7, msisdn[rng.integers(0, subscribers, events)],
                    offnet[rng.integers(0, len(offnet), events)]).astype(np.uint64)
    peer[~np.isin(type_, _WITH_PEER) | (rng.random(events) < 0.02)] = 0
    cell = ((who.astype(np.uint64) * 7919) % np.uint64(nr_cells - 1) + 1).astype(np.uint32)
    moving = rng.random(events) < 0.25
    cell[moving] = rng.integers(1, nr_cells, moving.sum()).astype(np.uint32)
    cell[rng.random(events) < 0.05] = 0
    dur = rng.integers(0, 600, events).astype(np.uint32)
    flags = rng.choice([0, 1, 2, 4], events, p=[.8, .1, .07, .03]).astype(np.uint8)
    arg = np.where(type_ == 11, 3001, np.where(type_ == 12, rng.integers(100, 10_000, events), 0)).astype(np.uint32)

    trace = directory / "trace.msgpack"
    trace.write_bytes(encode_events(ts, type_, number, peer, cell, dur, flags, arg))
    columns = dict(zip(EVENT_COLUMNS, (ts.astype(np.int64), type_, number, peer, cell, dur, flags, arg)))
    return StatelessWorld(directory, config, trace, columns)
