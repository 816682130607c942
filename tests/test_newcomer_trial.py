"""What a newcomer's trial of issue 9 found still wrong, each kind a test: one service per
spool; a fresh service refusing an --out that holds a run; the service's own options on one
port, a bad address and a bad configuration said before anything is created; numbers in
groups masked in the lookup's log; standard input that is not an event stream; files the
spool never reads; times in micro- and nanoseconds; campaigns `check` knows can never
match; `run.dead_letters` without padding; plurals; `gen --force` and `gen --events 0`; the
metrics list of docs/operations.md. Messages are checked word for word."""
from __future__ import annotations

import gzip
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import msgpack
import numpy as np
import pytest

from engine.api import Engine
from engine.sinks import SinkSet
from engine.wording import plural
from tests.test_daemon_hostile import free_port, start, stop, wait_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "crbt_school"
CONFIG = EXAMPLE / "campaigns.toml"
TRACE = EXAMPLE / "trace.msgpack"
T0 = 1_767_225_600_000          # 2026-01-01T00:00:00Z
JSON_LINES = b"".join(b'{"ts": %d, "type": "CALL_MO_END", "msisdn": "13800000001"}\n' % (T0 + i) for i in range(50))
ADVICE = "sigmatch reads msgpack (docs/semantics.md)"


def sigmatch(*args, stdin: bytes = b"", timeout: float = 120) -> subprocess.CompletedProcess:
    """The command as an operator runs it (bytes in, text out)."""
    proc = subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], cwd=ROOT, input=stdin,
                          capture_output=True, timeout=timeout)
    proc.stdout, proc.stderr = proc.stdout.decode(), proc.stderr.decode()
    return proc


def service(tmp_path: Path, *args, out="out", state="state", stdin: bytes = b"") -> subprocess.CompletedProcess:
    return sigmatch("run", CONFIG, "--out", tmp_path / out, "--state", tmp_path / state, *args, stdin=stdin)


def error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert lines, proc
    return lines[-1]


# --------------------------------------------------------------------------- 9: one service per spool

