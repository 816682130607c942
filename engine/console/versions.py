"""Versions of the configuration, maker-checker approval, and applying one to the live file.

Every save is a version: the whole file's text, its author, time and a required "why", the
version it was based on (`parent`) and its draft line (`line`: the campaign id or the
section it changed; None for the whole file, as a rollback or a reorder). Versions form one
line of history: a save applies its edit to the newest version (`head`), so version N
holds every change of the versions before it. Two editors saving the same draft line: the
one whose form was based on a version older than another save on that line gets a
`Conflict`, never a silent overwrite; saves on other lines are rebuilt on the head.

Approval (maker-checker): an approver may approve version N only when they authored neither
N nor any version after the live one up to N (N contains those changes). Approving writes
the live CONFIG atomically (the previous file kept as CONFIG.prev), then sends SIGHUP to the
pid in `--daemon-pid`; engine.console.service.reload_outcome reads from `--metrics` whether the
reload took (`reload_result` words its answer). A rollback is a new version with an old text, approved the same way.

The tables are engine.console.store's `versions` and `approvals`; states of a version:

    draft          saved, valid, waiting for approval
    live           written to CONFIG (at most one version is live)
    replaced       was live; a later version replaced it
    superseded     a draft older than a version that went live (it never went live itself)
    rejected       an approver turned it down
    reload_failed  written to CONFIG, but the running service refused to reload it

Errors: VersionError (one line for the page), Conflict (a VersionError naming the save it
conflicts with), ApprovalRefused.
"""
from __future__ import annotations

import hashlib
import os
import signal
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from engine.console.configfile import ConfigFile, EditError, MAP_SECTIONS, NAMED_SECTIONS, TABLE_SECTIONS
from engine.console.forms import FormErrors, validate
from engine.privacy import has_controls

__all__ = ["Versions", "VersionError", "Conflict", "ApprovalRefused", "DiffRow", "diff_texts", "sha256_of",
           "send_reload", "reload_result", "ReloadResult", "write_live", "is_sigmatch_run"]

# versions whose changes later versions do not carry
DROPPED = ("rejected",)
# characters of a "why" or an approval's note: a sentence or a paragraph, shown on the pages
# and in every row of the audit trail, never a file pasted into the box
MAX_NOTE = 2_000
# one approval at a time writes the live file: two approvers clicking together must not both
# pass the checks and then write in turn
_APPLY = threading.Lock()


class VersionError(ValueError):
    """A save, an approval or an apply cannot be made; one line for the page."""


class Conflict(VersionError):
    """The form was based on a version older than another save on the same draft line."""

    def __init__(self, theirs: dict):
        self.theirs = theirs
        super().__init__(f"conflict: {theirs['author']} saved version {theirs['id']} of "
                         f"{_line_name(theirs['line'])} at {theirs['created_at']} after the version this edit "
                         "started from; reopen the form to edit their version")


class ApprovalRefused(VersionError):
    """The maker-checker rule, or the version's state, does not allow this approval."""


def sha256_of(text: str) -> str:
    """The sha256 of the file as written (UTF-8), as stats.json and the service's metrics give it."""
    return hashlib.sha256(text.encode()).hexdigest()


def _line_name(line: Optional[str]) -> str:
    return "the whole file" if line is None else line


def _lines_meet(a: Optional[str], b: Optional[str]) -> bool:
    return a is None or b is None or a == b


