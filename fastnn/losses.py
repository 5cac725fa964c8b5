"""Losses and weight penalties.

A loss is used as `value = loss.forward(scores, y)` (or `loss(scores, y)`), then
`dscores = loss.backward()`: the gradient of the MEAN loss over the batch, computed in
the same pass as the value. Scores are logits: the softmax and sigmoid losses are
computed in their overflow-safe forms.

Sample weights: `loss.forward(scores, y, sample_weight=w)`, w (N,) >= 0, multiplies
row i's loss (and its gradient) by w[i] and keeps the mean over the N rows, as Keras's
"sum_over_batch_size" does: sum_i w_i l_i / N, with l_i row i's loss (for MSE and
BCEWithLogits the mean over its C outputs). Trainer.fit(sample_weight=, class_weight=)
scales each batch's weights to sum to its row count, which makes this the weighted mean
sum_i w_i l_i / sum_i w_i (torch's convention for class weights).

A loss also says what its scores predict: `loss.predict(scores)` (class labels, 0/1
labels, or the scores themselves for MSE), `loss.predict_proba(scores)` (softmax or
sigmoid), and for the classification losses `loss.hits(scores, y)` and
`loss.accuracy(scores, y)`. `check_targets(y)` and `cast_targets(y, dtype)` say what y
it takes. The Trainer asks the loss for all of these.

A penalty R(W) (L2, L1, ElasticNet, the seed's forms) applies to the weights of a
model (its parameters of kind "weight": not biases, not BatchNorm's gamma and beta)
that are not frozen: `penalty.backward(model)` adds lam * dR/dW into the gradients and
returns lam * R(W), in one pass over the weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Union

import numpy as np

from . import ops
from ._checks import UNIT, check_array, check_contiguous, check_float, check_rows_finite
from ._kernels import losses as _k
from ._threads import kernel_threads

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
    "check_sample_weight",
]


def _prediction_scores(scores: Any) -> np.ndarray:
    """Scores to predict from, as a float array of at least one row; no state kept."""
    scores = np.asarray(scores)
    if scores.dtype.kind != "f":
        raise TypeError(f"scores: expected a float array, got dtype {scores.dtype}")
    if scores.ndim not in (1, 2):
        raise ValueError(f"scores: expected (N, C) or (N,), got shape {scores.shape}")
    return scores


def check_sample_weight(w: Any, n: int, name: str = "sample_weight") -> np.ndarray:
    """w as a float64 array of n weights, each finite and >= 0 (TypeError for a
    non-numeric w, ValueError for another shape or a bad value)."""
    w = np.asarray(w)
    if w.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected numbers, got dtype {w.dtype}")
    if w.shape != (n,):
        raise ValueError(f"{name}: expected one weight per row, shape ({n},), got {w.shape}")
    w = w.astype(np.float64, copy=False)
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"{name}: weights must be finite and >= 0")
    return w


class Loss:
    """Base class: forward(scores, y) -> float; backward() -> d(loss)/d(scores).

    The gradient array is reused while the batch shape stays the same: it is valid until
    the next forward.

    `classifier`: predict() gives classes and hits() / accuracy() count the right ones.
    `labels`: y holds one integer class label per row, and predict_proba() a
    distribution over the classes per row.
    """

    classifier = False
    labels = False

    def __init__(self):
        self._grad = None
        self._row_loss = None
        self._ready = False

    def __call__(self, scores: np.ndarray, y: np.ndarray,
                 sample_weight: np.ndarray | None = None) -> float:
        return self.forward(scores, y, sample_weight)

    def forward(self, scores: np.ndarray, y: np.ndarray,
                sample_weight: np.ndarray | None = None) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    # ------------------------------------------------------------ targets

    def check_targets(self, y: np.ndarray, name: str = "y") -> None:
        """Raise TypeError / ValueError for targets this loss cannot take (checked once,
        on the whole array; label ranges are checked against the scores in forward)."""
        if y.dtype.kind not in "fiub":
            raise TypeError(f"{name}: expected a numeric array, got dtype {y.dtype}")
        check_rows_finite(y, name)  # a block at a time: y may be a huge broadcast view

    def cast_targets(self, y: np.ndarray, dtype: Any) -> np.ndarray:
        """y as forward takes it for scores of `dtype` (no copy when it already is)."""
        return y.astype(dtype, copy=False)

    # ------------------------------------------------------------ predictions

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """What the scores predict: the scores themselves unless a loss says otherwise."""
        return _prediction_scores(scores)

    def predict_proba(self, scores: np.ndarray) -> np.ndarray:
        """Probabilities from the scores; TypeError for a loss that gives none."""
        raise TypeError(f"predict_proba: {type(self).__name__} gives no probabilities")

    def hits(self, scores: np.ndarray, y: np.ndarray) -> float:
        """How many rows the scores predict right (a row of several outputs counts the
        fraction of them that are right); TypeError for a loss without classes."""
        raise TypeError(f"{type(self).__name__} predicts no classes: it has no accuracy")

    def accuracy(self, scores: np.ndarray, y: np.ndarray) -> float:
        """The fraction of rows predicted right: hits(scores, y) / rows."""
        return self.hits(scores, y) / len(scores)

    def _buffers(self, scores):
        if self._grad is None or self._grad.shape != scores.shape or (
            self._grad.dtype != scores.dtype
        ):
            self._grad = np.empty_like(scores)
            self._row_loss = np.empty(scores.shape[0], np.float64)
        return self._grad, self._row_loss

    def _scores(self, scores):
        scores = check_contiguous(check_array(scores, "scores"), "scores")
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

    def _finish(self, row_loss, denominator, sample_weight=None):
        """The loss from the kernel's per-row losses (and gradient, already in
        self._grad) over `denominator` terms, each row weighted by sample_weight."""
        if sample_weight is not None:
            w = check_sample_weight(sample_weight, len(row_loss))
            row_loss *= w
            self._grad *= w.astype(self._grad.dtype)[:, None]
        self._ready = True
        return float(row_loss.sum() / denominator)

    def backward(self):
        """d(mean loss)/d(scores) of the last forward."""
        if not self._ready:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        return self._grad.reshape(self._shape)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax, overflow-safe (the row maximum is subtracted first)."""
    out = scores - scores.max(axis=1, keepdims=True)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out


