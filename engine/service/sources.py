"""The daemon's sources besides a probes' spool: standard input and TCP producers, each
journaled into numbered, fsynced files that the daemon then processes like a spool
(engine.service.daemon), so that a crash loses nothing journaled.

TCP producers (SPEC §5): a producer sends a msgpack event stream and half-closes its
connection (shutdown(SHUT_WR)); the service journals the complete events it holds (fsynced,
renamed, the directory fsynced), answers with the number of that connection's bytes
journaled durably (8 bytes, big-endian unsigned: ANSWER) and closes. Bytes after the last
complete event are neither journaled nor counted. A connection the service ends itself (idle,
at the connection bound, a stream that is not msgpack, the service stopping) gets the same
answer, best effort: a producer still writing may see a reset first. engine.service.client
is the producer's side.
"""
from __future__ import annotations

import collections
import logging
import queue
import os
import selectors
import select
import socket
import struct
import threading
import time
from pathlib import Path
from typing import NamedTuple, Optional

from engine.service.serving import listening_socket, reserve_descriptors
from engine.sinks import fsync_path, make_private_directories, write_private

__all__ = ["JournalDirectory", "StdinJournal", "TcpJournal", "Listen", "ANSWER", "TCP_DROP_REASONS",
           "IDLE_TIMEOUT_S", "MAX_CONNECTIONS"]

log = logging.getLogger("sigmatch.daemon")

# The answer to a producer's half-close: its bytes journaled durably
ANSWER = struct.Struct(">Q")

# `--idle-timeout`: a connection silent this long is closed (its complete events journaled
# and answered). Long enough for a producer that batches every few minutes, short enough that
# forgotten connections do not pile up to the bound.
IDLE_TIMEOUT_S = 300.0
# `--max-connections`: at the bound, the longest-idle connection makes room for a new one
MAX_CONNECTIONS = 64

# Why the service ends a producer's connection (metrics label values):
#   idle          silent for --idle-timeout
#   bound         --max-connections were open: the longest-idle one went for a newcomer
#   not_msgpack   the stream cannot be decoded (its events before the bad one are journaled)
#   too_large     an event (or a value's length header) longer than max_event_bytes
#   not_events    msgpack, but more than JUNK_BYTES of values that are no events (neither
#                 arrays nor maps) without an event among them: a producer sending them would
#                 fill the journal's disk with files the spool sets aside (loaders.sniff)
#   buffer_bound  more bytes buffered than one event can take
TCP_DROP_REASONS = ("idle", "bound", "not_msgpack", "too_large", "not_events", "buffer_bound")

# values that are no events a TCP connection may send without an event among them (journal_events)
JUNK_BYTES = 64 << 10

# a stream's break (the core's status) as a drop reason
_BREAK_REASONS = {1: "not_msgpack", 2: "too_large"}

# After the answer to a connection the service ends, how long it waits for the producer's
# side to close before closing its own: closing with unread bytes sends a reset, which can
# destroy the answer in flight. The accept thread does the waiting, for all of them, so a
# flood of connections ended at the bound costs no thread each; beyond _MAX_LINGERING the
# oldest is closed at once.
_ANSWER_LINGER_S = 1.0
_MAX_LINGERING = 1024
# close(): how long the producers' threads get to journal and answer before the service exits
_CLOSE_WAIT_S = 3.0


class JournalDirectory:
    """Numbered journal files that the daemon processes like a spool: each written whole
    under a temporary name, fsynced, renamed, and the directory fsynced, so that a crash
    loses nothing journaled and what `write` returned from is on disk. One numbering for
    every journaling source (stdin, each TCP connection): the numbers are the order in which
    their bytes arrived. `prefix` names them inside a probes' spool. Files are created
    FILE_MODE (0640) and directories DIR_MODE (0750) whatever the umask: journals hold raw
    events, full numbers included."""

    def __init__(self, directory: Path, prefix: str = ""):
        self.directory = directory
        self.prefix = prefix
        self.lock = threading.Lock()
        make_private_directories(directory)
        for temp in directory.glob(f".{prefix}*.part"):
            if temp.name[len(prefix) + 1:len(prefix) + 13].isdigit():
                temp.unlink()      # bytes of a crashed journal file were never acknowledged
        numbers = [int(p.stem[len(prefix):]) for d in (directory, directory / "done") if d.is_dir()
                   for p in d.glob(f"{prefix}*.msgpack") if p.stem[len(prefix):].isdigit()]
        self.number = max(numbers, default=0)

    def write(self, data: bytes) -> None:
        """Journal `data` as the next file; on return it is durable. OSError (ENOSPC, EIO)
        leaves nothing behind."""
        with self.lock:
            self.number += 1
            final = self.directory / f"{self.prefix}{self.number:012d}.msgpack"
            write_private(self.directory / f".{final.name}.part", final, data)
            fsync_path(self.directory)      # the rename too, before a producer is told


