"""Benchmark fastnn's kernels against the NumPy expressions they replace.

    python bench/bench_kernels.py [--quick] [--threads 1,2] [--json PATH] [--only SECTIONS]

Every case is timed in the same run for NumPy and fastnn, at each thread count:
fastnn through `fastnn.threads(n)`, NumPy's BLAS through threadpoolctl (NumPy's
element-wise loops run on one thread anyway). Both write into preallocated arrays,
NumPy in its best in-place form; the forms are printed above each table.

Method, for a noisy machine: each callable is warmed up, then looped k times per
repeat, k chosen so that a repeat takes >= 20 ms; there are at least 7 repeats (11
when a call takes under 100 us), and the callables of a case take turns, in
alternating order (A B, B A, A B, ...), so that drift hits them alike. The figure is
the median time per call. ratio = NumPy time / fastnn time: above 1, fastnn is faster.
A case disturbed by other processes is measured again (see measure() in
bench/_common.py, which holds the method shared by the scripts in bench/).

Two sections check tuning constants: `crossover` times the two strategies of batched
matmul against each other (ops.BATCH_PARALLEL_MAX_WORK chose between them), `threshold`
times kernels at 1 thread and at all threads around FN_PARALLEL_MIN
(fastnn/_kernels/simd.h). Below
FN_PARALLEL_MIN the kernels never use threads; to time them threaded there, build a
copy of the package with a smaller FN_PARALLEL_MIN and run this script with PYTHONPATH
pointing at that copy (`--only threshold`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
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
    randn,
    size_label,
    torch,
)
from scipy.special import expit

ops = fastnn.ops
SLOPE = 0.01  # LeakyReLU slope (ops' default)
FULL_SIZES = [10**3, 10**4, 10**5, 10**6, 10**7]
QUICK_SIZES = [10**4, 10**6]
THRESHOLD_SIZES = [4096, 8192, 16384, 32768, 65536, 131072]
CROSSOVER_WORK = 2**26  # multiply-adds per batched call, whatever the item size
FULL_ITEMS = [16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 256]
QUICK_ITEMS = [16, 64, 128, 256]
SECTIONS = ["matmul", "batched", "crossover", "activations", "backward", "fused",
            "reductions", "threshold"]


@dataclass
class KernelConfig(Config):
    sizes: list
    items: list


FULL = KernelConfig(0.020, 7, 11, 3, 150.0, FULL_SIZES, FULL_ITEMS)
QUICK = KernelConfig(0.010, 5, 7, 1, 0.0, QUICK_SIZES, QUICK_ITEMS)
WIN = 1.05  # a speed-up below this is not called a win (noise)


# ---------------------------------------------------------------- data


def rows_for(n, d):
    """Rows of an (N, d) matrix with about n elements."""
    return max(1, round(n / d))


# ---------------------------------------------------------------- kernels


@dataclass
class Kernel:
    """One benchmarked operation: fastnn's call, NumPy's forms, how to build them.

    make(shape) returns (fastnn callable, [NumPy callables, one per form],
    torch callable or None). `numpy` holds (tag, expression) per NumPy form.
    """

    name: str
    fastnn: str
    numpy: list
    make: Callable
    torch: str | None = None
    note: Callable | None = None  # note(shape, threads) -> str


def _matmul_maker(dtype, trans_a=False, trans_b=False):
    """make((M, K, N)) for op(a) @ op(b) = (M, N)."""

    def make(shape):
        m, k, n = shape
        a = randn(k, m, dtype=dtype) if trans_a else randn(m, k, dtype=dtype)
        b = randn(n, k, dtype=dtype) if trans_b else randn(k, n, dtype=dtype)
        a_op = a.T if trans_a else a
        b_op = b.T if trans_b else b
        fo = np.empty((m, n), dtype)
        no = np.empty((m, n), dtype)

        def fast():
            ops.matmul(a, b, out=fo, trans_a=trans_a, trans_b=trans_b)

        def base():
            np.matmul(a_op, b_op, out=no)

        torch_fn = None
        if torch:
            ta, tb, to = as_torch(a, b, no)
            ta_op = ta.T if trans_a else ta
            tb_op = tb.T if trans_b else tb

            def torch_fn():
                torch.matmul(ta_op, tb_op, out=to)

        return fast, [base], torch_fn

    return make


def _batched_maker(shape):
    batch, m, k, n = shape
    a, b = randn(batch, m, k), randn(batch, k, n)
    fo, no = np.empty((batch, m, n), np.float32), np.empty((batch, m, n), np.float32)
    torch_fn = None
    if torch:
        ta, tb, to = as_torch(a, b, no)

        def torch_fn():
            torch.matmul(ta, tb, out=to)

    return (lambda: ops.matmul(a, b, out=fo)), [lambda: np.matmul(a, b, out=no)], torch_fn


def batch_strategy(shape, threads):
    """Which of ops.matmul's two batched strategies runs for this shape (None: this fastnn
    has no BATCH_PARALLEL_MAX_WORK to choose by)."""
    limit = getattr(ops, "BATCH_PARALLEL_MAX_WORK", None)
    if limit is None:
        return None
    batch, m, k, n = shape
    if threads > 1 and batch > 1 and m * n * k < limit:
        return "items in parallel, 1-thread BLAS each"
    return "items in turn, on BLAS's threads"


def _forward_maker(activation):
    """make((n,)) for an activation's forward pass."""

    def make(shape):
        x = randn(*shape)
        fo, no = np.empty_like(x), np.empty_like(x)
        zeros = np.zeros_like(x)
        torch_fn = None
        if torch:
            tx, to = as_torch(x, no)
        if activation == "relu":
            fast = lambda: ops.relu(x, out=fo)
            bases = [lambda: np.maximum(x, 0, out=no), lambda: np.maximum(x, zeros, out=no)]
            if torch:
                torch_fn = lambda: torch.clamp(tx, min=0, out=to)
        elif activation == "leaky_relu":
            fast = lambda: ops.leaky_relu(x, SLOPE, out=fo)

            def leaky():
                np.multiply(x, SLOPE, out=no)
                np.maximum(x, no, out=no)

            bases = [leaky]
            if torch:
                torch_fn = lambda: torch.nn.functional.leaky_relu(tx, SLOPE)
        elif activation == "sigmoid":
            fast = lambda: ops.sigmoid(x, out=fo)

            def naive():
                np.negative(x, out=no)
                np.exp(no, out=no)
                np.add(no, 1, out=no)
                np.reciprocal(no, out=no)

            bases = [lambda: expit(x, out=no), naive]
            if torch:
                torch_fn = lambda: torch.sigmoid(tx, out=to)
        else:
            fast = lambda: ops.tanh(x, out=fo)
            bases = [lambda: np.tanh(x, out=no)]
            if torch:
                torch_fn = lambda: torch.tanh(tx, out=to)
        return fast, bases, torch_fn

    return make


