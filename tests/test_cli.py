"""The `sigmatch` command: exit codes, one-line errors, output."""
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.world.gen import generate

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    directory = tmp_path_factory.mktemp("world")
    generated = generate(directory, subscribers=2_000, events=20_000, campaigns=4, seed=5)
    return generated.config, generated.traces[0]


def tenth_event_offset(trace) -> int:
    """Where the eleventh event of the trace starts, found by msgpack-python."""
    unpacker = msgpack.Unpacker()
    unpacker.feed(trace.read_bytes())
    for _ in range(10):
        unpacker.unpack()
    return unpacker.tell()


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output, result.stderr if hasattr(result, "stderr") else ""


def test_replay(world, tmp_path):
    config, trace = world
    code, out, _ = run("replay", config, trace, "--out", tmp_path / "out")
    assert code == 0, out
    assert "20,000 events" in out
    assert "campaign" in out and "crbt_school" in out and "s01_retention_churn" in out
    assert (tmp_path / "out" / "stats.json").is_file()


def test_an_out_through_a_missing_folder_and_back_leaves_no_folder_behind(world, tmp_path):
    """`--out base/missing/../out` made base/missing as `mkdir -p` does, and left it empty."""
    config, trace = world
    code, out, _ = run("replay", config, trace, "--out", f"{tmp_path}/missing/../out")
    assert code == 0, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "stats.json").is_file()
    assert f"output: {tmp_path / 'out'}" in out


@pytest.mark.parametrize("given", ["abc", "2.5", ""])
def test_a_count_that_is_no_whole_number_is_said_to_be_none(tmp_path, given):
    """`--workers abc` is refused as no whole number, in one line, before any file is read
    (click's own wording named the type, 'not a valid integer range')."""
    code, out, _ = run("replay", tmp_path / "c.toml", tmp_path / "t.msgpack", "--out", tmp_path / "o",
                       "--workers", given)
    assert code == 2
    assert out.strip().splitlines() == [
        f"sigmatch: error: Invalid value for '--workers': '{given}' is not a valid whole number. "
        "(see: main replay --help)"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("workers", ["1", "2"])
def test_replay_refuses_an_out_it_cannot_make(world, tmp_path, workers):
    """An --out below a file: one line naming it, before anything is loaded or written."""
    config, trace = world
    (tmp_path / "afile").write_text("")
    code, out, _ = run("replay", config, trace, "--out", tmp_path / "afile" / "out", "--workers", workers)
    assert code == 1
    assert out.strip().splitlines() == [f"sigmatch: error: --out {tmp_path / 'afile' / 'out'}: "
                                         f"{tmp_path / 'afile'} is not a directory"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_replay_refuses_a_file_for_its_out_in_its_own_words(world, tmp_path, workers):
    """A plain file as --out was refused in click's option-parser wording ("Invalid value for
    '--out': Directory ... is a file", exit 2): now one line as every other --out refusal, exit
    1, naming the path; the file is left as it was."""
    config, trace = world
    (tmp_path / "afile").write_text("mine\n")
    code, out, _ = run("replay", config, trace, "--out", tmp_path / "afile", "--workers", workers)
    assert code == 1
    assert out.strip().splitlines() == [f"sigmatch: error: --out {tmp_path / 'afile'}: is a file, not a directory"]
    assert (tmp_path / "afile").read_text() == "mine\n"
    code, out, _ = run("run", config, "--out", tmp_path / "o", "--state", tmp_path / "afile", "--stdin")
    assert code == 1
    assert out.strip().splitlines() == [f"sigmatch: error: --state {tmp_path / 'afile'}: is a file, not a directory"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_subfolder_of_out_that_cannot_take_files_is_refused_before_any_work(world, tmp_path, workers):
    """OUT/sms a file (refused to root too): the replay failed at its first file, once the
    events were processed, in an OSError's words of a temporary file, and left a stats.json
    counting actions no file held. Now one line naming it, before any event and before
    --overwrite removes the earlier run, whose files are kept."""
    config, trace = world
    out = tmp_path / "out"
    code, text, _ = run("replay", config, trace, "--out", out)
    assert code == 0, text
    earlier = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    channel = next(p.name for p in out.iterdir() if p.is_dir() and p.name not in ("conversions", "dead_letters"))
    shutil.rmtree(out / channel)
    (out / channel).write_text("mine\n")
    earlier = {p: data for p, data in earlier.items() if p.parent != out / channel}
    earlier[out / channel] = b"mine\n"
    code, text, _ = run("replay", config, trace, "--out", out, "--overwrite", "--workers", workers)
    assert code == 1
    assert text.strip().splitlines() == [f"sigmatch: error: --out {out}: {out / channel} is not a directory, and "
                                         f"the run writes its {channel} files there"]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == earlier


def test_a_service_refuses_a_subfolder_of_out_that_cannot_take_files_before_any_event(world, tmp_path):
    """`run` took the events and failed at its first sealed file, naming a temporary file
    (`OUT/sms/.actions-00000001.csv.tmp: Not a directory`): now the one line replay says,
    before the state, the journal or the lock exist."""
    config, trace = world
    out, state = tmp_path / "out", tmp_path / "state"
    out.mkdir()
    (out / "conversions").write_text("mine\n")
    done = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(config), "--out", str(out), "--state",
                           str(state), "--stdin"], cwd=ROOT, input=trace.read_bytes(), capture_output=True,
                          timeout=120)
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines() == [
        f"sigmatch: error: --out {out}: {out / 'conversions'} is not a directory, and the run writes its "
        "conversions files there"]
    assert sorted(p.name for p in out.iterdir()) == ["conversions"] and not state.exists()


def test_a_link_to_nothing_on_the_way_to_out_or_state_is_named_with_its_target(world, tmp_path):
    """A dangling symbolic link as --out (or above it, or as a channel's folder) was said in
    mkdir's words, "--out L: File exists", and by the service as "cannot lock it (lock: No
    such file or directory)": now one line naming the link and where it points, before any
    work, and nothing is made at its target."""
    config, trace = world
    link = tmp_path / "gone"
    link.symlink_to(tmp_path / "nowhere")
    said = f"{link} is a link to {tmp_path / 'nowhere'}, which does not exist"
    code, out, _ = run("replay", config, trace, "--out", link)
    assert code == 1 and out.strip().splitlines() == [f"sigmatch: error: --out {said}"]
    code, out, _ = run("replay", config, trace, "--out", link / "a" / "b", "--workers", "2")
    assert code == 1 and out.strip().splitlines() == [f"sigmatch: error: --out {link / 'a' / 'b'}: {said}"]
    for option, other in (("--out", "--state"), ("--state", "--out")):
        code, out, _ = run("run", config, option, link, other, tmp_path / "fine", "--stdin")
        assert code == 1 and out.strip().splitlines() == [f"sigmatch: error: {option} {said}"]
    real = tmp_path / "real"
    real.mkdir()
    (real / "conversions").symlink_to(tmp_path / "nowhere")
    code, out, _ = run("replay", config, trace, "--out", real)
    assert code == 1 and out.strip().splitlines() == [
        f"sigmatch: error: --out {real}: {real / 'conversions'} is a link to {tmp_path / 'nowhere'}, which does not "
        "exist, and the run writes its conversions files there"]
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "fine").exists()
    # a loop of links is said as one, not as a target that does not exist
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    code, out, _ = run("replay", config, trace, "--out", tmp_path / "a")
    assert code == 1 and out.strip().splitlines() == [
        f"sigmatch: error: --out {tmp_path / 'a'} is a link to {tmp_path / 'b'}, which leads back to itself "
        "(a loop of links)"]


