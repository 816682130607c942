"""The reference model: SPEC §1.4 (events on the wire) and §3 (what each event does), in plain
Python. It is the oracle that the Cython core must match action for action (STYLE.md item 5),
so it is written to be read against the SPEC, never for speed: sets and dicts, one block per
step, in the SPEC's order.

Framing is our own short scanner rather than `msgpack.Unpacker`, because the Unpacker rejects
some valid streams (nesting deeper than 1024 levels, an ext of type -1 that is not a
timestamp) and its tell() moves on inside a partial value, so it cannot say where that
value started. Field values are still decoded by
msgpack-python itself, so the model does not share the core's integer and string readers.

Stream errors (`StreamError.reason`): "corrupt" (a 0xc1 byte where a value starts),
"too_large" (the bytes seen prove the event longer than max_event_bytes; decided before
"need more bytes", so the outcome never depends on how the stream was split) and
"truncated" (`finish()` with part of an event left over). The offset is the event's start.

Dead letters (SPEC §4) are runs: consecutive bad values with the same bytes, reason and field
make one record at the offset of the first, written when a different value (good or bad),
a stream error or the end of the stream ends the run; at most `max_dead_letters` records
start in one span of 2**26 stream bytes (offset >> 26), the rest are only counted.
"""
from __future__ import annotations

import calendar
import datetime
import heapq
import re
import zlib
from dataclasses import dataclass
from typing import NamedTuple

import msgpack
import numpy as np

from engine.language.config import POWER_OFF
from engine.errors import StreamError
from engine.records import (
    BAD_REASONS, DEAD_LETTER_BYTES, DEAD_LETTER_SPAN_BITS, FUNNEL, KIND_CONTROL, KIND_GLOBAL_CONTROL, KIND_SEND,
    KINDS, RECHECKS,
)

__all__ = ["ReferenceModel"]

_EPOCH = datetime.date(1970, 1, 1)
_LAST_DATE_DAY = (datetime.date.max - _EPOCH).days


MINUTE_MS = 60_000
DAY_MS = 86_400_000
COUNTER_MAX = 2**32 - 1
FIELDS = ("ts", "type", "msisdn", "peer", "cell", "dur", "flags", "arg")
REQUIRED = FIELDS[:3]
# Accepted integers per field, [lo, hi) (docs/design.md, "Dead-letter reasons and limits").
RANGES = {"ts": (0, 2**53), "type": (0, 2**64), "msisdn": (1, 10**15), "peer": (0, 10**15),
          "cell": (0, 2**32), "dur": (0, 2**64), "flags": (0, 2**64), "arg": (0, 2**64)}
DIGITS = re.compile(r"[1-9][0-9]{0,14}")       # [0-9] is ASCII only, unlike str.isdigit
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
EPOCH = datetime.date(1970, 1, 1)
GREGORIAN_CYCLE_DAYS = 146_097     # 400 years: the calendar repeats, leap years included

# ---------------------------------------------------------------------------- framing
# First bytes whose value has a fixed size after that byte: float, (u)int 8..64, fixext 1..16.
_FIXED = {0xca: 4, 0xcb: 8, 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8, 0xd0: 1, 0xd1: 2, 0xd2: 4,
          0xd3: 8, 0xd4: 2, 0xd5: 3, 0xd6: 5, 0xd7: 9, 0xd8: 17}
# First byte -> (width of the big-endian length or count, bytes between it and the payload,
# child values per count; 0 for bin/str/ext, whose length counts payload bytes).
_SIZED = {0xc4: (1, 0, 0), 0xc5: (2, 0, 0), 0xc6: (4, 0, 0),            # bin
          0xc7: (1, 1, 0), 0xc8: (2, 1, 0), 0xc9: (4, 1, 0),            # ext: type byte after length
          0xd9: (1, 0, 0), 0xda: (2, 0, 0), 0xdb: (4, 0, 0),            # str
          0xdc: (2, 0, 1), 0xdd: (4, 0, 1), 0xde: (2, 0, 2), 0xdf: (4, 0, 2)}   # array, map
_ARRAYS = {*range(0x90, 0xa0), 0xdc, 0xdd}
_MAPS = {*range(0x80, 0x90), 0xde, 0xdf}
_OPAQUE = _ARRAYS | _MAPS | {0xc7, 0xc8, 0xc9, *range(0xd4, 0xd9)}   # never decoded: wrong_type
_ABSENT = object()      # a field the event does not give (nil is None)
_OTHER = object()       # an array, map or ext in a known field


