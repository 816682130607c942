"""The service's workers (engine.workers.inprocess, `sigmatch run --workers N`, issue 14): N
shard engines in one process, fed each piece together, give the records one engine gives,
byte for byte (seq, conversions' contact_seq and seq, dead letters), on random worlds cut
into random pieces, with the clock advanced between pieces (--idle-advance), a reload in the
middle, and budgets and max_pending that bind. A contact keeps the number the files give its
action, so conversions and the lookup name it the same after any piece.

The daemon with --workers (checkpoints, kill -9) is in tests/test_daemon.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from engine.api import Engine
from engine.workers import inprocess
from engine.workers.inprocess import ShardedEngine
from engine.world.gen import generate
from tests.test_workers import TIGHT, squeezed
from tests.worlds import worlds, write_world


def feed_all(engine, pieces, *, advances=(), reload_at=None, config=None):
    """Feed `pieces` in turn; after piece i in `advances`, advance the clock by an hour; before
    piece `reload_at`, reload. Returns (actions, conversions, dead letters, engine at the end)."""
    core = engine._core
    core.begin_stream()
    taken = {"actions": [], "conversions": [], "dead": []}
    statuses = []
    for i, piece in enumerate(pieces):
        if i == reload_at:
            engine = engine.reload(config)
            core = engine._core
        statuses.append(core.feed(piece))
        if i in advances and core.clock is not None:
            core.advance(core.clock + 3_600_000)
        taken["actions"].append(core.take_actions())
        taken["conversions"].append(core.take_conversions())
        taken["dead"].append(core.take_dead_letters())
        if statuses[-1]:
            break
    return ({k: np.concatenate(v) for k, v in taken.items()}, statuses, engine)


def assert_same(got, expected, what: str) -> None:
    for name in expected[0]:
        assert got[0][name].tobytes() == expected[0][name].tobytes(), f"{what}: {name} differ"
    assert got[1] == expected[1], f"{what}: statuses differ"
    one, many = expected[2], got[2]
    assert many._core.seq == one._core.seq and many.pending == one.pending, what
    assert (many._core.funnel() == one._core.funnel()).all(), what
    counts, theirs = one._core.counts(), many._core.counts()
    assert theirs == counts, what


def pieces_of(data: bytes, cuts) -> list[bytes]:
    edges = [0] + sorted({c for c in cuts if 0 < c < len(data)}) + [len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


@settings(max_examples=max(40, settings().max_examples // 3), deadline=None,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), w=worlds())
def test_workers_in_one_process_give_one_engines_records(data, w, tmp_path_factory):
    w = data.draw(squeezed(w))
    config, _ = write_world(w, tmp_path_factory.mktemp("world"))
    pieces = pieces_of(w.trace, data.draw(st.lists(st.integers(0, len(w.trace)), max_size=6)))
    advances = set(data.draw(st.lists(st.integers(0, len(pieces) - 1), max_size=2)))
    reload_at = data.draw(st.sampled_from([None, None, len(pieces) // 2]))
    expected = feed_all(Engine.from_config(config), pieces, advances=advances, reload_at=reload_at, config=config)
    ring = inprocess.RING_BITS
    inprocess.RING_BITS = data.draw(st.sampled_from([ring, 4]))
    try:
        for k in (2, 3):
            engine = ShardedEngine.build(config, k)
            got = feed_all(engine, pieces, advances=advances, reload_at=reload_at, config=config)
            assert_same(got, expected, f"{k} workers")
            got[2].close()
    finally:
        inprocess.RING_BITS = ring


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    """tests/test_workers.py's `sigmatch gen` world whose budgets and max_pending run out."""
    directory = tmp_path_factory.mktemp("gen")
    generated = generate(directory, subscribers=5_000, events=60_000, seed=3)
    text = generated.config.read_text()
    for old, new in TIGHT.items():
        text = text.replace(old, new)
    config = directory / "tight.toml"
    config.write_text(text)
    return config, generated.traces[0].read_bytes()


@pytest.mark.parametrize("workers", [2, 4])
def test_budgets_and_max_pending_running_out_between_pieces(tight, workers):
    config, data = tight
    rng = np.random.default_rng(workers)
    pieces = pieces_of(data, rng.integers(0, len(data), 30).tolist())
    advances = {3, 11, 20}
    expected = feed_all(Engine.from_config(config), pieces, advances=advances, reload_at=15, config=config)
    funnel = expected[2]._core.funnel()
    from engine.records import FUNNEL
    for what in ("suppressed_campaign_budget", "suppressed_channel_budget", "overflow"):
        assert funnel[:, FUNNEL.index(what)].sum() > 0, what
    assert len(expected[0]["conversions"]) > 0
    got = feed_all(ShardedEngine.build(config, workers), pieces, advances=advances, reload_at=15, config=config)
    assert_same(got, expected, f"{workers} workers")
    # the lookup's view of a subscriber with a contact: the number its action has in the files
    actions = expected[0]["actions"]
    for msisdn in np.unique(actions["msisdn"])[:50]:
        one = expected[2]._core.subscriber_view(int(msisdn))
        many = got[2]._core.subscriber_view(int(msisdn))
        one.pop("index"), many.pop("index")     # a worker's own index of the subscriber
        assert one == many, int(msisdn)
    assert expected[2]._core.budgets_used() == got[2]._core.budgets_used()


