"""fastnn.losses: the four losses against NumPy references and numerical gradients, their
validation, and the weight penalties L2 / L1 / ElasticNet (weights only, the seed's forms)."""

import warnings

import numpy as np
import pytest
from reference import numerical_gradient

import fastnn
from fastnn import losses, nn

DTYPES = (np.float32, np.float64)
# Loss values are accumulated in float64 by fastnn; per-element work is in the dtype.
RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


# ---------------------------------------------------------------- NumPy references


def ref_softmax_ce(s, y):
    """(mean loss, gradient) of the softmax cross-entropy, in float64, overflow-safe."""
    s = np.asarray(s, np.float64)
    n = s.shape[0]
    shifted = s - s.max(axis=1, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=1))
    loss = np.mean(lse - shifted[np.arange(n), y])
    p = np.exp(shifted - lse[:, None])
    p[np.arange(n), y] -= 1
    return loss, p / n


def ref_hinge(s, y, margin):
    """The seed's multiclass SVM loss: mean_i sum_{j != y_i} max(0, s_j - s_y + margin)."""
    s = np.asarray(s, np.float64)
    n = s.shape[0]
    m = s - s[np.arange(n), y][:, None] + margin
    m[np.arange(n), y] = 0
    active = (m > 0).astype(np.float64)
    grad = active.copy()
    grad[np.arange(n), y] = -active.sum(axis=1)
    return np.maximum(m, 0).sum() / n, grad / n


def ref_mse(s, y):
    s, y = np.asarray(s, np.float64), np.asarray(y, np.float64).reshape(np.shape(s))
    return np.mean((s - y) ** 2), 2 * (s - y) / s.size


def ref_bce(s, y):
    s, y = np.asarray(s, np.float64), np.asarray(y, np.float64).reshape(np.shape(s))
    loss = np.maximum(s, 0) - s * y + np.log1p(np.exp(-np.abs(s)))
    e = np.exp(-np.abs(s))  # never overflows
    sig = np.where(s >= 0, 1 / (1 + e), e / (1 + e))
    return loss.mean(), (sig - y) / s.size


