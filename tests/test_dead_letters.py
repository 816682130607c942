"""Dead letters have limits (SPEC §4), on the core and the reference model alike: a run of
identical bad values is one record with its count, each record names the field that failed,
at most max_dead_letters records start in one span of 2**26 stream bytes, and the records
depend on stream offsets alone: never on how the stream is cut into chunks, files,
checkpoints or reloads."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest

from engine.api import Engine
from engine.errors import StreamError
from engine.language.compile import World
from engine.language.config import CampaignSpec, Config
from engine.model import ReferenceModel
from engine.records import DEAD_LETTER_SPAN_BITS
from engine.service.checkpoint import CheckpointStore, restore_sections
from tests.worlds import Profiles, T0

SPAN = 1 << DEAD_LETTER_SPAN_BITS
A, STRANGER = 13800000001, 13900000009
CONFIG = Config(path=Path("dead.toml"), campaigns=(CampaignSpec(id="c", on=(1,), channel="sms"),))
PROFILES = Profiles(Path("p"), np.array([A], dtype=np.uint64), {}, None)

GOOD = msgpack.packb([T0, 1, A])
UNKNOWN_TYPE = msgpack.packb([T0, 99, A])
OTHER_UNKNOWN_TYPE = msgpack.packb([T0, 98, A])
NOT_AN_EVENT = msgpack.packb("hello")


def columns_of(run):
    return list(zip(*(column.tolist() for column in run.dead_letter_columns().values())))


class CoreSide:
    """The compiled core behind the API: replay over chunks, one stream."""
    name = "core"

    @staticmethod
    def letters(chunks, max_dead_letters=100_000, max_event_bytes=65536):
        config = dataclasses.replace(CONFIG, max_dead_letters=max_dead_letters)
        engine = Engine(config, World(PROFILES, {}, {}), max_event_bytes=max_event_bytes)
        run = engine.replay(iter(chunks))
        return columns_of(run), run.stats["run"]["bad_events"], run.stats["run"]["bad_events_by_field"]

    @staticmethod
    def bad_bytes(chunks, max_event_bytes=65536):
        """(bad_bytes, the StreamError's reason or None)."""
        engine = Engine(CONFIG, World(PROFILES, {}, {}), max_event_bytes=max_event_bytes)
        try:
            run = engine.replay(iter(chunks))
        except StreamError as e:
            return e.run.stats["run"]["bad_bytes"], e.reason
        return run.stats["run"]["bad_bytes"], None

    @staticmethod
    def largest(streams):
        """The largest bad value after each stream, fed to one engine: (offset where it
        begins, data)."""
        core, found = Engine(CONFIG, World(PROFILES, {}, {}))._core, []
        for offset, data in streams:
            core.begin_stream(offset)
            assert core.feed(data) == 0 and core.end_stream() == 0
            found.append(core.counts()["largest_bad_value"])
        return found


class ModelSide:
    name = "model"

    @staticmethod
    def letters(chunks, max_dead_letters=100_000, max_event_bytes=65536):
        config = dataclasses.replace(CONFIG, max_dead_letters=max_dead_letters)
        model = ReferenceModel(config, PROFILES, {}, {}, max_event_bytes=max_event_bytes)
        for chunk in chunks:
            model.feed(chunk)
        model.finish()
        return list(model.dead_letters), model.bad_events, model.bad_events_by_field

    @staticmethod
    def bad_bytes(chunks, max_event_bytes=65536):
        model = ReferenceModel(CONFIG, PROFILES, {}, {}, max_event_bytes=max_event_bytes)
        try:
            for chunk in chunks:
                model.feed(chunk)
            model.finish()
        except StreamError as e:
            return model.bad_bytes, e.reason
        return model.bad_bytes, None

    @staticmethod
    def largest(streams):
        model, found = ReferenceModel(CONFIG, PROFILES, {}, {}), []
        for offset, data in streams:
            model.begin_stream(offset)
            model.feed(data)
            model.finish()
            found.append(model.largest_bad_value)
        return found


@pytest.fixture(params=[CoreSide, ModelSide], ids=["core", "model"])
def side(request):
    return request.param


def records(side, data, **kw):
    return side.letters([data], **kw)[0]


def filler(nbytes: int) -> bytes:
    """Good events (of an unknown subscriber) of exactly `nbytes` bytes in all: each carries
    an ignored ninth element of up to 60,000 bytes."""
    parts = []
    while nbytes:
        head = msgpack.packb([T0, 1, STRANGER, 0, 0, 0, 0, 0])
        head = bytes([head[0] + 1]) + head[1:]       # nine elements
        size = min(nbytes, 60_000)
        for pad in range(max(size - len(head) - 2, 0), -1, -1):
            event = head + msgpack.packb(b"x" * pad, use_bin_type=True)
            rest = nbytes - len(event)
            if len(event) <= size and (rest == 0 or rest >= 32):
                break
        else:
            raise AssertionError(f"no filler of {nbytes} bytes")
        parts.append(event)
        nbytes -= len(event)
    return b"".join(parts)


def bad_value(nbytes: int) -> bytes:
    """One bad value (an unknown type) of exactly `nbytes` bytes (at least 27): a ninth,
    ignored element pads it."""
    head = msgpack.packb([T0, 99, A, 0, 0, 0, 0, 0])
    head = bytes([head[0] + 1]) + head[1:]
    for pad in range(nbytes, -1, -1):
        value = head + msgpack.packb(b"x" * pad, use_bin_type=True)
        if len(value) == nbytes:
            return value
    raise AssertionError(f"no bad value of {nbytes} bytes")


# ------------------------------------------------------------------------- the bytes inside

@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_bad_bytes_are_the_bytes_of_the_bad_values_however_the_stream_is_cut(side, chunk):
    data = GOOD + UNKNOWN_TYPE * 3 + NOT_AN_EVENT + GOOD + b"\x00" * 5 + GOOD
    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    assert side.bad_bytes(chunks) == (3 * len(UNKNOWN_TYPE) + len(NOT_AN_EVENT) + 5, None)
    assert side.bad_bytes([GOOD * 3]) == (0, None)


def test_a_damaged_header_makes_one_bad_value_of_the_events_after_it_and_its_bytes_say_so(side):
    """A byte read as an array header of 2 takes the two events after it into one value (its
    ts is an array: wrong_type), counted once: its bytes show what the count hides."""
    data = GOOD + b"\x92" + GOOD * 2 + GOOD
    got, bad, _ = side.letters([data])
    assert bad["wrong_type"] == 1 and sum(bad.values()) == 1
    assert side.bad_bytes([data]) == (1 + 2 * len(GOOD), None)


def test_the_largest_bad_value_is_the_first_of_its_size_and_its_stream_s(side):
    """Where a damaged header is: the stream's largest bad value, the first of the largest
    size (one byte more is larger, one byte less is not), kept by a stream that goes on from
    an offset (the service after a corrupt file), forgotten by a new stream from 0."""
    first = GOOD + bad_value(40) + GOOD + bad_value(41) + bad_value(41) + bad_value(40)
    at = len(GOOD) + 40 + len(GOOD)
    assert side.largest([(0, first)]) == [{"offset": at, "bytes": 41}]
    assert side.largest([(0, GOOD * 2)]) == [None]
    later = len(first) + 7
    assert side.largest([(0, first), (later, bad_value(41) + GOOD), (later + 99, bad_value(42))]) == [
        {"offset": at, "bytes": 41}, {"offset": at, "bytes": 41}, {"offset": later + 99, "bytes": 42}]
    assert side.largest([(0, first), (0, bad_value(30))]) == [{"offset": at, "bytes": 41}, {"offset": 0, "bytes": 30}]


@pytest.mark.parametrize("size, counted", [(64, 64), (65, 0)])
def test_a_bad_value_of_max_event_bytes_is_counted_whole_and_one_byte_more_breaks_the_stream(side, size, counted):
    data = GOOD + bad_value(size) + GOOD
    assert len(bad_value(size)) == size
    assert side.bad_bytes([data], max_event_bytes=64) == (counted, None if counted else "too_large")


# ------------------------------------------------------------------------- runs and fields

def test_a_run_of_identical_bad_values_is_one_record(side):
    data = (GOOD + UNKNOWN_TYPE * 3 + NOT_AN_EVENT + UNKNOWN_TYPE * 2 + GOOD + UNKNOWN_TYPE
            + OTHER_UNKNOWN_TYPE + b"\x00" * 5)
    start = len(GOOD)
    got, bad, by_field = side.letters([data])
    second = start + 3 * len(UNKNOWN_TYPE)
    third = second + len(NOT_AN_EVENT)
    fourth = third + 2 * len(UNKNOWN_TYPE) + len(GOOD)
    assert got == [
        (start, "unknown_type", "type", 3, UNKNOWN_TYPE.hex()),
        (second, "not_an_event", "", 1, NOT_AN_EVENT.hex()),
        (third, "unknown_type", "type", 2, UNKNOWN_TYPE.hex()),       # a different value came between
        (fourth, "unknown_type", "type", 1, UNKNOWN_TYPE.hex()),      # a good event came between
        (fourth + len(UNKNOWN_TYPE), "unknown_type", "type", 1, OTHER_UNKNOWN_TYPE.hex()),   # other bytes
        (fourth + 2 * len(UNKNOWN_TYPE), "not_an_event", "", 5, "00"),
    ]
    assert bad["unknown_type"] == 7 and bad["not_an_event"] == 6      # every bad event is counted
    assert by_field == {"unknown_type": {"type": 7}, "not_an_event": {"": 6}}


@pytest.mark.parametrize("event, reason, field", [
    (42, "not_an_event", ""),
    ([T0, 1], "missing_field", "msisdn"),
    ({"ts": T0, "msisdn": A}, "missing_field", "type"),
    ([None, 1, A], "missing_field", "ts"),
    ([1.5, 1, A], "wrong_type", "ts"),
    ([T0, 1, A, [1]], "wrong_type", "peer"),
    ([T0, 1, A, 0, "5"], "wrong_type", "cell"),
    ([T0, 1, A, 0, 0, 1.0], "wrong_type", "dur"),
    ([T0, 1, A, 0, 0, 0, -1], "out_of_range", "flags"),
    ([T0, 1, A, 0, 0, 0, 0, b"\x01"], "wrong_type", "arg"),
    ([T0, 1, 0], "out_of_range", "msisdn"),
    ([T0, 1, A, 0, 2 ** 32], "out_of_range", "cell"),
    ([T0, 1, A, "0123"], "bad_number", "peer"),
    ([T0, "NO_SUCH_TYPE", A], "unknown_type", "type"),
    ([-1, 99, "x"], "out_of_range", "ts"),                      # the first failing field decides
])
def test_each_record_names_the_field_that_failed(side, event, reason, field):
    data = msgpack.packb(event, use_bin_type=True)
    assert records(side, data) == [(0, reason, field, 1, data.hex())]


def test_a_duplicate_key_names_the_first_key_given_twice(side):
    pairs = [("ts", T0), ("type", 1), ("msisdn", A), ("cell", 1), ("ts", 1), ("cell", 2)]
    data = bytes([0x80 | len(pairs)]) + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in pairs)
    assert records(side, data) == [(0, "duplicate_key", "ts", 1, data.hex())]


