"""fastnn.optim optimizers: every update rule against an independent NumPy implementation
of PyTorch's documented formula (DESIGN.md section 4) over 25 steps, and against
torch.optim when it is installed; default weight-decay groups (weights only), user
param groups and their flat spans, state_dict resume (bitwise), zero_grad, NaN
gradients, validation at construction, bitwise thread independence, and an end-to-end
training run."""

import math

import numpy as np
import pytest

import fastnn
from fastnn import losses, nn, optim

STEPS = 25

# ---------------------------------------------------------------- the NumPy oracle
# Written from the torch.optim docs, one parameter at a time, in float64. Each rule
# updates p in place and keeps its state in the dict s; t counts steps from 1.


def ref_sgd(p, g, s, t, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    g = g + weight_decay * p
    if momentum:
        buf = g.copy() if t == 1 else momentum * s["buf"] + g
        s["buf"] = buf
        g = g + momentum * buf if nesterov else buf
    p -= lr * g


def ref_adagrad(p, g, s, t, lr, eps=1e-10, weight_decay=0.0):
    g = g + weight_decay * p
    s["sum"] = s.get("sum", 0.0) + g * g
    p -= lr * g / (np.sqrt(s["sum"]) + eps)


def ref_rmsprop(p, g, s, t, lr, alpha=0.99, eps=1e-8, weight_decay=0.0):
    g = g + weight_decay * p
    s["sq"] = alpha * s.get("sq", 0.0) + (1 - alpha) * g * g
    p -= lr * g / (np.sqrt(s["sq"]) + eps)


def ref_adam(p, g, s, t, lr, betas, eps, weight_decay, decoupled):
    b1, b2 = betas
    if decoupled:
        p *= 1 - lr * weight_decay
    else:
        g = g + weight_decay * p
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
    m_hat = s["m"] / (1 - b1**t)
    v_hat = s["v"] / (1 - b2**t)
    p -= lr * m_hat / (np.sqrt(v_hat) + eps)


def ref_adam_l2(p, g, s, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    ref_adam(p, g, s, t, lr, betas, eps, weight_decay, decoupled=False)


def ref_adamw(p, g, s, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    ref_adam(p, g, s, t, lr, betas, eps, weight_decay, decoupled=True)


class Reference:
    """A NumPy optimizer over copies of some parameters: groups is [(values, hyper)]."""

    def __init__(self, rule, groups):
        self.rule = rule
        self.groups = [([np.array(v, np.float64) for v in values], dict(hyper))
                       for values, hyper in groups]
        self.state = [[{} for _ in values] for values, _ in self.groups]
        self.t = 0

    def step(self, grads):
        """grads: per group, a list of gradients in the order of its values."""
        self.t += 1
        for (values, hyper), states, gs in zip(self.groups, self.state, grads):
            for p, s, g in zip(values, states, gs):
                self.rule(p, np.asarray(g, np.float64), s, self.t, **hyper)


# (fastnn class, fastnn kwargs, oracle rule, oracle hyperparameters: all of them, so
# that the "defaults" cases check fastnn's documented defaults)
CASES = {
    "sgd": (optim.SGD, dict(lr=0.05), ref_sgd, dict(lr=0.05)),
    "sgd_wd": (optim.SGD, dict(lr=0.05, weight_decay=0.1), ref_sgd,
               dict(lr=0.05, weight_decay=0.1)),
    "sgd_momentum": (optim.SGD, dict(lr=0.05, momentum=0.9), ref_sgd,
                     dict(lr=0.05, momentum=0.9)),
    "sgd_momentum_wd": (optim.SGD, dict(lr=0.05, momentum=0.8, weight_decay=0.1), ref_sgd,
                        dict(lr=0.05, momentum=0.8, weight_decay=0.1)),
    "sgd_nesterov": (optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True), ref_sgd,
                     dict(lr=0.05, momentum=0.9, nesterov=True)),
    "sgd_nesterov_wd": (optim.SGD, dict(lr=0.05, momentum=0.7, nesterov=True, weight_decay=0.1),
                        ref_sgd, dict(lr=0.05, momentum=0.7, nesterov=True, weight_decay=0.1)),
    "adagrad": (optim.Adagrad, dict(lr=0.1), ref_adagrad, dict(lr=0.1, eps=1e-10)),
    "adagrad_eps": (optim.Adagrad, dict(lr=0.1, eps=0.5), ref_adagrad, dict(lr=0.1, eps=0.5)),
    "rmsprop": (optim.RMSProp, dict(lr=0.01), ref_rmsprop, dict(lr=0.01, alpha=0.99, eps=1e-8)),
    "rmsprop_alpha_eps": (optim.RMSProp, dict(lr=0.01, alpha=0.8, eps=0.3), ref_rmsprop,
                          dict(lr=0.01, alpha=0.8, eps=0.3)),
    "adam_defaults": (optim.Adam, {}, ref_adam_l2,
                      dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)),
    "adam": (optim.Adam, dict(lr=0.01, betas=(0.8, 0.95), eps=1e-3), ref_adam_l2,
             dict(lr=0.01, betas=(0.8, 0.95), eps=1e-3, weight_decay=0.0)),
    "adam_wd": (optim.Adam, dict(lr=0.01, weight_decay=0.2), ref_adam_l2,
                dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.2)),
    "adamw_defaults": (optim.AdamW, {}, ref_adamw,
                       dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)),
    "adamw": (optim.AdamW, dict(lr=0.05, betas=(0.85, 0.99), weight_decay=0.5), ref_adamw,
              dict(lr=0.05, betas=(0.85, 0.99), eps=1e-8, weight_decay=0.5)),
}

