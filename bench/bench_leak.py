"""Leak check: run many training steps and print resident memory (RSS) as they go.

    python bench/bench_leak.py [--steps 10000] [--every 1000] [--warmup 2000]
                               [--batch 128] [--data DIR] [--augment-every 5] [--threads N]

The model is the README's default (784-512-512-10 with BatchNorm, ReLU and dropout)
under Adam with weight decay, an L2 penalty and gradient clipping, on MNIST batches
(the real data when --data or FASTNN_MNIST_DIR points at the IDX files, else random
images of the same shape); every `--augment-every`-th batch is augmented (rotation +
elastic distortion, fused in one warp; 0: never). Every `--every` steps it prints the
step, RSS, the change since the end of the warm-up, the number of live Python objects,
and the loss. At the end: RSS
growth after warm-up in total and per 1,000 steps, measured from the first report
after `--warmup` steps. A run that does not leak shows a flat RSS after the warm-up
(allocator noise of well under a MiB); the script exits with status 1 when the growth
exceeds --limit-mib (default 8).

Also exercised at every report: the evaluation path (an eval-mode forward of 256
rows) and a checkpoint save + load in a temporary folder.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    import fastnn
except ImportError:  # run from a checkout that is not installed: the package is beside bench/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import fastnn
from fastnn import augment, datasets, losses, nn, optim


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def load_data(folder, n=10000):
    folder = folder or os.environ.get("FASTNN_MNIST_DIR")
    if folder and Path(folder, "train-images-idx3-ubyte.gz").exists():
        (X, y), _ = datasets.load_mnist(folder)
        return X[:n].reshape(-1, 784).astype(np.float32) / np.float32(255), y[:n], "MNIST"
    rng = np.random.default_rng(0)
    return (rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n),
            "random 28x28 images")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--every", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=2000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--data", default=None)
    p.add_argument("--augment-every", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--limit-mib", type=float, default=8.0)
    args = p.parse_args(argv)
    if args.threads:
        fastnn.set_num_threads(args.threads)

    X, y, source = load_data(args.data)
    model = nn.Sequential(nn.Linear(784, 512, seed=0), nn.BatchNorm1d(512), nn.ReLU(),
                          nn.Dropout(0.1, seed=1), nn.Linear(512, 512, seed=2),
                          nn.BatchNorm1d(512), nn.ReLU(), nn.Dropout(0.1, seed=3),
                          nn.Linear(512, 10, seed=4))
    opt = optim.Adam(model, 1e-3, weight_decay=1e-4)
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), opt,
                             regularizer=losses.L2(1e-5), clip_norm=5.0, progress=False)
    aug = None if args.augment_every <= 0 else augment.Compose(
        [augment.RandomRotation(10), augment.ElasticDistortion(8, 3)], seed=0)
    rng = np.random.default_rng(0)
    buf = np.empty((args.batch, 784), np.float32)
    folder = tempfile.mkdtemp(prefix="fastnn-leak-")
    ckpt = os.path.join(folder, "ckpt.safetensors")

    print(f"fastnn {fastnn.__version__} from {Path(fastnn.__file__).parent}")
    print(f"{args.steps} steps, batch {args.batch}, data: {source}, augmentation: "
          f"{'off' if aug is None else f'rotation + elastic every {args.augment_every}'}, "
          f"threads "
          f"{fastnn.get_num_threads()}")
    print(f"{'step':>7} {'RSS MiB':>9} {'since warm-up':>14} {'objects':>9} {'loss':>8}")
    base = None
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, len(X), args.batch)
        np.take(X, idx, axis=0, out=buf)
        xb = buf
        if aug is not None and step % args.augment_every == 0:
            xb = aug(buf.reshape(-1, 28, 28)).reshape(args.batch, -1)
        loss = trainer.train_step(xb, y[idx])
        if step % args.every == 0 or step == args.steps:
            model.eval()
            model.forward(X[:256])
            model.train()
            trainer.save_checkpoint(ckpt)
            trainer.load_checkpoint(ckpt)
            gc.collect()
            rss = rss_mib()
            if base is None and step >= args.warmup:
                base, base_step = rss, step
            since = "" if base is None else f"{rss - base:+.2f}"
            print(f"{step:>7} {rss:>9.1f} {since:>14} {len(gc.get_objects()):>9} {loss:>8.4f}",
                  flush=True)
    seconds = time.perf_counter() - start
    if base is None:
        base, base_step = rss_mib(), args.steps
    growth = rss_mib() - base
    after = args.steps - base_step
    print(f"RSS growth after warm-up: {growth:+.2f} MiB over {after} steps "
          f"({1000 * growth / max(after, 1):+.3f} MiB per 1,000 steps); "
          f"{seconds:.1f} s, {1000 * seconds / args.steps:.2f} ms/step")
    return 0 if growth <= args.limit_mib else 1


if __name__ == "__main__":
    sys.exit(main())
