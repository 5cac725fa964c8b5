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


# ---------------------------------------------------------------- the cap


def test_cap_is_a_multiple_of_the_usable_cpus():
    cap = _threads.max_threads()
    assert cap == max(_threads.MIN_THREAD_CAP,
                      _threads.MAX_THREADS_PER_CPU * _threads.usable_cpus())
    fastnn.set_num_threads(cap)
    assert fastnn.get_num_threads() == cap


@pytest.mark.parametrize("n", [100_000, 2**31 - 1, 2**63])
def test_counts_over_the_cap_are_refused(n):
    fastnn.set_num_threads(2)
    with pytest.raises(ValueError, match=f"at most {_threads.max_threads()}"):
        fastnn.set_num_threads(n)
    with pytest.raises(ValueError, match="at most"), fastnn.threads(n):
        pass  # pragma: no cover
    with pytest.raises(ValueError, match="at most"):
        fastnn.set_num_threads(_threads.max_threads() + 1)
    assert fastnn.get_num_threads() == 2


def test_cli_threads_over_the_cap_is_a_usage_error(capsys):
    from fastnn.__main__ import main

    with pytest.raises(SystemExit) as raised:
        main(["train", "--threads", "100000"])
    assert raised.value.code == 2
    assert "--threads: number of threads must be at most" in capsys.readouterr().err


_RUN_KERNEL = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import numpy as np
    import fastnn
    from fastnn import _threads, ops
    y = ops.relu(np.full(10**6, -1.0, np.float32))
print(json.dumps({"n": fastnn.get_num_threads(), "usable": _threads.usable_cpus(),
                  "zeros": int((y == 0).sum()),
                  "warnings": [str(w.message) for w in caught if "NUM_THREADS" in str(w.message)]}))
"""


@pytest.mark.parametrize("env", [
    {"FASTNN_NUM_THREADS": "100000"},
    {"FASTNN_NUM_THREADS": str(2**31 - 1)},
    {"OMP_NUM_THREADS": "100000"},
], ids=["fastnn-100000", "fastnn-int-max", "omp-100000"])
def test_environment_over_the_cap_warns_and_falls_back(env):
    """The count falls back to the CPUs, and a threaded kernel then runs."""
    clean = {k: v for k, v in os.environ.items() if k not in _threads._ENV_VARS}
    site = os.path.dirname(os.path.dirname(fastnn.__file__))
    result = subprocess.run([sys.executable, "-c", _RUN_KERNEL], env={**clean, **env,
                            "PYTHONPATH": site}, capture_output=True, text=True,
                            timeout=120, check=False, cwd=site)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["n"] == got["usable"]
    assert got["zeros"] == 10**6
    (message,) = got["warnings"]
    name, value = next(iter(env.items()))
    assert name in message and repr(value) in message and "at most" in message


# ---------------------------------------------------------------- fork

# The parent runs 2-thread kernels first: then GNU libgomp's thread pool exists, and a
# child that starts a team of more than one thread waits for it forever. The children
# run kernels and a training step, each in a process the parent kills after a time limit.
# "unthreaded": the parent never had more than one thread, so its child may have two.
_FORK_SCRIPT = """
import json, multiprocessing, os, sys, time, warnings
import numpy as np
import fastnn
from fastnn import losses, nn, ops, optim


def work():
    \"\"\"A kernel, a matrix product and one epoch of training; what the child saw.\"\"\"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fastnn.set_num_threads(2)
    relu = ops.relu(np.full(10**6, -1.0, np.float32))
    a = np.random.default_rng(0).standard_normal((512, 256)).astype(np.float32)
    product = ops.matmul(a, a.T)
    X = np.random.default_rng(1).standard_normal((256, 20)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    model = nn.Sequential(nn.Linear(20, 32, seed=0), nn.ReLU(), nn.Linear(32, 2, seed=1))
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model, 0.1),
                             progress=False)
    history = trainer.fit(X, y, epochs=1, batch_size=64)
    return {"threads": fastnn.get_num_threads(),
            "source": fastnn.show_config(mode="dicts")["num_threads_source"],
            "warned": any("forked" in str(w.message) for w in caught),
            "relu_ok": bool((relu == 0).all()),
            "matmul_err": float(np.abs(product - a.astype(np.float64) @ a.T).max()),
            "loss": history["loss"][-1]}


def wait(pid, seconds):
    for _ in range(int(seconds * 10)):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return "hung"


fastnn.set_num_threads(1 if sys.argv[1] == "unthreaded" else 2)
ops.relu(np.ones(10**6, np.float32))
big = np.ones((1024, 512), np.float32)
ops.matmul(big, big.T)
result = {}
if sys.argv[1] != "multiprocessing":
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, json.dumps(work()).encode())
        os._exit(0)
    os.close(write)
    result["exit"] = wait(pid, 60)
    result["child"] = json.loads(os.read(read, 1 << 16).decode() or "null")
else:
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as workers:
        try:
            result["child"] = workers.apply_async(work).get(timeout=60)
            result["exit"] = 0
        except multiprocessing.TimeoutError:
            result["exit"] = "hung"
            workers.terminate()
result["parent_threads"] = fastnn.get_num_threads()
print(json.dumps(result))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("how", ["os.fork", "multiprocessing", "unthreaded"])
def test_forked_child_runs_kernels_and_training(how):
    site = os.path.dirname(os.path.dirname(fastnn.__file__))
    env = {k: v for k, v in os.environ.items() if k not in _threads._ENV_VARS}
    result = subprocess.run([sys.executable, "-c", _FORK_SCRIPT, how],
                            env={**env, "PYTHONPATH": site}, capture_output=True, text=True,
                            timeout=300, check=False, cwd=site)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["exit"] == 0, f"the child {got['exit']}: {result.stderr}"
    child = got["child"]
    assert child["relu_ok"] and child["matmul_err"] < 1e-3 and np.isfinite(child["loss"])
    assert got["parent_threads"] == (1 if how == "unthreaded" else 2)  # its own count
    if fastnn.openmp_enabled() and how != "unthreaded":
        assert child["threads"] == 1 and child["source"] == "forked process"
        assert child["warned"]  # asking the child for 2 threads says why it keeps 1
    else:
        assert child["threads"] == 2 and not child["warned"]


# ---------------------------------------------------------------- one-thread regions


@pytest.mark.skipif(not fastnn.openmp_enabled(), reason="a build without OpenMP")
def test_one_thread_region_runs_without_the_runtime():
    from fastnn._kernels import _openmp

    # omp_serial.h: a region of one thread asked for outside any region is a plain call
    # (no team, so its level stays 0); two threads still get libgomp's team (level 1)
    assert _openmp.region_level(1) == 0
    assert _openmp.region_level(2) == 1


def test_every_kernel_module_with_regions_includes_the_shortcut():
    from pathlib import Path

    folder = Path(fastnn.__file__).parent / "_kernels"
    sources = sorted(folder.glob("*.pyx"))
    if not sources:
        pytest.skip("an installed package: no .pyx sources beside it")
    texts = {p.name: p.read_text() for p in sources}
    parallel = [name for name, text in texts.items()
                if "prange" in text or "omp parallel" in text]
    assert parallel, "no kernel module has a parallel region?"
    missing = [name for name in parallel if 'cdef extern from "omp_serial.h"' not in texts[name]]
    assert not missing, f"parallel regions without omp_serial.h: {missing}"


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