# (fastnn class, kwargs) of one configuration per update rule, for the checks that do
# not need the oracle
ONE_PER_RULE = {
    "sgd": (optim.SGD, dict(lr=0.05)),
    "sgd_momentum_wd": (optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.1)),
    "sgd_nesterov": (optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    "adagrad": (optim.Adagrad, dict(lr=0.1)),
    "rmsprop": (optim.RMSProp, dict(lr=0.01, alpha=0.9)),
    "adam_wd": (optim.Adam, dict(lr=0.01, weight_decay=0.1)),
    "adamw": (optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
}


# ---------------------------------------------------------------- helpers


def make_model(dtype=np.float64, seed=0):
    """Linear -> BatchNorm1d -> ReLU -> Linear, with every parameter (biases, gamma and
    beta too) set to non-trivial values, so that decaying the wrong ones shows."""
    model = nn.Sequential(nn.Linear(7, 6, seed=seed, dtype=dtype), nn.BatchNorm1d(6, dtype=dtype),
                          nn.ReLU(), nn.Linear(6, 4, seed=seed + 1, dtype=dtype))
    rng = np.random.default_rng(seed + 100)
    for p in model.parameters():
        p[...] = rng.uniform(0.2, 1.5, p.shape) * rng.choice([-1, 1], p.shape)
    return model


def decayed(model, name):
    """Whether fastnn's default grouping decays parameter `name` of a Sequential: only
    the weight matrices of Linear layers (not biases, not BatchNorm's gamma and beta)."""
    index, attr = name.split(".")
    return isinstance(model[int(index)], nn.Linear) and attr == "weight"


def default_groups(model, hyper):
    """The oracle's groups for fastnn's default grouping of `model`."""
    names = [n for n, _ in model.named_parameters()]
    values = dict(model.named_parameters())
    decay = [n for n in names if decayed(model, n)]
    rest = [n for n in names if not decayed(model, n)]
    no_decay = {**hyper, "weight_decay": 0.0} if "weight_decay" in hyper else hyper
    return [decay, rest], [([values[n] for n in decay], hyper),
                           ([values[n] for n in rest], no_decay)]


def random_grads(model, rng, scale=1.0):
    """Fresh random gradients into every parameter's .grad; {name: float64 copy}."""
    grads = {}
    for name, p in model.named_parameters():
        p.grad[...] = scale * rng.standard_normal(p.shape)
        grads[name] = np.array(p.grad, np.float64)
    return grads


def run_against_oracle(key, dtype, steps=STEPS, seed=0):
    """Run fastnn and the oracle side by side; returns (model, oracle, names per group)."""
    cls, kwargs, rule, hyper = CASES[key]
    model = make_model(dtype, seed)
    names, groups = default_groups(model, hyper)
    oracle = Reference(rule, groups)
    opt = cls(model, **kwargs)
    rng = np.random.default_rng(seed + 7)
    for _ in range(steps):
        grads = random_grads(model, rng)
        opt.step()
        oracle.step([[grads[n] for n in group] for group in names])
    return model, oracle, names


def assert_matches_oracle(model, oracle, names, rtol, atol):
    params = dict(model.named_parameters())
    for group, (values, _) in zip(names, oracle.groups):
        for name, expected in zip(group, values):
            np.testing.assert_allclose(params[name], expected, rtol=rtol, atol=atol,
                                       err_msg=name)


# ---------------------------------------------------------------- vs the oracle


@pytest.mark.parametrize("key", CASES)
def test_update_rule_float64(key):
    model, oracle, names = run_against_oracle(key, np.float64)
    assert_matches_oracle(model, oracle, names, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("key", CASES)
def test_update_rule_float32(key):
    model, oracle, names = run_against_oracle(key, np.float32)
    assert model.arena.dtype == np.float32
    assert_matches_oracle(model, oracle, names, rtol=5e-6, atol=5e-6)


@pytest.mark.parametrize("key", ["sgd_wd", "adam_wd", "adamw"])
def test_parameters_actually_move_and_only_weights_decay(key):
    """With zero gradients, only decay moves a parameter: Linear weights shrink; biases
    and BatchNorm's gamma and beta stay exactly where they are."""
    cls, kwargs, _, _ = CASES[key]
    model = make_model()
    before = {n: np.array(p) for n, p in model.named_parameters()}
    opt = cls(model, **kwargs)
    model.zero_grad()
    for _ in range(3):
        opt.step()
    for name, p in model.named_parameters():
        if decayed(model, name):
            assert np.all(np.abs(p) < np.abs(before[name])), name
        else:
            assert np.array_equal(p, before[name]), name


def test_loose_parameters():
    """Parameters that belong to no arena (one of kind "bias", not decayed by default),
    of several shapes, with both SGD momentum and Adam."""
    rng = np.random.default_rng(3)
    for key in ("sgd_momentum_wd", "adam_wd"):
        cls, kwargs, rule, hyper = CASES[key]
        shapes = [(3, 4), (5,), (2, 3, 2)]
        params = [nn.Parameter(rng.standard_normal(s), np.zeros(s)) for s in shapes]
        bias = nn.Parameter(rng.standard_normal(4), np.zeros(4), kind="bias")
        assert all(p.arena is None for p in params)
        oracle = Reference(rule, [(params, hyper), ([bias], {**hyper, "weight_decay": 0.0})])
        opt = cls([*params, bias], **kwargs)
        for _ in range(STEPS):
            for p in (*params, bias):
                p.grad[...] = rng.standard_normal(p.shape)
            opt.step()
            oracle.step([[p.grad for p in params], [bias.grad]])
        for p, expected in zip([*params, bias], [*oracle.groups[0][0], *oracle.groups[1][0]]):
            np.testing.assert_allclose(p, expected, rtol=1e-12, atol=1e-13)


def test_real_backward_passes_match_oracle():
    """Gradients from real forward/backward passes (not written by hand): SGD with
    Nesterov momentum and weight decay against the oracle, given the same gradients."""
    cls, kwargs, rule, hyper = CASES["sgd_nesterov_wd"]
    model = make_model()
    names, groups = default_groups(model, hyper)
    oracle = Reference(rule, groups)
    opt = cls(model.parameters(), **kwargs)
    loss = losses.SoftmaxCrossEntropy()
    rng = np.random.default_rng(5)
    for _ in range(STEPS):
        x, y = rng.standard_normal((16, 7)), rng.integers(0, 4, 16)
        opt.zero_grad()
        loss.forward(model.forward(x), y)
        model.backward(loss.backward())
        grads = {n: np.array(p.grad) for n, p in model.named_parameters()}
        assert all(np.any(g) for g in grads.values())
        opt.step()
        oracle.step([[grads[n] for n in group] for group in names])
    assert_matches_oracle(model, oracle, names, rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------- vs torch.optim

TORCH_CASES = {
    "sgd_momentum_wd": ("SGD", dict(lr=0.05, momentum=0.8, weight_decay=0.1)),
    "sgd_nesterov_wd": ("SGD", dict(lr=0.05, momentum=0.7, nesterov=True, weight_decay=0.1)),
    "adam_wd": ("Adam", dict(lr=0.01, weight_decay=0.2)),
    "adamw": ("AdamW", dict(lr=0.05, betas=(0.85, 0.99), weight_decay=0.5)),
    "adagrad_eps": ("Adagrad", dict(lr=0.1, eps=0.5)),
    "rmsprop_alpha_eps": ("RMSprop", dict(lr=0.01, alpha=0.8, eps=0.3)),
}


@pytest.mark.parametrize("key", TORCH_CASES)
def test_matches_torch(key):
    torch = pytest.importorskip("torch")
    cls, kwargs = CASES[key][:2]
    torch_name, torch_kwargs = TORCH_CASES[key]
    model = make_model()
    names = [n for n, _ in model.named_parameters()]
    tparams = {n: torch.tensor(np.array(p), dtype=torch.float64, requires_grad=True)
               for n, p in model.named_parameters()}
    decay = [tparams[n] for n in names if decayed(model, n)]
    rest = [tparams[n] for n in names if not decayed(model, n)]
    topt = getattr(torch.optim, torch_name)(
        [{"params": decay}, {"params": rest, "weight_decay": 0.0}], **torch_kwargs)
    opt = cls(model, **kwargs)
    rng = np.random.default_rng(11)
    for _ in range(8):
        grads = random_grads(model, rng)
        for n in names:
            tparams[n].grad = torch.from_numpy(grads[n].copy())
        opt.step()
        topt.step()
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p, tparams[name].detach().numpy(), rtol=1e-12, atol=1e-13,
                                   err_msg=name)


# ---------------------------------------------------------------- param groups


def test_param_groups_with_own_hyperparameters():
    """Groups given by the user keep their own lr and weight_decay (weight decay then
    applies to every parameter of the group, BatchNorm's too), and split one arena."""
    model = make_model()
    p = dict(model.named_parameters())
    first = ["0.weight", "0.bias"]
    second = ["1.weight", "1.bias", "3.weight", "3.bias"]
    opt = optim.SGD([{"params": [p[n] for n in first], "lr": 0.1},
                     {"params": [p[n] for n in second], "weight_decay": 0.3, "momentum": 0.5}],
                    lr=0.02, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.02]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.3]
    assert [g["momentum"] for g in opt.param_groups] == [0.9, 0.5]
    oracle = Reference(ref_sgd, [([p[n] for n in first], dict(lr=0.1, momentum=0.9)),
                                 ([p[n] for n in second],
                                  dict(lr=0.02, momentum=0.5, weight_decay=0.3))])
    rng = np.random.default_rng(2)
    for _ in range(STEPS):
        grads = random_grads(model, rng)
        opt.step()
        oracle.step([[grads[n] for n in first], [grads[n] for n in second]])
    assert_matches_oracle(model, oracle, [first, second], rtol=1e-12, atol=1e-13)


def test_param_groups_adam_with_partial_coverage():
    """Groups covering only part of a model: the rest is never touched."""
    model = make_model()
    p = dict(model.named_parameters())
    untouched = {n: np.array(p[n]) for n in ("1.weight", "1.bias")}
    first, second = ["3.weight", "0.weight"], ["3.bias"]
    opt = optim.Adam([{"params": [p[n] for n in first], "lr": 0.03, "weight_decay": 0.1},
                      {"params": [p[n] for n in second], "betas": (0.5, 0.9)}], lr=0.01)
    oracle = Reference(ref_adam_l2, [
        ([p[n] for n in first], dict(lr=0.03, weight_decay=0.1)),
        ([p[n] for n in second], dict(lr=0.01, betas=(0.5, 0.9)))])
    rng = np.random.default_rng(4)
    for _ in range(STEPS):
        grads = random_grads(model, rng)
        opt.step()
        oracle.step([[grads[n] for n in first], [grads[n] for n in second]])
    assert_matches_oracle(model, oracle, [first, second], rtol=1e-12, atol=1e-13)
    for n, before in untouched.items():
        assert np.array_equal(p[n], before)


@pytest.mark.parametrize("group", [
    {"betas": (0.9, 0.99)},        # not an SGD hyperparameter
    {"learning_rate": 0.1},
    {"lr": 0.1, "nesterov_momentum": 0.9},
])
def test_param_group_unknown_key(group):
    model = make_model()
    with pytest.raises(ValueError, match="unknown"):
        optim.SGD([{"params": list(model.parameters()), **group}], lr=0.1)


def test_param_group_problems():
    ps = list(make_model().parameters())
    with pytest.raises(ValueError):
        optim.SGD([{"lr": 0.1}], lr=0.1)                  # no "params"
    with pytest.raises(ValueError):
        optim.SGD([{"params": ps, "lr": -0.1}], lr=0.1)   # bad lr in a group
    with pytest.raises(ValueError):
        optim.Adam([{"params": ps, "betas": (0.9, 1.0)}])
    with pytest.raises(ValueError):
        optim.RMSProp([{"params": ps, "alpha": 1.5}], lr=0.1)
    with pytest.raises(ValueError):
        optim.Adagrad([{"params": ps, "eps": 0.0}], lr=0.1)


def test_parameter_in_two_groups_is_rejected():
    """As torch.optim: a parameter in two groups would be updated twice per step."""
    ps = list(make_model().parameters())
    with pytest.raises(ValueError):
        optim.SGD([{"params": ps[:2]}, {"params": ps[1:]}], lr=0.1)


def test_parameter_listed_twice_is_rejected_or_updated_once():
    """A parameter listed twice must not be updated twice per step."""
    p = nn.Parameter(np.ones(3), np.ones(3))
    try:
        opt = optim.SGD([p, p], lr=0.1)
    except ValueError:
        return
    opt.step()
    np.testing.assert_array_equal(p, np.full(3, 0.9))


def test_spans_one_per_group():
    model = make_model()
    arena = model.arena
    n_weights = sum(p.size for n, p in model.named_parameters() if decayed(model, n))

    opt = optim.Adam(model)                               # no decay: one group, one span
    assert len(opt.param_groups) == 1
    assert len(opt.param_groups[0]["spans"]) == 1
    values, grads = opt.param_groups[0]["spans"][0]
    assert values.size == arena.size
    assert np.shares_memory(values, arena.data) and np.shares_memory(grads, arena.grad)

    for opt in (optim.SGD(model, lr=0.1, weight_decay=0.1), optim.AdamW(model)):
        assert len(opt.param_groups) == 2
        assert [len(g["spans"]) for g in opt.param_groups] == [1, 1]
        assert [g["weight_decay"] for g in opt.param_groups][1] == 0.0
        sizes = [g["spans"][0][0].size for g in opt.param_groups]
        assert sizes == [n_weights, arena.size - n_weights]

    # Groups that split the arena: the two weight matrices are adjacent (weights first).
    p = dict(model.named_parameters())
    opt = optim.SGD([{"params": [p["3.weight"], p["0.weight"]]},
                     {"params": [p["0.bias"], p["1.weight"], p["1.bias"], p["3.bias"]]}], lr=0.1)
    assert [len(g["spans"]) for g in opt.param_groups] == [1, 1]
    # A group of two non-adjacent parameters needs two spans, no more.
    opt = optim.SGD([p["0.weight"], p["0.bias"]], lr=0.1)
    assert len(opt.param_groups[0]["spans"]) == 2


def test_two_models_in_one_optimizer():
    """Parameters of two arenas (and dtype per model) each get their span and update."""
    a, b = make_model(seed=0), make_model(seed=10)
    cls, kwargs, rule, hyper = CASES["sgd_momentum"]
    params = [*a.parameters(), *b.parameters()]
    oracle = Reference(rule, [(params, hyper)])
    opt = cls(params, **kwargs)
    assert len(opt.param_groups[0]["spans"]) == 2
    rng = np.random.default_rng(0)
    for _ in range(5):
        grads = [*random_grads(a, rng).values(), *random_grads(b, rng).values()]
        opt.step()
        oracle.step([grads])
    for p, expected in zip(params, oracle.groups[0][0]):
        np.testing.assert_allclose(p, expected, rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------- state_dict


def grad_sequence(model, n, seed=21):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(p.shape) for p in model.parameters()] for _ in range(n)]


