"""`sigmatch replay --ray --workers N` (engine.workers.cluster, issue 14 part 4): the shards
run as Ray actors on a local Ray cluster (2 CPUs, no dashboard, usage stats off), each with
its own copy of the shared block kept in step by the relay, and the output directory is one
process's byte for byte: on a `sigmatch gen` world whose budgets and max_pending run out
mid-run, with the smallest ring of pending counts, on random worlds, and on a stream that
breaks half-way. A worker whose actor dies fails the run with one line; a cluster with too
few CPUs and a missing Ray are refused in one line.

The relay's wire format is checked here too: a lane that is too long, a ring out of order
and a connection without the run's token are refused, never imported."""
from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import sys
import threading
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from engine import workers as sharded
from engine.errors import LoadError, SigmatchError, StreamError
from engine.workers import WorkerError
from engine.workers import cluster
from tests.test_workers import (assert_same_outcome, cut_into_files, event_boundary_past, one_process,  # noqa: F401
                                outcome, squeezed, tight, uncompilable)
from tests.worlds import worlds, write_world

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for this module: engine.workers.cluster finds Ray
    started and uses it (and leaves it running)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             object_store_memory=128 << 20)
    yield ray
    ray.shutdown()


def on_ray(config, traces, out, workers=2, fmt=None):
    """What `replay --ray --workers N` does: the StreamError it raises, or None."""
    try:
        cluster.replay(config, list(traces), out, workers=workers, format=fmt)
    except StreamError as e:
        return e
    return None


# ---- the same files ----------------------------------------------------------------------

def test_shared_limits_running_out_mid_run(ray_cluster, tight, tmp_path):
    """Budgets of a campaign and a channel and max_pending running out mid-run, decided by
    two workers that see each other's lanes only through the relay."""
    config, traces = tight
    assert one_process(config, traces, tmp_path / "one") is None
    expected = outcome(tmp_path / "one")
    assert on_ray(config, traces, tmp_path / "ray") is None
    assert_same_outcome(outcome(tmp_path / "ray"), expected, "2 workers on Ray")


def test_a_ring_of_sixteen_positions(ray_cluster, tight, tmp_path, monkeypatch):
    """The coordinator's ring goes to the actors: with 16 positions the ring part of a lane
    laps between two sends, and max_pending reads counts about to be reused."""
    config, traces = tight
    assert one_process(config, traces, tmp_path / "one") is None
    monkeypatch.setattr(sharded, "RING_BITS", 4)
    assert on_ray(config, traces, tmp_path / "ray") is None
    assert_same_outcome(outcome(tmp_path / "ray"), outcome(tmp_path / "one"), "2 workers on Ray, ring of 16")


@settings(max_examples=6, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data(), w=worlds())
def test_random_worlds(ray_cluster, data, w, tmp_path_factory):
    w = data.draw(squeezed(w))
    directory = tmp_path_factory.mktemp("ray")
    config, trace = write_world(w, directory / "world")
    traces = cut_into_files(w.trace, data.draw(st.lists(st.integers(0, len(w.trace)), max_size=2)), directory)
    error = one_process(config, traces, directory / "one")
    got = on_ray(config, traces, directory / "ray")
    assert str(got) == str(error)
    assert_same_outcome(outcome(directory / "ray"), outcome(directory / "one"), "2 workers on Ray")


