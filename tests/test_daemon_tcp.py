"""`sigmatch run --listen` as a real subprocess under idle, crowding and careless producers
(issue 8, item 8): idle connections time out, the connection bound makes room by ending the
longest-idle one, a producer that half-closes learns how many of its bytes were journaled
(SPEC §5), and journal files are private whatever the umask."""
import csv
import os
import random
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine import Engine
from engine.world.gen import generate
from engine.service.client import NotTaken, send
from engine.service.sources import JUNK_BYTES

ROOT = Path(__file__).resolve().parent.parent
EVENT = 45              # engine.world.gen writes fixed 45-byte events


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("world"), subscribers=2_000, events=36_000, campaigns=4, seed=8,
                    trace_files=12)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_daemon(world, tmp_path, *args, umask=None, source=("--listen",)):
    """The daemon as a subprocess, waited for until its systemd READY=1 (it serves by then).
    Returns (process, TCP port)."""
    port = free_port()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / f"notify-{random.randrange(10**9)}.sock")
    notify.bind(address)
    notify.settimeout(120)
    listen = [source[0], f"127.0.0.1:{port}", *source[1:]] if source[0] == "--listen" else list(source)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "-v", "run", str(world.config), "--out", str(tmp_path / "out"),
         "--state", str(tmp_path / "state"), *listen, *args],
        cwd=ROOT, env={**os.environ, "NOTIFY_SOCKET": address}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, umask=-1 if umask is None else umask)
    with notify:
        try:
            assert notify.recv(64) == b"READY=1"
        except TimeoutError:
            proc.kill()
            pytest.fail(proc.communicate()[1][-3000:])
    return proc, port


