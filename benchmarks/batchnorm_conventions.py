"""Measure each framework's own BatchNorm layer, configured with the neutral values as its
documentation says to, against d2l's ``batch_norm``: which eps it really uses, how it weights
the running statistics, and whether it updates the running variance with the biased or the
unbiased batch variance. This is what docs/backends.md's BatchNorm table rests on.

    python benchmarks/batchnorm_conventions.py          # every backend env in .tox/
    .tox/torch/bin/python benchmarks/batchnorm_conventions.py --backend torch

The framework's layer is used directly (not polylenet's adapter), on 4 images of 2x2 pixels
with 3 channels and on 4 rows of 5 features, so n/(n-1) is 16/15 and 4/3: large enough to tell
the biased variance from the unbiased one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

MOMENTUM, EPS = 0.9, 1e-5  # neutral: running = 0.9 * running + 0.1 * batch


def torch_layer(x):
    import torch
    norm = (torch.nn.BatchNorm2d if x.ndim == 4 else torch.nn.BatchNorm1d)(x.shape[1], eps=EPS, momentum=1 - MOMENTUM)
    y = norm.train()(torch.from_numpy(x)).detach().numpy()
    return y, norm.running_mean.numpy(), norm.running_var.numpy()


def tensorflow_layer(x):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    nhwc = x.transpose(0, 2, 3, 1) if x.ndim == 4 else x
    norm = keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPS)
    y = np.asarray(norm(nhwc, training=True))
    return (y.transpose(0, 3, 1, 2) if x.ndim == 4 else y), norm.moving_mean.numpy(), norm.moving_variance.numpy()


def mxnet_layer(x):
    import warnings
    warnings.simplefilter("ignore", DeprecationWarning)
    import mxnet as mx
    norm = mx.gluon.nn.BatchNorm(momentum=MOMENTUM, epsilon=EPS, in_channels=x.shape[1])
    norm.initialize()
    with mx.autograd.record():
        y = norm(mx.nd.array(x))
    y.backward()  # mxnet 1.9.1 updates the running statistics in the backward pass
    return y.asnumpy(), norm.running_mean.data().asnumpy(), norm.running_var.data().asnumpy()


def paddle_layer(x):
    import paddle
    norm = (paddle.nn.BatchNorm2D if x.ndim == 4 else paddle.nn.BatchNorm1D)(x.shape[1], momentum=MOMENTUM, epsilon=EPS)
    y = norm(paddle.to_tensor(x)).numpy()
    return y, norm._mean.numpy(), norm._variance.numpy()


def mindspore_layer(x):
    os.environ.setdefault("GLOG_v", "3")
    import mindspore as ms
    norm = (ms.nn.BatchNorm2d if x.ndim == 4 else ms.nn.BatchNorm1d)(x.shape[1], eps=EPS, momentum=MOMENTUM)
    norm.set_train(True)
    y = norm(ms.Tensor(x)).asnumpy()
    return y, norm.moving_mean.asnumpy(), norm.moving_variance.asnumpy()


def jax_layer(x):
    import jax.numpy as jnp
    from flax import nnx
    nhwc = x.transpose(0, 2, 3, 1) if x.ndim == 4 else x
    norm = nnx.BatchNorm(x.shape[1], momentum=MOMENTUM, epsilon=EPS, rngs=nnx.Rngs(0))
    y = np.asarray(norm(jnp.asarray(nhwc)))  # training mode: use_running_average=False
    return (y.transpose(0, 3, 1, 2) if x.ndim == 4 else y), np.asarray(norm.mean[...]), np.asarray(norm.var[...])


LAYERS = {"torch": torch_layer, "tensorflow": tensorflow_layer, "mxnet": mxnet_layer, "paddle": paddle_layer,
          "mindspore": mindspore_layer, "jax": jax_layer}


def measure(backend: str) -> None:
    rng = np.random.default_rng(0)
    for x in (rng.normal(0, 2, (4, 3, 2, 2)).astype(np.float32), rng.normal(0, 2, (4, 5)).astype(np.float32)):
        axes, shape = ((0, 2, 3), (1, -1, 1, 1)) if x.ndim == 4 else ((0,), (1, -1))
        # eps, from y = (x - mean) / sqrt(var + eps) on inputs whose variance is near eps
        small = (x * 1e-2).astype(np.float32)
        y = LAYERS[backend](small)[0]
        centred = small.astype(np.float64) - small.mean(axes, dtype=np.float64).reshape(shape)
        eps = np.median((centred / y) ** 2 - small.var(axes, dtype=np.float64).reshape(shape))
        _, running_mean, running_var = LAYERS[backend](x)
        x64 = x.astype(np.float64)
        mean, var = x64.mean(axes), x64.var(axes)
        n = x.size // x.shape[1]
        weight_new = np.median(running_mean / mean)  # running mean starts at 0
        ratio = np.median((running_var - (1 - weight_new)) / (weight_new * var))  # running var starts at 1
        kind = "biased" if abs(ratio - 1) < abs(ratio - n / (n - 1)) else "unbiased"
        print(f"{backend:<10} {'per channel' if x.ndim == 4 else 'per feature'}: eps {eps:.3g}, running = "
              f"{1 - weight_new:.3f} * running + {weight_new:.3f} * batch, running variance {kind} "
              f"(batch part / biased variance = {ratio:.4f}; unbiased would be {n / (n - 1):.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=sorted(LAYERS))
    parser.add_argument("--envs", default=".tox", help="folder of per-backend environments (default .tox)")
    args = parser.parse_args()
    if args.backend:
        measure(args.backend)
        return
    for backend in LAYERS:
        python = Path(args.envs) / backend / "bin" / "python"
        if not python.exists():
            print(f"{backend:<10} skipped: no {python} (tox -e {backend} --notest)")
            continue
        subprocess.run([str(python), __file__, "--backend", backend], check=False, stderr=subprocess.DEVNULL)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
