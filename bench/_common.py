"""What the benchmark scripts in bench/ share: the measurement method, thread control,
the header, tables and the command line.

Method, for a noisy machine: each callable is warmed up, then looped k times per
repeat, k chosen so that a repeat takes about `Config.target` seconds; there are
`Config.repeats` repeats (`Config.repeats_small` when a call takes under 100 us), and
the callables of a case take turns, in alternating order (A B, B A, A B, ...), so that
drift hits them alike. The figure is the median time per call. A case disturbed by
other processes is measured again (see measure()).

The scripts import this module by name (`from _common import ...`): Python puts the
script's own folder, bench/, first on sys.path.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from statistics import median
from time import perf_counter, sleep
from typing import Callable

import numpy as np
import scipy
from threadpoolctl import ThreadpoolController, threadpool_info

try:
    import fastnn
except ImportError:  # run from a checkout that is not installed: the package is beside bench/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import fastnn

try:
    import torch
except ImportError:
    torch = None

__all__ = [
    "BLAS_COOLDOWN",
    "BUSY",
    "NOISY",
    "RETRIES",
    "Config",
    "OtherLoad",
    "Slot",
    "Table",
    "Timing",
    "as_torch",
    "base_parser",
    "blas_backends",
    "blas_libraries",
    "cpu_model",
    "fastnn",
    "finish",
    "header",
    "measure",
    "noise_note",
    "others_now",
    "parse_threads",
    "print_targets",
    "randn",
    "size_label",
    "torch",
    "using_blas",
    "using_threads",
]


@dataclass
class Config:
    target: float  # seconds per repeat
    repeats: int
    repeats_small: int  # when a call takes under 100 us
    attempts: int  # measurements of a case at most, while it is noisy
    retry_budget: float  # seconds, in all, for measuring noisy cases again


NOISY = 1.5  # median / fastest repeat, for any callable of a case: measure again
BUSY = 0.25  # CPUs kept busy by other processes during a case: measure again
# seconds of pause between callables of a case at > 1 thread where BLAS or OpenMP pools
# of different libraries take turns; see measure()
BLAS_COOLDOWN = 0.15


# ---------------------------------------------------------------- timing

_CONTROLLER = ThreadpoolController()


@contextmanager
def using_threads(n):
    """n threads for fastnn (and the BLAS it calls), NumPy's BLAS, and torch."""
    previous_torch = torch.get_num_threads() if torch else None
    with _CONTROLLER.limit(limits=n, user_api="blas"), fastnn.threads(n):
        if torch:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            if torch:
                torch.set_num_threads(previous_torch)


@dataclass
class Slot:
    fn: Callable
    threads: int
    blas: int | None = None  # threads of the BLAS fastnn calls, if not fastnn's choice
    backend: str | None = None  # fastnn.set_blas(backend) while it runs, if not None


def _run(slot, k):
    """Seconds for k calls of slot.fn at slot.threads."""
    fn = slot.fn
    with using_threads(slot.threads), using_blas(slot.backend):
        if slot.blas is not None:
            fastnn._threads.set_blas_threads(slot.blas)
        start = perf_counter()
        for _ in repeat(None, k):
            fn()
        return perf_counter() - start


@contextmanager
def using_blas(backend):
    """fastnn's matrix products on `backend` ("openblas", "mkl", or one of the other
    routes of fastnn._blas._use_for_bench; None: as they are)."""
    previous = fastnn.get_blas()
    if backend is not None and not fastnn._blas._use_for_bench(backend):
        fastnn.set_blas(backend)
    try:
        yield
    finally:
        fastnn.set_blas(previous)


def blas_backends():
    """The backends fastnn can use here: "openblas", and "mkl" where it loads."""
    found = []
    for name in ("openblas", "mkl"):
        with suppress(ValueError), using_blas(name):
            found.append(name)
    return found


def _calibrate(run, target):
    """(k, seconds per call) such that run(k), k calls, takes about `target`; warms up."""
    run(2)
    k = 1
    elapsed = run(k)
    while elapsed < target / 4:
        k = max(2 * k, math.ceil(k * target / 4 / max(elapsed, 1e-7)))
        elapsed = run(k)
    return max(1, round(k * target / elapsed)), elapsed / k


