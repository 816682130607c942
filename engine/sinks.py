"""File sinks: action, conversion and dead-letter files and stats.json (SPEC §4).

    OUT/<channel>/actions-00000001.csv          ACTION_COLUMNS, one directory per channel
    OUT/conversions/conversions-00000001.csv    CONVERSION_COLUMNS
    OUT/dead_letters/dead_letters-00000001.csv  DEAD_LETTER_COLUMNS
    OUT/stats.json

Records arrive as NumPy structured arrays (`engine.records`) in batches of any size. The
bytes written depend only on the sequence of records, never on how it was split into batches:
rotation is decided per record, text rows are rendered independently of each other, and
Parquet row groups are cut at fixed record counts rather than at batch boundaries.

A file is written as `.<name>.tmp` beside its final name and renamed when complete, so the
SMS gateway or BOSS never sees a partial file. It is complete after `max_records` records;
before a record whose `ts` is >= the file's first `ts` + `max_age_ms` (event time; dead
letters rotate by count only); or at `close()`. Empty files are never created.

Formatting is vectorised with pyarrow.compute: integer columns are cast to strings, text
columns are lookups (campaign, channel, template, kind, reason) whose few distinct values
are escaped once and then gathered with `take`, and a row is the element-wise join of its
columns. pyarrow's own CSV writer is not used because its "needed" quoting style quotes
every string, where RFC 4180 quotes only values that contain a separator, quote or newline.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import SigmatchError
from engine.language.config import CampaignSpec
from engine.language.schema import OUTPUT_FORMATS
from engine.records import (
    ACTION_COLUMNS, ACTION_DTYPE, BAD_FIELDS, BAD_REASONS, CONVERSION_COLUMNS, CONVERSION_DTYPE,
    DEAD_LETTER_BYTES, DEAD_LETTER_COLUMNS, DEAD_LETTER_DTYPE, KINDS,
)

__all__ = ["SinkSet", "SinkThread", "earlier_run_files", "remove_earlier_run", "unwritable_output_directory",
           "without_missing_parents", "lock_output", "writing_output", "open_plain", "open_lock_file", "hold_lock",
           "LockHeld", "SERVICE_ID_FILE", "OUT_LOCK"]

# OUT/NAME: the id of the service (`sigmatch run`) whose output OUT is; its checkpoint holds
# the id too, so that a restart does not number on into another run's output
SERVICE_ID_FILE = ".sigmatch-service-id"
# OUT/NAME: the flock a running service holds on its output directory (a name of its own: OUT
# may be the spool, whose lock is .sigmatch.lock)
OUT_LOCK = ".sigmatch-out.lock"
# The lock of a spool directory, in it: a dot-name, never taken for a spool file (here, not in
# engine.service.daemon, so that replay can refuse a spool for --out without importing that)
SPOOL_LOCK = ".sigmatch.lock"


def lock_holder(fd: int) -> Optional[str]:
    """The PID a lock file holds, when it holds one (digits only: the file is anyone's to
    write garbage into); None while its holder is between its lock and writing its PID."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else None


class LockHeld(SigmatchError):
    """hold_lock found the lock taken: `WHAT in use by PID N` (`holder`: N, or None)."""

    def __init__(self, what: str, holder: Optional[str]):
        super().__init__(f"{what} in use by PID {holder or 'unknown'}")
        self.holder = holder


def open_lock_file(path: Path, option: str, *, of_this_user: bool = False) -> int:
    """The lock file `path` opened (made when missing) for hold_lock, neither followed when it
    is a link, nor waited on when it is a FIFO, nor used unless it is a plain file of one link
    (`of_this_user`: and this process's user's): a process run as root must not write its PID
    through a link into another file. SigmatchError, one line beginning with `option` (e.g.
    "--state DIR")."""
    import stat
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, FILE_MODE)
    except OSError as e:
        why = "a symbolic link" if e.errno == errno.ELOOP else (e.strerror or str(e))
        raise SigmatchError(f"{option}: cannot lock it ({path.name}: {why})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or (of_this_user and info.st_uid != os.geteuid()):
        os.close(fd)
        what = "a file of this service's user" if of_this_user else "a plain file"
        raise SigmatchError(f"{option}: cannot lock it ({path.name} is not {what}: remove it)")
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != FILE_MODE:
        # the mode of every file sigmatch writes, whatever the umask
        with contextlib.suppress(OSError):
            os.fchmod(fd, FILE_MODE)
    return fd


def hold_lock(fd: int, what: str) -> int:
    """Take an exclusive flock on the open lock file `fd` and write this PID into it; held
    while the process lives. Taken by another process: LockHeld `WHAT in use by PID N`;
    OSError where the file system takes no locks."""
    import fcntl
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock_holder(fd)
        os.close(fd)
        raise LockHeld(what, holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


# flock's errors on a file system that takes no locks (NFS without lockd, some SMB or FUSE mounts)
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def lock_output(out, option: Optional[str] = None) -> Optional[int]:
    """Hold OUT_LOCK on `out` (made, 0750, when missing) for the rest of the process, so that
    no service or replay writes `out` meanwhile: they would number their files alike and
    overwrite each other's. `option` ("--out DIR"): the service's, whose errors begin with it
    and whose PID stays in the file; without it, a replay's, emptied when the process ends.
    The lock's descriptor; where the file system takes no locks, None for a replay, the
    OSError (errno in NO_LOCKS) for the service.
    SigmatchError (one line) when another process holds it, or the lock file is a link or not
    a plain file."""
    if option is not None:
        return _lock_output(Path(out), option)
    # one thread at a time: two replays of this process taking the same lock at once, each
    # on its own descriptor, refused each other as another process's run
    with _HELD_LOCK:
        held = _HELD_OUT.get(os.path.realpath(out), False)
        return _lock_output(Path(out), None) if held is False else held


def _lock_output(out: Path, option: Optional[str], *, for_good: bool = True) -> Optional[int]:
    key = os.path.realpath(out)
    make_private_directories(out)
    fd = open_lock_file(out / OUT_LOCK, option or str(out))
    try:
        hold_lock(fd, f"{option or out}: output directory")
    except LockHeld as e:
        if option:
            raise
        who = f"PID {e.holder} (another sigmatch run writes it)" if e.holder else "another sigmatch run"
        # the CLI's replay holds it for good; an API replay for its run, and has no --out
        advice = "give a new --out" if for_good else "give another output directory"
        raise SigmatchError(f"{out}: output directory in use by {who}: {advice}") from None
    except OSError as e:
        os.close(fd)
        if e.errno not in NO_LOCKS:
            raise SigmatchError(f"{option or out}: cannot lock it ({OUT_LOCK}: {e.strerror or e})") from None
        if option:
            raise               # the service says so, with the reason
        if for_good:
            _HELD_OUT[key] = None
        return None
    if option or not for_good:
        return fd
    owner = os.getpid()

    def release():
        # emptied at the end (the lock goes with the process): two replays of one input
        # leave byte-identical directories, `diff -r` included
        if os.getpid() == owner:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)

    import atexit
    atexit.register(release)
    _HELD_OUT[key] = fd
    return fd


# The output directories this process holds the lock of for good, for replays (lock_output
# without `option`): a second flock of the same file from this process, on another
# descriptor, would be refused as another run's
_HELD_OUT: dict[str, Optional[int]] = {}
_HELD_LOCK = threading.Lock()
# The output directory each Engine.replay of this process writes now, by the engine: two
# engines in two threads numbered their files alike (helper-126)
_WRITING: dict[str, int] = {}
_WRITING_LOCK = threading.Lock()


@contextlib.contextmanager
def writing_output(out, owner: object):
    """Hold `out` while `owner` (an engine) runs into it: SigmatchError (one line) when
    another engine of this process writes it now, or another process holds its lock
    (lock_output). The lock is let go at the end, unless this process holds it for good (the
    CLI's replay): a program that replays into many directories keeps no descriptor open."""
    key = os.path.realpath(out)
    with _WRITING_LOCK:
        if key in _WRITING:
            # the same engine's too: one engine in two threads at once numbers alike, and the
            # first to end let the second go unguarded (helper-127)
            raise SigmatchError(f"{out}: output directory in use by another replay of this process: one replay "
                                "at a time writes it")
        _WRITING[key] = id(owner)
    fd = None
    try:
        with _HELD_LOCK:
            if key not in _HELD_OUT:
                fd = _lock_output(Path(out), None, for_good=False)
        yield
    finally:
        if fd is not None:
            # emptied, as lock_output's at the process's end: the directory is the run's alone
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)
        with _WRITING_LOCK:
            del _WRITING[key]


