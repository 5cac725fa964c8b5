"""Saving and loading models and training checkpoints.

One file in the safetensors format (readable by the `safetensors` package): an 8-byte
little-endian header length, a JSON header naming every array with its dtype, shape
and byte range, then the raw array bytes. fastnn puts its own description in the
header's "__metadata__": a format version, the model's architecture (layer types and
constructor arguments) and, for checkpoints, the optimizer, schedule and RNG state.

Loading never executes code (no pickle, no imports by name: layer types come from a
fixed table), opens regular files only, checks the header against the file's size and
the architecture's size in bytes against the arrays the file holds before allocating
anything, checks every array's name, dtype and shape against the rebuilt model, then
reads each array's own bytes, once; loaded values are checked as constructed ones are
(BatchNorm statistics, optimizer and schedule state). Saving checks what loading would
before writing, and writes to a temporary file (unnamed, where Linux has O_TMPFILE)
that replaces the target only when complete and synced (see write_atomic).
"""

import contextlib
import copy
import ctypes
import errno
import fcntl
import json
import math
import numbers
import os
import secrets
import stat
import struct

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


def _parse_header(text, data_size, where):
    """({name: (begin, end, dtype, shape)}, metadata) of a safetensors header `text`
    (bytes) over a data section of `data_size` bytes: every check load() makes before it
    reads an array, and the checks save() makes before it writes one. The arrays must
    tile the data section exactly, as the safetensors format requires (no overlap, no
    gap, no trailing bytes), and no name may appear twice."""
    if len(text) > MAX_HEADER_BYTES:
        raise FormatError(f"{where}: header of {len(text)} bytes is over the limit of "
                          f"{MAX_HEADER_BYTES} (MAX_HEADER_BYTES)")
    try:
        header = json.loads(text, object_pairs_hook=_unique_keys)
    except FormatError as exc:
        raise FormatError(f"{where}: {exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FormatError(f"{where}: header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise FormatError(f"{where}: header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError(f"{where}: bad __metadata__")
    entries = {}
    for name, entry in header.items():
        try:
            dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
            shape = tuple(entry["shape"])
            begin, end = entry["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{where}: bad entry for {name!r}") from exc
        if not all(type(d) is int and d >= 0 for d in shape) or not (
            type(begin) is int and type(end) is int and 0 <= begin <= end <= data_size
        ):
            raise FormatError(f"{where}: {name!r} has a bad shape or byte range")
        if math.prod(shape) * dtype.itemsize != end - begin:
            raise FormatError(f"{where}: {name!r}: shape {shape} does not match its bytes")
        entries[name] = (begin, end, dtype, shape)
    position = 0
    for name, (begin, end, _, _) in sorted(entries.items(), key=lambda e: e[1][:2]):
        if begin != position:
            raise FormatError(f"{where}: {name!r} starts at byte {begin} of the data, not "
                              f"at {position} (arrays overlap or leave a gap)")
        position = end
    if position != data_size:
        raise FormatError(f"{where}: {data_size - position} bytes after the last array")
    return entries, metadata


def _unique_keys(pairs):
    """A JSON object as a dict; FormatError when a key appears twice (the last would
    silently win)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise FormatError(f"key {twice!r} appears more than once")
    return out


def _write(path, arrays, metadata):
    """Write arrays (name -> ndarray) and metadata (str -> str) atomically, after the
    checks load() makes on the header passed: a file load() refuses is never written."""
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
    _parse_header(text, offset, f"save {os.fspath(path)!r}")
    write_atomic(path, [struct.pack("<Q", len(text)), text, *blobs])


def write_atomic(path, chunks):
    """Write the byte strings `chunks` to `path` so that `path` is either its old file or
    the complete new one, whatever happens (a crash, a kill -9, a full disk).

    The bytes go to a file with no name (Linux's O_TMPFILE) which gets one only once
    complete and synced, just before it is renamed over `path`: a writer killed while
    writing leaves nothing. Where O_TMPFILE is not available the file is a named
    ".fastnn-*.tmp" from the start. Either way a writer holds a lock (flock) on its
    temporary file for as long as it lives, and each save removes the temporary files
    of dead writers (unlocked ones) in its folder.

    Like open(path, "w"): a symbolic link is followed (its target is replaced, the link
    stays), an existing file keeps its permission bits, and a new one gets 0o666 less
    the umask. The folder is synced after the rename, so the new file survives a power
    loss.
    """
    target = os.path.realpath(path)
    folder = os.path.dirname(target)
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        raise FormatError(f"save: {os.fspath(path)!r} exists and is not a regular file")
    _remove_stale_temporaries(folder)
    fd, tmp = _temporary(folder)
    try:
        if mode is not None:
            os.fchmod(fd, stat.S_IMODE(mode) & 0o777)
        with os.fdopen(os.dup(fd), "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if tmp is None:
            tmp = _name_temporary(fd, folder)
        os.replace(tmp, target)
        tmp = None
    finally:
        try:
            if tmp is not None:
                os.unlink(tmp)
        finally:
            os.close(fd)  # (also drops the lock)
    _sync_folder(folder)


_TMP_PREFIX, _TMP_SUFFIX = ".fastnn-", ".tmp"


def _temporary(folder):
    """(fd, None) of an unnamed file in `folder` (O_TMPFILE), or (fd, name) of a named
    one where the kernel or file system does not have O_TMPFILE; either way locked, of
    mode 0o666 less the umask (as open() gives)."""
    if _libc is not None:
        try:
            fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
        else:
            _lock(fd)
            return fd, None
    while True:
        name = _temporary_name(folder)
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        _lock(fd)
        # A cleaner may have taken the file for a dead writer's between its creation
        # and the lock: then it is gone (or another file has its name); take a new one.
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.lstat(name)):
                return fd, name
        os.close(fd)


def _temporary_name(folder):
    return os.path.join(folder, _TMP_PREFIX + secrets.token_hex(8) + _TMP_SUFFIX)


def _lock(fd):
    """Hold an exclusive flock on `fd` (waiting for a cleaner that holds it): it marks a
    temporary file as a live writer's. A file system without locks: no lock, and then
    nobody's temporary files are ever taken for stale."""
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX)


def _name_temporary(fd, folder):
    """Give the O_TMPFILE file `fd` a fresh temporary name in `folder`, for the rename
    that follows: linkat(2) of /proc/self/fd/<fd>, following that link (which needs no
    privilege, unlike AT_EMPTY_PATH, and which os.link before Python 3.14 does not do)."""
    while True:
        name = _temporary_name(folder)
        if _libc.linkat(_AT_FDCWD, f"/proc/self/fd/{fd}".encode(), _AT_FDCWD,
                        os.fsencode(name), _AT_SYMLINK_FOLLOW) == 0:
            return name
        code = ctypes.get_errno()
        if code != errno.EEXIST:
            raise OSError(code, os.strerror(code), name)


def _find_linkat():
    """libc, when it has linkat and /proc/self/fd is there to name an open file: the
    means to give an O_TMPFILE file a name; else None (named temporary files then)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc if hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd") else None


_AT_FDCWD, _AT_SYMLINK_FOLLOW = -100, 0x400  # <fcntl.h> on Linux
_libc = _find_linkat()


def _remove_stale_temporaries(folder):
    """Remove the temporary files that writers killed in `folder` left: those whose
    lock nobody holds. A live writer's file is locked, so it is never touched."""
    try:
        names = [n for n in os.listdir(folder)
                 if n.startswith(_TMP_PREFIX) and n.endswith(_TMP_SUFFIX)]
    except OSError:
        return  # the write that follows reports what is wrong with the folder
    for name in names:
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # the name still names the file locked (not a new one of the same name)
            if os.path.samestat(os.fstat(fd), os.lstat(path)):
                os.unlink(path)
        except OSError:
            pass  # locked by a live writer, or already gone
        finally:
            os.close(fd)


def _sync_folder(folder):
    """Make the rename into `folder` durable. A folder that cannot be opened or a file
    system that cannot sync one (EINVAL) leaves it to the system; an I/O error raises."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except PermissionError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def _open(path):
    """`path` opened for reading, when it is a regular file: a FIFO, a device or a
    folder is refused (FormatError) without blocking on it or reading from it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        kind = os.fstat(fd).st_mode
        if not stat.S_ISREG(kind):
            what = ("a FIFO" if stat.S_ISFIFO(kind) else "a folder" if stat.S_ISDIR(kind)
                    else "a device or socket")
            raise FormatError(f"{os.fspath(path)}: not a regular file ({what})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def _read_header(f, path):
    """(entries, metadata, data_start) of the open safetensors file `f`: its header,
    checked against the file's size; no array is read."""
    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    if len(head) < 8:
        raise FormatError(f"{path}: truncated (no header)")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise FormatError(f"{path}: header of {n} bytes does not fit the file ({size} bytes)")
    text = bytearray(n)
    _fill(f, memoryview(text), path)
    entries, metadata = _parse_header(text, size - 8 - n, path)
    return entries, metadata, 8 + n


def _fill(f, view, path):
    """Fill the writable buffer `view` from `f` (a raw file may return less than asked)."""
    done = 0
    while done < len(view):
        got = f.readinto(view[done:])
        if not got:
            raise FormatError(f"{path}: truncated")
        done += got


def _read_arrays(f, path, entries, data_start, names):
    """{name: array} of the entries `names`, each read from its own byte range straight
    into a new array: nothing else of the file is read."""
    arrays = {}
    for name in names:
        begin, _, dtype, shape = entries[name]
        array = np.empty(shape, dtype)
        f.seek(data_start + begin)
        _fill(f, memoryview(array.reshape(-1).view(np.uint8)), path)
        arrays[name] = array.astype(dtype.newbyteorder("="), copy=False)
    return arrays


def _fastnn_meta(path, metadata, kind):
    if metadata.get("format") != FORMAT:
        raise FormatError(f"{path}: not a fastnn file")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise FormatError(f"{path}: format version {metadata.get('format_version')!r} is not "
                          f"{FORMAT_VERSION}")
    if metadata.get("kind") != kind:
        raise FormatError(f"{path}: holds a {metadata.get('kind')}, not a {kind}")
    try:
        return {k: json.loads(v, object_pairs_hook=_unique_keys) for k, v in metadata.items()
                if k not in ("format", "format_version", "kind")}
    except (json.JSONDecodeError, RecursionError, FormatError) as exc:
        raise FormatError(f"{path}: malformed metadata: {exc}") from exc


def _declared_bytes(arch):
    """Bytes of the parameters and buffers the architecture would allocate, computed from
    its description alone, so that a small file cannot make load() allocate gigabytes;
    FormatError for an architecture load() refuses: nested deeper than MAX_DEPTH, of
    more than MAX_MODULES modules, or with layer arguments a file may not hold."""
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
            total += _layer_bytes(kind, node.get("config", {}))
            continue
        modules += len(parts)
        if modules > MAX_MODULES:
            raise FormatError(f"architecture: more than {MAX_MODULES} modules")
        pending += [(a, depth + 1) for a in parts]
    return total


def _layer_bytes(kind, config):
    """Bytes of the parameters and buffers of one layer of the given arguments."""
    if not isinstance(config, dict):
        raise FormatError("architecture: malformed layer arguments")
    if not all(map(_argument, config.values())):
        raise FormatError(f"architecture: bad arguments for {kind}")

    def size(key):
        value = config.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise FormatError(f"architecture: {kind} has a bad {key}")
        return value

    def itemsize():
        dtype = config.get("dtype", "float32")
        if dtype not in ("float32", "float64"):
            raise FormatError(f"architecture: {kind} dtype {dtype!r} is invalid (float32 or "
                              f"float64)")
        return np.dtype(dtype).itemsize

    if kind == "Linear":
        bias = size("out_features") if config.get("bias", True) else 0
        return (size("in_features") * size("out_features") + bias) * itemsize()
    if kind == "Conv2d":
        kernel = config.get("kernel_size", 0)
        kh, kw = kernel if isinstance(kernel, list) and len(kernel) == 2 else (kernel, kernel)
        groups = config.get("groups", 1)
        if (not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                    for v in (kh, kw)) or isinstance(groups, bool)
                or not isinstance(groups, int) or groups < 1):
            raise FormatError("architecture: Conv2d has a bad kernel_size or groups")
        bias = size("out_channels") if config.get("bias", True) else 0
        weight = size("out_channels") * (size("in_channels") // groups) * kh * kw
        return (weight + bias) * itemsize()
    if kind in ("BatchNorm1d", "BatchNorm2d"):
        return 4 * size("num_features") * itemsize()
    return 16 if kind == "Dropout" else 0  # Dropout: its seed and step, 8 bytes each


def _targets(model):
    """{name: array} of the model's parameters and buffers (views, not copies)."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def _check_model_entries(path, expected, entries, prefix="model."):
    """The names in the file of the arrays `expected` ({name: array}), once the file's
    entries under `prefix` are exactly those names, of the same dtypes and shapes."""
    got = {k[len(prefix):]: e for k, e in entries.items() if k.startswith(prefix)}
    if set(got) != set(expected):
        raise FormatError(f"{path}: arrays {sorted(set(got) ^ set(expected))} do not match "
                          f"the architecture")
    for name, value in expected.items():
        _, _, dtype, shape = got[name]
        if shape != value.shape or dtype.newbyteorder("=") != value.dtype:
            raise FormatError(f"{path}: {name} is {dtype.newbyteorder('=')}{shape}, "
                              f"expected {value.dtype}{value.shape}")
    return [prefix + name for name in expected]


def _check_loadable(model, model_state, optimizer, schedule):
    """Before a save: FormatError when loading would refuse the values about to be
    written (a diverged run's NaN statistics or optimizer state), rather than replace a
    good file with one that cannot be loaded. optimizer, schedule: (object, its
    state_dict()) or None."""
    try:
        for prefix, module in model.modules():
            module.check_state(prefix, model_state)
        for part in (optimizer, schedule):
            if part is not None:
                part[0].check_state_dict(part[1])
    except ValueError as exc:
        raise FormatError(f"save: loading would refuse this state: {exc}") from exc


def _model_metadata(model, kind, extra):
    from ._version import __version__

    arch = json.dumps(architecture(model))
    try:  # what load() checks of an architecture before building it
        _declared_bytes(json.loads(arch))
    except FormatError as exc:
        raise FormatError(f"save: load() would refuse this model: {exc}") from exc
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "kind": kind,
            "fastnn_version": json.dumps(__version__), "architecture": arch}
    meta.update({k: json.dumps(v) for k, v in extra.items()})
    return meta


# ---------------------------------------------------------------- models


def save(model, path, metadata=None):
    """Save a model (architecture and every parameter and buffer) to one file.

    `metadata`: a JSON-able dict stored with it (hyperparameters, class names...),
    returned by load(..., with_metadata=True). A fitted fastnn.Ensemble is saved whole
    (see save_ensemble). Everything load() checks is checked first: a model or metadata
    load() would refuse raises here and writes nothing.
    """
    if _is_ensemble(model):
        return save_ensemble(model, path, metadata)
    state = model.state_dict()
    _check_loadable(model, state, None, None)
    arrays = {f"model.{k}": v for k, v in state.items()}
    _write(path, arrays, _model_metadata(model, "model", {"user": metadata or {}}))


def load(path, with_metadata=False):
    """The model saved at `path` (in eval mode), or the Ensemble (see load_ensemble);
    with_metadata=True: (model, metadata).

    Reads the header, checks it (and the architecture's size against the arrays the
    file holds) before anything is allocated, then reads each array's bytes once."""
    with _open(path) as f:
        entries, metadata, start = _read_header(f, path)
        if metadata.get("kind") == "ensemble":
            return _load_ensemble(f, path, entries, metadata, start, with_metadata)
        meta = _fastnn_meta(path, metadata, "model")
        model = _read_model(f, path, meta.get("architecture"), entries, start)
    model.eval()
    return (model, meta.get("user", {})) if with_metadata else model


def _read_model(f, path, arch, entries, start, prefix="model."):
    """The model of the architecture `arch` whose arrays are the file's entries under
    `prefix`: built only once the file holds arrays of its size."""
    stored = sum(end - begin for k, (begin, end, _, _) in entries.items()
                 if k.startswith(prefix))
    if _declared_bytes(arch) > stored:
        raise FormatError(f"{path}: the architecture declares more parameters than the "
                          f"file holds ({stored} bytes)")
    model = build(arch)
    names = _check_model_entries(path, _targets(model), entries, prefix)
    arrays = _read_arrays(f, path, entries, start, names)
    try:
        model.load_state_dict({k[len(prefix):]: v for k, v in arrays.items()})
    except ValueError as exc:
        raise FormatError(f"{path}: {exc}") from exc
    return model


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
    with _open(path) as f:
        entries, metadata, start = _read_header(f, path)
        return _load_ensemble(f, path, entries, metadata, start, with_metadata)


def _load_ensemble(f, path, entries, metadata, start, with_metadata):
    meta = _fastnn_meta(path, metadata, "ensemble")
    described, seeds = meta.get("members"), meta.get("seeds")
    if not isinstance(described, list) or not 1 <= len(described) <= MAX_MEMBERS:
        raise FormatError(f"{path}: expected a list of 1 to {MAX_MEMBERS} members")
    if not isinstance(seeds, list) or len(seeds) != len(described) or not all(
            type(s) is int and s >= 0 for s in seeds):
        raise FormatError(f"{path}: expected one seed (an int >= 0) per member")
    prefixes = [f"member.{i}." for i in range(len(described))]
    stray = [k for k in entries if not k.startswith(tuple(prefixes))]
    if stray:
        raise FormatError(f"{path}: arrays {sorted(stray)[:5]} belong to no member")
    members = []
    for prefix, member in zip(prefixes, described):
        if not isinstance(member, dict) or set(member) != {"architecture", "loss"}:
            raise FormatError(f"{path}: malformed member description")
        loss = _build_loss(path, member["loss"])
        model = _read_model(f, path, member["architecture"], entries, start, prefix)
        model.eval()
        members.append((model, loss))
    (build_ensemble,) = ENSEMBLE_BUILDER
    ensemble = build_ensemble(members, seeds)
    return (ensemble, meta.get("user", {})) if with_metadata else ensemble


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(trainer, path):
    """A Trainer's state_dict(): model, optimizer state, schedule, epoch, history and
    shuffling RNG. The optimizer's state is one set of arrays per span ("optim.<span>.
    <name>"), and the metadata says how many spans there are (an optimizer may keep no
    arrays at all: plain SGD)."""
    state = trainer.state_dict()
    _check_loadable(trainer.model, state["model"], (trainer.optimizer, state["optimizer"]),
                    None if trainer.schedule is None else (trainer.schedule, state["schedule"]))
    arrays = {f"model.{k}": v for k, v in state.pop("model").items()}
    opt_state = state.pop("optimizer")
    spans = opt_state.pop("state")
    for i, span in enumerate(spans or []):
        for name, value in span.items():
            arrays[f"optim.{i}.{name}"] = value
    opt_state.update(type=type(trainer.optimizer).__name__,
                     state_spans=None if spans is None else len(spans))
    state["optimizer"] = opt_state
    _write(path, arrays, _model_metadata(trainer.model, "checkpoint", state))


def load_checkpoint(trainer, path):
    """Restore a Trainer (built like the one that saved) from save_checkpoint's file;
    training then continues exactly as if it had not stopped.

    Everything the file says is checked against the trainer before it is used (a
    checkpoint is data, never trusted); a file that cannot be restored raises
    FormatError and leaves the trainer as it was."""
    optimizer = trainer.optimizer
    with _open(path) as f:
        entries, metadata, start = _read_header(f, path)
        meta = _fastnn_meta(path, metadata, "checkpoint")
        if meta.get("architecture") != architecture(trainer.model):
            raise FormatError(f"{path}: the checkpoint's architecture differs from the model's")
        opt = meta.get("optimizer")
        if not isinstance(opt, dict):
            raise FormatError(f"{path}: malformed optimizer state")
        opt = dict(opt)
        saved_type = opt.pop("type", None)
        if saved_type != type(optimizer).__name__:
            raise FormatError(f"{path}: saved with {saved_type}, the trainer has "
                              f"{type(optimizer).__name__}")
        spans = opt.pop("state_spans", None)
        mine = sum(len(group["spans"]) for group in optimizer.param_groups)
        if spans is not None and (type(spans) is not int or spans != mine):
            raise FormatError(f"{path}: the optimizer state covers {spans!r} spans of "
                              f"parameters, the trainer's optimizer {mine}")
        optim = [k for k in entries if k.startswith("optim.")]
        spans_of = {f"optim.{i}.{name}": i for i in range(spans or 0)
                    for name in optimizer.state_names}
        if set(optim) != set(spans_of):
            raise FormatError(f"{path}: optimizer arrays {sorted(set(optim) ^ set(spans_of))} "
                              f"do not match the trainer's optimizer")
        expected = _targets(trainer.model)
        names = _check_model_entries(path, expected, entries)
        arrays = _read_arrays(f, path, entries, start, names + optim)
    state = None if spans is None else [{} for _ in range(spans)]
    for key, i in spans_of.items():
        state[i][key.rsplit(".", 1)[1]] = arrays[key]
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
