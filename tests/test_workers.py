"""`sigmatch replay --workers N` (engine.workers, issue 14): the output directory is one
process's, every file byte for byte and stats.json outside `timing`, on random worlds
(late events, timers falling due at other shards' events and at the drain, budgets and
max_pending that bind, files cut anywhere) and on a `sigmatch gen` world whose budgets and
max_pending run out mid-run; a stream that breaks half-way breaks the same way; a worker
that dies fails the run with one line naming it, and leaves no stats.json, no process and
no shared memory behind.

Every random world forks workers twice, so the worlds are fewer than
tests/test_equivalence.py's (which holds the core to the model)."""
from __future__ import annotations

import dataclasses
import gzip
import json
import multiprocessing
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from engine import workers as sharded
from engine._core import shard_block_size, shards_of
from engine.api import Engine
from engine.errors import LoadError, StreamError
from engine.language.config import load_config
from engine.world.gen import generate
from tests.worlds import worlds, write_world

ROOT = Path(__file__).resolve().parent.parent


# ---- helpers ----------------------------------------------------------------------------

def outcome(directory: Path) -> dict:
    """Every file under `directory` by relative path: (mode, bytes), stats.json parsed and
    without its wall-clock `timing`; not the lock a replay holds on it (not output)."""
    found = {}
    for path in sorted(Path(directory).rglob("*")):
        if not path.is_file() or path.name == ".sigmatch-out.lock":
            continue
        name = path.relative_to(directory).as_posix()
        mode = stat.S_IMODE(path.stat().st_mode)
        if name == "stats.json":
            stats = json.loads(path.read_text())
            stats.pop("timing")
            found[name] = (mode, stats)
        else:
            found[name] = (mode, path.read_bytes())
    return found


def assert_same_outcome(got: dict, expected: dict, what: str) -> None:
    assert sorted(got) == sorted(expected), what
    for name in expected:
        assert got[name] == expected[name], f"{what}: {name} differs"


def cut_into_files(data: bytes, cuts, directory: Path) -> list[Path]:
    """`data` as consecutive trace files cut at `cuts` (anywhere, inside an event too): each
    file is a chunk of its own, so the workers hand over their records at each cut."""
    directory.mkdir(parents=True, exist_ok=True)
    edges = [0] + sorted({c for c in cuts if 0 < c < len(data)}) + [len(data)]
    paths = []
    for i, (a, b) in enumerate(zip(edges, edges[1:])):
        path = directory / f"trace-{i}.msgpack"
        path.write_bytes(data[a:b])
        paths.append(path)
    return paths


def one_process(config: Path, traces, out: Path, format=None):
    """What `sigmatch replay` does in one process: the StreamError it raises, or None."""
    try:
        Engine.from_config(config).replay(list(traces), out=out, drain=True, keep=False, format=format)
    except StreamError as e:
        return e
    return None


def with_workers(config: Path, traces, out: Path, workers: int, format=None):
    try:
        sharded.replay(config, list(traces), out, workers=workers, format=format)
    except StreamError as e:
        return e
    return None


def event_boundary_past(data: bytes, offset: int) -> int:
    """The first offset at or past `offset` where an event of the trace `data` starts."""
    unpacker = msgpack.Unpacker()
    unpacker.feed(data)
    at = 0
    while at < offset:
        next(unpacker)
        at = unpacker.tell()
    return at


def funnel_total(stats: dict, key: str) -> int:
    return sum(f[key] for f in stats["campaigns"].values())


# ---- random worlds ----------------------------------------------------------------------

# A written world loads as drawn: what the property test below replays from files is the
# world tests/test_equivalence.py checks against the model.
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(w=worlds())
def test_written_worlds_load_as_drawn(w, tmp_path_factory):
    config, trace = write_world(w, tmp_path_factory.mktemp("world"))
    loaded = load_config(config)
    assert trace.read_bytes() == w.trace
    for f in dataclasses.fields(w.config):
        if f.name in ("path", "given_path", "profiles", "lists", "areas", "sha256", "meaning_sha256"):   # where read, digests
            continue
        expected = getattr(w.config, f.name)
        if f.name == "campaigns":       # a file may not give these without convert_on; they mean nothing
            expected = tuple(c if c.convert_on else replace(c, convert_arg=None, convert_within_ms=None)
                             for c in expected)
        assert getattr(loaded, f.name) == expected, f.name


