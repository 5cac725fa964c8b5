"""fastnn.augment: exact copies (flip, crop), the fused bilinear warp against a NumPy
reference, elastic fields, determinism across thread counts, dtypes and layouts, the
Trainer hook, the PNG preview, and bad parameters."""

import sys
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import augment as A
from fastnn import losses, nn, optim
from fastnn._kernels import augment as _k
from fastnn.augment._draws import Draw, noise_key, transform_key
from fastnn.augment._plan import plan

MODES = ("constant", "edge", "reflect")
PIXEL_DTYPES = (np.uint8, np.float32)


# ---------------------------------------------------------------- helpers


def batch(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype) == np.uint8:
        return rng.integers(0, 256, shape).astype(np.uint8)
    return rng.uniform(0, 1, shape).astype(np.float32)


def pad(x, py, px, mode, fill=0):
    """np.pad of the last two axes with fastnn's border modes."""
    width = [(0, 0)] * (x.ndim - 2) + [(py, py), (px, px)]
    if mode == "constant":
        return np.pad(x, width, mode="constant", constant_values=fill)
    return np.pad(x, width, mode=mode)


def border_index(i, n, mode):
    """Vectorized reference of augment.h's fn_border_index (-1: fill)."""
    i = np.asarray(i, np.int64)
    inside = (i >= 0) & (i < n)
    if mode == "constant":
        return np.where(inside, i, -1)
    if mode == "edge" or n == 1:
        return np.clip(i, 0, n - 1)
    period = 2 * n - 2
    r = np.mod(i, period)
    return np.where(r < n, r, period - r)


def reference_warp(img, m, oh, ow, mode, fill, field=None, k=0.0):
    """One image (C, H, W) warped as fn_warp_rows does, in float64."""
    h, w = img.shape[1:]
    y, x = np.mgrid[0:oh, 0:ow].astype(np.float64)
    if field is not None:
        x, y = x + field[0], y + field[1]
    if k:
        cx, cy = (ow - 1) / 2, (oh - 1) / 2
        r2 = max(cx * cx + cy * cy, 1.0)
        ux, uy = x - cx, y - cy
        f = 1 + k / r2 * (ux * ux + uy * uy)
        x, y = cx + ux * f, cy + uy * f
    sx = m[0, 0] * x + m[0, 1] * y + m[0, 2]
    sy = m[1, 0] * x + m[1, 1] * y + m[1, 2]
    sx = np.where(np.abs(sx - np.round(sx)) < 1e-7, np.round(sx), sx)
    sy = np.where(np.abs(sy - np.round(sy)) < 1e-7, np.round(sy), sy)
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    xs0, xs1 = border_index(x0, w, mode), border_index(x0 + 1, w, mode)
    ys0, ys1 = border_index(y0, h, mode), border_index(y0 + 1, h, mode)
    xs1 = np.where(fx == 0, xs0, xs1)
    ys1 = np.where(fy == 0, ys0, ys1)
    src = img.astype(np.float64)

    def tap(ys, xs):
        ok = (ys >= 0) & (xs >= 0)
        return np.where(ok, src[:, np.maximum(ys, 0), np.maximum(xs, 0)], fill)

    return ((1 - fx) * (1 - fy) * tap(ys0, xs0) + fx * (1 - fy) * tap(ys0, xs1)
            + (1 - fx) * fy * tap(ys1, xs0) + fx * fy * tap(ys1, xs1))


def as_dtype(v, dtype):
    if np.dtype(dtype) == np.uint8:
        return np.clip(np.floor(v + 0.5), 0, 255).astype(np.uint8)
    return v.astype(np.float32)


def assert_matches_reference(out, ref, dtype):
    if np.dtype(dtype) == np.uint8:
        # float32 weights in the kernel: a value at .5 may round either way
        assert np.abs(out.astype(int) - as_dtype(ref, dtype).astype(int)).max() <= 1
    else:
        np.testing.assert_allclose(out, ref, rtol=0, atol=2e-5)


def fmix32(h):
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def hash32(index, key):
    """NumPy reference of simd.h's fn_hash32 over a uint64 array of indices."""
    index = np.asarray(index, np.uint64)
    lo = np.uint32(key & 0xFFFFFFFF)
    hi = np.uint32(key >> 32)
    with np.errstate(over="ignore"):
        h = fmix32((index & np.uint64(0xFFFFFFFF)).astype(np.uint32) * np.uint32(0x9E3779B9) ^ lo)
        return fmix32(h + ((index >> np.uint64(32)).astype(np.uint32) ^ hi))


def windows(padded, oh, ow):
    """All (oh, ow) windows of the last two axes: a set of bytes."""
    H, W = padded.shape[-2:]
    return {padded[..., i:i + oh, j:j + ow].tobytes()
            for i in range(H - oh + 1) for j in range(W - ow + 1)}


