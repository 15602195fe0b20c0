"""Fuzzing the readers of untrusted files: whatever the bytes, each one raises its own clear error
(SpecError, DataError, CheckpointError, WeightsError, OnnxError) or succeeds — never another
exception, never a hang, never memory far beyond the file's size."""

import gzip
import io
import json
import os
import random
import struct
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import polylenet
from polylenet import CheckpointError, DataError, SpecError
from polylenet.spec import spec_from_dict

EXAMPLES = int(os.environ.get("POLYLENET_FUZZ_EXAMPLES", "150"))  # 1500 ran clean in core and mxnet
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True),
                    st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                           max_leaves=20)
layer_dicts = st.fixed_dictionaries(
    {"type": st.sampled_from(["conv2d", "pool2d", "activation", "flatten", "dense", "batchnorm", "conv3d"])},
    optional={"out_channels": scalars, "kernel": scalars, "stride": scalars, "padding": scalars, "kind": scalars,
              "size": scalars, "fn": st.sampled_from(["relu", "sigmoid", "tanh", "gelu"]), "units": scalars,
              "momentum": scalars, "eps": scalars, "extra": scalars})


@FAST
@given(st.one_of(json_values, st.fixed_dictionaries({"layers": st.lists(layer_dicts, max_size=6)},
                                                   optional={"input_shape": json_values, "num_classes": scalars})))
def test_spec_documents_load_or_raise_spec_error(document):
    try:
        spec = spec_from_dict(document, "fuzz.json")
    except SpecError:
        return
    assert polylenet.spec_layer_shapes(spec)[-1][1][1] == spec.num_classes


@FAST
@given(st.text(max_size=300))
def test_spec_files_load_or_raise_spec_error(tmp_path_factory, text):
    pytest.importorskip("yaml")
    folder = tmp_path_factory.mktemp("specs")
    for suffix in (".json", ".yaml"):
        path = folder / f"spec{suffix}"
        path.write_text(text)
        try:
            polylenet.load_spec(str(path))
        except SpecError:
            pass


def _idx_bytes():
    raw = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", 2, 4, 4) + bytes(range(32))
    return raw


@FAST
@given(st.one_of(st.binary(max_size=200),
                 st.lists(st.tuples(st.integers(0, 43), st.integers(0, 255)), min_size=1, max_size=6)))
def test_idx_bytes_read_or_raise_data_error(tmp_path_factory, mutation):
    if isinstance(mutation, bytes):
        raw = mutation
    else:  # a valid file with some bytes changed
        raw = bytearray(_idx_bytes())
        for index, value in mutation:
            raw[index] = value
        raw = bytes(raw)
    folder = tmp_path_factory.mktemp("idx")
    for path, data in ((folder / "a.idx", raw), (folder / "a.gz", gzip.compress(raw)), (folder / "b.gz", raw)):
        path.write_bytes(data)
        try:
            polylenet.read_idx(path)
        except DataError:
            pass


@pytest.fixture(scope="module")
def checkpoint_bytes():
    buffer = io.BytesIO()
    weights = polylenet.init_weights("lenet-bn", 0)
    arrays = {f"weight:{k}": v for k, v in weights.items()}
    arrays["meta.json"] = np.frombuffer(json.dumps({"epoch": 1}).encode(), np.uint8)
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@FAST
@given(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8), st.floats(0.05, 1))
def test_checkpoint_bytes_load_or_raise_checkpoint_error(tmp_path_factory, checkpoint_bytes, flips, keep):
    raw = bytearray(checkpoint_bytes[: max(1, int(len(checkpoint_bytes) * keep))])
    for where, value in flips:
        raw[int(where * (len(raw) - 1))] = value
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint-epoch01.npz"
    path.write_bytes(bytes(raw))
    try:
        polylenet.load_checkpoint(path)
    except CheckpointError:
        pass


