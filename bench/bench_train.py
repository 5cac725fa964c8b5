"""Benchmark one training step of an MLP in fastnn, NumPy, PyTorch and the GEMM limit.

    python bench/bench_train.py [--quick] [--threads 1,2] [--json PATH] [--plot PATH]
                                [--no-mnist] [--profile]

One training step (forward, loss, backward, optimizer update) of the same model on the
same batch, at the same thread count, in one run:

- fastnn: `nn.mlp(D, 10, hidden, batch_norm=True, dropout=0.1)` (Linear -> BatchNorm1d
  -> ReLU -> Dropout per hidden layer, then Linear), `optim.Adam(model, 1e-3)`,
  `Trainer(model, SoftmaxCrossEntropy(), opt).train_step(xb, yb)`.
- numpy: the same model written the CS231n way: a forward/backward pair per layer
  (affine, the batch normalization and inverted dropout of bench_layers.py, ReLU), a
  softmax cross-entropy loss, and Adam per parameter array (bench_optim.py's NumPy
  Adam), float32, into preallocated arrays.
- torch (when installed): torch.nn.Sequential of the same layers, CrossEntropyLoss,
  torch.optim.Adam(fused=True); zero_grad(set_to_none=True), loss.backward(), step().
- gemm: the GEMM limit, the step's matrix products alone (same shapes, float32,
  preallocated outputs): per Linear layer the forward x @ W, and backward dW += x.T @ dz
  and dx = dz @ W.T; the first layer's dx is left out, as the three steps leave it out
  (nothing needs the input's gradient). Timed by every route the machine has, the
  fastest one is the limit: fastnn.ops.matmul on each BLAS backend fastnn can use
  (scipy's OpenBLAS; MKL where installed), NumPy's threaded BLAS (np.matmul), and
  torch.mm when torch is installed. The route column says which.

Models: the large MLP 784-1024-1024-10 at batch 256, the small MLP 64-128-128-10 at
batch 32 (overhead-bound), and a sweep: 784-W-W-10 with batches 32..1024 at W = 1024
and widths 256..4096 at batch 256 (--quick: a subset). Labels are random integers in
[0, 10), inputs standard normal; each framework trains on the same batch throughout.

Also:
- peak memory: each framework (numpy, fastnn, torch) trains the large and the small MLP
  for MEM_STEPS steps in a fresh subprocess that imports only what it needs (torch
  is blocked for numpy and fastnn). "peak" (the figure the target uses) is the peak
  resident set size (VmHWM, reset after the imports and the data are created) minus
  the resident set size (VmRSS) at that point: the model, its gradients, the optimizer
  state, activations, workspaces, and whatever the framework loads or allocates on
  first use. "net" leaves that first-use part out: the process first takes one step
  of a tiny model of the same layers, and net = peak RSS during the model's steps -
  RSS after that step. "abs" is the absolute peak RSS of the process. Without
  /proc/self/clear_refs the figures are ru_maxrss differences (marked).
- MNIST time to 98% test accuracy (--no-mnist or --quick skip it): 784-512-512-10
  with BatchNorm and ReLU, Adam 1e-3, cosine decay over 5 epochs, batch 128, the same
  initial weights and the same shuffling in fastnn (Trainer.fit one epoch at a time,
  then Trainer.evaluate) and torch (indexing for batches), pixels scaled to [0, 1];
  the two train side by side, taking turns every 50 batches (a fastnn.Callback hands
  over to torch, its time taken off fastnn's clock), so that a slow spell of the
  machine hits both, with a 0.15 s pause at each handover at > 1 thread (so that the
  idle framework's threads stop spinning before the other computes); all 5 epochs;
  the figure is the wall seconds of training + evaluation until the test accuracy
  after an epoch is >= 98%, at the largest thread count, the median of 3 such runs.
  MNIST comes from $FASTNN_MNIST_DIR, else ../shared/data/mnist beside the checkout.
- --profile: where the time goes in fastnn's small-MLP step, layer by layer
  (model.compiled = False: every layer's forward and backward a call of its own) and
  compiled (each pass one call): each call of the step timed alone, at each thread
  count, the two train_step times side by side, and the Python functions that
  dominate the compiled step under cProfile.

Step times follow bench/_common.py (interleaved repeats, medians, noisy cases measured
again). Ratios: np/fn = numpy time / fastnn time, torch/fn = torch time / fastnn time
(above 1, fastnn is faster), fn/gemm = fastnn time / GEMM-limit time (1 is the limit).
"""

from __future__ import annotations

import cProfile
import json
import math
import os
import pstats
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from time import perf_counter, sleep

import numpy as np
from _common import (
    BLAS_COOLDOWN,
    BUSY,
    Config,
    OtherLoad,
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
    print_targets,
    randn,
    torch,
    using_threads,
)
from bench_layers import P_DROP, NumpyBatchNorm, NumpyDropout
from bench_optim import NumpyAdam

nn, ops, losses, optim = fastnn.nn, fastnn.ops, fastnn.losses, fastnn.optim
LR = 1e-3
ADAM_EPS = 1e-8
CLASSES = 10
MEM_STEPS = 20


