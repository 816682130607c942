"""The live configuration as an editable TOML document: comments and layout survive.

The console never rewrites a configuration from its parsed values; it edits the tomlkit
document an engineer wrote, key by key, so that what the browser did not touch stays as it
was, comments included. Every edit is checked afterwards by reading the text back with
tomllib: the table edited must hold exactly the values asked for and nothing else may have
appeared, so no value (an id, a template, a `where`) can smuggle TOML into the file.

    doc = ConfigFile(text)
    doc.set_campaign("crbt_school", {"template": "NEW", "flags": None})   # None removes a key
    doc.add_campaign({"id": "x", "on": ["SMS_MO"], "channel": "sms"})
    doc.clone_campaign("crbt_school", "crbt_school_b")
    doc.pause("crbt_school"); doc.schedule("x", "2027-02-05", None); doc.reorder([...ids])
    doc.set_table("policy", {...}); doc.set_entry("counters", "sms", {...}); doc.remove_entry(...)
    doc.set_map("lists", "dnd", "lists/dnd.txt")
    doc.text                                                          # the new file

Errors: EditError (one line) when the id or name is unknown or taken, or when the text
read back differs from what was asked.
"""
from __future__ import annotations

import datetime
import tomllib
from typing import Any, Iterable, Mapping, Optional

import tomlkit
from tomlkit.items import AoT, InlineTable, SingleKey, Table

__all__ = ["ConfigFile", "EditError", "TABLE_SECTIONS", "NAMED_SECTIONS", "MAP_SECTIONS"]

TABLE_SECTIONS = ("engine", "policy", "output")                 # one table of fixed keys
NAMED_SECTIONS = ("counters", "markers", "channels")            # name = { fixed keys }
MAP_SECTIONS = ("event_types", "lists", "areas")                # name = value


class EditError(ValueError):
    """An edit cannot be made: the message is one line for the page."""


def to_item(value: Any):
    """A plain value as a tomlkit item; tables inside a table are written inline, as the
    configuration's own examples write them (`counter = { name = "sms", at_least = 3 }`)."""
    if isinstance(value, Mapping):
        table = tomlkit.inline_table()
        for k, v in value.items():
            table[k] = to_item(v)
        return table
    if isinstance(value, (list, tuple)):
        array = tomlkit.array()
        for v in value:
            array.append(to_item(v))
        return array
    if isinstance(value, (bool, int, float, str, datetime.date)):
        return tomlkit.item(value)
    raise EditError(f"cannot write {type(value).__name__} into the configuration")


def _plain(value: Any):
    """A tomlkit item (or value) as plain Python, for comparisons with tomllib's reading."""
    if hasattr(value, "unwrap"):
        return value.unwrap()
    return value


