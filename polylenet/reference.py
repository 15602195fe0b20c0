"""The NumPy reference interpreter: forward, backward and SGD, the oracle for every backend.

Written for reading, not speed. Activations are NCHW; it computes in float64 and returns
float32, so the oracle's own rounding error stays far below the conformance tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from polylenet.errors import ConfigError
from polylenet.layers import (
    Activation,
    BatchNorm,
    Block,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Pads,
    Pair,
    Pool2D,
    Sequential,
    Shape,
    node_names,
    pool_output_size,
    unsupported_layer,
)
from polylenet.spec import Spec
from polylenet.weights import Weights

# ---- one forward and one backward function per layer kind ---------------------------------


def _windows(x: np.ndarray, kernel: Pair, stride: Pair) -> np.ndarray:
    """(N, C, H, W) -> (N, C, OH, OW, kh, kw) views of every window."""
    return sliding_window_view(x, kernel, axis=(2, 3))[:, :, ::stride[0], ::stride[1]]


def _col2im(part: Callable[[int, int], np.ndarray], padded_shape: Shape, kernel: Pair, stride: Pair,
            out_hw: Pair) -> np.ndarray:
    """The adjoint of :func:`_windows`: sum ``part(i, j)`` (N, C, OH, OW), the gradient reaching
    each window's element (i, j), into an array of ``padded_shape``."""
    dxp = np.zeros(padded_shape)
    (sh, sw), (oh, ow) = stride, out_hw
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            dxp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += part(i, j)
    return dxp


def _unpad(xp: np.ndarray, x_shape: Shape, pads: Pads) -> np.ndarray:
    (top, _), (left, _) = pads
    return xp[:, :, top:top + x_shape[2], left:left + x_shape[3]]


def _pad(x: np.ndarray, pads: Pads, value: float = 0.0) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), *pads), constant_values=value)


def conv_forward(x, w, b, stride: Pair, pads: Pads):
    """Cross-correlation of NCHW ``x`` with ``w`` (out, in, kh, kw); ``b`` None for no bias."""
    cols = _windows(_pad(x, pads), w.shape[2:], stride)
    y = np.einsum("nchwij,ocij->nohw", cols, w, optimize=True)
    if b is not None:
        y = y + b[None, :, None, None]
    return y, (x.shape, cols, w, stride, pads, b is not None)


def conv_backward(dy, cache):
    x_shape, cols, w, stride, pads, has_bias = cache
    grads = {"weight": np.einsum("nohw,nchwij->ocij", dy, cols, optimize=True)}
    if has_bias:
        grads["bias"] = dy.sum(axis=(0, 2, 3))
    padded = (*x_shape[:2], x_shape[2] + sum(pads[0]), x_shape[3] + sum(pads[1]))
    dxp = _col2im(lambda i, j: np.einsum("nohw,oc->nchw", dy, w[:, :, i, j], optimize=True),
                  padded, w.shape[2:], stride, dy.shape[2:])
    return _unpad(dxp, x_shape, pads), grads


def _pool_pads(x_shape: Shape, layer: Pool2D) -> tuple[Pads, Pair]:
    """The explicit pads plus ceil_mode's overhang at the bottom/right, and the output size."""
    out, pads = [], []
    for size, p, k, s in zip(x_shape[2:], layer.pads, layer.size_hw, layer.stride_hw):
        o = pool_output_size(size, p, k, s, layer.ceil_mode)
        out.append(o)
        pads.append((p[0], max(p[1], (o - 1) * s + k - size - p[0])))
    return tuple(pads), tuple(out)


def _avg_counts(size: int, pads: Pair, kernel: int, stride: int, out: int, include_pad: bool) -> np.ndarray:
    """Per output position along one axis, how many positions its window divides by: the window
    [start, start + k) in padded coordinates, cut at the explicit bottom pad (ceil_mode's overhang
    never counts); with ``include_pad`` the explicit pads count, without it only the input does."""
    start = np.arange(out) * stride
    if include_pad:
        return np.minimum(start + kernel, size + sum(pads)) - start
    return np.minimum(start + kernel, pads[0] + size) - np.maximum(start, pads[0])


