"""The web console (`sigmatch console`, SPEC §5, issue 13): marketing staff configure,
simulate, approve and watch campaigns in a browser.

    settings.py     Settings: what `sigmatch console` was started with (frozen)
    store.py        Store: the console's own SQLite database under --data (users, versions,
                    approvals, the audit trail, simulations), versioned migrations
    auth.py         argon2 password hashes, sessions, CSRF tokens, the login rate limit
    deps.py         what every page uses: render, current_user, require_role, audit, ...
    app.py          create_app(settings) -> the FastAPI application, one router per page module
    pages/          one module per page (login, campaigns, audit, edit, versions, simulate, ...)
    templates/      Jinja2 templates, rendered on the server (no JavaScript in the tree)

FastAPI, uvicorn, argon2-cffi and the rest come with the `console` extra
(`pip install 'sigmatch[console]'`); importing this package alone needs none of them.
"""
