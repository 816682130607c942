"""More than one host: `sigmatch replay --ray [ADDRESS] --workers N` (issue 14, part 4).

The same shards as `--workers N` on one host (engine.workers), run as Ray actors wherever the
cluster places them, and merged by this process in the same way into the same files. What
differs is how the workers see each other's lanes (budget counts, progress, pending timers):
on one host they share a mapping; here each actor keeps its own copy of the block, and a
thread beside the shard copies the lanes through one small actor, the lane board:

- it reads this worker's lane as the others would (Core.shard_export: the key first), and
  sends it to the board when it changed;
- it takes from the board the lanes of the others that changed, and writes them into its
  copy in the reverse order (Core.shard_import: the key last).

A worker therefore sees every other lane as it was a little earlier. Each rule of
engine/_shard.pxi stays exact under that: a refusal is decided on counts that are a lower
bound, an allowance on a bound of what the others could still send that only grows when
their progress is older, and a wait lasts until the copy shows the other worker past it. The
waits cost a round trip through the board (about 1.5 ms here) instead of microseconds.

Every actor reads the configuration, its inputs and the traces itself, at the paths given:
on a cluster they must be at the same path on every node (a shared file system).
"""
from __future__ import annotations

import hmac
import logging
import mmap
import os
import queue
import secrets
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from engine.errors import LoadError, SigmatchError
from engine.language.config import load_config
from engine import workers as sharded
from engine.workers import MAX_WORKERS, _coordinate, _nr_budgets, _run_shard, _sinks

__all__ = ["replay", "RAY_EXTRA"]

log = logging.getLogger("sigmatch.workers")

RAY_EXTRA = "pip install 'sigmatch[ray]'"
# How long the cluster may take to start the actors (seconds): a cluster whose CPUs other
# jobs hold would otherwise keep the command waiting without a word
PLACE_S = 300.0
# How long one call for a worker's messages waits for the first (seconds)
TAKE_S = 1.0
# A worker sends its lane to the others when it changed, at most this often (seconds): a
# worker waiting for another waits about this long more than on one host
RELAY_PERIOD_S = 0.0002


def _encode_ring(values: np.ndarray) -> tuple:
    """Pending counts by event position, run-length coded: they change at a few events in
    a hundred, and the ring is the only part of a lane that grows with the stream."""
    if not len(values):
        return 0, np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    starts = np.concatenate(([0], np.flatnonzero(values[1:] != values[:-1]) + 1)).astype(np.uint64)
    return len(values), starts, values[starts.astype(np.int64)]


def _decode_ring(coded: tuple) -> np.ndarray:
    n, starts, values = coded
    if not n:
        return np.zeros(0, np.uint64)
    lengths = np.diff(np.append(starts, np.uint64(n))).astype(np.int64)
    return np.repeat(values, lengths)


# A lane on the wire, after a 4-byte length: key (pos, due, created), timers pending, their
# high-water mark, first event of the ring part, its events and runs; then the budget counts
# (a size both ends know from the configuration), the runs' starts and their values.
_LANE = struct.Struct("<QqQQQQII")
_TOKEN_BYTES = 32
# How long a connection to a worker's relay may take to say who it is (seconds)
HELLO_S = 10.0
# A worker's lane is sent again unchanged after this long (seconds), and a connection that
# brings nothing for SILENT_S fails the run: a waiting worker changes nothing, so without
# it a link cut between two hosts that both still answer Ray (a partition, a firewall)
# would hold both waiting for ever, the coordinator taking no message
HEARTBEAT_S = 1.0
SILENT_S = 60.0
_HELLO = struct.Struct("<H")


def _close_listener(listener: socket.socket) -> None:
    """Close a listening socket, waking the thread blocked in its accept() (close alone
    does not, on Linux)."""
    try:
        listener.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    listener.close()


def _recv_exact(sock: socket.socket, n: int) -> Optional[bytes]:
    """n bytes, or None when the peer closed the connection first."""
    got = bytearray()
    while len(got) < n:
        piece = sock.recv(n - len(got))
        if not piece:
            return None
        got += piece
    return bytes(got)


