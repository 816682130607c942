"""Reading sigmatch output directories back (SPEC §4) for `sigmatch report`: stats.json and the
action and conversion files, as NumPy columns, with Arrow (never row by row in Python).

    OUT/stats.json                      required: what makes a directory a sigmatch output
    OUT/<channel>/actions-*.{csv,jsonl,parquet}
    OUT/conversions/conversions-*.{csv,jsonl,parquet}

Strings (campaign, template, kind) become codes into `Outputs.campaigns`, `.templates` and
`.kinds`, shared by every directory read. A text file whose last line is cut short (a copy
taken while something else was writing it) loses that line, with a warning; a Parquet file
that cannot be read, or an entry named like a run's file that is not a file, is skipped with a
warning; action files holding fewer actions than stats.json numbers are warned of. Everything
else that is wrong, a record a run never writes included (a field missing, a kind that is
none, a time out of range, text that is not UTF-8), is a ReportError naming the directory or
the file (docs/semantics.md, "Reports").
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from engine.errors import SigmatchError
from engine.language.config import parse_utc_offset
from engine.privacy import mask_msisdn
from engine.records import KINDS
from engine.wording import plural

__all__ = ["ReportError", "Outputs", "Directory", "read_outputs", "record_files", "read_record_files"]

log = logging.getLogger("sigmatch.report")

_ACTION_FILE = re.compile(r"actions-\d+\.(csv|jsonl|parquet)")
_CONVERSION_FILE = re.compile(r"conversions-\d+\.(csv|jsonl|parquet)")
_NOT_CHANNELS = ("conversions", "dead_letters")

# a handful of distinct values: the CSV reader makes dictionaries as it parses, on every
# core (measured: 5-10% less CPU than strings encoded after); codes are what the report counts by
_TEXT = pa.dictionary(pa.int32(), pa.string())
ACTION_TYPES = {"seq": pa.uint64(), "ts": pa.int64(), "campaign": _TEXT, "msisdn": pa.uint64(),
                "template": _TEXT, "kind": _TEXT}
CONVERSION_TYPES = {"ts": pa.int64(), "campaign": _TEXT, "msisdn": pa.uint64(), "contact_seq": pa.uint64(),
                    "kind": _TEXT}


class ReportError(SigmatchError):
    """An output directory cannot be reported on; the message names it (or its file)."""


@dataclass
class Columns:
    """Records of one kind from one directory, as NumPy columns of equal length. `seq` is the
    action seq (actions) or the contact_seq (conversions); campaign, template and kind are
    codes into the Outputs' lists (template -1 for conversions: their contact gives it)."""
    seq: np.ndarray         # uint64
    ts: np.ndarray          # int64, ms since the epoch (UTC)
    msisdn: np.ndarray      # uint64
    campaign: np.ndarray    # int32 codes
    template: np.ndarray    # int32 codes
    kind: np.ndarray        # int32 codes

    @classmethod
    def empty(cls) -> "Columns":
        return cls(np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.uint64),
                   *(np.zeros(0, np.int32) for _ in range(3)))

    @classmethod
    def joined(cls, parts: list["Columns"]) -> "Columns":
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, name) for p in parts])
                     for name in ("seq", "ts", "msisdn", "campaign", "template", "kind")))

    def __len__(self) -> int:
        return len(self.seq)


@dataclass
class Directory:
    path: Path
    stats: dict
    actions: Columns
    conversions: Columns


@dataclass
class Outputs:
    directories: list[Directory]
    configuration: Optional[dict]           # stats.json's identity, equal in every directory
    campaigns: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _Codes:
    """String -> code, in order of first sight."""

    def __init__(self, values: list[str]):
        self.values = values
        self.index = {v: i for i, v in enumerate(values)}

    def codes(self, column: pa.ChunkedArray) -> np.ndarray:
        """The column's values as int32 codes (a null as ""). Chunks are unified to one
        dictionary first, so the Python work is per distinct value, not per chunk: a
        directory of hourly Parquet files gives thousands of chunks."""
        if not len(column):
            return np.zeros(0, np.int32)
        if not pa.types.is_dictionary(column.type):
            column = column.dictionary_encode()
        column = column.unify_dictionaries()
        values = column.chunk(0).dictionary.to_pylist()
        indices = pa.chunked_array([chunk.indices for chunk in column.chunks], column.type.index_type)
        if indices.null_count:
            indices = indices.fill_null(len(values))
            values.append("")
        mapping = np.array([self._code(v) for v in values] or [0], np.int32)
        # take() with the int32 indices as they are: no copy of them widened to intp
        return np.take(mapping, indices.to_numpy())

    def _code(self, value) -> int:
        value = "" if value is None else value
        code = self.index.get(value)
        if code is None:
            code = self.index[value] = len(self.values)
            self.values.append(value)
        return code


