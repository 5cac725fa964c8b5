"""The non-linear warps: radial lens distortion and elastic distortion."""

import numpy as np

from .._checks import Interval, check_float, check_range
from ._batch import MAX_SIDE
from ._gaussian import gaussian_coefficients
from ._transform import Geometric

_LENS_K = Interval(-1.0, None, closed="neither")
# The field's Gaussian: past this width the float32 recursive filter's poles come so
# near 1 that its gain drifts (2% at 100, unstable by 300); wider fields are flat on any
# image of MAX_SIDE anyway.
_SIGMA = Interval(0.0, 100.0, closed="right")
# The field's scale in pixels: a displacement past the largest image reads only border.
_ALPHA = Interval(0.0, float(MAX_SIDE))


class LensDistortion(Geometric):
    """Radial lens distortion about the image center: the output pixel at normalized
    radius r (1 at the corners) reads the source at radius r (1 + k r^2). k > 0 is
    barrel distortion, k < 0 pincushion; k -> uniform in [-k, k], or a (min, max) pair
    (min > -1)."""

    role = "lens"

    def __init__(self, k, p=1.0, mode="constant", fill=0):
        self.k = check_range(k, "k", _LENS_K)
        self._init_common(p, mode, fill)

    def _coefficients(self, draw):
        apply = draw.chance(self.p)
        return np.where(apply, draw.uniform(*self.k), 0.0)


class ElasticDistortion(Geometric):
    """Elastic distortion (Simard et al. 2003): a displacement field of uniform noise in
    (-1, 1) per pixel and axis, smoothed by a Gaussian of width `sigma` pixels and
    scaled by `alpha` pixels (sigma in (0, 100], alpha in [0, 32768]). Beyond the edges
    the noise is zero (scipy.ndimage's mode "constant", as in the widely used reference
    implementation), so the displacements fade within about sigma of the edges instead
    of repeating one edge pixel's noise across the Gaussian's width.

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
        self.alpha = check_float(alpha, "alpha", _ALPHA)
        self.sigma = check_float(sigma, "sigma", _SIGMA)
        self._init_common(p, mode, fill)
        self._smooth = gaussian_coefficients(self.sigma)

    def _alphas(self, draw):
        return np.where(draw.chance(self.p), np.float32(self.alpha), np.float32(0))
