"""fastnn.io for image models: round trips of Conv2d, pools, BatchNorm2d, Flatten and
Residual (nested in any way) with bitwise-equal outputs, files the safetensors package
reads, hostile architectures, and a CNN training run resumed from a checkpoint."""

import json

import numpy as np
import pytest
from test_io import assert_format_error, parse_safetensors, refusal_peak, write_safetensors
from test_trainer import assert_states_equal, states_differ, trainer_for

import fastnn
from fastnn import io, nn, optim
from fastnn.io import FormatError

# ---------------------------------------------------------------- models


def lenet():
    """LeNet-5 on 1 x 28 x 28 images."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2, seed=0), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, seed=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120, seed=2), nn.ReLU(), nn.Linear(120, 84, seed=3), nn.ReLU(),
        nn.Linear(84, 10, seed=4))


def basic_block(c_in, c_out, stride, seed, dtype=np.float32):
    """ResNet's basic block: an identity shortcut, or a stride-2 1x1 Conv2d and a
    BatchNorm2d where the shape changes."""
    block = nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False, seed=seed,
                  dtype=dtype),
        nn.BatchNorm2d(c_out, dtype=dtype), nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False, seed=seed + 1, dtype=dtype),
        nn.BatchNorm2d(c_out, dtype=dtype))
    shortcut = None
    if stride != 1 or c_in != c_out:
        shortcut = nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False, seed=seed + 2, dtype=dtype),
            nn.BatchNorm2d(c_out, dtype=dtype))
    return nn.Residual(block, shortcut)


def resnet(dtype=np.float32):
    """A small ResNet on 3 x 8 x 8 images."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False, seed=0, dtype=dtype),
        nn.BatchNorm2d(8, dtype=dtype), nn.ReLU(),
        basic_block(8, 8, 1, 10, dtype), nn.ReLU(),
        basic_block(8, 16, 2, 20, dtype), nn.ReLU(),
        nn.GlobalAvgPool2d(), nn.Linear(16, 5, seed=1, dtype=dtype))


def odd_convs(dtype=np.float32):
    """Non-square kernels, strides, paddings and dilations, groups, AvgPool2d."""
    return nn.Sequential(
        nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2,
                  init="xavier", seed=0, dtype=dtype),
        nn.LeakyReLU(0.1), nn.AvgPool2d((2, 3), stride=(1, 2), padding=(1, 1)),
        nn.Conv2d(6, 6, 1, groups=3, bias=False, seed=1, dtype=dtype), nn.Tanh(),
        nn.MaxPool2d((3, 2), stride=(2, 2), padding=(1, 0)), nn.Flatten(),
        nn.Dropout(0.3, seed=5), nn.Linear(6 * 3 * 1, 3, seed=2, dtype=dtype))


def nested(dtype=np.float32):
    """A Residual in a Sequential in a Residual in a Sequential; a Residual whose block
    and shortcut are single layers; a Residual as a Residual's block."""
    inner = nn.Residual(nn.Sequential(
        nn.Conv2d(4, 4, 3, padding=1, seed=3, dtype=dtype), nn.BatchNorm2d(4, dtype=dtype)))
    outer = nn.Residual(
        nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, seed=2, dtype=dtype), nn.ReLU(), inner,
                      nn.Sigmoid()),
        nn.Conv2d(4, 4, 1, seed=4, dtype=dtype))
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, seed=1, dtype=dtype), outer,
        nn.Residual(nn.Conv2d(4, 4, 3, padding=1, seed=5, dtype=dtype)),
        nn.Residual(nn.Residual(nn.BatchNorm2d(4, dtype=dtype)), nn.ReLU()),
        nn.Flatten(), nn.Linear(4 * 5 * 5, 2, seed=6, dtype=dtype))