class _Relay:
    """This worker's lane to the others, and theirs into this worker's copy of the block,
    over one TCP connection from each worker to each other (authenticated by the run's
    token): a thread sends this lane when it changed, at most every RELAY_PERIOD_S, and one
    thread per other worker imports what it receives at once."""

    def __init__(self, index: int, workers: int, token: bytes, counts_bytes: int, ring_len: int, ship_ring: bool):
        self.index, self.workers, self.token = index, workers, token
        self.counts_bytes, self.ring_len, self.ship_ring = counts_bytes, ring_len, ship_ring
        self.listener: Optional[socket.socket] = None
        self.peers: Optional[list] = None
        self.peers_known = threading.Event()
        self.done = threading.Event()
        self.failed: list = []
        self.core = None
        self.threads: list = []
        self.outgoing: list = []
        self.heard: set = set()         # the workers whose connection said hello
        self.unheard: set = set()       # connections that have not said who they are yet
        self.heard_lock = threading.Lock()

    def listen(self, host: str) -> int:
        """Listen on `host` (the loopback when every worker is on this host); the port."""
        self.listener = socket.create_server((host, 0), backlog=self.workers)
        return self.listener.getsockname()[1]

    def start(self, core) -> None:
        self.core = core
        self.threads = [threading.Thread(target=self._accept, name=f"sigmatch-relay-in-{self.index}", daemon=True),
                        threading.Thread(target=self._send, name=f"sigmatch-relay-out-{self.index}", daemon=True)]
        for t in self.threads:
            t.start()

    def fail(self, why: str) -> None:
        if not self.failed:
            self.failed.append(why)
        if self.core is not None:
            self.core.shard_abort()

    def finish(self) -> None:
        """The worker has finished: send its last lane (which says so), then stop."""
        self.done.set()
        self.threads[1].join()

    def close(self) -> None:
        self.done.set()
        self.peers_known.set()
        with self.heard_lock:
            everyone = len(self.heard) == self.workers - 1
        # a worker that has not connected yet still will (this one may finish first, its lanes
        # needed by no one): it must not be refused; the listener goes with the actor
        if self.listener is not None and everyone:
            _close_listener(self.listener)
        for sock in self.outgoing:
            try:
                sock.close()
            except OSError:
                pass

    # -- in --

    def _accept(self) -> None:
        """Take connections until every other worker has said who it is: each says it on a
        thread of its own, so that a stranger who connects and says nothing holds up no one."""
        try:
            while True:
                sock, _ = self.listener.accept()
                with self.heard_lock:
                    self.unheard.add(sock)
                threading.Thread(target=self._hello, args=(sock,), daemon=True,
                                 name=f"sigmatch-relay-hello-{self.index}").start()
        except OSError:
            pass                # closed: every worker is in, or the run has ended

    def _hello(self, sock: socket.socket) -> None:
        """A connection's first bytes: the run's token and the worker's index, within
        HELLO_S; then its lanes. Anything else is closed unread."""
        try:
            sock.settimeout(HELLO_S)
            hello = _recv_exact(sock, _TOKEN_BYTES + _HELLO.size)
            sock.settimeout(None)
        except OSError:
            hello = None
        peer = _HELLO.unpack(hello[_TOKEN_BYTES:])[0] if hello is not None else -1
        with self.heard_lock:
            self.unheard.discard(sock)
            welcome = (hello is not None and hmac.compare_digest(hello[:_TOKEN_BYTES], self.token)
                       and 0 <= peer < self.workers and peer != self.index and peer not in self.heard)
            if welcome:
                self.heard.add(peer)
                strangers = list(self.unheard) if len(self.heard) == self.workers - 1 else None
        if not welcome:
            sock.close()        # not a worker of this run
            return
        if strangers is not None:
            # every worker is in: no one else is waited for
            _close_listener(self.listener)
            for stranger in strangers:
                try:
                    stranger.shutdown(socket.SHUT_RDWR)     # wakes its _hello, which closes it
                except OSError:
                    pass
        self._receive(sock, peer)

    def _receive(self, sock: socket.socket, peer: int) -> None:
        limit = _LANE.size + self.counts_bytes + 16 * self.ring_len
        try:
            sock.settimeout(SILENT_S)
            while True:
                head = _recv_exact(sock, 4)
                if head is None:
                    return      # the peer finished (its last lane came before) or died (the run stops)
                (n,) = struct.unpack("<I", head)
                if not _LANE.size + self.counts_bytes <= n <= limit:
                    raise ValueError(f"a lane of {n} bytes")
                body = _recv_exact(sock, n)
                if body is None:
                    return
                pos, due, created, pend, hw, lo, ring_n, runs = _LANE.unpack_from(body)
                at = _LANE.size + self.counts_bytes
                if runs > ring_n or ring_n > self.ring_len or n != at + 16 * runs:
                    raise ValueError(f"a ring part of {ring_n} events in {runs} runs")
                starts = np.frombuffer(body, np.uint64, runs, at)
                values = np.frombuffer(body, np.uint64, runs, at + 8 * runs)
                if runs and (starts[0] != 0 or starts[-1] >= ring_n or np.any(starts[1:] <= starts[:-1])):
                    raise ValueError("a ring part out of order")
                ring = _decode_ring((ring_n, starts, values))
                self.core.shard_import(peer, (pos, due, created), pend, hw, body[_LANE.size:at], lo, ring)
        except socket.timeout:
            self.fail(f"the lanes from worker {peer} broke off: nothing came for {SILENT_S:g} s")
        except (OSError, ValueError) as e:
            self.fail(f"the lanes from worker {peer} broke off: {e}")
        finally:
            sock.close()

    # -- out --

    def _send(self) -> None:
        self.peers_known.wait()
        if self.done.is_set() and self.peers is None:
            return
        try:
            for peer, (host, port) in enumerate(self.peers):
                if peer == self.index:
                    continue
                sock = socket.create_connection((host, port), timeout=60)
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(self.token + _HELLO.pack(self.index))
                self.outgoing.append(sock)
            ring_from = 0
            last = None
            sent = time.monotonic()
            while True:
                final = self.done.is_set()
                key, pend, hw, counts, lo, ring = self.core.shard_export(ring_from)
                if not self.ship_ring:
                    ring = ring[:0]
                if (key, pend, hw, counts) != last or len(ring) or time.monotonic() - sent >= HEARTBEAT_S:
                    last = (key, pend, hw, counts)
                    sent = time.monotonic()
                    ring_from = lo + len(ring)
                    ring_n, starts, values = _encode_ring(ring)
                    body = b"".join((_LANE.pack(*key, pend, hw, lo, ring_n, len(starts)), counts,
                                     starts.tobytes(), values.tobytes()))
                    message = struct.pack("<I", len(body)) + body
                    for sock in self.outgoing:
                        sock.sendall(message)
                if final:
                    for sock in self.outgoing:
                        sock.shutdown(socket.SHUT_WR)
                    return
                self.done.wait(RELAY_PERIOD_S)
        except OSError as e:
            if not self.done.is_set():
                self.fail(f"the lanes to the other workers broke off: {e}")


