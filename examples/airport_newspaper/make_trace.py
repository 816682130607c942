"""Write the airport mobile-newspaper scenario: `lists/mms_handsets.roar` and `trace.msgpack`.

    python examples/airport_newspaper/make_trace.py [DIRECTORY]

Deterministic: the same bytes every time (the test checks the committed files against it).
README.md tells the story and the actions it must produce.
"""
from __future__ import annotations

import sys
from pathlib import Path

import msgpack
from pyroaring import BitMap64

HERE = Path(__file__).resolve().parent

MINUTE = 60_000
DAY = 86_400_000
MONDAY = 1_791_129_600_000      # 2026-10-05 00:00 at +08:00

CALL_MO_END, SMS_MO, LOCATION_UPDATE, POWER_ON, POWER_OFF, ORDER = 1, 3, 6, 7, 8, 11
TYPE_NAMES = {1: "CALL_MO_END", 3: "SMS_MO", 6: "LOCATION_UPDATE", 7: "POWER_ON", 8: "POWER_OFF", 11: "ORDER"}

AMY = 13800020001     # enters, moves between terminals, still there 20 minutes later: offer
BEN = 13800020002     # enters, leaves after 10 minutes: nothing
CAI = 13800020003     # enters, switches off after 10 minutes: nothing
DAN = 13800020004     # already inside (his first cell is the airport), moves between cells: never enters
EVA = 13800020005     # no large-screen handset: nothing
FEI = 13800020006     # do not disturb: nothing
GUS = 13800020007     # enters at 21:45: the offer would be due at 22:05, in quiet hours
HAO = 13800020008     # switches on at the airport after landing at 21:30: offer at 21:50 (drain)
IVAN = 13800020009    # in town all day: his events move the clock
JIA = 13800020010     # in town all day: her events move the clock

MMS_HANDSETS = [AMY, BEN, CAI, DAN, FEI, GUS, HAO, IVAN]
T1, T2, APRON = 8801, 8802, 8803


def at(clock: str, day: int = 0) -> int:
    """Event time (UTC ms) of local `clock` ("HH:MM" or "HH:MM:SS") on day `day` of the story."""
    h, m, *s = (int(x) for x in clock.split(":"))
    return MONDAY + day * DAY + ((h * 60 + m) * 60 + (s[0] if s else 0)) * 1000


# (local time, type, subscriber, cell, peer, arg, form); all on Monday 2026-10-05.
# `form` "map" writes a msgpack map with the type's name; the rest are positional arrays.
STORY = [
    ("07:30", POWER_OFF, HAO, 5108, 0, 0, "array"),          # boards a plane elsewhere
    ("07:40", LOCATION_UPDATE, AMY, 5101, 0, 0, "array"),
    ("07:50", SMS_MO, CAI, 5103, JIA, 0, "array"),
    ("08:00", LOCATION_UPDATE, AMY, T1, 0, 0, "map"),        # enters -> due 08:20
    ("08:02", LOCATION_UPDATE, EVA, T2, 0, 0, "array"),      # enters, but no MMS handset
    ("08:05", LOCATION_UPDATE, BEN, T1, 0, 0, "array"),      # enters -> due 08:25 ...
    ("08:10", LOCATION_UPDATE, AMY, T2, 0, 0, "array"),      # inside: no new trigger
    ("08:15", LOCATION_UPDATE, BEN, 5102, 0, 0, "map"),      # ... left: area fails at 08:25
    ("08:30", LOCATION_UPDATE, CAI, APRON, 0, 0, "array"),   # enters -> due 08:50 ...
    ("08:40", POWER_OFF, CAI, APRON, 0, 0, "array"),         # ... off: powered_on fails at 08:50
    ("08:45", ORDER, AMY, T2, 0, 6001, "map"),               # Amy subscribes: a conversion
    ("09:00", CALL_MO_END, DAN, T1, JIA, 0, "array"),        # a call: sets his cell, not a trigger
    ("09:10", LOCATION_UPDATE, DAN, T2, 0, 0, "array"),      # airport -> airport: not entering
    ("09:30", LOCATION_UPDATE, FEI, T1, 0, 0, "array"),      # do not disturb
    ("09:40", LOCATION_UPDATE, DAN, APRON, 0, 0, "array"),
    ("10:15", CALL_MO_END, EVA, T2, IVAN, 0, "array"),       # still there, still no handset
    ("21:30", POWER_ON, HAO, T2, 0, 0, "map"),               # lands, switches on -> due 21:50
    ("21:45", LOCATION_UPDATE, GUS, T1, 0, 0, "array"),      # -> due 22:05, quiet hours
]


def clock_movers() -> list:
    """Ivan and Jia in town, an event every 7 minutes from 07:31:30 to 21:38:30.

    The engine runs on event time: a delayed offer goes out only when a later event's time
    passes its due time. These keep the clock moving all day; nothing comes after 21:45, so
    Hao's and Gus's timers are resolved by the drain at the end.
    """
    events = []
    for k in range(122):
        ts = at("07:31:30") + k * 7 * MINUTE
        who, cell, peer = (IVAN, 5201 + k % 5, JIA) if k % 2 == 0 else (JIA, 5301 + k % 3, IVAN)
        events.append((ts, SMS_MO if k % 3 else CALL_MO_END, who, cell, peer, 0, "array"))
    return events


def encode(ts, type_, msisdn, cell, peer, arg, form) -> bytes:
    if form == "map":
        event = {"ts": ts, "type": TYPE_NAMES[type_], "msisdn": msisdn, "cell": cell}
        if peer:
            event["peer"] = peer
        if arg:
            event["arg"] = arg
        return msgpack.packb(event)
    fields = [ts, type_, msisdn, peer, cell, 0, 0, arg]
    while len(fields) > 3 and fields[-1] == 0:     # missing trailing fields read as 0
        fields.pop()
    return msgpack.packb(fields)


def trace_bytes() -> bytes:
    events = [(at(clock), *rest) for clock, *rest in STORY] + clock_movers()
    events.sort(key=lambda e: e[0])      # stable: no two events share a time anyway
    return b"".join(encode(*e) for e in events)


def write(directory: Path = HERE) -> None:
    (directory / "lists").mkdir(parents=True, exist_ok=True)
    (directory / "lists" / "mms_handsets.roar").write_bytes(BitMap64(MMS_HANDSETS).serialize())
    (directory / "trace.msgpack").write_bytes(trace_bytes())


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