@dataclass(frozen=True)
class Spec:
    """An MLP d_in -> hidden... -> CLASSES trained on batches of `batch` rows."""

    case: str  # "large", "small", "sweep" (or "warm-up": see memory_worker)
    d_in: int
    hidden: tuple
    batch: int

    @property
    def label(self):
        return "-".join(map(str, (self.d_in, *self.hidden, CLASSES)))

    @property
    def widths(self):
        return [self.d_in, *self.hidden, CLASSES]


LARGE = Spec("large", 784, (1024, 1024), 256)
SMALL = Spec("small", 64, (128, 128), 32)
SWEEP_WIDTH = 1024  # the width of the batch sweep (and of the plot)
SWEEP_BATCH = 256  # the batch of the width sweep


def sweep(batches, widths):
    """The sweep's specs; the large MLP is one of them, and keeps its name."""
    specs = [Spec("sweep", 784, (SWEEP_WIDTH,) * 2, n) for n in batches]
    specs += [Spec("sweep", 784, (w,) * 2, SWEEP_BATCH) for w in widths if w != SWEEP_WIDTH]
    return [LARGE if s.hidden == LARGE.hidden and s.batch == LARGE.batch else s
            for s in specs]


@dataclass
class TrainConfig(Config):
    specs: list
    mnist_runs: int  # 0: no MNIST part


# Repeats of >= 100 ms (50 with --quick): the first step after another framework's runs
# cold, up to 2 ms slower (784-1024-1024-10 at batch 32, 1 thread: 6.8 ms interleaved
# in 20 ms repeats, 5.1 ms in 200 ms ones or alone; torch alike, 7.3 and 5.8), and a
# training loop runs one framework's steps back to back.
FULL = TrainConfig(0.100, 7, 11, 3, 60.0, [SMALL, *sweep((32, 64, 128, 256, 512, 1024),
                                                         (256, 512, 2048, 4096))], 3)
QUICK = TrainConfig(0.050, 5, 7, 1, 0.0, [SMALL, *sweep((32, 256, 1024), (2048,))], 0)


# ---------------------------------------------------------------- NumPy baseline


class NumpyAffine:
    """CS231n affine layer: y = x @ W + b; dW = x.T @ dout, db = sum(dout), dx = dout @ W.T."""

    def __init__(self, n, d_in, d_out, rng):
        f32 = np.float32
        self.w = (rng.standard_normal((d_in, d_out)) * math.sqrt(2 / d_in)).astype(f32)
        self.b = np.zeros(d_out, f32)
        self.dw, self.db = np.empty_like(self.w), np.empty_like(self.b)
        self.y, self.dx = np.empty((n, d_out), f32), np.empty((n, d_in), f32)
        self.input_grad = True

    def params(self):
        return [(self.w, self.dw), (self.b, self.db)]

    def forward(self, x):
        self.x = x
        np.matmul(x, self.w, out=self.y)
        self.y += self.b
        return self.y

    def backward(self, dout):
        np.matmul(self.x.T, dout, out=self.dw)
        np.sum(dout, axis=0, out=self.db)
        return np.matmul(dout, self.w.T, out=self.dx) if self.input_grad else None


class NumpyReLU:
    """CS231n ReLU: y = max(x, 0); dx = dout * (x > 0)."""

    def __init__(self, n, d):
        self.y, self.dx = np.empty((n, d), np.float32), np.empty((n, d), np.float32)
        self.mask = np.empty((n, d), bool)

    def forward(self, x):
        return np.maximum(x, 0, out=self.y)

    def backward(self, dout):
        np.greater(self.y, 0, out=self.mask)
        return np.multiply(dout, self.mask, out=self.dx)


def numpy_softmax_loss(scores, y):
    """CS231n softmax loss: (mean of -log softmax(s)[y], dscores)."""
    n = len(y)
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    dscores = np.exp(log_probs)
    dscores[np.arange(n), y] -= 1
    dscores /= n
    return -log_probs[np.arange(n), y].mean(), dscores


class NumpyMLP:
    """Per hidden width: affine -> batchnorm -> ReLU -> dropout; then affine. Adam per
    parameter array; one step = forward, loss, backward, update."""

    def __init__(self, spec, seed=0):
        rng = np.random.default_rng(seed)
        n, self.layers = spec.batch, []
        widths = spec.widths
        for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
            self.layers.append(NumpyAffine(n, d_in, d_out, rng))
            if i < len(widths) - 2:
                self.layers += [NumpyBatchNorm(n, d_out), NumpyReLU(n, d_out),
                                NumpyDropout(n, d_out, P_DROP, seed + i)]
        self.layers[0].input_grad = False
        params = [p for layer in self.layers if isinstance(layer, NumpyAffine)
                  for p in layer.params()]
        params += [(bn.gamma, bn.dgamma) for bn in self.layers
                   if isinstance(bn, NumpyBatchNorm)]
        params += [(bn.beta, bn.dbeta) for bn in self.layers if isinstance(bn, NumpyBatchNorm)]
        self.optimizers = [NumpyAdam(p, g, LR, ADAM_EPS) for p, g in params]

    def train_step(self, x, y):
        for layer in self.layers:
            x = layer.forward(x)
        loss, dout = numpy_softmax_loss(x, y)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        for opt in self.optimizers:
            opt.step()
        return loss


