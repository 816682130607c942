"""Why one subscriber did or did not get each campaign (`sigmatch explain`, the daemon's
/subscriber/{msisdn}/explain): the lines the core writes for watched subscribers
(engine/_explain.pxi, records.EXPLAIN_DTYPE) read back into entries, one per good event of
the subscriber and one per timer that fired for it. The reference model writes the same
entries (ReferenceModel(..., watch=[msisdn]).explanations), and tests/test_explain.py
demands them equal on random worlds.

An entry:

    {"ts": effective time (ms), "type": event type name, or "timer",
     event:  "event_ts": the event's own ts, "cell": its cell; "inactive": True for a number
             a reload left inactive (nothing else then)
     timer:  "campaign": id, "trigger_ts", "cell": the trigger's
     "conversions": [{"campaign", "seq", "contact_seq", "kind"}],
     "campaigns": [{"id", "result"}]      each campaign of the event's type in priority order;
                                          result "matched" or records.CONDITIONS' first failing
     "emissions": [{"campaign", "ts", "seq", "kind"}                      a contact made
                   | {"campaign", "ts", "suppressed": rule[, "recheck": which]}
                   | {"campaign", "ts", "scheduled": due} | {"campaign", "ts", "overflow": True}],
     "state": {"cell", "powered_on", "last_contact" (ts or None), "contacts_today",
               "counters": {name: value as read at ts, non-zero only},
               "markers": {name: ts}, "contacts": {campaign id: {"ts", "seq", "kind",
               "converted", "streak"}}, "pending": [campaign ids]}}

`rule` is a FUNNEL suppression without its "suppressed_" prefix (disabled, ended,
recheck_failed, absent, blacklist, quiet_hours, min_gap, max_per_day, max_in_window,
cooldown, campaign_budget, channel_budget).
"""
from __future__ import annotations

from collections import deque
from typing import Iterable, Optional

import numpy as np

from engine.records import EXPLAIN_LINES, FUNNEL, KINDS, MATCH_CONDITIONS, RECHECKS

__all__ = ["Explainer", "document", "SUPPRESSIONS"]

(X_EVENT, X_CONVERSION, X_MATCH, X_EMIT, X_SCHEDULED, X_OVERFLOW, X_TIMER, X_STATE, X_COUNTER, X_MARKER,
 X_CONTACT) = range(len(EXPLAIN_LINES))
EMIT_CONTACT = 254
SUPPRESSIONS = {k: name.removeprefix("suppressed_") for k, name in enumerate(FUNNEL)}
# ContactC flags and SubHeadC flags (engine/_core.pyx)
CONTACT_CONTACTED, CONTACT_CONVERTED, CONTACT_PENDING = 1, 2, 8
SUB_POWERED_OFF = 1


