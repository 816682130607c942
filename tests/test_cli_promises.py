"""What the `sigmatch` command itself promises (SPEC §3 end of input, §1.4, §5), tested by
running the command in a process of its own, as an operator does: `replay` drains pending
actions at the end of the input and does not when the stream breaks; `check` refuses a bad
configuration; every error is one line on stderr and a non-zero exit."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

T0 = 1_767_225_600_000          # 2026-01-01T00:00:00Z
HOUR = 3_600_000
A, B = 13_800_000_001, 13_800_000_002
CALL, SMS = 1, 3

CONFIG = """\
[engine]
profiles = "profiles.csv"

[lists]
dnd = "dnd.txt"

[policy]
blacklist = ["dnd"]

[[campaign]]
id       = "later"
on       = ["CALL_MO_END"]
delay    = "1h"
channel  = "sms"
template = "LATER"

[[campaign]]
id       = "now"
on       = ["SMS_MO"]
channel  = "boss"
"""


def sigmatch(*args, cwd=None):
    """The command in a process of its own: (exit code, stdout, stderr lines)."""
    proc = subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr.strip().splitlines()


def one_line_error(code, lines, *words):
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("sigmatch: error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture
def world(tmp_path):
    (tmp_path / "profiles.csv").write_text(f"msisdn\n{A}\n{B}\n")
    (tmp_path / "dnd.txt").write_text("13900000000\n")      # nobody of ours; an empty list is warned about
    config = tmp_path / "campaigns.toml"
    config.write_text(CONFIG)
    return config


def trace(path: Path, *events) -> Path:
    path.write_bytes(b"".join(msgpack.packb(list(e)) for e in events))
    return path


def actions(out: Path, channel: str) -> list[dict]:
    """The action records of one channel, from its finished files, in file order."""
    rows = []
    for f in sorted((out / channel).glob("*.csv")):
        with f.open(newline="") as handle:
            rows += list(csv.DictReader(handle))
    return rows


def test_replay_drains_pending_actions_at_the_end(world, tmp_path):
    # The last event triggers a delayed action due an hour after the end of the trace:
    # replay emits it at its due time, as if the clock had moved on.
    t = trace(tmp_path / "t.msgpack", [T0, CALL, A], [T0 + 1, SMS, B], [T0 + 2, CALL, B])
    code, out, err = sigmatch("replay", world, t, "--out", tmp_path / "out")
    assert code == 0, err
    later = actions(tmp_path / "out", "sms")
    assert [(r["seq"], r["ts"], r["campaign"], r["msisdn"], r["trigger_ts"]) for r in later] == [
        ("2", str(T0 + HOUR), "later", str(A), str(T0)), ("3", str(T0 + 2 + HOUR), "later", str(B), str(T0 + 2))]
    assert [r["seq"] for r in actions(tmp_path / "out", "boss")] == ["1"]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["run"]["pending"] == 0
    assert stats["campaigns"]["later"]["scheduled"] == stats["campaigns"]["later"]["sent"] == 2


def test_replay_of_a_broken_stream_keeps_what_was_emitted_and_drains_nothing(world, tmp_path):
    # SPEC §1.4: the run stops at the corrupt byte with a message naming its offset; pending
    # actions are not drained; every action already emitted is in complete files.
    good = b"".join(msgpack.packb(e) for e in ([T0, CALL, A], [T0 + 1, SMS, B]))
    t = tmp_path / "broken.msgpack"
    t.write_bytes(good + b"\xc1" + msgpack.packb([T0 + 2, SMS, A]))
    code, _, err = sigmatch("replay", world, t, "--out", tmp_path / "out")
    one_line_error(code, err, f"offset {len(good)}", "broken.msgpack")
    assert [(r["campaign"], r["msisdn"]) for r in actions(tmp_path / "out", "boss")] == [("now", str(B))]
    assert actions(tmp_path / "out", "sms") == []               # "later" was pending: not drained
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name.endswith(".tmp")]
    assert leftovers == []


def test_replay_refuses_an_output_directory_that_holds_a_run(world, tmp_path):
    t = trace(tmp_path / "t.msgpack", [T0, SMS, A])
    assert sigmatch("replay", world, t, "--out", tmp_path / "out")[0] == 0
    code, _, err = sigmatch("replay", world, t, "--out", tmp_path / "out")
    one_line_error(code, err, "--overwrite")
    code, _, err = sigmatch("replay", world, t, "--out", tmp_path / "out", "--overwrite")
    assert code == 0, err
    assert [r["seq"] for r in actions(tmp_path / "out", "boss")] == ["1"]


def test_check_accepts_a_good_configuration(world):
    code, out, err = sigmatch("check", world)
    assert code == 0, err
    assert out.splitlines()[0] == f"{world}: ok"


@pytest.mark.parametrize("change, words", [
    (('delay    = "1h"', 'delay    = "1 hour"'), ["campaigns.toml", "delay"]),
    (('blacklist = ["dnd"]', 'blacklist = ["nope"]'), ["campaigns.toml", "nope"]),
    (('on       = ["SMS_MO"]', 'on       = ["SMS_SENT"]'), ["campaigns.toml", "SMS_SENT"]),
    (('channel  = "boss"', 'channel  = "boss"\nrecheck  = ["area"]'), ["campaigns.toml", "recheck"]),
    (('channel  = "boss"', 'channel  = "boss"\nhours    = "09:00-09:00"'), ["campaigns.toml", "hours"]),
    (('channel  = "boss"', 'channel  = "boss"\ncounter  = { name = "calls", at_least = 2 }'),
     ["campaigns.toml", "calls"]),
    (('channel  = "boss"', 'channel  = "boss"\nexempt   = ["cooldown"]'), ["campaigns.toml", "exempt"]),
    (('id       = "now"', 'id       = "later"'), ["campaigns.toml", "later"]),
    # a missing input names the configuration and the key that points at it
    (('profiles = "profiles.csv"', 'profiles = "missing.csv"'),
     ["campaigns.toml: engine.profiles: ", "missing.csv: no such profile file"]),
    (('dnd = "dnd.txt"', 'dnd = "gone/dnd.txt"'), ["campaigns.toml: lists.dnd: ", "dnd.txt: no such list file"]),
    # a list given as the profiles: its bytes were read as CSV, "not UTF-8 text" (helper-115)
    (('profiles = "profiles.csv"', 'profiles = "dnd.txt"'),
     ["campaigns.toml: engine.profiles: ", "dnd.txt: unknown profile format '.txt'; expected .csv or .parquet"]),
    (('[lists]', '[areas]\nmall = "mall.txt"\n\n[lists]'),
     ["campaigns.toml: areas.mall: ", "mall.txt: no such area file"]),
    # "not a area file" (helper-128)
    (('[lists]', '[areas]\nmall = "."\n\n[lists]'), ["campaigns.toml: areas.mall: ", ": a directory, not an area file"]),
])
def test_check_fails_on_a_bad_configuration(world, change, words):
    text = world.read_text()
    assert change[0] in text
    world.write_text(text.replace(change[0], change[1], 1))
    code, out, err = sigmatch("check", world)
    one_line_error(code, err, *words)
    assert out == ""


@pytest.mark.parametrize("make, words", [
    (lambda p: p.symlink_to(p.parent / "gone.txt"), ["campaigns.toml: lists.dnd: ", "dnd.txt is a link to ",
                                                     "gone.txt, which does not exist"]),
    (lambda p: p.mkdir(), ["campaigns.toml: lists.dnd: ", "dnd.txt: a directory, not a list file"]),
])
def test_a_list_that_is_a_link_to_nothing_or_a_directory_names_its_key(world, make, words):
    (world.parent / "dnd.txt").unlink()
    make(world.parent / "dnd.txt")
    for command in (["check", world], ["replay", world, trace(world.parent / "t.msgpack", [T0, SMS, A]),
                                       "--out", world.parent / "out", "--workers", "2"]):
        code, _, err = sigmatch(*command)
        one_line_error(code, err, *words)
    # with workers as with one process, a world that does not load leaves no output folder
    assert not (world.parent / "out").exists()


def test_a_missing_file_whose_name_holds_a_line_break_keeps_its_reason_on_the_line(world):
    world.write_text(world.read_text().replace('dnd = "dnd.txt"', 'dnd = "d\\nd.txt"'))
    code, _, err = sigmatch("check", world)
    one_line_error(code, err, "campaigns.toml: lists.dnd: ", "d\\nd.txt': no such list file")


@pytest.mark.parametrize("command", ["check", "replay"])
def test_a_missing_configuration_is_one_line(tmp_path, command):
    t = trace(tmp_path / "t.msgpack", [T0, SMS, A])
    args = [command, tmp_path / "nope.toml"] + ([t, "--out", tmp_path / "out"] if command == "replay" else [])
    code, _, err = sigmatch(*args)
    one_line_error(code, err, "nope.toml")


def test_a_missing_trace_is_one_line_and_writes_no_run(world, tmp_path):
    code, _, err = sigmatch("replay", world, tmp_path / "nope.msgpack", "--out", tmp_path / "out")
    one_line_error(code, err, "nope.msgpack")
    assert not (tmp_path / "out" / "boss").exists() or actions(tmp_path / "out", "boss") == []


def test_usage_errors_exit_2(world):
    # click's own usage errors (a missing argument) keep click's exit code 2
    code, _, err = sigmatch("replay", world)
    assert code == 2 and any("Missing argument" in line for line in err)


def test_report_reads_what_replay_wrote(world, tmp_path):
    # SPEC §5: report OUT gives each campaign's contacts from the files replay wrote, and the
    # non-responder list: here A and B each got one send of "later" and never converted
    t = trace(tmp_path / "t.msgpack", [T0, CALL, A], [T0 + 1, SMS, B], [T0 + 2, CALL, B])
    assert sigmatch("replay", world, t, "--out", tmp_path / "out")[0] == 0
    code, out, err = sigmatch("report", tmp_path / "out", "--json")
    assert code == 0, err
    document = json.loads(out)
    assert {cid: c["sends"] for cid, c in document["campaigns"].items()} == {"later": 2, "now": 1}
    assert document["campaigns"]["later"]["variants"]["LATER"]["sends"] == 2
    assert document["programme"]["sends"] == 3 and document["days"] == ["2026-01-01"]
    code, out, err = sigmatch("report", tmp_path / "out", "--non-responders", "2", "--list", tmp_path / "nr.roar")
    assert code == 0, err
    assert out.startswith(f"{tmp_path / 'nr.roar'}: 1 subscriber with at least 2 sends")


def test_report_of_a_directory_that_is_no_output_is_one_line(tmp_path):
    code, _, err = sigmatch("report", tmp_path)
    one_line_error(code, err, str(tmp_path), "no stats.json")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("json_too", [False, True])
def test_a_full_standard_output_is_named(world, tmp_path, json_too):
    # `report OUT > /dev/full` said only "No space left on device", as if one of the
    # report's files had failed
    t = trace(tmp_path / "t.msgpack", [T0, CALL, A])
    assert sigmatch("replay", world, t, "--out", tmp_path / "out")[0] == 0
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "engine.cli", "report", str(tmp_path / "out"),
                               *(["--json"] if json_too else [])], stdout=full, stderr=subprocess.PIPE, text=True)
    one_line_error(proc.returncode, proc.stderr.strip().splitlines(), "standard output: No space left on device")


def test_a_device_given_as_a_file_to_send_is_refused_in_one_line(tmp_path):
    """helper-119: `send ADDR /dev/zero` would send without end (a pipe is a stream it may
    send, waiting for its writer as `cat` does)."""
    for path, kind in (("/dev/zero", "a device or socket"), ("/dev/urandom", "a device or socket")):
        code, _, err = sigmatch("send", "127.0.0.1:9", path)
        one_line_error(code, err, f"{path}: cannot send it: {kind}, not a file")


@pytest.mark.parametrize("args, said", [
    (("reshard", "--state", "S", "--workers", "2", "--workers", "3"), "--workers is given twice (--workers before)"),
    (("replay", "C", "T", "--out", "a", "--out=b"), "--out is given twice (--out before)"),
    (("gen", "W", "--subscribers", "100", "--events", "10", "--seed", "1", "--seed", "2"), "--seed is given twice"),
    (("reshard", "--state", "S", "--workers", "1_0"), "'1_0' is not a valid whole number"),
    (("reshard", "--state", "S", "--workers", " 2"), "' 2' is not a valid whole number"),
    (("reshard", "--state", "S", "--workers", "+2"), "'+2' is not a valid whole number"),
    (("gen", "W", "--subscribers", "１００", "--events", "10"), "is not a valid whole number"),
    (("run", "C", "--stdin", "--out", "O", "--state", "S", "--settle", "５"), "'５' is not a valid number of seconds"),
    (("run", "C", "--stdin", "--out", "O", "--state", "S", "--checkpoint-every", "1_0"),
     "'1_0' is not a valid number of seconds"),
    # --ray [ADDRESS] takes no option for its address, so the repeat after it is seen
    (("replay", "C", "T", "--ray", "--workers", "2", "--workers", "3", "--out", "O"), "--workers is given twice"),
    (("console", "adduser", "x", "--role", "viewer", "--role", "admin"), "--role is given twice"),
])
def test_an_option_given_twice_or_a_number_that_is_not_plain_digits_is_refused(tmp_path, args, said):
    """helper-119: click kept the last of an option given twice (`reshard --workers 2 --workers
    3` rewrote the state for 3), and int() read 1_0 as 10 and a full-width ２ as 2."""
    code, _, err = sigmatch(*args, cwd=tmp_path)
    assert code == 2, err
    one_line_error(code, err, said)
    assert list(tmp_path.iterdir()) == []


def test_send_refuses_a_file_of_another_format_before_sending_anything(tmp_path):
    """helper-119: a .gz or JSON lines file was sent, journaled and set aside by the service,
    and send said only `took 1 of 1,282,858 bytes sent; resend from byte 1` (or exit 0)."""
    import gzip
    events = b"".join(msgpack.packb([T0 + i, CALL, A]) for i in range(50))
    (tmp_path / "t.msgpack.gz").write_bytes(gzip.compress(events))
    (tmp_path / "j.msgpack").write_text('{"ts": 1}\n{"ts": 2}\n')
    (tmp_path / "good.msgpack").write_bytes(events)
    for name, said in (("t.msgpack.gz", "it is gzip-compressed (the service reads uncompressed msgpack only)"),
                       ("j.msgpack", "it looks like JSON lines (text)")):
        # nothing listens on port 9: the refusal comes before any connection
        code, _, err = sigmatch("send", "127.0.0.1:9", tmp_path / "good.msgpack", tmp_path / name)
        one_line_error(code, err, f"{tmp_path / name}: {said}; nothing sent")


def test_where_a_send_stopped_is_said_from_the_bytes_there(tmp_path):
    """What the stream holds where the service stopped taking it (client.stopped_at), read
    across the files sent as one stream; None where nothing there is wrong."""
    from engine.service.client import SERVICE_MAX_EVENT_BYTES, stopped_at
    event = msgpack.packb([T0, CALL, A])
    first, second = tmp_path / "a.msgpack", tmp_path / "b.msgpack"
    first.write_bytes(event * 3)
    for tail, said in ((b"\xc1" + event, "not msgpack there (a 0xc1 byte"),
                       (msgpack.packb(["x" * SERVICE_MAX_EVENT_BYTES]), "a value longer than the 65,536 bytes"),
                       (msgpack.packb(["x" * (SERVICE_MAX_EVENT_BYTES - 10)]), None),     # one unit inside: taken
                       (b"\x00" + event, "a msgpack value that is no event there"),
                       (event[:-2], "the stream ends there inside an event"),
                       (event, None)):
        second.write_bytes(event + tail)
        found = stopped_at([first, second], 3 * len(event) + len(event))
        assert (found is None) if said is None else said in found, (tail[:4], found)
    assert stopped_at([first, second], 10 ** 9) is None


def test_send_to_port_0_is_refused_in_one_line():
    """helper-119: `send 127.0.0.1:0` said "Connection refused": port 0 is what a service
    listens on to have a port chosen, never one to reach."""
    code, _, err = sigmatch("send", "127.0.0.1:0", "-")
    one_line_error(code, err, "127.0.0.1:0: port 0 is no port to send to")


def test_what_looks_like_a_repeat_but_is_not_is_left_to_the_command(tmp_path):
    """The values of an option that may repeat are skipped, whatever they look like (bench's
    --service-option passes the daemon's options on), and -h shows the help."""
    code, _, err = sigmatch("bench", "S", "--service-option", "--runs=2", "--runs", "3", cwd=tmp_path)
    one_line_error(code, err, "--service-option is an option of the daemon that --service measures")
    code, out, err = sigmatch("replay", "C", "T", "--out", "a", "--out", "b", "-h", cwd=tmp_path)
    assert code == 0 and out.startswith("Usage: ") and not err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_help_and_version_to_a_full_or_closed_standard_output_are_one_line(world, tmp_path):
    """helper-122: `--help > /dev/full` ended in a traceback (the help is written while the
    arguments are parsed), and `report OUT >&-` exited 0 with its report gone."""
    import os
    t = trace(tmp_path / "t.msgpack", [T0, CALL, A])
    assert sigmatch("replay", world, t, "--out", tmp_path / "out")[0] == 0
    cases = [(["--help"], "No space left on device", "full"), (["replay", "-h"], "No space left on device", "full"),
             (["--version"], "No space left on device", "full"),
             (["report", str(tmp_path / "out")], "Bad file descriptor", "closed"),
             (["--version"], "Bad file descriptor", "closed")]
    for args, reason, how in cases:
        with open("/dev/full", "w") as full:
            proc = subprocess.run([sys.executable, "-m", "engine.cli", *args], stderr=subprocess.PIPE, text=True,
                                  stdout=full if how == "full" else None,
                                  preexec_fn=(lambda: os.close(1)) if how == "closed" else None)
        one_line_error(proc.returncode, proc.stderr.strip().splitlines(), f"standard output: {reason}")
