"""Benchmark: JAX's LeNet step with its first convolution (one input channel) as nnx.Conv, as the
adapter builds it, against the same convolution as image patches and a matmul; side by side in one
process, alternating, with the weights compared after the same steps.

XLA's CPU convolution of a one-channel image is its slowest kernel in LeNet's step; the patches
variant (``jax.lax.conv_general_dilated_patches`` then one (N·H·W, C·kh·kw) × (C·kh·kw, out) matmul)
computes the same sums in another order. Run it in the jax env:

    POLYLENET_DATA=../shared/data .tox/jax/bin/python benchmarks/jax_first_conv.py --rounds 3

Prints examples/sec per variant and round, their ratio, and the largest weight difference after
the timed steps (float32 summation order only).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from flax import nnx

import polylenet
from polylenet.registry import get_backend
from polylenet.training import book_lr, to_inputs

adapter = get_backend("jax")  # the adapter module, as polylenet.build uses it


class PatchConv(nnx.Conv):
    """nnx.Conv's parameters and result, computed as patches and one matmul."""

    def __call__(self, x):
        patches = jax.lax.conv_general_dilated_patches(x, self.kernel_size, self.strides, self.padding,
                                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
        kernel = self.kernel.get_value()  # (kh, kw, C, out); the patches' features are C-major
        y = patches @ kernel.transpose(2, 0, 1, 3).reshape(-1, kernel.shape[-1])
        return y + self.bias.get_value() if self.use_bias else y


def variant(spec, weights, patches: bool):
    model = adapter.build(spec)
    adapter.set_weights(model, spec, weights)
    if patches:
        conv = model.layers[0]
        replacement = PatchConv(conv.in_features, conv.out_features, conv.kernel_size, strides=conv.strides,
                                padding=conv.padding, use_bias=conv.use_bias, rngs=nnx.Rngs(0))
        replacement.kernel.set_value(conv.kernel.get_value())
        replacement.bias.set_value(conv.bias.get_value())
        model.layers[0] = replacement
    return model, adapter.trainer(model, spec, book_lr("lenet5"), compiled=True, loss="cross_entropy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per variant and round")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    spec = polylenet.load_spec("lenet5")
    weights = polylenet.init_weights(spec, 0)
    data = polylenet.load_data("fashion-mnist", args.data_dir)
    x_all, y_all = to_inputs(data.train_images), data.train_labels
    batches = [(x_all[i * args.batch:][:args.batch], y_all[i * args.batch:][:args.batch]) for i in range(args.steps)]
    runs = {name: variant(spec, weights, name == "patches") for name in ("nnx.Conv", "patches")}
    for _, step in runs.values():
        step(*batches[0], None)  # the compile, untimed
    figures = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (_, step) in runs.items():
            started = time.perf_counter()
            for x, y in batches:
                step(x, y, None)  # the loss comes back as a float: the step has finished
            figures[name].append(args.steps * args.batch / (time.perf_counter() - started))
    (conv_model, _), (patch_model, _) = runs.values()
    a, b = adapter.get_weights(conv_model, spec), adapter.get_weights(patch_model, spec)
    difference = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    print(f"jax {jax.__version__}, lenet5, batch {args.batch}, {args.steps} steps per round, "
          f"{jax.device_count()} {jax.devices()[0].platform} device(s)")
    for name, values in figures.items():
        print(f"{name:>9}: " + ", ".join(f"{v:,.0f}" for v in values) + f" examples/s (best {max(values):,.0f})")
    print(f"patches / nnx.Conv: {max(figures['patches']) / max(figures['nnx.Conv']):.2f}x (best round each); "
          f"largest weight difference after {1 + args.rounds * args.steps} steps each: {difference:.2e}")


if __name__ == "__main__":
    main()
