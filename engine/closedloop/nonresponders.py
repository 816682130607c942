"""Non-responders: the subscribers who got at least K sends and never converted, as a Roaring
bitmap that a configuration names as an `exclude` list (the operators' periodic "stop
stimulating those who never respond" export, SPEC §5).

The period is counted back from the last action time in the outputs: a send counts when its
`ts` >= last action ts - `since` (every send when `since` is None). The scope is every
campaign, or one (`campaign`). A subscriber is a non-responder with >= K sends of the scope
in the period and no conversion of the scope (of a send or a control: either is a response)
at or after the period's start. Controls are not sends and do not count towards K.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from pyroaring import BitMap64

from engine.closedloop.outputs import Outputs, ReportError
from engine.sinks import make_private_directories, write_private

__all__ = ["NonResponders", "non_responders", "write_list"]


@dataclass(frozen=True)
class NonResponders:
    msisdns: np.ndarray             # uint64, sorted, unique
    sends: int                      # at least this many sends ...
    since_ts: Optional[int]         # ... with ts >= this (ms; None: all time)
    last_ts: Optional[int]          # the last action time in the outputs
    campaign: Optional[str]         # of this campaign (None: any)
    receivers: int                  # subscribers with at least one send in scope


def non_responders(outputs: Outputs, sends: int, *, since_ms: Optional[int] = None,
                   campaign: Optional[str] = None) -> NonResponders:
    """The non-responders of `outputs` (module docstring). ReportError for a campaign the
    outputs do not know or a K below 1."""
    if sends < 1:
        raise ReportError(f"--non-responders {sends}: at least 1 send")
    known = set(outputs.campaigns)
    for directory in outputs.directories:
        known.update(directory.stats["campaigns"])
    if campaign is not None and campaign not in known:
        from difflib import get_close_matches
        close = get_close_matches(campaign, sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ReportError(f"--campaign {campaign}: no such campaign in the outputs{hint}")
    last_ts = max((int(d.actions.ts.max()) for d in outputs.directories if len(d.actions)), default=None)
    since_ts = None if since_ms is None or last_ts is None else last_ts - since_ms
    code = outputs.campaigns.index(campaign) if campaign in outputs.campaigns else None
    send_code = outputs.kinds.index("send") if "send" in outputs.kinds else None
    sent, converted = [], []
    for directory in outputs.directories:
        a, c = directory.actions, directory.conversions
        mask = a.kind == (send_code if send_code is not None else -1)
        if campaign is not None:
            mask &= a.campaign == (code if code is not None else -1)
        if since_ts is not None:
            mask &= a.ts >= since_ts
        sent.append(a.msisdn[mask])
        cmask = np.ones(len(c), bool)
        if campaign is not None:
            cmask &= c.campaign == (code if code is not None else -1)
        if since_ts is not None:
            cmask &= c.ts >= since_ts
        converted.append(c.msisdn[cmask])
    sent_all = np.concatenate(sent) if sent else np.zeros(0, np.uint64)
    numbers, counts = np.unique(sent_all, return_counts=True)
    often = numbers[counts >= sends]
    responded = np.unique(np.concatenate(converted)) if converted else np.zeros(0, np.uint64)
    chosen = often[~np.isin(often, responded, assume_unique=True)]
    return NonResponders(chosen.astype(np.uint64), sends, since_ts, last_ts, campaign, len(numbers))


LIST_SUFFIXES = (".roar", ".txt", ".csv")     # as loaders.lists reads them


def write_list(path, msisdns: np.ndarray) -> Path:
    """`msisdns` as a list file at `path`, in the format its suffix names, as loaders.lists
    reads lists: `.roar` a 64-bit portable Roaring bitmap, `.txt` one MSISDN a line, `.csv` a
    column `msisdn` (mode 0640, written whole then renamed: engine.sinks.write_private; a
    missing directory is made 0750, as --html and --plots make theirs). ValueError for
    another suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in LIST_SUFFIXES:
        raise ValueError(f"{path}: a list is written as FILE.roar (a Roaring bitmap), FILE.txt (one MSISDN a "
                         "line) or FILE.csv (a column msisdn): its suffix picks the format, as when a "
                         "configuration reads it")
    numbers = np.unique(np.asarray(msisdns, np.uint64))
    if suffix == ".roar":
        bitmap = BitMap64()
        bitmap.update(numbers)
        data = bitmap.serialize()
    else:
        data = ("msisdn\n" if suffix == ".csv" else "") + "".join(f"{n}\n" for n in numbers.tolist())
        data = data.encode()
    make_private_directories(path.parent)
    write_private(path.with_name(f".{path.name}.tmp"), path, data)
    return path
