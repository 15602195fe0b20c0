"""Pooling windows as the spec defines them, for adapters whose framework pools differently.
No framework is imported here."""

from __future__ import annotations

from polylenet.layers import Pool2D, pool_output_size


def native_ceil_mode(layer: Pool2D, hw) -> bool | None:
    """The framework ceil_mode (True or False) whose output size is the spec's on both axes, or
    None. MXNet 1.9.1's "full" convention and Paddle 3.3.1's ceil_mode keep a last window that
    starts in the bottom/right padding, which the spec (PyTorch's rule) drops; where that is the
    one window too many, the spec's windows are exactly ceil_mode=False's. Both refuse a window
    larger than the padded input."""
    for ceil in ((True, False) if layer.ceil_mode else (False,)):
        if all(d + sum(p) >= k and (-(-(d + sum(p) - k) // s) if ceil else (d + sum(p) - k) // s) + 1
               == pool_output_size(d, p, k, s, layer.ceil_mode)
               for d, p, k, s in zip(hw, layer.pads, layer.size_hw, layer.stride_hw)):
            return ceil
    return None


def ceil_overhang(layer: Pool2D, hw) -> tuple[int, ...]:
    """Per axis, how far ceil_mode's last window reaches past the bottom/right pad (0 if not)."""
    return tuple(max(0, (pool_output_size(d, p, k, s, layer.ceil_mode) - 1) * s + k - d - sum(p))
                 for d, p, k, s in zip(hw, layer.pads, layer.size_hw, layer.stride_hw))


def pool_pads(layer: Pool2D, hw) -> tuple[tuple[int, int], ...]:
    """The pool's explicit pads with ceil_mode's overhang added at the bottom/right: a pool without
    ceil_mode over the input padded so has the same windows (none starts in the bottom padding)."""
    return tuple((top, bottom + extra) for (top, bottom), extra in zip(layer.pads, ceil_overhang(layer, hw)))
