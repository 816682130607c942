"""`sigmatch diff CONFIG_A CONFIG_B TRACE...`: what configuration B would do differently from
configuration A on the same recorded trace (SPEC §5, the what-if).

    a, b = replay_both("campaigns.toml", "campaigns-new.toml", ["trace.msgpack"])
    document = build_diff(a, b)               # the --json document (shape below)
    print(format_diff(document))

Both configurations are replayed as `sigmatch replay` replays one (the traces as one stream,
then drained), in two processes at once, from an empty state or from the same checkpoint
(`state`: a checkpoint file, or a `sigmatch run --state` directory). A contact is an action
record of any kind (send, control, global_control), keyed by (campaign, msisdn, trigger_ts):
gained = in B and not in A, lost = in A and not in B (as multisets: a key twice in B and
once in A is one gained). A unit (a campaign, a channel, a local day of either) compares the
contacts it holds on each side, so a contact that B makes on another day or channel than A
is lost on A's and gained on B's, and contacts_b - contacts_a = gained - lost in every unit.
A contact's day is the local day of its `ts` (the configuration's utc_offset), its channel
the campaign's channel on that side.

The --json document (`DIFF_VERSION` 1):

    {"diff": 1, "a": <side>, "b": <side>, "traces": [path, ...], "state": path | null,
     "utc_offset": "+08:00", "days": ["YYYY-MM-DD", ...],
     "total": <counts>,
     "campaigns": {id: {<counts>, "in": "both" | "a" | "b", "channel_a": name | null,
                        "channel_b": name | null, "sends_a", "sends_b", "controls_a", "controls_b",
                        "global_controls_a", "global_controls_b",
                        "funnel_a": {matched, ...} | null, "funnel_b": {...} | null,
                        "days": {"YYYY-MM-DD": <counts>}}},
     "channels": {name: {<counts>, "days": {"YYYY-MM-DD": <counts>}}},
     "budgets": [{"budget": "campaign daily" | "campaign total" | "channel daily",
                  "id": campaign id or channel name, "day": "YYYY-MM-DD" | null,
                  "limit_a": n | null, "limit_b": n | null,
                  "reached_a": ms | null, "reached_b": ms | null,
                  "spent_at_start_a": bool, "spent_at_start_b": bool}],
     "taken": [{"campaign": id, "by": id | null, "rule": "min_gap" | "max_per_day" | "max_in_window",
                "a": n, "b": n}],
     "warnings": [line, ...]}

    <counts> = {contacts_a, contacts_b, gained, lost}
    <side>   = {config, sha256, campaigns: [id, ...], events, bad_events, bad_bytes,
                unknown_subscribers, late_events, pending}

Units with no contact on either side are left out of `days`. A budget's `reached_*` is the
`ts` (ms, UTC) of the send that brought its use to its limit on that side, null when it was
not reached; `spent_at_start_*` says the state it started from (a checkpoint) had spent it
already. A daily budget has a row per local day on which either side reached it; a budget
reached on no day, a row with `day` null. `taken`: the contacts `campaign` lost on each side
through `rule` of the contact policy to campaign `by`, the campaign of the subscriber's latest
contact, which made the rule fail (Engine.takers; `by` null: a campaign that a reload of the
checkpoint's configuration removed); pairs with a count on either side. With `--state` they
count from the checkpoint on. `late_events`: the side's good events whose ts was below its
clock, processed at the clock's time (as replay counts them; traces out of order, or a
checkpoint newer than the trace), with a warning when either side has any. `events` (the
good ones), `bad_events` (all reasons; `bad_bytes` the bytes inside them) and
`unknown_subscribers`: as replay counts them (stats.json's `run`), in the summary as
replay's line says them; a warning in replay's words when either side had a bad event, and
each warning replay gives of its events (a bad value holding many events' bytes, no event's
subscriber in the profile snapshot), once, naming the sides that gave it.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import zlib
from multiprocessing.connection import wait
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from engine.errors import SigmatchError
from engine.wording import plural

__all__ = ["DIFF_VERSION", "DiffError", "replay_both", "build_diff", "format_diff"]

log = logging.getLogger("sigmatch.diff")

DIFF_VERSION = 1
DAY_MS = 86_400_000
SIDES = ("a", "b")
_KIND_KEYS = ("sends", "controls", "global_controls")      # KINDS order: send, control, global_control


class DiffError(SigmatchError):
    """The two configurations cannot be compared, or one of the replays failed; the message
    names the file."""


# --------------------------------------------------------------------------- the two replays

def _check_inputs(config_a: Path, config_b: Path, traces: Sequence[Path], state: Optional[Path]) -> None:
    """What can be refused before a process starts: either configuration invalid (ConfigError
    naming its file), local days that would not line up, a trace or state that is not there."""
    from engine.language.config import load_config, read_once
    for config in (config_a, config_b):
        if read_once(config):
            # each side's process reads its configuration again
            raise DiffError(f"{config}: diff needs each configuration as a file, which its side reads again "
                            "(this is a pipe or a device)")
    a, b = load_config(config_a), load_config(config_b)
    if a.utc_offset_ms != b.utc_offset_ms:
        raise DiffError(f"{config_b}: engine.utc_offset {_offset(b.utc_offset_ms)} differs from "
                        f"{_offset(a.utc_offset_ms)} in {config_a}: their local days (budgets, "
                        "max_per_day, the report's days) would not be the same days")
    for trace in traces:
        if not trace.exists():
            raise DiffError(f"{trace}: no such trace file")
        if trace.is_dir():
            raise DiffError(f"{trace}: a directory, not a trace file")
    if state is not None and not state.exists():
        raise DiffError(f"{state}: no such checkpoint (--state takes a checkpoint file or a "
                        "`sigmatch run --state` directory)")
    if state is not None and state.is_dir():
        from engine.service.reshard import RESHARD_DIR, interrupted
        if (state / RESHARD_DIR).exists():
            raise DiffError(f"--state {state}: {interrupted(state)}")


def _offset(offset_ms: int) -> str:
    """As engine.api.format_utc_offset writes it ("+08:00"), without importing the engine
    here: the parent checks its inputs before the two processes start."""
    sign, minutes = "-" if offset_ms < 0 else "+", abs(offset_ms) // 60_000
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _engine(config: str, state: Optional[str]):
    """The engine of `config`, empty or holding the checkpoint's state (carried over by
    campaign id, counter and marker name when the checkpoint was written for another
    configuration, as `sigmatch run` carries it after an edit)."""
    from engine.api import Engine
    if state is None:
        return Engine.from_config(config, record_takers=True)
    from engine.errors import CheckpointError
    from engine.service.checkpoint import Loaded, engine_for, read_checkpoint
    from engine.service.reshard import state_as_one
    path = Path(state)
    if path.is_dir():
        # a service's with --workers too: its workers' states put together as one engine's
        loaded = state_as_one(path)
    else:
        header, sections = read_checkpoint(path)
        if isinstance(header.get("workers"), int) and header["workers"] > 1:
            raise CheckpointError(f"{path}: the checkpoint of one worker of a service with --workers "
                                  f"{header['workers']}: give the service's state directory")
        loaded = Loaded(0, header, sections, path)
    engine, _ = engine_for(config, loaded, record_takers=True)
    return engine


def _replay_side(config: str, traces: list[str], state: Optional[str], progress: bool, warn: bool) -> dict:
    """One side: replay the traces as `sigmatch replay` does, without writing files, and give
    back what the diff compares (plain data: it crosses a process boundary)."""
    from engine.errors import LoadError
    from loaders.sniff import judge_traces
    # what loading the state logs (a damaged checkpoint passed over) is kept for the
    # document's warnings, which say it once: each side logged it, and no summary did
    # (helper-123)
    said = []
    if state is None:
        engine = _engine(config, state)
    else:
        checkpoint_log = logging.getLogger("sigmatch.checkpoint")
        with _held_back(checkpoint_log) as records:
            engine = _engine(config, state)
        said = [record.getMessage() for record in records if record.levelno >= logging.WARNING]
        for record in records:
            if warn and record.levelno < logging.WARNING:       # progress (-v), said by one side
                checkpoint_log.handle(record)
    judgement = judge_traces(traces, engine)
    if judgement.refusal:
        raise LoadError(judgement.refusal)
    if warn:            # both sides judge the same traces: one says what it found
        for line in judgement.warnings:
            logging.getLogger("sigmatch.traces").warning(line)
    used_campaigns, used_channels = engine._core.budgets_used()
    clock = engine.clock
    run = engine.replay(list(traces), drain=True, progress=progress, keep=True)
    figures = run.stats["run"]
    # what replay warns of its events (a bad value holding many events' bytes, no event's
    # subscriber in the snapshot), in its words, for the document's warnings (helper-133: a
    # what-if on a damaged or mismatched trace looked clean). Late events are left to
    # build_diff, which warns of any, where replay warns of a share.
    from engine.cli import _warn_of_run, log as replay_log
    with _held_back(replay_log) as records:
        _warn_of_run({"run": {**figures, "late_events": 0}}, engine.config)
    actions = run.actions
    msisdn = np.ascontiguousarray(engine.subscribers, dtype=np.uint64)
    c = engine.config
    return {
        "config": config,
        "identity": engine.configuration,
        "utc_offset_ms": c.utc_offset_ms,
        "campaigns": [{"id": s.id, "channel": s.channel, "daily_budget": s.daily_budget,
                       "total_budget": s.total_budget} for s in c.campaigns],
        "channel_budgets": dict(c.channel_budgets),
        "actions": {name: np.ascontiguousarray(actions[name])
                    for name in ("ts", "trigger_ts", "msisdn", "campaign", "kind")},
        "funnel": {cid: {k: v for k, v in f.items() if isinstance(v, int) and not isinstance(v, bool)}
                   for cid, f in run.stats["campaigns"].items()},
        "events": figures["events"],
        "bad_events": sum(figures["bad_events"].values()),
        "bad_bytes": figures["bad_bytes"],
        "unknown_subscribers": figures["unknown_subscribers"],
        "pending": figures["pending"],
        "late_events": figures["late_events"],
        "replay_said": [record.getMessage() for record in records if record.levelno >= logging.WARNING],
        "start": {"clock": clock, "campaigns": {c.campaigns[k].id: list(v) for k, v in used_campaigns.items()},
                  "channels": dict(used_channels)},
        "takers": [(campaign, taker, rule, n) for (campaign, taker, rule), n in engine.takers().items()],
        "subscribers": (int(len(msisdn)), zlib.crc32(memoryview(msisdn).cast("B"))),
        "profiles": str(c.profiles) if c.profiles else None,
        "state_said": said,
    }


@contextlib.contextmanager
def _held_back(logger: logging.Logger):
    """The records `logger` and the loggers below it log meanwhile (a list, filled as they
    come), kept from every handler: a side's process says them in its result, not on stderr."""
    from engine.service.reshard import HeldBack
    held, propagate = HeldBack(), logger.propagate
    logger.addHandler(held)
    logger.propagate = False
    try:
        yield held.records
    finally:
        logger.removeHandler(held)
        logger.propagate = propagate


