"""The floor under the matcher (issue 14, part 5): the issue's bare C loop and sigmatch's own memory layout, timed over a trace beside the engine.

    python -m bench.bare_loop TRACE [--config CONFIG] [--row-bytes N] [--rounds R]

Compiles bench/bare_loop.c with the C compiler that built sigmatch's core (in a temporary
folder, removed after), runs it over TRACE and prints one JSON object: ns per event of
  decode   reading the events alone;
  bare     the loop issue 14 sets its aims against: decode, test one bit of a 30M-bit set,
           add one to two random counters (67 ns an event where the issue measured it);
  layout   the memory the core's layout must touch: the index slot, the row (--row-bytes,
           or as wide as CONFIG's rows) and a date, fetched ahead as the core fetches them.
With --config, also `engine`: sigmatch's decode + match + state over the same trace, read into
memory, no sinks (`Engine.replay`, the fastest of --rounds), and how many times the layout's
and the bare loop's time it takes. The trace must hold the probes' shape only, an array of 8
unsigned integers per event, as `sigmatch gen` writes it; the loops' subscribers are the
trace's distinct MSISDNs. Not a test: it only measures (STYLE.md item 9).
"""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Optional

from bench._cli import CommandError, child_error, command, parser as command_parser, whole_number
from bench.run import machine

SOURCE = Path(__file__).with_name("bare_loop.c")
PROG = "python -m bench.bare_loop"


def compiler() -> list[str]:
    """The C compiler command Python's own build used (the one that builds the core), as a
    list; CommandError when it is not installed."""
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    if not cc or shutil.which(cc[0]) is None:
        raise CommandError(f"no C compiler ({cc[0] if cc else 'cc'}): install the one that builds sigmatch's core")
    return cc


def floor(trace: Path, row_bytes: int, rounds: int) -> dict:
    """Compile bench/bare_loop.c and run it over `trace`: {events, subscribers, row_bytes,
    rounds, ns_per_event: {decode, bare, layout}} (ns, the fastest of `rounds`).
    CommandError with the loop's own line when the trace cannot be read or is not the
    probes' shape."""
    with tempfile.TemporaryDirectory(prefix="sigmatch-bare-loop-") as scratch:
        binary = Path(scratch) / "bare_loop"
        built = subprocess.run([*compiler(), "-O3", "-o", str(binary), str(SOURCE)],
                               capture_output=True, text=True)
        if built.returncode:
            raise CommandError(f"cannot compile {SOURCE.name}: {child_error(PROG, built.stderr, built.returncode)}")
        # not run_child: the loops hold nothing to clean up, so Ctrl-C or SIGTERM ends them at
        # once rather than after run_child's grace for a child that is cleaning up
        child = subprocess.Popen([str(binary), str(trace), str(row_bytes), str(rounds)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            stdout, stderr = child.communicate()
        except BaseException:
            child.kill()
            child.wait()
            raise
    if child.returncode:
        raise CommandError(child_error(PROG, stderr, child.returncode))
    found = json.loads(stdout)
    found.pop("check", None)
    return found


def engine_rate(config: Path, trace: Path, rounds: int) -> float:
    """sigmatch's decode + match + state over `trace` in memory, no sinks: ns per event of
    the fastest of `rounds` replays, each by a fresh engine."""
    from engine.api import Engine
    from engine.language.config import load_config
    loaded = load_config(config)
    data = trace.read_bytes()
    fastest: Optional[float] = None
    events = 0
    for _ in range(rounds):
        engine = Engine(loaded)
        started = time.perf_counter()
        run = engine.replay(data, drain=True, keep=False, progress=False)
        seconds = time.perf_counter() - started
        events = run.stats["run"]["events"] + sum(run.stats["run"]["bad_events"].values())
        fastest = seconds if fastest is None else min(fastest, seconds)
    return fastest / max(events, 1) * 1e9


def row_bytes_of(config: Path) -> int:
    """The width of a state row under `config` (its counters, windows, markers and
    eligibility words), in bytes."""
    from engine.api import Engine
    core = Engine.from_config(config)._core
    return len(core.rows()) // max(core.nr_subscribers, 1)


@command(PROG)
def main(argv=None):
    parser = command_parser(PROG, __doc__)
    parser.add_argument("trace", help="a trace of the probes' shape (sigmatch gen's)")
    parser.add_argument("--config",
                        help="a campaigns.toml over that trace's world: its rows' width, and the engine timed too")
    parser.add_argument("--row-bytes", type=whole_number(8, 4096),
                        help="the row's width without --config (default: 136, gen's M world)")
    parser.add_argument("--rounds", type=whole_number(1, 1000), default=3,
                        help="runs of each loop, the fastest kept (default: 3)")
    ns = parser.parse_args(argv)
    if ns.config is not None and ns.row_bytes is not None:
        parser.error("--row-bytes goes without --config (the configuration says the row's width)")
    if not ns.trace.strip():
        parser.error("argument trace: empty: give a trace file")
    ns.trace = Path(ns.trace)
    if ns.config is not None and not ns.config.strip():
        parser.error("argument --config: empty: give a configuration file")
    ns.config = Path(ns.config) if ns.config is not None else None
    if ns.trace.is_dir():
        raise CommandError(f"{ns.trace}: a folder, not a trace file")
    if not ns.trace.exists():
        raise CommandError(f"{ns.trace}: no such trace file")
    if not ns.trace.is_file():
        raise CommandError(f"{ns.trace}: not a regular file (a device or a pipe): give a trace file")
    row_bytes = ns.row_bytes or 136
    if ns.config is not None:
        row_bytes = row_bytes_of(ns.config)
    print(f"the loops over {ns.trace} ...", file=sys.stderr)
    result = {"trace": str(ns.trace), "machine": machine(), **floor(ns.trace, row_bytes, ns.rounds)}
    if ns.config is not None:
        print(f"the engine over {ns.trace} ...", file=sys.stderr)
        ns_engine = engine_rate(ns.config, ns.trace, ns.rounds)
        per = result["ns_per_event"]
        per["engine"] = round(ns_engine, 2)
        result["engine_over_layout"] = round(ns_engine / per["layout"], 2)
        result["engine_over_bare"] = round(ns_engine / per["bare"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
