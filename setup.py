"""Extension list and compiler flags only; everything else lives in pyproject.toml.

Build switches are environment variables so that they survive pip's build isolation:
SIGMATCH_DEBUG=1 builds with -O0 -g, bounds checks and line tracing;
SIGMATCH_ANNOTATE=1 writes Cython's HTML annotation next to the source.
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("SIGMATCH_DEBUG") == "1"
annotate = os.environ.get("SIGMATCH_ANNOTATE") == "1"

directives = {
    "language_level": 3,
    "boundscheck": debug,
    "wraparound": False,
    "initializedcheck": debug,
    "cdivision": True,
    "embedsignature": True,
}
macros = []
if debug:
    directives["linetrace"] = True
    macros += [("CYTHON_TRACE_NOGIL", "1"), ("SIGMATCH_DEBUG", "1")]
    cflags = ["-O0", "-g"]
else:
    cflags = ["-O3"]

extensions = [
    Extension(
        "engine._core",
        ["engine/_core.pyx"],
        depends=["engine/_core.pxd", "engine/_decode.pxi", "engine/_state.pxi", "engine/_match.pxi",
                 "engine/_explain.pxi", "engine/_deadletters.pxi", "engine/_types.pxi",
                 "engine/_persist.pxi", "engine/_shard.pxi", "engine/_campaigns.pxi",
                 "engine/_lanes.pxi"],
        extra_compile_args=cflags + ["-Wno-unused-function"],
        define_macros=macros,
    )
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives, annotate=annotate))