# ---------------------------------------------------------------- the steps


def batch(spec, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((spec.batch, spec.d_in), dtype=np.float32)
    return x, rng.integers(0, CLASSES, spec.batch)


def fastnn_step(spec, x, y):
    model = nn.mlp(spec.d_in, CLASSES, list(spec.hidden), batch_norm=True, dropout=P_DROP,
                   seed=0)
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.Adam(model, LR),
                             progress=False)
    return lambda: trainer.train_step(x, y)


def numpy_step(spec, x, y):
    model = NumpyMLP(spec)
    return lambda: model.train_step(x, y)


def torch_mlp(widths, dropout):
    """torch.nn.Sequential: per hidden width Linear, BatchNorm1d, ReLU[, Dropout]; Linear."""
    layers = []
    for d_in, d_out in zip(widths[:-2], widths[1:-1]):
        layers += [torch.nn.Linear(d_in, d_out), torch.nn.BatchNorm1d(d_out), torch.nn.ReLU()]
        if dropout:
            layers.append(torch.nn.Dropout(dropout))
    layers.append(torch.nn.Linear(widths[-2], widths[-1]))
    return torch.nn.Sequential(*layers)


def torch_step(spec, x, y):
    torch.manual_seed(0)
    model = torch_mlp(spec.widths, P_DROP)
    opt = torch.optim.Adam(model.parameters(), LR, eps=ADAM_EPS, fused=True)
    criterion = torch.nn.CrossEntropyLoss()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = criterion(model(tx), ty)
        loss.backward()
        opt.step()
        return loss

    return step


def gemm_products(spec, x):
    """Per Linear layer (a, w, z, dz, dw, dx, whether dx is computed): the arrays of the
    step's products, float32, as fastnn's Linear layers use them: the weights one after
    another in one buffer, their gradients in another, placed as fastnn places a
    model's (fastnn._memory: from 2 MiB on, on huge pages whole), so that every route
    reads the same memory as the step."""
    n, calls = spec.batch, []
    shapes = list(zip(spec.widths[:-1], spec.widths[1:]))
    total = sum(d_in * d_out for d_in, d_out in shapes)
    weights = fastnn._memory.empty(total, np.float32)
    grads = fastnn._memory.zeros(total, np.float32)
    offset = 0
    for i, (d_in, d_out) in enumerate(shapes):
        a = x if i == 0 else randn(n, d_in)
        w = weights[offset:offset + d_in * d_out].reshape(d_in, d_out)
        dw = grads[offset:offset + d_in * d_out].reshape(d_in, d_out)
        w[...] = randn(d_in, d_out)
        offset += d_in * d_out
        z, dz, dx = np.empty((n, d_out), np.float32), randn(n, d_out), np.empty_like(a)
        calls.append((a, w, z, dz, dw, dx, i > 0))
    return calls


def fastnn_gemm(spec, x):
    """The step's products through fastnn.ops.matmul (the backend: the Slot's)."""
    calls = gemm_products(spec, x)

    def step():
        for a, w, z, dz, dw, dx, input_grad in calls:
            ops.matmul(a, w, out=z)
            ops.matmul(a, dz, trans_a=True, out=dw, accumulate=True)
            if input_grad:
                ops.matmul(dz, w, trans_b=True, out=dx)

    return step


def numpy_gemm(spec, x):
    """The step's products through NumPy's own BLAS, threaded (dW overwritten, not
    accumulated: NumPy has no accumulating product without a temporary)."""
    calls = gemm_products(spec, x)

    def step():
        for a, w, z, dz, dw, dx, input_grad in calls:
            np.matmul(a, w, out=z)
            np.matmul(a.T, dz, out=dw)
            if input_grad:
                np.matmul(dz, w.T, out=dx)

    return step


def torch_gemm(spec, x):
    """The step's products through torch.mm (PyTorch's BLAS, threaded)."""
    calls = [(*as_torch(*arrays), grad)
             for *arrays, grad in gemm_products(spec, x)]

    def step():
        for a, w, z, dz, dw, dx, input_grad in calls:
            torch.mm(a, w, out=z)
            dw.addmm_(a.t(), dz)
            if input_grad:
                torch.mm(dz, w.t(), out=dx)

    return step


def gemm_routes():
    """{route: (builder, fastnn backend or None)}: every way this machine has to compute
    the step's products; the GEMM limit is the fastest of them."""
    routes = {f"fastnn-{b}": (fastnn_gemm, b) for b in blas_backends()}
    routes["numpy"] = (numpy_gemm, None)
    if torch is not None:
        routes["torch"] = (torch_gemm, None)
    return routes


STEPS = {"numpy": numpy_step, "fastnn": fastnn_step, "torch": torch_step}


def frameworks():
    return [k for k in STEPS if k != "torch" or torch is not None]


# ---------------------------------------------------------------- step times


