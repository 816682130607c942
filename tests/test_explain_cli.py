"""`sigmatch explain CONFIG TRACE... --msisdn N [--json]`: the listing, the JSON shape, and a
number that is not a subscriber."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.api import Engine
from engine.cli import EXIT_NOT_A_SUBSCRIBER
from engine.privacy import mask_numbers
from engine.records import CONDITIONS
from engine.world.gen import generate
from loaders.lists import MSISDN_RULE, NOT_FOUND_HINT, normalise_msisdn

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    directory = tmp_path_factory.mktemp("world")
    generated = generate(directory, subscribers=2_000, events=20_000, campaigns=4, seed=5)
    run = Engine.from_config(generated.config).replay(generated.traces, drain=True)
    return generated.config, generated.traces, run


def sigmatch(*args):
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_json_lists_each_event_and_every_action(world):
    config, traces, run = world
    columns = run.action_columns()
    msisdn = int(columns["msisdn"][0])
    done = sigmatch("explain", config, *traces, "--msisdn", msisdn, "--json", "--no-progress")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["msisdn"] == msisdn and doc["status"] == "active"
    assert doc["events"] and all({"ts", "type", "campaigns"} <= set(e) for e in doc["events"])
    for e in doc["events"]:
        for c in e["campaigns"]:
            assert c["result"] == "matched" or c["result"] in CONDITIONS
    # every action the replay made for this number, with its seq, and nothing else
    made = sorted((int(s), int(t), c, k) for s, t, c, k, m in zip(columns["seq"], columns["ts"], columns["campaign"],
                                                                  columns["kind"], columns["msisdn"]) if int(m) == msisdn)
    contacts = [(a["seq"], a["ts"], a["campaign"], a["kind"]) for a in doc["actions"] if "seq" in a]
    assert sorted(contacts) == made
    assert all(set(a) >= {"campaign", "suppressed"} for a in doc["actions"] if "seq" not in a)


def test_the_listing_is_readable_and_names_no_other_number(world):
    config, traces, run = world
    msisdn = int(run.action_columns()["msisdn"][0])
    done = sigmatch("explain", config, *traces, "--msisdn", msisdn, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"subscriber {msisdn} (active)")
    assert "matched: contact seq" in done.stdout and "state:" in done.stdout
    others = {str(int(m)) for m in run.action_columns()["msisdn"]} - {str(msisdn)}
    assert not any(number in done.stdout for number in others)


@pytest.mark.parametrize("number", ["999999999999", "123"])
def test_a_number_that_is_no_subscriber_is_said_so(world, number):
    config, traces, _ = world
    done = sigmatch("explain", config, *traces, "--msisdn", number)
    assert done.returncode == EXIT_NOT_A_SUBSCRIBER
    # standard error is masked whole, the number asked about too (stdout shows it in full)
    assert done.stderr.strip().splitlines() == [mask_numbers(f"sigmatch: {number} is not a subscriber of {config}'s "
                                                             f"profiles ({NOT_FOUND_HINT})")]
    assert done.stdout == ""


def test_a_second_msisdn_is_refused_not_taken_instead_of_the_first(world):
    # click kept the last of a repeated --msisdn (helper-115)
    config, traces, run = world
    msisdn = str(int(run.action_columns()["msisdn"][0]))
    done = sigmatch("explain", config, *traces, "--msisdn", msisdn, "--msisdn", "13800138000")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == ["sigmatch: error: --msisdn: given 2 times; explain takes one "
                                                "subscriber a run"]


def test_a_malformed_number_is_one_line(world):
    config, traces, _ = world
    done = sigmatch("explain", config, *traces, "--msisdn", "0123")
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1 and "--msisdn" in done.stderr
    # shown as typed when it holds too few digits to be anyone's number ('abc' read 'a*c'),
    # masked when it may be one all the same
    assert "--msisdn: '0123' is not an MSISDN" in done.stderr
    done = sigmatch("explain", config, *traces, "--msisdn", "abc")
    assert "--msisdn: 'abc' is not an MSISDN" in done.stderr
    done = sigmatch("explain", config, *traces, "--msisdn", "1380013800x")
    assert "'138****800x' is not an MSISDN" in done.stderr


def test_a_number_as_a_customer_gives_it_is_read_as_the_lookup_and_lists_read_it(world):
    """One rule (loaders.lists.normalise_msisdn) for --msisdn, the lookup's paths, --watch
    files and profiles: spaces, dashes and a leading + or 00 are dropped, a country code is
    not added or removed; a refusal names the rule and suggests no example number."""
    config, traces, run = world
    msisdn = int(run.action_columns()["msisdn"][0])
    text = str(msisdn)
    plain = sigmatch("explain", config, *traces, "--msisdn", text, "--json", "--no-progress")
    assert plain.returncode == 0, plain.stderr
    spaced = f" {text[:3]} {text[3:7]}-{text[7:]} "
    for typed in (spaced, "+" + text, "00" + text):
        assert normalise_msisdn(typed) == msisdn
        done = sigmatch("explain", config, *traces, "--msisdn", typed, "--json", "--no-progress")
        assert done.returncode == 0 and done.stdout == plain.stdout, (typed, done.stderr)
    # the country code is part of the number: +86 before a national number is another number
    done = sigmatch("explain", config, *traces, "--msisdn", "+86 " + spaced)
    assert done.returncode == EXIT_NOT_A_SUBSCRIBER and NOT_FOUND_HINT in done.stderr
    for bad in ("abc", "0" + text, "", "1" * 16, text + ".0", "-" + text + "x", "-" + text, text + "-"):
        done = sigmatch("explain", config, *traces, "--msisdn", bad)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and "--msisdn" in lines[0] and MSISDN_RULE in lines[0], lines
        # a number all the same, written wrong: masked as lists and the lookup mask what they refuse
        assert text not in lines[0], lines


def test_an_event_past_the_year_9999_is_listed_with_its_date(tmp_path):
    # a ts below 2^53 ms may lie past the year 9999, where Python's dates end: the listing
    # said a traceback there (found by a newcomer trial)
    import msgpack
    (tmp_path / "profiles.csv").write_text("msisdn\n13800010001\n")
    (tmp_path / "c.toml").write_text('[engine]\nprofiles = "profiles.csv"\n'
                                     '[[campaign]]\nid = "b"\non = ["SMS_MO"]\nchannel = "sms"\n')
    year_10000 = 253_402_300_800_000        # 10000-01-01T00:00Z
    (tmp_path / "y.msgpack").write_bytes(msgpack.packb([year_10000 - 1, 3, 13800010001, 0, 7101])
                                         + msgpack.packb([year_10000, 3, 13800010001, 0, 7101]))
    done = sigmatch("explain", tmp_path / "c.toml", tmp_path / "y.msgpack", "--msisdn", 13800010001, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "9999-12-31 23:59:59.999" in done.stdout and "10000-01-01 00:00:00.000" in done.stdout


def test_a_trace_that_breaks_part_way_explains_the_events_before_the_break(world, tmp_path):
    # helper-126: one error line and nothing else, where replay keeps what came before it
    import gzip
    config, traces, run = world
    columns = run.action_columns()
    msisdn = int(columns["msisdn"][0])
    packed = gzip.compress(Path(traces[0]).read_bytes())
    cut = tmp_path / "cut.msgpack.gz"
    cut.write_bytes(packed[:len(packed) * 3 // 4])
    done = sigmatch("explain", config, cut, "--msisdn", msisdn, "--json", "--no-progress")
    assert done.returncode == 1
    error = [line for line in done.stderr.splitlines() if "sigmatch: error:" in line]
    assert len(error) == 1 and "cut.msgpack.gz" in error[0] and "truncated gzip" in error[0], done.stderr
    whole = sigmatch("explain", config, traces[0], "--msisdn", msisdn, "--json", "--no-progress")
    before, after = json.loads(done.stdout), json.loads(whole.stdout)
    assert before["events"] and len(before["events"]) <= len(after["events"])
    assert before["events"] == after["events"][:len(before["events"])]