def test_making_a_directory_through_a_link_to_nothing_names_the_link(tmp_path):
    from engine.errors import describe_os_error
    from engine.sinks import make_private_directories
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as caught:
        make_private_directories(tmp_path / "gone" / "x")
    assert describe_os_error(caught.value) == f"{tmp_path / 'gone'}: a link to {tmp_path / 'nowhere'}, which does not exist"
    make_private_directories(tmp_path / "here" / "x")      # an ordinary path is made as before
    assert (tmp_path / "here" / "x").is_dir()


def test_the_api_refuses_a_subfolder_of_out_that_cannot_take_files_before_any_event(world, tmp_path):
    from engine import Engine, SigmatchError
    config, trace = world
    out = tmp_path / "out"
    out.mkdir()
    (out / "dead_letters").write_text("mine\n")
    engine = Engine.from_config(config)
    with pytest.raises(SigmatchError, match=re.escape(f"{out}: {out / 'dead_letters'} is not a directory, and the run "
                                                      "writes its dead_letters files there")):
        engine.replay(trace, out=out)
    assert sorted(p.name for p in out.iterdir()) == ["dead_letters"]
    assert engine.replay(trace).stats["run"]["events"] == 20_000     # no event was spent


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_a_read_only_subfolder_of_out_is_refused_before_any_work(world, tmp_path):
    config, trace = world
    out = tmp_path / "out"
    (out / "conversions").mkdir(parents=True)
    (out / "conversions").chmod(0o555)
    try:
        code, text, _ = run("replay", config, trace, "--out", out)
    finally:
        (out / "conversions").chmod(0o755)
    assert code == 1
    assert text.strip().splitlines() == [f"sigmatch: error: --out {out}: {out / 'conversions'} is not writable by "
                                         "this user, and the run writes its conversions files there"]
    assert sorted(p.name for p in out.iterdir()) == [".sigmatch-out.lock", "conversions"]


def test_a_dash_for_a_directory_is_refused_not_made(world, tmp_path, monkeypatch):
    """`--out -` is not standard output: replay made a directory named "-" and said nothing.
    Refused in one line, exit 1 as the other --out refusals, by every directory option;
    ./- is still a directory named "-"."""
    config, trace = world
    monkeypatch.chdir(tmp_path)
    for args, option in ((("replay", config, trace, "--out", "-"), "--out"),
                         (("replay", config, trace, "--out", "-", "--workers", "2"), "--out"),
                         (("run", config, "--out", "o", "--state", "-", "--stdin"), "--state")):
        code, out, _ = run(*args)
        assert code == 1
        assert out.strip().splitlines() == [f"sigmatch: error: {option} -: names a directory, and - is not "
                                            "standard output here: give a directory (./- for one named -)"]
    assert list(tmp_path.iterdir()) == []
    code, out, _ = run("replay", config, trace, "--out", "./-")
    assert code == 0, out
    assert (tmp_path / "-" / "stats.json").is_file()


