"""Profiles, lists and areas: what the loaders make of operators' files (SPEC §1.1-§1.3)."""
import datetime
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import LoadError
from loaders.areas import load_area
from loaders.lists import load_list
from loaders.profiles import Profiles, load_profiles


@pytest.fixture
def warnings(caplog):
    caplog.set_level(logging.WARNING, logger="sigmatch.loaders")
    return caplog


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- profiles ---------------------------------------------------------------------------------

PROFILES_CSV = """\
msisdn,arpu,age,code,plan,since,mixed,sparse,tags
8613800138000,88.5,34,007,gold,2024-01-05,12,,crbt| vip
8613800138001,120,41,abc,silver,2023-11-30,2024-02-01,7, news |  | sport |
8613800138002,  ,29,12,,2022-07-15,x,, 
"""


def test_csv_types_are_inferred_over_each_column(tmp_path):
    profiles = load_profiles(write(tmp_path / "p.csv", PROFILES_CSV))
    assert isinstance(profiles, Profiles) and profiles.path == tmp_path / "p.csv"
    assert profiles.msisdn.dtype == np.uint64
    assert profiles.msisdn.tolist() == [8613800138000, 8613800138001, 8613800138002]
    columns = profiles.columns
    assert list(columns) == ["arpu", "age", "code", "plan", "since", "mixed", "sparse"]
    assert columns["arpu"].type == pa.float64()
    assert columns["arpu"].to_pylist() == [88.5, 120.0, None]
    assert columns["age"].type == pa.int64() and columns["age"].to_pylist() == [34, 41, 29]
    # '007' is a string because its column is not all integers
    assert columns["code"].type == pa.string()
    assert columns["code"].to_pylist() == ["007", "abc", "12"]
    assert columns["plan"].to_pylist() == ["gold", "silver", None]
    assert columns["since"].type == pa.string()
    assert columns["since"].to_pylist() == ["2024-01-05", "2023-11-30", "2022-07-15"]
    assert columns["mixed"].type == pa.string()
    assert columns["mixed"].to_pylist() == ["12", "2024-02-01", "x"]
    assert columns["sparse"].type == pa.int64() and columns["sparse"].to_pylist() == [None, 7, None]
    assert profiles.bad_rows == 0


def test_csv_leading_zeros_in_an_all_integer_column_are_integers(tmp_path):
    text = "msisdn,n,x\n1,007,1.5e3\n2,+5,-2\n3,-0,.5\n"
    profiles = load_profiles(write(tmp_path / "p.csv", text))
    assert profiles.columns["n"].type == pa.int64()
    assert profiles.columns["n"].to_pylist() == [7, 5, 0]
    assert profiles.columns["x"].type == pa.float64()
    assert profiles.columns["x"].to_pylist() == [1500.0, -2.0, 0.5]


def test_csv_integers_beyond_int64_are_floats(tmp_path):
    profiles = load_profiles(write(tmp_path / "p.csv", "msisdn,big\n1,99999999999999999999\n2,1\n"))
    assert profiles.columns["big"].type == pa.float64()


def _typed_by_regex(values: list) -> pa.Array:
    """The typing of SPEC §1.1 as the regexes say it, value by value: the oracle of the
    loader's byte-class shortcut."""
    import re
    from loaders.profiles import _INTEGER, _NUMBER
    present = [v for v in values if v is not None]
    if all(re.fullmatch(_INTEGER, v) for v in present) and all(-2**63 <= int(v) < 2**63 for v in present):
        return pa.array([None if v is None else int(v) for v in values], pa.int64())
    if all(re.fullmatch(_NUMBER, v) for v in present):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array(values, pa.string())


@given(st.lists(st.one_of(st.none(), st.text("0123456789+-.eE", min_size=1, max_size=6),
                          st.sampled_from(["inf", "nan", "0x1f", "1_0", "1e", "+.", "-", "1.e5", "-.5e-3", "99999999999999999999"])),
                min_size=1, max_size=6))
def test_csv_typing_by_byte_classes_matches_the_regexes(values):
    from loaders.profiles import _typed_csv_column
    typed = _typed_csv_column(pa.chunked_array([pa.array(values, pa.string())]), ("", "\\N"))
    want = _typed_by_regex(values)
    assert typed.type == want.type
    assert typed.combine_chunks().to_pylist() == want.to_pylist()


