"""fastnn.nn: Parameter and Arena, the Module base, Sequential (one arena, fused
activations), Linear and the activation layers; numerical gradient checks of every layer
and of whole models; a small end-to-end learning check."""

import numpy as np
import pytest
from reference import numerical_gradient
from scipy.special import expit

from fastnn import losses, nn

ACTIVATIONS = {
    "relu": (nn.ReLU, lambda z: np.maximum(z, 0)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.1), lambda z: np.where(z > 0, z, 0.1 * z)),
    "sigmoid": (nn.Sigmoid, expit),
    "tanh": (nn.Tanh, np.tanh),
}


def check_gradients(model, x, reset=lambda: None, seed=0):
    """Compare model.backward of d(sum(out * G)) with central differences, w.r.t. the
    input x and every entry of the model's parameter arena (when it has one).

    reset() runs before every forward (e.g. to pin a Dropout's step)."""
    reset()
    g = np.random.default_rng(seed).standard_normal(model.forward(x).shape)

    def f():
        reset()
        return float(np.sum(model.forward(x) * g))

    model.zero_grad()
    reset()
    model.forward(x)
    dx = model.backward(g).copy()
    np.testing.assert_allclose(dx, numerical_gradient(f, x), rtol=1e-5, atol=1e-8)
    if model.arena is not None:
        analytic = model.arena.grad.copy()
        numeric = numerical_gradient(f, model.arena.data)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
        assert np.abs(analytic).max() > 0


