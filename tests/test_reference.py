"""The oracle checked against calculus: finite differences of the loss in float64."""

import types

import numpy as np
import pytest

import polylenet
from polylenet.adapter import LOSSES
from polylenet.errors import ConfigError, SpecError
from polylenet.reference import (
    LOSS_FNS,
    NumpyLeNet,
    conv_backward,
    conv_forward,
    cross_entropy,
    pool_backward,
    pool_forward,
    squared_error,
)


def _loss64(spec, params, x, y, training=True, masks=None):
    model = NumpyLeNet(spec, params)
    logits, _ = model.forward_layers(x, training=training, masks=masks)
    return cross_entropy(logits, y)[0]


# The modern CNNs' new layers, small: dropout on an NCHW map and after dense layers (p far from
# 0.5), global average pooling of a non-square map, and the spec ending in a flatten (NiN's tail).
MODERN_SMALL = polylenet.Spec("modern-small", (
    polylenet.conv2d(4, 3, padding=1), polylenet.activation("relu"), polylenet.dropout(0.3),
    polylenet.pool2d("max", 3, 2), polylenet.conv2d(10, 1), polylenet.activation("tanh"),
    polylenet.global_avg_pool(), polylenet.flatten(), polylenet.dense(12), polylenet.dropout(0.6),
    polylenet.dense(10)), input_shape=(2, 9, 7))


@pytest.mark.parametrize("training", [True, False], ids=["training-masks", "evaluation"])
def test_dropout_and_global_pool_gradients_match_finite_differences(training):
    """With given masks (training) and as the identity (evaluation), in float64."""
    from polylenet.masks import dropout_masks

    spec = MODERN_SMALL
    rng = np.random.default_rng(3)
    params = {k: v.astype(np.float64) + rng.normal(0, 0.05, v.shape) for k, v in polylenet.init_weights(spec).items()}
    x, y = rng.random((5, *spec.input_shape)), rng.integers(0, 10, 5)
    masks = dropout_masks(spec, 5, seed=0, epoch=0, step=0) if training else None
    _, grads, _ = NumpyLeNet(spec, dict(params)).backward(x, y, training=training, masks=masks)
    eps = 1e-6
    for key in grads:
        value = params[key]
        for index in [tuple(rng.integers(0, d) for d in value.shape) for _ in range(4)]:
            plus, minus = {**params, key: value.copy()}, {**params, key: value.copy()}
            plus[key][index] += eps
            minus[key][index] -= eps
            up, down = _loss64(spec, plus, x, y, training, masks), _loss64(spec, minus, x, y, training, masks)
            numeric = (up - down) / (2 * eps)
            assert abs(grads[key][index] - numeric) <= 1e-4 * max(1e-3, abs(numeric)) + 1e-6, (key, index)


def test_dropout_applies_the_mask_in_training_and_nothing_in_evaluation():
    spec = polylenet.Spec("d", (polylenet.flatten(), polylenet.dropout(0.25)), input_shape=(1, 2, 2), num_classes=4)
    model = NumpyLeNet(spec, {})
    x = np.arange(1.0, 9.0).reshape(2, 1, 2, 2)
    mask = {"dropout1": np.array([[0, 4 / 3, 4 / 3, 0], [4 / 3, 0, 4 / 3, 4 / 3]], np.float32)}
    out, _ = model.forward_layers(x, training=True, masks=mask)
    np.testing.assert_allclose(out, x.reshape(2, 4) * mask["dropout1"], rtol=1e-7)
    assert np.array_equal(model.forward_layers(x)[0], x.reshape(2, 4))
    drawn = model.forward_layers(np.ones((100, 1, 2, 2)), training=True)[0]  # its own draws
    assert set(np.unique(drawn).round(6)) == {0.0, round(4 / 3, 6)}


def test_global_avg_pool_is_the_channel_mean():
    spec = polylenet.Spec("g", (polylenet.global_avg_pool(), polylenet.flatten()), input_shape=(3, 4, 5),
                          num_classes=3)
    x = np.random.default_rng(0).random((2, 3, 4, 5))
    np.testing.assert_allclose(NumpyLeNet(spec, {}).forward_layers(x)[0], x.mean(axis=(2, 3)), rtol=1e-12)


