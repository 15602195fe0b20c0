"""Weights, batches and error measures shared by the conformance tests."""

import numpy as np

import polylenet


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
