"""The daemon's Prometheus metrics: the exposed series equal the engine's cumulative figures,
they are served over HTTP, HOST:PORT parsing, and no subscriber number in any label."""
import hashlib
import re
import socket
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine import Engine
from engine.world.gen import encode_events, generate
from engine.service.metrics import METRIC_NAMES, DaemonMetrics, parse_hostport
from engine.records import BAD_REASONS, FUNNEL

# series measured against an injected clock, named once
LAG = "sigmatch_event_time_lag_seconds"
CHECKPOINT_AGE = "sigmatch_checkpoint_age_seconds"
CHECKPOINT_TIME = "sigmatch_checkpoint_duration_seconds"
EVENT_RATE = "sigmatch_events_per_second"
BYTE_RATE = "sigmatch_input_bytes_per_second"

UNKNOWN_MSISDN = 639999999999            # not in the generated profiles
T0 = 2_000_000_000.0                     # a fixed wall clock for the tests


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("world"), subscribers=2_000, events=20_000, campaigns=3, seed=5)


def extra_events(ts: int) -> bytes:
    """Two bad values (not events), one event of an unconfigured type, one of an unknown
    subscriber: every kind of figure moves."""
    unknown_type = encode_events(np.array([ts]), np.array([63]), np.array([UNKNOWN_MSISDN], np.uint64),
                                 np.array([0], np.uint64), np.array([1]), np.array([0]), np.array([0]),
                                 np.array([0]))
    unknown_sub = encode_events(np.array([ts]), np.array([3]), np.array([UNKNOWN_MSISDN], np.uint64),
                                np.array([0], np.uint64), np.array([1]), np.array([0]), np.array([0]),
                                np.array([0]))
    return b"\x01" + b"\xc0" + unknown_type + unknown_sub


@pytest.fixture(scope="module")
def replayed(world):
    """An engine part-way through the trace (so timers are pending), then some bad input."""
    data = world.trace.read_bytes()
    for tenth in range(2, 10):
        cut = len(data) // 45 * tenth // 10 * 45        # gen writes fixed 45-byte events
        engine = Engine.from_config(world.config)
        engine.replay(data[:cut])
        if engine.pending:
            break
    engine.replay(extra_events(engine.clock))
    return engine, cut + len(extra_events(0))


def samples(text: bytes) -> dict:
    """{(sample name, frozenset of label items): value} of an exposition."""
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return found


def series(name, **labels):
    return (name, frozenset(labels.items()))


def test_the_exposition_equals_the_engines_figures(replayed):
    engine, nbytes = replayed
    wall = [T0 - 30]
    metrics = DaemonMetrics(Engine.from_config(engine.config.path), wall=lambda: wall[0])   # baseline: 0 events
    wall[0] = T0
    metrics.observe(engine, input_bytes=nbytes, checkpoint_seconds=0.25, now=T0 - 10)
    got = samples(generate_latest(metrics.registry))
    counts = engine._core.counts()
    stats = engine.stats

    names = {code: name for name, code in engine.config.event_types.items()}
    assert counts["events_by_type"], "the world has events"
    for name, code in engine.config.event_types.items():
        assert got[series("sigmatch_events_total", type=name)] == counts["events_by_type"].get(code, 0)
    assert sum(v for (n, _), v in got.items() if n == "sigmatch_events_total") == counts["events"]
    assert set(names) >= set(counts["events_by_type"])

    assert counts["bad_events"]["not_an_event"] == 2 and counts["bad_events"]["unknown_type"] == 1
    for reason in BAD_REASONS:
        assert got[series("sigmatch_bad_events_total", reason=reason)] == counts["bad_events"][reason]
    # the bytes inside them: the two bad values of one byte each, and the event of an unknown
    # type, the first of the two events of one size after them
    assert counts["bad_bytes"] == 2 + (len(extra_events(0)) - 2) // 2
    assert got[series("sigmatch_bad_bytes_total")] == counts["bad_bytes"]
    assert counts["unknown_subscribers"] >= 1
    assert got[series("sigmatch_unknown_subscribers_total")] == counts["unknown_subscribers"]

    assert stats["campaigns"]
    for campaign, funnel in stats["campaigns"].items():
        assert got[series("sigmatch_actions_total", campaign=campaign, kind="send")] == funnel["sent"]
        assert got[series("sigmatch_actions_total", campaign=campaign, kind="control")] == funnel["control"]
        for stage in FUNNEL:
            assert got[series("sigmatch_funnel_total", campaign=campaign, stage=stage)] == funnel[stage]
    assert sum(v for (n, _), v in got.items() if n == "sigmatch_actions_total") == stats["totals"]["contacts"]

    assert engine.pending > 0
    assert got[series("sigmatch_pending_actions")] == engine.pending
    assert got[series(LAG)] == pytest.approx(T0 - engine.clock / 1000)
    assert got[series(CHECKPOINT_AGE)] == pytest.approx(10)
    assert got[series(CHECKPOINT_TIME)] == pytest.approx(0.25)
    assert got[series("sigmatch_input_bytes_total")] == nbytes
    assert got[series(EVENT_RATE)] == pytest.approx(counts["events"] / 20)
    assert got[series(BYTE_RATE)] == pytest.approx(nbytes / 20)

    exposed = {n for n, _ in got}
    assert exposed == set(METRIC_NAMES)


