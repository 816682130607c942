"""Reloading configuration, profiles and lists keeps the state (SPEC §1.1, §5)."""
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import ConfigError, Engine
from engine.language.compile import World
from engine.world.gen import generate
from tests.worlds import worlds


@pytest.fixture()
def world(tmp_path):
    generated = generate(tmp_path / "w", subscribers=3_000, events=40_000, campaigns=6, seed=5)
    return generated, generated.trace.read_bytes()


def cut_with_pending(config, data, size=45):
    for tenth in range(3, 10):
        cut = (len(data) // size * tenth // 10) * size
        engine = Engine.from_config(config)
        engine.replay(data[:cut])
        if engine.pending:
            return cut
    raise AssertionError("no cut with pending actions")


def test_reload_of_the_same_files_changes_nothing(world):
    generated, data = world
    cut = cut_with_pending(generated.config, data)
    whole = Engine.from_config(generated.config).replay(data, drain=True)
    engine = Engine.from_config(generated.config)
    a = engine.replay(data[:cut])
    reloaded = engine.reload()
    assert reloaded.reload_dropped == 0 and reloaded.pending == engine.pending
    b = reloaded.replay(data[cut:], drain=True)
    assert np.array_equal(np.concatenate([a.actions, b.actions]), whole.actions)
    reference = Engine.from_config(generated.config)
    reference.replay(data, drain=True)
    assert reloaded.stats["campaigns"] == reference.stats["campaigns"]


def test_a_removed_campaign_drops_its_pending_actions_and_others_keep_state(world, tmp_path):
    generated, data = world
    cut = cut_with_pending(generated.config, data)
    engine = Engine.from_config(generated.config)
    engine.replay(data[:cut])
    before = engine.stats["campaigns"]
    victim = max(before, key=lambda cid: before[cid]["scheduled"])
    text = generated.config.read_text()
    blocks = text.split("[[campaign]]")
    kept = [b for b in blocks[1:] if f'id = "{victim}"' not in b and f"id = '{victim}'" not in b]
    assert len(kept) == len(blocks) - 2
    generated.config.write_text("[[campaign]]".join([blocks[0]] + kept))
    reloaded = engine.reload()
    assert victim not in reloaded.stats["campaigns"]
    assert reloaded.reload_dropped > 0
    assert reloaded.pending == engine.pending - reloaded.reload_dropped
    for cid, funnel in reloaded.stats["campaigns"].items():
        assert funnel == before[cid]           # the others keep their funnels
    assert reloaded._core.seq == engine._core.seq and reloaded.clock == engine.clock
    run = reloaded.replay(data[cut:], drain=True)
    assert len(run.actions) and run.actions["seq"][0] == engine._core.seq + 1   # the sequence goes on


def test_new_numbers_are_appended_and_gone_ones_inactive(world):
    generated, data = world
    engine = Engine.from_config(generated.config)
    engine.replay(data[:45 * 1000])
    profiles = generated.profiles
    table = pq.read_table(profiles)
    gone = int(table["msisdn"][0].as_py())
    table = table.slice(1)
    extra = table.slice(0, 1).set_column(0, "msisdn", pa.array([19999999999], type=table.schema.field("msisdn").type))
    pq.write_table(pa.concat_tables([table, extra]), profiles)
    reloaded = engine.reload()
    old = engine.subscribers
    assert np.array_equal(reloaded.subscribers[:len(old)], old)      # indexes never change
    assert reloaded.subscribers[-1] == 19999999999
    view = reloaded._core.subscriber_view(gone)
    assert view is not None and view["active"] is False
    assert reloaded._core.subscriber_view(19999999999)["active"] is True


def test_a_snapshot_of_the_same_numbers_in_another_order_changes_nothing(world):
    """A new profile snapshot holding every subscriber of the old one, rows in another order
    (an export sorted anew): each subscriber keeps its index and its own `where` attributes,
    and the reloaded engine goes on as one that never reloaded."""
    generated, data = world
    assert "where = " in generated.config.read_text()
    cut = cut_with_pending(generated.config, data)
    whole = Engine.from_config(generated.config).replay(data, drain=True)
    engine = Engine.from_config(generated.config)
    a = engine.replay(data[:cut])
    table = pq.read_table(generated.profiles)
    pq.write_table(table.take(pa.array(np.arange(table.num_rows)[::-1])), generated.profiles)
    reloaded = engine.reload()
    assert np.array_equal(reloaded.subscribers, engine.subscribers)
    b = reloaded.replay(data[cut:], drain=True)
    assert np.array_equal(np.concatenate([a.actions, b.actions]), whole.actions)
    # the same for an engine compiled with its subscribers in another order than the snapshot's
    shuffled = np.random.default_rng(1).permutation(engine.subscribers)
    other = Engine.from_config(generated.config, keep=shuffled).replay(data, drain=True)
    assert np.array_equal(other.actions, whole.actions)


def test_an_invalid_configuration_leaves_the_engine_as_it_was(world, tmp_path):
    generated, data = world
    engine = Engine.from_config(generated.config)
    engine.replay(data[:45 * 1000])
    bad = tmp_path / "bad.toml"
    bad.write_text(generated.config.read_text().replace("[policy]", "[policy]\nnope = 1"))
    with pytest.raises(ConfigError):
        engine.reload(bad)
    assert engine.replay(data[45 * 1000:45 * 2000]).stats["run"]["events"] == 1000


def test_a_checkpoint_after_a_reload_restores_with_its_subscriber_order(world, tmp_path):
    from engine.service.checkpoint import subscriber_order
    generated, data = world
    engine = Engine.from_config(generated.config)
    engine.replay(data[:45 * 2000])
    table = pq.read_table(generated.profiles)
    pq.write_table(table.slice(1), generated.profiles)          # one number gone from the snapshot
    reloaded = engine.reload()
    path = reloaded.checkpoint(tmp_path / "after-reload.ckpt")
    plain = Engine.from_config(generated.config)                 # the snapshot's own order differs
    assert not np.array_equal(plain.subscribers, reloaded.subscribers)
    restored = Engine.from_config(generated.config, keep=subscriber_order(path))
    restored.restore(path)
    rest = data[45 * 2000:]
    assert np.array_equal(restored.replay(rest, drain=True).actions, reloaded.replay(rest, drain=True).actions)


MARKERS_CONFIG = """\
[engine]
profiles = "profiles.csv"

[markers]
{markers}

[[campaign]]
id        = "second_sms"
on        = ["SMS_MO"]
after     = {{ marker = "sent", within = "1h" }}
channel   = "sms"
"""


def test_markers_are_carried_over_a_reload_by_name(tmp_path):
    # "sent" stays (its time kept: the SMS after the reload is a second one within the hour),
    # "roamed" goes (its times dropped), "ordered" is new (unset)
    import msgpack
    (tmp_path / "profiles.csv").write_text("msisdn\n13800000001\n")
    config = tmp_path / "campaigns.toml"
    config.write_text(MARKERS_CONFIG.format(markers='roamed = { on = ["CALL_MO_END"] }\nsent = { on = ["SMS_MO"] }'))
    t0 = 1_767_225_600_000
    engine = Engine.from_config(config)
    engine.replay(msgpack.packb([t0, 1, 13800000001]) + msgpack.packb([t0 + 1, 3, 13800000001]))
    assert engine._core.subscriber_view(13800000001)["markers"] == [t0, t0 + 1]
    config.write_text(MARKERS_CONFIG.format(markers='ordered = { on = ["ORDER"] }\nsent = { on = ["SMS_MO"] }'))
    engine = engine.reload()
    assert engine._core.subscriber_view(13800000001)["markers"] == [None, t0 + 1]
    run = engine.replay(msgpack.packb([t0 + 3_600_000, 3, 13800000001]))
    assert [int(t) for t in run.actions["ts"]] == [t0 + 3_600_000]


@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=40)
@given(w=worlds(), data=st.data())
def test_reload_anywhere_on_random_worlds(w, data):
    """A reload of the same configuration at any event boundary changes nothing: every piece
    of state (rows, contacts, timers, budgets ...) is carried over."""
    at = data.draw(st.sampled_from(w.boundaries))
    world = World(w.profiles, w.lists, w.areas)
    whole = Engine(w.config, world)
    expected = whole.replay(w.trace, drain=True)
    first = Engine(w.config, world)
    a = first.replay(w.trace[:at])
    second = first._reloaded(w.config, world)
    b = second.replay(w.trace[at:], drain=True)
    assert np.array_equal(np.concatenate([a.actions, b.actions]), expected.actions)
    assert np.array_equal(np.concatenate([a.conversions, b.conversions]), expected.conversions)
    assert second.stats["campaigns"] == whole.stats["campaigns"]


