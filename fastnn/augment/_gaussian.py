"""The Gaussian that smooths an elastic field: the coefficients of augment.h's
fn_smooth, an exact FIR filter for small widths and a recursive one for the others."""

import numpy as np

# Below this sigma the field's Gaussian is the exact FIR filter (radius 4 sigma rounded,
# at most 8 taps a side: augment.h's FN_FIR_MAX_RADIUS), from it the recursive one.
_FIR_SIGMA = 2.0
_FIR_MAX_RADIUS = 8


def gaussian_coefficients(sigma):
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
    3x3 matrix that starts the backward pass where the input continues with zeros."""

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
    # Backward initial states: past the last sample the input is zero and the output
    # decays as the forward recursion with zero input; the backward pass over that tail
    # (long enough to vanish in float64) gives the states, linear in the last 3 outputs.
    tail = int(40 * sigma) + 200
    m = np.empty((3, 3))
    for i in range(3):
        e = np.zeros(tail + 3)
        e[2 - i] = 1.0  # e[0:3] = y[R-3], y[R-2], y[R-1]
        for k in range(3, tail + 3):
            e[k] = a[0] * e[k - 1] + a[1] * e[k - 2] + a[2] * e[k - 3]
        z = np.zeros(tail + 6)
        for k in range(tail + 2, 2, -1):
            z[k] = b * e[k] + a[0] * z[k + 1] + a[1] * z[k + 2] + a[2] * z[k + 3]
        m[:, i] = z[3:6]  # positions R, R+1, R+2
    return np.concatenate([[b], a, m.ravel()]).astype(np.float32)