def _cpu_seconds():
    """(CPU seconds used by the whole machine, by this process) so far; None if unknown.

    The machine's count includes the hypervisor's steal: time our CPUs were taken.
    """
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    own = os.times()
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


class OtherLoad:
    """How many CPUs other processes keep busy, from now until cpus() is called."""

    def __init__(self):
        self.start = _cpu_seconds()
        self.wall = perf_counter()

    def cpus(self):
        end = _cpu_seconds()
        if self.start is None or end is None:
            return 0.0
        wall = max(perf_counter() - self.wall, 1e-9)
        return max(0.0, (end[0] - self.start[0]) - (end[1] - self.start[1])) / wall


def others_now(window=1.0):
    """CPUs other processes keep busy, over the next `window` seconds."""
    load = OtherLoad()
    sleep(window)
    return load.cpus()


@dataclass
class Timing:
    medians: list  # seconds per call, one per slot
    mins: list
    others: float  # CPUs other processes kept busy meanwhile
    attempts: int = 1

    @property
    def spread(self):
        """The largest median / fastest-repeat ratio among the slots (1: steady)."""
        return max(m / lo for m, lo in zip(self.medians, self.mins))

    @property
    def disturbance(self):
        """Over 1 when the figures are suspect: see NOISY and BUSY."""
        return max(self.spread / NOISY, self.others / BUSY)


class Retries:
    """Time left for measuring disturbed cases again, waiting first for idle CPUs."""

    WINDOW = 0.5  # seconds

    def __init__(self):
        self.left = 0.0
        self.spent = 0.0

    def wait_for_idle(self, start):
        while perf_counter() - start < self.left:
            if others_now(self.WINDOW) <= BUSY:
                return

    def charge(self, start):
        spent = perf_counter() - start
        self.left = max(0.0, self.left - spent)
        self.spent += spent


RETRIES = Retries()  # header() sets its budget


def _measure_once(slots, cfg, cooldown):
    previous = None

    def run(i, k):
        nonlocal previous
        if cooldown and previous not in (None, i) and max(
                slots[i].threads, slots[previous].threads) > 1:
            sleep(cooldown)
        previous = i
        return _run(slots[i], k)

    load = OtherLoad()
    plan = [_calibrate(lambda k, i=i: run(i, k), cfg.target) for i in range(len(slots))]
    fastest = min(per_call for _, per_call in plan)
    n_repeats = cfg.repeats_small if fastest < 100e-6 else cfg.repeats
    times = [[] for _ in slots]
    order = list(range(len(slots)))
    for r in range(n_repeats):
        for i in order if r % 2 == 0 else order[::-1]:
            k = plan[i][0]
            times[i].append(run(i, k) / k)
    return Timing([median(t) for t in times], [min(t) for t in times], load.cpus())


def measure(slots, cfg, cooldown=0.0):
    """Timing (median seconds per call) of each slot, the slots' repeats interleaved.

    `cooldown` seconds pass before a slot runs right after another one, when either
    uses more than one thread: an OpenBLAS worker thread spins for ~0.1 s after its
    last call, and on a small machine would slow whichever library runs next.

    Another process taking a core stalls every multi-threaded call for a time slice.
    While a case looks disturbed (other processes kept over BUSY CPUs busy, or its
    medians are over NOISY times its fastest repeats), it is measured again, up to
    cfg.attempts times in all, once the CPUs are idle, while RETRIES has time left;
    the least disturbed attempt is kept.
    """
    best = _measure_once(slots, cfg, cooldown)
    while best.disturbance > 1 and best.attempts < cfg.attempts and RETRIES.left > 0:
        start = perf_counter()
        RETRIES.wait_for_idle(start)
        timing = _measure_once(slots, cfg, cooldown)
        RETRIES.charge(start)
        timing.attempts = best.attempts + 1
        if timing.disturbance < best.disturbance:
            best = timing
        else:
            best.attempts = timing.attempts
    return best


