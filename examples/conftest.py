"""What the example tests share.

Every examples/<story>/ folder holds campaigns.toml, trace.msgpack (written by make_trace.py,
with whatever lists it builds) and test_<story>.py. The test module keeps the story: the actions,
funnel, conversions and files it expects. The mechanics come from the fixtures here: the
example's paths, one replay of its trace into a temporary folder, rows out of a run's columns
or out of the CSV files it wrote, the reference-model comparison and the make_trace check.

pytest runs with --import-mode=importlib, so a test module cannot import a helper module by
name: plain functions are handed out as fixtures instead.
"""
import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.api import Engine
from engine.language.compile import load_world
from engine.language.config import load_config
from engine.model import ReferenceModel
from engine.records import FUNNEL

# CSV columns read back as integers (SPEC §4); the others stay strings.
INTEGER_COLUMNS = frozenset({"seq", "ts", "msisdn", "trigger_ts", "cell", "contact_seq"})


@dataclass(frozen=True)
class Example:
    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def config(self) -> Path:
        return self.folder / "campaigns.toml"

    @property
    def trace(self) -> Path:
        return self.folder / "trace.msgpack"


def columns_to_rows(columns: dict, fields=None) -> list[tuple]:
    """Columns of NumPy arrays -> rows of plain Python values: all columns, or `fields` in that order."""
    names = list(columns) if fields is None else list(fields)
    return [tuple(v.item() if hasattr(v, "item") else v for v in row)
            for row in zip(*(columns[n] for n in names))]


def read_written(folder: Path, pattern: str, fields) -> list[tuple]:
    """`fields` of every row of the CSV files matching `pattern` in `folder`, files in name order."""
    found = []
    for path in sorted(folder.glob(pattern)):
        with open(path, newline="") as f:
            found += [tuple(int(r[n]) if n in INTEGER_COLUMNS else r[n] for n in fields)
                      for r in csv.DictReader(f)]
    return found


@pytest.fixture(scope="module")
def example(request) -> Example:
    """The example folder of the asking test module."""
    return Example(Path(request.module.__file__).resolve().parent)


@pytest.fixture(scope="module")
def replayed(example, tmp_path_factory):
    """(engine, run, out): the example's trace replayed and drained, files written to `out`."""
    out = tmp_path_factory.mktemp(example.name) / "out"
    engine = Engine.from_config(example.config)
    run = engine.replay(example.trace, out=out, drain=True)
    return engine, run, out


@pytest.fixture(scope="session")
def rows():
    return columns_to_rows


@pytest.fixture(scope="session")
def written():
    return read_written


@pytest.fixture
def assert_reference_model_agrees(example):
    """Check a run of the example's trace (one drained replay of a fresh engine) against the
    reference model: record for record (actions, conversions, dead letters), every funnel and
    the counts of unknown subscribers, late and bad events."""
    def check(run) -> None:
        config = load_config(example.config)
        world = load_world(config)
        model = ReferenceModel(config, world.profiles, world.lists, world.areas)
        model.feed(example.trace.read_bytes())
        model.finish()
        model.drain()
        assert list(model.actions) == columns_to_rows(run.action_columns())
        assert list(model.conversions) == columns_to_rows(run.conversion_columns())
        assert list(model.dead_letters) == columns_to_rows(run.dead_letter_columns())
        assert {cid: {k: f[k] for k in FUNNEL} for cid, f in run.stats["campaigns"].items()} == model.funnel
        figures = run.stats["run"]
        assert (figures["unknown_subscribers"], figures["late_events"], figures["bad_events_by_field"]) == \
            (model.unknown_subscribers, model.late_events, model.bad_events_by_field)
    return check


@pytest.fixture
def assert_make_trace_reproduces(example, tmp_path):
    """Check that make_trace.py writes the committed trace and `lists` byte for byte."""
    def check(*lists: str) -> None:
        spec = importlib.util.spec_from_file_location(f"{example.name}_make_trace",
                                                      example.folder / "make_trace.py")
        make_trace = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(make_trace)
        make_trace.write(tmp_path)
        for name in ("trace.msgpack", *lists):
            assert (tmp_path / name).read_bytes() == (example.folder / name).read_bytes(), name
        assert example.trace.stat().st_size < 200_000
    return check
