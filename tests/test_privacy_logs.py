"""Personal data in logs (issue 8, item 2): the masking rule of engine.privacy on its own, the
log formatters and standard error as the CLI installs them, and the leak test: the real
daemon and the real CLI provoked into every log line and error text we can think of, then
every byte they wrote to stderr searched for each of the test world's real MSISDNs."""
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import msgpack
import pytest
from click.testing import CliRunner

from engine.privacy import (JsonLogFormatter, LogFormatter, MaskedStream, escape_controls, mask_msisdn,
                            mask_numbers, mask_written_numbers, scrub)

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- the rule

@pytest.mark.parametrize("text,masked", [
    ("13800138000", "138****8000"),
    ("GET /subscriber/+8613660190002 HTTP/1.1", "GET /subscriber/+861******0002 HTTP/1.1"),
    ("GET /Subscriber/13660190002", "GET /Subscriber/136****0002"),
    ("/subscriber?msisdn=13660190002&x=1", "/subscriber?msisdn=136****0002&x=1"),
    ("Expected 1 columns, got 2: 13660190002,extra", "Expected 1 columns, got 2: 136****0002,extra"),
    ("+86-13800138000", "+86-138****8000"),                  # a '-' after digits joins no name
    ("-13800138000", "-138****8000"),
    ("call 13800138000.", "call 138****8000."),               # a full stop ends a sentence
    ("'13800138000'", "'138****8000'"),
    ('{"msisdn": 13800138000}', '{"msisdn": 138****8000}'),
    ("用户13800138000", "用户138****8000"),                     # only ASCII letters make a name
    ("1234567", "1*****7"),                                    # 7 digits: the shortest masked
    ("123456", "123456"),                                      # 6: left alone
    ("1234567890123456", "123*********3456"),                  # 16: no MSISDN, masked all the same
    ("008613800138000", "008********8000"),
    ("%2B8613660190002", "%2B861******0002"),                  # a URL-encoded '+' is no letter
    ("\\n13800138000", "\\n138****8000"),                      # nor is an escape's letter
    ("\\x0013800138000", "\\x001******8000"),
    # after a '+', a name after the number does not shield it: a spool file named after a
    # subscriber (helper-116)
    ("+8613800138000.msgpack: rejected", "+861******8000.msgpack: rejected"),
    ("spool/+8613800138000.msgpack", "spool/+861******8000.msgpack"),
    ("sub+8613800138000.msgpack", "sub+861******8000.msgpack"),
    ("%2B8613800138000.msgpack", "%2B861******8000.msgpack"),
    ("+86-13800138000.msgpack", "+86-138****8000.msgpack"),
    ("+86 13800138000.msgpack", "+86 138****8000.msgpack"),
])
def test_numbers_standing_as_numbers_are_masked(text, masked):
    assert mask_numbers(text) == masked


@pytest.mark.parametrize("text", [
    "journal-000000000012.msgpack", "actions-00000001.csv", "SPOOL/done/trace_20261130120000.msgpack",
    "13800138000x", "msisdn13800138000", "1234567.5", "0.12345678", "v1234567",
    "2026-11-30T03:10:00.123+08:00", "offset 12,345,678", "1,234,567 events", "123456",
])
def test_names_decimals_and_separated_numbers_keep_their_digits(text):
    assert mask_numbers(text) == text


def test_the_mask_is_mask_msisdn_and_idempotent():
    text = "a 13800138000 b 1234567 c 12345678901234567890"
    once = mask_numbers(text)
    assert once == f"a {mask_msisdn('13800138000')} b {mask_msisdn('1234567')} c {mask_msisdn('12345678901234567890')}"
    assert mask_numbers(once) == once


