"""preview: a PNG of images beside their augmented copies, drawn with matplotlib."""

import numpy as np

from .._checks import POSITIVE, check_int
from ._affine import RandomAffine
from ._batch import check_images
from ._compose import Compose

# The layout, in pixels (see preview's docstring).
MARGIN, HEADER, GAP, PAIR_GAP, ROW_GAP = 8, 24, 4, 16, 8
LABEL_CHAR, LABEL_PAD = 7, 8  # room for row labels: LABEL_CHAR a character, plus LABEL_PAD
DPI = 128  # a power of two: the pixel sizes, divided by it into inches, stay exact
FONT_SIZE = 8  # points: 14 pixels at DPI


def _to_u8(a, b):
    """Both batches as (n, h, w) or (n, h, w, 3) uint8 for display, on one scale: uint8
    values as they are, floats mapped from the smallest to the largest finite value
    of the two batches onto 0..255 (so the copies are shown as their originals are)."""

    def layout(batch):
        if batch.ndim == 4:
            return batch.transpose(0, 2, 3, 1) if batch.shape[1] == 3 else batch[:, 0]
        return batch

    a, b = layout(a), layout(b)
    if a.dtype == np.uint8:
        return a, b
    finite = [v[np.isfinite(v)] for v in (a, b)]
    values = np.concatenate([v.ravel() for v in finite])
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0

    def u8(v):
        v = np.nan_to_num(v.astype(np.float64), nan=lo, posinf=hi, neginf=lo)
        return np.clip(np.round((v - lo) * scale), 0, 255).astype(np.uint8)

    return u8(a), u8(b)


def preview(images, path, transform=None, n=16, columns=4, step=0, labels=None, size=128):
    """Write a PNG of the first `n` images, each original beside its augmented copy,
    under the column headers "original" and "augmented"; returns the path. Needs
    matplotlib (pip install 'fastnn[plot]').

    images: (N, H, W) or (N, C, H, W), uint8 or float32; 3-channel images are shown in
    color, other multi-channel ones by channel 0. transform: a Transform or Compose
    (default: a mild RandomAffine); a Compose is run with step=`step`, leaving its
    counter as it was. labels: one text per image (e.g. its class), written left of
    its pair. An original and its copy are shown on one gray scale (uint8 as they are;
    floats from the smallest to the largest value of both batches), each image pixel
    as a zoom x zoom block of PNG pixels, zoom = max(1, size // the largest side of
    the images and copies), with no resampling: the drawn originals are exact.

    Layout, in pixels: `columns` pairs a row (fewer if there are fewer images), each
    pair L + w_o + GAP + w_a wide (w_o, w_a: the original's and the copy's zoomed
    widths; L = LABEL_PAD + LABEL_CHAR * the longest label, 0 without labels), pairs
    PAIR_GAP apart; rows h high (the larger zoomed height), ROW_GAP apart; a MARGIN
    all round and the HEADER above the first row. The PNG is
    2 MARGIN + cols * pair + (cols - 1) PAIR_GAP wide and
    2 MARGIN + HEADER + rows * h + (rows - 1) ROW_GAP high.
    """
    n = check_int(n, "n", POSITIVE)
    columns = check_int(columns, "columns", POSITIVE)
    size = check_int(size, "size", POSITIVE)
    x = check_images(images)[:n]
    count = len(x)
    if count == 0:
        raise ValueError("images: the batch is empty")
    if labels is not None:
        labels = [str(v) for v in labels]
        if len(labels) != count:
            raise ValueError(f"labels: expected one per image shown ({count}), got "
                             f"{len(labels)}")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("augment.preview needs matplotlib: pip install 'fastnn[plot]'") from exc
    if transform is None:
        transform = Compose([RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1))], seed=0)
    augmented = transform(x, step=step) if isinstance(transform, Compose) else transform(x)
    a, b = _to_u8(x, augmented)

    zoom = max(1, size // max(*a.shape[1:3], *b.shape[1:3]))
    (ha, wa), (hb, wb) = ((int(v.shape[1]) * zoom, int(v.shape[2]) * zoom) for v in (a, b))
    h = max(ha, hb)
    label_w = LABEL_PAD + LABEL_CHAR * max(map(len, labels)) if labels else 0
    pair = label_w + wa + GAP + wb
    cols = min(columns, count)
    rows = -(-count // cols)
    width = 2 * MARGIN + cols * pair + (cols - 1) * PAIR_GAP
    height = 2 * MARGIN + HEADER + rows * h + (rows - 1) * ROW_GAP

    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)

    def text(px, py, s, **kw):  # (px, py): pixels from the top left
        fig.text(px / width, 1 - py / height, s, fontsize=FONT_SIZE, va="center", **kw)

    def draw(image, px, py):
        if image.ndim == 2:  # gray as RGB: drawn as it is, with no color map in between
            image = np.repeat(image[:, :, None], 3, axis=2)
        block = np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)
        fig.figimage(block, xo=px, yo=height - py - block.shape[0], origin="upper")

    for i in range(count):
        r, q = divmod(i, cols)
        left, top = MARGIN + q * (pair + PAIR_GAP) + label_w, MARGIN + HEADER + r * (h + ROW_GAP)
        draw(a[i], left, top)
        draw(b[i], left + wa + GAP, top)
        if r == 0:
            text(left + wa / 2, MARGIN + HEADER / 2, "original", ha="center")
            text(left + wa + GAP + wb / 2, MARGIN + HEADER / 2, "augmented", ha="center")
        if labels:
            text(left - LABEL_PAD / 2, top + h / 2, labels[i], ha="right")
    fig.savefig(path, dpi=DPI, format="png")
    return path
