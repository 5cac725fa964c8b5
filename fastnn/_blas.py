"""Which BLAS fastnn's matrix products call: an OpenBLAS, or Intel MKL beside one.

fastnn's GEMMs (Linear layers, convolutions, `ops.matmul`) go through one table of
function pointers (fastnn/_kernels/backend.pxd). Two backends can fill it:

- "openblas": OpenBLAS, always there: SciPy's own copy (`scipy.linalg.cython_blas`), or,
  where the `scipy-openblas32` package is installed (`pip install fastnn[openblas]`, BSD
  licence) and its OpenBLAS is at least as new, that one: a newer OpenBLAS than SciPy's
  computes a training step's products faster (0.3.34 against SciPy 1.17's 0.3.30 on an
  AMD EPYC: 1-14% on the products of 64 rows and more, 1-8% on whole training steps). It
  runs one thread per call; fastnn cuts a large product into slabs, one per OpenMP
  thread.
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
  the OpenBLAS above, which computes them 1.2-1.9x faster than MKL (Intel Xeon); on
  other vendors' CPUs, OpenBLAS takes every product but those MKL measured faster
  there: input gradients (b transposed) of under 512 rows (and a b of under 2**24
  elements), and products with a transposed operand over an inner dimension under 64
  (backend.pxd's to_other; AMD EPYC).

Which one: `set_blas(name)`, else the environment variable FASTNN_BLAS ("auto",
"openblas" or "mkl"), else "auto": MKL where it is installed (on an Intel Xeon measured
faster for every shape of bench/bench_train.py, one thread or more; on an AMD EPYC for
the products named above, the others going to OpenBLAS), OpenBLAS otherwise. An
FASTNN_BLAS that cannot be honoured warns and falls back to "auto"; `set_blas` raises
instead. The BLAS libraries round differently: a model gives the same results again
only with the same libraries (and CPU). `show_config()` says which one runs and why.
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
# From this OpenBLAS version on, products with neither operand transposed go to OpenBLAS
# beside MKL on CPUs other than Intel's (backend.pxd: nn_other).
_OPENBLAS_NN_FROM = (0, 3, 31)
_MKL_LIBRARIES = ("libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so")

_current = None  # the backend in use, once configured
_reason = None  # why it was chosen
_mkl = None  # the loaded _Mkl, or the reason it could not load (str)
_openblas = None  # the _OpenBlas in use, once found
_scipy_openblas = None  # SciPy's own, once made


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
        self.by_shape = not self.strict  # products to OpenBLAS by shape (backend.pxd)
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
        return address("sgemm"), address("dgemm"), threads, self.threaded


class _OpenBlas:
    """An OpenBLAS fastnn can call: SciPy's own (path None), or a shared library (the
    scipy-openblas32 package's), loaded here and held to one thread per call."""

    def __init__(self, path=None):
        self.path, self.prefix = path, ""
        self._threads = None  # thread_addresses, once looked up
        if path is None:
            self.lib, self.where, self._version = None, "SciPy's", None
            return
        # OpenBLAS starts its threads when loaded, as many as OPENBLAS_NUM_THREADS says
        # (else one per CPU); fastnn's slabs are its threads, so it starts none.
        saved = os.environ.get("OPENBLAS_NUM_THREADS")
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        try:
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)  # its symbols stay its own
        finally:
            if saved is None:
                del os.environ["OPENBLAS_NUM_THREADS"]
            else:
                os.environ["OPENBLAS_NUM_THREADS"] = saved
        prefix = "scipy_" if hasattr(lib, "scipy_openblas_get_config") else ""
        lib[prefix + "openblas_set_num_threads"].argtypes = [ctypes.c_int]
        lib[prefix + "openblas_set_num_threads"](1)
        config = lib[prefix + "openblas_get_config"]
        config.restype = ctypes.c_char_p
        found = re.search(r"OpenBLAS ([0-9][\w.]*)", config().decode(errors="replace"))
        self.lib, self.prefix = lib, prefix
        self.where = "the scipy-openblas32 package's"
        self._version = found.group(1) if found else "?"

    @property
    def version(self):
        if self._version is None:  # SciPy's, read when first needed (threadpoolctl)
            self._version = _find_scipy_openblas()[0]
        return self._version

    def version_tuple(self):
        return tuple(int(x) for x in re.findall(r"\d+", self.version)[:3])

    def addresses(self):
        """(sgemm, dgemm): its Fortran-interface functions' addresses."""
        if self.lib is None:
            return backend.scipy_addresses()
        return tuple(ctypes.cast(self.lib[self.prefix + name], ctypes.c_void_p).value
                     for name in ("sgemm_", "dgemm_"))

    def thread_addresses(self):
        """(get, set): the addresses of its openblas_get/set_num_threads, or (0, 0)
        where they cannot be found (SciPy's copy, not identified); looked up once."""
        if self._threads is None:
            lib, prefix = ((self.lib, self.prefix) if self.lib is not None
                           else _find_scipy_openblas()[1:])
            self._threads = (0, 0) if lib is None else tuple(
                ctypes.cast(lib[prefix + name], ctypes.c_void_p).value
                for name in ("openblas_get_num_threads", "openblas_set_num_threads"))
        return self._threads