@pytest.mark.parametrize("text,masked", [
    ("+86 138-0013-8000", "+861******8000"),
    ("call 138 0013 8000.", "call 138****8000."),
    ("138.0013.8000", "138****8000"),
    ("(555-123-4567)", "(555***4567)"),
    ("1234 5678 9012 3456", "123*********3456"),               # 16 digits: masked all the same
    ("123-4567", "1*****7"),                                   # 7 digits: the shortest masked
    ("12-3456", "12-3456"),                                    # 6: left alone
    ("from 2026-12-24 or 24.12.2026 to 2026/12/31", "from 2026-12-24 or 24.12.2026 to 2026/12/31"),
    # a date or an address joins no time, port or sequence beside it into a number (helper-117)
    ("deploy at 2026-12-24 10:00, or 24.12.2026 10:30", "deploy at 2026-12-24 10:00, or 24.12.2026 10:30"),
    ("on 2026-12-24-01.msgpack and 2026.12.24.10.msgpack", "on 2026-12-24-01.msgpack and 2026.12.24.10.msgpack"),
    ("metrics at 10.20.30.40:9464", "metrics at 10.20.30.40:9464"),
    ("budget 1 000 000", "budget 1*****0"),                    # thousands: 1,000,000 is how to write them
    ("v1.2.3, 3.14159265, 12345.678, 1,234,567 at 12:30:00", "v1.2.3, 3.14159265, 12345.678, 1,234,567 at 12:30:00"),
    ("x138-0013-8000", "x138-0013-8000"),                      # glued to a letter: a name, as for runs
    ("and 8613800138000", "and 861******8000"),                # a plain run, as mask_numbers
    # commas: a count's groups are kept, a number's are not (all were shown before)
    ("call 138,0013,8000.", "call 138****8000."), ("+86,138,0013,8000", "+861******8000"),
    ("1380,013,8000", "138****8000"), ("1,0000,000", "100*0000"), ("123,45,678", "123*5678"),
    ("1,000,0000", "100*0000"), ("123,456,78", "123*5678"),
    ("1,000,000 or 13,800,138,000 or 12,34,567 or 1,00,00,000", "1,000,000 or 13,800,138,000 or 12,34,567 or 1,00,00,000"),
    ("12,345 and 1,2,3,4,5,6,7", "12,345 and 1*****7"),        # seven digits in groups, as 1-2-3-4-5-6-7 would be
])
def test_numbers_written_in_groups_are_masked_for_pages(text, masked):
    assert mask_written_numbers(text) == masked
    assert mask_written_numbers(masked) == masked


@pytest.mark.parametrize("raw,shown", [
    ("a\nb", "a\\nb"), ("a\r\nb", "a\\r\\nb"), ("a\tb", "a\\tb"), ("\x00", "\\x00"), ("\x7f", "\\x7f"),
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"), ("\x85", "\\x85"), ("a\u2028b", "a\\u2028b"),
    ("\u202eevil", "\\u202eevil"), ("plain ü 用户 \\ text", "plain ü 用户 \\ text"),
])
def test_control_characters_are_escaped(raw, shown):
    assert escape_controls(raw) == shown


def test_scrub_masks_before_escaping():
    assert scrub("\x0013800138000\n") == "\\x00138****8000\\n"
    assert scrub("/subscriber/\x1b[31m+8613660190002") == "/subscriber/\\x1b[31m+861******0002"


# --------------------------------------------------------------------------- formatters, stderr

def record(msg, *args, exc_info=None, name="sigmatch.test"):
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, exc_info)


ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


def test_a_message_ending_in_a_line_break_ends_there():
    """uvicorn's "Exception in ASGI application\\n" read with a literal \\n at the end; a break
    inside a message is still escaped."""
    text = LogFormatter().format(record("Exception in ASGI application\n"))
    assert text.endswith("sigmatch.test: Exception in ASGI application")
    assert LogFormatter().format(record("a\nb\r\n")).endswith(": a\\nb")
    assert json.loads(JsonLogFormatter().format(record("done\n")))["message"] == "done"


