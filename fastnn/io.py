"""Saving and loading models and training checkpoints.

One file in the safetensors format (readable by the `safetensors` package): an 8-byte
little-endian header length, a JSON header naming every array with its dtype, shape
and byte range, then the raw array bytes. fastnn puts its own description in the
header's "__metadata__": a format version, the model's architecture (layer types and
constructor arguments) and, for checkpoints, the optimizer, schedule and RNG state.

Loading never executes code (no pickle, no imports by name: layer types come from a
fixed table), checks the header against the file's size before reading anything,
and checks every array's name, dtype and shape against the rebuilt model. Writes go to
a temporary file that replaces the target only when complete.
"""

import copy
import json
import math
import numbers
import os
import struct
import tempfile

import numpy as np

from . import losses, nn

__all__ = ["FormatError", "load", "load_checkpoint", "load_ensemble", "save", "save_checkpoint",
           "save_ensemble"]

FORMAT = "fastnn"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 64 * 2**20

_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "U64": np.uint64,
           "I32": np.int32, "U8": np.uint8}
_DTYPE_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}

# The layer types a file may name, and nothing else (besides the containers Sequential
# and Residual).
LAYERS = {cls.__name__: cls for cls in (
    nn.Linear, nn.Conv2d, nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.BatchNorm1d,
    nn.BatchNorm2d, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d, nn.GlobalAvgPool2d, nn.Flatten,
    nn.ELU, nn.GELU, nn.SiLU)}

# The keys each kind of architecture node has ("shortcut" may be absent: no shortcut).
_KEYS = {"Sequential": {"type", "layers"}, "Residual": {"type", "block", "shortcut"}}
_LAYER_KEYS = {"type", "config"}
MAX_DEPTH = 32  # containers nested in containers
MAX_MODULES = 2**16  # modules in one architecture (all are built before the arrays are checked)


class FormatError(ValueError):
    """A file that is not a valid fastnn model or checkpoint."""


# ---------------------------------------------------------------- architecture


def architecture(model):
    """A JSON-able description that rebuilds `model`: a Sequential (its layers), a
    Residual (its block and shortcut, None for the identity) or a known layer (its
    constructor arguments), containers nested in any way."""
    if isinstance(model, nn.Sequential):
        return {"type": "Sequential", "layers": [architecture(m) for m in model.layers]}
    if type(model) is nn.Residual:
        return {"type": "Residual", "block": architecture(model.block),
                "shortcut": None if model.shortcut is None else architecture(model.shortcut)}
    # A layer may be saved as the type it equals at inference (SyncBatchNorm: BatchNorm1d).
    own = vars(type(model))
    name = own.get("saved_as", type(model).__name__)
    layer = LAYERS.get(name)
    exact = type(model) is layer
    if layer is None or not (exact or ("saved_as" in own and isinstance(model, layer))):
        raise TypeError(f"save: cannot describe a {name}; fastnn.save handles Sequential "
                        f"and Residual models of {sorted(LAYERS)}")
    return {"type": name, "config": model.config()}


def _argument(v):
    """Whether v may be a layer's constructor argument in a file: a JSON scalar, or a
    pair of ints (Conv2d's kernel_size, stride, padding, dilation)."""
    return isinstance(v, (int, float, str, bool)) or (
        isinstance(v, list) and len(v) == 2 and all(type(i) is int for i in v))


def _node(arch, depth):
    """The type of an architecture node (at nesting depth `depth`) whose keys are those
    of its type; FormatError for anything else."""
    if depth > MAX_DEPTH or not isinstance(arch, dict):
        raise FormatError("architecture: malformed")
    kind = arch.get("type")
    if not isinstance(kind, str) or (kind not in _KEYS and kind not in LAYERS):
        raise FormatError(f"architecture: unknown layer type {kind!r}")
    if kind == "Sequential" and not isinstance(arch.get("layers"), list):
        raise FormatError("architecture: Sequential without a layer list")
    if kind == "Residual" and not isinstance(arch.get("block"), dict):
        raise FormatError("architecture: Residual without a block")
    unknown = set(arch) - _KEYS.get(kind, _LAYER_KEYS)
    if unknown:
        raise FormatError(f"architecture: {kind} has unknown keys {sorted(unknown)}")
    return kind