def test_rates_cover_the_interval_between_observations(world, replayed):
    engine, nbytes = replayed
    fresh = Engine.from_config(world.config)
    metrics = DaemonMetrics(fresh, wall=lambda: 100.0)       # baseline: no events at t=100
    metrics.observe(engine, input_bytes=nbytes, now=110.0)
    got = samples(metrics.exposition())
    events = engine._core.counts()["events"]
    assert got[series(EVENT_RATE)] == pytest.approx(events / 10)
    assert got[series(BYTE_RATE)] == pytest.approx(nbytes / 10)
    # no new input: the rates fall to zero; the totals stay
    metrics.observe(engine, input_bytes=0, now=115.0)
    got = samples(metrics.exposition())
    assert got[series(EVENT_RATE)] == 0
    assert got[series(BYTE_RATE)] == 0
    assert got[series("sigmatch_input_bytes_total")] == nbytes
    # input_bytes adds up over observations
    metrics.observe(engine, input_bytes=5, now=120.0)
    assert samples(metrics.exposition())[series("sigmatch_input_bytes_total")] == nbytes + 5
    with pytest.raises(ValueError):
        metrics.observe(engine, input_bytes=-1)


def test_a_fresh_engine_has_no_lag_and_no_checkpoint_yet(world):
    engine = Engine.from_config(world.config)
    metrics = DaemonMetrics(engine)
    got = samples(metrics.exposition())
    assert got[series("sigmatch_events_total", type="CALL_MO_END")] == 0
    assert got[series("sigmatch_pending_actions")] == 0
    for absent in ("sigmatch_event_time_lag_seconds", "sigmatch_checkpoint_age_seconds",
                   "sigmatch_checkpoint_duration_seconds", "sigmatch_events_per_second"):
        assert series(absent) not in got
    # a commit without a checkpoint keeps the previous checkpoint figures (none here)
    metrics.observe(engine, input_bytes=0)
    assert series(CHECKPOINT_AGE) not in samples(metrics.exposition())


def test_a_restarted_service_counts_the_age_of_the_checkpoint_it_restored(world):
    """After a restart the checkpoint age runs from the checkpoint restored (an alert on it
    sees a number at once); its duration is not known until the next one."""
    engine = Engine.from_config(world.config)
    metrics = DaemonMetrics(engine, wall=lambda: T0, checkpoint_at=T0 - 42)
    got = samples(metrics.exposition())
    assert got[series(CHECKPOINT_AGE)] == 42
    assert series(CHECKPOINT_TIME) not in got
    metrics.observe(engine, checkpoint_seconds=0.5, now=T0)
    got = samples(metrics.exposition())
    assert got[series(CHECKPOINT_AGE)] == 0 and got[series(CHECKPOINT_TIME)] == 0.5


