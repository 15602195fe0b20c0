"""The NumPy reference interpreter: forward, backward and SGD, the oracle for every backend.

Written for reading, not speed. Activations are NCHW; it computes in float64 and returns
float32, so the oracle's own rounding error stays far below the conformance tolerances.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from polylenet.layers import Activation, BatchNorm, Conv2D, Dense, Flatten, Pool2D, unsupported_layer
from polylenet.spec import Spec
from polylenet.weights import Weights

# ---- one forward and one backward function per layer kind ---------------------------------


def _windows(x: np.ndarray, size: int, stride: int) -> np.ndarray:
    """(N, C, H, W) -> (N, C, OH, OW, size, size) views of every window."""
    return sliding_window_view(x, (size, size), axis=(2, 3))[:, :, ::stride, ::stride]


def conv_forward(x, w, b, stride, padding):
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    cols = _windows(xp, w.shape[2], stride)
    y = np.einsum("nchwij,ocij->nohw", cols, w, optimize=True) + b[None, :, None, None]
    return y, (x.shape, cols, w, stride, padding)


def conv_backward(dy, cache):
    x_shape, cols, w, stride, padding = cache
    dw = np.einsum("nohw,nchwij->ocij", dy, cols, optimize=True)
    db = dy.sum(axis=(0, 2, 3))
    n, c, h, wd = x_shape
    dxp = np.zeros((n, c, h + 2 * padding, wd + 2 * padding))
    oh, ow = dy.shape[2:]
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            dxp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += np.einsum(
                "nohw,oc->nchw", dy, w[:, :, i, j], optimize=True)
    dx = dxp[:, :, padding:padding + h, padding:padding + wd]
    return dx, {"weight": dw, "bias": db}


def pool_forward(x, kind, size, stride):
    win = _windows(x, size, stride)
    flat = win.reshape(*win.shape[:4], size * size)
    if kind == "avg":
        return flat.mean(axis=-1), (x.shape, kind, size, stride, None)
    argmax = flat.argmax(axis=-1)  # the gradient goes to the first maximum, as in the frameworks
    return np.take_along_axis(flat, argmax[..., None], -1)[..., 0], (x.shape, kind, size, stride, argmax)


def pool_backward(dy, cache):
    x_shape, kind, size, stride, argmax = cache
    dx = np.zeros(x_shape)
    oh, ow = dy.shape[2:]
    for i in range(size):
        for j in range(size):
            share = dy / (size * size) if kind == "avg" else dy * (argmax == i * size + j)
            dx[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += share
    return dx, {}


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


# ---- the network -------------------------------------------------------------------------


class NumpyLeNet:
    """A spec interpreted in NumPy: ``model(x)`` gives logits; ``params`` holds neutral weights."""

    LAYERS = (Conv2D, Pool2D, Activation, Flatten, Dense, BatchNorm)  # what forward_layers interprets

    def __init__(self, spec: Spec, params: Weights):
        for name, layer in spec.named_layers():
            if not isinstance(layer, self.LAYERS):
                raise unsupported_layer("numpy", name, layer)
        self.spec = spec
        self.params = params

    def __repr__(self) -> str:
        return f"NumpyLeNet({self.spec.name!r}, {len(self.spec.layers)} layers)"

    def forward_layers(self, x: np.ndarray, training: bool = False) -> tuple[np.ndarray, list]:
        """Run every layer; return the output and, per layer, (name, layer, output, cache).

        ``training`` selects batchnorm's mode (batch statistics instead of running ones); the
        running statistics are updated by :meth:`backward`, not here."""
        trace = []
        h = np.asarray(x, np.float64)
        for name, layer in self.spec.named_layers():
            if isinstance(layer, Conv2D):
                w, b = self._param(name)
                h, cache = conv_forward(h, w, b, layer.stride, layer.padding)
            elif isinstance(layer, Pool2D):
                h, cache = pool_forward(h, layer.kind, layer.size, layer.stride)
            elif isinstance(layer, Activation):
                h, cache = activation_forward(h, layer.fn)
            elif isinstance(layer, Flatten):
                h, cache = h.reshape(h.shape[0], -1), h.shape  # C*H*W order, the neutral flatten
            elif isinstance(layer, Dense):
                w, b = self._param(name)
                h, cache = dense_forward(h, w, b)
            elif isinstance(layer, BatchNorm):
                gamma, beta, mean, var = (self.params[f"{name}.{a}"].astype(np.float64)
                                          for a in ("weight", "bias", "running_mean", "running_var"))
                h, cache = batchnorm_forward(h, gamma, beta, mean, var, layer.eps, training)
            else:
                raise unsupported_layer("numpy", name, layer)
            trace.append((name, layer, h, cache))
        return h, trace

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward_layers(x)[0].astype(np.float32)

    def loss_and_grads(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, Weights]:
        """Mean cross-entropy of one batch and its gradients, keyed like the weights."""
        loss, grads, _ = self.backward(x, labels)
        return loss, grads

    def backward(self, x: np.ndarray, labels: np.ndarray,
                 training: bool = True) -> tuple[float, Weights, np.ndarray]:
        """Loss, gradients and the logits they came from. In training mode (the default, as in
        every framework's training step) batchnorm uses the batch statistics and its running
        statistics are updated in ``params``; ``training=False`` differentiates the evaluation mode."""
        logits, trace = self.forward_layers(x, training=training)
        loss, grad = cross_entropy(logits, np.asarray(labels))
        grads: Weights = {}
        for name, layer, _, cache in reversed(trace):
            if isinstance(layer, Conv2D):
                grad, g = conv_backward(grad, cache)
            elif isinstance(layer, Pool2D):
                grad, g = pool_backward(grad, cache)
            elif isinstance(layer, Activation):
                grad, g = activation_backward(grad, cache)
            elif isinstance(layer, Flatten):
                grad, g = grad.reshape(cache), {}
            elif isinstance(layer, Dense):
                grad, g = dense_backward(grad, cache)
            elif isinstance(layer, BatchNorm):
                grad, g = batchnorm_backward(grad, cache)
                if training:
                    self._update_running(name, layer.momentum, *cache[-2:])
            for key, value in g.items():
                grads[f"{name}.{key}"] = value.astype(np.float32)
        return loss, grads, logits

    def _update_running(self, name: str, momentum: float, batch_mean, batch_var) -> None:
        """``running = momentum * running + (1 - momentum) * batch``, with the biased variance."""
        for attr, batch in (("running_mean", batch_mean), ("running_var", batch_var)):
            key = f"{name}.{attr}"
            self.params[key] = (momentum * self.params[key].astype(np.float64)
                                + (1.0 - momentum) * batch).astype(np.float32)

    def sgd_step(self, x: np.ndarray, labels: np.ndarray, lr: float) -> tuple[float, int]:
        """One minibatch SGD step (``w -= lr * grad``, in float32 like the frameworks).

        Returns the batch's mean loss and how many of its examples were classified right."""
        loss, grads, logits = self.backward(x, labels)
        for key, g in grads.items():
            self.params[key] = self.params[key] - np.float32(lr) * g
        return loss, int((logits.argmax(axis=1) == labels).sum())

    def _param(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return (self.params[f"{name}.weight"].astype(np.float64),
                self.params[f"{name}.bias"].astype(np.float64))