def run_steps(specs, threads, cfg):
    names = frameworks()
    routes = gemm_routes()
    print("\n== one training step (forward, loss, backward, Adam), ms per step; "
          f"Linear -> BatchNorm1d -> ReLU -> Dropout({P_DROP}) per hidden layer")
    print(f"  ({BLAS_COOLDOWN * 1e3:.0f} ms pause between frameworks at > 1 thread: their "
          "thread pools spin after a call)")
    print(f"  gemm: the GEMM limit, the fastest of {', '.join(routes)} on the step's "
          "products (route: which)\n")
    columns = [("case", 5, "case", ""), ("model", 16, "model", ""), ("N", 4, "batch", "d"),
               ("thr", 3, "threads", "d")]
    columns += [(f"{k} ms", 9, f"{k}_ms", ".3f") for k in [*names, "gemm"]]
    columns += [("np/fn", 6, "numpy_ratio", ".2f")]
    if torch is not None:
        columns.append(("torch/fn", 8, "torch_ratio", ".2f"))
    columns += [("fn/gemm", 7, "gemm_ratio", ".2f"), ("route", 15, "gemm_route", ""),
                ("note", 4, "note", "")]
    table = Table(columns)
    table.header()
    for spec in specs:
        x, y = batch(spec)
        slots = {k: Slot(STEPS[k](spec, x, y), 0) for k in names}
        slots.update({f"gemm:{r}": Slot(build(spec, x), 0, backend=b)
                      for r, (build, b) in routes.items()})
        keys = list(slots)
        for n in threads:
            for slot in slots.values():
                slot.threads = n
            timing = measure([slots[k] for k in keys], cfg, BLAS_COOLDOWN)
            t = dict(zip(keys, timing.medians))
            mins = dict(zip(keys, timing.mins))
            route = min(routes, key=lambda r: t[f"gemm:{r}"])
            t["gemm"], mins["gemm"] = t[f"gemm:{route}"], mins[f"gemm:{route}"]
            table.add({
                "case": spec.case, "model": spec.label, "widths": spec.widths,
                "batch": spec.batch, "threads": n,
                **{f"{k}_ms": t[k] * 1e3 for k in [*names, "gemm"]},
                **{f"{k}_min_ms": mins[k] * 1e3 for k in [*names, "gemm"]},
                **{f"{k}_steps_per_s": 1 / t[k] for k in [*names, "gemm"]},
                "gemm_routes_ms": {r: t[f"gemm:{r}"] * 1e3 for r in routes},
                "gemm_route": route,
                "numpy_ratio": t["numpy"] / t["fastnn"],
                "torch_ratio": t["torch"] / t["fastnn"] if "torch" in t else None,
                "gemm_ratio": t["fastnn"] / t["gemm"],
                "note": noise_note(timing), "spread": timing.spread,
                "others_cpus": timing.others, "attempts": timing.attempts,
            })
        del slots
    return table.rows


# ---------------------------------------------------------------- peak memory


def _status_kb(field):
    """A field of /proc/self/status in KiB (VmRSS: now, VmHWM: peak), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak():
    """Reset the peak RSS to the current RSS (Linux >= 4.0); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


WARM_UP = Spec("warm-up", 16, (16, 16), 8)  # a tiny model of the same layers


def memory_worker(framework, spec_fields, threads):
    """In a fresh interpreter: train `framework` on the model for MEM_STEPS steps, after
    one step of the tiny WARM_UP model; print the RSS figures (KiB) as one JSON line:
    base: RSS after the imports and the data; peak: the peak RSS from then on;
    warm: RSS after the warm-up step (what the framework loads or allocates on first use
    is in); warm_peak: the peak RSS during the model's steps; reset: whether the peak
    could be reset (if not, every peak is ru_maxrss, the peak since the start)."""
    spec = Spec(*spec_fields)
    x, y = batch(spec)
    wx, wy = batch(WARM_UP)
    base = _status_kb("VmRSS")
    reset = base is not None and _reset_peak()

    def now():
        return _status_kb("VmRSS") if reset else resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss

    def peak():
        return _status_kb("VmHWM") if reset else resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss

    base = now()
    with using_threads(threads):
        STEPS[framework](WARM_UP, wx, wy)()
        first, warm = peak(), now()
        reset = reset and _reset_peak()
        step = STEPS[framework](spec, x, y)
        for _ in range(MEM_STEPS):
            step()
    last = peak()
    print(json.dumps({"base_kb": base, "peak_kb": max(first, last), "warm_kb": warm,
                      "warm_peak_kb": last, "reset": reset}))


_WORKER = ("import sys; sys.path.insert(0, {bench!r}); {block}"
           "import bench_train; bench_train.memory_worker({name!r}, {spec!r}, {threads})")


