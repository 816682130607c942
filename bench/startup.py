"""Startup, timed end to end from the files (issue 14, part 2): `sigmatch replay` against
decoding the trace with msgpack-python and running one DuckDB query over it.

    python -m bench.startup [DIR] [--subscribers 2000000] [--events 8000000] [--runs 5]

The world (written once into DIR, reused when its manifest matches): profiles.csv
(msisdn, arpu, brand), trace.msgpack (bench/peers/world.py's stateless trace: strictly
increasing ts, 2% strangers) and campaigns.toml with one stateless campaign (calls of
subscribers with arpu >= 60 who are not prepaid, sent at once). Each round runs, in fresh
processes and in turn:

* *sigmatch*: `sigmatch replay campaigns.toml trace.msgpack --out OUT --overwrite`, the CLI
  as an operator runs it: imports, profiles, compile, replay, CSV files, stats.json, drain;
* *peer*: a Python process that imports msgpack and duckdb, decodes the trace with
  msgpack.Unpacker into columns, and runs one DuckDB query (`SET threads=1`) joining them
  with `read_csv('profiles.csv')`, fetching the matches as NumPy arrays.

Both are wall time of the whole process (its start included), medians of the rounds. The
peer's matches are checked equal in number to sigmatch's actions.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._cli import (CommandError, child_error, command, folder, given_folder, make_private,
                        parser as command_parser, run_child, whole_number, world_manifest, write_private)

__all__ = ["build_world", "run_startup"]

CONFIG = """\
[engine]
utc_offset = "+08:00"
profiles = "profiles.csv"

[[campaign]]
id = "rich_callers"
channel = "sms"
template = "T_rich"
on = ["CALL_MO_END", "CALL_MT_END"]
where = "arpu >= 60 and brand != 'prepaid'"
"""

# The peer, run as `python -c`: only what it needs is imported (msgpack, numpy, pyarrow, duckdb).
PEER = r"""
import sys, msgpack, numpy as np, pyarrow as pa, duckdb
trace, profiles = sys.argv[1], sys.argv[2]
data = open(trace, "rb").read()
unpacker = msgpack.Unpacker(use_list=False, raw=False, max_buffer_size=len(data))
unpacker.feed(data)
ts, type_, msisdn, peer, cell = list(zip(*unpacker))[:5]
ev = pa.table({"idx": np.arange(len(ts), dtype=np.int64), "ts": np.array(ts, np.int64),
               "type": np.array(type_, np.int32), "msisdn": np.array(msisdn, np.int64),
               "cell": np.array(cell, np.uint32)})
con = duckdb.connect()
con.execute("SET threads=1")
con.register("ev", ev)
result = con.execute(
    "SELECT ev.idx, ev.ts, ev.msisdn, ev.cell FROM ev JOIN read_csv(?, header=true, "
    "columns={'msisdn': 'BIGINT', 'arpu': 'DOUBLE', 'brand': 'VARCHAR'}) p ON ev.msisdn = p.msisdn "
    "WHERE ev.type IN (1, 2) AND p.arpu >= 60 AND p.brand <> 'prepaid'", [profiles]).fetchnumpy()
print(len(result["idx"]))
"""


def build_world(directory: Path, *, subscribers: int, events: int, seed: int = 1) -> Path:
    """profiles.csv, trace.msgpack and campaigns.toml in `directory` (reused when its manifest
    matches); returns the configuration's path."""
    from bench.peers.world import build_stateless_world

    directory = Path(directory)
    manifest = directory / "startup-world.json"
    wanted = {"subscribers": subscribers, "events": events, "seed": seed}
    if world_manifest(manifest, wanted) is not None:
        return directory / "campaigns.toml"
    built = build_stateless_world(directory, subscribers=subscribers, events=events, seed=seed, days=2)
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq
    pa_csv.write_csv(pq.read_table(directory / "profiles.parquet"), directory / "profiles.csv")
    (directory / "profiles.parquet").unlink()
    built.config.write_text(CONFIG)
    make_private(*(directory / name for name in ("profiles.csv", "trace.msgpack", "campaigns.toml")),
                 *directory.glob("*.roar"), *directory.glob("*.txt"))
    write_private(manifest, json.dumps({"world": wanted}))
    return built.config


