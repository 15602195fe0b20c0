"""PyTorch: LeNet as a torch.nn.Sequential, as in d2l's PyTorch tab."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from polylenet.shapes import layer_table
from polylenet.spec import Activation, Conv2D, Dense, Flatten, Pool2D

NAME = "torch"
_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}
_POOLS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


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
    return nn.Sequential(layers)


def set_weights(model, weights):
    # PyTorch's layouts are the neutral ones: conv (out, in, kh, kw), Linear (out, in).
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})


def get_weights(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def forward(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def layer_shapes(model):
    x = torch.zeros(1, *model.polylenet_spec.input_shape)
    shapes = []
    with torch.no_grad():
        for name, layer in model.named_children():
            x = layer(x)
            shapes.append((name, tuple(x.shape)))
    return shapes


def loss_and_grads(model, x, y):
    model.zero_grad()
    loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y).long())
    loss.backward()
    return loss.item(), {k: p.grad.numpy().copy() for k, p in model.named_parameters()}


def trainer(model, lr, compiled=True):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def step(x, y):
        labels = torch.from_numpy(y).long()
        optimizer.zero_grad()
        logits = model(torch.from_numpy(x))
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        return loss.item(), int((logits.argmax(dim=1) == labels).sum())

    return step
