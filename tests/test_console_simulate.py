"""The console's simulations (issue 13 §4): a queue of `sigmatch diff LIVE DRAFT TRACE`
children, N at a time, their progress, results kept, cancelled on shutdown; then the pages
(simulate, watch, report, policy view)."""
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.closedloop.diff import _replay_side, build_diff
from engine.console.simulate import (_CHILD, MemorySimulationRecords, Simulation, SimulationError, SimulationQueue,
                                     _take_percent, latest_simulation, list_traces, resolve_trace)
from engine.world.gen import generate

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    generated = generate(tmp_path_factory.mktemp("world"), subscribers=1_500, events=15_000, campaigns=4, seed=3)
    traces = generated.directory / "traces"
    traces.mkdir()
    shutil.copy(generated.trace, traces / "monday.msgpack")
    return generated, traces


def without_campaign(text: str, index: int = 0) -> tuple[str, str]:
    """The configuration text without its index-th [[campaign]], and that campaign's id."""
    blocks = text.split("[[campaign]]")
    removed = blocks[1 + index].split("id", 1)[1].split('"')[1]
    return "[[campaign]]".join(blocks[:1 + index] + blocks[2 + index:]), removed


def wait_for(queue, simulation_id, statuses=("done", "failed", "cancelled"), timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        sim = queue.get(simulation_id)
        if sim.status in statuses:
            return sim
        assert time.monotonic() < deadline, f"simulation {simulation_id} still {sim.status}"
        time.sleep(0.05)


def hidden_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and "simulation" in p.name)


@pytest.fixture()
def stalling_python(tmp_path):
    """An 'interpreter' whose child never ends by itself (until a signal): simulations that
    stay running as long as a test needs."""
    script = tmp_path / "stall"
    script.write_text("#!/bin/sh\nexec sleep 600\n")
    script.chmod(0o755)
    return str(script)


# --------------------------------------------------------------------------- traces

def test_traces_are_the_msgpack_files_and_folders_of_the_trace_directory(world, tmp_path):
    generated, traces = world
    assert [t.name for t in list_traces(generated.directory)] == ["trace.msgpack", "traces"]
    (tmp_path / "day").mkdir()
    (tmp_path / "day" / "b.msgpack").write_bytes(b"\x90")
    (tmp_path / "day" / "a.msgpack").write_bytes(b"\x90\x90")
    (tmp_path / "notes.txt").write_text("not a trace")
    (tmp_path / ".hidden.msgpack").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    found = list_traces(tmp_path)
    assert [t.name for t in found] == ["day"]
    assert [p.name for p in found[0].paths] == ["a.msgpack", "b.msgpack"] and found[0].bytes == 3
    assert list_traces(None) == []


@pytest.mark.parametrize("name", ["../trace.msgpack", "/etc/passwd", ".hidden.msgpack", "notes.txt", "nope.msgpack"])
def test_a_trace_outside_the_list_is_refused(world, tmp_path, name):
    _, traces = world
    (traces / ".hidden.msgpack").write_bytes(b"")
    try:
        with pytest.raises(SimulationError, match="no trace"):
            resolve_trace(traces, name)
    finally:
        (traces / ".hidden.msgpack").unlink()
    with pytest.raises(SimulationError, match="--trace-dir"):
        resolve_trace(None, "monday.msgpack")
    with pytest.raises(SimulationError, match="--trace-dir .*gone: cannot be read"):
        resolve_trace(tmp_path / "gone", "monday.msgpack")


def test_progress_is_read_from_the_diff_progress_bar():
    assert _take_percent(b"replay:  42%|####      | 4.20M/10.0M [00:01<00:01, 3.1MB/s]") == 0.42
    assert _take_percent(b"replay: 100%|##########| 10.0M/10.0M") == 1.0
    assert _take_percent(b"sigmatch: warning: 12 events late") is None


# --------------------------------------------------------------------------- running them

