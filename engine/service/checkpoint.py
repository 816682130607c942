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
import stat
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from engine.errors import CheckpointError
from engine.sinks import fsync_path, make_private_directories, read_plain_head
from engine.wording import plural

if TYPE_CHECKING:
    from engine.api import Engine

__all__ = ["write_checkpoint", "read_checkpoint", "restore_checkpoint", "subscriber_order", "fingerprint",
           "CheckpointStore", "Loaded", "CheckpointSet", "LoadedSet", "read_header", "VERSION"]

MAGIC = b"SIGMATCH-CHECKPOINT\n"
# 2 (2026-12-02): a waiting delayed action is known by its timer alone, no longer by a flag in
# a contact state. This version restores 1 as well; a sigmatch that reads only 1 refuses 2,
# where it would let a waiting pair match again.
VERSION = 2
READABLE = (1, 2)
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
                     generation: Optional[int] = None, tallies: Optional[dict] = None) -> Path:
    """Write the engine's state to `path` atomically; returns the path. `tallies` (JSON):
    the API's counts by day and variant, which stats.json gives and the core does not hold."""
    header, sections = _snapshot(engine, extra, generation, copy=False)
    if tallies is not None:
        header["tallies"] = tallies
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
        # the checkpoint asked for, not its hidden temporary name (helper-128)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
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
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
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


def _read_header(f, path: Path) -> dict:
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
    try:
        header = json.loads(header_bytes)
    except (ValueError, RecursionError):
        raise CheckpointError(f"{path}: damaged header") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: damaged header")
    if header.get("version") not in READABLE:
        raise CheckpointError(f"{path}: checkpoint version {header.get('version')!r}, "
                              f"this engine reads {' and '.join(map(str, READABLE))}")
    # A header edited by hand, its crc made again, still has the shape every reader expects.
    scalars = header.get("scalars")
    for key, ok in (("scalars", isinstance(scalars, dict)),
                    ("scalars.layout", isinstance(scalars, dict) and isinstance(scalars.get("layout"), list)
                     and all(isinstance(v, int) for v in scalars["layout"])),
                    ("fingerprint", isinstance(header.get("fingerprint"), dict)),
                    ("sections", isinstance(header.get("sections"), list)),
                    ("extra", isinstance(header.get("extra", {}), dict))):
        if not ok:
            raise CheckpointError(f"{path}: damaged header: {key} is missing or not what a checkpoint holds")
    return header


def read_header(path) -> dict:
    """The header of a checkpoint file, its sections unread (a base is gigabytes);
    CheckpointError when it is missing, of another version, or its header is damaged."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _read_header(f, path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint: "
                              f"{e.strerror if isinstance(e, OSError) and e.strerror else e}") from None


def read_checkpoint(path) -> tuple[dict, dict]:
    """(header, sections as NumPy arrays) of a checkpoint file; CheckpointError when it is
    missing, of another version, or damaged anywhere."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            header = _read_header(f, path)
            sections = {}
            size = os.fstat(f.fileno()).st_size
            for section in header["sections"]:
                name, nbytes = section["name"], int(section["nbytes"])
                if name not in _DTYPES:
                    raise CheckpointError(f"{path}: unknown section {name!r}")
                if not 0 <= nbytes <= size - f.tell():
                    # before the memory is taken: a header edited to say 2**40 bytes was a
                    # MemoryError (helper-126)
                    raise CheckpointError(f"{path}: truncated in section {name!r}")
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
        raise CheckpointError(f"{path}: unreadable checkpoint: "
                              f"{e.strerror if isinstance(e, OSError) and e.strerror else e}") from None
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


# The core's scalars by the C type they are put into (engine/_types.pxi): a header edited
# by hand (its crc made again) is refused before anything is restored, where a value out of
# its type's range failed half-way, the sections restored and the counts not (helper-126)
_INT64_SCALARS = ("clock",)
_UINT64_SCALARS = ("seq", "conversion_seq", "timers_created", "carry_offset", "stream_offset", "late_events",
                   "bad_bytes")
# read with a default: a checkpoint of an earlier sigmatch has none of them
_SCALARS_ADDED_LATER = ("late_events", "bad_bytes")


def _scalars_problem(scalars: dict) -> Optional[str]:
    """What in a checkpoint's scalars the core cannot take, or None."""
    def whole(value, lo, hi) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and lo <= value < hi

    for key in _INT64_SCALARS + _UINT64_SCALARS + ("has_clock",):
        # those every checkpoint has (the core reads them without a default): missing, one
        # failed after the sections were restored (helper-127)
        if key not in scalars and key not in _SCALARS_ADDED_LATER:
            return f"scalars.{key} (missing)"
    for key in _INT64_SCALARS + _UINT64_SCALARS:
        lo, hi = (-(1 << 63), 1 << 63) if key in _INT64_SCALARS else (0, 1 << 64)
        if key in scalars and not whole(scalars[key], lo, hi):
            return f"scalars.{key} {json.dumps(scalars[key])[:40]}"
    if scalars.get("has_clock") not in (0, 1):
        return f"scalars.has_clock {json.dumps(scalars.get('has_clock'))[:40]}"
    largest = scalars.get("largest_bad_value", (0, 0))
    if not (isinstance(largest, (list, tuple)) and len(largest) == 2 and all(whole(v, 0, 1 << 64) for v in largest)):
        return f"scalars.largest_bad_value {json.dumps(largest)[:40]}"
    run = scalars.get("dead_run")
    if run is not None and not (isinstance(run, dict) and all(
            whole(run.get(k), 0, 1 << 64) for k in ("offset", "count", "reason", "field", "span", "span_records"))):
        return f"scalars.dead_run {json.dumps(run)[:60]}"
    return None