def _backward_maker(activation):
    """make((n,)) for an activation's backward pass."""

    def make(shape):
        dout, x = randn(*shape), randn(*shape)
        fo, no = np.empty_like(x), np.empty_like(x)
        if activation == "relu":
            fast = lambda: ops.relu_backward(dout, x, out=fo)

            def mask_float():
                np.greater(x, 0, out=no)
                np.multiply(no, dout, out=no)

            bases = [lambda: np.multiply(dout, x > 0, out=no), mask_float]
        elif activation == "leaky_relu":
            fast = lambda: ops.leaky_relu_backward(dout, x, SLOPE, out=fo)

            def leaky():
                np.greater(x, 0, out=no)
                np.multiply(no, 1 - SLOPE, out=no)
                np.add(no, SLOPE, out=no)
                np.multiply(no, dout, out=no)

            bases = [leaky]
        elif activation == "sigmoid":
            y = expit(x)
            fast = lambda: ops.sigmoid_backward(dout, y, out=fo)

            def sig():
                np.subtract(1, y, out=no)
                np.multiply(no, y, out=no)
                np.multiply(no, dout, out=no)

            bases = [sig]
        else:
            y = np.tanh(x)
            fast = lambda: ops.tanh_backward(dout, y, out=fo)

            def tanh():
                np.multiply(y, y, out=no)
                np.subtract(1, no, out=no)
                np.multiply(no, dout, out=no)

            bases = [tanh]
        return fast, bases, None

    return make


