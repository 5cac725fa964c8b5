"""Benchmark fastnn's layers against the same maths in NumPy (and PyTorch, if installed).

    python bench/bench_layers.py [--quick] [--threads 1,2] [--json PATH] [--only PARTS]

One forward plus one backward pass, in training mode, of:

- block: Linear(D, D) -> BatchNorm1d(D) -> ReLU -> Dropout(0.1), at MLP sizes
  (batch N x width D). fastnn: nn.Sequential of its layers, model.forward(x) then
  model.backward(dout). NumPy: the CS231n layers (x @ W + b, batch normalization with
  the closed-form backward, ReLU, inverted dropout with a NumPy-generated mask),
  float32, into preallocated arrays. PyTorch: torch.nn.Sequential of the same layers,
  backward by autograd, parameter (and input) gradients set to None before each step.
  All three compute the input gradient dx as well as the parameter gradients.
- batchnorm: the batch-normalization part alone (ops.batchnorm_forward and
  ops.batchnorm_backward against their NumPy forms and torch.nn.BatchNorm1d).
- dropout: the dropout part alone (ops.dropout on x, then on dout with the same step,
  against NumPy's mask generation and multiplications, and torch's F.dropout).

Each case is timed with the method of bench/_common.py (interleaved repeats, medians,
noisy cases measured again) at 1 thread and at all usable CPUs: fastnn through
`fastnn.threads(n)`, NumPy's BLAS through threadpoolctl, torch through
`torch.set_num_threads(n)`. ratios: NumPy time / fastnn time and torch time / fastnn
time; above 1, fastnn is faster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from time import perf_counter
from typing import Callable

import numpy as np
from _common import (
    BLAS_COOLDOWN,
    Config,
    Slot,
    Table,
    add_only,
    as_torch,
    base_parser,
    fastnn,
    finish,
    header,
    measure,
    noise_note,
    parse_only,
    parse_threads,
    print_targets,
    randn,
    torch,
)

ops = fastnn.ops
nn = fastnn.nn
P_DROP = 0.1
EPS = 1e-5
MOMENTUM = 0.1
FULL_SHAPES = [(n, d) for n in (64, 256, 1024) for d in (256, 1024, 2048)]
QUICK_SHAPES = [(64, 256), (256, 1024), (1024, 2048)]
PARTS = ["block", "batchnorm", "dropout"]


@dataclass
class LayerConfig(Config):
    shapes: list


FULL = LayerConfig(0.020, 7, 11, 3, 150.0, FULL_SHAPES)
QUICK = LayerConfig(0.010, 5, 7, 1, 0.0, QUICK_SHAPES)


# ---------------------------------------------------------------- NumPy baselines


class NumpyBatchNorm:
    """CS231n batch normalization over the rows of (N, D) float32 batches."""

    def __init__(self, n, d):
        f32 = np.float32
        self.gamma, self.beta = np.ones(d, f32), np.zeros(d, f32)
        self.running_mean, self.running_var = np.zeros(d, f32), np.ones(d, f32)
        self.mean, self.var, self.inv_std = (np.empty(d, f32) for _ in range(3))
        self.dgamma, self.dbeta = np.empty(d, f32), np.empty(d, f32)
        self.xhat, self.y, self.dx, self.tmp = (np.empty((n, d), f32) for _ in range(4))

    def forward(self, x):
        """y = gamma * (x - mean) / sqrt(var + eps) + beta, batch mean and biased var."""
        n = x.shape[0]
        xhat, tmp = self.xhat, self.tmp
        np.mean(x, axis=0, out=self.mean)
        np.subtract(x, self.mean, out=xhat)
        np.multiply(xhat, xhat, out=tmp)
        np.mean(tmp, axis=0, out=self.var)
        self.running_mean *= 1 - MOMENTUM
        self.running_mean += MOMENTUM * self.mean
        self.running_var *= 1 - MOMENTUM
        self.running_var += (MOMENTUM * n / (n - 1)) * self.var
        np.add(self.var, EPS, out=self.inv_std)
        np.sqrt(self.inv_std, out=self.inv_std)
        np.reciprocal(self.inv_std, out=self.inv_std)
        xhat *= self.inv_std
        np.multiply(xhat, self.gamma, out=self.y)
        self.y += self.beta
        return self.y

    def backward(self, dout):
        """Closed form: dx = gamma * inv_std / N * (N * dout - dbeta - xhat * dgamma)."""
        n = dout.shape[0]
        tmp, dx = self.tmp, self.dx
        np.sum(dout, axis=0, out=self.dbeta)
        np.multiply(dout, self.xhat, out=tmp)
        np.sum(tmp, axis=0, out=self.dgamma)
        np.multiply(dout, np.float32(n), out=tmp)
        tmp -= self.dbeta
        np.multiply(self.xhat, self.dgamma, out=dx)
        np.subtract(tmp, dx, out=dx)
        dx *= self.gamma * self.inv_std / np.float32(n)
        return dx


class NumpyDropout:
    """CS231n inverted dropout: mask = (U < keep) / keep, drawn by a NumPy Generator."""

    def __init__(self, n, d, p, seed=0):
        self.keep = np.float32(1 - p)
        self.scale = np.float32(1 / (1 - p))
        self.rng = np.random.default_rng(seed)
        self.mask, self.y, self.dx = (np.empty((n, d), np.float32) for _ in range(3))

    def forward(self, x):
        mask = self.mask
        self.rng.random(dtype=np.float32, out=mask)
        np.less(mask, self.keep, out=mask)  # 1.0 where kept, 0.0 where dropped
        mask *= self.scale
        return np.multiply(x, mask, out=self.y)

    def backward(self, dout):
        return np.multiply(dout, self.mask, out=self.dx)


class NumpyBlock:
    """Linear -> BatchNorm1d -> ReLU -> Dropout, CS231n layers, float32, in place."""

    def __init__(self, n, d, p):
        f32 = np.float32
        self.w = randn(d, d) * np.float32(math.sqrt(2 / d))
        self.b = np.zeros(d, f32)
        self.dw, self.db = np.empty_like(self.w), np.empty_like(self.b)
        self.bn = NumpyBatchNorm(n, d)
        self.drop = NumpyDropout(n, d, p)
        self.h, self.r, self.dr, self.dx = (np.empty((n, d), f32) for _ in range(4))

    def forward(self, x):
        self.x = x
        np.matmul(x, self.w, out=self.h)
        self.h += self.b
        np.maximum(self.bn.forward(self.h), 0, out=self.r)
        return self.drop.forward(self.r)

    def backward(self, dout):
        np.multiply(self.drop.backward(dout), self.r > 0, out=self.dr)
        dh = self.bn.backward(self.dr)
        np.matmul(self.x.T, dh, out=self.dw)
        np.sum(dh, axis=0, out=self.db)
        return np.matmul(dh, self.w.T, out=self.dx)


# ---------------------------------------------------------------- cases


@dataclass
class Part:
    """One benchmarked part: how each library computes it, and how to build the calls.

    make((N, D)) returns {"fastnn": callable, "numpy": callable, "torch": callable or
    None, "check": str or None (a disagreement between fastnn and NumPy)}.
    """

    name: str
    title: str
    forms: list  # (library, code) lines for the legend
    make: Callable
    cooldown: float


def _torch_step(module_or_fn, x, dout, params=()):
    """A torch forward + backward by autograd, gradients set to None first."""
    tx, td = as_torch(x, dout)
    tx.requires_grad_(True)
    params = list(params)

    def step():
        for p in params:
            p.grad = None
        tx.grad = None
        module_or_fn(tx).backward(td)

    return step


def _make_block(shape):
    n, d = shape
    x, dout = randn(n, d), randn(n, d)
    model = nn.Sequential(nn.Linear(d, d, seed=0), nn.BatchNorm1d(d), nn.ReLU(),
                          nn.Dropout(P_DROP, seed=0))

    def fast():
        model.forward(x)
        model.backward(dout)

    base = NumpyBlock(n, d, P_DROP)

    def numpy():
        base.forward(x)
        base.backward(dout)

    torch_fn = None
    if torch:
        block = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.BatchNorm1d(d),
                                    torch.nn.ReLU(), torch.nn.Dropout(P_DROP))
        torch_fn = _torch_step(block, x, dout, block.parameters())
    return {"fastnn": fast, "numpy": numpy, "torch": torch_fn, "check": None}


def _make_batchnorm(shape):
    n, d = shape
    x, dout = randn(n, d), randn(n, d)
    gamma, beta = randn(d), randn(d)
    running_mean, running_var = np.zeros(d, np.float32), np.ones(d, np.float32)
    y, dx = np.empty_like(x), np.empty_like(x)

    def fast():
        _, mean, inv_std = ops.batchnorm_forward(x, gamma, beta, running_mean, running_var,
                                                 momentum=MOMENTUM, eps=EPS, out=y)
        ops.batchnorm_backward(dout, x, gamma, mean, inv_std, out=dx)

    base = NumpyBatchNorm(n, d)
    base.gamma[:], base.beta[:] = gamma, beta

    def numpy():
        base.forward(x)
        base.backward(dout)

    fast()
    numpy()
    check = None
    for name, mine, theirs in (("y", y, base.y), ("dx", dx, base.dx)):
        if not np.allclose(mine, theirs, rtol=1e-3, atol=1e-3):
            check = f"{name} differs from NumPy's by {np.abs(mine - theirs).max():.2g}"
            break
    torch_fn = None
    if torch:
        bn = torch.nn.BatchNorm1d(d, eps=EPS, momentum=MOMENTUM)
        with torch.no_grad():
            bn.weight.copy_(torch.from_numpy(gamma))
            bn.bias.copy_(torch.from_numpy(beta))
        torch_fn = _torch_step(bn, x, dout, bn.parameters())
    return {"fastnn": fast, "numpy": numpy, "torch": torch_fn, "check": check}


def _make_dropout(shape):
    n, d = shape
    x, dout = randn(n, d), randn(n, d)
    y, dx = np.empty_like(x), np.empty_like(x)
    step = 0

    def fast():
        nonlocal step
        ops.dropout(x, P_DROP, 0, step, out=y)
        ops.dropout(dout, P_DROP, 0, step, out=dx)
        step += 1

    base = NumpyDropout(n, d, P_DROP)

    def numpy():
        base.forward(x)
        base.backward(dout)

    fast()
    kept = np.count_nonzero(y) / y.size
    check = None
    if abs(kept - (1 - P_DROP)) > 0.01 or not np.allclose(y[y != 0], x[y != 0] / (1 - P_DROP)):
        check = f"fastnn keeps {kept:.3f} of the elements, or scales them wrongly"
    torch_fn = None
    if torch:
        torch_fn = _torch_step(
            lambda t: torch.nn.functional.dropout(t, P_DROP, training=True), x, dout)
    return {"fastnn": fast, "numpy": numpy, "torch": torch_fn, "check": check}


BLOCK = Part("block", f"Linear(D, D) + BatchNorm1d(D) + ReLU + Dropout({P_DROP}), "
             "forward + backward (size = N x D)", [
                 ("fastnn", f"model = nn.Sequential(Linear(D, D), BatchNorm1d(D), ReLU(), "
                            f"Dropout({P_DROP})); model.forward(x); model.backward(dout)"),
                 ("numpy", "matmul(x, W, out=h); h += b; batchnorm (below); "
                           "maximum(z, 0, out=r); dropout (below); backward: "
                           "dropout; multiply(dr, r > 0, out=dr); batchnorm; "
                           "matmul(x.T, dh, out=dW); sum(dh, 0, out=db); "
                           "matmul(dh, W.T, out=dx)"),
                 ("torch", "torch.nn.Sequential(Linear, BatchNorm1d, ReLU, Dropout); "
                           "grads = None; model(x).backward(dout)  (x.requires_grad: dx too)"),
             ], _make_block, BLAS_COOLDOWN)
BATCHNORM = Part("batchnorm", "BatchNorm1d part alone, forward + backward, training "
                 "(size = N x D)", [
                     ("fastnn", "y, mean, inv_std = ops.batchnorm_forward(x, gamma, beta, "
                                "running_mean, running_var, out=y); "
                                "ops.batchnorm_backward(dout, x, gamma, mean, inv_std, out=dx)"),
                     ("numpy", "mean(x, 0); xc = x - mean; var = mean(xc*xc, 0); running "
                               "stats; inv_std = 1/sqrt(var + eps); xhat = xc*inv_std; "
                               "y = xhat*gamma + beta;  dbeta = sum(dout, 0); "
                               "dgamma = sum(dout*xhat, 0); dx = (N*dout - dbeta - "
                               "xhat*dgamma) * gamma*inv_std/N  (all out= into "
                               "preallocated arrays)"),
                     ("torch", "torch.nn.BatchNorm1d(D)(x).backward(dout)"),
                 ], _make_batchnorm, 0.0)
DROPOUT = Part("dropout", f"Dropout({P_DROP}) part alone, forward + backward "
               "(size = N x D)", [
                   ("fastnn", f"ops.dropout(x, {P_DROP}, seed, step, out=y); "
                              f"ops.dropout(dout, {P_DROP}, seed, step, out=dx)"),
                   ("numpy", "rng.random(dtype=float32, out=mask); less(mask, keep, "
                             "out=mask); mask *= 1/keep; multiply(x, mask, out=y); "
                             "multiply(dout, mask, out=dx)  (rng = default_rng(), PCG64)"),
                   ("torch", f"F.dropout(x, {P_DROP}, training=True).backward(dout)"),
               ], _make_dropout, 0.0)


# ---------------------------------------------------------------- running


def run_part(part, threads, cfg):
    with_torch = torch is not None
    print(f"\n== {part.title}")
    for library, code in part.forms:
        if library != "torch" or with_torch:
            print(f"  {library}: {code}")
    if part.cooldown:
        print(f"  ({part.cooldown * 1e3:.0f} ms pause between libraries at > 1 thread: "
              "their thread pools spin after a call)")
    print()
    columns = [("size", 9, "size", ""), ("thr", 3, "threads", "d"),
               ("numpy us", 10, "numpy_us", ".1f"), ("fastnn us", 10, "fastnn_us", ".1f")]
    if with_torch:
        columns.append(("torch us", 10, "torch_us", ".1f"))
    columns.append(("np/fn", 6, "numpy_ratio", ".2f"))
    if with_torch:
        columns.append(("torch/fn", 8, "torch_ratio", ".2f"))
    table = Table([*columns, ("note", 4, "note", "")])
    table.header()
    for shape in cfg.shapes:
        calls = part.make(shape)
        names = [k for k in ("fastnn", "numpy", "torch") if calls[k] is not None]
        for n in threads:
            timing = measure([Slot(calls[k], n) for k in names], cfg, part.cooldown)
            t = dict(zip(names, timing.medians))
            mins = dict(zip(names, timing.mins))
            notes = [calls["check"] and f"CHECK: {calls['check']}", noise_note(timing)]
            table.add({
                "part": part.name, "size": f"{shape[0]}x{shape[1]}", "shape": list(shape),
                "threads": n,
                **{f"{k}_us": t[k] * 1e6 for k in names},
                **{f"{k}_min_us": mins[k] * 1e6 for k in names},
                "numpy_ratio": t["numpy"] / t["fastnn"],
                "torch_ratio": t["torch"] / t["fastnn"] if "torch" in t else None,
                "note": "; ".join(filter(None, notes)) or None,
                "spread": timing.spread, "others_cpus": timing.others,
                "attempts": timing.attempts,
            })
    return table.rows


def targets(rows):
    """The issue's targets, checked on this run's rows, per thread count."""
    checks = [
        ("BatchNorm forward+backward >= 2x NumPy", "batchnorm", "numpy_ratio", 2.0),
        ("Dropout forward+backward >= 2x NumPy", "dropout", "numpy_ratio", 2.0),
        ("block forward+backward no slower than PyTorch", "block", "torch_ratio", 1.0),
    ]
    results = []
    for name, part, key, goal in checks:
        chosen = [r for r in rows if r["part"] == part and r.get(key) is not None]
        for n in sorted({r["threads"] for r in chosen}):
            at_n = [r for r in chosen if r["threads"] == n]
            worst = min(at_n, key=lambda r: r[key])
            best = max(at_n, key=lambda r: r[key])
            noisy = sum(bool(r["note"] and "noisy" in r["note"]) for r in at_n)
            detail = (f"ratio {worst[key]:.2f} at worst ({worst['size']}), {best[key]:.2f} "
                      f"at best ({best['size']}), goal {goal:.1f}")
            if noisy:
                detail += f"; {noisy} of {len(at_n)} sizes noisy"
            results.append({"target": f"{name}, {n} thr", "part": part, "threads": n,
                            "goal": goal, "met": worst[key] >= goal, "min_ratio": worst[key],
                            "at": worst["size"], "detail": detail})
    return print_targets(results)


def parse_args(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0],
                         f"sizes {', '.join(f'{n}x{d}' for n, d in QUICK_SHAPES)} only, "
                         "fewer and shorter repeats")
    add_only(parser, PARTS, "parts")
    args = parse_threads(parser, parser.parse_args(argv))
    return parse_only(parser, args, PARTS, "parts")


def main(argv=None):
    args = parse_args(argv)
    cfg = QUICK if args.quick else FULL
    started = perf_counter()
    legend = ["ratios: np/fn = numpy time / fastnn time, torch/fn = torch time / fastnn time "
              "(> 1: fastnn faster)"]
    info = header("fastnn layer benchmark", args.threads, cfg, args.quick, legend_lines=legend,
                  torch_parts="its column and target")
    report = {"header": info, "rows": []}
    for part in (BLOCK, BATCHNORM, DROPOUT):
        if part.name in args.only:
            report["rows"] += run_part(part, args.threads, cfg)
    report["targets"] = targets(report["rows"])
    finish(report, report["rows"], started, args.json)


if __name__ == "__main__":
    main()
