"""Incremental checkpoints (CheckpointStore): a base per generation plus records of what
changed. Whatever the cuts, the records, the rebases, a torn or damaged tail, an engine
restored from the store continues exactly like the one that wrote it."""
import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import CheckpointError, Engine
from engine.service.checkpoint import RECORD_MAGIC, CheckpointStore, restore_sections
from engine.language.compile import World
from tests.worlds import worlds


def restored(fresh, directory, **options):
    store = CheckpointStore(directory, **options)
    loaded = store.load()
    engine = fresh()
    restore_sections(engine, loaded.header, loaded.sections, loaded.path)
    store.adopt(loaded, engine)
    return engine, store, loaded


def contacts_by_key(raw: np.ndarray) -> np.ndarray:
    rows = raw.reshape(-1, 32)
    return rows[np.argsort(rows[:, :8].copy().view(np.uint64).ravel(), kind="stable")]


def windows_by_key(raw: np.ndarray, engine: Engine) -> np.ndarray:
    rows = raw.reshape(-1, engine._core.window_contacts + 2)
    return rows[np.argsort(rows[:, 0], kind="stable")]


def same_state(a: Engine, b: Engine, offsets: bool = True) -> None:
    """Equal state; without `offsets`, stream positions aside (an engine fed in other pieces)."""
    sa, sb = dict(a._core.state_sections()), dict(b._core.state_sections())
    assert set(sa) == set(sb)
    for name in sa:
        if name == "contacts":
            assert np.array_equal(contacts_by_key(sa[name]), contacts_by_key(sb[name]))
        elif name == "windows":
            # a hash table's order: entries put back one by one may sit in other slots
            assert np.array_equal(windows_by_key(sa[name], a), windows_by_key(sb[name], b)), name
        else:
            assert np.array_equal(sa[name], sb[name]), name
    sa, sb = a._core.state_scalars(), b._core.state_scalars()
    if not offsets:
        for scalars in (sa, sb):
            del scalars["stream_offset"], scalars["carry_offset"]
    assert sa == sb


@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=30)
@given(w=worlds(), data=st.data())
def test_records_and_rebases_restore_exactly_on_random_worlds(w, data, tmp_path_factory):
    fresh = lambda: Engine(w.config, World(w.profiles, w.lists, w.areas))
    cuts = sorted(set(data.draw(st.lists(st.sampled_from(w.boundaries), min_size=1, max_size=6))))
    ratio = data.draw(st.sampled_from([0.05, 1.0, 100.0]))
    directory = tmp_path_factory.mktemp("store")
    whole = fresh().replay(w.trace, drain=True)
    writer, store = fresh(), CheckpointStore(directory, rebase_ratio=ratio)
    parts, start = [], 0
    for cut in cuts:
        parts.append(writer.replay(w.trace[start:cut]))
        store.save(writer, extra={"at": cut})
        start = cut
    reader, _, loaded = restored(fresh, directory)
    assert loaded.extra == {"at": cuts[-1]} and loaded.damage is None
    same_state(reader, writer)
    rest = reader.replay(w.trace[cuts[-1]:], drain=True)
    assert np.array_equal(np.concatenate([p.actions for p in parts] + [rest.actions]), whole.actions)
    assert np.array_equal(np.concatenate([p.conversions for p in parts] + [rest.conversions]), whole.conversions)


@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=30)
@given(w=worlds(), data=st.data())
def test_the_changes_noted_cover_every_changed_row(w, data):
    engine = Engine(w.config, World(w.profiles, w.lists, w.areas))
    at = data.draw(st.sampled_from(w.boundaries))
    engine.replay(w.trace[:at])
    core = engine._core
    core.track_changes()
    before = core.rows().copy()
    engine.replay(w.trace[at:])
    subs, _ = core.take_changes()
    stride = len(before) // max(1, len(engine.subscribers))
    if stride:
        differ = np.flatnonzero((before.reshape(-1, stride) != core.rows().reshape(-1, stride)).any(axis=1))
        assert set(differ.tolist()) <= set(subs.tolist())
    assert list(subs) == sorted(set(subs.tolist()))
    assert core.nr_changed == 0


