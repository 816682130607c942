"""Cost flat in campaigns (issue 14, part 1): decode + match at 200 campaigns against 12.

    python -m bench.sweep                     # 1M subscribers, 3M events, 12 vs 200 campaigns
    python -m bench.sweep --directory /tmp/sweep --rounds 3

Two `sigmatch gen` worlds of the same subscribers and trace size, one with `--campaigns 12`
and one with `--campaigns 200` (gen's programmes come besides them), as the sweep of
`python -m bench.plot` makes its points. Each world is replayed by `Engine.replay` without
sinks, the trace in memory, drained: the best of `--best` replays in a fresh process, the two
worlds in turn, `--rounds` times. The issue asks the rate at 200 to be at least 70% of the
rate at 12; the medians of the bests and that share are printed as one JSON line.
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench._cli import (CAMPAIGNS, CommandError, child_error, command, folder, given_folder,
                        parser as command_parser, run_child, whole_number, world_manifest, write_private)

__all__ = ["make_worlds", "measure"]

AIM = 0.70


def make_worlds(directory: Path, *, subscribers: int, events: int, campaigns: tuple[int, ...],
                seed: int = 1) -> dict[int, Path]:
    """One generated world per number of synthetic campaigns, under `directory` (reused when
    its manifest matches): {campaigns: its folder}."""
    from engine.world.gen import generate
    worlds = {}
    for n in campaigns:
        world = directory / f"sweep-{n}"
        if world.exists() and not world.is_dir():
            raise CommandError(f"{world}: not a folder, where the world of {n} campaigns goes")
        manifest = world / "sweep-world.json"
        wanted = dict(subscribers=subscribers, events=events, campaigns=n, seed=seed)
        if world_manifest(manifest, wanted) is None:
            generate(world, subscribers=subscribers, events=events, campaigns=n, seed=seed)
            write_private(manifest, json.dumps({"world": wanted}))
        worlds[n] = world
    return worlds


def _best_replay(folder: Path, best: int) -> dict:
    """The best of `best` replays of the world in `folder`, in this process, each by a fresh
    engine: {events, seconds, actions}."""
    from engine.api import Engine
    from engine.language.config import load_config
    config = load_config(folder / "campaigns.toml")
    data = (folder / "trace.msgpack").read_bytes()
    fastest = None
    for _ in range(best):
        engine = Engine(config)
        started = time.perf_counter()
        run = engine.replay(data, drain=True, keep=False, progress=False)
        seconds = time.perf_counter() - started
        fastest = seconds if fastest is None else min(fastest, seconds)
    return {"events": run.stats["run"]["events"], "seconds": fastest, "actions": run.stats["run"]["actions"],
            "campaigns": len(config.campaigns)}


def _child(folder: Path, best: int) -> dict:
    proc = run_child([sys.executable, "-m", "bench.sweep", "--measure", str(folder), str(best)])
    if proc.returncode:
        raise CommandError(child_error("python -m bench.sweep", proc.stderr, proc.returncode))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(directory: Path, *, subscribers: int = 1_000_000, events: int = 3_000_000, few: int = 12,
            many: int = 200, rounds: int = 3, best: int = 3, seed: int = 1, echo=print) -> dict:
    """The two worlds in turn, `rounds` times, each a fresh process taking the best of `best`
    replays. Returns the medians (s and events/s), every round's seconds, and `share`: the
    rate with `many` synthetic campaigns over the rate with `few` (the issue's aim: >= AIM)."""
    echo(f"sweep: worlds of {subscribers:,} subscribers, {events:,} events, {few} and {many} campaigns ...")
    worlds = make_worlds(directory, subscribers=subscribers, events=events, campaigns=(few, many), seed=seed)
    seconds: dict[int, list[float]] = {few: [], many: []}
    last: dict[int, dict] = {}
    for r in range(rounds):
        for n in (few, many):
            last[n] = _child(worlds[n], best)
            seconds[n].append(last[n]["seconds"])
            echo(f"sweep: round {r + 1}: {n} campaigns {last[n]['seconds']:.3f} s")
    median = {n: statistics.median(seconds[n]) for n in (few, many)}
    rate = {n: last[n]["events"] / median[n] for n in (few, many)}
    return {"subscribers": subscribers, "events": events, "synthetic": [few, many],
            "campaigns": [last[few]["campaigns"], last[many]["campaigns"]],
            "seconds": [median[few], median[many]], "eps": [rate[few], rate[many]],
            "share": rate[many] / rate[few], "aim": AIM, "actions": [last[few]["actions"], last[many]["actions"]],
            "runs": [seconds[few], seconds[many]]}


@command("python -m bench.sweep")
def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--measure":
        print(json.dumps(_best_replay(Path(args[1]), int(args[2]))))
        return
    parser = command_parser("python -m bench.sweep", __doc__, subscribers=1_000_000, events=3_000_000)
    parser.add_argument("--few", type=whole_number(*CAMPAIGNS), default=12,
                        help="synthetic campaigns of the first world")
    parser.add_argument("--many", type=whole_number(*CAMPAIGNS), default=200,
                        help="synthetic campaigns of the second world (more than --few)")
    parser.add_argument("--rounds", type=whole_number(1, 1000), default=3)
    parser.add_argument("--best", type=whole_number(1, 1000), default=3, help="replays per process, the fastest kept")
    parser.add_argument("--directory", type=given_folder,
                        help="keep the worlds here, a new or empty folder or one of an earlier run (default: a "
                             "temporary one)")
    ns = parser.parse_args(args)
    if ns.many <= ns.few:
        # one world measured against itself, or the share turned upside down
        parser.error(f"--many ({ns.many:,}) must be more than --few ({ns.few:,})")
    if ns.directory is not None:
        folder(ns.directory, "--directory", owner="bench.sweep")
    with tempfile.TemporaryDirectory(prefix="sigmatch-sweep-") as scratch:
        result = measure(ns.directory or Path(scratch), subscribers=ns.subscribers, events=ns.events, few=ns.few,
                         many=ns.many, rounds=ns.rounds, best=ns.best,
                         echo=lambda line: print(line, file=sys.stderr))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
