"""The layer vocabulary: each layer is plain data and knows its own output shape.

A layer's ``output_shape(where, shape)`` validates the layer against the NCHW (or (N, features))
shape it receives and returns what it produces, raising :class:`SpecError` naming ``where``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Union

from polylenet.errors import SpecError

Shape = tuple[int, ...]
ACTIVATIONS = ("sigmoid", "relu", "tanh")
POOL_KINDS = ("max", "avg")


def _positive(where: str, **values: object) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(f"{where}: {key} must be a positive integer, got {value!r}")


def _real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _needs_nchw(where: str, kind: str, shape: Shape) -> None:
    if len(shape) != 4:
        raise SpecError(f"{where}: {kind} needs an NCHW input, but it follows a flatten/dense "
                        f"layer (input shape {shape}); move it before the flatten")


def _spatial(where: str, shape: Shape, out: Shape) -> Shape:
    if any(d < 1 for d in out[2:]):
        raise SpecError(f"{where}: spatial size collapses below 1 (input {shape} -> {out}); "
                        "use a smaller kernel/stride or more padding earlier")
    return out


Pair = tuple[int, int]
Pads = tuple[Pair, Pair]  # ((top, bottom), (left, right))
PADDING_MODES = ("same", "valid")


def _freeze(value: object) -> object:
    """JSON lists as tuples (nested too), so equal layers compare and hash equal."""
    return tuple(_freeze(v) for v in value) if isinstance(value, (list, tuple)) else value


def _int(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def as_pair(where: str, key: str, value: object) -> Pair:
    """An int or an (h, w) pair of positive integers as (h, w)."""
    pair = (value, value) if not isinstance(value, tuple) else value
    if len(pair) != 2 or not all(_int(v, 1) for v in pair):
        raise SpecError(f"{where}: {key} must be a positive integer or a pair of them [h, w], got {value!r}")
    return pair


def as_pads(where: str, value: object) -> Pads:
    """Padding as ((top, bottom), (left, right)): an int p (every side), a pair (ph, pw) (both
    sides of an axis), or per side ((top, bottom), (left, right)); non-negative integers."""
    def bad() -> SpecError:
        return SpecError(f"{where}: padding must be a non-negative integer p, a pair [ph, pw], per side "
                         f"[[top, bottom], [left, right]], or one of {list(PADDING_MODES)}; got {value!r}")
    if _int(value, 0):
        return ((value, value), (value, value))
    if not isinstance(value, tuple) or len(value) != 2:
        raise bad()
    if all(_int(v, 0) for v in value):
        return ((value[0], value[0]), (value[1], value[1]))
    if all(isinstance(v, tuple) and len(v) == 2 and all(_int(p, 0) for p in v) for v in value):
        return value
    raise bad()


def same_pads(in_hw: Pair, kernel: Pair, stride: Pair) -> Pads:
    """TensorFlow's ``padding="same"``: output ceil(in / stride); the total padding split with the
    odd row/column at the bottom/right (the opposite of d2l's even-kernel rule)."""
    pads = []
    for size, k, s in zip(in_hw, kernel, stride):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def _padding_mode(where: str, padding: object) -> None:
    if isinstance(padding, str) and padding not in PADDING_MODES:
        raise SpecError(f"{where}: padding {padding!r} is not a padding mode; use one of {list(PADDING_MODES)} "
                        "or explicit pads")


def _resolved(layer, where: str, shape: Shape, window_key: str, window: object):
    """``layer`` with a padding mode replaced by explicit pads for the NCHW input ``shape``."""
    _padding_mode(where, layer.padding)
    if not isinstance(layer.padding, str):
        return layer
    _needs_nchw(where, layer.type, shape)
    window, stride = as_pair(where, window_key, window), as_pair(where, "stride", layer.stride)
    pads = same_pads(shape[2:], window, stride) if layer.padding == "same" else ((0, 0), (0, 0))
    return replace(layer, padding=pads)


@dataclass(frozen=True)
class Conv2D:
    """A 2-D cross-correlation (d2l's conv-layer chapter): ``kernel`` and ``stride`` an int or
    (h, w); ``padding`` an int, (ph, pw), per side ((top, bottom), (left, right)), or Keras's
    ``"same"``/``"valid"``, which a :class:`~polylenet.spec.Spec` resolves into explicit pads for
    its input size; ``bias=False`` for a bias-free convolution."""

    out_channels: int
    kernel: Union[int, Pair]
    stride: Union[int, Pair] = 1
    padding: Union[int, Pair, Pads, str] = 0
    bias: bool = True
    type: str = field(default="conv2d", init=False)

    def __post_init__(self) -> None:
        for key in ("kernel", "stride", "padding"):
            object.__setattr__(self, key, _freeze(getattr(self, key)))

    @property
    def kernel_hw(self) -> Pair:
        return as_pair("conv2d", "kernel", self.kernel)

    @property
    def stride_hw(self) -> Pair:
        return as_pair("conv2d", "stride", self.stride)

    @property
    def pads(self) -> Pads:
        """((top, bottom), (left, right)); a padding mode must have been resolved first."""
        return as_pads("conv2d", self.padding)

    def resolved(self, where: str, shape: Shape) -> "Conv2D":
        """This layer with ``"same"``/``"valid"`` replaced by the explicit pads for ``shape``."""
        return _resolved(self, where, shape, "kernel", self.kernel)

    def output_shape(self, where: str, shape: Shape) -> Shape:
        _positive(where, out_channels=self.out_channels)
        kernel, stride = as_pair(where, "kernel", self.kernel), as_pair(where, "stride", self.stride)
        _padding_mode(where, self.padding)
        pads = as_pads(where, self.resolved(where, shape).padding)
        if not isinstance(self.bias, bool):
            raise SpecError(f"{where}: bias must be true or false, got {self.bias!r}")
        _needs_nchw(where, "conv2d", shape)
        n, _, h, w = shape
        size = [(d + sum(p) - k) // s + 1 for d, p, k, s in zip((h, w), pads, kernel, stride)]
        return _spatial(where, shape, (n, self.out_channels, *size))


def pool_output_size(size: int, pads: Pair, kernel: int, stride: int, ceil_mode: bool) -> int:
    """PyTorch's rule: with ``ceil_mode`` the last window may overhang the padded input, but must
    start inside the input or its top/left padding."""
    span = size + sum(pads) - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pads[0]:
        out -= 1
    return out


@dataclass(frozen=True)
class Pool2D:
    """Max or average pooling (d2l's pooling chapter): ``size`` and ``stride`` an int or (h, w)
    (``stride`` defaults to the size, as ``nn.MaxPool2d(3)``), ``padding`` as :class:`Conv2D`'s
    (padded positions never win a max), ``ceil_mode`` (PyTorch's rule), and for ``avg``
    ``count_include_pad``: True (PyTorch's and MXNet's default) divides by the window size
    including the explicit pads, False by the input positions in the window alone."""

    kind: str
    size: Union[int, Pair]
    stride: Union[int, Pair, None] = None
    padding: Union[int, Pair, Pads, str] = 0
    ceil_mode: bool = False
    count_include_pad: bool = True
    type: str = field(default="pool2d", init=False)

    def __post_init__(self) -> None:
        for key in ("size", "stride", "padding"):
            object.__setattr__(self, key, _freeze(getattr(self, key)))
        if self.stride is None:
            object.__setattr__(self, "stride", self.size)

    @property
    def size_hw(self) -> Pair:
        return as_pair("pool2d", "size", self.size)

    @property
    def stride_hw(self) -> Pair:
        return as_pair("pool2d", "stride", self.stride)

    @property
    def pads(self) -> Pads:
        return as_pads("pool2d", self.padding)

    def resolved(self, where: str, shape: Shape) -> "Pool2D":
        """This layer with ``"same"``/``"valid"`` replaced by the explicit pads for ``shape``."""
        return _resolved(self, where, shape, "size", self.size)

    def output_shape(self, where: str, shape: Shape) -> Shape:
        if self.kind not in POOL_KINDS:
            raise SpecError(f"{where}: unknown pooling kind {self.kind!r}; use one of {list(POOL_KINDS)}")
        size, stride = as_pair(where, "size", self.size), as_pair(where, "stride", self.stride)
        _padding_mode(where, self.padding)
        pads = as_pads(where, self.resolved(where, shape).padding)
        for key in ("ceil_mode", "count_include_pad"):
            if not isinstance(getattr(self, key), bool):
                raise SpecError(f"{where}: {key} must be true or false, got {getattr(self, key)!r}")
        for axis, (p, k) in zip("hw", zip(pads, size)):
            if max(p) > k // 2:
                raise SpecError(f"{where}: padding {p} on axis {axis} is more than half the window "
                                f"({k}), so a window could hold padding alone; pad at most {k // 2} per side")
        _needs_nchw(where, "pool2d", shape)
        n, c, h, w = shape
        out = [pool_output_size(d, p, k, s, self.ceil_mode) for d, p, k, s in zip((h, w), pads, size, stride)]
        return _spatial(where, shape, (n, c, *out))


@dataclass(frozen=True)
class Activation:
    fn: str
    type: str = field(default="activation", init=False)

    def output_shape(self, where: str, shape: Shape) -> Shape:
        if self.fn not in ACTIVATIONS:
            raise SpecError(f"{where}: unknown activation {self.fn!r}; use one of {list(ACTIVATIONS)}")
        return shape


@dataclass(frozen=True)
class Flatten:
    type: str = field(default="flatten", init=False)

    def output_shape(self, where: str, shape: Shape) -> Shape:
        if len(shape) != 4:
            raise SpecError(f"{where}: flatten needs an NCHW input, got shape {shape} "
                            "(is there a second flatten?)")
        return (shape[0], math.prod(shape[1:]))


@dataclass(frozen=True)
class Dense:
    units: int
    type: str = field(default="dense", init=False)

    def output_shape(self, where: str, shape: Shape) -> Shape:
        _positive(where, units=self.units)
        if len(shape) != 2:
            raise SpecError(f"{where}: dense layer before flatten (input shape {shape}); "
                            "add a flatten layer before the first dense layer")
        return (shape[0], self.units)


@dataclass(frozen=True)
class BatchNorm:
    """d2l's from-scratch ``batch_norm``: per channel after a conv (NCHW), per feature after a
    dense layer. Training normalizes with the batch mean and the *biased* batch variance and
    updates ``running = momentum * running + (1 - momentum) * batch``; evaluation uses the
    running statistics."""

    momentum: float = 0.9
    eps: float = 1e-5
    type: str = field(default="batchnorm", init=False)

    def output_shape(self, where: str, shape: Shape) -> Shape:
        if not _real(self.momentum) or not 0.0 <= self.momentum < 1.0:
            raise SpecError(f"{where}: momentum must be a number in [0, 1), got {self.momentum!r}")
        if not _real(self.eps) or not 0.0 < self.eps < math.inf:
            raise SpecError(f"{where}: eps must be a positive finite number, got {self.eps!r}")
        if len(shape) not in (2, 4):
            raise SpecError(f"{where}: batchnorm needs an NCHW or (N, features) input, got {shape}")
        return shape


@dataclass(frozen=True)
class Dropout:
    """Inverted dropout (d2l's ``dropout_layer``): in training each unit is zeroed with
    probability ``p`` and the kept ones are scaled by 1 / (1 - p); in evaluation it is the
    identity. Which units drop is the framework's own random draw, or, for identical training on
    every backend, masks drawn in NumPy (:func:`polylenet.masks.dropout_masks`)."""

    p: float = 0.5
    type: str = field(default="dropout", init=False)

    def output_shape(self, where: str, shape: Shape) -> Shape:
        if not _real(self.p) or not 0.0 <= self.p < 1.0:
            raise SpecError(f"{where}: dropout p must be a probability in [0, 1), got {self.p!r}")
        return shape


@dataclass(frozen=True)
class GlobalAvgPool:
    """The mean over each channel's whole H x W plane (d2l's NiN: ``nn.AdaptiveAvgPool2d((1, 1))``),
    (N, C, H, W) -> (N, C, 1, 1); a flatten after it gives (N, C)."""

    type: str = field(default="global_avg_pool", init=False)

    def output_shape(self, where: str, shape: Shape) -> Shape:
        _needs_nchw(where, "global_avg_pool", shape)
        return (*shape[:2], 1, 1)


MERGES = ("concat", "add")
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*[A-Za-z_]|[A-Za-z_]")


def _label(where: str, label: object) -> None:
    if not isinstance(label, str) or not _LABEL.fullmatch(label):
        raise SpecError(f"{where}: label must be letters, digits and '_', starting with a letter and not ending in "
                        f"a digit (the spec numbers it: 'b' -> b1, b2, ...), got {label!r}")


@dataclass(frozen=True)
class Sequential:
    """A group of layers run in order, as d2l's ``b1 = nn.Sequential(...)``: its ``label`` numbered
    in its parent names it (``label="b"``: b1, b2, ...), its layers are named inside it
    (``b1.conv1``), and shapes print per group as the book prints them."""

    layers: tuple
    label: str = "block"
    type: str = field(default="sequential", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))


@dataclass(frozen=True)
class Block:
    """Branches run on the same NCHW input, merged by ``merge``: ``"concat"`` joins their outputs on
    the channel axis in branch order (d2l's ``Inception``; DenseNet's ``torch.cat((X, Y), dim=1)``),
    ``"add"`` sums them (d2l's ``Residual``: body plus shortcut). Each branch is a tuple of layers
    (blocks too); an empty one is the identity. ``after`` runs on the merged output (the
    ``Residual``'s final ReLU). Named inside it: ``branch1`` ... ``branchK``, then the ``after``
    layers (``residual1.branch1.conv1``, ``residual1.act1``)."""

    merge: str
    branches: tuple
    after: tuple = ()
    label: str = "block"
    type: str = field(default="block", init=False)

    def __post_init__(self) -> None:
        if isinstance(self.branches, (list, tuple)):
            object.__setattr__(self, "branches", tuple(tuple(b) if isinstance(b, (list, tuple)) else b
                                                       for b in self.branches))
        object.__setattr__(self, "after", tuple(self.after) if isinstance(self.after, (list, tuple)) else self.after)

    def branch_names(self) -> list[str]:
        return [f"branch{i}" for i in range(1, len(self.branches) + 1)]

    def after_names(self) -> list[str]:
        return node_names(self.after, {"branch": len(self.branches)})


Layer = Union[Conv2D, Pool2D, Activation, Flatten, Dense, BatchNorm, Dropout, GlobalAvgPool]
Node = Union[Layer, Sequential, Block]
LAYER_TYPES = {cls.type: cls for cls in (Conv2D, Pool2D, Activation, Flatten, Dense, BatchNorm, Dropout,
                                         GlobalAvgPool)}
COMPOSITE_TYPES = {cls.type: cls for cls in (Sequential, Block)}


def node_types() -> dict[str, type]:
    """Every type a spec may hold by its ``type`` name: the layers, groups and blocks."""
    return {**LAYER_TYPES, **COMPOSITE_TYPES}
PREFIX = {"conv2d": "conv", "pool2d": "pool", "activation": "act", "flatten": "flatten",
          "dense": "dense", "batchnorm": "bn", "dropout": "dropout", "global_avg_pool": "gap"}


def node_names(nodes, counts: Union[dict, None] = None) -> list[str]:
    """Each node's name among its siblings: its prefix (a layer's :data:`PREFIX`, a group's or
    block's ``label``) and its count so far (``counts``: those already taken, as a block's
    branches before its ``after`` layers)."""
    counts = dict(counts or {})
    names = []
    for node in nodes:
        prefix = node.label if type(node) in COMPOSITE_TYPES.values() else PREFIX[node.type]
        counts[prefix] = counts.get(prefix, 0) + 1
        names.append(f"{prefix}{counts[prefix]}")
    return names


def conv2d(out_channels: int, kernel: Union[int, Pair], stride: Union[int, Pair] = 1,
           padding: Union[int, Pair, Pads, str] = 0, bias: bool = True) -> Conv2D:
    """>>> conv2d(6, (5, 3), padding=(2, 1)).pads
    ((2, 2), (1, 1))
    """
    return Conv2D(out_channels, kernel, stride, padding, bias)


def pool2d(kind: str, size: Union[int, Pair], stride: Union[int, Pair, None] = None,
           padding: Union[int, Pair, Pads, str] = 0, ceil_mode: bool = False,
           count_include_pad: bool = True) -> Pool2D:
    """>>> pool2d("max", 3, 2, padding=1).stride_hw
    (2, 2)
    """
    return Pool2D(kind, size, stride, padding, ceil_mode, count_include_pad)


def activation(fn: str) -> Activation:
    return Activation(fn)


def flatten() -> Flatten:
    return Flatten()


def dense(units: int) -> Dense:
    return Dense(units)


def batchnorm(momentum: float = 0.9, eps: float = 1e-5) -> BatchNorm:
    return BatchNorm(momentum, eps)


def dropout(p: float = 0.5) -> Dropout:
    """>>> dropout(0.5).p
    0.5
    """
    return Dropout(p)


def global_avg_pool() -> GlobalAvgPool:
    return GlobalAvgPool()


def sequential(label: str, *layers: Node) -> Sequential:
    """A named group (d2l's ``b1``):

    >>> from polylenet import Spec
    >>> b1 = sequential("b", conv2d(4, 3, padding=1), activation("relu"))
    >>> [path for path, *_ in Spec("s", (b1, flatten(), dense(10)), input_shape=(1, 4, 4)).leaves]
    ['b1.conv1', 'b1.act1', 'flatten1', 'dense1']
    """
    return Sequential(layers, label)


def concat(*branches, label: str = "concat") -> Block:
    """Branches concatenated on the channel axis (d2l's ``Inception``); ``()`` is the identity.

    >>> block = concat((conv2d(2, 1),), (conv2d(3, 3, padding=1),), label="inception")
    >>> block.branch_names()
    ['branch1', 'branch2']
    """
    return Block("concat", branches, (), label)


def add(*branches, after=(), label: str = "residual") -> Block:
    """Branches summed, then ``after`` (d2l's ``Residual``: body + shortcut, then ReLU).

    >>> body = (conv2d(4, 3, padding=1), batchnorm(), activation("relu"), conv2d(4, 3, padding=1), batchnorm())
    >>> add(body, (), after=(activation("relu"),)).after_names()
    ['act1']
    """
    return Block("add", branches, tuple(after), label)


def parameter_count(layer: Layer, in_shape: Shape) -> int:
    """How many numbers the layer's neutral arrays hold (batchnorm's running statistics included)."""
    if isinstance(layer, Conv2D):
        return layer.out_channels * (in_shape[1] * math.prod(layer.kernel_hw) + layer.bias)
    if isinstance(layer, Dense):
        return layer.units * (in_shape[1] + 1)
    if isinstance(layer, BatchNorm):
        return 4 * in_shape[1]
    return 0


def unsupported_layer(backend: str, name: str, layer: object) -> SpecError:
    """The error an adapter raises for a layer type it has no translation for (never a silent skip)."""
    kind = getattr(layer, "type", type(layer).__name__)
    return SpecError(f"backend {backend!r} cannot build layer {name} of type {kind!r}: its adapter has "
                     f"no translation for it (known layer types: {sorted(LAYER_TYPES)})")
