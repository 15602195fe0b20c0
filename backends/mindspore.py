"""MindSpore: LeNet as a mindspore.nn.SequentialCell, as in d2l's MindSpore tab."""

from __future__ import annotations

import os
from collections import OrderedDict

# MindSpore's C++ log is verbose at WARNING; keep ERROR unless the user set GLOG_v.
os.environ.setdefault("GLOG_v", "3")

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import nn  # noqa: E402

from polylenet.shapes import layer_table  # noqa: E402
from polylenet.spec import Activation, Conv2D, Dense, Flatten, Pool2D  # noqa: E402

NAME = "mindspore"
_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}
_POOLS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}
_loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")

ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")


def version() -> str:
    return ms.__version__


def build(spec):
    layers = OrderedDict()
    for name, layer, in_shape, _ in layer_table(spec):
        if isinstance(layer, Conv2D):
            # MindSpore's Conv2d defaults to pad_mode="same" and no bias; LeNet wants neither.
            layers[name] = nn.Conv2d(in_shape[1], layer.out_channels, layer.kernel,
                                     stride=layer.stride, pad_mode="pad", padding=layer.padding,
                                     has_bias=True)
        elif isinstance(layer, Pool2D):
            layers[name] = _POOLS[layer.kind](kernel_size=layer.size, stride=layer.stride,
                                              pad_mode="valid")
        elif isinstance(layer, Activation):
            layers[name] = _ACTIVATIONS[layer.fn]()
        elif isinstance(layer, Flatten):
            layers[name] = nn.Flatten()
        elif isinstance(layer, Dense):
            layers[name] = nn.Dense(in_shape[1], layer.units)
    return nn.SequentialCell(layers)


def set_weights(model, weights):
    # MindSpore's layouts are the neutral ones: Conv2d (out, in, kh, kw), Dense (out, in).
    for param in model.trainable_params():
        param.set_data(ms.Tensor(weights[param.name].copy()))


def get_weights(model):
    return {param.name: param.asnumpy().copy() for param in model.trainable_params()}


def forward(model, x):
    return model(ms.Tensor(x)).asnumpy()


def layer_shapes(model):
    x = ms.Tensor(np.zeros((1, *model.polylenet_spec.input_shape), np.float32))
    shapes = []
    for name, cell in model.name_cells().items():
        x = cell(x)
        shapes.append((name, tuple(x.shape)))
    return shapes


def _loss_fn(model):
    return lambda x, y: _loss(model(x), y)


def loss_and_grads(model, x, y):
    params = model.trainable_params()
    loss, grads = ms.value_and_grad(_loss_fn(model), None, params)(ms.Tensor(x), ms.Tensor(y))
    return float(loss.asnumpy()), {p.name: g.asnumpy() for p, g in zip(params, grads)}


def trainer(model, lr):
    optimizer = nn.SGD(model.trainable_params(), learning_rate=lr)
    grad_fn = ms.value_and_grad(_loss_fn(model), None, optimizer.parameters)

    def step(x, y):
        loss, grads = grad_fn(ms.Tensor(x), ms.Tensor(y))
        optimizer(grads)
        return float(loss.asnumpy())

    return step
