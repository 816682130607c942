"""A producer's side of `sigmatch run --listen` (SPEC §5): send a msgpack event stream, then
half-close, and read the service's answer, the number of this connection's bytes that were
journaled durably (8 bytes, big-endian unsigned). Only an answer equal to what was sent
means that all of it was taken.

    from engine.service.client import send, NotTaken
    try:
        send("127.0.0.1", 7400, "events-0001.msgpack")      # a path, bytes, a binary file, or a list
    except NotTaken as e:
        ...   # e.taken: bytes journaled (resend from there), None when the service gave no answer

The service journals complete events only: bytes after the last complete event are not
taken, so a stream that ends inside an event always comes back short.

The other side a client has: the read-only lookup of `sigmatch run --lookup` (the policy
view of one subscriber, the web console's), over HTTP with the bearer token:

    from engine.service.client import Lookup, LookupFailed
    service = Lookup("http://127.0.0.1:9465", token)
    service.subscriber(8613800138000)          # lookup.policy_view's document, None: not a subscriber
    service.explanation(8613800138000, last=50)   # None: not watched
    service.watch(8613800138000)               # explain its events from now on
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import urllib.error
import urllib.parse
import urllib.request
from typing import BinaryIO, Iterator, Optional, Union

from engine.errors import SigmatchError

__all__ = ["send", "NotTaken", "Unreachable", "ANSWER_BYTES", "Lookup", "LookupFailed", "service_address"]

ANSWER_BYTES = 8

Source = Union[bytes, bytearray, memoryview, str, os.PathLike, BinaryIO]


class Unreachable(SigmatchError, OSError):
    """The service cannot be reached: one line naming its address. An OSError still, for a
    producer that retries on one while the service starts; the socket's own is its cause."""


def _where(host: str, port: int) -> str:
    """host:port as the CLI takes it back: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class NotTaken(SigmatchError):
    """Not all the bytes sent were journaled. `sent`: bytes handed to the connection;
    `taken`: bytes the service answered it journaled, or None when no answer came (then how
    much was taken is unknown: everything up to the last complete event that reached it)."""

    def __init__(self, message: str, *, sent: int, taken: Optional[int]):
        super().__init__(message)
        self.sent = sent
        self.taken = taken


def _parts(source) -> list:
    """`source` as a flat list of bytes-likes, paths and file objects."""
    if isinstance(source, (list, tuple)):
        return [part for item in source for part in _parts(item)]
    if isinstance(source, (bytes, bytearray, memoryview, str, os.PathLike)) or hasattr(source, "read"):
        return [source]
    raise TypeError(f"cannot send a {type(source).__name__}: give bytes, a path, a binary file or a list")


class _ReadFailed(Exception):
    """A source could not be read on (`error`): what was read before it is sent."""

    def __init__(self, name: str, error: OSError):
        super().__init__(name)
        self.name = name
        self.error = error


def _source_name(part) -> str:
    name = getattr(part, "name", None)
    if name in (0, "<stdin>") or (hasattr(part, "fileno") and _fileno(part) == 0):
        return "standard input"
    return os.fsdecode(name) if isinstance(name, (str, bytes)) else "the stream"


def _fileno(part) -> Optional[int]:
    try:
        return part.fileno()
    except (OSError, ValueError, AttributeError):
        return None


def _chunks(parts: list, chunk_bytes: int) -> Iterator[memoryview]:
    for part in parts:
        if isinstance(part, (bytes, bytearray, memoryview)):
            view = memoryview(part).cast("B")
            for start in range(0, len(view), chunk_bytes):
                yield view[start:start + chunk_bytes]
        else:
            read = getattr(part, "read1", part.read)
            while True:
                try:
                    chunk = read(chunk_bytes)
                except OSError as e:
                    # a reset socket as standard input: said as its own, not as the service's
                    raise _ReadFailed(_source_name(part), e) from None
                if not chunk:
                    break
                yield memoryview(chunk)


def _open_regular(path) -> BinaryIO:
    """`path` opened for reading when it is a regular file or a pipe (`<(zcat f.gz)`, a FIFO
    a producer writes: opened as `cat` opens one, waiting for its writer); SigmatchError
    naming it for a device, which would send without end (/dev/zero, /dev/urandom), a
    directory or a socket."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None             # the open names what is wrong
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        kind = "a directory" if stat.S_ISDIR(mode) else "a device or socket"
        raise SigmatchError(f"{os.fsdecode(path)}: cannot send it: {kind}, not a file "
                            f"(a stream goes through standard input: ... | sigmatch send ADDRESS -)")
    return open(path, "rb")


