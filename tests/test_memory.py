"""Large arrays on huge-page boundaries (fastnn._memory): the arrays themselves, the
arenas of parameters and gradients, and the optimizers' state."""

import numpy as np
import pytest

from fastnn import _memory, nn, optim


def _address(a):
    return a.__array_interface__["data"][0]


# Whether this system places arrays on huge pages (Linux with transparent huge pages);
# elsewhere the arrays are ordinary ones
HUGE = _memory._huge(_memory.HUGE_PAGE) is not None


def _placed(a):
    """Whether a sits on its own huge-page-aligned mapping, as _memory places them."""
    return HUGE and _address(a) % _memory.HUGE_PAGE == 0 and a.base is not None


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
@pytest.mark.parametrize("nbytes", [0, 4, 4096, _memory.ALIGN_FROM - 8, _memory.ALIGN_FROM,
                                    _memory.ALIGN_FROM + 4 * 12345, 3 * _memory.HUGE_PAGE + 8])
def test_empty_and_zeros(dtype, nbytes):
    """The requested size and dtype, 1-D, C-contiguous and writeable; from ALIGN_FROM
    bytes on (where the system has huge pages) it starts on a HUGE_PAGE boundary of its
    own mapping, else it is an ordinary array."""
    size = nbytes // np.dtype(dtype).itemsize
    for make in (_memory.empty, _memory.zeros):
        a = make(size, dtype)
        assert a.shape == (size,) and a.dtype == dtype
        assert a.flags.c_contiguous and a.flags.writeable
        if a.nbytes >= _memory.ALIGN_FROM and HUGE:
            assert _placed(a)
        else:
            assert a.base is None
        a[...] = 7
        assert (a == 7).all()
    assert not _memory.zeros(size, dtype).any()


def test_a_large_model_and_its_adam_state_start_on_huge_pages(rng):
    """1024 x 1024 float32 weights (over 2 MiB): the arena's values and gradients, and
    Adam's moments, sit on huge pages where the system has them; the values are the
    layers' own."""
    model = nn.Sequential(nn.Linear(1024, 1024, seed=0), nn.ReLU(), nn.Linear(1024, 10, seed=1))
    weights = np.array(model[0].weight)
    (arena,) = model.arenas()
    assert arena.data.nbytes >= _memory.ALIGN_FROM
    for array in (arena.data, arena.grad):
        assert _placed(array) == HUGE
    assert not arena.grad.any()
    reference = nn.Linear(1024, 1024, seed=0)
    np.testing.assert_array_equal(weights, reference.weight)
    opt = optim.Adam(model, 1e-3)
    x = rng.standard_normal((8, 1024)).astype(np.float32)
    model.zero_grad()
    model.forward(x)
    model.backward(np.ones((8, 10), np.float32))
    opt.step()
    for state in opt.state_dict()["state"]:
        assert set(state) == {"m", "v"}
    for moments in opt._ensure_state():
        for array in moments.values():
            assert _placed(array) == HUGE
            assert array.shape == arena.data.shape


def test_a_small_model_keeps_plain_arrays():
    model = nn.Sequential(nn.Linear(8, 4, seed=0))
    (arena,) = model.arenas()
    assert arena.data.base is None and arena.grad.base is None
