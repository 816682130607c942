"""The console's edit forms, generated from the configuration's schema, and their validation.

One schema drives both `sigmatch check` and these forms: every key of
`engine.language.schema.SECTIONS` becomes an input (`form_fields`), so a key added there is
on the page without a change here (tests/test_console_edit.py fails otherwise). A form's
values become TOML values (`read_form`): what an input does not change is left as the file
wrote it, an emptied input removes its key, and text that is not a number where one is due
is written as text, so that the loader's own message ("expected an integer, got a string")
reaches the page. `validate` writes the draft beside the live file (its paths are relative
to it), loads it with the code `sigmatch check` runs, and maps the one-line error back to
the input it names (`FormErrors`).

    fields = form_fields("campaign", options_from(doc_values))   # [FormField, ...]
    changes = read_form("campaign", submitted, current_table)     # {key: value or None}
    errors = validate(live_path, draft_text, section="campaign", entry="crbt_school")

Inputs are named by the key path inside the table: "where", "counter.name",
"after.0.within" (row 0 of an array of tables).
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import re
import secrets
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from engine.language import schema
from engine.language.config import EVENT_TYPES
from engine.privacy import mask_numbers

__all__ = ["FormField", "FormErrors", "FormValueError", "SHOWN", "form_fields", "entry_fields", "options_from", "read_form",
           "read_form_value", "one_line", "current_inputs", "rows_of", "render_value",
           "validate", "field_for_error", "MAX_TEXT", "EXTRA_ROWS"]

MAX_TEXT = 10_000           # characters in one input: a `where` longer than this is no one's intent
EXTRA_ROWS = 2              # blank rows offered below an array of tables' entries
SHOWN = "_shown"            # the form field listing the checkbox and multi inputs a form showed
# Control characters (newlines included) never belong in a one-line value: in a template they
# would become a multi-line output cell; in an id or a where they are an attempt at something.
# The C1 controls and the bidirectional embeddings, overrides and isolates too, as a "why"
# refuses them (engine.privacy.has_controls): U+202E turns a template or an encoding round on
# the page and in `check`'s messages. A tab alone stays: a `where` or a null value written
# with one in the live file must survive an untouched form.
# The direction marks (U+200E, U+200F, U+061C) and the characters that show nothing (soft
# hyphen, zero-width space and joiners, word joiner, byte order mark) would travel to the
# gateway in a template unseen, or make an id look like another (helper-136, helper-137).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028\u2029\u202a-\u202e"
                      r"\u2060-\u2064\u2066-\u2069\ufeff]")
_INTEGER = re.compile(r"[+-]?[0-9](?:_?[0-9])*")
_NUMBER = re.compile(r"[+-]?(?:[0-9](?:_?[0-9])*)?(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


@dataclass
class FormField:
    """One input. `name`: its form name (the key path inside the table); `widget`: "text",
    "checkbox", "select" (one of `options`, "" for none), "multi" (any of `options`) or
    "array" (a TOML array literal); `row`: the row of an array of tables, else None."""
    name: str
    key: str                        # the schema's key path, "campaign.counter.name"
    doc: str
    widget: str
    options: tuple[str, ...] = ()
    required: bool = False
    default: str = ""               # what an empty input means, as the page shows it
    row: Optional[int] = None
    group: Optional[str] = None     # the table key of a nested table's inputs ("counter", "after")


@dataclass
class FormErrors:
    """Errors of one validation: by input name, and those no input of this form owns; and the
    warnings `sigmatch check` would print (entries of a list skipped), which do not refuse
    the save (nor count in its truth)."""
    fields: dict[str, str] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.fields or self.general)


# ---------------------------------------------------------------------------- what to offer
def options_from(values: Mapping) -> dict[str, tuple[str, ...]]:
    """The names a configuration defines, for Ref inputs: {"lists", "areas", "counters",
    "markers", "campaign" (channels in use), "event_types" (builtin and declared)}."""
    def names(section):
        found = values.get(section)
        return tuple(found) if isinstance(found, Mapping) else ()
    campaigns = values.get("campaign") if isinstance(values.get("campaign"), list) else []
    channels = tuple(dict.fromkeys(str(c["channel"]) for c in campaigns
                                   if isinstance(c, Mapping) and isinstance(c.get("channel"), str)))
    return {"lists": names("lists"), "areas": names("areas"), "counters": names("counters"),
            "markers": names("markers"), "campaign": channels,
            "event_types": tuple(EVENT_TYPES) + tuple(n for n in names("event_types") if n not in EVENT_TYPES)}


def _widget(t, options: Mapping[str, tuple[str, ...]]) -> tuple[str, tuple[str, ...]]:
    if isinstance(t, schema.Boolean):
        return "checkbox", ()
    if isinstance(t, schema.Choice):
        return "select", tuple(t.values)
    if isinstance(t, schema.Ref):
        return ("multi" if t.many else "select"), options.get(t.section, ())
    if isinstance(t, schema.EventTypes):
        return "multi", options.get("event_types", tuple(EVENT_TYPES))
    if isinstance(t, schema.Flags):
        return "multi", tuple(t.values)
    if isinstance(t, schema.Rules):
        return "multi", tuple(t.values)
    if isinstance(t, schema.Strings):
        return "array", ()
    return "text", ()


def _default_shown(f: schema.Field) -> str:
    if f.default is None:
        return ""
    if isinstance(f.default, bool):
        return "true" if f.default else "false"
    if isinstance(f.default, list):
        return ", ".join(map(str, f.default)) if f.default and not isinstance(f.type, schema.Strings) else \
            _array_text(f.default)
    return str(f.default)


def form_fields(section: str, options: Mapping[str, tuple[str, ...]], rows: Mapping[str, int] = None,
                prefix: str = "") -> list[FormField]:
    """Every input of one table of `section` (a campaign, [policy], a counter ...), in the
    schema's order; a nested table's keys as inputs of their own, an array of tables as
    `rows[key]` rows (default 1 + EXTRA_ROWS)."""
    s = schema.SECTION[section]
    out = []
    for f in s.fields:
        out.extend(_inputs(f, f"{section}.", options, rows or {}))
    return out


def _inputs(f: schema.Field, path: str, options, rows) -> list[FormField]:
    t = f.type
    if isinstance(t, schema.Table):
        out = []
        count = (rows.get(f.key, 0) + EXTRA_ROWS) if t.array else None
        if t.items is not None and count is not None:
            count = min(max(count, 1), t.items[1])
        for row in ([None] if count is None else range(count)):
            for sub in t.fields:
                widget, opts = _widget(sub.type, options)
                name = f"{f.key}.{sub.key}" if row is None else f"{f.key}.{row}.{sub.key}"
                out.append(FormField(name, f"{path}{f.key}.{sub.key}", sub.doc, widget, opts,
                                     required=f.required is not None, row=row, group=f.key,
                                     default=_default_shown(sub)))
        return out
    widget, opts = _widget(t, options)
    return [FormField(f.key, path + f.key, f.doc, widget, opts, required=f.required is not None,
                      default=_default_shown(f))]


def entry_fields(section: str, options) -> list[FormField]:
    """The inputs of a map section's one entry ([lists] name = file): "name" and "value"."""
    s = schema.SECTION[section]
    widget, opts = _widget(s.value, options)
    return [FormField("name", f"{section}.<name>", "The name other keys use.", "text", required=True),
            FormField("value", f"{section}.<name>", s.doc, widget, opts, required=True)]


