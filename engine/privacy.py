"""MSISDNs are personal data: anything that reaches a log, an error text or a metric goes
through here.

    mask_msisdn(n)          one known number: '13800138000' -> '138****8000'
    mask_numbers(text)      every number in free text masked (the rule below)
    mask_written_numbers(text)  and numbers written in groups (`138-0013-8000`, `138,0013,8000`),
                            for pages
    mask_typed_numbers(text)    and numbers glued to words (`id13800138000`): text people type
    escape_controls(text)   control characters shown as escapes, so that text from outside
                            (a request path, a CSV row) cannot forge or hide log lines
    scrub(text)             both: what every log message and error text goes through
    LogFormatter            the text log lines `sigmatch` writes, scrubbed
    JsonLogFormatter        the same as one JSON object a line (--log-format json)
    MaskedStream            standard error as the CLI sees it: whatever else writes there
                            (a library's traceback, a warning) is masked too

The rule of mask_numbers: a run of 7 or more digits is masked unless it is part of a name,
that is unless an ASCII letter touches it, or one of `-_.` joins it to a letter
(`journal-000000000012.msgpack`, `actions-00000001.csv`), or a `.` joins it to more digits
(`1234567.5`, a decimal). So a number is masked wherever it stands as a number: after `+`,
`/`, `=`, `,`, a space, a quote, a CJK character, a `-` that follows digits (`+86-138...`)
or before a full stop that ends a sentence. Runs of more than 15 digits are no MSISDN but
may hold one (a country prefix, two numbers run together): they are masked too. Six digits
or fewer are left alone. The letter of an escape does not count as a letter: in `\\n1380...`,
`\\x001380...` and `%2B861380...` (a URL-encoded `+`) the number is masked.

A number after a `+` (or `%2B`, or `+86-`) is masked even when a name follows
(`+8613800138000.msgpack`). A
number written glued to letters otherwise (`13800138000x`, `msisdn13800138000`) is taken
for a name and shown: code that echoes a value it rejected masks it itself with mask_msisdn.
The service's own numbers (offsets, counts) are printed with thousands separators and its
times as ISO times, so that this rule never hides them.
"""
from __future__ import annotations

import datetime
import json
import logging
import re
import threading

__all__ = ["mask_msisdn", "mask_numbers", "mask_written_numbers", "mask_typed_numbers", "escape_controls",
           "has_controls", "scrub", "LogFormatter", "JsonLogFormatter", "MaskedStream"]

# Shortest digit run masked in free text: the shortest subscriber numbers in use have 7 digits
MIN_MASKED_DIGITS = 7

_RUN = re.compile(r"\d{%d,}" % MIN_MASKED_DIGITS)
# C0 and C1 controls, DEL, the Unicode line and paragraph separators (some log viewers break
# lines there) and the bidirectional overrides (which reorder what a terminal shows)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_HEX = frozenset("0123456789abcdefABCDEF")


def mask_msisdn(msisdn) -> str:
    """'13800138000' -> '138****8000'; short numbers keep less so that most digits stay hidden."""
    digits = str(msisdn)
    if len(digits) >= 8:
        return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]
    if len(digits) >= 3:
        return digits[:1] + "*" * (len(digits) - 2) + digits[-1:]
    return "*" * len(digits)


def _letter(text: str, i: int) -> bool:
    """An ASCII letter at i that is not the letter of an escape (`\\n`, `\\x1b`, `%2B`)."""
    c = text[i]
    if not ("a" <= c <= "z" or "A" <= c <= "Z"):
        return False
    if i >= 1 and text[i - 1] == "\\":
        return False
    return not (i >= 2 and text[i - 2] == "%" and text[i - 1] in _HEX and c in _HEX)


def _joined(text: str, i: int, step: int) -> bool:
    """Whether the character at i, beside a digit run (step -1: before it, +1: after it),
    makes the run part of a name or a decimal."""
    if not 0 <= i < len(text):
        return False
    c = text[i]
    if c in "-_.":
        j = i + step
        if not 0 <= j < len(text):
            return False
        return _letter(text, j) or (c == "." and text[j].isdigit())
    return _letter(text, i)


# what stands before an international number: `+`, its URL encoding, and a country code
# set apart (`+86-`, `+86 `)
_INTERNATIONAL = re.compile(r"(?:\+|%2[Bb])(?:\d{1,4}[ -])?$")