def _timed(command: list[str], name: str, cwd=None) -> tuple[float, str]:
    started = time.perf_counter()
    done = run_child(command, cwd=cwd)
    elapsed = time.perf_counter() - started
    if done.returncode:
        raise CommandError(f"{name} failed (exit {done.returncode}): {child_error('sigmatch', done.stderr, done.returncode)}")
    return elapsed, done.stdout


def _byte_compiled(tree: Path, python: str) -> None:
    """Write the bytecode of the tree's packages, as `pip install` does for an installed
    sigmatch: a source checkout run with PYTHONDONTWRITEBYTECODE set (this VM's environment)
    would otherwise compile every module of its own at every start, about 0.08 s that no
    installed copy pays."""
    subprocess.run([python, "-m", "compileall", "-q", "engine", "loaders"], cwd=tree, check=True,
                   stdout=subprocess.DEVNULL)


def run_startup(directory: Path, *, subscribers: int, events: int, runs: int = 5,
                trees: tuple = (None,), python: str = sys.executable) -> dict:
    """Rounds of sigmatch (once per tree: a source checkout whose `engine` is run, None for
    this one) and the peer, in turn; {"sigmatch": {tree: [s...]}, "peer": [s...], "actions", "matches"}."""
    config = build_world(directory, subscribers=subscribers, events=events)
    for tree in trees:
        _byte_compiled(Path(tree) if tree else Path(__file__).resolve().parent.parent, python)
    out = Path(directory) / "out"
    sigmatch = [python, "-m", "engine.cli", "replay", str(config), str(config.parent / "trace.msgpack"),
                "--out", str(out), "--overwrite", "--no-progress"]
    peer = [python, "-c", PEER, str(config.parent / "trace.msgpack"), str(config.parent / "profiles.csv")]
    times = {"sigmatch": {tree: [] for tree in trees}, "peer": []}
    actions = matches = None
    for _ in range(runs):
        for tree in trees:
            seconds, _ = _timed(sigmatch, f"sigmatch replay ({tree or 'this tree'})", cwd=tree)
            times["sigmatch"][tree].append(seconds)
            done = json.loads((out / "stats.json").read_text())["run"]["actions"]
            if actions is not None and done != actions:
                raise CommandError(f"{tree}: {done:,} actions where another tree wrote {actions:,}")
            actions = done
        seconds, printed = _timed(peer, "the peer (msgpack + DuckDB)")
        times["peer"].append(seconds)
        matches = int(printed.split()[-1])
    if actions != matches:
        raise CommandError(f"sigmatch wrote {actions:,} actions where the peer found {matches:,} matches")
    return {**times, "actions": actions, "matches": matches}


# the peers' world numbers its subscribers among 200M (bench/peers/world.py); `sigmatch bench
# --peer-subscribers` takes the same bound
PEER_SUBSCRIBERS = (100, 100_000_000)


@command("python -m bench.startup")
def main(argv=None) -> None:
    parser = command_parser("python -m bench.startup", __doc__, subscribers=2_000_000, events=8_000_000,
                            bounds=PEER_SUBSCRIBERS)
    parser.add_argument("directory", nargs="?", type=given_folder, metavar="DIR",
                        help="keep the world here and reuse it (default: a temporary one, removed)")
    parser.add_argument("--runs", type=whole_number(1, 1000), default=5)
    parser.add_argument("--tree", action="append", type=Path, default=None,
                        help="a source checkout whose sigmatch to time as well (repeatable; rounds interleave them)")
    args = parser.parse_args(argv)
    for tree in args.tree or ():
        if not (tree / "engine" / "cli.py").is_file():
            parser.error(f"--tree {tree}: not a sigmatch checkout (no engine/cli.py in it)")
    if args.directory is not None:
        folder(args.directory, "DIR", owner="bench.startup")
    trees = tuple(args.tree) if args.tree else (None,)
    with tempfile.TemporaryDirectory(prefix="sigmatch-startup-") as scratch:
        result = run_startup(args.directory or Path(scratch), subscribers=args.subscribers, events=args.events,
                             runs=args.runs, trees=trees)
    p = statistics.median(result["peer"])
    print(f"msgpack + DuckDB: {', '.join(f'{t:.2f}' for t in result['peer'])} s; median {p:.2f} s")
    for tree, seconds in result["sigmatch"].items():
        s = statistics.median(seconds)
        print(f"sigmatch replay ({tree or 'this tree'}): {', '.join(f'{t:.2f}' for t in seconds)} s; "
              f"median {s:.2f} s; ratio {p / s:.1f}x")
    print(f"{result['actions']:,} actions; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
