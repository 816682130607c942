"""Configuration: the TOML file of SPEC §2, parsed and validated into frozen dataclasses.

What may be written, with bounds, defaults and docs, is declared once in
`engine.language.schema`; the reader below walks that declaration and holds the wording of
every error.

`load_config(path)` is the entry point (`parse_config(text, path)` the same for text in
hand, as tests and `sigmatch check` use it); everything downstream (compile, the reference
model, the CLI) works on the `Config` it returns. Validation that needs the profile columns
(unknown attributes in `where`) happens in `engine.language.compile`, when profiles are loaded.
"""
from __future__ import annotations

import codecs
import datetime
import dataclasses
import difflib
import hashlib
import json
import os
import re
import stat
import tomllib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from engine.language import schema
from engine.language import when as when_lang
from engine.language import where as where_lang
from engine.language.schema import FLAG_NAMES, MAX_DURATION_MS, MS_PER
from engine.errors import ConfigError

# Event type codes of SPEC §1.4. Codes 32..63 may be named in `[event_types]`.
EVENT_TYPES: dict[str, int] = {
    "CALL_MO_END": 1,
    "CALL_MT_END": 2,
    "SMS_MO": 3,
    "SMS_MT": 4,
    "MMS_MO": 5,
    "LOCATION_UPDATE": 6,
    "POWER_ON": 7,
    "POWER_OFF": 8,
    "DATA_SESSION": 9,
    "CRBT_DOWNLOAD": 10,
    "ORDER": 11,
    "RECHARGE": 12,
}
POWER_OFF = 8

# Event `flags` bits, by the names a counter's `flags` uses.
FLAG_BITS: dict[str, int] = dict(zip(FLAG_NAMES, (1, 2, 4)))

# Weekday bits: mon = bit 0 ... sun = bit 6.
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAYS = 0x7F


@dataclass(frozen=True)
class CounterSpec:
    name: str
    on: tuple[int, ...]            # event type codes
    flags: int                     # FLAG_BITS mask that must all be set in e.flags
    add: str                       # "count" | "dur" | "dur_minutes"
    window_ms: Optional[int] = None     # None: no window
    period: Optional[str] = None   # "day" | "week" | "month" (local calendar); None: no period
    arg: Optional[int] = None      # e.arg must equal it

    @property
    def starts(self) -> bool:
        """Whether it keeps a start time (a window or a period) in the subscriber's row."""
        return self.window_ms is not None or self.period is not None


@dataclass(frozen=True)
class MarkerSpec:
    """`[markers]`: per subscriber, the time of the last event of this kind (SPEC §3 step 8)."""
    name: str
    on: tuple[int, ...]            # event type codes
    flags: int = 0                 # FLAG_BITS mask that must all be set in e.flags
    arg: Optional[int] = None      # e.arg must equal it


@dataclass(frozen=True)
class MarkerCondition:
    """One entry of a campaign's `after` or `not_after`."""
    marker: str                    # marker name
    within_ms: int                 # > 0


@dataclass(frozen=True)
class VariantSpec:
    """One entry of a campaign's `variants`: a template and its weight (1..schema.MAX_VARIANT_WEIGHT)."""
    template: str
    weight: int


def variant_index(msisdn: int, campaign_id: str, weights) -> int:
    """The variant of a subscriber (SPEC §3 step 7): with W = sum(weights), the first index
    whose running sum of weights exceeds zlib.crc32(f"{msisdn}:{campaign_id}:variant") % W
    (the MSISDN in decimal). The same for every kind of contact."""
    x = zlib.crc32(f"{msisdn}:{campaign_id}:variant".encode()) % sum(weights)
    running = 0
    for i, weight in enumerate(weights):
        running += weight
        if x < running:
            return i
    raise ValueError("weights must be positive")


@dataclass(frozen=True)
class PolicySpec:
    blacklist: tuple[str, ...] = ()                 # list names
    quiet_hours: Optional[tuple[int, int]] = None   # (start, end) minutes of the local day
    min_gap_ms: int = 0
    max_per_day: Optional[int] = None
    # (contacts, window ms): fewer than `contacts` contacts at times > t - window
    max_in_window: Optional[tuple[int, int]] = None
    global_holdout: float = 0.0                     # fraction of subscribers never sent anything

    @property
    def global_holdout_threshold(self) -> int:
        """A contact is a global control when crc32(f"{msisdn}:global") % 10000 < this."""
        return int(self.global_holdout * 10000 + 0.5)


