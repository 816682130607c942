"""A trace file of more than one chunk is read a chunk ahead on a thread (loaders.traces
._read_ahead): the chunks, the errors and their place in the stream are those of reading
inline, a chunk handed out stays as it was until the next one is asked for, a consumer that
stops early leaves no thread behind, and a replay's files are the same either way."""
from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest

import loaders.traces as traces
from engine.api import Engine
from engine.errors import LoadError
from engine.world.gen import generate
from loaders.traces import iter_chunks
from tests.test_workers import assert_same_outcome, outcome


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A `sigmatch gen` world: 20,000 events, about 0.9 MB of trace."""
    return generate(tmp_path_factory.mktemp("world"), subscribers=2_000, events=20_000, campaigns=4, seed=9)


def chunks(path: Path, chunk_bytes: int, read_ahead: bool) -> list[bytes]:
    return [bytes(c) for c in iter_chunks(path, chunk_bytes=chunk_bytes, read_ahead=read_ahead)]


def readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sigmatch-trace-reader"]


@pytest.mark.parametrize("chunk_bytes", [1, 4096, 65_536, 1 << 20])
def test_the_chunks_read_ahead_are_the_chunks_read_inline(world, chunk_bytes):
    path = world.traces[0]
    data = path.read_bytes()
    if chunk_bytes == 1:
        path = path.with_name("small.msgpack")
        path.write_bytes(data[:3000])
        data = data[:3000]
    ahead = chunks(path, chunk_bytes, True)
    assert ahead == chunks(path, chunk_bytes, False)
    assert b"".join(ahead) == data
    assert all(len(c) == chunk_bytes for c in ahead[:-1])
    assert not readers()


def test_a_chunk_stays_as_it_was_until_the_next_is_asked_for(world):
    path = world.traces[0]
    data = path.read_bytes()
    offset = 0
    for chunk in iter_chunks(path, chunk_bytes=4096):
        # the reader has had time to fill its other buffer, and to wait for this one back
        threading.Event().wait(0.002)
        assert bytes(chunk) == data[offset:offset + len(chunk)]
        offset += len(chunk)
    assert offset == len(data)


def test_a_consumer_that_stops_early_leaves_no_reader_behind(world):
    stream = iter_chunks(world.traces[0], chunk_bytes=4096)
    next(stream)
    next(stream)
    assert readers()
    stream.close()
    assert not readers()


class FailingFile:
    """A trace file whose reads fail with EIO once `good` bytes were read."""

    def __init__(self, path: Path, good: int):
        self.f = open(path, "rb", buffering=0)
        self.left = good

    def fileno(self):
        return self.f.fileno()

    def readinto(self, buffer):
        if self.left <= 0:
            raise OSError(errno.EIO, "Input/output error")
        n = self.f.readinto(buffer[:self.left])
        self.left -= n
        return n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("read_ahead", [True, False])
def test_a_read_error_comes_after_every_chunk_read_before_it(world, monkeypatch, read_ahead):
    path = world.traces[0]
    data = path.read_bytes()
    monkeypatch.setattr(traces, "open_trace", lambda p: FailingFile(p, 10_000))
    got = []
    with pytest.raises(LoadError) as caught:
        for chunk in iter_chunks(path, chunk_bytes=4096, read_ahead=read_ahead):
            got.append(bytes(chunk))
    assert str(caught.value) == f"{path}: cannot read trace: Input/output error"
    # two whole chunks, then the third's read fails part-way: nothing of it is handed out
    assert got == [data[:4096], data[4096:8192]]
    assert not readers()


@pytest.mark.parametrize("read_ahead", [True, False])
def test_a_file_cut_while_read_is_named_after_the_chunks_before_the_cut(world, tmp_path, read_ahead):
    data = world.traces[0].read_bytes()
    path = tmp_path / "trace.msgpack"
    path.write_bytes(data)
    got = []
    with pytest.raises(LoadError) as caught:
        for chunk in iter_chunks(path, chunk_bytes=65_536, read_ahead=read_ahead):
            if not got:
                with open(path, "r+b") as f:
                    f.truncate(300_000)
            got.append(bytes(chunk))
    assert str(caught.value).startswith(f"{path}: truncated while being read: it ended at byte ")
    assert str(caught.value).endswith(f"of the {len(data):,} it had when opened")
    # read ahead, at most the second chunk was read before the cut, and the reads go on to it
    assert b"".join(got) == data[:300_000]


def test_a_replay_read_ahead_writes_the_files_of_one_read_inline(world, tmp_path, monkeypatch):
    trace = world.traces[0]
    monkeypatch.setattr(traces, "CHUNK_BYTES", 8192)
    Engine.from_config(world.config).replay([trace], tmp_path / "ahead", drain=True)
    assert not readers()
    real = traces._read_file
    monkeypatch.setattr(traces, "_read_file", lambda p, n, ahead: real(p, n, False))
    Engine.from_config(world.config).replay([trace], tmp_path / "inline", drain=True)
    assert_same_outcome(outcome(tmp_path / "ahead"), outcome(tmp_path / "inline"), "read ahead")
