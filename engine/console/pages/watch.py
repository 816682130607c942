"""Watch (issue 13 §5): the live funnel per campaign, from the service's metrics (`--metrics`)
or from `--out`'s stats.json, refreshing itself; what is live (the configuration the service
runs against the live file, its last reload); and the report (`sigmatch report`: uplift
table and plots) of an output directory: `--out` or a sigmatch output directory beside it."""
from __future__ import annotations

import base64
import datetime
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fastapi import APIRouter, HTTPException, Request

from engine.console.deps import get_settings, render
from engine.console.service import ScrapeFailed, scrape
from engine.console.simulate import sha256_text
from engine.closedloop.outputs import ReportError, read_stats_json
from engine.errors import SigmatchError
from engine.records import FUNNEL

__all__ = ["router", "NAV", "Funnel", "live_funnel", "output_directories", "REFRESH_S"]

router = APIRouter()
NAV = ("Watch", "/watch")

REFRESH_S = 10
# reports computed lately, by directory and the state of its stats.json (a report of ten
# million actions takes seconds: a page that refreshes must not compute it each time)
REPORTS_KEPT = 8

SUPPRESSED = tuple(stage for stage in FUNNEL if stage.startswith("suppressed_")
                   or stage in ("overflow", "disabled", "ended", "absent"))
CONVERTED = tuple(stage for stage in FUNNEL if stage.startswith("converted_"))
COLUMNS = ("matched", "scheduled", "recheck_failed", "suppressed", "sent", "control", "global_control", "converted")


@dataclass
class Funnel:
    """The live funnel: where it was read, its rows and what is live."""
    source: str = ""                        # "metrics" or "stats.json"
    where: str = ""
    rows: list = field(default_factory=list)        # [{"id", <COLUMNS>, "uplift": text}]
    problems: list = field(default_factory=list)
    live_sha256: Optional[str] = None       # the service's configuration
    file_sha256: Optional[str] = None       # the live file's
    last_reload_success: Optional[bool] = None
    last_reload_at: Optional[float] = None
    events: Optional[int] = None
    pending: Optional[int] = None
    lag_s: Optional[float] = None


def _row(cid: str, stages: dict) -> dict:
    row = {"id": cid}
    for column in COLUMNS:
        if column == "suppressed":
            row[column] = sum(int(stages.get(s, 0)) for s in SUPPRESSED)
        elif column == "converted":
            row[column] = sum(int(stages.get(s, 0)) for s in CONVERTED)
        else:
            row[column] = int(stages.get(column, 0))
    return row


def live_funnel(settings) -> Funnel:
    """The funnel per campaign: from --metrics when given and readable, else from --out's
    stats.json; problems say what could not be read."""
    funnel = Funnel()
    try:
        funnel.file_sha256 = sha256_text(settings.config.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError) as e:
        funnel.problems.append(f"{settings.config}: cannot be read ({type(e).__name__})")
    if settings.metrics:
        try:
            status = scrape(settings.metrics)
        except ScrapeFailed as e:
            funnel.problems.append(str(e))
        else:
            funnel.source, funnel.where = "metrics", settings.metrics
            funnel.rows = [_row(cid, stages) for cid, stages in status.funnel.items()]
            funnel.live_sha256 = status.config_sha256
            funnel.last_reload_success, funnel.last_reload_at = status.last_reload_success, status.last_reload_at
            funnel.events, funnel.pending, funnel.lag_s = status.events, status.pending, status.lag_s
    if settings.out is not None:
        path = settings.out / "stats.json"
        try:
            stats, campaigns = read_stats_json(path)
        except FileNotFoundError:
            funnel.problems.append(f"{path}: not written yet")
        except ReportError as e:
            funnel.problems.append(str(e))
        else:
            uplifts = {cid: _uplift_text(entry) for cid, entry in campaigns.items() if isinstance(entry, dict)}
            if not funnel.rows:
                funnel.source, funnel.where = "stats.json", str(path)
                funnel.rows = [_row(cid, entry) for cid, entry in campaigns.items() if isinstance(entry, dict)]
                run = stats.get("run") or {}
                funnel.events, funnel.pending = run.get("events"), run.get("pending")
                if funnel.live_sha256 is None:
                    funnel.live_sha256 = (stats.get("configuration") or {}).get("sha256")
            for row in funnel.rows:
                row["uplift"] = uplifts.get(row["id"], "")
    if settings.metrics is None and settings.out is None:
        funnel.problems.append("started without --metrics or --out: no figures")
    return funnel


