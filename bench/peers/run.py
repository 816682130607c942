"""Peers in one run: the same trace and the same (stateless) rules through sigmatch, the
pure-Python reference model and DuckDB; every peer's output is checked equal to sigmatch's,
and each peer's throughput is reported as a ratio to sigmatch's, measured in the same run.

    python -m bench.peers.run --subscribers 100000 --events 1000000

Peers (rows):
  sigmatch                      Engine.replay(trace bytes, keep=True): decode + match + state, no sinks
  sigmatch, CSV sinks           the same with `out=` (CSV files written and closed)
  sigmatch, 1,000-event chunks  the trace fed as chunks of 1,000 events (what a real-time feed does)
  sigmatch, model slice         sigmatch on the first `model_events` events: the model's baseline
  reference model               engine.model.ReferenceModel on that slice (msgpack + pyroaring, pure Python)
  duckdb, decode msgpack        msgpack.Unpacker -> columns -> Arrow -> the query (rules as written)
  duckdb, Arrow table, ...      the query alone over an already-decoded Arrow table
  duckdb, 1,000-event batches, ...  per batch of 1,000 events: register the Arrow slice, run the query, fetch
The Arrow and batch rows come in two formulations of the same rules (bench/peers/duck.py): "rules
as written" (a semi-join per list, area and where, per campaign) and "compiled rules" (per-
subscriber eligibility, peer-list and area tables built ahead, as sigmatch compiles them).

The workload (bench/peers/world.py) has only stateless campaigns, so sigmatch's actions are
exactly the (event, campaign) matches; timestamps strictly increase, so an action's
trigger_ts names its event. Outputs are compared as sorted (event index, campaign) lists
(the model: also record for record); a difference raises PeerMismatch. DuckDB runs with
`SET threads=1`, one core as sigmatch. Each figure is the best of `repeat` runs (the model: one).
"""
from __future__ import annotations

import argparse
import datetime
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from bench.run import machine

__all__ = ["run_peers", "PeerMismatch", "format_table", "machine"]


class PeerMismatch(AssertionError):
    """A peer's matches differ from sigmatch's on the same events."""


def _best(repeat: int, once: Callable[[], object]) -> tuple[float, object]:
    """(best seconds, the result of the last run) over `repeat` runs of once()."""
    best, result = float("inf"), None
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        result = once()
        best = min(best, time.perf_counter() - t)
    return best, result


# ------------------------------------------------------------------------ the comparison key

def _action_pairs(actions: np.ndarray, ts: np.ndarray, msisdn: np.ndarray, nr_campaigns: int) -> np.ndarray:
    """sigmatch's actions as sorted event_index * nr_campaigns + campaign. Checks on the way
    that each action is an immediate send whose trigger_ts, ts and msisdn are its event's."""
    trigger = actions["trigger_ts"].astype(np.int64)
    idx = np.searchsorted(ts, trigger)
    ok = idx < len(ts)
    idx_c = np.where(ok, idx, 0)
    ok &= ts[idx_c] == trigger
    ok &= msisdn[idx_c] == actions["msisdn"]
    ok &= actions["ts"] == actions["trigger_ts"]
    ok &= actions["kind"] == 0
    if not ok.all():
        bad = actions[~ok][:5]
        raise PeerMismatch(f"{int((~ok).sum())} sigmatch actions are not immediate sends of a trace event: {bad}")
    return np.sort(idx.astype(np.int64) * nr_campaigns + actions["campaign"].astype(np.int64))


def _sql_pairs(result: dict, nr_campaigns: int) -> np.ndarray:
    return np.sort(np.asarray(result["idx"], np.int64) * nr_campaigns + np.asarray(result["campaign"], np.int64))


def _explain(name: str, got: np.ndarray, want: np.ndarray, nr_campaigns: int, campaigns) -> str:
    extra = np.setdiff1d(got, want)
    missing = np.setdiff1d(want, got)

    def show(keys):
        return ", ".join(f"(event {k // nr_campaigns}, {campaigns[k % nr_campaigns].id})" for k in keys[:5])
    return (f"{name}: {len(got)} matches, sigmatch {len(want)}; {len(extra)} only in {name} [{show(extra)}], "
            f"{len(missing)} only in sigmatch [{show(missing)}]")


# ------------------------------------------------------------------------ the msgpack decoder peer

_COLUMNS = ("ts", "type", "msisdn", "peer", "cell")
_KEYS = ("ts", "type", "msisdn", "peer", "cell", "dur", "flags", "arg")