# ---------------------------------------------------------------- generator


def test_numpy_hash_matches_the_kernel():
    index = np.array([0, 1, 7, (5 << 32) | 9, 2**63 + 3, 2**64 - 1], np.uint64)
    for key in (0, 1, 0x123456789ABCDEF0, 2**64 - 1):
        out = np.empty(len(index), np.uint32)
        _k.hash32(index, key, out)
        np.testing.assert_array_equal(out, hash32(index, key))


# ---------------------------------------------------------------- exact copies


@pytest.mark.parametrize("dtype", PIXEL_DTYPES)
@pytest.mark.parametrize("shape", [(5, 7, 9), (4, 3, 6, 5)])
def test_flip_twice_is_identity_and_p1_is_mirror(dtype, shape):
    x = batch(shape, dtype)
    keep = x.copy()
    flip = A.HorizontalFlip(p=1.0)
    once = flip(x)
    np.testing.assert_array_equal(once, x[..., ::-1])
    np.testing.assert_array_equal(flip(once), x)
    np.testing.assert_array_equal(A.Compose([flip, flip], seed=3)(x), x)
    np.testing.assert_array_equal(A.HorizontalFlip(p=0.0)(x), x)
    np.testing.assert_array_equal(x, keep)  # the input is never modified
    assert once.dtype == x.dtype and once.shape == x.shape


def test_flip_half_flips_some_images_each_exactly():
    x = batch((200, 4, 6), np.uint8)
    y = A.Compose([A.HorizontalFlip(0.5)], seed=1)(x)
    flipped = np.array([np.array_equal(a, b[:, ::-1]) for a, b in zip(y, x)])
    same = np.array([np.array_equal(a, b) for a, b in zip(y, x)])
    assert (flipped | same).all()
    assert 60 < flipped.sum() < 140


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", PIXEL_DTYPES)
def test_random_crop_is_a_window_of_the_padded_image(mode, dtype):
    x = batch((12, 2, 6, 7), dtype)
    y = A.Compose([A.RandomCrop((5, 6), padding=(2, 3), mode=mode, fill=9)], seed=5)(x)
    assert y.shape == (12, 2, 5, 6) and y.dtype == x.dtype
    offsets = set()
    for a, b in zip(x, y):
        padded = pad(a, 2, 3, mode, fill=9)
        hits = [(i, j) for i in range(padded.shape[1] - 4) for j in range(padded.shape[2] - 5)
                if np.array_equal(padded[:, i:i + 5, j:j + 6], b)]
        assert hits, "not a window of the padded image"
        offsets.add(hits[0])
    assert len(offsets) > 3  # the offsets are random


@pytest.mark.parametrize("order", ["crop_flip", "flip_crop"])
@pytest.mark.parametrize("mode", MODES)
def test_crop_and_flip_fuse_exactly(order, mode):
    x = batch((10, 5, 6), np.float32)
    crop, flip = A.RandomCrop(5, padding=2, mode=mode), A.HorizontalFlip(1.0)
    ts = [crop, flip] if order == "crop_flip" else [flip, crop]
    compose = A.Compose(ts, seed=2)
    assert len(compose._stages) == 1  # one copy pass
    y = compose(x)
    for a, b in zip(x, y):
        padded = pad(a, 2, 2, mode)
        if order == "crop_flip":
            assert b[:, ::-1].tobytes() in windows(padded, 5, 5)
        else:
            assert b.tobytes() in windows(padded[:, ::-1], 5, 5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", PIXEL_DTYPES)
@pytest.mark.parametrize(("shape", "size", "padding"),
                         [((2, 5, 70), (6, 64), (1, 6)),  # wide rows: vectorized copies
                          ((1, 4, 3), (7, 9), (3, 5))])  # padding beyond one reflection
def test_crop_flip_rows_are_windows_of_the_padded_image(mode, dtype, shape, size, padding):
    """Each output is a window of the padded image, mirrored for the flipped ones: the
    copy by runs (forward, reversed, repeated edge, fill, or column by column) agrees
    with numpy.pad for every border mode."""
    x = batch((24, *shape), dtype, seed=3)
    compose = A.Compose([A.RandomCrop(size, padding=padding, mode=mode, fill=7),
                         A.HorizontalFlip(0.5)], seed=8)
    y = compose(x)
    flipped = 0
    for a, b in zip(x, y):
        padded = pad(a, *padding, mode, fill=7)
        if b.tobytes() in windows(padded, *size):
            continue
        assert b[..., ::-1].tobytes() in windows(padded, *size), "not a (mirrored) window"
        flipped += 1
    if shape[-1] > size[1]:  # (on the tiny periodic image a mirror is a window too)
        assert 0 < flipped < len(x)


def test_crop_bigger_than_the_padded_image_raises():
    with pytest.raises(ValueError, match="larger than the padded"):
        A.RandomCrop(10, padding=1)(batch((2, 7, 7), np.uint8))  # at the call
    # at construction, wherever the input size is known
    with pytest.raises(ValueError, match="larger than the padded"):
        A.RandomCrop(10, padding=1, image_size=7)
    with pytest.raises(ValueError, match="larger than the padded"):
        A.Compose([A.RandomCrop(10, padding=1)], image_size=(7, 8))
    with pytest.raises(ValueError, match="larger than the padded"):
        A.Compose([A.RandomResizedCrop(8), A.RandomRotation(5), A.RandomCrop((9, 8))])
    with pytest.raises(ValueError, match="larger than the padded"):
        A.Compose([A.RandomCrop(6), A.RandomCrop(7)])
    model = nn.Sequential(nn.Linear(49, 2, seed=0))
    with pytest.raises(ValueError, match="larger than the padded"):
        fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model, 0.1),
                       augment=A.Compose([A.RandomCrop(10, padding=1)]), image_shape=(7, 7))
    # sizes that fit are accepted, and the crop works at the call
    ok = A.Compose([A.RandomResizedCrop(8), A.RandomCrop(9, padding=1)], image_size=(7, 7))
    assert ok(batch((2, 7, 7), np.uint8)).shape == (2, 9, 9)
    assert A.RandomCrop(9, padding=1, image_size=(7, 7)).image_size == (7, 7)


