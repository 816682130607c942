"""End to end: the airport mobile-newspaper programme (README.md tells the story).

Expected times are worked out here from the story, not taken from a previous run.
"""
import csv
import importlib.util
import json
from pathlib import Path

import pytest

from engine.api import Engine
from engine.compile import load_world
from engine.config import load_config
from engine.model import ReferenceModel

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "campaigns.toml"
TRACE = HERE / "trace.msgpack"

MINUTE = 60_000
MONDAY = 1_791_129_600_000      # 2026-10-05 00:00 at +08:00

AMY, HAO = 13800020001, 13800020008


def at(hh: int, mm: int) -> int:
    return MONDAY + (hh * 60 + mm) * MINUTE


# (msisdn, campaign, kind, ts): 20 minutes after entering, for the two who stayed, powered on.
EXPECTED = {
    (AMY, "airport_newspaper", "send", at(8, 20)),    # entered 08:00
    (HAO, "airport_newspaper", "send", at(21, 50)),   # switched on at the airport 21:30
}
TRIGGERS = {AMY: (at(8, 0), 8801), HAO: (at(21, 30), 8802)}


def rows(columns: dict) -> list[tuple]:
    names = list(columns)
    return [tuple(v.item() if hasattr(v, "item") else v for v in row)
            for row in zip(*(columns[n] for n in names))]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    out = tmp_path_factory.mktemp("airport_newspaper") / "out"
    engine = Engine.from_config(CONFIG)
    run = engine.replay(TRACE, out=out, drain=True)
    return engine, run, out


def test_actions_are_the_story(replayed):
    _, run, _ = replayed
    actions = rows(run.action_columns())
    assert {(a[3], a[2], a[6], a[1]) for a in actions} == EXPECTED
    assert len(actions) == len(EXPECTED)
    for seq, ts, campaign, msisdn, channel, template, kind, trigger_ts, cell in actions:
        assert (trigger_ts, cell) == TRIGGERS[msisdn]
        assert ts - trigger_ts == 20 * MINUTE
        assert (channel, template) == ("mms", "NEWSPAPER_TRIAL")


def test_every_rule_shows_in_the_funnel(replayed):
    _, run, _ = replayed
    f = run.stats["campaigns"]["airport_newspaper"]
    # Amy, Ben, Cai, Gus and Hao entered with a large-screen handset; Dan never entered,
    # Eva has no such handset, Fei is on the do-not-disturb list.
    assert f["matched"] == f["scheduled"] == 5
    assert f["recheck_failed"] == 2             # Ben left, Cai switched off
    assert f["suppressed_quiet_hours"] == 1     # Gus: due 22:05
    assert f["sent"] == 2 and f["control"] == 0
    assert f["converted_send"] == 1             # Amy ordered the newspaper
    assert run.stats["run"]["events"] == 140


def test_conversion_of_amy(replayed):
    _, run, _ = replayed
    assert rows(run.conversion_columns()) == [(1, at(8, 45), "airport_newspaper", AMY, 1, "send")]


def test_files_in_the_mms_channel(replayed):
    _, run, out = replayed
    assert sorted(p.name for p in out.iterdir()) == ["conversions", "mms", "stats.json"]
    written = []
    for path in sorted((out / "mms").glob("actions-*.csv")):
        with open(path, newline="") as f:
            written += [(int(r["seq"]), int(r["ts"]), r["campaign"], int(r["msisdn"]), int(r["trigger_ts"]),
                         int(r["cell"])) for r in csv.DictReader(f)]
    expected = [(a[0], a[1], a[2], a[3], a[7], a[8]) for a in rows(run.action_columns())]
    assert written == expected
    assert json.loads((out / "stats.json").read_text())["campaigns"]["airport_newspaper"]["sent"] == 2


def test_late_timers_resolve_only_at_drain():
    """No event comes after 21:45: Hao's offer (21:50) and Gus's (22:05) wait for the drain."""
    engine = Engine.from_config(CONFIG)
    run = engine.replay(TRACE)
    assert [(int(a["msisdn"]), int(a["ts"])) for a in run.actions] == [(AMY, at(8, 20))]
    assert engine.pending == 2
    drained = engine.drain()
    assert [(int(a["msisdn"]), int(a["ts"])) for a in drained.actions] == [(HAO, at(21, 50))]
    assert engine.pending == 0
    assert drained.stats["campaigns"]["airport_newspaper"]["suppressed_quiet_hours"] == 1


def test_reference_model_agrees(replayed):
    _, run, _ = replayed
    config = load_config(CONFIG)
    world = load_world(config)
    model = ReferenceModel(config, world.profiles, world.lists, world.areas)
    model.feed(TRACE.read_bytes())
    model.finish()
    model.drain()
    assert list(model.actions) == rows(run.action_columns())
    assert list(model.conversions) == rows(run.conversion_columns())


def test_committed_files_come_from_make_trace(tmp_path):
    spec = importlib.util.spec_from_file_location("airport_newspaper_make_trace", HERE / "make_trace.py")
    make_trace = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_trace)
    make_trace.write(tmp_path)
    for name in ("trace.msgpack", "lists/mms_handsets.roar"):
        assert (tmp_path / name).read_bytes() == (HERE / name).read_bytes(), name
    assert TRACE.stat().st_size < 200_000
