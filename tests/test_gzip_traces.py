"""Traces named *.gz whose compressed data breaks (loaders.traces.GzipTrace): every byte that
decompresses before the break is read, so a .gz cut short replays as the plain trace cut at
the same decompressed offset does (the same files, the same stats.json outside `timing`),
with one line naming the file and that offset; one worker or two. A whole .gz of several
members (with zero padding) reads as gzip.open reads it."""
from __future__ import annotations

import gzip
import subprocess
import sys
import zlib
from pathlib import Path

import msgpack
import pytest

from engine.errors import LoadError
from engine.world.gen import generate
from loaders.traces import iter_chunks
from tests.test_cli import run
from tests.test_workers import assert_same_outcome, event_boundary_past, outcome

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A `sigmatch gen` world (20,000 events, about 0.9 MB of trace) and its trace's bytes."""
    generated = generate(tmp_path_factory.mktemp("world"), subscribers=2_000, events=20_000, campaigns=4, seed=5)
    return generated.config, generated.traces[0].read_bytes()


def packed(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def decompressed_before(cut: bytes) -> int:
    """How many bytes zlib gives for the gzip bytes `cut`, short of their end: the offset a
    break in them must be reported at."""
    return len(zlib.decompressobj(wbits=31).decompress(cut))


def good_output_of(damaged: bytes) -> bytes:
    """What zlib gives for `damaged` fed one byte at a time, up to the byte it refuses: the
    bytes a reader can hand on before a corrupt spot (a refused call gives none of its own)."""
    inflater, out = zlib.decompressobj(wbits=31), bytearray()
    for k in range(len(damaged)):
        try:
            out += inflater.decompress(damaged[k:k + 1])
        except zlib.error:
            return bytes(out)
    raise AssertionError("not refused")


def read_all(path: Path, chunk_bytes: int) -> tuple[bytes, str | None]:
    """What iter_chunks yields for one file, and its LoadError's message (None: none)."""
    got = bytearray()
    try:
        for chunk in iter_chunks(path, chunk_bytes=chunk_bytes):
            got += chunk
    except LoadError as e:
        return bytes(got), str(e)
    return bytes(got), None


def inside_an_event(data: bytes, offset: int) -> bool:
    return event_boundary_past(data, offset) != offset


def event_start_before(data: bytes, offset: int) -> int:
    """Where the event of `data` that holds byte offset - 1 starts: the last boundary below it."""
    unpacker = msgpack.Unpacker()
    unpacker.feed(data)
    start = at = 0
    while at < offset:
        start = at
        next(unpacker)
        at = unpacker.tell()
    return start


def without_stopped(found: dict) -> tuple[dict, dict]:
    """An outcome (test_workers.outcome) without stats.json's run.stopped, and that block."""
    mode, stats = found["stats.json"]
    run = dict(stats["run"])
    stopped = run.pop("stopped")
    return {**found, "stats.json": (mode, {**stats, "run": run})}, stopped


def cut_inside_an_event(data: bytes, whole: bytes, fraction: float) -> tuple[bytes, int]:
    """The gzip bytes `whole` of `data` cut near `fraction` of their length, where what they
    decompress to ends inside an event (a cut at an event's end would leave nothing broken
    to a plain file: it would be drained); and that decompressed length."""
    at = int(len(whole) * fraction)
    while not inside_an_event(data, decompressed_before(whole[:at])):
        at -= 1
    return whole[:at], decompressed_before(whole[:at])


def truncated_line(path: Path, offset: int) -> str:
    return (f"sigmatch: error: {path}: cannot read trace: truncated gzip file: its compressed data ends before "
            f"the gzip end-of-stream marker, at decompressed byte offset {offset:,}")


# ---- the reader -------------------------------------------------------------------------

@pytest.mark.parametrize("chunk_bytes", [1 << 10, 64 << 10, 16 << 20])
def test_a_cut_gz_yields_every_byte_before_the_break_then_names_its_offset(world, tmp_path, chunk_bytes):
    _, data = world
    whole = packed(data)
    path = tmp_path / "cut.msgpack.gz"
    for at in (1, 10, 100, 5_000, len(whole) // 3, len(whole) - 9, len(whole) - 8, len(whole) - 1):
        path.write_bytes(whole[:at])
        got, error = read_all(path, chunk_bytes)
        n = decompressed_before(whole[:at])
        assert got == data[:n], at
        assert error == (f"{path}: cannot read trace: truncated gzip file: its compressed data ends before the "
                         f"gzip end-of-stream marker, at decompressed byte offset {n:,}"), at
    # cut in the trailer alone: every byte of the data is there, the file is still cut short
    assert decompressed_before(whole[:-1]) == len(data)


@pytest.mark.parametrize("where", [40, 1_000, "middle", "crc"])
def test_a_corrupt_gz_yields_what_decompresses_before_the_damage(world, tmp_path, where):
    """Gzip checks its data only at a member's end (the CRC): bytes before a damaged spot
    may already be wrong, and are handed on as zlib gives them, up to where it refuses."""
    _, data = world
    damaged = bytearray(packed(data))
    at = {"middle": len(damaged) // 2, "crc": len(damaged) - 6}.get(where, where)
    damaged[at] ^= 0x55
    path = tmp_path / "bad.msgpack.gz"
    path.write_bytes(damaged)
    for chunk_bytes in (4 << 10, 16 << 20):
        got, error = read_all(path, chunk_bytes)
        assert got == good_output_of(bytes(damaged))
        assert error.startswith(f"{path}: cannot read trace: corrupt gzip data at decompressed byte offset "
                                f"{len(got):,} ("), error
    if where == "crc":
        assert got == data and error.endswith("(incorrect data check)")


def test_gz_of_several_members_reads_as_gzip_open_reads_it(world, tmp_path):
    """Members cut inside events, an empty one, zero padding between and after them: one
    stream; bytes after the last member that begin no other are an error at its end."""
    _, data = world
    parts = [data[:1_001], data[1_001:300_007], b"", data[300_007:]]
    path = tmp_path / "members.msgpack.gz"
    path.write_bytes(packed(parts[0]) + packed(parts[1]) + b"\0" * 5 + packed(parts[2]) + packed(parts[3]) + b"\0\0")
    with gzip.open(path, "rb") as f:
        assert f.read() == data
    assert read_all(path, 64 << 10) == (data, None)
    path.write_bytes(packed(parts[0]) + packed(b"".join(parts[1:])) + b"PK\x03\x04")
    assert read_all(path, 64 << 10) == (data, f"{path}: cannot read trace: corrupt gzip file: what follows the gzip "
                                              f"data at decompressed byte offset {len(data):,} is neither another "
                                              "gzip member nor zero padding")


def test_a_file_named_gz_that_is_not_gzip_is_said_to_be_so(world, tmp_path):
    _, data = world
    path = tmp_path / "plain.msgpack.gz"
    path.write_bytes(data)
    assert read_all(path, 64 << 10) == (b"", f"{path}: cannot read trace: not gzip-compressed, though named *.gz "
                                             "(it does not begin with the gzip bytes 1f 8b)")


# ---- sigmatch replay ------------------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.97])
def test_a_cut_gz_replays_as_the_plain_trace_cut_at_the_same_offset(world, tmp_path, fraction):
    """0.05: the break lies in the head that replay examines first (loaders.sniff)."""
    config, data = world
    cut, n = cut_inside_an_event(data, packed(data), fraction)
    (tmp_path / "cut.msgpack.gz").write_bytes(cut)
    (tmp_path / "cut.msgpack").write_bytes(data[:n])
    code, out, _ = run("replay", config, tmp_path / "cut.msgpack.gz", "--out", tmp_path / "gz", "--no-progress")
    assert code == 1 and out.strip().splitlines() == [truncated_line(tmp_path / "cut.msgpack.gz", n)], out
    code, out, _ = run("replay", config, tmp_path / "cut.msgpack", "--out", tmp_path / "plain", "--no-progress")
    assert code == 1 and "truncated (the stream ends inside an event)" in out, out
    expected, plain_stopped = without_stopped(outcome(tmp_path / "plain"))
    got, gz_stopped = without_stopped(outcome(tmp_path / "gz"))
    # the bytes processed: those before the event the cut lies in, not the cut event's own
    start = event_start_before(data, n)
    assert 0 < start < n
    assert expected["stats.json"][1]["run"]["events"] > 0 and expected["stats.json"][1]["run"]["bytes"] == start
    assert plain_stopped == {"reason": "truncated", "offset": start, "trace": str(tmp_path / "cut.msgpack"),
                             "trace_offset": start}
    # the same place, for the reason the .gz was not read on
    assert gz_stopped == {"reason": "unreadable", "offset": start, "trace": str(tmp_path / "cut.msgpack.gz"),
                          "trace_offset": start}
    assert_same_outcome(got, expected, f"cut at {n:,}")


def test_a_gz_cut_in_its_trailer_replays_every_event_undrained(world, tmp_path):
    """All the data decompresses, but the file is cut short: every event is processed, and
    the run stops as at any break (stats.json written, pending actions not drained)."""
    config, data = world
    (tmp_path / "cut.msgpack.gz").write_bytes(packed(data)[:-3])
    code, out, _ = run("replay", config, tmp_path / "cut.msgpack.gz", "--out", tmp_path / "gz", "--no-progress")
    assert code == 1 and out.strip().splitlines() == [truncated_line(tmp_path / "cut.msgpack.gz", len(data))], out
    stats = outcome(tmp_path / "gz")["stats.json"][1]["run"]
    assert stats["events"] == 20_000 and stats["bytes"] == len(data)
    assert stats["stopped"] == {"reason": "unreadable", "offset": len(data), "trace": str(tmp_path / "cut.msgpack.gz"),
                                "trace_offset": len(data)}


def test_a_gz_cut_inside_its_header_is_refused_before_anything_is_processed(world, tmp_path):
    config, data = world
    (tmp_path / "cut.msgpack.gz").write_bytes(packed(data)[:6])
    code, out, _ = run("replay", config, tmp_path / "cut.msgpack.gz", "--out", tmp_path / "gz", "--no-progress")
    assert code == 1 and out.strip().splitlines() == [truncated_line(tmp_path / "cut.msgpack.gz", 0)], out
    assert not (tmp_path / "gz").exists()


def test_a_gz_of_several_members_replays_as_the_plain_trace(world, tmp_path):
    config, data = world
    (tmp_path / "t.msgpack").write_bytes(data)
    (tmp_path / "t.msgpack.gz").write_bytes(packed(data[:123_457]) + b"\0" * 3 + packed(data[123_457:]))
    for name in ("t.msgpack", "t.msgpack.gz"):
        code, out, _ = run("replay", config, tmp_path / name, "--out", tmp_path / f"out-{name}", "--no-progress")
        assert code == 0, out
    assert_same_outcome(outcome(tmp_path / "out-t.msgpack.gz"), outcome(tmp_path / "out-t.msgpack"), "members")


def test_a_cut_gz_with_two_workers_stops_where_one_process_does(world, tmp_path):
    """`--workers 2` (engine.workers): every worker reads the same bytes before the break,
    so the run writes what one process writes, and says the same line."""
    config, data = world
    cut, n = cut_inside_an_event(data, packed(data), 0.6)
    path = tmp_path / "cut.msgpack.gz"
    path.write_bytes(cut)
    code, out, _ = run("replay", config, path, "--out", tmp_path / "one", "--no-progress")
    assert code == 1 and out.strip().splitlines() == [truncated_line(path, n)], out
    done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(config), str(path),
                           "--out", str(tmp_path / "two"), "--no-progress", "--workers", "2"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1
    # on a host of one core, the warning that 2 workers are more than the cores comes first
    said = [line for line in done.stderr.strip().splitlines() if "usable core" not in line]
    assert said == [truncated_line(path, n)], done.stderr
    expected = outcome(tmp_path / "one")
    assert expected["stats.json"][1]["run"]["events"] > 0
    assert_same_outcome(outcome(tmp_path / "two"), expected, "2 workers")
