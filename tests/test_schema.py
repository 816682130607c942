"""The configuration's schema (engine.language.schema): complete, self-consistent, read by
the loader as declared, and documented key by key in docs/configuration.md."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from engine.language import config, schema
from engine.language.config import CampaignSpec, Config, OutputSpec, PolicySpec, parse_config

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
TYPES = tuple(t for t in vars(schema).values() if isinstance(t, type) and dataclasses.is_dataclass(t)
              and t.__module__ == schema.__name__ and t not in (schema.Field, schema.Rule, schema.Section))
FIELDS = list(schema.all_fields())


def test_every_field_has_a_type_a_doc_and_number_bounds():
    for path, f in FIELDS:
        assert isinstance(f.type, TYPES), path
        assert f.doc and "\n" not in f.doc and f.doc.endswith("."), f"{path}: one line of doc, a sentence"
        if isinstance(f.type, schema.NUMBER_TYPES):
            assert f.type.lo is not None and f.type.hi is not None and f.type.lo <= f.type.hi, path
        if isinstance(f.type, schema.Choice):
            assert f.type.values, path
        if isinstance(f.type, schema.Ref):
            assert f.type.section in schema.SECTION, path
        # a required key has no default, and its message says why it is needed
        assert f.required is None or (f.default is None and f.required.strip()), path


def test_every_section_is_declared_and_read():
    for s in schema.SECTIONS:
        assert s.doc and "\n" not in s.doc, s.name
        assert s.shape in ("table", "map", "tables by name", "array of tables"), s.name
        assert (s.shape == "map") == (s.value is not None), s.name
        assert (s.shape in ("map", "tables by name")) == (s.key is not None), s.name
        assert len(set(s.keys)) == len(s.keys), f"{s.name}: a key declared twice"
        for rule in s.rules:
            assert {rule.key, *rule.needs} <= set(s.keys), f"{s.name}: rule on {rule.key}"
            assert rule.doc and "\n" not in rule.doc
    assert sorted(config.READ_ORDER) == sorted(schema.SECTION)


def test_a_name_is_declared_before_it_is_referred_to():
    # the reader goes section by section in READ_ORDER: a reference reads what is already known
    order = config.READ_ORDER
    for s in schema.SECTIONS:
        refs = [f.type for _, f in schema.all_fields(s.fields)] + [s.key]
        for t in refs:
            if isinstance(t, schema.Ref):
                assert order.index(t.section) < order.index(s.name), f"{s.name} refers to {t.section}"


def test_every_key_becomes_an_attribute_of_its_spec():
    for s in schema.SECTIONS:
        spec = Config if s.name == "engine" else config._BUILDS.get(s.builds)
        tables = [(spec, s.fields)] + [(config._BUILDS[f.type.builds], f.type.fields) for f in s.fields
                                       if isinstance(f.type, schema.Table) and f.type.builds]
        for cls, fields in tables:
            if cls is None:
                continue
            names = {f.name for f in dataclasses.fields(cls)}
            for f in fields:
                targets = f.target if isinstance(f.target, tuple) else (f.target,)
                assert set(targets) <= names, f"{s.name}.{f.key} -> {cls.__name__}.{targets}"


def test_the_reader_knows_every_type():
    for t in TYPES:
        assert callable(getattr(config._Reader, f"read_{t.__name__}", None)), t.__name__


def test_describe_is_plain_data_with_every_key():
    described = json.loads(json.dumps(schema.describe()))
    sections = {s["name"]: s for s in described["sections"]}
    assert list(sections) == [s.name for s in schema.SECTIONS]
    for s in schema.SECTIONS:
        fields = {f["key"]: f for f in sections[s.name]["fields"]}
        assert list(fields) == list(s.keys)
        for f in s.fields:
            assert fields[f.key]["doc"] == f.doc
            assert fields[f.key]["required"] == (f.required is not None)
            if isinstance(f.type, schema.NUMBER_TYPES):
                assert fields[f.key]["type"]["lo"] == f.type.lo and fields[f.key]["type"]["hi"] == f.type.hi
    campaign = {f["key"]: f for f in sections["campaign"]["fields"]}
    assert campaign["delay"]["type"] == {"type": "Duration", "positive": False, "zero_turns_off": False,
                                         "lo": 0, "hi": schema.MAX_DURATION_MS}
    assert campaign["priority"]["type"] == {"type": "Integer", "lo": -(2**31 - 1), "hi": 2**31 - 1}
    assert [f["key"] for f in campaign["counter"]["type"]["fields"]] == ["name", "at_least"]
    assert {"key": "absent", "needs": ["delay"],
            "doc": "needs a non-zero delay (the markers are looked at when the delayed action is due)"} \
        in sections["campaign"]["rules"]


def test_the_defaults_declared_are_what_an_absent_key_gives():
    # every default is read through its type, and agrees with the compiled spec's own default
    cfg = parse_config('[[campaign]]\nid = "a"\non = ["SMS_MO"]\nchannel = "sms"\n', "c.toml")
    assert cfg.campaigns[0] == CampaignSpec(id="a", on=(3,), channel="sms")
    assert cfg.policy == PolicySpec()
    assert cfg.output == OutputSpec()
    bare = Config(path=cfg.path)
    for f in schema.SECTION["engine"].fields:
        assert getattr(cfg, f.target) == getattr(bare, f.target), f.key
    counter = parse_config('[counters]\nc = { on = ["SMS_MO"] }\n', "c.toml").counters[0]
    assert (counter.flags, counter.add, counter.window_ms, counter.period, counter.arg) == \
        (0, "count", None, None, None)


@pytest.mark.parametrize("section", schema.SECTIONS, ids=lambda s: s.name)
def test_the_configuration_docs_have_a_row_for_every_key(section):
    text = DOCS.read_text(encoding="utf-8")
    heading = f"`[[{section.name}]]`" if section.shape == "array of tables" else f"`[{section.name}]`"
    start = text.index(f"\n## {heading}\n")
    part = text[start:text.index("\n## ", start + 1)]
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z_]+)` \|.*$", part, re.MULTILINE)}
    for f in section.fields:
        assert f.key in rows, f"docs/configuration.md, {heading}: no row for `{f.key}`"
        if isinstance(f.type, schema.Table):
            for inner in f.type.fields:
                assert re.search(rf"\b{inner.key}\b", rows[f.key].split("|")[2] + rows[f.key].split("|")[5]), \
                    f"docs/configuration.md, {heading}: `{f.key}` row does not name `{inner.key}` (type or limits)"
