"""What the `python -m bench.X` commands share: option types with `sigmatch gen`'s bounds,
the folders and manifests of their worlds, files readable by owner and group only, and errors
said in one line, as every sigmatch command says them (never a traceback)."""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from engine.errors import SigmatchError, describe_os_error

__all__ = ["SUBSCRIBERS", "EVENTS", "CAMPAIGNS", "CommandError", "whole_number", "given_folder", "folder",
           "world_manifest", "named", "relative", "child_error", "run_child", "write_private", "make_private",
           "command", "parser"]

# `sigmatch gen`'s bounds (engine.world.gen.check_arguments): every benchmark's world is one of
# gen's, and a size it refuses is said as the benchmark's option, before anything is made
SUBSCRIBERS = (100, 500_000_000)
EVENTS = (1, 10**11)
CAMPAIGNS = (0, 10_000)

class CommandError(SigmatchError, ValueError):
    """A benchmark's error, said in one line as `PROG: error: LINE` (exit 1) by `command`, and
    by `sigmatch bench` as its own (a SigmatchError); a ValueError to library callers."""


def whole_number(low: int, high: Optional[int] = None) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high` (no bound when None). Its errors
    are argparse's one line naming the option, e.g. `argument --rounds: must be at least 1, not 0`."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if n < low or (high is not None and n > high):
            bounds = f"at least {low:,}" if high is None else f"from {low:,} to {high:,}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, not {n:,}")
        return n
    return parse


# Where a command notes that a folder is its own: it writes, and removes, files there
OWNER_FILE = ".sigmatch-bench"


def given_folder(text: str) -> Path:
    """An argparse type for a folder option: an empty one (the current folder, to Path) is
    refused, as a benchmark writes and removes its files in the folder it is given. The path
    is made absolute: the benchmarks' child processes run in other folders (the checkout)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty: give a folder")
    return Path(os.path.abspath(text))


def folder(path: Path, option: str, owner: Optional[str] = None) -> Path:
    """Make the folder `path` (and its parents) for a benchmark's world or output, or raise
    CommandError naming `option`: a link to nothing on the way, a file in its place, or a folder
    the system will not make (`--directory /proc/nope: No such file or directory`). With
    `owner` (the command, `bench.sweep`), the folder must be new, empty or already the
    command's own (OWNER_FILE, written first, so a run cut short leaves it the command's):
    the command writes and removes files there, and a user's files are never among them."""
    from engine.sinks import dangling_on_the_way      # pyarrow: not at every command's start
    path = Path(path)
    if dangling := dangling_on_the_way(path):
        raise CommandError(f"{option} {dangling}" if dangling.startswith(f"{path} ") else f"{option} {path}: {dangling}")
    try:
        if path.exists() and not path.is_dir():
            raise CommandError(f"{option} {path}: not a folder")
        path.mkdir(parents=True, exist_ok=True)
        if owner is None:
            return path
        mark = path / OWNER_FILE
        if mark.is_file():
            held = mark.read_bytes().decode("utf-8", "replace").strip()
            if held != owner and re.fullmatch(r"bench\.\w+", held):
                raise CommandError(f"{option} {path}: holds the worlds of {held}, not {owner}'s: give another folder")
            if held != owner:
                raise CommandError(f"{option} {path}: its {OWNER_FILE} does not name {owner}: give another folder")
        elif any(path.iterdir()):
            raise CommandError(f"{option} {path}: holds files that are not {owner}'s, and it writes and removes "
                               f"its own there: give a new or empty folder")
        else:
            write_private(mark, owner + "\n")
        _hold(mark, option, path, owner)
    except OSError as e:
        reason = e.strerror if e.strerror and e.filename in (str(path), path) else describe_os_error(e)
        raise CommandError(f"{option} {path}: {reason}") from None
    return path


# the marks this process holds locked, until it ends: two runs in one folder would make and
# remove the same files under each other
_HELD: dict = {}


def _hold(mark: Path, option: str, path: Path, owner: str) -> None:
    """Lock `mark` (flock, exclusive) for the rest of the process, or raise CommandError when
    another run holds it."""
    import fcntl
    key = os.path.abspath(mark)
    if key in _HELD:
        return
    fd = os.open(mark, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CommandError(f"{option} {path}: another run of {owner} is using it; wait for it to end, or give "
                           f"another folder") from None
    _HELD[key] = fd


def world_manifest(manifest: Path, wanted: dict, needs: Optional[dict] = None) -> Optional[dict]:
    """The manifest's record when it holds `wanted` under "world" and, under each key of
    `needs`, a value of its type: str (a file's name, relative to the manifest's folder: see
    `named`), int, or list (a non-empty list of names); else None, once the manifest is
    removed. A world is written after that and its manifest last (write_private), so a
    generation cut short (Ctrl-C, a full disk), or a manifest that does not parse or holds
    something else, is never taken for the world: the next run makes it again."""
    def holds(value, kind) -> bool:
        if kind is list:
            return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)
        return isinstance(value, kind) and not isinstance(value, bool)
    try:
        known = json.loads(manifest.read_text())
        if (isinstance(known, dict) and known.get("world") == wanted
                and all(holds(known.get(key), kind) for key, kind in (needs or {}).items())):
            return known
    except (OSError, ValueError, RecursionError):
        pass
    try:
        manifest.unlink()
    except FileNotFoundError:
        pass
    return None


def named(manifest: Path, name: str) -> Path:
    """A file a manifest names, from its folder: names are written relative to it (`relative`),
    so a world folder moved elsewhere is still the world it holds (older manifests wrote
    absolute paths, which this reads as they are)."""
    return Path(manifest).parent / name


def relative(manifest: Path, path: Path) -> str:
    """`path` as a manifest in `manifest`'s folder names it (see `named`)."""
    return os.path.relpath(path, Path(manifest).parent)


def child_error(prog: str, stderr: str, returncode: Optional[int] = None) -> str:
    """The line a benchmark's child process ended with, without its own `PROG: error: `
    (the parent says its own), or a traceback's last line; for a child that a signal ended
    (`returncode` < 0) and said nothing, the signal (SIGKILL: the system's out-of-memory
    killer, most often)."""
    said = stderr.strip().splitlines()
    if said:
        return said[-1].removeprefix(f"{prog}: error: ")
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        why = " (out of memory? the system kills with it)" if name == "SIGKILL" else ""
        return f"the benchmark's child process was killed by {name}{why}"
    return "the benchmark's child process failed, saying nothing"


def run_child(command: list, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(command, capture_output=True, text=True, **kwargs), except on Ctrl-C:
    the child has the same signal and is given 30 s to clean up (its temporary folders)
    before it is killed, where subprocess.run kills it at once."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs) as proc:
        try:
            out, err = proc.communicate()
        except KeyboardInterrupt:
            deadline = time.monotonic() + 30
            while True:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                    break
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    break
                except KeyboardInterrupt:
                    continue        # Ctrl-C again (or the signal sent twice): the child still cleans up
            raise
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` as the sinks write their files (engine.sinks.write_private:
    mode 0640, a temporary name renamed over it, so a manifest is whole or absent)."""
    from engine.sinks import write_private as write_whole
    path = Path(path)
    write_whole(path.with_name(f".{path.name}.tmp"), path, text.encode())


def make_private(*paths: Path) -> None:
    """engine.sinks.FILE_MODE (0640: the worlds hold subscriber numbers, shaped as real ones)
    for each of `paths` that is a file."""
    from engine.sinks import FILE_MODE
    for path in paths:
        if Path(path).is_file():
            os.chmod(path, FILE_MODE)


def _terminated(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM (timeout, kill, a CI runner) ends what runs inside as Ctrl-C does, where its
    default ended the process at once: temporary worlds are removed, children waited for,
    and the command says `aborted` in one line. The handler before is put back after."""
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def command(prog: str):
    """Run a benchmark's `main` as a command: a CommandError, an OSError, a sigmatch error or
    running out of memory is said in one line, `PROG: error: LINE`, Ctrl-C and SIGTERM as
    `PROG: error: aborted`, exit 1."""
    def wrap(main):
        @functools.wraps(main)
        def run(*args, **kwargs):
            try:
                with sigterm_as_ctrl_c():
                    return main(*args, **kwargs)
            except KeyboardInterrupt:
                line = "aborted"
            except SigmatchError as e:          # CommandError among them
                line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            except OSError as e:
                line = describe_os_error(e)
            except MemoryError:
                line = "out of memory"
            print(f"{prog}: error: {line}", file=sys.stderr)
            raise SystemExit(1)
        return run
    return wrap


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line, `PROG: error: WHAT (see --help)`,
    exit status 2, as the commands' other errors are (argparse prints its usage block
    first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parser(prog: str, doc: str, *, subscribers: Optional[int] = None, events: Optional[int] = None,
           bounds: tuple[int, int] = SUBSCRIBERS) -> argparse.ArgumentParser:
    """An argparse parser named as the command is run (`python -m bench.sweep`), its
    description the module's first line, its errors one line (OneLineParser); with
    `subscribers` and `events`, the options --subscribers (within `bounds`) and --events of
    its world, with those defaults."""
    made = OneLineParser(prog=prog, description=doc.splitlines()[0])
    if subscribers is not None:
        made.add_argument("--subscribers", type=whole_number(*bounds), default=subscribers,
                          help=f"the world's subscribers (default: {subscribers:,})")
    if events is not None:
        made.add_argument("--events", type=whole_number(*EVENTS), default=events,
                          help=f"the world's events (default: {events:,})")
    return made
