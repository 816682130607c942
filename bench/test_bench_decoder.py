"""The msgpack decoder alone: Core.decode(data, keep=False) over a whole trace in memory.

Three traces of the same events (bench/conftest.py): array form, map form (keys spelled
out, about twice the bytes), and array form with 5% bad events, which go to the dead
letters (taken, untimed, before each round).
"""
import pytest


@pytest.fixture(scope="module")
def core(bench_world):
    return bench_world.engine()._core


@pytest.mark.parametrize("form", ["array", "map", "array_bad"])
def test_decode(benchmark, record_rate, core, traces, form):
    trace = traces[form]
    benchmark.group = "decoder"
    benchmark.extra_info["trace_bytes"] = len(trace.data)
    benchmark.extra_info["bytes_per_event"] = round(len(trace.data) / trace.events, 1)
    benchmark.extra_info["bad_events"] = trace.bad

    bad_before = {}

    def setup():
        core.take_dead_letters()
        bad_before.update(core.counts()["bad_events"])

    result = benchmark.pedantic(core.decode, args=(trace.data,), kwargs={"keep": False},
                                setup=setup, rounds=10, warmup_rounds=1)
    assert result == (trace.good, 0, None)
    # a dead letter is a run of identical bad values (and capped): the counts say how many
    core.take_dead_letters()
    assert sum(n - bad_before[r] for r, n in core.counts()["bad_events"].items()) == trace.bad
    record_rate(trace.events, "events")