def data(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def randomize(model, seed=3):
    """Non-trivial values in every parameter (biases and BatchNorm's gamma/beta too)."""
    rng = np.random.default_rng(seed)
    model.arena.data[:] = rng.uniform(0.3, 1.0, model.arena.size) * rng.choice(
        [-1, 1], model.arena.size)
    for _, m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.weight[...] = np.abs(m.weight)  # gamma > 0
    return model


class Affine(nn.Module):
    """A user-defined layer: y = x * scale + shift, per feature."""

    def __init__(self, d, dtype=np.float64):
        super().__init__()
        self.add_parameters(dtype, scale=(np.linspace(0.5, 1.5, d), "weight"),
                            shift=(np.full(d, 0.1), "bias"))

    def forward(self, x):
        self._x = x
        return x * self.scale + self.shift

    def backward(self, dout):
        self.scale.grad += (dout * self._x).sum(axis=0)
        self.shift.grad += dout.sum(axis=0)
        return dout * self.scale


def full_model(dtype=np.float64, seed=0, p=0.3):
    return nn.Sequential(nn.Linear(5, 6, seed=seed, dtype=dtype), nn.BatchNorm1d(6, dtype=dtype),
                         nn.ReLU(), nn.Dropout(p, seed=seed + 1),
                         nn.Linear(6, 3, seed=seed + 2, dtype=dtype))


# ---------------------------------------------------------------- gradient checks


@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients(bias):
    layer = nn.Linear(4, 3, bias=bias, seed=0, dtype=np.float64)
    if bias:
        layer.bias[...] = [0.1, -0.2, 0.3]
    check_gradients(layer, data((6, 4)))


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_layer_gradients(name):
    make, ref = ACTIVATIONS[name]
    layer = make()
    x = data((5, 4))
    np.testing.assert_allclose(layer(x), ref(x), rtol=1e-12, atol=1e-15)
    check_gradients(layer, x)


def test_leaky_relu_negative_slope_standalone():
    layer = nn.LeakyReLU(-0.5)
    x = data((5, 4))
    np.testing.assert_allclose(layer(x), np.where(x > 0, x, -0.5 * x))
    check_gradients(layer, x)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_fused_linear_activation_in_sequential(name, bias):
    make, ref = ACTIVATIONS[name]
    model = nn.Sequential(nn.Linear(4, 5, bias=bias, seed=1, dtype=np.float64), make())
    if bias:
        model[0].bias[...] = np.linspace(-0.5, 0.5, 5)
    x = data((7, 4))
    z = x @ np.array(model[0].weight) + (np.array(model[0].bias) if bias else 0)
    np.testing.assert_allclose(model(x), ref(z), rtol=1e-12, atol=1e-14)
    assert model._plan is not None and model._plan.n_ops == 1, "the activation was not fused"
    # the layers themselves compute their own formulas, inside the model or not
    np.testing.assert_allclose(model[0].forward(x), z, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(model[1].forward(z), ref(z), rtol=1e-12, atol=1e-14)
    check_gradients(model, x)


def test_negative_slope_leaky_relu_is_not_fused_but_correct():
    model = nn.Sequential(nn.Linear(4, 5, seed=1, dtype=np.float64), nn.LeakyReLU(-0.3))
    x = data((6, 4))
    z = x @ np.array(model[0].weight)
    np.testing.assert_allclose(model(x), np.where(z > 0, z, -0.3 * z), rtol=1e-12)
    assert model._plan.n_ops == 2
    check_gradients(model, x)


def test_full_model_gradients_input_and_all_parameters():
    model = randomize(full_model())
    x = data((8, 5))

    def pin_dropout():
        model[3].step[...] = 7

    check_gradients(model, x, reset=pin_dropout)
    # the mask was really in play: some hidden units dropped
    pin_dropout()
    h = x
    for layer in model.layers[:4]:
        h = layer.forward(h)
    assert isinstance(model[3], nn.Dropout)
    assert 0 < np.count_nonzero(h) < h.size


def test_full_model_gradients_eval_mode():
    model = randomize(full_model())
    model.train()
    for seed in range(3):  # give the running statistics some non-trivial values
        model.forward(data((10, 5), seed=seed))
    model.eval()
    check_gradients(model, data((4, 5)))


def test_custom_module_in_sequential_gradients():
    model = nn.Sequential(nn.Linear(3, 4, seed=0, dtype=np.float64), Affine(4), nn.Tanh(),
                          nn.Linear(4, 2, seed=1, dtype=np.float64))
    names = [name for name, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.scale", "1.shift", "3.weight", "3.bias"]
    assert np.shares_memory(model[1].scale, model.arena.data)
    randomize(model)
    check_gradients(model, data((5, 3)))
    # its "weight"-kind parameter is penalized, its "bias"-kind one is not
    expected = sum(float(np.sum(np.square(p))) for p in
                   (model[0].weight, model[1].scale, model[3].weight))
    assert losses.L2(1.0).penalty(model) == pytest.approx(expected, rel=1e-12)


def test_float32_model_tracks_float64_model():
    m64 = randomize(full_model(np.float64, p=0.0))
    m32 = full_model(np.float32, p=0.0)
    m32.load_state_dict(m64.state_dict())
    x = data((16, 5))
    g = data((16, 3), seed=1)
    y64, y32 = m64(x), m32(x.astype(np.float32))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-4)
    dx64, dx32 = m64.backward(g), m32.backward(g.astype(np.float32))
    np.testing.assert_allclose(dx32, dx64, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(m32.arena.grad, m64.arena.grad, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------- arena


def test_sequential_puts_every_parameter_in_one_arena():
    model = full_model(np.float32)
    arena = model.arena
    assert isinstance(arena, nn.Arena)
    assert arena.data.ndim == 1 and arena.grad.shape == arena.data.shape
    assert arena.size == 5 * 6 + 6 + 6 + 6 + 6 * 3 + 3
    total = 0
    for name, p in model.named_parameters():
        assert isinstance(p, nn.Parameter)
        assert np.shares_memory(p, arena.data), name
        assert np.shares_memory(p.grad, arena.grad), name
        assert p.grad.shape == p.shape
        total += p.size
    assert total == arena.size
    for layer in model.layers:
        assert layer.arena is None  # the Sequential owns the only arena
        assert all(p.arena is arena for p in layer.parameters())
    assert model[0].weight.shape == (5, 6) and model[0].bias.shape == (6,)


def test_writing_the_arena_changes_the_output():
    model = nn.Sequential(nn.Linear(3, 2, seed=0, dtype=np.float64))
    x = data((4, 3))
    before = model(x)
    model.arena.data[:] = 0
    assert not model(x).any()
    model.arena.data[:] = 1
    np.testing.assert_allclose(model(x), x.sum(axis=1, keepdims=True) + 1 + np.zeros((4, 2)))
    assert not np.array_equal(before, model(x))
    # and writing a layer's parameter writes the arena
    model[0].bias[...] = 5
    assert np.all(model.arena.data[-2:] == 5)


def test_segments_list_weights_first_and_penalties_see_only_them():
    model = full_model(np.float64)
    segs = model.arena.segments
    kinds = [kind for _, _, _, _, kind in segs]
    assert kinds == sorted(kinds, key=lambda k: k != "weight")
    assert [s[0] for s in segs if s[4] == "weight"] == ["0.weight", "4.weight"]
    assert {s[0]: s[4] for s in segs}["1.weight"] == "norm"
    offset = 0
    for _, off, size, shape, _ in segs:
        assert off == offset and size == int(np.prod(shape))
        offset += size
    assert model.arena.n_weights == 5 * 6 + 6 * 3
    np.testing.assert_array_equal(model.arena.decay_mask(),
                                  np.arange(model.arena.size) < model.arena.n_weights)
    w, gw = model.arena.weights()
    assert w.size == model.arena.n_weights and np.shares_memory(gw, model.arena.grad)
    model.arena.data[:] = 1.0
    assert losses.L2(1.0).penalty(model) == model.arena.n_weights
    model.zero_grad()
    losses.L2(0.5).backward(model)
    np.testing.assert_array_equal(model.arena.grad,
                                  (np.arange(model.arena.size) < model.arena.n_weights) * 1.0)


def test_zero_grad_zeroes_the_whole_gradient_arena():
    model = full_model(np.float32)
    model.arena.grad[:] = 3.0
    model.zero_grad()
    assert not model.arena.grad.any()
    model[0].weight.grad[...] = 1.0
    model[0].zero_grad()  # a child without its own arena zeroes its own views
    assert not model[0].weight.grad.any()


def test_gradients_accumulate_over_backward_calls():
    model = randomize(nn.Sequential(nn.Linear(5, 4, seed=0, dtype=np.float64),
                                    nn.BatchNorm1d(4, dtype=np.float64), nn.ReLU(),
                                    nn.Linear(4, 3, seed=1, dtype=np.float64)))
    x, g = data((6, 5)), data((6, 3), seed=1)
    model.zero_grad()
    model.forward(x)
    model.backward(g)
    once = model.arena.grad.copy()
    assert np.abs(once).max() > 0
    model.forward(x)
    model.backward(g)
    np.testing.assert_allclose(model.arena.grad, 2 * once, rtol=1e-12, atol=1e-15)


def test_parameter_arithmetic_gives_plain_arrays():
    layer = nn.Linear(3, 2, seed=0)
    w = layer.weight
    assert isinstance(w, nn.Parameter) and w.kind == "weight" and layer.bias.kind == "bias"
    for result in (w + 1, w * w, -w, np.exp(w), w @ np.ones(2, np.float32), abs(w)):
        assert type(result) is np.ndarray
    assert not isinstance(w.sum(), nn.Parameter)
    assert np.array(w).__class__ is np.ndarray
    with pytest.raises(ValueError, match="kind"):
        nn.Parameter(np.zeros(3), np.zeros(3), kind="bogus")


def test_parameter_and_grad_names():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2, bias=False),
                          nn.BatchNorm1d(2), nn.Dropout(0.1))
    names = [name for name, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "3.weight", "3.bias"]
    assert len(list(model.parameters())) == 5
    assert [n for n, _ in model.named_grads()] == names
    for p, g in zip(model.parameters(), model.grads()):
        assert g is p.grad
    assert model[2].bias is None


def test_mixed_dtypes_in_one_sequential_raise():
    with pytest.raises(TypeError, match="dtype"):
        nn.Sequential(nn.Linear(3, 4, dtype=np.float32), nn.Linear(4, 2, dtype=np.float64))
    with pytest.raises(TypeError, match="dtype"):
        nn.Sequential(nn.Linear(3, 4, dtype=np.float64), nn.BatchNorm1d(4))


def test_sequential_rejects_non_modules():
    with pytest.raises(TypeError):
        nn.Sequential(nn.Linear(3, 4), lambda x: x)


# ---------------------------------------------------------------- state


def test_state_dict_round_trip_into_fresh_model():
    model = randomize(full_model(np.float32, seed=0))
    x = data((12, 5), dtype=np.float32)
    for seed in range(2):
        model(data((12, 5), seed=seed + 10, dtype=np.float32))  # running stats, dropout step
    state = model.state_dict()
    assert set(state) == {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                          "1.running_var", "3.seed", "3.step", "4.weight", "4.bias"}
    for name, p in model.named_parameters():
        assert type(state[name]) is np.ndarray and not np.shares_memory(state[name], p)
    fresh = full_model(np.float32, seed=42)
    assert not np.array_equal(fresh(x), model(x))
    fresh.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(fresh.arena.data, model.arena.data)
    np.testing.assert_array_equal(fresh(x), model(x))  # train mode: same dropout mask too
    model.eval()
    fresh.eval()
    np.testing.assert_array_equal(fresh(x), model(x))
    assert np.shares_memory(fresh[0].weight, fresh.arena.data)  # loaded in place


def test_load_state_dict_errors_and_leaves_model_unchanged():
    model = full_model(np.float32)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    good = model.state_dict()

    missing = dict(good)
    missing["0.weight"] = missing["0.weight"] + 1
    del missing["4.bias"]
    with pytest.raises(KeyError, match=r"4\.bias"):
        model.load_state_dict(missing)

    unexpected = dict(good, **{"9.weight": np.zeros(3, np.float32)})
    unexpected["0.weight"] = unexpected["0.weight"] + 1
    with pytest.raises(KeyError, match=r"9\.weight"):
        model.load_state_dict(unexpected)

    wrong = dict(good)
    wrong["0.weight"] = wrong["0.weight"] + 1
    wrong["4.weight"] = np.zeros((3, 6), np.float32)  # transposed
    with pytest.raises(ValueError, match=r"4\.weight"):
        model.load_state_dict(wrong)

    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_failed_load_state_dict_is_atomic():
    """A value that cannot be cast into its target (a float step for the int64 buffer)
    must be rejected before anything is copied, not after the parameters were."""
    model = full_model(np.float32)
    before = model.state_dict()
    bad = {k: v + 1 for k, v in model.state_dict().items()}
    bad["3.step"] = np.array(2.5)
    with pytest.raises((TypeError, ValueError)):
        model.load_state_dict(bad)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_train_eval_propagate_to_children():
    inner = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5, seed=0))
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), inner)
    assert all(m.training for _, m in model.modules())  # modules start in train mode
    assert model.eval() is model
    assert not any(m.training for _, m in model.modules())
    model.train()
    assert all(m.training for _, m in model.modules())
    model.train(False)
    assert not inner[1].training
    names = [name for name, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "2.0.weight", "2.0.bias"]


