"""Benchmark every way this machine has to compute a training step's matrix products.

    python bench/bench_gemm.py [--quick] [--threads 1,2] [--json PATH]

For each product shape, float32, into a preallocated output, at each thread count,
interleaved in one run (bench/_common.py's method):

- openblas: fastnn.ops.matmul on fastnn's OpenBLAS (the scipy-openblas32 package's where
  installed, else SciPy's): one single-threaded call per thread, on a slab of the output
  cut along its longer side (fastnn's only way with OpenBLAS, whose own threads would be
  a second pool);
- openblas-scipy: the same on SciPy's own OpenBLAS, where the package's is the one in use;
- mkl: ops.matmul on MKL (when installed) as fastnn runs it: on Intel CPUs with MKL's own
  threads, which are fastnn's OpenMP pool (the GNU threading layer), in strict
  reproducibility mode, elsewhere in slabs; the products MKL is slower at on OpenBLAS
  (fastnn/_kernels/backend.pxd: to_other);
- mkl-alone: every product on MKL (threaded as for mkl);
- mkl-slabs: ops.matmul on MKL, one single-threaded call per slab, as for OpenBLAS;
- numpy: np.matmul on NumPy's own OpenBLAS, threaded (its own pool);
- torch: torch.matmul (PyTorch's MKL), when torch is installed.

The shapes (M x K x N of op(A) @ op(B), and the transposes: T = the operand is read
transposed) are those of bench/bench_train.py's models, a Linear layer's forward
(x @ W), weight gradient (x.T @ dz) and input gradient (dz @ W.T), at batches 32, 256 and
1024 and widths 1024 and 2048, and the 64-channel 3x3 convolution of ResNet-8's last
stage as fastnn runs it (O x K x P per sample tile). best = the fastest; fn = fastnn's
default (its backend: fastnn.get_blas()) over the best.
"""

from __future__ import annotations

from time import perf_counter

import numpy as np
from _common import (
    BLAS_COOLDOWN,
    Config,
    Slot,
    Table,
    as_torch,
    base_parser,
    blas_backends,
    fastnn,
    finish,
    header,
    measure,
    noise_note,
    parse_threads,
    randn,
    torch,
)

ops = fastnn.ops
FULL = Config(target=0.1, repeats=7, repeats_small=11, attempts=3, retry_budget=60)
QUICK = Config(target=0.05, repeats=3, repeats_small=5, attempts=1, retry_budget=0)

# (label, M, K, N, trans_a, trans_b)
SHAPES = [
    ("fwd b32", 32, 1024, 1024, False, False),
    ("dW b32", 1024, 32, 1024, True, False),
    ("dx b32", 32, 1024, 1024, False, True),
    ("fwd b256", 256, 1024, 1024, False, False),
    ("dW b256", 1024, 256, 1024, True, False),
    ("dx b256", 256, 1024, 1024, False, True),
    ("dx b1024", 1024, 1024, 1024, False, True),
    ("fwd b1024", 1024, 1024, 1024, False, False),
    ("dW b1024", 1024, 1024, 1024, True, False),
    ("fwd w2048", 256, 2048, 2048, False, False),
    ("dW w2048", 2048, 256, 2048, True, False),
    ("in b256", 256, 784, 1024, False, False),
    ("out b256", 256, 1024, 10, False, False),
    ("conv 64", 64, 576, 512, False, False),
]
QUICK_SHAPES = ("fwd b32", "dW b256", "dx b256", "fwd w2048", "conv 64")


def operands(m, k, n, trans_a, trans_b):
    a = randn(k, m) if trans_a else randn(m, k)
    b = randn(n, k) if trans_b else randn(k, n)
    return a, b, np.empty((m, n), np.float32)


def routes(shape):
    """{name: Slot-less (fn, backend)} for one shape."""
    _, m, k, n, ta, tb = shape
    a, b, c = operands(m, k, n, ta, tb)
    found = {}

    def fastnn_product():
        ops.matmul(a, b, trans_a=ta, trans_b=tb, out=c)

    for backend in blas_backends():
        found[backend] = (fastnn_product, backend)
    for route in ("openblas-scipy", "mkl-alone", "mkl-slabs"):
        if fastnn._blas._use_for_bench(route):  # the Slot switches to it (using_blas)
            found[route] = (fastnn_product, route)
    at, bt = (a.T if ta else a), (b.T if tb else b)
    found["numpy"] = (lambda: np.matmul(at, bt, out=c), None)
    if torch is not None:
        ta_, tb_, tc = as_torch(a, b, c)
        ta_, tb_ = (ta_.t() if ta else ta_), (tb_.t() if tb else tb_)
        found["torch"] = (lambda: torch.matmul(ta_, tb_, out=tc), None)
    return found


def run(shapes, threads, cfg):
    names = list(routes(shapes[0]))
    print("\n== one product, ms per call (float32); best: the fastest route; "
          f"fn/best: fastnn's default ({fastnn.get_blas()}) over it\n")
    columns = [("shape", 10, "shape", ""), ("MxKxN", 15, "mnk", ""), ("op", 2, "op", ""),
               ("thr", 3, "threads", "d")]
    columns += [(f"{k} ms", max(11, len(k) + 3), f"{k}_ms", ".3f") for k in names]
    columns += [("GFLOP/s", 7, "best_gflops", ".0f"), ("best", 9, "best", ""),
                ("fn/best", 7, "ratio", ".2f"), ("note", 4, "note", "")]
    table = Table(columns)
    table.header()
    default = fastnn.get_blas()
    for shape in shapes:
        label, m, k, n, ta, tb = shape
        found = routes(shape)
        for count in threads:
            slots = [Slot(fn, count, backend=b) for fn, b in found.values()]
            timing = measure(slots, cfg, BLAS_COOLDOWN)
            t = dict(zip(found, timing.medians))
            best = min(t, key=t.get)
            table.add({"shape": label, "mnk": f"{m}x{k}x{n}",
                       "op": ("T" if ta else "N") + ("T" if tb else "N"), "threads": count,
                       **{f"{r}_ms": t[r] * 1e3 for r in t}, "best": best,
                       "best_gflops": 2 * m * k * n / t[best] / 1e9,
                       "ratio": t[default] / t[best], "note": noise_note(timing)})
    return table.rows


def main(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0], f"shapes {', '.join(QUICK_SHAPES)} only, "
                         "fewer and shorter repeats")
    args = parse_threads(parser, parser.parse_args(argv))
    cfg = QUICK if args.quick else FULL
    shapes = [s for s in SHAPES if not args.quick or s[0] in QUICK_SHAPES]
    started = perf_counter()
    info = header("fastnn GEMM routes benchmark", args.threads, cfg, args.quick,
                  method_lines=[f"{BLAS_COOLDOWN * 1e3:.0f} ms pause before switching routes "
                                "at > 1 thread (pools spin after a call)"])
    previous = fastnn.get_blas()
    try:
        report = {"header": info, "rows": run(shapes, args.threads, cfg)}
    finally:
        fastnn.set_blas(previous)
    finish(report, report["rows"], started, args.json)


if __name__ == "__main__":
    main()