def test_an_explanation_names_the_numbers_of_the_files(tight):
    """Watched subscribers (`run --watch`, the lookup's /watch) are explained by the worker that
    holds them, with the seqs the files give their actions and conversions."""
    config, data = tight
    pieces = pieces_of(data, np.random.default_rng(7).integers(0, len(data), 12).tolist())
    one = Engine.from_config(config)
    actions = feed_all(Engine.from_config(config), pieces)[0]["actions"]
    conversions = feed_all(Engine.from_config(config), pieces)[0]["conversions"]
    # subscribers with contacts and conversions, and one without either
    watched = list(dict.fromkeys([int(m) for m in conversions["msisdn"][:4]] + [int(m) for m in actions["msisdn"][:4]]))
    many = ShardedEngine.build(config, 3)
    for engine in (one, many):
        engine.watch(watched, ring=1000)
    expected, got = feed_all(one, pieces), feed_all(many, pieces)
    assert_same(got, expected, "3 workers")
    assert many.watched == watched
    for msisdn in watched:
        theirs = many.explanation(msisdn)
        assert theirs == one.explanation(msisdn), msisdn
    assert any(doc["conversions"] for m in watched for doc in one.explanation(m)["events"])
    with pytest.raises(ValueError, match="not a subscriber"):
        many.watch([1])
    many.close()


@pytest.mark.parametrize("workers, who, how", [(2, 1, "raises"), (3, 2, "raises"), (3, 0, "raises"),
                                               (2, 1, "out of memory"), (3, 1, "out of memory")])
def test_a_worker_that_fails_stops_the_others_waits(tight, monkeypatch, workers, who, how):
    """A worker whose call raises, or whose core runs out of memory part-way through a piece
    (status 4), stops the others at once, even those waiting on its progress for a budget:
    the feed fails in one line naming it, and every later call refuses (the service restarts
    from its checkpoint)."""
    import threading
    config, data = tight
    engine = ShardedEngine.build(config, workers)

    def feed(self, piece):
        cores = self._cores

        def call(core):
            if core is cores[who]:
                if how == "raises":
                    raise MemoryError()
                core.feed(bytes(piece[:len(piece) // 2]))
                return 4
            return core.feed(piece)
        return self._together(call, "feeding")

    monkeypatch.setattr(inprocess._Cores, "feed", feed)
    engine._core.begin_stream()
    outcome = {}

    def go():
        try:
            outcome["status"] = engine._core.feed(data[:2_000_000])
        except MemoryError as e:
            outcome["error"] = str(e)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the workers hang"
    assert outcome.get("error", "").startswith(f"worker {who} of {workers} ran out of memory while feeding"), outcome
    monkeypatch.undo()
    with pytest.raises(Exception, match="restart from its checkpoint"):
        engine._core.feed(data[:1000])
    engine.close()


def test_a_reload_frees_the_workers_it_replaces(tight):
    """The workers a reload replaces go at once, not at the collector's next full pass: at
    scale they hold gigabytes."""
    import gc
    import weakref
    config, data = tight
    engine = ShardedEngine.build(config, 2)
    engine._core.begin_stream()
    engine._core.feed(data[:1_000_000])
    old = [weakref.ref(e) for e in engine.shards] + [weakref.ref(engine)]
    gc.disable()
    try:
        engine = engine.reload(config)
        assert all(ref() is None for ref in old)
    finally:
        gc.enable()
    engine.close()


def test_a_rejected_reload_leaves_the_explanations_to_the_running_campaigns(tight, monkeypatch):
    """A reload whose second worker's engine fails (out of memory: a reload holds two states)
    after the first's was built is rejected, and the running engine goes on: its watched
    subscribers are still explained with the running configuration's campaigns, not with
    those of the configuration refused (a campaign renamed there)."""
    config, data = tight
    renamed = config.parent / "renamed.toml"       # beside it: its paths are relative
    renamed.write_text(config.read_text().replace('id = "crbt_school"', 'id = "renamed_in_refused"'))
    pieces = pieces_of(data, np.random.default_rng(11).integers(0, len(data), 12).tolist())
    one, many = Engine.from_config(config), ShardedEngine.build(config, 2)
    actions = feed_all(Engine.from_config(config), pieces)[0]["actions"]
    school = [c.id for c in one.config.campaigns].index("crbt_school")
    # subscribers of both workers whom the renamed campaign contacts: their explanations name it
    contacted = [int(m) for m in np.unique(actions["msisdn"][actions["campaign"] == school])]
    watched = [m for m in contacted if many.shard_for(m) is many.shards[0]][:3]
    watched += [m for m in contacted if many.shard_for(m) is many.shards[1]][:3]
    assert len(watched) == 6
    for engine in (one, many):
        engine.watch(watched, ring=1000)
    feed_all(one, pieces[:6])
    calls = [0]
    built = Engine._reloaded

    def second_fails(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise MemoryError("the second worker's new engine")
        return built(self, *args, **kwargs)

    core = many._core
    core.begin_stream()
    for piece in pieces[:6]:
        core.feed(piece)
        core.take_actions(), core.take_conversions(), core.take_dead_letters()
    monkeypatch.setattr(Engine, "_reloaded", second_fails)
    with pytest.raises(MemoryError):
        many.reload(renamed)
    monkeypatch.setattr(Engine, "_reloaded", built)
    for piece in pieces[6:]:
        for c in (one._core, core):
            c.feed(piece)
            c.take_actions(), c.take_conversions(), c.take_dead_letters()
    for msisdn in watched:
        theirs = many.explanation(msisdn)
        assert "renamed_in_refused" not in str(theirs) and "crbt_school" in str(theirs), msisdn
        assert theirs == one.explanation(msisdn), msisdn
    many.close()