def check_fingerprint(engine: "Engine", header: dict, path) -> None:
    """CheckpointError when the checkpoint was written for other campaigns, counters or
    subscribers than `engine`'s."""
    mine, theirs = fingerprint(engine), header["fingerprint"]
    for key in mine:
        if mine[key] != theirs.get(key):
            raise CheckpointError(f"{path}: written for other {key} than this engine's "
                                  "(campaigns, counters and subscribers must be the same)")


def restore_sections(engine: "Engine", header: dict, sections: dict, path) -> dict:
    check_fingerprint(engine, header, path)
    problem = _scalars_problem(header["scalars"])
    if problem is not None:
        raise CheckpointError(f"{path}: damaged header: {problem} is not what a checkpoint holds")
    try:
        engine._core.restore_state(header["scalars"], sections)
    except (ValueError, TypeError, OverflowError, KeyError) as e:
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


def is_checkpoint_name(name: str) -> bool:
    """Whether a file name is one the store writes: base-NNNNNNNN or log-NNNNNNNN, the
    generation in 8 digits or more without a leading zero beyond them (a user's own
    log-today.txt or base-2026 is not)."""
    kind, _, generation = name.partition("-")
    return (kind in ("base", "log") and generation.isascii() and generation.isdigit() and len(generation) >= 8
            and (len(generation) == 8 or generation[0] != "0"))


def is_checkpoint_file(path: Path) -> bool:
    """Whether `path` is a checkpoint file the store wrote: its name (is_checkpoint_name) and
    its first bytes, a base's MAGIC or a log's RECORD_MAGIC (a log may be empty). A user's
    own file of such a name (log-20261206, notes of a day) is neither read as one nor
    removed with the old generations (helper-119: it blocked every replay below it, and a
    service deleted it). Unreadable: False."""
    if not is_checkpoint_name(path.name):
        return False
    magic = MAGIC if path.name.startswith("base-") else RECORD_MAGIC
    head = read_plain_head(path, len(magic))
    if head is None:
        return False
    return head == magic or (magic is RECORD_MAGIC and head == b"")


def holds_checkpoints(directory: Path) -> bool:
    """Whether `directory` holds a service's checkpoints as the checkpoint store writes them
    (base-NNNNNNNN, log-NNNNNNNN, or those under shard-N/, each with the store's magic): a
    user's own `log-today.txt` or `log-20261206` is not one."""
    directory = Path(directory)
    try:
        return (any(is_checkpoint_file(p) for p in directory.glob("base-*"))
                or any(is_checkpoint_file(p) for p in directory.glob("log-*"))
                or any(is_checkpoint_file(p) and p.parent.name[6:].isdigit()
                       for p in directory.glob("shard-*/base-*")))
    except OSError:
        return False


def service_directory_problem(out: Path, *, exists: bool) -> Optional[str]:
    """Why `out` must not take a run's output files as a service's directory or inside one,
    or None: a spool (its lock file: the service would take the files for input, move them
    to rejected/, prune its done/), a state directory (checkpoints, a running service's held
    lock, the lock file a service killed before its first checkpoint leaves), or a directory
    inside either. `exists`: whether `out` itself is there (its own contents are asked only
    then)."""
    from engine.sinks import SPOOL_LOCK
    for above in Path(os.path.realpath(out)).parents:
        if os.path.lexists(above / SPOOL_LOCK):
            return f"is inside a service's --spool {above} ({SPOOL_LOCK})"
        if holds_checkpoints(above):
            return f"is inside a service's --state {above} (it holds checkpoints)"
    if exists:
        if os.path.lexists(Path(out) / SPOOL_LOCK):
            return f"is a service's --spool ({SPOOL_LOCK})"
        if holds_checkpoints(Path(out)):
            return "is a service's --state (it holds checkpoints)"
        if _locked_by_another(Path(out) / "lock"):
            return "is a running service's --state (its lock is held)"
        if _service_lock_file(Path(out) / "lock"):
            # a service killed before its first checkpoint leaves only this; no run writes it
            return "holds the lock file of a service's --state"
    return None


def _service_lock_file(path: Path) -> bool:
    """Whether `path` looks like STATE/lock: a plain file, empty or holding a PID
    (sinks.lock_holder), as sinks.hold_lock leaves it. A user's own file named `lock` holds
    something else."""
    from engine.sinks import lock_holder
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return not os.path.islink(path)     # unreadable: taken for a service's, as before
    try:
        info = os.fstat(fd)
        # blank counts as empty: a PID is read with the white space around it stripped
        return stat.S_ISREG(info.st_mode) and (not os.pread(fd, 33, 0).strip() or lock_holder(fd) is not None)
    finally:
        os.close(fd)


