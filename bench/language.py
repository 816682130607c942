"""`sigmatch bench M --language-cost`: what the second edition of the campaign language
(SPEC §2.1: markers, sequences and absence, trigger filters, calendar counters, `when`,
anniversaries, budgets, `max_in_window`, experiments) costs at run time.

The same generated world (profiles, lists, areas, trace) is run with two configurations:
the one `sigmatch gen` writes, which uses the new keys, and the same one with every
second-edition key taken out (`first_edition`). Each is measured in a fresh process, in
turn (A, B, A, B, ...), so that a machine that slows down or speeds up during the runs
weighs on both alike; the medians are compared. Single runs on a shared 2-core VM vary by
±30%, hence at least five of each.

Measured per run: *match* (decode + match + state + timers + drain, no sinks, events/s),
*end to end* (`replay` with CSV sinks, events/s) and the engine's state per subscriber
(bytes: the state row with its MSISDN and the index slots; what markers and anniversaries
add shows here, the sparse `max_in_window` table and contacts do not).
"""
from __future__ import annotations

import datetime
import json
import shutil
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import tomli_w

__all__ = ["first_edition", "run_language_cost", "format_language_cost", "record_language_cost"]

HEADING = "## The second edition of the language"

# Keys that came with SPEC §2.1 (issue 11). A campaign that loses `variants` keeps the first
# variant's template; everything else is simply dropped.
CAMPAIGN_KEYS = ("flags", "arg", "enabled", "start", "end", "when", "anniversary", "after", "not_after",
                 "absent", "daily_budget", "total_budget", "variants")
COUNTER_KEYS = ("period", "arg")
POLICY_KEYS = ("max_in_window", "global_holdout")
SECTIONS = ("markers", "channels")


def first_edition(doc: dict) -> dict:
    """A parsed configuration (tomllib) -> the same without any second-edition key.

    Counters with a calendar `period` become lifetime counters (a `period` is the new key; a
    `window` would be another rule), `exempt` loses `max_in_window`, and a campaign with
    `enabled = false` is left out (the first edition retired a campaign by deleting it).
    Raises nothing: keys that are absent are skipped."""
    doc = json.loads(json.dumps(doc, default=str))      # a deep copy; dates become strings
    for section in SECTIONS:
        doc.pop(section, None)
    policy = doc.get("policy", {})
    for key in POLICY_KEYS:
        policy.pop(key, None)
    for spec in doc.get("counters", {}).values():
        if isinstance(spec, dict):
            for key in COUNTER_KEYS:
                spec.pop(key, None)
    if "campaign" in doc:
        doc["campaign"] = [c for c in doc["campaign"] if c.get("enabled", True) is not False]
    for campaign in doc.get("campaign", []):
        variants = campaign.get("variants")
        for key in CAMPAIGN_KEYS:
            campaign.pop(key, None)
        if variants and "template" not in campaign:
            campaign["template"] = variants[0]["template"]
        if "exempt" in campaign:
            campaign["exempt"] = [rule for rule in campaign["exempt"] if rule != "max_in_window"]
    return doc


def write_first_edition(config: Path) -> Path:
    """Write `config` without its second-edition keys beside it (relative paths in it stay
    valid); returns the new file's path."""
    with open(config, "rb") as f:
        doc = tomllib.load(f)
    out = config.with_name(config.stem + "-first-edition.toml")
    out.write_text("# " + config.name + " without the keys of SPEC §2.1 (bench/language.py)\n"
                   + tomli_w.dumps(first_edition(doc)))
    return out


def measure(config: Path, traces: list[Path]) -> dict:
    """One run of one configuration, in this process: match and end-to-end rates (events/s)
    and the state per subscriber (bytes)."""
    from engine.api import Engine
    engine = Engine.from_config(config)
    bytes_per_subscriber = engine.bytes_per_subscriber
    t = time.perf_counter()
    run = engine.replay(traces, keep=False, progress=False, drain=True)
    match = time.perf_counter() - t
    events = run.stats["run"]["events"] + sum(run.stats["run"]["bad_events"].values())
    actions = run.stats["run"]["actions"]
    del run, engine
    fresh = Engine.from_config(config)
    with tempfile.TemporaryDirectory(prefix="sigmatch-bench-language-") as scratch:
        t = time.perf_counter()
        fresh.replay(traces, out=Path(scratch) / "out", drain=True, keep=False, progress=False)
        end_to_end = time.perf_counter() - t
    return {"match_eps": events / match, "end_to_end_eps": events / end_to_end, "events": events,
            "actions": actions, "bytes_per_subscriber": bytes_per_subscriber}