def build(arch, depth=0):
    """The model an architecture() describes; anything else raises FormatError."""
    kind = _node(arch, depth)
    try:
        if kind == "Sequential":
            return nn.Sequential(*(build(a, depth + 1) for a in arch["layers"]))
        if kind == "Residual":
            shortcut = arch.get("shortcut")
            return nn.Residual(build(arch["block"], depth + 1),
                               None if shortcut is None else build(shortcut, depth + 1))
    except TypeError as exc:
        raise FormatError(f"architecture: {exc}") from exc
    config = arch.get("config", {})
    if not isinstance(config, dict) or not all(map(_argument, config.values())):
        raise FormatError(f"architecture: bad arguments for {kind}")
    try:
        return LAYERS[kind](**config)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"architecture: {kind}({config}) is invalid: {exc}") from exc


# ---------------------------------------------------------------- safetensors


def _write(path, arrays, metadata):
    """Write arrays (name -> ndarray) and metadata (str -> str) atomically."""
    header = {"__metadata__": metadata}
    offset = 0
    blobs = []
    for name, array in arrays.items():
        array = np.asarray(array, order="C")  # (ascontiguousarray would make 0-d 1-d)
        if array.dtype not in _DTYPE_NAMES:
            raise TypeError(f"save: {name} has unsupported dtype {array.dtype}")
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _DTYPE_NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    write_atomic(path, [struct.pack("<Q", len(text)), text, *blobs])


def write_atomic(path, chunks):
    """Write the byte strings `chunks` to path through a temporary file in its folder
    that replaces path only when complete: a reader never sees half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastnn-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read(path):
    """(arrays, metadata) of a safetensors file, every entry checked before use."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise FormatError(f"{path}: truncated (no header)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise FormatError(f"{path}: header of {n} bytes does not fit the file ({size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise FormatError(f"{path}: header is not JSON: {exc}") from exc
        if not isinstance(header, dict):
            raise FormatError(f"{path}: header is not a JSON object")
        metadata = header.pop("__metadata__", {})
        data_size = size - 8 - n
        spans = []
        for name, entry in header.items():
            try:
                dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
                shape = tuple(entry["shape"])
                begin, end = entry["data_offsets"]
            except (KeyError, TypeError, ValueError) as exc:
                raise FormatError(f"{path}: bad entry for {name!r}") from exc
            if not all(isinstance(d, int) and d >= 0 for d in shape) or not (
                isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= data_size
            ):
                raise FormatError(f"{path}: {name!r} has a bad shape or byte range")
            if int(np.prod(shape, dtype=object)) * dtype.itemsize != end - begin:
                raise FormatError(f"{path}: {name!r}: shape {shape} does not match its bytes")
            spans.append((begin, end, name, dtype, shape))
        spans.sort()
        for (_, end_a, name_a, _, _), (begin_b, _, name_b, _, _) in zip(spans, spans[1:]):
            if begin_b < end_a:
                raise FormatError(f"{path}: {name_a!r} and {name_b!r} overlap")
        data = f.read(data_size)
    if len(data) != data_size:
        raise FormatError(f"{path}: truncated data")
    arrays = {name: np.frombuffer(data, dtype, count=int(np.prod(shape)), offset=begin)
              .reshape(shape).astype(dtype.newbyteorder("="))
              for begin, end, name, dtype, shape in spans}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError(f"{path}: bad __metadata__")
    return arrays, metadata


def _fastnn_meta(path, metadata, kind):
    if metadata.get("format") != FORMAT:
        raise FormatError(f"{path}: not a fastnn file")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise FormatError(f"{path}: format version {metadata.get('format_version')!r} is not "
                          f"{FORMAT_VERSION}")
    if metadata.get("kind") != kind:
        raise FormatError(f"{path}: holds a {metadata.get('kind')}, not a {kind}")
    try:
        return {k: json.loads(v) for k, v in metadata.items()
                if k not in ("format", "format_version", "kind")}
    except (json.JSONDecodeError, RecursionError) as exc:
        raise FormatError(f"{path}: malformed metadata: {exc}") from exc


def _declared_elements(arch):
    """Elements of parameters and buffers the architecture would allocate, computed from
    its description alone, so a small file cannot make load() allocate gigabytes; and
    FormatError for an architecture of more than MAX_MODULES modules."""
    total, modules = 0, 1
    pending = [(arch, 0)]
    while pending:
        node, depth = pending.pop()
        kind = _node(node, depth)
        if kind == "Sequential":
            parts = node["layers"]
        elif kind == "Residual":
            parts = [a for a in (node["block"], node.get("shortcut")) if a is not None]
        else:
            total += _layer_elements(kind, node.get("config", {}))
            continue
        modules += len(parts)
        if modules > MAX_MODULES:
            raise FormatError(f"architecture: more than {MAX_MODULES} modules")
        pending += [(a, depth + 1) for a in parts]
    return total


def _layer_elements(kind, config):
    """Elements of the parameters and buffers of one layer of the given arguments."""
    if not isinstance(config, dict):
        raise FormatError("architecture: malformed layer arguments")

    def size(key):
        value = config.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise FormatError(f"architecture: {kind} has a bad {key}")
        return value

    if kind == "Linear":
        bias = size("out_features") if config.get("bias", True) else 0
        return size("in_features") * size("out_features") + bias
    if kind == "Conv2d":
        kernel = config.get("kernel_size", 0)
        kh, kw = kernel if isinstance(kernel, list) and len(kernel) == 2 else (kernel, kernel)
        groups = config.get("groups", 1)
        if (not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                    for v in (kh, kw)) or isinstance(groups, bool)
                or not isinstance(groups, int) or groups < 1):
            raise FormatError("architecture: Conv2d has a bad kernel_size or groups")
        bias = size("out_channels") if config.get("bias", True) else 0
        return size("out_channels") * (size("in_channels") // groups) * kh * kw + bias
    if kind in ("BatchNorm1d", "BatchNorm2d"):
        return 4 * size("num_features")
    return 2 if kind == "Dropout" else 0


def _build_checked(path, arch, arrays, prefix="model."):
    """The architecture's model, built only if the file holds arrays of its size."""
    stored = sum(a.size for k, a in arrays.items() if k.startswith(prefix))
    if _declared_elements(arch) > stored:
        raise FormatError(f"{path}: the architecture declares more parameters than the file "
                          f"holds ({stored} values)")
    return build(arch)


def _check_model_arrays(path, expected, arrays, prefix="model."):
    got = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    if set(got) != set(expected):
        raise FormatError(f"{path}: arrays {sorted(set(got) ^ set(expected))} do not match "
                          f"the architecture")
    for name, value in expected.items():
        if got[name].shape != value.shape or got[name].dtype != value.dtype:
            raise FormatError(f"{path}: {name} is {got[name].dtype}{got[name].shape}, "
                              f"expected {value.dtype}{value.shape}")
    return got


def _model_metadata(model, kind, extra):
    from ._version import __version__

    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "kind": kind,
            "fastnn_version": json.dumps(__version__),
            "architecture": json.dumps(architecture(model))}
    meta.update({k: json.dumps(v) for k, v in extra.items()})
    return meta