# lenet-bn is checked in both batchnorm modes: training (batch statistics) and evaluation
# (running statistics, perturbed away from their initial 0 and 1 below).
@pytest.mark.parametrize("name, training", [(n, True) for n in sorted(polylenet.spec.LENETS)] + [("lenet-bn", False)])
def test_gradients_match_finite_differences(name, training):
    spec = polylenet.load_spec(name)
    rng = np.random.default_rng(0)
    params = {k: v.astype(np.float64) + rng.normal(0, 0.05, v.shape)
              for k, v in polylenet.init_weights(spec, seed=0).items()}
    x = rng.random((4, *spec.input_shape))
    y = rng.integers(0, 10, 4)
    model = NumpyLeNet(spec, dict(params))
    _, grads, _ = model.backward(x, y, training=training)
    assert sorted(grads) == sorted(polylenet.shapes.trainable_shapes(spec))
    eps = 1e-6
    for key in grads:
        value = params[key]
        for index in [tuple(rng.integers(0, d) for d in value.shape) for _ in range(3)]:
            plus = {**params, key: value.copy()}
            minus = {**params, key: value.copy()}
            plus[key][index] += eps
            minus[key][index] -= eps
            numeric = (_loss64(spec, plus, x, y, training) - _loss64(spec, minus, x, y, training)) / (2 * eps)
            assert abs(grads[key][index] - numeric) <= 1e-4 * max(1e-3, abs(numeric)) + 1e-6, (key, index)


def test_pooling_and_conv_with_stride_and_overlap():
    # A stride-2 conv and an overlapping 3/2 pool exercise the general paths of the interpreter.
    spec = polylenet.Spec("strided", (polylenet.conv2d(3, 3, stride=2, padding=1), polylenet.activation("tanh"),
                                      polylenet.pool2d("max", 3, 2), polylenet.flatten(), polylenet.dense(10)),
                          input_shape=(2, 12, 12))
    assert polylenet.spec_layer_shapes(spec)[2] == ("pool1", (1, 3, 2, 2))
    rng = np.random.default_rng(1)
    params = {k: v.astype(np.float64) for k, v in polylenet.init_weights(spec, 0).items()}
    x, y = rng.random((3, 2, 12, 12)), np.array([1, 2, 3])
    _, grads = NumpyLeNet(spec, params).loss_and_grads(x, y)
    w = params["conv1.weight"]
    eps = 1e-6
    for index in [(0, 0, 0, 0), (2, 1, 1, 2), (1, 0, 2, 1)]:
        plus, minus = w.copy(), w.copy()
        plus[index] += eps
        minus[index] -= eps
        numeric = (_loss64(spec, {**params, "conv1.weight": plus}, x, y)
                   - _loss64(spec, {**params, "conv1.weight": minus}, x, y)) / (2 * eps)
        assert abs(grads["conv1.weight"][index] - numeric) <= 1e-5


def test_loss_at_uniform_logits_is_log_classes():
    loss, grad = cross_entropy(np.zeros((5, 10)), np.arange(5))
    assert loss == pytest.approx(np.log(10))
    assert grad.sum() == pytest.approx(0.0)


def test_batchnorm_running_statistics_follow_the_books_update():
    """running = momentum * running + (1 - momentum) * batch, with the biased batch variance."""
    spec = polylenet.Spec("bn", (polylenet.flatten(), polylenet.batchnorm(momentum=0.7, eps=1e-3),
                                 polylenet.dense(10)), input_shape=(2, 3, 3))
    rng = np.random.default_rng(3)
    params = polylenet.init_weights(spec, 0)
    params["bn1.running_mean"] = rng.normal(size=18).astype(np.float32)
    model = NumpyLeNet(spec, dict(params))
    x = rng.random((5, 2, 3, 3))
    model.backward(x, np.arange(5))
    flat = x.reshape(5, -1)
    np.testing.assert_allclose(model.params["bn1.running_mean"],
                               0.7 * params["bn1.running_mean"] + 0.3 * flat.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model.params["bn1.running_var"], 0.7 + 0.3 * flat.var(0), rtol=1e-6)
    # evaluation mode normalizes with the running statistics and eps, and leaves them alone
    before = dict(model.params)
    out, _ = model.forward_layers(x, training=False)
    assert all(model.params[k] is before[k] for k in before)
    hidden = (flat - model.params["bn1.running_mean"]) / np.sqrt(model.params["bn1.running_var"] + 1e-3)
    np.testing.assert_allclose(out, hidden @ params["dense1.weight"].T.astype(np.float64), rtol=1e-5, atol=1e-6)


