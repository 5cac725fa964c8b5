"""Model ensembles (the lecture's): train n models independently, average their
predicted probabilities.

    from fastnn.nn import mlp

    def make_trainer(seed):  # at module level: worker processes import it by name
        model = mlp(64, 10, [128], seed=seed)
        return fastnn.Trainer(model, losses.SoftmaxCrossEntropy(),
                              optim.Adam(model, 1e-3), progress=False)

    ensemble = Ensemble(make_trainer, n=5, n_jobs=2).fit(X, y, epochs=20, batch_size=64)
    ensemble.evaluate(X_test, y_test)  # {"accuracy": ..., "member_accuracy": [...]}

Members differ only by their seed, which fixes a member's initialization and dropout
masks (through the factory) and its shuffling order (Trainer.fit's seed). Averaging
models that err differently beats the average member: "enjoy 2% extra performance",
says the lecture; on the 8x8 digits, 5 members of 64-128-10 gain 0.2 to 0.5 points.
"""

import multiprocessing
import pickle
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from operator import index

import numpy as np

from . import io
from ._blas import get_blas, set_blas
from ._threads import get_num_threads, set_num_threads
from .train import Trainer

__all__ = ["Ensemble"]


def _count(name, value):
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    try:
        value = index(value)
    except TypeError:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value}")
    return value


# What one worker process trains with; set once per process by _init_worker, so that
# the data cross to each worker once, not once per member.
_worker = {}


def _init_worker(factory, X, y, fit_kwargs, n_threads, blas):
    set_num_threads(n_threads)
    set_blas(blas)  # the parent's BLAS: another would round differently
    _worker.update(factory=factory, X=X, y=y, fit_kwargs=fit_kwargs)


def _train_member(seed):
    trainer = _worker["factory"](seed)
    trainer.fit(_worker["X"], _worker["y"], seed=seed, **_worker["fit_kwargs"])
    return trainer.state_dict()


def _check_spawnable(factory):
    """A spawned worker gets the factory by pickle, that is by module and name: it
    must be a module-level function (or a picklable callable object) of a module the
    worker can import."""
    try:
        pickle.dumps(factory)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise TypeError(
            f"Ensemble with n_jobs > 1: the factory {factory!r} cannot be sent to worker "
            f"processes ({exc}); define it at the top level of a module (not a lambda, "
            f"not a function inside another) or use n_jobs=1"
        ) from exc
    main = sys.modules.get("__main__")
    if getattr(factory, "__module__", None) == "__main__" and not getattr(main, "__file__",
                                                                          None):
        raise TypeError(
            "Ensemble with n_jobs > 1: the factory is defined in an interactive session "
            "(or `python -c`), which worker processes cannot import; put it in a module "
            "or a script file, or use n_jobs=1"
        )


def _no_factory(seed):
    raise TypeError("this Ensemble was loaded from a file: it predicts and evaluates, but "
                    "has no factory to build and train members with")


