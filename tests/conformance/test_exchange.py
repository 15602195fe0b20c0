"""Weights move between any two backends through the neutral dict: build on A, train a step,
read the weights, load them into B, and B computes A's logits.

Backends that share this environment are paired in-process. Backends that cannot share one
(their numpy pins conflict) meet through files in $POLYLENET_EXCHANGE_DIR, which every tox env
points at: each env exports what its backends trained (stamped with the source digest of the
polylenet it ran), then loads every export of the same source that an earlier env wrote. The
last tox env, ``protocol`` (tests/crossenv), asserts that every env's exports are there and
agree, so every pair of environments is checked in every full ``tox`` run, and in the GitHub
Actions matrix through the jobs' artifacts.
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
from polylenet.provenance import source_digest
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
    arrays["source_digest"] = np.array(source_digest())
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(Path(EXCHANGE) / f"{backend}-{variant}.npz", buffer.getvalue())


def exports(folder, digest):
    """The exports in ``folder`` written by the same polylenet source as ``digest`` (older runs'
    files, written by another checkout, are ignored)."""
    found = []
    for path in sorted(Path(folder).glob("*.npz")) if folder and Path(folder).is_dir() else []:
        with np.load(path, allow_pickle=False) as data:
            if "source_digest" in data.files and str(data["source_digest"]) == digest:
                found.append(path)
    return found


@needs_exchange
@pytest.mark.parametrize("backend", BACKENDS)
def test_weights_from_other_environments(backend):
    others = [p for p in exports(EXCHANGE, source_digest()) if p.stem.split("-")[0] not in LOCAL]
    if not others:
        pytest.skip("no other environment has exported weights from this source yet (the first env of a tox "
                    "run, or one job of the CI matrix); tox's last env, protocol, checks every pair")
    for path in others:
        source, variant = path.stem.split("-", 1)
        with np.load(path, allow_pickle=False) as data:
            weights = {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("weight:")}
            expected = data["logits"]
        spec = polylenet.load_spec(variant)
        model = polylenet.build(spec, backend=backend, weights=weights)
        error = np.max(np.abs(polylenet.forward(model, probe(spec)) - expected))
        assert error <= 1e-5, f"{source} -> {backend} ({variant}): logits differ by {error}"