class Explainer:
    """The entries of the watched subscribers of one engine, as its core's lines arrive.
    `ring`: keep only the last `ring` entries per subscriber (the daemon's bound); None keeps
    all (`sigmatch explain`, one subscriber over one trace)."""

    def __init__(self, ring: Optional[int] = None):
        self.ring = ring
        self.entries: dict[int, deque] = {}       # msisdn -> entries, oldest first
        self._names = None

    def watch(self, msisdns: Iterable[int]) -> None:
        """From now on these numbers (the others are forgotten; those kept keep their entries)."""
        wanted = [int(m) for m in msisdns]
        self.entries = {m: self.entries.get(m, deque(maxlen=self.ring)) for m in wanted}

    def bind(self, engine) -> None:
        """Names from the engine's configuration, and the lists that tell audience, exclude,
        blacklist and where apart (the core has one eligibility bit for the four)."""
        config = engine.config
        self._names = {
            "campaigns": [c.id for c in config.campaigns],
            "counters": [k.name for k in config.counters],
            "markers": [m.name for m in config.markers],
            "types": {code: name for name, code in config.event_types.items()},
        }
        self._campaigns = config.campaigns
        self._blacklist = config.policy.blacklist
        self._lists = engine.world.lists
        self._subscribers = engine.subscribers

    def _member(self, name: str, msisdn: int) -> bool:
        values = self._lists[name]
        k = int(np.searchsorted(values, np.uint64(msisdn)))
        return k < len(values) and int(values[k]) == msisdn

    def _eligibility(self, ci: int, msisdn: int) -> str:
        """Which of audience, exclude, blacklist, where made the core's eligibility bit 0."""
        c = self._campaigns[ci]
        if c.audience is not None and not self._member(c.audience, msisdn):
            return "audience"
        if any(self._member(name, msisdn) for name in c.exclude):
            return "exclude"
        if any(self._member(name, msisdn) for name in self._blacklist):
            return "blacklist"
        return "where"

    def add(self, lines: np.ndarray) -> None:
        """Lines of Core.take_explain(), in order. Entries never straddle two calls: the core
        writes an event's or a timer's lines whole."""
        if not len(lines):
            return
        names = self._names
        ids = names["campaigns"]
        entry = None
        msisdn = None
        for x in lines.tolist():
            ts, other, seq, sub, value, cell, what, campaign, code, kind, _ = x
            if what == X_EVENT or what == X_TIMER:
                msisdn = int(self._subscribers[sub])
                entry = {"ts": ts}
                if what == X_EVENT:
                    entry.update(type=names["types"].get(value, str(value)), event_ts=other, cell=cell)
                    if code == 1:
                        entry["inactive"] = True
                else:
                    entry.update(type="timer", campaign=ids[campaign], trigger_ts=other, cell=cell)
                entry.update(conversions=[], campaigns=[], emissions=[])
                if msisdn in self.entries:
                    self.entries[msisdn].append(entry)
            elif entry is None:
                continue
            elif what == X_CONVERSION:
                entry["conversions"].append({"campaign": ids[campaign], "seq": seq, "contact_seq": other,
                                             "kind": KINDS[kind]})
            elif what == X_MATCH:
                result = MATCH_CONDITIONS[code]
                if result == "eligibility":
                    result = self._eligibility(campaign, msisdn)
                entry["campaigns"].append({"id": ids[campaign], "result": result})
            elif what == X_EMIT:
                emission = {"campaign": ids[campaign], "ts": ts}
                if code == EMIT_CONTACT:
                    emission.update(seq=seq, kind=KINDS[kind])
                else:
                    emission["suppressed"] = SUPPRESSIONS[code & 0xFF]
                    if code >> 8:
                        emission["recheck"] = RECHECKS[(code >> 8).bit_length() - 1]
                entry["emissions"].append(emission)
            elif what == X_SCHEDULED:
                entry["emissions"].append({"campaign": ids[campaign], "ts": ts, "scheduled": other})
            elif what == X_OVERFLOW:
                entry["emissions"].append({"campaign": ids[campaign], "ts": ts, "overflow": True})
            elif what == X_STATE:
                entry["state"] = {"cell": cell, "powered_on": not (code & SUB_POWERED_OFF),
                                  "last_contact": other if other >= 0 else None, "contacts_today": value,
                                  "counters": {}, "markers": {}, "contacts": {}, "pending": []}
            elif what == X_COUNTER:
                entry["state"]["counters"][names["counters"][campaign]] = value
            elif what == X_MARKER:
                entry["state"]["markers"][names["markers"][campaign]] = other
            elif what == X_CONTACT:
                state = entry["state"]
                if code & CONTACT_CONTACTED:
                    state["contacts"][ids[campaign]] = {
                        "ts": ts, "seq": seq, "kind": _kind_of(code), "converted": bool(code & CONTACT_CONVERTED),
                        "streak": value}
                if code & CONTACT_PENDING:
                    state["pending"].append(ids[campaign])

    def explanation(self, msisdn: int, last: Optional[int] = None) -> dict:
        """document() of the subscriber's entries (the last `last` of them when given)."""
        entries = list(self.entries.get(int(msisdn), ()))
        if last is not None:
            entries = entries[-last:] if last > 0 else []
        return document(int(msisdn), entries)


def _kind_of(flags: int) -> str:
    # CONTACT_CONTROL = 4, CONTACT_GLOBAL_CONTROL = 16
    return "global_control" if flags & 16 else "control" if flags & 4 else "send"


def document(msisdn: int, entries: list[dict], status: str = "active") -> dict:
    """The explanation as `--json` gives it: {"msisdn", "status", "events": entries,
    "actions": [{"seq", "ts", "campaign", "kind"} | {"campaign", "ts", "suppressed"[, "recheck"]}]},
    the actions being the contacts made and the emissions suppressed, in order."""
    actions = [{k: v for k, v in e.items()} for entry in entries for e in entry["emissions"]
               if "seq" in e or "suppressed" in e]
    return {"msisdn": msisdn, "status": status, "events": entries, "actions": actions}


