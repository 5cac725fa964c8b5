"""The fastnn command line.

    fastnn train [options]        train an MLP, a CNN or a small ResNet (--model) on MNIST
                                  (--data DIR or $FASTNN_MNIST_DIR) or on scikit-learn's
                                  bundled 8x8 digits
    fastnn evaluate MODEL         test accuracy of a saved model
    fastnn predict MODEL [--input X.npy] [--proba] [--output FILE.npy|FILE.csv]
    fastnn export MODEL --onnx OUT.onnx
                                  the model as an ONNX graph (pip install 'fastnn[onnx]')
    fastnn config                 how this fastnn was built and will run

`python -m fastnn ...` is the same. Under an MPI launcher (`mpiexec -n 4 python -m
fastnn train ...`), training is data parallel over the ranks (pip install
'fastnn[mpi]'); rank 0 prints and saves. Without a launcher, mpi4py is not imported.
"""

import argparse
import math
import os
import sys
import time

import numpy as np

import fastnn
from fastnn import augment, datasets, distributed, losses, nn, optim

_SCHEDULES = ("none", "step", "exponential", "inverse-time", "cosine", "warmup-cosine",
              "plateau")


class UsageError(Exception):
    """A bad argument: reported with the usage line, without a traceback."""


class Interrupted(Exception):
    """Ctrl-C during training, after the model trained so far was saved: the message says
    where; the exit status is INTERRUPTED."""


#: The exit status after Ctrl-C (128 + SIGINT), as a shell reports it.
INTERRUPTED = 130


def load_data(data, seed=0):
    """(name, scale, (x_train, y_train), (x_test, y_test)), images as flat float32 rows
    in [0, 1]: MNIST from `data` or $FASTNN_MNIST_DIR, else the bundled digits."""
    folder = datasets.find_mnist(data)
    if folder is not None:
        try:
            (xtr, ytr), (xte, yte) = datasets.load_mnist(folder)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot load MNIST from {folder}: {exc}") from exc
        name, scale = f"MNIST ({folder})", 255.0
    else:
        try:
            x, y = datasets.load_digits()
        except ImportError as exc:
            raise UsageError(f"{exc} (or give --data DIR with the MNIST files)") from exc
        order = np.random.default_rng(seed).permutation(len(x))
        cut = int(0.8 * len(x))
        xtr, ytr, xte, yte = x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
        name, scale = "scikit-learn's 8x8 digits (80/20 split)", 16.0

    def prep(images, labels):
        return images.reshape(len(images), -1).astype(np.float32) / scale, labels.astype(np.intp)

    return name, scale, prep(xtr, ytr), prep(xte, yte)


