"""The conformance suite runs over every backend importable here and every named variant.

POLYLENET_TEST_BACKENDS (comma-separated) narrows the backends, as each tox env does. A backend
that declares only the "inference" capability runs every test that needs no training; the
training tests say, per backend, why they do not apply.
"""

import pytest

import polylenet
from cases import BACKENDS, EXTRA_SPECS, VARIANTS
from polylenet.registry import can_train


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def _needs_training(name):
    if not can_train(name):
        pytest.skip(f"{name} declares CAPABILITIES {sorted(polylenet.registry.get_backend(name).CAPABILITIES)}: "
                    "no loss_and_grads/trainer, so training tests do not apply")
    return name


@pytest.fixture(params=[b for b in BACKENDS if b != "numpy"])
def candidate(request):
    """A backend checked against the NumPy oracle: every one but the numpy backend, which is the
    oracle itself (the oracle is checked by finite differences, tests/test_reference.py)."""
    return request.param


@pytest.fixture(params=BACKENDS)
def trainable(request):
    """A backend that trains (declares the "training" capability)."""
    return _needs_training(request.param)


@pytest.fixture(params=[b for b in BACKENDS if b != "numpy"])
def framework(request):
    """A backend that runs a real framework (not the NumPy oracle itself) and trains."""
    return _needs_training(request.param)


@pytest.fixture(params=VARIANTS + list(EXTRA_SPECS))
def spec(request):
    return EXTRA_SPECS.get(request.param) or polylenet.load_spec(request.param)
