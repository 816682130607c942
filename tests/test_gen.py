"""The world generator (`engine.world.gen`, `sigmatch gen`): deterministic, the counts asked for, a
world that loads and replays, every campaign acting, and a trace that looks as designed."""
import datetime
import re
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
from click.testing import CliRunner

from engine.api import Engine
from engine.cli import main
from engine.language.compile import load_world
from engine.language.config import FLAG_BITS, load_config
from engine.world.gen import (
    EVENT_DTYPE, EVENT_MIX, INTERNATIONAL_PREFIXES, OTHER_SEGMENTS, OWN_SEGMENTS, ZIPF_EXPONENT, generate,
)
from engine.model import ReferenceModel
from tests.backends import assert_same_outcome

MODERATE = dict(subscribers=20_000, events=300_000)


def tree(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def decoded(paths) -> list[list]:
    """Every event of the traces (one stream), decoded by msgpack-python."""
    unpacker = msgpack.Unpacker()
    events = []
    for path in paths:
        unpacker.feed(Path(path).read_bytes())
        events.extend(unpacker)
    return events


def trace_columns(paths) -> np.ndarray:
    return np.frombuffer(b"".join(Path(p).read_bytes() for p in paths), dtype=EVENT_DTYPE)


@pytest.fixture(scope="module")
def moderate(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("moderate"), **MODERATE, seed=1)


@pytest.fixture(scope="module")
def moderate_run(moderate):
    engine = Engine.from_config(moderate.config)
    return engine, engine.replay(moderate.traces, drain=True)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("small"), subscribers=2_000, events=30_000, campaigns=12,
                    seed=4, trace_files=3)


def test_same_arguments_same_bytes(small, tmp_path):
    again = generate(tmp_path / "again", subscribers=2_000, events=30_000, campaigns=12, seed=4, trace_files=3)
    first, second = tree(small.directory), tree(again.directory)
    assert first.keys() == second.keys()
    assert {"campaigns.toml", "profiles.parquet", "lists/dnd.roar", "areas/schools.txt",
            "trace-1.msgpack", "trace-3.msgpack"} <= first.keys()
    assert first == second
    other = generate(tmp_path / "other", subscribers=2_000, events=30_000, campaigns=12, seed=5, trace_files=3)
    assert other.traces[0].read_bytes() != small.traces[0].read_bytes()
    assert (other.directory / "profiles.parquet").read_bytes() != first["profiles.parquet"]


def test_the_world_s_directories_are_owner_and_group_only_whatever_the_umask(tmp_path):
    # helper-116: lists/ and areas/ were 0777 under umask 000, so anyone could swap the dnd list
    import os
    import stat
    old = os.umask(0)
    try:
        generate(tmp_path / "w", subscribers=200, events=1_000, campaigns=1, seed=1)
    finally:
        os.umask(old)
    for directory in ("w", "w/lists", "w/areas"):
        assert stat.S_IMODE((tmp_path / directory).stat().st_mode) == 0o750, directory


def test_the_split_and_the_profile_format_change_nothing_else(small, tmp_path):
    one = generate(tmp_path, subscribers=2_000, events=30_000, campaigns=12, seed=4, profiles_format="csv")
    assert one.traces == [tmp_path / "trace.msgpack"]
    whole = one.traces[0].read_bytes()
    parts = [p.read_bytes() for p in small.traces]
    assert b"".join(parts) == whole
    # Files of about equal size, cut at event boundaries: each decodes on its own.
    assert [len(decoded([p])) for p in small.traces] == [10_000, 10_000, 10_000]
    for name in ("lists/crbt_peers.roar", "areas/airport.txt"):
        assert (tmp_path / name).read_bytes() == (small.directory / name).read_bytes()
    csv_world, parquet_world = load_world(load_config(one.config)), load_world(load_config(small.config))
    assert np.array_equal(csv_world.profiles.msisdn, parquet_world.profiles.msisdn)
    for name, column in parquet_world.profiles.columns.items():
        assert csv_world.profiles.columns[name].to_pylist() == column.to_pylist(), name
    assert csv_world.profiles.tags.to_pylist() == parquet_world.profiles.tags.to_pylist()


