"""End to end: the CRBT-at-school programme (README.md tells the story).

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
DAY = 86_400_000
MONDAY = 1_791_129_600_000      # 2026-10-05 00:00 at +08:00 (2026-10-04 16:00 UTC)

ANN, BO, HU, IVY = 13800010001, 13800010002, 13800010008, 13800010009


def at(day: int, hh: int, mm: int) -> int:
    return MONDAY + day * DAY + (hh * 60 + mm) * MINUTE


# (msisdn, campaign, kind, ts) of every action the story must produce, nothing else.
EXPECTED = {
    (IVY, "recharge_thanks", "send", at(0, 9, 30)),      # thanked at once for the top-up
    (ANN, "crbt_school", "send", at(0, 10, 5)),          # call 10:00 + 5 minutes
    (BO, "crbt_school", "send", at(0, 10, 35)),          # off-net peer, call 10:30 + 5 minutes
    (HU, "crbt_school", "send", at(0, 11, 5)),           # first call, 11:00 + 5 minutes
    (HU, "crbt_school", "send", at(30, 11, 15)),         # 30 days after 11:05: call 11:10 + 5 min
}
# (msisdn, campaign, ts) -> (trigger_ts, cell) of the triggering call.
TRIGGERS = {
    (ANN, "crbt_school", at(0, 10, 5)): (at(0, 10, 0), 7101),
    (BO, "crbt_school", at(0, 10, 35)): (at(0, 10, 30), 7102),
    (HU, "crbt_school", at(0, 11, 5)): (at(0, 11, 0), 7103),
    (HU, "crbt_school", at(30, 11, 15)): (at(30, 11, 10), 7103),
    (IVY, "recharge_thanks", at(0, 9, 30)): (at(0, 9, 30), 5009),
}


def rows(columns: dict) -> list[tuple]:
    """Columns of NumPy arrays -> rows of plain Python values."""
    names = list(columns)
    return [tuple(v.item() if hasattr(v, "item") else v for v in row)
            for row in zip(*(columns[n] for n in names))]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    out = tmp_path_factory.mktemp("crbt_school") / "out"
    engine = Engine.from_config(CONFIG)
    run = engine.replay(TRACE, out=out, drain=True)
    return engine, run, out


def test_actions_are_the_story(replayed):
    _, run, _ = replayed
    actions = rows(run.action_columns())
    got = {(a[3], a[2], a[6], a[1]) for a in actions}
    assert got == EXPECTED
    assert len(actions) == len(EXPECTED)
    for seq, ts, campaign, msisdn, channel, template, kind, trigger_ts, cell in actions:
        assert (trigger_ts, cell) == TRIGGERS[(msisdn, campaign, ts)]
        assert channel == "sms"
    assert [a[0] for a in actions] == list(range(1, len(EXPECTED) + 1))
    assert [a[1] for a in actions] == sorted(a[1] for a in actions)


def test_every_rule_shows_in_the_funnel(replayed):
    _, run, _ = replayed
    crbt = run.stats["campaigns"]["crbt_school"]
    # Ann, Bo, Hu (twice), Ivy, Lei and Mei matched; the others failed a match condition.
    assert crbt["matched"] == crbt["scheduled"] == 7
    assert crbt["recheck_failed"] == 2           # Lei (18:02 is after hours), Mei (phone off)
    assert crbt["suppressed_min_gap"] == 1       # Ivy, thanked for her top-up two days before
    assert crbt["sent"] == 4 and crbt["control"] == 0
    assert crbt["converted_send"] == 1           # Ann downloaded a CRBT
    assert run.stats["run"]["events"] == 24
    assert run.stats["run"]["unknown_subscribers"] == 0
    assert sum(run.stats["run"]["bad_events"].values()) == 0


def test_conversion_of_ann(replayed):
    _, run, _ = replayed
    actions = rows(run.action_columns())
    ann_offer = next(a[0] for a in actions if a[3] == ANN)
    assert rows(run.conversion_columns()) == [(1, at(0, 12, 0), "crbt_school", ANN, ann_offer, "send")]


def test_files_in_the_sms_channel(replayed):
    _, run, out = replayed
    assert sorted(p.name for p in out.iterdir()) == ["conversions", "sms", "stats.json"]
    written = []
    for path in sorted((out / "sms").glob("actions-*.csv")):
        with open(path, newline="") as f:
            written += [(int(r["seq"]), int(r["ts"]), r["campaign"], int(r["msisdn"]), r["template"], r["kind"])
                        for r in csv.DictReader(f)]
    expected = [(a[0], a[1], a[2], a[3], a[5], a[6]) for a in rows(run.action_columns())]
    assert written == expected
    assert not list(out.rglob(".*.tmp"))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["campaigns"]["crbt_school"]["sent"] == 4


def test_pending_offer_waits_for_drain():
    """Hu's second offer (due day 30, 11:15) comes after the last event: only a drain emits it."""
    engine = Engine.from_config(CONFIG)
    run = engine.replay(TRACE)
    assert engine.pending == 1
    assert (HU, at(30, 11, 15)) not in {(int(a["msisdn"]), int(a["ts"])) for a in run.actions}
    drained = engine.drain()
    assert [(int(a["msisdn"]), int(a["ts"])) for a in drained.actions] == [(HU, at(30, 11, 15))]


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
    spec = importlib.util.spec_from_file_location("crbt_school_make_trace", HERE / "make_trace.py")
    make_trace = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_trace)
    make_trace.write(tmp_path)
    for name in ("trace.msgpack", "lists/crbt_peers.roar"):
        assert (tmp_path / name).read_bytes() == (HERE / name).read_bytes(), name
    assert TRACE.stat().st_size < 200_000
