"""What an ensemble gains over its members on MNIST.

    python bench/bench_ensemble.py [--data DIR] [--members 5] [--epochs 3] [--n-jobs 1]

Trains `members` MLPs (784-256-256-10, BatchNorm, ReLU, Dropout 0.1, Adam, cosine
decay) that differ only in their seed, averages their predicted probabilities as the
lecture describes (fastnn.Ensemble), and prints each member's test accuracy, their
mean and the ensemble's, with the training time. MNIST comes from --data or
$FASTNN_MNIST_DIR (default ../shared/data/mnist beside the checkout).
"""

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

try:
    import fastnn
except ImportError:  # a checkout that is not installed: the package is beside bench/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import fastnn

from fastnn import datasets, losses, nn, optim


def member(seed, epochs):
    """One ensemble member: a Trainer whose model and masks depend on `seed` only."""
    model = nn.mlp(784, 10, [256, 256], batch_norm=True, dropout=0.1, seed=seed)
    opt = optim.Adam(model, 1e-3)
    return fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), opt,
                          schedule=optim.CosineDecay(opt, epochs), progress=False)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = os.environ.get("FASTNN_MNIST_DIR") or str(
        Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist")
    p.add_argument("--data", default=default)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--n-jobs", type=int, default=1)
    args = p.parse_args(argv)

    (xtr, ytr), (xte, yte) = datasets.load_mnist(args.data)
    xtr = xtr.reshape(len(xtr), -1).astype(np.float32) / 255
    xte = xte.reshape(len(xte), -1).astype(np.float32) / 255
    print(f"fastnn {fastnn.__version__}, {fastnn.get_num_threads()} threads: "
          f"{args.members} members x {args.epochs} epochs on MNIST")
    start = time.perf_counter()
    ensemble = fastnn.Ensemble(partial(member, epochs=args.epochs), args.members,
                               n_jobs=args.n_jobs)
    ensemble.fit(xtr, ytr, epochs=args.epochs, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    accuracies = [float((t.predict(xte) == yte).mean()) for t in ensemble.members]
    together = float((ensemble.predict(xte) == yte).mean())
    for seed, acc in zip(ensemble.seeds, accuracies):
        print(f"  member seed {seed:>12}: test accuracy {acc:.4f}")
    mean = float(np.mean(accuracies))
    print(f"members: mean {mean:.4f}, best {max(accuracies):.4f}")
    print(f"ensemble: {together:.4f} ({100 * (together - mean):+.2f} points over the mean "
          f"member, {100 * (together - max(accuracies)):+.2f} over the best); "
          f"training {seconds:.1f} s")


if __name__ == "__main__":
    main()
