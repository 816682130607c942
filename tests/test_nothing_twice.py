"""Nothing twice (issue 9): a replay into a directory that holds a run's output is refused,
`--overwrite` replaces it; `gen` refuses a non-empty directory without `--force`; `bench
--peers` without its extra says what to install."""
from __future__ import annotations

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
    second = replay(out)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        f"sigmatch: error: {out}: already holds a run's output (stats.json and {len(files) - 1:,} more); a second run "
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
