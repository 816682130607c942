"""Every core: `sigmatch replay --workers N` (issue 14).

The subscribers are split over N worker processes by a stable hash of the MSISDN
(`engine._core.shards_of`). Every worker decodes the whole stream, so all see the same
clock and fire timers at the same event positions, and keeps state for its own subscribers
only. What they share, budgets and max_pending, is decided exactly in the core
(`engine/_shard.pxi`): a budgeted send waits until every other worker has done everything
that comes before it in SPEC §3's order.

The coordinator (this process) merges the workers' records in that order: the position of
the event at whose start an action is made, timers before the event's campaigns, timers by
due time and creation, then the worker's own order. It gives `seq` and the conversions'
`contact_seq` there, and writes the files through the same sinks as one process, so the
output is byte-identical to one process's: every file, and stats.json outside `timing`.
A record is merged once every worker has processed its event, so the buffer holds at most
a chunk of records per worker.

A worker that fails stops the run: the others are told to stop, stats.json is not written,
and the error names the worker. Files completed before that hold a correct prefix of the
actions.
"""
from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
import threading
import time
from multiprocessing.connection import wait
import mmap
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from engine.api import (SINK_BATCH, _DayCounts, _VariantCounts, configuration_identity, interrupts_held, run_stats,
                        stopped_at, stream_error)
from engine.errors import ConfigError, LoadError, SigmatchError
from engine.language.compile import build_peer_tables, check_wheres, load_world, shard_world
from engine.language.config import Config, load_config
from engine.records import ACTION_DTYPE, BAD_REASONS, CONVERSION_DTYPE, STREAM_STATUSES
from engine.sinks import SinkSet, SinkThread
from engine.wording import plural
from loaders import usable_cores

__all__ = ["replay", "WorkerError", "MAX_WORKERS", "usable_cores", "beyond_cores"]

log = logging.getLogger("sigmatch.workers")

MAX_WORKERS = 256
# Pending counts by event position kept per worker (the core's ring, 8 MiB): no worker starts
# an event more than this many positions ahead of the slowest one. Large enough that a worker
# the scheduler set aside for a few milliseconds holds no other back.
RING_BITS = 20
# Batches a forked worker may have queued behind the one its thread is sending (_Sender): with
# that one and what the pipe holds, the bound of the merge's buffer that a worker keeps, a
# chunk's records each.
SEND_AHEAD = 4
_END = np.uint64(0xFFFFFFFFFFFFFFFF)


class WorkerError(SigmatchError):
    """A worker of a sharded run failed; the run's output is incomplete."""


def beyond_cores(workers: int) -> Optional[str]:
    """One line of warning when `workers` (processes of `replay --workers`, threads of the
    service) are more than usable_cores(), else None. The workers beyond the cores only take
    turns on them, and a worker that is not running holds up every shared decision, so such
    a run is slower than one with a worker per core, not faster (a newcomer's 256 workers on
    2 cores ran 30 times slower than one); it is said, and the run goes on."""
    cores = usable_cores()
    if workers <= cores:
        return None
    return (f"--workers {workers} on {plural(cores, 'usable core')}: one worker per core is advised; the workers "
            "beyond the cores gain nothing, and each shared decision waits for the slowest (going on)")


def _nr_budgets(config) -> int:
    return len(config.campaigns) + len(config.channels)


# ---- a worker ---------------------------------------------------------------------------

# What the forked workers inherit from the coordinator, set only while they are being forked:
# a Process keeps its arguments, and the coordinator must not keep the snapshot alive.
_INHERITED: Optional[tuple] = None


def _release_freed() -> None:
    """Give the memory of the freed snapshot back to the system now. The workers were forked
    while it was held: pages Arrow's allocator kept and reused would be copied in the process
    that writes them, so the snapshot would end up counted once per process. The C heap is
    trimmed too: the compile's temporaries over the whole snapshot stay mapped otherwise (on
    M, 2 workers peaked at 0.87-0.88 GB of PSS with it, 0.92 without; glibc only)."""
    import pyarrow as pa
    pa.default_memory_pool().release_unused()
    import ctypes
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _shared_block(size: int) -> mmap.mmap:
    """`size` zeroed bytes shared with the processes forked after: an anonymous mapping, so
    that nothing outlives the run, however it ends (a named /dev/shm segment would stay
    behind a coordinator killed with its resource tracker)."""
    return mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)