# ---------------------------------------------------------------- warp


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", PIXEL_DTYPES)
@pytest.mark.parametrize("shape", [(3, 6, 5), (2, 3, 5, 8), (2, 1, 1)])
def test_identity_warp_is_exact(mode, dtype, shape):
    x = batch(shape, dtype)
    np.testing.assert_array_equal(A.warp(x, [[1, 0, 0], [0, 1, 0]], mode=mode), x)
    # a full-image "resized crop" at the same size is the identity too
    h, w = shape[-2:]
    rrc = A.RandomResizedCrop((h, w), scale=(1, 1), ratio=(w / h, w / h))
    np.testing.assert_array_equal(A.Compose([rrc], seed=0)(x), x)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", PIXEL_DTYPES)
def test_rotation_by_90_degrees_is_rot90(mode, dtype):
    x = batch((4, 3, 9, 9), dtype)
    for deg, k in ((90, 1), (-90, -1), (180, 2)):
        y = A.Compose([A.RandomRotation((deg, deg), mode=mode)], seed=0)(x)
        np.testing.assert_array_equal(y, np.rot90(x, k, axes=(2, 3)))
    two = A.Compose([A.RandomRotation((90, 90)), A.RandomRotation((90, 90))], seed=0)
    assert len(two._stages) == 1  # fused into one warp
    np.testing.assert_array_equal(two(x), np.rot90(x, 2, axes=(2, 3)))
    # a flip between rotations joins the warp, exactly
    mixed = A.Compose([A.RandomRotation((90, 90)), A.HorizontalFlip(1.0)], seed=0)
    assert [kind for kind, _ in mixed._stages] == ["warp"]
    np.testing.assert_array_equal(mixed(x), np.rot90(x, 1, axes=(2, 3))[..., ::-1])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", PIXEL_DTYPES)
def test_integer_translation_is_a_shifted_copy(mode, dtype):
    x = batch((3, 2, 7, 8), dtype)
    for dx, dy in ((2, 0), (-3, 1), (0, -2), (9, 4)):
        y = A.warp(x, [[1, 0, -dx], [0, 1, -dy]], mode=mode, fill=7)
        padded = pad(x, 10, 10, mode, fill=7)
        expected = padded[..., 10 - dy:10 - dy + 7, 10 - dx:10 - dx + 8]
        np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("mode", MODES)
