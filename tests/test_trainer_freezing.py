"""fastnn.Trainer with parameters it does not train: those the optimizer does not hold
and frozen ones (requires_grad False). Every step zeroes the whole model's gradients;
clip_norm clips, and reports the norm of, the trained parameters only; frozen weights
stay as they are whatever the optimizer, its weight decay and momentum, or the penalty."""

import numpy as np
import pytest

import fastnn
from fastnn import losses, nn, optim


def blobs(n=96, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 3
    y = rng.integers(0, k, n)
    return (centers[y] + 0.5 * rng.standard_normal((n, d))).astype(np.float64), y


def mlp(seed=0):
    f64 = np.float64
    return nn.Sequential(nn.Linear(4, 16, seed=seed, dtype=f64), nn.BatchNorm1d(16, dtype=f64),
                         nn.ReLU(), nn.Linear(16, 3, seed=seed + 1, dtype=f64))


def batch_grads(state, xb, yb):
    """{name: gradient} of the mean loss on one batch for a model in `state`, from
    zero, in train mode (as a step computes them)."""
    model = mlp(seed=50)
    model.load_state_dict(state)
    loss = losses.SoftmaxCrossEntropy()
    model.zero_grad()
    loss.forward(model.forward(xb), yb)
    model.backward(loss.backward())
    return {name: np.array(g) for name, g in model.named_grads()}


def last_layer_only(model, lr=0.1, **kwargs):
    return optim.SGD(list(model[3].parameters()), lr, **kwargs)


def test_gradients_not_held_by_the_optimizer_are_the_last_steps_only():
    X, y = blobs()
    model = mlp()
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), last_layer_only(model),
                             progress=False)
    batches = [(X[i:i + 16], y[i:i + 16]) for i in range(0, 80, 16)]
    for xb, yb in batches[:-1]:
        trainer.train_step(xb, yb)
    state = model.state_dict()
    trainer.train_step(*batches[-1])
    expected = batch_grads(state, *batches[-1])
    for name, grad in model.named_grads():
        if not name.startswith("3."):  # not stepped: its gradient stays readable
            np.testing.assert_allclose(grad, expected[name], rtol=1e-12, atol=1e-15,
                                       err_msg=name)
    # and only the last layer moved
    after = model.state_dict()
    for name in ("0.weight", "0.bias", "1.weight", "1.bias"):
        assert after[name].tobytes() == state[name].tobytes()
    assert after["3.weight"].tobytes() != state["3.weight"].tobytes()


def test_fit_does_not_pile_up_gradients_of_untrained_parameters():
    X, y = blobs(64)
    model = mlp()
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), last_layer_only(model),
                             progress=False)
    trainer.fit(X[:48], y[:48], epochs=1, batch_size=16, shuffle=False)
    state = model.state_dict()
    trainer.fit(X[48:], y[48:], epochs=1, batch_size=16, shuffle=False)  # one step
    expected = batch_grads(state, X[48:], y[48:])
    np.testing.assert_allclose(model[0].weight.grad, expected["0.weight"], rtol=1e-12)


@pytest.mark.parametrize("how", ["not held", "frozen"])
def test_clip_norm_clips_and_reports_the_trained_parameters_only(how):
    """`not held`: the optimizer has the last layer only; `frozen`: it has every
    parameter but the first layer's are frozen. Either way the norm is the last layer's
    and BatchNorm's (the trained ones), they alone are scaled, the others keep their
    gradients (zero when frozen)."""
    X, y = blobs(32)
    model = mlp()
    if how == "frozen":
        model[0].requires_grad_(False)
        opt = optim.SGD(model, 0.1)
        trained = ("1.", "3.")
    else:
        opt = last_layer_only(model)
        trained = ("3.",)
    clip = 1e-3
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), opt, clip_norm=clip,
                             progress=False)
    assert trainer.grad_norm is None
    state = model.state_dict()
    trainer.train_step(X, y)
    expected = batch_grads(state, X, y)
    if how == "frozen":
        expected["0.weight"][...] = expected["0.bias"][...] = 0
    norm = np.sqrt(sum(np.sum(g**2) for name, g in expected.items()
                       if name.startswith(trained)))
    assert norm > 100 * clip
    assert trainer.grad_norm == pytest.approx(norm, rel=1e-10)
    scale = clip / (norm + 1e-6)
    for name, grad in model.named_grads():
        want = expected[name] * (scale if name.startswith(trained) else 1.0)
        np.testing.assert_allclose(grad, want, rtol=1e-10, atol=1e-15, err_msg=name)


OPTIMIZERS = {
    "sgd-momentum-decay": lambda m: optim.SGD(m, 0.1, momentum=0.9, weight_decay=1e-2),
    "nesterov": lambda m: optim.SGD(m, 0.1, momentum=0.9, nesterov=True),
    "adam-decay": lambda m: optim.Adam(m, 1e-2, weight_decay=1e-2),
    "adamw": lambda m: optim.AdamW(m, 1e-2, weight_decay=0.1),
    "rmsprop": lambda m: optim.RMSProp(m, 1e-2),
    "adagrad": lambda m: optim.Adagrad(m, 1e-2),
}
PENALTIES = {"none": lambda: None, "l2": lambda: losses.L2(1e-2),
             "l1": lambda: losses.L1(1e-2), "elastic": lambda: losses.ElasticNet(1e-2, 0.5)}


@pytest.mark.parametrize("penalty", list(PENALTIES))
@pytest.mark.parametrize("make_opt", list(OPTIMIZERS))
def test_frozen_weights_do_not_change(make_opt, penalty):
    X, y = blobs()
    model = mlp()
    model[0].requires_grad_(False)
    model[1].weight.requires_grad = False  # BatchNorm's gamma; beta trains
    frozen = ("0.weight", "0.bias", "1.weight")
    before = model.state_dict()
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), OPTIMIZERS[make_opt](model),
                             regularizer=PENALTIES[penalty](), clip_norm=10.0, progress=False)
    trainer.fit(X, y, epochs=3, batch_size=16, seed=0)
    after = model.state_dict()
    for name in frozen:
        assert after[name].tobytes() == before[name].tobytes(), name
    for name in ("1.bias", "3.weight", "3.bias"):
        assert after[name].tobytes() != before[name].tobytes(), name


def test_the_penalty_in_the_loss_leaves_frozen_weights_out():
    X, y = blobs(40)
    model = mlp()
    model[0].requires_grad_(False)
    lam = 0.05
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model, 0.0),
                             regularizer=losses.L2(lam), progress=False)
    history = trainer.fit(X, y, epochs=1, batch_size=40, seed=0)  # lr 0: weights fixed
    w3 = np.asarray(model[3].weight)
    # the data loss of the step: in train mode (BatchNorm's batch statistics)
    loss = losses.SoftmaxCrossEntropy()
    check = mlp(seed=9)
    check.load_state_dict(model.state_dict())
    data_loss = loss.forward(check.forward(X), y)
    assert history["loss"][0] == pytest.approx(data_loss + lam * float(np.sum(w3**2)),
                                               rel=1e-10)