def test_counts(small):
    assert small.subscribers == 2_000 and small.events == 30_000
    # crbt_school, airport_newspaper, 5 habit steps, 6 of sequences and calendar counters, 3
    # moments and a campaign's life, 12
    assert small.campaigns == 2 + 5 + 6 + 3 + 12
    assert small.trace_bytes == sum(p.stat().st_size for p in small.traces) == 30_000 * EVENT_DTYPE.itemsize
    config = load_config(small.config)
    assert len(config.campaigns) == small.campaigns
    ids = {c.id for c in config.campaigns}
    assert {"crbt_school", "airport_newspaper", "sms_intro", "ld_intro", "ld_target", "ld_rebate",
            "roam_rebate"} <= ids
    assert len([i for i in ids if re.fullmatch(r"s[0-9]{2}_[a-z_]+", i)]) == 12
    world = load_world(config)
    assert len(world.profiles.msisdn) == 2_000 and world.profiles.bad_rows == 0
    assert set(world.profiles.columns) == {"arpu", "brand", "plan", "join_date"}
    assert world.profiles.tags is not None
    assert set(world.lists) == set(small.lists) and set(world.areas) == set(small.areas)
    assert all(len(members) > 0 for members in world.lists.values())
    assert all(len(cells) > 0 for cells in world.areas.values())
    assert len(decoded(small.traces)) == 30_000


def test_synthetic_campaigns_use_every_campaign_key(moderate):
    config = load_config(moderate.config)
    synthetic = [c for c in config.campaigns if c.id.startswith("s") and c.id[1:3].isdigit()]
    assert len(synthetic) == 13
    used = lambda pick: [c for c in synthetic if pick(c)]   # noqa: E731
    assert used(lambda c: c.audience) and used(lambda c: c.peer_in) and used(lambda c: c.exclude)
    assert used(lambda c: c.where and "in tags" in c.where) and used(lambda c: c.where and "arpu" in c.where)
    assert used(lambda c: c.where and "join_date" in c.where)
    assert used(lambda c: c.area and c.enter) and used(lambda c: c.area and not c.enter)
    assert used(lambda c: c.hours and c.hours[0] > c.hours[1])          # wraps midnight
    assert used(lambda c: c.days not in (0x7F, 0x1F))                   # days other than all or mon-fri
    windowed = {k.name for k in config.counters if k.window_ms}
    assert used(lambda c: c.counter in windowed) and used(lambda c: c.counter and c.counter not in windowed)
    assert {k.add for k in config.counters} == {"count", "dur", "dur_minutes"}
    assert any(k.flags & FLAG_BITS["international"] for k in config.counters)
    assert set().union(*(c.recheck for c in synthetic if c.delay_ms)) == {"area", "powered_on", "audience", "hours"}
    assert used(lambda c: c.cooldown_ms) and used(lambda c: c.once)
    assert set().union(*(c.exempt for c in synthetic)) == {"min_gap", "max_per_day", "quiet_hours", "max_in_window"}
    assert {c.channel for c in config.campaigns} == {"sms", "mms", "boss", "outbound", "popup"}
    assert used(lambda c: c.holdout) and used(lambda c: c.stop_after)
    # an A/B test with a control group: weighted variants beside a holdout
    assert used(lambda c: len(c.variants) > 1 and c.holdout and len({v.weight for v in c.variants}) > 1)
    assert used(lambda c: c.convert_arg is not None and c.convert_within_ms)
    assert len({c.priority for c in config.campaigns}) > 5
    # the keys of SPEC §2.1 this world uses: trigger filters, a period counter, markers, and a
    # named custom type that a marker and a campaign use
    campaigns = config.campaigns
    config_days = [datetime.date(2026, 11, 2), datetime.date(2026, 11, 3)]
    assert any(c.flags for c in campaigns) and any(c.arg is not None for c in campaigns)
    assert any(c.after for c in campaigns) and any(c.not_after for c in campaigns) and any(c.absent for c in campaigns)
    periods = {k.name for k in config.counters if k.period}
    assert periods and any(c.counter in periods for c in campaigns)
    assert config.event_types["LOW_BALANCE"] == 40
    assert any(40 in c.on for c in campaigns) and any(40 in m.on for m in config.markers)
    # ... and a campaign's life, moments, counter expressions, budgets, the rolling cap and the
    # programme's control group
    assert any(not c.enabled for c in campaigns)
    assert any(c.start and c.end and config_days[0] <= c.start <= c.end <= config_days[-1] for c in campaigns)
    assert any(c.anniversary == "join_date" for c in campaigns)
    assert any(c.when and "*" in c.when for c in synthetic)
    assert any(c.daily_budget and c.total_budget and c.channel == "boss" for c in campaigns)
    assert set(config.channel_budgets) == {"sms"}
    assert config.policy.max_in_window and 0 < config.policy.global_holdout < 0.1
    assert any("max_in_window" in c.exempt and c.channel == "boss" for c in campaigns)
    more = generate(moderate.directory.parent / "more", subscribers=500, events=1_000, campaigns=30)
    ids = [c.id for c in load_config(more.config).campaigns]
    assert len(ids) == len(set(ids)) == 46


