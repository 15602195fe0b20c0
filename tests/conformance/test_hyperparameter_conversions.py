"""The conversions each adapter makes so that a hyperparameter its framework cannot express as
the spec states it still computes the oracle's numbers, and the framework behaviour that makes
each one necessary.

Shared part: specs that the conformance specs (cases.EXTRA_SPECS) leave unchecked, each built
so that one conversion is what stands between a backend and the oracle, run through the
conformance tests for every backend. Per-backend sections: the framework's own operator, used
as the spec's numbers would suggest without the conversion, measured against the oracle (with
the versions pinned in backends/requirements/). They fail when a framework changes that
behaviour, so the conversion can be revisited.
"""

import importlib

import numpy as np
import pytest
from test_conformance import (  # noqa: F401 (collected here, on the specs below)
    test_every_layer_output_matches_reference,
    test_layer_shapes_match_spec,
    test_logits_match_reference,
    test_loss_and_gradients_match_reference,
    test_three_sgd_steps_match_reference,
    test_weights_round_trip_bit_exact,
)

import polylenet
from cases import BACKENDS, EXTRA_SPECS
from polylenet.reference import pool_forward
from polylenet.registry import get_backend

_conv = polylenet.conv2d(4, 3, padding=1)
CONVERSION_SPECS = {
    # Max pooling with per-side pads and ceil_mode's overhang right after a tanh: a zero pad
    # (instead of -inf) wins wherever a window's real values are all negative.
    "max-pads-per-side": polylenet.Spec("max-pads-per-side", (
        _conv, polylenet.activation("tanh"), polylenet.pool2d("max", 3, 2, padding=((0, 1), (1, 0)), ceil_mode=True),
        polylenet.flatten(), polylenet.dense(10)), input_shape=(2, 9, 8)),
    # Keras's padding="same" (the odd pad at the bottom/right) for average pooling, which the
    # windows reach: counted in the divisor, then (Keras's AveragePooling2D) left out.
    "avg-pads-per-side": polylenet.Spec("avg-pads-per-side", (
        _conv, polylenet.activation("tanh"), polylenet.pool2d("avg", 3, 2, padding="same"),
        polylenet.pool2d("avg", 3, 2, padding="same", count_include_pad=False),
        polylenet.flatten(), polylenet.dense(10)), input_shape=(2, 8, 10)),
    # ceil_mode where the last window would start in the bottom/right padding: PyTorch's rule
    # (the spec's) drops it, on both axes of the avg pool and the rows of the max pool.
    "ceil-window-in-pad": polylenet.Spec("ceil-window-in-pad", (
        polylenet.conv2d(3, 3, padding=1), polylenet.activation("tanh"),
        polylenet.pool2d("avg", 3, 3, padding=1, ceil_mode=True),
        polylenet.pool2d("max", 3, 3, padding=1, ceil_mode=True),
        polylenet.flatten(), polylenet.dense(10)), input_shape=(2, 14, 11)),
    # ceil_mode that drops the last window on one axis and keeps an overhanging one on the other.
    "ceil-both-ways": polylenet.Spec("ceil-both-ways", (
        polylenet.conv2d(3, 3, padding=1), polylenet.activation("tanh"),
        polylenet.pool2d("max", 3, 3, padding=1, ceil_mode=True),
        polylenet.pool2d("avg", 3, 3, padding=1, ceil_mode=True, count_include_pad=False),
        polylenet.flatten(), polylenet.dense(10)), input_shape=(2, 14, 15)),
}


@pytest.fixture(params=list(CONVERSION_SPECS))
def spec(request):
    return CONVERSION_SPECS[request.param]


def _needs(backend):
    if backend not in BACKENDS:
        pytest.skip(f"{backend} is not under test here (POLYLENET_TEST_BACKENDS)")
    get_backend(backend)  # imports the framework as its adapter does (its import-time warnings hidden)
    return importlib.import_module(backend)


def _pool_case(spec_name, index, seed=3):
    """The pool layer at ``index`` of a spec, a batch of its input (tanh of normal values: signs
    mixed) and the oracle's output for it."""
    spec = EXTRA_SPECS.get(spec_name) or CONVERSION_SPECS[spec_name]
    _, layer, in_shape, _ = spec.table[index]
    x = np.tanh(np.random.default_rng(seed).standard_normal((4, *in_shape[1:]))).astype(np.float32)
    return layer, x, pool_forward(x.astype(np.float64), layer)[0]


def _logits_with_loss(scale, seed=4):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((64, 10)) * scale).astype(np.float32)
    labels = rng.integers(0, 10, 64)
    z = logits.astype(np.float64)
    log_softmax = z - z.max(axis=1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(axis=1, keepdims=True))
    return logits, labels, -log_softmax[np.arange(64), labels]