def pool_forward(x, layer: Pool2D):
    """Max or average pooling of NCHW ``x`` as :class:`~polylenet.layers.Pool2D` states it.

    Max pads with -inf, so neither a pad nor ceil_mode's overhang ever wins; its gradient goes
    to the first maximum of each window in row-major order (ties: the top-left one), as the
    frameworks do. Average divides each window's sum by :func:`_avg_counts` along both axes."""
    kernel, stride = layer.size_hw, layer.stride_hw
    pads, (oh, ow) = _pool_pads(x.shape, layer)
    if layer.kind == "max":
        win = _windows(_pad(x, pads, -np.inf), kernel, stride)[:, :, :oh, :ow]
        flat = win.reshape(*win.shape[:4], -1)
        argmax = flat.argmax(axis=-1)
        y = np.take_along_axis(flat, argmax[..., None], -1)[..., 0]
        return y, (x.shape, layer, pads, argmax)
    win = _windows(_pad(x, pads), kernel, stride)[:, :, :oh, :ow]
    counts = [_avg_counts(size, p, k, s, o, layer.count_include_pad)
              for size, p, k, s, o in zip(x.shape[2:], layer.pads, kernel, stride, (oh, ow))]
    divisor = np.outer(*counts)
    return win.sum(axis=(4, 5)) / divisor, (x.shape, layer, pads, divisor)


def pool_backward(dy, cache):
    x_shape, layer, pads, extra = cache
    kernel, stride = layer.size_hw, layer.stride_hw
    if layer.kind == "max":
        def part(i, j):
            return dy * (extra == i * kernel[1] + j)
    else:
        def part(i, j):
            return dy / extra
    padded = (*x_shape[:2], x_shape[2] + sum(pads[0]), x_shape[3] + sum(pads[1]))
    return _unpad(_col2im(part, padded, kernel, stride, dy.shape[2:]), x_shape, pads), {}


ACTIVATION_FNS: dict[str, tuple[Callable, Callable]] = {
    # fn(x) and its derivative written in terms of the output y
    "sigmoid": (lambda x: 1.0 / (1.0 + np.exp(-x)), lambda y: y * (1.0 - y)),
    "relu": (lambda x: np.maximum(x, 0.0), lambda y: (y > 0).astype(y.dtype)),
    "tanh": (np.tanh, lambda y: 1.0 - y * y),
}


def activation_forward(x, fn):
    y = ACTIVATION_FNS[fn][0](x)
    return y, (fn, y)


def activation_backward(dy, cache):
    fn, y = cache
    return dy * ACTIVATION_FNS[fn][1](y), {}


def dense_forward(x, w, b):
    return x @ w.T + b, (x, w)


def dense_backward(dy, cache):
    x, w = cache
    return dy @ w, {"weight": dy.T @ x, "bias": dy.sum(axis=0)}


def batchnorm_forward(x, gamma, beta, mean, var, eps, training):
    """d2l's ``batch_norm``: per channel over (N, H, W) for NCHW, per feature over N for (N, F).

    Training mode normalizes with the batch mean and biased variance (returned in the cache for
    the running-statistics update); evaluation mode with the given running ``mean`` and ``var``.
    """
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
    return gamma.reshape(shape) * xhat + beta.reshape(shape), (xhat, gamma, inv_std, axes, shape, training, mean, var)


def batchnorm_backward(dy, cache):
    xhat, gamma, inv_std, axes, shape, training, _, _ = cache
    grads = {"weight": (dy * xhat).sum(axis=axes), "bias": dy.sum(axis=axes)}
    dxhat = dy * gamma.reshape(shape)
    if not training:  # the running statistics are constants
        return dxhat * inv_std.reshape(shape), grads
    m = dy.size // dy.shape[1]  # values per channel/feature
    dx = (inv_std.reshape(shape) / m) * (m * dxhat - dxhat.sum(axis=axes, keepdims=True)
                                        - xhat * (dxhat * xhat).sum(axis=axes, keepdims=True))
    return dx, grads


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy over the batch and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = logits.shape[0]
    loss = -log_probs[np.arange(n), labels].mean()
    dlogits = np.exp(log_probs)
    dlogits[np.arange(n), labels] -= 1.0
    return float(loss), dlogits / n


def squared_error(output: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """d2l's conv-layer section: the sum over every element of ``(output - targets) ** 2`` and
    its gradient with respect to the output."""
    diff = output - targets
    return float((diff * diff).sum()), 2.0 * diff


# loss name -> fn(output, y) -> (loss, d loss / d output); the names of polylenet.adapter.LOSSES
LOSS_FNS: dict[str, Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]] = {
    "cross_entropy": cross_entropy,
    "squared_error": squared_error,
}


def loss_fn(loss: str) -> Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]:
    try:
        return LOSS_FNS[loss]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown loss {loss!r}; use one of {list(LOSS_FNS)}") from None


def dropout_forward(x, keep_scale):
    """Inverted dropout with a given mask: 0 where a unit drops, 1 / (1 - p) where it is kept."""
    return x * keep_scale, keep_scale


def global_avg_pool_forward(x):
    return x.mean(axis=(2, 3), keepdims=True), x.shape


def global_avg_pool_backward(dy, x_shape):
    return np.broadcast_to(dy / (x_shape[2] * x_shape[3]), x_shape).copy(), {}


