"""Editing the configuration: a campaign's form (new, edit), clone, pause, schedule and
priority order, and the forms of [policy], [channels], [counters], [markers] and the other
sections. Every save is a version (engine.console.versions) with a required "why"; nothing
here writes the live file, an approver does (pages/versions.py).

A save validates by building the engine as `sigmatch check` does, seconds on a large world:
it runs in the thread pool, never on the event loop that serves every other page.

Draft lines (what a conflict is about): a campaign's id, "(campaign order)" for a move,
"[policy]" for a one-table section, "[counters] sms" for an entry of the others; none but
the first is a valid campaign id, which is how the campaigns list tells a campaign's draft.

Forms are made from the schema (engine.console.forms) on the newest version (the head); each
carries the id of the version it was made from (`base`), so that a save on a draft line
someone else saved in the meantime is a conflict, not an overwrite.
"""
from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from engine.console import forms
from engine.console.configfile import MAP_SECTIONS, NAMED_SECTIONS, TABLE_SECTIONS, ConfigFile, EditError
from engine.console.deps import (Action, audit, flash, flash_warnings, get_settings, get_store, render,
                                 require_role)
from engine.console.versions import Conflict, VersionError, Versions
from engine.privacy import mask_typed_numbers
from engine.language import schema

router = APIRouter()
NAV = ("Configuration", "/configuration")
# pause, clone, schedule and order need a "why" each: they are on /edit, not one-button forms
CAMPAIGN_ACTIONS = [Action("edit", "/campaigns/{id}/edit")]
CAMPAIGNS_PAGE_ACTIONS = [Action("Add a campaign", "/campaigns/new"),
                          Action("Pause, clone, schedule or reorder; policy, channels, counters, markers",
                                 "/configuration")]

SECTION_LABELS = {"policy": "[policy]", "channels": "[channels]", "counters": "[counters]", "markers": "[markers]",
                  "engine": "[engine]", "output": "[output]", "event_types": "[event_types]", "lists": "[lists]",
                  "areas": "[areas]"}


def versions_of(request: Request) -> Versions:
    return Versions(get_store(request), get_settings(request).config)


def _head(request: Request) -> tuple[Versions, dict, ConfigFile]:
    v = versions_of(request)
    try:
        head = v.head()
    except VersionError as e:
        raise HTTPException(409, str(e))
    try:
        return v, head, ConfigFile(head["text"])
    except EditError as e:
        # the page cannot lay out a file it cannot read: the way out is named (helper-123)
        raise HTTPException(409, f"version {head['id']}: {e}: roll back to a version that is (Versions), or mend "
                                 "the file on the console's host")


async def _form(request: Request) -> dict[str, Any]:
    """The submitted form: a list for names given more than once (multi inputs)."""
    data = await request.form()
    out: dict[str, Any] = {}
    for key in data.keys():
        values = [v for v in data.getlist(key) if isinstance(v, str)]
        out[key] = values if len(values) > 1 else (values[0] if values else "")
    return out


def _multi(submitted: dict, fields: list[forms.FormField]) -> dict:
    for f in fields:
        if f.widget == "multi" and f.name in submitted and not isinstance(submitted[f.name], list):
            submitted[f.name] = [submitted[f.name]] if submitted[f.name] else []
    return submitted


def _base(submitted: dict) -> int:
    """The version the form was made from; 400 when the form lacks it. Versions.save refuses
    one that is no version."""
    try:
        return int(submitted.get("base", ""))
    except (TypeError, ValueError):         # TypeError: given twice, a list (_form)
        raise HTTPException(400, "base: the form lacks the version it was made from; reload the page")


def _saved(request: Request, version: dict, action: str, target: str,
           said: Optional[forms.FormErrors] = None) -> RedirectResponse:
    audit(request, action, target, f"version {version['id']}: {mask_typed_numbers(version['why'])}")
    flash(request, f"Saved as version {version['id']}, a draft: an approver makes it live.")
    flash_warnings(request, said.warnings if said is not None else [])
    return RedirectResponse(f"/versions/{version['id']}", status_code=303)


