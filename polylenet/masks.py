"""Dropout masks drawn in NumPy, so that every backend drops the same units in the same step.

A framework's own dropout draws from its own random generator, and no two frameworks' draws
can be matched. With ``TrainConfig(dropout="shared")`` (what ``polylenet compare`` uses) the
protocol draws each step's masks here, from (seed, epoch, step, layer) alone, and every backend
multiplies by exactly those arrays inside its own (compiled) training step.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from polylenet.layers import Dropout
from polylenet.spec import Spec

Masks = dict[str, np.ndarray]
DROPOUT_MODES = ("native", "shared")
"""``native``: each framework's own dropout layer and random draw (the default of ``train``);
``shared``: the masks of :func:`dropout_masks`, identical on every backend (``compare``'s)."""


def dropout_layers(spec: Spec) -> list[tuple[str, Dropout, tuple[int, ...]]]:
    """``[(name, layer, input shape for a batch of 1), ...]`` for every dropout layer."""
    return [(name, layer, in_shape) for name, layer, in_shape, _ in spec.leaves if isinstance(layer, Dropout)]


def dropout_masks(spec: Spec, batch_size: int, seed: int, epoch: int, step: int) -> Masks:
    """The masks of one training step, per dropout layer: float32 arrays of the layer's input
    shape (``batch_size``, ...), NCHW or (N, features), holding 0 where a unit drops and
    1 / (1 - p) where it is kept (inverted dropout: the scale is in the mask). Unit by unit, a
    uniform draw below ``p`` drops it; the draws depend on (seed, epoch, step, layer index) alone.

    >>> import polylenet
    >>> masks = dropout_masks(polylenet.load_spec("alexnet"), 4, seed=0, epoch=0, step=0)
    >>> sorted(masks), masks["dropout1"].shape, sorted(set(masks["dropout1"].ravel().tolist()))
    (['dropout1', 'dropout2'], (4, 4096), [0.0, 2.0])
    """
    masks: Masks = {}
    for index, (name, layer, in_shape, _) in enumerate(spec.leaves):
        if isinstance(layer, Dropout):
            draw = np.random.default_rng([seed, epoch, step, index]).random((batch_size, *in_shape[1:]))
            masks[name] = np.where(draw < layer.p, np.float32(0.0), np.float32(1.0 / (1.0 - layer.p)))
    return masks


def check_masks(spec: Spec, masks: Optional[Mapping[str, np.ndarray]], batch_size: int) -> Optional[Masks]:
    """``masks`` as contiguous float32 arrays, one per dropout layer of the batch's shape, or
    None (the framework's own dropout); raises ValueError naming what is wrong."""
    if masks is None:
        return None
    layers = dropout_layers(spec)
    names = [name for name, _, _ in layers]
    if not isinstance(masks, Mapping) or sorted(masks) != sorted(names):
        got = sorted(masks) if isinstance(masks, Mapping) else type(masks).__name__
        raise ValueError(f"dropout masks must be given for exactly the spec's dropout layers {names}, got {got}; "
                         "make them with polylenet.masks.dropout_masks(spec, batch_size, seed, epoch, step)")
    checked: Masks = {}
    for name, _, in_shape in layers:
        mask = np.asarray(masks[name])
        want = (batch_size, *in_shape[1:])
        if mask.shape != want or not np.issubdtype(mask.dtype, np.floating):
            raise ValueError(f"dropout mask {name!r} must be a float array of the layer's input shape {want} "
                             f"(0 where a unit drops, 1/(1-p) where kept), got {mask.dtype} of shape {mask.shape}")
        checked[name] = np.ascontiguousarray(mask, dtype=np.float32)
    return checked