@dataclass(frozen=True)
class CampaignSpec:
    id: str
    on: tuple[int, ...]                       # trigger event type codes
    channel: str
    priority: int = 0
    audience: Optional[str] = None            # list name
    peer_in: Optional[str] = None             # list name
    exclude: tuple[str, ...] = ()             # list names
    where: Optional[str] = None               # source text, parsed by engine.language.where
    area: Optional[str] = None                # area name
    enter: bool = False
    hours: Optional[tuple[int, int]] = None   # (start, end) minutes of the local day
    days: int = ALL_DAYS                      # weekday bits, mon = bit 0
    counter: Optional[str] = None             # counter name
    at_least: int = 0
    when: Optional[str] = None                # source text, parsed by engine.language.when
    anniversary: Optional[str] = None         # a string profile attribute of ISO dates
    delay_ms: int = 0
    recheck: frozenset[str] = frozenset()
    cooldown_ms: int = 0
    once: bool = False
    exempt: frozenset[str] = frozenset()
    template: str = ""
    holdout: float = 0.0
    convert_on: tuple[int, ...] = ()
    convert_arg: Optional[int] = None
    convert_within_ms: Optional[int] = None
    stop_after: Optional[int] = None
    flags: int = 0                            # FLAG_BITS mask that must all be set in the trigger's e.flags
    arg: Optional[int] = None                 # the trigger's e.arg must equal it
    enabled: bool = True
    start: Optional[datetime.date] = None     # first local date it acts on (included)
    end: Optional[datetime.date] = None       # last local date it acts on (included)
    after: tuple[MarkerCondition, ...] = ()   # each marker set and e.ts - marker < within
    not_after: tuple[MarkerCondition, ...] = ()   # each marker unset or e.ts - marker >= within
    absent: tuple[str, ...] = ()              # marker names none of which may be set after trigger_ts (needs a delay)
    daily_budget: Optional[int] = None        # sends of this campaign per local day
    total_budget: Optional[int] = None        # sends of this campaign, ever
    variants: tuple[VariantSpec, ...] = ()    # weighted templates replacing `template`; () without
    # its [[campaign]] table's place in the file (None: not read from one), for messages only
    index: Optional[int] = field(default=None, compare=False)

    @property
    def key(self) -> str:
        """How messages name it, as the loader does: `campaign[3] (id "x")`."""
        return f'campaign{"" if self.index is None else f"[{self.index}]"} (id "{self.id}")'

    @property
    def templates(self) -> tuple[str, ...]:
        """The templates its action records may name: the variants' in order, else (template,)."""
        return tuple(v.template for v in self.variants) or (self.template,)

    def template_of(self, msisdn: int) -> str:
        """The template of this subscriber's contacts (any kind): `template`, or its variant's."""
        if not self.variants:
            return self.template
        return self.variants[variant_index(msisdn, self.id, [v.weight for v in self.variants])].template

    @property
    def holdout_threshold(self) -> int:
        """A contact is a control when crc32(f"{msisdn}:{id}") % 10000 < this (SPEC §3 step 7)."""
        return int(self.holdout * 10000 + 0.5)


@dataclass(frozen=True)
class OutputSpec:
    """`[output]`: how sink files are written (not in SPEC §2; an extension with defaults)."""
    format: str = "csv"
    max_records: int = 100_000          # rotate a file after this many records
    max_age_ms: Optional[int] = 3_600_000  # rotate when a record is this much (event time) newer than the file's first