class ConfigFile:
    """One configuration document. `text` is the file as it would now be written."""

    def __init__(self, text: str):
        try:
            self.doc = tomlkit.parse(text)
        except Exception as e:      # tomlkit raises its own ParseError subclasses
            # said in tomllib's words, as `check` and the other pages say it (tomlkit counts
            # columns from 0: "line 476 col 4" beside "line 476, column 5")
            import tomllib
            try:
                tomllib.loads(text)
            except tomllib.TOMLDecodeError as said:
                e = said
            raise EditError(f"the configuration is not TOML: {e}") from None

    @property
    def text(self) -> str:
        return self.doc.as_string()

    def values(self) -> dict:
        """The document as plain data (what tomllib would read)."""
        return tomllib.loads(self.text)

    # -- campaigns
    def _campaigns(self) -> Optional[AoT]:
        found = self.doc.get("campaign")
        return found if isinstance(found, AoT) else None

    def campaign_ids(self) -> list[str]:
        """The ids in file order (a campaign without a string id is skipped)."""
        return [str(t["id"]) for t in (self._campaigns() or []) if isinstance(_plain(t.get("id")), str)]

    def _campaign(self, cid: str) -> Table:
        for table in self._campaigns() or []:
            if _plain(table.get("id")) == cid:
                return table
        raise EditError(f"no campaign {cid!r} in the configuration")

    def campaign(self, cid: str) -> dict:
        """The keys of campaign `cid` as plain values."""
        return _plain(self._campaign(cid))

    def set_campaign(self, cid: str, changes: Mapping[str, Any]) -> None:
        """Set (or, for None, remove) keys of campaign `cid`; the other keys are untouched."""
        table = self._campaign(cid)
        new_id = changes.get("id", cid)
        if new_id != cid and new_id in self.campaign_ids():
            raise EditError(f"campaign id {new_id!r} is taken")
        _set_keys(table, changes)
        self._verify_campaign(new_id if isinstance(new_id, str) else cid, _plain(table))

    def add_campaign(self, values: Mapping[str, Any]) -> None:
        """A new [[campaign]] at the end of the file with `values` (None values left out)."""
        cid = values.get("id")
        if cid in self.campaign_ids():
            raise EditError(f"campaign id {cid!r} is taken")
        table = tomlkit.table()
        table.trivia.indent = "\n"
        for k, v in values.items():
            if v is not None:
                table[k] = to_item(v)
        aot = self._campaigns()
        if aot is None:
            if "campaign" in self.doc:
                raise EditError("the configuration's campaign key is not [[campaign]] tables")
            self.doc.append("campaign", tomlkit.aot())
            aot = self._campaigns()
        aot.append(table)
        self._verify_campaign(cid, _plain(table))

    def clone_campaign(self, cid: str, new_id: str) -> None:
        """A copy of campaign `cid` as `new_id`, at the end and paused (enabled = false):
        approving a clone nobody has edited must not contact the same people twice."""
        if new_id in self.campaign_ids():
            raise EditError(f"campaign id {new_id!r} is taken")
        original = self._campaign(cid)
        values = dict(_plain(original))
        values["id"] = new_id
        values["enabled"] = False
        table = tomlkit.table()
        for k, v in values.items():
            table[k] = to_item(v)
        # at the end, like a new campaign: right after the original it would land below the
        # comment that introduces the next campaign, which belongs to the original's table
        table.trivia.indent = "\n"
        self._campaigns().append(table)
        self._verify_campaign(new_id, values)

    def pause(self, cid: str, paused: bool = True) -> None:
        """Pause (`enabled = false`, its state kept by the engine) or resume a campaign; a
        resumed campaign loses the key, as enabled's default is true."""
        self.set_campaign(cid, {"enabled": False if paused else None})

    def schedule(self, cid: str, start, end) -> None:
        """Set `start`/`end` (local dates "YYYY-MM-DD"; None removes)."""
        self.set_campaign(cid, {"start": start, "end": end})

    def reorder(self, ids: Iterable[str]) -> dict[str, int]:
        """Give the campaigns priorities so that they match in the order of `ids` (first =
        matched first). The priorities already used are kept and handed out again in that
        order when that orders them; otherwise they become 10, 20, ... from the last.
        Returns {id: new priority} for the campaigns whose priority changed."""
        ids = list(ids)
        known = self.campaign_ids()
        if sorted(ids) != sorted(known):
            raise EditError("a new order must name every campaign once")
        current = {cid: _plain(self._campaign(cid).get("priority", 0)) for cid in ids}
        kept = sorted((p for p in current.values() if isinstance(p, int)), reverse=True)
        given = dict(zip(ids, kept)) if len(kept) == len(ids) else {}
        if not given or sorted(ids, key=lambda c: (-given[c], c)) != ids:
            given = {cid: 10 * (len(ids) - i) for i, cid in enumerate(ids)}
        changed = {cid: p for cid, p in given.items() if current[cid] != p}
        for cid, p in changed.items():
            self.set_campaign(cid, {"priority": p})
        return changed

    # -- the other sections
    def section(self, name: str) -> dict:
        """A section as plain data ({} when absent)."""
        return _plain(self.doc.get(name, {})) or {}

    def _section(self, name: str, create: bool = True):
        found = self.doc.get(name)
        if found is None:
            if not create:
                raise EditError(f"the configuration has no [{name}]")
            # before the first [[campaign]], where engineers keep the shared sections
            found = tomlkit.table()
            self._insert_section(name, found)
            found = self.doc[name]
        if not isinstance(found, (Table, InlineTable)):
            raise EditError(f"[{name}] is not a table")
        return found

    def _insert_section(self, name: str, table) -> None:
        # at the end: in tomlkit the comments that introduce a [[campaign]] belong to the table
        # before it, so a section put before the campaigns would land between them
        self.doc.add(tomlkit.nl())
        self.doc[name] = table

    def set_table(self, name: str, changes: Mapping[str, Any]) -> None:
        """Set or remove keys of a one-table section ([policy], [engine], [output])."""
        table = self._section(name)
        _set_keys(table, changes)
        self._verify(name, _plain(table))

    def set_entry(self, name: str, entry: str, changes: Mapping[str, Any], *, new: bool = False) -> None:
        """Set or remove keys of `[name] entry = { ... }` ([counters], [markers], [channels]);
        `new`: the entry must not exist yet and is written inline."""
        section = self._section(name)
        if new:
            if entry in section:
                raise EditError(f"{name}.{entry} exists already")
            section[entry] = to_item({k: v for k, v in changes.items() if v is not None})
        else:
            if entry not in section:
                raise EditError(f"no {entry!r} in [{name}]")
            _set_keys(section[entry], changes)
        self._verify(f"{name}.{entry}", _plain(section[entry]))

    def remove_entry(self, name: str, entry: str) -> None:
        """Remove `entry` from a named or map section."""
        section = self._section(name, create=False)
        if entry not in section:
            raise EditError(f"no {entry!r} in [{name}]")
        del section[entry]
        self._verify(name, _plain(section))

    def set_map(self, name: str, entry: str, value: Any) -> None:
        """`[name] entry = value` ([lists], [areas], [event_types]); None removes it."""
        section = self._section(name)
        if value is None:
            if entry in section:
                del section[entry]
        else:
            section[entry] = to_item(value)
        self._verify(name, _plain(section))

    # -- the read-back check
    def _read_back(self) -> dict:
        try:
            return tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as e:
            raise EditError(f"the edit would not be TOML ({e}); nothing was changed") from None

    def _verify_campaign(self, cid, expected: dict) -> None:
        read = self._read_back()
        found = [t for t in read.get("campaign", []) if t.get("id") == cid]
        if len(found) != 1 or found[0] != _normal(expected):
            raise EditError(f"campaign {cid!r} would not read back as written; nothing was changed")

    def _verify(self, dotted: str, expected) -> None:
        read = self._read_back()
        for part in dotted.split("."):
            read = read.get(part) if isinstance(read, dict) else None
        if read != _normal(expected):
            raise EditError(f"[{dotted}] would not read back as written; nothing was changed")


