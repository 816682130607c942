"""CSV and text files as operators export them: the encoding a warehouse writes (GBK from a
Chinese BI tool, UTF-8 with or without a BOM), NULL as `\\N` (Hive, MySQL), quoted values
that span lines (RFC 4180: an address), a header in any case (`MSISDN`), and `;` or tab as
separator (a spreadsheet's export). Profiles, lists and areas all read through here.

Every failure is a LoadError that names the file and, where one is to blame, the line.
"""
from __future__ import annotations

import codecs
import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from engine.errors import LoadError

__all__ = ["TextFormat", "read_csv_header", "read_csv_strings", "read_lines", "MAX_HEADER_BYTES"]

log = logging.getLogger("sigmatch.loaders")

# A header line longer than this is not a header (a binary file, a wrong export): refused
# after reading this much, never read whole.
MAX_HEADER_BYTES = 1 << 20
# Separators recognised besides the comma, with the names an error or a log line gives them
SEPARATORS = {",": "','", ";": "';'", "\t": "a tab", "|": "'|'"}


@dataclass(frozen=True)
class TextFormat:
    """How the text files of one configuration are written (`[engine] encoding` and
    `null_values`). `encoding` is any codec Python knows; a UTF-8 BOM is skipped whatever
    it says. A value equal to one of `null_values`, once trimmed, is null."""
    encoding: str = "utf-8"
    null_values: tuple[str, ...] = ("", "\\N")

    @property
    def name(self) -> str:
        """The encoding as an error names it."""
        return "UTF-8" if codecs.lookup(self.encoding).name == "utf-8" else self.encoding

    @property
    def codec(self) -> str:
        # utf-8-sig reads files with and without a BOM alike
        return "utf-8-sig" if codecs.lookup(self.encoding).name == "utf-8" else self.encoding


DEFAULT_FORMAT = TextFormat()


def _undecodable(path: Path, fmt: TextFormat) -> LoadError:
    """The error for a file that does not decode in `fmt.encoding`, naming the first line
    that does not (read line by line, so a huge file is never held whole)."""
    decoder = codecs.getincrementaldecoder(fmt.codec)("strict")
    with open(path, "rb") as file:
        for number, line in enumerate(file, 1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError as error:
                return LoadError(f"{path}: line {number:,}: not {fmt.name} text (byte {error.start + 1:,} "
                                 f"of the line); set [engine] encoding to the file's encoding")
    return LoadError(f"{path}: not {fmt.name} text; set [engine] encoding to the file's encoding")


def read_csv_header(path: Path, fmt: TextFormat = DEFAULT_FORMAT) -> tuple[list[str], str]:
    """(column names of the first line, lower-cased; the separator). [] for an empty file.
    Reads at most MAX_HEADER_BYTES. The separator is the comma unless the line has none and
    splits on `;`, a tab or `|`. LoadError for a longer line, undecodable bytes, a line the
    csv module cannot parse or two columns whose names differ only in case."""
    with open(path, "rb") as file:
        line = file.readline(MAX_HEADER_BYTES + 1)
    if len(line) > MAX_HEADER_BYTES:
        raise LoadError(f"{path}: line 1: the header line is longer than {MAX_HEADER_BYTES:,} bytes")
    try:
        text = line.decode(fmt.codec).rstrip("\r\n")
    except UnicodeDecodeError as error:
        raise LoadError(f"{path}: line 1: not {fmt.name} text (byte {error.start + 1:,} of the line); "
                        "set [engine] encoding to the file's encoding") from None
    separator = ","
    if "," not in text:
        separator = next((s for s in (";", "\t", "|") if s in text), ",")
    try:
        names = next(csv.reader([text], delimiter=separator), None) or []
    except csv.Error as error:      # e.g. a field over the csv module's 128 KiB limit
        raise LoadError(f"{path}: line 1: malformed CSV header: {error}") from None
    names = [name.strip().lower() for name in names]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise LoadError(f"{path}: line 1: columns {seen[name] + 1} and {i + 1} are both named {name!r} "
                            "(names are read without regard to case)")
        seen[name] = i
    return names, separator


def read_csv_strings(path: Path, required: str, include: list[str] | None = None,
                     fmt: TextFormat = DEFAULT_FORMAT) -> pa.Table:
    """A CSV file with every column as strings (so `007` stays `007`), names lower-cased;
    values in `fmt.null_values` are null. `include`: only these columns (lower case).

    Quoted values may span lines at any size: the fast parser runs first and, only when it
    meets a line break inside a value, the file is read again with them allowed."""
    path = Path(path)
    names, separator = read_csv_header(path, fmt)
    if not names:
        raise LoadError(f"{path}: empty CSV file, expected a header line")
    if required not in names:
        found = f"; the header {', '.join(map(repr, names[:8]))} was split on {SEPARATORS[separator]}"
        raise LoadError(f"{path}: no {required} column{found}")
    if separator != ",":
        log.info("%s: columns separated by %s", path, SEPARATORS[separator])
    for newlines in (False, True):
        try:
            # We pass the names we parsed so that pyarrow's view of the header cannot differ from ours.
            return pa_csv.read_csv(
                path,
                read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1, encoding=fmt.codec),
                parse_options=pa_csv.ParseOptions(delimiter=separator, newlines_in_values=newlines),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()), include_columns=include,
                    null_values=list(fmt.null_values), strings_can_be_null=True),
            )
        except UnicodeDecodeError:
            raise _undecodable(path, fmt) from None
        except pa.ArrowInvalid as error:
            text = str(error)
            if "UTF8" in text or "UTF-8" in text:
                raise _undecodable(path, fmt) from None
            if not newlines and _broken_by_a_line_break(text):
                continue
            raise LoadError(f"{path}: malformed CSV: {_without_option_names(text)}") from None
    raise AssertionError("unreachable")


def _broken_by_a_line_break(message: str) -> bool:
    """Does pyarrow's error say that a quoted value held a line break? It says so in two ways:
    a row cut into too few columns, or a value that straddles its read blocks."""
    return "newlines_in_values" in message or "straddling" in message or "Expected" in message


def _without_option_names(message: str) -> str:
    # pyarrow's messages name its own options, which a sigmatch user cannot set
    for hint in (" (see newlines_in_values)", "; see newlines_in_values"):
        message = message.replace(hint, "")
    return message.removeprefix("CSV parse error: ")


def read_lines(path: Path, fmt: TextFormat = DEFAULT_FORMAT) -> pa.Array:
    """The lines of a text file as one string array (line N at index N - 1). LoadError
    naming the line when the file does not decode in `fmt.encoding`."""
    try:
        text = path.read_bytes().decode(fmt.codec).removesuffix("\n")
    except UnicodeDecodeError:
        raise _undecodable(path, fmt) from None
    lines = pc.list_flatten(pc.split_pattern(pa.array([text], pa.large_string()), "\n"))
    return pc.utf8_rtrim(lines, "\r")