class Versions:
    """The versions of one live configuration file, kept in a console Store (anything with
    `query`, `query_one`, `execute` and `transaction` as engine.console.store.Store has).
    `now`: the clock that stamps versions (UTC ISO text)."""

    def __init__(self, store, config_path, *, now: Callable[[], str] = None, deep: bool = True):
        from engine.console.store import utc_now
        self.store = store
        self.config_path = Path(config_path)
        self.now = now or utc_now
        self.deep = deep                # validate by building the engine, as check does

    # -- reading
    def get(self, vid: int) -> dict:
        row = self.store.query_one("SELECT * FROM versions WHERE id = ?", (int(vid),))
        if row is None:
            raise VersionError(f"no version {vid}")
        return row

    def all(self, limit: int = 200) -> list[dict]:
        """The newest versions first."""
        return self.store.query("SELECT * FROM versions ORDER BY id DESC LIMIT ?", (int(limit),))

    def live(self) -> Optional[dict]:
        return self.store.query_one("SELECT * FROM versions WHERE state IN ('live', 'reload_failed') "
                                    "ORDER BY applied_at DESC, id DESC LIMIT 1")

    def head(self) -> dict:
        """The newest version whose changes count: what a new edit starts from."""
        self.baseline()
        return self.store.query_one(f"SELECT * FROM versions WHERE state NOT IN ({_marks(DROPPED)}) "
                                    "ORDER BY id DESC LIMIT 1", DROPPED)

    def approvals(self, vid: int) -> list[dict]:
        return self.store.query("SELECT * FROM approvals WHERE version = ? ORDER BY id", (int(vid),))

    def baseline(self) -> dict:
        """The live file as a version: recorded (author "(file)") when the console has none
        yet or when someone changed the file outside the console since the last live version."""
        text = self.read_live()
        live = self.live()
        if live is not None and live["sha256"] == sha256_of(text):
            return live
        with self.store.transaction() as db:
            now = self.now()
            db.execute("UPDATE versions SET state = 'replaced' WHERE state IN ('live', 'reload_failed')")
            cursor = db.execute(
                "INSERT INTO versions (parent, line, author, created_at, why, text, sha256, state, applied_at, "
                "applied_by) VALUES (?, NULL, '(file)', ?, ?, ?, ?, 'live', ?, '(file)')",
                (None if live is None else live["id"], now,
                 "the live file as the console found it" if live is None else "the live file was changed outside "
                 "the console", text, sha256_of(text), now))
            vid = cursor.lastrowid
        # in the audit trail too: the file changed, and by no user of the console
        self.store.add_audit("(file)", "version.file" if live is None else "version.hand_edit", str(vid),
                             "" if live is None else f"the live file changed outside the console (was version "
                                                     f"{live['id']})")
        return self.get(vid)

    def read_live(self) -> str:
        """The live file's text. VersionError, one line naming the file (and, for bytes that
        are not UTF-8, the line and byte), when it cannot be read."""
        try:
            data = self.config_path.read_bytes()
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            # where, as check says it; the console edits text, so the file is mended on the host
            line = data.count(b"\n", 0, e.start) + 1
            column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
            raise VersionError(f"{self.config_path}: line {line:,}: not UTF-8 text (byte {column:,} of the line); "
                               "a configuration file is UTF-8: mend it on the console's host") from None
        except OSError as e:
            raise VersionError(f"{self.config_path}: cannot read the live configuration: "
                               f"{e.strerror or e}") from None

    # -- saving
    def save(self, author: str, why: str, base: int, line: Optional[str], edit: Callable[[ConfigFile], Any] | str, *,
             section: str = "campaign", entry: Optional[str] = None, inputs: frozenset = frozenset(),
             restores: Optional[int] = None) -> tuple[Optional[dict], FormErrors]:
        """Apply `edit` (a function that changes a ConfigFile, or the whole new text) to the
        newest version and keep the result as a new draft, if it validates. `base`: the version the form was made
        from; `line`: the draft line the edit belongs to. Returns (the version, no errors) or
        (None, the errors by input). Raises Conflict, VersionError (no why, nothing
        changed, an edit the file refuses)."""
        if entry is None and section == "campaign":
            entry = line
        why = (why or "").strip()
        if not why:
            raise VersionError('a version needs a "why": say what the change is for')
        if len(why) > MAX_NOTE:
            raise VersionError(f'"why" is longer than {MAX_NOTE:,} characters')
        if has_controls(why):
            # shown on pages and in the audit's CSV: a NUL, a line break or a bidirectional
            # override there would cut a row or turn the text round
            raise VersionError('"why" must be one line without control characters')
        self._require_version(base)
        for _ in range(3):
            head = self.head()
            self._check_conflict(base, head, line)
            if isinstance(edit, str):
                text = edit             # the whole file (a rollback): the head need not parse
            else:
                try:
                    document = ConfigFile(head["text"])
                except EditError as e:
                    # a hand edit broke the live file: a rollback to a version that parses
                    # mends it here
                    raise VersionError(f"version {head['id']}: {e}: roll back to a version that is (Versions), "
                                       "or mend the file on the console's host") from None
                try:
                    edit(document)
                except EditError as e:
                    raise VersionError(str(e)) from None
                text = document.text
            if text == head["text"]:
                raise VersionError("nothing changed: the version would be the same as version "
                                   f"{head['id']}")
            # slow (the engine is built as check builds it), so outside the transaction; the
            # head is checked again inside it and the save redone on a newer one
            errors = validate(self.config_path, text, section=section, entry=entry, inputs=set(inputs),
                              deep=self.deep)
            if errors:
                return None, errors
            with self.store.transaction() as db:
                newest = db.execute(f"SELECT id FROM versions WHERE state NOT IN ({_marks(DROPPED)}) "
                                    "ORDER BY id DESC LIMIT 1", DROPPED).fetchone()[0]
                if newest != head["id"]:
                    continue
                cursor = db.execute(
                    "INSERT INTO versions (parent, line, author, created_at, why, text, sha256, state, restores) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 'draft', ?)",
                    (head["id"], line, author, self.now(), why, text, sha256_of(text), restores))
                vid = cursor.lastrowid
            return self.get(vid), errors          # none, but check's warnings, if any
        raise VersionError("the configuration kept changing while this was saved; try again")

    def _require_version(self, base: int) -> None:
        """VersionError naming the form's field unless `base` is a version's id: a base past
        every version counts no save as made after it, so a forged one (base=1000000) would
        overwrite another editor's save without a conflict."""
        # SQLite's integers are 64-bit: a larger id is no version either (not an OverflowError)
        if not 0 < base < 1 << 63 or self.store.query_one("SELECT id FROM versions WHERE id = ?", (base,)) is None:
            # with separators: a flash's mask of 7-digit runs hid 1000000 (helper-136)
            raise VersionError(f"base: no version {base:,}; reload the page")

    def _check_conflict(self, base: int, head: dict, line: Optional[str]) -> None:
        newer = self.store.query(f"SELECT * FROM versions WHERE id > ? AND id <= ? AND state NOT IN "
                                 f"({_marks(DROPPED)}) AND author != '(file)' ORDER BY id", (int(base), head["id"],
                                                                                         *DROPPED))
        for v in newer:
            if _lines_meet(v["line"], line):
                raise Conflict(v)

    def rollback(self, author: str, why: str, to: int, base: int) -> tuple[Optional[dict], FormErrors]:
        """A new draft holding version `to`'s text (the whole file), approved like any other."""
        old = self.get(to)
        return self.save(author, why, base, None, old["text"], restores=old["id"])

    # -- approval and apply
    def approval_blockers(self, vid: int, approver: str) -> list[str]:
        """Why `approver` may not approve version `vid` (empty: they may)."""
        version = self.get(vid)
        live = self.live()
        reasons = []
        if version["state"] != "draft":
            reasons.append(f"version {vid} is {version['state']}, not a draft waiting for approval")
        if live is not None and vid < live["id"]:
            if version["state"] == "draft":
                # never live: built before the live one (a hand edit of the file, or a version a
                # rollback made live); approving it would undo the live version's changes
                by_hand = " (the live file, edited by hand)" if live["author"] == "(file)" else ""
                reasons.append(f"version {vid} was built on an older text than the live version {live['id']}"
                               f"{by_hand}, whose changes approving it would undo: make its change again on the "
                               "live version")
            else:
                reasons.append(f"version {vid} is older than the live version {live['id']}: roll back to it instead")
        after = 0 if live is None else live["id"]
        authored = {r["id"] for r in self.store.query(
            f"SELECT id FROM versions WHERE id > ? AND id <= ? AND author = ? AND state NOT IN ({_marks(DROPPED)})",
            (after, vid, approver, *DROPPED))}
        # a version rejected after a later one was built on it is still in that one's text:
        # its author must not approve the later one (rejecting their own draft would let them)
        authored |= {i for i, author in self._authors_carried(vid, after).items() if author == approver}
        if authored:
            ids = ", ".join(str(i) for i in sorted(authored))
            reasons.append(f"{approver} authored version{'s' if len(authored) > 1 else ''} {ids}, which "
                           f"version {vid} carries: someone else must approve it")
        return reasons

    def _carried(self, vid: int, after: int) -> list[dict]:
        """Version `vid` and the versions its text was built on, newest first, down to
        (not including) version `after`: every version whose changes it holds."""
        chain, seen = [], set()
        version = self.get(vid)
        while version is not None and version["id"] > after and version["id"] not in seen:
            seen.add(version["id"])
            chain.append(version)
            parent = version["parent"]
            version = None if parent is None else self.store.query_one("SELECT * FROM versions WHERE id = ?",
                                                                       (int(parent),))
        return chain

    def _authors_carried(self, vid: int, after: int) -> dict[int, str]:
        """{version id: author} of the versions whose changes version `vid` may hold and no
        approver has checked: those it was built on since version `after` (the live one), and
        for a rollback, the version it restores with those that one was built on, back to one
        that went live."""
        out: dict[int, str] = {}
        todo: list[tuple[Optional[int], bool]] = [(vid, True)]
        while todo:
            i, since_live = todo.pop()
            if i is None or i in out:
                continue
            v = self.store.query_one("SELECT * FROM versions WHERE id = ?", (int(i),))
            if v is None or (since_live and v["id"] <= after) or (not since_live and v["applied_at"] is not None):
                continue
            out[v["id"]] = v["author"]
            todo.append((v["parent"], since_live))
            if v.get("restores") is not None:
                todo.append((v["restores"], False))
        return out

    def reject(self, vid: int, approver: str, note: str = "") -> list[int]:
        """Turn a draft down, and with it the drafts built on it (their text holds its
        changes); later saves no longer carry them. Returns the ids of those drafts.
        VersionError for a note longer than MAX_NOTE."""
        _check_note(note)
        version = self.get(vid)
        if version["state"] != "draft":
            raise ApprovalRefused(f"version {vid} is {version['state']}, not a draft")
        built_on = [d["id"] for d in self.store.query("SELECT id FROM versions WHERE id > ? AND state = 'draft' "
                                                      "ORDER BY id", (int(vid),))
                    if any(v["id"] == vid for v in self._carried(d["id"], vid - 1))]
        with self.store.transaction() as db:
            now = self.now()
            db.execute("INSERT INTO approvals (version, approver, at, decision, note) VALUES (?, ?, ?, 'rejected', ?)",
                       (vid, approver, now, note))
            db.execute("UPDATE versions SET state = 'rejected' WHERE id = ?", (vid,))
            for later in built_on:
                db.execute("INSERT INTO approvals (version, approver, at, decision, note) VALUES (?, ?, ?, "
                           "'rejected', ?)", (later, approver, now, f"built on version {vid}, rejected"))
                db.execute("UPDATE versions SET state = 'rejected' WHERE id = ? AND state = 'draft'", (later,))
        return built_on

    def approve(self, vid: int, approver: str, note: str = "") -> dict:
        """Approve version `vid` and write it to the live file (atomically, the old file kept
        as CONFIG.prev). Raises ApprovalRefused (the rule, the state) or VersionError (the
        live file changed outside the console, or the text no longer validates: profiles or
        lists it names changed since the save, a note longer than MAX_NOTE). Returns the
        version, now live."""
        _check_note(note)
        with _APPLY:
            return self._approve(vid, approver, note)

    def _approve(self, vid: int, approver: str, note: str) -> dict:
        blockers = self.approval_blockers(vid, approver)
        if blockers:
            raise ApprovalRefused("; ".join(blockers))
        version = self.get(vid)
        live = self.live()
        if live is not None and self.read_live() != live["text"]:
            self.baseline()
            raise VersionError("the live file was changed outside the console since version "
                               f"{live['id']}; that change is now a version of its own, review again")
        errors = validate(self.config_path, version["text"], deep=self.deep)
        if errors:
            first = next(iter(errors.fields.values()), None) or errors.general[0]
            raise VersionError(f"version {vid} no longer validates: {first}")
        write_live(self.config_path, version["text"])
        now = self.now()
        with self.store.transaction() as db:
            db.execute("INSERT INTO approvals (version, approver, at, decision, note) VALUES (?, ?, ?, 'approved', ?)",
                       (vid, approver, now, note))
            db.execute("UPDATE versions SET state = 'replaced' WHERE state IN ('live', 'reload_failed')")
            db.execute("UPDATE versions SET state = 'superseded' WHERE state = 'draft' AND id < ?", (vid,))
            db.execute("UPDATE versions SET state = 'live', applied_at = ?, applied_by = ? WHERE id = ?",
                       (now, approver, vid))
        return self.get(vid)

    def record_reload(self, vid: int, result: "ReloadResult") -> None:
        """Keep what became of the service's reload; a refused one marks the version."""
        if result.state == "rejected":
            self.store.execute("UPDATE versions SET reload = ?, state = 'reload_failed' WHERE id = ? AND state = "
                               "'live'", (result.message, int(vid)))
        else:
            self.store.execute("UPDATE versions SET reload = ? WHERE id = ?", (result.message, int(vid)))