def test_a_simulation_gives_the_diff_of_the_live_file_against_the_draft(world):
    generated, traces = world
    live_text = generated.config.read_text()
    draft_text, removed = without_campaign(live_text)
    records = MemorySimulationRecords()
    with SimulationQueue(records, generated.config, traces) as queue:
        sim_id = queue.submit(version_id=7, draft_text=draft_text, trace="monday.msgpack", author="ana")
        sim = wait_for(queue, sim_id)
    assert sim.status == "done", sim.error
    assert sim.progress == 1.0 and sim.error is None
    assert sim.live_sha256 == hashlib.sha256(live_text.encode()).hexdigest()
    assert sim.draft_sha256 == hashlib.sha256(draft_text.encode()).hexdigest()
    assert sim.started >= sim.created and sim.finished >= sim.started
    document = sim.result
    assert document["a"]["config"] == "live" and document["b"]["config"] == "version 7"
    assert document["traces"] == ["monday.msgpack"]
    # the same comparison as `sigmatch diff` makes of the two files
    draft = generated.config.parent / "draft-for-test.toml"
    draft.write_text(draft_text)
    try:
        # both sides as diff's processes replay them, in this process
        a, b = (_replay_side(str(config), [str(traces / "monday.msgpack")], None, False, warn=False)
                for config in (generated.config, draft))
    finally:
        draft.unlink()
    expected = build_diff(a, b, traces=[traces / "monday.msgpack"])
    for key in ("total", "campaigns", "channels", "budgets", "taken", "days"):
        assert document[key] == json.loads(json.dumps(expected[key])), key
    assert document["campaigns"][removed]["in"] == "a"
    assert document["campaigns"][removed]["lost"] == document["campaigns"][removed]["contacts_a"] > 0
    # kept, and the newest of its version is what the approver sees
    assert latest_simulation(records, 7).result == document
    assert latest_simulation(records, 8) is None
    assert hidden_files(generated.config.parent) == []


def test_an_invalid_draft_fails_in_one_line_naming_the_key(world):
    generated, traces = world
    text = generated.config.read_text().replace("[policy]", "[policy]\nnope = 1", 1)
    with SimulationQueue(MemorySimulationRecords(), generated.config, traces) as queue:
        sim = wait_for(queue, queue.submit(version_id=1, draft_text=text, trace="monday.msgpack", author="ana"))
    assert sim.status == "failed" and sim.result is None
    assert "nope" in sim.error and "\n" not in sim.error
    assert "the draft" in sim.error and ".simulation-" not in sim.error
    assert hidden_files(generated.config.parent) == []


def test_simulations_wait_and_run_one_at_a_time_by_default(world):
    generated, traces = world
    live_text = generated.config.read_text()
    records = MemorySimulationRecords()
    with SimulationQueue(records, generated.config, traces) as queue:
        ids = [queue.submit(version_id=n, draft_text=without_campaign(live_text, n)[0], trace="monday.msgpack",
                            author="ana") for n in range(2)]
        sims = [wait_for(queue, i) for i in ids]
    assert [s.status for s in sims] == ["done"] * 2, [s.error for s in sims]
    for earlier, later in zip(sims, sims[1:]):
        assert later.started >= earlier.finished
    # each its own draft: the removed campaign differs
    assert len({next(c for c, v in s.result["campaigns"].items() if v["in"] == "a") for s in sims}) == 2


def test_two_slots_run_two_at_once(world, stalling_python):
    generated, traces = world
    text = generated.config.read_text()
    queue = SimulationQueue(MemorySimulationRecords(), generated.config, traces, slots=2, python=stalling_python)
    try:
        ids = [queue.submit(version_id=n, draft_text=text, trace="monday.msgpack", author="ana") for n in range(3)]
        wait_for(queue, ids[0], ("running",))
        wait_for(queue, ids[1], ("running",))
        third = queue.get(ids[2])
        assert third.status == "queued" and third.position == 0
    finally:
        queue.close()
    assert [queue.get(i).status for i in ids] == ["cancelled"] * 3


def test_cancel_a_queued_and_a_running_simulation(world, stalling_python):
    generated, traces = world
    text = generated.config.read_text()
    queue = SimulationQueue(MemorySimulationRecords(), generated.config, traces, python=stalling_python)
    try:
        first = queue.submit(version_id=1, draft_text=text, trace="monday.msgpack", author="ana")
        second = queue.submit(version_id=2, draft_text=text, trace="monday.msgpack", author="ana")
        wait_for(queue, first, ("running",))
        assert len(hidden_files(generated.config.parent)) == 2      # the running one's live and draft
        assert queue.get(second).position == 0
        assert queue.cancel(second) and queue.get(second).status == "cancelled"
        process = queue._jobs[first].process
        assert queue.cancel(first)
        assert wait_for(queue, first).status == "cancelled"
        assert process.poll() == -signal.SIGTERM
        assert not queue.cancel(first)
    finally:
        queue.close()
    assert hidden_files(generated.config.parent) == []


