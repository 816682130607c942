"""The core's msgpack decoder on hand-made bytes: every integer encoding, every reason, limits."""
import struct

import msgpack
import pytest

from engine._core import Core
from engine.language.config import EVENT_TYPES
from engine.records import BAD_REASONS

FIELDS = ("ts", "type", "msisdn", "peer", "cell", "dur", "flags", "arg")
GOOD = [1_700_000_000_000, 1, 13800138000, 13900139000, 4242, 65, 3, 3001]


def core(**kw):
    c = Core(**kw)
    c.set_event_types({**EVENT_TYPES, "APP_OPEN": 40})
    return c


def decode(data, **kw):
    c = core(**kw)
    events, status, offset = c.decode(data)
    return c, events, status, offset


def reasons(c):
    return [(int(d["offset"]), BAD_REASONS[d["reason"]]) for d in c.take_dead_letters()]


def event_tuple(e):
    return tuple(int(e[f]) for f in FIELDS)


def uint_encodings(v):
    """Every msgpack encoding of a non-negative integer that can hold it."""
    out = []
    if v < 128:
        out.append(bytes([v]))
    if v < 1 << 8:
        out.append(b"\xcc" + struct.pack(">B", v))
    if v < 1 << 16:
        out.append(b"\xcd" + struct.pack(">H", v))
    if v < 1 << 32:
        out.append(b"\xce" + struct.pack(">I", v))
    out.append(b"\xcf" + struct.pack(">Q", v))
    if v < 1 << 7:
        out.append(b"\xd0" + struct.pack(">b", v))
    if v < 1 << 15:
        out.append(b"\xd1" + struct.pack(">h", v))
    if v < 1 << 31:
        out.append(b"\xd2" + struct.pack(">i", v))
    if v < 1 << 63:
        out.append(b"\xd3" + struct.pack(">q", v))
    return out


def neg_encodings(v):
    assert v < 0
    out = []
    if v >= -32:
        out.append(struct.pack(">b", v))
    if v >= -128:
        out.append(b"\xd0" + struct.pack(">b", v))
    if v >= -(1 << 15):
        out.append(b"\xd1" + struct.pack(">h", v))
    if v >= -(1 << 31):
        out.append(b"\xd2" + struct.pack(">i", v))
    out.append(b"\xd3" + struct.pack(">q", v))
    return out


def array_event(encoded_fields):
    assert len(encoded_fields) < 16
    return bytes([0x90 | len(encoded_fields)]) + b"".join(encoded_fields)


def packed(values):
    return [msgpack.packb(v) for v in values]


# An event alone in its buffer takes the decoder's general path (the fast path for an array
# of 8 unsigned integers needs 73 bytes in the buffer); the same event followed by others
# takes the fast path where it applies. Every case below runs both ways, and the outcome
# must be the same.
TAILS = {"alone": b"", "followed": msgpack.packb(GOOD) * 2}


def first_event(events):
    return [event_tuple(e) for e in events[:1]]


@pytest.mark.parametrize("tail", TAILS.values(), ids=TAILS.keys())
@pytest.mark.parametrize("field", range(8))
def test_every_integer_encoding_of_every_field(field, tail):
    small = [5, 1, 7, 9, 11, 13, 1, 17]
    for v in sorted({small[field], GOOD[field]}):
        for enc in uint_encodings(v):
            fields = packed(GOOD)
            fields[field] = enc
            c, events, status, _ = decode(array_event(fields) + tail)
            assert status == 0 and reasons(c) == []
            expected = list(GOOD)
            expected[field] = v
            assert first_event(events) == [tuple(expected)], enc.hex()
            assert len(events) == 1 + len(tail) // len(msgpack.packb(GOOD))


@pytest.mark.parametrize("tail", TAILS.values(), ids=TAILS.keys())
@pytest.mark.parametrize("field", range(8))
def test_negative_numbers_are_out_of_range_in_every_encoding(field, tail):
    for v in (-1, -32, -33, -200, -40000, -(1 << 40)):
        for enc in neg_encodings(v):
            fields = packed(GOOD)
            fields[field] = enc
            c, events, status, _ = decode(array_event(fields) + tail)
            assert status == 0 and len(events) == len(tail) // len(msgpack.packb(GOOD))
            assert reasons(c) == [(0, "out_of_range")]


