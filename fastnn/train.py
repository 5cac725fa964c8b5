"""The Trainer: mini-batch training, evaluation and prediction.

    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.Adam(model, 1e-3))
    history = trainer.fit(X, y, epochs=5, batch_size=128, validation_data=(Xv, yv))
    trainer.evaluate(Xt, yt)   # {"loss": ..., "accuracy": ...}

One training loop serves one process and data-parallel ranks alike: a step strategy
(_LocalStep, _ParallelStep) says which rows of a batch this process computes, runs the
forward and backward passes and gives the batch's loss and hits; every step then ends
the same way (penalty, non-finite check, clipping, optimizer step). History and the
callbacks live in fastnn.callbacks (and are exported from here too).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Integral
from typing import Any, Union

import numpy as np

from . import losses as _losses
from ._checks import (
    NON_NEGATIVE,
    POSITIVE,
    Interval,
    check_float,
    check_labels,
    check_rows_finite,
)
from ._seed import resolve_seed
from .callbacks import (
    SHOWN,
    Callback,
    Checkpoint,
    EarlyStopping,
    History,
    check_callbacks,
    epoch_line,
    progress_bar,
)

__all__ = ["Callback", "Checkpoint", "EarlyStopping", "History", "Trainer"]

PathLike = Union[str, os.PathLike]


def _check_optimizer(optimizer: Any) -> Any:
    if optimizer is None:
        return None
    if not (callable(getattr(optimizer, "step", None))
            and isinstance(getattr(optimizer, "param_groups", None), list)):
        raise TypeError(f"optimizer: expected a fastnn.optim optimizer (or None to evaluate "
                        f"and predict only), got {type(optimizer).__name__}")
    return optimizer


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def _validation_pair(validation_data: Any) -> tuple[Any, Any] | None:
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        kind = type(validation_data).__name__
        size = f" of length {len(validation_data)}" if isinstance(validation_data,
                                                                   (tuple, list)) else ""
        raise ValueError(f"validation_data: expected a pair (X, y), got a {kind}{size}")
    return validation_data[0], validation_data[1]


def _row_weights(loss: _losses.Loss, y: np.ndarray, sample_weight: Any,
                 class_weight: Any) -> np.ndarray | None:
    """Each sample's weight (float64, (N,)): sample_weight[i] * class_weight[class of
    sample i], a class missing from class_weight weighing 1; None when both are None."""
    if sample_weight is None and class_weight is None:
        return None
    n = len(y)
    w = (np.ones(n) if sample_weight is None
         else _losses.check_sample_weight(sample_weight, n).copy())
    if class_weight is not None:
        w *= _class_weights(loss, y, class_weight)
    if not w.any():
        raise ValueError("sample_weight, class_weight: every sample weighs 0")
    return w


def _class_weights(loss, y, class_weight):
    """class_weight[class of each sample] (1 for a class it does not name). The class of
    a sample: its label (SoftmaxCrossEntropy, MulticlassHinge), or for BCEWithLogits with
    one target per sample, 1 where the target is > 0.5, else 0."""
    if not isinstance(class_weight, Mapping):
        raise TypeError(f"class_weight: expected a dict {{class: weight}}, got "
                        f"{type(class_weight).__name__}")
    if loss.labels:
        classes = y
    elif isinstance(loss, _losses.BCEWithLogits) and y.size == len(y):
        classes = (y.reshape(-1) > 0.5).astype(np.intp)
    else:
        raise ValueError(f"class_weight: for classification losses with one class per "
                         f"sample (SoftmaxCrossEntropy, MulticlassHinge, BCEWithLogits "
                         f"with one output); {type(loss).__name__} with targets of shape "
                         f"{y.shape} takes sample_weight instead")
    if classes.min() < 0:
        raise ValueError(f"y: class labels must be >= 0, got {classes.min()}")
    for k in class_weight:
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 0:
            raise ValueError(f"class_weight: keys must be class labels (ints >= 0), got {k!r}")
    table = np.ones(max(int(classes.max()), *map(int, class_weight)) + 1)
    for k, v in class_weight.items():
        table[int(k)] = check_float(v, f"class_weight[{k}]", NON_NEGATIVE)
    return table[classes]


# ---------------------------------------------------------------- step strategies


_NO_GUARD = contextlib.nullcontext()  # reusable: a step here needs no guard


class _LocalStep:
    """How one process takes a step: every row of a batch, here."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def guard(self):
        return _NO_GUARD

    def begin_fit(self, X: np.ndarray, y: np.ndarray) -> None:
        pass

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """The rows of a batch (indices idx) that this process computes."""
        return idx

    def batch_rows(self, rows: int) -> int:
        """The rows of the whole batch, given this process's count."""
        return rows

    def forward_backward(self, xb: np.ndarray, yb: np.ndarray, n: int,
                         wb: np.ndarray | None = None) -> tuple[float, float | None]:
        """Forward and backward passes on this process's rows xb of a batch of n rows
        (wb: their weights, scaled to sum to n over the batch, or None): the gradients of
        the batch's mean loss accumulate in the model; returns (mean loss, hits) over
        the batch, hits None when the caller may count them from the scores (here: only
        fit needs them, and train_step alone spares the count)."""
        t = self.trainer
        scores = t._last_scores = t._forward(xb)
        value = t._loss_value(scores, yb, wb)
        t.model.backward(t.loss.backward(), input_grad=False)
        return value, None

    def after_step(self) -> None:
        pass

    def end_epoch(self) -> None:
        pass

    def evaluate(self, X: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[float, float]:
        """(mean loss, hits) over all of X."""
        return self.trainer._evaluate_rows(X, y, batch_size)

    def on_root(self, fn: Callable[[], Any]) -> None:
        fn()

    def after_load(self) -> None:
        pass


class _ParallelStep(_LocalStep):
    """How a data-parallel rank takes a step (fastnn.distributed.DataParallel): its
    contiguous slice of every batch; the gradients and statistics summed over the
    ranks."""

    def __init__(self, trainer: Trainer, parallel):
        super().__init__(trainer)
        self.dp = parallel

    def guard(self):
        from .distributed import guard

        return guard(self.dp.comm)

    def begin_fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self.dp.check_data(X, y)
        self.dp.sync_trainer(self.trainer)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return idx[slice(*self.dp.local_rows(len(idx)))]

    def batch_rows(self, rows: int) -> int:
        return int(self.dp.sum([rows])[0])

    def forward_backward(self, xb: np.ndarray, yb: np.ndarray, n: int,
                         wb: np.ndarray | None = None) -> tuple[float, float]:
        """The loss gradient is scaled by rows / n, so that the all-reduce (a sum) gives
        the gradient of the mean loss over the global batch (wb, scaled over the global
        batch, weighs the rows alike); the loss and hits are the global batch's. A rank
        without rows in this batch takes part in the collectives only, in their order."""
        t, dp = self.trainer, self.dp
        rows = len(xb)
        if rows:
            scores = t._last_scores = t._forward(xb)
            value = t._loss_value(scores, yb, wb)
            dp.start_stats(value * rows, t._hits(scores, yb), rows)
            dscores = t.loss.backward()
            dscores *= rows / n
            dp.backward(dscores)
        else:
            t._last_scores = None
            dp.take_part_forward()
            dp.start_stats(0.0, 0, 0)
            dp.backward(None)
        loss_sum, hits, _ = dp.finish_step()
        return loss_sum / n, hits

    def after_step(self) -> None:
        self.dp.after_step()

    def end_epoch(self) -> None:
        self.dp.average_buffers()

    def evaluate(self, X: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[float, float]:
        """Each rank computes its slice of the rows; the sums are shared."""
        lo, hi = self.dp.local_rows(len(X))
        loss_sum = hits = 0.0
        if hi > lo:
            loss, hits = self.trainer._evaluate_rows(X[lo:hi], y[lo:hi], batch_size)
            loss_sum = loss * (hi - lo)
        loss_sum, hits = self.dp.sum([loss_sum, hits])
        return float(loss_sum / len(X)), float(hits)

    def on_root(self, fn: Callable[[], Any]) -> None:
        self.dp.run_on_root(fn)

    def after_load(self) -> None:
        self.dp.sync_trainer(self.trainer)


# ---------------------------------------------------------------- the trainer


class Trainer:
    """Mini-batch training of a model: forward, loss, backward, penalty, clip, step.

    model: a fastnn.nn Module (usually a Sequential). loss: a fastnn.losses loss; it
    also says what the model's outputs predict (predict, predict_proba, accuracy).
    optimizer: a fastnn.optim optimizer over the parameters to train (all of the
    model's, or some); None for a Trainer that only evaluates and predicts. Every step
    zeroes the gradients of the whole model. schedule: a fastnn.optim schedule, stepped
    once per epoch (ReduceOnPlateau with the monitored validation loss, or training loss
    without validation data). regularizer: a fastnn.losses penalty (L2, L1, ElasticNet)
    on the model's weights that are not frozen, added to the loss. augment: a callable
    applied to each training batch, as the model's dtype (e.g. fastnn.augment.Compose,
    whose transforms take float32 batches); a batch of images (N, C, H, W) goes to it
    as it is. image_shape: for flat data only (X of shape (N, features)): each batch is
    viewed as images of this shape ((H, W) or (C, H, W), holding `features` values) for
    augment, and its result flattened back; fit refuses image_shape with images X (they
    have their shape already). clip_norm: clip the gradient norm of the trained
    parameters (those the optimizer holds with requires_grad True) to this value every
    step; `grad_norm` is then the last step's norm before clipping.
    progress=True: a tqdm bar per epoch when tqdm is installed and stderr is a terminal,
    else one printed line per epoch; "always": the bar even without a terminal; False:
    silent.

    Data: X is (N, features) rows or (N, C, H, W) images (any (N, ...) the model
    takes: a model that expects other channels or sizes raises its own error at the
    first batch), of any numeric dtype. Batches are converted to the model's dtype
    (that of its parameters) value for value: integer data such as uint8 images are
    NOT scaled (pixel values stay 0..255; divide by 255 beforehand, or normalize in the
    model, for inputs in [0, 1]). y has one entry per sample of X.

    comm: an mpi4py communicator: training is data parallel over its ranks
    (fastnn.distributed; pip install 'fastnn[mpi]'). Every rank builds the same
    Trainer and calls fit with the same full data; each computes its contiguous slice
    of every global batch, and one all-reduce of the gradient arena per step keeps the
    parameters identical. A model without BatchNorm or Dropout trains to the weights a
    single process gets with the same seed and batch_size, to float rounding.
    BatchNorm1d and BatchNorm2d normalize with each rank's statistics (nn.SyncBatchNorm,
    1-D only, with the global batch's); their running statistics are averaged over the
    ranks every epoch.
    Progress prints on rank 0; checkpoints are written by rank 0 and loaded by rank 0
    and sent to the others; evaluate() shares its rows among the ranks, predict() and
    predict_proba() compute all rows on every rank. The DataParallel helper is
    `trainer.parallel` (its check_every, timeout and overlap settings).

    Threads: a training step, predict, predict_proba and evaluate each hold the
    model's lock (nn.Module, "Threads") from start to end, so they may be called from
    several threads; a step of fit runs in train mode even when another thread's
    evaluate has just put the model in eval mode.
    """

    def __init__(self, model: Any, loss: _losses.Loss, optimizer: Any = None,
                 schedule: Any = None, regularizer: _losses.Penalty | None = None,
                 augment: Callable[[np.ndarray], np.ndarray] | None = None,
                 callbacks: Iterable[Callback] = (), progress: bool | str = True,
                 comm: Any = None, clip_norm: float | None = None,
                 image_shape: Sequence[int] | None = None):
        if not hasattr(model, "forward") or not hasattr(model, "backward"):
            raise TypeError("model: expected a fastnn.nn Module")
        if not isinstance(loss, _losses.Loss):
            raise TypeError(f"loss: expected a fastnn.losses loss, got {type(loss).__name__}")
        self.model, self.loss = model, loss
        self.optimizer = _check_optimizer(optimizer)
        self._eval_loss = copy.deepcopy(loss)  # keeps evaluate() off the training buffers
        self.schedule, self.regularizer, self.augment = schedule, regularizer, augment
        self.callbacks = check_callbacks(callbacks)
        self.progress = progress
        self.clip_norm = None if clip_norm is None else check_float(clip_norm, "clip_norm",
                                                                    POSITIVE)
        self.grad_norm: float | None = None
        self.image_shape = None if image_shape is None else tuple(image_shape)
        if self.image_shape is not None and hasattr(augment, "check_image_size"):
            augment.check_image_size(self.image_shape[-2:])  # a crop too large fails here
        self._augment_out = None  # the augmented batch, reused while its shape stays
        self._last_scores = None
        self._last_hits = 0.0
        self._source = ("X", None)  # the data the model's input comes from, for errors
        self._unchecked_targets = None  # [(y, name)] to check against the model's outputs
        self.stop_training = False
        self.epoch = 0  # epochs completed
        self.rng = np.random.default_rng(resolve_seed(None))  # fit(seed=) replaces it
        self.history = History()
        self.comm, self.parallel = comm, None
        self._strategy = _LocalStep(self)
        if comm is not None:
            from .distributed import DataParallel

            self.parallel = DataParallel(comm, model)
            self._strategy = _ParallelStep(self, self.parallel)
            if self.parallel.rank != 0:
                self.progress = False

    # ------------------------------------------------------------ data checks

    @property
    def classifier(self) -> bool:
        """Whether the loss predicts classes (fit and evaluate then give an accuracy)."""
        return self.loss.classifier

    def _dtype(self) -> np.dtype:
        return self.model.param_dtype()

    def _check_xy(self, X, y, name="X", y_name="y"):
        """X as an array of samples (and y as an array of their targets); nothing is
        copied unless X is not an array. Every value of X must be finite in the model's
        dtype, as must float targets; class labels must be >= 0 (their upper bound, the
        number of outputs, is checked against the scores). Errors name the first bad row."""
        X = np.asarray(X)
        if X.dtype.kind not in "fiu":
            raise TypeError(f"{name}: expected a numeric array, got dtype {X.dtype}")
        if X.ndim < 2:
            raise ValueError(f"{name}: expected a 2-D array (samples, features) or 4-D images "
                             f"(samples, channels, height, width), got shape {X.shape}")
        if X.shape[0] == 0:
            raise ValueError(f"{name}: no samples")
        check_rows_finite(X, name, self._dtype())
        if y is None:
            return X, None
        y = np.asarray(y)
        if y.ndim == 0 or len(y) != len(X):
            raise ValueError(f"{y_name}: {y.size if y.ndim == 0 else len(y)} labels for "
                             f"{len(X)} samples")
        self.loss.check_targets(y, y_name)
        if self.loss.labels:
            check_labels(y, y_name)
        else:
            check_rows_finite(y, y_name, self._dtype())
        return X, y

    def _check_targets_against(self, scores):
        """The targets fit was given, checked once against the first scores of the
        model, before the first update: class labels < the number of scores per row,
        other targets as many per row as the scores."""
        width = scores[0].size
        for y, name in self._unchecked_targets:
            if self.loss.labels:
                check_labels(y, name, width)
            elif y[0].size != width:
                raise ValueError(f"{name}: {y[0].size} targets per sample, but the model "
                                 f"gives {width} outputs per sample")
        self._unchecked_targets = None

    # ------------------------------------------------------------ training

    def _check_images(self, X):
        """image_shape and augment against the samples' shape, before training."""
        shape = self.image_shape
        if shape is not None:
            if X.ndim != 2:
                raise ValueError(f"image_shape={shape} is for flat data (samples, features); "
                                 f"X holds samples of shape {X.shape[1:]} already: build "
                                 f"the Trainer without image_shape")
            if math.prod(shape) != X.shape[1]:
                raise ValueError(f"image_shape={shape} holds {math.prod(shape)} values, but "
                                 f"X has {X.shape[1]} features per sample")
        elif X.ndim >= 3 and hasattr(self.augment, "check_image_size"):
            self.augment.check_image_size(X.shape[-2:])  # a crop too large fails here

    def _batch(self, X, idx, buf):
        """Samples idx of X, as the model's dtype, in a reused buffer of the batch's
        full shape."""
        out = buf[:len(idx)]
        if X.dtype == out.dtype:
            np.take(X, idx, axis=0, out=out)
        else:
            out[...] = X[idx]
        return out

    def _trained(self) -> list:
        """The parameters a step changes: those the optimizer holds that are not frozen."""
        return [p for group in self.optimizer.param_groups for p in group["params"]
                if getattr(p, "requires_grad", True)]

    def _hits(self, scores, yb) -> float:
        return self.loss.hits(scores, yb) if self.loss.classifier else 0.0

    def _forward(self, xb):
        """model.forward(xb); a ValueError (an input the model rejects) names the data
        the batch came from and its shape, not only the batch's."""
        try:
            return self.model.forward(xb)
        except ValueError as exc:
            name, shape = self._source
            raise ValueError(f"{name} of shape {shape}: the model rejects samples of shape "
                             f"{shape[1:]}: {exc}") from exc

    def _loss_value(self, scores, yb, wb):
        """The loss of a batch, its rows weighted by wb (None: unweighted; a loss is then
        called without sample_weight, which a custom loss need not take)."""
        if wb is None:
            return self.loss.forward(scores, yb)
        return self.loss.forward(scores, yb, sample_weight=wb)

    def _step(self, xb, yb, n, wb=None, training=False):
        """One step on this process's rows xb of a batch of n rows (wb: their weights or
        None); the tail (penalty,
        non-finite checks, clipping, optimizer step) is the same for every strategy.
        Returns the loss, which may be non-finite: then nothing was updated. Raises
        FloatingPointError, before the update, for a finite loss with a non-finite
        gradient. A step refused (or failed) before its update leaves the model's
        buffers as they were, too. The model's lock is held throughout (training=True:
        in train mode, which an evaluate() from another thread may have left off)."""
        with self.model.locked():
            if training and not self.model.training:
                self.model.train()
            # a train-mode forward changes buffers (BatchNorm's running statistics,
            # Dropout's step) before the loss is known: a refused step restores them
            buffers, saved = self._buffer_snapshot()
            value = math.nan
            try:
                value = self._gradients(xb, yb, n, wb)
            finally:
                if not math.isfinite(value):  # a non-finite loss, or an exception
                    for buffer, before in zip(buffers, saved):
                        np.copyto(buffer, before)
            if math.isfinite(value):
                self.optimizer.step()
                self._strategy.after_step()
            return value

    def _buffer_snapshot(self):
        """(the model's buffers, copies of them made now), the copies in arrays reused
        from step to step while the buffers stay the same."""
        buffers = [getattr(m, name) for m, name in self.model._buffer_slots()]
        cache = self.__dict__.get("_snapshot")
        if cache is None or len(cache[0]) != len(buffers) or any(
                a is not b for a, b in zip(cache[0], buffers)):
            cache = self._snapshot = (buffers, [np.empty_like(b) for b in buffers])
        for buffer, saved in zip(*cache):
            np.copyto(saved, buffer)
        return cache

    def _gradients(self, xb, yb, n, wb):
        """The forward and backward passes and the penalty of a step: returns the loss,
        and when it is finite, checks (or clips) the gradients."""
        if type(self._strategy) is _LocalStep:  # the model's own backward comes next
            self.model._zero_grad_for_step()
        else:
            self.model.zero_grad()
        value, self._last_hits = self._strategy.forward_backward(xb, yb, n, wb)
        if self._unchecked_targets is not None and self._last_scores is not None:
            self._check_targets_against(self._last_scores)
        if self.regularizer is not None:
            value += self.regularizer.backward(self.model)
        if math.isfinite(value):
            # the gradients are global here: every rank clips (or raises) alike
            if self.clip_norm is not None:
                from .optim import clip_grad_norm

                self.grad_norm = clip_grad_norm(self._trained(), self.clip_norm)
            else:
                self._check_gradients()
        return value

    def _check_gradients(self):
        """FloatingPointError unless every gradient the optimizer applies is finite: a
        finite loss can still overflow a gradient (large inputs in float32)."""
        if not self.optimizer.grads_finite():
            raise FloatingPointError("non-finite gradient with a finite loss")

    def _need_optimizer(self, what: str) -> None:
        if self.optimizer is None:
            raise ValueError(f"{what}: this Trainer has no optimizer; build it with one "
                             f"(Trainer(model, loss, optimizer)) to train. Without one it "
                             f"can evaluate and predict only")

    def train_step(self, xb: np.ndarray, yb: np.ndarray) -> float:
        """One step on one batch xb (rows or images, as fit's X; converted to the
        model's dtype as fit does, unscaled, when it has another: a copy), without
        augmentation: returns the loss (data loss + penalty). A non-finite loss is
        returned, and a non-finite gradient raises FloatingPointError, with nothing
        updated. Data parallel: xb is this rank's part of a batch made of every rank's
        parts."""
        self._need_optimizer("train_step")
        dtype = self.model.param_dtype()
        xb = np.asarray(xb)
        if xb.dtype != dtype and xb.dtype.kind in "fiu":
            xb = xb.astype(dtype)
        yb = self.loss.cast_targets(np.asarray(yb), dtype)
        self._source = ("xb", xb.shape)
        with self._strategy.guard():
            return self._step(xb, yb, self._strategy.batch_rows(len(xb)))

    def fit(self, X: np.ndarray, y: np.ndarray, epochs: int = 1, batch_size: int = 32,
            validation_data: tuple[np.ndarray, np.ndarray] | None = None,
            shuffle: bool = True, seed: int | None = None, validation_split: float = 0.0,
            sample_weight: np.ndarray | None = None,
            class_weight: Mapping[int, float] | None = None) -> History:
        """Train for `epochs` epochs; returns the History (also `trainer.history`).

        Each epoch visits every sample once in a new random order (shuffle=True; the
        order depends on `seed`: without it, on the Trainer's generator, seeded by
        fastnn.manual_seed when that was called before the Trainer was built), in
        batches of batch_size, the last one smaller (or one larger: a last batch of a
        single sample joins the one before it). The data are gathered batch by batch
        into a reused buffer, never copied whole.

        validation_data=(Xv, yv), or validation_split=f in [0, 1) (not both): as
        Keras, the LAST n - ceil(n * (1 - f)) samples of X and y, taken before any
        shuffling, are held out and evaluated after every epoch (val_loss, ...).
        sample_weight (N,) >= 0 and class_weight {class: weight} (classification
        losses with one class per sample; a class it omits weighs 1) weigh each
        sample's loss, multiplied together: each batch's loss is the weighted mean
        sum_i w_i l_i / sum_i w_i over its samples (PyTorch's convention for class
        weights; Keras divides by the batch size instead, so that there the weights'
        scale also scales the gradient). A batch whose weights are all 0 has loss 0 and
        no data gradient. The logged accuracy and the validation metrics are
        unweighted.
        X, y and validation_data are checked whole before the first update: values
        of X (and float targets) finite in the model's dtype (a float64 1e39 is inf in
        float32), class labels in [0, outputs); the errors name the first bad row.
        A non-finite loss or gradient stops training with FloatingPointError naming the
        epoch and step, before the optimizer step, so the weights, the buffers
        (BatchNorm's running statistics) and checkpoints stay finite.
        Data parallel (comm=): every rank passes the same X and y (and seed); an
        exception on one rank alone aborts the job (see fastnn.distributed).
        """
        self._need_optimizer("fit")
        try:
            with self._strategy.guard():
                return self._fit(X, y, epochs, batch_size, validation_data, shuffle, seed,
                                 validation_split, sample_weight, class_weight)
        finally:
            self._unchecked_targets = None

    def _fit(self, X, y, epochs, batch_size, validation_data, shuffle, seed,
             validation_split, sample_weight, class_weight):
        X, y = self._check_xy(X, y)
        weights = _row_weights(self.loss, y, sample_weight, class_weight)
        validation = _validation_pair(validation_data)
        split = check_float(validation_split, "validation_split", Interval(0, 1, "left"))
        if split and validation is not None:
            raise ValueError("validation_split and validation_data: pass one of them, "
                             "not both")
        if split:
            cut = math.ceil(len(X) * (1 - split))  # Keras's: the last samples are held out
            if cut == len(X) or cut == 0:
                raise ValueError(f"validation_split={split}: {len(X)} samples leave "
                                 f"{len(X) - cut} for validation and {cut} for training")
            validation = (X[cut:], y[cut:])
            X, y = X[:cut], y[:cut]
            if weights is not None:
                weights = weights[:cut]
                if not weights.any():
                    raise ValueError("sample_weight, class_weight: every training sample "
                                     "weighs 0")
        self._unchecked_targets = [(y, "y")]
        if validation is not None:
            Xv, yv = self._check_xy(*validation, "validation X", "validation y")
            self._unchecked_targets.append((yv, "validation y"))
            # images may differ in height and width (a fully convolutional model)
            fixed = X.ndim if X.ndim <= 2 else X.ndim - 2
            if Xv.ndim != X.ndim or Xv.shape[1:fixed] != X.shape[1:fixed]:
                raise ValueError(f"validation X: samples of shape {Xv.shape[1:]}, but X's "
                                 f"are {X.shape[1:]}")
        epochs, batch_size = _positive_int("epochs", epochs), _positive_int("batch_size",
                                                                            batch_size)
        self._check_images(X)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        strategy = self._strategy
        strategy.begin_fit(X, y)
        n = len(X)
        # A last batch of one sample joins the one before it: a batch of one cannot be
        # batch-normalized, and dropping it would skip a sample.
        starts = list(range(0, n, batch_size))
        if len(starts) > 1 and n - starts[-1] == 1:
            starts.pop()
        ends = [*starts[1:], n]
        buf = np.empty((max(e - b for b, e in zip(starts, ends)), *X.shape[1:]), self._dtype())
        self.stop_training = False
        for cb in self.callbacks:
            cb.on_train_begin(self)
        first = self.epoch + 1
        for epoch in range(first, first + epochs):
            for cb in self.callbacks:
                cb.on_epoch_begin(self, epoch)
            self.model.train()
            self._source = ("X", X.shape)
            order = self.rng.permutation(n) if shuffle else np.arange(n)
            lr = self.optimizer.param_groups[0]["lr"]
            start = time.perf_counter()
            total = hits = 0.0
            n_batches = len(starts)
            bar = progress_bar(n_batches, f"epoch {epoch}", self._show_progress())
            for step, (lo, hi) in enumerate(zip(starts, ends), 1):
                idx = order[lo:hi]
                mine = strategy.rows(idx)
                xb = self._batch(X, mine, buf)
                if self.augment is not None and len(mine):
                    xb = self._augmented(xb)
                yb = self.loss.cast_targets(y[mine], buf.dtype)
                wb = None
                if weights is not None:  # scaled to sum to the batch's row count
                    total_w = weights[idx].sum()
                    wb = weights[mine] * (len(idx) / total_w if total_w else 0.0)
                try:
                    value = self._step(xb, yb, len(idx), wb, training=True)
                    if not math.isfinite(value):
                        raise FloatingPointError(f"non-finite loss ({value})")
                except FloatingPointError as exc:
                    if bar is not None:
                        bar.close()
                    error = FloatingPointError(
                        f"{exc} at epoch {epoch}, step {step}: training stopped before the "
                        f"update; the weights are those of the previous step"
                    )
                    error.every_rank = True  # the loss and gradient are the global batch's
                    raise error from exc
                total += value * len(idx)
                hits += (self._hits(self._last_scores, yb) if self._last_hits is None
                         else self._last_hits)
                for cb in self.callbacks:
                    cb.on_batch_end(self, step, value)
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 0 or step == n_batches:
                        post = {"loss": f"{total / hi:.4f}"}
                        if self.classifier:
                            post["acc"] = f"{hits / hi:.4f}"
                        bar.set_postfix(post, refresh=False)
            seconds = time.perf_counter() - start
            strategy.end_epoch()
            logs = {"loss": total / n}
            if self.classifier:
                logs["accuracy"] = hits / n
            if validation is not None:
                logs.update({f"val_{k}": v for k, v in
                             self._evaluate(Xv, yv, 1024, "validation X").items()})
            logs.update(lr=lr, seconds=seconds, samples_per_s=n / seconds)
            if bar is not None:
                bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items() if k in SHOWN})
                bar.close()
            elif self.progress:
                print(epoch_line(epoch, logs), flush=True)
            self.epoch = epoch
            self.history.append(logs)
            self._step_schedule(logs)
            for cb in self.callbacks:
                cb.on_epoch_end(self, epoch, logs)
            if self.stop_training:
                break
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history

    def _show_progress(self):
        if self.progress == "always":
            return True
        return bool(self.progress) and sys.stderr.isatty()

    def _augmented(self, xb):
        """The augmented batch: images as they are, flat rows (image_shape) viewed as
        images and flattened back."""
        flat = self.image_shape is not None
        images = xb.reshape((len(xb), *self.image_shape)) if flat else xb
        from .augment import Compose

        if isinstance(self.augment, Compose) and images.dtype == np.float32:
            # the same-shaped output buffer every step (a crop may change the size)
            shape = (*images.shape[:-2], *self.augment.output_size(images.shape[-2:]))
            out = self._augment_out
            if out is None or out.shape != shape:
                out = self._augment_out = np.empty(shape, np.float32)
            result = self.augment(images, out=out)
        else:
            result = np.asarray(self.augment(images), dtype=xb.dtype)
        return result.reshape(len(xb), -1) if flat else result

    def model_output(self) -> np.ndarray | None:
        """The scores of the last training batch (the loss's input)."""
        return self._last_scores

    def _step_schedule(self, logs):
        from .optim import ReduceOnPlateau

        if self.schedule is None:
            return
        if isinstance(self.schedule, ReduceOnPlateau):
            self.schedule.step(logs.get("val_loss", logs["loss"]))
        else:
            self.schedule.step()

    # ------------------------------------------------------------ inference

    def _batch_scores(self, X, batch_size):
        """(lo, hi, scores of samples lo:hi) for X (checked) in batches of batch_size
        samples, in eval mode, through one reused input buffer. The caller holds the
        model's lock (the scores are valid until the next batch)."""
        self.model.eval()
        n = len(X)
        buf = np.empty((min(batch_size, n), *X.shape[1:]), self._dtype())
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            xb = buf[:hi - lo]
            xb[...] = X[lo:hi]
            yield lo, hi, self._forward(xb)

    def _outputs(self, X, batch_size):
        """The model's outputs for the samples of X (checked), into one output array;
        under the model's lock (another thread's calls wait)."""
        batch_size = _positive_int("batch_size", batch_size)
        out = None
        with self.model.locked():
            for lo, hi, scores in self._batch_scores(X, batch_size):
                if out is None:
                    out = np.empty((len(X), *scores.shape[1:]), scores.dtype)
                out[lo:hi] = scores
        return out

    def _scores(self, X, batch_size):
        """The model's outputs for X, checked as predict's input."""
        X = self._check_xy(X, None)[0]
        self._source = ("X", X.shape)
        return self._outputs(X, batch_size)

    def _evaluate_rows(self, X, y, batch_size):
        """(mean loss, hits) over the samples of X (checked), computed here batch by
        batch: nothing grows with the number of rows (X may be a broadcast view of
        millions). Under the model's lock (the evaluation loss is this Trainer's, shared
        by its threads)."""
        batch_size = _positive_int("batch_size", batch_size)
        loss = self._eval_loss
        total = hits = 0.0
        with self.model.locked():
            for lo, hi, scores in self._batch_scores(X, batch_size):
                if lo == 0 and self.loss.labels:
                    check_labels(y, "y", scores[0].size)  # all of them, before computing
                yb = y[lo:hi]
                value = loss.forward(scores, loss.cast_targets(yb, scores.dtype))
                total += value * (hi - lo)
                hits += self._hits(scores, yb)
        # one batch: its mean as it is (value * n / n may differ in the last bit)
        return (value if hi - lo == len(X) else total / len(X)), hits

    def evaluate(self, X: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> dict[str, float]:
        """{"loss": mean loss, "accuracy": fraction right (classification losses)} in
        eval mode, in batches of batch_size samples (X and y: as fit's, checked as fit
        checks them, before the model runs). Safe from several threads: calls on one
        model run one at a time (see nn.Module, "Threads"). Data parallel
        (comm=): every rank passes the same X and y, computes a slice of the rows, and
        gets the same result."""
        return self._evaluate(X, y, batch_size, "X")

    def _evaluate(self, X, y, batch_size, name):
        X, y = self._check_xy(X, y, name)
        self._source = (name, X.shape)
        with self._strategy.guard():
            value, hits = self._strategy.evaluate(X, y, batch_size)
        result = {"loss": value}
        if self.classifier:
            result["accuracy"] = hits / len(X)
        return result

    def predict(self, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """What the loss says the model's outputs predict: class labels
        (SoftmaxCrossEntropy, MulticlassHinge), 0/1 labels per output (BCEWithLogits),
        the outputs themselves (MSE). X: as fit's, in batches of batch_size samples."""
        return self.loss.predict(self._scores(X, batch_size))

    def predict_proba(self, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Probabilities: softmax of the scores (SoftmaxCrossEntropy, MulticlassHinge)
        or sigmoid (BCEWithLogits); TypeError for a loss without them (MSE). X: as
        fit's, in batches of batch_size samples."""
        return self.loss.predict_proba(self._scores(X, batch_size))

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """What training changes, as arrays, numbers and lists: the model's parameters and
        buffers, the optimizer and schedule state (None without them), the epoch count,
        the history and the shuffling RNG. A Trainer built the same way that loads it
        trains on exactly as this one would."""
        return {
            "model": self.model.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "schedule": None if self.schedule is None else self.schedule.state_dict(),
            "epoch": self.epoch,
            "history": {k: list(v) for k, v in self.history.items()},
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None and state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.schedule is not None and state["schedule"] is not None:
            self.schedule.load_state_dict(state["schedule"])
        self.rng.bit_generator.state = state["rng"]
        self.epoch = int(state["epoch"])
        self.history.clear()
        self.history.update({k: list(v) for k, v in state["history"].items()})

    # ------------------------------------------------------------ checkpoints

    def save_checkpoint(self, path: PathLike) -> None:
        """Write the training state to `path` (atomically). Data parallel: rank 0
        writes; every rank calls it, and every rank raises if the write fails."""
        from .io import save_checkpoint

        self._need_optimizer("save_checkpoint")
        self._strategy.on_root(lambda: save_checkpoint(self, path))

    def load_checkpoint(self, path: PathLike) -> None:
        """Restore the training state from `path`. Data parallel: rank 0 reads the file
        and sends the state to the others (any number of ranks may resume a checkpoint
        written by any number)."""
        from .io import load_checkpoint

        self._need_optimizer("load_checkpoint")
        self._strategy.on_root(lambda: load_checkpoint(self, path))
        self._strategy.after_load()
