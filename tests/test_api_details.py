"""Small things a newcomer meets first (issue 9): `restore()` chains, `run.actions` holds
only the documented fields, Parquet outputs give times as timestamps (CSV keeps integers)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pyarrow as pa
import pyarrow.parquet as pq

from engine import Engine

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "crbt_school"


def test_restore_returns_the_engine_and_keeps_the_extra(tmp_path):
    engine = Engine.from_config(EXAMPLE / "campaigns.toml")
    engine.replay(EXAMPLE / "trace.msgpack")
    path = engine.checkpoint(tmp_path / "state.ckpt", extra={"spool": "a"})
    restored = Engine.from_config(EXAMPLE / "campaigns.toml").restore(path)
    assert isinstance(restored, Engine)
    assert restored.checkpoint_extra == {"spool": "a"}
    assert restored.clock == engine.clock


def test_run_actions_has_no_padding_field():
    run = Engine.from_config(EXAMPLE / "campaigns.toml").replay(EXAMPLE / "trace.msgpack", drain=True)
    assert len(run.actions)
    assert not any(name.startswith("_") for name in run.actions.dtype.names)
    assert not any(name.startswith("_") for name in run.conversions.dtype.names)
    # `variant` is no padding: the template's index among the campaign's variants
    assert set(run.actions.dtype.names) == {"seq", "ts", "trigger_ts", "msisdn", "cell", "campaign", "kind", "variant"}


def test_parquet_times_are_timestamps_and_csv_times_integers(tmp_path):
    for fmt in ("parquet", "csv"):
        Engine.from_config(EXAMPLE / "campaigns.toml").replay(EXAMPLE / "trace.msgpack", out=tmp_path / fmt,
                                                                  drain=True, format=fmt)
    table = pq.read_table(sorted((tmp_path / "parquet" / "sms").glob("actions-*.parquet"))[0])
    assert table.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.field("trigger_ts").type == pa.timestamp("ms", tz="UTC")
    csv_text = sorted((tmp_path / "csv" / "sms").glob("actions-*.csv"))[0].read_text().splitlines()
    first = dict(zip(csv_text[0].split(","), csv_text[1].split(",")))
    assert first["ts"].isdigit()
    as_ms = table.column("ts").cast(pa.int64()).to_numpy()
    assert int(first["ts"]) == int(as_ms[0])
    conversions = list((tmp_path / "parquet" / "conversions").glob("*.parquet"))
    for path in conversions:
        assert pq.read_schema(path).field("ts").type == pa.timestamp("ms", tz="UTC")
    assert np.all(as_ms > 0)


def test_a_corrupt_trace_names_the_file_and_the_offset_inside_it(tmp_path):
    import subprocess
    import sys
    import msgpack
    good = (EXAMPLE / "trace.msgpack").read_bytes()
    unpacker = msgpack.Unpacker()
    unpacker.feed(good)
    for _ in range(3):
        unpacker.unpack()
    at = unpacker.tell()        # the start of the fourth event
    (tmp_path / "day1.msgpack").write_bytes(good)
    (tmp_path / "day2.msgpack").write_bytes(good[:at] + b"\xc1" + good[at:])
    done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(EXAMPLE / "campaigns.toml"),
                           str(tmp_path / "day1.msgpack"), str(tmp_path / "day2.msgpack"), "--out", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith(f"sigmatch: error: event stream broken in {tmp_path / 'day2.msgpack'} at byte offset "
                              f"{at:,} (stream offset {len(good) + at:,})")
    assert message.endswith(": corrupt (not msgpack: a 0xc1 byte in the event that starts there)")


def test_the_policy_view_shows_the_budgets_left():
    from engine.service.lookup import policy_view
    from tests.backends import A, B, T0, build, campaign, ev, run
    m = run(build("core", campaign("c", daily_budget=3, total_budget=5), campaign("x", channel="boss"),
                  channel_budgets={"sms": 2}),
            ev(T0, msisdn=A), ev(T0 + 1, msisdn=B))
    view = policy_view(m.engine, A)
    assert view["campaigns"]["c"]["budget"] == {"daily_budget": 3, "sent_today": 2, "left_today": 1,
                                                "total_budget": 5, "sent_ever": 2, "left_ever": 3}
    assert view["campaigns"]["x"]["budget"]["left_today"] is None
    assert view["channel_budgets"] == {"sms": {"daily_budget": 2, "sent_today": 2, "left_today": 0}}
    assert "channel_budget" in view["campaigns"]["c"]["blocked_by"]
    assert view["campaigns"]["x"]["blocked_by"] == []


def test_the_policy_view_counts_the_contacts_in_the_window():
    from engine.language.config import PolicySpec
    from engine.service.lookup import policy_view
    from tests.backends import A, HOUR, T0, build, campaign, ev, run
    m = run(build("core", campaign("c"), policy=PolicySpec(max_in_window=(3, HOUR))),
            ev(T0), ev(T0 + 30 * 60_000), ev(T0 + HOUR))
    policy = policy_view(m.engine, A)["contact_policy"]
    assert policy["contacts_in_window"] == 2        # T0 has left the window at T0 + 1 h
    assert policy["max_in_window"] == {"contacts": 3, "window_ms": HOUR}


def test_bytes_per_subscriber_counts_the_anniversary_dates():
    # `check` and the bench report it: an anniversary attribute keeps 2 bytes per subscriber
    import numpy as np
    from engine._core import Core
    core = Core()
    core.set_layout(1, 0, 0, 0)
    core.set_subscribers(np.array([8613800000001, 8613800000002], dtype=np.uint64))
    before = core.bytes_per_subscriber
    core.set_dates(np.zeros((2, 2), dtype=np.uint16))
    assert core.bytes_per_subscriber == before + 4


@pytest.mark.parametrize("bad", [
    {"marks": [(7, 1000, False)]},      # a marker out of range
    {"variants": [0]},                   # a weight outside 1..10,000
    {"channel": 5},                      # a channel index out of range
])
def test_campaigns_refused_by_the_core_leave_it_as_it_was(tmp_path, bad):
    """Core.set_campaigns checks every campaign before it frees the arrays it holds: a core
    whose arrays had been replaced before a check raised would hold arrays for the new
    campaigns and the count of the old ones."""
    from engine.language.compile import World
    from engine.language.config import EVENT_TYPES, CampaignSpec, Config, PolicySpec
    from loaders.profiles import Profiles
    from tests.backends import CALL, T0, ev
    config = Config(path=Path("test.toml"), utc_offset_ms=0, policy=PolicySpec(), counters=(), markers=(),
                    channel_budgets={}, campaigns=(CampaignSpec(id="a", on=(CALL,), channel="sms"),),
                    event_types=dict(EVENT_TYPES))
    profiles = Profiles(Path("profiles.csv"), np.array([13800000001], dtype=np.uint64), {}, None, 0)
    core = Engine(config, World(profiles))._core
    one = dict(id="b", types=1 << CALL, convert_types=0, convert_arg=None, elig=(0, 1), recheck_elig=(0, 1),
               area=None, peer_set=-1, cooldown_ms=0, delay_ms=0, hours=None, days=None, counter=-1, at_least=0,
               when=None, date_slot=-1, stop_after=0xFFFFFFFF, holdout=0, recheck=0, exempt=0, enter=False,
               once=False, flags=0, arg=None, enabled=True, marks=[], absent=[], start_day=-2**31,
               end_day=2**31 - 1, daily_budget=None, total_budget=None, channel=0, variants=[])
    with pytest.raises(ValueError):
        core.set_campaigns([{**one, **bad}])
    assert core.nr_campaigns == 1 and core.funnel().shape[0] == 1
    assert core.feed(ev(T0, CALL, msisdn=13800000001)) == 0
    assert core.funnel()[0].sum() > 0, "the campaign the core held still matches"


# -- helper-126: the API as a data engineer uses it ---------------------------------------

def test_an_out_that_is_a_file_or_under_one_is_refused_before_any_event(tmp_path):
    from engine.errors import SigmatchError
    (tmp_path / "file").write_text("x")
    engine = Engine.from_config(EXAMPLE / "campaigns.toml")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        # it ran the whole stream and then raised NotADirectoryError: every action lost
        with pytest.raises(SigmatchError, match=f"{tmp_path / 'file'} is not a directory, where the run writes"):
            engine.replay(EXAMPLE / "trace.msgpack", out=out)
    assert engine.stats["totals"]["events"] == 0


def test_an_out_through_a_missing_folder_and_back_leaves_no_folder_behind(tmp_path, monkeypatch):
    """`base/missing/../out` made base/missing as `mkdir -p` does, and left it empty; a `..`
    after a folder that exists, or a link, is the system's to follow."""
    engine = Engine.from_config(EXAMPLE / "campaigns.toml")
    (tmp_path / "real" / "deep").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real" / "deep")
    monkeypatch.chdir(tmp_path)
    for out, made in ((f"{tmp_path}/missing/../out", "out"), ("rel/a/b/../../../rel2/x/..", "rel2"),
                      (tmp_path / "m" / ".." / "real" / "n" / ".." / "o", "real/o"), ("link/../p", "real/p")):
        Engine.from_config(EXAMPLE / "campaigns.toml").replay(EXAMPLE / "trace.msgpack", out=out)
        assert (tmp_path / made / "stats.json").is_file(), out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "out", "real", "rel2"]
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["deep", "o", "p"]
    assert engine.stats["totals"]["events"] == 0


