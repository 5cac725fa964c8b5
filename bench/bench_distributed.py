"""Data-parallel training over MPI: measured on 1 and 2 ranks, projected to clusters.

    python bench/bench_distributed.py [--steps 24] [--repeats 5] [--quick]

The large MLP (784-1024-1024-10, ReLU, Adam, float32), batch 256 PER RANK, one thread
per rank, synthetic data. The script starts its own MPI jobs (`mpiexec -n 1|2`, the
mpiexec beside this Python or on PATH; pip install 'fastnn[mpi]') and measures:

  - one rank: steps/s of Trainer.fit (compiled plan, and layer by layer), and the
    step's parts (forward + loss, backward, optimizer) timed separately;
  - two ranks, in turns in one job: without communication (two independent
    trainings: what sharing the machine's cores and memory costs by itself); data
    parallel with one Allreduce of the gradient arena per step; the same layer by
    layer; and layer by layer with the all-reduce started during the backward pass in
    buckets (overlap), also with MPICH's asynchronous progress thread (its own job);
  - the all-reduce of the gradient arena alone, on two ranks.

Then it projects the scaling efficiency (weak scaling, batch 256 per host) to 8, 64 and
256 hosts on 10 and 100 Gbit/s networks with a ring all-reduce model:
    t_allreduce(N) = 2 (N - 1) / N * bytes / bandwidth + 2 (N - 1) * latency
    efficiency = t_compute / t_step,  t_step = t_compute + t_allreduce   (no overlap)
                                      t_step = t_compute + max(0, t_allreduce - t_backward)
                                                                          (ideal overlap)
The assumptions are printed with the table.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np

try:
    import fastnn
except ImportError:  # a checkout that is not installed: the package is beside bench/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import fastnn

from fastnn import losses, nn, optim

WIDTHS = (784, 1024, 1024, 10)
BATCH = 256  # per rank
# Projection assumptions: per-message latency of one ring step, and the fraction of the
# line rate an all-reduce achieves.
NETWORKS = ((10, 30e-6, "10 Gbit/s Ethernet, TCP: 30 us per message"),
            (100, 5e-6, "100 Gbit/s RDMA (InfiniBand / RoCE): 5 us per message"))
LINK_EFFICIENCY = 0.9
HOSTS = (8, 64, 256)


def _trainer(comm=None, compiled=True, overlap=False, bucket_mb=1.0):
    model = nn.mlp(WIDTHS[0], WIDTHS[-1], list(WIDTHS[1:-1]), seed=0)
    model.compiled = compiled  # False: layer by layer, so that buckets can start mid-backward
    trainer = fastnn.Trainer(model, losses.SoftmaxCrossEntropy(), optim.Adam(model, 1e-3),
                             progress=False, comm=comm)
    if comm is not None:
        trainer.parallel.overlap = overlap
        trainer.parallel.bucket = int(bucket_mb * 2**20) // 4
    return trainer


def _data(rows):
    rng = np.random.default_rng(0)
    return (rng.random((rows, WIDTHS[0]), dtype=np.float32),
            rng.integers(0, WIDTHS[-1], rows))


def _seconds_per_step(variants, steps, repeats):
    """{name: median seconds per step of Trainer.fit} for (name, trainer, global batch)
    variants, measured in turns (A B C, C B A, ...) so that drift hits them alike."""
    data = {}
    for _, trainer, batch in variants:
        X, y = data.setdefault(batch, _data(steps * batch))
        trainer.fit(X[:2 * batch], y[:2 * batch], epochs=1, batch_size=batch, seed=0)  # warm
    times = {name: [] for name, _, _ in variants}
    for r in range(repeats):
        for name, trainer, batch in variants[::-1] if r % 2 else variants:
            X, y = data[batch]
            history = trainer.fit(X, y, epochs=1, batch_size=batch, seed=0)
            times[name].append(history["seconds"][-1] / steps)
    return {name: median(t) for name, t in times.items()}


def _parts(trainer, repeats):
    """Median seconds of forward + loss, backward, optimizer step on one batch."""
    X, y = _data(BATCH)
    model, loss, opt = trainer.model, trainer.loss, trainer.optimizer
    parts = {"forward": [], "backward": [], "step": []}
    for _ in range(repeats + 1):
        opt.zero_grad()
        t0 = time.perf_counter()
        loss.forward(model.forward(X), y)
        t1 = time.perf_counter()
        model.backward(loss.backward(), input_grad=False)
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
            parts[key].append(dt)
    return {k: median(v[1:]) for k, v in parts.items()}


def worker(mode, steps, repeats, bucket_mb):
    """Run inside an MPI job; rank 0 prints one JSON line of seconds per step."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    size = comm.Get_size()
    result = {}
    if mode == "one":
        compiled = _trainer()
        result["step"] = _seconds_per_step(
            [("compiled", compiled, BATCH), ("layers", _trainer(compiled=False), BATCH)],
            steps, repeats)
        result["parts"] = _parts(compiled, repeats)
        result["bytes"] = int(compiled.model.arena.grad.nbytes)
    elif mode == "async":
        result["step"] = _seconds_per_step(
            [("overlap", _trainer(comm, False, True, bucket_mb), BATCH * size)], steps,
            repeats)
    else:
        variants = [("local", _trainer(), BATCH),
                    ("allreduce", _trainer(comm), BATCH * size),
                    ("layers", _trainer(comm, compiled=False), BATCH * size),
                    ("overlap", _trainer(comm, False, True, bucket_mb), BATCH * size)]
        result["step"] = _seconds_per_step(variants, steps, repeats)
        grad = variants[1][1].model.arena.grad
        times = []
        for _ in range(max(10, 3 * repeats)):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, grad, op=MPI.SUM)
            times.append(time.perf_counter() - t0)
        result["allreduce"] = median(times[2:])
    everyone = comm.gather(result["step"], root=0)
    if comm.Get_rank() == 0:
        # the slowest rank sets the pace
        result["step"] = {k: max(r[k] for r in everyone) for k in result["step"]}
        print("RESULT " + json.dumps(result), flush=True)