def test_a_stream_that_breaks_half_way(ray_cluster, tight, tmp_path):
    config, traces = tight
    data = b"".join(p.read_bytes() for p in traces)
    at = event_boundary_past(data, len(data) // 2)
    copies = cut_into_files(data[:at] + b"\xc1" + data[at:], [at - 5], tmp_path / "traces")
    error = one_process(config, copies, tmp_path / "one")
    assert isinstance(error, StreamError)
    got = on_ray(config, copies, tmp_path / "ray")
    assert isinstance(got, StreamError) and str(got) == str(error)
    assert_same_outcome(outcome(tmp_path / "ray"), outcome(tmp_path / "one"), "2 workers on Ray")


def test_a_stream_that_breaks_in_a_trace_named_relative(ray_cluster, tight, tmp_path, monkeypatch):
    """The actors read the traces by absolute path; the error names the file as it was given,
    as one process's does."""
    config, traces = tight
    data = b"".join(p.read_bytes() for p in traces)
    monkeypatch.chdir(tmp_path)
    Path("t.msgpack").write_bytes(data[:len(data) // 2] + b"\xc1")
    error = one_process(config, [Path("t.msgpack")], tmp_path / "one")
    got = on_ray(config, [Path("t.msgpack")], tmp_path / "ray")
    assert isinstance(got, StreamError) and str(got) == str(error) and " in t.msgpack at " in str(got)
    assert_same_outcome(outcome(tmp_path / "ray"), outcome(tmp_path / "one"), "2 workers on Ray")


def test_a_trace_that_cannot_be_read_named_relative(ray_cluster, tight, tmp_path, monkeypatch):
    """A .gz trace cut short, after two good ones: what one process writes (the actions made
    before it, undrained, and stats.json) and its error, naming the file as it was given."""
    import gzip
    config, traces = tight
    monkeypatch.chdir(tmp_path)
    packed = gzip.compress(traces[2].read_bytes())
    Path("t.msgpack.gz").write_bytes(packed[:len(packed) // 2])
    given = [*traces[:2], Path("t.msgpack.gz")]
    with pytest.raises(LoadError) as one:
        one_process(config, given, tmp_path / "one")
    with pytest.raises(LoadError) as got:
        cluster.replay(config, given, tmp_path / "ray", workers=2)
    assert str(got.value) == str(one.value) and str(got.value).startswith("t.msgpack.gz: cannot read trace")
    expected = outcome(tmp_path / "one")
    assert expected["stats.json"][1]["run"]["events"] > 0
    assert_same_outcome(outcome(tmp_path / "ray"), expected, "2 workers on Ray")


def test_the_command(ray_cluster, tight, tmp_path):
    """`sigmatch replay --ray --workers 2` prints what one process prints (but the rate), and
    `--ray` alone is refused in one line."""
    from engine.cli import main
    config, traces = tight
    runner = CliRunner()
    one = runner.invoke(main, ["replay", str(config), *map(str, traces), "--out", str(tmp_path / "one")])
    two = runner.invoke(main, ["replay", str(config), *map(str, traces), "--out", str(tmp_path / "ray"),
                               "--ray", "--workers", "2"])
    assert one.exit_code == 0 and two.exit_code == 0, two.output
    assert one.output.splitlines()[1:-1] == two.output.splitlines()[1:-1]
    alone = runner.invoke(main, ["replay", str(config), *map(str, traces), "--out", str(tmp_path / "x"), "--ray"])
    assert alone.exit_code == 2 and "--ray needs --workers 2 or more" in alone.output


# ---- what fails -------------------------------------------------------------------------

def test_more_workers_than_the_cluster_has_cpus(ray_cluster, tight, tmp_path):
    config, traces = tight
    with pytest.raises(SigmatchError, match=r"the Ray cluster has 2 CPUs, fewer than --workers 3"):
        cluster.replay(config, traces, tmp_path / "out", workers=3)
    assert not (tmp_path / "out" / "stats.json").exists()


def test_a_cluster_whose_cpus_are_taken(ray_cluster, tight, tmp_path, monkeypatch):
    """Another job holds one of the 2 CPUs: the workers cannot all start, and the command
    says so in one line rather than wait without a word."""
    config, traces = tight

    @ray.remote(num_cpus=1)
    class Holder:
        def ready(self):
            return True
    holder = Holder.remote()
    ray.get(holder.ready.remote())
    monkeypatch.setattr(cluster, "PLACE_S", 3.0)
    try:
        with pytest.raises(SigmatchError, match=r"^the Ray cluster did not start the 2 workers within 3 s"):
            cluster.replay(config, traces, tmp_path / "out", workers=2)
    finally:
        ray.kill(holder)
        monkeypatch.undo()
    assert not (tmp_path / "out" / "stats.json").exists()
    # the CPUs are free again: the actors of the refused run were ended
    assert on_ray(config, traces, tmp_path / "after") is None


def test_an_actor_that_dies(ray_cluster, tight, tmp_path, monkeypatch):
    """Worker 1's actor killed as the run starts: one line naming it, no stats.json, and
    worker 0 (waiting for lanes that will not come) stopped."""
    config, traces = tight
    messages = cluster._Actors.messages

    def killing(self):
        ray.kill(self.actors[1])
        yield from messages(self)
    monkeypatch.setattr(cluster._Actors, "messages", killing)
    with pytest.raises(WorkerError, match=r"^worker 1 of 2 stopped without a word \(its actor died: .*\); "
                                          r"the output in .* is incomplete \(no stats.json\)$"):
        cluster.replay(config, traces, tmp_path / "out", workers=2)
    assert not (tmp_path / "out" / "stats.json").exists()


def test_a_configuration_that_does_not_compile(ray_cluster, tmp_path):
    """An error found by the actors as they compile: one process's line, no output."""
    config, trace = uncompilable(tmp_path)
    with pytest.raises(Exception) as one:
        one_process(config, [trace], tmp_path / "one")
    with pytest.raises(Exception) as two:
        cluster.replay(config, [trace], tmp_path / "two", workers=2)
    assert str(two.value) == str(one.value)
    assert not (tmp_path / "two" / "stats.json").exists()


def _listener(answer: Optional[bytes]):
    """A port where something listens and answers `answer` to whatever comes (None: a port
    where nothing listens)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    if answer is None:
        server.close()
        return port

    def serve():
        with server:
            sock, _ = server.accept()
            with sock:
                try:
                    sock.recv(64)
                    sock.sendall(answer)
                    sock.recv(64)
                except OSError:
                    pass        # the client has gone
    threading.Thread(target=serve, daemon=True).start()
    return port


@pytest.mark.parametrize("address, why", [
    ("notanaddress", r"^--ray notanaddress: not the address of a Ray cluster: HOST:PORT of its head"),
    ("http://127.0.0.1:8265", r"not the address of a Ray cluster"),
    ("127.0.0.1:99999", r"not the address of a Ray cluster"),
    (None, r"^--ray 127\.0\.0\.1:\d+: connection refused \(no Ray cluster listens there\)$"),
    (b"HTTP/1.0 400 Bad Request\r\n\r\n", r"something answers there, but not a Ray cluster \(not gRPC"),
])
def test_an_address_where_no_cluster_answers(address, why):
    """Ray would retry each of these for minutes, writing to stderr: refused at once, in one
    line naming the option."""
    if not isinstance(address, str):
        address = f"127.0.0.1:{_listener(address)}"
    with pytest.raises(SigmatchError, match=why):
        cluster._check_address(address, f"--ray {address}")


def test_an_address_where_grpc_answers():
    settings_frame = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    cluster._check_address(f"127.0.0.1:{_listener(settings_frame)}", "--ray")
    cluster._check_address(f"ray://127.0.0.1:{_listener(settings_frame)}", "--ray")


class _FakeRay:
    """What _connect uses of Ray, recording its calls."""

    def __init__(self, on_init=None):
        self.calls, self.on_init = [], on_init

    def is_initialized(self):
        return False

    def init(self, **options):
        self.calls.append(("init", options.get("address")))
        if self.on_init:
            self.on_init()

    def shutdown(self):
        self.calls.append(("shutdown", None))


def test_the_address_is_checked_before_ray_is_asked(monkeypatch):
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{_listener(None)}")
    with pytest.raises(SigmatchError, match=r"^RAY_ADDRESS 127\.0\.0\.1:\d+: connection refused"):
        cluster._connect(None, 2)
    assert fake.calls == []


def test_overwrite_keeps_the_earlier_output_when_no_cluster_answers(monkeypatch, tight, tmp_path):
    """`--overwrite` removes the earlier run's output only once the cluster is reached."""
    from engine.cli import main
    config, traces = tight
    assert one_process(config, traces, tmp_path / "out") is None
    earlier = outcome(tmp_path / "out")
    monkeypatch.setitem(sys.modules, "ray", _FakeRay())
    address = f"127.0.0.1:{_listener(None)}"
    got = CliRunner().invoke(main, ["replay", str(config), *map(str, traces), "--out", str(tmp_path / "out"),
                                    "--overwrite", "--workers", "2", "--ray", address])
    assert got.exit_code == 1 and f"--ray {address}: connection refused" in got.output
    assert outcome(tmp_path / "out") == earlier


def test_ctrl_c_while_the_local_cluster_starts(monkeypatch):
    """Ray interrupted half-way would leave what it started behind: the interrupt waits for
    ray.init, Ray is stopped, then it is raised."""
    fake = _FakeRay(on_init=lambda: os.kill(os.getpid(), signal.SIGINT))
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(KeyboardInterrupt):
        cluster._connect(None, 2)
    assert fake.calls == [("init", "local"), ("shutdown", None)]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_commands_sigterm_handler_is_put_back_after_ray_starts(monkeypatch, tight, tmp_path):
    """Ray's core takes SIGTERM for its crash dump and an abort (exit -6, files left open,
    helper-130): the handler the command had, which stops as Ctrl-C does, is put back."""
    config, traces = tight

    class Started(Exception):
        pass

    def rays_own(*_):
        raise AssertionError("Ray's handler")

    def commands(*_):
        pass

    fake = _FakeRay(on_init=lambda: signal.signal(signal.SIGTERM, rays_own))
    fake.cluster_resources = lambda: (_ for _ in ()).throw(Started())
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    before = signal.signal(signal.SIGTERM, commands)
    try:
        with pytest.raises(Started):
            cluster.replay(config, traces, tmp_path / "out", workers=2)
        assert signal.getsignal(signal.SIGTERM) is commands
        assert fake.calls == [("init", "local"), ("shutdown", None)]
    finally:
        signal.signal(signal.SIGTERM, before)


def test_without_ray(monkeypatch, tight, tmp_path):
    config, traces = tight
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(SigmatchError, match=r"^--ray needs Ray, an optional extra: pip install 'sigmatch\[ray\]'$"):
        cluster.replay(config, traces, tmp_path / "out", workers=2)


# ---- the relay's wire --------------------------------------------------------------------

@given(st.lists(st.integers(0, 7), max_size=200))
def test_the_ring_coding_round_trips(values):
    ring = np.array(values, np.uint64)
    assert np.array_equal(cluster._decode_ring(cluster._encode_ring(ring)), ring)


class _Recorder:
    """A core that records what the relay imports."""

    def __init__(self):
        self.imported, self.aborted = [], False

    def shard_import(self, *args):
        self.imported.append(args)

    def shard_abort(self):
        self.aborted = True


def _wait_until(condition, seconds: float = 10.0) -> None:
    """Poll `condition` until it holds or `seconds` pass (the relay's threads work apart)."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        threading.Event().wait(0.05)


def _relay_pair(counts_bytes=8):
    relay = cluster._Relay(0, 2, b"t" * 32, counts_bytes, 16, True)
    port = relay.listen("127.0.0.1")
    core = _Recorder()
    relay.core = core
    t = threading.Thread(target=relay._accept, daemon=True)
    t.start()
    return relay, core, port, t


def _lane(counts=b"\0" * 8, lo=0, ring_n=0, starts=(), values=(), pos=5):
    body = (cluster._LANE.pack(pos, 7, 0, 1, 2, lo, ring_n, len(starts)) + counts
            + np.array(starts, np.uint64).tobytes() + np.array(values, np.uint64).tobytes())
    return struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("bad, why", [
    (struct.pack("<I", 1 << 30), "a lane of 1073741824 bytes"),
    (_lane(ring_n=17, starts=[0], values=[1]), "a ring part of 17 events in 1 runs"),
    (_lane(ring_n=4, starts=[0, 3, 2], values=[1, 2, 3]), "a ring part out of order"),
    (_lane(ring_n=4, starts=[1], values=[1]), "a ring part out of order"),
])
def test_a_bad_lane_is_refused(bad, why):
    relay, core, port, t = _relay_pair()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"t" * 32 + struct.pack("<H", 1) + _lane(ring_n=2, starts=[0], values=[3]) + bad)
        t.join(timeout=10)
        for _ in range(100):
            if core.aborted:
                break
            threading.Event().wait(0.05)
    assert core.aborted and why in relay.failed[0]
    assert len(core.imported) == 1 and list(core.imported[0][-1]) == [3, 3]
    relay.close()


def test_a_stranger_is_not_heard():
    """A connection without the run's token, or naming no other worker, is closed unread."""
    relay, core, port, t = _relay_pair()
    for hello in (b"x" * 32 + struct.pack("<H", 1), b"t" * 32 + struct.pack("<H", 0),
                  b"t" * 32 + struct.pack("<H", 9)):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(hello + _lane())
            try:
                closed = sock.recv(1) == b""
            except ConnectionResetError:        # closed with the lane unread
                closed = True
            assert closed
    assert core.imported == [] and not core.aborted
    relay.close()


def test_a_silent_stranger_holds_up_no_one():
    """A connection that says nothing, made before the other worker's: the worker's lanes
    are imported all the same, at once, not once the stranger leaves."""
    relay, core, port, t = _relay_pair()
    with socket.create_connection(("127.0.0.1", port)) as silent:
        with socket.create_connection(("127.0.0.1", port)) as peer:
            peer.sendall(b"t" * 32 + struct.pack("<H", 1) + _lane())
            _wait_until(lambda: core.imported)
            assert len(core.imported) == 1 and not core.aborted
            # every worker is in: the listener is closed, and the stranger with it
            assert silent.recv(1) == b""
    relay.close()


def test_a_worker_that_finished_first_still_takes_the_others():
    """A worker may finish (and close its relay) before another has connected to it: that
    one is not refused (its run failed with 'the lanes to the other workers broke off')."""
    relay, core, port, t = _relay_pair()
    relay.close()
    with socket.create_connection(("127.0.0.1", port)) as peer:
        peer.sendall(b"t" * 32 + struct.pack("<H", 1) + _lane())
        _wait_until(lambda: core.imported)
    assert len(core.imported) == 1 and not core.aborted


def test_a_worker_gone_silent_fails_the_run(monkeypatch):
    """A link cut between two hosts that both still answer Ray brings nothing more: the
    worker on the other end fails the run after SILENT_S, rather than wait for ever (a
    worker's lane comes at least every HEARTBEAT_S, changed or not)."""
    monkeypatch.setattr(cluster, "SILENT_S", 0.5)
    relay, core, port, t = _relay_pair()
    with socket.create_connection(("127.0.0.1", port)) as peer:
        peer.sendall(b"t" * 32 + struct.pack("<H", 1) + _lane())
        _wait_until(lambda: core.aborted)
        assert len(core.imported) == 1
        assert relay.failed == ["the lanes from worker 1 broke off: nothing came for 0.5 s"]
    relay.close()


def test_an_unchanged_lane_is_sent_again(monkeypatch):
    """A waiting worker's lane does not change: it goes out again every HEARTBEAT_S, so that
    the others can tell it from a link cut."""
    monkeypatch.setattr(cluster, "HEARTBEAT_S", 0.1)
    monkeypatch.setattr(cluster, "RELAY_PERIOD_S", 0.01)
    receiver, core, port, t = _relay_pair()

    class Still(_Recorder):
        def shard_export(self, ring_from):
            return (5, 7, 0), 1, 2, b"\0" * 8, 0, np.zeros(0, np.uint64)

    sender = cluster._Relay(1, 2, b"t" * 32, 8, 16, True)
    sender.core = Still()
    sender.peers = [("127.0.0.1", port), ("127.0.0.1", 0)]
    sender.peers_known.set()
    thread = threading.Thread(target=sender._send, daemon=True)
    thread.start()
    _wait_until(lambda: len(core.imported) >= 3)
    assert len(core.imported) >= 3 and not core.aborted and not sender.failed
    sender.done.set()
    thread.join(timeout=10)
    receiver.close()
