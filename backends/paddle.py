"""PaddlePaddle: LeNet as a paddle.nn.Sequential, as in d2l's PaddlePaddle tab."""

from __future__ import annotations

import numpy as np

from polylenet.layers import Activation, BatchNorm, Conv2D, Dense, Flatten, Pool2D, unsupported_layer
from polylenet.quiet import quiet_import
from polylenet.shapes import is_state, layer_table, param_shapes

# paddle 3.3 warns on import that ccache (a C++ extension build cache) is missing; LeNet builds none.
with quiet_import(ignore={"No ccache found": UserWarning}):
    import paddle
    from paddle import nn
    from paddle.nn import functional as F

NAME = "paddle"
CAPABILITIES = frozenset({"inference", "training"})
_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}
_POOLS = {"avg": nn.AvgPool2D, "max": nn.MaxPool2D}


class ChannelBiasConv2D(nn.Conv2D):
    """nn.Conv2D with its bias added as a (C, 1, 1) broadcast. paddle 3.3.1's nn.Conv2D adds it
    reshaped to (1, C, 1, 1), and its CPU add kernel takes 3-4x longer for that broadcast: 12-17 ms
    forward and 10 more backward for LeNet's first 256-image layer here. The
    same sums, in the same order: weights after 180 SGD steps are bit-identical; the step 1.2-1.4x."""

    def forward(self, x):
        y = F.conv2d(x, self.weight, None, self._stride, self._updated_padding, self._dilation, self._groups,
                     self._data_format)
        return y + self.bias.reshape([-1, 1, 1])


def version() -> str:
    return paddle.__version__


def build(spec):
    layers = []
    for name, layer, in_shape, _ in layer_table(spec):
        if isinstance(layer, Conv2D):
            native = ChannelBiasConv2D(in_shape[1], layer.out_channels, layer.kernel, stride=layer.stride,
                                       padding=layer.padding)
        elif isinstance(layer, Pool2D):
            native = _POOLS[layer.kind](kernel_size=layer.size, stride=layer.stride)
        elif isinstance(layer, Activation):
            native = _ACTIVATIONS[layer.fn]()
        elif isinstance(layer, Flatten):
            native = nn.Flatten()
        elif isinstance(layer, Dense):
            native = nn.Linear(in_shape[1], layer.units)
        elif isinstance(layer, BatchNorm):
            # paddle 3.3.1 follows the neutral conventions as they are (momentum weights the old
            # running value, biased variance on the CPU)
            norm = nn.BatchNorm2D if len(in_shape) == 4 else nn.BatchNorm1D
            native = norm(in_shape[1], momentum=layer.momentum, epsilon=layer.eps)
        else:
            raise unsupported_layer(NAME, name, layer)
        layers.append((name, native))
    return nn.Sequential(*layers)


_PADDLE_BN_NAMES = {"running_mean": "_mean", "running_var": "_variance"}  # weight, bias as they are


def _parameters(model, spec):
    """(key, layout, paddle parameter) for every neutral array; layout "dense" for a Linear
    weight, which Paddle stores (in, out); conv kernels and vectors are neutral already."""
    for key in param_shapes(spec):
        layer, attr = key.split(".")
        layout = "dense" if layer.startswith("dense") and attr == "weight" else "neutral"
        yield key, layout, getattr(getattr(model, layer), _PADDLE_BN_NAMES.get(attr, attr))


def to_native(value, layout):
    return value.T if layout == "dense" else value


to_neutral = to_native  # the transpose is its own inverse


def set_weights(model, spec, weights):
    for key, layout, param in _parameters(model, spec):
        param.set_value(np.ascontiguousarray(to_native(weights[key], layout)))


def get_weights(model, spec):
    return {key: np.ascontiguousarray(to_neutral(param.numpy(), layout))
            for key, layout, param in _parameters(model, spec)}


def forward(model, spec, x):
    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()


def layer_outputs(model, spec, x):
    model.eval()
    h, outputs = paddle.to_tensor(x), []
    with paddle.no_grad():
        for name, layer in model.named_children():
            h = layer(h)
            outputs.append((name, h.numpy()))
    return outputs


def loss_and_grads(model, spec, x, y):
    model.train()
    model.clear_gradients()
    loss = F.cross_entropy(model(paddle.to_tensor(x)), paddle.to_tensor(y, dtype="int64"))
    loss.backward()
    return float(loss), {key: np.ascontiguousarray(to_neutral(param.grad.numpy(), layout))
                         for key, layout, param in _parameters(model, spec) if not is_state(key)}


def trainer(model, spec, lr, compiled):
    optimizer = paddle.optimizer.SGD(learning_rate=lr, parameters=model.parameters())

    def step(x, y):
        model.train()
        labels = paddle.to_tensor(y, dtype="int64")
        logits = model(paddle.to_tensor(x))
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        return float(loss), int((logits.argmax(axis=1) == labels).sum())

    return step