def cnn(side, n_classes, dropout=0.0, seed=0):
    """Sequential for (N, 1, side, side) images, side >= 4: two stages of
    conv3x3 (padding 1, no bias) -> BatchNorm2d -> ReLU -> maxpool 2, with 32 then 64
    channels, then flatten -> Linear 128 -> ReLU [-> Dropout] -> Linear n_classes."""
    layers = []
    for i, (cin, cout) in enumerate([(1, 32), (32, 64)]):
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False, seed=seed + i),
                   nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
    layers += [nn.Flatten(), nn.Linear(64 * (side // 4) ** 2, 128, seed=seed + 2), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout, seed=seed + 1000))
    layers.append(nn.Linear(128, n_classes, init="xavier", seed=seed + 3))
    return nn.Sequential(*layers)


def resnet(n_classes, seed=0):
    """ResNet-8 for (N, 1, H, W) images: conv3x3 16 -> BatchNorm2d -> ReLU, three basic
    blocks of 16, 32 and 64 channels (the last two with stride 2), global average
    pooling, Linear n_classes. A basic block is relu(body(x) + shortcut(x)) with body
    conv3x3 -> BN -> ReLU -> conv3x3 -> BN, and shortcut the identity, or a 1x1
    stride-2 conv -> BN where the block changes the size. Convolutions have no bias."""
    def conv(cin, cout, k, stride, offset):
        return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False,
                         seed=seed + offset)

    def block(cin, cout, stride, offset):
        body = nn.Sequential(conv(cin, cout, 3, stride, offset), nn.BatchNorm2d(cout),
                             nn.ReLU(), conv(cout, cout, 3, 1, offset + 1),
                             nn.BatchNorm2d(cout))
        shortcut = None if stride == 1 and cin == cout else nn.Sequential(
            conv(cin, cout, 1, stride, offset + 2), nn.BatchNorm2d(cout))
        return [nn.Residual(body, shortcut), nn.ReLU()]

    return nn.Sequential(conv(1, 16, 3, 1, 0), nn.BatchNorm2d(16), nn.ReLU(),
                         *block(16, 16, 1, 10), *block(16, 32, 2, 20), *block(32, 64, 2, 30),
                         nn.GlobalAvgPool2d(), nn.Linear(64, n_classes, init="xavier",
                                                         seed=seed + 40))


#: --model: what `fastnn train` prints and --help lists for each image model.
IMAGE_MODELS = {
    "cnn": "2 x [conv3x3-BN-ReLU-maxpool2] (32, 64 channels)-fc128-ReLU-[dropout]-fc",
    "resnet": "ResNet-8: conv3x3(16)-BN-ReLU-blocks(16, 32/2, 64/2)-GAP-fc",
}


def make_schedule(name, opt, epochs):
    if name == "none":
        return None
    if name == "step":
        return optim.StepDecay(opt, max(1, epochs // 3), 0.1)
    if name == "exponential":
        return optim.ExponentialDecay(opt, 0.2)
    if name == "inverse-time":
        return optim.InverseTimeDecay(opt, 0.5)
    if name == "cosine":
        return optim.CosineDecay(opt, epochs)
    if name == "warmup-cosine":
        return optim.Warmup(opt, 1, then=optim.CosineDecay(opt, max(1, epochs - 1)))
    return optim.ReduceOnPlateau(opt, factor=0.5, patience=1)


def make_augment(name, side, seed):
    """None, or a Compose for side x side images: "affine" (rotation, shift, scale,
    shear) or "elastic" (the same, then Simard's elastic distortion, scaled to the
    image size from alpha 34, sigma 4 at 28 pixels)."""
    if name == "none":
        return None
    steps = [augment.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1),
                                  shear=5)]
    if name == "elastic":
        steps.append(augment.ElasticDistortion(alpha=34 * side / 28, sigma=4 * side / 28))
    return augment.Compose(steps, seed=seed)


def _check_model_options(args):
    """Refuse options the chosen --model does not have; resolve the MLP's defaults."""
    if args.model == "mlp":
        args.activation = args.activation or "relu"
        args.batch_norm = True if args.batch_norm is None else args.batch_norm
        return
    given = [flag for flag, value in (("--hidden", args.hidden),
                                      ("--dropout", args.model == "resnet" and args.dropout),
                                      ("--activation", args.activation),
                                      ("--batch-norm", args.batch_norm),
                                      ("--sync-batch-norm", args.sync_batch_norm)) if value]
    if args.batch_norm is False:
        given.append("--no-batch-norm")
    if given:
        why = (" (its BatchNorm2d layers normalize with each rank's statistics under "
               "mpiexec)" if args.sync_batch_norm else "")
        raise UsageError(f"{', '.join(given)}: not for --model {args.model}{why}")


def hold_out(x, y, fraction, seed):
    """((x_train, y_train), (x_val, y_val)): a random `fraction` of the samples (rounded,
    drawn with `seed`) held out for validation, both parts in their original order."""
    n_val = round(fraction * len(x))
    if not 1 <= n_val < len(x):
        raise UsageError(f"--val-split {fraction}: leaves {n_val} of {len(x)} training samples "
                         f"for validation; it must leave at least one on each side")
    held = np.zeros(len(x), bool)
    held[np.random.default_rng(seed).permutation(len(x))[:n_val]] = True
    return (x[~held], y[~held]), (x[held], y[held])


def train(args, comm=None):
    _check_model_options(args)
    name, scale, (xtr, ytr), (xte, yte) = load_data(args.data, args.seed)
    if args.limit:
        xtr, ytr = xtr[:args.limit], ytr[:args.limit]
    n_classes = int(max(ytr.max(), yte.max())) + 1
    val_split = args.val_split
    if val_split is None:
        val_split = 0.1 if args.schedule == "plateau" else 0.0
    validation = None
    if val_split:
        (xtr, ytr), validation = hold_out(xtr, ytr, val_split, args.seed)
    n_features = xtr.shape[1]
    side = round(n_features ** 0.5)
    epochs = args.epochs or (5 if n_features > 100 else 30)
    if args.model == "mlp":
        hidden = args.hidden or ([512, 512] if n_features > 100 else [128, 64])
        model = nn.mlp(n_features, n_classes, hidden, args.activation, args.batch_norm,
                       args.dropout, args.seed)
        if args.sync_batch_norm and args.batch_norm:
            model = nn.SyncBatchNorm.convert(model, comm)
        input_shape = (n_features,)
        described = (f"{n_features}-{'-'.join(map(str, hidden))}-{n_classes} "
                     f"({args.activation}{', batch norm' if args.batch_norm else ''}"
                     f"{f', dropout {args.dropout}' if args.dropout else ''}")
    else:
        if side * side != n_features or side < 4:
            raise UsageError(f"--model {args.model}: needs square images of 4x4 or more, got "
                             f"{n_features} values per sample")
        model = (cnn(side, n_classes, args.dropout, args.seed) if args.model == "cnn"
                 else resnet(n_classes, args.seed))
        input_shape = (1, side, side)
        xtr, xte = xtr.reshape(-1, *input_shape), xte.reshape(-1, *input_shape)
        if validation is not None:
            validation = (validation[0].reshape(-1, *input_shape), validation[1])
        described = (f"{args.model} ({IMAGE_MODELS[args.model]}; {side}x{side} images, "
                     f"{n_classes} classes{f', dropout {args.dropout}' if args.dropout else ''}")
    opt = optim.create(args.optimizer, model, args.lr, args.weight_decay)
    schedule = make_schedule(args.schedule, opt, epochs)
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), opt, schedule=schedule,
                             regularizer=losses.L2(args.l2) if args.l2 else None,
                             augment=make_augment(args.augment, side, args.seed),
                             image_shape=(side, side) if args.model == "mlp" else None,
                             progress=not args.quiet, comm=comm)
    ranks = "" if comm is None else f" per rank, {comm.Get_size()} ranks"
    print(f"fastnn {fastnn.__version__}: training {described}"
          f"{f', {args.augment} augmentation' if args.augment != 'none' else ''}) on {name}")
    held_out = (f"{len(validation[0])} validation (held out) / "
                if validation is not None else "")
    print(f"  {len(xtr)} training / {held_out}{len(xte)} test samples; {args.optimizer} lr "
          f"{args.lr}, schedule {args.schedule}, batch {args.batch_size}, {epochs} epochs, "
          f"{fastnn.get_num_threads()} threads{ranks}")
    root = distributed.is_root(comm)

    def save():
        fastnn.save(model, args.out, metadata={"dataset": name, "input_scale": scale,
                                               "n_features": n_features,
                                               "n_classes": n_classes, "model": args.model,
                                               "input_shape": list(input_shape)})

    start = time.perf_counter()
    try:
        history = trainer.fit(xtr, ytr, epochs=epochs, batch_size=args.batch_size,
                              validation_data=validation, seed=args.seed)
    except KeyboardInterrupt:
        where = "not saved (--out '')"
        if args.out and root:
            save()
            where = f"saved the model as trained so far to {args.out}"
        raise Interrupted(f"interrupted during epoch {trainer.epoch + 1} ({trainer.epoch} "
                          f"complete): {where}") from None
    wall = time.perf_counter() - start
    result = trainer.evaluate(xte, yte)
    train_seconds = sum(history["seconds"])
    print(f"result: test accuracy {result['accuracy']:.4f}, test loss {result['loss']:.4f}; "
          f"wall time {wall:.1f} s, {len(xtr) * history.epochs / train_seconds:,.0f} "
          f"training samples/s")
    if args.out and root:
        save()
        print(f"saved the model to {args.out}")
    if args.plot and root:
        try:
            history.plot(args.plot)
            curves = "training and validation" if validation is not None else "training"
            print(f"saved the {curves} curves to {args.plot}")
        except ImportError as exc:
            print(f"no plot: {exc}")
    return result["accuracy"]


