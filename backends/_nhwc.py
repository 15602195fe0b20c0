"""Neutral <-> channels-last layouts, shared by the adapters whose frameworks are NHWC (Keras,
Flax). Plain NumPy: no framework is imported here.

Conv kernels are HWIO and dense kernels (in, out) in those frameworks. They flatten NHWC in
H*W*C order, the neutral layout is C*H*W. A flatten with a dense layer after it flattens as the
framework does (d2l's tabs): until that dense layer, the per-feature arrays (its input rows, a
batchnorm's vectors) carry the (C, H, W) they were flattened from and are reordered. A flatten
with no dense layer after it (the spec ends with it, or with a batchnorm after it) has no weights
to take up the order, so the adapter flattens channels first there (:func:`flattens_channels_first`).
"""

from __future__ import annotations

import numpy as np

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

# Per layer type, (layer, input shape, feature order in) -> ({neutral attribute: layout}, feature
# order out). A layout is ("conv", None), ("dense", chw or None) or ("vector", chw or None); a
# feature order is the (C, H, W) that (N, features) were flattened from in H*W*C order, or None.


def _conv(layer, in_shape, chw):
    arrays = {"weight": ("conv", None), "bias": ("vector", None)}
    return (arrays if layer.bias else {"weight": arrays["weight"]}), None


def _dense(layer, in_shape, chw):
    return {"weight": ("dense", chw), "bias": ("vector", None)}, None


def _batchnorm(layer, in_shape, chw):
    return dict.fromkeys(("weight", "bias", "running_mean", "running_var"), ("vector", chw)), chw


def _flatten(layer, in_shape, chw):
    return {}, in_shape[1:]


def _elementwise(layer, in_shape, chw):
    return {}, chw


_LAYERS = {Conv2D: _conv, Pool2D: _elementwise, Activation: _elementwise, Flatten: _flatten, Dense: _dense,
           BatchNorm: _batchnorm, Dropout: _elementwise, GlobalAvgPool: _elementwise}


def _walk(spec, channels_first):
    """(path, node, {neutral attribute: layout}, feature order of the output) per node, in
    :attr:`Spec.outputs` order. A group's or block's row carries the order its last layer left
    (a block is NCHW throughout: its branches cannot flatten)."""
    rows, chw = [], None
    leaves = {path for path, *_ in spec.leaves}
    for name, layer, in_shape, _ in spec.outputs:
        if name not in leaves:
            rows.append((name, layer, {}, chw))
            continue
        if type(layer) not in _LAYERS:
            raise unsupported_layer("channels-last layouts", name, layer)
        arrays, chw = _LAYERS[type(layer)](layer, in_shape, chw)
        chw = None if channels_first else chw
        rows.append((name, layer, arrays, chw))
    return rows


def flattens_channels_first(spec) -> bool:
    """True where the flatten's H*W*C order would reach the network's output (no dense layer after
    it): the adapter then transposes to channels first before it, and nothing is reordered."""
    return bool(spec.layers) and _walk(spec, False)[-1][3] is not None


def layouts(spec, names):
    """Per neutral key, (native name, layout). ``names`` maps the neutral attribute (``weight``,
    ``bias``, ``running_mean``, ``running_var``) to the framework's, per layer type:
    ``names["conv2d"]``, ``names["dense"]``, ``names["batchnorm"]``. A bias-free conv has no bias key.
    Keys are paths inside groups and blocks (``b2.residual1.branch1.conv1.weight``)."""
    return {f"{name}.{attr}": (names[layer.type][attr], layout)
            for name, layer, arrays, _ in _walk(spec, flattens_channels_first(spec)) for attr, layout in arrays.items()}


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


def masks_to_native(spec, masks):
    """Neutral dropout masks (:mod:`polylenet.masks`) in the framework's layout: NCHW ones as
    NHWC, and (N, features) ones between a flatten and the next dense layer in H*W*C order, as
    the features they multiply."""
    if not masks:
        return masks
    orders, native = {}, {}
    chw = None
    for name, _, _, out_chw in _walk(spec, flattens_channels_first(spec)):
        orders[name], chw = chw, out_chw  # the feature order of the layer's input
    for name, mask in masks.items():
        if mask.ndim == 4:
            mask = mask.transpose(0, 2, 3, 1)
        elif orders[name] is not None:
            c, h, w = orders[name]
            mask = mask.reshape(len(mask), c, h, w).transpose(0, 2, 3, 1).reshape(len(mask), -1)
        native[name] = np.ascontiguousarray(mask)
    return native


def to_nchw(spec, outputs):
    """Channels-last layer outputs ``[(name, array), ...]``, one per node in :attr:`Spec.outputs`
    order (groups and blocks included), in the neutral layout: NHWC as NCHW,
    and the features between a flatten and the next dense layer from H*W*C to C*H*W order."""
    neutral = []
    for (name, _, _, chw), (_, out) in zip(_walk(spec, flattens_channels_first(spec)), outputs):
        if out.ndim == 4:
            out = out.transpose(0, 3, 1, 2)
        elif chw is not None:
            c, h, w = chw
            out = out.reshape(len(out), h, w, c).transpose(0, 3, 1, 2).reshape(len(out), -1)
        neutral.append((name, np.ascontiguousarray(out)))
    return neutral
