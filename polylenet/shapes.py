"""Shapes read off the spec alone: per-layer NCHW outputs (batch of 1) and the neutral arrays."""

from __future__ import annotations

from typing import Sequence

from polylenet.layers import BatchNorm, Conv2D, Dense, Layer, Shape
from polylenet.spec import Spec

# BatchNorm's running statistics: state carried in the neutral weights, updated by training
# mode, never by the optimizer (no gradient).
STATE_SUFFIXES = (".running_mean", ".running_var")


def layer_table(spec: Spec) -> list[tuple[str, Layer, Shape, Shape]]:
    """``[(path, layer, input_shape, output_shape), ...]`` per layer for a batch of 1, inside
    groups and blocks too (see :attr:`Spec.leaves`)."""
    return spec.leaves


def spec_layer_shapes(spec: Spec, nested: bool = False) -> list[tuple[str, Shape]]:
    """Per-layer NCHW output shapes for a batch of 1, from the spec alone: per top-level layer,
    group and block (d2l's table), or with ``nested`` every node (as ``layer_outputs`` names them).

    >>> from polylenet import load_spec
    >>> spec_layer_shapes(load_spec("lenet5"))[:2]
    [('conv1', (1, 6, 28, 28)), ('act1', (1, 6, 28, 28))]
    """
    return [(name, out) for name, _, _, out in (spec.outputs if nested else spec.table)]


def param_shapes(spec: Spec) -> dict[str, Shape]:
    """Every neutral array: conv (out, in, kh, kw), dense (out, in), biases (out,), and per
    batchnorm ``weight`` (gamma), ``bias`` (beta), ``running_mean``, ``running_var`` (features,).

    >>> from polylenet import load_spec
    >>> [k for k in param_shapes(load_spec("lenet-bn")) if k.startswith("bn1")]
    ['bn1.weight', 'bn1.bias', 'bn1.running_mean', 'bn1.running_var']
    """
    shapes: dict[str, Shape] = {}
    for name, layer, in_shape, _ in spec.leaves:  # named by path inside groups and blocks
        if isinstance(layer, Conv2D):
            shapes[f"{name}.weight"] = (layer.out_channels, in_shape[1], *layer.kernel_hw)
            if layer.bias:
                shapes[f"{name}.bias"] = (layer.out_channels,)
        elif isinstance(layer, Dense):
            shapes[f"{name}.weight"] = (layer.units, in_shape[1])
            shapes[f"{name}.bias"] = (layer.units,)
        elif isinstance(layer, BatchNorm):
            for attr in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{name}.{attr}"] = (in_shape[1],)
    return shapes


def is_state(key: str) -> bool:
    """True for a running statistic (``bn1.running_mean``), False for a trainable parameter."""
    return key.endswith(STATE_SUFFIXES)


def trainable_shapes(spec: Spec) -> dict[str, Shape]:
    """The arrays SGD updates (and ``loss_and_grads`` returns gradients for)."""
    return {k: s for k, s in param_shapes(spec).items() if not is_state(k)}


def format_shape_table(rows: Sequence[tuple[str, Shape]]) -> str:
    """d2l's table, one line per layer: ``conv1    output shape: (1, 6, 28, 28)``."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  output shape: {tuple(shape)}" for name, shape in rows)
