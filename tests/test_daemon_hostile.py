"""`sigmatch run` under hostile conditions (issue 8): spool files that are links, of another
owner, not regular files, unreadable, vanishing, written in place, truncated while read;
reloads of configurations that break the loaders; done/ pruned without breaking the
fallback to an older checkpoint; error texts that name the file, the offset inside it and
the path that failed. Each case runs the real daemon as a subprocess; where timing alone
cannot put a fault at one moment reliably, tests/spool_faults.py puts it there."""
import csv
import json
import os
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import Engine
from engine.world.gen import generate

ROOT = Path(__file__).resolve().parent.parent
FAULTS = ROOT / "tests" / "spool_faults.py"
NOBODY = 65534


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small world whose trace is cut into 12 files at event boundaries, named so that name
    order is the trace's order."""
    directory = tmp_path_factory.mktemp("hostile-world")
    generated = generate(directory, subscribers=5_000, events=60_000, campaigns=4, seed=3, trace_files=12)
    traces = [(f"t-{i:02d}.msgpack", path.read_bytes()) for i, path in enumerate(generated.traces, 1)]
    return generated.config, traces


def fill(spool: Path, traces) -> None:
    spool.mkdir(exist_ok=True)
    for name, data in traces:
        (spool / f".{name}.part").write_bytes(data)
        os.replace(spool / f".{name}.part", spool / name)


def start(config, spool, out, state, *args, fault=None, umask=None, verbose=True):
    """The daemon as a subprocess (through the fault harness when `fault`), once it has told
    systemd READY=1. Its stderr goes to a file (`proc.log_path`): read while it runs, and
    never a pipe that fills."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(Path(spool).parent / f"notify-{random.randrange(10**9)}.sock")
    listener.bind(address)
    listener.settimeout(60)
    command = [sys.executable, "-m", "engine.cli"] if fault is None else [sys.executable, str(FAULTS), fault, "--"]
    command += (["-v"] if verbose else []) + ["run", str(config), "--out", str(out), "--state", str(state),
                                             "--spool", str(spool), *args]
    log_path = Path(spool).parent / f"daemon-{random.randrange(10**9)}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "NOTIFY_SOCKET": address},
                                stdout=subprocess.DEVNULL, stderr=log, text=True,
                                preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    proc.log_path = log_path
    with listener:
        try:
            assert listener.recv(64) == b"READY=1"
        except socket.timeout:
            proc.kill()
            proc.wait()
            pytest.fail(f"the daemon did not start: {log_path.read_text()[-3000:]}")
    return proc


def log_of(proc) -> str:
    return proc.log_path.read_text()


def stop(proc) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, log_of(proc)


def wait_for(predicate, what: str, proc=None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the daemon ended ({proc.returncode}) waiting for {what}: {log_of(proc)[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def drained(spool: Path) -> bool:
    return not list(spool.glob("*.msgpack"))


def actions(out: Path) -> list[tuple]:
    found = []
    for path in sorted(out.rglob("actions-*.csv")):
        with open(path, newline="") as f:
            found += [tuple(r.values()) for r in csv.DictReader(f)]
    return sorted(found)


def expected_actions(config, data) -> list[tuple]:
    run = Engine.from_config(config).replay(data)
    columns = run.action_columns()
    return sorted(tuple(str(columns[k][i]) for k in columns) for i in range(len(run.actions)))


def no_traceback(log: str) -> None:
    assert "Traceback" not in log, log[-3000:]


# --------------------------------------------------------------------------- item 1: what is read

def test_links_foreign_files_and_non_regular_files_go_unread_to_rejected(world, tmp_path):
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    fill(spool, traces)
    secret = tmp_path / "lookup.token"
    secret.write_bytes(b"\xa6s3cret" * 50)      # msgpack strings: as input, each a dead letter
    bad = {
        "t-00-link.msgpack": "symbolic link",
        "t-03-foreign.msgpack": "not an allowed spool owner",
        "t-05-dir.msgpack": "a directory, not a regular file",
        "t-07-fifo.msgpack": "a FIFO, not a regular file",
        "t-09-dangling.msgpack": "symbolic link",
    }
    (spool / "t-00-link.msgpack").symlink_to(secret)
    (spool / "t-03-foreign.msgpack").write_bytes(traces[0][1])
    os.chown(spool / "t-03-foreign.msgpack", NOBODY, NOBODY)
    (spool / "t-05-dir.msgpack").mkdir()
    os.mkfifo(spool / "t-07-fifo.msgpack")
    (spool / "t-09-dangling.msgpack").symlink_to(tmp_path / "nowhere")

    proc = start(config, spool, out, state, "--settle", "0")
    wait_for(lambda: drained(spool), "the spool to drain", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    no_traceback(log)
    assert actions(out) == expected_actions(config, [data for _, data in traces])
    rejected = spool / "rejected"
    for name, why in bad.items():
        assert os.path.lexists(rejected / name), name
        assert why in (rejected / f"{name}.reason").read_text(), name
        lines = [line for line in log.splitlines() if name in line]
        assert len(lines) == 1 and "rejected, never read" in lines[0], lines
    assert os.path.islink(rejected / "t-00-link.msgpack")      # the link moved, not its target
    assert secret.read_bytes() == b"\xa6s3cret" * 50
    assert not any(b"s3cret" in p.read_bytes() or b"73336372" in p.read_bytes()
                   for p in out.rglob("*") if p.is_file())
    assert sorted(p.name for p in (spool / "done").iterdir()) == [name for name, _ in traces]

    # a restart does not meet them again
    proc = start(config, spool, out, state, "--settle", "0")
    code, log = stop(proc)
    assert code == 0 and "rejected" not in log, log[-3000:]


@pytest.mark.parametrize("how", ["--spool-owner", "spool directory owner"])
def test_a_foreign_owner_is_read_when_allowed(world, tmp_path, how):
    """Probes often write as another user: --spool-owner names them, and by default the
    spool directory's owner is allowed."""
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    fill(spool, traces)
    for name, _ in traces[::2]:
        os.chown(spool / name, NOBODY, NOBODY)
    args = ["--settle", "0"]
    if how == "--spool-owner":
        args += ["--spool-owner", "daemon,nobody", "--spool-owner", "0"]
    else:
        os.chown(spool, NOBODY, NOBODY)
    proc = start(config, spool, out, state, *args)
    wait_for(lambda: drained(spool), "the spool to drain", proc)
    code, log = stop(proc)
    assert code == 0 and "rejected" not in log, log[-3000:]
    assert actions(out) == expected_actions(config, [data for _, data in traces])


def test_an_unknown_spool_owner_is_one_line(world, tmp_path):
    config, _ = world
    (tmp_path / "spool").mkdir()
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(config), "--out", str(tmp_path / "out"),
                           "--state", str(tmp_path / "state"), "--spool", str(tmp_path / "spool"),
                           "--spool-owner", "no-such-user-here"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == ["sigmatch: error: --spool-owner 'no-such-user-here': no such user"]