def test_random_integer_translate_gives_shifted_copies(mode):
    x = batch((30, 6, 6), np.uint8)
    y = A.Compose([A.RandomTranslate(2, integer=True, mode=mode)], seed=4)(x)
    for a, b in zip(x, y):
        assert b.tobytes() in windows(pad(a, 2, 2, mode), 6, 6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", PIXEL_DTYPES)
def test_general_warp_matches_reference(mode, dtype):
    rng = np.random.default_rng(7)
    x = batch((6, 2, 9, 11), dtype)
    mats = np.empty((6, 2, 3))
    for i in range(6):
        t = rng.uniform(-0.8, 0.8)
        s = rng.uniform(0.6, 1.5, 2)
        mats[i, :, :2] = [[s[0] * np.cos(t), -np.sin(t)], [np.sin(t), s[1] * np.cos(t)]]
        mats[i, :, 2] = rng.uniform(-4, 4, 2)
    y = A.warp(x, mats, size=(8, 12), mode=mode, fill=3)
    assert y.shape == (6, 2, 8, 12)
    for i in range(6):
        ref = reference_warp(x[i], mats[i], 8, 12, mode, 3.0)
        assert_matches_reference(y[i], ref, dtype)


def test_fused_warp_is_the_product_of_the_matrices():
    """Translate then rotate, fused, equals the reference warp of M_translate @ M_rotate."""
    x = batch((2, 9, 9), np.float32)
    compose = A.Compose([A.RandomTranslate((2, 2)), A.RandomRotation((30, 30))], seed=11)
    y = compose(x, step=0)
    key = fastnn.ops.random_key(11, 0)
    mt, _ = compose.transforms[0]._inverse(Draw(transform_key(key, 0), 2), 9, 9)
    mr, _ = compose.transforms[1]._inverse(Draw(transform_key(key, 1), 2), 9, 9)
    for i in range(2):
        m = (mt[i] @ mr[i])[:2]
        np.testing.assert_allclose(y[i], reference_warp(x[i][None], m, 9, 9, "constant", 0)[0],
                                   atol=2e-5)


def test_random_affine_matrix_is_the_torchvision_composition():
    """c + t + R S Sh (p - c) forward (R counter-clockwise on screen, rows down); its
    inverse from the same draws, built the long way."""
    aff = A.RandomAffine(20, translate=(0.1, 0.2), scale=(0.8, 1.2), shear=(-5, 5, -3, 3))
    m, size = aff._inverse(Draw(77, 50), 9, 12)
    assert size == (9, 12)
    u = Draw(77, 50)
    u.unit()  # p = 1: every image
    theta = np.deg2rad(u.uniform(-20, 20))
    shift = np.stack([u.uniform(-1.2, 1.2), u.uniform(-1.8, 1.8)], -1)
    scale = u.uniform(0.8, 1.2)
    tx, ty = np.tan(np.deg2rad(u.uniform(-5, 5))), np.tan(np.deg2rad(u.uniform(-3, 3)))
    c = np.array([5.5, 4.0])
    for i in range(50):
        rot = np.array([[np.cos(theta[i]), np.sin(theta[i])],
                        [-np.sin(theta[i]), np.cos(theta[i])]]) * scale[i]
        shear = np.array([[1, tx[i]], [0, 1]]) @ np.array([[1, 0], [ty[i], 1]])
        fwd = np.eye(3)
        fwd[:2, :2] = rot @ shear
        fwd[:2, 2] = c + shift[i] - rot @ shear @ c
        np.testing.assert_allclose(m[i], np.linalg.inv(fwd), atol=1e-12)


def test_lens_distortion_matches_reference():
    x = batch((3, 1, 10, 12), np.float32)
    y = A.Compose([A.LensDistortion((0.3, 0.3), mode="edge")], seed=0)(x)
    for i in range(3):
        ref = reference_warp(x[i], np.eye(3)[:2], 10, 12, "edge", 0, k=0.3)
        np.testing.assert_allclose(y[i], ref, atol=2e-5)
    # the center is a fixed point: barrel and pincushion keep the middle pixel
    odd = batch((2, 9, 9), np.uint8)
    for k in (0.4, -0.4):
        z = A.Compose([A.LensDistortion((k, k))], seed=0)(odd)
        np.testing.assert_array_equal(z[:, 4, 4], odd[:, 4, 4])


def kernel_field(elastic, key, i, h, w, alpha):
    """The kernel's field of image i as (2, h, w): dx, dy."""
    out = np.empty((2, h, w), np.float32)
    _k.elastic_field(out, elastic._smooth, i, key, alpha)
    return out


def noise_planes(key, i, h, w):
    """The uniform noise of image i, (2, h, w), as augment.h's fn_elastic_noise draws it:
    one hash per pixel (index x * h + y), its low 16 bits for dx, its high 16 for dy."""
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    index = np.uint64(i << 32) + (x * h + y).astype(np.uint64)
    v = hash32(index, key).astype(np.int64)
    return np.stack([(v & 0xFFFF) + 0.5, (v >> 16) + 0.5]) / 32768 - 1


# (sigma, tolerance): the largest |field - exact Gaussian-smoothed noise| allowed, as a
# fraction of the largest |exact field|; the recursive Gaussian's documented accuracy
# with some margin (the measured errors are about half of these).
FIELD_TOLERANCE = ((1.0, 0.1), (2.0, 0.04), (4.0, 0.03), (8.0, 0.02))


@pytest.mark.parametrize(("sigma", "tol"), FIELD_TOLERANCE)
@pytest.mark.parametrize(("h", "w"), [(28, 28), (17, 40), (2, 5)])
def test_elastic_field_is_gaussian_smoothed_noise(sigma, tol, h, w):
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    elastic = A.ElasticDistortion(alpha=3.0, sigma=sigma)
    worst = 0.0
    for i, key in ((0, 1), (5, 0x0123456789ABCDEF)):
        field = kernel_field(elastic, key, i, h, w, 3.0)
        noise = noise_planes(key, i, h, w)
        exact = np.stack([3.0 * scipy_ndimage.gaussian_filter(p, sigma, mode="constant",
                                                              truncate=8.0) for p in noise])
        worst = max(worst, np.abs(field - exact).max() / np.abs(exact).max())
        assert np.isfinite(field).all() and field.dtype == np.float32
    # On an image smaller than the Gaussian the field is a weighted sum of a few noise
    # values that partly cancel (zeros beyond the edges), so the filter's error, a share
    # of its impulse response, is a larger share of the field: twice the tolerance.
    assert worst < (2 * tol if min(h, w) < 2 * sigma else tol)


@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0, 1.14, 1.99])
@pytest.mark.parametrize(("h", "w"), [(28, 28), (17, 40), (2, 5), (1, 7), (6, 1)])
def test_small_sigma_field_is_scipy_gaussian_filter(sigma, h, w):
    """Below sigma 2 the Gaussian is scipy.ndimage.gaussian_filter's own (truncated at 4
    sigma, zero beyond the edges): equal up to float32 rounding, also on images shorter than
    the filter."""
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    elastic = A.ElasticDistortion(alpha=5.0, sigma=sigma)
    for i, key in ((0, 3), (9, 0xFEDCBA9876543210)):
        field = kernel_field(elastic, key, i, h, w, 5.0)
        exact = np.stack([5.0 * scipy_ndimage.gaussian_filter(p, sigma, mode="constant")
                          for p in noise_planes(key, i, h, w)])
        np.testing.assert_allclose(field, exact, rtol=0, atol=2e-5)