def test_two_engines_never_write_one_out_at_once(tmp_path):
    from engine.errors import SigmatchError
    from engine.sinks import writing_output
    first, second = (Engine.from_config(EXAMPLE / "campaigns.toml") for _ in range(2))
    out = tmp_path / "out"
    # the first engine's replay, in another thread, holds it: the second is refused before
    # any event (they numbered their files and actions alike, or one failed mid-run)
    with writing_output(out, first):
        with pytest.raises(SigmatchError, match="output directory in use by another replay of this process"):
            second.replay(EXAMPLE / "trace.msgpack", out=out)
    assert second.stats["totals"]["events"] == 0
    # nor one engine in two threads at once (the first to end let the other go unguarded)
    with writing_output(out, first):
        with pytest.raises(SigmatchError, match="output directory in use by another replay of this process"):
            first.replay(EXAMPLE / "trace.msgpack", out=out)
    first.replay(EXAMPLE / "trace.msgpack", out=out)
    first.replay(b"", out=out, drain=True)       # the same engine goes on writing it
    # the lock is let go between runs, and left empty as the CLI's is
    assert (out / ".sigmatch-out.lock").read_bytes() == b""
    with writing_output(out, second):
        pass


def test_a_checkpoint_extra_that_is_no_dict_is_refused_before_anything_is_written(tmp_path):
    engine = Engine.from_config(EXAMPLE / "campaigns.toml")
    for extra in (["spool-offset", 4500045], "hello", 5):
        # written, then refused by every restore as a damaged header
        with pytest.raises(TypeError, match="extra must be a dict"):
            engine.checkpoint(tmp_path / "x.ckpt", extra=extra)
    assert not list(tmp_path.iterdir())


