"""Benchmark the AVX-512 versions of fastnn's loop kernels against the AVX2 ones.

    python bench/bench_clones.py [--quick] [--keep DIR]

fastnn's element-wise loops (activations, the optimizers' updates, reductions) are
compiled for x86-64, x86-64-v3 (AVX2, FMA) and x86-64-v4 (AVX-512), and the loader
picks the newest the CPU runs (fastnn/_kernels/simd.h). This script builds a second copy
of the package from this checkout with `FASTNN_NO_AVX512=1` (no v4 version, so an
AVX-512 CPU runs the v3 one) into a temporary folder, then times the same kernels in
both builds, one fresh process per measurement, the builds taking turns (A B A B ...),
and prints the medians and avx2/avx512 (above 1: the AVX-512 version is faster).

Kernels, one thread, float32: ops.bias_activation on a 256x4096 batch for each
activation; ops.activation_bias_backward for ReLU and sigmoid; one optimizer step of
Adam, AdamW, RMSProp and SGD with momentum over a 784-2048-2048-10 MLP's 5.8 million
parameters; its gradient norm. On a CPU without AVX-512 both builds run the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]

TIMER = r"""
import json, sys, time
from statistics import median
import numpy as np
import fastnn
from fastnn import nn, ops, optim
fastnn.set_num_threads(1)
rng = np.random.default_rng(0)
repeats = int(sys.argv[1])

def timed(f):
    f(); f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); f(); times.append(time.perf_counter() - t)
    return median(times) * 1e3

out = {}
h = rng.standard_normal((256, 4096), dtype=np.float32)
b = rng.standard_normal(4096, dtype=np.float32)
y = np.empty_like(h)
for act in ("relu", "sigmoid", "tanh", "gelu", "silu", "elu"):
    out[f"bias+{act}"] = timed(lambda: ops.bias_activation(h, b, act, out=y))
g = rng.standard_normal((256, 4096), dtype=np.float32)
for act in ("relu", "sigmoid"):
    ops.bias_activation(h, b, act, out=y)
    out[f"{act} backward"] = timed(lambda: ops.activation_bias_backward(g, y, act))
model = nn.mlp(784, 10, [2048, 2048], seed=0)
for p in model.parameters():
    p.grad[...] = rng.standard_normal(p.shape)
for name, opt in (("Adam", optim.Adam(model, 1e-3)), ("AdamW", optim.AdamW(model, 1e-3)),
                  ("RMSProp", optim.RMSProp(model, 1e-3)),
                  ("SGD momentum", optim.SGD(model, 1e-3, momentum=0.9))):
    out[f"{name} step"] = timed(opt.step)
out["gradient norm"] = timed(opt.grad_norm)
print(json.dumps(out))
"""


def build_without_avx512(folder):
    """A copy of the checkout's package and build files in `folder`, built in place
    with FASTNN_NO_AVX512=1."""
    for name in ("fastnn", "setup.py", "pyproject.toml", "README.md", "LICENSE"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, folder / name,
                            ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
        elif source.exists():
            shutil.copy2(source, folder / name)
    env = dict(os.environ, FASTNN_NO_AVX512="1")
    print(f"building the copy without AVX-512 in {folder} ...", flush=True)
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-j2"], cwd=folder,
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(tree, repeats):
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, "-c", TIMER, str(repeats)], cwd=tempfile.gettempdir(),
                          env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def has_avx512():
    try:
        with open("/proc/cpuinfo") as f:
            return " avx512f" in f.read()
    except OSError:
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 10 repeats, not 5 of 30")
    parser.add_argument("--keep", metavar="DIR",
                        help="build the copy in DIR (reused when already built) and keep it")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    rounds, repeats = (3, 10) if args.quick else (5, 30)
    print("fastnn loop kernels: AVX-512 (x86-64-v4) against AVX2 (x86-64-v3) versions")
    print(f"  CPU has AVX-512: {has_avx512()}; {rounds} rounds, each build in a fresh process "
          f"per round, medians of {repeats} calls; 1 thread, float32")
    temporary = None
    if args.keep:
        copy = Path(args.keep).resolve()
        copy.mkdir(parents=True, exist_ok=True)
    else:
        temporary = tempfile.TemporaryDirectory()
        copy = Path(temporary.name)
    try:
        if not list(copy.glob("fastnn/_kernels/*.so")):
            build_without_avx512(copy)
        trees = {"avx512": ROOT, "avx2": copy}
        results = {k: [] for k in trees}
        for _ in range(rounds):
            for name, tree in trees.items():
                results[name].append(measure(tree, repeats))
    finally:
        if temporary is not None:
            temporary.cleanup()
    kernels = list(results["avx512"][0])
    rows = []
    print(f"\n{'kernel':18s} | {'avx2 ms':>8s} | {'avx512 ms':>9s} | avx2/avx512")
    print("-" * 54)
    for k in kernels:
        old = median(r[k] for r in results["avx2"])
        new = median(r[k] for r in results["avx512"])
        rows.append({"kernel": k, "avx2_ms": old, "avx512_ms": new, "ratio": old / new})
        print(f"{k:18s} | {old:8.3f} | {new:9.3f} | {old / new:6.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "rounds": rounds,
                                               "repeats": repeats}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
