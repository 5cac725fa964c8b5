"""Sequential's compiled plans (fastnn/_kernels/network.pyx): the whole forward and
backward pass in one call must give the layer-by-layer results bit for bit, follow
every change of mode, settings and weights, and fall back where it cannot run."""

import numpy as np
import pytest

import fastnn
from fastnn import losses, nn, optim


def layer_by_layer(model):
    """Make model run its layers one by one, as before compiled plans."""
    model.compiled = False
    return model


def build(dtype=np.float32, activation="relu", batch_norm=True, dropout=0.2, bias=True):
    if bias:
        return nn.mlp(12, 5, [16, 9], activation=activation, batch_norm=batch_norm,
                      dropout=dropout, seed=3, dtype=dtype)
    layers = [nn.Linear(12, 16, bias=False, seed=1, dtype=dtype), nn.ReLU(),
              nn.Linear(16, 9, bias=False, seed=2, dtype=dtype)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(9, dtype=dtype))
    layers += [nn.Tanh(), nn.Dropout(dropout, seed=5),
               nn.Linear(9, 5, bias=False, seed=3, dtype=dtype)]
    return nn.Sequential(*layers)


def train(model, dtype, steps_data=(150, 32), epochs=2):
    rng = np.random.default_rng(0)
    n, batch = steps_data
    X = rng.standard_normal((n, 12)).astype(dtype)
    y = rng.integers(0, 5, n)
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(),
                             optim.Adam(model, 1e-2), progress=False)
    trainer.fit(X, y, epochs=epochs, batch_size=batch, seed=1)
    return trainer.predict_proba(X[:40])


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert np.array_equal(sa[key], sb[key]), key


@pytest.mark.parametrize("activation", list(nn.ACTIVATIONS))
@pytest.mark.parametrize("batch_norm, dropout", [(True, 0.2), (False, 0.0), (False, 1.0),
                                                 (True, 0.0), (False, 0.2)])
@pytest.mark.parametrize("threads", [1, 2])
def test_training_matches_layer_by_layer_bitwise(dtype, activation, batch_norm, dropout,
                                                 threads):
    with fastnn.threads(threads):
        planned = build(dtype, activation, batch_norm, dropout)
        plain = layer_by_layer(build(dtype, activation, batch_norm, dropout))
        pa, pb = train(planned, dtype), train(plain, dtype)
    assert planned._plan is not None and plain._plan is None
    assert_same_state(planned, plain)
    assert np.array_equal(pa, pb)


@pytest.mark.parametrize("p", [0.3, 1.0])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_a_dropout_after_a_relu_passes_non_finite_values_like_the_layers(dtype, p,
                                                                        batch_norm):
    """A Dropout right after a ReLU (in a Linear's epilogue, in BatchNorm1d's pass, or
    an op of its own) works in place over the ReLU's output and takes both gradients
    from its own output: bit for bit the layers' results, infinities and NaNs too (a
    NaN input row only without BatchNorm1d, which would spread it to every row)."""
    def chain():
        layers = [nn.Linear(6, 8, seed=1, dtype=dtype), nn.ReLU(), nn.Dropout(p, seed=2),
                  nn.ReLU(), nn.Dropout(p, seed=3)]
        if batch_norm:
            layers += [nn.BatchNorm1d(8, dtype=dtype), nn.ReLU(), nn.Dropout(p, seed=4)]
        return nn.Sequential(*layers, nn.Linear(8, 3, seed=5, dtype=dtype))

    rng = np.random.default_rng(1)
    x = rng.standard_normal((33, 6)).astype(dtype)
    g = rng.standard_normal((33, 3)).astype(dtype)
    if not batch_norm:
        x[3, 2] = np.nan
    g[0, 0], g[1, 1], g[2, 2] = np.inf, -np.inf, np.nan
    results = []
    for compiled in (True, False):
        model = chain()
        model.compiled = compiled
        model.zero_grad()
        y = model.forward(x).copy()
        dx = np.array(model.backward(g))
        results.append([y, dx, *(np.array(q.grad) for q in model.parameters())])
        assert (model._plan is not None) == compiled
    assert np.isfinite(results[0][1]).any() or p == 1.0
    for u, v in zip(*results):
        assert np.array_equal(u, v, equal_nan=True)