def _check_note(note: str) -> None:
    """VersionError when an approval's or a rejection's note is longer than MAX_NOTE, in the
    words a "why" is refused in (the note was cut to that length without a word)."""
    if len(note) > MAX_NOTE:
        raise VersionError(f'"note" is longer than {MAX_NOTE:,} characters')


def _marks(values) -> str:
    return ", ".join("?" * len(values))


def write_live(path: Path, text: str) -> None:
    """Write the live configuration atomically (a temporary file in its folder, fsynced,
    renamed over it), after copying the current one to CONFIG.prev; mode 0640."""
    from engine.sinks import write_private
    path = Path(path)
    if path.exists():
        write_private(path.with_name(f".{path.name}.prev.tmp"), path.with_name(path.name + ".prev"),
                      path.read_bytes())
    write_private(path.with_name(f".{path.name}.tmp"), path, text.encode())


# ---------------------------------------------------------------------------- the reload
@dataclass(frozen=True)
class ReloadResult:
    """state: "reloaded", "rejected", "unknown" or "not_sent"; message: one line for the page."""
    state: str
    message: str


def is_sigmatch_run(argv: list[bytes]) -> bool:
    """Whether a process's arguments (/proc/PID/cmdline split at NUL) are `sigmatch run`:
    the program (or the script an interpreter runs, or `-m engine.cli`) is sigmatch, and
    `run` is one of its arguments."""
    for i, arg in enumerate(argv[:4]):
        program = os.path.basename(arg)
        if program == b"sigmatch" or (arg == b"engine.cli" and i > 0 and argv[i - 1] == b"-m"):
            return _command_of(argv[i + 1:]) == b"run"
        if arg == b"-c":                # code given inline: what follows are its arguments
            break
    return False


