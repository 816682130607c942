"""The web console in a real browser (issue 13 §7): Debian's chromium driven through
chromium-driver by Selenium, against `sigmatch console` started as an operator starts it, next
to a running `sigmatch run` whose lookup and metrics the console reads and which it reloads.

The module starts one small world, one service and one console; the tests share them and run
in the order the issue lists: an edit saved as a draft is what the second user approves.

With SIGMATCH_SCREENSHOTS=1 the tests save the main pages as docs/console/*.png (the README
and docs/console.md show them); without it they write nothing into the tree.
"""
from __future__ import annotations

import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("argon2")

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = ROOT / "docs" / "console"
PASSWORD = "a long enough password"
TOKEN = "browser-test-token"
# what a test waits for at most: a page, a reload seen in the service's metrics, a simulation
WAIT_S = 60
EDITED = "topup_rescue"           # a programme gen always writes: the campaign the tests edit


def _browser_or_skip():
    """Selenium's modules, or a skip (a failure under CI=true, where .ci/run installs them)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        message = f"the browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sigmatch(*args) -> list[str]:
    return [sys.executable, "-m", "engine.cli", *map(str, args)]


@dataclass
class Site:
    """What the module started: the console's address and everything behind it."""
    url: str
    config: Path
    data: Path
    out: Path
    daemon_log: Path
    console_log: Path
    daemon: subprocess.Popen
    console: subprocess.Popen
    sends: dict = field(default_factory=dict)       # campaign -> contacts the service made
    contacted: str = ""                             # an MSISDN the service contacted


def _wait_ready(listener: socket.socket, proc: subprocess.Popen, log: Path) -> None:
    listener.settimeout(WAIT_S)
    try:
        assert listener.recv(64) == b"READY=1"
    except socket.timeout:
        proc.kill()
        pytest.fail(f"sigmatch run never became ready: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from engine.world.gen import generate
    _browser_or_skip()
    top = tmp_path_factory.mktemp("console")
    world = generate(top / "world", subscribers=3_000, events=40_000, campaigns=6, seed=3, trace_files=4)
    # the recorded traces a draft is simulated on: one trace of four files
    (top / "traces" / "week").mkdir(parents=True)
    spool = top / "spool"
    spool.mkdir()
    for trace in world.traces:
        shutil.copy(trace, top / "traces" / "week" / trace.name)
        shutil.copy(trace, spool / f".{trace.name}.part")
        os.replace(spool / f".{trace.name}.part", spool / trace.name)
    out, data = top / "out", top / "data"
    lookup, metrics = free_port(), free_port()

    daemon_log = top / "daemon.log"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = top / f"notify-{random.randrange(10**9)}.sock"
    notify.bind(str(notify_path))
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), SIGMATCH_LOOKUP_TOKEN=TOKEN)
    with open(daemon_log, "w") as log:
        daemon = subprocess.Popen(
            sigmatch("run", world.config, "--out", out, "--state", top / "state", "--spool", spool,
                     "--lookup", f"127.0.0.1:{lookup}", "--metrics", f"127.0.0.1:{metrics}", "--settle", 0),
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    with notify:
        _wait_ready(notify, daemon, daemon_log)
    # `sigmatch run` writes no pid file: a unit's PIDFile or a wrapper does; here the test
    pid_file = top / "sigmatch.pid"
    pid_file.write_text(f"{daemon.pid}\n")

    for name, role in (("ed", "editor"), ("ann", "approver"), ("vic", "viewer")):
        added = subprocess.run(sigmatch("console", "adduser", name, "--role", role, "--data", data),
                               cwd=ROOT, input=PASSWORD + "\n", capture_output=True, text=True, timeout=WAIT_S)
        assert added.returncode == 0, added.stderr

    console_log = top / "console.log"
    with open(console_log, "w") as log:
        console = subprocess.Popen(
            sigmatch("console", "--config", world.config, "--data", data, "--listen", "127.0.0.1:0",
                     "--daemon-pid", pid_file, "--lookup", f"http://127.0.0.1:{lookup}", "--lookup-token", TOKEN,
                     "--metrics", f"http://127.0.0.1:{metrics}/metrics", "--out", out, "--trace-dir", top / "traces"),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        ready, _, _ = select.select([console.stdout], [], [], WAIT_S)
        line = console.stdout.readline() if ready else ""
        found = re.search(r"http://\S+", line)
        if not found:
            pytest.fail(f"sigmatch console printed no address: {line!r} {console_log.read_text()[-2000:]}")
        url = found.group(0).rstrip("/")

        # the service has counted the whole spool: figures, contacts and subscribers to look up
        deadline = time.monotonic() + WAIT_S
        while list(spool.glob("*.msgpack")) or not (out / "stats.json").exists():
            assert daemon.poll() is None, daemon_log.read_text()[-2000:]
            assert time.monotonic() < deadline, "sigmatch run did not drain its spool"
            time.sleep(0.1)
        sends = _sends(out)
        yield Site(url=url, config=world.config, data=data, out=out, daemon_log=daemon_log, console_log=console_log,
                   daemon=daemon, console=console, sends=sends, contacted=_a_contacted_number(out))
    finally:
        _stop(console)
        _stop(daemon)


def _sends(out: Path) -> dict[str, int]:
    stats = json.loads((out / "stats.json").read_text())
    return {cid: sum(day.get("sent", 0) for day in (entry.get("days") or {}).values())
            for cid, entry in stats["campaigns"].items()}


def _a_contacted_number(out: Path) -> str:
    import csv
    for path in sorted(out.rglob("actions-*.csv")):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                return row["msisdn"]
    raise AssertionError(f"the service wrote no action under {out}")


@pytest.fixture(scope="module")
def browser(site):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--no-sandbox", "--headless=new", "--disable-dev-shm-usage", "--window-size=1280,900",
                     "--disable-gpu", "--disable-extensions", "--no-first-run"):
        options.add_argument(argument)
    # the path given: Selenium Manager never goes looking for (or downloading) a driver
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


# ------------------------------------------------------------------------------ helpers
def by_id(driver, element_id):
    from selenium.webdriver.common.by import By
    return driver.find_element(By.ID, element_id)


def all_css(driver, selector):
    from selenium.webdriver.common.by import By
    return driver.find_elements(By.CSS_SELECTOR, selector)


def wait_for(driver, condition, message: str, timeout: float = WAIT_S):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition, message)