MODELS = {  # name: (model factory, input shape)
    "lenet": (lenet, (6, 1, 28, 28)),
    "resnet": (resnet, (6, 3, 8, 8)),
    "resnet-float64": (lambda: resnet(np.float64), (6, 3, 8, 8)),
    "odd-convs": (odd_convs, (5, 4, 9, 7)),
    "odd-convs-float64": (lambda: odd_convs(np.float64), (5, 4, 9, 7)),
    "nested": (nested, (4, 2, 5, 5)),
    "residual-alone": (lambda: basic_block(3, 6, 2, 0), (4, 3, 6, 6)),
    "conv-alone": (lambda: nn.Conv2d(3, 4, (2, 3), dilation=(2, 1), seed=0), (2, 3, 5, 5)),
}


def trained(make, shape):
    """(model, x): the model with random parameters and moved running statistics, in
    eval mode, and an input."""
    model = make()
    dtype = next(model.parameters()).dtype
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    for _, p in model.named_parameters():
        p[...] = rng.uniform(-0.5, 0.5, p.shape)
    model.train()
    for i in range(2):
        model.forward(x * (1 + i))
    return model.eval(), x


def assert_same_model(model, loaded):
    assert type(loaded) is type(model) and not loaded.training
    assert io.architecture(loaded) == io.architecture(model)
    assert repr(loaded) == repr(model)
    assert_states_equal(model.state_dict(), loaded.state_dict())


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", list(MODELS))
def test_round_trip_gives_identical_outputs(tmp_path, name):
    model, x = trained(*MODELS[name])
    path = tmp_path / "m.safetensors"
    fastnn.save(model, path)
    loaded = fastnn.load(path)
    assert_same_model(model, loaded)
    assert loaded.forward(x).tobytes() == model.forward(x).tobytes()
    with fastnn.threads(2):
        assert loaded.forward(x).tobytes() == model.forward(x).tobytes()


def test_resnet_state_names_and_running_statistics(tmp_path):
    model, _ = trained(*MODELS["resnet"])
    state = model.state_dict()
    names = {"3.block.0.weight", "3.block.1.running_mean", "3.block.4.running_var",
             "5.block.0.weight", "5.shortcut.0.weight", "5.shortcut.1.weight",
             "5.shortcut.1.bias", "5.shortcut.1.running_mean", "5.shortcut.1.running_var",
             "8.weight", "8.bias"}
    assert names <= set(state)
    assert not any(k.startswith("3.shortcut") for k in state)
    assert not np.allclose(state["5.shortcut.1.running_mean"], 0)
    assert not np.allclose(state["5.shortcut.1.running_var"], 1)
    fastnn.save(model, tmp_path / "m.safetensors")
    loaded = fastnn.load(tmp_path / "m.safetensors")
    shortcut = loaded[5].shortcut[1]
    assert shortcut.running_mean.tobytes() == model[5].shortcut[1].running_mean.tobytes()
    assert shortcut.running_var.tobytes() == model[5].shortcut[1].running_var.tobytes()
    assert loaded[3].shortcut is None


def test_loaded_model_trains_like_the_original(tmp_path):
    """The rebuilt model's parameters live in one arena and train: a step of the loaded
    model equals a step of the original, bitwise."""
    model, x = trained(*MODELS["resnet"])
    fastnn.save(model, tmp_path / "m.safetensors")
    loaded = fastnn.load(tmp_path / "m.safetensors")
    y = np.arange(len(x)) % 5
    for m in (model, loaded):
        trainer = trainer_for(m, opt=optim.SGD(m, 0.1, momentum=0.9))
        trainer.model.train()
        trainer.train_step(x, y)
    assert_states_equal(model.state_dict(), loaded.state_dict())


def test_files_are_readable_by_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open

    for name in ("lenet", "resnet", "odd-convs-float64", "nested"):
        model, _ = trained(*MODELS[name])
        path = tmp_path / f"{name}.safetensors"
        fastnn.save(model, path, metadata={"name": name})
        arrays = st.load_file(str(path))
        state = model.state_dict()
        assert set(arrays) == {f"model.{k}" for k in state}
        for key, value in state.items():
            assert arrays[f"model.{key}"].dtype == value.dtype
            np.testing.assert_array_equal(arrays[f"model.{key}"], value)
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata()
        assert json.loads(metadata["architecture"]) == io.architecture(model)
        assert json.loads(metadata["user"]) == {"name": name}