def test_a_dash_for_a_file_the_command_writes_is_refused_not_written(world, tmp_path, monkeypatch):
    # `report --html -` wrote a file named "-" and said "html: -" (helper-115)
    config, trace = world
    monkeypatch.chdir(tmp_path)
    assert run("replay", config, trace, "--out", "o")[0] == 0
    for args, option in ((("report", "o", "--html", "-"), "--html"),
                         (("report", "o", "--non-responders", "1", "--list", "-"), "--list"),
                         (("diff", config, config, trace, "--html", "-"), "--html")):
        code, out, _ = run(*args)
        assert code == 1, out
        assert out.strip().splitlines() == [f"sigmatch: error: {option} -: names a file the command writes, and - "
                                            "is not standard output here: give a file name (./- for one named -)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_a_dash_for_a_file_the_command_reads_is_refused_with_what_reads_standard_input(world, tmp_path, monkeypatch):
    # `replay CONFIG - < trace` said "-: no such trace file" (helper-116)
    config, trace = world
    monkeypatch.chdir(tmp_path)
    code, out, _ = run("replay", config, "-", "--out", "o")
    assert code == 1
    assert out.strip().splitlines() == ["sigmatch: error: TRACES -: names a file, and - is not standard input here: "
                                        "give a file name (./- for one named -); `sigmatch run --stdin` reads "
                                        "events from standard input"]
    code, out, _ = run("check", "-")
    assert code == 1 and out.strip().splitlines() == [
        "sigmatch: error: CONFIG -: names a file, and - is not standard input here: give a file name (./- for one "
        "named -)"]
    assert list(tmp_path.iterdir()) == []


def test_a_new_directory_directly_under_the_root_is_refused_as_an_unset_variable(world, tmp_path):
    """`--out "$UNSET/x"` is /x: replay made a directory directly under /. Every path a command
    makes (or makes the directories of) refuses a new one there, in one line, exit 1, and makes
    nothing; one that exists is taken (every other test writes below /tmp)."""
    config, trace = world
    top = f"/sigmatch-unset-{os.getpid()}-{tmp_path.name}"
    assert not os.path.lexists(top)
    output = tmp_path / "output"
    output.mkdir()
    for args, option, given in ((("replay", config, trace, "--out"), "--out", top),
                                (("replay", config, trace, "--workers", "2", "--out"), "--out", f"{top}/x"),
                                (("run", config, "--out", tmp_path / "o", "--stdin", "--state"), "--state", top),
                                (("report", output, "--plots"), "--plots", top),
                                (("report", output, "--html"), "--html", f"{top}/week.html"),
                                (("report", output, "--non-responders", "3", "--list"), "--list", f"{top}/n.roar"),
                                (("diff", config, config, trace, "--html"), "--html", f"{top}/diff.html"),
                                (("gen", "--subscribers", "100", "--events", "10"), "DIRECTORY", top),
                                (("demo", "--dir"), "--dir", top)):
        code, out, _ = run(*args, given)
        assert code == 1, (args, out)
        assert out.strip().splitlines() == [f"sigmatch: error: {option} {given}: {top} would be a new directory "
                                            f"directly under /, as when a variable in \"$DIR{given}\" is unset: "
                                            f"make {top} first if it is meant"]
    assert not os.path.lexists(top) and sorted(p.name for p in tmp_path.iterdir()) == ["output"]


def test_two_unset_variables_are_refused_as_one(world, tmp_path):
    """`--out "$A/$B/x"` is //x, which POSIX keeps as a root of its own: it passed and made /x."""
    config, trace = world
    top = f"/sigmatch-unset-{os.getpid()}-{tmp_path.name}"
    for given in (f"/{top}", f"/{top}/x"):
        code, out, _ = run("replay", config, trace, "--out", given)
        assert code == 1, out
        assert out.strip().splitlines() == [f"sigmatch: error: --out {given}: {top} would be a new directory "
                                            f"directly under /, as when a variable in \"$DIR{given}\" is unset: "
                                            f"make {top} first if it is meant"]
    assert not os.path.lexists(top)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_stats_json_that_is_a_directory_is_refused_before_any_event(world, tmp_path, workers):
    """OUT/stats.json a directory: the run took every event and failed renaming stats.json over
    it, leaving each channel's last file unsealed. Now one line before any work."""
    config, trace = world
    out = tmp_path / "out"
    (out / "stats.json").mkdir(parents=True)
    code, text, _ = run("replay", config, trace, "--out", out, "--workers", workers)
    assert code == 1
    assert text.strip().splitlines() == [f"sigmatch: error: --out {out}: {out / 'stats.json'} is a directory, "
                                         "where the run writes its stats.json"]
    assert sorted(p.name for p in out.rglob("*")) == [".sigmatch-out.lock", "stats.json"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_replay_names_the_option_of_an_out_the_system_refuses(world, tmp_path):
    """/proc refuses a directory even to root, whom access() lets write anywhere: the error
    names --out before the load, and nothing is left behind where the system agreed."""
    config, trace = world
    code, out, _ = run("replay", config, trace, "--out", "/proc/sigmatch-out")
    assert code == 1
    assert out.strip().splitlines() == ["sigmatch: error: --out /proc/sigmatch-out: No such file or directory"]
    code, out, _ = run("replay", config, trace, "--out", "/proc/sigmatch-out/x", "--workers", "2")
    assert out.strip().splitlines() == ["sigmatch: error: --out /proc/sigmatch-out/x: "
                                        "/proc/sigmatch-out: No such file or directory"]
    too_long = tmp_path / ("x" * 300) / "out"
    code, out, _ = run("replay", config, trace, "--out", too_long)
    assert code == 1
    assert out.strip().splitlines() == [f"sigmatch: error: --out {too_long}: {too_long}: File name too long"]
    assert list(tmp_path.iterdir()) == []

def test_an_empty_path_is_refused_not_taken_for_the_current_directory(world, tmp_path, monkeypatch):
    """click makes "" into ".": `--out ""` wrote into the current directory, and `run --state
    "$UNSET"` would keep its checkpoints there; `--out " "` made a directory named " ". Every
    path argument and option refuses both."""
    config, trace = world
    monkeypatch.chdir(tmp_path)
    for args, name, what in ((("replay", config, trace, "--out", ""), "'--out'", "an empty"),
                             (("replay", "", trace, "--out", "o"), "'CONFIG'", "an empty"),
                             (("run", config, "--out", "o", "--state", ""), "'--state'", "an empty"),
                             (("replay", config, trace, "--out", " "), "'--out'", "a blank"),
                             (("run", config, "--out", "o", "--state", "\t"), "'--state'", "a blank")):
        code, out, _ = run(*args)
        assert code == 2
        assert out.strip().splitlines() == [
            f"sigmatch: error: Invalid value for {name}: {what} path (for the current directory, give .) "
            f"(see: main {args[0]} --help)"]  # CliRunner names the program main
    assert list(tmp_path.iterdir()) == []
    code, out, _ = run("replay", config, trace, "--out", ".")      # the explicit spelling still works
    assert code == 0, out
    assert (tmp_path / "stats.json").exists()


def test_only_a_services_checkpoint_names_make_a_directory_a_state(world, tmp_path):
    """A user's own log-today.txt or base-notes beside --out is not a service's checkpoint
    (base-NNNNNNNN, log-NNNNNNNN): the replay goes on. Nor is a file of such a name that the
    store did not write (helper-119: a log-20261206 in the home folder blocked every replay
    below it). A real checkpoint still refuses it."""
    config, trace = world
    (tmp_path / "log-today.txt").write_text("my notes\n")
    (tmp_path / "base-notes").write_text("more\n")
    (tmp_path / "log-20261206").write_text("my notes of the day\n")
    (tmp_path / "base-20261206").write_text("more\n")
    code, out, _ = run("replay", config, trace, "--out", tmp_path / "out")
    assert code == 0, out
    (tmp_path / "log-00000003").write_bytes(b"")
    code, out, _ = run("replay", config, trace, "--out", tmp_path / "out2")
    assert code == 1
    assert out.strip().splitlines() == [
        f"sigmatch: error: --out {tmp_path / 'out2'}: is inside a service's --state {tmp_path} "
        "(it holds checkpoints): give another --out"]


def test_send_names_the_address_it_cannot_reach(tmp_path):
    import socket
    with socket.socket() as s:          # a port nothing listens on once this closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    trace = tmp_path / "t.msgpack"
    trace.write_bytes(b"")
    code, out, _ = run("send", f"127.0.0.1:{port}", trace)
    assert code == 1
    assert out.strip().splitlines() == [f"sigmatch: error: 127.0.0.1:{port}: Connection refused"]
    code, out, _ = run("send", f"[::1]:{port}", trace)       # as the option takes it back
    assert code == 1
    assert out.strip().splitlines()[0].startswith(f"sigmatch: error: [::1]:{port}: ")
    from engine.service.client import Unreachable, send
    with pytest.raises(OSError) as caught:     # a producer that retries on an OSError still can
        send("127.0.0.1", port, trace)
    assert isinstance(caught.value, Unreachable) and isinstance(caught.value.__cause__, ConnectionRefusedError)


def test_check(world):
    config, _ = world
    code, out, _ = run("check", config)
    assert code == 0, out
    assert "ok" in out and "subscribers: 2,000" in out


@pytest.mark.parametrize("problem", ["missing_config", "missing_trace", "bad_config", "corrupt"])
def test_errors_exit_non_zero_with_one_line(world, tmp_path, problem):
    config, trace = world
    args = ["replay", config, trace, "--out", tmp_path / "out"]
    if problem == "missing_config":
        args[1] = tmp_path / "nope.toml"
    elif problem == "missing_trace":
        args[2] = tmp_path / "nope.msgpack"
    elif problem == "bad_config":
        bad = tmp_path / "bad.toml"
        text, n = re.subn(r'(?m)^(min_gap\s*=\s*)"4h"', r'\1"4 hours"', config.read_text())
        assert n == 1
        bad.write_text(text)
        args[1] = bad
    else:
        broken = tmp_path / "broken.msgpack"
        broken.write_bytes(trace.read_bytes()[:tenth_event_offset(trace)] + b"\xc1")
        args[2] = broken
    proc = subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sigmatch: error: "), proc.stderr
    if problem == "corrupt":
        assert f"offset {tenth_event_offset(trace)}" in lines[0]
    if problem == "bad_config":
        assert "bad.toml" in lines[0] and "min_gap" in lines[0]


def test_json_logs_mask_numbers(tmp_path):
    import json
    bad = tmp_path / "list.txt"
    bad.write_text("13800138000x\n13900139000\n")
    profiles = tmp_path / "p.csv"
    profiles.write_text("msisdn\n13800138000\n")
    config = tmp_path / "c.toml"
    config.write_text('[engine]\nprofiles = "p.csv"\n[lists]\nvip = "list.txt"\n'
                      '[[campaign]]\nid = "a"\non = ["SMS_MO"]\nchannel = "sms"\naudience = "vip"\n')
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "--log-format", "json", "check", str(config)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    entries = [json.loads(line) for line in proc.stderr.splitlines()]
    assert entries and all({"ts", "level", "logger", "message"} <= set(e) for e in entries)
    assert "13800138000" not in proc.stderr


def test_json_logs_make_the_error_line_a_record_too(tmp_path):
    """--log-format json: every line on stderr parses, the final error included (level ERROR,
    logger sigmatch, its numbers masked as in text)."""
    import json
    config = tmp_path / "bad.toml"
    config.write_text('[engine]\nprofiles = "p.csv"\nmax_pending = "+8613800138000"\n')
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "--log-format", "json", "check", str(config)],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    entries = [json.loads(line) for line in proc.stderr.splitlines()]
    last = entries[-1]
    assert last["level"] == "ERROR" and last["logger"] == "sigmatch", last
    assert "******8000" in last["message"] and "13800138000" not in proc.stderr
    text = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(config)], capture_output=True, text=True)
    assert text.stderr.splitlines()[-1] == "sigmatch: error: " + last["message"]


