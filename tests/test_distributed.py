"""Data-parallel training over MPI: jobs of 2 ranks (`mpiexec -n 2`, on this host)
run tests/mpi/worker.py; their results are compared with each other and with a
single process here. Skipped without mpi4py or mpiexec (pip install 'fastnn[mpi]').

Loopback only: MPICH's launcher (hydra) starts both ranks on this host and they talk
through shared memory; no network is needed.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py")  # the package only: MPI is not initialized here

import _mpi_recipes as recipes

import fastnn
from fastnn import nn
from fastnn.distributed import split_rows


def _mpiexec():
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
WORKER = Path(__file__).parent / "mpi" / "worker.py"
JOB_TIMEOUT = 120  # seconds; a job that hangs fails the test instead of the suite
FAIL_TIMEOUT = 5  # FASTNN_MPI_TIMEOUT for the failure tests


def run_job(args, out, timeout=JOB_TIMEOUT, **env):
    """Run `mpiexec -n 2 python ARGS...`; returns (returncode, stdout, stderr, seconds)."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("FASTNN_NUM_THREADS", "OMP_NUM_THREADS")}
    root = str(Path(fastnn.__file__).resolve().parents[1])
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, environ.get("PYTHONPATH")]))
    environ.update(env)
    start = time.monotonic()
    proc = subprocess.run([MPIEXEC, "-n", "2", sys.executable, *args], cwd=out, env=environ,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


def ranks(out, mode):
    return [dict(np.load(out / f"{mode}-rank{r}.npz")) for r in (0, 1)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The 2-rank training job (see worker.train) and its output folder."""
    out = tmp_path_factory.mktemp("mpi")
    rc, stdout, stderr, _ = run_job([str(WORKER), "train", str(out)], out)
    assert rc == 0, f"mpiexec failed ({rc}):\n{stdout}\n{stderr}"
    return out


@pytest.fixture(scope="module")
def data():
    return recipes.data(), recipes.data(57, seed=1)


def single(model, data, **fit):
    """The same recipe in one process, one thread."""
    (X, y), _ = data
    with fastnn.threads(1):
        trainer = recipes.trainer(model)
        history = trainer.fit(X, y, **{**recipes.FIT, **fit})
    return trainer, history


# ---------------------------------------------------------------- without MPI


def test_split_rows_covers_the_batch_without_single_rows():
    for n in range(2, 40):
        for size in (1, 2, 3, 4, 7):
            parts = [split_rows(n, r, size) for r in range(size)]
            assert parts[0][0] == 0 and max(hi for _, hi in parts) == n
            rows = [hi - lo for lo, hi in parts]
            assert sum(rows) == n and all(r != 1 for r in rows), (n, size, parts)
            assert max(rows) - min(r for r in rows if r) <= 1


def test_plain_fastnn_train_does_not_import_mpi4py(tmp_path):
    code = ("import sys, fastnn.__main__ as m; m.main(['train', '--limit', '60', '--epochs', "
            "'1', '--hidden', '8', '--out', '', '--plot', '', '--quiet']); "
            "assert 'mpi4py' not in sys.modules, 'mpi4py imported'")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI", "OMPI", "PMIX"))}
    env.pop("FASTNN_MNIST_DIR", None)
    env["PYTHONPATH"] = str(Path(fastnn.__file__).resolve().parents[1])
    pytest.importorskip("sklearn")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_comm_must_be_a_communicator():
    model = recipes.plain_model()
    with pytest.raises(TypeError, match="mpi4py communicator"):
        recipes.trainer(model, comm=True)


def test_sync_batchnorm_convert(rng):
    model = nn.mlp(6, 3, [8, 8], batch_norm=True, dropout=0.2, seed=0, dtype=np.float64)
    model[0].bias.requires_grad = False
    x = rng.standard_normal((10, 6))
    model(x)  # running statistics and dropout steps that are not the initial ones
    state = model.state_dict()
    arena, kinds = model.arena, [type(m) for m in model.layers]
    synced = nn.SyncBatchNorm.convert(model)
    assert [type(m).__name__ for m in synced.layers].count("SyncBatchNorm") == 2
    # new layers, all parameters in one arena of the copy's own; the model as it was
    assert synced.arena is not None and synced.arena is not arena
    assert not set(map(id, synced.layers)) & set(map(id, model.layers))
    assert model.arena is arena and not arena.retired
    assert [type(m) for m in model.layers] == kinds
    assert [p.requires_grad for p in synced.parameters()] == [
        p.requires_grad for p in model.parameters()]
    copied = synced.state_dict()
    assert list(copied) == list(state)
    for name, value in state.items():
        np.testing.assert_array_equal(copied[name], value, err_msg=name)
    np.testing.assert_array_equal(synced(x), model(x))
    with pytest.raises(TypeError, match="Sequential"):
        nn.SyncBatchNorm.convert(nn.Linear(2, 2))


def test_sync_batchnorm_convert_nested_and_in_eval_mode(rng):
    inner = nn.Sequential(nn.BatchNorm1d(4, dtype=np.float64), nn.ReLU())
    model = nn.Sequential(nn.Linear(3, 4, seed=0, dtype=np.float64), inner).eval()
    synced = nn.SyncBatchNorm.convert(model)
    assert type(synced[1][0]) is nn.SyncBatchNorm and not synced.training
    assert synced.arena is not None and synced[1].arena is None  # a part of the copy's
    x = rng.standard_normal((5, 3))
    np.testing.assert_array_equal(synced(x), model(x))

    class Custom(nn.Module):  # no config(): cannot be rebuilt
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="cannot rebuild a Custom"):
        nn.SyncBatchNorm.convert(nn.Sequential(nn.Linear(3, 3), Custom()))


class _Communicator:
    """Enough of an mpi4py communicator for DataParallel's first checks."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 2

    def Iallreduce(self, *args, **kwargs):
        raise AssertionError("no collective before the model is checked")


def test_data_parallel_needs_a_model_that_owns_one_arena():
    """Layers of another model keep their parameters in its arena: a Sequential of them
    and a new layer lies in two arenas, a slice fills part of one. Both fail before MPI
    starts, saying how to get a model that owns its parameters."""
    base = recipes.plain_model()
    mixed = nn.Sequential(*base.layers[:2], nn.Linear(16, recipes.N_CLASSES, dtype=np.float64))
    for model, where in ((mixed, "lie in 2 arenas"), (base[:3], "fill only part of an arena")):
        with pytest.raises(TypeError, match=where) as info:
            recipes.trainer(model, comm=_Communicator())
        assert "fastnn.io.build(fastnn.io.architecture(model))" in str(info.value)
    assert "mpi4py.MPI" not in sys.modules


def test_sync_batchnorm_without_comm_is_batchnorm(rng):
    x = rng.standard_normal((20, 5))
    a, b = nn.SyncBatchNorm(5, dtype=np.float64), nn.BatchNorm1d(5, dtype=np.float64)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    np.testing.assert_array_equal(a.backward(x), b.backward(x))
    assert fastnn.io.architecture(a) == fastnn.io.architecture(b)


# ---------------------------------------------------------------- 2 ranks


def test_two_ranks_give_the_single_process_weights(trained, data):
    """No BatchNorm or Dropout: the same global batches (193 samples, batch 32: the
    lone last sample joins the last batch, 33 rows split 17 + 16), the same L2
    penalty, clipping and schedule; rank 1 starts from other weights (rank 0's are
    broadcast)."""
    (Xv, yv) = data[1]
    trainer, history = single(recipes.plain_model(), data, validation_data=(Xv, yv))
    r0, r1 = ranks(trained, "plain")
    np.testing.assert_array_equal(r0["weights"], r1["weights"])
    np.testing.assert_allclose(r0["weights"], trainer.model.arena.data, rtol=0, atol=1e-12)
    for key in ("loss", "val_loss", "accuracy"):
        np.testing.assert_allclose(r0[key], history[key], rtol=1e-12)
    result = trainer.evaluate(Xv, yv)
    np.testing.assert_allclose(r0["eval"], [result["loss"], result["accuracy"]], rtol=1e-12)


@pytest.mark.parametrize("kind", ["plain", "syncbn", "overlap"])
def test_a_rank_without_rows_in_a_batch(trained, data, kind):
    """99 samples in batches of 32: the last batch (3 rows) goes to rank 0 alone; rank 1
    still takes part in every collective, in the same order (SyncBatchNorm's, and the
    overlapped buckets')."""
    (X, y), _ = data
    model = recipes.plain_model() if kind == "plain" else recipes.bn_model(nn.BatchNorm1d)
    with fastnn.threads(1):
        trainer = recipes.trainer(model)
        trainer.fit(X[:99], y[:99], **recipes.FIT)
    r0, r1 = ranks(trained, f"uneven-{kind}")
    np.testing.assert_array_equal(r0["state"], r1["state"])
    np.testing.assert_allclose(r0["weights"], trainer.model.arena.data, rtol=0, atol=1e-8)


def test_overlapped_allreduce_gives_the_same_weights(trained, data):
    trainer, _ = single(recipes.plain_model(), data)
    r0, r1 = ranks(trained, "overlap")
    np.testing.assert_array_equal(r0["weights"], r1["weights"])
    np.testing.assert_allclose(r0["weights"], trainer.model.arena.data, rtol=0, atol=1e-12)


def test_threads_default_to_the_ranks_share_of_the_cores(trained):
    from fastnn._threads import usable_cpus

    assert int(ranks(trained, "plain")[0]["threads"]) == max(1, usable_cpus() // 2)


def test_sync_batchnorm_trains_as_one_process_with_batchnorm(trained, data):
    trainer, _ = single(recipes.bn_model(nn.BatchNorm1d), data)
    state = trainer.model.state_dict()
    r0, r1 = ranks(trained, "syncbn")
    for key in r0:
        np.testing.assert_array_equal(r0[key], r1[key])
    np.testing.assert_allclose(r0["weights"], trainer.model.arena.data, rtol=0, atol=1e-8)
    np.testing.assert_allclose(r0["running_mean"], state["1.running_mean"], atol=1e-8)
    np.testing.assert_allclose(r0["running_var"], state["1.running_var"], rtol=1e-8)


def test_sync_batchnorm_statistics_are_the_full_batch_statistics(trained, data):
    (X, _), _ = data
    layer = nn.BatchNorm1d(recipes.N_FEATURES, dtype=np.float64)
    layer.weight[:] = np.linspace(0.5, 2, recipes.N_FEATURES)
    y = layer.forward(X[:33] * 3 + 1)
    dout = np.cos(np.arange(33 * recipes.N_FEATURES)).reshape(33, -1)
    dx = layer.backward(dout)
    r0, r1 = ranks(trained, "layer")
    np.testing.assert_allclose(np.vstack([r0["y"], r1["y"]]), y, atol=1e-12)
    np.testing.assert_allclose(np.vstack([r0["dx"], r1["dx"]]), dx, atol=1e-12)
    for r in (r0, r1):
        np.testing.assert_allclose(r["running_mean"], layer.running_mean, atol=1e-12)
        np.testing.assert_allclose(r["running_var"], layer.running_var, atol=1e-12)
    np.testing.assert_allclose(r0["dgamma"] + r1["dgamma"], layer.weight.grad, atol=1e-12)
    np.testing.assert_allclose(r0["dbeta"] + r1["dbeta"], layer.bias.grad, atol=1e-12)


def test_local_batchnorm_keeps_the_ranks_identical(trained, data):
    """BatchNorm1d: each rank's own statistics (as PyTorch DDP), so not the
    single-process weights, but the same parameters and averaged running statistics
    on every rank."""
    r0, r1 = ranks(trained, "localbn")
    for key in r0:
        np.testing.assert_array_equal(r0[key], r1[key])
    trainer, _ = single(recipes.bn_model(nn.BatchNorm1d), data)
    assert not np.allclose(r0["weights"], trainer.model.arena.data, atol=1e-8)


def test_two_ranks_train_a_cnn_to_the_single_process_weights(trained):
    """Images (N, 2, 6, 6) through a compiled plan of convolutions and pooling: the
    same weights, history and predictions as one process, the all-reduce overlapped
    or not."""
    X, y = recipes.image_data()
    Xv, yv = recipes.image_data(57, seed=1)
    trainer, history = single(recipes.cnn_model(), ((X, y), None), validation_data=(Xv, yv))
    r0, r1 = ranks(trained, "cnn")
    assert bool(r0["planned"])
    np.testing.assert_array_equal(r0["weights"], r1["weights"])
    np.testing.assert_allclose(r0["weights"], trainer.model.arena.data, rtol=0, atol=1e-12)
    for key in ("loss", "val_loss", "accuracy"):
        np.testing.assert_allclose(r0[key], history[key], rtol=1e-12)
    np.testing.assert_allclose(r0["proba"], trainer.predict_proba(Xv), rtol=0, atol=1e-12)
    assert history["accuracy"][-1] > history["accuracy"][0]
    o0, o1 = ranks(trained, "cnn-overlap")
    np.testing.assert_array_equal(o0["weights"], o1["weights"])
    np.testing.assert_allclose(o0["weights"], trainer.model.arena.data, rtol=0, atol=1e-12)


def test_batchnorm2d_statistics_are_each_ranks_and_averaged_every_epoch(trained):
    """BatchNorm2d normalizes with each rank's rows (as BatchNorm1d): the ranks keep
    identical parameters, their own running statistics move apart during an epoch and
    are averaged at its end."""
    r0, r1 = ranks(trained, "cnnbn")
    for key in ("weights", "running_mean", "running_var", "checksum"):
        np.testing.assert_array_equal(r0[key], r1[key], err_msg=key)
    assert not np.allclose(r0["mean_before"], r1["mean_before"])
    np.testing.assert_allclose(r0["running_mean"], (r0["mean_before"] + r1["mean_before"]) / 2,
                               rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(r0["running_var"], (r0["var_before"] + r1["var_before"]) / 2,
                               rtol=1e-15)
    X, y = recipes.image_data()
    trainer, _ = single(recipes.cnn_model(batch_norm=True), ((X, y), None))
    assert not np.allclose(r0["weights"], trainer.model.arena.data, atol=1e-8)


def test_dropout_masks_differ_between_ranks_weights_do_not(trained):
    r0, r1 = ranks(trained, "dropout")
    np.testing.assert_array_equal(r0["weights"], r1["weights"])
    assert int(r0["seed"]) == 11 and int(r1["seed"]) != 11


def test_checkpoint_written_once_and_resumed_on_one_and_two_ranks(trained, data):
    """Rank 0 wrote one file per epoch (atomically: no temporary left); resuming the
    epoch-1 checkpoint here (one process) and on 2 ranks gives the weights of 2 epochs
    in one go."""
    names = sorted(p.name for p in trained.iterdir() if p.suffix == ".safetensors"
                   or p.name.startswith(".fastnn-"))
    assert names == ["plain-1.safetensors", "plain-2.safetensors"]
    (X, y), _ = data
    reference, _ = single(recipes.plain_model(), data)

    with fastnn.threads(1):
        here = recipes.trainer(recipes.plain_model(seed=99))
        here.load_checkpoint(trained / "plain-1.safetensors")
        assert here.epoch == 1
        here.fit(X, y, epochs=1, batch_size=recipes.BATCH)
    np.testing.assert_allclose(here.model.arena.data, reference.model.arena.data, atol=1e-12)

    rc, stdout, stderr, _ = run_job([str(WORKER), "resume", str(trained)], trained)
    assert rc == 0, f"{stdout}\n{stderr}"
    r0, r1 = ranks(trained, "resume")
    np.testing.assert_array_equal(r0["weights"], r1["weights"])
    assert int(r0["epoch"]) == 2
    np.testing.assert_allclose(r0["weights"], reference.model.arena.data, atol=1e-12)


def test_ensemble_spreads_members_over_ranks(trained, data):
    (X, y), (Xv, yv) = data
    with fastnn.threads(1):
        ensemble = fastnn.Ensemble(recipes.member, 3, seed=5).fit(X, y, epochs=2,
                                                                  batch_size=32)
        expected = ensemble.predict_proba(Xv)
        members = ensemble.evaluate(Xv, yv)["member_accuracy"]
    r0, r1 = ranks(trained, "ensemble")
    np.testing.assert_array_equal(r0["proba"], r1["proba"])
    np.testing.assert_allclose(r0["proba"], expected, atol=1e-6)
    np.testing.assert_allclose(r0["member_accuracy"], members)


def test_drift_is_caught_on_every_rank(tmp_path):
    rc, stdout, stderr, _ = run_job([str(WORKER), "drift", str(tmp_path)], tmp_path)
    assert rc == 0, stderr
    for r in (0, 1):
        assert f"rank {r}: the ranks' parameters differ after 3 steps" in stdout


@pytest.mark.parametrize("how", ["raise", "hang", "die"])
def test_a_failing_rank_ends_the_job(tmp_path, how):
    """Rank 1 raises, hangs, or exits at step 3 of a long run: the job ends with an
    error well before the run could finish, and never prints "finished"."""
    rc, stdout, stderr, seconds = run_job([str(WORKER), how, str(tmp_path)], tmp_path,
                                          FASTNN_MPI_TIMEOUT=str(FAIL_TIMEOUT))
    assert rc != 0
    assert seconds < FAIL_TIMEOUT + 30
    assert "finished" not in stdout
    if how == "raise":
        assert "fastnn: rank 1 of 2 stops: RuntimeError: injected failure on rank 1" in stderr
        assert "fastnn: rank 0 of 2 stops: PeerFailed: rank 1 failed" in stderr
    if how == "hang":
        assert "fastnn: rank 0 of 2 stops: TimeoutError: no answer from the other ranks" in (
            stderr)


def test_command_line_under_mpiexec(tmp_path):
    """`mpiexec -n 2 python -m fastnn train ...` (with SyncBatchNorm and augmentation):
    rank 0 prints and saves."""
    pytest.importorskip("sklearn")
    model = tmp_path / "m.safetensors"
    rc, stdout, stderr, _ = run_job(
        ["-m", "fastnn", "train", "--limit", "400", "--epochs", "2", "--hidden", "16",
         "--out", str(model), "--plot", "", "--sync-batch-norm", "--augment", "affine"],
        tmp_path,
        FASTNN_MNIST_DIR="")
    assert rc == 0, stderr
    assert stdout.count("result: test accuracy") == 1
    assert "2 ranks" in stdout
    assert stdout.count("epoch   2") == 1
    assert fastnn.load(model) is not None