# ---------------------------------------------------------------- models


def save(model, path, metadata=None):
    """Save a model (architecture and every parameter and buffer) to one file.

    `metadata`: a JSON-able dict stored with it (hyperparameters, class names...),
    returned by load(..., with_metadata=True). A fitted fastnn.Ensemble is saved whole
    (see save_ensemble).
    """
    if _is_ensemble(model):
        return save_ensemble(model, path, metadata)
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    _write(path, arrays, _model_metadata(model, "model", {"user": metadata or {}}))


def load(path, with_metadata=False):
    """The model saved at `path` (in eval mode), or the Ensemble (see load_ensemble);
    with_metadata=True: (model, metadata)."""
    arrays, metadata = _read(path)
    if metadata.get("kind") == "ensemble":
        return _load_ensemble(path, arrays, metadata, with_metadata)
    meta = _fastnn_meta(path, metadata, "model")
    model = _build_checked(path, meta.get("architecture"), arrays)
    model.load_state_dict(_check_model_arrays(path, model.state_dict(), arrays))
    model.eval()
    return (model, meta.get("user", {})) if with_metadata else model


# ---------------------------------------------------------------- ensembles

# The member losses a file may name (those an Ensemble accepts), with their arguments.
ENSEMBLE_LOSSES = {"SoftmaxCrossEntropy": ("label_smoothing",), "MulticlassHinge": ("margin",)}
MAX_MEMBERS = 2**12
# builder(members, seeds) -> the Ensemble of the (model, loss) pairs read from a file.
# fastnn.ensemble sets it when imported (fastnn imports it): importing it from here
# would close a circle (ensemble -> train -> io).
ENSEMBLE_BUILDER = []


def _is_ensemble(obj):
    """Whether obj is a fastnn.Ensemble (by its interface: see ENSEMBLE_BUILDER)."""
    kind = type(obj)
    return hasattr(kind, "members") and hasattr(kind, "predict_proba") and not hasattr(
        kind, "state_dict")


def _loss_description(loss):
    name = type(loss).__name__
    if name not in ENSEMBLE_LOSSES or type(loss) is not getattr(losses, name):
        raise TypeError(f"save: cannot describe the loss {name}; an Ensemble file holds "
                        f"members of {sorted(ENSEMBLE_LOSSES)}")
    return {"type": name, "config": {k: getattr(loss, k) for k in ENSEMBLE_LOSSES[name]}}