def test_bytes_are_cut_to_64_and_only_whole_values_join_a_run(side):
    long_bad = msgpack.packb([T0, 99, A, 0, 0, 0, 0, 0, "z" * 200])
    other = msgpack.packb([T0, 99, A, 0, 0, 0, 0, 0, "z" * 199 + "y"])      # same first 64 bytes
    got = records(side, long_bad * 2 + other)
    assert got == [(0, "unknown_type", "type", 2, long_bad[:64].hex()),
                   (2 * len(long_bad), "unknown_type", "type", 1, other[:64].hex())]


RUNS = GOOD + UNKNOWN_TYPE * 4 + b"\x00" * 3 + NOT_AN_EVENT * 2 + GOOD + b"\xc0" * 2 + UNKNOWN_TYPE


def test_runs_split_at_every_byte_give_the_same_records(side):
    whole = side.letters([RUNS])
    assert len(whole[0]) == 5
    for cut in range(1, len(RUNS)):
        assert side.letters([RUNS[:cut], RUNS[cut:]]) == whole, cut
    for a in range(1, len(RUNS), 7):
        for b in range(a + 1, len(RUNS), 5):
            assert side.letters([RUNS[:a], RUNS[a:b], RUNS[b:]]) == whole, (a, b)
    assert side.letters([RUNS[i:i + 1] for i in range(len(RUNS))]) == whole


