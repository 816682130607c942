"""`sigmatch run`: the long-lived service. This module holds the spool source (probes drop
`*.msgpack` files into a directory) with exactly-once output across crashes.

The spool is one event stream: its files are read in name order, an event may span two
files, and byte offsets count from the first byte of the first file ever processed.

Exactly once: at every checkpoint (after each spool file, and every few seconds inside a
long one) the daemon
  1. completes the open sink files under their temporary names (SinkSet.seal),
  2. writes a checkpoint (engine.service.checkpoint.CheckpointStore: an incremental record of what
     changed, or now and then a new full base) holding the engine state, the position in
     the spool, the sink numbering, the sealed files' renames and the names of the spool
     files it covers,
  3. renames the sealed files, and moves the spool files that the *previous* checkpoint
     covered to `SPOOL/done/`.
A crash before 2 leaves the previous checkpoint: start-up deletes every temporary sink file
and processes the input again, producing the same records under the same names. A crash
after 2 is rolled forward at start-up (renames and moves repeated). Spool files move one
checkpoint late so that, when the newest checkpoint turns out damaged, the one before it
still finds its input in the spool; the finished sink files it does not cover are removed
(they are made again, under the same numbers). So the finished sink files are those of one
uninterrupted run, whatever the number of `kill -9`. The one thing that differs is where
files end: each checkpoint completes the open files.

Whoever can write the spool is not trusted with what the service can read: a spool file is
opened without following links and read only when it is a regular file of an allowed owner
(`--spool-owner`); anything else, and a file that cannot be read, goes to `SPOOL/rejected/`
with a `.reason` beside it, never read; so does a file that is not an event stream (text,
compressed, times in seconds: loaders.sniff), examined but not processed. A file is taken
once its size and mtime have been still for `--settle` seconds; it is read (not mapped: a
file truncated under a map kills the process with SIGBUS) to its end, however far it grew;
bytes appended after it was processed go to `rejected/` as a tail named by the offset it
starts at. `--keep-done` prunes `done/`
of files no usable checkpoint needs again.
"""
from __future__ import annotations

import collections
import datetime
import errno
import json
import logging
import math
import os
import pwd
import re
import secrets
import signal
import socket
import stat
import threading
import time
import zlib
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from engine.api import _STREAM_ERRORS, SINK_BATCH, Engine, largest_bad_value
from engine.service.checkpoint import CheckpointSet, CheckpointStore, engine_for
from engine.errors import CheckpointError, SigmatchError
from engine.records import BAD_REASONS
from engine.language.config import input_stamps
from engine.service.sources import JournalDirectory, StdinJournal, TcpJournal
from engine.sinks import (OUT_LOCK, SERVICE_ID_FILE, SPOOL_LOCK, SinkSet, earlier_run_files, fsync_path, hold_lock,
                          lock_output, make_private_directories, open_lock_file, read_plain_head,
                          unwritable_output_directory, write_private)
from engine.wording import plural
from loaders.lists import NOT_FOUND_HINT
from loaders.sniff import judge_spool_file

__all__ = ["SpoolDaemon", "run_spool", "sd_notify", "parse_keep_done", "spool_owner_ids", "SETTLE_S"]

log = logging.getLogger("sigmatch.daemon")
# When the service starts and stops: INFO records shown at the default level (WARNING), so
# that an operator always sees that it started, on what, and where it writes.
lifecycle = logging.getLogger("sigmatch.service")
lifecycle.setLevel(logging.INFO)

# Bytes fed to the core at a time: a long spool file is checkpointed within, and SIGTERM is
# answered, between two of these
FEED_BYTES = 8 << 20
# Inside one long spool file, a checkpoint at least this often (seconds)
CHECKPOINT_WITHIN_FILE_S = 5.0
# A checkpoint is written on a second thread while the engine goes on, from a copy of what
# it holds; a full base is copied only up to this many bytes of rows (beyond, the engine
# waits for it rather than hold the state twice)
DETACHED_BASE_BYTES = 1 << 30
# A spool file is read once its size and mtime have been still this long (seconds): a probe
# that writes in place instead of renaming a finished file is not read half-written. Files
# renamed in finished are older than this when listed, or wait this long at most.
SETTLE_S = 1.0
# done/ is measured (and pruned, with --keep-done) at most this often during a backlog, and
# whenever the spool runs empty
PRUNE_EVERY_S = 10.0
# A probe that wrote a spool file in place may append to it after it moved to done/ (its
# descriptor still open): each file moved is watched this long (seconds), the newest
# DONE_WATCH_FILES at most, and bytes beyond those processed are cut off into rejected/
DONE_WATCH_S = 300.0
DONE_WATCH_FILES = 1000
# Events begun at the end of a spool file, kept to warn when one ends as a bad value: a
# dead letter can surface a run later (runs of like bad values are written as one), so the
# last few are kept, each 3 small values
CUT_EVENTS_KEPT = 64
# A new checkpoint base releases the files in done/ that --keep-done holds for the fallback;
# one is made for that at most this often (seconds)
REBASE_FOR_DONE_S = 60.0
# A spool file not named *.msgpack is never read; one that has not changed for this long
# (seconds) is not a probe's file being written under another name: it is warned of, once
IGNORED_AFTER_S = 60.0
# The longest spool name read (bytes): done/NAME.N, rejected/NAME.reason and the late tail's
# .NAME.tail-SIZE.N.tmp must fit a file system's 255; a longer name is left in the spool
# with a warning (it crashed the service at every start once done/ held its name)
MAX_SPOOL_NAME_BYTES = 200
# Suffixes of compressed files: a spool file so named is ignored with the advice to decompress it
_COMPRESSED_SUFFIXES = {"gz", "zst", "xz", "bz2", "zip", "lz4"}
# What the service creates holds raw events and state: owner and group only, whatever the umask
FILE_MODE = 0o640
DIR_MODE = 0o750
# Reason names of the core's stream status codes (StreamError.reason); 4 is the core's own
_STATUS_REASONS = {status: reason for status, (reason, _) in _STREAM_ERRORS.items()} | {4: "out_of_memory"}
_STATUS_DETAILS = {status: detail for status, (_, detail) in _STREAM_ERRORS.items()} | {4: "out of memory in the core"}


def _make_durable(paths: list[str]) -> None:
    """fsync files written without it, and their directories: the sealed sink files must be
    on disk, under their temporary names, before a checkpoint names them."""
    for path in paths:
        try:
            fsync_path(path)
        except OSError as e:
            raise _naming(e, path) from None
    for directory in {os.path.dirname(path) for path in paths}:
        try:
            fsync_path(directory)
        except OSError as e:
            raise _naming(e, directory) from None


def _naming(error: OSError, path) -> OSError:
    """`error` with the path it concerns: write() and fsync() failing with ENOSPC or EIO name
    no file, and an operator must know which disk filled."""
    if error.filename is not None:
        return error
    named = OSError(error.errno, error.strerror or str(error), str(path))
    named.__cause__ = error.__cause__
    return named


def _identity(fd: int, info: os.stat_result) -> tuple[int, int, int, int]:
    """An open spool file's identity: (st_dev, st_ino, bytes fingerprinted, their CRC-32)."""
    head = os.pread(fd, min(info.st_size, FINGERPRINT_BYTES), 0)
    return info.st_dev, info.st_ino, len(head), zlib.crc32(head)


def _same_file(fd: int, info: os.stat_result, ident: tuple) -> bool:
    """Whether the open file `fd` is the one `ident` (_identity) names: the same first bytes,
    whatever its inode (a spool copied or restored keeps them; a file overwritten in place,
    `cp new f.msgpack`, does not), where it still holds that many; else the same inode (a
    file cut shorter is the one read, cut: its tail is dealt with as such)."""
    same_inode = (info.st_dev, info.st_ino) == tuple(ident[:2])
    if len(ident) < 4:
        return same_inode       # recorded by name and inode only
    length, crc = ident[2], ident[3]
    if length == 0 or info.st_size < length:
        return same_inode or (length == 0 and info.st_size == 0)
    return zlib.crc32(os.pread(fd, length, 0)) == crc


def _same_identity(a, b) -> bool:
    """Whether two recorded identities (_identity) name one file: the same inode, or the same
    first bytes (a spool copied or restored in between)."""
    a, b = list(a), list(b)
    if a[:2] == b[:2]:
        return True
    return len(a) >= 4 and len(b) >= 4 and a[2] > 0 and a[2:4] == b[2:4]


# The most entries an event's array or map may hold for a value left open across files to be
# taken for an event: a probe's event has a handful of fields (SPEC §1.4: 8 by position)
EVENT_ENTRIES_MAX = 64


def event_shaped(head: bytes) -> bool:
    """Whether a msgpack value beginning with `head` (its first bytes, up to 9) may be an
    event: an array or a map of at most EVENT_ENTRIES_MAX entries, or a header too short to
    tell. A string, binary, number, or a container of thousands is not."""
    if not head:
        return True
    b = head[0]
    if 0x80 <= b <= 0x9f:                       # fixmap, fixarray: at most 15
        return True
    if b in (0xdc, 0xde):                       # array16, map16
        return len(head) < 3 or int.from_bytes(head[1:3], "big") <= EVENT_ENTRIES_MAX
    if b in (0xdd, 0xdf):                       # array32, map32
        return len(head) < 5 or int.from_bytes(head[1:5], "big") <= EVENT_ENTRIES_MAX
    return False


def _host_port(host: str, port: int) -> str:
    """HOST:PORT as a URL writes it: an IPv6 address in brackets ([::1]:9464)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _plain_name(name) -> bool:
    """Whether a name a checkpoint gives is a file name of the spool or done/ (one component):
    nothing read back from a checkpoint moves a file from elsewhere."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _read_id(path: Path) -> Optional[str]:
    """OUT's SERVICE_ID_FILE, or None when there is none to read: missing, a link, a FIFO (never
    waited on), not a plain file. Whoever can write OUT could put any of those there."""
    head = read_plain_head(path, 256)
    return None if head is None else head.decode("ascii", "replace").strip()


def _local_time(ms: Optional[int]) -> str:
    """An event time (ms since the epoch) as an ISO local time: never a long digit run that
    log masking would take for a subscriber number."""
    if ms is None:
        return "none"
    try:
        return datetime.datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):      # past the year 9999: Python's dates end there
        from engine.wording import local_time
        return local_time(ms) + " UTC"


def _own_subdirectory(spool: Path, name: str) -> Path:
    """SPOOL/done or SPOOL/rejected, created when missing. Whoever writes the spool could have
    put a link or a directory of theirs there, and files are moved into it: it must be a real
    directory of this service's user."""
    path = spool / name
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        make_private_directories(path)
        info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise OSError(errno.ENOTDIR, "not a directory of this service's user (a link, or another owner's): "
                      "move it away", str(path))
    return path


def _write_private(path: Path, data: bytes) -> None:
    """A small file written whole under a temporary name, mode FILE_MODE, then renamed."""
    write_private(path.with_name(f".{path.name}.tmp"), path, data)


# ASCII digits only: `\d` took a full-width ７ for 7 (helper-122), and no blank around it
_KEEP_DONE = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,6})?) ?([a-z]+)", re.ASCII)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_keep_done(text: str) -> tuple[str, float]:
    """`--keep-done`: a DURATION (`90m`, `12h`, `7d`, `2w`) -> ("age", seconds), or a SIZE
    (`500MB`, `50GB`, `1TiB`) -> ("size", bytes). ValueError with the reason otherwise."""
    match = _KEEP_DONE.fullmatch(text.lower())
    if not match or match.group(2) not in _AGE_UNITS | _SIZE_UNITS:
        raise ValueError(f"--keep-done {text!r}: expected a duration (90m, 12h, 7d, 2w) "
                         "or a size (500MB, 50GB, 1TiB)")
    value, unit = float(match.group(1)), match.group(2)
    if value <= 0:
        raise ValueError(f"--keep-done {text!r}: must be more than 0")
    if unit in _AGE_UNITS:
        return "age", value * _AGE_UNITS[unit]
    return "size", value * _SIZE_UNITS[unit]


def spool_owner_ids(names: Iterable[str]) -> set[int]:
    """`--spool-owner` values (user names or numeric ids, repeated or comma-separated) -> uids;
    ValueError naming an unknown user."""
    uids = set()
    for value in names:
        for name in filter(None, (part.strip() for part in value.split(","))):
            if name.isdigit():
                uids.add(int(name))
                continue
            try:
                uids.add(pwd.getpwnam(name).pw_uid)
            except KeyError:
                raise ValueError(f"--spool-owner {name!r}: no such user") from None
    return uids


def _move_entry(entry) -> Optional[tuple[int, str, str, Optional[list]]]:
    """A recorded move [checkpoint number, spool name, done/ name, identity or None] as a
    tuple; None for anything else (a hand-edited header, a damaged journal line)."""
    if not (isinstance(entry, list) and len(entry) == 4):
        return None
    number, name, target, ident = entry
    if (isinstance(number, int) and not isinstance(number, bool) and isinstance(name, str)
            and isinstance(target, str)
            and (ident is None or (isinstance(ident, list) and all(isinstance(n, int) for n in ident)))):
        return number, name, target, ident
    return None


def _recent_entries(extra: dict) -> list[tuple[int, str, str, Optional[list]]]:
    """A checkpoint's "recent" moves (_move_entry); entries of another shape are left out."""
    return [entry for entry in map(_move_entry, extra.get("recent") or []) if entry is not None]


def _journal_line(entry: list) -> bytes:
    """One line of STATE/moves: the crc32 of the JSON (8 hex digits), a space, the JSON."""
    text = json.dumps(entry, separators=(",", ":"), ensure_ascii=True)
    return f"{zlib.crc32(text.encode()):08x} {text}\n".encode()


