"""Feeding one event in tiny chunks: time against the event's size, core alone and through
`Engine.replay`. The decoder frames a carried event where it stopped (scan_values), so the
time per byte should not grow with the event; a decoder that re-reads the carried event
from its start on every chunk is quadratic.

    python -m bench.feed_bytes            # from the repository root; prints a table

Not a test: it only measures (STYLE.md item 9).
"""
from __future__ import annotations

import time
from pathlib import Path

import msgpack
import numpy as np

from bench._cli import command, parser as command_parser
from bench.run import machine
from engine.api import Engine
from engine.language.compile import World
from engine.language.config import CampaignSpec, Config
from loaders.profiles import Profiles

T0 = 1_767_225_600_000
MSISDN = 13800000001
CONFIG = Config(path=Path("feed.toml"), campaigns=(CampaignSpec(id="c", on=(1,), channel="sms"),))


def event(nbytes: int) -> bytes:
    """A good event of about `nbytes` bytes, an ignored ninth element of one-byte integers."""
    return msgpack.packb([T0, 1, MSISDN, 0, 0, 0, 0, 0, [1] * max(nbytes - 40, 0)])


def engine() -> Engine:
    profiles = Profiles(Path("p"), np.array([MSISDN], dtype=np.uint64), {}, None, 0)
    return Engine(CONFIG, World(profiles, {}, {}))


def core_seconds(data: bytes, chunk: int) -> float:
    core = engine()._core
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    core.begin_stream()
    started = time.perf_counter()
    for piece in pieces:
        core.feed(piece)
    assert core.end_stream() == 0
    seconds = time.perf_counter() - started
    assert len(core.take_actions()) == 1
    return seconds


def replay_seconds(data: bytes, chunk: int) -> float:
    e = engine()
    started = time.perf_counter()
    run = e.replay(data[i:i + chunk] for i in range(0, len(data), chunk))
    seconds = time.perf_counter() - started
    assert len(run.actions) == 1
    return seconds


@command("python -m bench.feed_bytes")
def main(argv=None) -> None:
    command_parser("python -m bench.feed_bytes", __doc__).parse_args(argv)
    print(f"machine: {machine()}")
    print("| event bytes | chunk | core feed s | core ns/byte | replay s |")
    print("|---:|---:|---:|---:|---:|")
    for nbytes in (4_096, 16_384, 65_000):
        data = event(nbytes)
        for chunk in (1, 16):
            core = min(core_seconds(data, chunk) for _ in range(3))
            replay = min(replay_seconds(data, chunk) for _ in range(2)) if chunk == 1 else float("nan")
            print(f"| {len(data):,} | {chunk} | {core:.4f} | {core / len(data) * 1e9:.0f} | {replay:.3f} |")


if __name__ == "__main__":
    main()
