"""The unified policy view: one subscriber's eligible campaigns, pending actions, last
contacts and counters, as JSON over HTTP (`GET /subscriber/{msisdn}`), for the call centre
and the shops. Read-only, one subscriber per request, behind a bearer token.

"Eligible now" means: the campaign would match this subscriber's next event of a triggering
type that meets the campaign's event conditions (peer, cell, time of day), which depend on
the event and so are listed, not judged. Everything that depends on the subscriber is
judged: audience, exclude lists, blacklist and `where`; the counter and `when`; stop_after,
once, cooldown and a pending action of the campaign; and the budgets left on the clock's local
day (the campaign's daily and total budget, its channel's daily budget), which are the same
for every subscriber. An `anniversary` depends on the event's date, so it is listed with the
event conditions. Each campaign also names the template the subscriber's contacts take: with
`variants`, the subscriber's variant under the weights loaded now.
"""
from __future__ import annotations

import hmac
import json
import logging
import re
from http.server import BaseHTTPRequestHandler
from typing import Callable, Optional
from urllib.parse import unquote

from engine.privacy import mask_msisdn, mask_written_numbers
from engine.service.serving import BoundedHTTPServer
from loaders.lists import MSISDN_RULE, NOT_FOUND_HINT, normalise_msisdn

__all__ = ["policy_view", "LookupServer", "request_log_text"]

log = logging.getLogger("sigmatch.lookup")

# the number as a person types it: `+86...`, `0086...`, with spaces (%20) or dashes
_PATH = re.compile(r"/subscriber/([^/?#]{1,64})", re.IGNORECASE)
# the explanation of a watched subscriber, the last N entries (default: all the ring holds)
_EXPLAIN = re.compile(r"/subscriber/([^/?#]{1,64})/explain(?:\?([^#]*))?", re.IGNORECASE)
# ?last=N: 0 to LAST_MAX (beyond the ring, it is all the ring holds)
_LAST = re.compile(r"last=([0-9]{1,9})")
LAST_MAX = 999_999_999
# the watch list: GET /watch; PUT or DELETE /watch/{msisdn}
_WATCH = re.compile(r"/watch(?:/([^/?#]{1,64}))?", re.IGNORECASE)


def policy_view(engine, msisdn: int) -> Optional[dict]:
    """The view of one subscriber, or None when the number is not a subscriber."""
    view = engine._core.subscriber_view(msisdn)
    if view is None:
        return None
    config = engine.config
    clock = engine.clock
    campaigns = {}
    eligible = []
    counters = {c.name: v for c, v in zip(config.counters, view["counters"])}
    used, channel_used = engine._core.budgets_used()
    channel_budgets = {name: {"daily_budget": budget, "sent_today": channel_used.get(name, 0),
                              "left_today": max(0, budget - channel_used.get(name, 0))}
                       for name, budget in config.channel_budgets.items()}
    for index, (spec, state) in enumerate(zip(config.campaigns, view["campaigns"])):
        today, ever = used[index]
        budget = {
            "daily_budget": spec.daily_budget, "sent_today": today,
            "left_today": None if spec.daily_budget is None else max(0, spec.daily_budget - today),
            "total_budget": spec.total_budget, "sent_ever": ever,
            "left_ever": None if spec.total_budget is None else max(0, spec.total_budget - ever),
        }
        blocked = []
        if not view["active"]:
            blocked.append("inactive")
        if view["blacklisted"]:
            blocked.append("blacklist")
        elif not state["static"]:
            blocked.append("audience, exclude or where")
        if spec.counter and state["counter"] is not None and state["counter"] < spec.at_least:
            blocked.append(f"counter {spec.counter} {state['counter']} < {spec.at_least}")
        if spec.when is not None and not _when_holds(spec.when, counters):
            blocked.append(f"when {spec.when}")
        if spec.stop_after is not None and state["streak"] >= spec.stop_after:
            blocked.append("stop_after")
        if spec.once and state["contacted"]:
            blocked.append("once")
        cooldown_until = (state["last_ts"] + spec.cooldown_ms
                          if state["contacted"] and spec.cooldown_ms else None)
        if cooldown_until is not None and clock is not None and clock < cooldown_until:
            blocked.append("cooldown")
        if not spec.enabled:
            blocked.append("disabled")
        if state["pending"]:
            blocked.append("pending")
        if budget["left_today"] == 0 or budget["left_ever"] == 0:
            blocked.append("campaign_budget")
        if spec.channel in channel_budgets and channel_budgets[spec.channel]["left_today"] == 0:
            blocked.append("channel_budget")
        if not blocked:
            eligible.append(spec.id)
        conditions = [name for name, present in (("flags", spec.flags), ("arg", spec.arg is not None),
                                                 ("peer_in", spec.peer_in), ("area", spec.area),
                                                 ("hours", spec.hours), ("days", spec.days != 0x7F),
                                                 ("start", spec.start), ("end", spec.end),
                                                 ("after", spec.after), ("not_after", spec.not_after),
                                                 ("anniversary", spec.anniversary)) if present]
        campaigns[spec.id] = {
            "eligible": not blocked,
            "blocked_by": blocked,
            "event_conditions": conditions,
            "channel": spec.channel,
            # the template of its contacts, of any kind: with variants, this subscriber's variant
            "template": spec.template_of(msisdn),
            "last_contact": None if not state["contacted"] else {
                "ts": state["last_ts"], "seq": state["last_seq"], "kind": state["kind"],
                "converted": state["converted"]},
            "cooldown_until": cooldown_until,
            "no_response_streak": state["streak"],
            "budget": budget,
        }
    policy = config.policy
    last = view["last_contact"]
    return {
        "msisdn": str(msisdn),
        "clock": clock,
        "eligible": eligible,
        "campaigns": campaigns,
        "pending": [{"campaign": config.campaigns[p["campaign"]].id, "due": p["due"],
                     "trigger_ts": p["trigger_ts"]} for p in view["pending"]],
        "counters": counters,
        # each marker's last time (event time, ms), null when never set
        "markers": {m.name: t for m, t in zip(config.markers, view["markers"])},
        "contact_policy": {
            "blacklisted": view["blacklisted"],
            "last_contact": last,
            "min_gap_until": last + policy.min_gap_ms if last is not None and policy.min_gap_ms else None,
            "contacts_today": view["contacts_today"],
            "max_per_day": policy.max_per_day,
            # the contacts kept for max_in_window that are still inside it at the clock
            "contacts_in_window": (None if policy.max_in_window is None else
                                   sum(1 for t in view["window_times"] if t > (clock or 0) - policy.max_in_window[1])),
            "max_in_window": None if policy.max_in_window is None else {
                "contacts": policy.max_in_window[0], "window_ms": policy.max_in_window[1]},
        },
        "channel_budgets": channel_budgets,
        "state": {"cell": view["cell"], "powered_on": view["powered_on"], "active": view["active"]},
    }


