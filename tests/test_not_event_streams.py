"""Traces that are not event streams (issue 9, item 7): a JSON-lines, CSV, JSON or gzip file,
an empty one, event times in seconds, each named in one line by `replay` and `check` and set
aside by the service; times before 2000 or after 2100 warned about once; late events (ts below
the engine clock) counted alike by the core and the reference model."""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import pytest

from engine.api import Engine
from engine.language.compile import World
from engine.language.config import EVENT_TYPES, CampaignSpec, Config, PolicySpec
from engine.model import ReferenceModel

T0 = 1_767_225_600_000          # 2026-01-01T00:00:00Z
A, B = 13_800_000_001, 13_800_000_002
CALL = EVENT_TYPES["CALL_MO_END"]


@dataclass
class Profiles:
    """The fields of loaders.profiles.Profiles the core and the model read."""
    path: Path
    msisdn: np.ndarray
    columns: dict
    tags: object = None
    bad_rows: int = 0


def ev(ts, type=CALL, msisdn=A) -> bytes:
    return msgpack.packb([ts, type, msisdn, 0, 0, 0, 0, 0])


def small_world(delay_ms: int = 0):
    config = Config(path=Path("test.toml"), policy=PolicySpec(),
                    campaigns=(CampaignSpec(id="c", on=(CALL,), channel="sms", delay_ms=delay_ms),),
                    event_types=dict(EVENT_TYPES))
    profiles = Profiles(Path("p"), np.array([A, B], dtype=np.uint64), {})
    return config, profiles


def late_counts(data: bytes, *, delay_ms: int = 0, drain_first: bytes = b"") -> tuple[int, int]:
    """(core, model) late events after `drain_first` (then a drain) and `data`."""
    config, profiles = small_world(delay_ms)
    engine = Engine(config, World(profiles, {}, {}))
    model = ReferenceModel(config, profiles, {}, {})
    if drain_first:
        engine.replay(drain_first, drain=True)
        model.feed(drain_first)
        model.finish()
        model.drain()
    engine.replay(data)
    model.feed(data)
    model.finish()
    return engine.stats["totals"]["late_events"], model.late_events


# --------------------------------------------------------------------------- late events

@pytest.mark.parametrize("events,late", [
    ([T0, T0], 0),                          # ts == clock: on time
    ([T0, T0 - 1], 1),                      # one ms below the clock: late
    ([T0, T0 + 1, T0], 1),                  # the clock is the largest ts so far, not the last
    ([T0, T0 - 1, T0 - 1], 2),              # a late event does not move the clock back
    ([0, 0], 0),                            # ts 0 is a time like any other: the first is never late
])
def test_late_events_one_ms_either_side_of_the_clock(events, late):
    assert late_counts(b"".join(ev(t) for t in events)) == (late, late)


def test_the_clock_a_drain_moved_makes_earlier_events_late():
    # a delayed action drained at T0 + 1 h moves the clock there; an event at T0 + 1 min is late
    core, model = late_counts(ev(T0 + 60_000, msisdn=B), delay_ms=3_600_000, drain_first=ev(T0))
    assert core == model == 1


def test_bad_events_are_never_late():
    # a bad value does not move the clock and is not an event: only counted as bad
    data = ev(T0) + msgpack.packb([T0 - 5, 99, A]) + ev(T0)
    assert late_counts(data) == (0, 0)


def test_late_events_in_stats_json_checkpoints_and_reloads(tmp_path):
    config, profiles = small_world()
    engine = Engine(config, World(profiles, {}, {}))
    run = engine.replay(ev(T0) + ev(T0 - 1) + ev(T0 - 2), out=tmp_path / "out")
    assert run.stats["run"]["late_events"] == 2
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["run"]["late_events"] == 2
    # a second run counts its own; the totals go on
    assert engine.replay(ev(T0 - 3)).stats["run"]["late_events"] == 1
    assert engine.stats["totals"]["late_events"] == 3
    # a checkpoint carries the count
    engine.checkpoint(tmp_path / "checkpoint")
    again = Engine(config, World(profiles, {}, {}))
    again.restore(tmp_path / "checkpoint")
    assert again.stats["totals"]["late_events"] == 3
    assert again.replay(ev(T0 - 4)).stats["run"]["late_events"] == 1
    assert again._core.counts()["late_events"] == 4


