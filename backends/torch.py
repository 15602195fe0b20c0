"""PyTorch: the spec as a torch.nn.Sequential, as in d2l's PyTorch tab; a group is an
nn.Sequential, a block d2l's own kind of module (:class:`Residual`, :class:`Concat` as
``Inception``), each named as the spec names it, so ``model.get_submodule(path)`` is the layer."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from polylenet.backends._pooling import ceil_overhang
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
from polylenet.shapes import is_state, param_shapes
from polylenet.tree import fold, run

NAME = "torch"
CAPABILITIES = frozenset({"inference", "training"})
_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}


class BiasedRunningVar:
    """Mixed into nn.BatchNorm1d/2d: torch 2.13 updates running_var with the unbiased batch
    variance (n/(n-1) times the biased one it normalizes with). In training mode this updates
    the running statistics with the biased variance, as d2l's ``batch_norm`` does, and
    normalizes with the batch statistics through torch's own batch_norm."""

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        with torch.no_grad():
            var, mean = torch.var_mean(x, dim=[0, *range(2, x.dim())], unbiased=False)
            self.running_mean.lerp_(mean, self.momentum)  # (1 - m) * running + m * batch
            self.running_var.lerp_(var, self.momentum)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class BatchNorm1dBiasedRunningVar(BiasedRunningVar, nn.BatchNorm1d):
    pass


class BatchNorm2dBiasedRunningVar(BiasedRunningVar, nn.BatchNorm2d):
    pass


class CountedAvgPool2d(nn.Module):
    """Average pooling over per-side pads. nn.AvgPool2d pads both sides alike, and a padding
    layer before it makes the pads input, which count_include_pad=False would count. So: the
    window sums of the zero-padded input (ceil_mode's overhang padded too, so every window lies
    inside), divided by the same sums of a mask of what the spec counts (the input, and with
    count_include_pad the pads; never the overhang), computed once."""

    def __init__(self, layer, hw):
        super().__init__()
        (top, bottom), (left, right) = layer.pads
        over_h, over_w = ceil_overhang(layer, hw)
        self.pad = nn.ZeroPad2d((left, right + over_w, top, bottom + over_h))
        self.pool = nn.AvgPool2d(layer.size_hw, layer.stride_hw, divisor_override=1)
        counted = F.pad(torch.ones(1, 1, *hw), (left, right, top, bottom), value=float(layer.count_include_pad))
        self.register_buffer("count", self.pool(F.pad(counted, (0, over_w, 0, over_h))), persistent=False)

    def forward(self, x):
        return self.pool(self.pad(x)) / self.count


# One translation per layer type, (layer, input shape) -> torch module, as onnx2torch's converters.

def _conv(layer, in_shape):
    (top, bottom), (left, right) = layer.pads
    conv = dict(in_channels=in_shape[1], out_channels=layer.out_channels, kernel_size=layer.kernel_hw,
                stride=layer.stride_hw, bias=layer.bias)
    if top == bottom and left == right:
        return nn.Conv2d(**conv, padding=(top, left))
    # nn.Conv2d pads both sides of an axis alike: per-side pads are a ZeroPad2d before it
    return nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), nn.Conv2d(**conv))


def _pool(layer, in_shape):
    (top, bottom), (left, right) = layer.pads
    kernel, stride = layer.size_hw, layer.stride_hw
    if top == bottom and left == right:  # torch's ceil_mode and divisors are the spec's; its max pads with -inf
        if layer.kind == "max":
            return nn.MaxPool2d(kernel, stride, (top, left), ceil_mode=layer.ceil_mode)
        return nn.AvgPool2d(kernel, stride, (top, left), ceil_mode=layer.ceil_mode,
                            count_include_pad=layer.count_include_pad)
    if layer.kind == "max":  # per-side pads and ceil_mode's overhang as -inf, which never wins
        over_h, over_w = ceil_overhang(layer, in_shape[2:])
        return nn.Sequential(nn.ConstantPad2d((left, right + over_w, top, bottom + over_h), -math.inf),
                             nn.MaxPool2d(kernel, stride))
    return CountedAvgPool2d(layer, in_shape[2:])


def _batchnorm(layer, in_shape):
    # torch's momentum weights the new batch: 1 - the neutral momentum
    norm = BatchNorm2dBiasedRunningVar if len(in_shape) == 4 else BatchNorm1dBiasedRunningVar
    return norm(in_shape[1], eps=layer.eps, momentum=1.0 - layer.momentum)


