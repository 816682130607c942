"""Checkpoints: the engine's whole mutable state in one file, written atomically.

Layout (little-endian):

    b"SIGMATCH-CHECKPOINT\\n"          magic, 20 bytes
    u32 header length, header (JSON, UTF-8), u32 crc32 of the header
    the sections' bytes, in the header's order, each with its crc32 in the header

The header holds the core's scalars (clock, sequences, stream position), a fingerprint of
what the state belongs to (campaign ids in order, counter names, the layout, the subscriber
numbers' crc32) and the caller's `extra` (the daemon's input positions, sink numbering).
A file is written under a temporary name, fsynced and renamed, so a crash leaves either the
old checkpoint or the new one, never a mix; a damaged file is refused as a whole.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from engine.errors import CheckpointError
from engine.sinks import fsync_path

if TYPE_CHECKING:
    from engine.api import Engine

__all__ = ["write_checkpoint", "read_checkpoint", "restore_checkpoint", "subscriber_order", "fingerprint",
           "CheckpointStore", "Loaded", "VERSION"]

MAGIC = b"SIGMATCH-CHECKPOINT\n"
VERSION = 1
_DTYPES = {"rows": np.uint8, "contacts": np.uint8, "timers": np.uint8, "funnel": np.uint64,
           "counts": np.uint64, "carry": np.uint8, "subscribers": np.uint64, "dead_run": np.uint8,
           "bad_fields": np.uint64, "budgets": np.uint8, "windows": np.int64}
# Sections that checkpoints of an earlier sigmatch lack (the open dead-letter run, bad events
# by field, the sends counted against budgets, the contact times of max_in_window): the core
# restores without them (no run open, nothing known by field, nothing spent, no times known).
_ADDED_SECTIONS = {"dead_run", "bad_fields", "budgets", "windows"}
log = logging.getLogger("sigmatch.checkpoint")
_BLOCK = 64 << 20       # sections are checksummed and written in blocks: no copy of a GB state
FILE_MODE = 0o640       # the state holds subscribers' numbers: owner and group only, whatever the umask


def fingerprint(engine: "Engine") -> dict:
    msisdn = np.ascontiguousarray(engine.subscribers, dtype=np.uint64)
    return {
        "campaigns": [c.id for c in engine.config.campaigns],
        "counters": [c.name for c in engine.config.counters],
        # whether each counter keeps a start (a window or a period) in the rows
        "counter_windows": [c.starts for c in engine.config.counters],
        # named only when there are some: a checkpoint of a configuration without markers
        # reads the same as one written before markers existed
        **({"markers": [m.name for m in engine.config.markers]} if engine.config.markers else {}),
        "subscribers": int(len(msisdn)),
        "subscribers_crc32": zlib.crc32(memoryview(msisdn).cast("B")),
    }


def _blocks(array: np.ndarray):
    view = memoryview(np.ascontiguousarray(array)).cast("B")
    for i in range(0, len(view), _BLOCK):
        yield view[i:i + _BLOCK]


def write_checkpoint(engine: "Engine", path, extra: Optional[dict] = None, *,
                     generation: Optional[int] = None) -> Path:
    """Write the engine's state to `path` atomically; returns the path."""
    header, sections = _snapshot(engine, extra, generation, copy=False)
    return _write_full(Path(path), header, sections)


def _snapshot(engine: "Engine", extra: Optional[dict], generation: Optional[int], *, copy: bool,
              buffer=None):
    """The header fields and sections of a full checkpoint. Without `copy` the rows are the
    core's own memory: write them before the core is fed again. `buffer(name, nbytes)` gives
    the memory a copy goes to."""
    core = engine._core
    # The subscriber order goes along: after a reload it is not the snapshot's own order,
    # and a restarted engine must rebuild it (subscriber_order) before restoring.
    sections = core.state_sections() + [("subscribers", np.ascontiguousarray(engine.subscribers, dtype=np.uint64))]
    if copy:
        # only the rows are the core's live memory; the other sections are copies already
        # (the subscriber numbers do not change while the engine runs)
        sections = [(name, _copy(array, buffer(name, array.nbytes) if buffer else None) if name == "rows" else array)
                    for name, array in sections]
    header = {
        "version": VERSION,
        "scalars": core.state_scalars(),
        "fingerprint": fingerprint(engine),
        "extra": extra or {},
        **({"generation": generation} if generation is not None else {}),
    }
    return header, sections