def test_a_second_service_on_one_spool_with_another_state_exits_at_once(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    first = start(CONFIG, spool, tmp_path / "out", tmp_path / "state")
    try:
        second = service(tmp_path, "--spool", spool, out="out2", state="state2")
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [
            f"sigmatch: error: --spool {spool}: spool directory in use by PID {first.pid}"]
        assert not (tmp_path / "out2").exists() and not (tmp_path / "state2").exists()
        # the lock is a dot-name: never read, never set aside, never warned of
        (spool / "t-01.msgpack").write_bytes(TRACE.read_bytes())
        wait_for(lambda: (spool / "done" / "t-01.msgpack").exists(), "the spool file to be processed", first)
    finally:
        code, log = stop(first)
    assert code == 0, log[-3000:]
    assert ".sigmatch.lock" not in log and not (spool / "rejected").exists()
    assert sorted(p.name for p in spool.iterdir()) == [".sigmatch.lock", "done"]
    # the lock goes with its process: the second service starts now (a new --out: it has no checkpoint)
    again = start(CONFIG, spool, tmp_path / "out2", tmp_path / "state2")
    code, log = stop(again)
    assert code == 0, log[-3000:]


def test_a_spool_lock_that_is_a_link_is_refused(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    (tmp_path / "elsewhere").write_text("")
    (spool / ".sigmatch.lock").symlink_to(tmp_path / "elsewhere")
    done = service(tmp_path, "--spool", spool)
    assert done.returncode == 1
    assert error_line(done) == (f"sigmatch: error: --spool {spool}: cannot lock it (.sigmatch.lock: a symbolic "
                                "link)")
    assert (tmp_path / "elsewhere").read_text() == ""
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()


def test_a_second_service_on_one_out_exits_at_once(tmp_path):
    """Two services writing one --out (each its own state and spool) would number their files
    alike and overwrite each other's stats.json: the second is refused before it creates
    anything."""
    spool = tmp_path / "spool"
    spool.mkdir()
    (tmp_path / "spool2").mkdir()
    first = start(CONFIG, spool, tmp_path / "out", tmp_path / "state")
    try:
        second = service(tmp_path, "--spool", tmp_path / "spool2", out="out", state="state2")
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [
            f"sigmatch: error: --out {tmp_path / 'out'}: output directory in use by PID {first.pid}"]
        assert not (tmp_path / "state2").exists()
        # a replay, --overwrite or not, would remove or overwrite what the service writes
        for extra in ((), ("--overwrite",)):
            replayed = sigmatch("replay", CONFIG, TRACE, "--out", tmp_path / "out", *extra)
            assert replayed.returncode == 1
            assert replayed.stderr.strip().splitlines() == [
                f"sigmatch: error: {tmp_path / 'out'}: output directory in use by PID {first.pid} (another sigmatch "
                "run writes it): give a new --out"]
        assert (tmp_path / "out" / ".sigmatch-service-id").exists()
    finally:
        code, log = stop(first)
    assert code == 0, log[-3000:]


def test_a_replay_into_a_services_spool_or_state_is_refused_in_one_line(tmp_path):
    """A replay's files in a service's spool would be taken for input (and rejected), and its
    state directory is the service's own: both refused, nothing written there."""
    spool = tmp_path / "spool"
    spool.mkdir()
    first = start(CONFIG, spool, tmp_path / "out", tmp_path / "state")
    try:
        for where, says in ((spool, "is a service's --spool (.sigmatch.lock)"),
                            (tmp_path / "state", "is a running service's --state (its lock is held)")):
            before = sorted(p.name for p in where.iterdir())
            replayed = sigmatch("replay", CONFIG, TRACE, "--out", where, "--overwrite")
            assert replayed.returncode == 1
            assert replayed.stderr.strip().splitlines() == [f"sigmatch: error: --out {where}: {says}: give another --out"]
            assert sorted(p.name for p in where.iterdir()) == before
    finally:
        code, log = stop(first)
    assert code == 0, log[-3000:]
    # stopped: its checkpoints say what the directory is
    replayed = sigmatch("replay", CONFIG, TRACE, "--out", tmp_path / "state")
    assert error_line(replayed) == (f"sigmatch: error: --out {tmp_path / 'state'}: is a service's --state (it holds "
                                    "checkpoints): give another --out")
    # below the state (a subdirectory of it) or the spool (its done/, pruned by --keep-done),
    # existing or not
    replayed = sigmatch("replay", CONFIG, TRACE, "--out", tmp_path / "state" / "sub")
    assert error_line(replayed) == (f"sigmatch: error: --out {tmp_path / 'state' / 'sub'}: is inside a service's "
                                    f"--state {tmp_path / 'state'} (it holds checkpoints): give another --out")
    for where in (spool / "done", spool / "new" / "out"):
        replayed = sigmatch("replay", CONFIG, TRACE, "--out", where, "--overwrite")
        assert error_line(replayed) == (f"sigmatch: error: --out {where}: is inside a service's --spool {spool} "
                                        "(.sigmatch.lock): give another --out")
    assert not (spool / "new").exists()
    # a service killed before its first checkpoint leaves only its lock file
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "lock").write_text("")
    replayed = sigmatch("replay", CONFIG, TRACE, "--out", killed)
    assert error_line(replayed) == (f"sigmatch: error: --out {killed}: holds the lock file of a service's --state: "
                                    "give another --out")
    assert sorted(p.name for p in killed.iterdir()) == ["lock"]
    (killed / "lock").write_text("  \n\t\n")      # blank counts as empty
    replayed = sigmatch("replay", CONFIG, TRACE, "--out", killed)
    assert error_line(replayed).endswith("holds the lock file of a service's --state: give another --out")
    (killed / "lock").write_text("31337\n")        # killed after writing its PID
    replayed = sigmatch("replay", CONFIG, TRACE, "--out", killed)
    assert error_line(replayed).endswith("holds the lock file of a service's --state: give another --out")
    # a user's own file named lock, with words in it, is not taken for a service's
    (killed / "lock").write_text("the key is under the mat\n")
    replayed = sigmatch("replay", CONFIG, TRACE, "--out", killed)
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert (killed / "lock").read_text() == "the key is under the mat\n"


def test_a_service_refuses_its_state_in_out_or_spool_and_anything_of_its_own_below_the_spool(tmp_path):
    """The checkpoints are the service's own: --state equal to --out or --spool is refused in
    one line, as is an --out or --state inside the spool, before anything is created."""
    spool = tmp_path / "spool"
    spool.mkdir()
    out, state = tmp_path / "out", tmp_path / "state"
    for args, says in (
            (("--out", out, "--state", out), f"--state {out}: is --out too"),
            (("--out", out, "--state", spool), f"--state {spool}: is --spool too"),
            (("--out", spool / "done", "--state", state), f"--out {spool / 'done'}: is inside --spool {spool}"),
            (("--out", out, "--state", spool / "state"), f"--state {spool / 'state'}: is inside --spool {spool}"),
            # the checkpoints (every subscriber's state) in the folder the gateway reads (helper-116)
            (("--out", out, "--state", out / "state"), f"--state {out / 'state'}: is inside --out {out}"),
            (("--out", state / "out", "--state", state), f"--out {state / 'out'}: is inside --state {state}")):
        done = sigmatch("run", CONFIG, "--spool", spool, *args)
        assert done.returncode == 1, done.stderr
        line = error_line(done)
        assert line.startswith(f"sigmatch: error: {says}"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spool"] and not any(spool.iterdir())


@pytest.mark.parametrize("option", ["--checkpoint-every", "--settle", "--idle-advance", "--idle-timeout"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e308", "10s"])
def test_a_service_refuses_seconds_that_are_not_a_duration(tmp_path, option, value):
    done = sigmatch("run", CONFIG, "--spool", tmp_path, "--out", tmp_path / "o", "--state", tmp_path / "s",
                    "--listen", "127.0.0.1:0", f"{option}={value}")
    assert done.returncode == 2
    line = error_line(done)
    assert line.startswith(f"sigmatch: error: Invalid value for '{option}'") and line.endswith("run --help)")
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_replay_holds_its_out_against_services_and_other_replays(tmp_path, workers):
    """A replay holds OUT's lock as a service does (here, this test holds it as a replay would):
    another replay and a service are refused, naming the holder; once it is free, a replay
    runs and leaves the lock file, released, beside its output."""
    import fcntl
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out / ".sigmatch-out.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"{os.getpid()}\n".encode())
    try:
        replayed = sigmatch("replay", CONFIG, TRACE, "--out", out, "--workers", workers)
        assert replayed.returncode == 1
        assert replayed.stderr.strip().splitlines() == [
            f"sigmatch: error: {out}: output directory in use by PID {os.getpid()} (another sigmatch run writes it): "
            "give a new --out"]
        spool = tmp_path / "spool"
        spool.mkdir()
        refused = service(tmp_path, "--spool", spool)
        assert refused.returncode == 1
        assert error_line(refused) == f"sigmatch: error: --out {out}: output directory in use by PID {os.getpid()}"
        assert sorted(p.name for p in out.iterdir()) == [".sigmatch-out.lock"]
    finally:
        os.close(fd)
    replayed = sigmatch("replay", CONFIG, TRACE, "--out", out, "--workers", workers)
    assert replayed.returncode == 0, replayed.stderr
    assert (out / "stats.json").exists()
    # emptied at the end: two replays of one input leave the same bytes (diff -r)
    assert (out / ".sigmatch-out.lock").read_bytes() == b""


def test_what_is_planted_in_out_never_hangs_redirects_or_empties_anything(tmp_path):
    """Whoever can write OUT can put anything under the lock's and the id's names: a hard link
    to another file (the lock is written: it must not empty that file), a FIFO (never waited
    on), a directory (said before anything is removed), garbage for a PID (not echoed)."""
    import fcntl
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "linked"
    out.mkdir()
    os.link(victim, out / ".sigmatch-out.lock")
    done = sigmatch("replay", CONFIG, TRACE, "--out", out)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"sigmatch: error: {out}: cannot lock it (.sigmatch-out.lock is not a plain file: remove it)"]
    assert victim.read_text() == "keep me\n"
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / ".sigmatch-out.lock")
    done = sigmatch("replay", CONFIG, TRACE, "--out", fifo)
    assert done.returncode == 1 and error_line(done).endswith("(.sigmatch-out.lock is not a plain file: remove it)")
    # a FIFO where the id goes: replaced, never read (it would block for ever)
    spool = tmp_path / "spool"
    spool.mkdir()
    (tmp_path / "out").mkdir()
    os.mkfifo(tmp_path / "out" / ".sigmatch-service-id")
    done = service(tmp_path, "--stdin", stdin=TRACE.read_bytes())
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / ".sigmatch-service-id").is_file()
    # a directory there: said before anything is created or removed
    assert sigmatch("replay", CONFIG, TRACE, "--out", tmp_path / "replayed").returncode == 0
    before = {p: p.read_bytes() for p in (tmp_path / "replayed").rglob("*") if p.is_file()}
    (tmp_path / "replayed" / ".sigmatch-service-id").mkdir()
    done = sigmatch("replay", CONFIG, TRACE, "--out", tmp_path / "replayed", "--overwrite")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"sigmatch: error: {tmp_path / 'replayed'}: .sigmatch-service-id is a directory, where a service keeps its "
        "id: remove it"]
    assert {p: p.read_bytes() for p in (tmp_path / "replayed").rglob("*") if p.is_file()} == before
    done = service(tmp_path, "--spool", spool, out="replayed", state="state2")
    assert done.returncode == 1
    assert error_line(done) == (f"sigmatch: error: --out {tmp_path / 'replayed'}: .sigmatch-service-id is a "
                                "directory, where the service keeps its id: remove it")
    assert not (tmp_path / "state2").exists()
    # garbage for a PID in a held lock is not echoed; the demo is refused as a replay is
    held = tmp_path / "held"
    (held / "out").mkdir(parents=True)
    fd = os.open(held / "out" / ".sigmatch-out.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"abc\x1b[31m\n")
    try:
        done = sigmatch("replay", CONFIG, TRACE, "--out", held / "out")
        assert done.stderr.strip().splitlines() == [
            f"sigmatch: error: {held / 'out'}: output directory in use by another sigmatch run: give a new --out"]
        (held / ".sigmatch-demo").write_text("")       # an earlier demo's directory
        done = sigmatch("demo", "--dir", held, "--subscribers", "2000", "--events", "20000")
        assert done.returncode == 1 and "output directory in use by" in error_line(done), done.stderr
    finally:
        os.close(fd)


def test_a_service_whose_out_is_its_spool_is_refused(tmp_path):
    """--out equal to --spool is refused in one line, before anything is made (it used to
    start, with the gateway's files among the probes', each warned of as not read)."""
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "t-01.msgpack").write_bytes(TRACE.read_bytes())
    done = sigmatch("run", CONFIG, "--spool", spool, "--out", spool, "--state", tmp_path / "state")
    assert done.returncode == 1
    assert error_line(done) == f"sigmatch: error: --out {spool}: is --spool too: give the output a directory of its own"
    assert sorted(p.name for p in spool.iterdir()) == ["t-01.msgpack"] and not (tmp_path / "state").exists()


def test_the_service_refuses_a_configuration_it_cannot_read_again_and_creates_nothing(tmp_path):
    """The service reads CONFIG at every start and reload (SIGHUP): a pipe is read once. A
    configuration without profiles and a --watch file that is not there are said before
    anything is created too."""
    spool = tmp_path / "spool"
    spool.mkdir()
    piped = sigmatch("run", "/dev/stdin", "--spool", spool, "--out", tmp_path / "out", "--state", tmp_path / "state",
                     stdin=CONFIG.read_bytes())
    assert piped.returncode == 1
    assert piped.stderr.strip().splitlines() == [
        "sigmatch: error: /dev/stdin: the service needs CONFIG as a file, which it reads again at every start and "
        "reload (this is a pipe or a device)"]
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    done = sigmatch("run", empty, "--spool", spool, "--out", tmp_path / "out", "--state", tmp_path / "state")
    assert done.returncode == 1
    assert error_line(done) == f"sigmatch: error: {empty}: engine.profiles: a profile snapshot is required"
    done = service(tmp_path, "--spool", spool, "--watch", tmp_path / "watch.txt")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"sigmatch: error: --watch {tmp_path / 'watch.txt'}: no such file"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()
    diffed = sigmatch("diff", "/dev/stdin", CONFIG, TRACE, stdin=CONFIG.read_bytes())
    assert diffed.returncode != 0
    assert error_line(diffed) == ("sigmatch: error: /dev/stdin: diff needs each configuration as a file, which its "
                                  "side reads again (this is a pipe or a device)")


# --------------------------------------------------------------------------- 10: a fresh service, an --out in use

def refusal_of_out(tmp_path: Path, out: Path, first: str, more: int, state: str = "state2") -> str:
    return (f"sigmatch: error: --out {out}: already holds a run's output ({first} and {more:,} more) and --state "
            f"{tmp_path / state} holds no checkpoint of it: this service would number its actions from 1 again and "
            "the gateway would send them twice: give a new --out, or the --state of the service that wrote it")


def test_a_fresh_service_refuses_an_out_that_holds_a_replay(tmp_path):
    out = tmp_path / "out"
    assert sigmatch("replay", CONFIG, TRACE, "--out", out).returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".sigmatch-out.lock"}
    spool = tmp_path / "spool"
    spool.mkdir()
    done = service(tmp_path, "--spool", spool, state="state2")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [refusal_of_out(tmp_path, out, "stats.json", len(before) - 1)]
    assert not (tmp_path / "state2").exists()
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".sigmatch-out.lock"} == before


