"""Module.summary: the layers, nested ones indented, output shapes, parameter counts,
trainable and frozen; and Module.load_state_dict(strict=False)."""

import re

import numpy as np
import pytest

from fastnn import nn


def model():
    block = nn.Sequential(nn.Linear(16, 16, seed=1), nn.BatchNorm1d(16))
    return nn.Sequential(nn.Linear(8, 16, seed=0), nn.ReLU(), nn.Residual(block),
                         nn.Dropout(0.5, seed=0), nn.Linear(16, 3, seed=2))


def rows(text):
    """{first cell with its indentation: the other cells} of the table's rows (cells
    are separated by 2 or more spaces)."""
    out = {}
    for line in text.splitlines():
        indent = line[:len(line) - len(line.lstrip())]
        first, *rest = re.split(r"\s{2,}", line.strip())
        out[indent + first] = rest
    return out


def test_summary_lists_nested_layers_counts_and_totals():
    m = model()
    m[2].requires_grad_(False)
    text = m.summary()
    lines = text.splitlines()
    assert lines[0].split() == ["Layer", "(type)", "Param", "#", "Trainable"]
    assert "Output shape" not in text  # no input_shape, no shapes
    # nesting shows as indentation, two spaces per level
    assert "\n  2 (Residual)" in text
    assert "\n    block (Sequential)" in text
    assert "\n      0 (Linear)" in text
    r = rows(text)
    linear0, block_linear, bn, head = 8 * 16 + 16, 16 * 16 + 16, 2 * 16, 16 * 3 + 3
    assert r["  0 (Linear)"][0] == f"{linear0:,}"
    assert r["  0 (Linear)"][1] == "yes"
    assert r["  1 (ReLU)"] == ["0", "-"]
    assert r["  2 (Residual)"] == [f"{block_linear + bn:,}", "no"]
    assert r["      0 (Linear)"] == [f"{block_linear:,}", "no"]
    assert r["  4 (Linear)"] == [f"{head:,}", "yes"]
    assert r["      1 (BatchNorm1d)"] == [str(bn), "no"]  # gamma and beta, not running stats
    assert r["Sequential"] == [f"{linear0 + block_linear + bn + head:,}", "partly"]
    total = sum(p.size for p in m.parameters())
    frozen = block_linear + bn
    assert f"Total params: {total:,}" in lines
    assert f"Trainable params: {total - frozen:,}" in lines
    assert f"Frozen params: {frozen:,}" in lines


def test_summary_output_shapes_of_a_cnn():
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, seed=0), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Residual(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, seed=1),
                                                nn.BatchNorm2d(8)),
                                  nn.Conv2d(8, 8, 1, seed=2)),
                      nn.GlobalAvgPool2d(), nn.Flatten(), nn.Linear(8, 10, seed=3))
    text = m.summary((3, 12, 12))
    assert text.splitlines()[0].split()[:4] == ["Layer", "(type)", "Output", "shape"]
    r = rows(text)
    assert r["  0 (Conv2d)"] == ["(N, 8, 12, 12)", f"{8 * 3 * 9 + 8:,}", "yes"]
    assert r["  2 (MaxPool2d)"][0] == "(N, 8, 6, 6)"
    assert r["    shortcut (Conv2d)"] == ["(N, 8, 6, 6)", str(8 * 8 + 8), "yes"]
    assert r["  4 (GlobalAvgPool2d)"] == ["(N, 8)", "0", "-"]
    assert r["Sequential"][0] == "(N, 10)"
    assert "Input: (N, 3, 12, 12), float32" in text.splitlines()
    assert m.summary([3, 12, 12]) == text


def test_summary_leaves_modes_statistics_and_plans_alone():
    m = model()
    m[2].eval()  # a mixed state to restore
    modes = [mod.training for _, mod in m.modules()]
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    m(x)
    assert m._plan is not None
    before = m.state_dict()
    r = rows(m.summary(8))
    assert r["  3 (Dropout)"][0] == "(N, 16)"
    assert [mod.training for _, mod in m.modules()] == modes
    assert m.compiled and m[2].block.compiled
    assert not any("forward" in mod.__dict__ for _, mod in m.modules())
    after = m.state_dict()  # running statistics and Dropout's step: unchanged
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    m(x)
    assert m._plan is not None  # compiled again after summary's layer-by-layer pass


def test_summary_counts_a_shared_layer_once():
    shared = nn.Linear(4, 4, seed=0)
    m = nn.Sequential(shared, nn.ReLU(), shared)
    assert "Total params: 20" in m.summary((4,)).splitlines()


def test_summary_bad_input_shape():
    m = model()
    with pytest.raises(TypeError, match="input_shape"):
        m.summary(2.5)
    with pytest.raises(ValueError, match="input_shape"):
        m.summary((0,))
    with pytest.raises(ValueError, match=r"Linear: expected input of shape \(N, 8\)"):
        m.summary((9,))
    assert all(mod.training for _, mod in m.modules())  # restored after the error too


# ---------------------------------------------------------------- load_state_dict


def test_load_state_dict_strict_false_loads_the_common_names():
    m, other = model(), model()
    for p in other.parameters():
        p += 1
    state = other.state_dict()
    del state["4.bias"]
    state["9.weight"] = np.zeros(3, np.float32)
    bias_before = np.array(m[4].bias)
    missing, unexpected = m.load_state_dict(state, strict=False)
    assert missing == ["4.bias"] and unexpected == ["9.weight"]
    np.testing.assert_array_equal(m[0].weight, other[0].weight)
    np.testing.assert_array_equal(m[4].bias, bias_before)  # missing: left alone


def test_load_state_dict_strict_raises_listing_both_and_returns_nothing_missing():
    m = model()
    state = m.state_dict()
    result = m.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    del state["0.bias"]
    state["extra"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"missing \['0\.bias'\], unexpected \['extra'\]"):
        m.load_state_dict(state)


def test_load_state_dict_shape_mismatch_raises_even_when_not_strict():
    m = model()
    before = m.state_dict()
    state = {k: v + 1 for k, v in before.items() if v.dtype.kind == "f"}
    state["4.weight"] = np.zeros((3, 16), np.float32)  # transposed
    with pytest.raises(ValueError, match=r"4\.weight has shape \(3, 16\)"):
        m.load_state_dict(state, strict=False)
    for name, value in m.state_dict().items():  # nothing was copied
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_load_state_dict_strict_false_checks_the_batchnorm_statistics_it_loads():
    model = nn.Sequential(nn.Linear(3, 4, seed=0), nn.BatchNorm1d(4))
    missing, _ = model.load_state_dict({"1.running_mean": np.ones(4, np.float32)},
                                       strict=False)
    assert "1.running_var" in missing
    np.testing.assert_array_equal(model[1].running_mean, 1)
    with pytest.raises(ValueError, match=r"1\.running_var"):
        model.load_state_dict({"1.running_var": -np.ones(4, np.float32)}, strict=False)
    np.testing.assert_array_equal(model[1].running_var, 1)
