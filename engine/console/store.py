"""The console's own state: one SQLite file, `--data/console.db`.

Tables (MIGRATIONS gives the exact schema):

    users        name, role (viewer|editor|approver), argon2 hash, created_at
    versions     every saved configuration text: author, time, why, the version it was based
                 on, the draft line it belongs to (a campaign id or a section), its state
    approvals    an approver's decision on a version
    audit        every action: time, user, action, target, detail, client address
    simulations  what-if runs of a version on a trace: state, progress, result JSON
    sessions     the logged-in sessions, by the random id their cookie holds: a log-out ends one
    meta         key/value (the session signing key)

Schema changes are migrations appended to MIGRATIONS, never edits of an earlier one: the
database records how many it has applied in `PRAGMA user_version`, and opening a database
applies the missing ones in order, each in one transaction. A database newer than this code
(a user_version past len(MIGRATIONS)) is refused rather than misread.

Times are UTC, ISO 8601 to the second (`2026-11-30T12:00:00Z`); order by id, not by time.
"""
from __future__ import annotations

import datetime
import os
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from engine.errors import SigmatchError

__all__ = ["Store", "StoreError", "MIGRATIONS", "ROLES", "utc_now"]

ROLES = ("viewer", "editor", "approver")

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('viewer', 'editor', 'approver')),
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE versions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        parent INTEGER REFERENCES versions(id),      -- the version this one was edited from
        line TEXT,                                   -- draft line: a campaign id, 'policy', ...; NULL: the whole file
        author TEXT NOT NULL,
        created_at TEXT NOT NULL,
        why TEXT NOT NULL CHECK (length(trim(why)) > 0),
        text TEXT NOT NULL,                          -- the whole configuration file
        sha256 TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'draft',         -- draft, live, replaced, reload_failed, ...
        applied_at TEXT,
        applied_by TEXT,
        reload TEXT                                  -- what became of the daemon's reload
    );
    CREATE INDEX versions_line ON versions(line, id);
    CREATE TABLE approvals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        version INTEGER NOT NULL REFERENCES versions(id),
        approver TEXT NOT NULL,
        at TEXT NOT NULL,
        decision TEXT NOT NULL,                      -- approved, rejected
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX approvals_version ON approvals(version);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        user TEXT NOT NULL,                          -- '' before a login
        action TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '',
        client TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE simulations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        version INTEGER NOT NULL REFERENCES versions(id),
        trace TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        requested_at TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',        -- queued, running, done, failed
        progress REAL NOT NULL DEFAULT 0,            -- 0..1
        started_at TEXT,
        finished_at TEXT,
        result TEXT,                                 -- sigmatch diff --json
        error TEXT
    );
    CREATE INDEX simulations_version ON simulations(version, id);
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: the audit trail is append-only: no page, module or mistaken statement of the console
    # rewrites or deletes what was done (the file itself is the host's to protect)
    """
    CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    """,
    # 3: a rollback names the version whose text it restores: that text may hold drafts no one
    # approved, whose authors must not approve the rollback
    """
    ALTER TABLE versions ADD COLUMN restores INTEGER REFERENCES versions(id);
    """,
    # 4: the sessions that are logged in, by the id their cookie holds: a signed cookie alone
    # stayed valid after its log-out, until it expired (helper-123)
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        created_at REAL NOT NULL                     -- seconds since the epoch
    );
    CREATE INDEX sessions_user ON sessions(user);
    """,
]


class StoreError(SigmatchError):
    """The console's database cannot be opened or is of a newer console. Names the file."""