def edited_beside(config: Path, edited: Path, old: str, new: str) -> Path:
    """`config` with its first `old` made `new`, written as `edited`; the configuration's
    other files are linked beside it, since its relative paths are its own folder's."""
    text = config.read_text()
    assert old in text
    edited.write_text(text.replace(old, new, 1))
    for item in config.parent.iterdir():
        if item != config and not (edited.parent / item.name).exists():
            (edited.parent / item.name).symlink_to(item)
    return edited


def test_a_missing_list_is_one_line_and_makes_no_folder(world, tmp_path):
    """A file the configuration names that is not there is said with its key before the
    service makes its --out and --state (they were made, and left, for nothing)."""
    config, _ = world
    (tmp_path / "spool").mkdir()
    broken = edited_beside(config, tmp_path / "broken.toml", "[lists]\n", '[lists]\ngone = "gone.txt"\n')
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(broken), "--out", str(tmp_path / "out"),
                           "--state", str(tmp_path / "state"), "--spool", str(tmp_path / "spool")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        f"sigmatch: error: {broken}: lists.gone: {tmp_path / 'gone.txt'}: no such list file"], proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()


# --------------------------------------------------------------------------- item 3: modes

@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_what_the_service_creates_is_0640_and_its_directories_0750(world, tmp_path, umask):
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out" / "nested", tmp_path / "state" / "nested"
    traces = [(name.replace("t-03", "t-03-tail"), data) for name, data in traces]
    fill(spool, traces)
    (tmp_path / "t-03-tail.msgpack.more").write_bytes(traces[0][1])
    (spool / "t-00-link.msgpack").symlink_to(tmp_path / "nowhere")
    proc = start(config, spool, out, state, "--settle", "0", fault="tail", umask=umask)
    wait_for(lambda: drained(spool), "the spool to drain", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]

    def mode(path):
        return stat.S_IMODE(os.lstat(path).st_mode)

    directories = [out, out.parent, state, state.parent, spool / "done", spool / "rejected"]
    assert {str(d): oct(mode(d)) for d in directories} == {str(d): "0o750" for d in directories}
    files = (list(state.glob("base-*")) + list(state.glob("log-*")) + list((spool / "rejected").glob("*.reason"))
             + list((spool / "rejected").glob("*.tail-*")))
    assert any(p.name.startswith("log-") for p in files) and any(".tail-" in p.name for p in files)
    assert {p.name: oct(mode(p)) for p in files} == {p.name: "0o640" for p in files}


# --------------------------------------------------------------------------- item 4: vanished, unreadable