def class_problem(dtype, n=7, c=5, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    s = (scale * rng.standard_normal((n, c))).astype(dtype)
    y = rng.integers(0, c, n)
    return s, y


def target_problem(dtype, kind, shape=(6, 3), seed=1):
    rng = np.random.default_rng(seed)
    s = (2 * rng.standard_normal(shape)).astype(dtype)
    y = rng.standard_normal(shape) if kind == "mse" else rng.uniform(0, 1, shape)
    return s, y.astype(dtype)


CLASS_LOSSES = {
    "softmax_ce": (losses.SoftmaxCrossEntropy, ref_softmax_ce),
    "hinge": (losses.MulticlassHinge, lambda s, y: ref_hinge(s, y, 1.0)),
    "hinge_0.5": (lambda: losses.MulticlassHinge(margin=0.5), lambda s, y: ref_hinge(s, y, 0.5)),
}
TARGET_LOSSES = {"mse": (losses.MSE, ref_mse), "bce": (losses.BCEWithLogits, ref_bce)}


# ---------------------------------------------------------------- values and gradients


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", list(CLASS_LOSSES))
def test_class_loss_matches_reference(name, dtype):
    make, ref = CLASS_LOSSES[name]
    loss = make()
    s, y = class_problem(dtype, n=33, c=10)
    value = loss.forward(s, y)
    expected, expected_grad = ref(s, y)
    assert isinstance(value, float)
    np.testing.assert_allclose(value, expected, rtol=RTOL[np.dtype(dtype)])
    grad = loss.backward()
    assert grad.dtype == np.dtype(dtype) and grad.shape == s.shape
    np.testing.assert_allclose(grad, expected_grad, rtol=RTOL[np.dtype(dtype)],
                               atol=RTOL[np.dtype(dtype)] / s.shape[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", list(TARGET_LOSSES))
def test_target_loss_matches_reference(name, dtype):
    make, ref = TARGET_LOSSES[name]
    loss = make()
    s, y = target_problem(dtype, name, shape=(17, 4))
    value = loss(s, y)
    expected, expected_grad = ref(s, y)
    np.testing.assert_allclose(value, expected, rtol=RTOL[np.dtype(dtype)])
    grad = loss.backward()
    assert grad.dtype == np.dtype(dtype) and grad.shape == s.shape
    np.testing.assert_allclose(grad, expected_grad, rtol=RTOL[np.dtype(dtype)],
                               atol=RTOL[np.dtype(dtype)] / s.size)


def test_hinge_hand_computed():
    # Row 0: y=0, s=[1, 2, 0.2]: max(0, 2-1+1)=2, max(0, 0.2-1+1)=0.2 -> 2.2
    # Row 1: y=2, s=[0, -3, 5]: max(0, 0-5+1)=0, max(0, -3-5+1)=0 -> 0
    s = np.array([[1.0, 2.0, 0.2], [0.0, -3.0, 5.0]])
    loss = losses.MulticlassHinge()
    assert loss(s, np.array([0, 2])) == pytest.approx(1.1, rel=1e-14)
    np.testing.assert_allclose(loss.backward(), [[-1.0, 0.5, 0.5], [0, 0, 0]], rtol=1e-14)
    half = losses.MulticlassHinge(margin=0.5)
    # Row 0 with margin 0.5: 1.5 + 0 (0.2 - 1 + 0.5 < 0) -> 1.5; row 1: 0 -> mean 0.75
    assert half(s, np.array([0, 2])) == pytest.approx(0.75, rel=1e-14)
    assert half.margin == 0.5
    # Hinge ignores the true class's own term even with margin: a perfect row costs 0.
    assert losses.MulticlassHinge(margin=0.0)(np.array([[3.0, 1.0]]), np.array([0])) == 0.0


@pytest.mark.parametrize("name", list(CLASS_LOSSES) + list(TARGET_LOSSES))
def test_loss_numerical_gradient(name):
    if name in CLASS_LOSSES:
        make, _ = CLASS_LOSSES[name]
        s, y = class_problem(np.float64)
    else:
        make, _ = TARGET_LOSSES[name]
        s, y = target_problem(np.float64, name)
    loss = make()
    loss.forward(s, y)
    analytic = loss.backward().copy()
    numeric = numerical_gradient(lambda: loss.forward(s, y), s)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_softmax_ce_extreme_logits_are_finite_and_exact():
    for dtype in DTYPES:
        s = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0], [1e4, 1e4, -1e4]], dtype)
        y = np.array([0, 0, 2])
        loss = losses.SoftmaxCrossEntropy()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            value = loss(s, y)
            grad = loss.backward()
        # row 0: ~0; row 1: 2e4; row 2: 2e4 + log 2
        expected = (0.0 + 2e4 + 2e4 + np.log(2)) / 3
        assert np.isfinite(value) and value == pytest.approx(expected, rel=1e-6)
        assert np.all(np.isfinite(grad))
        np.testing.assert_allclose(grad, ref_softmax_ce(s, y)[1], atol=1e-6)


def test_bce_extreme_logits_are_finite_and_exact():
    for dtype in DTYPES:
        s = np.array([[100.0, -100.0, 100.0, -100.0, 0.0]], dtype)
        y = np.array([[0.0, 1.0, 1.0, 0.0, 1.0]], dtype)
        loss = losses.BCEWithLogits()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            value = loss(s, y)
            grad = loss.backward()
        expected = (100 + 100 + 2 * np.log1p(np.exp(-100.0)) + np.log(2)) / 5
        assert np.isfinite(value) and value == pytest.approx(expected, rel=1e-6)
        np.testing.assert_allclose(grad, np.array([[1, -1, 0, 0, -0.5]]) / 5, atol=1e-7)
        # Only the tiny terms: log(1 + e^-100) must not round to 0 in float64.
        tiny = losses.BCEWithLogits()(np.array([[100.0, -100.0]]), np.array([[1.0, 0.0]]))
        assert tiny == pytest.approx(np.log1p(np.exp(-100.0)), rel=1e-10)