def log_in(driver, site: Site, name: str, password: str = PASSWORD, then: str = "/campaigns"):
    """A fresh session (no cookie of an earlier user) logged in as `name`, at `then`."""
    driver.delete_all_cookies()
    driver.get(f"{site.url}/login?next={then}")
    by_id(driver, "name").send_keys(name)
    by_id(driver, "password").send_keys(password)
    by_id(driver, "login").submit()
    wait_for(driver, lambda d: "/login" not in d.current_url or all_css(d, "#login-error"), "the login answered")


def screenshot(driver, name: str) -> None:
    """docs/console/NAME.png of the whole page, only with SIGMATCH_SCREENSHOTS=1."""
    if os.environ.get("SIGMATCH_SCREENSHOTS") != "1":
        return
    from engine.sinks import make_private_directories
    make_private_directories(SCREENSHOTS)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(600, min(int(height) + 40, 4000)))
    try:
        path = SCREENSHOTS / f"{name}.png"
        assert driver.save_screenshot(str(path)), path
        path.chmod(0o644)       # a picture in the documentation, read by everyone who reads the docs
    finally:
        driver.set_window_size(1280, 900)


def live_priority(config: Path, cid: str) -> int:
    import tomllib
    campaigns = tomllib.loads(config.read_text())["campaign"]
    return next(c.get("priority", 0) for c in campaigns if c["id"] == cid)


def session_of(driver, site: Site):
    """An httpx client holding the browser's session cookie: a request the browser would make."""
    import httpx
    cookies = {c["name"]: c["value"] for c in driver.get_cookies()}
    return httpx.Client(base_url=site.url, cookies=cookies, follow_redirects=False, timeout=WAIT_S)


def form_token(driver) -> str:
    return all_css(driver, "input[name=csrf_token]")[0].get_attribute("value")


def versions_count(site: Site) -> int:
    import sqlite3
    with sqlite3.connect(site.data / "console.db") as db:
        return db.execute("SELECT count(*) FROM versions").fetchone()[0]


# ------------------------------------------------------------------------------ the tests
def test_log_in(browser, site):
    browser.delete_all_cookies()
    browser.get(f"{site.url}/campaigns")
    assert "/login" in browser.current_url           # every page needs a user
    screenshot(browser, "login")
    log_in(browser, site, "ed", "not the password")
    assert "Wrong user name or password" in by_id(browser, "login-error").text
    log_in(browser, site, "ed")
    assert browser.current_url.endswith("/campaigns")
    assert "ed" in browser.find_element("css selector", "header .who").text
    row = by_id(browser, f"campaign-{EDITED}")
    assert "live" in row.text
    # the figures of the service's last day (stats.json), where the service sent anything
    busiest = max(site.sends, key=site.sends.get)
    assert re.search(r"\d", by_id(browser, f"campaign-{busiest}").text)
    screenshot(browser, "campaigns")


def test_a_cross_site_post_without_the_token_is_refused(browser, site):
    log_in(browser, site, "ann")
    token = form_token(browser)
    # another site's page, in the browser where the approver is logged in, posts a form to the console
    browser.get("data:text/html;charset=utf-8," +
                f'<form method="post" action="{site.url}/logout"><button id="go">go</button></form>')
    by_id(browser, "go").click()
    wait_for(browser, lambda d: d.current_url.startswith(site.url), "the form was posted")
    body = browser.find_element("tag name", "body").text
    assert "refused" in body or "CSRF" in body
    with session_of(browser, site) as client:
        # the session cookie without the form's token
        no_token = client.post("/logout")
        # the right token, from another site
        other_site = client.post("/logout", headers={"Origin": "https://evil.example"}, data={"csrf_token": token})
    assert no_token.status_code == 403 and "CSRF" in no_token.text
    assert other_site.status_code == 403 and "cross-site" in other_site.text
    # none of them logged ann out
    browser.get(f"{site.url}/campaigns")
    assert browser.current_url.endswith("/campaigns") and "ann" in browser.find_element("css selector", "header .who").text
