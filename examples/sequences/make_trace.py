"""Write the sequences-and-absence scenario: `trace.msgpack`.

    python examples/sequences/make_trace.py [DIRECTORY]

Deterministic: the same bytes every time (the test checks the committed file against it).
README.md tells the story and the actions it must produce.
"""
from __future__ import annotations

import sys
from pathlib import Path

import msgpack

HERE = Path(__file__).resolve().parent

MINUTE = 60_000
DAY = 86_400_000
MONDAY = 1_803_830_400_000      # 2027-03-01 00:00 at +08:00, day 0 of the story

CALL_MO_END, CALL_MT_END, SMS_MO, DATA_SESSION, ORDER, RECHARGE, LOW_BALANCE = 1, 2, 3, 9, 11, 12, 40
ROAMING = 2                     # event flag bit

ANA = 13800040001     # orders the 3001 bundle, calls 5 hours later -> addon_after_bundle
BO = 13800040002      # orders it, calls exactly a day later: not within -> nothing
CY = 13800040003      # calls first, orders after: the wrong order -> nothing
DEV = 13800040004     # roams on day 3 (welcome), day 4 (not the first), day 19 (15 days on: welcome)
EVE = 13800040005     # low balance, no recharge in the next 24 h -> topup_rescue a day later
FAY = 13800040006     # low balance, recharges that evening -> dropped, counted absent
GUS = 13800040007     # recharged the day before his low balance -> no match (not_after)
HAL = 13800040008     # recharges in the same millisecond as his low balance: not later -> rescue
PEER = 13900040100
HOME, AWAY = 6101, 9902


def at(day: int, clock: str) -> int:
    h, m = (int(x) for x in clock.split(":"))
    return MONDAY + day * DAY + (h * 60 + m) * MINUTE


# (day, local time, type, subscriber, peer, cell, dur, flags, arg), in stream order
STORY = [
    (0, "10:00", ORDER, ANA, 0, HOME, 0, 0, 3001),
    (0, "10:00", ORDER, BO, 0, HOME, 0, 0, 3001),
    (0, "11:00", CALL_MO_END, CY, PEER, HOME, 60, 0, 0),
    (0, "12:00", ORDER, CY, 0, HOME, 0, 0, 3001),
    (0, "15:00", CALL_MO_END, ANA, PEER, HOME, 120, 0, 0),          # 5 h after the order
    (1, "10:00", CALL_MO_END, BO, PEER, HOME, 90, 0, 0),            # 24 h after: not within
    (3, "09:00", DATA_SESSION, DEV, 0, AWAY, 600, ROAMING, 0),      # first roaming event
    (4, "08:00", RECHARGE, GUS, 0, HOME, 0, 0, 5000),               # the day before his low balance
    (4, "09:00", CALL_MT_END, DEV, PEER, AWAY, 300, ROAMING, 0),    # a day after the last
    (5, "09:00", LOW_BALANCE, EVE, 0, HOME, 0, 0, 0),
    (5, "09:00", LOW_BALANCE, FAY, 0, HOME, 0, 0, 0),
    (5, "09:00", LOW_BALANCE, GUS, 0, HOME, 0, 0, 0),
    (5, "09:00", LOW_BALANCE, HAL, 0, HOME, 0, 0, 0),
    (5, "09:00", RECHARGE, HAL, 0, HOME, 0, 0, 2000),               # the same ms, after it
    (5, "20:00", RECHARGE, FAY, 0, HOME, 0, 0, 3000),
    (19, "09:00", SMS_MO, DEV, PEER, AWAY, 0, ROAMING, 0),          # 15 days after day 4
]


def encode(ts, type_, msisdn, peer, cell, dur, flags, arg) -> bytes:
    fields = [ts, type_, msisdn, peer, cell, dur, flags, arg]
    while len(fields) > 3 and fields[-1] == 0:     # missing trailing fields read as 0
        fields.pop()
    return msgpack.packb(fields)


def trace_bytes() -> bytes:
    return b"".join(encode(at(day, clock), *rest) for day, clock, *rest in STORY)


def write(directory: Path = HERE) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "trace.msgpack").write_bytes(trace_bytes())


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