def decode_msgpack(data, event_types: dict[str, int]) -> dict[str, np.ndarray]:
    """The columns the query reads, decoded with msgpack-python's Unpacker. Array and map forms,
    missing trailing fields 0, type names and digit-string numbers; no validation (the trace
    is all good events)."""
    import msgpack

    unpacker = msgpack.Unpacker(use_list=False, raw=False, max_buffer_size=max(len(data), 1 << 20))
    unpacker.feed(data)
    rows = list(unpacker)
    if not all(type(r) is tuple and len(r) == 8 for r in rows):
        rows = [_normalise(r, event_types) for r in rows]
    if not rows:
        return {k: np.zeros(0, np.int64) for k in _COLUMNS}
    ts, type_, msisdn, peer, cell = list(zip(*rows))[:5]
    if any(type(t) is not int for t in type_):
        type_ = [event_types[t] if type(t) is str else t for t in type_]
    if any(type(m) is not int for m in msisdn + peer):
        msisdn = [int(m) if m else 0 for m in msisdn]
        peer = [int(p) if p else 0 for p in peer]
    return {
        "ts": np.array(ts, np.int64),
        "type": np.array(type_, np.int32),
        "msisdn": np.array(msisdn, np.int64),
        "peer": np.array(peer, np.int64),
        "cell": np.array(cell, np.uint32),
    }


def _normalise(value, event_types) -> tuple:
    if isinstance(value, dict):
        value = tuple(value.get(k) for k in _KEYS)
    value = tuple(0 if v is None else v for v in value[:8])
    return value + (0,) * (8 - len(value))


# ------------------------------------------------------------------------ the harness

def run_peers(directory, *, subscribers: int, events: int, seed: int = 1,
              model_events: Optional[int] = 200_000, batch: int = 1000, repeat: int = 3,
              sinks: bool = True, duckdb_threads: int = 1) -> list[dict]:
    """Build the stateless world in `directory`, run every peer on it, check each one's output
    equal to sigmatch's (PeerMismatch otherwise) and return one row per peer:
    {peer, events, seconds, events_per_s, ratio_to_sigmatch, equal, note}.
    `model_events=None` runs the model on the whole trace; 0 skips it."""
    from bench.peers import duck
    from bench.peers.world import build_stateless_world
    from engine.api import Engine
    from engine.language.compile import load_world
    from engine.language.config import load_config
    from engine.model import ReferenceModel

    directory = Path(directory)
    built = build_stateless_world(directory, subscribers=subscribers, events=events, seed=seed)
    data = built.trace.read_bytes()
    config = load_config(built.config)
    world = load_world(config)
    campaigns = config.campaigns
    nc = len(campaigns)
    ts, msisdn = built.events["ts"], built.events["msisdn"]
    rows: list[dict] = []

    def row(peer, n, seconds, base_eps, equal, note):
        eps = n / seconds if seconds > 0 else float("inf")
        rows.append(dict(peer=peer, events=n, seconds=seconds, events_per_s=eps,
                         ratio_to_sigmatch=base_eps / eps, equal=equal, note=note))
        return eps

    def check(name, got, want):
        if len(got) != len(want) or not np.array_equal(got, want):
            raise PeerMismatch(_explain(name, got, want, nc, campaigns))
        return True

    # -- sigmatch on the whole trace: the baseline
    def sigmatch_once(source, out=None):
        engine = Engine(config, world)          # compiled outside the timing, fresh state each time
        t = time.perf_counter()
        run = engine.replay(source, out=out, keep=True, progress=False)
        return time.perf_counter() - t, run

    def best_sigmatch(source, out_dir=None):
        best, run = float("inf"), None
        for i in range(max(1, repeat)):
            out = None
            if out_dir is not None:
                out = out_dir / f"out{i}"
                shutil.rmtree(out, ignore_errors=True)
            seconds, run = sigmatch_once(source, out)
            best = min(best, seconds)
            if out is not None:
                shutil.rmtree(out, ignore_errors=True)
        return best, run

    seconds, run = best_sigmatch(data)
    want = _action_pairs(run.actions, ts, msisdn, nc)
    assert run.stats["run"]["events"] == events, run.stats["run"]
    base = events / seconds
    row("sigmatch", events, seconds, base, True,
        f"Engine.replay(bytes, keep=True): decode + match + state, no sinks; {len(want):,} actions")

    if sinks:
        seconds, run = best_sigmatch(data, directory)
        got = _action_pairs(run.actions, ts, msisdn, nc)
        row("sigmatch, CSV sinks", events, seconds, base, check("sigmatch, CSV sinks", got, want),
            "the same, writing CSV action files and stats.json")

    step = batch * built.event_bytes
    seconds, run = best_sigmatch([data[i:i + step] for i in range(0, len(data), step)])
    got = _action_pairs(run.actions, ts, msisdn, nc)
    row(f"sigmatch, {batch:,}-event chunks", events, seconds, base,
        check("sigmatch, chunks", got, want), f"one replay fed chunks of {batch:,} events")

    # -- the reference model, on a slice
    if model_events != 0:
        n = events if model_events is None else min(model_events, events)
        part = built.slice_bytes(data, n)
        slice_seconds, slice_run = best_sigmatch(part)
        slice_want = _action_pairs(slice_run.actions, ts[:n], msisdn[:n], nc)
        slice_base = n / slice_seconds
        row("sigmatch, model slice", n, slice_seconds, slice_base, True,
            f"sigmatch on the first {n:,} events: the baseline of the model's ratio")
        model = ReferenceModel(config, world.profiles, world.lists, world.areas)
        t = time.perf_counter()
        model.feed(part)
        model.finish()
        seconds = time.perf_counter() - t
        cols = slice_run.action_columns()
        expected = list(zip(*(cols[k].tolist() for k in
                              ("seq", "ts", "campaign", "msisdn", "channel", "template", "kind", "trigger_ts", "cell"))))
        if model.actions != expected:
            index = {c.id: i for i, c in enumerate(campaigns)}
            model_pairs = np.sort(np.array(
                [np.searchsorted(ts[:n], a[7]) * nc + index[a[2]] for a in model.actions], np.int64))
            raise PeerMismatch("reference model: records differ; " + _explain(
                "model", model_pairs, slice_want, nc, campaigns))
        row("reference model", n, seconds, slice_base, True,
            f"engine.model.ReferenceModel (pure Python), first {n:,} events, one run; "
            f"ratio to sigmatch on the same slice; records equal field for field")

    # -- DuckDB
    import duckdb

    con = duck.connect(config, world, threads=duckdb_threads)     # tables + compiled tables, untimed
    formulations = {"rules as written": duck.matches_sql(config), "compiled rules": duck.compiled_sql(config)}
    note_threads = f"DuckDB {duckdb.__version__}, SET threads={duckdb_threads}"
    event_types = dict(config.event_types)

    def to_table(cols):
        return duck.events_table(np.arange(len(cols["ts"]), dtype=np.int64), cols["ts"], cols["type"],
                                 cols["msisdn"], cols["peer"], cols["cell"])

    def query(table, sql):
        con.register("ev", table)
        result = con.execute(sql).fetchnumpy()
        con.unregister("ev")
        return result

    as_written = formulations["rules as written"]
    seconds, result = _best(repeat, lambda: query(to_table(decode_msgpack(data, event_types)), as_written))
    name = "duckdb, decode msgpack"
    row(name, events, seconds, base, check(name, _sql_pairs(result, nc), want),
        f"msgpack.Unpacker -> columns -> Arrow -> query (rules as written); {note_threads}")

    table = to_table(decode_msgpack(data, event_types))
    assert np.array_equal(table.column("ts").to_numpy(), ts)
    for label, sql in formulations.items():
        seconds, result = _best(repeat, lambda: query(table, sql))
        name = f"duckdb, Arrow table, {label}"
        row(name, events, seconds, base, check(name, _sql_pairs(result, nc), want),
            f"the query alone, over an already-decoded Arrow table; {note_threads}")

    nr_batches = -(-events // batch)
    for label, sql in formulations.items():
        def batches():
            parts = [query(table.slice(i, batch), sql) for i in range(0, table.num_rows, batch)]
            return {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0, np.int64)
                    for k in ("idx", "campaign")}

        seconds, result = _best(repeat, batches)
        name = f"duckdb, {batch:,}-event batches, {label}"
        row(name, events, seconds, base, check(name, _sql_pairs(result, nc), want),
            f"per batch: register the Arrow slice, query, fetch: {seconds / nr_batches * 1e3:.2f} ms a batch; "
            f"{note_threads}")
    con.close()
    return rows