def run_steps(model, opt, grads):
    for step in grads:
        for p, g in zip(model.parameters(), step):
            p.grad[...] = g
        opt.step()


@pytest.mark.parametrize("key", CASES)
def test_state_dict_resume_is_bitwise(key):
    cls, kwargs, _, _ = CASES[key]
    model = make_model()
    grads = grad_sequence(model, 20)

    straight = make_model()
    run_steps(straight, cls(straight, **kwargs), grads)

    first = make_model()
    opt = cls(first, **kwargs)
    run_steps(first, opt, grads[:10])
    saved_opt, saved_model = opt.state_dict(), first.state_dict()
    # Going on with the original must not change what was saved.
    run_steps(first, opt, grads[10:])
    assert np.array_equal(first.arena.data, straight.arena.data)

    resumed = make_model(seed=99)            # other starting values: the load must set them
    opt2 = cls(resumed, **kwargs)
    resumed.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    run_steps(resumed, opt2, grads[10:])
    assert np.array_equal(resumed.arena.data, straight.arena.data)


def test_state_dict_resume_restores_group_hyperparameters():
    """An lr changed during training (e.g. by a schedule) comes back with the state."""
    model = make_model()
    grads = grad_sequence(model, 6)
    straight = make_model()
    opt = optim.Adam(straight, lr=0.01)
    run_steps(straight, opt, grads[:3])
    opt.param_groups[0]["lr"] = 0.002
    run_steps(straight, opt, grads[3:])

    first = make_model()
    opt = optim.Adam(first, lr=0.01)
    run_steps(first, opt, grads[:3])
    opt.param_groups[0]["lr"] = 0.002
    saved = opt.state_dict()
    resumed = make_model()
    resumed.load_state_dict(first.state_dict())
    opt2 = optim.Adam(resumed, lr=0.01)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == 0.002
    run_steps(resumed, opt2, grads[3:])
    assert np.array_equal(resumed.arena.data, straight.arena.data)


