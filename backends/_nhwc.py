"""Neutral <-> channels-last layouts, shared by the adapters whose frameworks are NHWC (Keras,
Flax). Plain NumPy: no framework is imported here.

Conv kernels are HWIO and dense kernels (in, out) in those frameworks. They flatten NHWC in
H*W*C order, the neutral layout is C*H*W: until the first dense layer after a flatten, the
per-feature arrays (that dense layer's input rows, a batchnorm's vectors) carry the (C, H, W)
they were flattened from and are reordered.
"""

from __future__ import annotations

import numpy as np

from polylenet.layers import BatchNorm, Conv2D, Dense, Flatten
from polylenet.shapes import layer_table


def layouts(spec, names):
    """Per neutral key, (native name, layout). ``names`` maps the neutral attribute (``weight``,
    ``bias``, ``running_mean``, ``running_var``) to the framework's, per layer type:
    ``names["conv2d"]``, ``names["dense"]``, ``names["batchnorm"]``. A layout is ("conv", None),
    ("dense", chw or None) or ("vector", chw or None)."""
    found, chw = {}, None
    for name, layer, in_shape, _ in layer_table(spec):
        if isinstance(layer, Flatten):
            chw = in_shape[1:]
        elif isinstance(layer, (Conv2D, Dense)):
            weight = ("conv", None) if isinstance(layer, Conv2D) else ("dense", chw)
            found[f"{name}.weight"] = (names[layer.type]["weight"], weight)
            found[f"{name}.bias"] = (names[layer.type]["bias"], ("vector", None))
            chw = None
        elif isinstance(layer, BatchNorm):
            for attr, native in names["batchnorm"].items():
                found[f"{name}.{attr}"] = (native, ("vector", chw))
    return found


def to_native(value, layout):
    kind, chw = layout
    if kind == "conv":  # (out, in, kh, kw) -> (kh, kw, in, out)
        return value.transpose(2, 3, 1, 0)
    if kind == "dense" and chw is not None:  # (out, C*H*W) -> (H*W*C, out)
        return value.reshape(value.shape[0], *chw).transpose(2, 3, 1, 0).reshape(-1, value.shape[0])
    if kind == "vector" and chw is not None:  # C*H*W -> H*W*C
        return value.reshape(chw).transpose(1, 2, 0).reshape(-1)
    return value.T if kind == "dense" else value


def to_neutral(value, layout):
    kind, chw = layout
    if kind == "conv":
        return value.transpose(3, 2, 0, 1)
    if kind == "dense" and chw is not None:  # (H*W*C, out) -> (out, C*H*W)
        c, h, w = chw
        return value.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(value.shape[1], -1)
    if kind == "vector" and chw is not None:  # H*W*C -> C*H*W
        c, h, w = chw
        return value.reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
    return value.T if kind == "dense" else value


def to_nchw(spec, outputs):
    """Channels-last layer outputs ``[(name, array), ...]`` in the neutral layout: NHWC as NCHW,
    and the features between a flatten and the next dense layer from H*W*C to C*H*W order."""
    neutral, chw = [], None
    for (name, layer, in_shape, _), (native_name, out) in zip(layer_table(spec), outputs):
        if isinstance(layer, Flatten):
            chw = in_shape[1:]
        elif isinstance(layer, Dense):
            chw = None
        if out.ndim == 4:
            out = out.transpose(0, 3, 1, 2)
        elif chw is not None:
            c, h, w = chw
            out = out.reshape(len(out), h, w, c).transpose(0, 3, 1, 2).reshape(len(out), -1)
        neutral.append((name, np.ascontiguousarray(out)))
    return neutral