# Output holds personal data (MSISDNs): owner and group only, whatever the umask.
FILE_MODE = 0o640
DIR_MODE = 0o750

# Records rendered per pyarrow call: bounds the temporary memory of a huge batch and keeps
# a chunk's text well inside the 2 GiB that 32-bit string offsets can address.
CHUNK_RECORDS = 1 << 16

# Rows per Parquet row group. Row groups are cut at multiples of this within a file, so the
# file's bytes do not depend on the batches its records arrived in.
PARQUET_ROW_GROUP = 1 << 17

_NUMBERED_FILE = re.compile(r"\.?(?:actions|conversions|dead_letters)-(\d+)\.[^.]+(?:\.tmp)?")
_INT64_MAX = np.iinfo(np.int64).max


# --------------------------------------------------------------------------- columns

@dataclass(frozen=True)
class _IntColumn:
    """An integer field, written as plain decimal."""
    name: str
    field: str
    type: pa.DataType

    def arrow(self, records: np.ndarray) -> pa.Array:
        return pa.array(np.ascontiguousarray(records[self.field]), type=self.type)


@dataclass(frozen=True)
class _TimeColumn(_IntColumn):
    """Event time in ms since the epoch (UTC): plain decimal in CSV and JSON Lines, as the
    gateways read it; a `timestamp[ms, UTC]` in Parquet, so that a data tool reads a time."""

    PARQUET_TYPE = pa.timestamp("ms", tz="UTC")


@dataclass(frozen=True)
class _LookupColumn:
    """A string chosen by an integer field: `values[records[field]]` (indices validated by the caller)."""
    name: str
    field: str
    values: tuple[str, ...]

    @cached_property
    def _table(self) -> pa.Array:
        return pa.array(self.values, pa.string())

    def take(self, table: pa.Array, records: np.ndarray) -> pa.Array:
        """`table[records[field]]`: `table` holds one (rendered) string per value."""
        return table.take(pa.array(records[self.field].astype(np.int32)))

    def arrow(self, records: np.ndarray) -> pa.Array:
        return self.take(self._table, records)


@dataclass(frozen=True)
class _TemplateColumn(_LookupColumn):
    """An action's template: `values[first[record.campaign] + record.variant]`, where
    `values` lists every campaign's templates (its variants', or its one template) and
    `first` where each campaign's start. Without variants anywhere, `first` is the campaign
    index itself and the lookup is the campaign's, as for channel."""
    first: tuple[int, ...] = ()
    counts: tuple[int, ...] = ()

    @classmethod
    def of(cls, name: str, campaigns: Sequence[CampaignSpec]) -> "_TemplateColumn":
        values = tuple(t for c in campaigns for t in c.templates)
        counts = tuple(len(c.templates) for c in campaigns)
        first = tuple(int(x) for x in np.cumsum((0,) + counts[:-1])) if campaigns else ()
        return cls(name, "campaign", values, first, counts)

    @cached_property
    def _first(self) -> Optional[np.ndarray]:
        # None: one template per campaign, the campaign index is the template's
        return None if len(self.values) == len(self.counts) else np.array(self.first, np.int32)

    @cached_property
    def _counts(self) -> np.ndarray:
        return np.array(self.counts or (1,), np.int32)

    def check(self, records: np.ndarray) -> None:
        """ValueError when a record's variant is not one of its campaign's."""
        variant = records["variant"]
        if variant.any() and (variant >= self._counts[records["campaign"]]).any():
            bad = int(np.flatnonzero(variant >= self._counts[records["campaign"]])[0])
            raise ValueError(f"record variant {int(variant[bad])} out of range for campaign "
                             f"{int(records['campaign'][bad])} (it has {self.counts[records['campaign'][bad]]})")

    def take(self, table: pa.Array, records: np.ndarray) -> pa.Array:
        if self._first is None:
            return super().take(table, records)
        return table.take(pa.array(self._first[records["campaign"]] + records["variant"].astype(np.int32)))


# Two ASCII hex digits per byte value, lower case as bytes.hex() writes them.
_HEX_DIGITS = np.frombuffer(b"".join(b"%02x" % i for i in range(256)), np.uint8).reshape(256, 2)


