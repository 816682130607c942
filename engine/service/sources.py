"""The daemon's sources besides a probes' spool: standard input and TCP producers, each
journaled into numbered, fsynced files that the daemon then processes like a spool
(engine.service.daemon), so that a crash loses nothing journaled."""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

__all__ = ["JournalDirectory", "StdinJournal", "TcpJournal"]

log = logging.getLogger("sigmatch.daemon")


class JournalDirectory:
    """Numbered journal files that the daemon processes like a spool: each written whole
    under a temporary name, fsynced, then renamed, so a crash loses nothing journaled. One
    numbering for every journaling source (stdin, each TCP connection): the numbers are the
    order in which their bytes arrived. `prefix` names them inside a probes' spool."""

    def __init__(self, directory: Path, prefix: str = ""):
        self.directory = directory
        self.prefix = prefix
        self.lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        for temp in directory.glob(f".{prefix}*.part"):
            if temp.name[len(prefix) + 1:len(prefix) + 13].isdigit():
                temp.unlink()      # bytes of a crashed journal file were never acknowledged
        numbers = [int(p.stem[len(prefix):]) for d in (directory, directory / "done") if d.is_dir()
                   for p in d.glob(f"{prefix}*.msgpack") if p.stem[len(prefix):].isdigit()]
        self.number = max(numbers, default=0)

    def write(self, data: bytes) -> None:
        with self.lock:
            self.number += 1
            final = self.directory / f"{self.prefix}{self.number:012d}.msgpack"
            temp = self.directory / f".{final.name}.part"
            with open(temp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, final)


class StdinJournal(threading.Thread):
    """Standard input, journaled every `every_s` or `max_bytes`; stdin is one stream, so the
    journal files concatenate to it exactly."""

    def __init__(self, journal: JournalDirectory, stream, *, every_s: float = 0.5, max_bytes: int = 16 << 20):
        super().__init__(name="stdin-journal", daemon=True)
        self.journal = journal
        self.stream = stream
        self.every_s = every_s
        self.max_bytes = max_bytes
        self.finished = threading.Event()

    def run(self) -> None:
        read = getattr(self.stream, "read1", self.stream.read)
        try:
            eof = False
            while not eof:
                data, started = bytearray(), time.monotonic()
                while len(data) < self.max_bytes and time.monotonic() - started < self.every_s:
                    chunk = read(1 << 20)
                    if not chunk:
                        eof = True
                        break
                    data += chunk
                if data:
                    self.journal.write(bytes(data))
        finally:
            self.finished.set()


class TcpJournal:
    """`--listen`: producers connect and send msgpack event streams. Each connection's bytes
    are cut at its last complete event and journaled (fsynced, renamed) as numbered files
    that the daemon processes like a spool, so a crash loses nothing journaled and the order
    of events is the journal's, one deterministic stream. A connection whose stream is not
    msgpack is closed, keeping its events before the bad one; the others go on."""

    def __init__(self, journal: JournalDirectory, host: str, port: int, event_types: dict, *,
                 max_event_bytes: int = 65536, max_connections: int = 64,
                 flush_bytes: int = 1 << 20, flush_s: float = 0.2):
        import socketserver
        from engine._core import Core
        self.journal = journal
        self.slots = threading.BoundedSemaphore(max_connections)
        journal = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                if not journal.slots.acquire(blocking=False):
                    log.warning("connection from %s refused: %d connections already", self.client_address[0],
                                max_connections)
                    return
                try:
                    journal._serve(self.request, self.client_address, Core(max_event_bytes), event_types,
                                   max_event_bytes, flush_bytes, flush_s)
                finally:
                    journal.slots.release()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((host, port), Handler)
        self.address = self.server.server_address
        self.thread = threading.Thread(target=self.server.serve_forever, name="listen", daemon=True)

    def start(self) -> "TcpJournal":
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, sock, peer, decoder, event_types, max_event_bytes, flush_bytes, flush_s):
        decoder.set_event_types(dict(event_types))
        pending = bytearray()       # bytes not yet journaled; ends with at most a partial event
        last_flush = time.monotonic()
        sock.settimeout(flush_s)
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                chunk = None
            except OSError:
                break
            if chunk == b"":
                break
            if chunk:
                pending += chunk
            if pending and (len(pending) >= flush_bytes or time.monotonic() - last_flush >= flush_s):
                if not self._flush(pending, decoder, peer, final=False):
                    return
                last_flush = time.monotonic()
            if len(pending) > max_event_bytes + flush_bytes + (1 << 20):
                log.error("connection from %s: buffer bound exceeded, closed", peer[0])
                return
        self._flush(pending, decoder, peer, final=True)

    def _flush(self, pending: bytearray, decoder, peer, *, final: bool) -> bool:
        """Journal the complete events at the front of `pending`; False when the stream is
        broken (the good part is journaled, the connection is to be closed)."""
        _, status, stopped = decoder.decode(bytes(pending), keep=False)
        decoder.take_dead_letters()      # dead letters are the daemon's, when it processes the journal
        cut = len(pending) if status == 0 else (stopped or 0)
        if cut:
            self.journal.write(bytes(pending[:cut]))
            del pending[:cut]
        if status in (1, 2):
            log.error("connection from %s: not a msgpack event stream (status %d); closed", peer[0], status)
            return False
        if final and pending:
            log.error("connection from %s closed inside an event; its %d last bytes dropped", peer[0], len(pending))
        return True
