"""Benchmark fastnn's image layers and whole CNN training steps against NumPy and PyTorch.

    python bench/bench_conv.py [--quick] [--threads 1,2] [--json PATH] [--only PARTS]

Parts:

- layers: one forward plus one backward pass (training mode, input gradient included)
  of each image layer at the shapes of LeNet-5 (batch 64) and ResNet-8 (batch 128):
  fastnn's layer (layer.forward(x); layer.backward(dout)), a NumPy baseline (im2col by
  sliding_window_view + one matmul, col2im by kernel offsets; pools by reshaping;
  BatchNorm over axes (0, 2, 3)), and torch.nn's layer (autograd, gradients set to None
  before each pass). ratios: NumPy time / fastnn time, torch time / fastnn time.
- gemm: how close the convolutions come to the BLAS: a conv layer's forward + backward
  is three GEMMs of 2*N*O*K*Ho*Wo flops each (K = C/groups*kh*kw); achieved GFLOP/s of
  fastnn's layer over those of NumPy's BLAS running the same three products as single
  matrices (the arithmetic alone, no im2col) at the same thread count.
- steps: a whole training step (forward, softmax cross-entropy, backward, Adam) of
  LeNet-5 (1x28x28, batch 64: conv 6 5x5 pad 2, ReLU, max pool 2; conv 16 5x5, ReLU,
  max pool 2; fc 120, ReLU, fc 84, ReLU, fc 10) and ResNet-8 (3x32x32, batch 128: conv
  16 3x3, BN, ReLU; basic blocks 16, 32 (stride 2), 64 (stride 2) of conv-BN-ReLU-conv-BN
  plus the identity or a 1x1 stride-2 conv + BN, ReLU after the sum; global average
  pool; fc 10), fastnn's compiled plan (Trainer.train_step) against the same model in
  PyTorch; and the peak memory of 20 steps of each, each in a fresh process (resident
  set growth over the process's size after building the model and the batch).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from time import perf_counter

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

nn = fastnn.nn
PARTS = ("layers", "gemm", "steps")
FULL = Config(target=0.2, repeats=7, repeats_small=11, attempts=3, retry_budget=120)
QUICK = Config(target=0.1, repeats=3, repeats_small=5, attempts=1, retry_budget=0)
EPS = 1e-5

# (name, kind, batch, (C, H, W), layer arguments)
LENET = [
    ("lenet conv1", "conv", 64, (1, 28, 28), dict(out=6, k=5, s=1, p=2)),
    ("lenet pool1", "maxpool", 64, (6, 28, 28), dict(k=2)),
    ("lenet conv2", "conv", 64, (6, 14, 14), dict(out=16, k=5, s=1, p=0)),
    ("lenet pool2", "maxpool", 64, (16, 10, 10), dict(k=2)),
]
RESNET = [
    ("resnet conv 3-16", "conv", 128, (3, 32, 32), dict(out=16, k=3, s=1, p=1)),
    ("resnet conv 16-16", "conv", 128, (16, 32, 32), dict(out=16, k=3, s=1, p=1)),
    ("resnet conv 16-32 s2", "conv", 128, (16, 32, 32), dict(out=32, k=3, s=2, p=1)),
    ("resnet conv 32-32", "conv", 128, (32, 16, 16), dict(out=32, k=3, s=1, p=1)),
    ("resnet conv 32-64 s2", "conv", 128, (32, 16, 16), dict(out=64, k=3, s=2, p=1)),
    ("resnet conv 64-64", "conv", 128, (64, 8, 8), dict(out=64, k=3, s=1, p=1)),
    ("resnet 1x1 16-32 s2", "conv", 128, (16, 32, 32), dict(out=32, k=1, s=2, p=0)),
    ("resnet bn 16", "bn", 128, (16, 32, 32), {}),
    ("resnet bn 32", "bn", 128, (32, 16, 16), {}),
    ("resnet bn 64", "bn", 128, (64, 8, 8), {}),
    ("resnet gap", "gap", 128, (64, 8, 8), {}),
]
QUICK_LAYERS = ["lenet conv2", "lenet pool1", "resnet conv 16-16", "resnet conv 32-64 s2",
                "resnet bn 16", "resnet gap"]


# ---------------------------------------------------------------- NumPy baselines


def _out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def numpy_conv(x, w, b, s, p, dout_shape):
    """im2col forward and backward (groups 1) with NumPy's BLAS; returns the callable."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    ho, wo = _out_size(h, k, s, p), _out_size(wd, k, s, p)
    xp = np.zeros((n, c, h + 2 * p, wd + 2 * p), x.dtype)
    dxp = np.zeros_like(xp)
    dout = randn(*dout_shape)
    wm = w.reshape(o, -1)

    def step():
        xp[:, :, p:p + h, p:p + wd] = x
        win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
        cols = win[:, :, ::s, ::s].transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, -1)
        y = (cols @ wm.T + b).reshape(n, ho, wo, o).transpose(0, 3, 1, 2)
        g = dout.transpose(0, 2, 3, 1).reshape(n * ho * wo, o)
        dw = g.T @ cols
        db = g.sum(0)
        dcols = (g @ wm).reshape(n, ho, wo, c, k, k)
        dxp.fill(0)
        for i in range(k):
            for j in range(k):
                dxp[:, :, i:i + s * ho:s, j:j + s * wo:s] += dcols[..., i, j].transpose(0, 3, 1, 2)
        return y, dw, db, dxp[:, :, p:p + h, p:p + wd]

    return step


