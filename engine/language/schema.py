"""The configuration's schema: every section and key of the TOML file (SPEC §2), declared once.

Each key is a `Field`: its value type (with bounds, allowed values or what it refers to),
whether it is required and why, its default as an operator would write it, and a one-line
doc. Checks that involve two keys are `Rule`s of their section. `engine.language.config`
reads a document by walking `SECTIONS` (so `load_config`, `sigmatch check` and the API
validate by this table), and `describe()` gives the same table as plain data for anything
that renders forms or documentation (the web console).

This module declares; it does not parse. What a duration or an hours string is, and the
exact wording of each error, live in `engine.language.config`, which interprets these types.

    SECTIONS: tuple[Section, ...]      # in the order docs/configuration.md presents them
    Section(name, shape, doc, fields | key + value, rules, builds)
      shape: "table"            [engine]: fixed keys
             "map"              [lists]: name = value
             "tables by name"   [counters]: name = { fixed keys }
             "array of tables"  [[campaign]]: one table of fixed keys per entry
    Field(key, type, doc, required, default, attr)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields as dataclass_fields
from typing import Any, Callable, Optional, Union

# ============================================================================ bounds and names
MS_PER = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_DURATION_MS = 36_500 * MS_PER["d"]      # 100 years: anything longer is a typo
INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1                      # counters saturate here, so at_least cannot exceed it
INT64_MAX = 2**63 - 1
MAX_BUDGET = INT64_MAX
MAX_WINDOW_CONTACTS = 16                    # max_in_window.contacts: the contact times kept per subscriber
MAX_VARIANTS = 16                           # a campaign's variants; the action record keeps the index in a byte
MAX_VARIANT_WEIGHT = 10_000
CUSTOM_TYPE_CODES = range(32, 64)

FLAG_NAMES = ("long_distance", "roaming", "international")
RECHECK_RULES = ("area", "powered_on", "audience", "hours")
EXEMPT_RULES = ("min_gap", "max_per_day", "quiet_hours", "max_in_window")
COUNTER_ADD = ("count", "dur", "dur_minutes")
COUNTER_PERIODS = ("day", "week", "month")
OUTPUT_FORMATS = ("csv", "jsonl", "parquet")
RESERVED_CAMPAIGN_IDS = ("global",)        # the programme-wide control group's name in the holdout hash
RESERVED_CHANNELS = ("conversions", "dead_letters")   # directories of OUT that are not channels

NAME = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)             # campaign ids, list/area/counter/marker names
# a campaign id names a page of the console (/campaigns/ID): "." and ".." would be read as
# the address's own dot segments, so an id is more than dots
NAME_LONGEST = 128
CAMPAIGN_ID = re.compile(r"(?!\.+\Z)[A-Za-z0-9_.-]+", re.ASCII)
CHANNEL = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)           # becomes a directory name
EVENT_TYPE_NAME = re.compile(r"[A-Z][A-Z0-9_]*", re.ASCII)


# ============================================================================ value types
# Frozen dataclasses, so a schema is plain data: `describe()` turns each into a dict of its
# fields plus its class name. Number-like types carry `lo` and `hi` in the unit the
# compiled configuration uses (milliseconds for durations).

@dataclass(frozen=True)
class Integer:
    """A TOML integer (not a boolean) from lo to hi inclusive."""
    lo: int
    hi: int


@dataclass(frozen=True)
class Fraction:
    """A number from lo to hi inclusive, a multiple of `step` (a holdout: SPEC §3 step 7
    works in units of 0.0001)."""
    lo: float = 0.0
    hi: float = 1.0
    step: float = 0.0001


@dataclass(frozen=True)
class Duration:
    """A string "<whole number><s|m|h|d>", read as milliseconds from lo to hi."""
    positive: bool = False          # "0s" refused
    zero_turns_off: bool = False    # "0", 0 or any zero duration means "off" (output.max_age)

    @property
    def lo(self) -> int:
        return 1 if self.positive else 0

    @property
    def hi(self) -> int:
        return MAX_DURATION_MS


@dataclass(frozen=True)
class Boolean:
    """true or false."""


@dataclass(frozen=True)
class Text:
    """A string; `non_empty` refuses one of white space only."""
    non_empty: bool = False


@dataclass(frozen=True)
class Strings:
    """An array of strings, "" included."""


@dataclass(frozen=True)
class Expression:
    """A string in one of the engine's small languages, parsed (never evaluated) when read."""
    language: str                   # "where" | "when"