@dataclass(frozen=True)
class _HexColumn:
    """The first `records[length_field]` bytes of a fixed-size byte field, in hex."""
    name: str
    field: str
    length_field: str

    def arrow(self, records: np.ndarray) -> pa.Array:
        data = records[self.field]
        nr_records, width = data.shape
        digits = _HEX_DIGITS[data].reshape(nr_records, 2 * width)
        lengths = 2 * records[self.length_field].astype(np.int64)
        # Row-major boolean selection keeps each row's leading digits, rows in order: exactly
        # the values buffer of a string array.
        chars = digits[np.arange(2 * width) < lengths[:, None]]
        offsets = np.zeros(nr_records + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        return pa.StringArray.from_buffers(nr_records, pa.py_buffer(offsets), pa.py_buffer(chars))


def _arrow_type(column) -> pa.DataType:
    return column.type if isinstance(column, _IntColumn) else pa.string()


def _parquet_type(column) -> pa.DataType:
    return _TimeColumn.PARQUET_TYPE if isinstance(column, _TimeColumn) else _arrow_type(column)


# --------------------------------------------------------------------------- formats

def _csv_field(value: str) -> str:
    """RFC 4180: quote only a value holding a separator, a quote or a line break."""
    if any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _json_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _escape_strings(array: pa.Array, special: str, escape: Callable[[str], str],
                    plain: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """Escape a string array of arbitrary values: vectorised when none is special (the usual case)."""
    if pc.any(pc.match_substring_regex(array, special)).as_py():
        return pa.array([escape(v) for v in array.to_pylist()], pa.string())
    return plain(array)


def _values_buffer(array: pa.Array) -> pa.Buffer:
    """The concatenated values of a string array without copying: the rendered text."""
    offsets = np.frombuffer(array.buffers()[1], np.int32)
    start, end = int(offsets[array.offset]), int(offsets[array.offset + len(array)])
    return array.buffers()[2].slice(start, end - start)


class _TextFormat:
    """Rows of text rendered column by column; a subclass says how a column is spelled."""
    ext: str

    def __init__(self, columns: Sequence):
        self.columns = tuple(columns)
        self.header = b""
        self._render_column = [self._renderer(column) for column in self.columns]

    def _renderer(self, column) -> Callable[[np.ndarray], pa.Array]:
        if isinstance(column, _IntColumn):
            return lambda records: pc.cast(column.arrow(records), pa.string())
        if isinstance(column, _LookupColumn):
            # A handful of distinct values: escape them once, then gather per record.
            table = pa.array([self._escape(v) for v in column.values], pa.string())
            return lambda records: column.take(table, records)
        return lambda records: self._escape_array(column.arrow(records))

    def render(self, records: np.ndarray) -> pa.Buffer:
        return _values_buffer(self.rows(records))

    def rows(self, records: np.ndarray) -> pa.Array:
        """One string per record: its row, line break included."""
        return self._join([render(records) for render in self._render_column])

    def prepare(self, records: np.ndarray) -> _Rendered:
        """What a batch's files take their text from (see _Rendered)."""
        return _Rendered(self, records)

    def open(self, raw) -> "_TextWriter":
        raw.write(self.header)
        return _TextWriter(raw, self)


class _CsvFormat(_TextFormat):
    ext = "csv"

    def __init__(self, columns: Sequence):
        super().__init__(columns)
        self.header = (",".join(_csv_field(c.name) for c in self.columns) + "\n").encode()

    _escape = staticmethod(_csv_field)

    @staticmethod
    def _escape_array(array: pa.Array) -> pa.Array:
        return _escape_strings(array, '[,"\r\n]', _csv_field, lambda a: a)

    @staticmethod
    def _join(parts: list[pa.Array]) -> pa.Array:
        # Joining with a separator and then appending the newline is about twice as fast as
        # one join that interleaves literal separators.
        return pc.binary_join_element_wise(pc.binary_join_element_wise(*parts, ","), "\n", "")


class _JsonLinesFormat(_TextFormat):
    ext = "jsonl"

    def __init__(self, columns: Sequence):
        super().__init__(columns)
        keys = [_json_string(c.name) + ":" for c in self.columns]
        self._prefixes = ["{" + keys[0]] + ["," + key for key in keys[1:]]

    _escape = staticmethod(_json_string)

    @staticmethod
    def _escape_array(array: pa.Array) -> pa.Array:
        # json.dumps escapes only '"', '\' and control characters when ensure_ascii is off.
        return _escape_strings(array, '["\\\\\x00-\x1f]', _json_string,
                               lambda a: pc.binary_join_element_wise('"', a, '"', ""))

    def _join(self, parts: list[pa.Array]) -> pa.Array:
        pieces = []
        for prefix, part in zip(self._prefixes, parts):
            pieces += [prefix, part]
        return pc.binary_join_element_wise(*pieces, "}\n", "")


class _Rendered:
    """The rows of one batch of records, rendered once for all the files the batch goes
    to: a file takes its rows as a slice of bytes. Rendering per file cost ~15 pyarrow calls
    per file, more than the file itself for small ones (hourly files of a small world). The
    text is rendered CHUNK_RECORDS rows at a time, when first asked for; a chunk already
    passed is dropped (files take their rows in order), so memory stays one chunk's."""

    def __init__(self, text_format: "_TextFormat", records: np.ndarray):
        self._format = text_format
        self._records = records
        self._chunk = -1
        self._text: Optional[pa.Buffer] = None
        self._offsets: Optional[np.ndarray] = None

    def _load(self, chunk: int) -> None:
        if chunk != self._chunk:
            start = chunk * CHUNK_RECORDS
            joined = self._format.rows(self._records[start:start + CHUNK_RECORDS])
            offsets = np.frombuffer(joined.buffers()[1], np.int32)[joined.offset:joined.offset + len(joined) + 1]
            self._text, self._offsets, self._chunk = joined.buffers()[2], offsets, chunk

    def slices(self, start: int, stop: int):
        """The text of rows [start, stop) as buffers, in order."""
        while start < stop:
            chunk = start // CHUNK_RECORDS
            self._load(chunk)
            base = chunk * CHUNK_RECORDS
            end = min(stop, base + CHUNK_RECORDS)
            first, last = int(self._offsets[start - base]), int(self._offsets[end - base])
            yield self._text.slice(first, last - first)
            start = end


class _TextWriter:
    def __init__(self, raw, text_format: _TextFormat):
        self._raw = raw
        self._format = text_format

    def write(self, records: np.ndarray, rendered: Optional[_Rendered] = None, start: int = 0) -> None:
        """Write `records`; `rendered` (with `start`, the first record's row in it) holds their text already."""
        if rendered is None:
            rendered, start = _Rendered(self._format, records), 0
        for text in rendered.slices(start, start + len(records)):
            self._raw.write(text)

    def close(self) -> None:
        pass


class _ParquetFormat:
    ext = "parquet"

    def __init__(self, columns: Sequence):
        self.columns = tuple(columns)
        self.schema = pa.schema([(c.name, _parquet_type(c)) for c in self.columns])

    def table(self, records: np.ndarray) -> pa.Table:
        return pa.Table.from_arrays([c.arrow(records).cast(_parquet_type(c)) for c in self.columns], schema=self.schema)

    def open(self, raw) -> "_ParquetFileWriter":
        return _ParquetFileWriter(raw, self)

    def prepare(self, records: np.ndarray) -> None:
        return None     # row groups are built per file


class _ParquetFileWriter:
    """Holds records back until a full row group is there, so row groups never follow batches."""

    def __init__(self, raw, parquet_format: _ParquetFormat):
        import pyarrow.parquet as pq    # only for Parquet outputs (see loaders.profiles)
        self._format = parquet_format
        self._writer = pq.ParquetWriter(raw, parquet_format.schema)
        self._pending: list[np.ndarray] = []
        self._nr_pending = 0

    def write(self, records: np.ndarray, rendered=None, start: int = 0) -> None:
        self._pending.append(records.copy())  # the caller may reuse its buffer
        self._nr_pending += len(records)
        if self._nr_pending >= PARQUET_ROW_GROUP:
            pending = np.concatenate(self._pending)
            nr_full = len(pending) - len(pending) % PARQUET_ROW_GROUP
            for start in range(0, nr_full, PARQUET_ROW_GROUP):
                self._write_row_group(pending[start:start + PARQUET_ROW_GROUP])
            self._pending = [pending[nr_full:]]
            self._nr_pending = len(pending) - nr_full

    def _write_row_group(self, records: np.ndarray) -> None:
        self._writer.write_table(self._format.table(records), row_group_size=PARQUET_ROW_GROUP)

    def close(self) -> None:
        if self._nr_pending:
            self._write_row_group(np.concatenate(self._pending))
        self._pending, self._nr_pending = [], 0
        self._writer.close()


_FORMATS = {"csv": _CsvFormat, "jsonl": _JsonLinesFormat, "parquet": _ParquetFormat}
assert tuple(_FORMATS) == OUTPUT_FORMATS


# --------------------------------------------------------------------------- files

@contextlib.contextmanager
def _naming(path):
    """An OSError inside names `path` when it names no file: write(), flush(), close() and
    fsync() failing with ENOSPC or EIO name none, and the one-line error of replay or the
    service must say which file (so which disk) failed. One that names its files (open,
    rename) passes as it is."""
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        if e.errno is None:
            raise type(e)(f"{path}: {e}") from e.__cause__     # pyarrow's, say: no errno to keep
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e.__cause__


def open_plain(path) -> Optional[int]:
    """A descriptor of `path` opened for reading when it is a plain file; None when it is
    missing, a link, a FIFO (never waited on), a device or unreadable: whoever can write the
    folder could put any of those under a name the engine reads. The caller closes it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def read_plain_head(path, nbytes: int) -> Optional[bytes]:
    """The first `nbytes` of `path` when it is a plain file (open_plain); None otherwise."""
    fd = open_plain(path)
    if fd is None:
        return None
    try:
        return os.pread(fd, nbytes, 0)
    except OSError:
        return None
    finally:
        os.close(fd)


def fsync_path(path) -> None:
    """fsync a file or a directory by name (its data, or its entries)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        with _naming(path):
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    fsync_path(directory)


def make_private_directories(directory: Path) -> None:
    """Create `directory` and missing parents with DIR_MODE (mkdir alone would apply the
    umask); an existing directory is left as it is. Sinks, the daemon and its journals share it."""
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            if dangling := dangling_link(path):
                # mkdir's own words ("File exists") would leave the reader looking for a file
                raise FileNotFoundError(errno.ENOENT, dangling.removeprefix(f"{path} is "), str(path)) from None
            continue
        os.chmod(path, DIR_MODE)


def write_private(temp: Path, final: Path, data) -> None:
    """`data` written whole to `temp` (created FILE_MODE whatever the umask, never through a
    name planted there: O_EXCL | O_NOFOLLOW), fsynced, then renamed to `final`. OSError
    (ENOSPC, EIO) leaves nothing behind."""
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(temp, final)


def _create_private(path: Path):
    """A new file opened for binary writing, mode FILE_MODE whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _write_atomically(path: Path, data: bytes, durable: bool) -> None:
    temp = _temp_path(path)
    temp.unlink(missing_ok=True)  # a leftover of a crashed run: ours, and never a finished file
    try:
        with _naming(temp), _create_private(temp) as raw:
            raw.write(data)
            raw.flush()
            if durable:
                os.fsync(raw.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)    # ENOSPC or EFBIG half way: no half file left behind
        raise
    os.replace(temp, path)
    if durable:
        _fsync_directory(path.parent)


class _SinkFile:
    """One output file while it is being written: its temp file, writer and rotation state."""

    def __init__(self, path: Path, file_format, first_ts: Optional[int]):
        self.path = path
        self.temp = _temp_path(path)
        self.first_ts = first_ts
        self.count = 0
        self._temp_closed = False
        self._close_error: Optional[BaseException] = None
        self._raw = _create_private(self.temp)
        try:
            with _naming(self.temp):
                self._writer = file_format.open(self._raw)
        except BaseException:
            self._raw.close()
            self.temp.unlink(missing_ok=True)
            raise

    def write(self, records: np.ndarray, rendered: Optional[_Rendered] = None, start: int = 0) -> None:
        """Append `records` (their text rendered already in `rendered` from row `start`, if given)."""
        if len(records):
            with _naming(self.temp):
                self._writer.write(records, rendered, start)
            self.count += len(records)

    def close_temp(self, durable: bool) -> None:
        """Close the temp file, written whole (with `durable`, on disk), keeping its temp
        name. A stream closes a file as soon as it is complete: a batch that completes
        thousands of files (a small max_records) must not hold a descriptor for each until
        they are renamed at its end (EMFILE at the usual limit of 1024). Once only: a
        failed close is raised again, as the file cannot be completed."""
        if self._close_error is not None:
            raise self._close_error
        if self._temp_closed:
            return
        try:
            with _naming(self.temp):
                self._writer.close()
                self._raw.flush()
                if durable:
                    os.fsync(self._raw.fileno())
                self._raw.close()
        except BaseException as error:
            self._close_error = error
            raise
        self._temp_closed = True

    def finish(self, durable: bool, rename: bool = True) -> Path:
        """Complete the file (its temp closed, if it is not yet); with `rename` it takes its
        final name now, else the caller renames `temp` to `path` later (a daemon does so once
        a checkpoint covers it)."""
        self.close_temp(durable)
        if not rename:
            return self.temp
        os.replace(self.temp, self.path)
        if durable:
            _fsync_directory(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Remove the temp file, unfinished. An error closing it (the full disk that ends the
        run, most often) is not the caller's: the file is gone either way."""
        try:
            with contextlib.suppress(Exception):
                self._writer.close()
            with contextlib.suppress(Exception):
                self._raw.close()
        finally:
            self.temp.unlink(missing_ok=True)


def _first_at_least(values: np.ndarray, start: int, stop: int, limit: int) -> int:
    """The first index in [start, stop) whose value is >= limit, else stop.

    Scans in doubling windows so that finding a cut after k records costs O(k), not
    O(stop - start): many short files in one big batch stay linear overall.
    """
    window = 1024
    while start < stop:
        end = min(stop, start + window)
        hits = values[start:end] >= limit
        first = int(hits.argmax())
        if hits[first]:
            return start + first
        start, window = end, window * 2
    return stop


class _Stream:
    """The numbered sequence of files of one record kind in one directory."""

    def __init__(self, sinks: "SinkSet", directory: Path, prefix: str, file_format,
                 ts_field: Optional[str]):
        self._sinks = sinks
        self.directory = directory
        self._prefix = prefix
        self._format = file_format
        self._ts_field = ts_field if sinks.max_age_ms is not None else None
        self.file: Optional[_SinkFile] = None

    def write(self, records: np.ndarray, completed: list, positions: Optional[np.ndarray] = None) -> None:
        """Write `records`; append the files this completes to `completed` as (sort key, file).

        The key orders completions of several streams fed from one batch: a file completed by
        count after the record at position p sorts as (p, 1), one rotated by age before the
        record at p as (p, 0). `positions` maps record indices to batch positions.
        """
        def position(index):
            return int(positions[index]) if positions is not None else index

        max_records = self._sinks.max_records
        ts = records[self._ts_field] if self._ts_field else None
        rendered = self._format.prepare(records)
        index, nr_records = 0, len(records)
        while index < nr_records:
            if self.file is None:
                self.file = self._open(None if ts is None else int(ts[index]))
            file = self.file
            stop = min(nr_records, index + max_records - file.count)
            cut = stop
            if ts is not None:
                limit = file.first_ts + self._sinks.max_age_ms
                if limit <= _INT64_MAX:
                    # A file's first record never rotates it, even with max_age_ms = 0.
                    first_candidate = index + 1 if file.count == 0 else index
                    cut = _first_at_least(ts, first_candidate, stop, limit)
            file.write(records[index:cut], rendered, index)
            index = cut
            if cut < stop:
                completed.append(((position(cut), 0), file))
                self.file = None
            elif file.count == max_records:
                completed.append(((position(cut - 1), 1), file))
                self.file = None
            if self.file is None:
                file.close_temp(self._sinks.durable)      # renamed in record order by the caller

    def _open(self, first_ts: Optional[int]) -> _SinkFile:
        number = self._sinks._allocate_number(self.directory)
        path = self.directory / f"{self._prefix}-{number:08d}.{self._format.ext}"
        return _SinkFile(path, self._format, first_ts)

    def take_open_file(self) -> Optional[_SinkFile]:
        file, self.file = self.file, None
        return file


# --------------------------------------------------------------------------- the sink set

def earlier_run_files(out) -> list[Path]:
    """The files of an earlier run in `out` (stats.json and numbered sink files, finished or
    temporary, in its first-level directories), in name order; [] for a fresh directory. A
    new run into them would number its actions from 1 again (`sigmatch replay` refuses them
    without --overwrite, a service without a checkpoint of its own refuses them)."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [out / "stats.json"] if (out / "stats.json").is_file() else []
    for directory in sorted(p for p in out.iterdir() if p.is_dir()):
        found += sorted(p for p in directory.iterdir() if _NUMBERED_FILE.fullmatch(p.name))
    return found


def remove_earlier_run(out, earlier: list[Path]) -> None:
    """`replay --overwrite`: the earlier run's files (earlier_run_files) go, and with them a
    service's id (SERVICE_ID_FILE), so that the service cannot take this run's output for
    its own and number on into it."""
    for path in earlier:
        path.unlink()
    (Path(out) / SERVICE_ID_FILE).unlink(missing_ok=True)


def not_writable(path) -> str:
    """Why `path`, a directory os.access says this user cannot write, cannot be written, in a
    message's words: "is on a read-only file system" (a mount, which access() also refuses
    root) or "is not writable by this user"."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "is on a read-only file system"
    except OSError:
        pass
    return "is not writable by this user"


def dangling_link(path) -> Optional[str]:
    """"PATH is a link to TARGET, which does not exist" when `path` is a symbolic link whose
    target is missing (mkdir there says only "File exists"), else None."""
    try:
        if os.path.islink(path) and not os.path.exists(path):
            try:
                os.stat(path)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    return f"{path} is a link to {os.readlink(path)}, which leads back to itself (a loop of links)"
            return f"{path} is a link to {os.readlink(path)}, which does not exist"
    except OSError:
        pass
    return None


def dangling_on_the_way(path) -> Optional[str]:
    """dangling_link's words for the first of `path` and its missing parents that is a link
    to nothing (the directory that would be made there cannot be), else None; None also when
    the path cannot be looked at (a name too long: the caller's own check says so)."""
    path = Path(path)
    try:
        while not path.exists() and path.parent != path:
            if dangling := dangling_link(path):
                return dangling
            path = path.parent
    except OSError:
        pass
    return None


def _nearest_there(path: Path) -> Optional[Path]:
    """`path`, or the first of its parents that exists (as a link too); the root when none
    does; None when the system refuses to look (a name too long)."""
    try:
        while not os.path.lexists(path) and path.parent != path:
            path = path.parent
    except OSError:
        return None
    return path


def without_missing_parents(path) -> Path:
    """`path` with the `..` that follow a directory that does not exist taken out by name:
    `base/missing/../out` is `base/out`, where making the first as given (as `mkdir -p` does)
    leaves `base/missing` behind, empty. Only the part of `path` that does not exist is
    rewritten, where no name can be a link: a `..` after an existing link is left to the
    system. A Path; `path` unchanged when it exists or the system refuses to look."""
    path = Path(path)
    there = _nearest_there(path)
    if there is None or there == path or ".." not in path.parts:
        return path
    rest = os.path.normpath(path.relative_to(there))
    return there if rest == "." else there / rest


def unwritable_output_directory(out, campaigns: Sequence[CampaignSpec]) -> Optional[str]:
    """Why a run of `campaigns` cannot write into `out`, naming the first directory of it that
    exists and cannot take its files (`out` itself or a parent that is a file, a parent this
    user cannot write, a channel's, conversions/, dead_letters/: something that is not a
    directory, or one this user cannot write), or None. Asked before any work: the
    first file there fails only once events have been processed, and stats.json, written
    all the same, would count actions that no file holds."""
    out = Path(out)
    # OUT itself, or the first of its parents that is there: a file in its path failed only
    # at the first channel directory made, after every event (helper-126)
    probe = _nearest_there(out) or out
    if os.path.lexists(probe) and not probe.is_dir():
        return f"{dangling_link(probe) or f'{probe} is not a directory'}, where the run writes its files"
    if os.path.lexists(probe) and not os.access(probe, os.W_OK | os.X_OK):
        where = "writes its stats.json" if probe == out else "makes its output directory"
        return f"{probe} {not_writable(probe)}, where the run {where}"
    names = [*dict.fromkeys(c.channel for c in campaigns), "conversions", "dead_letters"]
    stats = out / "stats.json"
    if os.path.isdir(stats) and not os.path.islink(stats):
        # renamed over at the end, after every event: the run's last files would stay unsealed
        return f"{stats} is a directory, where the run writes its stats.json"
    for name in names:
        path = out / name
        if not os.path.lexists(path):
            continue
        if not path.is_dir():
            return f"{dangling_link(path) or f'{path} is not a directory'}, and the run writes its {name} files there"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} {not_writable(path)}, and the run writes its {name} files there"
    return None