# ---------------------------------------------------------------- foreign ONNX and .npz files
# Thousands of damaged copies of polylenet's own files, read in one child process (seeded: a failure
# reruns as it was): each read succeeds or raises a PolylenetError, and the child's peak memory stays
# near what it took before them (a 248 KB ONNX file once unfolded a 1 GB constant).
FILE_CASES = int(os.environ.get("POLYLENET_FUZZ_FILES", "500"))  # .npz cases of each kind; ONNX: twice
PEAK_GROWTH_MB = 200
CORE_ONLY = pytest.mark.skipif("numpy" not in os.environ.get("POLYLENET_TEST_BACKENDS", "numpy").split(","),
                               reason="framework-free: runs once, in the core env (it tests numpy)")
HOSTILE = [0, -1, 3, 10**6, 10**9, 10**12, 2**62]


def _offsets_outside(raw, blobs):
    """The offsets of ``raw`` outside the large ``blobs`` in it (the weights): where its structure is."""
    offsets, start = [], 0
    for at, size in sorted((raw.find(blob), len(blob)) for blob in blobs):
        offsets.extend(range(start, at))
        start = at + size
    return offsets + list(range(start, len(raw)))


def _damaged(rng, raw, offsets):
    """``raw`` with 1 to 4 bytes changed (mostly at ``offsets``), one time in ten truncated too."""
    damaged = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        damaged[rng.choice(offsets) if rng.random() < 0.9 else rng.randrange(len(raw))] = rng.randrange(256)
    return bytes(damaged[: rng.randrange(len(raw))] if rng.random() < 0.1 else damaged)


def _computed_bias(rng, graph):
    """conv1's bias computed at import: a slice of a ConstantOfShape, Expand, Tile or Range of a
    hostile size."""
    from onnx import helper, numpy_helper

    n = rng.choice(HOSTILE)
    op, inputs = rng.choice([("ConstantOfShape", ["h.shape"]), ("Expand", ["h.one", "h.shape"]),
                             ("Tile", ["h.one", "h.shape"]), ("Range", ["h.zero", "h.n", "h.step"])])
    constants = {"h.shape": np.array([n] * rng.randint(1, 2), np.int64), "h.one": np.ones(1, np.float32),
                 "h.zero": np.array(0.0, np.float32), "h.n": np.array(float(n), np.float32),
                 "h.step": np.array(1.0, np.float32), "h.starts": np.array([0], np.int64),
                 "h.ends": np.array([6], np.int64)}
    graph.initializer.remove(next(t for t in graph.initializer if t.name == "conv1.bias"))
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    graph.node.insert(0, helper.make_node("Slice", ["h.out", "h.starts", "h.ends"], ["conv1.bias"], "h.slice"))
    graph.node.insert(0, helper.make_node(op, inputs, ["h.out"], "h.hostile"))


def _computed_flatten(rng, graph):
    """The flatten as Keras exports it, a Reshape to (Shape(x)[0], -1), on an input of a hostile size."""
    from onnx import helper, numpy_helper

    side = rng.choice([28, 4000, 10**5])
    for dim in graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_value = side
    flatten = next(node for node in graph.node if node.op_type == "Flatten")
    source, output, at = flatten.input[0], flatten.output[0], list(graph.node).index(flatten)
    graph.node.remove(flatten)
    graph.initializer.extend([numpy_helper.from_array(np.array([0], np.int64), "k.zero"),
                              numpy_helper.from_array(np.array([-1], np.int64), "k.minus_one")])
    for node in reversed([helper.make_node("Shape", [source], ["k.shape"], "k.shape"),
                          helper.make_node("Gather", ["k.shape", "k.zero"], ["k.batch"], "k.batch", axis=0),
                          helper.make_node("Concat", ["k.batch", "k.minus_one"], ["k.target"], "k.target", axis=0),
                          helper.make_node("Reshape", [source, "k.target"], [output], "flatten1")]):
        graph.node.insert(at, node)


