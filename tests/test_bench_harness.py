"""`sigmatch bench`'s harness on a tiny workload: every stage reports, the table and the
RESULTS line carry the machine. Behaviour only: no figure is asserted."""
from bench.run import format_table, record, run_benchmarks

STAGES = ("load_s", "decode_eps", "match_eps", "sink_rps", "end_to_end_eps", "end_to_end_ns",
          "bytes_per_subscriber", "peak_rss_gb")


def test_tiny_workload_reports_every_stage(tmp_path):
    [result] = run_benchmarks(["T"], sizes={"T": (2_000, 20_000)}, campaigns=2, directory=tmp_path,
                              echo=lambda line: None)
    assert result["workload"] == "T" and result["subscribers"] == 2_000 and result["events"] == 20_000
    for stage in STAGES:
        assert result[stage] is not None and result[stage] > 0, stage
    table = format_table([result])
    assert table.splitlines()[0].split()[0] == "workload" and "20,000" in table
    results = tmp_path / "RESULTS.md"
    record([result], results)
    line = results.read_text().strip()
    assert line.startswith("| 20") and "cores" in line and "| T |" in line
    # the world is kept in the directory and reused by a second run
    again = run_benchmarks(["T"], sizes={"T": (2_000, 20_000)}, campaigns=2, directory=tmp_path,
                           echo=lambda line: None)
    assert again[0]["actions"] == result["actions"]


def test_service_benchmark_runs_the_daemon_against_replay(tmp_path):
    from bench.service import format_service, measure_service, record_service
    result = measure_service(tmp_path, subscribers=2_000, events=20_000, files=4, campaigns=2, repeat=1,
                             echo=lambda line: None)
    assert result["files"] == 4 and result["events"] == 20_000
    assert result["replay_eps"] > 0 and result["daemon_eps"] > 0
    assert "daemon/replay" in format_service([result])
    results = tmp_path / "RESULTS.md"
    results.write_text("# t\n\n| date | workload |\n|---|---|\n| x | S |\n\n## The service from a spool\n\ntext\n\n"
                       "| date | subscribers |\n|---|---|\n")
    record_service([result], results)
    record([dict(workload="T", subscribers=1, events=1, campaigns=1, load_s=1, decode_eps=1, match_eps=1,
                 sink_rps=1, end_to_end_eps=1, end_to_end_ns=1, actions=0, bytes_per_subscriber=1,
                 peak_rss_gb=1)], results)
    lines = results.read_text().splitlines()
    # each row went to its own table
    assert lines[5].startswith("| 20") and "| T |" in lines[5]
    assert lines[-1].startswith("| 20") and "| 2,000 |" in lines[-1]


def test_language_cost_runs_both_configurations_in_turn(tmp_path):
    import tomllib
    from bench.language import SECTIONS, format_language_cost, record_language_cost, run_language_cost
    result = run_language_cost("T", subscribers=2_000, events=20_000, campaigns=2, runs=2, directory=tmp_path,
                               echo=lambda line: None)
    assert len(result["second"]) == len(result["first"]) == 2
    for r in result["second"] + result["first"]:
        assert r["match_eps"] > 0 and r["end_to_end_eps"] > 0 and r["events"] == 20_000
    [plain] = tmp_path.glob("*/campaigns-first-edition.toml")
    doc = tomllib.loads(plain.read_text())
    assert not any(section in doc for section in SECTIONS)
    assert not any(key in c for c in doc["campaign"] for key in ("after", "not_after", "absent", "flags", "arg"))
    # the sequences' marker state is what the new keys add to each subscriber
    assert result["second"][0]["bytes_per_subscriber"] > result["first"][0]["bytes_per_subscriber"]
    assert "with / without" in format_language_cost(result)
    results = tmp_path / "RESULTS.md"
    results.write_text("# t\n\n| date | workload |\n|---|---|\n| x | S |\n")
    record_language_cost(result, results)
    record_language_cost(result, results)
    lines = results.read_text().splitlines()
    assert lines[4] == "| x | S |" and lines[-1].startswith("| 20") and lines[-2].startswith("| 20")
    assert "cores" in lines[-1]


