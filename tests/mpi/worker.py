"""Run by tests/test_distributed.py under `mpiexec -n 2`: python worker.py MODE OUTDIR.

Each rank writes what it got to OUTDIR/<MODE>-rank<r>.npz; the test compares the
ranks with each other and with a single-process run of the same recipe.
"""

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _mpi_recipes as recipes
from mpi4py import MPI

import fastnn
from fastnn import nn
from fastnn.distributed import DriftError, checksum

comm = MPI.COMM_WORLD
rank = comm.Get_rank()


def save(out, mode, **arrays):
    np.savez(os.path.join(out, f"{mode}-rank{rank}.npz"), **arrays)


def arena(trainer):
    return trainer.model.arena.data.copy()


def train(out):
    """The equivalence runs: plain model (+ validation, + checkpoint after epoch 1),
    SyncBatchNorm, BatchNorm1d with local statistics, a CNN (plain and with
    BatchNorm2d), and the SyncBatchNorm layer alone."""
    X, y = recipes.data()
    Xv, yv = recipes.data(57, seed=1)
    t = recipes.trainer(recipes.plain_model(), comm)
    # rank 1 starts from other weights: rank 0's are broadcast
    if rank:
        t.model.arena.data[:] = 0.5
    ckpt = os.path.join(out, "plain-{epoch}.safetensors")
    t.callbacks.append(fastnn.Checkpoint(ckpt))
    history = t.fit(X, y, validation_data=(Xv, yv), **recipes.FIT)
    result = t.evaluate(Xv, yv)
    save(out, "plain", weights=arena(t), loss=history["loss"], val_loss=history["val_loss"],
         accuracy=history["accuracy"], eval=[result["loss"], result["accuracy"]],
         threads=fastnn.get_num_threads())

    # The same with the all-reduce started during backward, in buckets of >= 64 values.
    t = recipes.trainer(recipes.plain_model(), comm)
    t.parallel.overlap, t.parallel.bucket = True, 64
    t.fit(X, y, **recipes.FIT)
    save(out, "overlap", weights=arena(t))

    t = recipes.trainer(recipes.bn_model(nn.SyncBatchNorm), comm)
    t.fit(X, y, **recipes.FIT)
    state = t.model.state_dict()
    save(out, "syncbn", weights=arena(t), running_mean=state["1.running_mean"],
         running_var=state["1.running_var"])

    t = recipes.trainer(recipes.bn_model(nn.BatchNorm1d), comm)
    t.fit(X, y, **recipes.FIT)
    state = t.model.state_dict()
    save(out, "localbn", weights=arena(t), running_mean=state["1.running_mean"],
         running_var=state["1.running_var"], checksum=checksum(t.model))

    # Dropout: each rank draws its own masks (a seed derived from rank 0's).
    model = nn.Sequential(nn.Linear(recipes.N_FEATURES, 16, seed=1, dtype=np.float64),
                          nn.ReLU(), nn.Dropout(0.3, seed=11),
                          nn.Linear(16, recipes.N_CLASSES, seed=2, dtype=np.float64))
    t = recipes.trainer(model, comm)
    t.fit(X, y, **recipes.FIT)
    save(out, "dropout", weights=arena(t), seed=int(model[2].seed))

    # A CNN on images: without BatchNorm the single-process weights, also with the
    # all-reduce overlapped (after the plan's one-call backward); with BatchNorm2d each
    # rank's statistics, the running ones averaged at the end of every epoch.
    Xi, yi = recipes.image_data()
    Xiv, yiv = recipes.image_data(57, seed=1)
    t = recipes.trainer(recipes.cnn_model(), comm)
    history = t.fit(Xi, yi, validation_data=(Xiv, yiv), **recipes.FIT)
    save(out, "cnn", weights=arena(t), loss=history["loss"], val_loss=history["val_loss"],
         accuracy=history["accuracy"], proba=t.predict_proba(Xiv, batch_size=20),
         planned=t.model._plan is not None)
    t = recipes.trainer(recipes.cnn_model(), comm)
    t.parallel.overlap, t.parallel.bucket = True, 32
    t.fit(Xi, yi, **recipes.FIT)
    save(out, "cnn-overlap", weights=arena(t))
    before = BeforeAverage()
    t = recipes.trainer(recipes.cnn_model(batch_norm=True), comm, callbacks=[before])
    t.fit(Xi, yi, **recipes.FIT)
    save(out, "cnnbn", weights=arena(t), running_mean=t.model[1].running_mean,
         running_var=t.model[1].running_var, mean_before=before.mean, var_before=before.var,
         checksum=checksum(t.model))

    # 99 = 3 * 32 + 3 samples: the last batch of 3 rows all goes to rank 0 (a rank gets 0
    # or >= 2 rows); rank 1 only takes part in the collectives, SyncBatchNorm's too.
    Xu, yu = X[:99], y[:99]
    for name, model in (("uneven-plain", recipes.plain_model()),
                        ("uneven-syncbn", recipes.bn_model(nn.SyncBatchNorm)),
                        ("uneven-overlap", recipes.bn_model(nn.SyncBatchNorm))):
        t = recipes.trainer(model, comm)
        t.parallel.overlap, t.parallel.bucket = name.endswith("overlap"), 32
        t.fit(Xu, yu, **recipes.FIT)
        save(out, name, weights=arena(t), state=np.concatenate(
            [np.ravel(v) for v in t.model.state_dict().values()]))

    # The layer alone: this rank's rows of a 33-row batch (17 + 16).
    layer = nn.SyncBatchNorm(recipes.N_FEATURES, dtype=np.float64, comm=comm)
    lo, hi = (0, 17) if rank == 0 else (17, 33)
    layer.weight[:] = np.linspace(0.5, 2, recipes.N_FEATURES)
    out_rows = layer.forward(X[lo:hi] * 3 + 1)
    dout = np.cos(np.arange(33 * recipes.N_FEATURES)).reshape(33, -1)[lo:hi]
    dx = layer.backward(dout)
    save(out, "layer", y=out_rows, dx=dx, running_mean=layer.running_mean,
         running_var=layer.running_var, dgamma=layer.weight.grad, dbeta=layer.bias.grad)

    ensemble = fastnn.Ensemble(recipes.member, 3, seed=5, comm=comm).fit(X, y, epochs=2,
                                                                         batch_size=32)
    save(out, "ensemble", proba=ensemble.predict_proba(Xv),
         member_accuracy=ensemble.evaluate(Xv, yv)["member_accuracy"])