def run_memory(specs, threads):
    names = frameworks()
    print(f"\n== peak memory: {MEM_STEPS} training steps in a fresh process per framework "
          f"(torch not imported for numpy and fastnn), {threads} thr")
    print("  peak MiB = peak RSS - RSS after the imports and the data (the model, its "
          "gradients, optimizer state, activations, workspaces, and what the framework "
          "loads on first use); net MiB = peak RSS during the steps - RSS after one step of "
          f"a tiny {WARM_UP.label} model taken first (first-use loading left out); "
          "abs MiB = the process's absolute peak RSS (imports included)\n")
    table = Table([("case", 5, "case", ""), ("model", 16, "model", ""), ("N", 4, "batch", "d"),
                   ("framework", 9, "framework", ""), ("peak MiB", 8, "peak_mib", ".1f"),
                   ("net MiB", 8, "net_mib", ".1f"), ("abs MiB", 8, "abs_mib", ".1f"),
                   ("note", 4, "note", "")])
    table.header()
    bench = str(Path(__file__).resolve().parent)
    for spec in specs:
        for name in names:
            code = _WORKER.format(bench=bench, name=name, threads=threads,
                                  spec=(spec.case, spec.d_in, spec.hidden, spec.batch),
                                  block="" if name == "torch" else "sys.modules['torch'] = None; ")
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            row = {"case": spec.case, "model": spec.label, "batch": spec.batch,
                   "framework": name, "threads": threads, "note": None}
            if done.returncode:
                row["note"] = f"FAILED: {done.stderr.strip().splitlines()[-1:]}"
            else:
                kib = json.loads(done.stdout.strip().splitlines()[-1])
                row.update(peak_mib=(kib["peak_kb"] - kib["base_kb"]) / 1024,
                           net_mib=(kib["warm_peak_kb"] - kib["warm_kb"]) / 1024,
                           abs_mib=kib["peak_kb"] / 1024, kib=kib)
                if not kib["reset"]:
                    row["note"] = "no peak reset: ru_maxrss differences"
            table.add(row)
    return table.rows


# ---------------------------------------------------------------- MNIST time to 98%


MNIST_HIDDEN = [512, 512]
MNIST_EPOCHS = 5
MNIST_BATCH = 128
MNIST_GOAL = 0.98
MNIST_SEED = 0
TURN_STEPS = 50  # batches each framework trains before the other takes its turn
TURN_PAUSE = 0.15  # s between turns at > 1 thread: the idle thread pool stops spinning


def load_mnist_flat():
    """((x_train, y_train), (x_test, y_test)): float32 rows in [0, 1], int64 labels."""
    from fastnn import datasets  # fastnn is importable: _common saw to it

    folder = os.environ.get("FASTNN_MNIST_DIR") or str(
        Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
    (xtr, ytr), (xte, yte) = datasets.load_mnist(folder)

    def flat(images, labels):
        return images.reshape(len(images), -1).astype(np.float32) / 255, labels.astype(np.int64)

    return flat(xtr, ytr), flat(xte, yte)


class Turns(fastnn.Callback):
    """Hands over to `other` every TURN_STEPS batches of Trainer.fit, so that two
    frameworks training side by side meet the same machine (a busy spell on a VM hits
    both); fit's clock runs on meanwhile, so the time away is added up, to be taken off."""

    def __init__(self, other, pause=0.0):
        self.other, self.away, self.pause = other, 0.0, pause

    def on_batch_end(self, trainer, step, loss):
        if step % TURN_STEPS == 0:
            start = perf_counter()
            if self.pause:  # let the other framework's idle threads stop spinning
                sleep(self.pause)
            self.other()
            if self.pause:
                sleep(self.pause)
            self.away += perf_counter() - start


def mnist_torch(model, train, test):
    """The recipe in torch, as a generator: None after every TURN_STEPS batches, the test
    accuracy at the end of each epoch. The same shuffling (NumPy's permutation from the
    same seed, as Trainer.fit draws it), batches gathered by indexing, the cosine
    schedule stepped per epoch, evaluation in batches of 1024 (as Trainer.evaluate)."""
    opt = torch.optim.Adam(model.parameters(), LR, eps=ADAM_EPS, fused=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, MNIST_EPOCHS)
    criterion = torch.nn.CrossEntropyLoss()
    (xtr, ytr), (xte, yte) = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in (train, test)]
    rng = np.random.default_rng(MNIST_SEED)
    for _ in range(MNIST_EPOCHS):
        model.train()
        order = torch.from_numpy(rng.permutation(len(xtr)))
        for step, lo in enumerate(range(0, len(xtr), MNIST_BATCH), 1):
            idx = order[lo:lo + MNIST_BATCH]
            opt.zero_grad(set_to_none=True)
            loss = criterion(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            if step % TURN_STEPS == 0:
                yield None
        schedule.step()
        model.eval()
        with torch.no_grad():
            right = sum(int((model(xte[lo:lo + 1024]).argmax(1) == yte[lo:lo + 1024]).sum())
                        for lo in range(0, len(xte), 1024))
        yield right / len(xte)


def torch_twin(model):
    """A torch copy of an nn.mlp (BatchNorm, ReLU, no dropout) with its initial weights."""
    twin = torch_mlp([model.layers[0].in_features, *MNIST_HIDDEN, CLASSES], 0.0)
    mine = [m for m in model.layers if isinstance(m, nn.Linear)]
    theirs = [m for m in twin if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for a, b in zip(mine, theirs):
            b.weight.copy_(torch.from_numpy(np.ascontiguousarray(a.weight.T)))
            b.bias.copy_(torch.from_numpy(a.bias))
    return twin


def _mnist_run(train, test, threads):
    """One run of the recipe in fastnn and torch side by side, taking turns every
    TURN_STEPS batches: ({framework: [(cumulative seconds, test accuracy) per epoch]},
    CPUs other processes kept busy meanwhile)."""
    model = nn.mlp(784, CLASSES, MNIST_HIDDEN, batch_norm=True, seed=MNIST_SEED)
    clock = {"fastnn": 0.0}
    curves = {"fastnn": []}
    callbacks = []
    if torch is not None:
        twin = mnist_torch(torch_twin(model), train, test)
        clock["torch"], curves["torch"] = 0.0, []

        def torch_turn():
            start = perf_counter()
            result = next(twin)
            clock["torch"] += perf_counter() - start
            return result

        callbacks.append(Turns(torch_turn, TURN_PAUSE if threads > 1 else 0.0))
    opt = optim.Adam(model, LR)
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), opt,
                             schedule=optim.CosineDecay(opt, MNIST_EPOCHS), callbacks=callbacks,
                             progress=False)
    load = OtherLoad()
    with using_threads(threads):
        for epoch in range(MNIST_EPOCHS):
            away = sum(cb.away for cb in callbacks)
            start = perf_counter()
            trainer.fit(*train, epochs=1, batch_size=MNIST_BATCH,
                        seed=MNIST_SEED if epoch == 0 else None)
            accuracy = trainer.evaluate(*test)["accuracy"]
            clock["fastnn"] += perf_counter() - start - (sum(cb.away for cb in callbacks) - away)
            curves["fastnn"].append((clock["fastnn"], accuracy))
            if torch is not None:  # the rest of torch's epoch, and its evaluation
                pause = TURN_PAUSE if threads > 1 else 0.0
                sleep(pause)
                while (accuracy := torch_turn()) is None:
                    pass
                curves["torch"].append((clock["torch"], accuracy))
                sleep(pause)
    return curves, load.cpus()


