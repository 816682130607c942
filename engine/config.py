"""Configuration: the TOML file of SPEC §2, parsed and validated into frozen dataclasses.

`load_config(path)` is the only entry point; everything downstream (compile, the reference
model, the CLI) works on the `Config` it returns. Validation that needs the profile columns
(unknown attributes in `where`) happens in `engine.compile`, when profiles are loaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

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
EXEMPT_RULES = ("min_gap", "max_per_day", "quiet_hours")
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


@dataclass(frozen=True)
class PolicySpec:
    blacklist: tuple[str, ...] = ()                 # list names
    quiet_hours: Optional[tuple[int, int]] = None   # (start, end) minutes of the local day
    min_gap_ms: int = 0
    max_per_day: Optional[int] = None


@dataclass(frozen=True)
class CampaignSpec:
    id: str
    on: tuple[int, ...]                       # trigger event type codes
    channel: str
    priority: int = 0
    audience: Optional[str] = None            # list name
    peer_in: Optional[str] = None             # list name
    exclude: tuple[str, ...] = ()             # list names
    where: Optional[str] = None               # source text, parsed by engine.where
    area: Optional[str] = None                # area name
    enter: bool = False
    hours: Optional[tuple[int, int]] = None   # (start, end) minutes of the local day
    days: int = ALL_DAYS                      # weekday bits, mon = bit 0
    counter: Optional[str] = None             # counter name
    at_least: int = 0
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
    lists: dict[str, Path] = field(default_factory=dict)    # name -> absolute path
    areas: dict[str, Path] = field(default_factory=dict)    # name -> absolute path
    policy: PolicySpec = field(default_factory=PolicySpec)
    counters: tuple[CounterSpec, ...] = ()      # in file order
    campaigns: tuple[CampaignSpec, ...] = ()    # sorted: priority descending, then id ascending
    event_types: dict[str, int] = field(default_factory=lambda: dict(EVENT_TYPES))  # builtin + custom
    output: OutputSpec = field(default_factory=OutputSpec)
