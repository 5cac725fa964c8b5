"""Which BLAS fastnn's matrix products call: scipy's OpenBLAS, or Intel MKL.

fastnn's GEMMs (Linear layers, convolutions, `ops.matmul`) go through one table of
function pointers (fastnn/_kernels/backend.pxd). Two backends can fill it:

- "openblas": scipy's BLAS (`scipy.linalg.cython_blas`), always there. It runs one
  thread per call; fastnn cuts a large product into slabs, one per OpenMP thread.
- "mkl": Intel MKL's `libmkl_rt`, loaded at run time when the `mkl` package is
  installed (`pip install fastnn[mkl]`; MKL is under the Intel Simplified Software
  License, not fastnn's BSD licence). fastnn sets its threading layer to GNU OpenMP, so
  its threads are the pool fastnn's kernels run on (never a second spinning pool), and
  hands it whole products with fastnn's thread count. On Intel CPUs its strict
  conditional numerical reproducibility mode is on, so results do not depend on the
  thread count (MKL's guarantee for GEMM there; fastnn's tests check it). On other
  vendors' CPUs that mode does not hold (fastnn leaves it off), and where fastnn's
  OpenMP runtime is a renamed copy (a wheel repaired by auditwheel bundles one) MKL's
  GNU layer would start a second one (MKL's sequential layer then): in both cases MKL
  runs one thread per call and fastnn cuts products into slabs.
  Products of fewer than 16 output columns (an output layer of 10 classes) still go to
  scipy's OpenBLAS, which computes them 1.2-1.9x faster than MKL (Intel Xeon); on
  other vendors' CPUs so do products of at least 256 in every dimension, where
  OpenBLAS measured 1-5% faster and MKL 1.1-1.6x faster below, and those of under
  2**20 multiply-adds whose b is not transposed (OpenBLAS's small-matrix kernels, up to
  20% faster; AMD EPYC).

Which one: `set_blas(name)`, else the environment variable FASTNN_BLAS ("auto",
"openblas" or "mkl"), else "auto": MKL where it is installed (on an Intel Xeon measured
faster for every shape of bench/bench_train.py, one thread or more; on an AMD EPYC for
the small products, the large ones staying on OpenBLAS as above), scipy's OpenBLAS
otherwise. An FASTNN_BLAS that cannot be honoured warns and falls back
to "auto"; `set_blas` raises instead. The two backends round differently: a model gives
the same results again only on the same backend (and CPU). `show_config()` says which
one runs and why.
"""

import ctypes
import os
import re
import site
import sys
import sysconfig
import warnings

from ._kernels import backend

BACKENDS = ("openblas", "mkl")
_ENV_VAR = "FASTNN_BLAS"
_CHOICES = ("auto", *BACKENDS)

# mkl_service.h and mkl_cbwr.h
_MKL_INTERFACE_LP64 = 0
_MKL_THREADING_SEQUENTIAL = 1
_MKL_THREADING_GNU = 3
_MKL_CBWR_AUTO = 2
_MKL_CBWR_STRICT = 0x10000
_MKL_CBWR_SUCCESS = 0
# On CPUs other than Intel's, products of at least this much in every dimension go to
# scipy's OpenBLAS. On an AMD EPYC (Zen 4, 1 thread), MKL computes the small-batch
# products of a training step 1.1-1.6x faster (32x1024 @ (1024x1024)^T: 0.89 against
# 1.43 ms), while OpenBLAS is 1-5% faster from 256 up (1024x1024^T @ 1024x1024: 21.6
# against 22.8 ms); bench/bench_gemm.py. Below 2**20 multiply-adds OpenBLAS's small-matrix
# kernels win where b is not transposed (32x128 @ 128x128: 13.7 against 16.4 us; with
# b transposed MKL's 16.5 against 20.0 us).
_OTHER_MIN_DIM = 256
_OTHER_BELOW = 1 << 20
_MKL_LIBRARIES = ("libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so")

_current = None  # the backend in use, once configured
_reason = None  # why it was chosen
_mkl = None  # the loaded _Mkl, or the reason it could not load (str)