@st.composite
def squeezed(draw, w):
    """`w`'s configuration, now and then with budgets on every campaign and channel and a
    max_pending of a few timers: what the workers decide together, made to bind more often
    than the random worlds alone make it; some budgets are large enough that a worker far
    enough from them sends without waiting for the others."""
    config = w.config
    budgets = draw(st.sampled_from(["", "campaigns", "channels", "both"]))
    if budgets in ("campaigns", "both"):
        config = replace(config, campaigns=tuple(
            replace(c, daily_budget=draw(st.sampled_from([c.daily_budget, 1, 1, 2, 8])),
                    total_budget=draw(st.sampled_from([c.total_budget, 1, 2, 4, 12])))
            for c in config.campaigns))
    if budgets in ("channels", "both"):
        config = replace(config, channel_budgets={name: draw(st.sampled_from([1, 1, 2, 3, 10]))
                                                  for name in config.channels})
    if budgets == "channels":       # the channels' budgets alone, so that they are the ones reached
        config = replace(config, campaigns=tuple(replace(c, daily_budget=None, total_budget=None)
                                                 for c in config.campaigns))
    if draw(st.booleans()):
        config = replace(config, max_pending=draw(st.sampled_from([1, 2, 3, 5])))
    return replace(w, config=config)


# A failing world is printed whole rather than shrunk: every step of shrinking forks workers.
# The "thorough" profile (tests/conftest.py) runs 400 worlds.
@settings(max_examples=max(30, settings().max_examples // 5), deadline=None,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), w=worlds())
def test_workers_write_what_one_process_writes(data, w, tmp_path_factory):
    w = data.draw(squeezed(w))
    directory = tmp_path_factory.mktemp("sharded")
    config, trace = write_world(w, directory / "world")
    traces = cut_into_files(w.trace, data.draw(st.lists(st.integers(0, len(w.trace)), max_size=3)), directory)
    fmt = data.draw(st.sampled_from([None, None, "jsonl", "parquet"]))
    error = one_process(config, traces, directory / "one", fmt)
    expected = outcome(directory / "one")
    # now and then the smallest ring of pending counts (16 event positions), so that a worker
    # is held back by the slowest and max_pending reads counts the ring is about to reuse
    # (the forked workers inherit the module's value)
    ring, sharded.RING_BITS = sharded.RING_BITS, data.draw(st.sampled_from([sharded.RING_BITS, 4]))
    try:
        for k in (2, 3):
            got = with_workers(config, traces, directory / f"workers-{k}", k, fmt)
            assert str(got) == str(error)
            assert_same_outcome(outcome(directory / f"workers-{k}"), expected, f"{k} workers")
    finally:
        sharded.RING_BITS = ring


def test_the_squeezed_worlds_reach_what_the_workers_share(tmp_path_factory):
    """The worlds above are only worth replaying on workers if they reach what the workers
    decide together or must agree on: over a fixed draw (one process, no workers), some
    have late events, timers, a timer fired by an event, a campaign's budget and max_pending
    refusing, and actions made by the drain. (Their few sends seldom reach a channel's budget
    the campaigns' own leave: test_shared_limits_running_out_mid_run shows it reached.)"""
    seen = []

    @settings(max_examples=40, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data(), w=worlds())
    def draw(data, w):
        w = data.draw(squeezed(w))
        directory = tmp_path_factory.mktemp("reach")
        config, trace = write_world(w, directory / "world")
        engine = Engine.from_config(config)
        run = engine.replay([trace], keep=True)
        drained = engine.drain()
        stats = run.stats
        seen.append({
            "late": stats["run"]["late_events"],
            "scheduled": funnel_total(stats, "scheduled"),
            "fired at an event": int(np.count_nonzero(run.actions["ts"] != run.actions["trigger_ts"])),
            "campaign budget": funnel_total(engine.stats, "suppressed_campaign_budget"),
            "overflow": funnel_total(engine.stats, "overflow"),
            "pending at the end": stats["run"]["pending"],
            "drained": len(drained.actions),
        })

    draw()
    reached = {key: sum(1 for s in seen if s[key]) for key in seen[0]}
    assert all(reached.values()), reached


# ---- a generated world whose shared limits run out mid-run --------------------------------

TIGHT = {
    'sms = { daily_budget = 6_000 }': 'sms = { daily_budget = 300 }',       # a channel's, per day
    'daily_budget = 150': 'daily_budget = 3',                               # topup_thanks's own
    'total_budget = 750': 'total_budget = 5',
    'profiles   = "profiles.parquet"': 'profiles   = "profiles.parquet"\nmax_pending = 20',
}


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    """A `sigmatch gen` world (5,000 subscribers, 60,000 events) with its budgets and
    max_pending tightened, and its trace in three files cut inside events."""
    directory = tmp_path_factory.mktemp("gen")
    generated = generate(directory, subscribers=5_000, events=60_000, seed=3)
    text = generated.config.read_text()
    for old, new in TIGHT.items():
        assert old in text, old
        text = text.replace(old, new)
    config = directory / "tight.toml"
    config.write_text(text)
    data = generated.traces[0].read_bytes()
    traces = cut_into_files(data, [len(data) // 3 + 7, 2 * len(data) // 3 + 11], directory / "traces")
    return config, traces


def test_shared_limits_running_out_mid_run(tight, tmp_path):
    config, traces = tight
    assert one_process(config, traces, tmp_path / "one") is None
    expected = outcome(tmp_path / "one")
    stats = expected["stats.json"][1]
    # the decisions the workers share were made, and made both ways
    assert funnel_total(stats, "suppressed_campaign_budget") > 0
    assert funnel_total(stats, "suppressed_channel_budget") > 0
    assert funnel_total(stats, "overflow") > 0
    assert funnel_total(stats, "scheduled") > 0 and stats["run"]["actions"] > 0
    for k in (2, 3):
        assert with_workers(config, traces, tmp_path / f"workers-{k}", k) is None
        assert_same_outcome(outcome(tmp_path / f"workers-{k}"), expected, f"{k} workers")


def test_a_ring_of_sixteen_positions(tight, tmp_path, monkeypatch):
    """The smallest ring of pending counts: no worker runs more than 15 events ahead of the
    slowest, and max_pending reads the others' counts from slots about to be reused."""
    config, traces = tight
    assert one_process(config, traces, tmp_path / "one") is None
    monkeypatch.setattr(sharded, "RING_BITS", 4)        # the forked workers inherit it
    assert with_workers(config, traces, tmp_path / "workers", 3) is None
    assert_same_outcome(outcome(tmp_path / "workers"), outcome(tmp_path / "one"), "3 workers, ring of 16")


def test_a_stream_that_breaks_half_way(tight, tmp_path):
    """A byte that is no msgpack at an event boundary half-way, in the second file: the same
    StreamError (file and offset) and the same files, stats.json included, as one process."""
    config, traces = tight
    data = b"".join(p.read_bytes() for p in traces)
    at = event_boundary_past(data, len(data) // 2)
    sizes = np.cumsum([p.stat().st_size for p in traces])
    assert sizes[0] < at < sizes[1]
    copies = cut_into_files(data[:at] + b"\xc1" + data[at:], [int(sizes[0]), int(sizes[1]) + 1], tmp_path / "traces")
    error = one_process(config, copies, tmp_path / "one")
    assert isinstance(error, StreamError) and copies[1].name in str(error)
    expected = outcome(tmp_path / "one")
    assert expected["stats.json"][1]["run"]["actions"] > 0
    # stats.json says where the stream broke, and counts the bytes before it alone
    assert expected["stats.json"][1]["run"]["bytes"] == at
    assert expected["stats.json"][1]["run"]["stopped"] == {
        "reason": "corrupt", "offset": at, "trace": str(copies[1]), "trace_offset": at - int(sizes[0])}
    for k in (2, 3):
        got = with_workers(config, copies, tmp_path / f"workers-{k}", k)
        assert isinstance(got, StreamError) and str(got) == str(error)
        assert (got.offset, got.reason) == (error.offset, error.reason)
        assert_same_outcome(outcome(tmp_path / f"workers-{k}"), expected, f"{k} workers")


def test_an_interrupted_run_completes_the_files_of_what_was_merged(tight, tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM part-way through `replay --workers 2`: the actions merged so far are
    written and their files completed (none left as .tmp), as one process completes its own;
    no stats.json. Until 2026-12-07 the merged actions not yet handed to the writer were lost
    and the open files stayed .tmp."""
    config, traces = tight
    real = sharded._Forked.messages

    def interrupted(self):
        batches = {}
        for w, message in real(self):
            yield w, message
            if message is not None and message[0] == "batch":
                batches[w] = batches.get(w, 0) + 1
                if len(batches) == 2 and min(batches.values()) >= 2:
                    raise KeyboardInterrupt

    monkeypatch.setattr(sharded._Forked, "messages", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        sharded.replay(config, list(traces), out, workers=2)
    assert not list(out.rglob("*.tmp")), sorted(out.rglob("*"))
    assert not (out / "stats.json").exists()
    seqs = sorted(int(line.split(",")[0]) for f in out.rglob("actions-*.csv")
                  for line in f.read_text().splitlines()[1:])
    # a prefix of the run's actions, numbered from 1 without a gap
    assert seqs and seqs == list(range(1, len(seqs) + 1))


def test_an_interrupt_while_merged_records_are_counted_loses_none(tight, tmp_path, monkeypatch):
    """Ctrl-C between taking records from the merge and handing them to the writer: that batch
    was lost, and the files began past it. The signal is now acted on once it is handed over."""
    from tests.test_api import _interrupt_at_the_first_count
    config, traces = tight
    _interrupt_at_the_first_count(monkeypatch)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        sharded.replay(config, list(traces), out, workers=2)
    assert not list(out.rglob("*.tmp")) and not (out / "stats.json").exists()
    seqs = sorted(int(line.split(",")[0]) for f in out.rglob("actions-*.csv")
                  for line in f.read_text().splitlines()[1:])
    assert seqs and seqs == list(range(1, len(seqs) + 1))


def test_an_interruption_after_the_stream_completes_the_files(tight, tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM once every worker has ended, while the workers are joined or the
    stats are built: every action is in complete files, and no stats.json. The open files
    were left as .tmp (helper-110's review)."""
    config, traces = tight

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sharded, "run_stats", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        sharded.replay(config, list(traces), out, workers=2)
    assert not list(out.rglob("*.tmp")), sorted(out.rglob("*"))
    assert not (out / "stats.json").exists()
    one_process(config, traces, tmp_path / "one")
    expected = outcome(tmp_path / "one")
    del expected["stats.json"]
    assert_same_outcome(outcome(out), expected, "interrupted at the stats")


def test_a_trace_that_cannot_be_read_part_way(tight, tmp_path):
    """A .gz trace cut short, after two good ones: every worker stops at the same event, and
    the run writes what one process writes (the actions made before it, undrained, and
    stats.json) and fails with its error."""
    config, traces = tight
    packed = gzip.compress(traces[2].read_bytes())
    cut = tmp_path / "last.msgpack.gz"
    cut.write_bytes(packed[:len(packed) // 2])
    given = [*traces[:2], cut]
    with pytest.raises(LoadError) as one:
        one_process(config, given, tmp_path / "one")
    assert "last.msgpack.gz: cannot read trace" in str(one.value)
    expected = outcome(tmp_path / "one")
    assert expected["stats.json"][1]["run"]["events"] > 0 and expected["stats.json"][1]["run"]["actions"] > 0
    for k in (2, 3):
        with pytest.raises(LoadError) as got:
            with_workers(config, given, tmp_path / f"workers-{k}", k)
        assert str(got.value) == str(one.value)
        assert_same_outcome(outcome(tmp_path / f"workers-{k}"), expected, f"{k} workers")


def test_a_shard_without_subscribers(tmp_path):
    """More workers than subscribers: a worker holds none (an anniversary campaign's date
    column included) and still follows the clock."""
    (tmp_path / "profiles.csv").write_text("msisdn,birth_date\n13800000001,1990-01-01\n")
    (tmp_path / "campaigns.toml").write_text(
        '[engine]\nprofiles = "profiles.csv"\nmax_pending = 1\n\n'
        '[[campaign]]\nid = "birthday"\non = ["CALL_MO_END"]\nanniversary = "birth_date"\nchannel = "sms"\n\n'
        '[[campaign]]\nid = "later"\non = ["SMS_MO"]\ndelay = "1h"\nchannel = "sms"\ntotal_budget = 2\n')
    t0 = 1_767_225_600_000          # 2026-01-01T00:00:00Z
    trace = tmp_path / "trace.msgpack"
    trace.write_bytes(b"".join(msgpack.packb([t0 + k * 1_800_000, 1 + 2 * (k % 2), 13_800_000_001])
                               for k in range(12)))
    assert one_process(tmp_path / "campaigns.toml", [trace], tmp_path / "one") is None
    expected = outcome(tmp_path / "one")
    assert expected["stats.json"][1]["run"]["actions"] > 0
    for k in (2, 3):
        assert with_workers(tmp_path / "campaigns.toml", [trace], tmp_path / f"workers-{k}", k) is None
        assert_same_outcome(outcome(tmp_path / f"workers-{k}"), expected, f"{k} workers")


def uncompilable(directory: Path) -> tuple[Path, Path]:
    """A configuration that loads but does not compile (an anniversary of no profile
    column), and a trace of one event: (config, trace)."""
    (directory / "profiles.csv").write_text("msisdn,birth\n13800000001,1990-01-01\n")
    config = directory / "campaigns.toml"
    config.write_text('[engine]\nprofiles = "profiles.csv"\n\n[[campaign]]\nid = "b"\non = ["CALL_MO_END"]\n'
                      'anniversary = "birth_date"\nchannel = "sms"\n')
    trace = directory / "trace.msgpack"
    trace.write_bytes(msgpack.packb([1_767_225_600_000, 1, 13_800_000_001]))
    return config, trace


def test_a_configuration_that_does_not_compile(tmp_path):
    """An error only compiling finds (an anniversary of no profile column), met by the workers:
    the one-line error one process gives, no output and no worker left."""
    config, trace = uncompilable(tmp_path)
    with pytest.raises(Exception) as one:
        one_process(config, [trace], tmp_path / "one")
    assert "anniversary: unknown attribute 'birth_date'" in str(one.value)
    with pytest.raises(Exception) as two:
        with_workers(config, [trace], tmp_path / "two", 2)
    assert str(two.value) == str(one.value)
    assert not (tmp_path / "two" / "stats.json").exists()
    assert _workers_alive() == []


def test_a_where_error_names_the_row_of_the_whole_file(tmp_path):
    """A `where` comparing a column made text by one value with a number: the workers keep
    only their own rows before compiling, yet the error still names the row of the file
    that holds the value, whichever worker's that row is, as one process's does."""
    rows = "".join(f"1380000{i:04d},{'n/a' if i == 7 else i}\n" for i in range(1, 41))
    (tmp_path / "profiles.csv").write_text("msisdn,arpu\n" + rows)
    config = tmp_path / "campaigns.toml"
    config.write_text('[engine]\nprofiles = "profiles.csv"\n\n[[campaign]]\nid = "a"\non = ["CALL_MO_END"]\n'
                      'where = "arpu >= 5"\nchannel = "sms"\n')
    trace = tmp_path / "trace.msgpack"
    trace.write_bytes(msgpack.packb([1_767_225_600_000, 1, 13_800_000_001]))
    with pytest.raises(Exception) as one:
        one_process(config, [trace], tmp_path / "one")
    assert "its row 7 holds 'n/a', not a number" in str(one.value)
    for k in (2, 3):
        with pytest.raises(Exception) as more:
            with_workers(config, [trace], tmp_path / f"workers-{k}", k)
        assert str(more.value) == str(one.value)


# ---- the command -------------------------------------------------------------------------

def sigmatch(*args):
    """The command in a process of its own: (exit code, stdout lines, stderr lines)."""
    proc = subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)
    return proc.returncode, proc.stdout.splitlines(), proc.stderr.strip().splitlines()


def without_timing(lines: list[str]) -> list[str]:
    return [re.sub(r" in [0-9.]+ s(, [0-9.]+[Mk] events/s)?$", "", line) for line in lines]


def test_the_command_says_the_same_with_workers(tight, tmp_path):
    config, traces = tight
    code, one, err = sigmatch("replay", config, *traces, "--out", tmp_path / "one", "--no-progress")
    assert code == 0, err
    code, two, err = sigmatch("replay", config, *traces, "--out", tmp_path / "two", "--no-progress", "--workers", 2)
    assert code == 0, err
    assert not any("Traceback" in line for line in err)
    assert without_timing([line.replace(str(tmp_path / "two"), "OUT") for line in two]) == \
        without_timing([line.replace(str(tmp_path / "one"), "OUT") for line in one])
    assert_same_outcome(outcome(tmp_path / "two"), outcome(tmp_path / "one"), "the command with 2 workers")
    # an earlier run's output is refused, and replaced with --overwrite, as for one process
    code, _, err = sigmatch("replay", config, *traces, "--out", tmp_path / "two", "--workers", 2)
    assert code != 0 and len(err) == 1 and "--overwrite" in err[0], err
    code, _, err = sigmatch("replay", config, *traces, "--out", tmp_path / "two", "--workers", 3, "--overwrite")
    assert code == 0, err
    assert_same_outcome(outcome(tmp_path / "two"), outcome(tmp_path / "one"), "the command with 3 workers, again")


@pytest.mark.parametrize("workers", [0, 300, -1])
def test_workers_out_of_range_is_a_usage_error(tight, tmp_path, workers):
    config, traces = tight
    code, out, err = sigmatch("replay", config, *traces, "--out", tmp_path / "out", "--workers", workers)
    assert code != 0
    assert len(err) == 1 and err[0].startswith("sigmatch: error: ") and "--workers" in err[0], err
    assert not (tmp_path / "out").exists()


def test_workers_out_of_range_in_the_api(tight, tmp_path):
    config, traces = tight
    for workers in (0, sharded.MAX_WORKERS + 1):
        with pytest.raises(ValueError, match="--workers must be between 1 and 256"):
            sharded.replay(config, traces, tmp_path / "out", workers=workers)


# ---- a worker that dies ------------------------------------------------------------------

def _workers_alive() -> list:
    while True:
        try:
            return [p for p in multiprocessing.active_children() if p.name.startswith("sigmatch-worker-")]
        except RuntimeError:        # the coordinator's thread started one meanwhile
            continue


def _wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.01)
    raise AssertionError("timed out")


def test_a_worker_that_dies_fails_the_run(tight, tmp_path, monkeypatch):
    """Worker 1 of 3 killed half-way, while the others may wait for it on a budget: the run
    fails naming it, without stats.json, and leaves no process and no shared block."""
    config, traces = tight
    loaded = load_config(config)
    budgets = len(loaded.campaigns) + len(loaded.channels)
    blocks = []

    def recorded(size):
        block = shared_block(size)
        blocks.append(block)
        return block

    def position(worker: int) -> int:
        """The event position worker `worker` has published in the block (engine/_shard.pxi:
        a 64-byte header, then one lane each, its key's position after the seqlock word)."""
        stride = shard_block_size(2, budgets, sharded.RING_BITS) - shard_block_size(1, budgets, sharded.RING_BITS)
        return int(np.frombuffer(blocks[0], np.uint64, 1, 64 + worker * stride + 8)[0])

    shared_block = sharded._shared_block
    monkeypatch.setattr(sharded, "_shared_block", recorded)
    failed = []

    def run():
        try:
            sharded.replay(config, traces, tmp_path / "out", workers=3)
        except Exception as e:
            failed.append(e)

    coordinator = threading.Thread(target=run)
    coordinator.start()
    try:
        victim = _wait_for(lambda: [p for p in _workers_alive() if p.name == "sigmatch-worker-1" and p.pid])[0]
        _wait_for(lambda: 1_000 < position(1) < 2**63)
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        coordinator.join(timeout=300)
    assert not coordinator.is_alive()
    assert len(failed) == 1 and isinstance(failed[0], sharded.WorkerError), failed
    message = str(failed[0])
    assert "\n" not in message
    assert message.startswith("worker 1 of 3 stopped without a word (exit code -9)"), message
    assert "no stats.json" in message
    assert not (tmp_path / "out" / "stats.json").exists()
    assert _workers_alive() == []
    assert len(blocks) == 1 and blocks[0].closed


def _workers_of(pid: int) -> list[int]:
    """The forked workers among the children of `pid`: not multiprocessing's resource tracker
    (a program of its own), nor the funnel's statsmodels import (uplift.intervals_ahead)."""
    return [child for child, line in _children(pid) if "resource_tracker" not in line and "statsmodels" not in line]


def _children(pid: int) -> list[tuple[int, str]]:
    """The processes whose parent is `pid`: (pid, command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _gone(pid: int) -> bool:
    """No such process, or one that has ended and waits to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
def test_the_command_names_the_worker_that_died(tight, tmp_path):
    config, traces = tight
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "replay", str(config), *map(str, traces),
                             "--out", str(tmp_path / "out"), "--workers", "2", "--no-progress"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        workers = _wait_for(lambda: _workers_of(proc.pid))
        # the run's shared block is anonymous: no named segment can outlive it
        blocks = {line.split()[-1] for line in Path(f"/proc/{proc.pid}/maps").read_text().splitlines()
                  if "/dev/shm/" in line}
        os.kill(workers[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # on a host of one core, the warning that 2 workers are more than the cores comes first
    lines = [line for line in err.strip().splitlines() if "usable core" not in line]
    assert proc.returncode != 0
    assert len(lines) == 1, lines
    assert re.match(r"sigmatch: error: worker [01] of 2 stopped without a word \(exit code -9\)", lines[0]), lines
    assert not (tmp_path / "out" / "stats.json").exists()
    assert _wait_for(lambda: all(_gone(pid) for pid in workers) or None, timeout=30)
    assert blocks == set()


# ---- the hash that places subscribers ----------------------------------------------------

def test_shards_of():
    numbers = np.array([13_800_000_001, 13_800_000_002, 13_912_345_678, 8_613_900_000_000, 1, 2**64 - 1],
                       dtype=np.uint64)
    # stable: a changed hash would move subscribers between the workers of a running service
    assert shards_of(numbers, 2).tolist() == [1, 0, 1, 0, 0, 1]
    assert shards_of(numbers, 3).tolist() == [2, 0, 2, 0, 0, 1]
    assert shards_of(numbers, 7).tolist() == [6, 0, 5, 1, 0, 4]
    assert shards_of(numbers, 256).tolist() == [226, 24, 194, 55, 23, 146]
    assert shards_of(numbers, 1).tolist() == [0] * len(numbers)
    consecutive = np.arange(13_800_000_000, 13_800_010_000, dtype=np.uint64)
    for n in (2, 3, 7, 64, 256):
        got = shards_of(consecutive, n)
        assert got.dtype == np.uint32 and int(got.max()) < n
        assert len(np.unique(got)) == n                  # every worker gets subscribers
    with pytest.raises(ValueError):
        shards_of(numbers, 0)


# ---- memory: what a worker holds ---------------------------------------------------------

def test_a_worker_holds_no_snapshot_and_builds_no_peer_set(tight, tmp_path, monkeypatch):
    """Once compiled, a forked worker holds no World and no Profiles: neither the snapshot it
    inherited (a frame of the coordinator that forked it would keep it alive for the whole
    run, in every worker) nor its own rows of it. Its peer sets are the tables the
    coordinator built before forking, read in place: the workers build none (at L a peer
    set is hundreds of MB, once per worker before). What one process writes is unchanged."""
    import gc

    from engine.language import compile as compiling
    from loaders.profiles import Profiles

    config, traces = tight
    assert one_process(config, traces, tmp_path / "one") is None
    report = tmp_path / "workers.txt"
    coordinator = os.getpid()
    built = []
    real_table = compiling.PeerTable
    real_release = sharded._release_freed

    def counting_table(msisdn):
        built.append(os.getpid())
        return real_table(msisdn)

    def release_and_look():
        real_release()
        if os.getpid() != coordinator:      # a worker, once compiled (the world let go)
            gc.collect()
            alive = sum(isinstance(o, (compiling.World, Profiles)) for o in gc.get_objects())
            mine = sum(pid == os.getpid() for pid in built)
            with open(report, "a") as f:
                f.write(f"{alive} {mine}\n")

    monkeypatch.setattr(compiling, "PeerTable", counting_table)
    monkeypatch.setattr(sharded, "_release_freed", release_and_look)
    assert with_workers(config, traces, tmp_path / "workers", 3) is None
    assert_same_outcome(outcome(tmp_path / "workers"), outcome(tmp_path / "one"), "3 workers")
    assert report.read_text().split("\n")[:-1] == ["0 0"] * 3
    # gen's world has two peer lists (family_peers, crbt_peers), each built once, before the fork
    assert built == [coordinator] * 2


def test_peer_tables_are_shared_by_the_engines_of_one_world(tight, monkeypatch):
    """The service's workers (threads) compile their shards from one World: each peer set is
    built once and every shard's core reads that table. A core keeps its tables alive: with
    the world's references and the other shards gone, a shard still matches peers exactly
    as a shard compiled on its own."""
    import gc

    from engine.language import compile as compiling
    from engine.language.compile import load_world

    config, traces = tight
    cfg = load_config(config)
    world = load_world(cfg)
    built = []
    real_table = compiling.PeerTable

    def counting_table(msisdn):
        built.append(len(msisdn))
        return real_table(msisdn)

    monkeypatch.setattr(compiling, "PeerTable", counting_table)
    shards = [Engine(cfg, world, shard=(i, 3)) for i in range(3)]
    assert sorted(built) == sorted(len(world.lists[name]) for name in ("crbt_peers", "family_peers"))
    table = world.peer_tables["family_peers"]
    members = world.lists["family_peers"]
    assert all(int(m) in table for m in members[:50]) and 0 not in table
    assert not any(int(m) + 1 in table for m in members[:50] if m + 1 not in members)
    world.peer_tables.clear()
    del table, shards[1:]
    gc.collect()
    got = shards[0].replay([Path(p) for p in traces], drain=True)
    alone = Engine(cfg, load_world(cfg), shard=(0, 3)).replay([Path(p) for p in traces], drain=True)
    assert len(got.actions) and np.array_equal(got.actions, alone.actions)
    peer_campaigns = {k for k, c in enumerate(cfg.campaigns) if c.peer_in}
    assert peer_campaigns & set(got.actions["campaign"].tolist())


def test_a_world_sharded_for_another_worker_is_refused(tight):
    """A worker's own rows of the snapshot (shard_world) compile as that worker's shard only;
    given with `give_world`, their columns are gone once compiled."""
    from engine.language.compile import load_world, shard_world

    cfg = load_config(tight[0])
    world = shard_world(load_world(cfg), (1, 3))
    with pytest.raises(ValueError, match=r"worker 1 of 3 compiled as shard \(0, 3\)"):
        Engine(cfg, world, shard=(0, 3))
    engine = Engine(cfg, world, shard=(1, 3), give_world=True)
    assert world.profiles.columns == {} and world.profiles.tags is None
    assert np.array_equal(engine.subscribers, world.profiles.msisdn)
    assert (shards_of(engine.subscribers, 3) == 1).all()


def test_a_world_whose_columns_were_dropped_is_refused_by_name(tight):
    """A world given up to an engine (give_world, or one the engine loaded itself) has lost
    its attribute columns: compiling a `where` from it again is a ValueError that says so,
    not "unknown attribute 'arpu' (profile columns: arpu, ...)"; with shards, the columns
    dropped stay dropped in each worker's copy."""
    from engine.language.compile import load_world, shard_world

    cfg = load_config(tight[0])
    assert any(c.where for c in cfg.campaigns)
    world = load_world(cfg)
    Engine(cfg, world, give_world=True)
    with pytest.raises(ValueError, match=r"profile columns \(arpu, .*\) were dropped once an engine was compiled"):
        Engine(cfg, world)
    with pytest.raises(ValueError, match=r"were dropped"):
        Engine(cfg, shard_world(world, (0, 2)), shard=(0, 2))
    owned = Engine(cfg)
    with pytest.raises(ValueError, match=r"load it again with load_world"):
        Engine(cfg, owned.world)
    fresh = load_world(cfg)
    Engine(cfg, fresh)          # not given: its columns stay
    assert fresh.profiles.columns and not fresh.released
    Engine(cfg, fresh)
    # a world loaded for a configuration that reads fewer columns lacks the others
    plain = replace(cfg, campaigns=tuple(replace(c, where=None, anniversary=None) for c in cfg.campaigns))
    narrow = load_world(plain)
    Engine(plain, narrow)
    with pytest.raises(ValueError, match=r"loaded without the profile columns arpu, .* that this configuration "
                                         r"reads: load it with load_world\(this configuration\)"):
        Engine(cfg, narrow)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's PR_SET_PDEATHSIG")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_workers_die_with_the_coordinator(tight, tmp_path, sig):
    """The coordinator killed while its workers compile (SIGTERM from `timeout` or systemd,
    or SIGKILL): it runs no cleanup, and its workers, each holding its share of a province,
    must not go on as orphans. The kernel kills them with it."""
    config, traces = tight
    slow = tmp_path / "slow.py"
    # the workers hold still in their compile, so that the kill surely lands there
    slow.write_text("import sys, time\nimport engine.workers as w\nfrom engine.cli import main\n"
                    "real = w._run_shard\n"
                    "def held(*a, **k):\n    time.sleep(600)\n    return real(*a, **k)\n"
                    "w._run_shard = held\nsys.exit(main())\n")
    proc = subprocess.Popen([sys.executable, str(slow), "replay", str(config), *map(str, traces),
                             "--out", str(tmp_path / "out"), "--workers", "3", "--no-progress"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers = _wait_for(lambda: _workers_of(proc.pid) if len(_workers_of(proc.pid)) >= 3 else [])
        proc.send_signal(sig)
        proc.wait(timeout=60)
        try:
            _wait_for(lambda: all(_gone(pid) for pid in workers), timeout=30)
        except AssertionError:
            for pid in workers:
                if not _gone(pid):      # still running, so still theirs: no sleeper left behind
                    os.kill(pid, signal.SIGKILL)
            raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_trace_gone_before_the_stream_is_refused_as_one_process_refuses_it(tight, tmp_path, monkeypatch):
    """A trace that goes missing after the command started, before any worker opened it: the
    input does not load, a one-line error as one process's, and no stats.json as if a
    stream had been cut part-way."""
    config, traces = tight
    gone = tmp_path / "gone.msgpack"
    gone.write_bytes(Path(traces[0]).read_bytes())
    real_load_world = sharded.load_world

    def then_delete(cfg):
        world = real_load_world(cfg)
        gone.unlink()           # after the command checked its arguments, before the fork
        return world

    monkeypatch.setattr(sharded, "load_world", then_delete)
    with pytest.raises(LoadError, match=r"gone\.msgpack: no such trace file$"):
        sharded.replay(config, [gone, *traces[1:]], tmp_path / "out", workers=2)
    assert not (tmp_path / "out" / "stats.json").exists()
    assert _workers_alive() == []
