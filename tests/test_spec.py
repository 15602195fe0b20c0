import json

import numpy as np
import pytest

import polylenet
from polylenet import SpecError, WeightsError, load_spec, save_spec
from polylenet.shapes import layer_table
from polylenet.spec import spec_from_dict


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


# d2l's convolution chapter's hyperparameters: kernels, strides and pads as an int or (h, w),
# per-side pads, Keras's "same"/"valid", bias-free convs, and pooling's padding/ceil_mode/divisor.


def _spec(layers, input_shape=(1, 8, 8), num_classes=None):
    """A spec of ``layers`` (dict forms) ending in flatten + dense(10), or in a flatten alone when
    ``num_classes`` is given."""
    tail = [{"type": "flatten"}] + ([] if num_classes else [{"type": "dense", "units": 10}])
    return spec_from_dict({"name": "hyper", "input_shape": list(input_shape), "layers": [*layers, *tail],
                                     **({"num_classes": num_classes} if num_classes else {})})


def test_dict_forms_read_lists_as_tuples():
    spec = _spec([
        {"type": "conv2d", "out_channels": 4, "kernel": [5, 3], "stride": [1, 2], "padding": [[1, 0], [2, 1]],
         "bias": False},
        {"type": "pool2d", "kind": "avg", "size": [2, 3], "stride": [2, 1], "padding": [1, 1], "ceil_mode": True,
         "count_include_pad": False}], input_shape=(2, 12, 11))
    conv, pool = spec.layers[:2]
    assert conv == polylenet.conv2d(4, (5, 3), stride=(1, 2), padding=((1, 0), (2, 1)), bias=False)
    assert (conv.kernel, conv.stride, conv.padding) == ((5, 3), (1, 2), ((1, 0), (2, 1)))
    assert (conv.kernel_hw, conv.stride_hw, conv.pads, conv.bias) == ((5, 3), (1, 2), ((1, 0), (2, 1)), False)
    assert pool == polylenet.pool2d("avg", (2, 3), (2, 1), padding=(1, 1), ceil_mode=True, count_include_pad=False)
    assert (pool.size_hw, pool.stride_hw, pool.pads) == ((2, 3), (2, 1), ((1, 1), (1, 1)))
    assert hash(conv) == hash(polylenet.conv2d(4, [5, 3], stride=[1, 2], padding=[[1, 0], [2, 1]], bias=False))
    # conv: (12 + 1 - 5) // 1 + 1 = 9 rows, (11 + 3 - 3) // 2 + 1 = 6 columns. pool rows: ceil((9 + 2 - 2) / 2) + 1
    # = 6, but the 6th window would start at padded row 10, in the bottom pad, so PyTorch's rule drops it: 5;
    # columns (6 + 2 - 3) // 1 + 1 = 6
    assert [out for _, _, _, out in spec.table[:2]] == [(1, 4, 9, 6), (1, 4, 5, 6)]


def test_old_spec_files_load_unchanged(tmp_path):
    path = _write(tmp_path, [{"type": "conv2d", "out_channels": 6, "kernel": 5, "padding": 2},
                             {"type": "activation", "fn": "sigmoid"},
                             {"type": "pool2d", "kind": "max", "size": 2, "stride": 2}, *TAIL],
                  input_shape=[1, 28, 28])
    conv, _, pool = load_spec(path).layers[:3]
    assert conv == polylenet.conv2d(6, 5, padding=2)
    assert (conv.kernel_hw, conv.stride_hw, conv.pads, conv.bias) == ((5, 5), (1, 1), ((2, 2), (2, 2)), True)
    assert pool == polylenet.pool2d("max", 2, 2)
    assert (pool.size_hw, pool.stride_hw, pool.pads, pool.ceil_mode, pool.count_include_pad) == (
        (2, 2), (2, 2), ((0, 0), (0, 0)), False, True)
    assert polylenet.pool2d("max", 3).stride_hw == (3, 3)  # stride defaults to the size, as nn.MaxPool2d(3)
    # every named variant, saved before this change in the old dict form, reads back as it was
    for name in polylenet.VARIANTS:
        old = load_spec(name).to_dict()
        for layer in old["layers"]:
            for key in ("bias", "ceil_mode", "count_include_pad"):
                layer.pop(key, None)
        assert spec_from_dict(old) == load_spec(name)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_hyperparameter_spec_file_round_trip(tmp_path, suffix):
    if suffix == ".yaml":
        pytest.importorskip("yaml")
    spec = polylenet.Spec("hyper", (
        polylenet.conv2d(4, (5, 3), padding=(2, 1)), polylenet.activation("tanh"),
        polylenet.conv2d(4, (3, 5), stride=(3, 2), padding=((1, 0), (2, 1)), bias=False),
        polylenet.conv2d(3, 3, stride=2, padding="same"),
        polylenet.pool2d("max", 3, 2, padding="same"),
        polylenet.pool2d("avg", 2, padding=((1, 0), (0, 1)), ceil_mode=True, count_include_pad=False),
        polylenet.flatten(), polylenet.dense(10)), input_shape=(2, 13, 11))
    path = save_spec(spec, tmp_path / f"hyper{suffix}")
    assert load_spec(str(path)) == spec


