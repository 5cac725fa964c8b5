"""Compose: a list of transforms applied to a batch in order, fused into stages."""

import numpy as np

from .._checks import (
    NON_NEGATIVE,
    POSITIVE,
    check_instance,
    check_int,
    check_output,
    check_pair,
)
from .._keys import MASK64, random_key
from ._batch import as4d, check_images
from ._plan import output_size, plan
from ._stages import run_copy, run_warp
from ._transform import Transform


def _image_size(v):
    """(h, w) from an int or an (h, w) pair of positive ints."""
    return check_pair(v, "image_size", check_int, POSITIVE)


class Compose:
    """Apply transforms in order to a batch, fusing what can be fused (see the
    fastnn.augment docstring). seed: an int >= 0, or None for a random one (then
    `self.seed` holds it). Call k (from 0, counted in `self.step`) draws its parameters
    from (seed, k); pass step= to redo a given call without moving the counter.
    image_size: the (h, w) of the images it will get, if known: then a crop larger
    than its padded input raises ValueError here rather than at the first call (as it
    does without image_size when an earlier crop or resized crop fixes the size)."""

    def __init__(self, transforms, seed=None, image_size=None):
        transforms = list(transforms)
        for t in transforms:
            check_instance(t, "transforms", Transform, "fastnn.augment transforms")
        if seed is None:
            seed = int(np.random.SeedSequence().entropy) & MASK64
        self.seed, self.step = check_int(seed, "seed", NON_NEGATIVE), 0
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

    def __repr__(self):
        return f"Compose({self.transforms!r}, seed={self.seed})"

    def preview(self, images, path, **kwargs):
        """Write a PNG of originals beside augmented copies (see `preview`)."""
        from ._preview import preview  # it runs a Compose: imported late

        return preview(images, path, transform=self, **kwargs)

    def __call__(self, images, out=None, step=None):
        """The augmented batch: same dtype and layout as `images` (H, W changed by a
        crop's size). `out` (exact shape and dtype, C-contiguous) receives it and may
        be `images` itself; without it the result is a new array. Between stages the
        Compose keeps its intermediate batches and reuses them at the next call of the
        same shape (so one Compose must not be called from two threads at once)."""
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
