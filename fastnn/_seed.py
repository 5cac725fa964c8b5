"""fastnn.manual_seed: one seed for every random choice made without an explicit seed.

After `manual_seed(s)`, each object that draws random numbers and was built without a
seed (Linear and Conv2d initial weights, a Dropout's masks, a Compose's augmentation,
a Trainer's shuffling order) takes the next seed of one stream started from s, in the
order the objects are built, as torch.manual_seed does for its global generator: the
same program run twice after manual_seed(s) builds and trains the same model. An
explicit seed (seed=, Trainer.fit(seed=)) always wins and takes nothing from the
stream. Without manual_seed, such objects draw fresh entropy from the OS.
"""

import numpy as np

from ._checks import NON_NEGATIVE, check_int

__all__ = ["manual_seed", "resolve_seed"]

_stream = [None]  # the Generator manual_seed started, or None: fresh entropy per seed


def manual_seed(seed: int) -> None:
    """Seed every object built from now on without a seed of its own (see above);
    seed: an int >= 0. Calling it again restarts the stream."""
    _stream[0] = np.random.default_rng(check_int(seed, "seed", NON_NEGATIVE))


def resolve_seed(seed):
    """seed itself when it is not None; else the next seed of manual_seed's stream, or
    a fresh one from the OS without manual_seed: an int in [0, 2**64)."""
    if seed is not None:
        return seed
    stream = _stream[0]
    if stream is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
    return int(stream.integers(2**64, dtype=np.uint64))
