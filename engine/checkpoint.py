"""Checkpoints: the engine's whole mutable state in one file, written atomically.

Layout (little-endian):

    b"SIGMATCH-CHECKPOINT\\n"          magic, 20 bytes
    u32 header length, header (JSON, UTF-8), u32 crc32 of the header
    the sections' bytes, in the header's order, each with its crc32 in the header

The header holds the core's scalars (clock, sequences, stream position), a fingerprint of
what the state belongs to (campaign ids in order, counter names, the layout, the subscriber
numbers' crc32) and the caller's `extra` (the daemon's input positions, sink numbering).
A file is written under a temporary name, fsynced and renamed, so a crash leaves either the
old checkpoint or the new one, never a mix; a damaged file is refused as a whole.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from engine.errors import CheckpointError

if TYPE_CHECKING:
    from engine.api import Engine

__all__ = ["write_checkpoint", "read_checkpoint", "restore_checkpoint", "subscriber_order", "fingerprint",
           "VERSION"]

MAGIC = b"SIGMATCH-CHECKPOINT\n"
VERSION = 1
_DTYPES = {"rows": np.uint8, "contacts": np.uint8, "timers": np.uint8, "funnel": np.uint64,
           "counts": np.uint64, "carry": np.uint8, "subscribers": np.uint64}
_BLOCK = 64 << 20       # sections are checksummed and written in blocks: no copy of a GB state


def fingerprint(engine: "Engine") -> dict:
    msisdn = np.ascontiguousarray(engine.subscribers, dtype=np.uint64)
    return {
        "campaigns": [c.id for c in engine.config.campaigns],
        "counters": [c.name for c in engine.config.counters],
        "subscribers": int(len(msisdn)),
        "subscribers_crc32": zlib.crc32(memoryview(msisdn).cast("B")),
    }


def _blocks(array: np.ndarray):
    view = memoryview(np.ascontiguousarray(array)).cast("B")
    for i in range(0, len(view), _BLOCK):
        yield view[i:i + _BLOCK]


def write_checkpoint(engine: "Engine", path, extra: Optional[dict] = None) -> Path:
    """Write the engine's state to `path` atomically; returns the path."""
    path = Path(path)
    core = engine._core
    # The subscriber order goes along: after a reload it is not the snapshot's own order,
    # and a restarted engine must rebuild it (subscriber_order) before restoring.
    sections = core.state_sections() + [("subscribers", np.ascontiguousarray(engine.subscribers, dtype=np.uint64))]
    described = []
    for name, array in sections:
        crc = 0
        for block in _blocks(array):
            crc = zlib.crc32(block, crc)
        described.append({"name": name, "nbytes": int(array.nbytes), "crc32": crc})
    header = json.dumps({
        "version": VERSION,
        "scalars": core.state_scalars(),
        "fingerprint": fingerprint(engine),
        "sections": described,
        "extra": extra or {},
    }).encode()
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.fchmod(fd, 0o640)
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC)
            f.write(struct.pack("<I", len(header)))
            f.write(header)
            f.write(struct.pack("<I", zlib.crc32(header)))
            for _, array in sections:
                for block in _blocks(array):
                    f.write(block)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def read_checkpoint(path) -> tuple[dict, dict]:
    """(header, sections as NumPy arrays) of a checkpoint file; CheckpointError when it is
    missing, of another version, or damaged anywhere."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise CheckpointError(f"{path}: not a sigmatch checkpoint")
            raw = f.read(4)
            if len(raw) != 4:
                raise CheckpointError(f"{path}: truncated header")
            (length,) = struct.unpack("<I", raw)
            if length > 64 << 20:
                raise CheckpointError(f"{path}: header length {length} is not plausible")
            header_bytes = f.read(length)
            raw = f.read(4)
            if len(header_bytes) != length or len(raw) != 4 or struct.unpack("<I", raw)[0] != zlib.crc32(header_bytes):
                raise CheckpointError(f"{path}: damaged header")
            header = json.loads(header_bytes)
            if header.get("version") != VERSION:
                raise CheckpointError(f"{path}: checkpoint version {header.get('version')}, this engine reads {VERSION}")
            sections = {}
            for section in header["sections"]:
                name, nbytes = section["name"], int(section["nbytes"])
                if name not in _DTYPES:
                    raise CheckpointError(f"{path}: unknown section {name!r}")
                data = bytearray(nbytes)
                if f.readinto(data) != nbytes:
                    raise CheckpointError(f"{path}: truncated in section {name!r}")
                if zlib.crc32(data) != section["crc32"]:
                    raise CheckpointError(f"{path}: section {name!r} is damaged (crc mismatch)")
                sections[name] = np.frombuffer(data, dtype=_DTYPES[name])
            if f.read(1):
                raise CheckpointError(f"{path}: trailing bytes after the last section")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint: {e}") from None
    return header, sections


def subscriber_order(path) -> np.ndarray:
    """The MSISDN of each subscriber index, as the engine that wrote the checkpoint had them."""
    _, sections = read_checkpoint(path)
    if "subscribers" not in sections:
        raise CheckpointError(f"{path}: no subscriber order in this checkpoint")
    return sections["subscribers"]


def restore_checkpoint(engine: "Engine", path) -> dict:
    """Load a checkpoint into an engine built from the same configuration and profiles;
    returns the `extra` it was written with."""
    header, sections = read_checkpoint(path)
    mine, theirs = fingerprint(engine), header["fingerprint"]
    for key in mine:
        if mine[key] != theirs.get(key):
            raise CheckpointError(f"{path}: written for other {key} than this engine's "
                                  "(campaigns, counters and subscribers must be the same)")
    try:
        engine._core.restore_state(header["scalars"], sections)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return header.get("extra", {})