# ---------------------------------------------------------------------------- the overview
@router.get("/configuration")
def overview(request: Request):
    v, head, doc = _head(request)
    values = doc.values()
    campaigns = [c for c in values.get("campaign", []) if isinstance(c, dict)]
    ordered = sorted(campaigns, key=lambda c: (-c.get("priority", 0) if isinstance(c.get("priority", 0), int) else 0,
                                               str(c.get("id"))))
    sections = []
    for name in ("policy", "channels", "counters", "markers", "event_types", "lists", "areas", "engine", "output"):
        entries = values.get(name) or {}
        sections.append({"name": name, "label": SECTION_LABELS[name], "doc": schema.SECTION[name].doc,
                         "entries": list(entries) if name in NAMED_SECTIONS + MAP_SECTIONS else None})
    return render(request, "edit.html.jinja", mode="overview", head=head, live=v.live(), campaigns=ordered,
                  sections=sections)


# ---------------------------------------------------------------------------- a campaign
def _campaign_page(request, head, doc, cid: Optional[str], table: dict, submitted=None, errors=None,
                   status_code=200, why=""):
    options = forms.options_from(doc.values())
    fields = forms.form_fields("campaign", options, forms.rows_of("campaign", table))
    shown = forms.current_inputs("campaign", table)
    if submitted is not None:
        shown = {f.name: submitted.get(f.name, [] if f.widget == "multi" else "") for f in fields}
    return render(request, "edit.html.jinja", status_code=status_code, mode="campaign", cid=cid, head=head,
                  fields=fields, shown=shown, errors=errors or forms.FormErrors(), why=why,
                  action="/campaigns/new" if cid is None else f"/campaigns/{cid}/edit",
                  title="New campaign" if cid is None else f"Campaign {cid}")


@router.get("/campaigns/new")
def new_campaign(request: Request):
    require_role(request, "editor")
    _, head, doc = _head(request)
    return _campaign_page(request, head, doc, None, {})


@router.get("/campaigns/{cid}/edit")
def edit_campaign(request: Request, cid: str):
    _, head, doc = _head(request)
    try:
        table = doc.campaign(cid)
    except EditError as e:
        raise HTTPException(404, str(e))
    return _campaign_page(request, head, doc, cid, table)


async def _save_campaign(request: Request, cid: Optional[str]):
    user = require_role(request, "editor")
    v, head, doc = _head(request)
    submitted = await _form(request)
    table = {} if cid is None else doc.campaign(cid) if cid in doc.campaign_ids() else None
    if table is None:
        raise HTTPException(404, f"no campaign {cid!r} in the configuration")
    options = forms.options_from(doc.values())
    fields = forms.form_fields("campaign", options, {k: 16 for k in ("after", "not_after", "variants")})
    submitted = _multi(submitted, fields)
    inputs = frozenset(f.name for f in fields)
    why = str(submitted.get("why", ""))
    try:
        changes = forms.read_form("campaign", submitted, table)
    except forms.FormValueError as e:
        return _campaign_page(request, head, doc, cid, table, submitted, forms.FormErrors({e.name: str(e)}), 400, why)
    if cid is not None and "id" in changes:
        # the engine carries a campaign's contacts, budgets and streaks across reloads by its id
        return _campaign_page(request, head, doc, cid, table, submitted, forms.FormErrors(
            {"id": "an id does not change: the campaign's contacts, budgets and streaks are kept by it; "
                   "clone the campaign under the new id instead"}), 400, why)
    new_id = changes.get("id", cid) if cid is not None else changes.get("id")
    if cid is None and not new_id:
        # said beside the input: the loader would name the table by its index ("campaign[2].id"),
        # which the form cannot tie to the campaign it adds
        return _campaign_page(request, head, doc, cid, table, submitted, forms.FormErrors(
            {"id": f"missing ({schema.SECTION['campaign'].field('id').required})"}), 400, why)
    line = new_id if isinstance(new_id, str) and new_id else cid or "(new)"

    def edit(document: ConfigFile):
        if cid is None:
            document.add_campaign({k: v for k, v in changes.items() if v is not None})
        else:
            document.set_campaign(cid, changes)

    try:
        version, errors = await run_in_threadpool(v.save, user.name, why, _base(submitted), line, edit,
                                                  entry=line, inputs=inputs)
    except VersionError as e:
        return _campaign_page(request, head, doc, cid, table, submitted, forms.FormErrors(general=[str(e)]), 409
                              if isinstance(e, Conflict) else 400, why)
    if errors:
        return _campaign_page(request, head, doc, cid, table, submitted, errors, 400, why)
    return _saved(request, version, "campaign.new" if cid is None else "campaign.edit", line, errors)


