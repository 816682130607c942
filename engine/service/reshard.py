"""A service's state written anew for another number of workers (`sigmatch reshard`), and
the state of a service with workers as one engine's (`sigmatch diff --state`).

A service with `--workers N` keeps one checkpoint store per worker (STATE/shard-i/, a
CheckpointSet); each worker holds the rows of the subscribers `shards_of` gives it, in the
order of its own engine. One engine's state is the workers' states put together:

- rows and subscriber numbers: concatenated in the workers' order (a split takes each
  subscriber to its worker, in the order it had);
- contacts, kept contact times (max_in_window) and timers: their subscriber index moved
  to the subscriber's new place;
- timers: each worker's are keyed by their creation, comparable across workers (the event's
  position << 16 | its order in the event), one engine's by a counter. Both order timers
  due at the same time by creation, so the keys are renumbered 1..n in that order, all
  workers' timers together: an engine's counter then goes on above them, and a worker's
  later keys (position << 16, the position past every event seen) are above them too;
- the funnel and the sends counted against budgets: summed (a budget's sends of the latest
  local day any worker counted, and ever); a split gives them all to worker 0, whose
  counts the others add to theirs (engine.workers: the lanes);
- unknown subscribers: summed (each worker counts those of its own hash), a split gives
  them to worker 0; the other counts, the clock, the sequence numbers, the stream position,
  the carried bytes and the open dead-letter run are every worker's (each decodes the
  whole stream), so worker 0's.

`reshard` rewrites the state directory in place, so that a journal of stdin or TCP input
(STATE/journal, STATE/tcp-journal) and the state's lock stay where the service looks for
them. The new layout is written whole into STATE/.reshard/new/ first; READY then says it
is complete; the old layout moves to STATE/.reshard/old/ and READY becomes MOVED; the new
layout moves in; STATE/.reshard/ goes. A crash before READY leaves the old layout in place
(the next `reshard` discards the partial one); after it, the next `reshard` finishes the
move. A service does not start while STATE/.reshard/ is there.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import zlib
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from engine._core import CONTACT_DTYPE, TIMER_DTYPE
from engine.errors import CheckpointError, SigmatchError
from engine.service.checkpoint import (VERSION, CheckpointSet, CheckpointStore, Loaded, _write_full,
                                       is_checkpoint_file, is_checkpoint_name, read_header)
from engine.privacy import escape_controls
from engine.sinks import fsync_path, make_private_directories
from engine.wording import plural

__all__ = ["merge_parts", "split_state", "reshard", "state_as_one", "interrupted", "HeldBack", "RESHARD_DIR"]

log = logging.getLogger("sigmatch.reshard")

RESHARD_DIR = ".reshard"
# what STATE/.reshard/ holds before READY: the new layout being written, a marker's temporary
_PARTIAL_ENTRIES = frozenset({"new", ".READY.tmp", ".MOVED.tmp"})
# the core's records (engine/_core.pxd), as they lie in a checkpoint's sections
_TIMER, _CONTACT = TIMER_DTYPE, CONTACT_DTYPE
_BUDGET = np.dtype([("day", "<i8"), ("day_sends", "<u8"), ("total", "<u8")])
_OCCUPIED = np.uint64(1 << 63)
_SUBSCRIBER_OF_KEY = np.uint64((1 << 63) - 1)
# counts: bad events by reason, then events, unknown subscribers, then events by type (64)
_UNKNOWN_FROM_END = 65
# what every worker holds alike: a merge takes worker 0's, having checked the others agree
_SHARED_SCALARS = ("clock", "has_clock", "seq", "conversion_seq", "stream_offset", "carry_offset", "late_events",
                   "bad_bytes", "largest_bad_value")
_SAME_LAYOUT = ("funnel_stages", "channels", "window_contacts")


# --------------------------------------------------------------------------- sections

def _layout(header: dict) -> list[int]:
    # a layout of six entries was written before markers: none
    layout = [int(x) for x in header["scalars"]["layout"]]
    return layout + [0] * (7 - len(layout))


def _check_alike(parts: list[Loaded]) -> None:
    """CheckpointError naming the second part's file when the workers' states are not of one
    configuration and one stream position (they are, when one service wrote them)."""
    first = parts[0].header
    for part in parts[1:]:
        header = part.header
        mine, theirs = first["fingerprint"], header["fingerprint"]
        same = (all(mine.get(key) == theirs.get(key) for key in ("campaigns", "counters", "counter_windows", "markers"))
                and _layout(header)[:4] + _layout(header)[5:] == _layout(first)[:4] + _layout(first)[5:]
                and all(header["scalars"].get(key) == first["scalars"].get(key) for key in _SAME_LAYOUT))
        if not same:
            raise CheckpointError(f"{part.path}: written for other campaigns, counters or layout than "
                                  f"{parts[0].path}: not the workers of one service")
        for key in _SHARED_SCALARS:
            if header["scalars"].get(key) != first["scalars"].get(key):
                raise CheckpointError(f"{part.path}: its {key} ({header['scalars'].get(key)}) differs from "
                                      f"{parts[0].path}'s ({first['scalars'].get(key)}): not one commit of one service")


def _records(section: np.ndarray, dtype: np.dtype, path, name: str) -> np.ndarray:
    raw = np.ascontiguousarray(section).view(np.uint8).reshape(-1)
    if len(raw) % dtype.itemsize:
        raise CheckpointError(f"{path}: section {name!r} is not whole {dtype.itemsize}-byte entries")
    return raw.view(dtype).copy()


def _renumbered_timers(timers: np.ndarray) -> np.ndarray:
    """All timers in the order the engines fire them (due, then creation), keyed 1..n in that
    creation order: sorted, so a valid heap as the core keeps one."""
    if not len(timers):
        return timers
    rank = np.empty(len(timers), np.uint64)
    rank[np.argsort(timers["created"], kind="stable")] = np.arange(1, len(timers) + 1, dtype=np.uint64)
    timers = timers.copy()
    timers["created"] = rank
    return timers[np.lexsort((timers["created"], timers["due"]))]


def _merged_budgets(budgets: list[np.ndarray]) -> np.ndarray:
    stacked = np.stack(budgets)                     # workers x budgets
    day = stacked["day"].max(axis=0)
    out = np.zeros(stacked.shape[1], _BUDGET)
    out["day"] = day
    out["day_sends"] = np.where(stacked["day"] == day, stacked["day_sends"], 0).sum(axis=0)
    out["total"] = stacked["total"].sum(axis=0)
    return out


def _fingerprint(template: dict, subscribers: np.ndarray) -> dict:
    subscribers = np.ascontiguousarray(subscribers, dtype=np.uint64)
    return {**template, "subscribers": int(len(subscribers)),
            "subscribers_crc32": zlib.crc32(memoryview(subscribers).cast("B"))}


def _as_bytes(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).view(np.uint8).reshape(-1)


def merge_parts(parts: list[Loaded]) -> Loaded:
    """One engine's state from the states of a service's workers (Loaded, by worker), as
    one engine would hold it at the same commit: header (scalars, fingerprint, extra without
    the commit number) and sections. The parts' rows are taken (None after it): discard the
    parts. CheckpointError naming a file when the parts are not of one service or their
    sections do not fit their layout."""
    if len(parts) == 1:
        return parts[0]
    _check_alike(parts)
    first = parts[0]
    stride = _layout(first.header)[0]
    window_words = int(first.header["scalars"].get("window_contacts", 0)) + 2
    offsets = np.cumsum([0] + [len(p.subscribers) for p in parts])
    for part in parts:
        n = len(part.subscribers)
        if len(part.sections["rows"]) != n * stride or _layout(part.header)[4] != n:
            raise CheckpointError(f"{part.path}: its rows do not fit its {n:,} subscribers")
    # The rows move into one array part by part, each part's dropped once copied: the
    # state is held about once, not twice (the parts are the caller's to discard).
    rows = np.empty(int(offsets[-1]) * stride, np.uint8)
    contacts, windows, timers, funnel, budgets, unknown = [], [], [], None, [], 0
    for part, offset in zip(parts, offsets):
        s = part.sections
        n = len(part.subscribers)
        rows[int(offset) * stride:(int(offset) + n) * stride] = s["rows"]
        s["rows"] = None
        c = _records(s["contacts"], _CONTACT, part.path, "contacts")
        c = c[(c["key"] & _OCCUPIED) != 0]
        sub = (c["key"] & _SUBSCRIBER_OF_KEY) >> np.uint64(16)
        if len(sub) and sub.max() >= n:
            raise CheckpointError(f"{part.path}: a contact of subscriber index {int(sub.max()):,} of {n:,}")
        c["key"] = _OCCUPIED | ((sub + np.uint64(offset)) << np.uint64(16)) | (c["key"] & np.uint64(0xFFFF))
        contacts.append(c)
        w = np.asarray(s.get("windows", np.zeros(0, np.int64)), dtype=np.int64)
        if len(w):
            w = w.reshape(-1, window_words).copy()
            if w[:, 0].min() < 1 or w[:, 0].max() > n:
                raise CheckpointError(f"{part.path}: kept contact times of a subscriber index out of range")
            w[:, 0] += offset
            windows.append(w.reshape(-1))
        t = _records(s["timers"], _TIMER, part.path, "timers")
        if len(t) and int(t["subscriber"].max()) >= n:
            raise CheckpointError(f"{part.path}: a timer of subscriber index {int(t['subscriber'].max()):,} of {n:,}")
        t["subscriber"] += np.uint32(offset)
        timers.append(t)
        f = np.asarray(s["funnel"], dtype=np.uint64)
        if funnel is not None and f.shape != funnel.shape:
            raise CheckpointError(f"{part.path}: its funnel does not fit {first.path}'s")
        funnel = f.copy() if funnel is None else funnel + f
        if "budgets" in s:
            budgets.append(_records(s["budgets"], _BUDGET, part.path, "budgets"))
        unknown += int(s["counts"][-_UNKNOWN_FROM_END])
    sections = dict(first.sections)
    subscribers = np.concatenate([np.asarray(p.subscribers, dtype=np.uint64) for p in parts])
    sections["subscribers"] = subscribers
    sections["rows"] = rows
    sections["contacts"] = _as_bytes(np.concatenate(contacts))
    sections["windows"] = np.concatenate(windows) if windows else np.zeros(0, np.int64)
    merged_timers = _renumbered_timers(np.concatenate(timers))
    sections["timers"] = _as_bytes(merged_timers)
    sections["funnel"] = funnel
    if budgets:
        if len(budgets) != len(parts) or len({len(b) for b in budgets}) != 1:
            raise CheckpointError(f"{first.path}: the workers' budget counts do not fit one another")
        sections["budgets"] = _as_bytes(_merged_budgets(budgets))
    counts = np.array(first.sections["counts"], dtype=np.uint64)
    counts[-_UNKNOWN_FROM_END] = unknown
    sections["counts"] = counts
    scalars = dict(first.header["scalars"])
    layout = _layout(first.header)
    layout[4] = len(subscribers)
    scalars["layout"] = layout
    scalars["timers_created"] = len(merged_timers)
    extra = {k: v for k, v in first.extra.items() if k != "commit"}
    # this version's: its sections are restored by this version (older ones included)
    header = {"version": VERSION, "scalars": scalars,
              "fingerprint": _fingerprint(_template(first.header), subscribers), "extra": extra}
    return Loaded(0, header, sections, first.path)


def _template(header: dict) -> dict:
    return {k: v for k, v in header["fingerprint"].items() if k not in ("subscribers", "subscribers_crc32")}


def split_state(loaded: Loaded, workers: int) -> Iterator[tuple[dict, dict]]:
    """One engine's state (Loaded, as merge_parts or a CheckpointStore gives it) as the
    states of `workers` workers: (header, sections) by worker, each holding the subscribers
    `engine.workers.shards_of` gives it, in the order they had; one at a time, so that only
    one worker's copy of the rows is held beside the state's. The headers' extra is the
    state's, without a commit number. CheckpointError when its sections do not fit its layout."""
    from engine._core import shards_of
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    s = loaded.sections
    path = loaded.path
    layout = _layout(loaded.header)
    stride = layout[0]
    window_words = int(loaded.header["scalars"].get("window_contacts", 0)) + 2
    subscribers = np.ascontiguousarray(loaded.subscribers, dtype=np.uint64)
    n = len(subscribers)
    if len(s["rows"]) != n * stride or layout[4] != n:
        raise CheckpointError(f"{path}: its rows do not fit its {n:,} subscribers")
    owner = shards_of(subscribers, workers) if n else np.zeros(0, np.uint32)
    new_index = np.zeros(n, np.uint32)
    members = []
    for k in range(workers):
        mine = np.flatnonzero(owner == k)
        new_index[mine] = np.arange(len(mine), dtype=np.uint32)
        members.append(mine)
    rows = np.asarray(s["rows"], dtype=np.uint8).reshape(n, stride) if stride else None
    c = _records(s["contacts"], _CONTACT, path, "contacts")
    c = c[(c["key"] & _OCCUPIED) != 0]
    c_sub = ((c["key"] & _SUBSCRIBER_OF_KEY) >> np.uint64(16)).astype(np.int64)
    if len(c_sub) and c_sub.max() >= n:
        raise CheckpointError(f"{path}: a contact of subscriber index {int(c_sub.max()):,} of {n:,}")
    w = np.asarray(s.get("windows", np.zeros(0, np.int64)), dtype=np.int64)
    w = w.reshape(-1, window_words) if len(w) else np.zeros((0, window_words), np.int64)
    if len(w) and (w[:, 0].min() < 1 or w[:, 0].max() > n):
        raise CheckpointError(f"{path}: kept contact times of a subscriber index out of range")
    t = _renumbered_timers(_records(s["timers"], _TIMER, path, "timers"))
    if len(t) and int(t["subscriber"].max()) >= n:
        raise CheckpointError(f"{path}: a timer of subscriber index {int(t['subscriber'].max()):,} of {n:,}")
    budgets = _records(s["budgets"], _BUDGET, path, "budgets") if "budgets" in s else None
    template = _template(loaded.header)
    extra = {k: v for k, v in loaded.extra.items() if k != "commit"}
    c_owner, w_owner, t_owner = owner[c_sub], owner[w[:, 0] - 1], owner[t["subscriber"].astype(np.int64)]
    for k in range(workers):
        mine = members[k]
        sections = dict(s)
        sections["subscribers"] = subscribers[mine]
        sections["rows"] = rows[mine].reshape(-1) if rows is not None else np.zeros(0, np.uint8)
        ck = c[c_owner == k]
        if len(ck):
            sub = new_index[((ck["key"] & _SUBSCRIBER_OF_KEY) >> np.uint64(16)).astype(np.int64)].astype(np.uint64)
            ck["key"] = _OCCUPIED | (sub << np.uint64(16)) | (ck["key"] & np.uint64(0xFFFF))
        sections["contacts"] = _as_bytes(ck)
        wk = w[w_owner == k]
        if len(wk):
            wk[:, 0] = new_index[wk[:, 0] - 1].astype(np.int64) + 1
        sections["windows"] = wk.reshape(-1)
        tk = t[t_owner == k]
        if len(tk):
            tk["subscriber"] = new_index[tk["subscriber"]]
        sections["timers"] = _as_bytes(tk)         # a subsequence of a sorted array: still sorted
        counts = np.array(s["counts"], dtype=np.uint64)
        if k:
            # worker 0 holds what the workers add up: the funnel, budgets and unknown subscribers
            counts[-_UNKNOWN_FROM_END] = 0
            sections["funnel"] = np.zeros_like(np.asarray(s["funnel"], dtype=np.uint64))
            if budgets is not None:
                sections["budgets"] = _as_bytes(np.zeros(len(budgets), _BUDGET))
        sections["counts"] = counts
        scalars = dict(loaded.header["scalars"])
        scalars["layout"] = layout[:4] + [len(mine)] + layout[5:]
        scalars["timers_created"] = len(t)
        header = {"version": VERSION, "scalars": scalars,
                  "fingerprint": _fingerprint(template, sections["subscribers"]), "extra": dict(extra)}
        yield header, sections


