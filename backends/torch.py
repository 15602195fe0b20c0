"""PyTorch: LeNet as a torch.nn.Sequential, as in d2l's PyTorch tab."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from polylenet.layers import Activation, BatchNorm, Conv2D, Dense, Flatten, Pool2D, unsupported_layer
from polylenet.shapes import layer_table, param_shapes

NAME = "torch"
CAPABILITIES = frozenset({"inference", "training"})
_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}
_POOLS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


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


def version() -> str:
    return torch.__version__


def build(spec):
    layers = OrderedDict()
    for name, layer, in_shape, _ in layer_table(spec):
        if isinstance(layer, Conv2D):
            layers[name] = nn.Conv2d(in_shape[1], layer.out_channels, layer.kernel,
                                     stride=layer.stride, padding=layer.padding)
        elif isinstance(layer, Pool2D):
            layers[name] = _POOLS[layer.kind](kernel_size=layer.size, stride=layer.stride)
        elif isinstance(layer, Activation):
            layers[name] = _ACTIVATIONS[layer.fn]()
        elif isinstance(layer, Flatten):
            layers[name] = nn.Flatten()
        elif isinstance(layer, Dense):
            layers[name] = nn.Linear(in_shape[1], layer.units)
        elif isinstance(layer, BatchNorm):
            # torch's momentum weights the new batch: 1 - the neutral momentum
            norm = BatchNorm2dBiasedRunningVar if len(in_shape) == 4 else BatchNorm1dBiasedRunningVar
            layers[name] = norm(in_shape[1], eps=layer.eps, momentum=1.0 - layer.momentum)
        else:
            raise unsupported_layer(NAME, name, layer)
    return nn.Sequential(layers)


def _tensors(model, spec):
    """(key, tensor) for every neutral array; torch's names and layouts are the neutral ones:
    conv (out, in, kh, kw), Linear (out, in), BatchNorm weight/bias/running_mean/running_var."""
    for key in param_shapes(spec):
        layer, attr = key.split(".")
        yield key, getattr(model.get_submodule(layer), attr)


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


def layer_outputs(model, spec, x):
    model.eval()
    h, outputs = torch.from_numpy(x), []
    with torch.no_grad():
        for name, layer in model.named_children():
            h = layer(h)
            outputs.append((name, h.numpy().copy()))
    return outputs


def loss_and_grads(model, spec, x, y):
    model.train()
    model.zero_grad()
    loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y).long())
    loss.backward()
    return loss.item(), {k: p.grad.numpy().copy() for k, p in model.named_parameters()}


def trainer(model, spec, lr, compiled):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def step(x, y):
        model.train()
        labels = torch.from_numpy(y).long()
        optimizer.zero_grad()
        logits = model(torch.from_numpy(x))
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        return loss.item(), int((logits.argmax(dim=1) == labels).sum())

    return step
