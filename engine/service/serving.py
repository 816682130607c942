"""Listening sockets for the daemon's three servers (TCP producers, the lookup, the metrics)
and the small HTTP server that the lookup and the metrics share.

Hostile or merely idle clients must not stall a server, so the HTTP server is built on three
bounds instead of a thread per connection (`socketserver.ThreadingMixIn` grows a thread per
idle socket, and its backlog of 5 refused a burst of 200 lookups):

* one I/O thread accepts connections (backlog LISTEN_BACKLOG) and reads each request's head
  without blocking; a connection costs a worker only once its whole head has arrived, so
  idle and slow (slowloris) sockets hold a file descriptor, never a worker;
* a head must arrive within `request_timeout_s` of the accept and fit in `max_head_bytes`,
  else the connection is dropped (counted by reason);
* at most `max_connections` connections are held (reading, queued or being answered); at
  that bound the connection that has waited longest for its head is dropped to make room;
* `workers` threads answer complete requests, one request per connection (HTTP/1.0), and
  each write has `write_timeout_s`, so a client that does not read cannot hold a worker for
  longer than that.

    server = BoundedHTTPServer(Handler, "127.0.0.1", 0, name="lookup", workers=8).start()
    server.server_address          # (host, port) bound
    server.connection_counts()     # (open connections, {reason: dropped})
    server.close()                 # the port is free on return
"""
from __future__ import annotations

import collections
import io
import logging
import queue
import selectors
import socket
import threading
import time
from typing import Optional

__all__ = ["LISTEN_BACKLOG", "HTTP_DROP_REASONS", "listening_socket", "reserve_descriptors", "BoundedHTTPServer"]

log = logging.getLogger("sigmatch.daemon")

# Connections the kernel completes and queues before we accept them. socketserver's 5 made a
# burst of 200 clients time out; the kernel caps this at net.core.somaxconn (4096 on current
# Linux), and an accepted-but-unserved connection costs only kernel memory.
LISTEN_BACKLOG = 1024

# Why the HTTP server drops a connection (metrics label values):
#   timeout   its request head did not arrive within request_timeout_s
#   bound     max_connections were held; the one waiting longest for its head went
#   too_large its request head exceeded max_head_bytes (answered 431, or 414 when its
#             request line alone did)
HTTP_DROP_REASONS = ("timeout", "bound", "too_large")

# A head is complete at its blank line (bare LF tolerated, as http.server does)
_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")
_TOO_LARGE = (b"HTTP/1.0 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
              b"Connection: close\r\n\r\n")
# ... when the request line alone is past the bound: its target is what is too long (RFC 9110)
_URI_TOO_LONG = b"HTTP/1.0 414 URI Too Long\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
# Drops are logged as one summary line at most this often (a flood must not flood the log)
_SUMMARY_EVERY_S = 60.0
# close(): how long the threads get to finish what they answer
_CLOSE_WAIT_S = 2.0


# Descriptors the service needs besides its servers' connections: spool, journal, sink and
# checkpoint files, the decoder's pipes, Python's own
_BASE_DESCRIPTORS = 256
_reserved = 0
_reserved_lock = threading.Lock()


def reserve_descriptors(count: int) -> None:
    """Raise the soft limit of open files (up to the hard limit) so that `count` more
    connections fit: the servers' bounds, not the limit, decide when a connection is refused.
    systemd starts services with a soft limit of 1024 and a hard one far above."""
    global _reserved
    import resource
    with _reserved_lock:
        _reserved += count
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = _BASE_DESCRIPTORS + _reserved
        if soft != resource.RLIM_INFINITY and soft < wanted:
            new = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
            if new > soft:
                try:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
                except (ValueError, OSError):
                    pass
            if new < wanted:
                log.warning("open files limited to %s: the connection bounds need %s (raise LimitNOFILE)",
                            f"{new:,}", f"{wanted:,}")