# ---------------------------------------------------------------------------- values shown
def _array_text(values) -> str:
    import tomlkit
    return tomlkit.item(list(values)).as_string()


def render_value(t, value) -> Any:
    """A TOML value as its input shows it: a string, or a list of strings for "multi"."""
    if value is None:
        return [] if _widget(t, {})[0] == "multi" else ""
    if isinstance(t, schema.Choice):
        for synonym, meaning in t.synonyms:
            if value == synonym and type(value) is type(synonym):
                return meaning
    if _widget(t, {})[0] == "multi":
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if isinstance(t, schema.Strings):
        return _array_text(value) if isinstance(value, list) else str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return _array_text(value) if isinstance(value, list) else str(value)
    return str(value)


def current_inputs(section: str, table: Mapping) -> dict[str, Any]:
    """{input name: shown value} of one table as the file holds it (a nested table's keys
    and an array of tables' rows spread over their inputs)."""
    out: dict[str, Any] = {}
    for f in schema.SECTION[section].fields:
        value = table.get(f.key)
        if isinstance(f.type, schema.Table):
            entries = value if isinstance(value, list) else [] if value is None else [value]
            for row, entry in enumerate(entries):
                for sub in f.type.fields:
                    name = f"{f.key}.{sub.key}" if not f.type.array else f"{f.key}.{row}.{sub.key}"
                    out[name] = render_value(sub.type, entry.get(sub.key) if isinstance(entry, Mapping) else None)
        elif isinstance(f.type, schema.Boolean):
            out[f.key] = render_value(f.type, value if value is not None else f.default)
        else:
            out[f.key] = render_value(f.type, value)
    return out