def test_loss_buffers_follow_batch_shape_and_dtype():
    loss = losses.SoftmaxCrossEntropy()
    for dtype, n in ((np.float32, 5), (np.float32, 9), (np.float64, 9), (np.float64, 3)):
        s, y = class_problem(dtype, n=n, c=4, seed=n)
        value = loss(s, y)
        expected, grad = ref_softmax_ce(s, y)
        np.testing.assert_allclose(value, expected, rtol=RTOL[np.dtype(dtype)])
        assert loss.backward().shape == s.shape and loss.backward().dtype == np.dtype(dtype)
        np.testing.assert_allclose(loss.backward(), grad, rtol=1e-5, atol=1e-7)


def test_loss_non_contiguous_scores():
    s, y = class_problem(np.float64, n=6, c=8)
    view = s[:, ::2]
    loss = losses.SoftmaxCrossEntropy()
    np.testing.assert_allclose(loss(view, y % 4), ref_softmax_ce(view, y % 4)[0], rtol=1e-12)
    st, yt = target_problem(np.float64, "mse", shape=(3, 5))
    np.testing.assert_allclose(losses.MSE()(st.T, yt.T), ref_mse(st.T, yt.T)[0], rtol=1e-12)


def test_labels_as_list_and_unsigned():
    s, y = class_problem(np.float64)
    expected = ref_softmax_ce(s, y)[0]
    assert losses.SoftmaxCrossEntropy()(s, list(y)) == pytest.approx(expected, rel=1e-12)
    assert losses.SoftmaxCrossEntropy()(s, y.astype(np.uint8)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", list(TARGET_LOSSES))
def test_target_loss_1d_scores_gradient_has_scores_shape(name):
    """d(loss)/d(scores) must have the shape of scores: (N,) logits are the usual binary
    case, and an (N, 1) gradient would broadcast `s -= lr * g` into an (N, N) array."""
    make, ref = TARGET_LOSSES[name]
    s, y = target_problem(np.float64, name, shape=(6,))
    loss = make()
    np.testing.assert_allclose(loss(s, y), ref(s, y)[0], rtol=1e-12)
    grad = loss.backward()
    assert grad.shape == s.shape
    np.testing.assert_allclose(grad.reshape(s.shape), ref(s, y)[1], rtol=1e-12)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("name", list(CLASS_LOSSES))
def test_class_loss_rejects_bad_labels(name):
    loss = CLASS_LOSSES[name][0]()
    s, y = class_problem(np.float32, n=4, c=3)
    with pytest.raises(ValueError, match="label"):
        loss(s, np.array([0, 1, 3, 0]))  # == C: out of range
    with pytest.raises(ValueError, match="label"):
        loss(s, np.array([0, -1, 2, 0]))
    with pytest.raises(TypeError, match="integer"):
        loss(s, np.array([0.0, 1.0, 2.0, 0.0]))
    with pytest.raises(TypeError):
        loss(s, np.array([True, False, True, False]))
    with pytest.raises(ValueError, match="shape"):
        loss(s, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="shape"):
        loss(s, np.array([[0, 1, 2, 0]]))
    with pytest.raises(ValueError, match="empty"):
        loss(np.zeros((0, 3), np.float32), np.zeros(0, np.int64))
    with pytest.raises(TypeError):
        loss(s.tolist(), y)
    with pytest.raises(TypeError):
        loss(s.astype(np.int64), y)


@pytest.mark.parametrize("name", list(TARGET_LOSSES))
def test_target_loss_rejects_bad_input(name):
    loss = TARGET_LOSSES[name][0]()
    s, y = target_problem(np.float32, name, shape=(4, 3))
    with pytest.raises(TypeError, match="dtype"):
        loss(s, y.astype(np.float64))
    with pytest.raises(ValueError, match="shape"):
        loss(s, y[:3])
    with pytest.raises(ValueError, match="shape"):
        loss(s, y.reshape(-1))
    with pytest.raises(ValueError, match="empty"):
        loss(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32))
    with pytest.raises(TypeError):
        loss(s, y.tolist())


@pytest.mark.parametrize("make", [losses.SoftmaxCrossEntropy, losses.MulticlassHinge,
                                  losses.MSE, losses.BCEWithLogits])
def test_backward_before_forward_raises(make):
    with pytest.raises(RuntimeError, match="before forward"):
        make().backward()


@pytest.mark.parametrize("margin", [-1.0, float("nan"), float("inf")])
def test_hinge_rejects_bad_margin(margin):
    with pytest.raises(ValueError, match="margin"):
        losses.MulticlassHinge(margin=margin)