def _when_holds(text: str, counters: dict) -> bool:
    from engine.language import when
    return when.evaluate(when.parse(text), lambda name: counters[name] or 0)


# The request log: control bytes escaped (a request line is the client's text and must not
# drive the operator's terminal); the path segment after /subscriber/ (any case) and the value
# of any msisdn= parameter masked whole, whatever they hold: the lookup answers a number
# written in groups (138-0001-0003, 138%200001%200003), whose groups are each too short for
# the digit-run rule; and every other run of 7+ digits masked wherever it stands in the line
# (a bad request echoed back), since the log masking of the service is a second line of
# defence, not the only one. A value ends where the request line's next part begins (a
# space before the HTTP version: a raw space inside a number makes the request line bad,
# and it is echoed back whole).
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_DIGIT_RUN = re.compile(r"[0-9]{7,}")
_NUMBER_IN_LOG = re.compile(r"""(/subscriber/|/watch/)([^/?#]*?)(?=[/?#"']| HTTP/|$)|(msisdn=)([^&#]*?)(?=[&#"']| HTTP/|$)""",
                            re.IGNORECASE)

# Lookups are short (one subscriber, the engine's lock held for microseconds between two
# feed pieces), so a few workers answer a burst of hundreds; idle sockets never hold one.
LOOKUP_WORKERS = 8
LOOKUP_MAX_CONNECTIONS = 1024
LOOKUP_REQUEST_TIMEOUT_S = 10.0


def _masked_value(value: str) -> str:
    """A number as a client wrote it, for the log: normalised and masked, `***` when it is
    no number (what it holds is the client's, and may be a number in another spelling)."""
    if not value:
        return value
    number = normalise_msisdn(unquote(value))
    return mask_msisdn(number) if number is not None else "***"


# what a client may percent-encode of a number written anywhere else in the request line
# (/foo/%31%33%36..., 138%2D0001...): digits, spaces, '+', '-' and '.', decoded before the
# masking (helper-120: such a number, and one in groups on another path, was logged whole)
_ENCODED_NUMBER_CHAR = re.compile(r"%(3[0-9]|2[0bde])", re.IGNORECASE)