def _bias_forward_maker(activation):
    """make((N, D)) for f(x + bias)."""

    def make(shape):
        x, bias = randn(*shape), randn(shape[1])
        fo, no = np.empty_like(x), np.empty_like(x)
        zeros = np.zeros_like(x)
        finish = {
            "relu": [lambda: np.maximum(no, 0, out=no), lambda: np.maximum(no, zeros, out=no)],
            "sigmoid": [lambda: expit(no, out=no)],
            "tanh": [lambda: np.tanh(no, out=no)],
        }[activation]

        def with_bias(f):
            def base():
                np.add(x, bias, out=no)
                f()

            return base

        return (lambda: ops.bias_activation(x, bias, activation, out=fo),
                [with_bias(f) for f in finish], None)

    return make


def _bias_backward_maker(activation):
    """make((N, D)) for dx = dout * f'(x) and dbias = dx.sum(axis=0)."""

    def make(shape):
        dout, x = randn(*shape), randn(*shape)
        y = {"relu": np.maximum(x, 0), "sigmoid": expit(x), "tanh": np.tanh(x)}[activation]
        fo, no = np.empty_like(x), np.empty_like(x)
        fdb, ndb = np.empty(shape[1], x.dtype), np.empty(shape[1], x.dtype)

        def relu_bool():
            np.multiply(dout, y > 0, out=no)

        def relu_float():
            np.greater(y, 0, out=no)
            np.multiply(no, dout, out=no)

        def sigmoid():
            np.subtract(1, y, out=no)
            np.multiply(no, y, out=no)
            np.multiply(no, dout, out=no)

        def tanh():
            np.multiply(y, y, out=no)
            np.subtract(1, no, out=no)
            np.multiply(no, dout, out=no)

        grads = {"relu": [relu_bool, relu_float], "sigmoid": [sigmoid], "tanh": [tanh]}

        def with_sum(f):
            def base():
                f()
                np.sum(no, axis=0, out=ndb)

            return base

        def fast():
            ops.activation_bias_backward(dout, y, activation, out=fo, dbias=fdb)

        return fast, [with_sum(f) for f in grads[activation]], None

    return make


def _sum_maker(axis):
    def make(shape):
        x = randn(*shape)
        fo = np.empty(shape[1 - axis], x.dtype)
        no = np.empty_like(fo)
        fast = ops.column_sum if axis == 0 else ops.row_sum
        return (lambda: fast(x, out=fo)), [lambda: np.sum(x, axis=axis, out=no)], None

    return make


F32, F64 = np.float32, np.float64

MATMUL = Kernel("A@B", "ops.matmul(a, b, out=o)", [("a@b", "np.matmul(a, b, out=o)")],
                _matmul_maker(F32), "torch.matmul(a, b, out=o)")
MATMUL_F64 = Kernel("A@B float64", "ops.matmul(a, b, out=o)",
                    [("a@b", "np.matmul(a, b, out=o)")], _matmul_maker(F64),
                    "torch.matmul(a, b, out=o)")
MATMUL_DW = Kernel("dW = x.T@dout", "ops.matmul(x, dout, trans_a=True, out=o)",
                   [("x.T@dout", "np.matmul(x.T, dout, out=o)")],
                   _matmul_maker(F32, trans_a=True), "torch.matmul(x.T, dout, out=o)")
MATMUL_DX = Kernel("dx = dout@W.T", "ops.matmul(dout, W, trans_b=True, out=o)",
                   [("dout@W.T", "np.matmul(dout, W.T, out=o)")],
                   _matmul_maker(F32, trans_b=True), "torch.matmul(dout, W.T, out=o)")