def test_a_run_split_across_two_files_is_one_record(tmp_path):
    engine = lambda: Engine(CONFIG, World(PROFILES, {}, {}))
    whole = columns_of(engine().replay(RUNS))
    for cut in range(1, len(RUNS)):
        first, second = tmp_path / f"a{cut}.msgpack", tmp_path / f"b{cut}.msgpack"
        first.write_bytes(RUNS[:cut])
        second.write_bytes(RUNS[cut:])
        assert columns_of(engine().replay([first, second])) == whole, cut


def test_a_zero_filled_stream_is_one_record_in_any_chunks(side):
    zeros = b"\x00" * 5000
    expected = [(0, "not_an_event", "", 5000, "00")]
    assert records(side, zeros) == expected
    assert side.letters([zeros[:1], zeros[1:2500], zeros[2500:]])[0] == expected


# ------------------------------------------------------------------------- the cap per span

@pytest.mark.parametrize("limit", [0, 1, 3])
@pytest.mark.parametrize("distinct", [-1, 0, 1])
def test_the_cap_one_record_either_side_of_the_limit(side, limit, distinct):
    """`limit + distinct` different bad values: at most `limit` records, all of them counted."""
    values = [msgpack.packb([T0, 90 + k, A]) for k in range(max(limit + distinct, 0))]
    got, bad, by_field = side.letters([b"".join(values)], max_dead_letters=limit)
    offsets = np.cumsum([0] + [len(v) for v in values])[:-1]
    written = min(len(values), limit)
    assert got == [(int(o), "unknown_type", "type", 1, v.hex()) for o, v in zip(offsets, values)][:written]
    assert bad["unknown_type"] == len(values)
    assert by_field == ({"unknown_type": {"type": len(values)}} if values else {})


