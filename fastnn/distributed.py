"""Data-parallel training over MPI (mpi4py): `pip install 'fastnn[mpi]'`.

    mpiexec -n 4 python train.py          # every rank runs the same script
    from mpi4py import MPI
    trainer = fastnn.Trainer(model, loss, opt, comm=MPI.COMM_WORLD)
    trainer.fit(X, y, epochs=5, batch_size=256, seed=0)   # every rank passes all of X

Every rank holds the whole model and the whole dataset. A global batch is the one a
single-process Trainer with the same seed and batch_size would take; rank r computes
the forward and backward pass of its contiguous slice of it. Its loss gradient is
scaled by n_r / N (n_r its rows, N the global batch's), so that ONE in-place
all-reduce (sum) of the gradient arena gives every rank the gradient of the mean loss
over the global batch, the same on every rank. Every rank then takes the same
optimizer step: the parameters stay identical, which a checksum compares every
`check_every` steps. Penalties and gradient clipping apply after the all-reduce, on the
global gradient, as in one process.

The rows of a global batch go to the ranks in contiguous slices, as evenly as
possible, and never one row alone (`split_rows`): a rank may get none in a small last
batch, and then only takes part in the collectives. BatchNorm1d and BatchNorm2d
normalize with each rank's rows (their running statistics are averaged over the ranks
every epoch); nn.SyncBatchNorm (1-D) with the global batch's. Dropout masks and
augmentation (a Compose) differ between ranks: their seeds on ranks other than 0
derive from rank 0's.

Layers declare what they need here instead of being known by type: a layer with
`collective = True` (nn.Module; SyncBatchNorm) runs collectives in its forward and
backward over its `comm` (the Trainer's when None), and on a rank without rows in a
batch its take_part_forward() and take_part_backward() run them instead; a buffer named
"seed" keys a layer's random numbers (Dropout's) and one named "running_*" holds
statistics of its rows (BatchNorm's), averaged over the ranks unless the layer is
collective. The model must hold its parameters in one arena of its own (a TypeError
says how to get one otherwise): one all-reduce of that arena's gradients is the step's
communication.

mpi4py is imported only where a communicator is used (`world()`, DataParallel,
SyncBatchNorm with a comm); `launched_by_mpi()` reads the environment only.

Failure: an exception on one rank (outside the errors every rank raises together,
such as a non-finite loss or parameter drift) prints the rank and the error, tells the
other ranks (each prints it too) and calls comm.Abort, which ends every process of the
job. Every wait for the other ranks is bounded by `timeout` seconds
(FASTNN_MPI_TIMEOUT, default 600): a rank that is stuck ends the job with an error
too, never a silent hang; one whose process dies is reported by the launcher, which
ends the job.
"""

import os
import sys
import zlib
from contextlib import contextmanager

import numpy as np

from . import _threads
from ._mpi import (
    PeerFailed,
    allreduce_sum,
    barrier,
    load_mpi,
    report_and_abort,
    timeout_seconds,
    wait,
)

__all__ = [
    "DataParallel",
    "DriftError",
    "PeerFailed",
    "allreduce_gradients",
    "barrier",
    "broadcast_parameters",
    "checksum",
    "guard",
    "install_excepthook",
    "is_root",
    "launched_by_mpi",
    "print0",
    "share_of_cores",
    "split_rows",
    "use_share_of_cores",
    "wait",
    "world",
]

# Set by the process managers of MPICH (hydra: PMI_*), Open MPI (OMPI_*, PMIx) and
# Intel MPI / Slurm's PMI; their presence means "this process is one rank of a job".
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE",
                  "OMPI_COMM_WORLD_RANK", "MPI_LOCALNRANKS")


class DriftError(RuntimeError):
    """The ranks' parameters differ: raised on every rank together."""


def launched_by_mpi():
    """True when this process was started by an MPI launcher (mpiexec, mpirun, srun
    with PMI), judged from the environment only: mpi4py is not imported."""
    return any(name in os.environ for name in _LAUNCHER_VARS)


def world():
    """mpi4py's COMM_WORLD (importing mpi4py initializes MPI)."""
    return load_mpi().COMM_WORLD


# ---------------------------------------------------------------- output and failure


def is_root(comm):
    return comm is None or comm.Get_rank() == 0


def print0(comm, *args, **kwargs):
    """print() on rank 0 only (everywhere when comm is None)."""
    if is_root(comm):
        print(*args, **kwargs)


