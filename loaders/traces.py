"""Event traces as byte chunks: files (plain or gzip), bytes, or an iterator of chunks.

The traces of one replay form one stream (SPEC §1.4): an event may span two files, so
chunks are handed on as they are and the decoder stitches them together.
"""
from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Union

from engine.errors import LoadError
from loaders import refuse_special

__all__ = ["Source", "iter_chunks", "source_size", "CHUNK_BYTES"]

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


def _read_file(path: Path, chunk_bytes: int) -> Iterator[memoryview]:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                while True:
                    chunk = f.read(chunk_bytes)
                    if not chunk:
                        return
                    yield chunk
        # Read, not mapped: a file truncated while mapped kills the process with SIGBUS,
        # and a reader cannot turn that into an error. Reading costs one copy from the page
        # cache into one reused buffer (docs/performance.md: about 1% of a replay on the
        # 2-core VM), and the page cache does not count in this process's resident memory.
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            buffer = memoryview(bytearray(chunk_bytes))
            done = 0
            while True:
                filled = 0
                while filled < chunk_bytes:
                    n = f.readinto(buffer[filled:])
                    if not n:
                        break
                    filled += n
                if filled:
                    done += filled
                    # valid until the next chunk is asked for (iter_chunks)
                    yield buffer[:filled]
                if filled < chunk_bytes:
                    break
            if done < size:
                raise LoadError(f"{path}: truncated while being read: it ended at byte {done:,} "
                                f"of the {size:,} it had when opened")
    except FileNotFoundError:
        raise LoadError(f"{path}: no such trace file") from None
    except (OSError, EOFError, ValueError, zlib.error) as e:    # zlib.error: a corrupt .gz
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e     # no errno, no repeated path
        raise LoadError(f"{path}: cannot read trace: {reason}") from None


def iter_chunks(source: Source, chunk_bytes: int = CHUNK_BYTES, on_file=None) -> Iterator[bytes]:
    """Yield the stream's bytes in chunks, in order. A chunk read from a file is a view of
    one reused buffer: use it (feed it, copy it) before asking for the next one.
    `on_file(path)` is called before the first chunk of each file is asked for, so a consumer
    that counts what it took knows where each file starts in the stream."""
    paths = _paths(source)
    if paths is not None:
        for p in paths:
            refuse_special(p, "trace")      # a pipe, say: replay reads files (run --stdin reads a stream)
            if not p.is_file():
                raise LoadError(f"{p}: no such trace file")
        for p in paths:
            if on_file is not None:
                on_file(p)
            yield from _read_file(p, chunk_bytes)
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
