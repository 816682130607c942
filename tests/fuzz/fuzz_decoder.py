"""Fuzz target (atheris): the core's msgpack decoder on arbitrary bytes.

The input is a 3-byte header and a stream: byte 0 picks max_event_bytes, bytes 1-2 a
split point and a chunk size, the rest is fed to the core (engine._core.Core, through
Engine.replay). Checked for every input:
- the core returns, or raises StreamError for a stream broken beyond repair; nothing else;
- the outcome (actions, dead letters as written: offset, reason, field, count, bytes; events
  counted, the error's offset and reason) is the same whole, split in two at the chosen point, and fed
  in chunks of the chosen size (SPEC: the output does not depend on how input is cut);
- the reference model (engine/model.py) reaches the same outcome as the core;
- every offset reported lies inside the stream.

The compiled core reports no coverage to the fuzzer; the model, pure Python and
instrumented, walks the same decoding states, so its coverage steers the search.

    python tests/fuzz/fuzz_decoder.py [libFuzzer options] [CORPUS_DIR ...]

An empty corpus directory is seeded from the example traces (tests/fuzz/README.md).
"""
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["engine"]):
    import numpy as np

    from engine.api import Engine
    from engine.language.compile import World
    from engine.language.config import CampaignSpec, Config
    from engine.errors import StreamError
    from engine.model import ReferenceModel
    from tests.fuzz.seeds import end_without_destructors, example_subscribers, fuzzer_arguments
    from tests.worlds import Profiles

# Small limits reach the too-large paths with small inputs; 65536 is the default
MAX_EVENT_BYTES = (16, 32, 64, 65536)
HEADER = 3

CONFIG = Config(path=Path("fuzz.toml"), campaigns=(
    CampaignSpec(id="now", on=tuple(range(1, 13)), channel="sms", cooldown_ms=1),
    CampaignSpec(id="later", on=(1, 3), channel="boss", delay_ms=60_000),
))
# the example traces' subscribers, so that seeded streams make actions, not only dead letters
PROFILES = Profiles(Path("p"), example_subscribers(), {}, None)


def core_outcome(data: bytes, max_event_bytes: int, chunks) -> tuple:
    engine = Engine(CONFIG, World(PROFILES, {}, {}), max_event_bytes=max_event_bytes)
    try:
        run = engine.replay(iter(chunks))
        error = None
    except StreamError as e:
        run, error = e.run, (e.offset, e.reason)
    dead = list(zip(*(column.tolist() for column in run.dead_letter_columns().values())))
    return error, dead, len(run.actions), run.actions.tobytes(), run.stats["run"]["events"]


def model_outcome(data: bytes, max_event_bytes: int) -> tuple:
    model = ReferenceModel(CONFIG, PROFILES, {}, {}, max_event_bytes=max_event_bytes)
    error = None
    try:
        model.feed(data)
        model.finish()
    except StreamError as e:
        error = (e.offset, e.reason)
    return error, list(model.dead_letters), len(model.actions)


def TestOneInput(raw: bytes) -> None:
    if len(raw) < HEADER:
        return
    max_event_bytes = MAX_EVENT_BYTES[raw[0] % len(MAX_EVENT_BYTES)]
    data = raw[HEADER:]
    cut = raw[1] * len(data) // 255
    step = raw[2] % 64 + 1
    whole = core_outcome(data, max_event_bytes, [data])
    split = core_outcome(data, max_event_bytes, [data[:cut], data[cut:]])
    assert split == whole, f"split at {cut} differs from whole: {split[:2]} != {whole[:2]}"
    chunked = core_outcome(data, max_event_bytes, [data[i:i + step] for i in range(0, len(data), step)])
    assert chunked == whole, f"chunks of {step} differ from whole: {chunked[:2]} != {whole[:2]}"
    error, dead, nr_actions, _, _ = whole
    assert error is None or 0 <= error[0] <= len(data), error
    assert all(0 <= offset < len(data) for offset, *_ in dead), dead
    model = model_outcome(data, max_event_bytes)
    assert model == (error, dead, nr_actions), f"model {model} != core {whole[:3]}"


def main() -> None:
    atheris.Setup(fuzzer_arguments("decoder", sys.argv), TestOneInput)
    end_without_destructors()
    atheris.Fuzz()


if __name__ == "__main__":
    main()