def _relative_to(path: str, folder: Path) -> str:
    """`path` as the configuration names it, relative to its folder where it lies below it."""
    for base in (folder, folder.resolve()):
        try:
            return str(Path(path).relative_to(base))
        except ValueError:
            pass
    return path


def _one_line(error: BaseException, limit: int = 300) -> str:
    """An exception as one bounded line: its own text for sigmatch's errors, which name the
    file and key; with its type for anything else (RecursionError, csv.Error, ...)."""
    text = (str(error).splitlines() or [""])[0]
    if not isinstance(error, (SigmatchError, OSError)):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISLNK, "a symbolic link"))


def _kind(mode: int) -> str:
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


def open_state_lock(state: Path) -> int:
    """STATE/lock opened for hold_lock by the service and `sigmatch reshard` alike
    (engine.sinks.open_lock_file)."""
    return open_lock_file(state / "lock", f"--state {state}")


def _listening_probe(host: str, port: int) -> socket.socket:
    """A socket listening on (host, port), as the servers bind: SO_REUSEADDR, so that a port in
    TIME_WAIT after a restart is not taken for one in use; listening, so that two probes of
    one address clash as two servers would. OSError when it cannot be bound."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        probe.listen(1)
    except BaseException:
        probe.close()
        raise
    return probe


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) how the service stands: READY=1, STOPPING=1. A no-op when
    not started by systemd (no NOTIFY_SOCKET)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError as e:
            log.warning("cannot notify systemd: %s", e)


# A spool file is known by its (st_dev, st_ino) and, for when those change (the spool or a
# journal under STATE copied or restored: `cp -a`, a backup, another mount), by a CRC-32 of
# its first bytes: this many at most
FINGERPRINT_BYTES = 64 << 10

# The files the last RECENT_CHECKPOINTS - 1 checkpoints moved to done/ ride in each one
# ("recent", at most RECENT_MOVES_MAX entries): a fallback past up to that many unreadable
# checkpoints in a row finds what they moved (_forget_lost_work).
RECENT_CHECKPOINTS = 8
RECENT_MOVES_MAX = 4096

# STATE/moves: every file a checkpoint moves to done/, appended and fsync'ed before the
# checkpoint is written, one line each (_journal_line): the JSON [checkpoint number, spool
# name, done/ name, identity] after its crc32. A fallback to checkpoint C brings back what
# the journal says checkpoints after C moved, even when none of those can be read (damage
# at the end of the log). At every start the entries beyond the checkpoint in use are
# dropped (dealt with), so the numbers that follow it, used again, mean the new ones.
MOVES_JOURNAL = "moves"


# explain in the service: at most WATCH_MAX subscribers watched at once, each with a ring of
# its last WATCH_RING entries (events and timers), so the memory it takes is bounded
# (docs/operations.md: about 4 KiB an entry with a dozen campaigns per event type, so some
# 80 MiB with every slot full)
WATCH_MAX = 100
WATCH_RING = 200


class SpoolDaemon:
    def __init__(self, config: Path, out: Path, state: Path, spool: Path, *,
                 format: Optional[str] = None, poll_s: float = 0.5,
                 lookup: Optional[tuple[str, int]] = None, lookup_token: Optional[str] = None,
                 metrics: Optional[tuple[str, int]] = None, idle_advance_s: Optional[float] = None,
                 stdin=None, listen: Optional[tuple[str, int]] = None, checkpoint_every_s: float = 10.0,
                 spool_owners: Optional[Iterable[int]] = None, settle_s: float = SETTLE_S,
                 keep_done: Sequence[tuple[str, float]] = (), watch: Optional[Path] = None, workers: int = 1):
        self.config_path = Path(config)
        # the subscribers split over this many shard engines fed together (engine.workers.inprocess)
        self.workers = workers
        # subscribers to explain from the start (`--watch FILE`); the lookup adds and removes more
        self.watch_path = Path(watch) if watch is not None else None
        self._watch_numbers: list[int] = []     # the --watch list, read by _preflight
        self.out = Path(out)
        self.out_id: Optional[str] = None       # SERVICE_ID_FILE's id: the checkpoint's, or a new one (_restore)
        self.state = Path(state)
        self.spool = Path(spool) if spool is not None else None
        self.format = format
        self.poll_s = poll_s
        self.stop = threading.Event()
        self.reload_requested = threading.Event()
        # While a backlog is worked through, a checkpoint at the first spool-file boundary this
        # many seconds after the previous one (inside a long file: at a piece boundary); when
        # the spool runs empty, at once. Files arriving slower than they are processed thus
        # each get one; a backlog is not slowed by writing state after every small file. The
        # default (10 s) is where a backlog runs at replay's speed (docs/performance.md).
        # 0: after every file (and every CHECKPOINT_WITHIN_FILE_S inside one).
        self.checkpoint_every_s = checkpoint_every_s
        self.store = CheckpointSet(self.state, workers) if workers > 1 else CheckpointStore(self.state)
        self.uncommitted: list[str] = []        # spool files fed whole since the last checkpoint
        self.covered: list[str] = []            # spool files the last checkpoint covers, not yet moved
        # Checkpoints are numbered (extra "checkpoint_number"); the files each of the last
        # RECENT_CHECKPOINTS moved ([number, name, done/ name, identity]) ride in every
        # checkpoint's "recent", so that a fallback past several unreadable checkpoints in a
        # row still finds, in the first readable one after them, what they moved
        self.checkpoint_number = 0
        self.recent_moves: collections.deque = collections.deque()
        self.resume: dict[str, int] = {}        # a spool file checkpointed part-way: its next offset
        self.resume_ids: dict[str, tuple[int, ...]] = {}    # ... and which file that was (when recorded)
        self._position: Optional[tuple[str, int]] = None   # where reading stopped, when part-way
        self._writer: Optional[threading.Thread] = None     # the checkpoint being written
        self._writer_outcome: Optional[tuple] = None        # (seconds, exception) when it ended
        self.in_flight: set[str] = set()        # spool files its completion moves to done/
        self._unwritten: dict[str, list] = {"actions": [], "conversions": [], "dead_letters": []}
        self.last_commit = time.monotonic()
        self.engine: Optional[Engine] = None
        self.sinks: Optional[SinkSet] = None
        self.lookup = lookup
        self.lookup_token = lookup_token
        self.metrics_address = metrics
        # Off by default: the one setting that lets the wall clock change the output.
        self.idle_advance_s = idle_advance_s
        # Sources: stdin and TCP input is journaled (docs/operations.md). Alone, a source's
        # journal is the spool (under the state directory); beside a probes' spool, the
        # journal files go into it, named journal-NNN, so that all input is one stream.
        self.stdin = stdin
        self.journal: Optional[StdinJournal] = None
        self.listen = listen
        self.journal_prefix = ""
        if spool is not None:
            self.journal_prefix = "journal-"
        elif stdin is not None and listen is not None:
            self.spool = self.state / "journal"
        elif stdin is not None:
            self.spool = self.state / "stdin-journal"
        elif listen is not None:
            self.spool = self.state / "tcp-journal"
        else:
            raise ValueError("no source: give a spool directory, stdin or a TCP address")
        self.metrics = None
        # Spool files read only when regular files of these users (the service's own user and
        # the spool directory's owner when not given; see run())
        self.spool_owners = set(spool_owners) if spool_owners else None
        self.settle_s = settle_s
        self.keep_done = list(keep_done)
        self.fed_sizes: dict[str, int] = {}     # spool files fed whole: the bytes read (a tail beyond is late)
        # spool files whose stream broke inside them: what broke it (their fed size is the
        # bytes before the break; the rest goes to rejected/NAME.rest-OFFSET when they move)
        self.broken: dict[str, str] = {}
        # The identity (_identity: inode and first bytes) of each spool file opened, until it is
        # moved: a name is not a file. A probe that renames or writes a new file over one read
        # (before it moved to done/) must not have the new one archived unread, nor a restart
        # resume it at the old one's offset.
        self.fed_ids: dict[str, tuple[int, ...]] = {}      # name -> _identity
        # (stream offset of its first byte, name) of the files this process read from their
        # start, the latest last: an event that breaks in a later file names the one it began in
        self._stream_files: collections.deque = collections.deque(maxlen=1024)
        self._settling: dict[str, tuple] = {}   # name -> ((size, mtime), first seen so) while it settles
        self._unmovable: set[str] = set()       # rejected but not movable: ignored (logged once) while present
        self.stdin_rejected: list[str] = []     # standard input alone: its journal files set aside, as said
        self._ignored: set[str] = set()         # spool files not named *.msgpack, warned of (once while present)
        self._buffer = memoryview(bytearray(FEED_BYTES))    # spool files are read into this
        self._tail_buffer = memoryview(bytearray(1 << 20))  # tails are copied through this (checkpoint thread)
        self.spool_counts = {"rejected": 0, "changed": 0, "tails": 0, "broken": 0}    # this process's, for metrics
        self.done_bytes: Optional[int] = None
        self._counts_lock = threading.Lock()    # tails are counted on the checkpoint thread
        self._last_prune = float("-inf")
        # files moved to done/ lately: done name -> (spool name, bytes processed, when moved,
        # bytes past them cut so far); written on the checkpoint thread, under _counts_lock
        self._done_watch: dict[str, tuple[str, int, float, int]] = {}
        self._cut_events: dict[int, tuple[str, int]] = {}     # stream offset -> (file, its bytes)
        # the same files as the checkpoints record them ([done name, spool name, bytes
        # processed, wall-clock time of the checkpoint that moved them]), so that a restart
        # watches them again (_watch_again): a probe's descriptor writes on while the
        # service is down, and its bytes in done/ would be read by a replay, never by us
        self._moved_lately: collections.deque = collections.deque(maxlen=DONE_WATCH_FILES)
        self._last_rebase_for_done = float("-inf")
        self._prune_refused = False             # a damaged log was reported (once)
        self._moves_unreadable: Optional[str] = None    # STATE/moves could not be read: said once, this
        # The core is fed without the GIL; readers on other threads (the lookup) hold this.
        self.lock = threading.Lock()
        self.servers: list = []
        self._lock_fd: Optional[int] = None         # STATE/lock, held while the process lives
        self._spool_lock_fd: Optional[int] = None   # SPOOL/.sigmatch.lock, likewise
        self._out_lock_fd: Optional[int] = None     # OUT/.sigmatch-out.lock, likewise (-1: no locks there)
        # the profile, list and area files as the engine read them (input_stamps): in each
        # checkpoint, so that a restart names those changed while stopped
        self._inputs: dict[str, list[int]] = {}

    # -- start-up

    def _restore(self) -> dict:
        """The newest usable checkpoint's extra ({} on a first start). A damaged checkpoint is
        reported and the one before it used (CheckpointStore.load)."""
        if (self.state / "checkpoint").exists() and not self.store.exists():
            raise CheckpointError(f"{self.state}: holds a checkpoint of an older sigmatch (one full file); "
                                  "this one keeps incremental checkpoints: drain with the older version, "
                                  "or move the state directory away to start afresh")
        loaded = self.store.load()
        # checkpoints before sigmatch kept the id: the OUT given is taken as the service's own
        self.out_id = (loaded.extra.get("out_id") if loaded is not None else None) or secrets.token_hex(16)
        if loaded is not None and loaded.extra.get("out_id"):
            self._refuse_other_output()
        self._mark_output()
        if loaded is None:
            # the journal of moves belongs to the checkpoints: one left beside none (a state
            # emptied by hand) would pass its files for those of this service's checkpoints
            try:
                (self.state / MOVES_JOURNAL).unlink()
            except FileNotFoundError:
                pass
            if self.workers > 1:
                from engine.workers.inprocess import ShardedEngine
                self.engine = ShardedEngine.build(self.config_path, self.workers)
            else:
                self.engine = Engine.from_config(self.config_path)
            self._inputs = input_stamps(self.engine.config)
            return {}
        if self.workers > 1:
            from engine.workers.inprocess import ShardedEngine
            self.engine, dropped = ShardedEngine.restored(self.config_path, loaded)
            self.store.adopt(loaded, self.engine.shards, rebase=dropped is not None)
        else:
            # subscribers in the checkpoint's order (it differs from the snapshot's after a reload)
            self.engine, dropped = engine_for(self.config_path, loaded)
            self.store.adopt(loaded, self.engine, rebase=dropped is not None)
        extra = loaded.extra
        self._inputs = input_stamps(self.engine.config)
        if dropped is not None:
            files = self._inputs_changed(extra)
            log.warning("the configuration, profiles, lists or areas changed while stopped"
                        f"{f' ({files} among the files)' if files else ''}: state carried over as by a reload "
                        f"({len(self.engine.campaigns):,} campaigns, {len(self.engine.subscribers):,} subscribers; "
                        f"{dropped:,} pending actions of removed campaigns dropped)")
        if dropped is None:
            self._say_what_changed_while_stopped(extra)
        in_use = extra.get("checkpoint_number")
        if loaded.damage or loaded.fallbacks:
            self._forget_lost_work(extra, loaded.later_extras)
        else:
            beyond = SinkSet.finished_beyond(self.out, extra.get("numbering") or {})
            # the journal of moves holds a checkpoint's entries before it is written, and the
            # next one's only once it is: entries two past the one in use prove one lost
            later = sorted({number for number, *_ in self._read_moves()
                            if isinstance(in_use, int) and number > in_use + 1})
            if beyond or later:
                # a log cut short (its tail lost: a file system's damage, a copy of the state
                # taken earlier): output renamed, or spool files moved, after later checkpoints
                evidence = (f"the output of later ones is in {self.out}: {beyond[0].relative_to(self.out)} and "
                            f"{len(beyond) - 1:,} more" if beyond else
                            f"{self.state / MOVES_JOURNAL} names spool files that checkpoint {later[0]:,} moved")
                moved = (f"the spool files the later ones moved to done/ come back as {MOVES_JOURNAL} names them"
                         if later else
                         f"{MOVES_JOURNAL} names no spool file that the later ones moved (an older copy of the "
                         "state put back with its own journal?): files they moved to done/ are not processed "
                         "again; move them back to the spool by hand")
                log.error(f"cannot use the newest checkpoints: {self.state} holds fewer than were written "
                          f"({evidence}); the newest one it holds is used, the output after it is made again; "
                          f"{moved}")
                self._forget_lost_work(extra, loaded.later_extras)
        # What the journal names beyond the checkpoint in use is dealt with: back in the spool
        # after a fallback, or never moved (a crash between the journal and the checkpoint).
        # The checkpoints that follow are numbered from the one in use again; one without a
        # number (an older sigmatch's) starts the numbering, and the journal, afresh.
        self._prune_moves(lambda number: isinstance(in_use, int) and number <= in_use)
        log.info(f"restored generation {loaded.generation:,} + {loaded.records:,} records (event clock "
                 f"{_local_time(self.engine.clock)}, seq {self.engine._core.seq:,})")
        return extra

    def _refuse_other_output(self) -> None:
        """A service going on from its checkpoint writes into the OUT whose id the checkpoint
        holds, or into a new one; into another run's output (a replay's, another service's)
        it would overwrite that run's numbered files, or remove them as work to be redone.
        Output without an id may be this service's moved without its dot-files (`mv out/*`):
        the refusal says how to claim it."""
        marker = self.out / SERVICE_ID_FILE
        marked = _read_id(marker)
        if marked == self.out_id:
            return
        earlier = [p for p in earlier_run_files(self.out) if not p.name.endswith(".tmp")]
        if not earlier:
            return
        held = f"--out {self.out}: holds output ({earlier[0].relative_to(self.out)} and {len(earlier) - 1:,} more)"
        if marked:
            raise SigmatchError(
                f"{held} of another service ({SERVICE_ID_FILE} holds another id), not of the service whose "
                f"checkpoint --state {self.state} holds: it would overwrite those files: give that service's --out, "
                "or a new one")
        raise SigmatchError(
            f"{held} without the id of the service whose checkpoint --state {self.state} holds ({SERVICE_ID_FILE}, "
            f"which its own --out holds): it may be another run's, whose files it would overwrite. If it is this "
            f"service's output, moved without its dot-files, put the id back: echo {self.out_id} > {marker}; "
            "else give the service's own --out, or a new one")

    def _mark_output(self) -> None:
        """SERVICE_ID_FILE in OUT, before anything is written there (0640, fsynced, renamed)."""
        final = self.out / SERVICE_ID_FILE
        if _read_id(final) == self.out_id:
            return
        try:
            write_private(self.out / f"{SERVICE_ID_FILE}.new", final, f"{self.out_id}\n".encode())
        except OSError as e:
            raise _naming(e, final) from None

    def _forget_lost_work(self, extra: dict, later: list[dict]) -> None:
        """An older checkpoint than the newest is in use: the output that the newer ones
        finished goes (it is made again, the same), and their input comes back to the spool.
        `later`: the extras of the newer checkpoints that can be read, in order. The files a
        newer one moved to done/ are its "moving" (under its "done_names"); they are also the
        "covered" of the one before it, which is how the files moved by a checkpoint whose
        header cannot be read are found: in done/, by the identity recorded ("ids"). A file
        is known by its identity where one was recorded, so a later file that reused a name
        the checkpoint in use covers still comes back; one that cannot, because another file
        of its name is in the spool, is named in an error."""
        removed = SinkSet.remove_beyond(self.out, extra.get("numbering") or {})
        held = set(extra.get("covered") or []) | set(extra.get("moving") or [])
        held_ids = extra.get("ids") or {}
        back, missing, blocked = 0, [], []
        archive: Optional[dict[str, list[str]]] = None

        def kept(name: str, ident) -> bool:
            """Whether the checkpoint in use holds this file's events (by name, and by
            identity where both were recorded: another file of the name is not held)."""
            if name not in held:
                return False
            known = held_ids.get(name)
            return known is None or ident is None or _same_identity(known, ident)

        def in_spool(name: str, ident) -> bool:
            """Whether `name` is in the spool: as the file `ident` names (not moved yet, or
            brought back already) True; another file of that name is noted in `blocked`."""
            if not os.path.lexists(self.spool / name):
                return False
            if ident is not None and not self._still_there(self.spool / name, ident):
                blocked.append(name)
            return True

        def bring_back(name: str, target: str, ident) -> None:
            """A file a newer checkpoint moved to done/ as `target` returns to the spool: found
            by its identity where one was recorded (done/ may hold another file of that name
            by then), else by `target`."""
            nonlocal back, archive
            if not (_plain_name(name) and _plain_name(target)) or kept(name, ident):
                return
            if in_spool(name, ident):
                return
            if ident is not None:
                if archive is None:
                    archive = self._archive_names()
                candidates = [target] + [n for n in archive.get(name, []) if n != target]
                archived = self._archived([n for n in candidates if _plain_name(n)], ident)
            else:
                archived = self.spool / "done" / target
                archived = archived if os.path.lexists(archived) else None
            if archived is not None:
                os.replace(archived, self.spool / name)
                if archive is not None and archived.name in archive.get(name, []):
                    archive[name].remove(archived.name)
                back += 1
            elif name not in missing:
                missing.append(name)

        in_use = extra.get("checkpoint_number")
        for newer in later:
            ids = newer.get("ids") or {}
            moved_as = newer.get("done_names") or {}    # those moved under another name (_done_name)
            for name in newer.get("moving") or []:
                bring_back(name, moved_as.get(name, name), ids.get(name))
            if isinstance(in_use, int):
                # what the unreadable checkpoints between moved: those numbered after the one
                # in use (the files of earlier ones are in its state)
                for number, name, target, ident in _recent_entries(newer):
                    if number > in_use:
                        bring_back(name, target, ident)
            for name in newer.get("covered") or []:
                ident = ids.get(name)
                if not _plain_name(name) or ident is None or kept(name, ident):
                    continue    # held, or recorded before sigmatch kept ids
                if os.path.lexists(self.spool / name):
                    # not moved yet, or back already; or another file holds the name: it was
                    # moved only if done/ holds it
                    if not self._still_there(self.spool / name, ident):
                        if archive is None:
                            archive = self._archive_names()
                        if self._archived(archive.get(name, []), ident) is not None:
                            blocked.append(name)
                    continue
                if archive is None:
                    archive = self._archive_names()
                archived = self._archived(archive.get(name, []), ident)
                if archived is not None:
                    os.replace(archived, self.spool / name)
                    archive[name].remove(archived.name)
                    back += 1
        if isinstance(in_use, int):
            # what no readable checkpoint names (the newest ones unreadable): the journal
            journal = self._read_moves()
            for number, name, target, ident in journal:
                if number > in_use:
                    bring_back(name, target, ident)
        log.warning(f"an older checkpoint is in use: {len(removed):,} finished output files after it removed (to "
                    f"be made again), {back:,} spool files returned from done/")
        if missing:
            # removed from done/ by hand (--keep-done never takes what a fallback needs)
            log.error(f"{len(missing):,} spool files this checkpoint needs are gone from done/, their events "
                      f"are not processed again: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if blocked:
            blocked = list(dict.fromkeys(blocked))
            log.error(f"{len(blocked):,} spool files this checkpoint needs cannot come back from done/: another file "
                      f"of the same name is in the spool (a name used twice), their events are not processed "
                      f"again: {', '.join(blocked[:5])}{' ...' if len(blocked) > 5 else ''}")

    def _archive_names(self) -> dict[str, list[str]]:
        """done/'s files by the spool name they were moved from: NAME, and NAME.1, NAME.2 ...
        (_done_name) when done/ held that name already."""
        names: dict[str, list[str]] = {}
        try:
            entries = os.listdir(self.spool / "done")
        except FileNotFoundError:
            return names
        for entry in entries:
            names.setdefault(entry, []).append(entry)
            stem, dot, number = entry.rpartition(".")
            if dot and number.isdigit():
                names.setdefault(stem, []).append(entry)
        return names

    def _archived(self, candidates: list[str], ident) -> Optional[Path]:
        """The file of done/ among `candidates` that is the spool file `ident` (_identity)
        names (_same_file: the same first bytes, or the same inode), None when none is."""
        for candidate in candidates:
            path = self.spool / "done" / candidate
            if os.path.lexists(path) and self._still_there(path, ident):
                return path
        return None

    def _roll_forward(self, extra: dict) -> None:
        SinkSet.commit(extra.get("renames", []))
        # the bytes read of each file the checkpoint covers (absent before sigmatch kept them)
        self.fed_sizes.update({name: int(size) for name, size in (extra.get("sizes") or {}).items()})
        self.broken.update({name: str(why) for name, why in (extra.get("broken") or {}).items()})
        # which file each name was (absent before sigmatch kept them: then the name alone)
        ids = {name: tuple(int(n) for n in ident) for name, ident in (extra.get("ids") or {}).items()}
        moved_as = extra.get("done_names") or {}
        for name in extra.get("moving") or []:
            self._move_done(name, self.fed_sizes.pop(name, None), moved_as.get(name), ids.get(name),
                            self.broken.pop(name, None))
        self._watch_again(extra.get("moved_lately"))
        self.covered = list(extra.get("covered") or [])
        self.fed_ids.update({name: ids[name] for name in self.covered if name in ids})
        number = extra.get("checkpoint_number")
        if isinstance(number, int) and not isinstance(number, bool) and number >= 0:
            self.checkpoint_number = number
            by_number: dict[int, list] = {}
            for entry in _recent_entries(extra):
                by_number.setdefault(entry[0], []).append(entry)
            by_number[number] = [[number, name, moved_as.get(name, name), list(ids[name]) if name in ids else None]
                                 for name in extra.get("moving") or []]
            self.recent_moves = collections.deque(by_number[n] for n in sorted(by_number))
            while len(self.recent_moves) > RECENT_CHECKPOINTS - 1:
                self.recent_moves.popleft()
        position = extra.get("position")
        if position:
            self.resume[position[0]] = int(position[1])
            if position[0] in ids:
                self.resume_ids[position[0]] = ids[position[0]]
        # Temporary sink files not covered by the checkpoint belong to work that will be done
        # again, under the same names.
        for temp in self.out.rglob(".*.tmp"):
            temp.unlink()

    def _watch_again(self, moved) -> None:
        """Watch again, after a restart, the files the checkpoint says were moved to done/ less
        than DONE_WATCH_S ago ("moved_lately": [done name, spool name, bytes processed, wall
        time]); entries of another shape (a hand-edited header) are left out. What a probe
        appended to them meanwhile is cut off on the next pass (_check_done_tails)."""
        now_wall, now = time.time(), time.monotonic()
        for entry in moved or []:
            if not (isinstance(entry, list) and len(entry) == 4):
                continue
            target, name, size, when = entry
            if not (isinstance(target, str) and _plain_name(target) and isinstance(name, str) and _plain_name(name)
                    and isinstance(size, int) and not isinstance(size, bool) and size >= 0
                    and isinstance(when, (int, float)) and not isinstance(when, bool) and math.isfinite(when)):
                continue
            age = now_wall - when
            if not 0 <= age <= DONE_WATCH_S:
                continue
            if not os.access(self.spool / "done" / target, os.W_OK, follow_symlinks=False):
                # one that cannot be cut is not watched (_move_done): its tail, copied out
                # once, would be copied and reported again (helper-121)
                continue
            self._moved_lately.append([target, name, size, when])
            with self._counts_lock:
                if target not in self._done_watch:
                    self._done_watch[target] = (name, size, now - age, 0)
                    if len(self._done_watch) > DONE_WATCH_FILES:
                        del self._done_watch[next(iter(self._done_watch))]

    def _journal_moves(self, entries: list[list]) -> None:
        """Append `entries` ([checkpoint number, spool name, done/ name, identity]) to
        STATE/moves and fsync it: on disk before the checkpoint that moves the files is."""
        path = self.state / MOVES_JOURNAL
        try:
            created = not os.path.lexists(path)
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            try:
                size = os.fstat(fd).st_size
                # a line a crash tore is ended first: the next one must not be glued to it
                torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
                view = memoryview((b"\n" if torn else b"") + b"".join(map(_journal_line, entries)))
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                fsync_path(self.state)
        except OSError as e:
            raise _naming(e, path) from None

    def _read_moves(self) -> list[tuple[int, str, str, Optional[list]]]:
        """STATE/moves' entries (_journal_moves); a line that fails its crc or its shape (a
        crash's torn tail, damage) is left out. [] without a journal."""
        try:
            data = (self.state / MOVES_JOURNAL).read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:
            said = f"{self.state / MOVES_JOURNAL}: cannot be read ({e.strerror or e})"
            if self._moves_unreadable != said:      # once, not at every read (helper-119)
                self._moves_unreadable = said
                log.error(f"{said}: a fallback past unreadable checkpoints at the end of the log may miss the "
                          "files they moved")
            return []
        entries = []
        for line in data.split(b"\n"):
            crc, _, text = line.partition(b" ")
            try:
                if len(crc) != 8 or int(crc, 16) != zlib.crc32(text):
                    continue
                entry = _move_entry(json.loads(text))
            except ValueError:
                continue
            if entry is not None:
                entries.append(entry)
        return entries

    def _previous_base_number(self) -> Optional[int]:
        """The checkpoint number of the previous generation's base (the oldest checkpoint a
        fallback can reach), None when there is none or it does not say."""
        from engine.service.checkpoint import read_header
        store = self.store.stores[0] if self.workers > 1 else self.store
        if store.previous is None:
            return None
        try:
            number = (read_header(store.base_path(store.previous)).get("extra") or {}).get("checkpoint_number")
        except CheckpointError:
            return None
        return number if isinstance(number, int) and not isinstance(number, bool) else None

    def _prune_moves(self, keep: Callable[[int], bool]) -> None:
        """Keep only the journal's entries whose checkpoint number `keep` accepts (rewritten
        under a temporary name, fsync'ed, then renamed)."""
        path = self.state / MOVES_JOURNAL
        if not path.exists():
            return
        entries = self._read_moves()
        kept = [list(entry) for entry in entries if keep(entry[0])]
        if len(kept) == len(entries) and kept:
            return      # nothing to drop (a journal with no good line at all is rewritten empty)
        temp = self.state / f".{MOVES_JOURNAL}.tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            try:
                view = memoryview(b"".join(map(_journal_line, kept)))
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, path)
            fsync_path(self.state)
        except OSError as e:
            raise _naming(e, path) from None

    def _done_name(self, name: str, taken: Iterable[str] = ()) -> str:
        """The name a processed spool file gets in done/: its own, or NAME.1, NAME.2 ... when
        done/ holds that name already (a second spool file of the same name, a probe's name
        reused): the first one's archive is never overwritten. `taken`: names given to
        other files of the same checkpoint."""
        taken = set(taken)
        target, number = name, 0
        while target in taken or os.path.lexists(self.spool / "done" / target):
            number += 1
            target = f"{name}.{number}"
        return target

    def _move_done(self, name: str, size: Optional[int], target: Optional[str] = None,
                   ident: Optional[tuple[int, ...]] = None, broken: Optional[str] = None) -> None:
        """A processed spool file goes to done/ (as `target`, recorded in the checkpoint when
        it is not the file's own name, else chosen now), holding the `size` bytes that were
        processed: what was appended after it was read is cut off into rejected/ (_cut_tail),
        and so is, for a file whose stream broke inside it (`broken`: what broke it), the rest
        after the break.
        `ident` (_identity): the file that was read; another file now under its name
        (renamed over it) stays in the spool, to be read as a new file. Runs again after a
        crash (roll forward): each step can be repeated."""
        source = self.spool / name
        if not os.path.lexists(source):
            return
        if ident is not None and not self._still_there(source, ident):
            # the file read is gone (a rename over it unlinked it, or it was written over in
            # place); what is there now is unread. The check and the move below are not one
            # step: a rename in the microseconds between them is not seen.
            self._count("changed")
            log.warning(f"{self._shown(name)}: replaced by another file of the same name after it was processed "
                        "(renamed or written over it: give every file a new name); the new one stays in the spool "
                        "and is read as a new file")
            return
        done = _own_subdirectory(self.spool, "done")
        cut = self._cut_tail(name, size, broken=broken) if size is not None else None
        if target is None:
            target = self._done_name(name)
        if target != name:
            log.warning(f"{name}: done/ holds a processed file of this name already (the name was used again); "
                        f"this one moved to done/{target}, the first kept")
        os.replace(source, done / target)
        if size is not None and cut is not None:
            # watched only when the file holds the bytes processed alone: one that could not be
            # cut would be copied out again, as a tail
            with self._counts_lock:
                self._done_watch[target] = (name, size, time.monotonic(), cut)
                if len(self._done_watch) > DONE_WATCH_FILES:
                    del self._done_watch[next(iter(self._done_watch))]     # the oldest

    @staticmethod
    def _still_there(path: Path, ident: tuple) -> bool:
        """Whether `path` is still the spool file `ident` names (_same_file); a link or a
        file that cannot be opened is not (it is then read, and rejected, as a new one)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return True             # gone: nothing to move, and nothing unread left behind
        except OSError:
            return False
        try:
            info = os.fstat(fd)
            return stat.S_ISREG(info.st_mode) and _same_file(fd, info, ident)
        except OSError:
            return False
        finally:
            os.close(fd)

    def _check_done_tails(self) -> None:
        """A probe writing in place can append after its file settled, was processed and moved
        to done/: its open descriptor writes on into done/NAME. The files moved lately are
        looked at on each pass (not while a checkpoint is being completed: it cuts tails too),
        and what grew beyond the bytes processed goes the way of any late tail (_cut_tail)."""
        if self._writer is not None:
            return
        now = time.monotonic()
        with self._counts_lock:
            for gone in [k for k, (_, _, moved, _) in self._done_watch.items() if now - moved > DONE_WATCH_S]:
                del self._done_watch[gone]
            watched = list(self._done_watch.items())
        for target, (name, size, moved, cut) in watched:
            try:
                grown = os.lstat(self.spool / "done" / target).st_size > size
            except FileNotFoundError:
                grown = None
            if grown is None:
                with self._counts_lock:
                    self._done_watch.pop(target, None)     # pruned, or taken back by hand
            elif grown:
                cut = self._cut_tail(name, size, self.spool / "done" / target, cut)
                with self._counts_lock:
                    if cut is None:
                        self._done_watch.pop(target, None)     # not ours to cut (logged), or gone
                    elif target in self._done_watch:
                        self._done_watch[target] = (name, size, moved, cut)

    def _cut_tail(self, name: str, size: int, path: Optional[Path] = None, cut: int = 0,
                  broken: Optional[str] = None) -> Optional[int]:
        """Bytes appended to a spool file after it was read to its end (`size`) cannot be put
        back in stream order, later files having been processed: they are copied to
        rejected/NAME.tail-OFFSET, named by the offset they start at, and cut off the file: in
        the spool, or at `path` in done/ when they came after it moved there. Never silently
        dropped. Returns the bytes past `size` cut so far, `cut` included; None when the file
        is gone or could not be cut (no write permission: the bytes are copied all the same,
        and the .reason says that the file still holds them).

        `cut`: the bytes past `size` cut before. A writer still at work writes on at its own
        offset, so after a cut the file grows again with a hole where the cut bytes were;
        the next tail starts after them (NAME.tail-OFFSET of its real offset), not with
        zeros over bytes already set aside. Should that part hold anything but zeros (the
        writer went back), the tail starts at `size` as the first one did.

        `broken`: the file's stream broke at byte `size` (what broke it): the rest was never
        processed, and goes to rejected/NAME.rest-OFFSET instead, so that done/NAME holds
        the bytes processed and a replay of done/ reads what the service read."""
        path = path or self.spool / name
        after = f" and moved to done/{path.name}" if path.parent.name == "done" else ""
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            writable = True
        except PermissionError:
            # not ours to cut (another owner's file, mode 0644): the tail is still copied out
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            writable = False
        except FileNotFoundError:
            return None
        with open(fd, "rb", buffering=0) as f:
            now = os.fstat(fd).st_size
            if now == size:
                return cut
            if now < size:
                log.warning(f"{name}: shrank to {now:,} bytes after {size:,} were processed; moved to done/ as it is")
                self._count("changed")
                return cut
            if not cut:
                # set aside before a restart, which forgot the count (_watch_again)
                cut = self._cut_before(name, size)
            start = size + cut if cut and now > size + cut and self._zeros(f, size, cut) else size
            rejected = _own_subdirectory(self.spool, "rejected")
            kind = "rest" if broken else "tail"
            tail = rejected / f"{name}.{kind}-{start}"
            number = 0
            copied = None
            while os.path.lexists(tail):
                if self._holds(f, start, now - start, tail):
                    # copied before a crash that came before the cut: cut now, not copied twice
                    copied = now - start
                    break
                number += 1
                tail = rejected / f"{name}.{kind}-{start}.{number}"
            if copied is None:
                copied = self._copy_out(fd, f, start, rejected / f".{tail.name}.tmp", tail)
            if broken:
                note = (f"{_now()} bytes {start:,} to {start + copied:,} of {name}, after its event stream broke at "
                        f"byte {size:,}: {broken}; not processed (the stream went on with the next file)\n")
            else:
                note = (f"{_now()} bytes {start:,} to {start + copied:,} of {name}, appended after it was "
                        f"processed{after} (from byte {size:,} on); the file had been read to its end, and the "
                        "stream goes on past it\n")
            if not writable:
                note += f"{name} could not be cut (no write permission): done/{path.name} still holds them\n"
            # the reason before the cut: a crash between them leaves a file cut at an event's
            # end, which nothing would look at again, and a copy that said nothing of why
            _write_private(rejected / f"{tail.name}.reason", note.encode())
            if writable:
                os.ftruncate(fd, size)
                os.fsync(fd)
        if broken:
            log.warning(f"{self._shown(name)}: the {copied:,} bytes after its event stream broke were not processed: "
                        f"moved to {self._shown_dir(rejected)}{tail.name} (they start at byte {start:,} of the file)")
        else:
            self._count("changed")
            self._count("tails")
            log.warning(f"{name}: {copied:,} bytes appended after it was processed{after} cannot be put back in "
                        f"stream order: moved to rejected/{tail.name} (they start at byte {start:,} of the file)")
        return start - size + copied if writable else None

    def _copy_out(self, fd: int, f, start: int, temp: Path, tail: Path) -> int:
        """The bytes of the open file `f` (descriptor `fd`) from `start` to its end, copied to
        `tail` through `temp` (fsynced, FILE_MODE): how many."""
        out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        copied = 0
        try:
            os.fchmod(out, FILE_MODE)
            f.seek(start)
            while True:
                n = f.readinto(self._tail_buffer)
                if not n:
                    # a writer still at work: what came meanwhile is copied too (what
                    # comes between this look and the cut cannot be guarded)
                    if os.fstat(fd).st_size > start + copied:
                        continue
                    break
                view = self._tail_buffer[:n]
                while view:
                    view = view[os.write(out, view):]
                copied += n
            os.fsync(out)
        except OSError as e:
            raise _naming(e, temp) from None
        finally:
            os.close(out)
        os.replace(temp, tail)
        return copied

    def _holds(self, f, start: int, n: int, path: Path) -> bool:
        """Whether the file at `path` holds exactly the `n` bytes of `f` from `start`."""
        try:
            with open(path, "rb", buffering=0) as other:
                if os.fstat(other.fileno()).st_size != n:
                    return False
                f.seek(start)
                half = len(self._tail_buffer) // 2
                mine, theirs = self._tail_buffer[:half], self._tail_buffer[half:]
                while n > 0:
                    got = f.readinto(mine[:min(n, half)])
                    if not got or other.readinto(theirs[:got]) != got or mine[:got] != theirs[:got]:
                        return False
                    n -= got
                return True
        except OSError:
            return False

    def _cut_before(self, name: str, size: int) -> int:
        """The bytes past `size` of the spool file `name` that rejected/ holds already as its
        tails and rests (NAME.tail-OFFSET, NAME.rest-OFFSET, NAME.KIND-OFFSET.N) in a chain
        from `size` on: 0 when none. Only a hole of zeros that long is skipped (_cut_tail): a
        tail never starts with a zero byte, which is no event's first."""
        copies: dict[int, int] = {}         # offset -> the longest copy there
        try:
            entries = os.scandir(self.spool / "rejected")
        except OSError:
            return 0
        with entries:
            for entry in entries:
                for kind in (".tail-", ".rest-"):
                    if not entry.name.startswith(name + kind):
                        continue
                    offset = entry.name[len(name) + len(kind):].split(".", 1)
                    if not (offset[0].isascii() and offset[0].isdigit()) or (
                            len(offset) > 1 and not (offset[1].isascii() and offset[1].isdigit())):
                        continue
                    try:
                        length = entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
                    if int(offset[0]) >= size:
                        copies[int(offset[0])] = max(copies.get(int(offset[0]), 0), length)
        # the chain from `size` on, each copy starting where the one before ended: a copy
        # further on (an earlier file's of the same name) is no part of this hole
        end = size
        while copies.get(end):
            end += copies.pop(end)
        return end - size

    def _zeros(self, f, at: int, n: int) -> bool:
        """Whether the `n` bytes of `f` from `at` are all zeros (a hole where a tail was cut)."""
        f.seek(at)
        while n > 0:
            got = f.readinto(self._tail_buffer[:min(n, len(self._tail_buffer))])
            if not got:
                return False
            if self._tail_buffer[:got].tobytes().lstrip(b"\0"):
                return False
            n -= got
        return True

    def _count(self, what: str, n: int = 1) -> None:
        with self._counts_lock:
            self.spool_counts[what] += n

    # -- the loop

    def _pending_files(self) -> tuple[list[Path], bool]:
        """The spool files to read next, in stream order, and whether the one after them is
        still settling (then nothing behind it is taken either: the order is the names')."""
        waiting = set(self.uncommitted) | set(self.covered) | self.in_flight
        # names only: what each entry is, is decided on the opened file (_open_spool_file)
        names, others = [], set()
        with os.scandir(self.spool) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue            # a probe's file being written, the spool lock
                if entry.name.endswith(".msgpack") and len(os.fsencode(entry.name)) > MAX_SPOOL_NAME_BYTES:
                    others.add(entry.name)      # done/NAME.1, rejected/NAME.reason would not fit
                elif entry.name.endswith(".msgpack"):
                    names.append(entry.name)
                elif not entry.is_dir(follow_symlinks=False):
                    others.add(entry.name)
        self._say_ignored(others)
        present = set(names)
        self._unmovable &= present
        for gone in set(self._settling) - present:
            del self._settling[gone]
        names = sorted(name for name in names if name not in waiting and name not in self._unmovable)
        # a file checkpointed part-way goes on first, where it stopped
        names.sort(key=lambda name: name not in self.resume)
        ready = []
        for name in names:
            if not self._settled(name):
                return ready, True
            ready.append(self.spool / name)
        return ready, False

    def _say_ignored(self, names: set[str]) -> None:
        """Files in the spool that it never reads (not named *.msgpack: a *.gz a probe left,
        a CSV): a warning once per file while it stays, not at every poll; only once it has
        not changed for IGNORED_AFTER_S, so that a probe's file still being written under
        another name (to be renamed when complete) is not warned of."""
        self._ignored &= names
        now = time.time()
        for name in sorted(names - self._ignored):
            try:
                if now - os.lstat(self.spool / name).st_mtime < IGNORED_AFTER_S:
                    continue
            except FileNotFoundError:
                continue
            self._ignored.add(name)
            if name.endswith(".msgpack"):
                log.warning(f"{self._shown(name)}: ignored, left in the spool: its name is longer than "
                            f"{MAX_SPOOL_NAME_BYTES} bytes (the names it gets in done/ and rejected/ would not fit "
                            "the file system's 255); rename it shorter to have it read")
                continue
            compressed = name.rsplit(".", 1)[-1].lower() in _COMPRESSED_SUFFIXES
            log.warning(f"{name}: ignored, left in the spool: the spool reads only uncompressed files named *.msgpack"
                        + ("; decompress it into one to have it read" if compressed else ""))

    def _settled(self, name: str) -> bool:
        """Whether a spool file's size and mtime have been still for settle_s: by its mtime
        (a file renamed in finished is usually older than that already) or, when its mtime
        is recent or ahead of this clock, by watching it that long."""
        if self.settle_s <= 0 or name in self.resume or self._journaled_here(name):
            return True
        try:
            info = os.lstat(self.spool / name)
        except FileNotFoundError:
            return True                     # reported when it is opened
        if not stat.S_ISREG(info.st_mode):
            return True                     # rejected when it is opened, never read
        if time.time() - info.st_mtime >= self.settle_s:
            self._settling.pop(name, None)
            return True
        look = (info.st_size, info.st_mtime_ns)
        seen = self._settling.get(name)
        if seen is None or seen[0] != look:
            self._settling[name] = (look, time.monotonic())
            return False
        if time.monotonic() - seen[1] >= self.settle_s:
            del self._settling[name]
            return True
        return False

    def _journaled_here(self, name: str) -> bool:
        """A journal file this service wrote (whole, fsynced, renamed): no need to settle."""
        if self.stdin is None and self.listen is None:
            return False
        return name.startswith(self.journal_prefix) if self.journal_prefix else True

    def _open_spool_file(self, path: Path):
        """The spool file opened for reading, or None when it vanished or was rejected. Links
        are not followed, and only a regular file of an allowed owner is read: whoever can
        write the spool must not make the service read what it alone may (the lookup token,
        /etc/shadow) into output files."""
        name = path.name
        try:
            # O_NONBLOCK: a FIFO put there must not block the open; it is rejected below
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            log.warning(f"{name}: vanished before it was read (removed or renamed by another process); skipped")
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                self._reject(name, "a symbolic link: spool files are never followed")
            else:
                self._reject(name, f"cannot be opened: {e.strerror or e}")
            return None
        try:
            info = os.fstat(fd)
        except OSError as e:
            os.close(fd)
            self._reject(name, f"cannot be examined: {e.strerror or e}")
            return None
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            self._reject(name, f"{_kind(info.st_mode)}, not a regular file")
            return None
        if info.st_uid not in self.spool_owners:
            os.close(fd)
            self._reject(name, f"owned by {_user(info.st_uid)}, not an allowed spool owner "
                               f"({', '.join(_user(uid) for uid in sorted(self.spool_owners))}; --spool-owner)")
            return None
        return open(fd, "rb", buffering=0)

    def _reject(self, name: str, reason: str, *, examined: bool = False) -> None:
        """Move a spool file aside, unread (`examined`: read, but nothing of it processed), to
        rejected/ with NAME.reason beside it (one line: when and why); logged once. A file
        that cannot be moved is ignored while it stays."""
        unread = "examined, not processed" if examined else "never read"
        self.fed_ids.pop(name, None)
        try:
            rejected = _own_subdirectory(self.spool, "rejected")
            target = name
            number = 0
            while os.path.lexists(rejected / target) or os.path.lexists(rejected / f"{target}.reason"):
                number += 1
                target = f"{name}.{number}"
            os.replace(self.spool / name, rejected / target)
        except FileNotFoundError:
            log.warning(f"{name}: rejected, {unread}: {reason}; it vanished before it was moved to rejected/")
            return
        except OSError as e:
            self._unmovable.add(name)
            self._count("rejected")
            log.error(f"{self._shown(name)}: rejected, {unread}: {reason}; it cannot be moved to rejected/ "
                      f"({e.strerror or e}) and is ignored while it stays")
            return
        self._count("rejected")
        try:
            _write_private(rejected / f"{target}.reason", f"{_now()} {reason}\n".encode())
        except OSError as e:
            log.warning(f"rejected/{target}.reason: cannot be written: {e.strerror or e}")
        line = f"{self._shown(name)}: rejected, {unread}, moved to {self._shown_dir(rejected)}{target}: {reason}"
        if self._stdin_only:
            # said once, as the service's error, when standard input is processed (run)
            self.stdin_rejected.append(line)
        else:
            log.error(line)

    @property
    def _stdin_only(self) -> bool:
        """Standard input is the one source: the service ends with it."""
        return self.stdin is not None and self.listen is None and not self.journal_prefix

    def _shown(self, name: str) -> str:
        """A spool file as messages name it: a journal file of standard input, the one source,
        is what came from standard input (its name alone points at nothing the user gave)."""
        return f"standard input (journal file {name})" if self._stdin_only else name

    def _shown_dir(self, directory: Path) -> str:
        """rejected/ as messages name it: in full where the spool is the service's own journal."""
        return f"{directory}/" if self._stdin_only else f"{directory.name}/"

    def _take_records(self, flush: bool = False) -> None:
        """Take the core's records; they go to the sinks in batches of SINK_BATCH (formatting
        has a cost per call, and file boundaries are decided per record, so batching changes
        no file), and all of them with `flush` (before a checkpoint seals the files)."""
        core = self.engine._core
        self.engine.collect_explanations()      # into each watched subscriber's ring
        for name, take in (("actions", core.take_actions), ("conversions", core.take_conversions),
                           ("dead_letters", core.take_dead_letters)):
            records = take()
            waiting = self._unwritten[name]
            if len(records):
                waiting.append(records)
                if name == "dead_letters" and self._cut_events:
                    self._say_cut_events_gone_bad(records)
            if waiting and (flush or sum(map(len, waiting)) >= SINK_BATCH):
                try:
                    getattr(self.sinks, "write_" + name)(np.concatenate(waiting) if len(waiting) > 1 else waiting[0])
                except OSError as e:
                    raise _naming(e, self.out) from None
                waiting.clear()

    def _say_cut_events_gone_bad(self, records: np.ndarray) -> None:
        """A warning for each event begun at the end of a spool file (_cut_events) that ended
        as a bad value: the file was likely cut short, or not this stream's."""
        for offset, reason in zip(records["offset"].tolist(), records["reason"].tolist()):
            cut = self._cut_events.pop(offset, None)
            if cut is not None:
                why = BAD_REASONS[reason] if reason < len(BAD_REASONS) else f"reason {reason}"
                log.warning(f"{cut[0]}: the event its last {plural(cut[1], 'byte')} began (stream offset {offset:,}) "
                            f"ended in the next file as a bad value ({why}, a dead letter): was that file cut short, "
                            "or not of this stream?")

    def _commit(self, position: Optional[tuple[str, int]] = None, *, wait: bool = False) -> None:
        """Seal, checkpoint, rename, move: the exactly-once step (see the module docstring)
        for the input processed since the last one; `position` is the spool file being read
        and the offset reached in it. The checkpoint is taken now and written on a second
        thread (with `wait`, or when too big to copy, before returning); the renames and
        moves follow it there. The previous one is waited for first: they stay in order."""
        self._wait_for_writer()
        if position is None and self.resume:
            # a file read part-way before a restart and not taken up again yet (a reload or a
            # quiet-spool checkpoint came first): its offset still stands, or after a crash
            # the file would be read again from its start
            position = next(iter(self.resume.items()))
        covered, self.uncommitted = self.uncommitted, []
        moving, self.covered = self.covered, covered
        self._take_records(flush=True)
        try:
            renames = [[str(t), str(f)] for t, f in self.sinks.seal()]
        except OSError as e:
            raise _naming(e, self.out) from None
        # the bytes read of each file: what is found beyond them when it moves is a late tail
        sizes = {name: self.fed_sizes[name] for name in covered + moving if name in self.fed_sizes}
        broken = {name: self.broken[name] for name in covered + moving if name in self.broken}
        # a name done/ holds already: the new file's name there, decided now so that the
        # fallback (_forget_lost_work) and --keep-done find the file this checkpoint moved
        done_names: dict[str, str] = {}
        for name in moving:
            target = self._done_name(name, done_names.values())
            if target != name:
                done_names[name] = target
        ids = {name: self.fed_ids[name] for name in covered + moving if name in self.fed_ids}
        if position:
            reading = self.fed_ids.get(position[0]) if position[0] not in self.resume else \
                self.resume_ids.get(position[0])
            if reading is not None:
                ids[position[0]] = reading
        self.checkpoint_number += 1
        number = self.checkpoint_number
        # what this checkpoint will move: in the journal before it is written, and in the
        # "recent" of the ones after it
        journal = [[number, name, done_names.get(name, name), list(ids[name]) if name in ids else None]
                   for name in moving]
        recent = [entry for moves in self.recent_moves for entry in moves]
        self.recent_moves.append(journal)
        while len(self.recent_moves) > RECENT_CHECKPOINTS - 1 or \
                sum(len(moves) for moves in self.recent_moves) > RECENT_MOVES_MAX:
            self.recent_moves.popleft()
            if not self.recent_moves:
                break
        moved_at = time.time()
        while self._moved_lately and moved_at - self._moved_lately[0][3] > DONE_WATCH_S:
            self._moved_lately.popleft()
        self._moved_lately.extend([done_names.get(name, name), name, sizes[name], moved_at]
                                  for name in moving if name in sizes)
        extra = {"renames": renames, "covered": covered, "moving": moving, "sizes": sizes, "broken": broken,
                 "done_names": done_names, "moved_lately": list(self._moved_lately),
                 "checkpoint_number": number, "recent": recent,
                 "position": list(position) if position else None, "numbering": self.sinks.numbering(),
                 "ids": {name: list(ident) for name, ident in ids.items()}, "out_id": self.out_id,
                 # an edit that keeps the campaigns' ids restores the state as it was: the log
                 # still says that the configuration changed while stopped (_restore)
                 "config_sha256": self.engine.configuration.get("sha256"),
                 "config_meaning": self.engine.config.meaning_sha256, "inputs": self._inputs}
        started = time.perf_counter()
        prepared = self.store.prepare(self.engine.shards if self.workers > 1 else self.engine, extra,
                                      copy_limit=DETACHED_BASE_BYTES)

        def complete():
            outcome = None
            try:
                _make_durable([temp for temp, _ in renames])
                if journal:
                    self._journal_moves(journal)
                written = prepared.write()
                if written.get("kind") == "base":
                    # a fallback goes back at most to the previous generation's base
                    oldest = self._previous_base_number()
                    if oldest is not None:
                        self._prune_moves(lambda n: n >= oldest)
                SinkSet.commit(renames)
                for name in moving:
                    self._move_done(name, sizes.get(name), done_names.get(name, name), ids.get(name),
                                    broken.get(name))
            except BaseException as e:      # reported on the main thread
                outcome = e
            self._writer_outcome = (time.perf_counter() - started, outcome)

        self.last_commit = time.monotonic()
        try:
            self.sinks.write_stats(self._stats())
        except OSError as e:
            raise _naming(e, self.out / "stats.json") from None
        self.in_flight = set(moving)
        if prepared.detached and not wait:
            self._writer = threading.Thread(target=complete, name="checkpoint")
            self._writer.start()
        else:
            complete()
            self._wait_for_writer()

    def _wait_for_writer(self) -> None:
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self._writer_outcome is None:
            return
        (seconds, error), self._writer_outcome = self._writer_outcome, None
        for name in self.in_flight:
            self.fed_sizes.pop(name, None)      # moved (or to be moved again, from the checkpoint's sizes)
            self.broken.pop(name, None)
            self.fed_ids.pop(name, None)
        self.in_flight = set()
        if error is not None:
            raise error
        if self.metrics is not None:
            self.metrics.observe(self.engine, checkpoint_seconds=seconds)

    def _stats(self) -> dict:
        stats = self.engine.stats
        counts = self.engine._core.counts()
        last_seq = self.engine._core.seq
        return {
            "configuration": self.engine.configuration,
            "run": {"events": counts["events"], "bad_events": counts["bad_events"],
                    "bad_events_by_field": counts.get("bad_events_by_field", {}),
                    "bad_bytes": counts["bad_bytes"],
                    # the largest since the service's stream began, with its spool file when
                    # this process read it (offsets count the spool files' bytes in order)
                    "largest_bad_value": largest_bad_value(counts["largest_bad_value"], list(self._stream_files)),
                    "unknown_subscribers": counts["unknown_subscribers"], "late_events": counts["late_events"],
                    "pending": self.engine.pending,
                    # a service numbers its actions from 1 over its whole life, across restarts
                    "first_seq": 1 if last_seq else None, "last_seq": last_seq or None},
            "campaigns": stats["campaigns"],
        }

    def _preflight(self) -> None:
        """What an operator got wrong is said before anything is created, naming the option: a
        spool directory that does not exist, a configuration that does not load, output of
        an earlier run that this state does not cover, an address in use (by another process,
        or by another of this service's own options)."""
        from engine.language.compile import require_inputs
        from engine.language.config import load_config, read_once
        if os.path.isdir(self.out / SERVICE_ID_FILE) and not os.path.islink(self.out / SERVICE_ID_FILE):
            raise SigmatchError(f"--out {self.out}: {SERVICE_ID_FILE} is a directory, where the service keeps its "
                                "id: remove it")
        if self.journal_prefix and not self.spool.is_dir():
            raise SigmatchError(f"--spool {self.spool}: no such directory")
        self._check_directories()
        if read_once(self.config_path):
            raise SigmatchError(f"{self.config_path}: the service needs CONFIG as a file, which it reads again at "
                                "every start and reload (this is a pipe or a device)")
        # the configuration, and that the files it names are there (they are loaded later,
        # once the folders are made and locked: a missing list made them for nothing)
        config = load_config(self.config_path)
        require_inputs(config)
        unwritable = unwritable_output_directory(self.out, config.campaigns)
        if unwritable:
            # otherwise the first sealed file fails, once events were taken (replay refuses it too)
            raise SigmatchError(f"--out {self.out}: {unwritable}")
        if self.watch_path is not None and not self.watch_path.is_file():
            raise SigmatchError(f"--watch {self.watch_path}: "
                                + ("not a file" if self.watch_path.exists() else "no such file"))
        if self.watch_path is not None:
            # read before the folders are made: a list that did not load left --out and --state
            # behind, made for nothing (helper-128); in the configuration's encoding, as its
            # lists are, which the error's hint ([engine] encoding) says
            from loaders.lists import load_list
            from loaders.tabular import TextFormat
            fmt = TextFormat(encoding=config.encoding, null_values=config.null_values)
            self._watch_numbers = [int(m) for m in load_list(self.watch_path, fmt)]
        self._check_layout()
        self._refuse_earlier_output()
        self._probe_addresses()

    def _say_what_changed_while_stopped(self, extra: dict) -> None:
        """A restart whose configuration, profiles, lists and areas keep the checkpoint's
        campaigns, counters and subscribers restores the state as it was, and the edits
        apply from the next event on (the eligibility is compiled from the files as they are
        now): the log says which of them changed. An edit of comments or layout alone is
        said as such."""
        config = self.engine.config
        raw, meaning = extra.get("config_sha256"), extra.get("config_meaning")
        if isinstance(meaning, str) and config.meaning_sha256:
            edited = meaning != config.meaning_sha256
        else:       # a checkpoint of a sigmatch before config_meaning: the bytes
            edited = bool(raw and config.sha256 and raw != config.sha256)
        if edited:
            log.warning(f"the configuration changed while stopped ({self.config_path}: the same campaign ids, "
                        "counters and subscribers): state restored as it was, the edited campaigns apply from the "
                        "next event on, as after a reload")
        elif raw and config.sha256 and raw != config.sha256:
            lifecycle.info(f"{self.config_path} was edited while stopped (comments or layout only: the same "
                           "configuration)")
        changed = self._inputs_changed(extra)
        if changed:
            log.warning(f"the profiles, lists or areas changed while stopped ({changed}): state restored as it "
                        "was, the files as they are now apply from the next event on, as after a reload")

    def _inputs_changed(self, extra: dict) -> str:
        """The profile, list and area files read now whose size or modification time differs
        from the checkpoint's record of them (or that it did not read), as the configuration
        names them: "lists/dnd.roar, areas/cbd.txt and 2 more"; "" when none did, or when the
        checkpoint recorded none (a sigmatch before it did)."""
        theirs = extra.get("inputs")
        if not isinstance(theirs, dict):
            return ""
        changed = sorted(path for path, stamp in self._inputs.items() if theirs.get(path) != stamp)
        shown = [_relative_to(path, self.config_path.parent) for path in changed]
        return ", ".join(shown[:3]) + (f" and {len(shown) - 3:,} more" if len(shown) > 3 else "")

    def _check_directories(self) -> None:
        """The state directory is the service's own: not --out, not --spool. Nothing of the
        service's goes below --spool either: its done/ is pruned (--keep-done), and the
        files in it are the probes'. Nor is either of --state and --out inside the other."""
        from engine.sinks import dangling_on_the_way
        for option, path in (("--state", self.state), ("--out", self.out)):
            if dangling := dangling_on_the_way(path):
                raise SigmatchError(f"{option} {dangling}" if dangling.startswith(f"{path} ")
                                    else f"{option} {path}: {dangling}")
        state, out = os.path.realpath(self.state), os.path.realpath(self.out)
        if state == out:
            raise SigmatchError(f"--state {self.state}: is --out too: give the checkpoints a directory of their own")
        # the checkpoints hold every subscriber's state and the events not yet processed: not
        # in the folder the gateway reads, nor the gateway's files among them
        if os.path.commonpath([state, out]) == out:
            raise SigmatchError(f"--state {self.state}: is inside --out {self.out} (which the gateway reads): give "
                                "the checkpoints a directory outside it")
        if os.path.commonpath([state, out]) == state:
            raise SigmatchError(f"--out {self.out}: is inside --state {self.state}: give the output a directory "
                                "outside the checkpoints'")
        self._refuse_other_services(state, out)
        if not self.journal_prefix:
            return
        spool = os.path.realpath(self.spool)
        if state == spool:
            raise SigmatchError(f"--state {self.state}: is --spool too: give the checkpoints a directory of their own")
        if out == spool:
            # the gateway's files among the probes': stats.json and every output file left
            # there, warned of as files the spool does not read
            raise SigmatchError(f"--out {self.out}: is --spool too: give the output a directory of its own")
        for option, path, real in (("--state", self.state, state), ("--out", self.out, out)):
            if os.path.commonpath([real, spool]) == spool:
                raise SigmatchError(f"{option} {path}: is inside --spool {self.spool} (whose files are the "
                                    "probes', and whose done/ is pruned): give a directory outside it")

    def _refuse_other_services(self, state: str, out: str) -> None:
        """Neither --out nor --state is another's (helper-122: `run` wrote its lock, service id
        and stats.json into another service's state or spool, and its checkpoints into a
        replay's output, which the gateway reads; replay refused the same --out): --out is not,
        nor is it inside, a service's spool or state; --state is no spool and no run's output."""
        from engine.service.checkpoint import holds_checkpoints
        for above in [Path(out), *Path(out).parents]:
            where = "is" if above == Path(out) else "is inside"
            named = "" if above == Path(out) else f" {above}"
            if os.path.lexists(above / SPOOL_LOCK):
                raise SigmatchError(f"--out {self.out}: {where} a service's --spool{named} ({SPOOL_LOCK}): give "
                                    "another --out")
            if holds_checkpoints(above):
                raise SigmatchError(f"--out {self.out}: {where} a service's --state{named} (it holds checkpoints): "
                                    "give another --out")
        if os.path.lexists(Path(state) / SPOOL_LOCK):
            raise SigmatchError(f"--state {self.state}: is a service's --spool ({SPOOL_LOCK}): give the checkpoints "
                                "a directory of their own")
        for mark in (OUT_LOCK, "stats.json"):
            if os.path.lexists(Path(state) / mark):
                raise SigmatchError(f"--state {self.state}: holds a run's output ({mark}), which a gateway may read: "
                                    "give the checkpoints a directory of their own")

    def _check_layout(self) -> None:
        """A state of another number of workers, or one a `sigmatch reshard` is rewriting or
        left half rewritten: one line (before its output is taken for another run's). Asked
        again once the state's lock is held: a reshard may have ended in between."""
        from engine.service.reshard import RESHARD_DIR, interrupted
        if (self.state / RESHARD_DIR).exists():
            # holding the lock ourselves, a reshard cannot be running
            raise CheckpointError(f"--state {self.state}: "
                                  f"{interrupted(self.state, ask_lock=self._lock_fd is None)}")
        layout = self.store.layout_error()
        if layout is not None:
            raise CheckpointError(layout)

    def _refuse_earlier_output(self) -> None:
        """A service without a checkpoint of its own numbers its actions from 1: into an --out
        that holds a run's output (a replay's, another service's) the gateway would send
        them twice. A service that goes on from its checkpoint continues the numbering."""
        if self.store.exists() or (self.state / "checkpoint").exists():
            return
        earlier = earlier_run_files(self.out)
        if (self.state / "lock").exists():
            # a service started on this state and was killed before its first checkpoint: its
            # stats.json and temporary files are its own, made again (finished files follow a
            # checkpoint, so any found are another run's)
            earlier = [p for p in earlier if p.name != "stats.json" and not p.name.endswith(".tmp")]
        if earlier:
            raise SigmatchError(
                f"--out {self.out}: already holds a run's output ({earlier[0].relative_to(self.out)} and "
                f"{len(earlier) - 1:,} more) and --state {self.state} holds no checkpoint of it: this service would "
                "number its actions from 1 again and the gateway would send them twice: give a new --out, or the "
                "--state of the service that wrote it")

    def _probe_addresses(self) -> None:
        """Bind (and listen on) each address the service will serve, all held at once, so that
        a port taken by another process, or given to two of this service's options, is
        named now; then release them for the servers."""
        probes: list[tuple[str, str, int, socket.socket]] = []
        try:
            for option, address in (("--listen", self.listen), ("--lookup", self.lookup),
                                    ("--metrics", self.metrics_address)):
                if address is None:
                    continue
                host, port = address[0], address[1]
                try:
                    probes.append((option, host, port, _listening_probe(host, port)))
                except OSError as e:
                    if e.errno != errno.EADDRINUSE:
                        raise SigmatchError(f"{option} {host}:{port}: {e.strerror or e}") from None
                    raise SigmatchError(f"{option} {host}:{port}: {self._clash(host, port, probes)}") from None
        finally:
            for *_, probe in probes:
                probe.close()

    @staticmethod
    def _clash(host: str, port: int, probes: list) -> str:
        """Why an address cannot be bound: one of this service's own options holds it, or another
        process does. Each earlier option is tried alone with it (the probes are released)."""
        for *_, probe in probes:
            probe.close()
        try:
            _listening_probe(host, port).close()
        except OSError:
            return "address in use"         # by another process
        for option, other_host, other_port, _ in probes:
            try:
                with _listening_probe(other_host, other_port):
                    try:
                        _listening_probe(host, port).close()
                    except OSError:
                        return f"address in use by {option} {other_host}:{other_port} (each needs its own port)"
            except OSError:
                continue
        return "address in use"

    def _lock_state(self) -> None:
        """One service per state directory: a second one would process the same spool files
        and rename over the first one's files. An flock on STATE/lock, held while the process
        lives (the kernel drops it with the process, even after kill -9); readers (a what-if
        from a checkpoint, the console) do not take it and are never blocked. A journal of
        stdin or TCP input alone lies under STATE: this lock covers it."""
        make_private_directories(self.state)
        self._lock_fd = hold_lock(open_state_lock(self.state), f"--state {self.state}: state directory")

    def _lock_spool(self) -> None:
        """One service per spool directory, whatever its state directory: two would both read
        each file (its actions sent twice) and race to move it to done/. An flock on
        SPOOL/.sigmatch.lock (a dot-name: never read as a spool file), as on the state. The
        spool is writable by whoever writes files into it: the lock file is opened without
        following a link and used only when it is a plain file of this service's user."""
        fd = open_lock_file(self.spool / SPOOL_LOCK, f"--spool {self.spool}", of_this_user=True)
        self._spool_lock_fd = hold_lock(fd, f"--spool {self.spool}: spool directory")

    def _lock_out(self) -> None:
        """One service per output directory, whatever its state and spool: two would number
        their files alike (one's sealed file renamed over the other's, seqs told twice) and
        overwrite each other's stats.json; `replay` refuses it too. An flock on OUT_LOCK, as
        on the spool. Where OUT's file system has no locks (NFS without lockd, some SMB or
        FUSE mounts: shares a gateway reads), a warning: the state's lock still holds."""
        try:
            self._out_lock_fd = lock_output(self.out, option=f"--out {self.out}")
        except OSError as e:      # errno in NO_LOCKS
            self._out_lock_fd = -1
            log.warning(f"--out {self.out}: its file system takes no locks ({e.strerror or e}): nothing stops a "
                        "second service from writing into it")

    def run(self) -> int:
        self._preflight()
        # The locks before anything is created: a state directory that exists is locked
        # first (a second service on it is named by it), then an --out that exists, then a
        # --spool of the probes (a journal alone, under STATE, is covered by the state's lock)
        if self.state.is_dir():
            self._lock_state()
        if self.out.is_dir():
            self._lock_out()
        if self.journal_prefix:
            self._lock_spool()
        if self._lock_fd is None:
            self._lock_state()
        self._check_layout()
        for directory in (self.out, self.state):
            make_private_directories(directory)
        if self._out_lock_fd is None:
            self._lock_out()
        journal_dir = None
        if self.stdin is not None or self.listen is not None:
            if self.journal_prefix and not self.spool.is_dir():
                raise FileNotFoundError(f"{self.spool}: no such spool directory")
            make_private_directories(self.spool)       # a journal of its own under STATE: 0750 like the rest
            journal_dir = JournalDirectory(self.spool, self.journal_prefix)
        if self.stdin is not None:
            self.journal = StdinJournal(journal_dir, self.stdin, only_source=self._stdin_only)
        if not self.spool.is_dir():
            raise FileNotFoundError(f"{self.spool}: no such spool directory")
        if self.spool_owners is None:
            # probes often write as another user than the service's: the spool's owner is theirs
            self.spool_owners = {os.stat(self.spool).st_uid}
        # this service's own user always: the journal files beside a spool are its own
        self.spool_owners.add(os.geteuid())
        extra = self._restore()
        if carried := self.engine._core.carried:
            # stopped at the end of a file inside an event: the next file, read after this
            # start, ends it (the names of files read are kept in memory only: helper-130)
            self._cut_events[self.engine._core.next_offset - carried] = ("the file read last before the restart",
                                                                          carried)
        if self.watch_path is not None:
            self._watch_file()
        self._roll_forward(extra)
        core = self.engine._core
        if not extra:
            core.begin_stream()
        output = self.engine.config.output
        # not durable here: the checkpoint thread fsyncs the sealed files (_make_durable)
        self.sinks = SinkSet(self.out, campaigns=self.engine.campaigns, format=self.format or output.format,
                             max_records=output.max_records, max_age_ms=output.max_age_ms,
                             durable=False, defer_renames=True, numbering=extra.get("numbering"))
        bound: list[str] = []
        tcp_at = None
        if self.metrics_address:
            from engine.service.metrics import DaemonMetrics
            self.metrics = DaemonMetrics(self.engine, checkpoint_at=self.store.written_at())
            host, port = self.metrics.serve(*self.metrics_address)
            self.servers.append(self.metrics)
            bound.append(f"metrics {_host_port(host, port)}")
        if self.listen is not None:
            listener = TcpJournal(journal_dir, self.listen, self.engine.config.event_types,
                                  max_event_bytes=self.engine.max_event_bytes, metrics=self.metrics).start()
            self.servers.append(listener)
            tcp_at = _host_port(*listener.address[:2])
        if self.lookup:
            from engine.service.lookup import LookupServer
            server = LookupServer(self._view, *self.lookup, token=self.lookup_token,
                                  metrics=self.metrics, explain=self._explain, watch=self._watch).start()
            self.servers.append(server)
            bound.append(f"lookup {_host_port(*server.address[:2])}")
        sources = ", ".join(
            part for part in (f"spool {self.spool}" if self.journal_prefix or (self.stdin is None and self.listen is None)
                              else None,
                              f"TCP {tcp_at}" if self.listen is not None else None,
                              "standard input" if self.stdin is not None else None) if part)
        # the addresses as bound: with port 0 the system chose the port, said here alone
        lifecycle.info("started: reading %s; output %s; state %s%s%s", sources, self.out, self.state,
                       f"; {self.workers} workers" if self.workers > 1 else "",
                       "".join(f"; {part}" for part in bound))
        from engine.workers import beyond_cores
        too_many = beyond_cores(self.workers)
        if too_many:
            log.warning("%s", too_many)
        sd_notify("READY=1")
        # systemd's watchdog (WatchdogSec=): ping at half the interval it gave us
        watchdog_s = int(os.environ.get("WATCHDOG_USEC", "0")) / 2e6
        last_ping = 0.0
        if self.journal is not None:
            # it cuts stdin at events' edges as the engine decodes them (its types, its bound)
            self.journal.event_types = dict(self.engine.config.event_types)
            self.journal.max_event_bytes = self.engine.max_event_bytes
            self.journal.start()
        last_input = time.monotonic()
        while not self.stop.is_set():
            if watchdog_s and time.monotonic() - last_ping >= watchdog_s:
                sd_notify("WATCHDOG=1")
                last_ping = time.monotonic()
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self._reload()
            self._observe_spool()
            self._check_done_tails()
            files, settling = self._pending_files()
            if (not files and self.journal is not None and self.journal.finished.is_set()
                    and self.listen is None and not self.journal_prefix):
                # standard input was the one source: the service's work is done
                files, settling = self._pending_files()     # the last journal file may have just landed
                if not files:
                    log.info("standard input ended and is processed")
                    break
            if not files:
                committed = bool(self.uncommitted or self.covered)
                if committed:
                    # a quiet spool: what is processed becomes durable, and the spool files
                    # move to done/ (after a second, nearly empty checkpoint)
                    with self.lock:
                        self._commit()
                        if self.covered:
                            self._commit()
                        self._wait_for_writer()
                if self._prune_done(at_once=committed):
                    # due files held for the fallback: a new base now releases them
                    with self.lock:
                        self._commit()
                        self._wait_for_writer()
                    self._prune_done(at_once=True)
                if settling:
                    last_input = time.monotonic()       # input is there, only not finished yet
                if self.idle_advance_s and time.monotonic() - last_input >= self.idle_advance_s:
                    self._advance_to_wall_clock()
                    last_input = time.monotonic()
                self.stop.wait(self.poll_s)
                continue
            last_input = time.monotonic()
            for path in files:
                if self.stop.is_set():
                    break
                self._process_file(path)
                self._prune_done()
        sd_notify("STOPPING=1")
        with self.lock:
            self._commit(self._position, wait=True)
            if self.covered:
                # a second, nearly empty one moves the spool files the first covers
                self._commit(self._position, wait=True)
        for server in self.servers:
            server.close()
        if self.workers > 1:
            self.engine.close()     # the workers' threads
        lifecycle.info(f"stopped: checkpoint written, {plural(self.engine.pending, 'pending action')} kept")
        if self.journal is not None and (self.journal.error or self.journal.cut):
            raise SigmatchError(self.journal.error or self.journal.cut)
        if self.stdin_rejected:
            # what standard input sent was not processed: not a success (the first, and how many)
            others = len(self.stdin_rejected) - 1
            raise SigmatchError(self.stdin_rejected[0] + (f" ({plural(others, 'more journal file')} likewise)"
                                                          if others else ""))
        return 0

    def _process_file(self, path: Path) -> None:
        """Feed one spool file in pieces, checkpointing inside it when it takes long; stops
        part-way (its position kept for the final checkpoint) when asked to stop. The file
        is read to its end, however far it grew meanwhile: that is still stream order."""
        name = path.name
        within_s = self.checkpoint_every_s or CHECKPOINT_WITHIN_FILE_S
        offset = start = self.resume.pop(name, 0)
        was = self.resume_ids.pop(name, None)
        f = self._open_spool_file(path)
        if f is None:
            if offset:
                # read part-way before (a checkpoint stood inside it): an event it was in the
                # middle of cannot be completed
                self._new_stream(f"{name}: was read up to byte {offset:,} and is gone")
            return
        with f:
            opened = os.fstat(f.fileno())
            opened_size = opened.st_size
            try:
                ident = _identity(f.fileno(), opened)
            except OSError as e:
                self._reject(name, f"read error at byte 0: {e.strerror or e}")
                if offset:
                    self._new_stream(f"{name}: unreadable after byte {offset:,}")
                return
            if offset and was is not None and not _same_file(f.fileno(), opened, was):
                # another file under the name the checkpoint stopped in (renamed over it, or
                # a state directory started on another spool): the new one is read whole
                self._count("changed")
                self._new_stream(f"{name}: was read up to byte {offset:,} and is gone; another file of that name "
                                 "is there, read from its start")
                offset = start = 0
            status = self._feed_file(f, name, ident, offset, start, within_s, opened_size)
            if status is None:
                return
            offset = status
        if carried := self.engine._core.carried:
            # a probe may cut an event across files, so not a fault, said at info; when the
            # event then ends as a bad value, a warning names this file (_take_records): a
            # wrong or cut-short file dropped in the spool made the next file's first bytes a
            # dead letter, and the log said nothing (helper-128)
            held = min(carried, offset)
            log.info(f"{name}: ends inside an event (its last {plural(held, 'byte')}): the event runs on into the "
                     "next file")
            self._cut_events[self.engine._core.next_offset - carried] = (name, held)
            while len(self._cut_events) > CUT_EVENTS_KEPT:
                del self._cut_events[next(iter(self._cut_events))]
        self._position = None
        self.fed_sizes[name] = offset
        self.uncommitted.append(name)
        if self.checkpoint_every_s and time.monotonic() - self.last_commit < self.checkpoint_every_s:
            return
        with self.lock:
            self._commit()

    def _feed_file(self, f, name: str, ident, offset: int, start: int, within_s: float,
                   opened_size: int) -> Optional[int]:
        """_process_file's reading and feeding of the open spool file `f` from `offset`: the
        offset it was read to, or None when it was set aside, or stopped part-way (its
        position kept for the final checkpoint). An event begun in an earlier file that breaks
        in this one, or runs past this one's end, was that file's fault, not this one's: the
        stream starts afresh at this file's first byte, and the file is read whole, as one
        that starts the stream.
        (It skipped the rest of this file: a 3-byte file dropped before it cost every event of
        the next one.)"""
        fresh = offset == 0 and self.engine._core.carried == 0
        while True:
            if fresh:
                # The file starts the stream afresh, so it can be judged alone: one that is not
                # an event stream (loaders.sniff) goes whole to rejected/, nothing of it fed
                try:
                    why, warnings = judge_spool_file(f, self.engine._core, stop=self.stop.is_set)
                except OSError as e:
                    self._reject(name, f"read error while it was examined: {e.strerror or e}")
                    return None
                if self.stop.is_set():
                    return None                 # untouched: judged again at the next start
                for line in warnings:
                    log.warning(f"{name}: {line}")
                if why is not None:
                    self._reject(name, why, examined=True)
                    return None
            restart = self._feed_from(f, name, ident, offset, start, within_s, opened_size)
            if restart is None or restart >= 0:
                return restart
            # -1: an event begun in an earlier file broke in this one or ran past its end; the
            # stream restarted at this file's first byte, which is read again from there
            offset = start = 0
            fresh = True

    def _feed_from(self, f, name: str, ident, offset: int, start: int, within_s: float,
                   opened_size: int) -> Optional[int]:
        """Feed `f` from `offset` to its end: the offset reached; None when stopped part-way;
        -1 when an event begun in an earlier file broke in this one or ran past its end, and
        the stream was begun again at this file's first byte (to be read again from there)."""
        self.fed_ids[name] = ident
        f.seek(offset)
        while True:
            try:
                n = self._read_piece(f)
            except OSError as e:
                self._reject(name, f"read error at byte {offset:,}: {e.strerror or e}"
                                   + (" (the bytes before it were processed)" if offset else ""))
                if offset:
                    self._new_stream(f"{name}: unreadable after byte {offset:,}")
                return None
            status = 0
            if n:
                piece = self._buffer[:n]
                with self.lock:
                    core = self.engine._core      # a reload replaces the engine
                    # where this file's bytes stand in the stream, for an error's offset
                    file_start = core.state_scalars()["stream_offset"] - offset
                    if offset == 0:
                        self._stream_files.append((file_start, name))
                    status = core.feed(piece)
                    # taken as they come, as replay does (the core's buffers stay small
                    # and warm), and handed to the sinks in batches
                    self._take_records()
                    if self.metrics is not None:
                        self.metrics.observe(self.engine, input_bytes=n)
                piece.release()
                offset += n
            if status:
                if status != 4 and core.error_offset < file_start:
                    self._start_again_at(name, core.error_offset, file_start, "corrupt event stream in ",
                                         f": {_STATUS_REASONS.get(status, f'status_{status}')} "
                                         f"({_STATUS_DETAILS.get(status, '')})")
                    return -1
                if status == 4:
                    # out of memory: no byte is at fault; the rest of the file is skipped, its
                    # bytes counted, and offsets go on from its end
                    offset = max(offset, os.fstat(f.fileno()).st_size)
                    self._stream_broken(name, status, core.error_offset, file_start, file_start + offset)
                    break
                # the file counts as the bytes before the break (done/ keeps those); the rest is
                # set aside when it moves, and the next file's offsets follow the break, as in
                # a replay of done/
                offset = core.error_offset - file_start
                self.broken[name] = self._stream_broken(name, status, core.error_offset, file_start,
                                                        core.error_offset)
                self._count("broken")
                break
            if n < FEED_BYTES and os.fstat(f.fileno()).st_size <= offset:
                carried = self.engine._core.carried
                if offset and carried > offset and not event_shaped(self.engine._core.carried_head):
                    # the value left open began before this file and runs past its end, and
                    # no event is shaped so (a string, or an array of 1,500): a fragment
                    # before this file swallowed it (a 45 kB file after a 3-byte one lost its
                    # 1,000 events). Read again as a file that starts the stream. An event's
                    # shape is let run on, as replay reads it: a probe may cut one event
                    # across three files, the middle one only some of its bytes.
                    self._start_again_at(name, file_start - (carried - offset), file_start, "",
                                         ", runs past this file's end: it is no event, and this file was read as "
                                         "its bytes")
                    return -1
                break
            # more to read: a whole piece was read, or the file grew while it was fed
            if self.stop.is_set():
                self._position = (name, offset)    # for the final checkpoint
                return None
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self._reload((name, offset))
            elif time.monotonic() - self.last_commit >= within_s:
                with self.lock:
                    self._commit((name, offset))
        if not status and (offset < opened_size or start > opened_size):
            self._count("changed")
            self._new_stream(f"{name}: truncated while it was read (it had {max(opened_size, start):,} bytes; "
                             f"reading stopped at byte {offset:,})")
        elif not status and offset > opened_size:
            self._count("changed")
            log.warning(f"{name}: grew from {opened_size:,} to {offset:,} bytes while it was read (written in "
                        "place: have the probe write elsewhere and rename); all of it was processed")
        return offset

    def _read_piece(self, f) -> int:
        """Read up to FEED_BYTES into the buffer; fewer only at the end of the file. Read,
        not mapped: a mapped file truncated by another process kills this one with SIGBUS,
        and reading costs one copy from the page cache (docs/performance.md)."""
        filled = 0
        while filled < FEED_BYTES:
            n = f.readinto(self._buffer[filled:])
            if not n:
                break
            filled += n
        return filled

    def _stream_broken(self, name: str, status: int, error_offset: int, file_start: int, file_end: int) -> str:
        """The stream cannot be decoded past this point: report it, keep what came before, and
        start a new stream with the next file, at the stream offset `file_end` (where the
        bytes set aside begin, or the end of the file when none are: offsets stay unique and
        the max_dead_letters span goes on). The offset is the file's own (what an operator
        opens); the stream's follows. Returns what broke it (`corrupt (not msgpack ...)`)."""
        reason = _STATUS_REASONS.get(status, f"status_{status}")
        detail = _STATUS_DETAILS.get(status, "")
        inside = error_offset - file_start
        where = (f"at byte {inside:,} of the file" if inside >= 0 else
                 f"in an event that began {plural(-inside, 'byte')} before this file")
        rest = ("the rest of the file is skipped" if status == 4 else
                "the rest of the file goes to rejected/ when the file moves to done/")
        log.error(f"{name}: corrupt event stream {where} (stream offset {error_offset:,}): {reason} ({detail}); "
                  f"{rest}, and the next file starts a new stream")
        with self.lock:
            if status == 4:
                self.engine._core.clear_oom()
            self.engine._core.begin_stream(file_end)
        return f"{reason} ({detail})"

    def _start_again_at(self, name: str, began: int, file_start: int, before: str, after: str) -> None:
        """An event that began before `name` (at stream offset `began`, in an earlier file)
        cannot be `name`'s: log it between `before` and `after` (what became of it), naming the
        file it began in when this stream read it, and begin the stream again at `name`'s first
        byte (stream offset `file_start`), to be read again from there. No event of `name` was
        processed: its bytes so far were all that event's."""
        named = [file for at, file in self._stream_files if at <= began]
        where = f"in {named[-1]}" if named and named[-1] != name else "in an earlier file"
        log.error(f"{name}: {before}an event that began {plural(file_start - began, 'byte')} before this file, {where} "
                  f"(stream offset {began:,}){after}; the stream starts again at this file's first byte, and the "
                  "file is read whole")
        with self.lock:
            self.engine._core.begin_stream(file_start)

    def _new_stream(self, why: str) -> None:
        """The stream's continuity is lost (a file gone or cut while read): an event begun in
        it cannot be completed, so the next file starts a new stream, as after corrupt bytes."""
        log.warning(f"{why}: the next file starts a new stream")
        with self.lock:
            core = self.engine._core
            # offsets go on: dead letters stay unique and their max_dead_letters spans hold
            core.begin_stream(core.state_scalars()["stream_offset"])

    def _prune_done(self, at_once: bool = False) -> bool:
        """Measure done/ and, with --keep-done, delete its oldest files (by mtime) beyond the
        age or size given. Only files no usable checkpoint needs again: files move to done/
        one checkpoint late, and a damaged checkpoint falls back to an older one, which
        brings back from done/ what the newer ones moved (_forget_lost_work). The store keeps
        the previous generation as the fallback of the current one, so what the records of
        the current generation moved stays; so does the newest journal file (the journal
        numbers on from it after a restart). Every PRUNE_EVERY_S during a backlog, `at_once`
        after a quiet spool's checkpoint. True when files that are due are held only because
        the current generation needs them: the next checkpoint is then made a new base
        (at most every REBASE_FOR_DONE_S), after which they can go."""
        if not self.keep_done and self.metrics is None:
            return False
        if not at_once and time.monotonic() - self._last_prune < PRUNE_EVERY_S:
            return False
        if self._writer is not None or self.store.generation is None:
            return False    # files are being moved (the next time), or nothing is checkpointed yet
        self._last_prune = time.monotonic()
        done = self.spool / "done"
        files = []
        try:
            with os.scandir(done) as entries:
                for entry in entries:
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(info.st_mode):
                        files.append((info.st_mtime, entry.name, info.st_size))
        except FileNotFoundError:
            pass
        total = sum(size for _, _, size in files)
        if self.keep_done and files:
            needed = self._needed_by_fallback()
            if needed is not None:
                journal = [name for _, name, _ in files if self._journaled_here(name)]
                if journal:
                    needed.add(max(journal))
                max_age = min((value for kind, value in self.keep_done if kind == "age"), default=None)
                max_bytes = min((value for kind, value in self.keep_done if kind == "size"), default=None)
                now = time.time()
                removed = removed_bytes = held = 0
                for mtime, name, size in sorted(files):
                    too_old = max_age is not None and now - mtime > max_age
                    too_big = max_bytes is not None and total > max_bytes
                    if not (too_old or too_big):
                        break       # oldest first: nothing younger is due either
                    if name in needed:
                        held += size
                        continue
                    try:
                        os.unlink(done / name)
                    except FileNotFoundError:
                        pass
                    total -= size
                    removed += 1
                    removed_bytes += size
                if removed:
                    log.info(f"--keep-done: {removed:,} files ({removed_bytes:,} bytes) removed from done/, "
                             f"{total:,} bytes kept")
                if held and time.monotonic() - self._last_rebase_for_done >= REBASE_FOR_DONE_S:
                    self._last_rebase_for_done = time.monotonic()
                    log.info(f"--keep-done: {held:,} bytes in done/ are due but the checkpoint fallback needs them "
                             "until a new base: the next checkpoint is one")
                    self.store.rebase_next()
                    self.done_bytes = total
                    return True
        self.done_bytes = total
        return False

    def _needed_by_fallback(self) -> Optional[set[str]]:
        """The spool files in done/ that a fallback to an older checkpoint brings back: those
        the records of the current generation moved. None when they cannot all be read (a
        damaged log): then nothing is pruned."""
        extras = self.store.record_extras()
        if extras is None:
            if not self._prune_refused:
                log.warning(f"--keep-done: the checkpoint log of generation {self.store.generation:,} cannot be read "
                            "whole; done/ is not pruned until the next generation")
                self._prune_refused = True
            return None
        self._prune_refused = False
        return {(extra.get("done_names") or {}).get(name, name)
                for extra in extras for name in extra.get("moving") or []}

    def _observe_spool(self) -> None:
        """The spool's own figures for the metrics: files rejected, files that changed after
        they were opened, late tails, the bytes kept in done/."""
        if self.metrics is None:
            return
        with self._counts_lock:
            counts = dict(self.spool_counts)
        self.metrics.observe_spool(rejected=counts["rejected"], changed=counts["changed"], tails=counts["tails"],
                                   broken=counts["broken"], done_bytes=self.done_bytes)

    def _reload(self, position: Optional[tuple[str, int]] = None) -> None:
        """SIGHUP: configuration, profiles, lists and areas read again; state carried over by
        subscriber, campaign id and counter name. A new configuration that does not load is
        rejected and the running one goes on. `position`: where a spool file being read stands."""
        with self.lock:
            self._commit(position)
            try:
                new = self.engine.reload(self.config_path)
                unwritable = unwritable_output_directory(self.out, new.campaigns)
                if unwritable:
                    # a new channel whose directory is a file: its first file would stop the service
                    raise SigmatchError(f"--out {self.out}: {unwritable}")
            except Exception as e:      # noqa: BLE001 - whatever a new configuration does, the running one goes on
                log.error(f"reload rejected, the running configuration goes on: {_one_line(e)}")
                if self.metrics is not None:
                    self.metrics.observe_reload(None)
                return
            self.engine = new
            self._inputs = input_stamps(new.config)
            if self.metrics is not None:
                self.metrics.observe_reload(new)
            output = new.config.output
            self.sinks = SinkSet(self.out, campaigns=new.campaigns, format=self.format or output.format,
                                 max_records=output.max_records, max_age_ms=output.max_age_ms,
                                 durable=False, defer_renames=True, numbering=self.sinks.numbering())
            self._commit(position)
        lifecycle.info(f"reloaded {self.config_path}: {len(new.campaigns):,} campaigns, {len(new.subscribers):,} "
                       f"subscribers; {new.reload_dropped:,} pending actions of removed campaigns dropped")

    def _advance_to_wall_clock(self) -> None:
        """A quiet spool: event time moves on with the wall clock so that delayed actions
        still go out (only with --idle-advance)."""
        with self.lock:
            core = self.engine._core
            before = core.seq
            core.advance(int(time.time() * 1000))
            if core.seq != before:
                # what went out is made durable, exactly once, like any other output; the
                # metrics (pending, the checkpoint's age) are those after it
                self._commit()
                self._wait_for_writer()
            if self.metrics is not None:
                self.metrics.observe(self.engine)

    def _view(self, msisdn: int):
        from engine.service.lookup import policy_view
        with self.lock:
            return policy_view(self.engine, msisdn)

    # -- explain: the watched subscribers (a bounded ring of entries each)

    def _watch_file(self) -> None:
        """`--watch FILE` (one MSISDN a line, or .csv/.roar as lists are read): watched from
        start-up. Numbers that are no subscriber are counted in a warning, never listed."""
        numbers, self._watch_numbers = self._watch_numbers, []     # read by _preflight; used once
        known = [m for m in numbers if self.engine.subscriber_status(m) != "unknown"]
        if len(known) < len(numbers):
            unknown = plural(len(numbers) - len(known), "number is", "numbers are")
            log.warning(f"--watch {self.watch_path}: {unknown} no subscriber, not watched ({NOT_FOUND_HINT})")
        if len(known) > WATCH_MAX:
            log.warning(f"--watch {self.watch_path}: {len(known):,} numbers; the first {WATCH_MAX:,} are watched")
            known = known[:WATCH_MAX]
        self.engine.watch(known, ring=WATCH_RING)
        log.info(f"watching {len(known):,} subscribers (explain: the last {WATCH_RING:,} events each)")

    def _explain(self, msisdn: int, last: Optional[int]):
        """GET /subscriber/{msisdn}/explain?last=N: None when the number is not watched."""
        with self.lock:
            if msisdn not in self.engine.watched:
                return None
            explanation = self.engine.explanation(msisdn, last)
        # as /watch and /subscriber/{msisdn} give it: a string (a JSON number above 2^53
        # loses digits in some clients)
        explanation["msisdn"] = str(msisdn)
        return explanation

    def _watch(self, method: str, msisdn: Optional[int]) -> tuple[int, dict]:
        """GET /watch, PUT /watch/{msisdn}, DELETE /watch/{msisdn}: (HTTP status, body)."""
        with self.lock:
            watched = self.engine.watched
            if method == "GET":
                return 200, {"watched": [str(m) for m in watched], "max": WATCH_MAX, "ring": WATCH_RING}
            if method == "PUT":
                if msisdn in watched:
                    return 200, {"msisdn": str(msisdn), "watched": True}
                if self.engine.subscriber_status(msisdn) == "unknown":
                    return 404, {"error": f"{msisdn} is not a subscriber ({NOT_FOUND_HINT})"}
                if len(watched) >= WATCH_MAX:
                    return 409, {"error": f"{WATCH_MAX:,} subscribers are watched already: DELETE one first"}
                self.engine.watch(watched + [msisdn], ring=WATCH_RING)
                return 201, {"msisdn": str(msisdn), "watched": True}
            if msisdn not in watched:
                return 404, {"error": f"{msisdn} is not watched"}
            self.engine.watch([m for m in watched if m != msisdn], ring=WATCH_RING)
            return 200, {"msisdn": str(msisdn), "watched": False}