def _mpiexec():
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _job(n, mode, args, **env):
    environ = dict(os.environ, FASTNN_NUM_THREADS="1", **env)
    root = str(Path(fastnn.__file__).resolve().parents[1])
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, environ.get("PYTHONPATH")]))
    cmd = [_mpiexec(), "-n", str(n), sys.executable, __file__, "--worker", mode,
           "--steps", str(args.steps), "--repeats", str(args.repeats),
           "--bucket-mb", str(args.bucket_mb)]
    proc = subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def ring_allreduce(n, nbytes, gbits, latency):
    if n == 1:
        return 0.0
    bandwidth = gbits * 1e9 / 8 * LINK_EFFICIENCY
    return 2 * (n - 1) / n * nbytes / bandwidth + 2 * (n - 1) * latency


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=24, help="steps per timed epoch")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--bucket-mb", type=float, default=1.0)
    p.add_argument("--quick", action="store_true", help="8 steps, 3 repeats")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 8, 3
    if args.worker:
        worker(args.worker, args.steps, args.repeats, args.bucket_mb)
        return
    if _mpiexec() is None:
        sys.exit("bench_distributed: no mpiexec; pip install 'fastnn[mpi]'")
    from _common import cpu_model

    print(f"fastnn {fastnn.__version__}; {cpu_model()}; {os.cpu_count()} CPUs; one thread "
          f"per rank; MLP {'-'.join(map(str, WIDTHS))}, Adam, float32, batch {BATCH} per "
          f"rank; {args.steps} steps x {args.repeats} repeats, medians")
    one = _job(1, "one", args)
    two = _job(2, "two", args)
    two_async = _job(2, "async", args, MPIR_CVAR_ASYNC_PROGRESS="1")
    nbytes, parts = one["bytes"], one["parts"]
    t_c = one["step"]["compiled"]
    print(f"\ngradient arena: {nbytes / 2**20:.2f} MiB ({nbytes // 4:,} float32); step parts "
          f"on 1 rank: forward+loss {1e3 * parts['forward']:.1f} ms, backward "
          f"{1e3 * parts['backward']:.1f} ms, optimizer {1e3 * parts['step']:.1f} ms")
    print(f"all-reduce of the arena on 2 ranks of this host: {1e3 * two['allreduce']:.2f} ms "
          f"({2 * nbytes / two['allreduce'] / 1e9:.2f} GB/s through shared memory)\n")
    rows = [("1 rank", one["step"]["compiled"], 1),
            ("1 rank, layer by layer", one["step"]["layers"], 1),
            ("2 ranks, no communication (sharing the host)", two["step"]["local"], 1),
            ("2 ranks, data parallel: one Allreduce", two["step"]["allreduce"], 2),
            ("2 ranks, layer by layer, one Allreduce", two["step"]["layers"], 2),
            (f"2 ranks, layer by layer, overlapped {args.bucket_mb:g} MiB buckets",
             two["step"]["overlap"], 2),
            ("  the same with MPICH's async progress thread", two_async["step"]["overlap"], 2)]
    t_local = two["step"]["local"]
    print(f"{'run':<52} | {'ms/step':>8} | {'steps/s':>7} | {'samples/s':>9} | {'eff.':>5} | "
          f"{'comm. ms':>8}")
    print("-" * 105)
    for name, step, ranks in rows:
        comm_ms = f"{1e3 * (step - t_local):8.1f}" if ranks == 2 else ""
        print(f"{name:<52} | {1e3 * step:8.1f} | {1 / step:7.2f} | {BATCH * ranks / step:9,.0f} | "
              f"{t_c / step:5.2f} | {comm_ms}")
    print("  eff. = 1-rank step time / this step time (1.00: perfect weak scaling); comm. = "
          "step time - that of 2 ranks without communication; the 2-rank runs were "
          "measured in turns in one job; layer by layer: Sequential.compiled = False, so "
          "that buckets can start between layers")

    t_bwd = parts["backward"]
    print(f"\nprojection: one rank per host computing a step in {1e3 * t_c:.1f} ms (measured, "
          f"1 thread, batch {BATCH}), backward {1e3 * t_bwd:.1f} ms of it; ring all-reduce "
          f"of {nbytes / 2**20:.2f} MiB")
    print(f"{'':<10} | {'':>5} | {'':>13} | {'host = 1 core (measured)':^25} | "
          f"{'host = 16x faster':^25}")
    print(f"{'network':<10} | {'hosts':>5} | {'all-reduce ms':>13} | {'no overlap':>11} | "
          f"{'overlap':>11} | {'no overlap':>11} | {'overlap':>11}")
    print("-" * 98)
    for gbits, latency, _ in NETWORKS:
        for n in HOSTS:
            t_ar = ring_allreduce(n, nbytes, gbits, latency)
            cells = []
            for speedup in (1, 16):
                c, b = t_c / speedup, t_bwd / speedup
                cells += [c / (c + t_ar), c / (c + max(0.0, t_ar - b))]
            print(f"{gbits:>5} Gb/s | {n:5d} | {1e3 * t_ar:13.2f} | "
                  + " | ".join(f"{e:11.2f}" for e in cells))
    print("  scaling efficiency = compute time / step time, at a fixed batch per host")
    print("assumptions: " + "; ".join(text for _, _, text in NETWORKS)
          + f"; an all-reduce reaches {LINK_EFFICIENCY:.0%} of the line rate; one rank per "
          "host (all-reduce inside a host is free); ideal overlap hides the all-reduce "
          "behind the whole backward pass (bounded by the measured backward time); the "
          "per-step loss sum (24 bytes, started before backward) and the parameter "
          "checksum every 100 steps are neglected; 'host 16x faster': a host whose cores "
          "compute the step 16 times faster (e.g. 16 cores at perfect speed-up).")


if __name__ == "__main__":
    main()
