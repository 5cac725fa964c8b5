"""Batched image augmentation: random crops, flips and geometric warps of a whole batch.

A batch is a NumPy array of images, (N, H, W) or (N, C, H, W), uint8 or float32; every
transform returns a new array of the same dtype and layout (a crop or resized crop
changes H and W to its `size`) and never modifies its input, unless `out=` names the
input itself.

    aug = augment.Compose([augment.RandomCrop(28, padding=2),
                           augment.RandomRotation(10),
                           augment.ElasticDistortion(alpha=34, sigma=4)], seed=0)
    batch = aug(images)                  # new random parameters at every call

Geometry. Pixel (x, y) is column x, row y; the center of an H x W image is
((W - 1) / 2, (H - 1) / 2). Every geometric transform is an inverse map: for each output
pixel it gives the source position, read with bilinear interpolation; outside the
source the border `mode` decides: "constant" (the `fill` value, default 0), "edge"
(the nearest edge pixel) or "reflect" (mirrored about the edge pixels, as numpy.pad's
"reflect"). uint8 results are rounded and clipped to [0, 255].

Fusion. Compose runs consecutive geometric transforms (RandomTranslate,
RandomRotation, RandomStretch, RandomShear, RandomAffine, RandomResizedCrop,
HorizontalFlip among them) as ONE warp: their 2x3 matrices are multiplied per image,
optionally followed by a lens distortion and then an elastic field, so the image is
interpolated once. A run of RandomCrop (at most one) and HorizontalFlip is one exact
copy. Transforms with different border modes or fill values are not fused.

Cost. The warp makes a float copy of each source image with a border of the mode's
values, then per chunk of output rows computes every pixel's source position in
vectorized float64 (float32 where an elastic field, itself float32, moves the pixels)
and reads four neighbours per channel without a branch; an elastic field is made per
image (Gaussian smoothing: the exact filter for sigma < 2, a recursive one of the same
cost for any larger sigma) just before its warp, while it is in the cache. A crop or
flip copies rows by runs (forward, reversed, repeated edge, fill). Intermediate
batches of a Compose are kept and reused across calls; out= receives the last stage
directly.

Randomness. Every per-image parameter is a pure function of (Compose seed, call
counter, position of the transform in the Compose, image index, parameter slot),
hashed with the counter-based generator of fastnn.ops.dropout (simd.h's fn_hash32):
the same seed gives the same batches, for any thread count. Ranges follow
torchvision: `degrees=d` draws uniformly in [-d, d], a pair (lo, hi) in [lo, hi].
Parameters out of range raise ValueError when the transform is constructed; a value of
the wrong kind (a string or a bool for a number) raises an error that is both a
TypeError and a ValueError.
"""

from ._affine import (
    RandomAffine,
    RandomResizedCrop,
    RandomRotation,
    RandomShear,
    RandomStretch,
    RandomTranslate,
)
from ._batch import BORDER_MODES
from ._compose import Compose
from ._distortion import ElasticDistortion, LensDistortion
from ._flip_crop import HorizontalFlip, RandomCrop
from ._preview import preview
from ._stages import warp
from ._transform import Transform

__all__ = [
    "BORDER_MODES",
    "Compose",
    "ElasticDistortion",
    "HorizontalFlip",
    "LensDistortion",
    "RandomAffine",
    "RandomCrop",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomShear",
    "RandomStretch",
    "RandomTranslate",
    "Transform",
    "preview",
    "warp",
]