@dataclass(frozen=True)
class Config:
    path: Path                                  # the TOML file; relative paths resolve against its folder
    utc_offset_ms: int = 0
    profiles: Optional[Path] = None             # absolute
    max_pending: int = 10_000_000
    # dead-letter records per 64 MiB span of stream offsets (SPEC §4); past it bad events are only counted
    max_dead_letters: int = 100_000
    # how profiles, lists and areas are written: any codec Python knows, and the values read as null
    encoding: str = "utf-8"
    null_values: tuple[str, ...] = ("", "\\N")
    lists: dict[str, Path] = field(default_factory=dict)    # name -> absolute path
    areas: dict[str, Path] = field(default_factory=dict)    # name -> absolute path
    policy: PolicySpec = field(default_factory=PolicySpec)
    counters: tuple[CounterSpec, ...] = ()      # in file order
    markers: tuple[MarkerSpec, ...] = ()        # in file order
    campaigns: tuple[CampaignSpec, ...] = ()    # sorted: priority descending, then id ascending
    event_types: dict[str, int] = field(default_factory=lambda: dict(EVENT_TYPES))  # builtin + custom
    output: OutputSpec = field(default_factory=OutputSpec)
    # channel name -> its daily_budget (sends of all campaigns together per local day); only
    # channels that some campaign uses, and only those given a budget
    channel_budgets: dict[str, int] = field(default_factory=dict)
    # the sha256 of the bytes read (load_config): stats.json's `configuration.sha256` without a
    # second read, which a pipe or a FIFO cannot give (None from parse_config alone); not part
    # of what a configuration means, so not compared
    sha256: Optional[str] = field(default=None, compare=False)
    # the sha256 of the document as parsed (canonical JSON): an edit of comments or layout
    # alone leaves it as it was (the service says so at a restart, rather than "changed")
    meaning_sha256: Optional[str] = field(default=None, compare=False)
    # the file as the user named it (relative, say): messages name it so, as the loader does
    given_path: Optional[Path] = field(default=None, compare=False)

    @property
    def named(self) -> Path:
        """The file as messages name it: as given, else `path`."""
        return self.given_path or self.path

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels the campaigns use, in order of first use (campaign order): the core's
        channel index of each."""
        return tuple(dict.fromkeys(c.channel for c in self.campaigns))


# ============================================================================ loading
# Everything below turns the TOML document into the dataclasses above, walking
# engine.language.schema: one `read_<type>` method per value type of the schema checks one
# value and, on failure, raises a ConfigError naming the file and the key path, so an
# operator can find the line without reading our source.

MAX_UTC_OFFSET_MIN = 14 * 60                # the widest offset in use (Line Islands)

_DURATION = re.compile(r"([0-9]+)([smhd])", re.ASCII)
_HOURS = re.compile(r"([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})", re.ASCII)
_UTC_OFFSET = re.compile(r"([+-])([0-9]{2}):([0-9]{2})", re.ASCII)
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)

# The sections in the order they are read: a name is declared before it is referred to
# ([event_types] before anything that names a type, [lists]/[areas]/[counters]/[markers]
# before the campaigns, the campaigns before [channels]), whatever the order in the file.
READ_ORDER = ("event_types", "lists", "areas", "counters", "markers", "engine", "campaign", "policy", "output",
              "channels")


def load_config(path) -> Config:
    """Read and validate the TOML configuration at `path` (SPEC §2). Raises ConfigError."""
    path = Path(path)
    try:
        data = path.read_bytes()
        # utf-8-sig: Windows Notepad saves with a byte-order mark
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        start = e.start + (3 if data.startswith(codecs.BOM_UTF8) else 0)
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise ConfigError(f"{path}: line {line:,}: not UTF-8 text (byte {column:,} of the line); "
                          "a configuration file is UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration: {e.strerror or e}") from None
    except ValueError as e:         # a NUL byte in the path
        raise ConfigError(f"{_show(str(path))}: cannot read the configuration: {e}") from None
    # one parse, not two (at 10,000 campaigns each took 1.9 s); the meaning is read after the
    # reader, which refuses what JSON cannot write (an integer of 5,000 digits), and leaves
    # the document as it was
    parsed = _toml_document(text, path)
    config = _Reader(path).config(parsed)
    document = json.dumps(parsed, sort_keys=True, default=str, ensure_ascii=False)
    return dataclasses.replace(config, sha256=hashlib.sha256(data).hexdigest(),
                               meaning_sha256=hashlib.sha256(document.encode()).hexdigest())


def input_stamps(config: Config) -> dict[str, list[int]]:
    """The files a configuration reads (profiles, lists, areas) as {path: [size in bytes,
    mtime in ns]}, [-1, -1] for one that cannot be stat'ed: what a service records at each
    checkpoint to say, at its next start, which of them changed while it was stopped."""
    stamps: dict[str, list[int]] = {}
    for path in [config.profiles, *config.lists.values(), *config.areas.values()]:
        if path is None:
            continue
        try:
            st = os.stat(path)
            stamps[str(path)] = [st.st_size, st.st_mtime_ns]
        except (OSError, ValueError):
            stamps[str(path)] = [-1, -1]
    return stamps


def parse_config(text: str, path) -> Config:
    """Validate configuration `text` as if read from `path` (which names it in errors and
    anchors its relative paths). Raises ConfigError."""
    path = Path(path)
    return _Reader(path).config(_toml_document(text, path))


# Deepest dotted key read (a table's header or a key): tomllib's time and memory grow with
# the square of a key's whole path (10,000 levels: 1 s; 100,000: killed for memory). At 100
# parts, 1 MB of keys under a header of 100 took 8.7 s to read; at 16, 2.1 s, as 1 MB of
# ordinary configuration does (1.9 s). The schema's deepest key has 3.
MAX_KEY_DEPTH = 16

# The TOML a dotted key is made of, and what is not: comments and strings are whole tokens
# (one key part when quoted), so that the dots inside them never count. Each alternative is
# deterministic, so a scan is linear in the text.
_KEY_TOKENS = re.compile(r"""
    (?P<skip>\#[^\n]*|[ \t]+)
  | (?P<part>"{3}(?:[^"\\]|\\.|"(?!""))*(?:"{3}|\Z)
           | '{3}(?:[^']|'(?!''))*(?:'{3}|\Z)
           | "(?:[^"\\\n]|\\.)*"?
           | '[^'\n]*'?
           | [A-Za-z0-9_-]+)
  | (?P<dot>\.)
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)


def _deep_dotted_key(text: str) -> Optional[int]:
    """Where (an offset) the first dotted key of more than MAX_KEY_DEPTH parts starts, or
    None. Linear: unless a line has as many dots, nothing more is read; then the text is
    read token by token (a pattern run over the whole text took minutes on a long comment,
    and refused a comment of 100 sentences)."""
    if not any(line.count(".") >= MAX_KEY_DEPTH for line in text.split("\n")):
        return None
    parts, after_dot, start = 0, False, 0
    for token in _KEY_TOKENS.finditer(text):
        kind = token.lastgroup
        if kind == "skip":
            continue
        if kind == "part":
            if after_dot:
                parts += 1
            else:
                parts, start = 1, token.start()
            after_dot = False
            if parts > MAX_KEY_DEPTH:
                return start
        elif kind == "dot" and parts and not after_dot:
            after_dot = True
        else:
            parts, after_dot = 0, False
    return None


def _toml_document(text: str, path: Path) -> dict:
    """The TOML document of `text`, or ConfigError naming `path` and the line."""
    deep = _deep_dotted_key(text)
    if deep is not None:
        line = text.count("\n", 0, deep) + 1
        raise ConfigError(f"{path}: line {line:,}: a dotted key more than {MAX_KEY_DEPTH} levels deep")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: TOML syntax error: {e}") from None
    except RecursionError:
        line, key = _deepest_nesting(text)
        raise ConfigError(f"{path}: line {line:,}: {key}: arrays or tables nested too deeply") from None
    except ValueError:         # tomllib turns integers longer than Python allows into ValueError
        line, key = _long_number(text)
        raise ConfigError(f"{path}: line {line:,}: {key}: a number with too many digits") from None
    return document


