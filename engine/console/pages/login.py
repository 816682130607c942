"""The login page, logging out, and / (which goes to the campaigns)."""
from __future__ import annotations

import math

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from engine.console.auth import (MAX_NAME_LENGTH, SESSION_MAX_AGE_S, hash_password, needs_rehash, new_csrf_token,
                                 password_stamp, verify_password)
from engine.console.deps import (audit, client_address, current_user, get_store, login_redirect_target, render,
                                 viewer_may_post)

router = APIRouter()

# a user name that does not exist still costs one argon2 verification, so that the time a
# refusal takes does not tell which names exist
_NOBODY_HASH = hash_password("no user has this password")


@router.get("/")
def home(request: Request):
    return RedirectResponse("/campaigns", status_code=303)


@router.get("/login")
def login_form(request: Request, next: str = "/"):
    if current_user(request) is not None:
        return RedirectResponse(login_redirect_target(next), status_code=303)
    return render(request, "login.html.jinja", next=login_redirect_target(next), name="", error=None)


@router.post("/login")
def login(request: Request, name: str = Form(""), password: str = Form(""), next: str = Form("/")):
    store, limiter = get_store(request), request.app.state.limiter
    address = client_address(request)
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        # no user has such a name (adduser allows 64 characters); the audit trail, which
        # nobody may trim, and the rate limit's table keep a bounded part of it
        name = name[:MAX_NAME_LENGTH] + "…"
    wait = limiter.retry_after(name, address)
    if wait > 0:
        audit(request, "login_refused", name, "rate limited")
        minutes = max(1, math.ceil(wait / 60))
        return render(request, "login.html.jinja", status_code=429, next=login_redirect_target(next), name=name,
                      error=f"Too many failed logins for this name or address: try again in {minutes} "
                            f"minute{'s' if minutes != 1 else ''}.")
    row = store.user(name) if name else None
    if not verify_password(row["password_hash"] if row else _NOBODY_HASH, password) or row is None:
        limiter.failed(name, address)
        audit(request, "login_failed", name)
        return render(request, "login.html.jinja", status_code=401, next=login_redirect_target(next), name=name,
                      error="Wrong user name or password.")
    limiter.succeeded(name)
    password_hash = row["password_hash"]
    if needs_rehash(password_hash):
        password_hash = hash_password(password)
        store.set_password_hash(name, password_hash)
    # a new session: nothing of what was there before the login (a token planted in it) stays
    request.session.clear()
    request.session["user"] = row["name"]
    request.session["sid"] = store.add_session(row["name"], SESSION_MAX_AGE_S)
    request.session["pw"] = password_stamp(password_hash)
    request.session["csrf"] = new_csrf_token()
    request.scope.pop("sigmatch.user", None)
    audit(request, "login", row["name"], f"role {row['role']}")
    return RedirectResponse(login_redirect_target(next), status_code=303)


@router.post("/logout")
@viewer_may_post
def logout(request: Request):
    audit(request, "logout", getattr(current_user(request), "name", ""))
    sid = request.session.get("sid")
    if isinstance(sid, str):
        get_store(request).end_sessions(sid=sid)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)
