"""preview: a PNG grid of images beside their augmented copies, written without
dependencies."""

import struct
import zlib

import numpy as np

from .._checks import POSITIVE, check_int
from ._affine import RandomAffine
from ._batch import check_images
from ._compose import Compose


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
    n = check_int(n, "n", POSITIVE)
    columns = check_int(columns, "columns", POSITIVE)
    x = check_images(images)[:n]
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
