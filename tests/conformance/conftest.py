"""The conformance suite runs over every backend importable here and every named variant.

POLYLENET_TEST_BACKENDS (comma-separated) narrows the backends, as each tox env does.
"""

import pytest

import polylenet
from cases import BACKENDS, EXTRA_SPECS, VARIANTS


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=VARIANTS + list(EXTRA_SPECS))
def spec(request):
    return EXTRA_SPECS.get(request.param) or polylenet.load_spec(request.param)


@pytest.fixture(params=[b for b in BACKENDS if b != "numpy"])
def framework(request):
    """A backend that runs a real framework (not the NumPy oracle itself)."""
    return request.param
