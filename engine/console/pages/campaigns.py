"""The campaigns list: each campaign of the live configuration (and of drafts not yet live)
with its priority, channel, trigger, status and the day's figures from the live output."""
from __future__ import annotations

import datetime
import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from fastapi import APIRouter, Request

from engine.api import DAY_MS
from engine.console.deps import get_settings, get_store, render, require_user
from engine.closedloop.outputs import ReportError, read_stats_json
from engine.errors import SigmatchError
from engine.language import schema

log = logging.getLogger("sigmatch.console")
router = APIRouter()
NAV = ("Campaigns", "/campaigns")

# the version states of a draft: saved, maybe approved, not (yet) written to the live file
DRAFT_STATES = ("draft", "approved")


@dataclass
class CampaignRow:
    id: str
    priority: Optional[int] = None
    channel: str = ""
    on: str = ""
    status: str = "live"            # live, paused (live, enabled = false), draft (not in the live file)
    drafts: int = 0                 # draft versions of its line waiting
    figures: dict = field(default_factory=dict)     # sent, control, global_control, conversions


@dataclass
class Today:
    """The day the figures are of, and where they were read (or why there are none)."""
    day: Optional[str] = None
    source: Optional[Path] = None
    problem: Optional[str] = None
    by_campaign: dict = field(default_factory=dict)
    sha256: Optional[str] = None        # of the configuration file the output was written with


def read_today(out: Optional[Path]) -> Today:
    """The latest local day of `out`'s stats.json and each campaign's figures on it.

    The service counts days in event time, not by the console's clock: 'today' is the last
    day it has seen an event of, which is the current day of a service that keeps up with
    its traffic (and the last day of a replayed trace). Figures per campaign: sent, control,
    global_control, and conversions (of all three kinds together)."""
    if out is None:
        return Today(problem="started without --out: no figures")
    path = out / "stats.json"
    try:
        stats, campaigns = read_stats_json(path)
    except FileNotFoundError:
        return Today(source=path, problem=f"{path}: not written yet")
    except ReportError as e:
        return Today(source=path, problem=str(e))
    days = {c: dict(entry.get("days") or {}) for c, entry in campaigns.items()}
    sha256 = (stats.get("configuration") or {}).get("sha256")
    latest = max((d for entry in days.values() for d in entry), default=None)
    today = Today(day=latest, source=path, sha256=sha256 if isinstance(sha256, str) else None)
    if latest is None and not any(entry.get("days") is not None for entry in campaigns.values()):
        # a service's stats.json counts no days (they would not survive its restarts): the day
        # is counted from the finished output files themselves
        offset = (stats.get("configuration") or {}).get("utc_offset")
        try:
            found = day_from_files(out, _offset_ms(offset))
        except (SigmatchError, OSError, ValueError) as e:
            today.problem = f"{out}: the output files cannot be read ({str(e).splitlines()[0]})"
            return today
        if found is not None:
            today.day, today.by_campaign = found
            today.source = out
            for cid in campaigns:
                today.by_campaign.setdefault(cid, {"sent": 0, "control": 0, "global_control": 0, "conversions": 0})
            return today
    if today.day is None:
        today.problem = f"{path}: no contact counted yet"
        return today
    for cid, entry in days.items():
        counts = entry.get(latest) or {}
        today.by_campaign[cid] = {
            "sent": counts.get("sent", 0),
            "control": counts.get("control", 0),
            "global_control": counts.get("global_control", 0),
            "conversions": sum(v for k, v in counts.items() if k.startswith("converted_")),
        }
    return today


def _offset_ms(text) -> int:
    """stats.json's utc_offset in ms, by the configuration's own parser; 0 without a valid
    one (an older sigmatch's stats.json: its days are in UTC)."""
    from engine.language.config import parse_utc_offset
    try:
        return parse_utc_offset(text)
    except ValueError:
        return 0


# per finished output file, its counts by local day: a finished file never changes, and the
# campaigns page is rendered on every refresh, so each file is read once
_FILE_COUNTS: "OrderedDict[tuple, dict]" = OrderedDict()
_FILE_COUNTS_KEPT = 20_000          # files: hourly files of 5 channels over more than 5 months