@given(st.lists(st.one_of(st.none(), st.text("0123456789 +-x", max_size=17), st.text(max_size=4)), max_size=8))
def test_msisdn_validity_without_the_regex_matches_it(values):
    import re
    from loaders.lists import _DIGITS_PATTERN, _plain_msisdns
    got = _plain_msisdns(pa.array(values, pa.string())).to_pylist()
    assert got == [None if v is None else bool(re.fullmatch(_DIGITS_PATTERN, v)) for v in values]


@given(st.lists(st.text("0123456789 +-\t\v\u00a0\u3000x", max_size=17), max_size=8))
def test_msisdns_in_files_and_typed_by_a_person_follow_one_rule(values):
    """loaders.lists.parse_msisdns (profiles, lists) and normalise_msisdn (--msisdn, the
    lookup, --watch) agree on every string: spaces, dashes between digits, + and 00."""
    from loaders.lists import normalise_msisdn, parse_msisdns
    numbers, valid = parse_msisdns(pa.array(values, pa.string()))
    for value, number, ok in zip(values, numbers.tolist(), valid.tolist()):
        assert normalise_msisdn(value) == (number if ok else None), value


@pytest.mark.parametrize("text, number", [("-8613800138000", None), ("8613800138000-", None), (" -86138 ", None),
                                          ("86-138", 86138), ("+86 138-0013-8000", 8613800138000), ("-", None),
                                          ("+-8613800138000", None), ("+86-138", 86138), ("00-86", 86)])
def test_a_dash_first_or_last_is_a_sign_not_a_separator(text, number):
    from loaders.lists import normalise_msisdn, parse_msisdns
    numbers, valid = parse_msisdns(pa.array([text, "8613800138000"], pa.string()))
    assert (int(numbers[0]) if valid[0] else None) == number
    assert normalise_msisdn(text) == number


@given(st.lists(st.one_of(st.none(), st.text(" \t\u00a0\u3000ab\\N", max_size=4)), max_size=6))
def test_cleaning_skips_the_trim_only_when_it_changes_nothing(values):
    import pyarrow.compute as pc
    from loaders.profiles import _cleaned
    array = pa.array(values, pa.string())
    trimmed = pc.utf8_trim_whitespace(array)
    want = pc.if_else(pc.invert(pc.is_in(trimmed, value_set=pa.array(["", "\\N"]))), trimmed,
                      pa.scalar(None, pa.string()))
    assert _cleaned(array, ("", "\\N")).to_pylist() == want.to_pylist()


@given(st.lists(st.integers(1, 6), max_size=10), st.booleans(), st.lists(st.booleans(), max_size=10))
def test_first_position_last_row_sorted_or_not(numbers, ordered, invalid):
    """Unique numbers in order of first appearance, each with its last row: strictly
    increasing input takes a shortcut past the sort, which must give the same."""
    from loaders.profiles import _first_position_last_row
    numbers = sorted(numbers) if ordered else numbers
    valid = np.array([not (i < len(invalid) and invalid[i]) for i in range(len(numbers))], bool)
    got_numbers, rows = _first_position_last_row(np.array(numbers, np.uint64), valid)
    last = {}
    for row, (n, ok) in enumerate(zip(numbers, valid)):
        if ok:
            last[n] = row
    assert got_numbers.tolist() == list(last)   # dicts keep first insertion order
    if rows is None:        # every row, each its own number
        assert valid.all() and len(set(numbers)) == len(numbers)
    else:
        assert rows.tolist() == list(last.values())


def test_csv_all_empty_column_is_all_null(tmp_path):
    profiles = load_profiles(write(tmp_path / "p.csv", "msisdn,nothing\n1,\n2,\n"))
    assert profiles.columns["nothing"].null_count == 2


def test_tags_are_split_trimmed_and_never_null(tmp_path):
    profiles = load_profiles(write(tmp_path / "p.csv", PROFILES_CSV))
    assert "tags" not in profiles.columns
    assert isinstance(profiles.tags, pa.ListArray)
    assert profiles.tags.to_pylist() == [["crbt", "vip"], ["news", "sport"], []]
    assert profiles.tags.null_count == 0


def test_no_tags_column_means_no_tags(tmp_path):
    assert load_profiles(write(tmp_path / "p.csv", "msisdn,a\n1,2\n")).tags is None