def test_tiny_sigma_field_is_the_scaled_noise():
    """sigma far below a pixel smooths nothing (and warns of nothing)."""
    elastic = A.ElasticDistortion(alpha=2.0, sigma=1e-300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        field = kernel_field(elastic, 11, 2, 6, 9, 2.0)
    np.testing.assert_allclose(field, 2.0 * noise_planes(11, 2, 6, 9), rtol=0, atol=1e-6)


def test_elastic_field_of_distinct_images_and_keys_differ():
    elastic = A.ElasticDistortion(alpha=1.0, sigma=2.0)
    a = kernel_field(elastic, 7, 0, 12, 12, 1.0)
    assert not np.array_equal(a, kernel_field(elastic, 7, 1, 12, 12, 1.0))
    assert not np.array_equal(a, kernel_field(elastic, 8, 0, 12, 12, 1.0))
    np.testing.assert_array_equal(2 * a, kernel_field(elastic, 7, 0, 12, 12, 2.0))


def test_elastic_distortion_matches_reference():
    x = batch((3, 2, 12, 10), np.float32)
    elastic = A.ElasticDistortion(alpha=8, sigma=2, mode="reflect")
    compose = A.Compose([elastic], seed=9)
    y = compose(x, step=3)
    noise = noise_key(fastnn.ops.random_key(9, 3), 0)
    moved = 0
    for i in range(3):
        field = kernel_field(elastic, noise, i, 12, 10, 8.0)
        moved += np.abs(field).mean()
        ref = reference_warp(x[i], np.eye(3)[:2], 12, 10, "reflect", 0, field=field)
        np.testing.assert_allclose(y[i], ref, atol=1e-4)
    assert moved > 0.1
    # alpha 0 (or p 0) leaves the image as it is
    np.testing.assert_array_equal(A.Compose([A.ElasticDistortion(0, 2)], seed=0)(x), x)
    np.testing.assert_array_equal(A.Compose([A.ElasticDistortion(5, 2, p=0)], seed=0)(x), x)


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_fused_affine_lens_elastic_on_a_large_image_matches_reference(mode):
    """With a field the coordinates are computed in float32: on a 150 x 230 image (far
    coordinates) the warp still matches the float64 reference of the same map and field
    to 1e-4 of the pixel range (about 3e-5 measured)."""
    x = batch((2, 3, 150, 230), np.float32)
    compose = A.Compose([A.RandomAffine(20, translate=(0.1, 0.1), scale=(0.8, 1.2), shear=8,
                                        mode=mode),
                         A.LensDistortion((0.2, 0.2), mode=mode),
                         A.ElasticDistortion(alpha=20, sigma=6, mode=mode)], seed=4)
    y = compose(x, step=1)
    key = fastnn.ops.random_key(4, 1)
    m, _ = compose.transforms[0]._inverse(Draw(transform_key(key, 0), 2), 150, 230)
    noise = noise_key(key, 2)
    for i in range(2):
        field = kernel_field(compose.transforms[2], noise, i, 150, 230, 20.0)
        ref = reference_warp(x[i], m[i][:2], 150, 230, mode, 0, field=field, k=0.2)
        np.testing.assert_allclose(y[i], ref, atol=1e-4)


def test_resized_crop_windows_and_output_size():
    x = batch((40, 3, 20, 30), np.float32)
    y = A.Compose([A.RandomResizedCrop((16, 16), scale=(0.2, 0.6))], seed=1)(x)
    assert y.shape == (40, 3, 16, 16)
    assert np.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    top, left, ch, cw = A.RandomResizedCrop((16, 16), scale=(0.2, 0.6))._window(
        Draw(123, 500), 20, 30)
    area = ch * cw / 600
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + ch <= 20).all() and (left + cw <= 30).all()
    assert area.min() > 0.15 and area.max() < 0.65
    ratio = cw / ch
    assert ratio.min() > 0.7 and ratio.max() < 1.45


