
import pytest

import polylenet
from polylenet import BackendError, BackendUnavailable


def test_numpy_is_always_available():
    assert "numpy" in polylenet.available_backends()
    assert set(polylenet.known_backends()) >= {"numpy", "torch", "tensorflow", "mxnet", "paddle", "mindspore", "jax",
                                               "onnxruntime"}


def test_unknown_backend_lists_known_ones():
    with pytest.raises(BackendError, match="unknown backend 'caffe'.*numpy, torch, tensorflow"):
        polylenet.build("lenet5", backend="caffe")


def test_backend_from_environment(monkeypatch):
    monkeypatch.setenv("POLYLENET_BACKEND", "numpy")
    assert polylenet.backend_of(polylenet.build("lenet5")) == "numpy"
    monkeypatch.setenv("POLYLENET_BACKEND", "nope")
    with pytest.raises(BackendError, match="unknown backend 'nope'"):
        polylenet.build("lenet5")


@pytest.mark.parametrize("name", ["torch", "tensorflow", "mxnet", "paddle", "mindspore", "jax"])
def test_missing_framework_names_the_extra(name):
    if name in polylenet.available_backends():
        pytest.skip(f"{name} is installed here")
    with pytest.raises(BackendUnavailable, match=rf'pip install "polylenet\[{name}\]"'):
        polylenet.build("lenet5", backend=name)


def test_no_framework_imported_by_the_core():
    import subprocess
    import sys
    frameworks = ("torch", "tensorflow", "mxnet", "paddle", "mindspore", "keras", "jax", "flax", "optax",
                  "onnx", "onnxruntime")
    code = ("import sys, polylenet, polylenet.cli, polylenet.runner, polylenet.diff, polylenet.report; "
            "polylenet.format_shape_table(polylenet.layer_shapes(polylenet.build('lenet5', backend='numpy'))); "
            f"print(sorted(m for m in {frameworks!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_model_not_built_by_polylenet():
    with pytest.raises(BackendError, match="not built by polylenet.build"):
        polylenet.forward(object(), None)


def test_declared_training_agrees_with_the_adapter():
    """compare picks the backends to train from the registry without importing them."""
    from polylenet.registry import BUILTIN, can_train

    for name in polylenet.available_backends():
        if name in BUILTIN:
            assert BUILTIN[name].trains == can_train(name), name