def request_log_text(text: str) -> str:
    """A request log line as logged: control bytes escaped, the subscriber path segment and
    msisdn= values masked whole, and any other number masked wherever it stands: a run of
    digits, or one written in groups (privacy.mask_written_numbers), percent-encoded or not."""
    text = _NUMBER_IN_LOG.sub(lambda m: (m[1] + _masked_value(m[2]) if m[1] is not None
                                         else m[3] + _masked_value(m[4])), text.translate(_CONTROL))
    text = mask_written_numbers(_ENCODED_NUMBER_CHAR.sub(lambda m: chr(int(m[1], 16)), text))
    return _DIGIT_RUN.sub(lambda m: mask_msisdn(m[0]), text)


_FAILED = object()       # a handler's call that failed and was answered 500


class _LookupHTTPServer(BoundedHTTPServer):
    """The lookup's BoundedHTTPServer: its refusal of a request head past the bound is JSON
    like every other answer of the lookup (docs/operations.md), where the shared server's is
    bodiless (helper-133: 414 and 431 came with Content-Length: 0)."""

    def head_refusal(self, status: int, head: bytes) -> bytes:
        """414 or 431 with `{"error"}` naming the bound, and nothing of the request: what
        arrived may hold a number, and it was never read as a request."""
        what = "the request line" if status == 414 else "the request head (request line and header fields)"
        body = json.dumps({"error": f"{what} passes {self.max_head_bytes:,} bytes, the most a request head "
                                    "may hold"}).encode()
        # the status line the shared server gives these answers
        status_line = super().head_refusal(status, head).split(b"\r\n", 1)[0]
        # HEAD is answered as GET without the body, as the lookup's other answers are
        return (status_line + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n" + (b"" if head.startswith(b"HEAD ") else body))


class LookupServer:
    """`GET /subscriber/{msisdn}` on host:port. `view(msisdn)` is called with the engine's
    lock held by the caller's function; this server never touches the engine directly.
    Served by a BoundedHTTPServer (engine.service.serving): backlog 1024, LOOKUP_WORKERS
    threads, at most LOOKUP_MAX_CONNECTIONS connections, a request head within
    LOOKUP_REQUEST_TIMEOUT_S. With `metrics`, its connections are counted there."""

    def __init__(self, view: Callable[[int], Optional[dict]], host: str, port: int, token: str, *,
                 metrics=None, workers: int = LOOKUP_WORKERS, max_connections: int = LOOKUP_MAX_CONNECTIONS,
                 request_timeout_s: float = LOOKUP_REQUEST_TIMEOUT_S,
                 explain: Optional[Callable[[int, Optional[int]], Optional[dict]]] = None,
                 watch: Optional[Callable[[str, Optional[int]], tuple[int, dict]]] = None):
        """`explain(msisdn, last)`: a watched subscriber's explanation, None when not watched
        (GET /subscriber/{msisdn}/explain?last=N). `watch(method, msisdn)`: (status, body) for
        GET /watch, PUT and DELETE /watch/{msisdn}. Without them those paths are 404."""
        if not token or not token.strip() or any(c in token for c in "\r\n\0"):
            # a token of spaces alone could never be given back: every request was refused
            # nor one with a line break, which no header can carry
            raise ValueError("the lookup needs a bearer token (--lookup-token or SIGMATCH_LOOKUP_TOKEN), "
                             "not an empty one or one of spaces, and on one line")
        expected = f"Bearer {token}".encode()

        class Handler(BaseHTTPRequestHandler):
            server_version = "sigmatch"
            # a request line http.server cannot read is answered with a status line too (its
            # default, HTTP/0.9, answered a bare JSON body: no status, no headers)
            default_request_version = "HTTP/1.0"

            def _authorised(self) -> bool:
                # "Bearer" in any letter case (RFC 9110 §11.1), the token without the spaces
                # around it; another scheme (Basic) is no bearer token at all
                scheme, _, credentials = (self.headers.get("Authorization") or "").strip().partition(" ")
                bearer = scheme.lower() == "bearer"
                given = f"Bearer {credentials.strip()}".encode() if bearer else b""
                if not hmac.compare_digest(given, expected):
                    self._reply(401, {"error": "the bearer token was refused" if bearer else
                                      "a bearer token is required"},
                                {"WWW-Authenticate": 'Bearer realm="sigmatch"'})
                    return False
                return True

            def _number(self, text: str) -> Optional[int]:
                msisdn = normalise_msisdn(unquote(text))
                if msisdn is None:
                    self._reply(400, {"error": f"not an MSISDN ({MSISDN_RULE})"})
                return msisdn

            def _call(self, fn, *args):
                try:
                    return fn(*args)
                except Exception as e:      # the engine's failure, not the client's: one line
                    log.error("lookup failed: %s: %s", type(e).__name__, e)
                    self._reply(500, {"error": "the lookup failed; see the service's log"})
                    return _FAILED

            def _watch_request(self, method: str) -> None:
                if not self._authorised():
                    return
                match = _WATCH.fullmatch(self.path)
                if watch is None or not match or (method == "GET") != (match[1] is None):
                    self._reply(404, {"error": "use GET /watch, PUT /watch/{msisdn} or DELETE /watch/{msisdn}"})
                    return
                msisdn = None
                if match[1] is not None:
                    msisdn = self._number(match[1])
                    if msisdn is None:
                        return
                answer = self._call(watch, method, msisdn)
                if answer is not _FAILED:
                    self._reply(*answer)

            def do_PUT(self):
                self._watch_request("PUT")

            def do_DELETE(self):
                self._watch_request("DELETE")

            def do_GET(self):
                if not self._authorised():
                    return
                if _WATCH.fullmatch(self.path):
                    self._watch_request("GET")
                    return
                match = _EXPLAIN.fullmatch(self.path)
                if match and explain is not None:
                    last = _LAST.fullmatch(match[2]) if match[2] else None
                    names = [part.partition("=")[0] for part in match[2].split("&")] if match[2] else []
                    other = next((name for name in names if name != "last"), None)
                    if other is not None or len(names) > 1:
                        self._reply(400, {"error": "GET /subscriber/{msisdn}/explain takes one query parameter, "
                                                   "last (the last N entries), once",
                                          "parameter": (other if other is not None else "last")[:64]})
                        return
                    if match[2] and last is None:
                        self._reply(400, {"error": f"last must be a whole number from 0 to {LAST_MAX:,} (the "
                                                   "last N entries; without ?last=, all the ring holds)",
                                          "parameter": "last", "minimum": 0, "maximum": LAST_MAX})
                        return
                    msisdn = self._number(match[1])
                    if msisdn is None:
                        return
                    body = self._call(explain, msisdn, int(last[1]) if last is not None else None)
                    if body is _FAILED:
                        return
                    if body is None:
                        self._reply(404, {"error": f"{msisdn} is not watched: PUT /watch/{msisdn} first (the "
                                                   "explanation covers the events from then on)"})
                    else:
                        self._reply(200, body)
                    return
                match = _PATH.fullmatch(self.path)
                if not match:
                    asked = _PATH.fullmatch(self.path.split("?", 1)[0])
                    if asked and "?" in self.path:
                        # the path was right: its query is what is not (it was told to use the path)
                        self._reply(400, {"error": "GET /subscriber/{msisdn} takes no query parameters"})
                    else:
                        self._reply(404, {"error": "use GET /subscriber/{msisdn}"})
                    return
                msisdn = self._number(match[1])
                if msisdn is None:
                    return
                body = self._call(view, msisdn)
                if body is _FAILED:
                    return
                if body is None:
                    self._reply(404, {"error": f"{msisdn} is not a subscriber ({NOT_FOUND_HINT})"})
                else:
                    self._reply(200, body)

            def do_POST(self):
                if self._authorised():
                    self._refuse_method()

            def _refuse_method(self, headers: Optional[dict] = None):
                allowed = "GET, HEAD, PUT, DELETE" if _WATCH.fullmatch(self.path) else "GET, HEAD"
                self._reply(405, {"error": f"{self.command} is not answered here: use {allowed}"},
                            {"Allow": allowed, **(headers or {})})

            do_PATCH = do_POST
            # every server answers HEAD as GET, without the body (RFC 9110 §9.1)
            do_HEAD = do_GET

            def send_error(self, code, message=None, explain=None):
                # http.server's own refusals (a method it has no do_ for, a malformed request
                # line) as JSON like every other answer, not its HTML page
                self.close_connection = True
                if code == 501 and self.command:
                    # a method without a do_ (TRACE, OPTIONS, a lowercase get): 405 as for POST,
                    # and logged as what was sent
                    self.log_error("code %d, message %s", 405, f"{self.command} is not answered here")
                    self._refuse_method({"Connection": "close"})
                    return
                self.log_error("code %d, message %s", code, message)    # as http.server logs it
                short = self.responses.get(code, ("error",))[0]
                self._reply(code, {"error": message or short}, {"Connection": "close"})

            def _reply(self, status: int, body: dict, headers: Optional[dict] = None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def log_message(self, format, *args):
                # the request line holds the MSISDN and the client's raw bytes
                log.info("lookup %s %s", self.address_string(), request_log_text(format % args))

        self.server = _LookupHTTPServer(Handler, host, port, name="lookup", workers=workers,
                                        max_connections=max_connections, request_timeout_s=request_timeout_s)
        self.address = self.server.server_address
        if metrics is not None:
            metrics.watch("lookup", self.server)

    def start(self) -> "LookupServer":
        self.server.start()
        return self

    def close(self) -> None:
        self.server.close()