def send(host: str, port: int, source: Source | list, *, timeout: float = 60.0,
         chunk_bytes: int = 1 << 20) -> int:
    """Stream `source` (bytes, a path, a binary file object, or a list of them, sent in order
    as one stream) to the service on host:port, half-close, and check the answer. Returns the
    bytes taken, which then equal the bytes sent. Raises NotTaken when fewer were taken or
    no answer came, Unreachable (an OSError) naming host:port when the service cannot be
    reached, OSError when a file cannot be read.
    `timeout`: the longest wait for the service to read a chunk, or to answer."""
    sent = 0
    failure: Optional[OSError] = None
    unread: Optional[_ReadFailed] = None
    with contextlib.ExitStack() as files:
        # every file opened before connecting: a missing one is an error, not a short stream
        parts = [files.enter_context(_open_regular(part)) if isinstance(part, (str, os.PathLike)) else part
                 for part in _parts(source)]
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            # "Connection refused" alone does not say which service refused
            raise Unreachable(f"{_where(host, port)}: {e.strerror or e}") from e
        with sock:
            chunks = _chunks(parts, chunk_bytes)
            while True:
                try:
                    chunk = next(chunks, None)
                except _ReadFailed as e:
                    # what came before is sent: the service's answer says how much it took
                    unread, chunk = e, None
                if chunk is None:
                    try:
                        sock.shutdown(socket.SHUT_WR)
                    except OSError as e:
                        failure = e
                    break
                try:
                    sock.sendall(chunk)
                except OSError as e:
                    # the service ended the connection (idle, at its bound, a bad stream): it
                    # may still have answered with what it took
                    failure = e
                    break
                sent += len(chunk)
            answer = _read_answer(sock)
    where = _where(host, port)
    if unread is not None:
        taken = int.from_bytes(answer, "big") if len(answer) == ANSWER_BYTES else None
        took = (f"{where} took {taken:,} of them; resend from byte {taken:,}" if taken is not None
                else f"{where} gave no answer: how much it took is unknown")
        reason = unread.error.strerror or unread.error
        raise NotTaken(f"{unread.name}: cannot be read after {sent:,} bytes ({reason}); {took}", sent=sent, taken=taken)
    if len(answer) != ANSWER_BYTES:
        why = f" ({_describe(failure)})" if failure else ""
        raise NotTaken(f"{where} gave no answer after {sent:,} bytes sent{why}: how much it took is unknown",
                       sent=sent, taken=None)
    taken = int.from_bytes(answer, "big")
    if failure is None and taken > sent:
        raise SigmatchError(f"{where} answered {taken:,} bytes taken of {sent:,} sent: not a sigmatch service?")
    if failure is not None or taken < sent:
        sent_text = f"{sent:,}" if failure is None else f"at least {sent:,}"
        raise NotTaken(f"{where} took {taken:,} of {sent_text} bytes sent; resend from byte {taken:,}"
                       + (f" ({_describe(failure)})" if failure else ""), sent=sent, taken=taken)
    return taken


# the service's bound on one event (engine.api.Engine's max_event_bytes, which `run` keeps)
SERVICE_MAX_EVENT_BYTES = 65536


