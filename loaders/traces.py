"""Event traces as byte chunks: files (plain or gzip), bytes, or an iterator of chunks.

The traces of one replay form one stream (SPEC §1.4): an event may span two files, so
chunks are handed on as they are and the decoder stitches them together.
"""
from __future__ import annotations

import io
import os
import queue
import threading
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Union

from engine.errors import LoadError
from loaders import refuse_special

__all__ = ["Source", "iter_chunks", "open_trace", "GzipTrace", "source_size", "CHUNK_BYTES"]

CHUNK_BYTES = 16 << 20

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, Iterable]


def _is_path(x) -> bool:
    return isinstance(x, (str, os.PathLike))


def _paths(source) -> list[Path] | None:
    if _is_path(source):
        return [Path(source)]
    if isinstance(source, (list, tuple)) and source and all(_is_path(p) for p in source):
        return [Path(p) for p in source]
    return None


def source_size(source) -> int | None:
    """Total bytes on disk of a file source (for progress), None when unknown."""
    paths = _paths(source)
    if paths is None:
        if isinstance(source, (bytes, bytearray, memoryview)):
            return len(source)
        return None
    try:
        return sum(p.stat().st_size for p in paths)
    except OSError:
        return None


# Compressed bytes read from a .gz at a time. A break in the data is found in at most
# log2(READ_BYTES) trial decompressions of one such piece (_longest_good_prefix).
READ_BYTES = 256 << 10
_GZIP_MAGIC = b"\x1f\x8b"


class GzipTrace(io.RawIOBase):
    """The decompressed bytes of a .gz file, every member in turn (a concatenation of gzip
    files, zero padding between or after them, as gzip.open reads it), for `readinto`.

    gzip.open raises where the compressed data breaks (EOFError for a file cut short,
    zlib.error or BadGzipFile for corrupt data) and drops the bytes it had decompressed for
    that read: up to a whole chunk of events that could be read. This reader instead ends
    there as at the end of the file, after the last byte it could decompress, and sets
    `broken` to why, in one line naming that decompressed byte offset; the caller tells a
    break from the end by it. `offset` counts the decompressed bytes returned so far.
    OSError (the file cannot be opened or read) is raised as it is."""

    def __init__(self, path):
        super().__init__()
        self._file = open(path, "rb", buffering=0)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._file.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        self._inflater = zlib.decompressobj(wbits=31)      # 31: a gzip header and trailer
        self._started = False       # the current member was given a byte: its end must come
        self._members = 0           # members begun, for what a bad header is called
        self._pending = b""         # compressed bytes read but not yet taken by the inflater
        self.offset = 0
        self.broken: str | None = None

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._file.fileno()      # the compressed file's

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            super().close()

    def readinto(self, buffer) -> int:
        """Fill the start of `buffer` with the next decompressed bytes: how many (at most
        len(buffer); 0 at the end of the file or at a break, see `broken`)."""
        out = memoryview(buffer).cast("B")
        while len(out) and self.broken is None:
            if not self._pending:
                self._pending = self._file.read(READ_BYTES)
                if not self._pending:
                    if self._started and not self._inflater.eof:
                        self.broken = (f"truncated gzip file: its compressed data ends before the gzip "
                                       f"end-of-stream marker, at decompressed byte offset {self.offset:,}")
                    return 0
            if self._inflater.eof:
                # a member ended: zero padding may follow (skipped, as gzip.open does), or another member
                self._pending = self._pending.lstrip(b"\0")
                if not self._pending:
                    continue
                self._inflater = zlib.decompressobj(wbits=31)
                self._started = False
            if not self._started:
                self._members += 1
            before = self._inflater.copy()      # a zlib.error keeps none of its call's output
            try:
                data = self._inflater.decompress(self._pending, len(out))
            except zlib.error as e:
                self._inflater, data, taken = _longest_good_prefix(before, self._pending, len(out))
                if not data:
                    self.broken = self._corrupt(e)
                    return 0
                self._pending = self._inflater.unconsumed_tail + self._pending[taken:]
            else:
                self._pending = self._inflater.unused_data if self._inflater.eof else self._inflater.unconsumed_tail
            self._started = True
            if data:
                out[:len(data)] = data
                self.offset += len(data)
                return len(data)
        return 0

    def _corrupt(self, error: zlib.error) -> str:
        if not self._started and not self._pending.startswith(_GZIP_MAGIC[:len(self._pending)]):
            if self._members == 1:
                return "not gzip-compressed, though named *.gz (it does not begin with the gzip bytes 1f 8b)"
            return (f"corrupt gzip file: what follows the gzip data at decompressed byte offset {self.offset:,} "
                    "is neither another gzip member nor zero padding")
        reason = str(error).split(": ", 1)[-1]      # "Error -3 while decompressing data: invalid block type"
        return f"corrupt gzip data at decompressed byte offset {self.offset:,} ({reason})"


def _longest_good_prefix(inflater, data: bytes, max_length: int):
    """(inflater, output, n): a copy of `inflater` fed the longest prefix of `data` it takes
    without a zlib.error (n bytes; `data` whole raised one), and what that gave (at most
    max_length bytes). The output ends within one compressed byte of where the data breaks."""
    good, bad = 0, len(data)
    found = inflater.copy(), b""
    while bad - good > 1:
        middle = (good + bad) // 2
        trial = inflater.copy()
        try:
            output = trial.decompress(data[:middle], max_length)
        except zlib.error:
            bad = middle
        else:
            good, found = middle, (trial, output)
    return (*found, good)


