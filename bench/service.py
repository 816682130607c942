"""`sigmatch bench --service`: the daemon from a spool against `replay` on the same files.

One world from `sigmatch gen`, its trace cut into many spool files (as probes drop them).
Replay and the daemon run in turn, three times each, each in a fresh process; medians are
reported (single runs on a shared machine vary by about 10%).
- `replay` runs over the files as `sigmatch replay` does (CSV sinks, without the final
  drain, which a service does not do), timed from the first byte to the last file closed.
- The daemon runs as `sigmatch run --spool` (durable sinks, incremental checkpoints at its
  default cadence), timed from its READY notification (the world is loaded) until every
  spool file is in `done/`, which it moves only once a checkpoint covers it: all output
  committed.
Both outputs are compared row for row.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.run import RESULTS, SERVICE_HEADING as TABLE_HEADING, machine

__all__ = ["SERVICE_WORLD", "measure_service", "format_service", "record_service"]

# subscribers, events, spool files, synthetic campaigns
SERVICE_WORLD = (2_000_000, 60_000_000, 120, 12)


def _rows(out: Path) -> list[tuple]:
    found = []
    for path in sorted(out.rglob("actions-*.csv")):
        with open(path, newline="") as f:
            found += [tuple(r.values()) for r in csv.DictReader(f)]
    return sorted(found)


def _replay_once(config: Path, traces: list[Path], out: Path) -> tuple[float, int]:
    """`replay` in a fresh process, as `sigmatch replay` runs (the daemon gets one too)."""
    proc = subprocess.run([sys.executable, "-m", "bench.service", "--replay", str(config), str(out),
                           *map(str, traces)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"replay failed: {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["seconds"], result["events"]


def _replay_child(config: str, out: str, traces: list[str]) -> None:
    from engine.api import Engine
    engine = Engine.from_config(config)
    os.sync()       # no write-back of an earlier run's files during this one
    started = time.perf_counter()
    run = engine.replay([Path(t) for t in traces], out=Path(out), keep=False, progress=False)
    seconds = time.perf_counter() - started
    events = run.stats["run"]["events"] + sum(run.stats["run"]["bad_events"].values())
    print(json.dumps({"seconds": seconds, "events": events}))


def check_daemon_options(daemon_args: tuple) -> str | None:
    """What `sigmatch run` would say of `daemon_args` (the options --service-option passes it),
    in one line, or None when it takes them: parsed as the daemon parses them, beside paths of
    a temporary folder, without running it, so that a bad option is said before a world is
    generated (it was said, after the world and a replay, as a timeout)."""
    import click

    from engine.cli import run as run_command
    with tempfile.TemporaryDirectory(prefix="sigmatch-service-options-") as scratch:
        config = Path(scratch) / "campaigns.toml"
        config.write_text("")
        (Path(scratch) / "spool").mkdir()
        ours = {"out": Path(scratch) / "out", "state": Path(scratch) / "state", "spool": Path(scratch) / "spool"}
        for name in ours:
            # given by the user beside the benchmark's own: said as such, not as an option
            # given twice (which `run` refuses)
            if any(arg == f"--{name}" or arg.startswith(f"--{name}=") for arg in daemon_args):
                return (f"--{name} is the benchmark's own (it copies the trace files into its spool and compares "
                        "the output)")
        args = [str(config), *(word for name, path in ours.items() for word in (f"--{name}", str(path))), *daemon_args]
        try:
            with contextlib.redirect_stdout(io.StringIO()):     # what --help would print
                # the help's names as the top command gives them: click keeps the first
                # context's on the command for good (`sigmatch run -h` would stop working
                # in this process)
                context = run_command.make_context("sigmatch run", args, help_option_names=["-h", "--help"])
        except click.exceptions.Exit:
            return "--help and the like print and exit: give options of a run"
        except click.ClickException as e:
            return e.format_message().strip().splitlines()[0]
    # the benchmark feeds the daemon its own spool and reads its own output: another spool
    # would never empty, and standard input would never be written
    for name, path in ours.items():
        if Path(context.params[name]) != path:
            return f"--{name} is the benchmark's own (it copies the trace files into its spool and compares the output)"
    if context.params.get("from_stdin"):
        return "--stdin: the benchmark feeds the daemon from its spool"
    return None


def _daemon_once(config: Path, traces: list[Path], directory: Path, daemon_args: tuple) -> tuple[float, float]:
    spool = directory / "spool"
    spool.mkdir()
    for trace in traces:
        shutil.copy(trace, spool / trace.name)
    os.sync()       # the copies are on disk before the clock starts, as a probe's files would be
    notify = directory / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(0.5)
    state = directory / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", str(config), "--out", str(directory / "out"),
         "--state", str(state), "--spool", str(spool), *daemon_args],
        env=dict(os.environ, NOTIFY_SOCKET=str(notify)), stderr=subprocess.PIPE, text=True)
    try:
        with listener:
            # the daemon loads the world (minutes at 2M subscribers); one that exits first, on
            # an option or a file it refuses, is said at once, in its own words
            waited = time.monotonic()
            while True:
                try:
                    ready = listener.recv(64)
                    break
                except socket.timeout:
                    if proc.poll() is not None:
                        said = [line for line in proc.stderr.read().splitlines() if line.strip()]
                        raise RuntimeError(f"the daemon exited ({proc.returncode}) before it was ready: "
                                           f"{said[-1].strip() if said else 'it said nothing'}")
                    if time.monotonic() - waited > 600:
                        raise RuntimeError("the daemon did not report READY in 10 minutes")
            if ready != b"READY=1":
                raise RuntimeError("the daemon did not report READY")
        started = time.perf_counter()
        while any(spool.glob("*.msgpack")):
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited: {proc.stderr.read()[-2000:]}")
            time.sleep(0.02)
        seconds = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    # with --workers the checkpoints are in STATE/shard-i/
    state_bytes = sum(p.stat().st_size for p in state.rglob("*") if p.is_file())
    return seconds, state_bytes / 1e9


def measure_service(directory: Path, *, subscribers: int, events: int, files: int, campaigns: int,
                    seed: int = 1, daemon_args: tuple = (), repeat: int = 3, echo=print) -> dict:
    """Replay and the daemon in turn, `repeat` times each on the same files: the medians
    are reported (a shared machine's noise is of the order of the difference measured)."""
    from engine.world.gen import generate

    echo(f"service: generating {subscribers:,} subscribers, {events:,} events in {files} files ...")
    generated = generate(directory / "world", subscribers=subscribers, events=events, campaigns=campaigns,
                         seed=seed, trace_files=files)
    traces = [Path(p) for p in generated.traces]
    replays, daemons = [], []
    for i in range(repeat):
        echo(f"service: replay, run {i + 1} of {repeat} ...")
        out = directory / f"replay-{i}"
        seconds, counted = _replay_once(generated.config, traces, out)
        replays.append(seconds)
        echo(f"service: the daemon, run {i + 1} of {repeat} ...")
        run_dir = directory / f"daemon-{i}"
        run_dir.mkdir()
        seconds, state_gb = _daemon_once(generated.config, traces, run_dir, daemon_args)
        daemons.append(seconds)
        if _rows(out) != _rows(run_dir / "out"):
            raise RuntimeError("the daemon's actions differ from replay's")
        shutil.rmtree(out)
        shutil.rmtree(run_dir)
    replay_s, daemon_s = sorted(replays)[len(replays) // 2], sorted(daemons)[len(daemons) // 2]
    return {
        "subscribers": subscribers, "events": counted, "files": files,
        "campaigns": campaigns + 3,
        "replay_s": replay_s, "daemon_s": daemon_s,
        "replay_eps": counted / replay_s, "daemon_eps": counted / daemon_s,
        "ratio": replay_s / daemon_s,
        "runs": repeat, "replay_runs": replays, "daemon_runs": daemons,
        "state_gb": state_gb,
        "args": " ".join(daemon_args) or "default",
    }


COLUMNS = ("subscribers", "events", "spool files", "campaigns", "runs", "replay", "daemon", "daemon/replay",
           "state dir", "options")


def _cells(r: dict) -> list[str]:
    return [f"{r['subscribers']:,}", f"{r['events']:,}", str(r["files"]), str(r["campaigns"]), str(r["runs"]),
            f"{r['replay_eps'] / 1e6:.2f}M/s ({r['replay_s']:.2f} s)",
            f"{r['daemon_eps'] / 1e6:.2f}M/s ({r['daemon_s']:.2f} s)",
            f"{r['ratio'] * 100:.0f}%", f"{r['state_gb']:.2f} GB", r["args"]]


def format_service(results: list[dict]) -> str:
    rows = [list(COLUMNS)] + [_cells(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows)


def record_service(results: list[dict], path: Path = RESULTS) -> None:
    """Add one dated row per result to the service table of bench/RESULTS.md."""
    lines = path.read_text().splitlines()
    heading = lines.index(TABLE_HEADING)
    end = heading + 1
    while end < len(lines) and not lines[end].startswith("|"):
        end += 1
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    today, where = datetime.date.today(), machine()
    new = [f"| {today} | " + " | ".join(_cells(r)) + f" | {where} |" for r in results]
    path.write_text("\n".join(lines[:end] + new + lines[end:]) + "\n")


def run_service(*, directory: Path | None = None, daemon_args: tuple = (), echo=print,
                world: tuple = SERVICE_WORLD, seed: int = 1) -> dict:
    subscribers, events, files, campaigns = world
    base = Path(tempfile.mkdtemp(prefix="sigmatch-service-", dir=directory))
    try:
        return measure_service(base, subscribers=subscribers, events=events, files=files, campaigns=campaigns,
                               seed=seed, daemon_args=daemon_args, echo=echo)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--replay":
        _replay_child(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        raise SystemExit("use `sigmatch bench --service` (this module's entry point is for its child processes)")