def _mask_run(match: re.Match) -> str:
    text, start, end = match.string, match.start(), match.end()
    # after a `+`, a number is an international MSISDN, even joined to a name after it:
    # `+8613800138000.msgpack`, a spool file named after a subscriber
    if not _INTERNATIONAL.search(text, max(0, start - 8), start) and (
            _joined(text, start - 1, -1) or _joined(text, end, +1)):
        return match[0]
    return mask_msisdn(match[0])


def mask_numbers(text: str) -> str:
    """Every run of 7 or more digits in `text` masked as mask_msisdn does, except in names
    and decimals (the module docstring gives the rule)."""
    return _RUN.sub(_mask_run, text)


# A number as a person writes it, in groups: `+86 138-0013-8000`, `138 0013 8000`,
# `138.0013.8000`. A first group of 1-4 digits, then groups of 2-4, each after one space,
# dash or point, nothing word-like on either side (a decimal's or a version's further
# groups included).
_WRITTEN = re.compile(r"(?<![\w+.*-])\+?\d{1,4}(?:[ .-]\d{2,4}){1,5}(?![\w+*])(?![.-]\d)")
# Dates (2026-12-24, 24.12.2026) and IPv4 addresses have the same shape: taken out first, so
# that neither is masked nor joins the time or port beside it into a number
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_MONTH, _DAY = r"(?:0[1-9]|1[0-2])", r"(?:0[1-9]|[12]\d|3[01])"
# (a real month and day, either first in 24.12.2026 and 12/24/2026; octets of 0-255 and exactly four of them: `138.00.138.000` and
# `13.800.138.000` are numbers, helper-137)
_KEPT = re.compile(r"(?<![\d.])(?:\d{4}([-./])%s\1%s|%s([-./])%s\2\d{4}|%s(?:\.%s){3}(?!\.\d))(?!\d)"
                   % (_MONTH, _DAY, _DAY, _DAY, _OCTET, _OCTET))


def _mask_written(match: re.Match) -> str:
    text = match[0]
    digits = re.sub(r"\D", "", text)
    if len(digits) < MIN_MASKED_DIGITS:
        return text
    return ("+" if text.startswith("+") else "") + mask_msisdn(digits)


# Groups joined by commas: a count (`1,000,000`, India's `12,34,567`) or a number written
# as `138,0013,8000`, told apart by the groups' lengths (_mask_commas)
_COMMAS = re.compile(r"(?<![\w+.,*-])\+?\d{1,8}(?:,\d{1,8}){1,10}(?![\w+*])(?![.,-]\d)")


def _mask_commas(match: re.Match) -> str:
    groups = match[0].lstrip("+").split(",")
    middle = {len(g) for g in groups[1:-1]}
    # a count's last group has 3 digits, those between have one length (3, or 2 in India's
    # lakhs and crores), and its first is no longer than they are
    if len(groups[-1]) == 3 and middle <= {3} | ({2} if middle == {2} else set()) \
            and len(groups[0]) <= (min(middle) if middle else 3):
        return match[0]
    return _mask_written(match)


def mask_written_numbers(text: str) -> str:
    """mask_numbers, and also numbers written in groups (`+86 138-0013-8000` ->
    `+861******8000`): for text a person typed (a version's "why", an approval's note),
    shown on a page. Groups of 7 or more digits in all are masked, thousands written with
    spaces or points too (`1 000 000`: write 1,000,000); dates and IPv4 addresses are not.
    Groups joined by commas are masked unless they are grouped as a count is
    (`138,0013,8000` is masked, `1,000,000` and `12,34,567` are not). Not used for logs,
    whose offsets, times and counts are written so that mask_numbers alone suffices."""
    return mask_numbers(_outside_kept(_COMMAS, _outside_kept(_WRITTEN, text), _mask_commas))


def _outside_kept(pattern: re.Pattern, text: str, mask=None) -> str:
    """`text` with each match of `pattern` masked (by `mask`, _mask_written unless given),
    except inside dates and IPv4 addresses (_KEPT), which are neither masked nor joined to
    what stands beside them."""
    mask = mask or _mask_written
    parts, at = [], 0
    for kept in _KEPT.finditer(text):
        parts += [pattern.sub(mask, text[at:kept.start()]), kept[0]]
        at = kept.end()
    parts.append(pattern.sub(mask, text[at:]))
    return "".join(parts)


