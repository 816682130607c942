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

__all__ = ["router", "NAV", "masked_except", "EXPLAIN_LAST", "NotAView"]

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
    try:
        rows = _rows(view, offset)
        text = _explanation(explained, number, offset)
    except NotAView as e:
        context["problem"] = f"{client.url}: answered JSON of another shape ({e}): not a sigmatch lookup?"
        return render(request, "policy.html.jinja", status_code=502, **context)
    context.update(msisdn=number, view=view, rows=rows, explained=text)
    return render(request, "policy.html.jinja", **context)


class NotAView(ValueError):
    """The lookup answered JSON, but not of the shape of a policy view or an explanation; the
    message names the field ("campaigns: missing", "pending[0].due: expected an integer")."""


_MISSING = object()
# what each kind of field must be (a time or a count: an integer a 64-bit field holds), and
# how the message says it
_KINDS = {
    "integer": (lambda v: isinstance(v, int) and not isinstance(v, bool) and -(1 << 63) <= v < 1 << 63,
                "an integer"),
    "text": (lambda v: isinstance(v, str), "text"),
    "flag": (lambda v: isinstance(v, bool), "true or false"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "object": (lambda v: isinstance(v, dict), "an object"),
}
# a key of the answer shown in a message: another service's text, so cut short and scrubbed
_KEY_SHOWN = 40


def _name(where: str, key) -> str:
    """The field `key` of `where` as a message names it: `campaigns.x.channel`, `pending[0]`."""
    from engine.privacy import scrub
    if isinstance(key, int):
        return f"{where}[{key}]"
    shown = scrub(key)
    shown = shown if len(shown) <= _KEY_SHOWN else shown[:_KEY_SHOWN - 1] + "…"
    return f"{where}.{shown}" if where else shown


def _field(table: dict, key, where: str, kind: str, *, optional: bool = False):
    """table[key] when it is of `kind` (None when `optional` and it is absent or null);
    NotAView naming the field otherwise."""
    value = table.get(key, _MISSING)
    if optional and (value is None or value is _MISSING):
        return None
    if value is _MISSING:
        raise NotAView(f"{_name(where, key)}: missing")
    check, words = _KINDS[kind]
    if not check(value):
        raise NotAView(f"{_name(where, key)}: expected {words}")
    return value


def _each(values, where: str, kind: str, *, optional: bool = False) -> list:
    """The items of a list, each of `kind` (or null when `optional`)."""
    return [_field({i: v}, i, where, kind, optional=optional) for i, v in enumerate(values)]


def _entries(table: dict, where: str, kind: str, *, optional: bool = False) -> dict:
    """The values of an object, each of `kind` (or null when `optional`)."""
    return {name: _field(table, name, where, kind, optional=optional) for name in table}


def _rows(view, offset: int) -> dict:
    """The view's parts as the page lists them, times local. Every field the page reads is
    checked first: the answer is another process's, and a lookup of another kind (or
    version) must be one line on the page, not a KeyError. NotAView names the first field
    that is not as engine.service.lookup.policy_view writes it."""
    if not isinstance(view, dict):
        raise NotAView("the answer: expected an object")
    campaigns = []
    for cid, c in _field(view, "campaigns", "", "object").items():
        where = _name("campaigns", cid)
        if not isinstance(c, dict):
            raise NotAView(f"{where}: expected an object")
        last = _field(c, "last_contact", where, "object", optional=True)
        if last is not None:
            at = _name(where, "last_contact")
            last = {"at": _local(_field(last, "ts", at, "integer"), offset), "kind": _field(last, "kind", at, "text"),
                    "converted": _field(last, "converted", at, "flag"), "seq": _field(last, "seq", at, "integer")}
        campaigns.append({
            "id": cid, "eligible": _field(c, "eligible", where, "flag"),
            "blocked_by": _each(_field(c, "blocked_by", where, "list"), _name(where, "blocked_by"), "text"),
            "event_conditions": _each(_field(c, "event_conditions", where, "list"), _name(where, "event_conditions"),
                                      "text"),
            "channel": _field(c, "channel", where, "text"),
            "template": _field(c, "template", where, "text", optional=True) or "",
            "last_contact": last,
            "cooldown_until": _local(_field(c, "cooldown_until", where, "integer", optional=True), offset)})
    policy = _field(view, "contact_policy", "", "object")
    window = _field(policy, "max_in_window", "contact_policy", "object", optional=True)
    pending = []
    for i, p in enumerate(_field(view, "pending", "", "list")):
        where = _name("pending", i)
        if not isinstance(p, dict):
            raise NotAView(f"{where}: expected an object")
        pending.append({"campaign": _field(p, "campaign", where, "text"),
                        "due": _local(_field(p, "due", where, "integer"), offset),
                        "trigger": _local(_field(p, "trigger_ts", where, "integer"), offset)})
    state = _field(view, "state", "", "object", optional=True)
    return {
        "eligible": [c for c in campaigns if c["eligible"]],
        "blocked": [c for c in campaigns if not c["eligible"]],
        "contacted": [c for c in campaigns if c["last_contact"]],
        "pending": pending,
        # a counter not counted yet is null
        "counters": _entries(_field(view, "counters", "", "object"), "counters", "integer", optional=True),
        "markers": {name: "never" if t is None else _local(t, offset) for name, t in
                    _entries(_field(view, "markers", "", "object"), "markers", "integer", optional=True).items()},
        "policy": {
            "blacklisted": _field(policy, "blacklisted", "contact_policy", "flag"),
            "last_contact": _local(_field(policy, "last_contact", "contact_policy", "integer", optional=True), offset),
            "min_gap_until": _local(_field(policy, "min_gap_until", "contact_policy", "integer", optional=True),
                                    offset),
            "contacts_today": _field(policy, "contacts_today", "contact_policy", "integer"),
            "max_per_day": _field(policy, "max_per_day", "contact_policy", "integer", optional=True),
            "contacts_in_window": _field(policy, "contacts_in_window", "contact_policy", "integer", optional=True),
            "max_in_window": None if window is None else {
                "contacts": _field(window, "contacts", "contact_policy.max_in_window", "integer")}},
        "clock": _local(_field(view, "clock", "", "integer", optional=True), offset),
        "state": {} if state is None else {"active": _field(state, "active", "state", "flag"),
                                           "powered_on": _field(state, "powered_on", "state", "flag")},
    }


def _explanation(document, msisdn: int, offset: int) -> Optional[str]:
    """The explanation as `sigmatch explain` prints it, the other numbers masked; None when
    the subscriber is not watched. NotAView when the document is not an explanation."""
    if document is None:
        return None
    from engine.closedloop.explain import format_text
    if not isinstance(document, dict):
        raise NotAView("the explanation: expected an object")
    try:
        text = format_text(document, offset)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError) as e:
        # format_text reads explain's own documents without a check (it is `sigmatch explain`'s
        # printer): a document of another shape is told by what fails while it is printed
        raise NotAView(f"the explanation: not as sigmatch explain writes it ({type(e).__name__})") from None
    return masked_except(text, msisdn, _own_numbers(document))