def test_closing_the_queue_ends_running_children_and_refuses_new_ones(world, stalling_python):
    generated, traces = world
    queue = SimulationQueue(MemorySimulationRecords(), generated.config, traces, python=stalling_python)
    sim = queue.submit(version_id=1, draft_text="", trace="monday.msgpack", author="ana")
    wait_for(queue, sim, ("running",))
    process = queue._jobs[sim].process
    queue.close()
    assert process.poll() is not None and queue.get(sim).status == "cancelled"
    with pytest.raises(SimulationError, match="stopping"):
        queue.submit(version_id=1, draft_text="", trace="monday.msgpack", author="ana")


def test_records_a_stopped_console_left_unfinished_are_failed_at_start(world):
    generated, traces = world
    records = MemorySimulationRecords()
    left = records.add_simulation(version_id=3, trace="monday.msgpack", author="ana", created=1.0)
    records.update_simulation(left, status="running", started=2.0)
    # the texts a console killed while it ran left beside the live file go (helper-123)
    folder, stem = generated.config.parent, generated.config.stem
    for kind in ("live.toml", "draft.toml", "draft.toml.part"):
        (folder / f".{stem}.simulation-{left}-{kind}").write_text("x = 1\n")
    other = folder / f".{stem}.simulation-{left + 1}-live.toml"    # not this record's: kept
    other.write_text("x = 1\n")
    SimulationQueue(records, generated.config, traces).close()
    record = records.get_simulation(left)
    assert record["status"] == "failed" and "stopped" in record["error"] and record["finished"] == 2.0
    assert hidden_files(folder) == [other.name]
    other.unlink()


def test_the_child_ends_when_the_console_is_gone(world):
    """The console killed with SIGKILL closes the child's standard input: the diff stops
    (SIGTERM to itself) instead of running on for the length of the trace."""
    generated, traces = world
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(generated.config), str(generated.config),
                             str(traces / "monday.msgpack")], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)          # closes its standard input first
    assert proc.returncode != 0 and out == b""
    # (with its standard input open it runs to the end: every simulation of the queue above)

# --------------------------------------------------------------------------- the service's side

@pytest.fixture(scope="module")
def service(world):
    """An engine part-way through the world's trace behind a real LookupServer and metrics,
    in this process: what `sigmatch run --lookup --metrics` serves. One subscriber watched."""
    import threading as _threading
    from engine import Engine
    from engine.service.lookup import LookupServer, policy_view
    from engine.service.metrics import DaemonMetrics
    generated, _ = world
    engine = Engine.from_config(generated.config)
    data = generated.trace.read_bytes()
    cut = len(data) // 45 // 2 * 45
    engine.replay(data[:cut])
    lock = _threading.Lock()
    watched_number = int(engine.subscribers[0])
    engine.watch([watched_number])
    engine.replay(data[cut:])

    def view(msisdn):
        with lock:
            return policy_view(engine, msisdn)

    def explain(msisdn, last):
        with lock:
            return engine.explanation(msisdn, last) if msisdn in engine.watched else None

    def watch(method, msisdn):
        with lock:
            watched = engine.watched
            if method == "GET":
                return 200, {"watched": [str(m) for m in watched]}
            if method == "PUT":
                if engine.subscriber_status(msisdn) == "unknown":
                    return 404, {"error": "not a subscriber"}
                engine.watch(watched + [msisdn])
                return 201, {"msisdn": str(msisdn), "watched": True}
            if msisdn not in watched:
                return 404, {"error": "not watched"}
            engine.watch([m for m in watched if m != msisdn])
            return 200, {"msisdn": str(msisdn), "watched": False}

    server = LookupServer(view, "127.0.0.1", 0, "sesame", explain=explain, watch=watch).start()
    metrics = DaemonMetrics(engine)
    metrics.observe(engine)
    host, port = metrics.serve("127.0.0.1", 0)
    yield {"engine": engine, "lookup": f"http://127.0.0.1:{server.address[1]}", "token": "sesame",
           "metrics": f"http://127.0.0.1:{port}/metrics", "metrics_object": metrics, "watched": watched_number}
    server.close()
    metrics.close()


