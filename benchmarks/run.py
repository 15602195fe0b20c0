"""Benchmark: d2l's own training loop (a) against polylenet.train (b), per backend.

Same data (Fashion-MNIST), same batch size (the book's: 256 for LeNet), same epochs, CPU. Every
measurement runs in a fresh child process started with the backend's own environment (tox's
``.tox/<backend>``, as ``polylenet compare`` finds it), so each peak-memory figure is that run's alone.

    python benchmarks/run.py                      # all six backends, 1 epoch
    python benchmarks/run.py --backends torch,mxnet --epochs 2 --eager
    POLYLENET_DATA=../shared/data python benchmarks/run.py   # data beside the checkout
    python benchmarks/run.py --spec alexnet --train-subset 256   # d2l's AlexNet chapter
    python benchmarks/run.py --spec resnet18                     # d2l's ResNet chapter, 512 images

``--spec alexnet`` (or ``alexnet-tf-tab``) runs d2l's AlexNet chapter instead: each tab's own
AlexNet and train_ch6 loop (d2l_alexnet_loops.py) against polylenet.train on that spec, at the
book's lr 0.01 and batch 128, on 224x224 inputs. Both sides get the same pixels: the d2l loop is
handed the images already resized by polylenet's resize, outside its timing; polylenet's figure
includes its per-batch resize, as its training loop does it. Keep the subsets small: AlexNet on
a CPU trains at tens of images a second.

``--spec resnet18`` (or ``resnet18-tf-tab``) runs d2l's ResNet chapter the same way: each tab's own
ResNet-18 and train_ch6 loop (d2l_resnet_loops.py) against polylenet.train on that spec, at the
book's lr 0.05 and batch 256, on 96x96 inputs. Without ``--train-subset`` the modern chapters train
on two of the book's batches (256 images for AlexNet, 512 for ResNet) and evaluate on 100.

Prints a table: examples/sec of (a) by d2l's Timer (steps only, as train_ch6 reports it) and by
the wall clock, of (b) by the wall clock, both ratios, and peak memory (RSS) of each.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's polylenet (its core needs only numpy)

# The specs of d2l's modern chapters and the module with the book's loops for each (the loops
# follow each tab's own network, whichever of the chapter's two specs polylenet trains)
MODERN = {"alexnet": "d2l_alexnet_loops", "alexnet-tf-tab": "d2l_alexnet_loops",
          "resnet18": "d2l_resnet_loops", "resnet18-tf-tab": "d2l_resnet_loops"}


def child(args: argparse.Namespace) -> None:
    import polylenet
    from polylenet.resize import to_model_inputs
    from polylenet.training import TrainConfig, book_batch_size, book_lr, fixed_subset

    data = polylenet.load_data("fashion-mnist", args.data_dir)
    config = TrainConfig(lr=book_lr(args.spec), batch_size=book_batch_size(args.spec), epochs=args.epochs,
                         train_subset=args.train_subset, test_subset=test_subset(args),
                         compiled=not args.eager)
    if args.child == "d2l":
        sys.path.insert(0, str(HERE))
        loops = importlib.import_module(MODERN.get(args.spec, "d2l_loops")).LOOPS
        idx = fixed_subset(len(data.train_labels), args.train_subset)
        # the d2l loop is given the spec's inputs (AlexNet's resized to 224x224, ResNet's to 96x96; untimed)
        x = to_model_inputs(data.train_images[idx], polylenet.load_spec(args.spec).input_shape)
        y = data.train_labels[idx]
        seconds, steps = loops[args.backend](x, y, args.epochs, config.lr, config.batch_size)
        examples = len(x) * args.epochs
    else:
        history = polylenet.train(args.spec, backend=args.backend, config=config, data=data, progress=False)
        examples = sum(len(fixed_subset(len(data.train_labels), args.train_subset)) for _ in history.epochs)
        seconds = steps = sum(len(fixed_subset(len(data.train_labels), args.train_subset)) / e.examples_per_sec
                              for e in history.epochs)  # polylenet's epochs are timed whole
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"examples_per_sec": examples / seconds, "step_examples_per_sec": examples / steps,
                      "seconds": seconds, "peak_mb": peak}))


def test_subset(args: argparse.Namespace) -> int:
    """The test images polylenet evaluates on after each epoch (untimed): 1000 for LeNet, 100 for the modern CNNs."""
    if args.test_subset is not None:
        return args.test_subset
    return 100 if args.spec in MODERN else 1000


def measure(python: str, which: str, backend: str, args: argparse.Namespace) -> dict:
    cmd = [python, str(Path(__file__).resolve()), "--child", which, "--backend", backend,
           "--epochs", str(args.epochs), "--spec", args.spec]
    if args.train_subset:
        cmd += ["--train-subset", str(args.train_subset)]
    if args.test_subset:
        cmd += ["--test-subset", str(args.test_subset)]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    if args.eager:
        cmd.append("--eager")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        return {"error": lines[-1] if lines else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="all")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--spec", default="lenet5", choices=["lenet5", *MODERN],
                        help="lenet5 (d2l_loops.py) or d2l's AlexNet or ResNet chapter (d2l_alexnet_loops.py, "
                             "d2l_resnet_loops.py)")
    parser.add_argument("--train-subset", type=int, default=None,
                        help="default: all 60,000 for lenet5, two of the book's batches for AlexNet and ResNet")
    parser.add_argument("--test-subset", type=int, default=None,
                        help="polylenet's (untimed) evaluation set: default 1000 for lenet5, 100 for AlexNet and "
                             "ResNet")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--eager", action="store_true", help="polylenet without compiled steps")
    parser.add_argument("--envs", default=None, help="folder of per-backend envs (default .tox)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--child", choices=["d2l", "polylenet"], help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    from polylenet.data import DataError, load_data
    from polylenet.runner import backend_list, find_python
    from polylenet.specfile import load_spec

    try:  # find the data once, here, so every child reads the same files
        args.data_dir = str(load_data("fashion-mnist", args.data_dir).source)
    except DataError as exc:
        sys.exit(f"benchmark: {exc}")

    from polylenet.training import book_batch_size, book_lr

    if args.train_subset is None and args.spec in MODERN:  # slow on a CPU: a few steps by default
        args.train_subset = 2 * book_batch_size(args.spec)
    shape = load_spec(args.spec).input_shape
    n = min(args.train_subset or 60000, 60000)
    if 4 * n * shape[0] * shape[1] * shape[2] > 4 * 2**30:  # the d2l child holds its (resized) inputs at once
        sys.exit(f"benchmark: {n} images at {shape[1]}x{shape[2]} are over 4 GiB of float32 inputs for the d2l "
                 f"loop; give a smaller --train-subset")
    size = "x".join(map(str, shape[1:]))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; Fashion-MNIST at {size}, {args.spec}, lr {book_lr(args.spec)}, "
          f"batch {book_batch_size(args.spec)}, {args.epochs} epoch(s)"
          + (f" on {args.train_subset} images" if args.train_subset else "")
          + ("; polylenet eager" if args.eager else "; polylenet compiled steps"), flush=True)
    header = (f"{'backend':<11} {'d2l timer ex/s':>15} {'d2l wall ex/s':>14} {'polylenet ex/s':>15} "
              f"{'ratio timer':>12} {'ratio wall':>11} {'d2l MB':>7} {'polylenet MB':>13}")
    rows = {}
    print(header + "\n" + "-" * len(header), flush=True)
    for backend in backend_list(args.backends):
        python = find_python(backend, args.envs)
        if python is None:
            print(f"{backend:<11} skipped: no environment (tox -e {backend} --notest)", flush=True)
            continue
        a, b = measure(python, "d2l", backend, args), measure(python, "polylenet", backend, args)
        rows[backend] = {"d2l": a, "polylenet": b}
        if "error" in a or "error" in b:
            print(f"{backend:<11} failed: {a.get('error') or b.get('error')}", flush=True)
            continue
        # polylenet's wall figure against d2l's Timer (steps only, as train_ch6 reports it) and
        # against the chapter loop's wall clock (data loading included)
        timer_ratio = b["examples_per_sec"] / a["step_examples_per_sec"]
        wall_ratio = b["examples_per_sec"] / a["examples_per_sec"]
        rows[backend].update(ratio_timer=timer_ratio, ratio_wall=wall_ratio)
        print(f"{backend:<11} {a['step_examples_per_sec']:>15.0f} {a['examples_per_sec']:>14.0f} "
              f"{b['examples_per_sec']:>15.0f} {timer_ratio:>12.2f} {wall_ratio:>11.2f} "
              f"{a['peak_mb']:>7.0f} {b['peak_mb']:>13.0f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