BATCHED = Kernel("batched A@B", "ops.matmul(a, b, out=o)",
                 [("a@b", "np.matmul(a, b, out=o)")], _batched_maker,
                 "torch.matmul(a, b, out=o)", batch_strategy)

FORWARD = [
    Kernel("relu", "ops.relu(x, out=o)",
           [("max(x,0)", "np.maximum(x, 0, out=o)"),
            ("max(x,zeros)", ("np.maximum(x, zeros, out=o)  (zeros preallocated; "
             "faster than the scalar form on this NumPy)"))],
           _forward_maker("relu"), "torch.clamp(x, min=0, out=o)"),
    Kernel("leaky_relu", f"ops.leaky_relu(x, {SLOPE}, out=o)",
           [("max(x,s*x)", ("np.multiply(x, s, out=o); np.maximum(x, o, out=o)  "
             "(valid for 0 <= s <= 1; np.where(x > 0, x, s*x) is >10x slower)"))],
           _forward_maker("leaky_relu"), "F.leaky_relu(x, s)  (allocates: no out=)"),
    Kernel("sigmoid", "ops.sigmoid(x, out=o)",
           [("expit(x)", "scipy.special.expit(x, out=o)  (stable)"),
            ("1/(1+exp(-x))", ("np.negative(x, out=o); np.exp(o, out=o); "
             "np.add(o, 1, out=o); np.reciprocal(o, out=o)  (naive)"))],
           _forward_maker("sigmoid"), "torch.sigmoid(x, out=o)"),
    Kernel("tanh", "ops.tanh(x, out=o)", [("tanh(x)", "np.tanh(x, out=o)")],
           _forward_maker("tanh"), "torch.tanh(x, out=o)"),
]

BACKWARD = [
    Kernel("relu_backward", "ops.relu_backward(dout, x, out=o)",
           [("dout*(x>0)", "np.multiply(dout, x > 0, out=o)"),
            ("float mask", "np.greater(x, 0, out=o); np.multiply(o, dout, out=o)")],
           _backward_maker("relu")),
    Kernel("leaky_relu_backward", f"ops.leaky_relu_backward(dout, x, {SLOPE}, out=o)",
           [("4 passes", ("np.greater(x, 0, out=o); o *= 1 - s; o += s; o *= dout  "
             "(np.where(x > 0, dout, s*dout) is >10x slower)"))],
           _backward_maker("leaky_relu")),
    Kernel("sigmoid_backward", "ops.sigmoid_backward(dout, y, out=o)",
           [("dout*y*(1-y)", "np.subtract(1, y, out=o); o *= y; o *= dout")],
           _backward_maker("sigmoid")),
    Kernel("tanh_backward", "ops.tanh_backward(dout, y, out=o)",
           [("dout*(1-y*y)", "np.multiply(y, y, out=o); np.subtract(1, o, out=o); o *= dout")],
           _backward_maker("tanh")),
]

BIAS_RELU = Kernel("bias+relu", "ops.bias_activation(x, b, 'relu', out=o)",
                   [("add;max(o,0)", "np.add(x, b, out=o); np.maximum(o, 0, out=o)"),
                    ("add;max(o,zeros)", "np.add(x, b, out=o); np.maximum(o, zeros, out=o)")],
                   _bias_forward_maker("relu"))
RELU_BACK_BIAS = Kernel(
    "relu_bwd+dbias", "ops.activation_bias_backward(dout, y, 'relu', out=dx, dbias=db)",
    [("dout*(y>0);sum", "np.multiply(dout, y > 0, out=dx); dx.sum(axis=0, out=db)"),
     ("float mask;sum", "np.greater(y, 0, out=dx); dx *= dout; dx.sum(axis=0, out=db)")],
    _bias_backward_maker("relu"))