def test_check_counts_values_that_are_not_dates(tmp_path):
    (tmp_path / "p.csv").write_text("msisdn,birth_date,join_date\n13800000001,1990-01-05,2020-01-01\n"
                                    "13800000002,2024-02-30,\n13800000003,1990-1-5,2021-02-29\n13800000004,,x\n")
    config = tmp_path / "c.toml"
    config.write_text('[engine]\nprofiles = "p.csv"\n'
                      '[[campaign]]\nid = "birthday"\non = ["SMS_MO"]\nchannel = "sms"\nanniversary = "birth_date"\n'
                      '[[campaign]]\nid = "joined"\non = ["SMS_MO"]\nchannel = "sms"\nanniversary = "join_date"\n')
    code, out, _ = run("check", config)
    assert code == 0, out
    assert ("  birth_date: 2 values are not dates (YYYY-MM-DD); those subscribers never match an anniversary"
            in out.splitlines())
    assert ("  join_date: 2 values are not dates (YYYY-MM-DD); those subscribers never match an anniversary"
            in out.splitlines())


@pytest.mark.parametrize("life, said", [
    ("enabled = false\n", "    off: 1 subscriber eligible; disabled (enabled = false): it matches nothing"),
    ('start = "2027-03-01"\nend = 2027-03-31\n', "    off: 1 subscriber eligible; acts on local dates 2027-03-01 to 2027-03-31"),
    ('start = "2027-03-01"\n', "    off: 1 subscriber eligible; acts from local date 2027-03-01"),
    ('end = "2020-01-02"\n', "    off: 1 subscriber eligible; acts until local date 2020-01-02"),
    ("", "    off: 1 subscriber eligible"),
])
def test_check_says_a_campaigns_life(tmp_path, life, said):
    # without it, a disabled or long-ended campaign reads as '1 subscriber eligible' like any other
    (tmp_path / "p.csv").write_text("msisdn\n13800000001\n")
    config = tmp_path / "c.toml"
    config.write_text('[engine]\nprofiles = "p.csv"\n'
                      '[[campaign]]\nid = "off"\non = ["SMS_MO"]\nchannel = "sms"\n' + life)
    code, out, _ = run("check", config)
    assert code == 0, out
    assert said in out.splitlines(), out