@dataclass(frozen=True)
class Hours:
    """A string "HH:MM-HH:MM" of local time, wrapping midnight when start > end."""


@dataclass(frozen=True)
class Days:
    """A string of weekdays and ranges, "mon-fri" or "sat,sun"."""


@dataclass(frozen=True)
class Date:
    """A local date, "YYYY-MM-DD" or a TOML date."""


@dataclass(frozen=True)
class UtcOffset:
    """A string "+HH:MM" or "-HH:MM", within ±14:00."""


@dataclass(frozen=True)
class FilePath:
    """A non-empty string, a path relative to the configuration file's folder."""


@dataclass(frozen=True)
class Encoding:
    """The name of a text codec Python knows."""


@dataclass(frozen=True)
class Choice:
    """One of `values` (strings). `synonyms` are other spellings, e.g. (1, "count");
    `hint` adds "did you mean" to the error when a value is close."""
    values: tuple
    synonyms: tuple = ()
    hint: bool = True


@dataclass(frozen=True)
class Name:
    """A name: a key of a section, or a value that names something (a campaign id, a
    channel). `what` completes the error "... is not <what>"."""
    pattern: re.Pattern
    what: str
    reserved: tuple[str, ...] = ()
    reserved_why: str = ""
    fold_case: bool = False         # reserved in any letter case
    # characters at most: a name is written into every action record, metric label and
    # console address, and a channel's is a directory name (255 bytes on most file systems)
    longest: int = NAME_LONGEST


@dataclass(frozen=True)
class EventTypes:
    """An array of event type names, builtin or from [event_types]; repeats merged."""
    at_least_one: bool


@dataclass(frozen=True)
class Flags:
    """An array of event flag names."""
    values: tuple[str, ...] = FLAG_NAMES


@dataclass(frozen=True)
class Rules:
    """An array of rule names, each one of `values`."""
    values: tuple[str, ...]


@dataclass(frozen=True)
class Ref:
    """The name of something declared in another section: a name of that section ("lists",
    "areas", "counters", "markers") or, with `key`, a value of that key in its tables (the
    channels the campaigns use). `many`: an array of them, repeats merged."""
    section: str
    many: bool = False
    key: Optional[str] = None


@dataclass(frozen=True)
class Attribute:
    """The name of a profile attribute (a string column), checked when profiles are loaded."""


@dataclass(frozen=True)
class Table:
    """An inline table of fixed keys; `missing` is the error's reason when one is left out
    (all of them are required). `builds`: the class of engine.language.config it becomes,
    else a tuple of the values in field order. `array`: "" one table; "or" one table or an
    array of them; "only" an array of them, of `items` (lo, hi) entries, no two sharing the
    value of `distinct`. An array reads as a tuple; `item` names one entry in messages."""
    fields: tuple["Field", ...]
    missing: str
    builds: Optional[str] = None
    array: str = ""
    items: Optional[tuple[int, int]] = None
    distinct: Optional[str] = None
    item: str = "entry"


ValueType = Union[Integer, Fraction, Duration, Boolean, Text, Strings, Expression, Hours, Days, Date, UtcOffset,
                  FilePath, Encoding, Choice, Name, EventTypes, Flags, Rules, Ref, Attribute, Table]
NUMBER_TYPES = (Integer, Fraction, Duration)


# ============================================================================ fields, rules, sections