def _normal(value):
    """Plain data as tomllib reads it back (tuples as lists)."""
    if isinstance(value, Mapping):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    return value


def _set_keys(table, changes: Mapping[str, Any]) -> None:
    """Replace, add or (None) remove keys of a tomlkit table in place. A replaced key keeps its
    place and its comment; a new key goes after the last key of the table (not after the
    comments that introduce the next table), aligned like its neighbours."""
    for key, value in changes.items():
        if value is None:
            if key in table:
                del table[key]
        elif key in table:
            table[key] = to_item(value)
        else:
            _append_key(table, key, to_item(value))


def _append_key(table, key: str, item) -> None:
    if isinstance(table, InlineTable):
        table[key] = item
        return
    keys = [k for k in table.value.keys()]
    if not keys:
        table[key] = item
        return
    width = _key_width(table)
    name = SingleKey(key, sep="= ", original=key.ljust(width)) if width > len(key) else key
    try:
        table.value._insert_after(keys[-1], name, item)
        # Table mirrors its container in its own dict, as Table.append keeps it
        dict.__setitem__(table, key, table.value[key])
    except Exception:       # tomlkit's private insertion changed: a plain append is still correct
        if key not in table.value:
            table[key] = item


def _key_width(table) -> int:
    """The column the table's `=` signs are aligned to, key and padding (0: not aligned)."""
    widths = {len(getattr(k, "_original", "") or k.key) for k, _ in table.value.body if k is not None}
    return widths.pop() if len(widths) == 1 else 0
