"""The demo world (`engine.world.demo`, `sigmatch demo`): deterministic, two files that are one
stream, every campaign but the retired one finds someone, and the core agrees with the reference model."""
import msgpack
import pytest

from engine.api import Engine
from engine.language.compile import load_world
from engine.language.config import load_config
from engine.world.demo import build_demo_world
from engine.world.gen import INTERNATIONAL_PREFIXES, OTHER_SEGMENTS, OWN_SEGMENTS
from engine.model import ReferenceModel
from tests.backends import assert_same_outcome

SUBSCRIBERS, EVENTS = 2_000, 20_000


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("demo")
    config, traces = build_demo_world(directory, subscribers=SUBSCRIBERS, events=EVENTS)
    return directory, config, traces


@pytest.fixture(scope="module")
def replayed(tiny):
    directory, config, traces = tiny
    engine = Engine.from_config(config)
    return engine, engine.replay(traces, out=directory / "out", drain=True)


def test_the_world_on_disk(tiny):
    directory, config, traces = tiny
    assert config == directory / "campaigns.toml"
    for name in ("profiles.csv", "lists/dnd.roar", "lists/crbt_targets.roar", "lists/crbt_peers.roar",
                 "lists/mms_handsets.roar", "areas/schools.txt", "areas/airport.txt"):
        assert (directory / name).is_file(), name
    world = load_world(load_config(config))
    assert len(world.profiles.msisdn) == SUBSCRIBERS
    # 11-digit mobile numbers of this operator's segments.
    assert all(len(str(m)) == 11 and m // 10**8 in OWN_SEGMENTS for m in world.profiles.msisdn.tolist())
    # Some CRBT peers are off-net: numbers that are not subscribers, of other operators'
    # segments (11 digits) or abroad (13 digits).
    offnet = set(world.lists["crbt_peers"].tolist()) - set(world.profiles.msisdn.tolist())
    domestic = {m for m in offnet if len(str(m)) == 11 and m // 10**8 in OTHER_SEGMENTS}
    abroad = {m for m in offnet if len(str(m)) == 13 and m // 10**8 in INTERNATIONAL_PREFIXES}
    assert domestic and abroad and domestic | abroad == offnet


def test_two_files_one_stream(tiny):
    _, _, traces = tiny
    assert len(traces) == 2
    first, second = (p.read_bytes() for p in traces)
    unpacker = msgpack.Unpacker()
    unpacker.feed(first)
    complete = list(unpacker)
    # The cut falls inside an event: the first file alone ends with part of one.
    assert complete and 0 < unpacker.tell() < len(first)
    unpacker.feed(second)
    events = complete + list(unpacker)
    assert len(events) == EVENTS
    assert all(isinstance(e, list) and len(e) == 8 for e in events)
    ts = [e[0] for e in events]
    assert ts == sorted(ts)


def test_deterministic(tiny, tmp_path):
    directory, _, traces = tiny
    _, again = build_demo_world(tmp_path, subscribers=SUBSCRIBERS, events=EVENTS)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in traces]
    for name in ("profiles.csv", "lists/crbt_peers.roar", "campaigns.toml"):
        assert (tmp_path / name).read_bytes() == (directory / name).read_bytes()
    _, other = build_demo_world(tmp_path / "other", subscribers=SUBSCRIBERS, events=EVENTS, seed=8)
    assert other[0].read_bytes() != traces[0].read_bytes()


def test_every_campaign_acts(replayed):
    engine, run = replayed
    assert run.stats["run"]["events"] == EVENTS
    assert sum(run.stats["run"]["bad_events"].values()) == 0
    per_campaign = {c.id: 0 for c in engine.campaigns}
    for campaign in run.action_columns()["campaign"]:
        per_campaign[campaign] += 1
    # every campaign but the retired one (enabled = false), which matches nothing
    retired = {c.id for c in engine.campaigns if not c.enabled}
    assert retired == {"summer_roaming"} and per_campaign["summer_roaming"] == 0
    assert all(n > 0 for cid, n in per_campaign.items() if cid not in retired), per_campaign
    assert {c.channel for c in engine.campaigns} == {"sms", "mms", "boss", "outbound", "popup"}
    assert len(run.conversions) > 0


def test_core_equals_reference_model(tiny, replayed):
    _, config, traces = tiny
    _, run = replayed
    cfg = load_config(config)
    world = load_world(cfg)
    model = ReferenceModel(cfg, world.profiles, world.lists, world.areas)
    for path in traces:
        model.feed(path.read_bytes())
    model.finish()
    model.drain()
    assert_same_outcome(run, model)        # actions, conversions, dead letters, funnels, counts
    assert model.late_events == run.stats["run"]["late_events"]
