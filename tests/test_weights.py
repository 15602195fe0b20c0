import numpy as np
import pytest

import polylenet
from polylenet import WeightsError


def test_init_is_seeded_xavier_uniform_with_zero_bias():
    a, b, c = (polylenet.init_weights("lenet5", seed=s) for s in (0, 0, 1))
    assert list(a) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                       "dense1.weight", "dense1.bias", "dense2.weight", "dense2.bias",
                       "dense3.weight", "dense3.bias"]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["conv1.weight"], c["conv1.weight"])
    assert a["conv2.weight"].shape == (16, 6, 5, 5) and a["dense1.weight"].shape == (120, 400)
    bound = np.sqrt(6 / (6 * 25 + 16 * 25))
    assert 0.9 * bound < np.abs(a["conv2.weight"]).max() <= bound
    assert all(v.dtype == np.float32 for v in a.values())
    assert not any(a[k].any() for k in a if k.endswith(".bias"))


def test_save_and_load_weights(tmp_path):
    weights = polylenet.init_weights("lenet-classic", seed=3)
    path = polylenet.save_weights(weights, tmp_path / "w.npz")
    back = polylenet.load_weights(path)
    assert all(np.array_equal(back[k], weights[k]) for k in weights)
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]


def test_pickled_weights_are_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, **{"conv1.weight": np.array([object()], dtype=object)})
    with pytest.raises(WeightsError, match="evil.npz"):
        polylenet.load_weights(path)


def test_weights_that_do_not_fit_are_named():
    model = polylenet.build("lenet5", backend="numpy")
    weights = polylenet.init_weights("lenet5")
    weights["dense1.weight"] = weights["dense1.weight"].T
    with pytest.raises(WeightsError, match=r"dense1.weight has shape \(400, 120\).*\(120, 400\)"):
        polylenet.set_weights(model, weights)
    del weights["conv1.bias"]
    with pytest.raises(WeightsError, match=r"missing \['conv1.bias'\]"):
        polylenet.build("lenet5", backend="numpy", weights=weights)


def test_integer_pixels_are_refused_not_silently_misread():
    model = polylenet.build("lenet5", backend="numpy")
    with pytest.raises(ValueError, match=r"got uint8 values; scale them first.*to_inputs"):
        polylenet.forward(model, np.full((2, 1, 28, 28), 255, np.uint8))
    assert polylenet.forward(model, np.ones((2, 1, 28, 28), np.float64)).dtype == np.float32  # floats are fine
