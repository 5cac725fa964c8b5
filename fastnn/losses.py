"""Losses and weight penalties.

A loss is used as `value = loss.forward(scores, y)` (or `loss(scores, y)`), then
`dscores = loss.backward()`: the gradient of the MEAN loss over the batch, computed in
the same pass as the value. Scores are logits: the softmax and sigmoid losses are
computed in their overflow-safe forms.

A penalty R(W) (L2, L1, ElasticNet, the seed's forms) applies to the weights of a
model (its parameters of kind "weight": not biases, not BatchNorm's gamma and beta):
`penalty.backward(model)` adds lam * dR/dW into the gradients and returns lam * R(W),
in one pass over the weights.
"""

import numpy as np

from . import ops
from ._kernels import losses as _k
from ._threads import get_num_threads

__all__ = [
    "L1",
    "L2",
    "MSE",
    "BCEWithLogits",
    "ElasticNet",
    "Loss",
    "MulticlassHinge",
    "Penalty",
    "SoftmaxCrossEntropy",
]


class Loss:
    """Base class: forward(scores, y) -> float; backward() -> d(loss)/d(scores).

    The gradient array is reused while the batch shape stays the same: it is valid until
    the next forward.
    """

    def __init__(self):
        self._grad = None
        self._row_loss = None
        self._ready = False

    def __call__(self, scores, y):
        return self.forward(scores, y)

    def _buffers(self, scores):
        if self._grad is None or self._grad.shape != scores.shape or (
            self._grad.dtype != scores.dtype
        ):
            self._grad = np.empty_like(scores)
            self._row_loss = np.empty(scores.shape[0], np.float64)
        return self._grad, self._row_loss

    def _scores(self, scores):
        scores = ops._contiguous(ops._input(scores, "scores"), "scores")
        self._shape = scores.shape
        if scores.ndim == 1:
            scores = scores.reshape(-1, 1)
        if scores.ndim != 2:
            raise ValueError(f"scores: expected (N, C), got shape {scores.shape}")
        if scores.shape[0] == 0:
            raise ValueError("scores: empty batch (0 rows)")
        if scores.shape[1] == 0:
            raise ValueError("scores: no columns")
        return scores

    def _finish(self, row_loss, denominator):
        self._ready = True
        return float(row_loss.sum() / denominator)

    def backward(self):
        """d(mean loss)/d(scores) of the last forward."""
        if not self._ready:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        return self._grad.reshape(self._shape)


class _ClassLoss(Loss):
    _kind = None
    _margin = 0.0

    def forward(self, scores, y):
        scores = self._scores(scores)
        n, c = scores.shape
        y = np.asarray(y)
        if y.dtype.kind not in "iu":
            raise TypeError(f"y: expected integer class labels, got dtype {y.dtype}")
        if y.shape != (n,):
            raise ValueError(f"y: expected shape ({n},) to match scores, got {y.shape}")
        labels = np.ascontiguousarray(y, dtype=np.intp)
        if n and not _k.labels_in_range(labels, c):
            raise ValueError(f"y: labels must be in [0, {c}), got range [{y.min()}, {y.max()}]")
        grad, row_loss = self._buffers(scores)
        _k.class_loss(self._kind, scores, labels, grad, row_loss, self._margin,
                      get_num_threads())
        return self._finish(row_loss, n)


class SoftmaxCrossEntropy(_ClassLoss):
    """Mean over rows of -log softmax(s)[y] = logsumexp(s) - s[y]; stable for any logits.

    backward: (softmax(s) - onehot(y)) / N.
    """

    _kind = _k.LossKind.SOFTMAX_CROSS_ENTROPY


class MulticlassHinge(_ClassLoss):
    """The multiclass SVM loss: mean over rows of sum_{j != y} max(0, s_j - s_y + margin)."""

    _kind = _k.LossKind.MULTICLASS_HINGE

    def __init__(self, margin=1.0):
        super().__init__()
        margin = float(margin)
        if not np.isfinite(margin) or margin < 0:
            raise ValueError(f"margin: must be a finite number >= 0, got {margin}")
        self._margin = margin

    @property
    def margin(self):
        return self._margin


