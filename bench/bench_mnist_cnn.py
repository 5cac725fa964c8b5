"""Learning quality of a small CNN on MNIST in fastnn, and its speed against PyTorch.

    python bench/bench_mnist_cnn.py [--only recipe,to99,elastic,ensemble] [--epochs N]
                                    [--quick] [--subset N] [--test-subset N] [--threads 2]
                                    [--eval-every STEPS] [--members 5] [--n-jobs 1]
                                    [--data DIR] [--json PATH]

A learning benchmark, not a test: it trains on the real MNIST (from --data, else
$FASTNN_MNIST_DIR, else ../shared/data/mnist beside the checkout) and prints the
project's targets as met / NOT met with the figures behind them.

The recipe (every part): conv 3x3 1->32 (padding 1, no bias: the BatchNorm after it
subtracts any bias) - BatchNorm2d - ReLU - max pool 2 - conv 3x3 32->64 (padding 1, no
bias) - BatchNorm2d - ReLU - max pool 2 - flatten - Linear 3136->128 - ReLU - Linear
128->10; softmax cross-entropy, Adam (lr 1e-3, eps 1e-8), batch 128; float32 pixels
scaled to [0, 1], nothing else (the first BatchNorm normalizes). Test accuracy is
measured on the 10,000 test images after training steps; it is reported, never used to
choose anything (no early stopping, no best epoch: the last figure counts).

Parts (--only, default all):

- recipe: the recipe for 3 epochs (--epochs), no augmentation, in fastnn
  (Trainer.fit) and in PyTorch (torch.nn layers, CrossEntropyLoss,
  torch.optim.Adam(fused=True), a plain loop), at the same thread count (--threads, one
  count, default 2; fastnn.threads, torch.set_num_threads). The same initial weights
  (torch's copied from fastnn's), the same shuffling (one NumPy permutation per epoch
  from default_rng(seed), as Trainer.fit draws it); torch's batches are indexed from one
  tensor of all the images, so that the comparison is about training, not data loaders.
  The frameworks take turns at every evaluation point (here each epoch's end), with a
  pause at > 1 thread while the idle framework's threads stop spinning, so that a slow
  spell of the machine hits both. Per epoch: test accuracy and cumulative training
  seconds (evaluation is timed apart and left out), after a warm-up of two steps and
  one evaluation batch of a throwaway model in each framework. Targets: fastnn's final test
  accuracy within 0.3 points of PyTorch's; PyTorch's training time >= 1.5x fastnn's.
- to99: the same side-by-side runs, evaluated every --eval-every steps (default 100)
  and at each epoch's end, for at most 10 epochs (--epochs); each framework stops at
  its first evaluation point with test accuracy >= 99%. The figure is the training
  seconds until then (evaluation left out). Target: PyTorch's >= 1.5x fastnn's.
- elastic: fastnn only: a deeper CNN (deep_cnn: three conv-BatchNorm-ReLU-pool blocks
  of 32, 64 and 128 channels, then Linear 1152->256 - BatchNorm1d - ReLU - Dropout 0.25
  - Linear 256->10) for 20 epochs (--epochs), every training batch augmented by
  RandomAffine(degrees 8, translate 0.08, scale 0.92-1.08) and then
  ElasticDistortion(alpha 20, sigma 4) (Compose runs the two as one warp), Adam 1e-3
  decayed by a cosine over the epochs, batch 128. The learning curve (test error after
  each epoch), the epochs and the wall time. Target: test error <= 0.5%.
- ensemble: fastnn.Ensemble of 5 (--members) such CNNs that differ only in their seed
  (initial weights, dropout, shuffling, augmentation draws), averaging their predicted
  probabilities; --n-jobs trains members in parallel processes (each with its share of
  the threads). Each member's learning curve and final error, and the committee's
  error. Target: committee test error <= 0.4%. The elastic part's CNN has the first
  member's seed: when both parts run (with the same epochs) it is trained once, as the
  committee's first member.

Small runs: --quick is --subset 5000 --test-subset 2000 --epochs 1 --members 2 (each
unless given); --subset N trains on the first N training images, --test-subset N tests
on the first N test images. Targets are still printed, marked as from a small run.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from time import perf_counter, sleep

import numpy as np
from _common import (
    BLAS_COOLDOWN,
    BUSY,
    Config,
    OtherLoad,
    Table,
    add_only,
    base_parser,
    fastnn,
    finish,
    header,
    parse_only,
    parse_threads,
    print_targets,
    torch,
    using_threads,
)

from fastnn import augment, datasets, losses, nn, optim  # importable: _common saw to it

PARTS = ("recipe", "to99", "elastic", "ensemble")
EPOCHS = {"recipe": 3, "to99": 10, "elastic": 20, "ensemble": 20}
CLASSES = 10
LR = 1e-3
ADAM_EPS = 1e-8
BATCH = 128
EVAL_BATCH = 1024  # as Trainer.evaluate
SEED = 0
GOAL = 0.99  # to99's test accuracy
# The augmented parts' distortions: a mild affine map, then an elastic field of
# displacements about 0.8 pixel (standard deviation; Simard et al.'s alpha 34 gives 1.4
# pixels, which left the networks here underfitting even their clean training images)
AFFINE = {"degrees": 8, "translate": (0.08, 0.08), "scale": (0.92, 1.08)}
ELASTIC = {"alpha": 20.0, "sigma": 4.0}
DROPOUT = 0.25
QUICK = {"subset": 5000, "test_subset": 2000, "epochs": 1, "members": 2}
# What the targets ask: points of accuracy, speed ratios, test error.
ACCURACY_GAP = 0.3
SPEEDUP = 1.5
ELASTIC_ERROR = 0.5
ENSEMBLE_ERROR = 0.4
# header() describes the timing scripts' method; here every figure is one run
ONE_RUN = Config(target=0.0, repeats=1, repeats_small=1, attempts=1, retry_budget=0.0)


# ---------------------------------------------------------------- data and models


def load(folder, subset, test_subset):
    """((x_train, y_train), (x_test, y_test)): float32 (N, 1, 28, 28) in [0, 1], int64
    labels; the first `subset` / `test_subset` images (None: all)."""
    (xtr, ytr), (xte, yte) = datasets.load_mnist(folder)

    def images(x, y, n):
        x, y = x[:n], y[:n]
        return (x.reshape(len(x), 1, *x.shape[1:]).astype(np.float32) / 255,
                y.astype(np.int64))

    return images(xtr, ytr, subset), images(xte, yte, test_subset)


def cnn(seed):
    """The recipe's CNN; its weighted layers draw their initial weights from seed,
    seed + 1, ..."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False, seed=seed), nn.BatchNorm2d(32),
        nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False, seed=seed + 1), nn.BatchNorm2d(64),
        nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128, seed=seed + 2), nn.ReLU(),
        nn.Linear(128, CLASSES, seed=seed + 3))


