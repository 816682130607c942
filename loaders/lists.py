"""Lists of MSISDNs (SPEC §1.2): `.txt`, `.csv` and `.roar` files -> sorted, unique uint64 arrays.

The MSISDN parsing here is shared with the profile loader: a number in a profile is read the
way a number in a list is.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap, BitMap64

from engine.errors import LoadError
from engine.privacy import mask_msisdn
from engine.wording import plural
from loaders import refuse_special
from loaders.tabular import DEFAULT_FORMAT, TextFormat, read_csv_strings, read_lines

__all__ = ["load_list", "read_roaring"]

log = logging.getLogger("sigmatch.loaders")

MSISDN_LIMIT = 10**15  # MSISDNs have at most 15 digits

# Roaring portable format, 32-bit cookie (RoaringFormatSpec, "Cookie header").
SERIAL_COOKIE_NO_RUNCONTAINER = 12346
SERIAL_COOKIE = 12347

_DIGITS_PATTERN = r"^[1-9][0-9]{0,14}$"

# One rule for a number wherever it comes from (profiles, lists, --watch, explain --msisdn,
# the lookup's paths), said the same way in every refusal; no example number, which could
# suggest a form the profiles do not use (and would be masked in any case)
# White space and dashes in a number as written, spelled out: Python's \s and RE2's (Arrow's)
# differ (\v, U+00A0 ...), and typed numbers and files' numbers follow one rule
_SEPARATORS = r"[ \t\n\v\f\r-]"
_SIGNED = r"^[^0-9]*-|-[^0-9]*$"      # a dash before the first digit (+-86 ...) or after the last
MSISDN_RULE = ("1 to 15 digits, the first not 0, once spaces, dashes between them and one leading + or 00 "
               "are dropped")
# why a number typed with its country code may not be found: nothing is added or removed
NOT_FOUND_HINT = ("numbers are compared as the profiles write them: a leading + or 00 is dropped, "
                  "a country code is not, so +86 135... is 86135..., not 135...")


def load_list(path, fmt: TextFormat = DEFAULT_FORMAT) -> np.ndarray:
    """A list file -> uint64 array, sorted and unique. The suffix picks the format.

    `.txt`: one MSISDN per line; blank lines and lines starting with `#` are ignored.
    `.csv`: a column `msisdn`. Bad numbers in either are skipped with a warning.
    `.roar`: a Roaring bitmap, 32- or 64-bit portable serialization; every value is kept.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    refuse_special(path, "list")
    try:
        if suffix == ".roar":
            return _roaring_values(path)
        if suffix == ".txt":
            text, unit = read_lines(path, fmt), "line"
        elif suffix == ".csv":
            table = read_csv_strings(path, "msisdn", include=["msisdn"], fmt=fmt)
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
    if len(bad) and not valid.any():
        # one line: the entries skipped are named here, not in a warning before it (helper-124)
        raise LoadError(f"{path}: not one of its {len(bad):,} entries is a usable MSISDN ({MSISDN_RULE}): "
                        f"{bad_msisdns_text(unit, bad + 1, text.take(bad))}; a list must never silently lose "
                        "its numbers")
    warn_bad_msisdns(path, unit, bad + 1, text.take(bad))
    if not valid.any():
        log.warning("%s: the list is empty", path)
    return sorted_unique(numbers[valid])


def read_roaring(data: bytes) -> BitMap | BitMap64:
    """A Roaring bitmap in the 32-bit or 64-bit portable serialization; ValueError if neither.

    The 32-bit format opens with a cookie; the 64-bit one with its bucket count as a uint64.
    """
    short32 = None
    if _has_32bit_cookie(data):
        bitmap = _deserialize(BitMap, data)
        # A 64-bit bitmap of 12346 buckets, or 12347 + k * 65536, opens with what looks like a
        # cookie. Only a 32-bit reading that accounts for every byte is believed.
        if bitmap is not None and len(bitmap.serialize()) == len(data):
            return bitmap
        if bitmap is not None:
            short32 = len(bitmap.serialize())
    bitmap = _deserialize(BitMap64, data)
    if bitmap is None:
        if short32 is not None:
            raise ValueError(f"{plural(len(data) - short32, 'byte')} left after the 32-bit bitmap (its "
                             f"{short32:,} bytes); two bitmaps joined, or padding?")
        raise ValueError("not a Roaring bitmap in the 32-bit or 64-bit portable serialization")
    # pyroaring reads one bitmap and ignores what follows: two bitmaps joined with `cat`, or
    # padding. A black list must never silently lose numbers, so every byte must be accounted for.
    used = len(bitmap.serialize())
    if used < len(data):
        raise ValueError(f"{plural(len(data) - used, 'byte')} left after the bitmap (its {used:,} bytes); "
                         "two bitmaps joined, or padding?")
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
    if len(values) and not possible:
        raise LoadError(f"{path}: not one of its {plural(len(values), 'value')} is a usable MSISDN (1 to 15 digits); "
                        "a list must never silently lose its numbers")
    if possible < len(values):
        log.warning("%s: %s (0 or more than 15 digits) and can never match",
                    path, plural(len(values) - possible, "value is not an MSISDN", "values are not MSISDNs"))
    if not len(values):
        log.warning("%s: the list is empty", path)
    return values


