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
    assert done.stderr.strip().splitlines() == [mask_numbers(f"sigmatch: {number} is not a subscriber of {config}'s profiles")]
    assert done.stdout == ""


def test_a_malformed_number_is_one_line(world):
    config, traces, _ = world
    done = sigmatch("explain", config, *traces, "--msisdn", "0123")
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1 and "--msisdn" in done.stderr