def listening_socket(host: str, port: int, *, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """A TCP socket bound to host:port (SO_REUSEADDR) and listening with `backlog`; an IPv6
    literal binds IPv6, anything else IPv4 (a name such as localhost resolves to its IPv4
    address, as socketserver did). OSError when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog)


class _SocketWriter(io.RawIOBase):
    """`wfile` of a handler: every write is a whole sendall (http.server writes expect it)."""

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._sock.sendall(data)
        return len(data)


class _HeadFromBuffer:
    """Mixed in before an http.server handler: the request head was read by the I/O thread,
    so `rfile` is that buffer and `wfile` the socket. `request` is (socket, head)."""

    def setup(self):
        self.connection, head = self.request
        # blank lines before the request line are skipped (RFC 9112 §2.2); a head of blank
        # lines alone is kept, for parse_request to answer
        self.rfile = io.BytesIO(head.lstrip(b"\r\n") or head)
        self.wfile = _SocketWriter(self.connection)

    def parse_request(self) -> bool:
        if not self.raw_requestline.strip():
            # http.server gives up on an empty request line without a word: the client was
            # left waiting for an answer until it gave up itself
            self.command, self.requestline = None, ""
            self.request_version = "HTTP/1.0"      # a status line, whatever the handler's default
            self.send_error(400, "Bad request: no request line")
            return False
        return super().parse_request()

    def finish(self):
        self.rfile.close()
        self.wfile.close()


class _Reading:
    __slots__ = ("peer", "deadline", "head")

    def __init__(self, peer, deadline: float):
        self.peer = peer
        self.deadline = deadline
        self.head = bytearray()


class BoundedHTTPServer:
    """An HTTP/1.0 server of bounded threads and connections for an http.server handler
    class (BaseHTTPRequestHandler with do_GET and friends). See the module docstring."""

    def __init__(self, handler: type, host: str, port: int, *, name: str, workers: int = 4,
                 max_connections: int = 1024, request_timeout_s: float = 10.0,
                 write_timeout_s: float = 10.0, max_head_bytes: int = 16384):
        if workers < 1 or max_connections < 1:
            raise ValueError("workers and max_connections must be at least 1")
        self.name = name
        self.handler = type(handler.__name__, (_HeadFromBuffer, handler), {})
        self.workers = workers
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        self.write_timeout_s = write_timeout_s
        self.max_head_bytes = max_head_bytes
        self.socket = listening_socket(host, port)
        self.socket.setblocking(False)
        reserve_descriptors(max_connections)
        self.server_address = self.socket.getsockname()[:2]
        self._lock = threading.Lock()
        # connections still sending their head, in accept order (which is deadline order)
        self._reading: collections.OrderedDict[socket.socket, _Reading] = collections.OrderedDict()
        self._busy = 0                       # complete requests queued or being answered
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._drops = dict.fromkeys(HTTP_DROP_REASONS, 0)
        self._logged_drops = dict(self._drops)
        self._accept_failed_at = 0.0
        self._closing = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._threads = [threading.Thread(target=self._io_loop, name=f"{name}-io", daemon=True)]
        self._threads += [threading.Thread(target=self._work, name=f"{name}-worker-{i}", daemon=True)
                          for i in range(workers)]

    def start(self) -> "BoundedHTTPServer":
        for thread in self._threads:
            thread.start()
        return self

    def connection_counts(self) -> tuple[int, dict[str, int]]:
        """(connections held now, {reason: connections dropped so far})."""
        with self._lock:
            return len(self._reading) + self._busy, dict(self._drops)

    def close(self) -> None:
        """Stop accepting, drop what is unanswered, wait for the threads; the port is free on
        return. Idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        for _ in range(self.workers):
            self._queue.put(None)
        # a worker writing to a client that does not read ends within write_timeout_s; the
        # service does not wait for it longer than _CLOSE_WAIT_S in all (the threads are daemons)
        deadline = time.monotonic() + min(_CLOSE_WAIT_S, self.write_timeout_s + 1)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.socket.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the I/O thread: accept, read heads, enforce the deadlines and the bound

    def _io_loop(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.socket, selectors.EVENT_READ, "accept")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        last_summary = time.monotonic()
        try:
            while not self._closing.is_set():
                with self._lock:
                    first = next(iter(self._reading.values()), None)
                timeout = 1.0 if first is None else min(1.0, max(0.0, first.deadline - time.monotonic()))
                for key, _ in selector.select(timeout):
                    if key.data == "accept":
                        self._accept(selector)
                    elif key.data == "read":
                        self._read(selector, key.fileobj)
                self._expire(selector)
                if time.monotonic() - last_summary >= _SUMMARY_EVERY_S:
                    self._log_drops()
                    last_summary = time.monotonic()
        finally:
            with self._lock:
                pending = list(self._reading)
                self._reading.clear()
            for sock in pending:
                _close(sock)
            selector.close()

    def _accept(self, selector) -> None:
        for _ in range(256):                 # a burst at a time, then the reads get their turn
            try:
                sock, peer = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # out of file descriptors, most likely: the kernel keeps the rest queued; one
                # line a minute, and a pause, not a loop of retries
                if time.monotonic() - self._accept_failed_at > 60:
                    log.warning("%s: cannot accept a connection: %s", self.name, e)
                    self._accept_failed_at = time.monotonic()
                time.sleep(0.1)
                return
            sock.setblocking(False)
            with self._lock:
                if len(self._reading) + self._busy >= self.max_connections:
                    self._drops["bound"] += 1
                    if not self._reading:
                        # every held connection has a complete request: the newcomer waits no better
                        _close(sock)
                        continue
                    oldest, _ = self._reading.popitem(last=False)
                    selector.unregister(oldest)
                    _close(oldest)
                self._reading[sock] = _Reading(peer, time.monotonic() + self.request_timeout_s)
            selector.register(sock, selectors.EVENT_READ, "read")

    def _read(self, selector, sock: socket.socket) -> None:
        with self._lock:
            reading = self._reading.get(sock)
        if reading is None:
            return
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:                         # the client went away before its request
            self._forget(selector, sock)
            _close(sock)
            return
        start = max(0, len(reading.head) - 3)
        reading.head += data
        # where the head ends (its blank line), if it has: bounded by that end, not by what
        # had been read (a head of 20 KiB whose end came in the last 4 KiB read passed)
        ends = [found + len(end) for end in _HEAD_ENDS for found in (reading.head.find(end, start),) if found >= 0]
        if ends and min(ends) <= self.max_head_bytes:
            self._forget(selector, sock)
            with self._lock:
                self._busy += 1
            self._queue.put((sock, reading.peer, bytes(reading.head)))
        elif ends or len(reading.head) > self.max_head_bytes:
            self._forget(selector, sock)
            with self._lock:
                self._drops["too_large"] += 1
            line_too_long = b"\n" not in reading.head[:self.max_head_bytes]
            try:
                sock.send(self.head_refusal(414 if line_too_long else 431, bytes(reading.head)))
            except OSError:
                pass
            _close(sock)

    def head_refusal(self, status: int, head: bytes) -> bytes:
        """The whole answer (status line, headers, body) to a request head past
        max_head_bytes, `head` being what arrived of it: 414 when its request line alone
        passes the bound, else 431. Bodiless here; a server whose every answer is of one
        kind gives its own (the lookup's is JSON)."""
        return _URI_TOO_LONG if status == 414 else _TOO_LARGE

    def _forget(self, selector, sock: socket.socket) -> None:
        selector.unregister(sock)
        with self._lock:
            self._reading.pop(sock, None)

    def _expire(self, selector) -> None:
        now = time.monotonic()
        expired = []
        with self._lock:
            while self._reading:
                sock, reading = next(iter(self._reading.items()))
                if reading.deadline > now:
                    break
                del self._reading[sock]
                self._drops["timeout"] += 1
                expired.append(sock)
        for sock in expired:
            selector.unregister(sock)
            _close(sock)

    def _log_drops(self) -> None:
        with self._lock:
            drops = dict(self._drops)
        new = {reason: n - self._logged_drops[reason] for reason, n in drops.items()
               if n > self._logged_drops[reason]}
        self._logged_drops = drops
        if new:
            log.warning("%s: %s connections dropped in the last minute (%s)", self.name, f"{sum(new.values()):,}",
                        ", ".join(f"{reason} {n:,}" for reason, n in new.items()))

    # -- the workers: answer complete requests

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            sock, peer, head = item
            try:
                if self._closing.is_set():
                    continue
                sock.setblocking(True)
                sock.settimeout(self.write_timeout_s)
                self.handler((sock, head), peer, self)
            except OSError as e:
                # the client went away or stopped reading: its business alone
                log.debug("%s: connection from %s: %s", self.name, peer[0], e)
            except Exception as e:         # a handler bug must not kill a worker
                log.error("%s: request from %s failed: %s: %s", self.name, peer[0], type(e).__name__, e)
            finally:
                _close(sock, shutdown=True)
                with self._lock:
                    self._busy -= 1


def _close(sock: socket.socket, shutdown: bool = False) -> None:
    if shutdown:
        try:
            sock.shutdown(socket.SHUT_WR)    # the response ends with a FIN, not a reset
        except OSError:
            pass
    try:
        sock.close()
    except OSError:
        pass