def test_the_widest_array_of_integers_fills_the_fast_path_exactly():
    # 8 uint64s: 73 bytes, the most the fast path reads, with nothing after them
    event = b"\x98" + b"".join(b"\xcf" + struct.pack(">Q", v) for v in GOOD)
    assert len(event) == 73
    for data in (event, event + msgpack.packb(GOOD), event * 3):
        c, events, status, _ = decode(data)
        assert status == 0 and reasons(c) == [] and first_event(events) == [tuple(GOOD)]
        assert len(events) == (3 if data == event * 3 else 1 if data == event else 2)


def test_the_widest_array_cut_anywhere_is_truncated():
    # the fast path never reads past the buffer's end: a cut event waits for more bytes
    event = b"\x98" + b"".join(b"\xcf" + struct.pack(">Q", v) for v in GOOD)
    good = msgpack.packb(GOOD)
    for cut in range(1, len(event)):
        c, events, status, offset = decode(good + event[:cut])
        assert (status, offset, len(events)) == (3, len(good), 1), cut


@pytest.mark.parametrize("max_event_bytes", [45, 72, 73, 74])
def test_the_fast_path_keeps_max_event_bytes(max_event_bytes):
    # the widest event is 73 bytes: too large under a lower limit, whichever path reads it
    event = b"\x98" + b"".join(b"\xcf" + struct.pack(">Q", v) for v in GOOD)
    c, events, status, offset = decode(event + event, max_event_bytes=max_event_bytes)
    if max_event_bytes < 73:
        assert (status, offset, len(events)) == (2, 0, 0)
    else:
        assert status == 0 and len(events) == 2


@pytest.mark.parametrize("field,value,reason", [
    (0, 1 << 53, "out_of_range"),
    (0, (1 << 53) - 1, None),
    (1, 13, "unknown_type"),
    (1, 40, None),
    (1, 31, "unknown_type"),
    (1, 63, "unknown_type"),
    (1, 64, "unknown_type"),
    (1, 1 << 40, "unknown_type"),
    (2, 0, "out_of_range"),
    (2, 10 ** 15, "out_of_range"),
    (2, 10 ** 15 - 1, None),
    (2, 1, None),
    (3, 0, None),
    (3, 10 ** 15 - 1, None),
    (3, 10 ** 15, "out_of_range"),
    (4, (1 << 32) - 1, None),
    (4, 1 << 32, "out_of_range"),
    (5, (1 << 64) - 1, None),
    (6, (1 << 64) - 1, None),
    (7, (1 << 64) - 1, None),
])
@pytest.mark.parametrize("tail", TAILS.values(), ids=TAILS.keys())
def test_ranges(field, value, reason, tail):
    values = list(GOOD)
    values[field] = value
    c, events, status, _ = decode(msgpack.packb(values) + tail)
    assert status == 0
    if reason is None:
        assert first_event(events) == [tuple(values)]
        assert reasons(c) == []
    else:
        assert reasons(c) == [(0, reason)]
        assert len(events) == len(tail) // len(msgpack.packb(GOOD))


@pytest.mark.parametrize("tail", TAILS.values(), ids=TAILS.keys())
@pytest.mark.parametrize("bad", [True, False, 1.5, b"\x01", msgpack.ExtType(5, b"xy"), [1], {"a": 1}])
@pytest.mark.parametrize("field", range(8))
def test_wrong_types(field, bad, tail):
    values = list(GOOD)
    values[field] = bad
    c, events, status, _ = decode(msgpack.packb(values, use_bin_type=True) + tail)
    assert status == 0 and len(events) == len(tail) // len(msgpack.packb(GOOD))
    assert reasons(c) == [(0, "wrong_type")]


def test_strings_where_only_integers_are_allowed():
    for field in (0, 4, 5, 6, 7):
        values = list(GOOD)
        values[field] = "12"
        c, _, _, _ = decode(msgpack.packb(values))
        assert reasons(c) == [(0, "wrong_type")]


