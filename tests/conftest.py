import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# CI runs on 2 cores within a time budget: modest example counts there, more on request.
settings.register_profile("ci", max_examples=60)
settings.register_profile("dev", max_examples=150)
settings.register_profile("thorough", max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# tests/mutation/ holds the mutation check (make mutants): a script that runs this suite,
# never a part of it.
collect_ignore = ["mutation"]


@pytest.fixture(params=["core", "model"])
def backend(request):
    """The engine a scenario runs on (tests/backends.py): every scenario that takes this
    fixture runs once on the Cython core and once on the reference model."""
    return request.param
