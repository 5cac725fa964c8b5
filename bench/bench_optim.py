"""Benchmark fastnn's fused optimizer steps against NumPy (and PyTorch, if installed).

    python bench/bench_optim.py [--quick] [--threads 1,2] [--json PATH]

One step of SGD with momentum, SGD with Nesterov momentum, Adagrad, RMSProp, Adam and
AdamW over n float32 parameters held in one flat arena (n = 1e5, 1e6, 1e7):

- fastnn: opt.step() over the one Parameter of an nn.Arena: one fused kernel pass.
- NumPy: the seed lecture's update rule, written with in-place NumPy operations on
  preallocated arrays (one scratch array), e.g. Adam:
  m *= b1; m += (1-b1)*g; v *= b2; v += (1-b2)*g*g; p -= lr/bc1 * m / (sqrt(v/bc2) + eps).
- PyTorch: torch.optim with foreach=True, and with fused=True where this torch supports
  it (tried at start), on a tensor of its own.

Before timing, every implementation takes three steps from the same start at a small
size, and the results are compared with fastnn's (the "check" lines).

The same run measures this machine's memory bandwidth on 1e8-byte arrays: a copy
(np.copyto; and torch's copy_, which uses threads), and an in-place read+write pass
(a *= s). Each fastnn step's effective bandwidth is the bytes its update must read and
write (e.g. Adam reads p, g, m, v and writes p, m, v: 7 x 4 bytes per parameter) over
its time, given as a fraction of the copy bandwidth at the same thread count (the
faster of np.copyto and torch's copy_).

Timing follows bench/_common.py (interleaved repeats, medians, noisy cases measured
again), at 1 thread and at all usable CPUs. ratios: other time / fastnn time; above 1,
fastnn is faster.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from time import perf_counter
from typing import Callable

import numpy as np
from _common import (
    Config,
    Slot,
    Table,
    base_parser,
    fastnn,
    finish,
    header,
    measure,
    noise_note,
    parse_threads,
    print_targets,
    randn,
    size_label,
    torch,
)

optim = fastnn.optim
FULL_SIZES = [10**5, 10**6, 10**7]
QUICK_SIZES = [10**6, 10**7]
BANDWIDTH_BYTES = 10**8
CHECK_SIZE = 4096
CHECK_STEPS = 3
MU = 0.9  # momentum
BETAS = (0.9, 0.999)


@dataclass
class OptimConfig(Config):
    sizes: list


FULL = OptimConfig(0.020, 7, 11, 3, 150.0, FULL_SIZES)
QUICK = OptimConfig(0.010, 5, 7, 1, 0.0, QUICK_SIZES)


# ---------------------------------------------------------------- NumPy baselines


class NumpySGD:
    """Seed: v = mu*v - lr*dx; x += v. Nesterov (CS231n): v_prev = v; v = mu*v - lr*dx;
    x += -mu*v_prev + (1+mu)*v."""

    def __init__(self, p, g, lr, nesterov):
        self.p, self.g, self.lr, self.nesterov = p, g, lr, nesterov
        self.v, self.tmp = np.zeros_like(p), np.empty_like(p)

    def step(self):
        p, v, tmp = self.p, self.v, self.tmp
        if self.nesterov:
            np.multiply(v, -MU, out=tmp)
            p += tmp
        v *= MU
        np.multiply(self.g, self.lr, out=tmp)
        v -= tmp
        if self.nesterov:
            np.multiply(v, 1 + MU, out=tmp)
            p += tmp
        else:
            p += v


class NumpyAdagrad:
    """Seed: cache += dx**2; x -= lr * dx / (sqrt(cache) + eps)."""

    def __init__(self, p, g, lr, eps):
        self.p, self.g, self.lr, self.eps = p, g, lr, eps
        self.cache, self.tmp = np.zeros_like(p), np.empty_like(p)

    def step(self):
        g, tmp = self.g, self.tmp
        np.multiply(g, g, out=tmp)
        self.cache += tmp
        np.sqrt(self.cache, out=tmp)
        tmp += self.eps
        np.divide(g, tmp, out=tmp)
        tmp *= self.lr
        self.p -= tmp


class NumpyRMSProp:
    """Seed: cache = decay*cache + (1-decay)*dx**2; x -= lr * dx / (sqrt(cache) + eps)."""

    def __init__(self, p, g, lr, alpha, eps):
        self.p, self.g, self.lr, self.alpha, self.eps = p, g, lr, alpha, eps
        self.cache, self.tmp = np.zeros_like(p), np.empty_like(p)

    def step(self):
        g, cache, tmp = self.g, self.cache, self.tmp
        cache *= self.alpha
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.alpha
        cache += tmp
        np.sqrt(cache, out=tmp)
        tmp += self.eps
        np.divide(g, tmp, out=tmp)
        tmp *= self.lr
        self.p -= tmp


class NumpyAdam:
    """Seed: m = b1*m + (1-b1)*dx; v = b2*v + (1-b2)*dx**2; with bias correction
    x -= lr * (m/bc1) / (sqrt(v/bc2) + eps). AdamW first decays x *= 1 - lr*wd."""

    def __init__(self, p, g, lr, eps, weight_decay=0.0):
        self.p, self.g, self.lr, self.eps, self.weight_decay = p, g, lr, eps, weight_decay
        self.m, self.v, self.tmp = np.zeros_like(p), np.zeros_like(p), np.empty_like(p)
        self.t = 0

    def step(self):
        b1, b2 = BETAS
        p, g, m, v, tmp = self.p, self.g, self.m, self.v, self.tmp
        self.t += 1
        if self.weight_decay:
            p *= 1 - self.lr * self.weight_decay
        m *= b1
        np.multiply(g, 1 - b1, out=tmp)
        m += tmp
        v *= b2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp *= 1 / math.sqrt(1 - b2**self.t)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= self.lr / (1 - b1**self.t)
        p -= tmp


# ---------------------------------------------------------------- optimizers


@dataclass
class Case:
    """One optimizer: its fastnn and torch constructors, the NumPy step, its traffic.

    fastnn(params) and torch(params, **flags) build optimizers; numpy(p, g) builds the
    NumPy baseline (its step() updates p in place); arrays = arrays read + arrays
    written per step.
    """

    name: str
    fastnn: Callable
    numpy: Callable
    torch: Callable | None
    arrays: int
    numpy_form: str


def _torch_optim(name, **hyper):
    """A constructor of torch.optim.<name>(params, **hyper, **flags), or None."""
    if torch is None:
        return None
    cls = getattr(torch.optim, name)
    return lambda params, **flags: cls(params, **hyper, **flags)


def _cases():
    lr_sgd, lr = 0.01, 1e-3
    return [
        Case("SGD momentum", lambda ps: optim.SGD(ps, lr_sgd, momentum=MU),
             lambda p, g: NumpySGD(p, g, lr_sgd, False),
             _torch_optim("SGD", lr=lr_sgd, momentum=MU), 5,
             "v *= mu; v -= lr*g; p += v"),
        Case("SGD Nesterov", lambda ps: optim.SGD(ps, lr_sgd, momentum=MU, nesterov=True),
             lambda p, g: NumpySGD(p, g, lr_sgd, True),
             _torch_optim("SGD", lr=lr_sgd, momentum=MU, nesterov=True), 5,
             "p += -mu*v; v *= mu; v -= lr*g; p += (1+mu)*v"),
        Case("Adagrad", lambda ps: optim.Adagrad(ps, lr_sgd, eps=1e-10),
             lambda p, g: NumpyAdagrad(p, g, lr_sgd, 1e-10),
             _torch_optim("Adagrad", lr=lr_sgd, eps=1e-10), 5,
             "cache += g*g; p -= lr*g/(sqrt(cache) + eps)"),
        Case("RMSProp", lambda ps: optim.RMSProp(ps, lr_sgd, alpha=0.99, eps=1e-8),
             lambda p, g: NumpyRMSProp(p, g, lr_sgd, 0.99, 1e-8),
             _torch_optim("RMSprop", lr=lr_sgd, alpha=0.99, eps=1e-8), 5,
             "cache *= a; cache += (1-a)*g*g; p -= lr*g/(sqrt(cache) + eps)"),
        Case("Adam", lambda ps: optim.Adam(ps, lr, betas=BETAS, eps=1e-8),
             lambda p, g: NumpyAdam(p, g, lr, 1e-8),
             _torch_optim("Adam", lr=lr, betas=BETAS, eps=1e-8), 7,
             "m *= b1; m += (1-b1)*g; v *= b2; v += (1-b2)*g*g; "
             "p -= lr/bc1 * m/(sqrt(v)/sqrt(bc2) + eps)"),
        Case("AdamW", lambda ps: optim.AdamW(ps, lr, betas=BETAS, eps=1e-8, weight_decay=0.01),
             lambda p, g: NumpyAdam(p, g, lr, 1e-8, weight_decay=0.01),
             _torch_optim("AdamW", lr=lr, betas=BETAS, eps=1e-8, weight_decay=0.01), 7,
             "p *= 1 - lr*wd; then Adam's passes"),
    ]


class Setup:
    """The implementations of one case at n parameters, each with its own p and state,
    all from the same start and reading the same gradient."""

    def __init__(self, case, n):
        start = randn(n)
        self.g = randn(n)
        arena = fastnn.nn.Arena([("p", start, "weight")], np.float32)
        arena.grad[:] = self.g
        self.fastnn_p = arena.data
        self.fastnn_opt = case.fastnn(list(arena.params.values()))
        self.numpy_p = start.copy()
        self.calls = {"fastnn": self.fastnn_opt.step,
                      "numpy": case.numpy(self.numpy_p, self.g).step}
        self.torch_p = {}
        if case.torch is not None:
            for flavour in ("foreach", "fused"):
                built = self._torch(case, start, flavour)
                if built is not None:
                    self.torch_p[flavour], self.calls[flavour] = built

    def _torch(self, case, start, flavour):
        """(parameter, step) for torch.optim with foreach=True or fused=True; None when
        this torch does not support the flavour for this optimizer on CPU."""
        param = torch.from_numpy(start.copy()).requires_grad_(True)
        # A copy of its own: torch's foreach SGD with Nesterov momentum adds the momentum
        # buffer to .grad in place (so, timed step after step, its gradient drifts).
        param.grad = torch.from_numpy(self.g.copy())
        try:
            opt = case.torch([param], **{flavour: True})
        except (RuntimeError, ValueError, TypeError):
            return None
        return param, opt.step


def check(case):
    """Largest relative difference from fastnn's parameters, per other implementation,
    after CHECK_STEPS steps from the same start."""
    setup = Setup(case, CHECK_SIZE)
    try:
        for _ in range(CHECK_STEPS):
            for p in setup.torch_p.values():  # in case a step added to it (see Setup)
                p.grad.copy_(torch.from_numpy(setup.g))
            for fn in setup.calls.values():
                fn()
    except RuntimeError as e:  # e.g. a fused kernel missing on this CPU
        return {"error": str(e)}
    mine = setup.fastnn_p
    others = {"numpy": setup.numpy_p, **{k: p.detach().numpy() for k, p in setup.torch_p.items()}}
    scale = np.abs(mine).max()
    return {k: float(np.abs(mine - other).max() / scale) for k, other in others.items()}


# ---------------------------------------------------------------- bandwidth


def _split(fn, arrays, parts, pool):
    """A callable running fn over `parts` equal slices of the arrays, one Python thread
    each (NumPy releases the GIL in these loops): NumPy's copy at `parts` threads."""
    if parts == 1:
        return lambda: fn(*arrays)
    jobs = list(zip(*(np.array_split(a, parts) for a in arrays)))

    def run():
        for future in [pool.submit(fn, *job) for job in jobs]:
            future.result()

    return run


