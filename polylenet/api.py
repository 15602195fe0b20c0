"""The public API facade: validate the inputs, find the backend a model was built with, and
dispatch to its adapter (the contract: polylenet.adapter.Adapter)."""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

from polylenet.adapter import LOSSES, TRAINING
from polylenet.errors import BackendError, ConfigError, InputError
from polylenet.masks import check_masks
from polylenet.registry import get_backend, resolve_name
from polylenet.shapes import Shape
from polylenet.spec import Spec
from polylenet.specfile import load_spec
from polylenet.weights import Weights, check_weights, init_weights


def build(spec: Union[Spec, str] = "lenet5", backend: Optional[str] = None,
          weights: Optional[Mapping[str, np.ndarray]] = None, seed: int = 0) -> Any:
    """Compile ``spec`` into the framework's own model, loaded with neutral weights.

    ``weights`` defaults to ``init_weights(spec, seed)``, so every backend starts from the same
    numbers. The result is idiomatic (a ``torch.nn.Module``, a ``keras.Model``, ...): train it
    with the framework's own tools, or hand it back to the functions below.

    >>> import numpy as np, polylenet
    >>> model = polylenet.build("lenet5", backend="numpy", seed=0)
    >>> polylenet.forward(model, np.zeros((2, 1, 28, 28), np.float32)).shape
    (2, 10)
    """
    spec = load_spec(spec)
    name = resolve_name(backend)
    adapter = get_backend(name)
    model = adapter.build(spec)
    model.polylenet_spec = spec
    model.polylenet_backend = name
    initial = init_weights(spec, seed) if weights is None else check_weights(spec, weights)
    adapter.set_weights(model, spec, initial)
    return model


def _adapter(model: Any) -> tuple[ModuleType, Spec]:
    try:
        return get_backend(model.polylenet_backend), model.polylenet_spec
    except AttributeError:
        raise BackendError(f"{type(model).__name__} was not built by polylenet.build(); "
                           "build the model with polylenet.build(spec, backend=...)") from None


def _trainable(model: Any) -> tuple[ModuleType, Spec]:
    adapter, spec = _adapter(model)
    if TRAINING not in adapter.CAPABILITIES:
        raise BackendError(f"backend {model.polylenet_backend!r} is inference-only (it declares "
                           f"{sorted(adapter.CAPABILITIES)}): train on a backend that declares "
                           "'training' and load the weights here")
    return adapter, spec


def backend_of(model: Any) -> str:
    """The backend name a model was built with."""
    _adapter(model)
    return model.polylenet_backend


def spec_of(model: Any) -> Spec:
    """The spec a model was built from."""
    return _adapter(model)[1]


def get_weights(model: Any) -> Weights:
    """The model's parameters (and batchnorm running statistics) as neutral float32 arrays
    (conv OIHW, dense (out, in))."""
    adapter, spec = _adapter(model)
    return adapter.get_weights(model, spec)


def set_weights(model: Any, weights: Mapping[str, np.ndarray]) -> None:
    """Load neutral weights into the model, checking every key and shape against its spec."""
    adapter, spec = _adapter(model)
    adapter.set_weights(model, spec, check_weights(spec, weights))