def test_residual_architecture():
    conv = nn.Conv2d(2, 2, 1, seed=0)
    arch = io.architecture(nn.Residual(nn.Sequential(conv, nn.ReLU())))
    assert arch == {"type": "Residual", "shortcut": None, "block": {
        "type": "Sequential", "layers": [{"type": "Conv2d", "config": conv.config()},
                                         {"type": "ReLU", "config": {}}]}}
    assert io.architecture(nn.Flatten()) == {"type": "Flatten", "config": {}}


def test_a_residual_without_the_shortcut_key_has_none(tmp_path):
    model, x = trained(*MODELS["nested"])
    fastnn.save(model, tmp_path / "m.safetensors")
    arrays, metadata = parse_safetensors((tmp_path / "m.safetensors").read_bytes())
    arch = json.loads(metadata["architecture"])
    del arch["layers"][2]["shortcut"]
    metadata["architecture"] = json.dumps(arch)
    loaded = fastnn.load(write_safetensors(tmp_path / "b.safetensors", arrays, metadata))
    assert loaded[2].shortcut is None
    assert loaded.forward(x).tobytes() == model.forward(x).tobytes()


class MyResidual(nn.Residual):
    def forward(self, x):
        return 2 * super().forward(x)


class Scale(nn.Module):
    def forward(self, x):
        return 2 * x


