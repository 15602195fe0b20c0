"""Weights move between any two backends through the neutral dict: build on A, train a step,
read the weights, load them into B, and B computes A's logits.

Backends that share this environment are paired in-process. Backends that cannot share one
(their numpy pins conflict) meet through files in $POLYLENET_EXCHANGE_DIR, which every tox env
points at: each env exports what its backends trained, then checks every other backend's export.
"""

import io
import os
from itertools import permutations
from pathlib import Path

import numpy as np
import pytest

import polylenet
from cases import BACKENDS, VARIANTS, batches, conformance_weights
from polylenet.atomic import atomic_write
from polylenet.registry import can_train

EXCHANGE = os.environ.get("POLYLENET_EXCHANGE_DIR")
LOCAL = sorted(set(BACKENDS) | {"numpy"})


def trained_on(backend, spec):
    """A model of ``backend`` after one SGD step from the conformance weights (an inference-only
    backend: the conformance weights themselves)."""
    model = polylenet.build(spec, backend=backend, weights=conformance_weights(spec))
    if can_train(backend):
        x, y = batches(spec, count=1, seed=7)[0]
        polylenet.trainer(model, lr=0.9)(x, y)
    return model


def probe(spec):
    return batches(spec, count=1, size=64, seed=8)[0][0]


@pytest.mark.parametrize("source, target", list(permutations(LOCAL, 2)))
def test_weights_move_between_backends_in_process(source, target, spec):
    model = trained_on(source, spec)
    moved = polylenet.build(spec, backend=target, weights=polylenet.get_weights(model))
    x = probe(spec)
    assert np.max(np.abs(polylenet.forward(moved, x) - polylenet.forward(model, x))) <= 1e-5


needs_exchange = pytest.mark.skipif(not EXCHANGE, reason="POLYLENET_EXCHANGE_DIR is not set (tox sets it)")


@needs_exchange
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_export_trained_weights(backend, variant):
    spec = polylenet.load_spec(variant)
    model = trained_on(backend, spec)
    arrays = {f"weight:{k}": v for k, v in polylenet.get_weights(model).items()}
    arrays["logits"] = polylenet.forward(model, probe(spec))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(Path(EXCHANGE) / f"{backend}-{variant}.npz", buffer.getvalue())


def _exports():
    if not EXCHANGE or not Path(EXCHANGE).is_dir():
        return []
    return sorted(p for p in Path(EXCHANGE).glob("*.npz") if p.stem.split("-")[0] not in LOCAL)


@needs_exchange
@pytest.mark.parametrize("backend", BACKENDS)
def test_weights_from_other_environments(backend):
    exports = _exports()
    if not exports:
        pytest.skip("no other backend has exported weights yet (tox runs the envs in turn)")
    for path in exports:
        source, variant = path.stem.split("-", 1)
        with np.load(path, allow_pickle=False) as data:
            weights = {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("weight:")}
            expected = data["logits"]
        spec = polylenet.load_spec(variant)
        model = polylenet.build(spec, backend=backend, weights=weights)
        error = np.max(np.abs(polylenet.forward(model, probe(spec)) - expected))
        assert error <= 1e-5, f"{source} -> {backend} ({variant}): logits differ by {error}"