def test_losses_thread_independent():
    rng = np.random.default_rng(3)
    s = rng.standard_normal((3000, 40))
    y = rng.integers(0, 40, 3000)
    t = rng.uniform(0, 1, s.shape)
    for loss, target in ((losses.SoftmaxCrossEntropy(), y), (losses.MulticlassHinge(), y),
                         (losses.MSE(), t), (losses.BCEWithLogits(), t)):
        results = []
        for n in (1, 2):
            with fastnn.threads(n):
                results.append((loss(s, target), loss.backward().copy()))
        assert results[0][0] == results[1][0], type(loss).__name__
        assert results[0][1].tobytes() == results[1][1].tobytes(), type(loss).__name__


# ---------------------------------------------------------------- penalties


def penalized_model(dtype=np.float64):
    """Linear, BatchNorm1d, ReLU, Linear with every parameter non-zero, so a penalty that
    touched biases or BatchNorm's gamma/beta would show."""
    model = nn.Sequential(nn.Linear(4, 5, seed=1, dtype=dtype), nn.BatchNorm1d(5, dtype=dtype),
                          nn.ReLU(), nn.Linear(5, 3, seed=2, dtype=dtype))
    rng = np.random.default_rng(7)
    model.arena.data[:] = rng.uniform(0.2, 1.0, model.arena.size) * rng.choice([-1, 1],
                                                                                model.arena.size)
    return model


def weight_matrices(model):
    return [np.array(model[0].weight, np.float64), np.array(model[3].weight, np.float64)]


PENALTIES = {
    "l2": (lambda: losses.L2(0.3), lambda w: 0.3 * np.sum(w**2), lambda w: 0.6 * w),
    "l1": (lambda: losses.L1(0.3), lambda w: 0.3 * np.sum(np.abs(w)), lambda w: 0.3 * np.sign(w)),
    "elastic": (lambda: losses.ElasticNet(0.3, 0.7),
                lambda w: 0.3 * np.sum(0.7 * w**2 + np.abs(w)),
                lambda w: 0.3 * (1.4 * w + np.sign(w))),
}


@pytest.mark.parametrize("name", list(PENALTIES))
def test_penalty_value_and_gradient_weights_only(name):
    make, value, grad = PENALTIES[name]
    model = penalized_model()
    pen = make()
    w0, w3 = weight_matrices(model)
    expected = value(w0) + value(w3)
    assert pen.penalty(model) == pytest.approx(expected, rel=1e-12)
    assert pen(model) == pytest.approx(expected, rel=1e-12)
    assert not model.arena.grad.any()  # penalty() leaves gradients alone
    model.arena.grad[:] = 1.0  # backward ADDS into the gradients
    assert pen.backward(model) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(model[0].weight.grad, 1 + grad(w0), rtol=1e-12)
    np.testing.assert_allclose(model[3].weight.grad, 1 + grad(w3), rtol=1e-12)
    for p in (model[0].bias, model[1].weight, model[1].bias, model[3].bias):
        assert np.all(p.grad == 1.0), "a penalty touched a bias or a BatchNorm parameter"


@pytest.mark.parametrize("name", list(PENALTIES))
def test_penalty_numerical_gradient(name):
    make = PENALTIES[name][0]
    model = penalized_model()
    pen = make()
    model.zero_grad()
    pen.backward(model)
    analytic = model.arena.grad.copy()
    numeric = numerical_gradient(lambda: pen.penalty(model), model.arena.data)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
    assert np.all(numeric[model.arena.n_weights:] == 0)


@pytest.mark.parametrize("name", list(PENALTIES))
def test_penalty_on_parameter_list_and_float32(name):
    make, value, grad = PENALTIES[name]
    model = penalized_model(np.float32)
    w0, w3 = weight_matrices(model)
    pen = make()
    model.zero_grad()
    total = pen.backward(list(model.parameters()))  # loose parameters, not the arena
    assert total == pytest.approx(value(w0) + value(w3), rel=1e-5)
    np.testing.assert_allclose(model[0].weight.grad, grad(w0), rtol=1e-5)
    np.testing.assert_allclose(model[3].weight.grad, grad(w3), rtol=1e-5)
    assert not model[0].bias.grad.any() and not model[1].weight.grad.any()
    assert not model[1].bias.grad.any() and not model[3].bias.grad.any()