FUSED_OTHERS = [
    Kernel("bias+sigmoid", "ops.bias_activation(x, b, 'sigmoid', out=o)",
           [("add;expit", "np.add(x, b, out=o); expit(o, out=o)")],
           _bias_forward_maker("sigmoid")),
    Kernel("bias+tanh", "ops.bias_activation(x, b, 'tanh', out=o)",
           [("add;tanh", "np.add(x, b, out=o); np.tanh(o, out=o)")],
           _bias_forward_maker("tanh")),
    Kernel("sigmoid_bwd+dbias", "ops.activation_bias_backward(dout, y, 'sigmoid', ...)",
           [("dout*y*(1-y);sum", ("np.subtract(1, y, out=dx); dx *= y; dx *= dout; "
             "dx.sum(axis=0, out=db)"))],
           _bias_backward_maker("sigmoid")),
    Kernel("tanh_bwd+dbias", "ops.activation_bias_backward(dout, y, 'tanh', ...)",
           [("dout*(1-y*y);sum", ("np.multiply(y, y, out=dx); np.subtract(1, dx, out=dx); "
             "dx *= dout; dx.sum(axis=0, out=db)"))],
           _bias_backward_maker("tanh")),
]

COLUMN_SUM = Kernel("column_sum", "ops.column_sum(x, out=o)",
                    [("x.sum(axis=0)", "np.sum(x, axis=0, out=o)")], _sum_maker(0))
ROW_SUM = Kernel("row_sum", "ops.row_sum(x, out=o)",
                 [("x.sum(axis=1)", "np.sum(x, axis=1, out=o)")], _sum_maker(1))


def sections(cfg):
    """{section: (title, [(kernel, [shapes])], cooldown)} for the NumPy-vs-fastnn tables."""
    sizes = cfg.sizes
    wide = [(rows_for(n, 1024), 1024) for n in sizes]
    narrow = [(rows_for(10**6, 10), 10)]
    one = [(rows_for(10**6, 1024), 1024)]
    mlp = [(256, 784, 1024), (256, 1024, 1024), (256, 1024, 10), (32, 64, 128)]
    return {
        "matmul": ("1. matmul, MLP shapes (size = MxKxN)", [
            (MATMUL, mlp), (MATMUL_DW, [(784, 256, 1024)]), (MATMUL_DX, [(256, 1024, 784)]),
            (MATMUL_F64, [(256, 784, 1024)])], BLAS_COOLDOWN),
        "batched": ("2. batched matmul (size = BxMxKxN)", [
            (BATCHED, [(512, 32, 32, 32), (64, 64, 64, 64), (8, 512, 512, 512)])],
                    BLAS_COOLDOWN),
        "activations": ("3. activations, forward (float32, 1-D)",
                        [(k, [(n,) for n in sizes]) for k in FORWARD], 0.0),
        "backward": ("4. activations, backward (float32, 1-D)",
                     [(k, [(n,) for n in sizes]) for k in BACKWARD], 0.0),
        "fused": ("5. fused epilogues (size = NxD)", [
            (BIAS_RELU, wide + narrow), (RELU_BACK_BIAS, wide + narrow)]
            + [(k, one) for k in FUSED_OTHERS], 0.0),
        "reductions": ("6. reductions (size = NxD)", [
            (COLUMN_SUM, wide + narrow), (ROW_SUM, wide + narrow)], 0.0),
    }


# ---------------------------------------------------------------- tables


def comparison_table(with_torch):
    columns = [("case", 19, "case", ""), ("numpy form", 17, "form", ""),
               ("size", 14, "size", ""), ("thr", 3, "threads", "d"),
               ("numpy us", 10, "numpy_us", ".1f"), ("fastnn us", 10, "fastnn_us", ".1f"),
               ("ratio", 6, "ratio", ".2f")]
    if with_torch:
        columns.append(("torch us", 10, "torch_us", ".1f"))
    columns.append(("note", 4, "note", ""))
    return Table(columns)


def print_legend(kernels, with_torch):
    seen = set()
    for kernel in kernels:
        if kernel.name in seen:
            continue
        seen.add(kernel.name)
        print(f"  {kernel.name}: fastnn {kernel.fastnn}")
        for tag, expression in kernel.numpy:
            print(f"    numpy [{tag}]: {expression}")
        if with_torch and kernel.torch:
            print(f"    torch: {kernel.torch}")
    print()


