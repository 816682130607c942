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
"""
from __future__ import annotations

import contextlib
import os
import socket
from typing import BinaryIO, Iterator, Optional, Union

from engine.errors import SigmatchError

__all__ = ["send", "NotTaken", "ANSWER_BYTES"]

ANSWER_BYTES = 8

Source = Union[bytes, bytearray, memoryview, str, os.PathLike, BinaryIO]


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


def _chunks(parts: list, chunk_bytes: int) -> Iterator[memoryview]:
    for part in parts:
        if isinstance(part, (bytes, bytearray, memoryview)):
            view = memoryview(part).cast("B")
            for start in range(0, len(view), chunk_bytes):
                yield view[start:start + chunk_bytes]
        else:
            read = getattr(part, "read1", part.read)
            while chunk := read(chunk_bytes):
                yield memoryview(chunk)


def send(host: str, port: int, source: Source | list, *, timeout: float = 60.0,
         chunk_bytes: int = 1 << 20) -> int:
    """Stream `source` (bytes, a path, a binary file object, or a list of them, sent in order
    as one stream) to the service on host:port, half-close, and check the answer. Returns the
    bytes taken, which then equal the bytes sent. Raises NotTaken when fewer were taken or
    no answer came, OSError when the service cannot be reached or a file cannot be read.
    `timeout`: the longest wait for the service to read a chunk, or to answer."""
    sent = 0
    failure: Optional[OSError] = None
    with contextlib.ExitStack() as files:
        # every file opened before connecting: a missing one is an error, not a short stream
        parts = [files.enter_context(open(part, "rb")) if isinstance(part, (str, os.PathLike)) else part
                 for part in _parts(source)]
        with socket.create_connection((host, port), timeout=timeout) as sock:
            for chunk in _chunks(parts, chunk_bytes):
                try:
                    sock.sendall(chunk)
                except OSError as e:
                    # the service ended the connection (idle, at its bound, a bad stream): it
                    # may still have answered with what it took
                    failure = e
                    break
                sent += len(chunk)
            else:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError as e:
                    failure = e
            answer = _read_answer(sock)
    where = f"{host}:{port}"
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