def _file_counts(path: Path, conversions: bool, utc_offset_ms: int) -> dict:
    """{local day number: {campaign id: {kind name: n}}} of one finished output file."""
    from engine.closedloop.outputs import read_record_files
    status = path.stat()
    key = (str(path), status.st_size, status.st_mtime_ns, status.st_ino, conversions, utc_offset_ms)
    found = _FILE_COUNTS.get(key)
    if found is not None:
        _FILE_COUNTS.move_to_end(key)
        return found
    columns, names, kinds, _ = read_record_files([path], conversions=conversions)
    counts: dict = {}
    if len(columns):
        day = (columns.ts + utc_offset_ms) // DAY_MS
        first = int(day.min())
        # one count per (day, campaign, kind) code triple: a day of a province is millions of rows
        triple = ((day - first) * len(names) + columns.campaign) * len(kinds) + columns.kind
        totals = np.bincount(triple.astype(np.int64))
        for code in np.flatnonzero(totals).tolist():
            rest, kind = divmod(code, len(kinds))
            offset, campaign = divmod(rest, len(names))
            by_kind = counts.setdefault(first + offset, {}).setdefault(names[campaign], {})
            by_kind[kinds[kind]] = by_kind.get(kinds[kind], 0) + int(totals[code])
    _FILE_COUNTS[key] = counts
    while len(_FILE_COUNTS) > _FILE_COUNTS_KEPT:
        _FILE_COUNTS.popitem(last=False)
    return counts


def day_from_files(out: Path, utc_offset_ms: int) -> Optional[tuple[str, dict]]:
    """The last local day of `out`'s finished action files and each campaign's figures on it
    ({id: {sent, control, global_control, conversions}}), None when no action is written yet.

    Channels rotate their files hourly (in event time) and at max_records, so each channel's
    files are taken from the newest back to the first that starts before that day: a day's
    worth of files, whatever the directory's age (and each read once, see _file_counts).
    Conversions count on the day they happened, as stats.json's days count them. Raises
    ReportError (a SigmatchError) on a damaged file, OSError on one that cannot be read."""
    from engine.wording import local_day
    from engine.closedloop.outputs import record_files
    actions, conversions = record_files(out)
    by_channel: dict[Path, list[Path]] = {}
    for path in actions:
        by_channel.setdefault(path.parent, []).append(path)

    def newest_day(files: list[Path]) -> Optional[int]:
        for path in reversed(files):
            counts = _file_counts(path, False, utc_offset_ms)
            if counts:
                return max(counts)
        return None

    days = [d for d in (newest_day(files) for files in by_channel.values()) if d is not None]
    if not days:
        return None
    day = max(days)
    figures: dict[str, dict] = {}

    def add(files: list[Path], conversions: bool) -> None:
        for path in reversed(files):
            counts = _file_counts(path, conversions, utc_offset_ms)
            for cid, by_kind in counts.get(day, {}).items():
                entry = figures.setdefault(cid, {"sent": 0, "control": 0, "global_control": 0, "conversions": 0})
                for kind, n in by_kind.items():
                    name = "conversions" if conversions else {"send": "sent"}.get(kind, kind)
                    if name in entry:
                        entry[name] += n
            if counts and min(counts) < day:
                return

    for files in by_channel.values():
        add(files, False)
    add(conversions, True)
    return local_day(day), figures


def live_campaigns(config: Path) -> tuple[list[CampaignRow], Optional[str]]:
    """The live configuration's campaigns in priority order, and the one-line reason it does
    not load (None when it does): no campaign when the file does not read, its campaigns
    when it reads but a profile, list or area file it names is missing."""
    from engine.language.config import load_config
    try:
        cfg = load_config(config)
    except SigmatchError as e:
        return [], str(e).splitlines()[0]
    names = {code: name for name, code in cfg.event_types.items()}
    rows = [CampaignRow(id=c.id, priority=c.priority, channel=c.channel,
                        on=", ".join(names.get(code, str(code)) for code in c.on),
                        status="live" if c.enabled else "paused")
            for c in cfg.campaigns]
    return rows, missing_input(cfg)


def missing_input(cfg) -> Optional[str]:
    """The one line naming the configuration's key and file when a profile snapshot, list or
    area file it names is missing (a list moved away after its approval), None otherwise.
    What the service checks before it starts, and approval refuses in the same words; the
    files' contents are not read (the campaigns page is drawn on every refresh)."""
    from engine.language.compile import require_inputs
    try:
        require_inputs(cfg)
    except SigmatchError as e:
        return str(e).splitlines()[0]
    return None


