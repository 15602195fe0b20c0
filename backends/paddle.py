"""PaddlePaddle: the spec as a paddle.nn.Sequential, as in d2l's PaddlePaddle tab; a group is an
nn.Sequential, a block d2l's own kind of layer (:class:`Residual`, :class:`Concat` as
``Inception``), each added under the spec's name, so ``model.get_sublayer(path)`` is the layer."""

from __future__ import annotations

import math

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
from polylenet.tree import fold, run

# paddle 3.3 warns on import that ccache (a C++ extension build cache) is missing; LeNet builds none.
with quiet_import(ignore={"No ccache found": UserWarning}):
    import paddle
    from paddle import nn
    from paddle.nn import functional as F

NAME = "paddle"
CAPABILITIES = frozenset({"inference", "training"})
_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}


class ChannelBiasConv2D(nn.Conv2D):
    """nn.Conv2D with its bias added as a (C, 1, 1) broadcast. paddle 3.3.1's nn.Conv2D adds it
    reshaped to (1, C, 1, 1), and its CPU add kernel takes 3-4x longer for that broadcast: 12-17 ms
    forward and 10 more backward for LeNet's first 256-image layer here. The
    same sums, in the same order: weights after 180 SGD steps are bit-identical; the step 1.2-1.4x."""

    def forward(self, x):
        y = F.conv2d(x, self.weight, None, self._stride, self._updated_padding, self._dilation, self._groups,
                     self._data_format)
        return y + self.bias.reshape([-1, 1, 1])


def _folded(layer, hw):
    """Pad2D's [left, right, top, bottom]: the pads with ceil_mode's overhang at the bottom/right,
    so every window lies inside."""
    (top, bottom), (left, right) = layer.pads
    over_h, over_w = ceil_overhang(layer, hw)
    return [left, right + over_w, top, bottom + over_h]


class CountedAvgPool2D(nn.Layer):
    """Average pooling paddle's cannot express: count_include_pad with per-side pads (paddle
    3.3.1's divisor then leaves out the bottom/right pad a window reaches: 3 instead of 6 for a
    2x3 window over one bottom pad row), or a ceil_mode that keeps one window too many. The window sums
    (divisor_override=1) of the zero-padded input (ceil_mode's overhang padded too), divided by
    the same sums of a mask of what the spec counts (the input, with count_include_pad the pads;
    never the overhang), computed once."""

    def __init__(self, layer, hw):
        super().__init__()
        (top, bottom), (left, right) = layer.pads
        folded = _folded(layer, hw)
        self.pad = nn.Pad2D(folded)
        self.pool = nn.AvgPool2D(layer.size_hw, layer.stride_hw, divisor_override=1)
        counted = F.pad(paddle.ones([1, 1, *hw]), [left, right, top, bottom], value=float(layer.count_include_pad))
        counted = F.pad(counted, [0, folded[1] - right, 0, folded[3] - bottom])
        self.register_buffer("count", self.pool(counted), persistable=False)

    def forward(self, x):
        return self.pool(self.pad(x)) / self.count


# One translation per layer type, (layer, input shape) -> paddle layer, as onnx2torch's converters.

def _conv(layer, in_shape):
    (top, bottom), (left, right) = layer.pads
    padding = (top, left) if top == bottom and left == right else [top, bottom, left, right]  # paddle's per side
    options = dict(stride=layer.stride_hw, padding=padding)
    if layer.bias:
        return ChannelBiasConv2D(in_shape[1], layer.out_channels, layer.kernel_hw, **options)
    return nn.Conv2D(in_shape[1], layer.out_channels, layer.kernel_hw, bias_attr=False, **options)


def _pool(layer, in_shape):
    (top, bottom), (left, right) = layer.pads
    kernel, stride, padding = layer.size_hw, layer.stride_hw, [top, bottom, left, right]
    ceil_mode = native_ceil_mode(layer, in_shape[2:])
    if layer.kind == "max":
        if ceil_mode is not None:  # paddle's max pads with -inf, so a pad never wins
            return nn.MaxPool2D(kernel, stride, padding, ceil_mode=ceil_mode)
        return nn.Sequential(nn.Pad2D(_folded(layer, in_shape[2:]), value=-math.inf), nn.MaxPool2D(kernel, stride))
    if ceil_mode is not None and (not layer.count_include_pad or (top == bottom and left == right)):
        return nn.AvgPool2D(kernel, stride, padding, ceil_mode=ceil_mode, exclusive=not layer.count_include_pad)
    return CountedAvgPool2D(layer, in_shape[2:])


def _batchnorm(layer, in_shape):
    # paddle 3.3.1 follows the neutral conventions as they are (momentum weights the old running
    # value, biased variance on the CPU)
    norm = nn.BatchNorm2D if len(in_shape) == 4 else nn.BatchNorm1D
    return norm(in_shape[1], momentum=layer.momentum, epsilon=layer.eps)


_TRANSLATIONS = {
    Conv2D: _conv,
    Pool2D: _pool,
    Activation: lambda layer, in_shape: _ACTIVATIONS[layer.fn](),
    Flatten: lambda layer, in_shape: nn.Flatten(),
    Dense: lambda layer, in_shape: nn.Linear(in_shape[1], layer.units),
    BatchNorm: _batchnorm,
    # inverted dropout, said outright: paddle's legacy "downgrade_in_infer" scales at inference instead
    Dropout: lambda layer, in_shape: nn.Dropout(layer.p, mode="upscale_in_train"),
    GlobalAvgPool: lambda layer, in_shape: nn.AdaptiveAvgPool2D(1),  # d2l's NiN
}