_TRANSLATIONS = {
    Conv2D: _conv,
    Pool2D: _pool,
    Activation: lambda layer, in_shape: _ACTIVATIONS[layer.fn](),
    Flatten: lambda layer, in_shape: nn.Flatten(),
    Dense: lambda layer, in_shape: nn.Linear(in_shape[1], layer.units),
    BatchNorm: _batchnorm,
    Dropout: lambda layer, in_shape: nn.Dropout(layer.p),
    GlobalAvgPool: lambda layer, in_shape: nn.AdaptiveAvgPool2d((1, 1)),  # d2l's NiN
}


class Concat(nn.Module):
    """d2l's ``Inception`` (and DenseNet's ``torch.cat((X, Y), dim=1)``): every branch on the
    input, the outputs concatenated on the channel axis in branch order."""

    def __init__(self, branches, after):
        super().__init__()
        self.names = [name for name, _ in branches]
        for name, branch in branches + after:
            self.add_module(name, branch)
        self.after = [name for name, _ in after]

    @staticmethod
    def merge(outputs):
        return torch.cat(outputs, dim=1)

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
    return torch.__version__


def _layer(path, layer, in_shape):
    translate = _TRANSLATIONS.get(type(layer))
    if translate is None:
        raise unsupported_layer(NAME, path, layer)
    return translate(layer, in_shape)


def build(spec):
    return nn.Sequential(OrderedDict(fold(
        spec, _layer,
        lambda path, node, children: nn.Sequential(OrderedDict(children)),
        lambda path, node, branches, after: _BLOCKS[node.merge](
            [(f"branch{i}", nn.Sequential(OrderedDict(b))) for i, b in enumerate(branches, 1)], after))))


def _tensors(model, spec):
    """(key, tensor) for every neutral array; torch's names and layouts are the neutral ones:
    conv (out, in, kh, kw), Linear (out, in), BatchNorm weight/bias/running_mean/running_var."""
    for key in param_shapes(spec):
        name, attr = key.rsplit(".", 1)
        module = model.get_submodule(name)
        if isinstance(module, nn.Sequential):  # a padding layer, then the conv
            module = module[-1]
        yield key, getattr(module, attr)


def set_weights(model, spec, weights):
    with torch.no_grad():
        for key, tensor in _tensors(model, spec):
            tensor.copy_(torch.from_numpy(weights[key]))


def get_weights(model, spec):
    return {key: tensor.detach().numpy().copy() for key, tensor in _tensors(model, spec)}


def forward(model, spec, x):
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _merge(block, outputs):
    return _BLOCKS[block.merge].merge(outputs)


def layer_outputs(model, spec, x):
    model.eval()
    outputs = []
    with torch.no_grad():
        run(spec, torch.from_numpy(x), lambda path, layer, h: model.get_submodule(path)(h), _merge,
            lambda path, h: outputs.append((path, h.numpy().copy())))
    return outputs


_LOSSES = {
    "cross_entropy": lambda out, y: F.cross_entropy(out, y.long()),  # the batch mean
    "squared_error": lambda out, y: F.mse_loss(out, y, reduction="sum"),  # d2l's ((Y_hat - Y) ** 2).sum()
}


def _training_forward(model, spec, x, masks):
    """The model in training mode; with ``masks``, each nn.Dropout's output is its input times
    the given mask instead of the module's own draw."""
    if masks is None:
        return model(x)
    return run(spec, x, lambda path, layer, h: h * masks[path] if path in masks else model.get_submodule(path)(h),
               _merge)


def _torch_masks(masks):
    return None if masks is None else {name: torch.from_numpy(mask) for name, mask in masks.items()}


def loss_and_grads(model, spec, x, y, loss, masks):
    model.train()
    model.zero_grad()
    value = _LOSSES[loss](_training_forward(model, spec, torch.from_numpy(x), _torch_masks(masks)), torch.from_numpy(y))
    value.backward()
    return value.item(), {key: t.grad.numpy().copy() for key, t in _tensors(model, spec) if not is_state(key)}


def trainer(model, spec, lr, compiled, loss):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    objective = _LOSSES[loss]

    def step(x, y, masks):
        model.train()
        target = torch.from_numpy(y)
        optimizer.zero_grad()
        out = _training_forward(model, spec, torch.from_numpy(x), _torch_masks(masks))
        value = objective(out, target)
        value.backward()
        optimizer.step()
        if loss == "squared_error":  # targets, not labels: no predictions to count
            return value.item(), 0
        return value.item(), int((out.argmax(dim=1) == target).sum())

    return step
