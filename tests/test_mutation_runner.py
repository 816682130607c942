"""The mutation runner's own verdicts (tests/mutation/run_mutants.py, `make mutants`): a fast
subset that ran no test leaves its mutant untried, which must not count as killed."""
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "mutation"))
from run_mutants import ran_no_test  # noqa: E402

MODULES = {
    "test_passes.py": "def test_one():\n    pass\n",
    "test_fails.py": "def test_one():\n    assert False\n",
    "test_broken_import.py": "import no_such_module_of_sigmatch\n\ndef test_one():\n    pass\n",
}


def test_a_conftest_that_fails_to_import_is_a_kill(tmp_path):
    (tmp_path / "conftest.py").write_text("import no_such_module_of_sigmatch\n")
    (tmp_path / "test_passes.py").write_text(MODULES["test_passes.py"])
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                           "test_passes.py::test_one"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4 and not ran_no_test(proc), (proc.stdout, proc.stderr)


@pytest.mark.parametrize("target, untried", [
    ("test_passes.py::test_not_there", True),       # a fast subset naming a test since renamed
    ("test_passes.py::test_one", False),
    ("test_fails.py::test_one", False),
    ("test_broken_import.py::test_one", False),     # exit 4 too, but the mutant broke an import
])
def test_a_run_that_tried_nothing_is_told_from_a_kill(tmp_path, target, untried):
    for name, text in MODULES.items():
        (tmp_path / name).write_text(text)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", target],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert ran_no_test(proc) is untried, (proc.returncode, proc.stdout)