def test_duplicate_msisdn_last_row_wins_first_position_kept(tmp_path):
    text = ("msisdn,plan,tags\n"
            "13800138000,basic,a\n"
            "13900139000,gold,b\n"
            "13800138000,silver,\n"
            "13700137000,gold,c\n"
            "13800138000,platinum,d|e\n"
            "13900139000,basic,f\n")
    profiles = load_profiles(write(tmp_path / "p.csv", text))
    assert profiles.msisdn.tolist() == [13800138000, 13900139000, 13700137000]
    assert profiles.columns["plan"].to_pylist() == ["platinum", "basic", "gold"]
    assert profiles.tags.to_pylist() == [["d", "e"], ["f"], ["c"]]
    assert profiles.bad_rows == 0


def test_duplicates_decide_types_by_the_rows_kept(tmp_path):
    profiles = load_profiles(write(tmp_path / "p.csv", "msisdn,a\n1,x\n2,5\n1,6\n"))
    assert profiles.columns["a"].type == pa.int64() and profiles.columns["a"].to_pylist() == [6, 5]


def test_bad_msisdn_rows_are_skipped_counted_and_masked(tmp_path, warnings):
    text = ("msisdn,a\n"
            "8613800138000,1\n"
            "08613800138001,2\n"        # row 2: leading 0
            "1234567890123456,3\n"      # row 3: 16 digits
            ",4\n"                      # row 4: empty
            "+8613800138005,5\n"
            " 8613800138006 ,6\n"
            "86138x0138007,7\n"         # row 7: not digits
            "++8613800138008,8\n"       # row 8: two '+'
            "0,9\n")                    # row 9: zero
    path = write(tmp_path / "p.csv", text)
    profiles = load_profiles(path)
    assert profiles.msisdn.tolist() == [8613800138000, 8613800138005, 8613800138006]
    assert profiles.columns["a"].to_pylist() == [1, 5, 6]
    assert profiles.bad_rows == 6
    messages = [record.getMessage() for record in warnings.records]
    assert messages == [f"{path}: 6 entries skipped, not an MSISDN (data row 2 '086*******8001', "
                        f"data row 3 '123*********3456', data row 4 empty, ...)"]
    for number in ("08613800138001", "1234567890123456", "86138x0138007", "8613800138008"):
        assert number not in warnings.text
        assert number[3:-4] not in warnings.text  # not even the middle digits


def test_a_snapshot_of_a_header_alone_is_said(tmp_path, warnings):
    """helper-128: `check` said ok and 0 subscribers without a word, where an empty list warns."""
    path = write(tmp_path / "p.csv", "msisdn,a\n")
    assert len(load_profiles(path).msisdn) == 0
    assert [r.getMessage() for r in warnings.records] == [
        f"{path}: the profile snapshot holds no subscriber (no rows): no campaign can match"]
    warnings.clear()
    load_profiles(write(tmp_path / "q.csv", "msisdn,a\n13800138000,1\n"))
    assert not warnings.records


def test_bad_rows_do_not_decide_types(tmp_path):
    profiles = load_profiles(write(tmp_path / "p.csv", "msisdn,a\n1,5\nbad,oops\n2,6\n"))
    assert profiles.bad_rows == 1
    assert profiles.columns["a"].type == pa.int64() and profiles.columns["a"].to_pylist() == [5, 6]


def test_a_flood_of_bad_rows_is_summarised_in_one_line(tmp_path, warnings):
    rows = "".join(f"x{i},1\n" for i in range(150))
    profiles = load_profiles(write(tmp_path / "p.csv", "msisdn,a\n1,1\n" + rows))
    assert profiles.bad_rows == 150
    assert len(warnings.records) == 1
    assert "150 entries skipped, not an MSISDN (data row 2 '**', data row 3 '**', data row 4 '**', ...)" in warnings.text


def _parquet_twin(path: Path) -> Path:
    """PROFILES_CSV as a warehouse would write it to Parquet, with native types."""
    table = pa.table({
        "msisdn": pa.array([8613800138000, 8613800138001, 8613800138002], pa.int64()),
        "arpu": pa.array([88.5, 120.0, None], pa.float32()),
        "age": pa.array([34, 41, 29], pa.int16()),
        "code": pa.array(["007", "abc", "12"]),
        "plan": pa.array(["gold", "silver", ""]),
        "since": pa.array([datetime.date(2024, 1, 5), datetime.date(2023, 11, 30),
                           datetime.date(2022, 7, 15)]),
        "mixed": pa.array(["12", "2024-02-01", "x"]),
        "sparse": pa.array([None, 7, None], pa.int32()),
        "tags": pa.array([["crbt", " vip"], [" news ", "", " sport"], None], pa.list_(pa.string())),
    })
    pq.write_table(table, path)
    return path