def run_comparisons(section, title, plan, cooldown, threads, cfg):
    with_torch = torch is not None and any(k.torch for k, _ in plan)
    print(f"\n== {title}")
    print_legend([k for k, _ in plan], with_torch)
    table = comparison_table(with_torch)
    table.header()
    for kernel, shapes in plan:
        for shape in shapes:
            fast, bases, torch_fn = kernel.make(shape)
            callables = [fast, *bases] + ([torch_fn] if with_torch and torch_fn else [])
            for n in threads:
                timing = measure([Slot(fn, n) for fn in callables], cfg, cooldown)
                times = timing.medians
                fast_s = times[0]
                torch_s = times[-1] if with_torch and torch_fn else None
                notes = [kernel.note(shape, n) if kernel.note else None, noise_note(timing)]
                for i, ((tag, _), base_s) in enumerate(zip(kernel.numpy, times[1:])):
                    table.add({
                        "section": section, "case": kernel.name, "form": tag,
                        "primary": i == 0,
                        "size": size_label(shape), "shape": list(shape),
                        # elements, or multiply-adds for a matmul
                        "work": math.prod(shape), "threads": n,
                        "numpy_us": base_s * 1e6, "fastnn_us": fast_s * 1e6,
                        "ratio": base_s / fast_s,
                        "torch_us": torch_s * 1e6 if torch_s else None,
                        "note": "; ".join(filter(None, notes)) or None,
                        "numpy_min_us": timing.mins[1 + i] * 1e6,
                        "fastnn_min_us": timing.mins[0] * 1e6,
                        "spread": timing.spread, "others_cpus": timing.others,
                        "attempts": timing.attempts,
                    })
    return table.rows


# ---------------------------------------------------------------- tuning checks


def _strategies(size, batch, threads):
    """Slots of strategies P and S for a batch of size**3 items (see run_crossover)."""
    a, b = randn(batch, size, size), randn(batch, size, size)
    c = np.empty_like(a)
    matmul_batched = fastnn._kernels.matmul.matmul_batched

    def parallel():
        matmul_batched(a, b, c, False, False, threads)

    def in_turn():
        matmul_batched(a, b, c, False, False, 1)

    return Slot(parallel, threads, blas=1), Slot(in_turn, threads, blas=threads)


def run_crossover(threads, cfg):
    """Time batched matmul's two strategies at item sizes 16..256, total work fixed."""
    current = getattr(ops, "BATCH_PARALLEL_MAX_WORK", None)
    print(f"\n== 2b. batched matmul strategies, {threads} threads, float32, "
          f"~{CROSSOVER_WORK / 2**20:.0f} Mi multiply-adds per call")
    print(f"  P: matmul_batched(a, b, c, False, False, {threads}) with 1-thread BLAS"
          "  (items in parallel)")
    print(f"  S: matmul_batched(a, b, c, False, False, 1) with {threads}-thread BLAS"
          "  (items in turn)")
    print("  (BLAS's thread count is set outside the timed loop)")
    columns = [("item", 8, "item", ""), ("work", 9, "work", "d"), ("B", 6, "batch", "d"),
               ("P us", 10, "parallel_us", ".1f"), ("S us", 10, "in_turn_us", ".1f"),
               ("S/P", 6, "ratio", ".2f"), ("faster", 6, "faster", "")]
    if current:
        print(f"  ops.matmul picks P for item work M*N*K < BATCH_PARALLEL_MAX_WORK = {current}"
              f" (= {round(current ** (1 / 3))}**3)")
        columns.append(("ops.matmul", 10, "picks", ""))
    else:
        print("  (this fastnn has no ops.BATCH_PARALLEL_MAX_WORK)")
    print()
    table = Table([*columns, ("note", 4, "note", "")])
    table.header()
    for size in cfg.items:
        batch = max(threads, round(CROSSOVER_WORK / size**3 / threads) * threads)
        timing = measure(list(_strategies(size, batch, threads)), cfg, BLAS_COOLDOWN)
        p, s = timing.medians
        table.add({"item": f"{size}^3", "size": size, "work": size**3, "batch": batch,
                   "parallel_us": p * 1e6, "in_turn_us": s * 1e6, "ratio": s / p,
                   "faster": "P" if p < s else "S",
                   "picks": ("P" if size**3 < current else "S") if current else None,
                   "note": noise_note(timing), "spread": timing.spread,
                   "others_cpus": timing.others, "attempts": timing.attempts})
    rows = table.rows
    first_s = next((i for i in range(len(rows))
                    if all(r["faster"] == "S" for r in rows[i:])), None)
    if first_s is None:
        verdict = f"P is faster up to {rows[-1]['item']}, the largest item measured"
    elif first_s == 0:
        verdict = f"S is faster from {rows[0]['item']}, the smallest item measured"
    else:
        lo, hi = rows[first_s - 1], rows[first_s]
        verdict = (f"S is faster from {hi['item']} = {hi['work']} up; the last item where P "
                   f"wins is {lo['item']} = {lo['work']}")
        if current:
            agrees = lo["work"] < current <= hi["work"]
            verdict += (f": BATCH_PARALLEL_MAX_WORK = {current} "
                        + ("lies in that gap" if agrees else "lies OUTSIDE that gap"))
    print(f"  -> {verdict}")
    return {"threads": threads, "work_per_call": CROSSOVER_WORK, "current": current,
            "rows": rows, "verdict": verdict}


