"""How far each d2l tab's own 28x28 -> 224x224 resize is from polylenet's one NumPy resize.

d2l's modern-CNN chapter trains on Fashion-MNIST resized to 224x224 by
``load_data_fashion_mnist(batch_size, resize=224)``, and each tab resizes with its own
framework's image op. polylenet instead resizes once, in NumPy, for every backend
(``polylenet.resize.to_model_inputs``: bilinear, half-pixel centres, no antialias, float64 on
[0, 1] pixels, rounded once to float32). This script resizes N Fashion-MNIST test images with
the resize of each tab whose framework this environment has, called as the tab calls it, and
prints the max and mean absolute difference from polylenet's (pixels in [0, 1]). Run it once per
environment:

    .tox/tensorflow/bin/python benchmarks/resize_conventions.py          # the tabs this env can run
    .tox/core/bin/python benchmarks/resize_conventions.py --tabs pytorch  # Pillow, without torch
    POLYLENET_DATA=/work/shared/data .tox/mxnet/bin/python benchmarks/resize_conventions.py -n 64

The tabs' calls (d2l-zh's ``load_data_fashion_mnist``; d2l-en's ``FashionMNIST`` for JAX):

* pytorch: ``transforms.Resize(224)`` on the dataset's PIL 'L' image, then ``ToTensor()``.
  torchvision's Resize on a PIL image is ``PIL.Image.resize(size, BILINEAR)`` on the uint8
  image; that is what runs here (torchvision itself where installed), so it needs Pillow, not
  torch: ``--tabs pytorch`` runs it in any env with Pillow.
* tensorflow: ``tf.image.resize_with_pad(X, 224, 224)`` on ``expand_dims(X, 3) / 255`` (float64).
* mxnet: ``gluon.data.vision.transforms.Resize(224)`` on the dataset's uint8 HWC NDArray, then
  ``ToTensor()``.
* paddle: ``paddle.vision.transforms.Resize(224)`` then ``ToTensor()``, on what
  ``paddle.vision.datasets.FashionMNIST`` yields: a PIL 'L' image under the default image backend
  'pil' (then Resize is Pillow's), a uint8 array under 'cv2' (then it is OpenCV's).
* mindspore: ``mindspore.dataset.vision.Resize(224)`` on the uint8 HWC image, then
  ``Rescale(1/255, 0)`` and ``HWC2CHW()``.
* jax (d2l-en): the TensorFlow pipeline's ``tf.image.resize_with_pad``; skipped where TensorFlow
  is not importable.

Rows marked "(not the tab's call)" are the same framework's other resize path, for reference.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's polylenet

SIZE = 224
TABS = ("pytorch", "tensorflow", "mxnet", "paddle", "mindspore", "jax")
FRAMEWORK = {"pytorch": "torch", "tensorflow": "tensorflow", "mxnet": "mxnet", "paddle": "paddle",
             "mindspore": "mindspore", "jax": "jax"}


class Missing(Exception):
    """The framework function the tab calls is not in this environment."""


def need(module: str):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except Exception as exc:  # ImportError, or a framework that fails while importing
        raise Missing(f"{module} not importable ({type(exc).__name__})") from None


def version(module: str) -> str:
    try:
        return f"{module} {need(module).__version__}"
    except Missing:
        return f"{module} absent"


# Each function: uint8 (N, 28, 28) -> float (N, 224, 224) in [0, 1], as the tab makes its inputs.

def pil_bilinear(images):
    Image = need("PIL.Image")
    try:  # torchvision where installed: its Resize on a PIL image is this same PIL call
        transforms = need("torchvision.transforms")
        trans = transforms.Compose([transforms.Resize(SIZE), transforms.ToTensor()])
        return np.stack([trans(Image.fromarray(im, mode="L")).numpy()[0] for im in images])
    except Missing:
        bilinear = getattr(Image, "Resampling", Image).BILINEAR
        return np.stack([np.asarray(Image.fromarray(im, mode="L").resize((SIZE, SIZE), bilinear), np.float32) / 255.0
                         for im in images])


def torch_tensor(images):
    torch = need("torch")
    x = torch.from_numpy(images[:, None].astype(np.float32) / 255.0)
    return torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False,
                                           antialias=True).numpy()[:, 0]


def tf_resize_with_pad(images):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = need("tensorflow")
    X = tf.expand_dims(images, axis=3) / 255  # float64, as the tab's `process`
    return tf.image.resize_with_pad(X, SIZE, SIZE).numpy()[..., 0]


def tf_resize(images):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = need("tensorflow")
    return tf.image.resize(tf.expand_dims(images, axis=3) / 255, [SIZE, SIZE]).numpy()[..., 0]


def mxnet_resize(images):
    mx = need("mxnet")
    transforms = mx.gluon.data.vision.transforms
    trans = transforms.Compose([transforms.Resize(SIZE), transforms.ToTensor()])
    return np.stack([trans(mx.nd.array(im[:, :, None], dtype=np.uint8)).asnumpy()[0] for im in images])


def paddle_resize(images):
    paddle = need("paddle")
    T = paddle.vision.transforms
    trans = T.Compose([T.Resize(SIZE), T.ToTensor()])
    backend = paddle.vision.get_image_backend()  # what FashionMNIST(transform=...) hands the transform
    if backend == "pil":
        Image = need("PIL.Image")
        return np.stack([trans(Image.fromarray(im, mode="L")).numpy()[0] for im in images])
    need("cv2")
    return np.stack([np.asarray(trans(im)).squeeze() for im in images])


def paddle_cv2(images):
    paddle = need("paddle")
    need("cv2")
    T = paddle.vision.transforms
    return np.stack([np.asarray(T.Resize(SIZE)(im[:, :, None]), np.float32).squeeze() / 255.0 for im in images])


def mindspore_resize(images):
    os.environ.setdefault("GLOG_v", "3")
    need("mindspore")
    vision = need("mindspore.dataset.vision")
    resize, rescale, chw = vision.Resize(SIZE), vision.Rescale(1.0 / 255.0, 0), vision.HWC2CHW()
    return np.stack([np.asarray(chw(rescale(resize(im[:, :, None]))))[0] for im in images])


def jax_image_resize(images):
    jax = need("jax")
    x = images.astype(np.float32) / 255.0
    return np.asarray(jax.image.resize(x, (len(x), SIZE, SIZE), method="bilinear"))


# tab -> [(op as printed, function, the tab's own call?, the module that resizes)]
ROWS = {
    "pytorch": [("transforms.Resize(224) on PIL 'L' (PIL BILINEAR, uint8), ToTensor", pil_bilinear, True, "PIL"),
                ("F.interpolate bilinear, align_corners=False, antialias (torchvision, tensor input)",
                 torch_tensor, False, "torch")],
    "tensorflow": [("tf.image.resize_with_pad(X/255, 224, 224)", tf_resize_with_pad, True, "tensorflow"),
                   ("tf.image.resize(X/255, [224, 224])", tf_resize, False, "tensorflow")],
    "mxnet": [("gluon transforms.Resize(224) on uint8 HWC NDArray, ToTensor", mxnet_resize, True, "mxnet")],
    "paddle": [("paddle.vision transforms.Resize(224), ToTensor (image backend {backend})", paddle_resize, True,
                "paddle"),
               ("transforms.Resize(224) on a uint8 ndarray (cv2 backend)", paddle_cv2, False, "paddle")],
    "mindspore": [("dataset.vision.Resize(224) on uint8 HWC, Rescale(1/255), HWC2CHW", mindspore_resize, True,
                   "mindspore")],
    "jax": [("d2l-en: tf.image.resize_with_pad(X/255, 224, 224) (TensorFlow's)", tf_resize_with_pad, True,
             "tensorflow"),
            ("jax.image.resize bilinear on X/255", jax_image_resize, False, "jax")],
}


def here() -> list[str]:
    """The tabs whose framework this environment imports."""
    found = []
    for tab in TABS:
        try:
            need(FRAMEWORK[tab])
            found.append(tab)
        except Missing:
            pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=256, help="test images to resize (default 256)")
    parser.add_argument("--tabs", default="auto",
                        help=f"comma-separated, of {', '.join(TABS)}; default: the tabs whose framework imports here")
    parser.add_argument("--data-dir", default=None, help="default: $POLYLENET_DATA, as polylenet.load_data")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any framework imports: their logs are noise here
    os.environ.setdefault("GLOG_v", "3")

    import polylenet
    from polylenet.resize import to_model_inputs

    tabs = here() if args.tabs == "auto" else [t.strip() for t in args.tabs.split(",") if t.strip()]
    unknown = [t for t in tabs if t not in TABS]
    if unknown:
        sys.exit(f"resize_conventions: unknown tab(s) {unknown}; known: {', '.join(TABS)}")
    images = polylenet.load_data("fashion-mnist", args.data_dir).test_images[:args.n]
    reference = to_model_inputs(images, (1, SIZE, SIZE))[:, 0].astype(np.float64)
    print(f"{len(images)} Fashion-MNIST test images, 28x28 -> {SIZE}x{SIZE}, against polylenet.resize.to_model_inputs "
          f"(pixels in [0, 1]; 1/255 = {1 / 255:.5f}); Python {sys.version.split()[0]}, numpy {np.__version__}")
    if not tabs:
        print("no d2l tab's framework imports here; try --tabs pytorch (needs only Pillow)")
        return
    header = f"{'tab':<11} {'framework':<22} {'op as the tab calls it':<100} {'max |diff|':>10} {'mean |diff|':>11}"
    print(header + "\n" + "-" * len(header))
    for tab in tabs:
        for op, fn, own, module in ROWS[tab]:
            framework = version(module)
            if fn is paddle_resize:
                try:
                    op = op.format(backend=repr(need("paddle").vision.get_image_backend()))
                except Missing:
                    op = op.format(backend="?")
            label = op if own else f"{op} (not the tab's call)"
            try:
                out = np.asarray(fn(images), np.float64)
            except Missing as exc:
                print(f"{tab:<11} {framework:<22} {label:<100} skipped: {exc}")
                continue
            except Exception as exc:  # the function is there but fails: say so and go on
                print(f"{tab:<11} {framework:<22} {label:<100} failed: {type(exc).__name__}: {exc}"[:300])
                continue
            if out.shape != reference.shape:
                print(f"{tab:<11} {framework:<22} {label:<100} shape {out.shape}, expected {reference.shape}")
                continue
            diff = np.abs(out - reference)
            print(f"{tab:<11} {framework:<22} {label:<100} {diff.max():>10.3g} {diff.mean():>11.3g}")


if __name__ == "__main__":
    main()