@pytest.mark.parametrize("make", [
    lambda: MyResidual(nn.ReLU()),
    lambda: nn.Sequential(nn.Conv2d(1, 1, 1), MyResidual(nn.ReLU())),
    lambda: nn.Residual(Scale()),
    lambda: nn.Residual(nn.ReLU(), Scale()),
    lambda: nn.Residual(nn.Sequential(nn.ReLU(), nn.Residual(Scale()))),
], ids=["subclass", "subclass-inside", "custom-block", "custom-shortcut", "custom-deep"])
def test_unsupported_residuals_are_a_type_error(tmp_path, make):
    with pytest.raises(TypeError, match="save"):
        fastnn.save(make(), tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- hostile architectures


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    """(arrays, metadata) of a saved ResNet."""
    path = tmp_path_factory.mktemp("resnet") / "m.safetensors"
    fastnn.save(resnet(), path)
    return parse_safetensors(path.read_bytes())


def _edited(tmp_path, parts, edit=None, arrays_edit=None):
    arrays, metadata = dict(parts[0]), dict(parts[1])
    if edit is not None:
        arch = json.loads(metadata["architecture"])
        edit(arch)
        metadata["architecture"] = json.dumps(arch)
    if arrays_edit is not None:
        arrays_edit(arrays)
    return write_safetensors(tmp_path / "bad.safetensors", arrays, metadata)


def _set(path, value=None, drop=False):
    """An edit that sets (or deletes) the node at `path`: keys and indices into the
    architecture."""
    def edit(arch):
        *head, last = path
        for key in head:
            arch = arch[key]
        if drop:
            del arch[last]
        else:
            arch[last] = value
    return edit


L = "layers"
BLOCK5 = (L, 5, "block")  # the stride-2 block, a Sequential
CONV5 = (L, 5, "block", L, 0, "config")


@pytest.mark.parametrize("edit, match", [
    (_set((L, 3, "block"), drop=True), "without a block"),
    (_set((L, 3, "block"), None), "without a block"),
    (_set((L, 3, "block"), "Conv2d"), "without a block"),
    (_set((L, 3, "block"), [{"type": "ReLU"}]), "without a block"),
    (_set((L, 3, "evil"), "__import__('os')"), "unknown keys"),
    (_set((L, 3, "config"), {}), "unknown keys"),
    (_set((L, 3, "layers"), []), "unknown keys"),
    (_set((L, 0, "block"), {"type": "ReLU"}), "unknown keys"),
    (_set(("shortcut",), None), "unknown keys"),
    (_set((L, 5, "shortcut"), 5), "malformed"),
    (_set((L, 5, "shortcut"), "Conv2d"), "malformed"),
    (_set((L, 5, "shortcut"), []), "malformed"),
    (_set((L, 5, "shortcut", "type"), "Residual"), "without a block"),
    (_set((L, 5, "shortcut", "type"), "os.system"), "unknown layer type"),
    (_set((L, 5, "block", "type"), 5), "unknown layer type"),
    (_set((L, 5, "block", L), "Conv2d"), "layer list"),
    (_set((L, 5, "type"), "residual"), "unknown layer type"),
    (_set((L, 5, "type"), "Sequential"), "layer list"),
    (_set((L, 5, "shortcut"), None), "do not match"),
    (_set((L, 3, "shortcut"), {"type": "Conv2d", "config": {
        "in_channels": 8, "out_channels": 8, "kernel_size": 1}}), "declares more"),
    (_set((L, 3, "block", L, 1, "config", "num_features"), 9), "declares more"),
    (_set((L, 3, "block", L, 1, "config", "num_features"), 7), "expected"),
    (_set((*CONV5, "out_channels"), 17), "declares more"),
    (_set((*CONV5, "kernel_size"), [3, 4]), "declares more"),
    (_set((*CONV5, "kernel_size"), [3, 3, 3]), "bad arguments|bad kernel_size"),
    (_set((*CONV5, "kernel_size"), [3, -3]), "bad kernel_size"),
    (_set((*CONV5, "kernel_size"), 3.0), "bad kernel_size"),
    (_set((*CONV5, "groups"), 0), "bad kernel_size or groups"),
    (_set((*CONV5, "groups"), True), "bad kernel_size or groups"),
    (_set((*CONV5, "groups"), 3), "invalid"),
    (_set((*CONV5, "groups"), 2), "expected"),
    (_set((*CONV5, "bias"), True), "declares more"),
    (_set((*CONV5, "in_channels"), -8), "bad in_channels"),
    (_set((*CONV5, "stride"), [0, 2]), "invalid"),
    (_set((*CONV5, "dtype"), "float16"), "invalid"),
    (_set((*CONV5, "init"), "zeros"), "invalid"),
    (_set((L, 7, "config"), {"kernel_size": 2}), "invalid"),
    (_set((L, 7), {"type": "MaxPool2d", "config": {"kernel_size": -1}}), "invalid"),
    (_set((L, 7), {"type": "Flatten", "config": {"start_dim": 2}}), "invalid"),
    (_set((L, 7), {"type": "Flatten", "config": [1]}), "malformed layer arguments"),
], ids=["no-block", "null-block", "string-block", "list-block", "unknown-key",
        "residual-config", "residual-layers", "block-in-a-layer", "shortcut-in-sequential",
        "number-shortcut", "string-shortcut", "list-shortcut", "blockless-shortcut",
        "hostile-shortcut-type", "number-type", "string-layers", "lowercase-type",
        "residual-as-sequential", "dropped-shortcut", "added-shortcut", "wider-batchnorm",
        "narrower-batchnorm", "wider-conv", "larger-kernel", "3-d-kernel", "negative-kernel",
        "float-kernel", "zero-groups", "bool-groups", "groups-not-dividing", "fewer-weights",
        "added-bias", "negative-channels", "zero-stride", "float16", "unknown-init",
        "pool-arguments", "negative-pool", "flatten-arguments",
        "flatten-config-list"])
def test_bad_cnn_architecture(tmp_path, resnet_file, edit, match):
    assert_format_error(_edited(tmp_path, resnet_file, edit), match)


@pytest.mark.parametrize("container", ["Residual", "Sequential", "mixed"])
def test_deep_nesting_is_refused(tmp_path, resnet_file, container):
    arch = {"type": "ReLU", "config": {}}
    for i in range(io.MAX_DEPTH + 1):
        if container == "Residual" or (container == "mixed" and i % 2):
            arch = {"type": "Residual", "block": arch, "shortcut": None}
        else:
            arch = {"type": "Sequential", "layers": [arch]}
    path = _edited(tmp_path, resnet_file, lambda a: a.update(type="Sequential", layers=[arch]))
    assert_format_error(path, "malformed")
    with pytest.raises(FormatError, match="malformed"):
        io.build(arch)


def test_nesting_up_to_the_bound_loads(tmp_path):
    model = nn.Conv2d(1, 1, 1, seed=0)
    for i in range(io.MAX_DEPTH):
        model = nn.Residual(model) if i % 2 else nn.Sequential(model)
    fastnn.save(model, tmp_path / "m.safetensors")
    x = np.random.default_rng(0).standard_normal((2, 1, 3, 3)).astype(np.float32)
    assert fastnn.load(tmp_path / "m.safetensors").forward(x).tobytes() == \
        model.forward(x).tobytes()


def test_too_many_modules_are_refused_before_any_is_built(tmp_path, resnet_file):
    relus = [{"type": "ReLU", "config": {}}] * (io.MAX_MODULES + 1)
    path = _edited(tmp_path, resnet_file, lambda a: a[L].extend(relus))
    assert_format_error(path, "modules")


def test_huge_convolution_is_not_allocated(tmp_path, resnet_file):
    """A Conv2d declared with 10**6 x 10**6 channels while the file holds a small one:
    FormatError, found from the description alone."""
    edit = _set(CONV5, {"in_channels": 10**6, "out_channels": 10**6, "kernel_size": [7, 7]})
    path = _edited(tmp_path, resnet_file, edit)
    assert refusal_peak(path, "declares more") < 10 * 2**20


@pytest.mark.parametrize("arrays_edit", [
    lambda a: a.pop("model.5.shortcut.1.running_var"),
    lambda a: a.update({"model.3.shortcut.0.weight": np.zeros((8, 8, 1, 1), np.float32)}),
    lambda a: a.update({"model.5.block.0.weight": a["model.5.block.0.weight"][:, :, ::-1]
                        .reshape(16, 8, 9)}),
    lambda a: a.update({"model.5.shortcut.0.weight":
                        a["model.5.shortcut.0.weight"].astype(np.float64)}),
    lambda a: a.update({"model.5.blocks.0.weight": a.pop("model.5.block.0.weight")}),
], ids=["missing-running-var", "extra-shortcut", "reshaped-conv", "float64-shortcut",
        "renamed"])
def test_mismatched_cnn_arrays(tmp_path, resnet_file, arrays_edit):
    assert_format_error(_edited(tmp_path, resnet_file, arrays_edit=arrays_edit))


# ---------------------------------------------------------------- resume


def cnn_trainer(seed, pool=nn.AvgPool2d):
    """A small CNN (Conv2d, BatchNorm2d, Residuals, pooling, Dropout) with Adam, two
    parameter groups and a cosine schedule."""
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, seed=seed), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False, seed=seed + 1),
                                  nn.BatchNorm2d(4))),
        nn.ReLU(), nn.MaxPool2d(2),
        nn.Residual(nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1, seed=seed + 2),
                                  nn.ReLU()),
                    nn.Sequential(pool(2), nn.Conv2d(4, 6, 1, seed=seed + 3))),
        nn.Flatten(), nn.Dropout(0.2, seed=seed + 4), nn.Linear(6 * 2 * 2, 3, seed=seed + 5))
    opt = optim.Adam(model, 0.01, weight_decay=1e-3)
    return trainer_for(model, opt=opt, schedule=optim.CosineDecay(opt, t_max=4, eta_min=1e-4))