def test_the_lookup_client_reads_the_policy_view_and_the_explanation(service):
    from engine.service.client import Lookup, LookupFailed
    engine = service["engine"]
    client = Lookup(service["lookup"], service["token"])
    number = int(engine.subscribers[1])
    view = client.subscriber(number)
    assert view["msisdn"] == str(number) and set(view["campaigns"]) == {c.id for c in engine.config.campaigns}
    assert client.subscriber(639999999999) is None
    assert client.explanation(number) is None                      # not watched
    explained = client.explanation(service["watched"], last=5)
    assert explained["msisdn"] == service["watched"] and len(explained["events"]) <= 5
    assert client.watch(number)["watched"] is True
    assert str(number) in client.watched()
    assert client.explanation(number)["events"] == []              # from now on
    assert client.unwatch(number)["watched"] is False and client.unwatch(number) is None
    with pytest.raises(LookupFailed, match="refused the token"):
        Lookup(service["lookup"], "wrong").subscriber(number)
    with pytest.raises(LookupFailed, match="cannot reach"):
        Lookup("http://127.0.0.1:9", "t", timeout=2).subscriber(number)
    with pytest.raises(LookupFailed, match="bearer token"):
        Lookup(service["lookup"], "")


def test_the_service_status_is_read_from_its_metrics(service, world):
    from engine.console.service import ScrapeFailed, metrics_url, reload_outcome, scrape
    generated, _ = world
    engine = service["engine"]
    status = scrape(service["metrics"])
    assert status.config_sha256 == hashlib.sha256(generated.config.read_bytes()).hexdigest()
    assert status.last_reload_success is True
    assert status.funnel == {cid: {k: v for k, v in f.items() if k in status.funnel[cid]}
                             for cid, f in engine.stats["campaigns"].items()}
    assert all(status.funnel[cid]["sent"] == f["sent"] for cid, f in engine.stats["campaigns"].items())
    assert status.events == engine._core.counts()["events"] and status.pending == engine.pending
    assert metrics_url("127.0.0.1:9464") == "http://127.0.0.1:9464/metrics"
    assert metrics_url("http://h:1/metrics") == "http://h:1/metrics"
    with pytest.raises(ScrapeFailed, match="cannot be read"):
        scrape("http://127.0.0.1:9", timeout=2)

    # what became of a SIGHUP: judged by the reload's time, result and sha256
    metrics, url, sha = service["metrics_object"], service["metrics"], status.config_sha256
    ticks = iter(range(10_000))
    fast = {"wait_s": 3, "poll_s": 0, "clock": lambda: next(ticks), "sleep": lambda s: None}
    assert reload_outcome(None, 0, sha).startswith("unknown: reload sent")
    sent = status.last_reload_at + 10
    assert reload_outcome(url, sent, sha, **fast).startswith("unknown: the service did not report")
    metrics.observe_reload(None, now=sent + 1)
    assert reload_outcome(url, sent, sha, **fast) == "rejected"
    metrics.observe_reload(engine, now=sent + 2)
    assert reload_outcome(url, sent, sha, **fast) == "succeeded"
    # a reload of another text than the one approved is not this approval's success
    assert reload_outcome(url, sent, "0" * 64, **fast).startswith("unknown")
    assert reload_outcome("http://127.0.0.1:9", sent, sha, **fast).startswith("unknown: --metrics")


# --------------------------------------------------------------------------- the pages

PASSWORD = "correct horse"


def token_of(client, path="/login") -> str:
    page = client.get(path).text
    marker = 'name="csrf_token" value="'
    start = page.index(marker) + len(marker)
    return page[start:page.index('"', start)]


def logged_in(app, name):
    from fastapi.testclient import TestClient
    client = TestClient(app, follow_redirects=False)
    answer = client.post("/login", data={"name": name, "password": PASSWORD, "next": "/",
                                         "csrf_token": token_of(client)})
    assert answer.status_code == 303, answer.text
    return client


@pytest.fixture(scope="module")
def output(world, tmp_path_factory):
    """The world's trace replayed into an output directory (a folder of its own: the report
    page offers the output directories beside it)."""
    from engine import Engine
    generated, _ = world
    out = tmp_path_factory.mktemp("outputs") / "out"
    Engine.from_config(generated.config).replay(generated.trace, out=out, drain=True)
    return out