def journal_events(journal: JournalDirectory, pending: bytearray, decoder, *,
                   junk: Optional[list] = None) -> tuple[int, Optional[str]]:
    """Journal the complete events at the front of `pending` (`decoder`: a Core with the
    engine's event types and bound) and remove them; returns (bytes journaled, None or why
    the stream is broken after them: "not_msgpack", "too_large", or "not_events"). What
    both stdin and a TCP connection journal: whole events.

    `junk` ([bytes], a TCP connection's): the bytes of values that are no events (neither
    arrays nor maps) journaled since its last event. A stray one (a newline after a file, a
    heartbeat) is journaled as before, a dead letter; past JUNK_BYTES without an event the
    connection is "not_events" and nothing more of it is journaled: zero bytes sent on and
    on were journaled and set aside file after file until the disk was full (helper-120)."""
    good, status, stopped = decoder.decode(pending, keep=False)
    # dead letters are the daemon's, when it processes the journal
    dead = decoder.take_dead_letters()
    cut = len(pending) if status == 0 else (stopped or 0)
    if junk is not None and cut:
        if good or (len(dead) and dead["reason"].any()):        # an event, or one shaped as one (0: not_an_event)
            junk[0] = 0
        elif junk[0] + cut > JUNK_BYTES:
            return 0, "not_events"
        else:
            junk[0] += cut
    if cut:
        journal.write(bytes(pending[:cut]))
        del pending[:cut]
    return cut, _BREAK_REASONS.get(status)


class StdinJournal(threading.Thread):
    """Standard input, journaled every `every_s` (or `max_bytes`) up to its last complete
    event, as a TCP connection's bytes are (TcpJournal): every journal file starts and ends
    at an event's edge, so a file from another source numbered between two of them (the
    journal has one numbering) never falls inside an event, and what the checkpoint keeps
    of a file is never half an event. Bytes that are no msgpack event stream go to the
    journal as they are, for the daemon to judge as it judges a spool file. At the end of
    input, `left` says how many bytes of an event cut short were not taken.

    `stream` is a binary file object (sys.stdin.buffer): its file descriptor is read with
    os.read after select, so that the flush comes on time while no byte arrives, and so
    that the interpreter's exit does not wait for the buffered reader's lock."""

    def __init__(self, journal: JournalDirectory, stream, event_types=None, *, max_event_bytes: int = 1 << 20,
                 every_s: float = 0.5, max_bytes: int = 16 << 20, only_source: bool = False):
        super().__init__(name="stdin-journal", daemon=True)
        # the one source: the service ends with standard input, and an event cut short by its
        # end is the service's error (exit 1, said once, as replay says it); beside other
        # sources it is logged and the service goes on
        self.only_source = only_source
        self.cut: Optional[str] = None
        self.journal = journal
        self.stream = stream
        self.event_types = dict(event_types or {})
        self.max_event_bytes = max_event_bytes
        self.every_s = every_s
        self.max_bytes = max_bytes
        self.left = 0
        # why reading stopped before the end of the stream (a reset socket, an I/O error): the
        # service processes what was journaled, then fails with this line
        self.error: Optional[str] = None
        self.finished = threading.Event()

    def _reader(self):
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        if fd is None:      # a stream without a descriptor (tests): blocking reads
            read = getattr(self.stream, "read1", self.stream.read)
            return lambda timeout: read(1 << 20)

        def read(timeout: float):
            ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
            return os.read(fd, 1 << 20) if ready else None
        return read

    def run(self) -> None:
        from engine._core import Core
        decoder = Core(self.max_event_bytes)
        decoder.set_event_types(self.event_types)
        read = self._reader()
        pending = bytearray()
        broken = False
        received = 0
        try:
            eof = False
            while not eof:
                started = time.monotonic()
                while len(pending) < self.max_bytes:
                    left_s = self.every_s - (time.monotonic() - started)
                    if left_s <= 0:
                        break
                    try:
                        chunk = read(left_s)
                    except OSError as e:
                        self.error = (f"standard input: cannot be read after {received:,} bytes "
                                      f"({e.strerror or e}); what came before it is processed")
                        log.error(self.error)
                        eof = True
                        break
                    if chunk is None:
                        break           # nothing came in time: the flush is due
                    if not chunk:
                        eof = True
                        break
                    pending += chunk
                    received += len(chunk)
                if pending and not broken:
                    _, broken = journal_events(self.journal, pending, decoder)
                if pending and broken:
                    # past a break: the rest as it came, for the daemon to judge as a spool file
                    self.journal.write(bytes(pending))
                    pending.clear()
            self.left = len(pending)
            if pending:
                if self.only_source:
                    # exit 1 once the rest is processed: a script must see that the producer's
                    # last event was lost (helper-128: exit 0)
                    self.cut = (f"standard input ended inside an event: its last {len(pending):,} bytes not "
                                "taken; every event before them is processed")
                else:
                    log.error("standard input ended inside an event: its last %s bytes not taken",
                              f"{len(pending):,}")
        finally:
            self.finished.set()