def test_load_state_dict_mismatch():
    model = make_model()
    grads = grad_sequence(model, 2)

    two_groups = optim.SGD(model, lr=0.1, momentum=0.9, weight_decay=0.1)
    run_steps(model, two_groups, grads)
    with pytest.raises(ValueError):
        optim.SGD(model, lr=0.1, momentum=0.9).load_state_dict(two_groups.state_dict())

    adam = optim.Adam(model, lr=0.01)
    run_steps(model, adam, grads)
    other = make_model()
    small = nn.Sequential(nn.Linear(3, 2, dtype=np.float64))
    with pytest.raises(ValueError):                    # other shapes
        optim.Adam(small, lr=0.01).load_state_dict(adam.state_dict())
    sgd = optim.SGD(model, lr=0.1, momentum=0.9)
    run_steps(model, sgd, grads)
    with pytest.raises(ValueError):                    # SGD's velocity is not Adam's m, v
        optim.Adam(other, lr=0.01).load_state_dict(sgd.state_dict())
    broken = adam.state_dict()
    del broken["state"][0]["v"]
    target = optim.Adam(other, lr=0.01)
    with pytest.raises(ValueError):
        target.load_state_dict(broken)
    assert target.step_count == 0                      # a failed load changes nothing
    broken = adam.state_dict()
    broken["state"] = broken["state"] * 2              # state for other spans
    with pytest.raises(ValueError):
        target.load_state_dict(broken)
    assert target.step_count == 0