class _NeedMore(Exception):
    """The value goes on past the bytes fed so far."""


class _Broken(Exception):
    """Not a msgpack stream we accept; args[0] is StreamError's reason."""


def _need(buf, end: int, limit: int) -> None:
    if end > limit:
        raise _Broken("too_large")
    if end > len(buf):
        raise _NeedMore


def _head(buf, pos: int, limit: int) -> tuple[int, int, int]:
    """(header size, payload size, number of child values) of the msgpack value at pos."""
    _need(buf, pos + 1, limit)
    b = buf[pos]
    if b <= 0x7f or b >= 0xe0 or b in (0xc0, 0xc2, 0xc3):
        return 1, 0, 0
    if b <= 0x8f:
        return 1, 0, 2 * (b & 0x0f)
    if b <= 0x9f:
        return 1, 0, b & 0x0f
    if b <= 0xbf:
        return 1, b & 0x1f, 0
    if b == 0xc1:
        raise _Broken("corrupt")        # the one byte msgpack never uses
    if b in _FIXED:
        return 1, _FIXED[b], 0
    width, gap, per = _SIZED[b]
    _need(buf, pos + 1 + width, limit)
    n = int.from_bytes(buf[pos + 1:pos + 1 + width], "big")
    return (1 + width, 0, per * n) if per else (1 + width + gap, n, 0)


def _value_end(buf, pos: int, limit: int) -> int:
    """End of the value at pos. A count of values still to read instead of recursion, so any
    nesting depth is fine, as msgpack allows."""
    todo = 1
    while todo:
        # the other values still to read take a byte each: leave room for them
        header, payload, children = _head(buf, pos, limit - (todo - 1))
        pos += header + payload
        todo += children - 1
        if pos + todo > limit:          # each value still to read takes a byte at least
            raise _Broken("too_large")
        _need(buf, pos, limit)
    return pos


def _read(buf, start: int, end: int):
    """A known key or field as msgpack-python decodes it. Invalid UTF-8 becomes surrogates,
    which equal no name and are no digits, so it is a bad event only where it is read."""
    if buf[start] in _OPAQUE:
        return _OTHER
    return msgpack.unpackb(bytes(buf[start:end]), raw=False, unicode_errors="surrogateescape")


def _fields(buf, start: int, end: int):
    """(the eight field values (or _ABSENT), None) of the complete value buf[start:end], or
    (None, (reason, field)). Elements past the eighth and values of unknown keys are framed
    but never decoded."""
    header, _, count = _head(buf, start, end)
    spans, pos = [], start + header
    for _ in range(count):
        spans.append((pos, _value_end(buf, pos, end)))
        pos = spans[-1][1]
    if buf[start] in _ARRAYS:
        values = [_read(buf, *span) for span in spans[:8]]
        return values + [_ABSENT] * (8 - len(values)), None
    if buf[start] in _MAPS:
        given = {}
        for key, value in zip(spans[::2], spans[1::2]):
            name = _read(buf, *key)
            if type(name) is str and name in FIELDS:
                if name in given:
                    return None, ("duplicate_key", name)
                given[name] = _read(buf, *value)
        return [given.get(name, _ABSENT) for name in FIELDS], None
    return None, ("not_an_event", "")


class Event(NamedTuple):
    ts: int
    type: int
    msisdn: int
    peer: int
    cell: int
    dur: int
    flags: int
    arg: int


def _validate(values, type_codes: dict[str, int]):
    """(Event, None) or (None, (reason, field)): the first failing field, in FIELDS order,
    decides."""
    out = []
    for name, v in zip(FIELDS, values):
        if v is _ABSENT or v is None:
            if name in REQUIRED:
                return None, ("missing_field", name)
            v = 0
        elif type(v) is str and name == "type":
            if v not in type_codes:
                return None, ("unknown_type", name)
            v = type_codes[v]
        elif type(v) is str and name in ("msisdn", "peer"):
            if not DIGITS.fullmatch(v):
                return None, ("bad_number", name)
            v = int(v)
        elif type(v) is not int:        # bool (an int subclass), float, bin, ext, array, map, str
            return None, ("wrong_type", name)
        elif not RANGES[name][0] <= v < RANGES[name][1]:
            return None, ("out_of_range", name)
        elif name == "type" and v not in type_codes.values():
            return None, ("unknown_type", name)
        out.append(v)
    return Event(*out), None


