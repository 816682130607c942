"""Everything that reads the outside world: profiles, lists, areas and traces."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from engine.errors import LoadError

__all__ = ["refuse_special", "usable_cores"]


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (what taskset or a container's
    cpuset leaves it; a CPU quota is not counted), or every core where the system has no
    affinity (os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def refuse_special(path: Path, what: str) -> None:
    """LoadError for a path that exists but is no regular file: a FIFO would block the load
    for ever, a device (/dev/zero) would fill the memory. A missing file is left to the
    read, which names it."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a pipe" if stat.S_ISFIFO(mode) else "a device or socket"
        raise LoadError(f"{path}: cannot read {what}: {kind}, not a regular file")
