"""The ``polylenet`` command: shapes, train, compare, report, diff, activations, export, import, evaluate.

Errors are one line on stderr and a non-zero exit; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from polylenet.errors import OptionError, PolylenetError

STARTED = time.perf_counter()  # a record's seconds: the whole run, its framework's import included


def _add_protocol(p: argparse.ArgumentParser, dropout: str) -> None:
    from polylenet.masks import DROPOUT_MODES
    from polylenet.training import TrainConfig

    d = TrainConfig()
    p.add_argument("--spec", default="lenet5", help="variant name or .json/.yaml spec file (default lenet5)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=None,
                   help=f"learning rate (default: the book's for the spec, {d.lr}; lenet-bn 1.0; alexnet 0.01, "
                        "vgg11-small 0.05, nin 0.1)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"default: the book's for the spec ({d.batch_size}; 128 for the modern CNNs)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--dataset", default=d.dataset, choices=["fashion-mnist", "mnist"])
    p.add_argument("--train-subset", type=int, default=None, help="train on a fixed random subset of N images")
    p.add_argument("--test-subset", type=int, default=None,
                   help="evaluate (and record logits) on a fixed random subset of N test images")
    p.add_argument("--dropout", default=dropout, choices=list(DROPOUT_MODES),
                   help=f"native: each framework's own dropout draws; shared: the same NumPy-drawn masks on "
                        f"every backend (default {dropout})")
    p.add_argument("--data-dir", default=None, help="folder holding fashion-mnist/ (or the four files)")
    p.add_argument("--eager", action="store_true", help="no compiled steps (tf.function, hybridize): for debugging")


def _config(args: argparse.Namespace):
    from polylenet.training import TrainConfig, book_batch_size, book_lr

    return TrainConfig(lr=book_lr(args.spec) if args.lr is None else args.lr,
                       batch_size=book_batch_size(args.spec) if args.batch_size is None else args.batch_size,
                       epochs=args.epochs, seed=args.seed, dataset=args.dataset, train_subset=args.train_subset,
                       test_subset=args.test_subset, dropout=args.dropout, compiled=not args.eager)


def _add_weights_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", default=None, help="variant name or spec file (default: the checkpoint's, else lenet5)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", default=None, help="a training checkpoint (its spec and weights)")
    source.add_argument("--weights", default=None, help="neutral weights (.npz); default: init_weights(spec, --seed)")
    p.add_argument("--seed", type=int, default=0)


def parser() -> argparse.ArgumentParser:
    from polylenet import __version__
    from polylenet.activations import DEFAULT_IMAGES

    top = argparse.ArgumentParser(prog="polylenet", description="One CNN spec, six frameworks and a NumPy oracle.")
    top.add_argument("--debug", action="store_true", help="show tracebacks")
    top.add_argument("--version", action="version", version=f"polylenet {__version__}")
    sub = top.add_subparsers(dest="command", required=True)

    shapes = sub.add_parser("shapes", help="d2l's per-layer shape table")
    shapes.add_argument("--spec", default="lenet5")
    shapes.add_argument("--backend", default=None, help="read the shapes off the model this backend builds")
    shapes.add_argument("--nested", action="store_true",
                        help="every layer inside the groups and blocks too, named by path (b3.residual1.branch1.conv1)")

    sub.add_parser("backends", help="every known backend: its framework's version here, capabilities, extra")

    train = sub.add_parser("train", help="run the d2l protocol on one backend")
    train.add_argument("--backend", default=None)
    _add_protocol(train, dropout="native")
    train.add_argument("--out", default=None, help="folder for history.json and per-epoch checkpoints")
    train.add_argument("--resume", default=None, help="checkpoint to continue from")
    train.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--record", action="store_true",
                       help="also write a record into --out (record.json, logits.npz): what polylenet report merges")

    compare = sub.add_parser("compare", help="the same protocol on every backend, one report")
    compare.add_argument("--backends", default="all", help="all, or a comma-separated list")
    _add_protocol(compare, dropout="shared")
    compare.add_argument("--out", default="runs/compare", help="folder for report.md, report.json and plots")
    compare.add_argument("--envs", default=None,
                         help="folder of per-backend virtualenvs (default: $POLYLENET_ENVS, else .tox)")
    compare.add_argument("--python", action="append", default=[], metavar="BACKEND=PYTHON",
                         help="the interpreter to run BACKEND with (repeatable)")
    compare.add_argument("--jobs", type=int, default=1,
                         help="backends training at once, each held to cores/jobs threads (default 1)")

    report = sub.add_parser("report", help="merge records (train --record, made on any machine) into compare's report")
    report.add_argument("records", nargs="+", metavar="RECORD_DIR",
                        help="record folders, or folders holding them (a compare run, downloaded CI artifacts)")
    report.add_argument("--out", required=True, help="folder for report.md, report.json and plots")

    diff = sub.add_parser("diff", help="where two backends first disagree: every layer, gradient and step")
    diff.add_argument("--backends", required=True, help="two backends, A,B")
    diff.add_argument("--spec", default="lenet5")
    diff.add_argument("--weights", default=None, help="neutral weights (.npz) to start from (default: init_weights)")
    diff.add_argument("--steps", type=int, default=0, help="also compare the weights after N SGD steps")
    diff.add_argument("--lr", type=float, default=None, help="for --steps (default: the book's for the spec)")
    diff.add_argument("--seed", type=int, default=0)
    diff.add_argument("--data-dir", default=None)
    diff.add_argument("--envs", default=None, help="folder of per-backend virtualenvs (default .tox)")
    diff.add_argument("--python", action="append", default=[], metavar="BACKEND=PYTHON")

    activations = sub.add_parser("activations", help="test images and each conv layer's feature maps, on one "
                                                     "backend or side by side on several")
    activations.add_argument("--backend", default=None, help="one backend, run in this process")
    activations.add_argument("--backends", default=None,
                             help="several, each in its own environment: a comma-separated list, or all (with "
                                  "--run: every backend the run holds; else the oracle and the six frameworks)")
    _add_weights_source(activations)
    activations.add_argument("--run", default=None,
                             help="a compare run's folder: each backend's last checkpoint in it (with --backends)")
    activations.add_argument("--images", default=None,
                             help=f"class names, the first test image of each (default {DEFAULT_IMAGES}; "
                                  "sweater is Fashion-MNIST's pullover)")
    activations.add_argument("--index", default=None, help="test-set indices instead of --images, e.g. 0,1")
    activations.add_argument("--layers", default=None,
                             help="layer names (default: every layer with feature maps: LeNet's conv1 to pool2)")
    activations.add_argument("--channels", type=int, default=16, help="the most channels drawn per layer (16)")
    activations.add_argument("--data-dir", default=None)
    activations.add_argument("--envs", default=None, help="folder of per-backend virtualenvs (default .tox)")
    activations.add_argument("--python", action="append", default=[], metavar="BACKEND=PYTHON")
    activations.add_argument("--out", required=True, help="the .png file to write")
    activations.add_argument("--overwrite", action="store_true", help="replace the file already at --out")

    export = sub.add_parser("export", help="write a model as an ONNX file (no framework needed)")
    export.add_argument("--format", default="onnx", choices=["onnx"])
    _add_weights_source(export)
    export.add_argument("--out", required=True, help="the .onnx file to write (in a folder that exists)")
    export.add_argument("--overwrite", action="store_true", help="replace the file already at --out")

    imp = sub.add_parser("import", help="read an ONNX LeNet (any exporter's) into a spec and neutral weights")
    imp.add_argument("onnx_file")
    imp.add_argument("--out", required=True, help="folder for spec.json and weights.npz")
    imp.add_argument("--overwrite", action="store_true", help="replace the import already in --out")

    evaluate = sub.add_parser("evaluate", help="test accuracy of a model's weights on one backend")
    evaluate.add_argument("--backend", default=None)
    _add_weights_source(evaluate)
    evaluate.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"])
    evaluate.add_argument("--data-dir", default=None)

    probe = sub.add_parser("probe")  # diff's child, run in each backend's environment
    for flag in ("--backend", "--spec", "--inputs", "--out"):
        probe.add_argument(flag, required=True)
    probe.add_argument("--steps", type=int, default=0)
    probe.add_argument("--lr", type=float, required=True)
    return top


def cmd_backends(args: argparse.Namespace) -> int:
    """One row per known backend, no framework imported: what is installed here, what it can do
    (training, or inference only), and what installs it."""
    from polylenet.registry import framework_version, install_hint, known_backends

    rows = [("backend", "installed here", "can", "install with")]
    for name, info in known_backends().items():
        installed = framework_version(name)
        rows.append((name, "not installed" if installed is None else installed or "(no framework: the oracle)",
                     "train, infer" if info.trains else "infer", install_hint(name) if info.framework else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    return 0


def cmd_shapes(args: argparse.Namespace) -> int:
    from polylenet.api import build, layer_shapes
    from polylenet.shapes import format_shape_table, spec_layer_shapes
    from polylenet.specfile import load_spec

    spec = load_spec(args.spec)
    if args.backend:
        rows = layer_shapes(build(spec, backend=args.backend), nested=args.nested)
        print(f"{spec.name} as built by {args.backend}:")
    else:
        rows = spec_layer_shapes(spec, nested=args.nested)
        print(f"{spec.name} (inferred from the spec):")
    pads = {name: layer.pads for name, layer, _, _ in spec.leaves if any(sum(getattr(layer, "pads", ()), ()))}
    for line, (name, _) in zip(format_shape_table(rows).splitlines(), rows):
        # the pads a spec resolved ("same" at stride 2: the odd row at the bottom) beside the shape
        print(line + (f"  padding (top, bottom), (left, right): {pads[name]}" if name in pads else ""))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from polylenet.training import train

    out = Path(args.out) if args.out else None
    config = _config(args)

    def epoch_line(stats):  # compare's child: the parent shows these as they come
        print(f"epoch {stats.epoch}/{config.epochs}: loss {stats.train_loss:.4f}, train acc {stats.train_acc:.3f}, "
              f"test acc {stats.test_acc:.3f}, {stats.examples_per_sec:.0f} examples/sec", flush=True)

    history = train(args.spec, backend=args.backend, config=config, data_dir=args.data_dir,
                    out_dir=out, resume_from=args.resume, progress=False if args.quiet else None,
                    overwrite=args.overwrite, on_epoch=epoch_line if args.record else None)
    if args.record and out is not None:
        _record(args, out, history)
    f = history.final
    print(f"{history.backend}: loss {f.train_loss:.3f}, train acc {f.train_acc:.3f}, "
          f"test acc {f.test_acc:.3f}, {f.examples_per_sec:.0f} examples/sec"
          + (f"; wrote {out}" if out else ""))
    return 0


def _record(args: argparse.Namespace, out: Path, history) -> None:
    """The run's record (polylenet.record): with the history, the shapes as built, the test-set
    logits before and after training, and the data's checksums."""
    from polylenet.api import build, forward, layer_shapes
    from polylenet.checkpoint import load_checkpoint
    from polylenet.data import load_data
    from polylenet.record import data_digest, write_record
    from polylenet.resize import to_model_inputs
    from polylenet.training import eval_batch_size, fixed_subset

    config = _config(args)
    data = load_data(config.dataset, args.data_dir)
    test = data.test_images[fixed_subset(len(data.test_images), config.test_subset)]  # what the run evaluated on
    weights, _ = load_checkpoint(out / f"checkpoint-epoch{config.epochs:02d}.npz")
    initial = build(args.spec, backend=history.backend, seed=config.seed)
    trained = build(args.spec, backend=history.backend, weights=weights)
    shape = trained.polylenet_spec.input_shape
    batch = eval_batch_size(config, trained.polylenet_spec)
    logits = {name: np.concatenate([forward(m, to_model_inputs(test[i:i + batch], shape))
                                    for i in range(0, len(test), batch)])
              for name, m in (("initial", initial), ("trained", trained))}
    write_record(out, history, layer_shapes(trained), logits, data_digest(data), time.perf_counter() - STARTED)


