"""What the network sees, the LeNet chapter's last exercise: chosen test images (a sweater and a
coat) and the feature maps of each conv layer, after its activation and after its pooling, from
one backend or from several side by side with the largest difference between them.

>>> from polylenet import init_weights, load_spec
>>> spec = load_spec("lenet5")
>>> images = np.zeros((1, 28, 28), np.uint8)
>>> maps = feature_maps("numpy", spec, init_weights(spec), images)
>>> [(name, out.shape) for name, out in maps.outputs.items()][:2]
[('conv1', (1, 6, 28, 28)), ('act1', (1, 6, 28, 28))]
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from polylenet.atomic import atomic_write
from polylenet.errors import OptionError
from polylenet.spec import Spec

# Fashion-MNIST's class 2 is "pullover"; the book's exercise says sweater
CLASS_ALIASES = {"sweater": "pullover", "top": "t-shirt", "tshirt": "t-shirt", "boot": "ankle boot"}
DEFAULT_IMAGES = "sweater,coat"


@dataclass(frozen=True)
class Chosen:
    index: int  # in the test set
    label: str  # its class name


@dataclass(frozen=True)
class Maps:
    """One backend's feature maps: ``outputs[layer]`` (N, C, H, W) for the chosen images."""

    backend: str
    version: str
    weights: str  # where the weights came from
    outputs: Mapping[str, np.ndarray]


def choose_images(labels: np.ndarray, classes: Sequence[str], images: Optional[str] = None,
                  index: Optional[str] = None) -> list[Chosen]:
    """The test images to show: by class name, the first test image of each class
    (``"sweater,coat"``), or by test-set index (``"0,1"``).

    >>> choose_images(np.array([9, 2, 1, 2, 4]), ["t-shirt", "trouser", "pullover", "dress", "coat"] + ["?"] * 5)
    [Chosen(index=1, label='pullover'), Chosen(index=4, label='coat')]
    """
    if images is not None and index is not None:
        raise OptionError("give --images or --index, not both")
    if index is not None:
        try:
            picked = [int(i) for i in index.split(",") if i.strip()]
        except ValueError:
            raise OptionError(f"--index takes test-set indices, e.g. --index 0,1; got {index!r}") from None
        bad = [i for i in picked if not 0 <= i < len(labels)]
        if bad or not picked:
            raise OptionError(f"--index {index!r}: the test set's indices are 0 to {len(labels) - 1}")
        return [Chosen(i, classes[int(labels[i])]) for i in picked]
    chosen = []
    for name in (images or DEFAULT_IMAGES).split(","):
        wanted = CLASS_ALIASES.get(name.strip().lower(), name.strip().lower())
        if wanted not in classes:
            raise OptionError(f"--images: no class {name.strip()!r}; the classes are {', '.join(classes)} "
                             f"(and {', '.join(CLASS_ALIASES)})")
        first = np.flatnonzero(labels == classes.index(wanted))
        if not len(first):
            raise OptionError(f"--images: the test set holds no {wanted}")
        chosen.append(Chosen(int(first[0]), wanted))
    return chosen


def map_layers(spec: Spec, layers: Optional[str] = None) -> list[str]:
    """The layers to draw: those named, or every top-level layer whose output is an image with
    more than one pixel (LeNet: conv1, act1, pool1, conv2, act2, pool2)."""
    shapes = {name: out for name, _, _, out in spec.outputs}
    if layers is None:
        return [name for name, _, _, out in spec.table if len(out) == 4 and out[2] * out[3] > 1]
    names = [name.strip() for name in layers.split(",") if name.strip()]
    unknown = [name for name in names if name not in shapes]
    if unknown or not names:
        named = ", ".join(unknown) if unknown else repr(layers)
        raise OptionError(f"--layers: {spec.name} has no layer {named}; its layers are {', '.join(spec.layer_names())}")
    flat = [name for name in names if len(shapes[name]) != 4]
    if flat:
        raise OptionError(f"--layers: {', '.join(flat)} output features, not feature maps; choose among "
                         f"{', '.join(map_layers(spec))}")
    return names


def feature_maps(backend: str, spec: Spec, weights: Mapping[str, np.ndarray], images: np.ndarray,
                 layers: Optional[Sequence[str]] = None, source: str = "") -> Maps:
    """Run ``backend`` in this process on uint8 ``images`` (N, 28, 28) and keep the outputs of
    ``layers`` (default :func:`map_layers`)."""
    from polylenet.api import build, layer_outputs
    from polylenet.registry import get_backend
    from polylenet.resize import to_model_inputs

    keep = set(layers or map_layers(spec))
    model = build(spec, backend=backend, weights=weights)
    x = to_model_inputs(images, spec.input_shape)
    outputs = {name: out for name, out in layer_outputs(model, x) if name in keep}
    return Maps(backend, get_backend(backend).version(), source, outputs)