def parallel_min():
    """FN_PARALLEL_MIN as compiled in (read from the shipped simd.h), or None."""
    header = Path(fastnn.__file__).parent / "_kernels" / "simd.h"
    try:
        found = re.search(r"#define\s+FN_PARALLEL_MIN\s+(\d+)", header.read_text())
    except OSError:
        return None
    return int(found.group(1)) if found else None


def run_threshold(threads, cfg):
    """fastnn at 1 thread vs `threads` threads, around FN_PARALLEL_MIN."""
    limit = parallel_min()
    print(f"\n== 7. parallel threshold: fastnn at 1 vs {threads} threads "
          f"(FN_PARALLEL_MIN = {limit} elements)")
    print("  relu: ops.relu(x, out=o), x 1-D;  bias+relu and relu_bwd+dbias: (N, 256) float32")
    print(f"  ratio = 1-thread time / {threads}-thread time (> 1: threads help); below "
          "FN_PARALLEL_MIN the kernels run on one thread whatever the count\n")
    table = Table([("case", 15, "case", ""), ("size", 9, "elements", "d"),
                   ("1 thr us", 10, "one_us", ".1f"), (f"{threads} thr us", 10, "all_us", ".1f"),
                   ("ratio", 6, "ratio", ".2f"), ("note", 4, "note", "")])
    table.header()
    verdicts = {}
    for kernel, d in ((FORWARD[0], None), (BIAS_RELU, 256), (RELU_BACK_BIAS, 256)):
        first = len(table.rows)
        for n in THRESHOLD_SIZES:
            shape = (n,) if d is None else (n // d, d)
            fast = kernel.make(shape)[0]
            timing = measure([Slot(fast, 1), Slot(fast, threads)], cfg)
            one, full = timing.medians
            serial = limit is not None and n < limit
            notes = ["serial (< FN_PARALLEL_MIN)" if serial else None, noise_note(timing)]
            table.add({"case": kernel.name, "elements": n, "one_us": one * 1e6,
                       "all_us": full * 1e6, "ratio": one / full, "serial": serial,
                       "note": "; ".join(filter(None, notes)) or None,
                       "spread": timing.spread, "others_cpus": timing.others,
                       "attempts": timing.attempts})
        # Serial rows run the same code at both counts: their ratio is noise around 1.
        rows = [r for r in table.rows[first:] if not r["serial"]]
        verdicts[kernel.name] = next((r["elements"] for i, r in enumerate(rows)
                                      if all(q["ratio"] >= WIN for q in rows[i:])), None)
    print()
    for name, wins in verdicts.items():
        where = f"from {wins} elements up" if wins else "at none of the threaded sizes"
        print(f"  -> {name}: {threads} threads >= {WIN:.2f}x faster {where}")
    return {"threads": threads, "fn_parallel_min": limit, "rows": table.rows,
            "two_threads_win_from": verdicts}


# ---------------------------------------------------------------- report


def targets(rows):
    """The project's speed targets, checked on this run's rows, per thread count."""
    checks = [
        ("matmul within 5% of NumPy's @", 0.95,
         lambda r: r["section"] == "matmul"),
        ("fused bias+ReLU forward >= 2x NumPy at >= 1e6 elements", 2.0,
         lambda r: r["case"] == BIAS_RELU.name and r["work"] >= 10**6),
        ("ReLU backward + bias-grad >= 2x NumPy at >= 1e6 elements", 2.0,
         lambda r: r["case"] == RELU_BACK_BIAS.name and r["work"] >= 10**6),
    ]
    results = []
    for name, goal, selects in checks:
        chosen = [r for r in rows if selects(r)]
        for n in sorted({r["threads"] for r in chosen}):
            at_n = [r for r in chosen if r["threads"] == n]
            # The target is stated against each kernel's first (plain) NumPy form.
            main = [r for r in at_n if r["primary"]]
            worst = min(main, key=lambda r: r["ratio"])
            best_numpy = min(at_n, key=lambda r: r["ratio"])
            results.append({
                "target": name, "threads": n, "goal": goal, "met": worst["ratio"] >= goal,
                "min_ratio": worst["ratio"], "at": f"{worst['case']} {worst['size']}",
                "min_ratio_any_form": best_numpy["ratio"],
                "any_form_at": f"{best_numpy['case']} [{best_numpy['form']}] "
                               f"{best_numpy['size']}",
            })
    if results:
        print("\n== targets")
    for t in results:
        status = "met" if t["met"] else "NOT met"
        line = (f"  {t['target']}, {t['threads']} thr: {status} "
                f"(min ratio {t['min_ratio']:.2f} at {t['at']}")
        if t["min_ratio_any_form"] < t["min_ratio"]:
            line += (f"; {t['min_ratio_any_form']:.2f} against the fastest NumPy form, "
                     f"{t['any_form_at']}")
        print(line + ")")
    return results


def parse_args(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0],
                         "sizes 1e4 and 1e6 only, fewer and shorter repeats")
    add_only(parser, SECTIONS, "sections")
    args = parse_threads(parser, parser.parse_args(argv))
    return parse_only(parser, args, SECTIONS, "sections")


