"""Write the moments scenario's `trace.msgpack`.

    python examples/moments/make_trace.py [DIRECTORY]

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
SATURDAY = 1_803_657_600_000    # 2027-02-27 00:00 at +08:00 (2027-02-26 16:00 UTC), day 0

CALL_MO_END, SMS_MO, POWER_ON, DATA_SESSION = 1, 3, 7, 9
TYPE_NAMES = {1: "CALL_MO_END", 3: "SMS_MO", 7: "POWER_ON", 9: "DATA_SESSION"}

AMY = 13800040001     # born 1990-03-02, joined 2019-03-05
BEN = 13800040002     # born 2000-02-29: 2027 has no February 29
CAI = 13800040003     # born "1985-3-2": not a date; joined 2022-03-02
DAN = 13800040004     # no birth date; joined 2024-03-01
EVE = 13800040005     # her phone keeps restarting
FAY = 13800040006     # born 1995-02-27, joined 2027-02-27: today
HAL = 13800040007     # three restarts one evening, one two days later
IVY = 13800040008     # born "2023-02-30": no such day; joined 2017-01-15
GUS = 13800040009     # three restarts before midnight, one after
PEG = 13900040100     # someone they talk to
CELL = 7101


def at(day: int, clock: str) -> int:
    h, m = (int(x) for x in clock.split(":"))
    return SATURDAY + day * DAY + (h * 60 + m) * MINUTE


# (day, local time, type, subscriber, form): day 0 is Saturday 2027-02-27.
STORY = [
    (0, "09:00", SMS_MO, FAY, "array"),            # birthday (1995-02-27) -> greeted; joined today: no bonus
    (0, "12:00", CALL_MO_END, FAY, "map"),         # cooldown: once a year
    (0, "23:59", POWER_ON, BEN, "array"),          # Feb 27: not yet
    (1, "07:30", POWER_ON, BEN, "map"),            # Feb 28 stands for Feb 29, but quiet hours drop it
    (1, "09:10", SMS_MO, BEN, "array"),            # ... and the next event greets him
    (2, "10:00", CALL_MO_END, DAN, "array"),       # Mar 1: joined 2024-03-01 -> network anniversary
    (2, "23:50", CALL_MO_END, AMY, "array"),       # Mar 1 local (15:50 UTC): not her birthday yet
    (3, "00:10", POWER_ON, AMY, "array"),          # Mar 2 local, still Mar 1 in UTC: birthday, quiet hours
    (3, "12:00", SMS_MO, AMY, "map"),              # greeted at noon
    (3, "12:05", SMS_MO, CAI, "array"),            # "1985-3-2" is not a date: nothing; joined 2022-03-02 -> bonus
    (3, "12:10", SMS_MO, IVY, "array"),            # "2023-02-30" is no day
    (4, "09:00", POWER_ON, EVE, "array"),
    (4, "09:20", POWER_ON, EVE, "array"),
    (4, "09:40", POWER_ON, EVE, "map"),
    (4, "10:00", POWER_ON, EVE, "array"),          # the 4th -> missed-call alert offer
    (4, "10:30", POWER_ON, EVE, "array"),          # once
    (4, "19:00", POWER_ON, HAL, "array"),
    (4, "19:30", POWER_ON, HAL, "array"),
    (4, "20:00", POWER_ON, HAL, "array"),          # 3 ...
    (4, "21:30", POWER_ON, GUS, "array"),
    (4, "22:00", POWER_ON, GUS, "array"),
    (4, "23:30", POWER_ON, GUS, "map"),            # 3 today ...
    (5, "00:30", POWER_ON, GUS, "array"),          # ... an hour later, but a new day: 1
    (6, "08:30", POWER_ON, HAL, "array"),          # ... and 1 on another day: 1 today
    (6, "09:00", DATA_SESSION, AMY, "array"),      # Mar 5: joined 2019-03-05 -> network anniversary
    (6, "09:30", CALL_MO_END, DAN, "array"),       # no birth date: nothing
]


def encode(ts, type_, msisdn, form) -> bytes:
    if form == "map":
        return msgpack.packb({"ts": ts, "type": TYPE_NAMES[type_], "msisdn": msisdn, "peer": PEG, "cell": CELL})
    return msgpack.packb([ts, type_, msisdn, PEG, CELL])


def trace_bytes() -> bytes:
    events = sorted(((at(day, clock), *rest) for day, clock, *rest in STORY), key=lambda e: e[0])
    return b"".join(encode(*e) for e in events)


def write(directory: Path = HERE) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "trace.msgpack").write_bytes(trace_bytes())


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
