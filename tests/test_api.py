"""The Python API end to end: sources, files, determinism, stream errors, stats."""
import json
import os
import stat

import msgpack
import numpy as np
import pytest

from engine import Engine, StreamError
from engine.api import TIMING_KEYS
from engine.world.gen import generate
from engine.records import ACTION_COLUMNS


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    directory = tmp_path_factory.mktemp("world")
    generated = generate(directory, subscribers=3_000, events=60_000, campaigns=8, seed=3)
    return generated.config, generated.traces[0]


def event_starts(data: bytes) -> list[int]:
    """The byte offset of every event of a trace, found by msgpack-python."""
    unpacker = msgpack.Unpacker()
    unpacker.feed(data)
    starts = [0]
    for _ in unpacker:
        starts.append(unpacker.tell())
    assert starts[-1] == len(data)
    return starts[:-1]


def files_bytes(out):
    """Every output file's bytes; stats.json's outside its `timing` block, the only wall-clock
    figures (SPEC §4)."""
    files = {p.relative_to(out).as_posix(): p.read_bytes()
             for p in sorted(out.rglob("*")) if p.is_file() and p.name != "stats.json"}
    stats = json.loads((out / "stats.json").read_text())
    assert set(stats.pop("timing")) == set(TIMING_KEYS)
    assert not set(TIMING_KEYS) & set(stats["run"])
    files["stats.json"] = json.dumps(stats, sort_keys=True).encode()
    return files


def test_replay_writes_channel_files_and_stats(world, tmp_path):
    config, trace = world
    engine = Engine.from_config(config)
    run = engine.replay(trace, out=tmp_path / "out", drain=True)
    assert len(run.actions) > 0
    out = tmp_path / "out"
    channels = {c.channel for c in engine.campaigns}
    assert len(channels) > 1 and set(run.action_columns()["channel"]) == channels
    assert not list(out.rglob(".*.tmp"))
    seqs = []
    for channel in channels:
        csvs = sorted((out / channel).glob("actions-*.csv"))
        assert csvs, channel
        header = csvs[0].read_text().splitlines()[0]
        assert header == ",".join(ACTION_COLUMNS)
        lines = [line for p in csvs for line in p.read_text().splitlines()[1:]]
        assert all(line.split(",")[4] == channel for line in lines)
        in_channel = [int(line.split(",")[0]) for line in lines]
        assert in_channel == sorted(in_channel)
        seqs += in_channel
    # seq is gap-free from 1 over the actions of every channel.
    assert sorted(seqs) == list(range(1, len(run.actions) + 1))
    for p in out.rglob("*"):
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == 0o640
    stats = json.loads((out / "stats.json").read_text())
    assert stats["run"]["events"] == 60_000
    assert set(stats["campaigns"]) == {c.id for c in engine.campaigns}
    assert sum(f["sent"] + f["control"] + f["global_control"] for f in stats["campaigns"].values()) == len(run.actions)


def test_same_bytes_whatever_the_chunking(world, tmp_path):
    config, trace = world
    data = trace.read_bytes()
    outputs = []
    for i, chunk in enumerate([1 << 22, 4093, 77]):
        out = tmp_path / f"out{i}"
        chunks = (data[j:j + chunk] for j in range(0, len(data), chunk))
        Engine.from_config(config).replay(chunks, out=out, drain=True)
        outputs.append(files_bytes(out))
    assert outputs[0] == outputs[1] == outputs[2]
    assert any(name.startswith("sms/") for name in outputs[0])


def test_sources_paths_bytes_and_split_files(world, tmp_path):
    config, trace = world
    data = trace.read_bytes()
    cut = len(data) // 2 + 7          # an event straddles the two files
    a, b = tmp_path / "a.msgpack", tmp_path / "b.msgpack"
    a.write_bytes(data[:cut])
    b.write_bytes(data[cut:])
    whole = Engine.from_config(config).replay(trace, drain=True).actions
    two = Engine.from_config(config).replay([a, b], drain=True).actions
    raw = Engine.from_config(config).replay(data, drain=True).actions
    assert np.array_equal(whole, two) and np.array_equal(whole, raw)