@pytest.fixture()
def console(world, service, output, tmp_path):
    """The console on the world's live file, its traces, an output directory and the service."""
    pytest.importorskip("fastapi")
    from engine.console.app import create_app
    from engine.console.auth import hash_password
    from engine.console.settings import Settings
    generated, traces = world
    out = output
    (tmp_path / "data").mkdir()
    settings = Settings(config=generated.config, data=tmp_path / "data", trace_dir=traces, out=out,
                        lookup=service["lookup"], lookup_token=service["token"], metrics=service["metrics"])
    from engine.console.store import Store
    # a store of the test's: the app's shutdown closes only what it opened itself
    app = create_app(settings, store=Store(settings.database))
    for name, role in (("vera", "viewer"), ("ed", "editor"), ("ann", "approver")):
        app.state.store.add_user(name, role, hash_password(PASSWORD))
    yield app
    app.state.simulations.close()


def add_version(store, text, author="ed", why="fewer campaigns", line=None) -> int:
    return store.execute("INSERT INTO versions (line, author, created_at, why, text, sha256, state) "
                         "VALUES (?, ?, '2026-11-30T12:00:00Z', ?, ?, ?, 'draft')",
                         (line, author, why, text, hashlib.sha256(text.encode()).hexdigest()))


def test_simulate_a_version_from_its_page_and_read_the_result(console, world):
    from engine.console.pages.simulate import latest_for
    generated, _ = world
    draft_text, removed = without_campaign(generated.config.read_text())
    version = add_version(console.state.store, draft_text)
    ed = logged_in(console, "ed")
    page = ed.get(f"/simulations?version={version}")
    assert page.status_code == 200
    assert f'<option value="{version}" selected' in page.text and "monday.msgpack" in page.text
    answer = ed.post("/simulations", data={"version": version, "trace": "monday.msgpack",
                                           "csrf_token": token_of(ed, "/simulations")})
    assert answer.status_code == 303
    location = answer.headers["location"]
    sim_id = int(location.rsplit("/", 1)[1])
    # the page refreshes itself while it waits or runs
    deadline = time.monotonic() + 120
    while True:
        page = ed.get(location)
        assert page.status_code == 200
        if 'http-equiv="refresh"' not in page.text:
            break
        assert 'id="progress"' in page.text or "waiting" in page.text
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert 'id="status-value">done<' in page.text, page.text
    assert f'id="campaign-{removed}"' in page.text and "only live" in page.text
    assert f"B drops campaign {removed}" in page.text
    assert 'id="campaign-days"' in page.text and 'id="budgets"' in page.text and 'id="taken"' in page.text
    # what the versions page shows the approver
    latest = latest_for(console.state.store, version)
    assert latest.id == sim_id and latest.status == "done"
    assert latest.result["campaigns"][removed]["in"] == "a"
    # listed, and in the audit trail
    assert f'id="simulation-{sim_id}"' in ed.get("/simulations").text
    entries = console.state.store.audit_entries(action="simulate")
    assert entries[0]["user"] == "ed" and entries[0]["target"] == f"version {version}"


def test_a_viewer_cannot_simulate_and_a_trace_outside_the_list_is_refused(console, world):
    generated, _ = world
    version = add_version(console.state.store, generated.config.read_text())
    vera = logged_in(console, "vera")
    assert 'id="simulate-form"' not in vera.get("/simulations").text
    refused = vera.post("/simulations", data={"version": version, "trace": "monday.msgpack",
                                              "csrf_token": token_of(vera, "/simulations")})
    assert refused.status_code == 403
    ed = logged_in(console, "ed")
    answer = ed.post("/simulations", data={"version": version, "trace": "../trace.msgpack",
                                           "csrf_token": token_of(ed, "/simulations")})
    assert answer.status_code == 303 and "simulations?version=" in answer.headers["location"]
    assert "no trace" in ed.get(answer.headers["location"]).text
    assert ed.post("/simulations", data={"version": 999, "trace": "monday.msgpack",
                                         "csrf_token": token_of(ed, "/simulations")}).status_code == 404
    assert ed.get("/simulations/999").status_code == 404
    # no CSRF token: refused before anything runs
    assert ed.post("/simulations", data={"version": version, "trace": "monday.msgpack"}).status_code == 403
    assert console.state.store.query("SELECT count(*) AS n FROM simulations")[0]["n"] == 0


