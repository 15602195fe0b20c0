"""The conformance suite runs over every backend importable here and every named variant.

POLYLENET_TEST_BACKENDS (comma-separated) narrows the backends, as each tox env does.
"""

import os

import pytest

import polylenet


def _backends():
    wanted = os.environ.get("POLYLENET_TEST_BACKENDS")
    available = polylenet.available_backends()
    if not wanted:
        return available
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    missing = [n for n in names if n not in available]
    if missing:  # a tox env whose framework failed to install must fail, not skip
        raise pytest.UsageError(f"POLYLENET_TEST_BACKENDS names {missing}, not installed here; "
                                f"available: {available}")
    return names


BACKENDS = _backends()
VARIANTS = sorted(polylenet.VARIANTS)
# Beyond LeNet: a rectangular two-channel input, a strided padded conv, tanh and an overlapping
# max-pool, so each adapter's general path (not only the variants' shapes) is checked.
EDGE = polylenet.Spec("edge", (
    polylenet.conv2d(3, 3, stride=2, padding=1), polylenet.activation("tanh"),
    polylenet.pool2d("max", 3, 2), polylenet.flatten(), polylenet.dense(16),
    polylenet.activation("relu"), polylenet.dense(10)), input_shape=(2, 12, 10))


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=VARIANTS + ["edge"])
def spec(request):
    return EDGE if request.param == "edge" else polylenet.load_spec(request.param)




@pytest.fixture(params=[b for b in BACKENDS if b != "numpy"])
def framework(request):
    """A backend that runs a real framework (not the NumPy oracle itself)."""
    return request.param
