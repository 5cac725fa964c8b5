"""Compiled kernels. Call them through fastnn.ops, which validates every argument."""

from importlib.util import find_spec as _find_spec

if _find_spec(__name__ + ".activations") is None:
    raise ImportError(
        f"fastnn's compiled kernels are missing in {__path__[0]}: this is the source tree, "
        "not an installed fastnn. Run from another directory (or use the `fastnn` command), "
        "or build in place with `pip install -e .` or `python setup.py build_ext --inplace`."
    )

from ._wait import start_runtime as _start_runtime


def _load_runtime():
    from . import _openmp  # noqa: F401  (links the OpenMP runtime, which reads its settings)


_start_runtime(_load_runtime)
