"""create_app(settings) -> the console's FastAPI application.

Each module of engine/console/pages holds one `router` (an APIRouter) and may name its
place in the navigation with `NAV = (label, path)`, and offer links or buttons on the
campaigns list with `CAMPAIGN_ACTIONS` and `CAMPAIGNS_PAGE_ACTIONS` (lists of deps.Action).
PAGES lists the modules in the order the navigation shows them: a new page is one line here.
A module that needs something for the app's life (the simulation queue) defines
`setup(app)`, called once the routers are in; what it appends to `app.state.closers` is
called, newest first, when the server stops.
"""
from __future__ import annotations

import importlib
import logging
import sqlite3
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from engine.console.auth import SESSION_COOKIE, SESSION_MAX_AGE_S, LoginLimiter
from engine.console.deps import LoginRequired, gate, login_url, render
from engine.console.settings import Settings
from engine.console.store import Store

__all__ = ["create_app", "PAGES"]

log = logging.getLogger("sigmatch.console")

PAGES = [
    "engine.console.pages.login",
    "engine.console.pages.campaigns",
    "engine.console.pages.edit",
    "engine.console.pages.versions",
    "engine.console.pages.audit",
    "engine.console.pages.simulate",
    "engine.console.pages.watch",
    "engine.console.pages.policy",
]

# Pages are rendered on the server and the tree holds no JavaScript: scripts are refused
# outright, and no other site may frame a page (clickjacking an approval)
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'none'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; frame-ancestors 'self'; form-action 'self'; base-uri 'none'",
    "x-frame-options": "SAMEORIGIN",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def create_app(settings: Settings, *, store: Optional[Store] = None,
               limiter: Optional[LoginLimiter] = None) -> FastAPI:
    """The console for `settings`. `store` defaults to the database under settings.data
    (which must exist); `limiter` to 5 failed logins a user name and 20 an address in 15
    minutes. Raises StoreError when the database cannot be opened."""
    store = store if store is not None else Store(settings.database)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        for close in reversed(app.state.closers):
            try:
                close()
            except Exception:       # one closer's failure must not keep the others from running
                log.exception("closing the console: %s failed", getattr(close, "__qualname__", close))

    app = FastAPI(title="sigmatch console", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(gate)], lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.limiter = limiter if limiter is not None else LoginLimiter()
    app.state.nav = []
    # the store stays open past a shutdown: a test may start the same app's lifespan again,
    # and a server's process ends with it
    app.state.closers = []
    app.state.campaign_actions = []
    app.state.campaigns_page_actions = []
    app.add_middleware(SessionMiddleware, secret_key=store.session_key(), session_cookie=SESSION_COOKIE,
                       max_age=SESSION_MAX_AGE_S, same_site="strict", https_only=False)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired):
        return RedirectResponse(login_url(exc.next_path), status_code=303)

    def refusal(request: Request, status: int, message: str):
        # a cross-site form arrives without the session cookie (SameSite=strict holds it back);
        # the page that refuses it must not answer with a new session of its own, which the
        # browser would keep in place of the user's: another site could log them out
        had_token = "csrf" in request.session
        response = render(request, "error.html.jinja", status_code=status, status=status, message=message)
        if not had_token:
            request.session.pop("csrf", None)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def error_page(request: Request, exc: StarletteHTTPException):
        response = refusal(request, exc.status_code, exc.detail)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        # a form or query field missing or of the wrong type: one line per field, no traceback
        if any(e.get("loc", ("",))[0] == "path" for e in exc.errors()):
            # /versions/abc names no entry: said of the address, not of the route's parameter
            return refusal(request, 404, f"no such entry: {request.url.path}")
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
                             for e in exc.errors())
        return refusal(request, 400, problems)

    @app.exception_handler(OverflowError)
    async def too_large(request: Request, exc: OverflowError):
        # an id in the address past SQLite's 64-bit integers (/versions/99999999999999999999)
        # names nothing; SQLite says so with an OverflowError, not a missing row
        return refusal(request, 404, "no such entry: a number in the request is too large to name one")

    @app.exception_handler(sqlite3.Error)
    async def database_failed(request: Request, exc: sqlite3.Error):
        # a disk that is full or failing under console.db: one line in the log and on the page
        log.error("%s: %s %s: the console's database failed: %s", settings.database, request.method,
                  request.url.path, exc)
        request.scope["sigmatch.user"] = None       # the page must not ask the failing database again
        return refusal(request, 503, f"the console's database failed ({exc}); try again, or see the console's log")

    for name in PAGES:
        module = importlib.import_module(name)
        app.include_router(module.router)
        if getattr(module, "NAV", None):
            app.state.nav.append(module.NAV)
        app.state.campaign_actions += getattr(module, "CAMPAIGN_ACTIONS", [])
        app.state.campaigns_page_actions += getattr(module, "CAMPAIGNS_PAGE_ACTIONS", [])
    for name in PAGES:
        setup = getattr(importlib.import_module(name), "setup", None)
        if setup is not None:
            setup(app)
    return app