@pytest.mark.parametrize("dtype", PIXEL_DTYPES)
def test_resized_crop_antialias_is_the_area_mean_for_whole_factors(
        dtype, assert_thread_independent):
    x = batch((5, 2, 32, 24), dtype)
    whole = A.Compose([A.RandomResizedCrop((8, 6), scale=(1, 1), ratio=(0.75, 0.75))], seed=0)
    y = whole(x)
    mean = x.astype(np.float64).reshape(5, 2, 8, 4, 6, 4).mean((3, 5))
    assert_matches_reference(y, mean, dtype)
    assert_thread_independent(lambda: whole(x, step=0))
    # without antialiasing: one bilinear read per pixel, at the window's pixel centers
    plain = A.Compose([A.RandomResizedCrop((8, 6), scale=(1, 1), ratio=(0.75, 0.75),
                                           antialias=False)], seed=0)(x)
    m = np.array([[4.0, 0, 1.5], [0, 4.0, 1.5]])
    for i in range(5):
        assert_matches_reference(plain[i], reference_warp(x[i], m, 8, 6, "edge", 0), dtype)


def test_resized_crop_antialias_smooths_a_shrunk_noise():
    x = batch((20, 60, 60), np.float32)
    rrc = {aa: A.Compose([A.RandomResizedCrop(11, scale=(0.6, 1.0), antialias=aa)], seed=3)
           for aa in (True, False)}
    smooth, sharp = rrc[True](x), rrc[False](x)
    assert smooth.std() < 0.6 * sharp.std()
    assert abs(smooth.mean() - x.mean()) < 0.01 and smooth.min() >= 0 and smooth.max() <= 1
    # enlarging is never antialiased: the same with and without
    up = {aa: A.Compose([A.RandomResizedCrop(70, scale=(0.5, 0.9), antialias=aa)], seed=3)(x)
          for aa in (True, False)}
    np.testing.assert_array_equal(up[True], up[False])


# ---------------------------------------------------------------- whole pipelines


def full_pipeline(seed=0):
    return A.Compose([
        A.RandomCrop(20, padding=2, mode="reflect"),
        A.HorizontalFlip(0.5),
        A.RandomAffine(15, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=10),
        A.RandomStretch((0.9, 1.2)),
        A.RandomShear((-5, 5, -5, 5)),
        A.LensDistortion(0.2),
        A.ElasticDistortion(alpha=6, sigma=3),
        A.RandomResizedCrop(18, scale=(0.5, 1.0)),
    ], seed=seed)


@pytest.mark.parametrize("n", [1, 3, 64])
def test_same_result_for_any_thread_count(n, assert_thread_independent):
    x8 = batch((n, 3, 20, 20), np.uint8)
    xf = batch((n, 20, 20), np.float32)
    pipeline = full_pipeline(seed=42)
    assert_thread_independent(lambda: (pipeline(x8, step=5), pipeline(xf, step=5)))


def test_seed_and_step_decide_the_batch():
    x = batch((8, 20, 20), np.float32)
    a, b = full_pipeline(seed=1), full_pipeline(seed=1)
    first, second = a(x), a(x)
    assert a.step == 2
    np.testing.assert_array_equal(first, b(x))
    np.testing.assert_array_equal(second, b(x))
    np.testing.assert_array_equal(second, a(x, step=1))
    assert a.step == 2
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, full_pipeline(seed=2)(x, step=0))
    assert isinstance(A.Compose([]).seed, int)


