"""`sigmatch diff` against the replays it stands for: `python -m bench.diff [DIR] [--runs N]
[--subscribers N] [--events N]`.

The world is `sigmatch gen`'s medium world (bench's M: 2M subscribers, 10M events, generated
once into DIR and reused); configuration B is its campaigns.toml plus one campaign. Each round
times, in fresh processes as an operator runs them and in a rotating order: one
`sigmatch replay` of A; two `sigmatch replay`s, of A and of B, started together (what diff
stands for); `sigmatch diff A B TRACE --json`. Wall time and CPU time (user + system of the
process and its children) of each; the medians over the rounds are printed as a table row for
bench/RESULTS.md, with the 1-minute load average after the last round (the machine is shared:
the wall times depend on it, the CPU times much less)."""
from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._cli import (CommandError, child_error, command, folder, given_folder, parser as command_parser,
                        run_child, whole_number, world_manifest, write_private)

ROOT = Path(__file__).resolve().parents[1]
NEW_CAMPAIGN = """
[[campaign]]
id = "bench_new_offer"
priority = 40
on = ["DATA_SESSION"]
cooldown = "1d"
channel = "push"
template = "DATA_OFFER"
holdout = 0.1
"""


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "engine.cli", *map(str, args)]


def _timed(commands: list[list[str]]) -> tuple[float, float]:
    """Run the commands at once; (wall seconds until the last ends, CPU seconds of them all)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for c in commands]
    try:
        errors = [p.communicate()[1] for p in procs]
    except KeyboardInterrupt:
        # they have the signal too: time to remove what they were writing
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    for p, error in zip(procs, errors):
        if p.returncode:
            raise CommandError(f"sigmatch {' '.join(map(str, commands[0][3:5]))} ...: exit {p.returncode}: "
                               f"{child_error('sigmatch', error, p.returncode)}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@command("python -m bench.diff")
def main(argv=None) -> None:
    parser = command_parser("python -m bench.diff", __doc__, subscribers=2_000_000, events=10_000_000)
    parser.add_argument("directory", nargs="?", type=given_folder, metavar="DIR",
                        help="keep the world here and reuse it (default: a temporary one, removed)")
    parser.add_argument("--runs", type=whole_number(1, 1000), default=3)
    args = parser.parse_args(argv)
    if args.directory is not None:
        folder(args.directory, "DIR", owner="bench.diff")
    with tempfile.TemporaryDirectory(prefix="sigmatch-bench-diff-") as scratch:
        _measure(args, args.directory or Path(scratch))


def _measure(args, base: Path) -> None:
    world = base / f"world-{args.subscribers}-{args.events}"
    config_a = world / "campaigns.toml"
    wanted = {"subscribers": args.subscribers, "events": args.events}
    if world_manifest(world / "diff-world.json", wanted) is None:
        started = time.perf_counter()
        done = run_child(_cli("gen", world, "--subscribers", args.subscribers, "--events", args.events,
                              "--no-progress", "--force"), cwd=ROOT)
        if done.returncode:
            raise CommandError(f"sigmatch gen {world}: exit {done.returncode}: {child_error('sigmatch', done.stderr, done.returncode)}")
        write_private(world / "diff-world.json", json.dumps({"world": wanted}))
        print(f"world generated in {time.perf_counter() - started:.0f} s: {world}", file=sys.stderr)
    config_b = world / "campaigns-b.toml"
    write_private(config_b, config_a.read_text() + NEW_CAMPAIGN)
    traces = sorted(world.glob("trace*.msgpack"))
    outs = base / "outs"

    def replay(config: Path, name: str) -> list[str]:
        return _cli("replay", config, *traces, "--out", outs / name, "--no-progress", "--overwrite")

    measures = {
        "replay A": lambda: [replay(config_a, "a")],
        "replays A and B side by side": lambda: [replay(config_a, "a"), replay(config_b, "b")],
        "diff A B": lambda: [_cli("diff", config_a, config_b, *traces, "--json", "--no-progress")],
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in measures}
    names = list(measures)
    for round_ in range(args.runs):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            shutil.rmtree(outs, ignore_errors=True)
            outs.mkdir()        # the side-by-side replays' --out share it: neither makes it under the other
            results[name].append(_timed(measures[name]()))
            print(f"round {round_ + 1}: {name}: {results[name][-1][0]:.1f} s wall, {results[name][-1][1]:.1f} s CPU, "
                  f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    shutil.rmtree(outs, ignore_errors=True)
    from bench.run import machine
    load = os.getloadavg()[0]
    cells = []
    for name in names:
        walls, cpus = zip(*results[name])
        cells.append(f"{statistics.median(walls):.1f} s ({min(walls):.1f}-{max(walls):.1f}), "
                     f"CPU {statistics.median(cpus):.1f} s")
    print(f"| {time.strftime('%Y-%m-%d')} | {args.subscribers:,} | {args.events:,} | {args.runs} | "
          + " | ".join(cells) + f" | {load:.1f} | {machine()} |")


if __name__ == "__main__":
    main()