def open_trace(path: Path):
    """A trace file opened for binary reading, decompressed when named *.gz (GzipTrace:
    check its `broken` at the end). OSError as open() raises it."""
    if path.suffix == ".gz":
        return GzipTrace(path)
    return open(path, "rb", buffering=0)


def _read_file(path: Path, chunk_bytes: int, read_ahead: bool = True) -> Iterator[memoryview]:
    """The decompressed bytes of one trace file in chunks of chunk_bytes (the last shorter),
    views of a reused buffer. LoadError naming the file where it cannot be read on: a .gz
    whose data breaks after every byte before the break was yielded (GzipTrace), a plain
    file that shrinks while it is read. With `read_ahead`, a file of more than one chunk is
    read on a thread of its own, one chunk ahead of the consumer (_read_ahead)."""
    try:
        # Read, not mapped: a file truncated while mapped kills the process with SIGBUS,
        # and a reader cannot turn that into an error. Reading costs one copy from the page
        # cache (docs/performance.md: 6-7% of a replay's samples on the 2-core VM, moved to
        # the reader thread), and the page cache does not count in this process's resident
        # memory.
        with open_trace(path) as f:
            gzipped = isinstance(f, GzipTrace)
            size = os.fstat(f.fileno()).st_size
            if not gzipped and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)

            def fill(buffer: memoryview) -> int:
                filled = 0
                while filled < chunk_bytes:
                    n = f.readinto(buffer[filled:])
                    if not n:
                        break
                    filled += n
                return filled

            if read_ahead and (gzipped or size > chunk_bytes):
                done = yield from _read_ahead(fill, chunk_bytes)
            else:
                done = yield from _read_inline(fill, chunk_bytes)
            if gzipped and f.broken is not None:
                raise LoadError(f"{path}: cannot read trace: {f.broken}")
            if not gzipped and done < size:
                raise LoadError(f"{path}: truncated while being read: it ended at byte {done:,} "
                                f"of the {size:,} it had when opened")
    except FileNotFoundError:
        raise LoadError(f"{path}: no such trace file") from None
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e     # no errno, no repeated path
        raise LoadError(f"{path}: cannot read trace: {reason}") from None


def _read_inline(fill, chunk_bytes: int):
    """Chunks filled by `fill` into one buffer, each yielded before the next is read.
    Returns the bytes read."""
    buffer = memoryview(bytearray(chunk_bytes))
    done = 0
    while True:
        filled = fill(buffer)
        if filled:
            done += filled
            # valid until the next chunk is asked for (iter_chunks)
            yield buffer[:filled]
        if filled < chunk_bytes:
            return done


def _read_ahead(fill, chunk_bytes: int):
    """As _read_inline, with the next chunk read on a thread while the consumer uses this one:
    two buffers, and a chunk yielded stays untouched until the next one is asked for. The
    copy from the page cache (or gzip's inflating) then runs beside the core's decoding,
    which releases the GIL, rather than before it. An error of the reader is raised here
    after every chunk read before it, as _read_inline raises it; a consumer that stops early
    waits for the chunk being read, if any, then the thread ends."""
    ready: queue.SimpleQueue = queue.SimpleQueue()
    free: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(2):
        free.put(memoryview(bytearray(chunk_bytes)))

    def read():
        try:
            while True:
                buffer = free.get()
                if buffer is None:
                    return
                filled = fill(buffer)
                ready.put((buffer, filled))
                if filled < chunk_bytes:
                    return
        except BaseException as e:      # handed to the consumer, in its place in the stream
            ready.put(e)

    reader = threading.Thread(target=read, name="sigmatch-trace-reader", daemon=True)
    held = None
    reader.start()
    done = 0
    try:
        while True:
            item = ready.get()
            if isinstance(item, BaseException):
                raise item
            buffer, filled = item
            if held is not None:
                free.put(held)      # the chunk yielded before: the consumer asked for this one
            held = buffer
            if filled:
                done += filled
                yield buffer[:filled]
            if filled < chunk_bytes:
                return done
    finally:
        # a buffer still waiting would be filled before the reader saw the end
        while True:
            try:
                free.get_nowait()
            except queue.Empty:
                break
        free.put(None)
        reader.join()


def iter_chunks(source: Source, chunk_bytes: int | None = None, on_file=None,
                read_ahead: bool = True) -> Iterator[bytes]:
    """Yield the stream's bytes in chunks, in order. A chunk read from a file is a view of
    a reused buffer: use it (feed it, copy it) before asking for the next one. With
    `read_ahead` (the default), files of more than one chunk are read a chunk ahead on a
    thread, with a second buffer of chunk_bytes; the chunks are the same.
    `on_file(path)` is called before the first chunk of each file is asked for, so a consumer
    that counts what it took knows where each file starts in the stream."""
    if chunk_bytes is None:
        chunk_bytes = CHUNK_BYTES
    paths = _paths(source)
    if paths is not None:
        for p in paths:
            refuse_special(p, "trace")      # a pipe, say: replay reads files (run --stdin reads a stream)
            if not p.is_file():
                raise LoadError(f"{p}: no such trace file")
        for p in paths:
            if on_file is not None:
                on_file(p)
            yield from _read_file(p, chunk_bytes, read_ahead)
        return
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source).cast("B")
        for i in range(0, len(view), chunk_bytes):
            yield view[i:i + chunk_bytes]
        return
    if isinstance(source, (list, tuple)) and not source:
        return
    try:
        it = iter(source)
    except TypeError:
        raise TypeError(f"cannot replay a {type(source).__name__}: give a path, paths, bytes "
                        "or an iterable of byte chunks") from None
    for chunk in it:
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"trace chunks must be bytes, not {type(chunk).__name__}")
        yield chunk