def test_digit_strings_and_type_names():
    data = msgpack.packb([1000, "CALL_MO_END", "13800138000", "8613900139000", 1])
    c, events, status, _ = decode(data)
    assert [event_tuple(e) for e in events] == [(1000, 1, 13800138000, 8613900139000, 1, 0, 0, 0)]
    data = msgpack.packb([1000, "APP_OPEN", "999999999999999"])
    c, events, status, _ = decode(data)
    assert int(events[0]["type"]) == 40 and int(events[0]["msisdn"]) == 999999999999999


@pytest.mark.parametrize("value,reason", [
    ("", "bad_number"), ("0", "bad_number"), ("0138", "bad_number"), ("1380013800x", "bad_number"),
    ("1234567890123456", "bad_number"), ("+8613800138000", "bad_number"), (" 138", "bad_number"),
])
def test_bad_digit_strings(value, reason):
    for field in (2, 3):
        values = list(GOOD)
        values[field] = value
        c, _, _, _ = decode(msgpack.packb(values))
        assert reasons(c) == [(0, reason)]


def test_type_names_match_exactly():
    for name in ("call_mo_end", "CALL_MO_END ", "NOPE", ""):
        c, _, _, _ = decode(msgpack.packb([1, name, 138]))
        assert reasons(c) == [(0, "unknown_type")]


def test_invalid_utf8_only_matters_where_read():
    bad_utf8 = b"\xa2\xff\xfe"   # fixstr of 2 invalid bytes
    # in the type field it names no type
    c, events, _, _ = decode(b"\x93\x01" + bad_utf8 + b"\x05")
    assert reasons(c) == [(0, "unknown_type")]
    # in an unknown key or an extra element it is skipped unread
    m = b"\x84\xa2ts\x01\xa4type\x01\xa6msisdn\x05" + bad_utf8 + bad_utf8
    c, events, _, _ = decode(m)
    assert reasons(c) == [] and len(events) == 1
    c, events, _, _ = decode(b"\x99" + b"\x01\x01\x05" + b"\x00" * 5 + bad_utf8)
    assert reasons(c) == [] and len(events) == 1


def test_missing_fields_and_nil():
    cases = [
        ([], "missing_field"), ([1], "missing_field"), ([1, 1], "missing_field"),
        ([None, 1, 5], "missing_field"), ([1, None, 5], "missing_field"), ([1, 1, None], "missing_field"),
        ({"ts": 1, "type": 1}, "missing_field"), ({"type": 1, "msisdn": 5}, "missing_field"),
    ]
    for value, reason in cases:
        c, _, _, _ = decode(msgpack.packb(value))
        assert reasons(c) == [(0, reason)], value
    c, events, _, _ = decode(msgpack.packb([7, 1, 5, None, None, None, None, None]))
    assert [event_tuple(e) for e in events] == [(7, 1, 5, 0, 0, 0, 0, 0)]


def test_first_failing_field_decides():
    c, _, _, _ = decode(msgpack.packb([-1, "NOPE", 0]))
    assert reasons(c) == [(0, "out_of_range")]
    c, _, _, _ = decode(msgpack.packb([1, "NOPE", 0]))
    assert reasons(c) == [(0, "unknown_type")]
    c, _, _, _ = decode(msgpack.packb([1, 1, 0, True]))
    assert reasons(c) == [(0, "out_of_range")]


def test_map_form():
    ev = {"msisdn": 13800138000, "type": "SMS_MO", "ts": 5, "cell": 9, "extra": {"deep": [1, 2, {"x": None}]},
          "arg": 2, 7: "int key", "flags": 1}
    c, events, status, _ = decode(msgpack.packb(ev))
    assert reasons(c) == []
    assert [event_tuple(e) for e in events] == [(5, 3, 13800138000, 0, 9, 0, 1, 2)]


def test_map_duplicate_known_key_is_bad_and_unknown_duplicates_are_not_read():
    dup = b"\x84\xa2ts\x01\xa4type\x01\xa6msisdn\x05\xa2ts\x02"
    c, events, _, _ = decode(dup)
    assert reasons(c) == [(0, "duplicate_key")]
    twice_unknown = b"\x85\xa2ts\x01\xa4type\x01\xa6msisdn\x05\xa1x\x01\xa1x\x02"
    c, events, _, _ = decode(twice_unknown)
    assert reasons(c) == [] and len(events) == 1


