"""The web console in a real browser (issue 13 §7): Debian's chromium driven through
chromium-driver by Selenium, against `sigmatch console` started as an operator starts it, next
to a running `sigmatch run` whose lookup and metrics the console reads and which it reloads.

The module starts one small world, one service and one console; the tests share them and run
in the order the issue lists, as people would: the draft `saved` (a module fixture) is what the
second user approves, after which the service's log must say it reloaded.

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
    msisdns: frozenset = frozenset()                # every subscriber's, as text


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
    import pyarrow.parquet as pq
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
                   daemon=daemon, console=console, sends=sends, contacted=_a_contacted_number(out),
                   msisdns=frozenset(map(str, pq.read_table(world.profiles, columns=["msisdn"])["msisdn"].to_pylist())))
    finally:
        _stop(console)
        _stop(daemon)


def _sends(out: Path) -> dict[str, int]:
    stats = json.loads((out / "stats.json").read_text())
    return {cid: entry["sent"] for cid, entry in stats["campaigns"].items()}


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
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait
    # A page that refreshes itself (<meta http-equiv="refresh">) may go between finding an element
    # and reading it. Chromium reports that as a stale element, or (chromedriver 156) as a bare
    # WebDriverException "Node with given id does not belong to the document"; either is "not yet".
    return WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=(WebDriverException,)).until(condition, message)


def log_in(driver, site: Site, name: str, password: str = PASSWORD, then: str = "/campaigns"):
    """A fresh session (no cookie of an earlier user) logged in as `name`, at `then`."""
    driver.delete_all_cookies()
    driver.get(f"{site.url}/login?next={then}")
    by_id(driver, "name").send_keys(name)
    by_id(driver, "password").send_keys(password)
    by_id(driver, "login").submit()
    wait_for(driver, lambda d: "/login" not in d.current_url or all_css(d, "#login-error"), "the login answered")


def screenshot(driver, site: Site, name: str, *, height: int = 2400, shows: str = "") -> None:
    """docs/console/NAME.png of the page's top `height` CSS pixels (the whole page when shorter),
    only with SIGMATCH_SCREENSHOTS=1. Whether or not it is saved, the page must show no
    subscriber's number in full but `shows` (the one a user looked up)."""
    text = driver.find_element("tag name", "body").text
    shown = {n for n in re.findall(r"\d{7,}", text) if n in site.msisdns} - {shows}
    assert not shown, f"{name}: the page shows MSISDNs in full: {sorted(shown)[:3]}"
    if os.environ.get("SIGMATCH_SCREENSHOTS") != "1":
        return
    import base64
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # Chrome's DevTools capture beyond the window: one picture of the page however long it is
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], height), "scale": 1}})
    (SCREENSHOTS / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


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
    screenshot(browser, site, "login")
    log_in(browser, site, "ed", "not the password")
    assert "Wrong user name or password" in by_id(browser, "login-error").text
    log_in(browser, site, "ed")
    assert browser.current_url.endswith("/campaigns")
    assert "ed" in browser.find_element("css selector", "header .who").text
    assert "live" in by_id(browser, f"campaign-{EDITED}").text
    screenshot(browser, site, "campaigns")


def _open_edit(browser, site, cid=EDITED):
    browser.get(f"{site.url}/campaigns/{cid}/edit")
    return by_id(browser, "f-priority")


def _submit_priority(browser, value: str, why: str):
    field_ = by_id(browser, "f-priority")
    field_.clear()
    field_.send_keys(value)
    why_ = by_id(browser, "why")
    why_.clear()
    why_.send_keys(why)
    by_id(browser, "save").click()


def _refused(browser):
    """The priority's error on the form the save answered with: waited for, as the click
    returns before the answer has replaced the page."""
    return wait_for(browser, lambda d: all_css(d, "#error-priority"), "the form came back with its error")[0]


def test_an_invalid_value_is_shown_beside_its_field(browser, site):
    log_in(browser, site, "ed")
    _open_edit(browser, site)
    # (the first page that edits records the live file as the first version)
    before, versions = site.config.read_bytes(), versions_count(site)
    _submit_priority(browser, "very high", "try a word for a number")
    error = _refused(browser)
    assert error.text and "priority" in by_id(browser, "field-priority").text
    # beside its field: inside the field's own block, the value typed kept for the fix
    assert by_id(browser, "field-priority").find_element("id", "error-priority") == error
    assert "has-error" in by_id(browser, "field-priority").get_attribute("class")
    assert by_id(browser, "f-priority").get_attribute("value") == "very high"
    screenshot(browser, site, "edit-error", height=900)
    assert site.config.read_bytes() == before and versions_count(site) == versions


@pytest.fixture(scope="module")
def saved(browser, site):
    """ed's draft: EDITED's priority raised by 5, first refused with a bad value, then fixed."""
    log_in(browser, site, "ed")
    _open_edit(browser, site)
    _submit_priority(browser, "-", "first a typo")
    assert _refused(browser).text
    new = live_priority(site.config, EDITED) + 5
    _submit_priority(browser, str(new), "match top-up rescue before the welcome offers")
    wait_for(browser, lambda d: re.search(r"/versions/\d+$", d.current_url), "the save went to its version page")
    return int(browser.current_url.rsplit("/", 1)[1]), new


def test_fix_it_and_save(browser, site, saved):
    vid, new = saved
    assert by_id(browser, "version-state").text == "draft"
    assert by_id(browser, "version-why").text == "match top-up rescue before the welcome offers"
    assert str(new) in by_id(browser, "against-parent").text
    # saved is not live: only an approval writes the live file
    assert live_priority(site.config, EDITED) == new - 5
    # its author may not approve it, whatever their role
    assert not all_css(browser, "#approve")
    browser.get(f"{site.url}/versions")
    assert by_id(browser, f"version-{vid}")
    screenshot(browser, site, "versions")


def test_a_second_user_approves_and_the_service_reloads(browser, site, saved):
    vid, new = saved
    log_in(browser, site, "ann", then=f"/versions/{vid}")
    screenshot(browser, site, "version")
    side_by_side = all_css(browser, "a[href^='/diff?']")[-1].get_attribute("href")
    reloads = site.daemon_log.read_text().count("reloaded")
    by_id(browser, "approve").click()
    wait_for(browser, lambda d: by_id(d, "version-state").text == "live", "the version went live")
    assert live_priority(site.config, EDITED) == new
    assert live_priority(site.config.with_name(site.config.name + ".prev"), EDITED) == new - 5

    def reloaded(driver):
        driver.get(f"{site.url}/versions/{vid}")
        cells = all_css(driver, "#reload-result")
        return cells and "reloaded" in cells[0].text
    wait_for(browser, reloaded, "the version page never showed the service's reload")
    # the service's own word: its log says it reloaded the file, and it runs on
    assert site.daemon_log.read_text().count("reloaded") == reloads + 1
    assert site.daemon.poll() is None
    browser.get(side_by_side)
    assert EDITED in by_id(browser, "diff").text and str(new) in by_id(browser, "diff").text
    screenshot(browser, site, "diff")


def test_simulate_a_draft_and_read_the_result(browser, site):
    # pausing the campaign that sends most: the simulation must show its contacts lost
    paused = max(site.sends, key=site.sends.get)
    log_in(browser, site, "ed", then="/configuration")
    assert by_id(browser, "new-campaign")           # what a viewer's page lacks (test_a_viewer_cannot_edit)
    row = by_id(browser, f"edit-{paused}")
    row.find_element("css selector", "input[name=why]").send_keys("what does it bring?")
    next(b for b in row.find_elements("css selector", "button") if b.text.strip() == "Pause").click()
    wait_for(browser, lambda d: re.search(r"/versions/\d+$", d.current_url), "the pause was saved")
    vid = int(browser.current_url.rsplit("/", 1)[1])
    by_id(browser, "simulate").click()
    wait_for(browser, lambda d: all_css(d, "#simulate-form"), "the simulation form")
    by_id(browser, "simulate").click()
    wait_for(browser, lambda d: re.search(r"/simulations/\d+$", d.current_url), "the simulation was queued")
    sim = int(browser.current_url.rsplit("/", 1)[1])
    # the page refreshes itself (no JavaScript) until the what-if is done
    wait_for(browser, lambda d: all_css(d, "#status-value") and by_id(d, "status-value").text in
             ("done", "failed", "cancelled"), "the simulation never finished", timeout=120)
    assert by_id(browser, "status-value").text == "done", browser.find_element("tag name", "main").text
    cells = [c.text.replace(",", "") for c in by_id(browser, f"campaign-{paused}").find_elements("tag name", "td")]
    # campaign, channel, live, version, gained, lost, net
    live, version, lost = int(cells[2]), int(cells[3]), int(cells[5])
    assert live > 0 and version == 0 and lost == live
    assert by_id(browser, "summary").text
    assert all_css(browser, f"h1 a[href='/versions/{vid}']")        # of the version just saved
    screenshot(browser, site, "simulation")
    # the approver sees the latest simulation of the version they are asked to approve
    log_in(browser, site, "ann", then=f"/versions/{vid}")
    latest = by_id(browser, "simulation").text
    assert f"simulation {sim}" in latest and "done" in latest and all_css(browser, "#approve")


def test_watch_shows_the_live_funnel(browser, site):
    log_in(browser, site, "vic", then="/watch")
    busiest = max(site.sends, key=site.sends.get)
    assert busiest in by_id(browser, "funnel").text
    screenshot(browser, site, "watch")


def test_look_up_a_subscriber(browser, site):
    log_in(browser, site, "vic", then="/policy")
    by_id(browser, "msisdn").send_keys(site.contacted)
    by_id(browser, "look-up").click()
    wait_for(browser, lambda d: all_css(d, "#subscriber") or all_css(d, "#lookup-problem"), "the lookup answered")
    assert site.contacted in by_id(browser, "subscriber").text
    assert by_id(browser, "contacts").text
    screenshot(browser, site, "policy", shows=site.contacted)
    # the lookup is personal data: in the audit trail with who, never with the whole number
    browser.get(f"{site.url}/audit")
    trail = browser.find_element("tag name", "main").text
    assert "lookup" in trail and "vic" in trail and site.contacted not in trail
    assert site.contacted not in site.console_log.read_text()


def test_a_viewer_cannot_edit(browser, site):
    log_in(browser, site, "vic", then=f"/campaigns/{EDITED}/edit")
    assert not by_id(browser, "save").is_enabled()
    browser.get(f"{site.url}/configuration")
    assert not all_css(browser, "#new-campaign") and not all_css(browser, f"#edit-{EDITED} form")
    # the server refuses it too: the viewer's own session and form token, posted anyway
    browser.get(f"{site.url}/campaigns/{EDITED}/edit")
    token, base = form_token(browser), all_css(browser, "input[name=base]")[0].get_attribute("value")
    before, versions = site.config.read_bytes(), versions_count(site)
    with session_of(browser, site) as client:
        answer = client.post(f"/campaigns/{EDITED}/edit", data={"csrf_token": token, "base": base,
                                                                "priority": "1", "why": "a viewer tries"})
    assert answer.status_code == 403 and "viewer" in answer.text
    assert site.config.read_bytes() == before and versions_count(site) == versions


def test_a_cross_site_post_without_the_token_is_refused(browser, site):
    log_in(browser, site, "ann", then=f"/campaigns/{EDITED}/edit")
    token, base = form_token(browser), all_css(browser, "input[name=base]")[0].get_attribute("value")
    before, versions = site.config.read_bytes(), versions_count(site)
    # another site's page, in the browser where the approver is logged in, posts a form to the console
    evil = (f'<form method="post" action="{site.url}/campaigns/{EDITED}/edit" id="evil">'
            '<input name="priority" value="1"><input name="why" value="cross-site">'
            f'<input name="base" value="{base}"><button id="go">go</button></form>')
    browser.get("data:text/html;charset=utf-8," + evil)
    by_id(browser, "go").click()
    wait_for(browser, lambda d: d.current_url.startswith(site.url), "the form was posted")
    assert "refused" in browser.find_element("tag name", "body").text or \
        "CSRF" in browser.find_element("tag name", "body").text
    with session_of(browser, site) as client:
        # the session cookie without the form's token
        no_token = client.post(f"/campaigns/{EDITED}/edit", data={"base": base, "priority": "1", "why": "no token"})
        # the right token, from another site
        other_site = client.post(f"/campaigns/{EDITED}/edit", headers={"Origin": "https://evil.example"},
                                 data={"csrf_token": token, "base": base, "priority": "1", "why": "other site"})
    assert no_token.status_code == 403 and "CSRF" in no_token.text
    assert other_site.status_code == 403 and "cross-site" in other_site.text
    assert site.config.read_bytes() == before and versions_count(site) == versions
    # and none of it logged ann out: the refusal set no session in place of hers
    browser.get(f"{site.url}/campaigns")
    assert browser.current_url.endswith("/campaigns") and "ann" in browser.find_element("css selector", "header .who").text
