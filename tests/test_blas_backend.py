"""The BLAS behind fastnn's products: set_blas/get_blas, FASTNN_BLAS, show_config, and
each backend's results (NumPy float64 reference, independent of the thread count)."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import reference as ref

import fastnn
from fastnn import _blas, nn, ops

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def _available():
    found = []
    for name in _blas.BACKENDS:
        previous = fastnn.get_blas()
        try:
            fastnn.set_blas(name)
            found.append(name)
        except ValueError:
            pass
        finally:
            fastnn.set_blas(previous)
    return found


AVAILABLE = _available()
needs_mkl = pytest.mark.skipif("mkl" not in AVAILABLE, reason="MKL is not installed")


@pytest.fixture(params=[*_blas.BACKENDS, "openblas-scipy"])
def backend(request):
    """Each backend in turn (skipped where it is not installed), and SciPy's own OpenBLAS
    where the scipy-openblas32 package's is the one in use; restored afterwards."""
    previous = fastnn.get_blas()
    if request.param == "openblas-scipy":
        if not _blas._use_for_bench("openblas-scipy"):
            pytest.skip("fastnn's OpenBLAS is SciPy's here")
    elif request.param not in AVAILABLE:
        pytest.skip(f"{request.param} is not available here")
    else:
        fastnn.set_blas(request.param)
    yield request.param
    fastnn.set_blas(previous)


# (M, K, N): under and over the size where products are threaded, a tall inner
# dimension (where a BLAS's own threads would split the sum), and ragged sizes.
SHAPES = [(1, 1, 1), (7, 13, 11), (33, 64, 129), (256, 784, 1024), (48, 100_000, 40),
          (1000, 31, 517)]


def _product(rng, m, k, n, trans_a, trans_b, dtype):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["NN", "TN", "NT", "TT"])
def test_matmul_matches_reference_at_any_thread_count(backend, trans, dtype):
    rng = np.random.default_rng(7)
    eps = np.finfo(dtype).eps
    for m, k, n in SHAPES:
        a, b = _product(rng, m, k, n, *trans, dtype)
        want = ref.matmul(a, b, *trans)
        bound = ref.matmul(np.abs(a), np.abs(b), *trans) * (4 * k * eps) + 1e-30
        results = []
        for threads in (1, 2, 3):
            with fastnn.threads(threads):
                results.append(ops.matmul(a, b, trans_a=trans[0], trans_b=trans[1]))
        assert results[0].dtype == dtype
        for got in results:
            assert np.all(np.abs(got - want) <= bound), (backend, m, k, n)
        if backend == "mkl" and _blas._load_mkl().threaded:
            for got in results[1:]:  # bit for bit, whatever the thread count
                np.testing.assert_array_equal(got, results[0])


def test_accumulate_and_batched(backend):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((5, 300, 200)).astype(np.float32)
    b = rng.standard_normal((5, 200, 400)).astype(np.float32)
    out = ops.matmul(a, b)
    np.testing.assert_allclose(out, np.matmul(a.astype(np.float64), b), rtol=1e-4, atol=1e-3)
    c = rng.standard_normal((300, 400)).astype(np.float32)
    start = c.copy()
    with fastnn.threads(2):
        ops.matmul(a[0], b[0], out=c, accumulate=True)
    np.testing.assert_allclose(c, start + a[0].astype(np.float64) @ b[0], rtol=1e-4, atol=1e-3)


