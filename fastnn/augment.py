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
Parameters out of range raise ValueError when the transform is constructed.
"""

import math
import struct
import zlib
from numbers import Real

import numpy as np

from ._checks import check_contiguous, check_output
from ._kernels import augment as _k
from ._keys import random_key, splitmix64
from ._threads import get_num_threads

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

BORDER_MODES = tuple(_k.BORDER_MODES)
_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32))
_MASK64 = (1 << 64) - 1


# ---------------------------------------------------------------- random numbers


def _fmix32(h):
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _hash32(index, key):
    """NumPy twin of simd.h's fn_hash32 over a uint64 array of indices."""
    index = np.asarray(index, np.uint64)
    lo = np.uint32(key & 0xFFFFFFFF)
    hi = np.uint32(key >> 32)
    with np.errstate(over="ignore"):
        h = _fmix32((index & np.uint64(0xFFFFFFFF)).astype(np.uint32) * np.uint32(0x9E3779B9) ^ lo)
        return _fmix32(h + ((index >> np.uint64(32)).astype(np.uint32) ^ hi))


class _Draw:
    """Per-image uniforms for one transform in one call: slot s, image i is
    hash(key, (s << 32) + i); each call of a method takes the next slot. The kernel
    fills _BLOCK slots at a time (the NumPy twin _hash32 gives the same numbers)."""

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


# ---------------------------------------------------------------- argument checks


def _probability(p):
    if isinstance(p, bool) or not isinstance(p, Real) or not 0 <= p <= 1:
        raise ValueError(f"p: a probability must be a number in [0, 1], got {p!r}")
    return float(p)


def _number(v, name):
    if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v!r}")
    return float(v)


def _range(v, name, *, symmetric_about=0.0, lo_min=None, hi_max=None, strict_lo=False):
    """(lo, hi) from a number d (-> about +- d) or a pair (lo <= hi), checked against
    bounds."""
    if isinstance(v, Real) and not isinstance(v, bool):
        d = _number(v, name)
        if d < 0:
            raise ValueError(f"{name}: a single value is a half-width and must be >= 0, got {d}")
        lo, hi = symmetric_about - d, symmetric_about + d
    else:
        try:
            lo, hi = v
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected a number or a (min, max) pair, got {v!r}") from None
        lo, hi = _number(lo, name), _number(hi, name)
        if lo > hi:
            raise ValueError(f"{name}: min {lo} is larger than max {hi}")
    if lo_min is not None and (lo < lo_min or (strict_lo and lo == lo_min)):
        rel = ">" if strict_lo else ">="
        raise ValueError(f"{name}: values must be {rel} {lo_min}, got the range ({lo}, {hi})")
    if hi_max is not None and hi > hi_max:
        raise ValueError(f"{name}: values must be <= {hi_max}, got the range ({lo}, {hi})")
    return lo, hi


def _size(v, name):
    """(h, w) from an int or a pair of positive ints."""
    pair = (v, v) if isinstance(v, (int, np.integer)) else v
    try:
        h, w = pair
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an int or an (h, w) pair, got {v!r}") from None
    for s in (h, w):
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0:
            raise ValueError(f"{name}: sizes must be positive ints, got {v!r}")
    return int(h), int(w)


def _border(mode, fill):
    if mode not in _k.BORDER_MODES:
        raise ValueError(f"mode: expected one of {BORDER_MODES}, got {mode!r}")
    return mode, _number(fill, "fill")


# ---------------------------------------------------------------- matrices

# Inverse maps are (n, 3, 3) arrays: (x_src, y_src, 1) = M @ (x_out, y_out, 1).


def _about(linear, center_out, center_in, shift=None):
    """src = center_in + linear @ (p - center_out - shift), as (n, 3, 3)."""
    n = len(linear)
    m = np.zeros((n, 3, 3))
    m[:, :2, :2] = linear
    m[:, 2, 2] = 1
    ox, oy = center_out
    if shift is not None:
        ox, oy = (ox + shift[:, 0])[:, None], (oy + shift[:, 1])[:, None]
    m[:, :2, 2] = np.asarray(center_in, float) - (linear[:, :, 0] * ox + linear[:, :, 1] * oy)
    return m


def _center(h, w):
    return ((w - 1) / 2, (h - 1) / 2)


def _mat2(a, b, c, d):
    """(n, 2, 2) matrices [[a, b], [c, d]] from per-image arrays (or numbers)."""
    n = np.broadcast(a, b, c, d).size  # 0 for an empty batch
    m = np.empty((n, 2, 2))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = a, b, c, d
    return m