def test_text_lines_are_scrubbed_with_iso_times_and_indented_tracebacks():
    try:
        raise ValueError("bad row 13660190002,extra\nforged 2026 line")
    except ValueError:
        rec = record("reload of %s: %s\x1b[2J", "/w/13800138000/c.toml", "row 13900139000", exc_info=sys.exc_info())
    text = LogFormatter().format(rec)
    head, *rest = text.split("\n")
    assert re.fullmatch(ISO + r" WARNING sigmatch\.test: reload of /w/138\*\*\*\*8000/c\.toml: "
                        r"row 139\*\*\*\*9000\\x1b\[2J", head), head
    assert rest and all(line.startswith("  ") for line in rest)     # none can pass for a record
    assert "136****0002" in text and "forged 2026 line" in text
    assert not re.search(r"13660190002|13800138000|13900139000", text)


def test_json_lines_are_scrubbed():
    try:
        raise ValueError("bad row 13660190002,extra")
    except ValueError:
        rec = record("lookup %s", "GET /subscriber/+8613660190002\r\nx", exc_info=sys.exc_info())
    line = JsonLogFormatter().format(rec)
    assert "\n" not in line
    entry = json.loads(line)
    assert re.fullmatch(ISO, entry["ts"])
    assert entry["message"] == "lookup GET /subscriber/+861******0002\\r\\nx"
    assert entry["error"] == "ValueError: bad row 136****0002,extra"
    assert "13660190002" not in line


class Sink:
    def __init__(self):
        self.written = []

    def write(self, text):
        self.written.append(text)

    def flush(self):
        pass


def test_standard_error_is_masked_even_when_a_number_comes_in_pieces():
    sink = Sink()
    stream = MaskedStream(sink)
    stream.write("Exception occurred during processing of request: 13660")
    stream.write("190002 bad\nnext ")
    assert "".join(sink.written) == "Exception occurred during processing of request: 136****0002 bad\n"
    stream.write("13800138000")
    stream.flush()
    assert "".join(sink.written).endswith("next 138****8000")
    with pytest.raises(TypeError):
        stream.write(b"")           # a text stream: click probes for this


def test_a_one_line_error_is_scrubbed():
    from engine.cli import _fail
    import click

    @click.command()
    def failing():
        _fail("cannot read /w/13660190002/c.toml: row 13800138000,extra\x1b[2J\nforged")

    result = CliRunner().invoke(failing, [])
    assert result.exit_code == 1
    assert result.output == "sigmatch: error: cannot read /w/136****0002/c.toml: row 138****8000,extra\\x1b[2J\\nforged\n"