def _copy(array: np.ndarray, into: Optional[np.ndarray]) -> np.ndarray:
    if into is None:
        return np.array(array, copy=True)
    out = into[:array.nbytes].view(array.dtype)
    np.copyto(out, array.reshape(-1))
    return out


def _write_full(path: Path, header: dict, sections: list) -> Path:
    described = []
    for name, array in sections:
        crc = 0
        for block in _blocks(array):
            crc = zlib.crc32(block, crc)
        described.append({"name": name, "nbytes": int(array.nbytes), "crc32": crc})
    encoded = json.dumps({**header, "sections": described}).encode()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    except OSError as e:
        raise _naming(e, tmp) from None
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC)
            f.write(struct.pack("<I", len(encoded)))
            f.write(encoded)
            f.write(struct.pack("<I", zlib.crc32(encoded)))
            for _, array in sections:
                for block in _blocks(array):
                    f.write(block)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _naming(e, tmp) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def _naming(error: OSError, path) -> OSError:
    """`error` with the file it concerns: write() and fsync() failing with ENOSPC or EIO name
    none, and an operator must know which disk filled."""
    if error.filename is not None:
        return error
    return OSError(error.errno, error.strerror or str(error), str(path))


def read_checkpoint(path) -> tuple[dict, dict]:
    """(header, sections as NumPy arrays) of a checkpoint file; CheckpointError when it is
    missing, of another version, or damaged anywhere."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise CheckpointError(f"{path}: not a sigmatch checkpoint")
            raw = f.read(4)
            if len(raw) != 4:
                raise CheckpointError(f"{path}: truncated header")
            (length,) = struct.unpack("<I", raw)
            if length > 64 << 20:
                raise CheckpointError(f"{path}: header length {length:,} is not plausible")
            header_bytes = f.read(length)
            raw = f.read(4)
            if len(header_bytes) != length or len(raw) != 4 or struct.unpack("<I", raw)[0] != zlib.crc32(header_bytes):
                raise CheckpointError(f"{path}: damaged header")
            header = json.loads(header_bytes)
            if header.get("version") != VERSION:
                raise CheckpointError(f"{path}: checkpoint version {header.get('version')}, this engine reads {VERSION}")
            sections = {}
            for section in header["sections"]:
                name, nbytes = section["name"], int(section["nbytes"])
                if name not in _DTYPES:
                    raise CheckpointError(f"{path}: unknown section {name!r}")
                data = bytearray(nbytes)
                if f.readinto(data) != nbytes:
                    raise CheckpointError(f"{path}: truncated in section {name!r}")
                if zlib.crc32(data) != section["crc32"]:
                    raise CheckpointError(f"{path}: section {name!r} is damaged (crc mismatch)")
                sections[name] = np.frombuffer(data, dtype=_DTYPES[name])
            if f.read(1):
                raise CheckpointError(f"{path}: trailing bytes after the last section")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint: {e}") from None
    return header, sections


def subscriber_order(path) -> np.ndarray:
    """The MSISDN of each subscriber index, as the engine that wrote the checkpoint had them."""
    _, sections = read_checkpoint(path)
    if "subscribers" not in sections:
        raise CheckpointError(f"{path}: no subscriber order in this checkpoint")
    return sections["subscribers"]


def restore_checkpoint(engine: "Engine", path) -> dict:
    """Load a checkpoint into an engine built from the same configuration and profiles;
    returns the `extra` it was written with."""
    header, sections = read_checkpoint(path)
    return restore_sections(engine, header, sections, path)


def restore_sections(engine: "Engine", header: dict, sections: dict, path) -> dict:
    mine, theirs = fingerprint(engine), header["fingerprint"]
    for key in mine:
        if mine[key] != theirs.get(key):
            raise CheckpointError(f"{path}: written for other {key} than this engine's "
                                  "(campaigns, counters and subscribers must be the same)")
    try:
        engine._core.restore_state(header["scalars"], sections)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return header.get("extra", {})


# ---------------------------------------------------------------------------------------
# Incremental checkpoints for the daemon.
#
# A full checkpoint writes every subscriber row: O(subscribers), seconds at province scale.
# The store writes one full checkpoint (a *base*) per generation and then, per checkpoint,
# one *record* appended to the generation's log: the rows and contact states that changed
# since the previous one (the core notes them as it goes), the small sections whole, the
# scalars and the caller's extra. A record is appended and fdatasync'ed; one torn by a crash
# fails its length or crc and is cut off at the next start. Restoring reads the base and
# applies the records in order. When the log has grown to the size of the base, the next
# checkpoint is a new base (a new generation); the previous generation is kept as the
# fallback for a damaged base.
#
#     STATE/base-00000007      a full checkpoint (the format above), header "generation": 7
#     STATE/log-00000007       records: RECORD_MAGIC, u32 header length, header (JSON),
#                              u32 crc32 of the header, sections (crc32 each in the header)

RECORD_MAGIC = b"SMCKLOG\n"
_RECORD_DTYPES = {"subscribers": np.uint32, "rows": np.uint8, "contacts": np.uint8, "timers": np.uint8,
                  "funnel": np.uint64, "counts": np.uint64, "carry": np.uint8, "dead_run": np.uint8,
                  "bad_fields": np.uint64, "budgets": np.uint8, "windows": np.int64}
# written whole by every record: the newest one holds them
_WHOLE_SECTIONS = ("timers", "funnel", "counts", "carry", "dead_run", "bad_fields", "budgets")
_CONTACT_BYTES = 32     # sizeof(ContactC): key, last_ts, last_seq, streak, flags


class Loaded:
    """The state a store holds: the base with every good record applied."""

    def __init__(self, generation: int, header: dict, sections: dict, path: Path):
        self.generation = generation
        self.header = header            # the base's, with scalars and extra of the last record applied
        self.sections = sections
        self.path = path
        self.records = 0                # records applied
        self.log_end = 0                # bytes of the log that hold good records
        self.damage: Optional[str] = None       # why reading stopped early, when it did
        self.later_extras: list[dict] = []      # extras of readable records after the damage
        self.fallbacks: list[str] = []          # newer generations that could not be used

    @property
    def extra(self) -> dict:
        return self.header.get("extra", {})

    @property
    def subscribers(self) -> np.ndarray:
        return self.sections["subscribers"]


def _merge_contacts(parts: list[np.ndarray]) -> np.ndarray:
    """Contact states of the base and of each record, in order: the last one of each key wins."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.empty(0, np.uint8)
    merged = np.concatenate(parts).reshape(-1, _CONTACT_BYTES)
    keys = merged[:, :8].copy().view(np.uint64).reshape(-1)
    _, last_from_end = np.unique(keys[::-1], return_index=True)
    keep = np.sort(len(keys) - 1 - last_from_end)
    return np.ascontiguousarray(merged[keep]).reshape(-1)


