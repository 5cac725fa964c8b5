"""Benchmark fastnn.augment against the same augmentation done per image with SciPy.

    python bench/bench_augment.py [--quick] [--threads 1,2] [--json PATH]
                                  [--accuracy-epochs E] [--no-accuracy]

Batches: 256 MNIST-sized images (256 x 28 x 28, float32) and 64 ImageNet-sized
images (64 x 3 x 224 x 224, uint8). Pipelines:

- crop+flip: RandomCrop(size, padding) with reflect padding, HorizontalFlip(0.5).
  NumPy: np.pad + a slice (+ a reversed slice) per image.
- affine: RandomAffine(15, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=10), bilinear.
  SciPy: scipy.ndimage.affine_transform(order=1) per image (one call on the (C, H, W)
  image with the identity on the channel axis).
- elastic: ElasticDistortion(alpha=34, sigma=4) (Simard et al.). SciPy: per image two
  uniform noise fields, scipy.ndimage.gaussian_filter each, map_coordinates(order=1).
- affine+elastic: both, fused in one warp by fastnn; two SciPy passes per image.

The baselines draw their parameters with NumPy's Generator, as a typical training
script does. Each case is timed with the method of bench/_common.py at 1 thread and
at all usable CPUs (the SciPy baseline is single-threaded either way). ratio: SciPy
time / fastnn time; above 1, fastnn is faster.

Then the epoch cost of the command line's two training pipelines (`fastnn train
--augment affine|elastic`): the time to augment one MNIST epoch (60000 images in
batches of 128) alone, and the extra time of Trainer.fit with it, against one training
epoch of a 784-512-512-10 ReLU MLP (Adam, batch 128) without augmentation, at all
usable CPUs, medians of 3. Last, the test accuracy of that MLP trained with no, affine
and elastic augmentation for the same number of epochs: on MNIST when
fastnn.datasets.load_mnist() finds it ($FASTNN_MNIST_DIR), else on scikit-learn's 8x8
digits (as a stand-in, said so).
"""

from __future__ import annotations

from time import perf_counter

import numpy as np
import scipy.ndimage as ndi
from _common import (
    Config,
    Slot,
    Table,
    base_parser,
    fastnn,
    finish,
    header,
    measure,
    noise_note,
    parse_threads,
    print_targets,
)

from fastnn import augment as A
from fastnn import datasets, losses, nn, optim

FULL = Config(0.05, 7, 9, 3, 120.0)
QUICK = Config(0.02, 3, 5, 1, 0.0)
RATIO_TARGET = 10.0
EPOCH_SHARE_TARGET = 0.10
BATCHES = {"mnist 256x28x28 f32": ((256, 28, 28), np.float32),
           "imagenet 64x3x224x224 u8": ((64, 3, 224, 224), np.uint8)}
PIPELINES = ["crop+flip", "affine", "elastic", "affine+elastic"]


# ---------------------------------------------------------------- fastnn pipelines


def fastnn_pipeline(name, h, w, seed=0):
    pad = max(2, h // 16)
    parts = {
        "crop+flip": [A.RandomCrop((h, w), padding=pad, mode="reflect"), A.HorizontalFlip(0.5)],
        "affine": [A.RandomAffine(15, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=10)],
        "elastic": [A.ElasticDistortion(alpha=34, sigma=4)],
    }
    parts["affine+elastic"] = parts["affine"] + parts["elastic"]
    return A.Compose(parts[name], seed=seed)


# ---------------------------------------------------------------- SciPy baselines


def _affine_matrix(rng, h, w):
    """The (row, col) output -> input matrix and offset of a random affine map."""
    theta = np.deg2rad(rng.uniform(-15, 15))
    s = rng.uniform(0.9, 1.1)
    shear = np.tan(np.deg2rad(rng.uniform(-10, 10)))
    t = np.array([rng.uniform(-0.1, 0.1) * h, rng.uniform(-0.1, 0.1) * w])
    c, sn = np.cos(theta), np.sin(theta)
    rot = np.array([[c, sn], [-sn, c]])  # (row, col) coordinates
    lin = np.array([[1, 0], [-shear, 1]]) @ rot / s
    center = np.array([(h - 1) / 2, (w - 1) / 2])
    return lin, center - lin @ (center + t)


def scipy_affine(x, rng):
    out = np.empty_like(x)
    h, w = x.shape[-2:]
    for i in range(len(x)):
        lin, off = _affine_matrix(rng, h, w)
        if x.ndim == 4:
            m = np.eye(3)
            m[1:, 1:] = lin
            ndi.affine_transform(x[i], m, offset=(0, *off), order=1, output=out[i],
                                 mode="constant")
        else:
            ndi.affine_transform(x[i], lin, offset=off, order=1, output=out[i], mode="constant")
    return out


def scipy_elastic(x, rng, alpha=34.0, sigma=4.0):
    out = np.empty_like(x)
    h, w = x.shape[-2:]
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(len(x)):
        dy = ndi.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma, mode="nearest") * alpha
        dx = ndi.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma, mode="nearest") * alpha
        coords = [rows + dy, cols + dx]
        if x.ndim == 4:
            for ch in range(x.shape[1]):
                ndi.map_coordinates(x[i, ch], coords, order=1, output=out[i, ch],
                                    mode="constant")
        else:
            ndi.map_coordinates(x[i], coords, order=1, output=out[i], mode="constant")
    return out


