"""`sigmatch bench`: named workloads measured stage by stage, one table, one dated line each
in bench/RESULTS.md.

Every workload runs in two child processes: one generates the world (`sigmatch gen`), one
measures it, so that the peak RSS reported is the engine's own and not the generator's.
Stages, each timed on its own, one process with one core busy:

    load        profiles (Parquet) + lists (.roar) + areas + compile
    decode      the decoder alone over the trace (Core.decode, nothing kept)
    match       decode + match + state + timers, no sinks
    sinks       writing the run's actions and conversions as CSV (records/s)
    end to end  `replay` with CSV sinks and the final drain, as `sigmatch replay` runs
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench._cli import (CommandError, child_error, command, folder, named, relative, run_child, world_manifest,
                        write_private)

__all__ = ["WORKLOADS", "run_benchmarks", "machine", "format_table"]

RESULTS = Path(__file__).with_name("RESULTS.md")

# name -> (subscribers, events)
WORKLOADS = {
    "S": (100_000, 1_000_000),
    "M": (2_000_000, 10_000_000),
    "L": (30_000_000, 100_000_000),
}
DEFAULT_CAMPAIGNS = 12


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        memory = f", {kb / 1024 / 1024:.0f} GB"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{model}, {os.cpu_count()} cores{memory}, Python {platform.python_version()}"


def _world(directory: Path, subscribers: int, events: int, campaigns: int, seed: int):
    """Generate (or reuse, when the manifest matches) a world; returns (config, traces)."""
    manifest = directory / "bench-world.json"
    known = world_manifest(manifest, _wanted(subscribers, events, campaigns, seed), needs=WORLD_NEEDS)
    if known is not None:
        return named(manifest, known["config"]), [named(manifest, p) for p in known["traces"]]
    from engine.world.gen import generate
    generated = generate(directory, subscribers=subscribers, events=events, campaigns=campaigns, seed=seed)
    config, traces = Path(generated.config), [Path(p) for p in generated.traces]
    write_private(manifest, json.dumps({"world": _wanted(subscribers, events, campaigns, seed),
                                        "config": relative(manifest, config),
                                        "traces": [relative(manifest, p) for p in traces]}))
    return config, traces


# what a world's manifest names: its configuration and its trace files
WORLD_NEEDS = {"config": str, "traces": list}


def _wanted(subscribers: int, events: int, campaigns: int, seed: int) -> dict:
    return {"subscribers": subscribers, "events": events, "campaigns": campaigns, "seed": seed}


def _decode_rate(engine, traces, window: int = 64 << 20) -> float:
    """Events/s of the decoder alone. Each file is mapped and decoded window by window (a
    window ends where its last whole event does), and decoded pages are handed back, so the
    measurement does not hold a many-GB trace in memory."""
    import mmap
    core = engine._core
    decoded, seconds = 0, 0.0
    for path in traces:
        with open(path, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        view, start = memoryview(data), 0
        while start < len(view):
            t = time.perf_counter()
            n, status, stopped = core.decode(view[start:start + window], keep=False)
            seconds += time.perf_counter() - t
            decoded += n
            advance = stopped if status == 3 and stopped else min(window, len(view) - start)
            if status not in (0, 3) or advance == 0:
                break
            aligned = start - start % mmap.PAGESIZE
            data.madvise(mmap.MADV_DONTNEED, aligned, start + advance - aligned)
            start += advance
        core.take_dead_letters()
        del view
        data.close()
    return decoded / seconds


def measure_world(config: Path, traces: list[Path], scratch: Path) -> dict:
    """All stages over one generated world, in this process."""
    from engine.api import Engine
    from engine.sinks import SinkSet

    t = time.perf_counter()
    engine = Engine.from_config(config)
    load = time.perf_counter() - t
    bytes_per_subscriber = engine.bytes_per_subscriber
    decode_eps = _decode_rate(engine, traces)

    t = time.perf_counter()
    run = engine.replay(traces, keep=True, progress=False, drain=True)
    match = time.perf_counter() - t
    events = run.stats["run"]["events"] + sum(run.stats["run"]["bad_events"].values())

    out = scratch / "sinks"
    t = time.perf_counter()
    with SinkSet(out, campaigns=engine.campaigns, max_records=engine.config.output.max_records,
                 max_age_ms=engine.config.output.max_age_ms) as sinks:
        sinks.write_actions(run.actions)
        sinks.write_conversions(run.conversions)
    sink_s = time.perf_counter() - t
    records = len(run.actions) + len(run.conversions)
    del run, engine
    shutil.rmtree(out, ignore_errors=True)

    fresh = Engine.from_config(config)
    out = scratch / "out"
    t = time.perf_counter()
    run = fresh.replay(traces, out=out, drain=True, keep=False, progress=False)
    end_to_end = time.perf_counter() - t
    shutil.rmtree(out, ignore_errors=True)
    return {
        "subscribers": len(fresh.world.profiles.msisdn),
        "events": events,
        "campaigns": len(fresh.campaigns),
        "load_s": load,
        "decode_eps": decode_eps,
        "match_eps": events / match,
        "sink_rps": records / sink_s if sink_s > 0 else None,
        "end_to_end_eps": events / end_to_end,
        "end_to_end_ns": end_to_end / events * 1e9,
        "actions": run.stats["run"]["actions"],
        "bytes_per_subscriber": bytes_per_subscriber,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024,
    }


def _child(args: list[str]) -> dict:
    """Run `python -m bench.run ARGS` and return the JSON it prints last."""
    proc = run_child([sys.executable, "-m", "bench.run", *args])
    if proc.returncode != 0:
        raise CommandError(child_error("python -m bench.run", proc.stderr, proc.returncode))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_benchmarks(names, *, campaigns: int = DEFAULT_CAMPAIGNS, directory: Path | None = None,
                   seed: int = 1, sizes: dict | None = None, echo=print) -> list[dict]:
    """Generate and measure each named workload; returns one result dict per workload."""
    sizes = {**WORKLOADS, **(sizes or {})}
    results = []
    for name in names:
        if name not in sizes:
            raise ValueError(f"unknown workload {name!r} (known: {', '.join(sizes)})")
        subscribers, events = sizes[name]
        base = directory or Path(tempfile.mkdtemp(prefix="sigmatch-bench-"))
        # sizes written with underscores: error lines mask runs of 7 digits or more, as
        # they would a subscriber's number, and the path they named did not exist
        world_dir = base / f"{name}-{subscribers:_}-{events:_}-{campaigns}-{seed}"
        try:
            folder(world_dir, "--dir")
            # the child reads the same manifest, and makes the world when this one is not it
            reused = world_manifest(world_dir / "bench-world.json", _wanted(subscribers, events, campaigns, seed),
                                    needs=WORLD_NEEDS) is not None
            echo(f"{name}: {'reusing the world of' if reused else 'generating'} {subscribers:,} subscribers, "
                 f"{events:,} events, {campaigns} campaigns{' in ' + str(world_dir) if reused else ''} ...")
            t = time.perf_counter()
            _child(["--generate", str(world_dir), str(subscribers), str(events), str(campaigns), str(seed)])
            echo(f"{name}: world ready in {time.perf_counter() - t:.0f} s; measuring ...")
            # the outputs' folder is the parent's: removed here whatever became of the child
            with tempfile.TemporaryDirectory(prefix="sigmatch-bench-out-") as scratch:
                result = _child(["--measure", str(world_dir), str(subscribers), str(events), str(campaigns),
                                 str(seed), scratch])
            result["workload"] = name
            results.append(result)
        finally:
            if directory is None:
                shutil.rmtree(base, ignore_errors=True)
    return results


COLUMNS = ("workload", "subscribers", "events", "campaigns", "load", "decode", "match", "sinks",
           "end to end", "actions", "B/sub", "peak RSS")


def _cells(r: dict) -> list[str]:
    sinks = f"{r['sink_rps'] / 1e6:.2f}M rec/s" if r.get("sink_rps") else "-"
    return [r["workload"], f"{r['subscribers']:,}", f"{r['events']:,}", str(r["campaigns"]),
            f"{r['load_s']:.1f} s", f"{r['decode_eps'] / 1e6:.1f}M/s", f"{r['match_eps'] / 1e6:.2f}M/s",
            sinks, f"{r['end_to_end_eps'] / 1e6:.2f}M/s ({r['end_to_end_ns']:.0f} ns)", f"{r['actions']:,}",
            f"{r['bytes_per_subscriber']:.0f}", f"{r['peak_rss_gb']:.2f} GB"]


def format_table(results: list[dict]) -> str:
    rows = [list(COLUMNS)] + [_cells(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in rows)


# RESULTS.md ends with the service's own table (bench/service.py); workload rows go before it
SERVICE_HEADING = "## The service from a spool"


def record(results: list[dict], path: Path = RESULTS) -> None:
    """Add one dated markdown row per workload, with the machine, to the workload table."""
    today, where = datetime.date.today(), machine()
    new = [f"| {today} | " + " | ".join(_cells(r)) + f" | {where} |" for r in results]
    lines = path.read_text().splitlines() if path.exists() else []
    end = lines.index(SERVICE_HEADING) if SERVICE_HEADING in lines else len(lines)
    while end > 0 and not lines[end - 1].startswith("|"):
        end -= 1
    if end == 0:
        end = len(lines) if SERVICE_HEADING not in lines else lines.index(SERVICE_HEADING)
    path.write_text("\n".join(lines[:end] + new + lines[end:]) + "\n")


def main(argv=None):
    command("python -m bench.run")(_main)(argv)


def _main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("--generate", "--measure"):
        directory, subscribers, events, campaigns, seed = Path(args[1]), *map(int, args[2:6])
        config, traces = _world(directory, subscribers, events, campaigns, seed)
        if args[0] == "--measure":
            print(json.dumps(measure_world(config, traces, Path(args[6]))))
        else:
            print(json.dumps({"config": str(config)}))
        return
    raise SystemExit("use `sigmatch bench` (this module's entry point is for its child processes)")


if __name__ == "__main__":
    main()