def _rotation(theta):
    """The inverse map of a counter-clockwise rotation by theta (radians) as it looks
    on screen (rows down): np.rot90 for 90 degrees."""
    c, s = np.cos(theta), np.sin(theta)
    return _mat2(c, -s, s, c)


def _diag(sx, sy):
    return _mat2(sx, 0.0, 0.0, sy)


def _shear_inverse(tx, ty):
    """Inverse of the forward shear [[1, tx], [0, 1]] @ [[1, 0], [ty, 1]]:
    [[1, 0], [-ty, 1]] @ [[1, -tx], [0, 1]]."""
    return _mat2(1.0, -tx, -ty, tx * ty + 1.0)


def _where(apply, m):
    """m where apply, else the identity."""
    if apply.all():
        return m
    eye = np.broadcast_to(np.eye(m.shape[-1]), m.shape)
    return np.where(apply[:, None, None], m, eye)


# ---------------------------------------------------------------- transforms


class Transform:
    """A batch transform. Call it on a batch (a one-transform Compose with a random
    seed), or put it in a Compose to seed it and fuse it with its neighbours."""

    role = None  # "flip", "crop", "affine", "lens" or "elastic"
    border = None  # (mode, fill) for transforms that read outside the image

    def __call__(self, images, out=None):
        if getattr(self, "_own", None) is None:
            self._own = Compose([self])
        return self._own(images, out=out)

    def preview(self, images, path, **kwargs):
        """Write a PNG of originals beside augmented copies (see `preview`)."""
        return preview(images, path, transform=self, **kwargs)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class HorizontalFlip(Transform):
    """Mirror each image left-right with probability p (an exact copy)."""

    role = "flip"

    def __init__(self, p=0.5):
        self.p = _probability(p)

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
    (an exact copy). The padding is `mode` ("constant" with `fill`, "edge" or
    "reflect"). A crop larger than the padded image raises ValueError: here when
    `image_size` ((h, w) or one int) is given, else in a Compose given its image_size,
    else at the call."""

    role = "crop"

    def __init__(self, size, padding=0, mode="constant", fill=0, image_size=None):
        self.size = _size(size, "size")
        pad = (padding, padding) if isinstance(padding, (int, np.integer)) else padding
        try:
            py, px = pad
        except (TypeError, ValueError):
            raise ValueError(
                f"padding: expected an int or a (py, px) pair, got {padding!r}"
            ) from None
        for v in (py, px):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"padding: expected non-negative ints, got {padding!r}")
        self.padding = (int(py), int(px))
        self.mode, self.fill = _border(mode, fill)
        self.border = (self.mode, self.fill)
        self.image_size = None if image_size is None else _size(image_size, "image_size")
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


class _Geometric(Transform):
    role = "affine"

    def _init_common(self, p, mode, fill):
        self.p = _probability(p)
        self.mode, self.fill = _border(mode, fill)
        self.border = (self.mode, self.fill)


class RandomTranslate(_Geometric):
    """Shift each image by (dx, dy) pixels, uniform in [-max_x, max_x] x [-max_y, max_y];
    max_shift is one number for both or (max_x, max_y). integer=True rounds the shifts
    to whole pixels (then the result is an exact shifted copy)."""

    def __init__(self, max_shift, integer=False, p=1.0, mode="constant", fill=0):
        pair = (max_shift, max_shift) if isinstance(max_shift, Real) else max_shift
        try:
            mx, my = pair
        except (TypeError, ValueError):
            raise ValueError(f"max_shift: expected a number or a pair, got {max_shift!r}") from None
        mx, my = _number(mx, "max_shift"), _number(my, "max_shift")
        if mx < 0 or my < 0:
            raise ValueError(f"max_shift: expected non-negative shifts, got {max_shift!r}")
        self.max_shift, self.integer = (mx, my), bool(integer)
        self._init_common(p, mode, fill)

    def _inverse(self, draw, h, w):
        apply = draw.chance(self.p)
        (mx, my) = self.max_shift
        shift = np.stack([draw.uniform(-mx, mx), draw.uniform(-my, my)], -1)
        if self.integer:
            shift = np.round(shift)
        eye = np.broadcast_to(np.eye(2), (draw.n, 2, 2))
        c = _center(h, w)
        return _where(apply, _about(eye, c, c, shift)), (h, w)


class RandomRotation(_Geometric):
    """Rotate each image about its center by an angle in degrees (counter-clockwise on
    screen for positive angles, as np.rot90): d -> [-d, d], or a (min, max) pair."""

    def __init__(self, degrees, p=1.0, mode="constant", fill=0):
        self.degrees = _range(degrees, "degrees")
        self._init_common(p, mode, fill)

    def _inverse(self, draw, h, w):
        apply = draw.chance(self.p)
        theta = np.deg2rad(draw.uniform(*self.degrees))
        c = _center(h, w)
        return _where(apply, _about(_rotation(theta), c, c)), (h, w)


class RandomStretch(_Geometric):
    """Scale each image about its center by factors (sx, sy) drawn independently from
    `range` ((lo, hi), or r -> (1 - r, 1 + r)); isotropic=True draws one factor for
    both axes (zoom). Factors must be > 0."""

    def __init__(self, range=(0.9, 1.1), isotropic=False, p=1.0, mode="constant", fill=0):
        self.range = _range(range, "range", symmetric_about=1.0, lo_min=0.0, strict_lo=True)
        self.isotropic = bool(isotropic)
        self._init_common(p, mode, fill)

    def _inverse(self, draw, h, w):
        apply = draw.chance(self.p)
        sx = draw.uniform(*self.range)
        sy = sx if self.isotropic else draw.uniform(*self.range)
        c = _center(h, w)
        return _where(apply, _about(_diag(1 / sx, 1 / sy), c, c)), (h, w)


def _shear_ranges(shear, name):
    """torchvision's shear: d or (lo, hi) shears along x; (xlo, xhi, ylo, yhi) both."""
    if not isinstance(shear, Real) and len(shear) == 4:
        return (_range(tuple(shear[:2]), name, lo_min=-89.0, hi_max=89.0),
                _range(tuple(shear[2:]), name, lo_min=-89.0, hi_max=89.0))
    return _range(shear, name, lo_min=-89.0, hi_max=89.0), (0.0, 0.0)


