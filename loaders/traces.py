"""Event traces as byte chunks: files (plain or gzip), bytes, or an iterator of chunks.

The traces of one replay form one stream (SPEC §1.4): an event may span two files, so
chunks are handed on as they are and the decoder stitches them together.
"""
from __future__ import annotations

import gzip
import mmap
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Union

from engine.errors import LoadError

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


def _read_file(path: Path, chunk_bytes: int) -> Iterator[bytes]:
    try:
        if path.suffix != ".gz" and path.stat().st_size > 0:
            # A plain file is mapped, not read: the decoder works on the page cache directly,
            # with no copy. The map closes once the last chunk view is gone.
            with open(path, "rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            if hasattr(mapped, "madvise"):
                mapped.madvise(mmap.MADV_SEQUENTIAL)
            view = memoryview(mapped)
            for i in range(0, len(view), chunk_bytes):
                yield view[i:i + chunk_bytes]
                # Pages already decoded are handed back, so that a trace of many GB does not
                # sit in this process's resident memory (re-reading them would be correct).
                if hasattr(mmap, "MADV_DONTNEED") and i % mmap.PAGESIZE == 0:
                    mapped.madvise(mmap.MADV_DONTNEED, i, min(chunk_bytes, len(view) - i))
            return
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            while True:
                chunk = f.read(chunk_bytes)
                if not chunk:
                    return
                yield chunk
    except FileNotFoundError:
        raise LoadError(f"{path}: no such trace file") from None
    except (OSError, EOFError, ValueError) as e:
        raise LoadError(f"{path}: cannot read trace: {e}") from None


def iter_chunks(source: Source, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Yield the stream's bytes in chunks, in order."""
    paths = _paths(source)
    if paths is not None:
        for p in paths:
            if not p.is_file():
                raise LoadError(f"{p}: no such trace file")
        for p in paths:
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