def test_the_cap_counts_records_not_values(side):
    data = UNKNOWN_TYPE * 10 + OTHER_UNKNOWN_TYPE + UNKNOWN_TYPE
    got, bad, _ = side.letters([data], max_dead_letters=1)
    assert got == [(0, "unknown_type", "type", 10, UNKNOWN_TYPE.hex())]
    assert bad["unknown_type"] == 12


def test_a_span_boundary_resets_the_cap(side):
    """With max_dead_letters = 1: the second record of span 0 is dropped, the first that
    starts at 2**26 is written."""
    first, late = b"\xc2", b"\xc3"              # false, true: not events
    data = UNKNOWN_TYPE + OTHER_UNKNOWN_TYPE
    data += filler(SPAN - 1 - len(data)) + late      # a record of span 0: over the cap
    assert len(data) == SPAN
    data += first + late + first
    got, bad, _ = side.letters([data], max_dead_letters=1)
    assert got == [(0, "unknown_type", "type", 1, UNKNOWN_TYPE.hex()),
                   (SPAN, "not_an_event", "", 1, first.hex())]
    assert bad == {**dict.fromkeys(bad, 0), "unknown_type": 2, "not_an_event": 4}


@pytest.mark.parametrize("limit", [1, 2])
def test_a_run_across_a_span_boundary_is_one_record_of_its_first_span(side, limit):
    data = UNKNOWN_TYPE + filler(SPAN - 3 - len(UNKNOWN_TYPE)) + b"\xc2" * 7 + b"\xc3"
    got, bad, _ = side.letters([data[:SPAN - 1], data[SPAN - 1:]], max_dead_letters=limit)
    across = [(SPAN - 3, "not_an_event", "", 7, "c2")] if limit == 2 else []    # span 0's second record
    assert got == [(0, "unknown_type", "type", 1, UNKNOWN_TYPE.hex()), *across,
                   (SPAN + 4, "not_an_event", "", 1, "c3")]      # span 1 starts with room
    assert bad["not_an_event"] == 8


def test_decode_applies_runs_and_the_cap_to_its_own_data():
    engine = Engine(dataclasses.replace(CONFIG, max_dead_letters=2), World(PROFILES, {}, {}))
    core = engine._core
    core.begin_stream()
    assert core.feed(UNKNOWN_TYPE * 2) == 0          # the fed stream's run stays open
    events, status, _ = core.decode(GOOD + b"\x00" * 4 + GOOD + NOT_AN_EVENT + OTHER_UNKNOWN_TYPE)
    assert len(events) == 2 and status == 0
    got = core.take_dead_letters()
    assert [(int(d["offset"]), int(d["count"])) for d in got] == [(len(GOOD), 4), (2 * len(GOOD) + 4, 1)]
    assert core.end_stream() == 0
    assert [(int(d["offset"]), int(d["count"])) for d in core.take_dead_letters()] == [(0, 2)]


