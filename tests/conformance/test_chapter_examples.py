"""d2l's convolution chapter ("Convolutions for Images", "Padding and Stride", "Multiple Input and
Multiple Output Channels", "Pooling"): the worked examples, with the book's inputs, kernels and
printed results, on every backend, through ``polylenet.build`` and ``polylenet.layer_outputs``.

Each example is a spec that ends in a flatten of the layer's values (``num_classes`` = their
count), so the example's own output is the layer before the flatten. The book's kernels carry no
bias (``corr2d``) or a zero one.
"""

import numpy as np
import pytest

import polylenet
from polylenet import conv2d, flatten, pool2d

# The book's integers sum exactly in float32; what a framework's convolution algorithm may add is
# rounding of the order of float32's epsilon times the values (at most 224 here).
EXACT = {"rtol": 1e-6, "atol": 1e-5}


def chapter_spec(layers, input_shape):
    """``layers`` and a flatten of their output: num_classes is the number of values it holds."""
    count = polylenet.Spec("count", (*layers, flatten(), polylenet.dense(1)), input_shape=input_shape,
                           num_classes=1).table[-2][-1][1]
    return polylenet.Spec("chapter", (*layers, flatten()), input_shape=input_shape, num_classes=count)


def run(backend, layers, x, weights=None):
    """The last of ``layers``' output for the NCHW batch ``x`` as ``backend`` builds them."""
    x = np.asarray(x, np.float32)
    spec = chapter_spec(layers, x.shape[1:])
    model = polylenet.build(spec, backend=backend, weights={} if weights is None else weights)
    outputs = polylenet.layer_outputs(model, x)
    assert [name for name, _ in outputs] == spec.layer_names()
    (_, layer), (_, flat) = outputs[-2:]
    assert flat.shape == (x.shape[0], spec.num_classes)
    np.testing.assert_array_equal(flat, layer.reshape(flat.shape))  # the neutral C*H*W flatten
    return layer


def corr2d(x, k):
    """d2l's ``corr2d``: the two-dimensional cross-correlation, in NumPy."""
    h, w = k.shape
    return np.array([[(x[i:i + h, j:j + w] * k).sum() for j in range(x.shape[1] - w + 1)]
                     for i in range(x.shape[0] - h + 1)])


def kernel_weights(k, bias):
    """Neutral weights of a one-conv spec: the kernel (out, in, kh, kw), and a zero bias."""
    k = np.asarray(k, np.float32)
    return {"conv1.weight": k, **({"conv1.bias": np.zeros(k.shape[0], np.float32)} if bias else {})}


X3 = np.arange(9.0).reshape(3, 3)
K2 = np.arange(4.0).reshape(2, 2)
# "Multiple Input Channels": X and X + 1, K and K + 1
X_MULTI = np.stack([X3, X3 + 1])
K_MULTI = np.stack([K2, K2 + 1])


@pytest.mark.parametrize("bias", [False, True], ids=["bias-free", "zero-bias"])
def test_cross_correlation(backend, bias):
    assert corr2d(X3, K2).tolist() == [[19, 25], [37, 43]]
    y = run(backend, [conv2d(1, 2, bias=bias)], X3[None, None], kernel_weights(K2[None, None], bias))
    np.testing.assert_allclose(y, [[[[19, 25], [37, 43]]]], **EXACT)


@pytest.mark.parametrize("bias", [False, True], ids=["bias-free", "zero-bias"])
def test_multiple_input_channels(backend, bias):
    y = run(backend, [conv2d(1, 2, bias=bias)], X_MULTI[None], kernel_weights(K_MULTI[None], bias))
    np.testing.assert_allclose(y, [[[[56, 72], [104, 120]]]], **EXACT)


def test_multiple_output_channels(backend):
    # K = torch.stack((K, K + 1, K + 2), 0): three output channels, the book's printed result
    k = np.stack([K_MULTI, K_MULTI + 1, K_MULTI + 2])
    y = run(backend, [conv2d(3, 2, bias=False)], X_MULTI[None], kernel_weights(k, False))
    np.testing.assert_allclose(y[0], [[[56, 72], [104, 120]], [[76, 100], [148, 172]], [[96, 128], [192, 224]]],
                               **EXACT)


def test_1x1_convolution_is_a_dense_layer_over_channels(backend):
    # corr2d_multi_in_out_1x1: X (3, 3, 3), K (2, 3, 1, 1), as the book's normal(0, 1) draws
    rng = np.random.default_rng(0)
    x, k = rng.normal(size=(3, 3, 3)).astype(np.float32), rng.normal(size=(2, 3, 1, 1)).astype(np.float32)
    y = run(backend, [conv2d(2, 1, bias=False)], x[None], kernel_weights(k, False))
    expected = (k.reshape(2, 3) @ x.reshape(3, 9)).reshape(2, 3, 3)
    assert np.abs(y[0] - expected).max() < 1e-6  # the book's assert: float(torch.abs(Y1 - Y2).sum()) < 1e-6