# Digits spread out as people type them (typed text), however many in a group, letters
# beside them or not (`id138-0013-8000`): apart by up to eight of any space (a no-break, an
# ideographic or a thin one too), any dash (the en dash that word processors put, U+2010,
# the minus sign, the katakana long mark), a dot (`.`, `·`, full-width), a comma (a cluster
# grouped as a count, `1,000,000`, is left as it is: _COUNT), `_`, `/`, `|`, `'`, `~`,
# brackets, or a character that shows nothing (zero-width, soft hyphen, the direction marks:
# a page shows `13800138000`): `138  0013  8000`, `138 - 0013 - 8000`,
# `1 3 8 0 0 1 3 8 0 0 0`, `138-00138000`, `[138] 0013 8000`, `138,0013,8000`.
_SPREAD_SEPARATORS = ("\\s\u00ad\u00b7\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e"
                      "\u2022\u2024\u2060-\u206f\u2219\u22c5\u2800\u3001\u3002\u3164\u30fb\u30fc\ufeff\uffa0"
                      "\uff0c\uff0e._/()\\[\\]{},|'~\\-\u2010-\u2015\u2212\ufe58\ufe63\uff0d")
# possessive: a cluster that cannot end where it should is not tried again shorter, which
# left the rest of a number shown; never begun beside a `*` (a mask already made)
_SPREAD = re.compile(r"(?<![\d*])\+?\d++(?:[%s]{1,8}\d++)*+" % _SPREAD_SEPARATORS)
# a count as people write one, which a spread cluster of its own is left as: 1,000,000,
# and India's 12,34,567
_COUNT = re.compile(r"\d{1,3}(?:,\d{3})+|\d{1,2}(?:,\d{2})+,\d{3}")


def _mask_spread(match: re.Match) -> str:
    """The digits of the match masked as numbers of 7 or more: groups join into one number
    until it holds a whole one (11 digits), or 7 and the next group is a number alone: two
    numbers typed with a space between (`13800138000 13900139000`) stay two."""
    text = match[0]
    groups = list(re.finditer(r"\d+", text))
    # the groups' cuts into numbers: after 11 digits, or after 7 when a number of 7 follows;
    # a last piece shorter than 7 joins the one before (`0086 138 0013 8000`, cut at 11,
    # left `8000` shown and 8 of the number's 11 digits readable)
    pieces, first, digits = [], 0, 0
    for i, group in enumerate(groups):
        digits += len(group[0])
        following = groups[i + 1][0] if i + 1 < len(groups) else None
        if following is None or digits >= 11 or (digits >= MIN_MASKED_DIGITS and len(following) >= MIN_MASKED_DIGITS):
            pieces.append([first, i, digits])
            first, digits = i + 1, 0
    if len(pieces) > 1 and pieces[-1][2] < MIN_MASKED_DIGITS:
        last = pieces.pop()
        pieces[-1][1:] = [last[1], pieces[-1][2] + last[2]]
    parts, start = [], 0
    for first, last, digits in pieces:
        piece = text[groups[first].start() if first else 0:groups[last].end()]
        if digits >= MIN_MASKED_DIGITS and not _COUNT.fullmatch(piece):
            piece = ("+" if piece.startswith("+") else "") + mask_msisdn("".join(g[0] for g in groups[first:last + 1]))
        parts += [text[start:groups[first].start()] if first else "", piece]
        start = groups[last].end()
    return "".join(parts) + text[start:]


def mask_typed_numbers(text: str) -> str:
    """mask_written_numbers, and every number left of 7 or more digits, in groups or not,
    letters beside it or not (`id13800138000`, `13800138000_x`, `id138-0013-8000`,
    `msisdn_138_0013_8001`): for text a person typed (a version's why, an approval's note),
    where a number glued to a word is still a number, never the name of a file the service
    wrote. So is a number spread out by other spaces and dashes, or by more than one, or by
    characters that show nothing (`138 - 0013 - 8000`, a no-break space or an en dash between
    the groups, `1 3 8 0 0 1 3 8 0 0 0`): 7 digits or more in all are masked, so a list of
    small numbers typed with spaces, or commas and spaces (`10 20 30 40`, `100, 200, 300`), is
    masked too. Dates and IPv4 addresses are kept, as mask_written_numbers keeps them."""
    # one pass over every cluster of digits, cut into numbers of 11 digits at most
    # (_mask_spread): patterns of groups of 2-4 digits, run before, took two numbers in
    # groups for one and left a short number's neighbour half shown
    text = _outside_kept(_SPREAD, text, _mask_spread)
    return _RUN.sub(lambda match: mask_msisdn(match[0]), mask_written_numbers(text))


