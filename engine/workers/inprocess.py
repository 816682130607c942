"""Every core for the service: `sigmatch run --workers N` (issue 14).

The service holds N shard engines in its own process, each with the subscribers
`engine._core.shards_of` gives it, over one shared block (engine/_shard.pxi), as the workers
of `replay --workers` do. Each piece of the spool is fed to all of them at once, one thread
each: a core is fed without the interpreter's lock, so they run on N cores. Budgets and
max_pending are decided exactly across them as in replay. When all have fed the piece, their
records are merged into SPEC §3's order (event position; timers by due and creation before
the event's campaigns; a worker's own order) and numbered: what one process would have
written, byte for byte.

Why threads and not processes, as replay has: the service's state must be checkpointed as
one, at one piece boundary, and restored after `kill -9` as one. In one process every
worker stands still between two pieces, their checkpoints are taken there together
(engine.service.checkpoint.CheckpointSet), and a crash takes all of them at once.

Sequence numbers. A worker numbers its actions of a piece from the service's count before
the piece (Core.set_seq); the merge gives each its final number, and the worker's contacts
then take it (Core.rewrite_contact_seqs). So a contact's seq above that count was made in
the current piece, and a conversion naming it is mapped through this piece's numbers; any
other is final already. The workers' checkpoints thus hold the numbers of the files.
"""
from __future__ import annotations

import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from engine.api import EngineFigures
from engine.errors import SigmatchError
from engine.language.compile import release_columns
from engine.records import ACTION_DTYPE, CONVERSION_DTYPE
from engine.workers import _nr_budgets, _shared_block, action_order, conversion_order

__all__ = ["ShardedEngine", "shard_of_msisdn"]

# Pending counts by event position kept per worker (the core's ring): a piece of the spool
# (FEED_BYTES, 8 MiB) holds far fewer events, so no worker is ever held back by it.
RING_BITS = 20


def shard_of_msisdn(msisdn: int, workers: int) -> int:
    """The worker that holds subscriber `msisdn` (engine._core.shards_of)."""
    from engine._core import shards_of
    return int(shards_of(np.array([msisdn], dtype=np.uint64), workers)[0])