@router.post("/campaigns/new")
async def save_new_campaign(request: Request):
    return await _save_campaign(request, None)


@router.post("/campaigns/{cid}/edit")
async def save_campaign(request: Request, cid: str):
    return await _save_campaign(request, cid)


async def _quick(request: Request, cid: str, action: str, edit, line: Optional[str] = None):
    """A one-click change of a campaign (clone, pause, schedule, reorder) as a version."""
    user = require_role(request, "editor")
    v, head, _ = _head(request)
    submitted = await _form(request)
    try:
        version, errors = await run_in_threadpool(v.save, user.name, str(submitted.get("why", "")),
                                                  _base(submitted), line if line is not None else cid,
                                                  lambda d: edit(d, submitted), entry=line if line is not None else cid)
    except VersionError as e:
        flash(request, str(e), "error")
        return RedirectResponse("/configuration", status_code=303)
    if errors:
        flash(request, "; ".join(list(errors.fields.values()) + errors.general), "error")
        return RedirectResponse("/configuration", status_code=303)
    return _saved(request, version, action, cid, errors)


@router.post("/campaigns/{cid}/clone")
async def clone(request: Request, cid: str):
    form = await _form(request)
    new_id = str(form.get("new_id", "")).strip()
    if not new_id:
        flash(request, f"clone {cid}: give the new campaign's id", "error")
        return RedirectResponse("/configuration", status_code=303)
    return await _quick(request, cid, "campaign.clone", lambda d, s: d.clone_campaign(cid, new_id), line=new_id or cid)


@router.post("/campaigns/{cid}/pause")
async def pause(request: Request, cid: str):
    return await _quick(request, cid, "campaign.pause", lambda d, s: d.pause(cid))


@router.post("/campaigns/{cid}/resume")
async def resume(request: Request, cid: str):
    return await _quick(request, cid, "campaign.resume", lambda d, s: d.pause(cid, paused=False))


def _date_or_none(text) -> Optional[str]:
    text = str(text or "").strip()
    if forms._CONTROL.search(text) or len(text) > 40:
        raise EditError("a date is YYYY-MM-DD")
    return text or None


@router.post("/campaigns/{cid}/schedule")
async def schedule(request: Request, cid: str):
    return await _quick(request, cid, "campaign.schedule",
                        lambda d, s: d.schedule(cid, _date_or_none(s.get("start")), _date_or_none(s.get("end"))))


@router.post("/campaigns/{cid}/move")
async def move(request: Request, cid: str):
    """Up or down one place in the matching order (priorities renumbered only if needed)."""
    def edit(d: ConfigFile, s):
        values = d.values().get("campaign", [])
        order = [c["id"] for c in sorted(values, key=lambda c: (-c.get("priority", 0), c["id"]))]
        if cid not in order:
            raise EditError(f"no campaign {cid!r} in the configuration")
        direction = s.get("direction")
        if direction not in ("up", "down"):
            # anything else moved it down: a post of a few fields must not change the order by default
            raise EditError(f"move {cid}: the direction is up or down, not {direction!r}")
        i = order.index(cid)
        j = i - 1 if direction == "up" else i + 1
        if 0 <= j < len(order):
            order[i], order[j] = order[j], order[i]
        d.reorder(order)
    # the priorities of several campaigns may change: the whole campaign order is its line
    return await _quick(request, cid, "campaign.reorder", edit, line="(campaign order)")


