"""ONNX files polylenet writes run on ONNX Runtime to the oracle's numbers and read back
bit-exactly; graphs it cannot map exactly are refused, naming the node and the attribute.

Framework-free: they run in the core env (the one that tests numpy); each framework's env runs
its own exporter's files through the same importer (test_onnx_exporters.py).
"""

import itertools
from dataclasses import replace

import numpy as np
import pytest

import polylenet
import polylenet.onnxfile
from cases import (
    BACKENDS,
    BLOCK_EDGE,
    DROPOUT_EDGE,
    EDGE,
    GAP_EDGE,
    HYPER_CONV,
    HYPER_POOL,
    HYPER_POOL_PAD,
    batches,
    conformance_weights,
    relative_error,
)
from polylenet.errors import OnnxError
from polylenet.layers import Block, Pool2D
from polylenet.onnxfile import NODES, output_tensors, to_onnx
from polylenet.reference import pool_forward

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install 'polylenet[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install 'polylenet[onnx]'")
pytestmark = pytest.mark.skipif("numpy" not in BACKENDS,
                                reason="framework-free: runs once, in the core env (it tests numpy)")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def oracle_logits(spec, weights, x):
    return polylenet.forward(polylenet.build(spec, backend="numpy", weights=weights), x)


def run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_export_runs_on_onnxruntime_as_the_oracle(spec, tmp_path):
    weights = conformance_weights(spec)
    path = polylenet.export_onnx(spec, tmp_path / "model.onnx", weights=weights)
    x, _ = batches(spec, count=1, size=8)[0]
    # measured: at most 7.2e-7 over the variants and edge specs (ONNX Runtime 1.31, this CPU)
    assert np.max(np.abs(run(path, x) - oracle_logits(spec, weights, x))) <= 1e-5
    assert np.max(np.abs(run(path, x[:3]) - oracle_logits(spec, weights, x[:3]))) <= 1e-5  # dynamic batch


def test_export_is_a_standard_graph_named_after_the_spec(tmp_path):
    spec = polylenet.load_spec("lenet-bn")
    model = onnx.load(polylenet.export_onnx(spec, tmp_path / "bn.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.name == "lenet-bn"
    assert [n.name for n in model.graph.node] == spec.layer_names()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert model.graph.input[0].name == "input" and dims[0].dim_param == "N"
    assert [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert [n.op_type for n in model.graph.node][:3] == ["Conv", "BatchNormalization", "Sigmoid"]


def test_import_of_own_export_is_bit_exact(spec, tmp_path):
    weights = conformance_weights(spec)
    imported, read = polylenet.import_onnx(polylenet.export_onnx(spec, tmp_path / f"{spec.name}.onnx", weights))
    assert imported == spec
    assert sorted(read) == sorted(weights)
    for key in weights:
        assert read[key].dtype == np.float32 and np.array_equal(read[key], weights[key]), key


def test_export_of_a_built_model_takes_its_weights(tmp_path):
    weights = conformance_weights(polylenet.load_spec("lenet-relu"))
    model = polylenet.build("lenet-relu", backend="numpy", weights=weights)
    _, read = polylenet.import_onnx(polylenet.export_onnx(model, tmp_path / "m.onnx"))
    assert all(np.array_equal(read[k], weights[k]) for k in weights)


def test_export_leaves_nothing_half_written(tmp_path):
    spec = polylenet.load_spec("lenet5")
    bad = polylenet.init_weights(spec)
    bad["conv1.weight"] = bad["conv1.weight"][:3]
    with pytest.raises(polylenet.WeightsError, match="conv1.weight"):
        polylenet.export_onnx(spec, tmp_path / "m.onnx", weights=bad)
    assert list(tmp_path.iterdir()) == []


def nhwc_graph(spec, weights):
    """``spec`` as tf2onnx writes a Keras model: NHWC input transposed to NCHW, and the flatten
    in (H, W, C) order with the next dense layer's columns to match."""
    model = to_onnx(spec, weights)
    graph = model.graph
    c, h, w = spec.input_shape
    first = graph.node[0]
    first.input[0] = "nchw"
    flatten = next(n for n in graph.node if n.op_type == "Flatten")
    flatten.input[0], source = "hwc", flatten.input[0]
    nodes = [helper.make_node("Transpose", ["input"], ["nchw"], "to_nchw", perm=[0, 3, 1, 2]),
             *graph.node[:list(graph.node).index(flatten)],
             helper.make_node("Transpose", [source], ["hwc"], "to_hwc", perm=[0, 2, 3, 1]),
             *graph.node[list(graph.node).index(flatten):]]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input[0].CopyFrom(helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", h, w, c]))
    dense = next(n for n in graph.node if n.op_type == "Gemm").input[1]
    out_c, out_h, out_w = spec.table[[layer.type for layer in spec.layers].index("flatten")][2][1:]
    index = [i for i, t in enumerate(graph.initializer) if t.name == dense][0]
    neutral = weights[dense]
    hwc = neutral.reshape(-1, out_c, out_h, out_w).transpose(0, 2, 3, 1).reshape(neutral.shape[0], -1)
    graph.initializer[index].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(hwc), dense))
    return model


def test_nhwc_graph_is_imported_in_the_neutral_layout(tmp_path):
    spec = EDGE
    weights = conformance_weights(spec)
    path = tmp_path / "nhwc.onnx"
    onnx.save(nhwc_graph(spec, weights), path)
    x, _ = batches(spec, count=1, size=4)[0]
    assert np.max(np.abs(run(path, x.transpose(0, 2, 3, 1)) - oracle_logits(spec, weights, x))) <= 1e-5
    imported, read = polylenet.import_onnx(path)
    assert imported.layers == spec.layers and imported.input_shape == spec.input_shape
    assert all(np.array_equal(read[k], weights[k]) for k in weights)


def with_node_change(tmp_path, change, spec="lenet5"):
    model = to_onnx(polylenet.load_spec(spec), polylenet.init_weights(spec))
    change(model.graph)
    del model.graph.value_info[:]  # the shapes inferred for the unchanged graph
    path = tmp_path / "changed.onnx"
    onnx.save(model, path)
    return path


def set_attr(node, name, value):
    for attr in list(node.attribute):
        if attr.name == name:
            node.attribute.remove(attr)
    node.attribute.append(helper.make_attribute(name, value))


def scale(node, graph):
    node.op_type = "Mul"
    node.input.append("two")
    graph.initializer.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))