def _merge_windows(parts: list[np.ndarray], words: int) -> np.ndarray:
    """Kept contact times (entries of `words` int64, keyed by the first) of the base and of
    each record, in order: the last one of each subscriber wins."""
    parts = [p for p in parts if len(p)]
    if not parts or words <= 2:
        return np.zeros(0, np.int64)
    merged = np.concatenate(parts).reshape(-1, words)
    _, last_from_end = np.unique(merged[::-1, 0], return_index=True)
    keep = np.sort(len(merged) - 1 - last_from_end)
    return np.ascontiguousarray(merged[keep]).reshape(-1)


def _read_exact(f, n: int) -> Optional[bytes]:
    data = f.read(n)
    return data if len(data) == n else None


def engine_for(config_path, loaded: Loaded, **options) -> tuple["Engine", Optional[int]]:
    """An engine of the configuration, profiles, lists and areas as they are now, holding the
    loaded state. When they are what the checkpoint was written for, it is restored as it was
    (None comes back). When they changed while the service was stopped (a new profile
    snapshot, an edited campaign), the state is carried over as a reload carries it
    (subscribers keep their indexes, new ones appended, gone ones inactive; campaigns by id,
    counters by name) and the number of pending actions of removed campaigns comes back.
    `options` go to the Engine (record_takers)."""
    from engine._core import Core
    from engine.api import Engine
    engine = Engine.from_config(config_path, keep=loaded.subscribers, **options)
    theirs = loaded.header["fingerprint"]
    scalars = loaded.header["scalars"]
    mine = fingerprint(engine)
    # a layout of six entries was written before markers: none
    layout = list(scalars["layout"]) + [0] * (7 - len(scalars["layout"]))
    if (all(theirs.get(key) == value for key, value in mine.items()) and ("markers" in theirs) == ("markers" in mine)
            and layout == engine._core.state_scalars()["layout"]
            and scalars.get("channels", engine._core.channel_names) == engine._core.channel_names
            and scalars.get("window_contacts", 0) == engine._core.window_contacts):
        restore_sections(engine, loaded.header, loaded.sections, loaded.path)
        return engine, None
    if "counter_windows" not in theirs:
        raise CheckpointError(f"{loaded.path}: written for other campaigns, counters or subscribers, by a "
                              "sigmatch that did not record enough to carry its state over")
    # The checkpoint's own engine, as far as its state needs one: its layout, subscribers,
    # counter windows and campaign count. Then the state moves over as in Engine.reload.
    nr_words, nr_counters, nr_windows, nr_markers = layout[1], layout[2], layout[3], layout[6]
    old = Core(engine.max_event_bytes)
    try:
        old.set_layout(nr_words, nr_counters, nr_windows, nr_markers)
        old.set_subscribers(np.ascontiguousarray(loaded.subscribers, dtype=np.uint64))
        old.set_counters([(0, 0, 0, 1 if windowed else 0) for windowed in theirs["counter_windows"]])
        old.set_markers([(0, 0, None)] * nr_markers)
        channels = scalars.get("channels", [""])
        old.set_channels(list(channels), [None] * len(channels))
        old.set_max_in_window(scalars.get("window_contacts", 0), 1)
        old.set_campaigns([dict(id=campaign, types=0, convert_types=0, convert_arg=None, elig=(0, 0),
                                recheck_elig=(0, 0), area=None, peer_set=-1, cooldown_ms=0, delay_ms=0,
                                convert_within_ms=None, hours=None, days=0x7F, counter=-1, at_least=0,
                                stop_after=None, holdout=0, recheck=0, exempt=0, enter=False, once=False)
                           for campaign in theirs["campaigns"]])
        old.restore_state(scalars, loaded.sections)
        campaigns = {c.id: i for i, c in enumerate(engine.config.campaigns)}
        counters = {c.name: i for i, c in enumerate(engine.config.counters)}
        markers = {m.name: i for i, m in enumerate(engine.config.markers)}
        dropped = engine._core.transfer_from(old, [campaigns.get(c, -1) for c in theirs["campaigns"]],
                                             [counters.get(c, -1) for c in theirs["counters"]],
                                             len(loaded.subscribers),
                                             [markers.get(m, -1) for m in theirs.get("markers", [])])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{loaded.path}: cannot carry the state over to this configuration: {e}") from None
    return engine, dropped


