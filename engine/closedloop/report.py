"""`sigmatch report`: what each campaign earned, from one or more output directories.

    outputs = read_outputs(["out/"])          # engine.closedloop.outputs
    report = build_report(outputs)            # the --json document (shape below)
    print(format_report(report, by="campaign"))

The --json document (`REPORT_VERSION` 1):

    {"report": 1, "outputs": [dir, ...], "configuration": {sha256, utc_offset, campaigns} | null,
     "utc_offset": "+08:00", "first_ts": ms | null, "last_ts": ms | null, "days": ["YYYY-MM-DD", ...],
     "min_controls": 100,
     "campaigns": {id: {<figures>, "funnel": {matched, scheduled, ...every counter of stats.json},
                        "variants": {template: <figures>}, "days": {"YYYY-MM-DD": <figures>}}},
     "programme": {<figures>, "days": {"YYYY-MM-DD": <figures>}},
     "warnings": [line, ...]}

    <figures> = {sends, controls, global_controls, conversions_send, conversions_control,
                 conversions_global_control, rate_send, rate_control, rate_global_control,
                 uplift, ci_low, ci_high, relative_uplift, incremental_conversions, note}

Counts are contacts (action records) and their conversions (at most one per contact, SPEC §3
step 5). Rates are fractions (0..1), None without contacts. A campaign's (and a variant's, and
a day's) uplift is its send rate minus its control rate, with the 95% interval of
engine.closedloop.uplift (Newcombe); the programme's is the send rate of every campaign minus
the rate of the global controls. `note`: "" (a figure that holds), "not significant" (the
interval holds 0), "too few controls" (fewer than `min_controls`), "no sends", "contacts missing"
(more conversions than contacts: action files missing from the directory). uplift, ci_low,
ci_high, relative_uplift and incremental_conversions are None when there is no figure.

Days are local days (stats.json's utc_offset). A contact counts on the day it was made, and
its conversion on the contact's day too (a cohort), so a day's rate is that of its contacts.
Variants are keyed by the actions' `template`. Conversions are joined to their contacts
through contact_seq within each directory; the funnel (matched, suppressions ...) comes from
stats.json, added up over the directories.
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from engine.closedloop.outputs import Outputs, ReportError, _warn
from engine.closedloop.uplift import MIN_CONTROLS, Uplift, uplifts
from engine.privacy import escape_controls
from engine.wording import plural

__all__ = ["REPORT_VERSION", "build_report", "format_report", "BY", "LEGEND", "legend_text"]

log = logging.getLogger("sigmatch.report")

REPORT_VERSION = 1
DAY_MS = 86_400_000
BY = ("campaign", "variant", "day")

# the kinds of contact an action record names (SPEC §4)
SEND, CONTROL, GLOBAL_CONTROL = "send", "control", "global_control"
_KINDS = (SEND, CONTROL, GLOBAL_CONTROL)

def legend_text(min_controls: int = MIN_CONTROLS) -> str:
    """What the table's columns mean, with the report's own minimum of controls (--min-controls)."""
    return (
        "sent, control, global: contacts sent, held out as the campaign's control group, held out as the global "
        "control group (global_holdout); conv: conversions of sends / of controls; rate: conversion rate of sends / "
        "of controls; uplift: rate of sends minus rate of controls in percentage points with its 95% interval "
        f"(Newcombe), 'not significant' when the interval holds 0, 'too few controls' below {min_controls:,} "
        "controls; incr: incremental conversions (uplift x sends). The programme compares every send with the "
        "global control group.")


LEGEND = legend_text()


def _parse_offset(text: Optional[str]) -> int:
    """stats.json's utc_offset in ms (0 without one: an older sigmatch's output, in UTC),
    by the configuration's own parser; outputs.read_outputs has refused any other value."""
    if not text:
        return 0
    from engine.language.config import parse_utc_offset
    return parse_utc_offset(text)


def _day_name(day: int) -> str:
    from engine.wording import local_day        # as stats.json names days, past the year 9999 too
    return local_day(day)


def _kind_counts(counts: dict) -> tuple:
    contacts, converted = counts["contacts"], counts["conversions"]
    return tuple(contacts.get(k, 0) for k in _KINDS) + tuple(converted.get(k, 0) for k in _KINDS)