def test_tables_and_arrays(world):
    config, trace = world
    run = Engine.from_config(config).replay(trace, drain=True)
    table = run.actions_table()
    assert table.column_names == list(ACTION_COLUMNS)
    assert table.num_rows == len(run.actions)
    frame = run.actions_frame()
    assert list(frame.columns) == list(ACTION_COLUMNS)
    cols = run.action_columns()
    assert set(cols["kind"]) <= {"send", "control", "global_control"}


def test_pending_actions_wait_for_the_next_replay(world):
    config, trace = world
    engine = Engine.from_config(config)
    first = engine.replay(trace)
    assert engine.pending > 0
    pending = engine.pending
    drained = engine.drain()
    assert engine.pending == 0
    assert len(drained.actions) <= pending
    assert drained.actions["seq"][0] == first.actions["seq"][-1] + 1 if len(drained.actions) else True


def test_corrupt_stream_keeps_what_was_emitted(world, tmp_path):
    config, trace = world
    data = trace.read_bytes()
    starts = event_starts(data)
    cut = starts[len(starts) // 2]        # an event boundary in the middle of the trace
    broken = data[:cut] + b"\xc1" + data[cut:]
    engine = Engine.from_config(config)
    with pytest.raises(StreamError) as info:
        engine.replay(broken, out=tmp_path / "out")
    assert info.value.offset == cut
    assert f"{cut:,}" in str(info.value)
    emitted = info.value.run.actions
    rows = sum(len(p.read_text().splitlines()) - 1 for p in (tmp_path / "out").rglob("actions-*.csv"))
    assert rows == len(emitted) > 0
    assert not list((tmp_path / "out").rglob(".*.tmp"))


@pytest.mark.parametrize("tail, reason", [
    (b"\xc1", "corrupt"), (b"\xdb\xff\xff\xff\xff", "too_large"), (b"\x93\x01", "truncated")])
def test_stream_errors_name_their_reason(world, tail, reason):
    """Operators read the reason's name, never a status number."""
    config, trace = world
    data = trace.read_bytes()
    with pytest.raises(StreamError) as info:
        Engine.from_config(config).replay(data + tail)
    assert info.value.reason == reason
    assert str(info.value).startswith(f"event stream broken at byte offset {len(data):,}: {reason} (")
    assert "status" not in str(info.value)


@pytest.mark.parametrize("tail, reason", [
    (b"\xc1", "corrupt"), (b"\xdb\xff\xff\xff\xff", "too_large"), (b"\x93\x01", "truncated")])
@pytest.mark.parametrize("chunk", [7, 4096, None])
def test_a_broken_stream_s_stats_count_the_bytes_before_the_break(world, tail, reason, chunk):
    """stats.json's `bytes` are those processed: up to the broken event, whatever was read past
    it (a chunk holds more), so the same for any chunking; `stopped` says why and where."""
    config, trace = world
    data = trace.read_bytes()
    # more good events after the break, which a big chunk reads and a small one does not (a
    # truncated stream ends in its broken event)
    broken = data + tail + (b"" if reason == "truncated" else data)
    source = broken if chunk is None else (broken[k:k + chunk] for k in range(0, len(broken), chunk))
    with pytest.raises(StreamError) as info:
        Engine.from_config(config).replay(source)
    run = info.value.stats["run"]
    assert run["bytes"] == len(data) and run["events"] == len(event_starts(data))
    assert run["stopped"] == {"reason": reason, "offset": len(data), "trace": None, "trace_offset": None}


def test_a_stream_read_to_its_end_counts_every_byte_and_stopped_nothing(world):
    config, trace = world
    data = trace.read_bytes()
    stats = Engine.from_config(config).replay((data[k:k + 999] for k in range(0, len(data), 999))).stats
    assert stats["run"]["bytes"] == len(data) and stats["run"]["stopped"] is None


def test_an_interrupted_run_s_stats_json_says_so(world, tmp_path):
    """Ctrl-C (or SIGTERM, which the CLI makes one) part-way: the files and stats.json of what
    was processed, stats.json saying where the run was stopped; an event cut by the last chunk
    fed is not counted in its bytes."""
    config, trace = world
    data = trace.read_bytes()
    starts = event_starts(data)
    cut = starts[len(starts) // 2] + 3        # inside an event

    def interrupted():
        yield data[:cut]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Engine.from_config(config).replay(interrupted(), out=tmp_path / "out")
    run = json.loads((tmp_path / "out" / "stats.json").read_text())["run"]
    assert run["bytes"] == cut - 3 and run["events"] == len(starts) // 2
    assert run["stopped"] == {"reason": "interrupted", "offset": cut - 3, "trace": None, "trace_offset": None}


def _interrupt_at_the_first_count(monkeypatch):
    """A real SIGINT, sent to this process as the first records taken from the core are counted
    by day (where helper-111 sent one)."""
    import signal
    from engine import api
    real, sent = api._DayCounts.add, []

    def add(self, *args, **kwargs):
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(api._DayCounts, "add", add)


def test_an_interrupt_while_records_are_counted_is_acted_on_once_they_are_handed_over(world, tmp_path, monkeypatch):
    """Ctrl-C between taking records from the core and handing them to the writer: the batch
    was lost while stats.json counted it (actions no file held). The signal is now acted on
    once the batch is counted and handed over: the files hold what stats.json counts."""
    config, trace = world
    _interrupt_at_the_first_count(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        Engine.from_config(config).replay([trace], out=tmp_path / "out")
    run = json.loads((tmp_path / "out" / "stats.json").read_text())["run"]
    rows = sum(len(p.read_text().splitlines()) - 1 for p in (tmp_path / "out").rglob("actions-*.csv"))
    assert run["actions"] == rows > 0 and run["stopped"]["reason"] == "interrupted"


def test_a_handler_installed_outside_python_is_left_alone(monkeypatch):
    """signal.getsignal says None for a handler a C library installed: it cannot be put back by
    signal.signal (TypeError), so that signal is not held."""
    import signal
    from engine.api import interrupts_held
    real = signal.getsignal
    monkeypatch.setattr(signal, "getsignal", lambda n: None if n == signal.SIGTERM else real(n))
    before = real(signal.SIGTERM)
    with interrupts_held():
        assert real(signal.SIGTERM) is before and real(signal.SIGINT) is not signal.default_int_handler
    assert real(signal.SIGINT) is signal.default_int_handler and real(signal.SIGTERM) is before


def test_what_stopped_a_stream_is_named_by_its_kind():
    """run.stopped's reason and offset for each way a stream ends early: the broken event's
    offset for a StreamError; the end of what was fed, less an incomplete event, otherwise
    (out of memory names no event). An OSError is an output file's as often as a source's:
    `error`, not `unreadable`, which a trace's LoadError alone is."""
    from engine.api import _where_stopped
    from engine.errors import LoadError

    class Fed:
        next_offset, carried, error_offset = 1_000, 10, 450

    cases = [(StreamError(450, "corrupt"), None, 450, "corrupt"),
             (MemoryError(), None, 990, "out_of_memory"),
             (None, MemoryError(), 990, "out_of_memory"),
             (None, KeyboardInterrupt(), 990, "interrupted"),
             (None, LoadError("t.msgpack.gz: cannot read trace"), 990, "unreadable"),
             (None, OSError(28, "No space left on device"), 990, "error"),
             (None, ValueError("a caller's source"), 990, "error")]
    for error, broken_off, offset, reason in cases:
        assert _where_stopped(Fed(), error, broken_off, ()) == (
            offset, {"reason": reason, "offset": offset, "trace": None, "trace_offset": None}), (error, broken_off)
    assert _where_stopped(Fed(), None, None, ()) == (990, None)


def test_truncated_stream_is_an_error(world):
    config, trace = world
    data = trace.read_bytes()
    with pytest.raises(StreamError) as info:
        Engine.from_config(config).replay(data[:-3])
    assert info.value.offset == event_starts(data)[-1]


def test_bad_events_go_to_dead_letters(world, tmp_path):
    config, trace = world
    bad = msgpack.packb([1, 99, 13800000000]) + msgpack.packb("nope")
    data = bad + trace.read_bytes()
    run = Engine.from_config(config).replay(data, out=tmp_path / "out")
    assert [int(o) for o in run.dead_letters["offset"]] == [0, len(msgpack.packb([1, 99, 13800000000]))]
    text = next((tmp_path / "out" / "dead_letters").glob("*.csv")).read_text().splitlines()
    assert text[0] == "offset,reason,field,count,bytes_hex"
    assert text[1] == f"0,unknown_type,type,1,{msgpack.packb([1, 99, 13800000000]).hex()}"
    assert text[2] == f"{len(msgpack.packb([1, 99, 13800000000]))},not_an_event,,1,{msgpack.packb('nope').hex()}"
    assert run.stats["run"]["bad_events"]["unknown_type"] == 1
    assert run.stats["run"]["bad_events"]["not_an_event"] == 1
    assert run.stats["run"]["bad_events_by_field"] == {"not_an_event": {"": 1}, "unknown_type": {"type": 1}}
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["run"]["bad_events_by_field"] == run.stats["run"]["bad_events_by_field"]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_other_formats(world, tmp_path, fmt):
    config, trace = world
    run = Engine.from_config(config).replay(trace, out=tmp_path / "out", drain=True, format=fmt)
    files = list((tmp_path / "out").glob(f"*/actions-*.{fmt}"))
    assert {f.parent.name for f in files} == {c.channel for c in run.campaigns}
    if fmt == "parquet":
        import pyarrow.parquet as pq
        n = sum(pq.read_table(f).num_rows for f in files)
    else:
        n = sum(len(f.read_text().splitlines()) for f in files)
    assert n == len(run.actions)


def test_umask_does_not_widen_or_narrow_modes(world, tmp_path):
    config, trace = world
    old = os.umask(0o077)
    try:
        Engine.from_config(config).replay(trace, out=tmp_path / "out", drain=True)
    finally:
        os.umask(old)
    for p in (tmp_path / "out").rglob("*"):
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == 0o640


def test_output_directories_0750_and_files_0640_under_umask_022(world, tmp_path):
    """Issue 8 item 3: the umask most services run with would make them world-readable."""
    config, trace = world
    old = os.umask(0o022)
    try:
        out = tmp_path / "new" / "out"            # parents the sinks create too
        bad = msgpack.packb("not an event")
        Engine.from_config(config).replay(bad + trace.read_bytes(), out=out, drain=True)
    finally:
        os.umask(old)
    made = [tmp_path / "new", out, *out.rglob("*")]
    directories = {p.relative_to(tmp_path) for p in made if p.is_dir()}
    assert {"new/out/dead_letters", "new/out/conversions"} <= {str(d) for d in directories}
    assert {stat.S_IMODE(p.stat().st_mode) for p in made if p.is_dir()} == {0o750}
    assert {stat.S_IMODE(p.stat().st_mode) for p in made if p.is_file()} == {0o640}


def test_engine_stats_keep_totals_and_the_last_run(world):
    config, trace = world
    engine = Engine.from_config(config)
    assert engine.stats["run"] is None
    engine.replay(trace)
    data = trace.read_bytes()
    engine.replay(data[:event_starts(data)[10]])
    stats = engine.stats
    assert stats["run"]["events"] == 10
    assert stats["totals"]["events"] == 60_010 and stats["totals"]["runs"] == 2
    assert set(stats["campaigns"]) == {c.id for c in engine.campaigns}


def test_gzip_traces_read_like_plain_ones(world, tmp_path):
    import gzip
    config, trace = world
    packed = tmp_path / "trace.msgpack.gz"
    packed.write_bytes(gzip.compress(trace.read_bytes()))
    plain = Engine.from_config(config).replay(trace, drain=True).actions
    zipped = Engine.from_config(config).replay(packed, drain=True).actions
    assert np.array_equal(plain, zipped) and len(plain)


def _second_actions_batch_fails(monkeypatch) -> list:
    """SinkSet.write_actions failing with ENOSPC on its second batch, before writing any of it;
    returns the list of the batches' sizes it was handed."""
    from engine.sinks import SinkSet
    real, calls = SinkSet.write_actions, []

    def failing(self, records):
        calls.append(len(records))
        if len(calls) == 2:
            raise OSError(28, "No space left on device", "out/sms/actions-00000002.csv")
        real(self, records)

    monkeypatch.setattr(SinkSet, "write_actions", failing)
    return calls


def test_a_sink_error_on_the_writing_thread_is_the_replays_error(world, tmp_path, monkeypatch):
    """Files are written on a thread of their own (engine.sinks.SinkThread): its error ends
    the replay in the caller's thread, once, with the files finished so far complete, the
    open ones removed, no stats.json (it would count actions no file holds; on a full disk
    its own error hid the first one) and no thread left behind."""
    import threading
    config, trace = world
    calls = _second_actions_batch_fails(monkeypatch)
    monkeypatch.setattr("engine.api.SINK_BATCH", 1)         # a batch per piece: the error comes mid-run
    data = trace.read_bytes()
    pieces = [data[i:i + (1 << 16)] for i in range(0, len(data), 1 << 16)]
    engine = Engine.from_config(config)
    with pytest.raises(OSError) as info:
        engine.replay(pieces, out=tmp_path / "out", drain=True)
    assert info.value.errno == 28 and "actions-00000002" in str(info.value)
    assert len(calls) == 2          # nothing handed over after the error is written
    assert not (tmp_path / "out" / "stats.json").exists()
    assert list((tmp_path / "out").rglob("actions-*.csv"))      # the first batch's files
    assert not list((tmp_path / "out").rglob(".*.tmp"))
    assert not [t for t in threading.enumerate() if t.name == "sinks"]


def test_files_written_on_the_thread_are_those_written_in_line(world, tmp_path, monkeypatch):
    config, trace = world
    Engine.from_config(config).replay([trace], out=tmp_path / "thread", drain=True)
    monkeypatch.setattr("engine.api.SinkThread", _InLine)
    Engine.from_config(config).replay([trace], out=tmp_path / "inline", drain=True)
    files = sorted(p.relative_to(tmp_path / "thread") for p in (tmp_path / "thread").rglob("*.csv"))
    assert files and files == sorted(p.relative_to(tmp_path / "inline") for p in (tmp_path / "inline").rglob("*.csv"))
    for name in files:
        assert (tmp_path / "thread" / name).read_bytes() == (tmp_path / "inline" / name).read_bytes()


class _InLine:
    """SinkThread's interface, writing at once in the caller's thread."""

    error = None        # an error is raised where it happens, in the caller
    dropped = False

    def __init__(self, sinks):
        self.write_actions = sinks.write_actions
        self.write_conversions = sinks.write_conversions
        self.write_dead_letters = sinks.write_dead_letters

    def finish(self, interrupted=False):
        pass


def test_a_file_too_large_ends_replay_in_one_line_naming_it_with_or_without_workers(world, tmp_path):
    """Under a file-size limit (EFBIG, as a full disk gives ENOSPC) one process went on to
    write stats.json, said *its* error instead of the actions file's, and left both temporary
    files; 2 workers named the actions file. Both now say the file that could not be written,
    keep the files finished before it, and leave no temporary file and no stats.json."""
    import resource
    import subprocess
    import sys
    config, trace = world

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))      # below the largest actions file

    said, kept = {}, {}
    for workers in (1, 2):
        out = tmp_path / f"out-{workers}"
        done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(config), str(trace), "--out", str(out),
                               "--workers", str(workers)], capture_output=True, text=True, timeout=300,
                              preexec_fn=limited)
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].endswith(": File too large"), lines
        said[workers] = lines[0].replace(str(out), "OUT")
        assert "/.actions-" in said[workers] and "stats.json" not in said[workers], said[workers]
        assert not (out / "stats.json").exists()
        assert not [p for p in out.rglob(".*") if p.name != ".sigmatch-out.lock"]
        kept[workers] = {p.relative_to(out): p.read_bytes() for p in out.rglob("actions-*")}
    assert said[1] == said[2] and kept[1] == kept[2] and kept[1]

    # a limit every actions file fits but stats.json does not: the files complete, stats.json
    # named, its temporary file gone (it was left, and with it the open files)
    def limited_stats():
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))

    whole = tmp_path / "whole"
    assert subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(config), str(trace), "--out", str(whole)],
                          capture_output=True, text=True, timeout=300).returncode == 0
    assert max(p.stat().st_size for p in whole.rglob("actions-*")) < 16384 < (whole / "stats.json").stat().st_size
    for workers in (1, 2):
        out = tmp_path / f"stats-{workers}"
        done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(config), str(trace), "--out", str(out),
                               "--workers", str(workers)], capture_output=True, text=True, timeout=300,
                              preexec_fn=limited_stats)
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [f"sigmatch: error: {out}/.stats.json.tmp: File too large"]
        assert not (out / "stats.json").exists()
        assert not [p for p in out.rglob(".*") if p.name != ".sigmatch-out.lock"]
        assert ({p.relative_to(out): p.read_bytes() for p in out.rglob("*.csv")}
                == {p.relative_to(whole): p.read_bytes() for p in whole.rglob("*.csv")})


