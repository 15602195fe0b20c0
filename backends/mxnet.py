"""MXNet Gluon: LeNet as a gluon.nn.HybridSequential, as in d2l's MXNet tab."""

from __future__ import annotations

import numpy as np

from polylenet.layers import Activation, BatchNorm, Conv2D, Dense, Flatten, Pool2D, unsupported_layer
from polylenet.quiet import quiet_import
from polylenet.shapes import is_state, layer_table

# mxnet 1.9.1 touches numpy aliases deprecated in numpy 1.20-1.23 while importing.
with quiet_import(ignore={"": DeprecationWarning}):
    import mxnet as mx
    from mxnet import autograd, gluon
    from mxnet.gluon import nn

NAME = "mxnet"
CAPABILITIES = frozenset({"inference", "training"})
_POOLS = {"avg": nn.AvgPool2D, "max": nn.MaxPool2D}


def _loss(logits, labels):
    """Summed softmax cross-entropy, MXNet's fused operator. Not gluon.loss.SoftmaxCrossEntropyLoss
    (d2l's): it is built on mxnet 1.9.1's CPU log_softmax, which is off by up to 4e-6 and makes the
    gradient at the logits 3e-6 (relative) from exact, against 2e-7 for this operator and for
    every other backend's loss (measured with `polylenet diff --backends numpy,mxnet`)."""
    return mx.nd.softmax_cross_entropy(logits, labels)


def version() -> str:
    return mx.__version__


def build(spec):
    net = nn.HybridSequential(prefix=f"{spec.name}_")
    for name, layer, in_shape, _ in layer_table(spec):
        prefix = f"{name}_"  # blocks made outside net.name_scope() keep exactly this prefix
        if isinstance(layer, Conv2D):
            net.add(nn.Conv2D(layer.out_channels, layer.kernel, strides=layer.stride,
                              padding=layer.padding, in_channels=in_shape[1], prefix=prefix))
        elif isinstance(layer, Pool2D):
            net.add(_POOLS[layer.kind](pool_size=layer.size, strides=layer.stride, prefix=prefix))
        elif isinstance(layer, Activation):
            net.add(nn.Activation(layer.fn, prefix=prefix))
        elif isinstance(layer, Flatten):
            net.add(nn.Flatten(prefix=prefix))
        elif isinstance(layer, Dense):
            net.add(nn.Dense(layer.units, in_units=in_shape[1], prefix=prefix))
        elif isinstance(layer, BatchNorm):
            # mxnet 1.9.1 on the CPU follows the neutral conventions as they are (momentum weights
            # the old running value, biased variance); it updates the running statistics in the
            # backward pass of a recorded forward, not in the forward itself.
            net.add(nn.BatchNorm(axis=1, momentum=layer.momentum, epsilon=layer.eps,
                                 in_channels=in_shape[1], prefix=prefix))
        else:
            raise unsupported_layer(NAME, name, layer)
    net.initialize()
    return net


_GLUON_BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "running_mean",
                   "running_var": "running_var"}


def _parameters(model, spec):
    """(key, gluon.Parameter) in the neutral order; Gluon's layouts are the neutral ones."""
    for block, name in zip(model, spec.layer_names()):
        if isinstance(block, (nn.Conv2D, nn.Dense)):
            yield f"{name}.weight", block.weight
            yield f"{name}.bias", block.bias
        elif isinstance(block, nn.BatchNorm):
            for attr, gluon_name in _GLUON_BN_NAMES.items():
                yield f"{name}.{attr}", getattr(block, gluon_name)


def set_weights(model, spec, weights):
    for key, param in _parameters(model, spec):
        param.set_data(mx.nd.array(weights[key], dtype=np.float32))


def get_weights(model, spec):
    return {key: param.data().asnumpy() for key, param in _parameters(model, spec)}


def forward(model, spec, x):  # outside autograd.record(): predict mode
    return model(mx.nd.array(x, dtype=np.float32)).asnumpy()


def layer_outputs(model, spec, x):  # outside autograd.record(): predict mode
    h, outputs = mx.nd.array(x, dtype=np.float32), []
    for block in model:
        h = block(h)
        outputs.append((block.prefix.rstrip("_"), h.asnumpy()))
    return outputs


def loss_and_grads(model, spec, x, y):
    with autograd.record():  # training mode
        loss = _loss(model(mx.nd.array(x)), mx.nd.array(y)) / len(y)
    loss.backward()
    return float(loss.asscalar()), {key: param.grad().asnumpy() for key, param in _parameters(model, spec)
                                    if not is_state(key)}


def trainer(model, spec, lr, compiled):
    sgd = gluon.Trainer(model.collect_params(), "sgd", {"learning_rate": lr})
    # hybridize() compiles the whole network into one cached graph (forward and backward);
    # static_alloc/static_shape keep its memory and shapes between steps (measured 1.1-1.2x here)
    model.hybridize(active=compiled, static_alloc=compiled, static_shape=compiled)

    def step(x, y):
        labels = mx.nd.array(y)
        with autograd.record():
            logits = model(mx.nd.array(x))
            loss = _loss(logits, labels)
        loss.backward()
        sgd.step(x.shape[0])  # the loss is summed over the batch; step(batch) averages, as in d2l
        return float(loss.asscalar()) / len(y), int((logits.argmax(axis=1) == labels).sum().asscalar())

    return step
