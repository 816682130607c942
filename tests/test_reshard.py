"""`sigmatch reshard` (engine.service.reshard): a stopped service's state rewritten for another
number of workers goes on exactly as the service would have: the records after it are one
engine's records byte for byte, whatever the numbers of workers before and after, on random
worlds cut at a random piece (timers pending across the cut, contacts, kept contact times,
budgets and max_pending that bind). The rewrite is in place and survives a crash at any
step; a state of workers serves `sigmatch diff --state` as one engine's.

The daemon started after a reshard is in test_reshard_service below."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from engine.api import Engine
from engine.errors import CheckpointError, SigmatchError
from engine.service import reshard as reshard_module
from engine.service.checkpoint import CheckpointSet, CheckpointStore, engine_for, read_header
from engine.service.reshard import RESHARD_DIR, merge_parts, reshard, state_as_one
from engine.sinks import make_private_directories
from engine.workers.inprocess import ShardedEngine
from tests.test_workers import squeezed
from tests.test_workers_service import assert_same, pieces_of, tight  # noqa: F401  (a fixture)
from tests.worlds import worlds, write_world

ROOT = Path(__file__).resolve().parent.parent


def build(config, workers: int):
    return ShardedEngine.build(config, workers) if workers > 1 else Engine.from_config(config)


def save(engine, state: Path, workers: int, extra: dict) -> None:
    make_private_directories(state)     # as the service makes it
    if workers > 1:
        CheckpointSet(state, workers).save(engine.shards, extra)
    else:
        CheckpointStore(state).save(engine, extra)


def restore(config, state: Path, workers: int):
    """The engine a service with `workers` starts from `state` with, and the extra it reads."""
    if workers > 1:
        loaded = CheckpointSet(state, workers).load()
        engine, dropped = ShardedEngine.restored(config, loaded)
    else:
        loaded = CheckpointStore(state).load()
        engine, dropped = engine_for(config, loaded)
    assert dropped is None
    return engine, loaded.extra


def feed(engine, pieces, taken, statuses, *, advances=()):
    core = engine._core
    for i, piece in pieces:
        statuses.append(core.feed(piece))
        if i in advances and core.clock is not None:
            core.advance(core.clock + 3_600_000)
        taken["actions"].append(core.take_actions())
        taken["conversions"].append(core.take_conversions())
        taken["dead"].append(core.take_dead_letters())


def run_with_reshards(config, pieces, plan, state: Path, *, advances=()):
    """Feed `pieces`; `plan` is [(workers, first piece)...]: the engine of the first entry
    from the start, and at each later entry's piece a checkpoint, a reshard and a restore
    with its workers. Returns what feed_all of tests/test_workers_service returns."""
    taken = {"actions": [], "conversions": [], "dead": []}
    statuses: list[int] = []
    workers = plan[0][0]
    engine = build(config, workers)
    engine._core.begin_stream()
    edges = [at for _, at in plan[1:]] + [len(pieces)]
    start = 0
    for k, end in enumerate(edges):
        feed(engine, [(i, pieces[i]) for i in range(start, end)], taken, statuses, advances=advances)
        if statuses and statuses[-1]:
            break
        if k + 1 < len(plan):
            save(engine, state, workers, {"piece": end})
            if workers > 1:
                engine.close()
            workers = plan[k + 1][0]
            reshard(state, workers)
            engine, extra = restore(config, state, workers)
            assert extra["piece"] == end and (workers > 1) == ("commit" in extra)
            assert not (state / RESHARD_DIR).exists()
        start = end
    return {k: np.concatenate(v) for k, v in taken.items()}, statuses, engine


@settings(max_examples=max(30, settings().max_examples // 4), deadline=None,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data(), w=worlds())
def test_a_resharded_state_goes_on_as_one_engine(data, w, tmp_path_factory):
    w = data.draw(squeezed(w))
    directory = tmp_path_factory.mktemp("world")
    config, _ = write_world(w, directory)
    pieces = pieces_of(w.trace, data.draw(st.lists(st.integers(0, len(w.trace)), min_size=1, max_size=6)))
    advances = set(data.draw(st.lists(st.integers(0, len(pieces) - 1), max_size=2)))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(pieces)), min_size=1, max_size=2)))
    counts = data.draw(st.lists(st.sampled_from([1, 2, 3]), min_size=len(cuts) + 1, max_size=len(cuts) + 1)
                       .filter(lambda c: all(a != b for a, b in zip(c, c[1:]))))
    plan = [(counts[0], 0)] + list(zip(counts[1:], cuts))
    one = build(config, 1)
    one._core.begin_stream()
    taken = {"actions": [], "conversions": [], "dead": []}
    statuses: list[int] = []
    feed(one, list(enumerate(pieces)), taken, statuses, advances=advances)
    expected = ({k: np.concatenate(v) for k, v in taken.items()}, statuses, one)
    got = run_with_reshards(config, pieces, plan, directory / "state", advances=advances)
    assert_same(got, expected, f"workers {plan}")


@pytest.mark.parametrize("plan", [[(1, 0), (3, 9)], [(2, 0), (1, 9)], [(3, 0), (2, 5), (4, 17)]],
                         ids=["1-to-3", "2-to-1", "3-to-2-to-4"])
def test_budgets_and_max_pending_binding_across_a_reshard(tight, plan, tmp_path):  # noqa: F811
    """The `sigmatch gen` world whose budgets and max_pending run out: the sends counted
    against budgets and the pending actions go over to the new workers."""
    config, data = tight
    pieces = pieces_of(data, np.random.default_rng(5).integers(0, len(data), 24).tolist())
    one = build(config, 1)
    one._core.begin_stream()
    taken = {"actions": [], "conversions": [], "dead": []}
    statuses: list[int] = []
    feed(one, list(enumerate(pieces)), taken, statuses, advances={4, 12})
    expected = ({k: np.concatenate(v) for k, v in taken.items()}, statuses, one)
    got = run_with_reshards(config, pieces, plan, tmp_path / "state", advances={4, 12})
    assert_same(got, expected, f"workers {plan}")
    assert expected[2]._core.budgets_used() == got[2]._core.budgets_used()


def test_a_state_of_workers_is_one_engines_for_a_what_if(tight, tmp_path):  # noqa: F811
    """state_as_one (what `sigmatch diff --state` reads): the workers' states put together
    restore an engine that goes on as the engine that was never split."""
    config, data = tight
    pieces = pieces_of(data, np.random.default_rng(8).integers(0, len(data), 10).tolist())
    many, one = build(config, 3), build(config, 1)
    for engine in (many, one):
        engine._core.begin_stream()
        feed(engine, list(enumerate(pieces[:6])), {"actions": [], "conversions": [], "dead": []}, [])
    save(many, tmp_path / "state", 3, {"piece": 6})
    merged, _ = engine_for(config, state_as_one(tmp_path / "state"))
    for engine in (merged, one):
        taken = {"actions": [], "conversions": [], "dead": []}
        feed(engine, list(enumerate(pieces[6:])), taken, [])
        engine.rest = {k: np.concatenate(v) for k, v in taken.items()}
    assert_same((merged.rest, [], merged), (one.rest, [], one), "merged")
    assert len(one.rest["actions"]) and len(one.rest["conversions"])


# --------------------------------------------------------------------------- in place, crashes

@pytest.fixture
def stopped(tight, tmp_path):  # noqa: F811
    """A state of 2 workers after half the trace, and the records one engine gives after it."""
    config, data = tight
    pieces = pieces_of(data, np.random.default_rng(2).integers(0, len(data), 8).tolist())
    engine = build(config, 2)
    engine._core.begin_stream()
    feed(engine, list(enumerate(pieces[:4])), {"actions": [], "conversions": [], "dead": []}, [])
    state = tmp_path / "state"
    save(engine, state, 2, {"piece": 4})
    engine.close()
    one = build(config, 1)
    one._core.begin_stream()
    feed(one, list(enumerate(pieces[:4])), {"actions": [], "conversions": [], "dead": []}, [])
    taken = {"actions": [], "conversions": [], "dead": []}
    feed(one, list(enumerate(pieces[4:])), taken, [])
    return config, state, pieces[4:], {k: np.concatenate(v) for k, v in taken.items()}


def goes_on_exactly(config, state, rest, expected, workers):
    engine, _ = restore(config, state, workers)
    taken = {"actions": [], "conversions": [], "dead": []}
    feed(engine, list(enumerate(rest)), taken, [])
    for name, array in expected.items():
        assert np.concatenate(taken[name]).tobytes() == array.tobytes(), name


def killed_at(state: Path, workers: int, what: str, after: int) -> bool:
    """Run reshard(state, workers) in a child killed (os._exit, as by kill -9: no clean-up)
    at its call number `after` of `what` ("replace": os.replace, "rmtree": shutil.rmtree);
    whether the kill came before the end."""
    pid = os.fork()
    if pid == 0:        # pragma: no cover (the child)
        try:
            calls = [0]
            real = os.replace if what == "replace" else shutil.rmtree

            def dying(*args, **kwargs):
                if calls[0] == after:
                    os._exit(9)
                calls[0] += 1
                return real(*args, **kwargs)
            if what == "replace":
                reshard_module.os.replace = dying
                import engine.service.checkpoint as checkpoint_module
                checkpoint_module.os.replace = dying
            else:
                reshard_module.shutil.rmtree = dying
            reshard(state, workers)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) in (0, 9), status
    return os.WEXITSTATUS(status) == 9


@pytest.mark.parametrize("what,after", [("replace", k) for k in range(10)] + [("rmtree", k) for k in range(4)])
def test_a_reshard_killed_at_any_step_is_finished_or_undone_by_the_next(stopped, what, after):
    """Killed after any number of renames (writing the new state's bases, its READY, moving
    the old layout out and the new one in) or of removals (the clean-up): the service and
    a what-if refuse the state in one line, and the next reshard leaves a state that goes
    on exactly."""
    config, state, rest, expected = stopped
    if killed_at(state, 3, what, after) and (state / RESHARD_DIR).exists():
        with pytest.raises(CheckpointError, match="sigmatch reshard"):
            state_as_one(state)
        reshard(state, 3)
    assert not (state / RESHARD_DIR).exists()
    assert CheckpointSet.workers_in(state) == 3 and not CheckpointStore(state).exists()
    goes_on_exactly(config, state, rest, expected, 3)


def test_the_daemon_refuses_a_state_whose_reshard_was_cut_short(stopped, tmp_path, monkeypatch):
    config, state, _, _ = stopped
    monkeypatch.setattr(reshard_module, "_finish", lambda directory: None)
    reshard(state, 1)
    monkeypatch.undo()
    (tmp_path / "spool").mkdir()
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(config), "--out", str(tmp_path / "out"),
                           "--state", str(state), "--spool", str(tmp_path / "spool")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "`sigmatch reshard --state" in proc.stderr and "--workers 1` to finish it" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    cli = subprocess.run([sys.executable, "-m", "engine.cli", "reshard", "--state", str(state), "--workers", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and "interrupted reshard to --workers 1 finished" in cli.stdout, cli.stderr
    assert CheckpointStore(state).exists() and CheckpointSet.workers_in(state) == 0


def test_reshard_refuses_what_it_cannot_rewrite(stopped, tight, tmp_path):  # noqa: F811
    """One line, naming the directory, and the state left as it was."""
    config, state, _, _ = stopped
    before = sorted((p.relative_to(state), p.stat().st_size) for p in state.rglob("*") if p.name != "lock")

    def refused(directory, workers, says):
        proc = subprocess.run([sys.executable, "-m", "engine.cli", "reshard", "--state", str(directory),
                               "--workers", str(workers)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and says in proc.stderr, proc.stderr
        # the error is one line, after what a load logs of the damage it found
        assert proc.stderr.strip().splitlines()[-1].startswith("sigmatch: error: ") and says in \
            proc.stderr.strip().splitlines()[-1] and "Traceback" not in proc.stderr, proc.stderr

    refused(tmp_path / "nowhere", 2, "no such directory")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", 2, "holds no checkpoint")
    assert not list((tmp_path / "empty").iterdir())     # not even a lock: that says a service started there
    # a running service holds the state's lock
    import fcntl
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"4242\n", 0)
    try:
        refused(state, 3, "in use by PID 4242 (a service, or another reshard")
    finally:
        os.close(fd)
    # the newest checkpoint of one worker damaged: the service recovers it first
    damaged = tmp_path / "damaged"
    engine = build(config, 2)
    engine._core.begin_stream()
    feed(engine, [(0, pieces_of(tight[1], [len(tight[1]) // 3])[0])], {"actions": [], "conversions": [], "dead": []}, [])
    store = CheckpointSet(damaged, 2, rebase_ratio=100.0)      # the second checkpoint a record
    store.save(engine.shards, {"piece": 1})
    engine._core.feed(tight[1][len(tight[1]) // 3:len(tight[1]) // 2])
    for take in (engine._core.take_actions, engine._core.take_conversions, engine._core.take_dead_letters):
        take()
    store.save(engine.shards, {"piece": 2})
    engine.close()
    newest = sorted((damaged / "shard-1").glob("log-*"))[-1]
    data = bytearray(newest.read_bytes())
    data[-10] ^= 0xFF
    newest.write_bytes(bytes(data))
    refused(damaged, 3, "start the service once with --workers 2, so that it recovers")
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "reshard", "--state", str(state), "--workers", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "already the state of a service with --workers 2" in proc.stdout
    assert sorted((p.relative_to(state), p.stat().st_size) for p in state.rglob("*") if p.name != "lock") == before


def test_a_commit_a_crash_left_in_one_worker_only_is_passed_over(tight, tmp_path, caplog):  # noqa: F811
    """Killed while a checkpoint was written: worker 0 holds commit 2, worker 1 only commit 1
    (nothing was renamed on account of commit 2). The reshard takes commit 1, as the service
    would, says so as the service does (helper-119: it said nothing), and what follows is
    one engine's."""
    config, data = tight
    pieces = pieces_of(data, np.random.default_rng(3).integers(0, len(data), 8).tolist())
    state = tmp_path / "state"
    engine = build(config, 2)
    engine._core.begin_stream()
    feed(engine, list(enumerate(pieces[:4])), {"actions": [], "conversions": [], "dead": []}, [])
    make_private_directories(state)
    store = CheckpointSet(state, 2, rebase_ratio=100.0)
    store.save(engine.shards, {"piece": 4})
    feed(engine, list(enumerate(pieces[4:6])), {"actions": [], "conversions": [], "dead": []}, [])
    prepared = store.prepare(engine.shards, {"piece": 6})
    prepared.parts[0].write()           # and the process dies before worker 1's part
    engine.close()
    assert CheckpointSet(state, 2).load().later_extras
    caplog.clear()
    caplog.set_level(logging.INFO, "sigmatch")
    reshard(state, 3)
    assert [r.getMessage() for r in caplog.records if r.name == "sigmatch.checkpoint"] == [
        f"{state}: commit 1 is the newest that every shard holds; 1 later one (up to 2) undone"]
    one = build(config, 1)
    one._core.begin_stream()
    feed(one, list(enumerate(pieces[:4])), {"actions": [], "conversions": [], "dead": []}, [])
    taken = {"actions": [], "conversions": [], "dead": []}
    feed(one, list(enumerate(pieces[4:])), taken, [])
    goes_on_exactly(config, state, pieces[4:], {k: np.concatenate(v) for k, v in taken.items()}, 3)
    assert restore(config, state, 3)[1]["piece"] == 4