def run_mnist(threads, n_runs):
    widths = [784, *MNIST_HIDDEN, CLASSES]
    print(f"\n== MNIST: time to {MNIST_GOAL:.0%} test accuracy, {'-'.join(map(str, widths))} "
          f"BatchNorm ReLU, Adam {LR:g}, cosine over {MNIST_EPOCHS} epochs, batch "
          f"{MNIST_BATCH}, {threads} thr, {n_runs} runs")
    try:
        train, test = load_mnist_flat()
    except (OSError, ValueError) as exc:
        print(f"  skipped: cannot load MNIST ({exc})")
        return None
    print("  per epoch: seconds of training + test evaluation (cumulative), test accuracy; "
          "the same initial weights and shuffling in both; the frameworks take turns every "
          f"{TURN_STEPS} batches; 'median' rows: medians over the runs (to {MNIST_GOAL:.0%}: "
          "of the runs' times, 'not reached' counting as the longest)\n")
    runs = [_mnist_run(train, test, threads) for _ in range(n_runs)]
    table = Table([("framework", 9, "framework", ""), ("run", 6, "run", ""),
                   *[(f"epoch {e + 1}", 15, f"epoch{e + 1}", "") for e in range(MNIST_EPOCHS)],
                   (f"to {MNIST_GOAL:.0%}", 11, "to_goal", ""), ("note", 4, "note", "")])
    table.header()
    result = {"threads": threads, "widths": widths, "epochs": MNIST_EPOCHS,
              "batch": MNIST_BATCH, "goal": MNIST_GOAL, "runs": n_runs}
    for name in runs[0][0]:
        reached = []
        for i, (curves, others) in enumerate(runs, 1):
            curve = curves[name]
            reached.append(next((s for s, acc in curve if acc >= MNIST_GOAL), math.inf))
            note = f"noisy (other processes used {others:.1f} CPUs)" if others > BUSY else None
            table.add({"framework": name, "run": str(i), "note": note,
                       **{f"epoch{e + 1}": f"{s:6.1f} s {acc:.4f}"
                          for e, (s, acc) in enumerate(curve)},
                       "to_goal": f"{reached[-1]:.1f} s" if reached[-1] < math.inf
                       else "not reached"})
        middle = median(reached)
        table.add({"framework": name, "run": "median",
                   **{f"epoch{e + 1}": f"{median(r[0][name][e][0] for r in runs):6.1f} s"
                      for e in range(MNIST_EPOCHS)},
                   "to_goal": f"{middle:.1f} s" if middle < math.inf else "not reached"})
        result[name] = {
            "curves": [r[0][name] for r in runs], "others_cpus": [r[1] for r in runs],
            "seconds_to_goal_runs": [t if t < math.inf else None for t in reached],
            "seconds_to_goal": middle if middle < math.inf else None}
    return result


# ---------------------------------------------------------------- profile


def _instrumented_step(model, loss, opt, x, y, times):
    """trainer.train_step's work, call by call, each call's seconds appended to times.
    A compiled model (model.compiled) runs its forward and backward pass as one call
    each; otherwise every layer's forward and backward is a call of its own."""
    def timed(key, fn, *args):
        start = perf_counter()
        result = fn(*args)
        times.setdefault(key, []).append(perf_counter() - start)
        return result

    timed("opt.zero_grad()", opt.zero_grad)
    if model.compiled:
        scores = timed("Sequential.forward (one call)", model.forward, x)
    else:
        out = x
        for i, layer in enumerate(model.layers):
            out = timed(f"[{i}] {type(layer).__name__}.forward", layer.forward, out)
        scores = timed("Sequential.forward: scores.copy()", out.copy)
    timed("loss.forward", loss.forward, scores, y)
    dout = timed("loss.backward", loss.backward)
    if model.compiled:
        timed("Sequential.backward (one call)", model.backward, dout, False)
    else:
        model.layers[0].input_grad = False
        for i in reversed(range(len(model.layers))):
            layer = model.layers[i]
            dout = timed(f"[{i}] {type(layer).__name__}.backward", layer.backward, dout)
    timed("opt.step()", opt.step)