class _TargetLoss(Loss):
    _kind = None

    def forward(self, scores, y):
        scores = self._scores(scores)
        y = ops._contiguous(ops._input(y, "y"), "y")
        if y.dtype != scores.dtype:
            raise TypeError(f"y: dtype {y.dtype} differs from scores' {scores.dtype}")
        if y.size != scores.size or y.shape[0] != scores.shape[0]:
            raise ValueError(f"y: expected shape {scores.shape} to match scores, got {y.shape}")
        grad, row_loss = self._buffers(scores)
        _k.target_loss(self._kind, scores, y.reshape(scores.shape), grad, row_loss,
                       get_num_threads())
        return self._finish(row_loss, scores.size)


class MSE(_TargetLoss):
    """Mean over all elements of (s - y)^2; backward: 2 (s - y) / numel."""

    _kind = _k.LossKind.MSE


class BCEWithLogits(_TargetLoss):
    """Binary cross-entropy on logits, mean over all elements, in the stable form
    max(s, 0) - s y + log(1 + exp(-|s|)); backward: (sigmoid(s) - y) / numel."""

    _kind = _k.LossKind.BCE_WITH_LOGITS


# ---------------------------------------------------------------- penalties


def _weights(model_or_params):
    """(value, gradient) flat arrays to penalize: a model's weight segment of its arena,
    or the weight-kind parameters of an iterable."""
    arena = getattr(model_or_params, "arena", None)
    if arena is not None:
        return [arena.weights()]
    params = model_or_params.parameters() if hasattr(model_or_params, "parameters") else (
        model_or_params
    )
    pairs = []
    for p in params:
        if getattr(p, "kind", "weight") != "weight":
            continue
        grad = getattr(p, "grad", None)
        if grad is None:
            raise ValueError("penalty: a parameter has no .grad to add the gradient into")
        pairs.append((p.reshape(-1), grad.reshape(-1)))
    return pairs


class Penalty:
    """lam * R(W) with R(W) = sum(c2 * W**2 + c1 * |W|) over the weights."""

    _c2 = 0.0
    _c1 = 0.0

    def __init__(self, lam):
        lam = float(lam)
        if not np.isfinite(lam) or lam < 0:
            raise ValueError(f"lam: must be a finite number >= 0, got {lam}")
        self.lam = lam

    def __call__(self, model_or_params):
        return self.penalty(model_or_params)

    def penalty(self, model_or_params):
        """lam * R(W), without touching gradients."""
        total = 0.0
        for w, _ in _weights(model_or_params):
            w64 = w.astype(np.float64)
            total += self._c2 * float(w64 @ w64) + self._c1 * float(np.abs(w64).sum())
        return self.lam * total

    def backward(self, model_or_params):
        """Add lam * dR/dW into the weights' gradients; return lam * R(W). One pass."""
        total = 0.0
        for w, g in _weights(model_or_params):
            if w.size == 0:
                continue
            if not (w.flags.c_contiguous and g.flags.c_contiguous) or g.dtype != w.dtype:
                raise ValueError("penalty: weights and gradients must be contiguous, same dtype")
            sums = np.empty(-(-w.size // _k.PENALTY_BLOCK), np.float64)
            _k.penalty(w, g, self._c2, self._c1, self.lam, sums, get_num_threads())
            total += float(sums.sum())
        return self.lam * total


class L2(Penalty):
    """lam * sum(W**2); gradient 2 * lam * W (weight decay)."""

    _c2 = 1.0


class L1(Penalty):
    """lam * sum(|W|); gradient lam * sign(W) (0 at 0)."""

    _c1 = 1.0


class ElasticNet(Penalty):
    """The seed's elastic net: lam * sum(beta * W**2 + |W|)."""

    _c1 = 1.0

    def __init__(self, lam, beta):
        super().__init__(lam)
        beta = float(beta)
        if not np.isfinite(beta) or beta < 0:
            raise ValueError(f"beta: must be a finite number >= 0, got {beta}")
        self.beta = beta
        self._c2 = beta
