"""Batch normalization with the statistics of the global batch of data-parallel
training."""

import numpy as np

from .batchnorm import BatchNorm1d

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
    """

    saved_as = "BatchNorm1d"

    def __init__(self, num_features, momentum=0.1, eps=1e-5, dtype=np.float32, comm=None):
        super().__init__(num_features, momentum, eps, dtype)
        self.comm = comm
        self._synced = False

    def _syncing(self):
        return self.training and self.comm is not None and self.comm.Get_size() > 1

    def _allreduce(self, values):
        from mpi4py import MPI

        from ..distributed import wait

        wait(self.comm.Iallreduce(MPI.IN_PLACE, values, op=MPI.SUM), self.comm)
        return values

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
        self._allreduce(sums)
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

    def backward(self, dout):
        if not self._synced:
            return super().backward(dout)
        xhat, inv_std, n = self._cache
        d = self.num_features
        sums = np.empty(2 * d, np.float64)
        sums[:d] = dout.sum(axis=0, dtype=np.float64)
        sums[d:] = np.einsum("ij,ij->j", dout, xhat)
        self.bias.grad += sums[:d].astype(self.bias.dtype)
        self.weight.grad += sums[d:].astype(self.weight.dtype)
        self._allreduce(sums)
        dx = self.workspace("dx", dout.shape, self.weight.dtype)
        scale = self.weight * inv_std
        dx[...] = scale * (dout - sums[:d] / n - xhat * (sums[d:] / n))
        return dx

    @classmethod
    def convert(cls, model, comm=None):
        """A Sequential like `model` whose BatchNorm1d layers are SyncBatchNorm (with the
        same parameters and running statistics); its other layers are the same objects,
        their parameters moved into the new model's arena (rebuild the optimizer)."""
        from .container import Sequential

        if not isinstance(model, Sequential):
            raise TypeError(f"convert: expected a Sequential, got {type(model).__name__}")
        layers = []
        for layer in model.layers:
            if type(layer) is BatchNorm1d:
                sync = cls(layer.num_features, layer.momentum, layer.eps, layer.weight.dtype,
                           comm)
                sync.load_state_dict(layer.state_dict())
                sync.train(layer.training)
                layer = sync
            layers.append(layer)
        return Sequential(*layers).train(model.training)

    def take_part(self):
        """The forward's collective, for a rank without rows in this batch."""
        self._synced = self._syncing()
        if self._synced:
            self._global_statistics(None)

    def take_part_backward(self):
        """The backward's collective, for a rank without rows in this batch."""
        if self._synced:
            self._allreduce(np.zeros(2 * self.num_features, np.float64))
