"""A Trainer step has a compiled Sequential's backward write the parameter gradients
instead of zeroing them first and adding: same results, bit for bit, as zero_grad
followed by an accumulating backward, whatever the gradients held before."""

import numpy as np
import pytest

import fastnn
from fastnn import losses, nn, optim


def _mlp(seed=0):
    return nn.mlp(12, 4, [16, 16], batch_norm=True, dropout=0.1, seed=seed)


def _residual(seed=0):
    return nn.Sequential(
        nn.Linear(12, 16, seed=seed), nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Linear(16, 16, seed=seed + 1), nn.BatchNorm1d(16),
                                  nn.ReLU(), nn.Linear(16, 16, seed=seed + 2))),
        nn.ReLU(), nn.Linear(16, 4, seed=seed + 3))


def _tied(seed=0):
    shared = nn.Linear(16, 16, seed=seed + 1)
    return nn.Sequential(nn.Linear(12, 16, seed=seed), nn.Tanh(), shared, nn.Tanh(), shared,
                         nn.Tanh(), nn.Linear(16, 4, seed=seed + 2))


def _cnn(seed=0):
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, seed=seed), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 16, 4, seed=seed + 1))


def _data(shape=(12,), n=24):
    rng = np.random.default_rng(5)
    return rng.standard_normal((n, *shape)).astype(np.float32), rng.integers(0, 4, n)


def _train(model, x, y, zero_first, garbage=False, steps=3):
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.Adam(model, 1e-2),
                             progress=False)
    if zero_first:  # the old way: fill with zeros, then an accumulating backward
        model._zero_grad_for_step = model.zero_grad
    for _ in range(steps):
        if garbage:
            for p in model.parameters():
                p.grad[...] = np.nan
        trainer.train_step(x, y)
    return [np.array(p) for p in model.parameters()]


@pytest.mark.parametrize("build", [_mlp, _residual], ids=["mlp", "residual"])
def test_assigned_gradients_equal_zeroed_and_added(build):
    x, y = _data()
    reference = _train(build(), x, y, zero_first=True)
    model = build()
    got = _train(model, x, y, zero_first=False, garbage=True)
    assert model._assigns(model._plan)  # the pass wrote every gradient
    for a, b in zip(got, reference):
        np.testing.assert_array_equal(a, b)


def test_a_weight_used_twice_adds_its_second_gradient():
    """The first op to write a gradient writes it; the same weight's later op adds."""
    model = _tied()
    plan_model = _tied()
    x, y = _data()
    # one backward by hand, on zeroed gradients, against the plan's assigning pass
    loss = losses.SoftmaxCrossEntropy()
    plan_model.zero_grad()
    loss.forward(plan_model.forward(x), y)
    plan_model.backward(loss.backward())
    model._zero_grad_for_step()
    loss.forward(model.forward(x), y)
    model.backward(loss.backward())
    for p, q in zip(model.parameters(), plan_model.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)
    shared = model.layers[2].weight.grad
    assert np.abs(shared).sum() > 0


def test_plans_that_cannot_assign_zero_first():
    x, y = _data((1, 4, 4))
    model = _cnn()
    got = _train(model, x, y, zero_first=False, garbage=True)
    assert model._plan.assigns() is None and not model._assigns(model._plan)
    reference = _train(_cnn(), x, y, zero_first=True)
    for a, b in zip(got, reference):
        np.testing.assert_array_equal(a, b)


def test_frozen_parameters_keep_their_gradients_zeroed():
    x, y = _data()
    model = _mlp()
    model.layers[0].weight.requires_grad = False
    got = _train(model, x, y, zero_first=False, garbage=True)
    assert not model._assigns(model._plan)
    assert np.all(model.layers[0].weight.grad == 0)
    reference_model = _mlp()
    reference_model.layers[0].weight.requires_grad = False
    reference = _train(reference_model, x, y, zero_first=True)
    for a, b in zip(got, reference):
        np.testing.assert_array_equal(a, b)


def test_layer_by_layer_backward_zeroes_first():
    x, y = _data()
    model = _mlp()
    model.compiled = False
    got = _train(model, x, y, zero_first=False, garbage=True)
    reference_model = _mlp()
    reference_model.compiled = False
    reference = _train(reference_model, x, y, zero_first=True)
    for a, b in zip(got, reference):
        np.testing.assert_array_equal(a, b)


def test_backward_outside_a_step_still_adds():
    """model.backward adds to the gradients (PyTorch's semantics); zero_grad cancels a
    pending write, so a following backward adds to zeros."""
    x, y = _data()
    model = nn.mlp(12, 4, [16, 16], batch_norm=True, seed=0)
    loss = losses.SoftmaxCrossEntropy()

    def backward():
        loss.forward(model.forward(x), y)
        model.backward(loss.backward())
        return [p.grad.copy() for p in model.parameters()]

    model.zero_grad()
    once = backward()
    twice = backward()
    model._zero_grad_for_step()
    model.zero_grad()
    again = backward()
    assert any(np.abs(a).sum() > 0 for a in once)
    for a, b, c in zip(once, twice, again):
        np.testing.assert_allclose(b, 2 * a, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(c, a)


def test_a_plan_refuses_to_assign_what_it_cannot():
    x, _ = _data((1, 4, 4))
    model = _cnn()
    out = model.forward(x)
    with pytest.raises(ValueError, match="cannot assign"):
        model._plan.backward(np.ones_like(out), False, 1, True)