# ---- d2l's convolution-chapter hyperparameters: each layer's backward against finite differences


def _numeric_input_gradient(forward, x, dy, eps=1e-6):
    """d sum(forward(x) * dy) / dx at every position of x, by central differences in float64."""
    numeric = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += eps
        minus[index] -= eps
        numeric[index] = ((forward(plus) - forward(minus)) * dy).sum() / (2 * eps)
    return numeric


CONVS = {  # (kernel, stride, pads ((top, bottom), (left, right)), bias)
    "rect-kernel": ((3, 2), (1, 1), ((0, 0), (0, 0)), True),
    "per-axis-stride": ((3, 3), (2, 1), ((1, 1), (1, 1)), True),
    "asymmetric-pads": ((2, 3), (1, 2), ((1, 0), (2, 1)), True),
    "bias-free": ((3, 5), (3, 2), ((1, 0), (2, 1)), False),
}


@pytest.mark.parametrize("kernel, stride, pads, bias", CONVS.values(), ids=list(CONVS))
def test_conv_backward_matches_finite_differences(kernel, stride, pads, bias):
    rng = np.random.default_rng(4)
    x, w = rng.normal(size=(2, 3, 9, 8)), rng.normal(size=(4, 3, *kernel))
    b = rng.normal(size=4) if bias else None
    y, cache = conv_forward(x, w, b, stride, pads)
    dy = rng.normal(size=y.shape)
    dx, grads = conv_backward(dy, cache)
    assert sorted(grads) == (["bias", "weight"] if bias else ["weight"])
    np.testing.assert_allclose(dx, _numeric_input_gradient(lambda v: conv_forward(v, w, b, stride, pads)[0], x, dy),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grads["weight"], _numeric_input_gradient(
        lambda v: conv_forward(x, v, b, stride, pads)[0], w, dy), rtol=1e-6, atol=1e-7)
    if bias:
        np.testing.assert_allclose(grads["bias"], dy.sum(axis=(0, 2, 3)))


POOLS = {  # windows overlapping the padding, ceil_mode's overhang, both divisors
    "max-pad": polylenet.pool2d("max", 3, 2, padding=1),
    "max-rect-ceil": polylenet.pool2d("max", (3, 2), (2, 3), padding=((1, 0), (0, 1)), ceil_mode=True),
    "avg-pad-counted": polylenet.pool2d("avg", 3, 2, padding=1),
    "avg-pad-excluded": polylenet.pool2d("avg", 3, 2, padding=1, count_include_pad=False),
    "avg-ceil-counted": polylenet.pool2d("avg", (3, 2), (2, 1), padding=((1, 1), (1, 0)), ceil_mode=True),
    "avg-ceil-excluded": polylenet.pool2d("avg", 3, (2, 3), padding=((0, 1), (1, 1)), ceil_mode=True,
                                          count_include_pad=False),
}


@pytest.mark.parametrize("layer", POOLS.values(), ids=list(POOLS))
def test_pool_backward_matches_finite_differences(layer):
    rng = np.random.default_rng(5)
    # negative inputs (a zero pad would win a max), all distinct (no ties for max)
    x = -1.0 - rng.permutation(2 * 2 * 8 * 9).reshape(2, 2, 8, 9) / 10.0
    out_shape = layer.output_shape("pool", x.shape)
    y, cache = pool_forward(x, layer)
    assert y.shape == out_shape and np.all(y <= -1.0)
    dy = rng.normal(size=y.shape)
    dx, grads = pool_backward(dy, cache)
    assert grads == {}
    # max pooling's windows are tie-free and eps is far below the gaps (0.1), so the
    # differences are exact away from the kinks
    np.testing.assert_allclose(dx, _numeric_input_gradient(lambda v: pool_forward(v, layer)[0], x, dy),
                               rtol=1e-6, atol=1e-7)