def deep_cnn(seed):
    """The augmented parts' CNN: three conv 3x3 - BatchNorm2d - ReLU - max pool 2 blocks
    (32, 64, 128 channels; 28 -> 14 -> 7 -> 3 pixels), then Linear 1152->256 -
    BatchNorm1d - ReLU - Dropout - Linear 256->10. About 1.5x the recipe CNN's step."""
    def block(cin, cout, s):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False, seed=s), nn.BatchNorm2d(cout),
                nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(
        *block(1, 32, seed), *block(32, 64, seed + 1), *block(64, 128, seed + 2),
        nn.Flatten(), nn.Linear(128 * 3 * 3, 256, seed=seed + 3), nn.BatchNorm1d(256),
        nn.ReLU(), nn.Dropout(DROPOUT, seed=seed + 4), nn.Linear(256, CLASSES, seed=seed + 5))


def torch_twin(model):
    """The same CNN in torch.nn with model's current weights (fastnn's Linear weight is
    (in, out), torch's (out, in); Conv2d weights share PyTorch's layout)."""
    t = torch.nn
    twin = t.Sequential(
        t.Conv2d(1, 32, 3, padding=1, bias=False), t.BatchNorm2d(32), t.ReLU(), t.MaxPool2d(2),
        t.Conv2d(32, 64, 3, padding=1, bias=False), t.BatchNorm2d(64), t.ReLU(),
        t.MaxPool2d(2), t.Flatten(), t.Linear(64 * 7 * 7, 128), t.ReLU(),
        t.Linear(128, CLASSES))
    with torch.no_grad():
        for mine, theirs in zip(model.layers, twin):
            if isinstance(mine, nn.Conv2d):
                theirs.weight.copy_(torch.from_numpy(np.array(mine.weight)))
            elif isinstance(mine, nn.Linear):
                theirs.weight.copy_(torch.from_numpy(np.ascontiguousarray(mine.weight.T)))
                theirs.bias.copy_(torch.from_numpy(np.array(mine.bias)))
    return twin


