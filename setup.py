"""Build fastnn's Cython kernels with OpenMP.

OpenMP is detected by compiling a small test program; without it the kernels build
serial and `fastnn.show_config()` says so. Set FASTNN_NATIVE=1 to add -march=native
for a local build (a wheel built that way only runs on CPUs like the build machine).
FASTNN_NO_AVX512=1 leaves out the AVX-512 version of the loop kernels (to compare with).
"""

import os
import shlex
import sys
import tempfile
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = ["_openmp", "backend", "planop", "activations", "reductions", "matmul", "batchnorm",
           "batchnorm2d", "conv", "pool", "dropout", "losses", "optim", "augment", "network"]
KERNEL_DIR = Path("fastnn", "_kernels")

# -fno-math-errno and -fno-trapping-math let loops with sqrt and selects vectorize;
# unlike -ffast-math they keep IEEE results, NaN and inf included.
BASE_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
OPENMP_FLAGS = ["-fopenmp"]
NATIVE = os.environ.get("FASTNN_NATIVE", "0") not in ("", "0")
NO_AVX512 = os.environ.get("FASTNN_NO_AVX512", "0") not in ("", "0")
# FASTNN_OPENMP=0 builds serial kernels even where OpenMP is available (to test that build).
WANT_OPENMP = os.environ.get("FASTNN_OPENMP", "1") not in ("", "0")

OPENMP_TEST = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""


def _compiles(compiler, source, flags):
    """True if `source` compiles and links with `flags`."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "probe.c")
        src.write_text(source)
        try:
            objs = compiler.compile([str(src)], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=flags)
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    """Probe OpenMP, set flags on every extension, record them in _build_info.py."""

    def build_extensions(self):
        compile_flags = list(BASE_FLAGS)
        link_flags = []
        openmp = WANT_OPENMP and _compiles(self.compiler, OPENMP_TEST, OPENMP_FLAGS)
        if openmp:
            compile_flags += OPENMP_FLAGS
            link_flags += OPENMP_FLAGS
        else:
            sys.stderr.write("fastnn: building serial kernels, without OpenMP\n")
            if _compiles(self.compiler, "int main(void){return 0;}", ["-fopenmp-simd"]):
                compile_flags.append("-fopenmp-simd")
        if NATIVE:
            compile_flags.append("-march=native")
        if NO_AVX512:
            compile_flags.append("-DFASTNN_NO_AVX512")
        for ext in self.extensions:
            ext.extra_compile_args = compile_flags + ext.extra_compile_args
            ext.extra_link_args = link_flags + ext.extra_link_args
        self._build_info = self._info_text(openmp, compile_flags, link_flags)
        previous = Path(self.build_lib, "fastnn", "_build_info.py")
        if not previous.exists() or previous.read_text() != self._build_info:
            self.force = True  # other flags than the objects in build/ were made with
        super().build_extensions()

    def run(self):
        super().run()
        if getattr(self, "_build_info", None) is not None:
            self._write_build_info(self._build_info)

    def _info_text(self, openmp, compile_flags, link_flags):
        compiler = " ".join(getattr(self.compiler, "compiler_so", ["unknown"])[:1])
        return (
            "# Written by setup.py at build time.\n"
            f"openmp = {openmp!r}\n"
            f"compiler = {compiler!r}\n"
            f"compile_flags = {shlex.join(compile_flags)!r}\n"
            f"link_flags = {shlex.join(link_flags)!r}\n"
        )

    def _write_build_info(self, text):
        targets = [Path(self.build_lib, "fastnn")]
        if self.inplace or getattr(self, "editable_mode", False):
            targets.append(Path("fastnn"))
        for folder in targets:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "_build_info.py").write_text(text)


extensions = [
    Extension(
        f"fastnn._kernels.{name}",
        [str(KERNEL_DIR / f"{name}.pyx")],
        include_dirs=[str(KERNEL_DIR)],
    )
    for name in KERNELS
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "nonecheck": False,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)