def _compared(counts: dict, programme: bool) -> tuple[int, int, int, int]:
    """(sends, their conversions, controls, theirs) that the uplift compares: a campaign's own
    controls, or for the programme the global controls."""
    sends, controls, global_controls, conv_send, conv_control, conv_global = _kind_counts(counts)
    if programme:
        return sends, conv_send, global_controls, conv_global
    return sends, conv_send, controls, conv_control


def _figures(counts: dict, measured: Uplift) -> dict:
    """<figures> of one unit from its counts by kind ({"contacts": {kind: n}, "conversions": ...})
    and its uplift."""
    sends, controls, global_controls, conv_send, conv_control, conv_global = _kind_counts(counts)
    return {
        "sends": sends, "controls": controls, "global_controls": global_controls,
        "conversions_send": conv_send, "conversions_control": conv_control,
        "conversions_global_control": conv_global,
        "rate_send": conv_send / sends if sends else None,
        "rate_control": conv_control / controls if controls else None,
        "rate_global_control": conv_global / global_controls if global_controls else None,
        "uplift": measured.absolute, "ci_low": measured.low, "ci_high": measured.high,
        "relative_uplift": measured.relative, "incremental_conversions": measured.incremental,
        "note": measured.note,
    }


class _Figures:
    """Units to give <figures>, their uplifts computed together (one statsmodels call)."""

    def __init__(self, min_controls: int):
        self.min_controls = min_controls
        self.pending: list[tuple[dict, str, dict, bool]] = []   # (parent, key, counts, programme)

    def put(self, parent: dict, key: str, counts: dict, programme: bool = False) -> None:
        self.pending.append((parent, key, counts, programme))

    def fill(self) -> None:
        compared = [_compared(counts, programme) for _, _, counts, programme in self.pending]
        # more conversions than contacts: only where contacts are missing from the files
        whole = [i for i, (n1, x1, n2, x2) in enumerate(compared) if x1 <= n1 and x2 <= n2]
        measured = [Uplift(*c, None, None, None, None, None, None, None, "contacts missing") for c in compared]
        for i, m in zip(whole, uplifts([compared[i] for i in whole], min_controls=self.min_controls)):
            measured[i] = m
        for (parent, key, counts, _), m in zip(self.pending, measured):
            parent[key] = {**_figures(counts, m), **parent[key]}     # the figures first, then the parts
        self.pending = []


def _blank() -> dict:
    return {"contacts": {}, "conversions": {}}


def _add(unit: dict, what: str, kind: str, n: int) -> None:
    unit[what][kind] = unit[what].get(kind, 0) + n


