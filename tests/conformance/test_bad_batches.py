"""Bad batches and labels are refused by polylenet, before any framework sees them, with the same
InputError on every backend: labels that are not integers, out of range or of another length
than the batch, NaN pixels, and empty batches for a loss or a step (forward gives (0, classes)).

Each test runs in a fresh working folder and checks that nothing was written there (MindSpore's
failed graph compilation writes rank_0/om/analyze_fail.ir into the working folder)."""

import numpy as np
import pytest

import polylenet
from polylenet.errors import InputError, PolylenetError

X = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
Y = np.array([0, 3, 9, 1])
EMPTY = np.zeros((0, 1, 28, 28), np.float32)
_MODELS = {}


@pytest.fixture(autouse=True)
def clean_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    yield
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a refused batch left files in the working folder"


def model(backend):
    """One lenet5 per backend: a refused call changes nothing in it."""
    if backend not in _MODELS:
        _MODELS[backend] = polylenet.build("lenet5", backend=backend, seed=0)
    return _MODELS[backend]


BAD_LABELS = {
    "fraction": (np.array([0.5, 3, 9, 1]), r"got float64; float labels are refused, even whole-valued"),
    "whole floats": (Y.astype(np.float32), r"got float32; float labels are refused, even whole-valued"),
    "int64 past 2**32": (Y + 2**32, r"must lie in \[0, 10\) .*got 4294967296 \.\. 4294967305"),
    "label 10": (np.array([0, 3, 10, 1]), r"must lie in \[0, 10\) .*got 0 \.\. 10"),
    "label -1": (np.array([0, -1, 9, 1]), r"must lie in \[0, 10\) .*got -1 \.\. 9"),
    "one short": (Y[:3], r"shape \(N,\) = \(4,\), one per image of x, got int64 of shape \(3,\)"),
    "column": (Y[:, None], r"got int64 of shape \(4, 1\)"),
    "bool": (Y > 2, r"got bool"),
}


@pytest.mark.parametrize("case", sorted(BAD_LABELS))
def test_bad_labels_are_refused_alike(trainable, case):
    y, message = BAD_LABELS[case]
    with pytest.raises(InputError, match=message):
        polylenet.loss_and_grads(model(trainable), X, y)
    step = polylenet.trainer(model(trainable), lr=0.1)
    with pytest.raises(InputError, match=message):
        step(X, y)


def test_any_integer_dtype_is_taken(trainable):
    m = model(trainable)
    loss, _ = polylenet.loss_and_grads(m, X, Y.astype(np.int64))
    assert polylenet.loss_and_grads(m, X, Y.astype(np.uint8))[0] == pytest.approx(loss, rel=1e-6)


def test_an_empty_batch(backend):
    m = model(backend)
    assert polylenet.forward(m, EMPTY).shape == (0, 10)
    outputs = polylenet.layer_outputs(m, EMPTY)
    assert [(name, out.shape) for name, out in outputs] == \
        [(name, (0, *shape[1:])) for name, shape in polylenet.layer_shapes(m, nested=True)]


def test_an_empty_batch_has_no_loss(trainable):
    with pytest.raises(InputError, match=r"empty batch: x has shape \(0, 1, 28, 28\), and loss_and_grads needs"):
        polylenet.loss_and_grads(model(trainable), EMPTY, Y[:0])
    with pytest.raises(InputError, match=r"empty batch: .* a training step needs at least one example"):
        polylenet.trainer(model(trainable), lr=0.1)(EMPTY, Y[:0])


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_pixels_are_refused(backend, value):
    x = X.copy()
    x[1, 0, 3, 4] = value
    with pytest.raises(InputError, match=r"holds NaN or infinite values"):
        polylenet.forward(model(backend), x)
    assert issubclass(InputError, PolylenetError) and issubclass(InputError, ValueError)
