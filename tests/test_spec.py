import json

import pytest

import polylenet
from polylenet import SpecError, load_spec, save_spec


def test_variants_match_d2l():
    flat = {name: dict(polylenet.spec_layer_shapes(load_spec(name)))["flatten1"]
            for name in ("lenet5", "lenet-classic", "lenet-relu")}
    assert flat == {"lenet5": (1, 400), "lenet-classic": (1, 256), "lenet-relu": (1, 400)}
    relu = load_spec("lenet-relu")
    assert {layer.fn for layer in relu.layers if layer.type == "activation"} == {"relu"}
    assert {layer.kind for layer in relu.layers if layer.type == "pool2d"} == {"max"}


def test_lenet5_shape_table_is_d2ls():
    assert polylenet.spec_layer_shapes(load_spec("lenet5")) == [
        ("conv1", (1, 6, 28, 28)), ("act1", (1, 6, 28, 28)), ("pool1", (1, 6, 14, 14)),
        ("conv2", (1, 16, 10, 10)), ("act2", (1, 16, 10, 10)), ("pool2", (1, 16, 5, 5)),
        ("flatten1", (1, 400)), ("dense1", (1, 120)), ("act3", (1, 120)),
        ("dense2", (1, 84)), ("act4", (1, 84)), ("dense3", (1, 10))]


@pytest.mark.parametrize("name", sorted(polylenet.VARIANTS))
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_spec_file_round_trip(tmp_path, name, suffix):
    if suffix == ".yaml":
        pytest.importorskip("yaml")
    path = save_spec(load_spec(name), tmp_path / f"{name}{suffix}")
    assert load_spec(str(path)) == load_spec(name)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def _write(tmp_path, layers, **extra):
    path = tmp_path / "net.json"
    path.write_text(json.dumps({"name": "net", "layers": layers, **extra}))
    return str(path)


CONV = {"type": "conv2d", "out_channels": 4, "kernel": 3}
TAIL = [{"type": "flatten"}, {"type": "dense", "units": 10}]


@pytest.mark.parametrize("layers, message", [
    ([CONV, {"type": "activation", "fn": "swish"}, *TAIL], r"layer 1 \(act1, activation\).*unknown activation 'swish'"),
    ([{**CONV, "kernel": 0}, *TAIL], r"layer 0 \(conv1, conv2d\).*kernel must be a positive integer"),
    ([{**CONV, "out_channels": -3}, *TAIL], r"out_channels must be a positive integer"),
    ([{**CONV, "kernel": 40}, *TAIL], r"layer 0 \(conv1, conv2d\).*collapses below 1"),
    ([{"type": "dense", "units": 10}], r"layer 0 \(dense1, dense\).*dense layer before flatten"),
    ([CONV, {"type": "pool2d", "kind": "median", "size": 2, "stride": 2}, *TAIL], r"unknown pooling kind 'median'"),
    ([CONV, {"type": "conv3d"}, *TAIL], r"layer 1: unknown layer type 'conv3d'"),
    ([{**CONV, "dilation": 2}, *TAIL], r"layer 0 \(conv2d\): bad arguments"),
    ([CONV, {"type": "flatten"}, {"type": "dense", "units": 7}], r"num_classes=10"),
    ([*TAIL[:1], CONV, *TAIL[1:]], r"conv2d needs an NCHW input"),
])
def test_bad_spec_names_layer_and_reason(tmp_path, layers, message):
    with pytest.raises(SpecError, match=message):
        load_spec(_write(tmp_path, layers))


def test_bad_files_and_names(tmp_path):
    with pytest.raises(SpecError, match="unknown spec 'lenet7'.*lenet5"):
        load_spec("lenet7")
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(SpecError, match="broken.json.*not valid JSON"):
        load_spec(str(broken))
    with pytest.raises(SpecError, match="input_shape"):
        load_spec(_write(tmp_path, [CONV, *TAIL], input_shape=[28, 28]))


def test_spec_objects_built_in_python_are_validated():
    spec = polylenet.Spec("tiny", (polylenet.conv2d(2, 3), polylenet.flatten(), polylenet.dense(10)),
                          input_shape=(1, 8, 8))
    assert polylenet.spec_layer_shapes(load_spec(spec))[-1] == ("dense1", (1, 10))
    with pytest.raises(SpecError, match="collapses"):
        load_spec(polylenet.Spec("bad", (polylenet.conv2d(2, 9), polylenet.flatten(),
                                         polylenet.dense(10)), input_shape=(1, 8, 8)))