def _die_with(coordinator: int) -> None:
    """Have the kernel kill this process when the coordinator (pid `coordinator`, which forked
    it) dies: killed by SIGTERM or SIGKILL, it runs no cleanup, and its workers went on
    compiling for seconds with the memory of a province, orphaned (Linux's PR_SET_PDEATHSIG;
    elsewhere a worker still stops at its first send, on the broken pipe)."""
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != coordinator:
        os._exit(1)         # the coordinator died before the request was made


def _worker(index: int, workers: int, traces: list, block: mmap.mmap, conn, others: list,
            coordinator: int) -> None:
    """Run shard `index` of `workers` over the traces and send its records to the coordinator
    through `conn` (_run_shard's messages). Forked from the coordinator (pid `coordinator`):
    the configuration and world it loaded are inherited (shared, not copied), `block` is its
    mapping, `others` the pipe ends that are not this worker's (closed here, so that a
    worker's death reaches the coordinator as EOF)."""
    global _INHERITED
    _die_with(coordinator)
    # Ctrl-C reaches the whole process group: the coordinator alone answers it (it stops the
    # workers and says "aborted"); a worker that raised it too would die before its first
    # word, or print a traceback from wherever it was
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the coordinator stops a worker with SIGTERM: the handler `replay` put in for itself
    # (SIGTERM as Ctrl-C) would make that a KeyboardInterrupt here
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # handed over once: a closure over it would keep the snapshot (GBs at L) alive in every
    # worker for the whole run, where the worker frees it once compiled
    inherited, _INHERITED = [_INHERITED], None
    for other in others:
        other.close()
    if index > 0 and logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # the workers would log each warning of the loaders N times; worker 0 says it once
        logging.getLogger().setLevel(logging.ERROR)
    sender = _Sender(conn.send, on_broken=lambda: block.__setitem__(slice(0, 8), (1).to_bytes(8, "little")))
    try:
        _run_shard(inherited.pop, index, workers, traces, block, sender.send)
    finally:
        sender.close()
        conn.close()


