"""Simulate before approving (issue 13 §4): `sigmatch diff LIVE DRAFT TRACE --json` of a
version's text against the live configuration, in the background, in a queue.

    queue = SimulationQueue(records, config_path, trace_dir, slots=1)
    sim = queue.submit(version_id=7, draft_text=text, trace="trace.msgpack", author="ana")
    queue.get(sim).progress        # 0.0 .. 1.0 while it runs (None before the first figure)
    queue.get(sim).result          # the diff's --json document once `status` is "done"
    latest_simulation(records, 7)  # what the approver of version 7 sees
    queue.close()                  # the console stops: running ones are ended, queued ones cancelled

One what-if of a province-sized world holds two engines in memory, so simulations wait in a
queue and `slots` (`--simulations N`, default 1) run at once, each `sigmatch diff` in a child
process of its own. Progress is the share of the trace's bytes the live side has replayed,
read from the diff's progress bar on the child's stderr; the last other line there is the
reason when it fails. The child ends itself when its standard input closes, so a console that
is killed (even with SIGKILL) leaves no simulation running behind it.

Both configurations are written beside the live file (its relative paths resolve against its
folder) as hidden files, mode 0640, removed when the child ends: the live side is the live
text as it was when the simulation was asked for, so an approval in between changes nothing.

Where simulations are kept is a small interface, `SimulationRecords`: `StoreSimulationRecords`
keeps them in the console's SQLite store, `MemorySimulationRecords` in a dict (tests,
scripts). A record is a dict:

    {"id": int, "version_id": int | None, "trace": name, "author": user name,
     "status": "queued" | "running" | "done" | "failed" | "cancelled",
     "created": s, "started": s | None, "finished": s | None (seconds since the epoch),
     "progress": 0..1, "error": one line | None,
     "result": the --json document (a JSON text in the store) | None}

The result's sides carry the sha256 of the two texts compared (`result["a"]["sha256"]` is
the live file's as it was), so a page can say when the live file has changed since.

Times are the console's wall clock: when a what-if ran is bookkeeping, never an outcome.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import queue as queue_module
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

from engine.privacy import scrub
from engine.sinks import write_private

__all__ = ["STATUSES", "FINISHED", "CANCELLING", "Simulation", "SimulationRecords", "MemorySimulationRecords",
           "StoreSimulationRecords", "SimulationQueue", "SimulationError", "TraceFile", "list_traces", "resolve_trace",
           "latest_simulation"]

log = logging.getLogger("sigmatch.console.simulate")

STATUSES = ("queued", "running", "done", "failed", "cancelled")
UPDATABLE = frozenset({"status", "started", "finished", "progress", "error", "result"})
FINISHED = ("done", "failed", "cancelled")
# the status a page shows of a running simulation whose cancel was asked and whose child has
# not stopped yet (never a record's: the record says "cancelled" once the worker sees it end)
CANCELLING = "cancelling"

# How long an ended child gets to stop after SIGTERM (it terminates its two replays) before SIGKILL
STOP_GRACE_S = 10.0
# Lines of a child's stderr kept to name why it failed (progress-bar frames are not kept)
KEPT_LINES = 20
# tqdm's left bar: "replay:  42%|" (diff shows the live side's bar alone: both replay the same trace)
_PERCENT = re.compile(rb"(\d{1,3})%\|")
_ERROR_PREFIX = "sigmatch: error: "

# The child: `sigmatch diff` as the CLI runs it, plus a thread that ends it when the console's
# end of its standard input closes (the console stopped, however it stopped). SIGTERM, not
# an exit: diff's own handler then ends both replay processes too.
_CHILD = """\
import os, signal, sys, threading
def _watch_parent():
    while os.read(0, 1 << 16):      # the fd, not sys.stdin: its lock would hold up the exit
        pass
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=_watch_parent, name="sigmatch-simulation-parent", daemon=True).start()
from engine.cli import main
main(["diff", *sys.argv[1:], "--json", "--progress"], prog_name="sigmatch")
"""


class SimulationError(ValueError):
    """A simulation that cannot be asked for (an unknown trace, a closed queue); one line."""


# --------------------------------------------------------------------------- traces

# What a trace is named (replay decompresses *.gz); anything else under --trace-dir (a
# README, a configuration, the profiles of a generated world) is not offered
TRACE_SUFFIXES = (".msgpack", ".msgpack.gz")


def _is_trace_name(name: str) -> bool:
    return not name.startswith(".") and name.endswith(TRACE_SUFFIXES)


@dataclass(frozen=True)
class TraceFile:
    """One trace offered under `--trace-dir`: a *.msgpack[.gz] file, or a folder whose
    *.msgpack[.gz] files are replayed in name order as one stream (a day of a probe's spool)."""
    name: str                   # relative to the trace directory, as the form sends it
    paths: tuple[Path, ...]
    bytes: int
    modified: float             # seconds since the epoch


def list_traces(trace_dir: Optional[Path]) -> list[TraceFile]:
    """The traces under `trace_dir` by name: its *.msgpack[.gz] files and its folders that
    hold such files, hidden names left out. [] when no directory is given; OSError when it
    cannot be read."""
    if trace_dir is None:
        return []
    found = []
    for entry in sorted(os.scandir(trace_dir), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_file(follow_symlinks=True):
            if _is_trace_name(entry.name):
                st = entry.stat()
                found.append(TraceFile(entry.name, (Path(entry.path),), st.st_size, st.st_mtime))
        elif entry.is_dir(follow_symlinks=True):
            parts = sorted(p for p in Path(entry.path).iterdir() if _is_trace_name(p.name) and p.is_file())
            if parts:
                stats = [p.stat() for p in parts]
                found.append(TraceFile(entry.name, tuple(parts), sum(s.st_size for s in stats),
                                       max(s.st_mtime for s in stats)))
    return found


def resolve_trace(trace_dir: Optional[Path], name: str) -> TraceFile:
    """The trace called `name` under `trace_dir`: only a name `list_traces` offers is taken,
    so a form cannot reach outside the directory (`../`, an absolute path, a link's name
    that is not listed). SimulationError naming it otherwise, or the directory when it cannot
    be read."""
    if trace_dir is None:
        raise SimulationError("no --trace-dir was given to the console: there are no traces to simulate on")
    try:
        offered = list_traces(trace_dir)
    except OSError as e:
        raise SimulationError(f"--trace-dir {trace_dir}: cannot be read ({e.strerror or e})") from None
    for trace in offered:
        if trace.name == name:
            return trace
    raise SimulationError(f"--trace-dir {trace_dir}: no trace {scrub(name)!r}")


# --------------------------------------------------------------------------- records

class SimulationRecords(Protocol):
    """Where simulations are kept (the console's store). Every method may be called from the
    queue's threads: an implementation serialises its own access."""

    def add_simulation(self, *, version_id: Optional[int], trace: str, author: str, created: float) -> int:
        """A new record with status "queued"; its id."""

    def update_simulation(self, simulation_id: int, **fields) -> None:
        """Set some of: status, started, finished, progress, error, result (a dict, or None)."""

    def get_simulation(self, simulation_id: int) -> Optional[dict]:
        """The record (shape in the module docstring), None when there is none."""

    def list_simulations(self, version_id: Optional[int] = None, limit: Optional[int] = None) -> list[dict]:
        """Records, newest first; of one version when given; the first `limit` when given."""


class MemorySimulationRecords:
    """SimulationRecords in a dict: for tests and for a console without a store."""

    def __init__(self):
        self._lock = threading.Lock()
        self._records: dict[int, dict] = {}

    def add_simulation(self, *, version_id, trace, author, created) -> int:
        with self._lock:
            simulation_id = len(self._records) + 1
            self._records[simulation_id] = {
                "id": simulation_id, "version_id": version_id, "trace": trace, "author": author,
                "status": "queued", "created": created, "started": None, "finished": None,
                "progress": 0.0, "error": None, "result": None}
            return simulation_id

    def update_simulation(self, simulation_id: int, **fields) -> None:
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise ValueError(f"not a field of a simulation: {', '.join(sorted(unknown))}")
        with self._lock:
            self._records[simulation_id].update(fields)

    def get_simulation(self, simulation_id: int) -> Optional[dict]:
        with self._lock:
            record = self._records.get(simulation_id)
            return None if record is None else dict(record)

    def list_simulations(self, version_id: Optional[int] = None, limit: Optional[int] = None) -> list[dict]:
        with self._lock:
            found = [dict(r) for r in sorted(self._records.values(), key=lambda r: -r["id"])
                     if version_id is None or r["version_id"] == version_id]
            return found if limit is None else found[:limit]


class StoreSimulationRecords:
    """SimulationRecords on the console's store (engine/console/store.py), its `simulations`
    table: `version`, `trace`, `requested_by`, `requested_at`, `state`, `progress`,
    `started_at`, `finished_at` (ISO 8601 UTC to the second), `result` (JSON text), `error`.
    `store` needs `query(sql, params)` and `execute(sql, params)` only."""

    _COLUMNS = {"status": "state", "started": "started_at", "finished": "finished_at", "progress": "progress",
                "error": "error", "result": "result"}

    def __init__(self, store):
        self.store = store

    def add_simulation(self, *, version_id, trace, author, created) -> int:
        return self.store.execute("INSERT INTO simulations (version, trace, requested_by, requested_at, state, "
                                  "progress) VALUES (?, ?, ?, ?, 'queued', 0)",
                                  (version_id, trace, author, _iso(created)))

    def update_simulation(self, simulation_id: int, **fields) -> None:
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise ValueError(f"not a field of a simulation: {', '.join(sorted(unknown))}")
        values = []
        for key, value in fields.items():
            if key in ("started", "finished"):
                value = _iso(value)
            elif key == "result" and value is not None:
                value = json.dumps(value, ensure_ascii=False)
            values.append(value)
        if values:
            assignments = ", ".join(f"{self._COLUMNS[key]} = ?" for key in fields)
            self.store.execute(f"UPDATE simulations SET {assignments} WHERE id = ?", (*values, simulation_id))

    def get_simulation(self, simulation_id: int) -> Optional[dict]:
        rows = self.store.query("SELECT * FROM simulations WHERE id = ?", (simulation_id,))
        return self._record(rows[0]) if rows else None

    def list_simulations(self, version_id: Optional[int] = None, limit: Optional[int] = None) -> list[dict]:
        where, params = ("", ()) if version_id is None else (" WHERE version = ?", (version_id,))
        if limit is not None:
            params += (int(limit),)
        rows = self.store.query(f"SELECT * FROM simulations{where} ORDER BY id DESC"
                                + (" LIMIT ?" if limit is not None else ""), params)
        return [self._record(row) for row in rows]

    @staticmethod
    def _record(row: dict) -> dict:
        return {"id": row["id"], "version_id": row["version"], "trace": row["trace"], "author": row["requested_by"],
                "status": row["state"], "created": _epoch(row["requested_at"]), "started": _epoch(row["started_at"]),
                "finished": _epoch(row["finished_at"]), "progress": row["progress"], "error": row["error"],
                "result": row["result"]}


_ISO = "%Y-%m-%dT%H:%M:%SZ"


def _iso(seconds: Optional[float]) -> Optional[str]:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(_ISO)


def _epoch(text: Optional[str]) -> Optional[float]:
    if not text:
        return None
    return datetime.datetime.strptime(text, _ISO).replace(tzinfo=datetime.timezone.utc).timestamp()


@dataclass(frozen=True)
class Simulation:
    """A record as the pages show it, with the progress of one that runs now."""
    id: int
    version_id: Optional[int]
    trace: str
    author: str
    status: str
    created: float
    started: Optional[float]
    finished: Optional[float]
    error: Optional[str]
    result: Optional[dict]
    progress: Optional[float] = None        # 0..1 while running (None: no figure yet); 1 when done
    position: Optional[int] = None          # while queued: how many wait before it (0: next)

    @classmethod
    def of(cls, record: dict, progress: Optional[float] = None, position: Optional[int] = None,
           cancelling: bool = False) -> "Simulation":
        """From a record (its result parsed when it is JSON text); `progress` and `position`
        as the queue knows them now; `cancelling`: its cancel was asked, so an unfinished one
        shows CANCELLING (no Cancel button beside "cancelled" in the flash)."""
        result = record.get("result")
        if isinstance(result, (str, bytes)):
            result = json.loads(result)
        if progress is None and record["status"] == "running":
            progress = record.get("progress") or None
        if record["status"] == "done":
            progress = 1.0
        status = CANCELLING if cancelling and record["status"] not in FINISHED else record["status"]
        return cls(record["id"], record.get("version_id"), record["trace"], record["author"], status,
                   record["created"], record.get("started"), record.get("finished"), record.get("error"), result,
                   progress, position)

    @property
    def live_sha256(self) -> Optional[str]:
        """The sha256 of the live text it compared against (None until it is done)."""
        return (self.result or {}).get("a", {}).get("sha256")

    @property
    def draft_sha256(self) -> Optional[str]:
        return (self.result or {}).get("b", {}).get("sha256")


def latest_simulation(records: SimulationRecords, version_id: int) -> Optional[Simulation]:
    """The newest simulation of a version (the one its approver sees), None when none was run."""
    found = records.list_simulations(version_id, limit=1)
    return Simulation.of(found[0]) if found else None


# --------------------------------------------------------------------------- the queue

def sha256_text(text: str) -> str:
    """The sha256 (hex) of a configuration text's UTF-8 bytes, as the service and stats.json
    hash the file."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class _Job:
    id: int
    live_text: str
    draft_text: str
    trace: TraceFile
    label: str                              # how the draft side is named in the result
    process: Optional[subprocess.Popen] = None
    progress: Optional[float] = None
    cancelled: bool = False


class SimulationQueue:
    """Simulations of drafts against the live configuration, `slots` at a time.

    `records`: where they are kept. `config_path`: the live CONFIG (drafts are written beside
    it). `trace_dir`: where traces are picked from. `python`: the interpreter of the child
    processes (default this one). `wall`: the clock of the records' times."""

    def __init__(self, records: SimulationRecords, config_path: Path, trace_dir: Optional[Path], *,
                 slots: int = 1, python: str = sys.executable, wall: Callable[[], float] = time.time):
        if not isinstance(slots, int) or slots < 1:
            raise ValueError(f"--simulations must be at least 1, not {slots!r}")
        self.records = records
        self.config_path = Path(config_path)
        self.trace_dir = Path(trace_dir) if trace_dir is not None else None
        self.slots = slots
        self.python = python
        self._wall = wall
        self._lock = threading.Lock()
        self._waiting: queue_module.Queue = queue_module.Queue()
        self._queued: list[int] = []                # ids in the order they wait
        self._jobs: dict[int, _Job] = {}            # queued or running
        self._closed = False
        # records a previous console left unfinished (it stopped while they waited or ran)
        for record in records.list_simulations():
            if record["status"] not in FINISHED:
                records.update_simulation(record["id"], status="failed", finished=record.get("started")
                                          or record["created"], error="the console stopped before it ended")
                # a console killed (kill -9) left its texts beside the live file (helper-123)
                self._remove_texts(record["id"])
        self._threads = [threading.Thread(target=self._work, name=f"sigmatch-simulation-{i + 1}", daemon=True)
                         for i in range(slots)]
        for thread in self._threads:
            thread.start()

    def submit(self, *, version_id: Optional[int], draft_text: str, trace: str, author: str,
               live_text: Optional[str] = None, label: Optional[str] = None) -> int:
        """Queue `draft_text` against `live_text` (default: the live file as it is now) on the
        trace named `trace`; the simulation's id. SimulationError when the trace is not one
        of --trace-dir's or the queue is closed; OSError when the live file cannot be read."""
        found = resolve_trace(self.trace_dir, trace)
        if live_text is None:
            live_text = self.config_path.read_text(encoding="utf-8-sig")
        with self._lock:
            if self._closed:
                raise SimulationError("the console is stopping: no new simulation")
            simulation_id = self.records.add_simulation(version_id=version_id, trace=found.name, author=author,
                                                        created=self._wall())
            job = _Job(simulation_id, live_text, draft_text, found,
                       label or (f"version {version_id}" if version_id is not None else "draft"))
            self._jobs[simulation_id] = job
            self._queued.append(simulation_id)
        self._waiting.put(job)
        log.info("simulation %d of %s on %s queued by %s", simulation_id, job.label, found.name, author)
        return simulation_id

    def get(self, simulation_id: int) -> Optional[Simulation]:
        """The simulation as it stands (progress while it runs, place in the queue while it
        waits); None when there is none."""
        with self._lock:
            job = self._jobs.get(simulation_id)
            progress = job.progress if job is not None else None
            position = self._queued.index(simulation_id) if simulation_id in self._queued else None
            cancelling = job is not None and job.cancelled
        # the record after the job: _finish writes it before it lets the job go, so a job gone
        # means a finished record here (a running record without its job showed a Cancel button)
        record = self.records.get_simulation(simulation_id)
        if record is None:
            return None
        return Simulation.of(record, progress, position, cancelling)

    def cancel(self, simulation_id: int) -> bool:
        """Cancel a queued or running simulation (a running one's child is ended); False when
        it had finished already or is unknown."""
        with self._lock:
            job = self._jobs.get(simulation_id)
            if job is None or job.cancelled:
                return False
            job.cancelled = True
            process = job.process
            if simulation_id in self._queued:
                self._queued.remove(simulation_id)
                del self._jobs[simulation_id]
                self.records.update_simulation(simulation_id, status="cancelled", finished=self._wall())
                return True
        if process is not None:
            _stop(process)
        return True

    def close(self, timeout: float = STOP_GRACE_S + 5) -> None:
        """Stop: queued simulations are cancelled, running ones ended (their children get
        SIGTERM, then SIGKILL after STOP_GRACE_S) and marked cancelled; returns when the
        workers have stopped or `timeout` seconds passed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            ids = list(self._jobs)
        for simulation_id in ids:
            self.cancel(simulation_id)
        for _ in self._threads:
            self._waiting.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "SimulationQueue":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the workers

    def _work(self) -> None:
        while True:
            job = self._waiting.get()
            if job is None:
                return
            with self._lock:
                if job.cancelled or self._closed:
                    continue
                self._queued.remove(job.id)
            try:
                self._run(job)
            except Exception as e:      # noqa: BLE001 - a worker outlives any one simulation
                log.exception("simulation %d failed", job.id)
                self._finish(job, "failed", error=f"{type(e).__name__}: {scrub(str(e))}"[:500])

    def _finish(self, job: _Job, status: str, *, error: Optional[str] = None, result: Optional[dict] = None) -> None:
        with self._lock:
            if job.cancelled and status != "done":
                status, error = "cancelled", None
        try:
            self.records.update_simulation(job.id, status=status, finished=self._wall(), error=error, result=result)
        finally:
            with self._lock:
                self._jobs.pop(job.id, None)
        log.info("simulation %d %s%s", job.id, status, f": {error}" if error else "")

    def _texts(self, simulation_id: int) -> tuple[Path, Path]:
        """Where simulation `simulation_id` writes the live and the draft text: hidden files
        beside the live file, so that the paths they name resolve as the live file's do."""
        folder, stem = self.config_path.parent, self.config_path.stem
        return (folder / f".{stem}.simulation-{simulation_id}-live.toml",
                folder / f".{stem}.simulation-{simulation_id}-draft.toml")

    def _remove_texts(self, simulation_id: int) -> None:
        for path in self._texts(simulation_id):
            for each in (path, path.with_name(path.name + ".part")):
                try:
                    each.unlink(missing_ok=True)
                except OSError as e:
                    log.warning("%s: cannot remove a simulation's text: %s", each, e.strerror or e)

    def _run(self, job: _Job) -> None:
        live, draft = self._texts(job.id)
        try:
            for path, text in ((live, job.live_text), (draft, job.draft_text)):
                write_private(path.with_name(path.name + ".part"), path, text.encode("utf-8"))
            command = [self.python, "-c", _CHILD, str(live), str(draft), *map(str, job.trace.paths)]
            env = dict(os.environ)
            # the child imports this very engine, installed or not
            root = str(Path(__file__).resolve().parent.parent.parent)
            env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
            with self._lock:
                if job.cancelled:
                    return self._finish(job, "cancelled")
                # its own session: Ctrl-C in the console's terminal reaches the console, which ends it
                job.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                               stderr=subprocess.PIPE, env=env, start_new_session=True)
            self.records.update_simulation(job.id, status="running", started=self._wall())
            out, lines = self._follow(job)
            code = job.process.wait()
            if job.cancelled:
                return self._finish(job, "cancelled")
            if code != 0:
                return self._finish(job, "failed", error=_reason(lines, code, (live, draft)))
            try:
                document = json.loads(out)
            except ValueError:
                return self._finish(job, "failed", error="sigmatch diff wrote no JSON document")
            return self._finish(job, "done", result=_labelled(document, job))
        finally:
            self._remove_texts(job.id)

    def _follow(self, job: _Job) -> tuple[bytes, list[str]]:
        """The child's stdout (the JSON document) and the last lines of its stderr, reading
        the progress bar's percentages into `job.progress` as they come."""
        process = job.process
        chunks: list[bytes] = []
        reader = threading.Thread(target=lambda: chunks.append(process.stdout.read()), daemon=True)
        reader.start()
        lines: list[str] = []
        pending = b""
        while True:
            data = process.stderr.read1(1 << 16)
            if not data:
                break
            pending += data
            *complete, pending = re.split(rb"[\r\n]", pending)
            for piece in complete:
                self._take_line(job, piece, lines)
        if pending:
            self._take_line(job, pending, lines)
        reader.join()
        # the child's stdin stays open until here: closing it is what tells the child to end
        process.stdin.close()
        return b"".join(chunks), lines

    def _take_line(self, job: _Job, piece: bytes, lines: list[str]) -> None:
        share = _take_percent(piece)
        if share is not None:
            if share != job.progress:
                # a frame every 0.1 s at most, a new percentage rarer: one small write each
                job.progress = share
                self.records.update_simulation(job.id, progress=share)
            return
        text = piece.decode("utf-8", "replace").strip()
        if text:
            lines.append(text)
            del lines[:-KEPT_LINES]


def _take_percent(piece: bytes) -> Optional[float]:
    """The share (0..1) a frame of the progress bar shows, None when `piece` is no frame."""
    found = _PERCENT.search(piece)
    return None if found is None else min(100, int(found.group(1))) / 100


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (diff ends its two replays), SIGKILL to its process group when it still runs
    STOP_GRACE_S later. Returns at once: the worker that waits on it records the end."""
    try:
        process.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        return

    def kill():
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    timer = threading.Timer(STOP_GRACE_S, kill)
    timer.daemon = True
    timer.start()


def _reason(lines: Sequence[str], code: int, temporary: Sequence[Path]) -> str:
    """One line saying why a child failed: its error line, with the temporary files named as
    the sides they stand for."""
    errors = [line for line in lines if line.startswith(_ERROR_PREFIX)]
    reason = errors[-1][len(_ERROR_PREFIX):] if errors else (lines[-1] if lines else f"sigmatch diff exited with {code}")
    for path, side in zip(temporary, ("the live configuration", "the draft")):
        reason = reason.replace(str(path), side)
    return scrub(reason)[:1000]


def _labelled(document: dict, job: _Job) -> dict:
    """The diff's document with its sides and traces named as the console names them (the
    temporary files' paths mean nothing once they are gone)."""
    for side, label in (("a", "live"), ("b", job.label)):
        if isinstance(document.get(side), dict):
            document[side]["config"] = label
    document["traces"] = [job.trace.name]
    return document