def test_the_dashboard_shows_the_live_funnel_and_what_is_live(console, service, world):
    generated, _ = world
    engine = service["engine"]
    vera = logged_in(console, "vera")
    page = vera.get("/watch")
    assert page.status_code == 200 and 'http-equiv="refresh"' in page.text
    assert "read from metrics" in page.text
    for cid, f in engine.stats["campaigns"].items():
        row = page.text.split(f'id="funnel-{cid}"', 1)[1].split("</tr>", 1)[0]
        assert f'<td class="n">{f["matched"]:,}</td>' in row and f'<td class="n">{f["sent"]:,}</td>' in row
    assert "the live file</span>" in page.text and "succeeded" in page.text
    # without the service: stats.json of --out
    import dataclasses
    from engine.console.pages.watch import live_funnel
    settings = dataclasses.replace(console.state.settings, metrics=None)
    funnel = live_funnel(settings)
    stats = json.loads((settings.out / "stats.json").read_text())
    assert funnel.source == "stats.json" and not funnel.problems
    assert {r["id"]: r["sent"] for r in funnel.rows} == {c: e["sent"] for c, e in stats["campaigns"].items()}
    # a service that cannot be reached is said, and stats.json stands in
    funnel = live_funnel(dataclasses.replace(console.state.settings, metrics="http://127.0.0.1:9/metrics"))
    assert funnel.source == "stats.json" and any("cannot be read" in p for p in funnel.problems)


def test_the_report_of_an_output_directory(console, world, tmp_path):
    vera = logged_in(console, "vera")
    out = console.state.settings.out
    # a directory beside --out that is no sigmatch output is not offered; one that is, is
    (out.parent / "notes").mkdir(exist_ok=True)
    other = out.parent / "out-last-week"
    shutil.copytree(out, other, dirs_exist_ok=True)
    page = vera.get("/reports")
    assert 'href="/reports/out"' in page.text and 'href="/reports/out-last-week"' in page.text
    assert "/reports/notes" not in page.text
    page = vera.get("/reports/out")
    assert page.status_code == 200, page.text
    assert 'id="uplift"' in page.text and 'id="programme"' in page.text
    assert 'id="plot-funnel"' in page.text and "data:image/png;base64," in page.text
    stats = json.loads((out / "stats.json").read_text())
    for cid in stats["campaigns"]:
        assert f"<td>{cid}</td>" in page.text
    for name in ("notes", "%2Fetc%2Fpasswd", "out%2F..%2Fnotes", "..%2F..%2Fetc"):
        assert vera.get(f"/reports/{name}").status_code == 404


def test_the_policy_view_of_one_subscriber(console, service):
    from engine.service.lookup import policy_view
    engine = service["engine"]
    vera = logged_in(console, "vera")          # a viewer at the shop's counter may look up
    watched = service["watched"]
    # another subscriber, one with a contact when there is one
    others = [int(m) for m in engine.subscribers[1:200]]
    number = next((m for m in others if policy_view(engine, m)["contact_policy"]["last_contact"] is not None),
                  others[0])
    page = vera.post("/policy", data={"msisdn": f"+{number}", "csrf_token": token_of(vera, "/policy")})
    assert page.status_code == 200, page.text
    view = policy_view(engine, number)
    assert f"Subscriber {number}" in page.text
    for cid in view["eligible"]:
        assert f'id="eligible-{cid}"' in page.text
    for cid, c in view["campaigns"].items():
        if not c["eligible"]:
            row = page.text.split(f'id="blocked-{cid}"', 1)[1].split("</tr>", 1)[0]
            assert "; ".join(c["blocked_by"]).replace(">", "&gt;").replace("<", "&lt;") in row
    assert 'id="not-watched"' in page.text
    # the lookup is audited with the user, the number masked
    entry = console.state.store.audit_entries(action="lookup")[0]
    assert entry["user"] == "vera" and str(number) not in entry["target"] and entry["target"][:3] == str(number)[:3]
    # a watched one: its events explained, and no other number in full
    page = vera.post("/policy", data={"msisdn": str(watched), "csrf_token": token_of(vera, "/policy")})
    assert 'id="explanation"' in page.text and f"subscriber {watched}" in page.text
    explanation = page.text.split('id="explanation">', 1)[1].split("</pre>", 1)[0]
    import re
    # (its own numbers, cells and seqs, are kept: 'cell 256*8962' was no one's number)
    runs = set(re.findall(r"(?<![\w.])\d{7,}(?![\w.])", explanation))
    others = {str(int(m)) for m in service["engine"].subscribers} - {str(watched)}
    assert str(watched) in runs and not runs & others
    # start watching: then explained (from now on: no entry yet)
    page = vera.post("/policy/watch", data={"msisdn": str(number), "csrf_token": token_of(vera, "/policy")})
    assert 'id="explanation"' in page.text
    assert console.state.store.audit_entries(action="watch")[0]["user"] == "vera"
    from engine.service.client import Lookup
    Lookup(service["lookup"], service["token"]).unwatch(number)