class ShardActor:
    """One shard of a cluster run, as a Ray actor: runs engine.workers._run_shard on a thread
    of its own, over a private copy of the block that a relay (_Relay) keeps in step with the
    other workers'. take() hands its messages to the coordinator."""

    def __init__(self, index: int, workers: int, config_path: str, traces: list, ring_bits: int, block_size: int,
                 counts_bytes: int, token: bytes, ship_ring: bool):
        import engine.workers
        # the coordinator's ring (its tests shrink it): this process is the actor's own
        engine.workers.RING_BITS = ring_bits
        self.index, self.workers = index, workers
        self.config_path, self.traces = config_path, traces
        self.block_size = block_size
        self.relay = _Relay(index, workers, token, counts_bytes, 1 << ring_bits, ship_ring)
        self.messages: queue.Queue = queue.Queue()
        self.thread: Optional[threading.Thread] = None

    def node(self) -> str:
        """The address of the node this actor runs on."""
        import ray
        return ray.util.get_node_ip_address()

    def listen(self, host: str) -> tuple[str, int]:
        """Listen for the other workers' lanes on `host`: (host, port)."""
        return host, self.relay.listen(host)

    def start(self, peers: list) -> str:
        """Start the shard, its lanes going to and coming from `peers` (each worker's (host,
        port), this one's included); returns the name of the host it runs on."""
        self.relay.peers = peers
        self.relay.peers_known.set()
        self.thread = threading.Thread(target=self._run, name=f"sigmatch-shard-{self.index}", daemon=True)
        self.thread.start()
        return socket.gethostname()

    def abort(self) -> None:
        """Stop this worker's waits: the run is over (another worker failed)."""
        self.relay.fail("aborted")

    def _load(self):
        from engine.language.compile import load_world
        for path in [self.config_path, *self.traces]:
            if not os.access(path, os.R_OK):
                raise LoadError(f"{path}: cannot be read on host {socket.gethostname()} (--ray reads the "
                                f"configuration, its inputs and the traces at the same path on every host)")
        config = load_config(Path(self.config_path))
        return config, load_world(config)

    def _attached(self, core):
        self.relay.start(core)
        return self.relay.finish

    def _run(self) -> None:
        block = mmap.mmap(-1, self.block_size)
        failed = self.relay.failed
        sent = []

        def send(message):
            if message[0] == "error" and failed and failed[0] != "aborted":
                message = ("error", "run", failed[0])
            sent.append(message[0])
            self.messages.put(message)
        try:
            _run_shard(self._load, self.index, self.workers, self.traces, block, send, attached=self._attached,
                       copied=True)
            if failed and failed[0] != "aborted" and sent[-1:] != ["error"]:
                self.messages.put(("error", "run", failed[0]))
        finally:
            self.relay.close()
            self.messages.put(None)

    def take(self, timeout: float) -> list:
        """The messages sent since the last call (waiting up to `timeout` s for the first);
        None last when the shard has ended."""
        try:
            got = [self.messages.get(timeout=timeout)]
        except queue.Empty:
            return []
        while got[-1] is not None:
            try:
                got.append(self.messages.get_nowait())
            except queue.Empty:
                break
        return got