@pytest.mark.parametrize("kernel, padding, stride, shape", [
    (3, 1, 1, (8, 8)),
    ((5, 3), (2, 1), 1, (8, 8)),
    (3, 1, 2, (4, 4)),
    ((3, 5), (0, 1), (3, 4), (2, 2)),
])
def test_padding_and_stride_output_shapes(backend, kernel, padding, stride, shape):
    # comp_conv2d on an 8x8 input, from the same random kernel as the oracle
    layer = conv2d(1, kernel, stride=stride, padding=padding)
    weights = polylenet.init_weights(chapter_spec([layer], (1, 8, 8)), seed=0)
    x = np.random.default_rng(1).random((1, 1, 8, 8), dtype=np.float32)
    y = run(backend, [layer], x, weights)
    assert y.shape[2:] == shape
    np.testing.assert_allclose(y, run("numpy", [layer], x, weights), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind, expected", [("max", [[4, 5], [7, 8]]), ("avg", [[2, 3], [5, 6]])])
def test_pool2d(backend, kind, expected):
    y = run(backend, [pool2d(kind, 2, stride=1)], X3[None, None])
    np.testing.assert_allclose(y, [[expected]], **EXACT)


X4 = np.arange(16.0).reshape(1, 1, 4, 4)


@pytest.mark.parametrize("layer, expected", [
    (pool2d("max", 3), [[10]]),                                          # nn.MaxPool2d(3): stride = size
    (pool2d("max", 3, padding=1, stride=2), [[5, 7], [13, 15]]),
    (pool2d("max", (2, 3), padding=(0, 1), stride=(2, 3)), [[5, 7], [13, 15]]),
], ids=["size3", "size3-pad1-stride2", "size2x3-pad0x1-stride2x3"])
def test_pooling_padding_and_stride(backend, layer, expected):
    np.testing.assert_allclose(run(backend, [layer], X4), [[expected]], **EXACT)


def test_pooling_multiple_channels(backend):
    # X = torch.cat((X, X + 1), 1): pooling runs per channel, so two channels in, two out
    y = run(backend, [pool2d("max", 3, padding=1, stride=2)], np.concatenate([X4, X4 + 1], axis=1))
    np.testing.assert_allclose(y, [[[[5, 7], [13, 15]], [[6, 8], [14, 16]]]], **EXACT)


# "Object Edge Detection in Images": a 6x8 image, white but for a black band in columns 2..5
EDGE_X = np.ones((6, 8))
EDGE_X[:, 2:6] = 0
EDGE_K = np.array([[1.0, -1.0]])
EDGE_Y = corr2d(EDGE_X, EDGE_K)  # 1 at the white-to-black edge (column 1), -1 at black-to-white (5)


def test_edge_detection(backend):
    assert EDGE_Y.shape == (6, 7) and (EDGE_Y[:, 1] == 1).all() and (EDGE_Y[:, 5] == -1).all()
    assert np.count_nonzero(EDGE_Y) == 12
    weights = kernel_weights(EDGE_K[None, None], False)
    np.testing.assert_allclose(run(backend, [conv2d(1, (1, 2), bias=False)], EDGE_X[None, None], weights),
                               EDGE_Y[None, None], **EXACT)
    # the transposed image has horizontal edges, which this kernel cannot see
    transposed = run(backend, [conv2d(1, (1, 2), bias=False)], EDGE_X.T[None, None], weights)
    assert transposed.shape == (1, 1, 8, 5) and not transposed.any()


def learn_kernel_oracle(start, steps, lr):
    """d2l's loop in NumPy (float64): ``l = (Y_hat - Y) ** 2; l.sum().backward()``, then
    ``weight -= lr * grad``. Returns each step's loss (before its update) and the kernel."""
    k, losses = start.astype(np.float64), []
    for _ in range(steps):
        error = corr2d(EDGE_X, k) - EDGE_Y
        losses.append(float((error ** 2).sum()))
        k = k - lr * np.array([[2 * (error * EDGE_X[:, j:j + 7]).sum() for j in range(2)]])
    return np.array(losses), k


# A fixed start for every backend (d2l's is the framework's random init).
EDGE_START = np.random.default_rng(0).normal(size=(1, 2))


def test_learning_the_edge_kernel(trainable):
    """10 SGD steps at lr 3e-2 on the summed squared error, from the same start on every backend.

    Measured: each step's loss is within 3.5e-6 relative of the float64 oracle's on numpy, torch
    and tensorflow alike (3.43e-6 each, the float32 rounding at the last, smallest loss, 0.003;
    rtol 1e-4 below), and the learned kernel within 6e-8 of the oracle's: [[0.98961, -0.99030]],
    where the book prints about [[1.0, -1.0]]. The loss falls from 9.1 to 0.003.
    """
    spec = chapter_spec([conv2d(1, (1, 2), bias=False)], (1, 6, 8))
    assert (spec.input_shape, spec.num_classes) == ((1, 6, 8), 42)
    model = polylenet.build(spec, backend=trainable, weights=kernel_weights(EDGE_START[None, None], False))
    step = polylenet.trainer(model, lr=3e-2, loss="squared_error")
    x, y = EDGE_X[None, None].astype(np.float32), EDGE_Y.reshape(1, 42).astype(np.float32)
    losses = np.array([step(x, y)[0] for _ in range(10)])
    expected_losses, expected_kernel = learn_kernel_oracle(EDGE_START, 10, 3e-2)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-4)
    learned = polylenet.get_weights(model)["conv1.weight"].reshape(1, 2)
    np.testing.assert_allclose(learned, expected_kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(learned, EDGE_K, atol=0.02)
