"""The one input resize of the pipeline: bilinear, in NumPy, per batch, the same pixels to every backend.

d2l's modern-CNN chapter trains on Fashion-MNIST resized from 28x28 to 224x224, and each of its
tabs resizes with its own framework's image op (PIL's through torchvision, OpenCV's through
Gluon, ``tf.image.resize``, ...), so the tabs do not see the same pixels. Here the resize is
done once, in NumPy, for every backend: all 60,000 images at 224x224 in float32 would be 12 GB,
so it runs per batch.

The convention: bilinear interpolation with half-pixel centres (output pixel ``i`` samples the
input at ``(i + 0.5) * in / out - 0.5``, clamped to the edge pixels; OpenCV's ``INTER_LINEAR``,
``tf.image.resize(..., "bilinear")`` and PyTorch's ``align_corners=False``), no antialiasing,
computed in float64 on the [0, 1] pixels and rounded once to float32.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=16)
def bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size): row ``i`` holds the two interpolation weights of output pixel ``i``.

    >>> bilinear_weights(2, 4).tolist()
    [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]]
    """
    source = np.clip((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0, in_size - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, in_size - 1)
    frac = source - low
    weights = np.zeros((out_size, in_size))
    np.add.at(weights, (np.arange(out_size), low), 1.0 - frac)
    np.add.at(weights, (np.arange(out_size), high), frac)
    weights.setflags(write=False)
    return weights


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """NCHW float ``x`` resized to (height, width) by the module's convention, as float32.

    >>> resize_bilinear(np.ones((1, 1, 28, 28), np.float32), 224, 224).shape
    (1, 1, 224, 224)
    """
    rows, cols = bilinear_weights(x.shape[2], height), bilinear_weights(x.shape[3], width)
    return np.einsum("oh,nchw,pw->ncop", rows, np.asarray(x, np.float64), cols, optimize=True).astype(np.float32)


def to_model_inputs(images: np.ndarray, input_shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 (N, H, W) images -> float32 NCHW in [0, 1] (d2l's ``ToTensor``), resized to the
    spec's (C, H, W) input where its H x W differs from the images'."""
    x = (images.astype(np.float32) / 255.0)[:, None, :, :]
    if x.shape[2:] != tuple(input_shape[1:]):
        x = resize_bilinear(x, *input_shape[1:])
    return x
