"""MXNet Gluon: the spec as a gluon.nn.HybridSequential, as in d2l's MXNet tab; a group is a
HybridSequential, a block d2l's own kind of HybridBlock (:class:`Residual`, :class:`Concat` as
``Inception``), each child registered under the spec's name, so ``getattr`` per part of a path
(``b3``, ``residual1``, ``branch1``, ``conv1``) finds the layer."""

from __future__ import annotations

from functools import partial, reduce

import numpy as np

from polylenet.backends._pooling import ceil_overhang, native_ceil_mode
from polylenet.layers import (
    Activation,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Pool2D,
    unsupported_layer,
)
from polylenet.quiet import quiet_import
from polylenet.shapes import is_state, param_shapes
from polylenet.tree import fold, named_nodes, run

# mxnet 1.9.1 touches numpy aliases deprecated in numpy 1.20-1.23 while importing.
with quiet_import(ignore={"": DeprecationWarning}):
    import mxnet as mx
    from mxnet import autograd, gluon
    from mxnet.gluon import nn

NAME = "mxnet"
CAPABILITIES = frozenset({"inference", "training"})
_POOLS = {"avg": nn.AvgPool2D, "max": nn.MaxPool2D}


def _pad(pads, value=0.0, **kwargs):
    """MXNet's constant pad of NCHW as a Gluon block; ``pads`` ((top, bottom), (left, right))."""
    (top, bottom), (left, right) = pads
    width = (0, 0, 0, 0, top, bottom, left, right)
    return nn.HybridLambda(lambda F, x: F.pad(x, mode="constant", pad_width=width, constant_value=value), **kwargs)


def _folded(layer, hw):
    """The pads with ceil_mode's overhang added at the bottom/right: every window lies inside."""
    over = ceil_overhang(layer, hw)
    return tuple((p[0], p[1] + o) for p, o in zip(layer.pads, over))


class CountedAvgPool2D(nn.HybridBlock):
    """Average pooling that MXNet's (symmetric pads; count_include_pad over them, or not) cannot
    express: per-side pads, or a "full" convention that would keep one window too many. The
    window sums (pool_type "sum") of the zero-padded input (ceil_mode's overhang padded too, so
    every window lies inside), divided by the same sums of a mask of what the spec counts (the
    input, with count_include_pad the pads; never the overhang), computed once."""

    def __init__(self, layer, hw, **kwargs):
        super().__init__(**kwargs)
        (_, bottom), (_, right) = folded = _folded(layer, hw)
        self._padded = _pad(folded)
        self._window = dict(kernel=layer.size_hw, stride=layer.stride_hw, pool_type="sum")
        counted = _pad(layer.pads, float(layer.count_include_pad))(mx.nd.ones((1, 1, *hw)))
        counted = _pad(((0, bottom - layer.pads[0][1]), (0, right - layer.pads[1][1])))(counted)
        self.count = self.params.get_constant("count", mx.nd.Pooling(counted, **self._window))

    def hybrid_forward(self, F, x, count):
        return F.broadcast_div(F.Pooling(self._padded(x), **self._window), count)


def _loss(out, y, loss):
    """The summed loss. Cross-entropy from a log-softmax written in MXNet's ops (d2l's
    from-scratch one, shifted by the row maximum): mxnet 1.9.1's fused softmax_cross_entropy
    clips each example's loss at -ln(1e-8) = 18.42 (logits of scale 10: the loss 20% low; the
    conformance hyper-pool spec's third step: 18.42 against 45.69), and
    gluon.loss.SoftmaxCrossEntropyLoss (d2l's) is built on its CPU log_softmax, whose gradient at
    the logits is 2e-6 to 3e-6 (relative) from exact. This one: loss and gradient within 1.2e-7
    of float64 at logit scales 1 to 100 (measured)."""
    if loss == "squared_error":
        return mx.nd.sum(mx.nd.square(out - y))
    shifted = out - out.max(axis=1, keepdims=True)
    log_softmax = shifted - mx.nd.log(mx.nd.exp(shifted).sum(axis=1, keepdims=True))
    return -mx.nd.pick(log_softmax, y, axis=1).sum()


# One translation per layer type, (layer, input shape, Gluon prefix) -> Gluon block, as onnx2torch's
# converters. Blocks made outside net.name_scope() keep exactly the prefix given.

def _conv(layer, in_shape, prefix):
    (top, bottom), (left, right) = layer.pads
    symmetric = top == bottom and left == right
    conv = nn.Conv2D(layer.out_channels, layer.kernel_hw, strides=layer.stride_hw,
                     padding=(top, left) if symmetric else 0, use_bias=layer.bias, in_channels=in_shape[1],
                     prefix=prefix)
    if symmetric:
        return conv
    block = nn.HybridSequential(prefix=prefix)  # Conv2D pads both sides of an axis alike
    block.add(_pad(layer.pads, prefix=f"{prefix}pad_"), conv)
    return block


