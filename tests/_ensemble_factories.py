"""Trainer factories for tests/test_ensemble.py, in a module of their own: Ensemble's
worker processes (started with "spawn") import a factory by module and name."""

import fastnn
from fastnn import losses, nn, optim
from fastnn.nn import mlp

N_FEATURES = 20
N_CLASSES = 5


def small_classifier(seed):
    """A 20-32-5 ReLU MLP with dropout, Adam; silent."""
    model = mlp(N_FEATURES, N_CLASSES, [32], dropout=0.1, seed=seed)
    return fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.Adam(model, 1e-2),
                          progress=False)


def regressor(seed):
    """Not a classifier: an ensemble refuses it."""
    model = mlp(N_FEATURES, 1, [4], seed=seed)
    return fastnn.Trainer(model, losses.MSE(), optim.SGD(model, 0.1), progress=False)


IMAGE_SHAPE = (2, 6, 6)


def small_cnn(seed):
    """Conv-BatchNorm-ReLU-MaxPool-Flatten-Linear on (N, 2, 6, 6) images, 3 classes."""
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, seed=seed), nn.BatchNorm2d(4),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 3 * 3, 3, seed=seed + 1))
    return fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.Adam(model, 1e-2),
                          progress=False)


def wide_classifier(seed):
    """A 20-1024-256-5 ReLU MLP, Adam; silent (its long sums, which two BLAS libraries
    block and round differently, in products that each backend computes itself)."""
    model = mlp(N_FEATURES, N_CLASSES, [1024, 256], seed=seed)
    return fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.Adam(model, 1e-3),
                          progress=False)