@dataclass(frozen=True)
class Field:
    """One key. `required`: None, or the reason given when it is missing. `default`: the
    value as written in TOML that an absent key means (None: no value, the spec's own
    default, e.g. None or an empty tuple). `attr`: the
    attribute of the compiled spec it becomes (default: the key); a tuple spreads a table's
    values over several attributes."""
    key: str
    type: ValueType
    doc: str
    required: Optional[str] = None
    default: Any = None
    attr: Union[str, tuple[str, ...], None] = None

    @property
    def target(self) -> Union[str, tuple[str, ...]]:
        return self.attr or self.key


class Values(dict):
    """The values of one table as read, by key, defaults filled in (None where there is
    none); `given` holds the keys the table itself gave."""

    def __init__(self, given=()):
        super().__init__()
        self.given = frozenset(given)


@dataclass(frozen=True)
class Rule:
    """A check across keys of one table, made after every key has been read. `broken`
    takes the table's `Values` and says whether the rule is broken; the error names `key`
    and says `message` (str.format with those values)."""
    key: str
    needs: tuple[str, ...]          # the other keys involved
    doc: str
    broken: Callable[[dict], bool] = field(compare=False)
    message: Optional[str] = None   # default: doc

    @property
    def error(self) -> str:
        return self.message or self.doc


@dataclass(frozen=True)
class Section:
    name: str
    shape: str                      # "table" | "map" | "tables by name" | "array of tables"
    doc: str
    fields: tuple[Field, ...] = ()  # the keys of each table (all shapes but "map")
    key: Optional[ValueType] = None     # a map's or tables-by-name's key (a name)
    value: Optional[ValueType] = None   # a map's value
    rules: tuple[Rule, ...] = ()
    builds: Optional[str] = None    # the class of engine.language.config each table becomes

    def field(self, key: str) -> Field:
        for f in self.fields:
            if f.key == key:
                return f
        raise KeyError(key)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f.key for f in self.fields)


# ---------------------------------------------------------------------------- shared pieces
_ARG = Integer(0, INT64_MAX)
_BUDGET = Integer(1, MAX_BUDGET)
_MARKER_CONDITION = Table(
    fields=(Field("marker", Ref("markers"), "A marker name from [markers].",
                  required="each entry needs marker and within"),
            Field("within", Duration(positive=True), "How recent the marker must be (or must not be).",
                  required="each entry needs marker and within", attr="within_ms")),
    missing="each entry needs marker and within", builds="MarkerCondition", array="or")