def unwritable_output_file(path) -> Optional[str]:
    """Why a file cannot be written at `path` (made with its missing parents, as the report's
    and diff's pages and lists are), naming what is in the way: `path` a directory, the first
    of its parents that exists not a directory or not writable by this user; None when it
    can be. Asked before a command's work, so that a page is not refused after a replay."""
    path = Path(path)
    if os.path.isdir(path):
        return f"{path} is a directory"
    probe = _nearest_there(path.parent)
    if probe is None or not os.path.lexists(probe):
        return None     # a name the system refuses: the write says why
    if not probe.is_dir():
        return dangling_link(probe) or f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} {not_writable(probe)}"
    try:
        if probe == path.parent and os.path.lexists(path) and os.geteuid() != 0:
            # the page is written beside and renamed over: in a sticky directory (/tmp) only
            # the file's or the directory's owner may (helper-129: refused after the work)
            held, folder = os.lstat(path), os.stat(probe)
            if folder.st_mode & stat.S_ISVTX and os.geteuid() not in (held.st_uid, folder.st_uid):
                return f"{path} is another user's file in a sticky directory"
    except OSError:
        pass
    return None


def _check_channel(channel: str) -> None:
    # A channel names a directory under OUT: it must stay one path component inside OUT.
    if channel in ("", ".", "..") or any(c in channel for c in "/\\\0"):
        raise ValueError(f"channel {channel!r} cannot name an output directory")


