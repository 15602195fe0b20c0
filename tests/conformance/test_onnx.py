"""ONNX files polylenet writes run on ONNX Runtime to the oracle's numbers and read back
bit-exactly; graphs it cannot map exactly are refused, naming the node and the attribute.

Framework-free: these run in every environment that has the onnx extra (the core env included).
"""

import numpy as np
import pytest

import polylenet
from cases import EDGE, batches, conformance_weights
from polylenet.errors import OnnxError
from polylenet.onnxfile import to_onnx

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install 'polylenet[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install 'polylenet[onnx]'")
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
    # measured: at most 4.8e-7 over the variants and edge specs (ONNX Runtime 1.31, this CPU)
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
    (lambda g: set_attr(g.node[0], "pads", [2, 2, 3, 3]), r"'conv1' \(Conv\): pads=\[2, 2, 3, 3\] are asymmetric"),
    (lambda g: set_attr(g.node[2], "ceil_mode", 1), r"'pool1' \(AveragePool\): ceil_mode=1"),
    (lambda g: set_attr(g.node[0], "strides", [1, 2]), r"'conv1' \(Conv\): strides=\[1, 2\]"),
    (lambda g: setattr(g.node[1], "op_type", "Softplus"), r"'act1' \(Softplus\): no polylenet layer"),
    (lambda g: scale(g.node[1], g), r"'act1' \(Mul\): .*loses its running statistics"),
])
def test_a_graph_polylenet_cannot_map_is_refused_naming_node_and_attribute(tmp_path, change, message):
    with pytest.raises(OnnxError, match=message):
        polylenet.import_onnx(with_node_change(tmp_path, change))


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