def test_scrapes_read_the_snapshot_not_the_engine(world):
    other = Engine.from_config(world.config)
    other.replay(world.trace.read_bytes()[: 45 * 1000])
    metrics = DaemonMetrics(other, wall=lambda: T0)
    metrics.observe(other, input_bytes=45_000, checkpoint_seconds=0.5, now=T0 - 1)
    before = metrics.exposition()

    class Boom:
        def __getattr__(self, name):
            raise AssertionError(f"the scrape touched the engine ({name})")

    core, other._core = other._core, Boom()
    try:
        assert metrics.exposition() == before
    finally:
        other._core = core


def test_observing_while_scraping(replayed):
    engine, _ = replayed
    metrics = DaemonMetrics(engine)
    errors = []
    stop = threading.Event()

    def scrape():
        try:
            while not stop.is_set():
                text = metrics.exposition()
                assert b"sigmatch_events_total" in text
        except Exception as e:           # reported below, on the test's thread
            errors.append(e)

    thread = threading.Thread(target=scrape)
    thread.start()
    try:
        for i in range(200):
            metrics.observe(engine, input_bytes=1, checkpoint_seconds=0.0)
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert samples(metrics.exposition())[series("sigmatch_input_bytes_total")] == 200


def test_served_over_http(replayed):
    engine, nbytes = replayed
    with DaemonMetrics(engine) as metrics:
        metrics.observe(engine, input_bytes=nbytes)
        host, port = metrics.serve("127.0.0.1", 0)
        assert host == "127.0.0.1" and port > 0 and metrics.address == (host, port)
        with pytest.raises(RuntimeError):
            metrics.serve("127.0.0.1", 0)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            body = response.read()
        got = samples(body)
        assert got[series("sigmatch_events_total", type="CALL_MO_END")] == \
            engine._core.counts()["events_by_type"][1]
        assert got[series("sigmatch_input_bytes_total")] == nbytes
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics?x=1", timeout=10) as response:
            assert response.status == 200        # a query is prometheus_client's to read

        def answer(path: str, method: str = "GET"):
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, response.headers, response.read()
            except urllib.error.HTTPError as e:
                return e.code, e.headers, e.read()
        # any other path or method was answered with the metrics (or http.server's HTML 501)
        for path in ("/", "/metric", "/metrics/", "/x/metrics"):
            status, headers, body = answer(path)
            assert (status, body) == (404, b"no such page: the metrics are at GET /metrics\n"), path
            assert headers["Content-Type"] == "text/plain; charset=utf-8"
        # TRACE and BREW have no do_ in http.server: 501 before (helper-120)
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"):
            status, headers, body = answer("/metrics", method)
            assert (status, headers["Allow"]) == (405, "GET")
            assert body == f"{method} is not answered here: use GET /metrics\n".encode()
        status, headers, body = answer("/metrics", "HEAD")
        assert (status, headers["Allow"], body) == (405, "GET", b"")
        # a request line http.server cannot read: a status line and headers, not a bare line
        for line in (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"GET /metrics HTTP/9.9\r\n\r\n", b"GET\r\n\r\n",
                     b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", b"\r\n\r\n", b"\t\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(line)
                got = b""
                while chunk := sock.recv(4096):
                    got += chunk
            assert got.startswith(b"HTTP/1.0 40") or got.startswith(b"HTTP/1.0 505"), (line, got[:80])
            assert b"Content-Type: text/plain; charset=utf-8" in got, got
    assert metrics.address is None
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
    metrics.close()                      # twice is fine


def test_no_subscriber_number_in_any_label(world, replayed):
    engine, nbytes = replayed
    metrics = DaemonMetrics(engine)
    metrics.observe(engine, input_bytes=nbytes, checkpoint_seconds=0.1)
    text = metrics.exposition().decode()
    msisdns = {str(int(m)) for m in engine.world.profiles.msisdn} | {str(UNKNOWN_MSISDN)}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name_and_labels = line.rsplit(" ", 1)[0]
        assert not re.search(r"\d{8,}", name_and_labels), line
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            for value in s.labels.values():
                assert value not in msisdns
                assert not re.search(r"\d{11}", value)


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:9108", ("127.0.0.1", 9108)),
    ("0.0.0.0:9108", ("0.0.0.0", 9108)),
    ("localhost:80", ("localhost", 80)),
    (":9108", ("127.0.0.1", 9108)),
    ("9108", ("127.0.0.1", 9108)),
    (" 9108 ", ("127.0.0.1", 9108)),
    ("[::1]:9108", ("::1", 9108)),
    ("metrics.example:0", ("metrics.example", 0)),
])
def test_parse_hostport(text, expected):
    assert parse_hostport(text) == expected


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("host:", "missing port"),
    (":", "missing port"),
    ("host:http", "not a number"),
    ("host:-1", "not a number"),
    ("host:65536", "out of range"),
    ("::1:9108", "brackets"),
    ("[::1]9108", r"\[IPV6\]:PORT"),
    ("[::1:9108", "missing ']'"),
    ("[nothost]:9108", "not an IPv6 address"),
    ("bad host:9108", "bad host"),
    ("９１０８", "not a number"),
])
def test_parse_hostport_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_hostport(text)