SECTIONS: tuple[Section, ...] = (
    Section("engine", "table", "How the engine reads its inputs and bounds its state.", fields=(
        Field("utc_offset", UtcOffset(), "Local time = event time + this, for hours, days, quiet hours and daily caps.",
              default="+00:00", attr="utc_offset_ms"),
        Field("profiles", FilePath(), "The subscriber profile snapshot, .csv or .parquet (required to build "
              "an engine)."),
        Field("max_pending", Integer(1, INT64_MAX), "The most delayed actions that may wait at once; more are dropped "
              "as overflow.", default=10_000_000),
        Field("max_dead_letters", Integer(0, 2**32 - 1), "Dead-letter records written per 64 MiB span of stream "
              "offsets; past it bad events are only counted.", default=100_000),
        Field("encoding", Encoding(), "The text encoding of the profile, list and area files.", default="utf-8"),
        Field("null_values", Strings(), "Values read as null in profile CSV columns.", default=["", "\\N"]),
    )),
    Section("event_types", "map", "Custom event types: NAME = code, codes 32 to 63.",
            key=Name(EVENT_TYPE_NAME, 'an upper-case name like "TOP_UP"'),
            value=Integer(CUSTOM_TYPE_CODES.start, CUSTOM_TYPE_CODES.stop - 1)),
    Section("lists", "map", "Subscriber lists: name = file (.txt, .csv or .roar).",
            key=Name(NAME, "a valid list name (letters, digits, _ . -)"), value=FilePath()),
    Section("areas", "map", "Areas: name = file of cell ids (.txt or .csv).",
            key=Name(NAME, "a valid area name (letters, digits, _ . -)"), value=FilePath()),
    Section("policy", "table", "The contact policy, applied to every campaign.", builds="PolicySpec", fields=(
        Field("blacklist", Ref("lists", many=True), "Subscribers in these lists are never contacted.", default=[]),
        Field("quiet_hours", Hours(), "An action due inside these local hours is dropped."),
        Field("min_gap", Duration(), "The least time between two contacts of one subscriber, by any campaign.",
              default="0s", attr="min_gap_ms"),
        # UINT32_MAX itself is the core's "no cap", so a cap stays below it; 0 pauses contacts.
        Field("max_per_day", Integer(0, UINT32_MAX - 1), "The most contacts of one subscriber per local day."),
        Field("max_in_window", Table(
            fields=(Field("contacts", Integer(1, MAX_WINDOW_CONTACTS), "The cap: fewer than this many contacts.",
                          required="max_in_window needs contacts and window"),
                    Field("window", Duration(positive=True), "The rolling window the contacts are counted in.",
                          required="max_in_window needs contacts and window")),
            missing="max_in_window needs contacts and window"),
            "A rolling cap: fewer than `contacts` contacts of a subscriber within `window`."),
        Field("global_holdout", Fraction(), "The programme's control group: the fraction of subscribers never sent "
              "anything.", default=0),
    )),
    Section("counters", "tables by name", "Per-subscriber usage counters: name = { on, ... }.", builds="CounterSpec",
            key=Name(NAME, "a valid counter name (letters, digits, _ . -)"), fields=(
        Field("on", EventTypes(at_least_one=True), "The event types it counts.",
              required="a counter needs the event types it counts"),
        Field("flags", Flags(), "Only events with every one of these flags count.", default=[]),
        Field("add", Choice(COUNTER_ADD, synonyms=((1, "count"),), hint=False),
              'What each event adds: 1 (or "count"), "dur" seconds or "dur_minutes" started minutes.',
              default="count"),
        Field("window", Duration(positive=True), "A fixed window from the first event counted; the counter "
              "resets after it.", attr="window_ms"),
        Field("period", Choice(COUNTER_PERIODS), "Counts within the local calendar day, week or month."),
        Field("arg", _ARG, "Only events whose arg equals this count."),
    ), rules=(
        Rule("period", ("window",), "replaces window: give one of them, not both",
             lambda v: v["period"] is not None and v["window"] is not None),
    )),
    Section("markers", "tables by name", "Per-subscriber markers, the time of the last event of a kind: "
            "name = { on, ... }.", builds="MarkerSpec",
            key=Name(NAME, "a valid marker name (letters, digits, _ . -)"), fields=(
        Field("on", EventTypes(at_least_one=True), "The event types that set it.",
              required="a marker needs the event types that set it"),
        Field("flags", Flags(), "Only events with every one of these flags set it.", default=[]),
        Field("arg", _ARG, "Only events whose arg equals this set it."),
    )),
    Section("campaign", "array of tables", "The campaigns, one [[campaign]] table each.", builds="CampaignSpec",
            fields=(
        # -- who and when
        Field("id", Name(CAMPAIGN_ID, "a valid campaign id (letters, digits, _ . -, not dots alone)",
                         reserved=RESERVED_CAMPAIGN_IDS,
                         reserved_why="(the programme's global control group)"),
              "The campaign's name in the output files and stats; unique.", required="every campaign needs an id"),
        Field("priority", Integer(-INT32_MAX, INT32_MAX), "Higher goes first when several campaigns match one event.",
              default=0),
        Field("on", EventTypes(at_least_one=True), "The event types that trigger it.",
              required="required in every campaign"),
        Field("flags", Flags(), "Every one of these flags must be set in the trigger's flags.", default=[]),
        Field("arg", _ARG, "The trigger's arg must equal this."),
        Field("enabled", Boolean(), "false: it matches nothing and its pending actions are dropped; its state is kept.",
              default=True),
        Field("start", Date(), "The first local date it acts on."),
        Field("end", Date(), "The last local date it acts on."),
        Field("audience", Ref("lists"), "The subscriber must be in this list."),
        Field("peer_in", Ref("lists"), "The event's peer must be in this list."),
        Field("exclude", Ref("lists", many=True), "The subscriber must be in none of these lists.", default=[]),
        Field("where", Expression("where"), "A condition on the subscriber's profile attributes."),
        Field("area", Ref("areas"), "The event's cell must be in this area."),
        Field("enter", Boolean(), "true: only when the subscriber moves into the area.", default=False),
        Field("hours", Hours(), "The trigger's local time of day must be within these hours."),
        Field("days", Days(), "The trigger's local weekday must be one of these.", default="mon-sun"),
        Field("counter", Table(
            fields=(Field("name", Ref("counters"), "A counter from [counters].",
                          required="a counter condition needs name and at_least"),
                    Field("at_least", Integer(0, UINT32_MAX), "The least value, after this event's own increment.",
                          required="a counter condition needs name and at_least")),
            missing="a counter condition needs name and at_least"),
            "The named counter must be at least at_least.", attr=("counter", "at_least")),
        Field("when", Expression("when"), "A comparison of counters, e.g. \"ld_in >= 3 * ld_out + 2\"."),
        Field("anniversary", Attribute(), "The trigger's local month and day must equal those of this profile date."),
        Field("after", _MARKER_CONDITION, "A sequence: each marker set less than within before the trigger.",
              default=[]),
        Field("not_after", _MARKER_CONDITION, "Look-back absence: each marker unset or at least within before "
              "the trigger.", default=[]),
        Field("stop_after", Integer(1, UINT32_MAX), "Stop after this many contacts in a row without a conversion."),
        Field("once", Boolean(), "true: a subscriber ever contacted by it is never matched again.", default=False),
        Field("cooldown", Duration(), "No contact of it within this long after the subscriber's last one.",
              default="0s", attr="cooldown_ms"),
        # -- delay and recheck
        Field("delay", Duration(), "The action is emitted this long after the trigger.", default="0s",
              attr="delay_ms"),
        Field("absent", Ref("markers", many=True), "Forward absence: dropped when due if one of these markers was "
              "set after the trigger.", default=[]),
        Field("recheck", Rules(RECHECK_RULES), "Conditions checked again when a delayed action falls due.",
              default=[]),
        # -- policy exemptions and budgets
        Field("exempt", Rules(EXEMPT_RULES), "Contact-policy rules this campaign ignores.", default=[]),
        Field("daily_budget", _BUDGET, "Its sends per local day must be fewer than this."),
        Field("total_budget", _BUDGET, "Its sends ever must be fewer than this."),
        # -- what is written
        Field("channel", Name(CHANNEL, "a channel name (letters, digits, _ -)", reserved=RESERVED_CHANNELS,
                              reserved_why="for the output directory of that name", fold_case=True),
              "The kind of action; its files go to OUT/<channel>/.", required="required in every campaign"),
        Field("template", Text(), "Copied into the template column of every action.", default=""),
        Field("variants", Table(
            fields=(Field("template", Text(non_empty=True), "This variant's template.",
                          required="each variant needs template and weight"),
                    Field("weight", Integer(1, MAX_VARIANT_WEIGHT), "Its share of subscribers: weight / the sum "
                          "of the weights.", required="each variant needs template and weight")),
            missing="each variant needs template and weight", builds="VariantSpec", array="only",
            items=(1, MAX_VARIANTS), distinct="template", item="variant"),
            "Weighted templates in place of template, one per subscriber by crc32, the same for every kind "
            "of contact."),
        Field("holdout", Fraction(), "The fraction of subscribers kept as a control group.", default=0),
        # -- conversions
        Field("convert_on", EventTypes(at_least_one=False), "Event types that count as a response.", default=[]),
        Field("convert_arg", _ARG, "Only a convert_on event whose arg equals this counts."),
        Field("convert_within", Duration(positive=True), "A conversion counts only this soon after the contact.",
              attr="convert_within_ms"),
    ), rules=(
        Rule("enter", ("area",), "needs an area to enter", lambda v: v["enter"] and v["area"] is None),
        Rule("recheck", ("area",), '"area" needs an area', lambda v: "area" in v["recheck"] and v["area"] is None),
        Rule("absent", ("delay",), "needs a non-zero delay (the markers are looked at when the delayed action is due)",
             lambda v: v["absent"] and not v["delay"]),
        Rule("end", ("start",), "on or after start",
             lambda v: v["start"] is not None and v["end"] is not None and v["end"] < v["start"],
             message="{end} is before start {start}"),
        Rule("recheck", ("audience",), '"audience" needs an audience',
             lambda v: "audience" in v["recheck"] and v["audience"] is None),
        Rule("variants", ("template",), "replaces template: give one of them, not both",
             lambda v: "variants" in v.given and "template" in v.given),
        Rule("convert_arg", ("convert_on",), "needs convert_on",
             lambda v: v["convert_arg"] is not None and not v["convert_on"]),
        Rule("convert_within", ("convert_on",), "needs convert_on",
             lambda v: v["convert_within"] is not None and not v["convert_on"]),
    )),
    Section("channels", "tables by name", "Per-channel settings, for channels some campaign uses: "
            "name = { daily_budget }.", key=Ref("campaign", key="channel"), fields=(
        Field("daily_budget", _BUDGET, "The sends of all its campaigns per local day must be fewer than this."),
    )),
    Section("output", "table", "How the action, conversion and dead-letter files are written.", builds="OutputSpec",
            fields=(
        Field("format", Choice(OUTPUT_FORMATS), "The file format.", default="csv"),
        Field("max_records", Integer(1, INT64_MAX), "A file is complete after this many records.", default=100_000),
        Field("max_age", Duration(zero_turns_off=True), "A file is complete before a record this much (event time) "
              "newer than its first; 0 turns this off.", default="1h", attr="max_age_ms"),
    )),
)

