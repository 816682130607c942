"""The audit trail: every action with its user, time and client, filtered and paged, and
exported as CSV. Numbers of seven digits or more (a looked-up subscriber) are masked on the
page and in the export."""
from __future__ import annotations

import csv
import io
from typing import Optional
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from engine.console.deps import audit, get_store, render
from engine.privacy import escape_controls, mask_written_numbers

router = APIRouter()
NAV = ("Audit", "/audit")

PAGE_SIZE = 100
CSV_COLUMNS = ("id", "at", "user", "action", "target", "detail", "client")
# a spreadsheet runs a cell that starts with one of these as a formula (a user name typed
# at the login page as =HYPERLINK(...)): such a cell is exported with a leading quote
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value) -> str:
    # escaped: an entry stored before a control character was refused (or an approval's note)
    # must not cut its row or hide a NUL in a spreadsheet
    text = escape_controls("" if value is None else str(value))
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _filters(user: Optional[str], action: Optional[str]) -> dict:
    return {"user": (user or "").strip() or None, "action": (action or "").strip() or None}


@router.get("/audit")
def audit_page(request: Request, user: Optional[str] = None, action: Optional[str] = None,
               page: int = Query(1, ge=1)):
    store = get_store(request)
    filters = _filters(user, action)
    total = store.audit_count(**filters)
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(page, pages)
    entries = store.audit_entries(**filters, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    given = {k: v for k, v in filters.items() if v}
    query = f"?{urlencode(given)}" if given else ""

    def page_url(n: int) -> str:
        return "/audit?" + urlencode({**given, "page": n})

    return render(request, "audit.html.jinja", entries=entries, total=total, page=page, pages=pages,
                  filters=filters, actions=store.audit_actions(), query=query, page_url=page_url)


@router.get("/audit.csv")
def audit_csv(request: Request, user: Optional[str] = None, action: Optional[str] = None):
    """The whole trail (or its filtered part), oldest first, as CSV with a header row:
    id, at (UTC), user, action, target, detail, client."""
    filters = _filters(user, action)
    entries = get_store(request).audit_entries(**filters)
    audit(request, "audit_export", "", ", ".join(f"{k}={v}" for k, v in filters.items() if v))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for e in reversed(entries):
        writer.writerow([csv_cell(e["id"]), csv_cell(e["at"]), csv_cell(e["user"]), csv_cell(e["action"]),
                         csv_cell(mask_written_numbers(e["target"])), csv_cell(mask_written_numbers(e["detail"])),
                         csv_cell(e["client"])])
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": 'attachment; filename="sigmatch-audit.csv"'})
