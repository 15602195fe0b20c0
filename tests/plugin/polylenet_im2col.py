"""An example third-party backend, written from the docstrings of polylenet.adapter.Adapter
alone: NumPy inference in float32 by im2col matrix products. It declares no training, so the
conformance suite runs its inference tests and says why the training tests do not apply.

Registered through the ``polylenet.backends`` entry-point group (see the dist-info folder
beside it); put this folder on sys.path and ``polylenet.build(spec, backend="im2col")`` works.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from polylenet.layers import unsupported_layer

NAME = "im2col"
CAPABILITIES = frozenset({"inference"})
_ACTIVATIONS = {"sigmoid": lambda h: 1 / (1 + np.exp(-h)), "relu": lambda h: np.maximum(h, 0),
                "tanh": np.tanh}
_KNOWN = ("conv2d", "pool2d", "activation", "flatten", "dense", "batchnorm")


def version():
    return np.__version__


class Arrays(dict):
    """The model is its neutral arrays (a dict subclass, so polylenet can label it)."""


def build(spec):
    for name, layer in spec.named_layers():
        if layer.type not in _KNOWN:
            raise unsupported_layer(NAME, name, layer)
    return Arrays()


def set_weights(model, spec, weights):
    model.clear()
    model.update({key: value.copy() for key, value in weights.items()})


def get_weights(model, spec):
    return {key: value.copy() for key, value in model.items()}


def _windows(h, size, stride):
    return sliding_window_view(h, (size, size), axis=(2, 3))[:, :, ::stride, ::stride]


def _outputs(model, spec, x):
    """(layer name, output) for every layer, evaluation mode."""
    h = x
    for name, layer in spec.named_layers():
        if layer.type == "conv2d":
            p, w = layer.padding, model[f"{name}.weight"]
            cols = _windows(np.pad(h, ((0, 0), (0, 0), (p, p), (p, p))), layer.kernel, layer.stride)
            n, c, oh, ow, k, _ = cols.shape
            rows = cols.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * k * k)
            h = (rows @ w.reshape(w.shape[0], -1).T + model[f"{name}.bias"]).reshape(n, oh, ow, -1)
            h = h.transpose(0, 3, 1, 2)
        elif layer.type == "pool2d":
            win = _windows(h, layer.size, layer.stride)
            h = win.max(axis=(4, 5)) if layer.kind == "max" else win.mean(axis=(4, 5), dtype=np.float32)
        elif layer.type == "activation":
            h = _ACTIVATIONS[layer.fn](h)
        elif layer.type == "flatten":
            h = h.reshape(h.shape[0], -1)
        elif layer.type == "dense":
            h = h @ model[f"{name}.weight"].T + model[f"{name}.bias"]
        elif layer.type == "batchnorm":
            shape = (1, -1, 1, 1) if h.ndim == 4 else (1, -1)
            scale = model[f"{name}.weight"] / np.sqrt(model[f"{name}.running_var"] + np.float32(layer.eps))
            h = (h - model[f"{name}.running_mean"].reshape(shape)) * scale.reshape(shape) \
                + model[f"{name}.bias"].reshape(shape)
        yield name, np.ascontiguousarray(h, dtype=np.float32)


def forward(model, spec, x):
    for _, h in _outputs(model, spec, x):
        pass
    return h


def layer_outputs(model, spec, x):
    return list(_outputs(model, spec, x))
