"""The real `sigmatch run`, with one fault put where timing alone cannot put it reliably:

    python tests/spool_faults.py FAULT -- run CONFIG --out ... --spool ...

FAULT (what happens to spool files whose name holds the word):
  vanish    the file is removed between the listing and the open;
  eacces    opening it fails with EACCES (the tests run as root, whom chmod does not stop);
  eio       its first read fails with EIO;
  grow      bytes are appended to it (from NAME.more beside the spool) while it is read;
  tail      bytes are appended to it (from NAME.more) once it has been read to its end;
  replace  a new file (NAME.more) is renamed over it once it has been read whole;
  overwrite           ... written over it in place instead (the same inode, `cp new NAME`);
  replace-crash       ... over it when the checkpoint's thread is about to move it to done/, and
                      the service dies there (kill -9), once (STATE/../crashed marks it);
  replace-stopped     ... over it after its first piece (reads are cut to 64 KiB), and the
                      service is stopped there (SIGTERM), so its checkpoint stands inside it;
  copy-crash, copy-stopped   as replace-crash and replace-stopped, but what is renamed over
                      it is a copy of the file itself (the same bytes under a new inode: a
                      spool copied or restored);
  move-crash          the service dies (kill -9) when the checkpoint's thread is about to move
                      it to done/, once, nothing renamed over it;
  out-nolocks         OUT's file system takes no locks: flock on OUT/.sigmatch-out.lock fails
                      with ENOLCK (NFS without lockd);
  no-rebase           --keep-done never gets the new checkpoint base it asks for, so the files
                      the checkpoint fallback needs stay held in done/;
  enospc-checkpoint   writing a checkpoint record fails with ENOSPC once STATE/../disk-full exists;
  enospc-sinks        writing output fails with ENOSPC (no file named) once STATE/../disk-full exists.

Everything else is the daemon as `sigmatch` runs it (tests/test_daemon_hostile.py).
"""
import errno
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.service import daemon as daemon_module  # noqa: E402
from engine.service.daemon import SpoolDaemon  # noqa: E402

fault, separator, *argv = sys.argv[1:]
assert separator == "--", "usage: spool_faults.py FAULT -- run ..."


def more_of(path: Path) -> bytes:
    return (path.parent.parent / f"{path.name}.more").read_bytes()


class Reading:
    """A spool file opened by the daemon, its reads passed through a hook."""

    def __init__(self, f, path: Path, on_read):
        self.f, self.path, self.on_read, self.reads = f, path, on_read, 0

    def readinto(self, buffer):
        self.reads += 1
        return self.on_read(self, buffer)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


if fault == "vanish":
    listing = SpoolDaemon._pending_files

    def _pending_files(self):
        ready, settling = listing(self)
        for path in ready:
            if "vanish" in path.name:
                path.unlink(missing_ok=True)
        return ready, settling

    SpoolDaemon._pending_files = _pending_files

elif fault == "eacces":
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if "eacces" in os.fspath(path) and "/rejected/" not in os.fspath(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    os.open = refusing_open

elif fault in ("eio", "grow"):
    opening = SpoolDaemon._open_spool_file

    def on_read(reading, buffer):
        if fault == "eio":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        n = reading.f.readinto(buffer)
        if reading.reads == 1:
            with open(reading.path, "ab") as f:
                f.write(more_of(reading.path))
        return n

    def _open_spool_file(self, path):
        f = opening(self, path)
        if f is not None and fault in path.name:
            return Reading(f, path, on_read)
        return f

    SpoolDaemon._open_spool_file = _open_spool_file

elif fault == "tail":
    processing = SpoolDaemon._process_file

    def _process_file(self, path):
        processing(self, path)
        if "tail" in path.name and path.name in self.uncommitted + self.covered:
            with open(path, "ab") as f:
                f.write(more_of(path))

    SpoolDaemon._process_file = _process_file

elif fault in ("replace", "overwrite", "replace-crash", "replace-stopped", "copy-crash", "copy-stopped",
               "move-crash"):
    def rename_over(path: Path) -> None:
        new = path.parent / f".{path.name}.new"
        new.write_bytes(path.read_bytes() if fault.startswith("copy") else more_of(path))
        os.replace(new, path)

    if fault in ("replace", "overwrite"):
        processing = SpoolDaemon._process_file
        replaced = set()

        def _process_file(self, path):
            processing(self, path)
            if fault in path.name and path.name in self.uncommitted + self.covered and path not in replaced:
                replaced.add(path)
                if fault == "replace":
                    rename_over(path)
                else:
                    with open(path, "r+b") as f:
                        f.truncate(0)
                        f.write(more_of(path))

        SpoolDaemon._process_file = _process_file
    elif fault.endswith("-crash"):
        state = Path(argv[argv.index("--state") + 1])
        crashed = state.parent / "crashed"
        moving = SpoolDaemon._move_done

        def _move_done(self, name, size, target=None, ident=None, broken=None):
            if "crash" in name and not crashed.exists():
                crashed.touch()
                if fault != "move-crash":
                    rename_over(self.spool / name)
                os._exit(9)
            return moving(self, name, size, target, ident, broken)

        SpoolDaemon._move_done = _move_done
    else:
        daemon_module.FEED_BYTES = 64 << 10
        processing, reading = SpoolDaemon._process_file, SpoolDaemon._read_piece
        current = []

        def _process_file(self, path):
            current[:] = [path]
            processing(self, path)

        def _read_piece(self, f):
            n = reading(self, f)
            path = current[0]
            if "stopped" in path.name and not self.stop.is_set():
                self.stop.set()
                rename_over(path)
            return n

        SpoolDaemon._process_file, SpoolDaemon._read_piece = _process_file, _read_piece

elif fault == "out-nolocks":
    import fcntl
    real_flock = fcntl.flock

    def flock(fd, operation):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/.sigmatch-out.lock"):
            raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
        return real_flock(fd, operation)

    fcntl.flock = flock

elif fault == "no-rebase":
    from engine.service.checkpoint import CheckpointStore
    CheckpointStore.rebase_next = lambda self: None

elif fault in ("enospc-checkpoint", "enospc-sinks"):
    state = Path(argv[argv.index("--state") + 1])
    full = state.parent / "disk-full"

    def no_space():
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if fault == "enospc-checkpoint":
        real_write = os.write

        def write(fd, data):
            if full.exists() and os.readlink(f"/proc/self/fd/{fd}").startswith(str(state / "log-")):
                raise no_space()
            return real_write(fd, data)

        os.write = write
    else:
        from engine.sinks import SinkSet
        real_actions = SinkSet.write_actions

        def write_actions(self, records):
            if full.exists():
                raise no_space()
            return real_actions(self, records)

        SinkSet.write_actions = write_actions
else:
    sys.exit(f"unknown fault {fault!r}")

assert daemon_module.SpoolDaemon is SpoolDaemon
from engine.cli import main  # noqa: E402

main(argv, prog_name="sigmatch")