def read_outputs(paths, *, progress: Optional[bool] = None) -> Outputs:
    """Read every directory of `paths`; ReportError when one is not a sigmatch output, lacks
    stats.json, or was written by another configuration than the first."""
    paths = [Path(p) for p in paths]
    seen: dict = {}
    for path in paths:
        first = seen.setdefault(path.resolve(), path)
        if first is not path:
            raise ReportError(f"{path}: named twice (as {first}): its contacts would count twice")
    stats = [_read_stats(p) for p in paths]
    configuration = _same_configuration(paths, stats)
    _same_run_twice(paths, stats)
    outputs = Outputs([], configuration)
    if configuration is None:
        # in the report's warnings, so that --json and the page say it too, not the log alone
        _warn(outputs.warnings, f"{paths[0]}/stats.json: no configuration identity (written by an older "
                                "sigmatch): local days are taken in UTC")
    codes = {name: _Codes(getattr(outputs, name)) for name in ("campaigns", "templates", "kinds")}
    sizes: dict[Path, int] = {}         # each file's size, from its directory listing: one stat per file
    files = [(p, _record_files(p, sizes, outputs.warnings)) for p in paths]
    total = sum(sizes.values())
    bar = None
    if progress is None:
        progress = sys.stderr.isatty()
    if progress and total:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="report: reading", file=sys.stderr, leave=False)
    try:
        for (path, (action_files, conversion_files)), stat in zip(files, stats):
            actions = _read_files(action_files, sizes, ACTION_TYPES, codes, outputs.warnings, bar)
            conversions = _read_files(conversion_files, sizes, CONVERSION_TYPES, codes, outputs.warnings, bar)
            _refuse_repeats(path, actions.seq, "action records", "seqs")
            _refuse_repeats(path, conversions.seq, "conversion records", "contact_seqs")
            _warn_of_a_partial_run(path, stat, outputs.warnings)
            _warn_of_missing_records(path, stat, actions.seq, len(conversions), outputs.warnings)
            outputs.directories.append(Directory(path, stat, actions, conversions))
    finally:
        if bar is not None:
            bar.close()
    return outputs


def record_files(path: Path) -> tuple[list[Path], list[Path]]:
    """The finished action files (by channel, then number: oldest first) and conversion files of
    the output directory `path`; a file being written (a hidden .tmp) is not among them."""
    return _record_files(path, {}, [])


def read_record_files(paths: list[Path], *, conversions: bool = False) -> tuple[Columns, list[str], list[str], list[str]]:
    """The records of some action files (or, with `conversions`, conversion files) of one
    output directory: (columns, campaign names, kind names, warnings), the columns' campaign
    and kind codes indexing the two lists. For a part of a directory, where read_outputs
    reads all of it (the console's figures of one day). ReportError as read_outputs."""
    sizes = {p: p.stat().st_size for p in paths}
    found = Outputs([], None)
    codes = {name: _Codes(getattr(found, name)) for name in ("campaigns", "templates", "kinds")}
    columns = _read_files(list(paths), sizes, CONVERSION_TYPES if conversions else ACTION_TYPES, codes,
                          found.warnings, None)
    return columns, found.campaigns, found.kinds, found.warnings


def _repeats(seq: np.ndarray) -> int:
    """How many values of `seq` (uint64) stand more than once (each counted once)."""
    if len(seq) < 2:
        return 0
    low, high = int(seq.min()), int(seq.max())
    if high - low < 4 * len(seq) + 1024:
        # a run's seqs are gap-free, so a count per value is the cheap way
        counts = np.bincount((seq - np.uint64(low)).astype(np.intp), minlength=0)
        return int(np.count_nonzero(counts > 1))
    ranked = np.sort(seq)
    same = ranked[1:] == ranked[:-1]
    # a run of equal values counts once: a True not preceded by a True
    return int(np.count_nonzero(same[1:] & ~same[:-1]) + (1 if len(same) and same[0] else 0))


