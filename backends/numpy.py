"""NumPy: the reference interpreter (polylenet.reference) behind the common adapter interface."""

from __future__ import annotations

import numpy as np

from polylenet.reference import NumpyLeNet
from polylenet.shapes import param_shapes

NAME = "numpy"
CAPABILITIES = frozenset({"inference", "training"})


def version() -> str:
    return np.__version__


def build(spec):
    return NumpyLeNet(spec, {k: np.zeros(s, np.float32) for k, s in param_shapes(spec).items()})


def set_weights(model, spec, weights):
    model.params = {k: v.copy() for k, v in weights.items()}


def get_weights(model, spec):
    return {k: v.copy() for k, v in model.params.items()}


def forward(model, spec, x):
    return model(x)


def layer_outputs(model, spec, x):
    _, trace = model.forward_layers(x)
    return [(name, out.astype(np.float32)) for name, _, out, _ in trace]


def loss_and_grads(model, spec, x, y, loss, masks):
    return model.loss_and_grads(x, y, loss, masks)


def trainer(model, spec, lr, compiled, loss):  # the reference is always eager
    def step(x, y, masks):
        return model.sgd_step(x, y, lr, loss, masks)

    return step
