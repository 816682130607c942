"""Roaring lists: the test vectors of other implementations, round trips, and format detection."""
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroaring import BitMap, BitMap64

from engine.errors import LoadError
from loaders.lists import load_list, read_roaring

VECTORS = Path(__file__).parent / "data" / "roaring"


def _java_32bit_contents() -> np.ndarray:
    return np.concatenate([
        np.arange(0, 100_000, 1000),
        3 * np.arange(100_000, 200_000),
        np.arange(700_000, 800_000),
    ]).astype(np.uint64)


def _croaring_portable64_contents() -> np.ndarray:
    parts = []
    for hi in (0, 1):
        base = hi << 32
        parts += [
            np.arange(base, base + 0x9000 + 1),
            np.arange(base + 0xA000, base + 0x10000 + 1),
            [base + 0x20000, base + 0x20005],
            base + 0x80000 + np.arange(0, 0x10000, 2),
        ]
    return np.concatenate(parts).astype(np.uint64)


def _croaring_map64_contents() -> np.ndarray:
    return np.concatenate([
        np.arange(0, 65536, 2),
        np.arange(2**32, 2**32 + 1_000_000),
        [2**48],
    ]).astype(np.uint64)


# file, the class pyroaring reads it into, the README's description, count, max
VECTOR_CASES = [
    ("bitmapwithoutruns.bin", BitMap, _java_32bit_contents, 200_100, 799_999),
    ("bitmapwithruns.bin", BitMap, _java_32bit_contents, 200_100, 799_999),
    ("portable_bitmap64.bin", BitMap64, _croaring_portable64_contents, 188_424, 4_295_557_118),
    ("bitmap64.bin", BitMap64, _croaring_map64_contents, 1_032_769, 2**48),
]


@pytest.mark.parametrize("name, kind, contents, count, maximum", VECTOR_CASES)
def test_vector_reads_with_read_roaring(name, kind, contents, count, maximum):
    bitmap = read_roaring((VECTORS / name).read_bytes())
    assert type(bitmap) is kind
    assert len(bitmap) == count
    assert bitmap.min() == 0
    assert bitmap.max() == maximum
    expected = contents()
    assert len(expected) == count  # the description itself adds up to the README's count
    assert np.array_equal(np.asarray(bitmap.to_array()).astype(np.uint64), expected)


@pytest.mark.parametrize("name, kind, contents, count, maximum", VECTOR_CASES)
def test_vector_loads_as_list(tmp_path, caplog, name, kind, contents, count, maximum):
    path = tmp_path / (Path(name).stem + ".roar")
    shutil.copy(VECTORS / name, path)
    with caplog.at_level(logging.WARNING, logger="sigmatch.loaders"):
        values = load_list(path)
    assert values.dtype == np.uint64
    assert len(values) == count and values[0] == 0 and values[-1] == maximum
    assert np.array_equal(values, contents())
    # 0 is kept (it can never match) and reported once.
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: 1 value is not an MSISDN (0 or more than 15 digits) and can never match"]


def test_vector_ranges_membership():
    values = read_roaring((VECTORS / "bitmapwithruns.bin").read_bytes())
    assert all(v in values for v in (0, 99_000, 300_000, 599_997, 700_000, 799_999))
    assert all(v not in values for v in (1, 99_999, 300_001, 600_000, 699_999, 800_000))
    values = read_roaring((VECTORS / "portable_bitmap64.bin").read_bytes())
    for base in (0, 2**32):
        assert values.contains_range(base, base + 0x9001)
        assert values.contains_range(base + 0xA000, base + 0x10001)
        assert base + 0x9001 not in values and base + 0x9FFF not in values
        assert base + 0x20000 in values and base + 0x20005 in values
        assert base + 0x20001 not in values
        assert base + 0x80000 in values and base + 0x80001 not in values


def _roundtrip(tmp_path, bitmap) -> np.ndarray:
    path = tmp_path / "list.roar"
    path.write_bytes(bitmap.serialize())
    return load_list(path)


def test_roundtrip_32bit_msisdn_like(tmp_path):
    rng = np.random.default_rng(7)
    numbers = rng.integers(1_300_000_000, 2**32, 50_000, dtype=np.uint64)
    bitmap = BitMap(numbers.astype(np.uint32))
    bitmap.add_range(1_390_000_000, 1_390_100_000)  # a run container
    assert type(read_roaring(bitmap.serialize())) is BitMap
    assert np.array_equal(_roundtrip(tmp_path, bitmap), np.array(sorted(bitmap), dtype=np.uint64))


def test_roundtrip_64bit_13_digit_numbers(tmp_path):
    rng = np.random.default_rng(8)
    numbers = rng.integers(8_613_000_000_000, 8_619_999_999_999, 50_000, dtype=np.uint64)
    bitmap = BitMap64(numbers)
    bitmap.add_range(8_613_800_138_000, 8_613_800_148_000)
    assert type(read_roaring(bitmap.serialize())) is BitMap64
    expected = np.union1d(numbers, np.arange(8_613_800_138_000, 8_613_800_148_000, dtype=np.uint64))
    assert np.array_equal(_roundtrip(tmp_path, bitmap), expected)


@given(st.sets(st.integers(0, 2**32 - 1), max_size=300))
def test_roundtrip_32bit_property(values):
    bitmap = read_roaring(BitMap(values).serialize())
    assert type(bitmap) is BitMap and set(bitmap) == values


@given(st.sets(st.integers(0, 2**64 - 1) | st.integers(10**12, 10**15), max_size=300))
def test_roundtrip_64bit_property(values):
    bitmap = read_roaring(BitMap64(values).serialize())
    assert set(bitmap) == values


@pytest.mark.parametrize("buckets", [12346, 12347, 12347 + 65536])
def test_64bit_bucket_count_that_looks_like_a_cookie(buckets):
    # The first 4 bytes of such a 64-bit file equal a 32-bit cookie.
    values = (np.arange(1, buckets + 1, dtype=np.uint64) << np.uint64(32)) + np.uint64(5)
    data = BitMap64(values).serialize()
    assert int.from_bytes(data[:4], "little") & 0xFFFF in (12346, 12347)
    bitmap = read_roaring(data)
    assert type(bitmap) is BitMap64
    assert np.array_equal(np.asarray(bitmap.to_array()), values)


def test_empty_bitmaps(tmp_path):
    assert len(_roundtrip(tmp_path, BitMap())) == 0
    assert len(_roundtrip(tmp_path, BitMap64())) == 0


def test_values_beyond_15_digits_are_kept_and_reported(tmp_path, caplog):
    values = [13_800_138_000, 10**15, 2**64 - 1]
    with caplog.at_level(logging.WARNING, logger="sigmatch.loaders"):
        loaded = _roundtrip(tmp_path, BitMap64(values))
    assert loaded.tolist() == values
    assert "2 values are not MSISDNs" in caplog.text


@pytest.mark.parametrize("data", [
    b"",
    b"\x01\x02",
    b"not a roaring bitmap at all",
    (VECTORS / "bitmapwithruns.bin").read_bytes()[:1000],
    (VECTORS / "portable_bitmap64.bin").read_bytes()[:-7],
])
def test_corrupt_file_is_a_load_error_naming_the_file(tmp_path, data):
    path = tmp_path / "broken.roar"
    path.write_bytes(data)
    with pytest.raises(LoadError, match="broken.roar"):
        load_list(path)
    with pytest.raises(ValueError):
        read_roaring(data)
