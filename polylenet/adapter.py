"""The adapter contract: what a backend module provides, in one place a third party can read.

A backend is a module (``backends/torch.py``, or a third party's module registered under the
``polylenet.backends`` entry-point group) with the names below, defined in this order. Only the
adapter imports its framework. :func:`polylenet.build` and the other functions of
:mod:`polylenet.api` validate everything before it reaches an adapter, so an adapter may rely
on what each docstring says it receives, and must return what it says it returns.

>>> from polylenet.registry import get_backend
>>> check_adapter(get_backend("numpy"), "numpy")  # a module that satisfies it passes silently
"""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any, Callable, Optional, Protocol, runtime_checkable

import numpy as np

from polylenet.errors import BackendError
from polylenet.spec import Spec
from polylenet.weights import Weights

Step = Callable[[np.ndarray, np.ndarray, Optional[dict]], tuple[float, int]]

INFERENCE = "inference"
TRAINING = "training"
LOSSES = ("cross_entropy", "squared_error")
"""The losses ``loss_and_grads`` and ``trainer`` take by name (see their docstrings)."""


@runtime_checkable
class Adapter(Protocol):
    """One framework behind polylenet's neutral API.

    Neutral data at every boundary: NCHW float32 activations; conv kernels (out, in, kh, kw);
    dense weights (out, in); flatten in C*H*W order; batchnorm ``weight``/``bias``/
    ``running_mean``/``running_var`` per channel (after a conv) or feature (after a dense layer).
    Weights dicts are keyed ``conv1.weight`` ... as :func:`polylenet.param_shapes` lists them (a
    layer inside a group or block by its path: ``b2.residual1.branch1.conv1.weight``). A block
    concatenates on the neutral channel axis, which is the framework's own channel axis.
    """

    NAME: str
    """The backend's name, as passed to ``polylenet.build(..., backend=NAME)``."""

    CAPABILITIES: frozenset[str]
    """``{"inference"}`` or ``{"inference", "training"}``. ``loss_and_grads`` and ``trainer`` are
    required with ``"training"`` only; the conformance suite runs the tests each capability needs."""

    def version(self) -> str:
        """The framework's version string, for reports."""

    def build(self, spec: Spec) -> Any:
        """The framework's own model for a validated ``spec``, one native layer per spec layer
        (named as ``spec.layer_names()``), a group (``Sequential``) as the framework's sequential
        container and a block (``Block``: branches merged by channel concatenation or addition,
        then its ``after`` layers) as a container of its own, its children under the spec's names
        (``branch1`` ...; :func:`polylenet.tree.fold` builds the tree bottom-up). Its parameter
        values do not matter: ``set_weights``
        follows. polylenet records the spec and backend on it as attributes
        (``model.polylenet_spec``), so it must be an instance of a class, not a builtin such as
        a dict. A layer type the adapter cannot translate raises
        :func:`polylenet.layers.unsupported_layer`, never a silent skip."""

    def set_weights(self, model: Any, spec: Spec, weights: Weights) -> None:
        """Load neutral ``weights`` (every key of ``param_shapes(spec)``, contiguous float32,
        already checked against the spec) into ``model``, bit-exactly."""

    def get_weights(self, model: Any, spec: Spec) -> Weights:
        """Every neutral array of ``model`` (the keys of ``param_shapes(spec)``) as new float32
        NumPy arrays, running statistics included; ``get_weights(set_weights(w)) == w`` exactly."""

    def forward(self, model: Any, spec: Spec, x: np.ndarray) -> np.ndarray:
        """Logits (N, num_classes) for a contiguous float32 NCHW batch ``x`` of shape
        (N, *spec.input_shape), in evaluation mode (batchnorm uses its running statistics and
        updates nothing)."""

    def layer_outputs(self, model: Any, spec: Spec, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """``[(layer_name, output), ...]``, one per node of ``spec.outputs`` in order (every layer,
        inside groups and blocks too, named by path, ``b2.residual1.branch1.conv1``; a group or
        block right after what is inside it; :func:`polylenet.tree.run` walks it), for a contiguous float32
        NCHW batch ``x``, in evaluation mode as ``forward``; each output a float32 NumPy array in
        the neutral layout (NCHW or (N, features)). ``layer_shapes`` and ``polylenet diff`` read
        the model through it."""

    def loss_and_grads(self, model: Any, spec: Spec, x: np.ndarray, y: np.ndarray,
                       loss: str, masks: Optional[dict]) -> tuple[float, Weights]:
        """Training mode on one batch: the loss named ``loss`` (one of :data:`LOSSES`) of the
        output against ``y``, and its gradient for every trainable key (not the running
        statistics), neutral layout. ``"cross_entropy"``: the mean softmax cross-entropy of the
        logits against int32 labels ``y`` (N,). ``"squared_error"``: the sum over every element
        of ``(output - y) ** 2`` against float32 targets ``y`` of the output's shape
        (N, num_classes), as d2l's conv-layer section (``l.sum().backward()``). Updates the
        running statistics, as a training forward pass does; leaves the parameters alone.

        ``masks`` says how the spec's dropout layers drop: None, the framework's own dropout
        layer with its own random draw; or a dict with one contiguous float32 array per dropout
        layer name, of that layer's input shape in the neutral layout (NCHW or (N, features)),
        holding 0 or 1 / (1 - p) (:func:`polylenet.masks.dropout_masks`): the layer's output is
        then exactly its input times that array, which the adapter converts to its layout (a
        spec without dropout gets ``{}``). Evaluation mode never drops."""

    def trainer(self, model: Any, spec: Spec, lr: float, compiled: bool, loss: str) -> Step:
        """``step(x, y, masks) -> (loss, correct predictions)``: one minibatch SGD step
        (``w -= lr * grad``) in training mode with the framework's own optimizer, on the loss
        named ``loss`` with ``y`` and ``masks`` as ``loss_and_grads`` takes them (given masks
        are inputs of the compiled step, like the batch: a new batch's masks must not retrace or
        recompile it). For ``"cross_entropy"`` it counts the predictions the loss was computed
        on; for ``"squared_error"`` (targets, not labels) it returns ``(loss, 0)``. ``compiled``
        picks the framework's compiled step where it has one; ``compiled=False`` must run every
        op eagerly."""


INFERENCE_FUNCTIONS = ("version", "build", "set_weights", "get_weights", "forward", "layer_outputs")
TRAINING_FUNCTIONS = ("loss_and_grads", "trainer")


def required_functions(capabilities: frozenset[str]) -> tuple[str, ...]:
    """The functions a module with ``capabilities`` must define, in the order it defines them."""
    return INFERENCE_FUNCTIONS + (TRAINING_FUNCTIONS if TRAINING in capabilities else ())


def check_adapter(module: ModuleType, name: str) -> None:
    """Raise :class:`BackendError` naming everything ``module`` lacks to be backend ``name``."""
    problems = []
    capabilities = getattr(module, "CAPABILITIES", None)
    if not isinstance(capabilities, frozenset) or not capabilities or not capabilities <= {INFERENCE, TRAINING}:
        problems.append(f"CAPABILITIES must be a frozenset of {{'{INFERENCE}', '{TRAINING}'}}, "
                        f"got {capabilities!r}")
        capabilities = frozenset({INFERENCE})
    if getattr(module, "NAME", None) != name:
        problems.append(f"NAME must be {name!r}, got {getattr(module, 'NAME', None)!r}")
    for function in required_functions(capabilities):
        member = getattr(module, function, None)
        if not callable(member):
            problems.append(f"{function}() is missing")
            continue
        wanted = list(inspect.signature(getattr(Adapter, function)).parameters)[1:]  # drop self
        got = list(inspect.signature(member).parameters)
        if got != wanted:
            problems.append(f"{function}({', '.join(got)}) should take ({', '.join(wanted)})")
    if problems:
        raise BackendError(f"backend {name!r} ({module.__name__}) does not satisfy polylenet.adapter."
                           f"Adapter: " + "; ".join(problems))