def test_state_dict_contents():
    model = make_model()
    opt = optim.Adam(model, lr=0.01)
    sd = opt.state_dict()
    assert sd["step_count"] == 0
    run_steps(model, opt, grad_sequence(model, 3))
    sd = opt.state_dict()
    assert sd["step_count"] == 3
    assert sd["param_groups"][0]["lr"] == 0.01
    m = sd["state"][0]["m"]
    assert m.size == model.arena.size and np.any(m)
    m[...] = 0                                          # a copy, not the live state
    assert np.any(opt.state_dict()["state"][0]["m"])


# ---------------------------------------------------------------- validation

BAD_HYPER = [
    (optim.SGD, dict(lr=-0.1)),
    (optim.SGD, dict(lr=float("nan"))),
    (optim.SGD, dict(lr=float("inf"))),
    (optim.SGD, dict(lr=0.1, momentum=-0.5)),
    (optim.SGD, dict(lr=0.1, weight_decay=-1.0)),
    (optim.SGD, dict(lr=0.1, nesterov=True)),
    (optim.SGD, dict(lr=0.1, momentum=0.0, nesterov=True)),
    (optim.Adagrad, dict(lr=-1.0)),
    (optim.Adagrad, dict(lr=0.1, eps=0.0)),
    (optim.Adagrad, dict(lr=0.1, eps=-1e-10)),
    (optim.RMSProp, dict(lr=0.1, eps=0.0)),
    (optim.RMSProp, dict(lr=0.1, alpha=1.0)),
    (optim.RMSProp, dict(lr=0.1, alpha=-0.1)),
    (optim.RMSProp, dict(lr=0.1, alpha=float("nan"))),
    (optim.Adam, dict(lr=-1e-3)),
    (optim.Adam, dict(eps=0.0)),
    (optim.Adam, dict(eps=-1e-8)),
    (optim.Adam, dict(betas=(1.0, 0.999))),
    (optim.Adam, dict(betas=(0.9, 1.0))),
    (optim.Adam, dict(betas=(-0.1, 0.9))),
    (optim.Adam, dict(betas=(0.9,))),
    (optim.Adam, dict(betas=(0.9, 0.99, 0.9))),
    (optim.Adam, dict(betas=(0.9, float("nan")))),
    (optim.Adam, dict(betas=0.9)),
    (optim.Adam, dict(weight_decay=-0.1)),
    (optim.AdamW, dict(betas=(1.5, 0.9))),
    (optim.AdamW, dict(weight_decay=-0.01)),
    (optim.AdamW, dict(lr=-0.01)),
]