def test_a_fresh_service_refuses_another_services_out_and_a_service_goes_on_on_its_own_state(tmp_path):
    out = tmp_path / "out"
    first = service(tmp_path, "--stdin", stdin=TRACE.read_bytes())
    assert first.returncode == 0, first.stderr
    stats = (out / "stats.json").read_bytes()
    files = sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".sigmatch"))
    other = service(tmp_path, "--stdin", state="state2", stdin=TRACE.read_bytes())
    assert other.returncode == 1
    assert error_line(other) == refusal_of_out(tmp_path, out, "stats.json", len(files) - 1)
    assert (out / "stats.json").read_bytes() == stats and not (tmp_path / "state2").exists()
    # the service that wrote it goes on from its checkpoint, numbering on
    again = service(tmp_path, "--stdin", stdin=TRACE.read_bytes())
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "stats.json").read_text())["run"]["events"] == 2 * json.loads(stats)["run"]["events"]


def test_a_service_killed_before_its_first_checkpoint_starts_again(tmp_path):
    # what it leaves: its lock, stats.json and temporary files; no finished file, no checkpoint
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "lock").write_text("12345\n")
    (tmp_path / "out" / "sms").mkdir(parents=True)
    (tmp_path / "out" / "stats.json").write_text("{}")
    (tmp_path / "out" / "sms" / ".actions-00000001.csv.tmp").write_text("seq\n")
    done = service(tmp_path, "--stdin", stdin=TRACE.read_bytes())
    assert done.returncode == 0, done.stderr
    # ... but a finished file beside them is another run's
    out2 = tmp_path / "out2"
    (out2 / "sms").mkdir(parents=True)
    (out2 / "sms" / "actions-00000001.csv").write_text("seq\n")
    (tmp_path / "state2").mkdir()
    (tmp_path / "state2" / "lock").write_text("12345\n")
    refused = service(tmp_path, "--stdin", out="out2", state="state2", stdin=TRACE.read_bytes())
    assert refused.returncode == 1
    assert error_line(refused) == refusal_of_out(tmp_path, out2, "sms/actions-00000001.csv", 0)

def test_a_service_going_on_from_its_checkpoint_refuses_another_runs_out_and_takes_a_new_one(tmp_path):
    """The state holds a checkpoint, OUT another run's output: numbering on from the checkpoint
    would overwrite that run's files (or remove them as work to be redone). A new --out, or
    the service's own, is fine; its own moved without the id file is claimed as it says."""
    first = service(tmp_path, "--stdin", stdin=TRACE.read_bytes())
    assert first.returncode == 0, first.stderr
    marker = tmp_path / "out" / ".sigmatch-service-id"
    assert marker.stat().st_mode & 0o777 == 0o640
    made = service(tmp_path, "--stdin", out="other-service", state="state-other", stdin=TRACE.read_bytes())
    assert made.returncode == 0, made.stderr
    assert sigmatch("replay", CONFIG, TRACE, "--out", tmp_path / "replayed").returncode == 0

    def output(name):
        return {p: p.read_bytes() for p in (tmp_path / name).rglob("*") if p.is_file() and p.name != ".sigmatch-out.lock"}

    def held(name):
        files = [p for p in output(name) if not p.name.startswith(".sigmatch")]
        return f"sigmatch: error: --out {tmp_path / name}: holds output (stats.json and {len(files) - 1:,} more)"

    before = output("other-service")
    refused = service(tmp_path, "--stdin", out="other-service", stdin=TRACE.read_bytes())
    assert refused.returncode == 1
    assert error_line(refused) == (
        f"{held('other-service')} of another service (.sigmatch-service-id holds another id), not of the service "
        f"whose checkpoint --state {tmp_path / 'state'} holds: it would overwrite those files: give that service's "
        "--out, or a new one")
    assert output("other-service") == before
    before = output("replayed")
    refused = service(tmp_path, "--stdin", out="replayed", stdin=TRACE.read_bytes())
    assert refused.returncode == 1
    line = error_line(refused)
    assert line.startswith(f"{held('replayed')} without the id of the service whose checkpoint --state "
                           f"{tmp_path / 'state'} holds (.sigmatch-service-id, which its own --out holds): it may be "
                           "another run's, whose files it would overwrite. If it is this service's output, moved "
                           "without its dot-files, put the id back: echo "), line
    assert line.endswith(f" > {tmp_path / 'replayed' / '.sigmatch-service-id'}; else give the service's own --out, "
                         "or a new one"), line
    assert marker.read_text().strip() in line
    assert output("replayed") == before
    # its own output, moved without its dot-files (`mv out/* moved/`): claimed as the line says
    (tmp_path / "moved").mkdir()
    for path in (tmp_path / "out").iterdir():
        if not path.name.startswith("."):
            path.rename(tmp_path / "moved" / path.name)
    refused = service(tmp_path, "--stdin", out="moved", stdin=TRACE.read_bytes())
    assert refused.returncode == 1 and "put the id back" in error_line(refused)
    (tmp_path / "moved" / ".sigmatch-service-id").write_text(marker.read_text())
    moved = service(tmp_path, "--stdin", out="moved", stdin=TRACE.read_bytes())
    assert moved.returncode == 0, moved.stderr
    # a replay --overwrite into a service's OUT takes its id away: the service no longer goes on there
    assert sigmatch("replay", CONFIG, TRACE, "--out", tmp_path / "moved", "--overwrite").returncode == 0
    assert not (tmp_path / "moved" / ".sigmatch-service-id").exists()
    refused = service(tmp_path, "--stdin", out="moved", stdin=TRACE.read_bytes())
    assert refused.returncode == 1 and "without the id of the service" in error_line(refused)
    fresh = service(tmp_path, "--stdin", out="fresh", stdin=TRACE.read_bytes())
    assert fresh.returncode == 0, fresh.stderr



# --------------------------------------------------------------------------- 11: said before anything is created

@pytest.mark.parametrize("first, second", [("--listen", "--metrics"), ("--lookup", "--metrics"),
                                           ("--listen", "--lookup")])