# --------------------------------------------------------------------------- the leak test

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small generated world with CSV profiles, and every number it holds: subscribers,
    list members, and the parties of every event (peers are personal data too)."""
    from engine.world.gen import generate
    from loaders.lists import load_list
    from loaders.profiles import load_profiles
    directory = tmp_path_factory.mktemp("privacy-world")
    generated = generate(directory, subscribers=2_000, events=20_000, campaigns=4, seed=13, trace_files=3,
                         profiles_format="csv")
    numbers = {int(n) for n in load_profiles(generated.profiles).msisdn}
    for path in generated.lists.values():
        numbers.update(int(n) for n in load_list(path))
    for trace in generated.traces:
        for event in msgpack.Unpacker(open(trace, "rb"), raw=False):
            numbers.update(v for v in (event[2], event[3]) if isinstance(v, int) and v >= 10**6)
    subscribers = sorted(int(n) for n in load_profiles(generated.profiles).msisdn)
    return generated, subscribers, {str(n) for n in numbers}


def leaked(text: str, numbers: set[str]) -> list[str]:
    return sorted(n for n in numbers if n in text)


def editable_copy(generated, tmp_path: Path) -> Path:
    """The world's configuration, profiles, lists and areas, copied to be spoiled."""
    shutil.copytree(generated.directory, tmp_path / "w", ignore=shutil.ignore_patterns("*.msgpack"))
    return tmp_path / "w" / generated.config.name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def lookup(port: int, path: str, token: str | None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def raw_request(port: int, line: bytes) -> bytes:
    """A request line no HTTP client would send: control bytes, a forged second line."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(line + b"\r\nAuthorization: Bearer nope\r\n\r\n")
        return sock.recv(1 << 16)


def corrupt_stream(number: int) -> bytes:
    """Valid events holding a real number, then bytes that are no msgpack."""
    event = msgpack.packb([1_793_000_000_000, 1, number, number, 7, 0, 0, 0])
    return event * 50 + b"\xc1" + str(number).encode() + b"\xc1" * 10


def dead_letter_stream(number: int) -> bytes:
    """Events a subscriber's number makes into dead letters (unknown type, bad cell)."""
    return (msgpack.packb([1_793_000_000_000, 99, number, 0, 7]) + msgpack.packb([1_793_000_000_000, 1, number, 0, -1])
            + msgpack.packb({"ts": 1_793_000_000_000, "type": "NOPE", "msisdn": str(number)}))


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_daemon_never_logs_a_real_number(world, tmp_path, log_format):
    generated, subscribers, numbers = world
    rnd = random.Random(8)
    victim, other, third = (str(n) for n in rnd.sample(subscribers, 3))
    config = editable_copy(generated, tmp_path)
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    spool.mkdir()
    for trace in generated.traces[:2]:
        shutil.copy(trace, spool / trace.name)
    (spool / "trace-2a-dead.msgpack").write_bytes(dead_letter_stream(int(other)))
    (spool / "trace-2b-corrupt.msgpack").write_bytes(corrupt_stream(int(victim)))
    lookup_port, metrics_port, listen_port = free_port(), free_port(), free_port()
    stderr_path = tmp_path / "stderr.log"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(60)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "SIGMATCH_LOOKUP_TOKEN": "t0ken"}
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "-v", "--log-format", log_format, "run", str(config),
             "--out", str(out), "--state", str(state), "--spool", str(spool), "--lookup", f"127.0.0.1:{lookup_port}",
             "--metrics", f"127.0.0.1:{metrics_port}", "--listen", f"127.0.0.1:{listen_port}"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        assert notify.recv(64) == b"READY=1"     # kept open: STOPPING=1 comes at the end
        wait_for(lambda: not list(spool.glob("*.msgpack")), "the spool to drain")

        def log_text():
            return stderr_path.read_text(errors="replace")

        # lookups in every spelling a client might use, with and without the token
        for path in (f"/subscriber/{victim}", f"/subscriber/+86{victim}", f"/Subscriber/{victim}",
                     f"/subscriber?msisdn={victim}", f"/subscriber/{victim}?msisdn=%2B86{other}",
                     f"/subscriber/{victim}/", f"/subscriber/0086{victim}", f"/subscriber/{victim},{other}"):
            lookup(lookup_port, path, "t0ken")
            lookup(lookup_port, path, None)
        # a request line with control bytes and a forged line in it
        raw_request(lookup_port, f"GET /subscriber/\x1b[31m+86{victim}\rFORGED 2026 {other} HTTP/1.1".encode())
        raw_request(lookup_port, f"\x00GET /subscriber/{victim} HTTP/1.1".encode())
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics?msisdn={victim}", timeout=10):
            pass
        # a TCP producer sending events and then garbage with a number in it
        with socket.create_connection(("127.0.0.1", listen_port)) as sock:
            sock.sendall(corrupt_stream(int(third)))
        wait_for(lambda: "connection from" in log_text(), "the garbage sender's log line")

        # reloads that fail on a row or a value holding a real number
        original = config.read_text()
        profiles = config.parent / "profiles.csv"
        good_profiles = profiles.read_bytes()
        bad_reloads = [
            ("profiles", lambda: profiles.write_bytes(good_profiles + f"{victim},extra\n".encode())),
            ("list", lambda: ((config.parent / "lists" / "extra.csv").write_text(f"msisdn\n{other},extra\n"),
                              config.write_text(original.replace("[lists]\n", '[lists]\nextra = "lists/extra.csv"\n')))),
            ("value", lambda: config.write_text(_max_per_day(original, f'"{third}"'))),
            ("where", lambda: config.write_text(original.replace(
                "where = \"arpu >= 50 and brand != 'prepaid'\"", f'where = "arpu >= 50 and brand != +{victim} ,"'))),
        ]
        for i, (_, spoil) in enumerate(bad_reloads, start=1):
            profiles.write_bytes(good_profiles)
            config.write_text(original)
            spoil()
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: log_text().count("reload rejected") >= i, f"reload {i} to be rejected")
        profiles.write_bytes(good_profiles)
        config.write_text(original)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded" in log_text(), "the good reload")
        # a late file after the reload, corrupt again
        (spool / "trace-3-late.msgpack").write_bytes(corrupt_stream(int(other)))
        # gone from the spool: processed, so its error is logged
        wait_for(lambda: not (spool / "trace-3-late.msgpack").exists(), "the late corrupt file to be taken")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            notify.close()
    text = stderr_path.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert not leaked(text, numbers), (leaked(text, numbers)[:5], text[-3000:])
    # the lines were written, masked, not left out (the lookup logs a number as it normalises
    # it: `?msisdn=%2B86{other}` as 86{other}; `/subscriber/{victim},{other}`, no number, as ***)
    assert mask_msisdn(victim) in text and mask_msisdn(f"86{other}") in text and mask_msisdn(third) in text
    assert "/subscriber/***" in text
    assert text.count("lookup") >= 16
    # no raw control byte, so no line can be forged or hidden
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", text)
    lines = text.splitlines()
    if log_format == "json":
        assert all(json.loads(line)["message"] for line in lines)
    else:
        assert all(re.match(ISO + " ", line) or line.startswith("  ") for line in lines), text[-3000:]
    # dead letters went to their files: real numbers are allowed there, masked in logs
    assert list((out / "dead_letters").glob("*.csv"))


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_the_cli_never_prints_a_real_number_in_an_error(world, tmp_path):
    generated, subscribers, numbers = world
    victim, other = (str(n) for n in random.Random(9).sample(subscribers, 2))
    config = editable_copy(generated, tmp_path)
    original = config.read_text()
    texts = []

    def expect_error(*args):
        proc = run_cli(*args)
        assert proc.returncode != 0, proc
        last = proc.stderr.splitlines()[-1]
        if "json" in args:
            assert json.loads(last)["level"] == "ERROR", proc.stderr
        else:
            assert last.startswith("sigmatch: error: "), proc.stderr
        texts.append(proc.stderr + proc.stdout)

    # a profile row (pyarrow echoes it), then a value, then a where, naming a number
    profiles = config.parent / "profiles.csv"
    good = profiles.read_bytes()
    profiles.write_bytes(good + f"{victim},extra\n".encode())
    expect_error("check", config)
    expect_error("--log-format", "json", "replay", config, generated.traces[0], "--out", tmp_path / "o1")
    profiles.write_bytes(good)
    config.write_text(_max_per_day(original, f'"+86{victim}"'))
    expect_error("check", config)
    config.write_text(original.replace("where = \"arpu >= 50 and brand != 'prepaid'\"",
                                       f'where = "arpu >= 50 and brand != {other} )"'))
    expect_error("check", config)
    config.write_text(original)
    # a corrupt trace holding numbers; a path through a directory named by a number
    corrupt = tmp_path / "corrupt.msgpack"
    corrupt.write_bytes(corrupt_stream(int(victim)))
    expect_error("-v", "replay", config, corrupt, "--out", tmp_path / "o2")
    expect_error("replay", config, tmp_path / victim / "trace.msgpack", "--out", tmp_path / "o3")
    expect_error("run", config, "--out", tmp_path / "o4", "--state", tmp_path / "s", "--spool", tmp_path / "sp",
                 "--metrics", f"127.0.0.1:{other}")
    # bad list rows are warned about (masked by the loader), the check itself passes
    (config.parent / "lists" / "extra.txt").write_text(f"{victim}x\n+86 {other}\n{victim}\n\x1b[2J{other}\n")
    config.write_text(original.replace("[lists]\n", '[lists]\nextra = "lists/extra.txt"\n'))
    proc = run_cli("-v", "--log-format", "json", "check", config)
    assert proc.returncode == 0, proc.stderr
    assert all(json.loads(line) for line in proc.stderr.splitlines())
    texts.append(proc.stderr)
    text = "\n".join(texts)
    assert not leaked(text, numbers), (leaked(text, numbers)[:5], text[-3000:])
    assert mask_msisdn(victim) in text and mask_msisdn(other) in text


