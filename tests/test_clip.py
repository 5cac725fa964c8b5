"""fastnn.optim.clip_grad_norm: the total L2 norm against NumPy, scaling by
min(1, max_norm / (norm + 1e-6)) as torch.nn.utils.clip_grad_norm_, non-finite
gradients (raise by default, or skip and leave the gradients alone), bad arguments,
Modules / lists / loose Parameters, and bitwise thread independence on a large arena."""

import math

import numpy as np
import pytest

import fastnn
from fastnn import nn, optim
from fastnn.optim import clip_grad_norm

TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def make_model(dtype=np.float64, seed=0):
    return nn.Sequential(nn.Linear(9, 8, seed=seed, dtype=dtype), nn.BatchNorm1d(8, dtype=dtype),
                         nn.ReLU(), nn.Linear(8, 3, seed=seed + 1, dtype=dtype))


def fill_grads(params, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    for p in params:
        p.grad[...] = scale * rng.standard_normal(p.shape)


def all_grads(params):
    return np.concatenate([np.asarray(p.grad, np.float64).ravel() for p in params])


def expected_clip(grads, max_norm):
    norm = np.linalg.norm(grads)
    return norm, grads * min(1.0, max_norm / (norm + 1e-6))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("ratio", [0.01, 0.5, 0.999, 1.0, 1.5, 100.0])
def test_norm_and_scaling(dtype, ratio):
    """max_norm = ratio * norm: clipped below 1, untouched above (1.0: the documented
    formula still scales by max_norm / (norm + 1e-6), as torch does)."""
    model = make_model(dtype)
    params = list(model.parameters())
    fill_grads(params, scale=3.0)
    before = all_grads(params)
    norm_expected, clipped_expected = expected_clip(before, ratio * np.linalg.norm(before))
    max_norm = ratio * norm_expected
    norm = clip_grad_norm(model, max_norm)
    assert isinstance(norm, float)
    rtol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(norm, norm_expected, rtol=rtol)
    after = all_grads(params)
    np.testing.assert_allclose(after, clipped_expected, rtol=rtol, atol=rtol * 1e-3)
    if ratio < 1:
        clipped_norm = max_norm * norm_expected / (norm_expected + 1e-6)
        assert np.linalg.norm(after) == pytest.approx(clipped_norm, rel=10 * rtol)
    if ratio > 1.0001:
        assert np.array_equal(after, before)       # bitwise untouched


def test_zero_gradients():
    model = make_model()
    model.zero_grad()
    assert clip_grad_norm(model, 1.0) == 0.0
    assert not np.any(model.arena.grad)


def test_list_and_loose_parameters():
    """A Module, a list of its Parameters, loose Parameters, and a mixture: the norm is
    over everything given, and only what is given is scaled."""
    model = make_model()
    fill_grads(model.parameters(), seed=1)
    rng = np.random.default_rng(2)
    loose = [nn.Parameter(rng.standard_normal(s), rng.standard_normal(s)) for s in [(4, 5), (7,)]]

    for params in (list(model.parameters()), loose, [*model.parameters(), *loose]):
        model_before = np.array(model.arena.grad)
        loose_before = [np.array(p.grad) for p in loose]
        before = all_grads(params)
        norm_expected, clipped = expected_clip(before, 0.25)
        norm = clip_grad_norm(params, 0.25)
        np.testing.assert_allclose(norm, norm_expected, rtol=1e-12)
        np.testing.assert_allclose(all_grads(params), clipped, rtol=1e-12)
        if not any(p.arena is not None for p in params):
            assert np.array_equal(model.arena.grad, model_before)
        if not any(p.arena is None for p in params):
            for p, b in zip(loose, loose_before):
                assert np.array_equal(p.grad, b)
        fill_grads(model.parameters(), seed=1)
        for p, b in zip(loose, loose_before):
            p.grad[...] = b


def test_subset_of_a_model():
    """Some parameters of an arena only: the norm and the scaling cover just those."""
    model = make_model()
    fill_grads(model.parameters(), seed=4)
    p = dict(model.named_parameters())
    chosen = [p["0.weight"], p["3.bias"]]
    others = {n: np.array(q.grad) for n, q in p.items() if n not in ("0.weight", "3.bias")}
    norm_expected, clipped = expected_clip(all_grads(chosen), 0.1)
    norm = clip_grad_norm(chosen, 0.1)
    np.testing.assert_allclose(norm, norm_expected, rtol=1e-12)
    np.testing.assert_allclose(all_grads(chosen), clipped, rtol=1e-12)
    for n, g in others.items():
        assert np.array_equal(p[n].grad, g)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, "last"])