def _refuse_repeats(path: Path, seq: np.ndarray, records: str, seqs: str) -> None:
    """ReportError when one seq (or contact_seq) stands twice in one directory: a run numbers
    each action once and a contact converts at most once, so a repeat is a record read twice
    (a file copied, the same records in a second format), whose contacts would count twice."""
    repeated = _repeats(seq)
    if repeated:
        raise ReportError(f"{path}: {len(seq):,} {records}, of which {repeated:,} {seqs} stand more than once "
                          "(a file copied twice, or the same records in a second format?); "
                          "a run writes each once, so they would count twice")


def _warn_of_a_partial_run(path: Path, stats: dict, warnings: list) -> None:
    """A warning when stats.json says its run stopped part-way (run.stopped: a broken
    stream, a trace that could not be read on, an interruption): its figures hold only the
    events before that point, and the actions still waiting then were never sent. Without
    the warning such a report reads as one of the whole trace."""
    stopped = (stats.get("run") or {}).get("stopped")
    if not isinstance(stopped, dict):
        return
    reason, offset = stopped.get("reason"), stopped.get("offset")
    trace, trace_offset = stopped.get("trace"), stopped.get("trace_offset")
    where = f" at byte {offset:,} of the stream" if isinstance(offset, int) else ""
    if isinstance(trace, str) and isinstance(trace_offset, int):
        # a .gz trace's offsets are of its decompressed bytes, as replay says them
        unpacked = "decompressed " if trace.endswith(".gz") else ""
        where = f" at {unpacked}byte {trace_offset:,} of {trace[:200]}"
    _warn(warnings, f"{path}: its run stopped part-way ({_short(reason)}{where}): its figures count the events "
                    "before that alone, and the actions still waiting then were never sent")


def _warn_of_missing_records(path: Path, stats: dict, seq: np.ndarray, conversions: int, warnings: list) -> None:
    """A warning when the files hold fewer of the run's actions than stats.json numbers
    (first_seq..last_seq, gap-free), or fewer conversions than it counts (replay's
    run.conversions): a file deleted, emptied, cut short or skipped, whose records the report
    cannot count (without the conversions directory every rate would read 0). More is no
    warning: a service writes files between two of its stats.json."""
    run = stats.get("run") or {}
    first, last = run.get("first_seq"), run.get("last_seq")
    if first is not None and last is not None:      # checked by stats_problem: 1 <= first <= last < 2^64
        numbered = last - first + 1
        held = int(np.count_nonzero((seq >= np.uint64(first)) & (seq <= np.uint64(last))))
        if held < numbered:
            _warn(warnings, f"{path}: its action files hold {held:,} of the {numbered:,} actions stats.json numbers "
                            f"(seq {first:,} to {last:,}): files missing, emptied or cut short? Their contacts "
                            "and conversions are not counted")
    counted = run.get("conversions")
    if counted is not None and conversions < counted:
        _warn(warnings, f"{path}: its conversion files hold {conversions:,} of the {counted:,} conversions stats.json "
                        "counts: files missing, emptied or cut short? Those conversions are not counted")


def _same_run_twice(paths: list[Path], stats: list[dict]) -> None:
    """ReportError when two directories hold one run (a copy of a directory): their stats.json
    are equal but for the wall-clock `timing`, which no two runs of different input share once
    they have an action, and their contacts would count twice."""
    seen: dict = {}
    for path, stat in zip(paths, stats):
        run = stat.get("run")
        if not (isinstance(run, dict) and run.get("last_seq")):
            continue
        key = json.dumps({k: v for k, v in stat.items() if k != "timing"}, sort_keys=True)
        first = seen.setdefault(key, path)
        if first is not path:
            raise ReportError(f"{path}: the same run as {first} (their stats.json are equal but for timing: "
                              "a copy?); its contacts would count twice")


def _read_stats(path: Path) -> dict:
    if not path.is_dir():
        raise ReportError(f"{path}: {'not a directory' if path.exists() else 'no such directory'} "
                          "(report reads the output directories of replay or run)")
    stats_path = path / "stats.json"
    if not stats_path.is_file():
        raise ReportError(f"{path}: not a sigmatch output directory (no stats.json)")
    return read_stats_json(stats_path)[0]


def _unique_keys(pairs: list) -> dict:
    """A JSON object as a dict; ValueError naming a key given twice (json keeps the last one
    silently: a second `run` appended by hand replaced the first, helper-133)."""
    found = dict(pairs)
    if len(found) < len(pairs):
        seen = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"the key {json.dumps(twice)[:60]} is given twice in one object")
    return found