def utc_now() -> str:
    """Now, as the store keeps times: `2026-11-30T12:00:00Z`."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """The console's database. One connection shared by the server's threads behind a lock:
    the console's writes are a few a minute, and one connection keeps every read consistent
    with the last write.

    Plain methods for users, the audit trail and the session key; `query`, `execute` and
    `transaction` for the versions, approvals and simulations that their own modules manage.
    Rows come back as dicts. Raises StoreError when the file cannot be opened.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            # the file holds password hashes and the audit trail: owner only, whatever the umask
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                # a file made before (an empty one touched in, a copy) is made owner only too
                if os.fstat(fd).st_mode & 0o077:
                    os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"{self.path}: cannot open the console's database: "
                             f"{getattr(e, 'strerror', None) or e}") from None
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA busy_timeout = 5000")
            self._migrate()
            # a file damaged in its middle opens and migrates, then fails page after page
            # (and may take the server down): refuse it at once, in one line
            problems = [line for row in self._db.execute("PRAGMA quick_check(3)").fetchall()
                        for line in str(row[0]).splitlines() if line and not line.startswith("***")]
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise StoreError(f"{self.path}: not a console database: {e}") from None
        if problems != ["ok"]:
            self._db.close()
            raise StoreError(f"{self.path}: the console's database is damaged ({problems[0]}): restore a backup, "
                             "or recover what it holds with sqlite3's .recover")

    def _migrate(self) -> None:
        with self._lock:
            applied = self._db.execute("PRAGMA user_version").fetchone()[0]
            if applied > len(MIGRATIONS):
                raise StoreError(f"{self.path}: written by a newer console (schema {applied}, this one knows "
                                 f"{len(MIGRATIONS)}): use that console or a copy of the file made before")
            for number in range(applied, len(MIGRATIONS)):
                # executescript commits first; BEGIN inside it makes the migration and its
                # number one transaction
                self._db.executescript(f"BEGIN; {MIGRATIONS[number]}; PRAGMA user_version = {number + 1}; COMMIT;")

    @property
    def schema_version(self) -> int:
        """How many MIGRATIONS the database has applied."""
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- generic access, for the modules that own a table -----------------------------------

    def query(self, sql: str, params: tuple | dict = ()) -> list[dict[str, Any]]:
        """The rows of one SELECT, as dicts."""
        with self._lock:
            return [dict(row) for row in self._db.execute(sql, params).fetchall()]

    def query_one(self, sql: str, params: tuple | dict = ()) -> Optional[dict[str, Any]]:
        """The first row of one SELECT as a dict, or None."""
        with self._lock:
            row = self._db.execute(sql, params).fetchone()
            return None if row is None else dict(row)

    def execute(self, sql: str, params: tuple | dict = ()) -> int:
        """Run one statement (autocommit); the new row's id for an INSERT."""
        with self._lock:
            return self._db.execute(sql, params).lastrowid

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Several statements as one transaction (BEGIN IMMEDIATE: a check-then-write, such
        as a save that must still be based on the latest version, sees no write between
        its check and its write). Commits on leaving, rolls back on an exception."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- users -----------------------------------------------------------------------------

    def add_user(self, name: str, role: str, password_hash: str) -> None:
        """A new user, or a new role and password for an existing one. ValueError on an unknown role."""
        if role not in ROLES:
            raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")
        self.execute("INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT(name) DO UPDATE SET role = excluded.role, password_hash = excluded.password_hash",
                     (name, role, password_hash, utc_now()))

    def user(self, name: str) -> Optional[dict[str, Any]]:
        """{"name", "role", "password_hash", "created_at"} or None."""
        return self.query_one("SELECT * FROM users WHERE name = ?", (name,))

    def users(self) -> list[dict[str, Any]]:
        return self.query("SELECT name, role, created_at FROM users ORDER BY name")

    def set_password_hash(self, name: str, password_hash: str) -> None:
        """Replace a hash (argon2's parameters changed since it was made)."""
        self.execute("UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name))

    # -- the audit trail -------------------------------------------------------------------

    def add_audit(self, user: str, action: str, target: str = "", detail: str = "", client: str = "") -> int:
        """Append one entry to the audit trail; its id."""
        return self.execute("INSERT INTO audit (at, user, action, target, detail, client) VALUES (?, ?, ?, ?, ?, ?)",
                            (utc_now(), user, action, target, detail, client))

    def audit_entries(self, *, user: Optional[str] = None, action: Optional[str] = None,
                      target: Optional[str] = None, limit: Optional[int] = None,
                      offset: int = 0) -> list[dict[str, Any]]:
        """Audit entries, newest first, those of `user`, `action` and `target` when given."""
        where, params = self._audit_filter(user, action, target)
        sql = f"SELECT * FROM audit{where} ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += (limit, offset)
        return self.query(sql, params)

    def audit_count(self, *, user: Optional[str] = None, action: Optional[str] = None,
                    target: Optional[str] = None) -> int:
        where, params = self._audit_filter(user, action, target)
        return self.query_one(f"SELECT count(*) AS n FROM audit{where}", params)["n"]

    def audit_actions(self) -> list[str]:
        """The actions the trail holds, for a filter's choices."""
        return [r["action"] for r in self.query("SELECT DISTINCT action FROM audit ORDER BY action")]

    @staticmethod
    def _audit_filter(user, action, target) -> tuple[str, tuple]:
        terms, params = [], ()
        for column, value in (("user", user), ("action", action), ("target", target)):
            if value:
                terms.append(f"{column} = ?")
                params += (value,)
        return (" WHERE " + " AND ".join(terms) if terms else ""), params

    # -- meta ------------------------------------------------------------------------------

    def meta(self, key: str) -> Optional[str]:
        row = self.query_one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else row["value"]

    def set_meta(self, key: str, value: str) -> None:
        self.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                     "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def add_session(self, user: str, max_age_s: float) -> str:
        """A new logged-in session of `user`: its id (random, for the cookie). Sessions older
        than `max_age_s` (s), whose cookies have expired, are forgotten meanwhile."""
        sid = secrets.token_urlsafe(24)
        now = time.time()
        with self.transaction() as db:
            db.execute("DELETE FROM sessions WHERE created_at < ?", (now - max_age_s,))
            db.execute("INSERT INTO sessions (id, user, created_at) VALUES (?, ?, ?)", (sid, user, now))
        return sid

    def session_user(self, sid: str, max_age_s: float) -> Optional[str]:
        """The user whose session `sid` is, or None once it ended (logged out, user removed,
        or older than `max_age_s` s: a cookie the server signs again on every answer would
        otherwise outlive its hours, helper-125)."""
        row = self.query_one("SELECT user FROM sessions WHERE id = ? AND created_at >= ?",
                             (sid, time.time() - max_age_s))
        return None if row is None else row["user"]

    def end_sessions(self, *, sid: Optional[str] = None, user: Optional[str] = None) -> None:
        """End one session (a log-out), or every session of `user` (removed, or a new password)."""
        if sid is not None:
            self.execute("DELETE FROM sessions WHERE id = ?", (sid,))
        if user is not None:
            self.execute("DELETE FROM sessions WHERE user = ?", (user,))

    def session_key(self) -> str:
        """The key that signs session cookies: made once, kept, so that a restart keeps
        everyone logged in; deleting it from meta logs everyone out."""
        with self._lock:
            key = self.meta("session_key")
            if key is None:
                key = secrets.token_urlsafe(48)
                self.set_meta("session_key", key)
            return key