def test_first_edition_keeps_a_template_for_variants_and_drops_new_exemptions():
    from bench.language import first_edition
    doc = {"policy": {"max_in_window": {"contacts": 2, "window": "1h"}, "min_gap": "1h"},
           "counters": {"c": {"on": ["SMS_MO"], "period": "day"}},
           "campaign": [{"id": "a", "on": ["SMS_MO"], "channel": "sms", "exempt": ["max_in_window", "min_gap"],
                         "variants": [{"template": "A", "weight": 1}, {"template": "B", "weight": 1}]},
                        {"id": "retired", "on": ["SMS_MO"], "channel": "sms", "template": "R", "enabled": False}]}
    plain = first_edition(doc)
    assert [c["id"] for c in plain["campaign"]] == ["a"]       # retired: the first edition deletes it
    assert plain["policy"] == {"min_gap": "1h"} and plain["counters"] == {"c": {"on": ["SMS_MO"]}}
    assert plain["campaign"][0]["template"] == "A" and plain["campaign"][0]["exempt"] == ["min_gap"]
    assert "variants" in doc["campaign"][0]          # the input is left alone


def test_startup_benchmark_times_replay_and_the_peer_on_the_same_matches(tmp_path):
    import json
    import sys
    from pathlib import Path
    from bench.startup import run_startup
    root = str(Path(__file__).resolve().parent.parent)       # the checkout whose sigmatch is timed
    result = run_startup(tmp_path, subscribers=2_000, events=20_000, runs=1, trees=(root,), python=sys.executable)
    assert result["actions"] == result["matches"] > 0
    assert len(result["sigmatch"][root]) == 1 and len(result["peer"]) == 1
    assert (tmp_path / "profiles.csv").is_file() and json.loads((tmp_path / "startup-world.json").read_text())


def test_sink_file_benchmark_writes_hourly_and_unrotated_files(tmp_path):
    from bench.sink_files import run_sink_files
    result = run_sink_files(tmp_path, subscribers=2_000, events=20_000, rounds=1)
    [(_, _, hourly)], [(_, _, one)] = result["hourly"], result["one"]
    assert hourly > one > 0 and result["actions"] > 0
    assert not (tmp_path / "scratch").exists()


def test_rare_campaigns_benchmark_adds_campaigns_that_almost_never_match(tmp_path):
    from bench.rare import measure
    result = measure(tmp_path, subscribers=3_000, events=20_000, base=30, total=60, rounds=1, echo=lambda *a: None)
    assert (result["campaigns_a"], result["campaigns_b"]) == (30, 60)
    # ten subscribers in the rare audience: the added campaigns change under 1% of the outcome
    assert abs(result["actions"]["b"] - result["actions"]["a"]) < 0.01 * result["events"]
    assert result["a_eps"] > 0 and result["b_eps"] > 0
    # the yardstick of issue 14, part 2: msgpack-python iterating the same file
    assert result["msgpack_eps"] > 0 and result["a_over_msgpack"] == result["a_eps"] / result["msgpack_eps"]
    assert len(result["runs_msgpack"]) == 1


def test_scaling_plot_draws_the_recorded_runs_and_refuses_other_files_in_one_line(tmp_path):
    """`python -m bench.workers --plot JSON PNG` draws docs/scaling.json; a file that is not
    such runs, or one that is missing, is one line naming it."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    png = tmp_path / "scaling.png"
    done = subprocess.run([sys.executable, "-m", "bench.workers", "--plot", str(root / "docs" / "scaling.json"), str(png)],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "bad.json").write_text('{"runs": [{"workers": 1}]}')
    for given, said in ((tmp_path / "bad.json", "not runs as docs/scaling.json records them"),
                        (tmp_path / "missing.json", "No such file or directory")):
        done = subprocess.run([sys.executable, "-m", "bench.workers", "--plot", str(given), str(png)],
                              cwd=root, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1
        assert done.stderr.strip().startswith(f"python -m bench.workers: error: {given}: ") and said in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert "Traceback" not in done.stderr


def test_one_shard_alone_is_timed_against_one_process_and_the_decoder(tmp_path):
    """`python -m bench.workers --alone N`: shard 0 of N streams the whole world without
    waiting (the other lanes marked finished), and one JSON line gives its seconds beside
    one process's and the decoder's."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "bench.workers", "--subscribers", "2000", "--events", "20000",
                           "--alone", "3", "--dir", str(tmp_path)], cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["workers"] == 3 and figures["events"] == 20000
    assert all(figures[k] >= 0 for k in ("shard_s", "one_process_s", "decode_s"))