BUDGET_CONFIG = """\
[engine]
profiles = "profiles.csv"

[channels]
sms = {{ daily_budget = 2 }}

[[campaign]]
id           = "a"
on           = ["CALL_MO_END"]
daily_budget = 1
channel      = "sms"
{more}
"""


def test_budgets_carry_over_a_reload_by_campaign_id_and_channel_name(tmp_path):
    # "a" spends its daily budget (1) and one of the channel's two; after a reload that puts a
    # campaign before "a" and a channel before "sms", "a" is still spent and "b" gets the
    # channel's last send of the day.
    from tests.backends import A, B, T0, ev
    (tmp_path / "profiles.csv").write_text(f"msisdn\n{A}\n{B}\n")
    config = tmp_path / "campaigns.toml"
    config.write_text(BUDGET_CONFIG.format(more=""))
    engine = Engine.from_config(config)
    engine.replay(ev(T0))
    config.write_text(BUDGET_CONFIG.format(more='''
[[campaign]]
id       = "first"
priority = 9
on       = ["POWER_ON"]
channel  = "boss"

[[campaign]]
id       = "b"
on       = ["SMS_MO"]
channel  = "sms"
'''))
    engine = engine.reload()
    assert engine._core.channel_names == ["boss", "sms"]
    run = engine.replay(ev(T0 + 1, msisdn=B) + ev(T0 + 2, 3, B) + ev(T0 + 3, 3, A))
    assert [(str(c), int(m)) for c, m in zip(run.action_columns()["campaign"], run.actions["msisdn"])] == [("b", B)]
    funnel = engine.stats["campaigns"]
    assert funnel["a"]["suppressed_campaign_budget"] == 1 and funnel["b"]["suppressed_channel_budget"] == 1