def head_problem(source, name: Optional[str] = None) -> Optional[str]:
    """Why `source` (a file's path, or the first bytes of a stream called `name`) is plainly
    no msgpack event stream, as the service's spool would set it aside (loaders.sniff:
    gzip, zip, JSON lines, CSV, TOML...), or None. A file that cannot be read is None here
    (the send names it)."""
    from loaders.sniff import other_format
    if isinstance(source, (bytes, bytearray)):
        head = bytes(source)
    else:
        name = os.fsdecode(source)
        try:
            with open(source, "rb") as f:
                head = f.read(64 << 10)
        except OSError:
            return None
    phrase = other_format(head)
    return f"{name}: {phrase}; nothing sent" if phrase else None


def stopped_at(paths: list, taken: int) -> Optional[str]:
    """What the stream of the regular files `paths` (sent in order as one) holds at byte
    `taken`, where the service stopped taking it, when that is why it stopped there: not
    msgpack, a value longer than the service takes, a value that is no event, the end inside
    an event. None when nothing there explains it (the service was stopping, the connection
    idle) or the bytes cannot be read again (a pipe)."""
    from engine._core import Core
    from engine.records import STREAM_STATUSES
    want = SERVICE_MAX_EVENT_BYTES + 16
    window, skip = bytearray(), taken
    for path in paths:
        try:
            with open(path, "rb") as f:
                info = os.fstat(f.fileno())
                if not stat.S_ISREG(info.st_mode):
                    return None
                if skip >= info.st_size:
                    skip -= info.st_size
                    continue
                f.seek(skip)
                skip = 0
                window += f.read(want - len(window))
        except OSError:
            return None
        if len(window) >= want:
            break
    if not window:
        return None
    core = Core(SERVICE_MAX_EVENT_BYTES)
    _, status, offset = core.decode(bytes(window), keep=False)
    dead = core.take_dead_letters()
    if status and offset == 0:
        return {"corrupt": "not msgpack there (a 0xc1 byte, which msgpack never uses, in the event that starts there)",
                "too_large": f"a value longer than the {SERVICE_MAX_EVENT_BYTES:,} bytes an event may take there",
                "truncated": "the stream ends there inside an event"}.get(STREAM_STATUSES[status])
    if len(dead) and int(dead["offset"][0]) == 0 and int(dead["reason"][0]) == 0:
        return "a msgpack value that is no event there (neither an array nor a map)"
    return None


def _read_answer(sock: socket.socket) -> bytes:
    """The answer's bytes, fewer when the connection ends (or fails) before it is whole."""
    answer = b""
    try:
        while len(answer) < ANSWER_BYTES:
            data = sock.recv(ANSWER_BYTES - len(answer))
            if not data:
                break
            answer += data
        if len(answer) == ANSWER_BYTES and sock.recv(1):
            return b""                  # more than an answer: not one
    except OSError:
        pass
    return answer


def _describe(error: OSError) -> str:
    return f"{type(error).__name__}: {error.strerror or error}"


# --------------------------------------------------------------------------- the lookup

class LookupFailed(SigmatchError):
    """The lookup cannot be reached, refused the token, or answered what a lookup does not.
    One line naming the service's address, never the subscriber's number in full."""


def service_address(url: str, option: str) -> str:
    """The `scheme://HOST:PORT` of a service's HTTP endpoint given as `url` (`http://HOST:PORT`
    with or without a path, or a bare HOST:PORT, taken as http), for the option `option`
    (`--lookup`, `--metrics`) that named it. ValueError, one line naming the option, when it
    is no such address: not http or https, no host, a port that is no number in 1-65535, or
    http without a port (the service's servers listen on the port their own option gives;
    an https address without one is a proxy's, on 443). Checked when a command starts, so a
    mistyped address is said then, not at the first page that uses it."""
    given = url.strip()
    if not given:
        raise ValueError(f"{option} is empty: expected http://HOST:PORT")
    if "://" not in given:
        given = "http://" + given
    try:
        parts = urllib.parse.urlsplit(given)
    except ValueError as e:        # an unclosed IPv6 bracket, say
        raise ValueError(f"{option} {url}: {e} (expected http://HOST:PORT)") from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"{option} {url}: the port is no number in 1-65535 (expected http://HOST:PORT)")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{option} {url}: expected http://HOST:PORT")
    if parts.query or parts.fragment or "?" in given or "#" in given:
        raise ValueError(f"{option} {url}: an address takes no query or fragment (expected http://HOST:PORT)")
    if port is None and parts.scheme == "http":
        raise ValueError(f"{option} {url}: no port (expected http://HOST:PORT)")
    return f"{parts.scheme}://{parts.netloc}"