@pytest.mark.parametrize(("cls", "kwargs"), BAD_HYPER,
                         ids=[f"{c.__name__}-{k}" for c, k in BAD_HYPER])
def test_bad_hyperparameters(cls, kwargs):
    with pytest.raises(ValueError):
        cls(make_model(), **kwargs)


def test_zero_lr_and_zero_betas_are_allowed():
    model = make_model()
    before = np.array(model.arena.data)
    opt = optim.Adam(model, lr=0.0, betas=(0.0, 0.0))
    random_grads(model, np.random.default_rng(0))
    opt.step()
    assert np.array_equal(model.arena.data, before)


def bad_params():
    good = np.zeros((4, 4))
    strided = nn.Parameter(good[:, ::2], np.zeros((4, 2)))
    grad_strided = nn.Parameter(np.zeros((4, 2)), np.zeros((4, 4))[:, ::2])
    readonly = np.zeros(3)
    readonly.flags.writeable = False
    return {
        "empty list": [],
        "empty iterator": iter([]),
        "module without parameters": nn.ReLU(),
        "array without grad": [np.zeros(3)],
        "grad None": [nn.Parameter(np.zeros(3), None)],
        "grad of another shape": [nn.Parameter(np.zeros(3), np.zeros(4))],
        "grad of another dtype": [nn.Parameter(np.zeros(3), np.zeros(3, np.float32))],
        "non-contiguous parameter": [strided],
        "non-contiguous gradient": [grad_strided],
        "read-only parameter": [nn.Parameter(readonly, np.zeros(3))],
        "integer parameter": [nn.Parameter(np.zeros(3, np.int64), np.zeros(3, np.int64))],
        "one array": np.zeros(3),
        "not an array": [[1.0, 2.0]],
    }