def test_check_lists_a_campaigns_variants_and_weights(tmp_path):
    (tmp_path / "p.csv").write_text("msisdn\n13800000001\n")
    config = tmp_path / "c.toml"
    config.write_text('[engine]\nprofiles = "p.csv"\n'
                      '[[campaign]]\nid = "ab"\non = ["SMS_MO"]\nchannel = "sms"\n'
                      'variants = [{ template = "RESCUE_A", weight = 1 }, { template = "RESCUE_B", weight = 2 }, '
                      '{ template = "RESCUE_C", weight = 9_997 }]\n')
    code, out, _ = run("check", config)
    assert code == 0, out
    lines = out.splitlines()
    at = lines.index("    ab: 1 subscriber eligible")
    assert lines[at + 1] == ("      variants (template, weight, share): RESCUE_A 1 (0.01%), RESCUE_B 2 (0.02%), "
                             "RESCUE_C 9,997 (99.97%)")
    # a template with a line break or a tab is shown escaped, the line whole (helper-125)
    config.write_text(config.read_text().replace('"RESCUE_A"', '"V\\nW"').replace('"RESCUE_B"', '"A\\tB"')
                      .replace('"RESCUE_C"', "'A\\tB'"))
    code, out, _ = run("check", config)
    assert code == 0, out
    # and a backslash written in the template is doubled: a tab and a written \t read apart
    assert "variants (template, weight, share): V\\nW 1 (0.01%), A\\tB 2 (0.02%), A\\\\tB 9,997" in out, out


def test_the_funnel_table_shows_global_controls_and_their_conversions():
    # a campaign whose every contact fell in the global control group (trial of issue 11):
    # its contacts and conversions must show, not read as nothing sent and nothing converted
    from engine.cli import FUNNEL_LEGEND, format_funnel
    from engine.records import FUNNEL
    funnel = dict.fromkeys(FUNNEL, 0)
    funnel.update(matched=5, global_control=5, converted_global_control=5)
    header, row = format_funnel({"campaigns": {"g": funnel}}).splitlines()
    assert header.split()[5:9] == ["sent", "control", "global", "conv"]
    assert row.split()[1:] == ["5", "0", "0", "0", "0", "0", "5", "5"]
    assert "a budget" in FUNNEL_LEGEND and "global control group" in FUNNEL_LEGEND


def test_check_shows_the_second_editions_limits(tmp_path):
    # markers, when, budgets, the rolling window, the global control group and the channels'
    # budgets were loaded silently (trial of issue 11): check says what it will apply
    (tmp_path / "p.csv").write_text("msisdn\n13800000001\n")
    config = tmp_path / "c.toml"
    config.write_text('[engine]\nprofiles = "p.csv"\n'
                      '[policy]\nmax_in_window = { contacts = 4, window = "7d" }\nglobal_holdout = 0.01\n'
                      '[counters]\nsms = { on = ["SMS_MO"] }\ncalls = { on = ["CALL_MO_END"] }\n'
                      '[markers]\nrecharged = { on = ["RECHARGE"] }\n'
                      '[channels]\nsms = { daily_budget = 20000 }\n'
                      '[[campaign]]\nid = "a"\non = ["SMS_MO"]\nchannel = "sms"\nwhen = """sms >= 2 * calls\n  + 1"""\n'
                      'daily_budget = 500\ntotal_budget = 5000\n')
    code, out, _ = run("check", config)
    assert code == 0, out
    lines = out.splitlines()
    for line in ("  markers: recharged",
                 "  max_in_window: at most 4 contacts in any 7d (all campaigns together)",
                 "  global_holdout: 1.00% of subscribers are never sent anything",
                 "  channel sms: daily_budget 20,000 sends a local day",
                 "      when: sms >= 2 * calls + 1",
                 "      budget: 500 sends a local day, 5,000 sends in all"):
        assert line in lines, (line, out)


