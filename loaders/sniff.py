"""Is a trace an event stream? Its head, judged before anything of it is processed.

sigmatch reads msgpack, and almost any bytes are msgpack: every ASCII byte is a small
integer, a complete value that is not an event. So a JSON-lines export, a CSV, a gzip file
not named *.gz or an empty file would replay "successfully", with 0 events and dead letters;
and event times in seconds would be taken as January 1970 (in microseconds or nanoseconds,
as tens of thousands of years ahead), where every `hours` rule fails in silence. Here the
head of a trace (its first HEAD_VALUES values, within its first HEAD_BYTES bytes) is
decoded with the core's own verdicts (`Core.sniff`, which changes nothing in the engine)
and what is wrong is said in one line:

* `judge_traces` (`sigmatch replay`, `sigmatch check`): a stream whose head holds no good
  event at all, or whose good events all look like seconds, microseconds or nanoseconds
  (WRONG_UNITS), is refused; so is a later trace that is plainly another format (text,
  compressed, Parquet) with no good event in its head. The refusal comes before anything
  is processed: no output exists and no good event has been spent.
* `judge_spool_file` (`sigmatch run`): a spool file that is not an event stream (another
  format, or values none of which is even shaped as an event) and holds no good event from
  its first byte to its last, or whose events look like another unit than ms, is set aside
  whole in SPOOL/rejected/. A file of malformed events is still an event stream: its bad
  events go to the dead letters as before. So no good event is ever set aside.
* Event times before 2000 or after 2100 in a head are warned about, one line per kind.

The bounds are fixed (not "a year from now") so that what a replay says never depends on
when it runs.
"""
from __future__ import annotations

import codecs
import datetime
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Optional, Sequence

import numpy as np

from engine.errors import LoadError
from loaders import refuse_special
from loaders.traces import open_trace
from engine.records import STREAM_STATUSES, events_in_bad_value
from engine.wording import plural

__all__ = ["Head", "Judgement", "judge_traces", "judge_spool_file", "examine_trace", "other_format", "HEAD_VALUES", "HEAD_BYTES"]

HEAD_VALUES = 4096
# The head is read in growing steps up to this: 4,096 values of a usual 40-60 byte event are
# about 200 KiB; values past it are not examined (a stream of such large values is rare).
HEAD_BYTES = 4 << 20
FIRST_READ = 256 << 10
# A spool file whose head holds no good event is read on, in these steps, to its end or its
# first good event, before it is set aside
SCAN_BYTES = 4 << 20
SCAN_VALUES = 1 << 16