def _pool(layer, in_shape, prefix):
    (top, bottom), (left, right) = layer.pads
    ceil_mode = native_ceil_mode(layer, in_shape[2:])
    if top == bottom and left == right and ceil_mode is not None:  # MXNet's own: max pads with -inf, and
        options = {"count_include_pad": layer.count_include_pad} if layer.kind == "avg" else {}  # its divisors
        return _POOLS[layer.kind](layer.size_hw, layer.stride_hw, (top, left), ceil_mode=ceil_mode, prefix=prefix,
                                  **options)
    if layer.kind == "avg":
        return CountedAvgPool2D(layer, in_shape[2:], prefix=prefix)
    block = nn.HybridSequential(prefix=prefix)  # the pads and ceil_mode's overhang as -inf, which never wins
    block.add(_pad(_folded(layer, in_shape[2:]), -np.inf, prefix=f"{prefix}pad_"),
              nn.MaxPool2D(layer.size_hw, layer.stride_hw, prefix=f"{prefix}max_"))
    return block


class Float64BatchNorm(nn.BatchNorm):
    """Gluon's BatchNorm computing in float64 (its parameters and running statistics float64 too;
    float32 in and out): mxnet 1.9.1's CPU kernel sums each channel's N*H*W values in one float32
    pass, which on 256x64x48x48 puts its outputs 6.8e-4 from the oracle's and its input gradients
    3.5e-3; in float64, 2.4e-7 and 9.5e-7, at the same speed (316 ms against 299)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.cast("float64")

    def hybrid_forward(self, F, x, gamma, beta, running_mean, running_var):
        y = super().hybrid_forward(F, F.cast(x, "float64"), gamma, beta, running_mean, running_var)
        return F.cast(y, "float32")


def _batchnorm(layer, in_shape, prefix, kind=Float64BatchNorm):
    # mxnet 1.9.1 on the CPU follows the neutral conventions as they are (momentum weights the old
    # running value, biased variance); it updates the running statistics in the backward pass of a
    # recorded forward, not in the forward itself.
    return kind(axis=1, momentum=layer.momentum, epsilon=layer.eps, in_channels=in_shape[1], prefix=prefix)


_TRANSLATIONS = {
    Conv2D: _conv,
    Pool2D: _pool,
    Activation: lambda layer, in_shape, prefix: nn.Activation(layer.fn, prefix=prefix),
    Flatten: lambda layer, in_shape, prefix: nn.Flatten(prefix=prefix),
    Dense: lambda layer, in_shape, prefix: nn.Dense(layer.units, in_units=in_shape[1], prefix=prefix),
    BatchNorm: _batchnorm,
    Dropout: lambda layer, in_shape, prefix: nn.Dropout(layer.p, prefix=prefix),
    GlobalAvgPool: lambda layer, in_shape, prefix: nn.GlobalAvgPool2D(prefix=prefix),
}


def version() -> str:
    return mx.__version__


class Concat(nn.HybridBlock):
    """d2l's ``Inception`` (and DenseNet's ``np.concatenate((X, Y), axis=1)``): every branch on
    the input, the outputs concatenated on the channel axis in branch order, then the ``after``
    layers."""

    def __init__(self, branches, after, **kwargs):
        super().__init__(**kwargs)
        _named(self, branches + after)
        self.branches = [name for name, _ in branches]
        self.after = [name for name, _ in after]

    @staticmethod
    def merge(F, outputs):
        return F.concat(*outputs, dim=1)

    def hybrid_forward(self, F, x):
        y = self.merge(F, [getattr(self, name)(x) for name in self.branches])
        for name in self.after:
            y = getattr(self, name)(y)
        return y


class Residual(Concat):
    """d2l's ``Residual``: the body (branch1) plus the shortcut (branch2: identity or a 1x1
    conv), then the ``after`` layers (its final ReLU)."""

    @staticmethod
    def merge(F, outputs):
        return sum(outputs[1:], outputs[0])


_BLOCKS = {"concat": Concat, "add": Residual}


def _named(block, children):
    for name, child in children:
        setattr(block, name, child)  # Gluon registers an attribute block as a child under its name
    return block


def _prefix(path):
    # Gluon's own nested naming (a parent's prefix, then the child's): b3_residual1_branch1_conv1_
    return path.replace(".", "_") + "_"


# for an ONNX export: Gluon's own float32 BatchNorm (inference reduces nothing, so float32 loses
# nothing there), where the float64 one would export as Cast nodes around a double BatchNormalization
_FLOAT32_TRANSLATIONS = {**_TRANSLATIONS, BatchNorm: partial(_batchnorm, kind=nn.BatchNorm)}


def _layer(translations, path, layer, in_shape):
    translate = translations.get(type(layer))
    if translate is None:
        raise unsupported_layer(NAME, path, layer)
    return translate(layer, in_shape, _prefix(path))


def build(spec):
    return _build(spec, _TRANSLATIONS)


def float32_copy(model, spec):
    """A copy of ``model`` with Gluon's own float32 BatchNorm layers, its weights those of ``model``."""
    copy = _build(spec, _FLOAT32_TRANSLATIONS)
    set_weights(copy, spec, get_weights(model, spec))
    return copy