def _uplift_text(entry: dict) -> str:
    """stats.json's uplift (send rate minus control rate, a fraction) in percentage points,
    or the report's note where the report gives no figure ("too few controls" below
    MIN_CONTROLS controls, "no sends"): the page showed +0.51 pp where the report said too few
    controls (helper-123). The interval is the report's (engine.closedloop.report)."""
    from engine.closedloop.uplift import MIN_CONTROLS
    # the report's notes first: stats.json has no uplift (null) where there are no controls,
    # and the cell was blank (helper-125)
    sent, controls = entry.get("sent"), entry.get("control")
    if isinstance(sent, int) and not sent:
        return "no sends"
    if isinstance(controls, int) and controls < MIN_CONTROLS:
        return "too few controls"
    uplift = entry.get("uplift")
    return f"{uplift * 100:+.2f} pp" if isinstance(uplift, (int, float)) else ""


@router.get("/watch")
def watch_page(request: Request):
    settings = get_settings(request)
    funnel = live_funnel(settings)
    totals = {c: sum(r[c] for r in funnel.rows) for c in COLUMNS}
    reload_at = None
    if funnel.last_reload_at is not None:
        reload_at = datetime.datetime.fromtimestamp(funnel.last_reload_at, datetime.timezone.utc) \
            .strftime("%Y-%m-%d %H:%M:%S")
    return render(request, "watch.html.jinja", funnel=funnel, columns=COLUMNS, totals=totals, refresh=REFRESH_S,
                  directories=output_directories(settings.out), reload_at=reload_at)


# --------------------------------------------------------------------------- reports

def output_directories(out: Optional[Path]) -> list[tuple[str, Path]]:
    """(name, path) of the output directories a report may be shown for: `--out` itself and
    the sigmatch output directories (holding a stats.json) beside it, by name. A page names
    one of these, never a path of its own."""
    if out is None:
        return []
    found = [(out.name or str(out), out)]
    try:
        siblings = sorted(p for p in out.resolve().parent.iterdir()
                          if p.is_dir() and p.resolve() != out.resolve() and not p.name.startswith(".")
                          and (p / "stats.json").is_file())
    except OSError:
        siblings = []
    found += [(p.name, p) for p in siblings]
    return found


_reports: "OrderedDict[tuple, dict]" = OrderedDict()
_reports_lock = threading.Lock()


def _report(directory: Path) -> dict:
    """The report of one directory (engine.closedloop.report's document) with its plots as
    base64 PNGs, kept while its stats.json is unchanged."""
    from engine.closedloop.outputs import read_outputs
    from engine.closedloop.render import PLOTS, plot_png
    from engine.closedloop.report import build_report
    stat = (directory / "stats.json").stat()
    key = (str(directory.resolve()), stat.st_mtime_ns, stat.st_size)
    with _reports_lock:
        if key in _reports:
            _reports.move_to_end(key)
            return _reports[key]
    document = build_report(read_outputs([directory]))
    try:
        plots = {name: base64.b64encode(plot_png(document, name)).decode("ascii") for name in PLOTS}
    except SigmatchError:
        plots = {}          # matplotlib missing: the tables alone
    made = {"document": document, "plots": plots}
    with _reports_lock:
        _reports[key] = made
        while len(_reports) > REPORTS_KEPT:
            _reports.popitem(last=False)
    return made


@router.get("/reports")
def reports_page(request: Request):
    settings = get_settings(request)
    return render(request, "reports.html.jinja", directories=output_directories(settings.out))


@router.get("/reports/{name}")
def report_page(request: Request, name: str):
    from engine.closedloop.report import LEGEND, _incremental, _pct, _shown_uplift
    settings = get_settings(request)
    directories = dict(output_directories(settings.out))
    if name not in directories:
        raise HTTPException(404, f"no output directory {name!r} (the console shows --out and the output "
                                 "directories beside it)")
    try:
        made = _report(directories[name])
    except (SigmatchError, OSError) as e:
        return render(request, "report.html.jinja", name=name, problem=str(e).splitlines()[0] if str(e) else
                      type(e).__name__, report=None, rows=[], plots={}, programme="", legend=LEGEND)
    report = made["document"]
    rows = []
    for cid, entry in report["campaigns"].items():
        for template, v in ([(None, entry)] + list(entry["variants"].items()) if len(entry["variants"]) > 1
                            else [(None, entry)]):
            rows.append({"campaign": cid, "variant": template or "", "sends": v["sends"], "controls": v["controls"],
                         "global_controls": v["global_controls"], "conversions_send": v["conversions_send"],
                         "conversions_control": v["conversions_control"], "rate_send": _pct(v["rate_send"]),
                         "rate_control": _pct(v["rate_control"]), "incremental": _incremental(v),
                         "uplift": _shown_uplift(v), "note": v["note"]})
    p = report["programme"]
    programme = (f"{p['sends']:,} sends converted at {_pct(p['rate_send'])}; {p['global_controls']:,} global "
                 f"controls at {_pct(p['rate_global_control'])}; uplift {_shown_uplift(p)}; incremental "
                 f"conversions {_incremental(p)}.")
    return render(request, "report.html.jinja", name=name, problem=None, report=report, rows=rows, plots=made["plots"],
                  programme=programme, legend=LEGEND)
