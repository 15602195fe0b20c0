"""Benchmark: where TensorFlow's training time goes on this CPU, and which configuration changes it.

On a 2-core AMD EPYC (Zen 3) VM TensorFlow trained LeNet at ~2.2k examples/s on one thread (torch
~6.1k) with half its CPU time in the kernel. This runs the same lenet5 steps (polylenet's compiled
``tf.function`` step, batch 256, one thread unless ``--threads``) in a fresh child per
configuration and prints, per configuration: training examples/sec, the evaluation pass's
images/sec (the 10,000 test images, as each epoch ends), and per training step the user and
system CPU milliseconds and the minor page faults (the kernel zeroing fresh pages: what large
allocations returned to the OS and taken again cost). Configurations:

- ``default``: as polylenet runs it;
- ``onednn-off``: ``TF_ENABLE_ONEDNN_OPTS=0`` (Eigen's kernels, not oneDNN's);
- ``xla``: ``TF_XLA_FLAGS=--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit`` (XLA clusters on CPU);
- ``malloc-kept``: glibc keeps freed memory (``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``
  at 1 GiB), so a step's buffers are not unmapped and faulted in again;
- ``inter-op-2``: two inter-op threads (TF's own default is one per core).

    python benchmarks/tensorflow_config.py
    python benchmarks/tensorflow_config.py --threads 2 --steps 80
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

GIB = str(2**30)
CONFIGS = {
    "default": {},
    "onednn-off": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "xla": {"TF_XLA_FLAGS": "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit"},
    "malloc-kept": {"MALLOC_MMAP_THRESHOLD_": GIB, "MALLOC_TRIM_THRESHOLD_": GIB},
    "inter-op-2": {"TF_NUM_INTEROP_THREADS": "2"},
}


def child(args: argparse.Namespace) -> None:
    import polylenet
    from polylenet.training import book_lr, to_inputs

    data = polylenet.load_data("fashion-mnist", args.data_dir)
    x, y = to_inputs(data.train_images[: 256 * (args.steps + 3)]), data.train_labels[: 256 * (args.steps + 3)]
    test = to_inputs(data.test_images)
    model = polylenet.build("lenet5", backend="tensorflow", seed=0)
    step = polylenet.trainer(model, book_lr("lenet5"))
    for i in range(3):  # tracing, first allocations
        step(x[256 * i:256 * (i + 1)], y[256 * i:256 * (i + 1)])
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for i in range(3, 3 + args.steps):
        step(x[256 * i:256 * (i + 1)], y[256 * i:256 * (i + 1)])
    seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    polylenet.forward(model, test[:1000])
    eval_started = time.perf_counter()
    for i in range(0, len(test), 1000):
        polylenet.forward(model, test[i:i + 1000])
    eval_seconds = time.perf_counter() - eval_started
    n = args.steps
    print(json.dumps({"train": n * 256 / seconds, "eval": len(test) / eval_seconds,
                      "user_ms": 1000 * (after.ru_utime - before.ru_utime) / n,
                      "sys_ms": 1000 * (after.ru_stime - before.ru_stime) / n,
                      "faults": (after.ru_minflt - before.ru_minflt) / n}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--envs", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    from polylenet.data import load_data
    from polylenet.runner import find_python, thread_limits

    args.data_dir = str(load_data("fashion-mnist", args.data_dir).source)
    python = find_python("tensorflow", args.envs)
    if python is None:
        sys.exit("benchmark: no tensorflow environment (tox -e tensorflow --notest)")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.machine()) if os.path.exists("/proc/cpuinfo") else platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; tensorflow lenet5, batch 256, "
          f"{args.threads} thread(s), {args.steps} timed steps", flush=True)
    header = f"{'config':<12} {'train ex/s':>10} {'eval img/s':>10} {'user ms/step':>12} {'sys ms/step':>11} " \
             f"{'faults/step':>11}"
    print(header + "\n" + "-" * len(header), flush=True)
    for name in args.configs.split(","):
        env = {**os.environ, **thread_limits(args.threads), **CONFIGS[name]}
        cmd = [python, str(Path(__file__).resolve()), "--child", "--steps", str(args.steps),
               "--data-dir", args.data_dir]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"{name:<12} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}", flush=True)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{name:<12} {r['train']:>10.0f} {r['eval']:>10.0f} {r['user_ms']:>12.1f} {r['sys_ms']:>11.1f} "
              f"{r['faults']:>11.0f}", flush=True)


if __name__ == "__main__":
    main()
