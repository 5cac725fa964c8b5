"""The command line: `python -m fastnn demo` trains a small MLP on real digits.

The demo uses MNIST when its folder is given (--data, or FASTNN_MNIST_DIR), else the
8x8 digits that ship with scikit-learn. Every matrix product, bias + ReLU epilogue and
their gradients run in fastnn's kernels (`fastnn.ops`).
"""

import argparse
import sys
import time

import numpy as np

import fastnn
from fastnn import datasets, ops


def _load(data, limit, seed):
    """(x_train, y_train, x_test, y_test, name), images flattened to float32 in [0, 1]."""
    folder = datasets.find_mnist(data)
    if folder is not None:
        (xtr, ytr), (xte, yte) = datasets.load_mnist(folder)
        xtr = xtr.reshape(len(xtr), -1).astype(np.float32) / 255
        xte = xte.reshape(len(xte), -1).astype(np.float32) / 255
        name = f"MNIST from {folder}"
    else:
        x, y = datasets.load_digits()
        order = np.random.default_rng(seed).permutation(len(x))
        x = (x[order] / 16).astype(np.float32)
        y = y[order]
        cut = int(0.8 * len(x))
        xtr, ytr, xte, yte = x[:cut], y[:cut], x[cut:], y[cut:]
        name = "scikit-learn's 8x8 digits (no MNIST folder given)"
    if limit:
        xtr, ytr = xtr[:limit], ytr[:limit]
    return xtr, ytr.astype(np.intp), xte, yte.astype(np.intp), name


class MLP:
    """Linear -> ReLU -> ... -> Linear, forward and backward on fastnn.ops."""

    def __init__(self, sizes, seed):
        rng = np.random.default_rng(seed)
        self.weights = [
            (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32)
            for n_in, n_out in zip(sizes[:-1], sizes[1:])
        ]
        self.biases = [np.zeros(n_out, np.float32) for n_out in sizes[1:]]

    def forward(self, x):
        self.inputs = [x]
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = ops.matmul(x, w)
            x = ops.bias_activation(h, b, None if i == last else "relu", out=h)
            self.inputs.append(x)
        return x

    def backward(self, dout):
        grads = []
        for i in reversed(range(len(self.weights))):
            activation = None if i == len(self.weights) - 1 else "relu"
            dout, db = ops.activation_bias_backward(dout, self.inputs[i + 1], activation,
                                                    out=dout)
            grads.append((ops.matmul(self.inputs[i], dout, trans_a=True), db))
            if i:
                dout = ops.matmul(dout, self.weights[i], trans_b=True)
        return grads[::-1]


def _softmax_cross_entropy(logits, y):
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    p = exp / exp.sum(axis=1, keepdims=True)
    n = len(y)
    loss = -np.log(p[np.arange(n), y] + 1e-12).mean()
    p[np.arange(n), y] -= 1
    return float(loss), p / n


def _accuracy(model, x, y, batch=2048):
    hits = sum(int((model.forward(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
               for i in range(0, len(x), batch))
    return hits / len(x)


def demo(args):
    xtr, ytr, xte, yte, name = _load(args.data, args.limit, args.seed)
    hidden = [256, 128] if xtr.shape[1] > 100 else [128, 64]
    model = MLP([xtr.shape[1], *hidden, 10], args.seed)
    velocity = [np.zeros_like(p) for p in model.weights + model.biases]
    rng = np.random.default_rng(args.seed)
    print(f"fastnn {fastnn.__version__}: MLP {[xtr.shape[1], *hidden, 10]} on {name}")
    print(f"  {len(xtr)} training / {len(xte)} test samples, {fastnn.get_num_threads()} threads,"
          f" SGD + Nesterov momentum, lr {args.lr}, batch {args.batch_size}")
    tty = sys.stdout.isatty()
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        order = rng.permutation(len(xtr))
        total, steps = 0.0, 0
        n_batches = (len(xtr) + args.batch_size - 1) // args.batch_size
        for step, lo in enumerate(range(0, len(xtr), args.batch_size), 1):
            idx = order[lo:lo + args.batch_size]
            loss, dlogits = _softmax_cross_entropy(model.forward(xtr[idx]), ytr[idx])
            grads = model.backward(dlogits.astype(np.float32))
            params = model.weights + model.biases
            flat = [g for g, _ in grads] + [b for _, b in grads]
            for p, g, v in zip(params, flat, velocity):
                v *= 0.9
                v += g
                p -= args.lr * (g + 0.9 * v)
            total += loss
            steps += 1
            if tty and step % 20 == 0:
                bar = "#" * (30 * step // n_batches)
                print(f"\r  epoch {epoch}/{args.epochs} [{bar:<30}] loss {total / steps:.4f}",
                      end="", flush=True)
        seconds = time.perf_counter() - start
        test_acc = _accuracy(model, xte, yte)
        print(f"\r  epoch {epoch}/{args.epochs}  loss {total / steps:.4f}  "
              f"test accuracy {test_acc:.4f}  {seconds:.1f} s  "
              f"{len(xtr) / seconds:,.0f} samples/s" + " " * 10)
    print(f"result: test accuracy {test_acc:.4f} after {args.epochs} epochs")
    return test_acc


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastnn", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train a small MLP on real digits with fastnn's kernels")
    p.add_argument("--data", help="folder of the MNIST IDX files (default: $FASTNN_MNIST_DIR)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--limit", type=int, default=0, help="use only this many training samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    sub.add_parser("config", help="print fastnn.show_config()")
    args = parser.parse_args(argv)
    if args.command == "config":
        fastnn.show_config()
        return 0
    if args.threads is not None:
        fastnn.set_num_threads(args.threads)
    if args.epochs is None:
        args.epochs = 3 if datasets.find_mnist(args.data) else 20
    demo(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
