"""End to end: the top-up rescue (README.md tells the story).

Expected times are worked out here from the story, not taken from a previous run.
"""
import json
import zlib

import numpy as np
from click.testing import CliRunner

from engine.api import Engine
from engine.cli import main

MINUTE = 60_000
DAY = 86_400_000
MONDAY = 1_803_830_400_000      # 2027-03-01 00:00 at +08:00, day 0

ANA, BEN, CAT, DAN, EVA, FIN, GIL, IVY = (13800050011, 13800050020, 13800050012, 13800050021, 13800050022,
                                          13800050013, 13800050023, 13800050024)


def at(day: int, hh: int, mm: int = 0) -> int:
    return MONDAY + day * DAY + (hh * 60 + mm) * MINUTE


def variant(msisdn: int) -> str:
    """SPEC §3 step 7 with two variants of weight 1: W = 2."""
    return ("RESCUE_A", "RESCUE_B")[zlib.crc32(f"{msisdn}:topup_rescue:variant".encode()) % 2]


EXPECTED = [      # (msisdn, template, ts, trigger_ts) in emission order: a day after each notice
    (ANA, "RESCUE_B", at(4, 9, 0), at(3, 9, 0)),
    (BEN, "RESCUE_A", at(4, 9, 1), at(3, 9, 1)),
    (EVA, "RESCUE_A", at(4, 9, 4), at(3, 9, 4)),     # her recharge was exactly 3 days before
    (IVY, "RESCUE_A", at(5, 10), at(4, 10)),         # the next local day: its budget is new
]


def test_who_gets_the_sms(replayed, rows):
    _, run, _ = replayed
    actions = rows(run.action_columns())
    assert [(a[3], a[5], a[1], a[7]) for a in actions] == EXPECTED
    assert all(a[2] == "topup_rescue" and a[4] == "sms" and a[6] == "send" for a in actions)
    # each one's text is its variant by the SPEC's crc32, whatever the order of the story
    assert all(template == variant(msisdn) for msisdn, template, _, _ in EXPECTED)
    # Cat recharged after her notice, Dan the day before his, Fin and Gil were due when the
    # day's three SMS had gone
    assert not {CAT, DAN, FIN, GIL} & {a[3] for a in actions}


def test_the_funnel_says_why(replayed):
    _, run, _ = replayed
    f = run.stats["campaigns"]["topup_rescue"]
    # Dan does not match (not_after): 7 of the 8 notices do, each waits 24 h
    assert (f["matched"], f["scheduled"]) == (7, 7)
    assert f["absent"] == 1                             # Cat
    assert f["suppressed_campaign_budget"] == 2         # Fin and Gil, on day 4 (3 sent already)
    assert (f["sent"], f["control"], f["recheck_failed"]) == (4, 0, 0)
    assert (f["converted_send"], f["converted_control"]) == (2, 0)      # Ana and Ben recharged


def test_the_budget_is_per_local_day_of_the_sms(replayed):
    _, run, _ = replayed
    days = run.stats["campaigns"]["topup_rescue"]["days"]
    assert {day: counts["sent"] for day, counts in days.items()} == {"2027-03-05": 3, "2027-03-06": 1}


def test_variants_split_the_sends(replayed, written):
    _, run, out = replayed
    variants = run.stats["campaigns"]["topup_rescue"]["variants"]
    assert list(variants) == ["RESCUE_A", "RESCUE_B"]
    assert [(v["sent"], v["converted_send"]) for v in variants.values()] == [(3, 1), (1, 1)]
    assert json.loads((out / "stats.json").read_text())["campaigns"]["topup_rescue"]["variants"] == variants
    assert sorted(written(out / "sms", "actions-*.csv", ("msisdn", "template"))) == \
        sorted((msisdn, template) for msisdn, template, _, _ in EXPECTED)


def test_report_by_variant(replayed):
    from engine.closedloop.outputs import read_outputs
    from engine.closedloop.report import build_report
    _, _, out = replayed
    report = build_report(read_outputs([out]))
    variants = report["campaigns"]["topup_rescue"]["variants"]
    assert {t: (v["sends"], v["conversions_send"]) for t, v in variants.items()} == {"RESCUE_A": (3, 1),
                                                                                     "RESCUE_B": (1, 1)}


def test_check_lists_the_variants(example):
    result = CliRunner().invoke(main, ["check", str(example.config)])
    assert result.exit_code == 0, result.output
    assert "      variants (template, weight, share): RESCUE_A 1 (50%), RESCUE_B 1 (50%)" in result.output.splitlines()


def test_the_policy_view_names_each_ones_text(replayed):
    from engine.service.lookup import policy_view
    engine, _, _ = replayed
    for msisdn in (ANA, BEN, CAT, DAN, EVA, FIN, GIL, IVY):
        view = policy_view(engine, msisdn)
        assert view["campaigns"]["topup_rescue"]["template"] == variant(msisdn)
    assert policy_view(engine, CAT)["markers"] == {"recharged": at(3, 14)}


def _cut(trace: bytes, events: int) -> int:
    """The offset after the first `events` values of the trace."""
    import msgpack
    unpacker = msgpack.Unpacker()
    unpacker.feed(trace)
    for _ in range(events):
        unpacker.unpack()
    return unpacker.tell()


def test_a_checkpoint_or_a_reload_in_the_middle_changes_nothing(example, replayed, tmp_path):
    # budgets are engine state: a cut while the day's sends are being counted (after 11 values:
    # Ana's and Ben's SMS went out at Dan's recharge, Eva's, Fin's and Gil's are due) must still
    # let Eva have the day's third SMS and stop Fin and Gil
    _, whole, _ = replayed
    trace = example.trace.read_bytes()
    for events in (3, 10, 11, 12):
        cut = _cut(trace, events)
        first = Engine.from_config(example.config)
        a = first.replay(trace[:cut])
        first.checkpoint(tmp_path / f"cp{events}")
        for second in (Engine.from_config(example.config).restore(tmp_path / f"cp{events}"), first.reload()):
            b = second.replay(trace[cut:], drain=True)
            assert np.array_equal(np.concatenate([a.actions, b.actions]), whole.actions), events
            assert second.stats["campaigns"] == {cid: {k: v for k, v in f.items() if k not in ("days", "variants")}
                                                 for cid, f in whole.stats["campaigns"].items()}, events


def test_reference_model_agrees(replayed, assert_reference_model_agrees):
    _, run, _ = replayed
    assert_reference_model_agrees(run)


def test_committed_files_come_from_make_trace(assert_make_trace_reproduces):
    assert_make_trace_reproduces()