class RandomShear(_Geometric):
    """Shear each image about its center by angles in degrees (within +-89): d or
    (lo, hi) along x; (xlo, xhi, ylo, yhi) along x and y."""

    def __init__(self, degrees, p=1.0, mode="constant", fill=0):
        self.degrees = _shear_ranges(degrees, "degrees")
        self._init_common(p, mode, fill)

    def _inverse(self, draw, h, w):
        apply = draw.chance(self.p)
        (xr, yr) = self.degrees
        tx = np.tan(np.deg2rad(draw.uniform(*xr)))
        ty = np.tan(np.deg2rad(draw.uniform(*yr)))
        c = _center(h, w)
        return _where(apply, _about(_shear_inverse(tx, ty), c, c)), (h, w)


class RandomAffine(_Geometric):
    """torchvision's RandomAffine: rotation by `degrees`, then translation by up to
    translate=(fx, fy) of the width and height, isotropic scale in scale=(lo, hi), and
    shear (d, (lo, hi), or (xlo, xhi, ylo, yhi)), about the image center:
    forward p_out = c + t + R S Sh (p_in - c)."""

    def __init__(self, degrees=0, translate=None, scale=None, shear=None, p=1.0,
                 mode="constant", fill=0):
        self.degrees = _range(degrees, "degrees")
        if translate is not None:
            try:
                fx, fy = translate
            except (TypeError, ValueError):
                raise ValueError(
                    f"translate: expected a pair (fx, fy), got {translate!r}"
                ) from None
            fx, fy = _number(fx, "translate"), _number(fy, "translate")
            if not (0 <= fx <= 1 and 0 <= fy <= 1):
                raise ValueError(f"translate: fractions must be in [0, 1], got {translate!r}")
            translate = (fx, fy)
        self.translate = translate
        self.scale = None if scale is None else _range(
            scale, "scale", symmetric_about=1.0, lo_min=0.0, strict_lo=True)
        self.shear = None if shear is None else _shear_ranges(shear, "shear")
        self._init_common(p, mode, fill)

    def _inverse(self, draw, h, w):
        # the uniforms in the order of the draws (None: not drawn, the kernel skips that
        # part); the matrices from them in one kernel call
        apply = draw.chance(self.p)
        u_deg = draw.unit()
        fx, fy = self.translate or (0.0, 0.0)
        u_tx, u_ty = (draw.unit(), draw.unit()) if self.translate is not None else (None, None)
        u_scale = draw.unit() if self.scale is not None else None
        shear_x, shear_y = self.shear or ((0.0, 0.0), (0.0, 0.0))
        u_shx, u_shy = (draw.unit(), draw.unit()) if self.shear is not None else (None, None)
        m = np.empty((draw.n, 3, 3))
        _k.random_affine(m, apply.view(np.uint8), u_deg, u_tx, u_ty, u_scale, u_shx, u_shy,
                         *self.degrees, fx * w, fy * h, *(self.scale or (1.0, 1.0)), *shear_x,
                         *shear_y, *_center(h, w))
        return m, (h, w)


