"""Layers are plain building blocks: a layer computes its own formula wherever it is
used, containers never rewrite their children, parameters stay with the model that
holds them, and frozen parameters stay as they are."""

import copy

import numpy as np
import pytest

import fastnn
from fastnn import losses, nn, optim


def data(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def mlp(dtype=np.float64):
    return nn.Sequential(nn.Linear(4, 6, seed=1, dtype=dtype), nn.ReLU(),
                         nn.Linear(6, 5, seed=2, dtype=dtype), nn.Tanh(),
                         nn.Linear(5, 3, seed=3, dtype=dtype))


def affine(layer, x):
    return x @ np.array(layer.weight) + np.array(layer.bias)


# ---------------------------------------------------------------- a layer's own formula


@pytest.mark.parametrize("compiled", [True, False])
def test_a_layer_taken_out_of_a_model_computes_its_own_formula(compiled):
    model = mlp()
    model.compiled = compiled
    x = data((7, 4))
    model(x)  # builds (and runs) the compiled plan, which fuses Linear and ReLU
    np.testing.assert_allclose(model[0].forward(x), affine(model[0], x), rtol=1e-12)
    neg = -np.ones((3, 6))
    np.testing.assert_array_equal(model[1].forward(neg), np.zeros((3, 6)))
    first = nn.Sequential(*list(model)[:1])
    np.testing.assert_allclose(first.forward(x), affine(model[0], x), rtol=1e-12)
    np.testing.assert_allclose(model[:1](x), affine(model[0], x), rtol=1e-12)


def test_one_linear_in_two_models_with_different_activations():
    shared = nn.Linear(4, 6, seed=1, dtype=np.float64)
    a = nn.Sequential(shared, nn.ReLU())
    b = nn.Sequential(shared, nn.Sigmoid())
    x = data((5, 4))
    z = affine(shared, x)
    np.testing.assert_allclose(a(x), np.maximum(z, 0), rtol=1e-12)
    np.testing.assert_allclose(b(x), 1 / (1 + np.exp(-z)), rtol=1e-12)
    np.testing.assert_allclose(a(x), np.maximum(z, 0), rtol=1e-12)
    np.testing.assert_allclose(shared(x), z, rtol=1e-12)
    assert a.arena is b.arena and a.arena.holder is a  # b works on views of a's arena


def test_deep_copy_and_save_load_of_a_layer_and_of_a_slice(tmp_path):
    model = mlp()
    x = data((6, 4))
    model(x)
    layer = copy.deepcopy(model[0])
    np.testing.assert_allclose(layer(x), affine(model[0], x), rtol=1e-12)
    part = model[0:2]
    fastnn.save(part, tmp_path / "part.safetensors")
    loaded = fastnn.load(tmp_path / "part.safetensors")
    np.testing.assert_allclose(loaded(x), np.maximum(affine(model[0], x), 0), rtol=1e-12)
    np.testing.assert_allclose(loaded[0](x), affine(model[0], x), rtol=1e-12)
    clone = copy.deepcopy(part)
    np.testing.assert_allclose(clone(x), part(x), rtol=0)
    assert not np.shares_memory(clone[0].weight, model[0].weight)


# ---------------------------------------------------------------- ownership


def test_a_sub_model_shares_the_parameters_and_the_optimizer_still_trains_them():
    model = mlp()
    opt = optim.SGD(model, lr=0.1)
    before = model.arena.data.copy()
    feat = nn.Sequential(*list(model)[:-1])
    also = model[1:3]
    assert np.shares_memory(feat[0].weight, model.arena.data)
    assert model.arena is not None and feat.arena is None and also.arena is None
    x, y = data((8, 4)), np.arange(8) % 3
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), opt, progress=False)
    trainer.train_step(x, y)
    moved = model.arena.data != before
    for name, p in model.named_parameters():
        assert moved[p.offset:p.offset + p.size].any(), f"{name} was not updated"
    np.testing.assert_allclose(feat(x), np.tanh(
        affine(model[2], np.maximum(affine(model[0], x), 0))), rtol=1e-12)


def test_slice_gradients_land_in_the_parent_arena_and_zero_grad_is_local():
    model = mlp()
    part = model[2:]
    model.arena.grad[:] = 7.0
    part.zero_grad()
    for name, p in model.named_parameters():
        expected = 0.0 if name.startswith(("2.", "4.")) else 7.0
        assert np.all(p.grad == expected), name


def test_a_new_container_adopts_new_layers_and_nested_containers():
    inner = nn.Sequential(nn.Linear(3, 4, seed=0), nn.ReLU())
    old = inner.arena
    outer = nn.Sequential(inner, nn.Linear(4, 2, seed=1))
    assert outer.arena is not None and old.retired
    assert all(p.arena is outer.arena for p in outer.parameters())
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(outer(x), outer[1](inner(x)))