class SinkSet:
    """The output files of one run in `out` (SPEC §4); see the module docstring.

    Leaving a `with` block finishes every file, also when an exception is propagating: the
    records written are complete, and SPEC §1.4 keeps every action already emitted. Call
    `abort()` to throw open files away instead.
    """

    def __init__(self, out: Path, *, campaigns: Sequence[CampaignSpec], format: str = "csv",
                 max_records: int = 100_000, max_age_ms: Optional[int] = 3_600_000,
                 durable: bool = False, defer_renames: bool = False,
                 numbering: Optional[dict] = None):
        if format not in _FORMATS:
            raise ValueError(f"unknown output format {format!r}: expected one of {', '.join(_FORMATS)}")
        if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1:
            raise ValueError(f"max_records must be a positive integer, not {max_records!r}")
        if max_age_ms is not None and (isinstance(max_age_ms, bool) or not isinstance(max_age_ms, int)
                                       or max_age_ms < 0):
            raise ValueError(f"max_age_ms must be None or a non-negative integer, not {max_age_ms!r}")
        for campaign in campaigns:
            _check_channel(campaign.channel)

        self.out = Path(out)
        self.format = format
        self.max_records = max_records
        self.max_age_ms = max_age_ms
        self.durable = durable
        # With defer_renames, complete files keep their temporary names until commit(): a
        # daemon renames them only once a checkpoint covers them (exactly once across crashes).
        self.defer_renames = defer_renames
        self.sealed: list[tuple[Path, Path]] = []     # (temp, final) awaiting commit()
        self.files: list[Path] = []     # finished files, in order of completion
        self._closed = False
        self._next_number: dict[Path, int] = {}
        # A daemon carries the numbering in its checkpoints, so that a restart gives a file
        # the same number it had before the crash
        self._initial_number = {self.out / relative: int(number) for relative, number in (numbering or {}).items()}

        self._nr_campaigns = len(campaigns)
        channels = list(dict.fromkeys(c.channel for c in campaigns))
        self._channels = channels
        self._channel_of_campaign = np.array([channels.index(c.channel) for c in campaigns], np.intp)
        ids = tuple(c.id for c in campaigns)
        campaign = _LookupColumn("campaign", "campaign", ids)
        self._templates = _TemplateColumn.of("template", campaigns)
        file_format = _FORMATS[format]
        self._action_format = file_format((
            _IntColumn("seq", "seq", pa.uint64()),
            _TimeColumn("ts", "ts", pa.int64()),
            campaign,
            _IntColumn("msisdn", "msisdn", pa.uint64()),
            _LookupColumn("channel", "campaign", tuple(c.channel for c in campaigns)),
            self._templates,
            _LookupColumn("kind", "kind", KINDS),
            _TimeColumn("trigger_ts", "trigger_ts", pa.int64()),
            _IntColumn("cell", "cell", pa.uint32()),
        ))
        conversion_format = file_format((
            _IntColumn("seq", "seq", pa.uint64()),
            _TimeColumn("ts", "ts", pa.int64()),
            campaign,
            _IntColumn("msisdn", "msisdn", pa.uint64()),
            _IntColumn("contact_seq", "contact_seq", pa.uint64()),
            _LookupColumn("kind", "kind", KINDS),
        ))
        dead_letter_format = file_format((
            _IntColumn("offset", "offset", pa.uint64()),
            _LookupColumn("reason", "reason", BAD_REASONS),
            _LookupColumn("field", "field", BAD_FIELDS),
            _IntColumn("count", "count", pa.uint64()),
            _HexColumn("bytes_hex", "bytes", "nbytes"),
        ))
        assert tuple(c.name for c in self._action_format.columns) == ACTION_COLUMNS
        assert tuple(c.name for c in conversion_format.columns) == CONVERSION_COLUMNS
        assert tuple(c.name for c in dead_letter_format.columns) == DEAD_LETTER_COLUMNS

        self._action_streams: dict[int, _Stream] = {}   # channel index -> stream, by first use
        self._conversions = _Stream(self, self.out / "conversions", "conversions", conversion_format, "ts")
        self._dead_letters = _Stream(self, self.out / "dead_letters", "dead_letters", dead_letter_format, None)

    # -- writing

    def write_actions(self, records: np.ndarray) -> None:
        records = self._checked(records, ACTION_DTYPE)
        if not len(records):
            return
        self._check_index(records["campaign"], self._nr_campaigns, "campaign")
        self._check_index(records["kind"], len(KINDS), "kind")
        self._templates.check(records)
        channel = self._channel_of_campaign[records["campaign"]]
        completed = []
        try:
            if (channel == channel[0]).all():
                self._action_stream(int(channel[0])).write(records, completed)
                return
            distinct, first_seen = np.unique(channel, return_index=True)
            # Channels in order of first appearance, so that streams (and close()) follow record order.
            for index in distinct[np.argsort(first_seen)]:
                positions = np.flatnonzero(channel == index)
                self._action_stream(int(index)).write(records[positions], completed, positions)
        finally:
            self._finish(completed)

    def write_conversions(self, records: np.ndarray) -> None:
        records = self._checked(records, CONVERSION_DTYPE)
        if len(records):
            self._check_index(records["campaign"], self._nr_campaigns, "campaign")
            self._check_index(records["kind"], len(KINDS), "kind")
            self._write_stream(self._conversions, records)

    def write_dead_letters(self, records: np.ndarray) -> None:
        records = self._checked(records, DEAD_LETTER_DTYPE)
        if len(records):
            self._check_index(records["reason"], len(BAD_REASONS), "reason")
            self._check_index(records["field"], len(BAD_FIELDS), "field")
            self._check_index(records["nbytes"], DEAD_LETTER_BYTES + 1, "nbytes")
            self._write_stream(self._dead_letters, records)

    def write_stats(self, stats: dict) -> None:
        """OUT/stats.json, pretty-printed, replaced atomically."""
        text = json.dumps(stats, indent=2, sort_keys=False, ensure_ascii=False, default=_json_default)
        make_private_directories(self.out)
        _write_atomically(self.out / "stats.json", (text + "\n").encode(), self.durable)

    # -- finishing

    def close(self) -> None:
        """Finish (rename) every open file. Further writes raise ValueError; closing again does
        nothing. A file that cannot be finished (ENOSPC, EFBIG at its last flush) is removed,
        the others are finished, and the first such error is raised."""
        if self._closed:
            return
        self._closed = True
        failed = None
        for stream in self._streams():
            file = stream.take_open_file()
            if file is not None:
                try:
                    self._complete(file)
                except BaseException as error:
                    file.discard()
                    failed = failed or error
        if failed is not None:
            raise failed

    def seal(self) -> list[tuple[Path, Path]]:
        """Complete every open file without renaming it (defer_renames); return every (temp,
        final) pair completed since the last seal. Writing goes on into new files."""
        if not self.defer_renames:
            raise ValueError("seal() needs a SinkSet made with defer_renames=True")
        for stream in self._streams():
            file = stream.take_open_file()
            if file is not None:
                self._complete(file)
        sealed, self.sealed = self.sealed, []
        return sealed

    @staticmethod
    def commit(pairs) -> list[Path]:
        """Give sealed files their final names (idempotent: a pair already renamed is skipped)."""
        done = []
        directories = set()
        for temp, final in pairs:
            temp, final = Path(temp), Path(final)
            if temp.exists():
                os.replace(temp, final)
                directories.add(final.parent)
            if final.exists():
                done.append(final)
        for directory in directories:
            _fsync_directory(directory)
        return done

    def stream_directories(self) -> list[Path]:
        return [self.out / channel for channel in self._channels] + [self._conversions.directory,
                                                                     self._dead_letters.directory]

    def numbering(self) -> dict[str, int]:
        """The number the next file of each sink directory gets, by directory relative to OUT."""
        numbers = {}
        for directory in self.stream_directories():
            number = self._next_number.get(directory)
            if number is None:
                number = self._initial_number.get(directory) or self._first_free_number(directory)
            numbers[str(directory.relative_to(self.out))] = number
        return numbers

    @staticmethod
    def _first_free_number(directory: Path) -> int:
        # after every numbered file already there, leftover temp files included, so that a
        # second run into the same OUT never overwrites the first
        if not directory.is_dir():
            return 1
        existing = (_NUMBERED_FILE.fullmatch(name) for name in os.listdir(directory))
        return max((int(m[1]) for m in existing if m), default=0) + 1

    @staticmethod
    def remove_beyond(out: Path, numbering: dict) -> list[Path]:
        """Delete the finished files numbered at or after `numbering` (those of work that a
        restored checkpoint does not hold, to be done again under the same numbers)."""
        removed = SinkSet.numbered_beyond(out, numbering)
        for path in removed:
            path.unlink()
        return removed

    @staticmethod
    def numbered_beyond(out: Path, numbering: dict) -> list[Path]:
        """The finished files numbered at or after `numbering` (a checkpoint's): a service
        renames them only after the checkpoint that names them is written, so they prove
        that a later checkpoint was."""
        found = []
        for relative, number in numbering.items():
            directory = Path(out) / relative
            if not directory.is_dir():
                continue
            for name in sorted(os.listdir(directory)):
                m = _NUMBERED_FILE.fullmatch(name)
                if m and int(m[1]) >= int(number):
                    found.append(directory / name)
        return found

    @staticmethod
    def finished_beyond(out: Path, numbering: dict) -> list[Path]:
        """numbered_beyond without the temporary files (.NAME.tmp) a crash leaves: only a
        finished file proves that a later checkpoint was written."""
        return [p for p in SinkSet.numbered_beyond(out, numbering)
                if not p.name.startswith(".") and not p.name.endswith(".tmp")]

    def _complete(self, file: "_SinkFile") -> None:
        if self.defer_renames:
            self.sealed.append((file.finish(self.durable, rename=False), file.path))
        else:
            self.files.append(file.finish(self.durable))

    def abort(self) -> None:
        """Delete every open file's temp file without finishing it; finished files stay."""
        self._closed = True
        for stream in self._streams():
            file = stream.take_open_file()
            if file is not None:
                file.discard()

    def __enter__(self) -> "SinkSet":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- internals

    def _streams(self) -> list[_Stream]:
        return [*self._action_streams.values(), self._conversions, self._dead_letters]

    def _action_stream(self, channel: int) -> _Stream:
        stream = self._action_streams.get(channel)
        if stream is None:
            directory = self.out / self._channels[channel]
            stream = _Stream(self, directory, "actions", self._action_format, "ts")
            self._action_streams[channel] = stream
        return stream

    def _write_stream(self, stream: _Stream, records: np.ndarray) -> None:
        completed = []
        try:
            stream.write(records, completed)
        finally:
            self._finish(completed)

    def _finish(self, completed: list) -> None:
        """Finish the files a batch completed, in record order. Writers call this in `finally`:
        those files are whole even when a later part of the batch failed."""
        completed.sort(key=lambda entry: entry[0])
        for k, (_, file) in enumerate(completed):
            try:
                self._complete(file)
            except BaseException:
                # this one cannot be completed (its close failed: EFBIG, ENOSPC), and those
                # after it must not take their names before it: none is left half made
                for _, later in completed[k:]:
                    later.discard()
                raise

    def _allocate_number(self, directory: Path) -> int:
        number = self._next_number.get(directory)
        if number is None:
            make_private_directories(directory)
            number = self._initial_number.get(directory) or self._first_free_number(directory)
        self._next_number[directory] = number + 1
        return number

    def _checked(self, records: np.ndarray, dtype: np.dtype) -> np.ndarray:
        if self._closed:
            raise ValueError("write to a closed SinkSet")
        if isinstance(records, np.ndarray) and records.dtype != dtype and records.dtype.names is not None \
                and set(records.dtype.names) == {n for n in dtype.names if not n.startswith("_")}:
            # the API's records (Run.actions) leave out the core's padding: put it back
            full = np.zeros(len(records), dtype)
            for name in records.dtype.names:
                full[name] = records[name]
            records = full
        if not isinstance(records, np.ndarray) or records.dtype != dtype:
            got = getattr(records, "dtype", type(records).__name__)
            raise TypeError(f"expected a NumPy array of {dtype}, got {got}")
        return records.reshape(-1)

    @staticmethod
    def _check_index(values: np.ndarray, bound: int, name: str) -> None:
        if int(values.max()) >= bound:
            raise ValueError(f"record {name} {int(values.max())} out of range (must be < {bound})")