class Concat(nn.Layer):
    """d2l's ``Inception`` (and DenseNet's ``paddle.concat(x=[X, Y], axis=1)``): every branch on
    the input, the outputs concatenated on the channel axis in branch order."""

    def __init__(self, branches, after):
        super().__init__()
        self.names = [name for name, _ in branches]
        for name, branch in branches + after:
            self.add_sublayer(name, branch)
        self.after = [name for name, _ in after]

    @staticmethod
    def merge(outputs):
        return paddle.concat(outputs, axis=1)

    def forward(self, x):
        y = self.merge([getattr(self, name)(x) for name in self.names])
        for name in self.after:
            y = getattr(self, name)(y)
        return y


class Residual(Concat):
    """d2l's ``Residual``: the body (branch1) plus the shortcut (branch2: identity or a 1x1
    conv), then the ``after`` layers (its final ReLU)."""

    @staticmethod
    def merge(outputs):
        return sum(outputs[1:], outputs[0])


_BLOCKS = {"concat": Concat, "add": Residual}


def version() -> str:
    return paddle.__version__


def _layer(path, layer, in_shape):
    translate = _TRANSLATIONS.get(type(layer))
    if translate is None:
        raise unsupported_layer(NAME, path, layer)
    return translate(layer, in_shape)


def build(spec):
    return nn.Sequential(*fold(
        spec, _layer,
        lambda path, node, children: nn.Sequential(*children),
        lambda path, node, branches, after: _BLOCKS[node.merge](
            [(f"branch{i}", nn.Sequential(*b)) for i, b in enumerate(branches, 1)], after)))


# Per layer type, paddle's parameter names where they are not the neutral ones, and the arrays
# whose layout is not neutral: a Linear weight, which Paddle stores (in, out). Conv kernels (OIHW)
# and vectors are neutral already.
_PADDLE_NAMES = {BatchNorm: {"running_mean": "_mean", "running_var": "_variance"}}
_LAYOUTS = {Dense: {"weight": "dense"}}


def _parameters(model, spec):
    """(key, layout, paddle parameter) for every neutral array."""
    types = {path: type(layer) for path, layer, _, _ in spec.leaves}
    for key in param_shapes(spec):
        path, attr = key.rsplit(".", 1)
        layout = _LAYOUTS.get(types[path], {}).get(attr, "neutral")
        yield key, layout, getattr(model.get_sublayer(path), _PADDLE_NAMES.get(types[path], {}).get(attr, attr))


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


def _merge(block, outputs):
    return _BLOCKS[block.merge].merge(outputs)


def layer_outputs(model, spec, x):
    model.eval()
    outputs = []
    with paddle.no_grad():
        run(spec, paddle.to_tensor(x), lambda path, layer, h: model.get_sublayer(path)(h), _merge,
            lambda path, h: outputs.append((path, h.numpy())))
    return outputs


def _cross_entropy(logits, labels):
    """The batch mean, from a log-softmax written in paddle's ops (d2l's from-scratch one, shifted
    by the row maximum): paddle 3.3.1's F.cross_entropy and F.log_softmax floor a log-probability
    at -64, so an example's loss never exceeds 64 (the conformance hyper-pool spec's third step:
    44.79 against 45.69; logits of scale 30: the loss 15% low). This one: loss within 5e-7 and
    gradient within 2.2e-7 (relative) of float64 at logit scales 1 to 100 (measured)."""
    shifted = logits - logits.max(axis=1, keepdim=True)
    return F.nll_loss(shifted - paddle.log(paddle.exp(shifted).sum(axis=1, keepdim=True)), labels)


_LOSSES = {  # (the loss, the dtype of its targets)
    "cross_entropy": (_cross_entropy, "int64"),
    "squared_error": (lambda out, y: F.mse_loss(out, y, reduction="sum"), "float32"),  # d2l's ((Y_hat - Y) ** 2).sum()
}


def _training_forward(model, spec, x, masks):
    """The model in training mode; with ``masks`` (keyed by path), each nn.Dropout's output is
    its input times the given mask instead of the layer's own draw."""
    if masks is None:
        return model(x)
    return run(spec, x, lambda path, layer, h: h * paddle.to_tensor(masks[path]) if path in masks
               else model.get_sublayer(path)(h), _merge)


def loss_and_grads(model, spec, x, y, loss, masks):
    objective, dtype = _LOSSES[loss]
    model.train()
    model.clear_gradients()
    value = objective(_training_forward(model, spec, paddle.to_tensor(x), masks), paddle.to_tensor(y, dtype=dtype))
    value.backward()
    return float(value), {key: np.ascontiguousarray(to_neutral(param.grad.numpy(), layout))
                          for key, layout, param in _parameters(model, spec) if not is_state(key)}


def trainer(model, spec, lr, compiled, loss):
    optimizer = paddle.optimizer.SGD(learning_rate=lr, parameters=model.parameters())
    objective, dtype = _LOSSES[loss]

    def step(x, y, masks):
        model.train()
        target = paddle.to_tensor(y, dtype=dtype)
        optimizer.clear_grad()  # before, not after: loss_and_grads leaves its gradients behind
        out = _training_forward(model, spec, paddle.to_tensor(x), masks)
        value = objective(out, target)
        value.backward()
        optimizer.step()
        if loss == "squared_error":  # targets, not labels: no predictions to count
            return float(value), 0
        return float(value), int((out.argmax(axis=1) == target).sum())

    return step
