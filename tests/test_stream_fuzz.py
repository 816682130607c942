"""The core's decoder and the reference model on arbitrary, mutated and cut msgpack streams:
the same dead letters (runs of repeated values, the record cap), the same stream error (offset
and reason), the same actions."""
import dataclasses
from pathlib import Path

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.api import Engine
from engine.language.compile import World
from engine.language.config import CampaignSpec, Config
from engine.errors import StreamError
from engine.model import ReferenceModel
from tests.backends import largest_of
from tests.worlds import Profiles

CONFIG = Config(path=Path("fuzz.toml"), campaigns=(CampaignSpec(id="c", on=tuple(range(1, 13)), channel="sms"),))
PROFILES = Profiles(Path("p"), np.array([13800000001], dtype=np.uint64), {}, None)
FIELD_NAMES = ["ts", "type", "msisdn", "peer", "cell", "dur", "flags", "arg", "x"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 63, 2 ** 64 - 1), st.floats(), st.text(max_size=20),
    st.binary(max_size=10),
    st.sampled_from(["CALL_MO_END", "SMS_MO", "13800000001", "ts", 1, 13800000001, 1767225600000]),
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=10)
    | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.integers(0, 3), children, max_size=9),
    max_leaves=30,
)


@st.composite
def streams(draw):
    parts = []
    for _ in range(draw(st.integers(1, 6))):
        # values repeated, so that runs of identical bad values are common
        parts += [msgpack.packb(draw(values), use_bin_type=True)] * draw(st.integers(1, 3))
    data = bytearray(b"".join(parts))
    for _ in range(draw(st.integers(0, 2))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.sampled_from([0xc1, 0x00, 0xff, 0x93, 0xdb, 0xa5, 0xc0]))
    if draw(st.booleans()) and data:
        data = data[:draw(st.integers(0, len(data)))]
    return (bytes(data), draw(st.sampled_from([16, 32, 64, 65536])), draw(st.integers(1, 64)),
            dataclasses.replace(CONFIG, max_dead_letters=draw(st.sampled_from([100_000, 0, 1, 2]))))


def core_outcome(data, max_event_bytes, chunk, config=CONFIG):
    engine = Engine(config, World(PROFILES, {}, {}), max_event_bytes=max_event_bytes)
    try:
        run = engine.replay(data[i:i + chunk] for i in range(0, len(data), chunk))
    except StreamError as e:
        run, error = e.run, (e.offset, e.reason)
    else:
        error = None
    dead = list(zip(*(column.tolist() for column in run.dead_letter_columns().values())))
    return error, dead, len(run.actions), run.stats["run"]["bad_events_by_field"], run.stats["run"]["late_events"], run.stats["run"]["bad_bytes"], largest_of(run.stats["run"]["largest_bad_value"])


def model_outcome(data, max_event_bytes, config=CONFIG):
    model = ReferenceModel(config, PROFILES, {}, {}, max_event_bytes=max_event_bytes)
    error = None
    try:
        model.feed(data)
        model.finish()
    except StreamError as e:
        error = (e.offset, e.reason)
    return error, list(model.dead_letters), len(model.actions), model.bad_events_by_field, model.late_events, model.bad_bytes, model.largest_bad_value


@settings(deadline=None, suppress_health_check=list(HealthCheck))
@given(streams())
def test_core_and_model_agree_on_any_stream(case):
    data, max_event_bytes, chunk, config = case
    assert core_outcome(data, max_event_bytes, chunk, config) == model_outcome(data, max_event_bytes, config)