def run_bandwidth(threads, cfg):
    """Copy and in-place read+write bandwidth, in GB/s, at each thread count."""
    n = BANDWIDTH_BYTES // 4
    src, dst, inplace = randn(n), np.empty(n, np.float32), randn(n)
    one = np.float32(1)
    traffic = 2 * BANDWIDTH_BYTES  # every figure: one array read, one written
    print(f"\n== memory bandwidth, {BANDWIDTH_BYTES:.0e}-byte float32 arrays "
          "(bytes read + written per second)")
    print("  copy: np.copyto(dst, src), the arrays split in `thr` slices copied by as many "
          "Python threads" + ("; torch copy: dst.copy_(src)" if torch else ""))
    print("  in place: np.multiply(a, 1, out=a), split the same way: one array read and "
          "written, as an optimizer updates p, m, v")
    print("  copy bw = the faster copy at that thread count, the reference for %copy below; "
          "a copy also pays a write-allocate read of dst, an in-place update does not\n")
    columns = [("thr", 3, "threads", "d"), ("copy GB/s", 10, "copyto_gbs", ".1f"),
               ("in place", 10, "inplace_gbs", ".1f")]
    if torch:
        columns.append(("torch copy", 10, "torch_copy_gbs", ".1f"))
    table = Table([*columns, ("copy bw", 8, "copy_gbs", ".1f"), ("note", 4, "note", "")])
    table.header()
    with ThreadPoolExecutor(max(threads)) as pool:
        for t in threads:
            slots = {"copyto": _split(np.copyto, (dst, src), t, pool),
                     "inplace": _split(lambda a: np.multiply(a, one, out=a), (inplace,), t,
                                       pool)}
            if torch:
                tsrc, tdst = torch.from_numpy(src), torch.from_numpy(dst)
                slots["torch_copy"] = lambda tdst=tdst, tsrc=tsrc: tdst.copy_(tsrc)
            timing = measure([Slot(fn, t) for fn in slots.values()], cfg)
            gbs = {k: traffic / s / 1e9 for k, s in zip(slots, timing.medians)}
            table.add({"threads": t, **{f"{k}_gbs": v for k, v in gbs.items()},
                       "copy_gbs": max(gbs["copyto"], gbs.get("torch_copy", 0.0)),
                       "note": noise_note(timing), "spread": timing.spread,
                       "others_cpus": timing.others, "attempts": timing.attempts})
    return table.rows


