"""The backends and specs under test, and the weights, batches and error measures the
conformance tests share."""

import os

import numpy as np
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


def conformance_weights(spec, seed=1):
    """d2l's init plus non-zero biases, so a dropped or misplaced bias changes the logits."""
    weights = polylenet.init_weights(spec, seed)
    rng = np.random.default_rng(seed + 100)
    for key in weights:
        if key.endswith(".bias"):
            weights[key] = rng.uniform(-0.5, 0.5, weights[key].shape).astype(np.float32)
    return weights


def batches(spec, count=3, size=16, seed=2):
    """Random NCHW float32 images in [0, 1) and labels; fixed by the seed."""
    rng = np.random.default_rng(seed)
    return [(rng.random((size, *spec.input_shape), dtype=np.float32),
             rng.integers(0, spec.num_classes, size).astype(np.int32)) for _ in range(count)]


def relative_error(actual, expected):
    """max |actual - expected| relative to the largest magnitude in ``expected``."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-12))
