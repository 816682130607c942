"""Every core (issue 14, part 3): `sigmatch replay --workers N` against one process.

    python -m bench.workers                          # M: 2M subscribers, 10M events; 1 and 2 workers
    python -m bench.workers --subscribers 200000 --events 1000000 --workers 1 2 3 --rounds 1
    python -m bench.workers --ray                    # 2 workers as Ray actors (issue 14, part 4)
    python -m bench.workers --plot docs/scaling.json docs/scaling.png   # draw recorded runs
    python -m bench.workers --alone 16               # one shard of 16 alone, against one process

One `sigmatch gen` world. Each round runs `sigmatch replay CONFIG TRACE --out OUT --workers N`
for every N in turn, each in a fresh process tree, and times it end to end (wall clock, from
the command's start to its exit: loading, the stream, the merge and the files). The peak of
the process tree's memory (the sum of proportional set sizes, so that pages the forked
workers share count once) is sampled every 200 ms (reading it walks the page tables: more often, it slows the run). Each worker
also logs its own load and stream times (engine.workers), which are collected. The outputs
of every N are compared with N = 1's (every file; stats.json without `timing`). Prints one
JSON line: per N the median wall time, its speed-up over N = 1, the peak PSS, the median
per-worker stream time and the median CPU time of the whole tree.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._cli import (EVENTS, SUBSCRIBERS, CommandError, OneLineParser, child_error, command, folder,
                        given_folder, make_private, named, relative, whole_number, world_manifest,
                        write_private)

__all__ = ["make_world", "measure", "plot", "alone"]

_WORKER_LINE = re.compile(r"worker (\d+) of (\d+): .* loaded in ([0-9.]+) s, the stream in ([0-9.]+) s[^\n]*")
_COORDINATOR_LINE = re.compile(r"the coordinator: [^\n]*")


def make_world(directory: Path, *, subscribers: int, events: int, seed: int = 1) -> tuple[Path, Path]:
    """Generate the world into `directory` (reused when its manifest matches, made again when
    it names another world or does not parse: the folder is this command's, `_cli.folder`);
    returns (config, trace)."""
    from engine.world.gen import generate
    manifest = directory / "workers-world.json"
    wanted = dict(subscribers=subscribers, events=events, seed=seed)
    known = world_manifest(manifest, wanted, needs={"config": str, "trace": str})
    if known is not None:
        return named(manifest, known["config"]), named(manifest, known["trace"])
    generated = generate(directory, subscribers=subscribers, events=events, seed=seed)
    write_private(manifest, json.dumps({"world": wanted, "config": relative(manifest, generated.config),
                                        "trace": relative(manifest, generated.trace)}))
    return Path(generated.config), Path(generated.trace)


def _tree_memory(root: int) -> int:
    """Proportional set size (PSS) of `root` and all its descendants, in bytes: pages the
    forked workers share with the coordinator count once in all, where summing resident
    sizes would count them once per process (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
        todo.extend(children.get(pid, ()))
    return total


def _run(config: Path, trace: Path, out: Path, workers: int, ray: bool = False,
         sample_s: float = 0.2) -> tuple[float, int, list[tuple[float, float]], float, list[str]]:
    """(wall seconds, peak PSS bytes of the process tree, [(load s, stream s)] per worker,
    CPU seconds of the tree: user + system, every process waited for, each worker's line as
    `sigmatch -v` logs it: its waits and how often the slowest held it back, then the
    coordinator's: where the time outside the streams went). With `ray` (and
    workers > 1) the command runs `--ray`, starting a local Ray cluster whose processes (the
    actors among them) are the command's children: the memory and CPU figures count them."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "engine.cli", "-v", "replay", str(config), str(trace), "--out", str(out),
               "--workers", str(workers), "--no-progress"] + (["--ray"] if ray and workers > 1 else [])
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        peak = 0
        while process.poll() is None:
            peak = max(peak, _tree_memory(process.pid))
            time.sleep(sample_s)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        err.seek(0)
        text = err.read().decode(errors="replace")
    if process.returncode:
        raise CommandError(f"replay --workers {workers} failed: {child_error('sigmatch', text, process.returncode)}")
    found = list(_WORKER_LINE.finditer(text))
    shards = [(float(m.group(3)), float(m.group(4))) for m in found]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, peak, shards, cpu, [m.group(0) for m in found] + _COORDINATOR_LINE.findall(text)


def _same(a: Path, b: Path) -> bool:
    for path in a.rglob("*"):
        if path.is_dir():
            continue
        other = b / path.relative_to(a)
        if path.name == "stats.json":
            left, right = json.loads(path.read_text()), json.loads(other.read_text())
            left.pop("timing"), right.pop("timing")
            if left != right:
                return False
        elif not filecmp.cmp(path, other, shallow=False):
            return False
    return sorted(p.relative_to(a) for p in a.rglob("*")) == sorted(p.relative_to(b) for p in b.rglob("*"))


def measure(config: Path, trace: Path, scratch: Path, workers: list[int], rounds: int, ray: bool = False,
            sample_s: float = 0.2, progress=None) -> dict:
    """Run every N in `workers` `rounds` times, interleaved, in the order given (the first N
    is the base of the speed-ups and of the comparison); returns the figures by N.
    `progress(n, run)` is called after each run with its tuple from `_run`, so that a long
    measurement (L on 16 cores) shows what it has before it ends."""
    runs: dict[int, list] = {n: [] for n in workers}
    for _ in range(rounds):
        for n in workers:
            runs[n].append(_run(config, trace, scratch / f"out-{n}", n, ray, sample_s))
            if progress:
                progress(n, runs[n][-1])
    base = statistics.median(r[0] for r in runs[workers[0]])
    figures = {}
    for n in workers:
        wall = statistics.median(r[0] for r in runs[n])
        streams = [s for r in runs[n] for _, s in r[2]]
        figures[n] = {
            "wall_s": round(wall, 2), "speedup": round(base / wall, 2),
            "peak_pss_mb": round(max(r[1] for r in runs[n]) / 2**20),
            "worker_stream_s": round(statistics.median(streams), 2) if streams else None,
            "cpu_s": round(statistics.median(r[3] for r in runs[n]), 2),
            "identical": _same(scratch / f"out-{workers[0]}", scratch / f"out-{n}"),
        }
    return figures


def alone(config: Path, trace: Path, workers: int) -> dict:
    """What one worker's stream costs when nothing runs beside it: shard 0 of `workers`
    compiled and fed the whole trace in this process, the other lanes marked finished (so it
    never waits), against one process fed the same trace, and the decoder alone. Core only:
    no sinks, no coordinator. Returns seconds: {"workers", "shard_s", "one_process_s",
    "decode_s", "events"}. Set beside `replay --workers N` on the same host, the difference
    is what the workers cost each other (docs/performance.md, "Measured on 16 cores")."""
    import numpy as np
    from engine._core import shard_block_size, shard_counts_size
    from engine.api import Engine, stream_error
    from engine.language.compile import load_world
    from engine.language.config import load_config
    from engine.workers import RING_BITS, _nr_budgets, _shared_block
    from loaders.traces import iter_chunks
    loaded = load_config(Path(config))
    world = load_world(loaded)

    def stream(engine, sharded: bool) -> tuple[float, int]:
        core = engine._core
        started = time.perf_counter()
        core.begin_stream()
        status = 0
        for chunk in iter_chunks([Path(trace)]):
            status = status or core.feed(chunk)
            if status:
                raise stream_error(status, core.error_offset, [(0, str(trace))])
            if sharded:
                core.take_sharded()
            else:
                core.take_actions()
                core.take_conversions()
            core.take_dead_letters()
        status = core.end_stream()
        if status:
            raise stream_error(status, core.error_offset, [(0, str(trace))])
        core.drain()
        return time.perf_counter() - started, int(core.counts()["events"])

    engine = Engine(loaded, world, shard=(0, workers))
    block = _shared_block(shard_block_size(workers, _nr_budgets(loaded), RING_BITS))
    engine._core.attach_shard(block, 0, workers, RING_BITS, sum(1 for c in loaded.campaigns if c.delay_ms))
    # every other lane says what a finished worker's says (Core.shard_done): past every key
    no_counts, no_ring = bytes(shard_counts_size(_nr_budgets(loaded))), np.zeros(0, np.uint64)
    for j in range(1, workers):
        engine._core.shard_import(j, (2**64 - 1, 2**63 - 1, 0), 0, 0, no_counts, 0, no_ring)
    shard_s, events = stream(engine, True)
    engine._core.shard_done()
    engine = None
    one_s, _ = stream(Engine(loaded, world), False)
    core = Engine(loaded, world)._core
    started = time.perf_counter()
    for chunk in iter_chunks([Path(trace)]):
        core.decode(chunk, keep=False)
    decode_s = time.perf_counter() - started
    return {"workers": workers, "events": events, "shard_s": round(shard_s, 2), "one_process_s": round(one_s, 2),
            "decode_s": round(decode_s, 2)}


def plot(recorded: Path, png: Path) -> None:
    """Draw the runs recorded in `recorded` (docs/scaling.json: {"world", "machine", "runs":
    [{"workers", "wall_s", "worker0_stream_s", "series"}, ...]}) into `png`: the end-to-end
    wall time and worker 0's stream time, in seconds, by workers.
    Needs matplotlib (the [bench] extra)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    doc = json.loads(Path(recorded).read_text())
    series: dict[str, list] = {}
    for run in doc["runs"]:
        series.setdefault(run["series"], []).append(run)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4 + 0.17 * ((len(series) + 2) // 2) + 0.1))
    most = max(r["workers"] for r in doc["runs"])
    for name, runs in series.items():
        runs.sort(key=lambda r: r["workers"])
        left.plot([r["workers"] for r in runs], [r["wall_s"] for r in runs], "o-", label=name)
        streamed = [r for r in runs if r.get("worker0_stream_s")]
        right.plot([r["workers"] for r in streamed], [r["worker0_stream_s"] for r in streamed], "o-", label=name)
    # what N workers would take if one process's time were divided by N (the first series)
    first = sorted(next(iter(series.values())), key=lambda r: r["workers"])
    if first[0]["workers"] == 1:
        ns = [r["workers"] for r in first]
        left.plot(ns, [first[0]["wall_s"] / n for n in ns], ":", color="grey", label="one process / N")
    left.set(xscale="log", xlabel="workers", ylabel="seconds", ylim=(0, None),
             title="replay --workers N, end to end (wall)")
    right.set(xscale="log", xlabel="workers", ylabel="seconds", ylim=(0, None),
              title="one worker's stream (decode, match, wait)")
    for axis in (left, right):
        axis.set_xticks([1, 2, 4, 8, 16][: 1 + most.bit_length()])
        axis.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    # one legend under both, where it hides no point (the series are the same on both sides)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.suptitle(f"{doc['world']}\n{doc['machine']}", fontsize=8)
    rows = (len(labels) + 1) // 2
    fig.tight_layout(rect=(0, (0.17 * rows + 0.1) / fig.get_figheight(), 1, 1))
    fig.savefig(png, dpi=110)
    make_private(png)


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < seconds <= 60:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 60 seconds, not {text}")
    return seconds


@command("python -m bench.workers")
def main(argv=None) -> None:
    parser = OneLineParser(prog="python -m bench.workers", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--subscribers", type=whole_number(*SUBSCRIBERS), default=2_000_000, help="the world's subscribers")
    parser.add_argument("--events", type=whole_number(*EVENTS), default=10_000_000, help="the world's events")
    parser.add_argument("--workers", type=whole_number(1, 256), nargs="+", default=[1, 2],
                        help="the N to run, in this order (the first is the base of the speed-ups)")
    parser.add_argument("--rounds", type=whole_number(1, 1000), default=3, help="runs of every N, interleaved")
    parser.add_argument("--dir", type=given_folder, default=None,
                        help="the world's folder, kept and reused (default: sigmatch-workers-SUBSCRIBERS-EVENTS in "
                             "the system's temporary folder)%(default).0s")
    parser.add_argument("--sample-s", type=_positive_seconds, default=0.2,
                        help="seconds between samples of the tree's PSS (reading it walks the page tables: "
                             "at L on 16 workers, 1 s)")
    parser.add_argument("--ray", action="store_true",
                        help="run N > 1 as `--ray` on a local Ray cluster (needs the [ray] extra)")
    parser.add_argument("--plot", nargs=2, type=Path, metavar=("JSON", "PNG"),
                        help="draw the runs recorded in JSON (docs/scaling.json) into PNG, and stop")
    parser.add_argument("--alone", type=whole_number(2, 256), metavar="N",
                        help="time shard 0 of N alone (the others marked finished) against one process and "
                             "the decoder, core only, on the world; print one JSON line and stop")
    args = parser.parse_args(argv)
    if args.plot:
        if args.plot[1].suffix.lower() != ".png" or args.plot[1].is_dir():
            parser.error(f"--plot: {args.plot[1]}: the picture's path must end in .png")
        try:
            plot(*args.plot)
        except OSError as e:
            raise CommandError(f"{e.filename or args.plot[0]}: {e.strerror or e}") from None
        except (ValueError, KeyError, TypeError) as e:
            # json.JSONDecodeError is a ValueError; a run without "workers" or "wall_s", a KeyError
            raise CommandError(f"{args.plot[0]}: not runs as docs/scaling.json records them ({type(e).__name__}: {e})") from None
        return
    directory = args.dir or Path(tempfile.gettempdir()) / f"sigmatch-workers-{args.subscribers}-{args.events}"
    folder(directory, "--dir", owner="bench.workers")
    try:
        config, trace = make_world(directory, subscribers=args.subscribers, events=args.events)
    except OSError as e:
        raise CommandError(f"{e.filename or directory}: {e.strerror or e}") from None
    except CommandError:
        raise
    except ValueError as e:     # a world sigmatch gen cannot make (too few subscribers for its lists)
        raise CommandError(f"sigmatch gen: {e}") from None
    if args.alone is not None:
        try:
            print(json.dumps({"subscribers": args.subscribers, **alone(config, trace, args.alone)}))
        except OSError as e:
            raise CommandError(f"{e.filename or trace}: {e.strerror or e}") from None
        return
    def progress(n, run):
        wall, peak, shards, cpu, said = run
        print(json.dumps({"workers": n, "wall_s": round(wall, 2), "peak_pss_mb": round(peak / 2**20),
                          "cpu_s": round(cpu, 2), "load_stream_s": shards, "said": said}), file=sys.stderr, flush=True)

    figures = measure(config, trace, directory, list(dict.fromkeys(args.workers)), args.rounds, args.ray,
                      args.sample_s, progress)
    print(json.dumps({"subscribers": args.subscribers, "events": args.events, "rounds": args.rounds, "ray": args.ray,
                      "cores": os.cpu_count(), "by_workers": figures}))


if __name__ == "__main__":
    main()