class _ClassLoss(Loss):
    """A loss over one integer class label per row; predicts the highest score."""

    _kind = None
    _param = 0.0  # the kernel's parameter: the label smoothing, the hinge margin
    classifier = True
    labels = True

    def check_targets(self, y: np.ndarray, name: str = "y") -> None:
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise TypeError(f"{name}: expected a 1-D array of integer class labels, got "
                            f"{y.dtype} of shape {y.shape}")

    def cast_targets(self, y: np.ndarray, dtype: Any) -> np.ndarray:
        return y

    def _class_scores(self, scores: np.ndarray) -> np.ndarray:
        scores = _prediction_scores(scores)
        if scores.ndim != 2:
            raise ValueError(f"scores: expected (N, C) class scores, got shape {scores.shape}")
        return scores

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """(N,) the class of the highest score per row."""
        return self._class_scores(scores).argmax(axis=1)

    def predict_proba(self, scores: np.ndarray) -> np.ndarray:
        """(N, C) softmax of the scores."""
        return softmax(self._class_scores(scores))

    def hits(self, scores: np.ndarray, y: np.ndarray) -> float:
        """How many rows' highest score is at their label."""
        return float(np.count_nonzero(self.predict(scores) == np.asarray(y)))

    def forward(self, scores: np.ndarray, y: np.ndarray,
                sample_weight: np.ndarray | None = None) -> float:
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
        _k.class_loss(self._kind, scores, labels, grad, row_loss, self._param,
                      kernel_threads())
        return self._finish(row_loss, n, sample_weight)


class SoftmaxCrossEntropy(_ClassLoss):
    """Mean over rows of the cross-entropy -sum_j t_j log softmax(s)_j against the target
    t = (1 - eps) * onehot(y) + eps / C (C classes, eps = label_smoothing in [0, 1], as
    PyTorch's CrossEntropyLoss): logsumexp(s) - (1 - eps) s[y] - eps / C sum_j s_j, and
    logsumexp(s) - s[y] for eps = 0; stable for any logits.

    backward: (softmax(s) - t) / N.
    """

    _kind = _k.LossKind.SOFTMAX_CROSS_ENTROPY

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self._param = check_float(label_smoothing, "label_smoothing", UNIT)

    @property
    def label_smoothing(self) -> float:
        return self._param


class MulticlassHinge(_ClassLoss):
    """The multiclass SVM loss: mean over rows of sum_{j != y} max(0, s_j - s_y + margin)."""

    _kind = _k.LossKind.MULTICLASS_HINGE

    def __init__(self, margin: float = 1.0):
        super().__init__()
        margin = float(margin)
        if not np.isfinite(margin) or margin < 0:
            raise ValueError(f"margin: must be a finite number >= 0, got {margin}")
        self._param = margin

    @property
    def margin(self) -> float:
        return self._param


class _TargetLoss(Loss):
    _kind = None

    def forward(self, scores: np.ndarray, y: np.ndarray,
                sample_weight: np.ndarray | None = None) -> float:
        scores = self._scores(scores)
        y = check_contiguous(check_array(y, "y"), "y")
        if y.dtype != scores.dtype:
            raise TypeError(f"y: dtype {y.dtype} differs from scores' {scores.dtype}")
        if y.size != scores.size or y.shape[0] != scores.shape[0]:
            raise ValueError(f"y: expected shape {scores.shape} to match scores, got {y.shape}")
        grad, row_loss = self._buffers(scores)
        _k.target_loss(self._kind, scores, y.reshape(scores.shape), grad, row_loss,
                       kernel_threads())
        return self._finish(row_loss, scores.size, sample_weight)