@pytest.mark.parametrize("broken", [False, True])
def test_a_replay_run_in_process_leaves_pyarrow_seeing_pandas(world, tmp_path, broken):
    """`replay` makes pyarrow believe there is no pandas while it runs; a caller that runs the
    command in its own process gets pyarrow's pandas conversions back afterwards (a
    categorical Series stays a dictionary array), whether the replay succeeded or failed."""
    config, trace = world
    if broken:
        trace = tmp_path / "not-msgpack.msgpack"
        trace.write_bytes(b"\xc1" * 64)
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from engine.cli import main\n"
        "print(CliRunner().invoke(main, ['replay', sys.argv[1], sys.argv[2], '--out', sys.argv[3]]).exit_code)\n"
        "import pandas as pd, pyarrow as pa\n"
        "print(pa.types.is_dictionary(pa.array(pd.Series(['a', 'b', 'a'], dtype='category')).type))\n")
    done = subprocess.run([sys.executable, "-c", script, str(config), str(trace), str(tmp_path / "out")],
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1" if broken else "0", "True"], done.stderr[-2000:]


def test_replay_spares_the_import_of_pandas_and_a_later_user_still_gets_it():
    """pyarrow imports pandas at its first conversion; `replay` makes it remember there is
    none (0.3-0.5 s of its start), and a later to_pandas() imports it as usual."""
    script = (
        "import sys\n"
        "from engine.cli import _arrow_without_pandas\n"
        "_arrow_without_pandas()\n"
        "import numpy as np, pyarrow as pa, pyarrow.compute as pc\n"
        "table = pa.table({'a': pa.array(np.arange(3)), 'b': pc.cast(pa.array([1, 2, 3]), pa.string())})\n"
        "print('pandas' in sys.modules)\n"
        "print(type(table.to_pandas()).__name__, 'pandas' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "DataFrame", "True"]


@pytest.fixture(scope="module")
def held_out_world(tmp_path_factory):
    """Large enough for some campaign's controls to reach MIN_CONTROLS: an uplift is shown."""
    generated = generate(tmp_path_factory.mktemp("held-out"), subscribers=50_000, events=500_000, campaigns=4, seed=5)
    return generated.config, generated.traces[0]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_fresh_replay_prints_the_uplifts_this_process_computes(held_out_world, tmp_path, workers):
    """A `sigmatch replay` of its own imports statsmodels in a child process while it runs
    (engine.closedloop.uplift.intervals_ahead); its funnel is the one computed here from its
    stats.json, every interval included."""
    import json
    from engine.cli import format_funnel
    config, trace = held_out_world
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(config), str(trace), "--out", str(out),
                           "--no-progress", "--workers", workers], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    table = format_funnel(json.loads((out / "stats.json").read_text()))
    assert re.search(r"\[[-+]\d+\.\d, [-+]\d+\.\d\]", table)       # some campaign has an interval
    assert table in done.stdout


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_configuration_through_a_pipe_is_read_once(held_out_world, tmp_path, workers):
    """CONFIG may be a pipe (/dev/stdin, <(...)), which reads once: the replay, with or
    without workers, runs the campaigns it held (its paths made absolute, as a pipe has no
    directory of its own), the uplifts included."""
    config, trace = held_out_world
    text = re.sub(r'= "((?:profiles|lists/|areas/)[^"]*)"', lambda m: f'= "{config.parent / m.group(1)}"',
                  config.read_text())
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", "/dev/stdin", str(trace), "--out", str(out),
                           "--no-progress", "--workers", workers], input=text, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "500,000 events" in done.stdout
    assert re.search(r"\[[-+]\d+\.\d, [-+]\d+\.\d\]", done.stdout)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_relative_paths_of_a_configuration_through_a_pipe_are_the_working_directorys(held_out_world, tmp_path,
                                                                                      workers):
    """A pipe's folder is /dev/fd, where no file of the user's is: its relative paths resolve
    against the folder the command runs in (they said "/dev/fd/...: no such profile file")."""
    config, trace = held_out_world
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", "/dev/stdin", str(trace), "--out", str(out),
                           "--no-progress", "--workers", workers], input=config.read_text(), capture_output=True,
                          text=True, cwd=config.parent, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "500,000 events" in done.stdout
    # the digest of the bytes read, not of a second read of the pipe (empty)
    import hashlib
    import json
    stats = json.loads((out / "stats.json").read_text())
    assert stats["configuration"]["sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    elsewhere = subprocess.run([sys.executable, "-m", "engine.cli", "replay", "/dev/stdin", str(trace), "--out",
                                str(tmp_path / "out2")], input=config.read_text(), capture_output=True, text=True,
                               cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert elsewhere.returncode != 0
    assert elsewhere.stderr.strip().splitlines()[-1].startswith(
        f"sigmatch: error: /dev/stdin: engine.profiles: {tmp_path}/"), elsewhere.stderr
    # `/dev/stdin < campaigns.toml`: standard input is then the file itself, still not in /dev
    with open(config) as f:
        redirected = subprocess.run([sys.executable, "-m", "engine.cli", "check", "/dev/stdin"], stdin=f,
                                    capture_output=True, text=True, cwd=config.parent,
                                    env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert redirected.returncode == 0, redirected.stderr[-2000:]


def test_a_configuration_in_a_fifo_beside_its_files_keeps_its_folder(held_out_world, tmp_path):
    """A FIFO made with mkfifo is a path of a folder like any file: its paths are that folder's."""
    import threading
    config, _ = held_out_world
    folder = tmp_path / "w"
    shutil.copytree(config.parent, folder, ignore=shutil.ignore_patterns("*.msgpack*"))
    fifo = folder / "fifo.toml"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=(config.read_text(),))
    writer.start()
    done = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(fifo)], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    writer.join(timeout=10)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("nested", ["a." * 400 + "b = 1\n", "x = " + "[" * 3000 + "]" * 3000 + "\n",
                                    "x = " + "{a=" * 600 + "1" + "}" * 600 + "\n"])
def test_a_configuration_nested_too_deeply_is_one_line(tmp_path, nested):
    (tmp_path / "campaigns.toml").write_text(nested)
    (tmp_path / "trace.msgpack").write_bytes(b"")
    done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(tmp_path / "campaigns.toml"),
                           str(tmp_path / "trace.msgpack"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]
    assert "campaigns.toml" in done.stderr


def test_ray_refuses_a_configuration_through_a_pipe(held_out_world, tmp_path):
    """Every actor reads CONFIG on its own host: a pipe, read once here, cannot be. One line,
    before Ray is asked for anything (so also where the [ray] extra is missing)."""
    config, trace = held_out_world
    done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", "/dev/stdin", str(trace), "--out",
                           str(tmp_path / "out"), "--workers", "2", "--ray"], input=config.read_text(),
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "sigmatch: error: /dev/stdin: --ray needs CONFIG as a file that every host reads at the same path "
        "(this is a pipe or a device)"], done.stderr


def test_ray_that_took_the_trace_for_its_address_says_so(held_out_world, tmp_path):
    """`--ray [ADDRESS]` takes the next word: `replay CONFIG --ray TRACE --out OUT` said
    `Missing argument 'TRACES...'`. It now says what --ray took and how to write it, in one
    line, before Ray is asked for anything; a missing trace without --ray is said as before."""
    config, trace = held_out_world
    done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(config), "--ray", str(trace), "--out",
                           str(tmp_path / "out"), "--workers", "2"], capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"sigmatch: error: --ray took {trace} for the cluster's address, and no trace is left: give the traces "
        "before --ray, or write --ray=ADDRESS (see: "), lines
    assert not (tmp_path / "out").exists()
    done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(config), f"--ray={trace}", "--out",
                           str(tmp_path / "out"), "--workers", "2"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith(
        f"sigmatch: error: --ray={trace}: --ray takes the cluster's address, and {trace} is a file; give the traces "
        "after CONFIG (see: "), done.stderr
    done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(config), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Missing argument 'TRACES...'" in done.stderr


def test_a_trace_or_profiles_that_is_a_pipe_is_said_to_be_one(tmp_path):
    import os
    (tmp_path / "profiles.csv").write_text("msisdn\n13800000001\n")
    (tmp_path / "c.toml").write_text('[engine]\nprofiles = "profiles.csv"\n\n[[campaign]]\nid = "c"\n'
                                     'on = ["CALL_MO_END"]\nchannel = "sms"\n')
    os.mkfifo(tmp_path / "trace.msgpack")
    code, out, _ = run("replay", tmp_path / "c.toml", tmp_path / "trace.msgpack", "--out", tmp_path / "out")
    assert code == 1 and "trace.msgpack: cannot read trace: a pipe, not a regular file" in out, out
    (tmp_path / "trace.msgpack").unlink()
    (tmp_path / "trace.msgpack").write_bytes(b"")
    (tmp_path / "profiles.csv").unlink()
    os.mkfifo(tmp_path / "profiles.csv")
    code, out, _ = run("replay", tmp_path / "c.toml", tmp_path / "trace.msgpack", "--out", tmp_path / "out")
    assert code == 1 and "profiles.csv: cannot read profiles: a pipe, not a regular file" in out, out


