"""Campaigns that almost never match (issue 14): what they cost the matcher.

    python -m bench.rare                      # 2M subscribers, 10M events, 40 vs 200 campaigns
    python -m bench.rare --subscribers 200000 --events 1000000 --rounds 1

One `sigmatch gen` world, whose trace's subscribers are then redrawn uniformly: every
subscriber is about as active as any other, so the whole state is the working set, as in a
real network (gen's Zipf law keeps the busiest rows in cache). Configuration A is the
generated one, with enough synthetic campaigns for `--base` campaigns in all. Configuration
B is A plus campaigns up to `--total` whose audience is a list of 10 subscribers, each
triggered by two of the busiest event types: they almost never match. Decode + match + state
(`Engine.replay` without sinks) is timed for A and B in turn, each run in a fresh process,
`--rounds` times, and so is msgpack-python merely iterating the same file (`msgpack.Unpacker`
over the open file, every event built as a list): issue 14 asks A to run at >= 1.5x that
iteration. The medians, the cost of B against A and A over the iteration are printed as
one JSON line.
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from bench._cli import (CAMPAIGNS, CommandError, child_error, command, folder, given_folder, make_private, named,
                        parser as command_parser, relative, run_child, whole_number, world_manifest, write_private)

__all__ = ["make_world", "measure"]

# event types the rare campaigns trigger on, two each in turn (the trace's busiest)
BUSY = ("CALL_MO_END", "CALL_MT_END", "SMS_MO", "DATA_SESSION", "LOCATION_UPDATE")
RARE_MEMBERS = 10


def gen_programmes(seed: int = 1) -> int:
    """How many campaigns `sigmatch gen` makes besides the synthetic ones (its programmes), from
    a world of 1,000 subscribers and events made in a temporary folder (about 0.5 s)."""
    from engine.world.gen import generate
    with tempfile.TemporaryDirectory(prefix="sigmatch-rare-probe-") as scratch:
        return generate(Path(scratch), subscribers=1000, events=1000, campaigns=0, seed=seed).campaigns


def make_world(directory: Path, *, subscribers: int, events: int, base: int, total: int,
               seed: int = 1) -> tuple[Path, Path, Path, int, int]:
    """Generate the world into `directory` (reused when its manifest matches); returns
    (config A, config B, uniform trace, campaigns in A, campaigns in B)."""
    from engine.language.config import load_config
    from engine.world.gen import EVENT_DTYPE as WIRE, generate

    manifest = directory / "rare-world.json"
    wanted = dict(subscribers=subscribers, events=events, base=base, total=total, seed=seed)
    known = world_manifest(manifest, wanted, needs={"a": str, "b": str, "trace": str, "nr_a": int, "nr_b": int})
    if known is not None:
        return (named(manifest, known["a"]), named(manifest, known["b"]), named(manifest, known["trace"]),
                known["nr_a"], known["nr_b"])
    # the programmes of `sigmatch gen` come first; synthetic campaigns make up the rest
    programmes = gen_programmes(seed)
    if base < programmes:
        raise CommandError(f"--base {base:,}: A holds gen's {programmes} programmes at least; give --base {programmes} "
                           f"or more")
    if total <= base:
        raise CommandError(f"--total {total:,}: B holds more campaigns than A's {base:,} (--base)")
    generated = generate(directory, subscribers=subscribers, events=events,
                         campaigns=base - programmes, seed=seed)
    config_a = Path(generated.config)
    rng = np.random.default_rng(seed)

    # the same events, their subscribers drawn uniformly from the profiles
    import pyarrow.parquet as pq
    msisdn = pq.read_table(directory / "profiles.parquet", columns=["msisdn"]).column(0).to_numpy().astype(np.uint64)
    trace = directory / "uniform.msgpack"
    wire = np.fromfile(generated.trace, dtype=WIRE)
    wire["msisdn"] = msisdn[rng.integers(0, len(msisdn), len(wire))]
    wire.tofile(trace)
    make_private(trace)

    members = rng.choice(msisdn, RARE_MEMBERS, replace=False)
    write_private(directory / "lists" / "rare.txt", "".join(f"{m}\n" for m in members))
    text = config_a.read_text().replace("[lists]\n", '[lists]\nrare           = "lists/rare.txt"\n', 1)
    nr_a = len(load_config(config_a).campaigns)
    for i in range(total - nr_a):
        text += (f'\n[[campaign]]\nid = "rare_{i + 1:03d}"\npriority = {1 + i % 30}\n'
                 f'on = ["{BUSY[i % len(BUSY)]}", "{BUSY[(i + 2) % len(BUSY)]}"]\n'
                 f'audience = "rare"\ncooldown = "1d"\nchannel = "sms"\ntemplate = "RARE_{i + 1:03d}"\n')
    config_b = directory / "campaigns-rare.toml"
    write_private(config_b, text)
    nr_b = len(load_config(config_b).campaigns)
    write_private(manifest, json.dumps(dict(world=wanted, a=relative(manifest, config_a), b=relative(manifest, config_b),
                                            trace=relative(manifest, trace), nr_a=nr_a, nr_b=nr_b)))
    return config_a, config_b, trace, nr_a, nr_b


def _match_rate(config: Path, trace: Path) -> dict:
    """Decode + match + state over the trace, in this process (no sinks, drained)."""
    from engine.api import Engine
    engine = Engine.from_config(config)
    started = time.perf_counter()
    run = engine.replay([trace], keep=False, progress=False, drain=True)
    seconds = time.perf_counter() - started
    events = run.stats["run"]["events"] + sum(run.stats["run"]["bad_events"].values())
    return {"events": events, "seconds": seconds, "actions": run.stats["run"]["actions"]}


def _iteration_rate(trace: Path) -> dict:
    """msgpack-python merely iterating the trace file, in this process: the yardstick of
    issue 14, part 2 (the engine's decode + match + state at >= 1.5x its rate)."""
    import msgpack
    started = time.perf_counter()
    with open(trace, "rb") as f:
        events = sum(1 for _ in msgpack.Unpacker(f))
    return {"events": events, "seconds": time.perf_counter() - started}


def _child(config: Optional[Path], trace: Path) -> dict:
    """One measure in a fresh process: the replay of `config`, or (None) the iteration."""
    how = ["--measure", str(config)] if config is not None else ["--iterate"]
    proc = run_child([sys.executable, "-m", "bench.rare", *how, str(trace)])
    if proc.returncode:
        raise CommandError(child_error("python -m bench.rare", proc.stderr, proc.returncode))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(directory: Path, *, subscribers: int = 2_000_000, events: int = 10_000_000, base: int = 40,
            total: int = 200, rounds: int = 3, seed: int = 1, echo=print) -> dict:
    """A and B in turn, `rounds` times, each in a fresh process; medians in events/s."""
    echo(f"rare: world of {subscribers:,} subscribers, {events:,} events ...")
    config_a, config_b, trace, nr_a, nr_b = make_world(directory, subscribers=subscribers, events=events,
                                                       base=base, total=total, seed=seed)
    rates = {"a": [], "b": [], "msgpack": []}
    actions = {}
    for r in range(rounds):
        for key, config in (("a", config_a), ("b", config_b), ("msgpack", None)):
            result = _child(config, trace)
            rates[key].append(result["events"] / result["seconds"])
            if config is not None:
                actions[key] = result["actions"]
            echo(f"rare: round {r + 1}: {key if config is None else key.upper()} "
                 f"{rates[key][-1] / 1e6:.2f}M events/s")
    a, b, it = (statistics.median(rates[key]) for key in ("a", "b", "msgpack"))
    return {"subscribers": subscribers, "events": events, "campaigns_a": nr_a, "campaigns_b": nr_b,
            "a_eps": a, "b_eps": b, "cost": 1 - b / a, "msgpack_eps": it, "a_over_msgpack": a / it,
            "actions": actions, "runs_a": rates["a"], "runs_b": rates["b"], "runs_msgpack": rates["msgpack"]}


@command("python -m bench.rare")
def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--measure":
        print(json.dumps(_match_rate(Path(args[1]), Path(args[2]))))
        return
    if args and args[0] == "--iterate":
        print(json.dumps(_iteration_rate(Path(args[1]))))
        return
    parser = command_parser("python -m bench.rare", __doc__, subscribers=2_000_000, events=10_000_000)
    parser.add_argument("--base", type=whole_number(*CAMPAIGNS), default=40,
                        help="campaigns of A in all, gen's programmes among them (at least those)")
    parser.add_argument("--total", type=whole_number(*CAMPAIGNS), default=200,
                        help="campaigns of B in all: A's and rare ones (more than --base)")
    parser.add_argument("--rounds", type=whole_number(1, 1000), default=3)
    parser.add_argument("--directory", type=given_folder,
                        help="keep the world here, a new or empty folder or one of an earlier run (default: a "
                             "temporary one)")
    ns = parser.parse_args(args)
    if ns.total <= ns.base:
        parser.error(f"--total ({ns.total:,}) must be more than --base ({ns.base:,})")
    programmes = gen_programmes()
    if ns.base < programmes:
        # said before the world is announced or made
        parser.error(f"--base ({ns.base:,}) must be at least gen's {programmes} programmes")
    if ns.directory is not None:
        folder(ns.directory, "--directory", owner="bench.rare")
    with tempfile.TemporaryDirectory(prefix="sigmatch-rare-") as scratch:
        result = measure(ns.directory or Path(scratch), subscribers=ns.subscribers, events=ns.events,
                         base=ns.base, total=ns.total, rounds=ns.rounds,
                         echo=lambda line: print(line, file=sys.stderr))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