def cmd_report(args: argparse.Namespace) -> int:
    from polylenet.record import merge_records

    report = merge_records(args.records, Path(args.out))
    print(f"wrote {report}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import signal

    from polylenet.runner import CompareStopped, run_compare

    pythons = _pythons(args.python)
    try:
        report = run_compare(args.backends, _config(args), spec=args.spec, out=Path(args.out),
                             envs=args.envs, pythons=pythons, data_dir=args.data_dir, jobs=args.jobs)
    except CompareStopped as stopped:
        print(f"polylenet: stopped by {signal.Signals(stopped.signum).name}: the backends still training were "
              f"stopped; {stopped.report} holds those that finished, marked incomplete", file=sys.stderr)
        return 128 + stopped.signum
    print(f"wrote {report}")
    summary = json.loads((report.parent / "report.json").read_text())
    if "plots_missing" in summary:
        print(f"polylenet: no plots drawn: {summary['plots_missing']}", file=sys.stderr)
    if not any(r["status"] == "ok" for r in summary["results"].values()):
        print(f"polylenet: error: no backend trained (each one failed or was skipped; see {report})", file=sys.stderr)
        return 1
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from polylenet.diff import diff_backends, first_out_of_tolerance, format_rows

    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    if len(names) != 2:
        raise ValueError(f"--backends takes two backends, A,B; got {args.backends!r}")
    if args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    result = diff_backends(*names, spec=args.spec, weights=args.weights, steps=args.steps, lr=args.lr,
                           seed=args.seed, data_dir=args.data_dir, envs=args.envs, pythons=_pythons(args.python))
    print(f"{args.spec}: {' against '.join(result.versions)}, the same weights "
          f"({args.weights or f'init_weights seed {args.seed}'}) and batch: {result.batch}")
    print(format_rows(result.rows, *names))
    return 0 if first_out_of_tolerance(result.rows) is None else 1


def _pythons(items: Sequence[str]) -> dict[str, str]:
    """``--python BACKEND=PYTHON`` options as a dict."""
    bad = [item for item in items if "=" not in item or not item.split("=", 1)[0] or not item.split("=", 1)[1]]
    if bad:
        raise ValueError(f"--python takes BACKEND=/path/to/python, got {bad[0]!r}: expected BACKEND=PYTHON, "
                         "e.g. torch=.tox/torch/bin/python")
    return dict(item.split("=", 1) for item in items)


def _spec_and_weights(args: argparse.Namespace):
    """The spec and neutral weights that --spec and --checkpoint or --weights name."""
    from polylenet.checkpoint import load_checkpoint
    from polylenet.specfile import load_spec
    from polylenet.training import checkpoint_spec
    from polylenet.weights import init_weights, load_weights

    if args.checkpoint:
        weights, meta = load_checkpoint(args.checkpoint)
        return checkpoint_spec(meta, args.checkpoint, load_spec(args.spec) if args.spec else None), weights
    spec = load_spec(args.spec or "lenet5")
    return spec, load_weights(args.weights) if args.weights else init_weights(spec, args.seed)


def _run_checkpoints(run: Path, backends: Optional[str]) -> dict[str, Path]:
    """Each backend's last checkpoint in a compare run's folder (``RUN/BACKEND/checkpoint-epochNN.npz``)."""
    if not run.is_dir():
        raise OptionError(f"--run {run}: no such folder; give a compare run's --out (runs/compare)")
    found = {}
    for folder in sorted(p for p in run.iterdir() if p.is_dir()):
        checkpoints = sorted(folder.glob("checkpoint-epoch*.npz"))
        if checkpoints:
            found[folder.name] = checkpoints[-1]
    wanted = list(found) if backends in (None, "all") else [b.strip() for b in backends.split(",") if b.strip()]
    missing = [b for b in wanted if b not in found]
    if missing or not wanted:
        raise OptionError(f"--run {run}: no checkpoint of {', '.join(missing) or 'any backend'} there (it holds "
                         f"{', '.join(found) or 'none'}); run polylenet compare --out {run} first")
    return {b: found[b] for b in wanted}


def cmd_activations(args: argparse.Namespace) -> int:
    from polylenet.activations import (
        choose_images,
        draw,
        feature_maps,
        feature_maps_in_environments,
        largest_differences,
        map_layers,
        save_figure,
    )
    from polylenet.atomic import check_output_file
    from polylenet.checkpoint import load_checkpoint
    from polylenet.data import DATASETS, load_data
    from polylenet.optional import require_matplotlib
    from polylenet.runner import FRAMEWORKS
    from polylenet.specfile import load_spec
    from polylenet.training import checkpoint_spec

    if (args.backend is None) == (args.backends is None):
        raise OptionError("give --backend B (one backend, here) or --backends A,B,... (side by side, each in its "
                         "environment)")
    if args.run and (args.checkpoint or args.weights or args.backend):
        raise OptionError("--run takes each backend's weights from the run: leave out --checkpoint, --weights and "
                         "--backend (use --backends)")
    if not (args.run or args.checkpoint or args.weights):
        raise OptionError("activations needs --checkpoint CKPT, --weights W.npz or --run RUN_DIR: the feature maps "
                         "of freshly initialized weights show little")
    if args.channels < 1:
        raise OptionError(f"--channels must be >= 1, got {args.channels}")
    out = Path(args.out)
    check_output_file(out, args.overwrite, "activations.png")  # before anything runs
    require_matplotlib("polylenet activations (its figure)")
    if args.run:
        sources, spec = {}, load_spec(args.spec) if args.spec else None
        for backend, path in _run_checkpoints(Path(args.run), args.backends).items():
            weights, meta = load_checkpoint(path)
            if meta.get("backend", backend) != backend:
                raise OptionError(f"{path} was trained on {meta['backend']}, in the folder of {backend}: "
                                  "--run takes a folder that polylenet compare wrote")
            spec = checkpoint_spec(meta, path, spec)  # every backend's run of the same spec
            sources[backend] = (weights, f"{Path(args.run).name} epoch {meta['epoch']}")
    else:
        spec, weights = _spec_and_weights(args)
        source = Path(args.checkpoint or args.weights).name
        names = [args.backend] if args.backend else (
            ["numpy", *FRAMEWORKS] if args.backends == "all"
            else [b.strip() for b in args.backends.split(",") if b.strip()])
        sources = {b: (weights, source) for b in names}
    layers = map_layers(spec, args.layers)
    data = load_data("fashion-mnist", args.data_dir)
    chosen = choose_images(data.test_labels, DATASETS["fashion-mnist"].classes, args.images, args.index)
    images = data.test_images[[c.index for c in chosen]]
    if args.backend:
        weights, source = sources[args.backend]
        maps = [feature_maps(args.backend, spec, weights, images, layers, source)]
    else:
        maps = feature_maps_in_environments(sources, spec, images, layers, args.envs, _pythons(args.python))
    print(f"{spec.name}: {', '.join(f'{c.label} (test image {c.index})' for c in chosen)} on "
          f"{', '.join(f'{m.backend} {m.version}' for m in maps)}")
    differences = largest_differences(maps)
    for name in layers:
        shape = "x".join(str(s) for s in maps[0].outputs[name].shape[1:])
        print(f"  {name:<12} {shape:<10}" + (f"  max |{maps[0].backend} - any other| {differences[name]:.2e}"
                                                if len(maps) > 1 else ""))
    print(f"wrote {save_figure(draw(images, chosen, maps, args.channels), out)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from polylenet.atomic import check_output_file
    from polylenet.onnxfile import export_onnx

    check_output_file(Path(args.out), args.overwrite, "model.onnx")
    spec, weights = _spec_and_weights(args)
    path = export_onnx(spec, args.out, weights=weights)
    print(f"wrote {path} ({spec.name}, {args.format})")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from polylenet.atomic import check_output_folder, folder_written_whole
    from polylenet.onnxfile import import_onnx
    from polylenet.shapes import format_shape_table, spec_layer_shapes
    from polylenet.specfile import save_spec
    from polylenet.weights import save_weights

    names = ["spec.json", "weights.npz"]
    out = Path(args.out)
    check_output_folder(out, names, args.overwrite)  # before the ONNX file is read
    spec, weights = import_onnx(args.onnx_file)
    with folder_written_whole(out, names, overwrite=args.overwrite) as staging:  # the two appear together
        save_spec(spec, staging / "spec.json")
        save_weights(weights, staging / "weights.npz")
    print(f"{args.onnx_file}: {spec.name}")
    print(format_shape_table(spec_layer_shapes(spec)))
    print(f"wrote {out / 'spec.json'} and {out / 'weights.npz'}; load them on any backend with\n"
          f"  polylenet evaluate --backend BACKEND --spec {out / 'spec.json'} --weights {out / 'weights.npz'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from polylenet.api import build
    from polylenet.data import load_data
    from polylenet.training import evaluate

    if not (args.checkpoint or args.weights):
        raise ValueError("evaluate needs --checkpoint CKPT or --weights W.npz: without them it would score "
                         "freshly initialized weights")
    spec, weights = _spec_and_weights(args)
    model = build(spec, backend=args.backend, weights=weights)
    data = load_data(args.dataset, args.data_dir)
    accuracy = evaluate(model, data.test_images, data.test_labels.astype(np.int64))  # converted per batch
    print(f"{model.polylenet_backend}: {spec.name} test acc {accuracy:.4f} on {args.dataset}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from polylenet.diff import probe_child

    probe_child(Path(args.inputs), args.backend, args.spec, args.steps, args.lr, Path(args.out))
    return 0


COMMANDS = {"backends": cmd_backends, "shapes": cmd_shapes, "train": cmd_train, "compare": cmd_compare,
            "report": cmd_report, "diff": cmd_diff, "probe": cmd_probe, "activations": cmd_activations,
            "export": cmd_export, "import": cmd_import, "evaluate": cmd_evaluate}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (PolylenetError, ValueError, OSError) as exc:
        if args.debug:
            raise
        print(f"polylenet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("polylenet: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 -- a framework's own error, or a bug: one line, exit 1
        if args.debug:
            raise
        backend = getattr(args, "backend", None) or getattr(args, "backends", None)
        where = f" (backend {backend})" if isinstance(backend, str) else ""
        message = " ".join(str(exc).split())[:300]
        print(f"polylenet: unexpected error{where}: {type(exc).__name__}: {message}; rerun with --debug for the "
              "traceback", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