WINDOW_CONFIG = """\
[engine]
profiles = "profiles.csv"

[policy]
{policy}

[[campaign]]
id      = "c"
on      = ["CALL_MO_END"]
channel = "sms"
"""


@pytest.mark.parametrize("before, after, sent", [
    # 1 time kept (T0 + 2 h); the new cap of 2 in a day sees it and the contact after it only
    ("max_in_window = { contacts = 1, window = \"1h\" }", "max_in_window = { contacts = 2, window = \"1d\" }",
     [0, 1, 2, 3]),
    # 3 times kept; the new cap keeps the newest one: 1 in a day refuses every later contact
    ("max_in_window = { contacts = 3, window = \"1h\" }", "max_in_window = { contacts = 1, window = \"1d\" }",
     [0, 1, 2]),
    # no times were kept before the rule existed
    ("", "max_in_window = { contacts = 2, window = \"1d\" }", [0, 1, 2, 3, 4]),
])
def test_max_in_window_over_a_reload_knows_the_times_kept(tmp_path, before, after, sent):
    # Contacts of A at T0, T0 + 1 h and T0 + 2 h, then a reload, then triggers at T0 + 3 h and
    # T0 + 4 h: what the new cap sees are the times the old engine kept.
    from tests.backends import A, HOUR, T0, ev
    (tmp_path / "profiles.csv").write_text(f"msisdn\n{A}\n")
    config = tmp_path / "campaigns.toml"
    config.write_text(WINDOW_CONFIG.format(policy=before))
    engine = Engine.from_config(config)
    first = engine.replay(ev(T0) + ev(T0 + HOUR) + ev(T0 + 2 * HOUR))
    config.write_text(WINDOW_CONFIG.format(policy=after))
    engine = engine.reload()
    second = engine.replay(ev(T0 + 3 * HOUR) + ev(T0 + 4 * HOUR))
    assert [int(t) for r in (first, second) for t in r.actions["ts"]] == [T0 + k * HOUR for k in sent]


VARIANT_CONFIG = """\
[engine]
profiles = "profiles.csv"

[[campaign]]
id       = "c"
on       = ["CALL_MO_END"]
channel  = "sms"
variants = {variants}
"""


def test_a_reload_that_changes_the_weights_applies_the_new_ones(tmp_path):
    # crc32(f"{msisdn}:c:variant") of A, B, C: 0, 1, 1 modulo 2 and 3142, 9271, 8775 modulo
    # 10,000. Nothing about variants is state: after the reload every contact takes the new
    # weights' variant, and stats.json keeps what each template got before.
    from tests.backends import A, B, C, T0, ev
    (tmp_path / "profiles.csv").write_text(f"msisdn\n{A}\n{B}\n{C}\n")
    config = tmp_path / "campaigns.toml"
    config.write_text(VARIANT_CONFIG.format(variants='[{ template = "A", weight = 1 }, { template = "B", weight = 1 }]'))
    engine = Engine.from_config(config)
    calls = ev(T0, msisdn=A) + ev(T0, msisdn=B) + ev(T0, msisdn=C)
    run = engine.replay(calls)
    assert list(run.action_columns()["template"]) == ["A", "B", "B"]
    config.write_text(VARIANT_CONFIG.format(variants='[{ template = "A", weight = 9000 }, '
                                                     '{ template = "B", weight = 1000 }]'))
    engine = engine.reload()
    run = engine.replay(calls)
    assert list(run.action_columns()["template"]) == ["A", "B", "A"]
    config.write_text(VARIANT_CONFIG.format(variants='[{ template = "N", weight = 1 }, { template = "A", weight = 1 }]'))
    engine = engine.reload()
    run = engine.replay(calls, out=tmp_path / "out")
    assert list(run.action_columns()["template"]) == ["N", "A", "A"]
    variants = run.stats["campaigns"]["c"]["variants"]
    assert list(variants) == ["N", "A", "B"]            # the templates of today, then those gone
    assert [v["sent"] for v in variants.values()] == [1, 5, 3]
