"""The affine transforms: translation, rotation, stretch, shear, torchvision's
RandomAffine and RandomResizedCrop. Each gives its inverse map per image (see
_matrices), so that a Compose multiplies neighbours into one warp."""

import math
from numbers import Real

import numpy as np

from .._checks import (
    NON_NEGATIVE,
    POSITIVE,
    UNIT,
    Interval,
    check_int,
    check_pair,
    check_range,
)
from .._kernels import augment as _k
from ._batch import SIDE
from ._matrices import about, center, diagonal, or_identity, rotation, shear_inverse
from ._transform import Geometric

_SHEAR_DEGREES = Interval(-89.0, 89.0)
_RESIZED_SCALE = Interval(0.0, 1.0, closed="right")


class RandomTranslate(Geometric):
    """Shift each image by (dx, dy) pixels, uniform in [-max_x, max_x] x [-max_y, max_y];
    max_shift is one number for both or (max_x, max_y). integer=True rounds the shifts
    to whole pixels (then the result is an exact shifted copy)."""

    def __init__(self, max_shift, integer=False, p=1.0, mode="constant", fill=0):
        self.max_shift = check_pair(max_shift, "max_shift", within=NON_NEGATIVE)
        self.integer = bool(integer)
        self._init_common(p, mode, fill)

    def _inverse(self, draw, h, w):
        apply = draw.chance(self.p)
        (mx, my) = self.max_shift
        shift = np.stack([draw.uniform(-mx, mx), draw.uniform(-my, my)], -1)
        if self.integer:
            shift = np.round(shift)
        eye = np.broadcast_to(np.eye(2), (draw.n, 2, 2))
        c = center(h, w)
        return or_identity(apply, about(eye, c, c, shift)), (h, w)


class RandomRotation(Geometric):
    """Rotate each image about its center by an angle in degrees (counter-clockwise on
    screen for positive angles, as np.rot90): d -> [-d, d], or a (min, max) pair."""

    def __init__(self, degrees, p=1.0, mode="constant", fill=0):
        self.degrees = check_range(degrees, "degrees")
        self._init_common(p, mode, fill)

    def _inverse(self, draw, h, w):
        apply = draw.chance(self.p)
        theta = np.deg2rad(draw.uniform(*self.degrees))
        c = center(h, w)
        return or_identity(apply, about(rotation(theta), c, c)), (h, w)


class RandomStretch(Geometric):
    """Scale each image about its center by factors (sx, sy) drawn independently from
    `range` ((lo, hi), or r -> (1 - r, 1 + r)); isotropic=True draws one factor for
    both axes (zoom). Factors must be > 0."""

    def __init__(self, range=(0.9, 1.1), isotropic=False, p=1.0, mode="constant", fill=0):
        self.range = check_range(range, "range", POSITIVE, about=1.0)
        self.isotropic = bool(isotropic)
        self._init_common(p, mode, fill)

    def _inverse(self, draw, h, w):
        apply = draw.chance(self.p)
        sx = draw.uniform(*self.range)
        sy = sx if self.isotropic else draw.uniform(*self.range)
        c = center(h, w)
        return or_identity(apply, about(diagonal(1 / sx, 1 / sy), c, c)), (h, w)


def _shear_ranges(shear, name):
    """torchvision's shear: d or (lo, hi) shears along x; (xlo, xhi, ylo, yhi) both."""
    if not isinstance(shear, Real) and len(shear) == 4:
        return (check_range(tuple(shear[:2]), name, _SHEAR_DEGREES),
                check_range(tuple(shear[2:]), name, _SHEAR_DEGREES))
    return check_range(shear, name, _SHEAR_DEGREES), (0.0, 0.0)


class RandomShear(Geometric):
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
        c = center(h, w)
        return or_identity(apply, about(shear_inverse(tx, ty), c, c)), (h, w)


class RandomAffine(Geometric):
    """torchvision's RandomAffine: rotation by `degrees`, then translation by up to
    translate=(fx, fy) of the width and height, isotropic scale in scale=(lo, hi), and
    shear (d, (lo, hi), or (xlo, xhi, ylo, yhi)), about the image center:
    forward p_out = c + t + R S Sh (p_in - c)."""

    def __init__(self, degrees=0, translate=None, scale=None, shear=None, p=1.0,
                 mode="constant", fill=0):
        self.degrees = check_range(degrees, "degrees")
        self.translate = (None if translate is None
                          else check_pair(translate, "translate", within=UNIT, single=False))
        self.scale = None if scale is None else check_range(scale, "scale", POSITIVE, about=1.0)
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
                         *shear_y, *center(h, w))
        return m, (h, w)


class RandomResizedCrop(Geometric):
    """torchvision's RandomResizedCrop: a window of a random fraction `scale` of the
    area and aspect ratio (w / h) log-uniform in `ratio`, resized to `size` with
    bilinear interpolation (pixel centers aligned). After 10 draws without a window that
    fits, a center crop is used. The window lies inside the image, so the border
    matters only at its edges: mode=None (default) takes that of the geometric
    transforms fused with it, else "edge".

    antialias=True (the default, as torchvision's): where the warp shrinks an image by
    more than 1 along an axis, each output pixel is the mean of k bilinear reads spread
    evenly over its footprint along that axis, k the factor rounded up (at most 8:
    _stages.MAX_SAMPLES): the exact area average for whole factors (torchvision's
    antialias uses a triangle filter, a little smoother). It applies to the whole fused
    warp the crop is part of."""

    fixes_size = True

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), mode=None, fill=0,
                 antialias=True):
        self.size = check_pair(size, "size", check_int, SIDE)
        self.scale = check_range(scale, "scale", _RESIZED_SCALE)
        self.ratio = check_range(ratio, "ratio", POSITIVE)
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
