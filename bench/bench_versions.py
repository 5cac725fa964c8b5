"""Training-step times of two fastnn source trees side by side, in one run.

    python bench/bench_versions.py OLD_TREE NEW_TREE [--rounds 7] [--threads 1,2]

Each tree must be built in place (`python setup.py build_ext --inplace`); e.g. the
previous commit in a git worktree beside this checkout. Every measurement runs in a
fresh process that imports fastnn from one tree only; the trees take turns (old, new,
new, old, ...) for `--rounds` rounds, so that a slow spell of the machine hits both.
A round times `Trainer.train_step` of one model (Adam, SoftmaxCrossEntropy, the same
batch throughout) after a warm-up: the median of 9 repeats of k steps, k chosen so a
repeat takes about 0.1 s. The figure is the median over rounds; new/old below 1 means
the new tree is faster.

Models (as bench_train.py's): small 64-128-128-10 at batch 32, large 784-1024-1024-10
at batch 256, both `nn.mlp(..., batch_norm=True, dropout=0.1)`.
"""

import argparse
import json
import os
import subprocess
import sys
from statistics import median

CASES = {"small": (64, (128, 128), 32), "large": (784, (1024, 1024), 256)}

WORKER = r"""
import json, sys, time
from statistics import median
import numpy as np
import fastnn
from fastnn import losses, nn, optim
d, hidden, batch, threads = json.loads(sys.argv[1])
fastnn.set_num_threads(threads)
model = nn.mlp(d, 10, hidden, batch_norm=True, dropout=0.1, seed=0)
opt = optim.Adam(model, 1e-3)
trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), opt, progress=False)
rng = np.random.default_rng(0)
x = rng.standard_normal((batch, d)).astype(np.float32)
y = rng.integers(0, 10, batch)
for _ in range(5):
    trainer.train_step(x, y)
t = time.perf_counter(); trainer.train_step(x, y); one = time.perf_counter() - t
k = max(1, int(0.1 / max(one, 1e-6)))
times = []
for _ in range(9):
    t = time.perf_counter()
    for _ in range(k):
        trainer.train_step(x, y)
    times.append((time.perf_counter() - t) / k)
print(json.dumps({"fastnn": fastnn.__file__, "step": median(times)}))
"""


def run(tree, case, threads):
    d, hidden, batch = CASES[case]
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    env.pop("OMP_NUM_THREADS", None)
    env.pop("FASTNN_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", WORKER, json.dumps([d, hidden, batch, threads])],
                         env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.abspath(tree))
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["fastnn"].startswith(os.path.abspath(tree)):
        raise RuntimeError(f"{tree}: imported fastnn from {result['fastnn']}")
    return result["step"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    print(f"old: {args.old}\nnew: {args.new}\n{args.rounds} rounds, alternating\n")
    print(f"{'model':<7}{'threads':>8}{'old ms':>10}{'new ms':>10}{'new/old':>9}")
    for case in CASES:
        for t in threads:
            times = {"old": [], "new": []}
            for r in range(args.rounds):
                order = ("old", "new") if r % 2 == 0 else ("new", "old")
                for which in order:
                    times[which].append(run(getattr(args, which), case, t))
            old, new = median(times["old"]) * 1e3, median(times["new"]) * 1e3
            print(f"{case:<7}{t:>8}{old:>10.3f}{new:>10.3f}{new / old:>9.3f}", flush=True)


if __name__ == "__main__":
    main()