# ---------------------------------------------------------------- optimizers


def print_checks(cases):
    print(f"\n== check: largest |p - p_fastnn| / max|p_fastnn| after {CHECK_STEPS} steps "
          f"at n = {CHECK_SIZE}")
    checks = {}
    for case in cases:
        result = checks[case.name] = check(case)
        if "error" in result:
            text = f"ERROR {result['error']}"
        else:
            text = ", ".join(f"{k} {v:.1e}" + ("" if v < 1e-4 else " MISMATCH")
                             for k, v in result.items())
        print(f"  {case.name}: {text}")
    return checks


def run_optimizers(cases, threads, cfg, bandwidth):
    with_torch = torch is not None
    print("\n== one optimizer step over n float32 parameters (one flat arena)")
    print("  fastnn: opt.step()  (nn.Arena of one Parameter, its .grad filled)")
    print("  numpy: the seed's update in place, one scratch array:")
    for case in cases:
        print(f"    {case.name}: {case.numpy_form}")
    if with_torch:
        print("  torch: torch.optim.<Optimizer>([p], ..., foreach=True) / (..., fused=True);"
              " blank where this torch has no fused CPU kernel for it")
        print("    (foreach SGD with Nesterov momentum adds to p.grad in place: its gradient "
              "drifts from step to step, which does not change the work)")
    print("  fn GB/s = bytes the update reads + writes (5 arrays: SGD, Adagrad, RMSProp; "
          "7: Adam, AdamW; x 4 bytes x n) / fastnn's time;")
    print("  %copy, %inpl = fn GB/s / the copy, in-place bandwidth at that thread count\n")
    copy_gbs = {r["threads"]: r["copy_gbs"] for r in bandwidth}
    inplace_gbs = {r["threads"]: r["inplace_gbs"] for r in bandwidth}
    columns = [("optimizer", 12, "optimizer", ""), ("n", 4, "size", ""),
               ("thr", 3, "threads", "d"), ("numpy us", 10, "numpy_us", ".1f"),
               ("fastnn us", 10, "fastnn_us", ".1f")]
    if with_torch:
        columns += [("foreach us", 10, "foreach_us", ".1f"), ("fused us", 10, "fused_us", ".1f")]
    columns.append(("np/fn", 6, "numpy_ratio", ".2f"))
    if with_torch:
        columns += [("fe/fn", 6, "foreach_ratio", ".2f"), ("fu/fn", 6, "fused_ratio", ".2f")]
    columns += [("fn GB/s", 7, "fastnn_gbs", ".1f"), ("%copy", 5, "copy_pct", ".0f"),
                ("%inpl", 5, "inplace_pct", ".0f"), ("note", 4, "note", "")]
    table = Table(columns)
    table.header()
    for case in cases:
        for n in cfg.sizes:
            setup = Setup(case, n)
            names = list(setup.calls)
            for t in threads:
                timing = measure([Slot(setup.calls[k], t) for k in names], cfg)
                s = dict(zip(names, timing.medians))
                gbs = case.arrays * 4 * n / s["fastnn"] / 1e9
                row = {"optimizer": case.name, "size": size_label((n,)), "n": n, "threads": t,
                       **{f"{k}_us": v * 1e6 for k, v in s.items()},
                       **{f"{k}_min_us": v * 1e6 for k, v in zip(names, timing.mins)},
                       **{f"{k}_ratio": s[k] / s["fastnn"] for k in names if k != "fastnn"},
                       "bytes": case.arrays * 4 * n, "fastnn_gbs": gbs,
                       "copy_pct": 100 * gbs / copy_gbs[t] if t in copy_gbs else None,
                       "inplace_pct": 100 * gbs / inplace_gbs[t] if t in inplace_gbs else None,
                       "note": noise_note(timing), "spread": timing.spread,
                       "others_cpus": timing.others, "attempts": timing.attempts}
                table.add(row)
            del setup  # free its arrays before the next case allocates
    return table.rows


