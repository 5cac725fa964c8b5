"""The transforms that are exact copies: horizontal flips and random crops."""

import numpy as np

from .._checks import UNIT, check_float, check_int, check_pair
from ._batch import PADDING, SIDE, check_border
from ._transform import Transform


class HorizontalFlip(Transform):
    """Mirror each image left-right with probability p (an exact copy)."""

    role = "flip"

    def __init__(self, p=0.5):
        self.p = check_float(p, "p", UNIT)

    def _flags(self, draw):
        return draw.chance(self.p)

    def _inverse(self, draw, h, w):
        flip = self._flags(draw)
        m = np.zeros((draw.n, 3, 3))
        m[:, 0, 0] = np.where(flip, -1.0, 1.0)
        m[:, 0, 2] = np.where(flip, w - 1.0, 0.0)
        m[:, 1, 1] = m[:, 2, 2] = 1
        return m, (h, w)


class RandomCrop(Transform):
    """Pad by `padding` ((py, px) or one int for both), then crop a random size window
    (an exact copy); sides and padding at most 32768, as an image's sides (the warp's
    limit). The padding is `mode` ("constant" with `fill`, "edge" or "reflect"). A crop
    larger than the padded image raises ValueError: here when `image_size` ((h, w) or
    one int) is given, else in a Compose given its image_size, else at the call."""

    role = "crop"
    fixes_size = True

    def __init__(self, size, padding=0, mode="constant", fill=0, image_size=None):
        self.size = check_pair(size, "size", check_int, SIDE)
        self.padding = check_pair(padding, "padding", check_int, PADDING)
        self.mode, self.fill = check_border(mode, fill)
        self.border = (self.mode, self.fill)
        self.image_size = (None if image_size is None
                           else check_pair(image_size, "image_size", check_int, SIDE))
        if self.image_size is not None:
            self._check_fits(*self.image_size)

    def _check_fits(self, h, w):
        (oh, ow), (py, px) = self.size, self.padding
        if oh > h + 2 * py or ow > w + 2 * px:
            raise ValueError(
                f"RandomCrop: the crop {oh}x{ow} is larger than the padded image "
                f"{h + 2 * py}x{w + 2 * px}"
            )

    def _origin(self, draw, h, w):
        (oh, ow), (py, px) = self.size, self.padding
        self._check_fits(h, w)
        oy = draw.integers(h + 2 * py - oh + 1) - py
        ox = draw.integers(w + 2 * px - ow + 1) - px
        return oy, ox, (oh, ow)