def _batch(spec: Spec, x: np.ndarray) -> np.ndarray:
    """``x`` as the adapter takes it (contiguous float32 NCHW), or :class:`InputError`."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):  # uint8 pixels cast as they are would be 0..255
        raise InputError(f"expected float32 images scaled to [0, 1], got {x.dtype} values; scale them "
                         "first, as train() does: polylenet.training.to_inputs(images) (x / 255)")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[1:] != tuple(spec.input_shape):
        raise InputError(f"expected an NCHW float32 batch of shape (N, {', '.join(map(str, spec.input_shape))}), "
                         f"got {x.shape}")
    # min and max propagate NaN and show an infinity without a temporary array the batch's size
    if x.size and not (np.isfinite(x.min()) and np.isfinite(x.max())):
        raise InputError(f"the batch x {x.shape} holds NaN or infinite values (as float32); check the images "
                         "and whatever computed them")
    return x


def _nonempty(x: np.ndarray, what: str) -> None:
    if x.shape[0] == 0:
        raise InputError(f"empty batch: x has shape {x.shape}, and {what} needs at least one example (the mean "
                         "loss over 0 examples is undefined); skip empty batches")


def forward(model: Any, x: np.ndarray) -> np.ndarray:
    """Logits (N, classes) as float32 NumPy for an NCHW float32 NumPy batch, in evaluation mode
    (batchnorm normalizes with its running statistics).

    ``x`` is any finite float array of shape (N, *spec.input_shape), taken as it is: polylenet
    never rescales floats. Images belong in [0, 1] (d2l's ``ToTensor``; ``train`` and
    ``evaluate`` scale the data set's uint8 images so); a float batch outside it is not refused,
    since d2l's convolution chapter feeds ``arange(9)`` and normal draws, so 0-255 pixels held as
    floats must be divided by 255 first. uint8 (or any integer) pixels are refused rather than
    cast, and so are NaN and infinite values. An empty batch (N = 0) gives (0, classes) logits on
    every backend, without running the framework (``loss_and_grads`` and a ``trainer`` step
    refuse one: their mean loss would be undefined). Every refusal is an :class:`InputError`.
    """
    adapter, spec = _adapter(model)
    x = _batch(spec, x)
    if not len(x):
        return np.zeros((0, spec.num_classes), np.float32)
    return np.asarray(adapter.forward(model, spec, x), np.float32)


def layer_outputs(model: Any, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Every layer's output for an NCHW float32 batch, in evaluation mode, as neutral float32
    arrays (NCHW, or (N, features) after a flatten): ``[(layer_name, array), ...]``, inside
    groups and blocks too, named by path (``b2.residual1.branch1.conv1``; a group or block
    right after what is inside it, as :attr:`Spec.outputs`). ``x`` as :func:`forward` takes it;
    an empty batch gives every layer's output with 0 rows."""
    adapter, spec = _adapter(model)
    x = _batch(spec, x)
    if not len(x):
        return [(name, np.zeros((0, *out[1:]), np.float32)) for name, _, _, out in spec.outputs]
    return [(name, np.asarray(out, np.float32)) for name, out in adapter.layer_outputs(model, spec, x)]


def layer_shapes(model: Any, nested: bool = False) -> list[tuple[str, Shape]]:
    """``[(layer_name, nchw_shape), ...]`` of the built model's top-level layers, groups and
    blocks for a batch of 1 (d2l's table), or with ``nested`` of every node as
    :func:`layer_outputs` names them.

    >>> layer_shapes(build("resnet18", backend="numpy"))[1]
    ('b2', (1, 64, 24, 24))
    """
    spec = spec_of(model)
    top = set(spec.layer_names())
    return [(name, tuple(int(d) for d in out.shape))
            for name, out in layer_outputs(model, np.zeros((1, *spec.input_shape), np.float32))
            if nested or name in top]


def _loss(loss: str) -> str:
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ConfigError(f"unknown loss {loss!r}; use one of {list(LOSSES)}")
    return loss


def _targets(spec: Spec, loss: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``y`` as the adapter takes it: int32 labels (N,) for cross_entropy, float32 targets
    (N, num_classes) for squared_error; checked here, so every backend refuses alike."""
    y = np.asarray(y)
    n = x.shape[0]
    if loss == "squared_error":
        if y.dtype == bool or not np.issubdtype(y.dtype, np.number) or y.shape != (n, spec.num_classes):
            raise InputError(f"loss 'squared_error' needs float32 targets of the output's shape "
                             f"(N, num_classes) = ({n}, {spec.num_classes}), got {y.dtype} of shape {y.shape}")
        y = np.ascontiguousarray(y, dtype=np.float32)
        if not (np.isfinite(y.min()) and np.isfinite(y.max())):
            raise InputError("the targets y hold NaN or infinite values (as float32); check whatever computed them")
        return y
    if y.shape != (n,):
        raise InputError(f"loss 'cross_entropy' needs integer class labels of shape (N,) = ({n},), one per "
                         f"image of x, got {y.dtype} of shape {y.shape} (for float targets of shape "
                         "(N, num_classes) use loss='squared_error')")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        # even whole-valued floats: a cast would truncate 0.5 to 0 without a word
        raise InputError(f"loss 'cross_entropy' needs integer class labels of shape (N,) = ({n},), got {y.dtype}; "
                         "float labels are refused, even whole-valued ones: pass y.astype(np.int64) if they are "
                         "class indices (for float targets of shape (N, num_classes) use loss='squared_error')")
    low, high = y.min(), y.max()  # before the int32 cast, which would wrap 2**32 + 1 to 1
    if low < 0 or high >= spec.num_classes:
        raise InputError(f"class labels must lie in [0, {spec.num_classes}) (spec {spec.name!r} has num_classes="
                         f"{spec.num_classes}), got {low} .. {high}")
    return np.ascontiguousarray(y, dtype=np.int32)


def _masks(spec: Spec, masks: Optional[Mapping[str, np.ndarray]], x: np.ndarray) -> Optional[dict]:
    if masks is None:
        return None if any(layer.type == "dropout" for _, layer, _, _ in spec.leaves) else {}
    try:
        return check_masks(spec, masks, x.shape[0])
    except ValueError as exc:
        raise InputError(str(exc)) from None


def loss_and_grads(model: Any, x: np.ndarray, y: np.ndarray, loss: str = "cross_entropy",
                   masks: Optional[Mapping[str, np.ndarray]] = None) -> tuple[float, Weights]:
    """One batch's loss and its gradients as neutral arrays, in training mode: no parameter
    changes, but batchnorm's running statistics are updated as by a training step.

    ``loss`` is one of :data:`polylenet.adapter.LOSSES`: ``"cross_entropy"`` (the mean softmax
    cross-entropy, ``y`` int class labels (N,)) or ``"squared_error"`` (the sum over every
    element of ``(output - y) ** 2``, ``y`` float targets (N, num_classes), as d2l's conv-layer
    section). ``masks``: None for the framework's own dropout, or one array per dropout layer
    (:func:`polylenet.masks.dropout_masks`), applied exactly, so every backend drops alike.

    ``x`` as :func:`forward` takes it, but not empty. Class labels must have an integer dtype
    (float labels are refused, even whole-valued ones) and lie in [0, num_classes); ``y`` must
    hold one label (or target row) per image of ``x``. Every refusal is an :class:`InputError`,
    raised before the framework sees the batch, so all backends refuse alike.

    >>> import numpy as np, polylenet
    >>> from polylenet.masks import dropout_masks
    >>> spec = polylenet.Spec("tiny", (polylenet.flatten(), polylenet.dropout(0.5), polylenet.dense(10)),
    ...                       input_shape=(1, 2, 2))
    >>> model = polylenet.build(spec, backend="numpy")
    >>> x, y = np.ones((3, 1, 2, 2), np.float32), np.array([0, 1, 2])
    >>> loss, grads = polylenet.loss_and_grads(model, x, y, masks=dropout_masks(spec, 3, 0, 0, 0))
    >>> grads["dense1.weight"].shape
    (10, 4)
    """
    adapter, spec = _trainable(model)
    loss = _loss(loss)
    x = _batch(spec, x)
    _nonempty(x, "loss_and_grads")
    return adapter.loss_and_grads(model, spec, x, _targets(spec, loss, x, y), loss, _masks(spec, masks, x))


def trainer(model: Any, lr: float, compiled: bool = True,
            loss: str = "cross_entropy") -> Callable[..., tuple[float, int]]:
    """A minibatch SGD step with the framework's own optimizer.

    ``step(x, y, masks=None) -> (loss, number of correct predictions)`` for the batch, as d2l's
    ``train_ch6`` accumulates them; the predictions are those the step computed its loss on.
    ``loss``, ``y`` and ``masks`` as :func:`loss_and_grads`; with ``"squared_error"`` the count
    is 0 (its targets are not labels). ``compiled`` uses the framework's compiled step where it
    is faster (``tf.function``, Gluon ``hybridize``); ``compiled=False`` keeps every op eager,
    for debugging. ``x`` and ``y`` are checked as by :func:`loss_and_grads` (an empty batch is
    an :class:`InputError`).
    """
    adapter, spec = _trainable(model)
    loss = _loss(loss)
    step = adapter.trainer(model, spec, lr, compiled, loss)

    def checked(x: np.ndarray, y: np.ndarray, masks: Optional[Mapping[str, np.ndarray]] = None) -> tuple[float, int]:
        x = _batch(spec, x)
        _nonempty(x, "a training step")
        return step(x, _targets(spec, loss, x, y), _masks(spec, masks, x))

    return checked