def test_pool_forward_matches_hand_computed_values():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    # 3x3, stride 1, pad 1: the corner window holds 0, 1, 4, 5 (sum 10) and five pads
    assert pool_forward(x, polylenet.pool2d("avg", 3, 1, padding=1))[0][0, 0, 0, 0] == pytest.approx(10 / 9)
    assert pool_forward(x, polylenet.pool2d("avg", 3, 1, padding=1, count_include_pad=False))[0][0, 0, 0, 0] == 2.5
    # 3x3, stride 2, pad 1, ceil_mode: 3x3 outputs; the last window's rows are input row 3,
    # the bottom pad and one overhanging row, which is never counted
    counted, _ = pool_forward(x, polylenet.pool2d("avg", 3, 2, padding=1, ceil_mode=True))
    excluded, _ = pool_forward(x, polylenet.pool2d("avg", 3, 2, padding=1, ceil_mode=True, count_include_pad=False))
    assert counted.shape == excluded.shape == (1, 1, 3, 3)
    assert counted[0, 0, 2, 2] == 15 / 4 and excluded[0, 0, 2, 2] == 15.0  # 2x2 counted, 1 input position
    assert counted[0, 0, 0, 2] == pytest.approx((3 + 7) / 6) and excluded[0, 0, 0, 2] == (3 + 7) / 2
    # max: every value negative, so a zero pad or overhang would win if it could
    peaks, _ = pool_forward(-(x + 1), polylenet.pool2d("max", 3, 2, padding=1, ceil_mode=True))
    np.testing.assert_array_equal(peaks[0, 0], [[-1, -2, -4], [-5, -6, -8], [-13, -14, -16]])


def test_max_pool_ties_send_the_gradient_to_the_first_maximum():
    x = np.zeros((1, 1, 2, 2))  # one window, four equal values
    _, cache = pool_forward(x, polylenet.pool2d("max", 2))
    dx, _ = pool_backward(np.ones((1, 1, 1, 1)), cache)
    np.testing.assert_array_equal(dx[0, 0], [[1, 0], [0, 0]])


def _check_model_gradients(spec, y, loss, seed=6):
    rng = np.random.default_rng(seed)
    params = {k: v.astype(np.float64) + rng.normal(0, 0.05, v.shape)
              for k, v in polylenet.init_weights(spec, seed=0).items()}
    x = rng.random((3, *spec.input_shape))
    _, grads, _ = NumpyLeNet(spec, dict(params)).backward(x, y, loss=loss)
    assert sorted(grads) == sorted(polylenet.shapes.trainable_shapes(spec))

    def total(p):
        output, _ = NumpyLeNet(spec, p).forward_layers(x, training=True)
        return LOSS_FNS[loss](output, y)[0]

    eps = 1e-6
    for key in grads:
        value = params[key]
        for index in {tuple(int(rng.integers(0, d)) for d in value.shape) for _ in range(4)}:
            plus, minus = value.copy(), value.copy()
            plus[index] += eps
            minus[index] -= eps
            numeric = (total({**params, key: plus}) - total({**params, key: minus})) / (2 * eps)
            assert abs(grads[key][index] - numeric) <= 1e-4 * max(1e-3, abs(numeric)) + 1e-6, (key, index)


