"""Thread control (set_num_threads, get_num_threads, threads) and show_config."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import _threads

BAD_COUNTS = [0, -1, 2.0, 1.5, True, False, "2", None, [2]]


def blas_threads():
    info = _threads.blas_info()
    assert info, "threadpoolctl found no BLAS for fastnn"
    return [n for _, _, _, n, _ in info]


def blas_for(n):
    """BLAS's expected thread count when fastnn has n: one (it runs inside fastnn's
    OpenMP threads), or n in a build without OpenMP."""
    return 1 if fastnn.openmp_enabled() else n


# ---------------------------------------------------------------- in this process


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_set_get_round_trip(n):
    fastnn.set_num_threads(n)
    assert fastnn.get_num_threads() == n
    assert isinstance(fastnn.get_num_threads(), int)


def test_numpy_integer_is_accepted():
    fastnn.set_num_threads(np.int64(2))
    assert fastnn.get_num_threads() == 2
    assert type(fastnn.get_num_threads()) is int
    with fastnn.threads(np.int32(1)):
        assert fastnn.get_num_threads() == 1


@pytest.mark.parametrize("n", BAD_COUNTS, ids=repr)
def test_set_num_threads_rejects(n):
    fastnn.set_num_threads(2)
    with pytest.raises(ValueError, match="positive int"):
        fastnn.set_num_threads(n)
    assert fastnn.get_num_threads() == 2


@pytest.mark.parametrize("n", BAD_COUNTS, ids=repr)
def test_threads_rejects(n):
    fastnn.set_num_threads(2)
    with pytest.raises(ValueError, match="positive int"), fastnn.threads(n):
        pass  # pragma: no cover
    assert fastnn.get_num_threads() == 2


def test_threads_restores_previous_count():
    fastnn.set_num_threads(3)
    with fastnn.threads(1) as n:
        assert n == 1
        assert fastnn.get_num_threads() == 1
        with fastnn.threads(2):
            assert fastnn.get_num_threads() == 2
        assert fastnn.get_num_threads() == 1
    assert fastnn.get_num_threads() == 3


def test_threads_restores_when_the_body_raises():
    fastnn.set_num_threads(2)
    with pytest.raises(KeyError), fastnn.threads(1):
        assert fastnn.get_num_threads() == 1
        raise KeyError("boom")
    assert fastnn.get_num_threads() == 2
    assert blas_threads() == [blas_for(2)] * len(blas_threads())


def test_threads_restores_the_source():
    fastnn.set_num_threads(2)
    with fastnn.threads(1):
        assert fastnn.show_config(mode="dicts")["num_threads_source"] == "threads()"
    assert fastnn.show_config(mode="dicts")["num_threads_source"] == "set_num_threads()"


@pytest.mark.parametrize("n", [1, 2])
def test_set_num_threads_sets_blas_threads(n):
    fastnn.set_num_threads(n)
    assert blas_threads() == [blas_for(n)] * len(blas_threads())


def test_threads_sets_and_restores_blas_threads():
    fastnn.set_num_threads(2)
    with fastnn.threads(1):
        assert blas_threads() == [1] * len(blas_threads())
    assert blas_threads() == [blas_for(2)] * len(blas_threads())


# ---------------------------------------------------------------- the environment

_PROBE = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import fastnn
    from fastnn import _threads
    n = fastnn.get_num_threads()
print(json.dumps({
    "n": n,
    "source": _threads.num_threads_source(),
    "usable": _threads.usable_cpus(),
    "blas": [t for _, _, _, t, _ in _threads.blas_info()],
    "warnings": [[w.category.__name__, str(w.message)] for w in caught
                 if "NUM_THREADS" in str(w.message)],
}))
"""


