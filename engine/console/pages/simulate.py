"""Simulate before approving (issue 13 §4): pick a version and a trace of --trace-dir, watch
the what-if's progress (the page refreshes itself), read what it would change: contacts gained
and lost per campaign and local day, campaigns taking contacts from each other, budgets
reached. The versions page shows the latest simulation of a version (`latest_for`)."""
from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse

from engine.console.deps import audit, flash, get_settings, get_store, render, require_role
from engine.console.simulate import (FINISHED, Simulation, SimulationError, SimulationQueue, StoreSimulationRecords,
                                     latest_simulation, list_traces, sha256_text)

__all__ = ["router", "NAV", "simulation_queue", "latest_for", "setup"]

router = APIRouter()
NAV = ("Simulations", "/simulations")

# versions offered in the form by default: those not (yet) live
OFFERED_STATES = ("draft", "approved")
# states of the version whose text is the live file (engine.console.versions.Versions.live):
# simulated against the live file, it changes nothing, and is neither offered nor taken
LIVE_STATES = ("live", "reload_failed")
# how often a page of a simulation that waits or runs reloads itself (no JavaScript)
REFRESH_S = 2
# simulations listed on the page, newest first
LISTED = 100
# pairs of campaigns taking contacts from each other shown, the largest changes first
TAKEN_SHOWN = 50



def setup(app) -> None:
    """The application's queue, `--simulations` slots; closed when the server stops (queued
    simulations cancelled, running children ended)."""
    settings = app.state.settings
    queue = SimulationQueue(StoreSimulationRecords(app.state.store), settings.config, settings.trace_dir,
                            slots=settings.simulations)
    app.state.simulations = queue
    app.state.closers.append(queue.close)


def simulation_queue(app) -> SimulationQueue:
    """The application's queue (made by setup)."""
    return app.state.simulations


def latest_for(store, version_id: int) -> Optional[Simulation]:
    """The newest simulation of a version (for the versions page), None when none was run."""
    return latest_simulation(StoreSimulationRecords(store), int(version_id))


def _versions(store, version: Optional[int]) -> list[dict]:
    marks = ", ".join("?" for _ in OFFERED_STATES)
    rows = store.query(f"SELECT id, line, author, created_at, why, state FROM versions WHERE state IN ({marks}) "
                       "ORDER BY id DESC LIMIT 200", OFFERED_STATES)
    if version is not None and all(r["id"] != version for r in rows):
        chosen = store.query("SELECT id, line, author, created_at, why, state FROM versions WHERE id = ? AND state "
                             f"NOT IN ({', '.join('?' for _ in LIVE_STATES)})", (version, *LIVE_STATES))
        rows = chosen + rows
    return rows


@router.get("/simulations")
def simulations_page(request: Request, version: Optional[int] = None):
    settings = get_settings(request)
    store = get_store(request)
    queue = simulation_queue(request.app)
    try:
        traces = list_traces(settings.trace_dir)
        trace_problem = None if settings.trace_dir is not None else "started without --trace-dir: no trace to simulate on"
    except OSError as e:
        traces, trace_problem = [], f"--trace-dir {settings.trace_dir}: cannot be read ({e.strerror or e})"
    records = queue.records.list_simulations(limit=LISTED)
    simulations = [queue.get(r["id"]) for r in records]
    return render(request, "simulations.html.jinja", versions=_versions(store, version), chosen=version, traces=traces,
                  trace_problem=trace_problem, simulations=[s for s in simulations if s is not None],
                  slots=queue.slots, refresh=any(s is not None and s.status not in FINISHED for s in simulations))