def rows_of(section: str, table: Mapping) -> dict[str, int]:
    """The number of entries of each array-of-tables key in `table`."""
    out = {}
    for f in schema.SECTION[section].fields:
        if isinstance(f.type, schema.Table) and f.type.array:
            value = table.get(f.key)
            out[f.key] = len(value) if isinstance(value, list) else int(isinstance(value, Mapping))
    return out


# ---------------------------------------------------------------------------- values read
class FormValueError(ValueError):
    """An input refused before the configuration is read (control characters, too long,
    not a TOML array): `name` is the input."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


def one_line(name: str, raw) -> str:
    """An input's text, stripped; FormValueError when too long or holding control characters."""
    if isinstance(raw, (list, tuple)):
        raw = raw[-1] if raw else ""
    text = "" if raw is None else str(raw)
    if len(text) > MAX_TEXT:
        raise FormValueError(name, f"longer than {MAX_TEXT:,} characters")
    found = _CONTROL.search(text)
    if found:
        # named: a direction mark shows nothing, and a value the live file already held
        # (check takes it) is refused on the form with no way to see why (helper-137)
        raise FormValueError(name, f"must be one line without control characters (U+{ord(found[0]):04X} at "
                                   f"character {found.start() + 1:,})")
    return text.strip()


def read_form_value(section: str, raw) -> Any:
    """The value of one entry of a map section ([lists] name = "file", [event_types] NAME = 40)."""
    return _typed("value", schema.SECTION[section].value, one_line("value", raw))


def _many(name: str, raw) -> list[str]:
    values = raw if isinstance(raw, (list, tuple)) else ([] if raw in (None, "") else [raw])
    return [one_line(name, v) for v in values if str(v).strip()]


# The longest number text read as a number: a longer one stays text, and the loader says
# "expected an integer". Below Python's 4,300 digits of int(); far past any bound, so that
# a 40-digit priority is said out of range as `check` says it (it was "got a string").
_LONGEST_NUMBER = 4_000


def _typed(name: str, t, text: str):
    """Text as the TOML value it most likely means; text that is not that type stays text
    so that the loader names what it expected."""
    if isinstance(t, schema.Integer) or (isinstance(t, schema.Choice) and any(
            isinstance(s, int) for s, _ in t.synonyms) and _INTEGER.fullmatch(text)):
        return int(text.replace("_", "")) if _INTEGER.fullmatch(text) and len(text) < _LONGEST_NUMBER else text
    if isinstance(t, schema.Fraction):
        if _INTEGER.fullmatch(text) and len(text) < _LONGEST_NUMBER:
            return int(text.replace("_", ""))
        if text and _NUMBER.fullmatch(text) and len(text) < 40:
            return float(text.replace("_", ""))
        return text
    if isinstance(t, schema.Boolean):
        return text.lower() in ("true", "on", "1", "yes")
    if isinstance(t, schema.Strings):
        try:
            parsed = tomllib.loads("value = " + text)
        except tomllib.TOMLDecodeError:
            raise FormValueError(name, 'must be an array of strings like ["", "\\\\N"]') from None
        if set(parsed) != {"value"}:
            raise FormValueError(name, 'must be one array of strings like ["", "\\\\N"]')
        return parsed["value"]
    return text