def test_parquet_with_the_same_data_gives_the_same_profiles(tmp_path):
    from_csv = load_profiles(write(tmp_path / "p.csv", PROFILES_CSV))
    from_parquet = load_profiles(_parquet_twin(tmp_path / "p.parquet"))
    assert np.array_equal(from_parquet.msisdn, from_csv.msisdn)
    assert from_parquet.msisdn.dtype == np.uint64
    assert list(from_parquet.columns) == list(from_csv.columns)
    for name, column in from_csv.columns.items():
        assert from_parquet.columns[name].equals(column), name
    assert from_parquet.tags.equals(from_csv.tags)
    assert from_parquet.bad_rows == from_csv.bad_rows == 0


def test_parquet_types(tmp_path):
    table = pa.table({
        "msisdn": pa.array(["13800138000", "+13800138001", "013800138002", None]),
        "vip": pa.array([True, False, None, True]),
        "seen": pa.array([datetime.datetime(2024, 3, 1, 23, 59)] * 4, pa.timestamp("ms")),
        "arpu": pa.array(["1.25", "2.50", "0", "1"], pa.string()).cast(pa.decimal128(10, 2)),
        "plan": pa.array(["gold", "gold", "silver", "gold"]).dictionary_encode(),
        "tags": pa.array(["a|b", None, "c", "d"]),
    })
    pq.write_table(table, tmp_path / "p.parquet")
    profiles = load_profiles(tmp_path / "p.parquet")
    assert profiles.msisdn.tolist() == [13800138000, 13800138001]
    assert profiles.bad_rows == 2
    assert profiles.columns["vip"].type == pa.int64()
    assert profiles.columns["vip"].to_pylist() == [1, 0]
    assert profiles.columns["seen"].to_pylist() == ["2024-03-01", "2024-03-01"]
    assert profiles.columns["arpu"].type == pa.float64()
    assert profiles.columns["arpu"].to_pylist() == [1.25, 2.5]
    assert profiles.columns["plan"].type == pa.string()
    assert profiles.tags.to_pylist() == [["a", "b"], []]


@pytest.mark.parametrize("row_group_size", [2, 64])
def test_parquet_dictionary_columns_give_what_their_plain_text_gives(tmp_path, row_group_size):
    """A warehouse's (or pandas') categorical columns are typed on their distinct values,
    then spread over the rows: the profiles are those of the same columns written as plain
    text, whatever the values (blank, padded, null, a null marker among the tags), the rows
    kept (a repeated MSISDN takes its last row), or how the row groups split the dictionary
    (each group may carry its own)."""
    plan = [" gold ", "gold", "", None, "silver", "\\N", "gold", "  ", "bronze", "silver"]
    tags = ["vip| news", "", None, "a||b", " \\N|c", "vip| news", "x", "|", "news", "vip"]
    numbers = [13800138000 + k for k in (0, 1, 2, 3, 4, 5, 1, 6, 7, 8)]     # 13800138001 twice
    plain = pa.table({"msisdn": pa.array(numbers, pa.int64()), "plan": pa.array(plan), "tags": pa.array(tags)})
    coded = pa.table({"msisdn": pa.array(numbers, pa.int64()), "plan": pa.array(plan).dictionary_encode(),
                      "tags": pa.array(tags).dictionary_encode()})
    pq.write_table(plain, tmp_path / "plain.parquet", row_group_size=row_group_size)
    pq.write_table(coded, tmp_path / "coded.parquet", row_group_size=row_group_size)
    from_plain = load_profiles(tmp_path / "plain.parquet")
    from_coded = load_profiles(tmp_path / "coded.parquet")
    assert pa.types.is_dictionary(pq.read_table(tmp_path / "coded.parquet").column("plan").type)
    assert np.array_equal(from_coded.msisdn, from_plain.msisdn)
    assert from_coded.columns["plan"].equals(from_plain.columns["plan"])
    assert from_coded.tags.equals(from_plain.tags)
    assert from_coded.columns["plan"].to_pylist()[:4] == ["gold", "gold", None, None]
    # a Parquet column's nulls are its nulls: `\\N` is text there (a CSV's null marker)
    assert from_coded.tags.to_pylist()[:5] == [["vip", "news"], ["x"], [], ["a", "b"], ["\\N", "c"]]


