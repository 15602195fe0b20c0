"""Every backend builds the same layers, computes the same numbers and trains the same way as
the NumPy reference, given the same neutral weights and batches."""

import numpy as np
import pytest

import polylenet
from cases import EXTRA_SPECS, batches, cancelled_by_batchnorm, conformance_weights, relative_error, step_masks
from polylenet.shapes import is_state


def reference(spec, weights):
    return polylenet.build(spec, backend="numpy", weights=weights)


def test_layer_shapes_match_spec(backend, spec):
    model = polylenet.build(spec, backend=backend)
    assert polylenet.layer_shapes(model) == polylenet.spec_layer_shapes(spec)
    assert polylenet.layer_shapes(model, nested=True) == polylenet.spec_layer_shapes(spec, nested=True)


def test_logits_match_reference(candidate, spec):
    weights = conformance_weights(spec)
    model = polylenet.build(spec, backend=candidate, weights=weights)
    x, _ = batches(spec, count=1, size=32)[0]
    logits = polylenet.forward(model, x)
    expected = polylenet.forward(reference(spec, weights), x)
    assert logits.dtype == np.float32 and logits.shape == (32, spec.num_classes)
    assert np.max(np.abs(logits - expected)) <= 1e-5


def test_every_layer_output_matches_reference(candidate, spec):
    """Layer by layer (what `polylenet diff` prints): the first layer out of tolerance is the culprit."""
    weights = conformance_weights(spec)
    x, _ = batches(spec, count=1, size=8)[0]
    got = polylenet.layer_outputs(polylenet.build(spec, backend=candidate, weights=weights), x)
    want = polylenet.layer_outputs(reference(spec, weights), x)
    assert [name for name, _ in got] == [name for name, _ in want] == [path for path, *_ in spec.outputs]
    for (name, a), (_, b) in zip(got, want):
        assert a.dtype == np.float32 and a.shape == b.shape, name
        assert np.max(np.abs(a - b)) <= 1e-5 * max(1.0, np.max(np.abs(b))), name


def test_loss_and_gradients_match_reference(framework, spec):
    weights = conformance_weights(spec)
    x, y = batches(spec, count=1)[0]
    masks = step_masks(spec, len(x))  # the same dropped units on both sides
    loss, grads = polylenet.loss_and_grads(polylenet.build(spec, backend=framework, weights=weights), x, y, masks=masks)
    ref_loss, ref_grads = polylenet.loss_and_grads(reference(spec, weights), x, y, masks=masks)
    assert abs(loss - ref_loss) <= 1e-4 * abs(ref_loss)
    assert sorted(grads) == sorted(ref_grads)
    for key in ref_grads:
        assert grads[key].shape == ref_grads[key].shape, key
        if key in cancelled_by_batchnorm(spec):  # zero in exact arithmetic: float32 rounding, on
            # the scale of the same layer's weight gradient, is all that is left
            scale = np.max(np.abs(ref_grads[key.replace(".bias", ".weight")]))
            assert np.max(np.abs(grads[key])) <= 1e-4 * scale, key
        else:
            assert relative_error(grads[key], ref_grads[key]) <= 1e-4, key


# The largest distance of a weight after three steps at lr 0.9 from the oracle's. block-edge's
# batchnormed residual stacks carry float32 rounding on further; measured 2026-12-02 (compiled /
# eager): torch 5.3e-5, mxnet 5.0e-5, paddle 4.2e-5, jax 4.6e-5 / 8.8e-5, tensorflow 5.4e-5 /
# 1.03e-4 (with Keras's own batch moments 9.3e-5 / 8.4e-5); lenet-bn at most 5.2e-6 (paddle).
TRAINED_BOUNDS = {"block-edge": 3e-4}


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
def test_three_sgd_steps_match_reference(framework, spec, compiled):
    weights = conformance_weights(spec)
    model = polylenet.build(spec, backend=framework, weights=weights)
    ref = reference(spec, weights)
    step, ref_step = polylenet.trainer(model, lr=0.9, compiled=compiled), polylenet.trainer(ref, lr=0.9)
    for number, (x, y) in enumerate(batches(spec, count=3), 1):
        # batchnorm's running statistics after every step, against the oracle's step from the
        # same weights (so float drift of the weights over earlier steps does not count here)
        masks = step_masks(spec, len(x), number)
        local = reference(spec, polylenet.get_weights(model))
        polylenet.trainer(local, lr=0.9)(x, y, masks)
        (loss, correct), (ref_loss, ref_correct) = step(x, y, masks), ref_step(x, y, masks)
        assert abs(loss - ref_loss) <= 1e-4 * abs(ref_loss)
        assert correct == ref_correct
        state, expected_state = polylenet.get_weights(model), polylenet.get_weights(local)
        for key in filter(is_state, expected_state):
            assert relative_error(state[key], expected_state[key]) <= 1e-5, f"{key} after step {number}"
    trained, expected = polylenet.get_weights(model), polylenet.get_weights(ref)
    for key in expected:
        assert np.max(np.abs(trained[key] - expected[key])) <= TRAINED_BOUNDS.get(spec.name, 1e-4), key
        if key not in cancelled_by_batchnorm(spec):
            assert not np.array_equal(trained[key], weights[key]), f"{key} did not move on {framework}"


@pytest.mark.parametrize("variant", ["lenet5", "bn-edge"])
def test_a_step_after_loss_and_grads_is_a_fresh_models_step(framework, variant):
    """loss_and_grads leaves no gradient behind for the next trainer step to apply again."""
    spec = EXTRA_SPECS.get(variant) or polylenet.load_spec(variant)
    weights = conformance_weights(spec)
    (x, y), (x2, y2) = batches(spec, count=2)
    used = polylenet.build(spec, backend=framework, weights=weights)
    polylenet.loss_and_grads(used, x, y)
    fresh = polylenet.build(spec, backend=framework, weights=weights)
    polylenet.trainer(used, lr=0.9)(x2, y2)
    polylenet.trainer(fresh, lr=0.9)(x2, y2)
    after, expected = polylenet.get_weights(used), polylenet.get_weights(fresh)
    for key in filter(lambda k: not is_state(k), expected):  # loss_and_grads moved the running statistics
        assert np.max(np.abs(after[key] - expected[key])) <= 1e-6, f"{key}: a stale gradient was applied"


def test_weights_round_trip_bit_exact(backend, spec):
    weights = conformance_weights(spec)
    model = polylenet.build(spec, backend=backend)
    polylenet.set_weights(model, weights)
    back = polylenet.get_weights(model)
    assert sorted(back) == sorted(weights)
    for key, value in weights.items():
        assert back[key].dtype == np.float32 and back[key].shape == value.shape, key
        assert np.array_equal(back[key], value), key


def test_a_layer_type_the_adapter_does_not_know_is_refused(backend, monkeypatch):
    """A layer type added to the vocabulary but not to an adapter is an error naming the backend
    and the layer, never a silently dropped layer."""
    from dataclasses import dataclass, field

    from polylenet import layers

    @dataclass(frozen=True)
    class Identity:
        type: str = field(default="identity", init=False)

        def output_shape(self, where, shape):
            return shape

    monkeypatch.setitem(layers.LAYER_TYPES, "identity", Identity)
    monkeypatch.setitem(layers.PREFIX, "identity", "id")
    spec = polylenet.Spec("with-identity", (polylenet.flatten(), Identity(), polylenet.dense(10)),
                          input_shape=(1, 4, 4))
    with pytest.raises(polylenet.SpecError, match=rf"backend '{backend}' cannot build layer id1 of type 'identity'"):
        polylenet.build(spec, backend=backend)