def setup(app) -> None:
    """One warning line at start when the live configuration reads but names a file that is
    missing; the console serves all the same (it is where the file gets mended), and the
    campaigns page shows the line. A file that does not read at all is warned of by
    `sigmatch console` itself before the application is made: not said twice."""
    from engine.language.config import load_config
    try:
        cfg = load_config(app.state.settings.config)
    except SigmatchError:
        return
    problem = missing_input(cfg)
    if problem is not None:
        log.warning("the live configuration does not load: %s", problem)


@dataclass
class Live:
    """What is live: the file's sha256, and what the service says it runs."""
    sha256: Optional[str] = None
    output: Optional[str] = None        # a sentence on the configuration stats.json was written with
    service: Optional[str] = None       # a sentence on what the metrics say, or why they say nothing
    in_step: Optional[bool] = None      # the service runs the live file (None: not known)


# the campaigns list is rendered on every refresh: a service that does not answer at once
# is said so rather than waited for
SCRAPE_TIMEOUT_S = 2.0


def live_state(settings, today: Today) -> Live:
    """The live file's sha256 against stats.json's configuration and the service's metrics."""
    try:
        live = Live(sha256=hashlib.sha256(settings.config.read_bytes()).hexdigest())
    except OSError as e:
        return Live(service=f"{settings.config}: cannot be read ({e.strerror or e})")
    if today.sha256:
        live.output = ("the output's stats.json was written with this file" if today.sha256 == live.sha256 else
                       f"the output's stats.json was written with another configuration (sha256 {today.sha256[:12]})")
    if settings.metrics:
        from engine.console.service import ScrapeFailed, scrape
        try:
            status = scrape(settings.metrics, timeout=SCRAPE_TIMEOUT_S)
        except ScrapeFailed as e:
            live.service = str(e)
            return live
        if status.config_sha256 is None:
            live.service = "the service publishes no configuration (an older sigmatch run?)"
            return live
        live.in_step = status.config_sha256 == live.sha256
        ran = ("the service runs this file" if live.in_step else
               f"the service runs another configuration (sha256 {status.config_sha256[:12]}): "
               "not reloaded yet, or its reload was rejected")
        if status.last_reload_at is not None:
            at = datetime.datetime.fromtimestamp(status.last_reload_at, datetime.timezone.utc)
            ran += (f"; its last load, at {at:%Y-%m-%d %H:%M:%S} UTC, "
                    f"{'succeeded' if status.last_reload_success else 'was rejected'}")
        live.service = ran
    return live


def waiting_drafts(store) -> dict[str, int]:
    """{draft line: versions saved and not yet live}."""
    placeholders = ", ".join("?" for _ in DRAFT_STATES)
    return {r["line"]: r["n"] for r in store.query(
        f"SELECT line, count(*) AS n FROM versions WHERE line IS NOT NULL AND state IN ({placeholders}) "
        "GROUP BY line", DRAFT_STATES)}


@router.get("/campaigns")
def campaigns(request: Request):
    settings = get_settings(request)
    rows, problem = live_campaigns(settings.config)
    drafts = waiting_drafts(get_store(request))
    known = {r.id for r in rows}
    for row in rows:
        row.drafts = drafts.get(row.id, 0)
    # a campaign added in a draft has no live entry yet; the draft lines of sections and of the
    # campaign order ("[policy]", "[counters] sms", "(campaign order)") are no campaign ids
    for line in sorted(line for line in set(drafts) - known if schema.NAME.fullmatch(line)):
        rows.append(CampaignRow(id=line, status="draft", drafts=drafts[line]))
    today = read_today(settings.out)
    for row in rows:
        row.figures = today.by_campaign.get(row.id, {})
    totals = {k: sum(r.figures.get(k, 0) for r in rows) for k in ("sent", "control", "global_control", "conversions")}
    user = require_user(request)
    row_actions = [a for a in request.app.state.campaign_actions if user.may(a.role)]
    page_actions = [a for a in request.app.state.campaigns_page_actions if user.may(a.role)]
    return render(request, "campaigns.html.jinja", rows=rows, problem=problem, today=today, totals=totals,
                  live=live_state(settings, today),
                  row_actions=row_actions, page_actions=page_actions)