class Ensemble:
    """n models trained independently, with different seeds; their predicted class
    probabilities averaged: p(x) = (1/n) sum_i p_i(x), (N, C).

    factory(seed) -> a fastnn.Trainer for a classification loss (SoftmaxCrossEntropy
    or MulticlassHinge), its model and optimizer built inside with that seed. seed: the
    members' seeds, `seeds`, are n independent numbers drawn from it.

    n_jobs > 1 trains members in that many worker processes (at most n), started with
    the "spawn" method (never fork: a forked OpenMP runtime can hang), each running
    fastnn.get_num_threads() // workers threads (at least 1). The factory must then be
    picklable: a function defined at the top level of an importable module (and a
    script that fits with n_jobs > 1 must guard its entry point with
    `if __name__ == "__main__":`, as multiprocessing requires). Every
    worker builds its members with factory(seed), trains them, and sends back their
    state as arrays; the parent loads it into members it built with factory(seed)
    itself. Training is deterministic given the seed and the thread count, so members
    trained in workers with one thread each equal those trained here with one thread.

    comm (an mpi4py communicator; every rank builds the same Ensemble and calls the same
    methods): member i is trained on rank i % size (with n_jobs local processes there),
    its state is then sent to every rank, and predict_proba / evaluate have each rank
    compute its own members' probabilities and gather them all. Each rank runs its share
    of its host's cores unless a thread count was chosen.

    fastnn.save(ensemble, path) writes a fitted ensemble (every member's architecture,
    loss and arrays) to one file; fastnn.load(path) returns an Ensemble whose
    predict_proba equals the saved one's, and which cannot be refitted.

    pickle is used only here, by multiprocessing, to pass the factory (by name), the
    data and the trained arrays between processes of one run. fastnn's model files
    (fastnn.save, checkpoints) never use pickle.
    """

    def __init__(self, factory, n, n_jobs=1, seed=0, comm=None):
        if not callable(factory):
            raise TypeError(f"factory: expected a callable seed -> Trainer, got "
                            f"{type(factory).__name__}")
        self.factory = factory
        self.n = _count("n", n)
        self.n_jobs = _count("n_jobs", n_jobs)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
        self.seeds = [int(s) for s in np.random.SeedSequence(seed).generate_state(self.n)]
        self._members = None
        self.comm = comm if comm is not None and comm.Get_size() > 1 else None
        rank, size = (0, 1) if self.comm is None else (comm.Get_rank(), comm.Get_size())
        self._mine = list(range(rank, self.n, size))  # the members this rank trains
        if self.comm is not None:
            from .distributed import use_share_of_cores

            use_share_of_cores(self.comm)

    @classmethod
    def _loaded(cls, members, seeds):
        """An Ensemble of trained members read from a file (fastnn.load), given as
        (model, loss) pairs: it predicts and evaluates; fit raises TypeError, as there
        is no factory to build members."""
        ensemble = cls(_no_factory, len(members))
        ensemble.seeds = list(seeds)
        ensemble._members = [Trainer(model, loss, progress=False) for model, loss in members]
        return ensemble

    def _build(self, seed):
        trainer = self.factory(seed)
        if not isinstance(trainer, Trainer):
            raise TypeError(f"factory({seed}) returned a {type(trainer).__name__}, not a "
                            f"fastnn.Trainer")
        if not trainer.loss.labels:
            raise TypeError(f"factory({seed}): an ensemble averages class probabilities; "
                            f"the Trainer's loss {type(trainer.loss).__name__} is not a "
                            f"classification loss over one class label per row")
        return trainer

    def fit(self, X, y, **fit_kwargs):
        """Train every member: trainer.fit(X, y, seed=<its seed>, **fit_kwargs)
        (epochs, batch_size, validation_data...). Returns self."""
        if "seed" in fit_kwargs:
            raise ValueError("fit: seed is set per member (see Ensemble.seeds); do not pass it")
        from .distributed import barrier, guard

        with guard(self.comm):
            members = [self._build(seed) for seed in self.seeds]
            mine = [members[i] for i in self._mine]
            self._train(mine, [self.seeds[i] for i in self._mine], X, y, fit_kwargs)
            if self.comm is not None:
                barrier(self.comm)
                rank, size = self.comm.Get_rank(), self.comm.Get_size()
                for i, trainer in enumerate(members):
                    state = self.comm.bcast(trainer.state_dict() if i % size == rank else None,
                                            root=i % size)
                    if i % size != rank:
                        trainer.load_state_dict(state)
        self._members = members
        return self

    def _train(self, members, seeds, X, y, fit_kwargs):
        workers = min(self.n_jobs, len(members))
        if workers > 1:
            _check_spawnable(self.factory)
        if workers <= 1:
            for trainer, seed in zip(members, seeds):
                trainer.fit(X, y, seed=seed, **fit_kwargs)
        else:
            n_threads = max(1, get_num_threads() // workers)
            context = multiprocessing.get_context("spawn")
            try:
                with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                         initargs=(self.factory, np.asarray(X), np.asarray(y),
                                                   fit_kwargs, n_threads, get_blas())) as pool:
                    states = list(pool.map(_train_member, seeds))
            except BrokenProcessPool as exc:
                raise RuntimeError(
                    "Ensemble: a worker process failed to start or died (can it import the "
                    f"factory's module, {getattr(self.factory, '__module__', '?')!r}?)"
                ) from exc
            for trainer, state in zip(members, states):
                trainer.load_state_dict(state)

    @property
    def members(self):
        """The members' Trainers, in the order of `seeds`."""
        if self._members is None:
            raise RuntimeError("Ensemble: call fit first")
        return list(self._members)

    def _member_probabilities(self, X):
        members = self.members
        if self.comm is None:
            return [trainer.predict_proba(X) for trainer in members]
        from .distributed import barrier, guard

        with guard(self.comm):
            barrier(self.comm)
            mine = {i: members[i].predict_proba(X) for i in self._mine}
            gathered = {}
            for part in self.comm.allgather(mine):
                gathered.update(part)
        return [gathered[i] for i in range(self.n)]

    def predict_proba(self, X):
        """(N, C) the mean of the members' predicted probabilities."""
        return np.mean(self._member_probabilities(X), axis=0)

    def predict(self, X):
        """(N,) the class of highest mean probability."""
        return self.predict_proba(X).argmax(axis=1)

    def evaluate(self, X, y):
        """{"accuracy": the ensemble's, "member_accuracy": [each member's]}."""
        probabilities = self._member_probabilities(X)
        y = np.asarray(y)
        if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(probabilities[0]):
            raise ValueError(f"y: expected {len(probabilities[0])} integer class labels, got "
                             f"{y.dtype} of shape {y.shape}")
        mean = np.mean(probabilities, axis=0)
        return {"accuracy": float((mean.argmax(axis=1) == y).mean()),
                "member_accuracy": [float((p.argmax(axis=1) == y).mean())
                                    for p in probabilities]}


io.ENSEMBLE_BUILDER[:] = [Ensemble._loaded]
