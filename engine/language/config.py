"""Configuration: the TOML file of SPEC §2, parsed and validated into frozen dataclasses.

`load_config(path)` is the entry point (`parse_config(text, path)` the same for text in
hand, as tests and `sigmatch check` use it); everything downstream (compile, the reference
model, the CLI) works on the `Config` it returns. Validation that needs the profile columns
(unknown attributes in `where`) happens in `engine.language.compile`, when profiles are loaded.
"""
from __future__ import annotations

import codecs
import datetime
import difflib
import json
import os
import re
import tomllib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from engine.language import when as when_lang
from engine.language import where as where_lang
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
CUSTOM_TYPE_CODES = range(32, 64)

# Event `flags` bits, by the names a counter's `flags` uses.
FLAG_BITS: dict[str, int] = {"long_distance": 1, "roaming": 2, "international": 4}

RECHECK_RULES = ("area", "powered_on", "audience", "hours")
EXEMPT_RULES = ("min_gap", "max_per_day", "quiet_hours", "max_in_window")
MAX_WINDOW_CONTACTS = 16            # max_in_window.contacts: the contact times kept per subscriber
COUNTER_ADD = ("count", "dur", "dur_minutes")
OUTPUT_FORMATS = ("csv", "jsonl", "parquet")

# Weekday bits: mon = bit 0 ... sun = bit 6.
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAYS = 0x7F