def _build_loss(path, arch):
    """The loss a member's description names; FormatError for anything else."""
    if not isinstance(arch, dict) or set(arch) != {"type", "config"}:
        raise FormatError(f"{path}: malformed member loss")
    name, config = arch["type"], arch["config"]
    if name not in ENSEMBLE_LOSSES or not isinstance(config, dict) or set(config) != set(
            ENSEMBLE_LOSSES[name]) or not all(_is_number(v) for v in config.values()):
        raise FormatError(f"{path}: unknown or malformed member loss {name!r}")
    try:
        return getattr(losses, name)(**config)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"{path}: {name}({config}) is invalid: {exc}") from exc


def save_ensemble(ensemble, path, metadata=None):
    """Save a fitted Ensemble to one file: every member's architecture, loss and
    arrays (named "member.<i>.<parameter>"), and the members' seeds. `metadata`: as
    save's. Raises RuntimeError for an Ensemble not fitted yet."""
    from ._version import __version__

    members = ensemble.members
    arrays = {f"member.{i}.{k}": v for i, trainer in enumerate(members)
              for k, v in trainer.model.state_dict().items()}
    described = [{"architecture": architecture(t.model), "loss": _loss_description(t.loss)}
                 for t in members]
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "kind": "ensemble",
            "fastnn_version": json.dumps(__version__), "members": json.dumps(described),
            "seeds": json.dumps(list(ensemble.seeds)), "user": json.dumps(metadata or {})}
    _write(path, arrays, meta)


def load_ensemble(path, with_metadata=False):
    """The Ensemble saved by save_ensemble (load() reads it too): its members' models
    in eval mode, in Trainers without optimizer, so it predicts (exactly as the saved
    one did) and evaluates; fit raises TypeError (a file holds no factory)."""
    arrays, metadata = _read(path)
    return _load_ensemble(path, arrays, metadata, with_metadata)


def _load_ensemble(path, arrays, metadata, with_metadata):
    meta = _fastnn_meta(path, metadata, "ensemble")
    described, seeds = meta.get("members"), meta.get("seeds")
    if not isinstance(described, list) or not 1 <= len(described) <= MAX_MEMBERS:
        raise FormatError(f"{path}: expected a list of 1 to {MAX_MEMBERS} members")
    if not isinstance(seeds, list) or len(seeds) != len(described) or not all(
            type(s) is int and s >= 0 for s in seeds):
        raise FormatError(f"{path}: expected one seed (an int >= 0) per member")
    prefixes = [f"member.{i}." for i in range(len(described))]
    stray = [k for k in arrays if not k.startswith(tuple(prefixes))]
    if stray:
        raise FormatError(f"{path}: arrays {sorted(stray)[:5]} belong to no member")
    members = []
    for prefix, member in zip(prefixes, described):
        if not isinstance(member, dict) or set(member) != {"architecture", "loss"}:
            raise FormatError(f"{path}: malformed member description")
        loss = _build_loss(path, member["loss"])
        model = _build_checked(path, member["architecture"], arrays, prefix)
        model.load_state_dict(_check_model_arrays(path, model.state_dict(), arrays, prefix))
        model.eval()
        members.append((model, loss))
    (build_ensemble,) = ENSEMBLE_BUILDER
    ensemble = build_ensemble(members, seeds)
    return (ensemble, meta.get("user", {})) if with_metadata else ensemble


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(trainer, path):
    """A Trainer's state_dict(): model, optimizer state, schedule, epoch, history and
    shuffling RNG."""
    state = trainer.state_dict()
    arrays = {f"model.{k}": v for k, v in state.pop("model").items()}
    opt_state = state.pop("optimizer")
    spans = opt_state.pop("state")
    for i, span in enumerate(spans or []):
        for name, value in span.items():
            arrays[f"optim.{i}.{name}"] = value
    opt_state.update(type=type(trainer.optimizer).__name__, has_state=spans is not None)
    state["optimizer"] = opt_state
    _write(path, arrays, _model_metadata(trainer.model, "checkpoint", state))


