"""Subscriber profiles (SPEC §1.1): a CSV or Parquet snapshot -> one typed column per attribute.

Everything is vectorised (pyarrow.compute, NumPy): a snapshot has tens of millions of rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import logging
from pathlib import Path
from collections.abc import Mapping
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import LoadError
from loaders import refuse_special, usable_cores
from loaders.lists import MSISDN_LIMIT, MSISDN_RULE, parse_msisdns, warn_bad_msisdns
from loaders.tabular import DEFAULT_FORMAT, TextFormat, read_csv_header, read_csv_strings

__all__ = ["Profiles", "load_profiles", "take_rows"]

log = logging.getLogger("sigmatch.loaders")

# Columns typed at once while loading a snapshot: each holds its text until typed
LOAD_THREADS = 4
_INTEGER = r"^[+-]?[0-9]+$"
_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"


@dataclass
class Profiles:
    path: Path
    msisdn: np.ndarray            # uint64, unique, in order of first appearance in the file
    columns: dict[str, pa.Array]  # attribute -> int64 | float64 | string array, aligned with msisdn
    tags: pa.ListArray | None     # list<string>, trimmed, [] when none; None without a tags column
    bad_rows: int                 # rows skipped for a bad msisdn, summarised in one log line
    header: tuple[str, ...] = ()  # every column of the file, lower-cased, read or not
    # a column typed string although some of its values are numbers: its first value that is
    # not a number, as (row in the file, 1 = first data row; the value), for the error that follows
    # (a lazy mapping for CSV snapshots: found when an error asks)
    not_numbers: Mapping[str, tuple[int, str]] = field(default_factory=dict)


def take_rows(profiles: Profiles, rows: np.ndarray) -> Profiles:
    """The snapshot's rows `rows` (int array of row numbers, in the order wanted), as a
    Profiles of their own: what a worker of a sharded run evaluates `where` over. The file's
    header stays the whole file's, and so do the rows named in errors (not_numbers) while
    the whole `profiles` is alive: a CSV snapshot's are found when asked, from its columns
    (engine.language.compile.check_wheres checks before the whole is let go)."""
    index = pa.array(np.asarray(rows, dtype=np.int64))
    return Profiles(
        path=profiles.path, msisdn=profiles.msisdn[rows],
        columns={name: column.take(index) for name, column in profiles.columns.items()},
        tags=profiles.tags.take(index) if profiles.tags is not None else None,
        bad_rows=profiles.bad_rows, header=profiles.header, not_numbers=profiles.not_numbers)


def _column_names(path: Path, suffix: str, fmt: TextFormat) -> list[str]:
    if suffix == ".parquet":
        import pyarrow.parquet as pq
        return [name.lower() for name in pq.read_schema(path).names]
    return read_csv_header(path, fmt)[0]


def _read_parquet(path: Path, wanted: Optional[list[str]]) -> pa.Table:
    """A Parquet snapshot with its column names lower-cased (as a CSV header's are)."""
    # here, not at the top: pyarrow.parquet brings pyarrow.fs and ssl, 25 ms of every start
    # that reads CSV profiles
    import pyarrow.parquet as pq
    names = pq.read_schema(path).names
    lower: dict[str, str] = {}
    for name in names:
        if name.lower() in lower:
            raise LoadError(f"{path}: columns {lower[name.lower()]!r} and {name!r} differ only in case")
        lower[name.lower()] = name
    # ParquetFile, not read_table: a snapshot is one file, and read_table imports
    # pyarrow.dataset (0.5 s of every start here) to be able to read a directory of them
    table = pq.ParquetFile(path).read(columns=None if wanted is None else [lower[n] for n in wanted if n in lower])
    return table.rename_columns([name.lower() for name in table.column_names])


def format_problem(path) -> Optional[str]:
    """Why a profile snapshot at `path` cannot be read, by its name alone (a format is known
    by its suffix: .csv or .parquet); None when it can be."""
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".parquet"):
        return None
    hint = "; a .roar file is a list of MSISDNs: name it under [lists]" if suffix == ".roar" else ""
    return f"unknown profile format {suffix!r}; expected .csv or .parquet{hint}"