def test_an_uncaught_exception_is_logged_masked(tmp_path):
    """Whatever escapes the one-line errors (a bug) still goes out through the log formatter."""
    script = ("import sys; from engine.cli import main; sys.argv = ['sigmatch', 'check', 'x'];"
              "import engine.cli as cli; cli._one_line_errors = lambda fn: fn;"
              "from engine.cli import _own_standard_error; from engine.privacy import LogFormatter;"
              "import logging; _own_standard_error(LogFormatter(), logging.INFO);"
              "import threading; t = threading.Thread(target=lambda: int('13660190002,extra'), name='w'); t.start(); t.join();"
              "raise RuntimeError('row 13800138000,extra')")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "13800138000" not in proc.stderr and "138****8000" in proc.stderr
    assert "13660190002" not in proc.stderr and "136****0002" in proc.stderr
    assert "uncaught RuntimeError" in proc.stderr and "uncaught ValueError in thread w" in proc.stderr
    assert all(re.match(ISO + " ", line) or line.startswith("  ") for line in proc.stderr.splitlines())


def _max_per_day(config_text: str, value: str) -> str:
    """The configuration with [policy] max_per_day set to `value` (however gen aligns its keys)."""
    text, n = re.subn(r"(?m)^max_per_day\s*=\s*2\b", lambda _: f"max_per_day = {value}", config_text)
    assert n == 1
    return text