class BeforeAverage(fastnn.Callback):
    """The first BatchNorm2d's running statistics after every step: after the last
    step of an epoch, this rank's own, before the ranks average them."""

    def on_batch_end(self, trainer, step, loss):
        self.mean = trainer.model[1].running_mean.copy()
        self.var = trainer.model[1].running_var.copy()


def resume(out):
    """Load the checkpoint of epoch 1 written by the 2-rank run, train one more epoch."""
    X, y = recipes.data()
    t = recipes.trainer(recipes.plain_model(seed=99), comm)
    t.load_checkpoint(os.path.join(out, "plain-1.safetensors"))
    t.fit(X, y, epochs=1, batch_size=recipes.BATCH)
    save(out, "resume", weights=arena(t), epoch=t.epoch)


class Fail(fastnn.Callback):
    """On rank 1, at step 3 of epoch 1: raise, hang, or die."""

    def __init__(self, how):
        self.how = how

    def on_batch_end(self, trainer, step, loss):
        if rank != 1 or step != 3:
            return
        if self.how == "raise":
            raise RuntimeError("injected failure on rank 1")
        if self.how == "hang":
            time.sleep(600)
        os._exit(7)


def drift(out):
    """Rank 1 changes a weight after step 2; the checksum after step 3 catches it."""

    class Nudge(fastnn.Callback):
        def on_batch_end(self, trainer, step, loss):
            if rank == 1 and step == 2:
                trainer.model.arena.data[0] += 1e-3

    X, y = recipes.data()
    t = recipes.trainer(recipes.plain_model(), comm, callbacks=[Nudge()])
    t.parallel.check_every = 3
    try:
        t.fit(X, y, epochs=1, batch_size=16, seed=0)
    except DriftError as exc:
        print(f"rank {rank}: {exc}", flush=True)


def fail(out, how):
    X, y = recipes.data(2000)
    t = recipes.trainer(recipes.plain_model(), comm, callbacks=[Fail(how)])
    t.fit(X, y, epochs=50, batch_size=32, seed=0)
    print(f"rank {rank}: finished", flush=True)


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    if mode == "train":
        train(out)
    elif mode == "resume":
        resume(out)
    elif mode == "drift":
        drift(out)
    else:
        fail(out, mode)