class _Mkl:
    """MKL's runtime library, loaded and set up for fastnn (see the module docstring)."""

    def __init__(self, path):
        lib = ctypes.CDLL(path)
        self.lib, self.path = lib, path
        # MKL's GNU threading layer links the system's libgomp.so.1: the pool fastnn's
        # kernels run on, unless fastnn bundles a renamed copy (a repaired wheel); then
        # the sequential layer. (The layer is the process's: another library's MKL, as
        # torch's, may compute through it too, so it stays GNU wherever it can.) MKL's
        # strict reproducibility holds on Intel CPUs only: elsewhere its threads change
        # the bits with the thread count (float64 products on an AMD EPYC). Without
        # either, MKL runs one thread per call and fastnn cuts products into slabs.
        self.gnu_layer = _openmp_is_system_libgomp()
        self.vendor = _cpu_vendor() or "unknown"
        self.strict = self.vendor == "GenuineIntel"
        self.threaded = self.gnu_layer and self.strict
        self.sequential_reason = (
            None if self.threaded else
            "sequential layer: fastnn's OpenMP runtime is not the system's libgomp.so.1"
            if not self.gnu_layer else
            f"MKL's strict reproducibility covers Intel CPUs only, this one is "
            f"{self.vendor}'s")
        self.other_min_dim = 0 if self.strict else _OTHER_MIN_DIM
        self.other_below = 0 if self.strict else _OTHER_BELOW
        wanted = _MKL_THREADING_GNU if self.gnu_layer else _MKL_THREADING_SEQUENTIAL
        lib.MKL_Set_Interface_Layer.argtypes = [ctypes.c_int]
        lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
        lib.MKL_CBWR_Set.argtypes = [ctypes.c_int]
        lib.MKL_Set_Num_Threads.argtypes = [ctypes.c_int]
        if lib.MKL_Set_Interface_Layer(_MKL_INTERFACE_LP64) != _MKL_INTERFACE_LP64:
            raise OSError("MKL was already set up with 64-bit integers (ILP64) in this process")
        layer = lib.MKL_Set_Threading_Layer(wanted)
        if layer != wanted:
            raise OSError(
                f"MKL was already set up with another threading layer ({layer}) in this "
                "process; fastnn needs GNU OpenMP's, the pool its own kernels run on, or "
                "the sequential one"
            )
        # Strict reproducibility where it holds (Intel CPUs). Elsewhere it is left off:
        # it cannot keep the bits there, and the mode is the process's, imposed on any
        # other library's MKL too (its kernels ran no faster with it on an AMD EPYC).
        if self.strict and (lib.MKL_CBWR_Set(_MKL_CBWR_AUTO | _MKL_CBWR_STRICT)
                              != _MKL_CBWR_SUCCESS):
            raise OSError("MKL refused strict conditional numerical reproducibility "
                          "(it must be set before MKL first computes)")
        lib.MKL_Set_Num_Threads(1)  # calls fastnn does not thread run one thread
        buffer = ctypes.create_string_buffer(256)
        lib.MKL_Get_Version_String(buffer, len(buffer))
        text = buffer.value.decode(errors="replace")
        found = re.search(r"Version ([0-9][\w.]*)", text)
        self.version = found.group(1) if found else text.strip()

    def addresses(self):
        def address(name):
            return ctypes.cast(getattr(self.lib, name), ctypes.c_void_p).value

        threads = address("MKL_Set_Num_Threads_Local") if self.gnu_layer else 0
        return (address("sgemm"), address("dgemm"), threads, self.threaded,
                self.other_min_dim, self.other_below)


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def openmp_runtime():
    """The file of the OpenMP runtime fastnn's kernels call, or None: where the symbol
    omp_get_max_threads resolves from fastnn's own extension (dlsym, then dladdr)."""
    from ._kernels import _openmp

    try:
        symbol = ctypes.CDLL(_openmp.__file__).omp_get_max_threads
        info = _DlInfo()
        if ctypes.CDLL(None).dladdr(ctypes.cast(symbol, ctypes.c_void_p), ctypes.byref(info)):
            return os.fsdecode(info.dli_fname)
    except (OSError, AttributeError):  # a serial build, or no dladdr
        pass
    return None


def _openmp_is_system_libgomp():
    """True if fastnn's OpenMP runtime is GNU's libgomp.so.1 itself, not a renamed copy
    (MKL's GNU layer links libgomp.so.1 by that name)."""
    path = openmp_runtime()
    return path is not None and os.path.basename(path) == "libgomp.so.1"


def _library_dirs():
    """Where pip puts the `mkl` package's libraries: <prefix>/lib of this environment,
    of the base Python and of the user site."""
    dirs = [os.path.join(sysconfig.get_paths()["data"], "lib"),
            os.path.join(sys.prefix, "lib"), os.path.join(sys.base_prefix, "lib")]
    try:
        dirs.append(os.path.join(site.getuserbase(), "lib"))
    except (AttributeError, OSError):
        pass
    return list(dict.fromkeys(dirs))


