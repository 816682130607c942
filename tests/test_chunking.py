"""An event split across two reads is decoded once, whole: a small stream split at every
byte position, and fed one byte at a time, gives exactly the actions of the whole stream."""
from pathlib import Path

import msgpack
import numpy as np
import pytest

from engine.api import Engine
from engine.compile import World
from engine.config import CampaignSpec, Config, CounterSpec
from engine.records import BAD_REASONS
from tests.worlds import Profiles, T0

SUBSCRIBERS = np.array([13800000001, 13800000002, 13800000003], dtype=np.uint64)
CONFIG = Config(
    path=Path("chunks.toml"),
    counters=(CounterSpec("sms", (3,), 0, "count", None),),
    campaigns=(
        CampaignSpec(id="now", on=(1, 3), channel="sms", counter="sms", at_least=1, cooldown_ms=1),
        CampaignSpec(id="later", on=(6,), channel="boss", delay_ms=60_000, area="a", recheck=frozenset({"area"})),
    ),
)
AREAS = {"a": np.array([7, 8], dtype=np.uint32)}

EVENTS = [
    msgpack.packb([T0, 3, 13800000001, 0, 7]),
    msgpack.packb({"type": "SMS_MO", "msisdn": "13800000002", "ts": T0 + 10, "note": {"x": [1, 2, 3]}}),
    msgpack.packb([T0 + 20, 99, 13800000003]),                       # unknown type: dead letter
    msgpack.packb([T0 + 30, "LOCATION_UPDATE", 13800000003, None, 8, 0, 0, 0, "extra", 1.5]),
    b"\xcf" + (T0 + 40).to_bytes(8, "big"),                          # not an event
    msgpack.packb([T0 + 50, 1, 13800000002, 13800000001, 2 ** 32 - 1, 2 ** 64 - 1, 7, 2 ** 63]),
    b"\x98\xd3" + (T0 + 60).to_bytes(8, "big") + b"\xd0\x03\xcf" + (13800000001).to_bytes(8, "big")
    + b"\xc0\xce\x00\x00\x00\x07\xcd\x01\x00\xcc\x01\xd2\x00\x00\x00\x05",
    msgpack.packb([T0 + 200_000, 4, 13800000009]),                   # unknown subscriber, fires the timer
]
STREAM = b"".join(EVENTS)


def outcome(chunks):
    engine = Engine(CONFIG, World(Profiles(Path("p"), SUBSCRIBERS, {}, None), {}, AREAS))
    run = engine.replay(iter(chunks), drain=True)
    return (run.actions.tobytes(), [(int(d["offset"]), BAD_REASONS[d["reason"]]) for d in run.dead_letters],
            run.stats["run"]["events"])


WHOLE = outcome([STREAM])


def test_the_stream_does_something():
    actions, dead, events = WHOLE
    assert len(actions) // 40 == 5 and len(dead) == 2 and events == 6


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_at_every_byte(cut):
    assert outcome([STREAM[:cut], STREAM[cut:]]) == WHOLE


def test_one_byte_at_a_time():
    assert outcome(STREAM[i:i + 1] for i in range(len(STREAM))) == WHOLE


def test_empty_chunks_change_nothing():
    assert outcome([b"", STREAM[:17], b"", STREAM[17:], b""]) == WHOLE
