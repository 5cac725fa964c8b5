"""Inverse maps as (n, 3, 3) arrays, one per image: (x_src, y_src, 1) = M @ (x_out,
y_out, 1), x the column and y the row."""

import numpy as np


def about(linear, center_out, center_in, shift=None):
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


def center(h, w):
    """The (x, y) center of an h x w image."""
    return ((w - 1) / 2, (h - 1) / 2)


def mat2(a, b, c, d):
    """(n, 2, 2) matrices [[a, b], [c, d]] from per-image arrays (or numbers)."""
    n = np.broadcast(a, b, c, d).size  # 0 for an empty batch
    m = np.empty((n, 2, 2))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = a, b, c, d
    return m


def rotation(theta):
    """The inverse map of a counter-clockwise rotation by theta (radians) as it looks
    on screen (rows down): np.rot90 for 90 degrees."""
    c, s = np.cos(theta), np.sin(theta)
    return mat2(c, -s, s, c)


def diagonal(sx, sy):
    return mat2(sx, 0.0, 0.0, sy)


def shear_inverse(tx, ty):
    """Inverse of the forward shear [[1, tx], [0, 1]] @ [[1, 0], [ty, 1]]:
    [[1, 0], [-ty, 1]] @ [[1, -tx], [0, 1]]."""
    return mat2(1.0, -tx, -ty, tx * ty + 1.0)


def or_identity(apply, m):
    """m where apply, else the identity."""
    if apply.all():
        return m
    eye = np.broadcast_to(np.eye(m.shape[-1]), m.shape)
    return np.where(apply[:, None, None], m, eye)