def test_bench_options_out_of_range_are_one_line_before_anything_is_generated(tmp_path):
    """`sigmatch bench S --campaigns -5` printed gen's traceback from the benchmark's child
    process after announcing the generation; the peers' sizes were checked only with
    --peers. Each is now refused by its option, with bounds that the privacy mask leaves
    readable (thousands separators: no run of 7 digits)."""
    from click.testing import CliRunner

    from engine.cli import main
    for args, said in ((["--campaigns", "-5"], "'--campaigns': -5 is not in the range 0<=x<=10,000."),
                       (["--campaigns", "10001"], "'--campaigns': 10001 is not in the range 0<=x<=10,000."),
                       (["--peer-events", "0"], "'--peer-events': 0 is not in the range 1<=x<=100,000,000,000."),
                       (["--peer-subscribers", "99"], "'--peer-subscribers': 99 is not in the range "
                                                      "100<=x<=100,000,000."),
                       (["--seed", "-1"], "'--seed': -1 is not in the range 0<=x<=9,223,372,036,854,775,807.")):
        done = CliRunner().invoke(main, ["bench", "S", "--dir", str(tmp_path), *args])
        assert done.exit_code == 2, (args, done.output)
        assert said in done.output and "Traceback" not in done.output and "generating" not in done.output
    assert list(tmp_path.iterdir()) == []
    done = CliRunner().invoke(main, ["bench", "S", "--dir", "/proc/sigmatch-bench"])
    assert done.exit_code == 1 and done.output.strip().splitlines() == [
        "sigmatch: error: --dir /proc/sigmatch-bench: No such file or directory"], done.output
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    done = CliRunner().invoke(main, ["bench", "S", "--dir", str(tmp_path / "dangling")])
    assert done.exit_code == 1 and done.output.strip().splitlines() == [
        f"sigmatch: error: --dir {tmp_path / 'dangling'} is a link to {tmp_path / 'gone'}, which does not exist"]


def test_sweep_benchmark_sets_many_campaigns_against_few_on_the_same_trace_size(tmp_path):
    """`python -m bench.sweep` (issue 14, part 1): two gen worlds, replayed in turn in fresh
    processes; the share of the rate with many campaigns is the ratio of the medians."""
    from bench.sweep import measure
    result = measure(tmp_path, subscribers=2_000, events=10_000, few=2, many=6, rounds=2, best=1,
                     echo=lambda *a: None)
    programmes = result["campaigns"][0] - 2
    assert result["campaigns"] == [programmes + 2, programmes + 6] and result["synthetic"] == [2, 6]
    assert [len(r) for r in result["runs"]] == [2, 2] and all(s > 0 for r in result["runs"] for s in r)
    few, many = result["eps"]
    assert result["share"] == many / few and result["aim"] == 0.70
    # the worlds are kept and reused
    again = measure(tmp_path, subscribers=2_000, events=10_000, few=2, many=6, rounds=1, best=1, echo=lambda *a: None)
    assert again["actions"] == result["actions"]


def _bench(module: str, *args, cwd=None):
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    return subprocess.run([sys.executable, "-m", f"bench.{module}", *map(str, args)], cwd=cwd or root,
                          capture_output=True, text=True, timeout=300)


def _said_by(main) -> str:
    """What a bench._cli.command says on stderr as it exits 1."""
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as e:
            assert e.code == 1
        else:
            raise AssertionError("the command did not exit")
    return err.getvalue()