class _Sender:
    """Sends a worker's messages to the coordinator on a thread of their own, with at most
    SEND_AHEAD queued behind the one being sent. A batch is larger than a pipe holds: sent
    from the core's thread, the worker stood still until the coordinator had read it, and a
    worker standing still soon holds every other back (a ring's length). The core runs
    without the interpreter's lock, so the thread pickles and writes while it works.
    Messages keep their order."""

    def __init__(self, send, on_broken):
        import queue
        self._send = send
        self._on_broken = on_broken
        self._queue = queue.Queue(SEND_AHEAD)
        self._failed: Optional[BaseException] = None
        self._reported = False
        self.blocked_s = 0.0        # seconds send() waited for room: the coordinator was behind
        self._thread = threading.Thread(target=self._run, name="sigmatch-worker-send", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (message := self._queue.get()) is not None:
            if self._failed is not None:
                continue            # drained unsent, so that send() never blocks on a full queue
            try:
                self._send(message)
            except (BrokenPipeError, ConnectionResetError) as e:
                # the coordinator is gone (killed): no one is left to tell, and the core,
                # which does not send, hears it through the block's abort flag
                self._failed = e
                self._on_broken()
            except BaseException as e:      # MemoryError pickling a batch, say: the worker's own
                self._failed = e

    def send(self, message) -> None:
        """Queue `message`. Once the thread could not send, raises what it met: BrokenPipeError
        when the coordinator is gone, else that error, which the worker then reports; its
        report ("error", ...) is sent here, on the caller's thread, as the queue no longer
        moves. The time it waits for room adds to `blocked_s`."""
        failed = self._failed
        if failed is not None:
            if isinstance(failed, (BrokenPipeError, ConnectionResetError)):
                raise BrokenPipeError("the coordinator is gone")
            if message[0] == "error":
                self._report(message)
                return
            raise failed
        if message[0] == "end":
            # the worker's line (its figures' "said", which the coordinator logs) ends with this
            # figure, known only here
            message[4]["said"] += f"; {self.blocked_s:.2f} s waiting for the coordinator to take its batches"
        if self._queue.full():
            started = time.perf_counter()
            self._queue.put(message)
            self.blocked_s += time.perf_counter() - started
        else:
            self._queue.put(message)

    def close(self) -> None:
        """Send what is queued, then stop the thread. When the thread met an error of the
        worker's own after the worker's last word was queued, that error is reported now:
        the coordinator must not take the run's end for a worker that stopped without one."""
        self._queue.put(None)
        self._thread.join()
        failed = self._failed
        if failed is not None and not isinstance(failed, (BrokenPipeError, ConnectionResetError)):
            self._report(("error", "run", _failure(failed)))

    def _report(self, message) -> None:
        """The worker's one error, sent on the caller's thread (the queue no longer moves)."""
        if self._reported:
            return
        self._reported = True
        try:
            self._send(message)
        except OSError:
            pass            # the coordinator is gone too


def _run_shard(load, index: int, workers: int, traces: list, block, send, attached=None, copied: bool = False) -> None:
    """Run shard `index` of `workers` over the traces: `load()` gives (configuration, world),
    `block` is the shared block (or this worker's copy of it, engine.workers.cluster), `send`
    takes each message for the coordinator: ("batch", events done, bytes fed, actions, keys,
    conversions, positions, dead letters) after each chunk, then ("end", status, error_offset,
    files, figures; figures["unread"] names a trace that could not be read part-way), or
    ("error", "load" or "run", one line). `attached(core)`, when given,
    is called once the core is a worker, and returns a callable called when it has finished
    (cluster: the thread that copies the lanes between hosts; `copied`: the block is this
    worker's copy, Core.attach_shard)."""
    core = None
    finished = None
    try:
        from engine.api import Engine
        from loaders.traces import iter_chunks
        started = time.perf_counter()
        config, world = load()
        # checked on the whole snapshot first: a `where` error names the row of the file that
        # made a column text, which only the whole snapshot can tell
        check_wheres(config, world)
        # this worker's copy of the world from here: the other workers' rows of the snapshot
        # are freed now (once every worker has taken its own), not after the compile
        world = shard_world(world, (index, workers))
        engine = Engine(config, world, shard=(index, workers), give_world=True)
        # the compile freed the columns once read; the lists and MSISDNs go now
        engine.world = world = None
        _release_freed()
        loaded = time.perf_counter()
        core = engine._core
        delayed = sum(1 for c in engine.config.campaigns if c.delay_ms)
        core.attach_shard(block, index, workers, RING_BITS, delayed, copied)
        if attached is not None:
            finished = attached(core)
        files: list = []
        nbytes = 0

        def send_batch():
            actions, keys, conversions, positions = core.take_sharded()
            dead = core.take_dead_letters()
            send(("batch", int(core.counts()["events"]), nbytes, actions, keys, conversions, positions,
                  dead if index == 0 else None))

        status = 0
        unread = None
        core.begin_stream()
        try:
            # no reader thread: the workers keep every core busy, and a second buffer each
            # would add to their memory (docs/performance.md, "Memory of N workers")
            for chunk in iter_chunks([Path(p) for p in traces], read_ahead=False,
                                     on_file=lambda path: files.append((nbytes, str(path)))):
                status = core.feed(chunk)
                nbytes += len(chunk)
                if core.aborted:
                    return
                _refuse_short(core, status)
                send_batch()
                if status:
                    break
        except LoadError as e:
            if not files:
                # before any trace was opened (one gone since the command started): the
                # input does not load, as one process finds before it runs
                raise
            # a trace that cannot be read part-way (a .gz cut short): the stream ends here,
            # undrained, as in one process, which keeps what was made and writes stats.json;
            # every worker reads the same bytes, so all stop at the same event
            unread = str(e)
        if not status and unread is None:
            status = core.end_stream()
            _refuse_short(core, status)
        if not status and unread is None:
            core.drain()
            if core.aborted:
                return
        core.flush_dead_letters()
        core.shard_done()
        if finished is not None:
            finished()
            finished = None
        waits, behind, certain, decided = core.shard_waits
        held, waited_s = core.shard_held
        said = (f"worker {index} of {workers}: {plural(engine.subscribers.size, 'subscriber')} loaded in "
                f"{loaded - started:.2f} s, the stream in {time.perf_counter() - loaded:.2f} s; waited for the "
                f"others at {plural(waits, 'shared decision')} ({behind:,} found one behind, {decided:,} decided by the "
                f"counts before the others got there), "
                f"{plural(certain, 'budgeted send')} without waiting; held back {plural(held, 'time')} by the "
                f"slowest; {waited_s:.2f} s waiting in all")
        log.debug("%s", said)       # the coordinator logs it, for every worker
        send_batch()
        send(("end", int(status), int(core.error_offset), files, {
            "counts": core.counts(), "funnel": core.funnel(), "pending": int(core.pending), "said": said,
            "unread": unread, "bytes": nbytes,
            # the bytes processed, as one process counts them (api._where_stopped): an event
            # left incomplete by a trace that could not be read on is not
            "processed": int(core.next_offset) - int(core.carried),
        }))
    except (BrokenPipeError, ConnectionResetError):
        pass        # the coordinator is gone (killed): no one is left to tell
    except (ConfigError, LoadError) as e:
        # before the first event: the same for every worker, and what one process would say
        _tell(send, ("error", "load", str(e)))
    except Exception as e:      # MemoryError, a run's error, or a bug: still one line
        _tell(send, ("error", "run", _failure(e)))
    finally:
        if core is not None:
            core.shard_done()
        if finished is not None:
            finished()


def _disagreement(ended: dict, workers: int) -> Optional[str]:
    """Every worker reads the same bytes, so all end the stream at the same event with the
    same status: the run's end is taken from worker 0's word. A worker that says otherwise
    (a read error of its own, a bug; on Ray, a host whose copy of a trace differs) would make
    that a merged output presented as complete: the run fails instead, naming it. `ended` maps a worker to its "end" message's
    (status, error_offset, files, figures). Returns the failure's line, or None."""
    def end(w):
        status, offset, files, figures = ended[w]
        return (int(status), int(offset) if status else 0, figures.get("unread"), int(figures["counts"]["events"]),
                int(figures["bytes"]), [tuple(f) for f in files])

    def said(w):
        status, offset, unread, events, nbytes, _ = end(w)
        how = "read error: " + unread if unread else STREAM_STATUSES[status] + (f" at byte {offset:,}" if status else "")
        return f"worker {w} at event {events:,}, byte {nbytes:,} of the stream ({how})"

    for w in sorted(ended):
        if end(w) != end(0):
            return f"the {workers} workers ended the stream at different points: {said(0)}; {said(w)}"
    return None


def _refuse_short(core, status: int) -> None:
    """A worker that ran out of memory stopped at an event of its own, where the others go
    on: one process would have stopped elsewhere, or not at all. Raises MemoryError, which
    fails the run (a stream's other errors are in the bytes, the same for every worker)."""
    if status == STREAM_STATUSES.index("out_of_memory") and not core.aborted:
        raise MemoryError(f"at event {core.counts()['events']:,}")


def _failure(e: BaseException) -> str:
    """A worker's error as its one line: a SigmatchError's words, "out of memory", or a bug's
    type and message."""
    if isinstance(e, MemoryError):
        return f"out of memory ({e})" if str(e) else "out of memory"
    if isinstance(e, SigmatchError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def _tell(send, message) -> None:
    """Send a worker's last word, unless the coordinator is gone (then it aborted the run:
    the core's error was that abort, and no one is left to tell)."""
    try:
        send(message)
    except OSError:         # BrokenPipeError, ConnectionResetError: the pipe is gone
        pass


# ---- the coordinator --------------------------------------------------------------------

class _Merge:
    """The workers' records, merged into SPEC §3's order as far as all have got."""

    def __init__(self, workers: int):
        self.workers = workers
        self.done = [0] * workers               # events each worker has processed (_END: all)
        self.actions = [[] for _ in range(workers)]     # (actions, keys) not merged yet
        self.conversions = [[] for _ in range(workers)]
        self.global_seq = [np.zeros(0, np.uint64) for _ in range(workers)]   # by local seq - 1
        self.seq = 0
        self.conversion_seq = 0
        self.merged_upto: Optional[np.uint64] = None     # the limit of the last merge

    def add(self, w: int, done: int, actions, keys, conversions, positions) -> None:
        self.done[w] = done
        if len(actions):
            self.actions[w].append((actions, keys))
        if len(conversions):
            self.conversions[w].append((conversions, positions))

    def finish(self, w: int) -> None:
        self.done[w] = _END

    @staticmethod
    def _take(parts: list, limit) -> tuple[list, list]:
        """The records of `parts` (each (records, keys or positions)) at event positions
        <= limit, and what is left."""
        if not parts:
            return [], parts
        # the parts are in position order: those wholly past the limit stay as they are,
        # so a worker far ahead of the slowest is not copied again at every merge
        whole = 0
        while whole < len(parts) and _positions(parts[whole][1])[-1] <= limit:
            whole += 1
        if whole < len(parts) and _positions(parts[whole][1])[0] <= limit:
            whole += 1          # the part the limit falls in, cut below
        if whole == 0:
            return [], parts
        head, rest = parts[:whole], parts[whole:]
        records = np.concatenate([p[0] for p in head]) if len(head) > 1 else head[0][0]
        keys = np.concatenate([p[1] for p in head]) if len(head) > 1 else head[0][1]
        cut = int(np.searchsorted(_positions(keys), limit, side="right"))
        left = ([(records[cut:], keys[cut:])] if cut < len(records) else []) + rest
        return ([records[:cut], keys[:cut]] if cut else []), left

    def _gather(self, pending: list, limit) -> Optional[tuple]:
        """Every worker's records of `pending` (self.actions or self.conversions) at event
        positions <= limit, taken out of it: (records, keys or positions, worker of each,
        index of each in its worker's part), or None when there are none."""
        taken, owners = [], []
        for w in range(self.workers):
            got, pending[w] = self._take(pending[w], limit)
            if got:
                taken.append(got)
                owners.append(w)
        if not taken:
            return None
        return (np.concatenate([t[0] for t in taken]), np.concatenate([t[1] for t in taken]),
                np.concatenate([np.full(len(t[0]), w, np.uint32) for t, w in zip(taken, owners)]),
                np.concatenate([np.arange(len(t[0])) for t in taken]))

    def merged(self) -> tuple[np.ndarray, np.ndarray]:
        """(actions, conversions) that every worker has passed, in order, with their final
        seq, conversion seq and contact_seq."""
        limit = np.uint64(min(self.done))
        actions = np.zeros(0, ACTION_DTYPE)
        if limit == self.merged_upto:
            # nothing new can be merged: a worker's records after this come after its
            # progress, and the slowest has not moved
            return actions, np.zeros(0, CONVERSION_DTYPE)
        self.merged_upto = limit
        gathered = self._gather(self.actions, limit)
        if gathered is not None:
            records, keys, worker, local = gathered
            order = action_order(keys, worker, local)
            actions = records[order]
            worker = worker[order]
            new_seq = np.arange(self.seq + 1, self.seq + 1 + len(actions), dtype=np.uint64)
            self.seq += len(actions)
            for w in np.unique(worker):
                mine = worker == w
                # a worker's records keep their relative order, so its local seqs stay consecutive
                start = int(actions["seq"][mine][0]) - 1
                if start != len(self.global_seq[w]):
                    raise AssertionError(f"worker {w}: action seq {start + 1} out of order")
                self.global_seq[w] = np.concatenate([self.global_seq[w], new_seq[mine]])
            actions["seq"] = new_seq
        conversions = np.zeros(0, CONVERSION_DTYPE)
        gathered = self._gather(self.conversions, limit)
        if gathered is not None:
            records, positions, worker, local = gathered
            records = records.copy()
            for w in np.unique(worker):
                mine = worker == w
                records["contact_seq"][mine] = self.global_seq[w][records["contact_seq"][mine].astype(np.int64) - 1]
            order = conversion_order(positions, worker, local)
            conversions = records[order]
            conversions["seq"] = np.arange(self.conversion_seq + 1, self.conversion_seq + 1 + len(conversions),
                                           dtype=np.uint64)
            self.conversion_seq += len(conversions)
        return actions, conversions


def action_order(keys, worker, local) -> np.ndarray:
    """The order of several workers' actions, as one process emits them (SPEC §3): by event
    position, then timers by due time and creation before the event's campaigns (due =
    int64 max), then each worker's own order, which already follows it. `keys`
    (ACTION_KEY_DTYPE), `worker` and `local` (the index in its worker's part) are arrays of
    one length; returns the indexes in order."""
    return np.lexsort((local, worker, keys["created"], keys["due"], keys["pos"]))


def conversion_order(positions, worker, local) -> np.ndarray:
    """The order of several workers' conversions: by event position, then each worker's own
    order (an event has one subscriber, so one worker converts at it)."""
    return np.lexsort((local, worker, positions))


def _positions(keys) -> np.ndarray:
    """The event positions of a part's records: an action's keys hold them, a conversion's
    are them."""
    return keys["pos"] if keys.dtype.names else keys


def _terminate(processes) -> None:
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
            p.join()


class _Forked:
    """The workers as processes forked from this one, over one shared mapping: what
    _coordinate needs of them (messages, abort, close)."""

    def __init__(self, config, world: list, traces: Sequence, workers: int):
        """`world` is a list holding the loaded world, which is taken out of it: a worker is
        forked inside this call, and any frame of its callers that still held the world
        would keep the whole snapshot alive in every worker for the whole run."""
        from engine._core import shard_block_size
        self.workers = workers
        self.block = _shared_block(shard_block_size(workers, _nr_budgets(config), RING_BITS))
        # fork, not spawn: a worker starts with the coordinator's imports (spawn re-imports
        # them, 1 to 2 s here), before any thread of the coordinator exists
        context = multiprocessing.get_context("fork")
        self.conns, self.processes = [], []
        global _INHERITED
        _INHERITED = (config, world.pop())
        # A SIGINT in the middle of a fork would raise in the interpreter's fork hooks, which
        # swallow it (the run would go on): while forking it is only noted, and raised after.
        # So is a SIGTERM, which `replay` makes a Ctrl-C of its own (engine.cli), and which is
        # sent again once the handler before is back.
        interrupted: list = []
        terminated: list = []
        previous = previous_term = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
            previous_term = signal.signal(signal.SIGTERM, lambda *_: terminated.append(True))
        try:
            pipes = [context.Pipe(duplex=False) for _ in range(workers)]
            for index, (ours, theirs) in enumerate(pipes):
                others = [end for k, pair in enumerate(pipes) for end in pair if k != index] + [ours]
                p = context.Process(target=_worker, name=f"sigmatch-worker-{index}", daemon=True,
                                    args=(index, workers, [str(t) for t in traces], self.block, theirs, others,
                                          os.getpid()))
                p.start()
                self.processes.append(p)
            for ours, theirs in pipes:
                theirs.close()
                self.conns.append(ours)
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
                signal.signal(signal.SIGTERM, previous_term)
                previous = None
            if terminated:
                signal.raise_signal(signal.SIGTERM)
            if interrupted:
                raise KeyboardInterrupt
        except BaseException:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
                signal.signal(signal.SIGTERM, previous_term)
            _terminate(self.processes)
            self.block.close()
            raise
        finally:
            _INHERITED = None

    def messages(self):
        """(worker, message) as they come; message None when the worker's pipe closed."""
        live = {conn: w for w, conn in enumerate(self.conns)}
        while live:
            for conn in wait(list(live)):
                w = live[conn]
                try:
                    message = conn.recv()
                except EOFError:
                    del live[conn]
                    message = None
                if message is not None and message[0] == "end":
                    log.info("%s", message[4]["said"])
                yield w, message

    def death(self, w: int) -> str:
        self.processes[w].join(timeout=5)
        return f"exit code {self.processes[w].exitcode}"

    def abort(self) -> None:
        self.block[:8] = (1).to_bytes(8, "little")

    def close(self) -> None:
        _terminate(self.processes)
        for conn in self.conns:
            conn.close()
        self.block.close()


def _hold_off_interrupts(saved: dict) -> None:
    """After the first Ctrl-C or SIGTERM, the ones that follow are ignored while the files of
    what was merged are completed: a second Ctrl-C tens of ms after the first left the run's
    last files unfinished, once every file, and a second SIGTERM ended the process by the
    signal (helper-131). Only in the main thread; once per run (`saved` keeps what to put back)."""
    if saved or threading.current_thread() is not threading.main_thread():
        return
    for number in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(number) is not None:    # one set outside Python could not be put back
            saved[number] = signal.signal(number, signal.SIG_IGN)


def _let_interrupts_in(saved: dict) -> None:
    """Put back what _hold_off_interrupts set aside."""
    for number, handler in saved.items():
        signal.signal(number, handler)
    saved.clear()


def replay(config_path, traces: Sequence, out, *, workers: int, format: Optional[str] = None,
           progress: Optional[bool] = None, ready: Optional[Callable[[], None]] = None) -> dict:
    """Replay `traces` (paths, one stream in order) through the configuration at
    `config_path` (or that Config, loaded) on `workers` processes, then drain, writing to `out` what one process
    would write (engine.api.Engine.replay). Returns the stats written to stats.json.
    Raises StreamError as one process would (after writing what was emitted before the
    break, and stats.json), WorkerError when a worker fails (stats.json is then not written),
    ConfigError/LoadError before any worker starts for a configuration, snapshot, list or
    area that does not load (or, from the workers, one that does not compile), and LoadError
    as one process would, after stats.json, for a trace that cannot be read part-way.
    `ready()` is called once the world has loaded, before anything is written to `out`
    (the command takes its output lock and removes the earlier run there: a world that does
    not load leaves `out` as it was)."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"--workers must be between 1 and {MAX_WORKERS}, not {workers}")
    begun = time.perf_counter()
    # a configuration already loaded is taken as it is (the command's CONFIG may be a pipe,
    # read once)
    config = config_path if isinstance(config_path, Config) else load_config(Path(config_path))
    if workers == 1:
        from engine.api import Engine
        engine = Engine(config)
        if ready is not None:
            ready()
        return engine.replay([Path(t) for t in traces], out=out, drain=True,
                             format=format, progress=progress, keep=False).stats
    # loaded once, here: the forked workers share it, each compiles its own subscribers and
    # then frees it (no frame of this process holds it while they are forked); the
    # coordinator merges records only
    world = [load_world(config)]
    # built once and shared with the workers, which only read them (a peer set of a province
    # is hundreds of MB: each worker built its own copy)
    build_peer_tables(config, world[0])
    if ready is not None:
        ready()
    sinks = _sinks(config, out, format)
    loaded = time.perf_counter() - begun
    forked = _Forked(config, world, traces, workers)
    _release_freed()
    return _coordinate(config, traces, out, sinks, forked, progress=progress,
                       label=f"replay ({workers} workers)", begun=(begun, loaded))


def _sinks(config, out, format: Optional[str]) -> SinkSet:
    output = config.output
    return SinkSet(Path(out), campaigns=config.campaigns, format=format or output.format,
                   max_records=output.max_records, max_age_ms=output.max_age_ms)


def _coordinate(config, traces: Sequence, out, sinks: SinkSet, transport, *, progress: Optional[bool],
                label: str, begun: Optional[tuple[float, float]] = None) -> dict:
    """Merge the records of `transport`'s workers (_Forked, or cluster's actors) into `sinks`
    as they come, then write stats.json: what one process would have written. Closes the
    transport however it ends. Raises as replay() does. `begun`: (time.perf_counter() when
    the run began, seconds it took to load the world before the workers were forked), for
    the coordinator's line under -v."""
    workers = transport.workers
    writer = SinkThread(sinks)
    started = time.perf_counter()
    first_batch = last_end = None
    merge = _Merge(workers)
    days = _DayCounts(len(config.campaigns), config.utc_offset_ms)
    variants = _VariantCounts()
    produced = {"actions": 0, "conversions": 0, "dead_letters": 0}
    seq_range: list[int] = []
    ended: dict[int, tuple] = {}
    interrupted = False             # the loop below ended by Ctrl-C or SIGTERM
    failure: Optional[str] = None
    refused: Optional[str] = None       # a configuration or input that does not load: no run
    nbytes = 0
    bar = None
    if progress is None:
        progress = sys.stderr.isatty()
    if progress:
        from loaders.traces import source_size
        from tqdm import tqdm
        bar = tqdm(total=source_size(list(traces)), unit="B", unit_scale=True, desc=label,
                   file=sys.stderr, leave=False)
    unwritten = {"actions": [], "conversions": []}
    held_off: dict = {}         # the handlers a second interrupt would have met (_hold_off_interrupts)

    def write(final: bool = False) -> None:
        # taken from the merge, counted and handed over together (api.interrupts_held)
        with interrupts_held():
            actions, conversions = merge.merged()
            for name, records in (("actions", actions), ("conversions", conversions)):
                if len(records):
                    produced[name] += len(records)
                    days.add(records, conversions=name == "conversions")
                    variants.add(config.campaigns, records, conversions=name == "conversions")
                    if name == "actions":
                        seq_range[:] = [seq_range[0] if seq_range else int(records["seq"][0]), int(records["seq"][-1])]
                    unwritten[name].append(records)
                waiting = unwritten[name]
                if waiting and (final or sum(map(len, waiting)) >= SINK_BATCH):
                    batch = np.concatenate(waiting) if len(waiting) > 1 else waiting[0]
                    # cleared first: a hand-over that raises (the writer's error) leaves no batch
                    # to be handed over again
                    waiting.clear()
                    getattr(writer, "write_" + name)(batch)

    try:
        try:
            for w, message in transport.messages():
                if message is None:
                    if w not in ended:
                        failure = failure or f"worker {w} of {workers} stopped without a word ({transport.death(w)})"
                elif message[0] == "batch":
                    if first_batch is None:
                        first_batch = time.perf_counter()
                    _, done, fed, actions, keys, conversions, positions, dead = message
                    with interrupts_held():
                        merge.add(w, done, actions, keys, conversions, positions)
                        if dead is not None and len(dead):
                            produced["dead_letters"] += len(dead)
                            writer.write_dead_letters(dead)
                    if w == 0:
                        if bar is not None:
                            bar.update(fed - nbytes)
                        nbytes = fed
                    write()
                elif message[0] == "end":
                    last_end = time.perf_counter()
                    ended[w] = message[1:]
                    with interrupts_held():
                        merge.finish(w)
                    write()
                elif message[1] == "load":
                    refused = refused or message[2]
                    failure = failure or f"worker {w} of {workers} could not load: {message[2]}"
                else:
                    failure = failure or f"worker {w} of {workers} failed: {message[2]}"
                if failure is not None:
                    break
            if failure is None and len(ended) < workers:
                failure = f"{workers - len(ended)} of {workers} workers stopped before the end"
            if failure is None:
                failure = _disagreement(ended, workers)
            if failure is None:
                write(final=True)
        except BaseException as e:
            interrupted = isinstance(e, KeyboardInterrupt)
            if interrupted:
                _hold_off_interrupts(held_off)
            transport.abort()
            if interrupted:
                # what every worker had passed is final: written, as one process writes every
                # action it made before Ctrl-C (the workers' records past it are lost); before
                # the workers are joined, which may take seconds
                write(final=True)
            transport.close()
            raise
        finally:
            if bar is not None:
                bar.close()
            if failure is not None:
                transport.abort()
            try:
                writer.finish(interrupted=interrupted)
            finally:
                if writer.error is not None:
                    sinks.abort()   # as replay() does: the open files cannot be completed
                transport.close()
        if refused is not None:
            sinks.close()
            raise LoadError(refused)
        if failure is not None:
            sinks.close()
            raise WorkerError(f"{failure}; the output in {out} is incomplete (no stats.json)")
        status, error_offset, files, figures = ended[0]
        after = dict(figures["counts"])
        after["unknown_subscribers"] = sum(e[3]["counts"]["unknown_subscribers"] for e in ended.values())
        before = {"events": 0, "unknown_subscribers": 0, "late_events": 0, "bad_bytes": 0,
                  "bad_events": {r: 0 for r in BAD_REASONS}, "bad_events_by_field": {}}
        funnel = sum(e[3]["funnel"] for e in ended.values())
        pending = sum(e[3]["pending"] for e in ended.values())
        # where the stream stopped, and the bytes before it, as one process says them
        if status and STREAM_STATUSES[status] != "out_of_memory":
            processed = int(error_offset)
            stopped = stopped_at(STREAM_STATUSES[status], processed, files)
        elif status:
            # the core names no event for it: the end of what was fed, as one process says
            processed = int(figures["processed"])
            stopped = stopped_at("out_of_memory", processed, files)
        else:
            processed = int(figures["processed"])
            stopped = stopped_at("unreadable", processed, files) if figures.get("unread") else None
        stats = run_stats(config, configuration_identity(config), before, after, funnel, days, variants, produced,
                          processed, time.perf_counter() - started, seq_range, pending, files, stopped)
        sinks.close()           # the files first, as replay() does: stats.json only beside complete files
        sinks.write_stats(stats)
        if begun is not None and first_batch is not None and last_end is not None:
            # where the run's time goes outside the workers' streams (theirs are in their lines)
            log.info("the coordinator: the world loaded in %.2f s; the workers' first batch %.2f s after the start, "
                      "the last worker's end %.2f s after it; the files finished %.2f s after that",
                      begun[1], first_batch - begun[0], last_end - begun[0], time.perf_counter() - last_end)
        if figures.get("unread"):
            unread = LoadError(figures["unread"])
            unread.stats = stats        # as one process's (api.Engine.replay)
            raise unread
        if status:
            error = stream_error(status, error_offset, files)
            error.stats = stats         # what was read before it (bad values that may explain it)
            raise error
        return stats
    except BaseException as e:
        # Stopped anywhere (Ctrl-C or SIGTERM in the loop, in the last writes, in the
        # workers' join or the stats; an error): the files of the actions written so far are
        # completed, as one process completes its own, once the writer is done with them
        # (finish() waited for it); no stats.json
        if isinstance(e, KeyboardInterrupt):
            _hold_off_interrupts(held_off)
        try:
            if writer.error is None and writer.done:
                sinks.close()
        finally:
            _let_interrupts_in(held_off)
        if isinstance(e, KeyboardInterrupt) and not os.path.exists(Path(out) / "stats.json"):
            # for the command's line: one process writes stats.json saying the run was
            # interrupted; here none says the files are partial (helper-130)
            e.incomplete_output = str(out)
        raise