class SinkThread:
    """A SinkSet's writes made on one thread of their own, in the order they were handed
    over, so that files are created, formatted and written while the caller's thread does
    other work (replay: the core decoding the next piece, without the GIL). The files are
    those the SinkSet alone writes: one writer, first in first out.

    write_actions/write_conversions/write_dead_letters hand a batch over (at most `depth`
    wait; the caller blocks beyond). An error of the thread is raised in the caller at its
    next hand-over or at finish(); batches handed over after it are not written, as the
    caller would not have written them either. finish() waits for every batch; the SinkSet
    is then the caller's again (stats, close)."""

    def __init__(self, sinks: "SinkSet", depth: int = 2):
        import queue
        import threading
        self.sinks = sinks
        self.error: Optional[BaseException] = None
        self._raised = False
        self._stopped = False       # finish() was interrupted: the batches not begun are dropped
        self._queue = queue.Queue(maxsize=depth)
        # set when the thread has written its last batch: finish() waits on it, not on
        # Thread.join, which an interrupt breaks on Python 3.11 leaving the thread marked
        # stopped while it still writes (the lock it waits on is released on the way out),
        # so that a second join returned at once and close() ran beside the writes
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._work, name="sinks", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                if self.error is None and not self._stopped:
                    method, records = item
                    try:
                        method(records)
                    except BaseException as error:      # handed to the caller, whatever it is
                        self.error = error
        finally:
            self._done.set()

    def _put(self, method, records: np.ndarray) -> None:
        self._raise()
        self._queue.put((method, records))

    def _raise(self) -> None:
        if self.error is not None and not self._raised:
            self._raised = True
            raise self.error

    def write_actions(self, records: np.ndarray) -> None:
        self._put(self.sinks.write_actions, records)

    def write_conversions(self, records: np.ndarray) -> None:
        self._put(self.sinks.write_conversions, records)

    def write_dead_letters(self, records: np.ndarray) -> None:
        self._put(self.sinks.write_dead_letters, records)

    @property
    def done(self) -> bool:
        """Whether the thread has ended: nothing writes the files any more."""
        return self._done.is_set()

    @property
    def dropped(self) -> bool:
        """Whether batches handed over were dropped unwritten (finish() interrupted)."""
        return self._stopped

    def finish(self, interrupted: bool = False) -> None:
        """Wait until every batch handed over is written; raise the thread's error if the
        caller has not had it yet. `interrupted`: the caller is already stopping for an
        interruption (a first Ctrl-C or SIGTERM).

        Interrupted while it waits after one (a second Ctrl-C), it drops the batches not begun,
        waits for the one being written and re-raises the interruption: the caller's stats
        and close must never run beside the thread's writes to the same files. Should that
        batch, or one before it, have failed, its error is raised instead, the interruption
        as its context: a full disk said only as "aborted" would be found again at the next
        run. A first interruption that comes here (the stream had ended) lets every batch be
        written, as a first one anywhere else does, and is raised once they are."""
        if self._done.is_set():
            self._raise()
            return
        ended = False
        first: Optional[BaseException] = None
        while True:
            try:
                if not ended:
                    self._queue.put(None)
                    ended = True
                self._done.wait()
                break
            except BaseException as e:
                if not (interrupted or first is not None):
                    first = e
                    continue
                self._stopped = True
                self._wait_out(None if ended else self._queue)
                self._raise()
                raise
        self._raise()
        if first is not None:
            raise first

    def _wait_out(self, queue=None) -> None:
        """End the thread (the end marker put on `queue` first, when given; it waits while
        the queue is full) and wait for the batch being written, whatever interrupts either
        wait: what an interrupt would break off is the guarantee that nothing writes beside
        the caller's close. A write that hangs (a dead NFS server) is then stopped by SIGKILL
        alone."""
        while queue is not None:
            try:
                queue.put(None)
                queue = None
            except BaseException:
                continue
        while True:
            try:
                self._done.wait()
                return
            except BaseException:
                continue


def _json_default(value):
    # Counters often arrive as NumPy scalars straight from the core's arrays.
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