def numpy_crop_flip(x, rng):
    h, w = x.shape[-2:]
    pad = max(2, h // 16)
    width = [(0, 0)] * (x.ndim - 3) + [(pad, pad), (pad, pad)]
    out = np.empty_like(x)
    for i in range(len(x)):
        p = np.pad(x[i], width, mode="reflect")
        oy, ox = rng.integers(0, 2 * pad + 1, 2)
        crop = p[..., oy:oy + h, ox:ox + w]
        out[i] = crop[..., ::-1] if rng.random() < 0.5 else crop
    return out


def baseline(name):
    if name == "crop+flip":
        return numpy_crop_flip
    if name == "affine":
        return scipy_affine
    if name == "elastic":
        return scipy_elastic
    return lambda x, rng: scipy_elastic(scipy_affine(x, rng), rng)


# ---------------------------------------------------------------- parts


def speed(threads, cfg, report):
    table = Table([("batch", 24, "batch", ""), ("pipeline", 14, "pipeline", ""),
                   ("threads", 7, "threads", "d"), ("fastnn ms", 10, "fastnn_ms", ".2f"),
                   ("scipy ms", 10, "scipy_ms", ".1f"), ("ratio", 7, "ratio", ".1f"),
                   ("note", 10, "note", "")])
    print("\n== augmentation of one batch")
    table.header()
    rows = []
    for label, (shape, dtype) in BATCHES.items():
        rng = np.random.default_rng(0)
        x = (rng.integers(0, 256, shape).astype(np.uint8) if dtype == np.uint8
             else rng.uniform(0, 1, shape).astype(np.float32))
        for name in PIPELINES:
            pipe = fastnn_pipeline(name, *shape[-2:])
            base = baseline(name)
            base_rng = np.random.default_rng(1)
            for n in threads:
                timing = measure([Slot(lambda p=pipe, x=x: p(x), n),
                                  Slot(lambda b=base, x=x, r=base_rng: b(x, r), 1)], cfg)
                fast, slow = timing.medians
                row = {"batch": label, "pipeline": name, "threads": n,
                       "fastnn_ms": fast * 1e3, "scipy_ms": slow * 1e3, "ratio": slow / fast,
                       "note": noise_note(timing)}
                table.add(row)
                rows.append(row)
    report["rows"] += rows
    return rows


def mlp(seed=0, d=784, k=10):
    return nn.Sequential(nn.Linear(d, 512, seed=seed), nn.ReLU(),
                         nn.Linear(512, 512, seed=seed + 1), nn.ReLU(),
                         nn.Linear(512, k, init="xavier", seed=seed + 2))


def trainer(model, augment=None, image_shape=None):
    return fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.Adam(model, 1e-3),
                          augment=augment, image_shape=image_shape, progress=False)


def train_pipeline(name, side=28, seed=0):
    """The command line's `fastnn train --augment affine|elastic` pipelines (elastic:
    the affine one, then the elastic distortion)."""
    steps = [A.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=5)]
    if name == "elastic":
        steps.append(A.ElasticDistortion(alpha=34 * side / 28, sigma=4 * side / 28))
    return A.Compose(steps, seed=seed)


def _fit_seconds(X, y, augment, batch):
    t = trainer(mlp(), augment=augment, image_shape=(28, 28))
    t.fit(X[:2048], y[:2048], epochs=1, batch_size=batch, seed=0)  # warm-up
    start = perf_counter()
    t.fit(X, y, epochs=1, batch_size=batch, seed=0)
    return perf_counter() - start