# --------------------------------------------------------------------------- reading a state

class _FirstCut(CheckpointError):
    """Only the first checkpoint of a service with workers was begun, and a crash cut it:
    no commit is complete, and the service would start afresh."""


def _clean(loaded, directory: Path, workers: int) -> None:
    """CheckpointError when the state is older than the newest checkpoint because of damage:
    the service undoes the work of the checkpoints it lost when it starts, and a reshard
    must not take that over. A commit that a crash left in some workers' stores only is not
    damage: nothing was renamed or moved on account of it (CheckpointSet)."""
    if loaded.damage or loaded.fallbacks:
        why = loaded.damage or loaded.fallbacks[0]
        option = f"with --workers {workers}" if workers > 1 else "without --workers"
        raise CheckpointError(f"--state {directory}: its newest checkpoint cannot be used as it is ({why}): start "
                              f"the service once {option}, so that it recovers, stop it, then reshard")


def read_state(directory) -> tuple[int, Loaded, dict]:
    """(the --workers of the service whose state `directory` holds, its state as one
    engine's, {"generation": its newest generation, "commit": its highest commit number or
    0}). The workers' own states are not kept: a state of L is gigabytes. CheckpointError,
    one line naming the directory, when it holds none, a state of an older sigmatch, a
    layout that cannot be told, an interrupted reshard, or a checkpoint that damage made
    older than the newest."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"--state {directory}: no such directory")
    workers, loaded = _load(directory)
    _clean(loaded, directory, workers)
    numbers = {"generation": max(p.generation for p in getattr(loaded, "parts", [loaded])),
               "commit": max(loaded.commit, loaded.highest) if workers > 1 else 0}
    one = merge_parts(loaded.parts) if workers > 1 else loaded
    return workers, one, numbers


def state_as_one(directory) -> Loaded:
    """The state a `sigmatch run --state` directory holds, with or without --workers, as one
    engine's (for engine_for). CheckpointError as read_state, except that a checkpoint older
    than the newest is used as the service would use it."""
    workers, loaded = _load(Path(directory))
    return merge_parts(loaded.parts) if workers > 1 else loaded


def _load(directory: Path) -> tuple[int, object]:
    """(the --workers of the service whose state `directory` holds, its Loaded or
    LoadedSet). CheckpointError as read_state; _FirstCut when only a first checkpoint cut
    short is there."""
    if (directory / RESHARD_DIR).exists():
        raise CheckpointError(f"--state {directory}: {interrupted(directory)}")
    if (directory / "checkpoint").exists() and not CheckpointStore(directory).exists() \
            and not CheckpointSet.workers_in(directory):
        raise CheckpointError(f"--state {directory}: holds a checkpoint of an older sigmatch (one full file): "
                              "drain it with that version")
    if CheckpointStore(directory).exists():
        workers, store = 1, CheckpointStore(directory)
    else:
        workers = CheckpointSet.workers_in(directory)
        if workers == 0:
            raise CheckpointError(f"--state {directory}: holds no checkpoint (no base-* file, no shard-*/)")
        store = CheckpointSet(directory, max(workers, 2))
    error = store.layout_error()
    if error is not None:
        raise CheckpointError(error)
    loaded = store.load()
    if loaded is None:
        raise _FirstCut(f"--state {directory}: holds no complete checkpoint")
    return workers, loaded


# --------------------------------------------------------------------------- rewriting in place

class HeldBack(logging.Handler):
    """The records of a logger, kept to be said only if the work goes on (or to be put in a
    document: `sigmatch diff --state`)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _lock_holder(directory: Path) -> Optional[str]:
    """The PID that holds `directory`'s lock (a service, or a reshard), None when none does."""
    import fcntl
    try:
        fd = os.open(directory / "lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


def interrupted(directory, *, ask_lock: bool = True) -> str:
    """What to do about the STATE/.reshard/ of `directory` (one sentence): wait for the
    reshard that holds the state's lock (`ask_lock`, when the caller does not hold it), or
    finish the one that was interrupted."""
    directory = Path(directory)
    holder = _lock_holder(directory) if ask_lock else None
    if holder is not None:
        return f"a `sigmatch reshard` (PID {holder}) is rewriting it: wait for it to end"
    work = directory / RESHARD_DIR
    if work.is_symlink() or not work.is_dir():
        return f"{RESHARD_DIR} is not a directory a reshard made: move it away"
    marker = _marker(work)
    if marker is None and _foreign(work):
        return f"{RESHARD_DIR} is not a directory a reshard made: move it away"
    if marker is None:
        return (f"a `sigmatch reshard` was interrupted before its new state was complete: run `sigmatch reshard "
                f"--state {directory} --workers N` again")
    to = _workers_named(marker[1])
    if to is None:
        return f"{RESHARD_DIR}/{marker[0]} is not as a reshard writes it: look into {RESHARD_DIR}/"
    return (f"a `sigmatch reshard` to --workers {to} was interrupted: run `sigmatch reshard --state "
            f"{directory} --workers {to}` to finish it")


def _foreign(work: Path) -> bool:
    """Whether STATE/.reshard/, without a marker, holds what no reshard writes there: an
    entry besides new/ and a marker's temporary, or a new/ that is no directory."""
    try:
        entries = set(os.listdir(work))
    except OSError:
        return True
    new = work / "new"
    return bool(entries - _PARTIAL_ENTRIES) or new.is_symlink() or (new.exists() and not new.is_dir())


def _marker(work: Path) -> Optional[tuple[str, dict]]:
    """("MOVED" or "READY", its content; {} when it cannot be read as a reshard writes it),
    or None when neither is there."""
    for name in ("MOVED", "READY"):
        path = work / name
        try:
            if not path.exists():
                continue
            content = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError):
            return name, {}
        return name, content if isinstance(content, dict) else {}
    return None


