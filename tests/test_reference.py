"""The oracle checked against calculus: finite differences of the loss in float64."""

import numpy as np
import pytest

import polylenet
from polylenet.reference import NumpyLeNet, cross_entropy


def _loss64(spec, params, x, y, training=True):
    model = NumpyLeNet(spec, params)
    logits, _ = model.forward_layers(x, training=training)
    return cross_entropy(logits, y)[0]


# lenet-bn is checked in both batchnorm modes: training (batch statistics) and evaluation
# (running statistics, perturbed away from their initial 0 and 1 below).
@pytest.mark.parametrize("name, training", [(n, True) for n in sorted(polylenet.VARIANTS)] + [("lenet-bn", False)])
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
