"""Training history and callbacks: History, Callback, EarlyStopping, Checkpoint, and
the per-epoch progress line and bar that Trainer.fit shows.

    stopper = fastnn.EarlyStopping(monitor="val_loss", patience=3)
    trainer = fastnn.Trainer(model, loss, opt, callbacks=[stopper, fastnn.Checkpoint(path)])
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal, Union

if TYPE_CHECKING:
    from .train import Trainer

__all__ = ["Callback", "Checkpoint", "EarlyStopping", "History"]

Mode = Literal["auto", "min", "max"]
PathLike = Union[str, os.PathLike]


class History(dict):
    """Per-epoch lists: loss, accuracy (classification), val_loss, val_accuracy, lr,
    seconds, samples_per_s. A dict of lists, with `plot(path)`."""

    def append(self, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            self.setdefault(key, []).append(value)

    @property
    def epochs(self) -> int:
        return len(self.get("loss", []))

    def plot(self, path: PathLike) -> PathLike:
        """Draw loss and accuracy curves (train and validation) into a PNG; needs
        matplotlib (pip install 'fastnn[plot]'). The figure has a canvas of its own:
        pyplot and the session's backend (a notebook's) are left alone."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError("History.plot needs matplotlib: pip install 'fastnn[plot]'") from exc
        epochs = range(1, self.epochs + 1)
        panels = [("loss", "loss")] + ([("accuracy", "accuracy")] if "accuracy" in self else [])
        fig = Figure(figsize=(5 * len(panels), 3.8))
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(panels), squeeze=False)
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
        return path


class Callback:
    """Hooks called by Trainer.fit; override the ones you need. A callback stops
    training by setting `trainer.stop_training = True`."""

    def on_train_begin(self, trainer: Trainer) -> None:
        pass

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        pass

    def on_batch_end(self, trainer: Trainer, step: int, loss: float) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        pass


HOOKS = ("on_train_begin", "on_epoch_begin", "on_batch_end", "on_epoch_end", "on_train_end")


def check_callbacks(callbacks: Any) -> list[Callback]:
    """A list of callbacks, each a Callback (or an object with every hook), else a
    TypeError that says what was given."""
    if isinstance(callbacks, Callback) or callable(callbacks):
        raise TypeError(f"callbacks: expected a list of fastnn.Callback objects, got one "
                        f"{type(callbacks).__name__}; pass [it]")
    try:
        callbacks = list(callbacks)
    except TypeError:
        raise TypeError(f"callbacks: expected a list of fastnn.Callback objects, got "
                        f"{type(callbacks).__name__}") from None
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback) and not all(callable(getattr(cb, h, None))
                                                    for h in HOOKS):
            raise TypeError(
                f"callbacks[{i}]: expected a fastnn.Callback, got {type(cb).__name__} "
                f"{cb!r:.60}; subclass fastnn.Callback and override the hooks you need "
                f"(on_batch_end, on_epoch_end, ...)")
    return callbacks


def _better(mode: str, value: float, best: float | None, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _mode_for(monitor: str, mode: Mode) -> str:
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
    return mode


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by more than min_delta for `patience` epochs;
    with restore_best_weights, the model ends with the weights of its best epoch."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: Mode = "auto", restore_best_weights: bool = True):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience: expected an int >= 0, got {patience!r}")
        self.monitor, self.patience = monitor, patience
        self.min_delta = float(min_delta)
        self.mode = _mode_for(monitor, mode)
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, trainer: Trainer) -> None:
        self.best, self.best_epoch, self.wait, self._best_state = None, None, 0, None
        self.stopped_epoch = None

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
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

    def on_train_end(self, trainer: Trainer) -> None:
        if self.restore_best_weights and self._best_state is not None:
            trainer.model.load_state_dict(self._best_state)


class Checkpoint(Callback):
    """Save a training checkpoint (model, optimizer, schedule, RNG state) to `path`
    every `every` epochs, or, with save_best_only, whenever `monitor` improves. Writes
    are atomic: a crash or a kill mid-write leaves the previous file intact (see
    fastnn.save). `path` may contain "{epoch}".

    save_best_only: `monitor` must be logged (KeyError otherwise, as EarlyStopping).
    A run resumed from a checkpoint starts from the best value in the restored
    history when the file at `path` exists, so that a worse epoch never replaces it.
    """

    def __init__(self, path: PathLike, every: int = 1, save_best_only: bool = False,
                 monitor: str = "val_loss", mode: Mode = "auto"):
        if isinstance(every, bool) or not isinstance(every, int) or every <= 0:
            raise ValueError(f"every: expected a positive int, got {every!r}")
        self.path, self.every, self.save_best_only = str(path), every, save_best_only
        try:  # a bad template fails here, not after the first epoch's training
            self.path.format(epoch=0)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"path: {self.path!r} may hold only the field {{epoch}} "
                             f"(double other braces): {exc!r}") from None
        self.monitor = monitor
        self.mode = _mode_for(monitor, mode)
        self.best = None
        self.saved: list[str] = []

    def on_train_begin(self, trainer: Trainer) -> None:
        fixed = self.path.format(epoch=0) == self.path
        if self.save_best_only and self.best is None and fixed and os.path.exists(self.path):
            for value in trainer.history.get(self.monitor, []):
                if _better(self.mode, value, self.best, 0.0):
                    self.best = value

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if self.save_best_only:
            if self.monitor not in logs:
                raise KeyError(f"Checkpoint: {self.monitor!r} is not logged; "
                               f"available: {sorted(logs)} (val_* needs validation_data)")
            value = logs[self.monitor]
            if not _better(self.mode, value, self.best, 0.0):
                return
            self.best = value
        elif epoch % self.every:
            return
        path = self.path.format(epoch=epoch)
        trainer.save_checkpoint(path)
        self.saved.append(path)


# ---------------------------------------------------------------- progress display

SHOWN = ("loss", "accuracy", "val_loss", "val_accuracy")


def epoch_line(epoch: int, logs: dict[str, float]) -> str:
    """The line printed after an epoch when no progress bar is shown."""
    parts = [f"epoch {epoch:3d}"]
    parts += [f"{key} {logs[key]:.4f}" for key in SHOWN if key in logs]
    parts.append(f"{logs['seconds']:.1f} s, {logs['samples_per_s']:,.0f} samples/s")
    return "  ".join(parts)


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar of `total` batches, or None (disabled, or tqdm not installed)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=True, dynamic_ncols=True)
