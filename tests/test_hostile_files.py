"""Foreign and damaged model files (issue 28): an ONNX file or a weights .npz is refused with one
clear error before it can take memory far beyond its size, whatever is wrong with it, and NaN or
infinite weights are refused wherever weights come in."""

import io
import os
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

import polylenet
from polylenet import CheckpointError, OnnxError, WeightsError
from polylenet.cli import main

pytestmark = pytest.mark.skipif("numpy" not in os.environ.get("POLYLENET_TEST_BACKENDS", "numpy").split(","),
                                reason="framework-free: runs once, in the core env (it tests numpy)")
onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install 'polylenet[onnx]'")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from polylenet.onnxfile import to_onnx  # noqa: E402

PEAK_MB = 200  # what one read of a hostile file may take (a valid lenet5 file: a few MB)


def run(*args):
    return subprocess.run([sys.executable, "-m", "polylenet", *args], capture_output=True, text=True)


def peak_mb(read, *args):
    """Call ``read(*args)`` and return (its result or the PolylenetError it raised, its peak of traced
    memory in MB: NumPy's arrays included)."""
    tracemalloc.start()
    try:
        result = read(*args)
    except polylenet.PolylenetError as exc:
        result = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return result, peak


def lenet5():
    return to_onnx(polylenet.load_spec("lenet5"), polylenet.init_weights("lenet5"))


def with_computed_bias(model, op, inputs, constants):
    """``model`` with conv1's bias computed at import: the first 6 values of ``op(inputs)``."""
    graph = model.graph
    graph.initializer.remove(next(t for t in graph.initializer if t.name == "conv1.bias"))
    constants = {**constants, "starts": np.array([0], np.int64), "ends": np.array([6], np.int64)}
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    graph.node.insert(0, helper.make_node("Slice", ["huge", "starts", "ends"], ["conv1.bias"], "bias_slice"))
    attrs = {"value": numpy_helper.from_array(np.array([0.5], np.float32))} if op == "ConstantOfShape" else {}
    graph.node.insert(0, helper.make_node(op, inputs, ["huge"], "huge", **attrs))
    del graph.value_info[:]
    return model


def save(model, path):
    onnx.save(model, path)
    return path


# ------------------------------------------------------------------------------ ONNX: memory

@pytest.mark.parametrize("values", [250_000_000, 10**12])
def test_a_huge_computed_constant_is_refused_before_it_is_allocated(tmp_path, values):
    """A 248 KB file whose conv1 bias is ConstantOfShape([2.5e8])[:6] took 1.05 GB and imported;
    with 10**12 it was a MemoryError."""
    model = with_computed_bias(lenet5(), "ConstantOfShape", ["shape"], {"shape": np.array([values], np.int64)})
    path = save(model, tmp_path / "huge.onnx")
    assert path.stat().st_size < 250_000
    error, peak = peak_mb(polylenet.import_onnx, path)
    assert isinstance(error, OnnxError), error
    assert f"'huge' (ConstantOfShape): computing its outputs, of shapes [({values},)], takes {values:,} values, " \
           "over the limit of 100,000,000" in str(error)
    assert peak < PEAK_MB