# ---------------------------------------------------------------- Linear


@pytest.mark.parametrize("init, expected_std", [
    ("he", lambda i, o: np.sqrt(2 / i)),
    ("xavier", lambda i, o: np.sqrt(2 / (i + o))),
])
def test_linear_init_scale(init, expected_std):
    layer = nn.Linear(400, 300, init=init, seed=0)
    w = np.array(layer.weight, np.float64)
    assert w.shape == (400, 300) and layer.weight.dtype == np.float32
    assert abs(w.mean()) < 0.02 * expected_std(400, 300)  # standard error ~0.003 std
    assert w.std() == pytest.approx(expected_std(400, 300), rel=0.02)
    assert not layer.bias.any()


def test_linear_init_is_seed_reproducible():
    a = nn.Linear(20, 10, seed=5)
    b = nn.Linear(20, 10, seed=5)
    c = nn.Linear(20, 10, seed=6)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert not np.array_equal(a.weight, c.weight)
    assert not np.array_equal(nn.Linear(20, 10).weight, nn.Linear(20, 10).weight)


@pytest.mark.parametrize("kwargs, error", [
    ({"in_features": 0, "out_features": 3}, ValueError),
    ({"in_features": 3, "out_features": -1}, ValueError),
    ({"in_features": 2.0, "out_features": 3}, ValueError),
    ({"in_features": True, "out_features": 3}, ValueError),
    ({"in_features": 3, "out_features": 3, "init": "bogus"}, ValueError),
    ({"in_features": 3, "out_features": 3, "dtype": int}, TypeError),
    ({"in_features": 3, "out_features": 3, "dtype": np.float16}, TypeError),
])
def test_linear_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        nn.Linear(**kwargs)