def test_every_benchmark_command_says_a_bad_option_in_one_line_before_anything_is_made(tmp_path):
    """The `python -m bench.X` commands that docs/performance.md names said a zero count, a
    size gen refuses or a folder that cannot be made as a traceback, some after generating a
    world: now argparse's one line (exit 2) or `PROG: error: LINE` (exit 1), and nothing made."""
    (tmp_path / "a-file").write_text("")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    cases = [
        ("sweep", ["--rounds", "0"], 2, "argument --rounds: must be from 1 to 1,000, not 0"),
        ("sweep", ["--few", "-5"], 2, "argument --few: must be from 0 to 10,000, not -5"),
        ("sweep", ["--few", "12", "--many", "12"], 2, "--many (12) must be more than --few (12)"),
        ("sweep", ["--directory", tmp_path / "a-file"], 1, f"--directory {tmp_path / 'a-file'}: not a folder"),
        ("sweep", ["--directory", tmp_path / "dangling" / "x"], 1,
         f"--directory {tmp_path / 'dangling' / 'x'}: {tmp_path / 'dangling'} is a link to {tmp_path / 'gone'}, "
         "which does not exist"),
        ("rare", ["--subscribers", "0"], 2, "argument --subscribers: must be from 100 to 500,000,000, not 0"),
        ("rare", ["--base", "40", "--total", "40"], 2, "--total (40) must be more than --base (40)"),
        # said before "rare: world of ..." was announced
        ("rare", ["--base", "0"], 2, "--base (0) must be at least gen's "),
        ("rare", ["--directory", "/proc/sigmatch-rare"], 1, "--directory /proc/sigmatch-rare: No such file or directory"),
        ("startup", [tmp_path / "st", "--runs", "0"], 2, "argument --runs: must be from 1 to 1,000, not 0"),
        ("startup", [tmp_path / "st", "--tree", tmp_path / "nowhere"], 2,
         f"--tree {tmp_path / 'nowhere'}: not a sigmatch checkout (no engine/cli.py in it)"),
        ("startup", [tmp_path / "a-file"], 1, f"DIR {tmp_path / 'a-file'}: not a folder"),
        ("sink_files", [tmp_path / "sf", "--events", "-1"], 2, "argument --events: must be from 1 to"),
        ("diff", [tmp_path / "diff", "--runs", "0"], 2, "argument --runs: must be from 1 to 1,000, not 0"),
        ("report", [tmp_path / "rep", "--actions", "5", "--conversions", "6"], 2,
         "--conversions (6) must be at most --actions (5)"),
        ("plot", ["--out", tmp_path / "t.jpg"], 2, f"--out {tmp_path / 't.jpg'}: the picture's name must end in .png"),
        ("plot", ["--campaigns-only", "--out", tmp_path / "none.png"], 1,
         f"--campaigns-only: {tmp_path / 'none.json'}: no such file"),
        ("workers", ["--subscribers", "50"], 2, "argument --subscribers: must be from 100 to 500,000,000, not 50"),
        ("feed_bytes", ["--bogus"], 2, "unrecognized arguments: --bogus"),
        # an empty folder would be the current one, where a benchmark writes and removes its files
        ("sweep", ["--directory", ""], 2, "argument --directory: empty: give a folder"),
        ("startup", [""], 2, "argument DIR: empty: give a folder"),
        ("workers", ["--dir", " "], 2, "argument --dir: empty: give a folder"),
    ]
    for module, args, code, said in cases:
        done = _bench(module, *args)
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode == code, (module, args, done.stderr)
        assert last.startswith(f"python -m bench.{module}: error: ") and said in last, (module, args, last)
        assert "Traceback" not in done.stderr, (module, args)
        # argparse's usage block no longer comes before it (bench._cli.OneLineParser)
        assert len(done.stderr.strip().splitlines()) == 1, (module, args, done.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "dangling"]


def test_a_benchmark_cut_short_says_so_in_one_line_and_its_world_is_made_again(tmp_path):
    """Ctrl-C printed a traceback, and a world whose generation it cut short was taken for
    the world by the next run (bench.rare, bench.startup: the old manifest stayed). The
    manifest is now removed before a world is made and written last, mode 0640; a manifest
    that does not parse is a world to make again."""
    import json
    import os
    import stat

    from bench._cli import CommandError, command, world_manifest

    @command("python -m bench.t")
    def interrupted():
        raise KeyboardInterrupt

    @command("python -m bench.t")
    def unreadable():
        open(tmp_path / "missing")

    for main, said in ((interrupted, "python -m bench.t: error: aborted"),
                       (unreadable, f"python -m bench.t: error: {tmp_path / 'missing'}: No such file or directory")):
        assert _said_by(main).strip() == said
    manifest = tmp_path / "m.json"
    manifest.write_text("{bad")
    assert world_manifest(manifest, {"n": 1}) is None and not manifest.exists()
    manifest.write_text(json.dumps({"world": {"n": 2}}))
    assert world_manifest(manifest, {"n": 1}) is None and not manifest.exists()
    manifest.write_text(json.dumps({"world": {"n": 1}, "config": "c"}))
    assert world_manifest(manifest, {"n": 1}) == {"world": {"n": 1}, "config": "c"} and manifest.exists()
    assert issubclass(CommandError, ValueError)
    # bench.startup's world: 0640, and a world whose manifest went (a generation cut short) is made again
    from bench.startup import build_world
    config = build_world(tmp_path / "st", subscribers=2_000, events=5_000)
    for path in (tmp_path / "st").iterdir():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640, path
    (tmp_path / "st" / "trace.msgpack").write_bytes(b"")
    (tmp_path / "st" / "startup-world.json").unlink()
    assert build_world(tmp_path / "st", subscribers=2_000, events=5_000) == config
    assert (tmp_path / "st" / "trace.msgpack").stat().st_size > 0


