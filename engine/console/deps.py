"""What every page of the console uses.

    render(request, template, status_code=200, **context) -> HTMLResponse
    current_user(request) -> User | None        the logged-in user, read from the store
    require_user(request) -> User               LoginRequired (a redirect to /login) without one
    require_role(request, "editor") -> User     HTTPException 403 below that role
    csrf_token(request) -> str                  the session's token, for a form's hidden field
    audit(request, action, target, detail)      one entry in the audit trail, with user and client
    flash(request, message)                     a message shown once on the next page rendered
    get_store(request), get_settings(request)
    viewer_may_post(endpoint)                   a POST a viewer may make (log out, look up)
    Action(label, path, role, method)           a link or button another page offers (below)

Every request passes `gate` (app.py makes it a dependency of the whole application): a
POST, PUT, PATCH or DELETE needs the session's CSRF token (form field `csrf_token` or header
`X-CSRF-Token`) and, when the browser sends an Origin, this site's own; every path but the
login page needs a logged-in user; a viewer makes no change (403) except through endpoints
marked viewer_may_post.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import quote, urlsplit

from fastapi import HTTPException, Request
from fastapi.templating import Jinja2Templates

from engine.console.auth import SESSION_MAX_AGE_S, csrf_matches, new_csrf_token, password_stamp, role_allows
from engine.console.settings import Settings
from engine.console.store import Store
from engine.privacy import escape_controls, mask_typed_numbers, mask_written_numbers

__all__ = ["Action", "User", "LoginRequired", "render", "current_user", "require_user", "require_role", "csrf_token",
           "audit", "flash", "get_store", "get_settings", "viewer_may_post", "gate", "templates",
           "client_address", "login_redirect_target", "login_url", "PUBLIC_PATHS", "SAFE_METHODS"]

TEMPLATES = Path(__file__).parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES))
# every value escaped, whatever the name: Starlette's default escapes by extension only, and
# the templates are named *.html.jinja (sources, not pages a build writes)
templates.env.autoescape = True
# no page shows a full MSISDN but the one a user looked up: `|masked` on anything that may hold
# one, free text that people type above all (a why, a note), whose control characters are
# shown as escapes
templates.env.filters["masked"] = lambda text: escape_controls(
    mask_written_numbers("" if text is None else str(text)))
# ... and `|typed` on what a person typed (a why, a note): a number glued to a word too
templates.env.filters["typed"] = lambda text: escape_controls(
    mask_typed_numbers("" if text is None else str(text)))

PUBLIC_PATHS = frozenset({"/login"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class User:
    name: str
    role: str           # viewer, editor or approver

    def may(self, role: str) -> bool:
        """Whether this user has `role` or a higher one."""
        return role_allows(self.role, role)


@dataclass(frozen=True)
class Action:
    """A link (method "get") or a one-button form with the CSRF token (method "post") that a
    page module offers on another module's page, shown to users with `role` or higher.

    A pages module declares `CAMPAIGN_ACTIONS = [Action("edit", "/campaigns/{id}/edit")]` for
    each row of the campaigns list ({id}: the campaign's id, URL-quoted) and
    `CAMPAIGNS_PAGE_ACTIONS = [Action("Add a campaign", "/campaigns/new")]` for the list as a
    whole; app.py collects them, so that the list links only to pages that exist."""
    label: str
    path: str
    role: str = "editor"
    method: str = "get"

    def href(self, **values: str) -> str:
        return self.path.format(**{k: quote(str(v), safe="") for k, v in values.items()})


class LoginRequired(Exception):
    """No user is logged in; app.py answers with a redirect to the login page."""

    def __init__(self, next_path: str = "/"):
        super().__init__(next_path)
        self.next_path = next_path


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def current_user(request: Request) -> Optional[User]:
    """The logged-in user, or None (not logged in, or a user no longer in the store)."""
    cached = request.scope.get("sigmatch.user", False)
    if cached is not False:
        return cached
    name, sid = request.session.get("user"), request.session.get("sid")
    store = get_store(request)
    # a session that logged out, or whose user was removed, ends with it: the signed cookie
    # alone stayed valid until it expired (helper-123)
    live = isinstance(name, str) and isinstance(sid, str) and store.session_user(sid, SESSION_MAX_AGE_S) == name
    row = store.user(name) if live else None
    if row is not None and request.session.get("pw") != password_stamp(row["password_hash"]):
        # the password was changed (adduser again) since this session logged in: a session
        # of whoever learnt the old one ends with it
        row = None
    user = None if row is None else User(row["name"], row["role"])
    request.scope["sigmatch.user"] = user
    return user


def require_user(request: Request) -> User:
    user = current_user(request)
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return user


def require_role(request: Request, role: str) -> User:
    """The logged-in user when they have `role` (or a higher one); 403 otherwise."""
    user = require_user(request)
    if not user.may(role):
        article = "an" if user.role[:1] in "aeiou" else "a"
        raise HTTPException(403, f"this needs the {role} role; {user.name} is {article} {user.role}")
    return user


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = request.session["csrf"] = new_csrf_token()
    return token


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else ""


def audit(request: Request, action: str, target: str = "", detail: str = "") -> int:
    """Record `action` on `target` by the current user (or '' before a login) from the
    request's client address; the entry's id."""
    user = current_user(request)
    # stored masked, as lookups' targets are: an error's detail may quote a number of a file
    return get_store(request).add_audit(user.name if user else "", action, target, mask_written_numbers(detail),
                                        client_address(request))


def flash(request: Request, message: str, kind: str = "info") -> None:
    """A message for the next page rendered in this session (kind: info, warning or error); numbers
    in it masked (it travels in the session cookie, which is signed, not encrypted)."""
    request.session.setdefault("flash", []).append([kind, mask_written_numbers(message)])


# warnings flashed with a save: the flash travels in the session cookie, which a browser
# keeps to 4 kB
_WARNINGS_SHOWN, _WARNING_CHARS = 3, 300


def flash_warnings(request: Request, warnings: list[str]) -> None:
    """What loading a version's configuration, profiles and lists warned of while it was
    validated (entries of a list skipped), flashed with its save: the first few, each cut
    short, then how many more."""
    for warning in warnings[:_WARNINGS_SHOWN]:
        cut = warning if len(warning) <= _WARNING_CHARS else warning[:_WARNING_CHARS - 1] + "…"
        flash(request, f"Warning: {cut}", "warning")
    if len(warnings) > _WARNINGS_SHOWN:
        flash(request, f"… and {len(warnings) - _WARNINGS_SHOWN:,} more warnings: run sigmatch check on the "
                       "version's text to see them all", "warning")


def render(request: Request, template: str, status_code: int = 200, **context):
    """`template` rendered with `context` and what base.html needs: the user, the CSRF
    token, the settings, the navigation and the messages flashed since the last page."""
    context.update(request=request, user=current_user(request), csrf_token=csrf_token(request),
                   settings=get_settings(request), nav=request.app.state.nav,
                   flashed=request.session.pop("flash", []))
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def viewer_may_post(endpoint):
    """Mark a POST endpoint that changes nothing of the configuration, open to viewers."""
    endpoint.viewer_may_post = True
    return endpoint


def _same_origin(request: Request) -> bool:
    # browsers send Origin on every cross-site POST; an absent one is a same-site form or a
    # tool, which the CSRF token still checks ("null", from a sandboxed page, is not ours)
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


async def gate(request: Request) -> None:
    """The checks every request passes (see the module docstring)."""
    if request.method not in SAFE_METHODS:
        if not _same_origin(request):
            raise HTTPException(403, "cross-site request refused (its Origin is not this console)")
        given = request.headers.get("x-csrf-token")
        if given is None:
            form = await request.form()
            value = form.get("csrf_token")
            given = value if isinstance(value, str) else None
        if not csrf_matches(request.session.get("csrf"), given):
            raise HTTPException(403, "the form's CSRF token is missing or stale: reload the page and try again")
    if request.url.path in PUBLIC_PATHS:
        return
    user = require_user(request)
    if request.method not in SAFE_METHODS and user.role == "viewer" \
            and not getattr(request.scope.get("endpoint"), "viewer_may_post", False):
        raise HTTPException(403, f"{user.name} is a viewer: viewers read, they change nothing")


def login_redirect_target(next_path: Optional[str]) -> str:
    """`next` when it is a path of this site (never another host: an open redirect), else /."""
    if not next_path or not next_path.startswith("/") or next_path.startswith("//") or "\\" in next_path:
        return "/"
    return next_path


def login_url(next_path: str) -> str:
    return "/login?next=" + quote(next_path, safe="/")