@pytest.mark.parametrize("dtype", PIXEL_DTYPES)
@pytest.mark.parametrize("shape", [(16, 20, 20), (16, 3, 20, 20)])
def test_dtype_layout_and_range_preserved(dtype, shape):
    x = batch(shape, dtype)
    keep = x.copy()
    y = full_pipeline()(x)
    assert y.dtype == x.dtype
    assert y.shape == (*shape[:-2], 18, 18)
    np.testing.assert_array_equal(x, keep)
    if y.dtype == np.float32:
        assert np.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    assert y.std() > 0
    same = A.Compose([A.RandomRotation(20), A.ElasticDistortion(4, 2),
                      A.LensDistortion(0.1)], seed=0)
    z = same(x)
    assert z.shape == x.shape and z.dtype == x.dtype
    assert not np.array_equal(z, x)
    if z.dtype == np.float32:
        assert np.isfinite(z).all() and 0 <= z.min() and z.max() <= 1


def test_out_may_be_the_input_itself():
    x = batch((5, 8, 8), np.float32)
    expected = A.Compose([A.RandomRotation(30)], seed=3)(x)
    out = A.Compose([A.RandomRotation(30)], seed=3)(x, out=x)
    assert out is x
    np.testing.assert_array_equal(x, expected)
    with pytest.raises(ValueError, match="shape"):
        A.Compose([A.RandomRotation(3)], seed=0)(x, out=np.empty((5, 8, 9), np.float32))
    with pytest.raises(TypeError):
        A.Compose([A.RandomRotation(3)], seed=0)(x, out=np.empty((5, 8, 8), np.uint8))


def test_results_of_successive_calls_are_distinct_arrays():
    """Intermediate stages reuse their buffers; what a call returns is never reused."""
    x = batch((6, 3, 10, 10), np.uint8)
    compose = A.Compose([A.RandomCrop(8, padding=1), A.RandomRotation(20),
                         A.RandomCrop(6)], seed=1)
    first = compose(x)
    keep = first.copy()
    second = compose(x)
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, keep)
    np.testing.assert_array_equal(first, A.Compose(compose.transforms, seed=1)(x, step=0))
    out = np.empty_like(second)
    assert compose(x, step=1, out=out) is out
    np.testing.assert_array_equal(out, second)


def test_non_contiguous_input_is_copied_once():
    x = batch((4, 10, 12), np.uint8)[:, :, ::2]
    np.testing.assert_array_equal(A.HorizontalFlip(1.0)(x), x[..., ::-1])


def test_fusion_plan():
    stages = plan([A.RandomCrop(4), A.HorizontalFlip(), A.RandomRotation(5),
                   A.HorizontalFlip(), A.RandomTranslate(1), A.LensDistortion(0.1),
                   A.ElasticDistortion(1, 1), A.RandomRotation(5),
                   A.RandomRotation(5, mode="edge")])
    kinds = [(kind, [type(t).__name__ for _, t in members]) for kind, members in stages]
    assert kinds == [
        ("copy", ["RandomCrop", "HorizontalFlip"]),
        ("warp", ["RandomRotation", "HorizontalFlip", "RandomTranslate", "LensDistortion",
                  "ElasticDistortion"]),
        ("warp", ["RandomRotation"]),
        ("warp", ["RandomRotation"]),
    ]


# ---------------------------------------------------------------- integration


def test_trainer_applies_augmentation_to_flat_images():
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (64, 36)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    seen = []

    class Spy(A.Compose):
        def __call__(self, images, out=None, step=None):
            seen.append(images.shape)
            return super().__call__(images, out=out, step=step)

    aug = Spy([A.RandomRotation(10), A.ElasticDistortion(2, 1)], seed=0)
    model = nn.Sequential(nn.Linear(36, 8, seed=0), nn.ReLU(), nn.Linear(8, 3, seed=1))
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model, 0.1),
                             augment=aug, image_shape=(6, 6), progress=False)
    history = trainer.fit(X, y, epochs=2, batch_size=16, seed=0)
    assert len(history["loss"]) == 2 and np.isfinite(history["loss"]).all()
    assert seen == [(16, 6, 6)] * 8
    assert aug.step == 8


def _png(path):
    """(H, W, 4) float RGBA in [0, 1] of a PNG, read by matplotlib."""
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path)


def test_preview_size_and_exact_originals(tmp_path):
    """Layout of preview's docstring: 6 images of 10x12 whose copies are 18x18, 4 pairs
    a row, size 64 -> zoom 64 // 18 = 3; the originals drawn pixel for pixel."""
    pytest.importorskip("matplotlib")
    x = batch((6, 3, 10, 12), np.uint8)
    pipeline = A.Compose([A.RandomRotation(20), A.RandomResizedCrop(18)], seed=0)
    path = A.preview(x, tmp_path / "grid.png", transform=pipeline, columns=4, size=64)
    assert path == tmp_path / "grid.png"
    png = _png(path)
    pair = 12 * 3 + 4 + 18 * 3
    assert png.shape == (2 * 8 + 24 + 2 * 54 + 8, 2 * 8 + 4 * pair + 3 * 16, 4)
    for i in range(6):
        r, q = divmod(i, 4)
        top, left = 8 + 24 + r * (54 + 8), 8 + q * (pair + 16)
        drawn = png[top:top + 30, left:left + 36, :3]
        expected = np.kron(x[i].transpose(1, 2, 0), np.ones((3, 3, 1))) / 255
        np.testing.assert_allclose(drawn, expected, atol=0.5 / 255)
        copy = png[top:top + 54, left + 40:left + 40 + 54, :3]
        assert not np.allclose(copy[::3, ::3], drawn[::3, ::3].mean())  # an image, not fill


