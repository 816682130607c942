"""Write the new-subscriber usage-habit scenario: `lists/dnd.roar` and `trace.msgpack`.

    python examples/newuser_habits/make_trace.py [DIRECTORY]

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
MONDAY = 1_791_129_600_000      # 2026-10-05 00:00 at +08:00, day 0 of the story

CALL_MO_END, CALL_MT_END, SMS_MO, ORDER = 1, 2, 3, 11
TYPE_NAMES = {1: "CALL_MO_END", 2: "CALL_MT_END", 3: "SMS_MO", 11: "ORDER"}
LONG_DISTANCE, ROAMING = 1, 2   # event flag bits

NAN = 13800030001     # joined 2026-10-02: 5 long-distance calls within 60 days -> all three steps
OLE = 13800030002     # joined 2026-10-03: the 5th call comes after the 60-day window reset
OLD = 13800030003     # joined 2025-06-01: not a new subscriber, nothing
SUE = 13800030004     # joined 2026-10-10: SMS intro, then the long-distance intro waits for min_gap
RUI = 13800030005     # joined 2026-10-15: 60 roaming minutes -> roaming rebate
DORA = 13800030006    # new, but on the do-not-disturb list
STAN = 13800030007    # new, but an employee's line (staff list)
PEG = 13900030100     # an old subscriber the others talk to
OFFNET = 8613512345678  # a number of another operator: its events are unknown subscribers

DND = [DORA, PEG]
HOME, AWAY = 5301, 9901          # a home cell; a cell abroad (roaming)
FAR = 13955501234                # a number in another province: calls to it are long distance


def at(day: int, clock: str) -> int:
    h, m = (int(x) for x in clock.split(":"))
    return MONDAY + day * DAY + (h * 60 + m) * MINUTE


def ld_call(day, clock, who, form="array"):
    return (day, clock, CALL_MO_END, who, FAR, HOME, 180, LONG_DISTANCE, 0, form)


# (day, local time, type, subscriber, peer, cell, dur, flags, arg, form).
# `form` "map" writes a msgpack map with the type's name; the rest are positional arrays.
STORY = [
    (0, "09:00", SMS_MO, OLD, PEG, HOME, 0, 0, 0, "array"),
    ld_call(0, "10:00", NAN, "map"),                 # Nan: 1st long-distance call -> ld_intro
    ld_call(0, "11:00", OLE),                        # Ole: 1st -> ld_intro
    (0, "15:00", CALL_MO_END, OFFNET, NAN, 0, 60, 0, 0, "array"),   # not our subscriber
    (1, "10:00", SMS_MO, DORA, PEG, HOME, 0, 0, 0, "array"),        # do not disturb
    (1, "10:30", SMS_MO, OLD, PEG, HOME, 0, 0, 0, "map"),
    ld_call(1, "10:45", OLD),
    (1, "11:00", SMS_MO, STAN, PEG, HOME, 0, 0, 0, "array"),        # staff
    ld_call(2, "10:00", DORA),
    ld_call(2, "10:45", OLD),
    ld_call(3, "10:45", OLD),
    (3, "14:00", CALL_MT_END, OLD, PEG, AWAY, 5400, ROAMING, 0, "array"),  # 90 roaming minutes
    ld_call(4, "10:45", OLD),
    ld_call(5, "10:45", OLD),
    ld_call(6, "10:45", OLD),                        # Old: 6 calls in a week, nothing
    ld_call(8, "10:00", NAN),                        # Nan: 2nd
    (10, "09:30", SMS_MO, SUE, PEG, HOME, 0, 0, 0, "map"),          # Sue: 1st SMS -> sms_intro
    (11, "09:30", SMS_MO, SUE, PEG, HOME, 0, 0, 0, "array"),        # once: nothing
    ld_call(12, "09:30", SUE),                       # ld_intro matches, min_gap blocks it
    (12, "15:00", CALL_MT_END, RUI, PEG, AWAY, 1500, ROAMING, 0, "array"),   # 25 minutes
    (13, "16:00", CALL_MO_END, RUI, PEG, AWAY, 1201, ROAMING, 0, "array"),   # 21 started minutes
    (14, "09:00", CALL_MO_END, RUI, PEG, AWAY, 840, ROAMING, 0, "map"),      # 14: 60 -> rebate
    ld_call(15, "10:00", NAN),                       # Nan: 3rd
    ld_call(20, "09:30", SUE),                       # 8 days after the SMS intro -> ld_intro
    ld_call(20, "10:00", NAN),                       # Nan: 4th
    ld_call(20, "11:00", OLE),                       # Ole: 2nd
    ld_call(25, "10:00", NAN, "map"),                # Nan: 5th, day 25 -> ld_target + ld_rebate
    ld_call(30, "10:00", NAN),                       # Nan: 6th, both done: nothing
    (40, "12:00", ORDER, NAN, 0, HOME, 0, 0, 5005, "map"),          # Nan buys the package
    ld_call(40, "11:00", OLE),                       # Ole: 3rd
    ld_call(55, "11:00", OLE),                       # Ole: 4th (4 in his 60-day window)
    ld_call(65, "11:00", OLE),                       # Ole: 5th, window reset -> ld_target only
    ld_call(66, "11:00", OLE),
    (66, "12:00", ORDER, OLE, 0, HOME, 0, 0, 7777, "array"),        # another offer: no conversion
    ld_call(67, "11:00", OLE),
    ld_call(68, "11:00", OLE),
    ld_call(69, "11:00", OLE),                       # 5 in the new window -> ld_rebate
    ld_call(70, "10:00", NAN),                       # Nan's window resets (day 0 + 60 days) ...
    ld_call(71, "10:00", NAN),
    ld_call(72, "10:00", NAN),
    ld_call(73, "10:00", NAN),
    ld_call(74, "10:00", NAN),                       # ... and fills again: no second rebate
]


def encode(ts, type_, msisdn, peer, cell, dur, flags, arg, form) -> bytes:
    if form == "map":
        event = {"ts": ts, "type": TYPE_NAMES[type_], "msisdn": msisdn}
        for key, value in (("peer", peer), ("cell", cell), ("dur", dur), ("flags", flags), ("arg", arg)):
            if value:
                event[key] = value
        return msgpack.packb(event)
    fields = [ts, type_, msisdn, peer, cell, dur, flags, arg]
    while len(fields) > 3 and fields[-1] == 0:     # missing trailing fields read as 0
        fields.pop()
    return msgpack.packb(fields)


def trace_bytes() -> bytes:
    events = sorted(((at(day, clock), *rest) for day, clock, *rest in STORY), key=lambda e: e[0])
    return b"".join(encode(*e) for e in events)


def write(directory: Path = HERE) -> None:
    (directory / "lists").mkdir(parents=True, exist_ok=True)
    (directory / "lists" / "dnd.roar").write_bytes(BitMap64(DND).serialize())
    (directory / "trace.msgpack").write_bytes(trace_bytes())


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