def _changed_field(rng, graph):
    """One field polylenet reads set to a hostile value: a dimension, an attribute (or its kind), an
    initializer's shape or type, a node's operator or one of its inputs."""
    from onnx import helper

    node = rng.choice(graph.node)
    kind = rng.randrange(5)
    if kind == 0:
        graph.input[0].type.tensor_type.shape.dim[rng.randrange(4)].dim_value = rng.choice(HOSTILE[1:])
    elif kind == 1 and node.attribute:
        attr = rng.choice(node.attribute)
        value = rng.choice([[rng.choice(HOSTILE)] * rng.randint(1, 5), rng.choice(HOSTILE), 1.5, "SAME_LOWER"])
        node.attribute.remove(attr)
        node.attribute.append(helper.make_attribute(attr.name, value))
    elif kind == 2:
        tensor = rng.choice(graph.initializer)
        if rng.random() < 0.5:
            tensor.dims[rng.randrange(len(tensor.dims))] = rng.choice(HOSTILE)
        else:
            tensor.data_type = rng.choice([0, 2, 6, 7, 9, 10, 11, 16, 99])
    elif kind == 3:
        node.op_type = rng.choice(["Expand", "Tile", "Range", "Resize", "Pad", "Reshape", "Shape", "Slice", "Gather",
                                   "MatMul", "NonZero", "Loop", "ConstantOfShape", "Einsum", "Identity"])
    else:
        names = [t.name for t in graph.initializer] + [o for n in graph.node for o in n.output] + ["input", ""]
        node.input[rng.randrange(len(node.input))] = rng.choice(names)


def _onnx_cases(rng, count):
    """Damaged copies of lenet5's ONNX export: bytes changed, or one field, computed constant or
    computed flatten of a hostile size (and its NaN weights, one copy in ten)."""
    import onnx
    from onnx import numpy_helper

    from polylenet.onnxfile import to_onnx

    model = to_onnx(polylenet.load_spec("lenet5"), polylenet.init_weights("lenet5"))
    raw = model.SerializeToString()
    offsets = _offsets_outside(raw, [t.raw_data for t in model.graph.initializer])
    for index in range(count):
        if index % 2 == 0:
            yield _damaged(rng, raw, offsets)
            continue
        copy = onnx.ModelProto.FromString(raw)
        if rng.random() < 0.1:
            weight = next(t for t in copy.graph.initializer if t.name == "conv1.weight")
            weight.CopyFrom(numpy_helper.from_array(np.full((6, 1, 5, 5), np.nan, np.float32), weight.name))
        rng.choice([_changed_field, _changed_field, _computed_bias, _computed_flatten])(rng, copy.graph)
        del copy.graph.value_info[:]
        yield copy.SerializeToString()


def _npy(rng):
    """An .npy header of a hostile shape, dtype or version, and a little data."""
    shape = tuple(rng.choice([0, 1, 6, 10**6, 10**11, 2**62]) for _ in range(rng.randint(0, 3)))
    header = {"descr": rng.choice(["<f4", ">f8", "<i8", "|O", "<c8", "|V8", "<U3", "|b1", [("a", "<f4")]]),
              "fortran_order": rng.random() < 0.2, "shape": shape}
    buffer = io.BytesIO()
    if rng.random() < 0.2:
        np.lib.format.write_array_header_2_0(buffer, header)
    else:
        np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))


def _npz_cases(rng, count, checkpoint):
    """Damaged copies of lenet5's weights (or a checkpoint of them): bytes changed, or a valid
    archive (of any compression, in one case in five with NaN weights) with a member added of a
    hostile header or name."""
    arrays = dict(_valid_arrays(checkpoint))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    raw = buffer.getvalue()
    offsets = _offsets_outside(raw, [v.tobytes() for v in arrays.values() if v.size > 16])
    nan = {**arrays, "weight:conv2.bias" if checkpoint else "conv2.bias": np.full(16, np.nan, np.float32)}
    templates = [_zipped(members, method) for members in (arrays, nan) for method in
                 (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)]
    names = [f"{'weight:' if checkpoint else ''}conv1.bias.npy", "extra.npy", "meta.json.npy", "notes.txt", "b.npy"]
    for index in range(count):
        if index % 2 == 0:
            yield _damaged(rng, raw, offsets)
            continue
        buffer = io.BytesIO(templates[rng.randrange(4) + 4 * (rng.random() < 0.2)])
        name = rng.choice(names)
        with warnings.catch_warnings(), zipfile.ZipFile(buffer, "a", rng.choice([0, 8, 12, 14])) as archive:
            warnings.simplefilter("ignore")  # a duplicate name is one of the cases
            archive.writestr(name, _npy(rng) if name.endswith(".npy") else b"hello")
        yield buffer.getvalue()