def test_an_optimizer_made_before_the_model_refuses_to_step():
    layer = nn.Linear(2, 2, seed=0)
    opt = optim.SGD(layer, lr=0.1)
    nn.Sequential(layer, nn.ReLU())
    with pytest.raises(RuntimeError, match="build the optimizer after the model"):
        opt.step()


def test_append_keeps_existing_parameters_where_they_are():
    model = nn.Sequential(nn.Linear(3, 4, seed=0, dtype=np.float64), nn.ReLU())
    opt = optim.SGD(model, lr=0.1)
    arena = model.arena
    model.append(nn.Linear(4, 2, seed=1, dtype=np.float64))
    assert not arena.retired and np.shares_memory(model[0].weight, arena.data)
    assert len(model.arenas()) == 2 and model.arena is None
    x = data((5, 3))
    np.testing.assert_allclose(model(x), affine(model[2], np.maximum(affine(model[0], x), 0)),
                               rtol=1e-12)
    model.backward(np.ones((5, 2)))
    opt.step()  # the old arena's optimizer still steps
    assert model[2].weight.arena.holder is model


# ---------------------------------------------------------------- freezing


@pytest.mark.parametrize("compiled", [True, False])
def test_frozen_parameters_accumulate_no_gradient(compiled):
    model = mlp()
    model.compiled = compiled
    model[0].weight.requires_grad = False
    model[2].requires_grad_(False)
    x = data((6, 4))
    model(x)
    model.backward(np.ones((6, 3)))
    assert not model[0].weight.grad.any()
    assert not model[2].weight.grad.any() and not model[2].bias.grad.any()
    assert model[0].bias.grad.any() and model[4].weight.grad.any()
    model.requires_grad_(True)
    model(x)
    model.backward(np.ones((6, 3)))
    assert model[0].weight.grad.any() and model[2].weight.grad.any()


def test_freezing_gives_the_same_other_gradients_in_plan_and_layer_by_layer():
    x = data((6, 4))
    grads = []
    for compiled in (True, False):
        model = nn.Sequential(nn.Linear(4, 6, seed=1, dtype=np.float64),
                              nn.BatchNorm1d(6, dtype=np.float64), nn.ReLU(),
                              nn.Linear(6, 3, seed=2, dtype=np.float64))
        model.compiled = compiled
        model[1].weight.requires_grad = False
        model[3].weight.requires_grad = False
        model(x)
        model.backward(data((6, 3), 1))
        grads.append(model.arena.grad.copy())
    np.testing.assert_array_equal(grads[0], grads[1])


@pytest.mark.parametrize("make", [
    lambda m: optim.SGD(m, lr=0.1, momentum=0.9, weight_decay=0.1),
    lambda m: optim.Adam(m, lr=0.01),
    lambda m: optim.AdamW(m, lr=0.01, weight_decay=0.1),
    lambda m: optim.RMSProp(m, lr=0.01),
    lambda m: optim.Adagrad(m, lr=0.01),
])
def test_optimizers_leave_frozen_parameters_and_their_state_alone(make):
    model = mlp()
    opt = make(model)
    x, y = data((8, 4)), np.arange(8) % 3
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), opt, progress=False,
                             regularizer=losses.ElasticNet(0.01, 0.5))
    trainer.train_step(x, y)  # state for every parameter exists
    model[2].requires_grad_(False)
    frozen = [np.array(model[2].weight), np.array(model[2].bias)]
    state = [{k: v.copy() for k, v in s.items()} for s in opt._state]
    for _ in range(3):
        trainer.train_step(x, y)
    np.testing.assert_array_equal(model[2].weight, frozen[0])
    np.testing.assert_array_equal(model[2].bias, frozen[1])
    lo = model[2].weight.offset
    for saved, now in zip(state, opt._state):
        for name in saved:
            np.testing.assert_array_equal(now[name][lo:lo + model[2].weight.size],
                                          saved[name][lo:lo + model[2].weight.size])
    assert not np.array_equal(model[0].weight, np.zeros_like(model[0].weight))


def test_requires_grad_survives_copies_and_rejects_non_bools():
    model = mlp()
    model[0].weight.requires_grad = False
    twin = copy.deepcopy(model)
    assert not twin[0].weight.requires_grad and twin[0].bias.requires_grad
    with pytest.raises(TypeError, match="requires_grad"):
        model[0].weight.requires_grad = "no"


def test_hasattr_on_missing_forward_state_is_false():
    layer = nn.Linear(2, 2)
    assert not hasattr(layer, "_cache")
    with pytest.raises(RuntimeError, match="before forward"):
        nn.BatchNorm1d(2).backward(np.ones((3, 2)))
