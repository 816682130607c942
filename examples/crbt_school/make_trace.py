"""Write the CRBT-at-school scenario: `lists/crbt_peers.roar` and `trace.msgpack`.

    python examples/crbt_school/make_trace.py [DIRECTORY]

Deterministic: the same bytes every time (the test checks the committed files against it).
Every subscriber in the story demonstrates one rule of the campaign; README.md tells the
story and the actions it must produce.
"""
from __future__ import annotations

import sys
from pathlib import Path

import msgpack
from pyroaring import BitMap64

HERE = Path(__file__).resolve().parent

DAY = 86_400_000
MONDAY = 1_791_129_600_000      # 2026-10-05 00:00 at +08:00, the Monday the story starts

CALL_MO_END, CALL_MT_END, SMS_MO, POWER_OFF, CRBT_DOWNLOAD, RECHARGE = 1, 2, 3, 8, 10, 12
TYPE_NAMES = {1: "CALL_MO_END", 2: "CALL_MT_END", 3: "SMS_MO", 8: "POWER_OFF",
              10: "CRBT_DOWNLOAD", 12: "RECHARGE"}

# The subscribers (profiles.csv), each showing one rule.
ANN = 13800010001     # calls an on-net friend with CRBT from school: offer 5 minutes later
BO = 13800010002      # calls an OFF-NET friend with CRBT from school: offer
CHEN = 13800010003    # calls someone without CRBT: nothing
DAI = 13800010004     # calls a CRBT friend from home, not a school cell: nothing
ELI = 13800010005     # calls at 20:00 local: outside working hours, nothing
FANG = 13800010006    # calls on Saturday: nothing
GAO = 13800010007     # on the do-not-disturb list: nothing
HU = 13800010008      # calls twice within 30 days: one offer; 30 days later: a second
IVY = 13800010009     # thanked for a top-up on Monday; min_gap blocks Wednesday's offer
JUN = 13800010010     # prepaid brand: `where` excludes
KAI = 13800010011     # ARPU 35: `where` excludes
LEI = 13800010012     # calls at 17:57: at 18:02 working hours are over (recheck): nothing
MEI = 13800010013     # switches the phone off 3 minutes after the call (recheck): nothing
NORA = 13900020001    # has a CRBT: a peer, and not in the own white list
OTTO = 13900020002    # has a CRBT
PAUL = 13900020009    # no CRBT: not a peer

# Friends on other networks with a CRBT: 13-digit numbers that are not our subscribers.
OFFNET_1 = 8613312345678
OFFNET_2 = 8618687654321
CRBT_PEERS = [NORA, OTTO, OFFNET_1, OFFNET_2]

SCHOOL_A, SCHOOL_B, SCHOOL_C = 7101, 7102, 7103


def at(day: int, clock: str) -> int:
    """Event time (UTC ms) of local `clock` ("HH:MM" or "HH:MM:SS") on day `day` of the story."""
    h, m, *s = (int(x) for x in clock.split(":"))
    return MONDAY + day * DAY + ((h * 60 + m) * 60 + (s[0] if s else 0)) * 1000


