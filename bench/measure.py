"""Measure the engine on a synthetic workload and append the figures to bench/RESULTS.md.

    python -m bench.measure --subscribers 2000000 --events 10000000 --name M

Stages, each timed on its own: the world's load (profiles, lists, compile), the decoder
alone, decode + match + state without sinks, and the end-to-end replay with CSV sinks and
the final drain. One process, one core busy.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

from engine.gen import generate

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def measure(subscribers: int, events: int, campaigns: int, directory: Path) -> dict:
    from engine.api import Engine

    t = time.perf_counter()
    world = generate(directory, subscribers=subscribers, events=events, campaigns=campaigns, progress=False)
    config, trace = world.config, world.trace
    generated = time.perf_counter() - t

    t = time.perf_counter()
    engine = Engine.from_config(config)
    load = time.perf_counter() - t

    data = trace.read_bytes()
    t = time.perf_counter()
    decoded, status, _ = engine._core.decode(data, keep=False)
    decode = time.perf_counter() - t
    assert status == 0 and decoded == events
    engine._core.take_dead_letters()

    t = time.perf_counter()
    engine.replay(trace, keep=False, progress=False)
    match = time.perf_counter() - t

    fresh = Engine.from_config(config)
    out = directory / "out"
    t = time.perf_counter()
    run = fresh.replay(trace, out=out, drain=True, keep=False, progress=False)
    end_to_end = time.perf_counter() - t
    return {
        "subscribers": subscribers,
        "events": events,
        "campaigns": world.campaigns,      # the programmes and the synthetic ones
        "trace_bytes": len(data),
        "generate_s": generated,
        "load_s": load,
        "decode_eps": events / decode,
        "match_eps": events / match,
        "end_to_end_eps": events / end_to_end,
        "end_to_end_ns": end_to_end / events * 1e9,
        "actions": run.stats["run"]["actions"],
        "bytes_per_subscriber": fresh.bytes_per_subscriber,
        "peak_rss_gb": peak_rss_gb(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--campaigns", type=int, default=12, help="synthetic campaigns besides the programmes")
    parser.add_argument("--name", default="")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="sigmatch-bench-"))
    try:
        r = measure(args.subscribers, args.events, args.campaigns, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    line = (f"| {datetime.date.today()} | {args.name} | {r['subscribers']:,} | {r['events']:,} | {r['campaigns']} "
            f"| {r['load_s']:.1f} s | {r['decode_eps'] / 1e6:.1f}M | {r['match_eps'] / 1e6:.2f}M "
            f"| {r['end_to_end_eps'] / 1e6:.2f}M ({r['end_to_end_ns']:.0f} ns) | {r['actions']:,} "
            f"| {r['bytes_per_subscriber']:.0f} | {r['peak_rss_gb']:.2f} GB | {machine()} |")
    print(line)
    if not args.no_record:
        with RESULTS.open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