def _locked_by_another(path: Path) -> bool:
    """Whether `path` is a plain file that another process holds an flock on (STATE/lock of
    a running service, before its first checkpoint)."""
    import fcntl
    from engine.sinks import open_plain
    fd = open_plain(path)
    if fd is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False        # a filesystem without locks: nothing to say
    finally:
        os.close(fd)


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


def _both_layouts(directory: Path) -> str:
    return (f"--state {directory}: holds both the checkpoint of a service without --workers (base-*) and those of "
            "one with --workers (shard-*/): move one of them away")


class _NoCommit(CheckpointError):
    """A checkpoint of a CheckpointSet's store without its commit number."""


def _commit(header: dict, where) -> int:
    """The commit number (CheckpointSet) in a base's or record's header's extra."""
    commit = (header.get("extra") or {}).get("commit")
    if not isinstance(commit, int) or isinstance(commit, bool):
        raise _NoCommit(f"{where}: holds no commit number: a checkpoint of a service without --workers")
    return commit


def _seek_magic(f, offset: int, chunk: int = 1 << 20) -> bool:
    """Position `f` at the first RECORD_MAGIC at or after `offset`: True, or False when the
    file holds none (read in chunks: a log is as large as its base, gigabytes)."""
    overlap = len(RECORD_MAGIC) - 1
    assert chunk > overlap
    while True:
        f.seek(offset)
        data = f.read(chunk)
        at = data.find(RECORD_MAGIC)
        if at >= 0:
            f.seek(offset + at)
            return True
        if len(data) < chunk:
            return False
        offset += len(data) - overlap


def _read_exact(f, n: int) -> Optional[bytes]:
    data = f.read(n)
    return data if len(data) == n else None


