"""The fuzz targets' short run, part of `make test`: each target for FUZZ_SECONDS (15 s by
default) from its seeds. A finding fails the test and shows the input that caused it, as
repr and base64, with the command that reproduces it. The long run is `make fuzz`
(tests/fuzz/README.md)."""
import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris is not installed: `pip install 'sigmatch[test]'` installs it "
                                      "on Linux x86-64, the one platform PyPI has wheels for")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SECONDS = int(os.environ.get("FUZZ_SECONDS", "15"))
if SECONDS <= 0:        # libFuzzer reads -max_total_time=0 as "for ever"
    pytest.skip("FUZZ_SECONDS=0: the short fuzz run is off", allow_module_level=True)


@pytest.mark.parametrize("target", ["decoder", "config"])
def test_a_short_fuzz_run_finds_nothing(target, tmp_path):
    corpus, findings = tmp_path / "corpus", tmp_path / "findings"
    corpus.mkdir()
    findings.mkdir()
    command = [sys.executable, str(HERE / f"fuzz_{target}.py"), f"-max_total_time={SECONDS}",
               # a finding is an exception, a crash or an input that takes a minute; a slow
               # machine does not make a normal input (milliseconds) take that long
               "-timeout=60", "-rss_limit_mb=4096", f"-artifact_prefix={findings}/", str(corpus)]
    # the targets' scratch files and dictionary go under TMPDIR: libFuzzer ends the process
    # with exit(), so they cannot remove them themselves
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          errors="replace", timeout=SECONDS + 300)
    found = sorted(findings.iterdir())
    if proc.returncode == 0 and not found:
        assert any(corpus.iterdir()), "the corpus was never seeded"
        return
    shown = []
    for path in found:
        data = path.read_bytes()
        encoded = base64.b64encode(data).decode()
        shown.append(f"{path.name} ({len(data)} bytes)\n  repr: {data[:2000]!r}\n  base64: {encoded}\n"
                     f"  reproduce: echo {encoded} | base64 -d > finding && "
                     f".venv/bin/python tests/fuzz/fuzz_{target}.py finding")
    output = proc.stdout + proc.stderr
    exception = output.find("=== Uncaught Python exception")
    pytest.fail(f"fuzz_{target} found {len(found)} input(s), exit {proc.returncode}:\n" + "\n".join(shown)
                + ("\n" + output[exception:exception + 4000] if exception >= 0 else "")
                + "\n--- fuzzer output (tail) ---\n" + output[-4000:], pytrace=False)
