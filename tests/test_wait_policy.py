"""How fastnn's OpenMP threads wait: bounded spinning unless the user chose a policy."""

import json
import os
import subprocess
import sys

import pytest

import fastnn
from fastnn._kernels import _wait

_PROBE = r"""
import json, os, time
import numpy as np
import fastnn
from fastnn._kernels import _wait

a = np.ones((256, 256), np.float32)
fastnn.set_num_threads(2)
fastnn.ops.matmul(a, a)
start = os.times()
for _ in range(30):
    fastnn.ops.matmul(a, a)
    time.sleep(0.02)
end = os.times()
print(json.dumps({
    "policy": _wait.policy(),
    "spincount": os.environ.get("GOMP_SPINCOUNT"),
    "cpu": (end.user + end.system) - (start.user + start.system),
}))
"""


def probe(**env_vars):
    """Run the probe in a fresh interpreter with these wait variables (and no others)."""
    env = {k: v for k, v in os.environ.items() if k not in _wait._USER_VARS}
    env.update(env_vars)
    site = os.path.dirname(os.path.dirname(fastnn.__file__))
    env["PYTHONPATH"] = site
    result = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                            text=True, timeout=120, check=False, cwd=site)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_default_bounds_spinning_without_leaking_the_setting():
    got = probe()
    assert got["policy"] == [f"GOMP_SPINCOUNT={_wait.SPIN_COUNT}", "fastnn's default"]
    assert got["spincount"] is None  # child processes see the user's environment


@pytest.mark.parametrize("env", [{"OMP_WAIT_POLICY": "active"}, {"GOMP_SPINCOUNT": "123"},
                                 {"OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": "7"}])
def test_a_policy_the_user_set_is_kept(env):
    got = probe(**env)
    assert got["spincount"] == env.get("GOMP_SPINCOUNT")
    setting, source = got["policy"]
    assert source == "environment"
    for name, value in env.items():
        assert f"{name}={value}" in setting


@pytest.mark.skipif(not fastnn.openmp_enabled(), reason="a build without OpenMP never spins")
@pytest.mark.skipif(fastnn._threads.usable_cpus() < 2, reason="needs 2 CPUs to spin on")
def test_idle_threads_give_their_core_away():
    # Between kernels, the worker thread sleeps soon: far less CPU time than with the
    # runtime's own default, which spins for milliseconds while the caller sleeps.
    ours = probe()["cpu"]
    spinning = probe(GOMP_SPINCOUNT="300000")["cpu"]
    assert ours < 0.5 * spinning, (ours, spinning)


def test_show_config_reports_the_policy():
    setting, source = _wait.policy()
    assert fastnn.show_config(mode="dicts")["openmp_wait"] == f"{setting} ({source})"