def test_the_policy_view_refuses_what_is_no_number_and_says_what_is_no_subscriber(console):
    ed = logged_in(console, "ed")
    page = ed.post("/policy", data={"msisdn": "12ab", "csrf_token": token_of(ed, "/policy")})
    assert page.status_code == 400 and 'id="msisdn-error"' in page.text and "not an MSISDN" in page.text
    page = ed.post("/policy", data={"msisdn": "639999999999", "csrf_token": token_of(ed, "/policy")})
    assert page.status_code == 404 and "not a subscriber" in page.text
    # no lookup configured, or a wrong token: one line, no traceback
    import dataclasses
    console.state.settings = dataclasses.replace(console.state.settings, lookup_token="wrong")
    page = ed.post("/policy", data={"msisdn": "639999999999", "csrf_token": token_of(ed, "/policy")})
    assert page.status_code == 502 and "refused the token" in page.text
    console.state.settings = dataclasses.replace(console.state.settings, lookup=None)
    page = ed.post("/policy", data={"msisdn": "639999999999", "csrf_token": token_of(ed, "/policy")})
    assert page.status_code == 502 and "without --lookup" in page.text
    # no CSRF token: refused
    assert ed.post("/policy", data={"msisdn": "639999999999"}).status_code == 403


def test_stopping_the_console_ends_its_simulations(console, world, stalling_python):
    """The server's shutdown (uvicorn's lifespan) closes the queue: a running child ended,
    the simulation marked cancelled."""
    from fastapi.testclient import TestClient
    from engine.console.pages.simulate import simulation_queue
    generated, _ = world
    version = add_version(console.state.store, generated.config.read_text())
    with TestClient(console):
        queue = simulation_queue(console)
        queue.python = stalling_python
        sim = queue.submit(version_id=version, draft_text="", trace="monday.msgpack", author="ed")
        wait_for(queue, sim, ("running",))
        process = queue._jobs[sim].process
    assert process.poll() is not None
    assert console.state.store.query("SELECT state FROM simulations WHERE id = ?", (sim,))[0]["state"] == "cancelled"


def test_simulations_are_kept_in_the_console_store(tmp_path):
    """StoreSimulationRecords on the store's simulations table: what the queue writes reads
    back the same, times to the second, results as documents."""
    from engine.console.simulate import StoreSimulationRecords
    from engine.console.store import Store
    store = Store(tmp_path / "console.db")
    version = store.execute("INSERT INTO versions (author, created_at, why, text, sha256) "
                            "VALUES ('ed', '2026-11-30T12:00:00Z', 'why', 'x', 'y')")
    records = StoreSimulationRecords(store)
    first = records.add_simulation(version_id=version, trace="monday.msgpack", author="ed", created=1_800_000_000.4)
    second = records.add_simulation(version_id=version, trace="tuesday.msgpack", author="ann", created=1_800_000_100.0)
    records.update_simulation(first, status="running", started=1_800_000_001.0, progress=0.25)
    assert records.get_simulation(first)["status"] == "running" and records.get_simulation(first)["progress"] == 0.25
    records.update_simulation(first, status="done", finished=1_800_000_009.0, result={"total": {"gained": 3}})
    got = records.get_simulation(first)
    assert got["created"] == 1_800_000_000 and got["started"] == 1_800_000_001 and got["finished"] == 1_800_000_009
    assert got["author"] == "ed" and got["version_id"] == version and got["trace"] == "monday.msgpack"
    assert Simulation.of(got).result == {"total": {"gained": 3}} and Simulation.of(got).progress == 1.0
    assert [r["id"] for r in records.list_simulations()] == [second, first]
    assert [r["id"] for r in records.list_simulations(version, limit=1)] == [second]
    assert records.get_simulation(999) is None
    with pytest.raises(ValueError, match="not a field"):
        records.update_simulation(first, author="mallory")
    assert latest_simulation(records, version).id == second


