import os
import sys
from pathlib import Path

from hypothesis import settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# CI runs on 2 cores within a time budget: modest example counts there, more on request.
settings.register_profile("ci", max_examples=60)
settings.register_profile("dev", max_examples=150)
settings.register_profile("thorough", max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
