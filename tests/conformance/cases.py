"""The backends and specs under test, and the weights, batches and error measures the
conformance tests share."""

import os

import numpy as np
import pytest

import polylenet
from polylenet.masks import dropout_masks


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
VARIANTS = sorted(polylenet.spec.LENETS)  # the modern CNNs (224x224) have their own module: test_modern_cnns.py
# Beyond LeNet: a rectangular two-channel input, a strided padded conv, tanh and an overlapping
# max-pool, so each adapter's general path (not only the variants' shapes) is checked.
EDGE = polylenet.Spec("edge", (
    polylenet.conv2d(3, 3, stride=2, padding=1), polylenet.activation("tanh"),
    polylenet.pool2d("max", 3, 2), polylenet.flatten(), polylenet.dense(16),
    polylenet.activation("relu"), polylenet.dense(10)), input_shape=(2, 12, 10))
# BatchNorm with momentum and eps far from every framework's defaults (an adapter that leaves
# Keras's eps 1e-3 or torch's momentum 0.1 in place fails), per channel after a conv, per
# feature right after a flatten (Keras flattens H*W*C) and after a dense layer.
BN_EDGE = polylenet.Spec("bn-edge", (
    polylenet.conv2d(4, 3, padding=1), polylenet.batchnorm(momentum=0.6, eps=0.02),
    polylenet.activation("relu"), polylenet.pool2d("max", 2, 2), polylenet.flatten(),
    polylenet.batchnorm(momentum=0.5, eps=0.1), polylenet.activation("tanh"), polylenet.dense(12),
    polylenet.batchnorm(momentum=0.75, eps=1e-3), polylenet.activation("sigmoid"), polylenet.dense(10)),
    input_shape=(2, 8, 6))
# d2l's convolution chapter's hyperparameters, each spec built to trip one convention:
# rectangular kernels and strides, per-side pads (d2l's even-kernel rule puts the extra row on
# top), Keras's "same" at stride 2 (extra row at the bottom), a bias-free conv, a 1x1 conv.
HYPER_CONV = polylenet.Spec("hyper-conv", (
    polylenet.conv2d(4, (5, 3), padding=(2, 1)), polylenet.activation("tanh"),
    polylenet.conv2d(4, (3, 5), stride=(3, 2), padding=((1, 0), (2, 1)), bias=False), polylenet.activation("relu"),
    polylenet.conv2d(3, 3, stride=2, padding="same"), polylenet.activation("sigmoid"),
    polylenet.pool2d("max", 3, 2, padding="same"),
    polylenet.flatten(), polylenet.dense(10)), input_shape=(2, 13, 11))
# Max pooling with padding right after a tanh (negative inputs: a zero pad would win), then
# average pooling with padding that excludes the pads from the divisor, with ceil_mode's
# overhanging last window.
HYPER_POOL = polylenet.Spec("hyper-pool", (
    polylenet.conv2d(4, 3, padding=1), polylenet.activation("tanh"),
    polylenet.pool2d("max", 3, 2, padding=1),
    polylenet.conv2d(4, 1),
    polylenet.pool2d("avg", 3, 2, padding=1, count_include_pad=False, ceil_mode=True),
    polylenet.flatten(), polylenet.dense(10)), input_shape=(2, 12, 11))
# An even kernel with d2l's pads (top/left), average pooling whose divisor counts the explicit
# (asymmetric) pads but not ceil_mode's overhang, and a ceil_mode max pool.
HYPER_POOL_PAD = polylenet.Spec("hyper-pool-pad", (
    polylenet.conv2d(3, 2, padding=((1, 0), (1, 0))), polylenet.activation("relu"),
    polylenet.pool2d("avg", (3, 2), stride=(2, 1), padding=((1, 1), (1, 0)), ceil_mode=True),
    polylenet.pool2d("max", 2, ceil_mode=True),
    polylenet.flatten(), polylenet.dense(10)), input_shape=(1, 10, 9))
# A spec that ends with a flatten (no dense layer to take up an NHWC framework's H*W*C order:
# the adapter must flatten channels first), and one with a batchnorm after that flatten.
_FLATTEN_BODY = (polylenet.conv2d(4, 3, padding=1), polylenet.activation("tanh"), polylenet.pool2d("max", 2),
                 polylenet.conv2d(5, (2, 3)), polylenet.activation("tanh"), polylenet.flatten())
FLATTEN_END = polylenet.Spec("flatten-end", _FLATTEN_BODY, input_shape=(2, 7, 6))
FLATTEN_BN_END = polylenet.Spec("flatten-bn-end", _FLATTEN_BODY + (polylenet.batchnorm(0.5, 0.1),),
                                input_shape=(2, 7, 6))
# Dropout on an NCHW activation (an NHWC framework's mask must be transposed), right after a
# flatten (its mask in the framework's H*W*C order) and between dense layers; p far from 0.5.
DROPOUT_EDGE = polylenet.Spec("dropout-edge", (
    polylenet.conv2d(4, 3, padding=1), polylenet.activation("relu"), polylenet.dropout(0.3),
    polylenet.pool2d("max", 2), polylenet.flatten(), polylenet.dropout(0.5), polylenet.dense(16),
    polylenet.activation("relu"), polylenet.dropout(0.2), polylenet.dense(10)), input_shape=(2, 8, 6))
# NiN's tail: global average pooling of a non-square map and a flatten as the last layers.
GAP_EDGE = polylenet.Spec("gap-edge", (
    polylenet.conv2d(6, 3), polylenet.activation("tanh"), polylenet.dropout(0.4), polylenet.pool2d("avg", 2),
    polylenet.conv2d(10, 1), polylenet.global_avg_pool(), polylenet.flatten()), input_shape=(2, 9, 7))