def _load_model(path):
    try:
        return fastnn.load(path, with_metadata=True)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load {path}: {exc}") from exc


def _input_shape(meta):
    """The per-sample shape a saved model takes: (C, H, W) for an image model, else
    (n_features,) (models saved before --model recorded only n_features)."""
    return tuple(meta.get("input_shape") or (meta.get("n_features"),))


def evaluate(args):
    model, meta = _load_model(args.model)
    _, _, _, (xte, yte) = load_data(args.data, args.seed)
    if xte.shape[1] != meta.get("n_features"):
        raise UsageError(f"{args.model} expects {meta.get('n_features')} features; the test "
                         f"data have {xte.shape[1]}")
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), progress=False)
    result = trainer.evaluate(xte.reshape(-1, *_input_shape(meta)), yte)
    print(f"{args.model}: test accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f} "
          f"on {len(xte)} samples")
    return result["accuracy"]


def _samples_for(model_path, meta, x):
    """x (N, ...) reshaped to what the saved model takes: for an MLP any samples of
    n_features values; for an image model of input shape (C, H, W), samples of that
    shape, of (H, W), or flat rows of C * H * W values."""
    shape = _input_shape(meta)
    sample, size = x.shape[1:], math.prod(x.shape[1:])
    if len(shape) == 1:
        if size != shape[0]:
            raise UsageError(f"{model_path} expects {shape[0]} features per sample, got {size}")
    elif sample not in ((math.prod(shape),), shape[-2:], shape):
        raise UsageError(f"{model_path} expects images of shape {shape}, {shape[-2:]} or "
                         f"{math.prod(shape)} flat values per sample, got shape {sample}")
    return x.reshape(len(x), *shape)