def _route_signals(daemon: SpoolDaemon) -> Callable[[], None]:
    """SIGTERM and SIGINT set `daemon.stop`, SIGHUP `daemon.reload_requested`, from a thread
    of their own. A Python signal handler runs in the main thread between two bytecodes,
    possibly inside `Event.clear()` or `Event.wait()` while the main thread holds the event's
    lock; an `Event.set()` there waits for that lock forever (a SIGHUP storm hung the service
    that way). So the handlers do nothing, and the interpreter's C-level handler writes each
    signal's number to a socket (`signal.set_wakeup_fd`) that a watcher thread reads.
    Returns a function that puts the previous handlers back."""
    import pyarrow
    # Arrow's readers otherwise put their own SIGINT/SIGTERM handlers in while they run: a
    # SIGTERM during the profiles' load cancelled it with an error ("Operation cancelled",
    # exit 1) instead of the clean stop the service makes once loading is done
    pyarrow.enable_signal_handlers(False)
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    routes = {signal.SIGTERM: daemon.stop, signal.SIGINT: daemon.stop, signal.SIGHUP: daemon.reload_requested}
    previous = {number: signal.signal(number, lambda *_: None) for number in routes}
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def watch() -> None:
        with reader:
            while True:
                try:
                    data = reader.recv(64)
                except OSError:
                    return
                if not data:
                    return
                for number in data:
                    event = routes.get(number)
                    if event is not None:
                        event.set()

    threading.Thread(target=watch, name="sigmatch-signals", daemon=True).start()

    def restore() -> None:
        signal.set_wakeup_fd(previous_fd)
        for number, handler in previous.items():
            signal.signal(number, handler)
        pyarrow.enable_signal_handlers(True)
        writer.close()          # the watcher reads end-of-file, closes its end and returns

    return restore


def run_spool(config: Path, out: Path, state: Path, spool: Path, **options) -> int:
    daemon = SpoolDaemon(config, out, state, spool, **options)
    restore = _route_signals(daemon)
    try:
        return daemon.run()
    finally:
        restore()
