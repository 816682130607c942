"""The exception tree of sigmatch.

    SigmatchError                 every error sigmatch raises on purpose
    ├── ConfigError               a configuration file (or a `where`) is invalid; names file and key
    ├── LoadError                 a profile, list, area or trace file cannot be read; names the file
    ├── StreamError               the event stream is not valid msgpack; carries the byte offset
    └── CheckpointError           a checkpoint is missing, damaged, or belongs to another engine

Bad *events* are not exceptions: they are counted and written to dead letters (SPEC §1.4).
"""

from __future__ import annotations

import os

__all__ = ["SigmatchError", "ConfigError", "LoadError", "StreamError", "CheckpointError", "describe_os_error"]


class SigmatchError(Exception):
    """Base class of every error sigmatch raises on purpose."""


class ConfigError(SigmatchError):
    """A configuration is invalid. The message names the file and the key."""


class LoadError(SigmatchError):
    """An input file (profiles, list, area, trace) cannot be loaded. The message names the file.
    A trace that could not be read on part-way through a replay carries that run's stats.json
    (`stats`), as a StreamError does; None otherwise."""

    stats = None


class StreamError(SigmatchError):
    """The event stream is structurally corrupt at `offset` (counted from the first byte of the run)."""

    def __init__(self, offset: int, reason: str, detail: str | None = None, *, path=None,
                 path_offset: int | None = None):
        self.offset = offset
        self.reason = reason        # "corrupt", "too_large" or "truncated"
        self.path = path            # the trace file that holds it, when the stream came from files
        self.path_offset = path_offset      # ... and the offset inside that file
        self.stats = None           # the stats.json of the run it ended, when one was made
        where = f"byte offset {offset:,}"
        if path is not None:
            # a .gz trace's offsets are of its decompressed bytes, as every other line says them
            unpacked = "decompressed " if str(path).endswith(".gz") else ""
            where = f"{path} at {unpacked}byte offset {path_offset:,} (stream offset {offset:,})"
        super().__init__(f"event stream broken in {where}: {detail or reason}" if path is not None
                         else f"event stream broken at {where}: {detail or reason}")


class CheckpointError(SigmatchError):
    """A checkpoint cannot be used: missing, damaged, of another version or another engine."""


def describe_os_error(error: OSError) -> str:
    """An OSError in the words of a Unix tool: "PATH: No such file or directory" (the file,
    then the system's reason, without Python's class name and errno); "A -> B: reason" for a
    rename or link; the bare text when the error names no file."""
    reason = error.strerror or str(error) or type(error).__name__
    if error.filename is None:
        return reason
    where = os.fsdecode(error.filename) if isinstance(error.filename, (str, bytes)) else str(error.filename)
    if error.filename2 is not None:
        where += f" -> {os.fsdecode(error.filename2) if isinstance(error.filename2, (str, bytes)) else error.filename2}"
    return f"{where}: {reason}"