def _profile_variant(spec, x, y, threads, compiled, repeats):
    """({call: median us}, train_step median us) per thread count."""
    calls, whole = {}, {}
    for n in threads:
        model = nn.mlp(spec.d_in, CLASSES, list(spec.hidden), batch_norm=True,
                       dropout=P_DROP, seed=0)
        model.compiled = compiled
        opt, loss = optim.Adam(model, LR), losses.SoftmaxCrossEntropy()
        trainer = fastnn.Trainer(model, loss, opt, progress=False)
        times, steps = {}, []
        with using_threads(n):
            for _ in range(repeats):
                _instrumented_step(model, loss, opt, x, y, times)
                start = perf_counter()
                trainer.train_step(x, y)
                steps.append(perf_counter() - start)
        calls[n] = {k: median(v) * 1e6 for k, v in times.items()}
        whole[n] = median(steps) * 1e6
    return calls, whole, trainer


def run_profile(threads, repeats=2000):
    """Where the time goes in fastnn's small-MLP step, layer by layer (model.compiled =
    False: every layer a Python call, as before compiled plans) and compiled (the whole
    forward and backward pass one call each): each call of the step timed alone
    (medians), at each thread count; then cProfile of the compiled step at the largest."""
    spec = SMALL
    x, y = batch(spec)
    print(f"\n== profile: fastnn's small-MLP step ({spec.label}, batch {spec.batch}, "
          f"Linear -> BatchNorm1d -> ReLU -> Dropout({P_DROP}) per hidden layer, Adam)")
    print(f"  the step's calls one by one, median us of {repeats} steps; "
          "trainer.train_step timed whole in between; layer by layer, then compiled\n")
    result = {}
    for variant, compiled in (("layer_by_layer", False), ("compiled", True)):
        calls, whole, trainer = _profile_variant(spec, x, y, threads, compiled, repeats)
        result[variant] = {"calls_us": calls, "train_step_us": whole}
        print(f"  {variant.replace('_', ' ')}:")
        table = Table([("call", 34, "call", ""),
                       *[(f"{n} thr us", 9, f"us{n}", ".1f") for n in threads],
                       *[(f"{n} thr %", 7, f"pct{n}", ".1f") for n in threads]])
        table.header()
        for key in calls[threads[0]]:
            table.add({"call": key, **{f"us{n}": calls[n][key] for n in threads},
                       **{f"pct{n}": 100 * calls[n][key] / whole[n] for n in threads}})
        table.add({"call": "sum of the calls",
                   **{f"us{n}": sum(calls[n].values()) for n in threads}})
        table.add({"call": "trainer.train_step (whole)",
                   **{f"us{n}": whole[n] for n in threads}})
        print()
    before, after = result["layer_by_layer"], result["compiled"]
    print("  train_step, layer by layer -> compiled: " + ", ".join(
        f"{n} thr {before['train_step_us'][n]:.1f} -> {after['train_step_us'][n]:.1f} us "
        f"({before['train_step_us'][n] / after['train_step_us'][n]:.2f}x)" for n in threads))
    n = max(threads)
    profiler = cProfile.Profile()
    with using_threads(n):
        profiler.enable()
        for _ in range(repeats):
            trainer.train_step(x, y)
        profiler.disable()
    print(f"\n  cProfile of {repeats} compiled train_step calls at {n} thr, by own time (a "
          "kernel's time counts in the Python function that calls it; cProfile slows "
          "Python calls down: compare shares, not times):")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(12)
    rows = [{"function": f"{Path(path).name}:{line}({fn})", "calls": ncalls,
             "tottime_s": tottime, "cumtime_s": cumtime}
            for (path, line, fn), (_, ncalls, tottime, cumtime, _) in stats.stats.items()]
    rows.sort(key=lambda r: -r["tottime_s"])
    result["cprofile_threads"] = n
    result["cprofile_top"] = rows[:30]
    return result


# ---------------------------------------------------------------- plot


def plot(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"\nno plot: matplotlib is not installed (pip install matplotlib); {path} "
              "not written")
        return None
    chosen = [r for r in rows if r["case"] != "small" and r["widths"][1] == SWEEP_WIDTH]
    threads = sorted({r["threads"] for r in chosen})
    if not chosen:
        print("\nno plot: no batch sweep in this run")
        return None
    fig, axes = plt.subplots(1, len(threads), figsize=(6 * len(threads), 4.2), squeeze=False)
    styles = {"numpy": "o-", "fastnn": "s-", "torch": "^-", "gemm": "k--"}
    for ax, n in zip(axes[0], threads):
        at_n = sorted((r for r in chosen if r["threads"] == n), key=lambda r: r["batch"])
        batches = [r["batch"] for r in at_n]
        for name in [*frameworks(), "gemm"]:
            label = "GEMM limit" if name == "gemm" else name
            ax.plot(batches, [r[f"{name}_steps_per_s"] for r in at_n], styles[name], label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("training steps / s")
        ax.set_title(f"784-{SWEEP_WIDTH}-{SWEEP_WIDTH}-10, {n} thread{'s' * (n > 1)}")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"\nwrote {path}")
    return str(path)


