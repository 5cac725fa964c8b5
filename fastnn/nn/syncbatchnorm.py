"""Batch normalization with the statistics of the global batch of data-parallel
training."""

import numpy as np

from .._mpi import allreduce_sum
from .batchnorm import BatchNorm1d
from .container import Sequential

__all__ = ["SyncBatchNorm"]


class SyncBatchNorm(BatchNorm1d):
    """BatchNorm1d whose train-mode mean and variance are those of the GLOBAL batch:
    every rank of `comm` (an mpi4py communicator) holds a slice of it.

    Forward: one Allreduce of the per-feature (count, sum, sum of squares), in float64
    and shifted by the running mean (which every rank shares) against cancellation:
    mean = shift + S1 / N, var = S2 / N - (S1 / N)^2 (biased; the unbiased one goes into
    running_var, as BatchNorm1d's). Backward: one Allreduce of the per-feature sums of
    dout and dout * xhat, then
        dx = weight * inv_std * (dout - sum(dout) / N - xhat * sum(dout * xhat) / N).
    The parameters' gradients are this rank's sums; the Trainer's all-reduce of the
    gradient arena adds them up. With comm=None (the Trainer sets its own communicator
    when it has one), one rank, or in eval mode it is exactly BatchNorm1d, and it is
    saved as one (fastnn.save / checkpoints).

    A collective layer (Module.collective): on a rank without rows in a batch the
    Trainer calls take_part_forward() and take_part_backward() instead of forward and
    backward, so that every rank joins every Allreduce. Each wait is bounded as
    fastnn.distributed.wait's (FASTNN_MPI_TIMEOUT).
    """

    saved_as = "BatchNorm1d"
    collective = True
    rank_statistics = ()  # the global batch's: the same on every rank

    def __init__(self, num_features, momentum=0.1, eps=1e-5, dtype=np.float32, comm=None):
        super().__init__(num_features, momentum, eps, dtype)
        self.comm = comm
        self._synced = False

    def _syncing(self):
        return self.training and self.comm is not None and self.comm.Get_size() > 1

    def _global_statistics(self, x):
        """(mean, biased var, N) of the global batch; x is this rank's (n, d) rows, or
        None for a rank with no rows in this batch (it still takes part)."""
        d = self.num_features
        shift = self.running_mean.astype(np.float64)
        sums = np.zeros(2 * d + 1, np.float64)
        if x is not None and len(x):
            centered = x - shift
            sums[0] = len(x)
            sums[1:d + 1] = centered.sum(axis=0)
            sums[d + 1:] = np.einsum("ij,ij->j", centered, centered)
        allreduce_sum(self.comm, sums)
        n = sums[0]
        if n < 2:
            raise ValueError(f"SyncBatchNorm: training needs more than 1 row per global batch, "
                             f"got {int(n)}")
        m = sums[1:d + 1] / n
        var = np.maximum(sums[d + 1:] / n - m * m, 0.0)
        mean = shift + m
        momentum = self.momentum
        self.running_mean *= 1 - momentum
        self.running_mean += (momentum * mean).astype(self.running_mean.dtype)
        self.running_var *= 1 - momentum
        self.running_var += (momentum * var * n / (n - 1)).astype(self.running_var.dtype)
        return mean, var, n

    def forward(self, x):
        self._synced = self._syncing()
        if not self._synced:
            return super().forward(x)
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"SyncBatchNorm: expected input of shape (N, {self.num_features}), got "
                f"{getattr(x, 'shape', type(x).__name__)}"
            )
        mean, var, n = self._global_statistics(x)
        inv_std = 1.0 / np.sqrt(var + self.eps)
        xhat = (x - mean) * inv_std
        y = self.workspace("y", x.shape, self.weight.dtype)
        np.multiply(xhat, self.weight, out=y, casting="same_kind")
        y += self.bias
        self._cache = (xhat, inv_std, n)
        return y

    def backward(self, dout, input_grad=True):
        if not self._synced:
            return super().backward(dout, input_grad)
        xhat, inv_std, n = self._cache
        d = self.num_features
        sums = np.empty(2 * d, np.float64)
        sums[:d] = dout.sum(axis=0, dtype=np.float64)
        sums[d:] = np.einsum("ij,ij->j", dout, xhat)
        if self.bias.requires_grad:
            self.bias.grad += sums[:d].astype(self.bias.dtype)
        if self.weight.requires_grad:
            self.weight.grad += sums[d:].astype(self.weight.dtype)
        allreduce_sum(self.comm, sums)
        if not input_grad:
            return None
        dx = self.workspace("dx", dout.shape, self.weight.dtype)
        scale = self.weight * inv_std
        dx[...] = scale * (dout - sums[:d] / n - xhat * (sums[d:] / n))
        return dx

    @classmethod
    def convert(cls, model, comm=None):
        """A copy of `model` (a Sequential) whose BatchNorm1d layers, nested ones too, are
        SyncBatchNorm over `comm`, for data-parallel training.

        Every layer of the copy is new, built from the original's config() with copies of
        its parameters, buffers and requires_grad flags, in the mode of `model`: the copy
        holds all its parameters in one arena of its own, as data-parallel training needs
        (the layers of `model` keep their parameters in its arena, so a Sequential of
        them would work on views of it). `model` is left as it is; build the optimizer
        for the copy."""
        if not isinstance(model, Sequential):
            raise TypeError(f"convert: expected a Sequential, got {type(model).__name__}")
        return _rebuilt(model, cls, comm).train(model.training)

    def take_part_forward(self):
        """The forward's collective, for a rank without rows in this batch."""
        self._synced = self._syncing()
        if self._synced:
            self._global_statistics(None)

    def take_part_backward(self):
        """The backward's collective, for a rank without rows in this batch."""
        if self._synced:
            allreduce_sum(self.comm, np.zeros(2 * self.num_features, np.float64))


def _rebuilt(module, sync, comm):
    """A new module that computes what `module` does, with copies of its parameters,
    buffers and requires_grad flags; a BatchNorm1d becomes a `sync` over comm. Layers
    are built before the Sequentials that hold them, so that the outermost one adopts
    every parameter into its arena."""
    if isinstance(module, Sequential):
        new = Sequential(*(_rebuilt(m, sync, comm) for m in module.layers))
        new.compiled = module.compiled
        return new
    try:
        config = module.config()
    except NotImplementedError:
        raise TypeError(f"convert: cannot rebuild a {type(module).__name__}: it defines no "
                        f"config()") from None
    if type(module) is BatchNorm1d:
        new = sync(**config, comm=comm)
    else:
        new = type(module)(**config)
        if module.collective:
            new.comm = module.comm
    new.load_state_dict(module.state_dict())
    for p, q in zip(module.parameters(), new.parameters()):
        q.requires_grad = p.requires_grad
    return new