@dataclass(frozen=True)
class CounterSpec:
    name: str
    on: tuple[int, ...]            # event type codes
    flags: int                     # FLAG_BITS mask that must all be set in e.flags
    add: str                       # "count" | "dur" | "dur_minutes"
    window_ms: Optional[int]       # None: no window
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
    """One entry of a campaign's `variants`: a template and its weight (1..MAX_VARIANT_WEIGHT)."""
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

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels the campaigns use, in order of first use (campaign order): the core's
        channel index of each."""
        return tuple(dict.fromkeys(c.channel for c in self.campaigns))


# ============================================================================ loading
# Everything below turns the TOML document into the dataclasses above. Each reader
# checks one value and, on failure, raises a ConfigError naming the file and the key
# path, so an operator can find the line without reading our source.

MS_PER = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_DURATION_MS = 36_500 * MS_PER["d"]      # 100 years: anything longer is a typo
MAX_UTC_OFFSET_MIN = 14 * 60                # the widest offset in use (Line Islands)
INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1                      # counters saturate here, so at_least cannot exceed it
RESERVED_CHANNELS = ("conversions", "dead_letters")   # directories of OUT that are not channels

_DURATION = re.compile(r"([0-9]+)([smhd])", re.ASCII)
_HOURS = re.compile(r"([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})", re.ASCII)
_UTC_OFFSET = re.compile(r"([+-])([0-9]{2}):([0-9]{2})", re.ASCII)
_NAME = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)           # campaign ids, list/area/counter names
_CHANNEL = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)         # becomes a directory name
_EVENT_TYPE_NAME = re.compile(r"[A-Z][A-Z0-9_]*", re.ASCII)
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)

_SECTIONS = ("engine", "lists", "areas", "policy", "counters", "markers", "campaign", "event_types", "output",
             "channels")
_ENGINE_KEYS = ("utc_offset", "profiles", "max_pending", "max_dead_letters", "encoding", "null_values")
_POLICY_KEYS = ("blacklist", "quiet_hours", "min_gap", "max_per_day", "max_in_window", "global_holdout")
_WINDOW_KEYS = ("contacts", "window")
_COUNTER_KEYS = ("on", "flags", "add", "window", "period", "arg")
_MARKER_KEYS = ("on", "flags", "arg")
_MARKER_CONDITION_KEYS = ("marker", "within")
COUNTER_PERIODS = ("day", "week", "month")
_OUTPUT_KEYS = ("format", "max_records", "max_age")
_CHANNEL_KEYS = ("daily_budget",)
_VARIANT_KEYS = ("template", "weight")
MAX_VARIANTS = 16
MAX_VARIANT_WEIGHT = 10_000
MAX_BUDGET = 2**63 - 1
_CAMPAIGN_KEYS = (
    "id", "priority", "on", "audience", "peer_in", "exclude", "where", "area", "enter",
    "hours", "days", "counter", "delay", "recheck", "cooldown", "once", "exempt", "channel",
    "template", "holdout", "convert_on", "convert_arg", "convert_within", "stop_after",
    "flags", "arg", "enabled", "start", "end", "when", "anniversary", "after", "not_after", "absent",
    "daily_budget", "total_budget", "variants",
)
RESERVED_CAMPAIGN_IDS = ("global",)        # the programme-wide control group's name in the holdout hash
_CONDITION_KEYS = ("name", "at_least")


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
    return parse_config(text, path)


def parse_config(text: str, path) -> Config:
    """Validate configuration `text` as if read from `path` (which names it in errors and
    anchors its relative paths). Raises ConfigError."""
    path = Path(path)
    deep = re.search(r"(?:[A-Za-z0-9_\-\"' ]+\.){100,}", text)
    if deep is not None:
        line = text.count("\n", 0, deep.start()) + 1
        raise ConfigError(f"{path}: line {line:,}: a dotted key more than 100 levels deep")
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
    return _Reader(path).config(document)


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


class _Reader:
    """Reads one document. Methods take the key path for messages, then the raw value."""

    def __init__(self, path: Path):
        self.path = path
        self.base = path.absolute().parent
        self.lists: dict[str, Path] = {}
        self.areas: dict[str, Path] = {}
        self.counters: dict[str, CounterSpec] = {}
        self.markers: dict[str, MarkerSpec] = {}
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

    def boolean(self, key: str, value) -> bool:
        if not isinstance(value, bool):
            self.wrong(key, value, "true or false")
        return value

    def strings(self, key: str, value) -> list[str]:
        if not isinstance(value, list):
            self.wrong(key, value, "an array of strings")
        for i, item in enumerate(value):
            self.string(f"{key}[{i}]", item, non_empty=True)
        return value

    def name(self, key: str, value: str, what: str) -> str:
        if not _NAME.fullmatch(value):
            self.fail(key, f"{_show(value)} is not a valid {what} (letters, digits, _ . -)")
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

    def path_value(self, key: str, value) -> Path:
        # Stored absolute so a daemon that changes directory still finds its files.
        text = self.string(key, value, non_empty=True)
        if "\0" in text:
            self.fail(key, "a path cannot hold a NUL byte")
        return Path(os.path.normpath(self.base / text))

    # -- references
    def event_type_codes(self, key: str, value, *, required: bool) -> tuple[int, ...]:
        names = self.strings(key, value)
        if required and not names:
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

    def list_ref(self, key: str, value) -> str:
        name = self.string(key, value, non_empty=True)
        if name not in self.lists:
            self.fail(key, f"unknown list {_show(name)} (not in [lists])")
        return name

    def list_refs(self, key: str, value) -> tuple[str, ...]:
        names = self.strings(key, value)
        for i, name in enumerate(names):
            self.list_ref(f"{key}[{i}]", name)
        return tuple(dict.fromkeys(names))

    def flag_mask(self, key: str, value) -> int:
        """Flag names -> their FLAG_BITS mask."""
        mask = 0
        for i, flag in enumerate(self.strings(key, value)):
            if flag not in FLAG_BITS:
                hint = difflib.get_close_matches(flag, FLAG_BITS, n=1)
                more = f"; did you mean {_show(hint[0])}?" if hint else f" (known: {', '.join(FLAG_BITS)})"
                self.fail(f"{key}[{i}]", f"unknown flag {_show(flag)}{more}")
            mask |= FLAG_BITS[flag]
        return mask

    def rules(self, key: str, value, known: tuple[str, ...]) -> frozenset[str]:
        names = self.strings(key, value)
        for i, name in enumerate(names):
            if name not in known:
                self.fail(f"{key}[{i}]", f"unknown rule {_show(name)} (known: {', '.join(known)})")
        return frozenset(names)

    # -- sections
    def config(self, doc: dict) -> Config:
        self.table("", doc, _SECTIONS)
        # [event_types] first: counters and campaigns may name custom types whatever the file order.
        self.read_event_types(doc.get("event_types", {}))
        self.lists = self.files("lists", doc.get("lists", {}), "list name")
        self.areas = self.files("areas", doc.get("areas", {}), "area name")
        counters = self.read_counters(doc.get("counters", {}))
        markers = self.read_markers(doc.get("markers", {}))
        engine = self.table("engine", doc.get("engine", {}), _ENGINE_KEYS)
        utc_offset_ms = 0
        if "utc_offset" in engine:
            utc_offset_ms = self.parsed("engine.utc_offset", engine["utc_offset"], parse_utc_offset)
        profiles = self.path_value("engine.profiles", engine["profiles"]) if "profiles" in engine else None
        max_pending = 10_000_000
        if "max_pending" in engine:
            max_pending = self.integer("engine.max_pending", engine["max_pending"], lo=1, hi=2**63 - 1)
        max_dead_letters = 100_000
        if "max_dead_letters" in engine:
            max_dead_letters = self.integer("engine.max_dead_letters", engine["max_dead_letters"], lo=0, hi=2**32 - 1)
        encoding = "utf-8"
        if "encoding" in engine:
            encoding = self.string("engine.encoding", engine["encoding"], non_empty=True)
            try:
                info = codecs.lookup(encoding)
            except LookupError:
                self.fail("engine.encoding", f"unknown encoding {_show(encoding)} (e.g. \"utf-8\", \"gbk\", \"gb18030\")")
            # base64, hex, zlib, rot_13 ... are codecs, but not of text; punycode and idna are
            # of domain names, not of files
            if not getattr(info, "_is_text_encoding", True) or info.name in ("punycode", "idna", "undefined"):
                self.fail("engine.encoding", f"{_show(encoding)} is not a text encoding (e.g. \"utf-8\", \"gbk\", "
                                             "\"gb18030\", \"utf-16\")")
        null_values = ("", "\\N")
        if "null_values" in engine:
            value = engine["null_values"]
            if not isinstance(value, list):
                self.wrong("engine.null_values", value, "an array of strings")
            for i, item in enumerate(value):
                self.string(f"engine.null_values[{i}]", item)
            null_values = tuple(value)
        campaigns = self.read_campaigns(doc.get("campaign", []))
        return Config(
            path=self.path.absolute(),
            utc_offset_ms=utc_offset_ms,
            profiles=profiles,
            max_pending=max_pending,
            max_dead_letters=max_dead_letters,
            encoding=encoding,
            null_values=null_values,
            lists=self.lists,
            areas=self.areas,
            policy=self.read_policy(doc.get("policy", {})),
            counters=counters,
            markers=markers,
            campaigns=campaigns,
            event_types=self.event_types,
            output=self.read_output(doc.get("output", {})),
            channel_budgets=self.read_channels(doc.get("channels", {}), campaigns),
        )

    def read_event_types(self, value) -> None:
        section = self.table("event_types", value)
        by_code = {code: name for name, code in EVENT_TYPES.items()}
        for name, code in section.items():
            key = f"event_types.{name}"
            if not _EVENT_TYPE_NAME.fullmatch(name):
                self.fail(key, f"{_show(name)} is not an upper-case name like \"TOP_UP\"")
            if name in EVENT_TYPES:
                self.fail(key, f"{name} is a builtin event type (code {EVENT_TYPES[name]})")
            code = self.integer(key, code, lo=CUSTOM_TYPE_CODES.start, hi=CUSTOM_TYPE_CODES.stop - 1)
            if code in by_code:
                self.fail(key, f"code {code} is already {by_code[code]}")
            by_code[code] = name
            self.event_types[name] = code

    def files(self, section: str, value, what: str) -> dict[str, Path]:
        files = {}
        for name, file in self.table(section, value).items():
            key = f"{section}.{name}"
            self.name(key, name, what)
            files[name] = self.path_value(key, file)
        return files

    def read_counters(self, value) -> tuple[CounterSpec, ...]:
        counters = []
        for name, spec in self.table("counters", value).items():
            key = f"counters.{name}"
            self.name(key, name, "counter name")
            spec = self.table(key, spec, _COUNTER_KEYS)
            if "on" not in spec:
                self.fail(f"{key}.on", "missing (a counter needs the event types it counts)")
            flags = self.flag_mask(f"{key}.flags", spec.get("flags", []))
            add = spec.get("add", "count")
            if add == 1 and not isinstance(add, bool):
                add = "count"
            if add not in COUNTER_ADD:
                self.fail(f"{key}.add", f'{_show(add)} is not 1, "dur" or "dur_minutes"')
            window = spec.get("window")
            period = spec.get("period")
            if period is not None:
                if window is not None:
                    self.fail(f"{key}.period", "replaces window: give one of them, not both")
                self.string(f"{key}.period", period)
                if period not in COUNTER_PERIODS:
                    hint = difflib.get_close_matches(period, COUNTER_PERIODS, n=1)
                    more = f"; did you mean {_show(hint[0])}?" if hint else ""
                    self.fail(f"{key}.period", f"{_show(period)} is not one of day, week, month{more}")
            counters.append(CounterSpec(
                name=name,
                on=self.event_type_codes(f"{key}.on", spec["on"], required=True),
                flags=flags,
                add=add,
                window_ms=None if window is None else self.duration(f"{key}.window", window, positive=True),
                period=period,
                arg=None if "arg" not in spec else self.integer(f"{key}.arg", spec["arg"], lo=0, hi=2**63 - 1),
            ))
        self.counters = {c.name: c for c in counters}
        return tuple(counters)

    def read_markers(self, value) -> tuple[MarkerSpec, ...]:
        markers = []
        for name, spec in self.table("markers", value).items():
            key = f"markers.{name}"
            self.name(key, name, "marker name")
            spec = self.table(key, spec, _MARKER_KEYS)
            if "on" not in spec:
                self.fail(f"{key}.on", "missing (a marker needs the event types that set it)")
            markers.append(MarkerSpec(
                name=name,
                on=self.event_type_codes(f"{key}.on", spec["on"], required=True),
                flags=self.flag_mask(f"{key}.flags", spec.get("flags", [])),
                arg=None if "arg" not in spec else self.integer(f"{key}.arg", spec["arg"], lo=0, hi=2**63 - 1),
            ))
        self.markers = {m.name: m for m in markers}
        return tuple(markers)

    def marker_ref(self, key: str, value) -> str:
        name = self.string(key, value, non_empty=True)
        if name not in self.markers:
            hint = difflib.get_close_matches(name, self.markers, n=1)
            self.fail(key, f"unknown marker {_show(name)}"
                           + (f"; did you mean {_show(hint[0])}?" if hint else " (not in [markers])"))
        return name

    def marker_conditions(self, key: str, value) -> tuple[MarkerCondition, ...]:
        """One `{ marker, within }` table or an array of them."""
        if isinstance(value, dict):
            items = [(key, value)]
        elif isinstance(value, list):
            items = [(f"{key}[{i}]", item) for i, item in enumerate(value)]
        else:
            self.wrong(key, value, "a table { marker, within } or an array of them")
        conditions = []
        for k, item in items:
            item = self.table(k, item, _MARKER_CONDITION_KEYS)
            for part in _MARKER_CONDITION_KEYS:
                if part not in item:
                    self.fail(f"{k}.{part}", "missing (each entry needs marker and within)")
            conditions.append(MarkerCondition(self.marker_ref(f"{k}.marker", item["marker"]),
                                              self.duration(f"{k}.within", item["within"], positive=True)))
        return tuple(conditions)

    def read_policy(self, value) -> PolicySpec:
        policy = self.table("policy", value, _POLICY_KEYS)
        quiet = policy.get("quiet_hours")
        per_day = policy.get("max_per_day")
        return PolicySpec(
            blacklist=self.list_refs("policy.blacklist", policy.get("blacklist", [])),
            quiet_hours=None if quiet is None else self.parsed("policy.quiet_hours", quiet, parse_hours),
            min_gap_ms=self.duration("policy.min_gap", policy["min_gap"]) if "min_gap" in policy else 0,
            # UINT32_MAX itself is the core's "no cap", so a cap stays below it; 0 pauses contacts.
            max_per_day=None if per_day is None else self.integer("policy.max_per_day", per_day,
                                                                  lo=0, hi=UINT32_MAX - 1),
            max_in_window=self.read_max_in_window(policy["max_in_window"]) if "max_in_window" in policy else None,
            global_holdout=self.holdout("policy.global_holdout", policy["global_holdout"])
            if "global_holdout" in policy else 0.0,
        )

    def read_max_in_window(self, value) -> tuple[int, int]:
        key = "policy.max_in_window"
        spec = self.table(key, value, _WINDOW_KEYS)
        for part in _WINDOW_KEYS:
            if part not in spec:
                self.fail(f"{key}.{part}", "missing (max_in_window needs contacts and window)")
        return (self.integer(f"{key}.contacts", spec["contacts"], lo=1, hi=MAX_WINDOW_CONTACTS),
                self.duration(f"{key}.window", spec["window"], positive=True))

    def read_channels(self, value, campaigns) -> dict[str, int]:
        """`[channels]`: name = { daily_budget = N }, only for channels some campaign uses."""
        used = list(dict.fromkeys(c.channel for c in campaigns))
        budgets = {}
        for name, spec in self.table("channels", value).items():
            key = f"channels.{name}"
            if name not in used:
                hint = difflib.get_close_matches(name, used, n=1)
                more = f"; did you mean {_show(hint[0])}?" if hint else \
                    f" (channels in use: {', '.join(used)})" if used else " (no campaign uses a channel)"
                self.fail(key, f"no campaign uses channel {_show(name)}{more}")
            spec = self.table(key, spec, _CHANNEL_KEYS)
            if "daily_budget" in spec:
                budgets[name] = self.integer(f"{key}.daily_budget", spec["daily_budget"], lo=1, hi=MAX_BUDGET)
        return budgets

    def read_output(self, value) -> OutputSpec:
        output = self.table("output", value, _OUTPUT_KEYS)
        defaults = OutputSpec()
        fmt = self.string("output.format", output.get("format", defaults.format))
        if fmt not in OUTPUT_FORMATS:
            self.fail("output.format", f"{_show(fmt)} is not one of {', '.join(OUTPUT_FORMATS)}")
        max_age_ms = defaults.max_age_ms
        if "max_age" in output:
            # "0" (with or without a unit) turns rotation by age off.
            age = output["max_age"]
            max_age_ms = 0 if age in ("0", 0) and not isinstance(age, bool) \
                else self.duration("output.max_age", age)
            max_age_ms = max_age_ms or None
        max_records = defaults.max_records
        if "max_records" in output:
            max_records = self.integer("output.max_records", output["max_records"], lo=1, hi=2**63 - 1)
        return OutputSpec(format=fmt, max_records=max_records, max_age_ms=max_age_ms)

    def read_campaigns(self, value) -> tuple[CampaignSpec, ...]:
        if not isinstance(value, list):
            self.fail("campaign", f"expected [[campaign]] tables (an array of tables), got {_kind(value)}")
        campaigns: list[CampaignSpec] = []
        seen: dict[str, int] = {}
        for i, table in enumerate(value):
            campaign = self.read_campaign(i, table)
            if campaign.id in seen:
                self.fail(f'campaign[{i}] (id "{campaign.id}").id',
                          f"duplicate campaign id (also campaign[{seen[campaign.id]}])")
            seen[campaign.id] = i
            campaigns.append(campaign)
        campaigns.sort(key=lambda c: (-c.priority, c.id))
        return tuple(campaigns)

    def read_campaign(self, i: int, value) -> CampaignSpec:
        key = f"campaign[{i}]"
        c = self.table(key, value)
        if "id" not in c:
            self.fail(f"{key}.id", "missing (every campaign needs an id)")
        cid = self.string(f"{key}.id", c["id"], non_empty=True)
        self.name(f"{key}.id", cid, "campaign id")
        if cid in RESERVED_CAMPAIGN_IDS:
            self.fail(f"{key}.id", f"{_show(cid)} is reserved (the programme's global control group)")
        key = f'{key} (id "{cid}")'
        self.table(key, c, _CAMPAIGN_KEYS)
        for required in ("on", "channel"):
            if required not in c:
                self.fail(f"{key}.{required}", "missing (required in every campaign)")

        def opt(name, read):
            return read(f"{key}.{name}", c[name]) if name in c else None

        channel = self.string(f"{key}.channel", c["channel"], non_empty=True)
        if not _CHANNEL.fullmatch(channel):
            self.fail(f"{key}.channel", f"{_show(channel)} is not a channel name (letters, digits, _ -)")
        if channel.lower() in RESERVED_CHANNELS:
            self.fail(f"{key}.channel", f"{_show(channel)} is reserved for the output directory of that name")

        where = opt("where", lambda k, v: self.string(k, v, non_empty=True))
        if where is not None:
            try:
                where_lang.parse(where)
            except where_lang.WhereError as e:
                self.fail(f"{key}.where", str(e))

        counter, at_least = None, 0
        if "counter" in c:
            ck = f"{key}.counter"
            condition = self.table(ck, c["counter"], _CONDITION_KEYS)
            for part in _CONDITION_KEYS:
                if part not in condition:
                    self.fail(f"{ck}.{part}", "missing (a counter condition needs name and at_least)")
            counter = self.string(f"{ck}.name", condition["name"], non_empty=True)
            if counter not in self.counters:
                self.fail(f"{ck}.name", f"unknown counter {_show(counter)} (not in [counters])")
            at_least = self.integer(f"{ck}.at_least", condition["at_least"], lo=0, hi=UINT32_MAX)

        when = opt("when", lambda k, v: self.string(k, v, non_empty=True))
        if when is not None:
            try:
                when_lang.parse(when, self.counters)
            except when_lang.WhenError as e:
                self.fail(f"{key}.when", str(e))
        anniversary = opt("anniversary", lambda k, v: self.string(k, v, non_empty=True))
        if anniversary is not None and (anniversary == "tags" or anniversary == "msisdn"):
            self.fail(f"{key}.anniversary", f"{_show(anniversary)} is not a date attribute of the profiles")

        if "variants" in c and "template" in c:
            self.fail(f"{key}.variants", "replaces template: give one of them, not both")

        holdout = 0.0
        if "holdout" in c:
            holdout = self.holdout(f"{key}.holdout", c["holdout"])

        spec = CampaignSpec(
            id=cid,
            on=self.event_type_codes(f"{key}.on", c["on"], required=True),
            channel=channel,
            priority=opt("priority", lambda k, v: self.integer(k, v, lo=-INT32_MAX, hi=INT32_MAX)) or 0,
            audience=opt("audience", self.list_ref),
            peer_in=opt("peer_in", self.list_ref),
            exclude=opt("exclude", self.list_refs) or (),
            where=where,
            area=opt("area", self.area_ref),
            enter=opt("enter", self.boolean) or False,
            hours=opt("hours", lambda k, v: self.parsed(k, v, parse_hours)),
            days=ALL_DAYS if "days" not in c else self.parsed(f"{key}.days", c["days"], parse_days),
            counter=counter,
            at_least=at_least,
            when=when,
            anniversary=anniversary,
            delay_ms=opt("delay", self.duration) or 0,
            recheck=opt("recheck", lambda k, v: self.rules(k, v, RECHECK_RULES)) or frozenset(),
            cooldown_ms=opt("cooldown", self.duration) or 0,
            once=opt("once", self.boolean) or False,
            exempt=opt("exempt", lambda k, v: self.rules(k, v, EXEMPT_RULES)) or frozenset(),
            template=opt("template", self.string) or "",
            holdout=holdout,
            convert_on=opt("convert_on", lambda k, v: self.event_type_codes(k, v, required=False)) or (),
            convert_arg=opt("convert_arg", lambda k, v: self.integer(k, v, lo=0, hi=2**63 - 1)),
            convert_within_ms=opt("convert_within", lambda k, v: self.duration(k, v, positive=True)),
            stop_after=opt("stop_after", lambda k, v: self.integer(k, v, lo=1, hi=UINT32_MAX)),
            flags=opt("flags", self.flag_mask) or 0,
            arg=opt("arg", lambda k, v: self.integer(k, v, lo=0, hi=2**63 - 1)),
            enabled=True if "enabled" not in c else self.boolean(f"{key}.enabled", c["enabled"]),
            start=opt("start", lambda k, v: self.parsed(k, v, parse_date)),
            end=opt("end", lambda k, v: self.parsed(k, v, parse_date)),
            after=opt("after", self.marker_conditions) or (),
            not_after=opt("not_after", self.marker_conditions) or (),
            absent=opt("absent", lambda k, v: tuple(dict.fromkeys(
                self.marker_ref(f"{k}[{i}]", name) for i, name in enumerate(self.strings(k, v))))) or (),
            daily_budget=opt("daily_budget", lambda k, v: self.integer(k, v, lo=1, hi=MAX_BUDGET)),
            total_budget=opt("total_budget", lambda k, v: self.integer(k, v, lo=1, hi=MAX_BUDGET)),
            variants=opt("variants", self.variants) or (),
        )
        self.consistent(key, spec)
        return spec

    def variants(self, key: str, value) -> tuple[VariantSpec, ...]:
        """`variants`: an array of 1 to MAX_VARIANTS tables { template, weight }, templates distinct."""
        if not isinstance(value, list):
            self.wrong(key, value, "an array of tables { template, weight }")
        if not 1 <= len(value) <= MAX_VARIANTS:
            self.fail(key, f"{len(value)} variants: give 1 to {MAX_VARIANTS}")
        variants: list[VariantSpec] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(value):
            k = f"{key}[{i}]"
            item = self.table(k, item, _VARIANT_KEYS)
            for part in _VARIANT_KEYS:
                if part not in item:
                    self.fail(f"{k}.{part}", "missing (each variant needs template and weight)")
            template = self.string(f"{k}.template", item["template"], non_empty=True)
            if template in seen:
                self.fail(f"{k}.template", f"{_show(template)} is also variants[{seen[template]}]'s template "
                                           "(each variant a distinct template)")
            seen[template] = i
            variants.append(VariantSpec(template, self.integer(f"{k}.weight", item["weight"],
                                                               lo=1, hi=MAX_VARIANT_WEIGHT)))
        return tuple(variants)

    def area_ref(self, key: str, value) -> str:
        name = self.string(key, value, non_empty=True)
        if name not in self.areas:
            self.fail(key, f"unknown area {_show(name)} (not in [areas])")
        return name

    def holdout(self, key: str, value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.wrong(key, value, "a number between 0 and 1")
        if not 0 <= value <= 1:
            self.fail(key, f"{value} is not between 0 and 1")
        # The control threshold works in units of 0.0001 (SPEC §3 step 7); finer is a mistake.
        scaled = value * 10_000
        if abs(scaled - round(scaled)) > 1e-9:
            self.fail(key, f"{value} is not a multiple of 0.0001")
        return float(value)

    def consistent(self, key: str, c: CampaignSpec) -> None:
        """Keys that only make sense together."""
        if c.enter and c.area is None:
            self.fail(f"{key}.enter", "needs an area to enter")
        if "area" in c.recheck and c.area is None:
            self.fail(f"{key}.recheck", '"area" needs an area')
        if c.absent and not c.delay_ms:
            self.fail(f"{key}.absent", "needs a non-zero delay (the markers are looked at when the delayed action is due)")
        if c.start is not None and c.end is not None and c.end < c.start:
            self.fail(f"{key}.end", f"{c.end.isoformat()} is before start {c.start.isoformat()}")
        if "audience" in c.recheck and c.audience is None:
            self.fail(f"{key}.recheck", '"audience" needs an audience')
        if not c.convert_on:
            for name, value in (("convert_arg", c.convert_arg), ("convert_within", c.convert_within_ms)):
                if value is not None:
                    self.fail(f"{key}.{name}", "needs convert_on")