def _plain_msisdns(text):
    """Does each string match _DIGITS_PATTERN (null for null)? Three plain kernels instead of
    the regex: RE2 over 30M numbers costs seconds, these tens of milliseconds per 2M."""
    digits = pc.ascii_is_decimal(text)      # false for "", true for ASCII 0-9 only
    short = pc.less_equal(pc.binary_length(text), 15)
    return pc.and_(pc.and_(digits, short), pc.invert(pc.starts_with(text, "0")))


def parse_msisdns(text: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Strings -> (uint64 numbers, valid mask); an invalid or null entry gives 0 and False.

    Valid: 1 to 15 ASCII digits, the first not 0, once white space and dashes are removed and
    one leading '+' or '00' (the international prefix) is dropped: `+86 138-0013-8000` and
    `008613800138000` are 8613800138000. A dash before the first digit or after the last is
    a sign, not a separator: `-8613800138000` and `+-86...` are not MSISDNs.
    """
    clean = pc.fill_null(_plain_msisdns(text), False)
    valid = clean.to_numpy(zero_copy_only=False)
    if valid.all():  # the usual case; filtering tens of millions of strings is not free
        return pc.cast(text, pa.uint64()).to_numpy(), valid
    numbers = np.zeros(len(text), dtype=np.uint64)
    numbers[valid] = pc.cast(text.filter(clean), pa.uint64()).to_numpy()
    # Written by hand or by a CRM: only the entries that are not plain digits pay for this.
    rest = np.flatnonzero(~valid)
    taken = text.take(rest)
    squeezed = pc.replace_substring_regex(taken, _SEPARATORS, "")
    stripped = pc.replace_substring_regex(squeezed, r"^(\+|00)", "")
    signed = pc.fill_null(pc.match_substring_regex(taken, _SIGNED), False)
    fixed = pc.and_(pc.fill_null(pc.match_substring_regex(stripped, _DIGITS_PATTERN), False), pc.invert(signed))
    fixed_rows = rest[fixed.to_numpy(zero_copy_only=False)]
    numbers[fixed_rows] = pc.cast(stripped.filter(fixed), pa.uint64()).to_numpy()
    valid[fixed_rows] = True
    return numbers, valid


def normalise_msisdn(text: str) -> Optional[int]:
    """One MSISDN as a person types it (`+86 138-0013-8000`, `008613800138000`) -> its number,
    by the rules of `parse_msisdns`; None when it is not one."""
    if re.search(_SIGNED, text):
        return None     # a sign (-1), or a dash with nothing after it: not a separator
    digits = re.sub(_SEPARATORS, "", text)
    digits = digits[1:] if digits.startswith("+") else digits[2:] if digits.startswith("00") else digits
    return int(digits) if re.fullmatch(_DIGITS_PATTERN, digits) else None


def warn_bad_msisdns(path: Path, unit: str, where: np.ndarray, values: pa.Array) -> None:
    """One warning line for the entries skipped (`unit` `where[i]` held `values[i]`): how many,
    and the first few, never showing a whole MSISDN. A wrong file (the wrong column, say)
    must not write tens of millions of log lines."""
    if not len(where):
        return
    noun = "entry" if len(where) == 1 else "entries"
    log.warning("%s: %s %s skipped, not an MSISDN (%s)", path, f"{len(where):,}", noun,
                bad_msisdns_text(unit, where, values))


def bad_msisdns_text(unit: str, where: np.ndarray, values: pa.Array) -> str:
    """The first few entries that are no MSISDN (`unit` `where[i]` held `values[i]`), masked:
    `line 1 '123*********3456', line 3 empty, ...`."""
    shown = []
    for number, value in zip(where[:3].tolist(), values[:3].to_pylist()):
        value = "" if value is None else str(value).strip()
        shown.append(f"{unit} {number:,} {mask_msisdn(value)!r}" if value else f"{unit} {number:,} empty")
    return ", ".join(shown) + (", ..." if len(where) > 3 else "")


def sorted_unique(values: np.ndarray) -> np.ndarray:
    # np.unique on integers goes through a hash table in NumPy 2.3+, which is ~20x slower than
    # sorting for tens of millions of MSISDNs.
    values = np.sort(values)
    first = np.ones(len(values), dtype=bool)
    first[1:] = values[1:] != values[:-1]
    return values[first]
