"""The lookup and the metrics under crowds and hostile clients (issue 8, item 9): a burst of
200 concurrent lookups is answered in full beside hundreds of idle and slow sockets, no
thread per idle socket, and the request log masks numbers and escapes control bytes.
The daemon test runs the real service; the others drive BoundedHTTPServer directly."""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from engine import Engine
from engine.world.gen import generate
from engine.service.serving import BoundedHTTPServer

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "lookup-test-token"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    generated = generate(tmp_path_factory.mktemp("world"), subscribers=2_000, events=24_000, campaigns=4, seed=4,
                         trace_files=4)
    return generated, Engine.from_config(generated.config).replay(generated.traces)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lookup(port: int, msisdn: int, token: str = TOKEN) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/subscriber/{msisdn}",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(data)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
        return got


def test_200_concurrent_lookups_are_answered_beside_idle_and_slow_sockets(world, tmp_path):
    generated, expected = world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    spool.mkdir()
    for trace in generated.traces:
        os.link(trace, spool / trace.name)
    lookup_port, metrics_port = free_port(), free_port()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_address = str(tmp_path / "notify.sock")
    notify.bind(notify_address)
    notify.settimeout(120)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "-v", "run", str(generated.config), "--out", str(out),
         "--state", str(state), "--spool", str(spool), "--lookup", f"127.0.0.1:{lookup_port}",
         "--metrics", f"127.0.0.1:{metrics_port}"],
        cwd=ROOT, env={**os.environ, "SIGMATCH_LOOKUP_TOKEN": TOKEN, "NOTIFY_SOCKET": notify_address},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    crowd = []
    try:
        with notify:
            assert notify.recv(64) == b"READY=1"
        msisdns = sorted({int(m) for m in expected.action_columns()["msisdn"]})
        assert len(msisdns) >= 50
        # hostile company first: idle sockets, and slow ones that never finish their request
        for port in (lookup_port, metrics_port):
            for i in range(300 if port == lookup_port else 100):
                sock = socket.create_connection(("127.0.0.1", port), timeout=60)
                if i % 10 == 0:
                    sock.sendall(b"GET /subscriber/1380013")      # a slowloris: never ends its head
                crowd.append(sock)
        threads_before = threading.active_count()
        results, errors = [], []
        start = threading.Barrier(200)

        def one(i):
            try:
                start.wait()
                results.append(lookup(lookup_port, msisdns[i % len(msisdns)]))
            except Exception as e:       # reported below, all of them
                errors.append(repr(e))

        clients = [threading.Thread(target=one, args=(i,)) for i in range(200)]
        for t in clients:
            t.start()
        scrapes = []
        for _ in range(20):
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=120) as response:
                scrapes.append(response.status)
        for t in clients:
            t.join()
        assert not errors, errors[:5]
        assert len(results) == 200 and all(status == 200 for status, _ in results)
        assert {body["msisdn"] for _, body in results} == {str(m) for m in msisdns[:200]}
        assert scrapes == [200] * 20
        assert threading.active_count() == threads_before       # (the test's own clients are done)
        # request lines that hold a number elsewhere, or control bytes
        number = msisdns[0]
        for line, status in ((f"GET /Subscriber/{number} HTTP/1.0", b"200"),       # as a person types it
                             # a query: said not to be taken (it was told to use the path it used)
                             (f"GET /subscriber/x?msisdn={number} HTTP/1.0", b"400"),
                             (f"GET /subscriber/{number}\x1b[2J\x07 HTTP/1.0", b"400"),
                             # the segment after /subscriber/ is masked whole: control bytes elsewhere
                             (f"GET /subscriber/{number}?x=\x1b[2J\x07 HTTP/1.0", b"400")):
            answer = raw_request(lookup_port, f"{line}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode("latin-1"))
            assert answer.startswith(b"HTTP/1.0 " + status), (line, answer[:80])
    finally:
        for sock in crowd:
            sock.close()
        proc.send_signal(signal.SIGTERM)
        _, log = proc.communicate(timeout=60)
    assert proc.returncode == 0, log[-3000:]
    lookup_lines = [line for line in log.splitlines() if "sigmatch.lookup" in line or '"lookup"' in line]
    assert len(lookup_lines) >= 203
    assert not any(str(m) in log for m in msisdns), "a full number in the log"
    assert "\x1b" not in log and "\x07" not in log and "\\x1b[2J\\x07" in log
    assert "Traceback" not in log


# -- BoundedHTTPServer on its own


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def get(port: int) -> bytes:
    return raw_request(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server ends the connection (within a generous timeout)."""
    sock.settimeout(60)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_request_head_that_does_not_arrive_in_time_is_dropped():
    with_server = BoundedHTTPServer(Hello, "127.0.0.1", 0, name="t", workers=1, request_timeout_s=0.5).start()
    try:
        port = with_server.server_address[1]
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET / HTTP/1.1\r\nHost:")
        assert closed_by_server(slow)
        assert with_server.connection_counts()[1]["timeout"] == 1
        assert get(port).endswith(b"hello")      # the one worker was never held by it
    finally:
        with_server.close()


def test_at_the_bound_the_longest_waiting_connection_makes_room():
    server = BoundedHTTPServer(Hello, "127.0.0.1", 0, name="t", workers=1, max_connections=4).start()
    try:
        port = server.server_address[1]
        idle = []
        for _ in range(4):
            idle.append(socket.create_connection(("127.0.0.1", port)))
            time.sleep(0.05)
        assert get(port).endswith(b"hello")
        assert closed_by_server(idle[0])
        assert server.connection_counts()[1]["bound"] == 1
        for sock in idle:
            sock.close()
    finally:
        server.close()


def test_idle_sockets_hold_no_thread_and_an_oversized_head_is_refused():
    server = BoundedHTTPServer(Hello, "127.0.0.1", 0, name="t", workers=2).start()
    try:
        port = server.server_address[1]
        threads = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
        assert get(port).endswith(b"hello")
        assert threading.active_count() == threads
        # a blank line before the request line is skipped (RFC 9112 §2.2); blank lines alone
        # are answered 400, where the client was left waiting for an answer that never came
        assert raw_request(port, b"\r\nGET / HTTP/1.0\r\n\r\n").endswith(b"hello")
        assert raw_request(port, b"\r\n\r\n").startswith(b"HTTP/1.0 400 Bad request: no request line")
        # the request line alone past the bound: its target is too long (414; 431 before, helper-122)
        assert raw_request(port, b"GET /" + b"a" * 20000).startswith(b"HTTP/1.0 414 URI Too Long")
        assert server.connection_counts()[1]["too_large"] == 1
        # bounded by where the head ends, one byte either side of 16 KiB, whether it came in
        # one piece or not (a whole head of 20 KiB passed when its end came in the last read)
        line = b"GET / HTTP/1.0\r\nX: "
        for size, answer in ((16384, b"HTTP/1.0 200"), (16385, b"HTTP/1.0 431"), (20480, b"HTTP/1.0 431")):
            head = line + b"a" * (size - len(line) - 4) + b"\r\n\r\n"
            assert len(head) == size
            assert raw_request(port, head).startswith(answer), size
        assert server.connection_counts()[1]["too_large"] == 3
        # 414 when the request line alone passes the bound, 431 when its line end is inside it
        for target, answer in ((16384 - len("GET / HTTP/1.0\r"), b"HTTP/1.0 431"),
                               (16384 - len("GET / HTTP/1.0\r") + 1, b"HTTP/1.0 414")):
            head = b"GET /" + b"a" * (target - 1) + b" HTTP/1.0\r\nX: y\r\n\r\n"
            assert raw_request(port, head).startswith(answer), target
        for sock in idle:
            sock.close()
    finally:
        server.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_the_policy_view_judges_when_and_lists_anniversary():
    # `when` depends on the subscriber's counters alone: judged; an anniversary depends on
    # the event's date: listed with the event conditions
    from pathlib import Path

    import numpy as np
    import pyarrow as pa

    from engine.api import Engine
    from engine.language.compile import World
    from engine.language.config import Config, CounterSpec
    from engine.service.lookup import policy_view
    from tests.backends import A, B, SMS, T0, Profiles, campaign, ev

    sms = CounterSpec("sms", on=(SMS,), flags=0, add="count", window_ms=None)
    config = Config(path=Path("c.toml"), counters=(sms,), campaigns=(
        campaign("few", when="sms < 2"), campaign("birthday", anniversary="birth_date")))
    profiles = Profiles(Path("p"), np.array([A, B], dtype=np.uint64),
                        {"birth_date": pa.array(["1990-01-05", None])})
    engine = Engine(config, World(profiles, {}, {}))
    engine.replay(ev(T0, SMS) + ev(T0 + 1, SMS) + ev(T0 + 2, SMS, msisdn=B))
    a, b = policy_view(engine, A), policy_view(engine, B)
    assert a["counters"] == {"sms": 2} and b["counters"] == {"sms": 1}
    assert a["campaigns"]["few"]["blocked_by"] == ["when sms < 2"] and b["campaigns"]["few"]["eligible"]
    assert a["campaigns"]["birthday"]["event_conditions"] == ["anniversary"]


def test_the_policy_view_names_the_variant_each_subscriber_gets():
    # crc32(f"{msisdn}:promo:variant") % 10,000: A 736, B 7881, C 3361; the view's template is
    # the one the records get, and a campaign without variants names its template
    from pathlib import Path

    import numpy as np

    from engine.api import Engine
    from engine.language.compile import World
    from engine.language.config import Config, VariantSpec
    from engine.service.lookup import policy_view
    from tests.backends import A, B, C, T0, Profiles, campaign, ev

    variants = (VariantSpec("A", 737), VariantSpec("B", 3000), VariantSpec("C", 6263))
    config = Config(path=Path("c.toml"), campaigns=(campaign("promo", variants=variants),
                                                   campaign("plain", on=(3,), template="ONE")))
    engine = Engine(config, World(Profiles(Path("p"), np.array([A, B, C], dtype=np.uint64), {}), {}, {}))
    views = [policy_view(engine, x)["campaigns"] for x in (A, B, C)]
    assert [v["promo"]["template"] for v in views] == ["A", "C", "B"]
    assert [v["plain"]["template"] for v in views] == ["ONE"] * 3
    run = engine.replay(ev(T0, msisdn=A) + ev(T0, msisdn=B) + ev(T0, msisdn=C))
    assert list(run.action_columns()["template"]) == ["A", "C", "B"]


def test_bad_requests_get_a_json_error_that_names_what_is_wrong():
    """?last= that is not a whole number in bounds is 400 naming `last` and its bounds (not a
    404 pointing elsewhere); POST is 405 with Allow; http.server's own refusals are JSON too."""
    from engine.service.lookup import LAST_MAX, LookupServer
    asked = []

    def explain(msisdn, last):
        asked.append((msisdn, last))
        return {"msisdn": msisdn, "events": []}

    server = LookupServer(lambda m: {"msisdn": str(m)}, "127.0.0.1", 0, TOKEN, explain=explain,
                          watch=lambda method, m: (200, {"watched": []})).start()
    port = server.address[1]
    try:
        def call(method, path):
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                             headers={"Authorization": f"Bearer {TOKEN}"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, json.loads(response.read()), response.headers
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read()), e.headers

        for value in ("abc", "-1", "99999999999999999999", "", "1.5"):
            status, body, _ = call("GET", f"/subscriber/13800000000/explain?last={value}")
            assert status == 400 and body["parameter"] == "last", (value, body)
            assert "last" in body["error"] and f"0 to {LAST_MAX:,}" in body["error"]
        # another parameter is named, not taken for a bad `last` (helper-120)
        for query, named in (("lats=3", "lats"), ("last=5&x=1", "x"), ("last=1&last=2", "last")):
            status, body, _ = call("GET", f"/subscriber/13800000000/explain?{query}")
            assert status == 400 and body["parameter"] == named and "one query parameter, last" in body["error"]
        assert asked == []
        assert call("GET", "/subscriber/13800000000/explain?last=0")[:2] == (200, {"msisdn": 13800000000, "events": []})
        assert call("GET", f"/subscriber/13800000000/explain?last={LAST_MAX}")[0] == 200
        assert asked == [(13800000000, 0), (13800000000, LAST_MAX)]
        status, body, headers = call("POST", "/subscriber/13800000000")
        assert status == 405 and "POST" in body["error"] and headers["Allow"] == "GET, HEAD"
        status, body, headers = call("POST", "/watch/13800000000")
        assert status == 405 and headers["Allow"] == "GET, HEAD, PUT, DELETE"
        # a method http.server has no do_ for: 405 as well, not 501 (helper-120)
        for method in ("OPTIONS", "TRACE", "BREW"):
            status, body, headers = call(method, "/subscriber/13800000000")
            assert (status, headers["Allow"]) == (405, "GET, HEAD"), method
            assert body["error"] == f"{method} is not answered here: use GET, HEAD"
            assert headers["Content-Type"] == "application/json"
        # HEAD as GET, without the body (RFC 9110 §9.1)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/subscriber/13800000000/explain?last=0",
                                         method="HEAD", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200 and response.read() == b""
            assert int(response.headers["Content-Length"]) == len(json.dumps({"msisdn": 13800000000, "events": []}))
        # a request line http.server cannot read is answered with a status line and JSON
        for line in (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"GET /x HTTP/9.9\r\n\r\n", b"GET\r\n\r\n",
                     b"\x00\x01\x02\xff\xfe\r\n\r\n", b"\r\n\r\n", b"\n\n", b" \r\n\r\n"):
            # an empty request line was left unanswered (http.server gives up without a word)
            answer = raw_request(port, line)
            assert answer.startswith(b"HTTP/1.0 40") or answer.startswith(b"HTTP/1.0 505"), (line, answer[:80])
            assert b"Content-Type: application/json" in answer, answer
    finally:
        server.close()


def test_a_request_head_past_the_bound_is_answered_json_too():
    """helper-133: the lookup answered 414 and 431 with Content-Length: 0, where every answer
    of the lookup is JSON. Both carry {"error"} naming the bound, with nothing of the
    request (its number, here 13800138000, unmasked or not); HEAD without the body."""
    from engine.service.lookup import LookupServer
    server = LookupServer(lambda m: {"msisdn": str(m)}, "127.0.0.1", 0, TOKEN).start()
    port = server.address[1]
    try:
        number = b"/subscriber/13800138000"
        for head, status, what in (
                (b"GET " + number + b"?" + b"a" * 20000, b"414 URI Too Long", "the request line"),
                (b"GET " + number + b" HTTP/1.0\r\nX-Number: 13800138000" + b"a" * 20000 + b"\r\n\r\n",
                 b"431 Request Header Fields Too Large", "the request head (request line and header fields)")):
            answer = raw_request(port, head)
            top, _, body = answer.partition(b"\r\n\r\n")
            assert top.startswith(b"HTTP/1.0 " + status), answer[:200]
            headers = dict(line.split(b": ", 1) for line in top.split(b"\r\n")[1:])
            assert headers[b"Content-Type"] == b"application/json" and headers[b"Connection"] == b"close"
            assert int(headers[b"Content-Length"]) == len(body) > 0
            assert json.loads(body) == {"error": f"{what} passes 16,384 bytes, the most a request head may hold"}
            assert b"138" not in answer and b"8000" not in answer
            answer = raw_request(port, b"HEAD" + head[3:])
            top, _, body = answer.partition(b"\r\n\r\n")
            assert top.startswith(b"HTTP/1.0 " + status) and body == b"" and b"Content-Length: 0" not in top
        assert server.server.connection_counts()[1]["too_large"] == 4
        # the lookup still answers
        assert lookup(port, 13800138000) == (200, {"msisdn": "13800138000"})
    finally:
        server.close()


@pytest.mark.parametrize("token", ["", " ", "\t ", "ab\ncd"])
def test_a_lookup_token_of_spaces_is_refused_at_the_start(tmp_path, token):
    """helper-120: an empty token was refused, one of spaces taken, and then every request was
    refused (the token is compared without the spaces around it): one line at the start now."""
    from engine.service.lookup import LookupServer
    with pytest.raises(ValueError, match="not an empty one or one of spaces, and on one line"):
        LookupServer(lambda m: None, "127.0.0.1", 0, token=token)
    (tmp_path / "spool").mkdir()
    done = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(tmp_path / "c.toml"), "--spool",
                           str(tmp_path / "spool"), "--out", str(tmp_path / "out"), "--state", str(tmp_path / "st"),
                           "--lookup", "127.0.0.1:0"], env={**os.environ, "SIGMATCH_LOOKUP_TOKEN": token},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "sigmatch: error: --lookup needs a bearer token: --lookup-token or SIGMATCH_LOOKUP_TOKEN (not an empty one "
        "or one of spaces, and on one line)"]
