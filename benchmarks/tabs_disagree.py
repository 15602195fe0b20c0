"""Where d2l's own tabs compute different functions: the PyTorch tab pads explicitly
(``nn.Conv2d(..., kernel_size=3, padding=1, stride=2)``), the TensorFlow tab asks Keras for
``padding='same'``, and the two agree on the output shape but not always on the windows: "same"
puts an odd total pad's extra row/column at the bottom/right, and on an even input at stride 2
the total is odd.

Each pair is two polylenet specs built from the same neutral weights (only the padding differs)
and run on the same images:

* the "Padding and Stride" section's 3x3 stride-2 convolution;
* ResNet's stem max-pool (``nn.MaxPool2d(kernel_size=3, stride=2, padding=1)`` against
  ``MaxPool2D(pool_size=3, strides=2, padding='same')``);
* ResNet's whole stem: a 7x7 stride-2 convolution with 64 channels, batchnorm, ReLU and that
  max-pool.

on 28x28 Fashion-MNIST images (``$POLYLENET_DATA``, else seeded random ones) and the same images
cropped to 27x27. Then AlexNet: d2l's PyTorch/Paddle tabs pad its first convolution by 1, its
MXNet/TensorFlow tabs do not (both 54x54): ``alexnet`` against ``alexnet-tf-tab`` on the same
weights and the same images resized to 224x224 (the first ``--alexnet-images``). Last, ResNet-18:
the PyTorch tab's ``padding=1`` against the TensorFlow tab's ``padding='same'`` in the stem, the
max-pool and every residual body (``resnet18`` against ``resnet18-tf-tab``) at 96x96 (the first
``--resnet-images``): at stride 2 "same" pads (0, 1), so the strided 3x3 body reads one pixel
down and right of where the PyTorch tab's does, while the 1x1 shortcut beside it reads the same.

    .tox/core/bin/python benchmarks/tabs_disagree.py [--backends numpy,onnxruntime] [--images 256]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import polylenet
from polylenet import activation, batchnorm, conv2d, flatten, pool2d

# name, the PyTorch tab's layers, the TensorFlow tab's
PAIRS = [
    ("conv 3x3 s2 (Padding and Stride)",
     [conv2d(1, 3, stride=2, padding=1)], [conv2d(1, 3, stride=2, padding="same")]),
    ("max-pool 3 s2 (ResNet stem)",
     [pool2d("max", 3, 2, padding=1)], [pool2d("max", 3, 2, padding="same")]),
    ("ResNet stem: conv 7x7 s2, BN, ReLU, max-pool 3 s2",
     [conv2d(64, 7, stride=2, padding=3), batchnorm(), activation("relu"), pool2d("max", 3, 2, padding=1)],
     [conv2d(64, 7, stride=2, padding="same"), batchnorm(), activation("relu"), pool2d("max", 3, 2, padding="same")]),
]
DIFFER = 1e-6  # |difference| above this counts as a different output value


def chapter_spec(name: str, layers: list, size: int) -> polylenet.Spec:
    """``layers`` on a (1, size, size) input, ending in a flatten of all their values."""
    count = polylenet.Spec("count", (*layers, flatten(), polylenet.dense(1)), input_shape=(1, size, size),
                           num_classes=1).table[-2][-1][1]
    return polylenet.Spec(name, (*layers, flatten()), input_shape=(1, size, size), num_classes=count)


def images(count: int) -> tuple[np.ndarray, str]:
    if os.environ.get("POLYLENET_DATA"):
        data = polylenet.load_data("fashion-mnist", allow_download=False)
        return data.test_images[:count, None].astype(np.float32) / 255, f"the first {count} Fashion-MNIST test images"
    rng = np.random.default_rng(0)
    return rng.random((count, 1, 28, 28), dtype=np.float32), f"{count} seeded random images (set POLYLENET_DATA)"


def pads_of(spec: polylenet.Spec) -> str:
    """The resolved pads of the spec's padded layers, ((top, bottom), (left, right)) each."""
    return " ".join(str(layer.pads).replace(" ", "") for layer in spec.layers if layer.type in ("conv2d", "pool2d"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="numpy", help="comma-separated, or 'all' installed here")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--alexnet-images", type=int, default=64, help="0 to skip AlexNet")
    parser.add_argument("--resnet-images", type=int, default=64, help="0 to skip ResNet-18")
    args = parser.parse_args(argv)
    backends = polylenet.available_backends() if args.backends == "all" else args.backends.split(",")
    full, source = images(args.images)
    print(f"inputs: {source}; 27x27 = the same images without their last row and column; "
          f"'differ' = |difference| > {DIFFER:g}\n")
    header = ("| layer | input | PyTorch tab: pads -> output | TensorFlow tab ('same'): pads -> output "
              "| backend | max abs difference | outputs that differ |")
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for name, torch_layers, tf_layers in PAIRS:
        for size in (28, 27):
            x = full[:, :, :size, :size]
            torch_tab, tf_tab = chapter_spec("torch-tab", torch_layers, size), chapter_spec("tf-tab", tf_layers, size)
            weights = polylenet.init_weights(torch_tab, seed=0)  # the same arrays fit both: padding has none
            shapes = [spec.table[-2][-1][1:] for spec in (torch_tab, tf_tab)]
            for backend in backends:
                a = polylenet.forward(polylenet.build(torch_tab, backend=backend, weights=weights), x)
                b = polylenet.forward(polylenet.build(tf_tab, backend=backend, weights=weights), x)
                diff = np.abs(a.astype(np.float64) - b) if a.shape == b.shape else None
                print(f"| {name} | {size}x{size} | {pads_of(torch_tab)} -> {'x'.join(map(str, shapes[0]))} "
                      f"| {pads_of(tf_tab)} -> {'x'.join(map(str, shapes[1]))} | {backend} "
                      f"| {'shapes differ' if diff is None else f'{diff.max():.3g}'} "
                      f"| {'-' if diff is None else f'{np.mean(diff > DIFFER):.1%}'} |")
    if args.alexnet_images:
        alexnet_tabs(full[:args.alexnet_images], backends)
    if args.resnet_images:
        print(f"\nResNet-18 on {args.resnet_images} of those images resized to 96x96, init_weights(seed 0):\n")
        print("| backend | block | max abs difference | outputs that differ |")
        print("| --- | --- | --- | --- |")
        for backend in backends:
            figures = resnet_tabs(full[:args.resnet_images], backend)
            for block, (largest, share) in figures["blocks"].items():
                print(f"| {backend} | {block} | {largest:.3g} | {share:.1%} |")
            print(f"| {backend} | logits | {figures['logits']:.3g} ({figures['logits_relative']:.1%} of the largest) "
                  f"| same prediction: {figures['same_prediction']:.1%} |")
    return 0


def resnet_tabs(x28: np.ndarray, backend: str = "numpy") -> dict:
    """``resnet18`` against ``resnet18-tf-tab`` on the same weights and images (resized to
    96x96): per top-level block the largest |difference| and the share of outputs that differ,
    the logits' largest difference (absolute and relative to the largest logit), and the share of
    images both tabs predict alike."""
    from polylenet.resize import resize_bilinear

    x = resize_bilinear(x28, 96, 96)
    torch_tab, tf_tab = polylenet.load_spec("resnet18"), polylenet.load_spec("resnet18-tf-tab")
    weights = polylenet.init_weights(torch_tab, seed=0)  # the same arrays fit both: padding has none
    a = dict(polylenet.layer_outputs(polylenet.build(torch_tab, backend=backend, weights=weights), x))
    b = dict(polylenet.layer_outputs(polylenet.build(tf_tab, backend=backend, weights=weights), x))
    blocks = {}
    for name in torch_tab.layer_names():
        diff = np.abs(a[name].astype(np.float64) - b[name])
        blocks[name] = (float(diff.max()), float(np.mean(diff > DIFFER)))
    logits = float(np.abs(a["dense1"] - b["dense1"]).max())
    return {"blocks": blocks, "logits": logits, "logits_relative": logits / float(np.abs(a["dense1"]).max()),
            "same_prediction": float(np.mean(a["dense1"].argmax(1) == b["dense1"].argmax(1)))}


def alexnet_tabs(x28: np.ndarray, backends: list[str]) -> None:
    from polylenet.resize import resize_bilinear

    x = resize_bilinear(x28, 224, 224)
    torch_tab, tf_tab = polylenet.load_spec("alexnet"), polylenet.load_spec("alexnet-tf-tab")
    weights = polylenet.init_weights(torch_tab, seed=0)  # the same arrays fit both
    print(f"\nAlexNet on {len(x)} of those images resized to 224x224, init_weights(seed 0):\n")
    print("| backend | conv1: max abs difference | outputs that differ | logits: max abs difference "
          "| relative to the largest logit | same prediction |")
    print("| --- | --- | --- | --- | --- | --- |")
    for backend in backends:
        a = dict(polylenet.layer_outputs(polylenet.build(torch_tab, backend=backend, weights=weights), x))
        b = dict(polylenet.layer_outputs(polylenet.build(tf_tab, backend=backend, weights=weights), x))
        conv, logits = np.abs(a["conv1"] - b["conv1"]), np.abs(a["dense3"] - b["dense3"])
        print(f"| {backend} | {conv.max():.3g} | {np.mean(conv > DIFFER):.1%} | {logits.max():.3g} "
              f"| {logits.max() / np.abs(a['dense3']).max():.1%} "
              f"| {np.mean(a['dense3'].argmax(1) == b['dense3'].argmax(1)):.1%} |")


if __name__ == "__main__":
    sys.exit(main())