def read_stats_json(path: Path) -> tuple[dict, dict]:
    """A stats.json as (the whole document, its campaigns by id). Raises FileNotFoundError
    when there is none, and ReportError, one line that names the file, when it cannot be read
    or holds what a sigmatch run never writes (stats_problem)."""
    try:
        stats = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ReportError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    except ValueError as e:
        # not UTF-8, not JSON, or an integer of more than 4,300 digits (int's own limit)
        raise ReportError(f"{path}: not a sigmatch stats.json ({e})") from None
    except RecursionError:
        raise ReportError(f"{path}: not a sigmatch stats.json (nested too deeply)") from None
    if not isinstance(stats, dict) or not isinstance(stats.get("campaigns"), dict):
        raise ReportError(f"{path}: not a sigmatch stats.json (no campaigns)")
    problem = stats_problem(stats)
    if problem:
        raise ReportError(f"{path}: not a sigmatch stats.json ({problem})")
    return stats, stats["campaigns"]


def stats_problem(stats: dict) -> Optional[str]:
    """What, in the parts of stats.json that report and the console read, a sigmatch run
    never writes: a campaign that is not an object, a funnel count that is not a count (an
    integer from 0 to 2^63 - 1, as the core counts), an offset that is not one; None when
    there is nothing. A file edited by hand or written by another tool is refused rather
    than misread (a count skipped, local days shifted)."""
    identity = stats.get("configuration")
    if identity is not None or "configuration" in stats:
        # null too: a run writes its identity, and an older sigmatch none at all (helper-136:
        # null was read as no identity, local days in UTC)
        if not isinstance(identity, dict):
            return "configuration is not an object"
        # every run writes its offset beside its identity: null or none taken as UTC put
        # every record 8 hours off its local day, and a page said "UTCNone" (helper-133)
        if "utc_offset" not in identity:
            return "configuration.utc_offset is missing: a run writes its offset, like \"+08:00\""
        offset = identity["utc_offset"]
        try:
            parse_utc_offset(offset)        # the configuration's own rule: "+25:00" is no offset
        except (ValueError, TypeError):
            return f"configuration.utc_offset {_shown(offset)} is not an offset like \"+08:00\""
        digest = identity.get("sha256")
        if digest is not None and not isinstance(digest, str):
            return f"configuration.sha256 {_shown(digest)} is not a digest"
        names = identity.get("campaigns")
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            return f"configuration.campaigns {_shown(names)} is not a list of campaign ids"
    if "run" in stats:
        run = stats["run"]
        # the seq range the files are held against: a run numbers its actions from 1, in 64 bits
        if not isinstance(run, dict):
            return "run is not an object"          # null too: no run writes one (helper-123)
        stopped = run.get("stopped")
        if stopped is not None and not (isinstance(stopped, dict) and isinstance(stopped.get("reason"), str)):
            # a run stopped part-way is said by an object with its reason: another value read
            # as no stop, one without a reason as "stopped part-way (None)"
            return f"run.stopped {_shown(stopped)} is not an object with a reason (or null: the run ended)"
        for key in ("first_seq", "last_seq"):
            value = run.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or not 1 <= value < 1 << 64):
                return f"run.{key} {_shown(value)} is not an action's seq"
        counted = run.get("conversions")
        if counted is not None and not _count(counted):
            return f"run.conversions {_shown(counted)} is not a count"
        if isinstance(run.get("first_seq"), int) and isinstance(run.get("last_seq"), int) \
                and run["first_seq"] > run["last_seq"]:
            return f"run.first_seq {run['first_seq']} is past run.last_seq {run['last_seq']}"
    for cid, funnel in stats["campaigns"].items():
        if not isinstance(funnel, dict):
            return f"campaigns.{cid[:60]} is not an object"
        for key, value in funnel.items():
            # the funnel's counts are integers; beside them stand rates and uplift (numbers
            # or null) and days and variants (objects). A count that is null, 1.5 or NaN
            # would be left out of the funnel as if it were a rate
            if key in _PARTS:
                if not isinstance(value, dict):
                    return f"campaigns.{cid[:60]}.{key} is {_shown(value)}, not an object"
                # a day's or a variant's figures: counts alone
                for part, counts in value.items():
                    where = f"campaigns.{cid[:60]}.{key}.{part[:60]}"
                    if not isinstance(counts, dict):
                        return f"{where} is {_shown(counts)}, not an object"
                    for name, count in counts.items():
                        if not _count(count):
                            return f"{where}.{name[:60]} is {_shown(count)}, not a count"
            elif "rate" in key or "uplift" in key:
                if not (value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))):
                    return f"campaigns.{cid[:60]}.{key[:60]} is {_shown(value)}, not a number"
            elif not _count(value):
                return f"campaigns.{cid[:60]}.{key[:60]} is {_shown(value)}, not a count"
    return None