def _clock(ts: int, utc_offset_ms: int) -> str:
    """Event time as local date and time, to the millisecond ("2026-01-01 21:59:00.000")."""
    from engine.wording import local_time
    return local_time(ts, utc_offset_ms, millis=True)


def _emission_text(e: dict, clock) -> str:
    if "seq" in e:
        return f"contact seq {e['seq']} ({e['kind']})"
    if "suppressed" in e:
        return f"suppressed: {e['suppressed']}" + (f" ({e['recheck']})" if "recheck" in e else "")
    if "scheduled" in e:
        return f"scheduled for {clock(e['scheduled'])}"
    return "dropped: max_pending reached"


def format_text(doc: dict, utc_offset_ms: int) -> str:
    """The explanation as the terminal shows it: one block per event or timer, local times
    (the configuration's utc_offset), each campaign with "matched" and what became of it,
    or the condition that failed; then the state after it."""
    def clock(ts):
        return _clock(ts, utc_offset_ms)

    from engine.api import format_utc_offset
    from engine.wording import plural
    lines = [f"subscriber {doc['msisdn']} ({doc['status']}): "
             f"{plural(len(doc['events']), 'event and timer', 'events and timers')}, "
             f"{plural(sum('seq' in a for a in doc['actions']), 'contact')}, "
             f"{sum('suppressed' in a for a in doc['actions']):,} suppressed; local time {format_utc_offset(utc_offset_ms)}"]
    for entry in doc["events"]:
        lines.append("")
        if entry["type"] == "timer":
            lines.append(f"{clock(entry['ts'])}  timer of {entry['campaign']} "
                         f"(triggered at {clock(entry['trigger_ts'])})")
        else:
            late = f", late: its own ts {clock(entry['event_ts'])}" if entry["event_ts"] != entry["ts"] else ""
            lines.append(f"{clock(entry['ts'])}  {entry['type']}" + (f" cell {entry['cell']}" if entry["cell"] else "")
                         + late)
        if entry.get("inactive"):
            lines.append("    inactive: the number is no longer in the profiles")
            continue
        if not entry["campaigns"] and entry["type"] != "timer":
            lines.append(f"    no campaign is triggered by {entry['type']}")
        for conv in entry["conversions"]:
            lines.append(f"    conversion of {conv['campaign']} (contact seq {conv['contact_seq']}, {conv['kind']})")
        emissions = {}
        for e in entry["emissions"]:
            emissions.setdefault(e["campaign"], []).append(e)
        width = max((len(c["id"]) for c in entry["campaigns"]), default=0)
        for c in entry["campaigns"]:
            if c["result"] == "matched":
                outcome = "; ".join(_emission_text(e, clock) for e in emissions.pop(c["id"], []))
                lines.append(f"    {c['id']:<{width}}  matched: {outcome}")
            else:
                lines.append(f"    {c['id']:<{width}}  not matched: {c['result']}")
        for campaign, rest in emissions.items():       # a timer's emission
            lines.append(f"    {campaign}  " + "; ".join(_emission_text(e, clock) for e in rest))
        state = entry.get("state")
        if state:
            parts = [f"cell {state['cell']}", "powered on" if state["powered_on"] else "powered off",
                     f"{plural(state['contacts_today'], 'contact')} today"]
            if state["last_contact"] is not None:
                parts.append(f"last contact {clock(state['last_contact'])}")
            if state["counters"]:
                parts.append("counters " + ", ".join(f"{k}={v}" for k, v in state["counters"].items()))
            if state["markers"]:
                parts.append("markers " + ", ".join(f"{k} {clock(v)}" for k, v in state["markers"].items()))
            if state["contacts"]:
                parts.append("last contacts " + ", ".join(
                    f"{cid} {clock(c['ts'])} seq {c['seq']} {c['kind']}" + (" converted" if c["converted"] else "")
                    + f" streak {c['streak']}" for cid, c in state["contacts"].items()))
            if state["pending"]:
                parts.append("pending " + ", ".join(state["pending"]))
            lines.append("    state: " + "; ".join(parts))
    return "\n".join(lines)