# ---------------------------------------------------------------------------- sections
def _section_page(request, head, doc, section: str, entry: Optional[str], table: dict, submitted=None, errors=None,
                  status_code=200, why="", new=False):
    options = forms.options_from(doc.values())
    fields = forms.form_fields(section, options, forms.rows_of(section, table))
    shown = forms.current_inputs(section, table)
    if submitted is not None:
        shown = {f.name: submitted.get(f.name, [] if f.widget == "multi" else "") for f in fields}
        shown["name"] = submitted.get("name", "")
    path = f"/configuration/{section}" + ("/new" if new else f"/{entry}" if entry else "")
    title = f"{SECTION_LABELS[section]} {'new entry' if new else entry or ''}".strip()
    return render(request, "edit.html.jinja", status_code=status_code, mode="section", section=section, entry=entry,
                  new=new, head=head, fields=fields, shown=shown, errors=errors or forms.FormErrors(), why=why,
                  action=path, title=title, doc=schema.SECTION[section].doc)


def _map_page(request, head, doc, section: str, errors=None, status_code=200, submitted=None):
    """`submitted`: the form refused, whose entry and reason are shown again to be corrected
    (a removal's are not: its row is still in the table)."""
    kept = submitted is not None and submitted.get("remove") != "1"
    shown = {name: str(submitted.get(name, "")) for name in ("name", "value")} if kept else {}
    return render(request, "edit.html.jinja", status_code=status_code, mode="map", section=section, head=head,
                  entries=doc.section(section), errors=errors or forms.FormErrors(),
                  title=SECTION_LABELS[section], doc=schema.SECTION[section].doc,
                  fields=forms.entry_fields(section, forms.options_from(doc.values())), shown=shown,
                  why=str(submitted.get("why", "")) if kept else None)


def _known(section: str) -> None:
    if section not in TABLE_SECTIONS + NAMED_SECTIONS + MAP_SECTIONS:
        raise HTTPException(404, f"no section [{section}] to edit (sections: "
                                 f"{', '.join(TABLE_SECTIONS + NAMED_SECTIONS + MAP_SECTIONS)})")


@router.get("/configuration/{section}")
def edit_section(request: Request, section: str):
    _known(section)
    _, head, doc = _head(request)
    if section in TABLE_SECTIONS:
        return _section_page(request, head, doc, section, None, doc.section(section))
    if section in MAP_SECTIONS:
        return _map_page(request, head, doc, section)
    return render(request, "edit.html.jinja", mode="named", section=section, head=head, entries=doc.section(section),
                  title=SECTION_LABELS[section], doc=schema.SECTION[section].doc)


@router.get("/configuration/{section}/{entry}")
def edit_entry(request: Request, section: str, entry: str):
    _known(section)
    if section not in NAMED_SECTIONS:
        raise HTTPException(404, f"[{section}] has no entries of their own page")
    _, head, doc = _head(request)
    if entry == "new":
        return _section_page(request, head, doc, section, None, {}, new=True)
    table = doc.section(section).get(entry)
    if not isinstance(table, dict):
        raise HTTPException(404, f"no {entry!r} in [{section}]")
    return _section_page(request, head, doc, section, entry, table)


@router.post("/configuration/{section}")
async def save_section(request: Request, section: str):
    _known(section)
    user = require_role(request, "editor")
    v, head, doc = _head(request)
    submitted = await _form(request)
    why = str(submitted.get("why", ""))
    if section in MAP_SECTIONS:
        return await _save_map(request, user, v, head, doc, section, submitted, why)
    if section not in TABLE_SECTIONS:
        raise HTTPException(404, f"[{section}] is edited entry by entry")
    table = doc.section(section)
    fields = forms.form_fields(section, forms.options_from(doc.values()), {})
    submitted = _multi(submitted, fields)
    try:
        changes = forms.read_form(section, submitted, table)
    except forms.FormValueError as e:
        return _section_page(request, head, doc, section, None, table, submitted,
                             forms.FormErrors({e.name: str(e)}), 400, why)
    try:
        version, errors = await run_in_threadpool(v.save, user.name, why, _base(submitted), f"[{section}]",
                                                  lambda d: d.set_table(section, changes), section=section,
                                                  inputs=frozenset(f.name for f in fields))
    except VersionError as e:
        return _section_page(request, head, doc, section, None, table, submitted,
                             forms.FormErrors(general=[str(e)]), 409 if isinstance(e, Conflict) else 400, why)
    if errors:
        return _section_page(request, head, doc, section, None, table, submitted, errors, 400, why)
    return _saved(request, version, f"{section}.edit", section, errors)