class RandomResizedCrop(_Geometric):
    """torchvision's RandomResizedCrop: a window of a random fraction `scale` of the
    area and aspect ratio (w / h) log-uniform in `ratio`, resized to `size` with
    bilinear interpolation (pixel centers aligned). After 10 draws without a window that
    fits, a center crop is used. The window lies inside the image, so the border
    matters only at its edges: mode=None (default) takes that of the geometric
    transforms fused with it, else "edge".

    antialias=True (the default, as torchvision's): where the warp shrinks an image by
    more than 1 along an axis, each output pixel is the mean of k bilinear reads spread
    evenly over its footprint along that axis, k the factor rounded up (at most
    _MAX_SAMPLES): the exact area average for whole factors (torchvision's antialias
    uses a triangle filter, a little smoother). It applies to the whole fused warp the
    crop is part of."""

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), mode=None, fill=0,
                 antialias=True):
        self.size = _size(size, "size")
        self.scale = _range(scale, "scale", lo_min=0.0, hi_max=1.0, strict_lo=True)
        self.ratio = _range(ratio, "ratio", lo_min=0.0, strict_lo=True)
        self.antialias = bool(antialias)
        self._init_common(1.0, "edge" if mode is None else mode, fill)
        if mode is None:
            self.border = None

    def _window(self, draw, h, w):
        n, area = draw.n, h * w
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        ch = np.zeros(n, np.int64)
        cw = np.zeros(n, np.int64)
        top = np.zeros(n, np.int64)
        left = np.zeros(n, np.int64)
        found = np.zeros(n, bool)
        for _ in range(10):
            target = area * draw.uniform(*self.scale)
            aspect = np.exp(draw.uniform(log_lo, log_hi))
            tw = np.round(np.sqrt(target * aspect)).astype(np.int64)
            th = np.round(np.sqrt(target / aspect)).astype(np.int64)
            ok = ~found & (tw > 0) & (tw <= w) & (th > 0) & (th <= h)
            ti = draw.integers(np.maximum(h - th + 1, 1))
            tj = draw.integers(np.maximum(w - tw + 1, 1))
            ch, cw = np.where(ok, th, ch), np.where(ok, tw, cw)
            top, left = np.where(ok, ti, top), np.where(ok, tj, left)
            found |= ok
        if not found.all():
            in_ratio = w / h
            if in_ratio < self.ratio[0]:
                fw, fh = w, round(w / self.ratio[0])
            elif in_ratio > self.ratio[1]:
                fh, fw = h, round(h * self.ratio[1])
            else:
                fh, fw = h, w
            ch, cw = np.where(found, ch, fh), np.where(found, cw, fw)
            top = np.where(found, top, (h - fh) // 2)
            left = np.where(found, left, (w - fw) // 2)
        return top, left, ch, cw

    def _inverse(self, draw, h, w):
        oh, ow = self.size
        top, left, ch, cw = self._window(draw, h, w)
        kx, ky = cw / ow, ch / oh
        m = np.zeros((draw.n, 3, 3))
        m[:, 0, 0], m[:, 0, 2] = kx, left + 0.5 * kx - 0.5
        m[:, 1, 1], m[:, 1, 2] = ky, top + 0.5 * ky - 0.5
        m[:, 2, 2] = 1
        return m, (oh, ow)


class LensDistortion(_Geometric):
    """Radial lens distortion about the image center: the output pixel at normalized
    radius r (1 at the corners) reads the source at radius r (1 + k r^2). k > 0 is
    barrel distortion, k < 0 pincushion; k -> uniform in [-k, k], or a (min, max) pair
    (min > -1)."""

    role = "lens"

    def __init__(self, k, p=1.0, mode="constant", fill=0):
        self.k = _range(k, "k", lo_min=-1.0, strict_lo=True)
        self._init_common(p, mode, fill)

    def _coefficients(self, draw):
        apply = draw.chance(self.p)
        return np.where(apply, draw.uniform(*self.k), 0.0)


class ElasticDistortion(_Geometric):
    """Elastic distortion (Simard et al. 2003): a displacement field of uniform noise in
    (-1, 1) per pixel and axis, smoothed by a Gaussian of width `sigma` pixels and
    scaled by `alpha` pixels. Beyond the edges the noise continues with its edge values
    (scipy.ndimage's mode "nearest").

    For sigma < 2 the Gaussian is the sampled one truncated at 4 sigma, as
    scipy.ndimage.gaussian_filter's: the field equals gaussian_filter of the same noise
    up to float32 rounding. For sigma >= 2, where that kernel grows long, it is a
    recursive (IIR) approximation of the same cost for every sigma: the third-order
    filter of Young, van Vliet and Verbeek with its poles scaled so that its variance is
    exactly sigma^2, run forward and backward along each axis, in float32. A whole field
    then differs from gaussian_filter's by at most about 2% of the field's largest value
    for sigma >= 3 and 3% at 2 (tests/test_augment.py checks this). The noise: one
    counter-based hash per pixel, 16 bits per axis."""

    role = "elastic"

    def __init__(self, alpha, sigma, p=1.0, mode="constant", fill=0):
        self.alpha = _number(alpha, "alpha")
        if self.alpha < 0:
            raise ValueError(f"alpha: expected a number >= 0, got {alpha!r}")
        self.sigma = _number(sigma, "sigma")
        if self.sigma <= 0:
            raise ValueError(f"sigma: the Gaussian width must be > 0, got {sigma!r}")
        self._init_common(p, mode, fill)
        self._smooth = _gaussian_coefficients(self.sigma)

    def _alphas(self, draw):
        return np.where(draw.chance(self.p), np.float32(self.alpha), np.float32(0))


# Below this sigma the field's Gaussian is the exact FIR filter (radius 4 sigma rounded,
# at most 8 taps a side: augment.h's FN_FIR_MAX_RADIUS), from it the recursive one.
_FIR_SIGMA = 2.0
_FIR_MAX_RADIUS = 8


def _gaussian_coefficients(sigma):
    """The 23 float32 coefficients of augment.h's fn_smooth for width sigma: the
    recursive filter's 13 (zeros for sigma < _FIR_SIGMA), then the FIR radius (0: use
    the recursive filter) and its taps g[0..8] (scipy.ndimage.gaussian_filter1d's
    weights for truncate=4, normalized to sum 1 over -radius..radius)."""
    fir = np.zeros(1 + _FIR_MAX_RADIUS + 1)
    if sigma < _FIR_SIGMA:
        radius = max(1, int(4.0 * sigma + 0.5))
        k = np.arange(-radius, radius + 1)
        with np.errstate(over="ignore"):  # a tiny sigma: exp(-inf) = 0 beyond the center
            g = np.exp(-0.5 * (k / sigma) ** 2)
        g /= g.sum()
        fir[0] = radius
        fir[1:radius + 2] = g[radius:]
        return np.concatenate([np.zeros(13), fir]).astype(np.float32)
    return np.concatenate([_recursive_gaussian(sigma), fir]).astype(np.float32)


# Poles of the third-order recursive Gaussian for sigma = 2 (van Vliet, Young and
# Verbeek 1998); other widths raise them to the power 1 / q.
_IIR_POLES = np.array([1.41650 + 1.00829j, 1.41650 - 1.00829j, 1.86543 + 0j])


def _recursive_gaussian(sigma):
    """The recursive filter's 13 coefficients of fn_smooth (augment.h) for width sigma:
    b, a1..a3 of y[k] = b x[k] + a1 y[k-1] + a2 y[k-2] + a3 y[k-3] (gain 1), and the
    3x3 matrix that starts the backward pass where the input continues with its last
    value."""

    def variance(q):  # of the forward-backward cascade: sum over poles of 2d / (d - 1)^2
        d = _IIR_POLES ** (1 / q)
        return float(np.sum(2 * d / (d - 1) ** 2).real)

    # the variance grows with q: bisection between variances of about 1e-12 and 1e9
    lo, hi = 0.02, 1e4
    if variance(lo) >= sigma * sigma:
        hi = lo
    elif variance(hi) <= sigma * sigma:
        lo = hi
    while hi - lo > 1e-12 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if variance(mid) < sigma * sigma else (lo, mid)
    q = 0.5 * (lo + hi)
    poly = np.poly(1 / _IIR_POLES ** (1 / q)).real  # 1 + c1 z^-1 + c2 z^-2 + c3 z^-3
    a = -poly[1:]
    b = poly.sum()
    # Backward initial states: the deviation from the edge value decays after the last
    # sample as the forward recursion with zero input; the backward pass over that tail
    # (long enough to vanish in float64) gives the states, linear in the 3 deviations.
    tail = int(40 * sigma) + 200
    m = np.empty((3, 3))
    for i in range(3):
        e = np.zeros(tail + 3)
        e[2 - i] = 1.0  # e[0:3] = y[R-3], y[R-2], y[R-1] minus the edge value
        for k in range(3, tail + 3):
            e[k] = a[0] * e[k - 1] + a[1] * e[k - 2] + a[2] * e[k - 3]
        z = np.zeros(tail + 6)
        for k in range(tail + 2, 2, -1):
            z[k] = b * e[k] + a[0] * z[k + 1] + a[1] * z[k + 2] + a[2] * z[k + 3]
        m[:, i] = z[3:6]  # positions R, R+1, R+2
    return np.concatenate([[b], a, m.ravel()]).astype(np.float32)


# ---------------------------------------------------------------- planning

_PHASE = {"affine": 0, "flip": 0, "lens": 1, "elastic": 2}


def _plan(transforms):
    """Split a transform list into stages: ("copy", [(index, t), ...]) runs of flips
    and at most one crop, and ("warp", [...]) runs of affine maps (flips included),
    then at most one lens, then at most one elastic field, all with one border."""
    stages = []
    for i, t in enumerate(transforms):
        last = stages[-1] if stages else None
        if last is not None and last[0] == "warp" and _joins_warp(last, t):
            last[1].append((i, t))
        elif last is not None and last[0] == "copy" and (
            t.role == "flip" or (t.role == "crop" and not any(u.role == "crop" for _, u in last[1]))
        ):
            last[1].append((i, t))
        elif t.role in ("flip", "crop"):
            stages.append(("copy", [(i, t)]))
        else:
            stages.append(("warp", [(i, t)]))
    return stages


def _joins_warp(stage, t):
    members = [u for _, u in stage[1]]
    phase = max(_PHASE[u.role] for u in members)
    if t.role == "crop":
        return False
    borders = {u.border for u in members if u.border is not None}
    if t.border is not None and borders and t.border not in borders:
        return False
    new = _PHASE[t.role]
    return (new == 0 and phase == 0) or new > phase


def _border_of(members):
    for _, t in members:
        if t.border is not None:
            return t.border
    return ("edge", 0.0)  # flips and resized crops only: they read inside the image


def _fill_for(dtype, fill):
    return float(np.clip(np.round(fill), 0, 255)) if dtype == np.uint8 else fill


class Compose:
    """Apply transforms in order to a batch, fusing what can be fused (see the module
    docstring). seed: an int >= 0, or None for a random one (then `self.seed` holds
    it). Call k (from 0, counted in `self.step`) draws its parameters from
    (seed, k); pass step= to redo a given call without moving the counter.
    image_size: the (h, w) of the images it will get, if known: then a crop larger
    than its padded input raises ValueError here rather than at the first call (as it
    does without image_size when an earlier crop or resized crop fixes the size)."""

    def __init__(self, transforms, seed=None, image_size=None):
        transforms = list(transforms)
        for t in transforms:
            if not isinstance(t, Transform):
                raise TypeError(f"Compose: expected fastnn.augment transforms, got {t!r}")
        if seed is None:
            seed = int(np.random.SeedSequence().entropy) & _MASK64
        elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected a non-negative int or None, got {seed!r}")
        self.transforms, self.seed, self.step = transforms, int(seed), 0
        self._stages = _plan(transforms)
        self._buffers = {}
        self.image_size = None if image_size is None else _size(image_size, "image_size")
        self.check_image_size(self.image_size)

    def output_size(self, image_size):
        """(h, w) of the augmented images for input images of (h, w) `image_size`."""
        return _output_size(self.transforms, *_size(tuple(image_size), "image_size"))

    def check_image_size(self, image_size):
        """Raise ValueError if images of (h, w) `image_size` (None: unknown, then only
        sizes fixed by earlier crops are checked) would meet a crop larger than its
        padded input."""
        h, w = (None, None) if image_size is None else _size(tuple(image_size), "image_size")
        _output_size(self.transforms, h, w)

    def __repr__(self):
        return f"Compose({self.transforms!r}, seed={self.seed})"

    def preview(self, images, path, **kwargs):
        """Write a PNG of originals beside augmented copies (see `preview`)."""
        return preview(images, path, transform=self, **kwargs)

    def __call__(self, images, out=None, step=None):
        """The augmented batch: same dtype and layout as `images` (H, W changed by a
        crop's size). `out` (exact shape and dtype, C-contiguous) receives it and may
        be `images` itself; without it the result is a new array. Between stages the
        Compose keeps its intermediate batches and reuses them at the next call of the
        same shape (so one Compose must not be called from two threads at once)."""
        x = _images(images)
        if step is None:
            step = self.step
            self.step += 1
        elif isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step: expected a non-negative int, got {step!r}")
        key = random_key(self.seed, step)
        x4 = _as4d(x)
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
            run = _run_copy if kind == "copy" else _run_warp
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


def _output_size(transforms, h, w):
    """(h, w) of the images after the transforms, from (h, w) before (None where not
    known: then only sizes set by a crop are); a crop larger than its padded input, when
    that input's size is known, raises ValueError."""
    for t in transforms:
        if t.role == "crop" and h is not None and w is not None:
            t._check_fits(h, w)
        if t.role == "crop" or isinstance(t, RandomResizedCrop):
            h, w = t.size
    return h, w


def _images(images):
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images: expected a numpy.ndarray, got {type(images).__name__}")
    if images.dtype not in _DTYPES:
        raise TypeError(f"images: expected dtype uint8 or float32, got {images.dtype}")
    if images.ndim not in (3, 4):
        raise ValueError(f"images: expected (N, H, W) or (N, C, H, W), got shape {images.shape}")
    if images.shape[-1] == 0 or images.shape[-2] == 0:
        raise ValueError(f"images: height and width must be >= 1, got shape {images.shape}")
    return check_contiguous(images, "images")


def _as4d(x):
    return x if x.ndim == 4 else x.reshape(x.shape[0], 1, *x.shape[1:])


def _transform_key(key, index):
    return splitmix64((key + index) & _MASK64)


def _run_copy(x, members, key, alloc):
    n, c, h, w = x.shape
    sy0 = np.zeros(n, np.int64)
    sx0 = np.zeros(n, np.int64)
    direction = np.ones(n, np.int64)
    gh, gw = h, w
    for index, t in members:
        draw = _Draw(_transform_key(key, index), n)
        if t.role == "flip":
            flip = t._flags(draw)
            sx0 = np.where(flip, sx0 + direction * (gw - 1), sx0)
            direction = np.where(flip, -direction, direction)
        else:
            oy, ox, (gh, gw) = t._origin(draw, gh, gw)
            sy0 = sy0 + oy
            sx0 = sx0 + direction * ox
    mode, fill = _border_of(members)
    origin = np.ascontiguousarray(np.stack([sy0, sx0, direction], -1), dtype=np.longlong)
    out = alloc((n, c, gh, gw))
    _k.copy(x, out, origin, _k.BORDER_MODES[mode], _fill_for(x.dtype, fill), get_num_threads())
    return out


def _run_warp(x, members, key, alloc):
    n, c, h, w = x.shape
    m = None
    gh, gw = h, w
    lens = alpha = None
    smooth, noise_key = _NO_SMOOTH, 0
    for index, t in members:
        draw = _Draw(_transform_key(key, index), n)
        if t.role == "lens":
            lens = t._coefficients(draw).astype(np.float32)
        elif t.role == "elastic":
            alpha = t._alphas(draw)
            smooth = t._smooth
            noise_key = splitmix64(_transform_key(key, index) ^ 0x5EED)
        else:
            mi, (gh, gw) = t._inverse(draw, gh, gw)
            m = mi if m is None else m @ mi
    mode, fill = _border_of(members)
    out = alloc((n, c, gh, gw))
    zeros = np.zeros(n, np.float32)
    if m is None:
        m = np.broadcast_to(np.eye(3), (n, 3, 3))
    mats = np.ascontiguousarray(m)
    samples = _NO_SAMPLES
    if any(isinstance(t, RandomResizedCrop) and t.antialias for _, t in members):
        samples = _samples(m)
    _k.warp(x, out, mats, zeros if lens is None else lens, zeros if alpha is None else alpha,
            smooth, noise_key, samples, _k.BORDER_MODES[mode], _fill_for(x.dtype, fill),
            get_num_threads())
    return out


_NO_SMOOTH = np.zeros(0, np.float32)
_NO_SAMPLES = np.zeros((0, 2), np.intc)
_MAX_SAMPLES = 8  # antialiasing reads per output pixel and axis, at most


def _samples(m):
    """(n, 2) antialiasing reads along x and y per output pixel: the lengths of the
    source steps of one output pixel, rounded up, in [1, _MAX_SAMPLES]."""
    steps = np.hypot(m[:, 0, :2], m[:, 1, :2])  # (n, 2): |d src / d x|, |d src / d y|
    return np.clip(np.ceil(steps - 1e-6), 1, _MAX_SAMPLES).astype(np.intc)


def warp(images, matrices, size=None, mode="constant", fill=0, out=None):
    """Warp each image by its own 2x3 matrix (bilinear): matrices (N, 2, 3) or (2, 3)
    map OUTPUT pixel (x, y, 1) to the SOURCE position (x = column, y = row), as
    scipy.ndimage.affine_transform does (with the axes swapped). size: the output
    (h, w), default the input's."""
    x = _images(images)
    mode, fill = _border(mode, fill)
    n = x.shape[0]
    mats = np.asarray(matrices, dtype=np.float64)
    if mats.shape == (2, 3):
        mats = np.broadcast_to(mats, (n, 2, 3))
    if mats.shape != (n, 2, 3):
        raise ValueError(f"matrices: expected shape ({n}, 2, 3) or (2, 3), got {mats.shape}")
    if not np.isfinite(mats).all():
        raise ValueError("matrices: must be finite")
    oh, ow = x.shape[-2:] if size is None else _size(size, "size")
    x4 = _as4d(x)
    shape = (n, x4.shape[1], oh, ow) if x.ndim == 4 else (n, oh, ow)
    out = check_output(out, shape, x.dtype, [("images", images)])
    zeros = np.zeros(n, np.float32)
    _k.warp(x4, out.reshape(n, x4.shape[1], oh, ow), np.ascontiguousarray(mats),
            zeros, zeros, _NO_SMOOTH, 0, _NO_SAMPLES, _k.BORDER_MODES[mode],
            _fill_for(x.dtype, fill), get_num_threads())
    return out


# ---------------------------------------------------------------- preview


def _png(path, pixels):
    """Write an 8-bit grayscale (H, W) or RGB (H, W, 3) PNG without dependencies."""
    h, w = pixels.shape[:2]
    color = 2 if pixels.ndim == 3 else 0
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 6)))
        f.write(chunk(b"IEND", b""))


