"""Seed inputs for the fuzz targets, made from the programmes in examples/ so that the
fuzzer starts from what operators write, and the input layout each target reads."""
from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import msgpack
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if (p / "campaigns.toml").is_file())

# fuzz_config.py: one input holds several files, each after a line of its own. A TOML
# comment, so that the configuration part of a seed reads as the file it came from.
SEPARATOR = b"\n#--8<--\n"
# The files of a configuration input, in order, as the configuration names them
CONFIG_FILES = ("campaigns.toml", "profiles.csv", "lists/a.txt", "lists/b.csv", "lists/c.roar", "areas/a.txt")


def example_subscribers() -> np.ndarray:
    numbers = set()
    for example in EXAMPLES:
        with open(example / "profiles.csv", newline="") as f:
            numbers.update(int(row["msisdn"]) for row in csv.DictReader(f))
    return np.array(sorted(numbers), dtype=np.uint64)


def decoder_seeds() -> list[bytes]:
    """A 3-byte header (max_event_bytes choice, split point, chunk size) and a stream."""
    streams = [(example / "trace.msgpack").read_bytes() for example in EXAMPLES]
    streams += [s[:300] for s in streams]
    number = int(example_subscribers()[0])
    streams += [
        msgpack.packb([1_793_000_000_000, 3, number, 0, 7]) +
        msgpack.packb({"type": "SMS_MO", "msisdn": str(number), "ts": 1_793_000_000_010, "note": {"x": [1, 2]}}) +
        msgpack.packb([1_793_000_000_020, 99, number]) +
        msgpack.packb([1_793_000_000_030, "LOCATION_UPDATE", number, None, 8, 0, 0, 0, "extra", 1.5]) +
        b"\xcf" + (1_793_000_000_040).to_bytes(8, "big") +
        msgpack.packb([1_793_000_000_050, 1, number, number, 2 ** 32 - 1, 2 ** 64 - 1, 7, 2 ** 63]),
        b"\x91" * 40 + b"\xc0",
        b"\xdd\xff\xff\xff\xff",
        msgpack.packb([1_793_000_000_000, 1, number, 0, 7]) + b"\xc1",
    ]
    return [bytes([i % 4, 128, 7 + i]) + s for i, s in enumerate(streams)]


def _config_text(example: Path) -> str:
    text = (example / "campaigns.toml").read_text()
    text = re.sub(r'"lists/[^"]+\.txt"', '"lists/a.txt"', text)
    text = re.sub(r'"lists/[^"]+\.csv"', '"lists/b.csv"', text)
    text = re.sub(r'"lists/[^"]+\.roar"', '"lists/c.roar"', text)
    return re.sub(r'"areas/[^"]+"', '"areas/a.txt"', text)


def config_seeds() -> list[bytes]:
    """Each example's configuration with its files, in the order of CONFIG_FILES."""
    seeds = []
    for example in EXAMPLES:
        # an example without lists (moments, sequences) still seeds the TOML and the profiles
        lists = sorted((example / "lists").iterdir()) if (example / "lists").is_dir() else []
        text_list = next((p.read_bytes() for p in lists if p.suffix == ".txt"), b"13800010001\n")
        roar = next((p.read_bytes() for p in lists if p.suffix == ".roar"), b"")
        areas = sorted((example / "areas").iterdir()) if (example / "areas").is_dir() else []
        csv_list = b"msisdn,note\n" + b"".join(line + b",x\n" for line in text_list.splitlines()
                                                if line.strip() and not line.startswith(b"#"))
        parts = [_config_text(example).encode(), (example / "profiles.csv").read_bytes(), text_list, csv_list,
                 roar, areas[0].read_bytes() if areas else b"7101\n"]
        seeds.append(SEPARATOR.join(parts))
    return seeds


def config_parts(data: bytes) -> list[bytes]:
    """An input cut into CONFIG_FILES; a missing part is the first seed's file."""
    parts = data.split(SEPARATOR, len(CONFIG_FILES) - 1)
    if len(parts) < len(CONFIG_FILES):
        parts += _DEFAULT_PARTS[len(parts):]
    return parts


_DEFAULT_PARTS = config_seeds()[0].split(SEPARATOR)