class _Cores:
    """What the service asks of a core (engine.service.daemon, metrics, lookup), answered
    over the workers' cores: feeding and advancing run on all at once, records come back
    merged, figures summed where each worker counts its own subscribers and taken from
    worker 0 where every worker sees the whole stream (events, bad events, the clock)."""

    def __init__(self, owner: "ShardedEngine"):
        # weak: the engine holds this, and a cycle would keep a reloaded engine's workers,
        # their whole state, until the collector's next full pass
        self._owner = weakref.proxy(owner)
        self._actions: list = []
        self._conversions: list = []
        self._dead: list = []
        self.error_offset = 0

    @property
    def _cores(self) -> list:
        return [e._core for e in self._owner.shards]

    # -- the stream

    def feed(self, data) -> int:
        """Feed `data` (the next bytes of the stream) to every worker at once; returns the
        stream status as Core.feed does. SigmatchError when the workers disagree (one ran
        out of memory alone): the state can no longer be merged, and the service must
        restart from its checkpoint."""
        return self._together(lambda core: core.feed(data), "feeding")

    def advance(self, ts: int) -> None:
        """Move every worker's clock to `ts` and emit what is due (Core.advance)."""
        self._together(lambda core: core.advance(ts) or 0, "advancing the clock")

    def _together(self, call, doing: str) -> int:
        cores = self._cores
        owner = self._owner
        if owner.broken:
            raise SigmatchError("the workers stopped at different points after a failure: the service must restart "
                                "from its checkpoint")

        def alone(core):
            # A worker that fails stops the others' waits at once, from its own thread: they
            # may be waiting on its progress, and would otherwise never return
            try:
                status = call(core)
            except BaseException:
                core.shard_abort()
                raise
            if status == 4:
                core.shard_abort()      # out of memory: it stopped at an event of its own
            return status

        futures = [owner._pool.submit(alone, core) for core in cores[1:]]
        outcomes: list = [None] * len(cores)
        try:
            outcomes[0] = alone(cores[0])
        except BaseException as e:      # noqa: BLE001 - reported below, once every worker has returned
            outcomes[0] = e
        for i, future in enumerate(futures, start=1):
            try:
                outcomes[i] = future.result()
            except BaseException as e:  # noqa: BLE001
                outcomes[i] = e
        # a worker whose own error it was comes before one stopped by the abort it caused
        failed = sorted(((i, o) for i, o in enumerate(outcomes) if isinstance(o, BaseException)),
                        key=lambda f: cores[f[0]].aborted)
        # the first that ran out of memory, not one stopped by its abort (every status is 4 then)
        short = [i for i, (core, o) in enumerate(zip(cores, outcomes)) if o == 4 and not core.aborted]
        if failed or short or any(core.aborted for core in cores):
            owner.broken = True
            if failed:
                i, error = failed[0]
                if isinstance(error, MemoryError):
                    raise MemoryError(f"worker {i} of {len(cores)} ran out of memory while {doing}")
                raise SigmatchError(f"worker {i} of {len(cores)} failed while {doing}: {error}")
            i = short[0] if short else 0
            raise MemoryError(f"worker {i} of {len(cores)} ran out of memory while {doing}; the service must "
                              "restart from its checkpoint")
        statuses = set(outcomes)
        events = {core.counts()["events"] for core in cores}
        if len(statuses) > 1 or len(events) > 1:
            # the same bytes decode the same way in every worker
            owner.broken = True
            raise SigmatchError(f"the workers stopped at different events while {doing} (statuses "
                                f"{sorted(statuses)}): the service must restart from its checkpoint")
        status = outcomes[0]
        if status:
            self.error_offset = cores[0].error_offset
        self._merge()
        return int(status)

    def _merge(self) -> None:
        """The workers' records since the last merge, in SPEC §3's order, numbered from the
        service's counts; then each worker's contacts take their final numbers, and every
        worker numbers on from there."""
        cores = self._cores
        seq, conversion_seq = self._owner.seq, self._owner.conversion_seq
        parts = [core.take_sharded() for core in cores]
        dead = cores[0].take_dead_letters()
        for core in cores[1:]:
            core.take_dead_letters()        # the same bad values, seen by every worker
        if len(dead):
            self._dead.append(dead)
        counts = [len(p[0]) for p in parts]
        merged_seq = [np.zeros(0, np.uint64)] * len(cores)
        if sum(counts):
            records = np.concatenate([p[0] for p in parts])
            keys = np.concatenate([p[1] for p in parts])
            worker = np.repeat(np.arange(len(cores), dtype=np.uint32), counts)
            local = np.concatenate([np.arange(n) for n in counts])
            order = action_order(keys, worker, local)
            actions = records[order]
            worker = worker[order]
            numbers = np.arange(seq + 1, seq + 1 + len(actions), dtype=np.uint64)
            for w in range(len(cores)):
                mine = worker == w
                if not counts[w]:
                    continue
                # a worker's records keep their relative order: its local numbers are
                # seq + 1 ... seq + n in that order
                merged_seq[w] = numbers[mine]
                theirs = actions[mine]
                cores[w].rewrite_contact_seqs(np.ascontiguousarray(theirs["msisdn"]),
                                              np.ascontiguousarray(theirs["campaign"]),
                                              np.ascontiguousarray(theirs["seq"]), merged_seq[w])
            actions["seq"] = numbers
            seq += len(actions)
            self._actions.append(actions)
        conversion_counts = [len(p[2]) for p in parts]
        merged_conversion_seq = [np.zeros(0, np.uint64)] * len(cores)
        if sum(conversion_counts):
            records = np.concatenate([p[2] for p in parts]).copy()
            positions = np.concatenate([p[3] for p in parts])
            worker = np.repeat(np.arange(len(cores), dtype=np.uint32), conversion_counts)
            local = np.concatenate([np.arange(n) for n in conversion_counts])
            contact = records["contact_seq"]
            fresh = contact > self._owner.seq      # a contact of this piece: a worker's own number
            for w in np.unique(worker[fresh]):
                mine = fresh & (worker == w)
                contact[mine] = merged_seq[w][(contact[mine] - self._owner.seq - 1).astype(np.int64)]
            order = conversion_order(positions, worker, local)
            conversions = records[order]
            numbers = np.arange(conversion_seq + 1, conversion_seq + 1 + len(conversions), dtype=np.uint64)
            conversions["seq"] = numbers
            worker = worker[order]
            for w in range(len(cores)):
                merged_conversion_seq[w] = numbers[worker == w]
            conversion_seq += len(conversions)
            self._conversions.append(conversions)
        for w, engine in enumerate(self._owner.shards):
            if engine._explainer is not None:
                engine._explainer.add(self._explained(engine._core.take_explain(), merged_seq[w],
                                                      merged_conversion_seq[w]))
        self._owner.seq, self._owner.conversion_seq = seq, conversion_seq
        for core in cores:
            core.set_seq(seq, conversion_seq)

    def _explained(self, lines: np.ndarray, merged_seq: np.ndarray, merged_conversion_seq: np.ndarray) -> np.ndarray:
        """A worker's explanation lines of this piece with the numbers of the files: an
        emission's and a contact's seq, a conversion's seq and its contact's (the worker's
        own numbers are those above the service's counts before the piece)."""
        from engine.closedloop.explain import X_CONTACT, X_CONVERSION, X_EMIT
        if not len(lines):
            return lines
        lines = lines.copy()
        before, conversions_before = self._owner.seq, self._owner.conversion_seq
        what = lines["what"]
        seq = lines["seq"]
        mine = ((what == X_EMIT) | (what == X_CONTACT)) & (seq > before)
        seq[mine] = merged_seq[(seq[mine] - before - 1).astype(np.int64)]
        conversion = what == X_CONVERSION
        fresh = conversion & (seq > conversions_before)
        seq[fresh] = merged_conversion_seq[(seq[fresh] - conversions_before - 1).astype(np.int64)]
        other = lines["other"]
        fresh = conversion & (other > np.int64(before))
        other[fresh] = merged_seq[(other[fresh] - before - 1).astype(np.int64)].astype(np.int64)
        return lines

    def begin_stream(self, offset: int = 0) -> None:
        for core in self._cores:
            core.begin_stream(offset)
        self._merge()       # a run of bad values left open is written as the stream begins

    def clear_oom(self) -> None:
        for core in self._cores:
            core.clear_oom()

    # -- records

    @staticmethod
    def _take(parts: list, dtype) -> np.ndarray:
        if not parts:
            return np.zeros(0, dtype)
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        parts.clear()
        return out

    def take_actions(self) -> np.ndarray:
        return self._take(self._actions, ACTION_DTYPE)

    def take_conversions(self) -> np.ndarray:
        return self._take(self._conversions, CONVERSION_DTYPE)

    def take_dead_letters(self) -> np.ndarray:
        from engine.records import DEAD_LETTER_DTYPE
        return self._take(self._dead, DEAD_LETTER_DTYPE)

    # -- figures

    @property
    def seq(self) -> int:
        return self._owner.seq

    @property
    def carried(self) -> int:
        return self._cores[0].carried

    @property
    def next_offset(self) -> int:
        return self._cores[0].next_offset

    @property
    def carried_head(self) -> bytes:
        # every shard's core is fed every byte, so shard 0's carry is the stream's (the
        # daemon asks it for a file read to its end inside an event: helper-129 found it
        # missing, an AttributeError at every start of `run --workers N`)
        return self._cores[0].carried_head

    @property
    def clock(self) -> Optional[int]:
        return self._cores[0].clock

    @property
    def pending(self) -> int:
        return sum(core.pending for core in self._cores)

    @property
    def nr_contacts(self) -> int:
        return sum(core.nr_contacts for core in self._cores)

    def state_scalars(self) -> dict:
        """Worker 0's scalars (the stream's offset and the clock are every worker's)."""
        return self._cores[0].state_scalars()

    def counts(self) -> dict:
        """Core.counts over the service: the stream's figures from worker 0 (every worker
        decodes all of it), unknown subscribers summed (each counts the numbers it would hold)."""
        counts = dict(self._cores[0].counts())
        counts["unknown_subscribers"] = sum(core.counts()["unknown_subscribers"] for core in self._cores)
        return counts

    def funnel(self) -> np.ndarray:
        return sum(core.funnel() for core in self._cores)

    def budgets_used(self):
        """Core.budgets_used summed over the workers (each counts its own sends)."""
        campaigns: dict = {}
        channels: dict = {}
        for core in self._cores:
            mine, theirs = core.budgets_used()
            for k, (today, ever) in mine.items():
                a, b = campaigns.get(k, (0, 0))
                campaigns[k] = (a + today, b + ever)
            for name, today in theirs.items():
                channels[name] = channels.get(name, 0) + today
        return campaigns, channels

    def subscriber_view(self, msisdn: int):
        return self._owner.shard_for(msisdn)._core.subscriber_view(msisdn)

    def subscriber_index(self, msisdn: int) -> int:
        return self._owner.shard_for(msisdn)._core.subscriber_index(msisdn)

    def sniff(self, data, values):
        return self._cores[0].sniff(data, values)

    @property
    def max_event_bytes(self) -> int:
        return self._cores[0].max_event_bytes