def test_a_dictionary_column_whose_chunks_hold_different_dictionaries():
    """Chunks of one column may each carry their own dictionary (row groups written apart,
    a take over them): every row takes its value from its own chunk's."""
    from loaders.profiles import _parquet_attribute
    column = pa.chunked_array([pa.array(["a", " b", None]).dictionary_encode(),
                               pa.array([" c ", "", "a"]).dictionary_encode()])
    assert _parquet_attribute(column, "plan", Path("p.parquet")).to_pylist() == ["a", "b", None, "c", None, "a"]


def test_parquet_columns_typed_side_by_side_report_the_first_bad_column(tmp_path, monkeypatch):
    """Columns are typed on several threads; an error is still the one typing them in the
    file's order meets first."""
    monkeypatch.setattr("loaders.profiles.LOAD_THREADS", 4)
    pq.write_table(pa.table({"msisdn": [1, 2], "a": pa.array([1, 2], pa.uint64()),
                             "b": pa.array([2**63, 1], pa.uint64()), "c": pa.array([b"x", b"y"], pa.binary())}),
                   tmp_path / "p.parquet")
    with pytest.raises(LoadError, match=r"p\.parquet: column 'b'"):
        load_profiles(tmp_path / "p.parquet")


def test_parquet_integer_msisdn_range(tmp_path):
    numbers = [1, 0, 10**15 - 1, 10**15, 2**64 - 1]
    pq.write_table(pa.table({"msisdn": pa.array(numbers, pa.uint64())}), tmp_path / "p.parquet")
    profiles = load_profiles(tmp_path / "p.parquet")
    assert profiles.msisdn.tolist() == [1, 10**15 - 1]
    assert profiles.bad_rows == 3


@pytest.mark.parametrize("column", [
    pa.array([b"\x00", b"\x01"], pa.binary()),
    pa.array([datetime.time(1, 2), datetime.time(3, 4)]),
    pa.array([{"x": 1}, {"x": 2}]),
])
def test_parquet_unsupported_type_is_a_load_error(tmp_path, column):
    pq.write_table(pa.table({"msisdn": [1, 2], "odd": column}), tmp_path / "p.parquet")
    with pytest.raises(LoadError, match=r"p\.parquet.*'odd'"):
        load_profiles(tmp_path / "p.parquet")


def test_missing_msisdn_column_is_a_load_error(tmp_path):
    with pytest.raises(LoadError, match=r"p\.csv.*msisdn"):
        load_profiles(write(tmp_path / "p.csv", "number,a\n1,2\n"))
    pq.write_table(pa.table({"number": [1]}), tmp_path / "p.parquet")
    with pytest.raises(LoadError, match=r"p\.parquet.*msisdn"):
        load_profiles(tmp_path / "p.parquet")


@pytest.mark.parametrize("name, content", [
    ("missing.csv", None),
    ("p.json", "{}"),
    ("empty.csv", ""),
    ("ragged.csv", "msisdn,a\n1,2,3\n"),
    ("dup.csv", "msisdn,a,a\n1,2,3\n"),
    ("junk.parquet", "not parquet"),
])
def test_unreadable_profiles_are_load_errors_naming_the_file(tmp_path, name, content):
    if content is not None:
        write(tmp_path / name, content)
    with pytest.raises(LoadError, match=name.replace(".", r"\.")):
        load_profiles(tmp_path / name)


def test_a_roaring_list_given_as_profiles_is_named_for_what_it_is(tmp_path):
    (tmp_path / "dnd.roar").write_bytes(b"\x3a\x30\x00\x00\x01\x00\x00\x00")
    with pytest.raises(LoadError, match=r"dnd\.roar: unknown profile format '\.roar'; expected \.csv or "
                                        r"\.parquet; a \.roar file is a list of MSISDNs: name it under \[lists\]"):
        load_profiles(tmp_path / "dnd.roar")


NUMBERS = st.sampled_from(
    ["13800138000", "13800138001", "8613900139000", "+13800138001", "0138", "x"])