# ---------------------------------------------------------------------------- semantics
@dataclass
class _Contact:
    ts: int             # emission time t
    seq: int
    kind: int           # KIND_SEND | KIND_CONTROL | KIND_GLOBAL_CONTROL
    converted: bool = False


def _month_day(value):
    """(month, day) of a profile value holding an ISO date `YYYY-MM-DD` naming a real day
    (white space around it ignored), else None."""
    if not isinstance(value, str) or not ISO_DATE.fullmatch(value.strip()):
        return None
    try:
        date = datetime.date.fromisoformat(value.strip())
    except ValueError:
        return None
    return date.month, date.day


def _in_window(minute: int, window: tuple[int, int]) -> bool:
    start, end = window
    return start <= minute < end if start < end else minute >= start or minute < end


class ReferenceModel:
    """Feed it the stream; read actions, conversions, dead_letters, funnel, bad_events,
    bad_events_by_field, bad_bytes, largest_bad_value, unknown_subscribers and late_events.
    State carries over from one feed() to the next. A dead letter is (offset, reason, field,
    count, bytes_hex) as in the file."""

    def __init__(self, config, profiles, lists, areas, *, max_event_bytes: int = 65536,
                 record_takers: bool = False, watch=()):
        self.config = config
        self.max_event_bytes = max_event_bytes
        self.campaigns = config.campaigns           # already in priority desc, id asc order
        self.counters = {k.name: k for k in config.counters}
        self.msisdns = [int(m) for m in profiles.msisdn]
        self.subscriber = {m: i for i, m in enumerate(self.msisdns)}
        self.lists = {name: {int(m) for m in v} for name, v in lists.items()}
        self.areas = {name: {int(c) for c in v} - {0} for name, v in areas.items()}
        self.where = {}
        if any(c.where for c in self.campaigns):
            from engine.language import where     # only worlds with a `where` need the expression language
            for c in self.campaigns:
                if c.where:
                    self.where[c.id] = np.asarray(where.evaluate(where.parse(c.where), profiles), dtype=bool)

        self.when = {}
        if any(c.when for c in self.campaigns):
            from engine.language import when
            self.when = {c.id: when.parse(c.when) for c in self.campaigns if c.when}
        # anniversary attribute -> (month, day) per subscriber, None when null or not a date
        self.dates = {c.anniversary: [_month_day(v) for v in profiles.columns[c.anniversary].to_pylist()]
                      for c in self.campaigns if c.anniversary is not None}

        self.actions: list[tuple] = []
        self.conversions: list[tuple] = []
        self.dead_letters: list[tuple] = []
        self.funnel = {c.id: dict.fromkeys(FUNNEL, 0) for c in self.campaigns}
        self.unknown_subscribers = 0
        self.late_events = 0            # good events with ts below the clock (ts == clock is on time)
        self.bad_events = dict.fromkeys(BAD_REASONS, 0)
        self.bad_events_by_field: dict[str, dict[str, int]] = {}   # reason -> field -> n, as seen
        self.bad_bytes = 0              # the stream's bytes inside bad values
        self.largest_bad_value = None   # {"offset", "bytes"} of the stream's largest, the first of its size
        self.max_dead_letters = config.max_dead_letters
        self._run = None                # the open run: [offset, reason, field, count, value bytes]
        self._span = 0                  # offset >> DEAD_LETTER_SPAN_BITS of the last record counted
        self._span_records = 0          # records that started in that span

        self._buffer = bytearray()      # bytes fed but not yet framed into events
        self._offset = 0                # stream offset of _buffer[0]
        self._error = None              # the StreamError once the stream broke: nothing goes on
        self.clock = 0                  # ts is never negative, so 0 is "no event yet"
        self._cell = {}                 # subscriber -> current cell (absent: 0, unknown)
        self._powered_off = set()
        self._counter = {}              # (subscriber, counter name) -> (value, window start)
        self._marker = {}               # (subscriber, marker name) -> ts of the last such event
        self._contact = {}              # (subscriber, campaign id) -> last _Contact
        self._last_contact = {}         # subscriber -> t of the last contact of any campaign
        self._day_count = {}            # (subscriber, local day) -> contacts
        self._contact_times = {}        # subscriber -> every contact time, for max_in_window
        self._streak = {}               # (subscriber, campaign id) -> contacts without response
        self._pending = set()           # (subscriber, campaign id) with an action waiting
        self._sends_on_day = {}         # (campaign id, local day) -> sends, for daily_budget
        self._sends = {}                # campaign id -> sends ever, for total_budget
        self._channel_sends_on_day = {}  # (channel, local day) -> sends, for the channel's daily_budget
        self._timers = []               # heap of (due, creation, campaign index, subscriber, trigger ts, cell)
        self._created = 0
        self._seq = 0
        self._conversion_seq = 0
        # (campaign id, taker id, rule) -> contacts lost through min_gap, max_per_day or
        # max_in_window to the campaign of the latest contact, when record_takers
        self.takers: dict[tuple[str, str, str], int] | None = {} if record_takers else None
        # msisdn -> the entries of engine/closedloop/explain.py (the explanation's shape) of
        # each event and timer of a watched subscriber; _entry is the one being written
        self.explanations: dict[int, list[dict]] = {int(m): [] for m in watch}
        self._entry = None
        self._type_names = {code: name for name, code in config.event_types.items()}

    # -- the stream
    def feed(self, data) -> None:
        """The next bytes of the stream; an event may begin in one call and end in the next."""
        if self._error:
            raise self._error
        self._buffer += data
        pos = 0
        while pos < len(self._buffer):
            try:
                end = _value_end(self._buffer, pos, pos + self.max_event_bytes)
            except _NeedMore:
                break
            except _Broken as e:
                self._error = StreamError(self._offset + pos, e.args[0])
                self._end_run()         # the stream ends at the broken value
                raise self._error from None
            self._decoded(self._offset + pos, self._buffer, pos, end, *_fields(self._buffer, pos, end))
            pos = end
        del self._buffer[:pos]
        self._offset += pos

    def begin_stream(self, offset: int = 0) -> None:
        """A new stream, as the core's begin_stream: what is left of the old one (a broken
        stream, a part of an event) is dropped after its open run is written; offsets count
        from `offset`. From 0 the dead-letter spans start afresh; from a later offset they go
        on, and with them the max_dead_letters cap."""
        self._end_run()
        self._buffer = bytearray()
        self._error = None
        self._offset = offset
        if offset == 0:
            self._span, self._span_records = 0, 0
            self.largest_bad_value = None

    def finish(self) -> None:
        """End of the stream: the open run of bad values is written; part of an event left
        over is a StreamError."""
        if self._error:
            raise self._error
        self._end_run()
        if self._buffer:
            self._error = StreamError(self._offset, "truncated")
            raise self._error

    def drain(self) -> None:
        """Emit every pending action at its due time, as if the clock had moved on."""
        while self._timers:
            timer = heapq.heappop(self._timers)
            self.clock = max(self.clock, timer[0])
            self._fire(timer)

    def _decoded(self, offset: int, buf, start: int, end: int, values, bad) -> None:
        event = None
        if bad is None:
            event, bad = _validate(values, self.config.event_types)
        if bad is None:
            self._end_run()
            self._event(event)
            return
        reason, field = bad
        value = bytes(buf[start:end])
        self.bad_events[reason] += 1
        self.bad_bytes += len(value)
        if self.largest_bad_value is None or len(value) > self.largest_bad_value["bytes"]:
            self.largest_bad_value = {"offset": offset, "bytes": len(value)}
        by_field = self.bad_events_by_field.setdefault(reason, {})
        by_field[field] = by_field.get(field, 0) + 1
        if self._run is not None and self._run[1:3] == [reason, field] and self._run[4] == value:
            self._run[3] += 1
        else:
            self._end_run()
            self._run = [offset, reason, field, 1, value]

    def _end_run(self) -> None:
        """The open run becomes a record, unless its span already has max_dead_letters."""
        if self._run is None:
            return
        offset, reason, field, count, value = self._run
        self._run = None
        span = offset >> DEAD_LETTER_SPAN_BITS
        if span != self._span:
            self._span, self._span_records = span, 0
        if self._span_records < self.max_dead_letters:
            self._span_records += 1
            self.dead_letters.append((offset, reason, field, count, value[:DEAD_LETTER_BYTES].hex()))

    # -- local time
    def _minute(self, t: int) -> int:
        return (t + self.config.utc_offset_ms) // MINUTE_MS % 1440

    def _day(self, t: int) -> int:
        return (t + self.config.utc_offset_ms) // DAY_MS

    def _date(self, t: int) -> tuple[int, int, int]:
        """t's local date as (year, month, day). Past the years datetime knows (ts reaches 2**53 ms, year 285,000),
        whole 400-year cycles (146,097 days, the Gregorian calendar's period) are taken off
        and put back as years."""
        day = self._day(t)
        cycles = max(0, -(-(day - _LAST_DATE_DAY) // 146_097))
        day -= cycles * 146_097
        date = _EPOCH + datetime.timedelta(days=day)
        return date.year + 400 * cycles, date.month, date.day

    def _in_hours(self, c, t: int) -> bool:
        weekday = (self._day(t) + 3) % 7            # 1970-01-01 was a Thursday; mon = 0
        return (c.hours is None or _in_window(self._minute(t), c.hours)) and bool(c.days >> weekday & 1)

    def _in_area(self, cell: int, area: str) -> bool:
        return cell in self.areas[area]             # 0 was taken out: in no area

    def _in_audience(self, c, msisdn: int) -> bool:
        return ((c.audience is None or msisdn in self.lists[c.audience])
                and not any(msisdn in self.lists[name] for name in c.exclude))

    def _period(self, period: str, t: int) -> int:
        """t's local calendar period: the day, the week (a Monday begins one) or the month."""
        if period == "day":
            return self._day(t)
        if period == "week":
            return (self._day(t) + 3) // 7          # day 0 was a Thursday, day 4 a Monday
        year, month, _ = self._date(t)
        return year * 12 + month - 1

    def _when(self, c, i: int, ts: int) -> bool:
        from engine.language import when
        return when.evaluate(self.when[c.id], lambda name: self._counter_value(i, name, ts))

    def _local_date(self, t: int) -> datetime.date:
        # Python's dates end at year 9999 and event times go further; the Gregorian calendar
        # repeats every 400 years, so the date 400k years on has the same month, day and leapness
        return EPOCH + datetime.timedelta(days=self._day(t) % GREGORIAN_CYCLE_DAYS)

    def _anniversary(self, c, i: int, t: int) -> bool:
        date = self.dates[c.anniversary][i]
        if date is None:
            return False
        today = self._local_date(t)
        if (today.month, today.day) == date:
            return True
        return date == (2, 29) and (today.month, today.day) == (2, 28) and not calendar.isleap(today.year)

    def _counter_value(self, i: int, name: str, ts: int) -> int:
        value, start = self._counter.get((i, name), (0, 0))
        window, period = self.counters[name].window_ms, self.counters[name].period
        if period is not None and self._period(period, ts) != self._period(period, start):
            return 0
        return 0 if window is not None and ts >= start + window else value

    # -- SPEC §3, one good event
    def _event(self, e: Event) -> None:
        if e.ts < self.clock:
            self.late_events += 1
        ts = max(e.ts, self.clock)                  # time never goes backwards
        self.clock = ts
        # 1. timers
        while self._timers and self._timers[0][0] <= ts:
            self._fire(heapq.heappop(self._timers))
        # 2. subscriber
        i = self.subscriber.get(e.msisdn)
        if i is None:
            self.unknown_subscribers += 1
            return
        entry = self._entry = None
        if e.msisdn in self.explanations:
            entry = self._entry = {"ts": ts, "type": self._type_names[e.type], "event_ts": e.ts, "cell": e.cell,
                                   "conversions": [], "campaigns": [], "emissions": []}
        # 3. state
        previous_cell = self._cell.get(i, 0)
        if e.cell != 0:
            self._cell[i] = e.cell
        if e.type == POWER_OFF:
            self._powered_off.add(i)
        else:
            self._powered_off.discard(i)
        # 4. counters
        for k in self.config.counters:
            if e.type in k.on and (e.flags & k.flags) == k.flags and (k.arg is None or e.arg == k.arg):
                value, start = self._counter.get((i, k.name), (0, 0))
                if k.window_ms is not None and value != 0 and ts >= start + k.window_ms:
                    value = 0
                if k.period is not None and value != 0 and self._period(k.period, ts) != self._period(k.period, start):
                    value = 0
                if value == 0:
                    start = ts
                add = {"count": 1, "dur": e.dur, "dur_minutes": -(-e.dur // 60)}[k.add]
                self._counter[(i, k.name)] = (min(value + add, COUNTER_MAX), start)
        # 5. conversions
        for c in self.campaigns:
            if e.type in c.convert_on and (c.convert_arg is None or c.convert_arg == e.arg):
                contact = self._contact.get((i, c.id))
                if (contact is not None and not contact.converted
                        and (c.convert_within_ms is None or ts - contact.ts < c.convert_within_ms)):
                    contact.converted = True
                    self._streak[(i, c.id)] = 0
                    self._conversion_seq += 1
                    self.conversions.append((self._conversion_seq, ts, c.id, e.msisdn, contact.seq,
                                             KINDS[contact.kind]))
                    if entry is not None:
                        entry["conversions"].append({"campaign": c.id, "seq": self._conversion_seq,
                                                     "contact_seq": contact.seq, "kind": KINDS[contact.kind]})
                    self.funnel[c.id]["converted_" + KINDS[contact.kind]] += 1
        # 6. matching; campaigns of one event never change each other's matching, so the
        # explanation may name each one's first failing condition before any is emitted
        if entry is not None:
            entry["campaigns"] = [{"id": c.id, "result": self._first_failure(c, i, e, ts, previous_cell) or "matched"}
                                  for c in self.campaigns if e.type in c.on]
        for index, c in enumerate(self.campaigns):
            if e.type not in c.on or not self._matches(c, i, e, ts, previous_cell):
                continue
            self.funnel[c.id]["matched"] += 1
            if c.delay_ms == 0:
                self._emit(c, i, ts, ts, e.cell, delayed=False)
            elif len(self._pending) >= self.config.max_pending:
                self.funnel[c.id]["overflow"] += 1
                if entry is not None:
                    entry["emissions"].append({"campaign": c.id, "ts": ts, "overflow": True})
            else:
                self.funnel[c.id]["scheduled"] += 1
                self._pending.add((i, c.id))
                self._created += 1
                heapq.heappush(self._timers, (ts + c.delay_ms, self._created, index, i, ts, e.cell))
                if entry is not None:
                    entry["emissions"].append({"campaign": c.id, "ts": ts, "scheduled": ts + c.delay_ms})
        # 8. markers, after matching: an event never sees itself
        for mk in self.config.markers:
            if e.type in mk.on and (e.flags & mk.flags) == mk.flags and (mk.arg is None or e.arg == mk.arg):
                self._marker[(i, mk.name)] = ts
        if entry is not None:
            entry["state"] = self._state(i, ts)
            self.explanations[e.msisdn].append(entry)
            self._entry = None

    def _live_on(self, c, t: int) -> bool:
        """t's local date lies within the campaign's start/end (both included)."""
        if c.start is None and c.end is None:
            return True
        date = self._date(t)
        return ((c.start is None or date >= (c.start.year, c.start.month, c.start.day))
                and (c.end is None or date <= (c.end.year, c.end.month, c.end.day)))

    def _matches(self, c, i: int, e: Event, ts: int, previous_cell: int) -> bool:
        return self._first_failure(c, i, e, ts, previous_cell) is None

    def _first_failure(self, c, i: int, e: Event, ts: int, previous_cell: int):
        """The first condition of step 6 that the campaign fails, named as
        engine.records.CONDITIONS names it, in that order; None when it matches."""
        msisdn = e.msisdn
        contact = self._contact.get((i, c.id))
        if not c.enabled:
            return "enabled"
        if not self._live_on(c, ts):
            return "dates"
        if (e.flags & c.flags) != c.flags:
            return "flags"
        if c.arg is not None and e.arg != c.arg:
            return "arg"
        if c.audience is not None and msisdn not in self.lists[c.audience]:
            return "audience"
        if any(msisdn in self.lists[name] for name in c.exclude):
            return "exclude"
        if any(msisdn in self.lists[name] for name in self.config.policy.blacklist):
            return "blacklist"
        if c.id in self.where and not self.where[c.id][i]:
            return "where"
        if c.peer_in is not None and (e.peer == 0 or e.peer not in self.lists[c.peer_in]):
            return "peer_in"
        if c.area is not None:
            if not self._in_area(e.cell, c.area):
                return "area"
            if c.enter and self._in_area(previous_cell, c.area):
                return "enter"
        if c.hours is not None and not _in_window(self._minute(ts), c.hours):
            return "hours"
        if not self._in_hours(c, ts):
            return "days"
        if c.counter is not None and self._counter_value(i, c.counter, ts) < c.at_least:
            return "counter"
        if c.id in self.when and not self._when(c, i, ts):
            return "when"
        for cond in c.after:
            t = self._marker.get((i, cond.marker))
            if t is None or ts - t >= cond.within_ms:
                return "after"
        for cond in c.not_after:
            t = self._marker.get((i, cond.marker))
            if t is not None and ts - t < cond.within_ms:
                return "not_after"
        if c.anniversary is not None and not self._anniversary(c, i, ts):
            return "anniversary"
        if c.stop_after is not None and self._streak.get((i, c.id), 0) >= c.stop_after:
            return "stop_after"
        if c.once and contact is not None:
            return "once"
        if contact is not None and ts < contact.ts + c.cooldown_ms:
            return "cooldown"
        if (i, c.id) in self._pending:
            return "pending"
        return None

    def _state(self, i: int, t: int) -> dict:
        """A subscriber's state at t, in the explanation's shape (engine/closedloop/explain.py)."""
        contacts = {}
        for c in self.campaigns:
            contact = self._contact.get((i, c.id))
            if contact is not None:
                contacts[c.id] = {"ts": contact.ts, "seq": contact.seq, "kind": KINDS[contact.kind],
                                  "converted": contact.converted, "streak": self._streak.get((i, c.id), 0)}
        return {
            "cell": self._cell.get(i, 0),
            "powered_on": i not in self._powered_off,
            "last_contact": self._last_contact.get(i),
            "contacts_today": self._day_count.get((i, self._day(t)), 0),
            "counters": {k.name: v for k in self.config.counters if (v := self._counter_value(i, k.name, t))},
            "markers": {mk.name: self._marker[(i, mk.name)] for mk in self.config.markers if (i, mk.name) in self._marker},
            "contacts": contacts,
            "pending": [c.id for c in self.campaigns if (i, c.id) in self._pending],
        }

    # 7. emission
    def _fire(self, timer) -> None:
        due, _, index, i, trigger_ts, cell = timer
        c = self.campaigns[index]
        msisdn = self.msisdns[i]
        self._entry = None
        if msisdn in self.explanations:
            self._entry = {"ts": due, "type": "timer", "campaign": c.id, "trigger_ts": trigger_ts, "cell": cell,
                           "conversions": [], "campaigns": [], "emissions": []}
        self._pending.discard((i, c.id))
        self._emit(c, i, due, trigger_ts, cell, delayed=True)
        if self._entry is not None:
            self._entry["state"] = self._state(i, due)
            self.explanations[msisdn].append(self._entry)
            self._entry = None

    def _recheck(self, rule: str, c, i: int, t: int) -> bool:
        if rule == "area":
            return self._in_area(self._cell.get(i, 0), c.area)
        if rule == "powered_on":
            return i not in self._powered_off
        if rule == "audience":
            return self._in_audience(c, self.msisdns[i])
        return self._in_hours(c, t)                 # "hours"

    def _marked_since(self, c, i: int, trigger_ts: int) -> bool:
        """Some marker of the campaign's `absent` holds a time later than the trigger's."""
        return any((i, name) in self._marker and self._marker[(i, name)] > trigger_ts for name in c.absent)

    def _policy(self, c, i: int, t: int):
        """The first rule, in SPEC order, that forbids the contact; None when all allow it."""
        policy = self.config.policy
        if any(self.msisdns[i] in self.lists[name] for name in policy.blacklist):
            return "suppressed_blacklist"
        if (policy.quiet_hours is not None and "quiet_hours" not in c.exempt
                and _in_window(self._minute(t), policy.quiet_hours)):
            return "suppressed_quiet_hours"
        last = self._last_contact.get(i)
        if "min_gap" not in c.exempt and last is not None and t < last + policy.min_gap_ms:
            return "suppressed_min_gap"
        if (policy.max_per_day is not None and "max_per_day" not in c.exempt
                and self._day_count.get((i, self._day(t)), 0) >= policy.max_per_day):
            return "suppressed_max_per_day"
        if policy.max_in_window is not None and "max_in_window" not in c.exempt:
            contacts, window = policy.max_in_window
            if sum(1 for x in self._contact_times.get(i, ()) if x > t - window) >= contacts:
                return "suppressed_max_in_window"
        contact = self._contact.get((i, c.id))
        if contact is not None and t < contact.ts + c.cooldown_ms:
            return "suppressed_cooldown"
        return None

    @staticmethod
    def _template(c, msisdn: int) -> str:
        """The record's template: the campaign's, or with variants the one at
        crc32(f"{msisdn}:{id}:variant") % W, the first whose running sum of weights exceeds it."""
        if not c.variants:
            return c.template
        x = zlib.crc32(f"{msisdn}:{c.id}:variant".encode()) % sum(v.weight for v in c.variants)
        running = 0
        for v in c.variants:
            running += v.weight
            if x < running:
                return v.template
        raise AssertionError("unreachable: x < W")

    def _budget(self, c, t: int):
        """The first budget, in SPEC order, that the contact would exceed; None when none.
        Budgets count sends only, are never exempt and are checked before the kind is known."""
        day = self._day(t)
        if c.daily_budget is not None and self._sends_on_day.get((c.id, day), 0) >= c.daily_budget:
            return "suppressed_campaign_budget"
        if c.total_budget is not None and self._sends.get(c.id, 0) >= c.total_budget:
            return "suppressed_campaign_budget"
        budget = self.config.channel_budgets.get(c.channel)
        if budget is not None and self._channel_sends_on_day.get((c.channel, day), 0) >= budget:
            return "suppressed_channel_budget"
        return None

    def _emit(self, c, i: int, t: int, trigger_ts: int, cell: int, *, delayed: bool) -> None:
        outcome = self._emission(c, i, t, trigger_ts, cell, delayed=delayed)
        if self._entry is not None:
            self._entry["emissions"].append({"campaign": c.id, "ts": t, **outcome})

    def _emission(self, c, i: int, t: int, trigger_ts: int, cell: int, *, delayed: bool) -> dict:
        """Step 7; returns what the explanation says of it: {"suppressed": rule} (with
        "recheck": the first that failed, in the SPEC's order) or {"seq", "kind"}."""
        funnel = self.funnel[c.id]
        if not c.enabled:
            funnel["disabled"] += 1
            return {"suppressed": "disabled"}
        if not self._live_on(c, t):
            funnel["ended"] += 1
            return {"suppressed": "ended"}
        failed = next((rule for rule in RECHECKS if rule in c.recheck and not self._recheck(rule, c, i, t)),
                      None) if delayed else None
        if failed is not None:
            funnel["recheck_failed"] += 1
            return {"suppressed": "recheck_failed", "recheck": failed}
        if delayed and self._marked_since(c, i, trigger_ts):
            funnel["absent"] += 1
            return {"suppressed": "absent"}
        reason = self._policy(c, i, t) or self._budget(c, t)
        if reason is not None:
            funnel[reason] += 1
            rule = reason.removeprefix("suppressed_")
            if self.takers is not None and rule in ("min_gap", "max_per_day", "max_in_window"):
                latest = max((self._contact[(i, other.id)].seq, other.id) for other in self.campaigns
                             if (i, other.id) in self._contact)
                key = (c.id, latest[1], rule)
                self.takers[key] = self.takers.get(key, 0) + 1
            return {"suppressed": rule}
        msisdn = self.msisdns[i]
        if zlib.crc32(f"{msisdn}:global".encode()) % 10000 < self.config.policy.global_holdout_threshold:
            kind = KIND_GLOBAL_CONTROL
        elif zlib.crc32(f"{msisdn}:{c.id}".encode()) % 10000 < c.holdout_threshold:
            kind = KIND_CONTROL
        else:
            kind = KIND_SEND
        self._seq += 1
        self._contact[(i, c.id)] = _Contact(t, self._seq, kind)
        self._last_contact[i] = t
        self._contact_times.setdefault(i, []).append(t)
        day = (i, self._day(t))
        self._day_count[day] = self._day_count.get(day, 0) + 1
        self._streak[(i, c.id)] = self._streak.get((i, c.id), 0) + 1
        funnel[{KIND_SEND: "sent", KIND_CONTROL: "control", KIND_GLOBAL_CONTROL: "global_control"}[kind]] += 1
        if kind == KIND_SEND:
            for counts, key in ((self._sends_on_day, (c.id, day[1])), (self._sends, c.id),
                                (self._channel_sends_on_day, (c.channel, day[1]))):
                counts[key] = counts.get(key, 0) + 1
        self.actions.append((self._seq, t, c.id, msisdn, c.channel, self._template(c, msisdn), KINDS[kind],
                             trigger_ts, cell))
        return {"seq": self._seq, "kind": KINDS[kind]}
