"""scikit-learn compatible estimators: MLPClassifier and MLPRegressor.

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from fastnn.sklearn import MLPClassifier
    clf = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(128,)))
    clf.fit(X, y).score(X_test, y_test)

The network is the command line's (`fastnn.nn.mlp`): per hidden width,
Linear [-> BatchNorm1d] -> activation [-> Dropout], then a Linear output layer; the
optimizer is `fastnn.optim.create`'s, and a fastnn.Trainer runs the epochs. The classifier
minimizes the softmax cross-entropy (labels of any type, encoded with LabelEncoder),
the regressor the mean squared error over all outputs (y of shape (n,) or (n, k)).
Both add alpha * sum(W**2) over the weights (fastnn.losses.L2; not scikit-learn's
alpha / (2 n) * sum(W**2)). Parameters are float32 whatever the input dtype.

Names follow scikit-learn's MLPClassifier / MLPRegressor where they mean the same:
learning_rate_init, max_iter, batch_size, alpha, early_stopping, validation_fraction,
n_iter_no_change, tol, warm_start, random_state, verbose; fitted coefs_, intercepts_,
n_iter_, loss_curve_, best_loss_, validation_scores_, best_validation_score_; and
predict_log_proba. fastnn's own: optimizer (scikit-learn's solver, with more choices),
batch_norm, dropout, n_threads. learning_rate is a deprecated alias of
learning_rate_init (FutureWarning).

Needs scikit-learn >= 1.6 (`validate_data` and `__sklearn_tags__`):
pip install 'fastnn[sklearn]'.

sklearn.utils.estimator_checks.check_estimator (scikit-learn 1.9, run by
tests/test_sklearn.py through parametrize_with_checks): of the checks it yields, all
pass (53 for the classifier, 52 for the regressor) except
- check_methods_subset_invariance, regressor: expected to fail, not strictly. One
  target means an output layer that is a one-column GEMM, which OpenBLAS sums in an
  order that depends on the number of rows: predicting a subset can differ from
  predicting the whole batch in the last float32 bit (relative 3e-7), above the
  check's rtol of 1e-7. Whether it fails depends on the weights.
- skipped by scikit-learn itself: check_array_api_input (SCIPY_ARRAY_API unset; the
  estimators do not support the array API) and check_classifier_data_not_an_array /
  check_regressor_data_not_an_array when pandas is not installed.
Not yielded, as the estimators declare: sample weights (fit takes none), multi-label
classification, multi-output classification. Sparse input is rejected with
scikit-learn's TypeError, which the sparse checks accept.

Pickling an estimator (joblib, GridSearchCV with n_jobs) stores its fitted model as
plain arrays (the parameters, the optimizer state and the shuffling RNG state) and
rebuilds the model on load, so that training can continue; fastnn's own model files
(fastnn.save) never use pickle.
"""

import contextlib
import math
import numbers
import warnings

import numpy as np
from scipy.special import log_softmax

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:
    raise ImportError(
        "fastnn.sklearn needs scikit-learn >= 1.6: pip install 'fastnn[sklearn]'"
    ) from exc

from . import losses
from ._checks import (
    NON_NEGATIVE,
    POSITIVE,
    Interval,
    check_choice,
    check_float,
    check_int,
)
from ._threads import threads
from .nn import ACTIVATIONS, Linear, mlp
from .optim import NAMES as OPTIMIZERS
from .optim import create as create_optimizer
from .train import EarlyStopping, Trainer

__all__ = ["MLPClassifier", "MLPRegressor"]

# Inputs of any other dtype (ints, bools) become float32, the parameters' dtype;
# float64 stays as it is: the Trainer converts it batch by batch, never copied whole.
_X_DTYPES = [np.float32, np.float64]


