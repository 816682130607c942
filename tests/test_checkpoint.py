"""Checkpoints: an engine restored from one continues exactly like the engine that wrote it."""
import os
import stat

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import CheckpointError, Engine
from engine.language.compile import World
from engine.world.gen import generate
from tests.worlds import worlds


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    generated = generate(tmp_path_factory.mktemp("world"), subscribers=3_000, events=40_000, campaigns=6, seed=4)
    data = generated.trace.read_bytes()
    return generated.config, data, generated.event_bytes if hasattr(generated, "event_bytes") else 45


def halves(data, size):
    cut = (len(data) // size // 2) * size
    return data[:cut], data[cut:]


def test_restored_engine_continues_like_the_original(world, tmp_path):
    config, data, size = world
    whole = Engine.from_config(config).replay(data, drain=True)
    # a cut where delayed actions are waiting: timers are part of what is carried over
    for tenth in range(3, 10):
        cut = (len(data) // size * tenth // 10) * size
        original = Engine.from_config(config)
        a = original.replay(data[:cut])
        if original.pending:
            break
    assert original.pending > 0
    first, second = data[:cut], data[cut:]
    original.checkpoint(tmp_path / "state.ckpt", extra={"spool": "file-0001", "offset": len(first)})

    restored = Engine.from_config(config)
    assert restored.restore(tmp_path / "state.ckpt") is restored
    assert restored.checkpoint_extra == {"spool": "file-0001", "offset": len(first)}
    assert restored.pending == original.pending and restored.clock == original.clock
    b = restored.replay(second, drain=True)
    assert np.array_equal(np.concatenate([a.actions, b.actions]), whole.actions)
    assert np.array_equal(np.concatenate([a.conversions, b.conversions]), whole.conversions)
    reference = Engine.from_config(config)
    reference.replay(data, drain=True)
    assert restored.stats["campaigns"] == reference.stats["campaigns"]
    assert restored.stats["totals"]["events"] == reference.stats["totals"]["events"]
    assert stat.S_IMODE(os.stat(tmp_path / "state.ckpt").st_mode) == 0o640
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_checkpoint_that_cannot_be_written_names_its_path(world, tmp_path):
    """helper-128: a directory that is a file gave NotADirectoryError naming the hidden
    temporary file the checkpoint is written through."""
    config, data, _ = world
    engine = Engine.from_config(config)
    (tmp_path / "outfile").write_text("")
    for path in (tmp_path / "outfile" / "x.ckpt", tmp_path / "gone" / "x.ckpt"):
        with pytest.raises(OSError) as raised:
            engine.checkpoint(path)
        assert raised.value.filename == str(path) and ".tmp" not in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outfile"]


def test_an_event_split_across_the_checkpoint(world, tmp_path):
    """The core's carry (an event begun but not finished) is part of the state."""
    config, data, size = world
    cut = len(data) // 2 + 7
    original = Engine.from_config(config)
    core = original._core
    core.begin_stream()
    assert core.feed(data[:cut]) == 0
    first = core.take_actions()
    core.take_conversions()
    core.take_dead_letters()
    original.checkpoint(tmp_path / "mid.ckpt")
    restored = Engine.from_config(config)
    restored.restore(tmp_path / "mid.ckpt")
    rcore = restored._core
    assert rcore.feed(data[cut:]) == 0 and rcore.end_stream() == 0
    rcore.drain()
    rest = rcore.take_actions()
    whole = Engine.from_config(config).replay(data, drain=True).actions
    assert np.array_equal(np.concatenate([first, rest])[list(whole.dtype.names)], whole)


@pytest.mark.parametrize("damage", ["flip_section", "flip_header", "truncate", "magic", "empty", "missing"])
def test_damaged_checkpoints_are_refused(world, tmp_path, damage):
    config, data, size = world
    engine = Engine.from_config(config)
    engine.replay(halves(data, size)[0])
    path = engine.checkpoint(tmp_path / "state.ckpt")
    raw = bytearray(path.read_bytes())
    if damage == "flip_section":
        raw[-100] ^= 0xFF
    elif damage == "flip_header":
        raw[30] ^= 0x01
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "magic":
        raw[:8] = b"NOTSIGMA"
    elif damage == "empty":
        raw = bytearray()
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as info:
        Engine.from_config(config).restore(path)
    assert str(path) in str(info.value)


def _with_header(path, edit):
    """The checkpoint at `path` with its header edited by `edit(header)` and its crc made
    again, as a hand edit would."""
    import json
    import struct
    import zlib

    from engine.service.checkpoint import MAGIC
    raw = path.read_bytes()
    magic = len(MAGIC)
    (length,) = struct.unpack("<I", raw[magic:magic + 4])
    header = json.loads(raw[magic + 4:magic + 4 + length])
    edit(header)
    encoded = json.dumps(header).encode()
    rest = raw[magic + 4 + length + 4:]
    path.write_bytes(raw[:magic] + struct.pack("<I", len(encoded)) + encoded
                     + struct.pack("<I", zlib.crc32(encoded)) + rest)


@pytest.mark.parametrize("edit, says", [
    (lambda h: h.pop("scalars"), "damaged header: scalars is missing"),
    (lambda h: h["scalars"].update(layout="144"), "damaged header: scalars.layout is missing"),
    (lambda h: h.update(fingerprint=None), "damaged header: fingerprint is missing"),
    (lambda h: h.update(version="2"), "checkpoint version '2', this engine reads 1 and 2"),
])
def test_a_hand_edited_header_with_its_crc_made_again_is_refused_in_one_line(world, tmp_path, edit, says):
    config, data, size = world
    engine = Engine.from_config(config)
    engine.replay(halves(data, size)[0])
    path = engine.checkpoint(tmp_path / "state.ckpt")
    _with_header(path, edit)
    with pytest.raises(CheckpointError, match=says) as info:
        Engine.from_config(config).restore(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_checkpoint_of_another_configuration_is_refused(world, tmp_path):
    config, data, size = world
    engine = Engine.from_config(config)
    engine.replay(halves(data, size)[0])
    path = engine.checkpoint(tmp_path / "state.ckpt")
    other = tmp_path / "other.toml"
    text = config.read_text()
    other.write_text(text.replace('id = "crbt_school"', 'id = "crbt_school_v2"'))
    for name in ("profiles.parquet", "lists", "areas"):
        source = config.parent / name
        if source.exists():
            (tmp_path / name).symlink_to(source)
    with pytest.raises(CheckpointError, match="campaigns"):
        Engine.from_config(other).restore(path)


@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=40)
@given(w=worlds(), data=st.data())
def test_checkpoint_anywhere_on_random_worlds(w, data, tmp_path_factory):
    at = data.draw(st.sampled_from(w.boundaries))
    fresh = lambda: Engine(w.config, World(w.profiles, w.lists, w.areas))
    whole = fresh().replay(w.trace, drain=True)
    first = fresh()
    a = first.replay(w.trace[:at])
    path = first.checkpoint(tmp_path_factory.mktemp("ckpt") / "s.ckpt")
    second = fresh()
    second.restore(path)
    b = second.replay(w.trace[at:], drain=True)
    assert np.array_equal(np.concatenate([a.actions, b.actions]), whole.actions)
    assert np.array_equal(np.concatenate([a.conversions, b.conversions]), whole.conversions)


def test_a_checkpoint_of_an_earlier_funnel_restores_its_stages_by_name(world):
    # A checkpoint that does not name its funnel stages holds records.FUNNEL_UNNAMED: each
    # stage lands on its own name, and the stages added since start at 0.
    from engine.records import FUNNEL, FUNNEL_UNNAMED
    config, data, size = world
    original = Engine.from_config(config)
    original.replay(data[:len(data) // size // 2 * size])
    core = original._core
    sections = dict(core.state_sections())
    scalars = core.state_scalars()
    funnel = core.funnel()
    sections["funnel"] = np.ascontiguousarray(funnel[:, [FUNNEL.index(s) for s in FUNNEL_UNNAMED]]).reshape(-1)
    del scalars["funnel_stages"]
    restored = Engine.from_config(config)
    restored._core.restore_state(scalars, {k: np.array(v) for k, v in sections.items()})
    expected = funnel.copy()
    expected[:, [FUNNEL.index(s) for s in FUNNEL if s not in FUNNEL_UNNAMED]] = 0
    assert np.array_equal(restored._core.funnel(), expected)
    scalars["funnel_stages"] = ["matched", "no_such_stage"]
    with pytest.raises(ValueError, match="funnel stages"):
        restored._core.restore_state(scalars, sections)
