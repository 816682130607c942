"""Lists of MSISDNs (SPEC §1.2): `.txt`, `.csv` and `.roar` files -> sorted, unique uint64 arrays.

The MSISDN parsing here is shared with the profile loader: a number in a profile is read the
way a number in a list is.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from pyroaring import BitMap, BitMap64

from engine.errors import LoadError
from engine.privacy import mask_msisdn

__all__ = ["load_list", "read_roaring"]

log = logging.getLogger("sigmatch.loaders")

MSISDN_LIMIT = 10**15  # MSISDNs have at most 15 digits
# Every bad entry is logged up to this many per file, then one summary: a wrong file (say, the
# wrong column) must not write tens of millions of log lines.
MAX_WARNINGS = 100

# Roaring portable format, 32-bit cookie (RoaringFormatSpec, "Cookie header").
SERIAL_COOKIE_NO_RUNCONTAINER = 12346
SERIAL_COOKIE = 12347

# A header line longer than this is not a header (a binary file, a wrong export): refused
# after reading this much, never read whole.
MAX_HEADER_BYTES = 1 << 20

_DIGITS_PATTERN = r"^[1-9][0-9]{0,14}$"
_MSISDN_PATTERN = r"^\+?[1-9][0-9]{0,14}$"  # once trimmed


def load_list(path) -> np.ndarray:
    """A list file -> uint64 array, sorted and unique. The suffix picks the format.

    `.txt`: one MSISDN per line; blank lines and lines starting with `#` are ignored.
    `.csv`: a column `msisdn`. Bad numbers in either are skipped with a warning.
    `.roar`: a Roaring bitmap, 32- or 64-bit portable serialization; every value is kept.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".roar":
            return _roaring_values(path)
        if suffix == ".txt":
            text, unit = read_lines(path), "line"
        elif suffix == ".csv":
            table = read_csv_strings(path, "msisdn", include=["msisdn"])
            text, unit = table.column("msisdn"), "row"
        else:
            raise LoadError(f"{path}: unknown list format {suffix!r}; expected .txt, .csv or .roar")
    except OSError as error:
        raise LoadError(f"{path}: cannot read list: {error.strerror or error}") from error
    numbers, valid = parse_msisdns(text)
    bad = np.flatnonzero(~valid)
    if unit == "line":  # blank lines and comments are not numbers, but not mistakes either
        stripped = pc.utf8_trim_whitespace(text.take(bad))
        ignored = pc.or_(pc.equal(stripped, ""), pc.starts_with(stripped, "#"))
        bad = bad[~ignored.to_numpy(zero_copy_only=False)]
    warn_bad_msisdns(path, unit, bad + 1, text.take(bad))
    return sorted_unique(numbers[valid])


def read_roaring(data: bytes) -> BitMap | BitMap64:
    """A Roaring bitmap in the 32-bit or 64-bit portable serialization; ValueError if neither.

    The 32-bit format opens with a cookie; the 64-bit one with its bucket count as a uint64.
    """
    if _has_32bit_cookie(data):
        bitmap = _deserialize(BitMap, data)
        # A 64-bit bitmap of 12346 buckets, or 12347 + k * 65536, opens with what looks like a
        # cookie. Only a 32-bit reading that accounts for every byte is believed.
        if bitmap is not None and len(bitmap.serialize()) == len(data):
            return bitmap
    bitmap = _deserialize(BitMap64, data)
    if bitmap is None:
        raise ValueError("not a Roaring bitmap in the 32-bit or 64-bit portable serialization")
    return bitmap


def _has_32bit_cookie(data: bytes) -> bool:
    cookie = int.from_bytes(data[:4], "little")
    return cookie == SERIAL_COOKIE_NO_RUNCONTAINER or cookie & 0xFFFF == SERIAL_COOKIE


def _deserialize(kind, data: bytes):
    try:
        return kind.deserialize(data)
    except (ValueError, IndexError):  # pyroaring raises IndexError on a buffer cut short
        return None


def _roaring_values(path: Path) -> np.ndarray:
    try:
        bitmap = read_roaring(path.read_bytes())
    except ValueError as error:
        raise LoadError(f"{path}: {error}") from error
    # to_array() fills an array.array in C; asarray wraps its buffer without a copy.
    values = np.asarray(bitmap.to_array()).astype(np.uint64, copy=False)
    possible = np.searchsorted(values, MSISDN_LIMIT) - np.searchsorted(values, 1)
    if possible < len(values):
        log.warning("%s: %d values are not MSISDNs (0 or more than 15 digits) and can never match",
                    path, len(values) - possible)
    return values