@pytest.mark.parametrize("line, logged", [
    ('"GET /foo/136-6019-2836 HTTP/1.1" 404 -', '"GET /foo/136****2836 HTTP/1.1" 404 -'),
    ('"GET /x?m=%31%33%36%36%30%31%39%32%38%33%36 HTTP/1.1" 404 -', '"GET /x?m=136****2836 HTTP/1.1" 404 -'),
    ('"GET /x?m=138%2D0001%2d0003 HTTP/1.1" 404 -', '"GET /x?m=138****0003 HTTP/1.1" 404 -'),
    ('"GET /x/+86%20138%200001%200003 HTTP/1.1" 404 -', '"GET /x/+861******0003 HTTP/1.1" 404 -'),
    ('"GET /subscriber/13660192836 HTTP/1.1" 200 -', '"GET /subscriber/136****2836 HTTP/1.1" 200 -'),
    # what is no number stays as it was
    ('"GET /x?ip=10.1.2.3&day=2026-12-07&n=123456 HTTP/1.1" 404 -',
     '"GET /x?ip=10.1.2.3&day=2026-12-07&n=123456 HTTP/1.1" 404 -'),
])
def test_the_lookup_request_log_masks_a_number_wherever_and_however_it_is_written(line, logged):
    """helper-120: the lookup accepts a number in groups or percent-encoded, but the request
    log masked it only after /subscriber/ or msisdn=: on any other path it was logged whole."""
    from engine.service.lookup import request_log_text
    assert request_log_text(line) == logged


