"""The policy view (issue 13 §6): one subscriber looked up through the service's lookup
(`--lookup`, `--lookup-token`): eligible campaigns and what blocks the others, pending
actions, last contacts, counters, markers, and the explanation of its recent events (the
service explains watched subscribers; a button starts watching one).

The number travels in a POST body, never in a URL (an address is logged by proxies and
kept in the browser's history). Every lookup is in the audit trail with its user, the
number masked as the logs mask it. The page shows the looked-up number in full and masks
every other run of seven digits or more, but the explanation's own numbers (cells, seqs,
counter values: no subscriber's)."""
from __future__ import annotations

import re
from typing import Optional

from fastapi import APIRouter, Form, Request

from engine.console.deps import audit, get_settings, render, viewer_may_post
from engine.errors import SigmatchError
from engine.privacy import mask_msisdn, mask_numbers, mask_written_numbers

__all__ = ["router", "NAV", "masked_except", "EXPLAIN_LAST"]

router = APIRouter()
NAV = ("Policy view", "/policy")

# the explanation's last entries shown (the service keeps a ring of 200 per watched number)
EXPLAIN_LAST = 50


def masked_except(text: str, msisdn: Optional[int], also=()) -> str:
    """`text` with every number masked but `msisdn` (the one the user looked up) and the
    numbers in `also` (an explanation's cells, seqs and counter values, which are no
    subscriber's), each kept only as a whole run of digits."""
    keep = ({str(msisdn)} if msisdn is not None else set()) | {str(n) for n in also}
    if not keep:
        return mask_numbers(text)
    kept = re.compile(r"(?<![0-9])(" + "|".join(sorted(map(re.escape, keep), key=len, reverse=True)) + r")(?![0-9])")
    parts = kept.split(text)
    # split with one group: the kept numbers are at the odd places
    return "".join(part if i % 2 else mask_numbers(part) for i, part in enumerate(parts))


# keys of an explanation whose numbers are subscribers' (masked on the page but the one
# looked up); every other number in it is the engine's own (a cell, a seq, a count)
_SUBSCRIBER_KEYS = frozenset({"msisdn", "peer", "peers"})


def _own_numbers(value, key: str = "") -> set:
    """The integers of 7 digits or more in an explanation document, but under _SUBSCRIBER_KEYS."""
    if key in _SUBSCRIBER_KEYS:
        return set()
    if isinstance(value, dict):
        return set().union(*(_own_numbers(v, str(k)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return set().union(*(_own_numbers(v, key) for v in value))
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 6:
        return {abs(value)}
    return set()


def _local(ts: Optional[int], offset_ms: int) -> str:
    if ts is None:
        return ""
    from engine.wording import local_time
    return local_time(ts, offset_ms)


def _utc_offset_ms(settings) -> int:
    from engine.language.config import load_config
    try:
        return load_config(settings.config).utc_offset_ms
    except SigmatchError:
        return 0


def _client(settings):
    from engine.service.client import Lookup, LookupFailed
    if not settings.lookup:
        raise LookupFailed("the console was started without --lookup: no subscriber can be looked up")
    return Lookup(settings.lookup, settings.lookup_token or "")


@router.get("/policy")
def policy_form(request: Request):
    return render(request, "policy.html.jinja", number="", msisdn=None, view=None, problem=None, explained=None,
                  rows=None)


@router.post("/policy")
@viewer_may_post
def policy_lookup(request: Request, msisdn: str = Form("")):
    return _look_up(request, msisdn)


@router.post("/policy/watch")
@viewer_may_post
def policy_watch(request: Request, msisdn: str = Form("")):
    """Start explaining this subscriber's events (the service's watch list), then show it."""
    from engine.service.client import LookupFailed
    from loaders.lists import normalise_msisdn
    number = normalise_msisdn(msisdn)
    problem = None
    if number is not None:
        try:
            _client(get_settings(request)).watch(number)
            audit(request, "watch", mask_msisdn(number), "explain its events from now on")
        except LookupFailed as e:
            problem = str(e)
    return _look_up(request, msisdn, problem=problem)


def _look_up(request: Request, typed: str, problem: Optional[str] = None):
    from engine.service.client import LookupFailed
    from loaders.lists import MSISDN_RULE, NOT_FOUND_HINT, normalise_msisdn
    settings = get_settings(request)
    number = normalise_msisdn(typed)
    context = {"number": typed, "msisdn": None, "view": None, "problem": problem, "explained": None,
               "rows": None, "field_error": None}
    if number is None:
        context["field_error"] = f"not an MSISDN: {MSISDN_RULE}"
        context["number"] = mask_written_numbers(typed)
        return render(request, "policy.html.jinja", status_code=400, **context)
    context["number"] = str(number)
    audit(request, "lookup", mask_msisdn(number), "policy view")
    try:
        client = _client(settings)
        view = client.subscriber(number)
        explained = client.explanation(number, last=EXPLAIN_LAST) if view is not None else None
    except LookupFailed as e:
        context["problem"] = str(e)
        return render(request, "policy.html.jinja", status_code=502, **context)
    if view is None:
        context["problem"] = f"{number} is not a subscriber ({NOT_FOUND_HINT})"
        return render(request, "policy.html.jinja", status_code=404, **context)
    offset = _utc_offset_ms(settings)
    context.update(msisdn=number, view=view, rows=_rows(view, offset),
                   explained=_explanation(explained, number, offset))
    return render(request, "policy.html.jinja", **context)


def _rows(view: dict, offset: int) -> dict:
    """The view's parts as the page lists them, times local."""
    campaigns = []
    for cid, c in view["campaigns"].items():
        last = c.get("last_contact")
        campaigns.append({
            "id": cid, "eligible": c["eligible"], "blocked_by": c["blocked_by"],
            "event_conditions": c["event_conditions"], "channel": c["channel"], "template": c.get("template") or "",
            "last_contact": None if last is None else {
                "at": _local(last["ts"], offset), "kind": last["kind"], "converted": last["converted"],
                "seq": last["seq"]},
            "cooldown_until": _local(c.get("cooldown_until"), offset),
            "budget": c["budget"]})
    policy = view["contact_policy"]
    return {
        "eligible": [c for c in campaigns if c["eligible"]],
        "blocked": [c for c in campaigns if not c["eligible"]],
        "contacted": [c for c in campaigns if c["last_contact"]],
        "pending": [{"campaign": p["campaign"], "due": _local(p["due"], offset),
                     "trigger": _local(p["trigger_ts"], offset)} for p in view["pending"]],
        "counters": view["counters"],
        "markers": {name: _local(t, offset) if t is not None else "never" for name, t in view["markers"].items()},
        "policy": {**policy, "last_contact": _local(policy["last_contact"], offset),
                   "min_gap_until": _local(policy["min_gap_until"], offset)},
        "clock": _local(view["clock"], offset),
        "state": view.get("state") or {},
    }


def _explanation(document: Optional[dict], msisdn: int, offset: int) -> Optional[str]:
    """The explanation as `sigmatch explain` prints it, the other numbers masked; None when
    the subscriber is not watched."""
    if document is None:
        return None
    from engine.closedloop.explain import format_text
    return masked_except(format_text(document, offset), msisdn, _own_numbers(document))
