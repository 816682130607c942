"""Write the top-up rescue scenario: `trace.msgpack`.

    python examples/topup_rescue/make_trace.py [DIRECTORY]

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

RECHARGE, LOW_BALANCE = 12, 40

# The variant of each (crc32(f"{msisdn}:topup_rescue:variant") % 2: 0 is RESCUE_A, 1 RESCUE_B)
ANA = 13800050011     # B: low balance, no recharge -> rescued a day later; recharges after it (converts)
BEN = 13800050020     # A: the same -> rescued; recharges that evening (converts)
CAT = 13800050012     # B: low balance, recharges that afternoon -> dropped, counted absent
DAN = 13800050021     # A: recharged the day before his low balance -> no match (not_after)
EVA = 13800050022     # A: recharged exactly 3 days before: not within 3 days -> rescued
FIN = 13800050013     # B: low balance, due when the day's 3 SMS are gone -> campaign budget
GIL = 13800050023     # A: the same -> campaign budget
IVY = 13800050024     # A: low balance a day later, due the next local day: a new budget -> rescued


def at(day: int, clock: str) -> int:
    h, m = (int(x) for x in clock.split(":"))
    return MONDAY + day * DAY + (h * 60 + m) * MINUTE


# (day, local time, type, subscriber, arg), in stream order
STORY = [
    (0, "09:04", RECHARGE, EVA, 2000),          # 3 days before her low balance, to the ms
    (2, "10:00", RECHARGE, DAN, 3000),          # the day before his
    (3, "09:00", LOW_BALANCE, ANA, 0),
    (3, "09:01", LOW_BALANCE, BEN, 0),
    (3, "09:02", LOW_BALANCE, CAT, 0),
    (3, "09:03", LOW_BALANCE, DAN, 0),
    (3, "09:04", LOW_BALANCE, EVA, 0),
    (3, "09:05", LOW_BALANCE, FIN, 0),
    (3, "09:06", LOW_BALANCE, GIL, 0),
    (3, "14:00", RECHARGE, CAT, 5000),          # after her notice: the rescue is not needed
    (4, "09:02", RECHARGE, DAN, 1000),          # Ana's and Ben's SMS go out before it, the rest after
    (4, "10:00", LOW_BALANCE, IVY, 0),
    (4, "12:00", RECHARGE, ANA, 5000),          # 3 hours after her SMS
    (4, "20:00", RECHARGE, BEN, 3000),
    (6, "09:00", RECHARGE, GIL, 2000),          # the clock moves past Ivy's rescue
]


def encode(ts, type_, msisdn, arg) -> bytes:
    fields = [ts, type_, msisdn, 0, 0, 0, 0, arg]
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