def test_rare_campaigns_benchmark_refuses_a_base_below_gens_programmes(tmp_path):
    import pytest

    from bench._cli import CommandError
    from bench.rare import make_world
    with pytest.raises(CommandError, match=r"^--base 5: A holds gen's \d+ programmes at least; give --base \d+ or more$"):
        make_world(tmp_path, subscribers=2_000, events=5_000, base=5, total=30)


def test_a_service_option_the_daemon_refuses_is_said_before_the_world_is_made(tmp_path):
    """`sigmatch bench --service --service-option=--bogus` generated the 2M-subscriber world,
    replayed it, then waited 10 minutes for the daemon (which had exited at once) and said
    `timed out`. The options are now parsed as the daemon parses them first, and a daemon that
    exits before it is ready is said at once, in its own last line."""
    from pathlib import Path

    import pytest
    from click.testing import CliRunner

    from bench.service import _daemon_once, check_daemon_options
    from engine.cli import main
    from engine.world.gen import generate
    assert check_daemon_options(()) is None
    assert check_daemon_options(("--workers", "2", "--checkpoint-every=5")) is None
    assert check_daemon_options(("--bogus",)).startswith("No such option '--bogus'")
    # the benchmark's own spool, output and state: another spool never empties
    for own in ("--spool", "--out", "--state"):
        assert check_daemon_options((f"{own}={tmp_path / 'elsewhere'}",)).startswith(f"{own} is the benchmark's own")
    assert check_daemon_options(("--stdin",)) == "--stdin: the benchmark feeds the daemon from its spool"
    assert not (tmp_path / "elsewhere").exists()
    for given, said in (("--bogus", "No such option '--bogus'"),
                        ("--workers=abc", "Invalid value for '--workers': 'abc' is not a valid whole number"),
                        ("--help", "--help and the like print and exit: give options of a run")):
        done = CliRunner().invoke(main, ["bench", "--service", "--dir", str(tmp_path / "w"),
                                         f"--service-option={given}"])
        assert done.exit_code == 1, done.output
        lines = done.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"sigmatch: error: --service-option {given}: {said}"), lines
    assert not (tmp_path / "w").exists()
    world = generate(tmp_path / "world", subscribers=1_000, events=2_000, campaigns=0, seed=1, trace_files=2)
    (tmp_path / "d").mkdir()
    with pytest.raises(RuntimeError, match=r"^the daemon exited \(1\) before it was ready: sigmatch: error: "
                                           r"--listen 999\.1\.1\.1:1: "):
        _daemon_once(world.config, [Path(t) for t in world.traces], tmp_path / "d", ("--listen", "999.1.1.1:1"))