MS_2000 = 946_684_800_000           # 2000-01-01T00:00:00Z
MS_2100 = 4_102_444_800_000         # 2100-01-01T00:00:00Z
# Event times in another unit than ms: a time that, read in that unit, falls from 2001-09-09
# (10^12 ms) to the year 33658 (10^15 ms), where as ms it does not. Seconds: 10^9 to 10^12
# (as ms, January 1970); microseconds: 10^15 to 10^18, nanoseconds: from 10^18 (as ms,
# past the year 33658). Refused when every good event of a head is in one of them.
WRONG_UNITS = (
    ("seconds", 10 ** 9, 10 ** 12, lambda ts: ts * 1000),
    ("microseconds", 10 ** 15, 10 ** 18, lambda ts: ts // 1000),
    ("nanoseconds", 10 ** 18, 2 ** 63, lambda ts: ts // 10 ** 6),
)

OK, CORRUPT, TOO_LARGE, TRUNCATED = (STREAM_STATUSES.index(s) for s in ("ok", "corrupt", "too_large", "truncated"))
# the offset said is where the value holding the byte starts (helper-129)
_BROKEN = {CORRUPT: "a 0xc1 byte, which msgpack never uses, in the value that starts there", TOO_LARGE: "a value longer than max_event_bytes"}

# Formats recognised by their first bytes; "BZh" needs a block size digit after it
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"PK\x03\x04", "zip"),
    (b"PAR1", "Parquet"),
)
TEXT_KINDS = ("JSON lines", "JSON", "CSV", "TOML", "text")
# What a file of another format is, in a message (text kinds: _phrase)
_PHRASES = {
    "gzip": "it is gzip-compressed (only files named *.gz are decompressed)",
    "zstd": "it is zstd-compressed",
    "xz": "it is xz-compressed",
    "bzip2": "it is bzip2-compressed",
    "zip": "it is a zip archive",
    "Parquet": "it looks like a Parquet file",
}
# The service decompresses nothing, whatever a spool file's name (replay decompresses *.gz)
_SPOOL_PHRASES = _PHRASES | {"gzip": "it is gzip-compressed (the service reads uncompressed msgpack only)"}
OTHER_FORMATS = tuple(_PHRASES) + TEXT_KINDS
_TEXT_SAMPLE = 64 << 10
_TEXT_LINES = 8
# a TOML table header ([engine], [[campaign]]), or a key = value line whose value is one
# TOML value (a string, number, date, boolean, array or table), so that logfmt's
# `ts=1767225600000 msisdn=...` is not taken for one
_TOML_LINE = re.compile(
    r'^(?:\[\[?\s*[A-Za-z0-9_."\'-]+(?:\s*\.\s*[A-Za-z0-9_"\'-]+)*\s*\]\]?'
    r'|[A-Za-z0-9_.-]+\s*=\s*(?:"[^"]*"|\'[^\']*\'|[-+]?[0-9][0-9_.:eE+TZ-]*|true|false|\[.*|\{.*)\s*(?:#.*)?)$')
# control characters that text never holds (tab, line feed, form feed and carriage return it may)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def _kind(head: bytes) -> tuple[Optional[str], bool]:
    """What the head's bytes are when they are plainly not msgpack events, None otherwise
    (msgpack, or bytes nothing is known about); and, for text, whether it is not UTF-8."""
    if not head:
        return "empty", False
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind, False
    if head.startswith(b"BZh") and head[3:4].isdigit():
        return "bzip2", False
    return _text_kind(head[:_TEXT_SAMPLE])


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except (ValueError, RecursionError):
        return False
    return True


def _text_kind(sample: bytes) -> tuple[Optional[str], bool]:
    if sample.startswith(codecs.BOM_UTF8):
        sample = sample[len(codecs.BOM_UTF8):]
    whole = sample
    # what a file looks like is what its first lines are: bytes of another kind further on
    # (an event appended to an export) do not make it something else
    cut = -1
    for _ in range(_TEXT_LINES):
        found = sample.find(b"\n", cut + 1)
        if found < 0:
            break
        cut = found
    if cut >= 0:
        sample = sample[:cut + 1]
    try:
        # incremental: a character cut by the end of the sample is not an error
        text = codecs.getincrementaldecoder("utf-8")().decode(sample)
        not_utf8 = False
    except UnicodeDecodeError:
        # text in another encoding (a GBK export) has no control bytes either, and has lines
        text = sample.decode("latin-1")
        not_utf8 = True
        if "\n" not in text:
            return None, False
    if _CONTROL.search(text):
        return None, False
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "text", not_utf8
    # a configuration given as a trace (gen's opens with nine lines of '#' comments, whose
    # commas read as CSV): its first line that is not a comment, within the first 64
    setting = next((line for line in (raw.strip() for raw in whole.decode("latin-1").splitlines()[:64])
                    if line and not line.startswith("#")), None)
    if setting is not None and _TOML_LINE.match(setting) and not _is_json(setting):
        return "TOML", not_utf8
    if lines[0][0] in "{[":
        # JSON lines when the first line is a whole JSON value and more lines follow
        try:
            json.loads(lines[0])
        except (ValueError, RecursionError):
            return "JSON", not_utf8
        return ("JSON lines" if len(lines) > 1 else "JSON"), not_utf8
    if any(separator in lines[0] for separator in ",;\t|"):
        return "CSV", not_utf8
    return "text", not_utf8