class _Actors:
    """The workers as Ray actors: what engine.workers._coordinate needs of them."""

    def __init__(self, ray, config, config_path: Path, traces: Sequence, workers: int, started_ray: bool):
        from engine._core import shard_block_size, shard_counts_size
        self.ray, self.workers, self.started_ray = ray, workers, started_ray
        self.deaths: dict[int, str] = {}
        self.closed = False
        ship_ring = any(c.delay_ms for c in config.campaigns)
        actor_cls = ray.remote(ShardActor)
        ring_bits = sharded.RING_BITS
        nb = _nr_budgets(config)
        size = shard_block_size(workers, nb, ring_bits)
        token = secrets.token_bytes(_TOKEN_BYTES)
        # the actors read the traces by absolute path (their working directory is Ray's); what
        # they say of a file names it as given, as one process would
        resolved = [str(Path(t).resolve()) for t in traces]
        self.given = dict(zip(resolved, map(str, traces)))
        # the take() and abort() calls run beside the shard's thread
        self.actors = [actor_cls.options(num_cpus=1, max_concurrency=3).remote(
            index, workers, str(config_path), resolved, ring_bits, size,
            shard_counts_size(nb), token, ship_ring)
            for index in range(workers)]
        try:
            nodes = ray.get([a.node.remote() for a in self.actors], timeout=PLACE_S)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise SigmatchError(f"the Ray cluster did not start the {workers} workers within {PLACE_S:.0f} s "
                                f"(are its CPUs taken by other jobs?)") from None
        # on one host the lanes stay on the loopback; across hosts each listens on its node's address
        one_host = len(set(nodes)) == 1
        peers = ray.get([a.listen.remote("127.0.0.1" if one_host else node) for a, node in zip(self.actors, nodes)])
        hosts = ray.get([a.start.remote(peers) for a in self.actors])
        log.info("the %d workers run on %s", workers, ", ".join(sorted(set(hosts))))

    def messages(self):
        ray = self.ray
        calls = {a.take.remote(TAKE_S): w for w, a in enumerate(self.actors)}
        while calls:
            ready, _ = ray.wait(list(calls), num_returns=1)
            w = calls.pop(ready[0])
            try:
                got = ray.get(ready[0])
            except ray.exceptions.RayError as e:
                self.deaths[w] = f"its actor died: {_first_line(e)}"
                yield w, None
                continue
            for message in got:
                if message is None:
                    break
                if message[0] == "end":
                    log.info("%s", message[4]["said"])
                    figures = dict(message[4])
                    if figures.get("unread"):
                        figures["unread"] = self._as_given(figures["unread"])
                    message = (*message[:3], [(at, self.given.get(path, path)) for at, path in message[3]],
                               figures)
                elif message[0] == "error":
                    message = (*message[:2], self._as_given(message[2]))
                yield w, message
            if got and got[-1] is None:
                yield w, None
            else:
                calls[self.actors[w].take.remote(TAKE_S)] = w

    def _as_given(self, said: str) -> str:
        """A worker's error that starts with a trace's absolute path (a trace that cannot be
        read), naming the trace as it was given."""
        for resolved, given in self.given.items():
            if said.startswith(resolved + ":"):
                return given + said[len(resolved):]
        return said

    def death(self, w: int) -> str:
        return self.deaths.get(w, "its actor ended")

    def abort(self) -> None:
        for actor in self.actors:
            try:
                actor.abort.remote()
            except Exception:
                pass            # the cluster is gone: close() ends what is left

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:
                pass
        if self.started_ray:
            self.ray.shutdown()


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