# ---- one translation per layer type ------------------------------------------------------
# forward(model, name, layer, h, mode) -> (output, cache);
# backward(model, name, layer, dy, cache, mode) -> (d input, {param: gradient}).


@dataclass(frozen=True)
class Mode:
    """How a pass runs: ``training`` (batchnorm's batch statistics, dropout on) and, in
    training, the dropout masks to apply (None: the model draws its own)."""

    training: bool = False
    masks: Optional[dict] = None


def _conv(model, name, layer, h, mode):
    return conv_forward(h, model._array(name, "weight"), model._array(name, "bias") if layer.bias else None,
                        layer.stride_hw, layer.pads)


def _batchnorm(model, name, layer, h, mode):
    gamma, beta, mean, var = (model._array(name, a) for a in ("weight", "bias", "running_mean", "running_var"))
    return batchnorm_forward(h, gamma, beta, mean, var, layer.eps, mode.training)


def _batchnorm_backward(model, name, layer, dy, cache, mode):
    if mode.training:
        model._update_running(name, layer.momentum, *cache[-2:])
    return batchnorm_backward(dy, cache)


def _dropout(model, name, layer, h, mode):
    if not mode.training:
        return h, None
    if mode.masks is not None:
        return dropout_forward(h, mode.masks[name].astype(np.float64))
    # the NumPy backend's own dropout: a draw from the model's generator
    keep = model.rng.random(h.shape) >= layer.p
    return dropout_forward(h, keep / (1.0 - layer.p))


def _dropout_backward(model, name, layer, dy, cache, mode):
    return (dy if cache is None else dy * cache), {}


LAYERS: dict[type, tuple[Callable, Callable]] = {
    Conv2D: (_conv, lambda model, name, layer, dy, cache, mode: conv_backward(dy, cache)),
    Pool2D: (lambda model, name, layer, h, mode: pool_forward(h, layer),
             lambda model, name, layer, dy, cache, mode: pool_backward(dy, cache)),
    Activation: (lambda model, name, layer, h, mode: activation_forward(h, layer.fn),
                 lambda model, name, layer, dy, cache, mode: activation_backward(dy, cache)),
    # C*H*W order, the neutral flatten
    Flatten: (lambda model, name, layer, h, mode: (h.reshape(h.shape[0], -1), h.shape),
              lambda model, name, layer, dy, cache, mode: (dy.reshape(cache), {})),
    Dense: (lambda model, name, layer, h, mode: dense_forward(h, model._array(name, "weight"),
                                                              model._array(name, "bias")),
            lambda model, name, layer, dy, cache, mode: dense_backward(dy, cache)),
    BatchNorm: (_batchnorm, _batchnorm_backward),
    Dropout: (_dropout, _dropout_backward),
    GlobalAvgPool: (lambda model, name, layer, h, mode: global_avg_pool_forward(h),
                    lambda model, name, layer, dy, cache, mode: global_avg_pool_backward(dy, cache)),
}


# how a block joins its branches' outputs (NCHW: the channel axis is 1)
MERGES: dict[str, Callable[[list], np.ndarray]] = {
    "concat": lambda outs: np.concatenate(outs, axis=1),
    "add": lambda outs: sum(outs[1:], outs[0]),
}


# ---- the network -------------------------------------------------------------------------