def read_form(section: str, submitted: Mapping[str, Any], current: Mapping) -> dict[str, Any]:
    """The changes a submitted form makes to one table: {key: new value, or None to remove}.
    A key whose inputs show what `current` holds is not in the result, so the file keeps
    it as written (a TOML date stays a date, `add = 1` stays 1). `submitted`: input name ->
    text, or a list of texts for "multi" inputs; an unchecked checkbox is absent, and counts
    as unchecked when its name is among submitted[SHOWN] (else it is left as it was).
    Raises FormValueError for an input refused before the configuration is read."""
    shown = current_inputs(section, current)
    # A browser leaves an unchecked box out of the form, so a checkbox or a multi input counts
    # as submitted only when the form lists it in "_shown" (or sends it): a client posting a
    # few fields pauses nothing and empties no list by leaving the others out
    listed = submitted.get(SHOWN, ())
    listed = {listed} if isinstance(listed, str) else set(listed)
    changes: dict[str, Any] = {}
    for f in schema.SECTION[section].fields:
        t = f.type
        if isinstance(t, schema.Table):
            names = [k for k in submitted if k.startswith(f.key + ".")]
            if not names and not any(k.startswith(f.key + ".") for k in shown):
                continue
            entries = _read_rows(f, submitted)
            before = _rows_shown(f, shown)
            if [{k: v for k, v in e.items() if v != ""} for e in before] == \
                    [{k: v for k, v in e.items() if v != ""} for e in entries]:
                continue
            typed = [{sub.key: _typed(f"{f.key}.{sub.key}", sub.type, e[sub.key]) for sub in t.fields
                      if e.get(sub.key, "") != ""} for e in entries]
            if not typed:
                changes[f.key] = None
            elif not t.array:
                changes[f.key] = typed[0]
            elif t.array == "or" and len(typed) == 1 and not isinstance(current.get(f.key), list):
                changes[f.key] = typed[0]
            else:
                changes[f.key] = typed
            continue
        widget = _widget(t, {})[0]
        if widget in ("checkbox", "multi") and f.key not in submitted and f.key not in listed:
            continue
        if widget == "checkbox":
            value = f.key in submitted and one_line(f.key, submitted[f.key]).lower() not in ("", "false", "off", "0")
            if shown.get(f.key) != ("true" if value else "false"):
                changes[f.key] = value
            continue
        if widget == "multi":
            values = _many(f.key, submitted.get(f.key))
            if set(values) == set(shown.get(f.key) or []):
                continue
            changes[f.key] = values if values or f.default is None else None
            continue
        if f.key not in submitted:
            continue
        text = one_line(f.key, submitted[f.key])
        if text == shown.get(f.key, ""):
            continue
        changes[f.key] = None if text == "" else _typed(f.key, t, text)
    return changes


def _read_rows(f: schema.Field, submitted) -> list[dict]:
    t = f.type
    if not t.array:
        entry = {sub.key: one_line(f"{f.key}.{sub.key}", submitted.get(f"{f.key}.{sub.key}")) for sub in t.fields}
        return [entry] if any(entry.values()) else []
    rows = sorted({int(k.split(".")[1]) for k in submitted
                   if k.startswith(f.key + ".") and k.split(".")[1].isdigit() and len(k.split(".")[1]) < 4})
    out = []
    for row in rows:
        entry = {sub.key: one_line(f"{f.key}.{row}.{sub.key}", submitted.get(f"{f.key}.{row}.{sub.key}"))
                 for sub in t.fields}
        if any(entry.values()):
            out.append(entry)
    return out


def _rows_shown(f: schema.Field, shown) -> list[dict]:
    t = f.type
    if not t.array:
        entry = {sub.key: shown.get(f"{f.key}.{sub.key}", "") for sub in t.fields}
        return [entry] if any(entry.values()) else []
    out, row = [], 0
    while any(f"{f.key}.{row}.{sub.key}" in shown for sub in t.fields):
        out.append({sub.key: shown.get(f"{f.key}.{row}.{sub.key}", "") for sub in t.fields})
        row += 1
    return out


# ---------------------------------------------------------------------------- validation
# "PATH: KEY: message" as engine.language.config words it; KEY of a campaign is
# campaign[3] (id "x").where, or campaign (id "x").where from compile
_CAMPAIGN_KEY = re.compile(r'campaign(?:\[(\d+)\])?(?: \(id "([^"]*)"\))?(?:\.(.+))?')