@given(st.lists(st.tuples(NUMBERS, st.integers(0, 99)), max_size=40))
def test_profiles_match_a_dictionary_of_rows(rows):
    """Reference semantics: a dict keeps first insertion order and takes the last assignment."""
    expected, bad = {}, 0
    for number, value in rows:
        digits = number.removeprefix("+")
        if digits.isdigit() and not digits.startswith("0"):
            expected[int(digits)] = value
        else:
            bad += 1
    with tempfile.TemporaryDirectory() as directory:
        path = write(Path(directory) / "p.csv",
                     "msisdn,v\n" + "".join(f"{number},{value}\n" for number, value in rows))
        if bad and not expected:
            with pytest.raises(LoadError, match=f"not one of its {bad:,} rows holds a usable MSISDN"):
                load_profiles(path)
            return
        profiles = load_profiles(path)
    assert profiles.msisdn.tolist() == list(expected)
    assert profiles.columns["v"].to_pylist() == list(expected.values())
    assert profiles.bad_rows == bad


# --- lists ------------------------------------------------------------------------------------

def test_txt_list(tmp_path, warnings):
    text = ("# crbt targets, exported 2024-05-01\n"
            "13800138000\n"
            "\n"
            "   \n"
            "  # indented comment\n"
            "+8613900139000\n"
            "  13700137000  \r\n"
            "013800138000\n"            # line 8: leading 0
            "13800138000\n"
            "1380013800O\n"             # line 10: letter O
            "1234567890123456\n"        # line 11: 16 digits
            "999999999999999")
    path = write(tmp_path / "targets.txt", text)
    values = load_list(path)
    assert values.dtype == np.uint64
    assert values.tolist() == [13700137000, 13800138000, 8613900139000, 999999999999999]
    messages = [record.getMessage() for record in warnings.records]
    assert messages == [f"{path}: 3 entries skipped, not an MSISDN (line 8 '013*****8000', line 10 '138****800O', "
                        "line 11 '123*********3456')"]
    for number in ("013800138000", "1380013800O", "1234567890123456"):
        assert number not in warnings.text


def test_csv_list(tmp_path, warnings):
    text = ("name,msisdn\nann,13800138000\nbob,\ncy,+13900139000\n"
            "dee,013900139000\neve,13800138000\n")
    values = load_list(write(tmp_path / "peers.csv", text))
    assert values.tolist() == [13800138000, 13900139000]
    messages = [record.getMessage() for record in warnings.records]
    assert messages == [f"{tmp_path / 'peers.csv'}: 2 entries skipped, not an MSISDN (row 2 empty, row 4 '013*****9000')"]
    assert "013900139000" not in warnings.text


def test_empty_lists(tmp_path):
    assert load_list(write(tmp_path / "a.txt", "")).tolist() == []
    assert load_list(write(tmp_path / "b.txt", "# nothing yet\n\n")).tolist() == []
    empty = load_list(write(tmp_path / "c.csv", "msisdn\n"))
    assert empty.dtype == np.uint64 and empty.tolist() == []


def test_large_txt_list_matches_numpy(tmp_path):
    rng = np.random.default_rng(3)
    numbers = rng.integers(10**10, 10**13, 200_000)
    write(tmp_path / "big.txt", "\n".join(map(str, numbers)) + "\n")
    assert np.array_equal(load_list(tmp_path / "big.txt"), np.unique(numbers).astype(np.uint64))


@pytest.mark.parametrize("name, content", [
    ("missing.txt", None),
    ("missing.csv", None),
    ("missing.roar", None),
    ("list.json", "[]"),
    ("list", "13800138000\n"),
    ("no_column.csv", "number\n13800138000\n"),
])
def test_unreadable_lists_are_load_errors_naming_the_file(tmp_path, name, content):
    if content is not None:
        write(tmp_path / name, content)
    with pytest.raises(LoadError, match=name.replace(".", r"\.")):
        load_list(tmp_path / name)


@pytest.mark.parametrize("kind", ["pipe", "directory"])
@pytest.mark.parametrize("load", [load_list, load_area])
def test_a_list_or_area_that_is_no_regular_file_is_refused(tmp_path, kind, load):
    """A FIFO would block the load for ever (and a device fill the memory): refused at once."""
    path = tmp_path / "staff.txt"
    os.mkfifo(path) if kind == "pipe" else path.mkdir()
    words = "a pipe" if kind == "pipe" else "a directory"
    with pytest.raises(LoadError, match=f"staff.txt: cannot read (list|area): {words}, not a regular file"):
        load(path)