def distortions(seed):
    """A mild random affine map, then an elastic distortion, as one warp per image."""
    return augment.Compose([augment.RandomAffine(**AFFINE),
                            augment.ElasticDistortion(**ELASTIC)], seed=seed)


def augmented_member(seed, epochs):
    """A Trainer of deep_cnn on elastically distorted batches with a cosine
    learning-rate decay over `epochs`; its weights, dropout masks and distortions follow
    seed (and Trainer.fit's seed its shuffling). Module level: Ensemble's worker
    processes import it by name."""
    model = deep_cnn(seed)
    opt = optim.Adam(model, LR, eps=ADAM_EPS)
    return fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), opt,
                          schedule=optim.CosineDecay(opt, epochs),
                          augment=distortions(seed), progress=False)


def batch_bounds(n, batch):
    """(lo, hi) of each batch of an epoch over n samples, cut as Trainer.fit cuts them
    (a last batch of one sample joins the one before it)."""
    starts = list(range(0, n, batch))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return list(zip(starts, [*starts[1:], n]))


# ---------------------------------------------------------------- side by side


class TorchRun:
    """The recipe in torch, trained on demand up to a global step: Trainer.fit's
    shuffling (a permutation per epoch from default_rng(seed)) and batch bounds,
    batches indexed from one tensor. train_s and eval_s add up its seconds."""

    def __init__(self, model, train, seed):
        self.model = torch_twin(model)
        self.opt = torch.optim.Adam(self.model.parameters(), LR, eps=ADAM_EPS, fused=True)
        self.criterion = torch.nn.CrossEntropyLoss()
        self.x, self.y = torch.from_numpy(train[0]), torch.from_numpy(train[1])
        self.rng = np.random.default_rng(seed)
        self.bounds = batch_bounds(len(self.x), BATCH)
        self.step = 0
        self.order = None
        self.train_s = self.eval_s = 0.0

    def train_to(self, step):
        start = perf_counter()
        self.model.train()
        while self.step < step:
            i = self.step % len(self.bounds)
            if i == 0:
                self.order = torch.from_numpy(self.rng.permutation(len(self.x)))
            lo, hi = self.bounds[i]
            idx = self.order[lo:hi]
            self.opt.zero_grad(set_to_none=True)
            self.criterion(self.model(self.x[idx]), self.y[idx]).backward()
            self.opt.step()
            self.step += 1
        self.train_s += perf_counter() - start

    def accuracy(self, x, y):
        start = perf_counter()
        self.model.eval()
        with torch.no_grad():
            right = sum(int((self.model(x[lo:lo + EVAL_BATCH]).argmax(1)
                             == y[lo:lo + EVAL_BATCH]).sum())
                        for lo in range(0, len(x), EVAL_BATCH))
        self.eval_s += perf_counter() - start
        return right / len(x)


class _Stop(Exception):
    """Ends Trainer.fit at an evaluation point (to99: the goal is reached)."""


class Turns(fastnn.Callback):
    """At each evaluation point of Trainer.fit (a global step in `points`): stops
    fastnn's training clock, calls visit(trainer, step, training seconds so far), which
    evaluates fastnn and lets torch catch up, puts the model back in training mode and
    restarts the clock; visit returning True ends fit (raising _Stop)."""

    def __init__(self, points, visit):
        self.points, self.visit = set(points), visit
        self.step, self.train_s, self.start = 0, 0.0, None

    def on_train_begin(self, trainer):
        self.start = perf_counter()

    def on_batch_end(self, trainer, step, loss):
        self.step += 1
        if self.step not in self.points:
            return
        self.train_s += perf_counter() - self.start
        stop = self.visit(trainer, self.step, self.train_s)
        trainer.model.train()
        if stop:
            raise _Stop
        self.start = perf_counter()