def _build(spec, translations):
    net = _named(nn.HybridSequential(prefix=f"{spec.name}_"), fold(
        spec, partial(_layer, translations),
        lambda path, node, children: _named(nn.HybridSequential(prefix=_prefix(path)), children),
        lambda path, node, branches, after: _BLOCKS[node.merge](
            [(f"branch{i}", _named(nn.HybridSequential(prefix=_prefix(f"{path}.branch{i}")), b))
             for i, b in enumerate(branches, 1)], after, prefix=_prefix(path))))
    net.initialize()
    return net


def _find(model, path):
    return reduce(getattr, path.split("."), model)


# Per layer type, Gluon's parameter names where they are not the neutral ones.
_GLUON_NAMES = {BatchNorm: {"weight": "gamma", "bias": "beta"}}


def _parameters(model, spec):
    """(key, gluon.Parameter) in the neutral order; Gluon's layouts are the neutral ones."""
    nodes = named_nodes(spec)
    for key in param_shapes(spec):
        path, attr = key.rsplit(".", 1)
        block = _find(model, path)
        if isinstance(block, nn.HybridSequential):  # a pad, then the conv
            block = block[-1]
        yield key, getattr(block, _GLUON_NAMES.get(type(nodes[path]), {}).get(attr, attr))


def set_weights(model, spec, weights):
    for key, param in _parameters(model, spec):
        param.set_data(mx.nd.array(weights[key], dtype=param.dtype))  # BatchNorm's: float64


def get_weights(model, spec):
    return {key: param.data().asnumpy().astype(np.float32) for key, param in _parameters(model, spec)}


def forward(model, spec, x):  # outside autograd.record(): predict mode
    return model(mx.nd.array(x, dtype=np.float32)).asnumpy()


def _merge(block, outputs):
    return _BLOCKS[block.merge].merge(mx.nd, outputs)


def layer_outputs(model, spec, x):  # outside autograd.record(): predict mode
    outputs = []
    run(spec, mx.nd.array(x, dtype=np.float32), lambda path, layer, h: _find(model, path)(h), _merge,
        lambda path, h: outputs.append((path, h.asnumpy())))
    return outputs


def _training_forward(model, spec, x, masks):
    """The model under autograd.record() (training mode); with ``masks`` (keyed by path), each
    Dropout block's output is its input times the given mask instead of the block's own draw. The
    layers then run one by one, each its own cached graph where the model is hybridized; without
    dropout layers (masks empty) the model runs whole, through its containers, as one graph."""
    if not masks:
        return model(x)
    return run(spec, x, lambda path, layer, h: h * mx.nd.array(masks[path]) if path in masks else
               _find(model, path)(h), _merge)


def loss_and_grads(model, spec, x, y, loss, masks):
    with autograd.record():  # training mode
        value = _loss(_training_forward(model, spec, mx.nd.array(x), masks), mx.nd.array(y), loss)
        if loss == "cross_entropy":
            value = value / len(y)  # the batch mean
    value.backward()
    return float(value.asscalar()), {key: param.grad().asnumpy().astype(np.float32)
                                     for key, param in _parameters(model, spec) if not is_state(key)}


def trainer(model, spec, lr, compiled, loss):
    sgd = gluon.Trainer(model.collect_params(), "sgd", {"learning_rate": lr})
    # hybridize() compiles the whole network into one cached graph (forward and backward);
    # static_alloc/static_shape keep its memory and shapes between steps (measured 1.1-1.2x here)
    model.hybridize(active=compiled, static_alloc=compiled, static_shape=compiled)
    # Float64BatchNorm's parameters and running statistics, rounded to float32 after every step:
    # what a (float32) checkpoint holds is then exactly the state, so a resumed run equals one
    # that was never interrupted
    held_in_float64 = [p for p in model.collect_params().values() if np.dtype(p.dtype) == np.float64]

    def round_to_float32():
        if not held_in_float64:
            return
        mx.nd.waitall()  # a hybridized step's running statistics are written late, untracked: all first
        for param in held_in_float64:
            param.set_data(param.data().astype(np.float32).astype(np.float64))

    def step(x, y, masks):
        target = mx.nd.array(y)
        with autograd.record():
            out = _training_forward(model, spec, mx.nd.array(x), masks)
            value = _loss(out, target, loss)
        value.backward()
        if loss == "squared_error":  # the summed loss is the objective itself: no averaging
            sgd.step(1)
            round_to_float32()
            return float(value.asscalar()), 0
        sgd.step(x.shape[0])  # the loss is summed over the batch; step(batch) averages, as in d2l
        round_to_float32()
        return float(value.asscalar()) / len(y), int((out.argmax(axis=1) == target).sum().asscalar())

    return step
