"""The layer vocabulary: each layer is plain data and knows its own output shape.

A layer's ``output_shape(where, shape)`` validates the layer against the NCHW (or (N, features))
shape it receives and returns what it produces, raising :class:`SpecError` naming ``where``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Conv2D:
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    type: str = field(default="conv2d", init=False)

    def output_shape(self, where: str, shape: Shape) -> Shape:
        _positive(where, out_channels=self.out_channels, kernel=self.kernel, stride=self.stride)
        if isinstance(self.padding, bool) or not isinstance(self.padding, int) or self.padding < 0:
            raise SpecError(f"{where}: padding must be a non-negative integer, got {self.padding!r}")
        _needs_nchw(where, "conv2d", shape)
        n, _, h, w = shape
        size = [(d + 2 * self.padding - self.kernel) // self.stride + 1 for d in (h, w)]
        return _spatial(where, shape, (n, self.out_channels, *size))


@dataclass(frozen=True)
class Pool2D:
    kind: str
    size: int
    stride: int
    type: str = field(default="pool2d", init=False)

    def output_shape(self, where: str, shape: Shape) -> Shape:
        if self.kind not in POOL_KINDS:
            raise SpecError(f"{where}: unknown pooling kind {self.kind!r}; use one of {list(POOL_KINDS)}")
        _positive(where, size=self.size, stride=self.stride)
        _needs_nchw(where, "pool2d", shape)
        n, c, h, w = shape
        return _spatial(where, shape, (n, c, *[(d - self.size) // self.stride + 1 for d in (h, w)]))


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


Layer = Union[Conv2D, Pool2D, Activation, Flatten, Dense, BatchNorm]
LAYER_TYPES = {cls.type: cls for cls in (Conv2D, Pool2D, Activation, Flatten, Dense, BatchNorm)}
PREFIX = {"conv2d": "conv", "pool2d": "pool", "activation": "act", "flatten": "flatten",
          "dense": "dense", "batchnorm": "bn"}


def conv2d(out_channels: int, kernel: int, stride: int = 1, padding: int = 0) -> Conv2D:
    return Conv2D(out_channels, kernel, stride, padding)


def pool2d(kind: str, size: int, stride: int | None = None) -> Pool2D:
    return Pool2D(kind, size, size if stride is None else stride)


def activation(fn: str) -> Activation:
    return Activation(fn)


def flatten() -> Flatten:
    return Flatten()


def dense(units: int) -> Dense:
    return Dense(units)


def batchnorm(momentum: float = 0.9, eps: float = 1e-5) -> BatchNorm:
    return BatchNorm(momentum, eps)


def parameter_count(layer: Layer, in_shape: Shape) -> int:
    """How many numbers the layer's neutral arrays hold (batchnorm's running statistics included)."""
    if isinstance(layer, Conv2D):
        return layer.out_channels * (in_shape[1] * layer.kernel * layer.kernel + 1)
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