def _child(config: Path, traces: list[Path]) -> dict:
    from bench._cli import CommandError, child_error, run_child
    proc = run_child([sys.executable, "-m", "bench.language", str(config), *map(str, traces)])
    if proc.returncode != 0:
        raise CommandError(child_error("python -m bench.language", proc.stderr, proc.returncode))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_language_cost(name: str, *, subscribers: int, events: int, campaigns: int, runs: int = 5,
                      directory: Path | None = None, seed: int = 1, echo=print) -> dict:
    """Generate one world and measure it `runs` times with each configuration, interleaved.

    Returns {"workload", "subscribers", "events", "campaigns", "runs", "second": [run dicts],
    "first": [run dicts]} with each run dict as `measure` gives it. ValueError if runs < 1."""
    from bench.run import _child as world_child
    if runs < 1:
        raise ValueError("runs must be at least 1")
    base = directory or Path(tempfile.mkdtemp(prefix="sigmatch-bench-"))
    from bench._cli import folder, named
    # as bench.run names its worlds: underscores, which error lines do not mask as a number
    world_dir = base / f"{name}-{subscribers:_}-{events:_}-{campaigns}-{seed}"
    try:
        folder(world_dir, "--dir")
        echo(f"{name}: generating {subscribers:,} subscribers, {events:,} events, {campaigns} campaigns ...")
        world_child(["--generate", str(world_dir), str(subscribers), str(events), str(campaigns), str(seed)])
        manifest = json.loads((world_dir / "bench-world.json").read_text())
        config = named(world_dir / "bench-world.json", manifest["config"])
        traces = [named(world_dir / "bench-world.json", p) for p in manifest["traces"]]
        plain = write_first_edition(config)
        result = {"workload": name, "subscribers": subscribers, "events": events, "campaigns": campaigns,
                  "runs": runs, "second": [], "first": []}
        for i in range(runs):
            for key, path in (("second", config), ("first", plain)):
                r = _child(path, traces)
                result[key].append(r)
                echo(f"{name}: run {i + 1}/{runs} {key} edition: match {r['match_eps'] / 1e6:.2f}M/s, "
                     f"end to end {r['end_to_end_eps'] / 1e6:.2f}M/s")
        return result
    finally:
        if directory is None:
            shutil.rmtree(base, ignore_errors=True)


def _medians(result: dict, key: str) -> dict:
    runs = result[key]
    return {"match_eps": statistics.median(r["match_eps"] for r in runs),
            "end_to_end_eps": statistics.median(r["end_to_end_eps"] for r in runs),
            "bytes_per_subscriber": runs[0]["bytes_per_subscriber"], "actions": runs[0]["actions"]}


def format_language_cost(result: dict) -> str:
    """A small table: medians of each configuration and the ratio (second / first)."""
    second, first = _medians(result, "second"), _medians(result, "first")
    rows = [("configuration", "match (median)", "end to end (median)", "B/sub", "actions")]
    for label, m in (("with the new keys", second), ("without them", first)):
        rows.append((label, f"{m['match_eps'] / 1e6:.2f}M/s", f"{m['end_to_end_eps'] / 1e6:.2f}M/s",
                     str(m["bytes_per_subscriber"]), f"{m['actions']:,}"))
    rows.append(("with / without", f"{second['match_eps'] / first['match_eps']:.0%}",
                 f"{second['end_to_end_eps'] / first['end_to_end_eps']:.0%}",
                 f"+{second['bytes_per_subscriber'] - first['bytes_per_subscriber']}", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def record_language_cost(result: dict, path: Path | None = None) -> None:
    """Append one dated row, with the machine, to the table under HEADING in RESULTS.md
    (the heading and the table are added at the end the first time)."""
    from bench.run import RESULTS, machine
    path = path or RESULTS
    second, first = _medians(result, "second"), _medians(result, "first")
    row = (f"| {datetime.date.today()} | {result['workload']} | {result['subscribers']:,} | {result['events']:,} | "
           f"{result['runs']} | {second['match_eps'] / 1e6:.2f}M/s | {first['match_eps'] / 1e6:.2f}M/s | "
           f"{second['match_eps'] / first['match_eps']:.0%} | {second['end_to_end_eps'] / 1e6:.2f}M/s | "
           f"{first['end_to_end_eps'] / 1e6:.2f}M/s | {second['end_to_end_eps'] / first['end_to_end_eps']:.0%} | "
           f"{second['bytes_per_subscriber']} | {first['bytes_per_subscriber']} | {machine()} |")
    text = path.read_text() if path.exists() else ""
    if HEADING not in text:
        text = text.rstrip("\n") + "\n\n" + HEADING + """

`sigmatch bench M --language-cost` (bench/language.py): one world run with the configuration
`sigmatch gen` writes (markers, sequences and absence, trigger flags, calendar counters,
budgets) and with the same configuration without any key of SPEC §2.1, each in a fresh
process, in turn; medians of the runs. *B/sub* as in the first table.

| date | workload | subscribers | events | runs | match, new keys | match, without | ratio | end to end, new keys | end to end, without | ratio | B/sub, new keys | B/sub, without | machine |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
"""
    lines = text.splitlines()
    end = lines.index(HEADING) + 1
    while end < len(lines) and not lines[end].startswith("|"):
        end += 1
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    path.write_text("\n".join(lines[:end] + [row] + lines[end:]) + "\n")


def main(argv=None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        raise SystemExit("use `sigmatch bench M --language-cost` (this module's entry point is for its child processes)")
    print(json.dumps(measure(Path(args[0]), [Path(p) for p in args[1:]])))


if __name__ == "__main__":
    main()