def _load_mkl():
    """The _Mkl, or a str saying why there is none (loaded once)."""
    global _mkl
    if _mkl is not None:
        return _mkl
    if not sys.platform.startswith("linux"):
        _mkl = "fastnn loads MKL on Linux only"
        return _mkl
    paths = [os.path.join(d, name) for d in _library_dirs() for name in _MKL_LIBRARIES]
    paths = [p for p in paths if os.path.isfile(p)] or list(_MKL_LIBRARIES)  # the loader's path
    errors = []
    for path in paths:
        try:
            _mkl = _Mkl(path)
            return _mkl
        except (OSError, AttributeError) as exc:
            errors.append(f"{path}: {exc}")
    found = any(os.path.isfile(p) for p in paths)
    _mkl = ("MKL could not be set up: " + "; ".join(errors[-2:]) if found else
            "MKL is not installed (pip install fastnn[mkl])")
    return _mkl


def cpuinfo(field):
    """The value of a field of Linux's /proc/cpuinfo for the first CPU ("vendor_id",
    "model name", "flags"), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == field:
                    return value.strip()
    except OSError:
        pass
    return None


def _cpu_vendor():
    return cpuinfo("vendor_id")


def _use(name, reason):
    if name == "mkl":
        backend.use_addresses(*_load_mkl().addresses())
    else:
        backend.use_scipy()
    _use_name(name, reason)


def _use_mkl_slabs():
    """MKL on one thread per call, products cut into slabs as for OpenBLAS: the other
    way to thread MKL's products, for bench/bench_gemm.py to compare."""
    sgemm, dgemm, threads, _, *other = _load_mkl().addresses()
    backend.use_addresses(sgemm, dgemm, threads, False, *other)
    _use_name("mkl", "bench: MKL in fastnn's slabs")


def _use_name(name, reason):
    global _current, _reason
    _current, _reason = name, reason


def _auto(prefix):
    mkl = _load_mkl()
    if isinstance(mkl, str):
        return "openblas", f"{prefix}: {mkl}"
    return "mkl", f"{prefix}: MKL is installed"


def _resolve(choice, prefix):
    """(backend, reason) for a choice in _CHOICES, or raise ValueError."""
    if choice == "auto":
        return _auto(prefix)
    if choice == "mkl":
        mkl = _load_mkl()
        if isinstance(mkl, str):
            raise ValueError(mkl)
    return choice, prefix


def configure():
    """Choose the backend from FASTNN_BLAS (at import)."""
    value = os.environ.get(_ENV_VAR, "").strip().lower()
    if value in ("", "auto"):
        _use(*_auto(f"{_ENV_VAR}={value or 'auto'}" if value else "default (auto)"))
        return
    try:
        if value not in _CHOICES:
            raise ValueError(f"expected one of {', '.join(_CHOICES)}")
        _use(*_resolve(value, f"{_ENV_VAR}={value}"))
    except ValueError as exc:
        warnings.warn(f"fastnn: {_ENV_VAR}={value!r} ignored: {exc}", RuntimeWarning,
                      stacklevel=2)
        _use(*_auto(f"{_ENV_VAR}={value!r} could not be used, so auto"))


def set_blas(name):
    """Make fastnn's matrix products call `name`: "openblas" (scipy's), "mkl" or "auto".

    Raises ValueError for an unknown name or an MKL that is not installed or cannot be
    set up. Not while kernels run in other threads.
    """
    if not isinstance(name, str) or name.lower() not in _CHOICES:
        raise ValueError(f"set_blas: expected one of {', '.join(map(repr, _CHOICES))}, "
                         f"got {name!r}")
    _use(*_resolve(name.lower(), "set_blas"))


def get_blas():
    """The backend fastnn's matrix products call: "openblas" or "mkl"."""
    return _current


def info():
    """A dict for show_config: the backend, its version, library, threading and why."""
    if _current == "mkl":
        threading = ("MKL's own threads, in fastnn's OpenMP pool (GNU layer); strict "
                     "reproducibility: any thread count, same results" if _mkl.threaded else
                     f"one thread per call ({_mkl.sequential_reason}); "
                     f"large products cut into slabs, one per fastnn thread")
        threading += "; products of under 16 output columns"
        if _mkl.other_min_dim:
            threading += (f", of at least {_mkl.other_min_dim} in every dimension and of "
                          f"under {_mkl.other_below} multiply-adds with b not transposed "
                          f"(faster there on this {_mkl.vendor} CPU),")
        threading += " on scipy's OpenBLAS"
        return {"name": "mkl", "version": _mkl.version, "filepath": _mkl.path,
                "threading": threading, "reason": _reason}
    return {"name": "openblas", "version": "scipy's", "filepath": "scipy.linalg.cython_blas",
            "threading": "one thread per call; large products cut into slabs, one per "
                         "fastnn thread",
            "reason": _reason}