def test_l1_gradient_is_zero_at_zero():
    model = nn.Sequential(nn.Linear(3, 2, seed=0, dtype=np.float64))
    model[0].weight[0, 0] = 0.0
    model.zero_grad()
    losses.L1(0.5).backward(model)
    assert model[0].weight.grad[0, 0] == 0.0
    assert np.all(np.abs(model[0].weight.grad.reshape(-1)[1:]) == 0.5)


def test_penalty_thread_independent():
    model = nn.Sequential(nn.Linear(700, 300, seed=0), nn.Linear(300, 50, seed=1))
    results = []
    for n in (1, 2):
        model.zero_grad()
        with fastnn.threads(n):
            results.append((losses.ElasticNet(1e-3, 0.5).backward(model), model.arena.grad.copy()))
    assert results[0][0] == results[1][0]
    assert results[0][1].tobytes() == results[1][1].tobytes()


@pytest.mark.parametrize("make", [lambda: losses.L2(-1.0), lambda: losses.L1(float("nan")),
                                  lambda: losses.ElasticNet(0.1, -0.5),
                                  lambda: losses.ElasticNet(float("inf"), 0.5)])
def test_penalty_rejects_bad_arguments(make):
    with pytest.raises(ValueError):
        make()


# ---------------------------------------------------------------- penalties and freezing


@pytest.mark.parametrize("name", list(PENALTIES))
def test_penalty_skips_frozen_weights(name):
    make, value, grad = PENALTIES[name]
    model = penalized_model()
    model[0].weight.requires_grad = False
    pen = make()
    _w0, w3 = weight_matrices(model)
    assert pen.penalty(model) == pytest.approx(value(w3), rel=1e-12)
    model.arena.grad[:] = 1.0
    assert pen.backward(model) == pytest.approx(value(w3), rel=1e-12)
    assert np.all(model[0].weight.grad == 1.0), "a frozen weight got a penalty gradient"
    np.testing.assert_allclose(model[3].weight.grad, 1 + grad(w3), rtol=1e-12)
    # loose parameters: the same
    model.arena.grad[:] = 0.0
    assert pen.backward(list(model.parameters())) == pytest.approx(value(w3), rel=1e-12)
    assert not model[0].weight.grad.any()


def test_penalty_spans_merge_adjacent_weights():
    """The fast path (one arena, nothing frozen) and the per-parameter path give the
    same single span when the weights are adjacent: bitwise the same result."""
    model = penalized_model()
    (w, _g), = losses._weights(model)
    assert w.size == model.arena.n_weights
    assert len(losses._weights(list(model.parameters()))) == 1
    model[1].weight.requires_grad = False  # a frozen BatchNorm gamma: not a weight
    assert len(losses._weights(model)) == 1
    model[1].weight.requires_grad = True
    pen = losses.ElasticNet(0.3, 0.7)
    model.zero_grad()
    fast = pen.backward(model), model.arena.grad.copy()
    model.zero_grad()
    per_parameter = pen.backward(list(model.parameters())), model.arena.grad.copy()
    assert fast[0] == per_parameter[0]
    assert fast[1].tobytes() == per_parameter[1].tobytes()


def test_penalty_of_a_sub_model_and_of_a_model_over_two_arenas():
    make, value, grad = PENALTIES["l2"]
    model = penalized_model()
    pen = make()
    w0, _w3 = weight_matrices(model)
    part = model[0:2]  # shares model's arena, fills part of it
    assert part.arena is None
    assert pen.penalty(part) == pytest.approx(value(w0), rel=1e-12)
    extra = nn.Linear(3, 2, seed=5, dtype=np.float64)
    joined = nn.Sequential(model[0], model[1], extra)  # model's arena and extra's own
    assert len(joined.arenas()) == 2
    w_extra = np.array(extra.weight)
    assert pen.penalty(joined) == pytest.approx(value(w0) + value(w_extra), rel=1e-12)
    joined.zero_grad()
    pen.backward(joined)
    np.testing.assert_allclose(model[0].weight.grad, grad(w0), rtol=1e-12)
    np.testing.assert_allclose(extra.weight.grad, grad(w_extra), rtol=1e-12)
    assert not model[3].weight.grad.any()