def _phrase(kind: str, not_utf8: bool, spool: bool = False) -> str:
    """`it looks like JSON lines (text)`, `it looks like text (not UTF-8)`, `it is a zip archive`;
    `spool`: as the service's spool reads files (it decompresses none)."""
    phrases = _SPOOL_PHRASES if spool else _PHRASES
    if kind in phrases:
        return phrases[kind]
    notes = ([] if kind == "text" else ["text"]) + (["not UTF-8"] if not_utf8 else [])
    return f"it looks like {kind}" + (f" ({', '.join(notes)})" if notes else "")


def other_format(head: bytes) -> Optional[str]:
    """What `head` (a stream's first bytes) plainly is when it is no msgpack event stream, in
    the words the service's spool sets a file aside with ("it is gzip-compressed (the
    service reads uncompressed msgpack only)", "it looks like JSON lines (text)"), or None:
    msgpack, empty, or bytes nothing is known about."""
    if not head:
        return None
    kind, not_utf8 = _kind(head)
    return _phrase(kind, not_utf8, spool=True) if kind in OTHER_FORMATS else None


def _iso(ms: int) -> str:
    try:
        moment = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(milliseconds=ms)
    except OverflowError:
        return "after the year 9999"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Head:
    """The examined head of one trace (or of a stream of several)."""
    name: str               # the trace as messages name it
    nbytes: int             # bytes of the trace (on disk)
    kind: Optional[str]     # what its bytes are when plainly not msgpack (_kind)
    not_utf8: bool          # ... text in another encoding than UTF-8
    values: int             # complete values examined
    ts: np.ndarray          # ts of the good events among them, in order
    bad: dict               # {(reason, field): n} of the bad ones
    status: int             # where the examination stopped (records.STREAM_STATUSES)
    stopped: int            # ... at this offset
    whole: bool             # the examined values are all the trace holds
    # with no good event, the times of the events that are bad only for a ts from 2^53 on
    # (out of range for ms: nanoseconds, say), as Python ints; () otherwise
    beyond: tuple = ()
    # a .gz whose data breaks within the head: zlib's reason (replay stops there too)
    gzip_broken: Optional[str] = None
    bad_bytes: int = 0                  # bytes inside the bad values examined
    largest: Optional[tuple] = None     # (offset, bytes) of the largest of them, the first of its size

    @property
    def good(self) -> int:
        return len(self.ts)

    @property
    def empty(self) -> bool:
        return self.kind == "empty"

    def _scope(self) -> str:
        if self.whole:
            return "its only value" if self.values == 1 else f"its {self.values:,} values"
        return f"its first {self.values:,} values"

    def _bad_summary(self) -> str:
        top = sorted(self.bad.items(), key=lambda item: (-item[1], item[0]))
        parts = [f"{n:,} {reason}" + (f" ({field})" if field else "") for (reason, field), n in top[:3]]
        if len(top) > 3:
            parts.append(f"{sum(n for _, n in top[3:]):,} other")
        return ", ".join(parts)

    def not_a_stream(self, spool: bool = False) -> Optional[str]:
        """Why this holds no good event to replay (None when its head holds one); `spool`: said
        of a spool file, which the service reads as it is (replay decompresses *.gz)."""
        if self.empty:
            return "no events: it is empty once decompressed" if self.nbytes else "no events: the file is empty"
        if self.good:
            return None
        advice = "sigmatch reads msgpack (docs/semantics.md)"
        if self.kind is not None:
            return f"not a msgpack event stream: {_phrase(self.kind, self.not_utf8, spool)}; {advice}"
        if self.status in _BROKEN:
            if not self.values:
                return (f"not a msgpack event stream: it breaks at byte {self.stopped:,} ({_BROKEN[self.status]}) "
                        f"before any event; {advice}")
            return (f"no good event before it breaks at byte {self.stopped:,} ({_BROKEN[self.status]}): "
                    f"{self._bad_summary()}; docs/semantics.md says what a good event is")
        if not self.values:
            return f"not a msgpack event stream: it ends inside its first value; {advice}"
        if all(reason == "not_an_event" for reason, _ in self.bad):
            return f"not a msgpack event stream: none of {self._scope()} is an array or a map, as events are; {advice}"
        return (f"no good event in {self._scope()}: {self._bad_summary()}; "
                "docs/semantics.md says what a good event is")

    def wrong_unit(self) -> Optional[str]:
        """When every good event's time looks like seconds, microseconds or nanoseconds since
        1970, not milliseconds (WRONG_UNITS): the unit named, the first time read both ways.
        Times too large for ms (from 2^53) make their events bad: a head of those alone is
        judged on them (`beyond`)."""
        times = self.ts.tolist() if self.good else list(self.beyond)
        if not times:
            return None
        for unit, low, high, as_ms in WRONG_UNITS:
            if all(low <= t < high for t in times):
                first = times[0]
                return (f"event times look like {unit}, not milliseconds: the first, {first:,}, is {_iso(first)} "
                        f"as ms and {_iso(as_ms(first))} as {unit}; sigmatch reads ms since 1970-01-01 UTC "
                        "(docs/semantics.md)")
        return None

    def warnings(self) -> list[str]:
        """One line per kind of implausible event time in the head: before 2000, after 2100."""
        if not self.good or self.wrong_unit():
            return []
        scope = f"its {plural(self.good, 'event')}" if self.whole else f"the first {plural(self.good, 'event')}"
        lines = []
        early = self.ts[self.ts < MS_2000]
        if len(early):
            first = int(early[0])
            lines.append(f"{len(early):,} of {scope} {'is' if len(early) == 1 else 'are'} dated before 2000 "
                         f"(the first: ts {first:,}, {_iso(first)}); event times are ms since 1970-01-01 UTC "
                         "(docs/semantics.md)")
        late = self.ts[self.ts >= MS_2100]
        if len(late):
            first = int(late[0])
            # ms taken for microseconds is the likely mistake: say what the time would be then
            hint = f", or {_iso(first // 1000)} as microseconds" if MS_2000 <= first // 1000 < MS_2100 else ""
            lines.append(f"{len(late):,} of {scope} {'is' if len(late) == 1 else 'are'} dated after 2100 "
                         f"(the first: ts {first:,}, {_iso(first)}{hint}); event times are ms since "
                         "1970-01-01 UTC (docs/semantics.md)")
        return lines

    def _largest_summary(self) -> str:
        """Where the largest bad value is when it holds HIDDEN_EVENTS_FACTOR good events' bytes
        or more (a damaged header that took the events after it: replay warns of it), else ""."""
        if self.largest is None:
            return ""
        at, nbytes = self.largest
        events = events_in_bad_value(nbytes, self.good, self.stopped - self.bad_bytes)
        if not events:
            return ""
        # a .gz trace's offsets are those of its decompressed bytes, as replay's are
        unpacked = "decompressed " if self.name.endswith(".gz") else ""
        return (f"; the largest, at {unpacked}byte {at:,}, holds {plural(nbytes, 'byte')}, as many as about "
                f"{plural(events, 'event')}: a damaged header?")

    def describe(self) -> str:
        """One line for `sigmatch check`: what the head holds."""
        if self.empty:
            return "empty"
        bad = self.values - self.good
        text = f"{plural(self.nbytes, 'byte')}; {self._scope()}: {plural(self.good, 'good event')}, {bad:,} bad"
        if bad:
            text += f" ({self._bad_summary()}{self._largest_summary()})"
        if self.good:
            text += f"; event times {_iso(int(self.ts.min()))} .. {_iso(int(self.ts.max()))}"
        if self.status in _BROKEN:
            text += f"; it breaks at byte {self.stopped:,} ({_BROKEN[self.status]})"
        return text


