"""Data, models and trainers shared by tests/test_distributed.py and the MPI worker
script it launches (tests/mpi/worker.py): both sides must build exactly the same."""

import numpy as np

import fastnn
from fastnn import losses, nn, optim

N_FEATURES, N_CLASSES = 6, 3
# 193 = 6 * 32 + 1: the lone last sample joins the batch before it, which then has 33
# rows, shared unevenly (17 + 16) by two ranks.
N_SAMPLES, BATCH = 193, 32
FIT = {"epochs": 2, "batch_size": BATCH, "seed": 7}


def data(n=N_SAMPLES, seed=0):
    """Gaussian blobs: X (n, N_FEATURES) float64, y (n,) labels."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((N_CLASSES, N_FEATURES)) * 2
    y = rng.integers(0, N_CLASSES, n)
    X = centers[y] + rng.standard_normal((n, N_FEATURES))
    return X, y


def plain_model(seed=1):
    """No BatchNorm, no Dropout: 2 ranks must give the single-process weights."""
    f64 = np.float64
    return nn.Sequential(nn.Linear(N_FEATURES, 16, seed=seed, dtype=f64), nn.Tanh(),
                         nn.Linear(16, 16, seed=seed + 1, dtype=f64), nn.ReLU(),
                         nn.Linear(16, N_CLASSES, seed=seed + 2, dtype=f64))


def bn_model(kind, seed=1):
    """kind: nn.BatchNorm1d or nn.SyncBatchNorm, after the first layer."""
    f64 = np.float64
    return nn.Sequential(nn.Linear(N_FEATURES, 16, seed=seed, dtype=f64),
                         kind(16, dtype=f64), nn.ReLU(),
                         nn.Linear(16, N_CLASSES, seed=seed + 1, dtype=f64))


IMAGE_SHAPE = (2, 6, 6)


def image_data(n=N_SAMPLES, seed=0):
    """Images X (n, 2, 6, 6) float64 of noise with a bright row whose channel and place
    say the class; y (n,) labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    X = rng.standard_normal((n, *IMAGE_SHAPE))
    X[np.arange(n), y % 2, 2 * y, :] += 2.0
    return X, y


def cnn_model(batch_norm=False, seed=1):
    """Conv-[BatchNorm2d]-Tanh-MaxPool-Conv-ReLU-Flatten-Linear on IMAGE_SHAPE images;
    without BatchNorm, 2 ranks must give the single-process weights."""
    f64 = np.float64
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, seed=seed, dtype=f64),
        *([nn.BatchNorm2d(4, dtype=f64)] if batch_norm else []), nn.Tanh(),
        nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1, seed=seed + 1, dtype=f64), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 3 * 3, N_CLASSES, seed=seed + 2, dtype=f64))


def trainer(model, comm=None, **kwargs):
    """Adam with an L2 penalty and gradient clipping: every part of the step that must
    act on the global batch's gradient."""
    opt = optim.Adam(model, 1e-2)
    return fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), opt, regularizer=losses.L2(1e-3),
                          clip_norm=1.0, progress=False, comm=comm,
                          schedule=optim.StepDecay(opt, 1, 0.5), **kwargs)


def member(seed):
    """An Ensemble member (module level: found by name)."""
    model = nn.mlp(N_FEATURES, N_CLASSES, [8], seed=seed)
    return fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.Adam(model, 1e-2),
                          progress=False)
