"""The oracle checked against calculus: finite differences of the loss in float64."""

import numpy as np
import pytest

import polylenet
from polylenet.reference import NumpyLeNet, cross_entropy


def _loss64(spec, params, x, y):
    model = NumpyLeNet(spec, params)
    logits, _ = model.forward_layers(x)
    return cross_entropy(logits, y)[0]


@pytest.mark.parametrize("name", sorted(polylenet.VARIANTS))
def test_gradients_match_finite_differences(name):
    spec = polylenet.load_spec(name)
    rng = np.random.default_rng(0)
    params = {k: v.astype(np.float64) + rng.normal(0, 0.05, v.shape)
              for k, v in polylenet.init_weights(spec, seed=0).items()}
    x = rng.random((4, *spec.input_shape))
    y = rng.integers(0, 10, 4)
    model = NumpyLeNet(spec, params)
    _, grads = model.loss_and_grads(x, y)
    eps = 1e-6
    for key, value in params.items():
        for index in [tuple(rng.integers(0, d) for d in value.shape) for _ in range(3)]:
            plus = {**params, key: value.copy()}
            minus = {**params, key: value.copy()}
            plus[key][index] += eps
            minus[key][index] -= eps
            numeric = (_loss64(spec, plus, x, y) - _loss64(spec, minus, x, y)) / (2 * eps)
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