def noise_note(timing):
    """A table note for a case that stayed disturbed, else None."""
    if timing.disturbance <= 1:
        return None
    why = []
    if timing.others > BUSY:
        why.append(f"other processes used {timing.others:.1f} CPUs")
    if timing.spread > NOISY:
        why.append(f"median {timing.spread:.1f}x fastest repeat")
    return f"noisy ({', '.join(why)})"


# ---------------------------------------------------------------- data


_RNG = np.random.default_rng(0)


def randn(*shape, dtype=np.float32):
    return _RNG.standard_normal(shape, dtype=dtype)


def as_torch(*arrays):
    """torch views of numpy arrays (shared memory)."""
    return [torch.from_numpy(a) for a in arrays]


def size_label(shape):
    if len(shape) == 1:
        n = shape[0]
        exponent = round(math.log10(n))
        return f"1e{exponent}" if 10**exponent == n else str(n)
    return "x".join(str(s) for s in shape)


# ---------------------------------------------------------------- tables


@dataclass
class Table:
    columns: list  # (header, width, key, format)
    rows: list = field(default_factory=list)

    def header(self):
        head = " | ".join(f"{h:>{w}}" if f else f"{h:<{w}}" for h, w, _, f in self.columns)
        print(head)
        print("-" * len(head))

    def add(self, row):
        self.rows.append(row)
        cells = []
        for _, width, key, fmt in self.columns:
            value = row.get(key)
            if value is None:
                cells.append(" " * width)
            elif fmt:
                cells.append(f"{value:>{width}{fmt}}")
            else:
                cells.append(f"{value!s:<{width}}")
        print(" | ".join(cells).rstrip(), flush=True)


# ---------------------------------------------------------------- report


def cpu_model():
    return fastnn._blas.cpuinfo("model name") or platform.processor() or "unknown"


def blas_libraries():
    libs = []
    for info in threadpool_info():
        if info.get("user_api") != "blas":
            continue
        folders = info["filepath"].split(os.sep)
        owner = next((o for o in ("scipy_openblas32", "numpy", "scipy") for part in folders
                      if part == o or part.startswith(o + ".")), "other")
        libs.append({"owner": owner, **info})
    return libs