def targets(rows):
    """The issue's targets for Adam, per thread count."""
    adam = [r for r in rows if r["optimizer"] == "Adam"]
    results = []
    for t in sorted({r["threads"] for r in adam}):
        big = [r for r in adam if r["threads"] == t and r["n"] >= 10**6]
        if big:
            worst = min(big, key=lambda r: r["numpy_ratio"])
            results.append({
                "target": f"Adam >= 5x the NumPy baseline at >= 1e6 parameters, {t} thr",
                "met": worst["numpy_ratio"] >= 5, "min_ratio": worst["numpy_ratio"],
                "detail": ", ".join(f"{r['numpy_ratio']:.1f}x at {r['size']}" for r in big)})
        fused = [r for r in big if r.get("fused_ratio") is not None]
        if fused:
            worst = min(fused, key=lambda r: r["fused_ratio"])
            results.append({
                "target": f"Adam at least as fast as torch fused Adam at >= 1e6, {t} thr",
                "met": worst["fused_ratio"] >= 1, "min_ratio": worst["fused_ratio"],
                "detail": ", ".join(f"fused/fastnn {r['fused_ratio']:.2f} at {r['size']} "
                                    f"({r['fused_us']:.0f} vs {r['fastnn_us']:.0f} us)"
                                    for r in fused)})
        largest = [r for r in adam if r["threads"] == t and r["n"] == 10**7]
        if largest and largest[0]["copy_pct"] is not None:
            r = largest[0]
            results.append({
                "target": f"Adam >= 70% of copy bandwidth at 1e7, {t} thr",
                "met": r["copy_pct"] >= 70, "pct": r["copy_pct"],
                "detail": f"{r['fastnn_gbs']:.1f} GB/s = {r['copy_pct']:.0f}% of "
                          f"{r['fastnn_gbs'] / r['copy_pct'] * 100:.1f} GB/s"})
    for r in results:
        if any(q["note"] and "noisy" in q["note"] for q in adam):
            r["detail"] += "; some Adam rows noisy"
    return print_targets(results)


def parse_args(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0],
                         f"n = {', '.join(size_label((n,)) for n in QUICK_SIZES)} only, "
                         "fewer and shorter repeats")
    return parse_threads(parser, parser.parse_args(argv))


def main(argv=None):
    args = parse_args(argv)
    cfg = QUICK if args.quick else FULL
    started = perf_counter()
    legend = ["ratios: np/fn, fe/fn, fu/fn = numpy, torch foreach, torch fused time / "
              "fastnn time (> 1: fastnn faster)"]
    info = header("fastnn optimizer benchmark", args.threads, cfg, args.quick,
                  legend_lines=legend, torch_parts="its columns and target")
    cases = _cases()
    report = {"header": info, "checks": print_checks(cases)}
    report["bandwidth"] = run_bandwidth(args.threads, cfg)
    report["rows"] = run_optimizers(cases, args.threads, cfg, report["bandwidth"])
    report["targets"] = targets(report["rows"])
    finish(report, report["bandwidth"] + report["rows"], started, args.json)


if __name__ == "__main__":
    main()
