"""The sinks' cost per file on a small world (issue 14, part 2).

    python -m bench.sink_files [DIR] [--subscribers 100000] [--events 1000000] [--rounds 7]

One `sigmatch gen` world (bench's S by default) is replayed once, keeping its records. Then,
in turn and `rounds` times: the records written as the configuration rotates them (hourly
files per channel: ~190 files on S), the same records into one file per directory (no
rotation), and `Engine.replay` end to end (CSV sinks, drain). Each write goes into a fresh
directory: deleting files just before creating others makes the creates slower on ext4
here, which a run into a new OUT does not pay. *per file* = (hourly - one file) / (files
more), medians, wall and CPU (user + system of this process).
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench._cli import (command, folder, given_folder, parser as command_parser, whole_number,
                        world_manifest, write_private)

__all__ = ["run_sink_files"]


def run_sink_files(directory: Path, *, subscribers: int, events: int, rounds: int = 7) -> dict:
    """{"hourly"|"one"|"e2e": [(wall s, cpu s, files)...], "actions", "conversions"}."""
    from engine.api import Engine
    from engine.sinks import SinkSet
    from engine.world.gen import generate

    directory = Path(directory)
    world = directory / "world"
    wanted = {"subscribers": subscribers, "events": events}
    if world_manifest(world / "sink-files-world.json", wanted) is None:
        generate(world, subscribers=subscribers, events=events, progress=False)
        write_private(world / "sink-files-world.json", json.dumps({"world": wanted}))
    config, traces = world / "campaigns.toml", sorted(world.glob("trace*.msgpack"))
    engine = Engine.from_config(config)
    run = engine.replay(traces, keep=True, progress=False, drain=True)
    scratch = directory / "scratch"
    numbers = itertools.count()

    def timed(write) -> tuple[float, float, int]:
        out = scratch / f"out-{next(numbers)}"
        wall, cpu = time.perf_counter(), time.process_time()
        write(out)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return wall, cpu, sum(1 for p in out.rglob("*") if p.is_file() and p.name != "stats.json")

    def sinks(max_age_ms, max_records):
        def write(out):
            with SinkSet(out, campaigns=engine.campaigns, max_records=max_records, max_age_ms=max_age_ms) as s:
                s.write_actions(run.actions)
                s.write_conversions(run.conversions)
        return write

    def end_to_end(out):
        Engine.from_config(config).replay(traces, out=out, drain=True, keep=False, progress=False)

    output = engine.config.output
    results = {"hourly": [], "one": [], "e2e": []}
    try:
        for _ in range(rounds):
            results["hourly"].append(timed(sinks(output.max_age_ms, output.max_records)))
            results["one"].append(timed(sinks(None, 1 << 40)))
            results["e2e"].append(timed(end_to_end))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {**results, "actions": len(run.actions), "conversions": len(run.conversions)}


@command("python -m bench.sink_files")
def main(argv=None) -> None:
    parser = command_parser("python -m bench.sink_files", __doc__, subscribers=100_000, events=1_000_000)
    parser.add_argument("directory", nargs="?", type=given_folder, metavar="DIR",
                        help="keep the world here and reuse it (default: a temporary one, removed)")
    parser.add_argument("--rounds", type=whole_number(1, 1000), default=7)
    args = parser.parse_args(argv)
    if args.directory is not None:
        folder(args.directory, "DIR", owner="bench.sink_files")
    with tempfile.TemporaryDirectory(prefix="sigmatch-sink-files-") as scratch:
        _report(run_sink_files(args.directory or Path(scratch), subscribers=args.subscribers, events=args.events,
                               rounds=args.rounds))


def _report(r: dict) -> None:
    def median(name, k):
        return statistics.median(x[k] for x in r[name])

    extra = r["hourly"][0][2] - r["one"][0][2]
    print(f"{r['actions']:,} actions, {r['conversions']:,} conversions; {r['hourly'][0][2]} files hourly, "
          f"{r['one'][0][2]} unrotated")
    for name in ("hourly", "one", "e2e"):
        print(f"{name:6s} wall {median(name, 0):.3f} s, cpu {median(name, 1):.3f} s")
    if extra <= 0:
        print("per file: not measured (the hourly rotation made no more files than one per directory: "
              "a world of more hours, or more events)")
        return
    per_file = (median("hourly", 0) - median("one", 0)) / extra
    print(f"per file: {per_file * 1e3:.2f} ms wall, "
          f"{(median('hourly', 1) - median('one', 1)) / extra * 1e3:.2f} ms cpu; "
          f"{per_file * extra / median('e2e', 0):.0%} of end to end; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