def scaled_input(x, scale, how, path):
    """The samples of an --input array as the model's float32 inputs in [0, 1]: divided
    by the training data's pixel `scale` for integer arrays (raw pixels) and float
    arrays with values above 1 (with a note on stderr), as they are for other floats
    (how="auto"); divided or not whatever the dtype (how="always" / "never")."""
    if x.dtype.kind not in "biuf":
        raise ValueError(f"expected an array of numbers, got dtype {x.dtype}")
    divide = how == "always"
    if how == "auto":
        divide = x.dtype.kind in "iu"
        if x.dtype.kind == "f" and np.any(x > 1):
            divide = True
            print(f"note: {path} holds float values above 1 (up to {np.nanmax(x):g}): taken "
                  f"as raw pixels and divided by {scale:g}, the training data's pixel scale "
                  f"(--scale never takes them as they are)", file=sys.stderr)
    x = np.asarray(x, np.float32)
    return x / np.float32(scale) if divide else x


#: predict --output: the file types it writes.
OUTPUT_TYPES = (".npy", ".csv")


def write_output(path, values, proba):
    """Write labels (N,) or probabilities (N, C) to a .npy file (the array) or a .csv
    file (a header line, "label" or the class numbers, then one row per sample)."""
    if path.lower().endswith(".npy"):
        np.save(path, values)
        return
    header = ",".join(map(str, range(values.shape[1]))) if proba else "label"
    np.savetxt(path, values.reshape(len(values), -1), fmt="%.9g" if proba else "%d",
               delimiter=",", header=header, comments="")


def predict(args):
    if args.output and not args.output.lower().endswith(OUTPUT_TYPES):
        raise UsageError(f"--output {args.output}: expected a file name ending in "
                         f"{' or '.join(OUTPUT_TYPES)}")
    model, meta = _load_model(args.model)
    if args.input:
        try:
            x = np.load(args.input, allow_pickle=False)
            if x.ndim < 1 or len(x) == 0:
                raise ValueError(f"expected an array of samples, got shape {x.shape}")
            x = scaled_input(x, float(meta.get("input_scale", 1)), args.scale, args.input)
        except (OSError, ValueError, TypeError) as exc:
            raise UsageError(f"cannot read {args.input}: {exc}") from exc
    else:
        _, _, _, (x, _) = load_data(args.data, args.seed)
        x = x[:args.count]
    x = _samples_for(args.model, meta, x)
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), progress=False)
    try:
        values = trainer.predict_proba(x) if args.proba else trainer.predict(x)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.output:
        try:
            write_output(args.output, values, args.proba)
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc}") from exc
        what = "rows of class probabilities" if args.proba else "labels"
        print(f"wrote {len(values)} {what} to {args.output}")
    elif args.proba:
        for row in values:
            print(" ".join(f"{p:.6f}" for p in row))
    else:
        print(" ".join(map(str, values)))
    return values