def epoch_cost(n_samples, report, batch=128, repeats=3):
    """Per pipeline: seconds to augment n_samples MNIST images in training batches,
    alone and as the extra time of Trainer.fit, against one training epoch on them."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (n_samples, 784)).astype(np.float32)
    y = rng.integers(0, 10, n_samples)
    images = X.reshape(-1, 28, 28)
    print(f"\n== epoch cost ({n_samples} MNIST-sized samples, batch {batch}, "
          f"{fastnn.get_num_threads()} threads; medians of {repeats}; 784-512-512-10 MLP, Adam)")
    table = Table([("pipeline", 14, "pipeline", ""), ("augment s", 10, "augment_s", ".3f"),
                   ("train s", 8, "train_s", ".3f"), ("share", 7, "share_pct", ".1f"),
                   ("fit+aug s", 10, "fit_aug_s", ".3f"), ("extra", 7, "extra_pct", ".1f")])
    table.header()
    plain = []
    rows = {}
    for _ in range(repeats):
        plain.append(_fit_seconds(X, y, None, batch))
        for name in ("affine", "elastic"):
            pipe = train_pipeline(name)
            pipe(images[:batch])
            start = perf_counter()
            for lo in range(0, n_samples, batch):
                pipe(images[lo:lo + batch])
            alone = perf_counter() - start
            fit = _fit_seconds(X, y, train_pipeline(name), batch)
            rows.setdefault(name, []).append((alone, fit))
    train_s = float(np.median(plain))
    result = {}
    for name, runs in rows.items():
        alone = float(np.median([a for a, _ in runs]))
        fit = float(np.median([f for _, f in runs]))
        row = {"pipeline": name, "augment_s": alone, "train_s": train_s,
               "share_pct": 100 * alone / train_s, "fit_aug_s": fit,
               "extra_pct": 100 * (fit - train_s) / train_s}
        table.add(row)
        result[name] = row
    print("  share: augmenting alone / the epoch without augmentation; extra: (fit with "
          "augmentation - fit without) / fit without")
    report["epoch_cost"] = {"samples": n_samples, "batch": batch, "rows": result}
    return {name: r["share_pct"] / 100 for name, r in result.items()}


def accuracy(epochs, report):
    try:
        (xtr, ytr), (xte, yte) = datasets.load_mnist()
        source, side = "MNIST", 28
        xtr = xtr.reshape(len(xtr), -1).astype(np.float32) / 255
        xte = xte.reshape(len(xte), -1).astype(np.float32) / 255
    except (FileNotFoundError, OSError, ValueError):
        from sklearn.model_selection import train_test_split

        X, y = datasets.load_digits()
        X = (X / 16).astype(np.float32)
        xtr, xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
        source, side = "scikit-learn 8x8 digits (MNIST not found)", 8
    results = {}
    print(f"\n== test accuracy, {source}, {xtr.shape[1]}-512-512-10 MLP, "
          f"Adam 1e-3, batch 128, {epochs} epochs (fastnn train --augment none|affine|elastic)")
    for name in ("none", "affine", "elastic"):
        aug = None if name == "none" else train_pipeline(name, side)
        t = trainer(mlp(d=xtr.shape[1]), augment=aug, image_shape=(side, side))
        start = perf_counter()
        t.fit(xtr, ytr, epochs=epochs, batch_size=128, seed=0)
        seconds = perf_counter() - start
        results[name] = float((t.predict(xte) == yte).mean())
        print(f"  {name:8s} {results[name]:.4f}   ({seconds:.1f} s)")
    report["accuracy"] = {"data": source, "epochs": epochs, **results}


def targets(rows, shares):
    results = []
    for label in BATCHES:
        best = {}  # per pipeline, the ratio at its best thread count
        for r in rows:
            if r["batch"] == label:
                best[r["pipeline"]] = max(best.get(r["pipeline"], 0), r["ratio"])
        if best:
            worst = min(best, key=best.get)
            results.append({"target": f"every pipeline >= {RATIO_TARGET:.0f}x its baseline, "
                                      f"{label}",
                            "met": best[worst] >= RATIO_TARGET,
                            "detail": f"lowest: {worst} {best[worst]:.1f}x"})
    for name, share in shares.items():
        results.append({"target": f"augmenting an epoch ({name}) < "
                                  f"{100 * EPOCH_SHARE_TARGET:.0f}% of training it",
                        "met": share < EPOCH_SHARE_TARGET, "detail": f"{100 * share:.1f}%"})
    return print_targets(results)


def main(argv=None):
    parser = base_parser(__doc__.splitlines()[0],
                         "fewer repeats, 10000 samples for the epoch cost, 2 accuracy epochs")
    parser.add_argument("--accuracy-epochs", type=int, default=None)
    parser.add_argument("--no-accuracy", action="store_true")
    args = parse_threads(parser, parser.parse_args(argv))
    cfg = QUICK if args.quick else FULL
    started = perf_counter()
    legend = ["ratio = SciPy time / fastnn time (> 1: fastnn faster); SciPy runs on 1 thread"]
    info = header("fastnn augmentation benchmark", args.threads, cfg, args.quick,
                  legend_lines=legend)
    report = {"header": info, "rows": []}
    rows = speed(args.threads, cfg, report)
    with fastnn.threads(max(args.threads)):
        shares = epoch_cost(10000 if args.quick else 60000, report,
                            repeats=1 if args.quick else 3)
        if not args.no_accuracy:
            epochs = args.accuracy_epochs or (2 if args.quick else 5)
            accuracy(epochs, report)
    report["targets"] = targets(rows, shares)
    finish(report, report["rows"], started, args.json)


if __name__ == "__main__":
    main()
