"""Neutral weights: a dict of float32 NumPy arrays keyed ``conv1.weight`` ... ``dense3.bias``.

Layouts: conv kernels (out, in, kh, kw), dense weights (out, in), biases (out,). Adapters
convert to and from their framework's layout; nothing else does.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping, Union

import numpy as np

from polylenet.atomic import atomic_write
from polylenet.errors import WeightsError
from polylenet.layers import BatchNorm
from polylenet.shapes import param_shapes
from polylenet.spec import Spec
from polylenet.specfile import load_spec

Weights = dict[str, np.ndarray]


def init_weights(spec: Union[Spec, str] = "lenet5", seed: int = 0) -> Weights:
    """Xavier-uniform weights and zero biases (d2l's ``init_cnn``), identical for every backend;
    batchnorm starts at gamma 1, beta 0, running mean 0, running variance 1.

    >>> w = init_weights("lenet5", seed=0)
    >>> w["conv1.weight"].shape, w["dense3.bias"].dtype
    ((6, 1, 5, 5), dtype('float32'))
    """
    spec = load_spec(spec)
    rng = np.random.default_rng(seed)
    kinds = {name: type(layer) for name, layer, _, _ in spec.leaves}
    weights: Weights = {}
    for key, shape in param_shapes(spec).items():  # a bias-free conv has no bias key
        name, attr = key.rsplit(".", 1)
        if kinds[name] is BatchNorm:  # gamma 1, beta 0, running mean 0, running variance 1
            weights[key] = np.full(shape, 1.0 if attr in ("weight", "running_var") else 0.0, np.float32)
            continue
        if attr == "bias":
            weights[key] = np.zeros(shape, np.float32)
            continue
        receptive = shape[2] * shape[3] if len(shape) == 4 else 1  # conv (out, in, kh, kw): kh * kw
        fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        weights[key] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
    return weights


def check_weights(spec: Spec, weights: Mapping[str, np.ndarray], source: str = "weights") -> Weights:
    """Return ``weights`` as contiguous float32 arrays, or raise naming the missing/misfit key."""
    expected = param_shapes(spec)
    if not isinstance(weights, Mapping):
        raise WeightsError(f"{source} must be a mapping of neutral arrays (as get_weights returns), "
                           f"got {type(weights).__name__}")
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise WeightsError(f"{source} do not fit spec {spec.name!r}: missing {missing}, "
                           f"unexpected {extra}; expected keys {sorted(expected)}")
    out: Weights = {}
    for key, shape in expected.items():
        value = np.asarray(weights[key])
        if value.shape != shape:
            raise WeightsError(f"{source}: {key} has shape {value.shape}, spec {spec.name!r} needs "
                               f"{shape} (neutral layout: conv (out, in, kh, kw), dense (out, in))")
        out[key] = np.ascontiguousarray(value, dtype=np.float32)
    return out


def save_weights(weights: Mapping[str, np.ndarray], path: Union[str, os.PathLike]) -> Path:
    """Save neutral weights as an ``.npz`` (no pickle), atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v, np.float32) for k, v in weights.items()})
    return atomic_write(path, buffer.getvalue())


def load_weights(path: Union[str, os.PathLike]) -> Weights:
    """Load neutral weights saved by :func:`save_weights`; pickled objects are refused."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read neutral weights from {os.fspath(path)!r}: {exc}") from None
