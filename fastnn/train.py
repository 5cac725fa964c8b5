"""Trainer, callbacks and training history.

    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.Adam(model, 1e-3))
    history = trainer.fit(X, y, epochs=5, batch_size=128, validation_data=(Xv, yv))
    trainer.evaluate(Xt, yt)   # {"loss": ..., "accuracy": ...}
"""

import copy
import math
import sys
import time

import numpy as np

from . import losses as _losses
from . import ops

__all__ = ["Callback", "Checkpoint", "EarlyStopping", "History", "Trainer"]


class History(dict):
    """Per-epoch lists: loss, accuracy (classification), val_loss, val_accuracy, lr,
    seconds, samples_per_s. A dict of lists, with `plot(path)`."""

    def append(self, logs):
        for key, value in logs.items():
            self.setdefault(key, []).append(value)

    @property
    def epochs(self):
        return len(self.get("loss", []))

    def plot(self, path):
        """Draw loss and accuracy curves (train and validation) into a PNG; needs
        matplotlib (pip install 'fastnn[plot]')."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("History.plot needs matplotlib: pip install 'fastnn[plot]'") from exc
        epochs = range(1, self.epochs + 1)
        panels = [("loss", "loss")] + ([("accuracy", "accuracy")] if "accuracy" in self else [])
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
        for ax, (key, label) in zip(axes[0], panels):
            ax.plot(epochs, self[key], "o-", label="train")
            if f"val_{key}" in self:
                ax.plot(epochs, self[f"val_{key}"], "s-", label="validation")
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


class Callback:
    """Hooks called by Trainer.fit; override the ones you need. A callback stops
    training by setting `trainer.stop_training = True`."""

    def on_train_begin(self, trainer):
        pass

    def on_epoch_begin(self, trainer, epoch):
        pass

    def on_batch_end(self, trainer, step, loss):
        pass

    def on_epoch_end(self, trainer, epoch, logs):
        pass

    def on_train_end(self, trainer):
        pass


def _better(mode, value, best, min_delta):
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _mode_for(monitor, mode):
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
    return mode


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by more than min_delta for `patience` epochs;
    with restore_best_weights, the model ends with the weights of its best epoch."""

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto",
                 restore_best_weights=True):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience: expected an int >= 0, got {patience!r}")
        self.monitor, self.patience = monitor, patience
        self.min_delta = float(min_delta)
        self.mode = _mode_for(monitor, mode)
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, trainer):
        self.best, self.best_epoch, self.wait, self._best_state = None, None, 0, None
        self.stopped_epoch = None

    def on_epoch_end(self, trainer, epoch, logs):
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping: {self.monitor!r} is not logged; "
                           f"available: {sorted(logs)} (val_* needs validation_data)")
        value = logs[self.monitor]
        if _better(self.mode, value, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self._best_state = trainer.model.state_dict()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.stopped_epoch = epoch
                trainer.stop_training = True

    def on_train_end(self, trainer):
        if self.restore_best_weights and self._best_state is not None:
            trainer.model.load_state_dict(self._best_state)


class Checkpoint(Callback):
    """Save a training checkpoint (model, optimizer, schedule, RNG state) to `path`
    every `every` epochs, or, with save_best_only, whenever `monitor` improves. Writes
    are atomic: a crash mid-write leaves the previous file intact. `path` may contain
    "{epoch}"."""

    def __init__(self, path, every=1, save_best_only=False, monitor="val_loss", mode="auto"):
        if isinstance(every, bool) or not isinstance(every, int) or every <= 0:
            raise ValueError(f"every: expected a positive int, got {every!r}")
        self.path, self.every, self.save_best_only = str(path), every, save_best_only
        self.monitor = monitor
        self.mode = _mode_for(monitor, mode)
        self.best = None
        self.saved = []

    def on_epoch_end(self, trainer, epoch, logs):
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None or not _better(self.mode, value, self.best, 0.0):
                return
            self.best = value
        elif epoch % self.every:
            return
        path = self.path.format(epoch=epoch)
        trainer.save_checkpoint(path)
        self.saved.append(path)


def _epoch_line(epoch, logs):
    parts = [f"epoch {epoch:3d}"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if key in logs:
            parts.append(f"{key} {logs[key]:.4f}")
    parts.append(f"{logs['seconds']:.1f} s, {logs['samples_per_s']:,.0f} samples/s")
    return "  ".join(parts)


def _progress_bar(total, desc, enabled):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=True, dynamic_ncols=True)


class Trainer:
    """Mini-batch training of a model: forward, loss, backward, penalty, clip, step.

    model: a fastnn.nn Module (usually a Sequential). loss: a fastnn.losses loss.
    optimizer: a fastnn.optim optimizer over the model's parameters. schedule: a
    fastnn.optim schedule, stepped once per epoch (ReduceOnPlateau with the monitored
    validation loss, or training loss without validation data). regularizer: a
    fastnn.losses penalty (L2, L1, ElasticNet) added to the loss. augment: a callable
    applied to each training batch (e.g. fastnn.augment.Compose); with image_shape,
    flat rows are viewed as images of that shape for it. clip_norm: clip the gradient
    norm to this value every step. progress=True: a tqdm bar per epoch when tqdm is
    installed and stderr is a terminal, else one printed line per epoch; "always": the
    bar even without a terminal; False: silent.

    comm: an mpi4py communicator: training is data parallel over its ranks
    (fastnn.distributed; pip install 'fastnn[mpi]'). Every rank builds the same
    Trainer and calls fit with the same full data; each computes its contiguous slice
    of every global batch, and one all-reduce of the gradient arena per step keeps the
    parameters identical. A model without BatchNorm or Dropout trains to the weights a
    single process gets with the same seed and batch_size, to float rounding.
    BatchNorm1d normalizes with each rank's statistics (nn.SyncBatchNorm with the
    global batch's); the running statistics are averaged over the ranks every epoch.
    Progress prints on rank 0; checkpoints are written by rank 0 and loaded by rank 0
    and sent to the others; evaluate() shares its rows among the ranks, predict() and
    predict_proba() compute all rows on every rank. The DataParallel helper is
    `trainer.parallel` (its check_every, timeout and overlap settings).
    """

    def __init__(self, model, loss, optimizer, schedule=None, regularizer=None, augment=None,
                 callbacks=(), progress=True, comm=None, clip_norm=None, image_shape=None):
        if not hasattr(model, "forward") or not hasattr(model, "backward"):
            raise TypeError("model: expected a fastnn.nn Module")
        if not isinstance(loss, _losses.Loss):
            raise TypeError(f"loss: expected a fastnn.losses loss, got {type(loss).__name__}")
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self._eval_loss = copy.deepcopy(loss)  # keeps evaluate() off the training buffers
        self.schedule, self.regularizer, self.augment = schedule, regularizer, augment
        self.callbacks = list(callbacks)
        self.progress = progress
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.image_shape = None if image_shape is None else tuple(image_shape)
        if self.image_shape is not None and hasattr(augment, "check_image_size"):
            augment.check_image_size(self.image_shape[-2:])  # a crop too large fails here
        self._augment_out = None  # the augmented batch, reused while its shape stays
        self.stop_training = False
        self.epoch = 0  # epochs completed
        self.rng = np.random.default_rng()
        self.history = History()
        self.comm, self.parallel = comm, None
        if comm is not None:
            from .distributed import DataParallel

            self.parallel = DataParallel(comm, model)
            if self.parallel.rank != 0:
                self.progress = False

    # ------------------------------------------------------------ data checks

    @property
    def classifier(self):
        return isinstance(self.loss, (_losses.SoftmaxCrossEntropy, _losses.MulticlassHinge))

    def _dtype(self):
        params = list(self.model.parameters())
        return params[0].dtype if params else np.dtype(np.float32)

    def _check_xy(self, X, y, name="X"):
        X = np.asarray(X)
        if X.dtype.kind not in "fiu":
            raise TypeError(f"{name}: expected a numeric array, got dtype {X.dtype}")
        if X.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D array (samples, features), got {X.shape}")
        if X.shape[0] == 0:
            raise ValueError(f"{name}: no samples")
        if X.dtype.kind == "f" and not np.isfinite(X).all():
            raise ValueError(f"{name}: contains NaN or inf")
        if y is None:
            return X, None
        y = np.asarray(y)
        if len(y) != len(X):
            raise ValueError(f"y: {len(y)} labels for {len(X)} samples")
        if self.classifier:
            if y.ndim != 1 or y.dtype.kind not in "iu":
                raise TypeError(f"y: expected a 1-D array of integer class labels, got "
                                f"{y.dtype} of shape {y.shape}")
        elif y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError("y: contains NaN or inf")
        return X, y

    # ------------------------------------------------------------ training

    def _batch(self, X, idx, buf):
        """Rows idx of X, as the model's dtype, in a reused buffer."""
        out = buf[:len(idx)]
        if X.dtype == out.dtype:
            np.take(X, idx, axis=0, out=out)
        else:
            out[...] = X[idx]
        return out

    def _target_batch(self, y, idx):
        if self.classifier:
            return y[idx]
        return y[idx].astype(self._dtype(), copy=False)

    def train_step(self, xb, yb):
        """One step on one batch: returns the loss (data loss + penalty). Data parallel:
        xb is this rank's part of a batch made of every rank's parts."""
        if self.parallel is not None:
            from .distributed import guard

            with guard(self.comm):
                return self._parallel_step(xb, yb, int(self.parallel.sum([len(xb)])[0]))
        model, opt = self.model, self.optimizer
        opt.zero_grad()
        scores = self._last_scores = model.forward(xb)
        value = self.loss.forward(scores, yb)
        dscores = self.loss.backward()
        if hasattr(model, "layers"):
            model.backward(dscores, input_grad=False)
        else:
            model.backward(dscores)
        if self.regularizer is not None:
            value += self.regularizer.backward(model)
        if not math.isfinite(value):
            return value
        if self.clip_norm is not None:
            from .optim import clip_grad_norm

            clip_grad_norm(model, self.clip_norm)  # raises on a non-finite gradient
        opt.step()
        return value

    def _parallel_step(self, xb, yb, n):
        """train_step's data-parallel form: this rank's slice xb of a global batch of n
        rows. The loss gradient is scaled by rows / n, so that the all-reduce (a sum)
        gives the gradient of the mean loss over the global batch. Returns the global
        loss; the global count of right answers goes to self._last_hits."""
        model, opt, dp = self.model, self.optimizer, self.parallel
        opt.zero_grad()
        rows = len(xb)
        if rows:
            scores = self._last_scores = model.forward(xb)
            value = self.loss.forward(scores, yb)
            dp.start_stats(value * rows, self._hits(scores, yb) if self.classifier else 0, rows)
            dscores = self.loss.backward()
            dscores *= rows / n
            dp.backward(dscores)
        else:  # no rows here this step: take part in the collectives only, in their order
            self._last_scores = None
            dp.take_part_forward()
            dp.start_stats(0.0, 0, 0)
            dp.backward(None)
        loss_sum, hits, _ = dp.finish_step()
        self._last_hits = hits
        value = loss_sum / n
        if self.regularizer is not None:
            value += self.regularizer.backward(model)
        if not math.isfinite(value):
            return value
        if self.clip_norm is not None:
            from .optim import clip_grad_norm

            clip_grad_norm(model, self.clip_norm)  # the same gradient on every rank
        opt.step()
        dp.after_step()
        return value

    def fit(self, X, y, epochs=1, batch_size=32, validation_data=None, shuffle=True, seed=None):
        """Train for `epochs` epochs; returns the History (also `trainer.history`).

        Each epoch visits every sample once in a new random order (shuffle=True; the
        order depends on `seed`), in batches of batch_size, the last one smaller (or one
        larger: a last batch of a single sample joins the one before it). The
        data are gathered batch by batch into a reused buffer, never copied whole.
        A non-finite loss stops training with FloatingPointError naming the epoch and
        step, before the optimizer step, so the weights and checkpoints stay finite.
        Data parallel (comm=): every rank passes the same X and y (and seed); an
        exception on one rank alone aborts the job (see fastnn.distributed).
        """
        from .distributed import guard

        with guard(self.comm):
            return self._fit(X, y, epochs, batch_size, validation_data, shuffle, seed)

    def _fit(self, X, y, epochs, batch_size, validation_data, shuffle, seed):
        X, y = self._check_xy(X, y)
        if validation_data is not None:
            Xv, yv = validation_data
            Xv, yv = self._check_xy(Xv, yv, "validation X")
        for name, v in (("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        dp = self.parallel
        if dp is not None:
            dp.check_data(X, y)
            dp.sync_trainer(self)
        n = len(X)
        # A last batch of one sample joins the one before it: a batch of one cannot be
        # batch-normalized, and dropping it would skip a sample.
        starts = list(range(0, n, batch_size))
        if len(starts) > 1 and n - starts[-1] == 1:
            starts.pop()
        ends = [*starts[1:], n]
        buf = np.empty((max(e - b for b, e in zip(starts, ends)), X.shape[1]), self._dtype())
        self.stop_training = False
        for cb in self.callbacks:
            cb.on_train_begin(self)
        first = self.epoch + 1
        for epoch in range(first, first + epochs):
            for cb in self.callbacks:
                cb.on_epoch_begin(self, epoch)
            self.model.train()
            order = self.rng.permutation(n) if shuffle else np.arange(n)
            lr = self.optimizer.param_groups[0]["lr"]
            start = time.perf_counter()
            total = hits = 0.0
            n_batches = len(starts)
            bar = _progress_bar(n_batches, f"epoch {epoch}", self._show_progress())
            for step, (lo, hi) in enumerate(zip(starts, ends), 1):
                idx = order[lo:hi]
                mine = idx if dp is None else idx[slice(*dp.local_rows(len(idx)))]
                xb = self._batch(X, mine, buf)
                if self.augment is not None and len(mine):
                    xb = self._augmented(xb)
                yb = self._target_batch(y, mine)
                try:
                    if dp is None:
                        value = self.train_step(xb, yb)
                    else:
                        value = self._parallel_step(xb, yb, len(idx))
                    if not math.isfinite(value):
                        raise FloatingPointError(f"non-finite loss ({value})")
                except FloatingPointError as exc:
                    if bar is not None:
                        bar.close()
                    error = FloatingPointError(
                        f"{exc} at epoch {epoch}, step {step}: training stopped before the "
                        f"update; the weights are those of the previous step"
                    )
                    error.every_rank = dp is not None  # the loss and gradient are global
                    raise error from exc
                total += value * len(idx)
                if self.classifier:
                    hits += self._hits(self.model_output(), yb) if dp is None else (
                        self._last_hits)
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
            if dp is not None:
                dp.average_buffers()
            logs = {"loss": total / n}
            if self.classifier:
                logs["accuracy"] = hits / n
            if validation_data is not None:
                logs.update({f"val_{k}": v for k, v in self.evaluate(Xv, yv).items()})
            logs.update(lr=lr, seconds=seconds, samples_per_s=n / seconds)
            if bar is not None:
                bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()
                                 if k in ("loss", "accuracy", "val_loss", "val_accuracy")})
                bar.close()
            elif self.progress:
                print(_epoch_line(epoch, logs), flush=True)
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
        images = xb if self.image_shape is None else xb.reshape((len(xb), *self.image_shape))
        from .augment import Compose

        if isinstance(self.augment, Compose) and images.dtype == np.float32:
            # the same-shaped output buffer every step (a crop may change the size)
            shape = (*images.shape[:-2], *self.augment.output_size(images.shape[-2:]))
            out = self._augment_out
            if out is None or out.shape != shape:
                out = self._augment_out = np.empty(shape, np.float32)
            return self.augment(images, out=out).reshape(len(xb), -1)
        result = np.asarray(self.augment(images), dtype=xb.dtype)
        return result if self.image_shape is None else result.reshape(len(xb), -1)

    def model_output(self):
        """The scores of the last training batch (the loss's input)."""
        return self._last_scores

    def _hits(self, scores, yb):
        return int((scores.argmax(axis=1) == yb).sum())

    def _step_schedule(self, logs):
        from .optim import ReduceOnPlateau

        if self.schedule is None:
            return
        if isinstance(self.schedule, ReduceOnPlateau):
            self.schedule.step(logs.get("val_loss", logs["loss"]))
        else:
            self.schedule.step()

    # ------------------------------------------------------------ inference

    def _outputs(self, X, batch_size):
        X, _ = self._check_xy(X, None)
        self.model.eval()
        out = []
        buf = np.empty((min(batch_size, len(X)), X.shape[1]), self._dtype())
        for lo in range(0, len(X), batch_size):
            idx = np.arange(lo, min(lo + batch_size, len(X)))
            out.append(np.array(self.model.forward(self._batch(X, idx, buf))))
        return np.concatenate(out)

    def evaluate(self, X, y, batch_size=1024):
        """{"loss": mean loss, "accuracy": fraction right (classification)} in eval mode.
        Data parallel (comm=): every rank passes the same X and y, computes a slice of
        the rows, and gets the same result."""
        from .distributed import guard

        X, y = self._check_xy(X, y)
        if self.parallel is not None:
            with guard(self.comm):
                return self._evaluate_parallel(X, y, batch_size)
        return self._evaluate_local(X, y, batch_size)

    def _evaluate_local(self, X, y, batch_size):
        scores = self._outputs(X, batch_size)
        targets = y if self.classifier else y.astype(scores.dtype, copy=False).reshape(
            scores.shape)
        result = {"loss": self._eval_loss.forward(scores, targets)}
        if self.classifier:
            result["accuracy"] = float((scores.argmax(axis=1) == y).mean())
        return result

    def _evaluate_parallel(self, X, y, batch_size):
        dp = self.parallel
        lo, hi = dp.local_rows(len(X))
        loss_sum = hits = 0.0
        if hi > lo:
            part = self._evaluate_local(X[lo:hi], y[lo:hi], batch_size)
            loss_sum = part["loss"] * (hi - lo)
            hits = part.get("accuracy", 0.0) * (hi - lo)
        loss_sum, hits = dp.sum([loss_sum, hits])
        result = {"loss": float(loss_sum / len(X))}
        if self.classifier:
            result["accuracy"] = float(round(hits) / len(X))
        return result

    def predict(self, X, batch_size=1024):
        """Class labels (classification losses) or the model's outputs (others)."""
        scores = self._outputs(X, batch_size)
        return scores.argmax(axis=1) if self.classifier else scores

    def predict_proba(self, X, batch_size=1024):
        """Class probabilities: softmax of the scores (SoftmaxCrossEntropy,
        MulticlassHinge) or sigmoid (BCEWithLogits)."""
        scores = self._outputs(X, batch_size)
        if isinstance(self.loss, _losses.BCEWithLogits):
            return ops.sigmoid(scores)
        if not self.classifier:
            raise TypeError(f"predict_proba: {type(self.loss).__name__} gives no probabilities")
        shifted = scores - scores.max(axis=1, keepdims=True)
        np.exp(shifted, out=shifted)
        shifted /= shifted.sum(axis=1, keepdims=True)
        return shifted

    # ------------------------------------------------------------ state

    def state_dict(self):
        """What training changes, as arrays, numbers and lists: the model's parameters and
        buffers, the optimizer and schedule state, the epoch count, the history and the
        shuffling RNG. A Trainer built the same way that loads it trains on exactly as
        this one would."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": None if self.schedule is None else self.schedule.state_dict(),
            "epoch": self.epoch,
            "history": {k: list(v) for k, v in self.history.items()},
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.schedule is not None and state["schedule"] is not None:
            self.schedule.load_state_dict(state["schedule"])
        self.rng.bit_generator.state = state["rng"]
        self.epoch = int(state["epoch"])
        self.history.clear()
        self.history.update({k: list(v) for k, v in state["history"].items()})

    # ------------------------------------------------------------ checkpoints

    def save_checkpoint(self, path):
        """Write the training state to `path` (atomically). Data parallel: rank 0
        writes; every rank calls it, and every rank raises if the write fails."""
        from .io import save_checkpoint

        if self.parallel is None:
            save_checkpoint(self, path)
        else:
            self.parallel.run_on_root(lambda: save_checkpoint(self, path))

    def load_checkpoint(self, path):
        """Restore the training state from `path`. Data parallel: rank 0 reads the file
        and sends the state to the others (any number of ranks may resume a checkpoint
        written by any number)."""
        from .io import load_checkpoint

        if self.parallel is None:
            load_checkpoint(self, path)
        else:
            self.parallel.run_on_root(lambda: load_checkpoint(self, path))
            self.parallel.sync_trainer(self)
