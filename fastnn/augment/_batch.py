"""What a batch is: (N, H, W) or (N, C, H, W) images of uint8 or float32, and the
border modes that say what lies outside them."""

import numpy as np

from .._checks import Interval, check_array, check_choice, check_contiguous, check_float
from .._kernels import augment as _k

BORDER_MODES = tuple(_k.BORDER_MODES)
PIXEL_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32))
# The largest image side (height or width, also of a crop or a warp's output) and crop
# padding: the warp kernel indexes a padded image plane with 32-bit offsets, which
# (MAX_SIDE + 3)^2 keeps under 2^31.
MAX_SIDE = 2**15
SIDE = Interval(1, MAX_SIDE)
PADDING = Interval(0, MAX_SIDE)


def check_images(images):
    """images as a C-contiguous batch (copied once if it is not)."""
    x = check_array(images, "images", PIXEL_DTYPES)
    if x.ndim not in (3, 4):
        raise ValueError(f"images: expected (N, H, W) or (N, C, H, W), got shape {x.shape}")
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"images: height and width must be >= 1, got shape {x.shape}")
    if max(x.shape[-2:]) > MAX_SIDE:
        raise ValueError(f"images: height and width must be <= {MAX_SIDE}, got shape {x.shape}")
    return check_contiguous(x, "images")


def as4d(x):
    """x as (N, C, H, W): a view with C = 1 for (N, H, W)."""
    return x if x.ndim == 4 else x.reshape(x.shape[0], 1, *x.shape[1:])


def check_border(mode, fill):
    """(mode, fill) of a transform that reads outside the image."""
    return check_choice(mode, "mode", BORDER_MODES), check_float(fill, "fill")


def fill_for(dtype, fill):
    """The fill value as the kernel takes it for images of `dtype`."""
    return float(np.clip(np.round(fill), 0, 255)) if dtype == np.uint8 else fill
