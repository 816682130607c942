"""CSV and text files as operators export them: the encoding a warehouse writes (GBK from a
Chinese BI tool, UTF-8 with or without a BOM, UTF-16 from Excel), NULL as `\\N` (Hive,
MySQL), quoted values that span lines (RFC 4180: an address), a header in any case
(`MSISDN`), and `;`, tab or `|` as separator (a spreadsheet's export). Profiles, lists and
areas all read through here.

Every failure is a LoadError that names the file and, where one is to blame, the line.
"""
from __future__ import annotations

import codecs
import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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
# A byte-order mark says what a file is, whatever the configuration says
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig", "UTF-8"), (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
         (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"))


@dataclass(frozen=True)
class TextFormat:
    """How the text files of one configuration are written (`[engine] encoding` and
    `null_values`). `encoding` is any text codec Python knows; a file that opens with a
    byte-order mark (UTF-8 or UTF-16) is read as its mark says. A value equal to one of
    `null_values`, once trimmed, is null."""
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


def _codec(path: Path, fmt: TextFormat) -> tuple[str, str]:
    """(codec, name for errors) of one file: its byte-order mark's, else the configuration's."""
    with open(path, "rb") as file:
        head = file.read(4)
    for bom, codec, name in _BOMS:
        if head.startswith(bom):
            return codec, name
    try:
        return fmt.codec, fmt.name
    except LookupError:
        raise LoadError(f"{path}: unknown encoding {fmt.encoding!r}") from None


def _undecodable(path: Path, fmt: TextFormat, codec: str, name: str) -> LoadError:
    """The error for a file that does not decode, naming the first line that does not (read
    line by line, so a huge file is never held whole)."""
    hint = "set [engine] encoding to the file's encoding"
    with open(path, "rb") as file:
        head = file.read(200)
    if head[1:2] == b"\0" or head[0:1] == b"\0":
        hint = "it looks like UTF-16 without a byte-order mark: set [engine] encoding = \"utf-16-le\" (or -be)"
    if "16" in codec or "32" in codec:
        # lines of UTF-16 are not lines of bytes: no line to name
        return LoadError(f"{path}: not {name} text; {hint}")
    decoder = codecs.getincrementaldecoder(codec)("strict")
    with open(path, "rb") as file:
        for number, line in enumerate(file, 1):
            try:
                decoder.decode(line)
            except UnicodeError as error:
                at = f" (byte {error.start + 1:,} of the line)" if isinstance(error, UnicodeDecodeError) else ""
                return LoadError(f"{path}: line {number:,}: not {name} text{at}; {hint}")
    return LoadError(f"{path}: not {name} text; {hint}")


def read_csv_header(path: Path, fmt: TextFormat = DEFAULT_FORMAT) -> tuple[list[str], str]:
    """(column names of the first line, lower-cased; the separator). [] for an empty file.
    Reads at most MAX_HEADER_BYTES. The separator is the comma unless the line has none and
    splits on `;`, a tab or `|`. LoadError for a longer line, undecodable bytes, a line the
    csv module cannot parse or two columns whose names differ only in case."""
    codec, name = _codec(path, fmt)
    try:
        with open(path, encoding=codec, errors="strict", newline="") as file:
            line = file.readline(MAX_HEADER_BYTES + 1)
    except UnicodeError:
        raise _undecodable(path, fmt, codec, name) from None
    if len(line) > MAX_HEADER_BYTES:
        raise LoadError(f"{path}: line 1: the header line is longer than {MAX_HEADER_BYTES:,} characters")
    text = line.rstrip("\r\n")
    if "\0" in text:
        raise _undecodable(path, fmt, codec, name)
    separator = ","
    if "," not in text:
        separator = next((s for s in (";", "\t", "|") if s in text), ",")
    try:
        names = next(csv.reader([text], delimiter=separator), None) or []
    except csv.Error as error:      # e.g. a field over the csv module's 128 KiB limit
        raise LoadError(f"{path}: line 1: malformed CSV header: {error}") from None
    names = [name.strip().lower() for name in names]
    seen: dict[str, int] = {}
    for i, column in enumerate(names):
        if column in seen:
            raise LoadError(f"{path}: line 1: columns {seen[column] + 1} and {i + 1} are both named {column!r} "
                            "(names are read without regard to case)")
        seen[column] = i
    return names, separator


def read_csv_strings(path: Path, required: str, include: list[str] | None = None,
                     fmt: TextFormat = DEFAULT_FORMAT) -> pa.Table:
    """A CSV file with every column as strings (so `007` stays `007`), names lower-cased;
    values in `fmt.null_values` are null. `include`: only these columns (lower case).

    Quoted values may span lines at any size: the fast parser runs first and, only when it
    meets a line break inside a value, the file is read again with them allowed. A quote
    left open is an error naming its line, never a value that swallows the rest of the file."""
    path = Path(path)
    names, separator = read_csv_header(path, fmt)
    codec, name = _codec(path, fmt)
    if not names:
        raise LoadError(f"{path}: empty CSV file, expected a header line")
    if required not in names:
        found = f"; the header {', '.join(map(repr, names[:8]))} was split on {SEPARATORS[separator]}"
        raise LoadError(f"{path}: no {required} column{found}")
    if separator != ",":
        log.info("%s: columns separated by %s", path, SEPARATORS[separator])
    _check_quotes(path, codec, name, fmt)
    # UTF-8 (with or without a byte-order mark, which sits in the header line skipped below)
    # is decoded by pyarrow itself; any other encoding goes through a Python codec, on one
    # thread: pyarrow's threads with a Python transcoder can hang the process at exit after a
    # decoding error (apache/arrow#43892), and the codec holds the GIL anyway.
    utf8 = codecs.lookup(codec).name in ("utf-8", "utf-8-sig")
    for newlines in (False, True):
        try:
            # We pass the names we parsed so that pyarrow's view of the header cannot differ from ours.
            return pa_csv.read_csv(
                path,
                read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1, encoding="utf8" if utf8 else codec,
                                                use_threads=utf8),
                parse_options=pa_csv.ParseOptions(delimiter=separator, newlines_in_values=newlines),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()), include_columns=include,
                    null_values=list(fmt.null_values), strings_can_be_null=True),
            )
        except UnicodeError:
            raise _undecodable(path, fmt, codec, name) from None
        except pa.ArrowInvalid as error:
            text = str(error)
            if "UTF8" in text or "UTF-8" in text:
                raise _undecodable(path, fmt, codec, name) from None
            if not newlines and _broken_by_a_line_break(text):
                continue
            raise _malformed(path, codec, separator, len(names), text) from None
    raise AssertionError("unreachable")


