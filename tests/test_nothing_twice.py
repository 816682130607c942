"""Nothing twice (issue 9): a replay into a directory that holds a run's output is refused,
`--overwrite` replaces it; `gen` refuses a non-empty directory without `--force`; `bench
--peers` without its extra says what to install."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "crbt_school"


def sigmatch(*args, prelude: str = "") -> subprocess.CompletedProcess:
    code = f"{prelude}\nfrom engine.cli import main\nmain()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def replay(out: Path, *extra) -> subprocess.CompletedProcess:
    return sigmatch("replay", EXAMPLE / "campaigns.toml", EXAMPLE / "trace.msgpack", "--out", out, *extra)


def test_a_second_replay_into_the_same_output_is_refused(tmp_path):
    out = tmp_path / "out"
    first = replay(out)
    assert first.returncode == 0, first.stderr
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    output = [p for p in files if p.name != ".sigmatch-out.lock"]       # the replay's lock, released
    second = replay(out)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        f"sigmatch: error: {out}: already holds a run's output (stats.json and {len(output) - 1:,} more); a second run "
        "would number its actions from 1 again and the gateway would send them twice: give a new --out, or "
        "--overwrite to replace the earlier run"]
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == files


def test_overwrite_replaces_the_earlier_run_with_the_same_files(tmp_path):
    out = tmp_path / "out"
    assert replay(out).returncode == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.csv")}
    (out / "sms" / "actions-00000099.csv").write_text("stale\n")
    (out / "notes.txt").write_text("the operator's own file\n")
    again = replay(out, "--overwrite")
    assert again.returncode == 0, again.stderr
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.csv")}
    assert after == before
    assert (out / "notes.txt").read_text() == "the operator's own file\n"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_unfinished_files_of_a_replay_killed_part_way_are_replaced_by_the_rerun(tmp_path, workers):
    """helper-116: after `kill -9` of replay the folder held only .tmp files, and the rerun was
    refused as if the gateway had had them ("popup/.actions-00000001.csv.tmp and 43 more")."""
    out, reference = tmp_path / "out", tmp_path / "reference"
    assert replay(reference).returncode == 0
    (out / "sms").mkdir(parents=True)
    (out / "sms" / ".actions-00000001.csv.tmp").write_text("seq,ts\n1,")
    (out / "sms" / ".actions-00000002.csv.tmp").write_text("")
    again = replay(out, "--workers", workers)
    assert again.returncode == 0, again.stderr
    assert (f"{out}: 2 unfinished files of a run cut short (sms/.actions-00000001.csv.tmp ...): replaced by this run"
            in again.stderr), again.stderr
    assert not list(out.rglob("*.tmp"))
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*.csv")} == \
        {p.relative_to(reference): p.read_bytes() for p in reference.rglob("*.csv")}


def test_one_finished_file_is_an_earlier_run_and_named_alone(tmp_path):
    out = tmp_path / "out"
    (out / "sms").mkdir(parents=True)
    (out / "sms" / "actions-00000001.csv").write_text("seq\n")
    (out / "sms" / ".actions-00000002.csv.tmp").write_text("")
    refused = replay(out)
    assert refused.returncode == 1
    assert f"already holds a run's output (sms/actions-00000001.csv and 1 more)" in refused.stderr
    (out / "sms" / ".actions-00000002.csv.tmp").unlink()
    refused = replay(out)
    assert f"already holds a run's output (sms/actions-00000001.csv); a second run" in refused.stderr, refused.stderr


def test_an_output_directory_without_a_run_is_used(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README").write_text("x")
    assert replay(out).returncode == 0


def test_gen_refuses_a_non_empty_directory_without_force(tmp_path):
    world = tmp_path / "w"
    world.mkdir()
    (world / "campaigns.toml").write_text("# my own campaigns\n")
    refused = sigmatch("gen", world, "--subscribers", "200", "--events", "1000")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (f"sigmatch: error: {world}: not empty; gen would replace its campaigns.toml "
                                      "and data: give an empty or new directory, or --force")
    assert (world / "campaigns.toml").read_text() == "# my own campaigns\n"
    forced = sigmatch("gen", world, "--subscribers", "200", "--events", "1000", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "[[campaign]]" in (world / "campaigns.toml").read_text()


def test_bench_peers_without_the_extra_names_it(tmp_path):
    done = sigmatch("bench", "--peers", "--dir", tmp_path, prelude="import sys; sys.modules['duckdb'] = None")
    assert done.returncode == 1
    assert done.stderr.strip() == "sigmatch: error: bench --peers needs DuckDB: pip install 'sigmatch[bench]'"


# --- one service per state directory; mistakes said before anything is created

def _daemon(config: Path, tmp_path: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(config), "--out", str(tmp_path / "out"),
                             "--state", str(tmp_path / "state"), *map(str, args)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_lock(proc: subprocess.Popen, state: Path) -> None:
    """Until the service holds its state lock: its signal handlers are in place by then (a
    SIGTERM before them would kill the interpreter, not stop the service)."""
    import time
    deadline = time.monotonic() + 120
    def held() -> bool:
        return (state / "lock").exists() and (state / "lock").read_text().strip() == str(proc.pid)

    while not held():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_second_service_on_one_state_directory_exits_at_once_naming_the_first(tmp_path):
    import time
    spool = tmp_path / "spool"
    spool.mkdir()
    first = _daemon(EXAMPLE / "campaigns.toml", tmp_path, "--spool", spool)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "state" / "lock").exists() or not (tmp_path / "state" / "lock").read_text().strip():
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = _daemon(EXAMPLE / "campaigns.toml", tmp_path, "--spool", spool)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 1
        assert err.strip().splitlines()[-1] == (f"sigmatch: error: --state {tmp_path / 'state'}: state directory in "
                                                f"use by PID {first.pid}")
    finally:
        first.terminate()
        first.communicate(timeout=120)
    assert first.returncode == 0
    # the lock goes with its process: a later service starts
    again = _daemon(EXAMPLE / "campaigns.toml", tmp_path, "--spool", spool)
    _wait_for_lock(again, tmp_path / "state")
    again.terminate()
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err


def test_a_missing_spool_is_said_before_anything_is_created(tmp_path):
    done = _daemon(EXAMPLE / "campaigns.toml", tmp_path, "--spool", tmp_path / "nowhere")
    _, err = done.communicate(timeout=120)
    assert done.returncode == 1
    assert err.strip() == f"sigmatch: error: --spool {tmp_path / 'nowhere'}: no such directory"
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()


@pytest.mark.parametrize("option", ["--listen", "--metrics", "--lookup"])
def test_a_port_in_use_is_said_before_anything_is_created_naming_the_option(tmp_path, option):
    import socket
    spool = tmp_path / "spool"
    spool.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        extra = ("--lookup-token", "t") if option == "--lookup" else ()
        done = _daemon(EXAMPLE / "campaigns.toml", tmp_path, "--spool", spool, option, f"127.0.0.1:{port}", *extra)
        _, err = done.communicate(timeout=120)
    assert done.returncode == 1
    assert err.strip() == f"sigmatch: error: {option} 127.0.0.1:{port}: address in use"
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()


def test_the_service_says_when_it_starts_and_stops_at_the_default_level(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    proc = _daemon(EXAMPLE / "campaigns.toml", tmp_path, "--spool", spool)
    _wait_for_lock(proc, tmp_path / "state")
    proc.terminate()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = err.strip().splitlines()
    assert any(f"started: reading spool {spool}; output {tmp_path / 'out'}; state {tmp_path / 'state'}" in line
               for line in lines), err
    assert "stopped: checkpoint written, 0 pending actions kept" in lines[-1]


def test_a_sigterm_while_the_profiles_load_is_a_clean_stop(tmp_path):
    """Arrow's CSV reader puts in SIGINT/SIGTERM handlers of its own while it reads; the service
    turns them off, so a SIGTERM during the profiles' load is the usual stop, after the load
    (it was 'cannot read profiles: Operation cancelled', exit 1)."""
    import shutil
    example = tmp_path / "example"
    shutil.copytree(EXAMPLE, example)
    with (example / "profiles.csv").open("a") as f:     # long enough to be inside the read
        f.writelines(f"{13_900_000_000 + i},50,prepaid,basic_18,\n" for i in range(2_000_000))
    spool = tmp_path / "spool"
    spool.mkdir()
    service = _daemon(example / "campaigns.toml", tmp_path, "--spool", spool)
    _wait_for_lock(service, tmp_path / "state")
    import time
    # one SIGTERM every 20 ms until it ends: some land inside the read whatever the machine's pace
    deadline = time.monotonic() + 120
    while service.poll() is None and time.monotonic() < deadline:
        service.terminate()
        time.sleep(0.02)
    _, err = service.communicate(timeout=300)
    # the service stopped as it stops; a SIGTERM of the loop that lands after it has put the
    # default handlers back, on its way out, ends the interpreter (-15): nothing is lost then
    assert "stopped: checkpoint written" in err and "cancelled" not in err.lower(), err
    assert service.returncode in (0, -signal.SIGTERM), err