# parameters that are fractions: dropout may be 0, validation_fraction may not
_DROPOUT = Interval(0, 1, closed="left")
_VALIDATION_FRACTION = Interval(0, 1, closed="neither")
_DEPRECATED = "deprecated"  # the default of a parameter kept only as a deprecated alias


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, training, pickling.

    Subclasses give the loss, the number of outputs and the target encoding.
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", batch_norm=False,
                 dropout=0.0, optimizer="adam", learning_rate_init=1e-3, alpha=0.0,
                 max_iter=200, batch_size=64, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, tol=1e-4, random_state=None, n_threads=None,
                 verbose=False, warm_start=False, learning_rate="deprecated"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.batch_norm = batch_norm
        self.dropout = dropout
        self.optimizer = optimizer
        self.learning_rate_init = learning_rate_init
        self.alpha = alpha
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose
        self.warm_start = warm_start
        self.learning_rate = learning_rate

    # ------------------------------------------------------------ parameters

    def _checked_params(self):
        """The parameters, validated at fit time (scikit-learn's rule: __init__ and
        set_params only store). Returns the hidden widths as a list."""
        sizes = self.hidden_layer_sizes
        try:
            hidden = [sizes] if isinstance(sizes, numbers.Integral) else list(sizes)
        except TypeError:
            raise ValueError(f"hidden_layer_sizes: expected an int or a sequence of ints, "
                             f"got {sizes!r}") from None
        hidden = [check_int(width, "hidden_layer_sizes", POSITIVE) for width in hidden]
        check_choice(self.activation, "activation", sorted(ACTIVATIONS))
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        check_float(self.dropout, "dropout", _DROPOUT)
        if self._alias_given():
            warnings.warn("learning_rate is deprecated and will be removed: use "
                          "learning_rate_init (in scikit-learn, learning_rate names a "
                          "schedule)", FutureWarning, stacklevel=3)
        check_float(self._learning_rate(), "learning_rate_init", POSITIVE)
        check_float(self.alpha, "alpha", NON_NEGATIVE)
        check_int(self.max_iter, "max_iter", POSITIVE)
        if self.batch_size != "auto":
            check_int(self.batch_size, "batch_size ('auto' or)", POSITIVE)
        check_float(self.validation_fraction, "validation_fraction", _VALIDATION_FRACTION)
        check_int(self.n_iter_no_change, "n_iter_no_change", POSITIVE)
        check_float(self.tol, "tol", NON_NEGATIVE)
        if self.n_threads is not None:
            check_int(self.n_threads, "n_threads (None or)", POSITIVE)
        return hidden

    def _alias_given(self):
        """Whether the deprecated learning_rate was set."""
        return not (isinstance(self.learning_rate, str) and self.learning_rate == _DEPRECATED)

    def _learning_rate(self):
        """learning_rate_init, or the deprecated learning_rate where it is given."""
        return self.learning_rate if self._alias_given() else self.learning_rate_init

    def _structure(self, hidden):
        """What the model and optimizer are built from: a warm start must keep it."""
        return {"hidden_layer_sizes": list(hidden), "activation": self.activation,
                "batch_norm": bool(self.batch_norm), "dropout": float(self.dropout),
                "optimizer": self.optimizer}

    def _threads(self):
        return contextlib.nullcontext() if self.n_threads is None else threads(self.n_threads)

    def _batch_size(self, n):
        """"auto" = min(200, n); a size above n is n. With batch_norm, a size that would
        leave a last batch of one sample grows until it does not: BatchNorm1d cannot
        normalize a single sample in train mode."""
        size = min(200 if self.batch_size == "auto" else self.batch_size, n)
        if self.batch_norm:
            if n < 2:
                raise ValueError("batch_norm=True needs at least 2 samples per fit call, "
                                 f"got n_samples={n}")
            while n % size == 1:
                size += 1
        return size

    # ------------------------------------------------------------ the model

    def _new_trainer(self, hidden, n_in, n_out, seed, callbacks=()):
        """A Trainer over a fresh model; `seed` fixes initialization, dropout masks and
        the shuffling order."""
        model = mlp(n_in, n_out, hidden, self.activation, self.batch_norm,
                            self.dropout, seed)
        trainer = Trainer(model, self._loss(), create_optimizer(self.optimizer, model,
                                                              self._learning_rate(), 0.0),
                          regularizer=losses.L2(self.alpha) if self.alpha else None,
                          callbacks=callbacks, progress=bool(self.verbose))
        trainer.rng = np.random.default_rng(seed)
        return trainer

    def _seed(self):
        # Leaves room for mlp's per-layer offsets (seed + 1000 + i).
        return int(check_random_state(self.random_state).randint(2**31 - 2**16))

    @property
    def model_(self):
        """The trained fastnn model (a fastnn.nn.Sequential; fastnn.save writes it)."""
        return self._trainer.model

    # ------------------------------------------------------------ training

    def _validate(self, X, y, reset):
        X, y = validate_data(self, X, y, reset=reset, dtype=_X_DTYPES,
                             multi_output=self._multi_output, y_numeric=not self._classifier)
        return X, y

    def fit(self, X, y):
        """Train a new model for up to max_iter epochs; returns self.

        Stops earlier when the monitored loss has not improved by more than tol for
        n_iter_no_change epochs: the loss on a held-out validation_fraction of the data
        with early_stopping=True (the model then keeps its best epoch's weights), the
        training loss otherwise. Reaching max_iter first warns (ConvergenceWarning), as
        scikit-learn's MLPs do.

        warm_start=True and a fitted estimator: training continues from the fitted
        model and its optimizer state (with the current learning_rate_init, alpha and
        stopping parameters) for up to max_iter more epochs; loss_curve_ and n_iter_
        count on. The classes (or number of outputs), the number of features and the
        parameters that build the model and optimizer must be those of the first fit.
        """
        hidden = self._checked_params()
        warm = self.warm_start and hasattr(self, "_trainer")
        X, y = self._validate(X, y, reset=not warm)
        if warm:
            self._check_warm_start(hidden, y)
        else:
            self._init_targets(y)
        targets = self._encode(y)
        seed = self._seed()
        validation = None
        if self.early_stopping:
            X, Xv, targets, yv = train_test_split(X, targets, test_size=self.validation_fraction,
                                                  random_state=seed,
                                                  stratify=self._stratify(targets))
            validation = (Xv, yv)
        stopper = EarlyStopping(monitor="val_loss" if self.early_stopping else "loss",
                                patience=self.n_iter_no_change, min_delta=self.tol,
                                restore_best_weights=self.early_stopping)
        with self._threads():
            if warm:
                trainer = self._trainer
                trainer.callbacks = [stopper]
                for group in trainer.optimizer.param_groups:
                    group["lr"] = float(self._learning_rate())
                trainer.regularizer = losses.L2(self.alpha) if self.alpha else None
                trainer.progress = bool(self.verbose)
            else:
                trainer = self._new_trainer(hidden, X.shape[1], self._n_out(), seed, [stopper])
            before = trainer.epoch
            try:
                trainer.fit(X, targets, epochs=self.max_iter,
                            batch_size=self._batch_size(len(X)), validation_data=validation)
            finally:
                trainer.callbacks = []  # partial_fit continues without them
        self._set_results(trainer, hidden, validation=validation, first_epoch=before, warm=warm)
        if stopper.stopped_epoch is None:
            warnings.warn(f"{type(self).__name__}: max_iter={self.max_iter} epochs reached and "
                          f"the loss has not stopped improving", ConvergenceWarning,
                          stacklevel=2)
        return self

    def _check_warm_start(self, hidden, y):
        changed = [k for k, v in self._structure(hidden).items()
                   if self._fit_structure.get(k) != v]
        if changed:
            raise ValueError(f"warm_start: {', '.join(changed)} changed since the model was "
                             f"built; set warm_start=False to train a new model")
        if self._classifier and not np.array_equal(np.unique(y), self.classes_):
            raise ValueError(f"warm_start can only be used where y has the same classes as "
                             f"in the previous call to fit: previously {self.classes_}, y has "
                             f"{np.unique(y)}")

    def _stratify(self, targets):
        """The classes, for a stratified validation split when one is possible: every
        class twice or more, and both parts at least as large as the number of classes
        (train_test_split's conditions); else None, a plain random split."""
        if not self._classifier:
            return None
        n, n_classes = len(targets), len(self.classes_)
        n_val = math.ceil(self.validation_fraction * n)
        possible = np.bincount(targets).min() >= 2 and min(n_val, n - n_val) >= n_classes
        return targets if possible else None

    def _partial_fit(self, X, y, classes=None):
        """One epoch over (X, y); the first call builds the model, for the classes
        (classifier) or the number of outputs (regressor) of its data."""
        first = not hasattr(self, "_trainer")
        hidden = self._checked_params() if first else None
        X, y = self._validate(X, y, reset=first)
        if first:
            self._init_targets(y if classes is None else classes)
        targets = self._encode(y)
        with self._threads():
            trainer = (self._new_trainer(hidden, X.shape[1], self._n_out(), self._seed())
                       if first else self._trainer)
            trainer.fit(X, targets, epochs=1, batch_size=self._batch_size(len(X)))
        self._set_results(trainer, hidden)
        return self

    def _set_results(self, trainer, hidden=None, validation=None, first_epoch=0, warm=False):
        """Keep a trainer that trained without error, its curves, and for a new one (the
        hidden widths given) the parameters that built it (a pickle stores them to
        rebuild it).

        validation: the (X, targets) held out by this fit call (early_stopping), whose
        epochs from first_epoch on give validation_scores_; warm: they extend the
        scores of the fits before."""
        self._trainer = trainer
        if hidden is not None:
            self._fit_params = self.get_params()
            self._fit_structure = self._structure(hidden)
        history = trainer.history
        self.loss_curve_ = list(history["loss"])
        self.validation_loss_curve_ = list(history["val_loss"]) if "val_loss" in history else None
        self.n_iter_ = trainer.epoch
        if validation is None:
            self.validation_scores_ = self.best_validation_score_ = None
            self.best_loss_ = min(self.loss_curve_)
        else:
            start = len(history["val_loss"]) - (trainer.epoch - first_epoch)
            scores = self._validation_scores(history, start, validation[1])
            earlier = self.validation_scores_ if warm and self.validation_scores_ else []
            self.validation_scores_ = earlier + scores
            self.best_validation_score_ = max(self.validation_scores_)
            self.best_loss_ = None

    def _run(self, method, X, *args):
        """trainer.<method>(X, *args) on validated X, with the estimator's thread count."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=_X_DTYPES)
        with self._threads():
            return getattr(self._trainer, method)(X, *args)

    def _linear_layers(self):
        check_is_fitted(self)
        return [layer for layer in self._trainer.model if isinstance(layer, Linear)]

    @property
    def coefs_(self):
        """List of the weight matrices, coefs_[i] of shape (n_in, n_out) for layer i
        (as scikit-learn's): views of the model's float32 parameters, so writing into
        them changes the model. With batch_norm, the BatchNorm1d layers between them
        are not included."""
        return [np.asarray(layer.weight) for layer in self._linear_layers()]

    @property
    def intercepts_(self):
        """List of the bias vectors, intercepts_[i] of shape (n_out,) for layer i: views,
        as coefs_."""
        return [np.asarray(layer.bias) for layer in self._linear_layers()]

    # ------------------------------------------------------------ pickling

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: object's default is __dict__ itself
        trainer = state.pop("_trainer", None)
        if trainer is not None:
            # Parameters are views into the model's arena, which a pickle would not keep:
            # store plain arrays, rebuilt into the same model and optimizer on load.
            state["_trainer_state"] = trainer.state_dict()
        return state

    def __setstate__(self, state):
        saved = state.pop("_trainer_state", None)
        super().__setstate__(state)
        if saved is not None:
            builder = type(self)(**self._fit_params)
            with warnings.catch_warnings():  # a deprecated name was warned about at fit
                warnings.simplefilter("ignore", FutureWarning)
                hidden = builder._checked_params()
            self._trainer = builder._new_trainer(hidden, self.n_features_in_, self._n_out(),
                                                 seed=0)
            self._trainer.load_state_dict(saved)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier trained by fastnn (softmax cross-entropy).

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default (100,)
        Widths of the hidden layers; () gives a linear (softmax regression) model.
    activation : {"relu", "leaky_relu", "elu", "gelu", "silu", "sigmoid", "tanh"}, default "relu"
    batch_norm : bool, default False
        BatchNorm1d after each hidden Linear layer.
    dropout : float in [0, 1), default 0.0
        Drop probability of a Dropout layer after each hidden activation.
    optimizer : {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"}
    learning_rate_init : float > 0, default 1e-3
        The optimizer's learning rate (constant: fastnn's estimators have no schedule).
    alpha : float >= 0, default 0.0
        L2 penalty alpha * sum(W**2) over the weights (not biases, not BatchNorm).
    max_iter : int, default 200
        Epochs (fit) at most.
    batch_size : int or "auto", default 64
        "auto" is min(200, n_samples).
    early_stopping : bool, default False
        Hold out validation_fraction of the training data (stratified when every class
        can be) and stop when its loss has not improved by tol for n_iter_no_change
        epochs, keeping the best epoch's weights. Without it, the training loss decides
        when to stop.
    validation_fraction : float in (0, 1), default 0.1
    n_iter_no_change : int, default 10
    tol : float >= 0, default 1e-4
    random_state : None, int or RandomState
        Fixes the initialization, the dropout masks, the shuffling and the validation
        split: training is then reproducible, for any thread count.
    n_threads : int or None
        Threads for fit and predict (None: fastnn's setting, fastnn.get_num_threads()).
    verbose : bool
        A line (or a progress bar) per epoch.
    warm_start : bool, default False
        fit continues the fitted model and its optimizer state instead of building a
        new model (see fit).
    learning_rate : float, deprecated
        The former name of learning_rate_init: still accepted, with a FutureWarning
        (scikit-learn's learning_rate is a schedule name, which fastnn does not take).

    Attributes
    ----------
    classes_ : (n_classes,) the labels seen by fit (or given to partial_fit).
    n_features_in_ : int
    coefs_ : list of (n_in, n_out) float32 arrays, the weights of each Linear layer
        (views into the model; the BatchNorm1d layers of batch_norm=True are not
        included). The output layer has n_classes columns, also for two classes
        (scikit-learn's binary MLPClassifier has one logistic output).
    intercepts_ : list of (n_out,) float32 arrays, the biases of each Linear layer.
    loss_curve_ : list of the training loss (data loss + penalty) per epoch.
    best_loss_ : the smallest of loss_curve_; None with early_stopping.
    validation_loss_curve_ : list of the validation loss per epoch (early_stopping).
    validation_scores_ : list of the accuracy on the held-out data per epoch
        (early_stopping; else None).
    best_validation_score_ : the largest of validation_scores_ (or None).
    n_iter_ : int, epochs trained (counting on through warm starts and partial_fit).
    model_ : the fastnn model.
    """

    _classifier = True
    _multi_output = False

    def _loss(self):
        return losses.SoftmaxCrossEntropy()

    def _n_out(self):
        return len(self.classes_)

    def _init_targets(self, labels):
        self._label_encoder = LabelEncoder().fit(labels)
        self.classes_ = self._label_encoder.classes_

    def _encode(self, y):
        """Labels -> their positions in classes_ (intp); unknown labels raise ValueError."""
        check_classification_targets(y)
        return self._label_encoder.transform(y).astype(np.intp, copy=False)

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y); returns self. The first call (unless fit came first)
        builds the model and needs `classes`, every label that any call will give; later
        calls may repeat them. Continues the optimizer of the previous fit or
        partial_fit; max_iter and the stopping parameters do not apply."""
        if not hasattr(self, "_trainer"):
            if classes is None:
                raise ValueError("classes: must be given on the first call to partial_fit")
            check_classification_targets(classes)
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes: {np.unique(classes)} differs from the classes of the "
                             f"first call, {self.classes_}")
        return self._partial_fit(X, y, classes)

    def predict_proba(self, X):
        """(n_samples, n_classes) softmax of the scores; columns in the order of classes_."""
        return self._run("predict_proba", X)

    def predict_log_proba(self, X):
        """(n_samples, n_classes) log of predict_proba, computed from the scores s as
        s - logsumexp(s) (finite where a probability rounds to 0)."""
        # the model's outputs (Trainer's batched, eval-mode forward) are the logits
        return log_softmax(self._run("_outputs", X, 1024), axis=1)

    def _validation_scores(self, history, start, targets):
        """The accuracy on the held-out data, per epoch from `start`."""
        return [float(v) for v in history["val_accuracy"][start:]]

    def predict(self, X):
        """(n_samples,) the most probable class of each sample."""
        indices = self._run("predict", X)  # first: it raises NotFittedError before fit
        return self.classes_[indices]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor trained by fastnn (mean squared error).

    Parameters: those of MLPClassifier (there, `early_stopping`'s split is not
    stratified). y may be (n_samples,) or (n_samples, n_outputs); predict returns
    (n_samples,) for one output and (n_samples, n_outputs) otherwise.

    Attributes: n_features_in_, n_outputs_, coefs_, intercepts_, loss_curve_,
    best_loss_, validation_loss_curve_, validation_scores_ and best_validation_score_
    (early_stopping; the scores are R^2 on the held-out data: scikit-learn's r2_score
    for one output, its variance-weighted average for several), n_iter_, model_.
    """

    _classifier = False
    _multi_output = True

    def _loss(self):
        return losses.MSE()

    def _n_out(self):
        return self.n_outputs_

    def _init_targets(self, y):
        self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]

    def _encode(self, y):
        """y as a float32 (n_samples, n_outputs) array."""
        y = np.asarray(y, np.float32).reshape(len(y), -1)
        if y.shape[1] != self.n_outputs_:
            raise ValueError(f"y: {y.shape[1]} outputs, the model was fitted with "
                             f"{self.n_outputs_}")
        return y

    def _validation_scores(self, history, start, targets):
        """R^2 on the held-out targets (n, k), per epoch from `start`, from the mean
        squared error: 1 - mse / mean_j var(targets[:, j]), scikit-learn's r2_score for
        one output and its variance-weighted average for several."""
        total = float(np.mean(np.var(targets, axis=0, dtype=np.float64)))
        if total == 0:  # constant targets: r2_score's convention
            return [1.0 if v == 0 else 0.0 for v in history["val_loss"][start:]]
        return [1.0 - float(v) / total for v in history["val_loss"][start:]]

    def partial_fit(self, X, y):
        """One epoch over (X, y); returns self. The first call (unless fit came first)
        builds the model; later ones continue its optimizer. max_iter and the stopping
        parameters do not apply."""
        return self._partial_fit(X, y)

    def predict(self, X):
        """(n_samples,) or (n_samples, n_outputs) predicted targets, float64 (the model
        computes in float32; scikit-learn expects regressors to predict float64)."""
        out = self._run("predict", X).astype(np.float64)
        return out.ravel() if self.n_outputs_ == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