def _read_up_to(f, n: int) -> bytes:
    parts, left = [], n
    while left > 0:
        chunk = f.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _read_head(f, core) -> tuple[bytes, bool, tuple]:
    """The head of `f` from where it stands, read in growing steps until it holds
    HEAD_VALUES values, a broken one, the end, or HEAD_BYTES: (bytes, at the end, sniff)."""
    data = b""
    want = FIRST_READ
    while True:
        data += _read_up_to(f, want - len(data))
        at_end = len(data) < want
        found = core.sniff(data, HEAD_VALUES)
        values, _, _, status, _, _ = found
        if at_end or values >= HEAD_VALUES or status in _BROKEN or want >= HEAD_BYTES:
            return data, at_end, found
        want = min(want * 4, HEAD_BYTES)


def _head(name: str, nbytes: int, data: bytes, at_end: bool, found: tuple) -> Head:
    values, ts, bad, status, stopped, (inside, largest, largest_at) = found
    whole = at_end and (status == TRUNCATED or (status == OK and stopped == len(data)))
    beyond = ()
    if not len(ts) and set(bad) == {("out_of_range", "ts")}:
        beyond = _times_beyond(data[:stopped], values)
        if len(beyond) != bad[("out_of_range", "ts")]:
            beyond = ()         # not each of them read so: judged by their reasons alone
    return Head(name, nbytes, *_kind(data[:_TEXT_SAMPLE]), values, ts, bad, status, stopped, whole, beyond,
                bad_bytes=inside, largest=(largest_at, largest) if largest else None)