def main(argv=None):
    args = parse_args(argv)
    cfg = QUICK if args.quick else FULL
    started = perf_counter()
    info = header("fastnn kernel benchmark", args.threads, cfg, args.quick,
                  method_lines=[f"matmul sections: {BLAS_COOLDOWN * 1e3:.0f} ms pause before "
                                "switching callables at > 1 thread (OpenBLAS worker threads "
                                "spin ~0.1 s after a call)"],
                  legend_lines=["ratio = numpy time / fastnn time (> 1: fastnn faster)"])
    report = {"header": info, "rows": []}
    most = max(args.threads)
    for section, (title, plan, cooldown) in sections(cfg).items():
        if section in args.only:
            report["rows"] += run_comparisons(section, title, plan, cooldown, args.threads, cfg)
        if section == "batched" and "crossover" in args.only:
            if most > 1:
                report["crossover"] = run_crossover(most, cfg)
            else:
                print("\n(batched strategies need more than 1 thread: skipped)")
    if "threshold" in args.only:
        if most > 1:
            report["threshold"] = run_threshold(most, cfg)
        else:
            print("\n(parallel threshold needs more than 1 thread: skipped)")
    report["targets"] = targets(report["rows"])
    finish(report, report["rows"], started, args.json)


if __name__ == "__main__":
    main()