class CheckpointStore:
    """A directory of incremental checkpoints (see above). `save` writes one; `load` reads
    the newest usable state and `adopt` continues its log after a restore."""

    def __init__(self, directory, *, rebase_ratio: float = 1.0):
        self.directory = Path(directory)
        self.rebase_ratio = rebase_ratio
        self.generation: Optional[int] = None
        self.previous: Optional[int] = None     # the generation kept as the fallback
        self.base_bytes = 0
        self.log_bytes = 0
        self.records = 0
        self._core = None                       # the core whose changes the log follows
        self._rebase = False
        self._prepared = False
        self._buffers: dict[str, np.ndarray] = {}

    def base_path(self, generation: int) -> Path:
        return self.directory / f"base-{generation:08d}"

    def log_path(self, generation: int) -> Path:
        return self.directory / f"log-{generation:08d}"

    def generations(self) -> list[int]:
        """Generations with a base, newest first."""
        found = []
        for path in self.directory.glob("base-*"):
            suffix = path.name[5:]
            if suffix.isdigit():
                found.append(int(suffix))
        return sorted(found, reverse=True)

    def exists(self) -> bool:
        return bool(self.generations())

    def rebase_next(self) -> None:
        """Make the next checkpoint a new base (a new generation): the current one then becomes
        the fallback, and what its records moved is covered by its last record."""
        self._rebase = True

    def record_extras(self) -> Optional[list[dict]]:
        """The extras of the current generation's records, in order (what a fallback to an
        older checkpoint would undo); None when fewer can be read than were written."""
        if self.generation is None:
            return None
        extras = self._record_extras(self.generation)
        return extras if len(extras) >= self.records else None

    # -- reading

    def load(self) -> Optional[Loaded]:
        """The newest usable state, or None when the store is empty. A damaged base is
        reported and the previous generation used; a damaged record ends its log there
        (`damage`). CheckpointError when nothing is usable."""
        reasons, skipped = [], []
        for generation in self.generations():
            path = self.base_path(generation)
            try:
                header, sections = read_checkpoint(path)
                if header.get("generation") != generation:
                    raise CheckpointError(f"{path}: holds generation {header.get('generation')}")
            except CheckpointError as e:
                log.error(f"cannot use checkpoint: {e}")
                reasons.append(str(e))
                # what its records covered is not in the state used instead
                skipped += self._record_extras(generation)
                continue
            loaded = Loaded(generation, header, sections, path)
            loaded.fallbacks = reasons
            self._apply_log(loaded)
            loaded.later_extras += skipped
            return loaded
        if reasons:
            raise CheckpointError(f"{self.directory}: no usable checkpoint ({'; '.join(reasons)})")
        return None

    def _apply_log(self, loaded: Loaded) -> None:
        path = self.log_path(loaded.generation)
        if not path.exists():
            return
        header = loaded.header
        sections = loaded.sections
        stride = int(header["scalars"]["layout"][0])
        nr_subscribers = int(header["scalars"]["layout"][4])
        rows = sections["rows"].reshape(nr_subscribers, stride) if stride else sections["rows"]
        contacts = [sections["contacts"]]
        windows = [sections.get("windows", np.zeros(0, np.int64))]
        with open(path, "rb") as f:
            while True:
                start = f.tell()
                record, problem, torn = self._read_record(f, loaded.generation, loaded.records + 1)
                if torn:
                    if problem:
                        log.info(f"{path}: a record torn by a crash at byte {start:,} is cut off")
                    break
                if problem:
                    loaded.damage = f"{path}: record {loaded.records + 1:,} at byte {start:,}: {problem}"
                    log.error(f"cannot use checkpoint: {loaded.damage}; the state of the record before it is used")
                    if record is not None:
                        loaded.later_extras.append(record[0].get("extra", {}))
                        self._collect_later_extras(f, loaded)
                    break
                record_header, data = record
                subs, changed = data["subscribers"], data["rows"]
                if len(changed) != len(subs) * stride or (len(subs) and int(subs.max()) >= nr_subscribers):
                    loaded.damage = f"{path}: record {loaded.records + 1:,} does not fit the base"
                    log.error(f"cannot use checkpoint: {loaded.damage}")
                    break
                if len(subs):
                    rows[subs] = changed.reshape(-1, stride)
                contacts.append(data["contacts"])
                if "windows" in data:
                    windows.append(data["windows"])
                for name in _WHOLE_SECTIONS:
                    if name in data:
                        sections[name] = data[name]
                    else:
                        sections.pop(name, None)     # a record of an earlier sigmatch
                header["scalars"] = record_header["scalars"]
                header["extra"] = record_header.get("extra", {})
                loaded.records += 1
                loaded.log_end = f.tell()
        sections["contacts"] = _merge_contacts(contacts)
        sections["windows"] = _merge_windows(windows, int(header["scalars"].get("window_contacts", 0)) + 2)

    def _record_extras(self, generation: int) -> list[dict]:
        """The extras of a log's records whose headers can be read (their sections unread)."""
        extras = []
        path = self.log_path(generation)
        if path.exists():
            with open(path, "rb") as f:
                number = 1
                while True:
                    record, _, _ = self._read_record(f, generation, number, headers_only=True)
                    if record is None:
                        break
                    extras.append(record[0].get("extra", {}))
                    number += 1
        return extras

    def _collect_later_extras(self, f, loaded: Loaded) -> None:
        number = loaded.records + 2
        while True:
            record, problem, torn = self._read_record(f, loaded.generation, number, headers_only=True)
            if record is None:
                return
            loaded.later_extras.append(record[0].get("extra", {}))
            number += 1

    @staticmethod
    def _read_record(f, generation: int, number: int, headers_only: bool = False):
        """((header, sections) or None, problem or None, torn): torn when the file ends inside
        the record (a crash while it was appended); a record with a readable header comes back
        with its problem, so that its extra can still be read."""
        magic = f.read(len(RECORD_MAGIC))
        if not magic:
            return None, None, True
        if len(magic) < len(RECORD_MAGIC):
            return None, "short magic", True
        if magic != RECORD_MAGIC:
            return None, "not a record", False
        raw = _read_exact(f, 4)
        if raw is None:
            return None, "short header", True
        (length,) = struct.unpack("<I", raw)
        if length > 64 << 20:
            return None, f"header length {length:,} is not plausible", False
        header_bytes, raw = _read_exact(f, length), None
        if header_bytes is not None:
            raw = _read_exact(f, 4)
        if header_bytes is None or raw is None:
            return None, "short header", True
        if struct.unpack("<I", raw)[0] != zlib.crc32(header_bytes):
            return None, "damaged header", False
        try:
            header = json.loads(header_bytes)
            described = [(s["name"], int(s["nbytes"]), int(s["crc32"])) for s in header["sections"]]
        except (ValueError, KeyError, TypeError) as e:
            return None, f"unreadable header: {e}", False
        if header.get("generation") != generation or header.get("number") != number:
            return (header, None), (f"record of generation {header.get('generation')} number "
                                    f"{header.get('number')}, expected {generation} number {number}"), False
        data, problem = {}, None
        for name, nbytes, crc in described:
            if headers_only:
                f.seek(nbytes, os.SEEK_CUR)
                if f.tell() > os.fstat(f.fileno()).st_size:
                    return None, "short section", True
                continue
            chunk = bytearray(nbytes)
            if f.readinto(chunk) != nbytes:
                return (header, None), f"truncated in section {name!r}", True
            if name not in _RECORD_DTYPES:
                problem = problem or f"unknown section {name!r}"
            elif zlib.crc32(chunk) != crc:
                problem = problem or f"section {name!r} is damaged (crc mismatch)"
            else:
                data[name] = np.frombuffer(chunk, dtype=_RECORD_DTYPES[name])
        if problem is None and not headers_only and not (set(_RECORD_DTYPES) - _ADDED_SECTIONS <= set(data)):
            problem = "sections missing"
        return (header, data), problem, False

    def adopt(self, loaded: Loaded, engine: "Engine", *, rebase: bool = False) -> None:
        """Continue the loaded generation's log for an engine restored from it (its changes
        are tracked from here). After damage, or with `rebase` (an engine that holds the
        state in another layout), the next checkpoint is a new base."""
        self.generation = loaded.generation
        self.previous = None    # the loaded generation itself is the fallback of the next base
        self.base_bytes = self.base_path(loaded.generation).stat().st_size
        self.records = loaded.records
        self.log_bytes = loaded.log_end
        self._rebase = bool(loaded.damage or loaded.fallbacks or rebase)
        if not self._rebase:
            path = self.log_path(loaded.generation)
            if path.exists() and path.stat().st_size != loaded.log_end:
                with open(path, "r+b") as f:
                    f.truncate(loaded.log_end)      # the torn tail of a crash
                    os.fsync(f.fileno())
        engine._core.track_changes()
        self._core = engine._core

    # -- writing

    def save(self, engine: "Engine", extra: Optional[dict] = None) -> dict:
        """Checkpoint `engine`: a record when the log can take one, else a new base.
        Returns what was written: {"kind": "base" | "record", "bytes": n}."""
        return self.prepare(engine, extra).write()

    def prepare(self, engine: "Engine", extra: Optional[dict] = None,
                copy_limit: int = 0) -> "PreparedCheckpoint":
        """Take what the next checkpoint holds from `engine`. A record is a copy; so is a base
        when its rows are at most `copy_limit` bytes (`detached`): the engine can then go on
        while `write()` runs on another thread. Otherwise write() must come first. One
        prepared checkpoint at a time: write it before preparing the next."""
        if self._prepared:
            raise RuntimeError("the previous prepared checkpoint is not written yet")
        core = engine._core
        # a new base when the log is as big as one, or when the record would be about as big
        # as a base (it then costs the same to write and restores faster)
        stride = core.state_scalars()["layout"][0]
        if (self.generation is None or core is not self._core or not core.tracking or self._rebase
                or self.log_bytes >= self.rebase_ratio * self.base_bytes
                or core.nr_changed * (stride + 4) >= 0.9 * self.base_bytes):
            core.track_changes()
            generation = max(self.generations(), default=0) + 1
            rows_bytes = len(engine.subscribers) * core.state_scalars()["layout"][0]
            detached = rows_bytes <= copy_limit
            header, sections = _snapshot(engine, extra, generation, copy=detached, buffer=self._buffer)
            self._core = core
            prepared = PreparedCheckpoint(self, "base", generation, header, sections, detached)
            prepared.warm = min(rows_bytes, copy_limit)
        else:
            subs, contacts = core.take_changes()
            stride = core.state_scalars()["layout"][0]
            rows = self._buffer("changed rows", len(subs) * stride)[:len(subs) * stride]
            np.take(core.rows().reshape(-1, stride), subs, axis=0, out=rows.reshape(len(subs), stride))
            sections = ([("subscribers", subs), ("rows", rows), ("contacts", contacts),
                         ("windows", core.window_entries(subs))] + core.small_sections())
            header = {"generation": self.generation, "number": self.records + 1,
                      "scalars": core.state_scalars(), "extra": extra or {}}
            prepared = PreparedCheckpoint(self, "record", self.generation, header, sections, True)
        self._prepared = True
        return prepared

    def _buffer(self, name: str, nbytes: int) -> np.ndarray:
        """Memory for copies, kept from one checkpoint to the next: fresh pages would each
        fault on first touch, which costs more than the copy."""
        buffer = self._buffers.get(name)
        if buffer is None or len(buffer) < nbytes:
            buffer = np.empty(max(nbytes, int(len(buffer) * 1.25) if buffer is not None else 0), np.uint8)
            self._buffers[name] = buffer
        return buffer

    def _write_record(self, header: dict, sections: list) -> int:
        encoded = json.dumps({**header, "sections": [
            {"name": name, "nbytes": int(a.nbytes), "crc32": zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"))}
            for name, a in sections]}).encode()
        path = self.log_path(header["generation"])
        created = not path.exists()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        except OSError as e:
            raise _naming(e, path) from None
        written = 0
        try:
            if created:
                os.fchmod(fd, FILE_MODE)
            parts = [RECORD_MAGIC, struct.pack("<I", len(encoded)), encoded, struct.pack("<I", zlib.crc32(encoded))]
            parts += [memoryview(np.ascontiguousarray(a)).cast("B") for _, a in sections]
            for part in parts:
                view = memoryview(part)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                    written += n
            os.fdatasync(fd)
        except OSError as e:
            raise _naming(e, path) from None
        finally:
            os.close(fd)
        if created:
            fsync_path(self.directory)
        return written

    def _prune(self) -> None:
        keep = {self.generation, self.previous}
        for path in list(self.directory.glob("base-*")) + list(self.directory.glob("log-*")):
            suffix = path.name.split("-", 1)[1]
            if suffix.isdigit() and int(suffix) not in keep:
                path.unlink(missing_ok=True)


class PreparedCheckpoint:
    """A checkpoint taken from the engine and not yet on disk (CheckpointStore.prepare)."""

    def __init__(self, store: CheckpointStore, kind: str, generation: int, header: dict, sections: list,
                 detached: bool):
        self.store = store
        self.kind = kind
        self.generation = generation
        self.header = header
        self.sections = sections
        self.detached = detached        # holds copies only: the engine may go on meanwhile
        self.warm = 0                   # bytes of record buffer to have ready afterwards

    def write(self) -> dict:
        """Write it durably; returns {"kind": "base" | "record", "bytes": n}."""
        store = self.store
        try:
            if self.kind == "base":
                path = _write_full(store.base_path(self.generation), self.header, self.sections)
                if store.generation is not None:
                    store.previous = store.generation
                store.generation = self.generation
                store.base_bytes = path.stat().st_size
                store.log_bytes = 0
                store.records = 0
                store._rebase = False
                store._prune()
                written = store.base_bytes
                if self.warm:
                    # The records that follow gather changed rows here: touched now, on this
                    # thread, rather than page by page while the engine waits. With distinct
                    # words: pages of one repeated value are merged back (the zero page, or a
                    # hypervisor's same-page merging) and then fault on the first write again.
                    buffer = store._buffer("changed rows", self.warm)
                    words = buffer[:len(buffer) // 8 * 8].view(np.uint64)
                    words[:] = np.arange(len(words), dtype=np.uint64)
            else:
                written = store._write_record(self.header, self.sections)
                store.records += 1
                store.log_bytes += written
        except BaseException:
            store._rebase = True        # the changes it held are no longer noted in the core
            raise
        finally:
            store._prepared = False
            self.sections = []
        return {"kind": self.kind, "bytes": written}