class NumpyLeNet:
    """A spec interpreted in NumPy: ``model(x)`` gives logits; ``params`` holds neutral weights.

    Each layer runs through its type's (forward, backward) pair in :data:`LAYERS`; a type
    missing there raises :func:`~polylenet.layers.unsupported_layer`. A group runs its layers in
    order; a block runs each branch on its input, joins them (:data:`MERGES`) and runs ``after``;
    backward splits a concatenation's gradient by channels, gives an addition's to every branch,
    and sums what the branches send back to the block's input."""

    def __init__(self, spec: Spec, params: Weights, seed: int = 0):
        for path, layer, _, _ in spec.leaves:
            self._translation(path, layer)
        self.spec = spec
        self.params = params
        self.rng = np.random.default_rng(seed)  # its own dropout's draws, where no masks are given

    def __repr__(self) -> str:
        return f"NumpyLeNet({self.spec.name!r}, {len(self.spec.leaves)} layers)"

    @staticmethod
    def _translation(name: str, layer: object) -> tuple[Callable, Callable]:
        try:
            return LAYERS[type(layer)]
        except KeyError:
            raise unsupported_layer("numpy", name, layer) from None

    def forward_layers(self, x: np.ndarray, training: bool = False,
                       masks: Optional[dict] = None) -> tuple[np.ndarray, list]:
        """Run every layer; return the output and, per node in :attr:`Spec.outputs` order (a
        group or block after what is inside it), (path, node, output, cache).

        ``training`` selects batchnorm's mode (batch statistics instead of running ones) and
        turns dropout on, with ``masks`` (per dropout layer, see :mod:`polylenet.masks`) or the
        model's own draws; the running statistics are updated by :meth:`backward`, not here."""
        flat: list = []
        h, _ = self._forward(self.spec.layers, "", np.asarray(x, np.float64), Mode(training, masks), flat)
        return h, flat

    def _forward(self, items, prefix: str, h, mode: Mode, flat: list, counts: Optional[dict] = None):
        """(output, this level's [(path, node, output, cache)]); ``flat`` gets every node."""
        level = []
        for name, node in zip(node_names(items, counts), items):
            path = prefix + name
            if isinstance(node, Sequential):
                h, cache = self._forward(node.layers, path + ".", h, mode, flat)
            elif isinstance(node, Block):
                outs, branches = [], []
                for branch_name, branch in zip(node.branch_names(), node.branches):
                    out, trace = self._forward(branch, f"{path}.{branch_name}.", h, mode, flat)
                    outs.append(out)
                    branches.append(trace)
                merged = MERGES[node.merge](outs)
                h, after = self._forward(node.after, path + ".", merged, mode, flat, {"branch": len(outs)})
                cache = (branches, after, [out.shape[1] for out in outs])
            else:
                h, cache = self._translation(path, node)[0](self, path, node, h, mode)
            level.append((path, node, h, cache))
            flat.append(level[-1])
        return h, level

    def _backward(self, level: list, grad, mode: Mode, grads: Weights):
        for path, node, _, cache in reversed(level):
            if isinstance(node, Sequential):
                grad = self._backward(cache, grad, mode, grads)
            elif isinstance(node, Block):
                branches, after, channels = cache
                grad = self._backward(after, grad, mode, grads)
                if node.merge == "concat":  # each branch gets its channels' part
                    parts = np.split(grad, np.cumsum(channels)[:-1], axis=1)
                else:  # a sum passes its gradient to every term
                    parts = [grad] * len(branches)
                grad = sum(self._backward(trace, part, mode, grads) for trace, part in zip(branches, parts))
            else:
                grad, g = self._translation(path, node)[1](self, path, node, grad, cache, mode)
                for key, array in g.items():
                    grads[f"{path}.{key}"] = array.astype(np.float32)
        return grad

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward_layers(x)[0].astype(np.float32)

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray, loss: str = "cross_entropy",
                       masks: Optional[dict] = None) -> tuple[float, Weights]:
        """The batch's loss (:data:`LOSS_FNS`: mean cross-entropy against int labels, or the
        summed squared error against targets of the output's shape) and its gradients, keyed
        like the weights."""
        value, grads, _ = self.backward(x, y, loss=loss, masks=masks)
        return value, grads

    def backward(self, x: np.ndarray, y: np.ndarray, training: bool = True,
                 loss: str = "cross_entropy", masks: Optional[dict] = None) -> tuple[float, Weights, np.ndarray]:
        """Loss, gradients and the output they came from. In training mode (the default, as in
        every framework's training step) batchnorm uses the batch statistics and its running
        statistics are updated in ``params``, and dropout applies ``masks`` (or the model's own
        draws); ``training=False`` differentiates the evaluation mode."""
        fn = loss_fn(loss)
        mode = Mode(training, masks)
        output, top = self._forward(self.spec.layers, "", np.asarray(x, np.float64), mode, [])
        value, grad = fn(output, np.asarray(y))
        grads: Weights = {}
        self._backward(top, grad, mode, grads)
        return value, grads, output

    def _update_running(self, name: str, momentum: float, batch_mean, batch_var) -> None:
        """``running = momentum * running + (1 - momentum) * batch``, with the biased variance."""
        for attr, batch in (("running_mean", batch_mean), ("running_var", batch_var)):
            key = f"{name}.{attr}"
            self.params[key] = (momentum * self.params[key].astype(np.float64)
                                + (1.0 - momentum) * batch).astype(np.float32)

    def sgd_step(self, x: np.ndarray, y: np.ndarray, lr: float, loss: str = "cross_entropy",
                 masks: Optional[dict] = None) -> tuple[float, int]:
        """One minibatch SGD step (``w -= lr * grad``, in float32 like the frameworks).

        Returns the batch's loss and how many of its examples were classified right (0 for
        ``squared_error``: its targets are not labels)."""
        value, grads, output = self.backward(x, y, loss=loss, masks=masks)
        for key, g in grads.items():
            self.params[key] = self.params[key] - np.float32(lr) * g
        correct = int((output.argmax(axis=1) == y).sum()) if loss == "cross_entropy" else 0
        return value, correct

    def _array(self, name: str, attr: str) -> np.ndarray:
        return self.params[f"{name}.{attr}"].astype(np.float64)
