"""An event split across two reads is decoded once, whole: a small stream split at every
byte position, and fed one byte at a time, gives exactly the actions of the whole stream."""
from pathlib import Path

import msgpack
import numpy as np
import pytest

from engine.api import Engine
from engine.language.compile import World
from engine.language.config import CampaignSpec, Config, CounterSpec
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
    return (run.actions.tobytes(), list(zip(*(column.tolist() for column in run.dead_letter_columns().values()))),
            run.stats["run"]["events"], run.stats["run"]["bad_events_by_field"])


WHOLE = outcome([STREAM])


def test_the_stream_does_something():
    actions, dead, events, bad = WHOLE
    assert len(actions) // 40 == 5 and len(dead) == 2 and events == 6
    assert bad == {"not_an_event": {"": 1}, "unknown_type": {"type": 1}}


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_at_every_byte(cut):
    assert outcome([STREAM[:cut], STREAM[cut:]]) == WHOLE


def test_one_byte_at_a_time():
    assert outcome(STREAM[i:i + 1] for i in range(len(STREAM))) == WHOLE


def test_empty_chunks_change_nothing():
    assert outcome([b"", STREAM[:17], b"", STREAM[17:], b""]) == WHOLE


def big_event(form: str, type_code: int) -> bytes:
    """One event of just under 64 KiB made of many small values (the case that a decoder which
    re-reads a carried event from its start on every chunk makes quadratic)."""
    if form == "array":
        return msgpack.packb([T0, type_code, 13800000001, 0, 7, 0, 0, 0, [1] * 65_000])
    return msgpack.packb({"ts": T0, "type": type_code, "msisdn": 13800000001, "cell": 7,
                          "pad": {i: 0 for i in range(16_000)}})


def fed_to_core(chunks):
    engine = Engine(CONFIG, World(Profiles(Path("p"), SUBSCRIBERS, {}, None), {}, AREAS))
    core = engine._core
    core.begin_stream()
    status = 0
    for chunk in chunks:
        status = core.feed(chunk)
        if status:
            break           # as the API does: nothing after a broken stream is read
    else:
        status = core.end_stream()
    return (status, core.error_offset if status else None, core.take_actions().tobytes(),
            core.take_dead_letters().tobytes(), core.counts())


@pytest.mark.parametrize("form", ["array", "map"])
@pytest.mark.parametrize("type_code", [1, 99])       # a good event, a bad one (unknown type)
def test_a_64_kib_event_fed_one_byte_at_a_time_equals_it_whole(form, type_code):
    event = big_event(form, type_code)
    assert 60_000 < len(event) <= 65_536
    data = event + EVENTS[0] + event
    whole = fed_to_core([data])
    assert whole[0] == 0
    assert whole[4]["events"] + sum(whole[4]["bad_events"].values()) == 3
    assert fed_to_core(data[i:i + 1] for i in range(len(data))) == whole
    assert fed_to_core(data[i:i + 4093] for i in range(0, len(data), 4093)) == whole


def test_an_event_too_large_is_found_at_the_same_byte_however_fed():
    event = msgpack.packb([T0, 1, 13800000001, 0, 7, 0, 0, 0, [1] * 65_600])
    whole = fed_to_core([EVENTS[0] + event])
    assert whole[:2] == (2, len(EVENTS[0]))             # too_large, at the event's start
    assert fed_to_core((EVENTS[0] + event)[i:i + 1] for i in range(len(EVENTS[0] + event))) == whole