def _times_beyond(data: bytes, values: int) -> tuple:
    """The ts of the first `values` values of `data` that are events whose ts is an integer
    from 2^53 on (what the core finds out of range), decoded by msgpack-python: the core
    keeps no time of a bad event, and only such a head, without a good event, needs them."""
    import msgpack
    unpacker = msgpack.Unpacker(raw=True, strict_map_key=False, max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    times = []
    try:
        for _, value in zip(range(values), unpacker):
            ts = None
            if isinstance(value, list) and value:
                ts = value[0]
            elif isinstance(value, dict):
                ts = value.get(b"ts")
            if isinstance(ts, int) and not isinstance(ts, bool) and ts >= 1 << 53:
                times.append(ts)
    except (ValueError, msgpack.UnpackException):
        pass
    return tuple(times)


def examine_trace(path, core, name: Optional[str] = None) -> Head:
    """The head of one trace file (decompressed when named *.gz, as replay reads it)."""
    path = Path(path)
    refuse_special(path, "trace")
    try:
        nbytes = path.stat().st_size
        with open_trace(path) as f:
            data, at_end, found = _read_head(f, core)
            broken = getattr(f, "broken", None)
    except FileNotFoundError:
        raise LoadError(f"{path}: no such trace file") from None
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e     # no errno, no repeated path
        raise LoadError(f"{path}: cannot read trace: {reason}") from None
    if broken is not None:
        if not data:
            # nothing to process before the break: refused now, in the words replay would use
            raise LoadError(f"{path}: cannot read trace: {broken}")
        # a .gz cut short in its head: judged on the bytes before the break, which replay
        # processes before it stops there; not the whole file (its end is not known)
        return replace(_head(name or str(path), nbytes, data, False, found), gzip_broken=str(broken))
    return _head(name or str(path), nbytes, data, at_end, found)


def _stream_head(paths: Sequence[Path], core, name: str) -> Head:
    """The head of the stream the traces form, read across them: the first files may be
    too short to hold HEAD_VALUES values, and an event may span two files."""
    data = bytearray()
    for path in paths:
        with open_trace(path) as f:
            data += _read_up_to(f, HEAD_BYTES - len(data))
            if getattr(f, "broken", None) is not None:
                break       # replay stops there too
        if len(data) >= HEAD_BYTES:
            break
    found = core.sniff(data, HEAD_VALUES)
    return _head(name, sum(p.stat().st_size for p in paths), bytes(data), len(data) < HEAD_BYTES, found)


@dataclass(frozen=True)
class Judgement:
    heads: list             # a Head per trace, in order
    refusal: Optional[str]  # one line, naming the trace; None: replay it
    warnings: list          # lines, each naming its trace
    # one line when the stream, as far as its head was read, breaks or ends inside an event:
    # replay processes the events before that place and then stops with an error (`check`
    # says so; replay is not refused for it). None otherwise, or where the head cannot tell.
    broken: Optional[str] = None
    # one line when a later file's own head breaks or ends inside an event: it may begin
    # inside an event of the file before it, which only a read of that file to its end tells
    unsure: Optional[str] = None


def judge_traces(paths: Sequence, core) -> Judgement:
    """Judge the traces of one replay (one stream, in order) before any of it is processed,
    with the verdicts of `core` (an Engine, or its compiled core).
    Refused: an empty stream; a stream whose head holds no good event, or whose good events
    all look like seconds, microseconds or nanoseconds; a later trace whose own head has no
    good event and is plainly another format (a later file may begin inside an event the one
    before it began, so its head alone proves nothing else), or whose events look like one
    of those units."""
    core = getattr(core, "_core", core)
    paths = [Path(p) for p in paths]
    heads = [examine_trace(p, core) for p in paths]
    warnings: list[str] = []
    refusal = None
    filled = [(p, h) for p, h in zip(paths, heads) if not h.empty]
    if not filled:
        if len(heads) == 1:
            h = heads[0]
            refusal = f"{h.name}: " + ("no events: it is empty once decompressed" if h.nbytes else
                                       "no events: the file is empty")
        else:
            refusal = f"no events: every trace is empty ({', '.join(h.name for h in heads)})"
        return Judgement(heads, refusal, warnings)
    first = filled[0][1]
    stream = first
    if first.whole and first.values < HEAD_VALUES and len(filled) > 1:
        stream = _stream_head([p for p, _ in filled], core, first.name)
    if stream.wrong_unit():
        refusal = f"{first.name}: {stream.wrong_unit()}"
    elif not stream.good:
        refusal = f"{first.name}: {first.not_a_stream()}"
    for _, h in filled[1:]:
        if refusal:
            break
        if not h.good and h.kind in OTHER_FORMATS:
            refusal = f"{h.name}: {h.not_a_stream()}"
        elif h.wrong_unit():
            refusal = f"{h.name}: {h.wrong_unit()}"
    for h in heads:
        if h.empty and filled:
            warnings.append(f"{h.name}: " + ("it is empty once decompressed" if h.nbytes else "the file is empty"))
        warnings += [f"{h.name}: {line}" for line in h.warnings()]
    if not refusal:
        warnings += _out_of_order(paths, heads)
    broken = None if refusal else _broken(stream, len(filled) == 1)
    if broken is None and not refusal:
        # a .gz that cannot be read on stops replay wherever it stands in the stream
        broken = next((f"{h.name}: {h.gzip_broken}; replay processes the events before it, then stops "
                       "with an error" for h in heads if h.gzip_broken), None)
    unsure = None
    if broken is None and not refusal and stream is first and len(filled) > 1:
        later = [h for _, h in filled[1:] if h.status in _BROKEN
                 or (h is filled[-1][1] and h.whole and h.status == TRUNCATED)]
        if later:
            unsure = (f"{later[0].name}: read from its own first byte, it "
                      + ("breaks" if later[0].status in _BROKEN else "ends inside an event")
                      + f" at byte {later[0].stopped:,}; if the file before it ends at an event's end, replay "
                        "stops there with an error (it may also begin inside an event of that file)")
    return Judgement(heads, refusal, warnings, broken, unsure)


def _out_of_order(paths: list[Path], heads: list[Head]) -> list[str]:
    """Warnings for traces given in an order their events are not in (helper-119: `check`
    said `traces: ok` for day 2 before day 1, and for one file given twice; replay then
    found half the events late): a file given more than once, and a trace whose first
    events are older than the first of the trace before it, judged on heads read cleanly
    from their first byte (no bad value: a later file may begin inside an event, and what it
    reads then is no time). One line for each kind, the first case named and the others
    counted: a stream of thousands of files must not bury the log."""
    warnings = []
    given: dict[object, list[str]] = {}
    for path, h in zip(paths, heads):
        try:
            info = path.stat()
        except OSError:
            continue
        # one file under any name, and a copy of it (plain or .gz): the same events at its head
        key = (h.good, h.ts.tobytes()) if h.good >= 2 else (info.st_dev, info.st_ino)
        given.setdefault(key, []).append(h.name)
    repeated = [names for names in given.values() if len(names) > 1]
    if repeated:
        first = repeated[0]
        others = len(first) - 2 + sum(len(names) - 1 for names in repeated[1:])
        warnings.append(f"{first[1]}: the same events as {first[0]} before it (the file given twice, or a copy): "
                        "read again, late" + (f" ({plural(others, 'other trace')} likewise)" if others else ""))
    clean = [h for h in heads if h.good and not h.bad]
    earlier = [(before, h) for before, h in zip(clean, clean[1:]) if int(h.ts.min()) < int(before.ts[0])]
    if earlier and not repeated:
        before, h = earlier[0]
        others = len(earlier) - 1
        warnings.append(f"{h.name}: its events begin at {_iso(int(h.ts.min()))}, before those of {before.name} "
                        f"(from {_iso(int(before.ts[0]))}), given before it: the traces are one stream in the "
                        "order given, so its events older than the clock come late; give them in time order"
                        + (f" ({plural(others, 'other trace')} likewise)" if others else ""))
    return warnings


def _broken(stream: Head, one_file: bool) -> Optional[str]:
    """Where the stream's head shows it breaks (a 0xc1 byte, a value past max_event_bytes) or,
    read to its end, ends inside an event. Only the head that starts the stream is read from
    an event's start: a later file's own head may begin inside an event the file before it
    began, so it is not judged alone."""
    where = f"at byte {stream.stopped:,}" if one_file else f"at byte {stream.stopped:,} of the stream"
    then = "replay processes the events before it, then stops with an error"
    if stream.status in _BROKEN:
        return f"{stream.name}: the stream breaks {where} ({_BROKEN[stream.status]}); {then}"
    if stream.whole and stream.status == TRUNCATED:
        return f"{stream.name}: the stream ends inside an event {where}; {then}"
    return None


def judge_spool_file(f: BinaryIO, core, stop=None) -> tuple[Optional[str], list[str]]:
    """Judge a spool file that starts the stream afresh (nothing carried into it), from its
    first byte: (why it is set aside, or None to process it; warnings). Set aside: a file
    whose events look like seconds, microseconds or nanoseconds, and a file without a good event from its first byte to
    its end (or to where it breaks: the service skips the rest of a broken file anyway) that
    is plainly another format, or whose values, one at least, are none of them shaped as an
    event. A file whose head holds no good event is read on, SCAN_BYTES at a time, to be
    sure. Processed as before: an empty file (nothing to misread), malformed events (dead
    letters), a file broken before its first value (reported where it breaks), a file that
    ends inside its first value (the start of an event the next file completes, as replay
    reads a stream of several files; should that event break in the next file, the daemon
    starts the stream again at that file's first byte). `stop()`
    true ends the reading early: None, and the caller leaves the file for later."""
    f.seek(0)
    data, at_end, found = _read_head(f, core)
    if not data:
        return None, []
    head = _head("", os.fstat(f.fileno()).st_size, data, at_end, found)
    if head.good or head.wrong_unit():
        return head.wrong_unit(), head.warnings()
    other = head.kind in OTHER_FORMATS

    def shaped(bad) -> bool:
        return any(reason != "not_an_event" for reason, _ in bad)

    if not other and shaped(head.bad):
        return None, []
    values = head.values
    if not head.whole and head.status not in _BROKEN:
        pending = bytearray(data[head.stopped:])
        while True:
            if stop is not None and stop():
                return None, []
            n, ts, bad, status, stopped, _ = core.sniff(pending, SCAN_VALUES)
            values += n
            if len(ts) or (not other and shaped(bad)):
                return None, []
            if status in _BROKEN:
                break
            del pending[:stopped]
            if pending and status == OK:
                continue
            more = _read_up_to(f, SCAN_BYTES)
            if not more:
                break
            pending += more
    return (head.not_a_stream(spool=True), []) if other or values else (None, [])