@pytest.mark.parametrize("change, message", [
    (lambda g: set_attr(g.node[3], "dilations", [2, 2]), r"'conv2' \(Conv\): dilations=\[2, 2\]"),
    (lambda g: set_attr(g.node[0], "pads", [2, -1, 2, 2]), r"'conv1' \(Conv\): pads=\[2, -1, 2, 2\] are negative"),
    (lambda g: set_attr(g.node[0], "kernel_shape", [5, 3]), r"'conv1' \(Conv\): kernel_shape=\[5, 3\] but a"),
    (lambda g: set_attr(g.node[2], "pads", [0, 0, 2, 0]), r"'pool1' \(AveragePool\): .*pad at most 1 per side"),
    (lambda g: (set_attr(g.node[2], "auto_pad", "SAME_UPPER"), set_attr(g.node[2], "pads", [0, 0, 0, 0]),
                set_attr(g.node[2], "ceil_mode", 1)),
     r"'pool1' \(AveragePool\): auto_pad=SAME_UPPER with ceil_mode=1"),
    (lambda g: setattr(g.node[1], "op_type", "Softplus"), r"'act1' \(Softplus\): no polylenet layer"),
    (lambda g: scale(g.node[1], g), r"'act1' \(Mul\): .*loses its running statistics"),
])
def test_a_graph_polylenet_cannot_map_is_refused_naming_node_and_attribute(tmp_path, change, message):
    with pytest.raises(OnnxError, match=message):
        polylenet.import_onnx(with_node_change(tmp_path, change))


def test_a_max_pool_returning_its_indices_is_refused(tmp_path):
    path = with_node_change(tmp_path, lambda g: g.node[2].output.append("indices"), spec="lenet-classic")
    with pytest.raises(OnnxError, match=r"'pool1' \(MaxPool\): returns the argmax indices too"):
        polylenet.import_onnx(path)