def test_two_of_the_services_own_options_on_one_port_are_named(tmp_path, first, second):
    port = free_port()
    spool = tmp_path / "spool"
    spool.mkdir()
    done = service(tmp_path, "--spool", spool, "--lookup-token", "t", first, f"127.0.0.1:{port}",
                   second, f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"sigmatch: error: {second} 127.0.0.1:{port}: address in use by {first} 127.0.0.1:{port} "
        "(each needs its own port)"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()


def test_a_port_taken_by_another_process_beside_an_option_of_ours_is_in_use(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = service(tmp_path, "--spool", spool, "--listen", f"127.0.0.1:{free_port()}",
                       "--metrics", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"sigmatch: error: --metrics 127.0.0.1:{port}: address in use"]


@pytest.mark.parametrize("option", ["--listen", "--lookup", "--metrics"])
def test_a_bad_address_names_its_option(tmp_path, option):
    done = service(tmp_path, "--stdin", "--lookup-token", "t", option, "localhost:abc")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"sigmatch: error: {option} localhost:abc: port 'abc' is not a number"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()


def test_a_configuration_that_does_not_load_fails_before_anything_is_created(tmp_path):
    from engine.language.config import load_config
    from engine.errors import ConfigError
    config = tmp_path / "campaigns.toml"
    config.write_text(CONFIG.read_text().replace('min_gap     = "7d"', 'min_gap     = "7 days"'))
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    spool = tmp_path / "spool"
    spool.mkdir()
    done = sigmatch("run", config, "--spool", spool, "--out", tmp_path / "out", "--state", tmp_path / "state")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"sigmatch: error: {caught.value}"]
    assert str(config) in str(caught.value) and "min_gap" in str(caught.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()


# --------------------------------------------------------------------------- 13: numbers in groups, in the lookup's log

def get(port: int, path: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": "Bearer t0ken"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def raw_get(port: int, line: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(line + b"\r\nAuthorization: Bearer t0ken\r\n\r\n")
        sock.recv(1 << 16)


def test_numbers_in_groups_never_reach_the_lookups_log(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    port = free_port()
    proc = start(CONFIG, spool, tmp_path / "out", tmp_path / "state", "--lookup", f"127.0.0.1:{port}",
                 "--lookup-token", "t0ken")
    try:
        answered = {path: get(port, path) for path in (
            "/subscriber/138-0001-0003", "/subscriber/138%200001%200003", "/SUBSCRIBER/%2B86-138-0001-0003",
            "/subscriber/138%2D0001%2D0003x", "/subscriber?msisdn=138-0001-0003&x=1")}
        raw_get(port, b"GET /subscriber/138 0001 0003 HTTP/1.1")
        wait_for(lambda: proc.log_path.read_text().count("sigmatch.lookup: lookup") >= 7, "the lookups' log", proc)
    finally:
        code, log = stop(proc)
    assert code == 0, log[-3000:]
    assert answered == {"/subscriber/138-0001-0003": 200, "/subscriber/138%200001%200003": 200,
                        "/SUBSCRIBER/%2B86-138-0001-0003": 404, "/subscriber/138%2D0001%2D0003x": 400,
                        "/subscriber?msisdn=138-0001-0003&x=1": 404}
    lines = [line.split("sigmatch.lookup: lookup 127.0.0.1 ", 1)[1] for line in log.splitlines()
             if "sigmatch.lookup: lookup" in line]
    assert lines == [
        '"GET /subscriber/138****0003 HTTP/1.1" 200 -',
        '"GET /subscriber/138****0003 HTTP/1.1" 200 -',
        '"GET /SUBSCRIBER/861******0003 HTTP/1.1" 404 -',
        '"GET /subscriber/*** HTTP/1.1" 400 -',
        '"GET /subscriber?msisdn=138****0003&x=1 HTTP/1.1" 404 -',
        # a raw space in the path: a bad request line, echoed back whole
        "code 400, message Bad request syntax ('GET /subscriber/138****0003 HTTP/1.1')",
        '"GET /subscriber/138****0003 HTTP/1.1" 400 -',
    ]
    assert not re.search(r"0001|13800010003", log)


# --------------------------------------------------------------------------- 14: standard input, not an event stream

def test_standard_input_that_is_not_an_event_stream_fails_naming_it(tmp_path):
    done = service(tmp_path, "--stdin", stdin=JSON_LINES)
    assert done.returncode == 1
    rejected = tmp_path / "state" / "stdin-journal" / "rejected"
    assert error_line(done) == (
        "sigmatch: error: standard input (journal file 000000000001.msgpack): rejected, examined, not processed, "
        f"moved to {rejected}/000000000001.msgpack: not a msgpack event stream: it looks like JSON lines (text); "
        f"{ADVICE}")
    # said once: no other line names it
    assert sum("000000000001.msgpack" in line for line in done.stderr.splitlines()) == 1
    assert (rejected / "000000000001.msgpack").read_bytes() == JSON_LINES


def test_standard_input_that_is_an_event_stream_ends_with_0(tmp_path):
    done = service(tmp_path, "--stdin", stdin=TRACE.read_bytes())
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr.lower()


# --------------------------------------------------------------------------- 15: files the spool never reads

def test_files_the_spool_never_reads_are_warned_of_once_each(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    old = time.time() - 600
    (spool / "t-01.msgpack.gz").write_bytes(gzip.compress(TRACE.read_bytes()))
    (spool / "notes.csv").write_text("a,b\n")
    for name in ("t-01.msgpack.gz", "notes.csv"):
        os.utime(spool / name, (old, old))
    (spool / "t-02.part").write_bytes(b"")         # a probe's file being written: not warned of
    proc = start(CONFIG, spool, tmp_path / "out", tmp_path / "state", "--settle", "0")
    try:
        wait_for(lambda: proc.log_path.read_text().count("ignored, left in the spool") >= 2, "the warnings", proc)
        # many polls later (a file processed meanwhile), still once each
        (spool / "t-03.msgpack").write_bytes(TRACE.read_bytes())
        wait_for(lambda: (spool / "done" / "t-03.msgpack").exists(), "a file to be processed", proc)
        time.sleep(1.5)
    finally:
        code, log = stop(proc)
    assert code == 0, log[-3000:]
    warned = [line.split("WARNING sigmatch.daemon: ", 1)[1] for line in log.splitlines() if "ignored" in line]
    assert warned == [
        "notes.csv: ignored, left in the spool: the spool reads only uncompressed files named *.msgpack",
        "t-01.msgpack.gz: ignored, left in the spool: the spool reads only uncompressed files named *.msgpack; "
        "decompress it into one to have it read",
    ]
    assert (spool / "t-01.msgpack.gz").exists() and (spool / "notes.csv").exists()


def test_a_gzip_spool_file_is_set_aside_with_the_services_own_reason(tmp_path):
    from engine.language.compile import load_world
    from engine.language.config import load_config
    from loaders.sniff import judge_spool_file
    config = load_config(CONFIG)
    core = Engine(config, load_world(config))._core
    path = tmp_path / "t.msgpack"
    path.write_bytes(gzip.compress(TRACE.read_bytes()))
    with open(path, "rb", buffering=0) as f:
        assert judge_spool_file(f, core) == (
            "not a msgpack event stream: it is gzip-compressed (the service reads uncompressed msgpack only); "
            f"{ADVICE}", [])


def test_replay_decompresses_a_gz_trace_as_documented(tmp_path):
    (tmp_path / "trace.msgpack.gz").write_bytes(gzip.compress(TRACE.read_bytes()))
    plain = sigmatch("replay", CONFIG, TRACE, "--out", tmp_path / "plain")
    packed = sigmatch("replay", CONFIG, tmp_path / "trace.msgpack.gz", "--out", tmp_path / "packed")
    assert plain.returncode == packed.returncode == 0, packed.stderr
    assert [p.read_bytes() for p in sorted((tmp_path / "plain").rglob("*.csv"))] == \
           [p.read_bytes() for p in sorted((tmp_path / "packed").rglob("*.csv"))]
    assert "`*.gz`" in (ROOT / "README.md").read_text() and "`*.gz`" in (ROOT / "docs" / "semantics.md").read_text()


# --------------------------------------------------------------------------- 16: micro- and nanoseconds

def events(*times) -> bytes:
    return b"".join(msgpack.packb([t, 3, 13800010001, 0, 0, 0, 0, 0]) for t in times)


UNITS = [
    ("microseconds", T0 * 1000, "1,767,225,600,000,000", "after the year 9999"),
    ("nanoseconds", T0 * 10**6, "1,767,225,600,000,000,000", "after the year 9999"),
    ("seconds", T0 // 1000, "1,767,225,600", "1970-01-21T10:53:45Z"),
]


@pytest.mark.parametrize("unit, first, shown, as_ms", UNITS)
def test_times_in_another_unit_are_refused_by_replay_and_check(tmp_path, unit, first, shown, as_ms):
    path = tmp_path / "trace.msgpack"
    path.write_bytes(events(first, first + 1, first + 2))
    why = (f"{path}: event times look like {unit}, not milliseconds: the first, {shown}, is {as_ms} as ms and "
           f"2026-01-01T00:00:00Z as {unit}; sigmatch reads ms since 1970-01-01 UTC (docs/semantics.md)")
    replay = sigmatch("replay", CONFIG, path, "--out", tmp_path / "out")
    assert replay.returncode == 1
    assert replay.stderr.strip().splitlines() == [f"sigmatch: error: {why}"]
    assert not (tmp_path / "out").exists()
    check = sigmatch("check", CONFIG, path)
    assert check.returncode == 1
    assert error_line(check) == f"sigmatch: error: {why}"


@pytest.mark.parametrize("unit, first, shown, as_ms", UNITS[:2])
def test_times_in_another_unit_are_set_aside_by_the_service(tmp_path, unit, first, shown, as_ms):
    from tests.test_not_event_streams import spool_judgement
    assert spool_judgement(tmp_path, events(first, first + 1)) == (
        f"event times look like {unit}, not milliseconds: the first, {shown}, is {as_ms} as ms and "
        f"2026-01-01T00:00:00Z as {unit}; sigmatch reads ms since 1970-01-01 UTC (docs/semantics.md)", [])


def test_milliseconds_beside_microseconds_only_warn(tmp_path):
    from tests.test_not_event_streams import spool_judgement
    why, warnings = spool_judgement(tmp_path, events(T0, T0 * 1000))
    assert why is None and len(warnings) == 1 and warnings[0].startswith("1 of its 2 events is dated after 2100")


# --------------------------------------------------------------------------- 17: what `check` knows can never match

def test_check_warns_of_an_empty_peer_list_an_empty_area_and_an_empty_snapshot(tmp_path):
    (tmp_path / "p.csv").write_text("msisdn,arpu\n")
    (tmp_path / "peers.txt").write_text("")
    (tmp_path / "area.csv").write_text("cell\n")
    config = tmp_path / "c.toml"
    config.write_text('[engine]\nprofiles = "p.csv"\n[lists]\npeers = "peers.txt"\n[areas]\nschool = "area.csv"\n'
                      '[[campaign]]\nid = "a"\non = ["CALL_MO_END"]\npeer_in = "peers"\narea = "school"\n'
                      'channel = "sms"\n')
    done = sigmatch("check", config)
    assert done.returncode == 0, done.stderr
    # the snapshot is said by its loader (every command says it), the campaigns by check
    warned = [line.split(" WARNING ", 1)[1].split(": ", 1)[1] for line in done.stderr.splitlines()
              if " WARNING sigmatch.check: " in line or " WARNING sigmatch.loaders: " in line]
    assert warned == [
        f"{tmp_path / 'p.csv'}: the profile snapshot holds no subscriber (no rows): no campaign can match",
        f"{tmp_path / 'peers.txt'}: the list is empty",
        "campaign 'a' can never match: its peer_in list 'peers' is empty",
        "campaign 'a' can never match: its area 'school' is empty",
    ]


def test_check_says_nothing_of_lists_and_areas_that_hold_something():
    done = sigmatch("check", CONFIG)
    assert done.returncode == 0 and "sigmatch.check" not in done.stderr, done.stderr


# --------------------------------------------------------------------------- 18: run.dead_letters

def test_dead_letters_have_no_padding_and_still_write_the_same_files(tmp_path):
    data = msgpack.packb([1, 99, 13800010001]) + msgpack.packb("nope") + TRACE.read_bytes()
    run = Engine.from_config(CONFIG).replay(data, out=tmp_path / "replayed")
    assert set(run.dead_letters.dtype.names) == {"offset", "count", "reason", "field", "nbytes", "bytes"}
    assert len(run.dead_letters) == 2
    assert all(not name.startswith("_") for name in Engine.from_config(CONFIG).replay(b"").dead_letters.dtype.names)
    campaigns = Engine.from_config(CONFIG).campaigns
    with SinkSet(tmp_path / "again", campaigns=campaigns) as sinks:
        sinks.write_dead_letters(run.dead_letters)
        sinks.write_actions(run.actions)
        sinks.write_conversions(run.conversions)
    for kind in ("dead_letters", "sms"):
        assert [p.read_bytes() for p in sorted((tmp_path / "replayed" / kind).glob("*.csv"))] == \
               [p.read_bytes() for p in sorted((tmp_path / "again" / kind).glob("*.csv"))]
    assert run.dead_letter_columns()["reason"].tolist() == ["unknown_type", "not_an_event"]


# --------------------------------------------------------------------------- 19: plurals

def test_plural():
    assert [plural(n, "action") for n in (0, 1, 2, 1234)] == ["0 actions", "1 action", "2 actions", "1,234 actions"]
    assert plural(1, "eligibility class", "eligibility classes") == "1 eligibility class"
    assert plural(3, "eligibility class", "eligibility classes") == "3 eligibility classes"


def test_the_replay_summary_says_one_of_each_in_the_singular():
    from engine.cli import format_run
    stats = {"run": {"events": 1, "bad_events": {"x": 0}, "unknown_subscribers": 1, "late_events": 1, "actions": 1,
                     "conversions": 1}, "timing": {"elapsed_s": 0.5, "events_per_s": None}}
    assert format_run(stats) == "1 event (0 bad, 1 unknown subscriber, 1 late), 1 action, 1 conversion in 0.50 s"


def test_the_compile_log_says_one_of_each_in_the_singular(tmp_path, caplog):
    (tmp_path / "p.csv").write_text("msisdn\n13800000001\n")
    (tmp_path / "peers.txt").write_text("13800000002\n")
    (tmp_path / "area.txt").write_text("7\n")
    config = tmp_path / "c.toml"
    config.write_text('[engine]\nprofiles = "p.csv"\n[lists]\npeers = "peers.txt"\n[areas]\nschool = "area.txt"\n'
                      '[[campaign]]\nid = "a"\non = ["CALL_MO_END"]\npeer_in = "peers"\narea = "school"\n'
                      'channel = "sms"\n')
    caplog.set_level(logging.INFO, logger="sigmatch.compile")
    Engine.from_config(config)
    assert [r.getMessage() for r in caplog.records if r.name == "sigmatch.compile"] == [
        "compiled 1 campaign over 1 subscriber: 2 eligibility classes, 1 area, 1 peer set"]


def test_the_service_keeps_1_pending_action_in_the_singular(tmp_path):
    (tmp_path / "p.csv").write_text("msisdn\n13800000001\n")
    config = tmp_path / "c.toml"
    config.write_text('[engine]\nprofiles = "p.csv"\n[[campaign]]\nid = "a"\non = ["SMS_MO"]\ndelay = "1h"\n'
                      'channel = "sms"\n')
    event = msgpack.packb({"ts": T0, "type": "SMS_MO", "msisdn": 13800000001})
    done = sigmatch("run", config, "--stdin", "--out", tmp_path / "out", "--state", tmp_path / "state", stdin=event)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(
        "INFO sigmatch.service: stopped: checkpoint written, 1 pending action kept")


# --------------------------------------------------------------------------- 21: gen --force, gen --events 0

def test_gen_force_removes_only_the_earlier_worlds_own_files(tmp_path):
    world = tmp_path / "w"
    first = sigmatch("gen", world, "--subscribers", "200", "--events", "1000", "--trace-files", "3")
    assert first.returncode == 0, first.stderr
    (world / "notes.txt").write_text("mine\n")
    (world / "lists" / "mine.txt").write_text("13800000001\n")
    (world / "out").mkdir()
    (world / "out" / "stats.json").write_text("{}")
    again = sigmatch("gen", world, "--subscribers", "200", "--events", "1000", "--profiles-format", "csv", "--force")
    assert again.returncode == 0, again.stderr
    assert sorted(p.relative_to(world).as_posix() for p in world.rglob("*") if p.is_file()) == sorted([
        "campaigns.toml", "profiles.csv", "trace.msgpack", "notes.txt", "out/stats.json",
        *(f"lists/{n}.roar" for n in ("complaints", "crbt_peers", "crbt_targets", "dnd", "family_peers",
                                       "family_targets", "mms_handsets", "staff")), "lists/mine.txt",
        *(f"areas/{n}.txt" for n in ("airport", "cbd", "malls", "schools"))])
    assert (world / "notes.txt").read_text() == "mine\n"
    replay = sigmatch("replay", world / "campaigns.toml", world / "trace.msgpack", "--out", tmp_path / "o")
    assert replay.returncode == 0, replay.stderr


@pytest.mark.parametrize("option, value", [("--events", "0"), ("--events", "-5"), ("--subscribers", "-1"),
                                           ("--trace-files", "0")])
def test_gen_refuses_counts_below_one_before_anything_is_touched(tmp_path, option, value):
    counts = {"--subscribers": "200", "--events": "1000"} | {option: value}
    args = [a for pair in counts.items() for a in pair]
    done = sigmatch("gen", tmp_path / "w", *args)
    assert done.returncode == 1
    lowest, highest = {"--events": (1, "100,000,000,000"), "--subscribers": (100, "500,000,000"),
                       "--trace-files": (1, "1,000")}[option]
    assert done.stderr.strip().splitlines() == [
        f"sigmatch: error: {option} must be an integer from {lowest} to {highest}, got {value}"]
    assert not (tmp_path / "w").exists()


def test_demo_refuses_too_few_events_in_one_line(tmp_path):
    done = sigmatch("demo", "--dir", tmp_path / "d", "--subscribers", "2000", "--events", "0")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "sigmatch: error: the demo needs at least 100 subscribers and 1,000 events (--subscribers 2,000, --events 0)"]
    assert not (tmp_path / "d").exists()


def test_a_second_demo_in_one_dir_replaces_the_first_ones_output(tmp_path):
    """Twice in one --dir: the same files as once (they had accumulated, every count doubled);
    a --dir whose out/ is a service's is refused in one line, and left as it was."""
    args = ("demo", "--dir", tmp_path / "d", "--subscribers", "500", "--events", "3000")
    first = sigmatch(*args)
    assert first.returncode == 0, first.stderr
    once = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "d" / "out").rglob("*.csv")}
    again = sigmatch(*args)
    assert again.returncode == 0, again.stderr
    assert "the earlier output" in again.stdout
    twice = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "d" / "out").rglob("*.csv")}
    assert twice == once and once
    service = tmp_path / "s" / "out"
    service.mkdir(parents=True)
    (service / ".sigmatch-service-id").write_text("0123\n")
    (service / "stats.json").write_text("{}")
    (tmp_path / "s" / ".sigmatch-demo").write_text("")
    refused = sigmatch("demo", "--dir", tmp_path / "s", "--subscribers", "500", "--events", "3000")
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "a service's output" in refused.stderr and (service / "stats.json").read_text() == "{}"


def test_a_second_demo_reuses_the_world_it_made_while_it_is_intact(tmp_path):
    """A second demo in one --dir (a second `make demo`) made the world again: it reuses it
    while its manifest says the same arguments made it and every file is as made, makes it
    again otherwise, and says which it did."""
    args = ("demo", "--dir", tmp_path / "d", "--subscribers", "500", "--events", "3000")
    world = tmp_path / "d"

    def said(proc):
        assert proc.returncode == 0, proc.stderr
        return next(line for line in proc.stdout.splitlines() if line.startswith("demo world:"))

    def files():
        return {p.relative_to(world): p.read_bytes() for p in world.rglob("*")
                if p.is_file() and "out" not in p.relative_to(world).parts}

    head = f"demo world: 500 subscribers, 3,000 events in {world}"
    assert said(sigmatch(*args)) == f"{head} (made)"
    made = files()
    assert oct((world / ".sigmatch-demo-world.json").stat().st_mode & 0o777) == "0o640"
    before = (world / "trace-2.msgpack").stat().st_mtime_ns
    assert said(sigmatch(*args)) == \
        f"{head} (reused: the one made before with these arguments, its files as they were made)"
    assert (world / "trace-2.msgpack").stat().st_mtime_ns == before and files() == made
    # one byte changed, size kept: found by its hash, and the world made again as it was
    trace = bytearray((world / "trace-2.msgpack").read_bytes())
    trace[100] ^= 0xFF
    (world / "trace-2.msgpack").write_bytes(bytes(trace))
    assert said(sigmatch(*args)) == f"{head} (made again: trace-2.msgpack changed since it was made)"
    assert files() == made
    (world / "lists" / "dnd.roar").unlink()
    assert said(sigmatch(*args)) == f"{head} (made again: lists/dnd.roar is missing)"
    assert files() == made
    other = sigmatch("demo", "--dir", world, "--subscribers", "500", "--events", "4000")
    assert said(other) == (f"demo world: 500 subscribers, 4,000 events in {world} "
                           "(made again: the one made before had other arguments or another generator)")


def test_demo_does_not_write_over_a_directory_that_is_not_a_demos(tmp_path):
    """A --dir holding the user's own world (a campaigns.toml of theirs) is refused in one
    line, and left as it was; an empty one becomes a demo's, which a second demo may reuse."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "campaigns.toml").write_text("# my campaigns\n")
    refused = sigmatch("demo", "--dir", mine, "--subscribers", "500", "--events", "3000")
    assert refused.stderr.strip().splitlines() == [
        f"sigmatch: error: --dir {mine}: not empty and not a demo's directory (no .sigmatch-demo): the demo would "
        "write over its files: give an empty or new --dir"]
    assert sorted(p.name for p in mine.iterdir()) == ["campaigns.toml"]
    assert (mine / "campaigns.toml").read_text() == "# my campaigns\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    done = sigmatch("demo", "--dir", empty, "--subscribers", "500", "--events", "3000")
    assert done.returncode == 0, done.stderr
    assert (empty / ".sigmatch-demo").is_file() and (empty / "campaigns.toml").is_file()


# --------------------------------------------------------------------------- 24: the metrics in docs/operations.md

def test_the_operations_guide_lists_every_metric_and_no_other():
    from engine.service.metrics import METRIC_NAMES
    text = (ROOT / "docs" / "operations.md").read_text()
    listed = text.split("/metrics` gives Prometheus text:", 1)[1].split("\n\n", 1)[0]
    assert set(re.findall(r"`(sigmatch_[a-z_]+)", listed)) == set(METRIC_NAMES)
    assert np.all([name in text for name in METRIC_NAMES])


# --------------------------------------------------------------------------- issue 14's trial (2026-12-05)

def _event_ends(data: bytes) -> list[int]:
    """The offset after each value of `data`, as msgpack-python reads them."""
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(data)
    ends = []
    for _ in unpacker:
        ends.append(unpacker.tell())
    return ends


def _cut_trace(tmp_path: Path, keep: int) -> Path:
    path = tmp_path / "cut.msgpack"
    path.write_bytes(TRACE.read_bytes()[:keep])
    return path


def test_check_says_a_trace_that_ends_inside_an_event_as_replay_finds_it(tmp_path):
    """`check` said ok for a trace cut inside an event that replay then stopped at; its
    stdout's last line says the traces' verdict (its first said the configuration's)."""
    whole_events = _event_ends(TRACE.read_bytes())[10]
    cut = _cut_trace(tmp_path, whole_events + 5)
    check = sigmatch("check", CONFIG, cut)
    assert check.returncode == 1
    assert check.stdout.splitlines()[0] == f"{CONFIG}: ok"
    assert check.stdout.splitlines()[-1] == "  traces: broken (the error follows)"
    assert error_line(check) == (f"sigmatch: error: {cut}: the stream ends inside an event at byte {whole_events:,}; "
                                 "replay processes the events before it, then stops with an error")
    replay = sigmatch("replay", CONFIG, cut, "--out", tmp_path / "out")
    assert replay.returncode == 1 and f"at byte offset {whole_events}" in error_line(replay)
    # one event short of the cut: whole events only, ok
    whole = _cut_trace(tmp_path, whole_events)
    done = sigmatch("check", CONFIG, whole)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "  traces: ok"


def test_check_says_where_a_trace_breaks(tmp_path):
    data = bytearray(TRACE.read_bytes())
    at = _event_ends(bytes(data))[0]
    data[at] = 0xC1         # the second event's first byte: msgpack never uses it
    path = tmp_path / "broken.msgpack"
    path.write_bytes(bytes(data))
    check = sigmatch("check", CONFIG, path)
    assert check.returncode == 1
    assert check.stdout.splitlines()[-1] == "  traces: broken (the error follows)"
    assert error_line(check) == (f"sigmatch: error: {path}: the stream breaks at byte {at:,} (a 0xc1 byte, which "
                                 "msgpack never uses, in the value that starts there); replay processes the events before it, then stops with an "
                                 "error")


def test_replay_warns_when_many_events_are_late_and_not_when_few(tmp_path):
    """One event dated far ahead (a corrupt ts) makes those after it late: replay said only the
    count; a share of 1% or more is now a warning, a share below it is not."""
    later = [T0 + 1000 * i for i in range(200)]
    (tmp_path / "many.msgpack").write_bytes(events(*later[:100], T0 + 10 ** 11, *later[100:]))
    many = sigmatch("replay", CONFIG, tmp_path / "many.msgpack", "--out", tmp_path / "o1")
    assert many.returncode == 0, many.stderr
    warned = [line for line in many.stderr.splitlines() if " WARNING " in line]
    assert len(warned) == 1 and warned[0].endswith(
        "100 of 201 events late (50%; ts below the engine's clock, processed at the clock's time): traces out of "
        "order, or an event dated far ahead moved the clock on? Contacts are not what they would have been at the "
        "events' times (docs/semantics.md)")
    # 1 late of 101 is below 1%: no warning
    (tmp_path / "few.msgpack").write_bytes(events(*later[:99], T0 + 10 ** 6, T0 + 2))
    few = sigmatch("replay", CONFIG, tmp_path / "few.msgpack", "--out", tmp_path / "o2")
    assert few.returncode == 0 and "1 late" in few.stdout
    assert " WARNING " not in few.stderr, few.stderr
    # 2 late of 101: at 1%, a warning
    (tmp_path / "two.msgpack").write_bytes(events(*later[:99], T0 + 10 ** 6, T0 + 2, T0 + 3))
    two = sigmatch("replay", CONFIG, tmp_path / "two.msgpack", "--out", tmp_path / "o3")
    assert two.returncode == 0 and "2 of 102 events late" in two.stderr, two.stderr


def test_replay_says_the_bytes_of_bad_values_and_warns_when_they_hold_many_events(tmp_path):
    """A newcomer's trial (2026-12-06): random bytes inserted into a trace made one bad value
    of 607 events, and the summary said "1 bad". The summary now gives the bytes inside the bad
    values, and warns when they are many events' worth; an event with a wrong field is not."""
    data = events(*(T0 + 1000 * i for i in range(1000)))
    size = len(events(T0))
    at = 100 * size
    (tmp_path / "damaged.msgpack").write_bytes(data[:at] + b"\xde\x01\x00" + data[at:])   # a map of 256 pairs
    damaged = sigmatch("replay", CONFIG, tmp_path / "damaged.msgpack", "--out", tmp_path / "o1")
    assert damaged.returncode == 0, damaged.stderr
    inside = 3 + 512 * size
    assert f"(1 bad in {inside:,} bytes, " in damaged.stdout.splitlines()[0]
    warned = [line for line in damaged.stderr.splitlines() if " WARNING " in line]
    assert len(warned) == 1 and warned[0].split(" WARNING sigmatch: ")[1] == (
        f"the bad value, at byte {at:,} of {tmp_path / 'damaged.msgpack'}, holds {inside:,} bytes, as many as about "
        f"512 events of this run ({size} bytes each on average): a damaged byte read as the header of a map, an "
        "array, a string or binary data makes one bad value of what follows it. Compare the trace with its source "
        '(docs/semantics.md, "Good and bad events")'), warned
    stats = json.loads((tmp_path / "o1" / "stats.json").read_text())["run"]
    assert stats["bad_bytes"] == inside and sum(stats["bad_events"].values()) == 1
    assert stats["largest_bad_value"] == {"offset": at, "bytes": inside, "trace": str(tmp_path / "damaged.msgpack"),
                                          "trace_offset": at}
    # behind another trace, and among many bad events of an event's size (a newcomer's trial:
    # 2,000 events of an unknown type hid the warning when it judged the bad values' average)
    wrong = msgpack.packb([T0, 99, 13800010001, 0, 0, 0, 0, 0])
    (tmp_path / "first.msgpack").write_bytes(wrong * 2000 + data[:at])
    (tmp_path / "second.msgpack").write_bytes(b"\xde\x01\x00" + data[at:])
    two = sigmatch("replay", CONFIG, tmp_path / "first.msgpack", tmp_path / "second.msgpack", "--out", tmp_path / "o3")
    assert two.returncode == 0, two.stderr
    assert (f"the largest of 2,001 bad values, at byte 0 of {tmp_path / 'second.msgpack'}, holds {inside:,} bytes"
            in two.stderr), two.stderr
    # one event of an unknown type is one event's bytes: said, not warned of
    wrong = msgpack.packb([T0, 99, 13800010001, 0, 0, 0, 0, 0])
    (tmp_path / "wrong.msgpack").write_bytes(data[:at] + wrong + data[at:])
    one = sigmatch("replay", CONFIG, tmp_path / "wrong.msgpack", "--out", tmp_path / "o2")
    assert one.returncode == 0 and f"(1 bad in {len(wrong)} bytes, " in one.stdout, one.stdout
    assert " WARNING " not in one.stderr, one.stderr


def test_a_broken_stream_is_said_after_the_warning_of_the_bad_value_before_it(tmp_path):
    """A trace whose damage both swallowed events and cut it short (a newcomer's trial): the
    error line alone said only where it broke. The warning of the bad value comes first, with
    workers or without; a .gz trace's offset is said as decompressed."""
    data = events(*(T0 + 1000 * i for i in range(1000)))
    at = 100 * len(events(T0))
    broken = data[:at] + b"\xde\x01\x00" + data[at:-3]
    (tmp_path / "broken.msgpack").write_bytes(broken)
    with gzip.open(tmp_path / "broken.msgpack.gz", "wb") as f:
        f.write(broken)
    # broken in the middle, with a long tail after the break that the run read but never
    # processed: the size of a good event is that of the bytes before the break
    (tmp_path / "tail.msgpack").write_bytes(data[:at] + b"\xde\x01\x00" + data[at:] + b"\xc1" + data * 40)
    tail = sigmatch("replay", CONFIG, tmp_path / "tail.msgpack", "--out", tmp_path / "o-tail")
    assert tail.returncode == 1 and "as many as about 512 events of this run (25 bytes each on average)" in tail.stderr
    for trace in ("broken.msgpack", "broken.msgpack.gz"):
        for workers in (1, 2):
            done = sigmatch("replay", CONFIG, tmp_path / trace, "--out", tmp_path / f"o-{trace}-{workers}",
                            "--workers", workers)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 1 and len(lines) == 2, done.stderr
            unpacked = "decompressed " if trace.endswith(".gz") else ""
            assert f" WARNING sigmatch: the bad value, at {unpacked}byte {at:,} of {tmp_path / trace}, holds " in lines[0]
            assert lines[1].startswith(f"sigmatch: error: event stream broken in {tmp_path / trace} at {unpacked}byte offset ")
    # a .gz cut short after the bad value: the trace cannot be read on (no StreamError), and
    # the warning still comes first (it was missing: helper-109's trial)
    whole = gzip.compress(data[:at] + b"\xde\x01\x00" + data[at:], mtime=0)
    (tmp_path / "cut.msgpack.gz").write_bytes(whole[:-40])
    for workers in (1, 2):
        done = sigmatch("replay", CONFIG, tmp_path / "cut.msgpack.gz", "--out", tmp_path / f"o-cut-{workers}",
                        "--workers", workers)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 2, done.stderr
        assert f" WARNING sigmatch: the bad value, at decompressed byte {at:,} of {tmp_path / 'cut.msgpack.gz'}, " in lines[0]
        assert lines[1].startswith(f"sigmatch: error: {tmp_path / 'cut.msgpack.gz'}: cannot read trace: truncated gzip")


@pytest.mark.parametrize("padding, said", [(23, False), (24, True)])
def test_check_says_where_a_bad_value_of_many_events_lies_in_the_head(tmp_path, padding, said):
    """`check` said "1 bad" and "traces: ok" of a head where replay warned of a bad value
    holding 512 events (a newcomer's trial). Its line now says where the head's largest bad
    value is when it holds four good events' bytes or more: here an array header taking three
    events of 25 bytes and a binary value of 23 bytes (99 in all: not said) or 24 (100: said)."""
    data = events(*(T0 + 1000 * i for i in range(1000)))
    size = len(events(T0))
    at = 10 * size
    binary = msgpack.packb(b"x" * (padding - 2), use_bin_type=True)
    assert size == 25 and len(binary) == padding
    damaged = data[:at] + b"\x94" + data[at:at + 3 * size] + binary + data[at + 3 * size:]
    (tmp_path / "head.msgpack").write_bytes(damaged)
    done = sigmatch("check", CONFIG, tmp_path / "head.msgpack")
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if "head.msgpack:" in line)
    largest = 1 + 3 * size + padding
    found = (f"1 bad (1 wrong_type (ts); the largest, at byte {at:,}, holds {largest:,} bytes, as many as about "
             f"4 events: a damaged header?)")
    assert (found in line) is said and "1 bad (1 wrong_type (ts)" in line, line
    assert done.stdout.splitlines()[-1] == "  traces: ok"
    # a .gz trace's offset is that of its decompressed bytes, as replay says it
    with gzip.open(tmp_path / "head.msgpack.gz", "wb") as f:
        f.write(damaged)
    packed = sigmatch("check", CONFIG, tmp_path / "head.msgpack.gz")
    assert (f"the largest, at decompressed byte {at:,}, holds" in packed.stdout) is said, packed.stdout


@pytest.mark.parametrize("largest, warned", [(179, 0), (180, 4)])
def test_a_bad_value_is_held_to_hide_events_from_four_events_bytes(largest, warned):
    """events_in_largest_bad_value at its boundary: good events of 45 bytes, a bad value of
    179 bytes (under four events) is not, one of 180 bytes is, whatever the others."""
    from engine.cli import events_in_largest_bad_value
    run = {"events": 100, "bad_events": {"wrong_type": 51}, "bad_bytes": largest + 50 * 45,
           "bytes": 100 * 45 + largest + 50 * 45, "largest_bad_value": {"offset": 0, "bytes": largest}}
    assert events_in_largest_bad_value(run) == warned
    assert events_in_largest_bad_value({**run, "largest_bad_value": None}) == 0


INTERRUPTED_ON_A_FULL_DISK = """
import sys
import engine.api

def replay(self, *args, **kwargs):
    def reading():
        try:
            yield b""
        finally:
            raise KeyboardInterrupt     # the trace reader's cleanup, interrupted in turn
    chunks = reading()
    next(chunks)
    try:
        raise OSError({errno}, "{reason}", "OUT/sms/.actions-00000001.csv.tmp")
    finally:
        del chunks                      # closed by the collector: "Exception ignored in ..."
        raise KeyboardInterrupt         # Ctrl-C while the files are being removed

engine.api.Engine.replay = replay
from engine.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("code, reason, said", [
    (28, "No space left on device", "sigmatch: error: OUT/sms/.actions-00000001.csv.tmp: No space left on device"),
    (2, "No such file or directory", "sigmatch: error: aborted")])
def test_ctrl_c_on_the_way_out_of_a_write_error_says_the_write_error(tmp_path, code, reason, said):
    """A newcomer's trial (2026-12-07): Ctrl-C while a full disk's error was on its way out
    (its files being removed) said "aborted", and once printed a traceback of the trace
    reader's generator closed at exit. The write error is said, in one line; another error
    behind the interruption is not a write error, and "aborted" stands."""
    script = INTERRUPTED_ON_A_FULL_DISK.replace("{errno}", str(code)).replace("{reason}", reason)
    done = subprocess.run([sys.executable, "-c", script, "replay", str(CONFIG), str(TRACE), "--out",
                           str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [said], done.stderr


def test_an_empty_profile_snapshot_is_said_as_such_not_as_a_where_error(tmp_path):
    """A snapshot of a header and no rows: `check` blamed the first `where` (its columns typed as
    numbers); the snapshot is now said, and replay warns that no event's subscriber is known."""
    import shutil
    world = tmp_path / "w"
    shutil.copytree(EXAMPLE, world)
    (world / "profiles.csv").write_text("msisdn,arpu,brand,plan,tags\n")
    check = sigmatch("check", world / "campaigns.toml")
    assert check.returncode == 0, check.stderr
    assert "the profile snapshot holds no subscriber (no rows): no campaign can match" in check.stderr
    replay = sigmatch("replay", world / "campaigns.toml", world / "trace.msgpack", "--out", tmp_path / "out")
    assert replay.returncode == 0, replay.stderr
    assert (f"no event's subscriber is in the profile snapshot ({world / 'profiles.csv'}): the 24 good events are "
            "all of unknown subscribers, so no campaign could match") in replay.stderr
    # a bad value beside them: `events` counts the good ones, which are still all unknown (the
    # warning took the bad ones from the good until 2026-12-07, and said nothing)
    (world / "one-bad.msgpack").write_bytes((world / "trace.msgpack").read_bytes() + b"\xc0")
    one_bad = sigmatch("replay", world / "campaigns.toml", world / "one-bad.msgpack", "--out", tmp_path / "out3")
    assert one_bad.returncode == 0 and "the 24 good events are all of unknown subscribers" in one_bad.stderr
    # the usual world says neither
    usual = sigmatch("replay", CONFIG, TRACE, "--out", tmp_path / "out2")
    assert usual.returncode == 0 and " WARNING " not in usual.stderr, usual.stderr


def test_sigmatch_alone_shows_the_help_as_help_does():
    done = sigmatch()
    assert done.returncode == 2
    assert done.stderr.startswith("Usage: ") and "\nCommands:\n" in done.stderr
    assert "error" not in done.stderr.splitlines()[0]


def test_report_plots_without_the_extra_is_said_before_any_work(tmp_path, monkeypatch):
    """Without matplotlib, `report --plots DIR` made DIR, read every output, then refused."""
    import importlib.util
    from click.testing import CliRunner
    from engine.cli import main
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("matplotlib", "jinja2") else found(name, *a))
    plots = tmp_path / "plots"
    result = CliRunner().invoke(main, ["report", str(tmp_path / "no-such-run"), "--plots", str(plots)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "sigmatch: error: report --plots needs matplotlib: pip install 'sigmatch[report]'")
    assert not plots.exists()
    both = CliRunner().invoke(main, ["report", str(tmp_path / "no-such-run"), "--plots", str(plots),
                                     "--html", str(tmp_path / "r.html")])
    assert both.output.strip().splitlines()[-1] == (
        "sigmatch: error: report --plots and --html need matplotlib and Jinja2: pip install 'sigmatch[report]'")


def test_a_generated_world_is_readable_by_owner_and_group_only(tmp_path):
    from engine.world.gen import generate
    world = generate(tmp_path / "w", subscribers=200, events=500, campaigns=1, trace_files=2, progress=False)
    files = [p for p in (tmp_path / "w").rglob("*") if p.is_file()]
    assert world.config in files and len(files) > 5
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o640)}


