"""SoftmaxCrossEntropy(label_smoothing): PyTorch's smoothed target (1 - eps) onehot(y) +
eps / C, against a NumPy reference, numerical gradients and PyTorch."""

import numpy as np
import pytest
from reference import numerical_gradient

from fastnn import losses
from fastnn._checks import ArgumentTypeError

RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}
EPS = [0.0, 0.05, 0.1, 0.5, 1.0]


def ref_smoothed_ce(s, y, eps):
    """(mean loss, gradient) of -sum_j t_j log softmax(s)_j, t the smoothed target."""
    s = np.asarray(s, np.float64)
    n, c = s.shape
    shifted = s - s.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    target = np.full((n, c), eps / c)
    target[np.arange(n), y] += 1 - eps
    loss = -(target * log_p).sum(axis=1).mean()
    return loss, (np.exp(log_p) - target) / n


@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("shape", [(1, 2), (7, 3), (64, 10), (300, 129)], ids=str)
def test_matches_reference(shape, eps, dtype, rng):
    s = (3 * rng.standard_normal(shape)).astype(dtype)
    y = rng.integers(0, shape[1], shape[0])
    loss = losses.SoftmaxCrossEntropy(label_smoothing=eps)
    value = loss.forward(s, y)
    grad = loss.backward()
    expected, expected_grad = ref_smoothed_ce(s, y, eps)
    rtol = RTOL[np.dtype(dtype)]
    assert value == pytest.approx(expected, rel=rtol)
    assert grad.dtype == dtype
    np.testing.assert_allclose(grad, expected_grad, rtol=rtol, atol=rtol / shape[0])


def test_zero_smoothing_is_the_plain_loss_bit_for_bit(dtype, rng):
    s = rng.standard_normal((50, 7)).astype(dtype)
    y = rng.integers(0, 7, 50)
    plain, smoothed = losses.SoftmaxCrossEntropy(), losses.SoftmaxCrossEntropy(0.0)
    assert plain.forward(s, y) == smoothed.forward(s, y)
    np.testing.assert_array_equal(plain.backward(), smoothed.backward())
    # an -inf logit off the label leaves the plain loss finite
    s[:, 0] = -np.inf
    y = np.ones(50, np.int64)
    assert np.isfinite(smoothed.forward(s, y))
    assert np.isinf(losses.SoftmaxCrossEntropy(0.1).forward(s, y))


@pytest.mark.parametrize("eps", [0.1, 0.7])
def test_gradient_matches_numerical(eps, rng):
    s = rng.standard_normal((5, 4))
    y = rng.integers(0, 4, 5)
    loss = losses.SoftmaxCrossEntropy(label_smoothing=eps)
    loss.forward(s, y)
    grad = loss.backward().copy()
    numerical = numerical_gradient(lambda: losses.SoftmaxCrossEntropy(eps).forward(s, y), s)
    np.testing.assert_allclose(grad, numerical, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("eps", EPS)
def test_matches_torch(eps, dtype, rng):
    torch = pytest.importorskip("torch")
    s = (3 * rng.standard_normal((33, 6))).astype(dtype)
    y = rng.integers(0, 6, 33)
    st = torch.tensor(s, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(st, torch.tensor(y), label_smoothing=eps)
    expected.backward()
    loss = losses.SoftmaxCrossEntropy(label_smoothing=eps)
    rtol = RTOL[np.dtype(dtype)]
    assert loss.forward(s, y) == pytest.approx(expected.item(), rel=rtol)
    np.testing.assert_allclose(loss.backward(), st.grad.numpy(), rtol=rtol, atol=rtol / 33)


def test_large_logits_stay_finite(dtype):
    s = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0]], dtype)
    y = np.array([0, 2])
    loss = losses.SoftmaxCrossEntropy(0.2)
    value = loss.forward(s, y)
    expected, expected_grad = ref_smoothed_ce(s, y, 0.2)
    assert value == pytest.approx(expected, rel=RTOL[np.dtype(dtype)])
    np.testing.assert_allclose(loss.backward(), expected_grad, atol=1e-6)


def test_argument_is_checked():
    assert losses.SoftmaxCrossEntropy().label_smoothing == 0.0
    assert losses.SoftmaxCrossEntropy(1).label_smoothing == 1.0  # PyTorch allows 1.0
    for bad in (-0.1, 1.0001, np.nan, np.inf):
        with pytest.raises(ValueError, match="label_smoothing"):
            losses.SoftmaxCrossEntropy(label_smoothing=bad)
    for bad in ("0.1", None, True):
        with pytest.raises(ArgumentTypeError, match="label_smoothing"):
            losses.SoftmaxCrossEntropy(bad)