def _to_u8(batch):
    """(n, h, w) or (n, h, w, 3) uint8 for display; float batches scaled min-max."""
    if batch.ndim == 4:
        batch = batch.transpose(0, 2, 3, 1) if batch.shape[1] == 3 else batch[:, 0]
    if batch.dtype == np.uint8:
        return batch
    b = batch.astype(np.float64)
    lo, hi = np.nanmin(b), np.nanmax(b)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip(np.round((np.nan_to_num(b, nan=lo) - lo) * scale), 0, 255).astype(np.uint8)


def preview(images, path, transform=None, n=16, columns=4, step=0):
    """Write a PNG grid: the first `n` images, each original beside its augmented copy
    (`columns` pairs a row, 2-pixel gaps). transform: a Transform or Compose (default:
    a mild RandomAffine); a Compose is run with step=`step`, leaving its counter as it
    was. 3-channel images are shown in color, other multi-channel ones by channel 0.
    Returns the path."""
    x = _images(images)[:n]
    if transform is None:
        transform = Compose([RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1))], seed=0)
    if isinstance(transform, Compose):
        augmented = transform(x, step=step)
    else:
        augmented = transform(x)
    a, b = _to_u8(x), _to_u8(augmented)
    count = len(a)
    if count == 0:
        raise ValueError("images: the batch is empty")
    h = max(a.shape[1], b.shape[1])
    cell_w = a.shape[2] + b.shape[2] + 2  # original, 2 px, augmented
    cols = min(columns, count)
    rows = -(-count // cols)
    gap = 6
    grid = np.full((rows * (h + gap) - gap, cols * (cell_w + gap) - gap, *a.shape[3:]), 128,
                   np.uint8)
    for i in range(count):
        r, q = divmod(i, cols)
        y, x0 = r * (h + gap), q * (cell_w + gap)
        grid[y:y + a.shape[1], x0:x0 + a.shape[2]] = a[i]
        x1 = x0 + a.shape[2] + 2
        grid[y:y + b.shape[1], x1:x1 + b.shape[2]] = b[i]
    _png(path, grid)
    return path