def test_layers_without_bias_and_unfused_activations(dtype):
    planned, plain = build(dtype, bias=False), layer_by_layer(build(dtype, bias=False))
    assert np.array_equal(train(planned, dtype), train(plain, dtype))
    assert_same_state(planned, plain)


def test_large_batches_split_over_threads_match_too():
    """Above the parallel thresholds the plan splits GEMMs and passes like the layers."""
    with fastnn.threads(2):
        planned = nn.mlp(12, 5, [256], batch_norm=True, dropout=0.1, seed=0)
        plain = layer_by_layer(nn.mlp(12, 5, [256], batch_norm=True, dropout=0.1, seed=0))
        pa = train(planned, np.float32, steps_data=(1100, 512), epochs=1)
        pb = train(plain, np.float32, steps_data=(1100, 512), epochs=1)
    assert_same_state(planned, plain)
    assert np.array_equal(pa, pb)


def test_input_gradient_matches(dtype, rng):
    planned, plain = build(dtype), layer_by_layer(build(dtype))
    x = rng.standard_normal((7, 12)).astype(dtype)
    dout = rng.standard_normal((7, 5)).astype(dtype)
    ya, yb = planned.forward(x), plain.forward(x)
    assert np.array_equal(ya, yb)
    da, db = planned.backward(dout), plain.backward(dout)
    assert np.array_equal(da, db)
    assert planned.backward(dout, input_grad=False) is None
    # the returned output is the caller's: the next forward does not overwrite it
    keep = ya.copy()
    planned.forward(x + 1)
    assert np.array_equal(ya, keep)


def test_settings_mode_and_weights_changes_are_followed(rng):
    planned, plain = build(), layer_by_layer(build())
    x = rng.standard_normal((6, 12)).astype(np.float32)

    def same():
        assert np.array_equal(planned.forward(x), plain.forward(x))

    same()
    for model in (planned, plain):
        model[3].p = 0.6          # the first Dropout
    same()
    for model in (planned, plain):
        model[1].momentum = 0.5   # the first BatchNorm1d
    same()
    for model in (planned, plain):
        model.eval()
    same()
    state = build().state_dict()
    state["0.weight"] = state["0.weight"] * 2
    for model in (planned, plain):
        model.load_state_dict(state)
        model.train()
    same()
    assert np.array_equal(planned.state_dict()["1.running_mean"],
                          plain.state_dict()["1.running_mean"])


class Scale(nn.Module):
    """A layer the plans do not know."""

    def config(self):
        return {}

    def forward(self, x):
        return x * 2

    def backward(self, dout):
        return dout * 2


def test_unknown_layers_subclasses_and_odd_inputs_fall_back(rng):
    model = nn.Sequential(nn.Linear(4, 3, seed=0), Scale(), nn.ReLU())
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = model.forward(x)
    assert model._plan is None
    assert np.array_equal(y, np.maximum(2 * (x @ model[0].weight + model[0].bias), 0))

    class MyReLU(nn.ReLU):
        pass

    assert nn.Sequential(nn.Linear(4, 3), MyReLU()).forward(x) is not None

    model = build()
    xf = np.asfortranarray(rng.standard_normal((6, 12)).astype(np.float32))
    assert np.array_equal(model.forward(xf), layer_by_layer(build()).forward(xf))
    assert model._plan is None  # non-contiguous input: the layers take it as it is


def test_nested_sequential():
    inner = nn.Sequential(nn.Linear(12, 8, seed=0), nn.ReLU())
    outer = nn.Sequential(inner, nn.Linear(8, 3, seed=1))
    x = np.random.default_rng(0).standard_normal((4, 12)).astype(np.float32)
    expected = np.maximum(x @ inner[0].weight + inner[0].bias, 0) @ outer[1].weight
    np.testing.assert_allclose(outer.forward(x), expected + outer[1].bias, rtol=1e-5,
                               atol=1e-6)