def build_report(outputs: Outputs, *, min_controls: int = MIN_CONTROLS) -> dict:
    """The --json document of `outputs` (see the module's docstring)."""
    identity = outputs.configuration or {}
    offset_ms = _parse_offset(identity.get("utc_offset"))
    warnings = list(outputs.warnings)
    names = list(identity.get("campaigns") or [])
    for directory in outputs.directories:
        names += [cid for cid in directory.stats["campaigns"] if cid not in names]
    names += [cid for cid in outputs.campaigns if cid not in names]

    # every contact and conversion as (campaign, template, kind, day) codes
    keys = {"contacts": [], "conversions": []}
    first_ts, last_ts = None, None
    for directory in outputs.directories:
        a, c = directory.actions, directory.conversions
        day = (a.ts + offset_ms) // DAY_MS
        keys["contacts"].append((a.campaign, a.template, a.kind, day))
        if len(a):
            low, high = int(a.ts.min()), int(a.ts.max())
            first_ts = low if first_ts is None else min(first_ts, low)
            last_ts = high if last_ts is None else max(last_ts, high)
        if len(c):
            where, found = _contacts_of(a.seq, c.seq)
            # a conversion counts for its contact: one whose contact_seq names an action of
            # another subscriber or campaign is another run's (a file copied in), and was
            # counted under the contact's template and the conversion's campaign (helper-133)
            other = found & ((a.msisdn[where] != c.msisdn) | (a.campaign[where] != c.campaign)) if len(a) else found
            if other.any():
                named = plural(int(other.sum()), "conversion names a contact", "conversions name contacts")
                _warn(warnings, f"{directory.path}: {named} (contact_seq) of another subscriber or campaign: "
                                "another run's? Counted as conversions whose contact is missing")
                found = found & ~other
            if not found.all():
                missing = plural(int((~found).sum()), "conversion whose contact is", "conversions whose contacts are")
                _warn(warnings, f"{directory.path}: {missing} not in its action files: counted on the day they "
                                "happened, under the campaign's only template (or '?')")
            if len(a):
                template, contact_day = a.template[where], day[where]
            else:
                template, contact_day = np.full(len(c), -1, np.int64), np.zeros(len(c), np.int64)
            if not found.all():
                template = np.where(found, template, _only_template(a, c.campaign))
                contact_day = np.where(found, contact_day, (c.ts + offset_ms) // DAY_MS)
            keys["conversions"].append((c.campaign, template, c.kind, contact_day))

    _warn_of_contacts_twice(outputs, warnings)
    if identity.get("campaigns") is not None:
        named = set(identity["campaigns"])
        for directory in outputs.directories:
            named |= set(directory.stats["campaigns"])
        for cid in outputs.campaigns:
            if cid not in named:
                # a record edited by hand, or of another configuration: a row of zeros in the
                # funnel beside counts that no configuration of this run made
                _warn(warnings, f"campaign {escape_controls(cid[:60])!r}: in the record files, but not in the "
                                "configuration that wrote them (configuration.campaigns): files edited or mixed in?")
    templates = outputs.templates + ["?"]
    campaigns = {cid: {"total": _blank(), "variants": {}, "days": {}} for cid in names}
    programme = {"total": _blank(), "days": {}}
    all_days: set[int] = set()
    for what, parts in keys.items():
        for (campaign, template, kind, day), count in _counted(parts):
            cid, kind_name = outputs.campaigns[campaign], outputs.kinds[kind]
            if kind_name not in _KINDS:
                raise ReportError(f"action kind {kind_name!r} is not one of {', '.join(_KINDS)}")
            unit = campaigns.setdefault(cid, {"total": _blank(), "variants": {}, "days": {}})
            all_days.add(day)
            for target in (unit["total"], unit["variants"].setdefault(templates[template], _blank()),
                           unit["days"].setdefault(day, _blank()), programme["total"],
                           programme["days"].setdefault(day, _blank())):
                _add(target, what, kind_name, count)

    later = _Figures(min_controls)
    report_campaigns = {}
    for cid, unit in campaigns.items():
        entry = report_campaigns[cid] = {}
        later.put(report_campaigns, cid, unit["total"])
        entry["funnel"] = _funnel(outputs, cid)
        entry["variants"] = {t: {} for t in sorted(unit["variants"])}
        for t in entry["variants"]:
            later.put(entry["variants"], t, unit["variants"][t])
        entry["days"] = {_day_name(d): {} for d in sorted(unit["days"])}
        for d in sorted(unit["days"]):
            later.put(entry["days"], _day_name(d), unit["days"][d])
    holder = {"programme": {}}
    later.put(holder, "programme", programme["total"], programme=True)
    programme_entry = holder["programme"]
    programme_entry["days"] = {_day_name(d): {} for d in sorted(programme["days"])}
    for d in sorted(programme["days"]):
        later.put(programme_entry["days"], _day_name(d), programme["days"][d], programme=True)
    later.fill()
    programme_entry = holder["programme"]
    return {
        "report": REPORT_VERSION,
        "outputs": [str(d.path) for d in outputs.directories],
        "configuration": outputs.configuration,
        "utc_offset": identity.get("utc_offset", "+00:00"),
        "first_ts": first_ts, "last_ts": last_ts,
        "days": [_day_name(d) for d in sorted(all_days)],
        "min_controls": min_controls,
        "campaigns": report_campaigns,
        "programme": programme_entry,
        "warnings": warnings,
    }


# odd 64-bit multipliers (SplitMix64's): a contact's campaign, subscriber and time mixed
# into one key, so that contacts are compared by one sort of uint64
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _contact_keys(outputs: Outputs, actions) -> np.ndarray:
    """Each action's (campaign, msisdn, ts) as one uint64, campaigns by id (their codes are
    the Outputs', shared by every directory)."""
    with np.errstate(over="ignore"):
        return np.unique(actions.campaign.astype(np.uint64) * _MIX[0] ^ actions.msisdn * _MIX[1]
                         ^ actions.ts.astype(np.uint64) * _MIX[2])


def _warn_of_contacts_twice(outputs: Outputs, warnings: list) -> None:
    """A warning for each directory that holds contacts (a campaign's action to a subscriber
    at the same ms) that an earlier one holds too: two runs over the same events (a whole
    week and a replay of its first half), whose contacts the report would count twice and
    whose sum could turn "too few controls" into a figure (helper-133). Two runs of other
    events never share one, but by chance of the same ms."""
    seen = None
    for directory in outputs.directories:
        if not len(directory.actions):
            continue
        keys = _contact_keys(outputs, directory.actions)
        if seen is not None:
            both = len(np.intersect1d(seen, keys, assume_unique=True))
            if both:
                _warn(warnings, f"{directory.path}: {plural(both, 'contact')} (campaign, subscriber and time) also "
                                "in a directory named before it: two runs over the same events? They are counted twice")
            seen = np.union1d(seen, keys)
        else:
            seen = keys


def _contacts_of(action_seq: np.ndarray, contact_seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each contact_seq, the index of the action with that seq, and whether there is one.
    seq is gap-free over a run, so a direct table is used when the seqs are dense."""
    if not len(action_seq):
        return np.zeros(len(contact_seq), np.intp), np.zeros(len(contact_seq), bool)
    low, high = int(action_seq.min()), int(action_seq.max())
    if high - low < 2 * len(action_seq) + 1024:
        table = np.full(high - low + 1, -1, np.intp)
        table[(action_seq - low).astype(np.intp)] = np.arange(len(action_seq))
        inside = (contact_seq >= low) & (contact_seq <= high)
        where = np.full(len(contact_seq), -1, np.intp)
        where[inside] = table[(contact_seq[inside] - low).astype(np.intp)]
    else:
        order = np.argsort(action_seq, kind="stable")
        ranked = action_seq[order]
        at = np.minimum(np.searchsorted(ranked, contact_seq), len(ranked) - 1)
        where = np.where(ranked[at] == contact_seq, order[at], -1)
    found = where >= 0
    return np.where(found, where, 0), found


def _only_template(actions, campaign: np.ndarray) -> np.ndarray:
    """Per conversion campaign: the campaign's template when its actions have one only, else '?'
    (the code past the last template)."""
    unknown = -1
    out = np.full(len(campaign), unknown, np.int64)
    for code in np.unique(campaign):
        used = np.unique(actions.template[actions.campaign == code])
        if len(used) == 1:
            out[campaign == code] = used[0]
    return out


def _counted(parts: list) -> list:
    """[((campaign, template, kind, day), count)] over the parts' rows; template -1 is '?'."""
    if not parts:
        return []
    campaign, template, kind, day = (np.concatenate([p[i] for p in parts]) for i in range(4))
    if not len(campaign):
        return []
    day0 = int(day.min())
    day_span = int(day.max()) - day0 + 1
    nr_templates = int(template.max()) + 2
    nr_kinds = int(kind.max()) + 1
    space = (int(campaign.max()) + 1) * nr_templates * nr_kinds * day_span
    # one key per row, built in place: each full-length temporary is fresh memory to fault in
    key = campaign.astype(np.int64)
    key *= nr_templates
    key += template
    key += 1
    key *= nr_kinds
    key += kind
    key *= day_span
    key += day
    key -= day0
    if space <= 4 * len(key) + (1 << 20):
        # a few campaigns, templates, kinds and days: counting is one pass, no sort
        counts = np.bincount(key, minlength=space)
        values = np.flatnonzero(counts)
        counts = counts[values]
    else:
        values, counts = np.unique(key, return_counts=True)
    out = []
    for k, n in zip(values.tolist(), counts.tolist()):
        d = k % day_span
        k //= day_span
        kd = k % nr_kinds
        k //= nr_kinds
        t = k % nr_templates - 1
        out.append(((k // nr_templates, t, kd, d + day0), n))
    return out


def _funnel(outputs: Outputs, cid: str) -> dict:
    """The campaign's counters of stats.json (every integer key: matched, scheduled, each
    suppression reason ...), added up over the directories, in stats.json's order."""
    funnel: dict = {}
    for directory in outputs.directories:
        for key, value in directory.stats["campaigns"].get(cid, {}).items():
            if isinstance(value, int) and not isinstance(value, bool):
                funnel[key] = funnel.get(key, 0) + value
    return funnel


# --------------------------------------------------------------------------- the table

def _pct(rate: Optional[float]) -> str:
    return "-" if rate is None else f"{rate * 100:.2f}%"


def _shown_uplift(f: dict) -> str:
    if f["uplift"] is None:
        return f["note"]
    text = f"{f['uplift'] * 100:+.2f}pp [{f['ci_low'] * 100:+.2f}, {f['ci_high'] * 100:+.2f}]"
    return f"{text} {f['note']}" if f["note"] else text


def _incremental(f: dict) -> str:
    return "-" if f["incremental_conversions"] is None else f"{f['incremental_conversions']:+,.0f}"


def _table(columns: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Fixed-width lines: the first `left` columns and the last one left-aligned, numbers right."""
    table = [columns] + rows
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    lines = []
    for r in table:
        cells = [v.ljust(w) if i < left or i == len(columns) - 1 else v.rjust(w)
                 for i, (v, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


_UPLIFT_COLUMNS = ["sent", "control", "global", "conv send", "conv ctrl", "rate send", "rate ctrl", "incr",
                   "uplift [95% CI]"]


def _uplift_cells(f: dict) -> list[str]:
    return [f"{f['sends']:,}", f"{f['controls']:,}", f"{f['global_controls']:,}", f"{f['conversions_send']:,}",
            f"{f['conversions_control']:,}",
            _pct(f["rate_send"]), _pct(f["rate_control"]), _incremental(f), _shown_uplift(f)]


def _funnel_lines(report: dict) -> list[str]:
    keys: list[str] = []
    for entry in report["campaigns"].values():
        keys += [k for k in entry["funnel"] if k not in keys and not k.startswith("converted_")
                 and k not in ("sent", "control", "global_control")]
    headers = [k.replace("suppressed_", "suppr ").replace("_", " ") for k in keys]
    rows = [[cid] + [f"{entry['funnel'].get(k, 0):,}" for k in keys] for cid, entry in report["campaigns"].items()]
    return _table(["campaign"] + headers + [""], [r + [""] for r in rows])


def _programme_line(report: dict) -> str:
    p = report["programme"]
    return (f"programme: {p['sends']:,} sends ({_pct(p['rate_send'])} converted) against "
            f"{p['global_controls']:,} global controls ({_pct(p['rate_global_control'])}): {_shown_uplift(p)}")


def format_report(report: dict, *, by: str = "campaign", legend: bool = True) -> str:
    """The terminal table: `by` campaign (the funnel, then the uplift of each campaign), variant
    (a row per campaign and template) or day (a row per local day and campaign, the
    programme's day first)."""
    if by not in BY:
        raise ValueError(f"by {by!r}: one of {', '.join(BY)}")
    days = report["days"]
    period = f"{days[0]} to {days[-1]} (UTC{report['utc_offset']})" if days else "no actions"
    lines = [f"report of {', '.join(report['outputs'])}: {period}", ""]
    if by == "campaign":
        lines += ["funnel (stats.json):"] + _funnel_lines(report) + ["", "contacts, conversions and uplift:"]
        rows = [[cid] + _uplift_cells(f) for cid, f in report["campaigns"].items()]
        lines += _table(["campaign"] + _UPLIFT_COLUMNS, rows)
    elif by == "variant":
        # a template may hold a tab or a line break: shown as escapes, the row on one line (its
        # own backslashes doubled, so that a tab and a written `\t` read apart)
        rows = [[cid, escape_controls(template.replace("\\", "\\\\"))] + _uplift_cells(v)
                for cid, f in report["campaigns"].items() for template, v in f["variants"].items()]
        lines += _table(["campaign", "template"] + _UPLIFT_COLUMNS, rows, left=2)
    else:
        rows = []
        for day in days:
            p = report["programme"]["days"][day]
            rows.append([day, "(programme)", f"{p['sends']:,}", "-", f"{p['global_controls']:,}",
                         f"{p['conversions_send']:,}", f"{p['conversions_global_control']:,}", _pct(p["rate_send"]),
                         _pct(p["rate_global_control"]), _incremental(p), _shown_uplift(p)])
            for cid, f in report["campaigns"].items():
                if day in f["days"]:
                    rows.append([day, cid] + _uplift_cells(f["days"][day]))
        lines += _table(["day", "campaign"] + _UPLIFT_COLUMNS, rows, left=2)
        lines.append("(programme rows: the conversions and the rate of the global controls in the ctrl columns)")
    lines += ["", _programme_line(report)]
    if legend:
        import textwrap
        lines += [""] + textwrap.wrap(legend_text(report.get("min_controls", MIN_CONTROLS)), 100)
    return "\n".join(lines)
