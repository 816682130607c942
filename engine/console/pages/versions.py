"""Versions: the list, one version's page (its changes, approvals, the latest simulation, and
approve / reject / roll back), a side-by-side diff of any two, and applying an approved
version to the live file with the service's reload and its outcome.

The reload's outcome is the service's to tell: after SIGHUP the console reads `--metrics`
in a background thread until the new sha256 shows as live (or the reload shows refused) and
keeps the answer with the version; the version page refreshes itself until then.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Optional

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from engine.console.deps import (audit, current_user, flash, flash_warnings, get_settings, get_store, render,
                                 require_role)
from engine.console.service import reload_outcome
from engine.console.store import StoreError
from engine.privacy import mask_typed_numbers
from engine.console.versions import (ApprovalRefused, Conflict, ReloadResult, VersionError, Versions, diff_texts,
                                     reload_result, send_reload)

log = logging.getLogger("sigmatch.console")
router = APIRouter()
NAV = ("Versions", "/versions")

WAITING = "reload sent, waiting for the service's metrics"


def versions_of(request: Request) -> Versions:
    return Versions(get_store(request), get_settings(request).config)


def _version(v: Versions, vid: int) -> dict:
    try:
        return v.get(vid)
    except VersionError as e:
        raise HTTPException(404, str(e))


@router.get("/versions")
def version_list(request: Request):
    v = versions_of(request)
    try:
        v.baseline()
    except VersionError as e:
        raise HTTPException(409, str(e))
    return render(request, "versions.html.jinja", versions=v.all(), live=v.live())


def _latest_simulation(store, vid: int) -> Optional[dict]:
    try:
        return store.query_one("SELECT id, trace, state, progress, requested_by, requested_at, finished_at, error "
                               "FROM simulations WHERE version = ? ORDER BY id DESC LIMIT 1", (vid,))
    except Exception:       # a store without simulations (older schema): nothing to show
        return None


@router.get("/versions/{vid}")
def version_page(request: Request, vid: int):
    v = versions_of(request)
    try:
        # the head records a hand edit of the live file first, as /versions does; a file that
        # cannot be read is said in the line /versions says it in (approve, reject and roll
        # back come back to this page: it answered 500)
        head = v.head()
    except VersionError as e:
        raise HTTPException(409, str(e))
    version = _version(v, vid)
    live = v.live()
    parent = v.get(version["parent"]) if version["parent"] else None
    user = current_user(request)
    blockers = v.approval_blockers(vid, user.name) if user and user.may("approver") else []
    return render(request, "version.html.jinja", version=version, live=live, parent=parent,
                  against_parent=diff_texts(parent["text"], version["text"]) if parent else [],
                  against_live=diff_texts(live["text"], version["text"]) if live and live["id"] != vid else [],
                  approvals=v.approvals(vid), blockers=blockers, head=head,
                  simulation=_latest_simulation(get_store(request), vid), waiting=version.get("reload") == WAITING)


@router.get("/diff")
def diff_page(request: Request, a: int, b: int, all: int = 0):
    v = versions_of(request)
    va, vb = _version(v, a), _version(v, b)
    return render(request, "diff.html.jinja", a=va, b=vb, rows=diff_texts(va["text"], vb["text"], changed_only=not all),
                  all=bool(all))


@router.post("/versions/{vid}/approve")
async def approve(request: Request, vid: int):
    user = require_role(request, "approver")
    form = await request.form()
    note = str(form.get("note", ""))
    v = versions_of(request)
    settings = get_settings(request)
    try:
        version = await run_in_threadpool(v.approve, vid, user.name, note)
    except (ApprovalRefused, VersionError) as e:
        audit(request, "version.approve_refused", f"version {vid}", str(e))
        flash(request, str(e), "error")
        return RedirectResponse(f"/versions/{vid}", status_code=303)
    audit(request, "version.approve", f"version {vid}",
          f"written to {settings.config}; {mask_typed_numbers(note)}".rstrip("; "))
    sent_at = time.time()
    sent = send_reload(settings.daemon_pid)
    if sent.state == "unknown" and settings.metrics:
        # the metrics will tell: the trail and the page say so, not send_reload's "no --metrics"
        sent = ReloadResult("unknown", WAITING)
        v.record_reload(vid, sent)
        _watch_reload(get_store(request), settings.config, settings.metrics, vid, version["sha256"], sent_at)
    else:
        v.record_reload(vid, sent)
    audit(request, "version.reload", f"version {vid}", sent.message)
    flash(request, f"Version {vid} is now the live file ({settings.config}); {sent.message}.")
    return RedirectResponse(f"/versions/{vid}", status_code=303)


def _watch_reload(store, config, metrics_url: str, vid: int, sha256: str, sent_at: float) -> None:
    """Ask the service's metrics, in the background, whether the reload took; keep the answer."""
    def watch():
        result = reload_result(reload_outcome(metrics_url, sent_at, sha256))
        try:
            Versions(store, config).record_reload(vid, result)
            store.add_audit("(console)", "version.reload_result", f"version {vid}", result.message)
        except (sqlite3.Error, StoreError) as e:
            # the console stopped (its store closed) while the service was still reloading:
            # the result is said in the log, not as a thread's traceback
            log.warning("version %s: %s; not recorded, the console's store is closed (%s)", vid, result.message,
                        type(e).__name__)

    threading.Thread(target=watch, name=f"reload-{vid}", daemon=True).start()


@router.post("/versions/{vid}/reject")
async def reject(request: Request, vid: int):
    user = require_role(request, "approver")
    form = await request.form()
    note = str(form.get("note", ""))
    try:
        built_on = versions_of(request).reject(vid, user.name, note)
    except VersionError as e:
        flash(request, str(e), "error")
        return RedirectResponse(f"/versions/{vid}", status_code=303)
    audit(request, "version.reject", f"version {vid}", mask_typed_numbers(note))
    for later in built_on:
        audit(request, "version.reject", f"version {later}", f"built on version {vid}, rejected")
    also = ""
    if built_on:
        ids = ", ".join(str(i) for i in built_on)
        also = f" So {'are versions' if len(built_on) > 1 else 'is version'} {ids}, built on it (they hold its changes)."
    flash(request, f"Version {vid} rejected; later saves no longer carry its changes.{also}")
    return RedirectResponse(f"/versions/{vid}", status_code=303)


@router.post("/versions/{vid}/rollback")
async def rollback(request: Request, vid: int):
    user = require_role(request, "editor")
    form = await request.form()
    v = versions_of(request)
    try:
        base = int(str(form.get("base", "")))
    except ValueError:
        flash(request, "base: the form lacks the version it was made from; reload the page", "error")
        return RedirectResponse(f"/versions/{vid}", status_code=303)
    try:
        version, errors = await run_in_threadpool(v.rollback, user.name, str(form.get("why", "")), vid, base)
    except (Conflict, VersionError) as e:
        flash(request, str(e), "error")
        return RedirectResponse(f"/versions/{vid}", status_code=303)
    if errors:
        flash(request, "version {} no longer validates: {}".format(
            vid, "; ".join(list(errors.fields.values()) + errors.general)), "error")
        return RedirectResponse(f"/versions/{vid}", status_code=303)
    audit(request, "version.rollback", f"version {version['id']}",
          f"back to version {vid}: {mask_typed_numbers(version['why'])}")
    flash(request, f"Version {version['id']} holds version {vid}'s text: an approver makes it live.")
    flash_warnings(request, errors.warnings)
    return RedirectResponse(f"/versions/{version['id']}", status_code=303)