@router.post("/simulations")
def simulate(request: Request, version: int = Form(...), trace: str = Form(...)):
    user = require_role(request, "editor")
    store = get_store(request)
    row = store.query("SELECT id, text, state FROM versions WHERE id = ?", (version,))
    if not row:
        raise HTTPException(404, f"no version {version}")
    if row[0]["state"] in LIVE_STATES:
        # the form offers none such: a post that names one would compare the live file with itself
        flash(request, f"version {version} is the live configuration: a simulation compares a version that is not "
                       "live with it", "error")
        return RedirectResponse("/simulations", status_code=303)
    from engine.console.versions import Versions, VersionError
    try:
        # read as every other page reads it: bytes that are not UTF-8 named by line and byte,
        # where the flash gave Python's words (helper-136)
        live_text = Versions(store, get_settings(request).config).read_live()
        sim_id = simulation_queue(request.app).submit(version_id=version, draft_text=row[0]["text"], trace=trace,
                                                      author=user.name, live_text=live_text)
    except (SimulationError, VersionError) as e:
        flash(request, str(e), "error")
        return RedirectResponse(f"/simulations?version={version}", status_code=303)
    audit(request, "simulate", f"version {version}", f"simulation {sim_id} on {trace}")
    return RedirectResponse(f"/simulations/{sim_id}", status_code=303)


@router.get("/simulations/{sim_id}")
def simulation_page(request: Request, sim_id: int):
    queue = simulation_queue(request.app)
    sim = queue.get(sim_id)
    if sim is None:
        raise HTTPException(404, f"no simulation {sim_id}")
    settings = get_settings(request)
    live_changed = None
    if sim.live_sha256 is not None:
        try:
            live_changed = sha256_text(settings.config.read_bytes().decode("utf-8-sig")) != sim.live_sha256
        except (OSError, UnicodeDecodeError):
            live_changed = None
    return render(request, "simulation.html.jinja", sim=sim, view=result_view(sim.result) if sim.result else None,
                  refresh=REFRESH_S if sim.status not in FINISHED else None, live_changed=live_changed,
                  taken_shown=TAKEN_SHOWN)


@router.post("/simulations/{sim_id}/cancel")
def cancel(request: Request, sim_id: int):
    require_role(request, "editor")
    queue = simulation_queue(request.app)
    if queue.get(sim_id) is None:
        raise HTTPException(404, f"no simulation {sim_id}")
    if queue.cancel(sim_id):
        audit(request, "cancel simulation", f"simulation {sim_id}")
        # a running one's replays take a moment to stop: its page says "cancelling" until then
        now = queue.get(sim_id)
        flash(request, f"simulation {sim_id} cancelled" if now is None or now.status == "cancelled" else
                       f"simulation {sim_id} is being cancelled: its replays are stopping")
    else:
        flash(request, f"simulation {sim_id} had ended already", "error")
    return RedirectResponse(f"/simulations/{sim_id}", status_code=303)


def result_view(document: dict) -> dict:
    """What the result page shows of a diff's --json document: the summary sentences, the
    campaigns (with their days), the channels, budgets reached and contacts taken."""
    from engine.closedloop.diff import LEGEND, budget_rows, summary, taken_rows
    campaigns = []
    for cid, entry in document["campaigns"].items():
        campaigns.append({"id": cid, "channel": entry["channel_b"] or entry["channel_a"], "in": entry["in"],
                          "counts": _counts(entry), "days": [(day, _counts(c)) for day, c in entry["days"].items()]})
    channels = [{"name": name, "counts": _counts(e), "days": [(day, _counts(c)) for day, c in e["days"].items()]}
                for name, e in document["channels"].items()]
    return {"summary": summary(document), "campaigns": campaigns, "channels": channels,
            "total": _counts(document["total"]), "budgets": budget_rows(document), "taken": taken_rows(document),
            "days": document["days"], "utc_offset": document["utc_offset"], "warnings": document.get("warnings", []),
            "legend": LEGEND, "changed": [c for c in campaigns if c["counts"]["gained"] or c["counts"]["lost"]]}


def _counts(entry: dict) -> dict:
    return {"a": entry["contacts_a"], "b": entry["contacts_b"], "gained": entry["gained"], "lost": entry["lost"],
            "net": entry["contacts_b"] - entry["contacts_a"]}
