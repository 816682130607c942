"""The cold paths of `explain` and `diff` (engine/_explain.pxi): the core against the reference
model on random worlds. The takers (contacts a campaign lost to another through min_gap,
max_per_day or max_in_window) and the explanation of a few watched subscribers must be
identical; watching must change no outcome. By hand: tests/test_explain_scenarios.py."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.api import Engine
from engine.language.compile import World
from engine.model import ReferenceModel
from tests.worlds import worlds


def split(data, cuts):
    cuts = sorted({c for c in cuts if 0 < c < len(data)})
    edges = [0] + cuts + [len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


SETTINGS = dict(deadline=None, max_examples=max(150, settings().max_examples),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _model(w, **kwargs):
    model = ReferenceModel(w.config, w.profiles, w.lists, w.areas, **kwargs)
    model.feed(w.trace)
    model.finish()
    model.drain()
    return model


@settings(**SETTINGS)
@given(w=worlds())
def test_takers_match_the_model(w):
    engine = Engine(w.config, World(w.profiles, w.lists, w.areas), record_takers=True)
    engine.replay(w.trace, drain=True)
    assert engine.takers() == _model(w, record_takers=True).takers


def _numbers(w, data):
    numbers = [int(m) for m in w.profiles.msisdn]
    return data.draw(st.lists(st.sampled_from(numbers), min_size=1, max_size=3, unique=True))


@settings(**SETTINGS)
@given(w=worlds(), data=st.data(), cuts=st.lists(st.integers(0, 5000), max_size=3))
def test_explanations_match_the_model(w, data, cuts):
    """Every event and timer of a few watched subscribers: each campaign's result, every
    emission, conversions and the state after it, as the model says; and watching changes
    nothing in the outcome."""
    numbers = _numbers(w, data)
    model = _model(w, watch=numbers)
    engine = Engine(w.config, World(w.profiles, w.lists, w.areas))
    engine.watch(numbers)
    actions = [engine.replay(iter(split(w.trace, cuts))).actions, engine.drain().actions]
    for m in numbers:
        assert engine.explanation(m)["events"] == model.explanations[m], m
    seqs_and_times = [(int(a["seq"]), int(a["ts"]), int(a["msisdn"])) for part in actions for a in part]
    assert seqs_and_times == [(a[0], a[1], a[3]) for a in model.actions]