def _wake_reader(sock: socket.socket) -> None:
    """Return the owner thread from its recv at once (Linux: shutting the read side down
    ends a blocked recv), so that an ended connection's thread does not wait for its poll."""
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass


class Listen(NamedTuple):
    """Where and how `--listen` accepts producers; a plain (host, port) gets the defaults."""
    host: str
    port: int
    idle_timeout_s: float = IDLE_TIMEOUT_S
    max_connections: int = MAX_CONNECTIONS


class _Producer:
    """One producer's connection, as the accept loop and its own thread share it."""
    __slots__ = ("sock", "peer", "last_activity", "dropped", "thread")

    def __init__(self, sock: socket.socket, peer):
        self.sock = sock
        self.peer = peer[0]
        self.last_activity = time.monotonic()    # the last byte received (or the accept)
        self.dropped: Optional[str] = None        # set by another thread: end and answer
        self.thread: Optional[threading.Thread] = None


class TcpJournal:
    """`--listen`: producers connect and send msgpack event streams. Each connection's bytes
    are cut at its last complete event and journaled (fsynced, renamed) as numbered files
    that the daemon processes like a spool, so a crash loses nothing journaled and the order
    of events is the journal's, one deterministic stream.

    One thread per connection, at most `max_connections` of them: at the bound, the
    connection idle longest (last byte received longest ago) is ended to make room, so
    forgotten or hostile idle connections can never lock producers out; a connection silent
    for `idle_timeout_s` is ended too. A connection whose stream is not msgpack is ended,
    keeping its events before the bad one; the others go on. Every ending journals what is
    complete and answers with the count (module docstring). With `metrics`, the connections
    held and ended are counted there (`sigmatch_connections{server="tcp"}`)."""

    def __init__(self, journal: JournalDirectory, listen, event_types: dict, *,
                 max_event_bytes: int = 65536, flush_bytes: int = 1 << 20, flush_s: float = 0.2,
                 metrics=None):
        listen = Listen(*listen)
        if listen.max_connections < 1 or not listen.idle_timeout_s > 0:
            raise ValueError("--max-connections must be at least 1 and --idle-timeout above 0")
        self.journal = journal
        self.event_types = dict(event_types)
        self.max_event_bytes = max_event_bytes
        self.flush_bytes = flush_bytes
        self.flush_s = flush_s
        self.idle_timeout_s = listen.idle_timeout_s
        self.max_connections = listen.max_connections
        # what one connection may hold unjournaled: a flush's worth plus an event cut at its end
        self.max_pending = max_event_bytes + flush_bytes + (1 << 20)
        self.lock = threading.Lock()
        self.producers: set[_Producer] = set()
        self.drops = dict.fromkeys(TCP_DROP_REASONS, 0)
        self.closing = threading.Event()
        self.sock = listening_socket(listen.host, listen.port)
        self.sock.setblocking(False)
        reserve_descriptors(self.max_connections + _MAX_LINGERING)
        self.address = self.sock.getsockname()[:2]
        # the accept thread also closes ended connections once their answer is out (_answer)
        self._to_linger: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._io_done = threading.Event()
        self._accept_failed_at = 0.0
        self.thread = threading.Thread(target=self._io_loop, name="listen", daemon=True)
        if metrics is not None:
            metrics.watch("tcp", self)

    def start(self) -> "TcpJournal":
        self.thread.start()
        return self

    def connection_counts(self) -> tuple[int, dict[str, int]]:
        """(connections open now, {reason: connections ended by the service})."""
        with self.lock:
            return len(self.producers), dict(self.drops)

    def close(self) -> None:
        """Stop accepting; every open connection journals what is complete and is answered
        (together they get _CLOSE_WAIT_S, then the service goes on stopping without them)."""
        self.closing.set()
        self._wake()
        with self.lock:
            producers = list(self.producers)
            for producer in producers:
                producer.dropped = producer.dropped or "stopping"
                _wake_reader(producer.sock)
        deadline = time.monotonic() + _CLOSE_WAIT_S
        for producer in producers:
            if producer.thread is not None:
                producer.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._io_done.set()
        self._wake()
        if self.thread.is_alive():
            self.thread.join()
        else:
            self.sock.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # -- the accept thread: accept, and close the ended connections after their answer

    def _io_loop(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ, "accept")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        lingering: collections.OrderedDict[socket.socket, float] = collections.OrderedDict()
        listening = True
        try:
            while not self._io_done.is_set():
                if listening and self.closing.is_set():
                    selector.unregister(self.sock)
                    self.sock.close()          # refused from now on
                    listening = False
                while True:
                    try:
                        sock = self._to_linger.get_nowait()
                    except queue.Empty:
                        break
                    if len(lingering) >= _MAX_LINGERING:
                        oldest, _ = lingering.popitem(last=False)
                        selector.unregister(oldest)
                        oldest.close()
                    lingering[sock] = time.monotonic() + _ANSWER_LINGER_S
                    selector.register(sock, selectors.EVENT_READ, "linger")
                first = next(iter(lingering.values()), None)
                timeout = 0.5 if first is None else min(0.5, max(0.0, first - time.monotonic()))
                for key, _ in selector.select(timeout):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        try:
                            self._wake_r.recv(4096)
                        except OSError:
                            pass
                    else:
                        try:
                            ended = not key.fileobj.recv(1 << 16)
                        except (BlockingIOError, InterruptedError):
                            ended = False
                        except OSError:
                            ended = True
                        if ended:
                            del lingering[key.fileobj]
                            selector.unregister(key.fileobj)
                            key.fileobj.close()
                now = time.monotonic()
                while lingering and next(iter(lingering.values())) <= now:
                    sock, _ = lingering.popitem(last=False)
                    selector.unregister(sock)
                    sock.close()
        finally:
            for sock in lingering:
                sock.close()
            if listening:
                self.sock.close()
            selector.close()

    def _accept(self) -> None:
        for _ in range(256):                 # a burst at a time, then the lingering get their turn
            try:
                sock, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # out of file descriptors, most likely: the kernel keeps the rest queued; one
                # line a minute, not one per try
                if time.monotonic() - self._accept_failed_at > 60:
                    log.warning("cannot accept a producer's connection: %s", e)
                    self._accept_failed_at = time.monotonic()
                time.sleep(0.1)
                return
            sock.setblocking(True)
            producer = _Producer(sock, peer)
            with self.lock:
                if len(self.producers) >= self.max_connections:
                    victim = min(self.producers, key=lambda p: p.last_activity)
                    self.producers.discard(victim)
                    victim.dropped = "bound"
                    self.drops["bound"] += 1
                    _wake_reader(victim.sock)
                    log.warning("connection from %s ended to make room for %s: %s connections open, "
                                "it was idle longest (%.1f s)", victim.peer, producer.peer,
                                f"{self.max_connections:,}", time.monotonic() - victim.last_activity)
                self.producers.add(producer)
            producer.thread = threading.Thread(target=self._serve, args=(producer,), name="producer",
                                               daemon=True)
            producer.thread.start()

    # -- one connection

    def _serve(self, producer: _Producer) -> None:
        from engine._core import Core
        sock = producer.sock
        decoder = Core(self.max_event_bytes)
        decoder.set_event_types(dict(self.event_types))
        pending = bytearray()       # bytes not yet journaled; ends with at most a partial event
        taken = 0                   # this connection's bytes journaled durably
        last_flush = time.monotonic()
        # None: the producer half-closed; otherwise why the service ends the connection
        reason: Optional[str] = None
        broken: Optional[str] = None
        counted: Optional[str] = None       # the drop reason counted, when not `reason`
        junk = [0]                          # bytes of values that are no events since the last event
        sock.settimeout(self.flush_s)
        try:
            try:
                while True:
                    if producer.dropped is not None:
                        reason = producer.dropped
                        break
                    try:
                        chunk = sock.recv(1 << 20)
                    except TimeoutError:
                        chunk = None
                    except OSError:
                        reason = "reset"
                        break
                    if producer.dropped is not None:     # woken by _wake_reader: not the producer's end
                        reason = producer.dropped
                        break
                    if chunk == b"":
                        break
                    now = time.monotonic()
                    if chunk:
                        pending += chunk
                        producer.last_activity = now
                    elif now - producer.last_activity >= self.idle_timeout_s:
                        reason = "idle"
                        break
                    if pending and (len(pending) >= self.flush_bytes or now - last_flush >= self.flush_s):
                        cut, broken = self._journal(pending, decoder, junk)
                        taken += cut
                        last_flush = now
                        if broken:
                            reason = broken
                            break
                    if len(pending) > self.max_pending:
                        reason = "buffer_bound"
                        break
                if not broken:
                    cut, broken = self._journal(pending, decoder, junk)
                    taken += cut
                    # a producer that half-closed is answered as one (no linger); its stream
                    # broke all the same, and is counted (it was not, helper-120)
                    counted = broken
            except OSError as e:
                # the journal cannot be written (ENOSPC, EIO): what was taken is still exact
                log.error("connection from %s: cannot journal its events: %s; %s bytes taken",
                          producer.peer, e, f"{taken:,}")
                reason = reason or "journal_error"
            else:
                self._log_end(producer, reason, broken, taken, len(pending))
            with self.lock:
                # ended: no longer one of the open connections while its answer lingers
                self.producers.discard(producer)
                dropped = counted or reason     # a stream that broke, then was reset: counted as broken
                if dropped in TCP_DROP_REASONS and dropped != "bound":   # bound: counted at the accept
                    self.drops[dropped] += 1
            if reason != "reset" and self._answer(sock, taken, linger=reason is not None):
                sock = None          # the accept thread closes it
        finally:
            with self.lock:
                self.producers.discard(producer)
            if sock is not None:
                sock.close()

    def _journal(self, pending: bytearray, decoder, junk: list) -> tuple[int, Optional[str]]:
        return journal_events(self.journal, pending, decoder, junk=junk)

    def _log_end(self, producer: _Producer, reason: Optional[str], broken: Optional[str], taken: int,
                 left: int) -> None:
        peer, taken_text = producer.peer, f"{taken:,} bytes taken"
        if broken == "too_large":
            log.error("connection from %s: a value longer than max_event_bytes (%s bytes) after %s; closed", peer,
                      f"{self.max_event_bytes:,}", taken_text)
        elif broken == "not_events":
            log.error("connection from %s: msgpack values that are no events (neither arrays nor maps) after %s; "
                      "closed", peer, taken_text)
        elif broken:
            log.error("connection from %s: not a msgpack event stream after %s; closed", peer, taken_text)
        elif reason is None:
            log.info("connection from %s half-closed: %s", peer, taken_text)
        elif reason == "idle":
            log.info("connection from %s idle for %s s: closed, %s", peer, f"{self.idle_timeout_s:,g}", taken_text)
        elif reason == "bound":
            log.info("connection from %s ended for a newcomer: %s", peer, taken_text)
        elif reason == "buffer_bound":
            log.error("connection from %s: buffer bound exceeded (%s bytes without a complete event); "
                      "closed, %s", peer, f"{self.max_pending:,}", taken_text)
        elif reason == "reset":
            log.warning("connection from %s reset: %s, no answer possible", peer, taken_text)
        else:
            log.info("connection from %s closed, the service is stopping: %s", peer, taken_text)
        if left and not broken:
            log.warning("connection from %s ended inside an event: its last %s bytes not taken",
                        peer, f"{left:,}")

    def _answer(self, sock: socket.socket, taken: int, *, linger: bool) -> bool:
        """Send the answer; True when the socket was handed to the accept thread to close
        after a linger (the producer may still be writing: the answer must reach it first)."""
        try:
            sock.settimeout(_ANSWER_LINGER_S)
            sock.sendall(ANSWER.pack(taken))
            if not linger or self._io_done.is_set():
                return False
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:
            return False        # the producer is gone: it did not wait for the answer
        self._to_linger.put(sock)
        self._wake()
        return True
