"""Where do two backends first disagree? The same weights and batch through both, each in its own
environment (as ``compare`` runs them): every layer's output, the loss, every parameter's
gradient and, with ``steps``, the weights after each SGD step, compared and tabled.

>>> result = diff_backends("numpy", "torch", "lenet5", steps=1)  # doctest: +SKIP
>>> first_out_of_tolerance(result.rows) is None  # doctest: +SKIP
True
"""

from __future__ import annotations

import io
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np

from polylenet.atomic import atomic_write
from polylenet.errors import BackendError

# The conformance suite's bounds (tests/conformance/test_conformance.py), per kind of array:
# layer outputs |a - b| <= 1e-5 * max(1, scale); the loss and gradients relative to their scale
# 1e-4; the weights after SGD steps |a - b| <= 1e-4. The scale is the larger of the two arrays'
# largest magnitudes, so A,B and B,A give the same rows.
TOLERANCES = {"output": 1e-5, "loss": 1e-4, "grad": 1e-4, "weights": 1e-4}


def bound(what: str, scale: float) -> float:
    """The largest |a - b| the conformance suite allows for an array of this kind and scale."""
    tolerance = TOLERANCES[what]
    if what == "output":
        return tolerance * max(1.0, scale)
    if what == "weights":
        return tolerance
    return tolerance * scale


@dataclass(frozen=True)
class Row:
    what: str  # "output", "loss", "grad" or "weights"
    name: str  # the layer or array (and the step, for weights)
    max_abs: float
    relative: float  # max |a - b| / the larger of max |a| and max |b|
    tolerance: float  # the bound on max_abs (see bound())

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.tolerance


def _save(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, buffer.getvalue())


def probe(backend: str, spec, weights, x: np.ndarray, y: np.ndarray, steps: int, lr: float) -> dict[str, np.ndarray]:
    """Run one backend in this process: layer outputs, loss and gradients on (x, y), then the
    weights after each of ``steps`` SGD steps on the same batch; dropout with the shared masks
    of the protocol's first steps (:func:`polylenet.masks.dropout_masks`), so both backends drop
    the same units."""
    from polylenet.api import build, get_weights, layer_outputs, loss_and_grads, trainer
    from polylenet.masks import dropout_masks
    from polylenet.registry import can_train, get_backend

    model = build(spec, backend=backend, weights=weights)
    found = {"meta:backend": np.array(backend), "meta:version": np.array(get_backend(backend).version())}
    found.update({f"output:{name}": out for name, out in layer_outputs(model, x)})
    if not can_train(backend):  # inference only: the outputs are all there is to compare
        return found
    fresh = build(spec, backend=backend, weights=weights)  # loss_and_grads updates running statistics
    loss, grads = loss_and_grads(fresh, x, y, masks=dropout_masks(spec, len(x), 0, 0, 0))
    found["loss:loss"] = np.array([loss], np.float32)
    found.update({f"grad:{key}": g for key, g in grads.items()})
    step = trainer(model, lr)
    for number in range(1, steps + 1):
        step(x, y, dropout_masks(spec, len(x), 0, 0, number - 1))
        found.update({f"weights:step {number} {key}": w for key, w in get_weights(model).items()})
    return found


def probe_child(inputs: Path, backend: str, spec: str, steps: int, lr: float, out: Path) -> None:
    """What ``polylenet probe`` runs in the backend's environment: read inputs.npz, write out."""
    from polylenet.specfile import load_spec

    with np.load(inputs, allow_pickle=False) as data:
        x, y = data["x"], data["y"]
        weights = {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("weight:")}
    _save(out, probe(backend, load_spec(spec), weights, x, y, steps, lr))


def compare_probes(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> list[Row]:
    """One row per array both probes hold, in the order the first one wrote them."""
    rows = []
    for key in a:
        what, name = key.split(":", 1)
        if key not in b or what not in TOLERANCES:
            continue
        ref, other = np.asarray(a[key], np.float64), np.asarray(b[key], np.float64)
        if ref.shape != other.shape:
            rows.append(Row(what, f"{name} (shapes {ref.shape} vs {other.shape})", np.inf, np.inf, 0.0))
            continue
        max_abs = float(np.max(np.abs(ref - other))) if ref.size else 0.0
        scale = float(max(np.max(np.abs(ref)), np.max(np.abs(other)))) if ref.size else 0.0
        relative = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else np.inf)
        rows.append(Row(what, name, max_abs, relative, bound(what, scale)))
    return rows


@dataclass(frozen=True)
class Diff:
    rows: list[Row]
    batch: str  # which batch both backends ran
    versions: list[str]  # "backend framework-version", as each probe reported it


def first_out_of_tolerance(rows: list[Row]) -> Optional[Row]:
    return next((row for row in rows if not row.ok), None)


def format_rows(rows: list[Row], a: str, b: str) -> str:
    width = max(len(r.name) for r in rows)
    lines = [f"{'':<8} {'array':<{width}}  {'max |' + a + ' - ' + b + '|':>22}  {'relative':>9}  within",
             "-" * (width + 58)]
    for r in rows:
        lines.append(f"{r.what:<8} {r.name:<{width}}  {r.max_abs:>22.3e}  {r.relative:>9.2e}  "
                     f"{'yes' if r.ok else 'NO (> %.1e)' % r.tolerance}")
    first = first_out_of_tolerance(rows)
    lines.append("all within tolerance" if first is None else
                 f"first out of tolerance: {first.what} {first.name} ({first.max_abs:.2e} > {first.tolerance:.1e})")
    return "\n".join(lines)