def test_a_checkpoint_without_the_count_restores_it_as_zero():
    # checkpoints written before late events were counted have no such scalar
    config, profiles = small_world()
    engine = Engine(config, World(profiles, {}, {}))
    engine.replay(ev(T0) + ev(T0 - 1))
    scalars = engine._core.state_scalars()
    sections = dict(engine._core.state_sections())
    del scalars["late_events"]
    again = Engine(config, World(profiles, {}, {}))
    again._core.restore_state(scalars, sections)
    assert again._core.counts()["late_events"] == 0 and again.clock == T0


def test_a_reload_carries_the_count(tmp_path):
    from engine.world.gen import generate
    generated = generate(tmp_path / "world", subscribers=500, events=2_000, campaigns=2, seed=7)
    engine = Engine.from_config(generated.config)
    engine.replay(generated.traces[0])
    before = engine.stats["totals"]["late_events"]
    engine.replay(ev(engine.clock - 1) + ev(engine.clock - 60_000))
    assert engine.stats["totals"]["late_events"] == before + 2
    assert engine.reload().stats["totals"]["late_events"] == before + 2


def test_the_late_events_metric(tmp_path):
    from engine.service.metrics import DaemonMetrics
    config, profiles = small_world()
    engine = Engine(config, World(profiles, {}, {}))
    metrics = DaemonMetrics(engine, wall=lambda: 2e9)
    engine.replay(ev(T0) + ev(T0 - 1) + ev(T0) + ev(T0 - 60_000))
    metrics.observe(engine, input_bytes=1)
    exposed = metrics.exposition().decode().splitlines()
    assert "sigmatch_late_events_total 2.0" in exposed


# --------------------------------------------------------------------------- replay and check

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "crbt_school"
CONFIG = EXAMPLE / "campaigns.toml"
ADVICE = "sigmatch reads msgpack (docs/semantics.md)"
JSON_LINES = b"".join(b'{"ts": %d, "type": "CALL_MO_END", "msisdn": "13800000001"}\n' % (T0 + i) for i in range(50))