# ------------------------------------------------------------------------- 64 MiB of zeros

def test_a_zero_filled_64_mib_stream_gives_one_record_in_bounded_memory(tmp_path):
    """Issue 8 item 10: a probe writing zeros made 67M records (1.7 GB of CSV, 1.47 GB of
    RSS). Run in a child process, so that its peak RSS is this replay's own."""
    script = f"""
import json, resource
from pathlib import Path
import numpy as np
from engine.api import Engine
from engine.language.compile import World
from engine.language.config import CampaignSpec, Config
from tests.worlds import Profiles
config = Config(path=Path("z.toml"), campaigns=(CampaignSpec(id="c", on=(1,), channel="sms"),))
engine = Engine(config, World(Profiles(Path("p"), np.array([13800000001], dtype=np.uint64), {{}}, None), {{}}, {{}}))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
zeros = bytes(1 << 20)
run = engine.replay((zeros for _ in range(64)), out=Path({str(tmp_path / "out")!r}), keep=False)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"grew_kib": after - before, "run": run.stats["run"]}}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["run"]["bad_events"]["not_an_event"] == 1 << 26
    assert result["run"]["bad_events_by_field"] == {"not_an_event": {"": 1 << 26}}
    assert result["run"]["dead_letters"] == 1
    files = list((tmp_path / "out" / "dead_letters").iterdir())
    assert len(files) == 1
    assert files[0].read_text() == f"offset,reason,field,count,bytes_hex\n0,not_an_event,,{1 << 26},00\n"
    # one record per run: the 64 MiB went through in 1 MiB chunks, nothing grew with them
    assert result["grew_kib"] < 64 << 10


# ------------------------------------------------------------------------- checkpoints, reloads

def fed(core, data):
    core.begin_stream()
    assert core.feed(data) == 0
    core.take_actions()
    core.take_conversions()
    return core.take_dead_letters()


def rest(core, data):
    assert core.feed(data) == 0 and core.end_stream() == 0
    return core.take_dead_letters()


def as_rows(*parts):
    return [(int(d["offset"]), int(d["count"]), int(d["reason"]), int(d["field"]),
             bytes(d["bytes"][:d["nbytes"]])) for part in parts for d in part]


def test_a_checkpoint_carries_the_open_run_at_every_cut(tmp_path):
    fresh = lambda: Engine(dataclasses.replace(CONFIG, max_dead_letters=3), World(PROFILES, {}, {}))
    reference = fresh()._core
    whole = as_rows(fed(reference, RUNS), rest(reference, b""))
    assert len(whole) == 3                      # the cap took two of the five runs
    for cut in range(1, len(RUNS)):
        original = fresh()
        first = fed(original._core, RUNS[:cut])
        path = original.checkpoint(tmp_path / f"{cut}.ckpt")
        restored = fresh()
        restored.restore(path)
        assert as_rows(first, rest(restored._core, RUNS[cut:])) == whole, cut
        assert restored._core.counts()["bad_bytes"] == reference.counts()["bad_bytes"] > 0, cut
        assert restored._core.counts()["largest_bad_value"] == reference.counts()["largest_bad_value"], cut


def test_incremental_checkpoint_records_carry_the_open_run(tmp_path):
    fresh = lambda: Engine(CONFIG, World(PROFILES, {}, {}))
    reference = fresh()._core
    whole = as_rows(fed(reference, RUNS), rest(reference, b""))
    first_cut, second_cut = len(GOOD) + 2, len(GOOD) + 4 * len(UNKNOWN_TYPE) + 1    # both inside runs
    engine = fresh()
    (tmp_path / "state").mkdir()
    store = CheckpointStore(tmp_path / "state")
    first = fed(engine._core, RUNS[:first_cut])
    assert store.save(engine)["kind"] == "base"
    assert engine._core.feed(RUNS[first_cut:second_cut]) == 0
    engine._core.take_actions()
    middle = engine._core.take_dead_letters()
    assert store.save(engine)["kind"] == "record"
    loaded = CheckpointStore(tmp_path / "state").load()
    restored = fresh()
    restore_sections(restored, loaded.header, loaded.sections, loaded.path)
    assert loaded.header["scalars"]["dead_run"]["count"] == 1 and len(loaded.sections["dead_run"])
    assert as_rows(first, middle, rest(restored._core, RUNS[second_cut:])) == whole
    assert restored._core.counts()["bad_events_by_field"] == reference.counts()["bad_events_by_field"]
    assert restored._core.counts()["bad_bytes"] == reference.counts()["bad_bytes"] > 0


def test_a_checkpoint_without_dead_letter_state_restores_with_no_run_open(tmp_path):
    """What a sigmatch before dead-letter runs wrote: no dead_run or bad_fields section, and
    no bad_bytes (counted from the restore on)."""
    engine = Engine(CONFIG, World(PROFILES, {}, {}))
    fed(engine._core, GOOD + NOT_AN_EVENT + GOOD)
    scalars = engine._core.state_scalars()
    assert scalars["bad_bytes"] == len(NOT_AN_EVENT)
    del scalars["dead_run"], scalars["bad_bytes"], scalars["largest_bad_value"]
    sections = {name: array for name, array in engine._core.state_sections()
                if name not in ("dead_run", "bad_fields")}
    restored = Engine(CONFIG, World(PROFILES, {}, {}))
    restored._core.restore_state(scalars, sections)
    assert as_rows(rest(restored._core, UNKNOWN_TYPE)) == [(2 * len(GOOD) + len(NOT_AN_EVENT), 1, 5, 1, UNKNOWN_TYPE)]
    assert restored._core.counts()["bad_bytes"] == len(UNKNOWN_TYPE)
    assert restored._core.counts()["largest_bad_value"] == {"offset": 2 * len(GOOD) + len(NOT_AN_EVENT),
                                                            "bytes": len(UNKNOWN_TYPE)}


def test_a_reload_carries_the_open_run(tmp_path):
    (tmp_path / "profiles.csv").write_text(f"msisdn\n{A}\n")
    config = tmp_path / "campaigns.toml"
    config.write_text('[engine]\nprofiles = "profiles.csv"\nmax_dead_letters = 3\n\n'
                      '[[campaign]]\nid = "c"\non = ["CALL_MO_END"]\nchannel = "sms"\n')
    reference = Engine.from_config(config)._core
    whole = as_rows(fed(reference, RUNS), rest(reference, b""))
    for cut in range(1, len(RUNS), 3):
        engine = Engine.from_config(config)
        first = fed(engine._core, RUNS[:cut])
        reloaded = engine.reload()
        assert as_rows(first, rest(reloaded._core, RUNS[cut:])) == whole, cut
        assert reloaded._core.counts()["bad_bytes"] == reference.counts()["bad_bytes"] > 0, cut
        assert reloaded._core.counts()["largest_bad_value"] == reference.counts()["largest_bad_value"], cut


def test_a_new_stream_from_an_offset_keeps_offsets_unique_and_the_cap(tmp_path):
    """begin_stream(offset), as the service uses it after a corrupt file: the next stream's
    offsets go on from there and the span's cap still holds; from 0 the spans start afresh.
    The core and the model agree."""
    from engine.model import StreamError
    values = [msgpack.packb([T0, 90 + k, A]) for k in range(5)]
    broken = b"".join(values) + b"\xc1"
    config = dataclasses.replace(CONFIG, max_dead_letters=8)

    def core_side(starts):
        core = Engine(config, World(PROFILES, {}, {}))._core
        got = []
        for start in starts:
            core.begin_stream(start)
            assert core.feed(broken) != 0
            core.take_actions()
            core.take_conversions()
            got += [(int(d["offset"]), int(d["count"])) for d in core.take_dead_letters()]
        return got

    def model_side(starts):
        model = ReferenceModel(config, PROFILES, {}, {})
        for start in starts:
            model.begin_stream(start)
            with pytest.raises(StreamError):
                model.feed(broken)
        return [(offset, count) for offset, _, _, count, _ in model.dead_letters]

    on = [i * len(broken) for i in range(3)]
    expected = [(start + int(o), 1) for start in on
                for o in np.cumsum([0] + [len(v) for v in values])[:-1]][:8]
    assert core_side(on) == model_side(on) == expected
    # from 0 each time: the spans start afresh (8 records a stream, offsets repeat)
    assert core_side([0, 0]) == model_side([0, 0]) == expected[:5] * 2