def test_check_command(moderate):
    result = CliRunner().invoke(main, ["check", str(moderate.config)])
    assert result.exit_code == 0, result.output
    assert "subscribers: 20,000" in result.output and "crbt_school" in result.output


def test_every_campaign_acts(moderate_run):
    engine, run = moderate_run
    stats = run.stats["run"]
    assert stats["events"] == MODERATE["events"]
    assert sum(stats["bad_events"].values()) == 0 and stats["unknown_subscribers"] == 0
    # every campaign but the retired one
    per_campaign = dict.fromkeys((c.id for c in engine.campaigns if c.id != "summer_roaming"), 0)
    for campaign in run.action_columns()["campaign"]:
        per_campaign[campaign] += 1
    assert all(n > 0 for n in per_campaign.values()), per_campaign
    assert len(run.conversions) > 0
    kinds = set(run.action_columns()["kind"])
    assert kinds == {"send", "control", "global_control"}


def test_trace_is_valid_msgpack_in_time_order(small):
    events = decoded(small.traces)
    assert all(isinstance(e, list) and len(e) == 8 and all(type(v) is int for v in e) for e in events)
    ts = [e[0] for e in events]
    assert ts == sorted(ts)
    start = 1_793_548_800_000         # 2026-11-02 00:00 at +08:00
    assert start <= ts[0] and ts[-1] < start + 2 * 86_400_000
    assert {e[1] for e in events} == {code for code, _ in EVENT_MIX}
    # The structured view (how the bench reads it) agrees with msgpack-python.
    columns = trace_columns(small.traces)
    assert columns["ts"].tolist() == ts and columns["msisdn"].tolist() == [e[2] for e in events]


def test_event_type_mix(moderate):
    types = trace_columns(moderate.traces)["type"]
    share = np.bincount(types, minlength=13) / len(types)
    for code, designed in EVENT_MIX:
        assert abs(share[code] - designed) < max(0.004, designed * 0.1), (code, share[code], designed)