def warm_up(train, test):
    """Two training steps and one evaluation batch of a throwaway model per framework:
    one-time setup (thread pools, library initialization, first-use allocations) is
    then not counted in the first timed run."""
    x, y = train[0][:2 * BATCH], train[1][:2 * BATCH]
    model = cnn(SEED)
    twin = TorchRun(model, (x, y), SEED) if torch is not None else None
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(),
                             optim.Adam(model, LR, eps=ADAM_EPS), progress=False)
    trainer.fit(x, y, epochs=1, batch_size=BATCH, seed=SEED)
    trainer.evaluate(*test, batch_size=EVAL_BATCH)
    if twin:
        twin.train_to(len(twin.bounds))
        twin.accuracy(torch.from_numpy(test[0][:EVAL_BATCH]),
                      torch.from_numpy(test[1][:EVAL_BATCH]))


def side_by_side(train, test, epochs, every, goal, threads):
    """fastnn and torch trained on the recipe, taking turns, evaluated at the same
    steps (every `every` steps, 0: never, and at each epoch's end); with a goal, each
    stops at its first point of test accuracy >= goal. Returns the curves (per
    framework: [step, training seconds, test accuracy] per point), the evaluation
    seconds and the CPUs other processes kept busy meanwhile."""
    per_epoch = len(batch_bounds(len(train[0]), BATCH))
    total = epochs * per_epoch
    points = sorted({*(range(every, total + 1, every) if every else ()),
                     *range(per_epoch, total + 1, per_epoch)})
    model = cnn(SEED)
    twin = TorchRun(model, train, SEED) if torch is not None else None
    test_t = (torch.from_numpy(test[0]), torch.from_numpy(test[1])) if twin else None
    curves = {"fastnn": [], **({"torch": []} if twin else {})}
    eval_s = {"fastnn": 0.0}
    pause = BLAS_COOLDOWN if threads > 1 else 0.0

    def done(curve):
        return goal is not None and bool(curve) and curve[-1][2] >= goal

    def torch_to(step):
        sleep(pause)  # fastnn's idle threads stop spinning before torch computes
        twin.train_to(step)
        curves["torch"].append([step, twin.train_s, twin.accuracy(*test_t)])
        sleep(pause)

    def visit(trainer, step, seconds):
        start = perf_counter()
        accuracy = trainer.evaluate(*test, batch_size=EVAL_BATCH)["accuracy"]
        eval_s["fastnn"] += perf_counter() - start
        curves["fastnn"].append([step, seconds, accuracy])
        if twin and not done(curves["torch"]):
            torch_to(step)
        return done(curves["fastnn"])

    turns = Turns(points, visit)
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(),
                             optim.Adam(model, LR, eps=ADAM_EPS), callbacks=[turns],
                             progress=False)
    with using_threads(threads):
        warm_up(train, test)
        load = OtherLoad()
        try:
            trainer.fit(*train, epochs=epochs, batch_size=BATCH, seed=SEED)
        except _Stop:
            pass
        for step in points:  # torch alone, once fastnn is done
            if twin and step > twin.step and not done(curves["torch"]):
                torch_to(step)
    if twin:
        eval_s["torch"] = twin.eval_s
    return {"points_per_epoch": per_epoch, "curves": curves, "eval_s": eval_s,
            "others_cpus": load.cpus()}


def _epochs(n):
    return f"{n} epoch{'s' * (n != 1)}"


def _noise(others):
    return f"noisy (other processes used {others:.1f} CPUs)" if others > BUSY else None


def print_curves(run, goal):
    """The learning curves side by side, one row per evaluation point, then one summary
    row per framework; returns the summary rows."""
    curves, per_epoch = run["curves"], run["points_per_epoch"]
    names = list(curves)
    table = Table([("step", 6, "step", "d"), ("epoch", 6, "epoch", ".2f"),
                   *[c for k in names for c in ((f"{k} s", 9, f"{k}_s", ".1f"),
                                                (f"{k} acc %", 9, f"{k}_acc", ".2f"))]])
    table.header()
    steps = sorted({p[0] for curve in curves.values() for p in curve})
    for step in steps:
        row = {"step": step, "epoch": step / per_epoch}
        for k in names:
            point = next((p for p in curves[k] if p[0] == step), None)
            if point:
                row[f"{k}_s"], row[f"{k}_acc"] = point[1], 100 * point[2]
        table.add(row)
    print()
    summary = Table([("framework", 9, "framework", ""), ("train s", 8, "train_s", ".1f"),
                     ("eval s", 7, "eval_s", ".1f"), ("final acc %", 11, "final_pct", ".2f"),
                     *([(f"to {goal:.0%} s", 9, "to_goal_s", ".1f")] if goal else []),
                     ("note", 4, "note", "")])
    summary.header()
    note = _noise(run["others_cpus"])
    for k in names:
        curve = curves[k]
        reached = next((p for p in curve if goal is not None and p[2] >= goal), None)
        summary.add({"framework": k, "train_s": curve[-1][1], "eval_s": run["eval_s"][k],
                     "final_accuracy": curve[-1][2], "final_pct": 100 * curve[-1][2],
                     "to_goal_s": reached[1] if reached else None,
                     "to_goal_step": reached[0] if reached else None, "note": note})
    if goal and any(r["to_goal_s"] is None for r in summary.rows):
        print(f"  (to {goal:.0%} s empty: not reached within the epochs)")
    return summary.rows


