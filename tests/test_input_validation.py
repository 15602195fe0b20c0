"""No silent wrong answers (issue 28): labels, batches, limits and command-line arguments that
would have been truncated, wrapped, scored under the wrong spec or left to a framework's own
error are each one InputError/SpecError/CheckpointError, or one `polylenet: error:` line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import polylenet
from polylenet.errors import CheckpointError, InputError, PolylenetError, SpecError
from polylenet.spec import spec_from_dict
from polylenet.training import checkpoint_spec

X = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "polylenet", *args], capture_output=True, text=True, env=env)


def one_error_line(result, message):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("polylenet: error:"), result.stderr
    assert message in lines[0], lines[0]


@pytest.fixture(scope="module")
def numpy_model():
    return polylenet.build("lenet5", backend="numpy")


@pytest.mark.parametrize("y, message", [
    (np.array([0.5, 1, 2]), "float labels are refused, even whole-valued ones: pass y.astype(np.int64)"),
    (np.array([0, 1, 2]) + 2**32, "got 4294967296 .. 4294967298"),  # an int32 cast would make them 0, 1, 2
    (np.array([0, 1, 10]), "must lie in [0, 10) (spec 'lenet5' has num_classes=10), got 0 .. 10"),
    (np.array([-1, 1, 2]), "got -1 .. 2"),
    (np.array([0, 1]), "one per image of x, got int64 of shape (2,)"),
])
def test_labels_are_validated_before_the_backend(numpy_model, y, message):
    with pytest.raises(InputError) as caught:
        polylenet.loss_and_grads(numpy_model, X, y)
    assert message in str(caught.value)
    assert isinstance(caught.value, PolylenetError)


def test_bad_masks_and_pixels_are_input_errors(numpy_model):
    with pytest.raises(InputError, match="exactly the spec's dropout layers"):
        polylenet.loss_and_grads(numpy_model, X, [0, 1, 2], masks={"dropout1": np.ones((3, 4), np.float32)})
    with pytest.raises(InputError, match="got uint8 values; scale them first"):
        polylenet.forward(numpy_model, (X * 255).astype(np.uint8))
    with pytest.raises(InputError, match="holds NaN or infinite values"):
        polylenet.forward(numpy_model, np.full_like(X, np.nan))


def test_an_empty_batch_forwards_to_no_rows_but_has_no_loss(numpy_model):
    empty = X[:0]
    assert polylenet.forward(numpy_model, empty).shape == (0, 10)
    assert polylenet.layer_outputs(numpy_model, empty)[-1][1].shape == (0, 10)
    assert polylenet.evaluate(numpy_model, empty, np.zeros(0, np.int64)) == 0.0
    with pytest.raises(InputError, match="empty batch"):
        polylenet.loss_and_grads(numpy_model, empty, np.zeros(0, np.int64))
    with pytest.raises(InputError, match="empty batch"):
        polylenet.trainer(numpy_model, lr=0.1)(empty, np.zeros(0, np.int64))


def test_a_huge_input_dimension_is_blamed_on_the_input_shape():
    data = {**polylenet.load_spec("lenet5").to_dict(), "input_shape": [1, 10**12, 28]}
    with pytest.raises(SpecError, match=r"x.json: spec 'lenet5': input_shape \[1, 1000000000000, 28\] holds "
                                        r"28,000,000,000,000 values per image, over the limit of 100,000,000"):
        spec_from_dict(data, "x.json")


def test_a_bad_limit_variable_breaks_only_what_uses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYLENET_MAX_PARAMETERS", "abc")
    env = dict(os.environ)
    assert run("--help", env=env).returncode == 0
    assert run("shapes", "--spec", "lenet-relu", env=env).returncode == 0  # the named variants need no limit
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps({"name": "tiny", "layers": [{"type": "flatten"}, {"type": "dense", "units": 10}]}))
    one_error_line(run("shapes", "--spec", str(spec), env=env),
                   "$POLYLENET_MAX_PARAMETERS must be a whole number >= 1, got 'abc'; set it to a count such as "
                   "100000000 (the default) or unset it")


def test_evaluate_refuses_a_checkpoint_of_another_spec(tmp_path):
    relu = polylenet.load_spec("lenet-relu")  # the same weight shapes as lenet5
    path = polylenet.save_checkpoint(tmp_path / "relu.npz", polylenet.init_weights(relu),
                                     {"epoch": 1, "spec": relu.to_dict()})
    one_error_line(run("evaluate", "--backend", "numpy", "--checkpoint", str(path), "--spec", "lenet5"),
                   f"{path} was saved for spec 'lenet-relu', not 'lenet5' (they differ: first at layer 1: "
                   "{'type': 'activation', 'fn': 'relu'} vs {'type': 'activation', 'fn': 'sigmoid'}); leave "
                   "--spec out to use the checkpoint's spec")


def test_a_checkpoints_spec_under_another_name_or_none_recorded_is_taken(tmp_path):
    lenet = polylenet.load_spec("lenet5")
    renamed = spec_from_dict({**lenet.to_dict(), "name": "imported"})
    meta = {"epoch": 1, "spec": lenet.to_dict()}
    assert checkpoint_spec(meta, "c.npz", renamed) is renamed
    assert checkpoint_spec(meta, "c.npz") == lenet
    assert checkpoint_spec({"epoch": 1}, "old.npz", renamed) is renamed  # an older file: no spec recorded
    with pytest.raises(CheckpointError, match="old.npz records no spec; name it with --spec"):
        checkpoint_spec({"epoch": 1}, "old.npz")
    bn = polylenet.load_spec("lenet-bn")
    with pytest.raises(CheckpointError, match=r"saved for spec 'lenet5', not 'lenet-bn' .*first at layer 0"):
        checkpoint_spec(meta, "c.npz", bn)


def test_diff_refuses_an_unknown_backend_and_a_python_without_equals():
    one_error_line(run("diff", "--backends", "numpy,nosuch"),
                   "unknown backend 'nosuch'; known backends: numpy, torch")
    one_error_line(run("diff", "--backends", "numpy,numpy", "--python", "torch"),
                   "got 'torch': expected BACKEND=PYTHON, e.g. torch=.tox/torch/bin/python")