def seed_corpus(target: str, args: list[str]) -> None:
    """Fill the first corpus directory on the command line with the seeds when it is empty."""
    directories = [Path(a) for a in args if not a.startswith("-") and Path(a).is_dir()]
    if not directories or any(directories[0].iterdir()):
        return
    for seed in (decoder_seeds() if target == "decoder" else config_seeds()):
        (directories[0] / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


def _entry(token: bytes) -> str:
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in token) + '"'


def dictionary(target: str) -> Path:
    """A libFuzzer dictionary (tokens the mutator inserts whole), made from the code so that
    it follows new event types and keys: msgpack type bytes and field names for the decoder;
    section and key names, event types and where operators for the configuration."""
    import tempfile

    from engine.language import config
    names = [name.encode() for name in config.EVENT_TYPES]
    if target == "decoder":
        tokens = [bytes([b]) for b in (0x90, 0x98, 0x80, 0x88, 0xc0, 0xc1, 0xc2, 0xc3, 0xcc, 0xcd, 0xce, 0xcf, 0xd0,
                                       0xd1, 0xd2, 0xd3, 0xca, 0xcb, 0xd9, 0xda, 0xdb, 0xc4, 0xc5, 0xc6, 0xdc,
                                       0xdd, 0xde, 0xdf, 0xd4, 0xc7)]
        tokens += [msgpack.packb(n) for n in names + [b"ts", b"type", b"msisdn", b"peer", b"cell", b"dur",
                                                      b"flags", b"arg"]]
        tokens += [msgpack.packb(int(example_subscribers()[0])), msgpack.packb(1_793_000_000_000)]
    else:
        from engine.language import schema
        tokens = [k.encode() for k in sorted(schema.all_keys())] + [b'"' + n + b'"' for n in names]
        tokens += [(f"[[{s.name}]]" if s.shape == "array of tables" else f"[{s.name}]").encode()
                   for s in schema.SECTIONS]
        tokens += [b" and ", b" or ", b" not ", b" in ", b">=", b"!=", b"'", b'"""', b"'''",
                   b"\\u0000", b"=", b"\r\n", b"msisdn", b"1e999", b"0x", b"inf", b"nan", b"2026-11-30T03:10:00Z"]
    path = Path(tempfile.mkdtemp(prefix="sigmatch-fuzz-dict-")) / f"{target}.dict"
    path.write_text("\n".join(_entry(t) for t in tokens) + "\n")
    return path


def fuzzer_arguments(target: str, args: list[str]) -> list[str]:
    """The command line for atheris.Setup: the target's dictionary added unless one is
    given, and the first corpus directory seeded when it is empty."""
    seed_corpus(target, args[1:])
    if not any(a.startswith("-dict=") for a in args):
        args = args + [f"-dict={dictionary(target)}"]
    return args


def end_without_destructors() -> None:
    """Make the C-level exit() that ends a finished fuzz run end the process at once.

    libFuzzer ends a run that reached -max_total_time with exit(0) from inside atheris.Fuzz,
    this thread holding the GIL. exit() runs the C++ destructors of pyarrow's thread pools,
    which join their workers, and a worker waiting for the GIL then waits for ever: CI saw the
    config target, its 15 s done, hang until it was killed ("Did not return to Python
    execution", libFuzzer's own timeout not firing outside an input; pyarrow has open reports
    of hangs at shutdown, apache/arrow#43892, #50482). Handlers run in the reverse order of
    their registration, so _exit, registered after the pools exist, runs before their
    destructors, with the status exit() was given (glibc's on_exit passes it). Call it last,
    just before atheris.Fuzz: nothing in Python runs after it."""
    import ctypes
    try:
        import pyarrow as pa
        import pyarrow.csv as pa_csv
        import io
        # the pools and the CSV machinery are made on first use, and their destructors
        # registered then: make them now, before the handler
        pa.cpu_count(), pa.io_thread_count()
        pa_csv.read_csv(io.BytesIO(b"a\n1\n"))
    except ImportError:
        pass
    libc = ctypes.CDLL(None, use_errno=True)
    libc.on_exit.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    if libc.on_exit(ctypes.cast(libc._exit, ctypes.c_void_p), None) != 0:
        raise OSError(ctypes.get_errno(), "on_exit failed")