def test_linear_rejects_input_of_wrong_width():
    layer = nn.Linear(4, 2)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        layer(np.ones((3, 5), np.float32))
    with pytest.raises(ValueError):
        layer(np.ones(4, np.float32))
    with pytest.raises(ValueError):
        layer([[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(ValueError):
        nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(2, 1))(np.ones((2, 4), np.float32))


def test_linear_value_matches_numpy():
    layer = nn.Linear(6, 4, seed=1, dtype=np.float64)
    layer.bias[...] = [1, 2, 3, 4]
    x = data((5, 6))
    np.testing.assert_allclose(layer(x), x @ np.array(layer.weight) + [1, 2, 3, 4], rtol=1e-12)


# ---------------------------------------------------------------- Sequential behaviour


def test_backward_without_input_grad_fills_same_parameter_gradients():
    model = randomize(full_model(np.float64, p=0.0))
    x, g = data((7, 5)), data((7, 3), seed=1)
    model.zero_grad()
    model.forward(x)
    dx = model.backward(g).copy()
    with_input = model.arena.grad.copy()
    model.zero_grad()
    model.forward(x)
    assert model.backward(g, input_grad=False) is None
    np.testing.assert_array_equal(model.arena.grad, with_input)
    # the next default backward computes the input gradient again
    model.forward(x)
    np.testing.assert_array_equal(model.backward(g), dx)


def test_forward_returns_an_array_the_caller_owns():
    for model in (nn.Sequential(nn.Linear(3, 4, seed=0), nn.ReLU()),
                  nn.Sequential(nn.Linear(3, 4, seed=0), nn.Dropout(0.5, seed=0)).eval()):
        x1, x2 = data((5, 3), 1, np.float32), data((5, 3), 2, np.float32)
        y1 = model(x1)
        kept = y1.copy()
        y2 = model.forward(x2)
        np.testing.assert_array_equal(y1, kept)
        assert not np.shares_memory(y1, y2)
        assert not np.array_equal(y1, y2)
        y1[...] = 0  # writing it must not disturb the model
        np.testing.assert_array_equal(model(x1), kept)


def test_sequential_basics():
    layers = [nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)]
    model = nn.Sequential(*layers)
    assert len(model) == 3 and model[2] is layers[2]
    x = data((2, 3), dtype=np.float32)
    np.testing.assert_array_equal(model(x), model.forward(x))
    assert "Linear" in repr(model)


# ---------------------------------------------------------------- learning


def test_end_to_end_sgd_learns_a_separable_problem():
    rng = np.random.default_rng(0)
    n, d, classes = 600, 64, 10
    centers = rng.standard_normal((classes, d)) * 1.5
    y = rng.integers(0, classes, n)
    X = (centers[y] + rng.standard_normal((n, d))).astype(np.float32)
    model = nn.Sequential(nn.Linear(64, 64, seed=1), nn.BatchNorm1d(64), nn.ReLU(),
                          nn.Dropout(0.1, seed=2), nn.Linear(64, 10, seed=3))
    loss = losses.SoftmaxCrossEntropy()
    order = np.random.default_rng(1)
    first = None
    for _ in range(10):
        perm = order.permutation(n)
        for start in range(0, n, 60):
            idx = perm[start:start + 60]
            model.zero_grad()
            value = loss(model(X[idx]), y[idx])
            first = value if first is None else first
            model.backward(loss.backward(), input_grad=False)
            model.arena.data -= 0.1 * model.arena.grad
    assert np.all(np.isfinite(model.arena.data))
    model.eval()
    accuracy = np.mean(model(X).argmax(axis=1) == y)
    assert accuracy > 0.95, f"training accuracy {accuracy:.3f}"
    assert loss(model(X), y) < 0.5 * first


@pytest.mark.parametrize("name", list(nn.ACTIVATIONS))
def test_mlp_builds_each_named_activation(name):
    model = nn.mlp(6, 3, [5, 4], activation=name, seed=0)
    kinds = [type(layer) for layer in model]
    assert kinds == [nn.Linear, nn.ACTIVATIONS[name], nn.Linear, nn.ACTIVATIONS[name],
                     nn.Linear]
    x = np.random.default_rng(0).standard_normal((7, 6)).astype(np.float32)
    expected = x
    for layer in model:
        expected = layer.forward(expected)
    np.testing.assert_array_equal(model.forward(x), expected)