def _command_of(args: list[bytes]) -> Optional[bytes]:
    """The command of sigmatch's arguments, past its own options (`-v`, `--log-format X`):
    `sigmatch console --data run` is not `run`, and SIGHUP would end that console."""
    rest = iter(args)
    for arg in rest:
        if arg == b"--log-format":
            next(rest, None)
        elif not arg.startswith(b"-"):
            return arg
    return None


def send_reload(pid_file: Optional[Path]) -> ReloadResult:
    """SIGHUP to the pid in `pid_file` (the service reloads its configuration). A result of
    "not_sent" says why not; "unknown" means it was sent."""
    if pid_file is None:
        return ReloadResult("not_sent", "no --daemon-pid: no service was told; it reads the file at its next "
                                        "SIGHUP or start")
    try:
        text = Path(pid_file).read_text().strip()
        pid = int(text)
    except (OSError, ValueError) as e:
        return ReloadResult("not_sent", f"{pid_file}: cannot read a process id: {getattr(e, 'strerror', None) or e}")
    if pid <= 1:
        return ReloadResult("not_sent", f"{pid_file}: {pid} is not a service's process id")
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        argv = None
    if argv is not None and not is_sigmatch_run(argv):
        # a stale pid file must not make the console signal some other program: SIGHUP ends
        # most (an editor or a `tail -f` of sigmatch's log names sigmatch too)
        return ReloadResult("not_sent", f"{pid_file}: process {pid} is not sigmatch run; no signal sent")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return ReloadResult("not_sent", f"{pid_file}: no process {pid} (the service is not running)")
    except PermissionError:
        return ReloadResult("not_sent", f"{pid_file}: not allowed to signal process {pid}")
    return ReloadResult("unknown", "reload sent, result unknown (no --metrics to read it from)")