def engine_for(config_path, loaded: Loaded, *, config=None, world=None, **options) -> tuple["Engine", Optional[int]]:
    """An engine of the configuration, profiles, lists and areas as they are now, holding the
    loaded state. When they are what the checkpoint was written for, it is restored as it was
    (None comes back). When they changed while the service was stopped (a new profile
    snapshot, an edited campaign), the state is carried over as a reload carries it
    (subscribers keep their indexes, new ones appended, gone ones inactive; campaigns by id,
    counters by name) and the number of pending actions of removed campaigns comes back.
    `config` and `world`: the configuration and world already loaded from `config_path` (the
    workers of a CheckpointSet share them: loaded once, not once per worker). `options` go to
    the Engine (record_takers, shard)."""
    from engine._core import Core
    from engine.api import Engine
    if config is not None:
        engine = Engine(config, world, keep=loaded.subscribers, **options)
    else:
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
            # a damaged base is one still (the load reports it and falls back); a name the
            # store does not write (base-2026) is no base
            if is_checkpoint_name(path.name):
                found.append(int(path.name[5:]))
        return sorted(found, reverse=True)

    def exists(self) -> bool:
        return bool(self.generations())

    def rebase_next(self) -> None:
        """Make the next checkpoint a new base (a new generation): the current one then becomes
        the fallback, and what its records moved is covered by its last record."""
        self._rebase = True

    def written_at(self) -> Optional[float]:
        """When the checkpoint the store continues from was written (the modification time of
        its generation's log, or of its base when the log holds no record; seconds since the
        epoch), None before the first."""
        if self.generation is None:
            return None
        path = self.log_path(self.generation) if self.records else self.base_path(self.generation)
        try:
            return path.stat().st_mtime
        except OSError:
            return None

    def held_extras(self) -> list[dict]:
        """The extras of every base and record the store holds whose header can be read, by
        generation, oldest first (sections unread: a few KB read per checkpoint)."""
        extras = []
        for generation in sorted(self.generations()):
            try:
                extras.append(read_header(self.base_path(generation)).get("extra", {}))
            except CheckpointError:
                pass
            extras += self._record_extras(generation)
        return extras

    def newest_commit(self) -> Optional[int]:
        """The highest commit number (a CheckpointSet's) among the extras the store holds,
        usable or not; None when none holds one."""
        return max((e["commit"] for e in self.held_extras() if isinstance(e.get("commit"), int)), default=None)

    def discard_newer(self, loaded: Loaded) -> None:
        """Remove what the store holds beyond the state `loaded`: the generations after
        its own (the base of a checkpoint that was not complete in every store of a set, or
        a damaged one, which the next base's pruning would remove anyway), and the records
        of its log after those applied, unless the log is damaged (then it stays as it is,
        the fallback of the next base, as after `adopt`)."""
        removed = False
        for path in self._files_of(lambda generation: generation > loaded.generation):
            path.unlink(missing_ok=True)
            removed = True
        path = self.log_path(loaded.generation)
        if loaded.damage is None and path.exists() and path.stat().st_size > loaded.log_end:
            with open(path, "r+b") as f:
                f.truncate(loaded.log_end)
                os.fsync(f.fileno())
        if removed:
            fsync_path(self.directory)

    def layout_error(self) -> Optional[str]:
        """One line when the directory holds no checkpoint of this store's own but those of a
        service with --workers (CheckpointSet): the service must start with as many; or when
        it is itself the store of one worker of such a service (a shard-*/ directory)."""
        if self.exists():
            if CheckpointSet._recorded(self.directory)[0]:
                return _both_layouts(self.directory)
            for generation in self.generations():
                try:
                    workers = read_header(self.base_path(generation)).get("workers")
                except CheckpointError:
                    continue
                if isinstance(workers, int) and workers > 1:
                    return (f"--state {self.directory}: holds the checkpoints of one worker of a service with "
                            f"--workers {workers} (a shard-*/ directory): give the state directory above it")
                break
            return None
        holding, recorded = CheckpointSet._recorded(self.directory)
        if not holding:
            return None
        if len(recorded) != 1:
            return CheckpointSet._unclear(self.directory, holding, recorded)
        workers = recorded.pop()
        return (f"--state {self.directory}: holds the checkpoint of a service with --workers {workers}: "
                f"start it with --workers {workers}, or rewrite it first with `sigmatch reshard --state "
                f"{self.directory} --workers 1`")

    def record_extras(self) -> Optional[list[dict]]:
        """The extras of the current generation's records, in order (what a fallback to an
        older checkpoint would undo); None when fewer can be read than were written."""
        if self.generation is None:
            return None
        extras = self._record_extras(self.generation)
        return extras if len(extras) >= self.records else None

    # -- reading

    def load(self, upto_commit: Optional[int] = None) -> Optional[Loaded]:
        """The newest usable state, or None when the store is empty. A damaged base is
        reported and the previous generation used; a damaged record ends its log there
        (`damage`). CheckpointError when nothing is usable.

        With `upto_commit` (a store of a CheckpointSet, whose extras hold "commit"): the
        newest usable state whose commit is at most that. A generation whose base is of a
        later commit is passed over (neither a fallback nor damage, its records' extras not
        in `later_extras`), and a log ends before its first record of a later commit as at
        its end (`records` and `log_end` describe the state loaded, and `adopt` cuts the log
        there); `later_extras` then holds only extras of commits up to `upto_commit`. None
        when no state is that old. A base or record without a commit number is a
        CheckpointError naming the file (the store of a service without --workers)."""
        reasons, skipped = [], []
        for generation in self.generations():
            path = self.base_path(generation)
            try:
                # the header alone says whether the base is too new: its rows are gigabytes
                if upto_commit is not None and _commit(read_header(path), path) > upto_commit:
                    continue
                header, sections = read_checkpoint(path)
                if header.get("generation") != generation:
                    raise CheckpointError(f"{path}: holds generation {header.get('generation')}")
            except _NoCommit:
                raise
            except CheckpointError as e:
                # logged once an older generation is used instead: when none is, the
                # CheckpointError below says it, and a command's error is one line
                reasons.append(str(e))
                # what it and its records covered is not in the state used instead: the files
                # the base covered are moved by its first record, whose header may be damaged too
                try:
                    skipped.append(read_header(path).get("extra", {}))
                except CheckpointError:
                    pass
                skipped += self._record_extras(generation)
                continue
            for reason in reasons:
                log.error(f"cannot use checkpoint: {reason}")
            loaded = Loaded(generation, header, sections, path)
            loaded.fallbacks = reasons
            self._apply_log(loaded, upto_commit)
            loaded.later_extras += skipped
            if upto_commit is not None:
                # the later commits are the caller's (CheckpointSet.load gathers them all)
                loaded.later_extras = [e for e in loaded.later_extras
                                       if not isinstance(e.get("commit"), int) or e["commit"] <= upto_commit]
            return loaded
        if reasons:
            raise CheckpointError(f"{self.directory}: no usable checkpoint ({'; '.join(reasons)})")
        return None

    def _apply_log(self, loaded: Loaded, upto_commit: Optional[int] = None) -> None:
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
                if (upto_commit is not None and record is not None
                        and record[0].get("generation") == loaded.generation
                        and record[0].get("number") == loaded.records + 1
                        and _commit(record[0], f"{path}: record {loaded.records + 1:,} at byte {start:,}")
                        > upto_commit):
                    break       # the state asked for ends here, as at the log's end
                if torn and problem:
                    # A crash tears only the last record: one that looks torn with whole
                    # records after it is damage (a flipped bit in its header's length).
                    f.seek(start + 1)
                    later = self._scan_extras(f, loaded.generation, loaded.records + 2)
                    if not later:
                        log.info(f"{path}: a record torn by a crash at byte {start:,} is cut off")
                        break
                    loaded.damage = (f"{path}: record {loaded.records + 1:,} at byte {start:,}: {problem}, "
                                     f"and {len(later):,} whole records follow it")
                    log.error(f"cannot use checkpoint: {loaded.damage}; the state of the record before it is used")
                    if record is not None:
                        loaded.later_extras.append(record[0].get("extra", {}))
                    loaded.later_extras += later
                    break
                if torn:
                    break
                if problem:
                    loaded.damage = f"{path}: record {loaded.records + 1:,} at byte {start:,}: {problem}"
                    log.error(f"cannot use checkpoint: {loaded.damage}; the state of the record before it is used")
                    if record is not None:
                        loaded.later_extras.append(record[0].get("extra", {}))
                    else:
                        f.seek(start + 1)   # its header is unreadable: the scan looks for the next record
                    loaded.later_extras += self._scan_extras(f, loaded.generation, loaded.records + 2)
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
        path = self.log_path(generation)
        if not path.exists():
            return []
        with open(path, "rb") as f:
            return self._scan_extras(f, generation, 1)

    def _scan_extras(self, f, generation: int, number: int) -> list[dict]:
        """The extras of the records of `generation` from the file's position on, the first
        one expected to be record `number`: their headers read, their sections skipped. A
        record whose header cannot be read hides where the next one starts (the lengths of
        its sections are in it): the scan goes on at the next RECORD_MAGIC that starts a whole
        header of this generation and a later number. One flipped bit then does not hide what
        the records after it moved to done/, which a fallback must bring back."""
        extras = []
        while True:
            start = f.tell()
            record, problem, torn = self._read_record(f, generation, None, headers_only=True)
            if record is None and problem is None:
                return extras       # the end
            # a record that looks cut by a crash may be one whose lengths are damaged: the
            # search for the next magic decides (none follows a record really cut)
            found = record[0].get("number") if record is not None and problem is None else None
            if isinstance(found, int) and not isinstance(found, bool) and found >= number:
                extras.append(record[0].get("extra", {}))
                number = found + 1
            elif not _seek_magic(f, start + 1):
                return extras

    @staticmethod
    def _read_record(f, generation: int, number: Optional[int], headers_only: bool = False):
        """((header, sections) or None, problem or None, torn): torn when the file ends inside
        the record (a crash while it was appended); a record with a readable header comes back
        with its problem, so that its extra can still be read. `number` None: any number."""
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
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            return None, f"unreadable header: {e}", False
        if header.get("generation") != generation or (number is not None and header.get("number") != number):
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
        are tracked from here). After damage, with `rebase` (an engine that holds the state
        in another layout), or from a generation of another format version, the next
        checkpoint is a new base."""
        self.generation = loaded.generation
        self.previous = None    # the loaded generation itself is the fallback of the next base
        self.base_bytes = self.base_path(loaded.generation).stat().st_size
        self.records = loaded.records
        self.log_bytes = loaded.log_end
        # a generation of another format version is not appended to: its records would be
        # this version's behind a base that says otherwise, which an older sigmatch would
        # read (a first checkpoint after an upgrade is a base)
        self._rebase = bool(loaded.damage or loaded.fallbacks or rebase
                            or loaded.header.get("version") != VERSION)
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

    def wants_base(self, engine: "Engine") -> bool:
        """Whether the next checkpoint of `engine` is a new base (prepare): none yet, another
        core, its changes not tracked, a rebase asked for (rebase_next, damage at load, a
        failed write), a log as big as a base, or a record that would be about as big as a
        base (it then costs the same to write and restores faster)."""
        core = engine._core
        stride = core.state_scalars()["layout"][0]
        return (self.generation is None or core is not self._core or not core.tracking or self._rebase
                or self.log_bytes >= self.rebase_ratio * self.base_bytes
                or core.nr_changed * (stride + 4) >= 0.9 * self.base_bytes)

    def prepare(self, engine: "Engine", extra: Optional[dict] = None,
                copy_limit: int = 0) -> "PreparedCheckpoint":
        """Take what the next checkpoint holds from `engine`. A record is a copy; so is a base
        when its rows are at most `copy_limit` bytes (`detached`): the engine can then go on
        while `write()` runs on another thread. Otherwise write() must come first. One
        prepared checkpoint at a time: write it before preparing the next."""
        if self._prepared:
            raise RuntimeError("the previous prepared checkpoint is not written yet")
        core = engine._core
        if self.wants_base(engine):
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
        for path in self._files_of(lambda generation: generation not in keep):
            path.unlink(missing_ok=True)

    def _files_of(self, chosen: Callable[[int], bool]) -> list[Path]:
        """The files of the generations `chosen` accepts: each base by its name (a damaged one
        is a generation still), and its log with it, damaged or not (a first record appended
        to a damaged log would be lost behind it); a log without a base only when it holds
        the store's magic: a user's own log-20261206 is left alone."""
        bases = {int(path.name[5:]): path for path in self.directory.glob("base-*") if is_checkpoint_name(path.name)}
        found = [path for generation, path in bases.items() if chosen(generation)]
        for path in self.directory.glob("log-*"):
            if not is_checkpoint_name(path.name):
                continue
            generation = int(path.name[4:])
            if chosen(generation) and (generation in bases or is_checkpoint_file(path)):
                found.append(path)
        return found


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
                # a log of this generation is another run's leftover (a damaged one survives
                # the discard of a newer generation's files by its magic): the records of the
                # base written now must not follow it
                store.log_path(self.generation).unlink(missing_ok=True)
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


# ---------------------------------------------------------------------------------------
# A set of stores: the checkpoints of a service with --workers N, one store per shard engine.
#
#     STATE/shard-0/base-00000007 ...    shard i's CheckpointStore, at STATE/shard-<i>
#
# One checkpoint of the service is one in every store, each with the same extra plus
# "commit": C (1, 2, 3 ... over the service's life), written in order shard 0 .. N-1; it is
# complete only when all N are written. A crash can leave the stores one commit apart, and
# damage makes one store load an older commit than the others: a load takes the newest
# commit every store can give, the others go back to it (CheckpointStore.load's
# upto_commit), and what they held beyond it is undone (later_extras) and discarded (adopt).
#
# Commit numbers are never used twice, not even for a checkpoint that was never complete (a
# failed write, or one a crash cut): a store may keep such a checkpoint where the set does
# not discard it (a damaged log stays as it is, the fallback of the next base), and a later
# fallback to it must not take it for the other stores' checkpoint of the same number. So
# the next commit follows the highest number any store holds, not the one loaded.
#
# All stores start a new generation at the same commit (if one wants a base, all write one):
# each keeps the previous generation as its fallback, so whatever commit one store falls
# back to, the others still hold it.


class LoadedSet:
    """The state of every store of a set at the newest commit they all hold."""

    def __init__(self, parts: list[Loaded], commit: int, later_extras: list[dict], highest: int,
                 seen: Optional[list[Loaded]] = None):
        self.parts = parts                      # Loaded, by shard
        self.commit = commit                    # the commit loaded (C*)
        self.later_extras = later_extras        # extras of the commits after it found anywhere, by commit
        self.highest = highest                  # the highest commit number any store holds
        # Why a store gave an older state than its newest, from every load on the way: the
        # load of an older commit passes over a damaged base or log that made it go back.
        seen = parts + (seen or [])
        self.damage: Optional[str] = next((p.damage for p in seen if p.damage), None)
        self.fallbacks: list[str] = list(dict.fromkeys(reason for p in seen for reason in p.fallbacks))

    @property
    def generation(self) -> int:
        return self.parts[0].generation

    @property
    def records(self) -> int:
        return self.parts[0].records

    @property
    def extra(self) -> dict:
        return self.parts[0].extra


class CheckpointSet:
    """The checkpoints of N shard engines (see above), with the interface of a
    CheckpointStore over lists of engines: `prepare(engines, extra).write()` writes one;
    `load` reads the newest commit all stores hold and `adopt` continues from it."""

    def __init__(self, directory, workers: int, *, rebase_ratio: float = 1.0):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.directory = Path(directory)
        self.workers = workers
        self.stores = [CheckpointStore(self.directory / f"shard-{i}", rebase_ratio=rebase_ratio)
                       for i in range(workers)]
        self.commit = 0                 # the last commit written (or tried), loaded or adopted
        self._prepared = False

    @property
    def generation(self) -> Optional[int]:
        return self.stores[0].generation

    def exists(self) -> bool:
        return any(store.exists() for store in self.stores)

    def rebase_next(self) -> None:
        for store in self.stores:
            store.rebase_next()

    def written_at(self) -> Optional[float]:
        """CheckpointStore.written_at of the last store: a commit is complete when it is written."""
        return self.stores[-1].written_at()

    def record_extras(self) -> Optional[list[dict]]:
        """Shard 0's record_extras (every store has the same extras at the same commits, and
        starts its generations at the same commit); None when any store's cannot all be read."""
        extras = [store.record_extras() for store in self.stores]
        return None if any(e is None for e in extras) else extras[0]

    # -- layout

    @staticmethod
    def _shard_directories(directory: Path, *, odd: bool = False) -> dict[int, Path]:
        """The shard-N directories, by N; with odd, those whose N is written otherwise than
        the service writes it (shard-01), which are never a shard's but would read as one."""
        found = {}
        try:
            for path in Path(directory).glob("shard-*"):
                suffix = path.name[6:]
                if suffix.isascii() and suffix.isdigit() and (str(int(suffix)) != suffix) == odd \
                        and path.is_dir():
                    found[int(suffix)] = path
        except OSError:
            pass
        return found

    @staticmethod
    def _recorded(directory: Path) -> tuple[list[int], set[int]]:
        """(the shard numbers whose directories hold a base, the --workers their readable
        bases record)."""
        holding, recorded = [], set()
        for k, path in sorted(CheckpointSet._shard_directories(Path(directory)).items()):
            store = CheckpointStore(path)
            if not store.exists():
                continue
            holding.append(k)
            for generation in store.generations():
                try:
                    workers = read_header(store.base_path(generation)).get("workers")
                except CheckpointError:
                    continue
                if isinstance(workers, int) and workers > 1:
                    recorded.add(workers)
        return holding, recorded

    @staticmethod
    def workers_in(directory) -> int:
        """The --workers of the service whose checkpoints `directory` holds in shard-*
        directories, as their bases record it; 0 when no shard directory holds a base, -1
        when they hold bases but none says it (unreadable) or they disagree."""
        holding, recorded = CheckpointSet._recorded(Path(directory))
        if not holding:
            return 0
        return recorded.pop() if len(recorded) == 1 else -1

    @staticmethod
    def _unclear(directory: Path, holding: list[int], recorded: set[int]) -> str:
        if recorded:
            return (f"--state {directory}: its shard-* directories hold the checkpoints of services with --workers "
                    f"{' and '.join(map(str, sorted(recorded)))}: give the state directory of one service")
        return (f"--state {directory}: shard-{holding[0]}/ holds checkpoints that cannot be read (no readable base): "
                "move the state directory away to start afresh")

    def layout_error(self) -> Optional[str]:
        """One line when the directory holds the checkpoint of a service of another layout:
        one without --workers (base-* in the directory itself), or with another number of
        workers, or a shard directory that is not this service's. None when it holds this
        layout's, or none."""
        if CheckpointStore(self.directory).exists():
            # both layouts, or one worker's store given as the state: said as the store says it
            error = CheckpointStore(self.directory).layout_error()
            if error is not None:
                return error
            return (f"--state {self.directory}: holds the checkpoint of a service without --workers (or with "
                    f"--workers 1): start it so, or rewrite it first with `sigmatch reshard --state {self.directory} "
                    f"--workers {self.workers}`")
        for path in sorted(self._shard_directories(self.directory, odd=True).values()):
            if CheckpointStore(path).exists():
                return (f"--state {self.directory}: {path.name}/ is not a shard of this service (a shard's "
                        f"directory is shard-{int(path.name[6:])}/): move it away")
        holding, recorded = self._recorded(self.directory)
        if not holding:
            return None
        if len(recorded) != 1:
            return self._unclear(self.directory, holding, recorded)
        workers = recorded.pop()
        if workers != self.workers:
            return (f"--state {self.directory}: holds the checkpoint of a service with --workers {workers}: "
                    f"start it with --workers {workers}, or rewrite it first with `sigmatch reshard --state "
                    f"{self.directory} --workers {self.workers}`")
        stray = [k for k in holding if k >= workers]
        if stray:
            return (f"--state {self.directory}: shard-{stray[0]}/ is not a shard of this service (its checkpoints "
                    f"say --workers {workers}): move it away")
        return None

    # -- reading

    def load(self) -> Optional[LoadedSet]:
        """The state of every store at the newest commit all of them hold, or None when no
        store holds a checkpoint, or when only the first checkpoint was begun and a crash cut
        it (then the first write prunes what it left). A store that is ahead of the others
        (a crash while a checkpoint was written) or that can give only an older commit
        (damage) makes all go back to the commit they share; `later_extras` names the commits
        after it that any store holds, to be undone. CheckpointError, one line naming the
        store's directory, when a store holds no checkpoint or none old enough while the
        others do, when one holds no commit numbers, or (CheckpointStore.load) nothing usable."""
        held = []
        for store in self.stores:
            extras = store.held_extras()
            for extra in extras:
                if not isinstance(extra.get("commit"), int):
                    raise CheckpointError(f"{store.directory}: holds a checkpoint without a commit number: "
                                          "one of a service without --workers")
            held.append(extras)
        if not any(store.exists() for store in self.stores):
            return None
        highest = max((e["commit"] for extras in held for e in extras), default=0)
        empty = [store for store in self.stores if not store.exists()]
        if empty:
            if highest <= 1:
                # Only the first checkpoint was begun: no commit was complete, nothing was
                # renamed or moved on account of it. Its bases go when the first one is written.
                log.warning(f"{self.directory}: the first checkpoint was not written in every shard (stopped "
                            "while it was written): starting afresh")
                return None
            raise CheckpointError(f"{empty[0].directory}: holds no checkpoint while the other shards hold up to "
                                  f"commit {highest:,}: this shard's state is missing")
        # A first guess at the commit shared: the lowest of the stores' newest. Stores go back
        # further while one cannot give the commit the others have (damage, or a commit a
        # failed write left out); each round lowers it, so this ends.
        target = min((max(e["commit"] for e in extras) for extras in held if extras), default=None)
        parts = [store.load(upto_commit=target) for store in self.stores]
        seen = []
        while True:
            for store, part in zip(self.stores, parts):
                if part is None:
                    raise CheckpointError(f"{store.directory}: holds no usable checkpoint of commit {target:,} or "
                                          "earlier, which the other shards' state needs")
            commits = [_commit(part.header, part.path) for part in parts]
            target = min(commits)
            if all(commit == target for commit in commits):
                break
            seen += [part for part, commit in zip(parts, commits) if commit > target]
            parts = [store.load(upto_commit=target) if commit > target else part
                     for store, part, commit in zip(self.stores, parts, commits)]
        later: dict[int, dict] = {}
        for extra in [e for extras in held for e in extras] + [e for part in parts for e in part.later_extras]:
            commit = extra.get("commit")
            if isinstance(commit, int) and commit > target:
                later.setdefault(commit, extra)
        self._check_owners(parts)
        if later:
            log.warning(f"{self.directory}: commit {target:,} is the newest that every shard holds; "
                        f"{plural(len(later), 'later one')} (up to {max(later):,}) undone")
        return LoadedSet(parts, target, [later[c] for c in sorted(later)], highest, seen)

    def _check_owners(self, parts: list[Loaded]) -> None:
        """CheckpointError when a store holds subscribers of another worker (shard-*/
        directories swapped or copied by hand): its worker would never see their events."""
        from engine._core import shards_of
        for k, (store, part) in enumerate(zip(self.stores, parts)):
            subscribers = np.ascontiguousarray(part.subscribers, dtype=np.uint64)
            if len(subscribers) and bool((shards_of(subscribers, self.workers) != k).any()):
                raise CheckpointError(f"{store.directory}: holds subscribers of another worker than worker {k} of "
                                      f"{self.workers} (shard-*/ directories moved or copied by hand?)")

    def adopt(self, loaded: LoadedSet, engines: list, *, rebase: bool = False) -> None:
        """Continue from `loaded` with engines restored from its parts (by shard): what each
        store holds beyond it is discarded (CheckpointStore.discard_newer), then its log goes
        on (CheckpointStore.adopt). The next commit follows the highest any store held."""
        if len(engines) != self.workers or len(loaded.parts) != self.workers:
            raise ValueError(f"{self.workers} engines and parts expected, not {len(engines)} and {len(loaded.parts)}")
        for store, part, engine in zip(self.stores, loaded.parts, engines):
            store.discard_newer(part)
            store.adopt(part, engine, rebase=rebase)
        self.commit = max(loaded.commit, loaded.highest)

    # -- writing

    def save(self, engines: list, extra: Optional[dict] = None) -> dict:
        """Checkpoint every engine (by shard): prepare(...).write()."""
        return self.prepare(engines, extra).write()

    def prepare(self, engines: list, extra: Optional[dict] = None, copy_limit: int = 0) -> "PreparedSet":
        """Take the next commit from every engine (by shard): each store's prepared
        checkpoint, with `extra` plus "commit". When any store wants a new base, all write
        one. `copy_limit` is shared out between the stores. One at a time, as in a store."""
        if len(engines) != self.workers:
            raise ValueError(f"{self.workers} engines expected, not {len(engines)}")
        if self._prepared:
            raise RuntimeError("the previous prepared checkpoint is not written yet")
        created = False
        for store in self.stores:
            if not store.directory.is_dir():
                # every shard's directory before any base: a crash in the first checkpoint
                # leaves the layout readable (layout_error)
                try:
                    make_private_directories(store.directory)    # 0750 like STATE, whatever the umask
                except OSError as e:
                    raise _naming(e, store.directory) from None
                created = True
        if created:
            fsync_path(self.directory)
        commit = self.commit + 1
        if any(store.wants_base(engine) for store, engine in zip(self.stores, engines)):
            self.rebase_next()
        parts: list[PreparedCheckpoint] = []
        try:
            for store, engine in zip(self.stores, engines):
                part = store.prepare(engine, {**(extra or {}), "commit": commit},
                                     copy_limit=copy_limit // self.workers)
                if part.kind == "base":
                    part.header["workers"] = self.workers       # for layout_error, workers_in
                parts.append(part)
        except BaseException:
            # the changes the prepared records took are no longer noted in their cores
            for part in parts:
                part.store._prepared = False
                part.sections = []
            self.rebase_next()
            raise
        self._prepared = True
        return PreparedSet(self, commit, parts)


class PreparedSet:
    """A commit taken from every engine of a set and not yet on disk (CheckpointSet.prepare)."""

    def __init__(self, owner: CheckpointSet, commit: int, parts: list[PreparedCheckpoint]):
        self.owner = owner
        self.commit = commit
        self.parts = parts

    @property
    def detached(self) -> bool:
        """Holds copies only: the engines may go on while write() runs."""
        return all(part.detached for part in self.parts)

    @property
    def kind(self) -> str:
        kinds = [part.kind for part in self.parts]
        return kinds[0] if len(set(kinds)) == 1 else ",".join(kinds)

    def write(self) -> dict:
        """Write every part, shard 0 first; the commit is complete when this returns.
        Returns {"kind": "base" | "record", "bytes": n, "commit": C}. When a part fails, the
        later ones are not written and every store starts a new base next (the records not
        written held changes their cores no longer note, and all stores rebase together);
        the commit number counts as used all the same (see above: a store that wrote its
        part keeps it, and the next commit must not share its number)."""
        owner = self.owner
        kind = self.kind
        written = 0
        done = 0
        try:
            for part in self.parts:
                written += part.write()["bytes"]
                done += 1
        except BaseException:
            for part in self.parts[done + 1:]:
                part.store._prepared = False
                part.sections = []
            owner.rebase_next()
            raise
        finally:
            owner.commit = max(owner.commit, self.commit)
            owner._prepared = False
        return {"kind": kind, "bytes": written, "commit": self.commit}
