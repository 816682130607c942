"""Fuzz target (atheris): configuration loading on arbitrary bytes.

The input is the files of a configuration, one after another with a separator line
between them (tests/fuzz/seeds.py, CONFIG_FILES): the TOML, a profile snapshot (CSV), a
list as text, a list as CSV, a list as a Roaring bitmap and an area. They are written into
a scratch directory and read as `sigmatch check` reads them: engine.language.config.load_config,
then each loader on its file, then the engine built from the configuration (profiles,
lists and areas loaded, `where` compiled against the profiles).

The one rule checked: only ConfigError and LoadError may escape. Any other exception is a
finding (a traceback an operator would see instead of a line naming the file and key).

    python tests/fuzz/fuzz_config.py [libFuzzer options] [CORPUS_DIR ...]

An empty corpus directory is seeded from the example programmes (tests/fuzz/README.md).
"""
import logging
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["engine", "loaders", "tomllib"]):
    from engine.api import Engine
    from engine.language.config import load_config
    from engine.errors import ConfigError, LoadError
    from loaders.areas import load_area
    from loaders.lists import load_list
    from loaders.profiles import load_profiles
    from tests.fuzz.seeds import CONFIG_FILES, config_parts, end_without_destructors, fuzzer_arguments

SCRATCH = Path(tempfile.mkdtemp(prefix="sigmatch-fuzz-config-"))
(SCRATCH / "lists").mkdir()
(SCRATCH / "areas").mkdir()
PATHS = [SCRATCH / name for name in CONFIG_FILES]
LOADERS = [(load_profiles, PATHS[1]), (load_list, PATHS[2]), (load_list, PATHS[3]), (load_list, PATHS[4]),
           (load_area, PATHS[5])]


def TestOneInput(data: bytes) -> None:
    for path, part in zip(PATHS, config_parts(data)):
        path.write_bytes(part)
    try:
        config = load_config(PATHS[0])
    except ConfigError:
        config = None
    for load, path in LOADERS:
        try:
            load(path)
        except LoadError:
            pass
    if config is not None:
        try:
            Engine(config)
        except (ConfigError, LoadError):
            pass


def main() -> None:
    # warnings about bad rows are expected by the thousand; they are not what is checked
    logging.disable(logging.CRITICAL)
    atheris.Setup(fuzzer_arguments("config", sys.argv), TestOneInput)
    end_without_destructors()
    atheris.Fuzz()


if __name__ == "__main__":
    main()