def sigmatch(*args):
    """The command as an operator runs it: (exit code, stdout, stderr lines)."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    return proc.returncode, proc.stdout, proc.stderr.splitlines()


def events(*times, type=CALL) -> bytes:
    return b"".join(ev(t, type=type) for t in times)


def gzipped(data: bytes) -> bytes:
    import gzip
    return gzip.compress(data, mtime=0)


def refused(tmp_path, files: dict, refusal: str, *, out_name="out"):
    """Write `files`, replay them in order: exit 1, exactly the one-line error, no output."""
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    code, stdout, stderr = sigmatch("replay", CONFIG, *paths, "--out", tmp_path / out_name)
    assert code == 1, (stdout, stderr)
    assert stderr == [f"sigmatch: error: {refusal}"]
    assert not (tmp_path / out_name).exists()     # refused before anything was created


@pytest.mark.parametrize("data,looks", [
    (JSON_LINES, "it looks like JSON lines (text)"),
    (b'[\n  {"ts": 1767225600000, "type": 1, "msisdn": 13800000001}\n]\n', "it looks like JSON (text)"),
    (b"\xef\xbb\xbfts,type,msisdn\r\n1767225600000,1,13800000001\r\n", "it looks like CSV (text)"),
    (b"ts;type;msisdn\n1767225600000;1;\xc8\xab\xc7\xf2\n", "it looks like CSV (text, not UTF-8)"),
    (b"call from 13800000001 at noon\n", "it looks like text"),
    # a configuration given as a trace: gen's opens with comments, whose commas read as CSV
    (b"# A synthetic world, 50,000 subscribers, 2 day(s)\n" * 9 + b"[engine]\nutc_offset = \"+08:00\"\n",
     "it looks like TOML (text)"),
    (b"[[campaign]]\nid = \"x\"\n", "it looks like TOML (text)"),
    (gzipped(events(T0, T0 + 1)), "it is gzip-compressed (only files named *.gz are decompressed)"),
    (b"PAR1" + bytes(100) + b"PAR1", "it looks like a Parquet file"),
])
def test_a_trace_of_another_format_is_refused_naming_it(tmp_path, data, looks):
    path = tmp_path / "trace.msgpack"
    refused(tmp_path, {"trace.msgpack": data}, f"{path}: not a msgpack event stream: {looks}; {ADVICE}")


def test_a_gzip_trace_named_gz_is_decompressed_and_replays(tmp_path):
    (tmp_path / "trace.msgpack.gz").write_bytes(gzipped(events(T0, T0 + 1)))
    code, stdout, stderr = sigmatch("replay", CONFIG, tmp_path / "trace.msgpack.gz", "--out", tmp_path / "out")
    assert code == 0, stderr
    assert stdout.startswith("2 events (")


def test_an_empty_trace_is_refused(tmp_path):
    refused(tmp_path, {"trace.msgpack": b""}, f"{tmp_path / 'trace.msgpack'}: no events: the file is empty")
    # a gzip of nothing is 20 bytes on disk: "the file is empty" would read as false
    refused(tmp_path, {"empty.msgpack.gz": gzip.compress(b"")},
            f"{tmp_path / 'empty.msgpack.gz'}: no events: it is empty once decompressed")
    refused(tmp_path, {"a.msgpack": b"", "b.msgpack": b""},
            f"no events: every trace is empty ({tmp_path / 'a.msgpack'}, {tmp_path / 'b.msgpack'})")


def test_an_empty_trace_beside_others_is_said_once(tmp_path):
    (tmp_path / "a.msgpack").write_bytes(events(T0, T0 + 1))
    (tmp_path / "b.msgpack").write_bytes(b"")
    code, stdout, stderr = sigmatch("replay", CONFIG, tmp_path / "a.msgpack", tmp_path / "b.msgpack",
                                    "--out", tmp_path / "out")
    assert code == 0, stderr
    # (the run's own warning, that no event's subscriber is a subscriber, is not the traces')
    stderr = [line for line in stderr if "sigmatch.traces" in line]
    assert len(stderr) == 1
    assert stderr[0].endswith(f"WARNING sigmatch.traces: {tmp_path / 'b.msgpack'}: the file is empty")


def test_event_times_in_seconds_are_refused(tmp_path):
    seconds = 1_767_225_600                 # 2026-01-01T00:00:00Z, in seconds
    path = tmp_path / "trace.msgpack"
    refused(tmp_path, {"trace.msgpack": events(seconds, seconds + 60, seconds + 120)},
            f"{path}: event times look like seconds, not milliseconds: the first, 1,767,225,600, is "
            "1970-01-21T10:53:45Z as ms and 2026-01-01T00:00:00Z as seconds; sigmatch reads ms since "
            "1970-01-01 UTC (docs/semantics.md)")


def test_times_before_2000_and_after_2100_warn_once_each(tmp_path):
    micro = T0 * 1000                                   # 2026-01-01 in microseconds
    (tmp_path / "trace.msgpack").write_bytes(events(T0, 5, 6, T0 + 1, micro, micro + 1, 7))
    code, stdout, stderr = sigmatch("replay", CONFIG, tmp_path / "trace.msgpack", "--out", tmp_path / "out")
    assert code == 0, stderr
    assert stdout.startswith("7 events (")
    name = tmp_path / "trace.msgpack"
    assert [line.split("WARNING sigmatch.traces: ", 1)[1] for line in stderr if "sigmatch.traces" in line] == [
        f"{name}: 3 of its 7 events are dated before 2000 (the first: ts 5, 1970-01-01T00:00:00Z); "
        "event times are ms since 1970-01-01 UTC (docs/semantics.md)",
        f"{name}: 2 of its 7 events are dated after 2100 (the first: ts 1,767,225,600,000,000, after the year "
        "9999, or 2026-01-01T00:00:00Z as microseconds); event times are ms since 1970-01-01 UTC (docs/semantics.md)",
    ]
    # late events: 5 and 6 after T0, 7 after the microseconds (T0 + 1 moved the clock on)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["run"]["late_events"] == 3 and ", 3 late), " in stdout.splitlines()[0]


def test_a_stream_of_bad_events_only_is_refused(tmp_path):
    path = tmp_path / "trace.msgpack"
    data = events(T0, T0 + 1, type=63) * 5 + msgpack.packb([-1, CALL, A])
    refused(tmp_path, {"trace.msgpack": data},
            f"{path}: no good event in its 11 values: 10 unknown_type (type), 1 out_of_range (ts); "
            "docs/semantics.md says what a good event is")


def test_values_that_are_not_events_are_refused(tmp_path):
    path = tmp_path / "trace.msgpack"
    refused(tmp_path, {"trace.msgpack": msgpack.packb(b"\x00" * 40) * 9 + bytes(4200)},
            f"{path}: not a msgpack event stream: none of its first 4,096 values is an array or a map, "
            f"as events are; {ADVICE}")


def test_a_stream_broken_before_any_event_is_refused(tmp_path):
    path = tmp_path / "trace.msgpack"
    refused(tmp_path, {"trace.msgpack": b"\xc1" + events(T0)},
            f"{path}: not a msgpack event stream: it breaks at byte 0 (a 0xc1 byte, which msgpack never uses, in the value that starts there) "
            f"before any event; {ADVICE}")


def test_the_rule_is_the_head_of_4096_values(tmp_path):
    # 4,096 bad values, then good events: refused whole, before anything is processed
    path = tmp_path / "trace.msgpack"
    refused(tmp_path, {"trace.msgpack": events(T0, type=63) * 4096 + events(T0, T0 + 1)},
            f"{path}: no good event in its first 4,096 values: 4,096 unknown_type (type); "
            "docs/semantics.md says what a good event is")
    # 4,095 of them: a good event is in the head, so it replays, every bad one a dead letter
    (tmp_path / "ok.msgpack").write_bytes(events(T0, type=63) * 4095 + events(T0, T0 + 1))
    code, stdout, stderr = sigmatch("replay", CONFIG, tmp_path / "ok.msgpack", "--out", tmp_path / "out-ok")
    assert code == 0, stderr
    assert stdout.startswith(f"2 events (4,095 bad in {4095 * len(events(T0)):,} bytes,")


def test_the_head_of_the_stream_reads_across_files(tmp_path):
    # a first trace with only bad values, too short to be the head alone; the next has events
    (tmp_path / "a.msgpack").write_bytes(events(T0, type=63) * 3)
    (tmp_path / "b.msgpack").write_bytes(events(T0, T0 + 1))
    code, stdout, stderr = sigmatch("replay", CONFIG, tmp_path / "a.msgpack", tmp_path / "b.msgpack",
                                    "--out", tmp_path / "out")
    assert code == 0, stderr
    assert stdout.startswith(f"2 events (3 bad in {3 * len(events(T0))} bytes,")


def test_an_event_split_across_files_is_not_judged_by_its_tail(tmp_path):
    # the second file is the tail of an event begun in the first: alone it holds no event
    data = events(T0, T0 + 1, T0 + 2)
    cut = len(data) - 3
    (tmp_path / "a.msgpack").write_bytes(data[:cut])
    (tmp_path / "b.msgpack").write_bytes(data[cut:])
    code, stdout, stderr = sigmatch("replay", CONFIG, tmp_path / "a.msgpack", tmp_path / "b.msgpack",
                                    "--out", tmp_path / "out")
    assert code == 0, stderr
    assert stdout.startswith("3 events (0 bad,")


def test_a_later_trace_of_another_format_is_refused(tmp_path):
    refused(tmp_path, {"a.msgpack": events(T0, T0 + 1), "b.jsonl": JSON_LINES},
            f"{tmp_path / 'b.jsonl'}: not a msgpack event stream: it looks like JSON lines (text); {ADVICE}")
    # a configuration, once described as CSV, still refused after a good trace
    refused(tmp_path, {"a.msgpack": events(T0, T0 + 1), "c.toml": b"# a, b\n[engine]\nx = 1\n"},
            f"{tmp_path / 'c.toml'}: not a msgpack event stream: it looks like TOML (text); {ADVICE}", out_name="out-toml")


def test_logfmt_is_text_not_toml():
    from loaders.sniff import _text_kind
    assert _text_kind(b"ts=1767225600000 msisdn=13800000001 type=SMS_MO\n") == ("text", False)
    assert _text_kind(b'id = "x"  # a campaign\n') == ("TOML", False)


def test_a_refused_trace_leaves_an_earlier_run_in_place(tmp_path):
    (tmp_path / "good.msgpack").write_bytes(events(T0, T0 + 1))
    (tmp_path / "trace.jsonl").write_bytes(JSON_LINES)
    assert sigmatch("replay", CONFIG, tmp_path / "good.msgpack", "--out", tmp_path / "out")[0] == 0
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*"))
    code, _, stderr = sigmatch("replay", CONFIG, tmp_path / "trace.jsonl", "--out", tmp_path / "out", "--overwrite")
    assert code == 1 and "not a msgpack event stream" in stderr[0]
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*")) == before


def test_check_reports_each_trace_and_refuses_as_replay_does(tmp_path):
    trace = EXAMPLE / "trace.msgpack"
    code, stdout, stderr = sigmatch("check", CONFIG, trace)
    assert code == 0, stderr
    assert stdout.splitlines()[-3:] == [
        "  traces, one stream in this order (the head of each: at most its first 4,096 values):",
        f"    {trace}: 966 bytes; its 24 values: 24 good events, 0 bad; event times 2026-10-05T01:30:00Z .. "
        "2026-11-04T03:10:00Z",
        "  traces: ok",
    ]
    (tmp_path / "trace.jsonl").write_bytes(JSON_LINES)
    code, stdout, stderr = sigmatch("check", CONFIG, trace, tmp_path / "trace.jsonl")
    assert code == 1
    assert stdout.splitlines()[-2:] == [f"    {tmp_path / 'trace.jsonl'}: {len(JSON_LINES):,} bytes; its "
                                        f"{len(JSON_LINES):,} values: 0 good events, {len(JSON_LINES):,} bad "
                                        f"({len(JSON_LINES):,} not_an_event)",
                                        "  traces: refused (the error follows)"]
    assert stderr == [f"sigmatch: error: {tmp_path / 'trace.jsonl'}: not a msgpack event stream: it looks like "
                      f"JSON lines (text); {ADVICE}"]
    # without traces, check is what it was
    code, stdout, stderr = sigmatch("check", CONFIG)
    assert code == 0 and "traces" not in stdout


def test_check_warns_of_implausible_times_without_failing(tmp_path):
    (tmp_path / "old.msgpack").write_bytes(events(1_000, 2_000))
    code, stdout, stderr = sigmatch("check", CONFIG, tmp_path / "old.msgpack")
    assert code == 0
    assert len(stderr) == 1 and "2 of its 2 events are dated before 2000 (the first: ts 1,000," in stderr[0]


# --------------------------------------------------------------------------- the service

def spool_judgement(tmp_path, data: bytes, stop=None):
    from loaders.sniff import judge_spool_file
    config, profiles = small_world()
    core = Engine(config, World(profiles, {}, {}))._core
    path = tmp_path / "spool-file.msgpack"
    path.write_bytes(data)
    with open(path, "rb", buffering=0) as f:
        return judge_spool_file(f, core, stop=stop)


TEXT = JSON_LINES * 4       # longer than the head of 4,096 values: read on to its end


@pytest.mark.parametrize("data,why", [
    (JSON_LINES, f"not a msgpack event stream: it looks like JSON lines (text); {ADVICE}"),
    (TEXT, f"not a msgpack event stream: it looks like JSON lines (text); {ADVICE}"),
    (gzipped(events(T0)), f"not a msgpack event stream: it is gzip-compressed (the service reads uncompressed "
                          f"msgpack only); {ADVICE}"),
    (bytes(10_000), f"not a msgpack event stream: none of its first 4,096 values is an array or a map, as events "
                    f"are; {ADVICE}"),
    (TEXT * 6 + b"\x93\x01", f"not a msgpack event stream: it looks like JSON lines (text); {ADVICE}"),
    (JSON_LINES + b"\xc1" + events(T0), f"not a msgpack event stream: it looks like JSON lines (text); {ADVICE}"),
    (events(1_767_225_600), "event times look like seconds, not milliseconds: the first, 1,767,225,600, is "
                            "1970-01-21T10:53:45Z as ms and 2026-01-01T00:00:00Z as seconds; sigmatch reads ms "
                            "since 1970-01-01 UTC (docs/semantics.md)"),
])
def test_the_service_sets_aside_what_is_not_an_event_stream(tmp_path, data, why):
    assert spool_judgement(tmp_path, data) == (why, [])


@pytest.mark.parametrize("data", [
    b"",                                        # empty: nothing to misread, done/ as before
    events(T0, type=63) * 3,                    # malformed events are an event stream: dead letters
    TEXT + events(T0),                          # a good event after the head: never set aside
    bytes(5_000) + events(T0),                  # ... after values that are not events
    b"\x93\x01",                                # only the start of an event the next file completes
    b"\xc1" + events(T0),                       # broken at once: reported where it breaks, as before
    msgpack.packb({"ts": T0, "x": bytes(70_000)}),  # ... by a value too large
])
def test_the_service_processes_what_may_hold_a_good_event(tmp_path, data):
    assert spool_judgement(tmp_path, data) == (None, [])


def test_the_service_warns_of_implausible_times_and_stops_reading_when_asked(tmp_path):
    why, warnings = spool_judgement(tmp_path, events(T0, 1_000))
    assert why is None and len(warnings) == 1 and warnings[0].startswith("1 of its 2 events is dated before 2000")
    # asked to stop while reading on: not judged (the daemon leaves the file for its next start)
    assert spool_judgement(tmp_path, TEXT, stop=lambda: True) == (None, [])


@pytest.fixture(scope="module")
def service_world(tmp_path_factory):
    from engine.world.gen import generate
    directory = tmp_path_factory.mktemp("service-world")
    generated = generate(directory, subscribers=2_000, events=6_000, campaigns=3, seed=3, trace_files=3)
    return generated.config, [path.read_bytes() for path in generated.traces]


def test_the_daemon_moves_such_files_to_rejected_and_processes_the_rest(service_world, tmp_path):
    from tests.test_daemon_hostile import expected_actions, actions, drained, fill, free_port, metric, start, \
        stop, wait_for
    config, traces = service_world
    spool, out, state = tmp_path / "spool", tmp_path / "out", tmp_path / "state"
    first_event = msgpack.Unpacker()
    first_event.feed(traces[0])
    first_event = msgpack.packb(next(iter(first_event)))
    seconds = events(1_767_225_600, 1_767_225_660)
    files = [
        ("t-01.msgpack", traces[0]),
        ("t-02.msgpack", JSON_LINES),
        ("t-03.msgpack", seconds),
        ("t-04.msgpack", gzipped(traces[1])),
        ("t-05.msgpack", events(T0, type=63) * 3),          # malformed events: dead letters
        ("t-06.msgpack", traces[1]),
        ("t-07.msgpack", b""),
        ("t-08.msgpack", TEXT + first_event),               # a good (and late) event after text
        ("t-09.msgpack", traces[2]),
    ]
    fill(spool, files)
    port = free_port()
    proc = start(config, spool, out, state, "--settle", "0", "--metrics", f"127.0.0.1:{port}")
    wait_for(lambda: drained(spool), "the spool to drain", proc)
    wait_for(lambda: metric(port, "sigmatch_spool_rejected_total") == 3, "the rejected files' metric", proc)
    code, log = stop(proc)
    assert code == 0, log[-3000:]
    assert "Traceback" not in log
    why = {
        "t-02.msgpack": f"not a msgpack event stream: it looks like JSON lines (text); {ADVICE}",
        "t-03.msgpack": "event times look like seconds, not milliseconds: the first, 1,767,225,600, is "
                        "1970-01-21T10:53:45Z as ms and 2026-01-01T00:00:00Z as seconds; sigmatch reads ms since "
                        "1970-01-01 UTC (docs/semantics.md)",
        "t-04.msgpack": f"not a msgpack event stream: it is gzip-compressed (the service reads uncompressed "
                        f"msgpack only); {ADVICE}",
    }
    rejected = spool / "rejected"
    assert sorted(p.name for p in rejected.iterdir()) == sorted([*why, *(f"{n}.reason" for n in why)])
    for name, reason in why.items():
        assert (rejected / name).read_bytes() == dict(files)[name]        # whole, as it came
        text = (rejected / f"{name}.reason").read_text()
        assert text.endswith(f" {reason}\n") and text.count("\n") == 1
        lines = [line for line in log.splitlines() if f"{name}: rejected" in line]
        assert len(lines) == 1 and lines[0].endswith(
            f"{name}: rejected, examined, not processed, moved to rejected/{name}: {reason}"), lines
    assert sorted(p.name for p in (spool / "done").iterdir()) == sorted(
        name for name, _ in files if name not in why)
    # everything else was processed as one stream: the same actions as its replay
    kept = [data for name, data in files if name not in why]
    assert actions(out) == expected_actions(config, kept)
    expected = Engine.from_config(config).replay(b"".join(kept)).stats["run"]
    stats = json.loads((out / "stats.json").read_text())["run"]
    assert stats["events"] == expected["events"]
    assert stats["late_events"] == expected["late_events"] >= 1
    assert stats["bad_events"]["unknown_type"] == 3


def test_traces_out_of_time_order_or_given_twice_are_warned_of(tmp_path):
    """helper-119: `check CONFIG day2 day1` said `traces: ok`, and so did one file given twice;
    replay then found half the events late. Both are warned of, on heads read cleanly; one
    millisecond earlier than the trace before it is out of order, the same millisecond not."""
    (tmp_path / "a.msgpack").write_bytes(events(T0 + 10, T0 + 11))
    for first, verdict in ((T0 + 9, True), (T0 + 10, False)):
        (tmp_path / "b.msgpack").write_bytes(events(first, T0 + 12))
        code, _, stderr = sigmatch("check", CONFIG, tmp_path / "a.msgpack", tmp_path / "b.msgpack")
        assert code == 0, stderr
        assert (f"{tmp_path / 'b.msgpack'}: its events begin at" in "\n".join(stderr)) is verdict, stderr
    code, _, stderr = sigmatch("check", CONFIG, tmp_path / "a.msgpack", tmp_path / "a.msgpack")
    assert code == 0
    assert (f"{tmp_path / 'a.msgpack'}: the same events as {tmp_path / 'a.msgpack'} before it (the file given twice, "
            "or a copy): read again, late") in "\n".join(stderr)
    # a copy under another name, compressed (helper-122), and thousands of repeats in one line
    (tmp_path / "c.msgpack.gz").write_bytes(gzipped(events(T0 + 10, T0 + 11)))
    code, _, stderr = sigmatch("check", CONFIG, tmp_path / "a.msgpack", tmp_path / "c.msgpack.gz")
    assert code == 0 and f"{tmp_path / 'c.msgpack.gz'}: the same events as {tmp_path / 'a.msgpack'}" in "\n".join(stderr)
    # the same warnings from replay, which then processes the traces as given
    code, _, stderr = sigmatch("replay", CONFIG, *[tmp_path / "a.msgpack"] * 500, "--out", tmp_path / "o")
    assert code == 0
    assert [line for line in stderr if "the same events as" in line][0].endswith("(498 other traces likewise)")
    assert sum("the same events as" in line for line in stderr) == 1