@pytest.fixture()
def stubborn_python(tmp_path, monkeypatch):
    """An 'interpreter' whose child ignores SIGTERM: a cancelled simulation that takes a
    while to stop (SIGKILL comes STOP_GRACE_S later, made 1 s here)."""
    from engine.console import simulate
    monkeypatch.setattr(simulate, "STOP_GRACE_S", 1.0)
    script = tmp_path / "stubborn"
    script.write_text("#!/bin/sh\ntrap '' TERM\nexec sleep 600\n")
    script.chmod(0o755)
    return str(script)


def test_a_cancelled_simulation_shows_cancelling_until_its_child_stops(console, world, stubborn_python):
    """helper-132: straight after a cancel the page said "simulation N cancelled" above
    "Status: running | starting" and a Cancel button."""
    from engine.console.pages.simulate import simulation_queue
    generated, _ = world
    version = add_version(console.state.store, generated.config.read_text())
    queue = simulation_queue(console)
    queue.python = stubborn_python
    sim = queue.submit(version_id=version, draft_text="", trace="monday.msgpack", author="ed")
    wait_for(queue, sim, ("running",))
    ed = logged_in(console, "ed")
    page = ed.get(f"/simulations/{sim}").text
    assert 'id="cancel"' in page
    answer = ed.post(f"/simulations/{sim}/cancel", data={"csrf_token": token_of(ed, f"/simulations/{sim}")})
    assert answer.status_code == 303
    page = ed.get(f"/simulations/{sim}").text
    assert queue.get(sim).status == "cancelling"
    assert 'id="status-value">cancelling<' in page and "is being cancelled" in page, page
    assert 'id="cancel"' not in page and 'id="progress"' not in page and 'http-equiv="refresh"' in page
    row = ed.get("/simulations").text.split(f'id="simulation-{sim}"', 1)[1].split("</tr>", 1)[0]
    assert ">cancelling<" in row
    assert wait_for(queue, sim).status == "cancelled"
    page = ed.get(f"/simulations/{sim}").text
    assert 'id="status-value">cancelled<' in page and 'http-equiv="refresh"' not in page


def test_the_live_version_is_not_simulated_against_itself(console, world):
    """helper-132: a post naming the live version started a simulation, though the form
    offers only versions that are not live."""
    from engine.console.versions import Versions
    generated, _ = world
    live = Versions(console.state.store, generated.config).baseline()["id"]
    ed = logged_in(console, "ed")
    page = ed.get(f"/simulations?version={live}").text
    assert f'<option value="{live}"' not in page
    answer = ed.post("/simulations", data={"version": live, "trace": "monday.msgpack",
                                           "csrf_token": token_of(ed, "/simulations")})
    assert answer.status_code == 303 and answer.headers["location"] == "/simulations"
    assert f"version {live} is the live configuration" in ed.get("/simulations").text
    assert console.state.store.query("SELECT count(*) AS n FROM simulations")[0]["n"] == 0


def test_a_live_file_that_is_not_utf8_is_said_as_every_page_says_it(console, world):
    """helper-136: a simulation asked while the live file held bytes that are not UTF-8
    flashed Python's words ('utf-8' codec can't decode byte 0xff ...)."""
    generated, _ = world
    draft_text, _ = without_campaign(generated.config.read_text())
    version = add_version(console.state.store, draft_text)
    ed = logged_in(console, "ed")
    token = token_of(ed, "/simulations")
    kept = generated.config.read_bytes()
    try:
        generated.config.write_bytes(b"# a\xff\n" + kept)
        answer = ed.post("/simulations", data={"version": version, "trace": "monday.msgpack", "csrf_token": token})
        page = ed.get(answer.headers["location"]).text
    finally:
        generated.config.write_bytes(kept)
    assert answer.status_code == 303 and "simulations?version=" in answer.headers["location"]
    assert "line 1: not UTF-8 text (byte 4 of the line)" in page and "codec" not in page
    assert console.state.store.query("SELECT count(*) AS n FROM simulations")[0]["n"] == 0