def test_an_expand_to_a_negative_shape_is_refused_not_an_abort(tmp_path):
    """ONNX 1.23's whole-graph shape inference aborts the process (a C++ assertion) on an Expand to
    [-1] before a Slice: the CLI died of SIGABRT."""
    model = with_computed_bias(lenet5(), "Expand", ["one", "shape"],
                               {"one": np.ones(1, np.float32), "shape": np.array([-1], np.int64)})
    result = run("import", str(save(model, tmp_path / "expand.onnx")), "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "'huge' (Expand): its output 'huge' has a negative dimension [-1]" in result.stderr


def keras_flatten_model(side):
    """(N, 1, side, side) images, a conv and a 100x100 max pool, then Keras's flatten: a Reshape to
    (Shape(x)[0], -1), a shape computed from the activations'."""
    features = 6 * ((side - 4 - 100) // 100 + 1) ** 2
    arrays = {"conv1.weight": np.full((6, 1, 5, 5), 0.1, np.float32), "conv1.bias": np.zeros(6, np.float32),
              "dense1.weight": np.full((10, features), 0.01, np.float32), "dense1.bias": np.zeros(10, np.float32),
              "zero": np.array([0], np.int64), "minus_one": np.array([-1], np.int64)}
    nodes = [helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["conv1"], "conv1", kernel_shape=[5, 5]),
             helper.make_node("MaxPool", ["conv1"], ["pool1"], "pool1", kernel_shape=[100, 100], strides=[100, 100]),
             helper.make_node("Shape", ["pool1"], ["shape"], "shape"),
             helper.make_node("Gather", ["shape", "zero"], ["batch"], "batch", axis=0),
             helper.make_node("Concat", ["batch", "minus_one"], ["target"], "target", axis=0),
             helper.make_node("Reshape", ["pool1", "target"], ["flatten1"], "flatten1"),
             helper.make_node("Gemm", ["flatten1", "dense1.weight", "dense1.bias"], ["logits"], "dense1", transB=1)]
    graph = helper.make_graph(nodes, "keras", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                             ["N", 1, side, side])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
                              [numpy_helper.from_array(value, name) for name, value in arrays.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_shape_computed_from_large_activations_is_read_without_computing_them(tmp_path):
    """The Reshape's target was evaluated by running the graph on a batch of 3 images: a 4000x4000
    input reached 6.6 GB. The Shape node now reads its input's inferred shape."""
    path = save(keras_flatten_model(2000), tmp_path / "keras.onnx")
    (spec, weights), peak = peak_mb(polylenet.import_onnx, path)
    assert [layer.type for layer in spec.layers] == ["conv2d", "pool2d", "flatten", "dense"]
    assert spec.input_shape == (1, 2000, 2000) and weights["dense1.weight"].shape == (10, 6 * 19 * 19)
    assert peak < PEAK_MB


# ---------------------------------------------------------------------------- ONNX: damage

def damaged_onnx(tmp_path, change):
    raw = change(lenet5())
    path = tmp_path / "damaged.onnx"
    path.write_bytes(raw if isinstance(raw, bytes) else raw.SerializeToString())
    return path


def _unknown_data_type(model):
    next(t for t in model.graph.initializer if t.name == "conv1.weight").data_type = 95
    return model


def _name_not_utf8(model):  # pool1's node name (NodeProto field 3), not its output (field 2)
    raw = model.SerializeToString()
    assert raw.count(b"\x1a\x05pool1") == 1
    return raw.replace(b"\x1a\x05pool1", b"\x1a\x05pool\xff")


@pytest.mark.parametrize("change, message", [
    (_unknown_data_type, "initializer 'conv1.weight' holds no readable tensor of shape [6, 1, 5, 5] (KeyError"),
    (_name_not_utf8, r"node 2 ('AveragePool') has a name that is not UTF-8 (b'pool\xff')"),
], ids=["data type 95", "name not UTF-8"])
def test_a_damaged_onnx_file_is_an_onnx_error_naming_the_field(tmp_path, change, message):
    """KeyError and TypeError escaped import_onnx (the tests/test_fuzz.py mutations found them)."""
    path = damaged_onnx(tmp_path, change)
    with pytest.raises(OnnxError) as error:
        polylenet.import_onnx(path)
    assert f"{path}: {message}" in str(error.value)


# --------------------------------------------------------------------------- .npz: memory

def npz(path, arrays, method=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", method) as archive:
        for key, value in arrays.items():
            member = io.BytesIO()
            np.save(member, value)
            archive.writestr(f"{key}.npy", member.getvalue())
    return path


def test_a_weights_file_hiding_a_huge_array_is_refused_before_decompressing(tmp_path, monkeypatch):
    """A 1.2 MB .npz holding 1 GB of zeros was decompressed whole before its keys and shapes were
    checked; here the same bomb at a limit of 10**6 values (a 16 MB array in a 70 KB file)."""
    monkeypatch.setenv("POLYLENET_MAX_PARAMETERS", str(10**6))
    weights = polylenet.init_weights("lenet5")
    path = npz(tmp_path / "bomb.npz", {**weights, "dense1.weight": np.zeros(4 * 10**6, np.float32)})
    assert path.stat().st_size < 100_000
    error, peak = peak_mb(polylenet.load_weights, path)
    assert isinstance(error, WeightsError), error
    assert "bomb.npz: its arrays declare 4,013,706 values (dense1.weight alone (4000000,)), over the limit of " \
           "1,000,000 parameters" in str(error)
    assert peak < 4  # MB: the headers alone were read
    monkeypatch.delenv("POLYLENET_MAX_PARAMETERS")
    spec = polylenet.load_spec("lenet5")
    with pytest.raises(WeightsError, match=r"dense1.weight has shape \(4000000,\), spec 'lenet5' needs \(120, 400\)"):
        polylenet.load_weights(path, spec)  # the spec's shapes, checked before decompressing too


def npy_claiming(elements):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": (elements,)})
    return buffer.getvalue() + b"\0" * 64


def test_a_huge_npy_header_is_refused(tmp_path):
    """An .npy header claiming 10**11 elements was a MemoryError, as --weights and inside an .npz."""
    bare = tmp_path / "huge.npy"
    bare.write_bytes(npy_claiming(10**11))
    with pytest.raises(WeightsError, match="huge.npy is a single .npy array, not an .npz of named arrays"):
        polylenet.load_weights(bare)
    inside = tmp_path / "inside.npz"
    with zipfile.ZipFile(inside, "w") as archive:
        archive.writestr("conv1.weight.npy", npy_claiming(10**11))
    with pytest.raises(WeightsError, match=r"declare 100,000,000,000 values .* over the limit of 100,000,000"):
        polylenet.load_weights(inside)


# ----------------------------------------------------------------------- .npz: damage, CLI

def weights_files(tmp_path):
    """Damaged weights and checkpoint files: name -> path."""
    weights = polylenet.init_weights("lenet5")
    good = polylenet.save_weights(weights, tmp_path / "good.npz")
    raw = good.read_bytes()
    at = raw.find(weights["dense1.weight"].tobytes()) + 1000  # inside dense1.weight's data: its CRC fails
    nan = {**weights, "conv1.weight": weights["conv1.weight"].copy()}
    nan["conv1.weight"].flat[[3, 7, 11]] = np.nan
    buffer = io.BytesIO()
    np.save(buffer, weights["conv1.weight"])
    checkpoint = polylenet.save_checkpoint(tmp_path / "checkpoint-epoch01.npz", weights, {"epoch": 1})
    files = {"truncated.npz": raw[: len(raw) // 2], "flipped.npz": raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:],
             "empty.npz": b"", "conv1.npy": buffer.getvalue(),
             "checkpoint-epoch02.npz": checkpoint.read_bytes()[:-100]}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    polylenet.save_weights(nan, tmp_path / "nan.npz")
    return tmp_path


EVALUATE = ["evaluate", "--backend", "numpy"]
DAMAGED = {  # command, file -> the message of its one line
    "evaluate truncated": (EVALUATE + ["--weights", "truncated.npz"],
                           "truncated.npz is not a readable neutral weights file (damaged, truncated or another"),
    "export bit-flipped": (["export", "--weights", "flipped.npz", "--out", "x.onnx"],
                           "flipped.npz is not a readable neutral weights file (damaged, truncated or another kind "
                           "of file: BadZipFile: Bad CRC-32 for file 'dense1.weight.npy')"),
    "diff empty": (["diff", "--backends", "numpy,numpy", "--weights", "empty.npz"],
                   "empty.npz is not a readable neutral weights file"),
    "export npy": (["export", "--weights", "conv1.npy", "--out", "x.onnx"],
                   "conv1.npy is a single .npy array, not an .npz of named arrays (a neutral weights file); give "
                   "the weights.npz that polylenet.save_weights or `polylenet import` wrote"),
    "evaluate checkpoint truncated": (EVALUATE + ["--checkpoint", "checkpoint-epoch02.npz"],
                                      "checkpoint-epoch02.npz is not a readable polylenet checkpoint"),
    "evaluate nan": (EVALUATE + ["--weights", "nan.npz"], "nan.npz: conv1.weight holds 3 NaN values; polylenet "
                     "refuses non-finite weights"),
    "export nan": (["export", "--weights", "nan.npz", "--out", "x.onnx"], "nan.npz: conv1.weight holds 3 NaN"),
}


@pytest.fixture(scope="module")
def damaged_folder(tmp_path_factory):
    return weights_files(tmp_path_factory.mktemp("damaged"))


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_weights_file_is_one_clear_line(case, damaged_folder, monkeypatch, capsys):
    """BadZipFile, EOFError and TypeError were "unexpected error" lines (exit 1); NaN weights were
    evaluated and exported. The CLI's main in this process (no interpreter start per case)."""
    monkeypatch.chdir(damaged_folder)
    monkeypatch.delenv("POLYLENET_DATA", raising=False)
    args, message = DAMAGED[case]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("polylenet: error:"), lines
    assert message in lines[0], lines[0]
    assert not (damaged_folder / "x.onnx").exists()


# --------------------------------------------------------------------------- NaN and inf

def test_non_finite_weights_are_refused_wherever_weights_come_in(tmp_path, damaged_folder):
    weights = polylenet.init_weights("lenet5")
    weights["dense3.bias"] = weights["dense3.bias"].copy()
    weights["dense3.bias"][[0, 4]] = [np.inf, np.nan]
    message = "dense3.bias holds 1 NaN and 1 infinite values; polylenet refuses non-finite weights"
    with pytest.raises(WeightsError, match=f"^weights: {message}"):
        polylenet.build("lenet5", backend="numpy", weights=weights)
    with pytest.raises(WeightsError, match=f"^weights: {message}"):
        polylenet.export_onnx("lenet5", tmp_path / "nan.onnx", weights)
    assert not (tmp_path / "nan.onnx").exists()
    with pytest.raises(CheckpointError, match=f"nan-checkpoint.npz: {message}"):
        polylenet.load_checkpoint(polylenet.save_checkpoint(tmp_path / "nan-checkpoint.npz", weights, {"epoch": 1}))
    with pytest.raises(WeightsError, match="nan.npz: conv1.weight holds 3 NaN values"):
        polylenet.load_weights(damaged_folder / "nan.npz")
    weights["dense3.bias"][:] = 0
    weights["dense1.weight"] = weights["dense1.weight"].astype(np.float64) * 1e300  # inf as float32
    with pytest.raises(WeightsError, match="dense1.weight holds 48,000 infinite values"):
        polylenet.build("lenet5", backend="numpy", weights=weights)


def test_an_onnx_file_with_nan_weights_is_refused(tmp_path):
    model = lenet5()
    weight = next(t for t in model.graph.initializer if t.name == "conv1.weight")
    values = numpy_helper.to_array(weight).copy()
    values.flat[:3] = np.nan
    weight.CopyFrom(numpy_helper.from_array(values, "conv1.weight"))
    path = save(model, tmp_path / "nan.onnx")
    with pytest.raises(OnnxError, match="nan.onnx: conv1.weight holds 3 NaN values; polylenet refuses non-finite"):
        polylenet.import_onnx(path)