def reload_result(outcome: str) -> ReloadResult:
    """engine.console.service.reload_outcome's answer ("succeeded", "rejected", "unknown: ...")
    as a ReloadResult with the line the version page shows."""
    if outcome == "succeeded":
        return ReloadResult("reloaded", "the service reloaded it: its metrics show this version live")
    if outcome == "rejected":
        return ReloadResult("rejected", "the service refused to reload it and runs the previous version (see its log)")
    detail = outcome[len("unknown: "):] if outcome.startswith("unknown: ") else outcome
    if not detail.startswith("reload sent"):
        detail = f"reload sent, result unknown: {detail}"
    return ReloadResult("unknown", detail)


# ---------------------------------------------------------------------------- diff
@dataclass(frozen=True)
class DiffRow:
    """One key of two versions: `where` is the section and entry ("campaign crbt_school",
    "policy", "counters sms"), `key` the key; `a`/`b` the values as TOML text ("" when absent)."""
    where: str
    key: str
    a: str
    b: str

    @property
    def changed(self) -> bool:
        return self.a != self.b


def _toml(value) -> str:
    if value is None:
        return ""
    from engine.console.configfile import to_item
    try:
        return to_item(value).as_string()
    except EditError:
        return repr(value)


def _entries(values: Mapping) -> dict[str, dict]:
    """Plain configuration -> {where: {key: value}} key by key."""
    out: dict[str, dict] = {}
    for name, value in values.items():
        if name == "campaign" and isinstance(value, list):
            for i, c in enumerate(value):
                if isinstance(c, Mapping):
                    cid = c.get("id") if isinstance(c.get("id"), str) else f"#{i + 1}"
                    out[f"campaign {cid}"] = dict(c)
        elif name in NAMED_SECTIONS and isinstance(value, Mapping):
            for entry, table in value.items():
                out[f"{name} {entry}"] = dict(table) if isinstance(table, Mapping) else {"": table}
        elif (name in TABLE_SECTIONS or name in MAP_SECTIONS) and isinstance(value, Mapping):
            out[name] = dict(value)
        else:
            out[name] = {"": value}
    return out


