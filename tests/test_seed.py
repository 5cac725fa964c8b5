"""fastnn.manual_seed: one seed makes building and training a model reproducible; an
explicit seed= always wins."""

import numpy as np
import pytest

import fastnn
from fastnn import _seed, augment, losses, nn, optim


@pytest.fixture(autouse=True)
def fresh_stream(monkeypatch):
    """Each test starts without manual_seed, and leaves none behind for other tests."""
    monkeypatch.setattr(_seed, "_stream", [None])


def images(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, n)


def build_and_train(seed):
    """A CNN with Dropout and augmentation, none of them given a seed, trained without
    fit(seed=): every random choice comes from manual_seed(seed)."""
    fastnn.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Dropout(0.3), nn.Linear(64, 3))
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model, 0.1),
                             augment=augment.Compose([augment.RandomTranslate(1)]),
                             progress=False)
    X, y = images()
    trainer.fit(X, y, epochs=2, batch_size=8)
    return model.state_dict()


def test_two_runs_after_the_same_seed_train_bitwise_identical_weights():
    a, b = build_and_train(7), build_and_train(7)
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_different_seeds_give_different_weights():
    a, b = build_and_train(7), build_and_train(8)
    assert not np.array_equal(a["0.weight"], b["0.weight"])
    assert not np.array_equal(a["4.seed"], b["4.seed"])


def test_every_seedless_consumer_draws_from_the_stream():
    def draws():
        fastnn.manual_seed(3)
        lin = nn.Linear(5, 4)
        conv = nn.Conv2d(2, 3, 3)
        drop = nn.Dropout(0.5)
        aug = augment.Compose([augment.HorizontalFlip(0.5)])
        trainer = fastnn.Trainer(lin, losses.MSE(), progress=False)
        return (np.array(lin.weight), np.array(conv.weight), int(drop.seed), aug.seed,
                trainer.rng.integers(2**62))

    first, second = draws(), draws()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    # consumers built one after another take different seeds
    assert int(first[2]) != first[3]


def test_the_stream_follows_the_build_order_as_torch_does():
    fastnn.manual_seed(0)
    a1, a2 = nn.Linear(3, 3), nn.Linear(3, 3)
    fastnn.manual_seed(0)
    b1 = nn.Linear(3, 3)
    np.testing.assert_array_equal(a1.weight, b1.weight)
    assert not np.array_equal(a1.weight, a2.weight)  # the second layer: the next seed


def test_an_explicit_seed_wins_and_takes_nothing_from_the_stream():
    fastnn.manual_seed(0)
    explicit = nn.Linear(4, 4, seed=5)
    after = nn.Linear(4, 4)
    np.testing.assert_array_equal(explicit.weight, nn.Linear(4, 4, seed=5).weight)
    fastnn.manual_seed(0)
    np.testing.assert_array_equal(after.weight, nn.Linear(4, 4).weight)
    fastnn.manual_seed(0)
    assert int(nn.Dropout(0.5, seed=11).seed) == 11
    assert augment.Compose([augment.HorizontalFlip(0.5)], seed=12).seed == 12


def test_fit_seed_wins_over_the_trainers_stream_seed():
    X = np.random.default_rng(0).random((20, 4)).astype(np.float32)
    y = np.arange(20) % 3

    def run(manual, fit_seed):
        fastnn.manual_seed(manual)
        model = nn.Sequential(nn.Linear(4, 3, seed=1))
        trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(),
                                 optim.SGD(model, 0.1), progress=False)
        trainer.fit(X, y, epochs=2, batch_size=4, seed=fit_seed)
        return np.array(model[0].weight)

    np.testing.assert_array_equal(run(1, 9), run(2, 9))  # the order comes from seed=9
    assert not np.array_equal(run(1, None), run(2, None))  # from each manual seed


def test_without_manual_seed_layers_differ():
    assert not np.array_equal(nn.Linear(6, 6).weight, nn.Linear(6, 6).weight)
    assert int(nn.Dropout(0.5).seed) != int(nn.Dropout(0.5).seed)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0", None])
def test_manual_seed_takes_an_int_at_least_zero(seed):
    with pytest.raises((TypeError, ValueError), match="seed"):
        fastnn.manual_seed(seed)