def probe(**env_vars):
    """Import fastnn in a fresh interpreter with these thread variables (and no others)."""
    env = {k: v for k, v in os.environ.items() if k not in _threads._ENV_VARS}
    env.update(env_vars)
    site = os.path.dirname(os.path.dirname(fastnn.__file__))
    env["PYTHONPATH"] = site
    # cwd: `python -c` puts it first on sys.path; a source checkout there would shadow
    # the fastnn under test.
    result = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                            text=True, timeout=60, check=False, cwd=site)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("env, expected, source", [
    ({"FASTNN_NUM_THREADS": "3"}, 3, "FASTNN_NUM_THREADS"),
    ({"FASTNN_NUM_THREADS": " 3 "}, 3, "FASTNN_NUM_THREADS"),
    ({"OMP_NUM_THREADS": "5"}, 5, "OMP_NUM_THREADS"),
    ({"OMP_NUM_THREADS": "4,2"}, 4, "OMP_NUM_THREADS"),
    ({"FASTNN_NUM_THREADS": "3", "OMP_NUM_THREADS": "5"}, 3, "FASTNN_NUM_THREADS"),
    ({"FASTNN_NUM_THREADS": "", "OMP_NUM_THREADS": "5"}, 5, "OMP_NUM_THREADS"),
], ids=["fastnn", "fastnn-spaces", "omp", "omp-nested", "fastnn-first", "fastnn-empty"])
def test_count_from_environment(env, expected, source):
    got = probe(**env)
    assert got["n"] == expected
    assert got["source"] == source
    assert got["warnings"] == []


def test_default_is_usable_cpus():
    got = probe()
    assert got["n"] == got["usable"] >= 1
    assert got["source"] == "usable CPUs"


@pytest.mark.parametrize("env, falls_back_to_omp", [
    ({"FASTNN_NUM_THREADS": "abc"}, False),
    ({"FASTNN_NUM_THREADS": "0"}, False),
    ({"FASTNN_NUM_THREADS": "-2"}, False),
    ({"FASTNN_NUM_THREADS": "abc", "OMP_NUM_THREADS": "5"}, True),
], ids=["abc", "zero", "negative", "abc-then-omp"])
def test_malformed_environment_warns_and_falls_back(env, falls_back_to_omp):
    got = probe(**env)
    assert got["n"] == (5 if falls_back_to_omp else got["usable"])
    assert got["n"] >= 1
    assert len(got["warnings"]) == 1
    category, message = got["warnings"][0]
    assert category == "RuntimeWarning"
    assert "FASTNN_NUM_THREADS" in message and repr(env["FASTNN_NUM_THREADS"]) in message


def test_environment_count_reaches_blas():
    got = probe(FASTNN_NUM_THREADS="1")
    assert got["blas"] and got["blas"] == [1] * len(got["blas"])


# ---------------------------------------------------------------- show_config


def test_show_config_prints(capsys):
    fastnn.set_num_threads(2)
    assert fastnn.show_config() is None
    text = capsys.readouterr().out
    for word in ("OpenMP", "threads", "BLAS"):
        assert any(word in line for line in text.splitlines()), f"no {word} line in:\n{text}"
    threads_line = next(line for line in text.splitlines() if "threads:" in line)
    assert " 2 " in threads_line and "set_num_threads()" in threads_line


def test_show_config_dicts():
    fastnn.set_num_threads(1)
    info = fastnn.show_config(mode="dicts")
    assert isinstance(info, dict)
    assert {"openmp", "num_threads", "blas", "compile_flags"} <= set(info)
    assert info["num_threads"] == 1
    assert info["num_threads_source"] == "set_num_threads()"
    assert info["openmp"] is fastnn.openmp_enabled()
    assert isinstance(info["blas"], list) and info["blas"]
    assert [entry["num_threads"] for entry in info["blas"]] == [1] * len(info["blas"])
    assert isinstance(info["compile_flags"], str) and info["compile_flags"]


@pytest.mark.parametrize("mode", ["bad", "dict", None, ""])
def test_show_config_rejects_unknown_mode(mode, capsys):
    with pytest.raises(ValueError, match="mode"):
        fastnn.show_config(mode=mode)
    assert capsys.readouterr().out == ""
