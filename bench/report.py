"""`sigmatch report` over a large output directory: `python -m bench.report [DIR] [--actions N]
[--conversions N] [--format csv|jsonl|parquet]`.

The directory is written once (reused when DIR already holds it) by the engine's own sinks from
synthetic records: N actions of 15 campaigns over 5 channels and 30 local days, 5% controls,
conversions of distinct contacts. Then `report` is timed in a fresh process, as an operator
runs it (`sigmatch report DIR --json`: its wall time and CPU time), and stage by stage in
this one (read, build). Prints one table row for bench/RESULTS.md, with the load average
after the run (the machine is shared: the wall time depends on it, the CPU time much less)."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._cli import (CommandError, child_error, command, folder, given_folder, parser as command_parser,
                        run_child, whole_number, write_private)
from bench.run import machine

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGNS = 15
CHANNELS = ("sms", "boss", "mms", "outbound", "popup")
T0 = 1_793_548_800_000          # 2026-11-02 00:00 +08:00
DAY = 86_400_000


def _config(directory: Path) -> Path:
    lines = ['[engine]\nutc_offset = "+08:00"\n']
    for i in range(CAMPAIGNS):
        lines.append(f'[[campaign]]\nid = "c{i:02d}"\non = ["CALL_MO_END"]\nchannel = "{CHANNELS[i % 5]}"\n'
                     f'template = "T{i:02d}"\nholdout = 0.05\n')
    path = directory / "campaigns.toml"
    write_private(path, "\n".join(lines))
    return path


def make_outputs(out: Path, actions: int, conversions: int, fmt: str = "csv", seed: int = 1,
                 hourly: bool = True) -> None:
    """Write `actions` action records and `conversions` conversion records into `out`, in files
    rotated hourly (event time) and at 100,000 records, as a run does by default; at 100,000
    records only without `hourly`."""
    from engine.api import configuration_identity
    from engine.language.config import load_config
    from engine.records import ACTION_DTYPE, CONVERSION_DTYPE
    from engine.sinks import SinkSet
    out.mkdir(parents=True)
    config = load_config(_config(out.parent))
    rng = np.random.default_rng(seed)
    a = np.zeros(actions, ACTION_DTYPE)
    a["seq"] = np.arange(1, actions + 1)
    a["ts"] = T0 + np.sort(rng.integers(0, 30 * DAY, actions))
    a["trigger_ts"] = a["ts"]
    a["msisdn"] = 13_800_000_000 + rng.integers(0, 3_000_000, actions)
    a["campaign"] = rng.integers(0, CAMPAIGNS, actions)
    a["kind"] = rng.random(actions) < 0.05
    chosen = np.sort(rng.choice(actions, conversions, replace=False))
    c = np.zeros(conversions, CONVERSION_DTYPE)
    c["seq"] = np.arange(1, conversions + 1)
    c["contact_seq"] = a["seq"][chosen]
    c["ts"] = a["ts"][chosen] + rng.integers(1, DAY, conversions)
    c["msisdn"] = a["msisdn"][chosen]
    c["campaign"] = a["campaign"][chosen]
    c["kind"] = a["kind"][chosen]
    c = c[np.argsort(c["ts"], kind="stable")]
    c["seq"] = np.arange(1, conversions + 1)
    with SinkSet(out, campaigns=config.campaigns, format=fmt, max_age_ms=3_600_000 if hourly else None) as sinks:
        for start in range(0, actions, 1 << 20):
            sinks.write_actions(a[start:start + (1 << 20)])
        sinks.write_conversions(c)
        stats = {"configuration": configuration_identity(config),
                 "run": {"actions": actions, "conversions": conversions, "first_seq": 1, "last_seq": actions},
                 "campaigns": {s.id: {"matched": int((a["campaign"] == i).sum()), "sent": 0, "control": 0}
                               for i, s in enumerate(config.campaigns)}}
        sinks.write_stats(stats)


@command("python -m bench.report")
def main(argv=None) -> None:
    parser = command_parser("python -m bench.report", __doc__)
    parser.add_argument("directory", nargs="?", type=given_folder, metavar="DIR",
                        help="keep the outputs here and reuse them (default: a temporary folder, removed)")
    parser.add_argument("--actions", type=whole_number(1, 10**10), default=10_000_000)
    parser.add_argument("--conversions", type=whole_number(0, 10**10), default=None,
                        help="at most --actions: each converts a distinct contact (default: 1,000,000, or "
                             "--actions when fewer)")
    parser.add_argument("--format", default="csv", choices=("csv", "jsonl", "parquet"))
    parser.add_argument("--no-hourly", dest="hourly", action="store_false",
                        help="Rotate files at 100,000 records only (default: also hourly, as a run does).")
    args = parser.parse_args(argv)
    if args.conversions is None:
        args.conversions = min(1_000_000, args.actions)
    if args.conversions > args.actions:
        parser.error(f"--conversions ({args.conversions:,}) must be at most --actions ({args.actions:,})")
    if args.directory is not None:
        folder(args.directory, "DIR", owner="bench.report")
    with tempfile.TemporaryDirectory(prefix="sigmatch-bench-report-") as scratch:
        _measure(args, args.directory or Path(scratch))


def _measure(args, base: Path) -> None:
    out = base / f"out-{args.format}-{args.actions}-{args.conversions}{'' if args.hourly else '-large'}"
    if not (out / "stats.json").is_file():
        # stats.json is written last: without it, a writing cut short, made again
        if out.is_dir() and not out.is_symlink():
            shutil.rmtree(out)
        started = time.perf_counter()
        make_outputs(out, args.actions, args.conversions, args.format, hourly=args.hourly)
        print(f"outputs written in {time.perf_counter() - started:.1f} s: {out}", file=sys.stderr)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())

    import resource
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = run_child([sys.executable, "-m", "engine.cli", "report", str(out), "--json", "--no-progress"], cwd=ROOT)
    whole = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode:
        raise CommandError(f"sigmatch report {out}: exit {proc.returncode}: {child_error('sigmatch', proc.stderr, proc.returncode)}")

    from engine.closedloop.outputs import read_outputs
    from engine.closedloop.report import build_report
    started = time.perf_counter()
    outputs = read_outputs([out], progress=False)
    read = time.perf_counter() - started
    started = time.perf_counter()
    build_report(outputs)
    build = time.perf_counter() - started
    load = os.getloadavg()[0]
    nr_files = sum(1 for p in out.rglob("*-*.*") if p.is_file())
    print(f"| {time.strftime('%Y-%m-%d')} | {args.format} | {args.actions:,} | {args.conversions:,} | {nr_files:,} | "
          f"{size / 1e9:.2f} GB | {whole:.1f} s | {cpu:.1f} s | {read:.1f} s | {build:.1f} s | {load:.1f} | {machine()} |")


if __name__ == "__main__":
    main()