def stop(proc) -> str:
    """SIGTERM, the exit status checked; the log."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, log = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    return log


def wait_for(condition, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def rows(out: Path) -> list[tuple]:
    found = []
    for path in sorted(out.rglob("actions-*.csv")):
        with open(path, newline="") as f:
            found += [tuple(r.values()) for r in csv.DictReader(f)]
    return found


def expected_rows(run) -> list[tuple]:
    columns = run.action_columns()
    return sorted(tuple(str(columns[k][i]) for k in columns) for i in range(len(run.actions)))


def answer_of(sock: socket.socket, timeout: float = 60.0) -> bytes:
    """What the service sends on a connection before it closes it."""
    sock.settimeout(timeout)
    got = b""
    while True:
        try:
            data = sock.recv(64)
        except ConnectionResetError:
            break
        if not data:
            break
        got += data
    return got


def test_a_half_close_is_answered_with_the_bytes_journaled(world, tmp_path):
    traces = [p.read_bytes() for p in world.traces]
    whole = b"".join(traces[:4])
    proc, port = start_daemon(world, tmp_path)
    try:
        # everything taken: the answer equals what was sent
        assert send("127.0.0.1", port, whole) == len(whole)
        # a stream that ends inside an event: the tail is neither journaled nor counted
        cut = traces[4] + traces[5][:EVENT * 7 + 20]
        with pytest.raises(NotTaken) as short:
            send("127.0.0.1", port, cut)
        assert short.value.taken == len(traces[4]) + EVENT * 7 and short.value.sent == len(cut)
        assert f"resend from byte {short.value.taken:,}" in str(short.value)
        # a stream that is not msgpack after a point: its events before the bad one are taken
        garbage = traces[6][:EVENT * 100] + b"\xc1" + traces[6][EVENT * 100:EVENT * 200]
        with pytest.raises(NotTaken) as bad:
            send("127.0.0.1", port, garbage)
        assert bad.value.taken == EVENT * 100
        # a plain socket, as the operations guide shows it
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(traces[7])
            sock.shutdown(socket.SHUT_WR)
            assert int.from_bytes(answer_of(sock), "big") == len(traces[7])
        # the command: files in order as one stream; exit 0 only when all of it was taken
        files = [str(p) for p in world.traces[8:10]]
        sent = subprocess.run([sys.executable, "-m", "engine.cli", "send", f"127.0.0.1:{port}", *files],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0, sent.stderr
        assert f"{sum(len(traces[i]) for i in (8, 9)):,} bytes taken" in sent.stdout
        truncated = tmp_path / "truncated.msgpack"
        truncated.write_bytes(traces[10][:-3])
        refused = subprocess.run([sys.executable, "-m", "engine.cli", "send", f"127.0.0.1:{port}", str(truncated)],
                                 cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0
        assert refused.stderr.count("\n") == 1 and "resend from byte" in refused.stderr, refused.stderr
        journal = tmp_path / "state" / "tcp-journal"
        wait_for(lambda: not list(journal.glob("*.msgpack")), what="the journal to be processed")
    finally:
        log = stop(proc)
    assert "not a msgpack event stream" in log and "bytes not taken" in log
    # what was answered is exactly what was journaled
    done = sorted((journal / "done").glob("*.msgpack"))
    assert sum(p.stat().st_size for p in done) == (
        len(whole) + short.value.taken + bad.value.taken + len(traces[7]) + len(traces[8]) + len(traces[9])
        + len(traces[10]) - EVENT)
    # the journal is the input: replaying it gives exactly the service's output
    assert sorted(rows(tmp_path / "out")) == expected_rows(Engine.from_config(world.config).replay(done))


def test_values_that_are_no_events_or_too_large_end_the_connection_by_their_name(world, tmp_path):
    """helper-120: a producer sending zero bytes (each a complete msgpack value, none an event)
    was journaled on and on, 1 MB file after file set aside in rejected/, until the disk was
    full; a value longer than max_event_bytes was logged as "not a msgpack event stream"; and
    a producer that half-closed before its stream broke was not counted. Each ends the
    connection now, its events before taken, logged and counted by its own reason."""
    import msgpack
    traces = [p.read_bytes() for p in world.traces]
    metrics_port = free_port()
    proc, port = start_daemon(world, tmp_path, "--metrics", f"127.0.0.1:{metrics_port}")
    journal = tmp_path / "state" / "tcp-journal"
    try:
        def journaled() -> int:
            return sum(p.stat().st_size for p in [*journal.glob("*.msgpack"), *journal.glob("done/*.msgpack")])

        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(traces[0])
            # journaled on its own first: what arrives with good events since the last flush
            # is journaled with them (bad values among events are dead letters)
            wait_for(lambda: journaled() == len(traces[0]), what="the first events journaled")
            sock.sendall(b"\0" * (4 << 20))        # what `send ADDR /dev/zero` sends, for a while
            # at most JUNK_BYTES of them taken (as dead letters) before the connection ends
            zeros_taken = int.from_bytes(answer_of(sock), "big") - len(traces[0])
            assert 0 <= zeros_taken <= JUNK_BYTES
        # a value too long, then a good event after it: nothing from the value on is taken
        too_long = msgpack.packb("x" * 100_000)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(traces[1] + too_long + traces[2])
            sock.shutdown(socket.SHUT_WR)
            assert int.from_bytes(answer_of(sock), "big") == len(traces[1])
        # half-closed before its stream broke: answered, and counted as well
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"\xc1" * 100)
                sock.shutdown(socket.SHUT_WR)
                assert answer_of(sock) == bytes(8)
        # a stray value that is no event between events (a newline after a file, a heartbeat),
        # each in a flush of its own: a dead letter, and the connection goes on (it was ended)
        event = traces[3][:EVENT]
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for part in (event, b"\n", b"\xc0", traces[3][EVENT:2 * EVENT]):
                sock.sendall(part)
                time.sleep(0.6)
            sock.shutdown(socket.SHUT_WR)
            assert int.from_bytes(answer_of(sock), "big") == 2 * EVENT + 2
        wait_for(lambda: not list(journal.glob("*.msgpack")), what="the journal to be processed")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=60) as response:
            text = response.read().decode()
        dropped = {s.labels["reason"]: s.value for family in text_string_to_metric_families(text)
                   for s in family.samples
                   if s.name == "sigmatch_connections_dropped_total" and s.labels["server"] == "tcp"}
        assert dropped == {"bound": 0, "idle": 0, "not_msgpack": 3, "too_large": 1, "not_events": 1,
                           "buffer_bound": 0}
    finally:
        log = stop(proc)
    assert "msgpack values that are no events (neither arrays nor maps) after" in log
    assert f"a value longer than max_event_bytes" in log and f"after {len(traces[1]):,} bytes taken" in log
    assert log.count("not a msgpack event stream after 0 bytes taken") == 3
    done = sorted((journal / "done").glob("*.msgpack"))
    rejected = sorted((journal / "rejected").glob("*.msgpack")) if (journal / "rejected").exists() else []
    # the stray values journaled alone are set aside as any file that is no event stream
    assert sum(p.stat().st_size for p in done + rejected) == (len(traces[0]) + zeros_taken + len(traces[1])
                                                             + 2 * EVENT + 2)


def test_idle_connections_cannot_lock_producers_out(world, tmp_path):
    """64 idle connections (the default bound) used to block every producer for ever; now each
    newcomer ends the longest-idle one, the producers' streams are all taken, and an idle
    connection is closed after --idle-timeout, answered with 0 bytes taken."""
    traces = [p.read_bytes() for p in world.traces]
    metrics_port = free_port()
    # the idle timeout leaves the producers ample time to come while the 64 are still open
    proc, port = start_daemon(world, tmp_path, "--idle-timeout", "15", "--metrics", f"127.0.0.1:{metrics_port}")
    idle = []

    def held() -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=60) as response:
            text = response.read().decode()
        return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
                   if s.name == "sigmatch_connections" and s.labels["server"] == "tcp")

    def made_room() -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=60) as response:
            text = response.read().decode()
        return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
                   if s.name == "sigmatch_connections_dropped_total" and s.labels == {"server": "tcp", "reason": "bound"})

    try:
        for _ in range(64):
            idle.append(socket.create_connection(("127.0.0.1", port)))
            time.sleep(0.005)          # distinct idle ages: the oldest goes first
        # a connection the kernel completed may not be accepted yet: the producers come only once
        # the service holds all 64, or one of them could take a free place instead of making room
        wait_for(lambda: held() == 64, what="the service to hold the 64 idle connections")
        # four producers connect while the 64 are open: each newcomer ends the longest-idle one
        producers = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        # all four accepted before the first is done: one that finished first left a free
        # place for the last, which then made no room (a race the test lost under load)
        wait_for(lambda: made_room() == 4, what="the four producers to be accepted")
        for i, sock in enumerate(producers):
            with sock:
                sock.sendall(b"".join(traces[i * 3:i * 3 + 3]))
                sock.shutdown(socket.SHUT_WR)
                assert int.from_bytes(answer_of(sock), "big") == sum(map(len, traces[i * 3:i * 3 + 3]))
        # the four oldest idle connections made room, and were told: nothing of theirs taken
        for sock in idle[:4]:
            assert answer_of(sock) == bytes(8)
        # the others time out (15 s), answered the same way
        for sock in idle[4:]:
            assert answer_of(sock) == bytes(8)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=60) as response:
            text = response.read().decode()
        dropped = {s.labels["reason"]: s.value for family in text_string_to_metric_families(text)
                   for s in family.samples
                   if s.name == "sigmatch_connections_dropped_total" and s.labels["server"] == "tcp"}
        assert dropped == {"bound": 4, "idle": 60, "not_msgpack": 0, "too_large": 0, "not_events": 0, "buffer_bound": 0}
        journal = tmp_path / "state" / "tcp-journal"
        wait_for(lambda: not list(journal.glob("*.msgpack")), what="the journal to be processed")
    finally:
        for sock in idle:
            sock.close()
        log = stop(proc)
    assert log.count("to make room for") == 4
    assert log.count("idle for 15 s: closed") == 60
    done = sorted((journal / "done").glob("*.msgpack"))
    assert sum(p.stat().st_size for p in done) == sum(map(len, traces))


def test_journal_files_are_private_whatever_the_umask(world, tmp_path):
    """Journal files hold raw events, full numbers included: 0640, directories 0750, under
    umask 022 as under any other; beside a spool, in the spool and its done/."""
    traces = [p.read_bytes() for p in world.traces]
    spool = tmp_path / "spool"
    spool.mkdir()
    proc, port = start_daemon(world, tmp_path, umask=0o022, source=("--listen", "--spool", str(spool)))
    try:
        assert send("127.0.0.1", port, traces[:2]) == sum(map(len, traces[:2]))
        wait_for(lambda: (spool / "done").is_dir() and not list(spool.glob("journal-*.msgpack")),
                 what="the journal to be processed")
    finally:
        stop(proc)
    journaled = sorted((spool / "done").glob("journal-*.msgpack"))
    assert journaled
    assert {stat.S_IMODE(p.stat().st_mode) for p in journaled} == {0o640}
    # alone, TCP journals under the state directory, which it creates
    (tmp_path / "alone").mkdir()
    proc, port = start_daemon(world, tmp_path / "alone", umask=0o022)
    try:
        assert send("127.0.0.1", port, traces[2]) == len(traces[2])
    finally:
        stop(proc)
    journal = tmp_path / "alone" / "state" / "tcp-journal"
    assert stat.S_IMODE(journal.stat().st_mode) == 0o750
    files = sorted(journal.rglob("*.msgpack"))
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o640}


@pytest.mark.parametrize("answer, error", [
    (b"", "gave no answer after 1,000 bytes sent"),                 # closed without an answer
    (b"\x00\x00\x01", "gave no answer"),                            # a short answer
    ((400).to_bytes(8, "big"), "took 400 of 1,000 bytes sent; resend from byte 400"),
    ((5000).to_bytes(8, "big"), "not a sigmatch service"),          # more than was sent
    ((1000).to_bytes(8, "big") + b"x", "gave no answer"),           # more than an answer
])
def test_send_trusts_only_a_whole_answer_equal_to_what_was_sent(answer, error):
    """The client against a stand-in service that answers what it is told to."""
    from engine.errors import SigmatchError
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = server.accept()
        with conn:
            while conn.recv(65536):
                pass
            conn.sendall(answer)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with pytest.raises(SigmatchError, match=error) as raised:
            send("127.0.0.1", server.getsockname()[1], [b"a" * 600, b"b" * 400])
        if isinstance(raised.value, NotTaken):
            assert raised.value.sent == 1000
            assert raised.value.taken == (400 if b"\x01\x90" in answer else None)
    finally:
        thread.join()
        server.close()


def test_port_0_is_said_as_the_port_the_system_chose(world, tmp_path):
    """helper-120: with port 0 the log said `reading TCP 127.0.0.1:0` (the port bound was said
    only at -v): the started line names every address as bound, IPv6 in brackets."""
    import re
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", str(world.config), "--out", str(tmp_path / "out"),
         "--state", str(tmp_path / "state"), "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        found = re.search(r"started: reading TCP 127\.0\.0\.1:(\d+); .*; metrics 127\.0\.0\.1:(\d+)$", line.strip())
        assert found, line
        tcp, metrics = map(int, found.groups())
        assert tcp and metrics
        assert send("127.0.0.1", tcp, world.traces[0].read_bytes()) == world.traces[0].stat().st_size
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=60) as response:
            assert response.status == 200
    finally:
        log = stop(proc)
    assert "127.0.0.1:0" not in log


def test_send_of_a_standard_input_that_fails_says_so_and_what_was_taken(world, tmp_path):
    """helper-122: `send ADDR -` with a socket as standard input that its peer reset said only
    "Connection reset by peer", as if the service had, and hid what the service had taken;
    a stream of another format piped in was sent and refused by the service."""
    from tests.sockets import reset_after
    traces = [p.read_bytes() for p in world.traces]
    data = traces[0] + traces[1][:EVENT * 3 + 7]
    proc, port = start_daemon(world, tmp_path)
    try:
        with reset_after(data) as conn:
            sent = subprocess.run([sys.executable, "-m", "engine.cli", "send", f"127.0.0.1:{port}", "-"], cwd=ROOT,
                                  stdin=conn, capture_output=True, text=True, timeout=120)
        assert sent.returncode == 1
        taken = len(traces[0]) + EVENT * 3
        assert sent.stderr.strip().splitlines() == [
            f"sigmatch: error: standard input: cannot be read after {len(data):,} bytes (Connection reset by peer); "
            f"127.0.0.1:{port} took {taken:,} of them; resend from byte {taken:,}"]
        piped = subprocess.run([sys.executable, "-m", "engine.cli", "send", f"127.0.0.1:{port}", "-"], cwd=ROOT,
                               input=b'{"ts": 1}\n{"ts": 2}\n', capture_output=True, timeout=120)
        assert piped.stderr.decode().strip().splitlines() == [
            "sigmatch: error: standard input: it looks like JSON lines (text); nothing sent"]
    finally:
        stop(proc)
