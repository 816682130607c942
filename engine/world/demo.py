"""The world of `sigmatch demo`: `engine.world.gen.generate` at a small scale.

    config, traces = build_demo_world(Path("demo"))
    Engine.from_config(config).replay(traces, out="demo/out", drain=True)

Two working days (Monday and Tuesday) of signalling over the six programmes of examples/
(CRBT at school, the airport newspaper, the new subscribers' usage habits, sequences, the
top-up rescue, moments) and every kind of
synthetic campaign `sigmatch gen` writes, each of which finds someone. The profiles are CSV,
to be read by eye, and the trace comes as two files cut inside an event, as a probe rotating
its files would leave them: the traces of one replay are one stream (SPEC §1.4). The world
is the same bytes for the same arguments, so a second demo in one directory reuses the world
the first one made (`demo_world`) while its manifest, written last, says it was made with
the same arguments by the same generator and every file is as it was made.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from engine.world import gen
from engine.world.gen import EVENT_DTYPE, generate

__all__ = ["build_demo_world", "demo_world", "DemoWorld", "check_demo_size", "DEMO_CAMPAIGNS", "DEMO_MARK",
           "DEMO_MANIFEST"]

DEMO_CAMPAIGNS = 13     # one synthetic campaign of each kind
DEMO_MARK = ".sigmatch-demo"    # in a --dir of `sigmatch demo`: a second demo may write over it
# The arguments, the generator and each file's size and SHA-256 of the world in a --dir,
# written once every file is: a world cut short by a crash has none, and is made again
DEMO_MANIFEST = ".sigmatch-demo-world.json"


@dataclass(frozen=True)
class DemoWorld:
    """The world `demo_world` found or made: campaigns.toml, the trace files, whether it was
    made now, and why (for the demo's output)."""
    config: Path
    traces: list[Path]
    made: bool
    why: str


def check_demo_size(subscribers: int, events: int) -> None:
    """ValueError in one line when the demo world would be too small to show anything."""
    if subscribers < 100 or events < 1_000:
        raise ValueError(f"the demo needs at least 100 subscribers and 1,000 events (--subscribers {subscribers:,}, "
                         f"--events {events:,})")


def build_demo_world(directory: Path, *, subscribers: int = 20_000, events: int = 300_000,
                     seed: int = 7) -> tuple[Path, list[Path]]:
    """Write the demo world into `directory`, its manifest last; return (campaigns.toml,
    [trace files])."""
    check_demo_size(subscribers, events)
    directory = Path(directory)
    (directory / DEMO_MANIFEST).unlink(missing_ok=True)
    world = generate(directory, subscribers=subscribers, events=events, campaigns=DEMO_CAMPAIGNS,
                     days=2, seed=seed, profiles_format="csv", start="2026-11-02", progress=False)
    # Two files cut inside the middle event, as a probe rotating its files by size would: the
    # traces of one replay are one stream (SPEC §1.4).
    data = world.trace.read_bytes()
    cut = (events // 2) * EVENT_DTYPE.itemsize + EVENT_DTYPE.itemsize // 2
    traces = [directory / "trace-1.msgpack", directory / "trace-2.msgpack"]
    traces[0].write_bytes(data[:cut])
    traces[1].write_bytes(data[cut:])
    for path in traces:
        os.chmod(path, 0o640)       # as generate leaves the world's other files
    world.trace.unlink()
    files = {path: None for path in [world.config, world.profiles, *world.lists.values(), *world.areas.values()]}
    # the traces hashed from memory (no copy): read back, they would be most of the manifest's cost
    whole = memoryview(data)
    files.update({traces[0]: whole[:cut], traces[1]: whole[cut:]})
    manifest = {"arguments": _arguments(subscribers, events, seed),
                "files": {path.relative_to(directory).as_posix(): _fingerprint(path, content)
                          for path, content in files.items()}}
    from engine.sinks import write_private
    write_private(directory / f".{DEMO_MANIFEST}.tmp", directory / DEMO_MANIFEST,
                  json.dumps(manifest, indent=1).encode())
    return world.config, traces


def demo_world(directory: Path, *, subscribers: int = 20_000, events: int = 300_000, seed: int = 7) -> DemoWorld:
    """The demo world in `directory`: the one made there before when its manifest says it was
    made with these arguments by this generator and every file is as it was made (sizes and
    SHA-256), else made now (build_demo_world)."""
    directory = Path(directory)
    traces = [directory / "trace-1.msgpack", directory / "trace-2.msgpack"]
    why = _not_reusable(directory, _arguments(subscribers, events, seed))
    if why is None:
        return DemoWorld(directory / "campaigns.toml", traces, made=False,
                         why="reused: the one made before with these arguments, its files as they were made")
    config, traces = build_demo_world(directory, subscribers=subscribers, events=events, seed=seed)
    return DemoWorld(config, traces, made=True, why=why)


def _arguments(subscribers: int, events: int, seed: int) -> dict:
    """What makes a demo world's bytes: its arguments and the code that generates it."""
    code = hashlib.sha256()
    for module in (gen.__file__, __file__):
        code.update(Path(module).read_bytes())
    return {"subscribers": subscribers, "events": events, "seed": seed, "generator": code.hexdigest()}


def _fingerprint(path: Path, content=None) -> dict:
    """The size and SHA-256 of `path`, or of `content` (the bytes just written there)."""
    if content is None:
        with open(path, "rb") as f:
            return {"size": path.stat().st_size, "sha256": hashlib.file_digest(f, "sha256").hexdigest()}
    return {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}


def _not_reusable(directory: Path, arguments: dict) -> Optional[str]:
    """Why the world in `directory` must be made (again), or None when it can be reused."""
    try:
        manifest = json.loads((directory / DEMO_MANIFEST).read_bytes())
    except FileNotFoundError:
        return "made"
    except (OSError, ValueError):
        return "made again: the manifest of the one made before is unreadable"
    if not isinstance(manifest, dict) or manifest.get("arguments") != arguments:
        return "made again: the one made before had other arguments or another generator"
    files = manifest.get("files")
    name = "?"
    try:
        # the sizes first: a file cut short or grown is found without reading any
        for name, made in files.items():
            if (directory / name).stat().st_size != made["size"]:
                return f"made again: {name} changed since it was made"
        for name, made in files.items():
            if _fingerprint(directory / name) != made:
                return f"made again: {name} changed since it was made"
    except FileNotFoundError:
        return f"made again: {name} is missing"
    except (OSError, TypeError, KeyError, AttributeError):
        return "made again: the manifest of the one made before is unreadable"
    return None