def header(title, threads, cfg, quick, method_lines=(), legend_lines=(),
           torch_parts=None):
    """Print what the figures depend on (versions, CPU, BLAS, method) and return it as a
    dict for the JSON report; also gives RETRIES this run's budget.

    method_lines follow the line on the method, legend_lines the note on noise;
    torch_parts names what a run without torch leaves out ("its columns and targets").
    """
    if torch is None and torch_parts:
        legend_lines = [*legend_lines, f"torch is not installed: {torch_parts} are left out"]
    RETRIES.left = cfg.retry_budget
    config = fastnn.show_config(mode="dicts")
    openmp = f"on (OpenMP {config['openmp_version']})" if config["openmp"] else "OFF"
    env = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}
    info = {
        "fastnn": fastnn.__version__, "openmp": config["openmp"],
        "openmp_version": config["openmp_version"], "threads": threads,
        "usable_cpus": config["usable_cpus"], "cpu": cpu_model(),
        "python": platform.python_version(), "numpy": np.__version__,
        "scipy": scipy.__version__, "torch": torch.__version__ if torch else None,
        "compile_flags": config["compile_flags"], "blas": blas_libraries(),
        "openblas_env": env, "gemm": config["gemm"], "blas_backends": blas_backends(),
        "quick": quick, "repeat_s": cfg.target,
        "repeats": [cfg.repeats, cfg.repeats_small], "others_cpus_at_start": others_now(),
    }
    print(title + (" (--quick)" if quick else ""))
    print(f"  fastnn {info['fastnn']}, OpenMP {openmp}, compiled with {info['compile_flags']}")
    print(f"  threads: {', '.join(map(str, threads))} (usable CPUs: {info['usable_cpus']})")
    print(f"  CPU: {info['cpu']}")
    print(f"  python {info['python']}, numpy {info['numpy']}, scipy {info['scipy']}"
          + (f", torch {info['torch']}" if torch else ", torch not installed"))
    for lib in info["blas"]:
        user = "NumPy's @" if lib["owner"] == "numpy" else (
            "scipy" if lib["owner"] == "scipy" else
            "fastnn (scipy-openblas32)" if lib["owner"] == "scipy_openblas32" else
            "fastnn (MKL)" if lib["internal_api"] == "mkl" else "unknown user")
        print(f"  BLAS for {user}: {lib['internal_api']} {lib['version']}, "
              f"{lib.get('architecture', '?')}, {lib.get('threading_layer', '?')}, "
              f"{os.path.basename(lib['filepath'])}")
    print(f"  OPENBLAS_* environment: {env or 'none'}")
    gemm = info["gemm"]
    print(f"  fastnn's GEMM: {gemm['name']} {gemm['version']}, chosen by {gemm['reason']} "
          f"(backends here: {', '.join(info['blas_backends'])})")
    print(f"  method: median per call of {cfg.repeats} repeats ({cfg.repeats_small} under "
          f"100 us/call), each >= {cfg.target * 1e3:.0f} ms, after warm-up; the callables "
          "of a case interleaved (A B, B A, ...)")
    for line in method_lines:
        print(f"  {line}")
    noisy = (f"  'noisy' marks a case during which other processes kept over {BUSY} CPUs "
             f"busy, or whose median is over {NOISY}x its fastest repeat")
    if cfg.attempts > 1:
        noisy += (f"; such a case is measured again once the CPUs are idle ({cfg.attempts} "
                  f"times at most, {cfg.retry_budget:.0f} s in all), the steadiest kept")
    print(noisy)
    for line in legend_lines:
        print(f"  {line}")
    others = info["others_cpus_at_start"]
    print(f"  CPUs kept busy by other processes at start: {others:.2f}"
          + ("  (machine busy: expect noisy figures)" if others > BUSY else ""))
    return info


def print_targets(results):
    """Print "== targets" and a met / NOT met line for each entry of `results` (dicts
    with "target", "met" and "detail"); returns results."""
    if results:
        print("\n== targets")
    for t in results:
        print(f"  {t['target']}: {'met' if t['met'] else 'NOT met'} ({t['detail']})")
    return results


def finish(report, rows, started, json_path):
    """Print the closing line (time, retries, noisy rows) and write the JSON report."""
    report["seconds"] = perf_counter() - started
    report["retry_s"] = RETRIES.spent
    noisy = sum(bool(r.get("note") and "noisy" in r["note"]) for r in rows)
    print(f"\n(total {report['seconds']:.0f} s, {RETRIES.spent:.0f} s of it measuring disturbed "
          f"cases again; {noisy} of {len(rows)} comparison rows stayed noisy)")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {json_path}")


# ---------------------------------------------------------------- command line


def base_parser(description, quick_help):
    """An argument parser with the options every script has: --quick, --threads, --json."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--threads", default=None,
                        help="comma-separated thread counts (default: 1 and all usable CPUs)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    return parser


def add_only(parser, choices, what):
    """An --only option: a comma-separated subset of `choices` (default: all)."""
    parser.add_argument("--only", default=",".join(choices),
                        help=f"comma-separated {what} to run, of: {', '.join(choices)}")


def parse_only(parser, args, choices, what):
    """Turn args.only into a list, each entry one of `choices`."""
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set(choices))
    if unknown:
        parser.error(f"--only: unknown {what} {unknown}; choose from {list(choices)}")
    return args


def parse_threads(parser, args):
    """Turn args.threads into a list of counts (default: 1 and all usable CPUs)."""
    if args.threads is None:
        cpus = fastnn._threads.usable_cpus()
        args.threads = sorted({1, cpus})
    else:
        try:
            args.threads = [int(t) for t in args.threads.split(",")]
        except ValueError:
            parser.error(f"--threads: expected comma-separated integers, got {args.threads!r}")
        if min(args.threads) < 1:
            parser.error("--threads: counts must be >= 1")
    return args
