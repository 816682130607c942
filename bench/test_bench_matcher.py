"""Decode + match + state + timers without sinks: Engine.replay(trace, keep=False).

Each round replays the whole trace into a fresh Engine (compiled from the session's loaded
world, untimed), so that every round starts from empty state. Variants: few and many
campaigns (the first 4 or 48 by id, every campaign kind in both), with the generated
delays (and their rechecks) or with every action immediate.
"""
import pytest

FEW, MANY = 4, 48


@pytest.mark.parametrize("delays", [True, False], ids=["delays", "immediate"])
@pytest.mark.parametrize("nr_campaigns", [FEW, MANY], ids=[f"{FEW}campaigns", f"{MANY}campaigns"])
def test_replay(benchmark, record_rate, bench_world, nr_campaigns, delays):
    config = bench_world.config_with(nr_campaigns, delays)
    trace = bench_world.trace
    benchmark.group = "matcher"
    benchmark.extra_info["campaigns"] = len(config.campaigns)
    benchmark.extra_info["delayed_campaigns"] = sum(c.delay_ms > 0 for c in config.campaigns)
    benchmark.extra_info["subscribers"] = len(bench_world.world.profiles.msisdn)
    runs = []

    def setup():
        return (bench_world.engine(config),), {}

    def replay(engine):
        runs.append(engine.replay(trace, keep=False, progress=False).stats["run"])

    benchmark.pedantic(replay, setup=setup, rounds=5, warmup_rounds=0)
    run = runs[-1]
    assert run["events"] == len(bench_world.events) and run["dead_letters"] == 0
    if not delays:
        assert run["pending"] == 0
    benchmark.extra_info["actions"] = run["actions"]
    benchmark.extra_info["conversions"] = run["conversions"]
    benchmark.extra_info["pending"] = run["pending"]
    record_rate(run["events"], "events")