def test_bench_world_folders_are_named_readably_and_a_bad_manifest_is_made_again(tmp_path):
    """`sigmatch bench` named a world's folder S-100000-1000000-..., which error lines mask as
    a subscriber's number (1*****0): its sizes have underscores now. A manifest that does not
    parse made a 35-line traceback; it is a world to generate again. --service-option
    without --service was ignored."""
    import pytest
    from click.testing import CliRunner

    from bench._cli import CommandError
    from bench.run import _world, run_benchmarks
    from engine.cli import main
    (tmp_path / "T-2_000-1_000_000-2-1").write_text("")
    done = CliRunner().invoke(main, ["bench", "S", "--dir", str(tmp_path), "--service-option=--bogus"])
    assert done.exit_code == 1 and done.output.strip().splitlines() == [
        "sigmatch: error: --service-option is an option of the daemon that --service measures: give --service too"]
    world = tmp_path / "w"
    world.mkdir()
    (world / "bench-world.json").write_text("{bad")
    config, traces = _world(world, 2_000, 5_000, 2, 1)
    assert config.is_file() and traces and (world / "bench-world.json").is_file()
    with pytest.raises(CommandError, match=r"^--dir .*/T-2_000-1_000_000-2-1: not a folder$"):
        run_benchmarks(["T"], sizes={"T": (2_000, 1_000_000)}, campaigns=2, directory=tmp_path, echo=lambda line: None)


def test_a_benchmark_writes_only_in_a_folder_of_its_own_and_finds_a_moved_world(tmp_path):
    """A benchmark writes and removes its files in the folder it is given (bench.diff removed
    an outs/ folder there, bench.startup overwrote a campaigns.toml): a folder holding other
    files, or another benchmark's, is refused; one it made itself, even cut short, is taken.
    Manifests name their files relative to their folder, so a moved world is still found."""
    import json

    import pytest

    from bench._cli import OWNER_FILE, CommandError, child_error, folder, named, relative
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(CommandError, match=r"^DIR .*/mine: holds files that are not bench.diff's, and it writes and "
                                           r"removes its own there: give a new or empty folder$"):
        folder(tmp_path / "mine", "DIR", owner="bench.diff")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    folder(tmp_path / "new", "DIR", owner="bench.diff")
    assert (tmp_path / "new" / OWNER_FILE).read_text() == "bench.diff\n"
    (tmp_path / "new" / "outs").mkdir()
    assert folder(tmp_path / "new", "DIR", owner="bench.diff") == tmp_path / "new"
    with pytest.raises(CommandError, match=r"holds the worlds of bench.diff, not bench.startup's"):
        folder(tmp_path / "new", "DIR", owner="bench.startup")
    manifest = tmp_path / "new" / "w.json"
    manifest.write_text(json.dumps({"config": relative(manifest, tmp_path / "new" / "campaigns.toml")}))
    (tmp_path / "new").rename(tmp_path / "moved")
    moved = tmp_path / "moved" / "w.json"
    assert named(moved, json.loads(moved.read_text())["config"]) == tmp_path / "moved" / "campaigns.toml"
    assert named(moved, "/abs/campaigns.toml") == __import__("pathlib").Path("/abs/campaigns.toml")
    # a child's own `PROG: error:` is not said twice by its parent
    assert child_error("python -m bench.sweep", "python -m bench.sweep: error: x.msgpack: gone\n") == "x.msgpack: gone"
    assert child_error("sigmatch", "Traceback ...\nValueError: bad\n") == "ValueError: bad"


def test_running_out_of_memory_is_said_in_one_line():
    from bench._cli import command

    @command("python -m bench.t")
    def hungry():
        raise MemoryError
    assert _said_by(hungry) == "python -m bench.t: error: out of memory\n"


def test_plot_refuses_kept_figures_it_cannot_draw_before_measuring(tmp_path):
    (tmp_path / "g.json").write_text('{"subscribers": 5, "events": 3}')
    done = _bench("plot", "--campaigns-only", "--out", tmp_path / "g.png")
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        f"python -m bench.plot: error: --campaigns-only: {tmp_path / 'g.json'}: not a sweep that bench.plot wrote"]
    assert (tmp_path / "g.json").read_text() == '{"subscribers": 5, "events": 3}'


