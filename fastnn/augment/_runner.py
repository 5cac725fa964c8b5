"""Runner: a list of transforms planned into stages and run on batches, seeded and
counting its calls. Compose is one; a Transform called alone runs in one of its own."""

import numpy as np

from .._checks import NON_NEGATIVE, check_int, check_output, check_pair
from .._keys import random_key
from .._seed import resolve_seed
from ._batch import SIDE, as4d, check_images
from ._plan import output_size, plan
from ._stages import run_copy, run_warp


def _image_size(v):
    """(h, w) from an int or an (h, w) pair of ints in [1, MAX_SIDE]."""
    return check_pair(v, "image_size", check_int, SIDE)


class Runner:
    """Transforms run in order on a batch, planned into stages (see _plan): seed,
    step and image_size as Compose's. The transforms are taken as they are (Compose
    checks that they are Transforms)."""

    def __init__(self, transforms, seed=None, image_size=None):
        transforms = list(transforms)
        self.seed, self.step = check_int(resolve_seed(seed), "seed", NON_NEGATIVE), 0
        self.transforms = transforms
        self._stages = plan(transforms)
        self._buffers = {}
        self.image_size = None if image_size is None else _image_size(image_size)
        self.check_image_size(self.image_size)

    def output_size(self, image_size):
        """(h, w) of the augmented images for input images of (h, w) `image_size`."""
        return output_size(self.transforms, *_image_size(tuple(image_size)))

    def check_image_size(self, image_size):
        """Raise ValueError if images of (h, w) `image_size` (None: unknown, then only
        sizes fixed by earlier crops are checked) would meet a crop larger than its
        padded input."""
        h, w = (None, None) if image_size is None else _image_size(tuple(image_size))
        output_size(self.transforms, h, w)

    def __call__(self, images, out=None, step=None):
        """The augmented batch: same dtype and layout as `images` (H, W changed by a
        crop's size). `out` (exact shape and dtype, C-contiguous) receives it and may
        be `images` itself; without it the result is a new array. Between stages it
        keeps its intermediate batches and reuses them at the next call of the same
        shape (so one Compose, or one Transform called alone, must not be called from
        two threads at once)."""
        x = check_images(images)
        if step is None:
            step = self.step
            self.step += 1
        else:
            step = check_int(step, "step", NON_NEGATIVE)
        key = random_key(self.seed, step)
        x4 = as4d(x)
        gh, gw = self.output_size(x4.shape[2:])
        shape = (*x.shape[:-2], gh, gw)
        if out is not None:
            out = check_output(out, shape, x.dtype, [("images", images)], inplace_ok=("images",))
        if not self._stages:
            if out is None:
                return x.copy()
            np.copyto(out, x)
            return out
        result = x4
        last = len(self._stages) - 1
        for k, (kind, members) in enumerate(self._stages):
            run = run_copy if kind == "copy" else run_warp
            if k < last:
                result = run(result, members, key, self._workspace(k, x.dtype))
                continue
            direct = out is not None and not np.may_share_memory(out, result)
            target = out.reshape(result.shape[0], -1, gh, gw) if direct else None
            result = run(result, members, key,
                         lambda s, t=target: np.empty(s, x.dtype) if t is None else t)
        result = result.reshape(shape)
        if out is None:
            return result
        if not direct:
            np.copyto(out, result)
        return out

    def _workspace(self, k, dtype):
        """An allocator of stage k's output that reuses the previous call's buffer."""

        def alloc(shape):
            buf = self._buffers.get(k)
            if buf is None or buf.shape != shape or buf.dtype != dtype:
                buf = self._buffers[k] = np.empty(shape, dtype)
            return buf

        return alloc
