"""The base classes of the transforms."""

from .._checks import UNIT, check_float
from ._batch import check_border
from ._runner import Runner


class Transform:
    """A batch transform. Call it on a batch (it runs alone, as a one-transform Compose
    with a random seed would), or put it in a Compose to seed it and fuse it with its
    neighbours."""

    role = None  # "flip", "crop", "affine", "lens" or "elastic"
    border = None  # (mode, fill) for transforms that read outside the image
    # What the planner reads instead of the transform's class: whether the output's
    # (h, w) is the transform's `size` whatever the input's, and whether the warp stage
    # it is part of averages several reads per output pixel where it shrinks
    # (_stages._samples).
    fixes_size = False
    antialias = False

    def __call__(self, images, out=None):
        if getattr(self, "_own", None) is None:
            self._own = Runner([self])
        return self._own(images, out=out)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Geometric(Transform):
    """A transform that moves pixels, applied with probability p, reading outside the
    image as its border mode and fill say."""

    role = "affine"

    def _init_common(self, p, mode, fill):
        self.p = check_float(p, "p", UNIT)
        self.mode, self.fill = check_border(mode, fill)
        self.border = (self.mode, self.fill)