def load_profiles(path, columns: Optional[Iterable[str]] = None, fmt: TextFormat = DEFAULT_FORMAT) -> Profiles:
    """Read a `.csv` or `.parquet` snapshot; LoadError on an unreadable file, no msisdn
    column, or rows of which not one holds a usable MSISDN. Column names are lower-cased.
    With `columns`, only those attributes (and `msisdn`) are read; named columns the file
    does not have are simply absent from the result (`header` lists them all).

    CSV columns are typed over all their non-null values of the rows kept: int64 if every value
    is an integer, else float64 if every value is a number, else string. Values are trimmed of
    white space and a value in `fmt.null_values` (empty and `\\N` by default) is null. Parquet
    columns keep their Arrow type (integers and booleans -> int64, floats and decimals ->
    float64, dates and timestamps -> `YYYY-MM-DD`).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    refuse_special(path, "profiles")
    if not path.is_file():
        raise LoadError(f"{path}: no such profile file")
    problem = format_problem(path)
    if problem:
        # before the header is read: a Roaring bitmap read as CSV was "not UTF-8 text"
        raise LoadError(f"{path}: {problem}")
    try:
        header = _column_names(path, suffix, fmt)
        wanted = None
        if columns is not None:
            wanted = ["msisdn"] + sorted(set(columns) - {"msisdn"} & set(header))
        if suffix == ".csv":
            table, attribute = read_csv_strings(path, "msisdn", wanted, fmt), _csv_attribute(fmt.null_values)
        else:       # .parquet: format_problem let no other suffix through
            table, attribute = _read_parquet(path, wanted), _parquet_attribute
    except (OSError, pa.ArrowException) as error:
        # the system's reason alone: the path is said once, and no errno (as lists say it)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise LoadError(f"{path}: cannot read profiles: {reason}") from error
    if "msisdn" not in table.column_names:
        raise LoadError(f"{path}: no msisdn column")
    if len(set(table.column_names)) < table.num_columns:
        raise LoadError(f"{path}: duplicate column names")

    # Columns are taken out of the table one by one so that each string column is freed once
    # typed: a snapshot of tens of millions of rows must fit in a few GB.
    if table.num_rows == 0:
        # as an empty list is said: every campaign that reads a profile then matches nobody
        log.warning("%s: the profile snapshot holds no subscriber (no rows): no campaign can match", path)
    raw = {name: table.column(name) for name in table.column_names}
    del table
    text = raw.pop("msisdn")
    numbers, valid = _msisdns(text, path)
    bad = np.flatnonzero(~valid)
    if len(bad) and len(bad) == len(numbers):
        # one line: no warning of the rows skipped before it (helper-124)
        raise LoadError(f"{path}: not one of its {len(bad):,} rows holds a usable MSISDN ({MSISDN_RULE}); "
                        f"the first is {_shown(text[0])}")
    if len(bad):    # a take, even of nothing, joins the reader's chunks: a copy of the column
        warn_bad_msisdns(path, "data row", bad + 1, text.take(bad))
    del text
    msisdn, rows = _first_position_last_row(numbers, valid)

    def typed(name: str, column: pa.ChunkedArray):
        if rows is not None:
            column = column.take(rows)
        if name == "tags":
            return _tags(column.combine_chunks(), path, fmt.null_values if suffix == ".csv" else ())
        return attribute(column, name, path).combine_chunks()

    # Arrow's kernels run without the interpreter's lock: the columns are typed side by side
    # (L's snapshot, 30M rows and 5 columns read, on 2 cores: 5.6-7.5 s one at a time, 4.5-5.1
    # s four at a time), no more at once than there are threads, so that only that many
    # columns' intermediate text is held besides the columns read
    typed_columns = {}
    threads = max(1, min(len(raw), LOAD_THREADS, usable_cores()))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sigmatch-profiles") as pool:
        running: deque = deque()
        for name in list(raw):
            if len(running) == threads:
                # the oldest first: in the file's column order, so that the error said is
                # the one a column at a time would have met first
                done, job = running.popleft()
                typed_columns[done] = job.result()
            running.append((name, pool.submit(typed, name, raw.pop(name))))
        for done, job in running:
            typed_columns[done] = job.result()
    tags = typed_columns.pop("tags", None)
    columns = typed_columns
    profiles = Profiles(path=path, msisdn=msisdn, columns=columns, tags=tags, bad_rows=len(bad),
                        header=tuple(header))
    if suffix == ".csv":
        profiles.not_numbers = _NotNumbers(profiles, rows)
    return profiles


class _NotNumbers(Mapping):
    """Profiles.not_numbers of a CSV snapshot, found when asked: only the error of a `where`
    that compares a text column with a number asks, and a regex over every value of every
    text column costs a tenth of a second per 2M rows at every start. Reads the columns
    the profiles hold at the time (none once the engine has compiled and dropped them)."""

    def __init__(self, profiles: Profiles, rows: Optional[np.ndarray]):
        # weakly: the profiles hold this mapping, and a cycle would keep a snapshot's
        # columns alive until the cycle collector runs
        self._profiles = weakref.ref(profiles)
        self._rows = rows               # column index -> row of the file (0-based), None: the same
        self._found: dict[str, Optional[tuple[int, str]]] = {}

    def _text_columns(self) -> list[str]:
        return [name for name, column in self._columns().items() if pa.types.is_string(column.type)]

    def _columns(self) -> dict:
        profiles = self._profiles()
        return profiles.columns if profiles is not None else {}

    def __getitem__(self, name: str) -> tuple[int, str]:
        if name not in self._found:
            column = self._columns().get(name)
            first = None
            if column is not None and pa.types.is_string(column.type):
                first = _first_not_a_number(column)
            if first is not None:
                row = int(self._rows[first[0]]) if self._rows is not None else first[0]
                first = (row + 1, first[1])
            self._found[name] = first
        if self._found[name] is None:
            raise KeyError(name)
        return self._found[name]

    def __iter__(self):
        return iter([name for name in self._text_columns() if name in self])

    def __len__(self) -> int:
        return sum(1 for _ in self)



def _shown(value) -> str:
    from engine.privacy import mask_msisdn
    value = value.as_py() if hasattr(value, "as_py") else value
    return "empty" if value is None or str(value).strip() == "" else repr(mask_msisdn(str(value).strip()))


def _first_not_a_number(values: pa.Array) -> Optional[tuple[int, str]]:
    """For a string column some of whose values are numbers: (index, value) of its first
    value that is not one; None when no value is a number (a text column by nature)."""
    numeric = pc.match_substring_regex(values, _NUMBER)
    if not pc.any(numeric).as_py():
        return None
    index = pc.index(pc.fill_null(numeric, True), False).as_py()
    return (index, values[index].as_py()) if index >= 0 else None


def _msisdns(column: pa.ChunkedArray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    column = _decoded(column)
    kind = column.type
    if pa.types.is_integer(kind):
        values = pc.fill_null(column, 0).to_numpy()  # 0 is not an MSISDN either
        valid = (values > 0) & (values < MSISDN_LIMIT)
        return np.where(valid, values, 0).astype(np.uint64), valid
    if _is_text(kind):
        return parse_msisdns(pc.cast(column, pa.string()))
    raise LoadError(f"{path}: column 'msisdn' has type {column.type}; expected integers or strings")


def _first_position_last_row(numbers: np.ndarray, valid: np.ndarray):
    """-> (unique MSISDNs in order of first appearance, the row each takes its attributes from).

    The rows are None when they are simply every row, so that no column needs a take.
    """
    kept = np.flatnonzero(valid)
    candidates = numbers[kept]
    if len(candidates) < 2 or (candidates[1:] > candidates[:-1]).all():
        # a warehouse exports by its key: strictly increasing numbers are unique, without
        # the sort (0.08 s per 2M numbers)
        return candidates, None if len(kept) == len(numbers) else kept
    ordered = np.sort(candidates)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if len(repeated) == 0:
        return candidates, None if len(kept) == len(numbers) else kept
    # Duplicates are rare: only the rows of repeated numbers go through the (3x slower) argsort.
    involved = pc.is_in(candidates, value_set=pa.array(repeated)).to_numpy(zero_copy_only=False)
    involved = np.flatnonzero(involved)
    order = involved[np.argsort(candidates[involved], kind="stable")]
    grouped = candidates[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    ends = np.r_[starts[1:], len(order)] - 1
    keep = np.ones(len(candidates), dtype=bool)
    keep[order] = False
    keep[order[starts]] = True
    rows = kept.copy()
    rows[order[starts]] = kept[order[ends]]
    return candidates[keep], rows[keep]


def _csv_attribute(null_values):
    """The typing of a CSV attribute column whose values in `null_values` (once trimmed) are null."""
    return lambda column, name, path: _typed_csv_column(column, null_values)


# Bytes by what they allow a column to be: all digits, an integer (with signs), a number
# (with a point or an exponent). Read from the column's text buffers at memory speed, they
# spare the regexes (RE2 over every value) for all but signed-integer columns.
_DIGIT_BYTES = np.zeros(256, bool)
_DIGIT_BYTES[list(b"0123456789")] = True
_SIGNED_BYTES = _DIGIT_BYTES.copy()
_SIGNED_BYTES[list(b"+-")] = True
_NUMBER_BYTES = _SIGNED_BYTES.copy()
_NUMBER_BYTES[list(b".eE")] = True


def _bytes_used(values, with_nulls: bool = False) -> np.ndarray:
    """Which of the 256 byte values occur in the strings of `values` (bool[256]): in its
    non-null ones, or with `with_nulls` in all its text buffers (what null slots hold too:
    a superset, for a test that may only err towards the slow path)."""
    used = np.zeros(256, bool)
    if not with_nulls:
        values = pc.drop_null(values)
    for chunk in values.chunks if isinstance(values, pa.ChunkedArray) else [values]:
        if not len(chunk) or chunk.buffers()[2] is None:
            continue
        offsets = np.frombuffer(chunk.buffers()[1], np.int64 if pa.types.is_large_string(chunk.type) else np.int32)
        start, end = int(offsets[chunk.offset]), int(offsets[chunk.offset + len(chunk)])
        data = np.frombuffer(chunk.buffers()[2], np.uint8)[start:end]
        used |= np.bincount(data, minlength=256).astype(bool)
    return used


def _typed_csv_column(column: pa.ChunkedArray, null_values) -> pa.ChunkedArray:
    values = _cleaned(column, null_values)
    if isinstance(values, pa.Array):
        values = pa.chunked_array([values])
    used = _bytes_used(values)
    if used[~_NUMBER_BYTES].any():
        return values                       # a letter, a space, a comma: not a number anywhere
    # Only unsigned digits: every value matches _INTEGER. With signs, the regex decides (a
    # failed cast costs as much as a full one, and Arrow's integer parser takes "0x1f").
    if not used[~_SIGNED_BYTES].any() and (
            not used[~_DIGIT_BYTES].any() or pc.all(pc.match_substring_regex(values, _INTEGER)).as_py() is not False):
        try:
            return pc.cast(pc.utf8_ltrim(values, "+"), pa.int64())
        except pa.ArrowInvalid:  # beyond int64: still a number
            pass
    # Over [0-9+-.eE] Arrow's float parser accepts exactly the strings _NUMBER matches (no
    # "inf" or "nan" without letters; tests/test_loaders.py holds the two together): a
    # column that fails to cast has a value that is not a number, and stays text.
    try:
        return pc.cast(values, pa.float64())
    except pa.ArrowInvalid:
        return values


def _parquet_attribute(column: pa.ChunkedArray, name: str, path: Path) -> pa.ChunkedArray:
    if _is_text_dictionary(column.type):
        # a brand or a plan: a few distinct values over a province's rows, typed once each
        return _by_dictionary(column, lambda values: _parquet_attribute(pa.chunked_array([values]), name, path))
    column = _decoded(column)
    kind = column.type
    try:
        if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
            return pc.cast(column, pa.int64())
        # Warehouses export money (ARPU) as decimals: they compare as numbers.
        if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            return pc.cast(column, pa.float64())
        if _is_text(kind):
            return _cleaned(pc.cast(column, pa.string()))
        if pa.types.is_date(kind) or pa.types.is_timestamp(kind):
            # date32 -> string is ISO `YYYY-MM-DD` (a timestamp gives its local date), and ten
            # times faster than strftime.
            return pc.cast(pc.cast(column, pa.date32()), pa.string())
    except pa.ArrowInvalid as error:  # e.g. a uint64 beyond int64
        if pa.types.is_unsigned_integer(kind):
            # Arrow's words print the value and 2^63 - 1 as digit runs, which the logs mask
            # as if they were MSISDNs
            raise LoadError(f"{path}: column {name!r}: an unsigned value above 2^63 - 1, the largest "
                            "integer sigmatch compares") from error
        raise LoadError(f"{path}: column {name!r}: {error}") from error
    raise LoadError(f"{path}: column {name!r} has unsupported type {kind}")


def _tags(column: pa.Array, path: Path, null_values=()) -> pa.ListArray:
    if _is_text_dictionary(column.type):
        # the tags of a province's rows are a few thousand distinct strings: each is split
        # once, and the rows take their lists (on L, 5.4 of the load's 16 s went splitting
        # 30M strings)
        lists = _tags(column.dictionary, path, null_values).take(column.indices)
        counts = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
        offsets = np.zeros(len(lists) + 1, dtype=np.int32)
        np.cumsum(counts, out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), lists.flatten())
    column = _decoded(column)
    kind = column.type
    if _is_text(kind):
        lists = pc.split_pattern(pc.cast(column, pa.string()), "|")
    elif (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and _is_text(kind.value_type):
        lists = column
    else:
        raise LoadError(f"{path}: column 'tags' has type {kind}; expected strings or list<string>")
    names = pc.utf8_trim_whitespace(pc.cast(pc.list_flatten(lists), pa.string()))
    owners = pc.list_parent_indices(lists)
    # an empty tag, or a null marker among the tags (`a|\N`), is no tag
    keep = pc.fill_null(pc.invert(pc.is_in(names, value_set=pa.array(["", *null_values], pa.string()))), False)
    counts = np.bincount(owners.filter(keep).to_numpy(), minlength=len(lists))
    offsets = np.zeros(len(lists) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), names.filter(keep))


# Bytes that may belong to white space utf8_trim_whitespace removes: ASCII's, and any byte
# of a multi-byte character (U+00A0, U+3000, ...)
_SPACE_BYTES = np.zeros(256, bool)
_SPACE_BYTES[[0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20]] = True
_SPACE_BYTES[0x80:] = True


def _cleaned(values: pa.Array, null_values=("",)) -> pa.Array:
    """Trimmed strings; empty (or blank), or one of `null_values` once trimmed, becomes null."""
    # Most columns hold no white space at all: then trimming changes nothing, and is skipped.
    trimmed = pc.utf8_trim_whitespace(values) if _bytes_used(values, with_nulls=True)[_SPACE_BYTES].any() else values
    nulls = pa.array(sorted({"", *null_values}), pa.string())
    found = pc.is_in(trimmed, value_set=nulls)
    if not pc.any(found).as_py():
        return trimmed
    return pc.if_else(pc.invert(found), trimmed, pa.scalar(None, pa.string()))


def _is_text_dictionary(kind: pa.DataType) -> bool:
    return pa.types.is_dictionary(kind) and _is_text(kind.value_type)


def _by_dictionary(column: pa.ChunkedArray, typed) -> pa.ChunkedArray:
    """A dictionary column's values, typed by `typed` (an array of values -> the chunked
    array of their typed values) on its distinct values only, then spread over its rows:
    what typing every row would give, as the typing of a value depends on that value
    alone. A null index stays null."""
    column = column.unify_dictionaries()
    if column.num_chunks == 0:
        return typed(pa.array([], column.type.value_type))
    values = typed(column.chunk(0).dictionary).combine_chunks()
    return pa.chunked_array([values.take(chunk.indices) for chunk in column.chunks], values.type)


def _decoded(column):
    # pandas writes categorical columns as dictionaries; their values are what we type.
    if pa.types.is_dictionary(column.type):
        return pc.cast(column, column.type.value_type)
    return column


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)