# How long the cluster's address has to answer before Ray is asked to connect (seconds)
CONNECT_S = 10.0
# An HTTP/2 client's first bytes, then an empty SETTINGS frame: a gRPC server, as Ray's
# head is, answers with a SETTINGS frame of its own
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H2_SETTINGS = 4


def _check_address(address: str, where: str) -> None:
    """Raise SigmatchError (one line, starting with `where`) unless a gRPC server answers at
    `address`, HOST:PORT or ray://HOST:PORT, within CONNECT_S: given an address that refuses,
    or where something else listens, Ray retries for minutes, writing lines of its own to
    stderr. "auto" and "local" are left to Ray, and so is a cluster that talks TLS
    (RAY_USE_TLS: its first bytes are not HTTP/2's)."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SigmatchError(f"{where}: not the address of a Ray cluster: HOST:PORT of its head (what `ray start "
                            f"--head` prints), ray://HOST:PORT, or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_S) as sock:
            if os.environ.get("RAY_USE_TLS", "").lower() in ("1", "true"):
                return
            sock.sendall(_H2_PREFACE)
            answer = _recv_exact(sock, 9)
    except socket.gaierror as e:
        raise SigmatchError(f"{where}: unknown host {host} ({e.strerror})") from None
    except (socket.timeout, TimeoutError):
        raise SigmatchError(f"{where}: no answer within {CONNECT_S:.0f} s") from None
    except ConnectionRefusedError:
        raise SigmatchError(f"{where}: connection refused (no Ray cluster listens there)") from None
    except OSError as e:
        raise SigmatchError(f"{where}: cannot connect: {e.strerror or e}") from None
    if answer is None or answer[3] != _H2_SETTINGS:
        raise SigmatchError(f"{where}: something answers there, but not a Ray cluster (not gRPC; the head's "
                            f"address is the one `ray start --head` prints, 6379 by default)")


def _stderr_said(path: str) -> str:
    """The last line Ray's own code wrote to the file that was standard error, less its
    time and source prefix ("" when none)."""
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    if not lines:
        return ""
    last = lines[-1]
    return last.split("] ", 1)[-1].split(": ", 1)[-1] if last.startswith("[") else last


def _connect(address: Optional[str], workers: int):
    """Ray, connected to the cluster at `address` (or RAY_ADDRESS), or to a local one started
    here with a CPU for each worker. Returns (ray, whether this call started it). Raises
    SigmatchError when Ray is not installed or the cluster cannot be reached; KeyboardInterrupt
    after stopping what it started, when interrupted."""
    try:
        import ray
    except ImportError:
        raise SigmatchError(f"--ray needs Ray, an optional extra: {RAY_EXTRA}") from None
    if ray.is_initialized():
        return ray, False
    where = f"--ray {address}" if address else f"RAY_ADDRESS {os.environ.get('RAY_ADDRESS')}"
    address = address or os.environ.get("RAY_ADDRESS") or None
    # a local cluster of this run's: no dashboard, no usage report, no actor logs on our stderr
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    options = dict(log_to_driver=False, logging_level=logging.ERROR)
    if address:
        _check_address(address, where)
        # Ray's core writes each retry of a connection that fails to file descriptor 2
        # itself: kept apart, and its last line is the reason given
        import tempfile
        with tempfile.NamedTemporaryFile("w+b", prefix="sigmatch-ray-") as said:
            saved = os.dup(2)
            try:
                sys.stderr.flush()
                os.dup2(said.fileno(), 2)
                ray.init(address=address, **options)
            except Exception as e:
                os.dup2(saved, 2)
                raise SigmatchError(f"{where}: cannot connect to the Ray cluster: {_first_line(e)}"
                                    f"{_auth_hint(_stderr_said(said.name))}") from None
            except BaseException:
                os.dup2(saved, 2)
                if ray.is_initialized():
                    ray.shutdown()
                raise
            finally:
                os.dup2(saved, 2)
                os.close(saved)
        return ray, True
    # Ctrl-C in the middle of ray.init would leave the processes it started so far behind (the
    # raylet's agents live on for a minute or more): it is only noted until Ray is up, and
    # answered after, once Ray is stopped again
    interrupted: list = []
    deferred = (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if deferred:
        signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
        # "local": a cluster of its own even when another runs on this host (`ray start`),
        # which Ray would otherwise join, refusing num_cpus
        ray.init(address="local", num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False, **options)
    except Exception as e:
        ray.shutdown()      # whatever it started
        raise SigmatchError(f"cannot start a local Ray cluster: {_first_line(e)}") from None
    finally:
        if deferred:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if interrupted:
        ray.shutdown()
        raise KeyboardInterrupt
    return ray, True


def _auth_hint(said: str) -> str:
    """What to do about the reason Ray's core gave, when it is a missing token."""
    if "token" not in said.lower():
        return f" ({said})" if said else ""
    return (f" ({said}; a cluster with token authentication needs RAY_AUTH_MODE=token here, and its token in "
            f"RAY_AUTH_TOKEN or ~/.ray/auth_token)")