PEERS = Path(__file__).resolve().parent.parent / "PEERS.md"


def record(rows: list[dict], path: Path = PEERS) -> None:
    """Append the table, dated and with the machine, to bench/PEERS.md."""
    with path.open("a") as f:
        f.write(f"\n## {datetime.date.today()}, {machine()}\n\n{format_table(rows)}\n")


def format_table(rows: list[dict]) -> str:
    head = ["peer", "events", "seconds", "events/s", "sigmatch / peer", "equal", "note"]
    body = [[r["peer"], f"{r['events']:,}", f"{r['seconds']:.3f}", f"{r['events_per_s']:,.0f}",
             f"{r['ratio_to_sigmatch']:.2f}x", "yes" if r["equal"] else "NO", r["note"]] for r in rows]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model-events", type=int, default=200_000,
                        help="events the reference model runs on (0: skip it)")
    parser.add_argument("--batch", type=int, default=1000, help="events per DuckDB micro-batch")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs per figure")
    parser.add_argument("--no-sinks", action="store_true", help="skip the CSV-sink row")
    parser.add_argument("--dir", type=Path, help="build the world here (kept) instead of a temp dir")
    args = parser.parse_args(argv)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="sigmatch-peers-"))
    try:
        rows = run_peers(directory, subscribers=args.subscribers, events=args.events, seed=args.seed,
                         model_events=args.model_events, batch=args.batch, repeat=args.repeat,
                         sinks=not args.no_sinks)
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    print(f"{args.subscribers:,} subscribers, {args.events:,} events, stateless campaigns; "
          f"{machine()}; best of {args.repeat}; one core each (DuckDB threads=1)")
    print(format_table(rows))


if __name__ == "__main__":
    main()