def numpy_maxpool(x, k):
    n, c, h, w = x.shape
    dout = randn(n, c, h // k, w // k)

    def step():
        v = x.reshape(n, c, h // k, k, w // k, k)
        y = v.max(axis=(3, 5))
        mask = v == y[:, :, :, None, :, None]
        dx = (mask * dout[:, :, :, None, :, None]).reshape(n, c, h, w)
        return y, dx

    return step


def numpy_bn(x):
    n, c, h, w = x.shape
    gamma, beta = np.ones((1, c, 1, 1), x.dtype), np.zeros((1, c, 1, 1), x.dtype)
    dout = randn(*x.shape)
    m = n * h * w

    def step():
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        xc = x - mean
        var = (xc * xc).mean(axis=(0, 2, 3), keepdims=True)
        inv_std = 1 / np.sqrt(var + EPS)
        xhat = xc * inv_std
        y = xhat * gamma + beta
        dbeta = dout.sum(axis=(0, 2, 3), keepdims=True)
        dgamma = (dout * xhat).sum(axis=(0, 2, 3), keepdims=True)
        dx = (m * dout - dbeta - xhat * dgamma) * gamma * inv_std / m
        return y, dx

    return step


def numpy_gap(x):
    n, c, h, w = x.shape
    dout = randn(n, c)

    def step():
        y = x.mean(axis=(2, 3))
        dx = np.broadcast_to((dout / (h * w))[:, :, None, None], x.shape).copy()
        return y, dx

    return step


# ---------------------------------------------------------------- one layer


def _layers(kind, c, args):
    """(fastnn layer, torch layer or None) for a case."""
    if kind == "conv":
        f = nn.Conv2d(c, args["out"], args["k"], stride=args["s"], padding=args["p"], seed=0)
        t = None
        if torch:
            t = torch.nn.Conv2d(c, args["out"], args["k"], stride=args["s"], padding=args["p"])
            with torch.no_grad():
                t.weight.copy_(torch.from_numpy(np.array(f.weight)))
                t.bias.zero_()
        return f, t
    if kind == "maxpool":
        return nn.MaxPool2d(args["k"]), torch.nn.MaxPool2d(args["k"]) if torch else None
    if kind == "bn":
        return nn.BatchNorm2d(c), torch.nn.BatchNorm2d(c) if torch else None
    return nn.GlobalAvgPool2d(), torch.nn.AdaptiveAvgPool2d(1) if torch else None


def make_layer_case(case):
    _, kind, n, (c, h, w), args = case
    x = randn(n, c, h, w)
    layer, tlayer = _layers(kind, c, args)
    y = layer.forward(x)
    dout = randn(*y.shape)

    def fast():
        layer.forward(x)
        layer.backward(dout)

    if kind == "conv":
        base = numpy_conv(x, np.array(layer.weight), np.array(layer.bias), args["s"],
                          args["p"], y.shape)
    elif kind == "maxpool":
        base = numpy_maxpool(x, args["k"])
    elif kind == "bn":
        base = numpy_bn(x)
    else:
        base = numpy_gap(x)
    calls = {"fastnn": fast, "numpy": base, "torch": None}
    if tlayer is not None:
        tx = torch.from_numpy(x.copy()).requires_grad_(True)
        tdout = torch.from_numpy(dout.reshape(tlayer(tx).shape))

        def torch_step():
            tx.grad = None
            for p in tlayer.parameters():
                p.grad = None
            tlayer(tx).backward(tdout)

        calls["torch"] = torch_step
    return calls, dout


def run_layers(threads, cfg, quick):
    print("\n== layers: forward + backward, training mode, float32 (size: N x C x H x W)")
    columns = [("layer", 20, "layer", ""), ("size", 14, "size", ""), ("thr", 3, "threads", "d"),
               ("numpy us", 10, "numpy_us", ".0f"), ("fastnn us", 10, "fastnn_us", ".0f")]
    if torch:
        columns.append(("torch us", 10, "torch_us", ".0f"))
    columns.append(("np/fn", 6, "numpy_ratio", ".2f"))
    if torch:
        columns.append(("torch/fn", 8, "torch_ratio", ".2f"))
    table = Table([*columns, ("note", 4, "note", "")])
    table.header()
    for case in LENET + RESNET:
        if quick and case[0] not in QUICK_LAYERS:
            continue
        calls, _ = make_layer_case(case)
        names = [k for k in ("fastnn", "numpy", "torch") if calls[k] is not None]
        for t in threads:
            timing = measure([Slot(calls[k], t) for k in names], cfg, BLAS_COOLDOWN)
            med = dict(zip(names, timing.medians))
            table.add({
                "part": "layers", "layer": case[0], "threads": t,
                "size": "x".join(map(str, (case[2], *case[3]))),
                **{f"{k}_us": med[k] * 1e6 for k in names},
                "numpy_ratio": med["numpy"] / med["fastnn"],
                "torch_ratio": med["torch"] / med["fastnn"] if "torch" in med else None,
                "note": noise_note(timing),
            })
    return table.rows


def three_gemms(o, kk, cols):
    """A conv layer's three products as single matrices: forward (o x kk)(kk x cols),
    weight gradient (o x cols)(cols x kk), input gradient (kk x o)(o x cols)."""
    a, bm, g = randn(o, kk), randn(kk, cols), randn(o, cols)
    wt = np.empty((o, kk), np.float32)
    dc = np.empty((kk, cols), np.float32)
    yc = np.empty((o, cols), np.float32)

    def run():
        np.matmul(a, bm, out=yc)
        np.matmul(g, bm.T, out=wt)
        np.matmul(a.T, g, out=dc)

    return run


def run_gemm(threads, cfg, quick):
    print("\n== gemm: conv forward + backward against the BLAS on the same three products "
          "(NumPy's BLAS, one matrix each)")
    table = Table([("layer", 20, "layer", ""), ("thr", 3, "threads", "d"),
                   ("GFLOP", 6, "gflop", ".2f"), ("fastnn GF/s", 11, "fastnn_gflops", ".1f"),
                   ("BLAS GF/s", 9, "blas_gflops", ".1f"), ("eff", 5, "efficiency", ".2f"),
                   ("note", 4, "note", "")])
    table.header()
    for case in LENET + RESNET:
        name, kind, n, (c, _, _), args = case
        if kind != "conv" or (quick and name not in QUICK_LAYERS):
            continue
        calls, dout = make_layer_case(case)
        o, kk = args["out"], c * args["k"] ** 2
        blas = three_gemms(o, kk, n * dout.shape[2] * dout.shape[3])
        flop = 3 * 2.0 * o * kk * n * dout.shape[2] * dout.shape[3]
        for t in threads:
            timing = measure([Slot(calls["fastnn"], t), Slot(blas, t)], cfg, BLAS_COOLDOWN)
            tf, tb = timing.medians
            table.add({"part": "gemm", "layer": name, "threads": t, "gflop": flop / 1e9,
                       "fastnn_gflops": flop / tf / 1e9, "blas_gflops": flop / tb / 1e9,
                       "efficiency": tb / tf, "note": noise_note(timing)})
    return table.rows


# ---------------------------------------------------------------- whole steps

MODELS = r'''
import numpy as np

def fastnn_lenet(nn):
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2, seed=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, seed=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120, seed=3), nn.ReLU(), nn.Linear(120, 84, seed=4), nn.ReLU(),
        nn.Linear(84, 10, seed=5))

def fastnn_resnet8(nn):
    def block(cin, cout, stride, seed):
        body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False, seed=seed),
            nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False, seed=seed + 1),
            nn.BatchNorm2d(cout))
        short = None
        if stride != 1 or cin != cout:
            short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False,
                                            seed=seed + 2), nn.BatchNorm2d(cout))
        return [nn.Residual(body, short), nn.ReLU()]
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False, seed=1), nn.BatchNorm2d(16), nn.ReLU(),
        *block(16, 16, 1, 10), *block(16, 32, 2, 20), *block(32, 64, 2, 30),
        nn.GlobalAvgPool2d(), nn.Linear(64, 10, seed=40))

def torch_lenet(tnn):
    return tnn.Sequential(
        tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
        tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, 10))

def torch_resnet8(tnn):
    import torch
    class Block(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = tnn.Sequential(
                tnn.Conv2d(cin, cout, 3, stride, 1, bias=False), tnn.BatchNorm2d(cout),
                tnn.ReLU(), tnn.Conv2d(cout, cout, 3, 1, 1, bias=False), tnn.BatchNorm2d(cout))
            self.short = None
            if stride != 1 or cin != cout:
                self.short = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False),
                                            tnn.BatchNorm2d(cout))
        def forward(self, x):
            return torch.relu(self.body(x) + (x if self.short is None else self.short(x)))
    return tnn.Sequential(
        tnn.Conv2d(3, 16, 3, 1, 1, bias=False), tnn.BatchNorm2d(16), tnn.ReLU(),
        Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2),
        tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(64, 10))

SHAPES = {"lenet": (64, (1, 28, 28)), "resnet8": (128, (3, 32, 32))}
'''

MEMORY_WORKER = r'''
import json, resource, sys
import numpy as np
exec(MODELS)
which, lib, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
n, shape = SHAPES[which]
rng = np.random.default_rng(0)
x = rng.standard_normal((n, *shape)).astype(np.float32)
y = rng.integers(0, 10, n)
if lib == "fastnn":
    import fastnn
    from fastnn import losses, nn, optim
    fastnn.set_num_threads(threads)
    model = fastnn_lenet(nn) if which == "lenet" else fastnn_resnet8(nn)
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.Adam(model, 1e-3),
                             progress=False)
    step = lambda: trainer.train_step(x, y)
else:
    import torch
    torch.set_num_threads(threads)
    model = torch_lenet(torch.nn) if which == "lenet" else torch_resnet8(torch.nn)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(tx), ty).backward()
        opt.step()
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
base = rss()
for _ in range(20):
    step()
# the high-water mark of this process's memory since exec (ru_maxrss would count the
# parent's resident set at fork)
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
print(json.dumps({"base": base, "peak": peak, "growth": peak - base}))
'''


def peak_memory(which, lib, threads):
    """Bytes of resident-set growth over 20 steps, in a fresh process."""
    code = "MODELS = " + repr(MODELS) + "\n" + MEMORY_WORKER
    env_path = str(Path(fastnn.__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code, which, lib, str(threads)],
                         capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "PYTHONPATH": env_path})
    return json.loads(out.stdout.strip().splitlines()[-1])["growth"]


def make_step(which):
    scope = {}
    exec(MODELS, scope)
    n, shape = scope["SHAPES"][which]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    y = rng.integers(0, 10, n)
    model = scope["fastnn_lenet" if which == "lenet" else "fastnn_resnet8"](nn)
    trainer = fastnn.Trainer(model, fastnn.losses.SoftmaxCrossEntropy(),
                             fastnn.optim.Adam(model, 1e-3), progress=False)
    calls = {"fastnn": lambda: trainer.train_step(x, y), "torch": None}
    if torch:
        tmodel = scope["torch_lenet" if which == "lenet" else "torch_resnet8"](torch.nn)
        opt = torch.optim.Adam(tmodel.parameters(), 1e-3)
        tx, ty = as_torch(x, y)

        def torch_step():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(tmodel(tx), ty).backward()
            opt.step()

        calls["torch"] = torch_step
    return calls, model


def run_steps(threads, cfg, quick):
    print("\n== steps: one training step (forward, cross-entropy, backward, Adam), float32")
    columns = [("model", 8, "model", ""), ("thr", 3, "threads", "d"),
               ("fastnn ms", 9, "fastnn_ms", ".2f")]
    if torch:
        columns += [("torch ms", 8, "torch_ms", ".2f"), ("torch/fn", 8, "torch_ratio", ".2f")]
    columns += [("fastnn MB", 9, "fastnn_mb", ".0f")]
    if torch:
        columns += [("torch MB", 8, "torch_mb", ".0f")]
    table = Table([*columns, ("note", 4, "note", "")])
    table.header()
    for which in ("lenet", "resnet8"):
        calls, model = make_step(which)
        names = [k for k in ("fastnn", "torch") if calls[k] is not None]
        for t in threads:
            timing = measure([Slot(calls[k], t) for k in names], cfg, BLAS_COOLDOWN)
            med = dict(zip(names, timing.medians))
            mem = {k: peak_memory(which, k, t) / 2**20 for k in names}
            table.add({
                "part": "steps", "model": which, "threads": t,
                **{f"{k}_ms": med[k] * 1e3 for k in names},
                **{f"{k}_mb": mem[k] for k in names},
                "torch_ratio": med["torch"] / med["fastnn"] if "torch" in med else None,
                "compiled": model._plan is not None, "note": noise_note(timing),
            })
    return table.rows


def targets(rows):
    results = []
    goals = {"lenet": 2.0, "resnet8": 1.2}
    for r in rows:
        if r["part"] != "steps" or r.get("torch_ratio") is None:
            continue
        goal = goals[r["model"]]
        results.append({
            "target": f"{r['model']} step >= {goal}x faster than PyTorch, {r['threads']} thr",
            "met": r["torch_ratio"] >= goal,
            "detail": f"{r['fastnn_ms']:.2f} ms vs {r['torch_ms']:.2f} ms: "
                      f"{r['torch_ratio']:.2f}x" + (f"; {r['note']}" if r["note"] else "")})
        results.append({
            "target": f"{r['model']} peak memory no higher than PyTorch's, {r['threads']} thr",
            "met": r["fastnn_mb"] <= r["torch_mb"],
            "detail": f"{r['fastnn_mb']:.0f} MB vs {r['torch_mb']:.0f} MB"})
    return print_targets(results)


def main(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0], "fewer layers, fewer and shorter repeats")
    add_only(parser, PARTS, "parts")
    args = parse_only(parser, parse_threads(parser, parser.parse_args(argv)), PARTS, "parts")
    cfg = QUICK if args.quick else FULL
    started = perf_counter()
    legend = ["ratios: np/fn = numpy time / fastnn time, torch/fn = torch time / fastnn time "
              "(> 1: fastnn faster); eff = BLAS time / fastnn time on the same flops"]
    info = header("fastnn convolution benchmark", args.threads, cfg, args.quick,
                  legend_lines=legend, torch_parts="its columns and the step targets")
    report = {"header": info, "rows": []}
    parts = {"layers": run_layers, "gemm": run_gemm, "steps": run_steps}
    for name, run in parts.items():
        if name in args.only:
            report["rows"] += run(args.threads, cfg, args.quick)
    report["targets"] = targets(report["rows"])
    finish(report, report["rows"], started, args.json)


if __name__ == "__main__":
    main()