# A key at the start of a TOML line (bare, dotted or quoted), for errors that tomllib does not place
_LINE_KEY = re.compile(r"""^[ \t]*((?:[A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*')(?:[ \t]*\.[ \t]*(?:[A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*'))*)[ \t]*=""",
                       re.MULTILINE)


def _key_before(text: str, at: int) -> str:
    """The key of the assignment that holds position `at`: the last `key =` starting a line
    at or before it, as written ("?" when there is none)."""
    found = "?"
    for m in _LINE_KEY.finditer(text, 0, at + 1):
        found = m.group(1)
    return found


def _deepest_nesting(text: str) -> tuple[int, str]:
    """(line, key) where brackets and braces first nest past 100 levels; strings are not
    skipped, which is close enough to name the place of a value nested thousands deep."""
    depth = 0
    for i, c in enumerate(text):
        depth += c in "[{"
        depth -= c in "]}"
        if depth > 100:
            return text.count("\n", 0, i) + 1, _key_before(text, i)
    return 1, "?"


def _long_number(text: str) -> tuple[int, str]:
    """(line, key) of the first run of more than 4,000 digits (underscores allowed, as TOML
    allows them between digits)."""
    m = re.search(r"[0-9][0-9_]{4000,}", text)
    at = m.start() if m else 0
    return text.count("\n", 0, at) + 1, _key_before(text, at)


def parse_duration(text: str) -> int:
    """`"5m"` -> 300000 (milliseconds). Raises ValueError for anything else."""
    m = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f'{_show(text)} is not a duration like "5m" (a whole number with s, m, h or d)')
    # checked on the text first: int() of thousands of digits is refused (or slow)
    ms = int(m.group(1)) * MS_PER[m.group(2)] if len(m.group(1).lstrip("0")) <= 15 else MAX_DURATION_MS + 1
    if ms > MAX_DURATION_MS:
        raise ValueError(f"{_show(text)} is longer than 100 years")
    return ms