@contextmanager
def guard(comm):
    """Run a block that every rank runs together; an exception on this rank alone
    ends the whole job (comm.Abort) instead of leaving the others waiting forever.
    Exceptions marked `every_rank = True` (raised by every rank at once, after a
    collective decision) pass through."""
    if comm is None or comm.Get_size() == 1:
        yield
        return
    try:
        yield
    except BaseException as exc:
        if getattr(exc, "every_rank", False):
            raise
        report_and_abort(comm, exc)


def install_excepthook(comm):
    """Make an uncaught exception on any rank abort the whole job, with its traceback
    and rank, instead of leaving the other ranks blocked in a collective."""
    previous = sys.excepthook

    def hook(kind, exc, tb):
        if comm.Get_size() == 1:
            previous(kind, exc, tb)
            return
        report_and_abort(comm, exc.with_traceback(tb))

    sys.excepthook = hook
    return previous


# ---------------------------------------------------------------- threads


def share_of_cores(comm):
    """This rank's share of its host's cores: the CPUs it may use (affinity mask and
    cgroup quota) divided by the ranks of its host whose affinity masks overlap its own
    (at least 1). A launcher that pins each rank to cores of its own is so taken at its
    word."""
    try:
        mine = frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        mine = frozenset(range(os.cpu_count() or 1))
    local = comm.Split_type(load_mpi().COMM_TYPE_SHARED)
    try:
        masks = local.allgather(mine)
    finally:
        local.Free()
    sharing = sum(1 for mask in masks if mask & mine)
    return max(1, _threads.usable_cpus() // max(1, sharing))


def use_share_of_cores(comm):
    """Set fastnn's thread count to share_of_cores(comm), unless a count was chosen
    (set_num_threads, FASTNN_NUM_THREADS, OMP_NUM_THREADS)."""
    if _threads.num_threads_source() == "usable CPUs":
        _threads._apply(share_of_cores(comm), "the rank's share of the host's cores")


# ---------------------------------------------------------------- parameters


def _arena(model):
    """The arena that holds exactly model's parameters: one all-reduce of its gradients
    then sums every gradient of the model, and nothing else."""
    arena = getattr(model, "arena", None)
    if arena is not None:
        return arena
    arenas = getattr(model, "arenas", list)()
    if not arenas:
        where = "this one has no parameters in an arena"
    elif len(arenas) > 1:
        where = (f"this one's lie in {len(arenas)} arenas (a layer that belongs to another "
                 f"model keeps its parameters in that model's arena)")
    else:
        where = ("this one's fill only part of an arena (a slice of a model, or layers of "
                 "another model)")
    raise TypeError(
        f"data-parallel training needs a model that holds all its parameters in one arena "
        f"of its own; {where}. Build the model from new layers, or train a copy that owns "
        f"its parameters: copy = fastnn.io.build(fastnn.io.architecture(model)); "
        f"copy.load_state_dict(model.state_dict()) (nn.SyncBatchNorm.convert returns "
        f"such a copy)")


def broadcast_parameters(comm, model, root=0, timeout=None):
    """Give every rank root's parameters and buffers: one broadcast of the arena in
    place, then one per buffer (each wait bounded as in `wait`)."""
    wait(comm.Ibcast(_arena(model).data, root=root), comm, timeout)
    for _, buffer in model.named_buffers():
        wait(comm.Ibcast(buffer, root=root), comm, timeout)


def allreduce_gradients(comm, model, timeout=None):
    """Sum the gradient arena over the ranks, in place: one all-reduce on the
    contiguous buffer, no copy (the wait bounded as in `wait`)."""
    allreduce_sum(comm, _arena(model).grad, timeout)


def checksum(model):
    """A cheap fingerprint of the parameters' bytes (Adler-32 of the arena)."""
    return zlib.adler32(_arena(model).data.view(np.uint8))


def split_rows(n, rank, size):
    """(lo, hi): rank's contiguous slice of a global batch of n rows. The rows are
    shared as evenly as possible by the first min(size, n // 2) ranks, so that no rank
    gets a single row (which BatchNorm cannot normalize); the others get none."""
    active = max(1, min(size, n // 2))
    if rank >= active:
        return n, n
    base, extra = divmod(n, active)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def _rank_seed(seed, rank):
    """Rank r's seed, derived from rank 0's, so that the ranks draw different numbers."""
    return int(np.random.SeedSequence([int(seed), rank]).generate_state(1, np.uint64)[0])


def _seed_buffers(model):
    """The buffers that key the model's random numbers (Module.rank_seeds)."""
    return [getattr(m, name) for _, m in model.modules() for name in m.rank_seeds]


def _rank_statistics(model):
    """The statistics of each rank's own rows, averaged every epoch
    (Module.rank_statistics)."""
    return [getattr(m, name) for _, m in model.modules() for name in m.rank_statistics]


class DataParallel:
    """The Trainer's side of data parallelism over `comm` (see the module docstring).

    check_every: compare parameter checksums every this many steps (0: never).
    timeout: seconds any wait for the other ranks may last (None: FASTNN_MPI_TIMEOUT or
    600). threads: set this rank's thread count to its share of the host's cores unless
    a count was chosen (set_num_threads, FASTNN_NUM_THREADS, OMP_NUM_THREADS).
    overlap: start the all-reduce during the backward pass, layer by layer, in buckets
    of at least bucket_mb MiB of weight gradients (the weights of a Sequential's arena
    are in layer order; the biases and BatchNorm parameters, at its end, go last). A
    Sequential that runs as a compiled plan backpropagates in one call: its buckets
    then start after it. Off by default: bench/bench_distributed.py measures both.
    """

    def __init__(self, comm, model, check_every=100, timeout=None, threads=True,
                 overlap=False, bucket_mb=1.0):
        if not all(hasattr(comm, name) for name in ("Get_rank", "Get_size", "Iallreduce")):
            raise TypeError(f"comm: expected an mpi4py communicator (MPI.COMM_WORLD), got "
                            f"{type(comm).__name__}")
        self.arena = _arena(model)  # before MPI starts: a model it cannot train fails here
        self.mpi = load_mpi()
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.model = model
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 0:
            raise ValueError(f"check_every: expected an int >= 0, got {check_every!r}")
        self.check_every = check_every
        self.timeout = timeout_seconds(timeout)
        self.steps = 0
        self._stats = np.zeros(3, np.float64)
        self._requests = []
        self.overlap = bool(overlap)
        self.bucket = max(1, int(bucket_mb * 2**20) // self.arena.dtype.itemsize)
        self._weight_starts = self._layer_weight_starts()
        # The layers whose forward and backward run collectives (SyncBatchNorm), in order.
        self._collectives = [m for _, m in model.modules() if m.collective]
        if threads:
            use_share_of_cores(comm)
        for module in self._collectives:
            if module.comm is None:
                module.comm = comm

    # ------------------------------------------------------------ collectives

    def wait(self, request):
        wait(request, self.comm, self.timeout)

    def allgather(self, value):
        """comm.allgather, bounded by the timeout."""
        buf = np.array([value], np.float64)
        out = np.empty(self.size, np.float64)
        self.wait(self.comm.Iallgather(buf, out))
        return out

    def bcast(self, obj, root=0):
        """An object from root (pickled by mpi4py; only between the ranks of this job).
        A barrier, bounded by the timeout, first: a rank that never comes is noticed."""
        barrier(self.comm, self.timeout)
        return self.comm.bcast(obj, root=root)

    def sync_trainer(self, trainer):
        """Every rank takes rank 0's training state: parameters (one Bcast of the arena),
        buffers, optimizer, schedule, epoch, history and shuffling RNG. Dropout layers
        (every buffer named "seed") and the augmentation (a Compose) on other ranks then
        draw their own random numbers (from a seed derived from rank 0's)."""
        barrier(self.comm, self.timeout)
        broadcast_parameters(self.comm, self.model, 0, self.timeout)
        state = trainer.state_dict() if self.rank == 0 else None
        if state is not None:
            del state["model"]  # sent above, without pickling
        state = self.comm.bcast(state, root=0)
        if self.rank != 0:
            state["model"] = self.model.state_dict()
            trainer.load_state_dict(state)
        if self.rank:
            for seed in _seed_buffers(self.model):
                seed[...] = _rank_seed(seed, self.rank)
        augment = trainer.augment  # a Compose: its random numbers come from its seed
        if isinstance(getattr(augment, "seed", None), int):
            seed = self.comm.bcast(augment.seed, root=0)
            augment.seed = _rank_seed(seed, self.rank) if self.rank else seed

    def check_data(self, X, y):
        """Every rank must be given the same dataset: compare a checksum of X's shape
        (samples and the shape of each: features, or channels and image size) and of
        the labels."""
        fingerprint = zlib.adler32(np.array(X.shape, np.int64).tobytes())
        if y is not None:
            fingerprint = zlib.adler32(np.ascontiguousarray(y).view(np.uint8), fingerprint)
        seen = self.allgather(float(fingerprint))
        if not np.all(seen == seen[0]):
            exc = ValueError("data-parallel fit: every rank must be given the same X and y "
                             "(each takes its slice of every batch); the ranks' data differ")
            exc.every_rank = True
            raise exc

    def local_rows(self, n):
        return split_rows(n, self.rank, self.size)

    def start_stats(self, loss_sum, hits, rows):
        """Start summing (loss * rows, hits, rows) over the ranks."""
        self._stats[:] = (loss_sum, hits, rows)
        self._stats_request = self.comm.Iallreduce(self.mpi.IN_PLACE, self._stats,
                                                   op=self.mpi.SUM)

    def take_part_forward(self):
        """For a rank without rows in this step: the collectives of the forward pass
        (SyncBatchNorm's statistics), in their order."""
        for module in self._collectives:
            module.take_part_forward()

    def backward(self, dscores):
        """The model's backward pass (without the input gradient). With `overlap`, the
        gradient all-reduce starts during it, in buckets (see `overlap`). dscores None:
        this rank has no rows in this step and takes part in the collectives only, in
        the order of the others."""
        model = self.model
        layers = getattr(model, "layers", None)
        if not self.overlap or self.size == 1 or layers is None:
            if dscores is None:
                for module in reversed(self._collectives):
                    module.take_part_backward()
            else:
                model.backward(dscores, input_grad=False)
            return
        layerwise = dscores is not None
        if layerwise and getattr(model, "_plan", None) is not None:
            # The forward ran as a compiled plan, whose backward is one call: no layer
            # to start a bucket after, but the same buckets, in the same order, after it.
            model.backward(dscores, input_grad=False)
            layerwise = False
        dout = dscores
        ready = self.arena.n_weights  # grad[ready:n_weights] is final and not yet sent
        for i in range(len(layers) - 1, -1, -1):
            if dscores is None:
                for _, module in reversed(list(layers[i].modules())):
                    if module.collective:
                        module.take_part_backward()
            elif layerwise:
                dout = layers[i].backward(dout, input_grad=i > 0)
            start = self._weight_starts[i]
            if start is not None and ready - start >= self.bucket and i > 0:
                self._send(start, ready)
                ready = start
            self.mpi.Request.Testall(self._requests)  # lets the sends progress
        self._send(0, ready)
        self._send(self.arena.n_weights, self.arena.size)

    def _send(self, lo, hi):
        if hi > lo:
            self._requests.append(self.comm.Iallreduce(
                self.mpi.IN_PLACE, self.arena.grad[lo:hi], op=self.mpi.SUM))

    def _layer_weight_starts(self):
        """Per layer of a Sequential: the lowest arena offset of its weights, or None."""
        layers = getattr(self.model, "layers", None) or []
        starts = []
        for layer in layers:
            offsets = [p.offset for _, p in layer.named_parameters()
                       if p.kind == "weight" and p.arena is self.arena]
            starts.append(min(offsets) if offsets else None)
        return starts

    def finish_step(self):
        """Sum the gradient arena over the ranks (in place: one Allreduce, or the buckets
        `backward` started) and finish the statistics; returns the global (loss sum,
        hits, rows)."""
        if self.size > 1:
            if not self._requests:
                allreduce_gradients(self.comm, self.model, self.timeout)
            for request in self._requests:
                self.wait(request)
            self._requests.clear()
        self.wait(self._stats_request)
        return tuple(self._stats)

    def after_step(self):
        """Count the step; every check_every steps, compare the parameters' checksums."""
        self.steps += 1
        if self.check_every and self.steps % self.check_every == 0:
            self.check_in_sync()

    def check_in_sync(self):
        sums = self.allgather(checksum(self.model))
        if not np.all(sums == sums[0]):
            exc = DriftError(f"the ranks' parameters differ after {self.steps} steps "
                             f"(checksums {sums.astype(np.int64).tolist()}): the ranks ran "
                             f"different computations (different data or settings?)")
            exc.every_rank = True
            raise exc

    def average_buffers(self):
        """Average the running statistics of the layers that are not collective over the
        ranks: BatchNorm1d's (each rank's come from its own slices, as in PyTorch DDP);
        SyncBatchNorm's are already the same."""
        for buffer in _rank_statistics(self.model):
            allreduce_sum(self.comm, buffer, self.timeout)
            buffer /= self.size

    def sum(self, values):
        """Elementwise sum over the ranks of a few float64 numbers."""
        out = np.array(values, np.float64)
        return allreduce_sum(self.comm, out, self.timeout)

    def run_on_root(self, fn):
        """fn() on rank 0 only; an exception there is raised on every rank."""
        error = None
        if self.rank == 0:
            try:
                fn()
            except Exception as exc:  # reported everywhere below
                error = f"{type(exc).__name__}: {exc}"
        error = self.bcast(error)
        if error is not None:
            exc = RuntimeError(f"rank 0: {error}")
            exc.every_rank = True
            raise exc