def pooling_cases():
    """Pool2D configurations over one axis (sizes, kernels, strides, every pad pair a pool allows),
    the other axis fixed at an asymmetric one, and the same with the axes swapped."""
    for kind, ceil_mode, include_pad in [("max", False, True), ("max", True, True), *itertools.product(
            ["avg"], [False, True], [False, True])]:
        for size, k, s in itertools.product(range(1, 8), range(1, 5), range(1, 4)):
            for pads in itertools.product(range(k // 2 + 1), repeat=2):
                for swap in (False, True):
                    axes = [(size, k, s, pads), (5, 2, 1, (1, 0))]
                    (h, kh, sh, ph), (w, kw, sw, pw) = axes[::-1] if swap else axes
                    layer = polylenet.pool2d(kind, (kh, kw), (sh, sw), (ph, pw), ceil_mode, include_pad)
                    try:
                        layer.output_shape("case", (2, 2, h, w))
                    except polylenet.SpecError:  # the window does not fit
                        continue
                    yield layer, (2, 2, h, w)


def test_onnxruntime_pools_as_the_oracle():
    """Every padding, ceil_mode overhang and divisor rule as ONNX Runtime computes the exported
    MaxPool and AveragePool (one graph, a node per configuration), on negative inputs so that a
    zero pad would win a max. Measured: all 4,140 configurations within 7.2e-7 (ONNX Runtime 1.31),
    so export writes the attributes as they are, with no Pad node or divisor correction."""
    rng = np.random.default_rng(5)
    cases = list(pooling_cases())
    assert len(cases) == 4140
    nodes, inputs, outputs, feeds = [], [], [], {}
    for i, (layer, shape) in enumerate(cases):
        nodes.append(NODES[Pool2D](helper, layer, f"pool{i}", [f"x{i}"], f"y{i}"))  # as export writes it
        inputs.append(helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, shape))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None))
        feeds[f"x{i}"] = (rng.standard_normal(shape) - 3).astype(np.float32)
    model = helper.make_model(helper.make_graph(nodes, "pools", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", polylenet.onnxfile.opset())])
    model.ir_version = polylenet.onnxfile.IR_VERSION
    options = ort.SessionOptions()  # the optimizer takes 6 s over 4,140 nodes and rewrites no pool
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    worst = {}
    for i, ((layer, _), got) in enumerate(zip(cases, session.run(None, feeds))):
        key = (layer.kind, layer.ceil_mode, layer.count_include_pad)
        expected = pool_forward(feeds[f"x{i}"], layer)[0]  # the oracle's layer function
        worst[key] = max(worst.get(key, 0.0), float(np.max(np.abs(got - expected))))
    assert max(worst.values()) <= 1e-5, worst


def test_a_spec_ending_in_a_flatten_round_trips(tmp_path):
    """d2l's NiN ending: a 1x1 conv to the class count, a global average pool, a flatten."""
    spec = polylenet.Spec("nin-tail", (polylenet.conv2d(6, 3, padding=1), polylenet.activation("relu"),
                                       polylenet.conv2d(10, 1), polylenet.pool2d("avg", (7, 6)),
                                       polylenet.flatten()), input_shape=(1, 7, 6))
    weights = conformance_weights(spec)
    path = polylenet.export_onnx(spec, tmp_path / "nin.onnx", weights)
    x, _ = batches(spec, count=1, size=4)[0]
    assert np.max(np.abs(run(path, x) - oracle_logits(spec, weights, x))) <= 1e-5
    imported, read = polylenet.import_onnx(path)
    assert imported == spec and all(np.array_equal(read[k], weights[k]) for k in weights)


def exported_with(spec, change):
    model = to_onnx(spec, conformance_weights(spec))
    change({node.name: node for node in model.graph.node})
    del model.graph.value_info[:]
    return model


@pytest.mark.parametrize("spec, include_pad", [(polylenet.load_spec("lenet5"), True), (HYPER_POOL_PAD, False)])
def test_an_average_pool_without_count_include_pad(tmp_path, spec, include_pad):
    """ONNX's default is 0 (pads not counted), as HYPER_POOL_PAD's padded pool1 reads; without
    pads (lenet5's pool1) it changes nothing, and the import reads polylenet's default, so a
    framework's pad-free average pool is the spec's."""
    def change(nodes):
        nodes["pool1"].attribute.remove(next(a for a in nodes["pool1"].attribute if a.name == "count_include_pad"))

    path = tmp_path / "default.onnx"
    onnx.save(exported_with(spec, change), path)
    imported, weights = polylenet.import_onnx(path)
    pool = spec.layers[[layer.type for layer in spec.layers].index("pool2d")]
    assert imported.layers == tuple(replace(layer, count_include_pad=include_pad) if layer is pool else layer
                                    for layer in spec.layers)
    x, _ = batches(spec, count=1, size=4)[0]
    assert np.max(np.abs(run(path, x) - oracle_logits(imported, weights, x))) <= 1e-5


def test_auto_pad_same_upper_reads_as_the_spec_same_padding(tmp_path):
    spec = HYPER_CONV  # conv3 and pool1 are "same" at stride 2: TensorFlow's extra row at the bottom
    path = tmp_path / "auto.onnx"

    def change(nodes):
        for name in ("conv3", "pool1"):
            set_attr(nodes[name], "auto_pad", "SAME_UPPER")
            nodes[name].attribute.remove(next(a for a in nodes[name].attribute if a.name == "pads"))

    onnx.save(exported_with(spec, change), path)
    imported, read = polylenet.import_onnx(path)
    assert imported.layers == spec.layers
    assert all(np.array_equal(read[k], v) for k, v in conformance_weights(spec).items())


def test_auto_pad_same_lower_reads_as_pads_at_the_top(tmp_path):
    spec = HYPER_CONV
    path = tmp_path / "lower.onnx"

    def change(nodes):
        set_attr(nodes["conv3"], "auto_pad", "SAME_LOWER")
        nodes["conv3"].attribute.remove(next(a for a in nodes["conv3"].attribute if a.name == "pads"))

    onnx.save(exported_with(spec, change), path)
    imported, weights = polylenet.import_onnx(path)
    (top, bottom), (left, right) = spec.layers[4].pads
    assert imported.layers[4].pads == ((bottom, top), (right, left)) != spec.layers[4].pads
    x, _ = batches(spec, count=1, size=4)[0]
    assert np.max(np.abs(run(path, x) - oracle_logits(imported, weights, x))) <= 1e-5


def test_a_grouped_convolution_is_refused(tmp_path):
    def grouped(graph):
        set_attr(graph.node[3], "group", 2)
        index = [i for i, t in enumerate(graph.initializer) if t.name == "conv2.weight"][0]
        graph.initializer[index].CopyFrom(numpy_helper.from_array(np.zeros((16, 3, 5, 5), np.float32),
                                                                  "conv2.weight"))

    with pytest.raises(OnnxError, match=r"'conv2' \(Conv\): group=2; polylenet has no grouped"):
        polylenet.import_onnx(with_node_change(tmp_path, grouped))


def test_a_transpose_it_cannot_undo_is_refused(tmp_path):
    def transposed(graph):
        graph.node[1].output[0] = "t"
        graph.node.insert(2, helper.make_node("Transpose", ["t"], ["act1"], "swap_hw", perm=[0, 1, 3, 2]))

    with pytest.raises(OnnxError, match=r"'swap_hw' \(Transpose\): perm=\[0, 1, 3, 2\]"):
        polylenet.import_onnx(with_node_change(tmp_path, transposed))


def test_a_reshape_to_the_shape_it_has_is_read_as_nothing(tmp_path):
    """tf2onnx writes a Keras Permute that moves only 1-sized axes (after a global pool) as such a
    Reshape, in some runs (its optimizer's order varies)."""
    def reshaped(graph):
        graph.node[1].output[0] = "r"
        graph.node.insert(2, helper.make_node("Constant", [], ["same_shape"], "same_shape",
                                              value=numpy_helper.from_array(np.array([-1, 6, 28, 28], np.int64))))
        graph.node.insert(3, helper.make_node("Reshape", ["r", "same_shape"], ["act1"], "no_op_reshape"))

    spec = polylenet.load_spec("lenet5")
    imported, _ = polylenet.import_onnx(with_node_change(tmp_path, reshaped))
    assert imported == spec


def test_not_an_onnx_file(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"\x00garbage, not a protobuf\xff" * 10)
    with pytest.raises(OnnxError, match="x.onnx: not"):
        polylenet.import_onnx(tmp_path / "x.onnx")
    with pytest.raises(OnnxError, match="no such ONNX file"):
        polylenet.import_onnx(tmp_path / "missing.onnx")


def test_a_bias_the_exporter_left_unfolded_is_read(tmp_path):
    """paddle2onnx without its constant folding writes a conv bias as Add(Reshape(Constant))."""
    spec = polylenet.load_spec("lenet5")
    weights = conformance_weights(spec)
    model = to_onnx(spec, weights)
    graph = model.graph
    conv = graph.node[0]
    del conv.input[2]
    conv.output[0] = "conv1_nobias"
    graph.node.insert(1, helper.make_node("Constant", [], ["bias_shape"], "shape_const",
                                          value=numpy_helper.from_array(np.array([1, 6, 1, 1], np.int64))))
    graph.node.insert(2, helper.make_node("Reshape", ["conv1.bias", "bias_shape"], ["bias4d"], "bias_reshape"))
    graph.node.insert(3, helper.make_node("Add", ["conv1_nobias", "bias4d"], ["conv1"], "bias_add"))
    del graph.value_info[:]
    path = tmp_path / "unfolded.onnx"
    onnx.save(model, path)
    imported, read = polylenet.import_onnx(path)
    assert imported == spec
    assert all(np.array_equal(read[k], weights[k]) for k in weights)


def with_pad_node(spec, layer, value, mode="constant", move=(0, 1)):
    """``spec``'s export with ``layer``'s pads (the given ONNX pads entries ``move`` of each side
    pair, both by default) moved into a Pad node before it, as a framework's padding layer exports."""
    model = to_onnx(spec, conformance_weights(spec))
    graph = model.graph
    node = next(n for n in graph.node if n.name == layer)
    pads = next(a for a in node.attribute if a.name == "pads")
    top, left, bottom, right = pads.ints
    taken = [top if 0 in move else 0, left if 0 in move else 0, bottom if 1 in move else 0, right if 1 in move else 0]
    set_attr(node, "pads", [p - t for p, t in zip(pads.ints, taken)])
    source, node.input[0] = node.input[0], f"{layer}_padded"
    onnx_pads = np.array([0, 0, taken[0], taken[1], 0, 0, taken[2], taken[3]], np.int64)  # N, C, H, W begin; end
    graph.initializer.extend([numpy_helper.from_array(onnx_pads, f"{layer}_pads"),
                              numpy_helper.from_array(np.array(value, np.float32), f"{layer}_value")])
    pad = helper.make_node("Pad", [source, f"{layer}_pads", f"{layer}_value"], [f"{layer}_padded"], f"{layer}_pad",
                           mode=mode)
    graph.node.insert(list(graph.node).index(node), pad)
    del graph.value_info[:]
    return model


@pytest.mark.parametrize("spec, layer, value", [
    (HYPER_CONV, "conv2", 0.0),  # nn.ZeroPad2d before nn.Conv2d: per-side pads
    (HYPER_CONV, "pool1", -np.inf),  # nn.ConstantPad2d(-inf) before nn.MaxPool2d
    (HYPER_POOL, "pool2", 0.0),  # a zero Pad before an AveragePool that counts pads (count_include_pad=0 here)
])
def test_a_pad_node_folds_into_the_layer_after_it(tmp_path, spec, layer, value):
    model = with_pad_node(spec, layer, value)
    path = tmp_path / "pad.onnx"
    onnx.save(model, path)
    x, _ = batches(spec, count=1, size=4)[0]
    imported, weights = polylenet.import_onnx(path)
    assert np.max(np.abs(run(path, x) - oracle_logits(imported, weights, x))) <= 1e-5
    if layer == "pool2":  # hyper-pool's pool2 divides by the input alone: moved into a Pad, its pads count
        index = spec.layer_names().index(layer)
        assert imported.layers[index] == replace(spec.layers[index], count_include_pad=True)
        assert np.max(np.abs(run(path, x) - oracle_logits(spec, weights, x))) > 1e-3
    else:
        assert imported == spec
        assert all(np.array_equal(weights[k], v) for k, v in conformance_weights(spec).items())


@pytest.mark.parametrize("layer, value, mode, move, message", [
    ("pool1", 0.0, "constant", (0, 1), r"'pool1_pad' \(Pad\): pads with 0.0 before a MaxPool, which never lets"),
    ("conv2", -np.inf, "constant", (0, 1), r"'conv2_pad' \(Pad\): pads with -inf before a Conv"),
    ("conv2", 0.0, "reflect", (0, 1), r"'conv2_pad' \(Pad\): mode='reflect'"),
])
def test_a_pad_node_that_does_not_fold_is_refused(tmp_path, layer, value, mode, move, message):
    path = tmp_path / "pad.onnx"
    onnx.save(with_pad_node(HYPER_CONV, layer, value, mode, move), path)
    with pytest.raises(OnnxError, match=message):
        polylenet.import_onnx(path)


def test_a_pad_before_an_average_pool_that_leaves_out_its_own_pads_is_refused(tmp_path):
    path = tmp_path / "pad.onnx"
    onnx.save(with_pad_node(HYPER_POOL, "pool2", 0.0, move=(0,)), path)  # top/left in the Pad, bottom/right not
    with pytest.raises(OnnxError, match=r"'pool2' \(AveragePool\): count_include_pad=0 with pads, after a Pad"):
        polylenet.import_onnx(path)


def test_a_computed_zero_bias_is_a_bias_free_conv(tmp_path):
    """torch.onnx 2.13 gives nn.Conv2d(bias=False) a bias input: Expand(CastLike(0, x), Shape(W)[:1]).
    A stored bias of zeros (d2l's init) is a bias all the same."""
    spec = HYPER_CONV
    model = to_onnx(spec, conformance_weights(spec))
    graph = model.graph
    conv = next(n for n in graph.node if n.name == "conv2")
    nodes = [helper.make_node("Constant", [], ["zero"], "zero", value=numpy_helper.from_array(np.array(0, np.float32))),
             helper.make_node("CastLike", ["zero", conv.input[0]], ["zero_like"], "cast_like"),
             helper.make_node("Shape", ["conv2.weight"], ["w_shape"], "w_shape", end=1),
             helper.make_node("Expand", ["zero_like", "w_shape"], ["conv2_bias"], "expand")]
    for node in nodes:
        graph.node.insert(list(graph.node).index(conv), node)
    conv.input.append("conv2_bias")
    path = tmp_path / "stand-in.onnx"
    onnx.save(model, path)
    imported, read = polylenet.import_onnx(path)
    assert imported == spec and "conv2.bias" not in read
    zeros = polylenet.init_weights(polylenet.load_spec("lenet5"))
    assert not zeros["conv1.bias"].any()
    imported, read = polylenet.import_onnx(polylenet.export_onnx("lenet5", tmp_path / "zeros.onnx", zeros))
    assert imported.layers[0].bias and np.array_equal(read["conv1.bias"], zeros["conv1.bias"])


@pytest.mark.parametrize("variant", ["alexnet", "vgg11-small", "nin"])
def test_a_modern_cnn_exports_runs_and_imports_back(variant, tmp_path):
    """d2l's modern CNNs at 224x224: AlexNet's 47M parameters are a 187 MB file (ONNX's protobuf
    limit is 2 GB; VGG-11-small's 172 MB, NiN's 8 MB). Measured with init_weights: logits within 2.7e-8
    of the oracle's (AlexNet, logits up to 0.054; ONNX Runtime 1.31, this CPU), peak memory 1.5 GB."""
    spec = polylenet.load_spec(variant)
    weights = polylenet.init_weights(spec)
    path = polylenet.export_onnx(spec, tmp_path / f"{variant}.onnx", weights)
    x, _ = batches(spec, count=1, size=2)[0]
    error = float(np.max(np.abs(run(path, x) - oracle_logits(spec, weights, x))))
    assert error <= 1e-5, error
    imported, read = polylenet.import_onnx(path)
    assert imported == spec
    assert sorted(read) == sorted(weights)
    for key in weights:
        assert np.array_equal(read[key], weights[key]), key


def test_a_dropout_node_carries_its_ratio():
    """Each dropout layer is a Dropout node whose ratio input is p itself (a float64 scalar), in
    inference mode (no training_mode input)."""
    model = to_onnx(DROPOUT_EDGE, conformance_weights(DROPOUT_EDGE))
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = {node.name: node for node in model.graph.node}
    dropouts = [(name, layer) for name, layer in DROPOUT_EDGE.named_layers() if layer.type == "dropout"]
    assert [layer.p for _, layer in dropouts] == [0.3, 0.5, 0.2]
    for name, layer in dropouts:
        node = nodes[name]
        assert node.op_type == "Dropout" and len(node.input) == 2, node
        ratio = constants[node.input[1]]
        assert ratio.shape == () and ratio.dtype == np.float64 and float(ratio) == layer.p, (name, ratio)


def replaced(spec, name, nodes, initializers=(), drop=()):
    """``spec``'s export with node ``name`` replaced by ``nodes`` (and the nodes named in ``drop``
    removed, their output rewired to their input)."""
    model = to_onnx(spec, conformance_weights(spec))
    graph = model.graph
    index = [n.name for n in graph.node].index(name)
    old = graph.node[index]
    for node in nodes:
        node.input[0] = old.input[0]
    for gone in drop:
        node = next(n for n in graph.node if n.name == gone)
        nodes[-1].output[0] = node.output[0]
        graph.node.remove(node)
    graph.node.remove(old)
    for node in reversed(nodes):
        graph.node.insert(index, node)
    graph.initializer.extend(initializers)
    del graph.value_info[:]
    return model


@pytest.mark.parametrize("ratio, p", [(None, 0.5), (np.float32(0.3), 0.3), (np.float16(0.3), 0.3)])
def test_an_exporters_dropout_reads_as_its_ratio(tmp_path, ratio, p):
    """No ratio input is ONNX's default, 0.5; a float32 or float16 ratio reads as its shortest decimal."""
    inputs = ["x"] if ratio is None else ["x", "r"]
    extra = [] if ratio is None else [numpy_helper.from_array(np.array(ratio), "r")]
    path = tmp_path / "dropout.onnx"
    onnx.save(replaced(DROPOUT_EDGE, "dropout1", [helper.make_node("Dropout", inputs, ["dropout1"], "d")], extra),
              path)
    imported, _ = polylenet.import_onnx(path)
    assert imported.layers == (DROPOUT_EDGE.layers[:2] + (polylenet.dropout(p),) + DROPOUT_EDGE.layers[3:])


def test_a_training_mode_dropout_is_refused(tmp_path):
    path = tmp_path / "dropout.onnx"
    train = [numpy_helper.from_array(np.array(0.3), "r"), numpy_helper.from_array(np.array(True), "t")]
    onnx.save(replaced(DROPOUT_EDGE, "dropout1", [helper.make_node("Dropout", ["x", "r", "t"], ["dropout1"], "d")],
                       train), path)
    with pytest.raises(OnnxError, match=r"'d' \(Dropout\): training_mode is not a constant False"):
        polylenet.import_onnx(path)


@pytest.mark.parametrize("keepdims", [1, 0])
def test_a_mean_over_h_and_w_is_a_global_average_pool(tmp_path, keepdims):
    """torch.onnx writes nn.AdaptiveAvgPool2d((1, 1)) as ReduceMean over [-1, -2] with keepdims=1;
    keepdims=0 is the pool and the flatten after it."""
    axes = numpy_helper.from_array(np.array([-1, -2], np.int64), "axes")
    mean = helper.make_node("ReduceMean", ["x", "axes"], ["gap1"], "mean", keepdims=keepdims)
    path = tmp_path / "mean.onnx"
    onnx.save(replaced(GAP_EDGE, "gap1", [mean], [axes], drop=() if keepdims else ("flatten1",)), path)
    x, _ = batches(GAP_EDGE, count=1, size=4)[0]
    weights = conformance_weights(GAP_EDGE)
    assert np.max(np.abs(run(path, x) - oracle_logits(GAP_EDGE, weights, x))) <= 1e-5
    imported, read = polylenet.import_onnx(path)
    assert imported == GAP_EDGE and all(np.array_equal(read[k], weights[k]) for k in weights)


@pytest.mark.parametrize("axes", [[2], [1, 2, 3], [1, 2]])
def test_a_mean_over_other_axes_is_refused(tmp_path, axes):
    mean = helper.make_node("ReduceMean", ["x", "axes"], ["gap1"], "mean", keepdims=1)
    path = tmp_path / "mean.onnx"
    model = replaced(GAP_EDGE, "gap1", [mean], [numpy_helper.from_array(np.array(axes, np.int64), "axes")])
    # a symbolic logits width: onnx 1.14's shape inference (the mxnet env) refuses the changed graph's (N, 10)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "K"]))
    onnx.save(model, path)
    with pytest.raises(OnnxError, match=r"'mean' \(ReduceMean\): averages axes .*only mean is global_avg_pool"):
        polylenet.import_onnx(path)


# ------------------------------------------------------------------------------ blocks and groups

def test_block_nodes_and_initializers_are_named_by_path():
    """Groups add nothing to the graph but their name; every branch reads the block's input (an
    empty branch is that tensor itself); a block's merge node is "<block path>.concat" or
    "<block path>.add", then come its after layers."""
    spec = BLOCK_EDGE
    model = to_onnx(spec, conformance_weights(spec))
    nodes = {node.name: node for node in model.graph.node}
    leaves = [path for path, *_ in spec.leaves]
    assert [n.name for n in model.graph.node if n.op_type not in ("Add", "Concat")] == leaves
    assert [(n.name, n.op_type) for n in model.graph.node if n.op_type in ("Add", "Concat")] == [
        ("residual1.add", "Add"), ("inception1.concat", "Concat")]
    assert list(nodes["residual1.add"].input) == ["residual1.branch1.conv2", "residual1.branch2.conv1"]
    assert nodes["residual1.branch1.conv1"].input[0] == nodes["residual1.branch2.conv1"].input[0] == "b1.act1"
    assert list(nodes["inception1.concat"].input) == ["residual1.act1", "inception1.branch2.dropout1",
                                                      "inception1.branch3.conv1"]
    assert [a.i for a in nodes["inception1.concat"].attribute if a.name == "axis"] == [1]
    assert nodes["flatten1"].input[0] == "inception1.concat"
    assert sorted(t.name for t in model.graph.initializer) == sorted(
        [*polylenet.param_shapes(spec), "inception1.branch2.dropout1.ratio"])
    tensors = output_tensors(spec)
    assert list(tensors) == [path for path, *_ in spec.outputs]
    assert [tensors[p] for p in ("b1", "residual1", "inception1", "dense1")] == [
        "b1.act1", "residual1.act1", "inception1.concat", "logits"]


def without_names(nodes):
    """``nodes`` as the import reads a graph without polylenet's node names: groups spliced into
    their parent, each block labelled after its merge, what a block's ``after`` held following it."""
    out = []
    for node in nodes:
        if node.type == "sequential":
            out += without_names(node.layers)
        elif node.type == "block":
            branches = tuple(without_names(branch) for branch in node.branches)
            out += [Block(node.merge, branches, (), "concat" if node.merge == "concat" else "residual"),
                    *without_names(node.after)]
        else:
            out.append(node)
    return tuple(out)


def leaf_arrays(spec, weights):
    """Each layer's arrays in the order the layers run, whatever their paths."""
    return [[weights[f"{path}.{key}"] for key in ("weight", "bias", "running_mean", "running_var")
             if f"{path}.{key}" in weights] for path, *_ in spec.leaves]


def same_arrays(a, b):
    return len(a) == len(b) and all(len(x) == len(y) and all(np.array_equal(u, v) for u, v in zip(x, y))
                                    for x, y in zip(a, b))


def test_a_graph_with_other_node_names_imports_as_blocks(tmp_path):
    """A framework's names (or none): the same blocks by the graph's shape alone, labelled as
    polylenet.concat and polylenet.add label theirs, no groups, an after layer following its block:
    the same function, bit for bit on the oracle."""
    spec, weights = BLOCK_EDGE, conformance_weights(BLOCK_EDGE)
    model = to_onnx(spec, weights)
    for index, node in enumerate(model.graph.node):
        node.name = f"/node_{index}" if index % 2 else ""
    imported, read = polylenet.import_onnx(save(model, tmp_path / "renamed.onnx"))
    assert imported.layers == without_names(spec.layers) != spec.layers
    assert [path for path, *_ in imported.table][:5] == ["conv1", "bn1", "act1", "residual1", "act2"]
    assert same_arrays(leaf_arrays(imported, read), leaf_arrays(spec, weights))
    x, _ = batches(spec, count=1, size=4)[0]
    assert np.array_equal(oracle_logits(imported, read, x), oracle_logits(spec, weights, x))


def save(model, path):
    del model.graph.value_info[:]
    onnx.save(model, path)
    return path


_R = (polylenet.conv2d(3, 3, padding=1), polylenet.activation("relu"))
NESTED = polylenet.Spec("nested-blocks", (
    polylenet.conv2d(3, 3, padding=1),
    # a three-branch sum (a chain of two Adds, from the left) with an after group
    polylenet.add(_R, (), (polylenet.conv2d(3, 1),),
                  after=(polylenet.sequential("tail", polylenet.activation("tanh"), polylenet.conv2d(4, 1)),)),
    # a concatenation whose first branch opens with a concatenation; a residual whose body is one
    polylenet.concat((polylenet.concat((), _R, label="inner"), polylenet.pool2d("max", 2)),
                     (polylenet.pool2d("avg", 2),), label="outer"),
    polylenet.add((polylenet.add((polylenet.conv2d(11, 3, padding=1),), ()),), ()),
    polylenet.concat((), (), label="twice"),  # one tensor read twice by the Concat node
    polylenet.flatten(), polylenet.dense(10)), input_shape=(2, 6, 6))


def test_nested_and_many_branch_blocks_round_trip(tmp_path):
    weights = conformance_weights(NESTED)
    path = polylenet.export_onnx(NESTED, tmp_path / "nested.onnx", weights)
    adds = [n.name for n in onnx.load(path).graph.node if n.op_type == "Add"]
    assert adds[:2] == ["residual1.add.sum2", "residual1.add"]
    x, _ = batches(NESTED, count=1, size=4)[0]
    assert np.max(np.abs(run(path, x) - oracle_logits(NESTED, weights, x))) <= 1e-5
    imported, read = polylenet.import_onnx(path)
    assert imported == NESTED
    assert sorted(read) == sorted(weights) and all(np.array_equal(read[k], weights[k]) for k in weights)


def nhwc_concat(spec, weights, block, flatten_nhwc):
    """``spec``'s export with ``block``'s Concat on (N, H, W, C) tensors, as a framework whose
    channel axis is the last writes it: each input transposed to NHWC, the concatenation on axis
    -1, then back to NCHW, or (``flatten_nhwc``) flattened in H*W*C order with the dense layer's
    columns to match."""
    model = to_onnx(spec, weights)
    graph = model.graph
    concat = next(n for n in graph.node if n.name == f"{block}.concat")
    index, output = list(graph.node).index(concat), concat.output[0]
    before = [helper.make_node("Transpose", [t], [f"{t}.nhwc"], f"to_nhwc{i}", perm=[0, 2, 3, 1])
              for i, t in enumerate(concat.input)]
    after = [] if flatten_nhwc else [helper.make_node("Transpose", ["nhwc"], [output], "to_nchw", perm=[0, 3, 1, 2])]
    inputs = [f"{t}.nhwc" for t in concat.input]
    del concat.input[:]
    concat.input.extend(inputs)
    concat.output[0] = output if flatten_nhwc else "nhwc"
    set_attr(concat, "axis", -1)
    nodes = list(graph.node)
    nodes = [*nodes[:index], *before, concat, *after, *nodes[index + 1:]]
    del graph.node[:]
    graph.node.extend(nodes)
    if flatten_nhwc:
        dense = next(n for n in graph.node if n.op_type == "Gemm").input[1]
        c, h, w = next(o for p, _, _, o in spec.outputs if p == block)[1:]
        hwc = weights[dense].reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(weights[dense].shape[0], -1)
        i = [j for j, t in enumerate(graph.initializer) if t.name == dense][0]
        graph.initializer[i].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(hwc), dense))
    return model