SECTION: dict[str, Section] = {s.name: s for s in SECTIONS}


def all_fields(fields: tuple[Field, ...] = None, prefix: str = ""):
    """(path, Field) of every key, nested tables' keys included ("campaign.counter.name"),
    walking SECTIONS when `fields` is None."""
    if fields is None:
        for s in SECTIONS:
            yield from all_fields(s.fields, s.name + ".")
        return
    for f in fields:
        yield prefix + f.key, f
        if isinstance(f.type, Table):
            yield from all_fields(f.type.fields, f"{prefix}{f.key}.")


def all_keys() -> set[str]:
    """Every section and key name the file may hold."""
    return {s.name for s in SECTIONS} | {f.key for _, f in all_fields()}


def describe() -> dict:
    """The schema as plain data (JSON-ready): {"sections": [{"name", "shape", "doc", "key",
    "value", "fields": [{"key", "type": {"type": class name, ...its parameters}, "doc",
    "required", "default"}], "rules": [{"key", "needs", "doc"}]}]}. Patterns are given as
    their source text; a duration's bounds are in milliseconds."""
    return {"sections": [_section(s) for s in SECTIONS]}


def _section(s: Section) -> dict:
    return {"name": s.name, "shape": s.shape, "doc": s.doc,
            "key": None if s.key is None else _type(s.key), "value": None if s.value is None else _type(s.value),
            "fields": [_field(f) for f in s.fields],
            "rules": [{"key": r.key, "needs": list(r.needs), "doc": r.doc} for r in s.rules]}


def _field(f: Field) -> dict:
    return {"key": f.key, "type": _type(f.type), "doc": f.doc, "required": f.required is not None,
            "default": f.default}


def _type(t) -> dict:
    out: dict = {"type": type(t).__name__}
    for f in dataclass_fields(t):
        value = getattr(t, f.name)
        if isinstance(value, re.Pattern):
            value = value.pattern
        elif f.name == "fields":
            value = [_field(x) for x in value]
        elif isinstance(value, tuple):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        out[f.name] = value
    if isinstance(t, Duration):
        out.update(lo=t.lo, hi=t.hi)
    return out