class ShardedEngine(EngineFigures):
    """N shard engines (engine.api.Engine with `shard`) serving as one: what the service
    (engine.service.daemon) asks of an Engine. Build with `build` or `restored`."""

    def __init__(self, config, shards: Sequence, *, seq: int = 0, conversion_seq: int = 0):
        self.config = config
        # the service replays nothing through the engine: the totals of replays stay 0
        self._no_replays_yet()
        self.shards = list(shards)
        self.workers = len(self.shards)
        self.max_event_bytes = self.shards[0].max_event_bytes
        self.configuration = self.shards[0].configuration
        self.seq = seq
        self.conversion_seq = conversion_seq
        self.reload_dropped = 0
        self.checkpoint_extra: Optional[dict] = None
        self.broken = False
        self._watched: list[int] = []
        self._pool = ThreadPoolExecutor(max_workers=max(self.workers - 1, 1), thread_name_prefix="sigmatch-worker")
        self._core = _Cores(self)
        self._attach()

    def _attach(self) -> None:
        """Join the workers over a fresh block, as they stand (Core.attach_shard with resume)."""
        from engine._core import shard_block_size
        block = _shared_block(shard_block_size(self.workers, _nr_budgets(self.config), RING_BITS))
        delayed = sum(1 for c in self.config.campaigns if c.delay_ms)
        for i, engine in enumerate(self.shards):
            engine._core.attach_shard(block, i, self.workers, RING_BITS, delayed, False, True)
            engine._core.set_seq(self.seq, self.conversion_seq)

    @classmethod
    def build(cls, config_path, workers: int) -> "ShardedEngine":
        """A fresh service's workers from the configuration at `config_path` and the
        profiles, lists and areas it names (loaded once, compiled per worker).
        ConfigError/LoadError as Engine.from_config."""
        from engine.api import Engine
        from engine.language.compile import load_world
        from engine.language.config import load_config
        config = load_config(Path(config_path))
        world = load_world(config)
        shards = [Engine(config, world, shard=(i, workers)) for i in range(workers)]
        release_columns(world)
        return cls(config, shards)

    @classmethod
    def restored(cls, config_path, loaded) -> tuple["ShardedEngine", Optional[int]]:
        """The workers holding a CheckpointSet's loaded state (engine_for, per worker): (the
        engine, None) or, when the configuration, profiles or lists changed while stopped,
        (the engine, pending actions of removed campaigns dropped), as engine_for."""
        from engine.language.compile import load_world
        from engine.language.config import load_config
        from engine.service.checkpoint import engine_for
        config = load_config(Path(config_path))
        world = load_world(config)
        workers = len(loaded.parts)
        shards, dropped = [], None
        for i, part in enumerate(loaded.parts):
            engine, lost = engine_for(config_path, part, config=config, world=world, shard=(i, workers))
            shards.append(engine)
            if lost is not None:
                dropped = (dropped or 0) + lost
        release_columns(world)
        scalars = loaded.parts[0].header["scalars"]
        return cls(config, shards, seq=int(scalars["seq"]), conversion_seq=int(scalars["conversion_seq"])), dropped

    def reload(self, config_path=None) -> "ShardedEngine":
        """Engine.reload for every worker, the configuration and world loaded once. The
        running engine is left as it was when the new one does not load (ConfigError,
        LoadError)."""
        from engine.language.compile import load_world
        from engine.language.config import load_config
        config = load_config(Path(config_path) if config_path else self.config.path)
        world = load_world(config)
        try:
            shards = [engine._reloaded(config, world) for engine in self.shards]
            release_columns(world)
            new = ShardedEngine(config, shards, seq=self.seq, conversion_seq=self.conversion_seq)
        except BaseException:
            # a worker's new engine that fails (out of memory: a reload holds two states)
            # after others were built: their explainers moved to new engines that are now
            # dropped, and would name the rejected configuration's campaigns
            for engine in self.shards:
                if engine._explainer is not None:
                    engine._explainer.bind(engine)
            raise
        new.reload_dropped = sum(engine.reload_dropped for engine in shards)
        new._watched = list(self._watched)      # each worker's engine carries its own watch over
        self.close()
        return new

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- what an Engine answers

    @property
    def subscribers(self) -> np.ndarray:
        """Every worker's subscribers (MSISDN), worker by worker."""
        return np.concatenate([engine.subscribers for engine in self.shards])

    def shard_for(self, msisdn: int):
        """The worker engine that holds `msisdn` (whether it is a subscriber or not)."""
        return self.shards[shard_of_msisdn(int(msisdn), self.workers) if 0 < int(msisdn) < 1 << 64 else 0]

    def subscriber_status(self, msisdn: int) -> str:
        return self.shard_for(msisdn).subscriber_status(msisdn)

    def collect_explanations(self) -> None:
        for engine in self.shards:
            engine.collect_explanations()

    @property
    def watched(self) -> list[int]:
        """The MSISDNs watched, in the order watch() was given them."""
        return list(self._watched)

    def watch(self, msisdns, *, ring: Optional[int] = None) -> None:
        """Engine.watch: each worker watches its own of `msisdns` (ValueError names a number
        that is no subscriber, and nothing changes)."""
        numbers = [int(m) for m in msisdns]
        for m in numbers:
            if self.subscriber_status(m) == "unknown":
                raise ValueError(f"{m} is not a subscriber")
        for engine in self.shards:
            engine.watch([m for m in numbers if self.shard_for(m) is engine], ring=ring)
        self._watched = numbers

    def explanation(self, msisdn: int, last: Optional[int] = None) -> dict:
        """Engine.explanation, from the worker that holds `msisdn`."""
        return self.shard_for(msisdn).explanation(msisdn, last)