def test_nonfinite_raises_by_default(dtype, bad, where):
    model = make_model(dtype)
    params = list(model.parameters())
    fill_grads(params)
    target = params[0] if where == 0 else params[-1]
    target.grad.reshape(-1)[-1] = bad
    before = np.array(model.arena.grad)
    with pytest.raises(FloatingPointError):
        clip_grad_norm(model, 1.0)
    np.testing.assert_array_equal(model.arena.grad, before)   # NaN == NaN here


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_skip_returns_norm_and_leaves_grads(bad):
    model = make_model()
    fill_grads(model.parameters())
    model.arena.grad[3] = bad
    before = np.array(model.arena.grad)
    norm = clip_grad_norm(model, 1.0, nonfinite="skip")
    assert not math.isfinite(norm)
    assert math.isnan(norm) if np.isnan(bad) else norm == math.inf
    assert before.tobytes() == model.arena.grad.tobytes()


def test_nonfinite_skip_guards_the_step():
    """The documented pattern: skip the step when the norm is not finite; no NaN ever
    reaches the weights."""
    model = make_model()
    opt = optim.Adam(model, lr=0.01)
    fill_grads(model.parameters())
    model.arena.grad[0] = np.nan
    before = np.array(model.arena.data)
    norm = clip_grad_norm(model, 1.0, nonfinite="skip")
    if math.isfinite(norm):
        opt.step()
    assert np.array_equal(model.arena.data, before)
    fill_grads(model.parameters(), seed=5)
    norm = clip_grad_norm(model, 1.0, nonfinite="skip")
    assert math.isfinite(norm)
    opt.step()
    assert np.all(np.isfinite(model.arena.data))
    assert not np.array_equal(model.arena.data, before)


@pytest.mark.parametrize("max_norm", [0, 0.0, -1, -1e-9, float("nan"), "abc"])
def test_bad_max_norm(max_norm):
    model = make_model()
    fill_grads(model.parameters())
    before = np.array(model.arena.grad)
    with pytest.raises(ValueError):
        clip_grad_norm(model, max_norm)
    assert np.array_equal(model.arena.grad, before)


def test_bad_nonfinite_option():
    model = make_model()
    with pytest.raises(ValueError):
        clip_grad_norm(model, 1.0, nonfinite="ignore")


@pytest.mark.parametrize("params", [
    [np.zeros(3)],                                            # no .grad
    [nn.Parameter(np.zeros(3), np.zeros(4))],                 # grad of another shape
    [nn.Parameter(np.zeros((4, 4))[:, ::2], np.zeros((4, 2)))],   # non-contiguous
], ids=["no grad", "grad shape", "strided"])
def test_bad_params(params):
    with pytest.raises((ValueError, TypeError)):
        clip_grad_norm(params, 1.0)


@pytest.fixture(scope="module")
def large_linear():
    """A 3e6-parameter float32 layer (its own arena) and random gradients for it."""
    layer = nn.Linear(2000, 1500, seed=0)
    assert layer.arena is not None and layer.arena.size > 3_000_000
    grads = np.random.default_rng(6).standard_normal(layer.arena.size).astype(np.float32)
    return layer, grads


def test_large_arena_matches_numpy(large_linear):
    layer, grads = large_linear
    layer.arena.grad[...] = grads
    norm = clip_grad_norm(layer, 1.0)
    expected = np.linalg.norm(grads.astype(np.float64))
    np.testing.assert_allclose(norm, expected, rtol=1e-5)
    np.testing.assert_allclose(layer.arena.grad, grads * np.float32(1.0 / (norm + 1e-6)),
                               rtol=1e-6, atol=1e-12)


def test_bitwise_same_for_1_and_2_threads(large_linear):
    if not fastnn.openmp_enabled():
        pytest.skip("built without OpenMP")
    layer, grads = large_linear
    results = []
    for n in (1, 2):
        layer.arena.grad[...] = grads
        with fastnn.threads(n):
            norm = clip_grad_norm(layer, 10.0)
        results.append((norm, np.array(layer.arena.grad)))
    (n1, g1), (n2, g2) = results
    assert n1 > 10.0
    assert n1 == n2
    assert g1.tobytes() == g2.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("n", [1, 31, 32, 33, 8191, 8192, 8193, 100_003])
def test_block_sums_of_squares_against_numpy(dtype, n):
    """The kernel behind the norm: per block of NORM_BLOCK values, the sum of squares in
    float64 (float32 values of 1e20 square past float32's range), partial sums and the
    tail included, bitwise the same at 1 and 2 threads."""
    from fastnn._kernels import optim as kernels

    x = (np.random.default_rng(n).standard_normal(n) * 1e20).astype(dtype)
    block = kernels.NORM_BLOCK
    expected = [np.sum(x[i:i + block].astype(np.float64) ** 2) for i in range(0, n, block)]
    results = []
    for threads in (1, 2):
        sums = np.full(len(expected), np.nan)
        kernels.sum_squares(x, sums, threads)
        np.testing.assert_allclose(sums, expected, rtol=1e-12)
        results.append(sums)
    assert np.array_equal(*results)