def _escape(match: re.Match) -> str:
    c = match[0]
    short = _SHORT_ESCAPES.get(c)
    if short:
        return short
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def escape_controls(text: str) -> str:
    """Control characters as escapes (`\\n`, `\\x1b`, `\\u2028`): the text stays on one line
    and cannot move the cursor, colour the terminal or start a forged log line."""
    return _CONTROL.sub(_escape, text)


def has_controls(text: str) -> bool:
    """Whether `text` holds a character escape_controls would escape (a C0 or C1 control, a
    line or paragraph separator, a bidirectional override): for input refused outright."""
    return _CONTROL.search(text) is not None


def scrub(text: str) -> str:
    """What any text from outside goes through before it is written to a log or shown as an
    error: numbers masked, control characters escaped (masked first: an escape's letters
    never shield a number, but the order keeps that reasoning simple)."""
    return escape_controls(mask_numbers(text))


def iso_time(created: float) -> str:
    """A record's time as ISO local time with milliseconds and the UTC offset,
    `2026-11-30T03:10:00.123+08:00`: no run of digits that masking would take for a number."""
    return datetime.datetime.fromtimestamp(created).astimezone().isoformat(timespec="milliseconds")


class LogFormatter(logging.Formatter):
    """`2026-11-30T03:10:00.123+08:00 WARNING sigmatch.daemon: message`. Every record is
    scrubbed: the message from its format and arguments together, and an exception's
    traceback, which follows on lines indented by two spaces (so no line of it can pass for
    a record of its own) with each line scrubbed."""

    def __init__(self, fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s"):
        super().__init__(fmt)

    def formatTime(self, record: logging.LogRecord, datefmt=None) -> str:
        return iso_time(record.created)

    def format(self, record: logging.LogRecord) -> str:
        # as logging.Formatter.format, with every piece scrubbed
        # a message that ends in a line break (uvicorn's "Exception in ASGI application\n")
        # ends there: escaped, the break read as a literal \n at the end of the line
        record.message = scrub(record.getMessage().rstrip("\r\n"))
        if self.usesTime():
            record.asctime = self.formatTime(record)
        line = scrub(self.formatMessage(record))
        for block in (self._exception(record), record.stack_info and self.formatStack(record.stack_info)):
            if block:
                line += "".join("\n  " + scrub(part) for part in block.splitlines())
        return line

    def _exception(self, record: logging.LogRecord) -> str:
        if record.exc_info and not record.exc_text:
            # cached unscrubbed, as logging does, for any other handler of the record
            record.exc_text = self.formatException(record.exc_info)
        return record.exc_text or ""


class JsonLogFormatter(LogFormatter):
    """One JSON object a line: `ts`, `level`, `logger`, `message` and, with an exception,
    `error` (its last line). Every string is scrubbed before it is encoded. Attributes given
    with `extra=` are not written (they would bypass the message's masking)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": iso_time(record.created), "level": record.levelname,
                 "logger": scrub(record.name), "message": scrub(record.getMessage().rstrip("\r\n"))}
        exception = self._exception(record)
        if exception:
            entry["error"] = scrub(exception.splitlines()[-1])
        return json.dumps(entry, ensure_ascii=False)


class MaskedStream:
    """A text stream (standard error) through which every write is masked (mask_numbers).

    Text is passed on a line at a time (at `\\n` or `\\r`, so a progress bar still
    redraws) or on flush, so a number written in two pieces is still seen whole. Control
    characters are not escaped here: progress bars need `\\r`; log records are escaped by
    their formatter. Everything but writing is the wrapped stream's."""

    def __init__(self, stream):
        self._stream = stream
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            # str + bytes raises TypeError, as a text stream must (click probes with b"")
            self._pending += text
            cut = max(self._pending.rfind("\n"), self._pending.rfind("\r")) + 1
            if cut:
                ready, self._pending = self._pending[:cut], self._pending[cut:]
                self._stream.write(mask_numbers(ready))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._stream.write(mask_numbers(self._pending))
                self._pending = ""
            self._stream.flush()

    @property
    def wrapped(self):
        return self._stream

    def __getattr__(self, name):
        return getattr(self._stream, name)