@pytest.mark.parametrize("flatten_nhwc", [False, True])
def test_a_concat_on_the_channel_axis_of_nhwc_tensors_is_a_concat_block(tmp_path, flatten_nhwc):
    spec, weights = BLOCK_EDGE, conformance_weights(BLOCK_EDGE)
    path = save(nhwc_concat(spec, weights, "inception1", flatten_nhwc), tmp_path / "nhwc.onnx")
    x, _ = batches(spec, count=1, size=4)[0]
    assert np.max(np.abs(run(path, x) - oracle_logits(spec, weights, x))) <= 1e-5
    imported, read = polylenet.import_onnx(path)
    assert imported == spec
    assert all(np.array_equal(read[k], weights[k]) for k in weights)


def test_a_concat_on_another_axis_is_refused(tmp_path):
    spec = polylenet.Spec("rows", (polylenet.conv2d(2, 3, padding=1),
                                   polylenet.concat((), (polylenet.conv2d(2, 1),)),
                                   polylenet.flatten(), polylenet.dense(10)), input_shape=(1, 4, 4))
    model = to_onnx(spec, conformance_weights(spec))
    set_attr(next(n for n in model.graph.node if n.op_type == "Concat"), "axis", 2)  # the same count of features
    with pytest.raises(OnnxError, match=r"'concat1.concat' \(Concat\): concatenates .* on axis 2; polylenet "
                       r"concatenates on the channel axis \(1 here\)"):
        polylenet.import_onnx(save(model, tmp_path / "rows.onnx"))