# ---------------------------------------------------------------- predictions


@pytest.mark.parametrize("make", [losses.SoftmaxCrossEntropy, losses.MulticlassHinge])
def test_class_losses_predict_classes(make, dtype):
    s, y = class_problem(dtype, n=9, c=4)
    loss = make()
    assert loss.classifier and loss.labels
    labels = loss.predict(s)
    np.testing.assert_array_equal(labels, s.argmax(axis=1))
    p = loss.predict_proba(s)
    assert p.dtype == s.dtype and p.shape == s.shape
    e = np.exp(s.astype(np.float64) - s.max(axis=1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(axis=1, keepdims=True), rtol=RTOL[np.dtype(dtype)])
    assert loss.hits(s, y) == np.sum(labels == y)
    assert loss.accuracy(s, y) == pytest.approx(np.mean(labels == y))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        loss.predict(s[0])


def test_softmax_predict_proba_of_huge_logits_is_finite():
    p = losses.SoftmaxCrossEntropy().predict_proba(np.array([[1e30, 0.0], [-1e30, 1e30]]))
    np.testing.assert_array_equal(p, [[1.0, 0.0], [0.0, 1.0]])


def test_bce_predicts_zero_one_labels_per_output(dtype):
    s = np.array([[2.0, -1.0], [0.0, 3.0], [-0.5, 1e-3]], dtype)
    y = np.array([[1, 1], [0, 1], [0, 0]], dtype)
    loss = losses.BCEWithLogits()
    assert loss.classifier and not loss.labels
    labels = loss.predict(s)
    assert labels.dtype.kind == "i"
    np.testing.assert_array_equal(labels, [[1, 0], [0, 1], [0, 1]])  # logit 0 -> 0
    np.testing.assert_allclose(loss.predict_proba(s), 1 / (1 + np.exp(-s.astype(np.float64))),
                               rtol=RTOL[np.dtype(dtype)])
    assert loss.hits(s, y) == pytest.approx(4 / 2)  # 4 of 6 outputs right, 2 per row
    assert loss.accuracy(s, y) == pytest.approx(4 / 6)
    # one output per row, as (N,) scores: hits count rows
    assert loss.hits(s[:, 0], y[:, 0]) == 3.0
    assert losses.BCEWithLogits().hits(s, np.where(y > 0, 0.9, 0.1)) == loss.hits(s, y)


def test_mse_predicts_its_scores_and_no_probabilities():
    s = np.arange(6, dtype=np.float32).reshape(3, 2)
    loss = losses.MSE()
    assert not loss.classifier and not loss.labels
    np.testing.assert_array_equal(loss.predict(s), s)
    with pytest.raises(TypeError, match="MSE gives no probabilities"):
        loss.predict_proba(s)
    with pytest.raises(TypeError, match="no accuracy"):
        loss.hits(s, s)


def test_predicting_keeps_the_last_forward_for_backward():
    s, y = class_problem(np.float64)
    loss = losses.SoftmaxCrossEntropy()
    loss.forward(s, y)
    expected = loss.backward().copy()
    loss.predict(s[:3])
    loss.predict_proba(np.zeros((2, 9)))
    assert loss.hits(s[:2], y[:2]) >= 0
    np.testing.assert_array_equal(loss.backward(), expected)


def test_check_targets():
    labels, values = np.array([0, 2, 1]), np.array([[0.5], [np.nan]])
    losses.SoftmaxCrossEntropy().check_targets(labels)
    with pytest.raises(TypeError, match="integer class labels"):
        losses.SoftmaxCrossEntropy().check_targets(labels.astype(np.float32))
    with pytest.raises(TypeError, match="integer class labels"):
        losses.MulticlassHinge().check_targets(labels.reshape(3, 1))
    with pytest.raises(ValueError, match="NaN"):
        losses.MSE().check_targets(values)
    with pytest.raises(TypeError, match="numeric"):
        losses.BCEWithLogits().check_targets(np.array(["a", "b"]), "validation y")
    assert losses.BCEWithLogits().cast_targets(labels, np.float32).dtype == np.float32
    assert losses.SoftmaxCrossEntropy().cast_targets(labels, np.float32) is labels