def test_training_is_the_same_at_any_thread_count(backend):
    """A few Adam steps of an MLP with a conv front: each backend gives the same weights
    at 1 and 2 threads, and close to the other backend's."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 12, 12)).astype(np.float32)
    y = rng.integers(0, 10, 64)

    def train(threads):
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, seed=1), nn.ReLU(),
                              nn.Flatten(), nn.Linear(8 * 144, 300, seed=2), nn.ReLU(),
                              nn.Linear(300, 10, seed=3))
        trainer = fastnn.Trainer(model, fastnn.losses.SoftmaxCrossEntropy(),
                                 fastnn.optim.Adam(model, 1e-3), progress=False)
        with fastnn.threads(threads):
            for _ in range(3):
                trainer.train_step(x, y)
        return np.concatenate([p.ravel() for p in model.parameters()])

    one, two = train(1), train(2)
    np.testing.assert_array_equal(one, two)
    previous = fastnn.get_blas()
    for other in AVAILABLE:
        fastnn.set_blas(other)
        np.testing.assert_allclose(train(1), one, rtol=1e-3, atol=1e-5)
    fastnn.set_blas(previous)


def test_set_blas_refuses_unknown_names():
    for bad in ("blis", "", None, 3, "MKL2"):
        with pytest.raises(ValueError, match="set_blas: expected one of"):
            fastnn.set_blas(bad)
    assert fastnn.get_blas() in _blas.BACKENDS


def test_set_blas_without_mkl_raises_and_keeps_the_backend(monkeypatch):
    previous = fastnn.get_blas()
    monkeypatch.setattr(_blas, "_mkl", "MKL is not installed (pip install fastnn[mkl])")
    with pytest.raises(ValueError, match=r"MKL is not installed \(pip install fastnn\[mkl\]\)"):
        fastnn.set_blas("mkl")
    assert fastnn.get_blas() == previous
    fastnn.set_blas("auto")
    assert fastnn.get_blas() == "openblas"
    assert "MKL is not installed" in fastnn.show_config("dicts")["gemm"]["reason"]
    monkeypatch.undo()
    fastnn.set_blas(previous)


@pytest.mark.parametrize("value, warns", [("openblas", False), ("auto", False), ("", False),
                                          ("OpenBLAS", False), ("blis", True), ("mkl", None)])
def test_environment_variable(monkeypatch, value, warns):
    previous = fastnn.get_blas()
    monkeypatch.setenv("FASTNN_BLAS", value)
    if value == "mkl":
        warns = "mkl" not in AVAILABLE
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _blas.configure()
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        if warns:
            assert len(messages) == 1 and f"FASTNN_BLAS={value!r} ignored" in messages[0]
            assert fastnn.get_blas() == _blas._auto("")[0]
        else:
            assert messages == []
            if value.lower() in _blas.BACKENDS:
                assert fastnn.get_blas() == value.lower()
            else:
                assert fastnn.get_blas() == _blas._auto("")[0]
        reason = fastnn.show_config("dicts")["gemm"]["reason"]
        assert ("FASTNN_BLAS" in reason) if value else reason.startswith("default (auto)")
    finally:
        _blas.set_blas(previous)


def test_auto_prefers_mkl_where_installed(monkeypatch):
    if "mkl" in AVAILABLE:
        assert _blas._auto("x") == ("mkl", "x: MKL is installed")
    monkeypatch.setattr(_blas, "_mkl", "MKL is not installed (pip install fastnn[mkl])")
    assert _blas._auto("x") == ("openblas", "x: MKL is not installed (pip install fastnn[mkl])")


@needs_mkl
def test_mkl_is_set_up_for_fastnn():
    mkl = _blas._load_mkl()
    # strict reproducibility on where it holds, Intel CPUs (MKL_CBWR_ALL = -1 reads the
    # branch and the strict bit); elsewhere MKL's default
    intel = _blas.cpuinfo("vendor_id") == "GenuineIntel"
    assert mkl.strict == intel
    strict = mkl.lib.MKL_CBWR_Get(-1) == _blas._MKL_CBWR_AUTO | _blas._MKL_CBWR_STRICT
    assert strict == intel or "MKL_CBWR" in os.environ
    # MKL's own threads only where they are the ones fastnn's kernels run on, and on
    # Intel's CPUs (strict reproducibility holds there only)
    runtime = _blas.openmp_runtime()
    assert mkl.threaded == (runtime is not None and os.path.basename(runtime) == "libgomp.so.1"
                            and _blas.cpuinfo("vendor_id") == "GenuineIntel")
    assert (mkl.sequential_reason is None) == mkl.threaded
    # GNU's layer wherever fastnn's pool is the system's libgomp, whole products or not:
    # the layer is the process's, and another library's MKL (torch's) computes through it
    assert mkl.gnu_layer == (runtime is not None and os.path.basename(runtime) == "libgomp.so.1")
    assert (mkl.addresses()[2] != 0) == mkl.gnu_layer
    previous = fastnn.get_blas()
    fastnn.set_blas("mkl")
    try:
        gemm = fastnn.show_config("dicts")["gemm"]
        assert gemm["name"] == "mkl" and gemm["version"][:2] == "20"
        assert os.path.isfile(gemm["filepath"])
        assert ("MKL's own threads" in gemm["threading"]) == mkl.threaded
    finally:
        fastnn.set_blas(previous)


def test_show_config_names_the_gemm_backend(capsys):
    fastnn.show_config()
    out = capsys.readouterr().out
    assert f"GEMM:       {fastnn.get_blas()} " in out
    assert "chosen by " in out


def test_forced_openblas_in_a_fresh_process(tmp_path):
    """FASTNN_BLAS is read at import."""
    env = dict(os.environ, FASTNN_BLAS="openblas")
    code = "import fastnn; print(fastnn.get_blas())"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "openblas"


@needs_mkl
def test_ensemble_workers_use_the_parents_backend():
    """Spawned workers take the backend set here, not their own default: their members
    equal members trained here, which differ between the backends."""
    from _ensemble_factories import N_CLASSES, N_FEATURES, wide_classifier

    from fastnn.ensemble import Ensemble

    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, N_FEATURES)).astype(np.float32)
    y = rng.integers(0, N_CLASSES, 256)
    previous = fastnn.get_blas()
    default = _blas._auto("")[0]
    other = "openblas" if default == "mkl" else "mkl"

    def weights(ensemble):
        return np.concatenate([m.model.state_dict()[k].ravel() for m in ensemble.members
                               for k in sorted(m.model.state_dict())])

    try:
        fastnn.set_blas(default)
        with fastnn.threads(1):
            default = weights(Ensemble(wide_classifier, n=2, seed=1).fit(X, y, epochs=2))
            fastnn.set_blas(other)
            here = weights(Ensemble(wide_classifier, n=2, seed=1).fit(X, y, epochs=2))
        assert not np.array_equal(default, here)  # else the test could not fail
        with fastnn.threads(2):
            spawned = Ensemble(wide_classifier, n=2, n_jobs=2, seed=1).fit(X, y, epochs=2)
        np.testing.assert_array_equal(weights(spawned), here)
    finally:
        fastnn.set_blas(previous)


# (m, k, n, trans_a, trans_b) -> whether the other BLAS beside MKL computes it: by_shape
# off (Intel CPUs), by_shape on with nn_other off (an OpenBLAS older than 0.3.31), both on.
ROUTES = [
    ((300, 1000, 15, False, False), (True, True, True)),  # under 16 output columns
    ((300, 1000, 16, False, False), (False, False, True)),
    ((256, 256, 256, False, False), (False, True, True)),  # every dimension >= 256
    ((255, 300, 300, False, False), (False, False, True)),
    ((300, 300, 255, False, False), (False, False, True)),
    ((16, 64, 1023, False, False), (False, True, True)),  # under 2**20 multiply-adds
    ((16, 64, 1024, False, False), (False, False, True)),
    ((300, 64, 300, True, False), (False, True, True)),  # a^T, inner dimension >= 64
    ((300, 63, 300, True, False), (False, False, False)),
    ((16, 32, 64, True, False), (False, True, True)),  # a^T, tiny
    ((512, 64, 32, False, True), (False, True, True)),  # b^T, >= 512 rows, inner >= 64
    ((511, 300, 32, False, True), (False, False, False)),
    ((16, 4096, 4096, False, True), (False, True, True)),  # b^T, b of 2**24 elements
    ((16, 4096, 4095, False, True), (False, False, False)),
    ((600, 63, 32, False, True), (False, False, False)),  # b^T, inner dimension < 64
    ((16, 64, 64, False, True), (False, False, False)),  # b^T, tiny: still MKL
    ((16, 64, 10, False, True), (True, True, True)),
]


@needs_mkl
def test_products_go_to_the_blas_their_shape_names():
    """Beside MKL, the other BLAS (an OpenBLAS) takes the products of fewer than 16
    output columns, and on CPUs other than Intel's (by_shape) those backend.pxd's
    to_other names; without MKL there is no other. End to end: a product sent to the
    other BLAS is bit for bit its result, one kept on MKL MKL's."""
    from fastnn._kernels import backend

    mkl = _blas._load_mkl()
    sgemm, dgemm, threads, _ = mkl.addresses()
    other = _blas._load_openblas().addresses()
    modes = ((False, False), (True, False), (True, True))
    previous = fastnn.get_blas()
    try:
        for shape, expected in ROUTES:
            m, k, n, ta, tb = shape
            for (by_shape, nn_other), want in zip(modes, expected):
                backend.use_addresses(sgemm, dgemm, threads, False, *other, by_shape,
                                      nn_other)
                assert backend.goes_to_other(m, n, k, ta, tb) == want, (shape, by_shape,
                                                                        nn_other)
            fastnn.set_blas("openblas")
            assert not backend.goes_to_other(m, n, k, ta, tb)
        rng = np.random.default_rng(2)
        for m, k, n, ta, tb in ((16, 500, 100, False, False), (20, 300, 100, True, False),
                                (16, 500, 100, False, True), (300, 1000, 10, False, False),
                                (300, 1000, 16, False, True)):
            a, b = _product(rng, m, k, n, ta, tb, np.float32)

            def product(a=a, b=b, ta=ta, tb=tb):
                with fastnn.threads(1):
                    return ops.matmul(a, b, trans_a=ta, trans_b=tb)

            fastnn.set_blas("openblas")
            by_other = product()
            _blas._use_for_bench("mkl-alone")
            by_mkl = product()
            assert not np.array_equal(by_mkl, by_other)  # else the test could not fail
            backend.use_addresses(sgemm, dgemm, threads, False, *other, True, False)
            routed = by_other if backend.goes_to_other(m, n, k, ta, tb) else by_mkl
            np.testing.assert_array_equal(product(), routed)
    finally:
        fastnn.set_blas(previous)