# ---- torch ---------------------------------------------------------------------------------
# Conversions: nn.ZeroPad2d before nn.Conv2d for per-side pads (hyper-conv); for per-side pool
# pads, nn.ConstantPad2d(-inf) before nn.MaxPool2d (max-pads-per-side) and CountedAvgPool2d
# (avg-pads-per-side). Everything else is torch's own: its ceil_mode rule and divisors are the spec's.


def test_torch_avg_pool_after_a_zero_pad_counts_the_pads_as_input():
    torch = _needs("torch")
    layer, x, want = _pool_case("avg-pads-per-side", 3)
    (top, bottom), (left, right) = layer.pads
    pool = torch.nn.Sequential(torch.nn.ZeroPad2d((left, right, top, bottom)),
                               torch.nn.AvgPool2d(layer.size_hw, layer.stride_hw, count_include_pad=False))
    got = pool(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape and np.abs(got - want).max() > 0.05


# ---- mxnet ---------------------------------------------------------------------------------
# Conversions: an explicit pad (F.pad in a HybridLambda) before Conv2D for per-side pads
# (hyper-conv), and before MaxPool2D with -inf (max-pads-per-side, ceil-both-ways);
# CountedAvgPool2D for per-side avg pads (hyper-pool-pad, avg-pads-per-side) and where no
# pooling_convention gives the spec's size (ceil-both-ways); pooling_convention "valid" where
# "full" keeps a window too many (ceil-window-in-pad); cross-entropy from a log-softmax
# (hyper-pool's third SGD step).


def test_mxnet_full_convention_keeps_a_last_window_that_starts_in_the_padding():
    mx = _needs("mxnet")
    layer, x, want = _pool_case("ceil-window-in-pad", 2)
    got = mx.nd.Pooling(mx.nd.array(x), kernel=layer.size_hw, stride=layer.stride_hw,
                        pad=(layer.pads[0][0], layer.pads[1][0]),
                        pool_type="avg", pooling_convention="full").asnumpy()
    assert want.shape[2:] == (5, 4) and got.shape[2:] == (6, 5)


def test_mxnet_softmax_cross_entropy_clips_each_loss_at_18_42():
    mx = _needs("mxnet")
    logits, labels, exact = _logits_with_loss(scale=10)
    got = mx.nd.softmax_cross_entropy(mx.nd.array(logits), mx.nd.array(labels)).asscalar()
    assert exact.max() > 30 and got < 0.9 * exact.sum()
    assert np.isclose(mx.nd.softmax_cross_entropy(mx.nd.array([[0.0, 100.0]]), mx.nd.array([0])).asscalar(),
                      -np.log(1e-8), rtol=1e-6)


# ---- paddle --------------------------------------------------------------------------------
# Conversions: none for conv (paddle takes per-side pads); for pools, `exclusive` is
# not count_include_pad (hyper-pool); CountedAvgPool2D for count_include_pad with per-side pads
# (avg-pads-per-side) and where no ceil_mode gives the spec's size (ceil-both-ways); nn.Pad2D(-inf)
# before MaxPool2D likewise; ceil_mode=False where paddle's ceil_mode keeps a window too many
# (ceil-window-in-pad); cross-entropy from a log-softmax (hyper-pool's third SGD step);
# clear_grad before the step's backward (test_conformance's step-after-loss_and_grads test).


def test_paddle_avg_divisor_leaves_out_the_bottom_right_pad():
    paddle = _needs("paddle")
    layer, x, want = _pool_case("avg-pads-per-side", 2)
    (top, bottom), (left, right) = layer.pads
    got = paddle.nn.functional.avg_pool2d(paddle.to_tensor(x), layer.size_hw, layer.stride_hw,
                                          [top, bottom, left, right], ceil_mode=layer.ceil_mode,
                                          exclusive=False).numpy()
    assert got.shape == want.shape and np.abs(got - want).max() > 0.05


def test_paddle_ceil_mode_keeps_a_last_window_that_starts_in_the_padding():
    paddle = _needs("paddle")
    layer, x, want = _pool_case("ceil-window-in-pad", 2)
    got = paddle.nn.functional.avg_pool2d(paddle.to_tensor(x), layer.size_hw, layer.stride_hw, 1, ceil_mode=True)
    assert want.shape[2:] == (5, 4) and tuple(got.shape[2:]) == (6, 5)


def test_paddle_cross_entropy_floors_each_log_probability_at_minus_64():
    paddle = _needs("paddle")
    logits, labels, exact = _logits_with_loss(scale=30)
    got = float(paddle.nn.functional.cross_entropy(paddle.to_tensor(logits), paddle.to_tensor(labels)))
    assert exact.max() > 64 and got < 0.95 * exact.mean()
    big = paddle.to_tensor(np.array([[0.0, 100.0]], np.float32))
    assert float(paddle.nn.functional.cross_entropy(big, paddle.to_tensor(np.array([0])))) == 64.0
