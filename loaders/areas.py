"""Areas (SPEC §1.3): named sets of cell ids from `.txt` or `.csv` files.

An area is small and made by hand, so a bad entry is an error rather than a skipped line:
a mistyped cell id would silently shrink the area a campaign targets.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from engine.errors import LoadError
from loaders import refuse_special
from loaders.tabular import DEFAULT_FORMAT, TextFormat, read_csv_strings, read_lines

__all__ = ["load_area"]

MAX_CELL = 2**32 - 1  # 0 is "unknown cell" on the wire and never belongs to an area


def load_area(path, fmt: TextFormat = DEFAULT_FORMAT) -> np.ndarray:
    """An area file -> uint32 cell ids, sorted and unique; a bad id is a LoadError naming its line.

    `.txt`: one cell id per line; blank lines and lines starting with `#` are ignored.
    `.csv`: a column `cell`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    refuse_special(path, "area")
    try:
        if suffix == ".txt":
            lines = read_lines(path, fmt).to_pylist()
            entries = [(number, line.strip()) for number, line in enumerate(lines, 1)
                       if line.strip() and not line.strip().startswith("#")]
            unit = "line"
        elif suffix == ".csv":
            cells = read_csv_strings(path, "cell", include=["cell"], fmt=fmt).column("cell").to_pylist()
            entries, unit = enumerate(cells, 1), "row"
        else:
            raise LoadError(f"{path}: unknown area format {suffix!r}; expected .txt or .csv")
    except OSError as error:
        raise LoadError(f"{path}: cannot read area: {error.strerror or error}") from None
    cells = [_cell(text, f"{path}: {unit} {number}") for number, text in entries]
    return np.unique(np.array(cells, dtype=np.uint32))


def _cell(text: str | None, where: str) -> int:
    text = (text or "").strip()
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise LoadError(f"{where}: cell id {text!r} is not an integer")
    cell = int(text)
    if cell == 0:
        raise LoadError(f"{where}: cell id 0 means an unknown cell and cannot be part of an area")
    if not 1 <= cell <= MAX_CELL:
        raise LoadError(f"{where}: cell id {cell:,} is out of range 1 to {MAX_CELL:,}")
    return cell