class MSE(_TargetLoss):
    """Mean over all elements of (s - y)^2; backward: 2 (s - y) / numel."""

    _kind = _k.LossKind.MSE


class BCEWithLogits(_TargetLoss):
    """Binary cross-entropy on logits, mean over all elements, in the stable form
    max(s, 0) - s y + log(1 + exp(-|s|)); backward: (sigmoid(s) - y) / numel.

    Each output is a binary label: predict gives 1 where the logit is > 0, else 0;
    predict_proba the sigmoid; a target counts as label 1 when it is > 0.5.
    """

    _kind = _k.LossKind.BCE_WITH_LOGITS
    classifier = True

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """0/1 labels of the scores' shape (integers): 1 where the logit is > 0."""
        return (_prediction_scores(scores) > 0).astype(np.intp)

    def predict_proba(self, scores: np.ndarray) -> np.ndarray:
        """sigmoid(scores), of the scores' shape."""
        return ops.sigmoid(np.ascontiguousarray(_prediction_scores(scores)))

    def hits(self, scores: np.ndarray, y: np.ndarray) -> float:
        """Rows predicted right, each row counting the fraction of its outputs that are
        right (so that hits / rows is the fraction of all outputs right)."""
        labels = self.predict(scores)
        y = np.asarray(y)
        if y.size != labels.size:
            raise ValueError(f"y: {y.size} targets for {labels.size} scores")
        right = np.count_nonzero(labels.reshape(-1) == (y.reshape(-1) > 0.5))
        return float(right / (labels.size // max(len(labels), 1)))


# ---------------------------------------------------------------- penalties


Penalized = Union[Any, Iterable[np.ndarray]]  # a Module, or parameters with a .grad


def _weights(model_or_params: Penalized) -> list[tuple[np.ndarray, np.ndarray]]:
    """(values, gradients) flat arrays to penalize: the weight-kind parameters that are
    not frozen. A model whose parameters fill one arena with nothing frozen: its weight
    segment, one pair. Otherwise parameter by parameter, those adjacent in one arena
    merged into one pair."""
    arena = getattr(model_or_params, "arena", None)
    if arena is not None and not arena.frozen:
        return [arena.weights()]
    params = model_or_params.parameters() if hasattr(model_or_params, "parameters") else (
        model_or_params
    )
    pairs = []
    by_arena = {}
    for p in params:
        if getattr(p, "kind", "weight") != "weight" or not getattr(p, "requires_grad", True):
            continue
        grad = getattr(p, "grad", None)
        if grad is None:
            raise ValueError("penalty: a parameter has no .grad to add the gradient into")
        home = getattr(p, "arena", None)
        if home is None:
            pairs.append((p.reshape(-1), grad.reshape(-1)))
        else:
            by_arena.setdefault(id(home), (home, []))[1].append(p)
    for home, members in by_arena.values():
        members.sort(key=lambda p: p.offset)
        start = end = members[0].offset
        for p in members:
            if p.offset != end:
                pairs.append((home.data[start:end], home.grad[start:end]))
                start = p.offset
            end = p.offset + p.size
        pairs.append((home.data[start:end], home.grad[start:end]))
    return pairs


class Penalty:
    """lam * R(W) with R(W) = sum(c2 * W**2 + c1 * |W|) over the weights that are not
    frozen (parameters of kind "weight" with requires_grad True)."""

    _c2 = 0.0
    _c1 = 0.0

    def __init__(self, lam: float):
        lam = float(lam)
        if not np.isfinite(lam) or lam < 0:
            raise ValueError(f"lam: must be a finite number >= 0, got {lam}")
        self.lam = lam

    def __call__(self, model_or_params: Penalized) -> float:
        return self.penalty(model_or_params)

    def penalty(self, model_or_params: Penalized) -> float:
        """lam * R(W), without touching gradients."""
        total = 0.0
        for w, _ in _weights(model_or_params):
            w64 = w.astype(np.float64)
            total += self._c2 * float(w64 @ w64) + self._c1 * float(np.abs(w64).sum())
        return self.lam * total

    def backward(self, model_or_params: Penalized) -> float:
        """Add lam * dR/dW into the weights' gradients; return lam * R(W). One pass."""
        total = 0.0
        for w, g in _weights(model_or_params):
            if w.size == 0:
                continue
            if not (w.flags.c_contiguous and g.flags.c_contiguous) or g.dtype != w.dtype:
                raise ValueError("penalty: weights and gradients must be contiguous, same dtype")
            sums = np.empty(-(-w.size // _k.PENALTY_BLOCK), np.float64)
            _k.penalty(w, g, self._c2, self._c1, self.lam, sums, kernel_threads())
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

    def __init__(self, lam: float, beta: float):
        super().__init__(lam)
        beta = float(beta)
        if not np.isfinite(beta) or beta < 0:
            raise ValueError(f"beta: must be a finite number >= 0, got {beta}")
        self.beta = beta
        self._c2 = beta