def _find_scipy_openblas():
    """(version or "?", ctypes library or None, symbol prefix) of SciPy's own OpenBLAS, as
    threadpoolctl finds it (not the scipy-openblas32 package's); the library is None
    where its thread-count functions are not found."""
    from . import _threads

    wheel = _wheel_openblas_path()
    wheel = wheel and os.path.realpath(wheel)
    for name, version, _, _, path in _threads.blas_info():
        if name != "openblas" or not path or os.path.realpath(path) == wheel:
            continue
        try:
            lib = ctypes.CDLL(path)  # already loaded: the same library
        except OSError:
            return version or "?", None, ""
        for prefix in ("scipy_", ""):
            if hasattr(lib, prefix + "openblas_get_num_threads") and hasattr(
                    lib, prefix + "openblas_set_num_threads"):
                return version or "?", lib, prefix
        return version or "?", None, ""
    return "?", None, ""


def _wheel_openblas_path():
    """The scipy-openblas32 package's library, or None where it is not installed."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("scipy_openblas32")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(next(iter(spec.submodule_search_locations)), "lib")
    try:
        names = sorted(n for n in os.listdir(folder)
                       if n.startswith("libscipy_openblas") and ".so" in n)
    except OSError:
        return None
    return os.path.join(folder, names[0]) if names else None


def _scipy_own_openblas():
    """SciPy's own OpenBLAS as an _OpenBlas (made once)."""
    global _scipy_openblas
    if _scipy_openblas is None:
        _scipy_openblas = _OpenBlas()
    return _scipy_openblas


def _load_openblas():
    """The OpenBLAS fastnn calls (found once): the scipy-openblas32 package's where it is
    installed, loads and is at least as new as SciPy's, else SciPy's own."""
    global _openblas
    if _openblas is None:
        scipy_own = _scipy_own_openblas()
        _openblas = scipy_own
        path = _wheel_openblas_path() if sys.platform.startswith("linux") else None
        if path is not None:
            try:
                wheel = _OpenBlas(path)
            except (OSError, AttributeError) as exc:
                warnings.warn(f"fastnn: the scipy-openblas32 package's OpenBLAS could not "
                              f"be loaded ({exc}); SciPy's is used", RuntimeWarning,
                              stacklevel=3)
            else:
                if wheel.version_tuple() >= scipy_own.version_tuple():
                    _openblas = wheel
    return _openblas


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


def _use(name, reason, whole_products=None, openblas=None, alone=False):
    """Fill the table for backend `name`. For bench/bench_gemm.py: whole_products
    overrides MKL's threading, openblas names the OpenBLAS (else _load_openblas's), and
    alone leaves MKL without one beside it."""
    openblas = openblas or _load_openblas()
    get_threads, set_threads = openblas.thread_addresses()
    held = {"openblas_get_threads_address": get_threads,
            "openblas_set_threads_address": set_threads}
    if name == "mkl":
        mkl = _load_mkl()
        sgemm, dgemm, threads, threaded = mkl.addresses()
        whole = threaded if whole_products is None else whole_products
        if alone:
            backend.use_addresses(sgemm, dgemm, threads, whole)
        else:
            nn_other = mkl.by_shape and openblas.version_tuple() >= _OPENBLAS_NN_FROM
            backend.use_addresses(sgemm, dgemm, threads, whole, *openblas.addresses(),
                                  mkl.by_shape, nn_other, **held)
    else:
        backend.use_addresses(*openblas.addresses(), **held)
    _use_name(name, reason)


def _use_for_bench(route):
    """The benchmarks' other ways to run fastnn's products: "mkl-slabs" (MKL on one
    thread per call, products cut into slabs as for OpenBLAS), "mkl-alone" (every
    product on MKL) and "openblas-scipy" (SciPy's own OpenBLAS where the
    scipy-openblas32 package's is the one in use). Returns False where the route is
    not available here."""
    if route.startswith("mkl") and isinstance(_load_mkl(), str):
        return False
    if route == "mkl-slabs":
        _use("mkl", "bench: MKL in fastnn's slabs", whole_products=False)
    elif route == "mkl-alone":
        _use("mkl", "bench: MKL alone", alone=True)
    elif route == "openblas-scipy" and _load_openblas().lib is not None:
        _use("openblas", "bench: SciPy's OpenBLAS", openblas=_scipy_own_openblas())
    else:
        return False
    return True


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
    openblas = _load_openblas()
    where = f"{openblas.where} OpenBLAS {openblas.version}"
    if _current == "mkl":
        threading = ("MKL's own threads, in fastnn's OpenMP pool (GNU layer); strict "
                     "reproducibility: any thread count, same results" if _mkl.threaded else
                     f"one thread per call ({_mkl.sequential_reason}); "
                     f"large products cut into slabs, one per fastnn thread")
        if _mkl.by_shape:
            threading += (f"; on {where}, one thread per call, every product except "
                          f"those MKL computes faster on this {_mkl.vendor} CPU: input "
                          "gradients (b transposed) of under 512 rows and a b of under "
                          "2**24 elements, products with a transposed operand over an "
                          "inner dimension under 64")
            if openblas.version_tuple() < _OPENBLAS_NN_FROM:
                threading += (" and products with neither operand transposed that have a "
                              "dimension under 256")
        else:
            threading += f"; products of under 16 output columns on {where}"
        return {"name": "mkl", "version": _mkl.version, "filepath": _mkl.path,
                "threading": threading, "reason": _reason}
    return {"name": "openblas", "version": openblas.version,
            "filepath": openblas.path or "scipy.linalg.cython_blas",
            "threading": f"{where}; one thread per call; large products cut into slabs, "
                         "one per fastnn thread",
            "reason": _reason}