def replay(config_path, traces: Sequence, out, *, workers: int, address: Optional[str] = None,
           format: Optional[str] = None, progress: Optional[bool] = None,
           ready: Optional[Callable[[], None]] = None) -> dict:
    """`replay --ray [ADDRESS] --workers N`: engine.workers.replay's shards as Ray actors on
    the cluster at `address` (None: RAY_ADDRESS, or a local cluster started for this run and
    stopped after it), each using one CPU, merged here into `out`. The output is byte for
    byte that of one process. Returns the stats written to stats.json. `ready()`, when
    given, is called once the workers are placed, before anything is written (the command
    removes an earlier run's output there, kept when the cluster cannot be reached).
    Raises ValueError for workers outside 2..MAX_WORKERS, SigmatchError when Ray is missing,
    the cluster is unreachable or has fewer CPUs than workers, and otherwise what
    engine.workers.replay raises (LoadError, WorkerError, StreamError)."""
    if not 2 <= workers <= MAX_WORKERS:
        raise ValueError(f"--ray needs --workers between 2 and {MAX_WORKERS}, not {workers}")
    config_path = Path(config_path).resolve()
    config = load_config(config_path)
    # Ray's core puts its own handler on SIGTERM (a crash dump, and an abort: exit -6, the
    # files left open, helper-130); the command's own, which stops as Ctrl-C does (the files
    # completed, the actors and a local cluster stopped), is put back
    on_sigterm = signal.getsignal(signal.SIGTERM)
    ray, started = _connect(address, workers)
    if callable(on_sigterm) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)
    actors = None
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < workers:
            raise SigmatchError(f"the Ray cluster has {cpus} CPUs, fewer than --workers {workers} "
                                f"(each worker takes one)")
        sinks = _sinks(config, out, format)
        actors = _Actors(ray, config, config_path, traces, workers, started)
        if ready is not None:
            ready()
    except BaseException:
        if actors is not None:
            actors.close()
        elif started:
            ray.shutdown()
        raise
    return _coordinate(config, traces, out, sinks, actors, progress=progress,
                       label=f"replay ({workers} workers on Ray)")
