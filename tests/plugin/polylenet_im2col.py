"""An example third-party backend, written from the docstrings of polylenet.adapter.Adapter
alone: NumPy inference in float32 by im2col matrix products. It declares no training, so the
conformance suite runs its inference tests and says why the training tests do not apply.

Registered through the ``polylenet.backends`` entry-point group (see the dist-info folder
beside it); put this folder on sys.path and ``polylenet.build(spec, backend="im2col")`` works.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from polylenet.layers import pool_output_size, unsupported_layer
from polylenet.tree import run

NAME = "im2col"
CAPABILITIES = frozenset({"inference"})
_ACTIVATIONS = {"sigmoid": lambda h: 1 / (1 + np.exp(-h)), "relu": lambda h: np.maximum(h, 0),
                "tanh": np.tanh}


def version():
    return np.__version__


class Arrays(dict):
    """The model is its neutral arrays (a dict subclass, so polylenet can label it)."""


def build(spec):
    for path, layer, _, _ in spec.leaves:
        if layer.type not in _LAYERS:
            raise unsupported_layer(NAME, path, layer)
    return Arrays()


def set_weights(model, spec, weights):
    model.clear()
    model.update({key: value.copy() for key, value in weights.items()})


def get_weights(model, spec):
    return {key: value.copy() for key, value in model.items()}


def _windows(h, pads, kernel, stride, value=0.0):
    """(N, C, OH, OW, kh, kw) views of every window of ``h`` padded per side."""
    h = np.pad(h, ((0, 0), (0, 0), *pads), constant_values=value)
    return sliding_window_view(h, kernel, axis=(2, 3))[:, :, ::stride[0], ::stride[1]]


def _conv(model, name, layer, h):
    w = model[f"{name}.weight"]
    cols = _windows(h, layer.pads, layer.kernel_hw, layer.stride_hw)
    n, c, oh, ow, kh, kw = cols.shape
    rows = cols.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    out = rows @ w.reshape(w.shape[0], -1).T
    if layer.bias:
        out = out + model[f"{name}.bias"]
    return out.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)


def _pool(model, name, layer, h):
    # ceil_mode's last window may overhang the bottom/right pad: pad it too, and never count it
    sizes = [pool_output_size(d, p, k, s, layer.ceil_mode)
             for d, p, k, s in zip(h.shape[2:], layer.pads, layer.size_hw, layer.stride_hw)]
    pads = [(p[0], max(p[1], (o - 1) * s + k - d - p[0]))
            for d, p, k, s, o in zip(h.shape[2:], layer.pads, layer.size_hw, layer.stride_hw, sizes)]
    if layer.kind == "max":  # a pad never wins
        win = _windows(h, pads, layer.size_hw, layer.stride_hw, -np.inf)
        return win[:, :, :sizes[0], :sizes[1]].max(axis=(4, 5))
    win = _windows(h, pads, layer.size_hw, layer.stride_hw)[:, :, :sizes[0], :sizes[1]]
    counts = []
    for d, p, k, s, o in zip(h.shape[2:], layer.pads, layer.size_hw, layer.stride_hw, sizes):
        start = np.arange(o) * s
        if layer.count_include_pad:  # the explicit pads count, the overhang does not
            counts.append(np.minimum(start + k, d + sum(p)) - start)
        else:
            counts.append(np.minimum(start + k, p[0] + d) - np.maximum(start, p[0]))
    return win.sum(axis=(4, 5), dtype=np.float32) / np.outer(*counts).astype(np.float32)


def _batchnorm(model, name, layer, h):
    shape = (1, -1, 1, 1) if h.ndim == 4 else (1, -1)
    scale = model[f"{name}.weight"] / np.sqrt(model[f"{name}.running_var"] + np.float32(layer.eps))
    return (h - model[f"{name}.running_mean"].reshape(shape)) * scale.reshape(shape) \
        + model[f"{name}.bias"].reshape(shape)


_LAYERS = {  # layer type -> its translation, evaluation mode
    "conv2d": _conv,
    "pool2d": _pool,
    "activation": lambda model, name, layer, h: _ACTIVATIONS[layer.fn](h),
    "flatten": lambda model, name, layer, h: h.reshape(h.shape[0], -1),
    "dense": lambda model, name, layer, h: h @ model[f"{name}.weight"].T + model[f"{name}.bias"],
    "batchnorm": _batchnorm,
    "dropout": lambda model, name, layer, h: h,  # inference: dropout is the identity
    "global_avg_pool": lambda model, name, layer, h: h.mean(axis=(2, 3), keepdims=True),
}


_MERGES = {"concat": lambda outputs: np.concatenate(outputs, axis=1), "add": lambda outputs: sum(outputs)}


def _outputs(model, spec, x):
    """(path, output) for every layer, group and block, evaluation mode."""
    outputs = []
    run(spec, x, lambda path, layer, h: np.ascontiguousarray(_LAYERS[layer.type](model, path, layer, h), np.float32),
        lambda block, branches: _MERGES[block.merge](branches), lambda path, h: outputs.append((path, h)))
    return outputs


def forward(model, spec, x):
    return _outputs(model, spec, x)[-1][1]  # the last top-level layer's


def layer_outputs(model, spec, x):
    return _outputs(model, spec, x)
