"""Checkpoints of a service with --workers (CheckpointSet): one CheckpointStore per shard
engine, each checkpoint of the service one in every store with the same commit number.
Whatever a crash or damage leaves, a load gives every shard the state of one commit, the
same for all, and the stores go on from it cleanly."""
import logging

import numpy as np
import pytest

from engine import CheckpointError, Engine
from engine.service.checkpoint import RECORD_MAGIC, CheckpointSet, CheckpointStore, restore_sections
from tests.test_checkpoint_store import same_state

EVENT = 45      # bytes of one event of the generated traces


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from engine.world.gen import generate
    generated = generate(tmp_path_factory.mktemp("w") / "w", subscribers=2_000, events=16_000, campaigns=4, seed=11)
    return generated.config, generated.trace.read_bytes()


class Run:
    """N shard engines fed a trace in pieces, checkpointed into a CheckpointSet."""

    def __init__(self, generated, state, workers):
        self.config, self.data = generated
        self.state, self.workers = state, workers
        self.cuts = [len(self.data) * k // 12 // EVENT * EVENT for k in range(1, 12)]
        self.engines = [self.fresh(i) for i in range(workers)]
        self.checkpoints = CheckpointSet(state, workers, rebase_ratio=100.0)
        self.fed = 0

    def fresh(self, i):
        return Engine.from_config(self.config, shard=(i, self.workers))

    def feed(self, upto):
        for engine in self.engines:
            engine.replay(self.data[self.fed:upto])
        self.fed = upto

    def save(self, upto, checkpoints=None):
        self.feed(upto)
        return (checkpoints or self.checkpoints).save(self.engines, extra={"at": upto})

    def at(self, upto):
        """Engines fed the trace up to `upto`: the state a checkpoint of that cut holds."""
        engines = [self.fresh(i) for i in range(self.workers)]
        for engine in engines:
            engine.replay(self.data[:upto])
        return engines

    def restored(self):
        """A new set over the state directory, loaded, engines restored and adopted."""
        checkpoints = CheckpointSet(self.state, self.workers, rebase_ratio=100.0)
        loaded = checkpoints.load()
        engines = [self.fresh(i) for i in range(self.workers)]
        for engine, part in zip(engines, loaded.parts):
            restore_sections(engine, part.header, part.sections, part.path)
        checkpoints.adopt(loaded, engines)
        return checkpoints, loaded, engines


def records_of(log):
    raw = log.read_bytes()
    return raw, [i for i in range(len(raw)) if raw.startswith(RECORD_MAGIC, i)]


def damage_record(log, index):
    """Flip a byte inside the sections of record `index` (0 = the first)."""
    raw, starts = records_of(log)
    raw = bytearray(raw)
    end = starts[index + 1] if index + 1 < len(starts) else len(raw)
    raw[(starts[index] + end) // 2 + 40] ^= 0xFF
    log.write_bytes(bytes(raw))


@pytest.mark.parametrize("workers", [2, 3])
def test_every_shard_comes_back_at_the_commit_written(generated, tmp_path, workers):
    run = Run(generated, tmp_path / "state", workers)
    kinds = [run.save(cut)["kind"] for cut in run.cuts[:4]]
    assert kinds == ["base", "record", "record", "record"] and run.checkpoints.commit == 4
    for i in range(workers):
        assert (tmp_path / "state" / f"shard-{i}" / "base-00000001").exists()
        assert (tmp_path / "state" / f"shard-{i}").stat().st_mode & 0o777 == 0o750
    checkpoints, loaded, engines = run.restored()
    # when the commit restored was complete: the last store's record (the metrics' age)
    assert checkpoints.written_at() == (tmp_path / "state" / f"shard-{workers - 1}" / "log-00000001").stat().st_mtime
    assert CheckpointSet(tmp_path / "other", workers).written_at() is None
    assert loaded.commit == 4 and loaded.extra == {"at": run.cuts[3], "commit": 4}
    assert loaded.damage is None and loaded.fallbacks == [] and loaded.later_extras == []
    assert loaded.generation == 1 and loaded.records == 3
    for engine, writer in zip(engines, run.engines):
        same_state(engine, writer)
    # the restored engines go on in the same logs, numbering on
    run.engines = engines
    assert run.save(run.cuts[4], checkpoints) == {"kind": "record", "bytes": pytest.approx(1, abs=1 << 40),
                                                 "commit": 5}
    _, loaded, again = run.restored()
    assert loaded.commit == 5 and loaded.records == 4
    for engine, writer in zip(again, engines):
        same_state(engine, writer)


@pytest.mark.parametrize("rebase", [False, True], ids=["record", "base"])
def test_a_crash_between_the_shards_writes_goes_back_to_the_commit_before(generated, tmp_path, caplog, rebase):
    run = Run(generated, tmp_path / "state", 3)
    for cut in run.cuts[:3]:
        run.save(cut)
    # commit 4 written in shard 0 and 1 only: the crash came before shard 2's
    run.feed(run.cuts[3])
    if rebase:
        run.checkpoints.rebase_next()
    prepared = run.checkpoints.prepare(run.engines, extra={"at": run.cuts[3]})
    assert prepared.kind == ("base" if rebase else "record")
    for part in prepared.parts[:2]:
        part.write()
    caplog.set_level(logging.INFO, "sigmatch.checkpoint")
    shard0 = tmp_path / "state" / "shard-0"
    checkpoints, loaded, engines = run.restored()
    assert loaded.commit == 3 and loaded.extra == {"at": run.cuts[2], "commit": 3}
    assert [part.extra["commit"] for part in loaded.parts] == [3, 3, 3]
    assert loaded.damage is None and loaded.fallbacks == []
    assert loaded.later_extras == [{"at": run.cuts[3], "commit": 4}]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # what shard 0 and 1 held of commit 4 is gone: the log cut after commit 3, the base removed
    if rebase:
        assert sorted(p.name for p in shard0.iterdir()) == ["base-00000001", "log-00000001"]
    assert (shard0 / "log-00000001").stat().st_size == loaded.parts[0].log_end
    assert len(records_of(shard0 / "log-00000001")[1]) == 2
    for engine, reference in zip(engines, run.at(run.cuts[2])):
        same_state(engine, reference, offsets=False)
    # the next checkpoint follows cleanly, numbered after the one cut
    for engine in engines:
        engine.replay(run.data[run.cuts[2]:run.cuts[4]])
    assert checkpoints.save(engines, extra={"at": run.cuts[4]})["commit"] == 5
    _, loaded, again = run.restored()
    assert loaded.commit == 5 and loaded.later_extras == [] and loaded.records == 3
    for engine, writer in zip(again, engines):
        same_state(engine, writer)


def test_one_store_wanting_a_base_makes_all_write_one(generated, tmp_path):
    run = Run(generated, tmp_path / "state", 3)
    run.save(run.cuts[0])
    run.save(run.cuts[1])
    run.checkpoints.stores[1].rebase_next()
    assert run.checkpoints.stores[1].wants_base(run.engines[1])
    assert not run.checkpoints.stores[0].wants_base(run.engines[0])
    assert run.save(run.cuts[2])["kind"] == "base"
    assert [store.generation for store in run.checkpoints.stores] == [2, 2, 2]
    # each keeps the generation before as its fallback
    for store in run.checkpoints.stores:
        assert store.generations() == [2, 1]
    assert run.save(run.cuts[3])["kind"] == "record"
    _, loaded, engines = run.restored()
    assert loaded.commit == 4 and loaded.generation == 2
    for engine, writer in zip(engines, run.engines):
        same_state(engine, writer)


@pytest.mark.parametrize("index, commit", [(2, 4), (1, 3)], ids=["newest", "middle"])
def test_a_damaged_record_in_one_store_takes_all_back(generated, tmp_path, caplog, index, commit):
    run = Run(generated, tmp_path / "state", 3)
    for cut in run.cuts[:4]:
        run.save(cut)                               # commit 1 a base, 2 to 4 records
    damage_record(tmp_path / "state" / "shard-1" / "log-00000001", index)
    checkpoints, loaded, engines = run.restored()
    assert loaded.commit == commit - 1 and loaded.extra["at"] == run.cuts[commit - 2]
    assert "damaged" in loaded.damage and "cannot use checkpoint" in caplog.text
    assert loaded.later_extras == [{"at": run.cuts[c - 1], "commit": c} for c in range(commit, 5)]
    for engine, reference in zip(engines, run.at(run.cuts[commit - 2])):
        same_state(engine, reference, offsets=False)
    # the stores that were not damaged are cut at the commit loaded; all go on with a base
    for i in (0, 2):
        assert len(records_of(tmp_path / "state" / f"shard-{i}" / "log-00000001")[1]) == commit - 2
    for engine in engines:
        engine.replay(run.data[run.cuts[commit - 2]:run.cuts[5]])
    assert checkpoints.save(engines, extra={"at": run.cuts[5]}) == {
        "kind": "base", "bytes": pytest.approx(1, abs=1 << 40), "commit": 5}
    _, loaded, again = run.restored()
    assert loaded.commit == 5 and loaded.generation == 2 and loaded.damage is None
    for engine, writer in zip(again, engines):
        same_state(engine, writer)


def test_a_failed_write_leaves_no_commit_number_to_reuse(generated, tmp_path, monkeypatch):
    run = Run(generated, tmp_path / "state", 3)
    run.save(run.cuts[0])
    run.save(run.cuts[1])
    run.feed(run.cuts[2])
    prepared = run.checkpoints.prepare(run.engines, extra={"at": run.cuts[2]})

    def full(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(run.checkpoints.stores[1], "_write_record", full)
    with pytest.raises(OSError, match="No space"):
        prepared.write()
    monkeypatch.undo()
    # shard 0 holds commit 3, shard 2 was not written; the next is 4, a base in every store
    assert run.checkpoints.commit == 3
    assert all(store.wants_base(engine) for store, engine in zip(run.checkpoints.stores, run.engines))
    assert run.save(run.cuts[3]) == {"kind": "base", "bytes": pytest.approx(1, abs=1 << 40), "commit": 4}
    _, loaded, engines = run.restored()
    assert loaded.commit == 4 and loaded.later_extras == []
    for engine, writer in zip(engines, run.engines):
        same_state(engine, writer)
    # shard 0's base of commit 4 damaged: it falls back to its commit 3, which shard 2 never
    # wrote; all go back to commit 2
    base = tmp_path / "state" / "shard-0" / "base-00000002"
    raw = bytearray(base.read_bytes())
    raw[-5] ^= 0xFF
    base.write_bytes(bytes(raw))
    _, loaded, engines = run.restored()
    assert loaded.commit == 2 and loaded.fallbacks
    assert [e["commit"] for e in loaded.later_extras] == [3, 4]
    for engine, reference in zip(engines, run.at(run.cuts[1])):
        same_state(engine, reference, offsets=False)


def test_a_crash_in_the_first_checkpoint_starts_afresh(generated, tmp_path):
    run = Run(generated, tmp_path / "state", 3)
    run.feed(run.cuts[0])
    prepared = run.checkpoints.prepare(run.engines, extra={"at": run.cuts[0]})
    prepared.parts[0].write()
    checkpoints = CheckpointSet(tmp_path / "state", 3)
    assert checkpoints.exists() and checkpoints.layout_error() is None
    assert checkpoints.load() is None
    # the layout is the one the base records, not the number of stores holding one
    assert CheckpointSet.workers_in(tmp_path / "state") == 3
    assert "--workers 3" in CheckpointSet(tmp_path / "state", 1).layout_error()
    engines = [run.fresh(i) for i in range(3)]
    for engine in engines:
        engine.replay(run.data[:run.cuts[1]])
    assert checkpoints.save(engines, extra={"at": run.cuts[1]})["commit"] == 1
    assert sorted(p.name for p in (tmp_path / "state" / "shard-0").iterdir()) == ["base-00000002"]
    run.engines = engines
    _, loaded, again = run.restored()
    assert loaded.commit == 1 and loaded.later_extras == []
    for engine, writer in zip(again, engines):
        same_state(engine, writer)


def test_a_shard_without_its_state_is_an_error(generated, tmp_path):
    run = Run(generated, tmp_path / "state", 2)
    run.save(run.cuts[0])
    run.save(run.cuts[1])
    for path in (tmp_path / "state" / "shard-1").iterdir():
        path.unlink()
    with pytest.raises(CheckpointError, match=r"shard-1: holds no checkpoint while the other shards hold up to "
                                              r"commit 2"):
        CheckpointSet(tmp_path / "state", 2).load()


def test_layouts_of_other_services_are_named(generated, tmp_path):
    config, data = generated
    assert CheckpointSet(tmp_path / "none", 2).layout_error() is None
    assert CheckpointSet.workers_in(tmp_path / "none") == 0
    # a service without --workers
    single = tmp_path / "single"
    single.mkdir()
    engine = Engine.from_config(config)
    engine.replay(data[:EVENT * 100])
    CheckpointStore(single).save(engine, extra={"at": 1})
    assert CheckpointSet(single, 2).layout_error() == (
        f"--state {single}: holds the checkpoint of a service without --workers (or with --workers 1): start it so, "
        f"or rewrite it first with `sigmatch reshard --state {single} --workers 2`")
    assert CheckpointStore(single).layout_error() is None
    # a service with --workers 3
    run = Run(generated, tmp_path / "three", 3)
    run.save(run.cuts[0])
    assert CheckpointSet(tmp_path / "three", 3).layout_error() is None
    for workers in (1, 2, 4):
        assert CheckpointSet(tmp_path / "three", workers).layout_error() == (
            f"--state {tmp_path / 'three'}: holds the checkpoint of a service with --workers 3: "
            f"start it with --workers 3, or rewrite it first with `sigmatch reshard --state {tmp_path / 'three'} "
            f"--workers {workers}`")
    assert CheckpointSet.workers_in(tmp_path / "three") == 3
    assert CheckpointStore(tmp_path / "three").layout_error() == (
        f"--state {tmp_path / 'three'}: holds the checkpoint of a service with --workers 3: start it with --workers 3, "
        f"or rewrite it first with `sigmatch reshard --state {tmp_path / 'three'} --workers 1`")
    assert CheckpointStore(tmp_path / "empty").layout_error() is None
    # a shard directory copied in from elsewhere: named, whichever number the service is given
    import shutil
    shutil.copytree(tmp_path / "three" / "shard-2", tmp_path / "three" / "shard-3")
    assert CheckpointSet(tmp_path / "three", 3).layout_error() == (
        f"--state {tmp_path / 'three'}: shard-3/ is not a shard of this service (its checkpoints say --workers 3): "
        "move it away")
    assert "start it with --workers 3" in CheckpointSet(tmp_path / "three", 4).layout_error()
    # a shard's directory under a name the service never writes is not taken for that shard
    # (shard-01 was read as shard-1 and a state without shard-1 said shard-1 was missing)
    shutil.rmtree(tmp_path / "three" / "shard-3")
    (tmp_path / "three" / "shard-1").rename(tmp_path / "three" / "shard-01")
    assert CheckpointSet(tmp_path / "three", 3).layout_error() == (
        f"--state {tmp_path / 'three'}: shard-01/ is not a shard of this service (a shard's directory is "
        "shard-1/): move it away")
    (tmp_path / "three" / "shard-01").rename(tmp_path / "three" / "shard-1")
    assert CheckpointSet(tmp_path / "three", 3).layout_error() is None
    # shards whose bases cannot be read say so, rather than name a number of workers
    junk = tmp_path / "junk"
    (junk / "shard-0").mkdir(parents=True)
    (junk / "shard-0" / "base-00000001").write_bytes(b"junk\n")
    for layout in (CheckpointSet(junk, 2).layout_error(), CheckpointStore(junk).layout_error()):
        assert layout == (f"--state {junk}: shard-0/ holds checkpoints that cannot be read (no readable base): "
                          "move the state directory away to start afresh")
    assert CheckpointSet.workers_in(junk) == -1


def single_store(generated, directory, commits, rebase_at=None):
    """A CheckpointStore written at each cut with extra {"commit": k}; a new base at `rebase_at`."""
    config, data = generated
    directory.mkdir()
    engine, store = Engine.from_config(config), CheckpointStore(directory, rebase_ratio=100.0)
    cuts = [len(data) * k // 12 // EVENT * EVENT for k in range(1, 12)]
    kinds = []
    for commit in commits:
        engine.replay(data[cuts[commit - 2] if commit > 1 else 0:cuts[commit - 1]])
        if commit == rebase_at:
            store.rebase_next()
        kinds.append(store.save(engine, extra={"commit": commit} if commit else {})["kind"])
    return store, cuts, kinds


def test_a_store_loads_up_to_a_commit_in_the_middle_of_its_log(generated, tmp_path, caplog):
    config, data = generated
    store, cuts, kinds = single_store(generated, tmp_path / "s", [1, 2, 3, 4, 5])
    assert kinds == ["base"] + ["record"] * 4
    log_path = tmp_path / "s" / "log-00000001"
    loaded = CheckpointStore(tmp_path / "s").load(upto_commit=3)
    assert loaded.extra == {"commit": 3} and loaded.records == 2
    assert loaded.damage is None and loaded.fallbacks == [] and loaded.later_extras == []
    assert loaded.log_end == records_of(log_path)[1][2]
    assert CheckpointStore(tmp_path / "s").load().extra == {"commit": 5}
    assert CheckpointStore(tmp_path / "s").load(upto_commit=1).records == 0
    assert CheckpointStore(tmp_path / "s").load(upto_commit=0) is None
    assert CheckpointStore(tmp_path / "s").newest_commit() == 5
    # adopted: the log is cut after commit 3 and the next record follows it
    engine = Engine.from_config(config)
    restore_sections(engine, loaded.header, loaded.sections, loaded.path)
    reference = Engine.from_config(config)
    reference.replay(data[:cuts[2]])
    same_state(engine, reference, offsets=False)
    again = CheckpointStore(tmp_path / "s")
    again.adopt(loaded, engine)
    assert log_path.stat().st_size == loaded.log_end
    assert again.save(engine, extra={"commit": 6})["kind"] == "record"
    assert CheckpointStore(tmp_path / "s").load().records == 3
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_base_newer_than_the_commit_asked_is_passed_over(generated, tmp_path, caplog):
    store, cuts, kinds = single_store(generated, tmp_path / "s", [1, 2, 3, 4, 5], rebase_at=4)
    assert kinds == ["base", "record", "record", "base", "record"]
    caplog.set_level(logging.INFO, "sigmatch.checkpoint")
    loaded = CheckpointStore(tmp_path / "s").load(upto_commit=3)
    assert loaded.generation == 1 and loaded.extra == {"commit": 3} and loaded.records == 2
    assert loaded.fallbacks == [] and loaded.damage is None and loaded.later_extras == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert CheckpointStore(tmp_path / "s").load(upto_commit=4).generation == 2
    # discarded: the generation after the one loaded
    CheckpointStore(tmp_path / "s").discard_newer(loaded)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["base-00000001", "log-00000001"]
    assert CheckpointStore(tmp_path / "s").load().extra == {"commit": 3}


def test_no_commit_number_is_an_error_when_one_is_asked_for(generated, tmp_path):
    single_store(generated, tmp_path / "base", [0, 0])
    assert CheckpointStore(tmp_path / "base").load().extra == {}
    with pytest.raises(CheckpointError, match=r"base-00000001: holds no commit number"):
        CheckpointStore(tmp_path / "base").load(upto_commit=5)
    with pytest.raises(CheckpointError, match=r"shard-0: holds a checkpoint without a commit number"):
        (tmp_path / "base").rename(tmp_path / "shard-0")
        CheckpointSet(tmp_path, 1).load()
    # a base with one, a record without
    store, cuts, kinds = single_store(generated, tmp_path / "record", [1, 0])
    with pytest.raises(CheckpointError, match=r"log-00000001: record 1 at byte 0: holds no commit number"):
        CheckpointStore(tmp_path / "record").load(upto_commit=5)


def test_engine_for_builds_each_shard_from_one_loaded_configuration(generated, tmp_path):
    from engine.language.compile import load_world
    from engine.language.config import load_config
    from engine.service.checkpoint import engine_for
    run = Run(generated, tmp_path / "state", 2)
    run.save(run.cuts[0])
    run.save(run.cuts[1])
    loaded = CheckpointSet(tmp_path / "state", 2).load()
    config = load_config(run.config)
    world = load_world(config)
    for i, (part, writer) in enumerate(zip(loaded.parts, run.engines)):
        engine, dropped = engine_for(run.config, part, config=config, world=world, shard=(i, 2))
        assert dropped is None and engine.config is config
        same_state(engine, writer)