@pytest.mark.parametrize("typed, shown", [
    ("id13800138000", "id138****8000"), ("13800138000_x", "138****8000_x"),
    ("id138-0013-8000", "id138****8000"), ("msisdn_138_0013_8001", "msisdn_138****8001"),
    # helper-127: brackets round the first group left 10 of 11 digits shown, slashes all 11
    ("(138) 0013-8000", "(138****8000"), ("138/0013/8000", "138****8000"),
    # what stays: dates, addresses, counts written with commas, versions, prices
    ("live 2026/12/24 and 12/24/2026", "live 2026/12/24 and 12/24/2026"), ("10.1.2.3", "10.1.2.3"),
    ("1,000,000 and v1.2.3 at 12.50", "1,000,000 and v1.2.3 at 12.50"),
    ("id138,0013,8000_y", "id138****8000_y"), ("count1,000,000x", "count1,000,000x"),
    # helper-132: other spaces and dashes, more than one of them, or groups of any length
    ("mask 138  0013  8000 end", "mask 138****8000 end"), ("138\u00a00013\u00a08000", "138****8000"),
    ("138\u30000013\u30008000", "138****8000"), ("138\u20130013\u20138000", "138****8000"),
    ("138\u20100013\u20108000", "138****8000"), ("138\u22120013\u22128000", "138****8000"),
    ("138\u20090013\u20098000", "138****8000"), ("138\u200b0013\u200b8000", "138****8000"),
    ("138 - 0013 - 8000", "138****8000"), ("1 3 8 0 0 1 3 8 0 0 0", "138****8000"),
    ("138-00138000", "138****8000"), ("+86 - 138 0013 8000", "+861******8000"),
    ("priority 14 to 15 and 1-2-3-4-5-6", "priority 14 to 15 and 1-2-3-4-5-6"),
    # helper-136: marks that show nothing, more separators, commas of any grouping, brackets,
    # two numbers in groups
    ("138\u200e0013\u200e8000", "138****8000"), ("138\u00ad0013\u00ad8000", "138****8000"),
    ("138    0013    8000", "138****8000"), ("138 -- 0013 -- 8000", "138****8000"),
    ("138,00138,000 13800,138000", "138****8000 138****8000"), ("138,0013,8000,1", "138*****0001"),
    ("138\u00b70013\u00b78000", "138****8000"), ("138, 0013, 8000", "138****8000"),
    ("[138] 0013 8000", "[138****8000"), ("13 80 01 38 00 0", "138****8000"),
    ("138-0013-8000 139-0013-9000", "138****8000 139****9000"),
    ("138 0013 8000 139 0013 9000", "138****8000 139****9000"),
    # helper-137: a short number before one (its tail was left shown), numbers in points that
    # are no IPv4 address, two numbers joined by a comma, other separators, six of them
    ("since 2026 138 0013 8000 calls", "since 202********8000 calls"), ("0086 138 0013 8000", "008********8000"),
    ("138.00.138.000 13.800.138.000", "138****8000 138****8000"), ("1.380.013.800", "138***3800"),
    ("138,0013,8000 139,0013,9000", "138****8000 139****9000"),
    ("138-0013-8000,139-0013-9000", "138****8000,139****9000"),
    ("138\uff0c0013\uff0c8000 138\u30fc0013\u30fc8000", "138****8000 138****8000"),
    ("138|0013|8000 138 ,0013,8000", "138****8000 138****8000"), ("1,3800138000", "138****8000"),
    ("138      0013      8000", "138****8000"), ("13800138000*", "138****8000*"),
    ("budget 1,000,000, cap 2,000 at 10.0.0.1, hours 10:00-22:00", "budget 1,000,000, cap 2,000 at 10.0.0.1, hours 10:00-22:00"),
    # two numbers with a space between stay two (helper-134), and a mask is never joined on
    ("id13900139000 13700137000_x", "id139****9000 137****7000_x"),
    ("13800138000 13900139000", "138****8000 139****9000"), ("138****8000 139****9000", "138****8000 139****9000"),
])
def test_numbers_typed_by_people_are_masked_however_they_are_written(typed, shown):
    from engine.privacy import mask_typed_numbers
    assert mask_typed_numbers(typed) == shown
    assert mask_typed_numbers(shown) == shown