def images(n=37, seed=0):
    """3 classes of 1 x 8 x 8 images: a bright row, column or diagonal, with noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = 0.3 * rng.standard_normal((n, 1, 8, 8))
    for i, k in enumerate(y):
        j = rng.integers(0, 8)
        if k == 0:
            X[i, 0, j, :] += 1
        elif k == 1:
            X[i, 0, :, j] += 1
        else:
            X[i, 0] += np.eye(8)
    return X.astype(np.float32), y


def run_epochs(trainer, X, y, epochs, checkpoint, batch_size=8):
    """Train as Trainer.fit would, batch by batch with train_step (fit takes 2-D X
    only): a new order from trainer.rng each epoch, the schedule stepped, the epoch
    counted and the Checkpoint callback called at each epoch's end."""
    for epoch in range(trainer.epoch + 1, trainer.epoch + 1 + epochs):
        trainer.model.train()
        order = trainer.rng.permutation(len(X))
        for lo in range(0, len(X), batch_size):
            idx = order[lo:lo + batch_size]
            trainer.train_step(X[idx], y[idx])
        trainer.schedule.step()
        trainer.epoch = epoch
        checkpoint.on_epoch_end(trainer, epoch, {})


def test_cnn_resume_from_a_checkpoint_is_bitwise_identical(tmp_path):
    X, y = images()
    straight = cnn_trainer(0)
    straight.rng = np.random.default_rng(11)
    run_epochs(straight, X, y, 4, fastnn.Checkpoint(tmp_path / "straight-{epoch}.safetensors"))

    first = cnn_trainer(0)
    first.rng = np.random.default_rng(11)
    checkpoint = fastnn.Checkpoint(tmp_path / "first-{epoch}.safetensors")
    run_epochs(first, X, y, 2, checkpoint)
    assert checkpoint.saved == [str(tmp_path / f"first-{e}.safetensors") for e in (1, 2)]

    resumed = cnn_trainer(1000)  # other initial weights and dropout seed
    assert states_differ(resumed.model.state_dict(), first.model.state_dict())
    resumed.load_checkpoint(tmp_path / "first-2.safetensors")
    assert_states_equal(resumed.model.state_dict(), first.model.state_dict())
    assert resumed.epoch == 2
    run_epochs(resumed, X, y, 2, fastnn.Checkpoint(tmp_path / "resumed-{epoch}.safetensors"))

    assert_states_equal(resumed.model.state_dict(), straight.model.state_dict())
    state = resumed.model.state_dict()
    assert {"3.block.1.running_mean", "6.shortcut.1.weight", "8.seed"} <= set(state)
    opt_a, opt_b = resumed.optimizer.state_dict(), straight.optimizer.state_dict()
    assert opt_a["step_count"] == opt_b["step_count"] == 4 * 5
    assert len(opt_a["state"]) == len(opt_b["state"])
    for sa, sb in zip(opt_a["state"], opt_b["state"]):
        for name in ("m", "v"):
            assert sa[name].tobytes() == sb[name].tobytes()
    assert resumed.schedule.get_last_lr() == straight.schedule.get_last_lr()
    assert resumed.rng.bit_generator.state == straight.rng.bit_generator.state
    # the files of the last epoch hold the same training state
    a = parse_safetensors((tmp_path / "resumed-4.safetensors").read_bytes())[0]
    b = parse_safetensors((tmp_path / "straight-4.safetensors").read_bytes())[0]
    assert list(a) == list(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)
    # and a model saved from it predicts as the trained one
    fastnn.save(resumed.model, tmp_path / "final.safetensors")
    loaded = fastnn.load(tmp_path / "final.safetensors")
    straight.model.eval()
    assert loaded.forward(X).tobytes() == straight.model.forward(X).tobytes()


def test_cnn_checkpoint_of_another_architecture_is_refused(tmp_path):
    X, y = images(16)
    trainer = cnn_trainer(0)
    run_epochs(trainer, X, y, 1, fastnn.Checkpoint(tmp_path / "ck.safetensors"))
    other = cnn_trainer(0, pool=nn.MaxPool2d)  # the same arrays, another architecture
    before = other.model.state_dict()
    with pytest.raises(FormatError, match="architecture"):
        other.load_checkpoint(tmp_path / "ck.safetensors")
    assert_states_equal(other.model.state_dict(), before)
    assert other.epoch == 0