def test_a_graph_that_is_not_series_parallel_is_refused(tmp_path):
    """x -> conv -> relu (u); conv_a(u) + conv_b(x) meets a branch of the fork at u with one of
    the fork at x: no block holds it."""
    rng = np.random.default_rng(0)
    arrays = {"w": (2, 1, 3, 3), "wa": (2, 2, 3, 3), "wb": (2, 2, 3, 3), "wd": (10, 32)}
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [helper.make_node("Conv", ["input", "w"], ["x"], "conv", **conv),
             helper.make_node("Relu", ["x"], ["u"], "relu"),
             helper.make_node("Conv", ["u", "wa"], ["a"], "conv_a", **conv),
             helper.make_node("Conv", ["x", "wb"], ["b"], "conv_b", **conv),
             helper.make_node("Add", ["a", "b"], ["ab"], "crossing"),
             helper.make_node("Add", ["ab", "u"], ["abu"], "closing"),
             helper.make_node("Flatten", ["abu"], ["flat"], "flatten"),
             helper.make_node("Gemm", ["flat", "wd"], ["logits"], "dense", transB=1)]
    graph = helper.make_graph(
        nodes, "crossing", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), k) for k, s in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", polylenet.onnxfile.opset())])
    model.ir_version = polylenet.onnxfile.IR_VERSION
    with pytest.raises(OnnxError, match=r"'crossing' \(Add\): joins tensors that do not all branch from tensor "
                       r"'u': not a series-parallel graph"):
        polylenet.import_onnx(save(model, tmp_path / "crossing.onnx"))