def run_recipe(train, test, epochs, threads):
    print(f"\n== recipe: {_epochs(epochs)}, no augmentation, fastnn and PyTorch side by "
          f"side, {threads} thr; test accuracy after each epoch, cumulative training seconds")
    run = side_by_side(train, test, epochs, 0, None, threads)
    return {"epochs": epochs, **run, "rows": print_curves(run, None)}


def run_to99(train, test, epochs, every, threads):
    print(f"\n== to99: training seconds until the test accuracy is >= {GOAL:.0%}, evaluated "
          f"every {every} steps and at each epoch's end, at most {_epochs(epochs)}, "
          f"{threads} thr")
    run = side_by_side(train, test, epochs, every, GOAL, threads)
    return {"epochs": epochs, "eval_every": every, **run, "rows": print_curves(run, GOAL)}


# ---------------------------------------------------------------- augmented


def _curve_table(histories, labels):
    """Test error per epoch, a column per history (and the first one's lr, epoch s)."""
    first = histories[0]
    table = Table([("epoch", 5, "epoch", "d"), ("lr", 9, "lr", ".2e"),
                   ("loss", 7, "loss", ".4f"), ("epoch s", 7, "seconds", ".1f"),
                   *[(f"{label} err %", max(8, len(label) + 6), f"err{i}", ".2f")
                     for i, label in enumerate(labels)]])
    table.header()
    for e in range(len(first["loss"])):
        table.add({"epoch": e + 1, "lr": first["lr"][e], "loss": first["loss"][e],
                   "seconds": first["seconds"][e],
                   **{f"err{i}": 100 * (1 - h["val_accuracy"][e])
                      for i, h in enumerate(histories) if e < len(h["loss"])}})
    return table.rows


def member_seed(i):
    """The seed of the committee's member i: fastnn.Ensemble(..., seed=SEED) draws its
    members' seeds as one SeedSequence(SEED) stream, whose first words do not depend on
    how many are drawn."""
    return int(np.random.SeedSequence(SEED).generate_state(i + 1)[i])


def run_elastic(train, test, epochs, threads, member=None):
    """One CNN (the committee's first member's seed) trained alone, or with member = a
    finished ensemble part, that member's run taken from it."""
    print(f"\n== elastic: fastnn, RandomAffine({AFFINE}) + ElasticDistortion({ELASTIC}), "
          f"cosine decay over {_epochs(epochs)}, {threads} thr; loss: training loss on "
          "distorted batches, epoch s: training only")
    if member is not None:
        history = member["histories"][0]
        print(f"  the committee's first member (seed {member['seeds'][0]}), trained above "
              f"({member['n_jobs']} at a time, {threads // member['n_jobs'] or 1} thr each)")
        rows = _curve_table([history], ["test"])
        error = 1 - history["val_accuracy"][-1]
        print(f"  test error after {_epochs(epochs)}: {100 * error:.2f}%; training "
              f"{sum(history['seconds']):.1f} s")
        return {"epochs": epochs, "error": error, "wall_s": None, "rows": rows,
                "history": history, "note": member["note"], "from_ensemble": True}
    trainer = augmented_member(member_seed(0), epochs)
    load = OtherLoad()
    start = perf_counter()
    with using_threads(threads):
        trainer.fit(*train, epochs=epochs, batch_size=BATCH, validation_data=test,
                    seed=member_seed(0))
    wall = perf_counter() - start
    history = trainer.history
    rows = _curve_table([history], ["test"])
    error = 1 - history["val_accuracy"][-1]
    note = _noise(load.cpus())
    print(f"  test error after {_epochs(epochs)}: {100 * error:.2f}%; wall {wall:.1f} s "
          f"(training {sum(history['seconds']):.1f} s, the rest evaluation)"
          + (f"; {note}" if note else ""))
    return {"epochs": epochs, "error": error, "wall_s": wall, "rows": rows,
            "history": dict(history), "note": note}