def test_bad_backward_arguments(rng):
    model = build()
    x = rng.standard_normal((6, 12)).astype(np.float32)
    model.forward(x)
    with pytest.raises(ValueError, match="dout"):
        model.backward(np.zeros((6, 4), np.float32))
    with pytest.raises(TypeError, match="dout"):
        model.backward(np.zeros((6, 5), np.float64))
    with pytest.raises(TypeError, match="dout"):
        model.backward([[0.0] * 5] * 6)
    # a non-contiguous gradient is fine
    g = np.asfortranarray(rng.standard_normal((6, 5)).astype(np.float32))
    model, plain = build(), layer_by_layer(build())
    plain.forward(x)
    model.forward(x)
    assert np.array_equal(model.backward(g), plain.backward(g))


def test_one_row_training_batch_norm_raises_like_the_layer():
    model = build()
    with pytest.raises(ValueError, match="more than 1 row"):
        model.forward(np.ones((1, 12), np.float32))
    model.eval()
    assert model.forward(np.ones((1, 12), np.float32)).shape == (1, 5)


def test_copies_and_pickles_train_on_their_own_arena(rng):
    import copy
    import pickle

    model = build()
    x = rng.standard_normal((6, 12)).astype(np.float32)
    model.forward(x)
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert twin._plans == {}
        for (name, p), (_, q) in zip(twin.named_parameters(), model.named_parameters()):
            assert np.shares_memory(p, twin.arena.data), name
            assert np.shares_memory(p.grad, twin.arena.grad), name
            assert not np.shares_memory(p, model.arena.data), name
            assert np.array_equal(p, q) and p.kind == q.kind
        # the copy trains like the original, on its own arena
        original_state = model.state_dict()
        expected = train(copy.deepcopy(model), np.float32)
        assert np.array_equal(train(twin, np.float32), expected)
        for key, value in model.state_dict().items():
            assert np.array_equal(value, original_state[key]), key


def test_workspaces_are_shared_where_no_pass_reads_them_again():
    """Forward: an activation after BatchNorm1d runs in its normalizing pass, and a
    Dropout after a ReLU works in place over its output. Backward: gradients flow
    through two shared buffers. The workspace of a 784-1024-1024-10 plan at batch 256 is
    then its forward outputs (4 of 256 x 1024) plus two gradient buffers."""
    model = nn.mlp(784, 10, [1024, 1024], batch_norm=True, dropout=0.1, seed=0)
    x = np.zeros((256, 784), np.float32)
    out = model.forward(x)
    before_backward = model._plan.workspace_bytes
    model.backward(np.ones_like(out), input_grad=False)
    unit = 256 * 1024 * 4
    # outputs: Linear, BatchNorm (+ its ReLU and then the Dropout) per hidden layer, and
    # the scores; each BatchNorm's mean and inv_std
    assert before_backward == 4 * unit + 256 * 10 * 4 + 2 * (2 * 1024 * 4)
    # two gradient buffers; each Linear's bias-gradient sums, each BatchNorm's two sums
    assert model._plan.workspace_bytes - before_backward == (
        2 * unit + (1024 + 1024 + 10) * 4 + 2 * (2 * 1024 * 4))


def test_backward_before_forward_says_so():
    for compiled in (True, False):
        model = build()
        model.compiled = compiled
        with pytest.raises(RuntimeError, match="before forward"):
            model.backward(np.ones((4, 5), np.float32))
    with pytest.raises(RuntimeError, match=r"Linear\.backward\(\) called before forward"):
        nn.Linear(3, 2).backward(np.ones((4, 2), np.float32))
    with pytest.raises(AttributeError, match="no_such"):
        nn.Linear(3, 2).no_such  # noqa: B018