class Lookup:
    """A client of the service's lookup (`sigmatch run --lookup HOST:PORT --lookup-token T`).
    `url`: `http://HOST:PORT` (a bare HOST:PORT is taken as http). `timeout`: seconds for one
    request. Methods raise LookupFailed; a number the service does not know is None, not an error."""

    def __init__(self, url: str, token: str, *, timeout: float = 10.0):
        if not url:
            raise LookupFailed("no lookup address: give --lookup http://HOST:PORT")
        try:
            self.url = service_address(url, "--lookup")
        except ValueError as e:
            raise LookupFailed(str(e)) from None
        if not token:
            raise LookupFailed("the lookup needs its bearer token (--lookup-token or SIGMATCH_LOOKUP_TOKEN)")
        self._token = token
        self.timeout = timeout

    def subscriber(self, msisdn: int) -> Optional[dict]:
        """The policy view of `msisdn` (engine.service.lookup.policy_view's document), None
        when it is not a subscriber."""
        return self._request("GET", f"/subscriber/{int(msisdn)}", none_on_404=True)

    def explanation(self, msisdn: int, last: Optional[int] = None) -> Optional[dict]:
        """The explanation of a watched subscriber's events (engine.closedloop.explain's
        document), the last `last` entries when given; None when it is not watched."""
        query = "" if last is None else f"?last={int(last)}"
        return self._request("GET", f"/subscriber/{int(msisdn)}/explain{query}", none_on_404=True)

    def watch(self, msisdn: int) -> dict:
        """Watch `msisdn` (its events are explained from now on). LookupFailed when it is not
        a subscriber or the service watches as many as it may."""
        return self._request("PUT", f"/watch/{int(msisdn)}")

    def unwatch(self, msisdn: int) -> Optional[dict]:
        """Stop watching `msisdn`; None when it was not watched."""
        return self._request("DELETE", f"/watch/{int(msisdn)}", none_on_404=True)

    def watched(self) -> list[str]:
        """The numbers watched now."""
        return list(self._request("GET", "/watch").get("watched", []))

    def _request(self, method: str, path: str, *, none_on_404: bool = False):
        from engine.privacy import scrub
        request = urllib.request.Request(self.url + path, method=method,
                                         headers={"Authorization": f"Bearer {self._token}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as e:
            if e.code == 404 and none_on_404:
                return None
            try:
                reason = json.loads(e.read()).get("error") or e.reason
            except (ValueError, AttributeError, OSError, RecursionError):
                reason = e.reason
            if e.code == 401:
                reason = "the lookup refused the token (--lookup-token)"
            raise LookupFailed(scrub(f"{self.url}: {e.code} {reason}")) from None
        except (urllib.error.URLError, OSError) as e:
            why = getattr(e, "reason", None) or e
            raise LookupFailed(scrub(f"{self.url}: cannot reach the lookup ({why})")) from None
        try:
            return json.loads(body)
        except ValueError:
            raise LookupFailed(f"{self.url}: answered something else than JSON: not a sigmatch lookup?") from None
        except RecursionError:
            # JSON nested thousands deep: the parser's own limit, never a lookup's answer
            raise LookupFailed(f"{self.url}: answered JSON nested too deeply: not a sigmatch lookup?") from None