# ---------------------------------------------------------------------------- what is live

def live(text: bytes) -> tuple[str, float, float]:
    """(sha256 of sigmatch_config_info, last reload success, its time) of an exposition."""
    got = samples(text)
    shas = [dict(labels)["sha256"] for (name, labels), value in got.items()
            if name == "sigmatch_config_info" and value == 1]
    assert len(shas) == 1, shas
    return (shas[0], got[series("sigmatch_last_reload_success")],
            got[series("sigmatch_last_reload_timestamp_seconds")])


def test_the_live_configuration_and_the_last_reload(world, tmp_path):
    engine = Engine.from_config(world.config)
    sha = hashlib.sha256(world.config.read_bytes()).hexdigest()
    metrics = DaemonMetrics(engine, wall=lambda: T0)
    # start-up is a load that succeeded
    assert live(metrics.exposition()) == (sha, 1, T0)
    # a rejected reload: the live configuration stays, the result and time change
    metrics.observe_reload(None, now=T0 + 5)
    assert live(metrics.exposition()) == (sha, 0, T0 + 5)
    # a reload that took: the new file's sha256
    edited = world.config.parent / "edited-live.toml"
    edited.write_text(world.config.read_text() + "\n# edited\n")
    try:
        new = engine.reload(edited)
    finally:
        edited.unlink()
    new_sha = hashlib.sha256((world.config.read_text() + "\n# edited\n").encode()).hexdigest()
    assert new.configuration["sha256"] == new_sha != sha
    metrics.observe_reload(new, now=T0 + 9)
    assert live(metrics.exposition()) == (new_sha, 1, T0 + 9)
    # the wall clock when no time is given
    metrics.observe_reload(None)
    assert live(metrics.exposition()) == (new_sha, 0, T0)


def test_a_daemon_publishes_what_is_live_over_sighup(world, tmp_path):
    """`sigmatch run --metrics`: SIGHUP with a broken file keeps the live sha256 and says 0;
    a good file becomes the live sha256 with 1; each reload's time moves on."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    config = world.config.parent / f"live-{os.getpid()}.toml"
    original = world.config.read_text()
    config.write_text(original)
    spool = tmp_path / "spool"
    spool.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(config), "--out", str(tmp_path / "out"),
                             "--state", str(tmp_path / "state"), "--spool", str(spool), "--metrics", f":{port}"],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def scrape():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return live(response.read())

    def until(predicate):
        deadline = time.monotonic() + 60
        while True:
            try:
                got = scrape()
                if predicate(got):
                    return got
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the metrics never showed it"
            time.sleep(0.1)

    try:
        sha = hashlib.sha256(original.encode()).hexdigest()
        first = until(lambda got: True)
        assert first[:2] == (sha, 1)
        config.write_text(original.replace("[policy]", "[policy]\nnope = 1"))
        proc.send_signal(signal.SIGHUP)
        rejected = until(lambda got: got[1] == 0)
        assert rejected[0] == sha and rejected[2] >= first[2]
        good = original + "\n# approved in the console\n"
        config.write_text(good)
        proc.send_signal(signal.SIGHUP)
        took = until(lambda got: got[1] == 1)
        assert took[0] == hashlib.sha256(good.encode()).hexdigest() and took[2] >= rejected[2]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            config.unlink()
