"""Running one stage of a Compose on a batch: an exact copy (crops and flips) or one
fused bilinear warp (affine maps, then a lens, then an elastic field); and `warp`, the
warp by matrices given by the caller."""

import numpy as np

from .._checks import check_finite, check_int, check_output, check_pair
from .._kernels import augment as _k
from .._threads import kernel_threads
from ._batch import SIDE, as4d, check_border, check_images, fill_for
from ._draws import Draw, noise_key, transform_key
from ._plan import stage_border

_NO_SMOOTH = np.zeros(0, np.float32)
_NO_SAMPLES = np.zeros((0, 2), np.intc)
MAX_SAMPLES = 8  # antialiasing reads per output pixel and axis, at most


def run_copy(x, members, key, alloc):
    """The copy stage of `members` on x (N, C, H, W), into alloc(shape)."""
    n, c, h, w = x.shape
    sy0 = np.zeros(n, np.int64)
    sx0 = np.zeros(n, np.int64)
    direction = np.ones(n, np.int64)
    gh, gw = h, w
    for index, t in members:
        draw = Draw(transform_key(key, index), n)
        if t.role == "flip":
            flip = t._flags(draw)
            sx0 = np.where(flip, sx0 + direction * (gw - 1), sx0)
            direction = np.where(flip, -direction, direction)
        else:
            oy, ox, (gh, gw) = t._origin(draw, gh, gw)
            sy0 = sy0 + oy
            sx0 = sx0 + direction * ox
    mode, fill = stage_border(members)
    origin = np.ascontiguousarray(np.stack([sy0, sx0, direction], -1), dtype=np.longlong)
    out = alloc((n, c, gh, gw))
    _k.copy(x, out, origin, _k.BORDER_MODES[mode], fill_for(x.dtype, fill), kernel_threads())
    return out


def run_warp(x, members, key, alloc):
    """The warp stage of `members` on x (N, C, H, W), into alloc(shape)."""
    n, c, h, w = x.shape
    m = None
    gh, gw = h, w
    lens = alpha = None
    smooth, noise = _NO_SMOOTH, 0
    for index, t in members:
        draw = Draw(transform_key(key, index), n)
        if t.role == "lens":
            lens = t._coefficients(draw).astype(np.float32)
        elif t.role == "elastic":
            alpha = t._alphas(draw)
            smooth = t._smooth
            noise = noise_key(key, index)
        else:
            mi, (gh, gw) = t._inverse(draw, gh, gw)
            m = mi if m is None else m @ mi
    mode, fill = stage_border(members)
    out = alloc((n, c, gh, gw))
    zeros = np.zeros(n, np.float32)
    if m is None:
        m = np.broadcast_to(np.eye(3), (n, 3, 3))
    mats = np.ascontiguousarray(m)
    samples = _NO_SAMPLES
    if any(t.antialias for _, t in members):
        samples = _samples(m)
    _k.warp(x, out, mats, zeros if lens is None else lens, zeros if alpha is None else alpha,
            smooth, noise, samples, _k.BORDER_MODES[mode], fill_for(x.dtype, fill),
            kernel_threads())
    return out


def _samples(m):
    """(n, 2) antialiasing reads along x and y per output pixel: the lengths of the
    source steps of one output pixel, rounded up, in [1, MAX_SAMPLES]."""
    steps = np.hypot(m[:, 0, :2], m[:, 1, :2])  # (n, 2): |d src / d x|, |d src / d y|
    return np.clip(np.ceil(steps - 1e-6), 1, MAX_SAMPLES).astype(np.intc)


def warp(images, matrices, size=None, mode="constant", fill=0, out=None):
    """Warp each image by its own 2x3 matrix (bilinear): matrices (N, 2, 3) or (2, 3)
    map OUTPUT pixel (x, y, 1) to the SOURCE position (x = column, y = row), as
    scipy.ndimage.affine_transform does (with the axes swapped). size: the output
    (h, w), default the input's."""
    x = check_images(images)
    mode, fill = check_border(mode, fill)
    n = x.shape[0]
    mats = np.asarray(matrices, dtype=np.float64)
    if mats.shape == (2, 3):
        mats = np.broadcast_to(mats, (n, 2, 3))
    if mats.shape != (n, 2, 3):
        raise ValueError(f"matrices: expected shape ({n}, 2, 3) or (2, 3), got {mats.shape}")
    check_finite(mats, "matrices")
    oh, ow = x.shape[-2:] if size is None else check_pair(size, "size", check_int, SIDE)
    x4 = as4d(x)
    shape = (n, x4.shape[1], oh, ow) if x.ndim == 4 else (n, oh, ow)
    out = check_output(out, shape, x.dtype, [("images", images)])
    zeros = np.zeros(n, np.float32)
    _k.warp(x4, out.reshape(n, x4.shape[1], oh, ow), np.ascontiguousarray(mats),
            zeros, zeros, _NO_SMOOTH, 0, _NO_SAMPLES, _k.BORDER_MODES[mode],
            fill_for(x.dtype, fill), kernel_threads())
    return out
