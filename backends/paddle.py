"""PaddlePaddle: LeNet as a paddle.nn.Sequential, as in d2l's PaddlePaddle tab."""

from __future__ import annotations

import warnings

import numpy as np

# paddle 3.3 warns on import that ccache (a C++ extension build cache) is missing; LeNet builds none.
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

import paddle  # noqa: E402
from paddle import nn  # noqa: E402
from paddle.nn import functional as F  # noqa: E402

from polylenet.shapes import layer_table  # noqa: E402
from polylenet.spec import Activation, Conv2D, Dense, Flatten, Pool2D  # noqa: E402

NAME = "paddle"
_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}
_POOLS = {"avg": nn.AvgPool2D, "max": nn.MaxPool2D}

paddle.set_device("cpu")


def version() -> str:
    return paddle.__version__


def build(spec):
    layers = []
    for name, layer, in_shape, _ in layer_table(spec):
        if isinstance(layer, Conv2D):
            native = nn.Conv2D(in_shape[1], layer.out_channels, layer.kernel, stride=layer.stride,
                               padding=layer.padding)
        elif isinstance(layer, Pool2D):
            native = _POOLS[layer.kind](kernel_size=layer.size, stride=layer.stride)
        elif isinstance(layer, Activation):
            native = _ACTIVATIONS[layer.fn]()
        elif isinstance(layer, Flatten):
            native = nn.Flatten()
        elif isinstance(layer, Dense):
            native = nn.Linear(in_shape[1], layer.units)
        layers.append((name, native))
    return nn.Sequential(*layers)


def to_native(key, value):
    # Paddle's Linear weight is (in, out); conv kernels are neutral (out, in, kh, kw).
    return value.T if key.startswith("dense") and key.endswith(".weight") else value


to_neutral = to_native  # the transpose is its own inverse


def set_weights(model, weights):
    for key, param in model.named_parameters():
        param.set_value(np.ascontiguousarray(to_native(key, weights[key])))


def get_weights(model):
    return {key: np.ascontiguousarray(to_neutral(key, param.numpy()))
            for key, param in model.named_parameters()}


def forward(model, x):
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()


def layer_shapes(model):
    x = paddle.zeros((1, *model.polylenet_spec.input_shape))
    shapes = []
    with paddle.no_grad():
        for name, layer in model.named_children():
            x = layer(x)
            shapes.append((name, tuple(x.shape)))
    return shapes


def loss_and_grads(model, x, y):
    model.clear_gradients()
    loss = F.cross_entropy(model(paddle.to_tensor(x)), paddle.to_tensor(y, dtype="int64"))
    loss.backward()
    return float(loss), {key: np.ascontiguousarray(to_neutral(key, param.grad.numpy()))
                         for key, param in model.named_parameters()}


def trainer(model, lr, compiled=True):
    optimizer = paddle.optimizer.SGD(learning_rate=lr, parameters=model.parameters())

    def step(x, y):
        labels = paddle.to_tensor(y, dtype="int64")
        logits = model(paddle.to_tensor(x))
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        return float(loss), int((logits.argmax(axis=1) == labels).sum())

    return step