@pytest.mark.parametrize("case", list(bad_params()))
@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam])
def test_bad_params(case, cls):
    with pytest.raises((ValueError, TypeError)):
        cls(bad_params()[case], lr=0.1)


# ---------------------------------------------------------------- zero_grad, non-finite


def test_zero_grad():
    model = make_model()
    loose = nn.Parameter(np.ones(5), np.ones(5))
    opt = optim.SGD([*model.parameters(), loose], lr=0.1, momentum=0.9)
    random_grads(model, np.random.default_rng(0))
    assert np.all(model.arena.grad != 0)
    opt.zero_grad()
    assert not np.any(model.arena.grad)
    assert not np.any(loose.grad)
    for p in model.parameters():
        assert not np.any(p.grad)


@pytest.mark.parametrize("key", ["sgd", "sgd_momentum_wd", "adagrad", "rmsprop", "adam"])
def test_nan_gradient_is_not_checked_by_step(key):
    """step() does not look for NaN (clip_grad_norm is the guard, see test_clip.py): a NaN
    gradient turns exactly its own parameter entry into NaN; the others update as usual."""
    cls, kwargs, rule, hyper = CASES[key]
    rng = np.random.default_rng(0)
    p = nn.Parameter(rng.standard_normal(10), np.zeros(10))
    oracle = Reference(rule, [([p], hyper)])
    opt = cls([p], **kwargs)
    for t in range(3):
        p.grad[...] = rng.standard_normal(10)
        if t == 1:
            p.grad[4] = np.nan
        opt.step()
        with np.errstate(invalid="ignore"):
            oracle.step([[p.grad]])
    assert np.isnan(p[4])
    finite = np.arange(10) != 4
    np.testing.assert_allclose(p[finite], oracle.groups[0][0][0][finite], rtol=1e-12)