def diff_texts(a_text: str, b_text: str, *, changed_only: bool = True) -> list[DiffRow]:
    """Two configuration texts compared key by key, in b's order then what only a has. When
    either is not TOML (a hand edit of the live file, recorded as a version), line by line
    instead, after a row that says which is not and why: the page that shows it is where
    the file gets mended, so it must not fail."""
    try:
        a, b = _entries(tomllib.loads(a_text)), _entries(tomllib.loads(b_text))
    except tomllib.TOMLDecodeError:
        return _diff_lines(a_text, b_text, changed_only)
    rows = []
    for where in list(b) + [w for w in a if w not in b]:
        ka, kb = a.get(where, {}), b.get(where, {})
        for key in list(kb) + [k for k in ka if k not in kb]:
            row = DiffRow(where, key, _toml(ka.get(key)), _toml(kb.get(key)))
            if row.changed or not changed_only:
                rows.append(row)
    return rows


def _toml_error(text: str) -> str:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return f"not TOML: {e}"
    return "TOML"


def _diff_lines(a_text: str, b_text: str, changed_only: bool) -> list[DiffRow]:
    """diff_texts of texts that are not both TOML: a first row ("the text", "read as") with
    what each side is, then a row per line that differs (or every line), named by its line
    numbers in a and b."""
    import difflib
    rows = [DiffRow("the text", "read as", _toml_error(a_text), _toml_error(b_text))]
    a_lines, b_lines = a_text.splitlines(), b_text.splitlines()
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a_lines, b_lines, autojunk=False).get_opcodes():
        if op == "equal" and changed_only:
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            ia, jb = i1 + k, j1 + k
            a_line = a_lines[ia] if ia < i2 else ""
            b_line = b_lines[jb] if jb < j2 else ""
            where = f"line {jb + 1}" if jb < j2 else f"line {ia + 1} (of the first)"
            rows.append(DiffRow(where, "", a_line, b_line))
    return rows

