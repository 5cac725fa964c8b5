"""fastnn.show_config(): what this build of fastnn is and how it will run."""

import platform
import sys

from . import _blas, _threads
from ._kernels import _openmp, _wait

try:
    from . import _build_info
except ImportError:  # built by a tool that skipped setup.py's build_ext
    _build_info = None


def openmp_enabled():
    """True if the kernels were compiled with OpenMP (otherwise they run serially)."""
    return _openmp.openmp_version() != 0


def config():
    """The facts show_config() prints, as a dict."""
    import numpy
    import scipy

    from ._version import __version__

    return {
        "fastnn": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "openmp": openmp_enabled(),
        "openmp_version": _openmp.openmp_version(),
        "num_threads": _threads.get_num_threads(),
        "num_threads_source": _threads.num_threads_source(),
        "usable_cpus": _threads.usable_cpus(),
        "openmp_wait": "{} ({})".format(*_wait.policy()),
        "gemm": _blas.info(),
        "blas": [
            {"name": name, "version": version, "threading_layer": layer,
             "num_threads": n, "filepath": path}
            for name, version, layer, n, path in _threads.blas_info()
        ],
        "compiler": getattr(_build_info, "compiler", "unknown"),
        "compile_flags": getattr(_build_info, "compile_flags", "unknown"),
        "link_flags": getattr(_build_info, "link_flags", "unknown"),
    }


def show_config(mode="stdout"):
    """Print fastnn's build and runtime configuration; mode="dicts" returns it instead."""
    info = config()
    if mode == "dicts":
        return info
    if mode != "stdout":
        raise ValueError(f"mode: expected 'stdout' or 'dicts', got {mode!r}")
    openmp = (
        f"enabled (OpenMP {info['openmp_version']})"
        if info["openmp"]
        else "DISABLED: this build runs every kernel on one thread"
    )
    lines = [
        f"fastnn {info['fastnn']}",
        f"  python:     {info['python']} on {info['platform']}",
        f"  numpy:      {info['numpy']}    scipy: {info['scipy']}",
        f"  OpenMP:     {openmp}",
        (f"  threads:    {info['num_threads']} (from {info['num_threads_source']}; "
         f"{info['usable_cpus']} usable CPUs)"),
        f"  waiting:    {info['openmp_wait']}",
    ]
    gemm = info["gemm"]
    lines += [
        f"  GEMM:       {gemm['name']} {gemm['version']} ({gemm['filepath']})",
        f"              {gemm['threading']}",
        f"              chosen by {gemm['reason']}",
    ]
    for blas in info["blas"] or [None]:
        if blas is None:
            lines.append("  BLAS:       not identified by threadpoolctl")
        else:
            lines.append(
                f"  BLAS:       {blas['name']} {blas['version']} ({blas['threading_layer']}), "
                f"{blas['num_threads']} threads, {blas['filepath']}"
            )
    lines += [
        f"  compiler:   {info['compiler']}",
        f"  flags:      {info['compile_flags']} (link: {info['link_flags']})",
    ]
    print("\n".join(lines), file=sys.stdout)