def _side_main(conn, side: str, config: str, traces: list[str], state: Optional[str], progress: bool,
               log_level: int, json_logs: bool) -> None:
    """A side's process: its stderr as safe as the CLI's, its result or its one-line error
    sent back through `conn`."""
    from engine.cli import _own_standard_error
    from engine.privacy import JsonLogFormatter, LogFormatter
    # Ctrl-C reaches the whole process group: the parent alone decides, and ends the sides
    # with SIGTERM (whose default action ends a side without a word)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent()
    _own_standard_error(JsonLogFormatter() if json_logs else LogFormatter(), log_level)
    try:
        result = ("ok", _replay_side(config, traces, state, progress, warn=side == "a"))
    except SigmatchError as e:
        result = ("error", str(e).splitlines()[0] if str(e) else type(e).__name__)
    except (OSError, MemoryError) as e:
        result = ("error", f"{type(e).__name__}: {e}")
    except BaseException as e:      # a bug: logged (masked) here, said in one line by the parent
        log.exception("the replay of %s failed", config)
        result = ("error", f"the replay of {config} failed: {type(e).__name__}")
    try:
        conn.send(result)
        conn.close()
    except OSError:         # the parent is gone (stopped): nobody to tell
        os._exit(1)


def _end_with_parent() -> None:
    """End this side's process as soon as its parent ends, however it ends (even SIGKILL):
    a replay nobody waits for would run on for the length of the trace."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch():
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="sigmatch-diff-parent", daemon=True).start()


class _Stopped(Exception):
    """SIGTERM reached the parent while the sides replay."""


def replay_both(config_a, config_b, traces: Sequence, *, state=None, progress: Optional[bool] = None,
                json_logs: bool = False) -> tuple[dict, dict]:
    """Replay `traces` under each configuration in a process of its own, both at once; the
    two sides' results (what build_diff takes). `state`: a checkpoint file or a daemon's
    state directory both start from. DiffError (or the ConfigError of a configuration) with
    one line naming the file when either side cannot be run; the other is stopped then."""
    config_a, config_b = Path(config_a), Path(config_b)
    traces = [Path(t) for t in traces]
    state = Path(state) if state is not None else None
    _check_inputs(config_a, config_b, traces, state)
    if progress is None:
        progress = sys.stderr.isatty()
    # spawn, not fork: a forked child would inherit whatever threads and locks the caller holds
    context = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    processes, readers = {}, {}

    def stopped(number, frame):
        raise _Stopped()

    # SIGTERM's default would end the parent alone, the sides running on: raised here
    # instead, it ends them in `finally`
    previous = signal.signal(signal.SIGTERM, stopped) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        for side, config in zip(SIDES, (config_a, config_b)):
            reader, writer = context.Pipe(duplex=False)
            # the two sides' bars would overwrite each other: A's stands for both (same trace)
            process = context.Process(target=_side_main, name=f"sigmatch-diff-{side}", daemon=True,
                                      args=(writer, side, str(config), [str(t) for t in traces],
                                            None if state is None else str(state), progress and side == "a",
                                            level, json_logs))
            process.start()
            writer.close()
            processes[side], readers[reader] = process, side
        import engine.api  # noqa: F401  (build_diff's: loaded while the sides replay, not after)
        results: dict[str, dict] = {}
        while readers:
            for reader in wait(list(readers)):
                side = readers.pop(reader)
                try:
                    kind, value = reader.recv()
                except EOFError:
                    processes[side].join()
                    kind, value = "error", (f"the replay of {config_a if side == 'a' else config_b} ended "
                                            f"without a result (exit code {processes[side].exitcode})")
                if kind == "error":
                    raise DiffError(value)
                results[side] = value
    except _Stopped:
        raise DiffError(f"stopped by SIGTERM before both replays of {', '.join(map(str, traces))} ended") from None
    finally:
        for process in processes.values():
            if process.is_alive():
                process.terminate()
            process.join()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return results["a"], results["b"]


# --------------------------------------------------------------------------- the comparison

def _day_name(day: int) -> str:
    from engine.wording import local_day
    return local_day(day)


def _counts(a: int, b: int, gained: int, lost: int) -> dict:
    return {"contacts_a": int(a), "contacts_b": int(b), "gained": int(gained), "lost": int(lost)}


class _Contacts:
    """Both sides' contacts in one set of columns: union campaign and channel codes, the side
    (0 A, 1 B), the local day; and each contact's group, the rows of one key (campaign,
    msisdn, trigger_ts) over both sides."""

    def __init__(self, a: dict, b: dict, ids: list[str], channels: list[str], offset_ms: int):
        parts = []
        for side, result in enumerate((a, b)):
            actions = result["actions"]
            campaign_code = np.array([ids.index(c["id"]) for c in result["campaigns"]] or [0], np.int64)
            channel_code = np.array([channels.index(c["channel"]) for c in result["campaigns"]] or [0], np.int64)
            code = actions["campaign"].astype(np.int64)
            parts.append((campaign_code[code], channel_code[code], actions["msisdn"], actions["trigger_ts"],
                          (actions["ts"].astype(np.int64) + offset_ms) // DAY_MS, actions["kind"].astype(np.int64),
                          np.full(len(code), side, np.int8)))
        (self.campaign, self.channel, self.msisdn, self.trigger_ts, self.day, self.kind,
         self.side) = (np.concatenate(columns) for columns in zip(*parts))
        self.n = len(self.campaign)
        self.day0 = int(self.day.min()) if self.n else 0
        self.nr_days = int(self.day.max()) - self.day0 + 1 if self.n else 0
        self.day_index = self.day - self.day0
        order = self._grouped()
        new = np.ones(self.n, bool)
        if self.n:
            new[1:] = ((np.diff(self.campaign[order]) != 0) | (self.msisdn[order][1:] != self.msisdn[order][:-1])
                       | (np.diff(self.trigger_ts[order]) != 0))
        self.group = np.empty(self.n, np.int64)
        self.group[order] = np.cumsum(new) - 1
        # the groups as runs of `order`: one contact of one side (most of those that differ),
        # one of each side (most contacts), or more (a key twice: the general case)
        starts = np.flatnonzero(new)
        sizes = np.diff(np.append(starts, self.n))
        first = order[starts]
        self.single = first[sizes == 1]
        pair = starts[sizes == 2]
        one_each = self.side[order[pair]] != self.side[order[pair + 1]]
        pair = pair[one_each]
        a_first = self.side[order[pair]] == 0
        self.pair_a = np.where(a_first, order[pair], order[pair + 1])
        self.pair_b = np.where(a_first, order[pair + 1], order[pair])
        general = (sizes > 2) | ((sizes == 2) & ~np.isin(starts, pair))
        self.general = order[np.repeat(general, sizes)]           # rows of the other groups

    def _grouped(self) -> np.ndarray:
        """An order of the rows in which equal keys (campaign, msisdn, trigger_ts) are next to
        each other: by a 64-bit hash of the key (one sort of one column), or by the key itself
        (three) when two keys share a hash."""
        if not self.n:
            return np.zeros(0, np.intp)
        with np.errstate(over="ignore"):
            h = (self.campaign.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
                 ^ self.msisdn.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
                 ^ self.trigger_ts.astype(np.uint64) * np.uint64(0x94D049BB133111EB))
            h ^= h >> np.uint64(31)
            h *= np.uint64(0xD6E8FEB86659FD93)
            h ^= h >> np.uint64(32)
        order = np.argsort(h)
        same_hash = h[order][1:] == h[order][:-1]
        c, m, t = self.campaign[order], self.msisdn[order], self.trigger_ts[order]
        other_key = (c[1:] != c[:-1]) | (m[1:] != m[:-1]) | (t[1:] != t[:-1])
        if (same_hash & other_key).any():
            return np.lexsort((self.trigger_ts, self.msisdn, self.campaign))
        return order

    def changes(self, unit: np.ndarray, nr_units: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Contacts matched within each unit (a code per row, < nr_units): for each key and
        unit, the gained (B's rows past A's) and lost (A's past B's); as (campaign, unit,
        gained, lost), not added up, where either is non-zero."""
        lone_lost = self.single[self.side[self.single] == 0]
        lone_gained = self.single[self.side[self.single] == 1]
        moved = unit[self.pair_a] != unit[self.pair_b]
        lost_rows = np.concatenate([lone_lost, self.pair_a[moved]])
        gained_rows = np.concatenate([lone_gained, self.pair_b[moved]])
        rows = self.general
        key = self.group[rows] * nr_units + unit[rows]
        values, inverse = np.unique(key, return_inverse=True)
        in_a = np.bincount(inverse[self.side[rows] == 0], minlength=len(values))
        in_b = np.bincount(inverse[self.side[rows] == 1], minlength=len(values))
        changed = in_a != in_b
        # the campaign of a (key, unit): that of any of its rows
        _, representative = np.unique(inverse, return_index=True)
        nr_gained, nr_lost = len(gained_rows), len(lost_rows)
        return (np.concatenate([self.campaign[gained_rows], self.campaign[lost_rows],
                                self.campaign[rows[representative]][changed]]),
                np.concatenate([unit[gained_rows], unit[lost_rows], (values % nr_units)[changed]]),
                np.concatenate([np.ones(nr_gained, np.int64), np.zeros(nr_lost, np.int64),
                                np.maximum(in_b - in_a, 0)[changed]]),
                np.concatenate([np.zeros(nr_gained, np.int64), np.ones(nr_lost, np.int64),
                                np.maximum(in_a - in_b, 0)[changed]]))

    def per(self, code: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Contacts per code (< size) on side A and on side B."""
        return (np.bincount(code[self.side == 0], minlength=size)[:size],
                np.bincount(code[self.side == 1], minlength=size)[:size])


def _union(first: list[str], second: list[str]) -> list[str]:
    return first + [x for x in second if x not in set(first)]


def build_diff(a: dict, b: dict, *, traces: Sequence = (), state=None) -> dict:
    """The --json document (see the module's docstring) of two sides of replay_both."""
    from engine.api import format_utc_offset
    if a["utc_offset_ms"] != b["utc_offset_ms"]:
        raise DiffError(f"{b['config']}: another utc_offset than {a['config']}")
    offset_ms = a["utc_offset_ms"]
    ids_a, ids_b = [c["id"] for c in a["campaigns"]], [c["id"] for c in b["campaigns"]]
    ids = _union(ids_a, ids_b)
    channel_of = {side: {c["id"]: c["channel"] for c in r["campaigns"]} for side, r in zip(SIDES, (a, b))}
    channels = _union(list(dict.fromkeys(c["channel"] for c in a["campaigns"])),
                      list(dict.fromkeys(c["channel"] for c in b["campaigns"])))
    contacts = _Contacts(a, b, ids, channels, offset_ms)
    nr_days = contacts.nr_days
    day_names = [_day_name(contacts.day0 + d) for d in range(nr_days)]

    # contacts per unit on each side
    nc, nch = len(ids), len(channels)
    campaign_a, campaign_b = contacts.per(contacts.campaign, nc)
    kind_a, kind_b = contacts.per(contacts.campaign * 3 + contacts.kind, nc * 3)
    campaign_day_a, campaign_day_b = contacts.per(contacts.campaign * nr_days + contacts.day_index, nc * nr_days)
    channel_a, channel_b = contacts.per(contacts.channel, nch)
    channel_day_a, channel_day_b = contacts.per(contacts.channel * nr_days + contacts.day_index, nch * nr_days)

    # gained and lost, matched within each kind of unit
    def summed(code: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
        return np.bincount(code, weights=weights, minlength=size).astype(np.int64)[:size] if size else \
            np.zeros(0, np.int64)

    owner, _, gained, lost = contacts.changes(np.zeros(contacts.n, np.int64), 1)
    campaign_gained, campaign_lost = summed(owner, gained, nc), summed(owner, lost, nc)
    owner, day, gained, lost = contacts.changes(contacts.day_index, max(nr_days, 1))
    code = owner * nr_days + day
    campaign_day_gained, campaign_day_lost = summed(code, gained, nc * nr_days), summed(code, lost, nc * nr_days)
    _, channel, gained, lost = contacts.changes(contacts.channel, max(nch, 1))
    channel_gained, channel_lost = summed(channel, gained, nch), summed(channel, lost, nch)
    _, unit, gained, lost = contacts.changes(contacts.channel * nr_days + contacts.day_index, max(nch * nr_days, 1))
    channel_day_gained, channel_day_lost = summed(unit, gained, nch * nr_days), summed(unit, lost, nch * nr_days)

    campaigns = {}
    for i, cid in enumerate(ids):
        entry = _counts(campaign_a[i], campaign_b[i], campaign_gained[i], campaign_lost[i])
        entry["in"] = "both" if cid in channel_of["a"] and cid in channel_of["b"] else \
            ("a" if cid in channel_of["a"] else "b")
        entry["channel_a"], entry["channel_b"] = channel_of["a"].get(cid), channel_of["b"].get(cid)
        for k, name in enumerate(_KIND_KEYS):
            entry[f"{name}_a"], entry[f"{name}_b"] = int(kind_a[i * 3 + k]), int(kind_b[i * 3 + k])
        entry["funnel_a"], entry["funnel_b"] = a["funnel"].get(cid), b["funnel"].get(cid)
        entry["days"] = {}
        for d in range(nr_days):
            j = i * nr_days + d
            if campaign_day_a[j] or campaign_day_b[j]:
                entry["days"][day_names[d]] = _counts(campaign_day_a[j], campaign_day_b[j], campaign_day_gained[j],
                                                      campaign_day_lost[j])
        campaigns[cid] = entry
    channel_entries = {}
    for i, name in enumerate(channels):
        entry = _counts(channel_a[i], channel_b[i], channel_gained[i], channel_lost[i])
        entry["days"] = {}
        for d in range(nr_days):
            j = i * nr_days + d
            if channel_day_a[j] or channel_day_b[j]:
                entry["days"][day_names[d]] = _counts(channel_day_a[j], channel_day_b[j], channel_day_gained[j],
                                                      channel_day_lost[j])
        channel_entries[name] = entry
    total = _counts(sum(e["contacts_a"] for e in campaigns.values()), sum(e["contacts_b"] for e in campaigns.values()),
                    sum(e["gained"] for e in campaigns.values()), sum(e["lost"] for e in campaigns.values()))

    # the state both start from, as loading it said (a damaged checkpoint passed over): once
    warnings = [f"--state {state}: {line}" for line in a.get("state_said", ())]
    if a["subscribers"] != b["subscribers"]:
        warnings.append(f"{b['config']} reads other subscribers than {a['config']} ({b['profiles']} against "
                        f"{a['profiles']}: {b['subscribers'][0]:,} against {a['subscribers'][0]:,}): contacts "
                        "also differ by who is a subscriber")
    # bad events as replay's line counts them, and what replay warns of its events: said
    # once, naming both sides, when both say the same (the same trace read by both)
    warnings += _said_by_sides(a, b, [_bad_events_said(r) for r in (a, b)])
    warnings += _said_by_sides(a, b, [r.get("replay_said", []) for r in (a, b)])
    for name, result in zip("AB", (a, b)):
        late = result.get("late_events", 0)
        if late:
            warnings.append(f"{name} ({result['config']}): {late:,} of {plural(result['events'], 'event')} late (ts "
                            "below the engine's clock, processed at the clock's time): traces out of order, or a "
                            "state newer than the traces? Contacts are not what they were at the events' times")
    return {
        "diff": DIFF_VERSION,
        "a": _side(a), "b": _side(b),
        "traces": [str(t) for t in traces],
        "state": None if state is None else str(state),
        "utc_offset": format_utc_offset(offset_ms),
        "days": [day_names[d] for d in range(nr_days)
                 if channel_day_a[d::nr_days].any() or channel_day_b[d::nr_days].any()],
        "total": total,
        "campaigns": campaigns,
        "channels": channel_entries,
        "budgets": _budgets(a, b, offset_ms),
        "taken": _taken(a, b, ids),
        "warnings": warnings,
    }


# --------------------------------------------------------------------------- contacts taken

TAKER_RULES = ("min_gap", "max_per_day", "max_in_window")


def _taken(a: dict, b: dict, ids: list[str]) -> list[dict]:
    """Per (campaign, taker, rule): the contacts the campaign lost on each side to the taker
    through that rule of the contact policy (Engine.takers: the taker is the campaign of the
    subscriber's latest contact, which made the rule fail); pairs with a count on either side,
    in campaign order (A's priority order, then B's new ones), then the taker's."""
    counts: dict = {}
    for side, result in enumerate((a, b)):
        for campaign, taker, rule, n in result["takers"]:
            counts.setdefault((campaign, taker, rule), [0, 0])[side] += n
    position = {cid: i for i, cid in enumerate(ids)}
    order = sorted(counts, key=lambda k: (position.get(k[0], len(ids)), position.get(k[1], len(ids)),
                                          TAKER_RULES.index(k[2]) if k[2] in TAKER_RULES else len(TAKER_RULES)))
    return [{"campaign": c, "by": t, "rule": r, "a": counts[(c, t, r)][0], "b": counts[(c, t, r)][1]}
            for c, t, r in order]


def _side(result: dict) -> dict:
    return {"config": result["config"], "sha256": result["identity"].get("sha256"),
            "campaigns": [c["id"] for c in result["campaigns"]], "events": result["events"],
            "bad_events": result.get("bad_events", 0), "bad_bytes": result.get("bad_bytes", 0),
            "unknown_subscribers": result.get("unknown_subscribers", 0),
            "pending": result["pending"], "late_events": result.get("late_events", 0)}


def _events_figures(side: dict) -> str:
    """A side's events as `sigmatch replay`'s line says a run's (engine.cli.format_run), so
    that the two read alike: '(4,995 bad in 5,015 bytes, 0 unknown subscribers, 0 late)'."""
    bad = side.get("bad_events", 0)
    # the bytes say what the count cannot: one damaged header can make one bad value of many events
    inside = f" in {plural(side.get('bad_bytes', 0), 'byte')}" if bad else ""
    return (f"({bad:,} bad{inside}, {plural(side.get('unknown_subscribers', 0), 'unknown subscriber')}, "
            f"{side.get('late_events', 0):,} late)")


def _bad_events_said(result: dict) -> list[str]:
    """A side's bad events as a warning, in replay's words; none when it had none."""
    if not result.get("bad_events"):
        return []
    return [f"{plural(result['events'], 'event')} {_events_figures(result)}: bad events are skipped "
            "(docs/semantics.md, \"Good and bad events\")"]


def _said_by_sides(a: dict, b: dict, said: list[list[str]]) -> list[str]:
    """Each line of `said` (A's lines, B's lines) once, after the sides that said it:
    'A (a.toml) and B (b.toml): line'."""
    lines = []
    for line in dict.fromkeys(said[0] + said[1]):
        sides = [f"{name} ({result['config']})" for name, result, lines_of in zip("AB", (a, b), said)
                 if line in lines_of]
        lines.append(f"{' and '.join(sides)}: {line}")
    return lines


# --------------------------------------------------------------------------- budgets

def _reached(result: dict, offset_ms: int) -> dict:
    """{(budget, id, day or None): (limit, ts or None, spent at start)} of one side: for each
    budget of its configuration, the send that brought the budget's use to its limit, the
    sends counted in the order the core counted them (seq) from the use the side started with."""
    actions = result["actions"]
    sends = actions["kind"] == 0
    ts = actions["ts"][sends].astype(np.int64)
    campaign = actions["campaign"][sends].astype(np.int64)
    day = (ts + offset_ms) // DAY_MS
    start = result["start"]
    start_day = None if start["clock"] is None else (start["clock"] + offset_ms) // DAY_MS
    out: dict = {}

    def daily(kind: str, name: str, rows: np.ndarray, limit: int, used_at_start: int) -> None:
        days = np.unique(day[rows])
        found = False
        for d in days.tolist() + ([start_day] if start_day is not None and start_day not in days else []):
            used = used_at_start if d == start_day else 0
            on_day = rows[day[rows] == d]
            if used >= limit:
                out[(kind, name, d)] = (limit, None, True)
                found = True
            elif len(on_day) >= limit - used:
                out[(kind, name, d)] = (limit, int(ts[on_day[limit - used - 1]]), False)
                found = True
        if not found:
            out[(kind, name, None)] = (limit, None, False)

    for i, spec in enumerate(result["campaigns"]):
        rows = np.flatnonzero(campaign == i)
        today, ever = start["campaigns"].get(spec["id"], (0, 0))
        if spec["daily_budget"] is not None:
            daily("campaign daily", spec["id"], rows, spec["daily_budget"], today)
        if spec["total_budget"] is not None:
            limit = spec["total_budget"]
            if ever >= limit:
                out[("campaign total", spec["id"], None)] = (limit, None, True)
            else:
                out[("campaign total", spec["id"], None)] = (
                    limit, int(ts[rows[limit - ever - 1]]) if len(rows) >= limit - ever else None, False)
    for name, limit in result["channel_budgets"].items():
        codes = [i for i, c in enumerate(result["campaigns"]) if c["channel"] == name]
        daily("channel daily", name, np.flatnonzero(np.isin(campaign, codes)), limit,
              start["channels"].get(name, 0))
    return out


def _budgets(a: dict, b: dict, offset_ms: int) -> list[dict]:
    sides = [_reached(a, offset_ms), _reached(b, offset_ms)]
    keys = list(dict.fromkeys(k for side in sides for k in side))
    reached_somewhere = {(k[0], k[1]) for side in sides for k in side if k[2] is not None}
    limits = {}
    for i, side in enumerate(sides):
        for (kind, name, _), (limit, _, _) in side.items():
            limits[(kind, name, i)] = limit
    order = {"campaign daily": 0, "campaign total": 1, "channel daily": 2}
    rows = []
    for kind, name, day in sorted(keys, key=lambda k: (order[k[0]], k[1], -1 if k[2] is None else k[2])):
        if day is None and (kind, name) in reached_somewhere:
            continue        # a daily budget reached on some day of one side: its days are its rows
        row = {"budget": kind, "id": name, "day": None if day is None else _day_name(day)}
        for i, side in enumerate(SIDES):
            _, at, spent = sides[i].get((kind, name, day), (None, None, False))
            row[f"limit_{side}"] = limits.get((kind, name, i))
            row[f"reached_{side}"] = at
            row[f"spent_at_start_{side}"] = spent
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- the table

def _signed(n: int) -> str:
    return f"{n:+,}" if n else "0"


def _local_time(ts: Optional[int], offset: str) -> str:
    if ts is None:
        return "-"
    from engine.closedloop.report import _parse_offset
    from engine.wording import local_time
    return local_time(ts, _parse_offset(offset))


def _by_rule(rows: list[dict]) -> tuple[int, str]:
    """B's side of `taken` rows: (actions, '(min_gap 1,000, max_per_day 234)')."""
    by_rule = {rule: sum(r["b"] for r in rows if r["rule"] == rule) for rule in TAKER_RULES}
    return sum(by_rule.values()), "(" + ", ".join(f"{rule} {n:,}" for rule, n in by_rule.items() if n) + ")"


def summary(document: dict) -> list[str]:
    """What B adds and takes away, in sentences: campaigns new in B or gone from it, the others'
    net change, the whole."""
    lines = []
    campaigns = document["campaigns"]
    new = [cid for cid, e in campaigns.items() if e["in"] == "b"]
    gone = [cid for cid, e in campaigns.items() if e["in"] == "a"]
    for cid in new:
        e = campaigns[cid]
        lines.append(f"B adds campaign {cid} ({e['channel_b']}): {plural(e['contacts_b'], 'contact')} "
                     f"({e['sends_b']:,} sends, {e['controls_b']:,} controls, "
                     f"{e['global_controls_b']:,} global controls)")
        took = [r for r in document["taken"] if r["by"] == cid and r["b"]]
        lost = [r for r in document["taken"] if r["campaign"] == cid and r["b"]]
        if took:
            n, rules = _by_rule(took)
            lines.append(f"  through the contact policy its contacts suppress {plural(n, 'action')} of "
                         f"{plural(len({r['campaign'] for r in took}), 'other campaign')} {rules}")
        if lost:
            n, rules = _by_rule(lost)
            lines.append(f"  {'and t' if took else 'through the contact policy t'}heirs suppress "
                         f"{plural(n, 'action')} of its own {rules}")
    for cid in gone:
        e = campaigns[cid]
        lines.append(f"B drops campaign {cid} ({e['channel_a']}): {plural(e['contacts_a'], 'contact')} in A")
    kept = [e for e in campaigns.values() if e["in"] == "both"]
    if new or gone:
        gained, lost = sum(e["gained"] for e in kept), sum(e["lost"] for e in kept)
        net = sum(e["contacts_b"] - e["contacts_a"] for e in kept)
        lines.append(f"the campaigns of both: {plural(gained, 'contact')} gained, {lost:,} lost (net {_signed(net)})")
    for cid, e in campaigns.items():
        if e["in"] == "both" and e["channel_a"] != e["channel_b"]:
            lines.append(f"{cid} moves from channel {e['channel_a']} to {e['channel_b']}")
    t = document["total"]
    a, b = document["a"], document["b"]
    lines.append(f"events: {a['events']:,} in A {_events_figures(a)}, {b['events']:,} in B {_events_figures(b)}")
    lines.append(f"in all: {plural(t['contacts_a'], 'contact')} in A, {t['contacts_b']:,} in B "
                 f"(net {_signed(t['contacts_b'] - t['contacts_a'])}; {t['gained']:,} gained, {t['lost']:,} lost)")
    return lines


LEGEND = ("contacts: action records of every kind (send, control, global control); a contact is its campaign, "
          "subscriber and trigger time: gained = in B and not in A, lost = in A and not in B, within each row "
          "(a contact B makes on another day or channel is lost on A's and gained on B's). Days are local days "
          "of the contact's time. Lost to another campaign: each action that min_gap, max_per_day or max_in_window "
          "suppressed, counted against the campaign of the subscriber's latest contact (the subscriber may match "
          "again later: these are not all contacts lost).")


def _count_cells(e: dict) -> list[str]:
    return [f"{e['contacts_a']:,}", f"{e['contacts_b']:,}", f"{e['gained']:,}", f"{e['lost']:,}",
            _signed(e["contacts_b"] - e["contacts_a"])]


_COUNT_COLUMNS = ["contacts A", "contacts B", "gained", "lost", "net"]
_NOTES = {"a": "only in A", "b": "new in B", "both": ""}


def budget_rows(document: dict) -> list[list[str]]:
    rows = []
    for r in document["budgets"]:
        shown = []
        for side in SIDES:
            if r[f"spent_at_start_{side}"]:
                shown.append("spent at the start")
            elif r[f"limit_{side}"] is None:
                shown.append("-")
            else:
                shown.append(_local_time(r[f"reached_{side}"], document["utc_offset"])
                             if r[f"reached_{side}"] is not None else "not reached")
        rows.append([f"{r['budget']} {r['id']}", r["day"] or "", "-" if r["limit_a"] is None else f"{r['limit_a']:,}",
                     "-" if r["limit_b"] is None else f"{r['limit_b']:,}", *shown])
    return rows


_BUDGET_COLUMNS = ["budget", "day", "limit A", "limit B", "reached in A", "reached in B"]
_TAKEN_COLUMNS = ["campaign", "lost to", "rule", "in A", "in B", "net"]
TAKEN_SHOWN = 30        # rows of the table; the JSON has them all


def taken_rows(document: dict) -> list[list[str]]:
    """The pairs of `taken`, the largest change first (then the most taken)."""
    rows = sorted(document["taken"], key=lambda r: (-abs(r["b"] - r["a"]), -max(r["a"], r["b"])))
    return [[r["campaign"], r["by"] if r["by"] is not None else "(a removed campaign)", r["rule"], f"{r['a']:,}",
             f"{r['b']:,}", _signed(r["b"] - r["a"])] for r in rows]


def format_diff(document: dict, *, legend: bool = True) -> str:
    """The terminal table: what B adds, contacts per campaign, per channel and local day, the
    budgets reached."""
    from engine.closedloop.report import _table
    days = document["days"]
    period = f"{days[0]} to {days[-1]} (UTC{document['utc_offset']})" if days else "no contacts"
    lines = [f"diff of A = {document['a']['config']} and B = {document['b']['config']} over "
             f"{', '.join(document['traces']) or 'the trace'}: {period}"]
    if document["state"]:
        lines.append(f"both from the state of {document['state']}")
    lines += [""] + summary(document) + ["", "contacts per campaign:"]
    rows = [[cid, e["channel_b"] or e["channel_a"]] + _count_cells(e) + [_NOTES[e["in"]]]
            for cid, e in document["campaigns"].items()]
    rows.append(["(all)", ""] + _count_cells(document["total"]) + [""])
    lines += _table(["campaign", "channel"] + _COUNT_COLUMNS + [""], rows, left=2)
    lines += ["", "contacts per channel and local day:"]
    rows = []
    for name, e in document["channels"].items():
        rows.append([name, "(all)"] + _count_cells(e) + [""])
        rows += [[name, day] + _count_cells(d) + [""] for day, d in e["days"].items()]
    lines += _table(["channel", "day"] + _COUNT_COLUMNS + [""], rows, left=2)
    if document["budgets"]:
        lines += ["", f"budgets reached (the send that brought the use to the limit, local time "
                      f"UTC{document['utc_offset']}):"]
        lines += _table(_BUDGET_COLUMNS + [""], [r + [""] for r in budget_rows(document)], left=2)
    if document["taken"]:
        rows = taken_rows(document)
        lines += ["", "actions lost to another campaign through the contact policy (to the campaign of the "
                      "subscriber's latest contact, which made the rule fail):"]
        lines += _table(_TAKEN_COLUMNS + [""], [r + [""] for r in rows[:TAKEN_SHOWN]], left=3)
        if len(rows) > TAKEN_SHOWN:
            lines.append(f"... {plural(len(rows) - TAKEN_SHOWN, 'more pair')} in --json (taken)")
    if document["warnings"]:
        lines += [""] + [f"warning: {w}" for w in document["warnings"]]
    if legend:
        import textwrap
        lines += [""] + textwrap.wrap(LEGEND, 100)
    return "\n".join(lines)