def test_a_first_checkpoint_cut_short_is_removed_as_the_service_would(tight, tmp_path):  # noqa: F811
    """Killed inside its first checkpoint, a service of 2 workers left a base in one store
    only: no commit is complete, the service would start afresh. The reshard removes what
    was left, says so, and the state is empty for any number of workers."""
    config, data = tight
    state = tmp_path / "state"
    make_private_directories(state)
    engine = build(config, 2)
    engine._core.begin_stream()
    engine._core.feed(data[:len(data) // 4])
    for take in (engine._core.take_actions, engine._core.take_conversions, engine._core.take_dead_letters):
        take()
    CheckpointSet(state, 2).prepare(engine.shards, {"piece": 1}).parts[0].write()
    engine.close()
    assert CheckpointSet(state, 2).load() is None
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "reshard", "--state", str(state), "--workers", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "held only a first checkpoint that a crash cut short" in proc.stdout, proc.stderr
    assert CheckpointSet.workers_in(state) == 0 and not CheckpointStore(state).exists()
    assert CheckpointSet(state, 3).layout_error() is None


def test_a_worker_store_lost_after_a_reshard_from_one_engine_is_refused(stopped):
    """From one engine's state to 2 workers, then worker 1's store lost: the service must not
    take that for a first checkpoint cut short and start afresh."""
    config, state, _, _ = stopped
    reshard(state, 1)
    reshard(state, 2)
    shutil.rmtree(state / "shard-1")
    with pytest.raises(CheckpointError, match="this shard's state is missing"):
        CheckpointSet(state, 2).load()


def test_reshard_after_a_reload_keeps_gone_and_new_subscribers(tight, tmp_path):  # noqa: F811
    """A reload of a snapshot without some subscribers (kept, inactive) and with new ones
    (appended), then a reshard each way: the new workers hold them as the old ones did."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    config, data = tight
    world = tmp_path / "world"
    shutil.copytree(Path(config).parent, world)
    config = world / Path(config).name
    profiles = world / "profiles.parquet"
    pieces = pieces_of(data, np.random.default_rng(6).integers(0, len(data), 9).tolist())
    table = pq.read_table(profiles)
    newcomer = table.slice(0, 3).set_column(0, "msisdn", pa.array([19_999_999_001, 19_999_999_002, 19_999_999_003],
                                                                   type=table.schema.field("msisdn").type))
    results = []
    for plan in ([(1, 0), (1, 10)], [(1, 0), (3, 5), (2, 7)]):
        pq.write_table(table, profiles)
        taken = {"actions": [], "conversions": [], "dead": []}
        statuses: list[int] = []
        engine = build(config, 1)
        engine._core.begin_stream()
        feed(engine, list(enumerate(pieces[:3])), taken, statuses)
        pq.write_table(pa.concat_tables([table.slice(40), newcomer]), profiles)
        engine = engine.reload()
        state = tmp_path / f"state-{len(results)}"
        if plan[1][0] == 1:
            feed(engine, [(i, pieces[i]) for i in range(3, len(pieces))], taken, statuses)
        else:
            feed(engine, [(i, pieces[i]) for i in range(3, 5)], taken, statuses)
            save(engine, state, 1, {"piece": 5})
            reshard(state, 3)
            engine, _ = restore(config, state, 3)
            assert (np.sort(engine.subscribers) == np.sort(results[0][2].subscribers)).all()
            feed(engine, [(i, pieces[i]) for i in range(5, 7)], taken, statuses)
            save(engine, state, 3, {"piece": 7})
            engine.close()
            reshard(state, 2)
            engine, _ = restore(config, state, 2)
            feed(engine, [(i, pieces[i]) for i in range(7, len(pieces))], taken, statuses)
        results.append(({k: np.concatenate(v) for k, v in taken.items()}, statuses, engine))
    assert_same(results[1], results[0], "reload, then 3 and 2 workers")
    for msisdn in (int(table["msisdn"][0].as_py()), 19_999_999_002):
        one, many = results[0][2]._core.subscriber_view(msisdn), results[1][2]._core.subscriber_view(msisdn)
        one.pop("index"), many.pop("index")
        assert one == many and one["active"] == (msisdn == 19_999_999_002)


def test_odd_layouts_are_refused_and_nothing_is_lost(stopped, tmp_path):
    """A lock that is a link (root may run reshard in the service user's directory), a READY
    whose new state is not whole or not readable, both layouts at once, one worker's store
    given as a state: refused in one line, the state as it was."""
    config, state, rest, expected = stopped

    def listing(directory):
        return sorted((p.relative_to(directory), p.stat().st_size) for p in directory.rglob("*")
                      if p.name != "lock" and RESHARD_DIR not in p.parts)
    before = listing(state)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (state / "lock").unlink(missing_ok=True)
    (state / "lock").symlink_to(victim)
    with pytest.raises(SigmatchError, match="cannot lock it \\(lock: a symbolic link\\)"):
        reshard(state, 3)
    assert victim.read_text() == "precious\n"
    (state / "lock").unlink()
    for ready in ('{"from": 2, "to": 3, "commit": 4, "generation": 2}', "{bad"):
        (state / RESHARD_DIR).mkdir()
        (state / RESHARD_DIR / "READY").write_text(ready)
        with pytest.raises(CheckpointError, match="READY"):
            reshard(state, 3)
        assert listing(state) == before
        shutil.rmtree(state / RESHARD_DIR)
    for forged in ("[1, 2]", "null", '"text"'):
        (state / RESHARD_DIR).mkdir()
        (state / RESHARD_DIR / "READY").write_text(forged)
        with pytest.raises(CheckpointError, match="READY is not as a reshard writes it"):
            reshard(state, 3)
        assert "READY is not as a reshard writes it" in reshard_module.interrupted(state)
        shutil.rmtree(state / RESHARD_DIR)
    # a MOVED that names another number than the layout it would leave
    (state / RESHARD_DIR).mkdir()
    (state / RESHARD_DIR / "MOVED").write_text('{"from": 3, "to": 1, "commit": 4, "generation": 2}')
    with pytest.raises(CheckpointError, match="not whole after the move: the state before the reshard is in place"):
        reshard(state, 1)       # (no old/: "is in .reshard/old/" named a folder that was not there)
    assert listing(state) == before
    shutil.rmtree(state / RESHARD_DIR)
    # a .reshard without a marker that holds what no reshard writes: refused, not removed
    # (helper-119: it was taken for the partial state of an interrupted reshard and deleted)
    for entry in ("x", "new"):
        (state / RESHARD_DIR).mkdir()
        (state / RESHARD_DIR / entry).write_text("someone's\n")
        with pytest.raises(CheckpointError, match=f"is not a directory a reshard made \\(it holds "
                                                  f"{'x' if entry == 'x' else 'new, not a directory'}\\)"):
            reshard(state, 3)
        assert "is not a directory a reshard made" in reshard_module.interrupted(state)
        assert (state / RESHARD_DIR / entry).read_text() == "someone's\n"
        shutil.rmtree(state / RESHARD_DIR)
    assert listing(state) == before
    # .reshard that no reshard made
    for odd in ("file", "link"):
        if odd == "file":
            (state / RESHARD_DIR).write_text("x")
        else:
            (state / RESHARD_DIR).symlink_to(tmp_path)
        with pytest.raises(CheckpointError, match="is not a directory a reshard made"):
            reshard(state, 3)
        assert "is not a directory a reshard made" in reshard_module.interrupted(state)
        (state / RESHARD_DIR).unlink()
    assert listing(state) == before
    # the service's lock taken the same way: a link refused, its target untouched
    from engine.service.daemon import open_state_lock
    (state / "lock").unlink(missing_ok=True)
    (state / "lock").symlink_to(victim)
    with pytest.raises(SigmatchError, match="lock: a symbolic link"):
        open_state_lock(state)
    assert victim.read_text() == "precious\n"
    (state / "lock").unlink()
    # shard directories swapped by hand: each holds the other's subscribers
    swapped = tmp_path / "swapped"
    shutil.copytree(state, swapped)
    os.rename(swapped / "shard-0", swapped / "tmp")
    os.rename(swapped / "shard-1", swapped / "shard-0")
    os.rename(swapped / "tmp", swapped / "shard-1")
    with pytest.raises(CheckpointError, match="holds subscribers of another worker than worker 0 of 2"):
        CheckpointSet(swapped, 2).load()
    # one worker's store as if it were a service's state
    assert CheckpointSet(state / "shard-0", 3).layout_error() == CheckpointStore(state / "shard-0").layout_error()
    error = CheckpointStore(state / "shard-0").layout_error()
    assert error == (f"--state {state / 'shard-0'}: holds the checkpoints of one worker of a service with --workers 2 "
                     "(a shard-*/ directory): give the state directory above it")
    with pytest.raises(CheckpointError, match="one worker of a service"):
        state_as_one(state / "shard-0")
    # both layouts in one directory
    mixed = tmp_path / "mixed"
    shutil.copytree(state, mixed)
    reshard(mixed, 1)
    shutil.copytree(state / "shard-0", mixed / "shard-0")
    shutil.copytree(state / "shard-1", mixed / "shard-1")
    with pytest.raises(CheckpointError, match="holds both"):
        reshard(mixed, 2)
    assert "holds both" in CheckpointStore(mixed).layout_error()
    assert "holds both" in CheckpointSet(mixed, 2).layout_error()
    assert not (mixed / "lock").exists() or not (mixed / "shard-0" / "lock").exists()
    goes_on_exactly(config, state, rest, expected, 2)


@pytest.mark.skipif(os.geteuid() != 0, reason="root rewriting the state of a service of another user")
def test_root_gives_the_new_state_to_the_services_user(stopped):
    """The unit runs the service as its own user, and an operator stops it and reshards as
    root: the new files must stay readable by the service (0640, owner and group its)."""
    import tempfile
    config, stopped_state, rest, expected = stopped
    # outside pytest's own directory, which only root may enter
    home = Path(tempfile.mkdtemp(prefix="sigmatch-reshard-"))
    state = home / "state"
    shutil.copytree(stopped_state, state)
    for path in [home, state, *state.rglob("*")]:
        os.chown(path, 65534, 65534, follow_symlinks=False)
    # killed with its new state half written: the service's user can clear it and go on
    assert killed_at(state, 3, "replace", 1) and (state / RESHARD_DIR).exists()
    pid = os.fork()
    if pid == 0:        # pragma: no cover (the child, as the service's user)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            reshard(state, 2)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert not (state / RESHARD_DIR).exists()
    reshard(state, 3)
    assert (state / "lock").exists()
    try:
        for path in state.rglob("*"):
            assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534), path
        goes_on_exactly(config, state, rest, expected, 3)
    finally:
        shutil.rmtree(home)


def test_merge_refuses_workers_of_different_services(stopped, tmp_path):
    config, state, _, _ = stopped
    loaded = CheckpointSet(state, 2).load()
    other = CheckpointSet(state, 2).load()
    other.parts[1].header["scalars"]["seq"] += 1
    with pytest.raises(CheckpointError, match="its seq"):
        merge_parts([loaded.parts[0], other.parts[1]])
    assert isinstance(CheckpointError("x"), SigmatchError)


def test_the_new_state_is_private(stopped):
    config, state, _, _ = stopped
    reshard(state, 3)
    for path in state.rglob("*"):
        if path.is_file() and path.name != "lock":
            assert path.stat().st_mode & 0o777 == 0o640, path
        elif path.is_dir():
            assert path.stat().st_mode & 0o777 == 0o750, path
    newest = sorted((state / "shard-0").glob("base-*"))[-1]
    header = read_header(newest)
    assert header["workers"] == 3 and header["extra"]["piece"] == 4 and header["extra"]["commit"] >= 2


# --------------------------------------------------------------------------- timers due together

TIES_CONFIG = """
[engine]
utc_offset = "+08:00"
profiles   = "profiles.csv"

[event_types]
NOTICE = 40
REMINDER = 41

[[campaign]]
id      = "later"
on      = ["NOTICE"]
delay   = "2m"
channel = "sms"

[[campaign]]
id      = "sooner"
on      = ["REMINDER"]
delay   = "1m"
channel = "sms"
"""


@pytest.mark.parametrize("plan", [[(2, 0), (1, 1)], [(3, 0), (1, 1)], [(1, 0), (2, 1)], [(2, 0), (3, 1)],
                                  [(3, 0), (1, 1), (2, 2)]],
                         ids=["2-to-1", "3-to-1", "1-to-2", "2-to-3", "3-to-1-to-2"])
def test_timers_due_together_fire_in_the_order_they_were_made(plan, tmp_path):
    """Timers of many subscribers due at the same ms, made before and after the reshard: they
    fire in the order they were made, as in one engine, whatever the keys each layout gave
    them (a worker's event position, an engine's counter)."""
    import msgpack
    t0 = 1_803_830_400_000
    subscribers = [13_800_000_000 + 7919 * k for k in range(60)]
    (tmp_path / "profiles.csv").write_text("msisdn\n" + "".join(f"{m}\n" for m in subscribers))
    config = tmp_path / "campaigns.toml"
    config.write_text(TIES_CONFIG)
    first, second = subscribers[:30], subscribers[30:]
    pieces = [b"".join(msgpack.packb([t0, 40, m]) for m in first),                       # due t0 + 2m
              b"".join(msgpack.packb([t0 + 60_000, 41, m]) for m in second),             # due t0 + 2m too
              msgpack.packb([t0 + 180_000, 41, subscribers[0]])]                         # fires them
    one = build(config, 1)
    one._core.begin_stream()
    taken = {"actions": [], "conversions": [], "dead": []}
    feed(one, list(enumerate(pieces)), taken, [])
    expected = {k: np.concatenate(v) for k, v in taken.items()}
    assert len(expected["actions"]) == 60
    assert list(expected["actions"]["msisdn"]) == first + second
    got = run_with_reshards(config, pieces, plan, tmp_path / "state")
    assert list(got[0]["actions"]["msisdn"]) == first + second, f"workers {plan}"
    assert got[0]["actions"].tobytes() == expected["actions"].tobytes()