def test_bin_keys_are_unknown_keys():
    m = b"\x84\xa2ts\x01\xa4type\x01\xa6msisdn\x05\xc4\x04cell\x07"
    c, events, _, _ = decode(m)
    assert reasons(c) == [] and int(events[0]["cell"]) == 0


def test_not_an_event_for_every_other_value():
    values = [None, True, 1, -1, 1.0, "x", b"x", msgpack.ExtType(1, b"")]
    data = b"".join(msgpack.packb(v, use_bin_type=True) for v in values)
    c, events, status, _ = decode(data)
    offsets, total = [], 0
    for v in values:
        offsets.append(total)
        total += len(msgpack.packb(v, use_bin_type=True))
    assert status == 0 and reasons(c) == [(o, "not_an_event") for o in offsets]


def test_extra_array_fields_are_ignored():
    c, events, _, _ = decode(msgpack.packb(GOOD + [-5, "x", {"a": [1, 2]}, 1.5]))
    assert reasons(c) == [] and [event_tuple(e) for e in events] == [tuple(GOOD)]


def test_array16_array32_and_map16_map32_headers():
    body = b"".join(packed(GOOD[:3]))
    for header in (b"\xdc\x00\x03", b"\xdd\x00\x00\x00\x03"):
        c, events, _, _ = decode(header + body)
        assert len(events) == 1
    kv = b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in zip(FIELDS, GOOD[:3]))
    for header in (b"\xde\x00\x03", b"\xdf\x00\x00\x00\x03"):
        c, events, _, _ = decode(header + kv)
        assert len(events) == 1


def test_dead_letters_carry_offset_and_bytes():
    good = msgpack.packb(GOOD)
    bad = msgpack.packb([1, 99, 5])
    long_bad = msgpack.packb([1, 1, 5, "x" * 200])
    c, events, _, _ = decode(good + bad + good + long_bad)
    letters = c.take_dead_letters()
    assert [int(x) for x in letters["offset"]] == [len(good), 2 * len(good) + len(bad)]
    first = letters[0]
    assert bytes(first["bytes"][: first["nbytes"]]) == bad
    second = letters[1]
    assert second["nbytes"] == 64 and bytes(second["bytes"]) == long_bad[:64]


def test_corrupt_byte_stops_with_its_event_offset():
    good = msgpack.packb(GOOD)
    c, events, status, offset = decode(good + good + b"\x93\x01\xc1\x05" + good)
    assert status == 1 and offset == 2 * len(good) and len(events) == 2
    c, events, status, offset = decode(good + b"\xc1")
    assert status == 1 and offset == len(good)


def test_truncated_stream():
    good = msgpack.packb(GOOD)
    for cut in range(1, len(good)):
        c, events, status, offset = decode(good + good[:cut])
        assert status == 3 and offset == len(good) and len(events) == 1


def test_lengths_are_bounded_before_use():
    # A str32 that claims 4 GiB, a map32 and array32 claiming 2**32-1 entries: rejected
    # at once as too large, never read or allocated.
    for data in (b"\x93\x01\x01\xdb\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff",
                 b"\x93\x01\x01\xc6\xff\xff\xff\xff", b"\x93\x01\x01\xc9\xff\xff\xff\xff\x01"):
        c, events, status, offset = decode(msgpack.packb(GOOD) + data, max_event_bytes=1024)
        assert (status, offset) == (2, len(msgpack.packb(GOOD)))


def test_too_large_does_not_depend_on_availability():
    big = msgpack.packb(GOOD + ["x" * 2000])
    c, events, status, _ = decode(big, max_event_bytes=1024)
    assert status == 2
    c, events, status, _ = decode(big[:1500], max_event_bytes=1024)
    assert status == 2
    c, events, status, _ = decode(big, max_event_bytes=4096)
    assert status == 0 and len(events) == 1


def test_deep_nesting_in_ignored_values_is_skipped_without_recursion():
    deep = b"\x91" * 5000 + b"\x01"
    c, events, status, _ = decode(b"\x99" + b"".join(packed(GOOD)) + deep)
    assert status == 0 and len(events) == 1


def test_garbage_never_crashes():
    import random
    rnd = random.Random(3)
    for _ in range(300):
        data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200)))
        c, events, status, offset = decode(data, max_event_bytes=256)
        assert status in (0, 1, 2, 3)