# ---------------------------------------------------------------- threads


@pytest.fixture(scope="module")
def large_start():
    """Starting values and three steps of gradients of a > 1e6-parameter float32 model."""
    model = nn.Sequential(nn.Linear(1024, 1024, seed=0), nn.Linear(1024, 512, seed=1))
    assert model.arena.size > 1_000_000
    rng = np.random.default_rng(8)
    grads = [rng.standard_normal(model.arena.size).astype(np.float32) for _ in range(3)]
    return model, np.array(model.arena.data), grads


@pytest.mark.parametrize("key", ONE_PER_RULE)
def test_bitwise_same_for_1_and_2_threads(key, large_start):
    if not fastnn.openmp_enabled():
        pytest.skip("built without OpenMP")
    cls, kwargs = ONE_PER_RULE[key]
    model, start, grads = large_start
    results = []
    for n in (1, 2):
        model.arena.data[...] = start
        with fastnn.threads(n):
            opt = cls(model, **kwargs)
            for g in grads:
                model.arena.grad[...] = g
                opt.step()
        state = opt.state_dict()["state"] or []
        results.append([np.array(model.arena.data)]
                       + [a for s in state for _, a in sorted(s.items())])
    one, two = results
    assert not np.array_equal(one[0], start)
    assert len(one) == len(two)
    for a, b in zip(one, two):
        assert a.tobytes() == b.tobytes(), f"{np.count_nonzero(a != b)} elements differ"


# ---------------------------------------------------------------- end to end


def test_adam_trains_a_classifier():
    rng = np.random.default_rng(0)
    n, d, k = 600, 20, 3
    centers = rng.standard_normal((k, d)) * 1.5
    y = rng.integers(0, k, n)
    x = (centers[y] + rng.standard_normal((n, d))).astype(np.float32)
    model = nn.Sequential(nn.Linear(d, 32, seed=1), nn.ReLU(), nn.Linear(32, k, seed=2))
    loss = losses.SoftmaxCrossEntropy()
    opt = optim.Adam(model, lr=0.01)
    first = loss.forward(model.forward(x), y)
    for _ in range(300):
        batch = rng.integers(0, n, 64)
        opt.zero_grad()
        loss.forward(model.forward(x[batch]), y[batch])
        model.backward(loss.backward())
        opt.step()
    final = loss.forward(model.forward(x), y)
    accuracy = np.mean(np.argmax(model.forward(x), axis=1) == y)
    assert math.isfinite(final)
    assert final < 0.1 < first
    assert accuracy > 0.97