def test_a_sink_error_with_workers_leaves_what_one_process_leaves(world, tmp_path, monkeypatch):
    """The merge of `replay --workers N` writes on the same SinkThread: a file that cannot be
    written mid-run ends it with that error, the files finished before it complete, the open
    ones removed and no stats.json, as in one process."""
    import threading
    from engine import workers as sharded
    config, trace = world
    calls = _second_actions_batch_fails(monkeypatch)
    monkeypatch.setattr("engine.workers.SINK_BATCH", 1)      # a batch per merge: the error comes mid-run
    monkeypatch.setattr("engine.api.SINK_BATCH", 1)
    left = {}
    for workers in (1, 2):
        calls.clear()
        out = tmp_path / f"out-{workers}"
        with pytest.raises(OSError) as info:
            sharded.replay(config, [trace], out, workers=workers, progress=False)
        assert info.value.errno == 28
        assert not (out / "stats.json").exists()
        assert not list(out.rglob(".*.tmp"))
        left[workers] = sorted(p.relative_to(out) for p in out.rglob("actions-*.csv"))
        assert left[workers]
    assert not [t for t in threading.enumerate() if t.name == "sinks"]


def test_an_interruption_that_drops_the_last_batches_writes_no_stats_json(world, tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM) while the writer drains drops the batches not yet begun
    (SinkThread.finish): the files written are completed, and stats.json, which would count
    the dropped actions, is not written; the interruption goes on."""
    config, trace = world

    class Interrupted(_InLine):
        dropped = False

        def __init__(self, sinks):
            super().__init__(sinks)
            self.write_actions = lambda records: None      # the last batches, never begun

        def finish(self, interrupted=False):
            self.dropped = True
            raise KeyboardInterrupt

    monkeypatch.setattr("engine.api.SinkThread", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        Engine.from_config(config).replay([trace], out=tmp_path / "out", drain=True)
    assert not (tmp_path / "out" / "stats.json").exists()
    assert not list((tmp_path / "out").rglob(".*.tmp"))
    # without the drop, the same interruption writes stats.json as before
    monkeypatch.setattr(Interrupted, "finish", lambda self, interrupted=False: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        Engine.from_config(config).replay([trace], out=tmp_path / "again", drain=True)
    assert (tmp_path / "again" / "stats.json").is_file()


def test_a_file_that_fails_half_written_is_removed_not_completed(world, tmp_path, monkeypatch):
    """A write that fails in the middle of a file (the disk fills after half its rows) leaves
    that file half made: it is removed, never renamed to its final name as if complete."""
    from engine import sinks as sink_module
    config, trace = world
    real, calls, failed = sink_module._SinkFile.write, [], []

    def half(self, records, rendered=None, start=0):
        calls.append(len(records))
        if len(calls) == 2 and len(records) > 1:
            real(self, records[:len(records) // 2], rendered, start)
            failed.append(self.path)
            raise OSError(28, "No space left on device")
        real(self, records, rendered, start)

    monkeypatch.setattr(sink_module._SinkFile, "write", half)
    monkeypatch.setattr("engine.api.SINK_BATCH", 1)
    with pytest.raises(OSError):
        Engine.from_config(config).replay([trace], out=tmp_path / "out", drain=True)
    assert failed and not failed[0].exists()
    assert not list((tmp_path / "out").rglob(".*.tmp")) and not (tmp_path / "out" / "stats.json").exists()