def test_benchmark_folders_relative_locked_and_marked_and_manifests_of_the_wrong_shape(tmp_path):
    """A third trial (helper-95): bench.diff and bench.report ran their children in the
    checkout with a relative folder, so the world went into the checkout and the report
    failed; two runs into one folder made and removed the same files; a marker that is not
    text gave a traceback; a manifest field of the wrong type gave a TypeError."""
    import json
    import os

    import pytest

    from bench._cli import OWNER_FILE, CommandError, folder, given_folder, world_manifest
    here = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert given_folder("rel") == tmp_path / "rel"
    finally:
        os.chdir(here)
    done = _bench("report", "relr", "--actions", "2000", "--conversions", "10", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "relr" / OWNER_FILE).is_file()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / OWNER_FILE).write_bytes(b"\xff\xfe")
    with pytest.raises(CommandError, match=r"^--directory .*/m: its \.sigmatch-bench does not name bench\.sweep: "
                                           r"give another folder$"):
        folder(tmp_path / "m", "--directory", owner="bench.sweep")
    # a run holds its folder: a second one is refused while it lasts
    folder(tmp_path / "busy", "--directory", owner="bench.sweep")
    done = _bench("sweep", "--directory", tmp_path / "busy", "--rounds", "1")
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        f"python -m bench.sweep: error: --directory {tmp_path / 'busy'}: another run of bench.sweep is using it; "
        "wait for it to end, or give another folder"]
    manifest = tmp_path / "w.json"
    for held in ({"a": ["campaigns.toml"], "n": 1}, {"a": "campaigns.toml", "n": True}, {"a": "c", "n": "1"}):
        manifest.write_text(json.dumps({"world": {"s": 1}, **held}))
        assert world_manifest(manifest, {"s": 1}, needs={"a": str, "n": int}) is None and not manifest.exists()
    manifest.write_text(json.dumps({"world": {"s": 1}, "traces": "trace.msgpack"}))
    assert world_manifest(manifest, {"s": 1}, needs={"traces": list}) is None
    manifest.write_text("[" * 100_000)
    assert world_manifest(manifest, {"s": 1}) is None


def test_sigterm_a_killed_child_and_sigmatch_bench_folders(tmp_path):
    """A fourth trial (helper-96): SIGTERM (timeout, kill, a CI runner) left the temporary
    worlds behind; a child the system killed was 'failed, saying nothing'; sigmatch bench
    --dir took a folder holding the user's files, and two runs in it at once; --runs without
    --language-cost was ignored; a name too long was said without its option."""
    import os
    import signal

    import pytest
    from click.testing import CliRunner

    from bench._cli import CommandError, child_error, command, folder
    from engine.cli import main

    made = []

    @command("python -m bench.t")
    def terminated():
        import tempfile
        with tempfile.TemporaryDirectory(prefix="sigmatch-t-") as scratch:
            made.append(scratch)
            os.kill(os.getpid(), signal.SIGTERM)
    assert _said_by(terminated) == "python -m bench.t: error: aborted\n" and not os.path.exists(made[0])
    assert signal.getsignal(signal.SIGTERM) is not None and "_terminated" not in repr(signal.getsignal(signal.SIGTERM))
    assert child_error("p", "", -signal.SIGKILL) == ("the benchmark's child process was killed by SIGKILL (out of "
                                                     "memory? the system kills with it)")
    assert child_error("p", "", -signal.SIGSEGV) == "the benchmark's child process was killed by SIGSEGV"
    with pytest.raises(CommandError, match=r"^--directory .*: File name too long$"):
        folder(tmp_path / ("a" * 300), "--directory")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    for args, said in ((["--dir", str(tmp_path / "mine")],
                        f"sigmatch: error: --dir {tmp_path / 'mine'}: holds files that are not sigmatch bench's, and "
                        "it writes and removes its own there: give a new or empty folder"),
                       (["--dir", str(tmp_path / "new"), "--runs", "3"],
                        "sigmatch: error: --runs is the number of runs of --language-cost: give --language-cost too")):
        done = CliRunner().invoke(main, ["bench", "S", *args])
        assert done.exit_code == 1 and done.output.strip().splitlines() == [said], done.output


def test_duckdbs_interruptions_are_told_from_its_errors():
    """SIGTERM during `sigmatch bench --peers` came back from DuckDB's scan of the Arrow table
    as an InvalidInputException naming KeyboardInterrupt, a 49-line traceback (a fifth trial,
    helper-97): it is said as aborted, as DuckDB's own 'Query interrupted' is."""
    import duckdb

    from engine.cli import _duckdb_interrupted
    assert _duckdb_interrupted(duckdb.InvalidInputException(
        "Invalid Input Error: offering a filter to the source registered as 'ev' failed: KeyboardInterrupt: "))
    assert _duckdb_interrupted(RuntimeError("Query interrupted"))
    assert _duckdb_interrupted(duckdb.InterruptException("INTERRUPT Error"))
    assert not _duckdb_interrupted(duckdb.CatalogException("Table with name ev does not exist"))