def test_a_branch_that_goes_nowhere_is_refused(tmp_path):
    def dangling(graph):
        graph.node.insert(1, helper.make_node("Relu", ["conv1"], ["unused"], "stray"))

    with pytest.raises(OnnxError, match=r"tensor 'unused' feeds no node and is not the graph's output"):
        polylenet.import_onnx(with_node_change(tmp_path, dangling))


@pytest.mark.parametrize("variant", ["resnet18", "googlenet", "densenet"])
def test_a_block_cnn_exports_runs_and_imports_back(variant, tmp_path):
    """d2l's GoogLeNet, ResNet-18 and DenseNet at 96x96, two images. Measured with the
    conformance weights (ONNX Runtime 1.31, this CPU): logits within 6.1e-7 of the oracle's
    relative to the largest (ResNet-18: 3.8e-5 on logits up to 63; GoogLeNet 2.8e-7, DenseNet
    4.6e-7), and the import returns the spec and its weights bit for bit."""
    spec = polylenet.load_spec(variant)
    weights = conformance_weights(spec)
    path = polylenet.export_onnx(spec, tmp_path / f"{variant}.onnx", weights)
    x, _ = batches(spec, count=1, size=2)[0]
    error = relative_error(run(path, x), oracle_logits(spec, weights, x))
    assert error <= 1e-5, error
    imported, read = polylenet.import_onnx(path)
    assert imported == spec
    assert sorted(read) == sorted(weights)
    for key in weights:
        assert np.array_equal(read[key], weights[key]), key