def feature_maps_in_environments(sources: Mapping[str, tuple[Mapping[str, np.ndarray], str]], spec: Spec,
                                 images: np.ndarray, layers: Sequence[str], envs: Optional[str] = None,
                                 pythons: Optional[Mapping[str, str]] = None) -> list[Maps]:
    """Each backend of ``sources`` (backend -> (weights, where they came from)) in its own
    environment, as ``compare`` and ``diff`` run them (``polylenet probe``), in that order."""
    from polylenet.diff import check_known, find_environments, run_probe, save_inputs
    from polylenet.resize import to_model_inputs
    from polylenet.specfile import save_spec

    check_known(sources, pythons)
    found = find_environments(sources, envs, pythons)
    x = to_model_inputs(images, spec.input_shape)
    y = np.zeros(len(x), np.int32)  # the probe's loss needs labels; only the outputs are kept
    result = []
    with tempfile.TemporaryDirectory(prefix="polylenet-activations-") as tmp:
        spec_file = save_spec(spec, Path(tmp) / "spec.json")
        for backend, (weights, source) in sources.items():
            inputs = save_inputs(Path(tmp) / f"{backend}-inputs.npz", x, y, weights)
            probe = run_probe(backend, found[backend], str(spec_file), inputs, Path(tmp) / f"{backend}.npz")
            outputs = {name: probe[f"output:{name}"] for name in layers}
            result.append(Maps(backend, str(probe.get("meta:version", "?")), source, outputs))
    return result


def largest_differences(maps: Sequence[Maps]) -> dict[str, float]:
    """Per layer, the largest |difference| between any backend's maps and the first's."""
    first = maps[0]
    return {name: max((float(np.max(np.abs(m.outputs[name].astype(np.float64) - ref))) for m in maps[1:]),
                      default=0.0)
            for name, ref in ((n, o.astype(np.float64)) for n, o in first.outputs.items())}


def mosaic(maps: np.ndarray, channels: int) -> np.ndarray:
    """The first ``channels`` of (C, H, W) tiled in a near-square grid, NaN between tiles.

    >>> mosaic(np.ones((6, 2, 2)), 16).shape  # 3 across, 2 down, one NaN pixel between
    (5, 8)
    """
    maps = maps[:channels]
    count, h, w = maps.shape
    across = int(np.ceil(np.sqrt(count)))
    down = int(np.ceil(count / across))
    out = np.full((down * (h + 1) - 1, across * (w + 1) - 1), np.nan)
    for c in range(count):
        r, q = divmod(c, across)
        out[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = maps[c]
    return out


def draw(images: np.ndarray, chosen: Sequence[Chosen], maps: Sequence[Maps], channels: int = 16):
    """The figure: one row for the inputs and one per layer, one column per image and backend,
    each layer's maps on one colour scale across the row (the same picture is the same colours)."""
    from polylenet.plotting import NotebookFigure

    layers = list(maps[0].outputs)
    differences = largest_differences(maps) if len(maps) > 1 else {}
    columns = [(i, m) for i in range(len(chosen)) for m in maps]
    figure = NotebookFigure(figsize=(1.25 * len(columns) + 1.4, 1.35 * (len(layers) + 1)), layout="constrained")
    axes = figure.subplots(len(layers) + 1, len(columns), squeeze=False)
    for col, (i, m) in enumerate(columns):
        axes[0, col].imshow(images[i], cmap="gray_r", vmin=0, vmax=255)
        axes[0, col].set_title(f"{chosen[i].label} #{chosen[i].index}\n{m.backend}", fontsize=8)
    for row, name in enumerate(layers, start=1):
        values = np.concatenate([m.outputs[name][:, :channels].ravel() for m in maps])
        low, high = float(values.min()), float(values.max())
        for col, (i, m) in enumerate(columns):
            image = axes[row, col].imshow(mosaic(m.outputs[name][i], channels), cmap="viridis", vmin=low, vmax=high)
        shape = "×".join(str(s) for s in maps[0].outputs[name].shape[1:])
        label = f"{name}\n{shape}" + (f"\nmax |Δ| {differences[name]:.1e}" if differences else "")
        axes[row, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
        figure.colorbar(image, ax=axes[row, -1], fraction=0.08, pad=0.04).ax.tick_params(labelsize=6)
    axes[0, 0].set_ylabel("input", fontsize=8, rotation=0, ha="right", va="center")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    first = maps[0]
    sources = sorted({m.weights for m in maps})
    figure.suptitle(f"feature maps of {', '.join(c.label for c in chosen)}; weights: {'; '.join(sources)}"
                    + (f"; |Δ| against {first.backend}" if differences else ""), fontsize=9)
    return figure


def save_figure(figure, out: Path) -> Path:
    """The figure as a PNG at ``out``, written whole (temporary file, then rename)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return atomic_write(out, buffer.getvalue())