@pytest.mark.parametrize("where", ["head", "past the head"])
def test_a_corrupt_gz_trace_is_one_line(world, tmp_path, where):
    """A .gz whose deflate data is damaged (zlib.error, not an OSError) is refused in one
    line naming the file: in the first MBs that replay examines, or further on."""
    import gzip
    config, trace = world
    bad = bytearray(gzip.compress(trace.read_bytes()))
    bad[10] = 0x07                                      # an invalid deflate block type
    data = bytes(bad) if where == "head" else gzip.compress(trace.read_bytes() * 6) + bytes(bad)
    (tmp_path / "t.msgpack.gz").write_bytes(data)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(config), str(tmp_path / "t.msgpack.gz"),
                           "--out", str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "t.msgpack.gz: cannot read trace:" in lines[0] and "Traceback" not in done.stderr, lines


EXAMPLE = ROOT / "examples" / "crbt_school"
ADVICE = ("one worker per core is advised; the workers beyond the cores gain nothing, and each shared decision "
          "waits for the slowest (going on)")


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("affinity", [True, False], ids=["affinity", "cpu_count"])
@pytest.mark.parametrize("workers", [2, 3])
def test_replay_warns_of_more_workers_than_usable_cores_and_goes_on(tmp_path, monkeypatch, caplog, affinity, workers):
    """The cores are those of the process's CPU affinity (taskset, a container's cpuset), or
    os.cpu_count() where there is none: --workers beyond them says so in one line, and the
    run's output is the one it makes without the warning."""
    if affinity:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    else:
        monkeypatch.delattr(os, "sched_getaffinity", raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
    code, out, _ = run("replay", EXAMPLE / "campaigns.toml", EXAMPLE / "trace.msgpack", "--out", tmp_path / "out",
                       "--workers", workers, "--no-progress")
    assert code == 0, out
    assert "24 events" in out and (tmp_path / "out" / "stats.json").is_file()
    assert _warnings(caplog) == ([f"--workers 3 on 2 usable cores: {ADVICE}"] if workers == 3 else [])


def test_a_configuration_that_does_not_load_is_said_without_the_cores_warning(tmp_path, monkeypatch, caplog):
    """The warning came before the configuration was read: a command that failed said two
    things, the first of them advice about a run that never started."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    bad = tmp_path / "campaigns.toml"
    bad.write_text("[policy]\nnope = 1\n")
    code, out, _ = run("replay", bad, EXAMPLE / "trace.msgpack", "--out", tmp_path / "out", "--workers", 3)
    assert code == 1 and out.startswith("sigmatch: error:") and "nope" in out
    assert _warnings(caplog) == []


def test_replay_on_ray_says_nothing_of_this_hosts_cores(tmp_path, monkeypatch, caplog):
    """--ray places the workers on the cluster's hosts: this one's cores are not theirs."""
    from engine.errors import LoadError
    from engine.workers import cluster

    def no_cluster(*args, **kwargs):
        raise LoadError("no cluster here")

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(cluster, "replay", no_cluster)
    code, out, _ = run("replay", EXAMPLE / "campaigns.toml", EXAMPLE / "trace.msgpack", "--out", tmp_path / "out",
                       "--workers", 4, "--ray", "--no-progress")
    assert code == 1 and out.strip().splitlines() == ["sigmatch: error: no cluster here"], out
    assert _warnings(caplog) == []


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_the_service_warns_of_more_worker_threads_than_usable_cores(tmp_path):
    """`run --workers` splits over threads, as many cores as they are: on one core (the
    affinity taskset would set), 2 workers draw the line when it starts, and it goes on."""
    one = min(os.sched_getaffinity(0))
    with open(EXAMPLE / "trace.msgpack", "rb") as trace:
        done = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(EXAMPLE / "campaigns.toml"),
                               "--out", str(tmp_path / "out"), "--state", str(tmp_path / "state"), "--stdin",
                               "--workers", "2"], stdin=trace, capture_output=True, text=True, cwd=ROOT,
                              preexec_fn=lambda: os.sched_setaffinity(0, {one}), timeout=120)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if " WARNING " in line]
    assert len(said) == 1 and said[0].endswith(f" WARNING sigmatch.daemon: --workers 2 on 1 usable core: {ADVICE}"), \
        done.stderr


def test_two_replays_into_sibling_folders_of_one_new_parent_both_start(tmp_path, monkeypatch):
    """--out is checked by making and removing its first missing folder; two replays into
    outs/a and outs/b started together (bench.diff's side by side) raced on outs/, and one
    failed with 'outs: File exists' (6 times in 15). A folder made meanwhile by the other is
    a directory, as this one needs; one made as a file is still refused."""
    from engine import cli
    made = []
    real_mkdir = os.mkdir

    def the_other_run_first(path, mode=0o777):
        # the other replay makes the parent between this one's look and its mkdir
        real_mkdir(path, mode)
        made.append(path)
        raise FileExistsError(17, "File exists", str(path))
    monkeypatch.setattr(cli.os, "mkdir", the_other_run_first)
    cli._check_out(tmp_path / "outs" / "a")
    assert made == [tmp_path / "outs"] and (tmp_path / "outs").is_dir()
    monkeypatch.setattr(cli.os, "mkdir", real_mkdir)

    def a_file_first(path, mode=0o777):
        Path(path).write_text("")
        raise FileExistsError(17, "File exists", str(path))
    monkeypatch.setattr(cli.os, "mkdir", a_file_first)
    with pytest.raises(SystemExit):
        cli._check_out(tmp_path / "other" / "a")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads a process's children from /proc")
@pytest.mark.parametrize("workers", [1, 2])
def test_a_replay_stopped_by_sigterm_says_so_in_one_line_and_completes_its_files(world, tmp_path, workers):
    """SIGTERM (`timeout`, `kill`, a supervisor) ended `replay` at once with nothing said
    (exit 143) and an output folder left as it was; it now stops as Ctrl-C does: the files of
    what was made are completed, the workers end with it, and one line says why."""
    import signal
    import time
    config, trace = world
    out = tmp_path / "out"
    # the trace many times over: the replay is still running when the signal comes
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "replay", str(config), *[str(trace)] * 3000,
                             "--out", str(out), "--no-progress", "--workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 120
    # the output's lock is taken just before the first event
    while not (out / ".sigmatch-out.lock").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)
    assert proc.poll() is None, proc.communicate()
    from tests.test_diff import _children, assert_ended
    children = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    # with workers no stats.json says the run was cut short: the line says it (helper-130)
    assert stderr.strip().splitlines()[-1] == "sigmatch: error: stopped by SIGTERM" + (
        f"; the output in {out} is incomplete (no stats.json)" if workers > 1 else ""), stderr
    # what was made is in complete files, with its stats
    assert (out / "stats.json").is_file() or workers > 1
    assert not list(out.rglob("*.tmp")), sorted(out.rglob("*"))
    assert_ended(children, "a child of replay")


def test_a_closed_standard_input_or_error_is_refused_in_one_line(world, tmp_path):
    """helper-120: `run --stdin <&-` and `send ADDR - <&-` ended in a traceback (sys.stdin is
    None), and with standard error closed (`2>&-`) the service wrote nothing and exited 120:
    now one line, before anything is made, and a closed stderr is opened on /dev/null."""
    config, trace = world
    out, state = tmp_path / "out", tmp_path / "state"
    for args, said in (((str(config), "--out", str(out), "--state", str(state)), "--stdin: standard input is closed"),):
        done = subprocess.run([sys.executable, "-m", "engine.cli", "run", *args, "--stdin"], cwd=ROOT,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=120,
                              preexec_fn=lambda: os.close(0))
        assert done.returncode == 1
        assert done.stderr.decode().strip().splitlines() == [f"sigmatch: error: {said}"]
        assert not out.exists() and not state.exists()
    done = subprocess.run([sys.executable, "-m", "engine.cli", "send", "127.0.0.1:9", "-"], cwd=ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=120, preexec_fn=lambda: os.close(0))
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines() == ["sigmatch: error: -: standard input is closed"]
    done = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(config), "--out", str(out), "--state",
                           str(state), "--stdin"], cwd=ROOT, input=trace.read_bytes(), stdout=subprocess.PIPE,
                          timeout=120, preexec_fn=lambda: os.close(2))
    assert done.returncode == 0
    assert (out / "stats.json").exists()


def test_a_standard_input_that_fails_to_be_read_fails_the_service(world, tmp_path):
    """helper-120: a socket as standard input reset by its peer gave a traceback from the
    reader's thread, and the service exited 0. Now what came before is processed, and the
    service fails with one line naming standard input and the bytes read."""
    import socket
    from tests.sockets import reset_after
    config, trace = world
    out, state = tmp_path / "out", tmp_path / "state"
    with reset_after(trace.read_bytes()[:300_000], pause_s=1.5) as conn:
        done = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(config), "--out", str(out), "--state",
                               str(state), "--stdin"], cwd=ROOT, stdin=conn, capture_output=True, timeout=120)
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 1, lines
    assert lines[-1].startswith("sigmatch: error: standard input: cannot be read after 300,000 bytes (Connection "
                                "reset by peer)"), lines
    assert "Traceback" not in done.stderr.decode()
    assert (out / "stats.json").exists()


def test_every_command_shows_its_help():
    """helper-122: `gen -h` ended in a traceback (a range without bounds, shown in the help)."""
    names = [[name] for name in main.commands] + [["console", name] for name in main.commands["console"].commands]
    for name in names:
        result = CliRunner().invoke(main, [*name, "-h"])
        assert result.exit_code == 0 and result.output.startswith("Usage: "), (name, result.output[-500:])


def test_run_refuses_another_services_state_or_spool_and_a_runs_output(world, tmp_path):
    """helper-122: `run` wrote its lock, service id and stats.json into another service's state
    or spool, and its checkpoints into a replay's output (which the gateway reads), where
    replay refused the same --out. One line each, before anything is made."""
    config, trace = world
    state, out, spool = tmp_path / "state", tmp_path / "out", tmp_path / "spool"
    done = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(config), "--out", str(out), "--state",
                           str(state), "--stdin"], cwd=ROOT, input=trace.read_bytes(), capture_output=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    spool.mkdir()
    (spool / ".sigmatch.lock").write_text("")
    for args, said in (
            (("--out", state, "--state", tmp_path / "s2"), f"--out {state}: is a service's --state (it holds "
                                                            "checkpoints): give another --out"),
            (("--out", state / "sub", "--state", tmp_path / "s2"), f"--out {state / 'sub'}: is inside a service's "
                                                                   f"--state {state} (it holds checkpoints)"),
            (("--out", spool / "o", "--state", tmp_path / "s2"), f"--out {spool / 'o'}: is inside a service's "
                                                                 f"--spool {spool} (.sigmatch.lock)"),
            (("--out", tmp_path / "o2", "--state", spool), f"--state {spool}: is a service's --spool"),
            (("--out", tmp_path / "o2", "--state", out), f"--state {out}: holds a run's output")):
        code, text, _ = run("run", config, *args, "--stdin")
        assert code == 1 and text.strip().splitlines()[-1].startswith(f"sigmatch: error: {said}"), (args, text)
    assert not (tmp_path / "s2").exists() and not (tmp_path / "o2").exists()
    assert sorted(p.name for p in spool.iterdir()) == [".sigmatch.lock"]


def test_a_watch_list_that_does_not_load_makes_no_folders(world, tmp_path):
    """helper-128: a --watch list that did not load was read after --out and --state were
    made, and left them behind. It is read in the configuration's encoding, as the error's
    hint ([engine] encoding) says."""
    config, _ = world
    watch = tmp_path / "watch.txt"
    watch.write_bytes(b"1380013\xff8000\n")
    code, text, _ = run("run", config, "--out", tmp_path / "o", "--state", tmp_path / "s", "--stdin",
                        "--watch", watch)
    assert code == 1 and text.strip().splitlines()[-1].startswith(
        f"sigmatch: error: {watch}: line 1: not UTF-8 text"), text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["watch.txt"]


def test_a_run_that_wrote_out_between_its_check_and_its_lock_is_not_replaced(tmp_path):
    # helper-127: an --out made only now is looked at before the lock is held; a replay that
    # wrote it meanwhile had its files replaced under the same names, and both said ok
    from engine import cli
    out = tmp_path / "out"
    earlier = []
    (out / "sms").mkdir(parents=True)
    (out / "sms" / "actions-00000001.csv").write_text("seq\n")
    with pytest.raises(SystemExit):
        cli._hold_out_as_it_was(out, earlier)
    assert (out / "sms" / "actions-00000001.csv").read_text() == "seq\n"