def _shown(value) -> str:
    """A value of stats.json as a refusal quotes it: JSON, cut to 40 characters, but an
    integer with thousands separators, so that the log's mask of 7-digit runs leaves a count
    readable (`matched is 10,000,000,000,000, not a count` was `100****...0000`)."""
    if isinstance(value, int) and not isinstance(value, bool):
        text = f"{value:,}"
        return text if len(text) <= 40 else text[:39] + "…"
    return json.dumps(value)[:40]


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63


# the parts of a campaign's entry in stats.json that are objects, not counts
_PARTS = ("days", "variants")


def _same_configuration(paths: list[Path], stats: list[dict]) -> Optional[dict]:
    identities = [s.get("configuration") for s in stats]
    if len(paths) > 1:
        for path, identity in zip(paths, identities):
            if not isinstance(identity, dict) or not identity.get("sha256"):
                raise ReportError(f"{path}/stats.json: no configuration identity (written by an older sigmatch): "
                                  "cannot tell whether it may be added to the others; report on it alone")
        first = identities[0]
        for path, identity in zip(paths[1:], identities[1:]):
            for key in ("sha256", "utc_offset", "campaigns"):
                if identity.get(key) != first.get(key):
                    raise ReportError(f"{path}: written by another configuration than {paths[0]} ({key} differs: "
                                      f"{_short(identity.get(key))} against {_short(first.get(key))})")
    identity = identities[0] if isinstance(identities[0], dict) else None
    return identity


def _short(value) -> str:
    text = str(value)
    return text[:12] if isinstance(value, str) and len(text) == 64 else text[:60]


def _record_files(path: Path, sizes: dict, warnings: list) -> tuple[list[Path], list[Path]]:
    """The finished action and conversion files of one directory, by channel then number;
    their sizes in bytes go into `sizes`."""
    actions = []
    for channel in sorted(p for p in path.iterdir() if p.is_dir() and p.name not in _NOT_CHANNELS):
        actions += _listed(channel, _ACTION_FILE, sizes, warnings)
    conversions = path / "conversions"
    return actions, _listed(conversions, _CONVERSION_FILE, sizes, warnings) if conversions.is_dir() else []


def _listed(directory: Path, name: re.Pattern, sizes: dict, warnings: list) -> list[Path]:
    files, others = [], []
    with os.scandir(directory) as entries:
        for entry in entries:
            if not name.fullmatch(entry.name):
                continue
            path = Path(entry.path)
            try:
                # through a symbolic link: a link to a file is read, as the file would be
                size = os.stat(path).st_size if entry.is_file() else None
            except OSError:
                size = None     # a dangling link, a loop of links, gone since listed
            if size is None:
                others.append(path)
            else:
                sizes[path] = size
                files.append(path)
    # named like a file of the run but not one: its records (if it held any) are not counted
    for path in sorted(others):
        _warn(warnings, f"{path}: not a file ({_what_it_is(path)}): skipped")
    return sorted(files)


def _what_it_is(path: Path) -> str:
    if path.is_symlink() and not path.exists():
        return "a symbolic link to nothing"
    if path.is_dir():
        return "a directory"
    return "a pipe, socket or device" if path.exists() else "gone since listed"


# Text files are parsed in batches of about this many bytes: a run rotates its files hourly,
# and thousands of small files parsed one by one would cost more in calls than in parsing.
BATCH_BYTES = 64 << 20
_CSV_BLOCKS = pacsv.ReadOptions(block_size=8 << 20)


def _read_files(paths: list[Path], sizes: dict, types: dict, codes: dict, warnings: list, bar) -> Columns:
    """Every file of one sink directory kind (actions or conversions) as one Columns."""
    parts = []
    for suffix in (".csv", ".jsonl", ".parquet"):
        chosen = [p for p in paths if p.suffix == suffix]
        if not chosen:
            continue
        parquet = suffix == ".parquet"
        tables = _parquet_tables(chosen, sizes, types, warnings, bar) if parquet \
            else _text_tables(chosen, sizes, types, warnings, bar)
        for table, sources in tables:
            if table is None or not table.num_rows:
                continue
            table, problem = _checked(table, types)
            if problem:
                path, problem = _culprit(sources, sizes, types, parquet) or (sources[0], problem)
                raise ReportError(f"{path}: not a sigmatch output file ({problem})")
            parts.append(_columns(table, types, codes))
    return Columns.joined(parts)