def test_a_refused_ring_leaves_the_watch_as_it_was():
    engine = Engine.from_config(EXAMPLE / "campaigns.toml")
    number = int(engine.subscribers[0])
    engine.watch([number])
    for ring in (-1, 0, "5", 2.5):
        with pytest.raises(ValueError, match="ring"):
            engine.watch([number], ring=ring)
    assert engine.watched == [number]
    engine.replay(EXAMPLE / "trace.msgpack")          # a TypeError at its end before
    for last in (-1, "5"):
        with pytest.raises(ValueError, match="last"):
            engine.explanation(number, last=last)
    assert engine.explanation(number, last=0)["events"] == []


def _cut_in_half(data: bytes) -> int:
    import msgpack
    unpacker = msgpack.Unpacker()
    unpacker.feed(data)
    ends = []
    for _ in unpacker:
        ends.append(unpacker.tell())
    return ends[len(ends) // 2]


def test_a_restored_engine_counts_days_and_variants_as_the_one_that_went_on(tmp_path):
    # the funnel came back from the checkpoint and the counts by day and variant did not:
    # stats.json's days summed to 41 sends where the funnel said 642 (helper-126)
    import json
    data = (EXAMPLE / "trace.msgpack").read_bytes()
    cut = _cut_in_half(data)
    going_on = Engine.from_config(EXAMPLE / "campaigns.toml")
    going_on.replay(data[:cut])
    going_on.checkpoint(tmp_path / "half.ckpt")
    restored = Engine.from_config(EXAMPLE / "campaigns.toml").restore(tmp_path / "half.ckpt")
    runs = [engine.replay(data[cut:], drain=True) for engine in (going_on, restored)]
    a, b = ({k: v for k, v in run.stats.items() if k != "timing"} for run in runs)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert any(c["days"] for c in a["campaigns"].values())


_MISSING = object()


@pytest.mark.parametrize("key, value", [("seq", -1), ("clock", "x"), ("clock", 2**63), ("has_clock", 2),
                                        ("largest_bad_value", None), ("conversion_seq", 2**64),
                                        # missing: refused once the sections were restored (helper-127)
                                        ("seq", _MISSING), ("clock", _MISSING), ("stream_offset", _MISSING)])
def test_a_hand_edited_header_is_refused_and_the_engine_left_as_it_was(tmp_path, key, value):
    import json
    import struct
    import zlib
    from engine.errors import CheckpointError
    from engine.service.checkpoint import MAGIC
    engine = Engine.from_config(EXAMPLE / "campaigns.toml")
    engine.replay(EXAMPLE / "trace.msgpack")
    raw = engine.checkpoint(tmp_path / "x.ckpt").read_bytes()
    (length,) = struct.unpack("<I", raw[len(MAGIC):len(MAGIC) + 4])
    header = json.loads(raw[len(MAGIC) + 4:len(MAGIC) + 4 + length])
    if value is _MISSING:
        del header["scalars"][key]
    else:
        header["scalars"][key] = value
    encoded = json.dumps(header).encode()
    rest = raw[len(MAGIC) + 8 + length:]
    (tmp_path / "x.ckpt").write_bytes(MAGIC + struct.pack("<I", len(encoded)) + encoded
                                      + struct.pack("<I", zlib.crc32(encoded)) + rest)
    fresh = Engine.from_config(EXAMPLE / "campaigns.toml")
    # OverflowError, TypeError, or accepted: and the sections restored before the scalars failed
    with pytest.raises(CheckpointError, match=f"damaged header: scalars.{key}"):
        fresh.restore(tmp_path / "x.ckpt")
    assert fresh.clock is None or fresh.clock == 0
    assert fresh.pending == 0 and fresh.stats["totals"]["events"] == 0


def test_a_section_longer_than_the_file_is_refused_before_its_memory_is_taken(tmp_path):
    import json
    import struct
    import zlib
    from engine.errors import CheckpointError
    from engine.service.checkpoint import MAGIC
    engine = Engine.from_config(EXAMPLE / "campaigns.toml")
    raw = engine.checkpoint(tmp_path / "x.ckpt").read_bytes()
    (length,) = struct.unpack("<I", raw[len(MAGIC):len(MAGIC) + 4])
    header = json.loads(raw[len(MAGIC) + 4:len(MAGIC) + 4 + length])
    header["sections"][0]["nbytes"] = 2**40
    encoded = json.dumps(header).encode()
    (tmp_path / "x.ckpt").write_bytes(MAGIC + struct.pack("<I", len(encoded)) + encoded
                                      + struct.pack("<I", zlib.crc32(encoded)) + raw[len(MAGIC) + 8 + length:])
    with pytest.raises(CheckpointError, match="truncated in section"):
        Engine.from_config(EXAMPLE / "campaigns.toml").restore(tmp_path / "x.ckpt")


@pytest.mark.parametrize("edit", [
    lambda t: t["days"][0].__setitem__(1, -10**9), lambda t: t["days"][0].__setitem__(1, 2**70),
    lambda t: t["days"][0][2].__setitem__(0, 2**63 - 1), lambda t: t["variants"][0].__setitem__(1, 5),
    lambda t: t.__setitem__("days", {}),
])
def test_tallies_edited_by_hand_are_refused(tmp_path, edit):
    # helper-127: a day of -10**9 restored as "-2735938-12-29", a count of 2**63 - 1 wrapped round
    import json
    import struct
    import zlib
    from engine.errors import CheckpointError
    from engine.service.checkpoint import MAGIC
    engine = Engine.from_config(EXAMPLE / "campaigns.toml")
    engine.replay(EXAMPLE / "trace.msgpack")
    raw = engine.checkpoint(tmp_path / "x.ckpt").read_bytes()
    (length,) = struct.unpack("<I", raw[len(MAGIC):len(MAGIC) + 4])
    header = json.loads(raw[len(MAGIC) + 4:len(MAGIC) + 4 + length])
    assert header["tallies"]["days"] and header["tallies"]["variants"]
    edit(header["tallies"])
    encoded = json.dumps(header).encode()
    (tmp_path / "x.ckpt").write_bytes(MAGIC + struct.pack("<I", len(encoded)) + encoded
                                      + struct.pack("<I", zlib.crc32(encoded)) + raw[len(MAGIC) + 8 + length:])
    fresh = Engine.from_config(EXAMPLE / "campaigns.toml")
    with pytest.raises(CheckpointError, match="damaged header: tallies"):
        fresh.restore(tmp_path / "x.ckpt")
    assert fresh.stats["totals"]["events"] == 0


def test_numpy_integers_are_whole_numbers_for_ring_and_last():
    engine = Engine.from_config(EXAMPLE / "campaigns.toml")
    number = int(engine.subscribers[0])
    engine.watch([number], ring=np.int64(5))
    engine.replay(EXAMPLE / "trace.msgpack")
    assert len(engine.explanation(number, last=np.int64(1))["events"]) <= 1


def test_an_api_replay_into_a_services_spool_or_state_is_refused(tmp_path):
    # the CLI refused them and the API wrote its files there (helper-127)
    from engine.errors import SigmatchError
    from engine.sinks import SPOOL_LOCK
    engine = Engine.from_config(EXAMPLE / "campaigns.toml")
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / SPOOL_LOCK).write_text("")
    (tmp_path / "state").mkdir()
    other = Engine.from_config(EXAMPLE / "campaigns.toml")
    other.checkpoint(tmp_path / "state" / "base-00000001")
    for out, says in ((tmp_path / "spool", "is a service's --spool"),
                      (tmp_path / "spool" / "x", "is inside a service's --spool"),
                      (tmp_path / "state", "is a service's --state")):
        with pytest.raises(SigmatchError, match=says):
            engine.replay(EXAMPLE / "trace.msgpack", out=out)
    assert engine.stats["totals"]["events"] == 0


def test_a_restore_under_another_utc_offset_counts_its_days_afresh(tmp_path, caplog):
    # helper-127: the days counted under +08:00 were kept under another offset, other days
    import logging
    engine = Engine.from_config(EXAMPLE / "campaigns.toml")
    engine.replay(EXAMPLE / "trace.msgpack", drain=True)
    path = engine.checkpoint(tmp_path / "x.ckpt")
    text = (EXAMPLE / "campaigns.toml").read_text()
    assert 'utc_offset = "+08:00"' in text
    for name in ("profiles.csv", "lists", "areas"):
        (tmp_path / name).symlink_to(EXAMPLE / name)
    (tmp_path / "c.toml").write_text(text.replace('utc_offset = "+08:00"', 'utc_offset = "+03:00"'))
    caplog.set_level(logging.WARNING, "sigmatch.api")
    restored = Engine.from_config(tmp_path / "c.toml").restore(path)
    assert "written with utc_offset +08:00, this engine's is +03:00" in caplog.text
    assert restored._days.counts == {} and restored._variants.counts.keys() == engine._variants.counts.keys()
    same = Engine.from_config(EXAMPLE / "campaigns.toml").restore(path)
    assert same._days.counts.keys() == engine._days.counts.keys()