async def _save_map(request, user, v, head, doc, section, submitted, why):
    name = str(submitted.get("name", "")).strip()
    remove = submitted.get("remove") == "1"
    try:
        value = None if remove else forms.read_form_value(section, submitted.get("value", ""))
        forms.one_line("name", name)
    except forms.FormValueError as e:
        return _map_page(request, head, doc, section, forms.FormErrors({e.name: str(e)}), 400, submitted)
    if not name:
        return _map_page(request, head, doc, section, forms.FormErrors({"name": "a name is needed"}), 400, submitted)
    try:
        version, errors = await run_in_threadpool(v.save, user.name, why, _base(submitted), f"[{section}] {name}",
                                                  lambda d: d.set_map(section, name, value), section=section,
                                                  entry=name, inputs=frozenset({"name", "value"}))
    except VersionError as e:
        return _map_page(request, head, doc, section, forms.FormErrors(general=[str(e)]),
                         409 if isinstance(e, Conflict) else 400, submitted)
    if errors:
        return _map_page(request, head, doc, section, errors, 400, submitted)
    return _saved(request, version, f"{section}.{'remove' if remove else 'set'}", f"{section}.{name}", errors)


@router.post("/configuration/{section}/{entry}")
async def save_entry(request: Request, section: str, entry: str):
    _known(section)
    if section not in NAMED_SECTIONS:
        raise HTTPException(404, f"[{section}] has no entries of their own page")
    user = require_role(request, "editor")
    v, head, doc = _head(request)
    submitted = await _form(request)
    why = str(submitted.get("why", ""))
    new = entry == "new"
    name = str(submitted.get("name", "")).strip() if new else entry
    current = doc.section(section)
    table = {} if new else current.get(entry)
    if not isinstance(table, dict):
        raise HTTPException(404, f"no {entry!r} in [{section}]")
    fields = forms.form_fields(section, forms.options_from(doc.values()), {})
    submitted = _multi(submitted, fields)
    inputs = frozenset(f.name for f in fields) | {"name"}
    remove = submitted.get("remove") == "1"
    try:
        forms.one_line("name", name)
        changes = {} if remove else forms.read_form(section, submitted, table)
    except forms.FormValueError as e:
        return _section_page(request, head, doc, section, entry, table, submitted,
                             forms.FormErrors({e.name: str(e)}), 400, why, new)
    if new and not name:
        return _section_page(request, head, doc, section, None, table, submitted,
                             forms.FormErrors({"name": "a name is needed"}), 400, why, new)

    def edit(d: ConfigFile):
        if remove:
            d.remove_entry(section, entry)
        else:
            d.set_entry(section, name, changes, new=new)

    try:
        version, errors = await run_in_threadpool(v.save, user.name, why, _base(submitted), f"[{section}] {name}",
                                                  edit, section=section, entry=name, inputs=inputs)
    except VersionError as e:
        return _section_page(request, head, doc, section, None if new else entry, table, submitted,
                             forms.FormErrors(general=[str(e)]), 409 if isinstance(e, Conflict) else 400, why, new)
    if errors:
        return _section_page(request, head, doc, section, None if new else entry, table, submitted, errors, 400,
                             why, new)
    return _saved(request, version, f"{section}.{'remove' if remove else 'new' if new else 'edit'}",
                  f"{section}.{name}", errors)