def test_a_list_whose_first_line_is_json_nested_deeply_is_one_error(tmp_path):
    with pytest.raises(LoadError, match="staff.txt"):
        load_list(write(tmp_path / "staff.txt", "[" * 100_000 + "\n"))


# --- areas ------------------------------------------------------------------------------------

def test_txt_area(tmp_path):
    text = "# airport cells\n\n4294967295\n  10021 \n10020\n# terminal 2\n10021\n1\n"
    cells = load_area(write(tmp_path / "airport.txt", text))
    assert cells.dtype == np.uint32
    assert cells.tolist() == [1, 10020, 10021, 4294967295]


def test_csv_area(tmp_path):
    text = "name,cell\nno. 1 middle,460001\nno. 4,460000\n"
    cells = load_area(write(tmp_path / "schools.csv", text))
    assert cells.dtype == np.uint32 and cells.tolist() == [460000, 460001]


@pytest.mark.parametrize("bad, reason", [
    ("0", "unknown cell"),
    ("4294967296", "out of range"),
    ("-3", "out of range"),
    ("12.5", "not an integer"),
    ("0x2710", "not an integer"),
    ("ten", "not an integer"),
    ("1 2", "not an integer"),
])
def test_bad_txt_area_entry_is_a_load_error_naming_file_and_line(tmp_path, bad, reason):
    path = write(tmp_path / "area.txt", f"# cells\n10020\n\n{bad}\n10021\n")
    with pytest.raises(LoadError, match=rf"area\.txt: line 4: .*{reason}"):
        load_area(path)


@pytest.mark.parametrize("bad, reason", [("0", "unknown cell"), ("", "not an integer"),
                                         ("4294967296", "out of range"), ("x", "not an integer")])
def test_bad_csv_area_entry_is_a_load_error_naming_file_and_row(tmp_path, bad, reason):
    path = write(tmp_path / "area.csv", f"cell,name\n10020,a\n{bad},b\n")
    with pytest.raises(LoadError, match=rf"area\.csv: row 2: .*{reason}"):
        load_area(path)


@pytest.mark.parametrize("name, content", [
    ("missing.txt", None),
    ("area.roar", "x"),
    ("no_column.csv", "cells\n1\n"),
])
def test_unreadable_areas_are_load_errors_naming_the_file(tmp_path, name, content):
    if content is not None:
        write(tmp_path / name, content)
    with pytest.raises(LoadError, match=name.replace(".", r"\.")):
        load_area(tmp_path / name)


def test_profiles_read_only_the_columns_asked_for(tmp_path):
    import pyarrow.parquet as pq
    text = "msisdn,arpu,brand,tags\n13800000001,10,gold,a|b\n13800000002,,silver,\n"
    csv_path = tmp_path / "p.csv"
    csv_path.write_text(text)
    whole = load_profiles(csv_path)
    pq.write_table(pa.table({"msisdn": [13800000001, 13800000002], "arpu": [10, None],
                             "brand": ["gold", "silver"]}), tmp_path / "p.parquet")
    for path in (csv_path, tmp_path / "p.parquet"):
        some = load_profiles(path, columns={"arpu", "not_there"})
        assert list(some.columns) == ["arpu"] and some.tags is None
        assert some.columns["arpu"].to_pylist() == whole.columns["arpu"].to_pylist()
        assert list(some.msisdn) == list(whole.msisdn)
    assert load_profiles(csv_path, columns={"tags"}).tags.to_pylist() == [["a", "b"], []]


def test_an_unsigned_value_past_int64_is_said_without_digit_runs(tmp_path):
    """Arrow's message prints the value and 2^63 - 1 as long digit runs, which the logs mask
    as MSISDNs: the error says the limit in words."""
    pq.write_table(pa.table({"msisdn": [1, 2], "region": pa.array([2**63 + 5, 1], pa.uint64())}),
                   tmp_path / "p.parquet")
    with pytest.raises(LoadError) as raised:
        load_profiles(tmp_path / "p.parquet")
    assert str(raised.value) == (f"{tmp_path / 'p.parquet'}: column 'region': an unsigned value above 2^63 - 1, "
                                 "the largest integer sigmatch compares")