# Blocks (d2l's Residual, Inception, DenseBlock): a residual add after a strided 1x1 shortcut,
# batchnorm inside the body, then a concatenation (an identity branch, one with dropout inside,
# a pooled one) right before a flatten and a dense layer: an NHWC framework must concatenate on
# its own channel axis and flatten as its dense layer's rows were reordered.
BLOCK_EDGE = polylenet.Spec("block-edge", (
    polylenet.sequential("b", polylenet.conv2d(4, 3, padding=1), polylenet.batchnorm(0.6, 0.02),
                         polylenet.activation("relu")),
    polylenet.add((polylenet.conv2d(6, 3, stride=2, padding=1), polylenet.batchnorm(0.5, 0.1),
                   polylenet.activation("relu"), polylenet.conv2d(6, 3, padding=1)),
                  (polylenet.conv2d(6, 1, stride=2),), after=(polylenet.activation("tanh"),)),
    polylenet.concat((), (polylenet.conv2d(3, 1), polylenet.activation("relu"), polylenet.dropout(0.3)),
                     (polylenet.pool2d("max", 3, 1, padding=1), polylenet.conv2d(2, (1, 3), padding=(0, 1))),
                     label="inception"),
    polylenet.flatten(), polylenet.dense(10)), input_shape=(2, 9, 8))
EXTRA_SPECS = {"block-edge": BLOCK_EDGE, "dropout-edge": DROPOUT_EDGE, "gap-edge": GAP_EDGE, "edge": EDGE,
               "bn-edge": BN_EDGE, "hyper-conv": HYPER_CONV, "hyper-pool": HYPER_POOL,
               "hyper-pool-pad": HYPER_POOL_PAD, "flatten-end": FLATTEN_END, "flatten-bn-end": FLATTEN_BN_END}


class OracleCase(dict):
    """One spec, its weights, batches and masks; the oracle's results computed once, when a test
    first asks (``computations``: result key -> fn(case) -> {key: result}), so an inference-only
    backend never pays for the training ones."""

    def __init__(self, computations, **items):
        super().__init__(**items)
        self.computations = computations

    def oracle(self, key):
        if key not in self:
            self.update(self.computations[key](self))
        return self[key]


def _oracle(case):
    return polylenet.build(case["spec"], backend="numpy", weights=case["weights"])


def _oracle_outputs(case):
    return {"outputs": polylenet.layer_outputs(_oracle(case), case["data"][0][0])}


def _oracle_gradients(case):
    (x, y), masks = case["data"][0], case["masks"][0]
    return dict(zip(("loss", "grads"), polylenet.loss_and_grads(_oracle(case), x, y, masks=masks)))


def _oracle_steps(case):
    oracle = _oracle(case)
    step = polylenet.trainer(oracle, lr=case["lr"])
    losses = [step(x, y, m)[0] for (x, y), m in zip(case["data"], case["masks"])]
    return {"step_losses": losses, "trained": polylenet.get_weights(oracle)}


# What an OracleCase computes on the oracle, by result key: the first batch's layer outputs, its
# loss and gradients with the first step's masks, and every step's loss and the trained weights
ORACLE_COMPUTATIONS = {"outputs": _oracle_outputs, "loss": _oracle_gradients, "grads": _oracle_gradients,
                       "step_losses": _oracle_steps, "trained": _oracle_steps}


def conformance_weights(spec, seed=1):
    """d2l's init plus non-zero biases, and batchnorm gammas, running means and running
    variances away from 1, 0 and 1 (some variances small, so eps matters), so a dropped or
    misplaced array changes the numbers."""
    weights = polylenet.init_weights(spec, seed)
    rng = np.random.default_rng(seed + 100)
    ranges = {".bias": (-0.5, 0.5), ".running_mean": (-0.5, 0.5), ".running_var": (0.02, 1.5)}
    norms = {path for path, layer, _, _ in spec.leaves if layer.type == "batchnorm"}
    for key in weights:
        low, high = (0.5, 1.5) if key.rsplit(".", 1)[0] in norms and key.endswith(".weight") else \
            next((r for suffix, r in ranges.items() if key.endswith(suffix)), (None, None))
        if low is not None:
            weights[key] = rng.uniform(low, high, weights[key].shape).astype(np.float32)
    return weights


def batches(spec, count=3, size=16, seed=2):
    """Random NCHW float32 images in [0, 1) and labels; fixed by the seed."""
    rng = np.random.default_rng(seed)
    return [(rng.random((size, *spec.input_shape), dtype=np.float32),
             rng.integers(0, spec.num_classes, size).astype(np.int32)) for _ in range(count)]


def step_masks(spec, size, step=0, seed=0):
    """The shared dropout masks of one step (``{}`` for a spec without dropout)."""
    return dropout_masks(spec, size, seed, 0, step)


def relative_error(actual, expected):
    """max |actual - expected| relative to the largest magnitude in ``expected``."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-12))


def cancelled_by_batchnorm(spec):
    """Biases of the conv/dense layers a batchnorm directly follows: training-mode batchnorm
    subtracts the batch mean, so their gradient is zero and SGD leaves them where they are."""
    leaves = spec.leaves  # in a group, branch or block's after list, one after the other
    return {f"{before[0]}.bias" for before, (path, layer, _, _) in zip(leaves, leaves[1:])
            if layer.type == "batchnorm" and before[1].type in ("conv2d", "dense")
            and before[0].rsplit(".", 1)[:-1] == path.rsplit(".", 1)[:-1]
            and getattr(before[1], "bias", True)}