# ---------------------------------------------------------------- targets


def targets(rows, memory, mnist):
    """The issue's targets, on this run's figures, per thread count."""
    checks = [  # (name, case, key, goal, at most?)
        ("large MLP: fastnn step <= 1.15x the GEMM limit", "large", "gemm_ratio", 1.15, True),
        ("large MLP: >= 1.2x faster than PyTorch", "large", "torch_ratio", 1.2, False),
        ("large MLP: >= 3x faster than the NumPy baseline", "large", "numpy_ratio", 3.0, False),
        ("small MLP: >= 5x faster than PyTorch", "small", "torch_ratio", 5.0, False),
        ("sweep: >= 1.2x faster than PyTorch", "sweep", "torch_ratio", 1.2, False),
    ]
    results = []
    for name, case, key, goal, at_most in checks:
        for r in rows:
            if r["case"] != case or r.get(key) is None:
                continue
            met = r[key] <= goal if at_most else r[key] >= goal
            detail = f"ratio {r[key]:.2f}, goal {goal:.2f}"
            if not at_most:  # what fastnn at its GEMM limit would reach
                other = key.removesuffix("_ratio")
                detail += f"; {r[other + '_ms'] / r['gemm_ms']:.2f} at the GEMM limit"
            if r["note"]:
                detail += f"; {r['note']}"
            where = f", {r['model']} batch {r['batch']}" if case == "sweep" else ""
            results.append({"target": f"{name}{where}, {r['threads']} thr", "case": case,
                            "threads": r["threads"], "goal": goal, "met": met,
                            "ratio": r[key], "detail": detail})
    if mnist and "torch" in mnist:
        mine, theirs = (mnist[k]["seconds_to_goal"] for k in ("fastnn", "torch"))
        if mine is None:
            met, detail = False, "fastnn did not reach it"
        elif theirs is None:
            met, detail = True, f"fastnn {mine:.1f} s, torch did not reach it"
        else:
            met = theirs / mine >= 1.2
            detail = (f"fastnn {mine:.1f} s, torch {theirs:.1f} s, ratio {theirs / mine:.2f}; "
                      f"medians of {mnist['runs']} runs")
        results.append({"target": f"MNIST time to {MNIST_GOAL:.0%}: >= 1.2x faster than "
                        f"PyTorch, {mnist['threads']} thr", "case": "mnist", "goal": 1.2,
                        "met": met, "detail": detail})
    for case in ("large", "small"):
        mem = {r["framework"]: r for r in memory if r["case"] == case and "peak_mib" in r}
        if "fastnn" not in mem or "torch" not in mem:
            continue
        mine, theirs = mem["fastnn"], mem["torch"]
        results.append({
            "target": f"{case} MLP: peak memory no higher than PyTorch's", "case": case,
            "met": mine["peak_mib"] <= theirs["peak_mib"],
            "detail": f"peak RSS - RSS after imports and data: fastnn {mine['peak_mib']:.1f} "
                      f"MiB, torch {theirs['peak_mib']:.1f} MiB; net of first-use loading: "
                      f"fastnn {mine['net_mib']:.1f} MiB, torch {theirs['net_mib']:.1f} MiB"})
    return print_targets(results)


# ---------------------------------------------------------------- command line


def parse_args(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0],
                         "the small and large MLPs and a few sweep sizes, fewer and shorter "
                         "repeats, no MNIST")
    parser.add_argument("--plot", metavar="PATH",
                        help="draw steps/s against batch size (the sweep at width "
                             f"{SWEEP_WIDTH}) into a PNG; needs matplotlib")
    parser.add_argument("--no-mnist", action="store_true",
                        help="skip the MNIST time-to-accuracy part")
    parser.add_argument("--profile", action="store_true",
                        help="also profile fastnn's small-MLP step (phases, cProfile)")
    return parse_threads(parser, parser.parse_args(argv))


def main(argv=None):
    args = parse_args(argv)
    cfg = QUICK if args.quick else FULL
    started = perf_counter()
    legend = ["ratios: np/fn = numpy / fastnn, torch/fn = torch / fastnn (> 1: fastnn "
              "faster); fn/gemm = fastnn / GEMM limit (1: the limit)"]
    info = header("fastnn training-step benchmark", args.threads, cfg, args.quick,
                  legend_lines=legend, torch_parts="its columns and targets")
    report = {"header": info}
    report["rows"] = run_steps(cfg.specs, args.threads, cfg)
    top = max(args.threads)
    report["memory"] = run_memory([LARGE, SMALL], top)
    report["mnist"] = (run_mnist(top, cfg.mnist_runs) if cfg.mnist_runs and not args.no_mnist
                       else None)
    if args.plot:
        report["plot"] = plot(report["rows"], args.plot)
    if args.profile:
        report["profile"] = run_profile(args.threads)
    report["targets"] = targets(report["rows"], report["memory"], report["mnist"])
    finish(report, report["rows"], started, args.json)


if __name__ == "__main__":
    main()
