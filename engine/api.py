"""The Python API: `Engine` keeps the compiled core and its state; each `replay` is one run.

    engine = Engine.from_config("campaigns.toml")
    run = engine.replay(["day1.msgpack", "day2.msgpack"], out="out/")
    run.actions_table()          # pyarrow.Table in the columns of SPEC §4
    engine.replay(more_bytes)    # state carries over; pending actions stay pending
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from engine.language.compile import World, compile_core, load_world, release_columns
from engine.language.config import CampaignSpec, Config, load_config
from engine.errors import LoadError, SigmatchError, StreamError
from engine.records import (
    ACTION_DTYPE, BAD_FIELDS, BAD_REASONS, CONVERSION_DTYPE, DEAD_LETTER_DTYPE, FUNNEL, KINDS, STREAM_STATUSES,
    TAKER_RULES,
)
from engine.sinks import SinkSet, SinkThread, unwritable_output_directory, without_missing_parents, writing_output
from engine.wording import local_day
from loaders.traces import Source, iter_chunks, source_size

__all__ = ["Engine", "Run"]

SINK_BATCH = 65_536

# Core status -> (StreamError.reason, what an operator reads after it); the reasons are
# records.STREAM_STATUSES' names (the daemon words its log lines from this table too)
_STREAM_ERRORS = {
    1: ("corrupt", "not msgpack: a 0xc1 byte in the event that starts there"),
    2: ("too_large", "an event longer than max_event_bytes"),
    3: ("truncated", "the stream ends inside an event"),
}
assert all(STREAM_STATUSES[status] == reason for status, (reason, _) in _STREAM_ERRORS.items())


def _funnel_dict(funnel_row: np.ndarray) -> dict:
    d = {name: int(v) for name, v in zip(FUNNEL, funnel_row)}
    sent, control = d["sent"], d["control"]
    rate_send = d["converted_send"] / sent if sent else None
    rate_control = d["converted_control"] / control if control else None
    d["conversion_rate_send"] = rate_send
    d["conversion_rate_control"] = rate_control
    d["uplift"] = rate_send - rate_control if rate_send is not None and rate_control is not None else None
    return d


DAY_MS = 86_400_000
# stats.json's `timing` block: the only wall-clock figures, the run's seconds and its events per
# second (SPEC §4); nothing else in stats.json depends on the clock
TIMING_KEYS = ("elapsed_s", "events_per_s")


log = logging.getLogger("sigmatch.api")


def format_utc_offset(offset_ms: int) -> str:
    """28800000 -> "+08:00", -19800000 -> "-05:30": as the configuration writes it."""
    sign = "-" if offset_ms < 0 else "+"
    minutes = abs(offset_ms) // 60_000
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def configuration_identity(config: Config) -> dict:
    """stats.json `configuration` (SPEC §4): the sha256 of the TOML file's bytes (None when
    the Config was built without a readable file), its `utc_offset` ("+08:00") and the
    campaign ids in priority order. `sigmatch report` adds up only outputs whose identities
    are equal."""
    digest = config.sha256
    try:
        if digest is None:
            digest = hashlib.sha256(Path(config.path).read_bytes()).hexdigest()
    except (OSError, TypeError):
        digest = None
    return {"sha256": digest, "utc_offset": format_utc_offset(config.utc_offset_ms),
            "campaigns": [c.id for c in config.campaigns]}


# stats.json names of contacts and conversions by kind (KINDS order): `sent`, `control`, ...
# as the funnel names them
_CONTACT_KEYS = tuple("sent" if kind == "send" else kind for kind in KINDS)
_CONVERTED_KEYS = tuple(f"converted_{kind}" for kind in KINDS)


# day numbers (since 1970-01-01) of 0001-01-01 and 9999-12-31
_FIRST_DAY, _LAST_DAY = -719_162, 2_932_896


def _tally_rows(rows):
    """(key, key, counts as an int64 array) of each [key, key, [2 x len(KINDS) counts]] row;
    ValueError when a row is not that."""
    if not isinstance(rows, list):
        raise ValueError("tallies")
    for row in rows:
        if not (isinstance(row, list) and len(row) == 3 and isinstance(row[2], list)
                and len(row[2]) == 2 * len(KINDS)
                # counts that stay exact as they grow (a hand edit to 2**63 - 1 wrapped round)
                and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1 << 53 for n in row[2])):
            raise ValueError("tallies")
        yield row[0], row[1], np.array(row[2], np.int64)


class _DayCounts:
    """Contacts and conversions of each kind per campaign and local day (by the record's
    `ts` in the configuration's utc_offset): what stats.json gives as `campaigns.<id>.days`.
    Counted from the records as they leave the core, with NumPy, a few calls per batch."""

    def __init__(self, nr_campaigns: int, utc_offset_ms: int):
        self.nr_campaigns = nr_campaigns
        self.utc_offset_ms = utc_offset_ms
        # (campaign, day) -> counts: contacts by kind, then conversions by kind
        self.counts: dict[tuple[int, int], np.ndarray] = {}

    def add(self, records: np.ndarray, conversions: bool) -> None:
        if not len(records):
            return
        nr_kinds = len(KINDS)
        day = (records["ts"].astype(np.int64) + self.utc_offset_ms) // DAY_MS
        key = (day * self.nr_campaigns + records["campaign"]) * nr_kinds + records["kind"]
        keys, counts = np.unique(key, return_counts=True)
        column_base = nr_kinds if conversions else 0
        for k, n in zip(keys.tolist(), counts.tolist()):
            kind = k % nr_kinds
            campaign = (k // nr_kinds) % self.nr_campaigns
            day_number = k // nr_kinds // self.nr_campaigns
            row = self.counts.get((campaign, day_number))
            if row is None:
                row = self.counts[(campaign, day_number)] = np.zeros(2 * nr_kinds, np.int64)
            row[column_base + kind] += n

    def moved_to(self, new_index: list[int], nr_campaigns: int, utc_offset_ms: int) -> "_DayCounts":
        """The counts under a reloaded configuration: campaigns kept by id (`new_index[old]`,
        -1 for a campaign removed, whose days go), their days as they were counted."""
        moved = _DayCounts(nr_campaigns, utc_offset_ms)
        for (campaign, day), row in self.counts.items():
            if new_index[campaign] >= 0:
                moved.counts[(new_index[campaign], day)] = row.copy()
        return moved

    def to_json(self, campaign_ids: Sequence[str]) -> list:
        """[[campaign id, day number, [counts]], ...] for a checkpoint's header."""
        return [[campaign_ids[c], day, row.tolist()] for (c, day), row in sorted(self.counts.items())]

    @classmethod
    def from_json(cls, rows, campaign_ids: Sequence[str], utc_offset_ms: int) -> "_DayCounts":
        """What to_json gave; ValueError when it is not that."""
        index = {cid: i for i, cid in enumerate(campaign_ids)}
        days = cls(len(campaign_ids), utc_offset_ms)
        for cid, day, counts in _tally_rows(rows):
            # a local day of the years 0001 to 9999, as stats.json can name one
            if cid not in index or not isinstance(day, int) or isinstance(day, bool) \
                    or not _FIRST_DAY <= day <= _LAST_DAY:
                raise ValueError("days")
            days.counts[(index[cid], day)] = counts
        return days

    def of_campaign(self, campaign: int) -> dict:
        """{"YYYY-MM-DD": {"sent": n, "control": n, "converted_send": n, "converted_control": n}}, days in order."""
        days = sorted(day for c, day in self.counts if c == campaign)
        keys = _CONTACT_KEYS + _CONVERTED_KEYS
        return {local_day(day): dict(zip(keys, map(int, self.counts[(campaign, day)]))) for day in days}


class _VariantCounts:
    """Contacts and conversions of each kind per campaign and variant, keyed by (campaign
    id, template) so that a reload that changes a campaign's variants keeps what was counted
    under each template: what stats.json gives as `campaigns.<id>.variants`. A conversion
    counts under the variant its record carries (the subscriber's when it converted)."""

    def __init__(self):
        self.counts: dict[tuple[str, str], np.ndarray] = {}

    def add(self, campaigns: Sequence[CampaignSpec], records: np.ndarray, conversions: bool) -> None:
        if not len(records):
            return
        nr_kinds = len(KINDS)
        key = (records["campaign"].astype(np.int64) * 256 + records["variant"]) * nr_kinds + records["kind"]
        keys, counts = np.unique(key, return_counts=True)
        column_base = nr_kinds if conversions else 0
        for k, n in zip(keys.tolist(), counts.tolist()):
            c = campaigns[k // nr_kinds // 256]
            unit = (c.id, c.templates[k // nr_kinds % 256])
            row = self.counts.get(unit)
            if row is None:
                row = self.counts[unit] = np.zeros(2 * nr_kinds, np.int64)
            row[column_base + k % nr_kinds] += n

    def to_json(self) -> list:
        """[[campaign id, template, [counts]], ...] for a checkpoint's header."""
        return [[cid, template, row.tolist()] for (cid, template), row in sorted(self.counts.items())]

    @classmethod
    def from_json(cls, rows) -> "_VariantCounts":
        """What to_json gave; ValueError when it is not that."""
        variants = cls()
        for cid, template, counts in _tally_rows(rows):
            if not isinstance(cid, str) or not isinstance(template, str):
                raise ValueError("variants")
            variants.counts[(cid, template)] = counts
        return variants

    def copy(self) -> "_VariantCounts":
        copied = _VariantCounts()
        copied.counts = {unit: row.copy() for unit, row in self.counts.items()}
        return copied

    def of_campaign(self, c: CampaignSpec) -> dict:
        """{template: {"sent": n, "control": n, "global_control": n, "converted_send": n, ...}}:
        the campaign's templates in configuration order, then any counted under templates it
        no longer has (before a reload), by name."""
        keys = _CONTACT_KEYS + _CONVERTED_KEYS
        gone = sorted(t for cid, t in self.counts if cid == c.id and t not in c.templates)
        blank = np.zeros(len(keys), np.int64)
        return {t: dict(zip(keys, map(int, self.counts.get((c.id, t), blank)))) for t in list(c.templates) + gone}


def stream_error(status: int, offset: int, files=()) -> Exception:
    """The exception for a core status other than 0 (Core.feed, end_stream): StreamError for
    a broken stream at `offset`, naming the file it lies in when `files` ((stream offset
    where it starts, path), in order) has it; MemoryError for 4."""
    if status == 4:
        return MemoryError(f"{STREAM_STATUSES[status]}: the core could not grow a buffer")
    reason, detail = _STREAM_ERRORS[status]
    holder = _trace_holding(offset, files)
    if holder is None:
        return StreamError(offset, reason, f"{reason} ({detail})")
    return StreamError(offset, reason, f"{reason} ({detail})", path=holder[1], path_offset=offset - holder[0])


@contextlib.contextmanager
def interrupts_held():
    """Ctrl-C and SIGTERM held back while the body runs, then acted on as they would have been:
    records taken from the core must reach the run's counts, the writer's queue and the list
    of what is left to write together. A signal between two of those steps left stats.json
    counting actions that no file held, or handed a batch to the writer twice (helper-111).
    The body must not wait long: a signal is not acted on until it ends. Only in the main
    thread, where Python runs signal handlers; elsewhere the body runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list = []
    before = {}
    try:
        for number in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(number) is None:
                continue    # a handler installed outside Python could not be put back from it
            before[number] = signal.signal(number, lambda n, frame: held.append((n, frame)))
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
        if held:
            number, frame = held[0]
            handler = before.get(number)
            if callable(handler):
                handler(number, frame)          # KeyboardInterrupt, or the CLI's SIGTERM
            elif handler != signal.SIG_IGN:
                os.kill(os.getpid(), number)    # the default action: ends the process


def _where_stopped(core, error: Optional[Exception], broken_off: Optional[BaseException],
                   traces: Sequence) -> tuple[int, Optional[dict]]:
    """(bytes processed, stats.json's `run.stopped`) of a stream that began at offset 0:
    `error` the stream's own (StreamError, or MemoryError for a core out of memory), else
    `broken_off` what ended it early (a trace that cannot be read on, an interrupt, a file
    that cannot be written); all bytes and None when the stream was read to its end. The
    bytes are the core's, not the chunks': an interrupt may land before the reader's own
    count of a chunk fed."""
    # what the core was fed, less an event it holds incomplete (a trace cut off part-way)
    fed = int(core.next_offset) - int(core.carried)
    if isinstance(error, StreamError):
        offset = int(core.error_offset)
        return offset, stopped_at(error.reason, offset, traces)
    if error is not None:
        # out of memory somewhere inside what was fed (the core names no event for it)
        return fed, stopped_at("out_of_memory", fed, traces)
    offset = fed
    if broken_off is None:
        return offset, None
    reason = ("interrupted" if isinstance(broken_off, KeyboardInterrupt)
              # a trace file that could not be read on (the reader's LoadError); an OSError
              # may be an output file's, which is no reason the stream stopped being read
              else "unreadable" if isinstance(broken_off, LoadError)
              else "out_of_memory" if isinstance(broken_off, MemoryError) else "error")
    return offset, stopped_at(reason, offset, traces)


def _trace_holding(offset: int, traces: Sequence) -> Optional[tuple]:
    """(stream offset where it starts, path) of the trace that holds stream offset `offset`:
    the last of `traces` ((start, path), in order) that starts at or before it; None when the
    stream was no files."""
    return next(((start, path) for start, path in reversed(traces) if start <= offset), None)


def stopped_at(reason: str, offset: int, traces: Sequence) -> dict:
    """stats.json's `run.stopped` for a stream not read to its end: {"reason", "offset",
    "trace", "trace_offset"}, `offset` the stream offset where processing stopped (the broken
    event's for `corrupt`, `too_large` and `truncated`; the first byte of the event not
    complete when the trace could not be read on or the run was interrupted) and the trace
    that holds it with its offset there (None without files). Reasons: STREAM_STATUSES'
    (corrupt, too_large, truncated, out_of_memory: then the end of what was fed, as the
    core names no event), `unreadable` (a trace that could not be read on), `interrupted`
    (Ctrl-C, SIGTERM) and `error` (anything else: an output file that cannot be written, an
    exception of an API caller's own source of chunks)."""
    holder = _trace_holding(offset, traces)
    return {"reason": reason, "offset": int(offset),
            "trace": None if holder is None else os.fspath(holder[1]),
            "trace_offset": None if holder is None else int(offset) - holder[0]}


def largest_bad_value(largest: Optional[dict], traces: Sequence) -> Optional[dict]:
    """The stream's largest bad value ({"offset", "bytes"} from Core.counts, or None) with the
    trace it starts in and its offset there (both None when the stream was no files)."""
    if not largest:
        return None
    holder = _trace_holding(largest["offset"], traces)
    return {"offset": int(largest["offset"]), "bytes": int(largest["bytes"]),
            "trace": None if holder is None else os.fspath(holder[1]),
            "trace_offset": None if holder is None else int(largest["offset"]) - holder[0]}


def run_stats(config: Config, configuration: dict, before: dict, after: dict, funnel: np.ndarray,
              days: "_DayCounts", variants: "_VariantCounts", produced: dict, nbytes: int, elapsed: float,
              seq_range: Sequence[int], pending: int, traces: Sequence = (),
              stopped: Optional[dict] = None) -> dict:
    """A run's stats.json (SPEC §4): `before` and `after` are Core.counts() around it,
    `funnel` [campaigns, len(FUNNEL)] since the engine was built, `produced` the records
    written by kind, `nbytes` the stream's bytes processed (up to `stopped`'s offset when
    the stream was not read to its end), `elapsed` seconds (the only wall-clock figure, in
    `timing`), `traces` ((stream offset where it starts, path), in order) the files read,
    which name the trace holding the largest bad value, and `stopped` why the stream was not
    read to its end (stopped_at), None when it was. One process (Engine) and a sharded run
    (engine.workers) both build it here, so their files agree."""
    events = after["events"] - before["events"]
    run_figures = {
        "events": events,
        "bad_events": {r: after["bad_events"][r] - before["bad_events"][r] for r in BAD_REASONS},
        "bad_events_by_field": _by_field_since(before["bad_events_by_field"], after["bad_events_by_field"]),
        # the bytes inside those bad values, and the largest of them: a bad value of many
        # events' bytes tells of a damaged header that took the events after it into itself
        "bad_bytes": after["bad_bytes"] - before["bad_bytes"],
        "largest_bad_value": largest_bad_value(after.get("largest_bad_value"), traces),
        "unknown_subscribers": after["unknown_subscribers"] - before["unknown_subscribers"],
        # good events with ts below the clock, processed at the clock's time (SPEC §3)
        "late_events": after["late_events"] - before["late_events"],
        # processed: a run stopped part-way counts the bytes before where it stopped, not
        # those read past it (a chunk holds more), which would depend on the chunks' size
        "bytes": nbytes,
        # null when the stream was read to its end; else why not, and where (stopped_at): a
        # stats.json written after a broken stream or an interruption says so itself
        "stopped": stopped,
        "actions": produced["actions"],
        "conversions": produced["conversions"],
        "dead_letters": produced["dead_letters"],
        "pending": pending,
        # seq numbers the actions of the engine's life: this run's are first_seq..last_seq
        "first_seq": seq_range[0] if seq_range else None,
        "last_seq": seq_range[1] if seq_range else None,
    }
    stats = {
        "configuration": configuration,
        "run": run_figures,
        "campaigns": {c.id: _funnel_dict(funnel[i]) for i, c in enumerate(config.campaigns)},
    }
    for i, c in enumerate(config.campaigns):
        stats["campaigns"][c.id]["variants"] = variants.of_campaign(c)
        stats["campaigns"][c.id]["days"] = days.of_campaign(i)
    # the only wall-clock figures, kept apart (SPEC §4): the rest of stats.json is the same
    # on every replay of the same input
    stats["timing"] = dict(zip(TIMING_KEYS, (round(elapsed, 6), round(events / elapsed) if elapsed > 0 else None)))
    return stats


def _public(records: np.ndarray) -> np.ndarray:
    """The records without the core's padding fields (`_pad`): a view, not a copy."""
    return records[[name for name in records.dtype.names if not name.startswith("_")]]


def _by_field_since(before: dict, after: dict) -> dict:
    """{reason: {field: n}} of the bad events between two Core.counts(), the pairs seen only."""
    out = {}
    for reason, fields in after.items():
        seen = {field: n - before.get(reason, {}).get(field, 0) for field, n in fields.items()}
        seen = {field: n for field, n in seen.items() if n}
        if seen:
            out[reason] = seen
    return out


@dataclass
class Run:
    """What one replay produced: records as NumPy structured arrays, stats, finished files."""
    campaigns: Sequence[CampaignSpec]
    actions: np.ndarray = field(default_factory=lambda: _public(np.zeros(0, ACTION_DTYPE)))
    conversions: np.ndarray = field(default_factory=lambda: _public(np.zeros(0, CONVERSION_DTYPE)))
    dead_letters: np.ndarray = field(default_factory=lambda: _public(np.zeros(0, DEAD_LETTER_DTYPE)))
    stats: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def action_columns(self) -> dict[str, np.ndarray]:
        """The actions as NumPy arrays, one per SPEC §4 column."""
        ids = np.array([c.id for c in self.campaigns] or [""], dtype=object)
        channels = np.array([c.channel for c in self.campaigns] or [""], dtype=object)
        templates = np.array([t for c in self.campaigns for t in c.templates] or [""], dtype=object)
        first = np.cumsum([0] + [len(c.templates) for c in self.campaigns])[:-1].astype(np.int64) \
            if self.campaigns else np.zeros(1, np.int64)
        a = self.actions
        return {
            "seq": a["seq"].copy(),
            "ts": a["ts"].copy(),
            "campaign": ids[a["campaign"]],
            "msisdn": a["msisdn"].copy(),
            "channel": channels[a["campaign"]],
            "template": templates[first[a["campaign"]] + a["variant"]],
            "kind": np.array(KINDS, dtype=object)[a["kind"]],
            "trigger_ts": a["trigger_ts"].copy(),
            "cell": a["cell"].copy(),
        }

    def conversion_columns(self) -> dict[str, np.ndarray]:
        ids = np.array([c.id for c in self.campaigns] or [""], dtype=object)
        c = self.conversions
        return {
            "seq": c["seq"].copy(),
            "ts": c["ts"].copy(),
            "campaign": ids[c["campaign"]],
            "msisdn": c["msisdn"].copy(),
            "contact_seq": c["contact_seq"].copy(),
            "kind": np.array(KINDS, dtype=object)[c["kind"]],
        }

    def dead_letter_columns(self) -> dict[str, np.ndarray]:
        """The dead letters as NumPy arrays, one per SPEC §4 column (bytes_hex as str)."""
        d = self.dead_letters
        return {
            "offset": d["offset"].copy(),
            "reason": np.array(BAD_REASONS, dtype=object)[d["reason"]],
            "field": np.array(BAD_FIELDS, dtype=object)[d["field"]],
            "count": d["count"].copy(),
            "bytes_hex": np.array([bytes(r["bytes"][:r["nbytes"]]).hex() for r in d], dtype=object),
        }

    def actions_table(self):
        import pyarrow as pa
        return pa.table(self.action_columns())

    def conversions_table(self):
        import pyarrow as pa
        return pa.table(self.conversion_columns())

    def actions_frame(self):
        """The actions as a pandas DataFrame (needs pandas: pip install sigmatch[pandas])."""
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise ImportError("actions_frame() needs pandas; use actions_table() for Arrow") from None
        return self.actions_table().to_pandas()

    def conversions_frame(self):
        return self.conversions_table().to_pandas()


class EngineFigures:
    """What an engine answers from its configuration (`config`) and its core (`_core`), and
    the totals of its replays (`_totals`, `_last_run`, `_last_timing`): Engine, and the
    service's workers answering as one (engine.workers.inprocess.ShardedEngine)."""

    @property
    def campaigns(self) -> tuple[CampaignSpec, ...]:
        return self.config.campaigns

    @property
    def pending(self) -> int:
        """Delayed actions waiting for their due time."""
        return self._core.pending

    @property
    def clock(self) -> Optional[int]:
        """Event time: the largest ts of any good event so far (ms), None before the first."""
        return self._core.clock

    def _no_replays_yet(self) -> None:
        self._totals = {"runs": 0, "bytes": 0, "actions": 0, "conversions": 0, "dead_letters": 0}
        self._last_run: Optional[dict] = None
        self._last_timing: Optional[dict] = None

    @property
    def stats(self) -> dict:
        """Figures since the engine was built (totals, the funnel of every campaign) and those of
        the last replay (run)."""
        counts = self._core.counts()
        totals = dict(self._totals)
        totals.update(
            events=counts["events"],
            unknown_subscribers=counts["unknown_subscribers"],
            late_events=counts["late_events"],
            bad_events=counts["bad_events"],
            bad_events_by_field=counts["bad_events_by_field"],
            bad_bytes=counts["bad_bytes"],
            pending=self._core.pending,
            contacts=self._core.seq,
        )
        funnel = self._core.funnel()
        return {
            "totals": totals,
            "run": self._last_run,
            "campaigns": {c.id: _funnel_dict(funnel[i]) for i, c in enumerate(self.config.campaigns)},
            "timing": self._last_timing,
        }


class Engine(EngineFigures):
    """A compiled configuration with its state. Not thread-safe: one replay at a time."""

    def __init__(self, config: Config, world: Optional[World] = None, *, max_event_bytes: int = 65536,
                 keep=None, record_takers: bool = False, shard: Optional[tuple[int, int]] = None,
                 give_world: bool = False):
        """`record_takers`: count the contacts each campaign loses to another through the
        policy (see takers()); off by default, as it costs a scan of the subscriber's
        contact state per such suppression. `shard` (i, n): hold only worker i's
        subscribers of n (engine.workers runs the workers). `give_world`: the caller gives
        `world` up, and its snapshot's columns are dropped as soon as the compile has read
        them (release_columns), as for a world the engine loads itself."""
        self.config = config
        self.max_event_bytes = max_event_bytes
        self.shard = shard
        owned = world is None
        self.world = load_world(config) if owned else world
        compiled = compile_core(config, self.world, max_event_bytes=max_event_bytes, keep=keep, shard=shard,
                                release=owned or give_world)
        self._core = compiled.core
        self.subscribers = compiled.subscribers      # MSISDN by subscriber index
        self.eligible = compiled.eligible            # campaign id -> subscribers it may contact
        self.malformed_dates = compiled.malformed_dates   # anniversary attribute -> values that are not dates
        self.checkpoint_extra: Optional[dict] = None  # the extra of the checkpoint restored, if any
        self.reload_dropped = 0
        self._no_replays_yet()
        self.configuration = configuration_identity(config)
        # since the engine was built, as the funnel: a replay's stats.json gives them per campaign
        self._days = _DayCounts(len(config.campaigns), config.utc_offset_ms)
        self._variants = _VariantCounts()
        self.record_takers = record_takers
        self._explainer = None              # engine.closedloop.explain.Explainer while watching
        self._takers_before: dict = {}      # counted by the engines this one was reloaded from
        if record_takers:
            self._core.record_takers(True)

    @classmethod
    def from_config(cls, path, **kwargs) -> "Engine":
        return cls(load_config(Path(path)), **kwargs)

    @property
    def bytes_per_subscriber(self) -> float:
        return self._core.bytes_per_subscriber


    def takers(self) -> dict[tuple[str, Optional[str], str], int]:
        """The contacts a campaign lost to another through the contact policy, since the
        engine was built (reloads carry them by campaign id; a checkpoint does not hold
        them): {(campaign_id, taker_id, rule): count}, rule one of "min_gap",
        "max_per_day", "max_in_window", pairs with a count only. The taker is the campaign
        of the latest contact that made the rule fail (the subscriber's latest contact:
        the larger seq on a tie); None when a reload removed that campaign. Asking an
        engine built without record_takers=True is a ValueError."""
        if not self.record_takers:
            raise ValueError("takers() needs an Engine built with record_takers=True")
        counts = self._core.takers()
        ids = [c.id for c in self.config.campaigns] + [None]
        out = dict(self._takers_before)
        for ci, taker, rule in zip(*np.nonzero(counts)):
            key = (ids[ci], ids[taker], TAKER_RULES[rule])
            out[key] = out.get(key, 0) + int(counts[ci, taker, rule])
        return out

    def subscriber_status(self, msisdn: int) -> str:
        """"active", "inactive" (a reload found the number gone from the profiles) or
        "unknown" (not a subscriber)."""
        view = self._core.subscriber_view(int(msisdn)) if 0 < int(msisdn) < 10**15 else None
        return "unknown" if view is None else "active" if view["active"] else "inactive"

    def watch(self, msisdns, *, ring: Optional[int] = None) -> None:
        """Explain these subscribers from now on (`sigmatch explain`): for each of their good
        events and each timer that fires for them, the core records each campaign's result,
        every emission's outcome, conversions and the state after it (explanation()).
        Replaces the watch list; an empty one stops watching (the core then pays nothing).
        `ring` keeps only each subscriber's last `ring` entries (the daemon's bound).
        ValueError names a number that is not a subscriber."""
        from engine.closedloop.explain import Explainer
        if ring is not None and (not isinstance(ring, Integral) or isinstance(ring, bool) or ring < 1):
            # before anything changes: a refused ring left the watch list replaced (helper-126)
            raise ValueError(f"ring {ring!r}: a whole number of entries, at least 1")
        ring = None if ring is None else int(ring)
        if isinstance(msisdns, (str, bytes, int)):
            raise TypeError("msisdns: a list of numbers, not one number or a string")
        numbers = [int(m) for m in msisdns]
        indexes = []
        for m in numbers:
            index = self._core.subscriber_index(m) if 0 < m < 10**15 else -1
            if index < 0:
                raise ValueError(f"{m} is not a subscriber")
            indexes.append(index)
        self._take_explain()
        if not numbers:
            self._core.watch([])
            self._explainer = None
            return
        if self._explainer is None or self._explainer.ring != ring:
            old = self._explainer
            self._explainer = Explainer(ring)
            if old is not None:
                self._explainer.entries = {m: type(q)(q, maxlen=ring) for m, q in old.entries.items()}
        self._explainer.bind(self)
        self._explainer.watch(numbers)
        self._core.watch(indexes)

    @property
    def watched(self) -> list[int]:
        """The MSISDNs watched, in the order watch() was given them."""
        return list(self._explainer.entries) if self._explainer is not None else []

    def collect_explanations(self) -> None:
        """Take the core's explanation lines into the watched subscribers' entries (replay
        does it after each chunk; a caller that feeds the core itself, the daemon, calls it)."""
        self._take_explain()

    def _take_explain(self) -> None:
        if self._explainer is not None:
            self._explainer.add(self._core.take_explain())

    def explanation(self, msisdn: int, last: Optional[int] = None) -> dict:
        """What happened to a watched subscriber since watching began (the last `last`
        entries when given; the ring's when watch() set one): engine.closedloop.explain's
        document, {"msisdn", "status", "events": [...], "actions": [...]}. ValueError for a
        number not watched."""
        from engine.closedloop.explain import document
        if last is not None and (not isinstance(last, Integral) or isinstance(last, bool) or last < 0):
            # -1 gave no entries without a word, "5" a TypeError from a comparison (helper-126)
            raise ValueError(f"last {last!r}: a whole number of entries, 0 or more")
        last = None if last is None else int(last)
        msisdn = int(msisdn)
        self._take_explain()
        if self._explainer is None or msisdn not in self._explainer.entries:
            raise ValueError(f"{msisdn} is not watched")
        doc = self._explainer.explanation(msisdn, last)
        doc["status"] = self.subscriber_status(msisdn)
        return doc

    def reload(self, config_path=None) -> "Engine":
        """A new engine from the configuration (default: this one's file) and the profiles,
        lists and areas it names as they are now, carrying this engine's state: subscribers
        keep their indexes (new numbers are appended, numbers gone become inactive),
        campaigns, counters and markers keep their state by id and by name, pending actions of a
        removed campaign are dropped (counted in `reload_dropped`). A ConfigError or
        LoadError leaves this engine as it was."""
        return self._reloaded(load_config(Path(config_path) if config_path else self.config.path))

    def _reloaded(self, config: Config, world: Optional[World] = None) -> "Engine":
        """reload() with the configuration in hand (and its world, loaded when None)."""
        new = Engine(config, world, max_event_bytes=self.max_event_bytes, keep=self.subscribers,
                     record_takers=self.record_takers, shard=self.shard)
        new_campaigns = {c.id: i for i, c in enumerate(config.campaigns)}
        new_counters = {c.name: i for i, c in enumerate(config.counters)}
        new_markers = {m.name: i for i, m in enumerate(config.markers)}
        new.reload_dropped = new._core.transfer_from(
            self._core,
            [new_campaigns.get(c.id, -1) for c in self.config.campaigns],
            [new_counters.get(c.name, -1) for c in self.config.counters],
            len(self.subscribers),
            [new_markers.get(m.name, -1) for m in self.config.markers])
        new._totals = dict(self._totals)
        if self.record_takers:
            # by id: a campaign that is gone keeps what it lost and took as it was
            new._takers_before = self.takers()
        if self._explainer is not None:
            # entries name campaigns by id, so they outlive the reload as they are
            self._take_explain()
            new._explainer = self._explainer
            new._explainer.bind(new)
            new._core.watch([new._core.subscriber_index(m) for m in self._explainer.entries])
        new._days = self._days.moved_to([new_campaigns.get(c.id, -1) for c in self.config.campaigns],
                                        len(config.campaigns), config.utc_offset_ms)
        new._variants = self._variants.copy()      # keyed by campaign id and template: nothing moves
        return new

    def checkpoint(self, path, extra: Optional[dict] = None) -> Path:
        """Write all mutable state (subscriber rows, contacts, timers, counts, clock,
        sequences, stream position, and stats.json's counts by day and variant) to `path`,
        atomically. `extra`, a dict of JSON values, is kept with it (restore() gives it back
        in `checkpoint_extra`); TypeError for another extra, before anything is written; the
        OSError of a path that cannot be written (its directory missing or a file, ENOSPC),
        naming `path`, with no file left behind."""
        from engine.service.checkpoint import write_checkpoint
        if extra is not None and not isinstance(extra, dict):
            # a list was written, and refused by every restore as a damaged header (helper-126)
            raise TypeError(f"extra must be a dict of JSON values, not {type(extra).__name__}")
        tallies = {"days": self._days.to_json([c.id for c in self.config.campaigns]),
                   "utc_offset_ms": self.config.utc_offset_ms, "variants": self._variants.to_json()}
        return write_checkpoint(self, path, extra, tallies=tallies)

    def restore(self, path) -> "Engine":
        """Load a checkpoint written by an engine of the same configuration and profiles
        (CheckpointError otherwise); returns this engine, so that
        `Engine.from_config(c).restore(p)` reads as it should. The checkpoint's `extra` is in
        `checkpoint_extra`. The next replay continues exactly where the checkpointed engine stood."""
        from engine.errors import CheckpointError
        from engine.service.checkpoint import check_fingerprint, read_checkpoint, restore_sections
        header, sections = read_checkpoint(path)
        check_fingerprint(self, header, path)
        ids = [c.id for c in self.config.campaigns]
        tallies = header.get("tallies") or {}
        try:
            # stats.json's counts by day and variant, as the checkpointed engine had them: the
            # funnel came back and they did not, and disagreed with it (helper-126). A
            # checkpoint without them (the service's) starts them afresh.
            days = _DayCounts.from_json(tallies.get("days", []), ids, self.config.utc_offset_ms)
            variants = _VariantCounts.from_json(tallies.get("variants", []))
            offset = tallies.get("utc_offset_ms", self.config.utc_offset_ms)
            if not isinstance(offset, int) or isinstance(offset, bool):
                raise ValueError("utc_offset_ms")
        except (ValueError, AttributeError):
            raise CheckpointError(f"{path}: damaged header: tallies is not what a checkpoint holds") from None
        if offset != self.config.utc_offset_ms and days.counts:
            # local days of another offset are other days: counted afresh from here (helper-127)
            log.warning("%s: written with utc_offset %s, this engine's is %s: stats.json's counts by day start "
                        "afresh", path, format_utc_offset(offset), format_utc_offset(self.config.utc_offset_ms))
            days = _DayCounts(len(ids), self.config.utc_offset_ms)
        self.checkpoint_extra = restore_sections(self, header, sections, path)
        self._days, self._variants = days, variants
        return self

    def drain(self, out=None, *, format: Optional[str] = None) -> Run:
        """Emit every pending action at its due time (as `sigmatch replay` does at the end)."""
        return self.replay(b"", out=out, drain=True, format=format)

    def replay(self, source: Source, out=None, *, drain: bool = False, format: Optional[str] = None,
               progress: Optional[bool] = None, keep: bool = True) -> Run:
        """Run the engine over one stream (a path, a list of paths, bytes, or an iterable of
        byte chunks). Files go to `out` when given; with `keep` the records also come back
        in the Run. Raises StreamError (after keeping every emitted action in complete
        files) when the stream is not valid msgpack, SigmatchError before any event when a
        directory of `out` that the run writes into is a file or not writable, and the OSError
        of an output file that cannot be written (ENOSPC, EFBIG, EIO: the files finished before
        it kept, the one that failed and those still open removed, no stats.json). stats.json is
        written last, only when the files hold every action it counts. SigmatchError too when
        another engine (in this process or another) writes `out` now: they would number their
        files and actions alike."""
        if out is None:
            return self._replay(source, None, drain=drain, format=format, progress=progress, keep=keep)
        # `base/missing/../out` would make base/missing too, and leave it empty
        out = without_missing_parents(out)
        unwritable = unwritable_output_directory(Path(out), self.config.campaigns)
        if unwritable:
            # before any event: the first file would fail only after the run's events were
            # spent, and in an OSError's words
            raise SigmatchError(f"{out}: {unwritable}")
        from engine.service.checkpoint import service_directory_problem
        problem = service_directory_problem(Path(out), exists=os.path.lexists(out))
        if problem:
            # a service's spool would take the files for input, its state is its own; the CLI
            # refused them and the API did not (helper-127)
            raise SigmatchError(f"{out}: {problem}: give another output directory")
        with writing_output(out, self):
            return self._replay(source, out, drain=drain, format=format, progress=progress, keep=keep)

    def _replay(self, source: Source, out, *, drain: bool, format: Optional[str], progress: Optional[bool],
                keep: bool) -> Run:
        core = self._core
        output = self.config.output
        sinks = None
        if out is not None:
            sinks = SinkSet(Path(out), campaigns=self.config.campaigns,
                            format=format or output.format,
                            max_records=output.max_records, max_age_ms=output.max_age_ms)
        before = core.counts()
        kept: dict[str, list[np.ndarray]] = {"actions": [], "conversions": [], "dead_letters": []}
        produced = {"actions": 0, "conversions": 0, "dead_letters": 0}
        seq_range: list[int] = []          # the first and last action seq of this run
        nbytes = 0
        bar = None
        if progress is None:
            progress = sys.stderr.isatty()
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=source_size(source), unit="B", unit_scale=True, desc="replay",
                       file=sys.stderr, leave=False)

        unwritten: dict[str, list[np.ndarray]] = {"actions": [], "conversions": [], "dead_letters": []}

        def collect(final: bool = False):
            """Take the core's records; hand them to the sinks in batches of at least
            SINK_BATCH records (formatting has a fixed cost per call; file boundaries are
            decided per record, so batching never changes the files)."""
            self._take_explain()
            for name, take in (("actions", core.take_actions), ("conversions", core.take_conversions),
                               ("dead_letters", core.take_dead_letters)):
                with interrupts_held():
                    records = take()
                    if len(records):
                        produced[name] += len(records)
                        self._count_days(name, records, seq_range)
                        unwritten[name].append(records)
                        if keep:
                            kept[name].append(records)
                    waiting = unwritten[name]
                    if sinks is not None and waiting and (final or sum(map(len, waiting)) >= SINK_BATCH):
                        getattr(writer, "write_" + name)(np.concatenate(waiting) if len(waiting) > 1 else waiting[0])
                    if sinks is None or final or not waiting or sum(map(len, waiting)) >= SINK_BATCH:
                        waiting.clear()

        # The files are written on a thread of their own while the core, without the GIL,
        # decodes the next piece (docs/performance.md, "Sinks"); the same files in the same order.
        writer = SinkThread(sinks) if sinks is not None else None
        started = time.perf_counter()
        error: Optional[StreamError] = None
        handed_over = False     # every record taken from the core handed to the writer
        core.begin_stream()
        files: list = []        # (stream offset where it starts, path), for errors that name the file
        broken_off: Optional[BaseException] = None     # what else ended the stream early
        try:
            for chunk in iter_chunks(source, on_file=lambda path: files.append((nbytes, path))):
                status = core.feed(chunk)
                nbytes += len(chunk)
                collect()
                if bar is not None:
                    bar.update(len(chunk))
                if status:
                    error = self._stream_error(status, files)
                    break
            if error is None:
                status = core.end_stream()
                if status:
                    error = self._stream_error(status, files)
            if error is None and drain:
                core.drain()
        except BaseException as e:
            broken_off = e
            raise
        finally:
            if bar is not None:
                bar.close()
            try:
                # Stopped by anything else (a file that cannot be read, an interrupt): this
                # stream ends here, so its open run of bad values is written with the rest.
                core.flush_dead_letters()
                # Whatever stopped the run, every action emitted so far ends in complete files.
                collect(final=True)
                handed_over = True
            finally:
                try:
                    if writer is not None:
                        # after a first interrupt, a second one here drops what is not begun
                        writer.finish(interrupted=isinstance(broken_off, KeyboardInterrupt))
                finally:
                    try:
                        if writer is not None and writer.error is not None:
                            # A file could not be written (ENOSPC, EFBIG, EIO): its error is the
                            # run's, raised by finish() or already in the loop (it propagates
                            # from here, nothing catches it between). The open files cannot be
                            # completed: they are removed.
                            sinks.abort()
                        elif sinks is not None:
                            # the files first (close removes one it cannot complete, and raises)
                            sinks.close()
                            run_files = list(sinks.files)
                    finally:
                        elapsed = time.perf_counter() - started
                        processed, stopped = _where_stopped(core, error, broken_off, files)
                        run = self._finish_run(kept, produced, before, processed, elapsed, seq_range, files,
                                               stopped)
                        if isinstance(broken_off, LoadError):
                            # a trace that could not be read on: its stats, as a StreamError has
                            broken_off.stats = run.stats
                    # stats.json last, and only when the files hold every action it counts: not
                    # after a file that could not be written (writing it on the full disk failed
                    # in turn, and said its own error instead of the first), nor after an
                    # interruption that kept the last batches from the files
                    if (sinks is not None and writer.error is None and handed_over
                            and not writer.dropped):
                        sinks.write_stats(run.stats)
                        run.files = run_files
        if error is not None:
            error.run = run
            error.stats = run.stats
            raise error
        return run

    def _stream_error(self, status: int, files=()) -> Exception:
        if status == 4:
            self._core.clear_oom()
        return stream_error(status, self._core.error_offset, files)

    def _count_days(self, name: str, records: np.ndarray, seq_range: list) -> None:
        """Per-day contacts and conversions, and the run's seq range, from records as they
        leave the core."""
        if name == "actions":
            self._days.add(records, conversions=False)
            self._variants.add(self.config.campaigns, records, conversions=False)
            seq_range[:] = [seq_range[0] if seq_range else int(records["seq"][0]), int(records["seq"][-1])]
        elif name == "conversions":
            self._days.add(records, conversions=True)
            self._variants.add(self.config.campaigns, records, conversions=True)

    def _finish_run(self, kept, produced, before, nbytes, elapsed, seq_range=(), traces=(), stopped=None) -> Run:
        """The Run of a replay; `nbytes` the bytes processed, `stopped` stopped_at's or None."""
        after = self._core.counts()
        self._totals["runs"] += 1
        self._totals["bytes"] += nbytes
        for name, n in produced.items():
            self._totals[name] += n
        stats = run_stats(self.config, self.configuration, before, after, self._core.funnel(), self._days,
                          self._variants, produced, nbytes, elapsed, seq_range, self._core.pending, traces, stopped)
        self._last_run = stats["run"]
        self._last_timing = stats["timing"]

        def joined(name, dtype):
            parts = kept[name]
            return np.concatenate(parts) if parts else np.zeros(0, dtype)

        return Run(
            campaigns=self.config.campaigns,
            actions=_public(joined("actions", ACTION_DTYPE)),
            conversions=_public(joined("conversions", CONVERSION_DTYPE)),
            dead_letters=_public(joined("dead_letters", DEAD_LETTER_DTYPE)),
            stats=stats,
        )