def _valid_arrays(checkpoint):
    """lenet5's initial weights as np.savez's arrays: of save_weights, or of save_checkpoint."""
    weights = polylenet.init_weights("lenet5")
    if not checkpoint:
        return weights
    return {**{f"weight:{k}": v for k, v in weights.items()},
            "meta.json": np.frombuffer(json.dumps({"epoch": 1}).encode(), np.uint8)}


def _zipped(arrays, method):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for key, value in arrays.items():
            member = io.BytesIO()
            np.save(member, value)
            archive.writestr(f"{key}.npy", member.getvalue())
    return buffer.getvalue()


def _read_all(kind, cases, folder):
    """Read every case as a file: how many were read and refused, and any other exception."""
    path = folder / {"onnx": "model.onnx", "weights": "weights.npz", "checkpoint": "checkpoint-epoch01.npz"}[kind]
    read = {"onnx": polylenet.import_onnx, "weights": polylenet.load_weights,
            "checkpoint": polylenet.load_checkpoint}[kind]
    outcomes, escaped = {"read": 0, "refused": 0}, []
    for index, raw in enumerate(cases):
        path.write_bytes(raw)
        try:
            read(path)
            outcomes["read"] += 1
        except polylenet.PolylenetError:
            outcomes["refused"] += 1
        except Exception as exc:  # noqa: BLE001 -- what the test reports
            escaped.append(f"{kind} case {index}: {type(exc).__name__}: {exc}"[:300])
    return {**outcomes, "escaped": escaped}


def fuzz_files(seed, count):
    """Run in a child process: every kind of damaged file read, the child's peak memory growth (MB)
    over reading the valid files, and the seconds it took."""
    import resource
    import tempfile
    import time

    rng = random.Random(seed)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for kind in ("onnx", "weights", "checkpoint"):  # the valid files first: what reading takes
            assert _read_all(kind, [_valid_file(kind)], folder)["read"] == 1
        before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
        for kind, cases in (("onnx", _onnx_cases(rng, 2 * count)), ("weights", _npz_cases(rng, count, False)),
                            ("checkpoint", _npz_cases(rng, count, True))):
            results[kind] = _read_all(kind, cases, folder)
        growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # KiB on Linux
    return {"results": results, "peak_growth_mb": growth, "seconds": time.perf_counter() - start}


def _valid_file(kind):
    if kind == "onnx":
        from polylenet.onnxfile import to_onnx

        return to_onnx(polylenet.load_spec("lenet5"), polylenet.init_weights("lenet5")).SerializeToString()
    buffer = io.BytesIO()
    np.savez(buffer, **_valid_arrays(kind == "checkpoint"))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def file_fuzz():
    pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install 'polylenet[onnx]'")
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import test_fuzz; "
            "print(json.dumps(test_fuzz.fuzz_files(int(sys.argv[2]), int(sys.argv[3]))))")
    seed = os.environ.get("POLYLENET_FUZZ_SEED", "0")
    child = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), seed, str(FILE_CASES)],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.splitlines()[-1])


@CORE_ONLY
@pytest.mark.parametrize("kind", ["onnx", "weights", "checkpoint"])
def test_damaged_files_are_read_or_raise_a_polylenet_error(file_fuzz, kind):
    result = file_fuzz["results"][kind]
    assert result["escaped"] == []
    assert result["refused"] > result["read"]  # the cases are damaged (most of them)


@CORE_ONLY
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_damaged_files_take_little_memory(file_fuzz):
    assert file_fuzz["peak_growth_mb"] < PEAK_GROWTH_MB, file_fuzz