def test_check_says_what_it_cannot_tell_and_a_gzip_cut_short(tmp_path):
    """From a second trial: a later file whose own head breaks was 'traces: ok' under a line
    saying it breaks; a .gz cut short within the head was ok; a trace that cannot be read
    left no verdict line."""
    import gzip as gzip_module
    big = TRACE.read_bytes() * 200          # past the 4,096 values check reads of it
    (tmp_path / "big.msgpack").write_bytes(big)
    (tmp_path / "c1.msgpack").write_bytes(b"\xc1")
    done = sigmatch("check", CONFIG, tmp_path / "big.msgpack", tmp_path / "c1.msgpack")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        f"  traces: ok as far as check can tell: {tmp_path / 'c1.msgpack'}: read from its own first byte, it "
        "breaks at byte 0; if the file before it ends at an event's end, replay stops there with an error (it "
        "may also begin inside an event of that file)")
    (tmp_path / "cut.msgpack.gz").write_bytes(gzip_module.compress(TRACE.read_bytes() * 20)[:600])
    cut = sigmatch("check", CONFIG, tmp_path / "cut.msgpack.gz")
    assert cut.returncode == 1 and cut.stdout.splitlines()[-1] == "  traces: broken (the error follows)"
    assert error_line(cut).startswith(f"sigmatch: error: {tmp_path / 'cut.msgpack.gz'}: truncated gzip file: ")
    assert error_line(cut).endswith("; replay processes the events before it, then stops with an error")
    missing = sigmatch("check", CONFIG, tmp_path / "missing.msgpack")
    assert missing.returncode == 1 and missing.stdout.splitlines()[-1] == "  traces: refused (the error follows)"
    assert error_line(missing) == f"sigmatch: error: {tmp_path / 'missing.msgpack'}: no such trace file"