def field_for_error(message: str, draft_path: str, live_path: str, values: Mapping, section: str,
                    entry: Optional[str], inputs: set[str]) -> tuple[Optional[str], str]:
    """(input name or None, the message to show) for one loader error about the draft at
    `draft_path`; `values` is the draft as read, `entry` the campaign id or entry name the
    form edits (None for a one-table section), `inputs` the form's input names."""
    text = message.replace(str(Path(draft_path).absolute()), live_path).replace(draft_path, live_path)
    prefix = f"{live_path}: "
    if not text.startswith(prefix):
        return None, text
    rest = text[len(prefix):]
    key, sep, why = rest.partition(": ")
    if not sep:
        return None, text
    inner = None
    if section == "campaign":
        m = _CAMPAIGN_KEY.fullmatch(key)
        if m:
            cid = m.group(2)
            if cid is None and m.group(1) is not None:
                campaigns = values.get("campaign") or []
                i = int(m.group(1))
                cid = campaigns[i].get("id") if i < len(campaigns) and isinstance(campaigns[i], Mapping) else None
            if cid == entry and m.group(3):
                inner = m.group(3)
    elif entry is None and key.startswith(section + "."):
        inner = key[len(section) + 1:]
    elif entry is not None and key.startswith(f"{section}.{entry}."):
        inner = key[len(section) + len(entry) + 2:]
    elif entry is not None and key == f"{section}.{entry}":
        # the entry's name itself refused (`"a = 1" is not a valid list name`): beside the
        # name, where it was said beside the value (helper-123)
        about_name = why.startswith(json.dumps(entry, ensure_ascii=False) + " is ")
        if about_name and "name" in inputs:
            return "name", why
        return ("value" if "value" in inputs else "name" if "name" in inputs else None), why
    if inner is None:
        return None, text
    name = re.sub(r"\[(\d+)\]", r".\1", inner)
    head, dot, tail = name.partition(".")
    if name not in inputs and dot and f"{head}.0.{tail}" in inputs:
        name = f"{head}.0.{tail}"      # one table written for an array of them: its row 0
    while name and name not in inputs:
        if "." not in name:
            # the key of a nested table ("counter: a counter condition needs ...") -> its first input
            first = next((i for i in sorted(inputs) if i.startswith(name + ".")), None)
            return (first, why) if first else (None, text)
        name = name.rsplit(".", 1)[0]
    return (name or None), why


def validate(live_path, draft_text: str, *, section: str = "campaign", entry: Optional[str] = None,
             inputs: set[str] = frozenset(), deep: bool = True) -> FormErrors:
    """Validate `draft_text` as `sigmatch check` validates a file: written beside the live
    file (a hidden temporary name, mode 0640, removed afterwards) so that its relative paths
    mean what they will mean, loaded with `load_config`, then (`deep`) built into an engine
    as check builds it (profiles, lists, areas, `where` against the profile columns). An
    error is mapped to the input it names when it concerns the table the form edits."""
    from engine.errors import SigmatchError
    from engine.language.config import load_config
    from engine.service.reshard import HeldBack
    from engine.sinks import write_private
    live_path = Path(live_path)
    errors = FormErrors()
    try:
        values = tomllib.loads(draft_text)
    except tomllib.TOMLDecodeError as e:
        errors.general.append(f"{live_path}: TOML syntax error: {e}")
        return errors
    draft = live_path.with_name(f".{live_path.name}.draft-{secrets.token_hex(6)}.toml")
    # what loading warns of (entries of a list skipped), kept to be shown with the save: it
    # went to the console's log alone, and a list of which a third was skipped was saved
    # without a word (helper-123). This thread's alone: other requests log beside it.
    held, this_thread = HeldBack(), threading.get_ident()
    sigmatch_log = logging.getLogger("sigmatch")
    try:
        write_private(draft.with_name(draft.name + ".tmp"), draft, draft_text.encode())
        try:
            sigmatch_log.addHandler(held)
            try:
                config = load_config(draft)
                if deep:
                    from engine.api import Engine
                    Engine(config)
            finally:
                sigmatch_log.removeHandler(held)
            said = [r.getMessage() for r in held.records if r.thread == this_thread and r.levelno >= logging.WARNING]
            errors.warnings.extend(mask_numbers(text.replace(str(draft.absolute()), str(live_path))
                                                .replace(str(draft), str(live_path)))
                                   for text in dict.fromkeys(said))
        except SigmatchError as e:
            # a loader's words may quote a row of the profiles or a list (a number read for a
            # header): the page, the flash cookie and the audit trail show it masked, as the
            # CLI's scrubbed stderr does
            name, message = field_for_error(mask_numbers(str(e)), str(draft), str(live_path), values, section,
                                            entry, set(inputs))
            if name is None:
                errors.general.append(message)
            else:
                errors.fields[name] = message
    finally:
        try:
            os.unlink(draft)
        except FileNotFoundError:
            pass
    return errors
