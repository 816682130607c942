"""The campaigns list: each campaign of the live configuration (and of drafts not yet live)
with its priority, channel, trigger, status and the day's figures from the live output."""
from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fastapi import APIRouter, Request

from engine.console.deps import get_settings, get_store, render, require_user
from engine.errors import SigmatchError
from engine.language import schema

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
        stats = json.loads(path.read_text(encoding="utf-8"))
        campaigns = stats["campaigns"]
        days = {c: dict(entry.get("days") or {}) for c, entry in campaigns.items()}
        sha256 = (stats.get("configuration") or {}).get("sha256")
    except FileNotFoundError:
        return Today(source=path, problem=f"{path}: not written yet")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return Today(source=path, problem=f"{path}: cannot be read ({type(e).__name__})")
    latest = max((d for entry in days.values() for d in entry), default=None)
    today = Today(day=latest, source=path, sha256=sha256 if isinstance(sha256, str) else None)
    if latest is None:
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


def live_campaigns(config: Path) -> tuple[list[CampaignRow], Optional[str]]:
    """The live configuration's campaigns in priority order, or the one-line reason it does not load."""
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
    return rows, None


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
    return render(request, "campaigns.html", rows=rows, problem=problem, today=today, totals=totals,
                  live=live_state(settings, today),
                  row_actions=row_actions, page_actions=page_actions)