def parse_hours(text: str) -> tuple[int, int]:
    """`"22:00-08:00"` -> (1320, 480): minutes of the local day, start inclusive, end
    exclusive, wrapping midnight when start > end. Raises ValueError."""
    m = _HOURS.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f'{_show(text)} is not hours like "09:00-18:00"')
    h1, m1, h2, m2 = map(int, m.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ValueError(f"{_show(text)} is not a time of day (00:00 to 23:59)")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        # Empty or the whole day? Either reading surprises someone; leave the key out for all day.
        raise ValueError(f"{_show(text)} starts where it ends")
    return start, end


def parse_days(text: str) -> int:
    """`"mon,wed-fri"` -> weekday bits (mon = bit 0). A range wraps past Sunday, so
    `"fri-mon"` is fri, sat, sun, mon; `"mon-mon"` is Monday alone. Raises ValueError."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f'{_show(text)} is not days like "mon-fri" or "sat,sun"')
    mask = 0
    for part in text.split(","):
        ends = [d.strip().lower() for d in part.split("-")]
        if len(ends) > 2 or any(d not in WEEKDAYS for d in ends):
            raise ValueError(f'{_show(part.strip())} in {_show(text)} is not a day (mon..sun) '
                             f'or a range like "mon-fri"')
        first, last = WEEKDAYS.index(ends[0]), WEEKDAYS.index(ends[-1])
        for k in range((last - first) % 7 + 1):
            mask |= 1 << ((first + k) % 7)
    return mask


def parse_utc_offset(text: str) -> int:
    """`"+08:00"` -> 28800000, `"-05:30"` -> -19800000. Raises ValueError."""
    m = _UTC_OFFSET.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f'{_show(text)} is not a UTC offset like "+08:00" or "-05:30"')
    sign, hours, minutes = m.group(1), int(m.group(2)), int(m.group(3))
    total = hours * 60 + minutes
    if minutes > 59 or total > MAX_UTC_OFFSET_MIN:
        raise ValueError(f"{_show(text)} is not a UTC offset between -14:00 and +14:00")
    return (-1 if sign == "-" else 1) * total * 60_000


def parse_date(value) -> datetime.date:
    """`"2027-02-05"` (or a TOML local date, 2027-02-05 unquoted) -> that date. Raises
    ValueError for anything else, a day that does not exist included."""
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        return value
    m = _DATE.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f'{_show(value)} is not a date like "2027-02-05"')
    try:
        return datetime.date(*map(int, m.groups()))
    except ValueError:
        raise ValueError(f"{_show(value)} is not a day of the calendar") from None


# A value shown in an error is cut to this many characters: the line stays one readable line
MAX_SHOWN = 120


def _show(value) -> str:
    """A value as the operator wrote it in TOML, cut to MAX_SHOWN characters."""
    text = _written(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 1] + "…"


def _written(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + " }"
    if isinstance(value, int) and abs(value) >= 10**30:
        try:
            return f"a {len(str(abs(value))):,}-digit number"
        except ValueError:      # str() of an integer past 4,300 digits raises: its bits tell the length
            return f"a number of about {int(abs(value).bit_length() * 0.30103) + 1:,} digits"
    if isinstance(value, int) and abs(value) >= 10**6:
        # Seven digits or more would be masked as an MSISDN on the way out (engine.privacy);
        # grouped as TOML allows (20_270_205), the number stays readable
        return f"{value:_}"
    return str(value)


def _kind(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


# What each table of the schema becomes (Section.builds, Table.builds); [engine]'s keys are
# Config's own attributes
_BUILDS = {"PolicySpec": PolicySpec, "CounterSpec": CounterSpec, "MarkerSpec": MarkerSpec,
           "CampaignSpec": CampaignSpec, "OutputSpec": OutputSpec, "MarkerCondition": MarkerCondition,
           "VariantSpec": VariantSpec}


# a configuration read from standard input or an inherited descriptor, not from a file of a folder
_STANDARD_STREAM = re.compile(r"/dev/(stdin|fd/\d+)|/proc/(self|\d+)/fd/\d+")


def read_once(path) -> bool:
    """Whether CONFIG at `path` can be read only once, or only here: standard input or an
    inherited descriptor (`/dev/stdin`, `<(...)`, even redirected from a file), a FIFO, a
    device. Commands that read it again (the service at each reload, diff's sides, Ray's
    actors on their hosts) refuse it."""
    if _STANDARD_STREAM.fullmatch(str(path)):
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False        # reported as the file it is not, where it is read


class _Reader:
    """Reads one document by the schema. Methods take the key path for messages, then the
    raw value (and the `read_<type>` ones the schema's type between them)."""

    def __init__(self, path: Path):
        self.path = path
        self.base = path.absolute().parent
        if _STANDARD_STREAM.fullmatch(str(path)):
            # read from standard input or a descriptor (`< file`, `<(...)`): /dev and
            # /dev/fd hold no file of the user's; the folder the command runs in is the one
            # meant (a FIFO made with mkfifo beside its files keeps its own folder)
            self.base = Path.cwd()
        self.lists: dict[str, Path] = {}
        self.areas: dict[str, Path] = {}
        self.counters: dict[str, CounterSpec] = {}
        self.markers: dict[str, MarkerSpec] = {}
        self.channels: list[str] = []          # used by some campaign, in campaign order
        self.event_types: dict[str, int] = dict(EVENT_TYPES)

    def fail(self, key: str, message: str):
        raise ConfigError(f"{self.path}: {key}: {message}")

    # -- generic values
    def wrong(self, key: str, value, expected: str):
        self.fail(key, f"expected {expected}, got {_kind(value)} ({_show(value)})")

    def table(self, key: str, value, allowed: tuple[str, ...] | None = None) -> dict:
        if not isinstance(value, dict):
            self.wrong(key, value, "a table")
        if allowed is not None:
            for k in value:
                if k not in allowed:
                    hint = difflib.get_close_matches(k, allowed, n=1)
                    known = f"did you mean {hint[0]!r}?" if hint else "known keys: " + ", ".join(allowed)
                    self.fail(f"{key}.{k}" if key else k, f"unknown key ({known})")
        return value

    def string(self, key: str, value, *, non_empty: bool = False) -> str:
        if not isinstance(value, str):
            self.wrong(key, value, "a string")
        if non_empty and not value.strip():
            self.fail(key, "must not be empty")
        return value

    def integer(self, key: str, value, *, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.wrong(key, value, "an integer")
        if not lo <= value <= hi:
            self.fail(key, f"{_show(value)} is out of range ({lo:,} to {hi:,})")
        return value

    def strings(self, key: str, value) -> list[str]:
        if not isinstance(value, list):
            self.wrong(key, value, "an array of strings")
        for i, item in enumerate(value):
            self.string(f"{key}[{i}]", item, non_empty=True)
        return value

    def parsed(self, key: str, value, parse):
        try:
            return parse(value)
        except ValueError as e:
            self.fail(key, str(e))

    def duration(self, key: str, value, *, positive: bool = False) -> int:
        ms = self.parsed(key, value, parse_duration)
        if positive and ms == 0:
            self.fail(key, "must be longer than zero")
        return ms

    def name_key(self, key: str, name: str, t: schema.Name) -> str:
        """A section's key that names something (`[lists] dnd = ...`): only its characters
        are checked, as TOML already made it a string."""
        if not t.pattern.fullmatch(name):
            self.fail(key, f"{_show(name)} is not {t.what}")
        if len(name) > t.longest:
            # the key holds the name itself when it is a section's key: cut there too
            self.fail(key.replace(name, _show(name)[1:]),
                      f"{_show(name)} is {len(name):,} characters long; a name has at most {t.longest}")
        return name

    # -- the schema's value types
    def read(self, key: str, t, value):
        return getattr(self, f"read_{type(t).__name__}")(key, t, value)

    def read_Integer(self, key: str, t: schema.Integer, value) -> int:
        return self.integer(key, value, lo=t.lo, hi=t.hi)

    def read_Fraction(self, key: str, t: schema.Fraction, value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.wrong(key, value, f"a number between {t.lo:g} and {t.hi:g}")
        if not t.lo <= value <= t.hi:
            self.fail(key, f"{value} is not between {t.lo:g} and {t.hi:g}")
        scaled = value * round(1 / t.step)
        if abs(scaled - round(scaled)) > 1e-9:
            self.fail(key, f"{value} is not a multiple of {t.step:g}")
        return float(value)

    def read_Duration(self, key: str, t: schema.Duration, value) -> Optional[int]:
        if t.zero_turns_off:
            if value in ("0", 0) and not isinstance(value, bool):
                return None
            return self.duration(key, value) or None
        return self.duration(key, value, positive=t.positive)

    def read_Boolean(self, key: str, t: schema.Boolean, value) -> bool:
        if not isinstance(value, bool):
            self.wrong(key, value, "true or false")
        return value

    def read_Text(self, key: str, t: schema.Text, value) -> str:
        text = self.string(key, value, non_empty=t.non_empty)
        control = next((c for c in text if (c < " " and c not in "\t\n\r") or "\x7f" <= c <= "\x9f"), None)
        if control is not None:
            # a template is a cell of every action file: a NUL there ends the row for many CSV
            # readers (helper-124); a tab or a line break is quoted like a comma
            self.fail(key, f"holds a control character (U+{ord(control):04X}); a template is text, tabs and "
                           "line breaks allowed")
        return text

    def read_Strings(self, key: str, t: schema.Strings, value) -> tuple[str, ...]:
        if not isinstance(value, list):
            self.wrong(key, value, "an array of strings")
        for i, item in enumerate(value):
            self.string(f"{key}[{i}]", item)
        return tuple(value)

    def read_Expression(self, key: str, t: schema.Expression, value) -> str:
        text = self.string(key, value, non_empty=True)
        try:
            if t.language == "where":
                where_lang.parse(text)
            else:
                when_lang.parse(text, self.counters)
        except (where_lang.WhereError, when_lang.WhenError) as e:
            self.fail(key, str(e))
        return text

    def read_Hours(self, key: str, t: schema.Hours, value) -> tuple[int, int]:
        return self.parsed(key, value, parse_hours)

    def read_Days(self, key: str, t: schema.Days, value) -> int:
        return self.parsed(key, value, parse_days)

    def read_Date(self, key: str, t: schema.Date, value) -> datetime.date:
        return self.parsed(key, value, parse_date)

    def read_UtcOffset(self, key: str, t: schema.UtcOffset, value) -> int:
        return self.parsed(key, value, parse_utc_offset)

    def read_FilePath(self, key: str, t: schema.FilePath, value) -> Path:
        # Stored absolute so a daemon that changes directory still finds its files.
        text = self.string(key, value, non_empty=True)
        if "\0" in text:
            self.fail(key, "a path cannot hold a NUL byte")
        return Path(os.path.normpath(self.base / text))

    def read_Encoding(self, key: str, t: schema.Encoding, value) -> str:
        encoding = self.string(key, value, non_empty=True)
        try:
            info = codecs.lookup(encoding)
        except LookupError:
            self.fail(key, f"unknown encoding {_show(encoding)} (e.g. \"utf-8\", \"gbk\", \"gb18030\")")
        # base64, hex, zlib, rot_13 ... are codecs, but not of text; punycode and idna are
        # of domain names, not of files
        if not getattr(info, "_is_text_encoding", True) or info.name in ("punycode", "idna", "undefined"):
            self.fail(key, f"{_show(encoding)} is not a text encoding "
                           "(e.g. \"utf-8\", \"gbk\", \"gb18030\", \"utf-16\")")
        return encoding

    def read_Choice(self, key: str, t: schema.Choice, value) -> str:
        for synonym, meaning in t.synonyms:
            if value == synonym and type(value) is type(synonym):
                return meaning
        if t.synonyms:
            # what may be written is more than the strings, so the message lists it all
            if value not in t.values:
                written = [_show(s) for s, _ in t.synonyms] + [_show(v) for v in t.values if v not in
                                                               {m for _, m in t.synonyms}]
                self.fail(key, f"{_show(value)} is not {', '.join(written[:-1])} or {written[-1]}")
            return value
        self.string(key, value)
        if value not in t.values:
            hint = difflib.get_close_matches(value, t.values, n=1) if t.hint else []
            more = f"; did you mean {_show(hint[0])}?" if hint else ""
            self.fail(key, f"{_show(value)} is not one of {', '.join(t.values)}{more}")
        return value

    def read_Name(self, key: str, t: schema.Name, value) -> str:
        name = self.string(key, value, non_empty=True)
        self.name_key(key, name, t)
        if (name.lower() if t.fold_case else name) in t.reserved:
            self.fail(key, f"{_show(name)} is reserved {t.reserved_why}")
        return name

    def read_EventTypes(self, key: str, t: schema.EventTypes, value) -> tuple[int, ...]:
        names = self.strings(key, value)
        if t.at_least_one and not names:
            self.fail(key, "needs at least one event type")
        codes = []
        for i, n in enumerate(names):
            if n not in self.event_types:
                hint = ([t for t in self.event_types if t == str(n).upper()]
                        or difflib.get_close_matches(str(n).upper(), self.event_types, n=1))
                more = f"; did you mean {_show(hint[0])}?" if hint else " (neither builtin nor in [event_types])"
                self.fail(f"{key}[{i}]", f"unknown event type {_show(n)}{more}")
            if self.event_types[n] not in codes:
                codes.append(self.event_types[n])
        return tuple(codes)

    def read_Flags(self, key: str, t: schema.Flags, value) -> int:
        """Flag names -> their FLAG_BITS mask."""
        mask = 0
        for i, flag in enumerate(self.strings(key, value)):
            if flag not in FLAG_BITS:
                hint = difflib.get_close_matches(flag, FLAG_BITS, n=1)
                more = f"; did you mean {_show(hint[0])}?" if hint else f" (known: {', '.join(FLAG_BITS)})"
                self.fail(f"{key}[{i}]", f"unknown flag {_show(flag)}{more}")
            mask |= FLAG_BITS[flag]
        return mask

    def read_Rules(self, key: str, t: schema.Rules, value) -> frozenset[str]:
        names = self.strings(key, value)
        for i, name in enumerate(names):
            if name not in t.values:
                self.fail(f"{key}[{i}]", f"unknown rule {_show(name)} (known: {', '.join(t.values)})")
        return frozenset(names)

    def read_Ref(self, key: str, t: schema.Ref, value):
        if t.many:
            names = self.strings(key, value)
            for i, name in enumerate(names):
                self.ref(f"{key}[{i}]", t.section, name)
            return tuple(dict.fromkeys(names))
        return self.ref(key, t.section, self.string(key, value, non_empty=True))

    def ref(self, key: str, section: str, name: str) -> str:
        declared = {"lists": self.lists, "areas": self.areas, "counters": self.counters, "markers": self.markers,
                    "campaign": self.channels}[section]
        if name not in declared:
            hint = difflib.get_close_matches(name, declared, n=1)
            if section == "campaign":       # Ref("campaign", key="channel"): the one such reference
                more = f"; did you mean {_show(hint[0])}?" if hint else \
                    f" (channels in use: {', '.join(declared)})" if declared else " (no campaign uses a channel)"
                self.fail(key, f"no campaign uses channel {_show(name)}{more}")
            what = section[:-1]
            self.fail(key, f"unknown {what} {_show(name)}"
                           + (f"; did you mean {_show(hint[0])}?" if hint else f" (not in [{section}])"))
        return name

    def read_Attribute(self, key: str, t: schema.Attribute, value) -> str:
        name = self.string(key, value, non_empty=True)
        if name in ("tags", "msisdn"):
            self.fail(key, f"{_show(name)} is not a date attribute of the profiles")
        return name

    def read_Table(self, key: str, t: schema.Table, value):
        """An inline table (or, by t.array, an array of them): its spec, or a tuple of its
        values in field order; an array gives a tuple of those."""
        if not t.array:
            return self.one_table(key, t, value)
        shape = "{ " + ", ".join(f.key for f in t.fields) + " }"
        if isinstance(value, dict) and t.array == "or":
            return (self.one_table(key, t, value),)
        if not isinstance(value, list):
            self.wrong(key, value, f"a table {shape} or an array of them" if t.array == "or"
                       else f"an array of tables {shape}")
        if t.items is not None and not t.items[0] <= len(value) <= t.items[1]:
            self.fail(key, f"{len(value)} {t.item}s: give {t.items[0]} to {t.items[1]}")
        entries, seen = [], {}
        for i, item in enumerate(value):
            entries.append(self.one_table(f"{key}[{i}]", t, item))
            if t.distinct is not None:
                unique = item[t.distinct]
                if unique in seen:
                    self.fail(f"{key}[{i}].{t.distinct}", f"{_show(unique)} is also {key.rsplit('.', 1)[-1]}"
                                                          f"[{seen[unique]}]'s {t.distinct} "
                                                          f"(each {t.item} a distinct {t.distinct})")
                seen[unique] = i
        return tuple(entries)

    def one_table(self, key: str, t: schema.Table, value):
        values = self.fields(key, t.fields, (), self.table(key, value, tuple(f.key for f in t.fields)))
        if t.builds is None:
            return tuple(values.values())
        return _BUILDS[t.builds](**self.attributes(t.fields, values))

    # -- tables of fields
    def fields(self, key: str, fields: tuple[schema.Field, ...], rules: tuple[schema.Rule, ...],
               table: dict) -> schema.Values:
        """Every field of `table` read by its type, by key, defaults read in for absent
        ones (None where there is none); then the rules across them."""
        for f in fields:
            if f.required is not None and f.key not in table:
                self.fail(f"{key}.{f.key}", f"missing ({f.required})")
        values = schema.Values(given=table)
        for f in fields:
            if f.key in table:
                values[f.key] = self.read(f"{key}.{f.key}", f.type, table[f.key])
            else:
                values[f.key] = None if f.default is None else self.read(f"{key}.{f.key}", f.type, f.default)
        for rule in rules:
            if rule.broken(values):
                self.fail(f"{key}.{rule.key}", rule.error.format(**values))
        return values

    @staticmethod
    def attributes(fields: tuple[schema.Field, ...], values: schema.Values) -> dict:
        """The values read, by the attribute of the spec each becomes; a key without a value
        (absent, no default) is left to the spec's own default."""
        out = {}
        for f in fields:
            if f.key not in values.given and f.default is None:
                continue
            if isinstance(f.target, tuple):
                out.update(zip(f.target, values[f.key]))
            else:
                out[f.target] = values[f.key]
        return out

    def section_table(self, section: schema.Section, value) -> dict:
        """A "table" section's values, by attribute."""
        table = self.table(section.name, value, section.keys)
        return self.attributes(section.fields, self.fields(section.name, section.fields, section.rules, table))

    def named_tables(self, section: schema.Section, value) -> dict[str, dict]:
        """A "tables by name" section: name -> its values by attribute."""
        out = {}
        for name, spec in self.table(section.name, value).items():
            key = f"{section.name}.{name}"
            if isinstance(section.key, schema.Ref):
                self.ref(key, section.key.section, name)
            else:
                self.name_key(key, name, section.key)
            table = self.table(key, spec, section.keys)
            out[name] = self.attributes(section.fields, self.fields(key, section.fields, section.rules, table))
        return out

    def map_section(self, section: schema.Section, value) -> dict:
        """A "map" section: name -> its value read by the section's value type."""
        out = {}
        for name, item in self.table(section.name, value).items():
            key = f"{section.name}.{name}"
            self.name_key(key, name, section.key)
            out[name] = self.read(key, section.value, item)
        return out

    # -- the document
    def config(self, doc: dict) -> Config:
        self.table("", doc, tuple(s.name for s in schema.SECTIONS))
        read = {}
        for name in READ_ORDER:
            section = schema.SECTION[name]
            read[name] = getattr(self, f"read_{name}")(section, doc.get(name, [] if section.shape == "array of tables"
                                                                             else {}))
        return Config(
            path=self.path.absolute(),
            given_path=self.path,
            **read["engine"],
            lists=self.lists,
            areas=self.areas,
            policy=read["policy"],
            counters=read["counters"],
            markers=read["markers"],
            campaigns=read["campaign"],
            event_types=self.event_types,
            output=read["output"],
            channel_budgets=read["channels"],
        )

    def read_event_types(self, section: schema.Section, value) -> None:
        by_code = {code: name for name, code in EVENT_TYPES.items()}
        for name, code in self.table(section.name, value).items():
            key = f"{section.name}.{name}"
            self.name_key(key, name, section.key)
            if name in EVENT_TYPES:
                self.fail(key, f"{name} is a builtin event type (code {EVENT_TYPES[name]})")
            code = self.read(key, section.value, code)
            if code in by_code:
                self.fail(key, f"code {code} is already {by_code[code]}")
            by_code[code] = name
            self.event_types[name] = code

    def read_lists(self, section: schema.Section, value) -> None:
        self.lists = self.map_section(section, value)

    def read_areas(self, section: schema.Section, value) -> None:
        self.areas = self.map_section(section, value)

    def read_counters(self, section: schema.Section, value) -> tuple[CounterSpec, ...]:
        build = _BUILDS[section.builds]
        counters = tuple(build(name=name, **attrs) for name, attrs in self.named_tables(section, value).items())
        self.counters = {c.name: c for c in counters}
        return counters

    def read_markers(self, section: schema.Section, value) -> tuple[MarkerSpec, ...]:
        build = _BUILDS[section.builds]
        markers = tuple(build(name=name, **attrs) for name, attrs in self.named_tables(section, value).items())
        self.markers = {m.name: m for m in markers}
        return markers

    def read_engine(self, section: schema.Section, value) -> dict:
        return self.section_table(section, value)

    def read_policy(self, section: schema.Section, value) -> PolicySpec:
        return _BUILDS[section.builds](**self.section_table(section, value))

    def read_output(self, section: schema.Section, value) -> OutputSpec:
        return _BUILDS[section.builds](**self.section_table(section, value))

    def read_channels(self, section: schema.Section, value) -> dict[str, int]:
        """name -> its daily_budget, for the channels given one."""
        return {name: attrs["daily_budget"] for name, attrs in self.named_tables(section, value).items()
                if "daily_budget" in attrs}

    def read_campaign(self, section: schema.Section, value) -> tuple[CampaignSpec, ...]:
        if not isinstance(value, list):
            self.fail("campaign", f"expected [[campaign]] tables (an array of tables), got {_kind(value)}")
        campaigns: list[CampaignSpec] = []
        seen: dict[str, int] = {}
        for i, table in enumerate(value):
            campaign = self.one_campaign(section, i, table)
            if campaign.id in seen:
                self.fail(f'campaign[{i}] (id "{campaign.id}").id',
                          f"duplicate campaign id (also campaign[{seen[campaign.id]}])")
            seen[campaign.id] = i
            campaigns.append(campaign)
        campaigns.sort(key=lambda c: (-c.priority, c.id))
        self.channels = list(dict.fromkeys(c.channel for c in campaigns))
        return tuple(campaigns)

    def one_campaign(self, section: schema.Section, i: int, value) -> CampaignSpec:
        key = f"campaign[{i}]"
        c = self.table(key, value)
        # the id first: every later message names the campaign by it
        id_field = section.field("id")
        if "id" not in c:
            self.fail(f"{key}.id", f"missing ({id_field.required})")
        cid = self.read(f"{key}.id", id_field.type, c["id"])
        key = f'{key} (id "{cid}")'
        self.table(key, c, section.keys)
        values = self.fields(key, section.fields, section.rules, c)
        return _BUILDS[section.builds](**self.attributes(section.fields, values), index=i)
