"""Synthetic workloads for benchmarks: a world (profiles, lists, areas, campaigns) and a trace,
generated with NumPy so that tens of millions of events take seconds, not minutes.

Events are array-form msgpack with fixed-width integer encodings, packed as one NumPy
structured array and written with `tobytes()`: valid msgpack that any decoder reads.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["EVENT_WIRE_DTYPE", "encode_events", "build_world"]

# [ts, type, msisdn, peer, cell, dur, flags, arg] with fixed encodings: 45 bytes an event.
EVENT_WIRE_DTYPE = np.dtype([
    ("array", "u1"), ("ts_tag", "u1"), ("ts", ">u8"), ("type", "u1"),
    ("msisdn_tag", "u1"), ("msisdn", ">u8"), ("peer_tag", "u1"), ("peer", ">u8"),
    ("cell_tag", "u1"), ("cell", ">u4"), ("dur_tag", "u1"), ("dur", ">u4"),
    ("flags", "u1"), ("arg_tag", "u1"), ("arg", ">u4"),
])
assert EVENT_WIRE_DTYPE.itemsize == 45

MINUTE = 60_000
DAY = 86_400_000
T0 = 1_767_225_600_000   # 2026-01-01T00:00:00Z


def encode_events(ts, type_, msisdn, peer, cell, dur, flags, arg) -> bytes:
    n = len(ts)
    wire = np.empty(n, dtype=EVENT_WIRE_DTYPE)
    wire["array"] = 0x98
    wire["ts_tag"] = 0xCF
    wire["ts"] = ts
    wire["type"] = type_          # positive fixint
    wire["msisdn_tag"] = 0xCF
    wire["msisdn"] = msisdn
    wire["peer_tag"] = 0xCF
    wire["peer"] = peer
    wire["cell_tag"] = 0xCE
    wire["cell"] = cell
    wire["dur_tag"] = 0xCE
    wire["dur"] = dur
    wire["flags"] = flags         # positive fixint (< 128)
    wire["arg_tag"] = 0xCE
    wire["arg"] = arg
    return wire.tobytes()


def build_world(directory: Path, *, subscribers: int, events: int, campaigns: int = 12,
                seed: int = 1) -> tuple[Path, Path]:
    """Write profiles.parquet, lists, areas, campaigns.toml and trace.msgpack; return
    (config path, trace path)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyroaring import BitMap64

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    msisdn = (np.uint64(13_800_000_000) + rng.choice(200_000_000, subscribers, replace=False)).astype(np.uint64)
    arpu = rng.gamma(2.0, 30.0, subscribers).round(1)
    brand = rng.choice(["prepaid", "postpaid", "family"], subscribers, p=[0.5, 0.4, 0.1])
    join = np.datetime64("2024-01-01") + rng.integers(0, 700, subscribers).astype("timedelta64[D]")
    pq.write_table(pa.table({
        "msisdn": msisdn.astype(np.int64),
        "arpu": arpu,
        "brand": brand,
        "join_date": np.datetime_as_string(join),
    }), directory / "profiles.parquet")

    def write_list(name, members):
        (directory / f"{name}.roar").write_bytes(BitMap64(members.tolist()).serialize())

    write_list("targets", msisdn[rng.random(subscribers) < 0.3])
    write_list("dnd", msisdn[rng.random(subscribers) < 0.02])
    offnet = np.uint64(8_613_900_000_000) + rng.choice(10_000_000, subscribers // 10, replace=False).astype(np.uint64)
    write_list("peers", np.concatenate([msisdn[rng.random(subscribers) < 0.2], offnet]))
    nr_cells = max(100, subscribers // 50)
    (directory / "schools.txt").write_text("\n".join(map(str, rng.choice(np.arange(1, nr_cells), nr_cells // 20, replace=False))) + "\n")
    (directory / "airport.txt").write_text("\n".join(map(str, range(1, 21))) + "\n")

    toml = [
        "[engine]", 'utc_offset = "+08:00"', 'profiles = "profiles.parquet"', "",
        "[lists]", 'targets = "targets.roar"', 'dnd = "dnd.roar"', 'peers = "peers.roar"', "",
        "[areas]", 'schools = "schools.txt"', 'airport = "airport.txt"', "",
        "[policy]", 'blacklist = ["dnd"]', 'quiet_hours = "22:00-08:00"', 'min_gap = "1d"', "max_per_day = 2", "",
        "[counters]", 'sms = { on = ["SMS_MO"] }',
        'roam_min = { on = ["CALL_MO_END", "CALL_MT_END"], flags = ["roaming"], add = "dur_minutes", window = "90d" }', "",
    ]
    kinds = ["peer_school", "airport", "counter", "where"]
    for i in range(campaigns):
        kind = kinds[i % len(kinds)]
        toml += ["[[campaign]]", f'id = "bench_{i:03d}_{kind}"', f"priority = {i % 5}", 'channel = "sms"',
                 f'template = "T{i}"', "holdout = 0.05", 'convert_on = ["ORDER"]', 'convert_within = "7d"',
                 'cooldown = "30d"', "stop_after = 3"]
        if kind == "peer_school":
            toml += ['on = ["CALL_MO_END"]', 'audience = "targets"', 'peer_in = "peers"', 'area = "schools"',
                     'hours = "09:00-18:00"', 'days = "mon-fri"', 'delay = "5m"', 'recheck = ["area"]']
        elif kind == "airport":
            toml += ['on = ["LOCATION_UPDATE", "POWER_ON"]', 'area = "airport"', "enter = true",
                     'delay = "20m"', 'recheck = ["area", "powered_on"]']
        elif kind == "counter":
            toml += ['on = ["SMS_MO"]', f'counter = {{ name = "sms", at_least = {5 + i} }}', "once = true"]
        else:
            toml += ['on = ["CALL_MT_END", "DATA_SESSION"]', f'where = "arpu >= {40 + i} and brand != \'prepaid\'"']
        toml.append("")
    config = directory / "campaigns.toml"
    config.write_text("\n".join(toml))

    # Zipf-like activity: a few subscribers make most of the events.
    weights = 1.0 / np.arange(1, subscribers + 1) ** 0.8
    who = rng.choice(subscribers, events, p=weights / weights.sum())
    ts = np.uint64(T0) + np.sort(rng.integers(0, 2 * DAY, events)).astype(np.uint64)
    type_ = rng.choice([1, 2, 3, 4, 6, 7, 8, 9, 11], events, p=[.22, .2, .18, .1, .15, .03, .03, .08, .01]).astype(np.uint8)
    peer = np.where(rng.random(events) < 0.7, msisdn[rng.integers(0, subscribers, events)],
                    offnet[rng.integers(0, len(offnet), events)]).astype(np.uint64)
    cell = ((who.astype(np.uint64) * 7919) % np.uint64(nr_cells - 1) + 1).astype(np.uint32)
    moving = rng.random(events) < 0.2
    cell[moving] = rng.integers(1, nr_cells, moving.sum()).astype(np.uint32)
    dur = rng.integers(0, 600, events).astype(np.uint32)
    flags = rng.choice([0, 1, 2, 4], events, p=[.8, .1, .07, .03]).astype(np.uint8)
    arg = np.where(type_ == 11, 3001, 0).astype(np.uint32)
    trace = directory / "trace.msgpack"
    trace.write_bytes(encode_events(ts, type_, msisdn[who], peer, cell, dur, flags, arg))
    return config, trace