def read_lines(path: Path) -> pa.Array:
    """The lines of a text file as one string array (line N at index N - 1)."""
    # Undecodable bytes become U+FFFD so that they spoil only their own line.
    text = path.read_text(encoding="utf-8-sig", errors="replace").removesuffix("\n")
    return pc.list_flatten(pc.split_pattern(pa.array([text], pa.large_string()), "\n"))


def read_csv_header(path: Path) -> list[str]:
    """The column names of a CSV file's first line ([] for an empty file). Reads at most
    MAX_HEADER_BYTES; LoadError for a longer line, bytes that are not UTF-8 or a line the
    csv module cannot parse, naming the file and line 1."""
    with open(path, "rb") as file:
        line = file.readline(MAX_HEADER_BYTES + 1)
    if len(line) > MAX_HEADER_BYTES:
        raise LoadError(f"{path}: line 1: the header line is longer than {MAX_HEADER_BYTES:,} bytes")
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise LoadError(f"{path}: line 1: not UTF-8 text (byte {error.start:,})") from None
    try:
        return next(csv.reader([text.rstrip("\r\n")]), None) or []
    except csv.Error as error:      # e.g. a field over the csv module's 128 KiB limit
        raise LoadError(f"{path}: line 1: malformed CSV header: {error}") from None


def read_csv_strings(path: Path, required: str, include: list[str] | None = None) -> pa.Table:
    """A CSV file with every column as strings (so `007` stays `007`); empty values are null."""
    names = read_csv_header(path)
    if not names:
        raise LoadError(f"{path}: empty CSV file, expected a header line")
    if len(set(names)) < len(names):
        raise LoadError(f"{path}: duplicate column names in the header")
    if required not in names:
        raise LoadError(f"{path}: no {required} column")
    try:
        # We pass the names we parsed so that pyarrow's view of the header cannot differ from ours.
        return pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()), include_columns=include,
                null_values=[""], strings_can_be_null=True),
        )
    except pa.ArrowInvalid as error:
        raise LoadError(f"{path}: malformed CSV: {error}") from error


def parse_msisdns(text: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Strings -> (uint64 numbers, valid mask); an invalid or null entry gives 0 and False.

    Valid: after trimming white space and one leading '+', 1 to 15 ASCII digits, the first not 0.
    """
    clean = pc.fill_null(pc.match_substring_regex(text, _DIGITS_PATTERN), False)
    valid = clean.to_numpy(zero_copy_only=False)
    if valid.all():  # the usual case; filtering tens of millions of strings is not free
        return pc.cast(text, pa.uint64()).to_numpy(), valid
    numbers = np.zeros(len(text), dtype=np.uint64)
    numbers[valid] = pc.cast(text.filter(clean), pa.uint64()).to_numpy()
    # Spaces and a '+' are rare: only the entries that are not plain digits pay for trimming.
    rest = np.flatnonzero(~valid)
    trimmed = pc.utf8_trim_whitespace(text.take(rest))
    fixed = pc.fill_null(pc.match_substring_regex(trimmed, _MSISDN_PATTERN), False)
    fixed_rows = rest[fixed.to_numpy(zero_copy_only=False)]
    numbers[fixed_rows] = pc.cast(pc.utf8_ltrim(trimmed.filter(fixed), "+"), pa.uint64()).to_numpy()
    valid[fixed_rows] = True
    return numbers, valid


def warn_bad_msisdns(path: Path, unit: str, where: np.ndarray, values: pa.Array) -> None:
    """Log skipped entries (`unit` `where[i]` held `values[i]`), never showing a whole MSISDN."""
    for number, value in zip(where[:MAX_WARNINGS].tolist(), values[:MAX_WARNINGS].to_pylist()):
        value = "" if value is None else str(value).strip()
        shown = mask_msisdn(value) if value else "empty"
        log.warning("%s: %s %d: bad MSISDN %s, skipped", path, unit, number, shown)
    if len(where) > MAX_WARNINGS:
        log.warning("%s: %d more bad MSISDNs skipped", path, len(where) - MAX_WARNINGS)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    # np.unique on integers goes through a hash table in NumPy 2.3+, which is ~20x slower than
    # sorting for tens of millions of MSISDNs.
    values = np.sort(values)
    first = np.ones(len(values), dtype=bool)
    first[1:] = values[1:] != values[:-1]
    return values[first]
