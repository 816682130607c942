"""The world of `sigmatch demo`: `engine.world.gen.generate` at a small scale.

    config, traces = build_demo_world(Path("demo"))
    Engine.from_config(config).replay(traces, out="demo/out", drain=True)

Two working days (Monday and Tuesday) of signalling over the six programmes of examples/
(CRBT at school, the airport newspaper, the new subscribers' usage habits, sequences, the
top-up rescue, moments) and every kind of
synthetic campaign `sigmatch gen` writes, each of which finds someone. The profiles are CSV,
to be read by eye, and the trace comes as two files cut inside an event, as a probe rotating
its files would leave them: the traces of one replay are one stream (SPEC §1.4). The world
is the same bytes for the same arguments.
"""
from __future__ import annotations

from pathlib import Path

from engine.world.gen import EVENT_DTYPE, generate

__all__ = ["build_demo_world", "check_demo_size", "DEMO_CAMPAIGNS", "DEMO_MARK"]

DEMO_CAMPAIGNS = 13     # one synthetic campaign of each kind
DEMO_MARK = ".sigmatch-demo"    # in a --dir of `sigmatch demo`: a second demo may write over it


def check_demo_size(subscribers: int, events: int) -> None:
    """ValueError in one line when the demo world would be too small to show anything."""
    if subscribers < 100 or events < 1_000:
        raise ValueError(f"the demo needs at least 100 subscribers and 1,000 events (--subscribers {subscribers:,}, "
                         f"--events {events:,})")


def build_demo_world(directory: Path, *, subscribers: int = 20_000, events: int = 300_000,
                     seed: int = 7) -> tuple[Path, list[Path]]:
    """Write the demo world into `directory`; return (campaigns.toml, [trace files])."""
    check_demo_size(subscribers, events)
    directory = Path(directory)
    world = generate(directory, subscribers=subscribers, events=events, campaigns=DEMO_CAMPAIGNS,
                     days=2, seed=seed, profiles_format="csv", start="2026-11-02", progress=False)
    # Two files cut inside the middle event, as a probe rotating its files by size would: the
    # traces of one replay are one stream (SPEC §1.4).
    data = world.trace.read_bytes()
    cut = (events // 2) * EVENT_DTYPE.itemsize + EVENT_DTYPE.itemsize // 2
    traces = [directory / "trace-1.msgpack", directory / "trace-2.msgpack"]
    traces[0].write_bytes(data[:cut])
    traces[1].write_bytes(data[cut:])
    world.trace.unlink()
    return world.config, traces