@pytest.mark.parametrize("fault", ["vanish", "eacces", "eio"])
def test_a_vanished_or_unreadable_file_is_logged_set_aside_and_never_met_again(world, tmp_path, fault):
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    name = f"t-04-{fault}.msgpack"
    fill(spool, traces + [(name, traces[3][1])])
    proc = start(config, spool, out, state, "--settle", "0", fault=fault)
    wait_for(lambda: drained(spool), "the spool to drain", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    no_traceback(log)
    assert actions(out) == expected_actions(config, [data for _, data in traces])
    lines = [line for line in log.splitlines() if name in line]
    assert len(lines) == 1, lines
    if fault == "vanish":
        assert "vanished before it was read" in lines[0]
        assert not (spool / "rejected").exists()
    else:
        why = "cannot be opened: Permission denied" if fault == "eacces" else "read error at byte 0: Input/output error"
        assert why in lines[0] and why in (spool / "rejected" / f"{name}.reason").read_text()
        assert (spool / "rejected" / name).read_bytes() == traces[3][1]
    proc = start(config, spool, out, state, "--settle", "0", fault=fault)
    code, log = stop(proc)
    assert code == 0 and name not in log, log[-3000:]


# --------------------------------------------------------------------------- item 5: written in place

def test_a_file_written_in_place_is_read_once_it_has_settled(world, tmp_path):
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    spool.mkdir()
    # a probe writing in place, in pieces 0.05 s apart; the margin is wide (a stall of this
    # test longer than --settle would let the file be read early)
    proc = start(config, spool, out, state, "--settle", "5")
    data = b"".join(d for _, d in traces[:6])
    with open(spool / "t-01.msgpack", "wb") as f:
        for i in range(0, len(data), len(data) // 10):
            f.write(data[i:i + len(data) // 10])
            f.flush()
            time.sleep(0.05)
    fill(spool, [("t-02.msgpack", b"".join(d for _, d in traces[6:]))])
    wait_for(lambda: drained(spool), "the spool to drain", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    assert actions(out) == expected_actions(config, [data for _, data in traces])
    assert not (spool / "rejected").exists() and "grew" not in log


def test_a_file_that_grows_while_it_is_read_is_read_to_its_end(world, tmp_path):
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    grown = [(name.replace("t-05", "t-05-grow"), data) for name, data in traces]
    fill(spool, grown)
    (tmp_path / "t-05-grow.msgpack.more").write_bytes(traces[0][1])
    proc = start(config, spool, out, state, "--settle", "0", fault="grow")
    wait_for(lambda: drained(spool), "the spool to drain", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    # still the file being read, no later one fed: its new bytes are in stream order
    stream = [d + (traces[0][1] if "grow" in n else b"") for n, d in grown]
    assert actions(out) == expected_actions(config, stream)
    assert "t-05-grow.msgpack: grew from" in log
    assert (spool / "done" / "t-05-grow.msgpack").read_bytes() == traces[4][1] + traces[0][1]


def test_a_tail_appended_after_later_files_were_processed_goes_to_rejected_with_its_offset(world, tmp_path):
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    tailed = [(name.replace("t-05", "t-05-tail"), data) for name, data in traces]
    fill(spool, tailed)
    late = traces[0][1][:1000]
    (tmp_path / "t-05-tail.msgpack.more").write_bytes(late)
    port = free_port()
    proc = start(config, spool, out, state, "--settle", "0", "--metrics", f"127.0.0.1:{port}", fault="tail")
    wait_for(lambda: drained(spool), "the spool to drain", proc)
    size = len(traces[4][1])
    tail = spool / "rejected" / f"t-05-tail.msgpack.tail-{size}"
    wait_for(tail.exists, "the tail in rejected/", proc)
    wait_for(lambda: metric(port, "sigmatch_spool_tails_rejected_total") == 1, "the tail's metric", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    assert actions(out) == expected_actions(config, [data for _, data in traces])
    assert tail.read_bytes() == late
    assert (spool / "done" / "t-05-tail.msgpack").read_bytes() == traces[4][1]
    reason = (spool / "rejected" / f"{tail.name}.reason").read_text()
    assert f"from byte {size:,} on" in reason
    assert f"moved to rejected/{tail.name} (they start at byte {size:,} of the file)" in log


# --------------------------------------------------------------------------- item 6: truncated while read

def _position(pid: int, path: Path):
    """The file offset of `pid`'s open descriptor of `path` (None while it has none)."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                        return int(f.readline().split()[1])
            except OSError:
                continue
    except OSError:
        pass
    return None


def _truncate_while_read(proc, path: Path, size: int, past: int = 1) -> int:
    """Truncate `path` to a third once `proc` has read `past` bytes of it and before it is
    through; returns the offset the reader stood at."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        at = _position(proc.pid, path)
        if at and past <= at < size:
            # The reader is held still while the file is cut: between seeing its position and
            # truncating, a fast reader could otherwise finish the file and never see the cut.
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                while _state(proc.pid) not in ("T", "t", None):
                    time.sleep(0.001)
                at = _position(proc.pid, path)
                if at and past <= at < size:
                    os.truncate(path, size // 3)
                    return at
            finally:
                os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.001)
    pytest.fail(f"never saw {path.name} being read part-way (exit {proc.poll()})")


def _state(pid: int):
    """The process state letter of /proc/PID/stat ("T" once stopped), None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def test_a_file_truncated_while_read_is_logged_and_the_service_goes_on(world, tmp_path):
    from engine.service.daemon import FEED_BYTES
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    spool.mkdir()
    big = b"".join(d for _, d in traces) * 40
    assert len(big) > 12 * FEED_BYTES
    proc = start(config, spool, out, state, "--settle", "0")
    fill(spool, [("t-01-big.msgpack", big)])
    at = _truncate_while_read(proc, spool / "t-01-big.msgpack", len(big))
    fill(spool, [("t-02.msgpack", traces[0][1])])
    wait_for(lambda: drained(spool), "the spool to drain", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]          # not 135: a mapped file truncated kills with SIGBUS
    no_traceback(log)
    assert "t-01-big.msgpack: truncated while it was read" in log, (at, log[-3000:])
    assert "t-02.msgpack" not in log        # the next file is read as any other
    assert (spool / "done" / "t-02.msgpack").exists()


def test_replay_of_a_trace_truncated_while_read_is_a_one_line_error(world, tmp_path):
    from loaders.traces import CHUNK_BYTES
    config, traces = world
    trace = tmp_path / "big.msgpack"
    big = b"".join(d for _, d in traces) * 40
    assert len(big) > 6 * CHUNK_BYTES
    trace.write_bytes(big)
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "replay", str(config), str(trace),
                             "--out", str(tmp_path / "out"), "--no-progress"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # past the first chunk: replay first reads the head of each trace on a descriptor of its
    # own (loaders.sniff, up to 4 MiB), and a cut seen there would be the size the reading
    # itself opens, so the trace would read as whole
    _truncate_while_read(proc, trace, len(big), past=CHUNK_BYTES)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err      # not -7 (SIGBUS)
    assert len(err.strip().splitlines()) == 1, err
    assert re.fullmatch(rf"sigmatch: error: {re.escape(str(trace))}: truncated while being read: it ended at "
                        rf"byte [\d,]+ of the {len(big):,} it had when opened", err.strip()), err


# --------------------------------------------------------------------------- item 7: bad reloads

def test_a_reload_that_fails_in_any_way_leaves_the_running_configuration(world, tmp_path):
    config, traces = world
    work = tmp_path / "w"
    shutil.copytree(config.parent, work, ignore=shutil.ignore_patterns("*.msgpack"))
    config = work / config.name
    good = config.read_text()
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    fill(spool, traces[:6])
    proc = start(config, spool, out, state, "--settle", "0")
    wait_for(lambda: drained(spool), "the first half", proc)
    bad = [
        "x = " + "[" * 3000 + "]" * 3000 + "\n" + good,                    # RecursionError in tomllib
        good.replace('"lists/staff.roar"', '"lists/staff.csv"'),           # a 200 KB header field
        good.replace("[policy]", "[policy]\nmax_per_day = " + "9" * 5000),  # digits past int()'s limit
    ]
    (work / "lists" / "staff.csv").write_text("x" * 200_000 + "\n13800138000\n")
    for i, text in enumerate(bad, 1):
        config.write_text(text)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: log_of(proc).count("reload rejected") == i, f"reload {i} to be rejected", proc)
    config.write_text(good)
    fill(spool, traces[6:])
    wait_for(lambda: drained(spool), "the second half", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    no_traceback(log)
    rejected = [line for line in log.splitlines() if "reload rejected" in line]
    assert len(rejected) >= 3, log[-3000:]
    assert all(len(line) < 600 for line in rejected)
    assert "reloaded" not in log
    assert actions(out) == expected_actions(config, [data for _, data in traces])


# --------------------------------------------------------------------------- item 11: --keep-done

def damage(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("where", ["newest record", "base"])
def test_keep_done_never_takes_what_the_fallback_to_an_older_checkpoint_needs(world, tmp_path, where):
    """Every file in done/ is due (three hours old, --keep-done 1h), but those the records of
    the newest checkpoint generation moved are what a fallback brings back: they stay (the
    new base that would release them is withheld here), and after the newest checkpoint
    or base is damaged the output is still exact."""
    from engine.service.checkpoint import RECORD_MAGIC, CheckpointStore
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    half = len(traces) // 2
    fill(spool, traces[:half])
    proc = start(config, spool, out, state, "--settle", "0", "--checkpoint-every", "0")
    wait_for(lambda: drained(spool), "the first half", proc)
    assert stop(proc)[0] == 0
    done = spool / "done"
    aged = set()        # files made older than --keep-done allows: all of them are due
    for path in done.iterdir():
        os.utime(path, (time.time() - 3 * 3600,) * 2)
        aged.add(path.name)
    fill(spool, [traces[half]])
    proc = start(config, spool, out, state, "--settle", "0", "--checkpoint-every", "0", "--keep-done", "1h",
                 fault="no-rebase")
    wait_for(lambda: drained(spool), "one more file", proc)
    wait_for(lambda: "the checkpoint fallback needs them" in log_of(proc), "files held for the fallback", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    store = CheckpointStore(state)
    newest = store.generations()[0]
    needed = {name for extra in store._record_extras(newest) for name in extra.get("moving") or []}
    kept = {p.name for p in done.iterdir()}
    assert needed and needed <= kept, (needed, kept)
    assert {p.name for p in done.iterdir() if p.name != traces[half][0]} <= aged
    base = store.base_path(newest)
    log_file = store.log_path(newest)
    if where == "newest record":
        damage(log_file, log_file.read_bytes().rindex(RECORD_MAGIC) + 200)
    else:
        assert len(store.generations()) == 2, "this world rebases often"
        damage(base, base.stat().st_size - 10)
    fill(spool, traces[half + 1:])
    proc = start(config, spool, out, state, "--settle", "0", "--keep-done", "1h")
    wait_for(lambda: drained(spool), "the second half", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    assert "cannot use checkpoint" in log and "gone from done/" not in log
    assert actions(out) == expected_actions(config, [data for _, data in traces])


def test_keep_done_by_age_and_the_bytes_kept_metric(world, tmp_path):
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    fill(spool, traces)
    port = free_port()
    proc = start(config, spool, out, state, "--settle", "0", "--keep-done", "2h", "--metrics", f"127.0.0.1:{port}")
    wait_for(lambda: drained(spool), "the spool to drain", proc)
    done = spool / "done"
    wait_for(lambda: len(list(done.iterdir())) == len(traces), "every file in done/", proc)
    wait_for(lambda: metric(port, "sigmatch_spool_done_bytes") == sum(len(d) for _, d in traces),
             "the bytes in done/", proc)
    # the first files are made three hours old; a file arrives, the spool runs empty: pruned
    old = [name for name, _ in traces[:4]]
    for name in old:
        os.utime(done / name, (time.time() - 3 * 3600,) * 2)
    fill(spool, [("t-99.msgpack", b"")])
    wait_for(lambda: not any((done / name).exists() for name in old), "the old files pruned", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    assert sorted(p.name for p in done.iterdir()) == sorted([name for name, _ in traces[4:]] + ["t-99.msgpack"])


def test_keep_done_by_size_keeps_the_newest(world, tmp_path):
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    fill(spool, traces)
    limit = sum(len(d) for _, d in traces[-3:])
    proc = start(config, spool, out, state, "--settle", "0", "--keep-done", f"{limit}B", "--keep-done", "30d")
    wait_for(lambda: drained(spool), "the spool to drain", proc)
    done = spool / "done"
    wait_for(lambda: sum(p.stat().st_size for p in done.iterdir()) <= limit, "done/ within the limit", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    assert sorted(p.name for p in done.iterdir()) == [name for name, _ in traces[-3:]]
    assert actions(out) == expected_actions(config, [data for _, data in traces])


# a full-width digit and blanks around the value were taken (helper-122)
@pytest.mark.parametrize("text", ["7", "7x", "-1d", "0h", "1e9d", "12" * 20 + "GB", "", "７d", " 7d", "7d ", "7  d"])
def test_keep_done_values_are_checked(text):
    from engine.service.daemon import parse_keep_done
    with pytest.raises(ValueError, match="--keep-done"):
        parse_keep_done(text)


def test_keep_done_values():
    from engine.service.daemon import parse_keep_done
    assert parse_keep_done("7d") == ("age", 7 * 86400)
    assert parse_keep_done("90m") == ("age", 5400)
    assert parse_keep_done("50GB") == ("size", 50e9)
    assert parse_keep_done("1.5 GiB") == ("size", 1.5 * (1 << 30))


# --------------------------------------------------------------------------- item 12: error texts

def test_a_corrupt_stream_names_the_file_the_offset_inside_it_and_the_reason(world, tmp_path):
    import msgpack
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    first, second = traces[0][1], traces[1][1]
    cut = len(second) // 2
    # an event boundary near the middle
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(second)
    at = 0
    for _ in unpacker:
        at = unpacker.tell()
        if at >= cut:
            break
    oversized = msgpack.packb({"t": "SMS_MO", "x": b"\0" * 70_000})
    broken = second[:at] + b"\xc1" + second[at:]
    port = free_port()
    fill(spool, [("t-01.msgpack", first), ("t-02.msgpack", broken),
                 ("t-03.msgpack", oversized), ("t-04.msgpack", traces[3][1])])
    proc = start(config, spool, out, state, "--settle", "0", "--metrics", f"127.0.0.1:{port}")
    wait_for(lambda: drained(spool), "the spool to drain", proc)
    wait_for(lambda: metric(port, "sigmatch_spool_broken_total") == 2, "the broken files' metric", proc)
    wait_for(lambda: (spool / "rejected" / "t-03.msgpack.rest-0.reason").exists(), "the rests in rejected/", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    assert (f"t-02.msgpack: corrupt event stream at byte {at:,} of the file (stream offset {len(first) + at:,}): "
            "corrupt (") in log, log[-3000:]
    # the next stream starts where the bytes set aside began: offsets go on as in a replay of done/
    after = len(first) + at
    assert (f"t-03.msgpack: corrupt event stream at byte 0 of the file (stream offset {after:,}): too_large ("
            in log), log[-3000:]
    assert "status" not in log
    # helper-116: the rest of a file was skipped with one log line; it is set aside, and done/
    # holds what was processed, so that a replay of done/ reads what the service read
    rejected, done = spool / "rejected", spool / "done"
    assert (rejected / f"t-02.msgpack.rest-{at}").read_bytes() == broken[at:]
    assert (rejected / "t-03.msgpack.rest-0").read_bytes() == oversized
    reason = (rejected / f"t-02.msgpack.rest-{at}.reason").read_text()
    assert f"bytes {at:,} to {len(broken):,} of t-02.msgpack, after its event stream broke at byte {at:,}: " \
           "corrupt (" in reason and "not processed" in reason
    assert (f"t-02.msgpack: the {len(broken) - at:,} bytes after its event stream broke were not processed: moved "
            f"to rejected/t-02.msgpack.rest-{at}") in log
    assert (done / "t-02.msgpack").read_bytes() == second[:at] and (done / "t-03.msgpack").read_bytes() == b""
    kept = [(done / name).read_bytes() for name in sorted(os.listdir(done)) if name.endswith(".msgpack")]
    assert b"".join(kept) == first + second[:at] + traces[3][1]
    assert actions(out) == expected_actions(config, kept)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_broken_file_s_rest_is_set_aside_by_the_roll_forward_after_a_crash(world, tmp_path, workers):
    """The service dies after the checkpoint that moves a file whose stream broke and before
    the move: the restart's roll forward cuts the rest off with its reason, as the move would
    have, and the output is exactly once."""
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    import msgpack
    second = traces[1][1]
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(second)
    at = next(unpacker.tell() for _ in unpacker if unpacker.tell() >= len(second) // 3)   # an event boundary
    broken = second[:at] + b"\xc1" + second[at:]
    fill(spool, [("t-01.msgpack", traces[0][1]), ("t-02-crash.msgpack", broken), ("t-03.msgpack", traces[2][1])])
    proc = start(config, spool, out, state, "--settle", "0", "--workers", workers, fault="move-crash")
    proc.wait(timeout=60)
    assert proc.returncode == 9, log_of(proc)[-3000:]
    proc = start(config, spool, out, state, "--settle", "0", "--workers", workers)
    wait_for(lambda: drained(spool), "the spool to drain", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    rest = spool / "rejected" / f"t-02-crash.msgpack.rest-{at}"
    assert rest.read_bytes() == broken[at:]
    assert "after its event stream broke at byte" in (spool / "rejected" / f"{rest.name}.reason").read_text()
    assert (spool / "done" / "t-02-crash.msgpack").read_bytes() == second[:at]
    assert actions(out) == expected_actions(config, [traces[0][1], second[:at], traces[2][1]])
    no_traceback(log)


@pytest.mark.parametrize("fault,path", [("enospc-checkpoint", "state/log-"), ("enospc-sinks", "out")])
def test_a_full_disk_names_the_path(world, tmp_path, fault, path):
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    fill(spool, traces[:3])
    proc = start(config, spool, out, state, "--settle", "0", "--checkpoint-every", "0", fault=fault)
    wait_for(lambda: drained(spool), "the first files", proc)
    (tmp_path / "disk-full").touch()
    fill(spool, traces[3:])
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    err = log_of(proc)
    assert proc.returncode == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("sigmatch: error: ") and last.endswith(": No space left on device"), err[-3000:]
    assert last.startswith(f"sigmatch: error: {tmp_path / path}"), last
    no_traceback(err)


# --------------------------------------------------------------------------- helpers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(port: int, name: str):
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return None


# --------------------------------------------------------------------------- item 7: offsets after a corrupt file

def dead_letter_offsets(out: Path) -> list[int]:
    found = []
    for path in sorted(out.rglob("dead_letters-*.csv")):
        with open(path, newline="") as f:
            found += [int(r["offset"]) for r in csv.DictReader(f)]
    return found


def test_offsets_go_on_across_a_corrupt_file_and_the_dead_letter_cap_holds(world, tmp_path):
    """Each file ends in a corrupt byte, so each next one starts a new stream; its offsets
    go on from the corrupt byte (set aside with what follows it, as in a replay of done/),
    so dead-letter offsets stay unique and increasing, and max_dead_letters holds for the
    span of 2**26 bytes they all lie in."""
    import msgpack
    config, traces = world
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(traces[0][1])
    next(unpacker)
    good = traces[0][1][:unpacker.tell()]       # one good event: the file is an event stream
    edited = edited_beside(config, tmp_path / "campaigns.toml", "[engine]\n", "[engine]\nmax_dead_letters = 1000\n")
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    one = good + bytes(range(1, 128)) * 20 + b"\xc1"     # 2,540 bad values, each its own run, then corrupt
    fill(spool, [(f"d-{i}.msgpack", one) for i in range(5)])
    proc = start(edited, spool, out, state, "--settle", "0")
    wait_for(lambda: drained(spool), "the spool to drain", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    assert log.count("corrupt event stream") == 5, log[-3000:]
    for i in range(5):
        assert f"d-{i}.msgpack: corrupt event stream at byte {len(one) - 1:,} of the file (stream offset " \
               f"{(i + 1) * (len(one) - 1):,})" in log, log[-3000:]
    offsets = dead_letter_offsets(out)
    assert len(offsets) == 1000
    assert offsets == sorted(set(offsets))
    assert sorted(p.name for p in (spool / "rejected").glob("*.rest-*[0-9]")) == \
        [f"d-{i}.msgpack.rest-{len(one) - 1}" for i in range(5)]


# --------------------------------------------------------------------------- a full disk, for real

@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: the output of a few thousand dead letters fills it."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def many_dead_letters(traces) -> bytes:
    """One good event (so it is an event stream), then 101,600 bad values, each its own run:
    100,000 dead-letter records, some 4 MB of CSV."""
    import msgpack
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(traces[0][1])
    next(unpacker)
    return traces[0][1][:unpacker.tell()] + bytes(range(1, 128)) * 800


def test_replay_on_a_full_disk_names_the_file(world, tmp_path, small_disk):
    config, traces = world
    trace = tmp_path / "bad.msgpack"
    trace.write_bytes(many_dead_letters(traces))
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(config), str(trace),
                           "--out", str(small_disk / "o")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("sigmatch: error: ") and last.endswith(": No space left on device"), proc.stderr[-3000:]
    assert re.fullmatch(f"sigmatch: error: {re.escape(str(small_disk / 'o'))}/[^ ]+: No space left on device",
                        last), last     # the file, not OUT
    no_traceback(proc.stderr)


def test_the_service_on_a_full_disk_names_the_file(world, tmp_path, small_disk):
    config, traces = world
    spool, out, state = tmp_path / "spool", small_disk / "out", tmp_path / "state"
    fill(spool, [("t-01.msgpack", many_dead_letters(traces))])
    proc = start(config, spool, out, state, "--settle", "0")
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    err = log_of(proc)
    assert proc.returncode == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("sigmatch: error: ") and last.endswith(": No space left on device"), err[-3000:]
    assert re.fullmatch(f"sigmatch: error: {re.escape(str(out))}/[^ ]+: No space left on device",
                        last), last       # the file, not OUT
    no_traceback(err)


# --------------------------------------------------------------------------- item 10: a name used twice

def test_a_second_file_of_the_same_name_never_overwrites_the_first_in_done(world, tmp_path):
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    fill(spool, [("t-01.msgpack", traces[0][1])])
    proc = start(config, spool, out, state, "--settle", "0")
    done = spool / "done"
    wait_for(lambda: (done / "t-01.msgpack").exists(), "the first file in done/", proc)
    for data in (traces[1][1], traces[2][1]):
        fill(spool, [("t-01.msgpack", data)])
        wait_for(lambda: drained(spool) and not list(spool.glob("t-01.msgpack")), "the file again", proc)
    wait_for(lambda: (done / "t-01.msgpack.2").exists(), "the third in done/", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    assert (done / "t-01.msgpack").read_bytes() == traces[0][1]
    assert (done / "t-01.msgpack.1").read_bytes() == traces[1][1]
    assert (done / "t-01.msgpack.2").read_bytes() == traces[2][1]
    assert log.count("this one moved to done/t-01.msgpack.1") == 1, log[-3000:]
    assert log.count("this one moved to done/t-01.msgpack.2") == 1, log[-3000:]
    assert actions(out) == expected_actions(config, [d for _, d in traces[:3]])
    # the checkpoint names where each went: a restart moves nothing again
    proc = start(config, spool, out, state, "--settle", "0")
    code, log = stop(proc)
    assert code == 0 and "done/" not in log, log[-3000:]
    assert sorted(p.name for p in done.iterdir()) == ["t-01.msgpack", "t-01.msgpack.1", "t-01.msgpack.2"]


@pytest.mark.parametrize("how", ["replace", "overwrite"])
def test_a_file_renamed_over_one_read_is_read_too_not_archived_unread(world, tmp_path, how):
    """A probe renames a new file over one the service has read and not yet moved to done/, or
    writes it over that one in place (`cp new NAME`: the same inode). The service knows the
    file it read by (device, inode) and a CRC of its first bytes, not by name: the new one
    stays in the spool and is read, never moved to done/ unread (its events were lost,
    without a word)."""
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    name = f"t-01-{how}.msgpack"
    (tmp_path / f"{name}.more").write_bytes(traces[1][1])
    fill(spool, [(name, traces[0][1])])
    proc = start(config, spool, out, state, "--settle", "0", fault=how)
    done = spool / "done"
    wait_for(lambda: (done / name).exists() and drained(spool), "the new file read", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    assert f"{name}: replaced by another file of the same name after it was processed" in log, log[-3000:]
    assert (done / name).read_bytes() == traces[1][1]
    assert actions(out) == expected_actions(config, [traces[0][1], traces[1][1]])
    no_traceback(log)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_file_renamed_over_one_the_checkpoint_moves_is_not_archived_at_roll_forward(world, tmp_path, workers):
    """The service dies after the checkpoint that moves a file to done/ and before the move; a
    new file is renamed over that name meanwhile. The roll forward at the restart sees another
    file under the name (its checkpoint records the one read) and leaves it to be read."""
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    (tmp_path / "t-01-crash.msgpack.more").write_bytes(traces[1][1])
    fill(spool, [("t-01-crash.msgpack", traces[0][1])])
    proc = start(config, spool, out, state, "--settle", "0", "--workers", workers, fault="replace-crash")
    proc.wait(timeout=60)
    assert proc.returncode == 9, log_of(proc)[-3000:]
    assert (tmp_path / "crashed").exists()
    proc = start(config, spool, out, state, "--settle", "0", "--workers", workers)
    done = spool / "done"
    wait_for(lambda: (done / "t-01-crash.msgpack").exists() and drained(spool), "the new file read", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    assert "t-01-crash.msgpack: replaced by another file of the same name after it was processed" in log, log[-3000:]
    assert (done / "t-01-crash.msgpack").read_bytes() == traces[1][1]
    assert actions(out) == expected_actions(config, [traces[0][1], traces[1][1]])
    no_traceback(log)


def whole_events(data: bytes, limit: int) -> bytes:
    """The events of `data` that end within its first `limit` bytes."""
    import msgpack
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(data[:limit])
    end = 0
    for _ in unpacker:
        end = unpacker.tell()
    return data[:end]


def test_a_file_renamed_over_the_one_the_checkpoint_stopped_in_is_read_from_its_start(world, tmp_path):
    """The service stops part-way through a file (its checkpoint holds the offset); a new file
    is renamed over that name. At the restart the new file is read from its first byte, not
    from the old one's offset, and the old one's unfinished event is given up (a new stream)."""
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    first, second = traces[0][1], traces[1][1]
    assert len(first) > 64 << 10 and len(second) > 64 << 10
    (tmp_path / "t-01-stopped.msgpack.more").write_bytes(second)
    fill(spool, [("t-01-stopped.msgpack", first)])
    proc = start(config, spool, out, state, "--settle", "0", fault="replace-stopped")
    proc.wait(timeout=60)
    assert proc.returncode == 0, log_of(proc)[-3000:]
    proc = start(config, spool, out, state, "--settle", "0")
    done = spool / "done"
    wait_for(lambda: (done / "t-01-stopped.msgpack").exists() and drained(spool), "the new file read", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    assert (f"t-01-stopped.msgpack: was read up to byte {64 << 10:,} and is gone; another file of that name is "
            "there, read from its start: the next file starts a new stream") in log, log[-3000:]
    assert (done / "t-01-stopped.msgpack").read_bytes() == second
    assert actions(out) == expected_actions(config, [whole_events(first, 64 << 10), second])
    no_traceback(log)


@pytest.mark.parametrize("how", ["crash", "stopped"])
def test_a_spool_file_copied_or_restored_is_still_the_file_that_was_read(world, tmp_path, how):
    """The same bytes under a new inode (a spool or a journal under STATE copied with `cp -a`,
    restored from a backup, another mount) is the file that was read: the checkpoint also
    holds a CRC of its first bytes. Killed before the move, or stopped inside it, the
    restarted service moves it, or goes on at the offset: nothing is read twice."""
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    name = f"t-01-{how}.msgpack"
    fill(spool, [(name, traces[0][1]), ("t-02.msgpack", traces[1][1])])
    proc = start(config, spool, out, state, "--settle", "0", fault=f"copy-{how}")
    proc.wait(timeout=60)
    assert proc.returncode == (9 if how == "crash" else 0), log_of(proc)[-3000:]
    proc = start(config, spool, out, state, "--settle", "0")
    done = spool / "done"
    wait_for(lambda: (done / name).exists() and drained(spool), "the spool drained", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    assert "replaced by another file" not in log and "is gone" not in log, log[-3000:]
    assert sorted(p.name for p in done.iterdir()) == sorted([name, "t-02.msgpack"])
    assert actions(out) == expected_actions(config, [traces[0][1], traces[1][1]])
    stats = json.loads((out / "stats.json").read_text())
    assert stats["run"]["events"] == 2 * 5_000, stats["run"]
    no_traceback(log)


def test_an_out_on_a_file_system_without_locks_is_warned_of_and_used(world, tmp_path):
    """OUT is often a share the gateway reads (NFS without lockd: flock fails with ENOLCK):
    the service says that nothing stops a second one writing there, and runs."""
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    fill(spool, [traces[0]])
    proc = start(config, spool, out, state, "--settle", "0", fault="out-nolocks")
    wait_for(lambda: drained(spool), "the spool drained", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    assert (f"--out {out}: its file system takes no locks (No locks available): nothing stops a second service "
            "from writing into it") in log, log[-3000:]
    assert actions(out) == expected_actions(config, [traces[0][1]])
    no_traceback(log)


# --------------------------------------------------------------------------- item 5: a tail after the move

def test_a_tail_appended_after_the_file_moved_to_done_goes_to_rejected(world, tmp_path):
    """A probe writing in place pauses longer than --settle: the file is processed and moved
    to done/, and the probe's open descriptor appends to done/NAME. The tail is found there,
    copied to rejected/NAME.tail-OFFSET with its reason, cut off done/NAME, logged and counted."""
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    spool.mkdir()
    port = free_port()
    proc = start(config, spool, out, state, "--settle", "0.2", "--metrics", f"127.0.0.1:{port}")
    first, late = traces[0][1], traces[1][1]
    with open(spool / "inplace.msgpack", "wb") as writer:
        writer.write(first)
        writer.flush()
        wait_for(lambda: (spool / "done" / "inplace.msgpack").exists(), "the file in done/", proc)
        writer.write(late)
    tail = spool / "rejected" / f"inplace.msgpack.tail-{len(first)}"
    wait_for(lambda: (spool / "rejected" / f"{tail.name}.reason").exists(), "the tail in rejected/", proc)
    wait_for(lambda: metric(port, "sigmatch_spool_tails_rejected_total") == 1, "the tail's metric", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    assert tail.read_bytes() == late
    assert (spool / "done" / "inplace.msgpack").read_bytes() == first
    assert actions(out) == expected_actions(config, [first])
    reason = (spool / "rejected" / f"{tail.name}.reason").read_text()
    assert "appended after it was processed and moved to done/inplace.msgpack" in reason
    assert (f"inplace.msgpack: {len(late):,} bytes appended after it was processed and moved to done/inplace.msgpack "
            f"cannot be put back in stream order: moved to rejected/{tail.name}") in log, log[-3000:]
    no_traceback(log)


def test_tails_written_on_through_the_same_handle_each_hold_only_their_new_bytes(world, tmp_path):
    """helper-116: the probe's descriptor writes on at its own offset after a cut, so done/NAME
    grew again with a hole where the first tail was; the second tail began with those zeros
    (phantom events when put back in the spool) and was named by the first one's offset."""
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    spool.mkdir()
    proc = start(config, spool, out, state, "--settle", "0.2")
    first, second, third = traces[0][1], traces[1][1], traces[2][1]
    rejected = spool / "rejected"
    with open(spool / "inplace.msgpack", "wb") as writer:
        writer.write(first)
        writer.flush()
        wait_for(lambda: (spool / "done" / "inplace.msgpack").exists(), "the file in done/", proc)
        for n, late in enumerate((second, third)):
            writer.write(late)
            writer.flush()
            wait_for(lambda: len(list(rejected.glob("*.reason"))) == n + 1, f"tail {n + 1} in rejected/", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    one, two = rejected / f"inplace.msgpack.tail-{len(first)}", rejected / f"inplace.msgpack.tail-{len(first) + len(second)}"
    assert one.read_bytes() == second and two.read_bytes() == third
    assert sorted(p.name for p in rejected.iterdir()) == sorted([one.name, one.name + ".reason", two.name,
                                                                 two.name + ".reason"])
    reason = (rejected / f"{two.name}.reason").read_text()
    assert f"bytes {len(first) + len(second):,} to {len(first) + len(second) + len(third):,} of inplace.msgpack" in reason
    assert (spool / "done" / "inplace.msgpack").read_bytes() == first
    assert actions(out) == expected_actions(config, [first])
    no_traceback(log)


def test_a_tail_appended_while_the_service_was_down_is_still_cut(world, tmp_path):
    """A file moved to done/ was watched for late tails only by the process that moved it: a
    restart forgot the watch, and what the probe's descriptor appended while the service was
    down stayed in done/NAME, never processed, and read by a replay of done/. The checkpoint
    names the files moved lately, and a restart watches them again."""
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    spool.mkdir()
    first, late = traces[0][1], traces[1][1]
    proc = start(config, spool, out, state, "--settle", "0.2")
    with open(spool / "inplace.msgpack", "wb") as writer:
        writer.write(first)
        writer.flush()
        wait_for(lambda: (spool / "done" / "inplace.msgpack").exists(), "the file in done/", proc)
        code, log = stop(proc)
        assert code == 0, log[-3000:]
        writer.write(late)
    proc = start(config, spool, out, state, "--settle", "0.2")
    tail = spool / "rejected" / f"inplace.msgpack.tail-{len(first)}"
    wait_for(lambda: (spool / "rejected" / f"{tail.name}.reason").exists(), "the tail in rejected/", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    assert tail.read_bytes() == late
    assert (spool / "done" / "inplace.msgpack").read_bytes() == first
    assert actions(out) == expected_actions(config, [first])
    no_traceback(log)


def _bare_daemon(spool: Path):
    import collections
    import threading
    from engine.service.daemon import SpoolDaemon
    daemon = SpoolDaemon.__new__(SpoolDaemon)
    daemon.spool = spool
    daemon._tail_buffer = memoryview(bytearray(1 << 20))
    daemon.spool_counts = collections.Counter()
    daemon._counts_lock = threading.Lock()
    daemon.stdin, daemon.listen, daemon.journal_prefix = None, None, "spool"
    return daemon


@pytest.mark.parametrize("broken", [None, "corrupt (not msgpack: a 0xc1 byte in the event that starts there)"])
def test_a_cut_copied_before_a_crash_is_not_copied_twice(tmp_path, broken):
    """helper-117: a crash between the copy into rejected/ and the cut of the file made the roll
    forward copy the same bytes again, as NAME.tail-OFFSET.1: an operator who put both back
    would have them processed twice. The copy there is found and the file only cut."""
    spool = tmp_path / "spool"
    (spool / "rejected").mkdir(parents=True)
    kept, rest = b"k" * 1000, b"r" * 300
    (spool / "f.msgpack").write_bytes(kept + rest)
    kind = "rest" if broken else "tail"
    (spool / "rejected" / f"f.msgpack.{kind}-1000").write_bytes(rest)     # copied, then the crash
    daemon = _bare_daemon(spool)
    assert daemon._cut_tail("f.msgpack", 1000, broken=broken) == 300
    assert (spool / "f.msgpack").read_bytes() == kept
    assert sorted(p.name for p in (spool / "rejected").iterdir()) == [f"f.msgpack.{kind}-1000",
                                                                      f"f.msgpack.{kind}-1000.reason"]
    # other bytes under the name are another tail's: kept, and these copied beside them
    (spool / "f.msgpack").write_bytes(kept + b"s" * 300)
    assert daemon._cut_tail("f.msgpack", 1000, broken=broken) == 300
    assert (spool / "rejected" / f"f.msgpack.{kind}-1000").read_bytes() == rest
    assert (spool / "rejected" / f"f.msgpack.{kind}-1000.1").read_bytes() == b"s" * 300


@pytest.mark.parametrize("earlier", ["tail", "rest"])
def test_a_tail_after_a_restart_skips_the_hole_of_the_bytes_set_aside_before(tmp_path, earlier):
    """helper-116's hole again, after a restart: the count of bytes cut lived in memory, so
    the next tail began with the zeros where the earlier one had been. It is read back from
    rejected/: a hole of zeros as long as the copies there is skipped, other bytes are not."""
    spool = tmp_path / "spool"
    (spool / "rejected").mkdir(parents=True)
    kept, hole, new = b"k" * 1000, b"\0" * 300, b"\x93new"
    (spool / "f.msgpack").write_bytes(kept + hole + new)
    (spool / "rejected" / f"f.msgpack.{earlier}-1000").write_bytes(b"r" * 300)
    (spool / "rejected" / "f.msgpack.tail-99999x").write_bytes(b"x")           # not a copy of ours
    (spool / "rejected" / "g.msgpack.tail-1000").write_bytes(b"g" * 5000)     # another file's
    (spool / "rejected" / "f.msgpack.tail-90000").write_bytes(b"e" * 10)      # an earlier f.msgpack's, far on
    daemon = _bare_daemon(spool)
    assert daemon._cut_tail("f.msgpack", 1000) == 300 + len(new)
    assert (spool / "f.msgpack").read_bytes() == kept
    assert (spool / "rejected" / "f.msgpack.tail-1300").read_bytes() == new
    # bytes that are no hole are a tail of their own, from the bytes processed on
    (spool / "f.msgpack").write_bytes(kept + b"\x93" * 400)
    assert daemon._cut_tail("f.msgpack", 1000) == 400
    assert (spool / "rejected" / "f.msgpack.tail-1000" if earlier == "rest" else
            spool / "rejected" / "f.msgpack.tail-1000.1").read_bytes() == b"\x93" * 400


def test_a_restart_watches_the_files_moved_in_the_last_five_minutes_again(tmp_path):
    """The checkpoint's "moved_lately" (done name, spool name, bytes processed, wall time):
    watched again when moved up to DONE_WATCH_S ago, and not a second later; entries of
    another shape (a hand-edited header) and names with a path are left out."""
    import time
    from engine.service.daemon import DONE_WATCH_FILES, DONE_WATCH_S
    daemon = _bare_daemon(tmp_path)
    daemon._done_watch = {}
    daemon._moved_lately = __import__("collections").deque(maxlen=DONE_WATCH_FILES)
    (tmp_path / "done").mkdir()
    for name in ("a.msgpack", "b.msgpack.1", "c.msgpack", "e.msgpack", "f.msgpack", "h"):
        (tmp_path / "done" / name).write_bytes(b"x" * 50)
    now = time.time()
    daemon._watch_again([["a.msgpack", "a.msgpack", 10, now - DONE_WATCH_S + 1],
                         ["b.msgpack.1", "b.msgpack", 20, now - DONE_WATCH_S - 1],
                         ["c.msgpack", "c.msgpack", 30, now + 60],             # a clock set back
                         ["../d.msgpack", "d.msgpack", 40, now], ["e.msgpack", "e.msgpack", -1, now],
                         ["f.msgpack", "f.msgpack", True, now], "g.msgpack", ["h", "h", 1]])
    assert {target: entry[:2] for target, entry in daemon._done_watch.items()} == {"a.msgpack": ("a.msgpack", 10)}
    assert [entry[0] for entry in daemon._moved_lately] == ["a.msgpack"]


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one-process", "2-workers"])
def test_a_fragment_between_files_never_costs_the_next_file(world, tmp_path, workers):
    """From a newcomer trial (issue 14): a 3-byte file (the head of an array of 1,500 values,
    read as the start of an event the next file completes, as replay reads several files)
    made the service skip every event of the next file, where that event grew past
    max_event_bytes, and the log blamed that file. Now an event begun in one file that
    breaks in the next starts the stream again at the next file's first byte, which is read
    whole, and the log names the file the event began in."""
    import json
    import msgpack
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"

    def nr_events(data: bytes) -> int:
        return sum(1 for _ in msgpack.Unpacker(__import__("io").BytesIO(data), raw=True))

    # a file smaller than max_event_bytes after a fragment: read whole as the fragment's
    # bytes, and then lost (found by a second trial)
    ends = []
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(traces[4][1])
    for _ in unpacker:
        ends.append(unpacker.tell())
    small = next(e for e in reversed(ends) if e < 40_000)
    split = None
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(traces[5][1])
    for _ in unpacker:
        if unpacker.tell() > 20_000:
            split = unpacker.tell() + 5         # 5 bytes into the event after this one
            break
    fill(spool, [("t-01.msgpack", traces[0][1]),
                 ("t-02.msgpack", b"\xdc\x05\xdc"),
                 ("t-03.msgpack", traces[1][1]),
                 # a whole file, then the first two bytes of a str 32 header: with the next
                 # file's first bytes its length is past max_event_bytes
                 ("t-04.msgpack", traces[2][1] + b"\xdb\xff"),
                 ("t-05.msgpack", traces[3][1]),
                 ("t-06.msgpack", b"\xdc\x05\xdc"),
                 ("t-07.msgpack", traces[4][1][:small]),
                 ("t-08.msgpack", traces[4][1][small:]),
                 # one event cut across three files, the middle one 10 of its bytes: shaped as
                 # an event, it runs on, as replay reads it (found by a third trial)
                 ("t-09.msgpack", traces[5][1][:split]),
                 ("t-10.msgpack", traces[5][1][split:split + 10]),
                 ("t-11.msgpack", traces[5][1][split + 10:])])
    # with workers too: their cores lacked carried_head, and every start died on t-07's
    # fragment (helper-129)
    proc = start(config, spool, out, state, "--settle", "0", *workers)
    wait_for(lambda: drained(spool), "the spool to drain", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    no_traceback(log)
    assert not (spool / "rejected").exists() or not list((spool / "rejected").iterdir())
    assert (f"t-03.msgpack: corrupt event stream in an event that began 3 bytes before this file, in t-02.msgpack "
            f"(stream offset {len(traces[0][1]):,}): too_large (") in log, log[-3000:]
    began = len(traces[0][1]) + 3 + len(traces[1][1]) + len(traces[2][1])
    assert (f"t-05.msgpack: corrupt event stream in an event that began 2 bytes before this file, in t-04.msgpack "
            f"(stream offset {began:,}): too_large (") in log, log[-3000:]
    assert "the stream starts again at this file's first byte, and the file is read whole" in log
    after = began + 2 + len(traces[3][1])
    assert (f"t-07.msgpack: an event that began 3 bytes before this file, in t-06.msgpack (stream offset {after:,}), "
            "runs past this file's end: it is no event, and this file was read as its bytes; the stream starts "
            "again at this file's first byte, and the file is read whole") in log, log[-3000:]
    assert "t-10.msgpack: corrupt" not in log and "t-11.msgpack: corrupt" not in log
    # each file that ends inside an event says so (helper-128: a wrong file dropped in the
    # spool made the next file's first bytes a dead letter, and the log said nothing)
    for name, left in (("t-04", 2), ("t-09", 5), ("t-10", 10)):
        assert f"{name}.msgpack: ends inside an event (its last {left} bytes): the event runs on into the next file" \
            in log, name
    assert "t-01.msgpack: ends inside" not in log and "t-11.msgpack: ends inside" not in log
    assert "cut short" not in log        # every cut event here ended well or broke the stream
    # every event of the good files was processed, and nothing was bad
    stats = json.loads((out / "stats.json").read_text())
    assert stats["run"]["events"] == sum(nr_events(traces[i][1]) for i in range(6))
    assert not any(stats["run"]["bad_events"].values())


@pytest.mark.parametrize("restart", [False, True], ids=["at-once", "across-a-restart"])
@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one-process", "2-workers"])
def test_a_file_cut_short_before_another_stream_is_warned_of(world, tmp_path, workers, restart):
    """helper-128: the first 1,000,000 bytes of a trace dropped in the spool, then a file of
    another stream: the cut event took the next file's first events as its fields, a dead
    letter, and the log said nothing. Now a warning names the file the event began in; across
    a restart, which keeps no file names, "the file read last before the restart" (helper-130)."""
    import msgpack
    config, traces = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    ends = []
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(traces[0][1])
    for _ in unpacker:
        ends.append(unpacker.tell())
    cut = ends[len(ends) // 2] + 11     # an array of 8 begun: its ts and type, the next file gives the rest
    files = [("t-01.msgpack", traces[0][1][:cut]), ("t-02.msgpack", traces[5][1])]
    log = ""
    for part in ([files[0]], [files[1]]) if restart else (files,):
        fill(spool, part)
        proc = start(config, spool, out, state, "--settle", "0", *workers, verbose=False)
        wait_for(lambda: drained(spool), "the spool to drain", proc)
        code, said = stop(proc)
        assert code == 0, said[-3000:]
        log += said
    no_traceback(log)
    said = [line for line in log.splitlines() if "cut short" in line]
    assert len(said) == 1, log[-3000:]
    named = "the file read last before the restart" if restart else "t-01.msgpack"
    assert said[0].endswith(f"WARNING sigmatch.daemon: {named}: the event its last 11 bytes began (stream "
                            f"offset {ends[len(ends) // 2]:,}) ended in the next file as a bad value (wrong_type, a "
                            "dead letter): was that file cut short, or not of this stream?"), said
    assert "ends inside an event" not in log       # that line is at info: -v shows it


def test_an_event_shape_is_an_array_or_map_of_at_most_64():
    """What the service lets run on through a whole spool file as an event begun before it
    (event_shaped), one entry either side of the bound, and what is no event."""
    from engine.service.daemon import EVENT_ENTRIES_MAX, event_shaped
    assert EVENT_ENTRIES_MAX == 64
    for head in (b"", b"\x98", b"\x9f", b"\x88", b"\xdc\x00\x40", b"\xde\x00\x40", b"\xdd\x00\x00\x00\x40",
                 b"\xdf\x00\x00\x00\x40", b"\xdc\x05", b"\xdd\x00\x00"):
        assert event_shaped(head), head
    for head in (b"\xdc\x00\x41", b"\xde\x00\x41", b"\xdd\x00\x00\x00\x41", b"\xdf\x00\x00\x00\x41",
                 b"\xdc\x05\xdc", b"\xdb\xff", b"\xc6\x00\x01", b"\xd9\x10", b"\xcf\x00", b"\xc0"):
        assert not event_shaped(head), head
