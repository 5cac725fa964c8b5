"""fastnn on a shared machine: kernels run on the CPUs other processes leave free while
the thread count is the default, and idle OpenMP threads spin briefly unless the user
chose a wait policy."""

import json
import os
import subprocess
import sys

import pytest

import fastnn
from fastnn import _threads
from fastnn._kernels import _wait

_PROBE = r"""
import json, os, time
import numpy as np
import fastnn
from fastnn import _threads
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


def run_script(script, drop, **env_vars):
    """The JSON that `script` prints last, run in a fresh interpreter on the fastnn under
    test, with the environment variables `drop` removed and env_vars set."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_vars)
    site = os.path.dirname(os.path.dirname(fastnn.__file__))
    env["PYTHONPATH"] = site
    # cwd: not a source checkout, which would shadow the fastnn under test
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120, check=False, cwd=site)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def probe(**env_vars):
    """The wait probe with these wait variables (and no others)."""
    return run_script(_PROBE, _wait._USER_VARS, **env_vars)


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


class FakeClock:
    """What _FreeCPUs reads: the time, the busy seconds of the CPUs, this process's own."""

    def __init__(self, monkeypatch):
        self.now, self.busy, self.own = 100.0, 1000.0, 10.0
        monkeypatch.setattr(_threads.time, "monotonic", lambda: self.now)
        monkeypatch.setattr(_threads, "_busy_seconds", lambda cpus: self.busy)
        monkeypatch.setattr(_threads.os, "times",
                            lambda: os.times_result((self.own, 0.0, 0.0, 0.0, self.now)))

    def advance(self, seconds, others, own):
        """`seconds` pass while other processes keep `others` CPUs busy, this one `own`."""
        self.now += seconds
        self.busy += (others + own) * seconds
        self.own += own * seconds


@pytest.mark.parametrize("others, expected", [
    (0.0, 4), (0.3, 4), (0.7, 3), (1.0, 3), (2.2, 2), (2.9, 1), (3.5, 1), (8.0, 1)])
def test_free_cpus_counts_what_others_leave(monkeypatch, others, expected):
    clock = FakeClock(monkeypatch)
    free = _threads._FreeCPUs(4)
    free.cpus = {0, 1, 2, 3}
    assert free.threads() == 4  # no window yet: all of them
    clock.advance(_threads.ADAPT_PERIOD, others, own=1.5)
    assert free.threads() == expected


def test_free_cpus_looks_once_per_period_and_recovers(monkeypatch):
    clock = FakeClock(monkeypatch)
    free = _threads._FreeCPUs(2)
    free.cpus = {0, 1}
    free.threads()
    clock.advance(_threads.ADAPT_PERIOD, others=1.0, own=1.0)
    assert free.threads() == 1
    clock.advance(_threads.ADAPT_PERIOD / 2, others=0.0, own=2.0)
    assert free.threads() == 1  # within the period: the count stands
    clock.advance(_threads.ADAPT_PERIOD, others=0.0, own=2.0)
    assert free.threads() == 2  # the other process is gone
    clock.advance(100.0, others=2.0, own=0.0)  # a long pause starts a new window
    assert free.threads() == 2
    clock.advance(_threads.ADAPT_PERIOD, others=1.0, own=1.0)
    assert free.threads() == 1


def test_free_cpus_without_proc_stat_keeps_the_count(monkeypatch):
    monkeypatch.setattr(_threads, "_busy_seconds", lambda cpus: None)
    free = _threads._FreeCPUs(3)
    assert [free.threads() for _ in range(3)] == [3, 3, 3]


def test_busy_seconds_reads_this_machine():
    cpus = os.sched_getaffinity(0)
    first = _threads._busy_seconds(cpus)
    if first is None:
        pytest.skip("no /proc/stat")
    sum(i * i for i in range(10**6))  # keep a CPU busy a while
    assert _threads._busy_seconds(cpus) >= first


def test_a_count_that_was_set_is_used_as_it_is(monkeypatch):
    monkeypatch.setattr(_threads, "_busy_seconds", lambda cpus: 1e9)  # never consulted
    previous = (fastnn.get_num_threads(), _threads.num_threads_source())
    try:
        with fastnn.threads(2):
            assert _threads._free is None
            assert _threads.kernel_threads() == 2
        fastnn.set_num_threads(2)
        assert _threads._free is None
        assert _threads.kernel_threads() == fastnn.get_num_threads() == 2
    finally:
        _threads._apply(*previous)


_BUSY_PROBE = r"""
import json, subprocess, sys, time
import numpy as np
import fastnn
from fastnn import _threads

a = np.ones((128, 128), np.float32)
busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
try:
    seen = []
    end = time.monotonic() + 8 * _threads.ADAPT_PERIOD
    while time.monotonic() < end:
        fastnn.ops.matmul(a, a)
        seen.append(_threads.kernel_threads())
finally:
    busy.kill()
print(json.dumps({"n": fastnn.get_num_threads(), "last": seen[-1],
                  "source": _threads.num_threads_source()}))
"""


@pytest.mark.skipif(not fastnn.openmp_enabled(), reason="one thread without OpenMP")
@pytest.mark.skipif(_threads.usable_cpus() < 2, reason="needs 2 CPUs")
@pytest.mark.skipif(_threads._busy_seconds({0}) is None, reason="no /proc/stat")
def test_a_default_count_gives_way_to_a_busy_process():
    got = run_script(_BUSY_PROBE, _threads._ENV_VARS)
    assert got["source"] == "usable CPUs"
    assert got["last"] < got["n"] == _threads.usable_cpus()  # get_num_threads stays
