"""`sigmatch diff` (engine.closedloop.diff): its figures equal the difference of two separate
`sigmatch replay` runs, computed here from their output directories (contacts, gained and
lost per campaign, channel and local day; the budgets reached); from a checkpoint too; what
a new campaign adds; one-line refusals naming the file; no MSISDN in what it writes."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from engine.api import Engine
from engine.closedloop.diff import build_diff, format_diff

DAY = 86_400_000
OFFSET = 8 * 3_600_000          # the generated world's +08:00


def sigmatch(*args):
    proc = subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    return proc.returncode, proc.stdout, proc.stderr.strip().splitlines()


def one_line_error(code, lines, *words):
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("sigmatch: error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])


NEW_CAMPAIGN = """
[[campaign]]
id = "new_data_offer"
priority = 40
on = ["DATA_SESSION"]
cooldown = "1d"
channel = "push"
template = "DATA_OFFER"
holdout = 0.1
"""


def edited(text: str, campaign: str, *lines: str) -> str:
    """The configuration with `lines` added to campaign `campaign`'s table."""
    anchor = f'id = "{campaign}"\n'
    assert anchor in text
    return text.replace(anchor, anchor + "".join(f"{line}\n" for line in lines))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A generated world (its trace in two files) and two configurations beside its own: A
    with budgets that bite, B = A plus a new campaign, a daily budget of its own and a total
    budget raised."""
    from engine.world.gen import generate
    directory = tmp_path_factory.mktemp("world") / "w"
    generated = generate(directory, subscribers=2_000, events=30_000, campaigns=2, days=2, trace_files=2,
                         progress=False)
    text = Path(generated.config).read_text()
    a = edited(text, "s01_retention_churn", "total_budget = 20")
    a = edited(a, "topup_rescue", "daily_budget = 25")
    # gen's [channels] caps the SMS (out of reach at this size); BOSS gets a cap that bites
    a = a.replace("[channels]\n", "[channels]\nboss = { daily_budget = 6 }\n", 1)
    b = edited(text, "s01_retention_churn", "total_budget = 30")
    b = edited(b, "topup_rescue", "daily_budget = 25")
    b = edited(b, "s02_plan_upgrade", "daily_budget = 3")
    b = b.replace("[channels]\n", "[channels]\nboss = { daily_budget = 6 }\n", 1) + NEW_CAMPAIGN
    (directory / "a.toml").write_text(a)
    (directory / "b.toml").write_text(b)
    return generated, directory / "a.toml", directory / "b.toml"


# --------------------------------------------------------------------------- the expected figures

def actions_of(out: Path) -> pa.Table:
    """Every action record of an output directory, in seq order."""
    tables = [pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(
        column_types={"msisdn": pa.uint64(), "seq": pa.uint64()}))
        for channel in sorted(p for p in out.iterdir() if p.is_dir() and p.name not in ("conversions", "dead_letters"))
        for f in sorted(channel.glob("actions-*.csv"))]
    table = pa.concat_tables(tables) if tables else None
    return table.sort_by("seq")


def contacts_of(out: Path) -> list[dict]:
    rows = actions_of(out).to_pylist()
    for r in rows:
        r["day"] = (r["ts"] + OFFSET) // DAY
    return rows


def expected(rows_a: list[dict], rows_b: list[dict], unit) -> dict:
    """{unit: (contacts_a, contacts_b, gained, lost)}: contacts keyed by (campaign, msisdn,
    trigger_ts) and matched within the unit, as multisets."""
    def keyed(rows):
        return Counter((unit(r), r["campaign"], r["msisdn"], r["trigger_ts"]) for r in rows)
    a, b = keyed(rows_a), keyed(rows_b)
    out: dict = {}
    for key in set(a) | set(b):
        na, nb = a.get(key, 0), b.get(key, 0)
        ca, cb, g, lo = out.get(key[0], (0, 0, 0, 0))
        out[key[0]] = (ca + na, cb + nb, g + max(nb - na, 0), lo + max(na - nb, 0))
    return out


def local_day(day: int) -> str:
    from engine.api import local_day as name
    return name(day)


def budgets_reached(rows: list[dict], config: Path, start=None) -> dict:
    """{(budget, id, day): ts} of the sends that brought a budget's use to its limit, counted
    from the use `start` gives: ({campaign: (that day's sends, all sends)}, {channel: that
    day's sends}, that local day)."""
    from engine.language.config import load_config
    c = load_config(config)
    campaigns_used, channels_used, start_day = start or ({}, {}, None)
    sends = [r for r in rows if r["kind"] == "send"]
    out = {}

    def daily(kind, name, mine, limit, used_then):
        for day in sorted({r["day"] for r in mine}):
            on_day = [r for r in mine if r["day"] == day]
            used = used_then if day == start_day else 0
            if 0 < limit - used <= len(on_day):
                out[(kind, name, local_day(day))] = on_day[limit - used - 1]["ts"]

    for spec in c.campaigns:
        mine = [r for r in sends if r["campaign"] == spec.id]
        today, ever = campaigns_used.get(spec.id, (0, 0))
        if spec.total_budget is not None and 0 < spec.total_budget - ever <= len(mine):
            out[("campaign total", spec.id, None)] = mine[spec.total_budget - ever - 1]["ts"]
        if spec.daily_budget is not None:
            daily("campaign daily", spec.id, mine, spec.daily_budget, today)
    for name, limit in c.channel_budgets.items():
        daily("channel daily", name, [r for r in sends if r["channel"] == name], limit, channels_used.get(name, 0))
    return out


def check_against(document: dict, rows_a: list[dict], rows_b: list[dict], config_a: Path, config_b: Path,
                  start=None):
    """The diff document equals the difference of the two runs' actions, unit by unit."""
    def same(entry, figures):
        assert (entry["contacts_a"], entry["contacts_b"], entry["gained"], entry["lost"]) == figures
        assert entry["contacts_b"] - entry["contacts_a"] == entry["gained"] - entry["lost"]

    per_campaign = expected(rows_a, rows_b, lambda r: r["campaign"])
    assert set(document["campaigns"]) >= set(per_campaign)
    for cid, entry in document["campaigns"].items():
        same(entry, per_campaign.get(cid, (0, 0, 0, 0)))
        for kind, key in (("send", "sends"), ("control", "controls"), ("global_control", "global_controls")):
            assert entry[f"{key}_a"] == sum(r["campaign"] == cid and r["kind"] == kind for r in rows_a)
            assert entry[f"{key}_b"] == sum(r["campaign"] == cid and r["kind"] == kind for r in rows_b)
    per_campaign_day = expected(rows_a, rows_b, lambda r: (r["campaign"], local_day(r["day"])))
    assert {(cid, day) for cid, e in document["campaigns"].items() for day in e["days"]} == set(per_campaign_day)
    for (cid, day), figures in per_campaign_day.items():
        same(document["campaigns"][cid]["days"][day], figures)
    per_channel = expected(rows_a, rows_b, lambda r: r["channel"])
    for name, figures in per_channel.items():
        same(document["channels"][name], figures)
    per_channel_day = expected(rows_a, rows_b, lambda r: (r["channel"], local_day(r["day"])))
    assert {(name, day) for name, e in document["channels"].items() for day in e["days"]} == set(per_channel_day)
    for (name, day), figures in per_channel_day.items():
        same(document["channels"][name]["days"][day], figures)
    whole = expected(rows_a, rows_b, lambda r: None)[None]
    same(document["total"], whole)
    assert document["days"] == sorted({day for _, day in per_channel_day})

    reached = {side: budgets_reached(rows, config, start)
               for side, rows, config in (("a", rows_a, config_a), ("b", rows_b, config_b))}
    shown = {side: {(r["budget"], r["id"], r["day"]): r[f"reached_{side}"] for r in document["budgets"]
                    if r[f"reached_{side}"] is not None} for side in ("a", "b")}
    assert shown == reached
    return reached


@pytest.fixture(scope="module")
def replays(world, tmp_path_factory):
    """A and B each replayed by `sigmatch replay`, separately."""
    generated, config_a, config_b = world
    base = tmp_path_factory.mktemp("replays")
    for name, config in (("a", config_a), ("b", config_b)):
        code, _, lines = sigmatch("replay", config, *generated.traces, "--out", base / name, "--no-progress")
        assert code == 0, lines
    return contacts_of(base / "a"), contacts_of(base / "b")


@pytest.fixture(scope="module")
def diffed(world):
    generated, config_a, config_b = world
    code, stdout, lines = sigmatch("diff", config_a, config_b, *generated.traces, "--json", "--no-progress")
    assert code == 0, lines
    return json.loads(stdout)


def test_diff_equals_the_difference_of_two_replays(world, replays, diffed):
    _, config_a, config_b = world
    rows_a, rows_b = replays
    reached = check_against(diffed, rows_a, rows_b, config_a, config_b)
    # the world was made for every figure to be there: contacts of each kind, each side
    # gaining and losing, each kind of budget reached
    assert diffed["total"]["gained"] and diffed["total"]["lost"]
    assert any(e["controls_a"] for e in diffed["campaigns"].values())
    assert {k[0] for k in reached["a"]} == {"campaign total", "campaign daily", "channel daily"}
    assert ("campaign daily", "s02_plan_upgrade") in {k[:2] for k in reached["b"]}
    assert ("campaign daily", "s02_plan_upgrade") not in {k[:2] for k in reached["a"]}


def test_the_json_shape_the_issue_names(diffed):
    assert diffed["diff"] == 1 and diffed["utc_offset"] == "+08:00"
    for entry in diffed["campaigns"].values():
        assert {"contacts_a", "contacts_b", "gained", "lost"} <= set(entry)
    for entry in diffed["channels"].values():
        for day, counts in entry["days"].items():
            assert len(day) == 10 and {"contacts_a", "contacts_b"} <= set(counts)
    budget = diffed["budgets"][0]
    assert set(budget) == {"budget", "id", "day", "limit_a", "limit_b", "reached_a", "reached_b",
                           "spent_at_start_a", "spent_at_start_b"}


def test_what_a_new_campaign_adds(diffed):
    new = diffed["campaigns"]["new_data_offer"]
    assert new["in"] == "b" and new["contacts_a"] == 0 and new["gained"] == new["contacts_b"] > 0
    assert new["channel_a"] is None and new["channel_b"] == "push"
    assert diffed["channels"]["push"]["contacts_a"] == 0
    text = format_diff(diffed)
    assert f"B adds campaign new_data_offer (push): {new['contacts_b']:,} contacts" in text
    assert "new in B" in text
    lines = [line for line in text.splitlines() if line.startswith("the campaigns of both:")]
    kept = [e for e in diffed["campaigns"].values() if e["in"] == "both"]
    assert lines == [f"the campaigns of both: {sum(e['gained'] for e in kept):,} contacts gained, "
                     f"{sum(e['lost'] for e in kept):,} lost (net {sum(e['contacts_b'] - e['contacts_a'] for e in kept):+,})"]


def test_contacts_taken_through_the_policy_are_each_sides_takers(world, diffed):
    """taken: each side's Engine.takers; every suppression by min_gap, max_per_day or
    max_in_window has its taker, so a campaign's pairs add up to its funnel's count."""
    generated, config_a, config_b = world
    for side, config in (("a", config_a), ("b", config_b)):
        engine = Engine.from_config(config, record_takers=True)
        engine.replay(list(generated.traces), drain=True, keep=False)
        assert {(r["campaign"], r["by"], r["rule"]): r[side] for r in diffed["taken"] if r[side]} == engine.takers()
        for cid, entry in diffed["campaigns"].items():
            funnel = entry[f"funnel_{side}"]
            if funnel is None:
                continue
            for rule in ("min_gap", "max_per_day", "max_in_window"):
                assert sum(r[side] for r in diffed["taken"] if r["campaign"] == cid and r["rule"] == rule) == \
                    funnel[f"suppressed_{rule}"], (side, cid, rule)
    # the new campaign takes contacts from the others in B, and can take none in A
    took = [r for r in diffed["taken"] if r["by"] == "new_data_offer"]
    assert took and all(r["a"] == 0 for r in took) and sum(r["b"] for r in took) > 0
    text = format_diff(diffed)
    assert f"its contacts suppress {sum(r['b'] for r in took):,} actions of " in text
    assert "actions lost to another campaign through the contact policy" in text


def test_late_events_are_shown_and_warned_of(world, diffed):
    """Each side's late events (as replay counts them) in --json and the summary; a warning
    when there are any: traces in the wrong order make a diff of contacts at the clock's time."""
    assert diffed["a"]["late_events"] == diffed["b"]["late_events"] == 0
    assert not any("late" in w for w in diffed["warnings"])
    events, unknown = diffed["a"]["events"], diffed["a"]["unknown_subscribers"]
    said = f"(0 bad, {unknown:,} unknown subscribers, 0 late)"
    assert f"events: {events:,} in A {said}, {events:,} in B {said}" in format_diff(diffed)
    generated, config_a, config_b = world
    first, second = generated.traces
    run = Engine.from_config(config_a).replay([second, first], drain=True, keep=False)
    expected_late = run.stats["run"]["late_events"]
    assert expected_late > 0
    code, stdout, lines = sigmatch("diff", config_a, config_b, second, first, "--json", "--no-progress")
    assert code == 0, lines
    document = json.loads(stdout)
    assert document["a"]["late_events"] == document["b"]["late_events"] == expected_late
    warned = [w for w in document["warnings"] if "late" in w]
    assert len(warned) == 2 and f"{expected_late:,} of {events:,} events late" in warned[0]
    text = format_diff(document)
    said = f"(0 bad, {unknown:,} unknown subscribers, {expected_late:,} late)"
    assert f"events: {events:,} in A {said}, {events:,} in B {said}" in text
    assert f"warning: A ({config_a}): {expected_late:,} of {events:,} events late" in text


def replay_said(config: Path, trace: Path, out: Path) -> tuple[str, list[str]]:
    """What `sigmatch replay` says of its events: the figures of its run line ('30,000 events
    (5,000 bad in 5,000 bytes, 0 unknown subscribers, 0 late)') and its warnings' messages."""
    code, stdout, lines = sigmatch("replay", config, trace, "--out", out, "--no-progress")
    assert code == 0, lines
    figures = stdout.splitlines()[0].split("), ")[0] + ")"
    return figures, [line.split(" WARNING sigmatch: ", 1)[1] for line in lines if " WARNING sigmatch: " in line]


def test_bad_events_are_shown_and_warned_of_in_replays_words(world, tmp_path):
    """helper-133: 5,000 bytes of junk in a trace, which replay counts ('4,995 bad in 5,015
    bytes'), left the diff's warnings empty and its sides without a bad event. Each side
    carries its bad events, their bytes and its unknown subscribers; the summary says them
    as replay's line does, and the warnings hold that line and replay's own warnings (here a
    bad value holding many events' bytes), once for both sides, in the text, --json and page."""
    generated, config_a, config_b = world
    first, second = (Path(t).read_bytes() for t in generated.traces)
    # junk of one-byte bad values, then an array header of 256 that makes one bad value of
    # the 256 events after it
    junk = tmp_path / "junkmid.msgpack"
    junk.write_bytes(first + b"\x07" * 5000 + b"\xdc\x01\x00" + second)
    figures, warned = replay_said(config_a, junk, tmp_path / "out")
    assert "5,001 bad in " in figures
    assert len(warned) == 1 and "holds" in warned[0] and "as many as about 256 events" in warned[0]
    page = tmp_path / "d.html"
    code, stdout, lines = sigmatch("diff", config_a, config_b, junk, "--json", "--html", page, "--no-progress")
    assert code == 0, lines
    document = json.loads(stdout)
    for side in ("a", "b"):
        assert document[side]["bad_events"] == 5_001 and document[side]["bad_bytes"] > 5_000
        assert f"{document[side]['events']:,} events {figures.split(' events ', 1)[1]}" == figures
    both = f"A ({config_a}) and B ({config_b}): "
    assert document["warnings"] == [f"{both}{figures}: bad events are skipped (docs/semantics.md, "
                                    '"Good and bad events")', f"{both}{warned[0]}"]
    # the CLI logs them; the table and the page say them too
    assert sum(w in line for w in document["warnings"] for line in lines) == 2
    events = figures.split(" events ", 1)
    assert f"events: {events[0]} in A {events[1]}, {events[0]} in B {events[1]}" in format_diff(document)
    import html
    text = html.unescape(page.read_text())
    assert f"events: {events[0]} in A {events[1]}" in text and warned[0] in text


def test_no_subscriber_in_the_snapshot_is_warned_of_as_replay_warns(world, tmp_path):
    """helper-133: `diff A A TRACE --state STATE` with no event's subscriber in A's profile
    snapshot gave no warning, where replay warns. Each side counts its unknown subscribers,
    and the diff gives replay's warning, once when both sides give it."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    generated, config_a, _ = world
    first, second = generated.traces
    directory = Path(generated.config).parent
    table = pq.read_table(directory / "profiles.parquet")
    column = table.schema.get_field_index("msisdn")
    # the same subscribers under other numbers: another network's snapshot
    other = table.set_column(column, "msisdn", pc.add(table["msisdn"], pa.scalar(10 ** 12, table["msisdn"].type)))
    pq.write_table(other, directory / "elsewhere.parquet")
    elsewhere = directory / "elsewhere.toml"
    elsewhere.write_text(config_a.read_text().replace('profiles   = "profiles.parquet"',
                                                      'profiles   = "elsewhere.parquet"'))
    _, warned = replay_said(elsewhere, second, tmp_path / "out")
    assert len(warned) == 1 and warned[0].startswith("no event's subscriber is in the profile snapshot")
    engine = Engine.from_config(config_a)
    engine.replay(first)
    checkpoint = engine.checkpoint(tmp_path / "state.ckpt")
    code, stdout, lines = sigmatch("diff", elsewhere, elsewhere, second, "--state", checkpoint, "--json",
                                   "--no-progress")
    assert code == 0, lines
    document = json.loads(stdout)
    assert document["a"]["unknown_subscribers"] == document["a"]["events"] > 0
    assert f"A ({elsewhere}) and B ({elsewhere}): {warned[0]}" in document["warnings"]
    assert sum(warned[0] in line for line in lines) == 1
    # against A, which knows them, only B's side says it
    code, stdout, lines = sigmatch("diff", config_a, elsewhere, second, "--json", "--no-progress")
    assert code == 0, lines
    document = json.loads(stdout)
    assert document["a"]["unknown_subscribers"] < document["b"]["unknown_subscribers"] == document["b"]["events"]
    assert f"B ({elsewhere}): {warned[0]}" in document["warnings"]
    assert not any(w.startswith("A (") and "no event's subscriber" in w for w in document["warnings"])


def _children(pid: int) -> set[int]:
    try:
        return {int(n) for n in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def assert_ended(pids, what: str) -> None:
    """Each of `pids` has ended (or is a zombie) within 5 s."""
    for pid in pids:
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"{what} ({pid}) still runs after the command ended")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads a process's children from /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_diff_ends_its_replays_without_a_traceback(world, sig):
    """SIGTERM (or Ctrl-C) to diff ends both replay processes with it, and nothing but one
    line is written: the sides neither run on nor print a broken pipe's traceback."""
    generated, config_a, config_b = world
    # the trace many times over: the sides are still replaying when the signal comes
    traces = list(generated.traces) * 600
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "diff", str(config_a), str(config_b),
                             *map(str, traces), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    sides: set[int] = set()
    for _ in range(600):
        sides = _children(proc.pid)
        if len(sides) >= 2 or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert len(sides) >= 2, "the two sides never started"
    time.sleep(1.0)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)        # EOF: the sides, which share its stderr, have ended too
    assert proc.returncode != 0
    assert_ended(sides, "a side of diff")
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    # the warning that the traces are given again and again is the test's doing
    lines = "\n".join(line for line in stderr.splitlines() if "the same events as" not in line).strip().splitlines()
    assert len(lines) == 1, lines
    if sig == signal.SIGTERM:
        assert lines[0].startswith("sigmatch: error: ") and "SIGTERM" in lines[0]


def test_a_configuration_against_itself_changes_nothing(world):
    generated, config_a, _ = world
    code, stdout, lines = sigmatch("diff", config_a, config_a, *generated.traces, "--json", "--no-progress")
    assert code == 0, lines
    document = json.loads(stdout)
    assert document["total"]["contacts_a"] == document["total"]["contacts_b"] > 0
    assert document["total"]["gained"] == document["total"]["lost"] == 0
    for row in document["budgets"]:
        assert row["reached_a"] == row["reached_b"]
    assert document["taken"] and all(r["a"] == r["b"] for r in document["taken"])


def test_from_a_checkpoint_equals_two_replays_from_it(world, tmp_path):
    """--state: both start from the state A had after the first trace file (B carries it over
    as a reload does) and replay the second; budgets count from the use the state holds."""
    generated, config_a, config_b = world
    first, second = generated.traces
    engine = Engine.from_config(config_a)
    engine.replay(first)
    checkpoint = engine.checkpoint(tmp_path / "state.ckpt")
    used, channels = engine._core.budgets_used()
    start = ({c.id: used[i] for i, c in enumerate(engine.campaigns)}, channels,
             (engine.clock + OFFSET) // DAY)
    for name in ("a", "b"):
        restored = Engine.from_config(config_a).restore(checkpoint)
        if name == "b":
            restored = restored.reload(config_b)
        restored.replay(second, out=tmp_path / name, drain=True, keep=False)
    code, stdout, lines = sigmatch("diff", config_a, config_b, second, "--state", checkpoint, "--json",
                                   "--no-progress")
    assert code == 0, lines
    document = json.loads(stdout)
    assert document["state"] == str(checkpoint)
    check_against(document, contacts_of(tmp_path / "a"), contacts_of(tmp_path / "b"), config_a, config_b,
                  start=start)
    # the world was made for A to spend s01's total budget (20) in the first file, and B (30) not
    total = {r["id"]: r for r in document["budgets"] if r["budget"] == "campaign total"}
    assert start[0]["s01_retention_churn"][1] >= 20
    assert total["s01_retention_churn"]["spent_at_start_a"] and not total["s01_retention_churn"]["spent_at_start_b"]


# --------------------------------------------------------------------------- the comparison by hand

def side(config: str, campaigns, actions, *, clock=None, used=None) -> dict:
    """A side as replay_both gives it: campaigns as (id, channel, daily, total), actions as
    (ts, trigger_ts, msisdn, campaign index, kind) in seq order."""
    columns = list(zip(*actions)) if actions else [(), (), (), (), ()]
    return {
        "config": config, "identity": {"sha256": None}, "utc_offset_ms": OFFSET,
        "campaigns": [{"id": c, "channel": ch, "daily_budget": d, "total_budget": t} for c, ch, d, t in campaigns],
        "channel_budgets": {},
        "actions": {"ts": np.array(columns[0], np.int64), "trigger_ts": np.array(columns[1], np.int64),
                    "msisdn": np.array(columns[2], np.uint64), "campaign": np.array(columns[3], np.uint16),
                    "kind": np.array(columns[4], np.uint8)},
        "funnel": {}, "events": 0, "pending": 0,
        "start": {"clock": clock, "campaigns": used or {}, "channels": {}},
        "subscribers": (3, 0), "profiles": None, "takers": [],
    }


T0 = 1_793_548_800_000 + 10 * 3_600_000         # 2026-11-02 10:00 local
M1, M2 = 13_800_000_001, 13_800_000_002


def test_a_contact_made_a_day_later_is_lost_and_gained_on_its_days_only():
    a = side("a.toml", [("promo", "sms", None, None)], [(T0, T0, M1, 0, 0), (T0, T0, M2, 0, 0)])
    # B delays M1's contact past midnight: the same contact (campaign, msisdn, trigger_ts)
    b = side("b.toml", [("promo", "sms", None, None)], [(T0, T0, M2, 0, 0), (T0 + DAY, T0, M1, 0, 1)])
    d = build_diff(a, b)
    promo = d["campaigns"]["promo"]
    assert (promo["contacts_a"], promo["contacts_b"], promo["gained"], promo["lost"]) == (2, 2, 0, 0)
    assert (promo["sends_a"], promo["sends_b"], promo["controls_b"]) == (2, 1, 1)
    assert promo["days"] == {"2026-11-02": {"contacts_a": 2, "contacts_b": 1, "gained": 0, "lost": 1},
                             "2026-11-03": {"contacts_a": 0, "contacts_b": 1, "gained": 1, "lost": 0}}
    assert d["channels"]["sms"]["days"] == promo["days"]
    assert d["days"] == ["2026-11-02", "2026-11-03"]


def test_a_key_twice_counts_twice_and_a_channel_moved_is_lost_and_gained_there():
    a = side("a.toml", [("promo", "sms", None, None)], [(T0, T0, M1, 0, 0)])
    b = side("b.toml", [("promo", "push", None, None)], [(T0, T0, M1, 0, 0), (T0 + 1, T0, M1, 0, 0)])
    d = build_diff(a, b)
    assert {k: d["campaigns"]["promo"][k] for k in ("contacts_a", "contacts_b", "gained", "lost")} == \
        {"contacts_a": 1, "contacts_b": 2, "gained": 1, "lost": 0}
    assert (d["channels"]["sms"]["lost"], d["channels"]["push"]["gained"]) == (1, 2)
    assert "promo moves from channel sms to push" in format_diff(d)


def test_budgets_reached_by_the_nth_send_of_each_side():
    sends = [(T0 + i * 1000, T0 + i * 1000, M1 + i, 0, 0) for i in range(5)]
    a = side("a.toml", [("promo", "sms", 3, 4)], sends)
    b = side("b.toml", [("promo", "sms", None, 5)], sends, clock=T0 - 1, used={"promo": (0, 1)})
    rows = {(r["budget"], r["day"]): r for r in build_diff(a, b)["budgets"]}
    assert rows[("campaign daily", "2026-11-02")]["reached_a"] == T0 + 2000
    assert rows[("campaign daily", "2026-11-02")]["limit_b"] is None
    total = rows[("campaign total", None)]
    # B started with one send counted against its total of 5: its 4th send of the trace reaches it
    assert (total["reached_a"], total["reached_b"]) == (T0 + 3000, T0 + 3000)
    spent = side("b.toml", [("promo", "sms", None, 5)], [], clock=T0, used={"promo": (5, 5)})
    total = build_diff(a, spent)["budgets"][-1]
    assert total["spent_at_start_b"] and total["reached_b"] is None


def test_bad_events_are_said_once_when_both_sides_say_the_same():
    a = side("a.toml", [("promo", "sms", None, None)], [])
    b = side("b.toml", [("promo", "sms", None, None)], [])
    for s in (a, b):
        s.update(events=1_000, bad_events=3, bad_bytes=1_200, unknown_subscribers=2, replay_said=["the bad value, ..."])
    d = build_diff(a, b)
    assert (d["a"]["bad_events"], d["a"]["bad_bytes"], d["a"]["unknown_subscribers"]) == (3, 1_200, 2)
    assert d["warnings"] == [
        "A (a.toml) and B (b.toml): 1,000 events (3 bad in 1,200 bytes, 2 unknown subscribers, 0 late): bad events "
        'are skipped (docs/semantics.md, "Good and bad events")',
        "A (a.toml) and B (b.toml): the bad value, ..."]
    # B's profiles know fewer of the trace's subscribers: each side its own line; no bad
    # event, no warning of them
    b.update(unknown_subscribers=7, replay_said=[])
    assert [w.split(":")[0] for w in build_diff(a, b)["warnings"]] == ["A (a.toml)", "B (b.toml)", "A (a.toml)"]
    for s in (a, b):
        s.update(bad_events=0, bad_bytes=0, replay_said=[])
    assert build_diff(a, b)["warnings"] == []
    assert "events: 1,000 in A (0 bad, 2 unknown subscribers, 0 late), 1,000 in B (0 bad, 7 unknown subscribers, " \
           "0 late)" in format_diff(build_diff(a, b))


# --------------------------------------------------------------------------- refusals, privacy, help

def test_refusals_are_one_line_naming_the_file(world, tmp_path):
    generated, config_a, config_b = world
    trace = generated.traces[0]
    one_line_error(*sigmatch("diff", tmp_path / "none.toml", config_b, trace)[::2], "none.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text(config_b.read_text().replace('id = "new_data_offer"', 'id = "new_data_offer"\nprioriti = 3'))
    one_line_error(*sigmatch("diff", config_a, broken, trace)[::2], "broken.toml", "prioriti")
    shifted = config_b.with_name("shifted.toml")
    shifted.write_text(config_b.read_text().replace('utc_offset = "+08:00"', 'utc_offset = "+07:00"'))
    try:
        one_line_error(*sigmatch("diff", config_a, shifted, trace)[::2], "shifted.toml", "utc_offset", "+07:00")
    finally:
        shifted.unlink()
    one_line_error(*sigmatch("diff", config_a, config_b, tmp_path / "no.msgpack")[::2], "no.msgpack")
    text = tmp_path / "notes.msgpack"
    text.write_text("not an event stream\n" * 100)
    one_line_error(*sigmatch("diff", config_a, config_b, text)[::2], "notes.msgpack")
    one_line_error(*sigmatch("diff", config_a, config_b, trace, "--state", tmp_path / "none.ckpt")[::2],
                   "none.ckpt")
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(b"SIGMATCH-CHECKPOINT\n\x00")
    one_line_error(*sigmatch("diff", config_a, config_b, trace, "--state", damaged)[::2], "damaged.ckpt")
    # the page's path is refused before the two replays, not after them (helper-128): with a
    # trace that does not exist, only a check made first can say the page
    (tmp_path / "file").write_text("x")
    page = tmp_path / "file" / "d.html"
    one_line_error(*sigmatch("diff", config_a, config_b, tmp_path / "no.msgpack", "--html", page)[::2],
                   f"--html {page}: cannot write the page ({tmp_path / 'file'} is not a directory)")


def test_the_page_never_replaces_a_configuration_trace_or_checkpoint(world, tmp_path):
    """helper-133: `diff A B TRACE --html TRACE` (or A) replaced it with the page, exit 0."""
    generated, config_a, config_b = world
    trace = tmp_path / "trace.html"
    trace.write_bytes(Path(generated.traces[0]).read_bytes())
    kept = {p: p.read_bytes() for p in (config_a, config_b, trace)}
    for page, words in ((generated.traces[0], ["name it FILE.html"]), (config_a, ["name it FILE.html"]),
                        (trace, ["is", "which this command reads"])):
        one_line_error(*sigmatch("diff", config_a, config_b, trace, "--html", page)[::2], f"--html {page}", *words)
    assert {p: p.read_bytes() for p in kept} == kept


def test_other_subscribers_are_compared_with_a_warning(world, tmp_path):
    generated, config_a, _ = world
    directory = Path(generated.config).parent
    from loaders.profiles import load_profiles
    import pyarrow.parquet as pq
    table = pq.read_table(directory / "profiles.parquet")
    pq.write_table(table.slice(0, table.num_rows // 2), directory / "half.parquet")
    half = directory / "half.toml"
    half.write_text(config_a.read_text().replace('profiles   = "profiles.parquet"', 'profiles   = "half.parquet"'))
    assert len(load_profiles(directory / "half.parquet").msisdn) < len(load_profiles(directory / "profiles.parquet").msisdn)
    code, stdout, lines = sigmatch("diff", config_a, half, generated.traces[0], "--json", "--no-progress")
    assert code == 0, lines
    document = json.loads(stdout)
    assert document["total"]["lost"] > 0
    assert any("other subscribers" in w and "half.parquet" in w for w in document["warnings"])
    assert any("other subscribers" in line for line in lines)


def test_no_msisdn_in_the_table_the_json_or_the_page(world, replays, tmp_path):
    generated, config_a, config_b = world
    code, stdout, lines = sigmatch("diff", config_a, config_b, *generated.traces, "--html", tmp_path / "d" / "w.html",
                                   "--no-progress")
    assert code == 0, lines
    page = (tmp_path / "d" / "w.html").read_text()
    assert stat.S_IMODE((tmp_path / "d" / "w.html").stat().st_mode) == 0o640
    assert page.count('src="data:image/png;base64,') == 2
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "new_data_offer" in page and "B adds campaign" in page and "Actions lost to another campaign" in page
    _, as_json, _ = sigmatch("diff", config_a, config_b, *generated.traces, "--json", "--no-progress")
    numbers = {r["msisdn"] for rows in replays for r in rows}
    assert len(numbers) > 100
    for text in (page, stdout, as_json, "\n".join(lines)):
        assert not any(str(n) in text for n in numbers)
    assert "contacts per campaign:" in stdout and "budgets reached" in stdout


def test_help_says_what_diff_does():
    code, stdout, _ = sigmatch("diff", "--help")
    assert code == 0
    text = " ".join(stdout.split())
    for words in ("CONFIG_A CONFIG_B TRACES...", "gained", "lost", "--state CHECKPOINT", "--json", "--html",
                  "two processes at once", "new campaign"):
        assert words in text, words


def test_the_state_directory_of_run_is_a_starting_state_too(world, tmp_path):
    """--state DIR (a `sigmatch run --state` store: a base, then records) gives what the
    checkpoint file of the same state gives."""
    from engine.service.checkpoint import CheckpointStore
    generated, config_a, config_b = world
    first, second = generated.traces
    engine = Engine.from_config(config_a)
    store = CheckpointStore(tmp_path / "state")
    (tmp_path / "state").mkdir()
    engine.replay(first)
    store.save(engine)
    engine.checkpoint(tmp_path / "state.ckpt")
    assert store.exists()
    documents = []
    for state in (tmp_path / "state", tmp_path / "state.ckpt"):
        code, stdout, lines = sigmatch("diff", config_a, config_b, second, "--state", state, "--json", "--no-progress")
        assert code == 0, lines
        documents.append({k: v for k, v in json.loads(stdout).items() if k != "state"})
    assert documents[0] == documents[1] and documents[0]["total"]["contacts_a"] > 0


def test_a_damaged_checkpoint_passed_over_is_said_once_and_in_the_warnings(world, tmp_path):
    """helper-123: with the newest base damaged, each side logged the same ERROR line, and
    neither the summary nor --json's warnings said the diff started from an older one."""
    from engine.service.checkpoint import CheckpointStore
    generated, config_a, config_b = world
    first, second = generated.traces
    engine = Engine.from_config(config_a)
    (tmp_path / "state").mkdir()
    store = CheckpointStore(tmp_path / "state")
    engine.replay(first)
    store.save(engine)
    store._rebase = True
    assert store.save(engine)["kind"] == "base"
    newest = max((tmp_path / "state").glob("base-*"))
    newest.write_bytes(b"garbage")
    code, stdout, lines = sigmatch("diff", config_a, config_b, second, "--state", tmp_path / "state", "--json",
                                   "--no-progress")
    assert code == 0, lines
    said = [line for line in lines if "cannot use checkpoint" in line]
    assert len(said) == 1, "\n".join(lines)
    warnings = json.loads(stdout)["warnings"]
    assert any(w.startswith(f"--state {tmp_path / 'state'}: cannot use checkpoint: ") for w in warnings), warnings
    code, stdout, _ = sigmatch("diff", config_a, config_b, second, "--state", tmp_path / "state", "--no-progress")
    assert code == 0 and "warning: --state" in stdout and "cannot use checkpoint" in stdout


def test_the_state_of_a_service_with_workers_is_one_engines_state(world, tmp_path):
    """A `sigmatch run --workers N` state (one store per worker, STATE/shard-i/) starts a
    what-if as the state of one engine that saw the same events: the workers' states are put
    together (engine.service.reshard)."""
    from engine.service.checkpoint import CheckpointSet, CheckpointStore
    from engine.workers.inprocess import ShardedEngine
    generated, config_a, config_b = world
    first, second = generated.traces
    many = ShardedEngine.build(config_a, 3)
    one = Engine.from_config(config_a)
    for engine in (many, one):
        engine._core.begin_stream()
        engine._core.feed(Path(first).read_bytes())
        for take in (engine._core.take_actions, engine._core.take_conversions, engine._core.take_dead_letters):
            take()
    (tmp_path / "many").mkdir()
    (tmp_path / "one").mkdir()
    CheckpointSet(tmp_path / "many", 3).save(many.shards, extra={})
    CheckpointStore(tmp_path / "one").save(one)
    many.close()
    documents = []
    for state in (tmp_path / "many", tmp_path / "one"):
        code, stdout, lines = sigmatch("diff", config_a, config_b, second, "--state", state, "--json", "--no-progress")
        assert code == 0, lines
        documents.append({k: v for k, v in json.loads(stdout).items() if k != "state"})
    assert documents[0] == documents[1] and documents[0]["total"]["contacts_a"] > 0