def test_preview_gray_floats_labels_and_identity(tmp_path):
    """Floats on one scale for originals and copies: a transform that changes nothing
    draws the copy exactly as the original. Labels widen each pair."""
    pytest.importorskip("matplotlib")
    x = batch((3, 8, 8), np.float32) * 3 - 1  # values in [-1, 2]
    path = A.preview(x, tmp_path / "g.png", transform=A.RandomTranslate(0), n=2,
                     labels=["seven", 1], size=40)
    png = _png(path)
    label_w = 8 + 7 * 5
    pair = label_w + 40 + 4 + 40
    assert png.shape == (2 * 8 + 24 + 40, 2 * 8 + 2 * pair + 16, 4)
    lo, hi = x[:2].min(), x[:2].max()
    for i in range(2):
        left = 8 + i * (pair + 16) + label_w
        original = png[32:72, left:left + 40]
        copy = png[32:72, left + 44:left + 84]
        np.testing.assert_array_equal(original, copy)
        assert np.ptp(original[..., 0]) > 0.5 and (original[..., 0] == original[..., 2]).all()
        expected = np.round((x[i].astype(np.float64) - lo) / (hi - lo) * 255) / 255
        np.testing.assert_allclose(original[::5, ::5, 0], expected, atol=0.5 / 255)
    header = png[8:32, 8 + label_w:8 + label_w + 40, :3]
    assert header.min() < 0.5  # "original" written in dark text on white


def test_preview_bad_arguments(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    x = batch((3, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="labels"):
        A.preview(x, tmp_path / "p.png", labels=["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        A.preview(x[:0], tmp_path / "p.png")
    for bad in ({"size": 0}, {"n": 0}, {"columns": -1}):
        with pytest.raises(ValueError):
            A.preview(x, tmp_path / "p.png", **bad)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"fastnn\[plot\]"):
        A.preview(x, tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("make", [
    lambda: A.HorizontalFlip(p=1.5),
    lambda: A.HorizontalFlip(p=-0.1),
    lambda: A.RandomRotation(10, p=2),
    lambda: A.ElasticDistortion(alpha=1, sigma=0),
    lambda: A.ElasticDistortion(alpha=1, sigma=-2),
    lambda: A.ElasticDistortion(alpha=-1, sigma=2),
    lambda: A.RandomCrop(0),
    lambda: A.RandomCrop(4, padding=-1),
    lambda: A.RandomCrop(4, mode="wrap"),
    lambda: A.RandomRotation((10, -10)),
    lambda: A.RandomRotation(-5),
    lambda: A.RandomRotation(float("nan")),
    lambda: A.RandomStretch((0, 1.2)),
    lambda: A.RandomShear(95),
    lambda: A.RandomTranslate(-1),
    lambda: A.RandomAffine(5, translate=(0.1, 1.5)),
    lambda: A.RandomAffine(5, scale=(-1, 1)),
    lambda: A.RandomResizedCrop(8, scale=(0.0, 1.0)),
    lambda: A.RandomResizedCrop(8, scale=(0.5, 1.5)),
    lambda: A.RandomResizedCrop(8, ratio=(2, 1)),
    lambda: A.LensDistortion((-1.5, 0.2)),
    lambda: A.Compose([A.HorizontalFlip()], seed=-1),
])
def test_bad_parameters_raise_at_construction(make):
    with pytest.raises(ValueError):
        make()


def test_bad_images():
    flip = A.HorizontalFlip()
    with pytest.raises(TypeError, match="uint8 or float32"):
        flip(np.zeros((2, 4, 4)))
    with pytest.raises(TypeError, match="ndarray"):
        flip([[[0]]])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        flip(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="height and width"):
        flip(np.zeros((2, 0, 4), np.uint8))
    with pytest.raises(TypeError, match="transforms"):
        A.Compose([lambda x: x])
    with pytest.raises(ValueError, match="matrices"):
        A.warp(np.zeros((2, 4, 4), np.uint8), np.zeros((3, 2, 3)))
    empty = A.Compose([A.RandomRotation(5)], seed=0)(np.zeros((0, 4, 4), np.uint8))
    assert empty.shape == (0, 4, 4)