# A run's times are below 2^53 ms (the engine refuses later events) plus a delay of at most
# 100 years; past 2^54 a time is not a run's, and near 2^63 a local day would overflow
TS_LIMIT = 1 << 54


def _checked(table: pa.Table, types: dict) -> tuple[pa.Table, Optional[str]]:
    """(the table with its columns of `types`' numeric types, what in it a run never writes or
    None): a field missing or empty, a number of another type, a time out of range, a kind
    that is not one, text that is not UTF-8. Every figure would be misread otherwise: a
    missing time counted on a day 292 million years ago, a missing number as some number."""
    columns = {}
    for name, wanted in types.items():
        column = table.column(name)
        if column.null_count:
            return table, f"{plural(column.null_count, 'record')} without {name}"
        if pa.types.is_dictionary(wanted):
            given = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
            if not (pa.types.is_string(given) or pa.types.is_large_string(given)):
                # a file edited by hand (a campaign of integers) went on as numbers, and the
                # report failed on them with a traceback (helper-133)
                return table, f"{name} is {column.type}, not text"
            if not pa.types.is_dictionary(column.type):
                column = column.dictionary_encode()     # once, for the check and the codes
        elif column.type != wanted:
            try:
                column = column.cast(pa.int64() if pa.types.is_timestamp(column.type) else wanted)
                if column.type != wanted:
                    column = column.cast(wanted)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                return table, f"{name} is {column.type}, not {wanted}"
        columns[name] = column
    ts = columns["ts"]
    if len(ts) and (pc.min(ts).as_py() < 0 or pc.max(ts).as_py() >= TS_LIMIT):
        return table, "a ts out of range: a run's times are milliseconds since 1970, below 2^54"
    for name in ("campaign", "kind"):
        try:
            values = _distinct(columns[name])
        except UnicodeDecodeError:
            return table, f"a {name} that is not UTF-8 text"
        if name == "kind" and not values <= set(KINDS):
            shown = ", ".join(sorted(repr(_masked(v[:40])) for v in values - set(KINDS))[:3])
            return table, f"kind {shown}: a run writes {', '.join(KINDS)}"
        if name == "campaign" and "" in values:
            return table, "a record without campaign"
    if "template" in columns:
        try:
            _distinct(columns["template"])
        except UnicodeDecodeError:
            return table, "a template that is not UTF-8 text"
    return pa.table(columns), None


def _distinct(column: pa.ChunkedArray) -> set:
    """The distinct values of a dictionary-encoded text column: its dictionary's."""
    if not len(column):
        return set()
    return set(column.unify_dictionaries().chunk(0).dictionary.to_pylist())


def _culprit(sources: list[Path], sizes: dict, types: dict, parquet: bool) -> Optional[tuple[Path, str]]:
    """Which of the files read together holds what `_checked` refused, and what: each is read
    again alone (only on the way to a refusal)."""
    for path in sources:
        if parquet:
            try:
                names = pq.read_schema(path).names
                missing = [name for name in types if name not in names]
                if missing:
                    return path, f"no column {', '.join(missing)}"
                table = pq.read_table(path, columns=list(types))
            except (pa.ArrowException, OSError) as e:
                return path, _reason(e, path)
        else:
            first_path, header = _csv_header([path]) if path.suffix == ".csv" else (path, None)
            table = _parse_batch([path], sizes, first_path, header, types)[0]
        if table is not None:
            problem = _checked(table, types)[1]
            if problem:
                return path, problem
    return None


def _columns(table: pa.Table, types: dict, codes: dict) -> Columns:
    """A table that `_checked` passed as Columns."""
    seq = table.column("seq" if "seq" in types else "contact_seq")
    template = codes["templates"].codes(table.column("template")) if "template" in types \
        else np.full(table.num_rows, -1, np.int32)
    return Columns(seq.to_numpy(), table.column("ts").to_numpy(), table.column("msisdn").to_numpy(),
                   codes["campaigns"].codes(table.column("campaign")), template,
                   codes["kinds"].codes(table.column("kind")))


_DIGITS = re.compile(r"\d{7,}")


def _masked(text: str) -> str:
    """Every run of 7+ digits masked, even one glued to letters: what Arrow quotes from a
    damaged row ('1380013800x0') is a subscriber's number, not a name, and the CLI's own
    mask (engine.privacy.scrub) shows a run that a letter touches."""
    return _DIGITS.sub(lambda m: mask_msisdn(m.group()), text)