# (day, local time, type, subscriber, peer, cell, dur, arg, form). Day 0 is Monday 2026-10-05.
# `form` "map" writes the event as a msgpack map with the type's name and the MSISDN as a
# string (some probes do); the rest are positional arrays with trailing zeros left out.
STORY = [
    (0, "09:30", RECHARGE, IVY, 0, 5009, 0, 5000, "map"),        # 50.00 top-up -> thanked at once
    (0, "10:00", CALL_MO_END, ANN, NORA, SCHOOL_A, 95, 0, "map"),  # -> offer due 10:05
    (0, "10:12", CALL_MT_END, NORA, ANN, 5021, 40, 0, "array"),  # moves the clock past 10:05
    (0, "10:30", CALL_MO_END, BO, OFFNET_1, SCHOOL_B, 210, 0, "array"),  # -> offer due 10:35
    (0, "10:40", CALL_MO_END, CHEN, PAUL, SCHOOL_A, 60, 0, "array"),   # peer without CRBT
    (0, "10:50", CALL_MO_END, DAI, OTTO, 5004, 120, 0, "array"),       # at home, not at school
    (0, "11:00", CALL_MO_END, HU, NORA, SCHOOL_C, 75, 0, "array"),     # -> offer due 11:05
    (0, "11:20", CALL_MO_END, JUN, NORA, SCHOOL_A, 30, 0, "array"),    # prepaid
    (0, "11:25", CALL_MO_END, KAI, OFFNET_2, SCHOOL_A, 45, 0, "map"),  # ARPU too low
    (0, "11:30", CALL_MO_END, GAO, OTTO, SCHOOL_B, 300, 0, "array"),   # do not disturb
    (0, "11:40", CALL_MO_END, NORA, OTTO, SCHOOL_B, 50, 0, "array"),   # already has CRBT
    (0, "12:00", CRBT_DOWNLOAD, ANN, 0, SCHOOL_A, 0, 0, "map"),        # Ann buys: a conversion
    (0, "14:00", CALL_MO_END, MEI, NORA, SCHOOL_C, 80, 0, "array"),    # -> due 14:05 ...
    (0, "14:03", POWER_OFF, MEI, 0, SCHOOL_C, 0, 0, "array"),          # ... but the phone is off
    (0, "14:10", SMS_MO, NORA, ANN, 5021, 0, 0, "array"),
    (0, "17:57", CALL_MO_END, LEI, OTTO, SCHOOL_A, 65, 0, "array"),    # -> due 18:02, after hours
    (0, "18:30", SMS_MO, NORA, OTTO, 5021, 0, 0, "array"),
    (0, "20:00", CALL_MO_END, ELI, NORA, SCHOOL_B, 90, 0, "array"),    # 20:00 local = 12:00 UTC
    (2, "11:00", CALL_MO_END, IVY, NORA, SCHOOL_A, 70, 0, "array"),    # Wednesday: due 11:05 ...
    (2, "11:30", SMS_MO, NORA, IVY, 5021, 0, 0, "array"),              # ... blocked by min_gap
    (3, "11:00", CALL_MO_END, HU, NORA, SCHOOL_C, 75, 0, "array"),     # within 30 days: nothing
    (5, "11:00", CALL_MO_END, FANG, OTTO, SCHOOL_B, 120, 0, "array"),  # Saturday
    (30, "11:00", CALL_MO_END, HU, NORA, SCHOOL_C, 60, 0, "map"),      # 5 minutes short of 30 days
    (30, "11:10", CALL_MO_END, HU, OTTO, SCHOOL_C, 60, 0, "array"),    # -> offer due 11:15 (drain)
]


def encode(ts, type_, msisdn, peer, cell, dur, arg, form) -> bytes:
    if form == "map":
        event = {"ts": ts, "type": TYPE_NAMES[type_], "msisdn": str(msisdn)}
        for key, value in (("peer", peer), ("cell", cell), ("dur", dur), ("arg", arg)):
            if value:
                event[key] = value
        return msgpack.packb(event)
    fields = [ts, type_, msisdn, peer, cell, dur, 0, arg]
    while len(fields) > 3 and fields[-1] == 0:     # missing trailing fields read as 0
        fields.pop()
    return msgpack.packb(fields)


def trace_bytes() -> bytes:
    return b"".join(encode(at(day, clock), *rest) for day, clock, *rest in STORY)


def write(directory: Path = HERE) -> None:
    (directory / "lists").mkdir(parents=True, exist_ok=True)
    # 13-digit off-net numbers do not fit 32 bits: the 64-bit portable format.
    (directory / "lists" / "crbt_peers.roar").write_bytes(BitMap64(CRBT_PEERS).serialize())
    (directory / "trace.msgpack").write_bytes(trace_bytes())


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