@pytest.fixture
def saved(tmp_path):
    """A store with one base and several records, the cut of each in its extra."""
    from engine.world.gen import generate
    generated = generate(tmp_path / "w", subscribers=3_000, events=30_000, campaigns=4, seed=5)
    data = generated.trace.read_bytes()
    fresh = lambda: Engine.from_config(generated.config)
    whole = fresh().replay(data, drain=True)
    writer, store = fresh(), CheckpointStore(tmp_path / "state", rebase_ratio=100.0)
    (tmp_path / "state").mkdir()
    cuts = [len(data) * k // 8 // 45 * 45 for k in range(1, 8)]
    start, kinds = 0, []
    for cut in cuts:
        writer.replay(data[start:cut])
        kinds.append(store.save(writer, extra={"at": cut})["kind"])
        start = cut
    assert kinds[0] == "base" and kinds[1:].count("record") >= 3
    return fresh, data, whole, tmp_path / "state", cuts


def test_a_record_torn_by_a_crash_is_cut_off_and_the_log_goes_on(saved, caplog):
    fresh, data, whole, state, cuts = saved
    (log,) = state.glob("log-*")
    raw = log.read_bytes()
    log.write_bytes(raw[:len(raw) - 100])           # the last record, half written
    caplog.set_level(logging.INFO, "sigmatch.checkpoint")
    engine, store, loaded = restored(fresh, state, rebase_ratio=100.0)
    assert loaded.extra == {"at": cuts[-2]} and loaded.damage is None
    assert "torn" in caplog.text
    # the tail is cut off, and the next record follows the good ones
    assert log.stat().st_size == loaded.log_end
    engine.replay(data[cuts[-2]:cuts[-1]])
    assert store.save(engine, extra={"at": cuts[-1]})["kind"] == "record"
    again, _, loaded = restored(fresh, state)
    assert loaded.extra == {"at": cuts[-1]}
    same_state(again, engine)


def test_a_damaged_record_stops_the_log_there_and_names_the_later_ones(saved, caplog):
    fresh, data, whole, state, cuts = saved
    (log,) = state.glob("log-*")
    raw = bytearray(log.read_bytes())
    starts = [i for i in range(len(raw)) if raw.startswith(RECORD_MAGIC, i)]
    raw[starts[2] + (starts[3] - starts[2]) // 2] ^= 0xFF   # inside the third record's sections
    log.write_bytes(bytes(raw))
    engine, store, loaded = restored(fresh, state)
    assert loaded.records == 2 and "damaged" in loaded.damage and "cannot use checkpoint" in caplog.text
    assert [e["at"] for e in loaded.later_extras] == cuts[3:]
    # the state is that of the last good record; the next checkpoint starts a new generation
    reference = fresh()
    reference.replay(data[:loaded.extra["at"]])
    same_state(engine, reference, offsets=False)
    assert store.save(engine)["kind"] == "base"


@pytest.mark.parametrize("damaged", [(2,), (1, 3), (2, 3)])
def test_records_after_one_whose_header_is_damaged_are_still_named(saved, damaged):
    """A damaged header hides where the next record starts (its sections' lengths are in it):
    the records after it are found by their magic, and the fallback still knows what they
    moved. (2, 3): two damaged in a row; (1, 3): one readable between them."""
    fresh, data, whole, state, cuts = saved
    (log,) = state.glob("log-*")
    raw = bytearray(log.read_bytes())
    starts = [i for i in range(len(raw)) if raw.startswith(RECORD_MAGIC, i)]
    for index in damaged:
        raw[starts[index] + 20] ^= 0xFF       # inside the header's JSON
    log.write_bytes(bytes(raw))
    store = CheckpointStore(state)
    loaded = store.load()
    assert loaded.records == damaged[0] and "damaged header" in loaded.damage
    # cuts[0] is the base's; record k's extra is cuts[k]
    readable = [k for k in range(damaged[0] + 1, len(starts) + 1) if k - 1 not in damaged]
    assert [e["at"] for e in loaded.later_extras] == [cuts[k] for k in readable]
    assert [e["at"] for e in store._record_extras(loaded.generation)] == \
        [cuts[k] for k in range(1, len(starts) + 1) if k - 1 not in damaged]


def test_a_damaged_base_falls_back_to_the_previous_generation(saved):
    fresh, data, whole, state, cuts = saved
    engine, store, _ = restored(fresh, state)
    store._rebase = True
    assert store.save(engine, extra={"at": cuts[-1]})["kind"] == "base"
    reference = fresh()
    reference.replay(data[:cuts[-1]])
    # two records follow in the new generation; what they cover is named after the fallback
    engine.replay(data[cuts[-1]:cuts[-1] + 45 * 300])
    assert store.save(engine, extra={"at": "later 1"})["kind"] == "record"
    assert store.save(engine, extra={"at": "later 2"})["kind"] == "record"
    newest = max(state.glob("base-*"))
    raw = bytearray(newest.read_bytes())
    raw[-5] ^= 0xFF
    newest.write_bytes(bytes(raw))
    again, _, loaded = restored(fresh, state)
    assert loaded.fallbacks and loaded.generation == 1 and loaded.extra == {"at": cuts[-1]}
    # the damaged base's header still reads: what it covered, its first record moved
    assert [e["at"] for e in loaded.later_extras] == [cuts[-1], "later 1", "later 2"]
    same_state(again, reference, offsets=False)


def test_nothing_usable_is_an_error(saved, caplog):
    fresh, data, whole, state, cuts = saved
    for base in state.glob("base-*"):
        base.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        CheckpointStore(state).load()
    # said once, by the error: `diff --state` printed the log line and the error (helper-115)
    assert "cannot use checkpoint" not in caplog.text


def test_a_fallback_says_what_it_passed_over(saved, caplog):
    fresh, data, whole, state, cuts = saved
    engine, store, _ = restored(fresh, state)
    store._rebase = True
    assert store.save(engine, extra={"at": cuts[-1]})["kind"] == "base"
    newest = max(state.glob("base-*"))
    newest.write_bytes(b"garbage")
    caplog.set_level(logging.ERROR, "sigmatch.checkpoint")
    loaded = CheckpointStore(state).load()
    assert loaded.fallbacks and f"cannot use checkpoint: {newest}" in caplog.text


@pytest.mark.parametrize("kind", ["record", "base"])
def test_a_prepared_checkpoint_holds_the_state_of_its_moment(saved, tmp_path, kind):
    """The daemon writes checkpoints on another thread while the engine goes on."""
    fresh, data, whole, state, cuts = saved
    engine, store = fresh(), CheckpointStore(tmp_path / "detached")
    (tmp_path / "detached").mkdir()
    engine.replay(data[:cuts[1]])
    store.save(engine, extra={"at": cuts[1]})
    engine.replay(data[cuts[1]:cuts[3]])
    if kind == "base":
        store._rebase = True
    prepared = store.prepare(engine, extra={"at": cuts[3]}, copy_limit=1 << 30)
    assert prepared.detached and prepared.kind == kind
    with pytest.raises(RuntimeError, match="not written yet"):
        store.prepare(engine)
    engine.replay(data[cuts[3]:cuts[5]])     # goes on before the write
    prepared.write()
    snapshot = fresh()
    snapshot.replay(data[:cuts[1]])
    snapshot.replay(data[cuts[1]:cuts[3]])
    loaded_engine, _, loaded = restored(fresh, tmp_path / "detached")
    assert loaded.extra == {"at": cuts[3]}
    same_state(loaded_engine, snapshot)
    # without room for a copy, a base is to be written before the engine goes on
    store._rebase = True
    assert not store.prepare(engine, copy_limit=0).detached


def test_a_users_own_files_of_checkpoint_like_names_are_neither_read_nor_removed(saved):
    """helper-119: the store took any base-<digits> for a generation (base-2026 made the load
    fail on base-00002026, a file that does not exist) and removed any log-<digits> with the
    old generations (a user's log-20261206). Only the names it writes are generations, and
    only files with its magic are removed."""
    from engine.service.checkpoint import is_checkpoint_file, is_checkpoint_name
    fresh, data, whole, state, cuts = saved
    (state / "log-20261206").write_text("notes of the day\n")
    (state / "base-2026").write_text("x\n")
    (state / "log-99999999").write_bytes(RECORD_MAGIC + b"\0" * 10)   # the store's own, of a later generation
    assert [is_checkpoint_name(n) for n in ("base-00000001", "log-123456789", "base-2026", "base-000000001",
                                            "log-today.txt", "log-２０２６１２０６")] == [True, True, False, False,
                                                                                         False, False]
    assert not is_checkpoint_file(state / "log-20261206") and is_checkpoint_file(state / "log-99999999")
    engine, store, loaded = restored(fresh, state, rebase_ratio=100.0)
    assert loaded.generation == 1 and loaded.extra == {"at": cuts[-1]}
    # a log whose head is damaged goes with its base all the same (helper-121)
    with open(state / "log-00000001", "r+b") as f:
        f.write(b"\0" * 8)
    store._rebase = True
    assert store.save(engine, extra={"at": "rebased"})["kind"] == "base"
    store._rebase = True
    assert store.save(engine, extra={"at": "rebased again"})["kind"] == "base"    # generation 1 is pruned
    assert not (state / "base-00000001").exists() and not (state / "log-00000001").exists()
    assert not (state / "log-99999999").exists()          # the store's, of a generation without a base: pruned
    assert (state / "log-20261206").read_text() == "notes of the day\n" and (state / "base-2026").read_text() == "x\n"
