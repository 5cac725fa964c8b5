"""fastnn on a shared machine: one training job alone, two started together, and one
beside a busy-looping process, under several OpenMP wait policies.

Each job is a fresh process (the OpenMP runtime reads its wait policy when it starts)
that trains the README's default MLP (784-512-512-10, BatchNorm, ReLU, Adam) on
random data for `--steps` steps of batch `--batch` with all usable CPUs, after a
warm-up, and prints its wall time. A round runs, for every policy in turn: the job
alone; two jobs at once (the figure is the slower of the two); the job beside one
process that spins on a core. Rounds alternate the policy order; the figures are the
medians over rounds, and each slowdown divides by the same policy's time alone.

Policies:
  fastnn      fastnn's default, nothing set by the user: kernels run on the CPUs other
              processes leave free, and idle threads spin briefly (fastnn._threads,
              fastnn._kernels._wait)
  fixed       a thread count set (FASTNN_NUM_THREADS = the CPUs) and libgomp's own
              spinning (GOMP_SPINCOUNT=300000): what fastnn did before
  passive     a thread count set, and OMP_WAIT_POLICY=passive (threads sleep at once)

Run: python bench/bench_shared.py [--rounds 5] [--steps 300]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

_CPUS = str(len(os.sched_getaffinity(0)))
POLICIES = {
    "fastnn": {},
    "fixed": {"FASTNN_NUM_THREADS": _CPUS, "GOMP_SPINCOUNT": "300000"},
    "passive": {"FASTNN_NUM_THREADS": _CPUS, "OMP_WAIT_POLICY": "passive"},
}
_WAIT_VARS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "FASTNN_NUM_THREADS", "OMP_NUM_THREADS")
HERE = Path(__file__).resolve()


def job(steps, batch):
    """The measured job: prints the seconds its `steps` training steps take."""
    sys.path.insert(0, str(HERE.parents[1]))
    import numpy as np

    import fastnn as fn

    rng = np.random.default_rng(0)
    model = fn.nn.mlp(784, 10, [512, 512], batch_norm=True, seed=0)
    trainer = fn.Trainer(model, fn.losses.SoftmaxCrossEntropy(),
                         fn.optim.Adam(model.parameters(), lr=1e-3), progress=False)
    x = rng.random((batch, 784), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    for _ in range(20):
        trainer.train_step(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(x, y)
    print(time.perf_counter() - start)


def _env(policy):
    env = {k: v for k, v in os.environ.items() if k not in _WAIT_VARS}
    env.update(POLICIES[policy])
    return env


def _start(policy, args):
    cmd = [sys.executable, str(HERE), "--job", "--steps", str(args.steps),
           "--batch", str(args.batch)]
    return subprocess.Popen(cmd, env=_env(policy), stdout=subprocess.PIPE, text=True)


def _seconds(proc):
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"job failed with exit code {proc.returncode}")
    return float(out.strip().splitlines()[-1])


def _busy_loop():
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def one_round(policies, args):
    times = {}
    for policy in policies:
        alone = _seconds(_start(policy, args))
        pair = [_start(policy, args), _start(policy, args)]
        together = max(_seconds(p) for p in pair)
        busy = _busy_loop()
        try:
            time.sleep(0.2)
            beside = _seconds(_start(policy, args))
        finally:
            busy.kill()
            busy.wait()
        times[policy] = (alone, together, beside)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        job(args.steps, args.batch)
        return
    policies = args.policies.split(",")
    unknown = set(policies) - set(POLICIES)
    if unknown:
        parser.error(f"unknown policies {sorted(unknown)}; choose from {list(POLICIES)}")
    print(f"# {os.cpu_count()} CPUs, {args.steps} steps of batch {args.batch}, "
          f"{args.rounds} rounds, medians")
    rounds = []
    for r in range(args.rounds):
        order = policies if r % 2 == 0 else policies[::-1]
        rounds.append(one_round(order, args))
    print(f"{'policy':<9} {'alone s':>8} {'two s':>7} {'two/alone':>10} "
          f"{'busy s':>7} {'busy/alone':>11} {'alone/fastnn':>13}")
    base = median(r["fastnn"][0] for r in rounds) if "fastnn" in policies else None
    for policy in policies:
        alone, two, busy = (median(r[policy][i] for r in rounds) for i in range(3))
        versus = f"{alone / base:13.3f}" if base else f"{'-':>13}"
        print(f"{policy:<9} {alone:8.3f} {two:7.3f} {two / alone:10.2f} "
              f"{busy:7.3f} {busy / alone:11.2f} {versus}")


if __name__ == "__main__":
    main()
