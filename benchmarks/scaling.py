"""Benchmark: how each backend's training examples/second change with the batch size (64 to 1024)
and with the threads it may use (one, two), so a user knows what a bigger machine buys.

Every (backend, threads) pair runs in a fresh child process started with the backend's own
environment (tox's ``.tox/<backend>``, as ``polylenet compare`` finds it), its threads held by the
same variables ``compare --jobs`` sets. In the child, per batch size: the model built from
``init_weights(seed 0)``, the framework's compiled step (``polylenet.trainer``), warm-up steps (the
compile, a retrace per new shape) untimed, then steps over at least ``--examples`` Fashion-MNIST
images timed with the wall clock. lenet5 at the book's lr; nothing else runs at the same time.

    python benchmarks/scaling.py                                  # all six, batches 64..1024, 1 and 2 threads
    python benchmarks/scaling.py --backends torch,jax --threads 1 --batches 256
    POLYLENET_DATA=../shared/data python benchmarks/scaling.py --json scaling.json

Prints one table: examples/sec per batch size and thread count, and two ratios per backend:
batch 1024 against 64 (one thread) and two threads against one (batch 256).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's polylenet (its core needs only numpy)

WARMUP_STEPS = 3


def child(args: argparse.Namespace) -> None:
    import numpy as np

    import polylenet
    from polylenet.training import book_lr, to_inputs

    data = polylenet.load_data("fashion-mnist", args.data_dir)
    x_all, y_all = to_inputs(data.train_images), data.train_labels
    figures = {}
    for batch in map(int, args.batches.split(",")):
        model = polylenet.build("lenet5", backend=args.backend, seed=0)
        step = polylenet.trainer(model, book_lr("lenet5"))
        steps = max(8, -(-args.examples // batch))
        batches = [(x_all[i * batch % 59000:][:batch], y_all[i * batch % 59000:][:batch])
                   for i in range(WARMUP_STEPS + steps)]
        for x, y in batches[:WARMUP_STEPS]:
            step(x, y)  # the loss comes back as a float: each step has finished when it returns
        started = time.perf_counter()
        for x, y in batches[WARMUP_STEPS:]:
            step(x, y)
        figures[batch] = steps * batch / (time.perf_counter() - started)
        del model, step
    print(json.dumps({"examples_per_sec": figures, "numpy": np.__version__}))


def measure(python: str, backend: str, threads: int, args: argparse.Namespace) -> dict:
    from polylenet.runner import thread_limits

    cmd = [python, str(Path(__file__).resolve()), "--child", "--backend", backend, "--batches", args.batches,
           "--examples", str(args.examples)]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **thread_limits(threads)})
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        return {"error": lines[-1] if lines else f"exit {proc.returncode}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {int(b): v for b, v in result["examples_per_sec"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="all")
    parser.add_argument("--batches", default="64,128,256,512,1024")
    parser.add_argument("--threads", default="1,2", help="thread counts to hold each child to")
    parser.add_argument("--examples", type=int, default=12800, help="timed examples per measurement (at least)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--envs", default=None, help="folder of per-backend envs (default .tox)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    from polylenet.data import DataError, load_data
    from polylenet.runner import backend_list, find_python

    try:
        args.data_dir = str(load_data("fashion-mnist", args.data_dir).source)
    except DataError as exc:
        sys.exit(f"benchmark: {exc}")
    batches = [int(b) for b in args.batches.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')}; lenet5 training steps (compiled), examples/sec by batch size", flush=True)
    header = f"{'backend':<11} {'threads':>7} " + " ".join(f"{b:>7}" for b in batches)
    extra = len(batches) > 1 and batches[0] == 64 and batches[-1] == 1024
    header += f" {'1024/64':>8}" if extra else ""
    print(header + "\n" + "-" * len(header), flush=True)
    rows: dict = {}
    for backend in backend_list(args.backends):
        python = find_python(backend, args.envs)
        if python is None:
            print(f"{backend:<11} skipped: no environment (tox -e {backend} --notest)", flush=True)
            continue
        rows[backend] = {}
        for t in threads:
            got = measure(python, backend, t, args)
            rows[backend][t] = got
            if "error" in got:
                print(f"{backend:<11} {t:>7} failed: {got['error']}", flush=True)
                continue
            line = f"{backend:<11} {t:>7} " + " ".join(f"{got[b]:>7.0f}" for b in batches)
            print(line + (f" {got[1024] / got[64]:>8.2f}" if extra else ""), flush=True)
    if len(threads) > 1 and 256 in batches:
        a, b = threads[0], threads[-1]
        print(f"\n{b} threads against {a}, batch 256: " + ", ".join(
            f"{name} {r[b][256] / r[a][256]:.2f}x" for name, r in rows.items()
            if "error" not in r.get(a, {"error": 1}) and "error" not in r.get(b, {"error": 1})))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
