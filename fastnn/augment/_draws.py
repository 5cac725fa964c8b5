"""Per-image random draws: the key of each transform in a call, and its uniforms.

Every parameter is a pure function of (Compose seed, call counter, position of the
transform in the Compose, image index, parameter slot): the call's key comes from
fastnn._keys.random_key(seed, step), each transform's from it and its position, and
the kernel hashes (key, slot, image) into a uniform.
"""

import numpy as np

from .._kernels import augment as _k
from .._keys import MASK64, splitmix64


def transform_key(key, index):
    """The key of the transform at position `index` of a Compose, in the call of `key`."""
    return splitmix64((key + index) & MASK64)


def noise_key(key, index):
    """The key of the elastic noise of the transform at position `index`."""
    return splitmix64(transform_key(key, index) ^ 0x5EED)


class Draw:
    """Per-image uniforms for one transform in one call: slot s, image i is
    hash(key, (s << 32) + i); each call of a method takes the next slot. The kernel
    fills _BLOCK slots at a time."""

    _BLOCK = 8

    def __init__(self, key, n):
        self.key, self.n, self.slot = key, n, 0
        self._block, self._first = None, 0

    def unit(self):
        s = self.slot
        self.slot += 1
        if self._block is None or s >= self._first + self._BLOCK:
            self._block = np.empty((self._BLOCK, self.n))
            if self.n:
                _k.uniforms(self._block, s, self.key)
            self._first = s
        return self._block[s - self._first]

    def uniform(self, lo, hi):
        return lo + (hi - lo) * self.unit()

    def chance(self, p):
        """True with probability p, per image (p = 1: always, p = 0: never)."""
        if p >= 1 or p <= 0:  # the slot is taken all the same
            self.slot += 1
            return np.full(self.n, p >= 1)
        return self.unit() < p

    def integers(self, count):
        """Integers in [0, count) per image; count may be an array."""
        return np.minimum((self.unit() * count).astype(np.int64), np.asarray(count) - 1)