HYPER_SPECS = {
    # conv1's gradient flows through the input gradient of conv2, a strided, asymmetrically
    # padded, rectangular, bias-free convolution that is not the first layer
    "strided-second-conv": polylenet.Spec("strided-second-conv", (
        polylenet.conv2d(3, (3, 2), padding=((1, 0), (0, 1))), polylenet.activation("tanh"),
        polylenet.conv2d(4, (2, 3), stride=(2, 3), padding=((1, 0), (1, 1)), bias=False),
        polylenet.activation("tanh"), polylenet.flatten(), polylenet.dense(10)), input_shape=(2, 9, 10)),
    # tanh before every pool: negative inputs, no ties of relu's zeros
    "padded-pools": polylenet.Spec("padded-pools", (
        polylenet.conv2d(3, 3, padding=1), polylenet.activation("tanh"),
        polylenet.pool2d("max", 3, 2, padding=1, ceil_mode=True),
        polylenet.conv2d(4, 1), polylenet.activation("tanh"),
        polylenet.pool2d("avg", 3, 2, padding=1, ceil_mode=True, count_include_pad=False),
        polylenet.conv2d(4, 1), polylenet.pool2d("avg", (2, 3), (1, 2), padding=((1, 0), (1, 1)), ceil_mode=True),
        polylenet.flatten(), polylenet.dense(10)), input_shape=(2, 11, 12)),
    # blocks: a residual add after a strided shortcut (batchnorm in the body, in training mode),
    # a concatenation with an identity branch and a pooled one, nested in a group, then flatten
    "blocks": polylenet.Spec("blocks", (
        polylenet.sequential("b", polylenet.conv2d(3, 3, padding=1), polylenet.activation("tanh")),
        polylenet.add((polylenet.conv2d(4, 3, stride=2, padding=1), polylenet.batchnorm(0.5, 0.1),
                       polylenet.activation("tanh"), polylenet.conv2d(4, 3, padding=1)),
                      (polylenet.conv2d(4, 1, stride=2),), after=(polylenet.activation("tanh"),)),
        polylenet.sequential("b", polylenet.concat(
            (), (polylenet.conv2d(2, 1), polylenet.activation("tanh")),
            (polylenet.pool2d("max", 3, 1, padding=1), polylenet.conv2d(3, (1, 3), padding=(0, 1))))),
        polylenet.flatten(), polylenet.dense(10)), input_shape=(2, 7, 6)),
}


@pytest.mark.parametrize("spec", HYPER_SPECS.values(), ids=list(HYPER_SPECS))
@pytest.mark.parametrize("loss", sorted(LOSS_FNS))
def test_hyperparameter_gradients_match_finite_differences(spec, loss):
    rng = np.random.default_rng(7)
    y = rng.integers(0, 10, 3) if loss == "cross_entropy" else rng.normal(size=(3, 10))
    _check_model_gradients(spec, y, loss)


def test_squared_error_is_the_sum_of_squares():
    loss, grad = squared_error(np.array([[1.0, 2.0], [0.5, -1.0]]), np.array([[0.0, 0.0], [0.5, 1.0]]))
    assert loss == 1 + 4 + 0 + 4
    np.testing.assert_array_equal(grad, [[2, 4], [0, -4]])


def test_losses_are_the_adapter_contracts():
    assert tuple(LOSS_FNS) == LOSSES


def test_the_api_passes_the_loss_through_and_validates_it():
    spec = HYPER_SPECS["strided-second-conv"]
    model = polylenet.build(spec, backend="numpy", seed=1)
    rng = np.random.default_rng(8)
    x, targets = rng.random((4, *spec.input_shape), dtype=np.float32), rng.random((4, 10), dtype=np.float32)
    loss, grads = polylenet.loss_and_grads(model, x, targets, loss="squared_error")
    expected = ((polylenet.forward(model, x).astype(np.float64) - targets) ** 2).sum()
    assert loss == pytest.approx(expected, rel=1e-5)
    assert sorted(grads) == sorted(polylenet.shapes.trainable_shapes(spec))
    step = polylenet.trainer(model, lr=0.01, loss="squared_error")
    first, correct = step(x, targets)
    assert correct == 0 and first == pytest.approx(loss, rel=1e-6)
    assert step(x, targets)[0] < first  # a small SGD step on the same batch lowers it
    with pytest.raises(ConfigError, match=r"unknown loss 'mse'.*\['cross_entropy', 'squared_error'\]"):
        polylenet.loss_and_grads(model, x, targets, loss="mse")
    with pytest.raises(ConfigError, match="unknown loss"):
        polylenet.trainer(model, lr=0.1, loss="l2")
    with pytest.raises(ValueError, match=r"squared_error.*\(4, 10\)"):
        polylenet.loss_and_grads(model, x, np.arange(4), loss="squared_error")
    with pytest.raises(ValueError, match="integer class labels"):
        polylenet.trainer(model, lr=0.1)(x, targets)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        polylenet.loss_and_grads(model, x, np.array([0, 1, 2, 10]))


def test_an_unknown_layer_type_is_refused():
    with pytest.raises(SpecError, match="backend 'numpy' cannot build layer odd1 of type 'odd'"):
        NumpyLeNet._translation("odd1", types.SimpleNamespace(type="odd"))