def _broken_by_a_line_break(message: str) -> bool:
    """Does pyarrow's error say that a quoted value held a line break? It says so in two ways:
    a row cut into too few columns, or a value that straddles its read blocks."""
    return "newlines_in_values" in message or "straddling" in message or "Expected" in message


def _check_quotes(path: Path, codec: str, name: str, fmt: TextFormat) -> None:
    """A quote opened and never closed would make one value of the rest of the file (pyarrow
    accepts it): refuse it, naming the line where it opens. RFC 4180 doubles quotes inside a
    value, so a well-formed file holds an even number of them: counted at C speed, and the
    lines walked only when the count is odd."""
    if "16" not in codec and "32" not in codec:
        # In UTF-8 and the legacy CJK encodings the byte 0x22 is always the quote. numpy
        # compares 64 bytes at a time where bytes.count goes byte by byte: on 2M profiles with
        # a quoted column (4M quotes, 54 MB) 24-34 ms against 76-84 ms of every start.
        quotes = 0
        block = bytearray(8 << 20)
        with open(path, "rb", buffering=0) as file:
            while size := file.readinto(block):
                quotes += int(np.count_nonzero(np.frombuffer(block, np.uint8, size) == 0x22))
        if quotes % 2 == 0:
            return
    try:
        with open(path, encoding=codec, errors="strict", newline="") as file:
            open_at, number = None, 0
            for number, line in enumerate(file, 1):
                if line.count('"') % 2:
                    open_at = None if open_at is not None else number
    except UnicodeError:
        raise _undecodable(path, fmt, codec, name) from None
    if open_at is not None:
        raise LoadError(f"{path}: line {open_at:,}: a quote opens a value that never closes (the file ends "
                        f"inside it at line {number:,})")


def _malformed(path: Path, codec: str, separator: str, nr_columns: int, message: str) -> LoadError:
    """pyarrow names no line: find the first row whose column count is wrong with the csv
    module (only on this error path) and name it."""
    how = "" if separator == "," else f" (columns split on {SEPARATORS[separator]}, as in the header)"
    if "straddl" in message:
        # pyarrow's read blocks are 1 MiB: a longer row (a value of megabytes) cannot be parsed
        with open(path, "rb") as file:
            for number, line in enumerate(file, 1):
                if len(line) > MAX_HEADER_BYTES:
                    return LoadError(f"{path}: line {number:,}: a row longer than {MAX_HEADER_BYTES:,} bytes")
    try:
        with open(path, encoding=codec, errors="strict", newline="") as file:
            reader = csv.reader(file, delimiter=separator)
            next(reader, None)
            for row in reader:
                if len(row) != nr_columns and row:
                    return LoadError(f"{path}: line {reader.line_num:,}: {len(row):,} columns where the header has "
                                     f"{nr_columns:,}{how}")
    except (csv.Error, UnicodeError):
        pass
    for hint in (" (see newlines_in_values)", "; see newlines_in_values"):
        message = message.replace(hint, "")
    return LoadError(f"{path}: malformed CSV{how}: {message.removeprefix('CSV parse error: ')}")


def read_lines(path: Path, fmt: TextFormat = DEFAULT_FORMAT) -> pa.Array:
    """The lines of a text file as one string array (line N at index N - 1). LoadError
    naming the line when the file does not decode in `fmt.encoding` (or its own BOM's)."""
    codec, name = _codec(path, fmt)
    try:
        text = path.read_bytes().decode(codec).removesuffix("\n")
    except UnicodeError:
        raise _undecodable(path, fmt, codec, name) from None
    lines = pc.list_flatten(pc.split_pattern(pa.array([text], pa.large_string()), "\n"))
    return pc.utf8_rtrim(lines, "\r")
