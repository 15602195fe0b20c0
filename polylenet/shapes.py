"""Shape inference on the spec alone (NCHW, batch of 1) and validation of every layer."""

from __future__ import annotations

from math import prod
from typing import Sequence

from polylenet.errors import SpecError
from polylenet.spec import ACTIVATIONS, POOL_KINDS, Activation, Conv2D, Dense, Flatten, Pool2D, Spec

Shape = tuple[int, ...]


def _positive(where: str, **values: object) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(f"{where}: {key} must be a positive integer, got {value!r}")


def _output_shape(where: str, layer, shape: Shape) -> Shape:
    """The output shape of ``layer`` for an input of ``shape`` (batch dimension included)."""
    if isinstance(layer, Conv2D):
        _positive(where, out_channels=layer.out_channels, kernel=layer.kernel, stride=layer.stride)
        if isinstance(layer.padding, bool) or not isinstance(layer.padding, int) or layer.padding < 0:
            raise SpecError(f"{where}: padding must be a non-negative integer, got {layer.padding!r}")
        if len(shape) != 4:
            raise SpecError(f"{where}: conv2d needs an NCHW input, but it follows a flatten/dense "
                            f"layer (input shape {shape}); move it before the flatten")
        n, _, h, w = shape
        size = [(d + 2 * layer.padding - layer.kernel) // layer.stride + 1 for d in (h, w)]
        out = (n, layer.out_channels, *size)
    elif isinstance(layer, Pool2D):
        if layer.kind not in POOL_KINDS:
            raise SpecError(f"{where}: unknown pooling kind {layer.kind!r}; use one of {list(POOL_KINDS)}")
        _positive(where, size=layer.size, stride=layer.stride)
        if len(shape) != 4:
            raise SpecError(f"{where}: pool2d needs an NCHW input, but it follows a flatten/dense "
                            f"layer (input shape {shape}); move it before the flatten")
        n, c, h, w = shape
        out = (n, c, *[(d - layer.size) // layer.stride + 1 for d in (h, w)])
    elif isinstance(layer, Activation):
        if layer.fn not in ACTIVATIONS:
            raise SpecError(f"{where}: unknown activation {layer.fn!r}; use one of {list(ACTIVATIONS)}")
        out = shape
    elif isinstance(layer, Flatten):
        if len(shape) != 4:
            raise SpecError(f"{where}: flatten needs an NCHW input, got shape {shape} "
                            "(is there a second flatten?)")
        out = (shape[0], prod(shape[1:]))
    elif isinstance(layer, Dense):
        _positive(where, units=layer.units)
        if len(shape) != 2:
            raise SpecError(f"{where}: dense layer before flatten (input shape {shape}); "
                            "add a flatten layer before the first dense layer")
        out = (shape[0], layer.units)
    else:
        raise SpecError(f"{where}: unknown layer object {layer!r}")
    if any(d < 1 for d in out[2:]):
        raise SpecError(f"{where}: spatial size collapses below 1 (input {shape} -> {out}); "
                        "use a smaller kernel/stride or more padding earlier")
    return out


def validate(spec: Spec, source: str = "spec") -> None:
    """Raise :class:`SpecError` naming the first bad layer and why; return None when valid."""
    layer_table(spec, source)


def layer_table(spec: Spec, source: str | None = None) -> list[tuple[str, object, Shape, Shape]]:
    """``[(name, layer, input_shape, output_shape), ...]`` for a batch of 1, validating as it goes."""
    source = source or spec.name
    c_h_w = tuple(spec.input_shape)
    if len(c_h_w) != 3:
        raise SpecError(f"{source}: input_shape must be (channels, height, width), got {c_h_w}")
    _positive(f"{source}: input_shape", channels=c_h_w[0], height=c_h_w[1], width=c_h_w[2])
    _positive(source, num_classes=spec.num_classes)
    shape: Shape = (1, *c_h_w)
    table = []
    for index, (name, layer) in enumerate(spec.named_layers()):
        where = f"{source}: layer {index} ({name}, {getattr(layer, 'type', '?')})"
        out = _output_shape(where, layer, shape)
        table.append((name, layer, shape, out))
        shape = out
    if len(shape) != 2 or shape[1] != spec.num_classes:
        raise SpecError(f"{source}: the last layer must be a dense layer with num_classes="
                        f"{spec.num_classes} units; the network ends with shape {shape}")
    return table


def spec_layer_shapes(spec: Spec) -> list[tuple[str, Shape]]:
    """Per-layer NCHW output shapes for a batch of 1, from the spec alone.

    >>> from polylenet import load_spec
    >>> spec_layer_shapes(load_spec("lenet5"))[:2]
    [('conv1', (1, 6, 28, 28)), ('act1', (1, 6, 28, 28))]
    """
    return [(name, out) for name, _, _, out in layer_table(spec)]


def param_shapes(spec: Spec) -> dict[str, Shape]:
    """Neutral parameter shapes: conv (out, in, kh, kw), dense (out, in), biases (out,)."""
    shapes: dict[str, Shape] = {}
    for name, layer, in_shape, _ in layer_table(spec):
        if isinstance(layer, Conv2D):
            shapes[f"{name}.weight"] = (layer.out_channels, in_shape[1], layer.kernel, layer.kernel)
            shapes[f"{name}.bias"] = (layer.out_channels,)
        elif isinstance(layer, Dense):
            shapes[f"{name}.weight"] = (layer.units, in_shape[1])
            shapes[f"{name}.bias"] = (layer.units,)
    return shapes


def format_shape_table(rows: Sequence[tuple[str, Shape]]) -> str:
    """d2l's table, one line per layer: ``conv1    output shape: (1, 6, 28, 28)``."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  output shape: {tuple(shape)}" for name, shape in rows)