def _reason(e: Exception, path: Optional[Path] = None) -> str:
    """Arrow's first line, its 7+ digit runs masked; the file it names (which the message
    names already) shortened to its name, whose digits are a number, not a subscriber's."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if path is None:
        return _masked(text)
    return path.name.join(_masked(part) for part in text.split(str(path)))


def _parquet_tables(paths: list[Path], sizes: dict, types: dict, warnings: list, bar) -> list:
    import pyarrow.dataset as ds
    try:
        text = [name for name, t in types.items() if pa.types.is_dictionary(t)]
        parquet = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=text))
        tables = [(ds.dataset([str(p) for p in paths], format=parquet).to_table(columns=list(types)), paths)]
    except (pa.ArrowException, OSError):
        # one of them is damaged, or holds a column of another type than the rest (a campaign
        # of integers: Arrow cannot cast it to the text's dictionary, ArrowNotImplementedError):
        # read each to skip it alone or name it
        tables = None
    if tables is None:
        tables = []
        for path in paths:
            try:
                schema = pq.read_schema(path)
            except (pa.ArrowException, OSError) as e:
                _warn(warnings, f"{path}: unreadable Parquet file skipped ({_reason(e, path)})")
                continue
            missing = [name for name in types if name not in schema.names]
            if missing:         # whole, but not a file of sigmatch's (a CSV header would differ)
                raise ReportError(f"{path}: not a sigmatch output file (no column {', '.join(missing)})")
            try:
                tables.append((pq.read_table(path, columns=list(types)), [path]))
            except (pa.ArrowException, OSError) as e:
                _warn(warnings, f"{path}: unreadable Parquet file skipped ({_reason(e, path)})")
    if bar is not None:
        bar.update(sum(sizes[p] for p in paths))
    return tables


def _text_tables(paths: list[Path], sizes: dict, types: dict, warnings: list, bar) -> Iterator[tuple]:
    """CSV or JSON Lines files parsed in batches of whole lines: each batch read straight into
    one buffer (a CSV header once), each file's partial last line left out with a warning.
    (table, its files) come in the files' order; the next batch is read and parsed in a thread
    while the caller turns this one into columns (Arrow parses without the GIL, on every core)."""
    csv = paths[0].suffix == ".csv"
    first_path, header = _csv_header(paths) if csv else (paths[0], None)
    batches, batch, size = [], [], 0
    for path in paths:
        batch.append(path)
        size += sizes[path]
        if size >= BATCH_BYTES:
            batches.append(batch)
            batch, size = [], 0
    if batch:
        batches.append(batch)
    with ThreadPoolExecutor(2, thread_name_prefix="report-parse") as pool:
        ahead: deque = deque()
        for batch in batches:
            ahead.append((pool.submit(_parse_batch, batch, sizes, first_path, header, types), batch))
            if len(ahead) > _AHEAD:
                yield from _finished(ahead.popleft(), warnings, bar)
        while ahead:
            yield from _finished(ahead.popleft(), warnings, bar)


# batches parsed ahead of the one being turned into columns: enough to keep both cores busy
# on this machine's two, and 2 x BATCH_BYTES of memory at most
_AHEAD = 2


def _finished(parsing: tuple, warnings: list, bar) -> Iterator[tuple]:
    future, batch = parsing
    table, said, size = future.result()
    for message in said:
        _warn(warnings, message)
    if bar is not None:
        bar.update(size)
    if table is not None:
        yield table, batch


def _csv_header(paths: list[Path]) -> tuple[Path, Optional[bytes]]:
    """The first file with a whole first line, and that line: the header every file repeats.
    Never None: None stands for JSON Lines, which have no header."""
    for path in paths:
        try:
            with path.open("rb") as f:
                first = f.readline()
        except OSError as e:
            raise _unreadable(path, e) from None
        if first.endswith(b"\n"):
            return path, first
    return paths[0], b""        # every file's first line is cut short: each is skipped, with a warning


# byte order marks, longest first (UTF-32's little-endian one begins as UTF-16's)
_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xef\xbb\xbf", "UTF-8"),
         (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


def _read_batch(paths: list[Path], sizes: dict, first_path: Path, header: Optional[bytes],
                said: list) -> tuple[pa.Buffer, bool]:
    """The files' whole lines in one buffer, a CSV header (`header`, None for JSON Lines) first;
    and whether any line is there. Read with readinto into memory Arrow allocates (not
    zero-filled): the bytes are copied once, from the page cache into the buffer."""
    lengths = [sizes[p] for p in paths]
    buffer = pa.allocate_buffer(sum(lengths) + (len(header) if header else 0))
    view = memoryview(buffer).cast("B")
    position, lines, wrote_header = 0, False, False
    for path, size in zip(paths, lengths):
        try:
            f = path.open("rb")
        except OSError as e:
            raise _unreadable(path, e) from None
        with f:
            first = b""
            if header is not None:
                first = f.readline()
                if not first.endswith(b"\n"):
                    if first:
                        said.append(f"{path}: partial last line skipped ({len(first):,} bytes without a line end)")
                    continue
                if first != header:
                    # a "\r" shown, which is all that differs in a file saved with CRLF
                    shown = _masked(repr(first.rstrip(b"\n")[:200]))
                    raise ReportError(f"{path}: not a sigmatch output file (its header {shown} "
                                      f"differs from {first_path}'s)")
                if not wrote_header:
                    view[:len(header)] = header
                    position, wrote_header = len(header), True
            try:
                got = f.readinto(view[position:position + max(size - len(first), 0)])
            except OSError as e:
                raise _unreadable(path, e) from None
            # within what was read: the buffer past it holds no byte of this file (helper-137:
            # a file of FF FE alone was said to be UTF-32 by the bytes after it)
            mark = next((name for bom, name in _BOMS if got >= len(bom) and view[position:position + len(bom)] == bom),
                        None) if header is None else None
            if mark is not None:
                # a JSON Lines file saved by an editor that marks UTF-8: parsed alone, Arrow
                # skips the mark, but in the middle of a batch it broke the batch, and the
                # refusal named the batch's first file without a reason (helper-133); one in
                # UTF-16 lost its records as partial lines, without a refusal (helper-136)
                raise ReportError(f"{path}: not a sigmatch output file (it starts with a byte order mark of "
                                  f"{mark}, which a run never writes: it writes UTF-8 without one)")
        if got and view[position + got - 1] != 0x0A:
            cut = _last_line_end(view, position, position + got)
            said.append(f"{path}: partial last line skipped ({position + got - cut:,} bytes without a line end)")
            got = cut - position
        position += got
        lines = lines or got > 0
    view.release()
    return buffer.slice(0, position), lines


def _unreadable(path: Path, e: OSError) -> ReportError:
    # a file removed since the directory was listed, unreadable to this user, a directory now
    return ReportError(f"{path}: cannot be read ({e.strerror or e})")


def _last_line_end(view: memoryview, start: int, end: int) -> int:
    """Where the last whole line of view[start:end] ends (start when there is none)."""
    tail = np.frombuffer(view[start:end], np.uint8)
    ends = np.flatnonzero(tail == 0x0A)
    return start + int(ends[-1]) + 1 if len(ends) else start


def _parse_batch(paths: list[Path], sizes: dict, first_path: Path, header: Optional[bytes],
                 types: dict) -> tuple[Optional[pa.Table], list, int]:
    """(the batch as one table or None when it holds no line, its warnings, its size in bytes)."""
    said: list = []
    data, lines = _read_batch(paths, sizes, first_path, header, said)
    size = sum(sizes[p] for p in paths)
    if not lines:
        return None, said, size
    try:
        return _parse_text(data, header is not None, types), said, size
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowKeyError) as e:
        if len(paths) == 1:
            raise ReportError(f"{paths[0]}: not a sigmatch output file ({_reason(e, paths[0])})") from None
    for path in paths:              # which file is it? (warnings of the first reading are not repeated)
        _parse_batch([path], sizes, first_path, header, types)
    raise ReportError(f"{paths[0]} ...: not sigmatch output files")


def _parse_text(data: pa.Buffer, csv: bool, types: dict) -> pa.Table:
    if csv:
        return pacsv.read_csv(pa.BufferReader(data), read_options=_CSV_BLOCKS, convert_options=pacsv.ConvertOptions(
            include_columns=list(types), column_types=types, strings_can_be_null=False))
    schema = pa.schema([(name, pa.string() if pa.types.is_dictionary(t) else t) for name, t in types.items()])
    table = pajson.read_json(pa.BufferReader(data), parse_options=pajson.ParseOptions(
        explicit_schema=schema, unexpected_field_behavior="ignore"))
    return table.select(list(types))


def _warn(warnings: list, message: str) -> None:
    warnings.append(message)
    log.warning("%s", message)