def test_zipf_skew_and_the_diurnal_curve(moderate):
    trace = trace_columns(moderate.traces)
    _, per_subscriber = np.unique(trace["msisdn"], return_counts=True)
    per_subscriber = np.sort(per_subscriber)[::-1]
    n, events = moderate.subscribers, moderate.events
    for top in (0.01, 0.1):
        k = int(n * top)
        designed = ((k + 1) ** (1 - ZIPF_EXPONENT) - 1) / ((n + 1) ** (1 - ZIPF_EXPONENT) - 1)
        assert abs(per_subscriber[:k].sum() / events - designed) < 0.03, top
    hour = ((trace["ts"].astype(np.int64) + 8 * 3_600_000) // 3_600_000) % 24
    by_hour = np.bincount(hour, minlength=24)
    assert by_hour[3] * 10 < by_hour[10] and by_hour[20] > by_hour[3] * 10


def test_mobility_stays_near_home_and_calls_last(moderate):
    trace = trace_columns(moderate.traces)
    cells = trace["cell"].astype(np.int64)
    msisdn = trace["msisdn"].astype(np.int64)
    busy = np.unique(msisdn, return_counts=True)
    busy = busy[0][busy[1] >= 50]
    assert len(busy) > 50
    at_usual = []
    for m in busy[:200]:
        mine = cells[(msisdn == m) & (cells != 0)]
        _, seen = np.unique(mine, return_counts=True)
        at_usual.append(np.sort(seen)[::-1][:2].sum() / len(mine))   # home and day cells
    assert np.median(at_usual) > 0.5
    call = (trace["type"] == 1) | (trace["type"] == 2)
    dur = trace["dur"][call]
    assert dur.min() >= 1 and 20 < np.median(dur) < 120 and dur.mean() > np.median(dur)
    boss = np.isin(trace["type"], [10, 11, 12, 40])       # 40: LOW_BALANCE, from the charging system
    assert (cells[boss] == 0).all() and (cells[~boss] != 0).all()


def test_numbers_in_blocks_and_off_net_peers(moderate):
    world = load_world(load_config(moderate.config))
    own = world.profiles.msisdn.astype(np.int64)
    assert ((own >= 10**10) & (own < 10**11)).all()
    assert set(np.unique(own // 10**8).tolist()) <= set(OWN_SEGMENTS)
    blocks, per_block = np.unique(own // 10_000, return_counts=True)
    assert len(blocks) <= len(own) / 1_000            # numbers come in blocks of 10,000 ...
    assert np.median(per_block) > 1_000               # ... well filled
    assert len(np.unique(own // 10**8)) > 1           # across several segments

    trace = trace_columns(moderate.traces)
    peers = np.unique(trace["peer"].astype(np.int64))
    peers = peers[peers != 0]
    offnet = np.setdiff1d(peers, own)
    eleven = offnet[(offnet >= 10**10) & (offnet < 10**11)]
    thirteen = offnet[(offnet >= 10**12) & (offnet < 10**13)]
    assert len(eleven) > 1_000 and len(thirteen) > 10
    assert set(np.unique(eleven // 10**8).tolist()) <= set(OTHER_SEGMENTS)
    assert set(np.unique(thirteen // 10**8).tolist()) <= set(INTERNATIONAL_PREFIXES)
    assert len(eleven) + len(thirteen) + 5 >= len(offnet)      # and a few service numbers
    # Calls to a 13-digit number are flagged international; the peer lists hold off-net numbers.
    international = (trace["flags"] & 4) != 0
    assert (trace["peer"][international] >= 10**12).all()
    for name in ("crbt_peers", "family_peers"):
        members = world.lists[name].astype(np.int64)
        assert len(np.setdiff1d(members, own)) > 0, name


def test_tiny_world_core_equals_reference_model(tmp_path):
    world = generate(tmp_path, subscribers=1_000, events=10_000, campaigns=12, seed=2, trace_files=2)
    engine = Engine.from_config(world.config)
    run = engine.replay(world.traces, drain=True)
    assert len(run.actions) > 0
    config = load_config(world.config)
    loaded = load_world(config)
    model = ReferenceModel(config, loaded.profiles, loaded.lists, loaded.areas)
    for path in world.traces:
        model.feed(path.read_bytes())
    model.finish()
    model.drain()
    assert_same_outcome(run, model)        # actions, conversions, dead letters, funnels, counts
    assert model.late_events == run.stats["run"]["late_events"]


@pytest.mark.parametrize("bad", [dict(subscribers=10), dict(events=-1), dict(days=0), dict(trace_files=0),
                                 dict(profiles_format="json"), dict(start="02/11/2026"), dict(campaigns=1.5),
                                 dict(start="9999-12-31"), dict(start="9001-01-01"), dict(start="2001-12-31"),
                                 dict(start="0001-01-01"), dict(start="2100-01-01", days=1),
                                 dict(start="2099-12-31", days=2)])
def test_bad_arguments(tmp_path, bad):
    arguments = dict(subscribers=1_000, events=1_000) | bad
    with pytest.raises(ValueError):
        generate(tmp_path / "w", **arguments)
    assert not (tmp_path / "w").exists()          # refused before anything is written


@pytest.mark.parametrize("start, days", [("2002-01-01", 2), ("2099-12-30", 2), ("2099-12-31", 1)])
def test_the_first_and_last_start_make_a_world_that_replays(tmp_path, start, days):
    """The last day a trace may reach is 2099-12-31: replay warns of events from 2100 on as
    implausible, and a world of gen's own must not be one its commands warn about (helper-119:
    --start 9000-12-31 was accepted). Nor does a small world's list come out empty."""
    world = generate(tmp_path, subscribers=100, events=200, seed=2, start=start, days=days)
    run = Engine.from_config(world.config).replay(world.traces, drain=True)
    assert run.stats["run"]["events"] == 200
    code = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(world.config), *map(str, world.traces)],
                          capture_output=True, text=True)
    assert code.returncode == 0 and "WARNING" not in code.stderr, code.stderr


def test_gen_command(tmp_path):
    result = CliRunner().invoke(main, ["gen", str(tmp_path / "w"), "--subscribers", "1000", "--events", "5000",
                                       "--campaigns", "3", "--trace-files", "2", "--profiles-format", "csv"])
    assert result.exit_code == 0, result.output
    assert "1,000 subscribers" in result.output and "5,000 events" in result.output
    assert "events/s" in result.output and "19 campaigns" in result.output
    assert (tmp_path / "w" / "profiles.csv").is_file() and (tmp_path / "w" / "trace-2.msgpack").is_file()
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "gen", str(tmp_path / "x"), "--subscribers", "5",
                           "--events", "10"], capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines == ["sigmatch: error: --subscribers must be an integer from 100 to 500,000,000, got 5"], proc.stderr