def test_bare_loop_times_the_floor_beside_the_engine_and_refuses_other_shapes(tmp_path):
    """`python -m bench.bare_loop` compiles its C loops, runs them over a gen trace and the
    engine over the same trace, and says a trace of another shape, a missing one or an option
    out of range in one line. No figure is asserted."""
    import json

    import msgpack

    from engine.world.gen import generate
    world = generate(tmp_path / "w", subscribers=500, events=3_000, campaigns=2, seed=3)
    trace = world.traces[0]
    done = _bench("bare_loop", trace, "--config", world.config, "--rounds", "1")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["events"] == 3_000
    distinct = {e[2] for e in msgpack.Unpacker(open(trace, "rb"))}
    assert found["subscribers"] == len(distinct)
    assert set(found["ns_per_event"]) == {"decode", "bare", "layout", "engine"}
    assert "engine_over_layout" in found and "cores" in found["machine"]
    # the smallest events, 9 bytes each: the loops' arrays hold them (they overran them)
    small = tmp_path / "small.msgpack"
    small.write_bytes(b"".join(msgpack.packb([1, 2, i % 128, 4, 5, 6, 7, 8]) for i in range(20_000)))
    done = _bench("bare_loop", small, "--rounds", "1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["events"] == 20_000 and json.loads(done.stdout)["subscribers"] == 128
    # distinct MSISDNs whose hashes share their upper 32 bits (the index's fingerprint): the
    # loops counted them once and overran their arrays (a newcomer trial's hang and SIGSEGV)
    twins = tmp_path / "twins.msgpack"
    twins.write_bytes(b"".join(msgpack.packb([1, 2, m, 4, 5, 6, 7, 8]) for m in _fingerprint_twins(1_000)))
    done = _bench("bare_loop", twins, "--rounds", "1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["subscribers"] == 1_000
    # a map per event is a good event to sigmatch, not the probes' shape the loops read
    other = tmp_path / "maps.msgpack"
    other.write_bytes(msgpack.packb({"ts": 1, "type": 1, "msisdn": 13800000001}) * 3)
    cut = tmp_path / "cut.msgpack"
    data = trace.read_bytes()
    cut.write_bytes(data[:len(data) - 3])
    cases = [
        ([other], 1, f"{other}: byte 0 is not an array of 8 unsigned integers"),
        ([cut], 1, f"{cut}: the trace ends inside the event at byte "),
        ([tmp_path], 1, f"{tmp_path}: a folder, not a trace file"),
        ([""], 2, "argument trace: empty: give a trace file"),
        (["/dev/null"], 1, "/dev/null: not a regular file"),
        ([trace, "--config", ""], 2, "argument --config: empty: give a configuration file"),
        ([tmp_path / "none.msgpack"], 1, f"{tmp_path / 'none.msgpack'}: no such trace file"),
        ([trace, "--rounds", "0"], 2, "argument --rounds: must be from 1 to 1,000, not 0"),
        ([trace, "--row-bytes", "4"], 2, "argument --row-bytes: must be from 8 to 4,096, not 4"),
        ([trace, "--config", world.config, "--row-bytes", "64"], 2, "--row-bytes goes without --config"),
    ]
    for args, code, said in cases:
        done = _bench("bare_loop", *args)
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode == code, (args, done.stderr)
        assert last.startswith("python -m bench.bare_loop: error: ") and said in last, (args, last)
        assert "Traceback" not in done.stderr, args


def _fingerprint_twins(k: int) -> list[int]:
    """k distinct numbers whose sm_mix64 hashes share their upper 32 bits, made by inverting
    the mix (each step of it is a bijection of 64-bit words)."""
    mask = (1 << 64) - 1
    inverse1, inverse2 = pow(0xff51afd7ed558ccd, -1, 1 << 64), pow(0xc4ceb9fe1a85ec53, -1, 1 << 64)

    def unmix(h: int) -> int:
        h ^= h >> 33
        h = (h * inverse2) & mask
        h ^= h >> 33
        h = (h * inverse1) & mask
        return h ^ (h >> 33)

    return [unmix(0xdeadbeef << 32 | i) for i in range(1, k + 1)]