def export(args):
    model, meta = _load_model(args.model)
    shape = tuple(args.input_shape or _input_shape(meta))
    if None in shape:
        raise UsageError(f"{args.model} does not record its input shape: give --input-shape")
    try:
        fastnn.export_onnx(model, args.onnx, shape)
    except (ImportError, OSError, TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    scale = meta.get("input_scale", 1)
    print(f"exported {args.model} to {args.onnx}: input (batch, {', '.join(map(str, shape))})"
          f"{f', raw values divided by {scale}' if scale != 1 else ''}")


def _argument(convert, ok, expected):
    """An argparse type: convert(text), accepted when ok(value), else "expected ..."."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


_positive_int = _argument(int, lambda v: v > 0, "a positive integer")
_probability = _argument(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
_nonnegative = _argument(float, lambda v: 0 <= v < float("inf"), "a finite number >= 0")


def parser():
    p = argparse.ArgumentParser(prog="fastnn", description="Fast neural network training "
                                "on CPUs: MLPs, CNNs and small ResNets.")
    sub = p.add_subparsers(dest="command", required=True)
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data", help="folder of the MNIST IDX files (default: "
                      "$FASTNN_MNIST_DIR, else scikit-learn's digits)")
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--threads", type=_positive_int, help="threads (default: all usable)")

    t = sub.add_parser(
        "train", parents=[data], help="train an MLP, a CNN or a ResNet-8 and report test accuracy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a model on MNIST or the 8x8 digits (pixels scaled to [0, 1]).\n\n"
                    "models (--model):\n"
                    "  mlp     Linear-[BatchNorm1d]-activation-[dropout] per --hidden width, "
                    "then fc\n" + "".join(f"  {key:<7} {text}\n"
                                         for key, text in IMAGE_MODELS.items()) +
                    "          (a block: relu(conv3x3-BN-ReLU-conv3x3-BN + shortcut); /2: "
                    "stride 2,\n          with a 1x1 conv+BN shortcut)\n"
                    "The cnn and resnet take (N, 1, H, W) images (H = W >= 4). Their\n"
                    "BatchNorm2d layers normalize with each rank's statistics under "
                    "mpiexec\n(--sync-batch-norm is for the MLP's BatchNorm1d).\n\n"
                    "Ctrl-C stops training: the model as trained so far is saved to --out\n"
                    "and the exit status is 130.")
    t.add_argument("--model", choices=("mlp", "cnn", "resnet"), default="mlp",
                   help="the architecture (default mlp; see above)")
    t.add_argument("--hidden", type=_positive_int, nargs="+", metavar="WIDTH",
                   help="mlp: hidden layer widths (default: 512 512 on MNIST, 128 64 on "
                        "digits)")
    t.add_argument("--activation", choices=sorted(nn.ACTIVATIONS),
                   help="mlp: the activation (default relu)")
    t.add_argument("--batch-norm", action=argparse.BooleanOptionalAction,
                   help="mlp: BatchNorm1d after each hidden Linear (default on)")
    t.add_argument("--sync-batch-norm", action="store_true",
                   help="mlp under mpiexec: batch statistics of the global batch, not "
                        "each rank's")
    t.add_argument("--dropout", type=_probability, default=0.0,
                   help="dropout after each hidden layer (mlp) or after fc128 (cnn)")
    t.add_argument("--optimizer", choices=optim.NAMES, default="adam")
    t.add_argument("--lr", type=_nonnegative, default=1e-3)
    t.add_argument("--weight-decay", type=_nonnegative, default=0.0)
    t.add_argument("--l2", type=_nonnegative, default=0.0, help="L2 penalty lambda")
    t.add_argument("--schedule", choices=_SCHEDULES, default="cosine",
                   help="learning-rate schedule (default cosine); plateau halves the rate "
                        "when the validation loss (see --val-split) stops falling")
    t.add_argument("--val-split", type=_probability, metavar="FRACTION",
                   help="hold out this fraction of the training data for validation: its "
                        "loss and accuracy are reported (val_) and plotted every epoch "
                        "(default 0.1 with --schedule plateau, which steers on it, else "
                        "0: no validation; plateau then steers on the training loss). The "
                        "test set is only evaluated at the end")
    t.add_argument("--augment", choices=("none", "affine", "elastic"), default="none",
                   help="random geometric augmentation of each training batch")
    t.add_argument("--epochs", type=_positive_int, help="default: 5 on MNIST, 30 on digits")
    t.add_argument("--batch-size", type=_positive_int, default=128)
    t.add_argument("--limit", type=_positive_int, help="train on the first N samples only")
    t.add_argument("--out", default="fastnn-model.safetensors",
                   help="where to save the model ('' to skip)")
    t.add_argument("--plot", default="fastnn-curves.png",
                   help="learning-curve PNG ('' to skip; needs matplotlib)")
    t.add_argument("--quiet", action="store_true",
                   help="no per-epoch output (progress bar or epoch lines); the summary, "
                        "result and saved-file lines are still printed")

    e = sub.add_parser("evaluate", parents=[data], help="test accuracy of a saved model")
    e.add_argument("model")

    r = sub.add_parser("predict", parents=[data],
                       help="class labels (or probabilities) from a saved model")
    r.add_argument("model")
    r.add_argument("--input", help=".npy file of samples, flat or as images (default: the "
                   "first test samples)")
    r.add_argument("--scale", choices=("auto", "always", "never"), default="auto",
                   help="how --input values become the model's inputs in [0, 1]: auto "
                        "(default) divides integer arrays (raw pixels: 0-255 for MNIST, "
                        "0-16 for the digits) by the training data's pixel scale, takes "
                        "float arrays in [0, 1] as they are, and divides float arrays with "
                        "values above 1 too, with a note; always / never: divide / do not "
                        "divide, whatever the dtype")
    r.add_argument("--count", type=_positive_int, default=20,
                   help="without --input: how many test samples (default 20)")
    r.add_argument("--proba", action="store_true",
                   help="class probabilities (a row of one per class for each sample) "
                        "instead of labels")
    r.add_argument("--output", metavar="FILE",
                   help="write the labels (or --proba's probabilities) to FILE instead of "
                        "printing them: .npy (a NumPy array) or .csv (a header line, then "
                        "one row per sample)")

    x = sub.add_parser("export", help="write a saved model as an ONNX graph",
                       description="Write a saved model's inference as an ONNX graph (opset "
                       "17, any batch size), for onnxruntime or another ONNX runtime. "
                       "Needs the onnx package: pip install 'fastnn[onnx]'.")
    x.add_argument("model")
    x.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the file to write")
    x.add_argument("--input-shape", type=_positive_int, nargs="+", metavar="DIM",
                   help="one sample's shape (default: the one the file records)")

    sub.add_parser("config", help="print fastnn.show_config()")
    return p


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    if args.command == "config":
        fastnn.show_config()
        return 0
    if getattr(args, "threads", None):
        try:
            fastnn.set_num_threads(args.threads)
        except ValueError as exc:  # over the cap: a usage error, not a traceback
            p.error(f"--threads: {exc}")
    comm = _mpi_world()
    try:
        if args.command == "train":
            train(args, comm)
        else:
            {"evaluate": evaluate, "predict": predict, "export": export}[args.command](args)
    except UsageError as exc:
        p.error(f"{args.command}: {exc}")
    except (Interrupted, KeyboardInterrupt) as exc:
        print(f"\nfastnn {args.command}: {exc or 'interrupted'}", file=sys.stderr)
        return INTERRUPTED
    return 0


def _mpi_world():
    """COMM_WORLD when launched by mpiexec with more than one rank, else None. Only then is
    mpi4py imported; an uncaught error on any rank then ends the job, and ranks other
    than 0 print nothing to stdout."""
    if not distributed.launched_by_mpi():
        return None
    comm = distributed.world()
    if comm.Get_size() == 1:
        return None
    distributed.install_excepthook(comm)
    if comm.Get_rank() != 0:
        sys.stdout = open(os.devnull, "w")  # for the life of the process
    return comm


if __name__ == "__main__":
    sys.exit(main())
