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
"""
from __future__ import annotations

import logging
import mmap
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

from engine.api import SINK_BATCH, Engine
from engine.service.checkpoint import CheckpointStore, engine_for
from engine.errors import CheckpointError, SigmatchError
from engine.service.sources import JournalDirectory, StdinJournal, TcpJournal
from engine.sinks import SinkSet, fsync_path

__all__ = ["SpoolDaemon", "run_spool", "sd_notify"]

log = logging.getLogger("sigmatch.daemon")

# Bytes fed to the core at a time: a long spool file is checkpointed within, and SIGTERM is
# answered, between two of these
FEED_BYTES = 8 << 20
# Inside one long spool file, a checkpoint at least this often (seconds)
CHECKPOINT_WITHIN_FILE_S = 5.0
# A checkpoint is written on a second thread while the engine goes on, from a copy of what
# it holds; a full base is copied only up to this many bytes of rows (beyond, the engine
# waits for it rather than hold the state twice)
DETACHED_BASE_BYTES = 1 << 30


def _make_durable(paths: list[str]) -> None:
    """fsync files written without it, and their directories: the sealed sink files must be
    on disk, under their temporary names, before a checkpoint names them."""
    for path in paths:
        fsync_path(path)
    for directory in {os.path.dirname(path) for path in paths}:
        fsync_path(directory)


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


class SpoolDaemon:
    def __init__(self, config: Path, out: Path, state: Path, spool: Path, *,
                 format: Optional[str] = None, poll_s: float = 0.5,
                 lookup: Optional[tuple[str, int]] = None, lookup_token: Optional[str] = None,
                 metrics: Optional[tuple[str, int]] = None, idle_advance_s: Optional[float] = None,
                 stdin=None, listen: Optional[tuple[str, int]] = None, checkpoint_every_s: float = 10.0):
        self.config_path = Path(config)
        self.out = Path(out)
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
        self.store = CheckpointStore(self.state)
        self.uncommitted: list[str] = []        # spool files fed whole since the last checkpoint
        self.covered: list[str] = []            # spool files the last checkpoint covers, not yet moved
        self.resume: dict[str, int] = {}        # a spool file checkpointed part-way: its next offset
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
        # The core is fed without the GIL; readers on other threads (the lookup) hold this.
        self.lock = threading.Lock()
        self.servers: list = []

    # -- start-up

    def _restore(self) -> dict:
        """The newest usable checkpoint's extra ({} on a first start). A damaged checkpoint is
        reported and the one before it used (CheckpointStore.load)."""
        if (self.state / "checkpoint").exists() and not self.store.exists():
            raise CheckpointError(f"{self.state}: holds a checkpoint of an older sigmatch (one full file); "
                                  "this one keeps incremental checkpoints: drain with the older version, "
                                  "or move the state directory away to start afresh")
        loaded = self.store.load()
        if loaded is None:
            self.engine = Engine.from_config(self.config_path)
            return {}
        # subscribers in the checkpoint's order (it differs from the snapshot's after a reload)
        self.engine, dropped = engine_for(self.config_path, loaded)
        self.store.adopt(loaded, self.engine, rebase=dropped is not None)
        if dropped is not None:
            log.warning("the configuration, profiles or lists changed while stopped: state carried over as by a "
                        "reload (%d campaigns, %d subscribers; %d pending actions of removed campaigns dropped)",
                        len(self.engine.campaigns), len(self.engine.subscribers), dropped)
        extra = loaded.extra
        if loaded.damage or loaded.fallbacks:
            self._forget_lost_work(extra, loaded.later_extras)
        log.info("restored generation %d + %d records (clock %s, seq %s)", loaded.generation, loaded.records,
                 self.engine.clock, self.engine._core.seq)
        return extra

    def _forget_lost_work(self, extra: dict, later: list[dict]) -> None:
        """An older checkpoint than the newest is in use: the output that the newer ones
        finished goes (it is made again, the same), and their input comes back to the spool."""
        removed = SinkSet.remove_beyond(self.out, extra.get("numbering") or {})
        held = set(extra.get("covered") or []) | set(extra.get("moving") or [])
        back = 0
        for newer in later:
            for name in newer.get("moving") or []:
                if name not in held and (self.spool / "done" / name).exists() and not (self.spool / name).exists():
                    os.replace(self.spool / "done" / name, self.spool / name)
                    back += 1
        log.warning("an older checkpoint is in use: %d finished output files after it removed (to be made "
                    "again), %d spool files returned from done/", len(removed), back)

    def _roll_forward(self, extra: dict) -> None:
        SinkSet.commit(extra.get("renames", []))
        for name in extra.get("moving") or []:
            if (self.spool / name).exists():
                self._move_done(name)
        self.covered = list(extra.get("covered") or [])
        position = extra.get("position")
        if position:
            self.resume[position[0]] = int(position[1])
        # Temporary sink files not covered by the checkpoint belong to work that will be done
        # again, under the same names.
        for temp in self.out.rglob(".*.tmp"):
            temp.unlink()

    def _move_done(self, name: str) -> None:
        done = self.spool / "done"
        done.mkdir(exist_ok=True)
        os.replace(self.spool / name, done / name)

    # -- the loop

    def _pending_files(self) -> list[Path]:
        waiting = set(self.uncommitted) | set(self.covered) | self.in_flight
        files = sorted(p for p in self.spool.iterdir()
                       if p.is_file() and p.suffix == ".msgpack" and not p.name.startswith(".")
                       and p.name not in waiting)
        # a file checkpointed part-way goes on first, where it stopped
        return sorted(files, key=lambda p: p.name not in self.resume)

    def _take_records(self, flush: bool = False) -> None:
        """Take the core's records; they go to the sinks in batches of SINK_BATCH (formatting
        has a cost per call, and file boundaries are decided per record, so batching changes
        no file), and all of them with `flush` (before a checkpoint seals the files)."""
        core = self.engine._core
        for name, take in (("actions", core.take_actions), ("conversions", core.take_conversions),
                           ("dead_letters", core.take_dead_letters)):
            records = take()
            waiting = self._unwritten[name]
            if len(records):
                waiting.append(records)
            if waiting and (flush or sum(map(len, waiting)) >= SINK_BATCH):
                getattr(self.sinks, "write_" + name)(np.concatenate(waiting) if len(waiting) > 1 else waiting[0])
                waiting.clear()

    def _commit(self, position: Optional[tuple[str, int]] = None, *, wait: bool = False) -> None:
        """Seal, checkpoint, rename, move: the exactly-once step (see the module docstring)
        for the input processed since the last one; `position` is the spool file being read
        and the offset reached in it. The checkpoint is taken now and written on a second
        thread (with `wait`, or when too big to copy, before returning); the renames and
        moves follow it there. The previous one is waited for first: they stay in order."""
        self._wait_for_writer()
        covered, self.uncommitted = self.uncommitted, []
        moving, self.covered = self.covered, covered
        self._take_records(flush=True)
        renames = [[str(t), str(f)] for t, f in self.sinks.seal()]
        extra = {"renames": renames, "covered": covered, "moving": moving,
                 "position": list(position) if position else None, "numbering": self.sinks.numbering()}
        started = time.perf_counter()
        prepared = self.store.prepare(self.engine, extra, copy_limit=DETACHED_BASE_BYTES)

        def complete():
            outcome = None
            try:
                _make_durable([temp for temp, _ in renames])
                prepared.write()
                SinkSet.commit(renames)
                for name in moving:
                    if (self.spool / name).exists():
                        self._move_done(name)
            except BaseException as e:      # reported on the main thread
                outcome = e
            self._writer_outcome = (time.perf_counter() - started, outcome)

        self.last_commit = time.monotonic()
        self.sinks.write_stats(self._stats())
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
        self.in_flight = set()
        if error is not None:
            raise error
        if self.metrics is not None:
            self.metrics.observe(self.engine, checkpoint_seconds=seconds)

    def _stats(self) -> dict:
        stats = self.engine.stats
        counts = self.engine._core.counts()
        return {
            "run": {"events": counts["events"], "bad_events": counts["bad_events"],
                    "unknown_subscribers": counts["unknown_subscribers"], "pending": self.engine.pending},
            "campaigns": stats["campaigns"],
        }

    def run(self) -> int:
        for directory in (self.out, self.state):
            directory.mkdir(parents=True, exist_ok=True)
        journal_dir = None
        if self.stdin is not None or self.listen is not None:
            if self.journal_prefix and not self.spool.is_dir():
                raise FileNotFoundError(f"{self.spool}: no such spool directory")
            journal_dir = JournalDirectory(self.spool, self.journal_prefix)
        if self.stdin is not None:
            self.journal = StdinJournal(journal_dir, self.stdin)
        if not self.spool.is_dir():
            raise FileNotFoundError(f"{self.spool}: no such spool directory")
        extra = self._restore()
        self._roll_forward(extra)
        core = self.engine._core
        if not extra:
            core.begin_stream()
        output = self.engine.config.output
        # not durable here: the checkpoint thread fsyncs the sealed files (_make_durable)
        self.sinks = SinkSet(self.out, campaigns=self.engine.campaigns, format=self.format or output.format,
                             max_records=output.max_records, max_age_ms=output.max_age_ms,
                             durable=False, defer_renames=True, numbering=extra.get("numbering"))
        if self.metrics_address:
            from engine.service.metrics import DaemonMetrics
            self.metrics = DaemonMetrics(self.engine)
            host, port = self.metrics.serve(*self.metrics_address)
            self.servers.append(self.metrics)
            log.info("metrics on %s:%d", host, port)
        if self.listen is not None:
            listener = TcpJournal(journal_dir, self.listen, self.engine.config.event_types,
                                  max_event_bytes=self.engine.max_event_bytes, metrics=self.metrics).start()
            self.servers.append(listener)
            log.info("listening on %s:%d", *listener.address[:2])
        if self.lookup:
            from engine.service.lookup import LookupServer
            server = LookupServer(self._view, *self.lookup, token=self.lookup_token,
                                  metrics=self.metrics).start()
            self.servers.append(server)
            log.info("lookup on %s:%d", *server.address[:2])
        log.info("running: spool %s, output %s", self.spool, self.out)
        sd_notify("READY=1")
        # systemd's watchdog (WatchdogSec=): ping at half the interval it gave us
        watchdog_s = int(os.environ.get("WATCHDOG_USEC", "0")) / 2e6
        last_ping = 0.0
        if self.journal is not None:
            self.journal.start()
        last_input = time.monotonic()
        while not self.stop.is_set():
            if watchdog_s and time.monotonic() - last_ping >= watchdog_s:
                sd_notify("WATCHDOG=1")
                last_ping = time.monotonic()
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self._reload()
            files = self._pending_files()
            if (not files and self.journal is not None and self.journal.finished.is_set()
                    and self.listen is None and not self.journal_prefix):
                # standard input was the one source: the service's work is done
                files = self._pending_files()       # the last journal file may have just landed
                if not files:
                    log.info("standard input ended and is processed")
                    break
            if not files:
                if self.uncommitted or self.covered:
                    # a quiet spool: what is processed becomes durable, and the spool files
                    # move to done/ (after a second, nearly empty checkpoint)
                    with self.lock:
                        self._commit()
                        if self.covered:
                            self._commit()
                        self._wait_for_writer()
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
        sd_notify("STOPPING=1")
        with self.lock:
            self._commit(self._position, wait=True)
            if self.covered:
                # a second, nearly empty one moves the spool files the first covers
                self._commit(self._position, wait=True)
        for server in self.servers:
            server.close()
        log.info("stopped: checkpoint written, %d pending actions kept", self.engine.pending)
        return 0

    def _process_file(self, path: Path) -> None:
        """Feed one spool file in pieces, checkpointing inside it when it takes long; stops
        part-way (its position kept for the final checkpoint) when asked to stop."""
        within_s = self.checkpoint_every_s or CHECKPOINT_WITHIN_FILE_S
        offset = self.resume.pop(path.name, 0)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            # mapped, not read: the decoder works on the page cache with no copy
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > offset else None
        try:
            view = memoryview(mapped) if mapped is not None else memoryview(b"")
            while offset < size:
                piece = view[offset:offset + FEED_BYTES]
                with self.lock:
                    core = self.engine._core      # a reload replaces the engine
                    status = core.feed(piece)
                    # taken as they come, as replay does (the core's buffers stay small
                    # and warm), and handed to the sinks in batches
                    self._take_records()
                    if self.metrics is not None:
                        self.metrics.observe(self.engine, input_bytes=len(piece))
                piece.release()
                if offset % mmap.PAGESIZE == 0:
                    # pages decoded are handed back: a long file does not stay resident
                    mapped.madvise(mmap.MADV_DONTNEED, offset, min(FEED_BYTES, size - offset))
                offset = min(size, offset + FEED_BYTES)
                if status:
                    # The stream cannot be decoded past this point: report it, keep what came
                    # before, and start a new stream with the next file.
                    log.error("%s: corrupt event stream at byte offset %d (status %d); skipped the rest",
                              path.name, core.error_offset, status)
                    with self.lock:
                        core.begin_stream()
                    break
                if offset == size:
                    break
                if self.stop.is_set():
                    self._position = (path.name, offset)    # for the final checkpoint
                    return
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    self._reload((path.name, offset))
                elif time.monotonic() - self.last_commit >= within_s:
                    with self.lock:
                        self._commit((path.name, offset))
        finally:
            view.release()
            if mapped is not None:
                mapped.close()
        self._position = None
        self.uncommitted.append(path.name)
        if self.checkpoint_every_s and time.monotonic() - self.last_commit < self.checkpoint_every_s:
            return
        with self.lock:
            self._commit()

    def _reload(self, position: Optional[tuple[str, int]] = None) -> None:
        """SIGHUP: configuration, profiles, lists and areas read again; state carried over by
        subscriber, campaign id and counter name. A new configuration that does not load is
        rejected and the running one goes on. `position`: where a spool file being read stands."""
        with self.lock:
            self._commit(position)
            try:
                new = self.engine.reload(self.config_path)
            except (SigmatchError, OSError, ValueError) as e:
                log.error("reload rejected, the running configuration goes on: %s", str(e).splitlines()[0])
                return
            self.engine = new
            output = new.config.output
            self.sinks = SinkSet(self.out, campaigns=new.campaigns, format=self.format or output.format,
                                 max_records=output.max_records, max_age_ms=output.max_age_ms,
                                 durable=False, defer_renames=True, numbering=self.sinks.numbering())
            self._commit(position)
        log.warning("reloaded %s: %d campaigns, %d subscribers; %d pending actions of removed campaigns dropped",
                    self.config_path, len(new.campaigns), len(new.subscribers), new.reload_dropped)

    def _advance_to_wall_clock(self) -> None:
        """A quiet spool: event time moves on with the wall clock so that delayed actions
        still go out (only with --idle-advance)."""
        with self.lock:
            core = self.engine._core
            before = core.seq
            core.advance(int(time.time() * 1000))
            if core.seq != before:
                # what went out is made durable, exactly once, like any other output
                self._commit()

    def _view(self, msisdn: int):
        from engine.service.lookup import policy_view
        with self.lock:
            return policy_view(self.engine, msisdn)


def run_spool(config: Path, out: Path, state: Path, spool: Path, **options) -> int:
    daemon = SpoolDaemon(config, out, state, spool, **options)
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop.set())
    signal.signal(signal.SIGHUP, lambda *_: daemon.reload_requested.set())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop.set())
    return daemon.run()