def _workers_named(content: dict) -> Optional[int]:
    to = content.get("to")
    return to if isinstance(to, int) and not isinstance(to, bool) and 1 <= to <= 256 else None


def _old_entries(directory: Path) -> list[Path]:
    """The entries of a state's checkpoint layout at the top of its directory."""
    found = []
    for path in directory.iterdir():
        name = path.name
        # a log only when it is one (a user's own log-20261206 is left where it is); a base
        # by its name, damaged or not
        if (is_checkpoint_name(name) and (name.startswith("base-") or is_checkpoint_file(path))
                or name.startswith("shard-") and name[6:].isdigit() and path.is_dir()
                # a base a killed service left half written: of the layout that goes
                or name.startswith(".base-") and name.endswith(".tmp")):
            found.append(path)
    return sorted(found)


def _write_marker(work: Path, name: str, content: dict) -> None:
    tmp = work / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(content))
        f.flush()
        os.fsync(f.fileno())
    _own(tmp, work.parent.stat())
    os.replace(tmp, work / name)
    fsync_path(work)


def _finish(directory: Path) -> Optional[dict]:
    """Carry an interrupted reshard of `directory` to its end, or discard its partial new
    state; returns the finished one's marker, None when there was nothing to finish."""
    work = directory / RESHARD_DIR
    if not os.path.lexists(work):
        return None
    if work.is_symlink() or not work.is_dir():
        raise CheckpointError(f"--state {directory}: {RESHARD_DIR} is not a directory a reshard made: move it away")
    marker = _marker(work)
    if marker is None:
        # the new layout was not complete: the old one is untouched. Only what a reshard
        # writes there is removed: a .reshard of someone else's is no partial state of ours
        theirs = sorted(set(os.listdir(work)) - _PARTIAL_ENTRIES)
        if _foreign(work):
            raise CheckpointError(f"--state {directory}: {RESHARD_DIR} is not a directory a reshard made (it holds "
                                  f"{escape_controls(theirs[0]) if theirs else 'new, not a directory'}): move it away")
        shutil.rmtree(work)
        fsync_path(directory)
        log.warning(f"--state {directory}: the partial state of an interrupted reshard removed")
        return None
    name, content = marker
    new, old = work / "new", work / "old"
    to = _workers_named(content)
    if to is None:
        raise CheckpointError(f"--state {directory}: {work}/{name} is not as a reshard writes it: look into "
                              f"{RESHARD_DIR}/ (the state before the reshard is in place"
                              f"{'' if name == 'READY' else f', or in {RESHARD_DIR}/old/'})")
    if name == "READY" and not _complete(new, to):
        # READY is written after the whole new state: without it, this is not a reshard's
        raise CheckpointError(f"--state {directory}: {work}/new/ does not hold the state for --workers {to} that "
                              f"READY says is complete: look into {RESHARD_DIR}/ (the state before the reshard is "
                              "in place, untouched)")
    if name == "READY":
        make_private_directories(old)
        _own(old, directory.stat())
        for path in _old_entries(directory):
            os.replace(path, old / path.name)
        fsync_path(directory)
        fsync_path(old)
        os.replace(work / "READY", work / "MOVED")
        fsync_path(work)
    for path in sorted(new.iterdir()) if new.exists() else []:
        os.replace(path, directory / path.name)
    fsync_path(directory)
    if not _complete(directory, to) or CheckpointSet.workers_in(directory) != (0 if to == 1 else to):
        # a MOVED without old/ was not written by a reshard: the state before is in place
        where = f"in {RESHARD_DIR}/old/" if old.is_dir() else "in place"
        raise CheckpointError(f"--state {directory}: the state for --workers {to} is not whole after the move: the "
                              f"state before the reshard is {where}")
    # what is left is of no use now: the old layout, then the marker last
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(new, ignore_errors=True)
    (work / "MOVED").unlink(missing_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    fsync_path(directory)
    return content


def _complete(directory: Path, workers: int) -> bool:
    """Whether `directory` holds a base of each store of a state for `workers`."""
    if workers == 1:
        return CheckpointStore(directory).exists()
    return all(CheckpointStore(directory / f"shard-{k}").exists() for k in range(workers))


def _lock(directory: Path) -> int:
    """The state's lock, as the service takes it (engine.service.daemon.open_state_lock)."""
    from engine.service.daemon import open_state_lock
    from engine.sinks import hold_lock
    fd = open_state_lock(directory)
    _own(directory / "lock", directory.stat())
    try:
        return hold_lock(fd, f"--state {directory}: state directory")
    except SigmatchError as e:
        raise SigmatchError(f"{e} (a service, or another reshard: stop the service, or let the reshard end)") from None


def reshard(directory, workers: int) -> dict:
    """Rewrite the state of a stopped `sigmatch run --state DIRECTORY` service for
    `--workers` `workers` (1: one engine's layout), in place (see the module's text).
    Finishes an interrupted reshard first. Returns {"from": N, "to": workers, "subscribers",
    "contacts", "pending", "finished": marker of an interrupted one finished or None}; "from"
    is None when only an interrupted one was finished or nothing changed (N == workers).
    SigmatchError (one line naming the directory) when a service holds the state, and
    CheckpointError as read_state."""
    directory = Path(directory)
    if workers < 1:
        raise SigmatchError(f"--workers {workers}: at least 1")
    if not directory.is_dir():
        raise CheckpointError(f"--state {directory}: no such directory")
    if not (CheckpointStore(directory).exists() or CheckpointSet._shard_directories(directory)
            or (directory / RESHARD_DIR).exists() or (directory / "checkpoint").exists()):
        # refused before the lock file is made: a lock in STATE/ says a service started there
        raise CheckpointError(f"--state {directory}: holds no checkpoint (no base-* file, no shard-*/): nothing to "
                              "rewrite, a service starts on it with any --workers")
    # one worker's store, or both layouts: refused before a lock is left in it
    error = CheckpointStore(directory).layout_error() if CheckpointStore(directory).exists() else None
    if error is not None:
        raise CheckpointError(error)
    fd = _lock(directory)
    try:
        finished = _finish(directory)
        if finished is not None and finished.get("to") == workers:
            return {"from": None, "to": workers, "finished": finished}
        # what the loads log of damage is in the one line this ends with, if it must refuse;
        # when it goes on, it is said after all (helper-119: commits undone, as the service
        # says them, went unsaid, and the state came out older than the user thought)
        checkpoint_log = logging.getLogger("sigmatch.checkpoint")
        held_back = HeldBack()
        propagate = checkpoint_log.propagate
        checkpoint_log.addHandler(held_back)
        checkpoint_log.propagate = False
        try:
            before, one, numbers = read_state(directory)
        except _FirstCut:
            # as the service would start afresh: its first write would prune these
            for path in _old_entries(directory):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            fsync_path(directory)
            return {"from": None, "to": workers, "finished": finished, "first_cut": True}
        finally:
            checkpoint_log.removeHandler(held_back)
            checkpoint_log.propagate = propagate
        for record in held_back.records:
            if record.levelno >= logging.WARNING:
                checkpoint_log.handle(record)
        summary = {"from": before, "to": workers, "finished": finished,
                   "subscribers": len(one.subscribers),
                   "contacts": len(one.sections["contacts"]) // _CONTACT.itemsize,
                   "pending": len(one.sections["timers"]) // _TIMER.itemsize}
        if before == workers:
            summary["from"] = None
            return summary
        generation = numbers["generation"] + 1
        # above 1 even from one engine's state: a set whose highest commit is 1 and which
        # misses a store reads as a first checkpoint cut by a crash (CheckpointSet.load), and
        # a store lost after the reshard must be refused, not taken for a fresh start
        commit = max(numbers["commit"], 1) + 1
        work = directory / RESHARD_DIR
        new = work / "new"
        try:
            make_private_directories(new)
            owner = directory.stat()
            _give_to_owner(work, owner)
            if workers == 1:
                _write_base(new, one.header, one.sections, generation, None)
            else:
                for k, (header, sections) in enumerate(split_state(one, workers)):
                    shard = new / f"shard-{k}"
                    make_private_directories(shard)
                    _own(shard, owner)      # before its base: killed here, the service's user clears it
                    header["extra"]["commit"] = commit
                    _write_base(shard, header, sections, generation, workers)
                    fsync_path(shard)
            _give_to_owner(work, owner)
            fsync_path(new)
            _write_marker(work, "READY", {"from": before, "to": workers, "commit": commit,
                                          "generation": generation})
        except BaseException:
            # before READY the old layout is the state: the partial new one goes
            if not (work / "READY").exists():
                shutil.rmtree(work, ignore_errors=True)
            raise
        _finish(directory)
        return summary
    finally:
        os.close(fd)


def _own(path: Path, owner: os.stat_result) -> None:
    """`path` to the state directory's owner and group, when root rewrites the state of a
    service that runs as another user (who could neither read root's files, 0640, nor
    finish an interrupted reshard in root's directories)."""
    if os.geteuid() != 0:
        return
    info = os.lstat(path)
    if (info.st_uid, info.st_gid) != (owner.st_uid, owner.st_gid):
        os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)


def _give_to_owner(root: Path, owner: os.stat_result) -> None:
    for path in [root, *root.rglob("*")]:
        _own(path, owner)


def _write_base(directory: Path, header: dict, sections: dict, generation: int, workers: Optional[int]) -> None:
    order = ["rows", "contacts", "windows", "timers", "funnel", "counts", "carry", "dead_run", "bad_fields",
             "budgets", "subscribers"]
    header = {k: v for k, v in header.items() if k != "sections"}
    header["generation"] = generation
    if workers is not None:
        header["workers"] = workers
    else:
        header.pop("workers", None)
    _write_full(directory / f"base-{generation:08d}", header,
                [(name, np.ascontiguousarray(sections[name])) for name in order if name in sections])
    # the new base is readable as a store's: a check before it is trusted
    read_header(directory / f"base-{generation:08d}")
    log.debug(f"{directory}: base of generation {generation:,} with {plural(len(sections['subscribers']), 'subscriber')}")
