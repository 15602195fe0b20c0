"""`polylenet activations`: test images and each conv layer's feature maps, on one backend in this
process or side by side on several (each in its own process), with their largest difference."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from polylenet import init_weights, load_spec, save_weights
from polylenet.activations import (
    Chosen,
    Maps,
    choose_images,
    draw,
    feature_maps,
    largest_differences,
    map_layers,
    mosaic,
)
from polylenet.checkpoint import load_checkpoint, save_checkpoint
from polylenet.data import DATASETS, load_data
from polylenet.errors import OptionError
from polylenet.training import TrainConfig, train

CLASSES = DATASETS["fashion-mnist"].classes
# the backends this env runs beside the oracle: onnxruntime in core, the framework in its own env
OTHERS = [b.strip() for b in os.environ.get("POLYLENET_TEST_BACKENDS", "").split(",")
          if b.strip() not in ("", "numpy")]


def activations(*args):
    return subprocess.run([sys.executable, "-m", "polylenet", "activations", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def data():
    return load_data("fashion-mnist")


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    """A compare-like run folder: the oracle trained briefly, and the same checkpoint filed under
    each other backend's name (as each backend's own identical run would be)."""
    folder = tmp_path_factory.mktemp("run")
    train("lenet5", backend="numpy", config=TrainConfig(epochs=1, train_subset=1024, test_subset=100),
          out_dir=folder / "numpy", progress=False)
    weights, meta = load_checkpoint(folder / "numpy" / "checkpoint-epoch01.npz")
    for backend in OTHERS:
        save_checkpoint(folder / backend / "checkpoint-epoch01.npz", weights, {**meta, "backend": backend})
    return folder


def test_a_sweater_and_a_coat_are_the_first_test_images_of_those_classes(data):
    chosen = choose_images(data.test_labels, CLASSES, "sweater,coat")
    assert [c.label for c in chosen] == ["pullover", "coat"]
    for c in chosen:
        assert CLASSES[data.test_labels[c.index]] == c.label
        assert not np.any(data.test_labels[:c.index] == CLASSES.index(c.label))
    assert choose_images(data.test_labels, CLASSES, index="0,5")[1] == Chosen(5, CLASSES[data.test_labels[5]])


@pytest.mark.parametrize("images, index, message", [
    ("sweater,jacket", None, r"--images: no class 'jacket'; the classes are t-shirt, trouser, pullover"),
    (None, "0,10000", r"--index '0,10000': the test set's indices are 0 to 9999"),
    (None, "first", r"--index takes test-set indices, e.g. --index 0,1"),
    ("coat", "1", r"give --images or --index, not both"),
])
def test_images_that_are_not_there_are_named(data, images, index, message):
    with pytest.raises(OptionError, match=message):
        choose_images(data.test_labels, CLASSES, images, index)


def test_the_layers_drawn_are_those_with_feature_maps():
    assert map_layers(load_spec("lenet5")) == ["conv1", "act1", "pool1", "conv2", "act2", "pool2"]
    assert map_layers(load_spec("resnet18")) == ["b1", "b2", "b3", "b4", "b5"]  # not gap1 (1x1)
    assert map_layers(load_spec("lenet5"), "conv2,pool2") == ["conv2", "pool2"]
    with pytest.raises(OptionError, match=r"lenet5 has no layer conv3; its layers are conv1, act1"):
        map_layers(load_spec("lenet5"), "conv1,conv3")
    with pytest.raises(OptionError, match=r"dense1 output features, not feature maps; choose among conv1"):
        map_layers(load_spec("lenet5"), "dense1")


def test_a_mosaic_tiles_the_channels_with_a_gap_between():
    maps = np.arange(16 * 3 * 2, dtype=float).reshape(16, 3, 2)
    tiled = mosaic(maps, 16)
    assert tiled.shape == (4 * 4 - 1, 4 * 3 - 1)
    assert np.array_equal(tiled[:3, :2], maps[0]) and np.array_equal(tiled[-3:, -2:], maps[15])
    assert np.isnan(tiled[3]).all() and np.isnan(tiled[:, 2]).all()
    assert mosaic(maps, 4).shape == (2 * 4 - 1, 2 * 3 - 1)  # only the first four


def test_the_maps_are_the_layer_outputs_of_the_chosen_images(data):
    spec = load_spec("lenet5")
    weights = init_weights(spec, 3)
    images = data.test_images[[0, 1]]
    maps = feature_maps("numpy", spec, weights, images)
    from polylenet import build, layer_outputs
    from polylenet.resize import to_model_inputs

    outputs = dict(layer_outputs(build(spec, backend="numpy", weights=weights),
                                 to_model_inputs(images, spec.input_shape)))
    assert list(maps.outputs) == map_layers(spec)
    for name, out in maps.outputs.items():
        assert np.array_equal(out, outputs[name])


def test_the_figure_has_a_row_per_layer_and_a_column_per_image_and_backend(data):
    spec = load_spec("lenet5")
    images = data.test_images[[0, 1]]
    one = feature_maps("numpy", spec, init_weights(spec, 0), images, source="w")
    other = Maps("other", "1.0", "w", {k: v + np.float32(0.25) for k, v in one.outputs.items()})
    assert largest_differences([one, other]) == pytest.approx(dict.fromkeys(one.outputs, 0.25))
    figure = draw(images, [Chosen(0, "ankle boot"), Chosen(1, "pullover")], [one, other])
    axes = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
    assert len(axes) == (1 + 6) * 4
    assert [ax.get_title() for ax in axes[:4]] == ["ankle boot #0\nnumpy", "ankle boot #0\nother",
                                                   "pullover #1\nnumpy", "pullover #1\nother"]
    labels = [ax.get_ylabel() for ax in axes if ax.get_ylabel()]
    assert labels[0] == "input" and labels[1:] == [f"{name}\n{shape}\nmax |Δ| 2.5e-01" for name, shape in (
        ("conv1", "6×28×28"), ("act1", "6×28×28"), ("pool1", "6×14×14"), ("conv2", "16×10×10"),
        ("act2", "16×10×10"), ("pool2", "16×5×5"))]


def test_one_backend_here_draws_the_figure(tmp_path, run):
    out = tmp_path / "fig.png"
    result = activations("--backend", "numpy", "--checkpoint", str(run / "numpy" / "checkpoint-epoch01.npz"),
                         "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("lenet5: pullover (test image ") and ", coat (test image " in result.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name != "fig.png"]  # no temporary file left


@pytest.mark.skipif(not OTHERS, reason="needs a backend beside the oracle in this env")
@pytest.mark.parametrize("source", ["run", "weights"])
def test_every_backend_side_by_side_in_its_own_process_agrees(tmp_path, run, source):
    """Each backend a child (as compare runs them); their maps differ by float32 rounding at most:
    the largest difference printed is within the conformance bound on layer outputs (1e-5)."""
    pythons = [f"--python={b}={sys.executable}" for b in ["numpy", *OTHERS]]
    backends = ",".join(["numpy", *OTHERS])
    if source == "run":
        given = ["--run", str(run)]
    else:
        save_weights(load_checkpoint(run / "numpy" / "checkpoint-epoch01.npz")[0], tmp_path / "w.npz")
        given = ["--weights", str(tmp_path / "w.npz")]
    result = activations("--backends", backends, *given, "--out", str(tmp_path / "fig.png"), "--index", "3,4",
                         *pythons)
    assert result.returncode == 0, result.stderr
    differences = re.findall(r"^  (\w+) +[\dx]+ +max \|numpy - any other\| (\S+)$", result.stdout, re.M)
    assert [name for name, _ in differences] == ["conv1", "act1", "pool1", "conv2", "act2", "pool2"]
    assert all(float(d) <= 1e-5 for _, d in differences), result.stdout
    assert (tmp_path / "fig.png").stat().st_size > 10_000


@pytest.mark.parametrize("args, message", [
    (["--backend", "numpy"], "activations needs --checkpoint CKPT, --weights W.npz or --run RUN_DIR"),
    (["--checkpoint", "c.npz"], r"give --backend B \(one backend, here\) or --backends A,B,..."),
    (["--backends", "numpy", "--run", "RUN", "--weights", "w.npz"], r"--run takes each backend's weights from"),
    (["--backends", "numpy,nosuch", "--run", "RUN"], r"no checkpoint of nosuch there \(it holds (\w+, )*numpy\b"),
    (["--backend", "numpy", "--weights", "w.npz", "--out", "OUT"], "it already exists; pass --overwrite"),
])
def test_options_that_cannot_work_are_refused_before_anything_runs(tmp_path, run, args, message):
    (tmp_path / "taken.png").write_bytes(b"kept")
    args = [{"RUN": str(run), "OUT": str(tmp_path / "taken.png")}.get(a, a) for a in args]
    result = activations(*args, *([] if "--out" in args else ["--out", str(tmp_path / "new.png")]))
    assert result.returncode == 2 and re.search(message, result.stderr), result.stderr
    assert (tmp_path / "taken.png").read_bytes() == b"kept" and not (tmp_path / "new.png").exists()


def test_without_matplotlib_the_command_names_the_extra_before_anything_runs(tmp_path):
    """As in an env without the report extra: refused with the install command, nothing written."""
    weights = tmp_path / "w.npz"
    save_weights(init_weights(load_spec("lenet5"), 0), weights)
    block = "import sys; sys.modules['matplotlib'] = None; from polylenet.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", block, "activations", "--backend", "numpy", "--weights",
                             str(weights), "--out", str(tmp_path / "fig.png")], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert re.search(r'polylenet activations \(its figure\) needs matplotlib: pip install "polylenet\[report\]"',
                     result.stderr), result.stderr
    assert not (tmp_path / "fig.png").exists()