def run_ensemble(train, test, epochs, members, n_jobs, threads):
    print(f"\n== ensemble: {members} members as in `elastic`, different seeds, "
          f"probabilities averaged (fastnn.Ensemble, n_jobs {n_jobs}), {_epochs(epochs)}, "
          f"{threads} thr")
    ensemble = fastnn.Ensemble(partial(augmented_member, epochs=epochs), members,
                               n_jobs=n_jobs, seed=SEED)
    load = OtherLoad()
    start = perf_counter()
    with using_threads(threads):
        ensemble.fit(*train, epochs=epochs, batch_size=BATCH, validation_data=test)
        result = ensemble.evaluate(*test)
    wall = perf_counter() - start
    histories = [t.history for t in ensemble.members]
    print("  lr, loss and epoch s: member m1's")
    rows = _curve_table(histories, [f"m{i + 1}" for i in range(members)])
    errors = [1 - a for a in result["member_accuracy"]]
    error = 1 - result["accuracy"]
    # with worker processes, their CPU time looks like other processes' load
    note = _noise(load.cpus()) if n_jobs == 1 else None
    print("  members' test errors: " + ", ".join(f"{100 * e:.2f}%" for e in errors)
          + f" (mean {100 * np.mean(errors):.2f}%, best {100 * min(errors):.2f}%)")
    print(f"  committee's test error: {100 * error:.2f}%; wall {wall:.1f} s"
          + (f"; {note}" if note else ""))
    return {"epochs": epochs, "members": members, "n_jobs": n_jobs, "seeds": ensemble.seeds,
            "member_errors": errors, "error": error, "wall_s": wall, "rows": rows,
            "histories": [dict(h) for h in histories], "note": note}


# ---------------------------------------------------------------- targets


def _speed_target(part, key):
    mine, theirs = (next(r for r in part["rows"] if r["framework"] == k)
                    for k in ("fastnn", "torch"))
    if mine[key] is None:
        return False, "fastnn did not reach it"
    if theirs[key] is None:
        return True, f"fastnn {mine[key]:.1f} s, torch did not reach it"
    ratio = theirs[key] / mine[key]
    note = f"; {mine['note']}" if mine["note"] else ""
    return ratio >= SPEEDUP, (f"fastnn {mine[key]:.1f} s, torch {theirs[key]:.1f} s, "
                              f"ratio {ratio:.2f}{note}")


def targets(report, threads, small):
    results = []
    suffix = "; a small run (--subset, --test-subset or --epochs): not the benchmark's" \
        if small else ""
    recipe, to99 = report.get("recipe"), report.get("to99")
    if recipe and "torch" in recipe["curves"]:
        mine, theirs = (next(r for r in recipe["rows"] if r["framework"] == k)
                        for k in ("fastnn", "torch"))
        gap = 100 * (mine["final_accuracy"] - theirs["final_accuracy"])
        results.append({
            "target": f"recipe: fastnn's test accuracy within {ACCURACY_GAP} points of "
                      "PyTorch's", "met": abs(gap) <= ACCURACY_GAP,
            "detail": f"after {_epochs(recipe['epochs'])}: fastnn {mine['final_pct']:.2f}%, "
                      f"torch {theirs['final_pct']:.2f}%, {gap:+.2f} points{suffix}"})
        met, detail = _speed_target(recipe, "train_s")
        results.append({"target": f"recipe: fastnn trains >= {SPEEDUP}x faster than "
                                  f"PyTorch, {threads} thr", "met": met,
                        "detail": detail + suffix})
    if to99 and "torch" in to99["curves"]:
        met, detail = _speed_target(to99, "to_goal_s")
        results.append({"target": f"to99: fastnn reaches {GOAL:.0%} test accuracy >= "
                                  f"{SPEEDUP}x faster than PyTorch, {threads} thr",
                        "met": met, "detail": detail + suffix})
    for part, goal, what in (("elastic", ELASTIC_ERROR, "one CNN"),
                             ("ensemble", ENSEMBLE_ERROR, "the committee")):
        if report.get(part):
            error = 100 * report[part]["error"]
            results.append({"target": f"{part}: {what}'s test error <= {goal}%",
                            "met": error <= goal,
                            "detail": f"{error:.2f}% after {_epochs(report[part]['epochs'])}"
                                      + suffix})
    return print_targets(results)