def load_checkpoint(trainer, path):
    """Restore a Trainer (built like the one that saved) from save_checkpoint's file;
    training then continues exactly as if it had not stopped.

    Everything the file says is checked against the trainer before it is used (a
    checkpoint is data, never trusted); a file that cannot be restored raises
    FormatError and leaves the trainer as it was."""
    arrays, metadata = _read(path)
    meta = _fastnn_meta(path, metadata, "checkpoint")
    if meta.get("architecture") != architecture(trainer.model):
        raise FormatError(f"{path}: the checkpoint's architecture differs from the model's")
    opt = meta.get("optimizer")
    if not isinstance(opt, dict):
        raise FormatError(f"{path}: malformed optimizer state")
    opt = dict(opt)
    saved_type = opt.pop("type", None)
    if saved_type != type(trainer.optimizer).__name__:
        raise FormatError(f"{path}: saved with {saved_type}, the trainer has "
                          f"{type(trainer.optimizer).__name__}")
    state = None
    if opt.pop("has_state", False):
        state = []
        while any(k.startswith(f"optim.{len(state)}.") for k in arrays):
            prefix = f"optim.{len(state)}."
            state.append({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
    expected = trainer.model.state_dict()
    _check_model_arrays(path, expected, arrays)
    saved = {k: meta.get(k) for k in ("schedule", "epoch", "history", "rng")}
    saved.update(model={k: arrays[f"model.{k}"] for k in expected},
                 optimizer={**opt, "state": state})
    _check_training_state(path, trainer, saved)
    before = copy.deepcopy(trainer.state_dict())
    try:
        trainer.load_state_dict(saved)
        _check_restored(trainer)
    except Exception as exc:  # whatever the file made fail: refuse it, undo the load
        trainer.load_state_dict(before)
        raise FormatError(f"{path}: cannot restore the training state: {exc}") from exc


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _like(current, saved):
    """Whether a JSON value from a file has the form of the value it replaces: numbers
    for numbers, lists of the same length, dicts with the same keys."""
    if current is None:
        return saved is None or _is_number(saved)
    if isinstance(current, (bool, np.bool_)):
        return isinstance(saved, bool)
    if isinstance(current, str):
        return isinstance(saved, str)
    if isinstance(current, numbers.Integral):
        return isinstance(saved, int) and not isinstance(saved, bool)
    if isinstance(current, numbers.Real):
        return saved is None or _is_number(saved)  # (e.g. a best metric not seen yet)
    if isinstance(current, (list, tuple)):
        return isinstance(saved, list) and len(saved) == len(current) and all(
            _like(c, s) for c, s in zip(current, saved))
    if isinstance(current, dict):
        return isinstance(saved, dict) and set(saved) == set(current) and all(
            _like(current[k], saved[k]) for k in current)
    return False


def _check_training_state(path, trainer, saved):
    """The non-array parts of a checkpoint, checked against the trainer's own."""
    epoch = saved["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch < 2**62:
        raise FormatError(f"{path}: bad epoch count {epoch!r}")
    history = saved["history"]
    if not isinstance(history, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(_is_number(x) for x in v)
        for k, v in history.items()
    ):
        raise FormatError(f"{path}: malformed training history")
    probe = type(trainer.rng.bit_generator)()
    try:
        probe.state = saved["rng"]
    except Exception as exc:  # the generator's own checks, whatever they raise
        raise FormatError(f"{path}: bad random-generator state: {exc}") from exc
    opt, mine = saved["optimizer"], trainer.optimizer.state_dict()
    groups, count = opt.get("param_groups"), opt.get("step_count")
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count < 2**62:
        raise FormatError(f"{path}: bad optimizer step count {count!r}")
    if set(opt) != set(mine) or not isinstance(groups, list) or len(groups) != len(
            mine["param_groups"]):
        raise FormatError(f"{path}: the optimizer state does not match the trainer's optimizer")
    for saved_group, group in zip(groups, mine["param_groups"]):
        if not isinstance(saved_group, dict) or set(saved_group) - set(group) or not all(
                _like(group[k], v) for k, v in saved_group.items()):
            raise FormatError(f"{path}: a parameter group does not match the optimizer's")
    schedule = saved["schedule"]
    if schedule is not None and trainer.schedule is not None and not _like(
            trainer.schedule.state_dict(), schedule):
        raise FormatError(f"{path}: the schedule state does not match the trainer's schedule")


def _check_restored(trainer):
    """What a loaded state must satisfy: valid hyperparameters and finite, non-negative
    learning rates now and at the next schedule step."""
    opt = trainer.optimizer
    for group in opt.param_groups:
        for name in opt.defaults:
            opt._check(name, group[name])
    schedule = trainer.schedule
    if schedule is not None:
        for a0 in schedule.base_lrs:
            for t in (schedule.t, schedule.t + 1):
                lr = schedule.rate(a0, t)
                if not (_is_number(lr) and math.isfinite(lr) and lr >= 0):
                    raise ValueError(f"the schedule gives the learning rate {lr!r}")
