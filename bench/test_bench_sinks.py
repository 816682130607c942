"""The file sinks alone: SinkSet writing synthetic records into a fresh directory per round.

1M action records (12 campaigns over two channels, 5% control, event time spread over two
days, so files rotate by age every hour and by count at 100,000) in csv, jsonl and parquet;
1M conversion records and 1M dead letters (8 to 64 bytes each, written as hex) in csv.
Records arrive in batches of BATCH records, as the engine hands them over after each chunk
it feeds; every round ends with close() (the last renames).
"""
import shutil

import numpy as np
import pytest

from engine.language.config import CampaignSpec
from engine.records import ACTION_DTYPE, BAD_REASONS, CONVERSION_DTYPE, DEAD_LETTER_DTYPE, DEAD_LETTER_BYTES
from engine.sinks import SinkSet

RECORDS = 1_000_000
BATCH = 8192
ROUNDS = 5
T0 = 1_767_225_600_000          # 2026-01-01T00:00:00Z
SPAN_MS = 2 * 86_400_000

CAMPAIGNS = tuple(
    CampaignSpec(id=f"bench_{i:03d}", on=(1,), channel="sms" if i % 3 else "push",
                 priority=i % 5, template=f"T{i}", holdout=0.05)
    for i in range(12))


def _times(rng, n):
    return np.int64(T0) + np.sort(rng.integers(0, SPAN_MS, n))


@pytest.fixture(scope="module")
def actions():
    rng = np.random.default_rng(1)
    a = np.zeros(RECORDS, ACTION_DTYPE)
    a["seq"] = np.arange(1, RECORDS + 1)
    a["ts"] = _times(rng, RECORDS)
    a["trigger_ts"] = a["ts"] - rng.choice([0, 0, 300_000, 1_200_000], RECORDS)
    a["msisdn"] = 13_800_000_000 + rng.integers(0, 200_000_000, RECORDS)
    a["cell"] = rng.integers(1, 40_000, RECORDS)
    a["campaign"] = rng.integers(0, len(CAMPAIGNS), RECORDS)
    a["kind"] = rng.random(RECORDS) < 0.05
    return a


@pytest.fixture(scope="module")
def conversions():
    rng = np.random.default_rng(2)
    c = np.zeros(RECORDS, CONVERSION_DTYPE)
    c["seq"] = np.arange(1, RECORDS + 1) * 2
    c["contact_seq"] = c["seq"] - rng.integers(1, 1000, RECORDS)
    c["ts"] = _times(rng, RECORDS)
    c["msisdn"] = 13_800_000_000 + rng.integers(0, 200_000_000, RECORDS)
    c["campaign"] = rng.integers(0, len(CAMPAIGNS), RECORDS)
    c["kind"] = rng.random(RECORDS) < 0.05
    return c


@pytest.fixture(scope="module")
def dead_letters():
    rng = np.random.default_rng(3)
    d = np.zeros(RECORDS, DEAD_LETTER_DTYPE)
    d["offset"] = np.arange(RECORDS, dtype=np.uint64) * 45
    d["reason"] = rng.integers(0, len(BAD_REASONS), RECORDS)
    d["nbytes"] = rng.integers(8, DEAD_LETTER_BYTES + 1, RECORDS)
    d["bytes"] = rng.integers(0, 256, (RECORDS, DEAD_LETTER_BYTES), dtype=np.uint8)
    return d


def _bench_sink(benchmark, record_rate, tmp_path, format, write, records):
    benchmark.group = "sinks"
    rounds = iter(range(ROUNDS + 1))
    state = {}

    def setup():
        if "out" in state:                       # keep one round's files on disk at a time
            shutil.rmtree(state["out"])
        state["out"] = tmp_path / f"round{next(rounds)}"
        return (SinkSet(state["out"], campaigns=CAMPAIGNS, format=format),), {}

    def run(sinks):
        writer = getattr(sinks, write)
        for start in range(0, len(records), BATCH):
            writer(records[start:start + BATCH])
        sinks.close()
        state["files"] = sinks.files

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, warmup_rounds=0)
    files = state["files"]
    benchmark.extra_info["files"] = len(files)
    benchmark.extra_info["bytes_written"] = sum(f.stat().st_size for f in files)
    benchmark.extra_info["batch"] = BATCH
    record_rate(len(records), "records")


@pytest.mark.parametrize("format", ["csv", "jsonl", "parquet"])
def test_actions(benchmark, record_rate, tmp_path, actions, format):
    _bench_sink(benchmark, record_rate, tmp_path, format, "write_actions", actions)


def test_conversions(benchmark, record_rate, tmp_path, conversions):
    _bench_sink(benchmark, record_rate, tmp_path, "csv", "write_conversions", conversions)


def test_dead_letters(benchmark, record_rate, tmp_path, dead_letters):
    _bench_sink(benchmark, record_rate, tmp_path, "csv", "write_dead_letters", dead_letters)