def test_yaml_dict_forms(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "net.yaml"
    path.write_text("name: net\ninput_shape: [1, 28, 28]\nlayers:\n"
                    "  - {type: conv2d, out_channels: 2, kernel: [3, 3], stride: 2, padding: same, bias: false}\n"
                    "  - {type: pool2d, kind: max, size: 3, stride: 2, padding: [[1, 1], [1, 1]]}\n"
                    "  - {type: flatten}\n  - {type: dense, units: 10}\n")
    conv, pool = load_spec(str(path)).layers[:2]
    assert (conv.kernel_hw, conv.stride_hw, conv.pads, conv.bias) == ((3, 3), (2, 2), ((0, 1), (0, 1)), False)
    assert pool.pads == ((1, 1), (1, 1))


@pytest.mark.parametrize("size, pads", [(28, ((0, 1), (0, 1))), (27, ((1, 1), (1, 1)))])
def test_same_resolves_to_tensorflows_pads(size, pads):
    # TensorFlow's rule: output ceil(n / s), total pad (out - 1) * s + k - n, the odd one at the
    # bottom/right: k3 s2 on 28 pads 1 (bottom/right only), on 27 pads 2 (one each side)
    spec = _spec([{"type": "conv2d", "out_channels": 2, "kernel": 3, "stride": 2, "padding": "same"},
                  {"type": "pool2d", "kind": "max", "size": 3, "stride": 2, "padding": "same"}],
                 input_shape=(1, size, size))
    conv, pool = spec.layers[:2]
    assert conv.padding == conv.pads == pads
    assert spec.table[0][-1] == (1, 2, 14, 14)
    # the pool sees 14x14: out 7, total (7 - 1) * 2 + 3 - 14 = 1
    assert pool.pads == ((0, 1), (0, 1)) and spec.table[1][-1] == (1, 2, 7, 7)


@pytest.mark.parametrize("kernel, stride, in_hw, pads", [
    ((2, 2), (1, 1), (5, 5), ((0, 1), (0, 1))),   # even kernel: the extra row at the bottom (d2l's rule puts it on top)
    ((5, 3), (1, 1), (8, 8), ((2, 2), (1, 1))),
    ((3, 5), (3, 4), (8, 8), ((0, 1), (0, 1))),   # out (3, 2): totals 2 * 3 + 3 - 8 = 1, 1 * 4 + 5 - 8 = 1
    ((1, 1), (2, 2), (7, 6), ((0, 0), (0, 0))),
    ((4, 4), (4, 4), (8, 8), ((0, 0), (0, 0))),   # windows tile the input: nothing to pad
])
def test_same_pads_rule(kernel, stride, in_hw, pads):
    total = [max((-(-n // s) - 1) * s + k - n, 0) for n, k, s in zip(in_hw, kernel, stride)]
    assert [sum(p) for p in pads] == total and all(b - t in (0, 1) for t, b in pads)
    spec = _spec([{"type": "conv2d", "out_channels": 1, "kernel": list(kernel), "stride": list(stride),
                   "padding": "same"}], input_shape=(1, *in_hw))
    assert spec.layers[0].pads == pads
    assert spec.table[0][-1][2:] == tuple(-(-n // s) for n, s in zip(in_hw, stride))


def test_valid_resolves_to_no_pads():
    spec = _spec([{"type": "conv2d", "out_channels": 1, "kernel": 3, "stride": 2, "padding": "valid"},
                  {"type": "pool2d", "kind": "avg", "size": 2, "padding": "valid"}], input_shape=(1, 9, 9))
    assert [layer.pads for layer in spec.layers[:2]] == [((0, 0), (0, 0))] * 2
    assert [out for _, _, _, out in spec.table[:2]] == [(1, 1, 4, 4), (1, 1, 2, 2)]


def test_shape_table_and_saved_spec_carry_the_resolved_pads():
    spec = polylenet.Spec("same", (polylenet.conv2d(2, 3, 2, "same"), polylenet.flatten(), polylenet.dense(10)),
                          input_shape=(1, 28, 28))
    (name, layer, in_shape, out), *_ = layer_table(spec)
    assert (name, layer.padding, in_shape, out) == ("conv1", ((0, 1), (0, 1)), (1, 1, 28, 28), (1, 2, 14, 14))
    assert spec.to_dict()["layers"][0]["padding"] == ((0, 1), (0, 1))
    # the unresolved layer keeps its mode; only a spec knows the input size
    assert polylenet.conv2d(2, 3, 2, "same").padding == "same"


BAD_CONV = {"type": "conv2d", "out_channels": 2, "kernel": 3}


@pytest.mark.parametrize("change, message", [
    ({"kernel": 0}, r"layer 0 \(conv1, conv2d\): kernel must be a positive integer or a pair of them \[h, w\], got 0"),
    ({"kernel": [3]}, r"kernel must be a positive integer or a pair .*got \(3,\)"),
    ({"kernel": [3, 3, 3]}, r"kernel must be .*got \(3, 3, 3\)"),
    ({"kernel": [3, 0]}, r"kernel must be .*got \(3, 0\)"),
    ({"kernel": "3"}, r"kernel must be .*got '3'"),
    ({"kernel": True}, r"kernel must be .*got True"),
    ({"kernel": 2.5}, r"kernel must be .*got 2.5"),
    ({"stride": 0}, r"layer 0 \(conv1, conv2d\): stride must be a positive integer or a pair .*got 0"),
    ({"stride": [2, -1]}, r"stride must be .*got \(2, -1\)"),
    ({"stride": None}, r"stride must be .*got None"),
    ({"padding": -1}, r"layer 0 \(conv1, conv2d\): padding must be a non-negative integer p, a pair \[ph, pw\], "
                      r"per side \[\[top, bottom\], \[left, right\]\], or one of \['same', 'valid'\]; got -1"),
    ({"padding": [1, 2, 3]}, r"padding must be .*got \(1, 2, 3\)"),
    ({"padding": [[1, 2, 3], [0, 0]]}, r"padding must be .*got \(\(1, 2, 3\), \(0, 0\)\)"),
    ({"padding": [[1, -1], [0, 0]]}, r"padding must be .*got \(\(1, -1\), \(0, 0\)\)"),
    ({"padding": [1.5, 1]}, r"padding must be .*got \(1.5, 1\)"),
    ({"padding": [[1, 0], 1]}, r"padding must be .*got \(\(1, 0\), 1\)"),
    ({"padding": "full"}, r"layer 0 \(conv1, conv2d\): padding 'full' is not a padding mode; use one of "
                          r"\['same', 'valid'\] or explicit pads"),
    ({"padding": "SAME"}, r"padding 'SAME' is not a padding mode"),
    ({"padding": True}, r"padding must be .*got True"),
    ({"bias": "yes"}, r"layer 0 \(conv1, conv2d\): bias must be true or false, got 'yes'"),
    ({"bias": 1}, r"bias must be true or false, got 1"),
    ({"bias": None}, r"bias must be true or false, got None"),
])
def test_bad_conv_hyperparameters(change, message):
    with pytest.raises(SpecError, match=message):
        _spec([{**BAD_CONV, **change}])


BAD_POOL = {"type": "pool2d", "kind": "max", "size": 3, "stride": 2}


@pytest.mark.parametrize("change, message", [
    ({"size": 0}, r"layer 0 \(pool1, pool2d\): size must be a positive integer or a pair .*got 0"),
    ({"size": [2, 2, 2]}, r"size must be .*got \(2, 2, 2\)"),
    ({"stride": [0, 1]}, r"stride must be .*got \(0, 1\)"),
    ({"stride": "2"}, r"stride must be .*got '2'"),
    ({"padding": -1}, r"layer 0 \(pool1, pool2d\): padding must be a non-negative integer p"),
    ({"padding": "full"}, r"padding 'full' is not a padding mode"),
    ({"ceil_mode": "no"}, r"layer 0 \(pool1, pool2d\): ceil_mode must be true or false, got 'no'"),
    ({"ceil_mode": 0}, r"ceil_mode must be true or false, got 0"),
    ({"kind": "avg", "count_include_pad": 1}, r"count_include_pad must be true or false, got 1"),
    ({"kind": "avg", "count_include_pad": "false"}, r"count_include_pad must be true or false, got 'false'"),
    # a window of 3 may hold at most 1 pad per side, or one window could be padding alone
    ({"padding": 2}, r"layer 0 \(pool1, pool2d\): padding \(2, 2\) on axis h is more than half the window \(3\), "
                     r"so a window could hold padding alone; pad at most 1 per side"),
    ({"padding": [[0, 2], [0, 0]]}, r"padding \(0, 2\) on axis h is more than half the window \(3\)"),
    ({"size": [3, 2], "padding": [1, 2]}, r"padding \(2, 2\) on axis w is more than half the window \(2\), "
                                          r".*pad at most 1 per side"),
    ({"size": [2, 3], "padding": [[0, 0], [2, 1]]}, r"padding \(2, 1\) on axis w .*pad at most 1 per side"),
    ({"size": 1, "stride": 1, "padding": 1}, r"padding \(1, 1\) on axis h is more than half the window \(1\)"),
])
def test_bad_pool_hyperparameters(change, message):
    with pytest.raises(SpecError, match=message):
        _spec([{**BAD_POOL, **change}])


@pytest.mark.parametrize("size, padding", [(3, 1), (2, 1), ((2, 3), (1, 1)), (5, ((2, 2), (0, 2)))])
def test_pool_pads_up_to_half_the_window_are_valid(size, padding):
    assert _spec([{**BAD_POOL, "size": size, "stride": 1, "padding": padding}]).layers[0].type == "pool2d"


def test_bias_free_conv_has_no_bias_key():
    spec = _spec([{**BAD_CONV, "bias": False}, {"type": "conv2d", "out_channels": 3, "kernel": [1, 2]}])
    shapes = polylenet.param_shapes(spec)
    assert "conv1.bias" not in shapes
    assert (shapes["conv1.weight"], shapes["conv2.weight"], shapes["conv2.bias"]) == ((2, 1, 3, 3), (3, 2, 1, 2), (3,))
    weights = polylenet.init_weights(spec, seed=0)
    assert set(weights) == set(shapes) and "conv1.bias" not in weights
    with pytest.raises(WeightsError, match="conv1.bias"):
        polylenet.build(spec, backend="numpy", weights={**weights, "conv1.bias": np.zeros(2, np.float32)})


def test_a_spec_may_end_in_a_flatten_of_num_classes_values():
    spec = _spec([{"type": "conv2d", "out_channels": 1, "kernel": [1, 2], "bias": False}],
                 input_shape=(1, 6, 8), num_classes=42)
    assert (spec.num_classes, spec.table[-1][0], spec.table[-1][-1]) == (42, "flatten1", (1, 42))
    assert polylenet.param_shapes(spec) == {"conv1.weight": (1, 1, 1, 2)}
    with pytest.raises(SpecError, match=r"must end with shape \(N, num_classes=40\) .*a flatten of that many "
                                         r"values.*ends with shape \(1, 42\)"):
        _spec([{"type": "conv2d", "out_channels": 1, "kernel": [1, 2]}], input_shape=(1, 6, 8), num_classes=40)


RELU = {"type": "activation", "fn": "relu"}


@pytest.mark.parametrize("layers, message", [
    ([CONV, {"type": "block", "merge": "add", "branches": [[{**CONV, "stride": 2}], []]}, *TAIL],
     r"layer 1 \(block1, block\): add needs every branch with the same \(channels, height, width\), got "
     r"branch1 \(4, 2, 2\), branch2 \(4, 6, 6\); give the shortcut a 1x1 conv"),
    ([CONV, {"type": "block", "merge": "concat", "branches": [[{**CONV, "stride": 2}], []]}, *TAIL],
     r"concat needs every branch at the same height and width"),
    ([CONV, {"type": "block", "merge": "sum", "branches": [[]]}, *TAIL], r"merge must be one of \['concat', 'add'\]"),
    ([CONV, {"type": "block", "merge": "add", "branches": []}, *TAIL], r"a block needs a list of branches"),
    ([CONV, {"type": "block", "merge": "add", "branches": [[{"type": "flatten"}]]}, *TAIL],
     r"branch1 ends with shape \(1, 144\); a branch must keep NCHW"),
    ([CONV, {"type": "sequential", "label": "b", "layers": []}, *TAIL],
     r"layer 1 \(b1, sequential\).*at least one layer"),
    ([CONV, {"type": "sequential", "label": "b2", "layers": [RELU]}, *TAIL],
     r"label must be letters.*not ending in a digit"),
    ([CONV, {"type": "sequential", "label": "b", "layers": [RELU, {"type": "conv3d"}]}, *TAIL],
     r"layer 1 \(sequential\) layers\[1\]: unknown layer type 'conv3d'"),
    ([CONV, {"type": "block", "merge": "add", "branches": [[{**CONV, "kernel": 0}]]}, *TAIL],
     r"layer 0 \(block1.branch1.conv1, conv2d\).*kernel must be a positive integer"),
    ([*TAIL[:1], {"type": "block", "merge": "add", "branches": [[]]}, TAIL[1]], r"a block needs an NCHW input"),
])
def test_bad_blocks_name_the_nested_layer_and_the_fix(tmp_path, layers, message):
    with pytest.raises(SpecError, match=message):
        load_spec(_write(tmp_path, layers, input_shape=[1, 8, 8]))


def test_blocks_nested_too_deep_are_refused_before_recursing(tmp_path):
    node = RELU
    for _ in range(40):
        node = {"type": "sequential", "label": "b", "layers": [node]}
    with pytest.raises(SpecError, match="nest more than 16 deep"):
        load_spec(_write(tmp_path, [CONV, node, *TAIL], input_shape=[1, 8, 8]))


def test_nested_names_and_weight_keys_are_paths():
    spec = load_spec("resnet18")
    assert spec.layer_names() == ["b1", "b2", "b3", "b4", "b5", "gap1", "flatten1", "dense1"]
    keys = list(polylenet.param_shapes(spec))
    assert keys[:2] == ["b1.conv1.weight", "b1.conv1.bias"]
    assert "b3.residual1.branch2.conv1.weight" in keys  # the strided 1x1 shortcut
    assert "b3.residual2.branch2.conv1.weight" not in keys  # an identity shortcut has no layers
    assert polylenet.param_shapes(spec)["b3.residual1.branch1.bn2.running_var"] == (128,)
    assert [p for p, *_ in spec.outputs if p.startswith("b3.residual1")][-3:] == [
        "b3.residual1.branch2.conv1", "b3.residual1.act1", "b3.residual1"]  # a block right after its contents
    inception = [p for p, *_ in load_spec("googlenet").outputs if p.startswith("b3.inception2.")]
    assert inception[:2] == ["b3.inception2.branch1.conv1", "b3.inception2.branch1.act1"]
    assert inception[-1] == "b3.inception2.branch4.act1"


def test_resnet18_has_d2ls_parameter_count():
    # torchvision's resnet18 (11,689,512: 3 channels, 1,000 classes, bias-free convs, BatchNorm on
    # the shortcuts), less its first conv (9,408) and fc (513,000), plus d2l's 1-channel first conv
    # (3,200) and 10-class head (5,130), its convs' biases (4,736), less the shortcut BNs (1,792)
    trainable = [s for k, s in polylenet.param_shapes(load_spec("resnet18")).items()
                 if not k.endswith(("running_mean", "running_var"))]
    assert sum(int(np.prod(s)) for s in trainable) == 11_689_512 - 9_408 - 513_000 + 3_200 + 5_130 + 4_736 - 1_792