def diff_backends(a: str, b: str, spec: str = "lenet5", weights: Optional[Union[str, Path]] = None,
                  steps: int = 0, lr: Optional[float] = None, seed: int = 0, data_dir: Optional[str] = None,
                  envs: Optional[str] = None, pythons: Optional[Mapping[str, str]] = None) -> "Diff":
    """Run both backends in their environments on the same weights and batch; return the rows,
    which batch it was and the backends' versions.

    The batch is the protocol's first (the book's batch size of Fashion-MNIST images, seed
    ``seed``, resized to the spec's input) when the data set is found, else as many uniform
    random images drawn from ``seed``; a ``data_dir`` without the data set is an error."""
    from polylenet.data import DataError, load_data
    from polylenet.resize import to_model_inputs
    from polylenet.specfile import load_spec
    from polylenet.training import batch_order, book_batch_size, book_lr
    from polylenet.weights import check_weights, init_weights, load_weights

    check_known((a, b), pythons)  # before any data is read or any environment runs
    spec_obj = load_spec(spec)
    w = check_weights(spec_obj, load_weights(weights)) if weights else init_weights(spec_obj, seed)
    size = book_batch_size(spec_obj)  # 256 for LeNet, 128 for the modern CNNs
    try:
        data = load_data("fashion-mnist", data_dir, allow_download=False)
        index = batch_order(len(data.train_labels), size, seed, 0)[0]
        x, y = to_model_inputs(data.train_images[index], spec_obj.input_shape), data.train_labels[index]
        batch = f"the protocol's first batch ({size} Fashion-MNIST images from {data.source}, seed {seed})"
    except DataError:
        if data_dir is not None:  # a folder the user named must hold the data
            raise
        batch = f"{size} uniform random images (seed {seed}): no Fashion-MNIST found"
        rng = np.random.default_rng(seed)
        x = rng.random((size, *spec_obj.input_shape), dtype=np.float32)
        y = rng.integers(0, spec_obj.num_classes, size).astype(np.int32)
    lr = book_lr(spec_obj) if lr is None else lr
    found = find_environments((a, b), envs, pythons)  # both found before either one runs
    with tempfile.TemporaryDirectory(prefix="polylenet-diff-") as tmp:
        inputs = save_inputs(Path(tmp) / "inputs.npz", x, y, w)
        probes, versions = [], []
        for number, backend in enumerate((a, b)):
            probes.append(run_probe(backend, found[backend], spec, inputs, Path(tmp) / f"{backend}-{number}.npz",
                                    steps, lr))
            versions.append(f"{backend} {probes[-1].pop('meta:version', '?')}")
    return Diff(compare_probes(*probes), batch, versions)


def check_known(backends, pythons: Optional[Mapping[str, str]] = None) -> None:
    """Raise naming the first of ``backends`` that is neither a known backend nor given a --python."""
    from polylenet.registry import known_backends

    for backend in backends:
        if backend not in known_backends() and backend not in (pythons or {}):
            raise BackendError(f"unknown backend {backend!r}; known backends: {', '.join(known_backends())} (a "
                               f"backend installed only in another environment: pass --python {backend}=PYTHON)")


def find_environments(backends, envs: Optional[str] = None,
                      pythons: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Each backend's interpreter (:func:`polylenet.runner.find_python`), or an error naming the
    first one missing and how to create it, before any of them runs."""
    from polylenet.runner import find_python

    found = {}
    for backend in dict.fromkeys(backends):
        found[backend] = find_python(backend, envs, pythons)
        if found[backend] is None or not Path(found[backend]).exists():
            where = f" (no interpreter at {found[backend]})" if found[backend] else ""
            raise BackendError(f"no environment with {backend}{where}: create it with tox -e {backend} --notest "
                               f"(or pass --python {backend}=/path/to/python)")
    return found


def save_inputs(path: Path, x: np.ndarray, y: np.ndarray, weights: Mapping[str, np.ndarray]) -> Path:
    """The batch and weights a probe child reads (:func:`probe_child`)."""
    _save(path, {"x": x, "y": y, **{f"weight:{k}": v for k, v in weights.items()}})
    return path


def run_probe(backend: str, python: str, spec: str, inputs: Path, out: Path, steps: int = 0,
              lr: float = 0.0) -> dict[str, np.ndarray]:
    """``polylenet probe`` for ``backend`` in the environment of ``python``: what :func:`probe`
    found (``output:LAYER`` ..., ``meta:version``), or an error with the child's last line."""
    cmd = [python, "-m", "polylenet", "probe", "--backend", backend, "--spec", spec, "--inputs",
           str(inputs), "--steps", str(steps), "--lr", repr(lr), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise BackendError(f"{backend} failed in {python}: {lines[-1] if lines else proc.returncode}")
    with np.load(out, allow_pickle=False) as data:
        found = {k: data[k] for k in data.files}
    ran = str(found.pop("meta:backend", ""))
    if ran != backend:
        raise BackendError(f"the probe run for {backend} in {python} reports backend {ran!r}")
    return found