@needs_mkl
def test_mkl_routes_by_shape_off_intel_only():
    mkl = _blas._load_mkl()
    intel = _blas.cpuinfo("vendor_id") == "GenuineIntel"
    assert mkl.by_shape == (not intel)
    previous = fastnn.get_blas()
    try:
        fastnn.set_blas("mkl")
        threading = _blas.info()["threading"]
        assert ("input gradients (b transposed) of under 512 rows" in threading) == (
            not intel)
        assert ("products of under 16 output columns" in threading) == intel
    finally:
        fastnn.set_blas(previous)


def test_use_addresses_refuses_what_it_cannot_do():
    from fastnn._kernels import backend

    with pytest.raises(ValueError, match="must not be 0"):
        backend.use_addresses(0, 1)
    with pytest.raises(ValueError, match="whole_products needs"):
        backend.use_addresses(1, 1, 0, True)
    with pytest.raises(ValueError, match="both its sgemm and dgemm"):
        backend.use_addresses(1, 1, 0, False, 1, 0)
    with pytest.raises(ValueError, match="need the other BLAS"):
        backend.use_addresses(1, 1, 0, False, 0, 0, True)
    with pytest.raises(ValueError, match="need the other BLAS"):
        backend.use_addresses(1, 1, 0, False, 0, 0, False, True)
    with pytest.raises(ValueError, match="both its getter and setter"):
        backend.use_addresses(1, 1, 0, False, 0, 0, False, False, 1, 0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        backend.hold_openblas_threads(0)
    assert backend.openblas_threads_held() >= 1


def test_openblas_is_the_newest_one_installed(monkeypatch):
    """fastnn's OpenBLAS: the scipy-openblas32 package's where installed (and not older
    than SciPy's), held to one thread; else SciPy's own, bit for bit scipy's sgemm."""
    from scipy.linalg import blas as scipy_blas

    openblas = _blas._load_openblas()
    path = _blas._wheel_openblas_path()
    if path is not None and openblas.lib is not None:
        assert openblas.path == path and os.path.isfile(path)
        assert openblas.version_tuple() >= _blas._OpenBlas().version_tuple()
        assert openblas.lib[openblas.prefix + "openblas_get_num_threads"]() == 1
    elif path is None:
        assert openblas.lib is None
    rng = np.random.default_rng(4)
    a, b = _product(rng, 200, 300, 100, False, False, np.float32)
    previous = fastnn.get_blas()
    try:
        fastnn.set_blas("openblas")
        assert openblas.where in _blas.info()["threading"]
        monkeypatch.setattr(_blas, "_wheel_openblas_path", lambda: None)
        monkeypatch.setattr(_blas, "_openblas", None)
        fastnn.set_blas("openblas")
        gemm = fastnn.show_config("dicts")["gemm"]
        assert gemm["filepath"] == "scipy.linalg.cython_blas"
        assert "SciPy's OpenBLAS" in gemm["threading"]
        with fastnn.threads(1):
            got = ops.matmul(a, b)
        np.testing.assert_array_equal(got, scipy_blas.sgemm(1.0, a, b))
    finally:
        monkeypatch.undo()
        fastnn.set_blas(previous)


def test_the_openblas_in_use_stays_at_its_held_count_under_threadpoolctl(capfd):
    """threadpoolctl's limits (NumPy's users set them) reach every OpenBLAS in the
    process; fastnn's products put the one they use back to its held count (1: fastnn's
    slabs are its threads), so it never starts its own pool inside fastnn's."""
    from threadpoolctl import threadpool_limits

    from fastnn._kernels import backend

    openblas = _blas._load_openblas()
    lib, prefix = ((openblas.lib, openblas.prefix) if openblas.lib is not None
                   else _blas._find_scipy_openblas()[1:])
    if lib is None:
        pytest.skip("SciPy's OpenBLAS is not identified here")
    a = np.ones((512, 1024), np.float32)
    b = np.ones((1024, 1024), np.float32)
    previous = fastnn.get_blas()
    try:
        for name in AVAILABLE:
            fastnn.set_blas(name)
            with threadpool_limits(4, user_api="blas"):
                assert lib[prefix + "openblas_get_num_threads"]() == 4
                with fastnn.threads(2):
                    got = ops.matmul(a, b)
                assert lib[prefix + "openblas_get_num_threads"]() == (
                    backend.openblas_threads_held())
            np.testing.assert_array_equal(got, np.full((512, 1024), 1024, np.float32))
    finally:
        fastnn.set_blas(previous)
    assert "OpenBLAS Warning" not in capfd.readouterr().err
