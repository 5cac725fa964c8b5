"""Convolutional models in compiled plans: the whole forward and backward pass in one
call each (Conv2d with its activation in the GEMM epilogue, Residual branches of
convolutions, Flatten), bit for bit the layer-by-layer results at 1 and 2 threads."""

import copy

import numpy as np
import pytest

import fastnn
from fastnn import losses, nn, optim


def conv_net(dtype, act=nn.ReLU, gap=False):
    def block(cin, cout, stride, seed):
        body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, seed=seed, dtype=dtype),
            nn.BatchNorm2d(cout, dtype=dtype), act(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False, seed=seed + 1, dtype=dtype))
        short = None
        if stride != 1 or cin != cout:
            short = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, seed=seed + 2, dtype=dtype),
                nn.BatchNorm2d(cout, dtype=dtype))
        return [nn.Residual(body, short), act()]

    head = ([nn.GlobalAvgPool2d(), nn.Linear(6, 5, seed=4, dtype=dtype)] if gap else
            [nn.AvgPool2d(3, stride=1, padding=1), nn.Flatten(), nn.Dropout(0.2, seed=3),
             nn.Linear(6 * 4 * 4, 5, seed=4, dtype=dtype)])
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, seed=1, dtype=dtype), act(),
        nn.MaxPool2d(3, stride=1, padding=1),
        *block(4, 4, 1, 10), *block(4, 6, 2, 20),
        nn.Conv2d(6, 6, 3, groups=3, dilation=(1, 2), padding=(1, 2), seed=5, dtype=dtype),
        *head)


def run(m, x, g, steps=2):
    m.zero_grad()
    outs = []
    for _ in range(steps):
        outs += [m.forward(x).copy(), np.array(m.backward(g))]
    return outs + [np.array(p.grad) for p in m.parameters()]


@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh, nn.LeakyReLU])
@pytest.mark.parametrize("gap", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_conv_plan_matches_layer_by_layer_bitwise(dtype, act, gap, threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((33, 2, 8, 8)).astype(dtype)
    g = rng.standard_normal((33, 5)).astype(dtype)
    planned = conv_net(dtype, act, gap)
    plain = copy.deepcopy(planned)
    plain.compiled = False
    with fastnn.threads(threads):
        a, b = run(planned, x, g), run(plain, x, g)
    assert planned._plan is not None and plain._plan is None
    assert a[1].shape == x.shape
    for u, v in zip(a, b):
        assert np.array_equal(u, v)


def test_conv_plan_results_do_not_depend_on_threads(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 2, 8, 8)).astype(dtype)
    g = rng.standard_normal((40, 5)).astype(dtype)
    results = []
    for threads in (1, 2):
        with fastnn.threads(threads):
            results.append(run(conv_net(dtype), x, g))
    for u, v in zip(*results):
        assert np.array_equal(u, v)


def test_frozen_conv_in_a_plan_gets_no_gradient():
    rng = np.random.default_rng(2)
    m = conv_net(np.float64)
    m[0].requires_grad_(False)
    x = rng.standard_normal((4, 2, 8, 8))
    m.forward(x)
    m.backward(rng.standard_normal((4, 5)))
    assert m._plan is not None
    assert not m[0].weight.grad.any() and not m[0].bias.grad.any()
    assert m[-1].weight.grad.any()


def test_trainer_trains_a_conv_net_on_images():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 2, 8, 8)).astype(np.float32)
    y = (x[:, 0, :4].sum(axis=(1, 2)) > x[:, 1, 4:].sum(axis=(1, 2))).astype(np.int64)
    m = conv_net(np.float32)
    trainer = fastnn.Trainer(m, losses.SoftmaxCrossEntropy(), optim.Adam(m, 3e-3),
                             progress=False)
    first = trainer.train_step(x, y)
    for _ in range(60):
        last = trainer.train_step(x, y)
    assert m._plan is not None
    assert last < 0.5 * first


def test_eval_mode_plan_matches_layer_by_layer():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((9, 2, 8, 8))
    planned = conv_net(np.float64)
    planned.forward(x)  # running statistics move
    planned.eval()
    plain = copy.deepcopy(planned)
    plain.compiled = False
    assert np.array_equal(planned.forward(x), plain.forward(x))
    assert planned._plan is not None


def test_a_subclass_that_changes_forward_runs_layer_by_layer():
    class Doubled(nn.MaxPool2d):
        def forward(self, x):
            return 2 * super().forward(x)

    x = np.ones((2, 1, 4, 4), np.float32)
    m = nn.Sequential(nn.Conv2d(1, 1, 1, seed=0), Doubled(2))
    y = m.forward(x)
    assert m._plan is None
    assert np.allclose(y, 2 * nn.MaxPool2d(2).forward(m[0].forward(x)))
    assert nn.Sequential(nn.Conv2d(1, 1, 1), nn.MaxPool2d(2)).forward(x) is not None


def test_wrong_channels_refused_on_both_paths():
    m = conv_net(np.float32)
    x = np.zeros((2, 3, 8, 8), np.float32)
    for compiled in (True, False):
        m.compiled = compiled
        with pytest.raises(ValueError, match="Conv2d"):
            m.forward(x)
