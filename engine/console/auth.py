"""Who may use the console: argon2 password hashes, roles, CSRF tokens and the login rate limit.

Sessions are Starlette's SessionMiddleware: a cookie signed with itsdangerous (the key kept
in the store), HttpOnly, SameSite=strict. The session holds the user's name and a CSRF token;
the user's role is read from the store on every request, so that a changed role takes
effect at once.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import defaultdict, deque
from typing import Callable, Optional

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from engine.console.store import ROLES

__all__ = ["hash_password", "verify_password", "needs_rehash", "password_stamp", "role_allows", "new_csrf_token",
           "csrf_matches", "LoginLimiter", "SESSION_COOKIE", "SESSION_MAX_AGE_S", "MIN_PASSWORD_LENGTH", "MAX_PASSWORD_LENGTH",
           "MAX_NAME_LENGTH"]

SESSION_COOKIE = "sigmatch_console"
SESSION_MAX_AGE_S = 8 * 3600        # one working day; then log in again
MIN_PASSWORD_LENGTH = 8
# characters: a passphrase fits many times over; the log-in form refuses fields of a MB,
# and adduser must never store a password that no log-in can send
MAX_PASSWORD_LENGTH = 1024
MAX_NAME_LENGTH = 64                # sigmatch console adduser's bound on a user name

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash of `password` (its salt and parameters inside)."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether `password` matches the hash; False for a damaged hash too."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with weaker parameters than argon2-cffi's current ones."""
    return _hasher.check_needs_rehash(password_hash)


def role_allows(role: str, needed: str) -> bool:
    """viewer < editor < approver: an approver may also edit, an editor also read."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def password_stamp(password_hash: str) -> str:
    """What a session keeps of its user's password hash, to end when the password changes:
    16 hex digits of its sha256 (the cookie is signed, not encrypted: never the hash itself)."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: Optional[str], given: Optional[str]) -> bool:
    """Constant-time comparison; a session without a token matches nothing."""
    return bool(expected) and bool(given) and hmac.compare_digest(expected.encode(), given.encode())


class LoginLimiter:
    """Failed logins counted per user name and per client address over a sliding window.

    A name with `per_name` failures in `window_s`, or an address with `per_address`, is
    refused (before its password is even checked) until its oldest failure leaves the
    window. A success clears the name's failures, not the address's: an address trying
    many names stays limited. `clock` is injectable (seconds, monotonic) so that tests
    move time rather than wait.
    """

    def __init__(self, per_name: int = 5, per_address: int = 20, window_s: float = 900.0,
                 clock: Callable[[], float] = time.monotonic):
        self.per_name = per_name
        self.per_address = per_address
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], deque] = defaultdict(deque)

    def _recent(self, key: tuple[str, str], now: float) -> deque:
        times = self._failures[key]
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def retry_after(self, name: str, address: str) -> float:
        """Seconds until this name and address may try again; 0 when they may now."""
        with self._lock:
            now = self.clock()
            wait = 0.0
            for key, bound in ((("name", name), self.per_name), (("address", address), self.per_address)):
                times = self._recent(key, now)
                if len(times) >= bound:
                    wait = max(wait, times[len(times) - bound] + self.window_s - now)
            return wait

    def failed(self, name: str, address: str) -> None:
        with self._lock:
            now = self.clock()
            self._recent(("name", name), now).append(now)
            self._recent(("address", address), now).append(now)
            # bound the table: forget keys with nothing left in the window
            if len(self._failures) > 10_000:
                for key in [k for k, times in self._failures.items() if not self._recent(k, now)]:
                    del self._failures[key]

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(("name", name), None)
