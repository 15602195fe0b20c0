"""Fuzzing the readers of untrusted files: whatever the bytes, each one raises its own clear error
(SpecError, DataError, CheckpointError) or succeeds — never another exception, never a hang."""

import gzip
import io
import json
import os
import struct

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