# ---------------------------------------------------------------- command line


def parse_args(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0],
                         "a tiny run: " + ", ".join(f"--{k.replace('_', '-')} {v}"
                                                    for k, v in QUICK.items())
                         + " (each unless given)")
    add_only(parser, PARTS, "parts")
    parser.set_defaults(threads="2")  # one count here, for fastnn and torch alike
    parser._option_string_actions["--threads"].help = "the thread count (default 2)"
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every part (default: " + ", ".join(
                            f"{k} {v}" for k, v in EPOCHS.items()) + "; to99: at most)")
    parser.add_argument("--subset", type=int, default=None,
                        help="train on the first N training images (default: all 60,000)")
    parser.add_argument("--test-subset", type=int, default=None,
                        help="test on the first N test images (default: all 10,000)")
    parser.add_argument("--eval-every", type=int, default=100,
                        help="to99: evaluate every this many steps (and at epoch ends)")
    parser.add_argument("--members", type=int, default=None, help="ensemble size (default 5)")
    parser.add_argument("--n-jobs", type=int, default=1,
                        help="ensemble: members trained in this many processes at once")
    parser.add_argument("--data", default=None,
                        help="the MNIST folder (default: $FASTNN_MNIST_DIR, else "
                             "../shared/data/mnist beside the checkout)")
    args = parser.parse_args(argv)
    parse_only(parser, args, PARTS, "parts")
    parse_threads(parser, args)
    if len(args.threads) != 1:
        parser.error("--threads: one count (fastnn and torch run at the same one)")
    args.threads = args.threads[0]
    for key in ("epochs", "subset", "test_subset", "members", "eval_every", "n_jobs"):
        value = getattr(args, key)
        if value is not None and value < 1:
            parser.error(f"--{key.replace('_', '-')}: must be >= 1")
    args.small = any(getattr(args, k) is not None for k in ("epochs", "subset", "test_subset"))
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        args.small = True
    args.members = args.members or 5
    args.data = args.data or os.environ.get("FASTNN_MNIST_DIR") or str(
        Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
    return args


def main(argv=None):
    args = parse_args(argv)
    started = perf_counter()
    legend = ["a learning benchmark: each figure is one training run (no repeats); the "
              "comparison parts interleave fastnn and torch at every evaluation point"]
    if args.small:
        legend.append("small run: the targets below are not the benchmark's figures")
    info = header("fastnn MNIST CNN benchmark", [args.threads], ONE_RUN, args.quick,
                  legend_lines=legend, torch_parts="the recipe's and to99's torch runs "
                                                   "and their targets")
    try:
        train, test = load(args.data, args.subset, args.test_subset)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot load MNIST from {args.data}: {exc}") from exc
    print(f"  data: {args.data}, {len(train[0])} training and {len(test[0])} test images")
    report = {"header": info, "settings": {
        "parts": args.only, "threads": args.threads, "train_images": len(train[0]),
        "test_images": len(test[0]), "batch": BATCH, "lr": LR, "seed": SEED,
        "affine": AFFINE, "elastic": ELASTIC, "small": args.small}}

    def epochs(part):
        return args.epochs or EPOCHS[part]

    if "recipe" in args.only:
        report["recipe"] = run_recipe(train, test, epochs("recipe"), args.threads)
    if "to99" in args.only:
        report["to99"] = run_to99(train, test, epochs("to99"), args.eval_every, args.threads)
    # with both parts, the single CNN is the committee's first member (the same seed and
    # recipe), trained once
    shared = {"elastic", "ensemble"} <= set(args.only) \
        and epochs("elastic") == epochs("ensemble")
    if "elastic" in args.only and not shared:
        report["elastic"] = run_elastic(train, test, epochs("elastic"), args.threads)
    if "ensemble" in args.only:
        report["ensemble"] = run_ensemble(train, test, epochs("ensemble"), args.members,
                                          args.n_jobs, args.threads)
    if shared:
        report["elastic"] = run_elastic(train, test, epochs("elastic"), args.threads,
                                        member=report["ensemble"])
    report["targets"] = targets(report, args.threads, args.small)
    rows = [r for part in ("recipe", "to99") if part in report for r in report[part]["rows"]]
    finish(report, rows, started, args.json)


if __name__ == "__main__":
    main()
