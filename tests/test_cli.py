"""The `sigmatch` command: exit codes, one-line errors, output."""
import subprocess
import sys

import pytest
from click.testing import CliRunner

from bench.workloads import build_world
from engine.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    directory = tmp_path_factory.mktemp("world")
    return build_world(directory, subscribers=2_000, events=20_000, campaigns=4, seed=5)


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output, result.stderr if hasattr(result, "stderr") else ""


def test_replay(world, tmp_path):
    config, trace = world
    code, out, _ = run("replay", config, trace, "--out", tmp_path / "out")
    assert code == 0, out
    assert "20,000 events" in out
    assert "campaign" in out and "bench_000_peer_school" in out
    assert (tmp_path / "out" / "stats.json").is_file()


def test_check(world):
    config, _ = world
    code, out, _ = run("check", config)
    assert code == 0, out
    assert "ok" in out and "subscribers: 2,000" in out


@pytest.mark.parametrize("problem", ["missing_config", "missing_trace", "bad_config", "corrupt"])
def test_errors_exit_non_zero_with_one_line(world, tmp_path, problem):
    config, trace = world
    args = ["replay", config, trace, "--out", tmp_path / "out"]
    if problem == "missing_config":
        args[1] = tmp_path / "nope.toml"
    elif problem == "missing_trace":
        args[2] = tmp_path / "nope.msgpack"
    elif problem == "bad_config":
        bad = tmp_path / "bad.toml"
        bad.write_text(config.read_text().replace('min_gap = "1d"', 'min_gap = "1 day"'))
        args[1] = bad
    else:
        broken = tmp_path / "broken.msgpack"
        broken.write_bytes(trace.read_bytes()[:450] + b"\xc1")
        args[2] = broken
    proc = subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sigmatch: error: "), proc.stderr
    if problem == "corrupt":
        assert "offset 450" in lines[0]
    if problem == "bad_config":
        assert "bad.toml" in lines[0] and "min_gap" in lines[0]
